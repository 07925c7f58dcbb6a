"""Sharded init under jax.jit(..., out_shardings=NamedSharding(...)) on 4 host CPU devices.

XLA_FLAGS must be set before jax is imported, so the check runs in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")

SCRIPT = Path(__file__).parent / "dist" / "jax_sharded.py"


@pytest.fixture(scope="module")
def result() -> dict:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_four_devices_each_hold_one_shard(result) -> None:
    assert result["devices"] == 4 and result["n_shards"] == 4
    assert result["shard_shapes"] == [[256, 384]]
    assert result["shards_distinct"]


def test_sharded_values_are_the_global_ones(result) -> None:
    assert result["equal_to_unsharded"] and result["flax_equal"]


def test_the_global_weight_has_the_global_fans(result) -> None:
    assert result["failures"] == []
    assert result["shard_fans_caught"], "the check must reject fans taken from one shard"


def test_a_portable_stream_is_sharding_invariant(result) -> None:
    assert result["stream_shards"] == 4
    assert result["stream_max_error_ulps"] <= 8  # the float32 bound of tests/test_streams.py


def test_each_device_generates_only_its_shard(result) -> None:
    sizes = result["stream_bytes_per_device"]
    assert sizes["output"] == sizes["shard"]
    assert sizes["temp"] < 2 * sizes["shard"] < sizes["whole"]  # no temporary of the whole weight
