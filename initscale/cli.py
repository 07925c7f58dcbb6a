"""The ``initscale`` command line (also ``python -m initscale``).

``initscale parity`` runs the parity matrix (:mod:`initscale.parity`) on every installed backend
and prints one row per preset × layer × backend check: expected std, measured std, the error of
the second moment in units of its standard error, the distribution test's p-value, and whether
it passed. The exit status is 1 when any row fails.

Example::

    initscale parity                                  # everything installed, a text table
    initscale parity --backend torch --preset he_normal --format markdown
    initscale parity --format json --out parity.json  # [{"backend": ..., "preset": ..., ...}, ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from . import parity
from . import presets as _presets

__all__ = ["main"]

_COLUMNS = ("backend", "preset", "layer", "kind", "expected_std", "measured_std", "z", "p_value", "status")


def _cells(row: parity.Row) -> tuple[str, ...]:
    p = "-" if row.p_value is None else f"{row.p_value:.3g}"
    return (row.backend, row.preset, row.layer, row.kind, f"{row.expected_std:.6g}", f"{row.measured_std:.6g}",
            f"{row.z:+.2f}", p, "pass" if row.passed else "FAIL")


def _text(rows: Sequence[parity.Row]) -> str:
    table = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    for row in rows:
        if not row.passed:
            lines.append(f"FAIL {row.backend} {row.preset} {row.layer} ({row.kind}):")
            lines.extend(f"    {f}" for f in row.failures)
    return "\n".join(lines)


def _markdown(rows: Sequence[parity.Row]) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def _progress(stream: IO[str], done: int, total: int, label: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:40]:<40}")
    stream.flush()


def _parity(args: argparse.Namespace) -> int:
    chosen = args.preset or _presets.names()
    for name in chosen:
        _presets.get(name)  # before importing any framework: a typo fails fast
    backends = args.backend or parity.available_backends()
    layers = args.layer or list(parity.LAYERS)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    rows: list[parity.Row] = []
    start = time.monotonic()
    total = len(chosen) * len(layers)
    done = 0
    seen: set[tuple[str, str]] = set()
    for row in parity.run_iter(backends, chosen, layers, cross=not args.no_cross, native=not args.no_native,
                               seed=args.seed):
        rows.append(row)
        if (row.preset, row.layer) not in seen:
            seen.add((row.preset, row.layer))
            done += 1
            if show:
                _progress(sys.stderr, done, total, f"{row.preset} {row.layer}")
    if show:
        sys.stderr.write("\n")
    shown = [r for r in rows if not r.passed] if args.failures_only else rows
    if args.format == "json":
        text = json.dumps([r.to_dict() for r in shown], indent=1)
    elif args.format == "markdown":
        text = _markdown(shown)
    else:
        text = _text(shown)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    failed = sum(not r.passed for r in rows)
    sys.stderr.write(f"initscale parity: {len(rows)} checks on backends {', '.join(backends)}: "
                     f"{failed} failed ({time.monotonic() - start:.0f} s)\n")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="initscale", description="Weight-initialization specs: exact numbers, "
                                     "every framework.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("parity", help="run the parity matrix: preset x layer x backend",
                       description="Check every preset, on every logical layer, on every installed backend, "
                       "against its exact distribution, the NumPy reference and the native initializer.")
    p.add_argument("--backend", action="append", choices=sorted(parity.BACKENDS),
                   help="a backend to run (repeatable; default: every installed one)")
    p.add_argument("--preset", action="append", help="a preset, e.g. he_normal or 'torch.kaiming_normal:a=0.2' "
                   "(repeatable; default: all)")
    p.add_argument("--layer", action="append", choices=list(parity.LAYERS), help="a layer (repeatable; default: all)")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.add_argument("--out", help="write the table to this file instead of stdout")
    p.add_argument("--failures-only", action="store_true", help="list only the failed rows")
    p.add_argument("--no-cross", action="store_true", help="skip the comparisons with the NumPy reference")
    p.add_argument("--no-native", action="store_true", help="skip the comparisons with native initializers")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0; runs are deterministic)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.set_defaults(run=_parity)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``initscale`` console script."""
    args = _parser().parse_args(argv)
    try:
        code: Any = args.run(args)
    except ValueError as err:  # bad names: say which and what is valid
        sys.stderr.write(f"initscale {args.command}: error: {err}\n")
        return 2
    return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
