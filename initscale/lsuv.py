"""Layer-sequential unit-variance init (LSUV; Mishkin & Matas 2016): the loop and the report,
shared by ``initscale.torch.lsuv_``, ``initscale.keras.lsuv`` and ``initscale.jax.lsuv``.

Each adapter first re-initializes the model by its rules (orthogonal weights by default), then
visits the layers whose main weight the rules set, in the order the forward pass first calls them,
and rescales each weight until the variance of that layer's output on the batch is 1 within
``tol``: Algorithm 1 of D. Mishkin, J. Matas, "All you need is a good init", ICLR 2016
(arXiv:1511.06422), with its defaults ``tol = 0.1`` and at most ``max_iters = 10`` rescalings::

    while |Var(B_L) − 1| ≥ tol and t < max_iters:   B_L = the output of layer L on the batch
        W_L ← W_L / √Var(B_L)

``Var`` is the unbiased variance of every value of the output, in float64. A layer whose output has
zero or non-finite variance (a dead layer) is an error; one that has not converged after
``max_iters`` rescalings is marked ``"not converged"`` and named in a warning. The adapters keep a
copy of every variable and put it back if anything fails, so a failure changes nothing.

Example:
    >>> from initscale.lsuv import rescale_layer
    >>> state = {"w": 3.0}                       # a "layer" whose output variance is w²
    >>> row = rescale_layer("fc", "Linear", "fc.weight", lambda: state["w"] ** 2,
    ...                     lambda f: state.update(w=state["w"] * f), tol=0.1, max_iters=10)
    >>> (row.status, row.iterations, round(row.scale, 6))
    ('converged', 1, 0.333333)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .reinit import Report, _aligned

__all__ = ["LSUVReport", "LSUVRow", "check_arguments", "finish", "rescale_layer", "skipped", "variance"]


@dataclass(frozen=True)
class LSUVRow:
    """One layer of an LSUV run: its name and class, the weight it rescaled, the variance of its
    output before and after, the total factor the weight was multiplied by, the rescalings it took,
    and its status (``"converged"``, ``"not converged"`` or ``"skipped: <why>"``)."""

    name: str
    layer: str
    weight: str
    variance_before: float | None
    variance_after: float | None
    scale: float
    iterations: int
    status: str


@dataclass(frozen=True)
class LSUVReport:
    """The rows of an LSUV run, in the forward order of its layers; ``init`` is the report of the
    re-initialization it started from; ``tol`` the tolerance it used."""

    rows: tuple[LSUVRow, ...]
    init: Report
    tol: float

    def __getitem__(self, name: str) -> LSUVRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(
            f"No layer {name!r} in this LSUV report; its layers are {', '.join(r.name for r in self.rows) or 'none'}."
        )

    @property
    def not_converged(self) -> tuple[LSUVRow, ...]:
        """The layers whose output variance did not reach 1 ± tol within ``max_iters``."""
        return tuple(r for r in self.rows if r.status == "not converged")

    def __str__(self) -> str:
        def number(x: float | None) -> str:
            return "-" if x is None else f"{x:.4g}"

        lines = [("layer", "class", "var before", "var after", "scale", "iters", "status")]
        lines += [
            (
                r.name,
                r.layer,
                number(r.variance_before),
                number(r.variance_after),
                f"{r.scale:.4g}",
                str(r.iterations),
                r.status,
            )
            for r in self.rows
        ]
        done = sum(r.status == "converged" for r in self.rows)
        return f"LSUV (tol {self.tol:g}): {done} of {len(self.rows)} layers converged\n" + "\n".join(_aligned(lines))


def check_arguments(function: str, tol: Any, max_iters: Any) -> tuple[float, int]:
    """``(tol, max_iters)`` checked: tol in (0, 1), max_iters an integer >= 1."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 < float(tol) < 1.0:
        raise ValueError(
            f"Argument `tol` of {function} must be a number in (0, 1), the allowed |Var - 1| of each "
            f"layer's output (Mishkin & Matas use 0.1). Received: tol={tol!r}."
        )
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(
            f"Argument `max_iters` of {function} must be an integer >= 1, the most rescalings per "
            f"layer (Mishkin & Matas use 10). Received: max_iters={max_iters!r}."
        )
    return float(tol), max_iters


def variance(values: Any) -> float:
    """The unbiased variance of every value of ``values`` (a NumPy-convertible array), in float64;
    NaN for fewer than 2 values."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    return float(array.var(ddof=1)) if array.size >= 2 else math.nan


def skipped(name: str, layer: str, weight: str, why: str) -> LSUVRow:
    """The row of a layer LSUV does not rescale, and why."""
    return LSUVRow(name, layer, weight, None, None, 1.0, 0, f"skipped: {why}")


def rescale_layer(
    name: str,
    layer: str,
    weight: str,
    measure: Callable[[], float],
    scale: Callable[[float], object],
    *,
    tol: float,
    max_iters: int,
    function: str = "lsuv",
) -> LSUVRow:
    """Rescale one layer: ``measure()`` runs the forward pass and returns its output variance,
    ``scale(f)`` multiplies its weight by ``f``; repeat ``W ← W/√Var`` until |Var − 1| < tol or
    ``max_iters`` rescalings. A zero or non-finite variance raises (a dead layer)."""
    current = measure()
    before, total, iterations = current, 1.0, 0
    while True:
        if not math.isfinite(current) or current <= 0.0:
            raise ValueError(
                f"{function}: the output of layer {name!r} ({layer}) has variance {current!r} on this batch, so no "
                "rescaling of its weight can make it 1 (a dead layer: e.g. every input to it is zero after a "
                "ReLU, or the batch has one value). Nothing was changed. Check the layers before it, use a "
                "larger or more varied batch, or leave this layer out of the rules."
            )
        if abs(current - 1.0) < tol or iterations >= max_iters:
            break
        factor = 1.0 / math.sqrt(current)
        scale(factor)
        total *= factor
        iterations += 1
        current = measure()
    status = "converged" if abs(current - 1.0) < tol else "not converged"
    return LSUVRow(name, layer, weight, before, current, total, iterations, status)


def finish(
    function: str,
    rows: Sequence[LSUVRow],
    init: Report,
    tol: float,
    max_iters: int,
    candidates: int,
    stacklevel: int = 3,
) -> LSUVReport:
    """The report of a run; raises if no layer was rescaled, warns naming the layers that did not converge."""
    if not any(row.iterations or row.status == "converged" for row in rows):
        raise ValueError(
            f"{function}: no layer was rescaled: the forward pass on `batch` called none of the layers whose weights "
            f"the rules set ({candidates} such layers). Nothing was changed. Check that `batch` reaches them and "
            "that the rules set their weights."
        )
    report = LSUVReport(tuple(rows), init, tol)
    if report.not_converged:
        warnings.warn(
            f"{function}: {len(report.not_converged)} layer(s) did not reach output variance 1 ± {tol:g} in "
            f"{max_iters} rescalings: "
            f"{', '.join(f'{r.name} ({r.variance_after:.4g})' for r in report.not_converged)}. "
            "Raise max_iters or check what follows the weight (a bias or a constant that dominates the output).",
            stacklevel=stacklevel,
        )
    return report
