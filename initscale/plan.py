"""Compile a spec once for the adapters: shape -> (distribution, concrete layout), cached.

Everything that depends only on the spec and the weight shape (fans, the resolved
distribution, the block layout for matrix inits) is computed here once per shape, so an
adapter's sampling call only draws.
"""

from __future__ import annotations

from collections.abc import Callable

from .distributions import Distribution
from .fans import LayerKind, Layout, LayoutLike, resolve
from .specs import Spec

__all__ = ["Planner", "planner"]

Planner = Callable[[tuple[int, ...]], tuple[Distribution, Layout | None]]


def planner(spec: Spec, layout: LayoutLike) -> tuple[Planner, Layout | LayerKind]:
    """Return ``(plan, rule)``: ``plan(shape)`` gives the distribution to draw and, for specs
    that depend on the fans, the concrete layout; ``rule`` is the resolved layout.

    Fixed-scale specs (Normal, Uniform, Constant, ...) ignore the layout, so they also fill
    biases and other rank-1 weights.
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"Argument `spec` must be an initscale spec. Received: spec={spec!r}.")
    rule = resolve(layout)
    cache: dict[tuple[int, ...], tuple[Distribution, Layout | None]] = {}

    def plan(shape: tuple[int, ...]) -> tuple[Distribution, Layout | None]:
        if shape not in cache:
            if spec.fixed_scale:
                cache[shape] = (spec.resolve(None), None)
            else:
                cache[shape] = (spec.resolve(rule.fans(shape)), rule.layout(shape))
        return cache[shape]

    return plan, rule
