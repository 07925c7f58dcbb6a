"""Weights a torch layer computes from other tensors: weight norm, spectral norm, and any other
parametrization (``torch.nn.utils.parametrize``).

A parametrized layer holds no ``weight`` parameter: its ``weight`` is computed on every access
from the tensors its parametrization keeps (``layer.parametrizations.weight.original0``, ...).
For each method ``reinit_`` knows, what the model computes with the drawn values:

- **weight norm** (``torch.nn.utils.parametrizations.weight_norm``, and the legacy
  ``torch.nn.utils.weight_norm`` hook with ``weight_g``/``weight_v``): w = g · v / ‖v‖, the norm
  over every axis but ``dim`` (the whole tensor when ``dim`` is None). The direction v is drawn
  as the layer's weight (the layer's layout and fans), then the magnitude g is set to ‖v‖, which
  is what the parametrization's ``right_inverse`` does on ``layer.weight = v``: the layer's
  weight is then v itself, with the spec's distribution. HF EnCodec, SpeechT5's HiFi-GAN,
  wav2vec2/HuBERT's positional convolution, DAC and Bark use it.
- **spectral norm** (``torch.nn.utils.parametrizations.spectral_norm``): w = W / σ(W), σ the
  largest singular value of W reshaped to (shape[dim], -1), estimated by power iteration in the
  buffers ``_u``, ``_v``. W (``original``) is drawn as the layer's weight and the estimate is
  refreshed (15 power iterations, as ``spectral_norm`` does when it is applied), but the weight
  the layer uses has σ = 1 whatever W's std: a warning says so.
- **any other parametrization** (orthogonal, a user's own): its originals are kept, and a
  warning names them, their parametrization and the fix: draw the weight yourself and assign
  it (``layer.weight = w`` runs the parametrization's ``right_inverse``).

Sources: torch 2.13 ``torch/nn/utils/parametrizations.py`` (``_WeightNorm.forward`` is
``torch._weight_norm(v, g, dim)``, ``right_inverse`` gives ``norm_except_dim(w, 2, dim)`` and w;
``_SpectralNorm.__init__`` runs ``_power_method(weight_mat, 15)``), ``torch/nn/utils/weight_norm.py``
(``WeightNorm``, the forward pre-hook) and ``torch/nn/utils/parametrize.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch

from initscale.reinit import Report

__all__ = ["Reparam", "derived", "find", "finish", "magnitude_note", "notes", "other_note"]

Method = Literal["weight_norm", "spectral_norm", "other"]


@dataclasses.dataclass(frozen=True)
class Reparam:
    """One computed weight.

    ``method``: ``"weight_norm"``, ``"spectral_norm"`` or ``"other"`` (a parametrization
    initscale does not draw through); ``layer``: the qualified name of the layer that computes it
    ("" for the model itself); ``leaf``: the weight's name on it (``"weight"``); ``drawn``: the
    qualified name of the tensor drawn in the weight's place (weight norm's v, spectral norm's W), None for another
    parametrization; ``magnitude``: weight norm's g; ``originals``: every tensor the weight is
    computed from; ``dim``: weight norm's or spectral norm's axis (-1: weight norm over the whole
    tensor); ``parametrization``: its class name; ``owner``: the parametrization module (or the
    legacy hook) itself."""

    method: Method
    layer: str
    leaf: str
    drawn: str | None
    magnitude: str | None
    originals: tuple[str, ...]
    dim: int
    parametrization: str
    owner: Any = dataclasses.field(compare=False, repr=False)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of g's and another parametrization's originals: the parametrization's
        own (the legacy hook's ``WeightNorm``), never the layer's, so no rule on the layer class
        reaches them."""
        return (
            (self.parametrization,)
            if self.parametrization == "WeightNorm"
            else (self.parametrization, "ParametrizationList")
        )

    @property
    def weight(self) -> str:
        """The computed weight's qualified name (``"conv.weight"``)."""
        return f"{self.layer}.{self.leaf}" if self.layer else self.leaf


