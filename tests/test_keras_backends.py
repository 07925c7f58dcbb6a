"""Run the Keras adapter's tests, and the Keras rows of the parity matrix and of the properties
every adapter has (tests/test_adapters.py), once per Keras backend, each in its own process
(Keras fixes its backend when it is imported). The backend of this process runs them in-process
already.

A backend listed in INITSCALE_REQUIRE (comma-separated, e.g. "keras-jax,keras-torch") must run:
if its framework cannot be imported the test fails instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import _child_runs
import pytest

SUITE = Path(__file__).parent / "test_keras_adapter.py"
PARITY = Path(__file__).parent / "test_parity.py"
ADAPTERS = Path(__file__).parent / "test_adapters.py"  # INITSCALE_PARITY_BACKENDS=keras: its Keras rows
AUTO = Path(__file__).parent / "test_auto_keras.py"  # initscale.auto on Keras graphs
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def _required() -> set[str]:
    return {x.strip() for x in os.environ.get("INITSCALE_REQUIRE", "").split(",") if x.strip()}


def _missing(backend: str) -> list[str]:
    return [m for m in ("keras", BACKENDS[backend]) if importlib.util.find_spec(m) is None]


def _in_this_process(backend: str) -> bool:
    return os.environ.get("KERAS_BACKEND", "tensorflow") == backend and "keras" in sys.modules


def _run_name(backend: str) -> str:
    return f"keras-suite-{backend}"


for _backend in BACKENDS:
    if not _missing(_backend):
        _child_runs.register(
            _run_name(_backend),
            _child_runs.pytest_command(SUITE, PARITY, ADAPTERS, AUTO),
            env={**os.environ, "KERAS_BACKEND": _backend, "INITSCALE_PARITY_BACKENDS": "keras"},
            timeout=1800,
            wanted=lambda b=_backend: not _in_this_process(b),
        )


@pytest.mark.parametrize(
    "backend", [pytest.param(b, marks=pytest.mark.child_run(_run_name(b))) for b in sorted(BACKENDS)]
)
def test_keras_suite_on_backend(backend: str) -> None:
    required = f"keras-{backend}" in _required()
    missing = _missing(backend)
    if missing:
        if required:
            pytest.fail(f"keras-{backend} is required (INITSCALE_REQUIRE) but {missing} cannot be imported")
        pytest.skip(f"{missing} not installed")
    if _in_this_process(backend):
        pytest.skip("this process runs the Keras suite on this backend itself")
    done = _child_runs.result(_run_name(backend))
    assert done.returncode == 0, f"Keras suite failed on backend {backend}:\n{done.stdout[-6000:]}"
