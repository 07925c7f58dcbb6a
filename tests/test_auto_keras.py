"""initscale.auto on Keras models, on the backend this process runs (KERAS_BACKEND; tests/test_keras_backends.py
runs this file once per backend, each in its own process).

The plan's checks are deterministic: the gains and the predicted second moments are functions of the
recorded graph and of the example inputs' measured mean square, compared with the formulas computed
here (gains.fixed_point, sums and products of second moments) to float64 rounding. The measured
mode's m_in are compared with what a re-run of the final model feeds each layer, and each kernel's
std with its gain/sqrt(fan_in) within its sampling tolerance. Mutation tests plant a planner that
ignores the data's second moment, and a measuring pass that does not rescale, and show the checks fail.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
isk = pytest.importorskip("initscale.adapters.keras")

from _residual_reference import assert_same_residual_rows  # noqa: E402

import initscale  # noqa: E402
from initscale import autogain, gains  # noqa: E402
from initscale.adapters import _keras_auto  # noqa: E402

REL = 1e-9  # float64 rounding of a few products and quadratures


def _x(shape=(128, 32), scale=3.0, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype("float32")


def _mean_square(x) -> float:
    return float(np.mean(np.square(np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64))))


def _mlp(activation: str, depth: int = 6, width: int = 64, out: int | None = 10) -> keras.Model:
    layers = [keras.Input((32,))] + [keras.layers.Dense(width, activation=activation) for _ in range(depth)]
    return keras.Sequential(layers + ([keras.layers.Dense(out)] if out else []))


def _a(name: str, param: float | None = None) -> float:
    """The pre-activation std that puts the activation's output at its fixed point q*: g·sqrt(q*)."""
    fp = gains.fixed_point(name, 1.0, param)
    return fp.gain * math.sqrt(fp.q_star)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu"])
def test_an_mlp_starts_on_the_fixed_point_from_the_data_s_second_moment(activation) -> None:
    x = _x()
    plan = initscale.auto(x).plan(_mlp(activation))
    fp = gains.fixed_point(activation)
    first, *middle, last = plan.rows
    m_data = float(np.mean(np.square(x.astype(np.float64))))
    assert first.m_in == pytest.approx(m_data, rel=REL)  # the data's own, measured
    assert first.gain == pytest.approx(_a(activation) / math.sqrt(m_data), rel=REL)
    for row in middle:  # a fused activation= is the layer's own activation; every later layer sees q*
        assert (row.follower, row.activation) == ("activation", activation)
        assert row.m_in == pytest.approx(fp.q_star, rel=1e-7) and row.chi == pytest.approx(fp.chi, rel=REL)
    assert (last.follower, last.gain, last.fan_in) == ("output", 1.0, 64)


def _quick_gelu(z):
    return z / (1.0 + np.exp(-1.702 * z))


def _quick_gelu_derivative(z):
    s = 1.0 / (1.0 + np.exp(-1.702 * z))
    return s + 1.702 * z * s * (1.0 - s)


def _functional() -> keras.Model:
    """Dense(gelu) -> + Dense (residual) -> Dense -> LayerNorm -> Activation(tanh) ->
    [Lambda(quick gelu)(Dense), 2.0 * Dense] concatenated -> keras.ops.gelu(Dense) -> pooling -> Dense out."""
    inp = keras.Input((32,))
    h = keras.layers.Dense(64, activation="gelu", name="d0")(inp)
    s = h + keras.layers.Dense(64, name="d1")(h)
    s = keras.layers.LayerNormalization()(keras.layers.Dense(64, name="d2")(s))
    a = keras.layers.Activation("tanh")(s)
    quick = keras.layers.Lambda(lambda t: t * keras.ops.sigmoid(1.702 * t), name="quick")
    q = quick(keras.layers.Dense(64, name="d3")(a))
    c = keras.layers.Concatenate()([q, 2.0 * keras.layers.Dense(32, name="d4")(a)])
    g = keras.ops.gelu(keras.layers.Dense(48, name="d5")(c))  # keras.ops.gelu: the tanh approximation by default
    p = keras.layers.GlobalAveragePooling1D()(keras.layers.Reshape((4, 12))(g))
    return keras.Model(inp, keras.layers.Dense(4, name="out")(p))


