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
        normal_math.truncated_moments(40.0, 41.0)
