"""The fused Triton samplers (initscale/_kernels/gpu.py), checked by tests/triton_cases.py in a
fresh process: natively on a GPU, else under Triton's interpreter (TRITON_INTERPRET=1 has to be
set before Triton is imported, so not in this process). Skipped where Triton is not installed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import _child_runs
import pytest

CASES = Path(__file__).parent / "triton_cases.py"
RUN = "triton-cases"


def _env() -> dict[str, str]:
    """This process's environment, with Triton's interpreter switched on where CUDA is not there."""
    import torch

    return {**os.environ} if torch.cuda.is_available() else {**os.environ, "TRITON_INTERPRET": "1"}


# Triton is looked up, not imported, here (Triton imported after TensorFlow aborts the process).
if importlib.util.find_spec("torch") is not None and importlib.util.find_spec("triton") is not None:
    _child_runs.register(RUN, _child_runs.pytest_command(CASES), env=_env(), timeout=1800)


@pytest.mark.child_run(RUN)
def test_the_triton_samplers() -> None:
    pytest.importorskip("torch")
    if importlib.util.find_spec("triton") is None:  # not imported here: Triton after TensorFlow aborts
        pytest.skip("triton is not installed")
    done = _child_runs.result(RUN)
    assert done.returncode == 0, done.stdout[-6000:]
