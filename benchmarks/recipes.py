"""A recipe costs no more than the same plain rules (issue 20 item 5).

Times ``initscale.torch.reinit_`` on an HF GPT-2 built from a small config (12 layers, d = 64:
148 parameter tensors, 0.6M values) three ways, over 101 rounds, the order of the three rotated
each round (so none always runs first, after the others' draws), each call timed by the wall
clock and by the CPU time of the calling thread (what the Python work costs; less disturbed than
the wall clock by a shared machine's other processes, and blind to torch's worker threads, which
draw the same values in every case). Printed: each case's median, and the median and quartiles
of the per-round ratios to the plain rules, which a load that changes between rounds disturbs
least:

- ``recipe``: ``reinit_(model, recipes.get("hf.gpt2"))`` (resolved on the walk ``reinit_`` made;
  a later call finds the resolution kept under a key of everything it depends on, compiled once);
- ``plain rules``: the same distributions written by hand as a mapping of globs and classes;
- ``resolved rules``: ``recipe.rules_for(model)`` computed once, then passed as rules (a plain
  dict of 16 globs: compiled each call).

Run: ``python benchmarks/recipes.py`` (needs torch and transformers). Prints one line per case
and the ratio recipe / plain rules. Not part of the test suite.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import transformers

import initscale
from initscale import recipes

LAYERS, ROUNDS = 12, 101


def _model() -> torch.nn.Module:
    cfg = transformers.GPT2Config(
        n_embd=64, n_layer=LAYERS, n_head=4, n_positions=64, vocab_size=256, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


def _plain(n_layer: int) -> dict[str, initscale.Spec | None]:
    return {
        "*.c_proj.weight": initscale.Normal(0.02 / math.sqrt(2 * n_layer)),
        "*.bias": initscale.Zeros(),
        "*ln_*.weight": initscale.Ones(),
        "Conv1D": initscale.Normal(0.02),
        "Embedding": initscale.Normal(0.02),
    }


def main() -> None:
    torch.manual_seed(0)
    model = _model()
    recipe = recipes.get("hf.gpt2")
    resolved = recipe.rules_for(model)
    cases = {"recipe": recipe, "plain rules": _plain(LAYERS), "resolved rules": resolved}
    names = list(cases)
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    gen = torch.Generator().manual_seed(0)
    for i in range(ROUNDS):
        for name in names[i % 3 :] + names[: i % 3]:
            start, start_cpu = time.perf_counter(), time.thread_time()
            initscale.torch.reinit_(model, cases[name], generator=gen)
            cpu[name].append(time.thread_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(ROUNDS):
        recipe.rules_for(model)  # without the walk: resolved from scratch every time
    resolve = (time.perf_counter() - start) / ROUNDS
    params = len(list(model.parameters()))
    print(
        f"GPT-2, {LAYERS} layers, {params} tensors, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M values; "
        f"{ROUNDS} rounds, order rotated"
    )
    for name in names:
        count = len(cases[name]) if isinstance(cases[name], dict) else "-"
        print(
            f"  {name:15s} wall median {statistics.median(wall[name]) * 1e3:8.2f} ms, "
            f"thread CPU median {statistics.median(cpu[name]) * 1e3:8.2f} ms   ({count} rules)"
        )
    print(f"  resolving the recipe from scratch (no walk given): {resolve * 1e3:.2f} ms")
    for name in ("recipe", "resolved rules"):
        for clock, times in (("wall", wall), ("thread CPU", cpu)):
            ratios = sorted(a / b for a, b in zip(times[name], times["plain rules"], strict=True))
            q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
            print(
                f"  {name} / plain rules, {clock}: median of per-round ratios {statistics.median(ratios):.3f}x "
                f"(quartiles {q1:.3f}..{q3:.3f})"
            )


if __name__ == "__main__":
    main()
