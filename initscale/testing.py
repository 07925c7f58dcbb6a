"""Statistical checks for your own tests: do these weights have the distribution the spec says?

Every check states its false-alarm rate (the chance it fails on correct samples), so a suite
built on them is never flaky by design and never passes whatever the code does:

- **second moment**: the sample E[(x−μ)²] within z·σ²·√((κ−1)/n) of σ² (κ the exact kurtosis of
  the distribution; delta method for n iid draws). Two-sided normal: 2·(1−Φ(z)), 6.8e-6 at z = 4.5.
- **mean**: within z·σ/√n of μ; same rate.
- **support**: every value inside the exact bounds of a uniform or truncated draw, widened only
  by the rounding of the samples' own dtype (a value inside the bounds may round just outside);
  never fails on correct samples.
- **approaches bounds**: the extreme values reach the outer q-quantiles, with q chosen so that
  correct samples miss with probability 1e-6 per bound: (1−q)ⁿ = 1e-6. Each extreme is widened
  by one unit in the last place of the samples' dtype, since stored bounded draws are clipped to
  the representable values inside the bounds (:mod:`initscale.rounding`).
- **KS**: the Kolmogorov–Smirnov statistic against the exact CDF, rejected at p < α (1e-4);
  for rounded dtypes each value is compared at the edge of its one-ulp band least favourable to
  a rejection (see :func:`ks_statistic`), so bfloat16 weights are not failed for being rounded.
  p-values use the asymptotic Kolmogorov law with Stephens' finite-n correction
  λ = (√n + 0.12 + 0.11/√n)·D, accurate to well under 1 % of α for n ≥ 100.

A constant distribution is checked exactly. :func:`same_distribution` compares two samples
(a two-sample KS and the difference of second moments in units of its standard error), for
native-vs-initscale parity.

Example:
    >>> import numpy as np, initscale
    >>> from initscale import testing
    >>> spec = initscale.presets.get("he_uniform")
    >>> fans = initscale.compute_fans((256, 128), "keras")
    >>> w = initscale.numpy.initializer(spec)((256, 128), rng=np.random.default_rng(0))
    >>> report = testing.check_samples(w, spec, fans)
    >>> bool(report), [c.name for c in report.checks]
    (True, ['second_moment', 'mean', 'support', 'approaches_bounds', 'ks'])
    >>> bad = w * np.sqrt(3)            # the planted bug: limit sqrt(3·var)·sqrt(3)
    >>> bool(testing.check_samples(bad, spec, fans))
    False
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .distributions import Distribution
from .fans import Fans
from .specs import Spec

__all__ = [
    "APPROACH_MISS",
    "KS_ALPHA",
    "Check",
    "CheckReport",
    "Z",
    "assert_same_distribution",
    "assert_samples",
    "check_samples",
    "kolmogorov_pvalue",
    "ks_statistic",
    "same_distribution",
    "to_numpy",
    "unit_roundoff",
]

Z = 4.5
KS_ALPHA = 1e-4
APPROACH_MISS = 1e-6


@dataclass(frozen=True)
class Check:
    """One statistic, what it should be, how far it may be, and whether it was."""

    name: str
    ok: bool
    statistic: float
    expected: float
    tolerance: float
    false_alarm: float
    detail: str = ""

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return (
            f"{self.name:<18} {verdict:<4}  statistic={self.statistic:.6g}  expected={self.expected:.6g}  "
            f"tolerance={self.tolerance:.3g}  false alarm={self.false_alarm:.2g}"
            + (f"  ({self.detail})" if self.detail else "")
        )


@dataclass(frozen=True)
class CheckReport:
    """The checks run on one sample; truthy when every check passed; ``print`` shows them all."""

    checks: tuple[Check, ...]
    n: int

    def __bool__(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[str]:
        """One line per failed check (empty when all passed)."""
        return [str(c) for c in self.checks if not c.ok]

    @property
    def false_alarm(self) -> float:
        """Bound on the chance that correct samples fail any check (union bound)."""
        return min(1.0, sum(c.false_alarm for c in self.checks))

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"No check named {name!r}; checks: {[c.name for c in self.checks]}.")

    def __str__(self) -> str:
        head = (
            f"{'passed' if self else 'FAILED'}: {len(self.checks)} checks on n={self.n} samples "
            f"(false-alarm rate <= {self.false_alarm:.2g})"
        )
        return "\n".join([head, *(f"  {c}" for c in self.checks)])


def unit_roundoff(dtype: Any) -> float:
    """The relative rounding of a floating dtype (2⁻²⁴ for float32, 2⁻⁸ for bfloat16); 0 for float64
    and wider, where the checks' own arithmetic is the reference."""
    name = str(getattr(dtype, "name", dtype)).replace("torch.", "")
    table = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "complex64": 2.0**-24}
    return table.get(name, 0.0)


