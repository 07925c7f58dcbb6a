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
        plan = initscale.auto(x).plan(_Residual())
    m_x = float(x.double().square().mean())
    assert plan["fc1.weight"].follower == "activation" and plan["fc1.weight"].activation == "relu"
    assert plan["fc2.weight"].follower == "linear" and plan["fc2.weight"].note == "then add: holds q"
    assert plan["fc3.weight"].m_in == pytest.approx(m_x + 1.0, rel=1e-7)  # x + a branch held at q = 1
    assert plan["fc4.weight"].follower == "norm" and plan["fc4.weight"].gain == 1.0
    assert plan["fc3.weight"].follower in ("output", "linear")


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