def test_a_functional_graph_propagates_as_autogain_says() -> None:
    x = _x()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the Lambda's f' by autodiff: no central-difference warning
        plan = initscale.auto(x, residual="none").plan(_functional())  # the sum's propagation, unscaled
    rows = {row.weight.split("/")[0]: row for row in plan.rows}
    q_tanh = gains.fixed_point("tanh").q_star  # unused here: tanh's input is the norm's output, m = 1
    assert q_tanh < 1.0
    assert (rows["d0"].follower, rows["d0"].activation) == ("activation", "gelu")  # Keras's exact gelu
    assert (rows["d1"].follower, rows["d1"].note) == ("linear", "then Add: holds q")
    assert rows["d2"].m_in == pytest.approx(1.0 + 1.0, rel=1e-7)  # gelu's output at q = 1 plus a branch held at q
    assert (rows["d2"].follower, rows["d2"].gain) == ("norm", 1.0)
    tanh_out = gains.stability("tanh", 1.0, 1, q=1.0).q_final  # E[tanh(Z)^2]: LayerNorm's gamma = 1
    assert rows["d3"].m_in == pytest.approx(tanh_out, rel=REL) and rows["d4"].m_in == pytest.approx(tanh_out, rel=REL)
    assert (rows["d4"].follower, rows["d4"].note) == ("linear", "then Multiply: holds q")
    fp = gains.fixed_point(_quick_gelu, derivative=_quick_gelu_derivative)  # the Lambda by quadrature
    assert (rows["d3"].follower, rows["d3"].activation) == ("activation", "quick")
    assert rows["d3"].gain == pytest.approx(fp.gain * math.sqrt(fp.q_star) / math.sqrt(tanh_out), rel=1e-6)
    assert rows["d3"].chi == pytest.approx(fp.chi, rel=1e-6)  # float32 reaches the quadrature only through f64
    assert rows["d5"].m_in == pytest.approx((64 * fp.q_star + 32 * 4.0 * 1.0) / 96, rel=1e-6)  # sizes, 2.0^2
    assert rows["d5"].activation == "gelu_tanh"
    assert rows["out"].follower == "output" and rows["out"].gain == 1.0
    assert any("GlobalAveragePooling1D" in note for note in plan.notes)  # measured ratio: named, never silent


def test_activation_layers_and_keras_ops_nodes_are_named() -> None:
    inp = keras.Input((32,))
    h = keras.layers.ReLU()(keras.layers.Dense(16, name="a")(inp))
    h = keras.layers.LeakyReLU(negative_slope=0.1)(keras.layers.Dense(16, name="b")(h))
    h = keras.ops.silu(keras.layers.Dense(16, name="c")(h))
    h = keras.layers.Softmax()(keras.layers.Dense(16, name="d")(h))
    h = keras.layers.Dense(16, activation="leaky_relu", name="e")(h)
    plan = initscale.auto(_x()).plan(keras.Model(inp, keras.layers.Dense(2, name="f")(h)))
    rows = {row.weight.split("/")[0]: row for row in plan.rows}
    assert [rows[k].activation for k in "abce"] == ["relu", "leaky_relu", "silu", "leaky_relu"]
    assert rows["b"].gain == pytest.approx(_a("leaky_relu", 0.1) / math.sqrt(rows["b"].m_in), rel=REL)
    assert rows["e"].gain == pytest.approx(_a("leaky_relu", 0.2) / math.sqrt(rows["e"].m_in), rel=REL)  # Keras's 0.2
    assert rows["d"].follower == "linear" and any("Softmax" in note for note in plan.notes)


def test_not_planned_kernels_are_named_in_a_warning() -> None:
    model = keras.Sequential([keras.Input((5, 8)), keras.layers.LSTM(16), keras.layers.Dense(4)])
    with pytest.warns(UserWarning, match=r"not one layer's main `kernel`.*lstm"):
        plan = initscale.auto(np.ones((2, 5, 8), "float32")).plan(model)
    assert [row.layer for row in plan.rows] == ["Dense"]


def test_unsupported_models_name_what_is_supported() -> None:
    with pytest.raises(TypeError, match=r"models of type object are not supported yet .*Keras models"):
        initscale.auto(_x()).plan(object())


