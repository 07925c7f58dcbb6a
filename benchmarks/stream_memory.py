"""Peak extra memory of a stream ``reinit_`` of a bfloat16 model (issue 19: at most
max(64 MiB, 2% of the parameters)): one large embedding and one weight stored transposed.

    python benchmarks/stream_memory.py [--rows 200000] [--dim 1024] [--dtype bfloat16]

Prints the resident set before and the peak during ``reinit_(..., stream_seed=0)``, each in a
fresh process per path (the compiled kernel, and INITSCALE_STREAM_KERNEL=0 for torch's ops).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(rows: int, dim: int, dtype: str) -> dict[str, float]:
    import torch

    import initscale
    from initscale.adapters import torch as ist

    torch.set_num_threads(1)
    dt = getattr(torch, dtype)
    model = torch.nn.Module()
    model.emb = torch.nn.utils.skip_init(torch.nn.Embedding, rows, dim, dtype=dt)
    model.proj = torch.nn.utils.skip_init(torch.nn.Linear, 4096, 4096, bias=False, dtype=dt)
    model.proj.weight = torch.nn.Parameter(torch.empty(4096, 4096, dtype=dt).t())  # stored (in, out): permuted
    for p in model.parameters():
        p.detach().zero_()  # resident before the measurement
    params = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    before = _rss_mib()
    start = time.perf_counter()
    ist.reinit_(
        model, {"emb.weight": initscale.Normal(0.02), "proj.weight": initscale.presets.get("he_normal")}, stream_seed=0
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "params_mib": params,
        "rss_before_mib": before,
        "peak_mib": peak,
        "extra_mib": peak - before,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.rows, args.dim, args.dtype)))
        return
    for path, env in (("kernel", {}), ("torch ops", {"INITSCALE_STREAM_KERNEL": "0"})):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--rows",
            str(args.rows),
            "--dim",
            str(args.dim),
            "--dtype",
            args.dtype,
        ]
        out = json.loads(
            subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
        )
        bound = max(64.0, 0.02 * out["params_mib"])
        print(
            f"{path:9s}: parameters {out['params_mib']:.0f} MiB, RSS before {out['rss_before_mib']:.0f} MiB, "
            f"peak {out['peak_mib']:.0f} MiB, extra {out['extra_mib']:.0f} MiB (bound {bound:.0f} MiB), "
            f"{out['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
