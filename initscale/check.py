"""Check a freshly initialized model's weights: the silent init bugs, flagged by name.

The framework faces (``initscale.torch.check``, ``initscale.keras.check``,
``initscale.jax.check``, ``initscale check FILE``) walk a model or a checkpoint and hand this module
one :class:`Entry` per parameter: its name, its values as a NumPy array, its role in its layer
(:data:`initscale.reinit.ROLES`), the padding row of an embedding, the names it is tied to, and,
when known, the distribution it should have (:class:`Expected`). :func:`check_arrays` measures
each one (mean, std, min, max over the finite values) and returns a :class:`CheckReport`: one
:class:`CheckRow` per parameter with its ``.flags``, a table (``str(report)``) and JSON
(:meth:`CheckReport.to_dict`). A report is truthy when nothing is flagged.

**What it is for.** ``check`` is about *freshly initialized* models. Flags that only hold at
init (norm scales all ones, the expected distributions) are raised only with ``fresh=True``
(the default); ``fresh=False`` keeps the flags that hold at any time (non-finite values,
uninitialized memory, padding rows, truncation bounds that truncate nothing).

**Where expectations come from.** A rule set, the same rules ``reinit_`` takes (one spec, or
a mapping pattern -> spec): :func:`expectations` turns the plan ``reinit_`` would follow
(:func:`initscale.reinit.plan`, i.e. its dry-run report) into one :class:`Expected` per
parameter, defaults included (biases -> zeros, norm scales -> ones, norm offsets -> zeros).
A recipe (``initscale.recipes``, a whole-model rule set) plugs in the same way
(:func:`rules_for`). Without rules nothing is expected and only the model-agnostic flags apply.

**Flags** (:data:`FLAGS`; each names the parameter and says why):

- ``non_finite``: a NaN or ±inf anywhere.
- ``denormal``: more subnormal values (0 < |x| < the dtype's smallest normal) than chance
  gives. A weight whose density at 0 is at most a normal's of the same std σ (normal, uniform,
  truncated normal with symmetric bounds) lands there with probability p₀ ≤ 2·tiny/(σ√(2π))
  per value; flagged when the Chernoff bound P(K ≥ k) ≤ exp(−n·D(k/n ‖ p₀)) on k of n such
  values is below the per-test level. (float16 weights do hold subnormals by chance.)
- ``all_zero``: a weight of 2+ axes that is all zeros (unless its expectation is zeros, or its
  role is a bias or a norm offset, which start at zero whatever their shape: Keras
  MultiHeadAttention's (heads, head_dim) query/key/value biases).
- ``repeated_rows``: more rows (slices along the unit axis) equal to an earlier row than chance
  gives. Two iid rows of m values are equal with probability q = p_eᵐ, p_e the chance that two
  values collide, estimated from the weight itself as Σ c(c−1)/(N(N−1)) over the counts c of
  its distinct values; among R rows the expected number of equal pairs is λ = C(R, 2)·q, and
  D repeated rows need at least D equal pairs, so P(D ≥ d) ≤ λ/d (Markov); flagged below the
  per-test level.
- ``norm_scale_not_one`` (fresh only): a normalization layer's scale that is not all ones.
- ``padding_row_not_zero``: an embedding's ``padding_idx`` row that is not all zeros.
- ``std_off`` (fresh, expected known, n ≥ :data:`N_MIN`): the std about the expected mean,
  s = √(mean((x − μ)²)), off the expected σ by more than its sampling tolerance:
  the sample second moment of n iid values with kurtosis κ has relative sd √((κ−1)/n)
  (exactly, about the known mean), so by the delta method s/σ has relative sd
  √((κ−1)/(4n)); flagged when |s/σ − 1| > z·√((κ−1)/(4n)).
- ``mean_off`` (fresh, expected known, n ≥ N_MIN): |x̄ − μ| > z·σ/√n.
- ``out_of_bounds`` (fresh, expected bounded): a value outside the expected support, widened by
  the unit roundoff of the weight's dtype (a value drawn inside may round just outside). Never
  raised on correct values.
- ``not_constant`` (fresh, expected a constant): a value that differs from it.
- ``truncation_no_op``: the expected truncated normal has a finite bound beyond
  :data:`TRUNCATION_NO_OP` = 6 σ from its centre, so it truncates (almost) nothing: a value lies
  beyond 6σ with probability 2·(1 − Φ(6)) ≈ 2e-9. The classic case is
  ``trunc_normal_(w, std=0.02)`` with torch's absolute a=-2, b=2, i.e. ±100σ:
  ``TruncatedNormal(0.02, lower=-2, upper=2, bounds_in="absolute")``.

Tied parameters (one tensor under several names) are checked once and listed (``row.tied``,
``report.tied``), never flagged.

**The statistical level.** The chance flags (``std_off``, ``mean_off``, ``denormal``,
``repeated_rows``) share one family-wise false-alarm rate ``alpha`` (default :data:`ALPHA`)
over the T tests a model gets (2 per parameter with a non-constant expectation and n ≥ N_MIN,
1 per floating parameter for denormals, 1 per parameter of 2+ axes with 2+ rows): Bonferroni,
each test at α/T, i.e. z = Φ⁻¹(1 − α/(2T)) for the two-sided std and mean tests. The std test
uses the normal approximation of s/σ; for normal weights with n ≥ N_MIN = 500 the exact χ²
tail is within a factor 2.2 of the nominal rate for every z ≤ 7 (``tests/test_check.py``
computes it), and lighter-tailed (uniform, truncated) weights do better.

Example:
    >>> import numpy as np
    >>> from initscale.check import Entry, Expected, check_arrays
    >>> from initscale.distributions import NormalDist
    >>> rng = np.random.default_rng(0)
    >>> w = rng.normal(0.0, 0.02, (256, 128)).astype(np.float32)
    >>> good = check_arrays([Entry("fc.weight", w, expected=Expected(NormalDist(0.0, 0.02)))])
    >>> bool(good)
    True
    >>> bad = check_arrays([Entry("fc.weight", 3 * w, expected=Expected(NormalDist(0.0, 0.02)))])
    >>> [(r.name, [f.name for f in r.flags]) for r in bad.flagged]
    [('fc.weight', ['std_off'])]
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from . import _validate, normal_math
from .distributions import ConstantDist, Distribution, NormalDist, OrthogonalDist, TruncatedNormalDist, UniformDist
from .reinit import Param, Plan, Role, plan
from .specs import Spec

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:
    from ._lazy import numpy as np

__all__ = [
    "ALPHA",
    "FLAGS",
    "N_MIN",
    "TRUNCATION_NO_OP",
    "CheckReport",
    "CheckRow",
    "Entry",
    "Expected",
    "Flag",
    "check_arrays",
    "check_state",
    "expectations",
    "load_safetensors",
    "role_from_name",
    "rules_for",
]

ALPHA = 1e-4  # family-wise false-alarm rate of the chance flags, per model
N_MIN = 500  # fewest finite values for the std and mean tests (see the module docstring)
TRUNCATION_NO_OP = 6.0  # a finite truncation bound beyond this many sigmas cuts ~nothing: 2(1-Φ(6)) ≈ 2e-9

FLAGS: tuple[str, ...] = (
    "all_zero",
    "denormal",
    "mean_off",
    "non_finite",
    "norm_scale_not_one",
    "not_constant",
    "out_of_bounds",
    "padding_row_not_zero",
    "repeated_rows",
    "std_off",
    "truncation_no_op",
)

# smallest positive normal number per floating dtype (bfloat16 shares float32's exponent range)
_TINY = {"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126, "float64": 2.0**-1022}
# unit roundoff per dtype: a value drawn in higher precision inside a bound may round this far out
_ROUNDING = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24}


@dataclass(frozen=True)
class Expected:
    """What a parameter should hold at init: the exact distribution, where that comes from
    (``"rule 'Linear'"``, ``"default: norm scale -> ones"``, a recipe) and the spec, if any."""

    dist: Distribution
    source: str = ""
    spec: Spec | None = None


# roles whose default is zeros whatever their shape (see ``all_zero``)
_ZERO_BY_DEFAULT = frozenset({"bias", "norm_offset"})


@dataclass(frozen=True)
class Entry:
    """One parameter handed to :func:`check_arrays` by a framework face.

    Args:
        name: the qualified name.
        values: its values, a NumPy array (bfloat16 widened to float32, with ``dtype`` saying so).
        role: its role in its layer (:data:`initscale.reinit.ROLES`).
        layer: the owning layer's class name.
        expected: the distribution it should have, or None when unknown.
        padding_idx: an embedding's padding row (along axis 0), which must be zeros.
        unit_axis: the axis whose slices are the layer's units (rows for ``repeated_rows``):
            0 for torch's (out, in, ...) weights and for embeddings, -1 for Keras/Flax kernels.
        aliases: the other names of the same tensor (tied parameters).
        dtype: the parameter's own dtype name when ``values`` has another (``"bfloat16"``).
    """

    name: str
    values: Any
    role: str = "other"
    layer: str = "-"
    expected: Expected | None = None
    padding_idx: int | None = None
    unit_axis: int = 0
    aliases: tuple[str, ...] = ()
    dtype: str | None = None


@dataclass(frozen=True)
class Flag:
    """One problem found in a parameter: its name (one of :data:`FLAGS`) and the evidence."""

    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "detail": self.detail}


def _json_number(value: float | None) -> float | str | None:
    """Strict JSON: NaN and infinities as the strings "nan", "inf", "-inf"."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


