"""Runs the Keras real-model files once per other Keras backend, each in a fresh process (Keras
fixes its backend when it is imported); the backend of this process runs them in-process already:

- ``test_keras.py``: roles, layouts and fans of keras-hub models. They come from layer classes and
  shapes, but the layers' class hierarchies (TFLayer, JaxLayer, TorchLayer), keras-hub's models and
  the writes (``assign``) are per backend.
- ``test_lsuv_keras.py`` and ``tests/test_keras_lsuv.py``: LSUV and auto on keras-hub backbones
  and on core layers. The recorded tensors and the autodiff of a quadrature activation are per
  backend too.

A backend listed in INITSCALE_REQUIRE ("keras-jax", ...) must run: if its framework cannot be
imported the test fails instead of skipping."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SUITES = (HERE / "test_keras.py", HERE / "test_lsuv_keras.py", HERE.parent / "test_keras_lsuv.py")
BACKENDS = ("jax", "tensorflow", "torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_models_on_backend(backend: str) -> None:
    required = f"keras-{backend}" in {x.strip() for x in os.environ.get("INITSCALE_REQUIRE", "").split(",")}
    missing = [m for m in ("keras", backend) if importlib.util.find_spec(m) is None]
    if missing:
        if required:
            pytest.fail(f"keras-{backend} is required (INITSCALE_REQUIRE) but {missing} cannot be imported")
        pytest.skip(f"{missing} not installed")
    if os.environ.get("KERAS_BACKEND", "tensorflow") == backend:
        pytest.skip("this process runs these files on this backend itself")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, SUITES)],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": backend},
        timeout=1200,
        check=False,
        cwd=HERE.parent.parent,
    )
    names = ", ".join(s.name for s in SUITES)
    assert done.returncode == 0, f"{names} failed on Keras backend {backend}:\n{done.stdout[-6000:]}"
