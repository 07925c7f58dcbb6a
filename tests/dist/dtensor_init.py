"""Run under torchrun with 2 CPU processes (gloo): initscale on DTensor parameters.

Checks, on every rank: fans come from the global shape; each rank writes only its shard; shards
are independent draws and replicas identical; the gathered weight has the spec's distribution;
re-running with the same seed reproduces it. Each rank writes rank<N>.json into the folder named
by the environment variable INITSCALE_DIST_OUT (or prints it).
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

import initscale
from initscale.adapters import torch as ist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from _stats import failures  # noqa: E402


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    out: dict[str, object] = {"rank": rank}

    spec = initscale.presets.get("he_normal")
    shape = (600, 300)  # global: fan_in 300; sharded along the in axis, each rank holds (600, 300/world)
    model = torch.nn.Linear(300, 600)
    model.weight = torch.nn.Parameter(distribute_tensor(model.weight.detach(), mesh, [Shard(1)]))
    model.bias = torch.nn.Parameter(distribute_tensor(model.bias.detach(), mesh, [Replicate()]))
    report = ist.reinit_(model, spec, generator=torch.Generator().manual_seed(7))
    row = report["weight"]
    out["fans"] = [row.fan_in, row.fan_out]
    local = model.weight.to_local()
    out["local_shape"] = list(local.shape)
    whole = model.weight.full_tensor().detach()
    dist_ = spec.resolve(initscale.compute_fans(shape, "torch.linear"))
    out["failures"] = failures(whole.double().numpy(), dist_)
    # The planted bug "fans from the local shard" (fan_in 150, std √2 too large) must be caught.
    local_dist = spec.resolve(initscale.compute_fans(tuple(local.shape), "torch.linear"))
    out["local_fans_caught"] = bool(failures(whole.double().numpy(), local_dist))
    halves = whole.split(shape[1] // world, dim=1)
    out["shards_differ"] = not torch.equal(halves[0], halves[1])
    out["bias_zero"] = bool((model.bias.full_tensor() == 0).all())

    # Replicated weight: every rank must hold the same values.
    rep = distribute_tensor(torch.empty(64, 32), mesh, [Replicate()])
    ist.init_(rep, spec)  # global RNG, deliberately seeded differently per rank
    gathered = [torch.empty(64, 32) for _ in range(world)]
    dist.all_gather(gathered, rep.to_local().contiguous())
    out["replicas_equal"] = all(torch.equal(gathered[0], g) for g in gathered)

    # Same generator seed -> same global weight.
    again = torch.nn.Linear(300, 600)
    again.weight = torch.nn.Parameter(distribute_tensor(again.weight.detach(), mesh, [Shard(1)]))
    ist.reinit_(again, spec, generator=torch.Generator().manual_seed(7))
    out["reproducible"] = torch.equal(again.weight.full_tensor().detach(), whole)

    # Orthogonal on a sharded weight: the gathered matrix is orthogonal.
    ortho = distribute_tensor(torch.empty(128, 64), mesh, [Shard(1)])
    ist.orthogonal_(ortho, generator=torch.Generator().manual_seed(3))
    q = ortho.full_tensor().detach().double()
    out["orthogonal_error"] = float((q.T @ q - torch.eye(64, dtype=torch.float64)).abs().max())
    # Portable stream on a sharded weight: each rank computes only its shard, and the gathered
    # weight equals the NumPy reference of the whole (unsharded) weight, bit for bit.
    from initscale.streams import Stream, stream_values

    from initscale._kernels import cpu as _stream_kernel

    reference = stream_values(Stream(11, "fc.weight"), spec, (96, 80), "torch.linear")
    real_load = _stream_kernel.load
    out["stream_equals_reference"] = {}
    for path, load in (("kernel", real_load), ("torch ops", lambda: None)):  # the compiled kernel, if built
        _stream_kernel.load = load
        streamed = distribute_tensor(torch.empty(96, 80), mesh, [Shard(1)])
        ist.initializer(spec, "torch.linear", stream=Stream(11, "fc.weight"))(streamed)
        out["stream_equals_reference"][path] = bool((streamed.full_tensor().numpy() == reference).all())
    _stream_kernel.load = real_load

    folder = os.environ.get("INITSCALE_DIST_OUT")
    if folder:
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    else:
        print(json.dumps(out), flush=True)
    dist.barrier()  # nobody tears gloo down while a peer still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.manual_seed(1000 + int(os.environ.get("RANK", "0")))
    main()
    # Skip interpreter finalization: gloo worker threads can still hold tensors then, and
    # destroying them at teardown aborts the process now and then (SIGABRT, "terminate called
    # without an active exception"; see pytorch/pytorch#179291). The results are on disk already.
    sys.stdout.flush()
    os._exit(0)
