"""Gains: torch's calculate_gain table exactly, and derived gains against independent quadrature.

A derived gain is 1/√E[f(z)²] with z ~ N(0, 1). The reference here integrates with
scipy.integrate.quad, split at 0 (where ReLU/ELU/SELU have kinks):

    E[f(z)²] = ∫₀^∞ (f(z)² + f(−z)²) φ(z) dz

using scalar activations written out below from their definitions, not initscale's.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable

import numpy as np
import pytest

from initscale import gains
from initscale.gains import GainDetails, gain, gain_details

sqrt = math.sqrt

# --- torch's table ---------------------------------------------------------------------------------

ONE = [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "identity",
    "sigmoid",
]
TORCH_TABLE = [
    *[(name, None, 1.0) for name in ONE],
    ("tanh", None, 5.0 / 3.0),
    ("relu", None, sqrt(2.0)),
    ("leaky_relu", None, sqrt(2.0 / (1.0 + 0.01**2))),  # torch's default negative_slope 0.01
    ("leaky_relu", 0.2, sqrt(2.0 / (1.0 + 0.2**2))),
    ("leaky_relu", 0.0, sqrt(2.0)),
    ("leaky_relu", sqrt(5.0), sqrt(2.0 / (1.0 + 5.0))),  # nn.Linear's a=√5 → 1/√3
    ("selu", None, 3.0 / 4.0),
]


@pytest.mark.parametrize(("name", "param", "expected"), TORCH_TABLE, ids=[f"{n}-{p}" for n, p, _ in TORCH_TABLE])
@pytest.mark.parametrize("method", ["table", "auto"])
def test_torch_table(name: str, param: float | None, expected: float, method: str) -> None:
    assert gain(name, param, method=method) == expected


def test_torch_table_constants_spelled_out() -> None:
    assert gain("tanh", method="table") == pytest.approx(1.6666666666666667, rel=1e-16)
    assert gain("leaky_relu") == pytest.approx(1.4141428569978354, rel=1e-15)  # torch's default value
    assert gain("leaky_relu", 0.2) == pytest.approx(1.3867504905630728, rel=1e-15)


@pytest.mark.parametrize("method", ["auto", "table", "derived"])
def test_sigmoid_4x_is_the_theano_convention(method: str) -> None:
    assert gain("sigmoid_4x", method=method) == 4.0
    details = gain_details("sigmoid_4x", method=method)
    assert details.method == "convention"
    assert details.torch_value is None
    assert "Theano" in details.source


# --- derived gains vs scipy quad -------------------------------------------------------------------

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))  # overflow-free σ(x) = 1/(1 + e^−x)


def _softplus(x: float, beta: float = 1.0) -> float:
    bx = beta * x
    return (max(bx, 0.0) + math.log1p(math.exp(-abs(bx)))) / beta  # log(1 + e^{βx})/β


def _elu(alpha: float) -> Callable[[float], float]:
    return lambda x: x if x >= 0 else alpha * math.expm1(x)


def _celu(alpha: float) -> Callable[[float], float]:
    return lambda x: x if x >= 0 else alpha * math.expm1(x / alpha)


REFERENCE: dict[str, tuple[float | None, Callable[[float], float]]] = {
    "gelu": (None, lambda x: 0.5 * x * (1.0 + math.erf(x / sqrt(2.0)))),
    "gelu_tanh": (None, lambda x: 0.5 * x * (1.0 + math.tanh(sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))),
    "silu": (None, lambda x: x * _sigmoid(x)),
    "swish": (None, lambda x: x * _sigmoid(x)),
    "mish": (None, lambda x: x * math.tanh(_softplus(x))),
    "elu": (None, _elu(1.0)),
    "elu-0.5": (0.5, _elu(0.5)),
    "celu": (None, _celu(1.0)),
    "celu-0.5": (0.5, _celu(0.5)),
    "softplus": (None, _softplus),
    "softplus-2": (2.0, lambda x: _softplus(x, 2.0)),
    "softsign": (None, lambda x: x / (1.0 + abs(x))),
    "tanh": (None, math.tanh),
    "sigmoid": (None, _sigmoid),
    "selu": (None, lambda x: SELU_SCALE * (x if x >= 0 else SELU_ALPHA * math.expm1(x))),
    "relu": (None, lambda x: max(x, 0.0)),
    "leaky_relu-0.2": (0.2, lambda x: x if x >= 0 else 0.2 * x),
    "linear": (None, lambda x: x),
}


def quad_second_moment(f: Callable[[float], float]) -> float:
    """E[f(z)²] by adaptive quadrature of (f(z)² + f(−z)²)φ(z) on [0, 40] (φ(40) ≈ 1e-348)."""
    integrate = pytest.importorskip("scipy.integrate")

    def h(z: float) -> float:
        return (f(z) ** 2 + f(-z) ** 2) * math.exp(-0.5 * z * z) / sqrt(2.0 * math.pi)

    total = 0.0
    for lo, hi in ((0.0, 1.0), (1.0, 4.0), (4.0, 10.0), (10.0, 40.0)):
        value, _ = integrate.quad(h, lo, hi, epsabs=0.0, epsrel=1e-13, limit=500)
        total += value
    return total


@pytest.mark.parametrize("key", list(REFERENCE))
def test_derived_gain_matches_quadrature(key: str) -> None:
    name = key.split("-")[0]
    param, f = REFERENCE[key]
    expected = 1.0 / sqrt(quad_second_moment(f))
    assert gain(name, param, method="derived") == pytest.approx(expected, rel=1e-10)


def test_derived_closed_forms() -> None:
    assert gain("relu", method="derived") == pytest.approx(sqrt(2.0), rel=1e-14)  # E[relu²] = 1/2
    assert gain("leaky_relu", 0.2, method="derived") == pytest.approx(sqrt(2.0 / 1.04), rel=1e-14)  # (1+a²)/2
    assert gain("leaky_relu", method="derived") == pytest.approx(sqrt(2.0 / (1.0 + 0.01**2)), rel=1e-14)
    assert gain("linear", method="derived") == pytest.approx(1.0, rel=1e-14)
    assert gain("conv2d", method="derived") == pytest.approx(1.0, rel=1e-14)  # convs are linear maps
    # SELU's constants are chosen so that E[selu(z)²] = 1 (torch's 3/4 is a different choice)
    assert gain("selu", method="derived") == pytest.approx(1.0, abs=1e-9)
    # E[softsign(z)²], E[tanh(z)²] etc. have no closed form; celu(α=1) is elu
    assert gain("celu", method="derived") == pytest.approx(gain("elu", method="derived"), rel=1e-15)
    assert gain("swish") == gain("silu")


def test_derived_tanh_differs_from_torch_table() -> None:
    derived = gain("tanh", method="derived")
    assert derived == pytest.approx(1.5925374197, rel=1e-9)
    assert derived != pytest.approx(5.0 / 3.0, rel=1e-3)


# --- method='auto' ---------------------------------------------------------------------------------

TABLE_NAMES = [*ONE, "tanh", "relu", "leaky_relu", "selu"]
DERIVED_ONLY = ["gelu", "gelu_tanh", "silu", "swish", "mish", "elu", "celu", "softplus", "softsign"]


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_auto_uses_table_for_torch_names(name: str) -> None:
    details = gain_details(name)
    assert details.method == "table"
    assert details.value == gain(name, method="table")
    assert details.source == "torch.nn.init.calculate_gain"


@pytest.mark.parametrize("name", DERIVED_ONLY)
def test_auto_uses_derived_for_other_names(name: str) -> None:
    details = gain_details(name)
    assert details.method == "derived"
    assert details.torch_value is None
    assert details.value == gain(name, method="derived")


def test_auto_selu_and_tanh_keep_torch_constants() -> None:
    assert gain("selu") == 0.75
    assert gain("tanh") == 5.0 / 3.0


# --- gain_details ----------------------------------------------------------------------------------


def test_gain_details_tanh_derived_carries_torch_value() -> None:
    d = gain_details("tanh", method="derived")
    assert isinstance(d, GainDetails)
    assert d.nonlinearity == "tanh" and d.param is None and d.method == "derived"
    assert d.value == pytest.approx(1.5925374197, rel=1e-9)
    assert d.torch_value == 5.0 / 3.0  # torch's constant beside the derived value
    assert "E[f(z)^2]" in d.formula
    assert "quadrature" in d.source.lower()


def test_gain_details_table() -> None:
    d = gain_details("tanh", method="table")
    assert (d.value, d.torch_value, d.method, d.formula) == (5.0 / 3.0, 5.0 / 3.0, "table", "5/3")
    assert d.source == "torch.nn.init.calculate_gain"
    lr = gain_details("leaky_relu")
    assert lr.param == 0.01  # torch's default slope is reported
    assert lr.formula == "sqrt(2 / (1 + negative_slope^2))"
    assert gain_details("relu").formula == "sqrt(2)"
    assert gain_details("selu").formula == "3/4"


def test_gain_details_derived_leaky_relu_param() -> None:
    d = gain_details("leaky_relu", 0.2, method="derived")
    assert d.param == 0.2
    assert d.value == pytest.approx(sqrt(2.0 / 1.04), rel=1e-14)
    assert d.torch_value == pytest.approx(sqrt(2.0 / 1.04), rel=1e-15)


def test_gain_details_default_params() -> None:
    assert gain_details("elu").param == 1.0
    assert gain_details("softplus").param == 1.0
    assert gain_details("gelu").param is None


# --- callables -------------------------------------------------------------------------------------


def test_callable_abs_has_gain_one() -> None:
    # E[|z|²] = E[z²] = 1
    assert gain(np.abs) == pytest.approx(1.0, rel=1e-13)
    d = gain_details(np.abs)
    assert d.method == "derived" and d.torch_value is None and d.param is None
    assert d.nonlinearity == "absolute"


def test_callable_matches_named() -> None:
    assert gain(lambda x: np.maximum(x, 0.0)) == pytest.approx(sqrt(2.0), rel=1e-14)
    assert gain(np.tanh) == pytest.approx(gain("tanh", method="derived"), rel=1e-14)


# --- errors --------------------------------------------------------------------------------------


def test_names_sorted() -> None:
    names = gains.names()
    assert names == sorted(set(names))
    assert {"relu", "tanh", "gelu", "sigmoid_4x", "conv_transpose3d"} <= set(names)


def test_unknown_name_lists_sorted_choices() -> None:
    listed = ", ".join(repr(n) for n in sorted(gains.names()))
    with pytest.raises(ValueError, match=re.escape(f"Argument `nonlinearity` must be one of {listed}.")) as err:
        gain("gelu_new")
    assert "Received: nonlinearity='gelu_new'" in str(err.value)
    assert listed.startswith("'celu', 'conv1d'")


@pytest.mark.parametrize("name", ["relu", "tanh", "gelu", "sigmoid", "linear", "selu", "sigmoid_4x"])
def test_param_rejected_where_none_is_taken(name: str) -> None:
    with pytest.raises(ValueError, match=rf"Activation '{name}' takes no parameter\. Received: param=0\.2\."):
        gain(name, 0.2)


def test_bad_method() -> None:
    with pytest.raises(
        ValueError,
        match=r"Argument `method` must be one of 'auto', 'derived', 'fixed_point', "
        r"'table'\. Received: method='exact'\.",
    ):
        gain("relu", method="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument `method` must be one of"):
        gain(np.abs, method="torch")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "param", "arg"),
    [("elu", 0.0, "alpha"), ("elu", -1.0, "alpha"), ("celu", 0.0, "alpha"), ("softplus", -2.0, "beta")],
)
def test_non_positive_parameters(name: str, param: float, arg: str) -> None:
    with pytest.raises(ValueError, match=rf"Argument `{arg}` of '{name}' must be > 0\."):
        gain(name, param)


@pytest.mark.parametrize("name", ["gelu", "silu", "elu", "softplus", "mish"])
def test_table_method_has_no_value_for_derived_only_names(name: str) -> None:
    with pytest.raises(ValueError, match=rf"calculate_gain has no value for '{name}'; use method='derived'"):
        gain(name, method="table")


def test_callable_with_param() -> None:
    with pytest.raises(ValueError, match=r"callable activation takes no `param`"):
        gain(np.abs, 0.5)


def test_non_finite_second_moment() -> None:
    with pytest.raises(ValueError, match=r"E\[f\(z\)\^2\] must be finite and positive"):
        gain(np.zeros_like)


# --- analytic derivatives ---------------------------------------------------------------------------

# Intervals on each side of the kink at 0; on each, f(b) − f(a) = ∫ f' exactly.
_DERIVATIVE_INTERVALS = [(-12.0, -3.0), (-3.0, -0.5), (-0.5, -1e-6), (1e-6, 0.5), (0.5, 3.0), (3.0, 12.0)]
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(40)


def _integral(g, a: float, b: float, panels: int = 16) -> float:
    """∫_a^b g by 40-point Gauss–Legendre on each of ``panels`` equal panels (exact to rounding for
    the smooth pieces here: the error of an n-point rule falls like the 2n-th derivative)."""
    edges = np.linspace(a, b, panels + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        total += float(np.dot(_GL_WEIGHTS, g(lo + (_GL_NODES + 1.0) * (hi - lo) / 2.0))) * (hi - lo) / 2.0
    return total


def derivative_failures(name: str, param: float, derivative=None) -> list[str]:
    """Where ∫_a^b f'(x) dx differs from f(b) − f(a) by more than 1e-13 · max(1, |f(a)|, |f(b)|)
    (a few hundred ulps: the forward values themselves carry one rounding each), and, for f(0) = 0,
    where f' at ±1e-30 is not the slope (f(2x) − f(x))/x there (a finite-difference f' with a step
    above the signal reads a kink's chord instead: 0.5 for ReLU)."""
    f = gains.ACTIVATIONS[name][0]
    df = derivative or gains.DERIVATIVES[name]
    out = []
    for a, b in _DERIVATIVE_INTERVALS:
        fa, fb = float(f(np.array(a), param)), float(f(np.array(b), param))
        got = _integral(lambda x: df(x, param), a, b)
        if not abs(got - (fb - fa)) <= 1e-13 * max(1.0, abs(fa), abs(fb)):
            out.append(f"[{a}, {b}]: integral of f' {got!r} vs f(b) - f(a) {fb - fa!r}")
    tiny = (-1e-30, 1e-30) if float(f(np.array(0.0), param)) == 0.0 else ()  # where f(2x) - f(x) is exact
    for x in tiny:  # the slope of the piece at tiny scales
        slope = (float(f(np.array(2 * x), param)) - float(f(np.array(x), param))) / x
        if not math.isclose(float(df(np.array(x), param)), slope, rel_tol=1e-6, abs_tol=1e-300):
            out.append(f"f'({x}) = {float(df(np.array(x), param))!r}, slope of f there {slope!r}")
    return out


