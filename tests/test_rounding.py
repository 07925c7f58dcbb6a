"""Bounds after rounding: bounded draws stored in bfloat16/float16/float32 never leave their
support, in every sampler (NumPy, torch, JAX, and the portable streams), and a plain cast of the
same samples does (the planted bug the check must catch)."""

from __future__ import annotations

import numpy as np
import pytest

import initscale
from initscale import presets
from initscale.adapters import numpy as isnp
from initscale.rounding import clip_bounds, representable_bounds, round_down, round_up
from initscale.streams import Stream

# A bound that each format rounds *up* to nearest (bf16(0.1) = 0.10009765625, f16(0.3) =
# 0.300048828125, f32(0.1) = 0.10000000149...), so a plain cast of draws near it leaves [low, high].
HALF_WIDTH = {"bfloat16": 0.1, "float16": 0.3, "float32": 0.1}
SHAPE = (1024, 1024)


def _specs(h: float) -> dict[str, initscale.Spec]:
    return {
        "truncated": presets.get(f"torch.trunc_normal:std={h / 2},a={-h},b={h}"),
        "uniform": presets.get(f"torch.uniform:a={-h},b={h}"),
        "asymmetric uniform": presets.get(f"torch.uniform:a={-h / 3},b={h}"),
    }


def _outside(values, spec: initscale.Spec) -> int:
    """How many stored values lie outside the spec's exact [low, high] (compared in float64)."""
    low, high = spec.bounds(initscale.Fans(1, 1))
    x = np.asarray(values, dtype=np.float64)
    return int(((x < low) | (x > high)).sum())


def test_round_down_and_up_bracket_and_are_adjacent() -> None:
    rng = np.random.default_rng(0)
    xs = np.concatenate(
        [
            rng.standard_normal(3000) * 10.0 ** rng.integers(-9, 5, 3000),
            [0.0, 1e-45, -1e-45, 1e-300, 65504.0, 70000.0, -70000.0, 0.1, -0.1, 1.0],
        ]
    )
    for fmt, kind in (("float16", np.float16), ("float32", np.float32)):
        for x in xs:
            lo, hi = round_down(x, fmt), round_up(x, fmt)
            assert lo <= x <= hi and float(kind(lo)) == lo and float(kind(hi)) == hi, (fmt, x)
            if lo != x and np.isfinite(hi):  # nothing of the format strictly between lo and hi
                assert float(np.nextafter(kind(lo), kind(np.inf))) == hi, (fmt, x)
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    for x in xs[np.abs(xs) < 1e38]:
        lo, hi = round_down(x, "bfloat16"), round_up(x, "bfloat16")
        assert lo <= x <= hi and float(bf16(lo)) == lo and float(bf16(hi)) == hi, x
        if lo != x:  # adjacent bfloat16 values: 8 mantissa bits apart in float32 terms
            mid = np.float32(lo) + (np.float32(hi) - np.float32(lo)) / 2
            assert float(bf16(mid)) in (lo, hi), x
    assert representable_bounds(-0.1, 0.1, "bfloat16") == (-0.099609375, 0.099609375)
    assert round_down(0.5, "float64") == 0.5 and clip_bounds(initscale.Normal(1.0).resolve(None), "float32") is None
    with pytest.raises(ValueError, match="Argument `dtype` must be one of 'bfloat16'"):
        round_down(1.0, "int8")


@pytest.mark.parametrize("fmt", ["float16", "float32"])
def test_numpy_draws_stay_inside_after_rounding(fmt) -> None:
    for name, spec in _specs(HALF_WIDTH[fmt]).items():
        values = isnp.initializer(spec)(SHAPE, rng=np.random.default_rng(0), dtype=fmt)
        assert _outside(values, spec) == 0, name
    if fmt == "float16":  # the planted bug: the same float64 draws, cast without the clip
        spec = _specs(HALF_WIDTH[fmt])["uniform"]
        naive = isnp.sample(spec.resolve(None), SHAPE, np.random.default_rng(0)).astype(fmt)
        assert _outside(naive, spec) > 0


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "float32"])
def test_torch_draws_stay_inside_after_rounding(fmt) -> None:
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    dtype = getattr(torch, fmt)
    for name, spec in _specs(HALF_WIDTH[fmt]).items():
        w = torch.empty(SHAPE, dtype=dtype)
        ist.initializer(spec)(w, generator=torch.Generator().manual_seed(0))
        assert _outside(w.double().numpy(), spec) == 0, name
        ist.initializer(spec, stream=Stream(0, name))(w)
        assert _outside(w.double().numpy(), spec) == 0, f"stream {name}"
    if fmt != "float32":  # the planted bug: torch's own fp32 draw, stored with a plain cast
        spec = _specs(HALF_WIDTH[fmt])["truncated"]
        low, high = spec.bounds(initscale.Fans(1, 1))
        staged = torch.empty(SHAPE).uniform_(low, high, generator=torch.Generator().manual_seed(0))
        assert _outside(staged.to(dtype).double().numpy(), spec) > 0


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "float32"])
def test_jax_draws_stay_inside_after_rounding(fmt) -> None:
    jax = pytest.importorskip("jax")
    isj = pytest.importorskip("initscale.adapters.jax")
    for name, spec in _specs(HALF_WIDTH[fmt]).items():
        w = isj.initializer(spec)(jax.random.key(0), SHAPE, fmt)
        assert _outside(np.asarray(w.astype("float32")), spec) == 0, name
        w = isj.initializer(spec, stream=Stream(0, name))(None, SHAPE, fmt)
        assert _outside(np.asarray(w.astype("float32")), spec) == 0, f"stream {name}"


