"""The JAX/Flax adapter: jax's initializer protocol, flax linen/nnx, complex dtypes, pytree
re-init, native parity with jax.nn.initializers and the flax layer defaults.

Every preset on every logical layer is the parity matrix's (tests/test_parity.py), with
jax.nn.initializers' own draws beside initscale's native-compat ones; real dtypes, keys as seeds,
zero-size shapes, bad input and the far-tail truncated normals are every adapter's
(tests/test_adapters.py)."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np
import pytest

import initscale
from _stats import failures, same_distribution
from initscale import presets
from initscale.normal_math import complex_truncated_rms

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
isj = pytest.importorskip("initscale.adapters.jax")

F32 = 2.0**-24  # float32 unit roundoff: a value inside the bounds may round just outside
HE = presets.get("he_normal")
SHAPE = (3, 3, 100, 200)


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def test_keys_typed_raw_and_bad() -> None:
    init = isj.initializer(HE)
    a = init(jax.random.key(3), (40, 50))
    b = init(jax.random.PRNGKey(3), (40, 50))
    assert a.shape == b.shape == (40, 50) and np.array_equal(a, init(jax.random.key(3), (40, 50)))
    for bad in (3, np.zeros(2, np.int64), jax.random.split(jax.random.key(0), 2), jnp.zeros((4,), jnp.uint32)):
        with pytest.raises(TypeError, match="Argument `key` must be one PRNG key"):
            init(bad, (4, 5))


def test_traceable_under_jit_and_usable_in_flax() -> None:
    import flax.linen as nn
    from flax import nnx

    init = isj.initializer(HE)
    jitted = jax.jit(lambda k: init(k, (64, 32)))
    assert np.array_equal(jitted(jax.random.key(0)), init(jax.random.key(0), (64, 32)))
    params = nn.Dense(32, kernel_init=init).init(jax.random.key(1), jnp.zeros((1, 64)))
    assert params["params"]["kernel"].shape == (64, 32)
    layer = nnx.Linear(64, 32, kernel_init=init, rngs=nnx.Rngs(0))
    assert layer.kernel[...].shape == (64, 32)
    bound = HE.bounds(initscale.Fans(64, 32))[1]
    assert float(jnp.abs(layer.kernel[...]).max()) <= bound * (1 + F32)


def test_a_non_float_dtype_argument_is_refused_when_built() -> None:
    with pytest.raises(TypeError, match="floating-point or complex weights only"):
        isj.initializer(HE, dtype=jnp.int8)


@pytest.mark.parametrize("distribution", ["normal", "uniform", "truncated_normal"])
def test_complex_weights_have_the_spec_variance(distribution) -> None:
    spec = initscale.VarianceScaling(2.0, "fan_in", distribution)
    shape = (400, 500)
    var = spec.variance(initscale.Fans(400, 500))
    w = np.asarray(isj.initializer(spec)(jax.random.key(1), shape, jnp.complex64)).astype(np.complex128)
    m = np.abs(w) ** 2
    # E|w|² within z = 4.5 standard errors of its mean, the standard error from the sample itself
    assert abs(m.mean() - var) <= 4.5 * m.std() / math.sqrt(m.size)
    # The sample mean of a centred circular law is circular normal with E|mean|² = var/n, so
    # |mean|²·n/var ~ Exp(1): P(|mean| > c·√(var/n)) = e^(−c²); c = √ln(1/6.8e-6) (as z = 4.5).
    assert abs(np.mean(w)) <= math.sqrt(math.log(1 / 6.8e-6)) * math.sqrt(var / m.size)
    phase = np.angle(w)  # circular: the phase is uniform, KS against U(−π, π]
    assert same_distribution(phase, np.random.default_rng(0).uniform(-np.pi, np.pi, phase.size)) == []
    if distribution == "truncated_normal":
        limit = 2.0 * math.sqrt(var) / complex_truncated_rms(2.0)
        # |w|² = c²·E with E ~ Exp(1) cut at 4: F(r) = (1 − e^(−r²/c²))/(1 − e^(−4)). The largest of n
        # draws misses the top q of the law with probability (1 − q)ⁿ = 1e-6.
        c2, q = (limit / 2.0) ** 2, -math.expm1(math.log(1e-6) / m.size)
        reach = math.sqrt(-c2 * math.log1p(-(1 - q) * -math.expm1(-4.0)))
        assert np.abs(w).max() <= limit * (1 + F32) and np.abs(w).max() >= reach
    if distribution == "uniform":
        assert np.abs(w).max() <= math.sqrt(2 * var) * (1 + F32)  # disk of radius √(2·var)


def test_jax_complex_truncated_variance_scaling_is_1_9_percent_high() -> None:
    """Measured: jax divides by 0.95311164380491208 where the exact factor is 0.9619618."""
    n, shape = 500, (500, 400)
    native = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", dtype=jnp.complex64)
    m = np.abs(np.asarray(native(jax.random.key(0), shape)).astype(np.complex128)) ** 2 * n
    expected = (complex_truncated_rms(2.0) / 0.95311164380491208) ** 2  # 1.0187
    assert abs(m.mean() - expected) <= 4.5 * m.std() / math.sqrt(m.size)
    assert abs(m.mean() - 1.0) > 4.5 * m.std() / math.sqrt(m.size)


def test_complex_orthogonal_is_unitary() -> None:
    q = np.asarray(isj.initializer(initscale.Orthogonal(2.0))(jax.random.key(0), (16, 24), jnp.complex64))
    q = q.astype(np.complex128).reshape(16, 24)
    assert np.allclose(q @ q.conj().T, 4 * np.eye(16), atol=1e-4)


# --- native parity ---------------------------------------------------------------------------

JNI = jax.nn.initializers
NATIVE = [  # initscale preset (name, kwargs), jax's own initializer, shape, layout
    ("jax.glorot_uniform", {}, JNI.glorot_uniform(), SHAPE),
    ("jax.glorot_normal", {}, JNI.glorot_normal(), SHAPE),
    ("jax.he_uniform", {}, JNI.he_uniform(), SHAPE),
    ("jax.he_normal", {}, JNI.he_normal(), SHAPE),
    ("jax.lecun_uniform", {}, JNI.lecun_uniform(), SHAPE),
    ("jax.lecun_normal", {}, JNI.lecun_normal(), SHAPE),
    (
        "jax.variance_scaling",
        {"scale": 3.0, "mode": "fan_geo_avg", "distribution": "normal"},
        JNI.variance_scaling(3.0, "fan_geo_avg", "normal"),
        SHAPE,
    ),
    (
        "jax.variance_scaling",
        {"scale": 0.5, "mode": "fan_out", "distribution": "uniform"},
        JNI.variance_scaling(0.5, "fan_out", "uniform"),
        SHAPE,
    ),
    ("jax.normal", {"stddev": 0.3}, JNI.normal(0.3), SHAPE),
    ("jax.uniform", {"scale": 0.5}, JNI.uniform(0.5), SHAPE),
    (
        "jax.truncated_normal",
        {"stddev": 0.2, "lower": -1.0, "upper": 3.0},
        JNI.truncated_normal(0.2, lower=-1.0, upper=3.0),
        SHAPE,
    ),
]


def _jax_numbers(name, kwargs, shape) -> tuple[float, tuple[float, float] | None]:
    """jax's std and support from its own formulas (jax/_src/nn/initializers.py)."""
    from jax._src.nn.initializers import _compute_fans

    if name.startswith("jax.truncated_normal"):
        s, lo, hi = kwargs["stddev"], kwargs["lower"], kwargs["upper"]
        from initscale.normal_math import truncated_moments

        mean, var, _ = truncated_moments(lo, hi)
        return s * math.sqrt(var + mean**2 - mean**2), (lo * s, hi * s)
    if name == "jax.normal":
        return kwargs["stddev"], None
    if name == "jax.uniform":
        return kwargs["scale"] / math.sqrt(12), (0.0, kwargs["scale"])
    tn = "truncated_normal"
    defaults = {
        "jax.glorot_uniform": (1.0, "fan_avg", "uniform"),
        "jax.glorot_normal": (1.0, "fan_avg", tn),
        "jax.he_uniform": (2.0, "fan_in", "uniform"),
        "jax.he_normal": (2.0, "fan_in", tn),
        "jax.lecun_uniform": (1.0, "fan_in", "uniform"),
        "jax.lecun_normal": (1.0, "fan_in", tn),
    }
    scale, mode, dist = defaults.get(name) or (kwargs["scale"], kwargs["mode"], kwargs["distribution"])
    fan_in, fan_out = _compute_fans(shape)
    n = {
        "fan_in": fan_in,
        "fan_out": fan_out,
        "fan_avg": (fan_in + fan_out) / 2,
        "fan_geo_avg": (fan_in * fan_out) ** 0.5,
    }[mode]
    var = scale / n
    if dist == "uniform":
        return math.sqrt(var), (-math.sqrt(3 * var), math.sqrt(3 * var))
    if dist == "truncated_normal":
        sigma = math.sqrt(var) / 0.87962566103423978
        return math.sqrt(var), (-2 * sigma, 2 * sigma)
    return math.sqrt(var), None


