"""initscale.torch.lsuv_: LSUV (Mishkin & Matas 2016), checked layer by layer on the batch it used.

The check is deterministic: LSUV's contract is |Var(B_L) - 1| < tol for every layer's output on the
given batch, so the test recomputes each output's variance with its own hooks (independent of the
report) and needs no sampling tolerance. The mutation test plants the classic slip W / Var instead of
W / √Var and shows that this check fails.
"""

from __future__ import annotations

import math
import warnings

import pytest

torch = pytest.importorskip("torch")

import initscale  # noqa: E402
from initscale import lsuv as lsuv_core  # noqa: E402
from initscale.adapters import _torch_lsuv  # noqa: E402
from initscale.adapters.torch import lsuv_  # noqa: E402

TOL = 0.1


def _mlp(activation: type, depth: int = 12, width: int = 96) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i in range(depth):
        layers += [torch.nn.Linear(48 if i == 0 else width, width), activation()]
    return torch.nn.Sequential(*layers)


def _output_variances(model: torch.nn.Module, batch: torch.Tensor, layer_types: tuple[type, ...]) -> dict[str, float]:
    """The variance of each layer's output on ``batch``, measured here with forward hooks."""
    out: dict[str, float] = {}
    handles = []

    def record(name: str):
        def hook(_sub, _inputs, output) -> None:  # returns None: the output is unchanged
            out.setdefault(name, float(output.detach().double().var()))

        return hook

    for name, sub in model.named_modules():
        if isinstance(sub, layer_types):
            handles.append(sub.register_forward_hook(record(name)))
    with torch.no_grad():
        model(batch)
    for handle in handles:
        handle.remove()
    return out


def _assert_unit_variance(model: torch.nn.Module, batch: torch.Tensor, layer_types: tuple[type, ...]) -> None:
    variances = _output_variances(model, batch, layer_types)
    assert variances
    off = {name: v for name, v in variances.items() if not abs(v - 1.0) < TOL}
    assert not off, f"layers whose output variance is not 1 ± {TOL}: {off}"


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed, f"changed: {changed}"


@pytest.mark.parametrize("activation", [torch.nn.ReLU, torch.nn.Tanh, torch.nn.GELU, torch.nn.SiLU])
def test_every_layer_ends_at_unit_output_variance(activation) -> None:
    torch.manual_seed(0)
    model, batch = _mlp(activation), torch.randn(256, 48) * 3.0
    report = lsuv_(model, batch, generator=torch.Generator().manual_seed(1))
    assert [row.status for row in report.rows] == ["converged"] * 12
    assert [row.name for row in report.rows] == [str(2 * i) for i in range(12)]  # forward order
    _assert_unit_variance(model, batch, (torch.nn.Linear,))
    for row in report.rows:  # the report says what the hooks measure
        assert row.variance_after == pytest.approx(_output_variances(model, batch, (torch.nn.Linear,))[row.name])


def test_the_start_is_orthogonal_and_biases_zero() -> None:
    torch.manual_seed(0)
    model = _mlp(torch.nn.Tanh, depth=2, width=48)
    report = lsuv_(model, torch.randn(128, 48), generator=torch.Generator().manual_seed(1))
    assert all(isinstance(row.spec, initscale.Orthogonal) for row in report.init.touched if row.name.endswith("weight"))
    w = model[2].weight.detach().double()
    q = w / (report.rows[1].scale)  # undo the rescaling: the orthogonal start
    assert torch.allclose(q @ q.T, torch.eye(48, dtype=torch.float64), atol=1e-5)
    assert float(model[0].bias.detach().abs().sum()) == 0.0


def test_convolutions_and_batchnorm_buffers_stay_as_they_were() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, groups=4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(10),
    )
    batch = torch.randn(32, 3, 10, 10)
    model(batch)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    report = lsuv_(model, batch, generator=torch.Generator().manual_seed(2))
    assert [row.status for row in report.rows] == ["converged"] * 3
    for k, v in model.named_buffers():  # running stats and num_batches_tracked: untouched
        assert torch.equal(v, buffers[k]), k
    _assert_unit_variance(model, batch, (torch.nn.Conv2d, torch.nn.Linear))