def test_planted_bug_gain_ignores_the_data_is_caught(monkeypatch) -> None:
    """Mutation: a planner that takes every layer's input at q (calculate_gain's habit) fails the first-layer check."""
    real = autogain.layer_gain  # the planner's (initscale.autogain.propagate)
    monkeypatch.setattr(autogain, "layer_gain", lambda f, act, m_in, q=1.0, param=None: real(f, act, q, q, param))
    with pytest.raises(AssertionError):
        test_an_mlp_starts_on_the_fixed_point_from_the_data_s_second_moment("relu")


# --- applying it: the measured second moments -------------------------------------------------


def _inputs_mean_squares(model: keras.Model, x: np.ndarray) -> dict[str, float]:
    """What a re-run of the model feeds each Dense layer (its call wrapped for one pass)."""
    seen: dict[str, float] = {}
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]

    def wrap(layer):
        fn = layer.call

        def call(inputs, *args, **kwargs):
            seen.setdefault(layer.kernel.path, _mean_square(inputs))
            return fn(inputs, *args, **kwargs)

        return call

    for layer in layers:
        layer.call = wrap(layer)
    try:
        model(x, training=False)
    finally:
        for layer in layers:
            del layer.call
    return seen


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_measured_mode_uses_what_actually_arrives(activation) -> None:
    model, x = _mlp(activation, depth=8), _x()
    plan = _keras_auto.apply(model, initscale.auto(x), seed=0)
    assert plan.arriving == "measured" and plan.init is not None
    arrived = _inputs_mean_squares(model, x)  # the final kernels, re-run: the values each layer saw
    a = _a(activation)
    for row in plan.rows:
        assert row.m_in == pytest.approx(arrived[row.weight], rel=1e-6)  # float32 forward passes, same ops
        expected = 1.0 if row.follower == "output" else a / math.sqrt(row.m_in)
        assert row.gain == pytest.approx(expected, rel=REL)
        # drawn by the predicted plan, times gain(measured)/gain(predicted): std = gain/sqrt(fan_in) up to
        # sampling: the relative sd of a std estimate from n normal values is 1/sqrt(2n); 6 sd,
        # Bonferroni over the 9 kernels at alpha ~ 2e-9 each
        w = np.asarray(keras.ops.convert_to_numpy(model.get_layer(row.weight.split("/")[1]).kernel), np.float64)
        assert float(w.std()) == pytest.approx(row.gain / math.sqrt(row.fan_in), rel=6 / math.sqrt(2 * w.size))


def test_auto_as_the_rules_of_reinit() -> None:
    model, x = _mlp("silu", depth=4), _x()
    dry = isk.reinit(model, initscale.auto(x), dry_run=True)
    assert dry.dry_run and "(predicted)" in dry[model.layers[0].kernel.path].reason
    report = isk.reinit(model, initscale.auto(x), seed=0)
    arrived = _inputs_mean_squares(model, x)
    for layer in model.layers[:4]:  # the report's std is the measured gain's
        row = report[layer.kernel.path]
        assert row.std == pytest.approx(_a("silu") / math.sqrt(arrived[layer.kernel.path] * row.fan_in), rel=1e-6)
        assert "auto: then silu" in row.reason and "(measured)" in row.reason
    assert not report.dry_run and report[model.layers[0].bias.path].spec == initscale.Zeros()


def test_predicted_mode_draws_the_plan_as_shown() -> None:
    model, x = _mlp("tanh", depth=4), _x()
    shown = initscale.auto(x, arriving="predicted").plan(model)
    applied = _keras_auto.apply(model, initscale.auto(x, arriving="predicted"), seed=0)
    assert applied.rows == shown.rows and applied.arriving == "predicted"


def test_planted_bug_measuring_pass_that_does_not_rescale_is_caught(monkeypatch) -> None:
    """Mutation: a measuring pass that records the measured gains but leaves the kernels as drawn
    fails the std check of test_measured_mode_uses_what_actually_arrives (SiLU drifts off q* beyond
    the sampling tolerance within 8 layers of width 64)."""
    real = _keras_auto.layer_gain
    calls = {"n": 0}

    def planted(f, act, m_in, q=1.0, param=None):
        g = real(f, act, m_in, q, param)
        calls["n"] += 1
        return g

    monkeypatch.setattr(_keras_auto, "layer_gain", planted)  # the measuring pass's (planning is autogain's)
    original = keras.Variable.assign

    def no_rescale(self, value):  # the measuring pass's assign of kernel * factor: kept as drawn
        if calls["n"] > 0:  # the pass has started: the draws before it are kept
            return self
        return original(self, value)

    monkeypatch.setattr(keras.Variable, "assign", no_rescale)
    with pytest.raises(AssertionError):
        test_measured_mode_uses_what_actually_arrives("silu")