_DERIVATIVE_CASES = [
    (n, p) for n, (_, d) in sorted(gains.ACTIVATIONS.items()) for p in ([d] if d is None else [d, 0.2, 2.5])
]


@pytest.mark.parametrize(("name", "param"), _DERIVATIVE_CASES, ids=[f"{n}-{p}" for n, p in _DERIVATIVE_CASES])
def test_every_activation_has_its_exact_derivative(name: str, param) -> None:
    assert set(gains.DERIVATIVES) == set(gains.ACTIVATIONS)
    assert derivative_failures(name, 0.0 if param is None else param) == []


# --- fixed-point gains: E[f(g√q Z)²] = q, and χ = g² E[f'(g√q Z)²] ---------------------------------
#
# The reference is mpmath.quad (tanh-sinh, 30 digits) of the scalar activations and derivatives
# written out below from their definitions, split at 0 and at ±1/a (the kink, and the activation's
# own scale for a pre-activation std a), on (−∞, ∞).

mpmath = pytest.importorskip("mpmath")
mp = mpmath.mp


def _mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _mp_softplus(x):
    return mpmath.log1p(mpmath.exp(x)) if x < 30 else x + mpmath.log1p(mpmath.exp(-x))


MP: dict[str, tuple[float | None, Callable, Callable]] = {  # key -> (param, f, f')
    "gelu": (None, lambda x: x * mpmath.ncdf(x), lambda x: mpmath.ncdf(x) + x * mpmath.npdf(x)),
    "silu": (None, lambda x: x * _mp_sigmoid(x), lambda x: _mp_sigmoid(x) * (1 + x * (1 - _mp_sigmoid(x)))),
    "elu": (None, lambda x: x if x >= 0 else mpmath.expm1(x), lambda x: 1 if x > 0 else mpmath.exp(x)),
    "elu-0.5": (0.5, lambda x: x if x >= 0 else 0.5 * mpmath.expm1(x), lambda x: 1 if x > 0 else 0.5 * mpmath.exp(x)),
    "softplus": (None, _mp_softplus, _mp_sigmoid),
    "mish": (
        None,
        lambda x: x * mpmath.tanh(_mp_softplus(x)),
        lambda x: mpmath.tanh(_mp_softplus(x)) + x * mpmath.sech(_mp_softplus(x)) ** 2 * _mp_sigmoid(x),
    ),
    "relu": (None, lambda x: max(x, 0), lambda x: 1 if x > 0 else 0),
    "tanh": (None, mpmath.tanh, lambda x: mpmath.sech(x) ** 2),
    "sigmoid": (None, _mp_sigmoid, lambda x: _mp_sigmoid(x) * (1 - _mp_sigmoid(x))),
    "softsign": (None, lambda x: x / (1 + abs(x)), lambda x: 1 / (1 + abs(x)) ** 2),
    "selu": (
        None,
        lambda x: SELU_SCALE * (x if x >= 0 else SELU_ALPHA * mpmath.expm1(x)),
        lambda x: SELU_SCALE * (1 if x > 0 else SELU_ALPHA * mpmath.exp(x)),
    ),
}


