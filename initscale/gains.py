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

- ``method="fixed_point"`` (with ``q``, default 1): the gain g solving E[f(g√q·Z)²] = q, which
  holds each layer's input at second moment q from the first layer on (Poole et al. 2016;
  Schoenholz et al. 2017). :func:`fixed_point` returns it with its χ = g²·E[f'(g√q·Z)²], the
  verdict (ordered / critical / chaotic), the variance map's slope and a note (an unreachable q
  of a bounded activation); :func:`derived` does the same for the derived gain, and
  :func:`stability` gives the growth χ^L of a small perturbation over L layers. docs/gains.md has
  the numbers.

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
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from . import _validate, normal_math

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Array = NDArray[np.float64]
else:
    from ._lazy import numpy as np

__all__ = [
    "ACTIVATIONS",
    "CRITICAL_TOLERANCE",
    "DERIVATIVES",
    "FixedPoint",
    "GainDetails",
    "Stability",
    "derived",
    "derived_gain",
    "fixed_point",
    "gain",
    "gain_details",
    "names",
    "stability",
    "verdict",
]

Method = Literal["auto", "table", "derived", "fixed_point"]
_METHODS = ("auto", "table", "derived", "fixed_point")

# SELU constants (Klambauer et al. 2017), from their defining fixed-point equations; torch and
# Keras use the same values.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

_TORCH_LEAKY_DEFAULT = 0.01
_TORCH_SOURCE = "torch.nn.init.calculate_gain"


def _softplus(x: Array, beta: float = 1.0) -> Array:
    return np.logaddexp(0.0, beta * x) / beta


def _erf(x: Array) -> Array:
    return np.asarray(normal_math.math_ufunc(math.erf)(np.asarray(x, dtype=np.float64)), dtype=np.float64)


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
def _half_line_quadrature() -> tuple[Array, Array]:
    """Nodes z ≥ 0 and weights w·φ(z) such that Σ w g(z) ≈ ∫₀^∞ g(z) φ(z) dz."""
    t, w = np.polynomial.legendre.leggauss(_PANEL_NODES)
    width = _HALF_LINE_END / _PANELS
    left = np.arange(_PANELS)[:, None] * width
    z = (left + (t + 1.0) * width / 2.0).ravel()
    weights = np.tile(w * width / 2.0, _PANELS) * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z, weights


def second_moment(f: Callable[[Array], Array]) -> float:
    """E[f(z)²] for z ~ N(0, 1), by Gauss–Legendre quadrature on each half-line."""
    z, w = _half_line_quadrature()
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
    nonlinearity: str | Callable[[Array], Array],
    param: float | None = None,
    *,
    method: Method = "auto",
    q: float | None = None,
) -> GainDetails:
    """:func:`gain` with its formula, method, source and torch's constant beside it."""
    _validate.choice("method", method, _METHODS)
    if q is not None and method != "fixed_point":
        raise ValueError(f"Argument `q` is used by method='fixed_point' only. Received: q={q!r}, method={method!r}.")
    if method == "fixed_point":
        if isinstance(nonlinearity, str) and nonlinearity in _CONVENTIONS:
            raise ValueError(
                f"{nonlinearity!r} is a convention (a fixed gain), not an activation: a fixed-point gain "
                f"needs the activation, e.g. 'sigmoid'."
            )
        fp = fixed_point(nonlinearity, 1.0 if q is None else q, param)
        torch_value = None
        if isinstance(nonlinearity, str) and nonlinearity in _TABLE:
            torch_value = _TABLE[nonlinearity][0](fp.param if fp.param is not None else 0.0)
        return GainDetails(
            fp.activation,
            fp.param,
            fp.gain,
            "fixed_point",
            f"g solving E[f(g sqrt(q) z)^2] = q, z ~ N(0, 1), q={fp.q:g}",
            "Gauss-Legendre quadrature on each half-line (initscale); Poole et al. 2016",
            torch_value,
        )
    if callable(nonlinearity):
        if param is not None:
            raise ValueError("A callable activation takes no `param`; close over it instead.")
        label = getattr(nonlinearity, "__name__", "callable")
        return GainDetails(
            label,
            None,
            derived_gain(nonlinearity),
            "derived",
            "1 / sqrt(E[f(z)^2]), z ~ N(0, 1)",
            "Gauss-Legendre quadrature on each half-line",
            None,
        )
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
    return GainDetails(
        name,
        p,
        value,
        "derived",
        "1 / sqrt(E[f(z)^2]), z ~ N(0, 1)",
        "Gauss-Legendre quadrature on each half-line (initscale)",
        torch_value,
    )


