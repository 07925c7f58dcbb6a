"""initscale.auto on Flax linen: the activations read off the traced apply, the gains it plans, the second
moments it predicts, and the measured mode (initscale/autogain.py has the rules, adapters/_jax_auto.py the trace).

The plan's checks are deterministic, against the formulas computed here (gains.fixed_point, sums and
concatenations of second moments) to float64 rounding where the activation has a closed form; an
activation found only as primitives is integrated from the traced float32 primitives (rel 1e-6). The
measured mode's m_in are compared with what a re-run of the final variables feeds each layer, each
kernel's std with gain/sqrt(fan_in) within its sampling tolerance. Mutation tests plant a planner that
ignores the data's second moment and a measuring pass that does not rescale, and show the checks fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nn = pytest.importorskip("flax.linen")

import jax.numpy as jnp  # noqa: E402
from _residual_reference import assert_same_residual_rows  # noqa: E402

import initscale  # noqa: E402
from initscale import gains  # noqa: E402
from initscale.adapters import _jax_auto  # noqa: E402
from initscale.adapters import jax as isj  # noqa: E402

REL = 1e-9  # float64 rounding of a few products and quadratures


def _x(shape=(128, 32), scale=3.0, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, jnp.float32)


def _m(x) -> float:
    return float(np.mean(np.square(np.asarray(x, np.float64))))


def _a(name: str, param: float | None = None) -> float:
    fp = gains.fixed_point(name, 1.0, param)
    return fp.gain * math.sqrt(fp.q_star)


def _mlp(activation, depth: int = 6, width: int = 64, out: int | None = 10) -> nn.Sequential:
    layers = [layer for _ in range(depth) for layer in (nn.Dense(width), activation)]
    return nn.Sequential(layers + ([nn.Dense(out)] if out else []))


ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "silu": nn.silu,
    "gelu_tanh": nn.gelu,
    "sigmoid": nn.sigmoid,
    "gelu": lambda t: nn.gelu(t, approximate=False),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_an_mlp_starts_on_the_fixed_point_from_the_data_s_second_moment(name) -> None:
    x, model = _x(), _mlp(ACTIVATIONS[name])
    plan = initscale.auto(x).plan(model, variables=model.init(jax.random.key(0), x))
    fp = gains.fixed_point(name)
    first, *middle, last = plan.rows
    assert first.m_in == pytest.approx(_m(x), rel=REL)  # the data's own, measured
    assert first.gain == pytest.approx(_a(name) / math.sqrt(_m(x)), rel=REL)
    for row in middle:  # found between the modules, in the jaxpr; every later layer sees q*
        assert (row.follower, row.activation) == ("activation", name)
        assert row.m_in == pytest.approx(fp.q_star, rel=1e-7) and row.chi == pytest.approx(fp.chi, rel=REL)
    assert (last.follower, last.gain, last.fan_in) == ("output", 1.0, 64)


def test_leaky_relu_and_elu_parameters_are_read_off_the_function() -> None:
    x = _x()
    model = nn.Sequential([nn.Dense(16), lambda t: nn.leaky_relu(t, 0.1), nn.Dense(16), nn.elu, nn.Dense(4)])
    plan = initscale.auto(x).plan(model, variables=model.init(jax.random.key(0), x))
    first, second, _ = plan.rows
    assert first.activation == "leaky_relu" and first.gain == pytest.approx(
        _a("leaky_relu", 0.1) / math.sqrt(_m(x)), rel=1e-6
    )  # slope 0.1 from f(-1), f32
    assert second.activation == "elu" and second.chi == pytest.approx(gains.fixed_point("elu", 1.0, 1.0).chi, rel=1e-6)


def _quick_gelu(z):
    return z / (1.0 + np.exp(-1.702 * z))


def _quick_gelu_derivative(z):
    s = 1.0 / (1.0 + np.exp(-1.702 * z))
    return s + 1.702 * z * s * (1.0 - s)


class _Block(nn.Module):
    """fc1 -> relu, + x (residual) -> fc4 -> LayerNorm -> [a, 2.0 * b] concatenated -> c, quick gelu ->
    d, softmax -> head."""

    @nn.compact
    def __call__(self, x):
        h = x + nn.Dense(32, name="fc2")(nn.relu(nn.Dense(32, name="fc1")(x)))
        y = nn.LayerNorm()(nn.Dense(32, name="fc4")(h))
        c = jnp.concatenate([nn.Dense(10, name="a")(y), nn.Dense(30, name="b")(y) * 2.0], -1)
        q = nn.Dense(16, name="c")(c)
        q = q * nn.sigmoid(1.702 * q)
        return nn.Dense(4, name="head")(nn.softmax(nn.Dense(16, name="d")(q)))


def test_residuals_norms_concatenations_and_a_custom_activation() -> None:
    x, block = _x(), _Block()
    plan = initscale.auto(x, residual="none").plan(block, variables=block.init(jax.random.key(0), x))
    rows = {row.weight.split("/")[1]: row for row in plan.rows}
    assert (rows["fc1"].activation, rows["fc2"].follower, rows["fc2"].note) == ("relu", "linear", "then add: holds q")
    assert rows["fc4"].m_in == pytest.approx(_m(x) + 1.0, rel=1e-7)  # x + a branch held at q = 1
    assert (rows["fc4"].follower, rows["fc4"].gain) == ("norm", 1.0)
    assert rows["a"].m_in == pytest.approx(1.0, rel=1e-6)  # LayerNorm's scale = 1 (float32 mean square of ones)
    assert rows["a"].note == "then concatenate: holds q"
    assert (rows["b"].follower, rows["b"].note) == ("linear", "then mul: holds q")  # a scalar factor: squared
    assert rows["c"].m_in == pytest.approx((10 * 1.0 + 30 * 4.0) / 40, rel=1e-6)  # averaged by size; (2.0)^2
    fp = gains.fixed_point(_quick_gelu, derivative=_quick_gelu_derivative)  # x * sigmoid(1.702 x) by quadrature
    assert rows["c"].follower == "activation" and rows["c"].activation == "(mul logistic mul)"
    assert rows["c"].gain == pytest.approx(fp.gain * math.sqrt(fp.q_star) / math.sqrt(rows["c"].m_in), rel=1e-6)
    assert rows["c"].chi == pytest.approx(fp.chi, rel=1e-6)
    assert rows["d"].follower == "linear" and any("softmax" in n or "reduce_max" in n for n in plan.notes)
    assert rows["head"].follower == "output"


def test_bad_arguments_name_themselves() -> None:
    x, model = _x(), _mlp(nn.relu, depth=1)
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(TypeError, match=r"needs its variables: auto.plan\(module, variables="):
        initscale.auto(x).plan(model)
    with pytest.raises(TypeError, match=r"needs module=, the flax.linen.Module"):
        isj.reinit(variables, initscale.auto(x), jax.random.key(1))


def test_planted_bug_gain_ignores_the_data_is_caught(monkeypatch) -> None:
    """Mutation: a planner that takes every layer's input at q fails the first-layer check."""
    real = _jax_auto.layer_gain
    monkeypatch.setattr(_jax_auto, "layer_gain", lambda f, act, m_in, q=1.0, param=None: real(f, act, q, q, param))
    with pytest.raises(AssertionError):
        test_an_mlp_starts_on_the_fixed_point_from_the_data_s_second_moment("relu")


