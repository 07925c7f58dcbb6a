"""``initscale.jax.lsuv``: layer-sequential unit-variance init (LSUV; Mishkin & Matas 2016) for Flax linen.

The loop, the report and the references are in :mod:`initscale.lsuv`; this module reads each
layer's output with linen's ``capture_intermediates`` (the ``__call__`` output of every submodule,
in call order) and rescales kernels in a new variables tree: nothing is mutated, so a failure
changes nothing. The layers are the modules whose ``kernel`` the rules set with a layout (Dense,
DenseGeneral and so attention projections, Conv, ConvTranspose); a module whose ``__call__`` output is
not one floating-point array is reported as skipped. A layer under linen's ``WeightNorm`` (which
uses scale · v / ‖v‖) is measured at the WeightNorm's output, where linen records it, and rescaled
through v and its scale together; the layers of one WeightNorm over a block are skipped.

The contract's ``lsuv(subject, batch, rules=None, *, tol, max_iters, ...)``, the subject taken as
``initscale.jax.reinit`` and ``check`` take theirs: the variables tree first, the linen module that
made it beside it (``module=``, keyword-only, as in ``reinit``), and ``key=`` keyword-only. The
old order ``lsuv(variables, module, batch, key, rules)`` works until initscale 0.3, with a
DeprecationWarning naming the new call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initscale import lsuv as _core
from initscale import presets
from initscale._registry import deprecated_positional
from initscale.lsuv import LSUVReport
from initscale.specs import Spec

__all__ = ["lsuv"]


def _flat_outputs(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """``(module path, first __call__ output)`` in the order linen recorded them (call order)."""
    out = []
    for name, value in tree.items():
        if name == "__call__":
            out.append((prefix, value[0]))
        elif isinstance(value, Mapping):
            out.extend(_flat_outputs(value, (*prefix, name)))
    return out


def _set(tree: Any, path: tuple[str, ...], value: Any) -> Any:
    """A copy of the nested mapping ``tree`` with ``tree[path[0]]...[path[-1]] = value``."""
    copy = dict(tree)
    copy[path[0]] = value if len(path) == 1 else _set(tree[path[0]], path[1:], value)
    return copy


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def _old_order(args: tuple[Any, ...]) -> bool:
    """Whether a call is in the old order ``lsuv(variables, module, batch, key)``: its second
    argument is a flax module, which a batch never is (more than 3 positionals are old too)."""
    if len(args) < 2:
        return False
    import flax.linen as nn

    modules: tuple[type, ...] = (nn.Module,)
    try:
        from flax import nnx
    except ImportError:  # an older flax without nnx
        pass
    else:
        modules += (nnx.Module,)
    return isinstance(args[1], modules)


@deprecated_positional(
    ("params", "module", "batch", "key", "rules"),
    new=3,
    is_old=_old_order,
    since="0.2",
    removed_in="0.3",
    call="initscale.jax.lsuv(variables, batch, rules=None, *, module=..., key=...)",
)
def lsuv(
    params: Any,
    batch: Any,
    rules: Spec | Mapping[str, Any] | None = None,
    *,
    module: Any,
    key: Any,
    tol: float = 0.1,
    max_iters: int = 10,
    apply_kwargs: Mapping[str, Any] | None = None,
    **reinit_kwargs: Any,
) -> tuple[Any, LSUVReport]:
    """Re-initialize a linen model's variables ``params`` by ``rules``, then rescale each layer to
    unit output variance on ``batch``; returns ``(new_variables, report)`` (nothing is mutated).

    The contract's ``lsuv`` (:mod:`initscale.adapters`), with JAX's keyword-only extras
    ``module``, ``key`` and ``apply_kwargs``. ``lsuv(variables, module, batch, key, rules)``, the
    old order, still works until initscale 0.3, with a DeprecationWarning.

    Args:
        params: the linen variables dict (with its ``"params"`` collection), what ``module.init``
            returns: the subject, as in ``initscale.jax.reinit`` and ``check``.
        batch: the positional arguments of ``module.apply`` after the variables: one array or a tuple.
        rules: the starting init, anything ``reinit`` takes; None: ``presets.get("orthogonal")``
            on every supported layer's kernels.
        module: the ``flax.linen.Module`` that made ``params`` (required: a linen module holds no
            variables, and its ``apply`` is what is measured).
        key: the PRNG key of the starting init (``initscale.jax.reinit``'s; required, JAX keys are
            explicit; None with ``stream_seed=``).
        tol, max_iters: as in :func:`initscale.torch.lsuv_` (the paper's 0.1 and 10).
        apply_kwargs: keyword arguments for ``module.apply`` (e.g. ``{"train": False}``).
        **reinit_kwargs: passed on to ``reinit`` (``defaults``, ``fans``, ...).

    Example:
        >>> import jax, flax.linen as nn, initscale
        >>> from initscale.adapters.jax import lsuv
        >>> model = nn.Sequential([nn.Dense(64), nn.tanh, nn.Dense(8)])
        >>> x = jax.random.normal(jax.random.key(0), (256, 32))
        >>> variables = model.init(jax.random.key(1), x)
        >>> new, report = lsuv(variables, x, module=model, key=jax.random.key(2))
        >>> [(row.name, row.status) for row in report.rows]
        [('layers_0', 'converged'), ('layers_2', 'converged')]
    """
    import flax.linen as nn

    from initscale.adapters.jax import _weight_norm_scales, reinit

    from ._jax_auto import nnx_error

    tol, max_iters = _core.check_arguments("lsuv", tol, max_iters)
    for argument, value in (("module", module), ("params", params)):
        if (
            error := nnx_error("lsuv", argument, value, "each layer's output read by capture_intermediates")
        ) is not None:
            raise error
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"Argument `module` of lsuv must be the flax.linen.Module that made `params` (nnx modules "
            f"are not supported yet). Received: {type(module).__name__}."
        )
    if not isinstance(params, Mapping) or "params" not in params:
        raise TypeError(
            "Argument `params` of lsuv must be the linen variables dict, with its 'params' collection "
            f"(what module.init returns). Received: {type(params).__name__}."
        )
    inputs = batch if isinstance(batch, tuple) else (batch,)
    kwargs = dict(apply_kwargs or {})
    if rules is None:
        rules = presets.get("orthogonal")
    new, init = reinit(params, rules, key, module=module, example_inputs=inputs, **reinit_kwargs)
    # a layer under linen's WeightNorm uses scale · v / ‖v‖: its output is the WeightNorm's, and it is
    # rescaled through v and its scale together (the scale stays ‖v‖ where reinit set it)
    normed = _weight_norm_scales(new, module, inputs)
    wrapping = Counter(at for _, at in normed.values())  # a WeightNorm over several kernels: no one layer's output
    kernels, scales, shared = {}, {}, []
    for row in init.touched:
        if row.layout is None or not row.name.startswith("params/") or not row.name.endswith("/kernel"):
            continue
        path = tuple(row.name.split("/")[1:-1])
        if row.name in normed:
            scale_path, path = normed[row.name]
            if wrapping[path] > 1:
                shared.append(row.name)
                continue
            scales[path] = scale_path
        kernels[path] = tuple(row.name.split("/"))
    layers = {row.name: row.layer for row in init.touched}
    new = {name: dict(value) if isinstance(value, Mapping) else value for name, value in new.items()}

    def apply(tree: Any) -> Any:
        return module.apply(tree, *inputs, capture_intermediates=True, mutable=["intermediates"], **kwargs)[1]

    compiled = jax.jit(apply)  # the rescaling passes; jit's outputs have sorted keys, so the order is eager's

    def outputs(tree: Any) -> dict[tuple[str, ...], Any]:
        return dict(_flat_outputs(compiled(tree)["intermediates"]))

    state = {"tree": new}

    def measure(path: tuple[str, ...]) -> float:
        return _core.variance(np.asarray(outputs(state["tree"])[path]))

    def scale(path: tuple[str, ...], factor: float) -> None:
        for leaf in (kernels[path], scales[path]) if path in scales else (kernels[path],):
            value = _get(state["tree"], leaf)
            state["tree"] = _set(state["tree"], leaf, (value * factor).astype(value.dtype))

    order = [path for path, _ in _flat_outputs(apply(new)["intermediates"]) if path in kernels]  # call order
    rows = []
    for path in order:
        name, full = "/".join(path), "/".join(kernels[path])
        first = outputs(state["tree"])[path]
        if not isinstance(first, jax.Array) or not jnp.issubdtype(first.dtype, jnp.floating):  # bfloat16 too
            why = f"its output is a {type(first).__name__}, not one floating-point array"
            rows.append(_core.skipped(name, layers[full], full, why))
            continue
        rows.append(
            _core.rescale_layer(
                name,
                layers[full],
                full,
                lambda p=path: measure(p),  # type: ignore[misc]  # a lambda with a default: mypy cannot infer it
                lambda f, p=path: scale(p, f),  # type: ignore[misc]  # a lambda with a default: mypy cannot infer it
                tol=tol,
                max_iters=max_iters,
            )
        )
    called = set(order)
    rows += [
        _core.skipped(name.rsplit("/", 2)[-2], layers[name], name, "under a WeightNorm that wraps several kernels")
        for name in shared
    ]
    rows += [
        _core.skipped("/".join(p), "-", "/".join(k), "not called by the forward pass on `batch`")
        for p, k in kernels.items()
        if p not in called
    ]
    report = _core.finish(
        "lsuv", rows, init, tol, max_iters, len(kernels), stacklevel=4
    )  # past the deprecation wrapper
    return state["tree"], report