def mp_expect(h, a: float) -> float:
    """E[h(a Z)], Z ~ N(0, 1), by mpmath.quad at 30 digits."""
    with mp.workdps(30):
        a = mpmath.mpf(a)
        s = 1 / a
        points = [-mpmath.inf, -40, -s, 0, s, 40, mpmath.inf] if s < 40 else [-mpmath.inf, -40, 0, 40, mpmath.inf]
        return float(mpmath.quad(lambda z: h(a * z) * mpmath.npdf(z), points))


def fixed_point_failures(key: str, fp: gains.FixedPoint) -> list[str]:
    """Where ``fp`` breaks its own definition, by the independent quadrature:

    - the fixed point: |E[f(g√q* Z)²] − q*| < 1e-10, and q* = q where ``fp.reachable``;
    - χ = g² E[f'(g√q* Z)²] to 1e-10 relative;
    - the slope of the variance map, ½ d log E[f(aZ)²] / d log a at a = g√q*, to 1e-8 (mpmath.diff).
    """
    _, f, df = MP[key]
    a = fp.gain * sqrt(fp.q_star)
    out = []
    held = mp_expect(lambda x: f(x) ** 2, a)
    if not abs(held - fp.q_star) < 1e-10:
        out.append(f"fixed point: E[f(g sqrt(q*) z)^2] = {held!r} vs q* = {fp.q_star!r}")
    if fp.reachable and fp.q_star != fp.q:
        out.append(f"reachable but q* = {fp.q_star!r} != q = {fp.q!r}")
    chi = fp.gain**2 * mp_expect(lambda x: df(x) ** 2, a)
    if not math.isclose(fp.chi, chi, rel_tol=1e-10):
        out.append(f"chi: {fp.chi!r} vs {chi!r}")
    with mp.workdps(30):
        slope = (
            float(
                mpmath.diff(
                    lambda t: mpmath.log(mp_expect(lambda x: f(x) ** 2, float(mpmath.exp(t)))),
                    mpmath.log(a),
                    h=mpmath.mpf("1e-4"),
                )
            )
            / 2
        )
    if not math.isclose(fp.slope, slope, rel_tol=1e-6, abs_tol=1e-8):
        out.append(f"slope: {fp.slope!r} vs {slope!r}")
    if fp.verdict != gains.verdict(chi):
        out.append(f"verdict {fp.verdict!r} for chi {chi!r}")
    return out


