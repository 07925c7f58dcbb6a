"""Gains: the factor an activation asks of a weight's std.

Two kinds of value, and the difference is explicit:

- ``method="table"``: torch's ``calculate_gain`` exactly — linear/conv/identity/sigmoid 1,
  tanh 5/3, relu √2, leaky_relu √(2/(1+a²)) with torch's default slope a = 0.01, selu 3/4
  (torch 1.x `torch/nn/init.py`). ``"sigmoid_4x"`` is the Theano-era convention (deeplearning.net
  MLP tutorial) of a uniform range four times Glorot's for sigmoid units: gain 4.
- ``method="derived"``: the gain that keeps the second moment of a unit-normal pre-activation
  through the activation,

  .. math::

      g_f = 1 / \\sqrt{\\mathbb{E}[f(z)^2]}, \\qquad z \\sim \\mathcal N(0, 1),

  computed by Gauss quadrature on each half-line, E[f(z)²] = ∫₀^∞ (f(z)² + f(−z)²) φ(z) dz
  (Gauss–Legendre, 24 panels of 32 nodes on [0, 48]; φ(48) < 1e-500). Activations are smooth
  on each half-line but many have a kink at 0 (ReLU, ELU, SELU); a single Gauss–Hermite rule
  over the whole line converges only polynomially there (ELU: relative error 1e-5 with 150
  nodes), while the split rule is exact to rounding. It gives exactly √2 for ReLU and torch's
  √(2/(1+a²)) for leaky ReLU, and 1 for SELU (whose self-normalizing constants make
  E[selu(z)²] = 1; torch's 3/4 is a different, empirical choice). For tanh it gives 1.5925
  where torch's table has 5/3.

``method="auto"`` (the default) takes the table value where torch has one, else the derived one.
Any numpy-vectorized callable can be passed instead of a name (derived gain).

``ACTIVATIONS`` holds each named activation f(x, param) and its default parameter;
``DERIVATIVES`` holds each one's analytic derivative f'(x, param) (used by
:mod:`initscale.propagate` for the backward pass).

Example:
    >>> round(gain("leaky_relu", 0.2), 6)
    1.38675
    >>> round(gain("gelu"), 4)
    1.5335
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from . import _validate

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Array = NDArray[np.float64]
else:
    from ._lazy import numpy as np

__all__ = ["ACTIVATIONS", "DERIVATIVES", "GainDetails", "derived_gain", "gain", "gain_details", "names"]

Method = Literal["auto", "table", "derived"]
_METHODS = ("auto", "table", "derived")

# SELU constants (Klambauer et al. 2017), from their defining fixed-point equations; torch and
# Keras use the same values.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

_TORCH_LEAKY_DEFAULT = 0.01
_TORCH_SOURCE = "torch.nn.init.calculate_gain"


def _softplus(x: Array, beta: float = 1.0) -> Array:
    return np.logaddexp(0.0, beta * x) / beta


def _erf(x: Array) -> Array:
    return np.asarray(np.vectorize(math.erf, otypes=[np.float64])(x), dtype=np.float64)


# name -> (f(x, param), default param or None when the activation takes none)
ACTIVATIONS: dict[str, tuple[Callable[[Array, float], Array], float | None]] = {
    "linear": (lambda x, p: x, None),
    "identity": (lambda x, p: x, None),
    "relu": (lambda x, p: np.maximum(x, 0.0), None),
    "leaky_relu": (lambda x, p: np.where(x >= 0, x, p * x), _TORCH_LEAKY_DEFAULT),
    "elu": (lambda x, p: np.where(x >= 0, x, p * np.expm1(np.minimum(x, 0.0))), 1.0),
    "celu": (lambda x, p: np.where(x >= 0, x, p * np.expm1(np.minimum(x, 0.0) / p)), 1.0),
    "selu": (lambda x, p: _SELU_SCALE * np.where(x >= 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0))), None),
    "gelu": (lambda x, p: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))), None),
    "gelu_tanh": (
        lambda x, p: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
        None,
    ),
    "silu": (lambda x, p: x / (1.0 + np.exp(-x)), None),
    "swish": (lambda x, p: x / (1.0 + np.exp(-x)), None),
    "mish": (lambda x, p: x * np.tanh(_softplus(x)), None),
    "softplus": (lambda x, p: _softplus(x, p), 1.0),
    "softsign": (lambda x, p: x / (1.0 + np.abs(x)), None),
    "tanh": (lambda x, p: np.tanh(x), None),
    "sigmoid": (lambda x, p: 1.0 / (1.0 + np.exp(-x)), None),
}



def _sigmoid(x: Array) -> Array:
    """1/(1 + e^(−x)) without overflow for large |x|."""
    return np.exp(-np.logaddexp(0.0, -x))


def _gelu_tanh_derivative(x: Array) -> Array:
    c = math.sqrt(2.0 / math.pi)
    t = np.tanh(c * (x + 0.044715 * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)


def _mish_derivative(x: Array) -> Array:
    t = np.tanh(_softplus(x))
    return t + x * (1.0 - t * t) * _sigmoid(x)


# name -> f'(x, param), the analytic derivative of each activation above (same parameter). At a kink
# (x = 0 for relu, leaky_relu, elu, celu, selu) the value is the right-hand one for x > 0 and the
# left-hand one at and below 0, as torch's autograd does for relu; the point has probability zero.
DERIVATIVES: dict[str, Callable[[Array, float], Array]] = {
    "linear": lambda x, p: np.ones_like(x),
    "identity": lambda x, p: np.ones_like(x),
    "relu": lambda x, p: np.where(x > 0, 1.0, 0.0),
    "leaky_relu": lambda x, p: np.where(x > 0, 1.0, p),
    "elu": lambda x, p: np.where(x > 0, 1.0, p * np.exp(np.minimum(x, 0.0))),
    "celu": lambda x, p: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0) / p)),
    "selu": lambda x, p: _SELU_SCALE * np.where(x > 0, 1.0, _SELU_ALPHA * np.exp(np.minimum(x, 0.0))),
    "gelu": lambda x, p: 0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi),
    "gelu_tanh": lambda x, p: _gelu_tanh_derivative(x),
    "silu": lambda x, p: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))),
    "swish": lambda x, p: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))),
    "mish": lambda x, p: _mish_derivative(x),
    "softplus": lambda x, p: _sigmoid(p * x),
    "softsign": lambda x, p: 1.0 / (1.0 + np.abs(x)) ** 2,
    "tanh": lambda x, p: 1.0 - np.tanh(x) ** 2,
    "sigmoid": lambda x, p: _sigmoid(x) * _sigmoid(-x),
}

_CONV = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
# torch's table: name -> (value(param), formula)
_TABLE: dict[str, tuple[Callable[[float], float], str]] = {
    **{name: ((lambda p: 1.0), "1") for name in ("linear", "identity", "sigmoid", *_CONV)},
    "tanh": ((lambda p: 5.0 / 3.0), "5/3"),
    "relu": ((lambda p: math.sqrt(2.0)), "sqrt(2)"),
    "leaky_relu": ((lambda p: math.sqrt(2.0 / (1.0 + p * p))), "sqrt(2 / (1 + negative_slope^2))"),
    "selu": ((lambda p: 0.75), "3/4"),
}
_CONVENTIONS: dict[str, tuple[float, str, str]] = {
    "sigmoid_4x": (
        4.0,
        "4 (uniform range 4 * sqrt(6 / (fan_in + fan_out)))",
        "deeplearning.net Theano MLP tutorial; Glorot & Bengio 2010 for sigmoid units",
    ),
}
_PARAM_NAMES = {"leaky_relu": "negative_slope", "elu": "alpha", "celu": "alpha", "softplus": "beta"}


def names() -> list[str]:
    """Every activation name :func:`gain` knows, sorted."""
    return sorted(set(ACTIVATIONS) | set(_TABLE) | set(_CONVENTIONS))


_PANELS, _PANEL_NODES, _HALF_LINE_END = 24, 32, 48.0


@lru_cache(maxsize=1)
def _half_line_rule() -> tuple[Array, Array]:
    """Nodes z ≥ 0 and weights w·φ(z) such that Σ w g(z) ≈ ∫₀^∞ g(z) φ(z) dz."""
    t, w = np.polynomial.legendre.leggauss(_PANEL_NODES)
    width = _HALF_LINE_END / _PANELS
    left = np.arange(_PANELS)[:, None] * width
    z = (left + (t + 1.0) * width / 2.0).ravel()
    weights = np.tile(w * width / 2.0, _PANELS) * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z, weights


def second_moment(f: Callable[[Array], Array]) -> float:
    """E[f(z)²] for z ~ N(0, 1), by Gauss–Legendre quadrature on each half-line."""
    z, w = _half_line_rule()
    with np.errstate(over="ignore"):
        h = np.asarray(f(z), dtype=np.float64) ** 2 + np.asarray(f(-z), dtype=np.float64) ** 2
    value = float(np.dot(w, h))
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"E[f(z)^2] must be finite and positive to define a gain; got {value!r}.")
    return value


def derived_gain(f: Callable[[Array], Array]) -> float:
    """1/√E[f(z)²], z ~ N(0, 1), for any numpy-vectorized activation ``f``.

    Example:
        >>> round(derived_gain(lambda x: np.maximum(x, 0.0)) ** 2, 12)
        2.0
    """
    return 1.0 / math.sqrt(second_moment(f))


@dataclass(frozen=True)
class GainDetails:
    """A gain with where it comes from; ``torch_value`` is torch's constant where one exists."""

    nonlinearity: str
    param: float | None
    value: float
    method: str
    formula: str
    source: str
    torch_value: float | None


