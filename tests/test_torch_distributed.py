"""DTensor parameters (as FSDP2 makes them): 2 CPU processes with gloo, launched by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

SCRIPT = Path(__file__).parent / "dist" / "dtensor_init.py"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("dtensor")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "INITSCALE_DIST_OUT": str(folder)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]


def test_fans_come_from_the_global_shape(ranks) -> None:
    for r in ranks:
        assert r["fans"] == [300, 600]
        assert r["local_shape"] == [600, 150]


def test_the_gathered_weight_has_the_spec_distribution(ranks) -> None:
    for r in ranks:
        assert r["failures"] == []
        assert r["local_fans_caught"], "the check must reject fans taken from the local shard"


def test_shards_are_independent_and_replicas_identical(ranks) -> None:
    for r in ranks:
        assert r["shards_differ"]
        assert r["replicas_equal"]
        assert r["bias_zero"]


def test_a_seeded_generator_reproduces_the_global_weight(ranks) -> None:
    assert all(r["reproducible"] for r in ranks)


def test_orthogonal_is_orthogonal_across_shards(ranks) -> None:
    # float32 QR of a 128×64 Gaussian: |QᵀQ − I| is a few float32 ulps times √64.
    assert all(r["orthogonal_error"] < 64 * 2.0**-23 * 8 for r in ranks)


def test_a_portable_stream_is_sharding_invariant(ranks) -> None:
    """With the compiled kernel (where a C compiler built it) and with torch ops."""
    assert all(r["stream_equals_reference"] == {"kernel": True, "torch ops": True} for r in ranks)