FIXED_POINT_CASES = [
    (key, q) for key in ("gelu", "silu", "elu", "elu-0.5", "softplus", "mish") for q in (0.25, 1.0, 4.0)
]


@pytest.mark.parametrize(("key", "q"), FIXED_POINT_CASES, ids=[f"{k}-q{q}" for k, q in FIXED_POINT_CASES])
def test_fixed_point_matches_independent_quadrature(key: str, q: float) -> None:
    param = MP[key][0]
    fp = gains.fixed_point(key.split("-")[0], q, param)
    if (key, q) == ("softplus", 0.25):  # E[softplus(a z)^2] >= log(2)^2 = 0.48 for every a
        assert not fp.reachable and "unreachable" in fp.note and "g -> 0" in fp.note
    else:
        assert fp.reachable and fp.q_star == q and fp.note == ""
    assert fixed_point_failures(key, fp) == []
    assert gain(key.split("-")[0], param, method="fixed_point", q=q) == fp.gain


@pytest.mark.parametrize(
    ("name", "q"),
    [("tanh", 1.0), ("tanh", 4.0), ("sigmoid", 1.0), ("sigmoid", 0.1), ("softsign", 1.0), ("softplus", 0.25)],
)
def test_unreachable_q_holds_the_pre_activation_second_moment(name: str, q: float) -> None:
    fp = gains.fixed_point(name, q)
    assert not fp.reachable
    assert fp.gain * sqrt(fp.q_star) == pytest.approx(sqrt(q), rel=1e-14)  # pre-activation std √q
    assert fixed_point_failures(name, fp) == []
    # unreachable indeed: the output's second moment over gains from 1e-4 to 1e4 stays on one side of q
    side = [mp_expect(lambda x: MP[name][1](x) ** 2, a) - q for a in (1e-4, 1e-2, 1.0, 1e2, 1e4)]
    assert all(s < 0 for s in side) or all(s > 0 for s in side), side
    assert f"q={q:g} is unreachable for '{name}'" in fp.note
    assert ("stays below q" in fp.note) == (q > fp.q_star)


