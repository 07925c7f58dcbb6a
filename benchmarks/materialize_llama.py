"""A ~1.1B HF Llama from config: meta → ``initscale.torch.materialize_`` against HF's own path.

    python benchmarks/materialize_llama.py [--layers N]

Each side runs in a fresh process and reports wall time and peak RSS growth:

- ``hf``: ``LlamaForCausalLM(config)`` on the CPU (allocation plus HF's ``_init_weights``: N(0, 0.02²)
  for Linear and Embedding, norms to ones, rotary ``inv_freq`` computed), the model's own init;
- ``materialize_``: the model built under ``torch.device("meta")`` (no memory, no init), then
  ``materialize_(model, {"Linear": Normal(0.02), "Embedding": Normal(0.02)}, device="cpu")``: the
  same distributions, every buffer restored (the test suite checks they equal HF's).

Config: TinyLlama-1.1B's shape (22 layers, hidden 2048, intermediate 5632, 32 heads, 4 KV heads,
vocab 32000), fp32.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_RUN = r"""
import json, resource, sys, time, torch, transformers, initscale
side, layers = sys.argv[1], int(sys.argv[2])
cfg = transformers.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers,
                               num_attention_heads=32, num_key_value_heads=4, vocab_size=32000)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if side == "hf":
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
else:
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg)
    N = initscale.Normal(0.02)
    initscale.torch.materialize_(model, {"Linear": N, "Embedding": N}, device="cpu",
                                 generator=torch.Generator().manual_seed(0))
seconds = time.perf_counter() - start
params = sum(p.numel() for p in model.parameters())
ids = torch.randint(0, 32000, (1, 8))
with torch.no_grad():
    finite = bool(torch.isfinite(model(ids).logits).all())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"side": side, "params": params, "seconds": seconds, "peak_gib": (peak - base) / 2**20,
                  "finite": finite}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for _ in range(args.repeats):
        for side in ("hf", "materialize_"):
            out = subprocess.run(
                [sys.executable, "-c", _RUN, side, str(args.layers)], capture_output=True, text=True, check=True
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for row in rows:
        print(
            f"{row['side']:13s} {row['params'] / 1e9:.2f}B  {row['seconds']:6.2f} s  "
            f"peak RSS +{row['peak_gib']:.2f} GiB  forward finite: {row['finite']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
