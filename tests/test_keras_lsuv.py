"""initscale.keras.lsuv on the backend this process runs (KERAS_BACKEND), checked layer by layer.

As in tests/test_torch_lsuv.py the check is deterministic: LSUV's contract is |Var(B_L) - 1| < tol
for each layer's output (before a fused activation) on the batch it used. The test recomputes each
Dense layer's pre-activation in NumPy from the final kernels, independent of the report; the
mutation test plants W / Var instead of W / sqrt(Var) and shows that this check fails.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")
isk = pytest.importorskip("initscale.adapters.keras")

import initscale  # noqa: E402
from initscale import lsuv as lsuv_core  # noqa: E402

TOL = 0.1
ACTIVATIONS = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh, "silu": lambda z: z / (1.0 + np.exp(-z))}


def _batch(shape: tuple[int, ...], seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype("float32")


def _mlp(activation: str, depth: int = 8, width: int = 64) -> keras.Model:
    return keras.Sequential(
        [keras.Input((24,))] + [keras.layers.Dense(width, activation=activation) for _ in range(depth)]
    )


def _pre_activation_variances(model: keras.Model, x: np.ndarray, activation: str) -> list[float]:
    """Each Dense layer's output before its activation, recomputed in float64 from its variables."""
    h, out = x.astype(np.float64), []
    for layer in model.layers:
        kernel, bias = (np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in (layer.kernel, layer.bias))
        z = h @ kernel + bias
        out.append(float(z.var(ddof=1)))
        h = ACTIVATIONS[activation](z)
    return out


def _assert_unit(variances: list[float]) -> None:
    off = [(i, v) for i, v in enumerate(variances) if not abs(v - 1.0) < TOL]
    assert not off, f"layers whose output variance is not 1 ± {TOL}: {off}"


