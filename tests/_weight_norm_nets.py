"""Flax linen nets with ``WeightNorm`` over a block of two Dense layers (not one layer), for the
LSUV and ``auto`` tests: import after ``pytest.importorskip("flax.linen")``."""

from __future__ import annotations

import flax.linen as nn


class Block(nn.Module):
    """Dense(48) -> relu -> Dense(48), its kernels ``block/a`` and ``block/b``."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(48, name="b")(nn.relu(nn.Dense(48, name="a")(x)))


class BlockNet(nn.Module):
    """``WeightNorm(Block)`` -> relu -> Dense(8) ``head``."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(8, name="head")(nn.relu(nn.WeightNorm(Block(name="block"), name="wn")(x)))