def test_a_dead_layer_is_an_error_and_changes_nothing() -> None:
    torch.manual_seed(0)
    model = _mlp(torch.nn.ReLU, depth=3)
    before = _state(model)
    with pytest.raises(ValueError, match=r"layer '0' \(Linear\) has variance 0.0.*dead layer.*Nothing was changed"):
        lsuv_(model, torch.zeros(64, 48))
    _assert_same_state(model, before)


class _FailsOnSecondCall(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:  # the forward-order pass is call 1; the rescaling of layer 4 is call 2
            raise RuntimeError("planted failure")
        return x


def test_a_failure_midway_changes_nothing() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(48, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), _FailsOnSecondCall(), torch.nn.Linear(32, 8)
    )
    before = _state(model)
    with pytest.raises(RuntimeError, match="planted failure"):
        lsuv_(model, torch.randn(64, 48))
    _assert_same_state(model, before)


class _Noisy(torch.nn.Module):
    """y = x W^T + noise, the noise a fixed buffer of variance 2: Var(y) >= 2 at every scale of W."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(16, 16))
        self.register_buffer("noise", torch.randn(64, 16) * math.sqrt(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.noise


def test_a_layer_that_cannot_converge_is_named_in_a_warning() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(_Noisy())
    rules = {"_Noisy": initscale.Rule(initscale.presets.get("orthogonal"), layout="torch.linear")}
    with pytest.warns(UserWarning, match=r"1 layer\(s\) did not reach output variance 1 ± 0.1 in 3 rescalings: 0 "):
        report = lsuv_(model, torch.randn(64, 16), rules, max_iters=3)
    assert report["0"].status == "not converged" and report["0"].iterations == 3
    assert report.not_converged == (report["0"],)


def test_recurrent_layers_are_skipped_with_a_reason() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.head = torch.nn.LSTM(8, 16, batch_first=True), torch.nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0])

    torch.manual_seed(0)
    report = lsuv_(Net(), torch.randn(8, 5, 8))
    assert report["rnn"].status.startswith("skipped: several outputs")
    assert report["head"].status == "converged"


def test_batches_as_tuple_and_mapping() -> None:
    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.fc(x + y)

    x, y = torch.randn(32, 8), torch.randn(32, 8)
    assert lsuv_(Two(), (x, y))["fc"].status == "converged"
    assert lsuv_(Two(), {"x": x, "y": y})["fc"].status == "converged"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tol": 0.0}, r"`tol` of lsuv_ must be a number in \(0, 1\).*tol=0.0"),
        ({"tol": 1.5}, r"`tol`.*tol=1.5"),
        ({"tol": True}, r"`tol`.*tol=True"),
        ({"max_iters": 0}, r"`max_iters` of lsuv_ must be an integer >= 1.*max_iters=0"),
        ({"max_iters": 2.5}, r"`max_iters`.*max_iters=2.5"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        lsuv_(_mlp(torch.nn.ReLU, depth=1), torch.randn(8, 48), **kwargs)


def test_a_bad_batch_names_the_argument() -> None:
    with pytest.raises(TypeError, match=r"`batch` of lsuv_ must be a tensor, a tuple/list.*Received: NoneType"):
        lsuv_(_mlp(torch.nn.ReLU, depth=1), None)


def test_a_batch_that_reaches_no_layer_is_an_error() -> None:
    class Skips(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(ValueError, match=r"no layer was rescaled.*called none of the layers"):
        lsuv_(Skips(), torch.randn(8, 4))


def test_a_layer_the_batch_does_not_reach_has_a_row_saying_so() -> None:
    class Branch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    report = lsuv_(Branch(), torch.randn(16, 4))
    assert report["used"].status == "converged"
    assert report["unused"].status == "skipped: not called by the forward pass on `batch`"


def test_planted_bug_divide_by_variance_is_caught(monkeypatch) -> None:
    """Mutation: W / Var(B) instead of W / sqrt(Var(B)) maps Var -> 1/Var and never settles; the
    per-layer check of test_every_layer_ends_at_unit_output_variance fails on it."""
    monkeypatch.setattr(
        lsuv_core, "math", type("M", (), {"sqrt": staticmethod(lambda x: x), "isfinite": staticmethod(math.isfinite)})
    )
    torch.manual_seed(0)
    model, batch = _mlp(torch.nn.SiLU), torch.randn(256, 48) * 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lsuv_(model, batch, generator=torch.Generator().manual_seed(1))
    with pytest.raises(AssertionError, match="output variance is not 1"):
        _assert_unit_variance(model, batch, (torch.nn.Linear,))


def test_the_docstring_example_runs() -> None:
    import doctest

    assert doctest.testmod(_torch_lsuv, optionflags=doctest.ELLIPSIS).failed == 0
    assert doctest.testmod(lsuv_core).failed == 0


def test_a_real_model_hf_gpt2() -> None:
    """LSUV on HF GPT-2 built from a tiny config: every Conv1D (packed c_attn included) ends at unit
    output variance on the batch, measured here by hooks (the tied lm_head is the embedding: not a layer)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    report = lsuv_(model, ids, generator=torch.Generator().manual_seed(0))
    conv1d = type(model.transformer.h[0].attn.c_attn)
    assert len(report.rows) == 8 and all(row.status == "converged" for row in report.rows)
    _assert_unit_variance(model, ids, (conv1d,))