def test_unreachable_tanh_at_one_is_the_derived_gain() -> None:
    fp = gains.fixed_point("tanh")
    assert fp.gain == pytest.approx(gain("tanh", method="derived"), rel=1e-14)
    assert (round(fp.q_star, 4), round(fp.chi, 4), fp.verdict) == (0.3943, 1.1778, "chaotic")
    assert "g -> infinity" in fp.note


def test_tanh_reachable_below_one() -> None:
    fp = gains.fixed_point("tanh", 0.9)  # reachable, at a large gain: saturated and chaotic
    assert fp.reachable and fp.q_star == 0.9
    assert fixed_point_failures("tanh", fp) == []
    assert fp.gain > 7 and fp.verdict == "chaotic"


def test_non_monotone_second_moment_gives_the_nearest_reachable() -> None:
    # f = x e^{-x²/2}: E[f(aZ)²] = a²/(1+2a²)^{3/2}, largest at a² = 1 (value 3^{-3/2} = 0.19245)
    fp = gains.fixed_point(
        lambda x: x * np.exp(-0.5 * x * x), 1.0, derivative=lambda x: (1 - x * x) * np.exp(-0.5 * x * x)
    )
    assert not fp.reachable and "nearest to q" in fp.note
    assert fp.q_star == pytest.approx(3**-1.5, rel=1e-12)
    assert fp.gain * sqrt(fp.q_star) == pytest.approx(1.0, rel=1e-6)  # the argmax a = 1 (flat there)


@pytest.mark.parametrize("q", [0.25, 1.0, 4.0])
def test_fixed_point_closed_forms(q: float) -> None:
    for name, param, expected in [
        ("relu", None, sqrt(2.0)),
        ("leaky_relu", 0.2, sqrt(2.0 / 1.04)),
        ("leaky_relu", None, sqrt(2.0 / (1.0 + 0.01**2))),
        ("linear", None, 1.0),
        ("identity", None, 1.0),
        ("conv2d", None, 1.0),
    ]:
        fp = gains.fixed_point(name, q, param)
        assert (fp.gain, fp.chi, fp.slope, fp.verdict, fp.q_star, fp.reachable) == (
            expected,
            1.0,
            1.0,
            "critical",
            q,
            True,
        ), name


def test_selu_fixed_point_is_lecun() -> None:
    fp = gains.fixed_point("selu")
    assert (fp.gain, fp.q_star) == (1.0, 1.0) and "Klambauer" in fp.note
    assert fixed_point_failures("selu", fp) == []
    assert fp.chi == pytest.approx(1.0716, abs=1e-4) and fp.verdict == "chaotic"  # λ²(1/2 + α² e² Φ(−2))
    # the same equation solved numerically, without the shortcut: gain 1 to rounding
    f, df = gains.ACTIVATIONS["selu"][0], gains.DERIVATIVES["selu"]
    solved = gains.fixed_point(lambda x: f(x, 0.0), 1.0, derivative=lambda x: df(x, 0.0))
    assert solved.gain == pytest.approx(1.0, abs=1e-12)
    for q in (0.25, 4.0):  # other q: solved numerically
        assert fixed_point_failures("selu", gains.fixed_point("selu", q)) == []