@pytest.mark.parametrize(("name", "kwargs", "native", "shape"), NATIVE, ids=[f"{c[0]}{c[1] or ''}" for c in NATIVE])
def test_jax_presets_match_jax_nn_initializers(name, kwargs, native, shape) -> None:
    spec = presets.get(name, **kwargs)
    layout = presets.info(name).layout
    dist = spec.resolve(
        None if spec.fixed_scale else initscale.compute_fans(shape, f"{layout.split(':')[0]}:native=true")
    )
    std, support = _jax_numbers(name, kwargs, shape)
    assert dist.std == pytest.approx(std, rel=1e-9)  # 0.8796... is a 17-digit literal in jax
    if support is not None:
        assert dist.bounds == pytest.approx(support, rel=1e-9)
    ours = _np(isj.initializer(spec, layout=layout)(jax.random.key(1), shape))
    theirs = _np(native(jax.random.key(2), shape))
    assert failures(ours, dist, F32) == []
    assert failures(theirs, dist, F32) == []
    assert same_distribution(ours, theirs) == []


def test_flax_layer_defaults_are_reproduced_by_presets() -> None:
    import flax.linen as nn

    x = jnp.zeros((1, 8, 8, 64))
    cases = [
        ("flax.dense_kernel", nn.Dense(300), jnp.zeros((1, 600)), ("kernel",)),
        ("flax.conv_kernel", nn.Conv(128, (3, 3)), x, ("kernel",)),
        ("flax.embed", nn.Embed(1000, 200), jnp.zeros((1,), jnp.int32), ("embedding",)),
    ]
    for name, module, inp, path in cases:
        value = module.init(jax.random.key(0), inp)["params"]
        for p in path:
            value = value[p]
        theirs = _np(value)
        info = presets.info(name)
        spec = presets.get(name)
        dist = spec.resolve(initscale.compute_fans(theirs.shape, info.layout))
        assert failures(theirs, dist, F32) == [], name
        ours = _np(isj.initializer(spec, layout=info.layout)(jax.random.key(5), theirs.shape))
        assert same_distribution(ours, theirs) == [], name


# --- reinit ---------------------------------------------------------------------------------


def _linen_variables():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, tokens):
            x = nn.Conv(32, (3, 3), feature_group_count=4)(x)
            x = nn.ConvTranspose(8, (3, 3))(x)
            x = nn.LayerNorm()(x)
            x = x.reshape(x.shape[0], -1, 8)
            x = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=16)(x)
            e = nn.Embed(100, 8)(tokens)
            return nn.Dense(5)(x.mean(1) + e.mean(1))

    return Net().init(jax.random.key(0), jnp.zeros((1, 6, 6, 16)), jnp.zeros((1, 3), jnp.int32))


EXPECTED = [  # path, layout, fan_in, fan_out — guessed from names alone (no module=)
    ("params/Conv_0/kernel", "flax.conv:groups=1", 36, 288),  # (3,3,4,32): groups unknown from a dict
    ("params/ConvTranspose_0/kernel", "flax.conv_transpose", 288, 72),
    ("params/MultiHeadDotProductAttention_0/query/kernel", "flax.attention_qkv", 8, 16),  # (8, 2, 8)
    ("params/MultiHeadDotProductAttention_0/out/kernel", "flax.attention_out", 16, 8),  # (2, 8, 8)
    ("params/Dense_0/kernel", "flax.dense", 8, 5),
    ("params/Embed_0/embedding", "flax.embed", 100, 8),
]


def test_reinit_native_fans_are_jax_own() -> None:
    import flax.linen as nn

    model = nn.Conv(64, (3, 3), feature_group_count=4)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 32)))
    _, report = isj.reinit(variables, HE, jax.random.key(1), module=model, dry_run=True, fans="native")
    row = report["params/kernel"]  # (3, 3, 8, 64): jax's _compute_fans ignores the groups
    assert (row.fan_in, row.fan_out, row.fans, row.layout) == (72, 576, "native", "flax.conv:groups=4,native=true")
    _, forward = isj.reinit(variables, HE, jax.random.key(1), module=model, dry_run=True)
    assert (forward["params/kernel"].fan_out, forward["params/kernel"].fans) == (144, "forward")


