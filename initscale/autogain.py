"""Activation-aware gains from the model's own graph: ``initscale.auto``.

``initscale.torch.reinit_(model, initscale.auto(example_inputs=(x,)))`` (and Keras's
``initscale.keras.reinit(model, initscale.auto(x))``, Flax linen's
``initscale.jax.reinit(variables, initscale.auto(x), key, module=...)``) gives every weight the
fixed-point gain (:func:`initscale.gains.fixed_point`) of the activation that follows its layer,
for the second moment that actually arrives at its input. The adapter runs the model once on the
example inputs and records its graph (which op follows which layer: ``adapters/_torch_auto.py``,
``_keras_auto.py``, ``_jax_auto.py``); this module holds the framework-free part: the rows, the
gain of each layer, the propagation of second moments and the stability report
(:meth:`AutoPlan.stability`: χ^L and the verdict per activation).

For a layer of fan-in n whose input has second moment m (predicted along the graph from the
data's own, measured on the example inputs) and whose output goes to

- an activation f: the pre-activation std a solving E[f(aZ)²] = q (a = g·√q with g the fixed-point
  gain of f at q; Poole et al. 2016, Schoenholz et al. 2017), so the weight std is a/√(m·n): gain
  a/√m. Its output's second moment is then q, whatever m was: the first layer, whose input is the
  data, starts on the fixed point instead of m/q off it. χ = g²·E[f'(aZ)²] is the fixed point's.
- a normalization layer or the model's output: std 1/√n (gain 1), as the issue's rule says: the norm
  rescales anyway, and the output keeps the input's scale.
- anything else (another layer, a residual addition, an attention product): gain √(q/m), which
  holds the second moment at q (a linear "activation").

Second moments propagate (zero-mean, independent terms): a layer multiplies by gain², an
activation maps m to E[f(√m·Z)²] (quadrature), a sum adds, a product of tensors multiplies, a
scalar factor c multiplies by c², a concatenation averages by size, a norm gives the mean square of
its scale, ReLU of a non-negative input is the identity; an op without a rule here takes the ratio
of mean squares measured on the example pass (named in the row's note, never silent).

Residual sums y = s + b(x): with every branch held at q, L sums grow the stream's second moment
to about (L+1)·q. A sum is residual when its skip s is an ancestor of its branch b in the graph
(an identity skip), or reaches a common ancestor through layers, norms and shape ops only (a
projection shortcut, as ResNet's downsampling) while the branch does not; either way with a layer
or norm on the branch (x + PositionEmbedding(x), which reads only x's shape, is none). The branch's scale is
the last layer or norm on it (followed by shape ops and scalar factors only, its output consumed
by nothing else): the norm's scale γ when the branch ends in a norm, else the layer's weight.
``residual=``

- ``"zero"`` (default): that scale is 0, so the branch is 0 at init and every sum is exactly its
  skip: the stream holds q through any depth. torchvision's ``zero_init_residual`` (the last BN's
  γ; Goyal et al. 2017), Fixup's zero last layer (Zhang et al. 2019), SkipInit (De & Smith 2020).
- ``"depth"``: that scale times 1/√L (L residual sums found): each branch adds q/L, so the stream
  ends near 2q for pre-norm blocks (bounded, not held). Hayou et al. 2021 ("Stable ResNet"), GPT-2's
  1/√(2·n_layer) on its residual projections (Radford et al. 2019).
- ``"none"``: branches as planned (each at q): the sums grow with depth.

Every residual sum is a row of :attr:`AutoPlan.residuals` (the skip, the branch, what was scaled and by
what, and the predicted second moments); a branch with nothing to scale (it ends in an op such as
attention's fused function) is named there and in the notes, never silently left.

Example:
    >>> from initscale.autogain import layer_gain
    >>> g = layer_gain("activation", "relu", m_in=4.0, q=1.0)   # data of second moment 4 into ReLU
    >>> round(g.gain, 6), round(g.m_out, 6)                   # √2/√4: the output is at q = 1
    (0.707107, 1.0)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from . import _validate, gains
from .specs import VarianceScaling

__all__ = [
    "OP_PROPAGATIONS",
    "RESIDUAL",
    "Auto",
    "AutoPlan",
    "AutoRow",
    "LayerGain",
    "Propagated",
    "ResidualRow",
    "StabilityRow",
    "activation_moment",
    "auto",
    "follow",
    "layer_gain",
    "propagate",
    "residual_sums",
]

Follower = Literal["activation", "norm", "output", "linear"]
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")
RESIDUAL = ("depth", "none", "zero")  # the residual rules of auto (module docstring)


@dataclass(frozen=True)
class LayerGain:
    """The std gain of one layer (weights of std ``gain``/√fan_in), its output's second moment
    (after the activation, if any), χ and verdict (None where no activation follows), and a note."""

    gain: float
    m_out: float
    chi: float | None
    verdict: str | None
    note: str


def activation_moment(activation: str | Callable[[Any], Any], m_in: float, param: float | None = None) -> float:
    """E[f(√m·Z)²], Z ~ N(0, 1): the second moment after ``activation`` (a name of
    :data:`initscale.gains.ACTIVATIONS` with its ``param``, or a NumPy-vectorized callable, whose
    ``derivative`` attribute, if any, is its exact f') of an input of second moment m."""
    if not m_in > 0.0:
        return 0.0
    derivative = getattr(activation, "derivative", None) if callable(activation) else None
    return gains.stability(activation, 1.0, 1, q=m_in, param=param, derivative=derivative).q_final


def layer_gain(
    follower: Follower,
    activation: str | Callable[[Any], Any] | None,
    m_in: float,
    q: float = 1.0,
    param: float | None = None,
) -> LayerGain:
    """The gain of a layer whose input has second moment ``m_in`` and whose output goes to ``follower``."""
    if not (math.isfinite(m_in) and m_in > 0.0):
        raise ValueError(
            f"auto: the predicted second moment at a layer's input is {m_in!r}; a gain needs a finite "
            "positive one (is the input all zeros?)."
        )
    if follower in ("norm", "output"):
        return LayerGain(
            1.0, m_in, None, None, f"feeds {'a norm' if follower == 'norm' else 'the output'}: std 1/sqrt(fan_in)"
        )
    if follower == "linear" or activation is None:
        return LayerGain(math.sqrt(q / m_in), q, 1.0, gains.verdict(1.0), "no activation follows: holds q")
    derivative = getattr(activation, "derivative", None) if callable(activation) else None
    fp = gains.fixed_point(activation, q, param, derivative=derivative)
    a = fp.gain * math.sqrt(fp.q_star)
    return LayerGain(a / math.sqrt(m_in), fp.q_star, fp.chi, fp.verdict, fp.note)


# --- the graph walk shared by the adapters' recorders -------------------------------------------
#
# An adapter records one forward pass as events (objects with ``category`` in "layer", "norm", "act",
# "op"; ``name``; node ids ``inputs``/``outputs``; ``scalars``, ``activation`` ((gains name, param)
# or a NumPy callable), ``label`` and, for concatenations, ``sizes``) and the mean square measured
# at every node. How each op propagates is the adapter's: ``op_propagation(event)`` gives one of
# OP_PROPAGATIONS, or None for an op measured on the pass.

OP_PROPAGATIONS = ("shape", "sum", "product", "quotient", "cat", "average")


def follow(
    events: Sequence[Any],
    node: int,
    outputs: set[int],
    start: int,
    op_propagation: Callable[[Any], str | None],
    op_label: Callable[[Any], str],
) -> tuple[Follower, Any, str]:
    """What the first consumer of ``node`` after event ``start`` is, through shape ops:
    ``(follower, activation, label)``; an output nothing consumes is the model's output or "unused"."""
    frontier = {node}
    for event in events[start + 1 :]:
        if not frontier.intersection(event.inputs):
            continue
        if event.category == "act":
            return "activation", event.activation, event.label
        if event.category == "norm":
            return "norm", None, "norm"
        if event.category == "op" and op_propagation(event) == "shape":
            frontier.update(event.outputs)
            continue
        return "linear", None, op_label(event)
    return ("output", None, "output") if frontier & outputs else ("linear", None, "unused")


@dataclass(frozen=True)
class ResidualRow:
    """One residual sum y = skip + branch: its order among the model's residual sums (1-based) and op,
    the skip (``"identity"`` or ``"projection through ..."``), the layers and norms of the branch,
    the parameter that scales the branch (a layer's weight or a norm's scale; None where the branch
    has none, ``note`` says why), the factor on the branch (0 for ``residual="zero"``, 1/√L for
    ``"depth"``, 1 for ``"none"``), the residual mode, and the predicted second moments of skip, branch and sum."""

    index: int
    op: str
    skip: str
    branch: str
    target: str | None
    target_category: str | None  # "layer" or "norm"
    scale: float
    residual: str
    m_skip: float
    m_branch: float
    m_sum: float
    note: str = ""


@dataclass(frozen=True)
class _Residual:
    """A residual sum found in the recorded events (before the walk)."""

    index: int
    skip_node: int
    branch_node: int
    skip: str
    branch: str
    target_event: int | None
    target: str | None
    target_category: str | None
    why: str


def _producers(events: Sequence[Any]) -> tuple[dict[int, int], dict[int, int]]:
    producer: dict[int, int] = {}
    consumers: dict[int, int] = {}
    for i, event in enumerate(events):
        for node in event.outputs:
            producer[node] = i
        for node in event.inputs:
            consumers[node] = consumers.get(node, 0) + 1
    return producer, consumers


def _branch_of(events: Sequence[Any], producer: Mapping[int, int], skip: int, branch: int) -> list[int] | None:
    """The events between ``skip`` and ``branch`` if ``skip`` is an ancestor of ``branch`` (else None):
    a walk back from ``branch`` that stops at events recorded before ``skip`` was made."""
    limit = producer.get(skip, -1)
    stack, seen, visited = [branch], {branch}, []
    found = False
    while stack:
        i = producer.get(stack.pop())
        if i is None or i <= limit:
            continue
        visited.append(i)
        for node in events[i].inputs:
            if node == skip:
                found = True
            elif node not in seen:
                seen.add(node)
                stack.append(node)
    return sorted(set(visited)) if found else None


def _linear_root(
    events: Sequence[Any], producer: Mapping[int, int], node: int, op_propagation: Callable[[Any], str | None]
) -> tuple[int, list[str]]:
    """Back from ``node`` through layers, norms and shape ops (first input): the node reached and the
    layers and norms passed (a projection shortcut's)."""
    through: list[str] = []
    while node in producer:
        event = events[producer[node]]
        if not event.inputs or not (
            event.category in ("layer", "norm") or (event.category == "op" and op_propagation(event) == "shape")
        ):
            break
        if event.category != "op":
            through.append(event.name)
        node = event.inputs[0]
    return node, through[::-1]


def _scale_of(
    events: Sequence[Any],
    producer: Mapping[int, int],
    consumers: Mapping[int, int],
    node: int,
    op_propagation: Callable[[Any], str | None],
    op_label: Callable[[Any], str],
    norm_weight: Callable[[Any], str | None] | None,
    layers: Mapping[str, tuple[str, int, str]],
    calls: Mapping[str, int],
) -> tuple[int | None, str | None, str | None, str]:
    """The last layer or norm of a branch ending at ``node``, through shape ops and scalar factors:
    ``(event index, parameter, kind, why-not)``."""
    while True:
        if consumers.get(node, 0) != 1:
            return None, None, None, "the branch's output also goes elsewhere: scaling it would change that too"
        i = producer.get(node)
        if i is None:
            return None, None, None, "the branch has no recorded op"
        event = events[i]
        if event.category == "layer":
            if calls[event.name] > 1:
                return None, None, None, f"its last layer {event.name} is called more than once"
            return i, layers[event.name][0], "layer", ""
        if event.category == "norm":
            weight = norm_weight(event) if norm_weight is not None else None
            if weight is None:
                return None, None, None, f"it ends in the norm {event.name}, which has no scale this recorder can set"
            return i, weight, "norm", ""
        propagation = op_propagation(event) if event.category == "op" else None
        if event.inputs and (
            propagation == "shape" or (propagation in ("product", "quotient") and len(event.inputs) == 1)
        ):
            node = event.inputs[0]
            continue
        what = f"the activation {event.label}" if event.category == "act" else f"the op {op_label(event)!r}"
        return None, None, None, f"it ends in {what}, not a layer or norm whose scale sets it"


def residual_sums(
    events: Sequence[Any],
    layers: Mapping[str, tuple[str, int, str]],
    *,
    op_propagation: Callable[[Any], str | None],
    op_label: Callable[[Any], str],
    norm_weight: Callable[[Any], str | None] | None = None,
) -> dict[int, _Residual]:
    """The residual sums of the recorded events (event index -> what was found; module docstring)."""
    producer, consumers = _producers(events)
    calls: dict[str, int] = {}
    for event in events:
        if event.category == "layer":
            calls[event.name] = calls.get(event.name, 0) + 1
    found: dict[int, _Residual] = {}
    used: set[int] = set()
    for index, event in enumerate(events):
        if event.category != "op" or op_propagation(event) != "sum" or len(event.inputs) != 2:
            continue
        a, b = event.inputs
        match = None

        def layered(between: list[int]) -> bool:  # a branch holds a layer or norm (else nothing scales it)
            return any(events[i].category in ("layer", "norm") for i in between)

        for skip, branch in ((a, b), (b, a)):  # an identity skip first
            between = _branch_of(events, producer, skip, branch)
            if between is not None and layered(between):
                match = (skip, branch, "identity", between)
                break
        if match is None:
            for skip, branch in ((a, b), (b, a)):  # a projection shortcut: skip = P(x), branch = f(x)
                root, through = _linear_root(events, producer, skip, op_propagation)
                if (
                    not through
                    or _linear_root(events, producer, branch, op_propagation)[0] == root
                    or _branch_of(events, producer, skip, branch) is not None  # the branch reads the skip itself
                ):
                    continue
                between = _branch_of(events, producer, root, branch)
                if between is not None and layered(between):
                    match = (skip, branch, f"projection through {', '.join(through)}", between)
                    break
        if match is None:
            continue
        skip, branch, shortcut, between = match
        names = [events[i].name for i in between if events[i].category in ("layer", "norm")]
        described = ", ".join(names[:3] + (["...", names[-1]] if len(names) > 4 else names[3:])) or "no layer"
        target_event, target, target_category, why = _scale_of(
            events, producer, consumers, branch, op_propagation, op_label, norm_weight, layers, calls
        )
        if target_event is not None and target_event in used:
            target_event, target, target_category, why = (
                None,
                None,
                None,
                f"its scale ({target}) already scales another sum",
            )
        if target_event is not None:
            used.add(target_event)
        found[index] = _Residual(
            len(found) + 1, skip, branch, shortcut, described, target_event, target, target_category, why
        )
    return found


@dataclass
class Propagated:
    """What :func:`propagate` decided: a row per planned weight in forward order, the follower and
    activation of each (for the measuring pass), the event name that planned it, the layers the
    pass called, notes, the residual sums (:class:`ResidualRow`) and the factor the residual rule
    puts on each weight it scales (``scales``; 1 for every other)."""

    rows: list[AutoRow]
    decided: dict[str, tuple[Follower, Any, float | None]]
    planned_by: dict[str, str]
    seen: set[str]
    notes: list[str]
    residuals: list[ResidualRow] = field(default_factory=list)
    scales: dict[str, float] = field(default_factory=dict)


def _activation_of(activation: Any) -> tuple[Any, float | None]:
    return activation if isinstance(activation, tuple) else (activation, None)


def propagate(
    events: Sequence[Any],
    measured: Sequence[float],
    layers: Mapping[str, tuple[str, int, str]],
    outputs: Sequence[int],
    q: float,
    *,
    op_propagation: Callable[[Any], str | None],
    op_label: Callable[[Any], str],
    ratio: Callable[[Any, float, list[str]], float],
    follower: Callable[[int, int], tuple[Follower, Any, str]] | None = None,
    unused_note: str = "",
    residual: str | None = None,
    norm_weight: Callable[[Any], str | None] | None = None,
) -> Propagated:
    """Walk the recorded events in order, predicting every node's second moment (the rules of the
    module docstring) and planning the first call of each layer in ``layers`` (event name ->
    (weight name, fan_in, class)). Inputs, parameters and constants keep their measured mean
    squares; an op without a rule takes ``ratio(event, m_in, notes)`` (the adapter's measured ratio,
    which names it in ``notes``). ``follower(index, node)`` replaces :func:`follow` where an adapter
    knows more; ``unused_note`` (with ``{name}``) is noted for a layer whose output nothing recorded
    consumes. ``residual`` is the residual rule (:data:`RESIDUAL`; module docstring), with
    ``norm_weight(event)`` the name of a norm's scale parameter (None: it has none); None (an
    adapter that applies no residual rule) leaves the branches as planned and notes the sums found."""
    output_set = set(outputs)
    if follower is None:

        def follower(index: int, node: int) -> tuple[Follower, Any, str]:
            return follow(events, node, output_set, index, op_propagation, op_label)

    if residual is not None and residual not in RESIDUAL:
        raise ValueError(
            f"Argument `residual` must be one of {', '.join(repr(r) for r in RESIDUAL)}. "
            f"Received: residual={residual!r}."
        )
    sums = residual_sums(events, layers, op_propagation=op_propagation, op_label=op_label, norm_weight=norm_weight)
    factor = {"zero": 0.0, "depth": 1.0 / math.sqrt(len(sums)) if sums else 1.0}.get(residual or "none", 1.0)
    scaled = {r.target_event: r for r in sums.values() if r.target_event is not None and factor != 1.0}
    predicted = list(measured)
    nonnegative: set[int] = set()  # nodes known >= 0 (a ReLU's output, as is): ReLU is then the identity
    done = Propagated([], {}, {}, set(), [])
    for index, event in enumerate(events):
        ins = [predicted[i] for i in event.inputs]
        m_in = ins[0] if ins else 0.0
        propagation = op_propagation(event) if event.category == "op" else None
        if event.category == "layer" and index in scaled:
            # the last layer of a residual branch: its gain times the residual factor
            done.seen.add(event.name)
            weight, fan_in, cls = layers[event.name]
            follows, activation, label = follower(index, event.outputs[0])
            fn, param = _activation_of(activation)
            done.decided[weight], done.planned_by[weight] = (follows, fn, param), event.name
            done.scales[weight] = factor
            g = layer_gain(follows, fn, m_in, q, param)
            r = scaled[index]
            note = f"last layer of residual sum {r.index}'s branch: gain x{factor:.4g} (residual={residual!r})"
            done.rows.append(
                AutoRow(weight, cls, follows, label, m_in, fan_in, factor * g.gain, g.chi, g.verdict, note, factor)
            )
            value = (factor * g.gain) ** 2 * m_in
        elif event.category == "norm" and index in scaled:
            value = factor**2  # the norm's scale set to the factor everywhere: mean square factor²
        elif event.category == "layer" and event.name in done.seen:
            value = predicted[event.outputs[0]] if event.outputs else 0.0
            done.notes.append(f"{event.name} is called more than once; planned for its first call")
        elif event.category == "layer":
            done.seen.add(event.name)
            weight, fan_in, cls = layers[event.name]
            follows, activation, label = follower(index, event.outputs[0])
            fn, param = _activation_of(activation)
            done.decided[weight], done.planned_by[weight] = (follows, fn, param), event.name
            g = layer_gain(follows, fn, m_in, q, param)
            note = g.note if follows != "linear" else f"then {label}: holds q"
            if label == "unused" and unused_note:
                done.notes.append(unused_note.format(name=event.name))
            done.rows.append(AutoRow(weight, cls, follows, label, m_in, fan_in, g.gain, g.chi, g.verdict, note))
            value = g.gain**2 * m_in
        elif event.category == "act":
            fn, param = _activation_of(event.activation)
            if fn == "relu" and event.inputs and event.inputs[0] in nonnegative:
                value = m_in  # ReLU of a non-negative input (a ReLU's output through a zeroed branch's sum)
            else:
                value = activation_moment(fn, m_in, param)
            if fn == "relu":
                nonnegative.update(event.outputs)
        elif event.category == "norm":
            value = event.scalars[0] if event.scalars else 1.0
        elif propagation == "shape":
            value = m_in
        elif propagation == "sum":
            value = sum(ins) + sum(s * s for s in event.scalars)
        elif propagation == "average" and event.scalars:
            value = sum(ins) / event.scalars[0] ** 2
        elif propagation == "product":
            value = math.prod(ins) * math.prod(s * s for s in event.scalars)
        elif propagation == "quotient" and event.scalars and len(ins) == 1:
            value = ins[0] / math.prod(s * s for s in event.scalars)
        elif propagation == "cat" and event.sizes and len(event.sizes) == len(ins):
            value = sum(n * m for n, m in zip(event.sizes, ins, strict=True)) / sum(event.sizes)
        else:
            value = ratio(event, m_in, done.notes)
        if index in sums:
            value = _residual_row(done, sums[index], event, predicted, factor, residual, op_label)
            if value == predicted[sums[index].skip_node] and sums[index].skip_node in nonnegative:
                nonnegative.update(event.outputs)
        elif propagation == "shape" and event.inputs and event.inputs[0] in nonnegative:
            nonnegative.update(event.outputs)
        for out in event.outputs:
            predicted[out] = value
    if sums and residual is None:
        done.notes.append(
            f"{len(sums)} residual sum(s) found; this recorder applies no residual rule (initscale.auto's "
            "residual= is applied on torch and Keras models): each adds its branch's second moment to the stream"
        )
    missed = [row for row in done.residuals if row.target is None and residual in ("zero", "depth")]
    for row in missed:
        done.notes.append(f"residual sum {row.index} ({row.op}): its branch is not scaled: {row.note}")
    return done


def _residual_row(
    done: Propagated,
    found: _Residual,
    event: Any,
    predicted: Sequence[float],
    factor: float,
    residual: str | None,
    op_label: Callable[[Any], str],
) -> float:
    """Append the :class:`ResidualRow` of a residual sum; its predicted second moment (skip + branch)."""
    m_skip, m_branch = predicted[found.skip_node], predicted[found.branch_node]
    m_sum = float(m_skip + m_branch + sum(s * s for s in event.scalars))
    mode = residual or "none"
    applied = found.target is not None and mode != "none"
    if applied:
        note = f"{found.target} x{factor:.4g}" + (
            ": the branch is 0 at init, the sum is its skip" if factor == 0.0 else ""
        )
    elif residual is None:
        note = "this recorder applies no residual rule"
    elif mode == "none":
        note = "residual='none': the branch as planned" + ("" if found.target else f"; {found.why}")
    else:
        note = found.why
    done.residuals.append(
        ResidualRow(
            found.index,
            op_label(event),
            found.skip,
            found.branch,
            found.target,
            found.target_category,
            factor if applied else 1.0,
            mode,
            m_skip,
            m_branch,
            m_sum,
            note,
        )
    )
    return m_sum


@dataclass(frozen=True)
class AutoRow:
    """One weight under ``auto``: its parameter and layer, what follows the layer (``activation``,
    ``norm``, ``output`` or ``linear``) and which activation, the predicted second moment at its
    input, its fan-in, the gain (std gain/√fan_in), χ and verdict of its activation, a note, and the
    residual rule's factor on the weight (1 unless it is the last layer of a scaled residual branch)."""

    weight: str
    layer: str
    follower: Follower
    activation: str
    m_in: float
    fan_in: int
    gain: float
    chi: float | None
    verdict: str | None
    note: str
    scale: float = 1.0  # the residual rule's factor, already in ``gain`` (0: the weight is drawn as zeros)
    arriving: str | None = None  # where m_in comes from when not the plan's (a layer a measured pass cannot reach)


@dataclass(frozen=True)
class StabilityRow:
    """The stability of one activation over the model: the ``layers`` followed by it, their χ
    (the geometric mean of the layers' χ, which is their common χ at a fixed point), the predicted
    growth ∏χ = χ^L of a small perturbation's second moment through those layers, and the verdict of
    χ (:func:`initscale.gains.verdict`: ordered χ < 1, critical, chaotic χ > 1)."""

    activation: str
    layers: int
    chi: float
    growth: float
    verdict: str


@dataclass(frozen=True)
class AutoPlan:
    """What ``auto`` decided for one model: a row per weight in forward order, and the rules
    (parameter name -> spec) that reinit applies. ``arriving`` says where each row's ``m_in``
    comes from: ``"predicted"`` (propagated along the graph) or ``"measured"`` (the mean square
    that arrived at the layer on the example pass, with every layer before it already drawn);
    ``init`` is the reinit report, once applied; ``residuals`` a :class:`ResidualRow` per residual sum
    (what the residual rule scaled, and by what)."""

    rows: tuple[AutoRow, ...]
    q: float
    distribution: str
    notes: tuple[str, ...] = ()
    arriving: str = "predicted"
    init: Any = None
    residuals: tuple[ResidualRow, ...] = ()

    def rules(self) -> dict[str, Any]:
        """Parameter name -> ``Rule(VarianceScaling(scale=gain², mode="fan_in"), label=...)`` (forward
        fans of each layer; ``Zeros()`` for a weight the residual rule zeroes); the label puts the
        row's activation, m_in, gain and χ (and the residual factor) in the report. A norm whose scale
        the residual rule sets gets ``Constant(factor)`` (``Zeros()`` for 0)."""
        from .reinit import Rule
        from .specs import Constant, Zeros

        residual_of = {r.target: r for r in self.residuals if r.target is not None and r.scale != 1.0}

        def label(row: AutoRow) -> str:
            then = row.activation if row.follower == "activation" else row.follower
            chi = "" if row.chi is None else f", chi {row.chi:.4g}"
            text = f"auto: then {then}, m_in {row.m_in:.4g} ({row.arriving or self.arriving}), gain {row.gain:.4g}{chi}"
            r = residual_of.get(row.weight)
            return text if r is None else f"{text}, residual sum {r.index} x{r.scale:.4g} (residual={r.residual!r})"

        out: dict[str, Any] = {
            row.weight: Rule(
                Zeros()
                if row.gain == 0.0
                else VarianceScaling(scale=row.gain**2, mode="fan_in", distribution=self.distribution),
                label=label(row),
            )
            for row in self.rows
        }
        for r in residual_of.values():
            if r.target_category == "norm" and r.target is not None:
                out[r.target] = Rule(
                    Zeros() if r.scale == 0.0 else Constant(r.scale),
                    label=f"auto: scale of residual sum {r.index}'s branch x{r.scale:.4g} (residual={r.residual!r})",
                )
        return out

    def __getitem__(self, weight: str) -> AutoRow:
        for row in self.rows:
            if row.weight == weight:
                return row
        raise KeyError(
            f"No weight {weight!r} in this auto plan; its weights are "
            f"{', '.join(r.weight for r in self.rows) or 'none'}."
        )

    def growth(self) -> float:
        """∏ χ over the layers followed by an activation: the predicted factor on a small
        perturbation's second moment (and the gradient's) through the model (χ^L for L equal layers)."""
        out = 1.0
        for row in self.rows:
            if row.chi is not None:
                out *= row.chi
        return out

    def stability(self) -> list[StabilityRow]:
        """One :class:`StabilityRow` per activation that follows some layer (in order of first use):
        χ^L over its L layers and the verdict. Layers followed by no activation (χ = 1) and by a
        norm or the output (no χ) are left out; :meth:`growth` is the product of every row's growth."""
        by_activation: dict[str, list[float]] = {}
        for row in self.rows:
            if row.follower == "activation" and row.chi is not None:
                by_activation.setdefault(row.activation, []).append(row.chi)
        out = []
        for activation, chis in by_activation.items():
            growth = math.prod(chis)
            chi = math.exp(sum(math.log(c) for c in chis) / len(chis)) if all(c > 0 for c in chis) else growth
            out.append(StabilityRow(activation, len(chis), chi, growth, gains.verdict(chi)))
        return out

    def assert_stable(self, factor: float = 2.0) -> None:
        """Raise AssertionError if the predicted growth leaves [1/factor, factor] (for tests and CI);
        the message lists :meth:`stability`'s rows (χ^L and verdict per activation)."""
        factor = _validate.real("factor", factor, positive=True)
        bound, growth = max(factor, 1.0 / factor), self.growth()
        if not 1.0 / bound <= growth <= bound:
            worst = sorted(
                (r for r in self.rows if r.chi is not None and r.chi > 0),
                key=lambda r: -abs(math.log(cast(float, r.chi))),
            )[:3]
            per = "; ".join(
                f"{s.activation}: {s.layers} layer(s), chi {s.chi:.4g}, chi^L {s.growth:.4g} ({s.verdict})"
                for s in self.stability()
            )
            raise AssertionError(
                f"auto: a small perturbation's second moment is predicted to grow by {growth:.4g} through the model "
                f"(outside [{1 / bound:.3g}, {bound:.3g}]). Per activation: {per or 'none'}. Largest |log chi|: "
                + ", ".join(f"{r.weight} ({r.activation}, chi={r.chi:.4g})" for r in worst)
            )

    def __str__(self) -> str:
        from .reinit import _aligned

        def number(x: float | None) -> str:
            return "-" if x is None else f"{x:.4g}"

        lines = [("weight", "layer", "then", "m_in", "fan_in", "gain", "chi", "note")]
        lines += [
            (
                r.weight,
                r.layer,
                r.activation if r.follower == "activation" else r.follower,
                number(r.m_in),
                str(r.fan_in),
                number(r.gain),
                number(r.chi),
                r.note,
            )
            for r in self.rows
        ]
        notes = "".join(
            f"\nstability: {s.activation}: {s.layers} layer(s), chi {s.chi:.4g}, chi^L {s.growth:.4g} ({s.verdict})"
            for s in self.stability()
        )
        notes += "".join(
            f"\nresidual {r.index} ({r.op}, {r.skip} skip, branch {r.branch}): "
            + (f"{r.target} x{r.scale:.4g}" if r.scale != 1.0 else f"not scaled ({r.note})")
            + f"; m skip {r.m_skip:.4g} + branch {r.m_branch:.4g} = {r.m_sum:.4g}"
            for r in self.residuals
        )
        notes += "".join(f"\nnote: {n}" for n in self.notes)
        return (
            f"auto (q={self.q:g}, m_in {self.arriving}): {len(self.rows)} weights, predicted perturbation growth "
            f"{self.growth():.4g}\n" + "\n".join(_aligned(lines)) + notes
        )


@dataclass(frozen=True)
class Auto:
    """Rules that come from the model's graph: pass as ``rules`` (``initscale.auto(...)``).

    ``plan(model)`` (``plan(module, variables=...)`` for Flax linen; through the adapter) records
    the graph on ``example_inputs`` and returns the :class:`AutoPlan`; ``rules_for(model)`` its
    rules, the other parameters left to the defaults. For Keras, several example inputs go to the
    model as one list (``model([a, b])``).
    """

    example_inputs: Any
    example_kwargs: Mapping[str, Any] | None = None
    q: float = 1.0
    distribution: str = "normal"
    arriving: str = "measured"
    residual: str = "zero"

    def __post_init__(self) -> None:
        try:
            _validate.real("q", self.q, positive=True)
        except (TypeError, ValueError) as err:
            raise type(err)(f"initscale.auto: {err} q is the second moment to hold after each activation.") from None
        if self.distribution not in _DISTRIBUTIONS:
            raise ValueError(
                f"Argument `distribution` of initscale.auto must be one of "
                f"{', '.join(repr(d) for d in _DISTRIBUTIONS)}. "
                f"Received: distribution={self.distribution!r}."
            )
        if self.example_inputs is None:
            raise ValueError(
                "initscale.auto needs example_inputs=: the model is run once on them to find which "
                "activation follows each layer and the second moment of the data."
            )
        if self.arriving not in ("measured", "predicted"):
            raise ValueError(
                f"Argument `arriving` of initscale.auto must be 'measured' or 'predicted'. "
                f"Received: arriving={self.arriving!r}."
            )
        if self.residual not in RESIDUAL:
            raise ValueError(
                f"Argument `residual` of initscale.auto must be one of {', '.join(repr(r) for r in RESIDUAL)}. "
                f"Received: residual={self.residual!r}."
            )

    def plan(self, model: Any, variables: Any = None) -> AutoPlan:
        """The plan for ``model``: a torch module, a built Keras model (any backend), or a Flax
        linen module with its ``variables`` (what ``module.init`` returned)."""
        linen = sys.modules.get("flax.linen")
        if linen is not None and isinstance(model, linen.Module):
            if variables is None:
                raise TypeError(
                    "initscale.auto: a Flax linen module's plan needs its variables: "
                    "auto.plan(module, variables=module.init(key, x))."
                )
            from .adapters import _jax_auto

            return _jax_auto.plan(variables, model, self)
        keras = sys.modules.get("keras")
        # Keras first: a Keras model on the torch backend is a torch Module too
        if keras is not None and isinstance(model, keras.layers.Layer):
            from .adapters import _keras_auto

            return _keras_auto.plan(model, self)
        if type(model).__module__.startswith("torch") or hasattr(model, "named_parameters"):
            from .adapters import _torch_auto

            return _torch_auto.plan(model, self)
        raise TypeError(
            f"initscale.auto: models of type {type(model).__name__} are not supported yet (torch "
            "modules, Keras models and Flax linen modules with variables= are)."
        )

    def rules_for(self, model: Any, params: Any = None) -> dict[str, Any]:
        """The predicted plan's rules for ``model`` (parameter name -> spec), for the reinit
        hook :func:`initscale.reinit.model_rules`. torch's ``reinit_``, Keras's and JAX's ``reinit``
        apply an ``Auto`` themselves, with the measuring pass of ``arriving="measured"``."""
        return self.plan(model).rules()


def auto(
    example_inputs: Any,
    example_kwargs: Mapping[str, Any] | None = None,
    *,
    q: float = 1.0,
    distribution: str = "normal",
    arriving: str = "measured",
    residual: str = "zero",
) -> Auto:
    """Activation-aware rules: each weight the fixed-point gain of what follows its layer (module docstring).

    Args:
        example_inputs: the positional inputs of one forward pass (a tensor or a tuple); the data's
            second moment is measured on them.
        example_kwargs: keyword inputs of that pass.
        q: the second moment to hold after each activation (1).
        distribution: ``"normal"``, ``"truncated_normal"`` (corrected to the same variance) or ``"uniform"``.
        arriving: where each layer's input second moment comes from when the rules are applied:
            ``"measured"`` (default): the weights are drawn by the predicted plan, then one more
            pass over the example inputs visits the layers in forward order and rescales each
            weight for the mean square that actually arrives at it (its predecessors already
            final), which removes the finite-width drift that grows through a chaotic fixed
            point (χ > 1: GELU, SiLU); ``"predicted"``: the graph's propagation only.
            :meth:`Auto.plan` always shows the predicted plan.
        residual: the rule for residual sums y = x + b(x) (module docstring): ``"zero"`` (default):
            each branch's last norm scale (else its last layer's weight) is 0, so every sum holds
            its skip's second moment (Fixup, SkipInit, torchvision's ``zero_init_residual``);
            ``"depth"``: each of the L branches times 1/√L (bounded growth, as GPT-2's residual
            projections); ``"none"``: branches as planned, the sums grow with depth. The plan's
            ``residuals`` rows say what was scaled, per sum. Applied on torch, Keras and Flax linen
            models (linen: ``adapters/_jax_auto.py``'s own walk; a sum it cannot scale is warned of).
    """
    if example_inputs is None:
        raise ValueError(
            "initscale.auto needs example_inputs=: the model is run once on them to find which "
            "activation follows each layer and the second moment of the data."
        )
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    return Auto(inputs, example_kwargs, q, distribution, arriving, residual)
