"""initscale.explain, initscale.propagate and their commands: the numbers people ask for."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import initscale
from initscale import cli, presets
from initscale.explain import explain, native_calls, parse_spec
from initscale.propagate import propagate


def test_explain_numbers_and_fans_arithmetic() -> None:
    e = explain("torch.kaiming_normal:a=0.2,mode=fan_out", (64, 32, 3, 3))
    assert e.layout == "torch" and (e.fans.fan_in, e.fans.fan_out) == (288, 576)
    assert e.std == pytest.approx(math.sqrt(2 / (1 + 0.04) / 576), rel=1e-12) and e.bounds is None
    assert "fan_out = out 64 (axes [0]) × receptive field 3·3 (axes [2, 3]) = 576" in e.fans_how
    lstm = explain("he_normal", (256, 64), "torch.lstm")
    assert "out_groups 4 = 64" in lstm.fans_how and lstm.fans.fan_out == 64
    t = 2.0 * lstm.sampler_parameter  # corrected: σ = √(2/64)/0.8796, bounds ±2σ
    assert lstm.bounds == pytest.approx((-t, t)) and lstm.std == pytest.approx(math.sqrt(2 / 64))


def test_explain_json_spec_and_fixed_scale() -> None:
    spec = initscale.TruncatedNormal(0.02, 0.0, -0.04, 0.04, "absolute")
    e = explain(json.dumps(spec.to_dict()), (10,))
    assert e.spec == spec and e.fans is None and e.bounds == pytest.approx((-0.04, 0.04))
    assert e.native["torch"].startswith("torch.nn.init.trunc_normal_(w, mean=0, std=0.02, a=-0.04, b=0.04)")
    # the bounds each narrower format keeps: its values inside [-0.04, 0.04] (initscale.rounding)
    # bf16 rounds 0.04 up to 0.0400390625; one bf16 ulp (2^-12 there) below it is the stored bound
    assert e.stored_bounds["bfloat16"] == (-(0.0400390625 - 2**-12), 0.0400390625 - 2**-12)
    assert "stored inside" in str(e) and explain("torch.kaiming_normal", (4, 4)).stored_bounds is None


@pytest.mark.parametrize("name", presets.names())
def test_native_calls_reproduce_the_distribution(name) -> None:
    """Each native call's own numbers give the preset's distribution back (σ, bounds, limits)."""
    spec = presets.get(name)
    shape = (3, 3, 64, 128)
    dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(shape, "keras"))
    calls = native_calls(dist)
    assert set(calls) == {"torch", "keras", "jax", "numpy", "tf1"}
    for framework, call in calls.items():
        assert call.startswith(
            ("torch.", "keras.", "jax.", "lambda", "rng.", "np.", "scipy.", "tf.", "initscale.", "no exact equivalent")
        ), (framework, call)
    if type(dist).__name__ == "TruncatedNormalDist":
        assert f"{dist.sigma:.6g}" in calls["jax"]


def test_unknown_presets_list_close_matches() -> None:
    with pytest.raises(ValueError, match=r"Unknown preset 'kaiming_normall'\. Did you mean 'kaiming_normal'"):
        parse_spec("kaiming_normall")


def test_explain_and_gain_commands(capsys) -> None:
    assert cli.main(["explain", "he_normal", "--shape", "3,3,64,128", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"fan_in", "fan_out", "variance", "std", "bounds"} <= set(data) and data["fan_in"] == 576
    assert cli.main(["gain", "leaky_relu", "--param", "0.2", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == pytest.approx(math.sqrt(2 / 1.04))
    assert cli.main(["gain", "tanh", "--method", "derived"]) == 0
    out = capsys.readouterr().out
    assert "torch constant  1.66666666667" in out and "value           1.5925" in out
    assert cli.main(["explain", "he_normall", "--shape", "3,4"]) == 2
    assert "Did you mean 'he_normal'" in capsys.readouterr().err
    assert cli.main(["gain", "relux"]) == 2


def _growths(name: str, activation: str, seeds: range, **kw) -> np.ndarray:
    return np.array([propagate(presets.get(name), activation, seed=s, **kw).forward_growth() for s in seeds])


def test_textbook_results() -> None:
    """He keeps ReLU's forward variance flat; Glorot (fan_in = fan_out) halves it per layer; tanh
    with a too-small init vanishes. Each claim on the per-layer growth, averaged over 6 independent
    networks; tolerance 4.5 standard errors of that mean (sd estimated from the 6 runs)."""
    kw = {"depth": 20, "width": 256, "batch": 128}
    for name, expected in (("he_normal", 1.0), ("glorot_normal", 0.5)):
        g = _growths(name, "relu", range(6), **kw)
        assert _mean_within(g, expected), (name, g)
    small = _growths("jax.normal", "tanh", range(2), **kw)  # N(0, 0.01²): gain 0.01·√256 = 0.16
    assert np.all(small < 0.1)


def _mean_within(values: np.ndarray, expected: float) -> bool:
    """|mean − expected| within 4.5 standard errors, the sd estimated from the independent runs."""
    return bool(abs(values.mean() - expected) <= 4.5 * values.std(ddof=1) / math.sqrt(values.size))


def test_backward_mirrors_forward_and_backends_agree() -> None:
    kw = {"depth": 20, "width": 256, "batch": 128}
    back = np.array([propagate(presets.get("glorot_normal"), "relu", seed=s, **kw).backward_growth() for s in range(6)])
    assert _mean_within(back, 2.0), back  # gradients halve on their way back to the input
    pytest.importorskip("torch")
    fwd = np.array(
        [propagate(presets.get("he_normal"), "relu", backend="torch", seed=s, **kw).forward_growth() for s in range(6)]
    )
    assert _mean_within(fwd, 1.0), fwd


def test_cnn_and_bad_input() -> None:
    run = propagate(presets.get("he_normal"), "relu", arch="cnn", depth=6, width=32, batch=32)
    assert len(run.forward_variance) == 6 and all(v > 0 for v in run.backward_variance)
    with pytest.raises(ValueError, match="Argument `arch` must be one of 'cnn', 'mlp'"):
        propagate(presets.get("he_normal"), arch="rnn")
    with pytest.raises(ValueError, match="Argument `activation` must be one of"):
        propagate(presets.get("he_normal"), "relux")


def test_propagate_command(tmp_path, capsys) -> None:
    assert (
        cli.main(
            [
                "propagate",
                "--spec",
                "he_normal",
                "--spec",
                "glorot_uniform",
                "--depth",
                "5",
                "--width",
                "64",
                "--format",
                "json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert [r["spec"] for r in data["runs"]] == ["he_normal", "glorot_uniform"]
    assert len(data["runs"][0]["forward_variance"]) == 5 and len(data["runs"][1]["backward_variance"]) == 5
    assert cli.main(["propagate", "--depth", "4", "--width", "32"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("growth/layer")
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    assert cli.main(["propagate", "--depth", "4", "--width", "32", "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


# --- the backward pass against theory, layer by layer ------------------------------------------------

THEORY_CASES = [  # spec, activation, param: E[f'(h)²] is exact for the ReLU family, mean-field for tanh
    ("glorot_uniform", "relu", None),
    ("he_normal", "relu", None),
    ("glorot_normal", "leaky_relu", 0.2),
    ("lecun_normal", "tanh", None),
]


def _mean_fprime_squared(activation: str, param: float | None, q: float) -> float:
    """E[f'(h)²] for h ~ N(0, q), by the gains module's split Gauss–Legendre rule (exact for the
    piecewise-constant derivatives of the ReLU family: 1/2 for ReLU, (1 + a²)/2 for leaky ReLU)."""
    from initscale import gains

    nodes, weights = gains._half_line_quadrature()
    p = gains.ACTIVATIONS[activation][1] if param is None else param
    df = gains.DERIVATIVES[activation]
    x = math.sqrt(q) * nodes
    return float(np.dot(weights, df(x, p) ** 2 + df(-x, p) ** 2))


def backward_theory_failures(
    spec_name: str,
    activation: str,
    param: float | None,
    *,
    runs: int = 8,
    depth: int = 36,
    width: int = 128,
    batch: int = 64,
    alpha: float = 1e-3,
) -> list[str]:
    """Layers whose backward growth differs from theory; empty when every layer agrees.

    Theory (mean field; He et al. 2015 §2.3): the gradient at layer i's input is
    g_i = (g_{i+1} ⊙ f'(h_i)) W_iᵀ, so Var g_i / Var g_{i+1} = width · Var(W) · E[f'(h_i)²],
    h_i ~ N(0, q_i), q_i the layer's forward variance (Var g_depth = 1, the unit gradient fed in).
    For ReLU, E[f'²] = P(h > 0) = 1/2 at every scale of h: Glorot (width·Var W = 1) halves the
    gradient per layer on its way back, He (2) keeps it. The statistic is the relative error
    d_i = ratio_i / theory_i − 1 of each layer, in ``runs`` independent networks. Its sd is
    estimated from those runs, not from width × batch: treating the width·batch mask and gradient
    entries as independent gives sd² = κ_g/(width·batch) + (κ_w − 1)/width² + 2/(width·batch)
    (κ_g = 3 the gradient's kurtosis, κ_w the weights'), 0.026 here, but the measured sd is
    0.06-0.12 at every layer: after one ReLU the representations of different inputs have cosine
    ≈ 1/π (the arc-cosine kernel, Cho & Saul 2009), rising towards 1 with depth, so each unit's mask
    is correlated across the batch (sign correlation (2/π)·arcsin(1/π) ≈ 0.21 already at layer 2)
    and the batch counts for far fewer independent draws. Each layer's mean d_i must lie within
    t · sd/√runs, t the Student-t quantile with runs − 1 degrees of freedom at two-sided α/depth
    (Bonferroni over the layers; α = 1e-3 for the whole network)."""
    from scipy import stats

    spec = presets.get(spec_name)
    var_w = spec.resolve(initscale.compute_fans((width, width), "keras.dense")).variance
    d = np.empty((runs, depth))
    for k in range(runs):
        run = propagate(spec, activation, depth=depth, width=width, batch=batch, param=param, seed=1000 + k)
        back = np.array([*run.backward_variance, 1.0])
        theory = np.array([width * var_w * _mean_fprime_squared(activation, param, q) for q in run.forward_variance])
        d[k] = back[:-1] / back[1:] / theory - 1.0
    mean, se = d.mean(axis=0), d.std(axis=0, ddof=1) / math.sqrt(runs)
    t = stats.t.ppf(1.0 - alpha / (2 * depth), runs - 1)
    return [
        f"layer {i + 1}: ratio/theory - 1 = {mean[i]:+.4f} (t = {mean[i] / se[i]:+.1f}, limit ±{t:.1f})"
        for i in range(depth)
        if not abs(mean[i]) <= t * se[i]
    ]


@pytest.mark.parametrize(("spec_name", "activation", "param"), THEORY_CASES)
def test_backward_growth_matches_theory_at_every_depth(spec_name, activation, param) -> None:
    """The finite-difference f' (ε = 1e-4) read ReLU's derivative as 0.5 once the forward signal fell
    below ε (from layer ~27 of Glorot + ReLU), doubling the per-layer growth there."""
    assert backward_theory_failures(spec_name, activation, param) == []


def test_relu_derivative_at_vanishing_signals() -> None:
    """Deep in Glorot + ReLU the pre-activations are ~1e-7: the mask must still be 0 or 1."""
    run = propagate(presets.get("glorot_uniform"), "relu", depth=60, width=64, batch=32, seed=3)
    assert run.forward_variance[-1] < 1e-15 and run.derivative == "analytic"
    ratios = np.array(run.backward_variance[:-1]) / np.array(run.backward_variance[1:])
    assert 0.3 < ratios[-20:].mean() < 0.7  # ≈ 1/2 (the finite difference gave ≈ 1/4)


def test_callable_activation_with_and_without_derivative() -> None:
    spec = presets.get("glorot_uniform")
    kw = {"depth": 40, "width": 64, "batch": 32, "seed": 5}
    named = propagate(spec, "relu", **kw)

    def relu(x):
        return np.maximum(x, 0.0)

    exact = propagate(spec, relu, derivative=lambda x: (x > 0).astype(np.float64), **kw)
    assert exact.backward_variance == named.backward_variance and exact.activation == "relu"
    with pytest.warns(UserWarning, match=r"activation 'relu' came without `derivative`.*Pass derivative="):
        estimated = propagate(spec, relu, **kw)
    assert estimated.derivative.startswith("central difference")
    # the relative step keeps x ± h on one side of the kink at every scale: the same numbers
    np.testing.assert_allclose(estimated.backward_variance, named.backward_variance, rtol=1e-9)
    with pytest.raises(ValueError, match="Argument `derivative` is for a callable activation"):
        propagate(spec, "relu", derivative=relu, **kw)


@pytest.mark.parametrize("arg", ["depth", "width", "batch"])
def test_propagate_rejects_empty_networks(arg, capsys) -> None:
    with pytest.raises(ValueError, match=rf"Argument `{arg}` must be >= 1\. Received: {arg}=0\."):
        propagate(presets.get("he_normal"), **{arg: 0})
    sizes = {"depth": "3", "width": "8", "batch": "4", arg: "0"}  # exited 0 with NaN variances before
    assert cli.main(["propagate", *(item for k, v in sizes.items() for item in (f"--{k}", v))]) == 2
    assert f"Argument `{arg}` must be >= 1" in capsys.readouterr().err


def test_a_zero_fan_is_said_not_hidden(capsys) -> None:
    """--shape 0,5 explained a variance of 2 (scale/1: VarianceScaling counts a fan of 0 as 1) without a word."""
    e = explain("he_normal", (0, 5))
    assert e.variance == pytest.approx(2.0, rel=1e-12) and len(e.notes) == 2
    assert "no elements" in e.notes[0] and "fan_in is 0: VarianceScaling counts a fan of 0 as 1" in e.notes[1]
    assert cli.main(["explain", "he_normal", "--shape", "0,5"]) == 0
    text = capsys.readouterr().out
    assert "note               fan_in is 0: VarianceScaling counts a fan of 0 as 1 (as Keras does)" in text
    assert cli.main(["explain", "he_normal", "--shape", "0,5", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == list(e.notes)
    # fan_out is 0 but he_normal divides by fan_in: only the no-elements note
    assert len(explain("he_normal", (5, 0)).notes) == 1 and len(explain("glorot_uniform", (5, 0)).notes) == 1
    geo = explain(initscale.VarianceScaling(1.0, "fan_geo_avg"), (5, 0))  # √(5·0) = 0
    assert len(geo.notes) == 2 and geo.notes[1].startswith("fan_geo_avg is 0")
    assert explain("he_normal", (3, 4)).notes == () and "note" not in str(explain("he_normal", (3, 4)))
    assert explain("torch.normal", (0, 3)).notes == (
        "shape (0, 3) has a zero dimension: the weight has no elements, so nothing is drawn",
    )


def test_explanations_and_propagations_are_strict_json() -> None:
    e = explain("torch.trunc_normal:a=-inf", (3, 4))
    data = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    assert data["bounds"][0] == "-inf" and data["spec"]["config"]["lower"] == "-inf"
    run = propagate(presets.get("he_normal"), "relu", depth=2, width=4, batch=2)
    exploded = type(run)(run.spec, run.activation, run.arch, 2, 4, [math.inf, math.nan], [1.0, -math.inf])
    assert exploded.to_dict()["forward_variance"] == ["inf", "nan"]
    assert exploded.to_dict()["backward_variance"] == [1.0, "-inf"]
    json.dumps(exploded.to_dict(), allow_nan=False)