def test_reinit_linen_layouts_defaults_and_new_tree() -> None:
    variables = _linen_variables()
    with pytest.warns(UserWarning, match=r"guessed from names: .*'params/Conv_0/kernel'.*pass module="):
        new, report = isj.reinit(variables, HE, jax.random.key(1))
    for path, layout, fan_in, fan_out in EXPECTED:
        row = report[path]
        assert (row.layout, row.fan_in, row.fan_out, row.guessed) == (layout, fan_in, fan_out, True), path
    p, old = new["params"], variables["params"]
    assert np.all(np.asarray(p["Dense_0"]["bias"]) == 0) and np.all(np.asarray(p["LayerNorm_0"]["scale"]) == 1)
    assert np.array_equal(p["Embed_0"]["embedding"], old["Embed_0"]["embedding"])  # kept
    assert not np.array_equal(p["Dense_0"]["kernel"], old["Dense_0"]["kernel"])
    q = _np(p["MultiHeadDotProductAttention_0"]["query"]["kernel"])
    assert report["params/MultiHeadDotProductAttention_0/query/kernel"].std == pytest.approx(math.sqrt(2 / 8))
    assert np.abs(q).max() <= HE.bounds(initscale.Fans(8, 16))[1] * (1 + F32)


def test_reinit_keys_come_from_paths_not_traversal_order() -> None:
    variables = _linen_variables()
    with pytest.warns(UserWarning, match="guessed from names"):
        new, _ = isj.reinit(variables, HE, jax.random.key(1))
    dense_only = {"params": {"Dense_0": variables["params"]["Dense_0"]}}
    with pytest.warns(UserWarning, match="guessed from names"):
        alone, _ = isj.reinit(dense_only, HE, jax.random.key(1))
    assert np.array_equal(alone["params"]["Dense_0"]["kernel"], new["params"]["Dense_0"]["kernel"])


def test_reinit_values_follow_the_forward_fans() -> None:
    import flax.linen as nn

    spec = initscale.VarianceScaling(2.0, "fan_in", "uniform")
    model = nn.MultiHeadDotProductAttention(num_heads=8, qkv_features=512)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 2, 256)))
    with pytest.warns(UserWarning, match=r"guessed from names: .*'params/query/kernel'"):
        _, guessed = isj.reinit(variables, spec, jax.random.key(2), dry_run=True)
    # linen's own auto name is missing here (the module is the root): the q kernel (256, 8, 64) is
    # rank 3 under "query", so the generic flax layout gives fan_in 8·256; a dict root has no class.
    assert guessed["params/query/kernel"].fan_in == 8 * 256 and guessed["params/query/kernel"].guessed
    new, report = isj.reinit(
        variables,
        spec,
        jax.random.key(2),
        module=model,  # the classes: no guess
        example_inputs=jax.ShapeDtypeStruct((1, 2, 256), jnp.float32),
    )
    assert report["params/query/kernel"].fan_in == 256
    with pytest.warns(UserWarning, match="guessed from names"):
        rows = isj.reinit({"params": {"MultiHeadDotProductAttention_0": variables["params"]}}, spec, jax.random.key(2))[
            0
        ]
    for q in (
        _np(new["params"]["query"]["kernel"]),
        _np(rows["params"]["MultiHeadDotProductAttention_0"]["query"]["kernel"]),
    ):
        assert q.shape == (256, 8, 64)
        assert failures(q, spec.resolve(initscale.Fans(256, 512)), F32) == []
        assert failures(q, spec.resolve(initscale.compute_fans(q.shape, "flax")), F32) != []  # mutation


def test_reinit_nnx_module_and_state() -> None:
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(16, 32, (3, 3), feature_group_count=4, rngs=rngs)
            self.norm = nnx.LayerNorm(32, rngs=rngs)
            self.head = nnx.Linear(32, 10, rngs=rngs)

    model = Net(nnx.Rngs(0))
    state, report = isj.reinit(model, HE, jax.random.key(3))
    assert report["conv/kernel"].layout == "flax.conv:groups=4"
    assert (report["conv/kernel"].fan_in, report["conv/kernel"].fan_out) == (36, 72)
    assert report["norm/scale"].reason == "default: norm scale -> ones"
    nnx.update(model, state)
    assert float(jnp.abs(model.head.bias[...]).max()) == 0.0
    with pytest.warns(UserWarning, match=r"guessed from names: 'conv/kernel', 'head/kernel'; pass module="):
        _, report2 = isj.reinit(nnx.state(model, nnx.Param), HE, jax.random.key(3), dry_run=True)
    assert report2["conv/kernel"].layout == "flax"  # a bare State knows no classes: (*kernel, in, out)
    assert report2.dry_run and report2["conv/kernel"].guessed
    _, report3 = isj.reinit(nnx.state(model, nnx.Param), HE, jax.random.key(3), dry_run=True, module=model)
    assert report3["conv/kernel"].layout == "flax.conv:groups=4" and report3.guessed == ()


def test_reinit_bad_input() -> None:
    variables = _linen_variables()
    with pytest.raises(TypeError, match="must be an initscale spec"):
        isj.reinit(variables, {"Dense": "he_normal"}, jax.random.key(0))
    with pytest.raises(TypeError, match="Argument `key`"):
        isj.reinit(variables, HE, 0)
    with pytest.raises(ValueError, match=r"Parameter 'params/LayerNorm_0/scale' \(shape \(8,\), in LayerNorm\)"):
        isj.reinit(variables, {"*/scale": HE}, jax.random.key(0))
    with pytest.warns(UserWarning, match=r"'Dens' \(did you mean 'Dense'"):
        isj.reinit(variables, {"Dens": HE}, jax.random.key(0), dry_run=True)


# --- reinit with the module: every layer's class and attributes -------------------------------


def _linen_net():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, tokens):
            x = nn.Conv(32, (3, 3), feature_group_count=4)(x)
            x = nn.Conv(32, (3, 3), feature_group_count=32, name="depthwise")(x)
            x = nn.ConvTranspose(8, (3, 3))(x)
            x = nn.LayerNorm()(x)
            x = x.reshape(x.shape[0], -1, 8)
            x = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=16, name="attn")(x)
            e = nn.Embed(100, 8)(tokens)
            return nn.Dense(5, name="proj")(x.mean(1) + e.mean(1))

    inputs = (jnp.zeros((1, 6, 6, 16)), jnp.zeros((1, 3), jnp.int32))
    return Net(), inputs, Net().init(jax.random.key(0), *inputs)