def test_convolutions_batch_norm_and_attention() -> None:
    x = _x((8, 16, 16, 3), scale=1.0)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c0")(inp)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, padding="same", name="c1")(h)))
    h = keras.layers.Reshape((256, 8))(keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h))
    h = keras.layers.LayerNormalization()(h + keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h))
    plan = initscale.auto(x).plan(keras.Model(inp, keras.layers.Dense(5, name="out")(h)))
    rows = {row.weight: row for row in plan.rows}
    c0 = rows["c0/kernel"]
    assert (c0.layer, c0.fan_in, c0.activation) == ("Conv2D", 27, "relu")  # 3 x 3 x 3 forward fan-in
    assert c0.gain == pytest.approx(
        math.sqrt(2.0) / math.sqrt(float(np.mean(np.square(x.astype(np.float64))))), rel=REL
    )
    assert (rows["c1/kernel"].follower, rows["c1/kernel"].gain) == ("norm", 1.0)
    assert rows["dw/kernel"].m_in == pytest.approx(0.5, rel=1e-7)  # BatchNorm's gamma = 1, then E[relu(Z)^2] = 1/2
    assert rows["mha/query/kernel"].note == "then MultiHeadAttention (its own ops): holds q"
    assert rows["mha/attention_output/kernel"].note == "then Add: holds q"  # MultiHeadAttention's output is its own
    assert any(note.startswith("layer mha (MultiHeadAttention)") for note in plan.notes)


class _Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act = keras.layers.Dense(16, name="fc1"), keras.layers.Activation("silu")
        self.fc2, self.fc3 = keras.layers.Dense(16, name="fc2"), keras.layers.Dense(4, name="fc3")

    def call(self, x):
        return self.fc3(keras.ops.relu(self.fc2(self.act(self.fc1(x)))))  # keras.ops here: not seen


def test_a_subclassed_model_s_layers_are_seen_and_its_eager_ops_are_named() -> None:
    x, model = _x(), _Subclassed()
    model(x)
    plan = initscale.auto(x).plan(model)
    rows = {row.weight.split("/")[-2]: row for row in plan.rows}
    m_data = float(np.mean(np.square(x.astype(np.float64))))
    assert rows["fc1"].activation == "silu"
    assert rows["fc1"].gain == pytest.approx(_a("silu") / math.sqrt(m_data), rel=REL)
    assert rows["fc2"].follower == "linear" and any(
        "fc2's output goes to code the pass does not see" in note for note in plan.notes
    )
    assert rows["fc3"].follower == "output"


# --- low precision: bfloat16 and float16 models --------------------------------------------------

UNIT = {"bfloat16": 2.0**-8, "float16": 2.0**-11}  # unit roundoff u of round-to-nearest


def _keras_quick_gelu(t):  # keras ops (the NumPy _quick_gelu above is the reference)
    return t * keras.ops.sigmoid(1.702 * t)


