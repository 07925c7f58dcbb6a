"""Recipes: the whole-model initialization of well-known model families, as rules on *roles*.

``recipes.get(name, **config)`` returns a :class:`Recipe`, usable wherever rules are
(``initscale.torch.reinit_(model, recipes.get("hf.gpt2"))``, ``initscale.torch.check(model,
recipe="hf.gpt2")``); :func:`names` lists them. A recipe is not a list of globs: it says what
each *role* gets (token embedding, position embedding, attention q/k/v/out, MLP in/out, the
residual output projections, norms, LM head, pooler, classifier head, patch embedding, ...), and
:meth:`Recipe.rules_for` finds the roles on the actual model from its module tree (the classes
of the attention and MLP blocks and the attribute each projection sits under, the model's
input/output embeddings, ``_tied_weights_keys``, the config's depth and widths), then writes
them as concrete rules: exact parameter names, or a glob over the layer index that it has
checked matches exactly those names and no other. Each rule carries its role, so the report's
``reason`` says which recipe role set each parameter (``"recipe hf.gpt2: residual_out (rule
'transformer.h.*.attn.c_proj.weight')"``).

**Nothing silent.** Resolving raises, before anything is written, when

- a role the recipe needs matches no parameter (``hf.gpt2`` on a model without GPT-2's
  attention blocks): the error names the recipe, the role and the roles the model has;
- a parameter gets no role (a layer the recipe does not know): the error names it, its layer
  and the fix;
- the model is not one this recipe reads: the recipes of ``_PATH_RECIPES`` also read Keras 3
  models and JAX pytrees, from variable paths and layer classes
  (:mod:`initscale._recipe_paths`); the others read torch module trees only.

**Tied parameters** (one tensor under several names) get one value: the spec of the role of
the name that ``_tied_weights_keys`` (HF: ``all_tied_weights_keys``, target -> source) names as
the source, i.e. what HF's ``tie_weights`` leaves in the tensor; every name gets that rule and
its label says which role won. The rule is written on the tensor's first name (the one
``reinit_`` sets it under; the other names get rows saying they are tied to it).

**The recipes** (:func:`names`; ``recipes.get(name).describe()`` prints each one's formulas and
its source, a file at a commit or a paper's equations):

- ``hf.gpt2``, ``hf.bert``, ``hf.llama``, ``hf.t5``, ``hf.vit``: ``PreTrainedModel._init_weights``
  of transformers 5.24.0 (``transformers/modeling_utils.py`` and each
  ``models/<family>/modeling_<family>.py``) as ``post_init`` runs it;
  ``tests/test_recipes_hf.py`` compares each against HF's own draws.
- ``nanogpt``, ``megatron``, ``neox``, ``torchtitan.llama``, ``olmo.mitchell``,
  ``olmo.full_megatron``: depth-aware decoder recipes, on HF GPT-2/Llama models and on the
  codebases' own module trees (nanoGPT's, torchtitan's, OLMo's class and attribute names).
- ``timm.vit`` (``mode=''``, ``'jax'``, ``'jax_nlhb'``, ``'moco'``; ``fix_init``), on timm's
  VisionTransformer tree and HF ViT; ``deepnet`` (decoder-only and encoder-decoder β gains, on HF
  Llama-/T5-shaped models); ``fixup`` (Fixup's ResNet and torchvision-shaped blocks); ``t_fixup``
  (fairseq's encoder-decoder names). ``tests/test_recipes_depth.py`` checks each against the
  formulas transcribed from its source, at two depths, and against the source's own init code
  where it is small enough to transcribe.

**The hook.** Every reinit entry calls :func:`initscale.reinit.model_rules` after its walk and
before planning (``rules = model_rules(rules, model, params)``): a recipe is resolved there, on
that walk (no second one), anything else passes through. :meth:`Recipe.rules_for` keeps the
result per model under a key of everything it depends on, so a repeated call costs a key
comparison. ``initscale.torch.check(model, recipe=...)`` and the Keras and JAX ``check``
resolve it the same way; the command line (``initscale check FILE --recipe NAME --config
config.json``) builds the model of a transformers config on the meta device to read its roles
(:func:`rules_from_config`).
"""

from __future__ import annotations

import fnmatch
import functools
import math
import operator
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

from . import _validate
from .reinit import Param, Rule, _KeptRules
from .specs import Constant, Normal, Ones, Spec, TruncatedNormal, Uniform, VarianceScaling, Zeros

__all__ = ["Found", "Recipe", "get", "names", "rules_from_config"]


@dataclass(frozen=True, slots=True)
class Found:
    """One tensor of the model and the role the recipe's reader gave it.

    ``name`` is its first name (the one ``reinit_`` sets it under), ``names`` every name of the
    tensor (more than one when tied), ``role`` the recipe role, ``layer`` the index of the block
    it is in (None outside the repeated blocks), ``base`` the adapter's role (weight, bias,
    norm_scale, ...), ``owner`` the owning layer's class name, ``shape`` its shape, ``padding_idx``
    an embedding's padding row."""

    name: str
    names: tuple[str, ...]
    role: str
    layer: int | None
    base: str
    owner: str
    shape: tuple[int, ...]
    padding_idx: int | None = None


# --- reading a torch module tree -----------------------------------------------------------------


@dataclass
class _Part:
    name: str
    module: Any
    leaf: str
    parent: Any
    attr: str
    base: str
    shape: tuple[int, ...]
    tied_to: str | None
    padding_idx: int | None
    classes: tuple[str, ...]
    parent_classes: tuple[str, ...] = ()
    layer: int | None = None
    scope: str = ""  # Keras/JAX paths (initscale/_recipe_paths.py): "attn", "block" or "" outside the blocks


_MRO: dict[type, tuple[str, ...]] = {}  # a class -> the names of its MRO, computed once


def _classes(obj: Any) -> tuple[str, ...]:
    cls = type(obj)
    names_ = _MRO.get(cls)
    if names_ is None:
        names_ = _MRO[cls] = tuple(c.__name__ for c in cls.__mro__)
    return names_


def _torch_parts(
    model: Any, blocks: Sequence[str] = (), params: Sequence[Any] | None = None
) -> tuple[list[_Part], list[str]]:
    """Every parameter of a torch module (tied names too), with its owner, its owner's parent
    and attribute name, and the adapter's base role (``initscale.torch.reinit_``'s walk, or the
    :class:`~initscale.reinit.Param` list ``params`` it already made); and every name a rule could
    match (parameters and buffers)."""
    if params is None:
        from .adapters import torch as ist  # torch is loaded: the model is a torch module

        params = [p for p, _ in ist._walk(model, True, False)]
    modules = dict(model.named_modules(remove_duplicate=False))
    parts, every = [], []
    for param in params:
        every.append(param.name)
        if param.buffer:
            continue
        prefix, _, leaf = param.name.rpartition(".")
        owner = modules[prefix]
        parent_prefix, _, attr = prefix.rpartition(".")
        parent = modules.get(parent_prefix) if prefix else None
        parts.append(
            _Part(
                param.name,
                owner,
                leaf,
                parent,
                attr,
                param.role,
                param.shape,
                param.tied_to,
                param.padding_idx,
                _classes(owner),
                () if parent is None else _classes(parent),
            )
        )
    if blocks:
        _layer_indices(parts, modules, blocks)
    listed = set(every)
    for prefix, module in modules.items():  # buffers too: a rule may be offered them (include_buffers)
        for leaf, buffer in module._buffers.items():  # named_buffers(recurse=False), without its generator
            name = f"{prefix}.{leaf}" if prefix else leaf
            if buffer is not None and name not in listed:
                every.append(name)
    return parts, every


def _layer_indices(parts: Sequence[_Part], modules: Mapping[str, Any], blocks: Sequence[str]) -> None:
    """Set each part's ``layer``: the index of the repeated block (a class named in ``blocks``)
    that holds it, counted in its ModuleList (``transformer.h.3.attn.c_proj.weight`` -> 3)."""
    seen: dict[str, int | None] = {}
    for part in parts:
        owner = part.name.rpartition(".")[0]
        if owner not in seen:
            pieces, found = owner.split("."), None
            for i in range(len(pieces) - 1, 0, -1):
                block = modules.get(".".join(pieces[: i + 1])) if pieces[i].isdigit() else None
                if block is not None and any(c in blocks for c in _classes(block)):
                    found = int(pieces[i])
                    break
            seen[owner] = found
        part.layer = seen[owner]


def _hf_tie_sources(model: Any) -> set[str]:
    """The names HF ties others to (the values of ``all_tied_weights_keys`` / ``_tied_weights_keys``)."""
    keys = getattr(model, "all_tied_weights_keys", None)
    if not isinstance(keys, Mapping):
        keys = getattr(model, "_tied_weights_keys", None)
    return {str(v) for v in keys.values()} if isinstance(keys, Mapping) else set()


# --- recipes -------------------------------------------------------------------------------------

Reader = Callable[[Any, "_Part", dict[str, Any]], str | None]
Specs = Callable[[str, "_Part", dict[str, Any]], Spec | None]  # None: the recipe keeps it as it is


