"""The ``initscale`` command line (also ``python -m initscale``).

- ``initscale explain SPEC --shape 3,3,64,128 [--layout keras]``: fans (and how they were
  counted), variance, std, sampling parameter, bounds, and the native call per framework.
- ``initscale gain NAME [--param X] [--method fixed_point [--q Q]]``: the gain, its formula and
  source (and torch's constant beside a derived one); a fixed-point or derived gain with the fixed
  point it holds, its χ, verdict and note.
- ``initscale propagate --spec he_normal --spec glorot_uniform --activation relu --depth 50``:
  forward and backward variance per layer of a deep MLP or CNN, as a table, JSON or a figure.
- ``initscale parity``: the parity matrix (below).

Every command takes ``--format json``. ``initscale parity`` runs the parity matrix
(:mod:`initscale.parity`) on every installed backend and prints one row per preset × layer ×
backend check: expected std, measured std, the error of the second moment in units of its
standard error, the distribution test's p-value, and whether it passed. The exit status is 1
when any row fails, 2 on bad arguments.

Example::

    initscale parity                                  # everything installed, a text table
    initscale parity --backend torch --preset he_normal --format markdown
    initscale parity --format json --out parity.json  # [{"backend": ..., "preset": ..., ...}, ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from . import gains, parity
from . import presets as _presets
from .explain import explain, parse_spec
from .propagate import propagate

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
        parse_spec(name)  # before importing any framework: a typo fails fast, with close matches
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


def _shape(text: str) -> tuple[int, ...]:
    """``3,3,64,128`` or ``3x3x64x128``: non-negative integers separated by ``,`` or ``x``; any
    other item (empty, signed, fractional, a word, a lone ``x``) is an error naming it."""
    dims: list[int] = []
    for item in text.split(","):
        parts = item.split("x")
        if not all(re.fullmatch(r"\s*[0-9]+\s*", part) for part in parts):
            what = "an empty item" if not item.strip() else f"the item {item.strip()!r}"
            raise argparse.ArgumentTypeError(
                f"--shape must be non-negative integers separated by ',' or 'x' (e.g. 3,3,64,128 or 3x3x64x128); "
                f"got {what} in {text!r}")
        dims.extend(int(part) for part in parts)
    return tuple(dims)


def _emit(args: argparse.Namespace, text: str) -> None:
    if getattr(args, "out", None):
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)


def _explain(args: argparse.Namespace) -> int:
    result = explain(args.spec, args.shape, args.layout)
    # strict JSON: infinities are the strings "inf"/"-inf" (Explanation.to_dict), never a bare Infinity
    _emit(args, json.dumps(result.to_dict(), indent=1, allow_nan=False) if args.format == "json" else str(result))
    return 0


def _gain(args: argparse.Namespace) -> int:
    d = gains.gain_details(args.name, args.param, method=args.method, q=args.q)
    # the fixed point a fixed-point or derived gain holds, its chi, verdict and note
    fp = None
    if d.method == "fixed_point":
        fp = gains.fixed_point(args.name, 1.0 if args.q is None else args.q, args.param)
    elif d.method == "derived":
        fp = gains.derived(args.name, args.param)
    if args.format == "json":
        out: dict[str, Any] = {"nonlinearity": d.nonlinearity, "param": d.param, "value": d.value, "method": d.method,
                               "formula": d.formula, "source": d.source, "torch_value": d.torch_value}
        if fp is not None:
            out.update({"q": fp.q, "q_star": fp.q_star, "chi": fp.chi, "verdict": fp.verdict, "slope": fp.slope,
                        "reachable": fp.reachable, "note": fp.note})
        text = json.dumps(out, indent=1, allow_nan=False)
    else:
        rows = [("nonlinearity", d.nonlinearity + ("" if d.param is None else f" (param {d.param:g})")),
                ("value", f"{d.value:.12g}"), ("method", d.method), ("formula", d.formula), ("source", d.source)]
        if fp is not None:
            held = "q itself" if fp.reachable and fp.q_star == fp.q else "q is unreachable: see the note"
            rows += [("q", f"{fp.q:.12g}  (second moment of each layer's input)"),
                     ("q*", f"{fp.q_star:.12g}  (the fixed point held: {held})" if fp.method == "fixed_point"
                      else f"{fp.q_star:.12g}  (the fixed point held: E[f(z)^2])"),
                     ("chi", f"{fp.chi:.12g}  {fp.verdict} (g^2 E[f'(g sqrt(q*) z)^2]; critical within "
                             f"{gains.CRITICAL_TOLERANCE:g} of 1)"),
                     ("slope", f"{fp.slope:.6g}  (dV/dq of the variance map at q*; < 1: the fixed point attracts)")]
            if fp.note:
                rows.append(("note", fp.note))
        if d.torch_value is not None and d.method != "table":
            rows.append(("torch constant", f"{d.torch_value:.12g}  (torch.nn.init.calculate_gain)"))
        width = max(len(k) for k, _ in rows)
        text = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
    _emit(args, text)
    return 0


def _propagate(args: argparse.Namespace) -> int:
    names = args.spec or ["he_normal", "glorot_uniform"]
    runs = []
    for name in names:
        spec, _ = parse_spec(name)
        runs.append(propagate(spec, args.activation, depth=args.depth, width=args.width, arch=args.arch,
                              batch=args.batch, param=args.param, backend=args.backend, seed=args.seed, label=name))
    if args.plot:
        _plot(runs, args.plot)
    if args.format == "json":
        _emit(args, json.dumps({"runs": [r.to_dict() for r in runs]}, indent=1, allow_nan=False))
        return 0
    header = ["layer"] + [f"{r.spec} {d}" for r in runs for d in ("fwd", "bwd")]
    lines = [header] + [[str(i + 1)] + [f"{v:.4g}" for r in runs for v in (r.forward_variance[i],
                                                                             r.backward_variance[i])]
                        for i in range(args.depth)]
    lines.append(["growth/layer"] + [f"{g:.3f}" for r in runs for g in (r.forward_growth(), r.backward_growth())])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    _emit(args, "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines))
    return 0


def _plot(runs: Sequence[Any], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ValueError(f"--plot needs matplotlib ({err}). Install it with: pip install 'initscale[plot]'") from err
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for r in runs:
        layers = range(1, r.depth + 1)
        axes[0].semilogy(layers, r.forward_variance, label=r.spec)
        axes[1].semilogy(layers, r.backward_variance, label=r.spec)
    axes[0].set_title(f"forward: Var(pre-activation), {runs[0].activation}, width {runs[0].width}")
    axes[1].set_title("backward: Var(gradient at layer input)")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="initscale", description="Weight-initialization specs: exact numbers, "
                                     "every framework.")
    sub = parser.add_subparsers(dest="command", required=True)

    e = sub.add_parser("explain", help="every number a spec implies for one weight, and the native calls")
    e.add_argument("spec", help="a preset with arguments (torch.kaiming_normal:a=0.2,mode=fan_out) or a JSON spec")
    e.add_argument("--shape", type=_shape, required=True, help="the weight shape, e.g. 3,3,64,128")
    e.add_argument("--layout", help="layout or layer kind (default: the preset's own; see initscale.layouts.names())")
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.add_argument("--out", help="write to this file instead of stdout")
    e.set_defaults(run=_explain)

    g = sub.add_parser("gain", help="an activation's gain: value, formula, source")
    g.add_argument("name", help=f"one of {', '.join(gains.names())}")
    g.add_argument("--param", type=float, help="the activation's parameter (leaky_relu slope, elu alpha, ...)")
    g.add_argument("--method", choices=("auto", "table", "derived", "fixed_point"), default="auto",
                   help="torch's table, the derived 1/sqrt(E[f(z)^2]), the fixed point E[f(g sqrt(q) z)^2] = q "
                   "(with chi and verdict), or auto (table where torch has one)")
    g.add_argument("--q", type=float, help="with --method fixed_point: the second moment of each layer's input "
                   "to hold (default 1)")
    g.add_argument("--format", choices=("text", "json"), default="text")
    g.add_argument("--out", help="write to this file instead of stdout")
    g.set_defaults(run=_gain)

    pr = sub.add_parser("propagate", help="forward/backward variance per layer of a deep MLP or CNN")
    pr.add_argument("--spec", action="append", help="a preset or JSON spec (repeatable; default: he_normal and "
                    "glorot_uniform)")
    pr.add_argument("--activation", default="relu", choices=sorted(gains.ACTIVATIONS))
    pr.add_argument("--param", type=float, help="the activation's parameter")
    pr.add_argument("--depth", type=int, default=50)
    pr.add_argument("--width", type=int, default=512)
    pr.add_argument("--arch", choices=("mlp", "cnn"), default="mlp")
    pr.add_argument("--batch", type=int, default=256)
    pr.add_argument("--backend", choices=("numpy", "torch", "jax"), default="numpy")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--plot", help="save a figure (PNG/PDF/SVG) comparing the specs; needs matplotlib")
    pr.add_argument("--format", choices=("text", "json"), default="text")
    pr.add_argument("--out", help="write to this file instead of stdout")
    pr.set_defaults(run=_propagate)

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


# The status of a process killed by SIGPIPE as shells report it (128 + signal 13), what `seq`, `cat`
# and every C tool give when the reader of their output goes away.
_BROKEN_PIPE_STATUS = 141


def _closed_stdout() -> int:
    """The reader of stdout has gone (``initscale ... | head -1``): stop quietly with the SIGPIPE
    status. stdout is pointed at devnull first, so that the interpreter's final flush of what is
    still buffered does not raise a second time (the recipe of Python's ``signal`` docs, "Note on
    SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a captured stream)
        pass
    return _BROKEN_PIPE_STATUS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``initscale`` console script."""
    args = _parser().parse_args(argv)
    try:
        code: Any = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    except BrokenPipeError:
        return _closed_stdout()
    except (ValueError, TypeError, KeyError) as err:  # bad names: say which and what is valid
        sys.stderr.write(f"initscale {args.command}: error: {err}\n")
        return 2
    return int(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
