"""``materialize_``: a model built on the meta device, made ready on a real device.

The flow is the one large-model stacks use (torchtitan's ``train.py``: build under
``torch.device("meta")``, ``fully_shard``, ``model.to_empty(device=...)``, then
``model.init_weights(buffer_device=...)``; transformers' ``from_pretrained``:
``_move_missing_keys_from_meta_to_device`` then ``_initialize_missing_keys`` ->
``initialize_weights`` -> each module's ``_init_weights``, transformers 5.24.0
``modeling_utils.py``), with initscale's rules for the parameters and, for the buffers, the
modules' own code. Everything that can be checked is checked on the meta model first, so a
predictable failure allocates and changes nothing.

How each buffer is restored (the first that applies, per buffer; each is first run on the meta
model under a :class:`~torch.utils._python_dispatch.TorchDispatchMode` that records which
storages it writes, so a restorer that does not write a buffer is never trusted with it):

1. ``restorers={"ClassName": fn}``: the caller's ``fn(module)``, which writes (or reassigns) the
   module's own buffers.
2. torch's normalization layers with running stats (``_NormBase``: BatchNorm, InstanceNorm,
   SyncBatchNorm): their ``reset_running_stats()`` (``running_mean`` 0, ``running_var`` 1,
   ``num_batches_tracked`` 0; ``torch/nn/modules/batchnorm.py``).
3. transformers' rotary embeddings (a class named ``...RotaryEmbedding`` with ``config``,
   ``rope_type`` and ``inv_freq``): ``inv_freq`` and ``original_inv_freq`` from the module's own
   rope function, chosen as transformers 5.24.0 ``PreTrainedModel._init_weights`` chooses it
   (``rope_init_fn`` if the module keeps one, else ``compute_default_rope_parameters`` /
   ``compute_axial_rope_parameters`` / ``compute_ntk_alpha_rope_parameters`` /
   ``ROPE_INIT_FUNCTIONS[rope_type]``), computed on the CPU as the constructor does, then copied.
4. transformers' own ``_init_weights(module)`` of the nearest enclosing ``PreTrainedModel``:
   since transformers 5 loads on the meta device, every model's ``_init_weights`` must restore
   its non-persistent buffers (``BertEmbeddings.position_ids``/``token_type_ids``: an arange
   and zeros). It also draws the module's own parameters: they are drawn again by the rules.
5. the module's ``reset_parameters()`` (it also re-draws the module's parameters, drawn again
   by the rules afterwards).
6. the module rebuilt on the CPU from its constructor, when that is cheap (at most
   ``2**20`` parameter values in the module) and every constructor argument is an attribute of
   the same name on the module (``config``, ``dim``, ...; ``device`` is taken as the CPU): the
   rebuilt module's buffers (same names, shapes and dtypes) are copied in.
7. torchtitan's convention, the module's ``init_weights(buffer_device=...)`` (its Llama 3
   ``Transformer`` recomputes ``freqs_cis`` there), with ``buffer_device`` the CPU. It also draws
   every parameter below the module (a whole model's init, drawn again by the rules): for a
   large model, ``restorers={"Transformer": lambda m: setattr(m, "freqs_cis",
   m._precompute_freqs_cis())}`` is cheaper.

A buffer a restorer assigns anew (``self.freqs_cis = ...``) is copied into the allocated tensor,
which keeps its place on ``device``. Restorers 2-7 run with the RNG state forked
(``torch.random.fork_rng``): the global RNG is left as it was. A buffer none of them writes is an
error naming it, its module's class and the fix, before anything is allocated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from initscale.reinit import Report
from initscale.specs import Orthogonal, Spec

__all__ = ["materialize_"]

Restorer = Callable[[torch.nn.Module], Any]
_REBUILD_VALUES = 2**20  # a module with at most this many parameter values is rebuilt on the CPU
_REBUILD = "its constructor, rebuilt on the CPU"
_DEVICE_TYPES = ("cpu", "cuda", "hpu", "mps", "mtia", "xla", "xpu")


class _Writes(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Records the storage of every tensor an op writes (schema arguments marked ``(a!)``); on
    the meta device this costs nothing and sees ``.data`` writes too (same storage)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        arguments = func._schema.arguments
        bound = dict(zip([a.name for a in arguments], args, strict=False))
        bound.update(kwargs)
        for argument in arguments:
            if argument.alias_info is not None and argument.alias_info.is_write:
                value = bound.get(argument.name)
                for tensor in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(tensor, torch.Tensor):
                        self.storages.add(_storage_key(tensor))
        return func(*args, **kwargs)


def _storage_key(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage()._cdata)


@dataclasses.dataclass
class _Candidate:
    name: str  # what the error message and the plan call it
    run: Callable[[], Any]  # writes (or reassigns) the owner's buffers
    forked: bool = True  # run with the RNG state forked
    values: dict[str, torch.Tensor] | None = None  # precomputed (rebuilt on the CPU): copied in


@dataclasses.dataclass
class _BufferPlan:
    owner_name: str
    owner: torch.nn.Module
    candidate: _Candidate
    names: list[str]  # the owner's own buffer names this candidate restores


def _class_names(module: torch.nn.Module) -> tuple[str, ...]:
    return tuple(c.__name__ for c in type(module).__mro__ if c not in (torch.nn.Module, object))


def _check_device(device: Any) -> torch.device:
    valid = ", ".join(repr(t) for t in _DEVICE_TYPES)
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, (str, int)) and not isinstance(device, bool):
        try:
            parsed = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as err:
            raise ValueError(
                f"Argument `device` must be a torch.device, a device string such as 'cpu' or 'cuda:0' "
                f"(types {valid}) or a CUDA index. Received: device={device!r} ({err})."
            ) from None
    else:
        raise TypeError(
            f"Argument `device` must be a torch.device, a device string such as 'cpu' or 'cuda:0' "
            f"(types {valid}) or a CUDA index. Received: device={device!r}."
        )
    if parsed.type == "meta":
        raise ValueError(
            f"Argument `device` must be a device with storage (types {valid}), not the meta device: "
            f"materialize_ moves the model off it. Received: device={device!r}."
        )
    module = getattr(torch, parsed.type, None) if parsed.type != "cpu" else None
    if parsed.type != "cpu":
        available = getattr(module, "is_available", None)
        if available is None or not available():
            raise ValueError(
                f"Argument `device` names {parsed.type!r}, which is not available in this process "
                f"(torch.{parsed.type}.is_available() is false); available here: "
                f"{', '.join(repr(t) for t in _available_types())}. Received: device={device!r}."
            )
        count = getattr(module, "device_count", None)
        if parsed.index is not None and count is not None and parsed.index >= count():
            raise ValueError(
                f"Argument `device` names {parsed.type} index {parsed.index}, but this process sees "
                f"{count()} {parsed.type} device(s) (valid indices 0..{count() - 1}). "
                f"Received: device={device!r}."
            )
    return parsed


def _available_types() -> list[str]:
    found = ["cpu"]
    for device_type in _DEVICE_TYPES[1:]:
        module = getattr(torch, device_type, None)
        available = getattr(module, "is_available", None)
        with contextlib.suppress(Exception):
            if available is not None and available():
                found.append(device_type)
    return found


def _is_meta(tensor: torch.Tensor) -> bool:
    local = getattr(tensor, "_local_tensor", None)  # a DTensor: its local shard
    return bool((local if isinstance(local, torch.Tensor) else tensor).is_meta)


def _listed(names: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f", ... and {len(names) - most} more" if len(names) > most else "")


def _check_on_meta(model: torch.nn.Module, device: torch.device) -> None:
    tensors: list[tuple[str, torch.Tensor]] = list(model.named_parameters(remove_duplicate=False))
    tensors += [(n, t) for n, t in model.named_buffers(remove_duplicate=False) if t is not None]
    meta = [n for n, t in tensors if _is_meta(t)]
    real = [f"{n} ({t.device})" for n, t in tensors if not _is_meta(t)]
    if not tensors:
        raise ValueError("Argument `model` has no parameters or buffers: there is nothing to materialize.")
    if not meta:
        raise ValueError(
            f"Argument `model` has no tensor on the meta device (its {len(real)} tensors have storage, e.g. "
            f"{_listed(real, 3)}): materialize_ makes a model built under `with torch.device('meta'):` ready on "
            "`device`. To re-initialize a model that has storage, use initscale.torch.reinit_(model, rules)."
        )
    if real:
        raise ValueError(
            f"Argument `model` is partly on the meta device: {len(meta)} tensor(s) on meta ({_listed(meta, 3)}) and "
            f"{len(real)} with storage ({_listed(real, 3)}). materialize_ builds a whole model and would have to "
            "decide whether the tensors with storage keep their values; nothing was changed. Build the whole model "
            "on meta (or model.to('meta')) and call materialize_ again, or, to keep loaded values, move the meta "
            f"ones yourself (model.to_empty(device={str(device)!r}) reallocates every tensor) and re-initialize the "
            "missing ones with initscale.torch.reinit_(model, rules) naming them."
        )


def _check_generator(generator: Any, device: torch.device) -> None:
    from .torch import _check_generator_type

    _check_generator_type(generator)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"Argument `generator` is on {generator.device} but `device` is {device}: torch draws on "
            f"a device only from a generator of that device type. Pass "
            f"torch.Generator(device={str(device)!r}). Received: generator on {generator.device}."
        )


def _check_restorers(restorers: Any) -> dict[str, Restorer]:
    if restorers is None:
        return {}
    if not isinstance(restorers, Mapping):
        raise TypeError(
            "Argument `restorers` must be a mapping from a module class name to a function "
            f"fn(module) that writes that module's buffers. Received: restorers={restorers!r}."
        )
    for key, fn in restorers.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise TypeError(
                f"Each key of `restorers` must be a module class name such as 'MyRotary'. Received: {key!r}."
            )
        if not callable(fn):
            raise TypeError(f"The restorer for {key!r} must be a function fn(module). Received: {fn!r}.")
    return dict(restorers)


# --- the restorers -----------------------------------------------------------------------------


def _has_running_stats(owner: torch.nn.Module) -> bool:
    norm_base = torch.nn.modules.batchnorm._NormBase
    return isinstance(owner, norm_base) and bool(owner.track_running_stats)


def _rope_function(owner: torch.nn.Module) -> Callable[..., Any] | None:
    """The rope function transformers 5.24 ``PreTrainedModel._init_weights`` uses for ``owner``."""
    kept = getattr(owner, "rope_init_fn", None)
    if callable(kept):
        return cast(Callable[..., Any], kept)
    rope_utils = sys.modules.get("transformers.modeling_rope_utils")
    functions = {
        "axial": getattr(owner, "compute_axial_rope_parameters", None),
        "ntk_alpha": getattr(owner, "compute_ntk_alpha_rope_parameters", None),
        "default": getattr(owner, "compute_default_rope_parameters", None),
        **dict(getattr(rope_utils, "ROPE_INIT_FUNCTIONS", {}) or {}),
    }
    found = functions.get(getattr(owner, "rope_type", None))
    return cast(Callable[..., Any], found) if callable(found) else None


def _is_hf_rotary(owner: torch.nn.Module) -> bool:
    return (
        any("RotaryEmbedding" in c for c in _class_names(owner))
        and hasattr(owner, "config")
        and isinstance(owner._buffers.get("inv_freq"), torch.Tensor)
        and _rope_function(owner) is not None
    )


def _restore_rotary(owner: torch.nn.Module) -> None:
    rope = _rope_function(owner)
    assert rope is not None
    with torch.device("cpu"):  # as the constructor computed it (a CPU model's values, then copied)
        inv_freq, _ = rope(owner.config)
    with torch.no_grad():
        for name in ("inv_freq", "original_inv_freq"):
            buffer = owner._buffers.get(name)
            if isinstance(buffer, torch.Tensor):
                buffer.copy_(inv_freq)


def _pretrained_ancestor(model: torch.nn.Module, owner_name: str) -> torch.nn.Module | None:
    """The nearest module at or above ``owner_name`` that is a transformers ``PreTrainedModel``."""
    parts = owner_name.split(".") if owner_name else []
    for depth in range(len(parts), -1, -1):
        candidate = model.get_submodule(".".join(parts[:depth]))
        if "PreTrainedModel" in _class_names(candidate) and callable(getattr(candidate, "_init_weights", None)):
            return candidate
    return None


def _rebuilt(owner: torch.nn.Module) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The owner's buffers from its constructor run again on the CPU, or None and why not."""
    values = sum(p.numel() for p in owner.parameters())
    if values > _REBUILD_VALUES:
        return None, f"not rebuilt: it holds {values} parameter values (at most {_REBUILD_VALUES} are rebuilt)"
    try:
        signature = inspect.signature(type(owner).__init__)
    except (TypeError, ValueError):
        return None, "not rebuilt: its constructor has no signature"
    kwargs: dict[str, Any] = {}
    missing = []
    for index, (name, parameter) in enumerate(signature.parameters.items()):
        if index == 0 or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name == "device":
            kwargs[name] = torch.device("cpu")
        elif hasattr(owner, name):
            kwargs[name] = getattr(owner, name)
        else:
            missing.append(name)
    if missing:
        return None, (
            f"not rebuilt: its constructor's argument(s) {', '.join(missing)} are not attributes of the "
            "module, so their values are unknown"
        )
    try:
        with torch.device("cpu"), torch.random.fork_rng(devices=[]):
            fresh = type(owner)(**kwargs)
    except Exception as err:  # its constructor: anything may fail
        return None, f"not rebuilt: its constructor raised {type(err).__name__}: {err}"
    got = {n: b for n, b in fresh._buffers.items() if b is not None}
    want = {n: b for n, b in owner._buffers.items() if b is not None}
    same = got.keys() == want.keys() and all(
        tuple(got[n].shape) == tuple(want[n].shape) and got[n].dtype == want[n].dtype for n in want
    )
    if not same:
        shown = {n: (tuple(b.shape), b.dtype) for n, b in got.items()}
        return None, f"not rebuilt: the rebuilt module's buffers {shown} differ from the module's"
    return {n: b.detach() for n, b in got.items()}, ""


