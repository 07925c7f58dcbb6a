"""The NumPy reference sampler draws exactly the analytic distribution of every spec.

Every preset on every logical layer is the parity matrix's (tests/test_parity.py); dtypes, seeds,
zero-size shapes, bad input and the far-tail truncated normals are every adapter's
(tests/test_adapters.py). Here: specs with arguments beyond the presets' defaults, float64
orthogonality to 1e-12, the rng argument, and the tails past float64's normal range."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _tails import TAIL_SHAPE, tail_failures, tail_spec

import initscale
from _stats import failures
from initscale import presets
from initscale.adapters import numpy as isnp

SHAPE = (400, 500)  # 200,000 draws per check
SEED = 20261125

SPECS = {  # he_normal, glorot_uniform, tf1.variance_scaling_initializer: the matrix's rows
    "lecun_normal_fan_geo": initscale.VarianceScaling(1.0, "fan_geo_avg", "truncated_normal"),
    "trunc_t1.5": initscale.VarianceScaling(3.0, "fan_out", "truncated_normal", truncation=1.5),
    "torch_kaiming_normal": presets.get("torch.kaiming_normal", a=0.2, mode="fan_out"),
    "torch_trunc_normal_abs": presets.get("torch.trunc_normal", mean=0.1, std=1.0, a=-0.5, b=2.0),
    "trunc_upper_tail": initscale.TruncatedNormal(1.0, lower=3.0, upper=6.0),
    "trunc_lower_tail": initscale.TruncatedNormal(2.0, mean=1.0, lower=-7.0, upper=-3.5),
    "normal": initscale.Normal(0.5, mean=-1.0),
    "uniform_offcentre": initscale.Uniform(0.0, 0.01),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_draws_match_the_analytic_distribution(name: str) -> None:
    spec = SPECS[name]
    fans = initscale.compute_fans(SHAPE, "keras")
    x = isnp.initializer(spec, layout="keras")(SHAPE, rng=SEED, dtype=np.float64)
    assert failures(x, spec.resolve(fans)) == []


@pytest.mark.parametrize(
    ("layout", "shape", "blocks"),
    [
        ("keras", (3, 3, 8, 16), lambda w: [w.reshape(72, 16)]),
        ("torch", (16, 8, 3), lambda w: [w.reshape(16, 24).T]),
        ("torch.lstm", (256, 64), lambda w: [w[g * 64 : (g + 1) * 64].T for g in range(4)]),
        ("keras.gru", (32, 96), lambda w: [w[:, g * 32 : (g + 1) * 32] for g in range(3)]),
        (
            "torch.conv_transpose:groups=2",
            (8, 3, 3, 3),
            lambda w: [w[g * 4 : (g + 1) * 4].transpose(0, 2, 3, 1).reshape(36, 3) for g in range(2)],
        ),
    ],
)
def test_orthogonal_is_orthogonal_per_block(layout, shape, blocks) -> None:
    w = isnp.initializer(initscale.Orthogonal(1.5), layout)(shape, rng=0, dtype=np.float64)
    for m in blocks(w):
        k = min(m.shape)
        gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        np.testing.assert_allclose(gram, 1.5**2 * np.eye(k), atol=1e-12)
    fans = initscale.compute_fans(shape, layout)
    assert np.mean(w**2) == pytest.approx(initscale.Orthogonal(1.5).variance(fans), rel=1e-12)


def test_an_rng_that_is_not_a_generator_or_seed_is_refused() -> None:
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        isnp.initializer(presets.get("he_normal"))((3, 4), rng="seed")


# --- far-tail, one-sided and narrow truncated normals (issue 16) -------------------------------------


@pytest.mark.parametrize(("a", "b"), [(38.3, math.inf), (-38.45, -38.3)], ids=["[38.3,inf]", "[-38.45,-38.3]"])
def test_tail_truncated_normals_past_float64s_normal_range_are_exact(a, b) -> None:
    # tests/test_adapters.py draws the reference's tails of _tails.TAIL_CASES. Past 37σ Φ is subnormal
    # (Φ(−38.3) = 1e-321 has 10 bits): there the far-tail offset takes over (Φ⁻¹ of a uniform on
    # (0, 1e-321) gave 81 of 1e5 values −inf).
    x = isnp.initializer(tail_spec(a, b))(TAIL_SHAPE, rng=11, dtype=np.float64)
    assert tail_failures(x, a, b) == []
