"""The initscale command line: `initscale parity`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from initscale import cli, parity


def test_parity_json_to_a_file(tmp_path, capsys) -> None:
    out = tmp_path / "rows.json"
    code = cli.main(
        [
            "parity",
            "--backend",
            "numpy",
            "--preset",
            "he_normal",
            "--preset",
            "glorot_uniform",
            "--layer",
            "dense",
            "--layer",
            "grouped_conv",
            "--format",
            "json",
            "--out",
            str(out),
        ]
    )
    rows = json.loads(out.read_text())
    assert code == 0 and len(rows) == 4
    assert {"backend", "preset", "layer", "expected_std", "measured_std", "passed"} <= set(rows[0])
    grouped = next(r for r in rows if r["preset"] == "he_normal" and r["layer"] == "grouped_conv")
    assert grouped["expected_std"] == pytest.approx((2 / (16 * 9)) ** 0.5)  # per group: 64/4 · 3·3
    assert "4 checks on backends numpy: 0 failed" in capsys.readouterr().err


def test_parity_text_and_markdown(capsys) -> None:
    assert cli.main(["parity", "--backend", "numpy", "--preset", "lecun_normal", "--layer", "dense"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:4] == ["backend", "preset", "layer", "comparison"] and text[1].endswith("pass")
    assert (
        cli.main(
            ["parity", "--backend", "numpy", "--preset", "lecun_normal", "--layer", "dense", "--format", "markdown"]
        )
        == 0
    )
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
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "initscale",
            "parity",
            "--backend",
            "numpy",
            "--preset",
            "zeros",
            "--layer",
            "dense",
            "--progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1/1" in done.stderr and "pass" in done.stdout


# --- the edges: shapes, strict JSON, closed pipes ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dims"),
    [
        ("3,3,64,128", (3, 3, 64, 128)),
        ("3x3x64x128", (3, 3, 64, 128)),
        ("3x3,64", (3, 3, 64)),
        ("7", (7,)),
        (" 3 , 4 ", (3, 4)),
        ("0,5", (0, 5)),
    ],
)
def test_shapes_that_parse(text, dims) -> None:
    assert cli._shape(text) == dims


@pytest.mark.parametrize(
    ("text", "item"),
    [
        ("3,x,64", "the item 'x'"),  # was read as (3, 64)
        ("3,x", "the item 'x'"),  # was read as (3,)
        ("3,,64", "an empty item"),
        ("3,64,", "an empty item"),
        ("", "an empty item"),
        ("x3", "the item 'x3'"),
        ("3xx4", "the item '3xx4'"),
        ("-1,2", "the item '-1'"),
        ("+3,2", "the item '+3'"),
        ("3.5,2", "the item '3.5'"),
        ("3,four", "the item 'four'"),
        ("3;4", "the item '3;4'"),
        ("\u0663,4", "the item '\u0663'"),
        ("1e3", "the item '1e3'"),
    ],
)
def test_shapes_that_do_not_parse_name_the_bad_item(text, item, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", "he_normal", f"--shape={text}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "--shape must be non-negative integers separated by ',' or 'x'" in err
    assert f"got {item}" in err and repr(text) in err


def test_explain_json_is_strict_json(capsys) -> None:
    """An infinite bound was written as a bare Infinity, which strict parsers reject."""

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    assert cli.main(["explain", "torch.trunc_normal:a=-inf,b=0.5", "--shape", "3,4", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out, parse_constant=reject)
    assert data["bounds"] == ["-inf", 0.5] and data["spec"]["config"]["lower"] == "-inf"
    assert data["stored_bounds"]["float32"][0] == "-inf"


def _pipe_into_head(args: list[str]) -> subprocess.CompletedProcess:
    """``initscale ARGS | head -1`` under bash's pipefail, so the status is initscale's own."""
    command = " ".join([shlex.quote(sys.executable), "-m", "initscale", *map(shlex.quote, args)])
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("head") is None, reason="needs bash and head")
def test_a_closed_pipe_exits_quietly() -> None:
    """More output than a pipe holds (about 170 kB, pipes buffer 64 kB), read by `head -1`: the
    writes after head exits fail with EPIPE. That printed a BrokenPipeError traceback (status 1);
    now nothing on stderr and the SIGPIPE status 141, as C tools give."""
    done = _pipe_into_head(["propagate", "--spec", "he_normal", "--depth", "4000", "--width", "2", "--batch", "2"])
    assert done.stderr == "" and done.returncode == 141, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["layer", "he_normal", "fwd", "he_normal", "pred", "he_normal", "bwd"]


def test_a_pipe_closed_before_any_output_exits_quietly() -> None:
    """The reader is gone before the command writes: the same quiet 141."""
    child = subprocess.Popen(
        [sys.executable, "-m", "initscale", "explain", "he_normal", "--shape", "3,4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.stdout.close()
    err = child.stderr.read().decode()
    child.stderr.close()
    assert child.wait(timeout=120) == 141 and err == "", err


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

    with pytest.raises(
        ValueError,
        match=r"Unknown layout 'torch.cnov'\. Did you mean 'torch.conv'.*"
        r"Argument `layout` must be one of 'flax'",
    ):
        initscale.compute_fans((4, 4, 3, 3), "torch.cnov")
    with pytest.raises(ValueError, match=r"^Argument `layout` must be one of"):  # nothing close: no guess
        initscale.compute_fans((4, 4), "zzzzzz")
    assert cli.main(["explain", "he_normal", "--shape", "4,4", "--layout", "keras.dence"]) == 2
    assert "Did you mean 'keras.dense'" in capsys.readouterr().err


# --- how `initscale parity` reads --------------------------------------------------------------------


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run the command line with stdout and stderr on a pseudo-terminal; its exit code and screen."""
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "initscale", *args], stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    return proc.wait(timeout=120), screen.decode().replace("\r\n", "\n")


