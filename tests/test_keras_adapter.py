"""The Keras 3 adapter on the backend this process runs (KERAS_BACKEND; tests/test_keras_backends.py
runs this file once per backend, each in its own process).

Every preset on every logical layer is the parity matrix's (tests/test_parity.py), with Keras's
own initializers beside initscale's native-compat ones; dtypes, seeds, zero-size shapes, bad
dtypes and specs, orthogonal blocks and the far-tail truncated normals are every adapter's
(tests/test_adapters.py); test_keras_backends.py reruns both per Keras backend too."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import _child_runs
import numpy as np
import pytest

import initscale
from _stats import failures, same_distribution
from initscale import presets

keras = pytest.importorskip("keras")
isk = pytest.importorskip("initscale.adapters.keras")

BACKEND = keras.backend.backend()
SHAPE = (3, 3, 100, 200)  # 180,000 draws per check
HE = presets.get("he_normal")
F32 = 2.0**-24  # float32 unit roundoff: a value inside the bounds may round just outside


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def _float64_ok() -> bool:
    if BACKEND != "jax":
        return True
    import jax

    return bool(jax.config.jax_enable_x64)


def test_a_seed_that_is_not_an_int_or_seed_generator_is_refused() -> None:
    with pytest.raises(TypeError, match="Argument `seed` must be an int"):
        isk.initializer(HE, seed="0")


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_a_seed_this_backend_cannot_store_is_refused_naming_its_range(seed) -> None:
    low, high = {"jax": (0, 2**32), "torch": (-(2**31), 2**31)}.get(BACKEND, (-(2**63), 2**63))
    if low <= seed < high:  # TensorFlow stores -1
        assert isk.initializer(HE, seed=seed) is not None
        return
    message = rf"`seed` must satisfy {low} <= seed < {high} on Keras's {BACKEND} backend.*Received: seed={seed}\."
    with pytest.raises(ValueError, match=message):
        isk.initializer(HE, seed=seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    before = keras.ops.convert_to_numpy(model.layers[0].kernel)
    with pytest.raises(ValueError, match=message):
        isk.reinit(model, HE, seed=seed)
    assert (keras.ops.convert_to_numpy(model.layers[0].kernel) == before).all()


def test_config_round_trip_is_exact_and_json() -> None:
    inits = [
        isk.initializer(presets.get("tf1.variance_scaling_initializer"), seed=3, layout="keras.lstm"),
        isk.initializer(
            initscale.TruncatedNormal(0.02, 0.1, -1.0, 1.5, "absolute"),
            seed=None,
            layout=initscale.Layout(0, (1, 2), in_groups=1, out_groups=2),
        ),
        isk.VarianceScaling(2.0, "fan_avg", "normal", seed=4),
        isk.VarianceScaling(input_axes=0, output_axes=[1, 2]),
        isk.GlorotUniform(seed=1),
        isk.HeNormal(),
        isk.LecunNormal(seed=2),
        isk.RandomNormal(0.1, 0.2, seed=1),
        isk.TruncatedNormal(stddev=0.3),
        isk.RandomUniform(-1.0, 2.0),
        isk.Orthogonal(1.5, seed=3),
        isk.Zeros(),
        isk.Ones(),
        isk.Constant(0.7),
    ]
    for init in inits:
        data = json.loads(json.dumps(keras.saving.serialize_keras_object(init)))
        assert data["registered_name"] == f"initscale>{type(init).__name__}"
        back = keras.saving.deserialize_keras_object(data)
        assert type(back) is type(init) and back.get_config() == init.get_config()
        assert back.spec == init.spec and str(back._fan_layout) == str(init._fan_layout)
    assert isk.VarianceScaling(2.0, "fan_avg", "normal").spec == initscale.VarianceScaling(2.0, "fan_avg")
    assert isk.VarianceScaling(distribution="untruncated_normal").spec.distribution == "normal"


def test_loading_rejects_unknown_keys_and_kinds() -> None:
    config = isk.initializer(HE).get_config()
    with pytest.raises(ValueError, match="Unknown key"):
        isk.Initializer.from_config({**config, "spec": {**config["spec"], "extra": 1}})
    with pytest.raises(ValueError, match="kind"):
        isk.Initializer.from_config({**config, "spec": {**config["spec"], "kind": "Lambda"}})
    with pytest.raises(TypeError):
        isk.Initializer.from_config({**config, "surprise": 1})


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: isk.VarianceScaling(distribution="gaussian"), ValueError, "Argument `distribution` must be one of"),
        (lambda: isk.VarianceScaling(mode="avg"), ValueError, "Argument `mode` must be one of"),
        (lambda: isk.VarianceScaling(scale=0.0), ValueError, "Argument `scale`"),
        (lambda: isk.VarianceScaling(input_axes=0), ValueError, "go together"),
        (lambda: isk.initializer(HE, layout="keras.lstmm"), ValueError, "Argument `layout` must be one of"),
    ],
)
def test_bad_arguments_fail_when_built(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


# --- native parity ---------------------------------------------------------------------------

NATIVE = [  # drop-in, Keras's own, shape
    (lambda: isk.GlorotUniform(seed=1), lambda: keras.initializers.GlorotUniform(seed=2), SHAPE),
    (lambda: isk.GlorotNormal(seed=1), lambda: keras.initializers.GlorotNormal(seed=2), SHAPE),
    (lambda: isk.HeUniform(seed=1), lambda: keras.initializers.HeUniform(seed=2), SHAPE),
    (lambda: isk.HeNormal(seed=1), lambda: keras.initializers.HeNormal(seed=2), SHAPE),
    (lambda: isk.LecunUniform(seed=1), lambda: keras.initializers.LecunUniform(seed=2), SHAPE),
    (lambda: isk.LecunNormal(seed=1), lambda: keras.initializers.LecunNormal(seed=2), SHAPE),
    (
        lambda: isk.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=1),
        lambda: keras.initializers.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=2),
        SHAPE,
    ),
    (
        lambda: isk.VarianceScaling(0.5, "fan_avg", "normal", seed=1),
        lambda: keras.initializers.VarianceScaling(0.5, "fan_avg", "normal", seed=2),
        (500, 400),
    ),
    (lambda: isk.RandomNormal(0.1, 0.3, seed=1), lambda: keras.initializers.RandomNormal(0.1, 0.3, seed=2), SHAPE),
    (lambda: isk.RandomUniform(-0.2, 0.5, seed=1), lambda: keras.initializers.RandomUniform(-0.2, 0.5, seed=2), SHAPE),
    (
        lambda: isk.TruncatedNormal(0.1, 0.3, seed=1),
        lambda: keras.initializers.TruncatedNormal(0.1, 0.3, seed=2),
        SHAPE,
    ),
]


def _exact_std_and_bound(native, shape) -> tuple[float, float | None]:
    """Keras's own numbers from its own helpers (keras.src.initializers.random_initializers)."""
    from keras.src.initializers.random_initializers import compute_fans

    cfg = {**vars(native), **native.get_config()}  # presets such as HeNormal keep scale etc. as attributes
    if "scale" in cfg:
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[cfg["mode"]]
        var = cfg["scale"] / max(1.0, n)
        if cfg["distribution"] == "uniform":
            return math.sqrt(var), math.sqrt(3 * var)
        if cfg["distribution"] == "truncated_normal":
            return math.sqrt(var), 2 * math.sqrt(var) / 0.87962566103423978
        return math.sqrt(var), None
    if "minval" in cfg:
        return (cfg["maxval"] - cfg["minval"]) / math.sqrt(12), cfg["maxval"]
    if type(native).__name__ == "TruncatedNormal":  # σ before the ±2σ cut, uncorrected
        return cfg["stddev"] * 0.87962566103423978, cfg["mean"] + 2 * cfg["stddev"]
    return cfg["stddev"], None


