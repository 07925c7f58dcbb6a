"""Check a commit message: a subject of at most 72 characters, then a blank line before the body.

Run by pre-commit at the commit-msg stage (``.pre-commit-config.yaml``) with the message file's
path; also usable by hand on a range: ``python scripts/check_commit_msg.py --range main..HEAD``.
Exit status 1 names each message that breaks a rule and how to fix it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

MAX_SUBJECT = 72


def problems(message: str) -> list[str]:
    """The rules ``message`` breaks (empty when it is fine); comment lines (``#``) are ignored."""
    lines = [line for line in message.splitlines() if not line.startswith("#")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].strip():
        return ["the subject (first line) is empty: write what the commit does in at most 72 characters"]
    found = []
    subject = lines[0]
    if len(subject) > MAX_SUBJECT:
        found.append(
            f"the subject has {len(subject)} characters, more than {MAX_SUBJECT}: "
            "shorten it and move the details to the body"
        )
    if len(lines) > 1 and lines[1].strip():
        found.append("the second line is not blank: leave one blank line between the subject and the body")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("message_file", nargs="?", help="the commit message file (pre-commit passes it)")
    parser.add_argument("--range", help="check every commit in a git revision range instead, e.g. main..HEAD")
    args = parser.parse_args(argv)
    if (args.message_file is None) == (args.range is None):
        parser.error("give either a message file or --range (not both)")
    if args.range is not None:
        shas = subprocess.run(
            ["git", "rev-list", args.range], check=True, capture_output=True, text=True
        ).stdout.split()
        messages = {
            sha[:12]: subprocess.run(
                ["git", "log", "-1", "--format=%B", sha], check=True, capture_output=True, text=True
            ).stdout
            for sha in shas
        }
    else:
        with open(args.message_file, encoding="utf-8") as fh:
            messages = {args.message_file: fh.read()}
    bad = 0
    for name, message in messages.items():
        for problem in problems(message):
            print(f"{name}: {problem}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