def test_derived_reports_its_own_fixed_point_and_chi() -> None:
    for key in ("gelu", "silu", "tanh", "sigmoid", "elu"):
        d = gains.derived(key)
        assert d.gain == gain(key, method="derived")
        assert d.q == d.q_star == pytest.approx(1.0 / d.gain**2, rel=1e-13)
        assert fixed_point_failures(key, d) == []
        # the derived gain is the fixed-point gain at its own q*
        assert gains.fixed_point(key, d.q_star).gain == pytest.approx(d.gain, rel=1e-12)
    assert "2.352x off it" in gains.derived("gelu").note and "2.811x off it" in gains.derived("silu").note
    assert gains.derived("relu").chi == 1.0 and "every second moment is a fixed point" in gains.derived("relu").note


def test_callable_fixed_point_with_and_without_derivative() -> None:
    with pytest.warns(UserWarning, match=r"fixed_point: activation 'tanh' came without `derivative`.*derivative="):
        numeric = gains.fixed_point(np.tanh, 0.5)
    named = gains.fixed_point("tanh", 0.5)
    assert numeric.gain == pytest.approx(named.gain, rel=1e-14)
    assert numeric.chi == pytest.approx(named.chi, rel=1e-9)  # central difference: ~ε^(2/3)
    assert numeric.derivative.startswith("central difference")
    given = gains.fixed_point(np.tanh, 0.5, derivative=lambda x: 1 - np.tanh(x) ** 2)
    assert (given.chi, given.derivative) == (named.chi, "given")


def test_callable_with_kinks_off_zero() -> None:
    # hardtanh clips at ±1: E[hardtanh(aZ)²] = a²(2Φ(1/a) − 1 − 2φ(1/a)/a) + 2Φ(−1/a), by parts
    def hardtanh(x):
        return np.clip(x, -1.0, 1.0)

    fp = gains.fixed_point(hardtanh, 0.5, derivative=lambda x: np.where(np.abs(x) < 1.0, 1.0, 0.0))
    a = fp.gain * sqrt(0.5)
    Phi = lambda t: 0.5 * (1 + math.erf(t / sqrt(2)))
    exact = a * a * (2 * Phi(1 / a) - 1 - 2 * math.exp(-0.5 / a**2) / sqrt(2 * math.pi) / a) + 2 * Phi(-1 / a)
    assert exact == pytest.approx(0.5, abs=1e-13)
    assert fp.chi == pytest.approx(fp.gain**2 * (2 * Phi(1 / a) - 1), rel=1e-12)


def test_fixed_point_errors() -> None:
    with pytest.raises(ValueError, match=r"Argument `q` must be > 0\. Received: q=0\.0\."):
        gains.fixed_point("gelu", 0.0)
    with pytest.raises(ValueError, match=r"Argument `q` must be finite"):
        gains.fixed_point("gelu", math.inf)
    with pytest.raises(ValueError, match=r"Argument `q` is used by method='fixed_point' only\. Received: q=2\.0"):
        gain("gelu", method="derived", q=2.0)
    with pytest.raises(ValueError, match=r"'sigmoid_4x' is a convention.*not an activation"):
        gain("sigmoid_4x", method="fixed_point")
    with pytest.raises(ValueError, match=r"Argument `derivative` is for a callable activation; 'tanh'"):
        gains.fixed_point("tanh", derivative=np.cos)
    with pytest.raises(ValueError, match=r"Argument `nonlinearity` must be one of 'celu', 'conv1d'"):
        gains.fixed_point("gelu_new")
    with pytest.raises(ValueError, match=r"Argument `alpha` of 'elu' must be > 0"):
        gains.fixed_point("elu", param=-1.0)
    with pytest.raises(ValueError, match=r"Activation 'gelu' takes no parameter"):
        gains.fixed_point("gelu", param=0.5)


# --- stability over depth -------------------------------------------------------------------------


def test_stability_at_the_fixed_point_is_chi_to_the_depth() -> None:
    for name in ("gelu", "silu", "elu", "tanh"):
        fp = gains.fixed_point(name)
        s = gains.stability(name, fp.gain, 30, q=fp.q_star)
        assert s.chi == pytest.approx(fp.chi, rel=1e-12)
        assert s.growth == pytest.approx(fp.chi**30, rel=1e-10)
        assert s.signal_growth == pytest.approx(1.0, rel=1e-12) and s.verdict == fp.verdict
        assert f"over 30 layers a small perturbation's second moment is multiplied by {s.growth:.4g}" in s.sentence


def test_stability_of_homogeneous_activations_is_exact() -> None:
    s = gains.stability("relu", sqrt(2.0), 100)  # χ = g²/2 = 1 (one rounding in g²)
    assert s.chi == pytest.approx(1.0, rel=1e-15) and s.growth == pytest.approx(1.0, rel=1e-13)
    assert s.q_final == pytest.approx(1.0, rel=1e-13) and s.verdict == "critical" and s.stable()
    s = gains.stability("relu", 1.0, 10, q=2.0)  # Glorot-like on ReLU: halves at every layer
    assert s.chi == pytest.approx(0.5, rel=1e-15) and s.growth == pytest.approx(2.0**-10, rel=1e-13)
    assert s.q_final == pytest.approx(2.0 * 2.0**-10, rel=1e-13) and s.verdict == "ordered" and not s.stable()