@pytest.mark.parametrize(("ours", "theirs", "shape"), NATIVE, ids=[f"{i}" for i in range(len(NATIVE))])
def test_drop_ins_match_keras_own_initializers(ours, theirs, shape) -> None:
    mine, native = ours(), theirs()
    dist = mine.spec.resolve(None if mine.spec.fixed_scale else initscale.compute_fans(shape, "keras:native=true"))
    std, bound = _exact_std_and_bound(native, shape)
    assert dist.std == pytest.approx(std, rel=1e-9)  # 0.8796... is a 17-digit literal in Keras
    if bound is not None:
        assert dist.bounds[1] == pytest.approx(bound, rel=1e-9)
    a, b = _np(mine(shape)), _np(native(shape))
    assert failures(a, dist, F32) == []
    assert same_distribution(a, b) == []
    if BACKEND != "torch":  # see test_keras_torch_backend_truncated_normal_leaks below
        assert failures(b, dist, F32) == []


def test_keras_torch_backend_truncated_normal_leaks() -> None:
    """Keras's torch backend keeps the first of 4 draws inside ±2σ and returns the 4th,
    untruncated, when all miss: P = (2·Φ(−2))⁴ = 4.3e-6 per value. initscale never leaves the
    bounds. Measured with 4,000,000 values: expected 17.1 out of bounds (Poisson sd 4.1)."""
    if BACKEND != "torch":
        pytest.skip("only the torch backend of Keras has this")
    n = 4_000_000
    p_miss = (2 * 0.5 * math.erfc(2 / math.sqrt(2))) ** 4
    x = _np(keras.random.truncated_normal((n,), seed=3))
    outside = int(np.sum(np.abs(x) > 2.0))
    assert abs(outside - n * p_miss) <= 4.5 * math.sqrt(n * p_miss)  # Poisson, z = 4.5
    ours = _np(isk.TruncatedNormal(0.0, 1.0, seed=3)((n,)))
    assert float(np.abs(ours).max()) <= 2.0


# --- inside EinsumDense and MultiHeadAttention ---------------------------------------------------
# Keras 3.15's EinsumDense.build() hands every keras.initializers.VarianceScaling (GlorotUniform,
# HeNormal, ... are subclasses) the einsum's input/output kernel axes, and compute_fans then counts
# only those (fan_in = product of the input axes' sizes, fan_out of the output axes'; an empty
# product is 1). The drop-ins and initializer(spec) objects must get the same fans.

VS_FAMILY = [  # (ours, Keras's own)
    (lambda: isk.GlorotUniform(seed=1), lambda: keras.initializers.GlorotUniform(seed=2)),
    (lambda: isk.GlorotNormal(seed=1), lambda: keras.initializers.GlorotNormal(seed=2)),
    (lambda: isk.HeUniform(seed=1), lambda: keras.initializers.HeUniform(seed=2)),
    (lambda: isk.HeNormal(seed=1), lambda: keras.initializers.HeNormal(seed=2)),
    (lambda: isk.LecunUniform(seed=1), lambda: keras.initializers.LecunUniform(seed=2)),
    (lambda: isk.LecunNormal(seed=1), lambda: keras.initializers.LecunNormal(seed=2)),
    (
        lambda: isk.VarianceScaling(0.5, "fan_out", "untruncated_normal", seed=1),
        lambda: keras.initializers.VarianceScaling(0.5, "fan_out", "untruncated_normal", seed=2),
    ),
    (lambda: isk.initializer(presets.get("glorot_uniform"), seed=1), lambda: keras.initializers.GlorotUniform(seed=2)),
    (lambda: isk.initializer(presets.get("he_normal"), seed=1), lambda: keras.initializers.HeNormal(seed=2)),
]
EQUATIONS = [  # (equation, output_shape, input_shape); Keras's axes and kernel shape in the comment
    ("abc,cde->abde", (None, 4, 16), (2, 5, 64)),  # MHA's query/key/value: (64, 4, 16), in [0], out [1, 2]
    ("abcd,cde->abe", (None, 64), (2, 5, 4, 16)),  # MHA's output: (4, 16, 64), in [0, 1], out [2]
    ("abc,bcd->abd", (5, 24), (2, 5, 40)),  # (5, 40, 24), in [1], out [0, 2] (b is in the output)
    ("...b,bc->...c", 64, (2, 3, 40)),  # a Dense: (40, 64), in [0], out [1]
    ("abc,cd->abcd", (5, 40, 24), (2, 5, 40)),  # (40, 24), in [], out [0, 1]: fan_in 1
    ("ab,b->a", (), (2, 4000)),  # (4000,), in [0], out []: fan_out 1
]


def _keras_axes(equation, output_shape, input_shape):
    """Kernel shape and the axes Keras's EinsumDense.build() passes (its own parser)."""
    from keras.src.layers.core.einsum_dense import _analyze_einsum_string

    kernel_shape, _, _, input_axes, output_axes = _analyze_einsum_string(equation, None, input_shape, output_shape)
    return tuple(kernel_shape), input_axes, output_axes


