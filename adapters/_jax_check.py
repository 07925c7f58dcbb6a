"""``initscale.jax.check``: walk a JAX/Flax parameter pytree (linen variables, an ``nnx.State``
or an ``nnx.Module``) and hand its leaves to the framework-free core, :mod:`initscale.check`
(every statistic, flag and tolerance lives there).

Roles, layouts and owner classes come from the ``/``-joined paths as in ``initscale.jax.reinit``
(linen's automatic names such as ``Dense_0``, or the nnx module's own classes), so the rules
``reinit`` takes give the same expectations (its dry-run plan). Kernels keep their units on the
last axis (``(..., in, out)``), embeddings on the first, which ``repeated_rows`` compares. A
pytree holds values, not shared variables: tying is not visible here (a shared nnx variable is
one leaf of its state, checked once). Flax embeddings have no padding row.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initscale import check as _core
from initscale.check import ALPHA, CheckReport, Entry
from initscale.reinit import Param, model_rules

__all__ = ["check"]


def _numpy(leaf: Any) -> tuple[np.ndarray, str]:
    dtype = str(getattr(leaf, "dtype", np.asarray(leaf).dtype))
    values = np.asarray(jax.device_get(leaf))
    if values.dtype.kind not in "fiub":  # ml_dtypes' bfloat16 and friends: widen exactly
        values = values.astype(np.float32)
    return values, dtype


def check(
    params: Any,
    recipe: Any = None,
    *,
    rules: Any = None,
    fresh: bool = True,
    alpha: float = ALPHA,
    module: Any = None,
    example_inputs: Any = None,
    example_kwargs: Any = None,
) -> CheckReport:
    """Check a freshly initialized parameter pytree for the silent init bugs.

    The arguments and the report are those of ``initscale.torch.check``: ``rules`` (or
    ``recipe``) as ``initscale.jax.reinit`` takes them give each leaf its expected
    distribution; without them only the model-agnostic flags apply. ``module``,
    ``example_inputs`` and ``example_kwargs`` are ``reinit``'s: the flax module that made a
    linen tree, so that each layer's class and attributes are read (else guessed from names).

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from initscale.adapters.jax import check
        >>> class MLP(nn.Module):                      # linen names its layers Dense_0, LayerNorm_0
        ...     @nn.compact
        ...     def __call__(self, x):
        ...         return nn.LayerNorm()(nn.Dense(64)(x))
        >>> variables = MLP().init(jax.random.key(0), jnp.zeros((1, 32)))
        >>> bool(check(variables))
        True
        >>> variables["params"]["LayerNorm_0"]["scale"] = jnp.zeros(64)     # a zeroed norm
        >>> check(variables).flags
        {'params/LayerNorm_0/scale': ('norm_scale_not_one',)}
    """
    from .jax import _walk, _WeightNormed  # initscale.adapters.jax re-exports check

    rules = _core.rules_for(recipe, rules)
    normed: dict[int, _WeightNormed] = {}
    unscaled: dict[int, str] = {}
    _, _, leaves_with_paths, params_found = _walk(params, module, example_inputs, example_kwargs, normed, unscaled)
    if unscaled:
        raise ValueError(f"check: {next(iter(unscaled.values()))}.")
    # a flax WeightNorm layer uses scale · v / √(Σ v² + ε): its v is checked as that kernel
    used = {w.source: w for w in normed.values()}
    rules = model_rules(rules, params if module is None else module, params_found)  # a recipe, on this walk
    found: list[tuple[Param, Any]] = [(p, leaf) for p, (_, leaf) in zip(params_found, leaves_with_paths, strict=True)]
    expected = _core._expected_for([p for p, _ in found], rules, include_frozen=True)
    entries = []
    for i, (param, leaf) in enumerate(found):
        if (w := used.get(i)) is not None:
            scale = leaves_with_paths[w.scale][1]
            keep = [1 if a in w.axes else d for a, d in enumerate(np.shape(leaf))]
            norm = jnp.sqrt(jnp.sum(jnp.square(leaf), axis=w.axes, keepdims=True) + w.epsilon)
            leaf = (leaf / norm * jnp.reshape(scale, keep)).astype(leaf.dtype)
        values, dtype = _numpy(leaf)
        if values.dtype.kind == "c":
            raise TypeError(f"Leaf {param.name!r} is complex ({dtype}); check reads real parameters only.")
        entries.append(
            Entry(
                param.name,
                values,
                role=param.role,
                layer=param.layer,
                expected=expected.get(param.name),
                unit_axis=0 if param.role == "embedding" else -1,
                dtype=dtype,
            )
        )
    return _core.check_arrays(entries, fresh=fresh, alpha=alpha)
