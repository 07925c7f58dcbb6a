"""initscale.auto on torch models: the graph it reads, the gains it plans, and the second moments
it predicts (initscale/autogain.py has the rules).

Every check here is deterministic: the plan's numbers are functions of the recorded graph and of
the example inputs' measured mean square, so each is compared with the formula computed here
(fixed_point from initscale.gains, sums and products of second moments), to float64 rounding.
The mutation test plants a planner that ignores the data's second moment (the classic
"calculate_gain on every layer" mistake) and shows the first-layer check fails.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import initscale  # noqa: E402
from initscale import autogain, gains  # noqa: E402
from initscale.adapters import _torch_auto  # noqa: E402
from initscale.adapters.torch import reinit_  # noqa: E402

REL = 1e-9  # float64 rounding of a few products and quadratures


def _mlp(activation: type, depth: int = 6, width: int = 64, out: int | None = None) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i in range(depth):
        layers += [torch.nn.Linear(32 if i == 0 else width, width), activation()]
    if out:
        layers.append(torch.nn.Linear(width, out))
    return torch.nn.Sequential(*layers)


def _x(shape=(128, 32), scale=3.0, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# --- the rules of one layer -------------------------------------------------------------------


def test_layer_gain_puts_the_activation_output_at_q_whatever_the_input() -> None:
    g = autogain.layer_gain("activation", "relu", m_in=4.0)
    assert g.gain == pytest.approx(math.sqrt(2.0) / 2.0, rel=REL) and g.m_out == pytest.approx(1.0, rel=REL)
    fp = gains.fixed_point("gelu")
    g = autogain.layer_gain("activation", "gelu", m_in=0.25)
    assert g.gain == pytest.approx(fp.gain / 0.5, rel=REL) and g.chi == fp.chi and g.verdict == fp.verdict


def test_an_unreachable_q_gives_the_activation_s_own_fixed_point() -> None:
    fp = gains.fixed_point("tanh")  # E[tanh^2] < 1: q = 1 is out of reach
    g = autogain.layer_gain("activation", "tanh", m_in=2.0)
    assert not fp.reachable and g.m_out == pytest.approx(fp.q_star, rel=REL)
    assert g.gain == pytest.approx(fp.gain * math.sqrt(fp.q_star) / math.sqrt(2.0), rel=REL)


def test_norms_and_outputs_get_one_over_sqrt_fan_in_and_linear_holds_q() -> None:
    assert autogain.layer_gain("norm", None, m_in=5.0).gain == 1.0
    assert autogain.layer_gain("output", None, m_in=5.0).gain == 1.0
    assert autogain.layer_gain("linear", None, m_in=4.0, q=2.0).gain == pytest.approx(math.sqrt(0.5), rel=REL)
    with pytest.raises(ValueError, match=r"predicted second moment at a layer's input is 0.0"):
        autogain.layer_gain("activation", "relu", m_in=0.0)


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match=r"initscale.auto needs example_inputs="):
        initscale.auto(None)
    with pytest.raises(ValueError, match=r"`distribution` of initscale.auto must be one of 'normal'.*'laplace'"):
        initscale.auto(_x(), distribution="laplace")
    with pytest.raises(ValueError, match=r"initscale.auto: Argument `q` must be > 0. Received: q=0.0"):
        initscale.auto(_x(), q=0.0)


# --- the graph of real modules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("activation", "name"),
    [(torch.nn.ReLU, "relu"), (torch.nn.Tanh, "tanh"), (torch.nn.GELU, "gelu"), (torch.nn.SiLU, "silu")],
)
def test_an_mlp_starts_on_the_fixed_point_from_the_data_s_second_moment(activation, name) -> None:
    x = _x()
    plan = initscale.auto(x).plan(_mlp(activation, out=10))
    fp = gains.fixed_point(name)
    a = fp.gain * math.sqrt(fp.q_star)  # the pre-activation std that puts f's output at q*
    first, *middle, last = plan.rows
    m_data = float(x.double().square().mean())
    assert first.m_in == pytest.approx(m_data, rel=REL)  # the data's own, measured
    assert first.gain == pytest.approx(a / math.sqrt(m_data), rel=REL)
    for row in middle:  # every later layer sees the fixed point
        assert (row.follower, row.activation) == ("activation", name)
        assert row.m_in == pytest.approx(fp.q_star, rel=1e-7) and row.chi == pytest.approx(fp.chi, rel=REL)
    assert (last.follower, last.gain, last.fan_in) == ("output", 1.0, 64)


def test_the_rules_give_reinit_the_planned_stds() -> None:
    model, x = _mlp(torch.nn.GELU, out=10), _x()
    plan = initscale.auto(x).plan(model)
    report = reinit_(model, plan.rules(), generator=torch.Generator().manual_seed(0))
    for row in plan.rows:
        assert report[row.weight].std == pytest.approx(row.gain / math.sqrt(row.fan_in), rel=1e-12)
        then = row.activation if row.follower == "activation" else row.follower
        assert f"auto: then {then}" in report[row.weight].reason
    assert report["0.bias"].spec == initscale.Zeros()


def test_auto_as_the_rules_of_reinit() -> None:
    model, x = _mlp(torch.nn.SiLU, depth=4, out=10), _x()
    dry = reinit_(model, initscale.auto(x), dry_run=True)
    assert dry.dry_run and "(predicted)" in dry["0.weight"].reason
    report = reinit_(model, initscale.auto(x), generator=torch.Generator().manual_seed(0))
    arrived = _inputs_mean_squares(model, x)
    a = gains.fixed_point("silu").gain * math.sqrt(gains.fixed_point("silu").q_star)
    for name in ("0", "2", "4", "6"):  # the report's std is the measured gain's
        row = report[f"{name}.weight"]
        assert row.std == pytest.approx(a / math.sqrt(arrived[name] * row.fan_in), rel=1e-12)
        assert "(measured)" in report[f"{name}.weight"].reason
    assert not report.dry_run


class _Residual(torch.nn.Module):
    """h = x + W2 relu(W1 x), whose second moment is m_x + q; W3 h goes to the output, W4 h to a norm."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(32, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 8)
        self.norm = torch.nn.LayerNorm(32)
        self.fc4 = torch.nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.fc2(torch.relu(self.fc1(x)))
        return self.fc3(h) + self.fc3(self.norm(self.fc4(h))).mean() * 0