EXPECTED_WITH_MODULE = [  # path, layer, layout, fan_in, fan_out — by hand from the forward pass
    ("params/Conv_0/kernel", "Conv", "flax.conv:groups=4", 36, 72),  # (3,3,4,32): 4·9 in, 32/4·9 out
    ("params/depthwise/kernel", "Conv", "flax.conv:groups=32", 9, 9),  # (3,3,1,32): one channel each
    ("params/ConvTranspose_0/kernel", "ConvTranspose", "flax.conv_transpose", 288, 72),
    ("params/attn/query/kernel", "DenseGeneral", "flax.attention_qkv", 8, 16),  # (8, 2, 8): in, heads, head_dim
    ("params/attn/key/kernel", "DenseGeneral", "flax.attention_qkv", 8, 16),
    ("params/attn/out/kernel", "DenseGeneral", "flax.attention_out", 16, 8),  # (2, 8, 8): heads, head_dim, out
    ("params/proj/kernel", "Dense", "flax.dense", 8, 5),
    ("params/Embed_0/embedding", "Embed", "flax.embed", 100, 8),
]


def test_reinit_linen_module_gives_each_layer_its_real_fans() -> None:
    import warnings

    model, inputs, variables = _linen_net()
    abstract = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in inputs)  # nothing is computed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing guessed, nothing to warn about
        new, report = isj.reinit(variables, HE, jax.random.key(1), module=model, example_inputs=abstract)
    for path, layer, layout, fan_in, fan_out in EXPECTED_WITH_MODULE:
        row = report[path]
        assert (row.layer, row.layout, row.fan_in, row.fan_out) == (layer, layout, fan_in, fan_out), path
    assert report.guessed == () and "?" not in str(report)
    assert report["params/depthwise/kernel"].std == pytest.approx(math.sqrt(2 / 9))
    assert np.all(np.asarray(new["params"]["LayerNorm_0"]["scale"]) == 1)
    # named modules keep their class, and enclosing modules count for class rules
    _, by_class = isj.reinit(
        variables,
        {"MultiHeadDotProductAttention": initscale.Constant(0.5), "Dense": initscale.Constant(2.0)},
        jax.random.key(1),
        dry_run=True,
        module=model,
        example_inputs=inputs,
    )
    assert by_class["params/attn/query/kernel"].spec == initscale.Constant(0.5)
    assert by_class["params/proj/kernel"].spec == initscale.Constant(2.0)
    assert by_class["params/attn/query/bias"].spec == initscale.Zeros()  # class rules target weights
    # the params collection alone works the same
    _, alone = isj.reinit(variables["params"], HE, jax.random.key(1), dry_run=True, module=model, example_inputs=inputs)
    assert (alone["Conv_0/kernel"].fan_out, alone["depthwise/kernel"].fan_out) == (72, 9)


def test_reinit_linen_module_values_follow_the_group_fans() -> None:
    import flax.linen as nn

    spec = presets.get("glorot_normal")  # fan_avg: the fan_out of a grouped conv matters
    model = nn.Conv(256, (3, 3), feature_group_count=8)  # kernel (3, 3, 8, 256): 18,432 values
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 64)))
    new, report = isj.reinit(variables, spec, jax.random.key(3), module=model)  # a root module: no inputs needed
    assert (report["params/kernel"].fan_in, report["params/kernel"].fan_out) == (72, 288)  # 8·9, 256/8·9
    k = _np(new["params"]["kernel"])
    assert failures(k, spec.resolve(initscale.Fans(72, 288)), F32) == []
    assert failures(k, spec.resolve(initscale.Fans(72, 2304)), F32) != []  # mutation: the ungrouped fan_out


def test_reinit_linen_setup_submodules_and_general_dense_need_no_example_inputs() -> None:
    import flax.linen as nn

    class Block(nn.Module):
        def setup(self):
            self.convs = [nn.Conv(8, (3, 3), feature_group_count=2, name=f"c{i}") for i in range(2)]
            self.mix = nn.DenseGeneral(features=(2, 4), axis=-1, batch_dims=(0,))

        def __call__(self, x):
            for conv in self.convs:
                x = conv(x)
            return self.mix(x.reshape(3, -1, 8))

    model = nn.Sequential([nn.Dense(16), Block()])
    variables = model.init(jax.random.key(0), jnp.zeros((3, 4, 4, 4)))
    _, report = isj.reinit(variables, HE, jax.random.key(1), dry_run=True, module=model)
    assert report["params/layers_0/kernel"].layer == "Dense"  # linen's auto name: class Dense, not "layers"
    conv = report["params/layers_1/c1/kernel"]  # (3, 3, 4, 8): 4·9 in, 8/2·9 out
    assert (conv.layer, conv.layout, conv.fan_in, conv.fan_out) == ("Conv", "flax.conv:groups=2", 36, 36)
    mix = report["params/layers_1/mix/kernel"]  # (batch 3, in 8, 2, 4)
    assert report["params/layers_1/mix/kernel"].shape == (3, 8, 2, 4)
    assert (mix.layout, mix.fan_in, mix.fan_out, mix.guessed) == ("flax.dense_general", 8, 8, False)
    assert (
        "Block"
        in isj.reinit(variables, {"Block": HE}, jax.random.key(1), dry_run=True, module=model)[1][
            "params/layers_1/mix/kernel"
        ].reason
    )


def test_reinit_linen_module_that_cannot_be_read_says_what_to_pass() -> None:
    model, inputs, variables = _linen_net()
    before = jax.tree_util.tree_map(np.asarray, variables)
    compact = r"no submodule at 'ConvTranspose_0', 'Conv_0', .*'proj': .*@nn.compact.*example_inputs="
    with pytest.raises(ValueError, match=compact):
        isj.reinit(variables, HE, jax.random.key(1), module=model)
    with pytest.raises(ValueError, match=r"Tracing module.apply.*the variables this module made"):
        isj.reinit(
            {"params": {"Dense_0": variables["params"]["proj"]}},
            HE,
            jax.random.key(1),
            module=model,
            example_inputs=inputs,
        )
    extra = {"params": {**variables["params"], "extra": {"kernel": jnp.zeros((2, 2))}}}
    with pytest.raises(ValueError, match=r"no submodule at 'extra': are these the variables of this module"):
        isj.reinit(extra, HE, jax.random.key(1), module=model, example_inputs=inputs)
    with pytest.raises(ValueError, match=r"Tracing module.apply.*example_inputs="):
        isj.reinit(variables, HE, jax.random.key(1), module=model, example_inputs=(jnp.zeros((1, 6, 6, 3)),))
    with pytest.raises(TypeError, match=r"Argument `module` must be the flax.linen.Module.*Received: module of type"):
        isj.reinit(variables, HE, jax.random.key(1), module="Net")
    with pytest.raises(ValueError, match=r"pass module= too"):
        isj.reinit(variables, HE, jax.random.key(1), example_inputs=inputs)
    with pytest.raises(TypeError, match=r"`example_kwargs` must be a mapping"):
        isj.reinit(variables, HE, jax.random.key(1), module=model, example_inputs=inputs, example_kwargs=[1])
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, before, variables))


