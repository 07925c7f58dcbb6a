"""``initscale.torch.lsuv_``: layer-sequential unit-variance init (LSUV; Mishkin & Matas 2016).

The loop, the report and the references are in :mod:`initscale.lsuv`; this module finds the layers
(forward hooks, in the order the forward pass first calls them), measures their outputs and
rescales their weights in place. The layers are those whose main ``weight`` the rules set with a
layout: Linear, ConvNd, ConvTransposeNd, transformers' Conv1D, Bilinear, and any layer a rule gives
a layout; recurrent layers and attention (several outputs) are reported as skipped. A weight-normed
layer (w = g · v / ‖v‖) is rescaled through its g; one under spectral norm is skipped (its layer
divides out any scale).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from initscale import lsuv, presets
from initscale.lsuv import LSUVReport
from initscale.specs import Spec

from . import _torch_reparam as _reparam

__all__ = ["lsuv_"]

_MULTI_OUTPUT = ("RNNBase", "RNNCellBase", "MultiheadAttention")


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the layer's output is known."""


def _runner(module: torch.nn.Module, batch: Any) -> Any:
    if isinstance(batch, torch.Tensor):
        return lambda: module(batch)
    if isinstance(batch, Mapping):
        return lambda: module(**batch)
    if isinstance(batch, (tuple, list)) and batch:
        return lambda: module(*batch)
    raise TypeError(
        f"Argument `batch` of lsuv_ must be a tensor, a tuple/list of positional inputs or a mapping "
        f"of keyword inputs for the model's forward. Received: {type(batch).__name__}."
    )


def _state(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module``, each tensor once (tied ones share)."""
    seen: set[int] = set()
    out = []
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


def _candidates(
    module: torch.nn.Module, weights: set[str], computed: Mapping[str, _reparam.Reparam]
) -> dict[int, tuple[str, torch.nn.Module]]:
    """The modules that hold one of ``weights`` (the names of the set parameters with a layout),
    or compute their ``weight`` from one (``computed``: by layer name, :mod:`._torch_reparam`)."""
    out = {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.utils.parametrize.ParametrizationList):
            continue  # it holds a computed weight's originals; its layer is the candidate
        prefix = f"{name}." if name else ""
        if name in computed or any(f"{prefix}{leaf}" in weights for leaf, _ in sub.named_parameters(recurse=False)):
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


def _first_output(run: Any, sub: torch.nn.Module) -> Any:
    """``sub``'s output in its first call of one forward pass (which ends there)."""
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
    return captured[0]


def _output_variance(run: Any, sub: torch.nn.Module) -> float:
    return lsuv.variance(_first_output(run, sub).detach().to(torch.float64).cpu())


def lsuv_(
    module: torch.nn.Module,
    batch: Any,
    rules: Spec | Mapping[str, Any] | None = None,
    *,
    tol: float = 0.1,
    max_iters: int = 10,
    generator: torch.Generator | None = None,
    **reinit_kwargs: Any,
) -> LSUVReport:
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
        An :class:`initscale.lsuv.LSUVReport`: per layer in forward order, the output variance
        before and after, the scale applied to its weight, the iterations and the status;
        ``.init`` is ``reinit_``'s report.

    Raises:
        ValueError: a layer's output has zero or non-finite variance (a dead layer: nothing can
            rescale it to 1), or no layer was rescaled.

    Atomic: every parameter and buffer is copied before the first write and put back if anything
    fails, so a failure changes nothing; this costs one copy of the model's tensors. Buffers
    (BatchNorm running statistics, which forward passes in training mode move) are always put back:
    only the weights change.

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

    tol, max_iters = lsuv.check_arguments("lsuv_", tol, max_iters)
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"Argument `module` of lsuv_ must be a torch.nn.Module. Received: {type(module).__name__}.")
    run = _runner(module, batch)
    if rules is None:
        rules = presets.get("orthogonal")
    init = reinit_(module, rules, generator=generator, dry_run=True, **reinit_kwargs)  # checks before any write
    weights = {row.name for row in init.touched if row.layout is not None}
    computed = {r.layer: r for r in _reparam.find(list(module.named_modules())) if r.drawn in weights}
    saved = [(t, t.detach().clone()) for t in _state(module)]
    try:
        init = reinit_(module, rules, generator=generator, **reinit_kwargs)
        with torch.no_grad():
            candidates = _candidates(module, weights, computed)
            order = _forward_order(run, candidates)
            rows = [_layer(run, name, sub, weights, computed.get(name), tol, max_iters) for name, sub in order]
            called = {id(sub) for _, sub in order}
            rows += [
                lsuv.skipped(
                    name,
                    type(sub).__name__,
                    f"{name}.weight" if name else "weight",
                    "not called by the forward pass on `batch`",
                )
                for name, sub in candidates.values()
                if id(sub) not in called
            ]
        report = lsuv.finish("lsuv_", rows, init, tol, max_iters, len(candidates))
    except BaseException:
        with torch.no_grad():
            for tensor, copy in saved:
                tensor.copy_(copy)
        raise
    with torch.no_grad():  # the forward passes may have moved running statistics: put every buffer back
        for tensor, copy in saved:
            if not isinstance(tensor, torch.nn.Parameter):
                tensor.copy_(copy)
    return report


def _layer(
    run: Any,
    name: str,
    sub: torch.nn.Module,
    weights: set[str],
    computed: _reparam.Reparam | None,
    tol: float,
    max_iters: int,
) -> lsuv.LSUVRow:
    weight = getattr(sub, "weight", None)
    layer, full = type(sub).__name__, f"{name}.weight" if name else "weight"
    if any(base.__name__ in _MULTI_OUTPUT for base in type(sub).__mro__):
        return lsuv.skipped(name, layer, full, "several outputs (recurrent or attention layer)")
    if computed is not None and (computed.method != "weight_norm" or computed.magnitude is None):
        why = f"its weight is computed by {computed.parametrization}, which divides out a rescaling"
        return lsuv.skipped(name, layer, computed.drawn or full, why)
    if computed is not None:  # weight norm, w = g · v / ‖v‖: v and g times the factor, so w is, and g stays ‖v‖
        local = len(f"{name}.") if name else 0
        scaled: list[torch.Tensor] = [
            sub.get_parameter(n[local:]) for n in (computed.drawn or "", computed.magnitude or "")
        ]
        full = computed.drawn or full
    elif not isinstance(weight, torch.Tensor) or full not in weights:
        return lsuv.skipped(name, layer, full, "its set parameters are not one `weight` to rescale")
    else:
        scaled = [weight]

    def scale(factor: float) -> None:
        for tensor in scaled:
            tensor.mul_(factor)

    output = _first_output(run, sub)
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        why = f"its output is a {type(output).__name__}, not one floating-point tensor"
        return lsuv.skipped(name, layer, full, why)
    return lsuv.rescale_layer(
        name,
        layer,
        full,
        lambda: _output_variance(run, sub),
        scale,
        tol=tol,
        max_iters=max_iters,
        function="lsuv_",
    )
