"""Sharded init on 4 host CPU devices (XLA_FLAGS set by the caller before jax is imported).

Prints one JSON object: device count, shard shapes, whether the sharded values equal the
unsharded ones, and the statistical check of the global weight against the spec with the fans of
the *global* shape (and that the check rejects the planted bug "fans from one shard").
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import initscale
from initscale.adapters import jax as isj

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from _stats import failures  # noqa: E402

out: dict[str, object] = {"devices": jax.device_count()}
mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("a", "b"))
spec = initscale.presets.get("he_normal")
shape = (512, 768)  # (in, out): each device holds (256, 384)
init = isj.initializer(spec)
sharded = jax.jit(lambda k: init(k, shape), out_shardings=NamedSharding(mesh, P("a", "b")))(jax.random.key(0))
plain = init(jax.random.key(0), shape)
out["shard_shapes"] = sorted({tuple(s.data.shape) for s in sharded.addressable_shards})
out["n_shards"] = len(sharded.addressable_shards)
out["equal_to_unsharded"] = bool(np.array_equal(np.asarray(sharded), np.asarray(plain)))
x = np.asarray(sharded, dtype=np.float64)
out["failures"] = failures(x, spec.resolve(initscale.compute_fans(shape, "jax")), 2.0**-24)
out["shard_fans_caught"] = bool(failures(x, spec.resolve(initscale.compute_fans((256, 384), "jax")), 2.0**-24))
blocks = [np.asarray(s.data) for s in sharded.addressable_shards]
out["shards_distinct"] = len({b.tobytes() for b in blocks}) == len(blocks)

# A whole flax model initialized under jit with sharded outputs: same fans as unsharded.
import flax.linen as nn  # noqa: E402

model = nn.Dense(768, kernel_init=init)
x0 = np.zeros((1, 512), np.float32)
shardings = {"params": {"kernel": NamedSharding(mesh, P("a", "b")), "bias": NamedSharding(mesh, P("b"))}}
params = jax.jit(model.init, out_shardings=shardings)(jax.random.key(1), x0)
out["flax_equal"] = bool(np.array_equal(np.asarray(params["params"]["kernel"]),
                                        np.asarray(model.init(jax.random.key(1), x0)["params"]["kernel"])))
# Portable stream under sharding: the same values as unsharded (and as NumPy's reference within
# the float32 bound of tests/test_streams.py).
from initscale.streams import Stream, stream_values  # noqa: E402

portable = isj.initializer(spec, stream=Stream(11, "Dense_0/kernel"))
sharded_fn = jax.jit(lambda: portable(None, shape), out_shardings=NamedSharding(mesh, P("a", "b")))
sharded_stream = sharded_fn()
# Each device's compiled program: its output and temporaries are one shard's size, not the
# weight's (XLA partitions the element-wise counter computation, so no full-size temporary).
memory = sharded_fn.lower().compile().memory_analysis()
out["stream_bytes_per_device"] = {"output": memory.output_size_in_bytes, "temp": memory.temp_size_in_bytes,
                                  "shard": 256 * 384 * 4, "whole": 512 * 768 * 4}
out["stream_shards"] = len(sharded_stream.addressable_shards)
reference = stream_values(Stream(11, "Dense_0/kernel"), spec, shape, "jax")
scale = spec.bounds(initscale.compute_fans(shape, "jax"))[1]
out["stream_max_error_ulps"] = float(np.abs(np.asarray(sharded_stream, dtype=np.float64) - reference).max()
                                     / np.spacing(np.float32(scale)))
print(json.dumps(out))
