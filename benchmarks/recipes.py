"""A recipe costs no more than the same plain rules (issue 20 item 5).

Times ``initscale.torch.reinit_`` on an HF GPT-2 built from a small config (12 layers, d = 64:
148 parameter tensors, 0.6M values) three ways, in alternation, over 41 rounds (the machine is
shared: each case's median and best, and the median of the per-round ratios, which a load that
changes between rounds disturbs least):

- ``recipe``: ``reinit_(model, recipes.get("hf.gpt2"))`` (resolved on the walk ``reinit_`` made;
  a second call finds the resolution kept under a key of everything it depends on);
- ``plain rules``: the same distributions written by hand as a mapping of globs;
- ``resolved rules``: ``recipe.rules_for(model)`` computed once, then passed as rules.

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

LAYERS, ROUNDS = 12, 41


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
    times: dict[str, list[float]] = {k: [] for k in cases}
    gen = torch.Generator().manual_seed(0)
    for _ in range(ROUNDS):
        for name, rules in cases.items():
            start = time.perf_counter()
            initscale.torch.reinit_(model, rules, generator=gen)
            times[name].append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(ROUNDS):
        recipe.rules_for(model)  # without the walk: resolved from scratch every time
    resolve = (time.perf_counter() - start) / ROUNDS
    params = len(list(model.parameters()))
    print(
        f"GPT-2, {LAYERS} layers, {params} tensors, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M values; "
        f"{ROUNDS} rounds, in alternation"
    )
    for name, values in times.items():
        count = len(cases[name]) if isinstance(cases[name], dict) else "-"
        print(
            f"  {name:15s} median {statistics.median(values) * 1e3:8.2f} ms, best {min(values) * 1e3:8.2f} ms"
            f"   ({count} rules)"
        )
    print(f"  resolving the recipe from scratch (no walk given): {resolve * 1e3:.2f} ms")
    for name in ("recipe", "resolved rules"):
        paired = statistics.median(a / b for a, b in zip(times[name], times["plain rules"], strict=True))
        print(
            f"  {name} / plain rules: median of per-round ratios {paired:.3f}x; ratio of medians "
            f"{statistics.median(times[name]) / statistics.median(times['plain rules']):.3f}x; ratio of bests "
            f"{min(times[name]) / min(times['plain rules']):.3f}x"
        )


if __name__ == "__main__":
    main()