# --- applying it: the measured second moments -------------------------------------------------


def _inputs_mean_squares(model, variables, x) -> dict[str, float]:
    """What a re-run feeds each Dense (its __call__ intercepted)."""
    seen: dict[str, float] = {}

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, nn.Dense):
            seen.setdefault("/".join(("params", *context.module.path, "kernel")), _m(args[0]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        model.apply(variables, x)
    return seen


@pytest.mark.parametrize("name", ["gelu_tanh", "silu"])
def test_measured_mode_uses_what_actually_arrives(name) -> None:
    x, model = _x(), _mlp(ACTIVATIONS[name], depth=8)
    variables = model.init(jax.random.key(0), x)
    new, plan = _jax_auto.apply(variables, model, initscale.auto(x), jax.random.key(1))
    assert plan.arriving == "measured" and plan.init is not None
    arrived = _inputs_mean_squares(model, new, x)  # the final kernels, re-run: the values each layer saw
    for row in plan.rows:
        assert row.m_in == pytest.approx(arrived[row.weight], rel=1e-6)  # eager primitives vs linen's apply, f32
        expected = 1.0 if row.follower == "output" else _a(name) / math.sqrt(row.m_in)
        assert row.gain == pytest.approx(expected, rel=REL)
        # drawn by the predicted plan, times gain(measured)/gain(predicted): relative sd of a std estimate from
        # n normal values 1/sqrt(2n); 6 sd, Bonferroni over the 9 kernels at alpha ~ 2e-9 each
        w = np.asarray(new["params"][row.weight.split("/")[1]]["kernel"], np.float64)
        assert float(w.std()) == pytest.approx(row.gain / math.sqrt(row.fan_in), rel=6 / math.sqrt(2 * w.size))


def test_auto_as_the_rules_of_reinit() -> None:
    x, model = _x(), _mlp(nn.silu, depth=4)
    variables = model.init(jax.random.key(0), x)
    same, dry = isj.reinit(variables, initscale.auto(x), jax.random.key(1), dry_run=True, module=model)
    assert same is variables and "(predicted)" in dry["params/layers_0/kernel"].reason
    new, report = isj.reinit(variables, initscale.auto(x), jax.random.key(1), module=model)
    arrived = _inputs_mean_squares(model, new, x)
    for i in (0, 2, 4, 6):
        row = report[f"params/layers_{i}/kernel"]
        assert row.std == pytest.approx(_a("silu") / math.sqrt(arrived[row.name] * row.fan_in), rel=1e-6)
        assert "auto: then silu" in row.reason and "(measured)" in row.reason
    assert report["params/layers_0/bias"].spec == initscale.Zeros()


def test_predicted_mode_draws_the_plan_as_shown() -> None:
    x, model = _x(), _mlp(nn.tanh, depth=4)
    variables = model.init(jax.random.key(0), x)
    shown = initscale.auto(x, arriving="predicted").plan(model, variables=variables)
    _, applied = _jax_auto.apply(variables, model, initscale.auto(x, arriving="predicted"), jax.random.key(1))
    assert applied.rows == shown.rows and applied.arriving == "predicted"


def test_planted_bug_measuring_pass_that_does_not_rescale_is_caught(monkeypatch) -> None:
    """Mutation: a measuring pass that records the measured gains but returns the kernels as drawn fails
    test_measured_mode_uses_what_actually_arrives (a re-run no longer sees the m_in the rows report)."""
    real = _jax_auto._evaluate

    def evaluate(trace, leaves, inputs, before=None):
        if before is None:
            return real(trace, leaves, inputs)
        kept = list(leaves)

        def planted(eqn, env):
            before(eqn, env)
            leaves[:] = kept  # the rescaled kernels are dropped

        return real(trace, leaves, inputs, planted)

    monkeypatch.setattr(_jax_auto, "_evaluate", evaluate)
    with pytest.raises(AssertionError):
        test_measured_mode_uses_what_actually_arrives("silu")


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(8, (3, 3), name="c0")(x))
        h = nn.relu(nn.LayerNorm()(nn.Conv(8, (3, 3), name="c1")(h)))  # an activation after a norm
        h = h + nn.Conv(8, (3, 3), name="c2")(h)
        return nn.Dense(4, name="out")(h.reshape((h.shape[0], -1)))


class _Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.LayerNorm()(x + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=16, name="mha")(x))


