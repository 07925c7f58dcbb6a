"""initscale: one weight-initialization spec, exact numbers, every framework.

>>> import initscale
>>> spec = initscale.presets.get("torch.kaiming_normal", a=0.2, mode="fan_out")
>>> fans = initscale.compute_fans((64, 32, 3, 3), "torch")
>>> round(spec.std(fans), 6)   # sqrt(2 / (1 + 0.2²) / (64·3·3))
0.057781

``import initscale`` needs the standard library only (NumPy, a dependency, is imported on the first
array operation: sampling, CDFs, quadrature, streams); ``initscale.presets`` and ``initscale.Stream``
are imported on first use. Framework adapters are attributes loaded on first use:
``initscale.numpy`` (the reference sampler), ``initscale.torch``, ``initscale.keras`` (Keras 3, or the
legacy ``tf_keras`` adapter when ``TF_USE_LEGACY_KERAS=1``), ``initscale.tf_keras`` and ``initscale.jax``;
each imports its framework only then, and says which pip extra to install when the framework is missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import distributions, gains
from . import fans as layouts
from .fans import Fans, LayerKind, Layout, compute_fans
from .gains import gain
from .specs import (
    Constant,
    Description,
    Normal,
    Ones,
    Orthogonal,
    Spec,
    TruncatedNormal,
    Uniform,
    VarianceScaling,
    Zeros,
    from_dict,
)

if TYPE_CHECKING:
    from . import presets, recipes
    from .autogain import auto
    from .reinit import Rule
    from .streams import Stream

__version__ = "0.1.0"

__all__ = [
    "Constant",
    "Description",
    "Fans",
    "LayerKind",
    "Layout",
    "Normal",
    "Ones",
    "Orthogonal",
    "Rule",
    "Spec",
    "Stream",
    "TruncatedNormal",
    "Uniform",
    "VarianceScaling",
    "Zeros",
    "auto",
    "compute_fans",
    "distributions",
    "from_dict",
    "gain",
    "gains",
    "layouts",
    "presets",
    "recipes",
]

# names imported on first use, to keep `import initscale` fast: attribute -> (module, name in it or None)
_LAZY: dict[str, tuple[str, str | None]] = {
    "auto": ("initscale.autogain", "auto"),
    "presets": ("initscale.presets", None),
    "recipes": ("initscale.recipes", None),
    "Rule": ("initscale.reinit", "Rule"),
    "Stream": ("initscale.streams", "Stream"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value
        return value
    # imported here, not at the top: only the adapters need it (it would add ~6 ms to `import initscale`);
    # by import_module, since `from . import` would call this very __getattr__ for the name
    _registry = importlib.import_module("initscale._registry")

    if name not in _registry.ADAPTERS:
        raise AttributeError(f"module 'initscale' has no attribute {name!r}")
    # the one registry of adapters (initscale._registry): module, framework, pip extra
    adapter = _registry.load(_registry.resolve_alias(name), attribute=name)
    globals()[name] = adapter
    return adapter


def __dir__() -> list[str]:
    _registry = importlib.import_module("initscale._registry")

    return sorted(set(globals()) | set(_registry.ADAPTERS) | set(_LAZY))
