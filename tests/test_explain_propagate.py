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
        assert call.startswith(("torch.", "keras.", "jax.", "lambda", "rng.", "np.", "scipy.", "tf.", "initscale.",
                                "no exact equivalent")), (framework, call)
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
    back = np.array([propagate(presets.get("glorot_normal"), "relu", seed=s, **kw).backward_growth()
                     for s in range(6)])
    assert _mean_within(back, 2.0), back  # gradients halve on their way back to the input
    pytest.importorskip("torch")
    fwd = np.array([propagate(presets.get("he_normal"), "relu", backend="torch", seed=s, **kw).forward_growth()
                    for s in range(6)])
    assert _mean_within(fwd, 1.0), fwd


def test_cnn_and_bad_input() -> None:
    run = propagate(presets.get("he_normal"), "relu", arch="cnn", depth=6, width=32, batch=32)
    assert len(run.forward_variance) == 6 and all(v > 0 for v in run.backward_variance)
    with pytest.raises(ValueError, match="Argument `arch` must be one of 'cnn', 'mlp'"):
        propagate(presets.get("he_normal"), arch="rnn")
    with pytest.raises(ValueError, match="Argument `activation` must be one of"):
        propagate(presets.get("he_normal"), "relux")


def test_propagate_command(tmp_path, capsys) -> None:
    assert cli.main(["propagate", "--spec", "he_normal", "--spec", "glorot_uniform", "--depth", "5", "--width", "64",
                     "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["spec"] for r in data["runs"]] == ["he_normal", "glorot_uniform"]
    assert len(data["runs"][0]["forward_variance"]) == 5 and len(data["runs"][1]["backward_variance"]) == 5
    assert cli.main(["propagate", "--depth", "4", "--width", "32"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("growth/layer")
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    assert cli.main(["propagate", "--depth", "4", "--width", "32", "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


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
        "shape (0, 3) has a zero dimension: the weight has no elements, so nothing is drawn",)

