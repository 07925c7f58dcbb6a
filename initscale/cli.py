"""The ``initscale`` command line (also ``python -m initscale``).

- ``initscale explain SPEC --shape 3,3,64,128 [--layout keras]``: fans (and how they were
  counted), variance, std, sampling parameter, bounds, and the native call per framework.
- ``initscale gain NAME [--param X] [--method fixed_point [--q Q]]``: the gain, its formula and
  source (and torch's constant beside a derived one); a fixed-point or derived gain with the fixed
  point it holds, its χ, verdict and note.
- ``initscale propagate --spec he_normal --spec glorot_uniform --activation relu --depth 50``:
  forward and backward variance per layer of a deep MLP or CNN, as a table, JSON or a figure.
- ``initscale presets``: every preset with its source and one line; ``initscale layouts``: every
  layout and layer kind with its framework, options and one line.
- ``initscale parity``: the parity matrix (below).
- ``initscale check FILE``: every tensor of a ``.safetensors`` file or a torch state dict
  (``torch.load(weights_only=True)``) against the silent init bugs (:mod:`initscale.check`);
  exit status 1 when anything is flagged. ``--recipe NAME --config config.json`` also checks each
  tensor against what the recipe expects: a recipe reads roles from the module tree, which a
  checkpoint lacks, so the model is built from its transformers config on torch's meta device
  (:func:`initscale.recipes.rules_from_config`); checkpoint names the rules do not find are an error.

Every command takes ``--format json``. ``initscale parity`` runs the parity matrix
(:mod:`initscale.parity`) on every installed backend (Keras on its configured backend,
``KERAS_BACKEND``). Each row is one preset × layer × backend check: expected std, measured std,
the error of the second moment in units of its standard error, the distribution test's p-value,
and whether it passed. On a terminal it shows a progress bar, then a summary (backend × preset
family: checks, failures, the slowest cell) and only the failed rows (``--all-rows``: every row).
Into a pipe or a file (``--out``, checked before the run and written through a temporary file),
or as JSON/markdown, it writes every row (``--failures-only``: the failed ones), with the summary
and a progress line at least every 5 s on stderr. TensorFlow's and XLA's start-up logging is
dropped (``--native-logs`` keeps it). The exit status is 1 when any row fails, 2 on bad arguments.

Example::

    initscale parity                                  # everything installed: summary and failures
    initscale parity --backend torch --preset he_normal --format markdown
    initscale parity --format json --out parity.json  # [{"backend": ..., "preset": ..., ...}, ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from . import __version__, _registry, gains, parity
from . import presets as _presets
from .explain import explain, parse_spec
from .propagate import propagate

__all__ = ["main"]

_COLUMNS = ("backend", "preset", "layer", "comparison", "expected_std", "measured_std", "z", "p_value", "status")


def _cells(row: parity.Row) -> tuple[str, ...]:
    p = "-" if row.p_value is None else f"{row.p_value:.3g}"
    return (
        row.backend,
        row.preset,
        row.layer,
        row.comparison,
        f"{row.expected_std:.6g}",
        f"{row.measured_std:.6g}",
        f"{row.z:+.2f}",
        p,
        "pass" if row.passed else "FAIL",
    )


def _text(rows: Sequence[parity.Row]) -> str:
    table = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    for row in rows:
        if not row.passed:
            lines.append(f"FAIL {row.backend} {row.preset} {row.layer} ({row.comparison}):")
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


#: When stderr is not a terminal, `initscale parity` writes a progress line at least this often (seconds).
PROGRESS_INTERVAL_S = 5.0


class _ParityProgress:
    """Progress of a parity run on ``stream``: a bar redrawn per preset × layer cell (``mode="bar"``),
    a line at least every :data:`PROGRESS_INTERVAL_S` seconds from a timer thread (``"lines"``, for logs
    and pipes: also while frameworks load), or nothing (``None``)."""

    def __init__(self, stream: IO[str], mode: str | None) -> None:
        self.stream, self.mode = stream, mode
        self.done = self.total = self.failed = 0
        self.label = "loading frameworks"
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._drawn = False

    def __enter__(self) -> _ParityProgress:
        if self.mode == "lines":
            self._thread = threading.Thread(target=self._tick, name="initscale-parity-progress", daemon=True)
            self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(PROGRESS_INTERVAL_S):
            self.line()

    def line(self) -> None:
        with self._lock:
            cells = f"{self.done}/{self.total} preset × layer cells, {self.failed} failed, " if self.total else ""
            self.stream.write(f"initscale parity: {cells}{time.monotonic() - self.start:.0f} s ({self.label})\n")
            self.stream.flush()

    def update(self, done: int, total: int, failed: int, label: str) -> None:
        with self._lock:
            first = not self.total
            self.done, self.total, self.failed, self.label = done, total, failed, label
        if self.mode == "lines" and first:
            self.line()  # at once: the frameworks may take a while to load
        if self.mode == "bar":
            _progress(self.stream, done, total, label)
            self._drawn = True

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


# Start-up logging that TensorFlow, XLA and absl write from C++ straight to file descriptor 2 (oneDNN
# notices, CPU feature notes; some are printed before absl's log level applies, so
# TF_CPP_MIN_LOG_LEVEL alone does not silence them): glog-style I/W lines and absl's preamble.
_NATIVE_NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: )"
)


class _QuietNativeLogs:
    """While active, file descriptor 2 goes through a pipe whose reader thread drops
    :data:`_NATIVE_NOISE` lines and forwards everything else (Python warnings, errors) to the real
    stderr; :attr:`stream` writes to the real stderr directly (for progress and summaries).
    ``TF_CPP_MIN_LOG_LEVEL=2`` and ``GRPC_VERBOSITY=ERROR`` are set unless already set."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stream: IO[str] = sys.stderr

    def __enter__(self) -> _QuietNativeLogs:
        if not self.enabled:
            return self
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        sys.stderr.flush()
        try:
            self._saved = os.dup(2)
        except OSError:  # no file descriptor 2 (a closed stderr): nothing to filter
            self.enabled = False
            return self
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._forward, args=(read,), name="initscale-log-filter", daemon=True)
        self._thread.start()
        self.stream = open(os.dup(self._saved), "w", buffering=1, encoding="utf-8", errors="replace")
        return self

    def _forward(self, read: int) -> None:
        pending = b""
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if not _NATIVE_NOISE.match(line):
                        os.write(self._saved, line + b"\n")
        if pending and not _NATIVE_NOISE.match(pending):
            os.write(self._saved, pending)

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # the pipe's last write end closes: the reader sees its end
        self._thread.join(timeout=10)
        self.stream.close()
        os.close(self._saved)


