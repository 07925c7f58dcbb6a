"""Runs test_torch_hf.py in a fresh process when this one has TensorFlow loaded (building an HF
model imports Triton through torch._dynamo, and Triton after TensorFlow aborts the process); where
it is not loaded, test_torch_hf.py runs in this process and this test skips."""

from __future__ import annotations

from pathlib import Path

import _child_runs
import pytest
from _guards import triton_would_abort

SUITE = Path(__file__).parent / "test_torch_hf.py"
RUN = "torch-hf-models"
_child_runs.register(RUN, _child_runs.pytest_command(SUITE), timeout=900, wanted=triton_would_abort)


@pytest.mark.child_run(RUN)
def test_hf_models_in_a_fresh_process() -> None:
    pytest.importorskip("torch")
    pytest.importorskip(
        "transformers", reason="the real-model suite needs HF transformers (pip install 'transformers>=5.0')"
    )
    if not triton_would_abort():
        pytest.skip("this process runs test_torch_hf.py itself")
    done = _child_runs.result(RUN)
    assert done.returncode == 0, f"test_torch_hf.py failed in a fresh process:\n{done.stdout[-6000:]}"