@dataclass(frozen=True)
class Recipe:
    """A whole-model rule set on roles (see the module docstring).

    Args:
        name: the recipe's name (``recipes.names()``).
        source: where its formulas come from (file at a version, or a paper's equation).
        config: the values it was given (``recipes.get(name, **config)``); anything not given is
            read from the model (its ``config``) when resolved.
    """

    name: str
    source: str
    config: Mapping[str, Any]
    doc: str = field(repr=False, default="")
    _settings: Callable[[Any, Mapping[str, Any]], dict[str, Any]] = field(repr=False, default=lambda m, c: dict(c))
    _role: Reader = field(repr=False, default=lambda m, p, s: None)
    _spec: Specs = field(repr=False, default=lambda r, p, s: None)
    required: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"recipes.get({self.name!r}{', ' if given else ''}{given})"

    def describe(self) -> str:
        """The recipe's formulas and where they come from."""
        return f"{self.name}: {self.doc}\nsource: {self.source}"

    def settings(self, model: Any) -> dict[str, Any]:
        """The numbers the recipe uses on ``model`` (its config's, or the ones given)."""
        try:
            return self._settings(model, self.config)
        except ValueError as err:
            raise ValueError(f"Recipe {self.name!r} on {type(model).__name__}: {err}") from None

    def roles(self, model: Any, params: Sequence[Any] | None = None) -> list[Found]:
        """Every tensor of ``model`` with its role (tied tensors once, all names listed); raises
        as the module docstring says. ``params``: the adapter's walk of it, as for :meth:`rules_for`."""
        found, _ = self._read(model, params)
        return found

    def _read(
        self, model: Any, params: Sequence[Any] | None
    ) -> tuple[list[Found], list[tuple[Found, Spec | None, str]]]:
        """The roles of ``model`` and, with them, each tensor's spec and label (see :meth:`plan`)."""
        planned = self._resolve(model, params)[0]
        return [f for f, _, _ in planned], planned

    def _resolve(
        self, model: Any, params: Sequence[Any] | None
    ) -> tuple[list[tuple[Found, Spec | None, str]], list[str], re.Pattern[str]]:
        """``model`` read as a torch module tree or as Keras/JAX paths: each tensor's role, spec
        and label (:meth:`plan`), every name a rule could match, and the pattern of the layer
        indices in those names (``_INDEX`` or ``_PATH_INDEX``)."""
        if _is_torch_module(model):
            settings = self.settings(model)
            parts, every = _torch_parts(model, self.blocks, params)
            return self._planned(model, parts, settings), every, _INDEX
        parts, every, view, reader = self._path_read(model, params)
        return self._planned(model, parts, self.settings(view), reader), every, _PATH_INDEX

    def _path_read(self, model: Any, params: Sequence[Any] | None) -> tuple[list[_Part], list[str], Any, Reader]:
        """A Keras model's or JAX pytree's parts (from the adapter's walk), every name, the view of
        it that the recipe's settings read (:class:`_PathView`) and the role reader for it."""
        from ._recipe_paths import path_model

        if self.name not in _PATH_RECIPES:
            raise TypeError(
                f"Recipe {self.name!r} reads roles from a torch module tree only (torch.nn.Module, e.g. a transformers "
                f"model); received {type(model).__module__}.{type(model).__name__}. The recipes that also read Keras "
                f"models and JAX pytrees are {', '.join(repr(n) for n in _PATH_RECIPES)}; for this model, pass rules "
                "(a mapping pattern -> spec) instead."
            )
        return path_model(self.name, model, params)

    def _found(
        self, model: Any, parts: list[_Part], settings: dict[str, Any], reader: Reader | None = None
    ) -> list[Found]:
        reader = reader or self._role
        aliases: dict[str, list[_Part]] = {}
        for part in parts:
            if part.tied_to is not None:
                aliases.setdefault(part.tied_to, []).append(part)
        found, unknown = [], []
        settings = {**settings, "_io": _io_embeddings(model)}
        for part in parts:
            if part.tied_to is not None:
                continue
            role = reader(model, part, settings)
            if role is None:
                unknown.append(part)
                continue
            others = aliases.get(part.name)
            tied = (part.name,) if others is None else (part.name, *(a.name for a in others))
            found.append(
                Found(part.name, tied, role, part.layer, part.base, part.classes[0], part.shape, part.padding_idx)
            )
        if unknown:
            listed = "\n".join(
                f"  {p.name!r} (shape {p.shape}, in {p.classes[0]}, base role {p.base})" for p in unknown[:20]
            )
            more = f"\n  ... and {len(unknown) - 20} more" if len(unknown) > 20 else ""
            raise ValueError(
                f"Recipe {self.name!r} gives no role to {len(unknown)} parameter(s) of {type(model).__name__}; "
                f"nothing was changed:\n{listed}{more}\nThis recipe does not know those layers. Initialize them "
                "yourself before or after, or use rules (a mapping pattern -> spec) that cover them."
            )
        have = {f.role for f in found}
        if reader is not self._role and {"attn_q", "attn_k", "attn_v"} <= have:
            have.add("attn_qkv")  # Keras/Flax attention: q, k and v in three kernels do what one packed QKV does
        missing = [r for r in self.required if r not in have]
        if missing:
            counts: dict[str, int] = {}
            for f in found:
                counts[f.role] = counts.get(f.role, 0) + 1
            listed = ", ".join(f"{r} ({n})" for r, n in sorted(counts.items()))
            raise ValueError(
                f"Recipe {self.name!r}: role(s) {', '.join(repr(r) for r in missing)} match no parameter of "
                f"{type(model).__name__}, so the recipe cannot be what this model needs; nothing was changed. "
                f"The model has the roles: {listed or 'none'}. Pick the recipe of this model's family "
                f"(initscale.recipes.names(): {', '.join(names())})."
            )
        return found

    def plan(self, model: Any, params: Sequence[Any] | None = None) -> list[tuple[Found, Spec | None, str]]:
        """Each tensor with the spec its role gets and the label the report shows."""
        return self._read(model, params)[1]

    def _planned(
        self, model: Any, parts: list[_Part], settings: dict[str, Any], reader: Reader | None = None
    ) -> list[tuple[Found, Spec | None, str]]:
        reader = reader or self._role
        found = self._found(model, parts, settings, reader)
        by_name = {p.name: p for p in parts}
        sources = _hf_tie_sources(model)
        out = []
        for f in found:
            label = f"recipe {self.name}: {f.role}"
            spec = self._spec(f.role, by_name[f.name], settings)
            if len(f.names) > 1:
                # one tensor, several names: the source HF ties the others to decides the value
                winner = next((n for n in f.names if n in sources), f.name)
                if winner != f.name:
                    part = by_name_alias(parts, winner)
                    role = reader(model, part, settings) or f.role
                    spec = self._spec(role, part, settings)
                    label = f"recipe {self.name}: {role} (tied: {winner!r} is the source in _tied_weights_keys)"
                else:
                    label += f" (tied: {', '.join(repr(n) for n in f.names[1:])} follow it)"
            out.append((f, spec, label))
        return out

    def rules_for(self, model: Any, params: Sequence[Any] | None = None) -> dict[str, Rule]:
        """The concrete rules of this recipe on ``model``: pattern -> :class:`initscale.Rule`
        with the role as its label. Patterns are exact names, or a glob over layer indices
        checked to match exactly its names among every parameter and buffer name of the model.
        ``params``: the adapter's walk of ``model`` (:class:`~initscale.reinit.Param` list), when
        it has one already (``reinit_`` does), so the model is not walked twice.

        With ``params``, the result is kept for the next call on the same model (a weak
        reference: nothing outlives the model), under a key of everything it is computed from:
        the recipe and its config, the walk itself (every :class:`~initscale.reinit.Param`:
        names, shapes, base roles, layouts, owner classes and their ancestors', ties, padding
        rows), the settings read from the model's config now, the names ``_tied_weights_keys``
        ties to, and the model's input/output embedding modules. A call whose key differs in
        anything resolves again, so a model changed in place (a layer swapped, a config edited)
        never gets stale rules; where a setting is an object (not a plain value), nothing is kept."""
        return dict(self._kept_rules(model, params))

    def _kept_rules(self, model: Any, params: Sequence[Any] | None) -> Mapping[str, Rule]:
        """:meth:`rules_for` without the copy: the kept resolution itself, read-only and compiled
        once (what :func:`initscale.reinit.model_rules` hands ``plan``), or, where nothing can be
        kept, the rules just resolved."""
        key = self._cache_key(model, params)
        if key is not None:
            kept = _RESOLVED.get(model)
            if kept is not None and kept[0] == key:
                return cast("Mapping[str, Rule]", kept[1])  # built from this recipe's rules: Rule values only
        rules = self._rules_for(model, params)
        if key is None:
            return rules
        frozen = _KeptRules(rules)
        _RESOLVED[model] = (key, frozen)
        return cast("Mapping[str, Rule]", frozen)

    def _cache_key(self, model: Any, params: Sequence[Any] | None) -> tuple[Any, ...] | None:
        """What :meth:`rules_for`'s result depends on; None where it cannot be kept (no walk
        given, a model that takes no weak reference, a setting that is not a plain value)."""
        if params is None:
            return None
        try:
            weakref.ref(model)
            hash(model)
            # torch: the settings read from the model now; Keras/JAX: they come from the walk, and keras-hub's sizes
            settings = (
                self.settings(model)
                if _is_torch_module(model)
                else (getattr(model, "num_layers", None), getattr(model, "hidden_dim", None))
            )
            inp, out = _io_embeddings(model)
            key = (
                self.name,
                _frozen(self.config),
                _frozen(settings),
                _walk_key(params),
                frozenset(_hf_tie_sources(model)),
                id(inp) if inp is not None else None,
                id(out) if out is not None else None,
            )  # compared with ==, never hashed
        except (TypeError, ValueError):  # objects in the settings, or settings that raise: resolve (and raise) as usual
            return None
        return key

    def _rules_for(self, model: Any, params: Sequence[Any] | None) -> dict[str, Rule]:
        planned, every, index = self._resolve(model, params)
        by_value: dict[tuple[Spec | None, str], list[str]] = {}
        for f, spec, label in planned:
            by_value.setdefault((spec, label), []).append(f.name)  # a tied tensor: its first name
        return _compress(
            {Rule(spec, label=label): members for (spec, label), members in by_value.items()}, every, index
        )


