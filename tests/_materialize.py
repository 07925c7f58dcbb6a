"""Checks for a materialized model, shared by tests/test_torch_materialize.py and
tests/real_models/test_materialize.py: each returns the problems it found as strings (empty when
everything holds), so a test reads ``assert std_problems(model, report) == []``."""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

import initscale

ALPHA = 1e-3  # family-wise false-alarm rate of std_problems over one model (Bonferroni)
MIN_VALUES = 64  # a tensor with fewer random values is not tested for its std (the normal approximation)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    full = getattr(tensor, "full_tensor", None)  # a DTensor: the gathered global tensor
    return (full() if callable(full) else tensor).detach().cpu().double()


def std_problems(model: torch.nn.Module, report: Any, *, alpha: float = ALPHA) -> list[str]:
    """Every parameter the report says was set holds its distribution's numbers.

    Constants (zeros, ones) exactly. Random tensors: the std about the known mean within
    z·√((κ−1)/(4n)) relative of the report's std — the sample second moment of n iid values with
    kurtosis κ has relative sd √((κ−1)/n), and its square root half that (delta method) — with z
    two-sided at ``alpha`` Bonferroni-split over the tensors tested, z = Φ⁻¹(1 − alpha/(2k)); and
    every value inside the distribution's bounds, widened by one ulp of the stored dtype (the
    adapter clamps to the bounds that hold once rounded, initscale.rounding). An embedding's
    padding row must be zero and is left out of its std.
    """
    rows = [r for r in report.touched if r.tied_to is None]
    tensors = dict(model.named_parameters(remove_duplicate=False))
    picked = []
    for row in rows:
        fans = None if row.fan_in is None else initscale.Fans(row.fan_in, row.fan_out)
        dist = row.spec.resolve(fans)
        values = _full(tensors[row.name])
        owner = model.get_submodule(row.name.rpartition(".")[0])
        problems_here = []
        padding = getattr(owner, "padding_idx", None) if isinstance(owner, torch.nn.Embedding) else None
        if padding is not None:
            if not bool((values[padding] == 0).all()):
                problems_here.append(f"{row.name}: padding row {padding} is not zero")
            values = torch.cat([values[:padding], values[padding + 1 :]])
        picked.append((row, dist, values.flatten(), tensors[row.name].dtype, problems_here))
    tested = [p for p in picked if p[1].std > 0 and p[2].numel() >= MIN_VALUES]
    z = statistics.NormalDist().inv_cdf(1 - alpha / (2 * max(1, len(tested))))
    problems: list[str] = []
    for row, dist, x, dtype, found in picked:
        problems += found
        if dist.std == 0:
            if not bool((x == dist.mean).all()):
                problems.append(f"{row.name}: not the constant {dist.mean}")
            continue
        if abs(dist.std - row.std) > 1e-12 * row.std:
            problems.append(f"{row.name}: the report's std {row.std} is not its spec's {dist.std}")
        if dist.bounds is not None:
            low, high = dist.bounds
            ulp = max(abs(low), abs(high)) * torch.finfo(dtype).eps
            if float(x.min()) < low - ulp or float(x.max()) > high + ulp:
                problems.append(f"{row.name}: values in [{float(x.min())}, {float(x.max())}] outside {dist.bounds}")
        if x.numel() < MIN_VALUES:
            continue
        n = x.numel()
        measured = math.sqrt(float(((x - dist.mean) ** 2).mean()))
        tolerance = z * math.sqrt(max(dist.kurtosis - 1.0, 0.0) / (4.0 * n))  # relative, see the docstring
        if abs(measured / row.std - 1.0) > tolerance:
            problems.append(
                f"{row.name}: std {measured:.6g}, reported {row.std:.6g} (|rel. error| "
                f"{abs(measured / row.std - 1):.3g} > {tolerance:.3g}, n={n}, "
                f"kurtosis {dist.kurtosis:.3g})"
            )
    return problems


def buffer_problems(model: torch.nn.Module, reference: torch.nn.Module) -> list[str]:
    """Every buffer of ``model`` equals (torch.equal, same dtype) the one of the same name in
    ``reference`` (the same model built directly on the CPU), and none is missing."""
    ours = dict(model.named_buffers(remove_duplicate=False))
    theirs = dict(reference.named_buffers(remove_duplicate=False))
    problems = [f"{n}: missing" for n in theirs if n not in ours] + [f"{n}: extra" for n in ours if n not in theirs]
    for name, expected in theirs.items():
        got = ours.get(name)
        if got is None:
            continue
        if got.dtype != expected.dtype or not torch.equal(got.detach().cpu(), expected.detach().cpu()):
            problems.append(
                f"{name}: {got.dtype} {got.detach().cpu().flatten()[:4].tolist()}... differs from the "
                f"CPU-built {expected.dtype} {expected.flatten()[:4].tolist()}..."
            )
    return problems


def tie_problems(model: torch.nn.Module, reference: torch.nn.Module) -> list[str]:
    """The same names share one tensor in ``model`` as in ``reference``."""

    def groups(module: torch.nn.Module) -> set[tuple[str, ...]]:
        found: dict[int, list[str]] = {}
        for name, tensor in [
            *module.named_parameters(remove_duplicate=False),
            *module.named_buffers(remove_duplicate=False),
        ]:
            found.setdefault(id(tensor), []).append(name)
        return {tuple(names) for names in found.values() if len(names) > 1}

    ours, theirs = groups(model), groups(reference)
    return [f"tied in the CPU-built model, not here: {g}" for g in sorted(theirs - ours)] + [
        f"tied here only: {g}" for g in sorted(ours - theirs)
    ]


def meta_problems(model: torch.nn.Module) -> list[str]:
    """Tensors that are not on the meta device (after a refused call, every one must still be)."""
    return [
        n
        for n, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
        if not t.is_meta
    ]
