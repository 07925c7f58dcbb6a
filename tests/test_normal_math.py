"""Truncated-normal maths against scipy, and the Keras/JAX constant from its formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from initscale import normal_math


def test_keras_jax_constant_is_the_truncated_std() -> None:
    # keras/jax divide by .87962566103423978: the std of N(0, 1) truncated to [-2, 2].
    assert normal_math.truncated_std(-2.0, 2.0) == pytest.approx(0.87962566103423978, rel=1e-15)


@pytest.mark.parametrize(("a", "b"), [(-2, 2), (-1, 3), (-math.inf, 0.5), (0.3, math.inf), (3, 6), (-8, -7)])
def test_moments_match_scipy(a, b) -> None:
    mean, var, kurt = normal_math.truncated_moments(a, b)
    ref = stats.truncnorm(a, b)
    assert mean == pytest.approx(ref.mean(), rel=1e-9, abs=1e-12)
    assert var == pytest.approx(ref.var(), rel=1e-8)
    assert kurt == pytest.approx(float(ref.stats(moments="k")) + 3.0, rel=1e-6)


def test_ndtri_matches_scipy_to_double_precision() -> None:
    p = np.concatenate([np.linspace(0, 1, 20001), [1e-300, 1e-20, 1e-10, 1 - 1e-12]])
    ours, ref = normal_math.ndtri(p), special.ndtri(p)
    finite = np.isfinite(ref)
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=2e-15, atol=2e-15)
    assert ours[0] == -np.inf and ours[20000] == np.inf
    assert np.isnan(normal_math.ndtri([-0.1, 1.1, np.nan])).all()


def test_empty_interval_is_an_error() -> None:
    with pytest.raises(ValueError, match="lower < upper"):
        normal_math.truncated_moments(1.0, 1.0)
    with pytest.raises(ValueError, match="no probability mass"):
        normal_math.truncated_moments(40.0, 41.0)  # mass 7e-350


# --- exact truncated moments everywhere (issue 16, item 3) ------------------------------------------

_LOWER = (
    -38.0,
    -30.0,
    -20.0,
    -12.0,
    -8.5,
    -8.0,
    -5.0,
    -3.0,
    -1.0,
    -1e-3,
    0.0,
    1e-5,
    0.5,
    2.0,
    4.2,
    8.0,
    12.0,
    20.0,
    37.0,
)
_WIDTHS = (1e-12, 1e-6, 1e-3, 0.2, 1.0, 5.0, math.inf)
# Every (a, a + w) and its mirror image (−a − w, −a): far tails on both sides, narrow, one-sided.
_INTERVALS = sorted({(a, a + w) for a in _LOWER for w in _WIDTHS} | {(-(a + w), -a) for a in _LOWER for w in _WIDTHS})


def _exact_moments(a: float, b: float) -> tuple[float, float, float]:
    """Mean, variance and kurtosis at 50 digits: the mean from its closed form (φ(a) − φ(b))/Z with
    Z from the lower tail (mirrored), the central moments by mpmath quadrature about it in the
    coordinate s = (x − a)/(b − a), the density divided by its peak (so no integrand is tiny).
    An infinite end is cut 40 past the peak."""
    import mpmath

    with mpmath.workdps(50):
        sign = -1 if a + b < 0 else 1
        lo, hi = (mpmath.mpf(-b), mpmath.mpf(-a)) if sign < 0 else (mpmath.mpf(a), mpmath.mpf(b))
        z = mpmath.ncdf(-lo) - mpmath.ncdf(-hi)  # the mass, its upper-tail form
        mean = (mpmath.npdf(lo) - mpmath.npdf(hi)) / z
        c = lo if lo > 0 else mpmath.mpf(0)
        length = min(hi, c + 40) - lo  # past c + 40 the density is below e^-800 of its peak
        m = (mean - lo) / length  # in units of the length from lo: s = (x − lo)/length

        def moment(k: int) -> mpmath.mpf:
            points = sorted({mpmath.mpf(0), mpmath.mpf(1), m} | ({-lo / length} if lo < 0 < hi else set()))
            x = lambda s: lo + length * s
            return mpmath.quad(lambda s: (s - m) ** k * mpmath.exp(-(x(s) ** 2 - c**2) / 2), points)

        m0 = moment(0)
        mu2 = moment(2) / m0 * length**2
        mu4 = moment(4) / m0 * length**4
        return float(sign * mean), float(mu2), float(mu4 / mu2**2)


@pytest.mark.parametrize(("a", "b"), _INTERVALS)
def test_moments_match_high_precision_quadrature(a, b) -> None:
    import mpmath

    with mpmath.workdps(60):
        mass = float(mpmath.ncdf(b) - mpmath.ncdf(a) if a + b < 0 else mpmath.ncdf(-a) - mpmath.ncdf(-b))
    if mass == 0.0:  # below the smallest double ([38 − 1e-12, 38]): no mass in double precision
        with pytest.raises(ValueError, match="no probability mass"):
            normal_math.truncated_moments(a, b)
        return
    mean, var, kurt = normal_math.truncated_moments(a, b)
    ref_mean, ref_var, ref_kurt = _exact_moments(a, b)
    assert mean == pytest.approx(ref_mean, rel=1e-9, abs=0.0 if ref_mean else 1e-300)
    assert var == pytest.approx(ref_var, rel=1e-9)
    assert kurt == pytest.approx(ref_kurt, rel=1e-9)


@pytest.mark.parametrize(("a", "b"), [(-2.0, 2.0 + 1e-10), (-1e-5, 1e-5), (-1.0, 3.0), (-3.0, 1e-300)])
def test_moments_around_zero_match_quadrature(a, b) -> None:
    # Intervals around 0: the mean is a small difference (a near-symmetric interval) or the
    # interval is narrow, where 1 + (aφ(a) − bφ(b))/Z cancels to nothing.
    for got, ref in zip(normal_math.truncated_moments(a, b), _exact_moments(a, b), strict=True):
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-300)


def test_issue_16_figures() -> None:
    # The measured failures: [8, 9] against its mirror image, the one-sided far tail, [0, 1e-4]'s
    # kurtosis (a uniform's 1.8) and the std of [−1e-5, 1e-5] (a uniform's t/√3).
    assert normal_math.truncated_moments(8.0, 9.0)[1] == pytest.approx(0.01414854278, rel=1e-9)
    assert normal_math.truncated_moments(8.0, 9.0)[0] == -normal_math.truncated_moments(-9.0, -8.0)[0]
    assert normal_math.truncated_mass(8.5, math.inf) == pytest.approx(stats.norm.sf(8.5), rel=1e-12)
    assert normal_math.truncated_moments(0.0, 1e-4)[2] == pytest.approx(1.8, rel=1e-6)
    assert normal_math.truncated_std(-1e-5, 1e-5) == pytest.approx(1e-5 / math.sqrt(3.0), rel=1e-9)


@pytest.mark.parametrize(
    ("a", "b"),
    [(8.5, math.inf), (-math.inf, -8.5), (37.0, 38.0), (4.2, 4.4), (-3.0, 1e-3), (0.5, 0.5 + 1e-9), (-40.0, -37.5)],
)
def test_mass_from_the_representable_side(a, b) -> None:
    import mpmath

    with mpmath.workdps(60):
        ref = float(mpmath.ncdf(b) - mpmath.ncdf(a))
    assert normal_math.truncated_mass(a, b) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (8.0, 9.0),
        (-9.0, -8.0),
        (4.2, 4.4),
        (30.0, math.inf),
        (-math.inf, -37.0),
        (-2.0, 2.0),
        (-1.0, 40.0),
        (-4.4, -4.2),
    ],
)
def test_cdf_is_tail_accurate(a, b) -> None:
    x = np.linspace(max(a, -45.0), min(b, 45.0), 9)
    with np.errstate(all="ignore"):
        ref = stats.truncnorm(a, b).cdf(x)  # SciPy's truncnorm works in log space in the tails
    np.testing.assert_allclose(normal_math.truncated_cdf(x, a, b), ref, rtol=1e-9, atol=1e-12)


def test_log_ndtr_matches_scipy() -> None:
    x = np.concatenate([-np.logspace(-3, 2.5, 400), np.logspace(-3, 1.5, 200)])
    # 1e-12: far out on the right, log Φ(x) = log1p(−Q(x)) carries math.erfc's own ~1e-13 error.
    np.testing.assert_allclose(normal_math.log_ndtr_array(x), special.log_ndtr(x), rtol=1e-12)


def test_distribution_and_spec_use_the_exact_moments() -> None:
    import initscale
    from initscale.distributions import TruncatedNormalDist

    dist = TruncatedNormalDist(loc=0.0, sigma=1.0, low=8.0, high=9.0)
    assert dist.mean == pytest.approx(8.121188992979798, rel=1e-12)
    assert dist.variance == pytest.approx(0.01414854278274811, rel=1e-12)
    # [8.5, inf) holds 9.5e-18 of the mass, as (−inf, −8.5] does: both are accepted.
    assert initscale.TruncatedNormal(1.0, lower=8.5, upper=math.inf).std() == pytest.approx(
        initscale.TruncatedNormal(1.0, lower=-math.inf, upper=-8.5).std(), rel=1e-12
    )
    assert TruncatedNormalDist(0.0, 1.0, 0.0, 1e-4).kurtosis == pytest.approx(1.8, rel=1e-6)


def test_the_array_forms_equal_the_scalar_functions() -> None:
    """normal_cdf_array is math.erfc per element (the same bits as normal_cdf); log_ndtr_array takes
    log_ndtr's three branches on whole arrays, within one ulp of it (NumPy's log/log1p against
    math's), with the same infinities, zeros and NaN, in any shape."""
    x = np.concatenate(
        [np.linspace(-45.0, 45.0, 20001), [-np.inf, np.inf, np.nan, -30.0, -30.000000000000004, 0.0, -0.0, 5e-324]]
    )
    cdf = normal_math.normal_cdf_array(x)
    assert np.array_equal(cdf, [normal_math.normal_cdf(v) for v in x], equal_nan=True)
    log = normal_math.log_ndtr_array(x)
    ref = np.array([normal_math.log_ndtr(v) for v in x])
    finite = np.isfinite(ref) & (ref != 0.0)
    assert np.all(np.abs(log[finite] - ref[finite]) <= np.spacing(np.abs(ref[finite])))
    assert np.array_equal(log[~finite], ref[~finite], equal_nan=True)
    grid = x[:12].reshape(3, 4)
    assert normal_math.log_ndtr_array(grid).shape == (3, 4) and normal_math.normal_cdf_array(grid).shape == (3, 4)
    assert normal_math.log_ndtr_array(-2.0).shape == () and normal_math.log_ndtr_array(-2.0) == normal_math.log_ndtr(
        -2.0
    )
