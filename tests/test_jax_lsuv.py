"""initscale.jax.lsuv on Flax linen, checked layer by layer.

As in tests/test_torch_lsuv.py the check is deterministic: LSUV's contract is |Var(B_L) - 1| < tol
for each layer's output on the batch it used. The test recomputes each Dense pre-activation in
NumPy from the returned kernels (independent of the report and of linen's intermediates); the
mutation test plants W / Var instead of W / sqrt(Var) and shows that this check fails.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nn = pytest.importorskip("flax.linen")

from initscale import lsuv as lsuv_core  # noqa: E402
from initscale.adapters import jax as isj  # noqa: E402

TOL = 0.1
ACTIVATIONS = {
    "relu": (nn.relu, lambda z: np.maximum(z, 0.0)),
    "tanh": (nn.tanh, np.tanh),
    "silu": (nn.silu, lambda z: z / (1.0 + np.exp(-z))),
}


class _MLP(nn.Module):
    activation: str
    depth: int = 8

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = ACTIVATIONS[self.activation][0](nn.Dense(48, name=f"fc{i}")(x))
        return x


def _batch(shape: tuple[int, ...], seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype("float32")


def _pre_activation_variances(params, x: np.ndarray, activation: str, depth: int = 8) -> list[float]:
    h, out = x.astype(np.float64), []
    for i in range(depth):
        layer = params["params"][f"fc{i}"]
        z = h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        out.append(float(z.var(ddof=1)))
        h = ACTIVATIONS[activation][1](z)
    return out


def _assert_unit(variances: list[float]) -> None:
    off = [(i, v) for i, v in enumerate(variances) if not abs(v - 1.0) < TOL]
    assert not off, f"layers whose output variance is not 1 ± {TOL}: {off}"


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_dense_layer_ends_at_unit_variance(activation) -> None:
    model, x = _MLP(activation), _batch((256, 24))
    variables = model.init(jax.random.key(0), x)
    new, report = isj.lsuv(variables, x, module=model, key=jax.random.key(1))
    assert [row.name for row in report.rows] == [f"fc{i}" for i in range(8)]  # call order
    assert [row.status for row in report.rows] == ["converged"] * 8
    variances = _pre_activation_variances(new, x, activation)
    _assert_unit(variances)
    # float32 forward passes vs float64 NumPy of the same sums: 1e-4 relative covers the rounding
    assert [row.variance_after for row in report.rows] == pytest.approx(variances, rel=1e-4)
    assert report.init.touched  # the starting init's report


def test_the_input_variables_are_not_mutated() -> None:
    model, x = _MLP("tanh", depth=2), _batch((64, 24))
    variables = model.init(jax.random.key(0), x)
    before = jax.tree_util.tree_map(np.array, variables)
    isj.lsuv(variables, x, module=model, key=jax.random.key(1))
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)


def test_attention_and_grouped_conv_are_rescaled() -> None:
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.MultiHeadDotProductAttention(4)(x)
            return nn.Conv(8, (3,), feature_group_count=2)(x)

    x = _batch((32, 8, 16), scale=1.0)
    model = Block()
    variables = model.init(jax.random.key(0), x)
    new, report = isj.lsuv(variables, x, module=model, key=jax.random.key(1))
    assert {row.layer for row in report.rows} == {"DenseGeneral", "Conv"}
    assert all(row.status == "converged" for row in report.rows) and len(report.rows) == 5
    _, state = model.apply(new, x, capture_intermediates=True, mutable=["intermediates"])
    conv = np.asarray(state["intermediates"]["Conv_0"]["__call__"][0], np.float64)
    assert abs(conv.var(ddof=1) - 1.0) < TOL


def test_a_dead_layer_is_an_error() -> None:
    model = _MLP("relu", depth=2)
    x = np.zeros((32, 24), "float32")
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"layer 'fc0' \(Dense\) has variance 0.0.*dead layer"):
        isj.lsuv(variables, x, module=model, key=jax.random.key(1))


def test_bad_arguments_name_themselves() -> None:
    model, x = _MLP("relu", depth=1), _batch((8, 24))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"`tol` of lsuv must be a number in \(0, 1\).*tol=2"):
        isj.lsuv(variables, x, module=model, key=jax.random.key(1), tol=2)
    with pytest.raises(TypeError, match=r"`module` of lsuv must be the flax.linen.Module.*Received: str"):
        isj.lsuv(variables, x, module="model", key=jax.random.key(1))
    with pytest.raises(TypeError, match=r"`params` of lsuv must be the linen variables dict.*Received: list"):
        isj.lsuv([1], x, module=model, key=jax.random.key(1))


def test_planted_bug_divide_by_variance_is_caught(monkeypatch) -> None:
    """Mutation: W / Var instead of W / sqrt(Var) never settles; the per-layer check fails on it."""
    monkeypatch.setattr(
        lsuv_core, "math", type("M", (), {"sqrt": staticmethod(lambda v: v), "isfinite": staticmethod(math.isfinite)})
    )
    model, x = _MLP("silu"), _batch((256, 24))
    variables = model.init(jax.random.key(0), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new, _ = isj.lsuv(variables, x, module=model, key=jax.random.key(1))
    with pytest.raises(AssertionError, match="output variance is not 1"):
        _assert_unit(_pre_activation_variances(new, x, "silu"))


def test_the_docstring_example_runs() -> None:
    import doctest

    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(isj.lsuv, "lsuv", globs={}):  # through the deprecation wrapper
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


# --- the contract's order, and the old one for one deprecation cycle ---------------------------------


def test_the_signature_is_the_contracts() -> None:
    import inspect

    params = inspect.signature(isj.lsuv).parameters
    assert list(params) == [
        "params", "batch", "rules", "module", "key", "tol", "max_iters", "apply_kwargs", "reinit_kwargs",
    ]  # fmt: skip
    assert [params[n].kind for n in ("module", "key")] == [inspect.Parameter.KEYWORD_ONLY] * 2


NEW_CALL = r"initscale\.jax\.lsuv\(variables, batch, rules=None, \*, module=\.\.\., key=\.\.\.\)"


@pytest.mark.parametrize(
    "old",
    [
        lambda v, m, x, k, r: isj.lsuv(v, m, x, k),
        lambda v, m, x, k, r: isj.lsuv(v, m, x, k, r),
        lambda v, m, x, k, r: isj.lsuv(v, m, x, key=k, rules=r),  # 3 positionals: the module tells
        lambda v, m, x, k, r: isj.lsuv(v, m, batch=x, key=k),
    ],
    ids=["four", "five", "three-and-key", "two-and-keywords"],
)
def test_the_old_order_still_works_with_a_deprecation_warning(old) -> None:
    from initscale import presets

    model, x = _MLP("tanh", depth=2), _batch((64, 24))
    variables, key, rules = model.init(jax.random.key(0), x), jax.random.key(1), presets.get("orthogonal")
    with pytest.warns(
        DeprecationWarning, match=r"passing module\b.*positionally is deprecated.*0\.3; call " + NEW_CALL
    ) as rec:
        got, report = old(variables, model, x, key, rules)
    assert rec[0].filename == __file__  # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new order: no warning
        want, _ = isj.lsuv(variables, x, rules, module=model, key=key)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [row.status for row in report.rows] == ["converged"] * 2


def test_old_and_new_arguments_clash_or_are_missing_by_name() -> None:
    model, x = _MLP("tanh", depth=1), _batch((16, 24))
    variables, key = model.init(jax.random.key(0), x), jax.random.key(1)
    with pytest.raises(TypeError, match="multiple values for 'key'"):
        isj.lsuv(variables, model, x, key, key=key)
    with pytest.raises(TypeError, match="missing 2 required keyword-only arguments: 'module' and 'key'"):
        isj.lsuv(variables, x)


def test_a_layer_that_does_not_converge_warns_at_the_caller(monkeypatch) -> None:
    """The not-converged warning points past the deprecation wrapper, at the caller's line."""
    monkeypatch.setattr(
        lsuv_core, "math", type("M", (), {"sqrt": staticmethod(lambda v: v), "isfinite": staticmethod(math.isfinite)})
    )
    model, x = _MLP("silu", depth=2), _batch((64, 24))
    variables = model.init(jax.random.key(0), x)
    with pytest.warns(UserWarning, match="did not reach output variance 1") as rec:
        isj.lsuv(variables, x, module=model, key=jax.random.key(1), max_iters=1)
    assert [w.filename for w in rec if "did not reach" in str(w.message)] == [__file__]


