"""initscale.torch.materialize_: a model built on the meta device made ready on a device.

A ResNet-like model by hand (BatchNorm everywhere), modules whose buffers come from their own
code (reset_parameters, the constructor, a caller's restorer), tied weights, and every refusal:
after each refusal the model is still wholly on meta (nothing was allocated or changed). The
statistical checks (tests/_materialize.py) state their tolerances; the mutation tests at the end
plant the classic bugs and show the checks fail.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from _materialize import buffer_problems, meta_problems, std_problems, tie_problems

import initscale
from initscale import presets

torch = pytest.importorskip("torch")
ist = pytest.importorskip("initscale.adapters.torch")
mat = pytest.importorskip("initscale.adapters._torch_materialize")
nn = torch.nn

HE = presets.get("he_normal")


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


class ResNetish(nn.Module):
    """A ResNet-18-like stem, 3 stages of basic blocks, a grouped conv, a BatchNorm1d head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        self.layers = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.grouped = nn.Conv2d(64, 64, 3, padding=1, groups=4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.grouped(self.layers(self.stem(x)))
        return self.head(torch.nn.functional.adaptive_avg_pool2d(x, 1))


def _gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


def _on_meta(build):
    with torch.device("meta"):
        return build()


def test_resnet_like_is_ready_buffers_equal_the_cpu_built_model() -> None:
    torch.manual_seed(0)
    reference = ResNetish()
    model = _on_meta(ResNetish)
    report = ist.materialize_(model, HE, device="cpu", generator=_gen(1))
    assert all(not t.is_meta for t in model.state_dict().values())
    assert buffer_problems(model, reference) == []
    bn = model.stem[1]
    assert torch.equal(bn.running_mean, torch.zeros(16)) and torch.equal(bn.running_var, torch.ones(16))
    assert int(bn.num_batches_tracked) == 0
    out = model.eval()(torch.randn(4, 3, 32, 32, generator=_gen(2)))
    assert bool(out.isfinite().all())
    assert std_problems(model, report) == []
    assert report["grouped.weight"].fan_in == 16 * 9  # per group: 64/4 inputs × 3·3
    assert report["stem.1.weight"].reason.startswith("default")


def test_the_same_seed_gives_the_same_model_and_the_global_rng_is_untouched() -> None:
    state = torch.get_rng_state()
    a, b = _on_meta(ResNetish), _on_meta(ResNetish)
    ist.materialize_(a, HE, device="cpu", generator=_gen(5))
    ist.materialize_(b, HE, device="cpu", generator=_gen(5))
    assert torch.equal(torch.get_rng_state(), state)  # reset_running_stats etc. run with the RNG forked
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 16, padding_idx=0)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 40, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.proj(self.embed(ids))))


TIED_RULES = {"Embedding": initscale.Normal(0.02), "head.weight": initscale.Normal(0.02), "Linear": HE}


def test_ties_that_to_empty_splits_are_restored() -> None:
    reference = Tied()
    model = _on_meta(Tied)
    report = ist.materialize_(model, TIED_RULES, device="cpu", generator=_gen(0))
    assert tie_problems(model, reference) == []
    assert model.head.weight is model.embed.weight
    assert report["head.weight"].tied_to == "embed.weight"
    assert std_problems(model, report) == []  # the padding row stays zero


class Sinusoidal(nn.Module):
    """A buffer computed in the constructor from arguments it keeps: rebuilt on the CPU."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.length, self.dim = length, dim
        position = torch.arange(length, dtype=torch.float32)[:, None]
        rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(length, dim)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate)
        self.register_buffer("table", table, persistent=False)


class Masked(nn.Module):
    """A buffer its own reset_parameters computes (and a weight it draws, drawn again by the rules)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, n))
        self.register_buffer("mask", torch.empty(n, n, dtype=torch.bool))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        with torch.no_grad():
            self.mask.copy_(torch.ones(self.mask.shape, dtype=torch.bool).tril())


class Opaque(nn.Module):
    """A buffer from an argument it does not keep: nothing can restore it."""

    def __init__(self, n: int, scale: float) -> None:
        super().__init__()
        self.n = n
        self.register_buffer("table", torch.full((n,), scale))


class WithBuffers(nn.Module):
    def __init__(self, opaque: bool = False) -> None:
        super().__init__()
        self.pos = Sinusoidal(8, 6)
        self.masked = Masked(5)
        self.fc = nn.Linear(6, 5)
        if opaque:
            self.opaque = Opaque(4, 3.0)


RULES = {"Masked": initscale.Rule(HE, layout="torch.linear"), "Linear": HE}