def test_reinit_linen_module_with_keyword_arguments_dropout_and_batch_norm() -> None:
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.Conv(8, (3, 3), feature_group_count=2)(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            return nn.Dropout(0.5, deterministic=not train)(x)

    x = jnp.zeros((1, 4, 4, 4))
    variables = Net().init(jax.random.key(0), x, train=False)
    for kwargs in ({"train": False}, {"train": True}):
        new, report = isj.reinit(
            variables, HE, jax.random.key(1), module=Net(), example_inputs=x, example_kwargs=kwargs
        )
        assert report["params/Conv_0/kernel"].fan_out == 36  # 8/2·9
        assert report["params/BatchNorm_0/scale"].reason == "default: norm scale -> ones"
        stats = variables["batch_stats"]["BatchNorm_0"]
        assert np.array_equal(new["batch_stats"]["BatchNorm_0"]["mean"], stats["mean"])  # kept


def test_reinit_linen_scanned_kernels_are_taken_as_stacked_and_flagged() -> None:
    import flax.linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, c, _):
            return nn.Conv(8, (3, 3), feature_group_count=2)(c), None

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            stack = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
            return stack(name="stack")(x, None)[0]

    x = jnp.zeros((1, 4, 4, 8))
    variables = Net().init(jax.random.key(0), x)
    with pytest.warns(UserWarning, match=r"'params/stack/Conv_0/kernel'.*stacked by nn.scan"):
        _, report = isj.reinit(variables, HE, jax.random.key(1), dry_run=True, module=Net(), example_inputs=x)
    row = report["params/stack/Conv_0/kernel"]  # (3 layers, 3, 3, 4, 8): per layer 4·9 in, 8/2·9 out
    assert (row.layout, row.fan_in, row.fan_out, row.guessed) == (
        "flax.conv:groups=2 over 1 leading stacked axes",
        36,
        36,
        True,
    )


def test_reinit_without_module_flags_every_guessed_layout() -> None:
    import warnings

    variables = _linen_variables()
    with pytest.warns(UserWarning, match=r"guessed from names: .*'params/Conv_0/kernel'.*pass module=") as caught:
        _, report = isj.reinit(variables, HE, jax.random.key(1), dry_run=True)
    assert caught[0].filename == __file__  # points at the caller
    kernels = {r.name for r in report if r.name.endswith(("kernel", "embedding"))}
    assert {r.name for r in report.guessed} == kernels
    assert not report["params/Dense_0/bias"].guessed and report.to_dicts()[0]["guessed"] in (True, False)
    table = str(report)
    assert "flax.conv:groups=1?" in table and table.splitlines()[-1].startswith("? layout guessed from names")
    with warnings.catch_warnings():  # a fixed-scale spec does not use the fans: flagged, not warned
        warnings.simplefilter("error")
        _, fixed = isj.reinit(variables, {"*/kernel": initscale.Normal(0.02)}, jax.random.key(1), dry_run=True)
    assert fixed["params/Conv_0/kernel"].guessed


def test_reinit_nnx_root_modules_get_their_own_attributes() -> None:
    from flax import nnx

    conv = nnx.Conv(16, 32, (3, 3), feature_group_count=4, rngs=nnx.Rngs(0))
    _, report = isj.reinit(conv, HE, jax.random.key(3), dry_run=True)
    row = report["kernel"]  # (3, 3, 4, 32) at the root
    assert (row.layer, row.layout, row.fan_in, row.fan_out, row.guessed) == (
        "Conv",
        "flax.conv:groups=4",
        36,
        72,
        False,
    )
    depthwise = nnx.Conv(8, 8, (3, 3), feature_group_count=8, rngs=nnx.Rngs(0))
    assert (isj.reinit(depthwise, HE, None, dry_run=True, stream_seed=1)[1]["kernel"].fan_out) == 9
    state = nnx.state(conv, nnx.Param)  # a bare State and its module
    assert isj.reinit(state, HE, jax.random.key(3), dry_run=True, module=conv)[1]["kernel"].fan_out == 72
    with pytest.raises(ValueError, match=r"leave out example_inputs="):
        isj.reinit(state, HE, jax.random.key(3), module=conv, example_inputs=jnp.zeros(3))


def test_reinit_nnx_attention_kernels_get_per_projection_fans() -> None:
    from flax import nnx

    attn = nnx.MultiHeadAttention(4, 32, 64, out_features=24, rngs=nnx.Rngs(0), decode=False)
    _, report = isj.reinit(attn, HE, jax.random.key(3), dry_run=True)
    q, out = report["query/kernel"], report["out/kernel"]  # (32, 4, 16) and (4, 16, 24)
    assert (q.layout, q.fan_in, q.fan_out) == ("flax.attention_qkv", 32, 64)
    assert (out.layout, out.fan_in, out.fan_out) == ("flax.attention_out", 64, 24)
    assert report.guessed == ()


def test_flax_lstm_cell_defaults_are_reproduced_by_presets() -> None:
    import flax.linen as nn

    cell = nn.LSTMCell(256)
    carry = cell.initialize_carry(jax.random.key(0), (1, 128))
    params = cell.init(jax.random.key(1), carry, jnp.zeros((1, 128)))["params"]
    inputs = np.concatenate([_np(params[g]["kernel"]).ravel() for g in ("ii", "if", "ig", "io")])
    dist = presets.get("flax.lstm_kernel").resolve(initscale.compute_fans((128, 256), "flax.lstm"))
    assert failures(inputs, dist, F32) == []
    for g in ("hi", "hf", "hg", "ho"):  # one orthogonal (H, H) per gate
        q = _np(params[g]["kernel"])
        assert np.allclose(q.T @ q, np.eye(256), atol=1e-4), g
    ours = _np(isj.initializer(presets.get("flax.lstm_recurrent_kernel"))(jax.random.key(2), (256, 256)))
    assert same_distribution(ours, _np(params["hi"]["kernel"])) == []


