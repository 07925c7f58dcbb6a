"""Expectation tables for the real-model suite, and the checks that hold a report against them.

Each model's test file writes one :class:`Expect` per parameter (a glob may cover a repeated
layer): the parameter's role in the forward pass, its stored layout in words, and its forward
fans as derived by hand from the forward pass. The tables are the truth; they are never adapted to
what initscale reports today. :func:`row_problems` compares one report row with its entry and
:func:`value_problems` compares the drawn tensor with the report's distribution.

Roles (what the parameter does in the forward pass) and what a one-spec ``reinit`` must do:

- ``weight``: multiplies the input (a matmul or convolution): set by the one spec, with the
  forward fans in the table.
- ``bias``: added after a weight: the default sets zeros.
- ``norm_scale`` / ``norm_offset``: the per-feature gain / shift of a normalization layer: the
  defaults set ones / zeros.
- ``unit_norm_scale``: a norm scale the layer uses as ``1 + scale`` (keras-hub's Gemma
  RMSNormalization, HF Gemma's RMSNorm): the defaults set zeros, so that the gain starts at one.
- ``embedding``: a lookup table (torch ``nn.Embedding``, Keras ``Embedding``, flax ``Embed``):
  kept by the defaults, with the library's embedding fans (num_embeddings, features), or no fans
  where the table says ``fans=None``.
- ``pos_embedding``: a learned tensor *added* to (or concatenated with) the activations
  (ViT ``position_embeddings``, ``cls_token``): no matmul, so no fans; kept by the defaults and
  reported as an embedding.
- ``gate_bias``: a recurrent bias the layer starts at a set value (Keras LSTM forget gate at 1,
  ``unit_forget_bias=True``): kept by the defaults, with the reason in the report.
- ``kept``: a 1-axis parameter of a layer initscale does not know, which multiplies nothing
  (GPT-OSS's attention ``sinks``, per-head logits added to the softmax): kept by the defaults
  ("no rule matched").
- ``model_set``: a parameter that multiplies nothing and whose value the model's own init
  computes (Mamba's ``A_log``, ``D`` and time-step bias): kept by the defaults with the reason,
  and not listed as unrecognised in the one spec's warning.
- ``state``: non-trainable state such as BatchNorm running statistics: kept, no fans.
- ``weight_norm_g``: weight norm's magnitude g (w = g · v / ‖v‖, torch's ``weight_norm``): set
  to ‖v‖ once v (a ``weight`` row) is drawn, so the layer's weight is v as drawn; no fans. The
  model's test file checks the values (the layer's weight against v).
- ``tied``: an alias of another parameter (``lm_head.weight`` tied to the token embedding): it
  must have its own report row saying which tensor it is tied to.

The report row has no ``role`` field today; the role is read from what the one-spec call did with
the parameter and why (its ``spec`` and ``reason``), in :func:`observed_role`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import initscale
from initscale.specs import Ones, Zeros

# The one spec every whole-model call uses: he_normal, a truncated normal (±2σ, variance
# corrected) whose std depends on fan_in, so a wrong fan_in shows in the std.
SPEC = initscale.presets.get("he_normal")

# Second-moment check of a drawn tensor: for n iid draws of a zero-mean distribution with
# kurtosis κ = E[x⁴]/E[x²]², the sample second moment m2 = mean(x²) has relative sd
# sqrt((κ − 1)/n). We bound |m2/σ² − 1| at Z = 4.5 of those sds: a two-sided false alarm of
# 6.8e-6 per tensor, under 2e-3 for the few hundred tensors of the suite (and the seeds are fixed).
Z = 4.5

ROLES = (
    "weight",
    "bias",
    "norm_scale",
    "unit_norm_scale",
    "norm_offset",
    "embedding",
    "pos_embedding",
    "gate_bias",
    "kept",
    "model_set",
    "state",
    "weight_norm_g",
    "tied",
)


@dataclass(frozen=True)
class Expect:
    """What one parameter (or every parameter matching ``pattern``) is in the forward pass.

    Args:
        pattern: fnmatch glob on the report name (``*`` crosses ``.`` and ``/``).
        role: one of :data:`ROLES`.
        layout: the stored layout in words, e.g. ``"(in, out)"``, ``"(out, in/g, kh, kw)"``.
        fans: forward ``(fan_in, fan_out)`` (per group / gate / projection / head where the layer
            has them), or None where the parameter has no fans.
        group: the test case this entry belongs to (one strict xfail per known defect).
        tied_to: for ``role="tied"``, the name of the tensor it aliases.
    """

    pattern: str
    role: str
    layout: str
    fans: tuple[float, float] | None
    group: str
    tied_to: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Expect.role must be one of {', '.join(sorted(ROLES))}. Received: role={self.role!r}.")


def observed_role(row: Any) -> str:
    """The role a one-spec call gave a report row, from what it did and why."""
    reason = row.reason.lower()
    if "tied" in reason:
        return "tied"
    if row.touched and row.reason == "one spec for all weights":
        return "weight"
    if row.touched and row.spec is None and row.reason.startswith("weight norm: g = ‖v‖"):
        return "weight_norm_g"
    if row.touched and isinstance(row.spec, Ones):
        return "norm_scale"
    if row.touched and isinstance(row.spec, Zeros) and "norm scale used as 1 +" in reason:
        return "unit_norm_scale"
    if row.touched and isinstance(row.spec, Zeros):
        return "norm_offset" if "norm" in reason else "bias"
    if not row.touched and "forget" in reason:
        return "gate_bias"
    if not row.touched and "set by the model's own init" in reason:
        return "model_set"
    if not row.touched and row.reason == "no rule matched" and len(row.shape) == 1:
        return "kept"
    if not row.touched and "embedding" in reason:
        return "embedding"
    return f"unrecognised ({'set' if row.touched else 'kept'}: {row.reason})"


def _report_role(role: str) -> str:
    return "embedding" if role == "pos_embedding" else role


def match(table: Sequence[Expect], name: str) -> list[Expect]:
    """The table entries whose pattern matches ``name``."""
    return [e for e in table if fnmatch.fnmatchcase(name, e.pattern)]


def coverage_problems(table: Sequence[Expect], names: Iterable[str]) -> list[str]:
    """Every parameter name matches exactly one entry, and every entry matches a parameter."""
    names = list(names)
    problems = []
    for name in names:
        found = match(table, name)
        if len(found) != 1:
            problems.append(f"{name}: matches {len(found)} table entries {[e.pattern for e in found]}")
    for entry in table:
        if not any(fnmatch.fnmatchcase(n, entry.pattern) for n in names):
            problems.append(f"table entry {entry.pattern!r} matches no parameter")
    return problems


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=1e-9)


def row_problems(entry: Expect, row: Any, report: Any = None) -> list[str]:
    """What is wrong with one report row (of a one-spec call) against its table entry."""
    where = f"{row.name} {tuple(row.shape)} in {row.layer}"
    if entry.role == "tied":
        problems = []
        if "tied" not in row.reason.lower() or entry.tied_to not in row.reason:
            problems.append(f"{where}: expected a row saying 'tied to {entry.tied_to}', got {row.reason!r}")
        return problems
    if entry.role == "state":
        if row.touched or row.fan_in is not None:
            return [
                f"{where}: state ({entry.layout}) must be kept with no fans, got {row.reason!r}, "
                f"fans {row.fan_in}/{row.fan_out}"
            ]
        return []
    problems = []
    got = observed_role(row)
    if got != _report_role(entry.role):
        problems.append(f"{where}: role expected {entry.role}, got {got}")
    fans = None if row.fan_in is None and row.fan_out is None else (row.fan_in, row.fan_out)
    if entry.role in ("weight", "embedding") or entry.fans is None:
        if entry.fans is None and fans is not None:
            problems.append(
                f"{where}: expected no fans ({entry.layout}), got fan_in={row.fan_in} fan_out={row.fan_out}"
            )
        elif entry.fans is not None and (
            fans is None or not (_close(fans[0], entry.fans[0]) and _close(fans[1], entry.fans[1]))
        ):
            problems.append(
                f"{where}: fans expected {entry.fans} for layout {entry.layout}, got {fans} (layout {row.layout})"
            )
    if entry.role == "weight":
        if row.layout is None:
            problems.append(f"{where}: a weight without a layout")
        expected_std = SPEC.resolve(initscale.Fans(*entry.fans)).std if entry.fans else None
        if row.touched and expected_std is not None and not _close(row.std, expected_std):
            problems.append(f"{where}: std expected {expected_std:.6g} from fans {entry.fans}, got {row.std}")
    return problems


def silent_problems(table: Sequence[Expect], report: Any, warned: str) -> list[str]:
    """Weight-like parameters (2+ axes, role weight) left untouched by a one-spec call without a
    warning naming their layer class, and known parameters (``model_set``) that a warning lists
    as unrecognised."""
    problems = []
    for row in report:
        found = match(table, row.name)
        if len(row.shape) >= 2 and found and found[0].role == "weight" and not row.touched and row.layer not in warned:
            problems.append(f"{row.name} ({row.layer}): a weight left untouched with no warning ({row.reason})")
        if found and found[0].role == "model_set" and repr(row.name) in warned:
            problems.append(f"{row.name} ({row.layer}): known, but listed as unrecognised in a warning")
    return problems


def value_problems(row: Any, values: Any, before: Any = None) -> list[str]:
    """The drawn ``values`` against the report row: constants exactly, random draws by their
    second moment (tolerance from the sampling distribution, see :data:`Z`); an untouched
    parameter must equal ``before``."""
    x = np.asarray(values, dtype=np.float64)
    where = f"{row.name} {tuple(row.shape)}"
    if tuple(x.shape) != tuple(row.shape):
        return [f"{where}: drawn shape {x.shape}"]
    if not row.touched:
        if before is not None and not np.array_equal(x, np.asarray(before, dtype=np.float64)):
            return [f"{where}: reported kept, but its values changed"]
        return []
    if row.spec is None:  # set from another tensor (weight norm's g = ‖v‖): the model's file checks it
        return []
    if isinstance(row.spec, Zeros | Ones):
        want = 1.0 if isinstance(row.spec, Ones) else 0.0
        return [] if np.all(x == want) else [f"{where}: expected all {want}, got range [{x.min()}, {x.max()}]"]
    dist = row.spec.resolve(initscale.Fans(row.fan_in, row.fan_out))
    m2 = float(np.mean(x * x))
    # rel. sd of m2: sqrt((κ − 1)/n), κ the distribution's kurtosis; bound at Z.
    tol = Z * math.sqrt((dist.kurtosis - 1.0) / x.size)
    rel = m2 / (row.std**2 + dist.mean**2) - 1.0
    if abs(rel) > tol:
        return [
            f"{where}: empirical std {math.sqrt(m2):.6g} vs reported {row.std:.6g} "
            f"(m2 off by {rel:+.3f}, bound ±{tol:.3f} at z={Z})"
        ]
    return []


def group_entries(table: Sequence[Expect], group: str) -> list[Expect]:
    return [e for e in table if e.group == group]


def groups(table: Sequence[Expect]) -> list[str]:
    return sorted({e.group for e in table})


def report_problems(
    table: Sequence[Expect],
    group: str,
    report: Any,
    names: Sequence[str],
    values: Mapping[str, Any] | None = None,
    before: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every parameter of ``group`` against the dry-run ``report`` (fans, role, layout) and, when
    ``values`` are given, the drawn values against the report of the real call."""
    problems = []
    for name in names:
        found = match(table, name)
        if len(found) != 1 or found[0].group != group:
            continue
        try:
            row = report[name]
        except KeyError:
            problems.append(f"{name}: no report row")
            continue
        problems += row_problems(found[0], row, report)
        if values is not None and found[0].role != "tied":
            problems += value_problems(row, values[name], None if before is None else before.get(name))
    return problems


def group_problems(table: Sequence[Expect], group: str, run: tuple[Any, ...]) -> list[str]:
    """Everything wrong with one group of a model's table, from ``run`` = (names, dry-run report,
    warnings text, real report, values before, values after): the dry run's rows, nothing
    weight-like left silently, and the real call's rows and drawn values."""
    names, dry, warned, real, before, after = run
    mine = [n for n in names if any(e.group == group for e in match(table, n))]
    problems = report_problems(table, group, dry, mine)
    problems += silent_problems([e for e in table if e.group == group], [r for r in dry if r.name in mine], warned)
    problems += [f"real call: {p}" for p in report_problems(table, group, real, mine, after, before)]
    return problems