def _keras_exact(native, shape, input_axes, output_axes) -> tuple[float, float | None]:
    """Keras's own std and bound for this kernel, from its compute_fans with the axes it passes."""
    from keras.src.initializers.random_initializers import compute_fans

    fan_in, fan_out = compute_fans(shape, input_axes, output_axes)
    cfg = {**vars(native), **native.get_config()}
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[cfg["mode"]]
    var = cfg["scale"] / max(1.0, n)
    if cfg["distribution"] == "uniform":
        return math.sqrt(var), math.sqrt(3 * var)
    if cfg["distribution"] == "truncated_normal":
        return math.sqrt(var), 2 * math.sqrt(var) / 0.87962566103423978
    return math.sqrt(var), None


def _einsum_kernel(init, equation, output_shape, input_shape):
    layer = keras.layers.EinsumDense(equation, output_shape, kernel_initializer=init)
    layer.build(input_shape)
    return _np(layer.kernel)


@pytest.mark.parametrize("equation", EQUATIONS, ids=[e[0] for e in EQUATIONS])
@pytest.mark.parametrize(("ours", "theirs"), VS_FAMILY, ids=[f"{i}" for i in range(len(VS_FAMILY))])
def test_drop_ins_get_keras_axes_inside_einsum_dense(ours, theirs, equation) -> None:
    shape, input_axes, output_axes = _keras_axes(*equation)
    mine, native = ours(), theirs()
    # What EinsumDense.build() makes of ours (its _update_kernel_initializer: config + axes).
    built = type(mine).from_config({**mine.get_config(), "input_axes": input_axes, "output_axes": output_axes})
    dist = built._planner(shape).dist  # the weight's cached WeightPlan
    std, bound = _keras_exact(native, shape, input_axes, output_axes)
    assert dist.std == pytest.approx(std, rel=1e-9)  # 0.8796... is a 17-digit literal in Keras
    if bound is not None:
        assert dist.bounds[1] == pytest.approx(bound, rel=1e-9)
    a = _einsum_kernel(mine, *equation)
    b = _einsum_kernel(native, *equation)
    assert a.shape == b.shape == shape
    assert failures(a, dist, F32) == []  # second moment at z = 4.5 with sd σ²·√((κ−1)/n), KS at α = 1e-4
    if BACKEND != "torch" or native.distribution != "truncated_normal":  # see ..._truncated_normal_leaks
        assert failures(b, dist, F32) == []  # Keras's own kernel, against the same distribution
    assert mine.input_axes is None  # the user's object is unchanged: Keras builds with a clone


def test_drop_ins_equal_keras_inside_multi_head_attention() -> None:
    """MultiHeadAttention(4, 16) on d_model 64: q/k/v kernels (64, 4, 16) and the output kernel
    (4, 16, 64) all have Keras's fans (64, 64), so Glorot's variance is 2/128; the conv rule
    gave q/k/v fans (256, 1024) (0.1x the variance) and the output (64, 256) (0.4x)."""
    spec = presets.get("glorot_uniform")
    x = np.zeros((2, 5, 64), "float32")
    kernels = {}
    for name, init in (
        ("ours", isk.GlorotUniform(seed=1)),
        ("keras", keras.initializers.GlorotUniform(seed=2)),
        ("spec", isk.initializer(spec, seed=3)),
    ):
        mha = keras.layers.MultiHeadAttention(4, 16, kernel_initializer=init)
        mha(x, x)
        kernels[name] = {v.path.split("/")[-2]: _np(v.value) for v in mha.weights if v.path.endswith("kernel")}
    assert set(kernels["ours"]) == {"query", "key", "value", "attention_output"}
    right = spec.resolve(initscale.Fans(64, 64))
    for sub, kernel in kernels["ours"].items():
        for values in (kernel, kernels["spec"][sub], kernels["keras"][sub]):
            assert failures(values, right, F32) == [], sub
        assert same_distribution(kernel, kernels["keras"][sub]) == [], sub


def test_the_conv_rule_inside_einsum_dense_is_caught() -> None:
    """Mutation: the old behaviour (Keras's rank-3 conv rule for an EinsumDense kernel: fans
    (256, 1024) for (64, 4, 16)) fails the check the fixed kernels pass."""
    spec = presets.get("glorot_uniform")
    for shape in ((64, 4, 16), (4, 16, 64)):
        old = _np(isk.GlorotUniform(seed=1)(shape))  # no axes: the conv rule
        assert failures(old, spec.resolve(initscale.Fans(64, 64)), F32) != []
        assert failures(old, spec.resolve(initscale.compute_fans(shape, "keras:native=true")), F32) == []


def test_keras_axes_leave_explicit_layouts_and_fanless_specs_alone() -> None:
    """Keras hands its axes to every VarianceScaling; an explicit ``layout`` already fixes the
    fans and wins, and specs that use no fans (fixed scale, orthogonal: Keras's own RandomNormal
    and Orthogonal never receive axes) keep the layout they had."""
    explicit = initscale.Layout(0, 2, batch_axes=1)
    for init in (isk.GlorotUniform(seed=1, layout=explicit), isk.initializer(HE, seed=1, layout=explicit)):
        x = _einsum_kernel(init, "abc,cde->abde", (None, 4, 16), (2, 5, 64))
        assert failures(x, init.spec.resolve(explicit.fans((64, 4, 16))), F32) == []
    for spec in (initscale.Normal(0.02), initscale.Orthogonal()):
        init = isk.initializer(spec, seed=1)
        built = type(init).from_config({**init.get_config(), "input_axes": [0], "output_axes": [1, 2]})
        assert str(built._fan_layout) == str(init._fan_layout) == "keras:native=true"
    with pytest.raises(ValueError, match="not both"):
        isk.HeNormal(layout="keras.dense", input_axes=[0], output_axes=[1])
    with pytest.raises(ValueError, match="go together"):
        isk.Initializer(HE, input_axes=[0])
    for cls in (isk.RandomNormal, isk.TruncatedNormal, isk.RandomUniform, isk.Orthogonal, isk.Zeros, isk.Constant):
        assert not isinstance(cls(), keras.initializers.VarianceScaling)  # as Keras's own


def test_variance_scaling_drop_ins_look_like_keras_own() -> None:
    pairs = [
        (isk.GlorotUniform(), keras.initializers.GlorotUniform()),
        (isk.HeNormal(), keras.initializers.HeNormal()),
        (isk.LecunUniform(), keras.initializers.LecunUniform()),
        (isk.VarianceScaling(3.0, "fan_out", "normal"), keras.initializers.VarianceScaling(3.0, "fan_out", "normal")),
    ]
    for ours, theirs in pairs:
        assert isinstance(ours, keras.initializers.VarianceScaling)
        assert (ours.scale, ours.mode, ours.distribution, ours.input_axes, ours.output_axes) == (
            theirs.scale,
            theirs.mode,
            theirs.distribution,
            theirs.input_axes,
            theirs.output_axes,
        )
    assert isinstance(isk.initializer(HE), keras.initializers.VarianceScaling)