def _low_precision_model(dtype: str) -> keras.Model:
    layers = [keras.Input((32,))]
    for _ in range(3):
        layers += [keras.layers.Dense(64, activation="silu", dtype=dtype)]
    layers += [keras.layers.Dense(64, dtype=dtype), keras.layers.Lambda(_keras_quick_gelu, dtype=dtype)]
    return keras.Sequential([*layers, keras.layers.Dense(10, dtype=dtype)])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_models_get_their_activations_gains(dtype: str) -> None:
    """A bfloat16/float16 Sequential: the fused silu by its closed form (rel 1e-9), a Lambda activation
    (x sigmoid(1.702 x)) found elementwise on the pass's own low-precision values (bfloat16 values were
    once "not floating", so the Lambda was a measured ratio) and integrated in float64 (its gain against
    the same function's quadrature here, rel 1e-6). Applied: kernels stay in the dtype and finite, each
    sample std is the report's within z = 6 of its relative sd 1/sqrt(2n) (Bonferroni over 5 kernels,
    ~1e-8 each) plus u (each value rounded once)."""
    model, x = _low_precision_model(dtype), _x()
    plan = initscale.auto(x).plan(model)
    silu, lam = plan.rows[:3], plan.rows[3]
    for row in silu:
        assert (row.follower, row.activation) == ("activation", "silu")
    seen = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, dtype), "float32")))
    assert silu[0].gain == pytest.approx(_a("silu") / math.sqrt(_mean_square(seen)), rel=REL)  # x as Dense casts it
    assert lam.follower == "activation", (lam, plan.notes)

    def f(z):
        return z / (1.0 + np.exp(-1.702 * z))

    def df(z):
        s = 1.0 / (1.0 + np.exp(-1.702 * z))
        return s + 1.702 * z * s * (1.0 - s)

    fp = gains.fixed_point(f, derivative=df)
    assert lam.gain == pytest.approx(fp.gain * math.sqrt(fp.q_star) / math.sqrt(lam.m_in), rel=1e-6)
    report = isk.reinit(model, initscale.auto(x), seed=0)
    for layer in (layer for layer in model.layers if hasattr(layer, "kernel")):
        values = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(layer.kernel, "float32")), np.float64)
        assert keras.backend.standardize_dtype(layer.kernel.dtype) == dtype and np.all(np.isfinite(values))
        want = report[layer.kernel.path].std
        assert float(values.std()) == pytest.approx(want, rel=6 / math.sqrt(2 * values.size) + UNIT[dtype])


def test_planted_bug_low_precision_values_not_floating_is_caught(monkeypatch) -> None:
    """Mutation: the elementwise test refusing bfloat16 values (the old np.floating check) fails it."""
    real = _keras_auto._elementwise

    def refusing(call, x):
        return False if "bfloat16" in str(x.dtype) else real(call, x)

    monkeypatch.setattr(_keras_auto, "_elementwise", refusing)
    with pytest.raises(AssertionError):
        test_low_precision_models_get_their_activations_gains("bfloat16")


# --- residual branches (issue 21): the same rule as torch's ----------------------------------------


def _resnet(c: int = 16, depth: int = 4, size: int = 8) -> tuple[keras.Model, keras.Model]:
    """relu(x + BN(conv(relu(BN(conv(x)))))) blocks after a conv stem and its ReLU (tests/test_auto_torch.py's
    _Block): the model, and one giving the stem's ReLU output then every block's."""
    inputs = keras.Input((size, size, 3))
    h = keras.layers.ReLU(name="stem_relu")(keras.layers.Conv2D(c, 3, padding="same", use_bias=False)(inputs))
    outs = [h]
    for i in range(depth):
        b = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"b{i}_c1")(h)
        b = keras.layers.ReLU()(keras.layers.BatchNormalization(name=f"b{i}_n1")(b))
        b = keras.layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"b{i}_c2")(b)
        b = keras.layers.BatchNormalization(name=f"b{i}_n2")(b)
        h = keras.layers.ReLU()(keras.layers.Add()([h, b]))
        outs.append(h)
    return keras.Model(inputs, h), keras.Model(inputs, outs)


def _residual_mlp(d: int = 64, depth: int = 4) -> tuple[keras.Model, keras.Model]:
    """Dense(d, relu) then x + fc2(gelu(fc1(x))) blocks (tests/test_auto_torch.py's _residual_mlp)."""
    inputs = keras.Input((32,))
    h = keras.layers.Dense(d, activation="relu", name="stem")(inputs)
    outs = [h]
    for i in range(depth):
        b = keras.layers.Dense(2 * d, activation="gelu", name=f"b{i}_fc1")(h)
        h = keras.layers.Add()([h, keras.layers.Dense(d, name=f"b{i}_fc2")(b)])
        outs.append(h)
    return keras.Model(inputs, h), keras.Model(inputs, outs)


def _sums_are_the_stem(outs, label: str) -> None:
    """Every block's output (the residual sum, or ReLU of it) equals the stem's post-ReLU output exactly."""
    values = [np.asarray(keras.ops.convert_to_numpy(o)) for o in outs]
    grown = [(k, _mean_square(v)) for k, v in enumerate(values[1:], start=1) if not np.array_equal(v, values[0])]
    assert not grown, f"{label}: the sums grow: mean square {grown} against the stem's {_mean_square(values[0]):.4g}"


