"""Read requirements/frameworks.txt, the one list of framework pins.

    python scripts/pins.py [GROUP ...]             # requirements pip installs normally, one per line
    python scripts/pins.py --no-deps [GROUP ...]   # those to install with --no-deps
    python scripts/pins.py --groups                # every group name, in the file's order

No group means every group. Each line of the file is ``requirement  # GROUP [no-deps] [(note)]``.
noxfile.py imports :func:`pins` from here; .ci/run and scripts/parity.sh call it as a script.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

FILE = Path(__file__).resolve().parent.parent / "requirements" / "frameworks.txt"


def entries(path: Path = FILE) -> list[tuple[str, str, bool]]:
    """(requirement, group, no_deps) for each line of the pins file."""
    out = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        requirement, _, tags = line.partition("#")
        words = tags.split("(", 1)[0].split()
        if not requirement.strip() or not words:
            raise ValueError(f"{path}:{number}: expected 'requirement  # GROUP [no-deps]', got {raw!r}")
        out.append((requirement.strip(), words[0], "no-deps" in words[1:]))
    return out


def pins(*groups: str, no_deps: bool = False, path: Path = FILE) -> list[str]:
    """The requirements of ``groups`` (all groups if none) installed with (``no_deps=False``) or
    without their dependencies."""
    known = sorted({g for _, g, _ in entries(path)})
    unknown = sorted(set(groups) - set(known))
    if unknown:
        raise ValueError(f"Unknown pin group {unknown[0]!r}; valid: {', '.join(known)}.")
    return [r for r, g, nd in entries(path) if (not groups or g in groups) and nd == no_deps]


def main(argv: list[str]) -> int:
    if argv == ["--groups"]:
        print("\n".join(dict.fromkeys(g for _, g, _ in entries())))  # in the file's order
        return 0
    no_deps = "--no-deps" in argv
    print("\n".join(pins(*(a for a in argv if a != "--no-deps"), no_deps=no_deps)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