# --- reinit ---------------------------------------------------------------------------------


def _model():
    inp = keras.Input((12, 12, 8))
    x = keras.layers.Conv2D(16, 3, groups=4, name="grouped")(inp)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.SeparableConv2D(8, 3, depth_multiplier=3, name="sep")(x)
    x = keras.layers.Conv2DTranspose(6, 3, name="up")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Reshape((-1, 6))(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True), name="bi")(x)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.SimpleRNN(7, name="rnn")(x)
    out = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inp, out, name="m")


# (path glob, layout, fan_in, fan_out) derived by hand from the forward pass. A functional
# model's variable paths start at its layers; Keras numbers repeated names (forward_gru_1, ...).
EXPECTED = [
    ("grouped/kernel", "keras.conv:groups=4", 18, 36),  # (3,3,2,16): 2·9 in, 16/4·9 out
    ("dw/kernel", "keras.depthwise_conv", 9, 18),  # (3,3,16,2): per channel
    ("sep/depthwise_kernel", "keras.separable_conv.depthwise", 9, 27),
    ("sep/pointwise_kernel", "keras.separable_conv.pointwise", 96, 8),
    ("up/kernel", "keras.conv_transpose", 72, 54),  # (3,3,6,8): forward in 8·9, out 6·9
    ("bi/forward_gru*/gru_cell/kernel", "keras.gru", 6, 5),  # (6, 3·5): per gate
    ("bi/backward_gru*/gru_cell/recurrent_kernel", "keras.gru", 5, 5),
    ("mha/query/kernel", "keras.einsum_dense[abc,cde->abde]", 10, 8),  # (10, 2, 4)
    ("mha/attention_output/kernel", "keras.einsum_dense[abcd,cde->abe]", 8, 10),
    ("rnn/simple_rnn_cell/kernel", "keras.simple_rnn", 10, 7),
    ("head/kernel", "keras.dense", 7, 3),
]


def _values(model):
    return {v.path: _np(v.value) for v in model.weights}


def _row(report, pattern):
    rows = [r for r in report if fnmatch.fnmatchcase(r.name, pattern)]
    assert len(rows) == 1, (pattern, [r.name for r in report])
    return rows[0]


def test_reinit_uses_each_layers_forward_fans() -> None:
    model = _model()
    report = isk.reinit(model, HE, seed=0)
    for path, layout, fan_in, fan_out in EXPECTED:
        row = _row(report, path)
        assert (row.layout, row.fan_in, row.fan_out) == (layout, fan_in, fan_out), path
        assert row.touched and row.std == pytest.approx(math.sqrt(2 / fan_in), rel=1e-12)
    values = _values(model)
    assert np.all(values["head/bias"] == 0) and np.all(values["bn/gamma"] == 1)
    assert np.all(values["ln/beta"] == 0)


def test_reinit_values_follow_the_forward_fans_not_keras_own() -> None:
    inp = keras.Input((20, 128))
    model = keras.Model(inp, keras.layers.LSTM(256, unit_forget_bias=False, name="lstm")(inp))
    spec = initscale.VarianceScaling(2.0, "fan_out", "uniform")
    isk.reinit(model, spec, seed=1)
    kernel = _np(model.get_layer("lstm").cell.kernel.value)
    assert failures(kernel, spec.resolve(initscale.compute_fans(kernel.shape, "keras.lstm")), F32) == []
    native = spec.resolve(initscale.compute_fans(kernel.shape, "keras:native=true"))  # fan_out 4·256
    assert failures(kernel, native, F32) != []  # mutation: the check sees the stacked-gate bug
    assert np.all(_np(model.get_layer("lstm").cell.bias.value) == 0)


def test_reinit_native_fans_are_keras_own() -> None:
    inp = keras.Input((20, 128))
    model = keras.Model(inp, keras.layers.LSTM(256, unit_forget_bias=False, name="lstm")(inp))
    spec = initscale.VarianceScaling(2.0, "fan_out", "uniform")
    report = isk.reinit(model, spec, seed=1, fans="native")
    kernel = _np(model.get_layer("lstm").cell.kernel.value)
    row = next(r for r in report if r.name.endswith("/kernel") and "recurrent" not in r.name)
    assert (row.fan_in, row.fan_out, row.fans) == (128, 1024, "native")  # Keras's compute_fans: 4 gates stacked
    assert failures(kernel, spec.resolve(initscale.compute_fans(kernel.shape, "keras:native=true")), F32) == []


def test_reinit_keeps_the_lstm_forget_bias_and_embeddings() -> None:
    inp = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(50, 8, name="emb")(inp)
    model = keras.Model(inp, keras.layers.LSTM(4, name="lstm")(x))
    before = _values(model)
    report = isk.reinit(model, HE, seed=0)
    for path in ("emb/embeddings", "lstm/lstm_cell/bias"):
        full = next(p for p in before if p.endswith(path))
        assert not report[full].touched and np.array_equal(_values(model)[full], before[full])
    assert "unit_forget_bias" in report[next(p for p in before if p.endswith("lstm_cell/bias"))].reason


def _recurrent_model():
    inp = keras.Input((6, 8))
    x = keras.layers.LSTM(5, return_sequences=True, name="lstm")(inp)  # unit_forget_bias=True (Keras's default)
    x = keras.layers.GRU(4, return_sequences=True, name="gru")(x)
    x = keras.layers.SimpleRNN(3, return_sequences=True, name="rnn")(x)
    x = keras.layers.Conv1D(6, 3, name="conv")(x)
    return keras.Model(inp, keras.layers.Dense(2, name="head")(x))