@pytest.mark.parametrize(
    ("kwargs", "shape", "match"),
    [
        ({"in_axis": 2}, (3, 4), r"Layout jax needs axis 2, but shape \(3, 4\) has rank 2"),
        ({"in_axis": 0, "out_axis": 0}, (3, 4), "must be distinct"),
    ],
)
def test_axes_that_do_not_fit_the_shape(kwargs, shape, match) -> None:
    with pytest.raises(ValueError, match=match):
        isj.initializer(HE, **kwargs)(jax.random.key(0), shape)


def test_a_portable_stream_refuses_complex_dtypes() -> None:
    from initscale.streams import Stream

    with pytest.raises(ValueError, match="Portable streams make real weights"):
        isj.initializer(presets.get("he_uniform"), stream=Stream(1, "a"))(None, (3, 4), jnp.complex64)


def test_portable_streams_share_one_compiled_program_per_shape() -> None:
    """The stream's key is traced: a model's many weights of one shape compile once, so eager
    calls (flax's init) cost milliseconds, not a compilation each."""
    from initscale.adapters.jax import _stream_compiled
    from initscale.streams import Stream, stream_values

    spec = presets.get("he_uniform")
    before = _stream_compiled._cache_size()
    for name in ("a", "b", "c"):
        w = isj.initializer(spec, stream=Stream(5, name))(None, (7, 9))
        ref = stream_values(Stream(5, name), spec, (7, 9), "jax")
        assert np.abs(np.asarray(w, dtype=np.float64) - ref).max() <= 8 * np.spacing(np.float32(np.abs(ref).max()))
    assert _stream_compiled._cache_size() == before + 1


def _mixer_model():
    import flax.linen as nn

    class MyRMSNorm(nn.Module):  # a norm initscale knows by its class name only
        @nn.compact
        def __call__(self, x):
            return x * self.param("scale", nn.initializers.constant(3.0), (x.shape[-1],))

    class Mixer(nn.Module):  # a layer initscale does not know: which kernel axis is the input?
        @nn.compact
        def __call__(self, x):
            return x @ self.param("kernel", nn.initializers.normal(1.0), (x.shape[-1], 6))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(6, name="proj")(MyRMSNorm(name="final")(Mixer(name="mix")(x)))

    model = Net()
    x = jnp.zeros((1, 4))
    return model, model.init(jax.random.key(0), x), x


def test_reinit_custom_norms_and_unknown_kernels_with_module() -> None:
    model, variables, x = _mixer_model()
    kw = {"module": model, "example_inputs": x}
    with pytest.warns(UserWarning, match=r"left 1 parameter\(s\) of 2 or more axes untouched.*Mixer \(1: 'params/mix"):
        new, report = isj.reinit(variables, HE, jax.random.key(1), **kw)
    assert report["params/final/scale"].reason == "default: norm scale -> ones"
    assert np.all(_np(new["params"]["final"]["scale"]) == 1.0)
    assert not report["params/mix/kernel"].touched and report["params/mix/kernel"].layout is None  # not guessed
    with pytest.raises(
        ValueError,
        match=r"(?s)'params/mix/kernel' \(shape \(4, 6\), in Mixer\).*"
        r"\{'Mixer': initscale\.Rule\(VarianceScaling\(scale=2\.0\), layout=",
    ):
        isj.reinit(variables, {"Mixer": HE}, jax.random.key(1), **kw)
    new, report = isj.reinit(variables, {"Mixer": initscale.Rule(HE, layout="flax.dense")}, jax.random.key(1), **kw)
    row = report["params/mix/kernel"]
    assert (row.layout, row.fan_in, row.fan_out, row.guessed) == ("flax.dense", 4, 6, False)
    assert row.std == pytest.approx(math.sqrt(2 / 4))  # he_normal: Var = 2 / fan_in


def test_reinit_never_guesses_a_layout_for_a_leaf_that_is_not_a_kernel() -> None:
    tree = {"params": {"pos": jnp.ones((1, 5, 8)), "Dense_0": {"kernel": jnp.ones((8, 4))}}}
    with pytest.raises(
        ValueError,
        match=r"(?s)'params/pos' \(shape \(1, 5, 8\), in -\).*"
        r"\{'params/pos': initscale\.Rule",
    ):
        isj.reinit(tree, {"params/pos": HE}, jax.random.key(0))
    _, report = isj.reinit(tree, {"params/pos": initscale.Normal(0.02)}, jax.random.key(0))
    assert report["params/pos"].touched and report["params/pos"].layout is None


def test_reinit_warns_before_zeroing_a_class_prior_bias() -> None:
    """A detector head's bias at the focal-loss prior -log((1 - p) / p): the defaults zero it as
    asked, naming it and its value; a rule of None keeps it, with no such warning."""
    prior = -math.log((1 - 0.01) / 0.01)
    params = {"params": {"logits": {"kernel": jnp.ones((6, 4)), "bias": jnp.full((4,), prior)}}}
    with pytest.warns(UserWarning, match=r"'params/logits/bias' = -4.59512"):
        new, _ = isj.reinit(params, HE, jax.random.key(0))
    assert not np.asarray(new["params"]["logits"]["bias"]).any()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept, _ = isj.reinit(params, {"*kernel": HE, "*logits/bias": None}, jax.random.key(0))
    assert not [w for w in caught if "held one other value" in str(w.message)]
    assert np.allclose(np.asarray(kept["params"]["logits"]["bias"]), prior)