def _method(module: torch.nn.Module, name: str) -> Callable[..., Any]:
    """A module's method (typed: ``Module.__getattr__`` says Tensor | Module)."""
    return cast(Callable[..., Any], getattr(module, name))


def _takes_buffer_device(owner: torch.nn.Module) -> bool:
    """torchtitan's ``init_weights(buffer_device=None)``: recomputes the module's buffers (and
    draws every parameter below it)."""
    method = getattr(owner, "init_weights", None)
    try:
        return callable(method) and "buffer_device" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _candidates(
    model: torch.nn.Module, owner_name: str, owner: torch.nn.Module, restorers: Mapping[str, Restorer]
) -> tuple[list[_Candidate], list[str]]:
    found: list[_Candidate] = []
    notes: list[str] = []
    for cls in _class_names(owner):
        if cls in restorers:
            fn = restorers[cls]
            found.append(_Candidate(f"restorers[{cls!r}]", functools.partial(fn, owner), forked=False))
            break
    if _has_running_stats(owner):
        found.append(_Candidate("reset_running_stats()", _method(owner, "reset_running_stats")))
    if _is_hf_rotary(owner):
        found.append(
            _Candidate("its rope function (transformers' rotary embedding)", functools.partial(_restore_rotary, owner))
        )
    ancestor = _pretrained_ancestor(model, owner_name)
    if ancestor is not None:
        found.append(
            _Candidate(
                f"{type(ancestor).__name__}._init_weights (transformers)",
                functools.partial(_method(ancestor, "_init_weights"), owner),
            )
        )
    if callable(getattr(owner, "reset_parameters", None)):
        found.append(_Candidate("reset_parameters()", _method(owner, "reset_parameters")))
    found.append(_Candidate(_REBUILD, lambda: None))  # computed only if reached (it builds a module)
    if _takes_buffer_device(owner):
        found.append(
            _Candidate(
                "init_weights(buffer_device=cpu) (torchtitan's convention)",
                functools.partial(_method(owner, "init_weights"), buffer_device=torch.device("cpu")),
            )
        )
    return found, notes