def gain(
    nonlinearity: str | Callable[[Array], Array],
    param: float | None = None,
    *,
    method: Method = "auto",
    q: float | None = None,
) -> float:
    """The std gain for ``nonlinearity`` (see the module docstring for the methods).

    Args:
        nonlinearity: an activation name (:func:`names`) or a numpy-vectorized callable.
        param: the activation's parameter: leaky_relu ``negative_slope`` (default 0.01, as
            torch), elu/celu ``alpha`` (1), softplus ``beta`` (1).
        method: ``"auto"``, ``"table"`` (torch's constants), ``"derived"`` or ``"fixed_point"``
            (:func:`fixed_point`'s gain; its χ, verdict and note are there).
        q: for ``"fixed_point"`` only: the second moment of each layer's input to hold (default 1).

    Example:
        >>> gain("relu") == math.sqrt(2)
        True
        >>> round(gain("tanh", method="derived"), 4), round(gain("tanh"), 4)
        (1.5925, 1.6667)
        >>> round(gain("gelu", method="fixed_point"), 4), round(gain("gelu", method="fixed_point", q=4.0), 4)
        (1.468, 1.4242)
    """
    return gain_details(nonlinearity, param, method=method, q=q).value


# --- fixed points of the layer-to-layer variance map, and their χ ----------------------------------
#
# A layer y = f(W x) with W of std g/√fan_in turns an input of second moment q (per unit) into
# pre-activations N(0, g²q) and outputs of second moment V(q) = E[f(g√q·Z)²] = M(g√q), where
# M(a) = E[f(a·Z)²]. The fixed-point gain at q solves M(g√q) = q: find the pre-activation std a
# with M(a) = q, then g = a/√q (Poole et al. 2016, eq. 3, written for the layer's input instead of
# its pre-activation; Schoenholz et al. 2017).

Verdict = Literal["ordered", "critical", "chaotic"]
CRITICAL_TOLERANCE = 1e-6
"""|χ − 1| ≤ 1e-6 is "critical": over 10⁴ layers χ^L then stays within 1 % of 1 ((1 + 1e-6)^1e4 = 1.01).
It is far above the quadrature's error (χ is exact to ~1e-13 for the named activations)."""

# Panels of the quadrature E[h(aZ)] = ∫₀^∞ (h(az) + h(−az)) φ(z) dz: Gauss–Legendre with 32 nodes on
# each panel, panel edges on the Gaussian's scale (every 2 in z up to 40; φ(40) ≈ 1e-348) merged with
# edges on the activation's scale (x = a·z at 1/4, 1/2, the integers 1..8, then every factor 3/2):
# each panel is short on both scales, so the rule is exact to rounding for a pre-activation std a
# from 1e-8 to 1e8; the integer edges also catch the kinks of hard activations (hardtanh at ±1,
# hardsigmoid/hardswish at ±3, relu6 at 6), and x = 0 is an edge for every kink there.
_Z_STEP, _Z_END, _NODES = 2.0, 40.0, 32
_X_EDGES = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
# Search range of the pre-activation std a = g·√q: a grid of factor 2 from 2^-26 to 2^26 (≈ 1.5e-8 to
# 6.7e7), then bisection in log a to the last bit.
_A_GRID_EXPONENTS = range(-26, 27)
_FIXED = "fixed_point"
_DERIVED = "derived"
_REL_STEP = float.fromhex("0x1p-52") ** (1.0 / 3.0)  # central differences: h = ε^(1/3)·|x|


