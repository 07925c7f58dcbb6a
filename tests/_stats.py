"""Test-suite shorthands over the public checks in :mod:`initscale.testing`.

``failures(x, dist)`` and ``same_distribution(a, b)`` return the failed checks as
``"name: detail"`` strings (empty when everything passed), so a test reads
``assert failures(x, dist) == []`` and shows every statistic when it fails. The checks' tolerances
and false-alarm rates are documented in :mod:`initscale.testing`.
"""

from __future__ import annotations

from typing import Any

from initscale import testing
from initscale.distributions import Distribution

# A weight shape for each preset's own layout, about 2e5 values: enough for every check to see the
# classic bugs (the mutation tests).
PRESET_SHAPES = {
    "keras": (3, 3, 100, 200),
    "flax": (3, 3, 100, 200),
    "torch": (200, 100, 3, 3),
    "flax.embed": (1000, 200),
    "torch.mha_in_proj": (768, 256),
}


def failures(x: Any, dist: Distribution, rounding: float | None = None) -> list[str]:
    """Failed checks of samples ``x`` against ``dist``; ``rounding`` defaults to ``x``'s dtype."""
    return [f"{c.name}: {c}" for c in testing.check_samples(x, dist, rounding=rounding).checks if not c.ok]


def same_distribution(a: Any, b: Any) -> list[str]:
    """Failed checks of the two-sample comparison."""
    return [f"{c.name}: {c}" for c in testing.same_distribution(a, b).checks if not c.ok]