def _out_path(text: str | None) -> Path | None:
    """``--out``, checked before any work: an existing, writable folder and not a folder itself."""
    if text is None:
        return None
    path = Path(text).expanduser()
    if path.is_dir():
        raise ValueError(f"--out must be a file, not the folder {text!r}; e.g. --out {path / 'parity.json'}")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(
            f"--out {text!r}: the folder {str(folder)!r} does not exist; create it or choose another path."
        )
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {text!r}: the folder {str(folder)!r} is not writable.")
    return path


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it: a run that dies leaves no half file."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as f:
        f.write(text)
    os.replace(f.name, path)


def _summary_text(lines: Sequence[parity.SummaryLine]) -> str:
    table = [
        ("backend", "family", "checks", "failed", "slowest"),
        *(
            (
                s.backend,
                s.family,
                str(s.checks),
                str(s.failed) if s.failed else "-",
                f"{s.slowest_s:.2f} s  {s.slowest}",
            )
            for s in lines
        ),
    ]
    return _table(table)


def _keras_backend_note(backends: Sequence[str]) -> str:
    keras = sys.modules.get("keras")
    if "keras" not in backends or keras is None:
        return ""
    try:
        return f" (keras on {keras.backend.backend()})"
    except Exception:  # a broken Keras install: the rows already say what failed
        return ""