def test_residual_sums_norms_and_outputs() -> None:
    x = _x()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = initscale.auto(x, residual="none").plan(_Residual())
        zero = initscale.auto(x).plan(_Residual())  # the default residual rule: the branch's last layer is 0
    m_x = float(x.double().square().mean())
    assert plan["fc1.weight"].follower == "activation" and plan["fc1.weight"].activation == "relu"
    assert plan["fc2.weight"].follower == "linear" and plan["fc2.weight"].note == "then add: holds q"
    assert plan["fc3.weight"].m_in == pytest.approx(m_x + 1.0, rel=1e-7)  # x + a branch held at q = 1
    assert plan["fc4.weight"].follower == "norm" and plan["fc4.weight"].gain == 1.0
    assert plan["fc3.weight"].follower in ("output", "linear")
    row, head = plan.residuals  # x + branch, and fc3(h) + (...).mean() * 0: a projection fc3 and a branch
    assert (row.skip, row.target, row.scale, row.residual) == ("identity", "fc2.weight", 1.0, "none")
    assert (head.skip, head.target) == ("projection through fc3", None) and "the op 'mean'" in head.note
    assert zero["fc2.weight"].gain == 0.0 and zero["fc2.weight"].scale == 0.0
    assert zero["fc3.weight"].m_in == pytest.approx(m_x, rel=1e-12)  # the sum is its skip
    row = zero.residuals[0]
    assert (row.target, row.target_category, row.scale, row.m_branch) == ("fc2.weight", "layer", 0.0, 0.0)
    assert "residual 1 (add, identity skip, branch fc1, fc2): fc2.weight x0" in str(zero)


# --- residual branches: the sums held at q (issue 21, the ResNet miss) ---------------------------


class _Block(torch.nn.Module):
    """relu(x + BN(conv(relu(BN(conv(x)))))): a ResNet basic block (torchvision's, without downsampling)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c)
        self.c2, self.b2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


class _MLPBlock(torch.nn.Module):
    """x + fc2(gelu(fc1(x))): a residual MLP block without norms (the branch ends in a layer)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def _resnet(c: int = 64, depth: int = 8) -> torch.nn.Sequential:
    stem = torch.nn.Conv2d(3, c, 3, padding=1, bias=False)
    return torch.nn.Sequential(stem, torch.nn.ReLU(), *[_Block(c) for _ in range(depth)])


