"""``initscale.keras.check``: walk a built Keras 3 model and hand its variables to the
framework-free core, :mod:`initscale.check` (every statistic, flag and tolerance lives there).

The walk is ``reinit``'s (:func:`initscale.adapters.keras._walk`): each variable once (a variable
shared between layers, i.e. tied, is checked once under its path), with its layer's class names,
role and layout, so the rules ``reinit`` takes give the same expectations (its dry-run plan).
Kernels keep their units on the last axis (``(..., in, out)``), embeddings on the first, which
``repeated_rows`` compares. Keras embeddings have no padding row (``mask_zero`` masks index 0
but does not zero it), so ``padding_row_not_zero`` does not apply.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from initscale import check as _core
from initscale.check import ALPHA, CheckReport, Entry
from initscale.reinit import model_rules

__all__ = ["check"]


def _numpy(variable: Any) -> tuple[np.ndarray, str]:
    values = np.asarray(keras.ops.convert_to_numpy(variable.value))
    dtype = str(getattr(variable, "dtype", values.dtype))
    if values.dtype.kind not in "fiub":  # ml_dtypes' bfloat16 and friends: widen exactly
        values = values.astype(np.float32)
    return values, dtype


def check(
    model: Any,
    recipe: Any = None,
    *,
    rules: Any = None,
    fresh: bool = True,
    alpha: float = ALPHA,
    include_frozen: bool = True,
    include_buffers: bool = False,
) -> CheckReport:
    """Check a freshly initialized, built Keras model's variables for the silent init bugs.

    The arguments and the report are those of ``initscale.torch.check``: ``rules`` (or
    ``recipe``) as ``initscale.keras.reinit`` takes them give each variable its expected
    distribution; without them only the model-agnostic flags apply.

    Example:
        >>> import keras, initscale
        >>> from initscale.adapters.keras import check
        >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.LayerNormalization()])
        >>> bool(check(model))
        True
        >>> _ = model.layers[1].gamma.assign(keras.ops.zeros((64,)))
        >>> list(check(model).flags.values())
        [('norm_scale_not_one',)]
    """
    from .keras import _walk  # here, not at the top: initscale.adapters.keras re-exports check

    rules = _core.rules_for(recipe, rules)
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"Argument `model` must be a Keras layer or model. Received: {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"The model {model.name!r} is not built, so its variables do not exist yet: build it first "
            "(call it on a batch, or model.build(input_shape))."
        )
    found: list[tuple[Any, Any]] = []
    _walk(model, (), set(), include_buffers, found)
    rules = model_rules(rules, model, [p for p, _ in found])  # a recipe: its roles, on this walk (initscale.recipes)
    expected = _core._expected_for([p for p, _ in found], rules, include_frozen)
    entries = []
    for param, variable in found:
        values, dtype = _numpy(variable)
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
