"""propagate with ``spec="auto"``, the predicted curve, and a user's model (``--model``).

The predicted curve is deterministic (quadrature), so it is checked exactly against closed forms.
The measured curve is random through the weights: for a layer of n output units fed a fixed
batch, the mean over units of each unit's variance has relative sd at most sqrt(2/n) (the
rank-one worst case, where every unit's variance is one chi-square(1) draw), and the layers draw
independently, so the mean over L layers of measured/predicted has sd at most sqrt(2/n)/sqrt(L):
the checks allow 5 of those.
"""

from __future__ import annotations

import math
import sys
import textwrap

import pytest

from initscale import autogain, cli, gains, presets
from initscale.propagate import propagate


def _fixed_point_preactivation(name: str) -> float:
    fp = gains.fixed_point(name)
    return fp.gain**2 * fp.q_star


@pytest.mark.parametrize("name", ["relu", "tanh", "gelu", "silu"])
def test_auto_holds_the_fixed_point_preactivation_variance(name) -> None:
    depth, width = 20, 256
    run = propagate("auto", name, depth=depth, width=width, seed=0)
    target = _fixed_point_preactivation(name)
    assert run.predicted_forward == pytest.approx([target] * depth, rel=1e-12)
    mean_ratio = sum(v / target for v in run.forward_variance) / depth
    assert abs(mean_ratio - 1.0) < 5 * math.sqrt(2 / width) / math.sqrt(depth)


def test_the_predicted_curve_is_the_variance_map() -> None:
    relu = propagate(presets.get("he_normal"), "relu", depth=6, width=16, seed=0)
    assert relu.predicted_forward == pytest.approx([2.0] * 6, rel=1e-9)  # v = 2 m, m' = v / 2
    glorot = propagate(presets.get("glorot_normal"), "relu", depth=6, width=16, seed=0)
    assert glorot.predicted_forward == pytest.approx([0.5**i for i in range(6)], rel=1e-9)  # halves per layer
    tanh = propagate(presets.get("lecun_normal"), "tanh", depth=3, width=16, seed=0)
    m1 = autogain.activation_moment("tanh", 1.0)
    assert tanh.predicted_forward == pytest.approx([1.0, m1, autogain.activation_moment("tanh", m1)], rel=1e-9)


def test_planted_bug_identity_variance_map_is_caught(monkeypatch) -> None:
    """Mutation: a variance map that forgets the activation (m' = v) fails the He/ReLU check."""
    monkeypatch.setattr(autogain, "activation_moment", lambda act, m, param=None: m)
    with pytest.raises(AssertionError):
        test_the_predicted_curve_is_the_variance_map()


def test_a_bad_spec_string_names_itself() -> None:
    with pytest.raises(ValueError, match=r"`spec` must be an initscale spec or 'auto'. Received: spec='he'"):
        propagate("he", "relu", depth=2, width=4)


def test_the_cli_prints_measured_and_predicted(capsys) -> None:
    assert (
        cli.main(
            [
                "propagate",
                "--spec",
                "auto",
                "--spec",
                "he_normal",
                "--activation",
                "gelu",
                "--depth",
                "4",
                "--width",
                "32",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "auto fwd" in out and "auto pred" in out and "he_normal pred" in out


def test_a_users_model_through_the_cli(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("torch")
    (tmp_path / "my_factory.py").write_text(
        textwrap.dedent("""
        import torch

        def build():
            model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                        torch.nn.SiLU(), torch.nn.Linear(64, 4))
            return model, torch.randn(128, 16, generator=torch.Generator().manual_seed(0))

        def not_a_pair():
            return torch.nn.Linear(2, 2)
    """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_factory", raising=False)
    assert cli.main(["propagate", "--model", "my_factory:build", "--spec", "auto", "--spec", "he_normal"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert [line[0] for line in lines[1:4]] == ["0", "2", "4"]  # the model's layers, in forward order
    from my_factory import build, not_a_pair

    from initscale.propagate import propagate_model

    run = propagate_model(build, "auto")
    a2 = _fixed_point_preactivation("silu")
    assert run.predicted_forward[1] == pytest.approx(a2, rel=1e-6)  # after the first SiLU: on the fixed point
    assert all(math.isfinite(v) and v > 0 for v in run.backward_variance)
    with pytest.raises(TypeError, match=r"must return \(model, example_inputs\)"):
        propagate_model(not_a_pair, "auto")
    capsys.readouterr()
    assert cli.main(["propagate", "--model", "nocolon"]) == 2
    assert "--model must be 'module:function'" in capsys.readouterr().err
    assert cli.main(["propagate", "--model", "my_factory:missing"]) == 2
    assert "has no function 'missing'" in capsys.readouterr().err
