"""One plan per weight: everything that depends only on (spec, shape, layout, dtype), built once.

:func:`weight_plan` gives the :class:`WeightPlan` of a weight: its fans, the distribution the spec
resolves to, the concrete block layout (for matrix inits), the blocks and stacked gates, the
canonical strides of the portable stream and the bounds that hold once rounded to the dtype. It is
cached, so every adapter, the streams, :func:`initscale.explain`, the parity matrix, the testing
kit and reinit read the same plan, and a sampling call only draws.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import _validate
from .distributions import Distribution
from .fans import Fans, LayerKind, Layout, LayoutLike, gate_order, resolve
from .rounding import clip_bounds, representable_bounds
from .specs import Spec

__all__ = ["PlanLookup", "WeightPlan", "canonical_strides", "gate_index", "plans", "weight_plan"]


def canonical_strides(shape: Sequence[int], layout: LayoutLike | None) -> tuple[int, ...]:
    """For each axis of ``shape`` (in the framework's layout), its stride in the canonical
    row-major (batch, out, in, receptive) array. Rank ≤ 1 weights are their own canonical form."""
    dims = _validate.shape("shape", shape)
    if len(dims) < 2 or layout is None:
        order = tuple(range(len(dims)))
    else:
        concrete: Layout = resolve(layout).layout(dims)
        ins, outs, batch, receptive = concrete.split_axes(dims)
        # Stacked input groups index the output channel (Keras's depthwise (k, k, C, m): channel
        # c·m + j), so they come before the out axes: the same order as torch's (C·m, 1, k, k).
        order = batch + ins + outs + receptive if concrete.in_groups > 1 else batch + outs + ins + receptive
    strides = [0] * len(dims)
    step = 1
    for axis in reversed(order):
        strides[axis] = step
        step *= dims[axis]
    return tuple(strides)


def gate_index(shape: Sequence[int], layout: LayoutLike | None) -> tuple[int, list[int]] | None:
    """Where a layer kind stacks recurrent gates in another order than the canonical one
    (:data:`initscale.fans.CANONICAL_GATES`; a Keras GRU), ``(axis, index)`` such that taking
    ``index`` along ``axis`` of values drawn in the framework's layout gives each gate the
    canonical gate's values; None otherwise."""
    if layout is None:
        return None
    order = gate_order(layout)
    if order is None:
        return None
    dims = _validate.shape("shape", shape)
    axis = resolve(layout).layout(dims).split_axes(dims)[1][0]
    size = dims[axis] // len(order)
    return axis, [g * size + j for g in order for j in range(size)]


@dataclass(frozen=True, eq=False)
class WeightPlan:
    """What one weight's draw needs, computed once (:func:`weight_plan`).

    ``fans`` are those the spec was resolved with (None for a fixed-scale spec, which ignores
    them); ``layout`` is the concrete block layout for specs that depend on the fans (None for
    fixed-scale ones, which also fill biases and other rank-1 weights). The stream's canonical
    ``strides``, the stacked ``gates``, the orthogonal ``blocks`` and the ``clip`` bounds are
    computed on first use and kept.
    """

    spec: Spec
    shape: tuple[int, ...]
    fan_layout: Layout | LayerKind
    dtype: str | None
    fans: Fans | None
    dist: Distribution
    layout: Layout | None

    @functools.cached_property
    def strides(self) -> tuple[int, ...]:
        """The canonical strides of the portable stream (:func:`canonical_strides`)."""
        return canonical_strides(self.shape, self.fan_layout)

    @functools.cached_property
    def gates(self) -> tuple[int, list[int]] | None:
        """Stacked gates in a non-canonical order (:func:`gate_index`), or None."""
        return gate_index(self.shape, self.fan_layout)

    @functools.cached_property
    def blocks(self) -> tuple[tuple[int, ...], tuple[int, int, int, int, int, int]]:
        """``layout.blocks(shape)``: the (order, sizes) of the independent matrix blocks."""
        layout = self.layout if self.layout is not None else self.fan_layout.layout(self.shape)
        return layout.blocks(self.shape)

    @functools.cached_property
    def clip(self) -> tuple[float, float] | None:
        """The distribution's bounds that hold once rounded to ``dtype`` (:func:`initscale.rounding.clip_bounds`)."""
        return clip_bounds(self.dist, self._dtype())

    @functools.cached_property
    def representable(self) -> tuple[float, float] | None:
        """``representable_bounds(low, high, dtype)`` of a bounded distribution, else None."""
        bounds = getattr(self.dist, "bounds", None)
        return None if bounds is None else representable_bounds(*bounds, self._dtype())

    @property
    def rule(self) -> Layout | LayerKind:
        """Deprecated (until 0.3): :attr:`fan_layout`."""  # names: deprecated alias
        import warnings

        warnings.warn(
            "WeightPlan.rule is deprecated and stops working in initscale 0.3; use WeightPlan.fan_layout.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.fan_layout

    def _dtype(self) -> str:
        if self.dtype is None:
            raise ValueError("This plan was built without a dtype: pass `dtype` to initscale.plan.weight_plan.")
        return self.dtype


def _dtype_name(dtype: Any) -> str | None:
    """A dtype's format name: "torch.bfloat16", np.float32, jnp.float16, "float64" -> "bfloat16", ..."""
    if dtype is None:
        return None
    if isinstance(dtype, type):  # a scalar type: np.float16, jnp.bfloat16
        return dtype.__name__
    name = getattr(dtype, "name", None)  # NumPy and JAX dtypes
    return (name if isinstance(name, str) else str(dtype)).rsplit(".", 1)[-1]


def weight_plan(spec: Spec, shape: Sequence[int], layout: LayoutLike, dtype: Any = None) -> WeightPlan:
    """The :class:`WeightPlan` of a weight of ``shape`` read with ``layout`` (cached per spec,
    shape, layout and dtype; ``dtype`` may be None where no dtype-dependent bound is needed).

    Raises as the spec's resolution does: a spec that scales with the fans needs a shape the
    layout can read."""
    if not isinstance(spec, Spec):
        raise TypeError(f"Argument `spec` must be an initscale spec. Received: spec={spec!r}.")
    # A Layout's name does not take part in its equality, but the plan keeps it (reports show it): a key
    label = layout.name if isinstance(layout, Layout) else None
    return _cached(spec, _validate.shape("shape", shape), layout, _dtype_name(dtype), label)


@functools.lru_cache(maxsize=4096)
def _cached(spec: Spec, dims: tuple[int, ...], layout: LayoutLike, dtype: str | None, label: str | None) -> WeightPlan:
    fan_layout = resolve(layout)
    if spec.fixed_scale:
        return WeightPlan(spec, dims, fan_layout, dtype, None, spec.resolve(None), None)
    fans = fan_layout.fans(dims)
    return WeightPlan(spec, dims, fan_layout, dtype, fans, spec.resolve(fans), fan_layout.layout(dims))


class PlanLookup(Protocol):
    """``plan_of(shape, dtype=None) -> WeightPlan``: what :func:`plans` returns for an initializer."""

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> WeightPlan: ...


def plans(spec: Spec, layout: LayoutLike) -> tuple[PlanLookup, Layout | LayerKind]:
    """Return ``(plan_of, fan_layout)`` for an initializer: ``plan_of(shape, dtype)`` is the shape's
    :class:`WeightPlan` (looked up in the initializer's own dict first: a draw pays one dict
    lookup, not the hash of the spec), ``fan_layout`` the resolved layout."""
    if not isinstance(spec, Spec):
        raise TypeError(f"Argument `spec` must be an initscale spec. Received: spec={spec!r}.")
    fan_layout = resolve(layout)
    cache: dict[tuple[tuple[int, ...], Any], WeightPlan] = {}

    def plan_of(shape: tuple[int, ...], dtype: Any = None) -> WeightPlan:
        key = (shape, dtype)
        found = cache.get(key)
        if found is None:
            found = cache[key] = weight_plan(spec, shape, fan_layout, dtype)
        return found

    return plan_of, fan_layout