def test_convolutions_an_activation_after_a_norm_and_attention() -> None:
    x, cnn = _x((4, 8, 8, 3), scale=1.0), _CNN()
    plan = initscale.auto(x, residual="none").plan(cnn, variables=cnn.init(jax.random.key(0), x))
    rows = {row.weight.split("/")[1]: row for row in plan.rows}
    assert (rows["c0"].layer, rows["c0"].fan_in, rows["c0"].activation) == ("Conv", 27, "relu")  # 3 x 3 x 3
    assert (rows["c1"].follower, rows["c1"].gain) == ("norm", 1.0)
    assert rows["c2"].m_in == pytest.approx(0.5, rel=1e-6)  # LayerNorm's scale = 1, then E[relu(Z)^2] = 1/2
    assert rows["out"].m_in == pytest.approx(0.5 + 1.0, rel=1e-6)  # h + a branch held at q = 1
    assert not plan.notes  # every op on the path has a rule
    t, block = _x((4, 10, 16), scale=1.0), _Attention()
    plan = initscale.auto(t, residual="none").plan(block, variables=block.init(jax.random.key(0), t))
    rows = {row.weight.split("/")[2]: row for row in plan.rows}
    assert rows["query"].note == "then div: holds q"  # flax's query / sqrt(depth): a scalar factor, kept
    assert rows["key"].note == "then dot_general: holds q" and rows["out"].note == "then add: holds q"
    assert any("dot_general" in note for note in plan.notes)  # the attention product: measured, named


