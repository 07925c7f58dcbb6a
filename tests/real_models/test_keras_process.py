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
from pathlib import Path

import _child_runs
import pytest

HERE = Path(__file__).parent
SUITES = (HERE / "test_keras.py", HERE / "test_lsuv_keras.py", HERE.parent / "test_keras_lsuv.py")
BACKENDS = ("jax", "tensorflow", "torch")


def _missing(backend: str) -> list[str]:
    return [m for m in ("keras", backend) if importlib.util.find_spec(m) is None]


def _in_this_process(backend: str) -> bool:
    return os.environ.get("KERAS_BACKEND", "tensorflow") == backend


def _run_name(backend: str) -> str:
    return f"keras-models-{backend}"


for _backend in BACKENDS:
    if not _missing(_backend) and not _in_this_process(_backend):
        _child_runs.register(
            _run_name(_backend),
            _child_runs.pytest_command(*SUITES),
            env={**os.environ, "KERAS_BACKEND": _backend},
            timeout=1200,
        )


@pytest.mark.parametrize("backend", [pytest.param(b, marks=pytest.mark.child_run(_run_name(b))) for b in BACKENDS])
def test_keras_models_on_backend(backend: str) -> None:
    required = f"keras-{backend}" in {x.strip() for x in os.environ.get("INITSCALE_REQUIRE", "").split(",")}
    missing = _missing(backend)
    if missing:
        if required:
            pytest.fail(f"keras-{backend} is required (INITSCALE_REQUIRE) but {missing} cannot be imported")
        pytest.skip(f"{missing} not installed")
    if _in_this_process(backend):
        pytest.skip("this process runs these files on this backend itself")
    done = _child_runs.result(_run_name(backend))
    names = ", ".join(s.name for s in SUITES)
    assert done.returncode == 0, f"{names} failed on Keras backend {backend}:\n{done.stdout[-6000:]}"