# --- low precision: bf16 and fp16 models --------------------------------------------------------

DTYPES = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])


@DTYPES
def test_lsuv_on_a_low_precision_model(dtype) -> None:
    """LSUV's contract holds on the model's own low-precision outputs: each layer's output variance, measured
    by the test's hooks on the bf16/fp16 pass (in float64), is 1 within tol, and is the variance the report
    gives (the same outputs: equal to float64 rounding); the values stay in the model's dtype and finite."""
    torch.manual_seed(0)
    model, batch = _mlp(torch.nn.GELU, depth=6).to(dtype), (torch.randn(256, 48) * 3.0).to(dtype)
    report = lsuv_(model, batch, generator=torch.Generator().manual_seed(1))
    assert [row.status for row in report.rows] == ["converged"] * 6
    for p in model.parameters():
        assert p.dtype == dtype and bool(torch.isfinite(p).all())
    _assert_unit_variance(model, batch, (torch.nn.Linear,))
    measured = _output_variances(model, batch, (torch.nn.Linear,))
    for row in report.rows:
        assert row.variance_after == pytest.approx(measured[row.name], rel=1e-12)
    with torch.no_grad():
        assert bool(torch.isfinite(model(batch)).all())


@DTYPES
def test_lsuv_stays_atomic_in_low_precision(dtype) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(48, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), _FailsOnSecondCall(), torch.nn.Linear(32, 8)
    ).to(dtype)
    before = _state(model)
    with pytest.raises(RuntimeError, match="planted failure"):
        lsuv_(model, torch.randn(64, 48).to(dtype))
    _assert_same_state(model, before)  # bit for bit, in the model's dtype
    dead = _mlp(torch.nn.ReLU, depth=3).to(dtype)
    before = _state(dead)
    with pytest.raises(ValueError, match=r"layer '0' \(Linear\) has variance 0.0.*dead layer.*Nothing was changed"):
        lsuv_(dead, torch.zeros(64, 48, dtype=dtype))
    _assert_same_state(dead, before)


def test_planted_bug_variance_in_the_model_dtype_is_caught(monkeypatch) -> None:
    """Mutation: LSUV takes each output's variance in the model's own dtype (a bf16 result) instead of
    float64: the low-precision test's check against the hooks' float64 variance fails."""
    monkeypatch.setattr(
        _torch_lsuv, "_output_variance", lambda run, sub: float(_torch_lsuv._first_output(run, sub).detach().var())
    )
    with pytest.raises(AssertionError):
        test_lsuv_on_a_low_precision_model(torch.bfloat16)
