"""``initscale.torch.check``: walk a torch model (or state dict) and hand its parameters to the
framework-free core, :mod:`initscale.check`, which holds every statistic, flag and tolerance.

The walk is ``reinit_``'s (its backend's, :class:`initscale.adapters.torch._Backend`): each
parameter once, with its owning module's class names, its role (weight, bias, norm scale/offset,
embedding), its layout and, for a bias, the weight whose fans it takes, so the rules ``reinit_``
takes give the same expectations here (its dry-run plan). Tied parameters (one tensor under
several names, ``named_parameters(remove_duplicate=False)``) are checked once and listed.
``nn.Embedding``/``nn.EmbeddingBag`` give their ``padding_idx``. A weight-normed layer's v is
checked as the weight the layer computes, g · v / ‖v‖ (:mod:`._torch_reparam`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from initscale import check as _core
from initscale.check import ALPHA, CheckReport, Entry
from initscale.reinit import model_rules

from . import _torch_reparam as _reparam

__all__ = ["check", "check_checkpoint", "load_checkpoint"]


def _numpy(name: str, tensor: torch.Tensor) -> tuple[np.ndarray, str]:
    """A host NumPy copy (or view) of ``tensor`` and its dtype's name; bfloat16 is widened to
    float32 exactly. DTensors are gathered whole (the checks are about the global tensor)."""
    t = tensor.detach()
    full = getattr(t, "full_tensor", None)
    if full is not None:
        t = full()
    if t.is_meta:
        raise ValueError(
            f"Parameter {name!r} is on the meta device: it has no values to check. Materialize the "
            "model first (to_empty(device=...) and an init, or initscale.torch.reinit_)."
        )
    if t.is_complex():
        raise TypeError(f"Parameter {name!r} is complex ({t.dtype}); check reads real parameters only.")
    dtype = str(t.dtype).replace("torch.", "")
    t = t.cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy(), dtype


def _aliases(pairs: list[tuple[str, torch.Tensor]]) -> dict[int, list[str]]:
    names: dict[int, list[str]] = {}
    for name, tensor in pairs:
        names.setdefault(id(tensor), []).append(name)
    return names


def check(
    model: torch.nn.Module | Mapping[str, torch.Tensor],
    recipe: Any = None,
    *,
    rules: Any = None,
    fresh: bool = True,
    alpha: float = ALPHA,
    include_frozen: bool = True,
    include_buffers: bool = False,
) -> CheckReport:
    """Check a freshly initialized model's parameters for the silent init bugs.

    Args:
        model: a ``torch.nn.Module``, or a state dict (name -> tensor; roles then come from the
            names, :func:`initscale.check.role_from_name`, and tensors sharing storage are tied).
        recipe: a recipe (``initscale.recipes.get("hf.gpt2")``) or its name, resolved on the
            model (:meth:`initscale.recipes.Recipe.rules_for`), or a rule set: each parameter is
            expected to hold what ``reinit_(model, recipe)`` would draw for it. A state dict has no
            module tree to read roles from: pass ``rules=recipe.rules_for(model)`` there.
        rules: the rules ``reinit_`` takes (one spec, or a mapping pattern -> spec): each
            parameter is expected to hold what ``reinit_(model, rules)`` would draw for it
            (defaults included: biases zeros, norm scales ones, offsets zeros).
        fresh: the model is freshly initialized (also flag norm scales that are not ones and
            values off their expected distribution). False keeps the flags that hold after
            training too.
        alpha: the family-wise false-alarm rate of the chance flags (Bonferroni over the tests).
        include_frozen: also expect frozen parameters to follow the rules (``reinit_`` skips
            them unless asked; pass False to match a ``reinit_`` without ``include_frozen``).
        include_buffers: also check buffers (``running_mean``, ...).

    Returns:
        An :class:`initscale.check.CheckReport`: one row per parameter (measured
        mean/std/min/max, expected ones, ``.flags``); ``print(report)`` shows a table,
        ``report.to_dict()`` the JSON; truthy when nothing is flagged.

    Example:
        >>> import torch, initscale
        >>> from initscale.adapters.torch import check
        >>> torch.manual_seed(0) and None
        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))
        >>> bool(check(model))
        True
        >>> with torch.no_grad():
        ...     _ = model[1].weight.zero_()           # a zeroed norm
        >>> check(model).flags
        {'1.weight': ('norm_scale_not_one',)}
    """
    rules = _core.rules_for(recipe, rules)
    if isinstance(model, Mapping):
        return _check_state_dict(model, rules=rules, fresh=fresh, alpha=alpha)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            "Argument `model` must be a torch.nn.Module or a state dict (a mapping from name to tensor). "
            f"Received: {type(model).__name__}."
        )
    from .torch import _Backend  # here, not at the top: initscale.adapters.torch re-exports check

    walked = _Backend(model, True, include_buffers, None, None, None).walk()  # reinit_'s walk, biases -> weights
    rules = model_rules(rules, model, [p for p, _ in walked])  # a recipe: its roles resolved on this model
    found = [(p, t) for p, t in walked if p.tied_to is None]  # one row a tensor
    pairs: list[tuple[str, torch.Tensor]] = list(model.named_parameters(remove_duplicate=False))
    if include_buffers:
        pairs += list(model.named_buffers(remove_duplicate=False))
    names_of = _aliases(pairs)
    modules = dict(model.named_modules(remove_duplicate=False))
    named = dict(pairs)
    # a weight-normed layer uses g · v / ‖v‖, not v: its v row is checked as the weight it computes
    normed = {r.drawn: r for r in _reparam.find(list(modules.items())) if r.method == "weight_norm"}
    expected = _core._expected_for([p for p, _ in found], rules, include_frozen)
    entries, notes = [], []
    for param, tensor in found:
        if tensor.is_complex():
            notes.append(f"note: {param.name} skipped: dtype {tensor.dtype} is not checked")
            continue
        read = tensor
        if (r := normed.get(param.name)) is not None and r.magnitude in named:
            with torch.no_grad():
                read = torch._weight_norm(tensor, named[r.magnitude], r.dim)
        values, dtype = _numpy(param.name, read)
        owner = modules.get(param.name.rpartition(".")[0])
        padding = None
        if param.role == "embedding" and isinstance(owner, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
            padding = owner.padding_idx
        others = tuple(n for n in names_of.get(id(tensor), []) if n != param.name)
        entries.append(
            Entry(
                param.name,
                values,
                role=param.role,
                layer=param.layer,
                expected=expected.get(param.name),
                padding_idx=padding,
                unit_axis=0,
                aliases=others,
                dtype=dtype,
            )
        )
    return _core.check_arrays(entries, fresh=fresh, alpha=alpha, notes=notes)


def _storage_key(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _check_state_dict(
    state: Mapping[str, Any], *, rules: Any, fresh: bool, alpha: float, notes: list[str] | None = None
) -> CheckReport:
    notes = list(notes or [])
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    aliases: dict[str, list[str]] = {}
    first: dict[tuple[Any, ...], str] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            notes.append(f"note: {name} skipped: a {type(value).__name__}, not a tensor")
            continue
        if value.is_complex():
            notes.append(f"note: {name} skipped: dtype {value.dtype} is not checked")
            continue
        key = _storage_key(value)
        if value.numel() and key in first:
            aliases.setdefault(first[key], []).append(name)
            continue
        first[key] = name
        arrays[name], dtypes[name] = _numpy(name, value)
    return _core.check_state(arrays, rules=rules, fresh=fresh, alpha=alpha, aliases=aliases, dtypes=dtypes, notes=notes)


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A torch checkpoint's tensors, name -> tensor, read with ``torch.load(weights_only=True)``
    (tensors and plain containers only: nothing else is unpickled). Nested dicts (``{"model":
    {...}}``) are flattened with ``.``; tensors that shared storage when saved share it again."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... for foreign files
        raise ValueError(
            f"{os.fspath(path)!r} is not a torch checkpoint readable with weights_only=True: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from None
    if isinstance(obj, torch.nn.Module) or not isinstance(obj, Mapping):
        raise ValueError(
            f"{os.fspath(path)!r} holds a {type(obj).__name__}; check reads a state dict (a mapping "
            "from name to tensor): save model.state_dict()."
        )
    return _flatten(obj)


def check_checkpoint(
    path: str | os.PathLike[str], *, rules: Any = None, fresh: bool = True, alpha: float = ALPHA
) -> CheckReport:
    """:func:`check` on the state dict in a torch checkpoint file (:func:`load_checkpoint`)."""
    return _check_state_dict(load_checkpoint(path), rules=rules, fresh=fresh, alpha=alpha)