def _parity(args: argparse.Namespace) -> int:
    chosen = args.preset or _presets.names()
    for name in chosen:
        parse_spec(name)  # before importing any framework: a typo fails fast, with close matches
    out = _out_path(args.out)  # before any work, too
    layers = args.layer or list(parity.LAYERS)
    # On a terminal (text, no --out): a summary, then the failed rows only (--all-rows: every row).
    # Otherwise (a pipe, a file, --out, json/markdown): every row (--failures-only: the failed ones),
    # with the summary on stderr.
    display = args.format == "text" and out is None and sys.stdout.isatty()
    frameworks = args.backend is None or any(b != "numpy" for b in args.backend)
    with _QuietNativeLogs(frameworks and not args.native_logs) as quiet:
        err = quiet.stream
        mode = (
            "bar"
            if args.progress or (args.progress is None and err.isatty())
            else ("lines" if args.progress is None else None)
        )
        with _ParityProgress(err, mode) as progress:
            total = len(chosen) * len(layers)
            progress.update(0, total, 0, "loading frameworks")
            backends = args.backend or parity.available_backends()
            rows: list[parity.Row] = []
            seconds: list[float] = []
            seen: set[tuple[str, str]] = set()
            failed = 0
            last = time.monotonic()
            for row in parity.run_iter(
                backends, chosen, layers, cross=not args.no_cross, native=not args.no_native, seed=args.seed
            ):
                now = time.monotonic()
                rows.append(row)
                seconds.append(now - last)  # the draw and checks of this row (≈0 for rows shared by presets)
                last = now
                failed += not row.passed
                if (row.preset, row.layer) not in seen:
                    seen.add((row.preset, row.layer))
                    progress.update(len(seen), total, failed, f"{row.preset} {row.layer}")
        summary = _summary_text(parity.summarize(rows, seconds))
        closing = (
            f"initscale parity: {len(rows)} checks on backends {', '.join(backends)}"
            f"{_keras_backend_note(backends)}: {failed} failed ({time.monotonic() - progress.start:.0f} s)"
        )
        if display:
            shown = rows if args.all_rows else [r for r in rows if not r.passed]
            print(summary)
            if shown:
                print()
                print(_text(shown))
            elif rows:
                print("\nno failures (--all-rows lists every row)")
        else:
            shown = [r for r in rows if not r.passed] if args.failures_only else rows
            if args.format == "json":
                text = json.dumps([r.to_dict() for r in shown], indent=1)
            elif args.format == "markdown":
                text = _markdown(shown)
            else:
                text = _text(shown)
            if out is not None:
                _write_atomically(out, text + "\n")
            else:
                print(text)
                sys.stdout.flush()
            err.write(summary + "\n")
            if out is not None:
                closing += f"; {len(shown)} rows written to {out}"
        err.write(closing + "\n")
        err.flush()
    return 1 if failed else 0


def _one_line(doc: str) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _list_presets(args: argparse.Namespace) -> int:
    entries: list[dict[str, Any]] = []
    for name in _presets.names():
        info = _presets.info(name)
        entries.append(
            {
                "name": name,
                "description": _one_line(info.doc),
                "source": info.source,
                "layout": info.layout,
                "arguments": info.parameters,
            }
        )
    if args.format == "json":
        _emit(args, json.dumps(entries, indent=1))
    else:
        _emit(
            args,
            _table([("name", "source", "description"), *((e["name"], e["source"], e["description"]) for e in entries)]),
        )
    return 0


