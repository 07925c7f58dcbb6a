"""The initscale command line: `initscale parity`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from initscale import cli, parity


def test_parity_json_to_a_file(tmp_path, capsys) -> None:
    out = tmp_path / "rows.json"
    code = cli.main(["parity", "--backend", "numpy", "--preset", "he_normal", "--preset", "glorot_uniform",
                     "--layer", "dense", "--layer", "grouped_conv", "--format", "json", "--out", str(out)])
    rows = json.loads(out.read_text())
    assert code == 0 and len(rows) == 4
    assert {"backend", "preset", "layer", "expected_std", "measured_std", "passed"} <= set(rows[0])
    grouped = next(r for r in rows if r["preset"] == "he_normal" and r["layer"] == "grouped_conv")
    assert grouped["expected_std"] == pytest.approx((2 / (16 * 9)) ** 0.5)  # per group: 64/4 · 3·3
    assert "4 checks on backends numpy: 0 failed" in capsys.readouterr().err


def test_parity_text_and_markdown(capsys) -> None:
    assert cli.main(["parity", "--backend", "numpy", "--preset", "lecun_normal", "--layer", "dense"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:4] == ["backend", "preset", "layer", "kind"] and text[1].endswith("pass")
    assert cli.main(["parity", "--backend", "numpy", "--preset", "lecun_normal", "--layer", "dense",
                     "--format", "markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| backend | preset |") and md[1].startswith("|---|")


def test_parity_fails_with_exit_code_1_and_names_the_row(monkeypatch, capsys) -> None:
    from initscale.adapters import numpy as isnp

    def too_wide(spec, shape, layout, seed):  # planted bug: every draw 10 % too wide
        return 1.1 * isnp.initializer(spec, layout)(shape, rng=seed, dtype=np.float64)

    monkeypatch.setitem(parity.BACKENDS, "numpy", parity.Backend("numpy", ("numpy",), "keras", too_wide))
    code = cli.main(["parity", "--backend", "numpy", "--preset", "he_uniform", "--layer", "dense", "--failures-only"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL numpy he_uniform dense (analytic)" in out and "second_moment" in out


def test_bad_names_exit_2_with_the_valid_choices(capsys) -> None:
    assert cli.main(["parity", "--preset", "he_normall"]) == 2
    assert "Unknown preset 'he_normall'. Did you mean 'he_normal'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["parity", "--layer", "rnn"])


def test_python_dash_m_and_progress() -> None:
    done = subprocess.run([sys.executable, "-m", "initscale", "parity", "--backend", "numpy", "--preset", "zeros",
                           "--layer", "dense", "--progress"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "1/1" in done.stderr and "pass" in done.stdout


# --- listing what the CLI knows ------------------------------------------------------------------

def test_presets_lists_every_preset_with_its_line_and_source(capsys) -> None:
    from initscale import presets

    assert cli.main(["presets", "--format", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in entries] == presets.names()
    he = next(e for e in entries if e["name"] == "torch.kaiming_normal")
    assert he["source"] == presets.info("torch.kaiming_normal").source and "untruncated" in he["description"]
    assert he["arguments"] == {"a": 0.0, "mode": "fan_in", "nonlinearity": "leaky_relu"}
    assert all("\n" not in e["description"] and e["description"] for e in entries)
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "source", "description"] and len(lines) == len(entries) + 1
    assert any(line.startswith("caffe.xavier ") and "XavierFiller" in line for line in lines)


def test_layouts_lists_every_kind_with_its_options(capsys) -> None:
    from initscale import layouts

    assert cli.main(["layouts", "--format", "json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert sorted(entries) == layouts.names()
    assert entries["torch.conv"]["options"] == {"groups": 1} and entries["torch.conv"]["framework"] == "torch"
    assert entries["torch.depthwise_conv"]["options"] == {"multiplier": 1}
    assert entries["keras.lstm"]["options"] == {} and "per gate" in entries["keras.lstm"]["description"]
    assert cli.main(["layouts"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["torch.conv", "torch", "groups=1,native=false"] for line in out.splitlines())


def test_unknown_layouts_get_did_you_mean(capsys) -> None:
    import initscale

    with pytest.raises(ValueError, match=r"Unknown layout 'torch.cnov'\. Did you mean 'torch.conv'.*"
                                         r"Argument `layout` must be one of 'flax'"):
        initscale.compute_fans((4, 4, 3, 3), "torch.cnov")
    with pytest.raises(ValueError, match=r"^Argument `layout` must be one of"):  # nothing close: no guess
        initscale.compute_fans((4, 4), "zzzzzz")
    assert cli.main(["explain", "he_normal", "--shape", "4,4", "--layout", "keras.dence"]) == 2
    assert "Did you mean 'keras.dense'" in capsys.readouterr().err
