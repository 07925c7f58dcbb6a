"""Layer-sequential unit-variance init (LSUV; Mishkin & Matas 2016) for torch models.

``lsuv_(model, batch)`` first re-initializes the model by its rules (orthogonal weights by default,
through :func:`initscale.torch.reinit_`), then visits its layers in the order the forward pass first
calls them and rescales each weight until the variance of that layer's output on ``batch`` is 1
within ``tol``: Algorithm 1 of D. Mishkin, J. Matas, "All you need is a good init", ICLR 2016
(arXiv:1511.06422), with its defaults ``tol = 0.1`` and at most ``max_iters = 10`` rescalings per
layer::

    while |Var(B_L) − 1| ≥ tol and t < max_iters:   B_L = the output of layer L on the batch
        W_L ← W_L / √Var(B_L)

The layers are those whose main weight the rules set and whose output is one tensor: Linear,
ConvNd, ConvTransposeNd, transformers' Conv1D, Bilinear, and any layer a rule gives a layout.
Recurrent layers and attention (several outputs) are reported as skipped. ``Var`` is the variance
of every output value (``torch.var`` over the whole output, unbiased), computed in float64.

Atomic: every parameter and buffer is copied before the first write and put back if anything fails
(a dead layer, a forward error, a non-finite variance), so a failure changes nothing; this costs one
copy of the model's parameters and buffers, which is why LSUV is for models that fit twice in memory.
Buffers (BatchNorm running statistics, which the forward passes in training mode would move) are
always restored: only the weights change.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from initscale import presets
from initscale.reinit import Report, _aligned
from initscale.specs import Spec

__all__ = ["LSUVReport", "LSUVRow", "lsuv_"]


@dataclass(frozen=True)
class LSUVRow:
    """One layer of an LSUV run: its module name and class, the variance of its output before and
    after, the total factor its weight was multiplied by, the rescalings it took, and its status
    (``"converged"``, ``"not converged"`` or ``"skipped: <why>"``)."""

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
    """The rows of an LSUV run, in the forward order of its layers, and the report of the
    re-initialization it started from (``init``)."""

    rows: tuple[LSUVRow, ...]
    init: Report
    tol: float

    def __getitem__(self, name: str) -> LSUVRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"No layer {name!r} in this LSUV report; its layers are "
                       f"{', '.join(r.name for r in self.rows) or 'none'}.")

    @property
    def not_converged(self) -> tuple[LSUVRow, ...]:
        """The layers whose output variance did not reach 1 ± tol within ``max_iters``."""
        return tuple(r for r in self.rows if r.status == "not converged")

    def __str__(self) -> str:
        def number(x: float | None) -> str:
            return "-" if x is None else f"{x:.4g}"

        lines = [("layer", "class", "var before", "var after", "scale", "iters", "status")]
        lines += [(r.name, r.layer, number(r.variance_before), number(r.variance_after), f"{r.scale:.4g}",
                   str(r.iterations), r.status) for r in self.rows]
        table = _aligned(lines)
        done = sum(r.status == "converged" for r in self.rows)
        return f"LSUV (tol {self.tol:g}): {done} of {len(self.rows)} layers converged\n" + "\n".join(table)


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the layer's output is known."""


def _check_arguments(tol: Any, max_iters: Any) -> tuple[float, int]:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 < float(tol) < 1.0:
        raise ValueError(f"Argument `tol` of lsuv_ must be a number in (0, 1), the allowed |Var - 1| of each "
                         f"layer's output (Mishkin & Matas use 0.1). Received: tol={tol!r}.")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"Argument `max_iters` of lsuv_ must be an integer >= 1, the most rescalings per "
                         f"layer (Mishkin & Matas use 10). Received: max_iters={max_iters!r}.")
    return float(tol), max_iters


