"""``check`` for both Keras adapters: walk a built Keras 3 or tf_keras model and hand its variables
to the framework-free core, :mod:`initscale.check` (every statistic, flag and tolerance lives there).

Written once for Keras 3 (:mod:`initscale.adapters.keras`, every backend) and Keras 2
(:mod:`initscale.adapters.tf_keras`); each binds it to its framework with a :class:`Face` and
:func:`bind`, as ``reinit`` is bound (:mod:`._keras_common`). No framework is imported here.

The walk is ``reinit``'s (:func:`._keras_common.walk_model`): each variable once (a variable shared
between layers, i.e. tied, is checked once under its name), with its layer's class names, role and
layout, so the rules ``reinit`` takes give the same expectations (its dry-run plan). Kernels keep
their units on the last axis (``(..., in, out)``), embeddings on the first, which ``repeated_rows``
compares. Keras embeddings have no padding row (``mask_zero`` masks index 0 but does not zero it),
so ``padding_row_not_zero`` does not apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from initscale import check as _core
from initscale.check import ALPHA, CheckReport, Entry
from initscale.reinit import Report, model_rules

from . import _keras_common as _common

__all__ = ["Face", "bind", "run"]


@dataclass(frozen=True)
class Face:
    """What ``check`` and ``lsuv`` need of one Keras, beside its :class:`._keras_common.Framework`.

    ``name``: the framework as messages spell it (``"Keras"``, ``"tf_keras"``); ``public``: the
    lazy attribute (``"keras"``: ``initscale.keras.check``); ``layer``: its base ``Layer`` class;
    ``to_numpy(tensor)``: a variable's or a tensor's values as NumPy; ``linear``: its linear
    activation (a fused activation other than it is measured before, by ``lsuv``); ``reinit``:
    the adapter's own ``reinit``."""

    fw: _common.Framework
    name: str
    public: str
    layer: type[Any]
    to_numpy: Callable[[Any], np.ndarray]
    linear: Any
    reinit: Callable[..., Report]

    def paths(self, model: Any) -> Callable[[Any], str]:
        """A variable of ``model`` -> its name in ``reinit``'s report: its path (``"dense/kernel"``),
        unless another variable has the same path (:func:`._keras_common.walk_model`)."""
        names = _common.variable_names(self.fw, model)
        return lambda variable: names.get(id(variable)) or self.fw.names(variable)[0]


def _numpy(face: Face, variable: Any) -> tuple[np.ndarray, str]:
    values = np.asarray(face.to_numpy(variable))
    dtype = face.fw.dtype_name(getattr(variable, "dtype", values.dtype))
    if values.dtype.kind not in "fiub":  # ml_dtypes' bfloat16 and friends: widen exactly
        values = values.astype(np.float32)
    return values, dtype


def run(
    face: Face,
    model: Any,
    recipe: Any,
    *,
    rules: Any,
    fresh: bool,
    alpha: float,
    include_frozen: bool,
    include_buffers: bool,
) -> CheckReport:
    """The check of ``model`` by ``face``'s walk (what every bound ``check`` runs)."""
    rules = _core.rules_for(recipe, rules)
    if not isinstance(model, face.layer):
        raise TypeError(
            f"Argument `model` of check must be a {face.name} layer or model. Received: {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"The model {model.name!r} is not built, so its variables do not exist yet: build it first "
            "(call it on a batch, or model.build(input_shape))."
        )
    found = _common.walk_model(face.fw, model, include_buffers)
    rules = model_rules(rules, model, [p for p, _ in found])  # a recipe: its roles, on this walk (initscale.recipes)
    expected = _core._expected_for([p for p, _ in found], rules, include_frozen)
    entries = []
    for param, variable in found:
        values, dtype = _numpy(face, variable)
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


_DOC = """Check a freshly initialized, built {name} model's variables for the silent init bugs.

    The arguments and the report are those of ``initscale.torch.check``: ``rules`` (or
    ``recipe``) as ``initscale.{public}.reinit`` takes them give each variable its expected
    distribution; without them only the model-agnostic flags apply. ``include_frozen`` (default
    True) also checks the variables of frozen layers against the rules; ``include_buffers``
    offers non-trainable state (moving statistics) to name patterns, as ``reinit`` does.

    Example:
{example}"""


def bind(face: Face, module: str, example: str) -> Callable[..., CheckReport]:
    """The contract's ``check`` for ``face``'s framework, placed in the adapter ``module`` and
    documented with its doctest ``example`` (lines indented by 8 spaces)."""

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
        return run(
            face,
            model,
            recipe,
            rules=rules,
            fresh=fresh,
            alpha=alpha,
            include_frozen=include_frozen,
            include_buffers=include_buffers,
        )

    check.__module__ = module
    check.__doc__ = _DOC.format(name=face.name, public=face.public, example=example)
    return check