def _run(
    candidate: _Candidate, owner: torch.nn.Module, names: Sequence[str], fork_devices: list[int]
) -> dict[str, torch.Tensor]:
    """Run ``candidate``; the buffers it reassigned are put back and returned (name -> new value)."""
    before = {n: owner._buffers[n] for n in names}
    if candidate.values is not None:
        return {n: candidate.values[n] for n in names}
    forked = torch.random.fork_rng(devices=fork_devices) if candidate.forked else contextlib.nullcontext()
    moved = {}
    try:
        with forked, torch.no_grad():
            candidate.run()
    finally:  # even when it fails midway: the model keeps its own buffer tensors
        for n in names:
            now = owner._buffers.get(n)
            if now is not before[n]:
                owner._buffers[n] = before[n]
                if isinstance(now, torch.Tensor):
                    moved[n] = now
    return moved


def _plan_buffers(model: torch.nn.Module, restorers: Mapping[str, Restorer]) -> list[_BufferPlan]:
    """On the meta model: which candidate restores each buffer (probed), or an error."""
    plans: list[_BufferPlan] = []
    problems: list[str] = []
    for owner_name, owner in model.named_modules(remove_duplicate=True):
        own = [n for n, b in owner._buffers.items() if b is not None]
        if not own:
            continue
        candidates, notes = _candidates(model, owner_name, owner, restorers)
        left = list(own)
        tried = []
        for candidate in candidates:
            if not left:
                break
            if candidate.name == _REBUILD:
                candidate.values, why = _rebuilt(owner)
                if candidate.values is None:
                    notes.append(why)
                    continue
                plans.append(_BufferPlan(owner_name, owner, candidate, list(left)))
                left = []
                break
            recorder = _Writes()
            try:
                with recorder:
                    moved = _run(candidate, owner, left, [])
            except Exception as err:  # the module's own code on meta tensors: anything may fail
                tried.append(f"{candidate.name} failed on the meta model ({type(err).__name__}: {err})")
                continue
            wrote = [n for n in left if n in moved or _storage_key(owner._buffers[n]) in recorder.storages]
            bad = [
                n
                for n in wrote
                if n in moved
                and (
                    tuple(moved[n].shape) != tuple(owner._buffers[n].shape) or moved[n].dtype != owner._buffers[n].dtype
                )
            ]
            if bad:
                tried.append(f"{candidate.name} replaced {', '.join(bad)} by a tensor of another shape or dtype")
                wrote = [n for n in wrote if n not in bad]
            if wrote:
                plans.append(_BufferPlan(owner_name, owner, candidate, wrote))
                left = [n for n in left if n not in wrote]
            else:
                tried.append(f"{candidate.name} does not write {', '.join(left)}")
        if left:
            prefix = f"{owner_name}." if owner_name else ""
            why = "; ".join(tried + notes) or "no restorer applies"
            problems.append(f"  {', '.join(repr(prefix + n) for n in left)} (in {type(owner).__name__}): {why}")
    if problems:
        raise ValueError(
            f"{len(problems)} module(s) have buffers that initscale cannot restore after to_empty (they would hold "
            "uninitialized memory); nothing was allocated or changed:\n" + "\n".join(problems) + "\nPass "
            "restorers={'<module class>': fn}, where fn(module) writes the module's buffers in place (e.g. "
            "lambda m: m.mask.copy_(torch.tril(torch.ones_like(m.mask)))), or give the module a "
            "reset_parameters() that computes them."
        )
    return plans