def _runner(module: torch.nn.Module, batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return lambda: module(batch)
    if isinstance(batch, Mapping):
        return lambda: module(**batch)
    if isinstance(batch, (tuple, list)) and batch:
        return lambda: module(*batch)
    raise TypeError(f"Argument `batch` of lsuv_ must be a tensor, a tuple/list of positional inputs or a mapping "
                    f"of keyword inputs for the model's forward. Received: {type(batch).__name__}.")


def _variance(output: torch.Tensor) -> float:
    if output.numel() < 2:
        return math.nan
    return float(output.detach().to(torch.float64).var())


def lsuv_(module: torch.nn.Module, batch: Any, rules: Spec | Mapping[str, Any] | None = None, *,
          tol: float = 0.1, max_iters: int = 10, generator: torch.Generator | None = None,
          **reinit_kwargs: Any) -> LSUVReport:
    """Re-initialize ``module`` by ``rules``, then rescale each layer to unit output variance on ``batch``.

    Args:
        module: the model; its forward is called as ``module(batch)``, ``module(*batch)`` for a
            tuple/list or ``module(**batch)`` for a mapping, in its current train/eval mode, under
            ``torch.no_grad()``.
        batch: one mini-batch of data (Mishkin & Matas use one batch of the training set). Each
            layer's output must have at least 2 values.
        rules: the starting init, anything :func:`initscale.torch.reinit_` takes; None:
            ``presets.get("orthogonal")`` on every supported layer's weights (the paper's
            orthonormal pre-initialization; biases zero).
        tol: the allowed ``|Var(B_L) - 1|``, in (0, 1); the paper's 0.1.
        max_iters: the most rescalings per layer; the paper's 10. A layer that has not converged
            after them is left at its last scale, marked ``"not converged"`` and named in a warning.
        generator: the ``torch.Generator`` of the starting init.
        **reinit_kwargs: passed on to ``reinit_`` (``include_frozen``, ``defaults``, ``fans``, ...).

    Returns:
        An :class:`LSUVReport`: per layer in forward order, the output variance before and after,
        the scale applied to its weight, the iterations and the status; ``.init`` is ``reinit_``'s
        report.

    Raises:
        ValueError: a layer's output has zero or non-finite variance (a dead layer: nothing can
            rescale it to 1), or no layer was rescaled. Every parameter and buffer is then as it
            was before the call.

    Example:
        >>> import torch, initscale
        >>> from initscale.adapters.torch import lsuv_
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 10))
        >>> report = lsuv_(model, torch.randn(256, 64), generator=torch.Generator().manual_seed(0))
        >>> [row.status for row in report.rows]
        ['converged', 'converged']
        >>> all(abs(row.variance_after - 1) < 0.1 for row in report.rows)
        True
    """
    from initscale.adapters.torch import reinit_

    tol, max_iters = _check_arguments(tol, max_iters)
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"Argument `module` of lsuv_ must be a torch.nn.Module. Received: {type(module).__name__}.")
    run = _runner(module, batch)
    if rules is None:
        rules = presets.get("orthogonal")
    init = reinit_(module, rules, generator=generator, dry_run=True, **reinit_kwargs)  # checks before any write
    weights = {row.name for row in init.touched if row.layout is not None}
    saved = [(t, t.detach().clone()) for t in _state(module)]
    try:
        init = reinit_(module, rules, generator=generator, **reinit_kwargs)
        with torch.no_grad():
            rows = _rescale_all(module, run, weights, tol, max_iters)
    except BaseException:
        with torch.no_grad():
            for tensor, copy in saved:
                tensor.copy_(copy)
        raise
    with torch.no_grad():  # the forward passes moved running statistics: put every buffer back
        for tensor, copy in saved:
            if not isinstance(tensor, torch.nn.Parameter):
                tensor.copy_(copy)
    report = LSUVReport(tuple(rows), init, tol)
    if report.not_converged:
        warnings.warn(
            f"lsuv_: {len(report.not_converged)} layer(s) did not reach output variance 1 ± {tol:g} in {max_iters} "
            f"rescalings: {', '.join(f'{r.name} ({r.variance_after:.4g})' for r in report.not_converged)}. "
            "Raise max_iters or check what follows the weight (a bias or a constant that dominates the output).",
            stacklevel=2)
    return report