def _residual_mlp(d: int = 256, depth: int = 8) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(32, d), torch.nn.ReLU(), *[_MLPBlock(d) for _ in range(depth)])


def _outputs(model: torch.nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every child: the stem, its ReLU, then each residual block's (its sum, or relu of it)."""
    outs = []
    with torch.no_grad():
        for child in model:
            x = child(x)
            outs.append(x.double())
    return outs


def _sums_are_the_stem(outs: list[torch.Tensor], label: str) -> None:
    """Every block's output (the residual sum, or ReLU of it) equals the stem's post-ReLU output exactly."""
    stem = float(outs[1].square().mean())
    grown = [(k, float(o.square().mean())) for k, o in enumerate(outs[2:], start=1) if not torch.equal(o, outs[1])]
    assert not grown, f"{label}: the sums grow: mean square {grown} against the stem's {stem:.4g}"


def _stem_level(unit_means: torch.Tensor, expected: float, label: str) -> None:
    """The stem's post-ReLU mean square M = mean over its C units of m_c (each unit's mean square on the
    batch). Given the data, the C units' weights are iid normal, so the m_c are iid with
    E[m_c] = σ²·mean|p|²/2 (w·p ~ N(0, σ²|p|²) for each input patch p, and E[relu(h)²] = Var(h)/2):
    ``expected``. The check is a t statistic: |M - expected| <= t·s/√C with s the m_c's sample sd,
    t = 4.5 (two-sided p ~ 3e-5 for t with C - 1 = 63 or 255 degrees of freedom)."""
    c = unit_means.numel()
    bound = 4.5 * float(unit_means.std()) / math.sqrt(c)
    assert abs(float(unit_means.mean()) - expected) <= bound, (label, float(unit_means.mean()), expected, bound)


def test_a_resnet_holds_every_residual_sum_at_q() -> None:
    """residual='zero' (default): each block's last BN scale is 0, so each sum is exactly its skip and the
    stream after 8 blocks is the stem's, at q (times the stem's zero-padding factor rho, computed here)."""
    torch.manual_seed(0)
    model, x = _resnet(), torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = _torch_auto.apply_(model.eval(), initscale.auto(x), generator=torch.Generator().manual_seed(2))
    for mode in ("eval", "train"):  # BN on running statistics, and on the batch
        getattr(model, mode)()
        outs = _outputs(model, x)
        _sums_are_the_stem(outs, mode)
    assert [(r.target, r.target_category, r.scale, r.skip) for r in plan.residuals] == [
        (f"{i}.b2.weight", "norm", 0.0, "identity") for i in range(2, 10)
    ]
    for r in plan.residuals:  # predicted: the sum is its skip, at q, ReLU of it the identity
        assert (r.m_branch, r.m_sum) == (0.0, r.m_skip) and r.m_sum == pytest.approx(1.0, rel=REL)
    assert all(float(model[i].b2.weight.detach().abs().max()) == 0.0 for i in range(2, 10))
    # the stem: E[M] = q·rho, rho = mean|p|²/(fan_in·m_in), p the zero-padded 3x3 patches (auto's gain
    # uses fan_in·m_in; the padding zeros lower it)
    patches = torch.nn.functional.unfold(x.double(), 3, padding=1)  # (N, 27, H·W)
    rho = float(patches.square().sum(1).mean()) / (27 * float(x.double().square().mean()))
    _stem_level(outs[1].square().mean((0, 2, 3)), rho * 1.0, "resnet stem")
    assert str(plan).count(": 2.b2.weight x0;") == 1


def test_a_residual_mlp_holds_every_sum_at_q() -> None:
    """The branch ends in a layer (no norm): its weight is 0, each sum is its skip, the stream stays at q."""
    torch.manual_seed(0)
    model, x = _residual_mlp(), _x((256, 32), scale=2.0, seed=3)
    plan = _torch_auto.apply_(model, initscale.auto(x), generator=torch.Generator().manual_seed(4))
    outs = _outputs(model, x)
    _sums_are_the_stem(outs, "mlp")  # fc2's weight and bias are 0: x + 0 is x
    _stem_level(outs[1].square().mean(0), 1.0, "mlp stem")  # no padding: E[M] = q exactly
    assert [(r.target, r.target_category, r.scale) for r in plan.residuals] == [
        (f"{i}.fc2.weight", "layer", 0.0) for i in range(2, 10)
    ]
    assert all(plan[f"{i}.fc2.weight"].gain == 0.0 for i in range(2, 10))
    report = plan.init
    assert "residual sum 1 x0 (residual='zero')" in report["2.fc2.weight"].reason


def test_residual_depth_scales_each_branch_by_one_over_sqrt_l_and_none_leaves_it() -> None:
    model, x = _residual_mlp(d=64, depth=4), _x((128, 32))
    depth = initscale.auto(x, residual="depth", arriving="predicted").plan(model)
    none = initscale.auto(x, residual="none", arriving="predicted").plan(model)
    assert [r.scale for r in depth.residuals] == [0.5] * 4 and [r.scale for r in none.residuals] == [1.0] * 4
    for k, (d, n) in enumerate(zip(depth.residuals, none.residuals, strict=True), start=1):
        assert d.m_branch == pytest.approx(n.m_branch / 4, rel=REL)  # a branch of q/L instead of q
        assert d.m_sum == pytest.approx(d.m_skip + d.m_branch, rel=REL)
        assert d.m_sum == pytest.approx(1.0 + k / 4, rel=1e-6)  # additive: q(1 + k/L), 2q at the end
        assert depth[f"{k + 1}.fc2.weight"].gain == pytest.approx(0.5 * none[f"{k + 1}.fc2.weight"].gain, rel=REL)
    applied = _torch_auto.apply_(model, initscale.auto(x, residual="depth"), generator=torch.Generator().manual_seed(0))
    for k in range(2, 6):  # measured mode keeps the factor: gain = 0.5·sqrt(q/m_in(measured))
        row = applied[f"{k}.fc2.weight"]
        assert row.scale == 0.5 and row.gain == pytest.approx(0.5 * math.sqrt(1.0 / row.m_in), rel=REL)
    with pytest.raises(ValueError, match=r"`residual` of initscale.auto must be one of 'depth', 'none', 'zero'"):
        initscale.auto(x, residual="fixup")


class _PreLN(torch.nn.Module):
    """x + attn(LN(x)) (torch's fused attention function: no layer to scale), then x + fc2(gelu(fc1(LN(x))))."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.n1, self.attn = torch.nn.LayerNorm(d), torch.nn.MultiheadAttention(d, 4, batch_first=True)
        self.n2, self.fc1, self.fc2 = torch.nn.LayerNorm(d), torch.nn.Linear(d, 64), torch.nn.Linear(64, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.n1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.n2(x))))


def test_a_branch_with_nothing_to_scale_is_named() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MHA's in_proj_weight and out_proj: named in auto's own warnings
        plan = initscale.auto(torch.randn(4, 8, 32)).plan(_PreLN())
    attn, mlp = plan.residuals
    assert attn.target is None and attn.scale == 1.0 and "multi_head_attention_forward" in attn.note
    assert (mlp.target, mlp.scale) == ("fc2.weight", 0.0)
    assert any(n.startswith("residual sum 1 (add): its branch is not scaled") for n in plan.notes)


def test_planted_bug_no_residual_rule_is_caught(monkeypatch) -> None:
    """Mutation: a planner that finds no residual sum (the rule disabled: auto as before) fails the
    ResNet and residual-MLP checks (the sums grow: about 9x and 5x q after 8 blocks)."""
    monkeypatch.setattr(autogain, "residual_sums", lambda *a, **k: {})
    with pytest.raises(AssertionError, match=r"eval: the sums grow"):
        test_a_resnet_holds_every_residual_sum_at_q()
    with pytest.raises(AssertionError, match=r"mlp: the sums grow"):
        test_a_residual_mlp_holds_every_sum_at_q()


class _QuickGELU(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def test_a_custom_elementwise_module_is_the_activation_by_quadrature() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), _QuickGELU(), torch.nn.Linear(64, 64), _QuickGELU())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its derivative comes from autograd: no central-difference warning
        plan = initscale.auto(_x()).plan(model)
    row = plan["2.weight"]
    assert (row.follower, row.activation) == ("activation", "_QuickGELU")

    def f(z):
        return z / (1.0 + np.exp(-1.702 * z))

    def df(z):
        s = 1.0 / (1.0 + np.exp(-1.702 * z))
        return s + 1.702 * z * s * (1.0 - s)

    fp = gains.fixed_point(f, derivative=df)
    assert row.gain == pytest.approx(fp.gain * math.sqrt(fp.q_star) / math.sqrt(row.m_in), rel=1e-7)
    assert row.chi == pytest.approx(fp.chi, rel=1e-7)


def test_softmax_is_not_an_activation_and_dropout_is_identity() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 16),
        torch.nn.Softmax(dim=-1),
        torch.nn.Linear(16, 16),
        torch.nn.Dropout(0.5),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 4),
    )
    plan = initscale.auto(_x()).plan(model)
    assert plan["0.weight"].follower == "linear" and plan["0.weight"].note == "then softmax: holds q"
    assert (plan["2.weight"].follower, plan["2.weight"].activation) == ("activation", "relu")
    assert any("softmax" in note for note in plan.notes)  # the measured ratio is named, never silent


class _SwiGLU(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate, self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))


def test_a_gated_product_multiplies_second_moments() -> None:
    plan = initscale.auto(_x()).plan(_SwiGLU())
    assert plan["gate.weight"].activation == "silu" and plan["up.weight"].follower == "linear"
    fp = gains.fixed_point("silu")
    assert plan["down.weight"].m_in == pytest.approx(fp.q_star * 1.0, rel=1e-7)


class _Cat(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = torch.nn.Linear(32, 10), torch.nn.Linear(32, 30), torch.nn.Linear(40, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), 2.0 * self.b(x)], dim=-1))


def test_a_concatenation_averages_by_size_and_a_scalar_factor_squares() -> None:
    plan = initscale.auto(_x()).plan(_Cat())
    assert plan["head.weight"].m_in == pytest.approx((10 * 1.0 + 30 * 4.0) / 40, rel=1e-7)


def test_weights_that_are_not_one_layer_weight_are_named_in_a_warning() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.head = torch.nn.LSTM(8, 16, batch_first=True), torch.nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0])

    not_planned = r"initscale.auto: 2 weight\(s\) are not one layer's main `weight`.*rnn.weight_ih_l0"
    with pytest.warns(UserWarning, match=not_planned):
        initscale.auto(torch.randn(4, 5, 8)).plan(Net())


def test_a_layer_the_pass_does_not_reach_is_named() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = torch.nn.Linear(32, 4), torch.nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    with pytest.warns(UserWarning, match=r"did not call 1 layer\(s\).*unused.weight"):
        initscale.auto(_x()).plan(Net())


def test_assert_stable_uses_the_product_of_chi() -> None:
    x = _x()
    relu = initscale.auto(x).plan(_mlp(torch.nn.ReLU, depth=20))
    relu.assert_stable()
    gelu = initscale.auto(x).plan(_mlp(torch.nn.GELU, depth=20))
    assert gelu.growth() == pytest.approx(gains.fixed_point("gelu").chi ** 20, rel=1e-6)
    with pytest.raises(AssertionError, match=r"predicted to grow by 3.2"):
        gelu.assert_stable()


def test_planted_bug_gain_ignores_the_data_is_caught(monkeypatch) -> None:
    """Mutation: a planner that takes every layer's input at q (torch's calculate_gain habit) fails
    the first-layer check of test_an_mlp_starts_on_the_fixed_point_from_the_data_s_second_moment."""
    real = autogain.layer_gain  # the planner's (initscale.autogain.propagate)
    monkeypatch.setattr(autogain, "layer_gain", lambda f, act, m_in, q=1.0, param=None: real(f, act, q, q, param))
    with pytest.raises(AssertionError):
        test_an_mlp_starts_on_the_fixed_point_from_the_data_s_second_moment(torch.nn.ReLU, "relu")


# --- real models --------------------------------------------------------------------------------


def test_hf_gpt2_and_llama_blocks() -> None:
    transformers = pytest.importorskip("transformers")
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
        )
    )
    plan = initscale.auto(ids).plan(gpt2)
    fc = plan["transformer.h.0.mlp.c_fc.weight"]  # NewGELUActivation: gelu_tanh's closed form
    assert (fc.layer, fc.follower, fc.activation, fc.fan_in) == ("Conv1D", "activation", "gelu_tanh", 64)
    assert plan["transformer.h.0.attn.c_attn.weight"].m_in == pytest.approx(1.0, rel=1e-6)  # after ln_1
    assert len(plan.rows) == 8  # c_attn, c_proj, c_fc, c_proj per block; lm_head is tied to wte
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            num_hidden_layers=2,
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=100,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    plan = initscale.auto(ids).plan(llama)
    assert plan["model.layers.0.mlp.gate_proj.weight"].activation == "silu"
    assert plan["model.layers.1.mlp.up_proj.weight"].follower == "linear"
    assert plan["lm_head.weight"].follower == "output" and plan["lm_head.weight"].gain == 1.0
    assert len(plan.rows) == 15


def test_the_docstring_example_runs() -> None:
    import doctest

    assert doctest.testmod(autogain).failed == 0


# --- applying it: the measured second moments -------------------------------------------------


def _inputs_mean_squares(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    seen: dict[str, float] = {}
    handles = []

    def record(name: str):
        def pre(_module, args) -> None:
            seen.setdefault(name, float(args[0].detach().double().square().mean()))

        return pre

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_pre_hook(record(name)))
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize(("activation", "name"), [(torch.nn.GELU, "gelu"), (torch.nn.SiLU, "silu")])
def test_measured_mode_uses_what_actually_arrives(activation, name) -> None:
    model, x = _mlp(activation, depth=8, out=10), _x()
    plan = _torch_auto.apply_(model, initscale.auto(x), generator=torch.Generator().manual_seed(0))
    assert plan.arriving == "measured" and plan.init is not None
    arrived = _inputs_mean_squares(model, x)  # the final weights, re-run: the very values each layer saw
    fp = gains.fixed_point(name)
    a = fp.gain * math.sqrt(fp.q_star)
    for row in plan.rows:
        assert row.m_in == pytest.approx(arrived[row.weight.rpartition(".")[0]], rel=1e-12)
        expected = 1.0 if row.follower == "output" else a / math.sqrt(row.m_in)
        assert row.gain == pytest.approx(expected, rel=REL)
        # the weight drawn by the predicted plan, times gain(measured)/gain(predicted): its std is the
        # measured gain / sqrt(fan_in) up to sampling: relative sd of a std estimate from n normal
        # values is 1/sqrt(2n); 6 sd, Bonferroni over the 9 weights at alpha ~ 2e-9 each
        w = model.get_parameter(row.weight).detach().double()
        assert float(w.std()) == pytest.approx(row.gain / math.sqrt(row.fan_in), rel=6 / math.sqrt(2 * w.numel()))


def test_predicted_mode_draws_the_plan_as_shown() -> None:
    model, x = _mlp(torch.nn.Tanh, depth=4), _x()
    shown = initscale.auto(x, arriving="predicted").plan(model)
    applied = _torch_auto.apply_(
        model, initscale.auto(x, arriving="predicted"), generator=torch.Generator().manual_seed(0)
    )
    assert applied.rows == shown.rows and applied.arriving == "predicted"
    with pytest.raises(ValueError, match=r"`arriving` of initscale.auto must be 'measured' or 'predicted'"):
        initscale.auto(x, arriving="guess")


# --- the stability report (#21 item 3) ----------------------------------------------------------


class _TwoActivations(torch.nn.Module):
    """4 GELU layers, then 3 tanh layers, then an output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.gelu = torch.nn.ModuleList(torch.nn.Linear(32, 32) for _ in range(4))
        self.tanh = torch.nn.ModuleList(torch.nn.Linear(32, 32) for _ in range(3))
        self.head = torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.gelu:
            x = torch.nn.functional.gelu(layer(x))
        for layer in self.tanh:
            x = torch.tanh(layer(x))
        return self.head(x)


