"""``initscale.adapters.tf_keras.check`` and ``.lsuv`` on real tf_keras models (a small CNN and a
small transformer-like model built from tf_keras layers), through the Keras implementation they
share with Keras 3 (adapters/_keras_check.py, adapters/_keras_lsuv.py).

check: a fresh model gives no flag against the rules that say what tf_keras draws, and a planted
wrong init (a kernel built with the wrong initializer, the classic std=0.02, a zeroed norm) is
flagged by name; the false-alarm rate of the chance flags is the core's (initscale.check.ALPHA,
family-wise per model), and the seeds are fixed.

lsuv: LSUV's contract is |Var(z) - 1| < tol for each layer's output z (before a fused activation)
on its batch. A fresh forward pass captures each rescaled layer's float32 input x and output z32;
z is recomputed from x and the final weights in float64 (independent of the report), and the gap
between Var(z32) and Var(z) is bounded by float32 rounding, derived in :func:`_rounding_bound`.
Mutations: W / Var instead of W / sqrt(Var) (never settles) fails the unit check; a kernel 1% off
the one the forward used fails the rounding bound.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")
tf = pytest.importorskip("tensorflow")
istk = pytest.importorskip("initscale.adapters.tf_keras")

import initscale  # noqa: E402
from initscale import lsuv as lsuv_core  # noqa: E402
from initscale import presets  # noqa: E402

TOL = 0.1  # LSUV's own (Mishkin & Matas)
U32 = 2.0**-24  # unit roundoff of float32, round to nearest
GLOROT = presets.get("glorot_uniform")
# What tf_keras draws by default: glorot_uniform kernels (an EinsumDense kernel, so the attention
# projections, read with Keras 2's own fan rule: tf_keras hands its initializer no axes), zero biases,
# U(-0.05, 0.05) embeddings, ones/zeros for norms (the defaults of the rules).
CNN_RULES = {"Dense": GLOROT, "Conv2D": GLOROT}
TRANSFORMER_RULES = {
    "Dense": GLOROT,
    "EinsumDense": initscale.Rule(GLOROT, layout="keras:native=true"),
    "Embedding": initscale.Uniform(-0.05, 0.05),
}


def _cnn(fc_initializer: str = "glorot_uniform") -> tf_keras.Model:
    """Two convolutions (one with a fused ReLU) around a BatchNorm, a tanh Dense, a LayerNorm, a head."""
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x)
    x = tf_keras.layers.Flatten()(x)
    x = tf_keras.layers.Dense(64, activation="tanh", name="fc", kernel_initializer=fc_initializer)(x)
    x = tf_keras.layers.LayerNormalization(name="ln")(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(10, name="head")(x))


def _transformer() -> tf_keras.Model:
    """Embedding, self-attention with a residual and a norm, a GELU feed-forward, pooled head."""
    tf_keras.utils.set_random_seed(0)
    tokens = tf_keras.Input((12,), dtype="int32")
    x = tf_keras.layers.Embedding(100, 32, name="emb")(tokens)
    h = tf_keras.layers.MultiHeadAttention(4, 8, name="mha")(x, x)
    x = tf_keras.layers.LayerNormalization(name="ln1")(x + h)
    h = tf_keras.layers.Dense(64, activation="gelu", name="ff1")(x)
    h = tf_keras.layers.Dense(32, name="ff2")(h)
    x = tf_keras.layers.LayerNormalization(name="ln2")(x + h)
    x = tf_keras.layers.GlobalAveragePooling1D()(x)
    return tf_keras.Model(tokens, tf_keras.layers.Dense(5, name="head")(x))


def _tokens(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 100, (n, 12)).astype("int32")


def _images(n: int = 64, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 8, 8, 3)) * 2.0).astype("float32")


def _variable(model: tf_keras.Model, path: str):
    return next(v for v in model.variables if v.name.rsplit(":", 1)[0] == path)


# --- check ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "rules"), [(_cnn, CNN_RULES), (_transformer, TRANSFORMER_RULES)], ids=["cnn", "tr"])
def test_a_fresh_model_gives_no_flag(build, rules) -> None:
    model = build()
    if build is _cnn:  # without rules (the transformer's attention biases, zeros of 2 axes, are all_zero then)
        assert istk.check(model).flags == {}
    report = istk.check(model, rules=rules)
    assert report.flags == {}, str(report)
    kernels = [row for row in report.rows if row.name.endswith("kernel")]
    assert kernels and all(row.expected_std is not None for row in kernels), str(report)


def _zero(v: np.ndarray) -> np.ndarray:
    return np.zeros_like(v)


def _std_002(v: np.ndarray) -> np.ndarray:  # the classic N(0, 0.02²), where glorot draws std 0.072 here
    return np.random.default_rng(1).normal(0.0, 0.02, v.shape).astype(v.dtype)


def _one_nan(v: np.ndarray) -> np.ndarray:
    return np.where(np.arange(v.size).reshape(v.shape) == 7, np.nan, v)


@pytest.mark.parametrize(
    ("build", "path", "bug", "flag"),
    [
        ((_transformer, TRANSFORMER_RULES), "mha/query/kernel", _std_002, "std_off"),
        ((_transformer, TRANSFORMER_RULES), "ln1/gamma", _zero, "norm_scale_not_one"),
        ((_transformer, TRANSFORMER_RULES), "ff1/kernel", _one_nan, "non_finite"),
        ((_cnn, CNN_RULES), "bn/gamma", _zero, "norm_scale_not_one"),
        ((_cnn, CNN_RULES), "conv/kernel", _zero, "all_zero"),
    ],
    ids=["query-std-0.02", "zeroed-layernorm", "nan", "zeroed-batchnorm", "all-zero-conv"],
)
def test_a_planted_bug_is_flagged_by_name(build, path, bug, flag) -> None:
    model = build[0]()
    variable = _variable(model, path)
    variable.assign(bug(variable.numpy()))
    flags = istk.check(model, rules=build[1]).flags
    assert set(flags) == {path} and flag in flags[path], flags


def test_a_kernel_built_with_the_wrong_initializer_is_flagged() -> None:
    """fc was built with he_normal where the rules say glorot_uniform: std √(2/576) vs √(2/640),
    5.4% off, while the std tolerance of its n = 36864 values is z·√((κ-1)/(4n)) = 4.6 · 0.0023 = 1.1%
    (κ = 1.8 of the expected uniform; z = Φ⁻¹(1 - α/(2T)) ≈ 4.6 at α = ALPHA = 1e-4 over the
    model's T ≈ 24 tests, the core's Bonferroni level)."""
    model = _cnn(fc_initializer="he_normal")
    flags = istk.check(model, rules=CNN_RULES).flags
    assert set(flags) == {"fc/kernel"} and "std_off" in flags["fc/kernel"], flags
    assert istk.check(_cnn(), rules=CNN_RULES).flags == {}  # the same model built right: clean


def test_check_frozen_layers_and_buffers() -> None:
    model = _cnn()
    model.get_layer("fc").trainable = False
    report = istk.check(model, rules=CNN_RULES, include_buffers=True)
    assert report.flags == {}, str(report)
    assert "bn/moving_mean" in {row.name for row in report.rows}
    assert istk.check(model, rules=CNN_RULES, include_frozen=False)["fc/kernel"].expected_std is None


def test_check_bad_input_names_the_argument() -> None:
    with pytest.raises(TypeError, match=r"`model` of check must be a tf_keras layer or model\. Received: int"):
        istk.check(3)
    with pytest.raises(ValueError, match=r"'sequential.*' is not built.*build it first"):
        istk.check(tf_keras.Sequential([tf_keras.layers.Dense(4)]))
    with pytest.raises(ValueError, match=r"alpha.*Received: alpha=2"):
        istk.check(_cnn(), alpha=2)


def _run_docstring(fn) -> None:
    import doctest

    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(fn, fn.__name__, globs={}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


def test_the_docstring_examples_run() -> None:
    _run_docstring(istk.check)
    _run_docstring(istk.lsuv)


# --- lsuv ----------------------------------------------------------------------------------------------


def _forward(layer, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """The layer's pre-activation in float64 from its input ``x`` and weights (independent of it)."""
    kind = type(layer).__name__
    if kind == "Dense":
        z = x @ w
    elif kind == "EinsumDense":
        z = np.einsum(layer.equation, x, w)
    elif kind == "Conv2D":
        z = tf.nn.convolution(
            tf.constant(x), tf.constant(w), strides=layer.strides, padding=layer.padding.upper(),
            dilations=layer.dilation_rate,
        ).numpy()  # fmt: skip
    else:  # pragma: no cover - the models here have no other
        raise AssertionError(kind)
    return z if b is None else z + b


