"""Which backends the ``backend`` fixture (tests/conftest.py) runs, and which must run.

The backends are the adapter registry's parity matrix (:data:`initscale.parity.BACKENDS`:
``initscale._registry`` entries that serve "parity"). INITSCALE_PARITY_BACKENDS (comma-separated)
narrows them: tests/test_keras_backends.py reruns Keras's tests with ``keras`` alone, once per
Keras backend, each in its own process. INITSCALE_REQUIRE (comma-separated: ``torch``,
``keras-jax``, ...) names those that must import: there a missing one fails instead of skipping.
"""

from __future__ import annotations

import os

from initscale import parity

REQUIRED = {x.strip() for x in os.environ.get("INITSCALE_REQUIRE", "").split(",") if x.strip()}
BACKEND_NAMES = [b for b in os.environ.get("INITSCALE_PARITY_BACKENDS", ",".join(parity.BACKENDS)).split(",") if b]
_unknown = sorted(set(BACKEND_NAMES) - set(parity.BACKENDS))
if _unknown:
    raise ValueError(f"INITSCALE_PARITY_BACKENDS names {_unknown}; valid: {', '.join(sorted(parity.BACKENDS))}.")


def required(name: str) -> bool:
    """Whether INITSCALE_REQUIRE asks for backend ``name`` (``keras``: by any ``keras-BACKEND`` too)."""
    return any(r == name or r.startswith(f"{name}-") for r in REQUIRED)