def test_buffers_from_reset_parameters_and_from_the_constructor() -> None:
    reference = WithBuffers()
    model = _on_meta(WithBuffers)
    report = ist.materialize_(model, RULES, device="cpu", generator=_gen(3))
    assert buffer_problems(model, reference) == []
    assert report["masked.weight"].reason == "rule 'Masked'"
    assert not torch.equal(model.masked.weight, reference.masked.weight)  # drawn by the rule, not N(0, 1)


def test_a_buffer_nothing_restores_is_an_error_naming_it_and_nothing_changes() -> None:
    model = _on_meta(lambda: WithBuffers(opaque=True))
    with pytest.raises(ValueError, match=r"'opaque\.table' \(in Opaque\).*scale are not attributes") as err:
        ist.materialize_(model, RULES, device="cpu")
    assert "restorers={'<module class>': fn}" in str(err.value)
    assert meta_problems(model) == []


@pytest.mark.parametrize("how", ["in place", "assigned"])
def test_a_restorer_given_by_the_caller(how: str) -> None:
    def fill(module):
        if how == "in place":
            module.table.fill_(3.0)
        else:
            module.table = torch.full((module.n,), 3.0)  # a new tensor: copied into the allocated one

    model = _on_meta(lambda: WithBuffers(opaque=True))
    ist.materialize_(model, RULES, device="cpu", restorers={"Opaque": fill})
    assert buffer_problems(model, WithBuffers(opaque=True)) == []
    assert model.opaque.table.device.type == "cpu"


def test_a_restorer_that_does_not_write_the_buffer_is_not_trusted() -> None:
    model = _on_meta(lambda: WithBuffers(opaque=True))
    with pytest.raises(ValueError, match=r"restorers\['Opaque'\] does not write table"):
        ist.materialize_(model, RULES, device="cpu", restorers={"Opaque": lambda m: None})
    assert meta_problems(model) == []


def test_a_parameter_nothing_sets_is_an_error_naming_it_and_the_fix() -> None:
    model = _on_meta(Tied)
    with pytest.raises(
        ValueError,
        match=r"'embed\.weight' \(shape \(40, 16\), in Embedding\).*"
        r"\{'embed\.weight': initscale\.Normal\(0\.02\)\}",
    ) as err:
        ist.materialize_(model, HE, device="cpu")
    assert "'head.weight'" not in str(err.value)  # a tied name: its tensor is listed once
    assert meta_problems(model) == []
    with pytest.raises(ValueError, match=r"'proj\.weight'.*rule 'Linear' says leave as is"):
        ist.materialize_(model, {**TIED_RULES, "Linear": None}, device="cpu")
    assert meta_problems(model) == []


@pytest.mark.parametrize(
    ("device", "error", "message"),
    [
        ("cdua", ValueError, r"Argument `device` must be .*'cpu', 'cuda'.*Received: device='cdua'"),
        ("meta", ValueError, r"Argument `device` must be a device with storage .*Received: device='meta'"),
        (1.5, TypeError, r"Argument `device` must be .*Received: device=1\.5"),
    ],
)
def test_a_bad_device_names_the_argument_value_and_choices(device, error, message) -> None:
    model = _on_meta(ResNetish)
    with pytest.raises(error, match=message):
        ist.materialize_(model, HE, device=device)
    assert meta_problems(model) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_an_unavailable_device_is_refused() -> None:
    model = _on_meta(ResNetish)
    with pytest.raises(ValueError, match=r"names 'cuda', which is not available.*available here: 'cpu'"):
        ist.materialize_(model, HE, device="cuda:0")
    assert meta_problems(model) == []


def test_bad_generator_rules_restorers_and_model() -> None:
    model = _on_meta(ResNetish)
    with pytest.raises(TypeError, match=r"Argument `generator` must be a torch.Generator.*generator=0"):
        ist.materialize_(model, HE, device="cpu", generator=0)
    with pytest.raises(TypeError, match=r"Argument `rules` must be an initscale spec.*rules='he_normal'"):
        ist.materialize_(model, "he_normal", device="cpu")
    with pytest.raises(ValueError, match=r"Invalid pattern 'conv\+'"):
        ist.materialize_(model, {"conv+": HE}, device="cpu")
    with pytest.raises(TypeError, match=r"Argument `restorers` must be a mapping"):
        ist.materialize_(model, HE, device="cpu", restorers=[len])
    with pytest.raises(TypeError, match=r"Argument `model` must be a torch.nn.Module. Received: dict"):
        ist.materialize_({}, HE, device="cpu")
    assert meta_problems(model) == []


