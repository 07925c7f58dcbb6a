"""README.md runs as written: its ```python blocks, in order, in one fresh process, print what the
README shows.

The README's convention: lines starting with ``#>`` show what the code above them prints (in its
block, in order; ``...`` in a shown line stands for any text, as in doctest's ELLIPSIS). Every
block runs, shown output or not. The process has every framework the README uses (NumPy, torch,
JAX + Flax, Keras 3) and runs Keras on JAX (``KERAS_BACKEND=jax``, as the README says); where one
is missing the test skips, naming it, unless INITSCALE_REQUIRE is set (CI), where it fails.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
NEEDS = ("numpy", "torch", "jax", "flax", "keras")
_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_SHOWN = re.compile(r"^#> ?(.*)$")

# Runs in the child: every block in one namespace, each block's stdout captured on its own.
_DRIVER = r"""
import contextlib, io, json, sys, traceback
blocks = json.load(open(sys.argv[1]))
results, namespace = [], {"__name__": "__main__"}
for i, code in enumerate(blocks):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
        results.append({"out": out.getvalue(), "error": None})
    except BaseException:
        results.append({"out": out.getvalue(), "error": traceback.format_exc()})
        break
json.dump(results, open(sys.argv[2], "w"))
"""


def python_blocks(text: str) -> list[str]:
    """The README's ```python blocks, in order."""
    return _FENCE.findall(text)


def shown_output(block: str) -> str:
    """What a block says it prints: its ``#>`` lines, without the marker, one per line."""
    return "".join(m.group(1) + "\n" for line in block.splitlines() if (m := _SHOWN.match(line.strip())))


def test_the_conventions_parse() -> None:
    text = "intro\n```python\nprint(1)\n#> 1\nx = 2  # a plain comment\n```\n```bash\nls\n```\n```python\npass\n```\n"
    assert python_blocks(text) == ["print(1)\n#> 1\nx = 2  # a plain comment\n", "pass\n"]
    assert shown_output(python_blocks(text)[0]) == "1\n" and shown_output("pass\n") == ""


def test_every_readme_python_block_runs_in_order_and_prints_what_it_shows(tmp_path) -> None:
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("INITSCALE_REQUIRE", "").strip():
            pytest.fail(f"the README's blocks need {missing}, which cannot be imported (INITSCALE_REQUIRE is set)")
        pytest.skip(f"could not import {missing[0]!r}: the README's blocks need {', '.join(NEEDS)}")
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 10, "the README's python blocks were not found"
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "driver.py").write_text(_DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "KERAS_", "TF_USE_LEGACY"))}
    env["KERAS_BACKEND"] = "jax"
    done = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json"), str(tmp_path / "results.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )  # cwd: files a block writes land here
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    checker = doctest.OutputChecker()
    for i, (block, result) in enumerate(zip(blocks, results, strict=False)):
        first = block.strip().splitlines()[0]
        assert result["error"] is None, f"README python block {i + 1} ({first!r}) fails:\n{result['error']}"
        want, got = shown_output(block), "".join(line.rstrip() + "\n" for line in result["out"].splitlines())
        if want:
            assert checker.check_output(want, got, doctest.ELLIPSIS), (
                f"README python block {i + 1} ({first!r}) prints something else than it shows.\n"
                f"shown:\n{want}\nprinted:\n{got}"
            )
    assert len(results) == len(blocks)


def console_sessions(text: str) -> list[tuple[str, str]]:
    """(command, shown output) for each ``$ initscale ...`` line of the README's ```console blocks
    that is followed by output lines."""
    sessions: list[tuple[str, str]] = []
    for block in re.findall(r"^```console\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            if line.startswith("$ "):
                sessions.append((line[2:].split("  #", 1)[0].strip(), ""))
            elif sessions:
                sessions[-1] = (sessions[-1][0], sessions[-1][1] + line.rstrip() + "\n")
    return [(command, out) for command, out in sessions if out]


def test_readme_console_output_is_what_the_command_prints() -> None:
    import shlex

    sessions = console_sessions(README.read_text(encoding="utf-8"))
    assert sessions, "no console session with shown output found"
    for command, shown in sessions:
        words = shlex.split(command)
        assert words[0] == "initscale", command
        done = subprocess.run(
            [sys.executable, "-m", "initscale", *words[1:]], capture_output=True, text=True, check=False, timeout=120
        )
        assert done.returncode == 0, (command, done.stderr)
        printed = "".join(line.rstrip() + "\n" for line in done.stdout.splitlines())
        assert printed == shown, f"README shows for `{command}`:\n{shown}\nit prints:\n{printed}"