@pytest.mark.parametrize("spec", [presets.get("glorot_uniform"), initscale.Normal(0.05)], ids=["glorot", "normal"])
def test_class_rules_target_weights_not_biases(spec) -> None:
    """A class rule sets the layer's kernels and recurrent kernels, never its biases: the biases
    get their defaults (zeros) and an LSTM's forget-gate bias keeps Keras's 1.0."""
    model = _recurrent_model()
    for v in model.weights:  # biases other than the LSTM's at 0.3, so that the default's zeros show
        if v.path.endswith("bias") and "lstm" not in v.path:
            v.assign(keras.ops.full(v.shape, 0.3))
    before = _values(model)
    lstm_bias = next(p for p in before if p.endswith("lstm_cell/bias"))
    assert np.array_equal(before[lstm_bias], np.repeat([0.0, 1.0, 0.0, 0.0], 5))  # i, f, c, o
    classes = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN", "conv": "Conv1D", "head": "Dense"}
    report = isk.reinit(model, {c: spec for c in classes.values()}, seed=0)
    values = _values(model)
    for row in report:
        layer = row.name.split("/")[0]
        if row.name.endswith("kernel"):
            assert row.touched and row.spec == spec and row.reason == f"rule {classes[layer]!r}", row.name
            assert not np.array_equal(values[row.name], before[row.name]), row.name
        elif row.name == lstm_bias:
            assert not row.touched and "unit_forget_bias" in row.reason
            assert np.array_equal(values[row.name], before[row.name])
        else:
            assert row.name.endswith("bias") and row.touched and row.reason == "default: biases -> zeros", row.name
            assert np.all(values[row.name] == 0), row.name
    assert sum(r.name.endswith("kernel") for r in report) == 8  # 3 cells x 2 + conv + head
    named = isk.reinit(model, {"LSTM": spec, "*/lstm_cell/bias": initscale.Constant(0.5)}, seed=0)
    assert named[lstm_bias].reason == "rule '*/lstm_cell/bias'" and np.all(_values(model)[lstm_bias] == 0.5)


def test_reinit_rules_frozen_buffers_and_dry_run() -> None:
    model = _model()
    model.get_layer("head").trainable = False
    before = _values(model)
    rules = {
        "GRU": initscale.Orthogonal(),
        "*/bias": initscale.Constant(0.5),
        "bn/moving_variance": initscale.Ones(),
        "Dense": HE,
    }
    dry = isk.reinit(model, rules, seed=0, dry_run=True, include_buffers=True)
    assert all(np.array_equal(v, before[k]) for k, v in _values(model).items())
    report = isk.reinit(model, rules, seed=0, include_buffers=True)
    assert [(r.name, r.touched) for r in dry] == [(r.name, r.touched) for r in report]
    values = _values(model)
    assert dry.dry_run and "frozen" in report["head/kernel"].reason
    assert np.array_equal(values["head/kernel"], before["head/kernel"])
    assert np.all(values["bn/moving_variance"] == 1) and np.all(values["grouped/bias"] == 0.5)
    assert np.array_equal(values["bn/moving_mean"], before["bn/moving_mean"])  # no rule names it
    gru = values[_row(report, "bi/forward_gru*/gru_cell/recurrent_kernel").name]  # one orthogonal block per gate
    for g in range(3):
        block = gru[:, g * 5 : (g + 1) * 5]
        assert np.allclose(block.T @ block, np.eye(5), atol=1e-5)
    # EinsumDense is not a Dense subclass, so the class rule "Dense" leaves it alone
    assert report["mha/query/kernel"].reason == "no rule matched"


def test_reinit_is_atomic_and_names_the_variable() -> None:
    model = _model()
    before = _values(model)
    with pytest.raises(ValueError, match=r"Parameter 'bn/gamma' \(shape \(6,\), in BatchNormalization\)"):
        isk.reinit(model, {"Conv2D": HE, "bn/gamma": HE}, seed=0)
    assert all(np.array_equal(v, before[k]) for k, v in _values(model).items())
    with pytest.raises(TypeError, match="must be an initscale spec"):
        isk.reinit(model, {"Dense": "he_normal"})
    with pytest.raises(TypeError, match="Keras layer or model"):
        isk.reinit(object(), HE)
    with pytest.raises(ValueError, match="not built"):
        isk.reinit(keras.Sequential([keras.layers.Dense(3)]), HE)


def test_reinit_seed_reproducible() -> None:
    a, b = _model(), _model()
    ra, rb = isk.reinit(a, HE, seed=9), isk.reinit(b, HE, seed=9)
    assert [r.touched for r in ra] == [r.touched for r in rb]
    for va, vb in zip(a.weights, b.weights, strict=True):
        assert np.array_equal(_np(va.value), _np(vb.value)) or not ra[va.path].touched, va.path


def test_reinit_assign_failing_midway_names_what_was_assigned(monkeypatch) -> None:
    # Every value is drawn before the first assign; an assign that fails (simulated on the 2nd)
    # raises the shared PartialWriteError naming what was written, as torch's reinit_ does.
    from initscale.reinit import PartialWriteError

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    names = [v.path for v in model.weights]
    cls = type(model.weights[0])
    real, calls = cls.assign, []

    def flaky(self, value):
        if self.path in names:  # not the seed generator's own state
            calls.append(self.path)
            if len(calls) == 2:
                raise RuntimeError("simulated device error")
        return real(self, value)

    monkeypatch.setattr(cls, "assign", flaky)
    with pytest.raises(
        PartialWriteError,
        match=r"^reinit failed while writing .*simulated device "
        r"error.*Already re-initialized \(1\)",
    ) as caught:
        isk.reinit(model, HE, seed=0)
    assert caught.value.written == tuple(names[:1]) and caught.value.failed == tuple(names[1:2])
    assert caught.value.unchanged == tuple(names[2:])


# --- saving ------------------------------------------------------------------------------------


def test_a_model_saves_and_loads_with_its_initializers(tmp_path) -> None:
    path = tmp_path / "m.keras"
    init = isk.initializer(presets.get("tf1.xavier_initializer"), seed=3, layout="keras.lstm")
    inp = keras.Input((4, 6))
    x = keras.layers.LSTM(5, kernel_initializer=init, recurrent_initializer=isk.Orthogonal(seed=1))(inp)
    model = keras.Model(inp, keras.layers.Dense(2, kernel_initializer=isk.HeNormal(seed=2))(x))
    model.save(path)
    code = textwrap.dedent(f"""
        import json, keras
        from initscale.adapters import keras as isk
        m = keras.saving.load_model({str(path)!r}, safe_mode=True)
        cell = m.layers[1].cell
        print(json.dumps([keras.saving.serialize_keras_object(i) for i in
                          (cell.kernel_initializer, cell.recurrent_initializer, m.layers[2].kernel_initializer)]))
    """)
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    expected = [keras.saving.serialize_keras_object(i) for i in (init, isk.Orthogonal(seed=1), isk.HeNormal(seed=2))]
    assert loaded == json.loads(json.dumps(expected))