def test_stability_off_the_fixed_point_follows_the_variance_map() -> None:
    # derived gain on every layer, the first fed data of second moment 1 (issue 21): by iterating the
    # map with the independent quadrature, layer by layer
    g = gain("silu", method="derived")
    f, df = MP["silu"][1], MP["silu"][2]
    q, log_growth = 1.0, 0.0
    for _ in range(5):
        a = g * sqrt(q)
        log_growth += math.log(g * g * mp_expect(lambda x: df(x) ** 2, a))
        q = mp_expect(lambda x: f(x) ** 2, a)
    s = gains.stability("silu", g, 5)
    assert s.q_final == pytest.approx(q, rel=1e-10)
    assert s.growth == pytest.approx(math.exp(log_growth), rel=1e-10)
    assert s.signal_growth > 2.5 and s.verdict == "chaotic"  # 2.88 after 5 layers


def test_stability_errors() -> None:
    with pytest.raises(ValueError, match=r"Argument `depth` must be >= 1\. Received: depth=0\."):
        gains.stability("relu", 1.0, 0)
    with pytest.raises(ValueError, match=r"Argument `gain` must be > 0"):
        gains.stability("relu", -1.0, 3)


# --- the verdict by simulation: a deep random MLP of width 1000 at the fixed-point gain ------------

SIM_WIDTH, SIM_SIGNAL_DEPTH, SIM_CHI_DEPTH, SIM_DIRECTIONS, SIM_Z = 1000, 12, 40, 8, 4.0


def simulation_failures(name: str, fp: gains.FixedPoint, seed: int = 0) -> list[str]:
    """Where a width-1000 MLP (weights N(0, g²/n), no bias) disagrees with ``fp``.

    Given a layer's input x (second moment m), h = W x has iid N(0, g² m) entries, and the
    directions δ ⟂ x give W δ independent of h: so each check below conditions on the layer's input
    and compares with the exact conditional mean, with the sd from the sample (plug-in), at
    |z| ≤ 4 (two-sided α = 6.3e-5 per check; seeds fixed):

    1. the signal, SIM_SIGNAL_DEPTH layers from x of second moment q*: Σ_l (mean f(h)² − V(m_l)) over
       its sd √Σ Var(f(h)²)/n (V from gains.stability at the layer's own m_l, a martingale sum);
       and the second moment after the last layer within 4 sd of q*, the sd that of a network at
       the fixed point, each layer's noise v/n (v = E[f(g√q* Z)⁴] − q*², by mpmath) carried through
       the later layers by the variance map's slope: sd_L² = Σ_{k<L} slope^(2k)·v/n;
    2. χ, SIM_CHI_DEPTH layers with the input put back at q* each time: t_i = f'(h_i)²·mean_j (Wδ_j)_i²
       for SIM_DIRECTIONS orthonormal δ_j ⟂ x of squared norm n has E[t_i] = χ; Σ_l (mean t − χ)
       over its sd; and the verdict read from the measured χ̂ (critical when |χ̂ − 1| ≤ 4 sd, else
       its side of 1) is ``fp.verdict``; the design ensures |χ − 1| ≥ 8 sd for a non-critical one.
    """
    f0, df0 = gains.ACTIVATIONS[name][0], gains.DERIVATIVES[name]
    p = fp.param if fp.param is not None else 0.0

    def f(x):
        return f0(x, p)

    def df(x):
        return df0(x, p)

    n, g = SIM_WIDTH, fp.gain
    rng = np.random.default_rng(seed)
    out: list[str] = []

    def start() -> np.ndarray:
        u = rng.standard_normal(n)
        return sqrt(fp.q_star) * u / sqrt(float(np.mean(u * u)))

    x, dev, var = start(), 0.0, 0.0
    for _ in range(SIM_SIGNAL_DEPTH):
        m = float(np.mean(x * x))
        w = rng.standard_normal((n, n)) * (g / sqrt(n))
        y = f(w @ x)
        s = y * y
        dev += float(np.mean(s)) - gains.stability(name, g, 1, q=m, param=fp.param).q_final
        var += float(np.var(s, ddof=1)) / n
        x = y
    if not abs(dev) <= SIM_Z * sqrt(var):
        out.append(f"signal: the variance map is off by {dev / sqrt(var):+.2f} sd")
    v = mp_expect(lambda x: MP[name][1](x) ** 4, g * sqrt(fp.q_star)) - fp.q_star**2
    sd_last = sqrt(sum(fp.slope ** (2 * k) for k in range(SIM_SIGNAL_DEPTH)) * v / n)
    last = float(np.mean(x * x))
    if not abs(last - fp.q_star) <= SIM_Z * sd_last:
        out.append(
            f"signal: second moment {last:.4g} after {SIM_SIGNAL_DEPTH} layers vs q* {fp.q_star:.4g} "
            f"({(last - fp.q_star) / sd_last:+.2f} sd)"
        )
    dev, var, total = 0.0, 0.0, 0.0
    for _ in range(SIM_CHI_DEPTH):
        x = start()
        w = rng.standard_normal((n, n)) * (g / sqrt(n))
        h = w @ x
        q_, _ = np.linalg.qr(np.column_stack([x, rng.standard_normal((n, SIM_DIRECTIONS))]))
        t = df(h) ** 2 * np.mean((w @ (q_[:, 1:] * sqrt(n))) ** 2, axis=1)
        dev += float(np.mean(t)) - fp.chi
        total += float(np.mean(t))
        var += float(np.var(t, ddof=1)) / n
    sd = sqrt(var) / SIM_CHI_DEPTH  # of the measured per-layer factor
    measured = total / SIM_CHI_DEPTH
    if not abs(dev) <= SIM_Z * sqrt(var):
        out.append(f"chi: measured {measured:.5g} vs {fp.chi:.5g} ({dev / sqrt(var):+.2f} sd)")
    seen = "critical" if abs(measured - 1.0) <= SIM_Z * sd else "ordered" if measured < 1.0 else "chaotic"
    if seen != fp.verdict:
        out.append(f"verdict: measured {seen} (chi {measured:.5g} +- {sd:.2g}), reported {fp.verdict}")
    if fp.verdict != "critical" and not abs(fp.chi - 1.0) >= 2 * SIM_Z * sd:
        out.append(f"design: chi {fp.chi:.5g} is within {2 * SIM_Z} sd ({sd:.2g}) of 1")
    return out