def _param(name: str, param: float | None) -> float | None:
    default = ACTIVATIONS[name][1] if name in ACTIVATIONS else None
    if name == "leaky_relu":
        default = _TORCH_LEAKY_DEFAULT
    if param is None:
        return default
    if default is None:
        raise ValueError(f"Activation {name!r} takes no parameter. Received: param={param!r}.")
    value = _validate.real(_PARAM_NAMES.get(name, "param"), param)
    if name in ("elu", "celu", "softplus") and value <= 0.0:
        raise ValueError(f"Argument `{_PARAM_NAMES[name]}` of {name!r} must be > 0. Received: param={param!r}.")
    return value


def gain_details(
    nonlinearity: str | Callable[[Array], Array], param: float | None = None, *, method: Method = "auto"
) -> GainDetails:
    """:func:`gain` with its formula, method, source and torch's constant beside it."""
    _validate.choice("method", method, _METHODS)
    if callable(nonlinearity):
        if param is not None:
            raise ValueError("A callable activation takes no `param`; close over it instead.")
        label = getattr(nonlinearity, "__name__", "callable")
        return GainDetails(label, None, derived_gain(nonlinearity), "derived", "1 / sqrt(E[f(z)^2]), z ~ N(0, 1)",
                           "Gauss-Legendre quadrature on each half-line", None)
    name = _validate.choice("nonlinearity", nonlinearity, names())
    p = _param(name, param)
    if name in _CONVENTIONS:
        value, formula, source = _CONVENTIONS[name]
        return GainDetails(name, p, value, "convention", formula, source, None)
    torch_value = _TABLE[name][0](p if p is not None else 0.0) if name in _TABLE else None
    use_table = method == "table" or (method == "auto" and name in _TABLE)
    if use_table:
        if name not in _TABLE:
            raise ValueError(
                f"torch's calculate_gain has no value for {name!r}; use method='derived' or 'auto'. "
                f"Table names: {', '.join(repr(n) for n in sorted(_TABLE))}."
            )
        return GainDetails(name, p, torch_value, "table", _TABLE[name][1], _TORCH_SOURCE, torch_value)  # type: ignore[arg-type]
    if name not in ACTIVATIONS:  # conv*/conv_transpose*: linear maps
        name_f: Callable[[Array, float], Array] = ACTIVATIONS["linear"][0]
    else:
        name_f = ACTIVATIONS[name][0]
    value = derived_gain(lambda x: name_f(x, p if p is not None else 0.0))
    return GainDetails(name, p, value, "derived", "1 / sqrt(E[f(z)^2]), z ~ N(0, 1)",
                       "Gauss-Legendre quadrature on each half-line (initscale)", torch_value)


def gain(
    nonlinearity: str | Callable[[Array], Array], param: float | None = None, *, method: Method = "auto"
) -> float:
    """The std gain for ``nonlinearity`` (see the module docstring for the methods).

    Args:
        nonlinearity: an activation name (:func:`names`) or a numpy-vectorized callable.
        param: the activation's parameter: leaky_relu ``negative_slope`` (default 0.01, as
            torch), elu/celu ``alpha`` (1), softplus ``beta`` (1).
        method: ``"auto"``, ``"table"`` (torch's constants) or ``"derived"``.

    Example:
        >>> gain("relu") == math.sqrt(2)
        True
        >>> round(gain("tanh", method="derived"), 4), round(gain("tanh"), 4)
        (1.5925, 1.6667)
    """
    return gain_details(nonlinearity, param, method=method).value

