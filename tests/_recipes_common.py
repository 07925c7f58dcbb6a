"""The per-tensor check shared by tests/test_recipes_keras.py and tests/test_recipes_jax.py.

``value_problems`` compares what a recipe's ``reinit`` did to every tensor (Keras variable, JAX
leaf) with what its source's formula says: a constant exactly, a kept tensor unchanged, and a
random one with the std in its report equal to the formula (to 1e-12 relative) and its draws' std
about 0 within z·√((κ−1)/(4n)) of it, the std's relative sampling sd (κ = 3 for a normal, the
truncated normal's own kurtosis for torchtitan's ±3σ head). z is two-sided at ``alpha`` split over
the random tensors (Bonferroni): ``alpha`` is the family-wise false-alarm rate of one model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import numpy as np

from initscale.specs import TruncatedNormal


def value_problems(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    rows: Mapping[str, Any],
    wanted: Mapping[str, tuple[float | None, float | None]],
    alpha: float,
) -> list[str]:
    """Every tensor of ``after`` (float64 values by name) against ``wanted[name]`` = (the constant
    it must be, or None; the std its formula gives, or None: kept as in ``before``), with its
    report row ``rows[name]``; one line per problem, empty when all agree."""
    from scipy import stats

    random = [p for p, (c, s) in wanted.items() if c is None and s is not None]
    z = NormalDist().inv_cdf(1 - alpha / len(random) / 2)
    out = []
    for path, values in after.items():
        row, (const, want) = rows[path], wanted[path]
        if const is not None:
            if not (values == const).all():
                out.append(f"{path}: expected the constant {const}, got {row.spec!r}")
            continue
        if want is None:
            if row.touched or not (values == before[path]).all():
                out.append(f"{path}: expected to be kept, got {row.spec!r}")
            continue
        spec = row.spec
        sigma = spec.stddev if isinstance(spec, TruncatedNormal) else row.std
        if sigma is None or abs(sigma - want) > 1e-12 * want:
            out.append(f"{path}: recipe std {sigma}, source formula {want:.6g} ({row.reason})")
            continue
        kurtosis = 3.0  # a normal's
        if isinstance(spec, TruncatedNormal):
            kurtosis = 3.0 + float(stats.truncnorm.stats(spec.lower, spec.upper, moments="k"))
        tol = z * math.sqrt((kurtosis - 1) / (4 * values.size))  # the std's relative sd: sqrt((kappa-1)/(4n))
        ratio = math.sqrt(float((values**2).mean())) / row.std
        if abs(ratio - 1) > tol:
            out.append(f"{path}: drawn std / expected = {ratio:.4f}, beyond 1 ± {tol:.4f}")
    return out


def mutated_recipe(name: str, spec_fn: Any) -> Any:
    """The registered recipe ``name`` with its spec function replaced by ``spec_fn`` (role, part,
    settings) -> spec: a planted bug for the mutation tests."""
    import dataclasses

    from initscale import recipes

    entry = dataclasses.replace(recipes._REGISTRY[name], spec=spec_fn)
    return recipes.Recipe(
        name, entry.source, {}, entry.doc, entry.settings, entry.role, entry.spec, entry.required, entry.blocks
    )
