"""``initscale.auto`` against anyinit (PyPI 0.4.0) on the same torch models, in one run.

    python benchmarks/auto_vs_anyinit.py [--quick] [--markdown FILE]

Depth: 20 × 512 MLPs (Linear → activation, no bias effect: biases zero) with ReLU, tanh, GELU and
SiLU, for 5 seeds each. Each scheme initializes the same model (same seed for its own draw); then
a fresh batch x ~ N(0, 1) (256 × 512, its own seed) goes through and the mean square after the
20th activation is divided by the scheme's fixed point: q = 1 where it is reachable, and
initscale's q* for tanh (E[tanh²] < 1, so no gain holds 1; see initscale.gains.fixed_point). The
table gives the median over seeds and the range; the issue's target is within ±30 % (0.7–1.3).
Schemes: ``initscale.auto`` (planned on an example batch of the same distribution; measured mode,
the default, and ``.predicted``, the graph's propagation only),
anyinit's ``analytic`` and ``empirical`` modes, and torch's ``calculate_gain`` used the way it is
used (every layer, kaiming-normal style std gain/√fan_in).

Time and memory: init of a ~200M-parameter MLP (6 blocks of Linear(2048, 8192) → GELU →
Linear(8192, 2048) → GELU) and a ~200M GPT-2 (16 × 1024, from a config with transformers) by
``auto`` (plan + reinit_), by anyinit's analytic mode, and by initscale's plain rules (one spec:
he_normal): the median of 3 runs each in fresh processes, with peak RSS growth.
Targets: auto ≤ 0.3× anyinit's time and ≤ 1.5× the plain rules.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any

ACTIVATIONS = ("relu", "tanh", "gelu", "silu")


def _mlp(torch: Any, activation: str, depth: int, width: int) -> Any:
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU}[activation]
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), act()]
    return torch.nn.Sequential(*layers)


def _final_second_moment(torch: Any, model: Any, width: int, seed: int) -> float:
    x = torch.randn(256, width, generator=torch.Generator().manual_seed(10_000 + seed))
    with torch.no_grad():
        return float(model(x).double().square().mean())


def _init(scheme: str, torch: Any, model: Any, activation: str, width: int, seed: int) -> None:
    import initscale

    generator = torch.Generator().manual_seed(seed)
    if scheme.startswith("initscale.auto"):
        from initscale.adapters import _torch_auto

        example = torch.randn(256, width, generator=torch.Generator().manual_seed(20_000 + seed))
        arriving = "predicted" if scheme.endswith("predicted") else "measured"
        _torch_auto.apply_(model, initscale.auto(example, arriving=arriving), generator=generator)
    elif scheme.startswith("anyinit"):
        import anyinit

        mode = scheme.split(".")[1]
        spec = (
            torch.randn(256, width, generator=torch.Generator().manual_seed(20_000 + seed))
            if mode == "empirical"
            else (1, width)
        )
        anyinit.initialize(model, mode, spec, seed=seed)
    elif scheme == "torch.calculate_gain":
        name = {"gelu": "relu", "silu": "relu"}.get(activation, activation)  # torch's table has no GELU/SiLU
        gain = torch.nn.init.calculate_gain(name)
        for module in model:
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, 0.0, gain / math.sqrt(module.in_features), generator=generator)
                torch.nn.init.zeros_(module.bias)
    else:
        raise ValueError(scheme)


def depth_rows(depth: int, width: int, seeds: int) -> list[dict[str, Any]]:
    import torch

    from initscale import gains

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for activation in ACTIVATIONS:
        target = gains.fixed_point(activation).q_star
        for scheme in (
            "initscale.auto",
            "initscale.auto.predicted",
            "anyinit.analytic",
            "anyinit.empirical",
            "torch.calculate_gain",
        ):
            ratios, seconds = [], []
            for seed in range(seeds):
                torch.manual_seed(seed)
                model = _mlp(torch, activation, depth, width)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _init(scheme, torch, model, activation, width, seed)
                seconds.append(time.perf_counter() - start)
                ratios.append(_final_second_moment(torch, model, width, seed) / target)
            rows.append(
                {
                    "activation": activation,
                    "scheme": scheme,
                    "target": target,
                    "median": statistics.median(ratios),
                    "min": min(ratios),
                    "max": max(ratios),
                    "init_s": statistics.median(seconds),
                }
            )
    return rows


_TIMING = r"""
import json, resource, sys, time, warnings, torch
scheme, kind, layers, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
if kind == "gpt2":
    import transformers
    cfg = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=16, vocab_size=8192, n_positions=256,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 8192, (1, 32), generator=torch.Generator().manual_seed(0))  # auto: 2 passes of this