def _panel_quadrature(a: float) -> tuple[Array, Array]:
    """Nodes z > 0 and weights w·φ(z) of the split rule for the pre-activation std ``a``."""
    edges = set(np.arange(0.0, _Z_END + 0.5 * _Z_STEP, _Z_STEP).tolist())
    x = _X_EDGES[-1]
    xs = list(_X_EDGES)
    while x < a * _Z_END:
        x *= 1.5
        xs.append(x)
    edges.update(e / a for e in xs if e / a < _Z_END)
    e = np.array(sorted(edges))
    t, w = np.polynomial.legendre.leggauss(_NODES)
    lo, hi = e[:-1, None], e[1:, None]
    z = (lo + (t + 1.0) * (hi - lo) / 2.0).ravel()
    weights = (w * (hi - lo) / 2.0).ravel() * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z, weights


def _expect(h: Callable[[Array], Array], a: float, *, times_z: bool = False) -> float:
    """E[h(a·Z)] (or E[Z·h(a·Z)] with ``times_z``), Z ~ N(0, 1), by the split rule of :func:`_panel_quadrature`."""
    z, w = _panel_quadrature(a)
    with np.errstate(over="ignore", invalid="ignore"):
        up, down = np.asarray(h(a * z), dtype=np.float64), np.asarray(h(-a * z), dtype=np.float64)
        values = (up - down) * z if times_z else up + down
        value = float(np.dot(w, values))
    if not math.isfinite(value):
        raise ValueError(f"The quadrature of the activation at pre-activation std {a:.6g} is not finite ({value!r}).")
    return value