def _assert_stream_matches(got, ref, label) -> None:
    """Bit for bit where the backend computes the float stage in float64 (TensorFlow, torch, JAX
    with x64); JAX without x64 computes it in float32: within the 8-ulp bound of the JAX adapter
    (tests/test_streams.py), relative to the largest value."""
    got = np.asarray(got)
    if BACKEND == "jax" and not _jax_x64():
        bound = 8 * np.spacing(np.float32(max(np.abs(ref).max(), 1e-30)))
        assert np.abs(got.astype(np.float64) - ref).max() <= bound, label
    else:
        assert np.array_equal(got, ref), label


def _jax_x64() -> bool:
    import jax

    return bool(getattr(jax.config, "jax_enable_x64", False))


def test_portable_stream_matches_the_numpy_reference() -> None:
    """Computed with keras.ops on the backend (Philox in int64 or uint32, the backend's ndtri)."""
    from initscale.streams import Stream, stream_values

    for name in ("he_normal", "glorot_uniform", "torch.trunc_normal:std=0.5,a=0.2,b=1.0", "ones"):
        spec = presets.get(name)
        for shape, layout in (
            ((64, 32), "keras.dense"),
            ((3, 3, 8, 16), "keras.conv"),
            ((3, 3, 4, 2), "keras.depthwise_conv"),
            ((5, 12), "keras.gru"),
            ((521, 1024), "keras.dense"),
        ):  # more than one 2^19 piece
            init = isk.initializer(spec, stream=Stream(3, "dense/kernel"), layout=layout)
            ref = stream_values(Stream(3, "dense/kernel"), spec, shape, layout)
            _assert_stream_matches(_np(init(shape, "float32")), ref, (name, layout))
        back = isk.Initializer.from_config(json.loads(json.dumps(init.get_config())))
        assert back.stream == Stream(3, "dense/kernel")
    from initscale import parity

    for layer in parity.LAYERS:  # each logical layer's Keras form
        shape, layout = parity.LAYERS[layer].form("keras")
        init = isk.initializer(HE, stream=Stream(6, layer), layout=layout)
        _assert_stream_matches(_np(init(shape, "float32")), stream_values(Stream(6, layer), HE, shape, layout), layer)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="fc")], name="net")
    isk.reinit(model, HE, stream_seed=4, stream_names=lambda p: p.split("/", 1)[-1])
    kernel = _np(model.get_layer("fc").kernel.value)
    _assert_stream_matches(kernel, stream_values(Stream(4, "fc/kernel"), HE, (16, 8), "keras.dense"), "reinit")
    with pytest.raises(ValueError, match="no portable stream"):
        isk.initializer(initscale.Orthogonal(), stream=Stream(1))((4, 4))


def test_repeated_stream_shapes_are_compiled_and_still_exact() -> None:
    """TensorFlow draws the integers of a (shape, layout) eagerly the first time and through one
    XLA program after; JAX and torch use their adapters' paths. Every draw is the reference."""
    from initscale.streams import Stream, stream_values

    for name in ("he_normal", "glorot_uniform", "torch.trunc_normal:std=0.5,a=0.2,b=1.0"):
        spec = presets.get(name)
        for shape, layout in (((48, 40), "keras.dense"), ((3, 3, 6, 9), "keras.conv"), ((5, 12), "keras.gru")):
            for seed in (1, 2, 3):
                init = isk.initializer(spec, stream=Stream(seed, "k"), layout=layout)
                ref = stream_values(Stream(seed, "k"), spec, shape, layout)
                _assert_stream_matches(_np(init(shape, "float32")), ref, (name, layout, seed))
    if BACKEND == "tensorflow":  # one integer-stage program per shape and layout, whatever the distribution
        assert isk._tf_uniform_program.cache_info().currsize >= 3  # the second and third draws: compiled


@pytest.mark.skipif(BACKEND == "jax", reason="without x64, JAX's float stage is float32 (the stated bound)")
def test_float16_streams_are_rounded_once() -> None:
    """float64 values rounded once to float16, as NumPy's reference does (TensorFlow's own cast
    goes through float32 and rounds twice); eagerly and compiled."""
    from initscale.streams import Stream, stream_values

    for name in ("he_uniform", "torch.kaiming_normal", "he_normal"):
        spec = presets.get(name)
        for _ in range(2):  # eager, then the compiled program on TensorFlow
            init = isk.initializer(spec, stream=Stream(5, "k"), layout="keras.dense")
            got = _np(init((257, 129), "float16"))
            assert np.array_equal(got, stream_values(Stream(5, "k"), spec, (257, 129), "keras.dense", dtype="float16"))


# Every kind of float stage (as tests/test_streams.py's STREAM_DISTS): uniforms (an inexact and
# exact product), normals (zero and non-zero mean), truncated normals (two-sided, mirrored upper
# tail, lower tail, one-sided), a constant.
STREAM_DISTS = [
    "he_uniform",
    "torch.uniform:a=0.1,b=0.7",
    "torch.uniform:a=-3,b=5",
    "torch.kaiming_normal",
    "torch.normal:mean=1,std=0.5",
    "he_normal",
    "torch.trunc_normal:std=0.5,a=0.2,b=1.0",
    "torch.trunc_normal:std=1,a=-3,b=-0.5",
    "torch.trunc_normal:std=1,a=1,b=inf",
    "ones",
]
STREAM_ULPS = 8  # float64 normals: the backend's ndtri against AS241; measured at most 6


def _stream_call_problems() -> list[str]:
    """Each of STREAM_DISTS's float64 streams drawn twice the eager way and twice compiled: on
    TensorFlow a shape's first draw runs eagerly (forgotten once to repeat it) and the next ones
    run the XLA program; on JAX twice eagerly and twice inside ``jax.jit``; torch has one path.
    Problems: calls that differ; uniforms or constants not the reference's to the bit; normals
    beyond STREAM_ULPS ulps of the largest |value| of it."""
    from initscale.streams import Stream, stream_values

    problems = []
    for i, name in enumerate(STREAM_DISTS):
        spec, shape = presets.get(name), (97 + i, 80)  # a shape not drawn before; he_uniform's sqrt(6/97) inexact
        init = isk.initializer(spec, stream=Stream(7, name), layout="keras.dense")
        draws = []
        for call in range(4):
            if BACKEND == "tensorflow" and call < 2:
                isk._TF_SEEN.clear()  # an eager draw, as the first of a shape
            if BACKEND == "jax" and call >= 2:
                import jax

                draws.append(_np(jax.jit(lambda init=init, shape=shape: init(shape, "float64"))()))
            else:
                draws.append(_np(init(shape, "float64")))
        if any(not np.array_equal(d, draws[0]) for d in draws):
            problems.append(f"{name}: calls differ in {max(int((d != draws[0]).sum()) for d in draws)} values")
        ref = stream_values(Stream(7, name), spec, shape, "keras.dense", dtype="float64")
        err = max(np.abs(d - ref).max() for d in draws) / np.spacing(np.abs(ref).max())
        if err > (0 if name.startswith(("he_uniform", "torch.uniform", "ones")) else STREAM_ULPS):
            problems.append(f"{name}: {err} ulps from the reference")
    if BACKEND == "tensorflow":
        assert isk._tf_uniform_program.cache_info().currsize >= 1  # the compiled calls did compile
    return problems


