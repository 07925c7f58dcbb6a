"""Resolved sampling distributions: what a spec becomes once the fans are known.

A spec plus fans compiles to one of these five frozen descriptions; every adapter only has to
know how to draw each of them natively. Each gives its exact mean, variance, kurtosis, support
and, where defined, CDF (for whole-distribution tests).

=====================  ===========================================  =====================
distribution           sampler parameters                           support
=====================  ===========================================  =====================
``NormalDist``         mean, std                                    unbounded
``TruncatedNormalDist`` loc and sigma of the normal *before*         [low, high]
                       truncation, absolute bounds low/high
``UniformDist``        low, high                                    [low, high]
``ConstantDist``       value                                        {value}
``OrthogonalDist``     gain (rows, cols of each orthogonal block)   [-gain, gain]
=====================  ===========================================  =====================

``native`` (normal, truncated normal, uniform and orthogonal; from the spec): None, or the framework whose own
sampler calls must draw it ("torch": torch.* presets), so that in that framework the same
generator gives the values of its own init function; it changes no number of the distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import normal_math

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray
else:
    from ._lazy import numpy as np

__all__ = [
    "ConstantDist",
    "Distribution",
    "NormalDist",
    "OrthogonalDist",
    "TruncatedNormalDist",
    "UniformDist",
]


@dataclass(frozen=True)
class NormalDist:
    """N(mean, std²), untruncated."""

    mean: float
    std: float
    native: str | None = None  # see the module docstring

    @property
    def variance(self) -> float:
        return self.std**2

    @property
    def kurtosis(self) -> float:
        return 3.0

    @property
    def bounds(self) -> None:
        return None

    @property
    def sampler_parameter(self) -> float:
        return self.std

    def cdf(self, x: ArrayLike) -> NDArray[np.float64]:
        return normal_math.normal_cdf_array((np.asarray(x, dtype=np.float64) - self.mean) / self.std)


@dataclass(frozen=True)
class TruncatedNormalDist:
    """N(loc, sigma²) conditioned on [low, high]; ``sigma`` is the pre-truncation std.

    Sampled by inverse CDF: u ~ U(Φ(α), Φ(β)), x = loc + sigma·Φ⁻¹(u), with
    α = (low − loc)/sigma and β = (high − loc)/sigma, so the bounds are exact.
    ``mean`` and ``std`` are those of the truncated distribution, and with ``kurtosis`` exact to
    about 1e-13 relative for every interval with mass in double precision, in either tail
    (:func:`initscale.normal_math.truncated_moments`).
    """

    loc: float
    sigma: float
    low: float
    high: float
    native: str | None = None  # see the module docstring

    @property
    def standard_bounds(self) -> tuple[float, float]:
        """(α, β): the bounds in units of sigma around ``loc``."""
        return (self.low - self.loc) / self.sigma, (self.high - self.loc) / self.sigma

    @property
    def _moments(self) -> tuple[float, float, float]:
        return normal_math.truncated_moments(*self.standard_bounds)

    @property
    def mean(self) -> float:
        """The mean after truncation (differs from ``loc`` for asymmetric bounds)."""
        return self.loc + self.sigma * self._moments[0]

    @property
    def variance(self) -> float:
        return self.sigma**2 * self._moments[1]

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def kurtosis(self) -> float:
        return self._moments[2]

    @property
    def bounds(self) -> tuple[float, float]:
        return self.low, self.high

    @property
    def sampler_parameter(self) -> float:
        return self.sigma

    def cdf(self, x: ArrayLike) -> NDArray[np.float64]:
        """Accurate in both tails (:func:`initscale.normal_math.truncated_cdf`)."""
        z = (np.clip(np.asarray(x, dtype=np.float64), self.low, self.high) - self.loc) / self.sigma
        return normal_math.truncated_cdf(z, *self.standard_bounds)


@dataclass(frozen=True)
class UniformDist:
    """U(low, high)."""

    low: float
    high: float
    native: str | None = None  # see the module docstring

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2.0

    @property
    def variance(self) -> float:
        return (self.high - self.low) ** 2 / 12.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def kurtosis(self) -> float:
        return 1.8

    @property
    def bounds(self) -> tuple[float, float]:
        return self.low, self.high

    @property
    def sampler_parameter(self) -> float:
        """The half-width: the ``limit`` of U(−limit, limit)."""
        return (self.high - self.low) / 2.0

    def cdf(self, x: ArrayLike) -> NDArray[np.float64]:
        return np.asarray(
            np.clip((np.asarray(x, dtype=np.float64) - self.low) / (self.high - self.low), 0.0, 1.0),
            dtype=np.float64,
        )


@dataclass(frozen=True)
class ConstantDist:
    """Every element equals ``value``."""

    value: float

    @property
    def mean(self) -> float:
        return self.value

    @property
    def variance(self) -> float:
        return 0.0

    @property
    def std(self) -> float:
        return 0.0

    @property
    def kurtosis(self) -> float:
        return math.nan

    @property
    def bounds(self) -> tuple[float, float]:
        return self.value, self.value

    @property
    def sampler_parameter(self) -> float:
        return self.value

    def cdf(self, x: ArrayLike) -> NDArray[np.float64]:
        return (np.asarray(x, dtype=np.float64) >= self.value).astype(np.float64)


@dataclass(frozen=True)
class OrthogonalDist:
    """Each (rows × cols) block is ``gain`` times a Haar-random (semi-)orthogonal matrix.

    Its squared entries sum to gain²·min(rows, cols) exactly, so the mean square of an entry
    (the variance about zero) is gain²/max(rows, cols). ``native="torch"``: drawn in
    ``torch.nn.init.orthogonal_``'s order (:class:`initscale.Orthogonal`).
    """

    gain: float
    rows: int
    cols: int
    native: str | None = None

    @property
    def mean(self) -> float:
        return 0.0

    @property
    def variance(self) -> float:
        return self.gain**2 / max(self.rows, self.cols, 1)

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    @property
    def kurtosis(self) -> float:
        # Entries of a Haar orthogonal n-vector column: x_i² ~ Beta(1/2, (n−1)/2), kurtosis 3n/(n+2).
        n = max(self.rows, self.cols, 1)
        return 3.0 * n / (n + 2.0)

    @property
    def bounds(self) -> tuple[float, float]:
        g = abs(self.gain)
        return -g, g

    @property
    def sampler_parameter(self) -> float:
        return self.gain


Distribution = NormalDist | TruncatedNormalDist | UniformDist | ConstantDist | OrthogonalDist
