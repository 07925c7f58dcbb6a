"""The repository's habits, checked: commit-message rules (scripts/check_commit_msg.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "check_commit_msg.py"
_spec = importlib.util.spec_from_file_location("check_commit_msg", _PATH)
assert _spec is not None and _spec.loader is not None
check_commit_msg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_commit_msg)


@pytest.mark.parametrize(
    "message",
    ["fix: one line", "x" * 72, "subject\n\nbody line\nmore body", "subject\n# a git comment\n\nbody", "subject\n\n\n"],
)
def test_good_messages_pass(message: str) -> None:
    assert check_commit_msg.problems(message) == []


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("x" * 73, "73 characters"),
        ("subject\nbody without a blank line", "not blank"),
        ("", "empty"),
        ("\n\nbody", "empty"),
    ],
)
def test_bad_messages_name_the_problem(message: str, words: str) -> None:
    found = check_commit_msg.problems(message)
    assert len(found) == 1 and words in found[0], found


def test_main_exit_status(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("short subject\n\nbody\n")
    bad.write_text("y" * 90 + "\n")
    assert check_commit_msg.main([str(good)]) == 0
    assert check_commit_msg.main([str(bad)]) == 1
