"""Peak extra memory of one orthogonal init of a torch CPU weight (issue 19: QR workspace).

usage: MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/orthogonal_memory.py MODE ROWS COLS DTYPE
MODE: ``initscale`` (``reinit_`` with ``initscale.Orthogonal()``) or ``torch``
(``nn.init.orthogonal_``). Run each case in a fresh process: the peak resident size (Linux VmHWM,
reset before the call) minus the resident size before it, on an already-touched weight, after a
small warm-up init (libraries loaded). The fixed mmap threshold keeps freed blocks out of the
resident set (glibc raises its threshold to 32 MiB after the first large free otherwise)."""

from __future__ import annotations

import sys
import time

import torch

import initscale
from initscale.adapters import torch as ist


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def main() -> None:
    mode, rows, cols, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dtype = getattr(torch, name)
    torch.set_num_threads(1)

    def run(w: torch.Tensor) -> None:
        if mode == "torch":
            torch.nn.init.orthogonal_(w, generator=torch.Generator().manual_seed(0))
            return
        layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        layer.weight = torch.nn.Parameter(w)
        ist.reinit_(
            layer, {"weight": initscale.Orthogonal()}, generator=torch.Generator().manual_seed(0), defaults=False
        )

    run(torch.empty(64, 48, dtype=dtype))  # warm-up
    w = torch.zeros(rows, cols, dtype=dtype)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM
    before = _status("VmRSS")
    start = time.perf_counter()
    run(w)
    seconds = time.perf_counter() - start
    mib = w.numel() * w.element_size() / 2**20
    extra = _status("VmHWM") - before
    print(f"{mode} {rows}x{cols} {name}: weight {mib:.0f} MiB, peak extra {extra:.0f} MiB, {seconds:.2f} s")


if __name__ == "__main__":
    main()
