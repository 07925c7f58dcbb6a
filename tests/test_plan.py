"""The one plan per weight (initscale.plan) and the shared algorithms (initscale._shared)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import initscale
from initscale import _shared, presets
from initscale.fans import Layout
from initscale.plan import plans, weight_plan
from initscale.rounding import clip_bounds
from initscale.streams import backend_draw


def test_one_cached_plan_per_spec_shape_layout_dtype() -> None:
    spec = presets.get("he_uniform")
    plan = weight_plan(spec, (6, 4), "torch", "float16")
    assert weight_plan(spec, [6, 4], "torch", np.float16) is plan  # shape and dtype spellings: one key
    assert weight_plan(spec, (6, 4), "torch", "torch.float16") is plan
    assert plan.fans == initscale.compute_fans((6, 4), "torch")
    assert plan.dist == spec.resolve(plan.fans)
    assert plan.strides == (4, 1) and plan.gates is None
    assert plan.clip == clip_bounds(plan.dist, "float16")
    found = plans(spec, "torch")[0]((6, 4), "float16")  # an initializer's lookup (keyed by the resolved layout)
    assert (found.dist, found.layout, found.clip) == (plan.dist, plan.layout, plan.clip)
    fixed = weight_plan(initscale.Normal(0.02), (5,), "torch")  # a fixed-scale spec fills a bias
    assert fixed.fans is None and fixed.layout is None
    with pytest.raises(ValueError, match="built without a dtype"):
        _ = fixed.clip


def test_a_layouts_name_is_part_of_the_key() -> None:
    """Layout's name takes no part in its equality; a plan must not show another layout's name."""
    spec = presets.get("he_normal")
    a = weight_plan(spec, (3, 5), Layout(-2, -1, name="first"))
    b = weight_plan(spec, (3, 5), Layout(-2, -1, name="second"))
    assert str(a.layout) == "first" and str(b.layout) == "second"


def _numpy_odd_ops() -> SimpleNamespace:
    def set_low_bit(t: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return (t.view(np.int32) | mask.astype(np.int32)).view(np.float32)

    return SimpleNamespace(
        narrow=lambda x: x.astype(np.float32),
        widen=lambda x: x.astype(np.float64),
        where=np.where,
        toward_zero=lambda t: np.nextafter(t, np.float32(0)),
        set_low_bit=set_low_bit,
    )


def _double_rounding_cases() -> np.ndarray:
    """float64 values just above (below) a float16 midpoint by less than half a float32 ulp: a plain
    float64 -> float32 cast lands on the midpoint, and float32 -> float16 (ties to even) then rounds
    the wrong way for half of them. NumPy's float64 -> float16 cast rounds once."""
    rng = np.random.default_rng(0)
    h = rng.uniform(-60000, 60000, 1000).astype(np.float16).astype(np.float64)
    mid = (h + np.nextafter(h.astype(np.float16), np.float16(np.inf)).astype(np.float64)) / 2
    nudge = np.abs(mid) * 2.0**-30 * rng.choice([-1.0, 1.0], mid.size)
    return np.concatenate([mid + nudge, rng.normal(0, 3, 1000)])


def test_round_to_odd_then_the_cast_rounds_once() -> None:
    values = _double_rounding_cases()
    odd = _shared.round_to_odd(values, _numpy_odd_ops())
    assert odd.dtype == np.float32
    np.testing.assert_array_equal(odd.astype(np.float16), values.astype(np.float16))


def test_mutation_round_to_nearest_rounds_twice() -> None:
    """A planted bug (round to nearest instead of to odd) fails the check above."""
    values = _double_rounding_cases()
    assert (values.astype(np.float32).astype(np.float16) != values.astype(np.float16)).sum() > 0


def test_lower_tail_mirrors_only_upper_tail_intervals() -> None:
    assert _shared.lower_tail(0.2, 1.0) == (-1.0, -0.2, True)
    assert _shared.lower_tail(-1.0, 2.0) == (-1.0, 2.0, False)
    assert _shared.lower_tail(0.0, 3.0) == (0.0, 3.0, False)


def test_orthogonal_blocks_are_orthonormal_with_numpy_ops() -> None:
    rng = np.random.default_rng(1)
    ops = SimpleNamespace(
        normal=rng.standard_normal,
        qr=np.linalg.qr,
        diagonal=lambda r: np.diagonal(r, axis1=-2, axis2=-1),
        phase=np.sign,
        swap=lambda q: np.swapaxes(q, -1, -2),
        permute=np.transpose,
    )
    layout = initscale.fans.resolve("torch.lstm").layout((16, 3))  # 4 gate blocks of (4, 3)
    w = _shared.orthogonal(2.0, layout.blocks((16, 3)), (16, 3), ops)
    for block in w.reshape(4, 4, 3):
        np.testing.assert_allclose(block.T @ block, 4.0 * np.eye(3), atol=1e-12)


def test_backend_draw_names_the_framework() -> None:
    with pytest.raises(ModuleNotFoundError, match="nosuch"):
        backend_draw("nosuch")
