"""NumPy, imported on first use.

``import initscale`` answers the analytic questions (specs, fans, gains from the table, presets,
``explain``) with the standard library alone; NumPy, a declared dependency, is imported the
first time an array is needed (sampling, CDFs, quadrature, streams). Core modules write::

    if TYPE_CHECKING:
        import numpy as np
    else:
        from ._lazy import numpy as np
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["numpy"]


class LazyModule(ModuleType):
    """Stands for a module until an attribute is read; then imports it and caches each attribute."""

    def __getattr__(self, attr: str) -> Any:
        try:
            module = importlib.import_module(self.__name__)
        except ImportError as err:
            raise ImportError(
                f"initscale needs {self.__name__} for arrays (sampling, CDFs, quadrature, streams) and it "
                f"is not importable ({err}). Install it with: pip install {self.__name__}"
            ) from err
        value = getattr(module, attr)
        self.__dict__[attr] = value
        return value


numpy = LazyModule("numpy")
