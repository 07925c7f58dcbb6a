"""The helper that runs test files in processes of their own (tests/_child_runs.py): each run once,
its output and exit status kept, a run not yet started run by the test that asks, timeouts and
bad settings said, and the session's order and start wired in tests/conftest.py."""

from __future__ import annotations

import sys

import _child_runs
import pytest


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_run_that_nothing_started_runs_in_its_test_and_once() -> None:
    _child_runs.register("t-once", _python("print('ran'); raise SystemExit(3)"), timeout=60)
    first = _child_runs.result("t-once")
    assert first.returncode == 3 and first.stdout == "ran\n"
    assert _child_runs.result("t-once") is first  # not run again


def test_a_background_run_is_awaited_and_stderr_is_kept(monkeypatch, tmp_path) -> None:
    """start returns before the run ends: the child waits for a file this test writes only after
    start has returned (were start to wait, the child would reach its 60 s timeout)."""
    monkeypatch.setenv("INITSCALE_CHILD_RUNS", "background")
    go = tmp_path / "go"
    wait = f"while not os.path.exists({str(go)!r}): time.sleep(0.01)"
    code = f"import os, sys, time\n{wait}\nprint('err', file=sys.stderr)"
    _child_runs.register("t-background", _python(code), timeout=60)
    _child_runs.start(["t-background", "t-not-registered"])  # an unregistered name: its test skips
    go.write_text("")
    done = _child_runs.result("t-background")
    assert done.returncode == 0 and done.stdout == "err\n"


def test_a_name_registered_twice_keeps_one_command() -> None:
    _child_runs.register("t-twice", _python("pass"), timeout=60)
    _child_runs.register("t-twice", _python("pass"), timeout=60)  # the same run again: kept
    with pytest.raises(ValueError, match="'t-twice' is registered already, with another command"):
        _child_runs.register("t-twice", _python("print(1)"), timeout=60)


def test_an_unwanted_run_is_not_started_and_inline_starts_nothing(monkeypatch) -> None:
    _child_runs.register("t-unwanted", _python("pass"), timeout=60, wanted=lambda: False)
    _child_runs.start(["t-unwanted"])
    monkeypatch.setenv("INITSCALE_CHILD_RUNS", "inline")
    _child_runs.register("t-inline", _python("pass"), timeout=60)
    _child_runs.start(["t-inline"])  # both decided before any thread: nothing was claimed
    assert not _child_runs._RUNS["t-unwanted"]._claimed and not _child_runs._RUNS["t-inline"]._claimed


def test_a_run_past_its_timeout_is_killed_and_said() -> None:
    _child_runs.register("t-slow", _python("import time; print('begun', flush=True); time.sleep(30)"), timeout=1)
    with pytest.raises(AssertionError, match=r"'t-slow' took more than 1 s:\nbegun"):
        _child_runs.result("t-slow")


def test_bad_names_and_settings_are_said(monkeypatch) -> None:
    with pytest.raises(KeyError, match="no child run named 't-none'"):
        _child_runs.result("t-none")
    monkeypatch.setenv("INITSCALE_CHILD_RUNS", "parallel")
    with pytest.raises(
        ValueError, match=r"INITSCALE_CHILD_RUNS must be one of \('background', 'inline'\). Received: 'parallel'"
    ):
        _child_runs.mode()


def test_the_session_puts_child_run_tests_last(request) -> None:
    """In this session (background mode, the default) every test that awaits a child run comes
    after every test that does not."""
    if _child_runs.mode() != "background":
        pytest.skip("INITSCALE_CHILD_RUNS=inline keeps the collected order")
    marked = [item.get_closest_marker("child_run") is not None for item in request.session.items]
    assert marked == sorted(marked)
