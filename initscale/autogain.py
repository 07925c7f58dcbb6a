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
its scale; an op without a rule here takes the ratio of mean squares measured on the example pass
(named in the row's note, never silent).

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
from dataclasses import dataclass
from typing import Any, Literal, cast

from . import _validate, gains
from .specs import VarianceScaling

__all__ = [
    "OP_RULES",
    "Auto",
    "AutoPlan",
    "AutoRow",
    "LayerGain",
    "Propagated",
    "StabilityRow",
    "activation_moment",
    "auto",
    "follow",
    "layer_gain",
    "propagate",
]

Follower = Literal["activation", "norm", "output", "linear"]
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")


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
# An adapter records one forward pass as events (objects with ``kind`` in "layer", "norm", "act",
# "op"; ``name``; node ids ``inputs``/``outputs``; ``scalars``, ``activation`` ((gains name, param)
# or a NumPy callable), ``label`` and, for concatenations, ``sizes``) and the mean square measured
# at every node. Which op obeys which rule is the adapter's: ``op_rule(event)`` gives one of
# OP_RULES, or None for an op measured on the pass.

OP_RULES = ("shape", "sum", "product", "quotient", "cat", "average")


def follow(
    events: Sequence[Any],
    node: int,
    outputs: set[int],
    start: int,
    op_rule: Callable[[Any], str | None],
    op_label: Callable[[Any], str],
) -> tuple[Follower, Any, str]:
    """What the first consumer of ``node`` after event ``start`` is, through shape ops:
    ``(follower, activation, label)``; an output nothing consumes is the model's output or "unused"."""
    frontier = {node}
    for event in events[start + 1 :]:
        if not frontier.intersection(event.inputs):
            continue
        if event.kind == "act":
            return "activation", event.activation, event.label
        if event.kind == "norm":
            return "norm", None, "norm"
        if event.kind == "op" and op_rule(event) == "shape":
            frontier.update(event.outputs)
            continue
        return "linear", None, op_label(event)
    return ("output", None, "output") if frontier & outputs else ("linear", None, "unused")


@dataclass
class Propagated:
    """What :func:`propagate` decided: a row per planned weight in forward order, the follower and
    activation of each (for the measuring pass), the event name that planned it, the layers the
    pass called, and notes."""

    rows: list[AutoRow]
    decided: dict[str, tuple[Follower, Any, float | None]]
    planned_by: dict[str, str]
    seen: set[str]
    notes: list[str]


def _activation_of(activation: Any) -> tuple[Any, float | None]:
    return activation if isinstance(activation, tuple) else (activation, None)


def propagate(
    events: Sequence[Any],
    measured: Sequence[float],
    layers: Mapping[str, tuple[str, int, str]],
    outputs: Sequence[int],
    q: float,
    *,
    op_rule: Callable[[Any], str | None],
    op_label: Callable[[Any], str],
    ratio: Callable[[Any, float, list[str]], float],
    follower: Callable[[int, int], tuple[Follower, Any, str]] | None = None,
    unused_note: str = "",
) -> Propagated:
    """Walk the recorded events in order, predicting every node's second moment (the rules of the
    module docstring) and planning the first call of each layer in ``layers`` (event name ->
    (weight name, fan_in, class)). Inputs, parameters and constants keep their measured mean
    squares; an op without a rule takes ``ratio(event, m_in, notes)`` (the adapter's measured ratio,
    which names it in ``notes``). ``follower(index, node)`` replaces :func:`follow` where an adapter
    knows more; ``unused_note`` (with ``{name}``) is noted for a layer whose output nothing recorded
    consumes."""
    output_set = set(outputs)
    if follower is None:

        def follower(index: int, node: int) -> tuple[Follower, Any, str]:
            return follow(events, node, output_set, index, op_rule, op_label)

    predicted = list(measured)
    done = Propagated([], {}, {}, set(), [])
    for index, event in enumerate(events):
        ins = [predicted[i] for i in event.inputs]
        m_in = ins[0] if ins else 0.0
        rule = op_rule(event) if event.kind == "op" else None
        if event.kind == "layer" and event.name in done.seen:
            value = predicted[event.outputs[0]] if event.outputs else 0.0
            done.notes.append(f"{event.name} is called more than once; planned for its first call")
        elif event.kind == "layer":
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
        elif event.kind == "act":
            fn, param = _activation_of(event.activation)
            value = activation_moment(fn, m_in, param)
        elif event.kind == "norm":
            value = event.scalars[0] if event.scalars else 1.0
        elif rule == "shape":
            value = m_in
        elif rule == "sum":
            value = sum(ins) + sum(s * s for s in event.scalars)
        elif rule == "average" and event.scalars:
            value = sum(ins) / event.scalars[0] ** 2
        elif rule == "product":
            value = math.prod(ins) * math.prod(s * s for s in event.scalars)
        elif rule == "quotient" and event.scalars and len(ins) == 1:
            value = ins[0] / math.prod(s * s for s in event.scalars)
        elif rule == "cat" and event.sizes and len(event.sizes) == len(ins):
            value = sum(n * m for n, m in zip(event.sizes, ins, strict=True)) / sum(event.sizes)
        else:
            value = ratio(event, m_in, done.notes)
        for out in event.outputs:
            predicted[out] = value
    return done


@dataclass(frozen=True)
class AutoRow:
    """One weight under ``auto``: its parameter and layer, what follows the layer (``activation``,
    ``norm``, ``output`` or ``linear``) and which activation, the predicted second moment at its
    input, its fan-in, the gain (std gain/√fan_in), χ and verdict of its activation, and a note."""

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
    ``init`` is the reinit report, once applied."""

    rows: tuple[AutoRow, ...]
    q: float
    distribution: str
    notes: tuple[str, ...] = ()
    arriving: str = "predicted"
    init: Any = None

    def rules(self) -> dict[str, Any]:
        """Parameter name -> ``Rule(VarianceScaling(scale=gain², mode="fan_in"), label=...)`` (forward
        fans of each layer); the label puts the row's activation, m_in, gain and χ in the report."""
        from .reinit import Rule

        def label(row: AutoRow) -> str:
            then = row.activation if row.follower == "activation" else row.follower
            chi = "" if row.chi is None else f", chi {row.chi:.4g}"
            return f"auto: then {then}, m_in {row.m_in:.4g} ({self.arriving}), gain {row.gain:.4g}{chi}"

        return {
            row.weight: Rule(
                VarianceScaling(scale=row.gain**2, mode="fan_in", distribution=self.distribution), label=label(row)
            )
            for row in self.rows
        }

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
    """
    if example_inputs is None:
        raise ValueError(
            "initscale.auto needs example_inputs=: the model is run once on them to find which "
            "activation follows each layer and the second moment of the data."
        )
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    return Auto(inputs, example_kwargs, q, distribution, arriving)