def test_stability_rows_give_chi_to_the_depth_and_a_verdict_per_activation() -> None:
    plan = initscale.auto(_x()).plan(_TwoActivations())
    rows = plan.stability()
    assert [(r.activation, r.layers) for r in rows] == [("gelu", 4), ("tanh", 3)]
    for row, name, depth in zip(rows, ("gelu", "tanh"), (4, 3), strict=True):
        fp = gains.fixed_point(name)  # every layer after the first sits on the fixed point: chi^L
        assert row.chi == pytest.approx(fp.chi, rel=1e-6)
        assert row.growth == pytest.approx(fp.chi**depth, rel=1e-6)
        assert row.verdict == gains.verdict(fp.chi)
    assert rows[0].verdict == "chaotic"  # GELU at its fixed point: chi > 1 (gains.fixed_point)
    assert plan.growth() == pytest.approx(rows[0].growth * rows[1].growth, rel=1e-12)
    assert "stability: gelu: 4 layer(s)" in str(plan)


def test_assert_stable_names_each_activation_s_growth_and_verdict() -> None:
    plan = initscale.auto(_x()).plan(_mlp(torch.nn.GELU, depth=20))
    growth = gains.fixed_point("gelu").chi ** 20
    with pytest.raises(AssertionError, match=rf"gelu: 20 layer\(s\), chi 1.06.*, chi\^L {growth:.4g} \(chaotic\)"):
        plan.assert_stable()