def test_a_model_not_on_meta_is_refused_and_points_to_reinit() -> None:
    model = ResNetish()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"no tensor on the meta device.*initscale.torch.reinit_"):
        ist.materialize_(model, HE, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_model_partly_on_meta_is_refused_naming_both_parts() -> None:
    model = _on_meta(ResNetish)
    model.head[4] = nn.Linear(32, 10)  # on the CPU, perhaps loaded
    with pytest.raises(
        ValueError,
        match=r"partly on the meta device: .* tensor\(s\) on meta .*"
        r"2 with storage \('head\.4\.weight \(cpu\)', 'head\.4\.bias \(cpu\)'\)",
    ):
        ist.materialize_(model, HE, device="cpu")
    assert meta_problems(model) == ["head.4.weight", "head.4.bias"]


def test_frozen_parameters_are_drawn_too() -> None:
    model = _on_meta(ResNetish)
    model.stem[0].weight.requires_grad_(False)
    report = ist.materialize_(model, HE, device="cpu", generator=_gen(0))
    assert report["stem.0.weight"].touched
    assert not model.stem[0].weight.requires_grad
    assert std_problems(model, report) == []


# --- mutation tests: each planted bug makes a check above fail -------------------------------------


def test_planted_skipped_buffer_restore_is_caught(monkeypatch) -> None:
    monkeypatch.setattr(mat, "_restore", lambda plans, device: None)  # the restore step does nothing
    model = _on_meta(ResNetish)
    with torch.no_grad():
        ist.materialize_(model, HE, device="cpu", generator=_gen(0))
        for buffer in model.buffers():  # to_empty's memory may happen to be zeros: make it garbage
            buffer.fill_(7)
    assert any("running_var" in p for p in buffer_problems(model, ResNetish()))


def test_planted_broken_ties_are_caught(monkeypatch) -> None:
    monkeypatch.setattr(mat, "_retie", lambda model, groups, kind: None)
    model = _on_meta(Tied)
    ist.materialize_(model, TIED_RULES, device="cpu", generator=_gen(0))
    assert tie_problems(model, Tied()) == ["tied in the CPU-built model, not here: ('embed.weight', 'head.weight')"]


@pytest.mark.parametrize("bug", ["std 5% too large", "fans swapped", "bound not clamped", "padding row drawn"])
def test_planted_std_bugs_are_caught(bug: str) -> None:
    model = _on_meta(lambda: nn.Sequential(nn.Embedding(400, 64, padding_idx=3), nn.Linear(64, 256)))
    report = ist.materialize_(
        model, {"Embedding": initscale.Normal(0.02), "Linear": HE}, device="cpu", generator=_gen(4)
    )
    assert std_problems(model, report) == []
    weight = model[1].weight
    with torch.no_grad():
        if bug == "std 5% too large":  # z·√((κ−1)/(4n)) at n = 16384 is ~0.015 relative: 5% is far out
            weight.mul_(1.05)
        elif bug == "fans swapped":  # he_normal by fan_out 256 instead of fan_in 64: std halved
            weight.copy_(ist.he_normal_(torch.empty(64, 256), generator=_gen(4)).T)
        elif bug == "bound not clamped":
            weight[0, 0] = 2.5 * report["1.weight"].std / 0.8796  # beyond ±2σ
        else:
            model[0].weight[3].normal_(0, 0.02, generator=_gen(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = std_problems(model, report)
    assert found, f"the planted bug {bug!r} was not caught"


def test_the_plans_warnings_come_once() -> None:
    model = _on_meta(ResNetish)
    with pytest.warns(UserWarning, match="matched no parameter: 'LSTM'") as caught:
        ist.materialize_(model, {"LSTM": HE, "_ConvNd": HE, "Linear": HE}, device="cpu")
    assert len([w for w in caught if "matched no parameter" in str(w.message)]) == 1


# --- DTensor (FSDP2): 2 CPU processes with gloo, launched by torchrun --------------------------------


def test_fsdp2_dtensor_model_on_meta_each_rank_fills_its_shard(tmp_path) -> None:
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    script = Path(__file__).parent / "dist" / "materialize_dtensor.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INITSCALE_DIST_OUT": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["dtensor"] and result["local_shape"] == [64, 64]  # Shard(0) of (128, 64)
        assert result["fans"] == [64, 128]  # from the global shape
        assert result["std_problems"] == [] and result["buffer_problems"] == []
        assert result["shards_differ"] and result["same_shards_caught"]  # the check, and its planted bug
        assert result["finite"] and result["reproducible"]
        if result.get("llama") != "transformers is not installed":  # HF Llama: rotary buffers on every rank
            assert result["llama_std_problems"] == [] and result["llama_buffer_problems"] == []
            assert result["llama_finite"]


def test_the_docstring_example_runs() -> None:
    import doctest

    assert doctest.testmod(mat, optionflags=doctest.ELLIPSIS).failed == 0


class Titan(nn.Module):
    """torchtitan's Llama 3 pattern: a complex64 ``freqs_cis`` buffer on the root, recomputed by
    ``init_weights(buffer_device=...)`` (which also draws every parameter)."""

    calls = 0

    def __init__(self, dim: int = 16, heads: int = 2, length: int = 12, vocab: int = 30) -> None:
        super().__init__()  # `vocab` is not kept: the module cannot be rebuilt from its attributes
        self.dim, self.heads, self.length = dim, heads, length
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.register_buffer("freqs_cis", self._precompute_freqs_cis(), persistent=True)
        self.output = nn.Linear(dim, vocab, bias=False)

    def _precompute_freqs_cis(self):
        half = self.dim // self.heads
        freqs = 1.0 / (10000.0 ** (torch.arange(0, half, 2)[: half // 2].float() / half))
        angles = torch.outer(torch.arange(self.length, device=freqs.device), freqs).float()
        return torch.polar(torch.ones_like(angles), angles)

    def init_weights(self, buffer_device=None):
        Titan.calls += 1
        buffer_device = buffer_device or self.freqs_cis.device
        with torch.device(buffer_device):
            self.freqs_cis = self._precompute_freqs_cis()
        nn.init.normal_(self.tok_embeddings.weight)
        nn.init.trunc_normal_(self.output.weight, std=self.dim**-0.5)


def test_torchtitan_init_weights_buffer_device_restores_the_root_buffer() -> None:
    reference = Titan()
    model = _on_meta(Titan)
    Titan.calls = 0
    state = torch.get_rng_state()
    report = ist.materialize_(
        model, {"Embedding": initscale.Normal(1.0), "Linear": HE}, device="cpu", generator=_gen(0)
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert Titan.calls == 2  # on the meta model (the probe), then on the allocated one
    assert buffer_problems(model, reference) == [] and model.freqs_cis.dtype == torch.complex64
    assert std_problems(model, report) == []  # drawn by the rules after init_weights drew them


class SharedBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = BufferOwner(), BufferOwner()
        self.b.table = self.a.table  # one buffer under two names


class BufferOwner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.arange(6.0))


def test_a_shared_buffer_stays_shared() -> None:
    reference = SharedBuffer()
    model = _on_meta(SharedBuffer)
    ist.materialize_(model, HE, device="cpu")
    assert tie_problems(model, reference) == [] and buffer_problems(model, reference) == []


def test_a_restorer_failing_after_allocation_says_what_was_done() -> None:
    def restore(module):
        if not module.table.is_meta:
            raise RuntimeError("device lost")
        module.table.zero_()

    model = _on_meta(lambda: WithBuffers(opaque=True))
    with pytest.raises(
        RuntimeError,
        match=r"restorers\['Opaque'\] failed on the allocated model while restoring "
        r"'opaque\.table' \(RuntimeError: device lost\).*buffers restored so far: "
        r"'pos\.table', 'masked\.mask'; no parameter has been drawn yet",
    ):
        ist.materialize_(model, RULES, device="cpu", restorers={"Opaque": restore})


def test_a_restorer_that_fails_on_meta_leaves_the_model_as_it_was() -> None:
    def half_done(module):
        module.table = torch.zeros(module.n)  # reassigned, then it fails
        raise RuntimeError("needs real values")

    model = _on_meta(lambda: WithBuffers(opaque=True))
    table = model.opaque.table
    with pytest.raises(
        ValueError,
        match=r"restorers\['Opaque'\] failed on the meta model \(RuntimeError: needs "
        r"real values\)",
    ):
        ist.materialize_(model, RULES, device="cpu", restorers={"Opaque": half_done})
    assert model.opaque.table is table and meta_problems(model) == []


def test_a_dry_run_checks_everything_and_allocates_nothing() -> None:
    model = _on_meta(ResNetish)
    report = ist.materialize_(model, HE, device="cpu", dry_run=True)
    assert report.dry_run and report["grouped.weight"].touched
    assert meta_problems(model) == []
    with pytest.raises(ValueError, match=r"'opaque\.table' \(in Opaque\)"):
        ist.materialize_(_on_meta(lambda: WithBuffers(opaque=True)), RULES, device="cpu", dry_run=True)