@pytest.mark.skipif(not _float64_ok(), reason="without x64, JAX has no float64 (a subprocess runs it with x64)")
def test_a_float64_stream_gives_one_set_of_values_on_every_call() -> None:
    """One stream, one set of values: eager and compiled calls are equal, uniforms equal the
    NumPy reference (float64 included), normals within the stated ulp bound of it."""
    assert _stream_call_problems() == []


_X64_RUN = "keras-jax-x64-stream"
if BACKEND == "jax":
    _child_runs.register(
        _X64_RUN,
        _child_runs.pytest_command(__file__, select="one_set_of_values_on_every_call"),
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1"},
        timeout=900,
        wanted=lambda: not _float64_ok(),
    )


@pytest.mark.child_run(_X64_RUN)
def test_a_float64_stream_on_keras_jax_with_x64() -> None:
    """The check above with x64 (it must be on before JAX is first used: its own process)."""
    if BACKEND != "jax" or _float64_ok():
        pytest.skip("the in-process test covers this backend")
    done = _child_runs.result(_X64_RUN)
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout[-3000:]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the eager and XLA paths are TensorFlow's")
@pytest.mark.parametrize("bug", ["float stage under XLA", "fused uniform under XLA"])
def test_the_call_check_catches_a_compiled_float_stage(bug, monkeypatch) -> None:
    """Mutations: the float stage compiled into the XLA program from a shape's second draw (as
    before this check): a normal's eager and compiled calls differ in about half the values; with
    the plain uniform form offset + width·u too, XLA's FMA moves uniforms off the reference."""
    import tensorflow as tf

    from initscale import streams

    real = isk._ops_values
    seen = set()

    def compiled_after_first(dist, u, dtype):
        key = (dist, tuple(u.shape), dtype)
        if key not in seen:
            seen.add(key)
            return real(dist, u, dtype)
        return tf.function(lambda x: real(dist, x, dtype), jit_compile=True, autograph=False)(u)

    monkeypatch.setattr(isk, "_ops_values", compiled_after_first)
    if bug == "fused uniform under XLA":
        monkeypatch.setattr(streams, "_scaled_uniform", lambda offset, width, u: offset + width * u)
    problems = _stream_call_problems()
    assert any(p.startswith("torch.kaiming_normal: calls differ") for p in problems), problems
    assert (bug == "fused uniform under XLA") == any(p.startswith("he_uniform: ") for p in problems), problems


def test_a_keras_gru_gets_the_torch_gru_weights_gate_by_gate() -> None:
    """Keras stacks GRU gates (z, r, h), torch (r, z, n): with the same stream, each gate's block
    of the Keras kernel is the transpose of the same gate's block of torch's weight_ih."""
    from initscale.streams import Stream, stream_values

    hidden, features = 5, 7
    model = keras.Sequential([keras.Input((3, features)), keras.layers.GRU(hidden, name="gru")])
    isk.reinit(
        model,
        {"*kernel": HE},
        stream_seed=2,
        stream_names=lambda p: "weight_ih_l0" if p.endswith("/kernel") else "weight_hh_l0",
    )
    kernel = _np(model.get_layer("gru").cell.kernel.value)  # (in, 3H): z, r, h
    torch_form = stream_values(Stream(2, "weight_ih_l0"), HE, (3 * hidden, features), "torch.gru")  # r, z, n
    z, r, h = (kernel[:, g * hidden : (g + 1) * hidden].T for g in range(3))
    _assert_stream_matches(np.concatenate([r, z, h]), torch_form, "gates")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_bounded_draws_stay_inside_after_rounding(dtype) -> None:
    """Clipped to the dtype's representable bounds before the cast (initscale.rounding): bf16
    rounds 0.1 up to 0.10009765625, f16 rounds 0.3 up to 0.300048828125."""
    from initscale.streams import Stream

    h = 0.1 if dtype == "bfloat16" else 0.3
    for name in (f"torch.trunc_normal:std={h / 2},a={-h},b={h}", f"torch.uniform:a={-h},b={h}"):
        spec = presets.get(name)
        for init in (isk.initializer(spec, seed=0), isk.initializer(spec, stream=Stream(0, "w"))):
            x = _np(keras.ops.cast(init((512, 512), dtype), "float32"))
            assert x.min() >= -h and x.max() <= h, (name, dtype)