def test_a_resnet_holds_every_residual_sum_at_q() -> None:
    """residual='zero' (default): each block's last BatchNormalization gamma is 0, so each sum is exactly its
    skip (BN gives its beta, 0, in inference and in training) and the stream after 4 blocks is the stem's."""
    keras.utils.set_random_seed(0)
    model, taps = _resnet()
    x = _x((8, 8, 8, 3), scale=1.0, seed=1)
    plan = _keras_auto.apply(model, initscale.auto(x), seed=2)
    for training in (False, True):
        _sums_are_the_stem(taps(x, training=training), f"training={training}")
    assert [(r.target, r.target_category, r.scale, r.skip) for r in plan.residuals] == [
        (f"b{i}_n2/gamma", "norm", 0.0, "identity") for i in range(4)
    ]
    for r in plan.residuals:  # predicted: the sum is its skip, at q (the stem's ReLU, whose output is q)
        assert (r.m_branch, r.m_sum) == (0.0, r.m_skip) and r.m_sum == pytest.approx(1.0, rel=REL)
    assert all(
        float(np.abs(keras.ops.convert_to_numpy(model.get_layer(f"b{i}_n2").gamma)).max()) == 0.0 for i in range(4)
    )
    assert "scale of residual sum 1's branch x0 (residual='zero')" in plan.init["b0_n2/gamma"].reason


def test_a_residual_mlp_holds_every_sum_at_q() -> None:
    """The branch ends in a Dense (no norm): its kernel is 0 (its bias too, by default), each sum is its skip."""
    keras.utils.set_random_seed(0)
    model, taps = _residual_mlp()
    x = _x((128, 32), scale=2.0, seed=3)
    plan = _keras_auto.apply(model, initscale.auto(x), seed=4)
    _sums_are_the_stem(taps(x, training=False), "mlp")
    assert [(r.target, r.target_category, r.scale) for r in plan.residuals] == [
        (f"b{i}_fc2/kernel", "layer", 0.0) for i in range(4)
    ]
    assert all(plan[f"b{i}_fc2/kernel"].gain == 0.0 for i in range(4))
    assert "residual sum 1 x0 (residual='zero')" in plan.init["b0_fc2/kernel"].reason


def test_residual_depth_scales_each_branch_by_one_over_sqrt_l_and_none_leaves_it() -> None:
    model, _ = _residual_mlp()
    x = _x()
    depth = initscale.auto(x, residual="depth", arriving="predicted").plan(model)
    none = initscale.auto(x, residual="none", arriving="predicted").plan(model)
    assert [r.scale for r in depth.residuals] == [0.5] * 4 and [r.scale for r in none.residuals] == [1.0] * 4
    for k, (d, n) in enumerate(zip(depth.residuals, none.residuals, strict=True), start=1):
        assert d.m_branch == pytest.approx(n.m_branch / 4, rel=REL)  # a branch of q/L instead of q
        assert d.m_sum == pytest.approx(d.m_skip + d.m_branch, rel=REL)
        assert d.m_sum == pytest.approx(1.0 + k / 4, rel=1e-6)  # additive: q(1 + k/L), 2q at the end
        weight = f"b{k - 1}_fc2/kernel"
        assert depth[weight].gain == pytest.approx(0.5 * none[weight].gain, rel=REL)
        assert none[weight].gain == pytest.approx(math.sqrt(1.0 / none[weight].m_in), rel=REL)  # as planned
    assert not any(isinstance(rule.spec, initscale.Zeros) for rule in none.rules().values())
    applied = _keras_auto.apply(model, initscale.auto(x, residual="depth"), seed=0)
    for k in range(4):  # measured mode keeps the factor: gain = 0.5·sqrt(q/m_in(measured))
        row = applied[f"b{k}_fc2/kernel"]
        assert row.scale == 0.5 and row.gain == pytest.approx(0.5 * math.sqrt(1.0 / row.m_in), rel=REL)


