"""The initscale command line: `initscale parity`."""

from __future__ import annotations

import json
import shlex
import shutil
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


# --- the edges: shapes, strict JSON, closed pipes ---------------------------------------------------


@pytest.mark.parametrize(("text", "dims"), [("3,3,64,128", (3, 3, 64, 128)), ("3x3x64x128", (3, 3, 64, 128)),
                                            ("3x3,64", (3, 3, 64)), ("7", (7,)), (" 3 , 4 ", (3, 4)),
                                            ("0,5", (0, 5))])
def test_shapes_that_parse(text, dims) -> None:
    assert cli._shape(text) == dims


@pytest.mark.parametrize(("text", "item"), [
    ("3,x,64", "the item 'x'"),  # was read as (3, 64)
    ("3,x", "the item 'x'"),  # was read as (3,)
    ("3,,64", "an empty item"), ("3,64,", "an empty item"), ("", "an empty item"), ("x3", "the item 'x3'"),
    ("3xx4", "the item '3xx4'"), ("-1,2", "the item '-1'"), ("+3,2", "the item '+3'"), ("3.5,2", "the item '3.5'"),
    ("3,four", "the item 'four'"), ("3;4", "the item '3;4'"), ("\u0663,4", "the item '\u0663'"),
    ("1e3", "the item '1e3'"),
])
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
    return subprocess.run(["bash", "-c", f"set -o pipefail; {command} | head -1"], capture_output=True, text=True,
                          check=False, timeout=120)


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("head") is None, reason="needs bash and head")
def test_a_closed_pipe_exits_quietly() -> None:
    """More output than a pipe holds (about 170 kB, pipes buffer 64 kB), read by `head -1`: the
    writes after head exits fail with EPIPE. That printed a BrokenPipeError traceback (status 1);
    now nothing on stderr and the SIGPIPE status 141, as C tools give."""
    done = _pipe_into_head(["propagate", "--spec", "he_normal", "--depth", "4000", "--width", "2", "--batch", "2"])
    assert done.stderr == "" and done.returncode == 141, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split() == ["layer", "he_normal", "fwd", "he_normal", "bwd"]


def test_a_pipe_closed_before_any_output_exits_quietly() -> None:
    """The reader is gone before the command writes: the same quiet 141."""
    child = subprocess.Popen([sys.executable, "-m", "initscale", "explain", "he_normal", "--shape", "3,4"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()
    err = child.stderr.read().decode()
    child.stderr.close()
    assert child.wait(timeout=120) == 141 and err == "", err
