"""Run under torchrun with 2 CPU processes (gloo): materialize_ on a model built on the meta device
and sharded by FSDP2's fully_shard (DTensor parameters on meta, sharded along dim 0).

Checks, on every rank: the parameters stay DTensors and each rank holds only its shard; the
gathered weights have their reported stds (tests/_materialize.py); the two shards of each weight
differ (independent draws; the planted bug "every rank draws the same shard" must be caught by
that check); the buffers equal those of the same model built on the CPU; an eval forward pass is
finite; the same seed reproduces the gathered weights. Each rank writes rank<N>.json into the
folder named by INITSCALE_DIST_OUT.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import init_device_mesh

import initscale
from initscale.adapters import torch as ist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from _materialize import buffer_problems, std_problems


def build() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.BatchNorm1d(128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 32))


def sharded(mesh) -> torch.nn.Module:
    with torch.device("meta"):
        model = build()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def shards_differ(weight) -> bool:
    halves = weight.full_tensor().detach().chunk(2, dim=0)
    return not torch.equal(halves[0], halves[1])


def hf_llama(mesh) -> dict[str, object]:
    """A tiny HF Llama, fully_shard per decoder layer and at the root, on meta: its rotary buffers
    (not sharded by FSDP2) are restored on every rank."""
    try:
        import transformers
    except ImportError:
        return {"llama": "transformers is not installed"}
    config = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, vocab_size=50,
                                      max_position_embeddings=16)
    reference = transformers.LlamaForCausalLM(config)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    rules = {"Embedding": initscale.Normal(0.02), "lm_head.weight": initscale.Normal(0.02),
             "Linear": initscale.presets.get("he_normal")}
    report = ist.materialize_(model, rules, device="cpu", generator=torch.Generator().manual_seed(5))
    found = {"llama_std_problems": std_problems(model, report),
             "llama_buffer_problems": buffer_problems(model, reference)}
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        found["llama_finite"] = bool(model.eval()(input_ids=ids).logits.isfinite().all())
    return found


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    out: dict[str, object] = {"rank": rank}
    model = sharded(mesh)
    report = ist.materialize_(model, initscale.presets.get("he_normal"), device="cpu",
                              generator=torch.Generator().manual_seed(3))
    weight = model[0].weight
    out["dtensor"] = type(weight).__name__ == "DTensor" and not weight.to_local().is_meta
    out["local_shape"] = list(weight.to_local().shape)
    out["fans"] = [report["0.weight"].fan_in, report["0.weight"].fan_out]
    out["std_problems"] = std_problems(model, report)
    out["shards_differ"] = shards_differ(weight)
    out["buffer_problems"] = buffer_problems(model, build())
    with torch.no_grad():
        out["finite"] = bool(model.eval()(torch.randn(4, 64, generator=torch.Generator().manual_seed(0)))
                             .isfinite().all())
    model.reshard()  # the root keeps its parameters unsharded after a forward pass
    again = sharded(mesh)
    ist.materialize_(again, initscale.presets.get("he_normal"), device="cpu",
                     generator=torch.Generator().manual_seed(3))
    out["reproducible"] = all(torch.equal(a.full_tensor(), b.full_tensor())
                              for a, b in zip(model.parameters(), again.parameters(), strict=True))
    # The planted bug: every rank draws the same shard (a seed not offset by the shard).
    with torch.no_grad():
        local = again[0].weight.to_local()
        dist.broadcast(local, src=0)
    out["same_shards_caught"] = not shards_differ(again[0].weight)
    out.update(hf_llama(mesh))
    folder = os.environ.get("INITSCALE_DIST_OUT")
    text = json.dumps(out)
    if folder:
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            f.write(text)
    else:
        print(text)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
