"""A recipe costs no more than the same plain rules (issue 20 item 5).

Times ``initscale.torch.reinit_`` on an HF GPT-2 built from a small config (12 layers, d = 64:
150 parameter tensors, 0.7M values) three ways, in alternation, the best of 15 rounds (the machine is shared):

- ``recipe``: ``reinit_(model, recipes.get("hf.gpt2"))`` (roles resolved on every call);
- ``plain rules``: the same distributions written by hand as a mapping of globs;
- ``resolved rules``: ``recipe.rules_for(model)`` computed once, then passed as rules.

Run: ``python benchmarks/recipes.py`` (needs torch and transformers). Prints one line per case
and the ratio recipe / plain rules. Not part of the test suite.
"""

from __future__ import annotations

import math
import time

import torch
import transformers

import initscale
from initscale import recipes

LAYERS, ROUNDS = 12, 15


def _model() -> torch.nn.Module:
    cfg = transformers.GPT2Config(n_embd=64, n_layer=LAYERS, n_head=4, n_positions=64, vocab_size=256,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def _plain(n_layer: int) -> dict[str, initscale.Spec | None]:
    return {"*.c_proj.weight": initscale.Normal(0.02 / math.sqrt(2 * n_layer)), "*.bias": initscale.Zeros(),
            "*ln_*.weight": initscale.Ones(), "Conv1D": initscale.Normal(0.02),
            "Embedding": initscale.Normal(0.02)}


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
        recipe.rules_for(model)
    resolve = (time.perf_counter() - start) / ROUNDS
    median = {k: min(v) for k, v in times.items()}  # the least disturbed run: this machine is shared
    params = len(list(model.parameters()))
    print(f"GPT-2, {LAYERS} layers, {params} tensors, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M values; "
          f"best of {ROUNDS} rounds, in alternation")
    for name, value in median.items():
        count = len(cases[name]) if isinstance(cases[name], dict) else "-"
        print(f"  {name:15s} {value * 1e3:8.2f} ms   ({count} rules)")
    print(f"  resolving the recipe alone: {resolve * 1e3:.2f} ms")
    print(f"  recipe / plain rules: {median['recipe'] / median['plain rules']:.2f}x; "
          f"resolved rules / plain rules: {median['resolved rules'] / median['plain rules']:.2f}x")


if __name__ == "__main__":
    main()
