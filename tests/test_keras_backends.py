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
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).parent / "test_keras_adapter.py"
PARITY = Path(__file__).parent / "test_parity.py"
ADAPTERS = Path(__file__).parent / "test_adapters.py"  # INITSCALE_PARITY_BACKENDS=keras: its Keras rows
AUTO = Path(__file__).parent / "test_auto_keras.py"  # initscale.auto on Keras graphs
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def _required() -> set[str]:
    return {x.strip() for x in os.environ.get("INITSCALE_REQUIRE", "").split(",") if x.strip()}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_keras_suite_on_backend(backend: str) -> None:
    required = f"keras-{backend}" in _required()
    missing = [m for m in ("keras", BACKENDS[backend]) if importlib.util.find_spec(m) is None]
    if missing:
        if required:
            pytest.fail(f"keras-{backend} is required (INITSCALE_REQUIRE) but {missing} cannot be imported")
        pytest.skip(f"{missing} not installed")
    if os.environ.get("KERAS_BACKEND", "tensorflow") == backend and "keras" in sys.modules:
        pytest.skip("this process runs the Keras suite on this backend itself")
    env = {**os.environ, "KERAS_BACKEND": backend, "INITSCALE_PARITY_BACKENDS": "keras"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(SUITE),
            str(PARITY),
            str(ADAPTERS),
            str(AUTO),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
        cwd=SUITE.parent.parent,
    )
    assert done.returncode == 0, f"Keras suite failed on backend {backend}:\n{done.stdout[-6000:]}"