# --- low precision: bfloat16 and float16 models --------------------------------------------------

jnp = jax.numpy
UNIT = {"bfloat16": 2.0**-8, "float16": 2.0**-11}  # unit roundoff u of round-to-nearest


def _rounding_bound(x, w, b, z_model, u: float) -> tuple[float, float]:
    """(RMS of z_model - z, its bound) for z = x @ w + b in float64 from the values the layer used. The
    forward in bf16/f16 accumulates in float32 and rounds each output once: |z_model - z| <= u |z| +
    gamma_n (|x| @ |w| + |b|), gamma_n = n 2^-24 / (1 - n 2^-24) (Higham, Accuracy and Stability, 3.1);
    the RMS over the outputs obeys the same bound by the triangle inequality."""
    n = x.shape[-1]
    gamma = n * 2.0**-24 / (1 - n * 2.0**-24)
    z = x @ w + b
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))
    return rms(z_model - z), u * rms(z) + gamma * rms(np.abs(x) @ np.abs(w) + np.abs(b))


def _low_precision_problems(module, new, x, dtype: str, kernel_factor: float = 1.0) -> list[str]:
    """Every kernel still in ``dtype`` and finite; each Dense's output on a fresh apply (in ``dtype``)
    at variance 1 ± TOL (LSUV's rule); and within the rounding bound of the float64 product of the
    values it used (``kernel_factor`` plants a kernel that is not the one the forward used)."""
    problems, seen = [], {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, nn.Dense):
            seen.setdefault(
                context.module.name, (np.asarray(args[0].astype(dtype), np.float64), np.asarray(out, np.float64))
            )
        return out

    with nn.intercept_methods(interceptor):
        module.apply(new, x)
    for name, layer in new["params"].items():
        kernel = layer["kernel"]
        if str(kernel.dtype) != dtype or not np.all(np.isfinite(np.asarray(kernel, np.float64))):
            problems.append(
                f"{name}: kernel {kernel.dtype}, finite {np.all(np.isfinite(np.asarray(kernel, np.float64)))}"
            )
        x_in, z_model = seen[name]
        if not abs(float(z_model.var(ddof=1)) - 1.0) < TOL:
            problems.append(f"{name}: output variance {float(z_model.var(ddof=1)):.4g} in {dtype}")
        w = np.asarray(kernel, np.float64) * kernel_factor
        err, bound = _rounding_bound(x_in, w, np.asarray(layer["bias"], np.float64), z_model, UNIT[dtype])
        if not err <= bound:
            problems.append(f"{name}: |z_{dtype} - z_float64| rms {err:.3g} > rounding bound {bound:.3g}")
    return problems