class _Residual(nn.Module):
    """relu(h + fc1(h)) and gelu(h + fc2(h)): activations applied to residual sums, not to a layer's output."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(32, name="fc0")(x))
        h = nn.relu(h + nn.Dense(32, name="fc1")(h))
        h = nn.gelu(h + nn.Dense(32, name="fc2")(h))
        return nn.Dense(4, name="out")(h)


def test_an_activation_on_a_residual_sum_is_identified_not_measured() -> None:
    """The sum of two values held at q = 1 has second moment 2; relu maps it to E[relu(sqrt(2) Z)^2] = 1,
    nn.gelu (the tanh approximation) to E[gelu_tanh(sqrt(2) Z)^2]: exact to the float32 rounding of the
    identified closed forms (rel 1e-6), where a measured ratio would be off by its sampling error."""
    from initscale.autogain import activation_moment

    x, model = _x(scale=2.0), _Residual()
    plan = initscale.auto(x, residual="none").plan(model, variables=model.init(jax.random.key(0), x))
    rows = {row.weight.split("/")[1]: row for row in plan.rows}
    assert not plan.notes, plan.notes  # nothing measured: every op on the path has a rule
    assert (rows["fc1"].follower, rows["fc1"].activation) == ("linear", "add")
    assert rows["fc2"].m_in == pytest.approx(activation_moment("relu", 2.0), rel=1e-6)
    assert rows["out"].m_in == pytest.approx(activation_moment("gelu_tanh", 2.0), rel=1e-6)


def test_planted_bug_residual_activation_left_to_the_ratio_is_caught(monkeypatch) -> None:
    """Mutation: every run taken for affine (so the residual activation falls to a measured ratio) fails it."""
    monkeypatch.setattr(_jax_auto, "_affine", lambda region: True)
    with pytest.raises(AssertionError):
        test_an_activation_on_a_residual_sum_is_identified_not_measured()


# --- low precision: bfloat16 and float16 models --------------------------------------------------

UNIT = {"bfloat16": 2.0**-8, "float16": 2.0**-11}  # unit roundoff u of round-to-nearest
LOW = {"silu": nn.silu, "gelu_tanh": nn.gelu}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", sorted(LOW))
def test_low_precision_models_get_their_activations_gains(dtype: str, name: str) -> None:
    """A linen MLP traced in bfloat16/float16. nn.silu is jitted: its closed form (rel 1e-9). nn.gelu comes
    as primitives whose constants (0.044715, sqrt(2/pi)) are rounded to the dtype, each a relative change
    <= u: integrated in float32 from those primitives, its gain is the tanh GELU's within u (in float16
    the integrand once overflowed to NaN; bfloat16 inputs once had "no second moment"). Applied: kernels
    stay in the dtype and finite; each kernel's sample std is gain/sqrt(fan_in) within z = 6 of its
    relative sd 1/sqrt(2n) (Bonferroni over 5 kernels, ~1e-8 each) plus u (each value rounded)."""
    x = jnp.asarray(_x(), dtype)
    layers = [m for _ in range(4) for m in (nn.Dense(64, dtype=dtype, param_dtype=dtype), LOW[name])]
    model = nn.Sequential([*layers, nn.Dense(10, dtype=dtype, param_dtype=dtype)])
    variables = model.init(jax.random.key(0), x)
    plan = initscale.auto(x).plan(model, variables=variables)
    fp, u = gains.fixed_point(name), UNIT[dtype]
    assert plan.rows[0].m_in == pytest.approx(_m(x), rel=1e-9)
    for row in plan.rows[:-1]:
        assert row.follower == "activation", row
        rel = 1e-9 if name == "silu" else u
        assert row.gain == pytest.approx(fp.gain * math.sqrt(fp.q_star) / math.sqrt(row.m_in), rel=rel), row
        assert row.chi == pytest.approx(fp.chi, rel=rel), row
    new, report = isj.reinit(variables, initscale.auto(x), jax.random.key(1), module=model)
    for row in plan.rows:
        w = new["params"][row.weight.split("/")[1]]["kernel"]
        values = np.asarray(w, np.float64)
        assert str(w.dtype) == dtype and np.all(np.isfinite(values))
        want = report[row.weight].std
        assert float(values.std()) == pytest.approx(want, rel=6 / math.sqrt(2 * values.size) + u), row.weight


def test_planted_bug_low_precision_integrand_is_caught(monkeypatch) -> None:
    """Mutation: integrating the traced float16 primitives in float16 (no widening) fails the gelu case."""
    monkeypatch.setattr(_jax_auto, "_narrow", lambda dtype: False)
    with pytest.raises((AssertionError, ValueError)):
        test_low_precision_models_get_their_activations_gains("float16", "gelu_tanh")


# --- flax nnx: not read yet, and never silently --------------------------------------------------

NNX_ERROR = r"reads Flax linen modules only.*argument `{}` is a flax.nnx {}.*initscale.jax.reinit\(model, spec, key\)"


def _nnx_model():
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc1, self.fc2 = nnx.Linear(32, 16, rngs=rngs), nnx.Linear(16, 4, rngs=rngs)

        def __call__(self, x):
            return self.fc2(nnx.gelu(self.fc1(x)))

    return nnx, Net(nnx.Rngs(0))


def test_an_nnx_model_is_a_clear_error_naming_what_is_supported() -> None:
    nnx, model = _nnx_model()
    x = _x()
    with pytest.raises(TypeError, match=NNX_ERROR.format("module", "Net")):
        isj.reinit(model, initscale.auto(x), jax.random.key(1), module=model)
    with pytest.raises(TypeError, match=NNX_ERROR.format("variables", "State")):
        isj.reinit(nnx.state(model), initscale.auto(x), jax.random.key(1), module=_mlp(nn.relu, depth=1))
    with pytest.raises(TypeError, match=r"models of type Net are not supported yet"):  # autogain's own dispatch
        initscale.auto(x).plan(model)


def test_planted_bug_nnx_not_recognised_is_caught(monkeypatch) -> None:
    """Mutation: without the nnx check the generic linen message comes back, which names no fix."""
    monkeypatch.setattr(_jax_auto, "nnx_error", lambda *args, **kwargs: None)
    with pytest.raises(AssertionError):  # the match fails
        with pytest.raises(TypeError, match=NNX_ERROR.format("module", "Net")):
            isj.reinit(_nnx_model()[1], initscale.auto(_x()), jax.random.key(1), module=_nnx_model()[1])


# --- residual branches (issue 21): the same rule as torch's ----------------------------------------


class _MLPBlock(nn.Module):
    """x + fc2(gelu(fc1(x))): a residual MLP block without norms (the branch ends in a layer)."""

    d: int

    @nn.compact
    def __call__(self, x):
        return x + nn.Dense(self.d, name="fc2")(nn.gelu(nn.Dense(2 * self.d, name="fc1")(x), approximate=False))


class _ResidualMLP(nn.Module):
    """Dense(d) -> relu, then x + fc2(gelu(fc1(x))) blocks (tests/test_auto_torch.py's _residual_mlp);
    ``taps=True`` returns the stem's ReLU output and every block's."""

    d: int = 64
    depth: int = 4

    @nn.compact
    def __call__(self, x, taps: bool = False):
        h = nn.relu(nn.Dense(self.d, name="stem")(x))
        outs = [h]
        for i in range(self.depth):
            h = _MLPBlock(self.d, name=f"block{i}")(h)
            outs.append(h)
        return outs if taps else h


class _BasicBlock(nn.Module):
    """relu(x + BN(conv(relu(BN(conv(x)))))): a ResNet basic block (tests/test_auto_torch.py's _Block)."""

    c: int
    train: bool = False

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(self.c, (3, 3), padding="SAME", use_bias=False, name="c1")(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not self.train, name="n1")(h))
        h = nn.Conv(self.c, (3, 3), padding="SAME", use_bias=False, name="c2")(h)
        return nn.relu(x + nn.BatchNorm(use_running_average=not self.train, name="n2")(h))


class _ResNet(nn.Module):
    c: int = 16
    depth: int = 4
    train: bool = False

    @nn.compact
    def __call__(self, x, taps: bool = False):
        h = nn.relu(nn.Conv(self.c, (3, 3), padding="SAME", use_bias=False, name="stem")(x))
        outs = [h]
        for i in range(self.depth):
            h = _BasicBlock(self.c, self.train, name=f"block{i}")(h)
            outs.append(h)
        return outs if taps else h


def _sums_are_the_stem(outs, label: str) -> None:
    """Every block's output (the residual sum, or ReLU of it) equals the stem's post-ReLU output exactly."""
    values = [np.asarray(o) for o in outs]
    grown = [(k, _m(v)) for k, v in enumerate(values[1:], start=1) if not np.array_equal(v, values[0])]
    assert not grown, f"{label}: the sums grow: mean square {grown} against the stem's {_m(values[0]):.4g}"


def test_a_resnet_holds_every_residual_sum_at_q() -> None:
    """residual='zero' (default): each block's last BatchNorm scale is 0, so each sum is exactly its skip (BN
    gives its bias, 0, on running statistics and on the batch) and the stream after 4 blocks is the stem's."""
    x, model = _x((8, 8, 8, 3), scale=1.0, seed=1), _ResNet()
    variables = model.init(jax.random.key(0), x)
    new, plan = _jax_auto.apply(variables, model, initscale.auto(x), jax.random.key(2))
    _sums_are_the_stem(model.apply(new, x, taps=True), "eval")
    train, _ = _ResNet(train=True).apply(new, x, taps=True, mutable=["batch_stats"])
    _sums_are_the_stem(train, "train")
    assert [(r.target, r.target_category, r.scale, r.skip) for r in plan.residuals] == [
        (f"params/block{i}/n2/scale", "norm", 0.0, "identity") for i in range(4)
    ]
    for r in plan.residuals:  # predicted: the sum is its skip, at q, ReLU of it the identity
        assert (r.m_branch, r.m_sum) == (0.0, r.m_skip) and r.m_sum == pytest.approx(1.0, rel=REL)
    assert all(float(np.abs(np.asarray(new["params"][f"block{i}"]["n2"]["scale"])).max()) == 0.0 for i in range(4))
    assert "scale of residual sum 1's branch x0 (residual='zero')" in plan.init["params/block0/n2/scale"].reason
    assert str(plan).count(": params/block0/n2/scale x0;") == 1


def test_a_residual_mlp_holds_every_sum_at_q() -> None:
    """The branch ends in a Dense (no norm): its kernel is 0 (its bias too, by default), each sum is its skip."""
    x, model = _x((256, 32), scale=2.0, seed=3), _ResidualMLP()
    variables = model.init(jax.random.key(0), x)
    new, plan = _jax_auto.apply(variables, model, initscale.auto(x), jax.random.key(4))
    _sums_are_the_stem(model.apply(new, x, taps=True), "mlp")
    assert [(r.target, r.target_category, r.scale) for r in plan.residuals] == [
        (f"params/block{i}/fc2/kernel", "layer", 0.0) for i in range(4)
    ]
    assert all(plan[f"params/block{i}/fc2/kernel"].gain == 0.0 for i in range(4))
    assert "residual sum 1 x0 (residual='zero')" in plan.init["params/block0/fc2/kernel"].reason


def test_residual_depth_scales_each_branch_by_one_over_sqrt_l_and_none_leaves_it() -> None:
    x, model = _x(), _ResidualMLP()
    variables = model.init(jax.random.key(0), x)
    depth = initscale.auto(x, residual="depth", arriving="predicted").plan(model, variables=variables)
    none = initscale.auto(x, residual="none", arriving="predicted").plan(model, variables=variables)
    assert [r.scale for r in depth.residuals] == [0.5] * 4 and [r.scale for r in none.residuals] == [1.0] * 4
    for k, (d, n) in enumerate(zip(depth.residuals, none.residuals, strict=True), start=1):
        assert d.m_branch == pytest.approx(n.m_branch / 4, rel=REL)  # a branch of q/L instead of q
        assert d.m_sum == pytest.approx(d.m_skip + d.m_branch, rel=REL)
        assert d.m_sum == pytest.approx(1.0 + k / 4, rel=1e-6)  # additive: q(1 + k/L), 2q at the end
        weight = f"params/block{k - 1}/fc2/kernel"
        assert depth[weight].gain == pytest.approx(0.5 * none[weight].gain, rel=REL)
        assert none[weight].gain == pytest.approx(math.sqrt(1.0 / none[weight].m_in), rel=REL)  # as planned
    assert not any(isinstance(rule.spec, initscale.Zeros) for rule in none.rules().values())
    _, applied = _jax_auto.apply(variables, model, initscale.auto(x, residual="depth"), jax.random.key(1))
    for k in range(4):  # measured mode keeps the factor: gain = 0.5·sqrt(q/m_in(measured))
        row = applied[f"params/block{k}/fc2/kernel"]
        assert row.scale == 0.5 and row.gain == pytest.approx(0.5 * math.sqrt(1.0 / row.m_in), rel=REL)


class _Unscalable(nn.Module):
    """x + relu(fc(x)): the branch ends in an activation, which no scale sets."""

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(32, name="stem")(x)
        return nn.Dense(4, name="out")(h + nn.relu(nn.Dense(32, name="fc")(h)))


def test_a_branch_the_walk_cannot_scale_is_said() -> None:
    """A residual sum whose branch has no last layer or norm to scale: a note in the plan and a warning
    naming the sum and the fix; residual='none' says nothing. An activation's own sums (nn.gelu's
    x + 0.044715 x^3) are not residual sums."""
    import warnings

    x, model = _x(), _Unscalable()
    variables = model.init(jax.random.key(0), x)
    with pytest.warns(UserWarning, match=r"residual='zero' could not be applied to 1 residual sum") as got:
        plan = initscale.auto(x).plan(model, variables=variables)
    message = str(next(w.message for w in got if "residual" in str(w.message)))
    assert "identity skip + branch fc: it ends in 'relu'" in message and "residual='none'" in message
    assert plan.residuals[0].target is None and plan.residuals[0].scale == 1.0
    assert any(n.startswith("residual sum 1 (add): its branch is not scaled") for n in plan.notes), plan.notes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        none = initscale.auto(x, residual="none").plan(model, variables=variables)
        mlp = _mlp(nn.gelu, depth=3)  # the tanh GELU's primitives hold an add of x and a power of x
        plain = initscale.auto(x).plan(mlp, variables=mlp.init(jax.random.key(0), x))
    assert not none.notes and not plain.notes and not plain.residuals


def test_planted_bug_no_residual_rule_is_caught(monkeypatch) -> None:
    """Mutation: a walk that finds no residual sum (the rule disabled: auto as before) fails the ResNet and
    residual-MLP checks (the sums grow) and the unscalable branch goes unsaid."""
    monkeypatch.setattr(_jax_auto, "_residual_adds", lambda *a, **k: {})
    with pytest.raises(AssertionError, match=r"eval: the sums grow"):
        test_a_resnet_holds_every_residual_sum_at_q()
    with pytest.raises(AssertionError, match=r"mlp: the sums grow"):
        test_a_residual_mlp_holds_every_sum_at_q()
    with pytest.raises(pytest.fail.Exception):
        test_a_branch_the_walk_cannot_scale_is_said()
    with pytest.raises(ValueError, match=r"not enough values to unpack"):  # no residual row at all
        test_a_projection_shortcut_is_found_and_its_branch_zeroed()


def test_the_same_model_in_torch_gives_the_same_residual_rows() -> None:
    """The residual MLP in torch and in Flax linen, on the same data: the same residual rows
    (tests/_residual_reference.py)."""
    x = _x()
    model = _ResidualMLP()
    variables = model.init(jax.random.key(0), x)
    assert_same_residual_rows(
        np.asarray(x),
        lambda residual: initscale.auto(x, residual=residual).plan(model, variables=variables),
        lambda k: f"params/block{k}/fc2/kernel",
    )


class _DownBlock(nn.Module):
    """relu(BN(proj(x)) + BN(conv(relu(BN(conv(x)))))) with stride 2: ResNet's downsampling block (a
    projection shortcut, a 1x1 conv and its BN)."""

    @nn.compact
    def __call__(self, x, taps: bool = False):
        h = nn.Conv(16, (3, 3), strides=2, padding="SAME", use_bias=False, name="c1")(x)
        h = nn.relu(nn.BatchNorm(use_running_average=True, name="n1")(h))
        h = nn.BatchNorm(use_running_average=True, name="n2")(
            nn.Conv(16, (3, 3), padding="SAME", use_bias=False, name="c2")(h)
        )
        skip = nn.BatchNorm(use_running_average=True, name="pn")(
            nn.Conv(16, (1, 1), strides=2, use_bias=False, name="proj")(x)
        )
        return (skip, nn.relu(skip + h)) if taps else nn.relu(skip + h)


def test_a_projection_shortcut_is_found_and_its_branch_zeroed() -> None:
    """The skip is no ancestor of the branch here: it reaches x through proj and pn; the branch's last BN
    scale is 0, so the block's output is relu of the projection exactly."""
    x, model = _x((4, 8, 8, 3), scale=1.0), _DownBlock()
    variables = model.init(jax.random.key(0), x)
    new, plan = _jax_auto.apply(variables, model, initscale.auto(x), jax.random.key(1))
    (row,) = plan.residuals
    assert (row.skip, row.target, row.target_category, row.scale) == (
        "projection through proj, pn",
        "params/n2/scale",
        "norm",
        0.0,
    )
    skip, out = model.apply(new, x, taps=True)
    assert np.array_equal(np.asarray(out), np.maximum(np.asarray(skip), 0.0))