def test_planted_bug_stability_counts_one_layer_is_caught(monkeypatch) -> None:
    """Mutation: a stability report that takes chi once instead of chi^L fails the depth check."""
    real = autogain.AutoPlan.stability

    def once(self):
        return [autogain.StabilityRow(r.activation, r.layers, r.chi, r.chi, r.verdict) for r in real(self)]

    monkeypatch.setattr(autogain.AutoPlan, "stability", once)
    with pytest.raises(AssertionError):
        test_stability_rows_give_chi_to_the_depth_and_a_verdict_per_activation()


# --- low precision: bf16 and fp16 models --------------------------------------------------------

# the unit roundoff u = 2^-p of each dtype, p its significand bits with the implicit one (bf16 8, fp16 11):
# rounding to nearest moves a value by at most u/2 of itself
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_auto_on_a_low_precision_model(dtype) -> None:
    torch.manual_seed(0)
    model, x = _mlp(torch.nn.GELU, depth=6, width=256, out=10).to(dtype), _x((256, 32)).to(dtype)
    plan = _torch_auto.apply_(model, initscale.auto(x), generator=torch.Generator().manual_seed(0))
    arrived = _inputs_mean_squares(model, x)  # the final weights re-run in the model's dtype
    u = UNIT_ROUNDOFF[dtype]
    for row in plan.rows:
        w = model.get_parameter(row.weight).detach()
        assert w.dtype == dtype and bool(torch.isfinite(w).all()), row.weight
        # the mean square the measuring pass used is what arrives in this dtype (the same pass, in float64)
        assert row.m_in == pytest.approx(arrived[row.weight.rpartition(".")[0]], rel=1e-12)
        # std: sampling, relative sd 1/sqrt(2n) of a std from n normal values, at 6 sd, plus two roundings
        # to the dtype (the draw, then the measured rescale), each moving every value by at most u/2
        n = w.numel()
        assert float(w.double().std()) == pytest.approx(row.gain / math.sqrt(row.fan_in), rel=6 / math.sqrt(2 * n) + u)
    with torch.no_grad():
        y = model(x)
    assert y.dtype == dtype and bool(torch.isfinite(y).all())
    assert plan.init is not None and {r.weight for r in plan.rows} <= {r.name for r in plan.init.touched}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_auto_holds_residual_sums_in_low_precision(dtype) -> None:
    torch.manual_seed(0)
    model, x = _residual_mlp(d=64, depth=4).to(dtype), _x((128, 32)).to(dtype)
    plan = _torch_auto.apply_(model, initscale.auto(x), generator=torch.Generator().manual_seed(1))
    assert all(float(model.get_parameter(r.target).detach().abs().max()) == 0.0 for r in plan.residuals)
    outs = _outputs(model, x)
    _sums_are_the_stem(outs, str(dtype))  # x + 0 is x in every dtype
    assert all(bool(torch.isfinite(o).all()) for o in outs)


def test_planted_bug_mean_square_in_the_model_dtype_is_caught(monkeypatch) -> None:
    """Mutation: the measuring pass takes the mean square in the model's own dtype (bf16 squares and a
    bf16 result) instead of float64: the low-precision test's m_in check fails."""
    monkeypatch.setattr(_torch_auto, "_mean_square", lambda t: float(t.detach().square().mean()))
    with pytest.raises(AssertionError):
        test_auto_on_a_low_precision_model(torch.bfloat16)