@dataclass(frozen=True)
class CheckRow:
    """One parameter: what was measured (over its finite values), what was expected, its flags."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layer: str
    role: str
    n: int
    n_finite: int
    mean: float
    std: float
    min: float
    max: float
    expected_mean: float | None = None
    expected_std: float | None = None
    expected_bounds: tuple[float, float] | None = None
    expected_source: str | None = None
    std_ratio: float | None = None  # s/σ, s the rms about the expected mean
    std_tolerance: float | None = None  # the relative tolerance z·√((κ−1)/(4n)) on s/σ
    flags: tuple[Flag, ...] = ()
    tied: tuple[str, ...] = ()
    note: str = ""

    @property
    def ok(self) -> bool:
        """No flag."""
        return not self.flags

    @property
    def flag_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.flags)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN/inf as strings)."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row["shape"] = list(self.shape)
        row["flags"] = [f.to_dict() for f in self.flags]
        row["tied"] = list(self.tied)
        for key in ("mean", "std", "min", "max", "expected_mean", "expected_std", "std_ratio", "std_tolerance"):
            row[key] = _json_number(row[key])
        if self.expected_bounds is not None:
            row["expected_bounds"] = [_json_number(b) for b in self.expected_bounds]
        return row


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class CheckReport(Sequence[CheckRow]):
    """The rows of :func:`check_arrays`, truthy when nothing is flagged.

    ``print(report)`` gives a table, then one line per flag and the tied groups;
    :meth:`to_dict` the same as JSON-safe data. ``alpha`` is the family-wise false-alarm rate
    of the chance flags over ``tests`` tests, each two-sided one at ``z``."""

    rows: tuple[CheckRow, ...]
    alpha: float
    tests: int
    z: float
    fresh: bool = True
    notes: tuple[str, ...] = ()

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, str):
            for row in self.rows:
                if row.name == index or index in row.tied:
                    return row
            raise KeyError(f"No parameter named {index!r} in this report.")
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[CheckRow]:
        return iter(self.rows)

    def __bool__(self) -> bool:
        return not self.flagged

    @property
    def flagged(self) -> tuple[CheckRow, ...]:
        """The rows with at least one flag."""
        return tuple(r for r in self.rows if r.flags)

    @property
    def flags(self) -> dict[str, tuple[str, ...]]:
        """Parameter name -> its flag names, for the flagged parameters."""
        return {r.name: r.flag_names for r in self.rows if r.flags}

    @property
    def tied(self) -> tuple[tuple[str, ...], ...]:
        """Each group of names that share one tensor (checked once, under the first)."""
        return tuple((r.name, *r.tied) for r in self.rows if r.tied)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``json.dumps(report.to_dict(), allow_nan=False)`` works."""
        return {
            "ok": bool(self),
            "fresh": self.fresh,
            "alpha": self.alpha,
            "tests": self.tests,
            "z": _json_number(self.z),
            "flagged": self.flags,
            "tied": [list(t) for t in self.tied],
            "notes": list(self.notes),
            "rows": [r.to_dict() for r in self.rows],
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as strict JSON."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    def __str__(self) -> str:
        header = ("name", "shape", "dtype", "role", "mean", "std", "min", "max", "exp_mean", "exp_std", "s/σ", "flags")
        lines = [header] + [
            (
                r.name,
                "x".join(map(str, r.shape)) or "()",
                r.dtype,
                r.role,
                _cell(r.mean),
                _cell(r.std),
                _cell(r.min),
                _cell(r.max),
                _cell(r.expected_mean),
                _cell(r.expected_std),
                "-" if r.std_ratio is None else f"{r.std_ratio:.4f}±{r.std_tolerance:.2g}",
                ",".join(r.flag_names) or "ok",
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        for r in self.flagged:
            out += [f"FLAG {r.name}: {f}" for f in r.flags]
        out += [f"tied: {' = '.join(group)}" for group in self.tied]
        out += list(self.notes)
        flagged = len(self.flagged)
        out.append(
            f"{len(self.rows)} parameters, {flagged} flagged"
            f"{'' if self.fresh else ' (fresh=False: init-time flags off)'}; chance flags at family-wise "
            f"false-alarm rate {self.alpha:g} over {self.tests} tests (Bonferroni, z = {self.z:.3f})"
        )
        return "\n".join(out)


# --- the tolerances, one function each (the mutation tests replace them) ------------------------


def _z(alpha: float, tests: int) -> float:
    """Bonferroni: each of ``tests`` two-sided tests at alpha/tests, z = Φ⁻¹(1 − alpha/(2·tests))."""
    return float(normal_math.ndtri(1.0 - alpha / (2.0 * max(tests, 1))))


def _std_tolerance(kurtosis: float, n: int, z: float) -> float:
    """The relative tolerance on s/σ: z·√((κ−1)/(4n)) (delta method on the second moment, whose
    relative sd is √((κ−1)/n) for n iid values about their known mean)."""
    return z * math.sqrt(max(kurtosis - 1.0, 0.0) / (4.0 * n))


def _binomial_tail_bound(k: int, n: int, p: float) -> float:
    """Chernoff: P(Binomial(n, p) ≥ k) ≤ exp(−n·D(k/n ‖ p)) for k > n·p (1 otherwise)."""
    if k <= n * p:
        return 1.0
    if p <= 0.0:
        return 0.0
    a = k / n
    if a >= 1.0:
        return p**n
    d = a * math.log(a / p) + (1.0 - a) * math.log((1.0 - a) / (1.0 - p))
    return math.exp(-n * d)


def _finite(x: NDArray[Any]) -> NDArray[np.bool_]:
    """Where ``x`` is finite (the stats are over these values only)."""
    return cast("NDArray[np.bool_]", np.isfinite(x))


def _density_at_zero(dist: Distribution | None, sigma: float) -> float:
    """An upper bound on the density near 0 of the expected distribution, or, unknown, of a
    normal with the measured std ``sigma``."""
    if isinstance(dist, UniformDist):
        return 1.0 / (dist.high - dist.low) if dist.low <= 0.0 <= dist.high else 0.0
    if isinstance(dist, TruncatedNormalDist):
        a, b = dist.standard_bounds
        mass = normal_math.normal_cdf(b) - normal_math.normal_cdf(a)
        return 1.0 / (dist.sigma * math.sqrt(2.0 * math.pi) * mass)
    if isinstance(dist, (NormalDist, OrthogonalDist)) and dist.std > 0:
        return 1.0 / (dist.std * math.sqrt(2.0 * math.pi))
    if isinstance(dist, ConstantDist):
        return 0.0
    if not (sigma > 0.0) or not math.isfinite(sigma):
        return 0.0
    return 1.0 / (sigma * math.sqrt(2.0 * math.pi))


def _repeated_rows(x: NDArray[Any], axis: int) -> tuple[int, float] | None:
    """(rows equal to an earlier row, the Markov bound on so many by chance), or None when the
    weight has fewer than 2 rows."""
    if x.ndim < 2 or x.size == 0:
        return None
    rows = np.moveaxis(x, axis, 0)
    r = rows.shape[0]
    if r < 2:
        return None
    m = rows[0].size
    flat = np.ascontiguousarray(rows.reshape(r, m))
    as_bytes = flat.view(np.dtype((np.void, flat.dtype.itemsize * m))).ravel()
    repeated = r - int(np.unique(as_bytes).size)
    if repeated == 0:
        return 0, 1.0
    _, counts = np.unique(flat.ravel(), return_counts=True)
    total = float(flat.size)
    p_e = float(np.sum(counts.astype(np.float64) * (counts - 1.0))) / (total * (total - 1.0))
    if p_e <= 0.0:
        return repeated, 0.0
    log_lambda = math.log(r * (r - 1) / 2.0) + m * math.log(p_e)
    return repeated, min(1.0, math.exp(min(log_lambda, 0.0)) / repeated)


# --- the core ---------------------------------------------------------------------------------


def _dtype_name(entry: Entry, x: NDArray[Any]) -> str:
    return entry.dtype or str(x.dtype)


def _count_tests(entries: Sequence[tuple[Entry, NDArray[Any]]], fresh: bool) -> int:
    tests = 0
    for entry, x in entries:
        floating = np.issubdtype(x.dtype, np.floating)
        if floating and x.size:
            tests += 1  # denormals
        if x.ndim >= 2 and x.size and x.shape[entry.unit_axis] >= 2:
            tests += 1  # repeated rows
        dist = entry.expected.dist if entry.expected is not None else None
        if fresh and dist is not None and dist.variance > 0 and x.size >= N_MIN:
            tests += 2  # std and mean (counted on all values; fewer finite ones only lowers the count)
    return tests


def check_arrays(
    entries: Sequence[Entry], *, fresh: bool = True, alpha: float = ALPHA, notes: Sequence[str] = ()
) -> CheckReport:
    """Measure and flag every entry (see the module docstring for each flag and its tolerance).

    Args:
        entries: one per parameter (tied parameters once, their other names in ``aliases``).
        fresh: the model is freshly initialized: also raise the init-time flags.
        alpha: the family-wise false-alarm rate of the chance flags, in (0, 1).
        notes: lines for the report (what the face skipped, and why).
    """
    fresh = _validate.boolean("fresh", fresh)
    alpha = _validate.real("alpha", alpha, positive=True)
    if not alpha < 1.0:
        raise ValueError(f"Argument `alpha` must be in (0, 1). Received: alpha={alpha!r}.")
    arrays = []
    for entry in entries:
        if not isinstance(entry, Entry):
            raise TypeError(f"Each entry must be an initscale.check.Entry. Received: {entry!r}.")
        x = np.asarray(entry.values)
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
            raise TypeError(
                f"Parameter {entry.name!r}: values of dtype {x.dtype} cannot be checked; "
                "pass real floating (or integer) values."
            )
        if x.ndim and not -x.ndim <= entry.unit_axis < x.ndim:
            raise ValueError(
                f"Parameter {entry.name!r}: `unit_axis`={entry.unit_axis} is out of range for shape {x.shape}."
            )
        arrays.append((entry, x))
    tests = _count_tests(arrays, fresh)
    level = alpha / max(tests, 1)
    z = _z(alpha, tests)
    rows = [_check_one(entry, x, fresh=fresh, level=level, z=z) for entry, x in arrays]
    return CheckReport(tuple(rows), alpha, tests, z, fresh, tuple(notes))


def _check_one(entry: Entry, x: NDArray[Any], *, fresh: bool, level: float, z: float) -> CheckRow:
    dtype = _dtype_name(entry, x)
    floating = np.issubdtype(x.dtype, np.floating)
    flags: list[Flag] = []
    n = int(x.size)
    finite = _finite(x) if floating else np.ones(x.shape, dtype=bool)
    xf = x[finite].astype(np.float64) if n else np.zeros(0)
    n_finite = int(xf.size)
    if n_finite < n:
        nan = int(np.isnan(x).sum())
        pos = int(np.isposinf(x).sum())
        neg = n - n_finite - nan - pos
        first = np.unravel_index(int(np.argmax(~finite)), x.shape)
        flags.append(
            Flag(
                "non_finite",
                f"{nan} NaN, {pos} +inf, {neg} -inf of {n} values (first at index {tuple(int(i) for i in first)})",
            )
        )
    mean = float(xf.mean()) if n_finite else math.nan
    std = float(xf.std()) if n_finite else math.nan
    low = float(xf.min()) if n_finite else math.nan
    high = float(xf.max()) if n_finite else math.nan
    exp = entry.expected
    dist = exp.dist if exp is not None else None

    # uninitialized memory
    if floating and n:
        tiny = _TINY.get(dtype, float(np.finfo(x.dtype).tiny))
        sub = (xf != 0.0) & (np.abs(xf) < tiny)
        k = int(sub.sum())
        if k:
            normal_values = xf[~sub]
            sigma = float(normal_values.std()) if normal_values.size >= 2 else 0.0
            p0 = min(1.0, 2.0 * tiny * _density_at_zero(dist, sigma))
            bound = _binomial_tail_bound(k, n, p0)
            if bound < level:
                flags.append(
                    Flag(
                        "denormal",
                        f"{k} subnormal values (0 < |x| < {tiny:.3g}, the smallest normal "
                        f"{dtype}) of {n}; chance gives at most P <= {bound:.2g} "
                        f"(p0 = {p0:.2g} each): uninitialized memory?",
                    )
                )
    expected_zero = (isinstance(dist, ConstantDist) and dist.value == 0.0) or entry.role in _ZERO_BY_DEFAULT
    if x.ndim >= 2 and n and not expected_zero and n_finite == n and not np.any(xf):
        flags.append(
            Flag("all_zero", f"all {n} values are 0 in a weight of {x.ndim} axes: uninitialized, or never initialized")
        )
    rep = _repeated_rows(x, entry.unit_axis)
    if rep is not None and rep[0] and rep[1] < level:
        flags.append(
            Flag(
                "repeated_rows",
                f"{rep[0]} of {x.shape[entry.unit_axis]} rows along axis "
                f"{entry.unit_axis} repeat an earlier row; chance gives P <= "
                f"{rep[1]:.2g}: copied or broadcast values?",
            )
        )
    # roles
    norm_checked = False
    if (
        fresh
        and entry.role == "norm_scale"
        and (dist is None or (isinstance(dist, ConstantDist) and dist.value == 1.0))
    ):
        norm_checked = True
        bad = int(np.count_nonzero(xf != 1.0)) + (n - n_finite)
        if bad:
            flags.append(
                Flag(
                    "norm_scale_not_one",
                    f"{bad} of {n} values of the {entry.layer} scale are not 1 "
                    f"(min {low:.4g}, max {high:.4g}); a fresh norm has ones",
                )
            )
    if entry.padding_idx is not None and x.ndim >= 1 and x.shape[0]:
        idx = int(entry.padding_idx)
        if not -x.shape[0] <= idx < x.shape[0]:
            raise ValueError(f"Parameter {entry.name!r}: padding_idx={idx} is outside its {x.shape[0]} rows.")
        row = x[idx]
        if np.any(row != 0):
            flags.append(
                Flag(
                    "padding_row_not_zero",
                    f"padding row {idx} has {int(np.count_nonzero(row))} non-zero "
                    f"values of {row.size}; nn.Embedding keeps it zero",
                )
            )
    # the expectation
    std_ratio = tol = None
    note = ""
    if isinstance(dist, TruncatedNormalDist):
        a, b = dist.standard_bounds
        far = [
            (name, v, s)
            for name, v, s in (("low", dist.low, a), ("high", dist.high, b))
            if math.isfinite(s) and abs(s) > TRUNCATION_NO_OP
        ]
        if far:
            listed = ", ".join(f"{name} {v:g} = {s:+.3g}σ" for name, v, s in far)
            flags.append(
                Flag(
                    "truncation_no_op",
                    f"truncated normal with σ {dist.sigma:g} has bounds beyond "
                    f"{TRUNCATION_NO_OP:g}σ ({listed}): it truncates nothing; "
                    "absolute bounds meant in units of σ?",
                )
            )
    if fresh and dist is not None and n:
        xt, nt, mt = xf, n_finite, mean  # the values the distribution tests see
        if entry.padding_idx is not None and x.ndim >= 1 and not isinstance(dist, ConstantDist):
            # the padding row is zeros by design, not a draw: the distribution tests leave it out
            rest = np.delete(x, int(entry.padding_idx), axis=0)
            xt = rest[_finite(rest) if floating else np.ones(rest.shape, dtype=bool)].astype(np.float64)
            nt = int(xt.size)
            mt = float(xt.mean()) if nt else math.nan
        if isinstance(dist, ConstantDist):
            if not norm_checked:
                off = int(np.count_nonzero(xf != dist.value)) + (n - n_finite)
                if off:
                    worst = float(np.max(np.abs(xt - dist.value))) if n_finite else math.nan
                    flags.append(
                        Flag(
                            "not_constant",
                            f"{off} of {n} values differ from {dist.value:g} (max |x - {dist.value:g}| = {worst:.4g})",
                        )
                    )
        else:
            sigma, mu = math.sqrt(dist.variance), float(dist.mean)
            if nt >= N_MIN:
                std_ratio = math.sqrt(float(np.mean((xt - mu) ** 2))) / sigma
                tol = _std_tolerance(float(dist.kurtosis), nt, z)
                if abs(std_ratio - 1.0) > tol:
                    flags.append(
                        Flag(
                            "std_off",
                            f"std {std_ratio * sigma:.4g} (about mean {mu:g}) is {std_ratio:.4g}"
                            f"x the expected {sigma:.4g}; sampling tolerance ±{tol:.2g} "
                            f"(z {z:.2f}, n {nt})",
                        )
                    )
                tol_mean = z * sigma / math.sqrt(nt)
                if abs(mt - mu) > tol_mean:
                    flags.append(
                        Flag(
                            "mean_off",
                            f"mean {mt:.4g} vs expected {mu:g}; tolerance ±{tol_mean:.2g} (z {z:.2f}, n {nt})",
                        )
                    )
            else:
                note = f"{nt} finite values < {N_MIN}: std and mean not tested"
            if dist.bounds is not None and nt:
                lo, hi = dist.bounds
                u = _ROUNDING.get(dtype, 0.0)
                outside = int(np.count_nonzero((xt < lo - abs(lo) * u) | (xt > hi + abs(hi) * u)))
                if outside:
                    flags.append(
                        Flag(
                            "out_of_bounds",
                            f"{outside} values outside the expected [{lo:.4g}, {hi:.4g}] "
                            f"(min {low:.4g}, max {high:.4g})",
                        )
                    )
    return CheckRow(
        name=entry.name,
        shape=tuple(int(s) for s in x.shape),
        dtype=dtype,
        layer=entry.layer,
        role=entry.role,
        n=n,
        n_finite=n_finite,
        mean=mean,
        std=std,
        min=low,
        max=high,
        expected_mean=None if dist is None else float(dist.mean),
        expected_std=None if dist is None else math.sqrt(dist.variance),
        expected_bounds=None
        if dist is None or dist.bounds is None
        else cast(tuple[float, float], tuple(float(b) for b in dist.bounds)),
        expected_source=None if exp is None else exp.source,
        std_ratio=std_ratio,
        std_tolerance=tol,
        flags=tuple(flags),
        tied=tuple(entry.aliases),
        note=note,
    )


# --- expectations: from rules, a plan, a recipe -------------------------------------------------


def expectations(decided: Plan) -> dict[str, Expected]:
    """Parameter name -> :class:`Expected`, for every parameter the plan sets (what ``reinit_``
    with the same rules would draw; its dry-run report shows the same rows)."""
    out = {}
    for decision, row in zip(decided.decisions, decided.report.rows, strict=True):
        if decision.dist is not None:
            out[decision.param.name] = Expected(decision.dist, row.reason, row.spec)
    return out


def rules_for(recipe: Any = None, rules: Any = None) -> Any:
    """The rule set that supplies expectations: ``rules`` (one spec, or a mapping pattern ->
    spec, as ``reinit_`` takes), or ``recipe``: a rule set, or the name of an
    ``initscale.recipes`` recipe. None when neither is given."""
    if recipe is not None and rules is not None:
        raise ValueError(
            f"Pass either `recipe` or `rules`, not both. Received both: recipe={recipe!r}, rules={rules!r}."
        )
    if isinstance(recipe, str):
        try:
            recipes = importlib.import_module("initscale.recipes")
        except ModuleNotFoundError as err:
            if err.name != "initscale.recipes":
                raise
            raise ValueError(
                f"Argument `recipe`={recipe!r}: this initscale has no initscale.recipes yet; pass the "
                "rules instead, e.g. rules={'LayerNorm': initscale.Ones(), '*.weight': "
                "initscale.Normal(0.02)} (the rules reinit_ takes)."
            ) from None
        return recipes.get(recipe)
    return recipe if recipe is not None else rules


def _expected_for(params: Sequence[Param], rules: Any, include_frozen: bool) -> dict[str, Expected]:
    if rules is None:  # no rules: only a norm scale used as 1 + scale (Gemma's) is known, at zeros
        unit = [p for p in params if p.unit_offset and p.role == "norm_scale"]
        return expectations(plan(unit, {}, include_frozen=include_frozen, dry_run=True, stacklevel=3)) if unit else {}
    if hasattr(rules, "rules_for") and not isinstance(rules, Mapping):
        raise ValueError(
            f"Recipe {rules!r} reads each parameter's role from the model's module tree, which a "
            "checkpoint (names and arrays) does not hold. Check the model itself "
            "(initscale.torch.check(model, recipe=...)), pass recipe.rules_for(model) as `rules`, or on "
            "the command line give the model's config: initscale check FILE --recipe NAME --config "
            "config.json."
        )
    return expectations(plan(params, rules, include_frozen=include_frozen, dry_run=True, stacklevel=3))


# --- checkpoints: parameters by name only -------------------------------------------------------

_NORM_OWNER = re.compile(r"(?i)(norm|^ln(_|\d|$)|^bn(_|\d|$)|_ln$|^ln_f$)")
_EMBED_OWNER = re.compile(r"(?i)(emb|^wte$|^wpe$)")


def role_from_name(name: str, ndim: int) -> Role:
    """A parameter's role guessed from its name alone, for checkpoints (no module tree): the last
    component is the leaf, the one before it the owner. A 1-D ``weight``/``gamma``/``scale``
    (``bias``/``beta``) whose owner names a norm (``LayerNorm``, ``ln_1``, ``ln_f``, ``norm1``,
    ``bn1``, ``input_layernorm``) is a norm scale (offset); another ``bias`` a bias; a weight of
    2+ axes whose owner names an embedding (``word_embeddings``, ``wte``, ``wpe``) an embedding;
    any other weight of 2+ axes a weight. Names are all a checkpoint has: a norm that stores
    scale − 1 (Gemma's RMSNorm computes x·(1 + w), w starting at 0) reads as a scale that is not
    one, and a norm whose owner name says nothing (ResNet's ``downsample.1``) as ``"other"``.

    Example:
        >>> [role_from_name(n, d) for n, d in [("h.0.ln_1.weight", 1), ("h.0.attn.c_attn.bias", 1),
        ...                                     ("wte.weight", 2), ("h.0.mlp.c_fc.weight", 2)]]
        ['norm_scale', 'bias', 'embedding', 'weight']
    """
    parts = re.split(r"[./]", name)
    leaf, owner = parts[-1], parts[-2] if len(parts) > 1 else ""
    if ndim == 1 and _NORM_OWNER.search(owner):
        if leaf in ("weight", "gamma", "scale"):
            return "norm_scale"
        if leaf in ("bias", "beta"):
            return "norm_offset"
    if leaf == "bias" or leaf.startswith(("bias_ih", "bias_hh")):
        return "bias"
    if ndim >= 2:
        return "embedding" if _EMBED_OWNER.search(owner) else "weight"
    return "other"


def check_state(
    arrays: Mapping[str, Any],
    *,
    rules: Any = None,
    recipe: Any = None,
    fresh: bool = True,
    alpha: float = ALPHA,
    aliases: Mapping[str, Sequence[str]] | None = None,
    dtypes: Mapping[str, str] | None = None,
    layout: str = "torch",
    notes: Sequence[str] = (),
) -> CheckReport:
    """Check a checkpoint's arrays (name -> NumPy array) by name only: roles from
    :func:`role_from_name`, weights of 2+ axes read with ``layout`` for the fans rules need,
    ``aliases`` (first name -> the other names of the same tensor) listed as tied, ``dtypes`` the
    stored dtype of arrays widened for NumPy (``"bfloat16"``)."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"Argument `arrays` must be a mapping from name to array. Received: {type(arrays).__name__}.")
    aliases = dict(aliases or {})
    params, entries = [], []
    for name, values in arrays.items():
        x = np.asarray(values)
        role = role_from_name(name, x.ndim)
        params.append(
            Param(name, tuple(x.shape), (), role, layout if role in ("weight", "other") and x.ndim >= 2 else None)
        )
    expected = _expected_for(params, rules_for(recipe, rules), include_frozen=True)
    for param, (name, values) in zip(params, arrays.items(), strict=True):
        entries.append(
            Entry(
                name,
                values,
                role=param.role,
                expected=expected.get(name),
                aliases=tuple(aliases.get(name, ())),
                dtype=(dtypes or {}).get(name),
            )
        )
    return check_arrays(entries, fresh=fresh, alpha=alpha, notes=notes)


# safetensors dtype codes -> NumPy dtypes (BF16 is widened to float32 exactly; F8 types are not read)
_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "BOOL": "?",
    "BF16": "<u2",
}


def load_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, NDArray[Any]], dict[str, str]]:
    """Read a ``.safetensors`` file with NumPy only: ``(arrays, dtypes)``, name -> array and
    name -> the stored dtype's NumPy name. The format: an 8-byte little-endian header length, a
    JSON header ``{name: {dtype, shape, data_offsets}}``, then the raw bytes. BF16 tensors are
    widened to float32 exactly (their dtype says ``"bfloat16"``)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{os.fspath(path)!r} is not a safetensors file: {len(data)} bytes.")
    size = int.from_bytes(data[:8], "little")
    if not 2 <= size <= len(data) - 8:
        raise ValueError(
            f"{os.fspath(path)!r} is not a safetensors file: header length {size} for a file of {len(data)} bytes."
        )
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{os.fspath(path)!r} is not a safetensors file: its header is not JSON ({err}).") from None
    if not isinstance(header, dict):
        raise ValueError(f"{os.fspath(path)!r} is not a safetensors file: its header is not a JSON object.")
    body = memoryview(data)[8 + size :]
    out: dict[str, NDArray[Any]] = {}
    dtypes: dict[str, str] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            code, shape, (begin, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{os.fspath(path)!r}: tensor {name!r} has a malformed header entry {info!r}.") from err
        if code not in _SAFETENSORS_DTYPES:
            raise ValueError(
                f"{os.fspath(path)!r}: tensor {name!r} has dtype {code!r}; readable dtypes are "
                f"{', '.join(sorted(_SAFETENSORS_DTYPES))}."
            )
        dtype = np.dtype(_SAFETENSORS_DTYPES[code])
        count = math.prod(shape)
        if not (0 <= begin <= end <= len(body)) or end - begin != count * dtype.itemsize:
            raise ValueError(
                f"{os.fspath(path)!r}: tensor {name!r} ({code}, shape {list(shape)}) has data offsets "
                f"[{begin}, {end}] that do not fit its size or the file."
            )
        values = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
        if code == "BF16":
            values = (values.astype(np.uint32) << 16).view(np.float32)
        out[name] = values
        dtypes[name] = "bfloat16" if code == "BF16" else str(dtype.newbyteorder("=").name)
    return out, dtypes