def _rounding_bound(layer, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, z: np.ndarray) -> float:
    """How far Var(z32) can be from Var(z): the float32 forward accumulates a dot product of n terms
    and the bias, so |z32 - z| <= u|z| + γ_{n+1}(|x|·|w| + |b|) per value, γ_k = k·u/(1 - k·u)
    (Higham, Accuracy and Stability of Numerical Algorithms, (3.5)), u = 2^-24. With δ = z32 - z,
    Var(z + δ) - Var(z) = 2 Cov(z, δ) + Var(δ), |Cov| <= sd(z)·sd(δ) (Cauchy-Schwarz), and
    sd(δ) <= s = √(N/(N-1))·rms(δ) for the unbiased variance of N values: |ΔVar| <= 2·sd(z)·s + s²."""
    n = int(np.prod(w.shape)) // z.shape[-1] if type(layer).__name__ != "EinsumDense" else None
    if n is None:  # EinsumDense: the summed axes are the kernel's axes that the output lacks
        ins, out = layer.equation.split("->")
        kernel_axes = ins.split(",")[1]
        n = int(np.prod([d for a, d in zip(kernel_axes, w.shape, strict=True) if a not in out]))
    gamma = (n + 1) * U32 / (1 - (n + 1) * U32)
    absolute = _forward(layer, np.abs(x), np.abs(w), None if b is None else np.abs(b))
    delta = U32 * np.abs(z) + gamma * absolute
    s = math.sqrt(z.size / (z.size - 1)) * float(np.sqrt(np.mean(np.square(delta))))
    return 2.0 * float(z.std(ddof=1)) * s + s * s


