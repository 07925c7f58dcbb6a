"""Statistical checks with tolerances derived from the sampling distribution.

Each check states its false-alarm rate. With Z = 4.5 a two-sided normal check fires falsely
with probability 2·(1 − Φ(4.5)) ≈ 6.8e-6; the KS test runs at α = 1e-4; the bound-approach
check fails falsely with probability 1e-6 per bound. Seeds are fixed, so runs are repeatable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from initscale.distributions import Distribution

Z = 4.5
KS_ALPHA = 1e-4
APPROACH_MISS = 1e-6


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def check_samples(x: np.ndarray, dist: Distribution, rounding: float = 0.0) -> list[Check]:
    """Second moment, mean, support, bound approach and KS against ``dist``'s exact CDF.

    ``rounding`` is the unit roundoff of the dtype the samples were made in (2^-24 for float32):
    a value inside the bounds may round to a neighbour up to |bound|·rounding outside them."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    mu, var, kurt = dist.mean, dist.variance, dist.kurtosis
    if var == 0.0:  # a constant: every value exactly
        return [Check("constant", bool(np.all(x == mu)), f"min={x.min():.6g} max={x.max():.6g} expected={mu:.6g}")]
    out = []
    # E[(x-μ)²] estimated by m2 has sd var·sqrt((κ−1)/n) (delta method for iid draws).
    m2 = float(np.mean((x - mu) ** 2))
    tol = Z * var * math.sqrt((kurt - 1.0) / n)
    out.append(Check("second_moment", abs(m2 - var) <= tol, f"m2={m2:.6g} expected={var:.6g} tol={tol:.3g}"))
    # the sample mean has standard error sqrt(var/n).
    tol_mean = Z * math.sqrt(var / n)
    xbar = float(np.mean(x))
    out.append(Check("mean", abs(xbar - mu) <= tol_mean, f"mean={xbar:.6g} expected={mu:.6g} tol={tol_mean:.3g}"))
    if dist.bounds is not None and hasattr(dist, "cdf"):
        low, high = dist.bounds
        inside = bool(np.all((x >= low - abs(low) * rounding) & (x <= high + abs(high) * rounding)))
        out.append(Check("support", inside, f"min={x.min():.6g} max={x.max():.6g} bounds=[{low:.6g}, {high:.6g}]"))
        # P(all n draws miss the top mass q) = (1−q)^n = APPROACH_MISS  =>  q = 1 − APPROACH_MISS^(1/n).
        q = 1.0 - APPROACH_MISS ** (1.0 / n)
        f_max, f_min = float(dist.cdf(x.max())), float(dist.cdf(x.min()))
        out.append(Check("approaches_bounds", f_max >= 1.0 - q and f_min <= q,
                         f"F(min)={f_min:.3g} F(max)={f_max:.3g} q={q:.3g}"))
    if not hasattr(dist, "cdf"):
        return out
    p = stats.kstest(x, lambda t: dist.cdf(t)).pvalue
    out.append(Check("ks", p >= KS_ALPHA, f"KS p={p:.3g} alpha={KS_ALPHA}"))
    return out


def failures(x: np.ndarray, dist: Distribution, rounding: float = 0.0) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in check_samples(x, dist, rounding) if not c.ok]


def same_distribution(a: np.ndarray, b: np.ndarray) -> list[str]:
    """Two-sample KS at α = KS_ALPHA, plus second moments within Z standard errors of their
    difference: Var(m2) ≈ (m4 − m2²)/n for each sample."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    out = []
    p = stats.ks_2samp(a, b).pvalue
    if p < KS_ALPHA:
        out.append(f"ks_2samp: p={p:.3g} < alpha={KS_ALPHA}")
    m2a, m2b = float(np.mean(a**2)), float(np.mean(b**2))
    se = math.sqrt((float(np.mean(a**4)) - m2a**2) / a.size + (float(np.mean(b**4)) - m2b**2) / b.size)
    if abs(m2a - m2b) > Z * se:
        out.append(f"second moments {m2a:.6g} vs {m2b:.6g} differ by more than {Z}·{se:.3g}")
    return out