def test_parity_on_a_terminal_shows_a_bar_then_a_summary_and_only_failed_rows() -> None:
    args = [
        "parity",
        "--backend",
        "numpy",
        "--preset",
        "he_normal",
        "--preset",
        "torch.xavier_uniform",
        "--layer",
        "dense",
        "--layer",
        "conv2d",
    ]
    code, screen = _on_a_terminal(args)
    assert code == 0, screen
    assert "[###############...............] 2/4" in screen and "] 4/4 torch.xavier_uniform conv2d" in screen
    summary = screen[screen.index("backend  family") :].splitlines()
    assert summary[0].split() == ["backend", "family", "checks", "failed", "slowest"]
    assert summary[1].split()[:4] == ["numpy", "unqualified", "2", "-"]
    assert summary[2].split()[:4] == ["numpy", "torch", "2", "-"]
    assert "analytic" not in "".join(line for line in summary[3:] if "slowest" not in line).replace(
        "(analytic)", ""
    )  # no row table: nothing failed
    assert "no failures (--all-rows lists every row)" in screen
    code, screen = _on_a_terminal([*args, "--all-rows"])
    rows = [line.split() for line in screen.splitlines() if line.startswith("numpy ") and "pass" in line]
    assert code == 0 and len(rows) == 4


def test_parity_writes_progress_lines_when_not_on_a_terminal(monkeypatch, capsys) -> None:
    """Every PROGRESS_INTERVAL_S seconds a line on stderr, from a timer (also while a slow cell runs)."""
    import time

    from initscale.adapters import numpy as isnp

    def slow(spec, shape, layout, seed):
        time.sleep(0.3)
        return isnp.initializer(spec, layout)(shape, rng=seed, dtype=np.float64)

    monkeypatch.setattr(cli, "PROGRESS_INTERVAL_S", 0.05)
    monkeypatch.setitem(parity.BACKENDS, "numpy", parity.Backend("numpy", ("numpy",), "keras", slow))
    assert (
        cli.main(
            [
                "parity",
                "--backend",
                "numpy",
                "--preset",
                "he_normal",
                "--layer",
                "dense",
                "--layer",
                "conv2d",
                "--format",
                "json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 2
    ticks = [line for line in captured.err.splitlines() if "preset × layer cells" in line]
    assert len(ticks) >= 6, captured.err  # 0.6 s of drawing at one line per 0.05 s
    assert ticks[0].startswith("initscale parity: 0/2 preset × layer cells, 0 failed, ")
    assert "\r" not in captured.err  # no bar off a terminal
    assert "backend  family" in captured.err and "2 checks on backends numpy: 0 failed" in captured.err


def test_parity_out_writes_exactly_there_and_checks_the_path_first(tmp_path, monkeypatch, capsys) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the matrix ran before --out was checked")

    monkeypatch.setattr(parity, "run_iter", never)
    for bad in (tmp_path / "missing" / "rows.json", tmp_path):
        assert cli.main(["parity", "--backend", "numpy", "--preset", "zeros", "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("initscale parity: error: --out") and str(bad.name) in err
    monkeypatch.undo()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert (
        cli.main(
            [
                "parity",
                "--backend",
                "numpy",
                "--preset",
                "zeros",
                "--layer",
                "dense",
                "--format",
                "markdown",
                "--out",
                "~/rows.md",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.md"]  # no temporary file left beside it
    assert (tmp_path / "rows.md").read_text().startswith("| backend | preset |")
    assert f"1 rows written to {tmp_path / 'rows.md'}" in capsys.readouterr().err


def test_native_start_up_logging_is_dropped_and_the_rest_kept(capfd) -> None:
    import os

    with cli._QuietNativeLogs(True) as quiet:
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796120050.294869    9188 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"W0000 00:00:1796120050.294869    9188 cpu_feature_guard.cc:227] This TensorFlow binary\n")
        os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, rebuild\n")
        os.write(2, b"UserWarning: a real warning\n")
        quiet.stream.write("progress straight to the terminal\n")
    err = capfd.readouterr().err
    # the two kept lines reach stderr by two paths (the filter thread, the direct stream): either order
    assert sorted(err.splitlines()) == ["UserWarning: a real warning", "progress straight to the terminal"]


def test_parity_on_keras_tensorflow_prints_no_tensorflow_logging() -> None:
    import importlib.util

    missing = [m for m in ("keras", "tensorflow") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"could not import {missing[0]!r}: not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "initscale",
            "parity",
            "--backend",
            "keras",
            "--preset",
            "zeros",
            "--layer",
            "dense",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "KERAS_BACKEND": "tensorflow"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("initscale parity: 0/1 preset × layer cells") and lines[-1].startswith(
        "initscale parity: 1 checks on backends keras (keras on tensorflow): 0 failed"
    ), done.stderr
    assert not [line for line in lines if not line.startswith(("initscale parity: ", "backend ", "keras "))], (
        done.stderr
    )
