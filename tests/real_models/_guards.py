"""Process guards for the real-model suite."""

from __future__ import annotations

import importlib.util
import sys


def triton_would_abort() -> bool:
    """Whether building an HF model here would import Triton after TensorFlow: transformers'
    models import ``torch._dynamo``, which imports Triton, and Triton imported after TensorFlow
    aborts the process (both register LLVM's command-line options)."""
    return (
        "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None
    )