#: model -> (key, rules) of its last resolution (Recipe.rules_for); weak: an entry goes with its model
_RESOLVED: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], _KeptRules]] = weakref.WeakKeyDictionary()


#: a Param's fields as one tuple: the walk in a cache key is compared field by field in C, not by
#: 148 calls of the dataclass's ``__eq__`` (the same comparison: ``__eq__`` compares these tuples)
_PARAM_FIELDS = operator.attrgetter(*(f.name for f in fields(Param)))


def _walk_key(params: Sequence[Any]) -> tuple[Any, ...]:
    """The walk as it enters a cache key: each :class:`~initscale.reinit.Param` as the tuple of
    its fields (anything else as it is)."""
    if set(map(type, params)) == {Param}:
        return tuple(map(_PARAM_FIELDS, params))
    return tuple(params)


def _frozen(value: Any) -> Any:
    """``value`` made hashable (mappings, sets and sequences recursively, of numbers, strings,
    booleans and None); TypeError for anything else: an object (a module a recipe's settings hold)
    is neither kept in a key nor compared by identity, and keeping the model itself would keep it
    alive."""
    if isinstance(value, Mapping):
        return tuple(sorted(((k, _frozen(v)) for k, v in value.items()), key=lambda kv: repr(kv[0])))
    if isinstance(value, (set, frozenset)):
        return frozenset(_frozen(v) for v in value)
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"not kept in a recipe's cache key: {type(value).__name__}")


def by_name_alias(parts: Sequence[_Part], name: str) -> _Part:
    return next(p for p in parts if p.name == name)


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


_INDEX = re.compile(r"(?<=\.)\d+(?=\.)")
_PATH_INDEX = re.compile(r"(?:(?<=[/_])|^)\d+(?=/)")  # Keras/JAX paths: "h_3/attn/...", "layers/3/...", "3/..."


def _compress(
    groups: Mapping[Rule, list[str]], every: Sequence[str], index: re.Pattern[str] = _INDEX
) -> dict[str, Rule]:
    """Exact names, shortened where safe: names that differ only in their numeric components
    (layer indices) become one glob with ``*`` there, kept only if it matches exactly those
    names among ``every`` name of the model (so rules never overlap and their order is moot); the
    globs that match the most names come first."""
    out: dict[str, Rule] = {}
    sizes: dict[str, int] = {}  # a glob -> how many names it matches
    by_end: dict[str, list[str]] = {}  # the names by their last two components: the candidates of a glob
    for name in every:
        by_end.setdefault(".".join(name.rsplit(".", 2)[-2:]), []).append(name)
    for rule, members in groups.items():
        by_template: dict[str, list[str]] = {}
        for name in members:
            by_template.setdefault(index.sub("*", name), []).append(name)
        for template, names_ in by_template.items():
            if template not in out and len(names_) > 1:
                regex = _glob(template)
                head, tail = template.split("*")[0], template.split("*")[-1]
                end = tail.split(".")  # tail starts at a component boundary: ".attn.c_proj.weight"
                candidates = by_end.get(".".join(end[-2:]), ()) if len(end) >= 3 else every
                hits = {n for n in candidates if n.startswith(head) and n.endswith(tail) and regex.match(n)}
                if hits == set(names_):
                    out[template] = rule
                    sizes[template] = len(names_)
                    continue
            for name in names_:
                out[name] = rule
    # the rules never overlap, so their order is moot for what they match, but plan() tries them in order
    # for each parameter until one matches: the rules that match the most parameters first
    return dict(sorted(out.items(), key=lambda item: -sizes.get(item[0], 1)))


def _is_torch_module(model: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module):
        return False
    keras = sys.modules.get("keras")  # a Keras layer on the torch backend is a torch Module too: read it as Keras
    return keras is None or not isinstance(model, keras.layers.Layer)


# --- helpers shared by the HF recipes -------------------------------------------------------------


def _cfg(model: Any, key: str, given: Mapping[str, Any], *fallbacks: str) -> Any:
    if key in given:
        return given[key]
    config = getattr(model, "config", None)
    for name in (key, *fallbacks):
        if config is not None and getattr(config, name, None) is not None:
            return getattr(config, name)
    raise ValueError(f"needs `{key}`: the model has no config.{key}; pass it, e.g. recipes.get(..., {key}=...).")


def _in(part: _Part, *classes: str) -> bool:
    """Whether the parameter's owner, or its owner's parent, is one of ``classes`` (by MRO name)."""
    return bool(set(classes) & set(part.classes))


def _is(module: Any, other: Any) -> bool:
    return module is not None and other is not None and module is other


def _io_embeddings(model: Any) -> tuple[Any, Any]:
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    try:
        inp = get_in() if callable(get_in) else None
    except (NotImplementedError, AttributeError):
        inp = None
    try:
        out = get_out() if callable(get_out) else None
    except (NotImplementedError, AttributeError):
        out = None
    return inp, out


_HF_BASE_LAYERS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d")


def _hf_base_role(model: Any, part: _Part, table: Mapping[tuple[str, str], str], s: Mapping[str, Any]) -> str | None:
    """A role for what HF's ``PreTrainedModel._init_weights`` initializes (Linear/Conv weights
    and biases, Embeddings, norms), named by the family's ``table``: (parent class, attribute)
    -> role, else a generic role."""
    inp, out = s["_io"] if "_io" in s else _io_embeddings(model)
    if part.base in ("norm_scale", "norm_offset"):
        return part.base
    for cls in part.parent_classes:
        role = table.get((cls, part.attr))
        if role is not None:
            return role if part.leaf == "weight" else f"{role}.bias"
    if part.leaf == "bias" and _in(part, *_HF_BASE_LAYERS, "Conv1D"):
        return "bias"
    if _is(part.module, out):
        return "lm_head"
    if _is(part.module, inp):
        return "token_embedding"
    if part.base == "embedding":
        return "embedding"
    if part.base == "weight" and _in(part, *_HF_BASE_LAYERS):
        return "linear" if _in(part, "Linear") else "conv"
    return None


def _hf_std(model: Any, given: Mapping[str, Any]) -> float:
    """HF's ``_init_weights`` std: ``config.initializer_range or 0.02`` (modeling_utils.py)."""
    if "initializer_range" in given:
        return float(given["initializer_range"])
    value = getattr(getattr(model, "config", None), "initializer_range", None)
    return float(value or 0.02)


def _norm_reset(part: _Part) -> Spec | None:
    """A norm's reset: its scale 1, its offset 0 (None: not a norm parameter)."""
    if part.base == "norm_scale":
        return Ones()
    if part.base == "norm_offset":
        return Zeros()
    return None


def _fixed(role: str, part: _Part) -> Spec | None:
    """Biases 0, norm scales 1 and offsets 0: HF's ``_init_weights`` and every depth-aware recipe
    below (each codebase's LayerNorm/RMSNorm starts at ones and zeros, its biases at zeros);
    None for anything else."""
    if role == "bias" or role.endswith(".bias") or part.base == "bias":
        return Zeros()
    return _norm_reset(part)


def _fixed_first(spec: Specs) -> Specs:
    """``spec`` behind :func:`_fixed`: biases and norms get their fixed values, the rest ``spec``'s."""

    @functools.wraps(spec)
    def fixed_first(role: str, part: _Part, s: dict[str, Any]) -> Spec | None:
        fixed = _fixed(role, part)
        return fixed if fixed is not None else spec(role, part, s)

    return fixed_first


def _generic_spec(role: str, part: _Part, std: float) -> Spec:
    """HF's ``_init_weights``: the fixed values (:func:`_fixed`), else N(0, std²)."""
    fixed = _fixed(role, part)
    return fixed if fixed is not None else Normal(std)


# --- hf.gpt2 -------------------------------------------------------------------------------------

_GPT2 = {
    ("GPT2Attention", "c_attn"): "attn_qkv",
    ("GPT2Attention", "q_attn"): "attn_q",
    ("GPT2Attention", "c_proj"): "residual_out",
    ("GPT2MLP", "c_fc"): "mlp_in",
    ("GPT2MLP", "c_proj"): "residual_out",
    ("GPT2Model", "wpe"): "position_embedding",
    ("GPT2ForSequenceClassification", "score"): "classifier_head",
    ("GPT2ForTokenClassification", "classifier"): "classifier_head",
}