@pytest.mark.parametrize(
    ("name", "q"), [("relu", 1.0), ("gelu", 1.0), ("silu", 1.0), ("tanh", 1.0), ("sigmoid", 1.0), ("elu", 4.0)]
)
def test_the_verdict_by_simulation(name: str, q: float) -> None:
    assert simulation_failures(name, gains.fixed_point(name, q)) == []


# --- the command line: initscale gain --method fixed_point ------------------------------------------


def _cli(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from initscale.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_fixed_point_json_carries_everything() -> None:
    import json

    code, out, _ = _cli("gain", "tanh", "--method", "fixed_point", "--q", "4", "--format", "json")
    assert code == 0
    got = json.loads(out)
    fp = gains.fixed_point("tanh", 4.0)
    assert got["value"] == fp.gain and got["method"] == "fixed_point" and got["torch_value"] == 5.0 / 3.0
    assert {k: got[k] for k in ("q", "q_star", "chi", "verdict", "slope", "reachable", "note")} == {
        "q": 4.0,
        "q_star": fp.q_star,
        "chi": fp.chi,
        "verdict": "chaotic",
        "slope": fp.slope,
        "reachable": False,
        "note": fp.note,
    }


def test_cli_fixed_point_text() -> None:
    code, out, _ = _cli("gain", "gelu", "--method", "fixed_point")
    assert code == 0
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["value"] == f"{gains.fixed_point('gelu').gain:.12g}" and lines["method"] == "fixed_point"
    assert lines["chi"].startswith(f"{gains.fixed_point('gelu').chi:.12g}  chaotic")
    assert lines["q*"].startswith("1  (the fixed point held: q itself)")
    code, out, _ = _cli("gain", "leaky_relu", "--param", "0.2", "--method", "fixed_point", "--q", "0.25")
    assert re.search(rf"^value +{sqrt(2 / 1.04):.12g}$", out, re.M) and "1  critical" in out


def test_cli_derived_reports_its_chi() -> None:
    code, out, _ = _cli("gain", "silu", "--method", "derived")
    assert code == 0 and "chi" in out and "2.811x off it" in out


def test_cli_q_needs_fixed_point() -> None:
    code, _, err = _cli("gain", "relu", "--q", "2")
    assert code == 2 and "Argument `q` is used by method='fixed_point' only. Received: q=2.0" in err
    code, _, err = _cli("gain", "relu", "--method", "fixed_point", "--q", "-1")
    assert code == 2 and "Argument `q` must be > 0. Received: q=-1.0." in err


def test_docs_gains_table_is_what_the_code_gives() -> None:
    """Each row of the q = 1 table in docs/gains.md, recomputed."""
    import pathlib

    text = (pathlib.Path(__file__).parents[1] / "docs" / "gains.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"\| [a-z_]+( [0-9.]+)? \| [0-9—]", line)]
    assert len(rows) == 8
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name, _, p = cells[0].partition(" ")
        param = float(p) if p else None
        try:
            table = f"{gain(name, param, method='table'):.4f}"
        except ValueError:
            table = "—"
        d, f = gains.derived(name, param), gains.fixed_point(name, 1.0, param)
        assert cells[1:] == [
            table,
            f"{d.gain:.4f}",
            f"{d.q_star:.4f}",
            f"{d.chi:.4f} {d.verdict}",
            f"{f.gain:.4f}",
            f"{f.q_star:.4f}" + ("" if f.reachable else " (unreachable)"),
            f"{f.chi:.4f} {f.verdict}",
            f"{f.slope:.4f}",
        ], name
