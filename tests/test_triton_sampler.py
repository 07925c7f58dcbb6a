"""The fused Triton samplers (initscale/_kernels/gpu.py), checked by tests/triton_cases.py in a
fresh process: natively on a GPU, else under Triton's interpreter (TRITON_INTERPRET=1 has to be
set before Triton is imported, so not in this process). Skipped where Triton is not installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "triton_cases.py"


def test_the_triton_samplers() -> None:
    torch = pytest.importorskip("torch")
    if importlib.util.find_spec("triton") is None:  # not imported here: Triton after TensorFlow aborts
        pytest.skip("triton is not installed")
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
        cwd=CASES.parent.parent,
    )
    assert done.returncode == 0, done.stdout[-6000:]