def test_low_precision_draws_still_pass_the_distribution_checks() -> None:
    """The clip moves only draws within one bf16 ulp of a bound: the bf16 weights still pass the
    distribution checks (at the tolerance of bf16 rounding)."""
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    from _stats import failures

    specs = {**_specs(HALF_WIDTH["bfloat16"]), "normal": presets.get("torch.normal:std=0.05")}
    for name, spec in specs.items():
        for dtype in (torch.bfloat16, torch.float16):
            w = torch.empty(SHAPE, dtype=dtype)
            ist.initializer(spec)(w, generator=torch.Generator().manual_seed(1))
            assert failures(w, spec.resolve(None)) == [], (name, dtype)


def test_the_rounded_ks_still_catches_a_wrong_scale_in_bfloat16() -> None:
    """The one-ulp band of the KS check is no blind spot: a bf16 uniform 2 % too wide (a wrong
    limit) fails KS itself, not only the second moment."""
    torch = pytest.importorskip("torch")
    from initscale import testing

    h = HALF_WIDTH["bfloat16"]
    spec = _specs(h)["uniform"]
    wrong = torch.empty(SHAPE).uniform_(-1.02 * h, 1.02 * h, generator=torch.Generator().manual_seed(2))
    report = testing.check_samples(wrong.clamp_(-h, h).to(torch.bfloat16), spec.resolve(None))
    assert not {c.name: c.ok for c in report.checks}["ks"]


def test_native_low_precision_deviations_documented_in_conventions() -> None:
    """docs/conventions.md section 7: the frameworks' own bfloat16 draws leave their bounds
    (torch, JAX uniform) or never reach them (JAX truncated normal); measured here."""
    torch = pytest.importorskip("torch")
    w = torch.empty(SHAPE, dtype=torch.bfloat16)
    torch.nn.init.trunc_normal_(w, std=0.05, a=-0.1, b=0.1, generator=torch.Generator().manual_seed(0))
    assert _outside(w.double().numpy(), _specs(0.1)["truncated"]) > 0
    # torch's CPU uniform_ on bf16 moves draws that round up to the upper bound to bf16(lower bound):
    # outside the bounds, and a mean bias the mean check (z = 4.5) catches at 2^22 draws
    from initscale import testing

    spec = _specs(0.1)["uniform"]
    w = torch.empty(2**22, dtype=torch.bfloat16).uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(0))
    x = w.double().numpy()
    assert x.max() <= 0.1 and set(x[x < -0.1]) == {-0.10009765625}
    checks = {c.name: c.ok for c in testing.check_samples(w, spec.resolve(None)).checks}
    assert not checks["mean"]  # (its support check allows one rounding: the exact bounds are checked above)
    ist = pytest.importorskip("initscale.adapters.torch")
    ist.initializer(spec)(w, generator=torch.Generator().manual_seed(0))  # staged in fp32: unbiased, inside
    assert all(c.ok for c in testing.check_samples(w, spec.resolve(None)).checks)
    jax = pytest.importorskip("jax")
    u = jax.random.uniform(jax.random.key(0), SHAPE, "bfloat16", -0.1, 0.1)
    assert _outside(np.asarray(u.astype("float32")), _specs(0.1)["uniform"]) > 0
    z = jax.random.truncated_normal(jax.random.key(0), -2.0, 2.0, SHAPE, "bfloat16")
    # correct draws reach within q of each bound, 1 − F(max) ≤ q with (1 − q)ⁿ = 1e-6 (widened by one
    # bf16 ulp); JAX's stop at 1.87: the reach check, with its derived tolerance, fails
    standard = initscale.TruncatedNormal(1.0, 0.0, -2.0, 2.0, "absolute").resolve(None)
    assert not {c.name: c.ok for c in testing.check_samples(z, standard).checks}["approaches_bounds"]