def to_numpy(samples: Any) -> tuple[NDArray[np.float64], float]:
    """Flatten ``samples`` (NumPy, torch, JAX, TensorFlow or Keras arrays) to float64, with the unit
    roundoff of their own dtype."""
    x = samples
    if hasattr(x, "detach"):  # torch: leave autograd, move to host, widen what NumPy cannot hold
        x = x.detach().cpu()
        rounding = unit_roundoff(x.dtype)
        if "bfloat16" in str(x.dtype):
            x = x.float()
        return np.asarray(x.numpy(), dtype=np.float64).ravel(), rounding
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # TensorFlow eager, Keras variables
        x = x.numpy()
    arr = np.asarray(x)
    return arr.astype(np.float64).ravel(), unit_roundoff(arr.dtype)


def kolmogorov_pvalue(d: float, n: float) -> float:
    """P(D_n ≥ d) for the KS statistic of ``n`` iid draws (asymptotic law, Stephens' correction)."""
    if d <= 0.0:
        return 1.0
    sqrt_n = math.sqrt(n)
    lam = (sqrt_n + 0.12 + 0.11 / sqrt_n) * d
    if lam < 0.2:
        return 1.0
    total, sign = 0.0, 1.0
    for k in range(1, 101):
        term = sign * math.exp(-2.0 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-16:
            break
        sign = -sign
    return max(0.0, min(1.0, 2.0 * total))


def ks_statistic(
    sorted_x: NDArray[np.float64], cdf: Callable[[NDArray[np.float64]], NDArray[np.float64]], slack: float = 0.0
) -> float:
    """sup |F_n − F| for sorted samples and a vectorized CDF.

    ``slack`` > 0 is for rounded samples (2× the unit roundoff of their dtype): each stored value
    x stands for a draw in [x − slack·|x|, x + slack·|x|], and the statistic takes the CDF at the
    end of that band least favourable to a rejection. Rounding is monotonic, so this never
    exceeds the KS statistic of the unrounded draws and keeps the test's false-alarm rate ≤ α.
    """
    n = sorted_x.size
    width = slack * np.abs(sorted_x)
    above = np.arange(1, n + 1) / n - np.asarray(cdf(sorted_x + width), dtype=np.float64)
    below = np.asarray(cdf(sorted_x - width), dtype=np.float64) - np.arange(0, n) / n
    return float(max(above.max(), below.max()))


def _resolve(spec: Spec | Distribution, fans: Fans | None) -> Distribution:
    if isinstance(spec, Spec):
        if not spec.fixed_scale and fans is None:
            raise ValueError(
                f"{spec!r} scales with the fans: pass `fans` (e.g. initscale.compute_fans(shape, layout))."
            )
        return spec.resolve(fans)  # a fixed-scale spec ignores the fans
    if hasattr(spec, "variance") and hasattr(spec, "mean"):
        return spec
    raise TypeError(f"Argument `spec` must be an initscale spec or distribution. Received: {spec!r}.")


def check_samples(
    samples: Any,
    spec: Spec | Distribution,
    fans: Fans | None = None,
    *,
    z: float = Z,
    alpha: float = KS_ALPHA,
    rounding: float | None = None,
) -> CheckReport:
    """Run every check of ``samples`` against the exact distribution of ``spec`` at ``fans``.

    Args:
        samples: the weights (any framework's array; flattened).
        spec: an initscale spec (with ``fans``) or a resolved distribution.
        z: the two-sided normal quantile for the moment checks (false alarm 2·(1−Φ(z))).
        alpha: the KS test's level.
        rounding: the unit roundoff of the dtype the samples were made in; by default read from
            ``samples``' own dtype.
    """
    x, own_rounding = to_numpy(samples)
    rounding = own_rounding if rounding is None else rounding
    dist = _resolve(spec, fans)
    n = x.size
    if n < 2:
        raise ValueError(f"check_samples needs at least 2 samples. Received: {n}.")
    mu, var = float(dist.mean), float(dist.variance)
    if var == 0.0:  # a constant: every value exactly
        worst = float(np.max(np.abs(x - mu)))
        return CheckReport((Check("constant", worst == 0.0, worst, 0.0, 0.0, 0.0, "max |x − value|"),), n)
    false_z = math.erfc(z / math.sqrt(2.0))
    checks = []
    kurt = float(dist.kurtosis)
    m2 = float(np.mean((x - mu) ** 2))
    tol = z * var * math.sqrt((kurt - 1.0) / n)  # sd of the sample second moment: σ²·√((κ−1)/n)
    checks.append(Check("second_moment", abs(m2 - var) <= tol, m2, var, tol, false_z))
    xbar = float(np.mean(x))
    tol_mean = z * math.sqrt(var / n)  # standard error of the mean
    checks.append(Check("mean", abs(xbar - mu) <= tol_mean, xbar, mu, tol_mean, false_z))
    cdf = getattr(dist, "cdf", None)
    if dist.bounds is not None and cdf is not None:
        low, high = dist.bounds
        # an infinite bound needs no slack (inf·0 would be NaN and fail every one-sided draw)
        slack_low, slack_high = (0.0 if math.isinf(t) else abs(t) * rounding for t in (low, high))
        inside = bool(np.all((x >= low - slack_low) & (x <= high + slack_high)))
        worst = float(max(low - x.min(), x.max() - high, 0.0))
        checks.append(
            Check(
                "support",
                inside,
                worst,
                0.0,
                max(slack_low, slack_high),
                0.0,
                f"min={x.min():.6g} max={x.max():.6g} bounds=[{low:.6g}, {high:.6g}]",
            )
        )
        q = -math.expm1(math.log(APPROACH_MISS) / n)  # (1 − q)ⁿ = APPROACH_MISS
        # A stored extreme stands for any draw within one ulp (2·rounding relative) of it: a draw
        # above the largest representable value inside a bound is stored as that value.
        top, bottom = float(x.max()), float(x.min())
        f_max = float(cdf(top + 2.0 * rounding * abs(top)))
        f_min = float(cdf(bottom - 2.0 * rounding * abs(bottom)))
        reach = max(1.0 - f_max, f_min)
        checks.append(
            Check(
                "approaches_bounds",
                f_max >= 1.0 - q and f_min <= q,
                reach,
                0.0,
                q,
                2 * APPROACH_MISS,
                "the tail mass beyond the extreme values",
            )
        )
    if cdf is not None:
        d = ks_statistic(np.sort(x), lambda t: np.asarray(cdf(t)), slack=2.0 * rounding)
        p = kolmogorov_pvalue(d, n)
        checks.append(Check("ks", p >= alpha, p, 1.0, alpha, alpha, f"D={d:.4g}"))
    return CheckReport(tuple(checks), n)


def assert_samples(samples: Any, spec: Spec | Distribution, fans: Fans | None = None, **kwargs: Any) -> None:
    """:func:`check_samples`, raising AssertionError with the full report when a check fails."""
    report = check_samples(samples, spec, fans, **kwargs)
    if not report:
        raise AssertionError(str(report))


def same_distribution(a: Any, b: Any, *, z: float = Z, alpha: float = KS_ALPHA) -> CheckReport:
    """Two samples from one distribution? A two-sample KS at ``alpha`` (effective n = nm/(n+m))
    and the second moments within z standard errors of their difference, each standard error
    from its own sample: Var(m2) ≈ (m4 − m2²)/n."""
    x, _ = to_numpy(a)
    y, _ = to_numpy(b)
    xs, ys = np.sort(x), np.sort(y)
    grid = np.concatenate([xs, ys])
    d = float(
        np.max(
            np.abs(
                np.searchsorted(xs, grid, side="right") / xs.size - np.searchsorted(ys, grid, side="right") / ys.size
            )
        )
    )
    p = kolmogorov_pvalue(d, xs.size * ys.size / (xs.size + ys.size))
    m2x, m2y = float(np.mean(x**2)), float(np.mean(y**2))
    se = math.sqrt(max(float(np.mean(x**4)) - m2x**2, 0.0) / x.size + max(float(np.mean(y**4)) - m2y**2, 0.0) / y.size)
    checks = (
        Check("ks_2samp", p >= alpha, p, 1.0, alpha, alpha, f"D={d:.4g}"),
        Check(
            "second_moments",
            abs(m2x - m2y) <= z * se,
            m2x - m2y,
            0.0,
            z * se,
            math.erfc(z / math.sqrt(2.0)),
            f"{m2x:.6g} vs {m2y:.6g}",
        ),
    )
    return CheckReport(checks, min(x.size, y.size))


def assert_same_distribution(a: Any, b: Any, **kwargs: Any) -> None:
    """:func:`same_distribution`, raising AssertionError with the report when a check fails."""
    report = same_distribution(a, b, **kwargs)
    if not report:
        raise AssertionError(str(report))