def _low_precision_run(dtype: str):
    model = nn.Sequential(
        [m for _ in range(4) for m in (nn.Dense(48, dtype=dtype, param_dtype=dtype), nn.silu)]
        + [nn.Dense(8, dtype=dtype, param_dtype=dtype)]
    )
    x = jnp.asarray(_batch((256, 24)), dtype)
    new, report = isj.lsuv(model.init(jax.random.key(0), x), x, module=model, key=jax.random.key(1))
    return model, new, x, report


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_models_converge_in_their_own_dtype(dtype: str) -> None:
    model, new, x, report = _low_precision_run(dtype)
    assert [row.status for row in report.rows] == ["converged"] * 5  # bfloat16 outputs were once "not floating"
    problems = _low_precision_problems(model, new, x, dtype)
    assert not problems, "\n".join(problems)


def test_planted_bug_kernel_not_the_one_used_is_caught() -> None:
    """Mutation: a kernel 2% off what the forward used (a rescale not written back) exceeds the bfloat16
    rounding bound (u = 0.4%)."""
    model, new, x, _ = _low_precision_run("bfloat16")
    problems = _low_precision_problems(model, new, x, "bfloat16", kernel_factor=1.02)
    assert any("rounding bound" in p for p in problems), problems


def test_an_nnx_model_is_a_clear_error_naming_what_is_supported() -> None:
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(24, 8, rngs=nnx.Rngs(0))
    x = _batch((16, 24))
    with pytest.raises(TypeError, match=r"lsuv on JAX reads Flax linen modules only.*`module` is a flax.nnx Linear"):
        isj.lsuv(nnx.state(model), x, module=model, key=jax.random.key(1))
    with pytest.raises(TypeError, match=r"`params` is a flax.nnx State.*initscale.jax.reinit\(model, spec, key\)"):
        isj.lsuv(nnx.state(model), x, module=_MLP("relu", depth=1), key=jax.random.key(1))


