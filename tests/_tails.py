"""Far-tail, one-sided and narrow truncated normals (issue 16): the intervals every adapter draws
and the check they must pass.

Each interval is in units of the pre-truncation std around 0 (``TruncatedNormal(1.0, lower=a,
upper=b)``), drawn 100,000 times. ``tail_failures`` returns the failed checks as strings (empty
when all pass): every value finite; then :func:`initscale.testing.check_samples` (support, bound
approach, KS at α = 1e-4 against initscale's tail-accurate CDF, and in float32/float64 the two
moment checks at z = 4.5); and a second KS at α = 1e-4 against SciPy's ``truncnorm`` CDF (its own
log-space tail formulas), so the reference does not rest on initscale's maths alone. In bfloat16
and float16 the moment checks are left out: far out the stored dtype's spacing (bfloat16: 0.125
at 20) exceeds the interval's std, so rounding moves the moments by more than sampling does,
while the rounding-aware KS and the support check still apply.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

import initscale
from initscale import testing
from initscale.distributions import TruncatedNormalDist

TAIL_CASES = (
    (3.0, math.inf),  # issue 16: 14 in 1M values inf or 3.4e38 on JAX float32
    (-math.inf, -4.5),  # 4,325 of 1M
    (6.0, math.inf),  # every value
    (5.5, 6.5),  # collapsed onto 6.5
    (4.2, 4.4),  # 267 distinct values in 200k
    (-6.5, -5.5),
    (3.9, 4.0),  # narrow inside ±4: mass 1.6e-5
    (8.5, math.inf),  # beyond erf's reach in float64 too
    (-12.0, -11.5),  # beyond Φ's normal range in float32... nearly
    (20.0, 20.5),  # Φ(−20) = 2.8e-89 underflows in float32
    (-math.inf, -30.0),
)
TAIL_IDS = [f"[{a:g},{b:g}]" for a, b in TAIL_CASES]
TAIL_N = 100_000
TAIL_SHAPE = (400, 250)


def tail_spec(a: float, b: float) -> initscale.TruncatedNormal:
    return initscale.TruncatedNormal(1.0, lower=a, upper=b)


def tail_failures(x: Any, a: float, b: float) -> list[str]:
    values, rounding = testing.to_numpy(x)
    out = []
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        out.append(f"finite: {bad} of {values.size} values are not finite")
        values = values[np.isfinite(values)]
        if values.size < 2:
            return out
    dist = TruncatedNormalDist(0.0, 1.0, a, b)
    coarse = rounding > 2.0**-24  # bfloat16 / float16
    report = testing.check_samples(values, dist, rounding=rounding)
    out += [
        f"{c.name}: {c}" for c in report.checks if not c.ok and not (coarse and c.name in ("second_moment", "mean"))
    ]
    d = testing.ks_statistic(np.sort(values), lambda t: stats.truncnorm.cdf(t, a, b), slack=2.0 * rounding)
    p = testing.kolmogorov_pvalue(d, values.size)
    if p < testing.KS_ALPHA:
        out.append(f"ks_scipy: D={d:.4g} p={p:.3g}")
    return out
