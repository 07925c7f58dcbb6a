"""``initscale.auto`` for Flax linen: trace the apply once, read the activations off its jaxpr, plan each weight.

``module.apply(variables, *example_inputs)`` is traced with :func:`jax.make_jaxpr` under
``nn.intercept_methods``: the ``__call__`` of each planned layer (a module whose ``kernel`` a
one-spec ``reinit`` sets with forward fans: Dense, DenseGeneral and so attention projections,
Conv, ConvTranspose) and of each norm (LayerNorm, RMSNorm, BatchNorm, GroupNorm, any class named
``...Norm``) has its input and output passed through an identity ``jax.jit`` named
``initscale_in_<k>``/``initscale_out_<k>``, so the jaxpr marks where each layer starts and ends.
Everything between those marks is the model's glue, in primitives: activations are functions,
not modules, in Flax (``nn.relu``, ``nn.gelu``, a lambda in ``nn.Sequential``), and this is where
they are found. The jaxpr is then evaluated eagerly, primitive by primitive, for the mean square
of every value.

What follows a layer (its output passed through shape-only primitives first: reshape, transpose,
squeeze, expand_dims, copy):

- an elementwise function of that output alone (the largest run of elementwise primitives, and
  jitted functions made only of them, whose inputs are the output itself and constants), that
  is then used elsewhere: the activation. Closed forms of :mod:`initscale.gains` for ``jax.nn``'s
  jitted ``relu``, ``silu``/``swish``, ``selu``, ``softplus``, ``mish``, ``soft_sign`` and the
  primitives ``tanh`` and ``logistic`` (sigmoid); any other (``nn.gelu``, which is not jitted and
  comes as its primitives; ``leaky_relu``, ``elu``, whose parameters live inside their jaxprs; a
  custom ``x * sigmoid(1.702 x)``) by quadrature of the traced primitives themselves (evaluated
  in the trace's dtype, float32 as a rule: the gain to about 1e-6), f' by ``jax.grad``. The run is
  also checked on the pass's own values: changing one input changes only that output.
- a norm's input mark: ``norm``; the jaxpr's output: ``output``; anything else (a sum, a product,
  another layer, an attention ``dot_general``): ``linear``, named by its primitive.
- an activation applied to a residual sum (``relu(x + f(x))``: an elementwise run fed by one value
  that an ``add`` of two data values made) is identified the same way, closed form or quadrature,
  and maps the sum's second moment m to E[f(√m·Z)²], as an activation after a layer does.

Second moments propagate as :mod:`initscale.autogain` says: ``add``/``sub`` add (a constant term,
such as a learned offset, adds its mean square), ``mul`` multiplies, ``div`` by a constant
divides, ``concatenate`` averages by size, shape primitives keep, a norm gives the mean square of
its ``scale``; any other primitive on the data's path takes the ratio of mean squares measured
on the pass and is named in the plan's notes (``dot_general`` of attention, ``reduce_max``, ...).

Residual sums get ``auto``'s ``residual=`` rule as on torch (:mod:`initscale.autogain`): an ``add`` of
two data values outside any layer whose skip is an ancestor of its branch through a layer or norm (or
a projection shortcut: the skip reaches such an ancestor through layers, norms and shape primitives);
the branch's last norm ``scale`` (a ``BatchNorm``'s, say), else its last layer's kernel, followed by
shape primitives and scalar factors only and read by nothing else, is 0 (``"zero"``) or times 1/√L
(``"depth"``); ReLU of a sum that is its ReLU skip is the identity. A branch with nothing to scale
(it ends in an activation or an attention product) is named in the plan's notes and in a warning.

Limits: only linen (an nnx module or state raises a TypeError naming what is supported); methods
other than ``__call__`` are not marked; a module called twice is planned for its first call (a note).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initscale import presets
from initscale.autogain import RESIDUAL, Auto, AutoPlan, AutoRow, Follower, ResidualRow, activation_moment, layer_gain

__all__ = ["apply", "plan"]

_NAMED = {
    "relu": ("relu", None),
    "silu": ("silu", None),
    "swish": ("silu", None),
    "selu": ("selu", None),
    "softplus": ("softplus", 1.0),
    "mish": ("mish", None),
    "soft_sign": ("softsign", None),
    "tanh": ("tanh", None),
    "logistic": ("sigmoid", None),
    "sigmoid": ("sigmoid", None),
}
_ELEMENTWISE = {
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "max",
    "min",
    "exp",
    "exp2",
    "log",
    "log1p",
    "expm1",
    "tanh",
    "logistic",
    "erf",
    "erfc",
    "erf_inv",
    "abs",
    "sign",
    "sqrt",
    "rsqrt",
    "cbrt",
    "pow",
    "integer_pow",
    "select_n",
    "ge",
    "gt",
    "le",
    "lt",
    "eq",
    "ne",
    "and",
    "or",
    "not",
    "convert_element_type",
    "square",
    "sin",
    "cos",
    "clamp",
    "copy",
    "copy_p",
    "stop_gradient",
    "is_finite",
    "floor",
    "ceil",
    "round",
    "atan",
    "asinh",
    "sinh",
    "cosh",
    "reciprocal",
}
_WRAPPERS = {"jit", "pjit", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "closed_call"}
_SHAPE = {"reshape", "transpose", "squeeze", "expand_dims", "copy", "copy_p"}
_NORMS = ("LayerNorm", "RMSNorm", "BatchNorm", "GroupNorm")


def _inner(eqn: Any) -> Any:
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = eqn.params.get(key)
        if inner is not None:
            return getattr(inner, "jaxpr", inner)
    return None


def _is_elementwise_eqn(eqn: Any) -> bool:
    name = eqn.primitive.name
    if name in _ELEMENTWISE:
        return True
    if name in _WRAPPERS and not str(eqn.params.get("name", "")).startswith("initscale_"):
        inner = _inner(eqn)
        return inner is not None and all(
            _is_elementwise_eqn(e) or e.primitive.name == "broadcast_in_dim" for e in inner.eqns
        )
    return False


def _wrapper_name(eqn: Any) -> str | None:
    """The name of a jitted function, through custom_jvp wrappers (jax.nn.relu: custom_jvp of jit relu)."""
    while eqn.primitive.name in _WRAPPERS:
        name = eqn.params.get("name")
        if name:
            return str(name)
        inner = _inner(eqn)
        if inner is None or len(inner.eqns) != 1:
            return None
        eqn = inner.eqns[0]
    return str(eqn.primitive.name)


def _is_var(x: Any) -> bool:
    return not hasattr(x, "val")  # jax.core.Literal has .val


def _mean_square(value: Any) -> float:
    array = np.asarray(value)
    if array.size == 0 or not (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == np.bool_):  # bfloat16 too
        return 0.0
    return float(np.mean(np.square(array.astype(np.float64))))


_KERNEL_NORMS = ("WeightNorm", "SpectralNorm")  # flax's: they normalize the wrapped layer's kernel, not activations


def _is_norm(module: Any) -> bool:
    """Whether ``module`` normalizes activations: flax's norms and any class named ``...Norm``, but
    not flax's ``WeightNorm``/``SpectralNorm`` wrappers, whose output is their wrapped layer's
    (whose kernel they rescale: that layer is planned as any other)."""
    name = type(module).__name__
    return name in _NORMS or (name.endswith("Norm") and name not in _KERNEL_NORMS)


def _weight_normed_layer(module: Any) -> tuple[str, ...] | None:
    """The path of the layer a linen ``WeightNorm`` ``module`` wraps (None for any other module)."""
    wrapped = getattr(module, "layer_instance", None) if type(module).__name__ == "WeightNorm" else None
    return tuple(wrapped.path) if wrapped is not None and hasattr(wrapped, "path") else None


@dataclass
class _Trace:
    jaxpr: Any  # ClosedJaxpr
    leaves: list[tuple[str, Any]]  # (path, leaf) of the variables, in the jaxpr's invar order
    n_inputs: int
    marks: dict[str, tuple[str, int, tuple[str, ...]]]  # jit name -> (in/out, call index, module path)
    categories: dict[int, str]  # call index -> "layer" or "norm"
    at_weight_norm: set[tuple[str, ...]] = field(default_factory=set)  # layers marked at their WeightNorm's call


def _trace(variables: Any, module: Any, auto: Auto, layer_paths: set[tuple[str, ...]]) -> _Trace:
    import flax.linen as nn

    marks: dict[str, tuple[str, int, tuple[str, ...]]] = {}
    categories: dict[int, str] = {}

    def tag(name: str) -> Any:
        def identity(x: Any) -> Any:
            return x

        identity.__name__ = name
        return jax.jit(identity)

    at_weight_norm: set[tuple[str, ...]] = set()
    open_weight_norms: set[tuple[str, ...]] = set()

    def interceptor(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        mod = context.module
        path = tuple(mod.path) if hasattr(mod, "path") else ()
        is_layer = path in layer_paths
        # linen's WeightNorm computes scale · v / ‖v‖ before it calls its layer: a layer it wraps is
        # marked at the WeightNorm's call, so that a factor on v and its scale at the input mark is used
        wrapped = _weight_normed_layer(mod)
        if wrapped is not None and wrapped in layer_paths:
            path, is_layer = wrapped, True
        elif is_layer and path in open_weight_norms:
            return next_fun(*args, **kwargs)  # marked at its WeightNorm's call already
        if (
            context.method_name != "__call__"
            or not args
            or not (is_layer or _is_norm(mod))
            or not isinstance(args[0], jax.Array | jax.core.Tracer)
        ):
            return next_fun(*args, **kwargs)
        if wrapped is not None:
            at_weight_norm.add(path)
            open_weight_norms.add(path)
        try:
            return _marked(next_fun, args, kwargs, path, is_layer)
        finally:
            open_weight_norms.discard(path)

    def _marked(next_fun: Any, args: Any, kwargs: Any, path: tuple[str, ...], is_layer: bool) -> Any:
        k = len(categories)
        categories[k] = "layer" if is_layer else "norm"
        marks[f"initscale_in_{k}"], marks[f"initscale_out_{k}"] = ("in", k, path), ("out", k, path)
        out = next_fun(tag(f"initscale_in_{k}")(args[0]), *args[1:], **kwargs)
        return tag(f"initscale_out_{k}")(out) if isinstance(out, jax.Array | jax.core.Tracer) else out

    kwargs = dict(auto.example_kwargs or {})

    def run(tree: Any, *inputs: Any) -> Any:
        return module.apply(tree, *inputs, **kwargs)

    with nn.intercept_methods(interceptor):
        closed = jax.make_jaxpr(run)(variables, *auto.example_inputs)
    flat, _ = jax.tree_util.tree_flatten_with_path(variables)
    leaves = [("/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path), leaf) for path, leaf in flat]
    return _Trace(closed, leaves, len(auto.example_inputs), marks, categories, at_weight_norm)


def _evaluate(
    trace: _Trace,
    variables_leaves: list[Any],
    inputs: tuple[Any, ...],
    before: Callable[[Any, dict[Any, Any]], None] | None = None,
) -> dict[Any, Any]:
    """Every value of the jaxpr on these leaves and inputs, eagerly (``before(eqn, env)`` runs before each eqn)."""
    jaxpr = trace.jaxpr.jaxpr
    env: dict[Any, Any] = {}
    for var, value in zip(jaxpr.constvars, trace.jaxpr.consts, strict=True):
        env[var] = value
    flat_inputs = jax.tree_util.tree_leaves(inputs)
    for var, value in zip(jaxpr.invars, [*variables_leaves, *flat_inputs], strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        if before is not None:
            before(eqn, env)
        invals = [env[v] if _is_var(v) else v.val for v in eqn.invars]
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        outs = out if eqn.primitive.multiple_results else [out]
        for var, value in zip(eqn.outvars, outs, strict=True):
            env[var] = value
    return env


def _region(
    eqns: list[Any],
    start: int,
    var: Any,
    data: set[Any],
    consumers: dict[Any, list[int]] | None = None,
    shared_input: bool = False,
) -> tuple[list[Any], Any]:
    """The largest run of elementwise eqns after ``start`` fed only by ``var`` and constants, and its exit var
    (``shared_input``: ``var`` itself may also be read outside the run, as a residual sum is)."""
    inside: set[Any] = {var}
    region: list[Any] = []
    for eqn in eqns[start + 1 :]:
        ins = [v for v in eqn.invars if _is_var(v)]
        if not any(v in inside for v in ins):
            continue
        if (
            not _is_elementwise_eqn(eqn)
            or any(v not in inside and v in data for v in ins)
            or any(tuple(getattr(v.aval, "shape", ())) != tuple(var.aval.shape) for v in eqn.outvars)
        ):
            break
        region.append(eqn)
        inside.update(eqn.outvars)
    while region:  # the exit: the last region value; everything else inside is used only inside
        exit_var = region[-1].outvars[0]
        used_inside = {v for e in region for v in e.invars if _is_var(v)}
        leaks = [
            v
            for v in inside
            if v is not exit_var and not (shared_input and v is var) and _used_outside(eqns, region, v, consumers)
        ]
        if not leaks and (exit_var is var or var in used_inside):
            return region, exit_var
        region.pop()
        inside = {var} | {v for e in region for v in e.outvars}
    return [], var


def _used_outside(eqns: list[Any], region: list[Any], var: Any, consumers: dict[Any, list[int]] | None = None) -> bool:
    ids = {id(e) for e in region}
    if consumers is not None:
        return any(id(eqns[i]) not in ids for i in consumers.get(var, ()))
    return any(id(e) not in ids and any(v is var for v in e.invars if _is_var(v)) for e in eqns)


def _linear(region: list[Any]) -> bool:
    """A run of products and quotients by constants (flax attention's query / sqrt(depth), 2.0 * x): a scalar
    factor, which the propagation squares, not an activation."""
    return all(e.primitive.name in ("mul", "div", "neg", "convert_element_type", "copy", "copy_p") for e in region)


def _affine(region: list[Any]) -> bool:
    """A run of sums, products and quotients with constants (a bias, a scalar factor): the second-moment
    rules of those primitives hold, no activation to integrate."""
    return all(
        e.primitive.name in ("add", "sub", "mul", "div", "neg", "convert_element_type", "copy", "copy_p")
        for e in region
    )


def _region_function(region: list[Any], var: Any, exit_var: Any, env: dict[Any, Any]) -> Callable[[Any], Any]:
    """The region as a function of ``var``'s value (constants from ``env``)."""

    def fn(x: Any) -> Any:
        local = {var: x}
        for eqn in region:
            invals = [local[v] if _is_var(v) and v in local else (env[v] if _is_var(v) else v.val) for v in eqn.invars]
            out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            for o, value in zip(eqn.outvars, out if eqn.primitive.multiple_results else [out], strict=True):
                local[o] = value
        return local[exit_var]

    return fn


def _narrow(dtype: Any) -> bool:
    """A floating dtype of fewer than 32 bits (bfloat16, float16, float8)."""
    return dtype is not None and jnp.issubdtype(dtype, jnp.floating) and jnp.dtype(dtype).itemsize < 4


def _wide(x: Any) -> Any:
    return jnp.asarray(x, jnp.float32) if _narrow(getattr(x, "dtype", None)) else x


def _run_wide(eqns: list[Any], values: dict[Any, Any]) -> None:
    """Evaluate ``eqns`` into ``values`` in float32 where they were traced in a narrower float: every
    low-precision input, constant and conversion widened, jitted and custom-derivative functions entered."""
    for eqn in eqns:
        invals = [_wide(values[v] if _is_var(v) else v.val) for v in eqn.invars]
        inner = _inner(eqn) if eqn.primitive.name in _WRAPPERS else None
        if inner is not None:
            closed = next(eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if eqn.params.get(k) is not None)
            local = dict(zip(inner.constvars, getattr(closed, "consts", ()), strict=True))
            local.update(zip(inner.invars, invals, strict=True))
            _run_wide(list(inner.eqns), local)
            outs = [local[v] if _is_var(v) else v.val for v in inner.outvars]
        else:
            params = dict(eqn.params)
            if eqn.primitive.name == "convert_element_type" and _narrow(params.get("new_dtype")):
                params["new_dtype"] = jnp.dtype(jnp.float32)
            out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
            outs = out if eqn.primitive.multiple_results else [out]
        for var, value in zip(eqn.outvars, outs, strict=True):
            values[var] = _wide(value)


def _wide_region_function(region: list[Any], var: Any, exit_var: Any, env: dict[Any, Any]) -> Callable[[Any], Any]:
    """The region as a float32 function of ``var``'s value, for a region traced in bfloat16/float16: its
    integral over N(0, s²) reaches values (s up to thousands) that overflow float16 and round bfloat16
    to 3 digits; in float32 the gain is as accurate as a float32 model's."""

    def fn(x: Any) -> Any:
        values = {v: env[v] for e in region for v in e.invars if _is_var(v) and v in env and v is not var}
        values[var] = _wide(x)
        _run_wide(region, values)
        return values[exit_var]

    return fn


def _as_numpy_activation(fn: Callable[[Any], Any], shape: tuple[int, ...], dtype: Any, name: str) -> Any:
    """An elementwise traced ``fn`` on arrays of ``shape`` as a NumPy callable of any 1-D input (in
    batches of that shape, vmapped), with f' by ``jax.grad``."""
    size = max(1, math.prod(shape))
    value = jax.jit(jax.vmap(fn))
    grad = jax.jit(jax.vmap(jax.grad(lambda t: jnp.sum(fn(t)).astype(jnp.float32))))

    def batched(call: Any, x: Any) -> Any:
        flat = np.asarray(x, dtype=np.float64).reshape(-1)
        k = -(-flat.size // size)
        padded = np.zeros(k * size, dtype=np.float64)
        padded[: flat.size] = flat
        out = np.asarray(call(jnp.asarray(padded.reshape((k, *shape)), dtype=dtype)), dtype=np.float64)
        return out.reshape(-1)[: flat.size].reshape(np.shape(x))

    def f(x: Any) -> Any:
        return batched(value, x)

    def df(x: Any) -> Any:
        return batched(grad, x)

    f.__name__ = name
    f.derivative = df  # type: ignore[attr-defined]
    return f


def _elementwise_on(fn: Callable[[Any], Any], value: Any) -> bool:
    """Changing one value changes only that output (the pass's own values)."""
    array = np.asarray(value)
    if array.size < 2:
        return False
    y = np.asarray(fn(value)).reshape(-1)
    flat = array.reshape(-1)
    for i in (0, flat.size // 2):
        probe = flat.copy()
        probe[i] = probe[i] + 0.5 + abs(probe[i])
        z = np.asarray(fn(jnp.asarray(probe.reshape(array.shape)))).reshape(-1)
        changed = z != y
        changed[i] = False
        if bool(changed.any()):
            return False
    return True


def _match(f: Callable[[Any], Any]) -> tuple[str, float | None] | None:
    """The closed form of :mod:`initscale.gains` that ``f`` equals on [-6, 6] to float32 rounding
    (``nn.gelu``'s tanh approximation, ``leaky_relu`` and ``elu``/``celu`` with the parameter read
    off f(-1)), else None."""
    from initscale import gains

    grid = np.linspace(-6.0, 6.0, 241)
    try:
        y = f(grid)
    except Exception:  # a region that cannot run on other values: no closed form
        return None
    if not np.all(np.isfinite(y)):
        return None
    at = float(f(np.array([-1.0]))[0])
    for name, (fn, default) in gains.ACTIVATIONS.items():
        if name in ("identity", "swish"):
            continue
        param = default
        if name == "leaky_relu":
            param = -at
        elif name in ("elu", "celu") and at < 0:
            param = at / math.expm1(-1.0) if name == "elu" else None
        if name == "celu" and param is None:
            continue
        if np.allclose(y, fn(grid, param if param is not None else 0.0), rtol=2e-6, atol=2e-6):
            return name, param
    return None


def _activation(region: list[Any], var: Any, exit_var: Any, env: dict[Any, Any]) -> tuple[Any, str]:
    if len(region) == 1:
        name = _wrapper_name(region[0])
        if name in _NAMED:
            return _NAMED[name], _NAMED[name][0]
    dtype = var.aval.dtype
    if _narrow(dtype):
        fn, dtype = _wide_region_function(region, var, exit_var, env), jnp.float32
    else:
        fn = _region_function(region, var, exit_var, env)
    names = [_wrapper_name(e) or e.primitive.name for e in region]
    label = names[0] if len(names) == 1 else "(" + " ".join(names[:6]) + (" ..." if len(names) > 6 else "") + ")"
    f = _as_numpy_activation(fn, tuple(var.aval.shape), dtype, label)
    matched = _match(f)
    if matched is not None:
        return matched, matched[0]
    return f, label


def _kernels(variables: Any, module: Any, auto: Auto) -> tuple[dict[tuple[str, ...], tuple[str, int, str]], list[str]]:
    from initscale.adapters.jax import reinit

    _, report = reinit(
        variables,
        presets.get("he_normal"),
        jax.random.key(0),
        dry_run=True,
        module=module,
        example_inputs=auto.example_inputs,
        example_kwargs=auto.example_kwargs,
    )
    kernels: dict[tuple[str, ...], tuple[str, int, str]] = {}
    others = []
    for row in report.touched:
        if row.fan_in is None:
            continue
        names = row.name.split("/")
        if names[0] == "params" and names[-1] == "kernel" and len(names) > 2:
            kernels[tuple(names[1:-1])] = (row.name, int(row.fan_in), row.layer)
        else:
            others.append(row.name)
    return kernels, others


def nnx_error(function: str, argument: str, value: Any, how: str = "") -> TypeError | None:
    """The error for a ``flax.nnx`` model where a linen module (or its variables) is needed, else None."""
    try:
        from flax import nnx
    except ImportError:  # an older flax without nnx
        return None
    if not isinstance(value, nnx.Module) and not isinstance(value, nnx.State):
        return None
    return TypeError(
        f"{function} on JAX reads Flax linen modules only ({how}); argument `{argument}` is a flax.nnx "
        f"{type(value).__name__}, which it does "
        "not read yet. Supported: a flax.linen.Module with the variables module.init returned "
        "(module=..., variables=...). For an nnx model, initscale.jax.reinit(model, spec, key) with a plain "
        "spec or rules (fans from nnx's own layers) works; or write the model in linen."
    )


def _check(variables: Any, module: Any) -> None:
    import flax.linen as nn

    for argument, value in (("module", module), ("variables", variables)):
        how = "their apply is traced, each layer's __call__ marked by nn.intercept_methods"
        if (error := nnx_error("initscale.auto", argument, value, how)) is not None:
            raise error
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"initscale.auto on JAX needs module=, the flax.linen.Module that made the variables (nnx "
            f"modules are not supported yet). Received: module={type(module).__name__}."
        )
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(
            "initscale.auto on JAX needs the linen variables dict, with its 'params' collection (what "
            f"module.init returns). Received: {type(variables).__name__}."
        )


@dataclass
class _Planned:
    plan: AutoPlan
    trace: _Trace
    decided: dict[str, tuple[str, Any, float | None]]
    first_in: dict[int, str]  # call index of each planned layer's first call -> its kernel's path


def plan(variables: Any, module: Any, auto: Auto) -> AutoPlan:
    """The predicted :class:`~initscale.autogain.AutoPlan` of a linen ``module`` and its ``variables``."""
    return _plan(variables, module, auto).plan


def _plan(variables: Any, module: Any, auto: Auto) -> _Planned:
    _check(variables, module)
    kernels, others = _kernels(variables, module, auto)
    trace = _trace(variables, module, auto, set(kernels))
    jaxpr = trace.jaxpr.jaxpr
    env = _evaluate(trace, [leaf for _, leaf in trace.leaves], auto.example_inputs)
    eqns = list(jaxpr.eqns)
    n_params = len(trace.leaves)
    data: set[Any] = set(jaxpr.invars[n_params:])
    for eqn in eqns:
        if any(_is_var(v) and v in data for v in eqn.invars):
            data.update(eqn.outvars)
    measured = {v: _mean_square(env[v]) for v in [*jaxpr.invars, *[o for e in eqns for o in e.outvars]]}
    outputs = {v for v in jaxpr.outvars if _is_var(v)}
    scales = {path: leaf for path, leaf in trace.leaves}

    def mark(eqn: Any) -> tuple[str, int, tuple[str, ...]] | None:
        return trace.marks.get(str(eqn.params.get("name", ""))) if eqn.primitive.name in _WRAPPERS else None

    # eqns inside a layer or a norm (between its marks): not the model's glue
    inside: set[int] = set()
    open_calls: dict[int, set[Any]] = {}
    for eqn in eqns:
        m = mark(eqn)
        if m is not None and m[0] == "in":
            open_calls[m[1]] = set(eqn.outvars)
            continue
        if m is not None and m[0] == "out":
            open_calls.pop(m[1], None)
            continue
        for reach in open_calls.values():
            if any(_is_var(v) and v in reach for v in eqn.invars):
                reach.update(eqn.outvars)
                inside.add(id(eqn))

    consumers: dict[Any, list[int]] = {}  # var -> the indices of the eqns that read it, in order
    for i, eqn in enumerate(eqns):
        for v in dict.fromkeys(v for v in eqn.invars if _is_var(v)):
            consumers.setdefault(v, []).append(i)

    def follower(index: int, var: Any) -> tuple[Follower, Any, str, int, list[Any]]:
        """What follows ``var`` (a layer's output): (follower, activation, label, index of the exit eqn)."""
        for step in range(len(eqns)):
            users: list[Any] = [(i, eqns[i]) for i in consumers.get(var, ()) if i > index]
            if len(users) == 1 and users[0][1].primitive.name in _SHAPE and step < 16:
                index, var = users[0][0], users[0][1].outvars[0]
                continue
            break
        region, exit_var = _region(eqns, index, var, data, consumers)
        if region and (exit_var in outputs or _used_outside(eqns, region, exit_var, consumers)):
            fn = _region_function(region, var, exit_var, env)
            if _elementwise_on(jax.jit(fn), env[var]) and not _linear(region):
                act, label = _activation(region, var, exit_var, env)
                return "activation", act, label, eqns.index(region[-1]), region
        users = [eqns[i] for i in consumers.get(var, ()) if i > index]
        if not users:
            return ("output", None, "output", -1, []) if var in outputs else ("linear", None, "unused", -1, [])
        first = users[0]
        m = mark(first)
        if m is not None:
            return (
                ("norm", None, "norm", -1, [])
                if trace.categories[m[1]] == "norm"
                else ("linear", None, "layer", -1, [])
            )
        return "linear", None, _wrapper_name(first) or first.primitive.name, -1, []

    producer = {v: i for i, e in enumerate(eqns) for v in e.outvars}

    def residual_activation(index: int, eqn: Any) -> tuple[Any, Any, int, list[Any]] | None:
        """An activation applied to a residual sum (``relu(x + f(x))``): the elementwise run that starts at
        ``eqn``, fed by one value that an ``add`` of two data values made (through shape primitives),
        identified as a layer's follower is: (activation, input var, exit eqn index, run)."""
        if id(eqn) in inside or not _is_elementwise_eqn(eqn):
            return None
        ins = {v for v in eqn.invars if _is_var(v) and v in data}
        if len(ins) != 1:
            return None
        (var,) = ins
        source = var
        while source in producer and eqns[producer[source]].primitive.name in _SHAPE:
            source = eqns[producer[source]].invars[0]
        if source not in producer:
            return None
        made = eqns[producer[source]]
        if made.primitive.name != "add" or sum(_is_var(v) and v in data for v in made.invars) < 2:
            return None
        region, exit_var = _region(eqns, index - 1, var, data, consumers, shared_input=True)
        if not region or region[0] is not eqn or _affine(region):
            return None
        if not (exit_var in outputs or _used_outside(eqns, region, exit_var, consumers)):
            return None
        if not _elementwise_on(jax.jit(_region_function(region, var, exit_var, env)), env[var]):
            return None
        act, _ = _activation(region, var, exit_var, env)
        return act, var, eqns.index(region[-1]), region

    residual_adds = _residual_adds(eqns, producer, data, inside, mark, trace)
    calls: dict[tuple[str, ...], int] = {}
    for _, _, path in trace.marks.values():
        calls[path] = calls.get(path, 0) + 1  # in and out: 2 per call

    def branch_scale(var: Any) -> tuple[int | None, str | None, str | None, str]:
        """The last layer or norm of a branch ending at ``var``, through shape primitives and scalar factors:
        (call index, parameter, "layer"/"norm", why-not), as :func:`initscale.autogain.residual_sums` does."""
        while True:
            if len(consumers.get(var, ())) != 1:
                return None, None, None, "the branch's output also goes elsewhere: scaling it would change that too"
            if var not in producer:
                return None, None, None, "the branch has no recorded op"
            eqn = eqns[producer[var]]
            m = mark(eqn)
            if m is not None and m[0] == "out":
                path, who = m[2], "/".join(m[2])
                if calls.get(path, 0) > 2:
                    return None, None, None, f"its last layer {who} is called more than once"
                if trace.categories[m[1]] == "layer":
                    return m[1], kernels[path][0], "layer", ""
                scale = "/".join(("params", *path, "scale"))
                if scale not in scales:
                    return None, None, None, f"it ends in the norm {who}, which has no scale this walk can set"
                return m[1], scale, "norm", ""
            name = eqn.primitive.name
            ins = [v for v in eqn.invars if _is_var(v) and v in data]
            if len(ins) == 1 and (name in _SHAPE or (name in ("mul", "div", "neg") and ins[0] is eqn.invars[0])):
                var = ins[0]
                continue
            return (
                None,
                None,
                None,
                f"it ends in {_wrapper_name(eqn) or name!r}, not a layer or norm whose scale sets it",
            )

    if auto.residual not in RESIDUAL:
        raise ValueError(
            f"Argument `residual` of initscale.auto must be one of {', '.join(repr(r) for r in RESIDUAL)}. "
            f"Received: residual={auto.residual!r}."
        )
    targets: dict[int, tuple[int | None, str | None, str | None, str]] = {}
    used_calls: set[int] = set()
    for index, (_, branch_var, _, _) in residual_adds.items():
        found_scale = branch_scale(branch_var)
        if found_scale[0] is not None and found_scale[0] in used_calls:
            found_scale = (None, None, None, f"its scale ({found_scale[1]}) already scales another sum")
        if found_scale[0] is not None:
            used_calls.add(found_scale[0])
        targets[index] = found_scale
    factor = {"zero": 0.0, "depth": 1.0 / math.sqrt(len(residual_adds)) if residual_adds else 1.0}.get(
        auto.residual, 1.0
    )
    scaled = {t[0]: i for i, t in targets.items() if t[0] is not None and factor != 1.0}  # call -> add index
    order = {i: n for n, i in enumerate(residual_adds, start=1)}
    residual_rows: list[ResidualRow] = []
    nonnegative: set[Any] = set()  # values known >= 0 (a ReLU's output): ReLU of them is the identity
    predicted: dict[Any, float] = dict(measured)
    notes: list[str] = []
    rows: list[AutoRow] = []
    decided: dict[str, tuple[str, Any, float | None]] = {}
    first_in: dict[int, str] = {}
    m_at: dict[int, float] = {}
    seen: set[str] = set()
    activations: dict[int, tuple[Any, Any]] = {}  # exit eqn index -> (activation, input var)
    in_region: set[int] = set()
    for index, eqn in enumerate(eqns):
        ins = [predicted[v] if _is_var(v) else _mean_square(v.val) for v in eqn.invars]
        data_in = [_is_var(v) and v in data for v in eqn.invars]
        name = eqn.primitive.name
        m = mark(eqn)
        if id(eqn) in inside:
            continue  # measured values stand; the layer's out mark sets its output
        if m is not None and m[0] == "in":
            m_at[m[1]] = ins[0]
            value = ins[0]
        elif m is not None and m[0] == "out":
            k, path = m[1], m[2]
            var = eqn.outvars[0]
            if trace.categories[k] == "norm":
                scale = scales.get("/".join(("params", *path, "scale")))
                value = 1.0 if scale is None else _mean_square(scale)
                if k in scaled:
                    value = factor**2  # the residual rule sets the scale to the factor everywhere
                follows, act, _, exit_index, region = follower(index, eqn.outvars[0])  # an activation after it
                if follows == "activation":
                    activations[exit_index] = (act, eqn.outvars[0])
                    in_region.update(id(e) for e in region[:-1])
            else:
                weight, fan_in, cls = kernels[path]
                if weight in seen:
                    notes.append(f"{'/'.join(path)} is called more than once; planned for its first call")
                    value = measured[var]
                else:
                    seen.add(weight)
                    first_in[k] = weight
                    follows, act, label, exit_index, region = follower(index, var)
                    fn, param = act if isinstance(act, tuple) else (act, None)
                    decided[weight] = (follows, fn, param)
                    g = layer_gain(follows, fn, m_at[k], auto.q, param)  # type: ignore[arg-type]
                    note = g.note if follows != "linear" else f"then {label}: holds q"
                    by = 1.0  # the residual rule's factor on this kernel
                    if k in scaled:
                        by = factor
                        note = (
                            f"last layer of residual sum {order[scaled[k]]}'s branch: gain x{factor:.4g} "
                            f"(residual={auto.residual!r})"
                        )
                    rows.append(
                        AutoRow(weight, cls, follows, label, m_at[k], fan_in, by * g.gain, g.chi, g.verdict, note, by)
                    )
                    value = (by * g.gain) ** 2 * m_at[k]
                    if follows == "activation":
                        activations[exit_index] = (act, var)
                        in_region.update(id(e) for e in region[:-1])
        elif index in activations:
            act, var = activations[index]
            fn, param = act if isinstance(act, tuple) else (act, None)
            value = (
                predicted[var] if fn == "relu" and var in nonnegative else activation_moment(fn, predicted[var], param)
            )
            if fn == "relu":
                nonnegative.update(eqn.outvars)
        elif id(eqn) in in_region:
            value = measured[eqn.outvars[0]]  # inside an activation's run: its exit sets the value
        elif not any(data_in):
            value = measured[eqn.outvars[0]] if eqn.outvars else 0.0
        elif (found := residual_activation(index, eqn)) is not None:
            act, var, exit_index, region = found
            activations[exit_index] = (act, var)
            in_region.update(id(e) for e in region[:-1])
            if exit_index == index:
                fn, param = act if isinstance(act, tuple) else (act, None)
                if fn == "relu" and var in nonnegative:
                    value = predicted[var]  # ReLU of a ReLU's output through a zeroed branch's sum
                else:
                    value = activation_moment(fn, predicted[var], param)
                if fn == "relu":
                    nonnegative.update(eqn.outvars)
            else:
                value = measured[eqn.outvars[0]]
        elif name in _SHAPE or name in ("broadcast_in_dim", "convert_element_type", "squeeze", "copy"):
            value = ins[0]
            if name in _SHAPE and eqn.invars and eqn.invars[0] in nonnegative:
                nonnegative.update(eqn.outvars)
        elif name in ("add", "sub"):
            value = sum(ins)
            if index in residual_adds:
                skip_var, branch_var, skip, branch = residual_adds[index]
                _, target, target_category, why = targets[index]
                m_skip, m_branch = predicted[skip_var], predicted[branch_var]
                applied = target is not None and auto.residual != "none"
                if applied:
                    row_note = f"{target} x{factor:.4g}" + (
                        ": the branch is 0 at init, the sum is its skip" if factor == 0.0 else ""
                    )
                elif auto.residual == "none":
                    row_note = "residual='none': the branch as planned" + ("" if target else f"; {why}")
                else:
                    row_note = why
                residual_rows.append(
                    ResidualRow(
                        order[index],
                        name,
                        skip,
                        branch,
                        target,
                        target_category,
                        factor if applied else 1.0,
                        auto.residual,
                        m_skip,
                        m_branch,
                        float(m_skip + m_branch),
                        row_note,
                    )
                )
                if m_branch == 0.0 and skip_var in nonnegative:
                    nonnegative.update(eqn.outvars)
        elif name == "mul":
            value = math.prod(ins)
        elif name == "div" and not data_in[1]:
            value = ins[0] / ins[1] if ins[1] > 0 else measured[eqn.outvars[0]]
        elif name == "concatenate":
            axis = int(eqn.params["dimension"])
            sizes = [int(v.aval.shape[axis]) for v in eqn.invars]
            value = sum(n * m_ for n, m_ in zip(sizes, ins, strict=True)) / max(1, sum(sizes))
        else:
            first = next(v for v, d in zip(eqn.invars, data_in, strict=True) if d)
            label = _wrapper_name(eqn) or name
            notes.append(f"op {label!r}: ratio of mean squares measured on the example pass")
            out = measured[eqn.outvars[0]] if eqn.outvars else 0.0
            value = predicted[first] * out / measured[first] if measured[first] > 0 and predicted[first] > 0 else out
        for out_var in eqn.outvars:
            predicted[out_var] = value
    if others:
        warnings.warn(
            f"initscale.auto: {len(others)} weight(s) are not one layer's main `kernel` and get no gain from "
            f"the graph (left to the other rules and defaults): {', '.join(others[:10])}"
            f"{' ...' if len(others) > 10 else ''}. Give them a rule.",
            UserWarning,
            stacklevel=4,
        )
    missing = [w for w, _, _ in kernels.values() if w not in seen]
    if missing:
        warnings.warn(
            f"initscale.auto: the example pass did not call {len(missing)} layer(s), which get no gain: "
            f"{', '.join(missing[:10])}. Pass example inputs that reach them, or give them a rule.",
            UserWarning,
            stacklevel=4,
        )
    missed = [r for r in residual_rows if r.target is None and auto.residual != "none"]
    for r in missed:
        notes.append(f"residual sum {r.index} ({r.op}): its branch is not scaled: {r.note}")
    if missed:
        described = "; ".join(f"sum {r.index} ({r.skip} skip + branch {r.branch}: {r.note})" for r in missed)
        warnings.warn(
            f"initscale.auto: residual={auto.residual!r} could not be applied to {len(missed)} residual sum(s) "
            f"of this Flax linen model ({described}): their branches stay as planned, so the stream grows there. "
            "Pass initscale.auto(..., residual='none') to accept that, or scale the branch yourself "
            "(zeros for 'zero', x 1/sqrt(L) for 'depth').",
            UserWarning,
            stacklevel=4,
        )
    planned = AutoPlan(
        tuple(rows), auto.q, auto.distribution, tuple(dict.fromkeys(notes)), residuals=tuple(residual_rows)
    )
    return _Planned(planned, trace, decided, first_in)


def _between(eqns: list[Any], producer: Mapping[Any, int], skip: Any, branch: Any) -> list[int] | None:
    """The indices of the eqns on a path from ``skip`` to ``branch`` (None if ``skip`` is no ancestor of it)."""
    if branch not in producer:
        return None
    low, high = producer.get(skip, -1), producer[branch]
    reach, after = {skip}, []
    for i in range(low + 1, high + 1):
        if any(_is_var(v) and v in reach for v in eqns[i].invars):
            reach.update(eqns[i].outvars)
            after.append(i)
    if branch not in reach:
        return None
    wanted, path = {branch}, []
    for i in reversed(after):
        if any(v in wanted for v in eqns[i].outvars):
            path.append(i)
            wanted.update(v for v in eqns[i].invars if _is_var(v))
    return path[::-1]


def _residual_adds(
    eqns: list[Any],
    producer: Mapping[Any, int],
    data: set[Any],
    inside: set[int],
    mark: Callable[[Any], tuple[str, int, tuple[str, ...]] | None],
    trace: _Trace,
) -> dict[int, tuple[Any, Any, str, str]]:
    """The residual sums of the model's glue (eqn index -> (skip var, branch var, skip, branch's layers)):
    an ``add`` of two data values, outside any layer, where one (the skip) is an ancestor of the other
    through at least one layer or norm (an identity skip), or reaches through layers, norms and shape
    primitives only a value that is an ancestor of the other (a projection shortcut). An ``add`` inside an
    activation's primitives (``x + 0.044715 x^3``, ``x`` a layer's output) has no layer between its terms
    and is none."""
    fed: dict[int, Any] = {}  # call index -> the value its input mark receives
    for eqn in eqns:
        m = mark(eqn)
        if m is not None and m[0] == "in" and eqn.invars and _is_var(eqn.invars[0]):
            fed[m[1]] = eqn.invars[0]

    def layers_on(path: list[int]) -> list[str]:
        return [
            "/".join(m[2]) or trace.categories[m[1]] for i in path if (m := mark(eqns[i])) is not None and m[0] == "out"
        ]

    def root(var: Any) -> tuple[Any, list[str]]:
        through: list[str] = []
        while var in producer:
            eqn = eqns[producer[var]]
            m = mark(eqn)
            if eqn.primitive.name in _SHAPE and eqn.invars and _is_var(eqn.invars[0]):
                var = eqn.invars[0]
            elif m is not None and m[0] == "out" and m[1] in fed:
                through.append("/".join(m[2]))
                var = fed[m[1]]
            else:
                break
        return var, through[::-1]

    found: dict[int, tuple[Any, Any, str, str]] = {}
    for index, eqn in enumerate(eqns):
        if eqn.primitive.name != "add" or id(eqn) in inside or len(eqn.invars) != 2:
            continue
        a, b = eqn.invars
        if not all(_is_var(v) and v in data for v in (a, b)):
            continue
        match = None
        for skip, branch in ((a, b), (b, a)):
            path = _between(eqns, producer, skip, branch)
            if path is not None and (names := layers_on(path)):
                match = (skip, branch, "identity", names)
                break
        if match is None:
            for skip, branch in ((a, b), (b, a)):
                start, through = root(skip)
                if not through or root(branch)[0] is start or _between(eqns, producer, skip, branch) is not None:
                    continue  # no projection, or the branch reads the skip itself (x + 0.044715 x^3 of a GELU)
                path = _between(eqns, producer, start, branch)
                if path is not None and (names := layers_on(path)):
                    match = (skip, branch, f"projection through {', '.join(through)}", names)
                    break
        if match is not None:
            skip, branch, shortcut, names = match
            shown = names[:3] + (["...", names[-1]] if len(names) > 4 else names[3:])
            found[index] = (skip, branch, shortcut, ", ".join(shown))
    return found


def apply(variables: Any, module: Any, auto: Auto, key: Any, **reinit_kwargs: Any) -> tuple[Any, AutoPlan]:
    """``(new_variables, plan)``: ``reinit`` by the predicted plan's rules, then, with
    ``arriving="measured"``, one eager evaluation of the traced apply in which each planned layer's
    kernel, when its input mark is reached, is multiplied by gain(measured m_in)/gain(predicted
    m_in) (its predecessors already final), as ``initscale.torch.reinit_`` does. Nothing is mutated."""
    from initscale.adapters.jax import _weight_norm_scales, reinit

    planned = _plan(variables, module, auto)
    predicted = planned.plan
    options = {
        "module": module,
        "example_inputs": auto.example_inputs,
        "example_kwargs": auto.example_kwargs,
        **reinit_kwargs,
    }
    new, report = reinit(variables, predicted.rules(), key, **options)
    if auto.arriving == "predicted":
        return new, dataclasses.replace(predicted, arriving="predicted", init=report)
    trace = planned.trace
    leaves, treedef = jax.tree_util.tree_flatten(new)
    position = {path: i for i, (path, _) in enumerate(trace.leaves)}
    invars = trace.jaxpr.jaxpr.invars
    by_weight = {row.weight: row for row in predicted.rows}
    final: dict[str, AutoRow] = {}
    # a kernel under flax's WeightNorm is used as scale · v / ‖v‖: its factor goes to v and to its scale
    normed = _weight_norm_scales(new, module, auto.example_inputs, auto.example_kwargs)
    scale_of = {weight: position["/".join(scale)] for weight, (scale, _) in normed.items()}
    # a layer inside a WeightNorm over a block is called after the block's kernels were normalized: a
    # factor at its input mark would reach its leaves but not the pass, so it keeps the predicted gain
    inner = sorted(w for w in normed if w in by_weight and tuple(w.split("/")[1:-1]) not in trace.at_weight_norm)
    if inner:
        listed = ", ".join(inner[:10]) + (" ..." if len(inner) > 10 else "")
        warnings.warn(
            f"initscale.auto: {len(inner)} layer(s) inside a WeightNorm that wraps a block, not one layer, keep "
            f"their predicted gains (arriving='predicted'): {listed}. "
            "WeightNorm normalizes the block's kernels before it runs, so a measured factor cannot reach the pass. "
            "Wrap each layer in its own WeightNorm to have them measured.",
            UserWarning,
            stacklevel=4,
        )

    def before(eqn: Any, env: dict[Any, Any]) -> None:
        if eqn.primitive.name not in _WRAPPERS:
            return
        m = trace.marks.get(str(eqn.params.get("name", "")))
        if m is None or m[0] != "in" or m[1] not in planned.first_in:
            return
        weight = planned.first_in[m[1]]
        if weight in inner:
            return
        row, (follows, fn, act_param) = by_weight[weight], planned.decided[weight]
        m_in = _mean_square(env[eqn.invars[0]])
        g = layer_gain(follows, fn, m_in, auto.q, act_param)  # type: ignore[arg-type]
        i = position[weight]
        if row.gain != 0.0:  # a kernel the residual rule zeroes stays zero; its factor is kept
            for j in (i, scale_of[weight]) if weight in scale_of else (i,):
                env[invars[j]] = (env[invars[j]] * (g.gain / (row.gain / row.scale))).astype(env[invars[j]].dtype)
                leaves[j] = env[invars[j]]
        final[weight] = dataclasses.replace(row, m_in=m_in, gain=row.scale * g.gain, chi=g.chi, verdict=g.verdict)

    _evaluate(trace, leaves, auto.example_inputs, before)
    final.update({w: dataclasses.replace(by_weight[w], arriving="predicted") for w in inner})
    rows = tuple(final.get(row.weight, row) for row in predicted.rows)
    measured = dataclasses.replace(predicted, rows=rows, arriving="measured")
    _, final_report = reinit(variables, measured.rules(), key, dry_run=True, **options)
    out = jax.tree_util.tree_unflatten(treedef, leaves)
    return out, dataclasses.replace(measured, init=dataclasses.replace(final_report, dry_run=False))
