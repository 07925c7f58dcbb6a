"""The NumPy reference sampler draws exactly the analytic distribution of every spec."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _tails import TAIL_CASES, TAIL_IDS, TAIL_SHAPE, tail_failures, tail_spec

import initscale
from _stats import failures
from initscale import presets
from initscale.adapters import numpy as isnp

SHAPE = (400, 500)  # 200,000 draws per check
SEED = 20261125

SPECS = {
    "he_normal": presets.get("he_normal"),
    "glorot_uniform": presets.get("glorot_uniform"),
    "lecun_normal_fan_geo": initscale.VarianceScaling(1.0, "fan_geo_avg", "truncated_normal"),
    "trunc_t1.5": initscale.VarianceScaling(3.0, "fan_out", "truncated_normal", truncation=1.5),
    "tf1_uncorrected": presets.get("tf1.variance_scaling_initializer"),
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


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dtypes_and_bounds_hold_after_cast(dtype: str) -> None:
    spec = presets.get("he_normal")
    x = isnp.initializer(spec)((300, 200), rng=1, dtype=dtype)
    assert x.dtype == np.dtype(dtype)
    low, high = spec.bounds(initscale.compute_fans((300, 200), "keras"))
    assert x.min() >= np.asarray(low, dtype) and x.max() <= np.asarray(high, dtype)


def test_same_seed_same_values_and_generator_advances() -> None:
    init = isnp.initializer(presets.get("glorot_normal"))
    np.testing.assert_array_equal(init((8, 4), rng=3), init((8, 4), rng=3))
    rng = np.random.default_rng(3)
    assert not np.array_equal(init((8, 4), rng=rng), init((8, 4), rng=rng))


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


def test_fixed_scale_specs_fill_rank_one_and_zero_size() -> None:
    assert isnp.initializer(initscale.Zeros())((5,), rng=0).tolist() == [0.0] * 5
    assert isnp.initializer(initscale.Constant(0.5))((2,), rng=0).tolist() == [0.5, 0.5]
    assert isnp.initializer(presets.get("he_normal"))((0, 7), rng=0).shape == (0, 7)


def test_bad_arguments() -> None:
    init = isnp.initializer(presets.get("he_normal"))
    with pytest.raises(TypeError, match="`dtype` must be one of 'float16', 'float32', 'float64'"):
        init((3, 4), rng=0, dtype=np.int32)
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        init((3, 4), rng="seed")
    with pytest.raises(ValueError, match="needs axis -2"):
        init((3,), rng=0)
    with pytest.raises(TypeError, match="`spec` must be an initscale spec"):
        isnp.initializer("he_normal")  # type: ignore[arg-type]


# --- far-tail, one-sided and narrow truncated normals (issue 16) -------------------------------------


@pytest.mark.parametrize(
    ("a", "b"), [*TAIL_CASES, (38.3, math.inf), (-38.45, -38.3)], ids=[*TAIL_IDS, "[38.3,inf]", "[-38.45,-38.3]"]
)
def test_tail_truncated_normals_are_exact(a, b) -> None:
    # The float64 reference. Past 37σ Φ is subnormal (Φ(−38.3) = 1e-321 has 10 bits): there the
    # far-tail offset takes over (Φ⁻¹ of a uniform on (0, 1e-321) gave 81 of 1e5 values −inf).
    x = isnp.initializer(tail_spec(a, b))(TAIL_SHAPE, rng=11, dtype=np.float64)
    assert tail_failures(x, a, b) == []