def _gpt2_settings(model: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    return {"std": _hf_std(model, given), "n_layer": int(_cfg(model, "n_layer", given, "num_hidden_layers"))}


def _gpt2_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    role = _hf_base_role(model, part, _GPT2, s)
    if role is None and part.leaf == "weight" and _in(part, "Conv1D"):
        role = "conv1d"
    return role


def _gpt2_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    if role == "residual_out":
        return Normal(s["std"] / math.sqrt(2 * s["n_layer"]))
    return _generic_spec(role, part, s["std"])


# --- hf.bert -------------------------------------------------------------------------------------

_BERT = {
    ("BertSelfAttention", "query"): "attn_q",
    ("BertSelfAttention", "key"): "attn_k",
    ("BertSelfAttention", "value"): "attn_v",
    ("BertSelfOutput", "dense"): "attn_out",
    ("BertIntermediate", "dense"): "mlp_in",
    ("BertOutput", "dense"): "mlp_out",
    ("BertPooler", "dense"): "pooler",
    ("BertEmbeddings", "position_embeddings"): "position_embedding",
    ("BertEmbeddings", "token_type_embeddings"): "token_type_embedding",
    ("BertPredictionHeadTransform", "dense"): "lm_head_transform",
    ("BertOnlyNSPHead", "seq_relationship"): "classifier_head",
    ("BertPreTrainingHeads", "seq_relationship"): "classifier_head",
    ("BertForSequenceClassification", "classifier"): "classifier_head",
    ("BertForTokenClassification", "classifier"): "classifier_head",
    ("BertForMultipleChoice", "classifier"): "classifier_head",
    ("BertForQuestionAnswering", "qa_outputs"): "classifier_head",
}


def _bert_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    if part.leaf == "bias" and _in(part, "BertLMPredictionHead"):
        return "lm_head.bias"  # BertLMPredictionHead.bias (tied to decoder.bias): zeros
    return _hf_base_role(model, part, _BERT, s)


# --- hf.llama ------------------------------------------------------------------------------------

_LLAMA = {
    ("LlamaAttention", "q_proj"): "attn_q",
    ("LlamaAttention", "k_proj"): "attn_k",
    ("LlamaAttention", "v_proj"): "attn_v",
    ("LlamaAttention", "o_proj"): "attn_out",
    ("LlamaMLP", "gate_proj"): "mlp_gate",
    ("LlamaMLP", "up_proj"): "mlp_in",
    ("LlamaMLP", "down_proj"): "mlp_out",
    ("LlamaForSequenceClassification", "score"): "classifier_head",
    ("LlamaForTokenClassification", "score"): "classifier_head",
    ("LlamaForQuestionAnswering", "qa_outputs"): "classifier_head",
}


def _llama_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    return _hf_base_role(model, part, _LLAMA, s)


def _std_settings(model: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    return {"std": _hf_std(model, given)}


def _base_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    return _generic_spec(role, part, s["std"])


# --- hf.t5 ---------------------------------------------------------------------------------------

_T5 = {
    ("T5Attention", "q"): "attn_q",
    ("T5Attention", "k"): "attn_k",
    ("T5Attention", "v"): "attn_v",
    ("T5Attention", "o"): "attn_out",
    ("T5Attention", "relative_attention_bias"): "relative_attention_bias",
    ("T5DenseActDense", "wi"): "mlp_in",
    ("T5DenseActDense", "wo"): "mlp_out",
    ("T5DenseGatedActDense", "wi_0"): "mlp_gate",
    ("T5DenseGatedActDense", "wi_1"): "mlp_in",
    ("T5DenseGatedActDense", "wo"): "mlp_out",
    ("T5ClassificationHead", "dense"): "classifier_dense",
    ("T5ClassificationHead", "out_proj"): "classifier_head",
    ("T5ForTokenClassification", "classifier"): "token_classifier",
    ("T5ForQuestionAnswering", "qa_outputs"): "qa_outputs",
}


def _t5_settings(model: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "factor": float(_cfg(model, "initializer_factor", given)),
        "d_model": int(_cfg(model, "d_model", given)),
        "d_kv": int(_cfg(model, "d_kv", given)),
        "d_ff": int(_cfg(model, "d_ff", given)),
        "n_heads": int(_cfg(model, "num_heads", given)),
        "tied": bool(_cfg(model, "tie_word_embeddings", given)),
    }


def _t5_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    return _hf_base_role(model, part, _T5, s)


def _t5_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    f, d, kv, ff, h = s["factor"], s["d_model"], s["d_kv"], s["d_ff"], s["n_heads"]
    if role == "bias" or role.endswith(".bias") or part.base == "norm_offset":
        return Zeros()
    if part.base == "norm_scale":  # T5LayerNorm: constant_(weight, factor)
        return Ones() if f == 1.0 else Constant(f)
    stds = {
        "attn_q": f * (d * kv) ** -0.5,
        "attn_k": f * d**-0.5,
        "attn_v": f * d**-0.5,
        "attn_out": f * (h * kv) ** -0.5,
        "relative_attention_bias": f * d**-0.5,
        "mlp_in": f * d**-0.5,
        "mlp_gate": f * d**-0.5,
        "mlp_out": f * ff**-0.5,
        "classifier_dense": f * d**-0.5,
        "classifier_head": f * d**-0.5,
        "qa_outputs": f * d**-0.5,
        "token_embedding": f,
        "lm_head": f,
        "token_classifier": f,
    }
    # anything else PreTrainedModel._init_weights reaches gets std = initializer_factor (T5Config has no
    # initializer_range): the first branch of modeling_utils' std choice that T5 takes
    return Normal(stds.get(role, f))


# --- hf.vit --------------------------------------------------------------------------------------

_VIT = {
    ("ViTPatchEmbeddings", "projection"): "patch_embedding",
    ("ViTAttention", "q_proj"): "attn_q",
    ("ViTAttention", "k_proj"): "attn_k",
    ("ViTAttention", "v_proj"): "attn_v",
    ("ViTAttention", "o_proj"): "attn_out",
    ("ViTSelfAttention", "query"): "attn_q",
    ("ViTSelfAttention", "key"): "attn_k",
    ("ViTSelfAttention", "value"): "attn_v",
    ("ViTSelfOutput", "dense"): "attn_out",
    ("ViTMLP", "fc1"): "mlp_in",
    ("ViTMLP", "fc2"): "mlp_out",
    ("ViTIntermediate", "dense"): "mlp_in",
    ("ViTOutput", "dense"): "mlp_out",
    ("ViTPooler", "dense"): "pooler",
    ("ViTForImageClassification", "classifier"): "classifier_head",
}


def _vit_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    return _vit_like_role(model, part, _VIT, s)


def _vit_like_role(model: Any, part: _Part, table: Mapping[tuple[str, str], str], s: dict[str, Any]) -> str | None:
    if _in(part, "ViTEmbeddings") and part.leaf in ("cls_token", "position_embeddings", "mask_token"):
        return {"cls_token": "cls_token", "position_embeddings": "position_embedding", "mask_token": "mask_token"}[
            part.leaf
        ]
    return _hf_base_role(model, part, table, s)


def _vit_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    if role == "mask_token":
        return Zeros()
    # cls_token, position_embeddings: HF's trunc_normal_(std=r) keeps torch's absolute a=-2, b=2, i.e.
    # ±(2/r)σ (±100σ at r = 0.02): it truncates a mass below 1e-2000, so it is N(0, r²) exactly.
    return _generic_spec(role, part, s["std"])


# --- depth-aware recipes of training codebases, on GPT-2- and Llama-shaped models ------------------
#
# These read the same roles from HF GPT-2 / Llama models and from the codebases' own module trees
# (nanoGPT's GPT/Block/CausalSelfAttention/MLP, torchtitan's Transformer/TransformerBlock/
# Attention/FeedForward), by the class that holds each projection and the attribute it sits under.

_DECODERS = {
    **_GPT2,
    **_LLAMA,
    # nanoGPT model.py
    ("CausalSelfAttention", "c_attn"): "attn_qkv",
    ("CausalSelfAttention", "c_proj"): "residual_out",
    ("MLP", "c_fc"): "mlp_in",
    ("MLP", "c_proj"): "residual_out",
    ("GPT", "lm_head"): "lm_head",
    # torchtitan models/llama3/model/model.py: w1 is the SiLU gate, w3 the up projection, w2 down
    ("Attention", "wq"): "attn_q",
    ("Attention", "wk"): "attn_k",
    ("Attention", "wv"): "attn_v",
    ("Attention", "wo"): "attn_out",
    ("FeedForward", "w1"): "mlp_gate",
    ("FeedForward", "w3"): "mlp_in",
    ("FeedForward", "w2"): "mlp_out",
    ("Transformer", "tok_embeddings"): "token_embedding",
    ("Transformer", "output"): "lm_head",
}
_DECODERS.update(
    {
        # OLMo olmo/model.py: OLMoSequentialBlock fuses q/k/v in att_proj; OLMoLlamaBlock keeps q/k/v_proj;
        # the untied output head is transformer.ff_out (a ModuleDict entry), a block's ff_out its MLP out
        ("OLMoBlock", "att_proj"): "attn_qkv",
        ("OLMoBlock", "attn_out"): "attn_out",
        ("OLMoBlock", "ff_proj"): "mlp_in",
        ("OLMoBlock", "ff_out"): "mlp_out",
        ("OLMoBlock", "q_proj"): "attn_q",
        ("OLMoBlock", "k_proj"): "attn_k",
        ("OLMoBlock", "v_proj"): "attn_v",
        ("ModuleDict", "ff_out"): "lm_head",
    }
)
_DECODER_BLOCKS = ("GPT2Block", "LlamaDecoderLayer", "Block", "TransformerBlock", "OLMoBlock")
_OUT_ROLES = ("residual_out", "attn_out", "mlp_out")  # the projections that write into the residual stream
_EMBED_ROLES = ("token_embedding", "position_embedding", "embedding")


def _decoder_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    role = _hf_base_role(model, part, _DECODERS, s)
    if role is None and part.base == "weight" and _in(part, "Conv1D"):
        role = "conv1d"
    if role == "embedding" and part.parent is not None and part.attr in ("wte", "wpe"):
        role = "token_embedding" if part.attr == "wte" else "position_embedding"  # nanoGPT's ModuleDict
    return role


def _model_number(model: Any, given: Mapping[str, Any], key: str, *names_: str) -> int:
    if key in given:
        return _validate.integer(key, given[key], minimum=1)
    for holder in (getattr(model, "config", None), getattr(model, "model_args", None)):
        for name in names_:
            value = getattr(holder, name, None) if holder is not None else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    raise ValueError(
        f"The recipe needs `{key}` and the model has none of {', '.join(names_)} in its config or "
        f"model_args; pass it: recipes.get(..., {key}=...)."
    )


def _decoder_settings(model: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "L": _model_number(model, given, "n_layers", "n_layer", "num_hidden_layers", "n_layers"),
        "d": _model_number(model, given, "dim", "n_embd", "hidden_size", "dim", "d_model"),
    }
    config = getattr(model, "config", None)
    config_std = next(
        (getattr(config, k) for k in ("init_std", "init_method_std") if isinstance(getattr(config, k, None), float)),
        0.02,
    )
    for key, default in (("std", config_std), ("depth_init", True)):
        out[key] = given.get(key, default)
    out["std"] = _validate.real("std", out["std"], positive=True)
    out["depth_init"] = _validate.boolean("depth_init", out["depth_init"])
    return out


@_fixed_first
def _nanogpt_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    return Normal(0.02 / math.sqrt(2 * s["L"]) if role == "residual_out" else 0.02)


@_fixed_first
def _megatron_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    return Normal(s["std"] / math.sqrt(2 * s["L"]) if role in _OUT_ROLES else s["std"])


@_fixed_first
def _neox_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    if role in _OUT_ROLES:
        return Normal(2 / s["L"] / math.sqrt(s["d"]))  # wang_init
    return Normal(math.sqrt(2 / (5 * s["d"])))  # small_init


@_fixed_first
def _torchtitan_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    if role == "token_embedding":
        return Normal(1.0)
    if role == "lm_head":
        return TruncatedNormal(s["d"] ** -0.5, lower=-3.0, upper=3.0)
    if role in ("attn_out", "mlp_out", "mlp_in"):  # wo, w2, w3
        if part.layer is None:
            raise ValueError(
                f"torchtitan.llama: {part.name!r} ({role}) is not inside a TransformerBlock/"
                "LlamaDecoderLayer of a numbered layer list, so its layer_id is unknown."
            )
        depth = 2 * (part.layer + 1) if s["depth_init"] else 2 * s["L"]
        return Normal(0.02 / math.sqrt(depth))
    return Normal(0.02)  # wq, wk, wv, w1


def _in_features(part: _Part) -> int:
    """The input width of a projection: ``in_features`` of an nn.Linear, ``nx`` of HF's Conv1D."""
    for name in ("in_features", "nx"):
        value = getattr(part.module, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"{part.name!r} in {part.classes[0]}: its input width is unknown (no in_features or nx).")


def _olmo_spec(mode: str) -> Specs:
    @_fixed_first
    def spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
        d, L, std = s["d"], s["L"], s["std"]
        if role == "lm_head":
            sigma = d**-0.5
        elif role in _OUT_ROLES:
            if mode == "mitchell":
                if part.layer is None:
                    raise ValueError(
                        f"olmo.mitchell: {part.name!r} ({role}) is not inside a numbered block, so "
                        "its layer_id is unknown."
                    )
                sigma = 1 / math.sqrt(2 * _in_features(part) * (part.layer + 1))
            else:
                sigma = std / math.sqrt(2.0 * L)
        elif mode == "mitchell":
            sigma = 1 / math.sqrt(d)
        else:
            sigma = std
        return TruncatedNormal(sigma, lower=-3.0, upper=3.0)

    return spec


_DECODER_REQUIRED = ("token_embedding", "norm_scale")
#: the recipes that also read Keras models and JAX pytrees (initscale/_recipe_paths.py)
_PATH_RECIPES = ("deepnet", "hf.bert", "hf.gpt2", "hf.llama", "megatron", "nanogpt", "neox", "torchtitan.llama")
_DECODER_OPTIONS = ("n_layers", "dim")


def _torch_bias_default(part: _Part) -> Spec:
    """torch's Linear/ConvNd ``reset_parameters`` bias: U(±1/√fan_in), fan_in of the layer's weight
    (in_features, or in_channels/groups × kernel): its size past the first axis."""
    weight = getattr(part.module, "weight", None)
    if weight is None or weight.dim() < 2:
        raise ValueError(f"{part.name!r}: its layer has no weight to take torch's default bias bound from.")
    bound = 1 / math.sqrt(math.prod(weight.shape[1:]))
    return Uniform(-bound, bound)


# --- timm.vit --------------------------------------------------------------------------------------

_TIMM = {
    ("PatchEmbed", "proj"): "patch_embedding",
    ("Attention", "qkv"): "attn_qkv",
    ("Attention", "proj"): "attn_out",
    ("Mlp", "fc1"): "mlp_in",
    ("Mlp", "fc2"): "mlp_out",
    ("VisionTransformer", "head"): "classifier_head",
    **_VIT,
}
_TIMM_MODES = ("", "jax", "jax_nlhb", "moco")


def _timm_settings(model: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    mode = _validate.choice("mode", given.get("mode", ""), _TIMM_MODES)
    fix = _validate.boolean("fix_init", given.get("fix_init", getattr(model, "fix_init", False)))
    classes = getattr(model, "num_classes", None)
    if "nlhb" in mode and not isinstance(classes, int):
        raise ValueError("timm.vit mode='jax_nlhb' needs the model's num_classes (head bias -log(num_classes)).")
    return {"mode": mode, "fix_init": fix, "head_bias": -math.log(cast(int, classes)) if "nlhb" in mode else 0.0}


def _timm_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    if part.leaf in ("cls_token", "reg_token", "pos_embed") and _in(part, "VisionTransformer"):
        return {"cls_token": "cls_token", "reg_token": "reg_token", "pos_embed": "position_embedding"}[part.leaf]
    return _vit_like_role(model, part, _TIMM, s)


def _timm_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    from .presets import get as preset

    mode, base = s["mode"], role.removesuffix(".bias")
    linear = _in(part, "Linear")
    norm = _norm_reset(part)
    if norm is not None:
        return norm
    if role == "position_embedding":
        return Normal(0.02)  # timm's trunc_normal_(std=.02) keeps absolute bounds ±2 = ±100σ: N(0, 0.02²)
    if role in ("cls_token", "reg_token"):
        return Normal(1e-6)
    if base == "patch_embedding":  # a Conv2d: jax lecun_normal_, else torch's own reset (kaiming_uniform a=√5)
        if mode.startswith("jax"):
            return Zeros() if role.endswith(".bias") else preset("lecun_normal")
        return _torch_bias_default(part) if role.endswith(".bias") else preset("torch.conv_default")
    if not linear:
        raise ValueError(
            f"timm.vit: {part.name!r} ({part.classes[0]}) is not a Linear, a Conv2d patch embedding, "
            "a norm or a token: timm's init_weights does not say what it gets."
        )
    scale = 1.0
    if s["fix_init"] and base in ("attn_out", "mlp_out"):  # fix_init_weight: weight / √(2(layer_id + 1))
        if part.layer is None:
            raise ValueError(f"timm.vit fix_init: {part.name!r} is not inside a numbered block.")
        scale = 1.0 / math.sqrt(2.0 * (part.layer + 1))
    if role.endswith(".bias"):
        if mode.startswith("jax") and base == "classifier_head":
            return Zeros() if s["head_bias"] == 0.0 else Constant(s["head_bias"])
        if mode.startswith("jax") and base in ("mlp_in", "mlp_out"):
            return Normal(1e-6)
        return Zeros()
    if mode == "":
        return Normal(0.02 * scale)
    if mode.startswith("jax") and base == "classifier_head":
        return Zeros()
    if mode == "moco" and base == "attn_qkv":  # Q, K, V each Glorot: √(6/(out/3 + in))
        out, inp = part.shape
        limit = math.sqrt(6.0 / float(out // 3 + inp)) * scale
        return Uniform(-limit, limit)
    return VarianceScaling(scale**2, "fan_avg", "uniform")  # xavier_uniform_ (then / √(2(i+1)) with fix_init)


# --- fixup ------------------------------------------------------------------------------------------

_FIXUP_BLOCKS = ("FixupBasicBlock", "FixupBottleneck", "BasicBlock", "Bottleneck")
_FIXUP_SCALAR = re.compile(r"bias\d+[ab]?\Z")


def _fixup_settings(model: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    if "num_layers" in given:
        return {"L": _validate.integer("num_layers", given["num_layers"], minimum=1)}
    blocks = sum(1 for m in model.modules() if set(_FIXUP_BLOCKS) & set(_classes(m)))
    if not blocks:
        raise ValueError(
            "fixup: the model has no residual block (FixupBasicBlock, FixupBottleneck, BasicBlock, "
            "Bottleneck); pass num_layers or use another recipe."
        )
    return {"L": blocks}  # FixupResNet.num_layers = sum(layers): the number of residual blocks


def _fixup_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    if part.base in ("norm_scale", "norm_offset"):
        return part.base
    if part.leaf == "scale" and _in(part, *_FIXUP_BLOCKS):
        return "fixup_scale"
    if _FIXUP_SCALAR.match(part.leaf) and len(part.shape) <= 1:
        return "fixup_bias"
    if part.base == "bias":
        return "bias"
    owner_path = part.name.split(".")[:-1]
    if part.base == "weight" and _in(part, "Conv2d"):
        if "downsample" in owner_path:
            return "downsample"
        block = part.parent if part.parent is not None and set(_FIXUP_BLOCKS) & set(_classes(part.parent)) else None
        if block is not None:
            bottleneck = "Bottleneck" in _classes(block) or "FixupBottleneck" in _classes(block)
            last = "conv3" if bottleneck else "conv2"
            if part.attr == last:
                return "branch_last"
            if part.attr in ("conv1", "conv2"):
                return "branch_bottleneck" if bottleneck else "branch_basic"
        if len(owner_path) == 1:
            return "stem"
    if part.base == "weight" and _in(part, "Linear"):
        return "classifier_head"
    return None


def _fixup_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec:
    from .presets import get as preset

    if role in ("fixup_bias", "bias", "norm_offset", "branch_last") or role == "classifier_head":
        return Zeros()
    if role in ("fixup_scale", "norm_scale"):
        return Ones()
    if role == "stem":
        return preset("torch.conv_default")  # FixupResNet leaves its stem conv at torch's own reset
    fan_out = part.shape[0] * math.prod(part.shape[2:])  # np.sqrt(2 / (w.shape[0] * np.prod(w.shape[2:])))
    he = math.sqrt(2 / fan_out)
    if role == "branch_basic":
        return Normal(he * s["L"] ** -0.5)
    if role == "branch_bottleneck":
        return Normal(he * s["L"] ** -0.25)
    return Normal(he)  # downsample


# --- deepnet ----------------------------------------------------------------------------------------

_DEEPNET_TABLE = {**_DECODERS, **_T5}
_DEEPNET_BETA_ROLES = ("attn_v", "attn_out", "mlp_in", "mlp_gate", "mlp_out", "residual_out")


def _deepnet_settings(model: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    config = getattr(model, "config", None)
    architecture = given.get(
        "architecture", "encoder_decoder" if getattr(config, "is_encoder_decoder", False) else "decoder"
    )
    architecture = _validate.choice("architecture", architecture, ("decoder", "encoder_decoder"))
    out: dict[str, Any] = {"architecture": architecture, "encoder": set()}
    if architecture == "decoder":
        M = _model_number(model, given, "decoder_layers", "n_layer", "num_hidden_layers", "n_layers")
        out["beta"] = {"decoder": (8 * M) ** -0.25}
        out["alpha"] = {"decoder": (2 * M) ** 0.25}
        return out
    N = _model_number(model, given, "encoder_layers", "num_layers", "encoder_layers")
    M = _model_number(model, given, "decoder_layers", "num_decoder_layers", "decoder_layers")
    out["beta"] = {"encoder": 0.87 * (N**4 * M) ** (-1 / 16), "decoder": (12 * M) ** -0.25}
    out["alpha"] = {"encoder": 0.81 * (N**4 * M) ** (1 / 16), "decoder": (3 * M) ** 0.25}
    get_encoder = getattr(model, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else None
    if encoder is None:
        raise ValueError("deepnet architecture='encoder_decoder' needs the model's encoder (get_encoder()).")
    out["encoder"] = {id(m) for m in encoder.modules()}
    return out


def _deepnet_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    role = _hf_base_role(model, part, _DEEPNET_TABLE, s)
    if role == "attn_qkv":
        raise ValueError(
            f"deepnet: {part.name!r} packs Q, K and V in one weight, but DeepNet gives V gain β and Q, K "
            "gain 1: one spec cannot hold both. Use a model with separate q/k/v projections."
        )
    return role


@_fixed_first
def _deepnet_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec | None:
    if role in ("attn_q", "attn_k"):
        return VarianceScaling(1.0, "fan_avg", "normal")  # xavier_normal_(w, gain=1)
    if role in _DEEPNET_BETA_ROLES:
        stack = "encoder" if id(part.module) in s["encoder"] else "decoder"
        return VarianceScaling(s["beta"][stack] ** 2, "fan_avg", "normal")  # xavier_normal_(w, gain=β)
    return None  # embeddings, heads: DeepNet does not set them; kept as they are (the report says so)


# --- t_fixup ----------------------------------------------------------------------------------------

_TFIXUP = {
    ("MultiheadAttention", "q_proj"): "attn_q",
    ("MultiheadAttention", "k_proj"): "attn_k",
    ("MultiheadAttention", "v_proj"): "attn_v",
    ("MultiheadAttention", "out_proj"): "attn_out",
    ("TransformerEncoderLayer", "fc1"): "mlp_in",
    ("TransformerEncoderLayer", "fc2"): "mlp_out",
    ("TransformerDecoderLayer", "fc1"): "mlp_in",
    ("TransformerDecoderLayer", "fc2"): "mlp_out",
    ("TransformerEncoder", "embed_tokens"): "token_embedding",
    ("TransformerDecoder", "embed_tokens"): "token_embedding",
    ("TransformerEncoder", "embed_positions"): "position_embedding",
    ("TransformerDecoder", "embed_positions"): "position_embedding",
}
_TFIXUP_STACKS = ("TransformerEncoder", "TransformerDecoder")


def _tfixup_settings(model: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    counts = {stack: 0 for stack in _TFIXUP_STACKS}
    for module in model.modules():
        for layer, stack in (
            ("TransformerEncoderLayer", "TransformerEncoder"),
            ("TransformerDecoderLayer", "TransformerDecoder"),
        ):
            if layer in _classes(module):
                counts[stack] += 1
    N = _validate.integer("encoder_layers", given.get("encoder_layers", counts["TransformerEncoder"]), minimum=0)
    M = _validate.integer("decoder_layers", given.get("decoder_layers", counts["TransformerDecoder"]), minimum=0)
    if N + M == 0:
        raise ValueError(
            "t_fixup: the model has no TransformerEncoderLayer or TransformerDecoderLayer (fairseq's "
            "names); pass encoder_layers/decoder_layers or use another recipe."
        )
    return {"N": N, "M": M, "model": model}


def _stack_of(model: Any, name: str) -> str | None:
    """The fairseq stack (TransformerEncoder or TransformerDecoder) that holds parameter ``name``."""
    pieces = name.split(".")[:-1]
    for i in range(len(pieces), -1, -1):
        try:
            module = model.get_submodule(".".join(pieces[:i]))
        except AttributeError:
            continue
        for stack in _TFIXUP_STACKS:
            if stack in _classes(module):
                return stack
    return None


def _tfixup_role(model: Any, part: _Part, s: dict[str, Any]) -> str | None:
    if part.leaf == "embed_out":
        return "lm_head"
    role = _hf_base_role(model, part, _TFIXUP, s)
    return role


def _tfixup_spec(role: str, part: _Part, s: dict[str, Any]) -> Spec | None:
    norm = _norm_reset(part)
    if norm is not None:
        return norm
    stack = _stack_of(s["model"], part.name)
    decoder = stack == "TransformerDecoder"
    factor = (9 * s["M"]) ** -0.25 if decoder else 0.67 * s["N"] ** -0.25
    base = role.removesuffix(".bias")
    if role.endswith(".bias"):  # fairseq's q/k/v keep nn.Linear's own bias init; Linear() and out_proj zero theirs
        return _torch_bias_default(part) if base in ("attn_q", "attn_k", "attn_v") else Zeros()
    if role in ("token_embedding", "position_embedding", "lm_head", "embedding"):
        d = part.shape[-1]
        if role == "token_embedding":  # Embedding(): N(0, d^-1), then × (9·layers)^-¼ of its stack
            return Normal(d**-0.5 * (9 * (s["M"] if decoder else s["N"])) ** -0.25)
        return Normal(d**-0.5)
    if role in ("attn_q", "attn_k"):
        return VarianceScaling(0.5, "fan_avg", "uniform")  # xavier_uniform_(gain=1/√2)
    if role in ("attn_v", "attn_out", "mlp_in", "mlp_out"):  # xavier_uniform_ (v: gain 1/√2 then × √2) × factor
        return VarianceScaling(factor**2, "fan_avg", "uniform")
    return None


# --- the registry --------------------------------------------------------------------------------

_HF = "transformers 5.24.0"


@dataclass(frozen=True)
class _Entry:
    source: str
    doc: str
    settings: Callable[[Any, Mapping[str, Any]], dict[str, Any]]
    role: Reader
    spec: Specs
    required: tuple[str, ...]
    blocks: tuple[str, ...]
    options: tuple[str, ...]


_REGISTRY: dict[str, _Entry] = {
    "hf.gpt2": _Entry(
        f"{_HF}, transformers/models/gpt2/modeling_gpt2.py GPT2PreTrainedModel._init_weights, and "
        "modeling_utils.py PreTrainedModel._init_weights",
        "Every Conv1D/Linear/Conv weight and every Embedding N(0, r²), r = config.initializer_range (0.02); "
        "biases 0; LayerNorm weight 1, bias 0; then the residual output projections, c_proj of every "
        "GPT2Attention and GPT2MLP, N(0, (r/√(2·n_layer))²) (the GPT-2 paper's 1/√N over the N = 2·n_layer "
        "residual layers). lm_head is tied to wte (one tensor, wte's N(0, r²)).",
        _gpt2_settings,
        _gpt2_role,
        _gpt2_spec,
        ("token_embedding", "position_embedding", "attn_qkv", "residual_out", "mlp_in", "norm_scale"),
        (),
        ("initializer_range", "n_layer"),
    ),
    "hf.bert": _Entry(
        f"{_HF}, transformers/models/bert/modeling_bert.py BertPreTrainedModel._init_weights and "
        "modeling_utils.py PreTrainedModel._init_weights",
        "Every Linear weight and Embedding N(0, r²), r = config.initializer_range (0.02), the padding_idx row "
        "of an Embedding 0; biases 0 (BertLMPredictionHead.bias too); LayerNorm weight 1, bias 0. The MLM "
        "decoder is tied to word_embeddings.",
        _std_settings,
        _bert_role,
        _base_spec,
        (
            "token_embedding",
            "position_embedding",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_out",
            "mlp_in",
            "mlp_out",
            "norm_scale",
        ),
        (),
        ("initializer_range",),
    ),
    "hf.llama": _Entry(
        f"{_HF}, transformers/modeling_utils.py PreTrainedModel._init_weights (Llama has no _init_weights "
        "of its own in transformers/models/llama/modeling_llama.py)",
        "Every Linear weight (q/k/v/o, gate/up/down, lm_head) and the token Embedding N(0, r²), "
        "r = config.initializer_range (0.02), the padding_idx row 0; LlamaRMSNorm weight 1. No depth scaling.",
        _std_settings,
        _llama_role,
        _base_spec,
        ("token_embedding", "attn_q", "attn_k", "attn_v", "attn_out", "mlp_gate", "mlp_in", "mlp_out", "norm_scale"),
        (),
        ("initializer_range",),
    ),
    "hf.t5": _Entry(
        f"{_HF}, transformers/models/t5/modeling_t5.py T5PreTrainedModel._init_weights",
        "f = config.initializer_factor (1.0), d = d_model, kv = d_kv, h = num_heads, ff = d_ff: attention q "
        "N(0, (f·(d·kv)^-½)²), k and v N(0, (f·d^-½)²), o N(0, (f·(h·kv)^-½)²), relative_attention_bias "
        "N(0, (f·d^-½)²); DenseReluDense wi (wi_0, wi_1) N(0, (f·d^-½)²), wo N(0, (f·ff^-½)²); shared "
        "embedding N(0, f²), lm_head N(0, f²) when not tied (tied: shared's); T5LayerNorm weight f.",
        _t5_settings,
        _t5_role,
        _t5_spec,
        (
            "token_embedding",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_out",
            "relative_attention_bias",
            "mlp_out",
            "norm_scale",
        ),
        (),
        ("initializer_factor", "d_model", "d_kv", "d_ff", "num_heads", "tie_word_embeddings"),
    ),
    "hf.vit": _Entry(
        f"{_HF}, transformers/models/vit/modeling_vit.py ViTPreTrainedModel._init_weights and "
        "modeling_utils.py PreTrainedModel._init_weights",
        "The patch embedding Conv2d, every Linear weight N(0, r²), r = config.initializer_range (0.02); biases "
        "0; LayerNorm weight 1, bias 0; cls_token and position_embeddings trunc_normal_(std=r) with torch's "
        "absolute bounds ±2, which at r = 0.02 are ±100σ and truncate nothing: N(0, r²); mask_token 0.",
        _std_settings,
        _vit_role,
        _vit_spec,
        (
            "patch_embedding",
            "cls_token",
            "position_embedding",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_out",
            "mlp_in",
            "mlp_out",
            "norm_scale",
        ),
        (),
        ("initializer_range",),
    ),
    "nanogpt": _Entry(
        "karpathy/nanoGPT model.py, GPT.__init__ and GPT._init_weights "
        "(commit 0011cd4442915c844e9b8f5c5117f25f5a7096c5)",
        "Every nn.Linear weight and nn.Embedding N(0, 0.02²), biases 0 (self.apply(self._init_weights)); then every "
        "parameter whose name ends in 'c_proj.weight' (attention and MLP output projections) "
        "N(0, (0.02/√(2·n_layer))²); "
        "LayerNorm/RMSNorm keep their constructed ones and zeros; lm_head is tied to wte (N(0, 0.02²)). On HF GPT-2 "
        "the same roles (c_proj of GPT2Attention/GPT2MLP).",
        _decoder_settings,
        _decoder_role,
        _nanogpt_spec,
        (*_DECODER_REQUIRED, "residual_out"),
        _DECODER_BLOCKS,
        _DECODER_OPTIONS,
    ),
    "megatron": _Entry(
        "NVIDIA/Megatron-LM megatron/legacy/model/utils.py init_method_normal and scaled_init_method_normal "
        "(commit 9538bb8e280fd5b7609779049a604278edae0967)",
        "σ = init_method_std (0.02): every weight (embeddings, QKV, MLP in, LM head) N(0, σ²) (init_method_normal); "
        "the output layers, the attention output projection and the MLP's second linear (the projections into the "
        "residual stream), N(0, (σ/√(2·num_layers))²) (scaled_init_method_normal); biases 0, norm weights 1.",
        _decoder_settings,
        _decoder_role,
        _megatron_spec,
        _DECODER_REQUIRED,
        _DECODER_BLOCKS,
        (*_DECODER_OPTIONS, "std"),
    ),
    "neox": _Entry(
        "EleutherAI/gpt-neox megatron/model/init_functions.py small_init_init_method and wang_init_method "
        "(commit 330a80215d765530d828c70f2abe1d2a450b69bd), with init_method='small_init' and "
        "output_layer_init_method='wang_init' (the Pythia configs)",
        "d = hidden size, L = num_layers: small_init N(0, 2/(5d)) (Nguyen & Salazar 2019) for embeddings, QKV, MLP "
        "in and the LM head; wang_init N(0, (2/(L·√d))²) (Wang, Mesh-Transformer-JAX) for the attention output "
        "and the MLP's second linear; biases 0, norm weights 1.",
        _decoder_settings,
        _decoder_role,
        _neox_spec,
        _DECODER_REQUIRED,
        _DECODER_BLOCKS,
        _DECODER_OPTIONS,
    ),
    "olmo.mitchell": _Entry(
        "allenai/OLMo olmo/model.py OLMoBlock/OLMoSequentialBlock/OLMoLlamaBlock.reset_parameters and "
        "OLMo.reset_parameters, olmo/initialization.py init_normal (commit 59a53e3f68e546330ca5a99ec626e58f9ab96494)",
        "init_fn='mitchell', every weight trunc_normal_ at ±3σ (init_cutoff_factor or 3.0), d = d_model, layer i "
        "(layer_id, from 0): att_proj (q/k/v), ff_proj σ = 1/√d; attn_out σ = 1/√(2·d·(i+1)); ff_out σ = "
        "1/√(2·ff_out.in_features·(i+1)); wte and wpe σ = 1/√d (emb_init_std unset); the untied output "
        "transformer.ff_out σ = 1/√d; biases 0, norms reset (1, 0). On HF models the same roles: the output "
        "projections' own in_features.",
        _decoder_settings,
        _decoder_role,
        _olmo_spec("mitchell"),
        (*_DECODER_REQUIRED, "attn_out"),
        _DECODER_BLOCKS,
        _DECODER_OPTIONS,
    ),
    "olmo.full_megatron": _Entry(
        "allenai/OLMo olmo/model.py OLMoBlock/OLMoSequentialBlock/OLMoLlamaBlock.reset_parameters and "
        "OLMo.reset_parameters, olmo/initialization.py init_normal (commit 59a53e3f68e546330ca5a99ec626e58f9ab96494)",
        "init_fn='full_megatron', every weight trunc_normal_ at ±3σ, σ₀ = init_std (0.02), L = n_layers: att_proj "
        "(q/k/v), ff_proj σ₀; attn_out and ff_out σ₀/√(2L); wte and wpe σ₀ (emb_init_std unset, scale_emb_init "
        "False); the untied output transformer.ff_out σ = 1/√d_model; biases 0, norms reset (1, 0).",
        _decoder_settings,
        _decoder_role,
        _olmo_spec("full_megatron"),
        (*_DECODER_REQUIRED, "attn_out"),
        _DECODER_BLOCKS,
        (*_DECODER_OPTIONS, "std"),
    ),
    "timm.vit": _Entry(
        "huggingface/pytorch-image-models timm/models/vision_transformer.py VisionTransformer.init_weights, "
        "fix_init_weight, init_weights_vit_timm/_jax/_moco; timm/layers/weight_init.py trunc_normal_, "
        "lecun_normal_ (commit aa4b5850c1543fa488abf260f18390eda46cf85d)",
        "mode='' (timm): every Linear trunc_normal_(std=.02) (absolute ±2 = ±100σ: N(0, 0.02²)), biases 0; "
        "pos_embed N(0, 0.02²) likewise; cls_token and reg_token N(0, 1e-12); the PatchEmbed Conv2d keeps torch's "
        "reset (U(±1/√fan_in), its bias too); norms 1/0. mode='jax'/'jax_nlhb': Linear xavier_uniform_ "
        "(U(±√(6/(fan_in+fan_out)))), MLP biases N(0, 1e-12), other biases 0, the head weight 0 and bias 0 "
        "(jax_nlhb: −log(num_classes)); the patch Conv2d lecun_normal_ (truncated ±2σ, corrected: Var = 1/fan_in), "
        "bias 0. mode='moco': qkv U(±√(6/(out/3 + in))) (each of Q, K, V Glorot), every other Linear "
        "xavier_uniform_, biases 0. fix_init=True: then attn.proj and mlp.fc2 of block i divided by √(2(i+1)). "
        "Settings: mode, fix_init (default: the model's own fix_init).",
        _timm_settings,
        _timm_role,
        _timm_spec,
        ("patch_embedding", "attn_out", "mlp_in", "mlp_out", "norm_scale"),
        ("Block", "ViTLayer"),
        ("fix_init", "mode"),
    ),
    "deepnet": _Entry(
        "Wang et al. 2022, DeepNet: Scaling Transformers to 1,000 Layers (arXiv:2203.00555), Figure 2 (deepnorm_init) "
        "and Table 1 (α, β)",
        "FFN weights, v_proj and out_proj xavier_normal_(gain=β): N(0, β²·2/(fan_in+fan_out)); q_proj and k_proj "
        "xavier_normal_(gain=1). Decoder-only, M layers: β = (8M)^-¼ (α = (2M)^¼). Encoder-decoder, N encoder and M "
        "decoder layers: encoder β = 0.87·(N⁴M)^(-1/16) (α = 0.81·(N⁴M)^(1/16)), decoder β = (12M)^-¼ (α = (3M)^¼). "
        "α multiplies the residual inside DeepNorm's forward, x·α + f(x): initscale cannot apply it, and "
        "Recipe.settings(model)['alpha'] gives it. Biases 0, norms 1/0; embeddings and heads, which DeepNet does not "
        "set, are kept (the report says so). A packed QKV weight is an error (V and Q, K get different gains).",
        _deepnet_settings,
        _deepnet_role,
        _deepnet_spec,
        ("attn_q", "attn_k", "attn_v", "attn_out", "mlp_out"),
        _DECODER_BLOCKS,
        ("architecture", "decoder_layers", "encoder_layers"),
    ),
    "t_fixup": _Entry(
        "layer6ai-labs/T-Fixup fairseq/modules/transformer_layer.py (TransformerEncoderLayer/TransformerDecoderLayer "
        "with --Tfixup), fairseq/models/transformer.py (Embedding, TransformerEncoder/Decoder), "
        "fairseq/modules/multihead_attention.py reset_parameters (commit b17e166d9f60671a92c3f39e24c9b8c93995e5a3); "
        "Huang et al. 2020, Improving Transformer Optimization Through Better Initialization, Sec. 3.3",
        "N encoder and M decoder layers. Encoder layers: fc1, fc2, self_attn.out_proj and v_proj xavier_uniform_ "
        "× 0.67·N^-¼ (v_proj's 1/√2 gain undone by × √2); decoder layers: fc1, fc2, self_attn/encoder_attn out_proj "
        "and v_proj xavier_uniform_ × (9M)^-¼; q_proj, k_proj xavier_uniform_(gain=1/√2); token embeddings "
        "N(0, d⁻¹) × (9N)^-¼ (encoder) or × (9M)^-¼ (decoder); learned positions and an untied output embed_out "
        "N(0, d⁻¹); fc and out_proj biases 0, q/k/v biases nn.Linear's U(±1/√fan_in); norms, where kept, 1/0. "
        "Reads fairseq's module names (MultiheadAttention, TransformerEncoderLayer, ...).",
        _tfixup_settings,
        _tfixup_role,
        _tfixup_spec,
        ("attn_v", "attn_out", "mlp_in", "mlp_out"),
        (),
        ("decoder_layers", "encoder_layers"),
    ),
    "fixup": _Entry(
        "hongyi-zhang/Fixup imagenet/models/fixup_resnet_imagenet.py FixupResNet.__init__ (commit "
        "c5a8295895ed3345691d4da2bf8ca7aae2f94a0c); Zhang, Dauphin & Ma 2019, Fixup Initialization, Sec. 3",
        "L = the number of residual blocks (sum(layers)), He std √(2/fan_out) with fan_out = out·kh·kw: in a basic "
        "block conv1 N(0, (√(2/fan_out)·L^-½)²) and conv2 0; in a bottleneck conv1 and conv2 "
        "N(0, (√(2/fan_out)·L^-¼)²) and conv3 0 (the paper's L^(−1/(2m−2)) for m = 2, 3 layers per branch); "
        "downsample convs N(0, 2/fan_out); the classifier Linear weight and bias 0; the scalar biases (bias1a, ...) "
        "0 and scale 1; the stem conv keeps torch's reset (U(±1/√fan_in)); norms, where a ResNet keeps them, 1/0.",
        _fixup_settings,
        _fixup_role,
        _fixup_spec,
        ("branch_last", "classifier_head"),
        (),
        ("num_layers",),
    ),
    "torchtitan.llama": _Entry(
        "pytorch/torchtitan torchtitan/models/llama3/model/model.py Transformer.init_weights, "
        "TransformerBlock.__init__/init_weights, Attention.init_weights, FeedForward.init_weights "
        "(commit 6404b932421f5ce382e7dac5ad381b2c17b1373c)",
        "Layer i (layer_id, from 0): init_std = 0.02/√(2(i+1)) with depth_init (default), else 0.02/√(2·n_layers). "
        "wq, wk, wv and w1 (the SiLU gate) trunc_normal_(std=0.02); wo, w2 (down) and w3 (up) trunc_normal_"
        "(std=init_std), both with torch's absolute bounds ±2, which at these stds are ±100σ or more and truncate "
        "nothing: N(0, std²); tok_embeddings normal_() = N(0, 1); the output head trunc_normal_ with std d^-½ and "
        "bounds ±3·std: N(0, d⁻¹) truncated at ±3σ (its std 0.9866·d^-½); RMSNorm weights 1. On HF Llama: q/k/v/o, "
        "gate/up/down, embed_tokens and lm_head take the same roles.",
        _decoder_settings,
        _decoder_role,
        _torchtitan_spec,
        (*_DECODER_REQUIRED, "attn_out", "mlp_out", "lm_head"),
        _DECODER_BLOCKS,
        (*_DECODER_OPTIONS, "depth_init"),
    ),
}


def names() -> list[str]:
    """Every recipe name, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **config: Any) -> Recipe:
    """The recipe ``name`` (:func:`names`), with ``config`` overriding what it reads from the
    model's config (``recipes.get("hf.gpt2", initializer_range=0.01)``).

    Example:
        >>> from initscale import recipes
        >>> recipes.get("hf.gpt2")
        recipes.get('hf.gpt2')
    """
    name = _validate.choice("name", name, tuple(names()))
    entry = _REGISTRY[name]
    unknown = sorted(set(config) - set(entry.options))
    if unknown:
        raise ValueError(
            f"Recipe {name!r} takes the settings {', '.join(repr(o) for o in sorted(entry.options))}. "
            f"Received: {', '.join(f'{k}={config[k]!r}' for k in unknown)}."
        )
    return Recipe(
        name,
        entry.source,
        dict(config),
        entry.doc,
        entry.settings,
        entry.role,
        entry.spec,
        entry.required,
        entry.blocks,
    )


def rules_from_config(name: str, config: str | None, **settings: Any) -> dict[str, Rule]:
    """The rules of recipe ``name`` for the model a transformers ``config.json`` describes (or
    the folder holding it): for ``initscale check FILE --recipe NAME --config PATH``, where the
    checkpoint has names and arrays but no module tree. The model class is the config's
    ``architectures[0]``, built on torch's meta device (nothing allocated, nothing drawn, no
    download); the rules then name that model's parameters, as its ``save_pretrained`` writes them."""
    import json
    import os

    recipe = get(name, **settings)
    if config is None:
        raise ValueError(
            f"--recipe {name!r} needs --config PATH, the model's transformers config.json (or its "
            "folder): a recipe reads each tensor's role from the model's module tree, which a checkpoint "
            "does not hold."
        )
    path = os.path.join(config, "config.json") if os.path.isdir(config) else config
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"--config {config!r}: cannot read a JSON config at {path!r} ({err}).") from None
    try:
        import torch
        import transformers
    except ImportError as err:
        raise ValueError(
            f"--recipe {name!r} builds the model from its config with torch and transformers ({err}). "
            "Install them with: pip install 'initscale[torch]' transformers"
        ) from None
    architectures = data.get("architectures") or []
    model_type = data.get("model_type")
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None or not isinstance(model_type, str):
        raise ValueError(
            f"--config {config!r}: needs `model_type` and `architectures` (the model class, e.g. "
            f"['GPT2LMHeadModel']); received model_type={model_type!r}, architectures={architectures!r}."
        )
    fields = {k: v for k, v in data.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(model_type, **fields)
    with torch.device("meta"):
        model = cls(cfg)
    return recipe.rules_for(model)