class _NormedMLP(nn.Module):
    """Dense layers under linen's WeightNorm: each uses scale · v / √(Σ v² + ε) over its inputs, and its
    output is recorded as the WeightNorm's (linen's capture_intermediates does not see inside it)."""

    depth: int = 4

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = nn.tanh(nn.WeightNorm(nn.Dense(48, name=f"fc{i}"), name=f"wn{i}")(x))
        return x


def _used_kernel(params, i: int) -> np.ndarray:
    """The kernel layer i uses, in float64: scale · v / √(Σ v² + ε), the sum over its input axis."""
    v = np.asarray(params["params"][f"fc{i}"]["kernel"], np.float64)
    scale = np.asarray(params["params"][f"wn{i}"][f"fc{i}/kernel/scale"], np.float64)
    return v / np.sqrt((v * v).sum(axis=0, keepdims=True) + 1e-12) * scale


def test_weight_normed_layers_are_rescaled_through_v_and_their_scale() -> None:
    model, x = _NormedMLP(), _batch((256, 24))
    variables = model.init(jax.random.key(0), x)
    new, report = isj.lsuv(variables, x, module=model, key=jax.random.key(1))
    assert [(row.name, row.weight, row.status) for row in report.rows] == [
        (f"wn{i}", f"params/fc{i}/kernel", "converged") for i in range(4)
    ]
    h, variances = x.astype(np.float64), []
    for i in range(4):  # the pre-activations recomputed in NumPy from the kernels the layers use
        z = h @ _used_kernel(new, i) + np.asarray(new["params"][f"fc{i}"]["bias"], np.float64)
        variances.append(float(z.var(ddof=1)))
        h = np.tanh(z)
    _assert_unit(variances)
    # v and its scale were multiplied by the same factor, so the scale is still ‖v‖ and the layer uses
    # v: |used − v| <= ((n − 1)/2 + 4)·ε·|v| (tests/test_jax_weight_norm.py's _rtol, n = 24 or 48 inputs)
    eps = float(np.finfo(np.float32).eps)
    for i in range(4):
        v = np.asarray(new["params"][f"fc{i}"]["kernel"], np.float64)
        n = v.shape[0]
        assert np.all(np.abs(_used_kernel(new, i) - v) <= ((n - 1) / 2 + 4) * eps * np.abs(v))


def test_planted_bug_only_v_rescaled_under_weight_norm_is_caught(monkeypatch) -> None:
    # The planted bug: the WeightNorm pairs not read (the behaviour before): the layers' own paths are
    # never called (linen records the WeightNorm's output), so no layer is rescaled: an error, not a
    # silent no-op; and scaling v alone would change nothing (scale · v / ‖v‖ divides it out).
    monkeypatch.setattr(isj, "_weight_norm_scales", lambda *a, **k: {})  # lsuv imports it from here per call
    model, x = _NormedMLP(), _batch((256, 24))
    variables = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="no layer was rescaled"):
        isj.lsuv(variables, x, module=model, key=jax.random.key(1))


def test_a_weight_norm_over_several_kernels_is_skipped_by_name() -> None:
    from _weight_norm_nets import BlockNet

    model, x = BlockNet(), _batch((256, 24))
    variables = model.init(jax.random.key(0), x)
    _, report = isj.lsuv(variables, x, module=model, key=jax.random.key(1))
    rows = {row.weight: row for row in report.rows}
    for name in ("params/block/a/kernel", "params/block/b/kernel"):
        assert rows[name].status == "skipped: under a WeightNorm that wraps several kernels"
    assert rows["params/head/kernel"].status == "converged"