def _list_layouts(args: argparse.Namespace) -> int:
    from . import fans

    entries: list[dict[str, Any]] = [
        {
            "name": name,
            "framework": fans.kind_framework(name),
            "options": fans.kind_options(name),
            "description": fans.describe_kind(name),
        }
        for name in fans.names()
    ]
    if args.format == "json":
        _emit(args, json.dumps(entries, indent=1))
        return 0

    def options(e: dict[str, Any]) -> str:
        return ",".join([*(f"{k}={v}" for k, v in e["options"].items()), "native=false"])

    _emit(
        args,
        _table(
            [
                ("name", "framework", "options (defaults)", "description"),
                *((e["name"], e["framework"], options(e), e["description"]) for e in entries),
            ]
        )
        + "\nOptions follow the name: 'torch.conv:groups=4', 'keras.conv:native=true' (native: the framework's "
        "own fans instead of the forward-pass ones).",
    )
    return 0


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
                f"got {what} in {text!r}"
            )
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
        out: dict[str, Any] = {
            "nonlinearity": d.nonlinearity,
            "param": d.param,
            "value": d.value,
            "method": d.method,
            "formula": d.formula,
            "source": d.source,
            "torch_value": d.torch_value,
        }
        if fp is not None:
            out.update(
                {
                    "q": fp.q,
                    "q_star": fp.q_star,
                    "chi": fp.chi,
                    "verdict": fp.verdict,
                    "slope": fp.slope,
                    "reachable": fp.reachable,
                    "note": fp.note,
                }
            )
        text = json.dumps(out, indent=1, allow_nan=False)
    else:
        rows = [
            ("nonlinearity", d.nonlinearity + ("" if d.param is None else f" (param {d.param:g})")),
            ("value", f"{d.value:.12g}"),
            ("method", d.method),
            ("formula", d.formula),
            ("source", d.source),
        ]
        if fp is not None:
            held = "q itself" if fp.reachable and fp.q_star == fp.q else "q is unreachable: see the note"
            rows += [
                ("q", f"{fp.q:.12g}  (second moment of each layer's input)"),
                (
                    "q*",
                    f"{fp.q_star:.12g}  (the fixed point held: {held})"
                    if fp.method == "fixed_point"
                    else f"{fp.q_star:.12g}  (the fixed point held: E[f(z)^2])",
                ),
                (
                    "chi",
                    f"{fp.chi:.12g}  {fp.verdict} (g^2 E[f'(g sqrt(q*) z)^2]; critical within "
                    f"{gains.CRITICAL_TOLERANCE:g} of 1)",
                ),
                ("slope", f"{fp.slope:.6g}  (dV/dq of the variance map at q*; < 1: the fixed point attracts)"),
            ]
            if fp.note:
                rows.append(("note", fp.note))
        if d.torch_value is not None and d.method != "table":
            rows.append(("torch constant", f"{d.torch_value:.12g}  (torch.nn.init.calculate_gain)"))
        width = max(len(k) for k, _ in rows)
        text = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
    _emit(args, text)
    return 0


def _model_factory(target: str) -> Any:
    """``module:function`` -> the function (a factory returning ``(model, example_inputs)``)."""
    import importlib

    module_name, _, function = target.partition(":")
    if not module_name or not function:
        raise ValueError(
            f"--model must be 'module:function' (a function returning (model, example_inputs)). Received: {target!r}."
        )
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"--model {target!r}: cannot import {module_name!r} ({err}).") from err
    finally:
        sys.path.pop(0)
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ValueError(f"--model {target!r}: {module_name!r} has no function {function!r}.")
    return factory


def _propagate(args: argparse.Namespace) -> int:
    from .propagate import propagate_model

    names = args.spec or ["he_normal", "glorot_uniform"]
    factory = _model_factory(args.model) if args.model else None
    runs = []
    for name in names:
        spec: Any = "auto" if name == "auto" else parse_spec(name)[0]
        if factory is not None:
            runs.append(propagate_model(factory, spec, seed=args.seed, label=name))
            continue
        runs.append(
            propagate(
                spec,
                args.activation,
                depth=args.depth,
                width=args.width,
                arch=args.arch,
                batch=args.batch,
                param=args.param,
                backend=args.backend,
                seed=args.seed,
                label=name,
            )
        )
    if args.plot:
        _plot(runs, args.plot)
    if args.format == "json":
        _emit(args, json.dumps({"runs": [r.to_dict() for r in runs]}, indent=1, allow_nan=False))
        return 0
    header = ["layer"] + [f"{r.spec} {d}" for r in runs for d in ("fwd", "pred", "bwd")]
    depth = min(r.depth for r in runs)

    def predicted(r: Any, i: int) -> str:
        return f"{r.predicted_forward[i]:.4g}" if i < len(r.predicted_forward) else "-"

    lines = [header] + [
        [runs[0].layers[i] if runs[0].layers else str(i + 1)]
        + [v for r in runs for v in (f"{r.forward_variance[i]:.4g}", predicted(r, i), f"{r.backward_variance[i]:.4g}")]
        for i in range(depth)
    ]
    lines.append(
        ["growth/layer"] + [g for r in runs for g in (f"{r.forward_growth():.3f}", "", f"{r.backward_growth():.3f}")]
    )
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
        (line,) = axes[0].semilogy(layers, r.forward_variance, label=f"{r.spec} (measured)")
        if r.predicted_forward:
            axes[0].semilogy(
                layers, r.predicted_forward, linestyle="--", color=line.get_color(), label=f"{r.spec} (predicted)"
            )
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


