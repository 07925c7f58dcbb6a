"""The torch residual MLP that the Keras and JAX auto tests compare their residual rows against.

Linear(32, 64), ReLU, then 4 blocks h + fc2(gelu(fc1(h))) (d = 64, hidden 128): the model each of
tests/test_auto_keras.py and tests/test_auto_jax.py also builds in its own framework.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import initscale


def assert_same_residual_rows(x: np.ndarray, ours: Callable[[str], Any], target: Callable[[int], str]) -> None:
    """For each residual rule, ``ours(residual)`` (the framework's AutoPlan of the same model on
    ``x``) has the torch plan's residual rows: the same sums, skips, target kinds, factors and rules,
    block k's target named ``target(k)``, and the same predicted second moments (both predicted from
    the data's measured mean square, float32 data reduced in float64 by two frameworks: rel 1e-6)."""
    torch = pytest.importorskip("torch")
    from initscale.adapters import _torch_auto

    class Block(torch.nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(d, 2 * d), torch.nn.Linear(2 * d, d)

        def forward(self, h: Any) -> Any:
            return h + self.fc2(torch.nn.functional.gelu(self.fc1(h)))

    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), *[Block(64) for _ in range(4)])
    for residual in ("zero", "depth", "none"):
        theirs = _torch_auto.plan(net, initscale.auto(torch.from_numpy(np.array(x)), residual=residual))
        mine = ours(residual)
        assert len(mine.residuals) == len(theirs.residuals) == 4
        for k, (a, b) in enumerate(zip(mine.residuals, theirs.residuals, strict=True)):
            assert (a.target, b.target) == (target(k), f"{k + 2}.fc2.weight")
            assert (a.index, a.skip, a.target_category, a.scale, a.residual) == (
                b.index,
                b.skip,
                b.target_category,
                b.scale,
                b.residual,
            )
            for m in ("m_skip", "m_branch", "m_sum"):
                assert getattr(a, m) == pytest.approx(getattr(b, m), rel=1e-6, abs=1e-12), (residual, k, m)