def test_planted_bug_no_residual_rule_is_caught(monkeypatch) -> None:
    """Mutation: a planner that finds no residual sum (the rule disabled: auto as before) fails the
    ResNet and residual-MLP checks (the sums grow)."""
    monkeypatch.setattr(autogain, "residual_sums", lambda *a, **k: {})
    with pytest.raises(AssertionError, match=r"training=False: the sums grow"):
        test_a_resnet_holds_every_residual_sum_at_q()
    with pytest.raises(AssertionError, match=r"mlp: the sums grow"):
        test_a_residual_mlp_holds_every_sum_at_q()


def test_the_same_model_in_torch_gives_the_same_residual_rows() -> None:
    """The residual MLP in torch and in Keras, on the same data: the same residual rows, targets by
    layer (tests/_residual_reference.py)."""
    x = _x()
    model, _ = _residual_mlp()
    assert_same_residual_rows(
        x, lambda residual: initscale.auto(x, residual=residual).plan(model), lambda k: f"b{k}_fc2/kernel"
    )


def test_the_torch_comparison_fails_on_a_wrong_rule_or_target() -> None:
    """Mutations of the comparison above: the Keras plan made under another rule, or block k's target
    expected at block k+1, is caught."""
    x = _x()
    model, _ = _residual_mlp()
    with pytest.raises(AssertionError):
        assert_same_residual_rows(
            x, lambda r: initscale.auto(x, residual="none").plan(model), lambda k: f"b{k}_fc2/kernel"
        )
    with pytest.raises(AssertionError):
        assert_same_residual_rows(
            x, lambda r: initscale.auto(x, residual=r).plan(model), lambda k: f"b{k + 1}_fc2/kernel"
        )


def test_a_sum_with_no_layer_on_its_branch_is_no_residual_sum() -> None:
    """h + relu(h) (or keras-hub's x + PositionEmbedding(x), which reads only x's shape): no layer or norm
    between the terms, nothing a residual rule could scale: not a residual sum, no row, no note."""
    inputs = keras.Input((32,))
    h = keras.layers.Dense(32, name="d0")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(keras.layers.Add()([h, keras.layers.ReLU()(h)])))
    plan = initscale.auto(_x()).plan(model)
    assert plan.residuals == () and not any("residual" in n for n in plan.notes), (plan.residuals, plan.notes)


class _OwnCodeBlock(keras.layers.Layer):
    """x + fc2(relu(fc1(x))) in its own call: the sum is a backend op, which the recorder does not see."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fc1, self.fc2 = keras.layers.Dense(64, name="fc1"), keras.layers.Dense(32, name="fc2")

    def call(self, x):
        return x + self.fc2(keras.ops.relu(self.fc1(x)))


def test_residual_sums_in_a_composite_layer_s_own_code_are_said() -> None:
    """A residual sum the pass cannot see (inside a custom layer's call) gets no rule, and the plan says so
    under residual='zero'/'depth'; residual='none' (what happens there) says nothing; Keras's own composite
    layers (MultiHeadAttention: no sum inside) are not named."""
    inputs = keras.Input((32,))
    h = _OwnCodeBlock(name="block")(keras.layers.Dense(32, name="stem")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(h))
    x = _x()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the block's own ops: named in auto's other notes
        zero = initscale.auto(x).plan(model)
        none = initscale.auto(x, residual="none").plan(model)
    assert any("residual='zero' reaches only" in n and "block (_OwnCodeBlock)" in n for n in zero.notes), zero.notes
    assert not any("reaches only" in n for n in none.notes)
    t = keras.Input((10, 16))
    attention = keras.Model(t, t + keras.layers.MultiHeadAttention(2, 8, name="mha")(t, t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = initscale.auto(_x((4, 10, 16), scale=1.0)).plan(attention)
    assert not any("reaches only" in n for n in plan.notes), plan.notes


def test_planted_bug_own_code_composites_not_named_is_caught(monkeypatch) -> None:
    """Mutation: a recorder that forgets which composite layers ran their own code fails the check above."""

    class Deaf(dict):
        def __setitem__(self, key, value) -> None:
            pass

    real = _keras_auto._Recorder.__init__

    def init(self) -> None:
        real(self)
        self.own_code = Deaf()

    monkeypatch.setattr(_keras_auto._Recorder, "__init__", init)
    with pytest.raises(AssertionError):
        test_residual_sums_in_a_composite_layer_s_own_code_are_said()