def _fresh_pass(model, batch, layers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each layer's float32 input and output (before its fused activation) on one more forward pass."""
    seen: dict[str, dict[str, np.ndarray]] = {}
    originals = []
    for layer in layers:
        call, fused = layer.call, getattr(layer, "activation", None)

        def spy_call(*args, _name=layer.name, _call=call, **kwargs):
            out = _call(*args, **kwargs)
            seen.setdefault(_name, {}).setdefault("x", args[0].numpy())
            seen[_name].setdefault("z", out.numpy())  # a linear layer: its output
            return out

        def spy_act(z, _name=layer.name, _fused=fused):
            seen.setdefault(_name, {})["z"] = z.numpy()
            return _fused(z)

        originals.append((layer, fused))
        layer.call = spy_call
        if fused is not None and fused is not tf_keras.activations.linear:
            layer.activation = spy_act
    try:
        model(batch, training=False)
    finally:
        for layer, fused in originals:
            del layer.call
            if fused is not None:
                layer.activation = fused
    return {name: (v["x"], v["z"]) for name, v in seen.items()}


def _problems(model, batch, report, kernel_factor: float = 1.0) -> list[str]:
    """LSUV's contract on a fresh pass, checked against a float64 recomputation (see the module doc)."""
    layers = {layer.name: layer for layer in model._flatten_layers(include_self=False, recursive=True)}
    rescaled = [row for row in report.rows if row.status == "converged" or row.iterations]
    captured = _fresh_pass(model, batch, [layers[row.name] for row in rescaled])
    problems = []
    for row in rescaled:
        layer = layers[row.name]
        x32, z32 = captured[row.name]
        w = layer.kernel.numpy().astype(np.float64) * kernel_factor
        bias = getattr(layer, "bias", None)
        b = None if bias is None else bias.numpy().astype(np.float64)
        z = _forward(layer, x32.astype(np.float64), w, b)
        bound = _rounding_bound(layer, x32.astype(np.float64), w, b, z)
        var32, var64 = float(z32.astype(np.float64).var(ddof=1)), float(z.var(ddof=1))
        if not abs(var32 - var64) <= bound:
            problems.append(f"{row.name}: |Var(z32) - Var(z64)| = {abs(var32 - var64):.3g} > bound {bound:.3g}")
        if not abs(var32 - 1.0) < TOL:
            problems.append(f"{row.name}: output variance is not 1 ± {TOL}: {var32:.4g}")
        if not abs(row.variance_after - var64) <= bound:
            problems.append(f"{row.name}: the report's {row.variance_after:.6g} vs recomputed {var64:.6g}")
    return problems


def test_lsuv_cnn_every_layer_reaches_unit_variance() -> None:
    model, x = _cnn(), _images()
    report = istk.lsuv(model, x, seed=3)
    assert [(row.name, row.status) for row in report.rows] == [
        (name, "converged") for name in ("conv", "conv2", "fc", "head")
    ]  # forward order
    assert not _problems(model, x, report), _problems(model, x, report)
    assert model.get_layer("conv").activation is tf_keras.activations.get("relu")  # put back
    assert model.get_layer("fc").activation is tf_keras.activations.get("tanh")


def test_lsuv_transformer_every_projection_reaches_unit_variance() -> None:
    model, tokens = _transformer(), _tokens()
    report = istk.lsuv(model, tokens, seed=0)
    names = [row.name for row in report.rows]
    assert names == ["query", "key", "value", "attention_output", "ff1", "ff2", "head"], names
    assert all(row.status == "converged" for row in report.rows), str(report)
    assert {row.layer for row in report.rows} == {"EinsumDense", "Dense"}
    assert not _problems(model, tokens, report), _problems(model, tokens, report)
    assert report.init.touched and report["query"].weight == "mha/query/kernel"


def test_lsuv_keeps_moving_statistics_and_is_reproducible() -> None:
    model, x = _cnn(), _images()
    model(x, training=True)
    moving = [v.numpy().copy() for v in model.non_trainable_variables]
    report = istk.lsuv(model, x, seed=5, training=True)
    assert all(row.status == "converged" for row in report.rows)
    for old, v in zip(moving, model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(old, v.numpy())
    again = _cnn()
    istk.lsuv(again, x, seed=5, training=True)
    for a, b in zip(model.trainable_variables, again.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # a seeded reinit: the same start, the same result


def test_lsuv_a_dead_layer_is_an_error_and_changes_nothing() -> None:
    model = _cnn()
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(ValueError, match=r"layer 'conv' \(Conv2D\) has variance 0\.0.*dead layer.*Nothing was changed"):
        istk.lsuv(model, np.zeros((8, 8, 8, 3), "float32"), seed=0)
    for old, v in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(old, v.numpy())


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((None,), {}, TypeError, r"`batch` of lsuv must be an array, a tuple/list.*Received: NoneType"),
        (((),), {}, TypeError, r"`batch` of lsuv is an empty sequence"),
        ((), {"tol": 0.0}, ValueError, r"`tol` of lsuv must be a number in \(0, 1\).*Received: tol=0\.0"),
        ((), {"max_iters": 0}, ValueError, r"`max_iters` of lsuv must be an integer >= 1.*Received: max_iters=0"),
        ((), {"seed": "0"}, TypeError, r"`seed` must be an int or None\. Received: seed='0'"),
    ],
    ids=["batch-none", "batch-empty", "tol", "max-iters", "seed"],
)
def test_lsuv_bad_input_names_the_argument(args, kwargs, error, match) -> None:
    model = _cnn()
    before = [v.numpy().copy() for v in model.variables]
    with pytest.raises(error, match=match):
        istk.lsuv(model, *(args or (_images(8),)), **kwargs)
    for old, v in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(old, v.numpy())
    with pytest.raises(TypeError, match=r"`model` of lsuv must be a tf_keras layer or model\. Received: str"):
        istk.lsuv("model", _images(8))


def test_planted_bug_divide_by_variance_is_caught(monkeypatch) -> None:
    """Mutation: W / Var instead of W / sqrt(Var) never settles; the unit check fails on it."""
    monkeypatch.setattr(
        lsuv_core, "math", type("M", (), {"sqrt": staticmethod(lambda v: v), "isfinite": staticmethod(math.isfinite)})
    )
    model, x = _cnn(), _images()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = istk.lsuv(model, x, seed=3)
    assert any("output variance is not 1" in p for p in _problems(model, x, report))


def test_planted_bug_kernel_not_the_one_used_is_caught() -> None:
    """Mutation: a recomputation from a kernel 1% off the one the forward used exceeds the float32
    rounding bound (relative ~1e-5 here): the bound is tight enough to tell the weights apart."""
    model, x = _cnn(), _images()
    report = istk.lsuv(model, x, seed=3)
    assert any("> bound" in p for p in _problems(model, x, report, kernel_factor=1.01))


def test_a_layer_that_does_not_converge_warns_at_the_caller(monkeypatch) -> None:
    """The not-converged warning names the layers and points at the caller's line, past the binding."""
    monkeypatch.setattr(
        lsuv_core, "math", type("M", (), {"sqrt": staticmethod(lambda v: v), "isfinite": staticmethod(math.isfinite)})
    )
    with pytest.warns(UserWarning, match=r"did not reach output variance 1 ± 0.1 in 1 rescalings: conv") as rec:
        istk.lsuv(_cnn(), _images(), seed=3, max_iters=1)
    assert [w.filename for w in rec if "did not reach" in str(w.message)] == [__file__]
