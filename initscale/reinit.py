"""Rules and reports for re-initializing a whole model, shared by the torch, Keras and JAX helpers.

An adapter's helper (``initscale.torch.reinit_``, ``initscale.keras.reinit``,
``initscale.jax.reinit``) walks its model and describes each parameter as a :class:`Param`: its
qualified name, shape, the class names of the layer that owns it, its *role* in that layer and
the layout that gives its forward fans. This module decides what each parameter gets and why,
computes every distribution before anything is drawn (so a bad rule or shape fails with nothing
changed), and builds the :class:`Report`.

**Rules** are either one spec, applied to the main weights of the supported layers (dense,
convolutions, transposed convolutions, recurrent kernels, attention projections), or an ordered
mapping from pattern to spec where the first matching pattern wins:

- an identifier such as ``"Conv2d"`` or ``"LSTM"`` matches the parameters of a layer whose
  class, or one of whose base classes, has that name; it targets the layer's weights (every
  parameter but its biases). An identifier also matches a parameter whose whole name it is.
- anything else is a glob on the qualified parameter name, with :mod:`fnmatch` rules and
  case-sensitive: ``"encoder.*.weight"``, ``"*.bias"``, ``"*/kernel"``; ``*`` crosses ``.``
  and ``/``.
- the value ``None`` leaves the matched parameters as they are; an :class:`initscale.Rule`
  (``Rule(spec, layout="keras.dense")``) also says the layout of the weights it matches, for
  layers the adapter does not recognise, and whether an embedding's padding row is drawn.

A fan-based spec (variance scaling, orthogonal) never falls on a parameter of 2 or more axes
without a layout: :func:`plan` raises, naming it, its layer and the fix. Tied parameters (one
tensor under several names) are set once, under the first name; the others get rows saying so.

**Defaults**, after the rules (``defaults=False`` turns them off): biases → ``Zeros()``;
normalization scales (LayerNorm, BatchNorm, GroupNorm, RMSNorm ``weight``/``gamma``/``scale``) →
``Ones()`` and their offsets → ``Zeros()``; embeddings and anything else unmatched → left as they
are, and listed as untouched in the report.

Example:
    >>> import initscale
    >>> from initscale.reinit import Param, plan
    >>> params = [Param("weight", (64, 32), ("Linear",), "weight", "torch"),
    ...           Param("bias", (64,), ("Linear",), "bias", None)]
    >>> print(plan(params, initscale.presets.get("he_normal")).report)
    name    shape     layer   layout  fan_in  fan_out  spec                        std   status
    weight  (64, 32)  Linear  torch   32      64       VarianceScaling(scale=2.0)  0.25  set (one spec for all weights)
    bias    (64,)     Linear  -       -       -        Zeros()                     0     set (default: biases -> zeros)
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from .distributions import Distribution
from .fans import Fans, LayerKind, Layout, LayoutLike, resolve
from .fans import names as layout_names
from .specs import Ones, Spec, Zeros

__all__ = [
    "ROLES",
    "CompiledRule",
    "Decision",
    "Param",
    "Plan",
    "Report",
    "ReportRow",
    "Role",
    "Rule",
    "compile_rules",
    "plan",
]

Role = Literal["weight", "bias", "norm_scale", "norm_offset", "embedding", "other"]
ROLES: tuple[str, ...] = ("bias", "embedding", "norm_offset", "norm_scale", "other", "weight")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]!/:\-]+\Z")
_ALL_WEIGHTS = "one spec for all weights"


@dataclass(frozen=True)
class Param:
    """One parameter as an adapter sees it.

    Args:
        name: qualified name (``"encoder.0.weight"``, ``"dense/kernel"``).
        shape: the global shape (for a sharded parameter, the whole tensor's shape).
        owner_classes: class names of the owning layer, most derived first (its MRO).
        role: ``"weight"`` (main weight of a supported layer), ``"bias"``, ``"norm_scale"``,
            ``"norm_offset"``, ``"embedding"`` or ``"other"``.
        layout: the layout or layer kind giving this parameter's forward fans, None if it has
            none (biases, norm parameters).
        frozen: not trainable (``requires_grad=False``, a non-trainable Keras variable).
        buffer: a buffer or other non-parameter state, matched only by name patterns.
        note: why the defaults leave it alone, shown in the report when nothing else touches it.
        guessed: the layout was guessed from names (the parameter's, its layer's) by the
            framework's convention, not read from the layer's class and attributes.
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

    Example:
        >>> import initscale
        >>> rule = initscale.Rule(initscale.presets.get("he_normal"), layout="keras.dense")
        >>> rule.layout
        'keras.dense'
    """

    spec: Spec | None
    layout: LayoutLike | None = None
    padding: Literal["draw", "zero"] = "zero"

    def __post_init__(self) -> None:
        if self.spec is not None and not isinstance(self.spec, Spec):
            hint = f" For a preset, write initscale.presets.get({self.spec!r})." if isinstance(self.spec, str) else ""
            raise TypeError(f"Argument `spec` of initscale.Rule must be an initscale spec, or None to leave the "
                            f"matched parameters as they are. Received: spec={self.spec!r}.{hint}")
        if self.layout is not None:
            _check_layout(self.layout)
        if self.padding not in _PADDING:
            raise ValueError(f"Argument `padding` of initscale.Rule must be one of 'draw', 'zero'. "
                             f"Received: padding={self.padding!r}.")


def _check_layout(layout: Any) -> None:
    """Raise naming the layout and the valid names (the closest first) if ``layout`` is not one."""
    if isinstance(layout, str):
        name, known = layout.split(":", 1)[0], layout_names()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"Argument `layout` of initscale.Rule must be a layout name, one of "
                             f"{', '.join(repr(n) for n in known)} (with parameters as in "
                             f"'torch.conv:groups=4'), a Layout or a LayerKind. Received: layout={layout!r}.{hint}")
    try:
        resolve(layout)
    except (TypeError, ValueError) as err:
        raise type(err)(f"initscale.Rule: {err}") from err


@dataclass(frozen=True)
class CompiledRule:
    """One compiled rule: ``kind`` is ``"class"`` (identifier), ``"glob"`` or ``"weights"``
    (a single spec given for the whole model); ``layout`` and ``padding`` as in :class:`Rule`."""

    pattern: str
    spec: Spec | None
    kind: Literal["class", "glob", "weights"]
    layout: LayoutLike | None = None
    padding: Literal["draw", "zero"] = "zero"

    def matches(self, param: Param) -> bool:
        """Whether this rule applies to ``param``."""
        if param.buffer:  # buffers only ever by name
            return self.kind != "weights" and fnmatch.fnmatchcase(param.name, self.pattern)
        if self.kind == "weights":
            return param.role == "weight"
        if self.kind == "class":
            if param.name == self.pattern:
                return True
            return self.pattern in param.owner_classes and param.role not in ("bias", "norm_offset")
        return fnmatch.fnmatchcase(param.name, self.pattern)

    def __str__(self) -> str:
        return _ALL_WEIGHTS if self.kind == "weights" else f"rule {self.pattern!r}"


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


def compile_rules(rules: Spec | Mapping[str, Spec | Rule | None]) -> tuple[CompiledRule, ...]:
    """Validate ``rules`` (one spec, or an ordered mapping pattern -> spec, :class:`Rule` or None)."""
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
        kind = _check_pattern(pattern)
        if isinstance(spec, Rule):
            compiled.append(CompiledRule(pattern, spec.spec, kind, spec.layout, spec.padding))
            continue
        if spec is not None and not isinstance(spec, Spec):
            hint = (f" For a preset, write initscale.presets.get({spec!r})." if isinstance(spec, str) else "")
            raise TypeError(
                f"The rule for pattern {pattern!r} must be an initscale spec, an initscale.Rule(spec, "
                f"layout=...), or None to leave the matched parameters as they are. Received: {spec!r}.{hint}"
            )
        compiled.append(CompiledRule(pattern, spec, kind))
    return tuple(compiled)


@dataclass(frozen=True)
class ReportRow:
    """What happened to one parameter. ``guessed``: its layout was guessed from names, not read
    from its layer (marked ``?`` in the table). ``tied_to``: this name is another name of that
    parameter's tensor (tied weights), which was set once, under that name; the row repeats its
    numbers."""

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


@dataclass(frozen=True)
class Report(Sequence[ReportRow]):
    """One row per parameter: name, shape, layer, layout, fans, spec, std applied, and whether it
    was touched or why not. ``print(report)`` gives an aligned table; :meth:`to_dicts` a list of
    dicts. ``dry_run`` says that nothing was written. A layout guessed from names rather than read
    from the layer is marked ``?`` and explained under the table."""

    rows: tuple[ReportRow, ...]
    dry_run: bool = False
    unused_patterns: tuple[str, ...] = ()

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
    def guessed(self) -> tuple[ReportRow, ...]:
        """Rows whose layout (and so fans) was guessed from names, not read from the layer."""
        return tuple(r for r in self.rows if r.guessed)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as plain dicts."""
        return [r.to_dict() for r in self.rows]

    def __str__(self) -> str:
        header = ("name", "shape", "layer", "layout", "fan_in", "fan_out", "spec", "std", "status")
        verb = "would set" if self.dry_run else "set"
        lines = [header] + [
            (r.name, str(r.shape), r.layer, (r.layout or "-") + ("?" if r.guessed else ""),
             _number(r.fan_in), _number(r.fan_out),
             _short(r.spec), _number(r.std), f"{verb} ({r.reason})" if r.touched else f"kept ({r.reason})")
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        table = "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
            for line in lines
        )
        if any(r.guessed for r in self.rows):
            table += "\n? layout guessed from names by the framework's convention, not read from the layer"
        return table


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


def _fans(param: Param, rule: Layout | LayerKind | None) -> Fans | None:
    if rule is None:
        return None
    try:
        return rule.fans(param.shape)
    except ValueError:
        return None


def _match(members: Sequence[Param], rules: Sequence[CompiledRule],
           used: set[str]) -> tuple[CompiledRule, Param] | None:
    """The rule for one tensor, known under the names ``members`` (more than one when tied), and
    the name it matched: each name's first matching rule; two that disagree are an error. The
    one spec for all weights skips a tied tensor that is also an embedding (it stays one)."""
    embedding = len(members) > 1 and any(m.role == "embedding" for m in members)
    found: list[tuple[CompiledRule, Param]] = []
    for member in members:
        for rule in rules:
            if rule.kind == "weights" and embedding:
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
    if param.role in ("bias", "norm_offset"):
        return Zeros(), "default: biases -> zeros" if param.role == "bias" else "default: norm offset -> zeros"
    if param.role == "norm_scale" and param.unit_offset:
        return Zeros(), "default: norm scale used as 1 + weight -> zeros"
    if param.role == "norm_scale":
        return Ones(), "default: norm scale -> ones"
    if param.role == "embedding":
        return None, "embeddings are kept unless a rule names them"
    return None, f"no rule matched; {param.note}" if param.note else "no rule matched"


def _choose(param: Param, rules: Sequence[CompiledRule], used: set[str], defaults: bool) -> tuple[Spec | None, str]:
    matched = _match([param], rules, used)
    if matched is None:
        return _default(param, defaults)
    rule = matched[0]
    return (None, f"{rule} says leave as is") if rule.spec is None else (rule.spec, str(rule))


def _resolve(
    param: Param, spec: Spec, rule: Layout | LayerKind | None
) -> tuple[Distribution, Layout | None, Fans | None]:
    where = f"Parameter {param.name!r} (shape {param.shape}, in {param.layer})"
    if spec.fixed_scale:
        return spec.resolve(None), None, _fans(param, rule)
    if rule is None:
        raise ValueError(
            f"{where} has no fans, so {spec!r} cannot be scaled for it. Give it a fixed-scale spec "
            "(initscale.Zeros(), initscale.Normal(0.02), ...) or a rule that does not match it."
        )
    try:
        fans = rule.fans(param.shape)
        return spec.resolve(fans), rule.layout(param.shape), fans
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err


def _suggest(pattern: str, params: Sequence[Param]) -> str:
    names = {c for p in params for c in p.owner_classes} | {p.name for p in params}
    close = difflib.get_close_matches(pattern, sorted(names - {pattern}), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _unknown_layout_error(found: Sequence[tuple[Param, CompiledRule]]) -> ValueError:
    lines = [f"  {p.name!r} (shape {p.shape}, in {p.layer}): {rule} gives {_short(rule.spec)}" for p, rule in found]
    param, rule = found[0]
    where = "" if rule.kind == "weights" else f" before {rule}"
    key = param.layer if param.owner_classes else param.name
    return ValueError(
        f"{len(found)} parameter(s) of 2 or more axes are not in a layer that initscale recognises, so it cannot "
        "know which axes are inputs and outputs, and the fan-based spec cannot be scaled for them; nothing was "
        "changed:\n" + "\n".join(lines) + f"\nSay the layout in a rule{where}, e.g. {{{key!r}: "
        f"initscale.Rule({_short(rule.spec)}, layout='torch.linear')}} for an (out, in) weight, layout='keras.dense' "
        "for (in, out) (initscale.layouts.names() lists the layouts; a Layout(in_axes=..., out_axes=...) works "
        "too); or give them a fixed-scale spec (initscale.Normal(0.02), ...), or None to leave them as they are.")


def _warn_untouched(rows: Sequence[ReportRow], params: Sequence[Param], stacklevel: int) -> None:
    """The one spec for all weights left parameters of 2+ axes alone: say so, by owner class."""
    by_class: dict[str, list[str]] = {}
    for row, param in zip(rows, params, strict=True):
        if (not row.touched and len(param.shape) >= 2 and param.role not in ("embedding",) and not param.buffer
                and not param.frozen and param.tied_to is None and "says leave as is" not in row.reason):
            by_class.setdefault(param.layer, []).append(param.name)
    if not by_class:
        return
    listed = "; ".join(f"{cls} ({len(names)}: {', '.join(repr(n) for n in names[:3])}"
                       f"{', ...' if len(names) > 3 else ''})" for cls, names in by_class.items())
    count = sum(len(n) for n in by_class.values())
    warnings.warn(
        f"reinit: the one spec for all weights left {count} parameter(s) of 2 or more axes untouched, held by "
        f"layers initscale does not recognise: {listed}. If they are weights, give them a rule that says the "
        "layout, e.g. rules={'<class or name>': initscale.Rule(spec, layout='torch.linear')}; if they are "
        "not (position embeddings, class tokens), a fixed-scale spec (initscale.Normal(0.02)) or None.",
        UserWarning, stacklevel=stacklevel + 2)


def plan(params: Sequence[Param], rules: Spec | Mapping[str, Spec | Rule | None], *, include_frozen: bool = False,
         defaults: bool = True, dry_run: bool = False, stacklevel: int = 1) -> Plan:
    """Decide, for every parameter, the spec and exact distribution it gets, or why it is kept.

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
    rules_seen: dict[Any, Layout | LayerKind] = {}
    fans_seen: dict[tuple[Any, tuple[int, ...]], Fans | None] = {}
    resolved: dict[tuple[Spec, Any, tuple[int, ...]], tuple[Distribution, Layout | None, Fans | None]] = {}
    names_seen: dict[Layout | LayerKind, str] = {}
    for index, param in enumerate(params):
        if param.tied_to is not None and param.tied_to in names:
            continue  # its row comes from the tensor's first name, below
        by_name[param.name] = index
        matched = _match([param, *aliases.get(param.name, ())], compiled, used)
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
                param = dataclasses.replace(param, layout=chosen.layout or member.layout,
                                            guessed=chosen.layout is None and member.guessed)
        rule = None
        if param.layout is not None:
            key = param.layout if isinstance(param.layout, str) else id(param.layout)
            if key not in rules_seen:
                rules_seen[key] = resolve(param.layout)
            rule = rules_seen[key]
        shape_key = (rule, param.shape)
        if shape_key not in fans_seen:
            fans_seen[shape_key] = _fans(param, rule)
        fans = fans_seen[shape_key]
        dist: Distribution | None = None
        layout: Layout | None = None
        if spec is not None and param.frozen and not include_frozen:
            spec, reason = None, "frozen: not trainable; pass include_frozen=True to include it"
        if spec is not None and rule is None and not spec.fixed_scale and len(param.shape) >= 2:
            assert chosen is not None  # the defaults give fixed-scale specs only
            unknown.append((param, chosen))
            spec = None
        if spec is not None:
            spec_key = (spec, rule, param.shape)
            if spec_key not in resolved:
                resolved[spec_key] = _resolve(param, spec, rule)
            dist, layout, fans = resolved[spec_key]
        padding = None
        if dist is not None and param.padding_idx is not None:
            if chosen is not None and chosen.padding == "draw":
                reason += f"; padding row {param.padding_idx} drawn (padding='draw')"
            else:
                padding = param.padding_idx
                reason += f"; padding row {padding} kept at zero"
        decisions[index] = Decision(param, dist, layout, padding)
        if rule is not None and rule not in names_seen:
            names_seen[rule] = str(rule)
        rows[index] = ReportRow(
            name=param.name, shape=param.shape, layer=param.layer,
            layout=None if rule is None else names_seen[rule],
            fan_in=None if fans is None else fans.fan_in, fan_out=None if fans is None else fans.fan_out,
            spec=spec, std=None if dist is None else dist.std, touched=dist is not None, reason=reason,
            guessed=param.guessed and rule is not None,
        )
    if unknown:
        raise _unknown_layout_error(unknown)
    for index, param in enumerate(params):
        if index in rows:
            continue
        assert param.tied_to is not None
        first = rows[by_name[param.tied_to]]
        how = ", set once" if first.touched else f"; {first.reason}"
        rows[index] = dataclasses.replace(first, name=param.name, layer=param.layer, tied_to=param.tied_to,
                                          reason=f"tied to {param.tied_to!r}{how}")
        decisions[index] = Decision(param, None, None)
    ordered_rows = tuple(rows[i] for i in range(len(params)))
    unused = tuple(r.pattern for r in compiled if r.kind != "weights" and r.pattern not in used)
    shadowed = [r.pattern for r in compiled if r.pattern in unused and any(r.matches(p) for p in params)]
    unmatched = [p for p in unused if p not in shadowed]
    if unmatched:
        listed = "; ".join(f"{p!r}{_suggest(p, params)}" for p in unmatched)
        warnings.warn(f"reinit: these rule patterns matched no parameter: {listed}.", UserWarning,
                      stacklevel=stacklevel + 1)
    if shadowed:
        listed = ", ".join(repr(p) for p in shadowed)
        warnings.warn(f"reinit: every parameter that {listed} matches is taken by an earlier rule (the first "
                      "match wins); move the more specific pattern first.", UserWarning, stacklevel=stacklevel + 1)
    if len(compiled) == 1 and compiled[0].kind == "weights":
        _warn_untouched(ordered_rows, params, stacklevel)
    return Plan(tuple(decisions[i] for i in range(len(params))), Report(ordered_rows, dry_run, unused))
