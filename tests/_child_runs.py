"""Test files that must run in a process of their own, run by one helper, beside this process.

Some runs need a fresh interpreter: Keras fixes its backend when it is imported, Triton's
interpreter has to be switched on before Triton is imported, and JAX's x64 mode before JAX is
first used. Each such run is a *child run*: a name, the pytest command line and its environment,
registered by the test module that owns it (:func:`register`), and awaited by a test of that
module (:func:`result`), which then asserts on the exit status and shows the child's output.

A test that awaits a child run is marked ``@pytest.mark.child_run("name")``. Once the session has
collected its tests, tests/conftest.py moves the marked tests to the end of the session and starts
their runs one after another in a background thread (:func:`start`), so that on a 2-core machine a
child process runs while this process works through the rest of the suite; by the time the marked
tests come, their runs are usually done. A run that the background has not started yet when its
test asks for it runs at once, in the test. INITSCALE_CHILD_RUNS=inline turns the background off
(each run then starts in its test, as a plain ``subprocess.run`` would).

A run is registered only where its test would not skip (its frameworks importable, this process
not running the same files itself), so the background never runs what no test will read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("background", "inline")


def mode() -> str:
    """INITSCALE_CHILD_RUNS: "background" (the default) or "inline"."""
    value = os.environ.get("INITSCALE_CHILD_RUNS", "background").strip() or "background"
    if value not in MODES:
        raise ValueError(f"INITSCALE_CHILD_RUNS must be one of {MODES}. Received: {value!r}.")
    return value


def pytest_command(*targets: str | Path, select: str | None = None) -> list[str]:
    """``python -m pytest -q -p no:cacheprovider TARGETS [-k SELECT]`` with this interpreter."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, targets)]
    return [*command, "-k", select] if select else command


@dataclass
class ChildRun:
    name: str
    command: list[str]
    env: dict[str, str]
    timeout: float
    wanted: Callable[[], bool]
    _claimed: bool = False
    _done: threading.Event = field(default_factory=threading.Event)
    _process: subprocess.Popen[str] | None = None
    _result: subprocess.CompletedProcess[str] | None = None
    _error: str | None = None

    def run(self) -> None:
        """Run the child once, whichever thread asks first; later callers return at once."""
        with _LOCK:
            if self._claimed:
                return
            self._claimed = True
        try:
            process = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, cwd=ROOT
            )
            self._process = process
            try:
                out, _ = process.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
                self._error = f"child run {self.name!r} took more than {self.timeout:g} s:\n{out[-6000:]}"
                return
            self._result = subprocess.CompletedProcess(self.command, process.returncode, out, "")
        except OSError as exc:
            self._error = f"child run {self.name!r} could not start: {exc}"
        finally:
            self._done.set()


_RUNS: dict[str, ChildRun] = {}
_LOCK = threading.Lock()


def register(
    name: str,
    command: list[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float,
    wanted: Callable[[], bool] = lambda: True,
) -> None:
    """Declare a child run (at import of the test module that owns it). ``env`` is the whole
    environment (default: this process's); ``wanted`` says, when the runs start, whether its test
    will still await it (the same condition the test checks before it does)."""
    if name in _RUNS and _RUNS[name].command != command:
        raise ValueError(f"child run {name!r} is registered already, with another command: {_RUNS[name].command}")
    _RUNS.setdefault(name, ChildRun(name, command, dict(os.environ if env is None else env), timeout, wanted))


def start(names: Iterable[str]) -> None:
    """Run the named, registered and wanted runs one after another in a daemon thread."""
    if mode() == "inline":
        return
    runs = [_RUNS[n] for n in dict.fromkeys(names) if n in _RUNS and _RUNS[n].wanted()]
    if runs:
        threading.Thread(target=lambda: [r.run() for r in runs], name="child-runs", daemon=True).start()


def result(name: str) -> subprocess.CompletedProcess[str]:
    """The finished child run ``name`` (run now if nothing has started it); a run that timed out
    or could not start raises AssertionError with its output."""
    if name not in _RUNS:
        raise KeyError(f"no child run named {name!r}; registered: {sorted(_RUNS)}")
    run = _RUNS[name]
    run.run()
    run._done.wait()
    if run._error is not None:
        raise AssertionError(run._error)
    assert run._result is not None
    return run._result


def stop() -> None:
    """Kill every child still running (the session ends: e.g. ``-x`` stopped it early)."""
    for run in _RUNS.values():
        if run._process is not None and run._process.poll() is None:
            run._process.kill()