def _restore(plans: Sequence[_BufferPlan], device: torch.device) -> None:
    """Run each planned restorer on the allocated model; a buffer it reassigned is copied into the
    allocated tensor (so it lands on ``device`` and keeps its identity)."""
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    done: list[str] = []
    with torch.no_grad():
        for plan in plans:
            prefix = f"{plan.owner_name}." if plan.owner_name else ""
            try:
                for name, value in _run(plan.candidate, plan.owner, plan.names, fork).items():
                    cast(torch.Tensor, plan.owner._buffers[name]).copy_(value)
            except Exception as err:  # it ran on the meta model: a runtime failure (device, memory)
                raise RuntimeError(
                    f"materialize_: {plan.candidate.name} failed on the allocated model while restoring "
                    f"{_listed([prefix + n for n in plan.names])} ({type(err).__name__}: {err}), although it ran on "
                    f"the meta model. The model is allocated on {device}; buffers restored so far: "
                    f"{_listed(done) or 'none'}; no parameter has been drawn yet."
                ) from err
            done += [prefix + n for n in plan.names]


def _ties(named: Sequence[tuple[str, Any]]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, tensor in named:
        if tensor is not None:
            groups.setdefault(id(tensor), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _retie(model: torch.nn.Module, groups: Sequence[Sequence[str]], registry: str) -> None:
    """to_empty gives every name of a tied tensor its own new tensor: point the aliases back."""
    for first, *aliases in groups:
        owner_name, _, leaf = first.rpartition(".")
        tensor = getattr(model.get_submodule(owner_name), registry)[leaf]
        for alias in aliases:
            owner_name, _, leaf = alias.rpartition(".")
            getattr(model.get_submodule(owner_name), registry)[leaf] = tensor


def _untouched_error(report: Report) -> ValueError:
    rows = [r for r in report.rows if not r.touched and r.tied_to is None]  # a tied name: its first name
    lines = []
    for row in rows[:20]:
        if "redraws it as the model does" in row.reason:  # the reason names the model's own draw (SAM)
            lines.append(f"  {row.name!r} (shape {row.shape}, in {row.layer}): {row.reason}")
            continue
        embed = "embed" in row.name.lower() or "embedding" in row.reason or "Embedding" in row.layer
        fix = (
            f"{{{row.name!r}: initscale.Normal(0.02)}}"
            if embed
            else f"{{{row.name!r}: spec}} (initscale.Rule(spec, layout=...) for a layer initscale does not know)"
        )
        lines.append(f"  {row.name!r} (shape {row.shape}, in {row.layer}): {row.reason}; e.g. rules {fix}")
    more = f"\n  ... and {len(rows) - 20} more" if len(rows) > 20 else ""
    return ValueError(
        f"{len(rows)} parameter(s) would hold uninitialized memory after to_empty: neither the rules nor the "
        "defaults set them (a meta parameter has no values to keep); nothing was allocated or changed:\n"
        + "\n".join(lines)
        + more
        + "\nGive each a rule: a spec for weights, initscale.Normal(0.02) (or your "
        "model's std) for embeddings and position embeddings, initscale.Zeros() for what starts at zero."
    )


def materialize_(
    model: torch.nn.Module,
    rules: Spec | Mapping[str, Any],
    *,
    device: torch.device | str | int,
    generator: torch.Generator | None = None,
    restorers: Mapping[str, Restorer] | None = None,
    dry_run: bool = False,
    defaults: bool = True,
    fans: str = "forward",
    stream_seed: int | None = None,
    stream_names: Mapping[str, str] | Callable[[str], str] | None = None,
) -> Report:
    """Make a model built on the meta device ready on ``device``, in place: every parameter by
    ``rules``, every buffer by its module's own code.

    ``model.to_empty(device=device)`` allocates every tensor (the model itself, no second copy);
    ties (one tensor under several names, which ``to_empty`` splits) are restored; each buffer is
    restored by its module's own code (the module docstring lists how, in order: BatchNorm's
    ``reset_running_stats``, transformers' rope functions and ``_init_weights``, a module's
    ``reset_parameters``, its constructor rebuilt on the CPU, or ``restorers``); then every
    parameter is drawn by :func:`~initscale.adapters.torch.reinit_` with ``rules`` (frozen
    parameters included: a meta parameter has no values to keep).

    Checked on the meta model before anything is allocated, so that a predictable failure changes
    nothing: the arguments; that every tensor of ``model`` is on the meta device (a model partly
    on meta is refused); the rules (``reinit_``'s dry run, with all its checks); that every
    parameter gets a value from the rules or the defaults (a parameter they keep, such as an
    embedding no rule names, is an error naming it and the fix, e.g.
    ``{"embed_tokens": initscale.Normal(0.02)}``); and that every buffer has a restorer that
    writes it (each is run once on the meta model, where it costs nothing, and the storages it
    writes are recorded). A buffer nothing restores is an error naming it and its module's class.

    Args:
        model: a ``torch.nn.Module`` whose parameters and buffers are all on the meta device
            (built under ``with torch.device("meta"):``); DTensor parameters (FSDP2's
            ``fully_shard`` on a meta model) too: each rank allocates and fills its shard.
        rules: as for :func:`~initscale.adapters.torch.reinit_`: one spec for every supported
            layer's weights, or an ordered mapping from pattern to spec / ``initscale.Rule`` / None.
        device: where the model goes: a ``torch.device``, a string (``"cpu"``, ``"cuda:0"``) or a
            CUDA index. Must be available in this process.
        generator: a ``torch.Generator`` on ``device``'s type to draw every parameter from (the
            global RNG is then not touched); None: the global RNG, like ``torch.nn.init``.
        restorers: ``{"ModuleClass": fn}``: ``fn(module)`` writes that module's buffers (in place,
            or by assigning new tensors, which are copied to ``device``), for modules whose buffers
            initscale cannot restore by itself. Tried first, and checked on the meta model too.
        dry_run: make every check above and return the report of what would be drawn, allocating
            and changing nothing (the restorers' runs on the meta model write no values).
        defaults, fans, stream_seed, stream_names: as for ``reinit_``.

    Returns:
        ``reinit_``'s :class:`~initscale.reinit.Report` for the parameters.

    Raises:
        TypeError, ValueError: before anything is allocated, for the problems above.
        initscale.adapters.torch.PartialWriteError: a draw failed midway (a device error), as in
            ``reinit_``; the model is then allocated, its buffers restored, some parameters drawn.

    Example:
        >>> import torch, initscale
        >>> from initscale import presets
        >>> with torch.device("meta"):
        ...     model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        ...                                 torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
        >>> report = initscale.torch.materialize_(model, presets.get("he_normal"), device="cpu",
        ...                                       generator=torch.Generator().manual_seed(0))
        >>> model[1].running_var.tolist() == [1.0] * 8, int(model[1].num_batches_tracked)
        (True, 0)
        >>> bool(model.eval()(torch.randn(2, 3, 8, 8)).isfinite().all()), report["4.weight"].fan_in
        (True, 288)

    Sources: transformers 5.24.0 ``src/transformers/modeling_utils.py``
    (``PreTrainedModel._init_weights``, ``_initialize_weights``, ``initialize_weights``,
    ``_move_missing_keys_from_meta_to_device``, ``_initialize_missing_keys``) and
    ``models/llama/modeling_llama.py`` (``LlamaRotaryEmbedding``); torchtitan (pytorch/torchtitan)
    ``torchtitan/train.py`` (``model.to_empty(device=init_device)``, then under ``no_grad``
    ``model.init_weights(buffer_device=buffer_device)``) and
    ``torchtitan/models/llama3/model/model.py`` at commit 6404b932 (``init_weights`` recomputes
    ``freqs_cis`` under ``torch.device(buffer_device)``, then draws every parameter); torch 2.13
    ``torch/nn/modules/module.py`` (``to_empty``, which gives each tied name its own tensor when
    leaving the meta device) and ``batchnorm.py`` (``reset_running_stats``).
    """
    from . import torch as ist  # the adapter module (this module is imported at its end)

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"Argument `model` must be a torch.nn.Module. Received: {type(model).__name__}.")
    target = _check_device(device)
    _check_generator(generator, target)
    chosen = _check_restorers(restorers)
    _check_on_meta(model, target)
    report = ist.reinit_(
        model,
        rules,
        generator=generator,
        dry_run=True,
        include_frozen=True,
        defaults=defaults,
        fans=fans,
        stream_seed=stream_seed,
        stream_names=stream_names,
    )
    if report.untouched:
        raise _untouched_error(report)
    if stream_seed is not None:
        ortho = [r.name for r in report.touched if isinstance(r.spec, Orthogonal) and r.tied_to is None]
        if ortho:
            raise ValueError(
                f"Parameter(s) {_listed(ortho)}: orthogonal specs have no portable stream; give them a "
                "rule without stream_seed, or another spec. Nothing was allocated or changed."
            )
    partial = [n for n, p in model.named_parameters() if any(pl.is_partial() for pl in getattr(p, "placements", ()))]
    if partial:
        raise ValueError(
            f"Parameter(s) {_listed(partial)} are DTensors with a Partial placement (a pending "
            "reduction), which cannot be initialized; redistribute them to Shard or Replicate "
            "placements first. Nothing was allocated or changed."
        )
    plans = _plan_buffers(model, chosen)
    if dry_run:
        return report
    param_ties = _ties(list(model.named_parameters(remove_duplicate=False)))
    buffer_ties = _ties(list(model.named_buffers(remove_duplicate=False)))

    model.to_empty(device=target)
    _retie(model, param_ties, "_parameters")
    _retie(model, buffer_ties, "_buffers")
    _restore(plans, target)
    with warnings.catch_warnings():  # the dry run above gave the plan's warnings already
        warnings.simplefilter("ignore", UserWarning)
        return ist.reinit_(
            model,
            rules,
            generator=generator,
            include_frozen=True,
            defaults=defaults,
            fans=fans,
            stream_seed=stream_seed,
            stream_names=stream_names,
        )