def test_reinit_says_a_packed_dense_general_counts_fan_out_over_every_projection() -> None:
    """A linen ``DenseGeneral`` named ``qkv`` with features (3, heads, head_dim), as in ViT-style
    code that splits it after the matmul: Glorot gets fan_out 3·heads·head_dim, said in a warning
    naming it and its out axes; He (fan_in) says nothing; ``out_groups=3`` gives heads·head_dim."""
    nn = pytest.importorskip("flax.linen")

    class Attn(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.DenseGeneral((3, 2, 8), name="qkv")(x)

    model, x = Attn(), jnp.zeros((1, 4, 16))
    variables = model.init(jax.random.key(0), x)
    glorot = presets.get("glorot_uniform")
    kw = {"dry_run": True, "module": model, "example_inputs": (x,)}
    with pytest.warns(
        UserWarning,
        match=r"'params/qkv/kernel'\) got a spec whose std depends on fan_out.*"
        r"Layout\(in_axes=0, out_axes=\(1, 2, 3\), out_groups=k\)",
    ):
        _, report = isj.reinit(variables, glorot, jax.random.key(1), **kw)
    assert report["params/qkv/kernel"].fan_out == 48
    per = initscale.Rule(glorot, layout=initscale.Layout(in_axes=0, out_axes=(1, 2, 3), out_groups=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        isj.reinit(variables, HE, jax.random.key(1), **kw)
        _, report = isj.reinit(variables, {"*qkv/kernel": per}, jax.random.key(1), **kw)
    assert report["params/qkv/kernel"].fan_out == 16


def test_a_norm_used_as_one_plus_scale_is_read_from_its_source_or_warned() -> None:
    """DeepMind gemma's and recurrentgemma's flax RMSNorm multiply by ``1 + scale`` (``scale + 1``)
    from a zeros init (gm/nn/_layers.py, recurrentgemma/jax/layers.py): read from ``__call__``'s
    source, the defaults keep it at zeros. A norm whose source does not say so (``1 + s``) is set
    to ones, as any norm, with a warning that names its zeros and ``initscale.Zeros()``."""
    nn = pytest.importorskip("flax.linen")

    def rms(x):
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)

    class GemmaRMSNorm(nn.Module):
        @nn.compact
        def __call__(self, x):
            scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
            return rms(x) * (1 + scale)

    class GriffinRMSNorm(nn.Module):
        @nn.compact
        def __call__(self, x):
            scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
            return rms(x) * (scale + 1)

    class OpaqueRMSNorm(nn.Module):
        @nn.compact
        def __call__(self, x):
            s = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
            return rms(x) * (1 + s)

    class Net(nn.Module):
        norm: Any

        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(self.norm()(x))

    for norm, unit in ((GemmaRMSNorm, True), (GriffinRMSNorm, True), (OpaqueRMSNorm, False)):
        model, x = Net(norm), jnp.ones((1, 8))
        variables = model.init(jax.random.key(0), x)
        kw = {"module": model, "example_inputs": (x,)}
        name = f"params/{norm.__name__}_0/scale"
        if unit:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                new, report = isj.reinit(variables, HE, jax.random.key(1), **kw)
            assert report[name].reason == "default: norm scale used as 1 + weight -> zeros"
            assert not np.asarray(new["params"][f"{norm.__name__}_0"]["scale"]).any()
        else:
            with pytest.warns(UserWarning, match=rf"1 norm scale\(s\) \('{name}' = 0\) .*1 \+ scale.*Zeros\(\)"):
                new, _ = isj.reinit(variables, HE, jax.random.key(1), **kw)
            assert (np.asarray(new["params"]["OpaqueRMSNorm_0"]["scale"]) == 1).all()


def test_submodules_are_read_on_every_call_under_nn_jit_and_behind_underscored_attributes() -> None:
    """DeepMind gemma's Transformer jits its ``__call__`` and keeps its attention's q/k norms as
    ``self._query_norm``: the second ``reinit`` with the same input shapes reused jit's cached
    trace, recorded no compact submodule, and raised; the underscored setup attribute was skipped."""
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        def setup(self):
            self._norm = nn.RMSNorm()

        @functools.partial(nn.jit, static_argnames=("self",))
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(self._norm(x))

    model, x = Net(), jnp.ones((1, 8))
    variables = model.init(jax.random.key(0), x)
    for _ in range(2):
        _, report = isj.reinit(variables, HE, jax.random.key(1), dry_run=True, module=model, example_inputs=(x,))
        assert (report["params/_norm/scale"].layer, report["params/Dense_0/kernel"].layer) == ("RMSNorm", "Dense")


def test_a_leaf_b_beside_a_w_is_its_modules_bias() -> None:
    """Haiku-style ``w``/``b`` names (recurrentgemma's Einsum and BlockDiagonalLinear): ``b`` is a
    bias, zeroed by the defaults and never drawn by a class rule that gives ``w`` its layout; a
    ``b`` with no ``w`` or ``kernel`` beside it is not taken for one."""
    nn = pytest.importorskip("flax.linen")

    class BlockDiagonal(nn.Module):
        @nn.compact
        def __call__(self, x):
            w = self.param("w", nn.initializers.lecun_normal(), (2, 4, 4))
            b = self.param("b", nn.initializers.zeros_init(), (2, 4))
            return (jnp.einsum("...hi,hij->...hj", x.reshape(-1, 2, 4), w) + b).reshape(x.shape)

    class Offset(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x + self.param("b", nn.initializers.ones, (2, 4)).reshape(-1)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Offset()(BlockDiagonal()(x))

    model, x = Net(), jnp.ones((1, 8))
    variables = model.init(jax.random.key(0), x)
    per_block = initscale.Rule(presets.get("glorot_uniform"), layout=initscale.Layout(1, 2, 0))
    kw = {"dry_run": True, "module": model, "example_inputs": (x,)}
    _, report = isj.reinit(variables, {"BlockDiagonal": per_block}, jax.random.key(1), **kw)
    b, w = report["params/BlockDiagonal_0/b"], report["params/BlockDiagonal_0/w"]
    assert (b.reason, b.fan_in, w.fan_in, w.fan_out) == ("default: biases -> zeros", None, 4, 4)
    assert report["params/Offset_0/b"].reason == "no rule matched"


def _gemma_like():
    """DeepMind gemma's flax layers by hand (gemma 4.0.1, gm/nn/_layers.py and _modules.py): an
    ``Einsum(shape)`` module called with its equation, ``weight_name`` for the MLP's weights, whose
    module shares its parent's scope (``nn.share_scope``), so those leaves sit in the MLP itself;
    and recurrentgemma's ``Einsum`` (1.0.1, jax/layers.py), which keeps its equation as ``eqn``
    and adds a ``b``."""
    nn = pytest.importorskip("flax.linen")

    class Einsum(nn.Module):
        shape: tuple[int, ...]
        weight_name: str = "w"

        @nn.compact
        def __call__(self, eqn, x):
            return jnp.einsum(eqn, x, self.param(self.weight_name, nn.initializers.normal(), self.shape))

    class StoredEinsum(nn.Module):
        w_shape: tuple[int, ...]
        b_shape: tuple[int, ...]
        eqn: str

        def setup(self):
            self.w = self.param("w", nn.initializers.normal(), self.w_shape)
            self.b = self.param("b", nn.initializers.zeros_init(), self.b_shape)

        def __call__(self, x):
            return jnp.einsum(self.eqn, x, self.w) + self.b

    heads, kv_heads, d, hd, ff = 4, 2, 16, 4, 24

    class Attention(nn.Module):
        def setup(self):
            self.q_einsum = Einsum((heads, d, hd))
            self.kv_einsum = Einsum((2, kv_heads, d, hd))
            self.qkv_einsum = Einsum((3, heads, d, hd))
            self.attn_vec_einsum = Einsum((heads, hd, d))

        def __call__(self, x):
            q = self.q_einsum("BTD,NDH->BTNH", x)
            k, v = self.kv_einsum("BSD,CKDH->CBSKH", x)
            q2, k2, v2 = self.qkv_einsum("BTD,SNDH->SBTNH", x)
            mixed = q + q2 + jnp.repeat(k + v, heads // kv_heads, axis=2) + k2 + v2
            return self.attn_vec_einsum("BTNH,NHD->BTD", mixed)

    class FeedForward(nn.Module):
        @nn.compact
        def __call__(self, x):
            gating = Einsum((2, d, ff), weight_name="gating_einsum")
            nn.share_scope(self, gating)
            gate = gating("...F,NFH->...NH", x)
            linear = Einsum((ff, d), weight_name="linear")
            nn.share_scope(self, linear)
            return linear("...H,HF->...F", nn.gelu(gate[..., 0, :]) * gate[..., 1, :])

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = Attention(name="attn")(x) + FeedForward(name="mlp")(x)
            up = StoredEinsum((2, d, ff), (2, 1, 1, ff), "...td,cdD->c...tD", name="ffw_up")(x)
            return nn.Dense(d, name="ffw_down")(up[0] * up[1])

    return Block(), jnp.ones((1, 3, d)), (heads, kv_heads, d, hd, ff)


def test_einsum_modules_get_their_weights_fans_from_their_equations() -> None:
    """An einsum module's weight is read from its equation, recorded from the call (gemma) or
    its ``eqn`` (recurrentgemma): q and the attention output per projection; the packed kv, qkv,
    gate/up weights with their whole outputs, named in the packed-projection warning (by name, or
    by an output that leads with the stack); before, every one was left untouched."""
    model, x, (heads, kv_heads, d, hd, ff) = _gemma_like()
    variables = model.init(jax.random.key(0), x)
    glorot = presets.get("glorot_uniform")
    kw = {"dry_run": True, "module": model, "example_inputs": (x,)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, report = isj.reinit(variables, glorot, jax.random.key(1), **kw)
    fans = {r.name.removeprefix("params/"): (r.fan_in, r.fan_out) for r in report if r.fan_in is not None}
    assert fans == {
        "attn/q_einsum/w": (d, heads * hd),
        "attn/attn_vec_einsum/w": (heads * hd, d),
        "attn/kv_einsum/w": (d, 2 * kv_heads * hd),  # whole output: K and V (warned)
        "attn/qkv_einsum/w": (d, 3 * heads * hd),  # whole output: Q, K and V (warned)
        "mlp/gating_einsum": (d, 2 * ff),  # whole output: gate and up (warned)
        "mlp/linear": (ff, d),
        "ffw_up/w": (d, 2 * ff),  # whole output: two branches (warned)
        "ffw_down/kernel": (ff, d),
    }
    assert report["params/ffw_up/b"].reason == "default: biases -> zeros"
    (packed,) = [str(w.message) for w in caught if "packed projections" in str(w.message)]
    for name in ("attn/kv_einsum/w", "attn/qkv_einsum/w", "mlp/gating_einsum", "ffw_up/w"):
        assert f"'params/{name}'" in packed, packed
    assert "q_einsum" not in packed and "attn_vec" not in packed and "mlp/linear" not in packed
    assert not [w for w in caught if "untouched" in str(w.message)]
    per = initscale.Rule(glorot, layout=initscale.Layout(2, (0, 1, 3), out_groups=3))  # (S, N, D, H)
    _, report = isj.reinit(variables, {"*qkv_einsum/w": per}, jax.random.key(1), **kw)
    assert (report["params/attn/qkv_einsum/w"].fan_in, report["params/attn/qkv_einsum/w"].fan_out) == (d, heads * hd)


@pytest.mark.parametrize(("kernel", "stride"), [(3, 1), (2, 2), (4, 2), (3, 2)])
def test_a_strided_transposed_conv_counts_the_taps_an_output_receives(kernel: int, stride: int) -> None:
    """As for torch (tests/test_torch_reinit.py): with every weight and input at one, an interior
    output of a linen ConvTranspose is its tap count; their mean over whole stride periods is the
    forward fan_in, in · (kernel / stride)², which the report must give."""
    nn = pytest.importorskip("flax.linen")
    model = nn.ConvTranspose(6, (kernel, kernel), strides=(stride, stride), use_bias=False, padding="VALID")
    x = jnp.ones((1, 12, 12, 8))
    variables = model.init(jax.random.key(0), x)
    _, report = isj.reinit(variables, HE, jax.random.key(1), dry_run=True, module=model)
    ones = jax.tree_util.tree_map(jnp.ones_like, variables)
    y = np.asarray(model.apply(ones, x))[0, :, :, 0]
    lo = kernel
    window = y[lo : lo + 2 * stride, lo : lo + 2 * stride]
    assert report["params/kernel"].fan_in == pytest.approx(float(window.mean()), rel=1e-12)


def test_an_unnamed_equation_is_not_read_for_one_of_several_weights() -> None:
    """A module called with one einsum equation but holding two weights of its rank, and no
    ``weight_name`` to say which it is for: neither is read (the one spec leaves both, warned by
    class), where guessing would give the other weight the equation's fans."""
    nn = pytest.importorskip("flax.linen")

    class TwoWeights(nn.Module):
        @nn.compact
        def __call__(self, eqn, x):
            w = self.param("w", nn.initializers.normal(), (2, 8, 4))
            u = self.param("u", nn.initializers.normal(), (2, 8, 4))
            return jnp.einsum(eqn, x, w) + jnp.einsum(eqn, x, u)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return TwoWeights(name="pair")("BD,NDH->BNH", x)

    model, x = Net(), jnp.ones((1, 8))
    variables = model.init(jax.random.key(0), x)
    with pytest.warns(UserWarning, match=r"untouched.*TwoWeights \(2: 'params/pair/u', 'params/pair/w'\)"):
        _, report = isj.reinit(variables, HE, jax.random.key(1), dry_run=True, module=model, example_inputs=(x,))
    assert report["params/pair/w"].layout is None and report["params/pair/u"].layout is None