def test_reinit_warns_before_zeroing_a_class_prior_bias() -> None:
    """keras-hub's RetinaNet head starts its logits' bias at the focal-loss prior -log((1 - p) / p)
    (keras_hub/src/models/retinanet/prediction_head.py): the defaults zero it as asked, naming it and
    its value in a warning; a rule of None keeps it, with no warning."""
    prior = -math.log((1 - 0.01) / 0.01)
    inp = keras.Input((6,))
    x = keras.layers.Dense(8, name="hidden")(inp)
    model = keras.Model(
        inp, keras.layers.Dense(4, bias_initializer=keras.initializers.Constant(prior), name="logits")(x)
    )
    bias = next(p for p in _values(model) if p.endswith("logits/bias"))
    with pytest.warns(UserWarning, match=rf"'{bias}' = -4.59512.*give them None"):
        isk.reinit(model, HE, seed=0)
    assert not _values(model)[bias].any()
    model.get_layer("logits").bias.assign(np.full(4, prior, "float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        isk.reinit(model, {"*kernel": HE, "*logits/bias": None}, seed=0)
    assert np.allclose(_values(model)[bias], prior)


def test_reinit_says_a_packed_dense_counts_fan_out_over_every_projection() -> None:
    """keras-hub's Swin packs Q, K and V in one Dense, ``attention_qkv`` (in, 3·d): a Glorot spec
    gets fan_out 3·d, said in a warning that names it and the per-projection layout; He (fan_in)
    says nothing; a rule with that layout gives fan_out d, silently."""
    inp = keras.Input((6, 16))
    model = keras.Model(inp, keras.layers.Dense(48, name="attention_qkv")(inp))
    glorot = presets.get("glorot_uniform")
    with pytest.warns(
        UserWarning,
        match=r"'attention_qkv/kernel'\) got a spec whose std depends on fan_out.*"
        r"Layout\(in_axes=0, out_axes=1, out_groups=k\)",
    ):
        isk.reinit(model, {"*kernel": glorot}, seed=0, dry_run=True)
    per = initscale.Rule(glorot, layout=initscale.Layout(in_axes=0, out_axes=1, out_groups=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        isk.reinit(model, {"*kernel": HE}, seed=0, dry_run=True)
        report = isk.reinit(model, {"*kernel": per}, seed=0, dry_run=True)
    assert report[next(r.name for r in report if r.name.endswith("kernel"))].fan_out == 16


def test_reinit_says_a_packed_einsum_dense_counts_fan_out_over_every_projection() -> None:
    """keras-hub's GPT-NeoX packs Q, K and V per head in one EinsumDense, ``query_key_value``
    ("abc,cde->abde", kernel (d, heads, 3·head_dim)): Glorot gets fan_out heads·3·head_dim, said
    in a warning giving both out axes; ``out_groups=3`` gives each projection heads·head_dim."""
    inp = keras.Input((6, 16))
    qkv = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 24), name="query_key_value")
    model = keras.Model(inp, qkv(inp))
    glorot = presets.get("glorot_uniform")
    with pytest.warns(
        UserWarning,
        match=r"'query_key_value/kernel'\) got a spec whose std depends on fan_out.*"
        r"Layout\(in_axes=0, out_axes=\(1, 2\), out_groups=k\)",
    ):
        report = isk.reinit(model, {"*kernel": glorot}, seed=0, dry_run=True)
    assert report["query_key_value/kernel"].fan_out == 48
    per = initscale.Rule(glorot, layout=initscale.Layout(in_axes=0, out_axes=(1, 2), out_groups=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = isk.reinit(model, {"*kernel": per}, seed=0, dry_run=True)
    assert report["query_key_value/kernel"].fan_out == 16


def _two_encoders():
    """Two sub-models built on their own, as keras-hub's CLIP builds its text and vision encoders:
    each names its variables from its own scope, so both hold ``proj/kernel`` and ``proj/bias``."""

    def encoder(name):
        inp = keras.Input((8,))
        return keras.Model(inp, keras.layers.Dense(8, name="proj")(inp), name=name)

    x = keras.Input((8,))
    model = keras.Model(x, [encoder("text")(x), encoder("vision")(x)])
    assert [v.path for v in model.weights] == ["proj/kernel", "proj/bias"] * 2
    return model


def test_reinit_names_variables_whose_paths_collide_by_their_enclosing_layers() -> None:
    """Two variables with one path get names of their own (their path after the enclosing layer
    that tells them apart), so the report, a name rule and the portable stream each reach one:
    before, ``report["proj/kernel"]`` showed one of them and both drew the same stream."""
    model = _two_encoders()
    report = isk.reinit(model, HE, dry_run=True)
    assert [r.name for r in report] == ["text/proj/kernel", "text/proj/bias", "vision/proj/kernel", "vision/proj/bias"]
    text, vision = (model.get_layer(n).get_layer("proj").kernel for n in ("text", "vision"))
    isk.reinit(model, {"vision/*kernel": initscale.Constant(0.5)}, seed=0)
    assert (_np(vision) == 0.5).all() and not (_np(text) == 0.5).any()
    isk.reinit(model, HE, stream_seed=7)
    assert not np.array_equal(_np(text), _np(vision))  # one stream per name: Stream(7, "text/proj/kernel"), ...
    again = _np(vision)
    isk.reinit(model, {"vision/proj/kernel": HE}, stream_seed=7)
    assert np.array_equal(_np(vision), again)  # the same name, the same stream, alone or not
    with pytest.warns(UserWarning, match=r"'proj/kernel' .*did you mean 'text/proj/kernel', 'vision/proj/kernel'"):
        isk.reinit(model, {"proj/kernel": HE}, dry_run=True)


def test_check_lsuv_and_auto_name_colliding_paths_as_reinit_does() -> None:
    """``check``, ``lsuv`` and ``auto`` read ``reinit``'s names: each encoder's kernel is its own
    row (before, auto planned only the first ``proj/kernel`` and said nothing of the second)."""
    model = _two_encoders()
    isk.reinit(model, HE, seed=0)
    checked = isk.check(model, rules=HE)
    assert [r.name for r in checked] == [r.name for r in isk.reinit(model, HE, dry_run=True)] and not checked.flags
    x = np.random.default_rng(0).standard_normal((64, 8)).astype("float32")
    rows = isk.lsuv(model, x, seed=0).rows
    assert sorted((r.name, r.weight) for r in rows) == [
        ("text/proj", "text/proj/kernel"),
        ("vision/proj", "vision/proj/kernel"),
    ]
    plan = initscale.auto(x).plan(model)
    assert sorted(r.weight for r in plan.rows) == ["text/proj/kernel", "vision/proj/kernel"]


@pytest.mark.parametrize(("kernel", "stride"), [(3, 1), (2, 2), (4, 2), (3, 2)])
def test_a_strided_transposed_conv_counts_the_taps_an_output_receives(kernel: int, stride: int) -> None:
    """As for torch (tests/test_torch_reinit.py): with every weight and input at one, an interior
    output of Conv2DTranspose is its tap count; their mean over whole stride periods is the
    forward fan_in, in · (kernel / stride)², which the report must give."""
    inp = keras.Input((12, 12, 8))
    layer = keras.layers.Conv2DTranspose(6, kernel, strides=stride, use_bias=False, name="up")
    model = keras.Model(inp, layer(inp))
    report = isk.reinit(model, HE, dry_run=True)
    layer.kernel.assign(np.ones(layer.kernel.shape, "float32"))
    y = _np(model(np.ones((1, 12, 12, 8), "float32")))[0, :, :, 0]
    lo = kernel
    window = y[lo : lo + 2 * stride, lo : lo + 2 * stride]
    assert report[layer.kernel.path].fan_in == pytest.approx(float(window.mean()), rel=1e-12)
