"""Rules and reports for re-initializing a whole model, shared by the torch, Keras and JAX helpers.

An adapter's helper (``initscale.torch.reinit_``, ``initscale.keras.reinit``,
``initscale.jax.reinit``) walks its model and describes each parameter as a :class:`Param`: its
qualified name, shape, the class names of the layer that owns it, its *role* in that layer and
the layout that gives its forward fans. This module decides what each parameter gets and why,
computes every distribution before anything is drawn (so a bad rule or shape fails with nothing
changed), and builds the :class:`Report`.

**One skeleton for every adapter.** :func:`run` holds the steps, in one order: the walk
(:class:`Param` and a handle per name), :func:`plan`, the checks of every target, the dry run,
the writes (small tensors in :func:`bounded_groups`), a :class:`PartialWriteError` for a write
that fails midway, and the report. An adapter supplies only a :class:`Backend`: its walk (roles,
layouts, ties) and its write (how to check, draw and write its tensors).

**Rules** are either one spec, applied to the main weights of the supported layers (dense,
convolutions, transposed convolutions, recurrent kernels, attention projections), or an ordered
mapping from pattern to spec where the first matching pattern wins:

- an identifier such as ``"Conv2d"`` or ``"LSTM"`` matches the parameters of a layer whose
  class, or one of whose base classes, has that name, and those of the layers inside it but
  their norms (the adapters list enclosing layers in :attr:`Param.owner_classes`:
  ``"MultiHeadAttention"`` reaches its EinsumDense kernels); it targets the layer's weights
  (every parameter but its biases). An identifier also matches a parameter whose whole name it is.
- anything else is a glob on the qualified parameter name, with :mod:`fnmatch` rules and
  case-sensitive: ``"encoder.*.weight"``, ``"*.bias"``, ``"*/kernel"``; ``*`` crosses ``.``
  and ``/``.
- the value ``None`` leaves the matched parameters as they are; an :class:`initscale.Rule`
  (``Rule(spec, layout="keras.dense")``) also says the layout of the weights it matches, for
  layers the adapter does not recognise, and whether an embedding's padding row is drawn.

A fan-based spec (variance scaling, orthogonal) never falls on a parameter of 2 or more axes
without a layout: :func:`plan` raises, naming it, its layer and the fix. Tied parameters (one
tensor under several names) are set once, under the first name; the others get rows saying so.

**Biases that depend on their weight.** A bias whose adapter names its layer's weight
(``Param.fans_of``; torch's ``reinit_`` does) takes that weight's fans whenever its spec needs
fans, as torch's ``Linear``/``ConvNd.reset_parameters`` bound the bias by 1/√fan_in of the
weight: ``{"*.bias": presets.get("torch.linear_default_bias")}`` works. And a bias that no rule
matches follows its weight when the weight gets its layer's own default that the framework also
gives the bias (:data:`LAYER_DEFAULTS_WITH_BIAS`: ``torch.linear_default``/``conv_default``; and
``torch.bilinear_default`` on an ``nn.Bilinear``), so one spec or a rule
``{"Linear": presets.get("torch.linear_default")}`` reproduces ``reset_parameters`` whole.

**Defaults**, after the rules (``defaults=False`` turns them off): a parameter whose
:class:`Param` carries a ``note`` is kept (a Keras LSTM's forget-gate bias, which Keras starts
at 1: a bias, so class rules skip it, that only a name rule sets); biases → ``Zeros()``;
normalization scales (LayerNorm, BatchNorm, GroupNorm, RMSNorm ``weight``/``gamma``/``scale``) →
``Ones()`` and their offsets → ``Zeros()``; embeddings and anything else unmatched → left as they
are, and listed as untouched in the report.

Example:
    >>> import initscale
    >>> from initscale.reinit import Param, plan
    >>> params = [Param("weight", (64, 32), ("Linear",), "weight", "torch"),
    ...           Param("bias", (64,), ("Linear",), "bias", None)]
    >>> print(plan(params, initscale.presets.get("he_normal")).report)
    2 parameters, 2.11k values: 2 set (2.11k values), 0 kept (0 values)
    layer   status  params  values  std
    Linear  set     2       2.11k   0 .. 0.25
    <BLANKLINE>
    name    shape     layer   layout  fan_in  fan_out  spec                        std   status
    weight  (64, 32)  Linear  torch   32      64       VarianceScaling(scale=2.0)  0.25  set (one spec for all weights)
    bias    (64,)     Linear  -       -       -        Zeros()                     0     set (default: biases -> zeros)
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import functools
import re
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, cast

from . import _validate
from .distributions import Distribution, OrthogonalDist
from .fans import INTERLEAVED_GATES, Fans, LayerKind, Layout, LayoutLike, resolve
from .fans import names as layout_names
from .plan import weight_plan
from .presets import get as _preset
from .specs import Ones, Spec, VarianceScaling, Zeros

__all__ = [
    "DENSE_KINDS",
    "FANS",
    "INTERLEAVED_GATES",
    "LAYER_DEFAULTS_WITH_BIAS",
    "ROLES",
    "UNIT_OFFSET",
    "Backend",
    "CompiledRule",
    "Decision",
    "Param",
    "PartialWriteError",
    "Plan",
    "Report",
    "ReportRow",
    "Role",
    "Rule",
    "Target",
    "Write",
    "bounded_groups",
    "compile_rules",
    "derived_to_set",
    "mark_derived",
    "model_rules",
    "packed_projection_notes",
    "plan",
    "refuse",
    "run",
]

Role = Literal["weight", "bias", "norm_scale", "norm_offset", "embedding", "other"]
ROLES: tuple[str, ...] = ("bias", "embedding", "norm_offset", "norm_scale", "other", "weight")

#: Names of tensors added to (or concatenated with) the activations, not multiplied: position
#: embeddings and class, distillation, register, mask and query tokens (HF ViT's
#: ``position_embeddings`` and ``cls_token``, timm's ``pos_embed``, keras-hub's
#: ``PositionEmbedding``, CLIP's ``class_embedding``, BLIP-2's ``query_tokens``, XLNet's
#: ``mask_emb``, SigLIP's attention-pool ``probe``, Mask2Former's ``level_embed``; Swin's and
#: BEiT's ``relative_position_bias_table``, added to the attention logits). The walks give
#: such a parameter of 2+ axes in an unrecognised layer no layout (it has no fans) and
#: :data:`ADDED_TENSOR_NOTE`: the defaults keep it with that reason, the one spec's warning lists
#: it, and a fan-based rule on it raises.
ADDED_TENSOR = re.compile(
    r"pos(ition(al)?)?_?emb|(cls|class|dist(illation)?|reg(ister)?|mask|query)_?(tokens?|emb(edding)?)\Z"
    r"|\A(probe|level_embed|relative_position_bias_table)\Z",
    re.IGNORECASE,
)
ADDED_TENSOR_NOTE = (
    "a position embedding or token added to the activations, not multiplied: it has no fans; "
    "kept unless a rule names it (a fixed-scale spec such as initscale.TruncatedNormal(0.02))"
)

#: A norm's forward that multiplies by ``1 + scale`` (or ``scale + 1``): HF Gemma's RMSNorm
#: ``(1.0 + self.weight)``, keras-hub Gemma's RMSNormalization, DeepMind gemma's and
#: recurrentgemma's flax RMSNorm (``x * (1 + scale)``, ``x * (scale + 1)``). Such a scale is stored
#: as an offset from one, its own init zeros; the walks read it from the norm's forward source.
UNIT_OFFSET = re.compile(
    r"\(\s*1(\.0*)?\s*\+\s*(self\.)?(scale|gamma|weight)\b|\b(self\.)?(scale|gamma|weight)\s*\+\s*1(\.0*)?\s*\)"
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]!/:\-]+\Z")
_ALL_WEIGHTS = "one spec for all weights"


@dataclass(frozen=True)
class Param:
    """One parameter as an adapter sees it.

    Args:
        name: qualified name (``"encoder.0.weight"``, ``"dense/kernel"``).
        shape: the global shape (for a sharded parameter, the whole tensor's shape).
        owner_classes: class names of the owning layer, most derived first (its MRO), then
            those of each enclosing layer, innermost first (except for a norm's scale and
            offset, which keep their own layer's): a class rule reaches a layer's sublayers.
        role: ``"weight"`` (main weight of a supported layer), ``"bias"``, ``"norm_scale"``,
            ``"norm_offset"``, ``"embedding"`` or ``"other"``.
        layout: the layout or layer kind giving this parameter's forward fans, None if it has
            none (biases, norm parameters).
        frozen: not trainable (``requires_grad=False``, a non-trainable Keras variable).
        buffer: a buffer or other non-parameter state, matched only by name patterns.
        note: why the defaults leave it alone, shown in the report when nothing else touches it.
            A parameter with a note other than :data:`ADDED_TENSOR_NOTE` is one the adapter
            knows (a Keras LSTM's forget-gate bias, Mamba's ``A_log``): the one spec's warning
            about untouched parameters does not list it.
        guessed: the layout was guessed from names (the parameter's, its layer's) by the
            framework's convention, not read from the layer's class and attributes.
        fans_of: the name of the parameter whose fans this one takes when its spec needs fans,
            None for its own layout. An adapter sets it on a bias to its layer's weight (torch:
            ``fc.bias`` -> ``fc.weight``), as torch's ``Linear``/``ConvNd.reset_parameters`` give
            the bias U(±1/√fan_in) of the weight; see :func:`plan`.
        tied_to: this name is another name of the tensor first listed as ``tied_to`` (tied
            weights, such as a language model head sharing its input embedding). The tensor is set
            once, under that first name; rules on either name apply to it. Its own owner,
            role and layout say what it is in this module.
        padding_idx: an embedding row that its layer keeps at zero (``padding_idx``): it stays
            zero when the embedding is re-initialized, unless its rule is
            ``Rule(spec, padding="draw")``.
        unit_offset: a norm scale that its layer uses as ``1 + value`` (Gemma's RMSNorm): its
            default is zeros, not ones.
    """

    name: str
    shape: tuple[int, ...]
    owner_classes: tuple[str, ...]
    role: Role
    layout: LayoutLike | None
    frozen: bool = False
    buffer: bool = False
    note: str = ""
    guessed: bool = False
    fans_of: str | None = None
    tied_to: str | None = None
    padding_idx: int | None = None
    unit_offset: bool = False

    @property
    def layer(self) -> str:
        """The owning layer's class name."""
        return self.owner_classes[0] if self.owner_classes else "-"


_PADDING = ("draw", "zero")


@dataclass(frozen=True)
class Rule:
    """A rule's value that says more than the spec: the layout of the weights it matches, and
    what happens to an embedding's padding row.

    Args:
        spec: the spec for the matched parameters, or None to leave them as they are.
        layout: the layout (or layer kind) that gives the matched weights their forward fans,
            for layers initscale does not recognise: a name from
            ``initscale.layouts.names()`` (``"torch.linear"`` for (out, in), ``"keras.dense"``
            for (in, out), ``"torch.conv:groups=4"``, ...), a :class:`~initscale.Layout` or a
            :class:`~initscale.LayerKind`. None: the layout read from each parameter's layer.
        padding: ``"zero"`` (default) keeps an embedding's ``padding_idx`` row at zero, as its
            layer does; ``"draw"`` draws it like every other row.
        label: what the report says set the matched parameters, before the pattern (a recipe's
            role: ``"recipe hf.gpt2: residual_out"``); empty: just the pattern.

    Example:
        >>> import initscale
        >>> rule = initscale.Rule(initscale.presets.get("he_normal"), layout="keras.dense")
        >>> rule.layout
        'keras.dense'
    """

    spec: Spec | None
    layout: LayoutLike | None = None
    padding: Literal["draw", "zero"] = "zero"
    label: str = ""

    def __post_init__(self) -> None:
        if self.spec is not None and not isinstance(self.spec, Spec):
            hint = f" For a preset, write initscale.presets.get({self.spec!r})." if isinstance(self.spec, str) else ""
            raise TypeError(
                f"Argument `spec` of initscale.Rule must be an initscale spec, or None to leave the "
                f"matched parameters as they are. Received: spec={self.spec!r}.{hint}"
            )
        if self.layout is not None:
            _check_layout(self.layout)
        if self.padding not in _PADDING:
            raise ValueError(
                f"Argument `padding` of initscale.Rule must be one of 'draw', 'zero'. "
                f"Received: padding={self.padding!r}."
            )


def _check_layout(layout: Any) -> None:
    """Raise naming the layout and the valid names (the closest first) if ``layout`` is not one."""
    if isinstance(layout, str):
        name, known = layout.split(":", 1)[0], layout_names()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"Argument `layout` of initscale.Rule must be a layout name, one of "
                f"{', '.join(repr(n) for n in known)} (with parameters as in "
                f"'torch.conv:groups=4'), a Layout or a LayerKind. Received: layout={layout!r}.{hint}"
            )
    try:
        resolve(layout)
    except (TypeError, ValueError) as err:
        raise type(err)(f"initscale.Rule: {err}") from err


@functools.lru_cache(maxsize=4096)
def _glob_match(pattern: str) -> Callable[[str], Any]:
    """``fnmatch.fnmatchcase(name, pattern)`` as one call on ``name`` (its regex's ``match``)."""
    return re.compile(fnmatch.translate(pattern)).match


@dataclass(frozen=True)
class CompiledRule:
    """One compiled rule: ``pattern_type`` is ``"class"`` (identifier), ``"glob"`` or ``"weights"``
    (a single spec given for the whole model); ``layout`` and ``padding`` as in :class:`Rule`."""

    pattern: str
    spec: Spec | None
    pattern_type: Literal["class", "glob", "weights"]
    layout: LayoutLike | None = None
    padding: Literal["draw", "zero"] = "zero"
    label: str = ""
    #: a glob's ``fnmatch.fnmatchcase`` (its translated regex's ``match``), compiled once
    _glob: Callable[[str], Any] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern_type == "glob":
            object.__setattr__(self, "_glob", _glob_match(self.pattern))

    def matches(self, param: Param) -> bool:
        """Whether this rule applies to ``param``."""
        if param.buffer:  # buffers only ever by name
            return self.pattern_type != "weights" and fnmatch.fnmatchcase(param.name, self.pattern)
        if self.pattern_type == "weights":
            return param.role == "weight"
        if self.pattern_type == "class":
            if param.name == self.pattern:
                return True
            return self.pattern in param.owner_classes and param.role not in ("bias", "norm_offset")
        glob = self._glob
        return (glob if glob is not None else _glob_match(self.pattern))(param.name) is not None

    def __str__(self) -> str:
        if self.label:
            return f"{self.label} (rule {self.pattern!r})"
        return _ALL_WEIGHTS if self.pattern_type == "weights" else f"rule {self.pattern!r}"


def _check_pattern(pattern: Any) -> Literal["class", "glob"]:
    if not isinstance(pattern, str):
        raise TypeError(
            f"Each key of `rules` must be a pattern string (a layer class name such as 'Conv2d' or a "
            f"parameter-name glob such as '*.bias'). Received: {pattern!r}."
        )
    if _IDENTIFIER.match(pattern):
        return "class"
    problem = ""
    if not _GLOB.match(pattern):
        bad = sorted({c for c in pattern if not re.match(r"[A-Za-z0-9_.*?\[\]!/:\-]", c)})
        problem = f"it contains {', '.join(repr(c) for c in bad)}"
    elif pattern.count("[") != pattern.count("]") or re.search(r"\[\]|\[!\]", pattern):
        problem = "its [...] character classes are unbalanced or empty"
    if problem:
        raise ValueError(
            f"Invalid pattern {pattern!r} in `rules`: {problem}. A pattern is a layer class name "
            "('Conv2d', 'LSTM') or a glob on qualified parameter names using letters, digits, "
            "'_', '.', '/', ':', '-' and the wildcards '*', '?', '[...]' (e.g. 'encoder.*.weight', "
            "'*.bias')."
        )
    return "glob"


def model_rules(rules: Any, model: Any, params: Sequence[Param] | None = None) -> Any:
    """The hook every reinit entry calls before :func:`plan`: a recipe (an object with
    ``rules_for``, such as ``initscale.recipes.get("hf.gpt2")``) resolved on ``model`` into
    concrete rules (``params``: the entry's walk of it, if it has one, so it is not walked twice);
    a spec or a mapping of rules comes back as it is."""
    resolve = getattr(rules, "rules_for", None)
    if resolve is None or isinstance(rules, (Spec, Mapping)):
        return rules
    kept = getattr(rules, "_kept_rules", None)  # a recipe: its kept resolution itself, compiled once (_KeptRules)
    if kept is not None and params is not None:
        return kept(model, params)
    return resolve(model) if params is None else resolve(model, params=params)


class _KeptRules(Mapping[str, "Spec | Rule | None"]):
    """A read-only mapping of rules that is compiled once and remembers what each name matched:
    a recipe's resolution as ``Recipe.rules_for`` keeps it for its model, handed to :func:`plan`
    by :func:`model_rules`, so a repeated ``reinit_`` of that model neither validates the same
    rules again nor tries them on the same names again. It holds a copy of the rules it was
    built from and cannot be changed."""

    __slots__ = ("_compiled", "_first", "_rules", "by_name")

    def __init__(self, rules: Mapping[str, Spec | Rule | None]) -> None:
        self._rules = dict(rules)
        self._compiled: tuple[CompiledRule, ...] | None = None
        self._first: dict[str, CompiledRule | None] = {}
        #: every rule a glob (as a recipe's): which one a parameter gets depends on its name alone (a glob
        #: matches parameters and buffers by name), so :meth:`first` keeps it per name
        self.by_name = False

    def __getitem__(self, pattern: str) -> Spec | Rule | None:
        return self._rules[pattern]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return repr(self._rules)

    def compiled(self) -> tuple[CompiledRule, ...]:
        """:func:`compile_rules` of the rules, computed on the first call (an invalid rule raises each time)."""
        if self._compiled is None:
            compiled = compile_rules(self._rules)
            self.by_name = bool(compiled) and all(r.pattern_type == "glob" for r in compiled)
            self._compiled = compiled
        return self._compiled

    def first(self, name: str) -> CompiledRule | None:
        """The first rule (of :meth:`compiled`, all globs: :attr:`by_name`) that matches ``name``,
        found once per name: the same rule the loop over every rule in :func:`_match` finds."""
        kept = self._first
        if name in kept:
            return kept[name]
        found = None
        for rule in self.compiled():
            if cast(Callable[[str], Any], rule._glob)(name) is not None:
                found = rule
                break
        kept[name] = found
        return found


def compile_rules(rules: Spec | Mapping[str, Spec | Rule | None]) -> tuple[CompiledRule, ...]:
    """Validate ``rules`` (one spec, or an ordered mapping pattern -> spec, :class:`Rule` or None)."""
    if isinstance(rules, _KeptRules):
        return rules.compiled()
    if isinstance(rules, Spec):
        return (CompiledRule("*", rules, "weights"),)
    if not isinstance(rules, Mapping):
        hint = f" For a preset, pass initscale.presets.get({rules!r})." if isinstance(rules, str) else ""
        raise TypeError(
            "Argument `rules` must be an initscale spec (applied to every supported layer's "
            "weights) or a mapping from pattern to spec, e.g. {'Conv2d': initscale.presets.get("
            f"'he_normal'), '*.bias': initscale.Zeros()}}. Received: rules={rules!r}.{hint}"
        )
    compiled = []
    for pattern, spec in rules.items():
        pattern_type = _check_pattern(pattern)
        if isinstance(spec, Rule):
            compiled.append(CompiledRule(pattern, spec.spec, pattern_type, spec.layout, spec.padding, spec.label))
            continue
        if spec is not None and not isinstance(spec, Spec):
            hint = f" For a preset, write initscale.presets.get({spec!r})." if isinstance(spec, str) else ""
            raise TypeError(
                f"The rule for pattern {pattern!r} must be an initscale spec, an initscale.Rule(spec, "
                f"layout=...), or None to leave the matched parameters as they are. Received: {spec!r}.{hint}"
            )
        compiled.append(CompiledRule(pattern, spec, pattern_type))
    return tuple(compiled)


@dataclass(frozen=True)
class ReportRow:
    """What happened to one parameter. ``guessed``: its layout was guessed from names, not read
    from its layer (marked ``?`` in the table). ``fans``: which rule gave ``fan_in``/``fan_out``,
    ``"forward"`` (initscale's forward-pass fans) or ``"native"`` (the framework's own rule, e.g.
    torch's ``_calculate_fan_in_and_fan_out``), None where the row has no fans. ``tied_to``: this
    name is another name of that parameter's tensor (tied weights), which was set once, under that
    name; the row repeats its numbers."""

    name: str
    shape: tuple[int, ...]
    layer: str
    layout: str | None
    fan_in: float | None
    fan_out: float | None
    spec: Spec | None
    std: float | None
    touched: bool
    reason: str
    guessed: bool = False
    fans: Literal["forward", "native"] | None = None
    tied_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (the spec as its repr), e.g. for a DataFrame or JSON."""
        row = dataclasses.asdict(self)
        row["spec"] = None if self.spec is None else repr(self.spec)
        row["shape"] = list(self.shape)
        return row


def _short(spec: Spec | None) -> str:
    if spec is None:
        return "-"
    changed = [
        f"{f.name}={getattr(spec, f.name)!r}"
        for f in dataclasses.fields(cast(Any, spec))
        if f.default is dataclasses.MISSING or getattr(spec, f.name) != f.default
    ]
    return f"{type(spec).__name__}({', '.join(changed)})"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"


def _values(shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def _count(n: int) -> str:
    """A count of values, short: 999, 12.3k, 4.57M, 1.23B."""
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def _aligned(lines: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell (the last column is not padded)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1] for line in lines
    ]


@dataclass(frozen=True)
class Report(Sequence[ReportRow]):
    """One row per parameter: name, shape, layer, layout, fans, spec, std applied, and whether it
    was touched or why not. ``dry_run`` says that nothing was written.

    ``print(report)`` gives :meth:`summary` (one line per layer class and status: how many
    parameters, how many values, the range of the std applied; then the weights of 2 or more
    axes left untouched) and, for a report of at most :attr:`TABLE_ROWS` rows, :meth:`table`
    below it; a longer report (a large model) prints the summary only, and ``report.table()``
    gives every row. :meth:`to_dicts` gives the rows as dicts. A layout guessed from names rather
    than read from the layer is marked ``?`` and explained under the table."""

    rows: tuple[ReportRow, ...]
    dry_run: bool = False
    unused_patterns: tuple[str, ...] = ()
    fans: Literal["forward", "native"] = "forward"

    #: The most rows ``str(report)`` shows in full; above it, the summary only.
    TABLE_ROWS: ClassVar[int] = 100
    #: The most untouched weights the summary names (all are in :attr:`untouched_weights`).
    LISTED_UNTOUCHED: ClassVar[int] = 10

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, str):
            for row in self.rows:
                if row.name == index:
                    return row
            raise KeyError(f"No parameter named {index!r} in this report.")
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ReportRow]:
        return iter(self.rows)

    @property
    def touched(self) -> tuple[ReportRow, ...]:
        """Rows of the parameters that were (or, in a dry run, would be) re-initialized."""
        return tuple(r for r in self.rows if r.touched)

    @property
    def untouched(self) -> tuple[ReportRow, ...]:
        """Rows of the parameters left as they were."""
        return tuple(r for r in self.rows if not r.touched)

    @property
    def untouched_weights(self) -> tuple[ReportRow, ...]:
        """Rows of the untouched parameters with 2 or more axes (weight matrices, kernels,
        embeddings, and buffers offered with ``include_buffers``): what a whole-model init most
        often misses by accident."""
        return tuple(r for r in self.rows if not r.touched and len(r.shape) >= 2)

    @property
    def guessed(self) -> tuple[ReportRow, ...]:
        """Rows whose layout (and so fans) was guessed from names, not read from the layer."""
        return tuple(r for r in self.rows if r.guessed)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as plain dicts."""
        return [r.to_dict() for r in self.rows]

    def _status(self, row: ReportRow) -> str:
        return ("would set" if self.dry_run else "set") if row.touched else "kept"

    def summary(self) -> str:
        """A few lines for a model of any size: the totals; one line per (layer class, status)
        in order of first appearance with the number of parameters, of values (elements) and
        the range of the std applied; then the untouched weights of 2+ axes (the first
        :attr:`LISTED_UNTOUCHED` named, with their reasons).

        Example:
            >>> import initscale
            >>> from initscale.reinit import Param, plan
            >>> params = [Param(f"{i}.weight", (64, 32 * (i + 1)), ("Linear",), "weight", "torch")
            ...           for i in range(3)] + [Param("emb.weight", (100, 64), ("Embedding",), "embedding", None)]
            >>> print(plan(params, initscale.presets.get("he_uniform"), dry_run=True).report.summary())
            4 parameters, 18.7k values: 3 would be set (12.3k values), 1 kept (6.4k values)
            layer      status     params  values  std
            Linear     would set  3       12.3k   0.144338 .. 0.25
            Embedding  kept       1       6.4k    -
            untouched weights (2+ axes): 1
              emb.weight  (100, 64)  Embedding  embeddings are kept unless a rule names them
        """
        groups: dict[tuple[str, str], list[ReportRow]] = {}
        for row in self.rows:
            groups.setdefault((row.layer, self._status(row)), []).append(row)
        touched = [r for r in self.rows if r.touched]
        kept = [r for r in self.rows if not r.touched]
        verb = "would be set" if self.dry_run else "set"
        total = sum(_values(r.shape) for r in self.rows)
        lines = [
            f"{len(self.rows)} parameters, {_count(total)} values: {len(touched)} {verb} "
            f"({_count(sum(_values(r.shape) for r in touched))} values), {len(kept)} kept "
            f"({_count(sum(_values(r.shape) for r in kept))} values)"
        ]
        if self.fans == "native":
            forward = sum(1 for r in self.rows if r.fans == "forward")
            lines[0] += "; fans: native (the framework's own rule" + (
                f"; {forward} layout(s) without one keep forward fans)" if forward else ")"
            )
        cells = [("layer", "status", "params", "values", "std")]
        for (layer, status), rows in groups.items():
            stds = [r.std for r in rows if r.std is not None]
            if not stds:
                spread = "-"
            elif min(stds) == max(stds):
                spread = _number(stds[0])
            else:
                spread = f"{_number(min(stds))} .. {_number(max(stds))}"
            cells.append((layer, status, str(len(rows)), _count(sum(_values(r.shape) for r in rows)), spread))
        lines += _aligned(cells) if len(cells) > 1 else []
        missed = self.untouched_weights
        if missed:
            lines.append(f"untouched weights (2+ axes): {len(missed)}")
            shown = missed[: self.LISTED_UNTOUCHED]
            lines += ["  " + line for line in _aligned([(r.name, str(r.shape), r.layer, r.reason) for r in shown])]
            if len(missed) > len(shown):
                lines.append(f"  ... and {len(missed) - len(shown)} more: report.untouched_weights lists them all")
        return "\n".join(lines)

    def table(self) -> str:
        """Every row, aligned: name, shape, layer, layout, fans, spec, std and what was done."""
        header = ("name", "shape", "layer", "layout", "fan_in", "fan_out", "spec", "std", "status")
        verb = "would set" if self.dry_run else "set"
        lines = [header] + [
            (
                r.name,
                str(r.shape),
                r.layer,
                (r.layout or "-") + ("?" if r.guessed else ""),
                _number(r.fan_in),
                _number(r.fan_out),
                _short(r.spec),
                _number(r.std),
                f"{verb} ({r.reason})" if r.touched else f"kept ({r.reason})",
            )
            for r in self.rows
        ]
        table = "\n".join(_aligned(lines))
        if any(r.guessed for r in self.rows):
            table += "\n? layout guessed from names by the framework's convention, not read from the layer"
        return table

    def __str__(self) -> str:
        if len(self.rows) <= self.TABLE_ROWS:
            return self.summary() + "\n\n" + self.table()
        return (
            self.summary() + f"\n({len(self.rows)} rows, more than Report.TABLE_ROWS = {self.TABLE_ROWS}: "
            "report.table() gives every row)"
        )


@dataclass(frozen=True)
class Decision:
    """A parameter, the distribution it will get (None: untouched, or set under the name it is
    tied to), the concrete layout for matrix inits (orthogonal) and the embedding padding row to
    keep at zero. ``param.layout`` is the layout the fans came from (a rule's ``layout=`` if it
    gave one)."""

    param: Param
    dist: Distribution | None
    layout: Layout | None
    padding_idx: int | None = None  # an embedding row the adapter writes as zeros after drawing


@dataclass(frozen=True)
class Plan:
    """The outcome of :func:`plan`: one decision per parameter, in order, and the report."""

    decisions: tuple[Decision, ...]
    report: Report


def _fans(param: Param, fan_layout: Layout | LayerKind | None) -> Fans | None:
    if fan_layout is None:
        return None
    try:
        return fan_layout.fans(param.shape)
    except ValueError:
        return None


def _match(
    members: Sequence[Param], rules: Sequence[CompiledRule], used: set[str], kept: _KeptRules | None = None
) -> tuple[CompiledRule, Param] | None:
    """The rule for one tensor, known under the names ``members`` (more than one when tied), and
    the name it matched: each name's first matching rule; two that disagree are an error. The
    one spec for all weights skips a tied tensor that is also an embedding (it stays one).
    ``kept``: the :class:`_KeptRules` that ``rules`` were compiled from, which may know each
    name's first match from an earlier call (:meth:`_KeptRules.first`)."""
    embedding = len(members) > 1 and any(m.role == "embedding" for m in members)
    found: list[tuple[CompiledRule, Param]] = []
    for member in members:
        if kept is not None and kept.by_name:
            first = kept.first(member.name)
            if first is not None:
                used.add(first.pattern)
                found.append((first, member))
            continue
        for rule in rules:
            if rule.pattern_type == "weights" and embedding:
                continue
            if rule.matches(member):
                used.add(rule.pattern)
                found.append((rule, member))
                break
    if not found:
        return None
    first, member = found[0]
    for other, other_member in found[1:]:
        if (other.spec, other.layout, other.padding) != (first.spec, first.layout, first.padding):
            raise ValueError(
                f"{member.name!r} and {other_member.name!r} are one tensor (tied weights), but {first} gives it "
                f"{first.spec!r} and {other} gives it {other.spec!r}. Nothing was changed. Give the tensor one rule: "
                f"a pattern that matches only one of its names, or the same spec under both."
            )
    return first, member


def _default(param: Param, defaults: bool) -> tuple[Spec | None, str]:
    if not defaults or param.buffer:
        return None, "no rule matched"
    if param.note:  # the adapter says why the defaults keep this one (a Keras LSTM's forget-gate bias)
        return None, f"no rule matched; {param.note}"
    if param.role in ("bias", "norm_offset"):
        return Zeros(), "default: biases -> zeros" if param.role == "bias" else "default: norm offset -> zeros"
    if param.role == "norm_scale" and param.unit_offset:
        return Zeros(), "default: norm scale used as 1 + weight -> zeros"
    if param.role == "norm_scale":
        return Ones(), "default: norm scale -> ones"
    if param.role == "embedding":
        return None, "embeddings are kept unless a rule names them"
    return None, "no rule matched"


def _choose(param: Param, rules: Sequence[CompiledRule], used: set[str], defaults: bool) -> tuple[Spec | None, str]:
    matched = _match([param], rules, used)
    if matched is None:
        return _default(param, defaults)
    rule = matched[0]
    return (None, f"{rule} says leave as is") if rule.spec is None else (rule.spec, str(rule))


def _resolve(
    param: Param, spec: Spec, fan_layout: Layout | LayerKind | None
) -> tuple[Distribution, Layout | None, Fans | None]:
    where = f"Parameter {param.name!r} (shape {param.shape}, in {param.layer})"
    if spec.fixed_scale:
        return spec.resolve(None), None, _fans(param, fan_layout)
    if fan_layout is None:
        raise ValueError(
            f"{where} has no fans, so {spec!r} cannot be scaled for it. Give it a fixed-scale spec "
            "(initscale.Zeros(), initscale.Normal(0.02), ...) or a rule that does not match it."
        )
    try:
        plan = weight_plan(spec, param.shape, fan_layout)
        return plan.dist, plan.layout, plan.fans
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


#: torch's layer default U(±1/√fan_in) = kaiming_uniform_(a=√5) (presets ``torch.linear_default``,
#: ``torch.conv_default``): torch's Linear and ConvNd give it to their bias too, with the weight's
#: fan_in (torch/nn/modules/linear.py and conv.py, ``reset_parameters``).
LAYER_DEFAULTS_WITH_BIAS: tuple[Spec, ...] = (
    VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
    VarianceScaling(1.0 / 3.0, "fan_in", "uniform", native="torch"),
)


def _covers_bias(spec: Spec | None, weight: Param) -> bool:
    """Whether ``spec`` on ``weight`` is a layer's own default that its framework also gives the
    layer's bias: one of :data:`LAYER_DEFAULTS_WITH_BIAS`, or, on an ``nn.Bilinear`` weight
    (out, in1, in2), ``torch.bilinear_default`` for its in1 (U(±1/√in1) on weight and bias)."""
    if spec is None:
        return False
    if spec in LAYER_DEFAULTS_WITH_BIAS:
        return True
    if "Bilinear" in weight.owner_classes and len(weight.shape) == 3 and weight.shape[1] > 0:
        return spec == _preset("torch.bilinear_default", in1_features=weight.shape[1])
    return False


def _from_weight(
    param: Param, source: Param, spec: Spec, fan_layout: Layout | LayerKind | None
) -> tuple[Distribution, Fans]:
    """The distribution of ``param`` (a bias) with the fans of its weight ``source``."""
    where = f"Parameter {param.name!r} (shape {param.shape}, in {param.layer})"
    if fan_layout is None:
        raise ValueError(
            f"{where} takes its fans from {source.name!r}, which has no layout, so {spec!r} cannot be scaled for "
            "it. Give it a fixed-scale spec (initscale.Zeros(), initscale.Uniform(-b, b), ...) or a rule that does "
            "not match it."
        )
    try:
        fans = fan_layout.fans(source.shape)
    except ValueError as err:
        raise ValueError(f"{where} takes its fans from {source.name!r}: {err}") from err
    dist = spec.resolve(fans)
    if isinstance(dist, OrthogonalDist):
        raise ValueError(f"{where}: {spec!r} makes orthogonal matrices; a bias is not one. Give it another spec.")
    return dist, fans


def _suggest(pattern: str, params: Sequence[Param]) -> str:
    names = {c for p in params for c in p.owner_classes} | {p.name for p in params}
    close = difflib.get_close_matches(pattern, sorted(names - {pattern}), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


FANS: tuple[str, ...] = ("forward", "native")


def _fan_layout(layout: LayoutLike, fans: str) -> Layout | LayerKind:
    """The layout or layer kind whose fans a parameter gets: with ``fans="native"`` a layer kind's
    ``native=True`` variant (the framework's own rule); a plain :class:`Layout` has none and keeps
    its forward fans."""
    fan_layout = resolve(layout)
    if fans == "native" and isinstance(fan_layout, LayerKind) and not fan_layout.native:
        return dataclasses.replace(fan_layout, native=True)
    return fan_layout


def _fans_mode(fan_layout: Layout | LayerKind) -> Literal["forward", "native"]:
    return "native" if isinstance(fan_layout, LayerKind) and fan_layout.native else "forward"


def _unknown_layout_error(found: Sequence[tuple[Param, CompiledRule]]) -> ValueError:
    """The error for fan-based rules on parameters without a layout: those of layers initscale does
    not know (say the layout), and those the adapter knows are not weights (their note says what
    they are: weight norm's g, Mamba's A_log; leave them out of the rule)."""
    known = [(p, r) for p, r in found if p.note and p.note != ADDED_TENSOR_NOTE]
    unknown = [(p, r) for p, r in found if not (p.note and p.note != ADDED_TENSOR_NOTE)]
    parts = []
    if unknown:
        lines = [f"  {p.name!r} (shape {p.shape}, in {p.layer}): {r} gives {_short(r.spec)}" for p, r in unknown]
        param, rule = unknown[0]
        where = "" if rule.pattern_type == "weights" else f" before {rule}"
        key = param.layer if param.owner_classes else param.name
        parts.append(
            f"{len(unknown)} parameter(s) of 2 or more axes are not in a layer that initscale recognises, so it "
            "cannot know which axes are inputs and outputs, and the fan-based spec cannot be scaled for them; nothing "
            "was changed:\n" + "\n".join(lines) + f"\nSay the layout in a rule{where}, e.g. {{{key!r}: "
            f"initscale.Rule({_short(rule.spec)}, layout='torch.linear')}} for an (out, in) weight, "
            "layout='keras.dense' for (in, out) (initscale.layouts.names() lists the layouts; a "
            "Layout(in_axes=..., out_axes=...) works too, with batch_axes=... for a stack of matrices such as "
            "experts); or give them a fixed-scale spec (initscale.Normal(0.02), ...), or None to leave them as "
            "they are."
        )
    if known:
        lines = [
            f"  {p.name!r} (shape {p.shape}, in {p.layer}): {r} gives {_short(r.spec)}; it is {p.note}"
            for p, r in known
        ]
        param, rule = known[0]
        parts.append(
            f"{len(known)} parameter(s) that a fan-based rule reaches are not weights and have no fans; nothing was "
            "changed:\n" + "\n".join(lines) + f"\nNarrow {rule} so that it does not reach them (a layer class "
            f"such as {'Linear'!r} reaches the layer's weights only), or give them a rule of their own before it: a "
            f"fixed-scale spec, or None to leave one as it is ({{{param.name!r}: None}})."
        )
    return ValueError("\n".join(parts))


# Dense layers whose output, by their name, usually stacks several projections that the forward
# splits: Q, K and V (GPT-NeoX/Bloom/Falcon ``query_key_value``, Phi-3 ``qkv_proj``, ModernBERT
# ``Wqkv``, timm ``attn.qkv``, keras-hub Swin ``attention_qkv``, Bark's ``att_proj``, Baichuan
# ``W_pack``, K and V in ``kv``), gate and up (Phi-3 ``gate_up_proj``), Mamba's x and z
# (``in_proj``; not an MLP's), Qwen3-Next's gated DeltaNet ``in_proj_qkvz`` and ``in_proj_ba``,
# GPT-BigCode's ``c_attn`` as an nn.Linear (multi-query: Q then one K and one V head, unequal),
# DeepSeek-V3's ``kv_a_proj_with_mqa`` (the KV latent and the rotary key) and ``kv_b_proj`` (K and
# V per head);
# DeepMind gemma's
# flax ``qkv_einsum``, ``kv_einsum`` and ``gating_einsum`` (a weight named so itself, its module
# sharing its parent's scope); LeViT's ``queries_keys_values`` and ``keys_values``, whose Linear is
# one level down (``.linear``: the layer two names before the leaf counts too). A dense layer does
# not say how its output is split, and the pieces
# may differ in size (grouped-query attention), so initscale counts fan_out over the whole output,
# and says so when a spec's std depends on it.
PACKED_PROJECTION = re.compile(
    r"(\A|_)(w_?qkv|qkvz?|kv|query_key_value|(queries_)?keys_values|w_?pack|gate_up|in_proj)(_proj|_einsum)?\Z"
    r"|\A(attention_qkv\d*|gating_einsum|att_proj|in_proj_ba|c_attn|kv_a_proj_with_mqa|kv_b_proj)\Z",
    re.IGNORECASE,
)


def _named_packed(name: str) -> bool:
    """Whether a weight's name reads as a packed projection (:data:`PACKED_PROJECTION` on the leaf
    and the two components before it), except an MLP's ``in_proj``: its one input projection
    (Bark's ``BarkMLP``), not Mamba's x and z."""
    parts = _layer_names(name)
    return any(
        PACKED_PROJECTION.search(part) and not (part == "in_proj" and i > 0 and parts[i - 1] == "mlp")
        for i, part in enumerate(parts)
    )


# The dense kinds and dense layouts whose whole output is one fan_out; a rule's own layout is none
# of these (it says how the output is split, or that it is not), so it silences the warning.
DENSE_KINDS = frozenset({"torch.linear", "keras.dense", "flax.dense"})
_DENSE_LAYOUT_NAMES = ("keras.einsum_dense[", "flax.einsum[", "flax.dense_general")


def _dense_axes(layout: LayoutLike | None, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The (in, out) axes of a dense weight of ``shape`` under ``layout`` (a dense kind, an
    EinsumDense or DenseGeneral layout with no batch axes and no groups); None for any other."""
    if layout is None:
        return None
    resolved = resolve(layout)
    if isinstance(resolved, LayerKind):
        if resolved.name not in DENSE_KINDS:
            return None
        resolved = resolved.layout(shape)
    elif not (resolved.name or "").startswith(_DENSE_LAYOUT_NAMES):
        return None
    if resolved.batch_axes or resolved.in_groups != 1 or resolved.out_groups != 1:
        return None
    ins, outs, _, _ = resolved.split_axes(shape)
    return ins, outs


def _layer_names(name: str) -> tuple[str, ...]:
    """The leaf and the two components before it of a ``.`` or ``/`` separated name."""
    return tuple(re.split(r"[./]", name)[-3:])


def _leading_stack(layout: LayoutLike | None) -> bool:
    """Whether an einsum layout's output starts with a weight axis, ahead of every axis of the
    input: a stack of projections the caller unpacks (gemma's ``"BTD,SNDH->SBTNH"``: ``q, k, v =``;
    recurrentgemma's ``"...td,cdD->c...tD"``: gate and up)."""
    name = getattr(layout, "name", None) or ""
    if not name.startswith(("flax.einsum[", "keras.einsum_dense[")):
        return False
    try:
        inputs, output = name[name.index("[") + 1 : name.index("]")].split("->")
        x, kernel = inputs.split(",")
    except ValueError:
        return False
    return bool(output) and output[0] in kernel and output[0] not in x


def _axes_text(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else str(axes)


def derived_to_set(report: Report, derived: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """The parameters an adapter computes from another one after the draws, where it does so:
    ``derived`` maps a name to (the name it is computed from, how); one is set when its source is
    drawn and no rule names it (neither to draw nor to keep it). Weight norm's magnitude g = ‖v‖
    (torch's ``weight_norm``, flax's ``WeightNorm`` scale), so the layer's weight is v as drawn.
    Returns name -> how, for :func:`mark_derived` and the adapter's ``finish``."""
    rows = {r.name: r for r in report.rows}
    return {
        name: how
        for name, (source, how) in derived.items()
        if name in rows
        and source in rows
        and rows[source].touched
        and not rows[name].touched
        and rows[name].reason.startswith("no rule matched")
    }


def mark_derived(report: Report, derived: Mapping[str, tuple[str, str]]) -> Report:
    """``report`` with each parameter :func:`derived_to_set` selects marked as set, its reason the how."""
    marked = derived_to_set(report, derived)
    if not marked:
        return report
    rows = tuple(
        dataclasses.replace(row, touched=True, reason=marked[row.name]) if row.name in marked else row
        for row in report.rows
    )
    return dataclasses.replace(report, rows=rows)


def packed_projection_notes(walked: Sequence[Param], decided: Plan) -> tuple[str, ...]:
    """A warning naming the dense weights that look like packed projections and whose spec's std
    depends on fan_out (Glorot, fan_out modes): the weight, its layer or the layer above it is
    named like one (:data:`PACKED_PROJECTION`; the last three components of the ``.`` or ``/``
    separated name), or their einsum's output leads with a weight axis (a stack the caller
    unpacks: ``"BTD,SNDH->SBTNH"``).

    ``walked``: the parameters as the adapter walked them; ``decided``: the :func:`plan` of
    them. Dense weights are those of :data:`DENSE_KINDS` (``nn.Linear``, Keras ``Dense``, flax
    ``Dense``) and the einsum (Keras EinsumDense, flax einsum modules) and DenseGeneral layouts
    with no batch axes. A weight whose rule gives a layout is not warned: the rule says how its
    output is split.

    Example:
        >>> import initscale
        >>> from initscale.reinit import Param, packed_projection_notes, plan
        >>> params = [Param("attn.query_key_value.weight", (96, 32), ("Linear",), "weight", "torch.linear")]
        >>> decided = plan(params, initscale.presets.get("glorot_uniform"))
        >>> note = packed_projection_notes(params, decided)[0]
        >>> "'attn.query_key_value.weight'" in note, "Layout(in_axes=1, out_axes=0, out_groups=k)" in note
        (True, True)
    """
    found: list[str] = []
    fixes: dict[str, str] = {}  # the axes of the fix -> the first weight they are for
    for param, decision, row in zip(walked, decided.decisions, decided.report.rows, strict=True):
        if decision.param is not param or not row.touched or row.spec is None or row.spec.fixed_scale:
            continue
        if row.fan_in is None or row.fan_out is None:
            continue
        named = _named_packed(param.name)
        if not (named or _leading_stack(param.layout)):
            continue
        axes = _dense_axes(param.layout, param.shape)
        if axes is None:
            continue
        halved = row.spec.resolve(Fans(row.fan_in, row.fan_out / 2)).std
        if row.spec.resolve(Fans(row.fan_in, row.fan_out)).std != halved:
            found.append(param.name)
            fixes.setdefault(f"in_axes={_axes_text(axes[0])}, out_axes={_axes_text(axes[1])}", param.name)
    if not found:
        return ()
    fix, where = next(iter(fixes)), ""
    if len(fixes) > 1:
        fix = "AXES"
        where = " (AXES: " + "; ".join(f"{axes} for {name!r}" for axes, name in fixes.items()) + ", as their layers)"
    return (
        f"reinit: {len(found)} dense weight(s) named like packed projections or whose einsum output leads with a "
        f"stack of them ({_listed(found, 6)}) got a spec "
        "whose std depends on fan_out, and initscale counts fan_out over the whole output: a dense layer does "
        "not say how its forward splits it. If the output stacks k equal projections (Q, K, V; gate and up), "
        f"give each its own fans with initscale.Rule(spec, layout=initscale.Layout({fix}, out_groups=k)); "
        f"to keep the whole-output fans and silence this, layout=initscale.Layout({fix}){where}.",
    )


def _refuse_interleaved_orthogonal(targets: Sequence[Target[Any]]) -> None:
    """An orthogonal spec on a weight whose layout interleaves its projections: refused."""
    found = [
        (t.name, layout)
        for t in targets
        if isinstance(t.decision.dist, OrthogonalDist)
        and (layout := t.decision.layout) is not None
        and (layout.name or "").endswith(INTERLEAVED_GATES)
    ]
    if not found:
        return
    name, layout = found[0]
    raise ValueError(
        f"{name!r} stores its experts' gate and up projections interleaved along its out axis "
        "([g0, u0, g1, u1, ...], GPT-OSS), so an orthogonal block per projection is not a contiguous block of "
        "it; nothing was changed. Give it a variance-scaling spec, or draw each expert's whole matrix as one "
        f"block: {{{name!r}: initscale.Rule(initscale.Orthogonal(), layout=initscale.Layout("
        f"in_axes={layout.in_axes[0]}, out_axes={layout.out_axes[0]}, batch_axes=0))}}."
    )


_DEFAULT_BIAS = "default: biases -> zeros"


_DEFAULT_CONSTANTS = {  # a default's reason -> the value it writes, and what a constant it overwrites is
    _DEFAULT_BIAS: (0.0, "bias(es)"),
    "default: norm offset -> zeros": (0.0, "norm offset(s)"),
    "default: norm scale -> ones": (1.0, "norm scale(s)"),
}


def _warn_overwritten_constants(
    backend: Backend[Any], targets: Sequence[Target[Any]], report: Report, stacklevel: int
) -> None:
    """The defaults set biases and norm offsets to zeros and norm scales to ones. One that holds a
    single other value in every entry was set on purpose: a bias at a detector's class prior
    -log((1 - p) / p) (RetinaNet's -4.595 for p = 0.01) or a gate bias at 1; a norm scale at zeros,
    either zero-init residual (torchvision's ``zero_init_residual``, timm's ``zero_init_last``) or
    a norm whose forward uses ``1 + scale`` that initscale did not recognise (its source not
    read). Warn, naming each, its value and how to keep it, before anything is written."""
    found: dict[str, list[str]] = {}
    for target in targets:
        default = _DEFAULT_CONSTANTS.get(report.rows[target.index].reason)  # rows are in the walk's order
        if default is None:
            continue
        value = backend.constant_value(target.handle)
        if value is not None and value != default[0]:
            found.setdefault(default[1], []).append(f"{target.name!r} = {value:.6g}")
    if not found:
        return
    parts = []
    for what, named in found.items():
        shown = ", ".join(named[:6]) + (", ..." if len(named) > 6 else "")
        parts.append(f"{len(named)} {what} ({shown})")
    why = []
    if "bias(es)" in found or "norm offset(s)" in found:
        why.append("a bias at a classifier's prior -log((1 - p) / p) or a gate bias")
    if "norm scale(s)" in found:
        why.append(
            "a norm scale at zeros for a zero-init residual branch, or one used as 1 + scale by its norm's forward "
            "(then its ones are twice the gain it starts with; give it initscale.Zeros())"
        )
    warnings.warn(
        f"reinit: the defaults set biases and norm offsets to zeros and norm scales to ones, but {'; '.join(parts)} "
        f"held one other value in every entry, which a model sets on purpose ({'; '.join(why)}). They are set as "
        "asked; to keep them, give them None (rules={'<name>': None} beside the spec), or their own spec "
        "(initscale.Constant(value)).",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


def _warn_untouched(rows: Sequence[ReportRow], params: Sequence[Param], stacklevel: int) -> None:
    """The one spec for all weights left parameters of 2+ axes alone: say so, by owner class."""
    by_class: dict[str, list[str]] = {}
    matrices: set[str] = set()
    for row, param in zip(rows, params, strict=True):
        if (
            not row.touched
            and len(param.shape) >= 2
            and param.role not in ("embedding",)
            and not param.buffer
            and not param.frozen
            and param.tied_to is None
            and "says leave as is" not in row.reason
            and param.note in ("", ADDED_TENSOR_NOTE)  # a parameter the adapter knows is not unrecognised
        ):
            by_class.setdefault(param.layer, []).append(param.name)
            if sum(d > 1 for d in param.shape) > 1:
                matrices.add(param.layer)
    if not by_class:
        return
    # a class whose tensors each have one axis above 1 ((1, C, 1): Snake's alpha, a 2-D norm scale)
    # holds per-channel values, not matrices: said, as those need Ones/Zeros rather than a layout
    listed = "; ".join(
        f"{cls} ({len(names)}{'' if cls in matrices else ', one axis above 1 each'}: "
        f"{', '.join(repr(n) for n in names[:3])}{', ...' if len(names) > 3 else ''})"
        for cls, names in by_class.items()
    )
    count = sum(len(n) for n in by_class.values())
    warnings.warn(
        f"reinit: the one spec for all weights left {count} parameter(s) of 2 or more axes untouched, held by "
        f"layers initscale does not recognise: {listed}. If they are weights, give them a rule that says the "
        "layout, e.g. rules={'<class or name>': initscale.Rule(spec, layout='torch.linear')} (a stack of "
        "matrices, such as experts: initscale.Layout(in_axes=..., out_axes=..., batch_axes=...)). If they are "
        "not: tensors added to the activations (position embeddings, class tokens) take a fixed-scale spec "
        "(initscale.Normal(0.02)); per-channel scales and shifts (an activation's alpha, a norm's weight of shape "
        "(1, C)) take initscale.Ones() or initscale.Zeros(), as the layer starts them; None keeps what the model set.",
        UserWarning,
        stacklevel=stacklevel + 2,
    )


def plan(
    params: Sequence[Param],
    rules: Spec | Mapping[str, Spec | Rule | None],
    *,
    include_frozen: bool = False,
    defaults: bool = True,
    dry_run: bool = False,
    stacklevel: int = 1,
    fans: str = "forward",
) -> Plan:
    """Decide, for every parameter, the spec and exact distribution it gets, or why it is kept.

    ``fans`` chooses the fan rule: ``"forward"`` (the default) gives each weight initscale's
    forward-pass fans of its layer (per group, per gate, per projection; a transposed conv's
    fan_in is its in_channels/groups × kernel); ``"native"`` gives it the fans its framework's own
    initializers compute from its shape alone (the layer kind's ``native=True`` rule: torch's
    ``_calculate_fan_in_and_fan_out``, Keras's ``compute_fans``, JAX's ``_compute_fans``), which is
    what the ``torch.*``/``keras.*``/``jax.*`` presets need to reproduce their framework bit for
    bit on grouped, depthwise and transposed convolutions and stacked gates. A layout that has no
    framework rule (a plain :class:`~initscale.fans.Layout`, e.g. a Flax DenseGeneral's or a Keras
    EinsumDense's) keeps its forward fans; each row's ``fans`` says which was used and, where a
    fan-based spec used forward fans under ``fans="native"``, a warning names those parameters.

    A parameter with ``fans_of`` (a bias) whose spec needs fans gets the fans of that parameter
    (its weight), under the same fan rule; one that no rule matches gets its weight's spec when
    that spec is its layer's own default for the bias too (the module docstring).

    Raises before anything is drawn if a rule is invalid, a chosen spec cannot be resolved for a
    parameter's shape (the error names the parameter), a fan-based spec falls on a parameter
    of 2+ axes without a layout (its layer is not recognised: the error names it, its layer and
    the fix, ``initscale.Rule(spec, layout=...)``), or two rules disagree on one tied tensor.
    Warns about patterns that matched nothing and, for one spec for all weights, about
    parameters of 2+ axes it left untouched (``stacklevel`` as for :func:`warnings.warn`,
    counted from the caller of this function).

    A parameter with ``tied_to`` gets a decision that draws nothing and a row that repeats its
    tensor's numbers ("tied to ..., set once"); rules on any of a tensor's names apply to it.
    """
    mode = cast(Literal["forward", "native"], _validate.choice("fans", fans, FANS))
    compiled = compile_rules(rules)
    used: set[str] = set()
    names = {p.name for p in params}
    aliases: dict[str, list[Param]] = {}
    for param in params:
        if param.tied_to is not None and param.tied_to in names:
            aliases.setdefault(param.tied_to, []).append(param)
    decisions: dict[int, Decision] = {}
    rows: dict[int, ReportRow] = {}
    by_name: dict[str, int] = {}
    unknown: list[tuple[Param, CompiledRule]] = []
    # Models repeat the same layer many times: resolve each (layout, shape) and (spec, layout,
    # shape) once.
    fan_layouts_seen: dict[Any, Layout | LayerKind] = {}
    fans_seen: dict[tuple[Any, tuple[int, ...]], Fans | None] = {}
    resolved: dict[tuple[Spec, Any, tuple[int, ...]], tuple[Distribution, Layout | None, Fans | None]] = {}
    names_seen: dict[Layout | LayerKind, str] = {}

    def fan_layout_of(layout: LayoutLike | None) -> Layout | LayerKind | None:
        if layout is None:
            return None
        key = layout if isinstance(layout, str) else id(layout)
        if key not in fan_layouts_seen:
            fan_layouts_seen[key] = _fan_layout(layout, mode)
        return fan_layouts_seen[key]

    # Each tensor's rule first (a bias may follow the spec its weight gets), then the decisions.
    params_by_name = {p.name: p for p in params}
    kept = rules if isinstance(rules, _KeptRules) else None
    matches: dict[int, tuple[CompiledRule, Param] | None] = {}
    for index, param in enumerate(params):
        if not (param.tied_to is not None and param.tied_to in names):
            matches[index] = _match([param, *aliases.get(param.name, ())], compiled, used, kept)
    index_of = {params[i].name: i for i in matches}

    def spec_of(name: str) -> Spec | None:
        matched = matches[index_of[name]]
        return _default(params_by_name[name], defaults)[0] if matched is None else matched[0].spec

    for index, param in enumerate(params):
        if index not in matches:
            continue  # a tied name: its row comes from the tensor's first name, below
        by_name[param.name] = index
        matched = matches[index]
        chosen: CompiledRule | None = None
        if matched is None:
            spec, reason = _default(param, defaults)
        else:
            chosen, member = matched
            spec = chosen.spec
            reason = f"{chosen} says leave as is" if spec is None else str(chosen)
            if member is not param:
                reason += f" (on its tied name {member.name!r})"
            if chosen.layout is not None or member is not param:  # the layout of what the rule matched
                param = dataclasses.replace(
                    param, layout=chosen.layout or member.layout, guessed=chosen.layout is None and member.guessed
                )
        source = params_by_name.get(param.fans_of) if param.fans_of is not None else None
        if source is not None and source.name not in index_of:
            source = None
        if source is not None and matched is None and _covers_bias(spec_of(source.name), source):
            spec, reason = spec_of(source.name), "as its weight: the layer's own default covers its bias"
        fan_layout = fan_layout_of(param.layout)
        shape_key = (fan_layout, param.shape)
        if shape_key not in fans_seen:
            fans_seen[shape_key] = _fans(param, fan_layout)
        param_fans = fans_seen[shape_key]
        dist: Distribution | None = None
        layout: Layout | None = None
        if spec is not None and param.frozen and not include_frozen:
            spec, reason = None, "frozen: not trainable; pass include_frozen=True to include it"
        if (
            spec is not None
            and fan_layout is None
            and source is None
            and not spec.fixed_scale
            and len(param.shape) >= 2
        ):
            assert chosen is not None  # the defaults give fixed-scale specs only
            unknown.append((param, chosen))
            spec = None
        if spec is not None and source is not None and not spec.fixed_scale:
            fan_layout = fan_layout_of(source.layout)  # the weight's fans, as torch's reset_parameters
            dist, param_fans = _from_weight(param, source, spec, fan_layout)
            reason += f"; fans of {source.name!r}"
        elif spec is not None:
            spec_key = (spec, fan_layout, param.shape)
            if spec_key not in resolved:
                resolved[spec_key] = _resolve(param, spec, fan_layout)
            dist, layout, param_fans = resolved[spec_key]
        padding = None
        if dist is not None and param.padding_idx is not None:
            if chosen is not None and chosen.padding == "draw":
                reason += f"; padding row {param.padding_idx} drawn (padding='draw')"
            else:
                padding = param.padding_idx
                reason += f"; padding row {padding} kept at zero"
        decisions[index] = Decision(param, dist, layout, padding)
        if fan_layout is not None and fan_layout not in names_seen:
            names_seen[fan_layout] = str(fan_layout)
        rows[index] = ReportRow(
            name=param.name,
            shape=param.shape,
            layer=param.layer,
            layout=None if fan_layout is None else names_seen[fan_layout],
            fan_in=None if param_fans is None else param_fans.fan_in,
            fan_out=None if param_fans is None else param_fans.fan_out,
            spec=spec,
            std=None if dist is None else dist.std,
            touched=dist is not None,
            reason=reason,
            guessed=param.guessed and fan_layout is not None,
            fans=None if fans is None or fan_layout is None else _fans_mode(fan_layout),
        )
    if unknown:
        raise _unknown_layout_error(unknown)
    for index, param in enumerate(params):
        if index in rows:
            continue
        assert param.tied_to is not None
        first = rows[by_name[param.tied_to]]
        how = ", set once" if first.touched else f"; {first.reason}"
        rows[index] = dataclasses.replace(
            first, name=param.name, layer=param.layer, tied_to=param.tied_to, reason=f"tied to {param.tied_to!r}{how}"
        )
        decisions[index] = Decision(param, None, None)
    ordered_rows = tuple(rows[i] for i in range(len(params)))
    if mode == "native":
        kept_forward = [
            r.name
            for r in ordered_rows
            if r.fans == "forward" and r.touched and r.spec is not None and not r.spec.fixed_scale
        ]
        if kept_forward:
            shown = ", ".join(repr(n) for n in kept_forward[:5]) + (
                f" and {len(kept_forward) - 5} more" if len(kept_forward) > 5 else ""
            )
            warnings.warn(
                f"reinit: fans='native', but the layouts of {len(kept_forward)} parameter(s) have no "
                f"framework fan rule, so their forward fans were used: {shown}.",
                UserWarning,
                stacklevel=stacklevel + 1,
            )
    unused = tuple(r.pattern for r in compiled if r.pattern_type != "weights" and r.pattern not in used)
    shadowed = [r.pattern for r in compiled if r.pattern in unused and any(r.matches(p) for p in params)]
    unmatched = [p for p in unused if p not in shadowed]
    if unmatched:
        listed = "; ".join(f"{p!r}{_suggest(p, params)}" for p in unmatched)
        warnings.warn(
            f"reinit: these rule patterns matched no parameter: {listed}.", UserWarning, stacklevel=stacklevel + 1
        )
    if shadowed:
        listed = ", ".join(repr(p) for p in shadowed)
        warnings.warn(
            f"reinit: every parameter that {listed} matches is taken by an earlier rule (the first "
            "match wins); move the more specific pattern first.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
    if len(compiled) == 1 and compiled[0].pattern_type == "weights":
        _warn_untouched(ordered_rows, params, stacklevel)
    return Plan(tuple(decisions[i] for i in range(len(params))), Report(ordered_rows, dry_run, unused, mode))


# --- the one reinit: walk -> Param -> plan -> check -> draw -> write -----------------------------
#
# Each adapter's reinit entry (torch ``reinit_``/``apply_fn``, Keras ``reinit``, JAX ``reinit``)
# builds a Backend -- its walk and its write -- and calls :func:`run`, which runs the steps in
# this order for every framework. What differs between frameworks is only in the Backend.

H = TypeVar("H")  # an adapter's handle to one tensor: a torch tensor, a Keras variable, a JAX leaf


@dataclass(frozen=True)
class Target(Generic[H]):
    """A parameter that the plan gives values (``decision.dist`` is not None): its decision, the
    adapter's handle to its tensor and its position in the walk."""

    decision: Decision
    handle: H
    index: int

    @property
    def name(self) -> str:
        """The parameter's qualified name."""
        return self.decision.param.name


@dataclass(frozen=True)
class Write:
    """One step of the write, over the parameters ``names``: ``draw()`` computes their values and,
    with ``store`` None, writes them in place (torch); otherwise ``store(draw())`` writes what it
    computed (Keras ``assign``; JAX, a new leaf), and :func:`run` runs every such ``draw`` before
    the first ``store``, so that a failing draw changes nothing."""

    names: tuple[str, ...]
    draw: Callable[[], Any]
    store: Callable[[Any], None] | None = None


class Backend(Protocol[H]):
    """What an adapter supplies to :func:`run`: its walk and its write.

    ``entry`` names the adapter's function in messages (``"reinit_"``); ``model`` is what the
    user passed (for a hook that turns a model-dependent rule set into concrete rules)."""

    @property
    def entry(self) -> str: ...

    @property
    def model(self) -> Any: ...

    def walk(self) -> Sequence[tuple[Param, H]]:
        """Every parameter once per name, in the model's order, with a handle to its tensor:
        role, layout, owner classes and ties (``Param.tied_to``) say what it is."""
        ...

    def notes(self, report: Report) -> Sequence[str]:
        """Warnings about the plan that only the adapter can give (JAX: layouts guessed from
        names); :func:`run` warns them at the user's call."""
        ...

    def constant_value(self, handle: H) -> float | None:
        """The one value every entry of this tensor holds, if it has two or more entries that are
        all equal (None otherwise, or where reading it would cost a transfer the adapter avoids):
        :func:`run` warns before the defaults zero a bias a model set to a nonzero constant."""
        ...

    def check(self, targets: Sequence[Target[H]], dry_run: bool) -> None:
        """Raise, naming the parameter and the fix, if a target cannot be written (dtype,
        device, memory): called before anything is drawn, in a dry run too."""
        ...

    def writes(self, targets: Sequence[Target[H]]) -> Sequence[Write]:
        """Every write, in draw order (the adapter groups small tensors here, with
        :func:`bounded_groups`). May raise for a problem that only a real write has; nothing is
        written yet."""
        ...

    def writing(self) -> contextlib.AbstractContextManager[Any]:
        """The context every write runs in (torch: ``torch.no_grad()``)."""
        ...

    def finish(self, targets: Sequence[Target[H]]) -> None:
        """After every write (torch: embedding padding rows back to zero)."""
        ...


class PartialWriteError(RuntimeError):
    """A write failed midway (a device error, ...) after every check passed: ``written`` lists the
    parameters already re-initialized, ``failed`` those being written when it happened (possibly
    partly written), ``unchanged`` the rest, which are as they were."""

    def __init__(self, message: str, written: Sequence[str], failed: Sequence[str], unchanged: Sequence[str]) -> None:
        super().__init__(message)
        self.written, self.failed, self.unchanged = tuple(written), tuple(failed), tuple(unchanged)


def _listed(names: Sequence[str], most: int = 40) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f", ... and {len(names) - most} more" if len(names) > most else "") if names else "none"


def refuse(problems: Sequence[tuple[type[Exception], str]]) -> None:
    """Raise one error naming every problem found before the first write (the type of the
    first); nothing when there is none."""
    if problems:
        lead = "" if len(problems) == 1 else f"{len(problems)} parameters cannot be written; nothing was changed.\n"
        raise problems[0][0]("\n".join([lead + problems[0][1], *(message for _, message in problems[1:])]))


K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def bounded_groups(
    items: Sequence[tuple[K, int, T]], *, group_bytes: int, direct_bytes: int
) -> list[tuple[K, bool, list[T]]]:
    """Small tensors drawn together, each draw bounded: ``items`` are (key, bytes, item) in draw
    order, and tensors of one key (distribution, dtype, device) are drawn as one flat buffer split
    into views (one kernel call per buffer instead of one per tensor). Returns (key, direct,
    members) in draw order: keys in order of first appearance; a key whose items total at most
    ``group_bytes`` is one buffer; in a larger one each item of ``direct_bytes`` or more is drawn
    straight into its own memory (``direct``) and the others into buffers of at most
    ``group_bytes``, in order.

    Example:
        >>> bounded_groups([("n", 4, "a"), ("u", 4, "b"), ("n", 8, "c"), ("n", 4, "d")],
        ...                group_bytes=10, direct_bytes=8)
        [('n', True, ['c']), ('n', False, ['a', 'd']), ('u', False, ['b'])]
    """
    groups: dict[K, list[tuple[int, T]]] = {}
    for key, size, item in items:
        groups.setdefault(key, []).append((size, item))
    out: list[tuple[K, bool, list[T]]] = []
    for key, members in groups.items():
        if sum(size for size, _ in members) <= group_bytes:
            out.append((key, False, [item for _, item in members]))
            continue
        pending: list[tuple[int, T]] = []
        for size, item in members:
            if size >= direct_bytes:
                out.append((key, True, [item]))
                continue
            if sum(s for s, _ in pending) + size > group_bytes:
                out.append((key, False, [i for _, i in pending]))
                pending = []
            pending.append((size, item))
        if pending:
            out.append((key, False, [i for _, i in pending]))
    return out


def _write_all(backend: Backend[Any], writes: Sequence[Write], names: Sequence[str]) -> None:
    """Every staged draw, then every write in order; a write that fails raises
    :class:`PartialWriteError`, naming what was written, what may be partly written and what is
    unchanged (a failing staged draw raises as it is: nothing was written)."""
    staged = [w.draw() if w.store is not None else None for w in writes]
    written: list[str] = []
    with backend.writing():
        for write, values in zip(writes, staged, strict=True):
            try:
                if write.store is None:
                    write.draw()
                else:
                    write.store(values)
            except Exception as err:
                done = set(written) | set(write.names)
                rest = [n for n in names if n not in done]
                raise PartialWriteError(
                    f"{backend.entry} failed while writing {_listed(write.names)} ({type(err).__name__}: {err}). "
                    f"Every check had passed, so this is a runtime failure (device, memory). Already re-initialized "
                    f"({len(written)}): {_listed(written)}. Possibly partly written: {_listed(write.names)}. "
                    f"Unchanged ({len(rest)}): {_listed(rest)}.",
                    written,
                    write.names,
                    rest,
                ) from err
            written.extend(write.names)


def run(
    backend: Backend[Any],
    rules: Spec | Mapping[str, Spec | Rule | None],
    *,
    include_frozen: bool = False,
    defaults: bool = True,
    dry_run: bool = False,
    fans: str = "forward",
    stacklevel: int = 1,
) -> Report:
    """Re-initialize a model through its adapter's ``backend``, in one order for every framework:

    1. the walk: one :class:`Param` (and a handle) per parameter name;
    2. the rules: a recipe (anything with ``rules_for``) becomes concrete rules for the model
       (:func:`model_rules`; the backend's ``module`` if it has one, such as a Flax module,
       else ``backend.model``), given the walked Params so it does not walk again;
    3. :func:`plan`: every rule, layout and distribution resolved, the report built, tied
       tensors given one decision, patterns that match nothing and weights the one spec leaves
       untouched warned about;
    4. the backend's notes warned, and its ``check`` of every target, so that a predictable
       failure raises before anything is drawn;
    5. a dry run stops here, with the report;
    6. the backend's ``writes`` (bounded groups of small tensors), every staged draw, then every
       write in order; a write failing midway raises :class:`PartialWriteError`; then the
       backend's ``finish``.

    ``stacklevel`` as for :func:`warnings.warn`, counted from the caller of this function.
    Returns the :class:`Report`.
    """
    found = backend.walk()
    # Rules that depend on the model (a recipe) become concrete rules here, before plan()
    # compiles them: the one place for that hook, for every adapter.
    owner = getattr(backend, "module", None)
    rules = model_rules(rules, backend.model if owner is None else owner, [p for p, _ in found])
    decided = plan(
        [p for p, _ in found],
        rules,
        include_frozen=include_frozen,
        defaults=defaults,
        dry_run=dry_run,
        stacklevel=stacklevel + 1,
        fans=fans,
    )
    for message in (*backend.notes(decided.report), *packed_projection_notes([p for p, _ in found], decided)):
        warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
    targets = [
        Target(d, handle, i)
        for i, (d, (_, handle)) in enumerate(zip(decided.decisions, found, strict=True))
        if d.dist is not None
    ]
    _warn_overwritten_constants(backend, targets, decided.report, stacklevel + 1)
    _refuse_interleaved_orthogonal(targets)
    backend.check(targets, dry_run)
    if dry_run:
        return decided.report
    _write_all(backend, backend.writes(targets), [t.name for t in targets])
    backend.finish(targets)
    return decided.report