def _values(model: keras.Model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_dense_layer_ends_at_unit_variance_before_its_activation(activation) -> None:
    model, x = _mlp(activation), _batch((256, 24))
    report = isk.lsuv(model, x, seed=3)
    assert [row.status for row in report.rows] == ["converged"] * 8
    assert [row.name for row in report.rows] == [layer.name for layer in model.layers]  # forward order
    variances = _pre_activation_variances(model, x, activation)
    _assert_unit(variances)
    # the report's variances are float32 forward passes of the same quantity: 1e-4 relative covers
    # float32 rounding of 256 x 64 sums (~ sqrt(64) * 6e-8 per value, averaged)
    assert [row.variance_after for row in report.rows] == pytest.approx(variances, rel=1e-4)
    assert model.layers[0].activation is keras.activations.get(activation)  # the fused activation is put back


def test_attention_projections_and_convolutions_are_rescaled_and_recurrent_skipped() -> None:
    inputs = keras.Input((10, 16))
    h = keras.layers.MultiHeadAttention(4, 8)(inputs, inputs)
    h = keras.layers.Conv1D(8, 3)(h)
    outputs = keras.layers.LSTM(8)(h)
    model = keras.Model(inputs, outputs)
    report = isk.lsuv(model, _batch((64, 10, 16), seed=1, scale=1.0), seed=0)
    status = {row.layer: row.status for row in report.rows}
    assert status["EinsumDense"] == "converged" and status["Conv1D"] == "converged"
    recurrent = [row for row in report.rows if row.layer == "LSTMCell"]
    assert all(row.status.startswith("skipped") for row in recurrent)
    assert len([row for row in report.rows if row.layer == "EinsumDense"]) == 4  # q, k, v, output


def test_a_dead_layer_is_an_error_and_changes_nothing() -> None:
    model = _mlp("relu", depth=2)
    model(_batch((4, 24)))
    before = _values(model)
    dead = r"layer 'dense.*' \(Dense\) has variance 0.0.*dead layer.*Nothing was changed"
    with pytest.raises(ValueError, match=dead):
        isk.lsuv(model, np.zeros((32, 24), "float32"), seed=0)
    for old, new in zip(before, _values(model), strict=True):
        np.testing.assert_array_equal(old, new)


def test_batchnorm_moving_statistics_stay_as_they_were() -> None:
    model = keras.Sequential(
        [keras.Input((24,)), keras.layers.Dense(32), keras.layers.BatchNormalization(), keras.layers.Dense(8)]
    )
    x = _batch((128, 24))
    model(x)
    moving = [np.array(keras.ops.convert_to_numpy(v)) for v in model.non_trainable_variables]
    report = isk.lsuv(model, x, seed=0, training=True)
    assert [row.status for row in report.rows] == ["converged", "converged"]
    for old, v in zip(moving, model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(v))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tol": 0.0}, r"`tol` of lsuv must be a number in \(0, 1\).*tol=0.0"),
        ({"max_iters": 0}, r"`max_iters` of lsuv must be an integer >= 1.*max_iters=0"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        isk.lsuv(_mlp("relu", depth=1), _batch((8, 24)), **kwargs)


def test_a_bad_batch_or_model_names_the_argument() -> None:
    with pytest.raises(TypeError, match=r"`batch` of lsuv must be an array.*Received: NoneType"):
        isk.lsuv(_mlp("relu", depth=1), None)
    with pytest.raises(TypeError, match=r"`model` of lsuv must be a Keras layer or model.*Received: int"):
        isk.lsuv(3, _batch((8, 24)))


def test_a_rule_layout_reaches_lsuv() -> None:
    model = _mlp("tanh", depth=2)
    rules = {"Dense": initscale.Rule(initscale.presets.get("orthogonal"))}
    report = isk.lsuv(model, _batch((128, 24)), rules, seed=0)
    assert [row.status for row in report.rows] == ["converged"] * 2


def test_planted_bug_divide_by_variance_is_caught(monkeypatch) -> None:
    """Mutation: W / Var instead of W / sqrt(Var) never settles; the per-layer check fails on it."""
    monkeypatch.setattr(
        lsuv_core, "math", type("M", (), {"sqrt": staticmethod(lambda v: v), "isfinite": staticmethod(math.isfinite)})
    )
    model, x = _mlp("silu"), _batch((256, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        isk.lsuv(model, x, seed=3)
    with pytest.raises(AssertionError, match="output variance is not 1"):
        _assert_unit(_pre_activation_variances(model, x, "silu"))


def test_the_docstring_example_runs() -> None:
    import doctest

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(isk.lsuv, "lsuv", globs={}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


# --- low precision: bfloat16 and float16 models --------------------------------------------------

UNIT = {"bfloat16": 2.0**-8, "float16": 2.0**-11}  # unit roundoff u of round-to-nearest


def _low_precision_problems(model, x, dtype: str, kernel_factor: float = 1.0) -> list[str]:
    """Every kernel still in ``dtype`` and finite; each Dense's pre-activation on a fresh pass (in
    ``dtype``) at variance 1 ± TOL (LSUV's rule), and within the rounding bound of the float64 product of
    the values it used: the forward accumulates in float32 and rounds each output once, so
    |z_model - z| <= u |z| + gamma_n (|x| @ |w| + |b|), gamma_n = n 2^-24 / (1 - n 2^-24) (Higham,
    Accuracy and Stability, 3.1), and the RMS over the outputs obeys it too (triangle inequality).
    ``kernel_factor`` plants a kernel that is not the one the forward used."""
    seen, problems = {}, []
    originals = [layer.activation for layer in model.layers]
    for layer in model.layers:
        call, fused = layer.call, layer.activation

        def spy_call(*args, _layer=layer, _call=call, **kwargs):
            seen.setdefault(id(_layer), {})["x"] = keras.ops.convert_to_numpy(keras.ops.cast(args[0], dtype))
            return _call(*args, **kwargs)

        def spy_act(z, _layer=layer, _fused=fused):
            seen.setdefault(id(_layer), {})["z"] = keras.ops.convert_to_numpy(z)
            return _fused(z)

        layer.call, layer.activation = spy_call, spy_act
    try:
        model(x)
    finally:
        for layer, fused in zip(model.layers, originals, strict=True):
            del layer.call
            layer.activation = fused
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))
    for layer in model.layers:
        kernel = layer.kernel
        w = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(kernel, "float32")), np.float64)
        b = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(layer.bias, "float32")), np.float64)
        if keras.backend.standardize_dtype(kernel.dtype) != dtype or not np.all(np.isfinite(w)):
            problems.append(f"{layer.name}: kernel {kernel.dtype}, finite {np.all(np.isfinite(w))}")
        x_in = np.asarray(seen[id(layer)]["x"].astype(np.float32), np.float64)
        z_model = np.asarray(seen[id(layer)]["z"].astype(np.float32), np.float64)
        if not abs(float(z_model.var(ddof=1)) - 1.0) < TOL:
            problems.append(f"{layer.name}: output variance {float(z_model.var(ddof=1)):.4g} in {dtype}")
        n = x_in.shape[-1]
        gamma = n * 2.0**-24 / (1 - n * 2.0**-24)
        z = x_in @ (w * kernel_factor) + b
        bound = UNIT[dtype] * rms(z) + gamma * rms(np.abs(x_in) @ np.abs(w * kernel_factor) + np.abs(b))
        if not rms(z_model - z) <= bound:
            problems.append(f"{layer.name}: |z_{dtype} - z_float64| rms {rms(z_model - z):.3g} > bound {bound:.3g}")
    return problems


def _low_precision_run(dtype: str):
    model = keras.Sequential(
        [keras.Input((24,))] + [keras.layers.Dense(48, activation="silu", dtype=dtype) for _ in range(4)]
    )
    x = _batch((256, 24))
    return model, x, isk.lsuv(model, x, seed=0)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_models_converge_in_their_own_dtype(dtype: str) -> None:
    model, x, report = _low_precision_run(dtype)
    assert [row.status for row in report.rows] == ["converged"] * 4
    problems = _low_precision_problems(model, x, dtype)
    assert not problems, "\n".join(problems)


def test_planted_bug_kernel_not_the_one_used_is_caught() -> None:
    """Mutation: a kernel 2% off what the forward used exceeds the bfloat16 rounding bound (u = 0.4%)."""
    model, x, _ = _low_precision_run("bfloat16")
    problems = _low_precision_problems(model, x, "bfloat16", kernel_factor=1.02)
    assert any("> bound" in p for p in problems), problems