def _state(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module``, each tensor once (tied ones share)."""
    seen: set[int] = set()
    out = []
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


_MULTI_OUTPUT = ("RNNBase", "RNNCellBase", "MultiheadAttention")


def _candidates(module: torch.nn.Module, weights: set[str]) -> dict[int, tuple[str, torch.nn.Module]]:
    """The modules that hold one of ``weights`` (the names of the set parameters with a layout)."""
    out = {}
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        if any(f"{prefix}{leaf}" in weights for leaf, _ in sub.named_parameters(recurse=False)):
            out[id(sub)] = (name, sub)
    return out


def _forward_order(run: Any, candidates: dict[int, tuple[str, torch.nn.Module]]) -> list[tuple[str, torch.nn.Module]]:
    order: list[tuple[str, torch.nn.Module]] = []
    seen: set[int] = set()

    def hook(sub: torch.nn.Module, _inputs: Any, _output: Any) -> None:
        if id(sub) not in seen:
            seen.add(id(sub))
            order.append(candidates[id(sub)])

    handles = [sub.register_forward_hook(hook) for _, sub in candidates.values()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return order


def _output_variance(run: Any, sub: torch.nn.Module) -> float | str:
    """The variance of ``sub``'s first output in one forward pass, or why it has none."""
    captured: list[Any] = []

    def hook(_sub: torch.nn.Module, _inputs: Any, output: Any) -> None:
        captured.append(output)
        raise _Stop

    handle = sub.register_forward_hook(hook)
    try:
        run()
    except _Stop:
        pass
    finally:
        handle.remove()
    output = captured[0]
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        return f"its output is a {type(output).__name__}, not one floating-point tensor"
    return _variance(output)


def _rescale_all(module: torch.nn.Module, run: Any, weights: set[str], tol: float,
                 max_iters: int) -> list[LSUVRow]:
    candidates = _candidates(module, weights)
    rows = []
    for name, sub in _forward_order(run, candidates):
        weight = getattr(sub, "weight", None)
        layer, full = type(sub).__name__, f"{name}.weight" if name else "weight"
        if any(base.__name__ in _MULTI_OUTPUT for base in type(sub).__mro__):
            rows.append(LSUVRow(name, layer, full, None, None, 1.0, 0,
                                "skipped: several outputs (recurrent or attention layer)"))
            continue
        if not isinstance(weight, torch.Tensor) or full not in weights:
            rows.append(LSUVRow(name, layer, full, None, None, 1.0, 0,
                                "skipped: its set parameters are not one `weight` to rescale"))
            continue
        variance = _output_variance(run, sub)
        if isinstance(variance, str):
            rows.append(LSUVRow(name, layer, full, None, None, 1.0, 0, f"skipped: {variance}"))
            continue
        before, scale, iterations = variance, 1.0, 0
        while True:
            if not math.isfinite(variance) or variance <= 0.0:
                raise ValueError(
                    f"lsuv_: the output of layer {name!r} ({layer}) has variance {variance!r} on this batch, so no "
                    "rescaling of its weight can make it 1 (a dead layer: e.g. every input to it is zero after a "
                    "ReLU, or the batch has one value). Nothing was changed. Check the layers before it, use a "
                    "larger or more varied batch, or leave this layer out of the rules.")
            if abs(variance - 1.0) < tol or iterations >= max_iters:
                break
            factor = 1.0 / math.sqrt(variance)
            weight.mul_(factor)
            scale *= factor
            iterations += 1
            variance = _output_variance(run, sub)
            assert not isinstance(variance, str)
        status = "converged" if abs(variance - 1.0) < tol else "not converged"
        rows.append(LSUVRow(name, layer, full, before, variance, scale, iterations, status))
    if not any(row.iterations or row.status == "converged" for row in rows):
        raise ValueError(
            "lsuv_: no layer was rescaled: the forward pass on `batch` called none of the layers whose weights the "
            f"rules set ({len(candidates)} such layers). Nothing was changed. Check that `batch` reaches them and "
            "that the rules set their weights.")
    return rows