def _central_difference(f: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """f' by central differences with the step h = ε^(1/3)·|x| (the smallest normal at x = 0), the
    estimate :mod:`initscale.propagate` uses for a callable without a derivative: exact to rounding
    for piecewise-linear activations at every scale, relative error about ε^(2/3)·|f(x)/(x·f'(x))| for smooth ones."""
    tiny = float(np.finfo(np.float64).tiny)

    def df(x: Array) -> Array:
        step = _REL_STEP * np.maximum(np.abs(x), tiny)
        out: Array = (f(x + step) - f(x - step)) / ((x + step) - (x - step))
        return out

    return df


@dataclass(frozen=True)
class FixedPoint:
    """A gain with the fixed point of the variance map it holds, its χ and verdict.

    Fields:
        activation, param: the activation (its name, or a callable's ``__name__``) and parameter.
        gain: the std gain g (weights of std g/√fan_in).
        q: the second moment asked for (of each layer's input).
        q_star: the second moment the gain holds, E[f(g√q*·Z)²] = q*; equal to ``q`` when
            ``reachable``.
        chi: χ = g²·E[f'(g√q*·Z)²], the factor by which each layer multiplies the second moment of a
            small perturbation of its input (and of the back-propagated gradient) at the fixed point
            (Poole et al. 2016, χ₁; Schoenholz et al. 2017).
        verdict: ``"ordered"`` (χ < 1), ``"critical"`` (|χ − 1| ≤ :data:`CRITICAL_TOLERANCE`) or
            ``"chaotic"`` (χ > 1).
        slope: dV/dq at q*, the slope of the variance map V(q) = E[f(g√q·Z)²] itself,
            = g²·E[f'² + f·f''] (Stein's lemma), computed as a·E[Z·f(aZ)·f'(aZ)]/q* with a = g√q*:
            a deviation of the signal's own second moment from q* is multiplied by about ``slope`` per
            layer (|slope| < 1: the fixed point attracts).
        reachable: whether some gain holds ``q`` itself.
        method: ``"fixed_point"`` or ``"derived"``.
        derivative: how f' was computed: ``"analytic"``, ``"given"`` or the central difference.
        note: a plain sentence on anything unusual (an unreachable q, several solutions).
    """

    activation: str
    param: float | None
    gain: float
    q: float
    q_star: float
    chi: float
    verdict: Verdict
    slope: float
    reachable: bool
    method: str
    derivative: str
    note: str

    def to_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def verdict(chi: float) -> Verdict:
    """``"critical"`` where |χ − 1| ≤ :data:`CRITICAL_TOLERANCE`, else ``"ordered"`` (χ < 1) or ``"chaotic"``."""
    if abs(chi - 1.0) <= CRITICAL_TOLERANCE:
        return "critical"
    return "ordered" if chi < 1.0 else "chaotic"


@dataclass(frozen=True)
class _Activation:
    label: str
    param: float | None
    f: Callable[[Array], Array]
    df: Callable[[Array], Array]
    derivative: str
    homogeneous: float | None  # E[f(Z)²] = E[f'(Z)²] for f(ax) = a·f(x), a > 0 (linear, relu, leaky_relu)


_HOMOGENEOUS = ("linear", "identity", "relu", "leaky_relu", *_CONV)


def _resolve(
    nonlinearity: str | Callable[[Array], Array],
    param: float | None,
    derivative: Callable[[Array], Array] | None,
    caller: str,
) -> _Activation:
    """The activation, its derivative and parameter, checked as :func:`gain` checks them."""
    if callable(nonlinearity):
        if param is not None:
            raise ValueError("A callable activation takes no `param`; close over it instead.")
        f = nonlinearity
        label = getattr(f, "__name__", "callable")
        if derivative is not None:
            if not callable(derivative):
                raise TypeError(f"Argument `derivative` must be a callable. Received: derivative={derivative!r}.")
            return _Activation(label, None, f, derivative, "given", None)
        warnings.warn(
            f"{caller}: activation {label!r} came without `derivative`; f' (for chi) is estimated by "
            f"central differences with a step relative to each value (h = eps^(1/3)*|x|). Pass "
            f"derivative= for the exact chi.",
            stacklevel=3,
        )
        return _Activation(label, None, f, _central_difference(f), "central difference, step eps^(1/3)*|x|", None)
    valid = sorted(set(ACTIVATIONS) | set(_CONV))
    name = _validate.choice("nonlinearity", nonlinearity, valid)
    if derivative is not None:
        raise ValueError(
            f"Argument `derivative` is for a callable activation; {name!r} has its analytic derivative "
            f"in initscale.gains.DERIVATIVES. Received: derivative={derivative!r}."
        )
    p = _param(name, param)
    base = "linear" if name in _CONV else name
    fn, dfn = ACTIVATIONS[base][0], DERIVATIVES[base]
    pv = p if p is not None else 0.0
    homogeneous = None
    if name in _HOMOGENEOUS:
        homogeneous = (1.0 + pv * pv) / 2.0 if name == "leaky_relu" else 0.5 if name == "relu" else 1.0
    return _Activation(name, p, lambda x: fn(x, pv), lambda x: dfn(x, pv), "analytic", homogeneous)


def _moment(act: _Activation, a: float) -> float:
    """M(a) = E[f(a·Z)²]."""
    if act.homogeneous is not None:
        return act.homogeneous * a * a
    return _expect(lambda x: act.f(x) ** 2, a)


def _derivative_moment(act: _Activation, a: float) -> float:
    """E[f'(a·Z)²] (χ = g² times this)."""
    if act.homogeneous is not None:
        return act.homogeneous
    return _expect(lambda x: act.df(x) ** 2, a)


def _at(act: _Activation, a: float, q: float, *, reachable: bool, method: str, note: str) -> FixedPoint:
    """The fixed point held at pre-activation std ``a``: q* = M(a) (q itself where ``reachable``: ``a``
    solves M(a) = q to the last bit), g = a/√q*, its χ and slope."""
    if act.homogeneous is not None:  # f(ax) = a f(x): M(a) = c a², E[f'(aZ)²] = c, so χ = slope = 1
        c = act.homogeneous
        g, q_star, chi, slope = math.sqrt(1.0 / c), q, 1.0, 1.0
    else:
        q_star = q if reachable and method == _FIXED else _moment(act, a)
        if not q_star > 0.0:
            raise ValueError(
                f"E[f(a z)^2] must be positive to define a gain; got {q_star!r} for {act.label!r} at "
                f"pre-activation std {a:.6g}."
            )
        g = a / math.sqrt(q_star)
        chi = g * g * _derivative_moment(act, a)
        slope = a * _expect(lambda x: act.f(x) * act.df(x), a, times_z=True) / q_star
    return FixedPoint(
        act.label, act.param, g, q, q_star, chi, verdict(chi), slope, reachable, method, act.derivative, note
    )


def _bisect_log(r: Callable[[float], float], lo: float, hi: float) -> float:
    """A root of ``r`` in [lo, hi] (signs differ at the ends) by bisection in log a, to the last bit."""
    r_lo = r(lo)
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if not lo < mid < hi:
            break
        r_mid = r(mid)
        if r_mid == 0.0:
            return mid
        if (r_mid < 0.0) == (r_lo < 0.0):
            lo, r_lo = mid, r_mid
        else:
            hi = mid
    return lo if abs(r(lo)) <= abs(r(hi)) else hi


def _golden_log(d: Callable[[float], float], lo: float, hi: float) -> float:
    """The minimizer of ``d`` on [lo, hi] by golden-section search in log a."""
    x0, x1 = math.log(lo), math.log(hi)
    k = (math.sqrt(5.0) - 1.0) / 2.0
    c, e = x1 - k * (x1 - x0), x0 + k * (x1 - x0)
    dc, de = d(math.exp(c)), d(math.exp(e))
    for _ in range(120):
        if dc <= de:
            x1, e, de = e, c, dc
            c = x1 - k * (x1 - x0)
            dc = d(math.exp(c))
        else:
            x0, c, dc = c, e, de
            e = x0 + k * (x1 - x0)
            de = d(math.exp(e))
    return math.exp((x0 + x1) / 2.0)


def fixed_point(
    nonlinearity: str | Callable[[Array], Array],
    q: float = 1.0,
    param: float | None = None,
    *,
    derivative: Callable[[Array], Array] | None = None,
) -> FixedPoint:
    """The gain whose layers keep their input's second moment at ``q``, with its χ and verdict.

    A layer y = f(W x), W of std g/√fan_in, maps an input of second moment q to one of
    E[f(g√q·Z)²], Z ~ N(0, 1). The fixed-point gain solves

    .. math::

        \\mathbb{E}[f(g\\sqrt{q}\\,Z)^2] = q, \\qquad \\chi = g^2\\,\\mathbb{E}[f'(g\\sqrt{q}\\,Z)^2]

    (Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos";
    Schoenholz et al. 2017, "Deep information propagation"). The pre-activation std a = g√q solving
    E[f(aZ)²] = q is bracketed on a factor-2 grid from 2^-26 to 2^26 and refined by bisection in log a
    (quadrature: Gauss–Legendre panels split at 0, see ``_panel_quadrature``). Where several a solve it, the
    smallest gain is returned and the note says so.

    Exact closed forms: f(ax) = a·f(x) for a > 0 (linear, identity, conv, relu, leaky_relu with slope
    s) gives g = √(2/(1+s²)) (relu √2, linear 1) at every q, with χ = 1 (critical). SELU's constants make
    E[selu(Z)²] = 1, so at q = 1 its fixed-point gain is LeCun's 1 (found here to ~1e-15).

    Unreachable q. When no gain solves the equation (tanh: E[tanh²] < 1, so q ≥ 1; sigmoid:
    1/4 ≤ E[σ²] < 1/2; softplus: E[softplus²] ≥ log(2)² = 0.48), the returned fixed point is, with
    ``reachable=False`` and a note:

    - the reachable second moment nearest to q, q* = E[f(aZ)²] minimizing |log(q*/q)| over a > 0,
      where that minimum is attained at a finite a (an activation whose E[f(aZ)²] is not monotone);
    - otherwise the nearest q* is approached only as g → ∞ (tanh, sigmoid, softsign: saturation,
      where χ → ∞) or g → 0 (softplus: the constant f(0)), where no usable gain exists; then the
      fixed point that holds the *pre-activation* second moment at q instead (Poole et al.'s own
      variable): a = √q, q* = E[f(√q Z)²], g = √(q/q*). At q = 1 that is the derived gain
      1/√E[f(Z)²] (tanh: 1.5925, q* = 0.394, χ = 1.178).

    Args:
        nonlinearity: a name of :data:`ACTIVATIONS` (or a conv name: linear) or a numpy-vectorized
            callable.
        q: the second moment of each layer's input to hold, > 0.
        param: the activation's parameter, as :func:`gain` (leaky_relu slope 0.01 by default).
        derivative: f' of a callable ``nonlinearity``; without one, f' is the central difference of
            :mod:`initscale.propagate` (step ε^(1/3)·|x|), with a warning. Named activations use
            :data:`DERIVATIVES`.

    Example:
        >>> fp = fixed_point("relu")
        >>> fp.gain == math.sqrt(2), fp.chi, fp.verdict
        (True, 1.0, 'critical')
        >>> fp = fixed_point("gelu")
        >>> round(fp.gain, 4), round(fp.chi, 4), fp.verdict
        (1.468, 1.0604, 'chaotic')
    """
    q = _validate.real("q", q, positive=True)
    if isinstance(nonlinearity, str) and derivative is None:
        act = _resolve(nonlinearity, param, None, "fixed_point")  # checks name and param before the cache
        return _named_fixed_point(act.label, q, act.param)
    return _solve(_resolve(nonlinearity, param, derivative, "fixed_point"), q)


@lru_cache(maxsize=4096)
def _named_fixed_point(name: str, q: float, param: float | None) -> FixedPoint:
    """:func:`fixed_point` of a named activation, computed once per (name, q, param)."""
    return _solve(_resolve(name, param, None, "fixed_point"), q)


def _solve(act: _Activation, q: float) -> FixedPoint:
    """The fixed point of :func:`fixed_point` for a resolved activation."""
    if act.homogeneous is not None:
        return _at(act, math.sqrt(q / act.homogeneous), q, reachable=True, method=_FIXED, note="")
    if act.label == "selu" and q == 1.0:  # Klambauer et al.'s constants: E[selu(Z)²] = 1
        return _at(
            act,
            1.0,
            q,
            reachable=True,
            method=_FIXED,
            note="SELU's constants make E[selu(z)^2] = 1: LeCun's gain 1 (Klambauer et al. 2017).",
        )
    grid = [2.0**k for k in _A_GRID_EXPONENTS]
    moments = [_moment(act, a) for a in grid]
    residual = [m - q for m in moments]
    roots = [i for i in range(len(grid) - 1) if residual[i] == 0.0 or (residual[i] < 0.0) != (residual[i + 1] < 0.0)]
    if roots:
        i = roots[0]
        a = grid[i] if residual[i] == 0.0 else _bisect_log(lambda s: _moment(act, s) - q, grid[i], grid[i + 1])
        note = ""
        if len(roots) > 1:
            note = (
                f"E[f(g sqrt(q) z)^2] = q has {len(roots)} solutions for gains on the search range; the smallest "
                f"is returned."
            )
        return _at(act, a, q, reachable=True, method=_FIXED, note=note)
    with np.errstate(divide="ignore"):
        distance = [abs(math.log(m / q)) if m > 0.0 else math.inf for m in moments]
    best = min(range(len(grid)), key=distance.__getitem__)
    low, high = min(moments), max(moments)
    where = "below" if q > high else "above"
    limit = high if q > high else low
    if 0 < best < len(grid) - 1:
        a = _golden_log(lambda s: abs(math.log(_moment(act, s) / q)), grid[best - 1], grid[best + 1])
        point = _at(act, a, q, reachable=False, method=_FIXED, note="")
        note = (
            f"q={q:g} is unreachable for {act.label!r}: no gain gives E[f(g sqrt(q) z)^2] = q. Returned: the "
            f"reachable second moment nearest to q, q*={point.q_star:.6g}, at gain {point.gain:.6g}."
        )
        return FixedPoint(**{**point.to_dict(), "note": note})  # type: ignore[arg-type]
    point = _at(act, math.sqrt(q), q, reachable=False, method=_FIXED, note="")
    ends = "g -> infinity" if best == len(grid) - 1 else "g -> 0"
    note = (
        f"q={q:g} is unreachable for {act.label!r}: E[f(g sqrt(q) z)^2] stays {where} q for every gain (it tends "
        f"to {limit:.6g} only as {ends}, where no usable gain is). Returned instead: the fixed point that holds "
        f"the pre-activation second moment at q (pre-activation std sqrt(q)), q*={point.q_star:.6g}, gain "
        f"{point.gain:.6g} = sqrt(q/q*)."
    )
    return FixedPoint(**{**point.to_dict(), "note": note})  # type: ignore[arg-type]


def derived(
    nonlinearity: str | Callable[[Array], Array],
    param: float | None = None,
    *,
    derivative: Callable[[Array], Array] | None = None,
) -> FixedPoint:
    """The derived gain 1/√E[f(Z)²] (:func:`gain` with ``method="derived"``) with the fixed point it
    holds and its χ.

    It is the fixed-point gain at q* = E[f(Z)²]: it keeps the *pre-activation* second moment at 1
    when each layer's input is the previous activation's output, of second moment q*. A first layer
    fed data of second moment 1 starts 1/q* off that fixed point (GELU 2.35x, SiLU 2.81x), and the note
    says so. ``derivative`` as in :func:`fixed_point`.

    Example:
        >>> d = derived("tanh")
        >>> round(d.gain, 4), round(d.q_star, 4), round(d.chi, 4), d.verdict
        (1.5925, 0.3943, 1.1778, 'chaotic')
    """
    act = _resolve(nonlinearity, param, derivative, "derived")
    point = _at(act, 1.0, 1.0, reachable=True, method=_DERIVED, note="")
    q_star = second_moment(act.f)  # the rule of derived_gain, so that the gain is gain(method="derived")'s
    note = (
        "holds the pre-activation second moment at 1 when each layer's input is the previous activation's "
        f"output (second moment q*={q_star:.6g})"
    )
    if act.homogeneous is not None:
        note += "; f(ax) = a f(x) for a > 0, so at this gain every second moment is a fixed point"
    elif abs(q_star - 1.0) > 1e-12:
        note += f"; a first layer fed data of second moment 1 starts {1.0 / q_star:.4g}x off it"
    return FixedPoint(
        **{
            **point.to_dict(),
            "gain": 1.0 / math.sqrt(q_star),
            "q": q_star,
            "q_star": q_star,  # type: ignore[arg-type]
            "note": note + ".",
        }
    )


# --- stability over depth ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stability:
    """The predicted growth of a small perturbation through ``depth`` layers of one activation and gain.

    Fields:
        activation, param, gain, depth, q: what was asked (q: the input's second moment).
        q_final: the predicted second moment after ``depth`` layers (the variance map iterated from q).
        chi: the per-layer factor, the geometric mean of χ_l = g²·E[f'(g√q_{l−1}·Z)²] over the layers
            (χ of the fixed point when ``gain`` holds q).
        growth: ∏ χ_l = chi**depth, the factor on the second moment of a small perturbation of the
            input (of a relative error, squared, where the signal stays at its fixed point) and on the
            gradient's second moment on its way back (Schoenholz et al. 2017).
        signal_growth: q_final / q.
        verdict: from ``chi`` as :func:`verdict` (ordered, critical, chaotic).
        sentence: the same in words.
    """

    activation: str
    param: float | None
    gain: float
    depth: int
    q: float
    q_final: float
    chi: float
    growth: float
    signal_growth: float
    verdict: Verdict
    sentence: str

    def stable(self, factor: float = 2.0) -> bool:
        """Whether both the perturbation growth and the signal's drift stay within ``factor`` (either way)."""
        factor = _validate.real("factor", factor, positive=True)
        bound = max(factor, 1.0 / factor)
        return all(1.0 / bound <= v <= bound for v in (self.growth, self.signal_growth))

    def to_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def stability(
    nonlinearity: str | Callable[[Array], Array],
    gain: float,
    depth: int,
    q: float = 1.0,
    param: float | None = None,
    *,
    derivative: Callable[[Array], Array] | None = None,
) -> Stability:
    """The predicted growth χ^L of a small perturbation over ``depth`` layers of gain ``gain``.

    The input's second moment q₀ = q is carried through the variance map q_l = E[f(g√q_{l−1}·Z)²]
    and each layer multiplies a small perturbation's second moment by χ_l = g²·E[f'(g√q_{l−1}·Z)²]
    (Poole et al. 2016; Schoenholz et al. 2017); ``growth`` is their product, ``chi`` its geometric
    mean. At a fixed point (``gain`` = :func:`fixed_point`'s gain at q) every χ_l is its χ, so growth
    is χ^L. The iteration stops early once q_l is a fixed point to rounding (the rest of the layers
    repeat its χ).

    Example:
        >>> s = stability("gelu", fixed_point("gelu").gain, 20)
        >>> round(s.growth, 2), s.verdict, round(s.signal_growth, 6)
        (3.23, 'chaotic', 1.0)
    """
    g = _validate.real("gain", gain, positive=True)
    depth = _validate.integer("depth", depth, minimum=1)
    q = _validate.real("q", q, positive=True)
    act = _resolve(nonlinearity, param, derivative, "stability")
    log_growth, q_l, layers, chi_const = 0.0, q, 0, None
    while layers < depth:
        a = g * math.sqrt(q_l)
        if act.homogeneous is not None:  # χ_l = g² c at every layer, q_L = q (g² c)^L
            chi_l = chi_const = g * g * act.homogeneous
            log_growth += depth * math.log(chi_l)
            q_l = q * math.exp(min(log_growth, 709.0)) if log_growth < 709.0 else math.inf
            layers = depth
            break
        if not (math.isfinite(a) and a > 0.0):
            raise ValueError(
                f"stability: the signal's second moment left the floating-point range at layer {layers} "
                f"(q={q_l!r}) for {act.label!r} at gain {g:g}."
            )
        chi_l = g * g * _derivative_moment(act, a)
        q_next = _moment(act, a)
        log_growth += math.log(chi_l) if chi_l > 0.0 else -math.inf
        layers += 1
        converged = abs(q_next - q_l) <= 4.0 * float(np.finfo(np.float64).eps) * q_l
        q_l = q_next
        if converged and layers < depth:
            log_growth += (depth - layers) * math.log(chi_l) if chi_l > 0.0 else -math.inf
            layers = depth
    growth = math.exp(log_growth) if log_growth < 709.0 else math.inf
    chi = chi_const if chi_const is not None else math.exp(log_growth / depth) if log_growth > -math.inf else 0.0
    v = verdict(chi)
    sentence = (
        f"{act.label} at gain {g:.6g}, input second moment {q:g}: chi = {chi:.6g} per layer ({v}); over "
        f"{depth} layers a small perturbation's second moment is multiplied by {growth:.4g}, and the "
        f"signal's second moment goes from {q:g} to {q_l:.4g}."
    )
    return Stability(act.label, act.param, g, depth, q, q_l, chi, growth, q_l / q, v, sentence)