def _is_safetensors(path: str) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian), then ``{``;
    a torch checkpoint is a zip (``PK``) or a pickle."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def _check(args: argparse.Namespace) -> int:
    from . import check as core

    if not os.path.isfile(args.file):
        raise ValueError(f"FILE {args.file!r} is not a file.")
    rules = None
    if args.recipe is not None:
        from . import recipes

        rules = recipes.rules_from_config(args.recipe, args.config)
    elif args.config is not None:
        raise ValueError(
            f"--config {args.config!r} is read only with --recipe NAME (the recipe's roles come from the "
            "model it describes)."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = _check_file(args, core, rules)
    for warning in caught:
        if rules is not None and "matched no parameter" in str(warning.message):
            raise ValueError(
                f"--recipe {args.recipe!r} on {args.file!r}: {warning.message} The checkpoint's names are "
                "not those of the model --config describes (another model class, or a prefix); nothing "
                "was checked against the recipe."
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    _emit(args, report.to_json(indent=1) if args.format == "json" else str(report))
    return 0 if report else 1


def _check_file(args: argparse.Namespace, core: Any, rules: Any) -> Any:
    if _is_safetensors(args.file):
        arrays, dtypes = core.load_safetensors(args.file)
        report = core.check_state(arrays, dtypes=dtypes, fresh=args.fresh, alpha=args.alpha, rules=rules)
    else:
        try:
            import torch  # noqa: F401
        except ImportError as err:
            raise ValueError(
                f"{args.file!r} is not a safetensors file, and reading a torch checkpoint needs torch "
                f"({err}). Install it with: pip install 'initscale[torch]'"
            ) from None
        from .adapters import _torch_check

        report = _torch_check.check_checkpoint(args.file, fresh=args.fresh, alpha=args.alpha, rules=rules)
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initscale", description="Weight-initialization specs: exact numbers, every framework."
    )
    parser.add_argument("--version", action="version", version=f"initscale {__version__}")
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
    g.add_argument(
        "--method",
        choices=("auto", "table", "derived", "fixed_point"),
        default="auto",
        help="torch's table, the derived 1/sqrt(E[f(z)^2]), the fixed point E[f(g sqrt(q) z)^2] = q "
        "(with chi and verdict), or auto (table where torch has one)",
    )
    g.add_argument(
        "--q", type=float, help="with --method fixed_point: the second moment of each layer's input to hold (default 1)"
    )
    g.add_argument("--format", choices=("text", "json"), default="text")
    g.add_argument("--out", help="write to this file instead of stdout")
    g.set_defaults(run=_gain)

    pr = sub.add_parser("propagate", help="forward/backward variance per layer of a deep MLP or CNN")
    pr.add_argument(
        "--spec",
        action="append",
        help="a preset or JSON spec, or auto (initscale.auto: fixed-point "
        "gains for the second moment that arrives; repeatable; default: he_normal and glorot_uniform)",
    )
    pr.add_argument(
        "--model",
        help="module:function returning (torch model, example_inputs): propagate through "
        "your model instead of the built-in MLP/CNN (--activation/--depth/--width/--arch do not apply)",
    )
    pr.add_argument("--activation", default="relu", choices=sorted(gains.ACTIVATIONS))
    pr.add_argument("--param", type=float, help="the activation's parameter")
    pr.add_argument("--depth", type=int, default=50)
    pr.add_argument("--width", type=int, default=512)
    pr.add_argument("--arch", choices=("mlp", "cnn"), default="mlp")
    pr.add_argument("--batch", type=int, default=256)
    pr.add_argument("--backend", choices=_registry.serving("propagate"), default="numpy")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--plot", help="save a figure (PNG/PDF/SVG) comparing the specs; needs matplotlib")
    pr.add_argument("--format", choices=("text", "json"), default="text")
    pr.add_argument("--out", help="write to this file instead of stdout")
    pr.set_defaults(run=_propagate)

    p = sub.add_parser(
        "parity",
        help="run the parity matrix: preset x layer x backend",
        description="Check every preset, on every logical layer, on every installed backend, "
        "against its exact distribution, the NumPy reference and the native initializer.",
    )
    p.add_argument(
        "--backend",
        action="append",
        choices=sorted(_registry.serving("parity")),
        help="a backend to run (repeatable; default: every installed one)",
    )
    p.add_argument(
        "--preset",
        action="append",
        help="a preset, e.g. he_normal or 'torch.kaiming_normal:a=0.2' (repeatable; default: all)",
    )
    p.add_argument("--layer", action="append", choices=list(parity.LAYERS), help="a layer (repeatable; default: all)")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.add_argument("--out", help="write the table to this file instead of stdout")
    p.add_argument(
        "--failures-only",
        action="store_true",
        help="list only the failed rows (for files and pipes; a terminal shows only the failed rows already)",
    )
    p.add_argument(
        "--all-rows",
        action="store_true",
        help="on a terminal, list every row after the summary (default: only the failed ones)",
    )
    p.add_argument(
        "--native-logs",
        action="store_true",
        help="keep TensorFlow's/XLA's own start-up logging on stderr (default: dropped)",
    )
    p.add_argument("--no-cross", action="store_true", help="skip the comparisons with the NumPy reference")
    p.add_argument("--no-native", action="store_true", help="skip the comparisons with native initializers")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0; runs are deterministic)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: a bar when stderr is a terminal, else a "
        f"line at least every {PROGRESS_INTERVAL_S:g} s)",
    )
    p.set_defaults(run=_parity)

    ps = sub.add_parser("presets", help="every preset: name, one line, source")
    ps.add_argument("--format", choices=("text", "json"), default="text")
    ps.add_argument("--out", help="write to this file instead of stdout")
    ps.set_defaults(run=_list_presets)

    ly = sub.add_parser("layouts", help="every layout and layer kind, with its options")
    ly.add_argument("--format", choices=("text", "json"), default="text")
    ly.add_argument("--out", help="write to this file instead of stdout")
    ly.set_defaults(run=_list_layouts)

    c = sub.add_parser(
        "check",
        help="flag the silent init bugs in a checkpoint (exit 1 on any flag)",
        description="Check every tensor of a .safetensors file or a torch state dict (read with "
        "torch.load(weights_only=True)): non-finite values, uninitialized memory, norm scales "
        "that are not 1, repeated rows; roles come from the tensor names.",
    )
    c.add_argument("file", help="a .safetensors file or a torch checkpoint holding a state dict")
    c.add_argument(
        "--fresh",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the weights are freshly initialized: also flag init-time properties (default: yes)",
    )
    c.add_argument(
        "--alpha", type=float, default=1e-4, help="family-wise false-alarm rate of the chance flags (default 1e-4)"
    )
    c.add_argument(
        "--recipe",
        help="expect each tensor to follow this recipe (initscale.recipes.names()); needs "
        "--config: the recipe reads roles from the model's module tree, built from the config on torch's "
        "meta device (no memory, no download)",
    )
    c.add_argument(
        "--config",
        help="with --recipe: the model's transformers config.json (or the folder holding it); "
        "its `architectures[0]` names the model class",
    )
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.add_argument("--out", help="write to this file instead of stdout")
    c.set_defaults(run=_check)
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
