"""Mutation proof: each classic bug, planted in the sampler, is caught by the checks.

Each case draws with a buggy recipe and checks the draws against the correct spec; the named
check must fail. Together they show that every statistical check can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _tails import TAIL_N, tail_failures

import initscale
from _stats import failures
from initscale import presets
from initscale.adapters import numpy as isnp
from initscale.distributions import NormalDist, TruncatedNormalDist, UniformDist

SHAPE = (400, 500)
FANS = initscale.compute_fans(SHAPE, "keras")
RNG = 7


def _draw(dist) -> np.ndarray:
    return isnp.sample(dist, SHAPE, np.random.default_rng(RNG))


def _no_truncation_correction():
    spec = presets.get("he_normal")
    sigma = math.sqrt(2.0 / FANS.fan_in)  # forgot to divide by 0.8796
    return spec, TruncatedNormalDist(0.0, sigma, -2 * sigma, 2 * sigma)


def _uniform_limit_sqrt_var():
    spec = presets.get("glorot_uniform")
    limit = math.sqrt(spec.variance(FANS))  # sqrt(var) instead of sqrt(3 var)
    return spec, UniformDist(-limit, limit)


def _swapped_fans():
    spec = presets.get("he_normal")
    swapped = initscale.Fans(FANS.fan_out, FANS.fan_in)
    return spec, spec.resolve(swapped)


def _normal_for_truncated():
    spec = presets.get("lecun_normal")
    return spec, NormalDist(0.0, spec.std(FANS))  # same variance, no truncation


def _torch_absolute_bounds_as_std_units():
    spec = presets.get("torch.trunc_normal", std=0.5, a=-0.5, b=0.5)  # bounds at ±1 std
    return spec, initscale.TruncatedNormal(0.5, lower=-0.5, upper=0.5, bounds_in="std").resolve()


def _off_centre_uniform():
    spec = presets.get("he_uniform")
    limit = spec.sampler_parameter(FANS)
    return spec, UniformDist(0.0, 2 * limit)  # jax.uniform-style [0, 2L) instead of ±L


def _right_variance_wrong_shape():
    spec = presets.get("he_uniform")
    return spec, NormalDist(0.0, spec.std(FANS))  # uniform asked, normal of equal variance drawn


def _bounds_never_approached():
    spec = presets.get("glorot_uniform")
    limit = spec.sampler_parameter(FANS)
    return spec, UniformDist(-0.999 * limit, 0.999 * limit)


CASES = {
    "no_truncation_correction": (_no_truncation_correction, "second_moment"),
    "uniform_limit_sqrt_var": (_uniform_limit_sqrt_var, "second_moment"),
    "swapped_fans": (_swapped_fans, "second_moment"),
    "normal_for_truncated": (_normal_for_truncated, "support"),
    "torch_absolute_bounds_as_std_units": (_torch_absolute_bounds_as_std_units, "second_moment"),
    "off_centre_uniform": (_off_centre_uniform, "mean"),
    "right_variance_wrong_shape": (_right_variance_wrong_shape, "ks"),
    "bounds_never_approached": (_bounds_never_approached, "approaches_bounds"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_planted_bug_is_caught(case: str) -> None:
    make, check = CASES[case]
    spec, buggy = make()
    failed = {f.split(":")[0] for f in failures(_draw(buggy), spec.resolve(FANS if not spec.fixed_scale else None))}
    assert check in failed, f"{case}: expected {check!r} to fail, failed: {sorted(failed)}"


@pytest.mark.parametrize(
    ("case", "preset", "shape", "layout", "wrong_layout"),
    [
        ("receptive_field_ignored", "he_uniform", (3, 3, 32, 64), "keras", initscale.Layout(-2, -1, batch_axes=(0, 1))),
        ("stacked_gate_fans", "glorot_uniform", (64, 256), "keras.lstm", "keras"),
        ("grouped_conv_total_fans", "glorot_uniform", (64, 8, 3, 3), "torch.conv:groups=8", "torch"),
        ("conv_transpose_native_fans", "he_uniform", (16, 32, 3, 3), "torch.conv_transpose", "torch"),
        ("depthwise_native_fans", "he_uniform", (3, 3, 64, 2), "keras.depthwise_conv", "keras"),
    ],
)
def test_wrong_fan_convention_is_caught(case, preset, shape, layout, wrong_layout) -> None:
    spec = presets.get(preset)
    right = spec.resolve(initscale.compute_fans(shape, layout))
    x = isnp.initializer(spec, wrong_layout)(shape, rng=RNG, dtype=np.float64)
    assert "second_moment" in {f.split(":")[0] for f in failures(x, right)}, case


def test_correct_draws_pass_every_check() -> None:
    """The control: the same checks on correct draws pass (so the failures above are the bugs')."""
    for make, _ in CASES.values():
        spec, _ = make()
        dist = spec.resolve(None if spec.fixed_scale else FANS)
        assert failures(_draw(dist), dist) == []


# --- the same bugs planted in a backend of the parity matrix --------------------------------------


def _buggy_numpy_backend(bug: str):
    """A copy of the NumPy backend with one classic bug in how it turns spec + layout into draws."""
    from initscale import parity
    from initscale.fans import resolve

    def draw(spec, shape, layout, seed):
        rule = resolve(layout)
        fans = rule.fans(shape)
        dist = spec.resolve(None if spec.fixed_scale else fans)
        if bug == "no_truncation_correction" and isinstance(dist, TruncatedNormalDist):
            s = dist.std  # σ = √(scale/n), forgetting the /0.8796
            dist = TruncatedNormalDist(
                dist.loc, s, dist.loc + dist.standard_bounds[0] * s, dist.loc + dist.standard_bounds[1] * s
            )
        elif bug == "uniform_limit_sqrt_var" and isinstance(dist, UniformDist):
            half = math.sqrt(dist.variance)
            dist = UniformDist(-half, half)
        elif bug == "swapped_fans":
            dist = spec.resolve(initscale.Fans(fans.fan_out, fans.fan_in, fans.receptive_field))
        elif bug == "receptive_field_ignored":
            rf = fans.receptive_field
            dist = spec.resolve(initscale.Fans(fans.fan_in / rf, fans.fan_out / rf))
        elif bug == "stacked_gate_fans":
            dist = spec.resolve(
                rule.fans(shape) if "lstm" not in str(rule) else initscale.compute_fans(shape, "keras:native=true")
            )
        elif bug == "absolute_bounds_as_std_units" and isinstance(spec, initscale.TruncatedNormal):
            dist = initscale.TruncatedNormal(spec.stddev, spec.mean, spec.lower, spec.upper, "std").resolve()
        elif bug == "normal_for_truncated" and isinstance(dist, TruncatedNormalDist):
            dist = NormalDist(dist.mean, dist.std)
        elif bug == "erfinv_f32_tails" and isinstance(dist, TruncatedNormalDist):
            a, b = dist.standard_bounds  # the pre-issue-16 float32 erf path (JAX, Keras on JAX)
            z = _erfinv_draw(a, b, np.float32, math.prod(shape)).astype(np.float64)
            return (dist.loc + dist.sigma * z).reshape(shape)
        return isnp.sample(dist, shape, np.random.default_rng(seed))

    return parity.Backend("numpy", ("numpy",), "keras", draw)


MATRIX_BUGS = [  # bug, a preset and a layer where it shows
    ("no_truncation_correction", "he_normal", "dense"),
    ("uniform_limit_sqrt_var", "glorot_uniform", "dense"),
    ("swapped_fans", "he_uniform", "dense"),
    ("receptive_field_ignored", "lecun_normal", "conv2d"),
    ("stacked_gate_fans", "glorot_uniform", "lstm_gates"),
    ("absolute_bounds_as_std_units", "torch.trunc_normal:std=0.5,a=-0.5,b=0.5", "dense"),
    ("normal_for_truncated", "lecun_normal", "conv2d"),
    ("erfinv_f32_tails", "edge.truncated_left_tail", "dense"),
    ("erfinv_f32_tails", "edge.truncated_far_narrow", "dense"),
]


@pytest.mark.parametrize(("bug", "preset", "layer"), MATRIX_BUGS, ids=[f"{b[0]}-{b[1]}" for b in MATRIX_BUGS])
def test_the_parity_matrix_catches_planted_bugs(monkeypatch, bug, preset, layer) -> None:
    from initscale import parity

    clean = parity.run(backends=["numpy"], presets=[preset], layers=[layer], cross=False)
    assert all(r.passed for r in clean), bug  # the control
    monkeypatch.setitem(parity.BACKENDS, "numpy", _buggy_numpy_backend(bug))
    rows = parity.run(backends=["numpy"], presets=[preset], layers=[layer], cross=False)
    assert not all(r.passed for r in rows), f"the matrix did not notice {bug}"


# --- the backward pass of initscale.propagate and the activations' derivatives --------------------


def _finite_difference_derivative(eps: float = 1e-4):
    """The old backward pass: f' by central differences with a fixed ε, which reads ReLU's derivative
    as the chord (0.5) once the signal is below ε."""
    from initscale import gains

    def activation(name, param):
        f, default = gains.ACTIVATIONS[name]
        p = default if param is None else param
        p = p if p is not None else 0.0
        return (lambda x: f(x, p)), (lambda x: (f(x + eps, p) - f(x - eps, p)) / (2 * eps))

    return activation


def test_fixed_step_finite_differences_fail_the_backward_theory(monkeypatch) -> None:
    from test_explain_propagate import backward_theory_failures

    from initscale import propagate

    assert backward_theory_failures("glorot_uniform", "relu", None) == []  # the control
    monkeypatch.setattr(propagate, "_activation", _finite_difference_derivative())
    failed = backward_theory_failures("glorot_uniform", "relu", None)
    assert failed, "the backward theory check did not notice the fixed-step derivative"
    assert int(failed[0].split()[1].rstrip(":")) >= 20  # only where the signal fell below ε


@pytest.mark.parametrize(
    ("name", "param", "wrong"),
    [
        ("tanh", 0.0, lambda x, p: 1.0 - np.tanh(x)),  # forgot the square
        ("elu", 1.0, lambda x, p: np.where(x > 0, 1.0, p * np.expm1(np.minimum(x, 0.0)))),  # f for f' on x < 0
        ("relu", 0.0, lambda x, p: (np.maximum(x + 1e-4, 0) - np.maximum(x - 1e-4, 0)) / 2e-4),  # fixed step
        ("gelu", 0.0, lambda x, p: 0.5 * (1.0 + np.tanh(x / math.sqrt(2.0)))),  # Φ(x) only, and approximated
    ],
)
def test_wrong_derivatives_are_caught(name, param, wrong) -> None:
    from test_gains import derivative_failures

    assert derivative_failures(name, param) == []  # the control
    assert derivative_failures(name, param, wrong), name


# --- fixed-point gains: the independent quadrature and the simulation catch planted bugs ----------


def _mean_squared(act, a):  # E[f(aZ)]² for E[f(aZ)²]
    from initscale import gains

    return gains._expect(act.f, a) ** 2


def _derivative_mean_squared(act, a):  # E[f'(aZ)]² for E[f'(aZ)²]
    from initscale import gains

    return gains._expect(act.df, a) ** 2


@pytest.mark.parametrize(
    ("case", "target", "bug"),
    [
        ("second_moment_as_squared_mean", "_moment", _mean_squared),
        ("chi_of_the_squared_mean_derivative", "_derivative_moment", _derivative_mean_squared),
    ],
)
def test_planted_quadrature_bugs_fail_the_fixed_point_checks(monkeypatch, case, target, bug) -> None:
    from test_gains import fixed_point_failures

    from initscale import gains

    assert fixed_point_failures("gelu", gains.fixed_point("gelu")) == []  # the control
    monkeypatch.setattr(gains, target, bug)
    gains._named_fixed_point.cache_clear()  # named fixed points are cached: recompute with the bug
    try:
        assert fixed_point_failures("gelu", gains.fixed_point("gelu")), case
    finally:
        gains._named_fixed_point.cache_clear()  # no buggy answer outlives the test


def test_derived_gain_as_fixed_point_is_caught() -> None:
    import dataclasses

    from test_gains import fixed_point_failures, simulation_failures

    from initscale import gains

    right = gains.fixed_point("gelu")
    wrong = dataclasses.replace(right, gain=gains.gain("gelu", method="derived"))  # 1.5335 for 1.4680
    assert fixed_point_failures("gelu", wrong), "the quadrature check did not notice"
    failed = simulation_failures("gelu", wrong)
    assert any(f.startswith("signal: second moment") for f in failed), failed


@pytest.mark.parametrize(
    ("case", "name", "chi"),
    [
        ("chi_without_the_gain_squared", "gelu", lambda fp: fp.chi / fp.gain**2),
        ("chi_of_the_squared_mean_derivative", "silu", lambda fp: fp.gain**2 * 0.5**2),  # E[f'(aZ)] ≈ 1/2 squared
        ("chi_read_as_the_variance_map_slope", "tanh", lambda fp: fp.slope),
    ],
)
def test_wrong_chi_fails_the_simulation(case, name, chi) -> None:
    import dataclasses

    from test_gains import simulation_failures

    from initscale import gains

    right = gains.fixed_point(name)
    wrong = dataclasses.replace(right, chi=chi(right), verdict=gains.verdict(chi(right)))
    failed = simulation_failures(name, wrong)
    assert any(f.startswith("chi:") for f in failed), (case, failed)


def _closed_form_moments(a: float, b: float) -> tuple[float, float, float]:
    """The planted bug: the textbook raw-moment recursion m_k = (k−1)m_{k−2} + (a^{k−1}φ(a) −
    b^{k−1}φ(b))/Z with Z = Φ(b) − Φ(a) (initscale's moments before issue 16)."""
    from initscale.normal_math import normal_cdf, normal_pdf

    z = normal_cdf(b) - normal_cdf(a)
    pa, pb = normal_pdf(a), normal_pdf(b)
    m1 = (pa - pb) / z
    m2 = 1.0 + (a * pa - b * pb) / z
    m3 = 2.0 * m1 + (a * a * pa - b * b * pb) / z
    m4 = 3.0 * m2 + (a**3 * pa - b**3 * pb) / z
    var = m2 - m1 * m1
    return m1, var, (m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4) / var**2


@pytest.mark.parametrize(("a", "b"), [(8.0, 9.0), (0.0, 1e-4), (-1e-5, 1e-5), (4.2, 4.4)])
def test_the_quadrature_check_catches_closed_form_moments(a, b) -> None:
    # tests/test_normal_math.py compares every moment with mpmath at rel 1e-9; the old formulas
    # (cancellation in the upper tail and in narrow intervals) miss it there.
    from test_normal_math import _exact_moments

    ref = _exact_moments(a, b)
    got = _closed_form_moments(a, b)
    assert any(g != pytest.approx(r, rel=1e-9, abs=1e-300) for g, r in zip(got, ref, strict=True))


# --- the tail checks of tests/_tails.py against planted tail bugs (issue 16) -------------------------


def _erfinv_draw(a: float, b: float, dtype: type, size: int = TAIL_N) -> np.ndarray:
    """The planted bug: the erf-space inverse CDF (jax.random.truncated_normal, torch's and Keras's
    old paths) in ``dtype``, lower tail: u ~ U(erf(α/√2), erf(β/√2)), z = √2·erfinv(u)."""
    from scipy import special

    flip = a > 0.0
    lo, hi = (-b, -a) if flip else (a, b)
    ea, eb = (dtype(math.erf(t / math.sqrt(2.0))) for t in (lo, hi))
    u = ea + (eb - ea) * np.random.default_rng(RNG).random(size).astype(dtype)
    with np.errstate(all="ignore"):
        z = np.clip(dtype(math.sqrt(2.0)) * special.erfinv(u), dtype(lo), dtype(hi))
    return (-z if flip else z).astype(dtype)


def _ndtri_past_phis_range(a: float, b: float, dtype: type, size: int = TAIL_N) -> np.ndarray:
    """The planted bug: the Φ⁻¹ path used beyond Φ's range of ``dtype`` (the float64 plan's
    threshold, 37σ, in float32): Φ(−20) = 2.8e-89 rounds to 0 in float32."""
    from scipy import special

    from initscale.normal_math import truncated_plan

    plan = truncated_plan(a, b, "float64")
    assert plan.method == "ndtri"
    u = dtype(plan.p_hi) - dtype(plan.p_width) * np.random.default_rng(RNG).random(size).astype(dtype)
    with np.errstate(all="ignore"):
        z = np.clip(special.ndtri(u), dtype(plan.z_low), dtype(plan.z_high))
    return (plan.sign * z).astype(dtype)


TAIL_BUGS = {
    "erfinv_f32_one_sided": (lambda: _erfinv_draw(6.0, math.inf, np.float32), 6.0, math.inf, "finite"),
    # 1,300 distinct values in [4.2, 4.4]: the largest draws stop short of the bound
    "erfinv_f32_narrow": (lambda: _erfinv_draw(4.2, 4.4, np.float32), 4.2, 4.4, "approaches_bounds"),
    "erfinv_f32_left": (lambda: _erfinv_draw(-math.inf, -4.5, np.float32), -math.inf, -4.5, "finite"),
    "erfinv_f32_far_narrow": (lambda: _erfinv_draw(5.5, 6.5, np.float32), 5.5, 6.5, "ks"),
    "erfinv_f64_far": (lambda: _erfinv_draw(8.5, math.inf, np.float64), 8.5, math.inf, "finite"),
    "ndtri_f32_past_range": (lambda: _ndtri_past_phis_range(20.0, 20.5, np.float32), 20.0, 20.5, "ks"),
}


@pytest.mark.parametrize("bug", sorted(TAIL_BUGS))
def test_the_tail_checks_catch_planted_tail_bugs(bug) -> None:
    draw, a, b, check = TAIL_BUGS[bug]
    found = tail_failures(draw(), a, b)
    assert any(f.startswith(check) for f in found), found
