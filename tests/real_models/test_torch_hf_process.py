"""Runs test_torch_hf.py in a fresh process when this one has TensorFlow loaded (building an HF
model imports Triton through torch._dynamo, and Triton after TensorFlow aborts the process); where
it is not loaded, test_torch_hf.py runs in this process and this test skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _guards import triton_would_abort

SUITE = Path(__file__).parent / "test_torch_hf.py"


def test_hf_models_in_a_fresh_process() -> None:
    pytest.importorskip("torch")
    pytest.importorskip(
        "transformers", reason="the real-model suite needs HF transformers (pip install 'transformers>=5.0')"
    )
    if not triton_would_abort():
        pytest.skip("this process runs test_torch_hf.py itself")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SUITE)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=900,
        check=False,
        cwd=SUITE.parent.parent.parent,
    )
    assert done.returncode == 0, f"test_torch_hf.py failed in a fresh process:\n{done.stdout[-6000:]}"
