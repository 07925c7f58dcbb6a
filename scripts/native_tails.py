"""The frameworks' own truncated normals in the far tails, in float32 (docs/conventions.md, section 10).

For each native sampler that takes an interval and each interval of N(0, 1) below: 1,000,000
draws in float32 (seed 0), and

- ``non-finite``: values that are ±inf or NaN;
- ``outside``: finite values outside [a, b] rounded to float32 (a draw just below 4.4 may round
  to float32(4.4) = 4.4000001, and is not counted);
- ``distinct``: distinct values among all draws;
- ``KS p``: the Kolmogorov–Smirnov p-value of the finite values against the analytic CDF
  (``scipy.stats.truncnorm(a, b).cdf``; "—" with fewer than two finite values; "0" where SciPy's
  p-value underflows); a native that raises on the interval gets its error instead.

``keras.random.truncated_normal``, the ``keras.initializers.TruncatedNormal`` initializer (each
Keras backend) and ``tf.random.truncated_normal`` take no interval (they cut at ±2σ around the mean),
so they cannot draw these intervals and have no rows; TensorFlow's bounded sampler is
``tf.random.stateless_parameterized_truncated_normal``. ``scipy.stats.truncnorm.rvs`` (float64,
rounded to float32) is the control. A native that is not installed is skipped with a note.

Run: ``python scripts/native_tails.py [--n N] [--format markdown|text]`` (about a minute on two
cores, most of it importing the frameworks).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import sys
import warnings
from collections.abc import Callable

import numpy as np

INTERVALS = [(3.0, math.inf), (-math.inf, -4.5), (6.0, math.inf), (5.5, 6.5), (4.2, 4.4), (20.0, 20.5)]


def _jax(a: float, b: float, n: int) -> np.ndarray:
    import jax

    return np.asarray(jax.random.truncated_normal(jax.random.key(0), a, b, (n,), jax.numpy.float32))


def _torch(a: float, b: float, n: int) -> np.ndarray:
    import torch

    t = torch.empty(n, dtype=torch.float32)
    torch.nn.init.trunc_normal_(t, 0.0, 1.0, a, b, generator=torch.Generator().manual_seed(0))
    return t.numpy()


def _tensorflow(a: float, b: float, n: int) -> np.ndarray:
    import tensorflow as tf

    return (
        tf.random.stateless_parameterized_truncated_normal(
            [n], seed=[0, 0], means=0.0, stddevs=1.0, minvals=a, maxvals=b
        )
        .numpy()
        .astype(np.float32)
    )


def _scipy(a: float, b: float, n: int) -> np.ndarray:
    from scipy import stats

    return stats.truncnorm.rvs(a, b, size=n, random_state=np.random.default_rng(0)).astype(np.float32)


NATIVES: dict[str, tuple[str, Callable[[float, float, int], np.ndarray]]] = {
    "jax.random.truncated_normal (float32)": ("jax", _jax),
    "torch.nn.init.trunc_normal_ (float32)": ("torch", _torch),
    "tf.random.stateless_parameterized_truncated_normal (float32)": ("tensorflow", _tensorflow),
    "scipy.stats.truncnorm.rvs (float64 → float32, control)": ("scipy", _scipy),
}


def measure(x: np.ndarray, a: float, b: float) -> dict[str, object]:
    from scipy import stats

    finite = x[np.isfinite(x)].astype(np.float64)
    p: object = "—"
    if finite.size >= 2:
        p = float(stats.kstest(finite, stats.truncnorm(a, b).cdf).pvalue)
    low, high = float(np.float32(a)), float(np.float32(b))  # where draws inside [a, b] round to
    return {
        "non-finite": int(x.size - finite.size),
        "outside": int(np.sum((finite < low) | (finite > high))),
        "distinct": int(np.unique(x).size),
        "KS p": p,
    }


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "0" if v == 0.0 else f"{v:.2g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _interval(a: float, b: float) -> str:
    return f"{'(-inf' if math.isinf(a) else f'[{a:g}'}, {'inf)' if math.isinf(b) else f'{b:g}]'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--format", choices=("markdown", "text"), default="markdown")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows, versions, notes = [], {}, []
    for name, (package, draw) in NATIVES.items():
        try:
            importlib.import_module(package)
        except ImportError as err:
            notes.append(f"{name}: skipped ({package} not importable: {err})")
            continue
        versions[package] = (
            importlib.metadata.version({"tensorflow": "tensorflow-cpu"}.get(package, package))
            if package != "tensorflow"
            else importlib.import_module("tensorflow").__version__
        )
        for a, b in INTERVALS:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                try:
                    x = np.asarray(draw(a, b, args.n), dtype=np.float32)
                except Exception as err:  # a native that refuses the interval: say how
                    rows.append(
                        {
                            "sampler": name,
                            "interval": _interval(a, b),
                            "non-finite": "—",
                            "outside": "—",
                            "distinct": "—",
                            "KS p": f"raises {type(err).__name__}: {err}",
                        }
                    )
                    continue
            rows.append({"sampler": name, "interval": _interval(a, b), **measure(x, a, b)})
    columns = ["sampler", "interval", "non-finite", "outside", "distinct", "KS p"]
    if args.format == "markdown":
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    else:
        for row in rows:
            print("  ".join(f"{c}={_fmt(row[c])}" for c in columns))
    print()
    print(
        f"{args.n:,} draws each, seed 0; Python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"scipy {importlib.metadata.version('scipy')}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "scipy")
    )
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