else:  # an MLP of `layers` blocks Linear(width, 4 width) -> GELU -> Linear(4 width, width) -> GELU
    blocks = []
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width),
                   torch.nn.GELU()]
    model = torch.nn.Sequential(*blocks)
    ids = torch.randn(8, width, generator=torch.Generator().manual_seed(0))
params = sum(p.numel() for p in model.parameters())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if scheme == "initscale.auto":
        import initscale
        from initscale.adapters.torch import reinit_
        from initscale.adapters import _torch_auto
        _torch_auto.apply_(model, initscale.auto(ids), generator=torch.Generator().manual_seed(1))
    elif scheme == "initscale.he_normal":
        import initscale
        from initscale.adapters.torch import reinit_
        reinit_(model, initscale.presets.get("he_normal"), generator=torch.Generator().manual_seed(1))
    else:
        import anyinit
        anyinit.initialize(model, "analytic", ids, seed=1)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"scheme": scheme, "params": params, "seconds": seconds, "peak_mib": (peak - base) / 1024}))
"""


def timing_rows(kind: str, layers: int, width: int, repeats: int) -> list[dict[str, Any]]:
    """One row per scheme on one model (``kind`` "mlp" or "gpt2"); a scheme that fails gets its error."""
    rows = []
    for scheme in ("initscale.he_normal", "initscale.auto", "anyinit.analytic"):
        runs, error = [], ""
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", _TIMING, scheme, kind, str(layers), str(width)], capture_output=True, text=True
            )
            if out.returncode:
                error = out.stderr.strip().splitlines()[-1][:160]
                break
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows.append(
            {
                "model": kind,
                "scheme": scheme,
                "params": runs[0]["params"] if runs else None,
                "seconds": statistics.median(r["seconds"] for r in runs) if runs else None,
                "peak_mib": statistics.median(r["peak_mib"] for r in runs) if runs else None,
                "error": error,
            }
        )
    return rows


def markdown(depth: list[dict[str, Any]], timing: list[dict[str, Any]], depth_n: int, width: int) -> str:
    lines = [
        f"### Second moment after {depth_n} layers of width {width}, / the fixed point (median over seeds)",
        "",
        "| activation | scheme | median | range | init s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['activation']} | {r['scheme']} | {r['median']:.3g} | {r['min']:.3g} – {r['max']:.3g} | "
        f"{r['init_s']:.3f} |"
        for r in depth
    ]
    for kind in dict.fromkeys(r["model"] for r in timing):
        rows = [r for r in timing if r["model"] == kind]
        plain = next(r for r in rows if r["scheme"] == "initscale.he_normal")["seconds"]
        anyinit_s = next(r for r in rows if r["scheme"] == "anyinit.analytic")["seconds"]
        params = next(r["params"] for r in rows if r["params"])
        lines += [
            "",
            f"### Init of a {params / 1e6:.0f}M-parameter {kind} model",
            "",
            "| scheme | seconds | / plain rules | / anyinit | peak RSS growth MiB |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            if r["seconds"] is None:
                lines.append(f"| {r['scheme']} | fails: {r['error']} | | | |")
                continue
            vs_anyinit = f"{r['seconds'] / anyinit_s:.2f}" if anyinit_s else "-"
            lines.append(
                f"| {r['scheme']} | {r['seconds']:.2f} | {r['seconds'] / plain:.2f} | {vs_anyinit} | "
                f"{r['peak_mib']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, width 256, a 40M model")
    parser.add_argument("--markdown", help="write the tables to this file")
    parser.add_argument("--no-timing", action="store_true", help="only the depth table")
    args = parser.parse_args(argv)
    depth_n, width, seeds = (20, 256, 2) if args.quick else (20, 512, 5)
    depth = depth_rows(depth_n, width, seeds)
    if args.no_timing:
        timing: list[dict[str, Any]] = []
    elif args.quick:
        timing = timing_rows("mlp", 2, 512, 1) + timing_rows("gpt2", 2, 256, 1)
    else:  # 12 blocks of 2048 <-> 8192: 201M parameters; GPT-2 16 x 1024: 218M
        timing = timing_rows("mlp", 6, 2048, 3) + timing_rows("gpt2", 16, 1024, 3)
    text = markdown(depth, timing, depth_n, width)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