def _joined(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _legacy_weight_norms(prefix: str, module: torch.nn.Module) -> Iterable[Reparam]:
    """The deprecated ``torch.nn.utils.weight_norm``: a forward pre-hook with ``name`` and
    ``dim`` that recomputes ``name`` from the parameters ``name_g`` and ``name_v``."""
    for hook in module._forward_pre_hooks.values():
        if type(hook).__name__ != "WeightNorm" or type(hook).__module__ != "torch.nn.utils.weight_norm":
            continue
        leaf, dim = str(getattr(hook, "name", "")), int(getattr(hook, "dim", 0))
        g, v = f"{leaf}_g", f"{leaf}_v"
        if g in module._parameters and v in module._parameters:
            names = (_joined(prefix, g), _joined(prefix, v))
            yield Reparam("weight_norm", prefix, leaf, names[1], names[0], names, dim, "WeightNorm", hook)


def _parametrized(prefix: str, module: torch.nn.Module) -> Iterable[Reparam]:
    """``torch.nn.utils.parametrize``: ``module.parametrizations[leaf]`` is a ParametrizationList
    holding ``original`` (or ``original0``, ``original1``, ... when ``right_inverse`` returns
    several tensors) and the parametrizations applied in order."""
    lists = getattr(module, "parametrizations", None)
    if not isinstance(lists, torch.nn.ModuleDict) or not type(module).__name__.startswith("Parametrized"):
        return
    for leaf, plist in lists.items():
        at = _joined(prefix, "parametrizations", leaf)
        originals = tuple(_joined(at, n) for n, _ in plist.named_parameters(recurse=False))
        steps = list(plist) if isinstance(plist, torch.nn.ModuleList) else []
        method: Method = "other"
        if len(steps) == 1 and type(steps[0]).__module__ == "torch.nn.utils.parametrizations":
            name = type(steps[0]).__name__
            if name == "_WeightNorm" and len(originals) == 2 and originals[0].endswith(".original0"):
                method = "weight_norm"
            elif name == "_SpectralNorm" and len(originals) == 1 and originals[0].endswith(".original"):
                method = "spectral_norm"
        classes = "+".join(type(s).__name__ for s in steps) or type(plist).__name__
        dim = int(getattr(steps[0], "dim", 0)) if method != "other" else 0
        if method == "weight_norm":
            g, v = originals
            yield Reparam(method, prefix, leaf, v, g, originals, dim, classes, steps[0])
        elif method == "spectral_norm":
            yield Reparam(method, prefix, leaf, originals[0], None, originals, dim, classes, steps[0])
        else:
            yield Reparam(method, prefix, leaf, None, None, originals, 0, classes, plist)


def find(modules: Sequence[tuple[str, torch.nn.Module]]) -> tuple[Reparam, ...]:
    """Every computed weight among ``modules`` (``named_modules`` pairs), in their order."""
    found: list[Reparam] = []
    for prefix, module in modules:
        found += _parametrized(prefix, module)
        found += _legacy_weight_norms(prefix, module)
    return tuple(found)


def magnitude_note(r: Reparam) -> str:
    """Why the defaults do not draw weight norm's g (its row's reason while v is kept too)."""
    axes = "the whole tensor" if r.dim == -1 else f"every axis but {r.dim}"
    return (
        f"weight norm's magnitude g of {r.weight!r} (weight = g · v / ‖v‖, the norm over {axes}): set to ‖v‖ "
        f"whenever {r.drawn!r} is drawn and no rule names g, so the weight is v as drawn"
    )


def other_note(r: Reparam) -> str:
    """The reason the defaults keep an original of a parametrization initscale does not know."""
    return f"an original of {r.weight!r}, which the parametrization {r.parametrization} computes from it; kept"


def derived(reparams: Sequence[Reparam]) -> dict[str, tuple[str, str]]:
    """Each weight norm's g -> (its v, how it is set), for :func:`initscale.reinit.derived_to_set`
    and :func:`~initscale.reinit.mark_derived`: g = ‖v‖ once v is drawn, unless a rule names g."""
    found = {}
    for r in reparams:
        if r.method == "weight_norm" and r.magnitude is not None and r.drawn is not None:
            axes = "the whole tensor" if r.dim == -1 else f"every axis but {r.dim}"
            how = f"weight norm: g = ‖v‖ of {r.drawn!r} (over {axes}), so {r.weight!r} is v as drawn (to rounding)"
            found[r.magnitude] = (r.drawn, how)
    return found


def notes(report: Report, reparams: Sequence[Reparam]) -> tuple[str, ...]:
    """Warnings for what the report alone does not say: spectral norm rescales the drawn W, and
    another parametrization's originals were kept."""
    rows = {r.name: r for r in report.rows}
    spectral = [r for r in reparams if r.method == "spectral_norm" and r.drawn in rows and rows[r.drawn].touched]
    kept = [
        r
        for r in reparams
        if r.method == "other"
        and any(not rows[o].touched and rows[o].reason.startswith("no rule matched") for o in r.originals if o in rows)
    ]
    messages = []
    if spectral:
        names = ", ".join(repr(r.drawn) for r in spectral[:8]) + (" ..." if len(spectral) > 8 else "")
        messages.append(
            f"reinit: {len(spectral)} weight(s) under spectral norm were drawn as their layer's weight ({names}); "
            "the layer divides each by its largest singular value, so the weight it uses has spectral norm 1, "
            "not the report's std. Its power-iteration estimate (_u, _v) was refreshed for the new values."
        )
    for r in kept:
        originals = ", ".join(repr(o) for o in r.originals)
        messages.append(
            f"reinit: {r.weight!r} is computed by the parametrization {r.parametrization} from {originals}, "
            f"which were kept: initscale cannot tell how a draw of them maps to the weight. Draw the weight yourself "
            f"and assign it (`model.get_submodule({r.layer!r}).{r.leaf} = w` runs the parametrization's "
            "right_inverse), or give the originals rules if you know what they hold."
        )
    return tuple(messages)


def finish(
    reparams: Sequence[Reparam], named: Mapping[str, torch.Tensor], drawn: set[str], magnitudes: Iterable[str]
) -> None:
    """After the draws: each g in ``magnitudes`` (:func:`initscale.reinit.derived_to_set`) = ‖v‖, as
    ``right_inverse`` gives it (``torch.norm_except_dim(v, 2, dim)``); each spectral norm's
    power-iteration estimate refreshed where W was drawn. ``named``: qualified name -> tensor;
    ``drawn``: the names written."""
    setting = set(magnitudes)
    with torch.no_grad():
        for r in reparams:
            if r.drawn not in drawn:
                continue
            v = named[r.drawn]
            if r.method == "weight_norm" and r.magnitude in setting:
                named[r.magnitude].copy_(torch.norm_except_dim(v, 2, r.dim))
            elif r.method == "spectral_norm" and v.dim() > 1:
                r.owner._power_method(r.owner._reshape_weight_to_matrix(v), 15)
