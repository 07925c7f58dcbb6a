"""Shared test setup, and one loud summary line when frameworks are missing.

A test run without every framework still passes: the tests of a missing framework skip. So that
such a green run cannot pass for a full one, the end of the run names the missing frameworks and
how many skips they caused, in one line of pytest's summary (``.ci/run`` installs every framework
and sets INITSCALE_REQUIRE, so there a missing one fails instead).

The ``backend`` fixture: one test, once per adapter of the registry's parity matrix
(:data:`initscale.parity.BACKENDS`), with the backend's name as the test id, so that a property
every adapter must have is written once (tests/test_parity.py, tests/test_adapters.py).
INITSCALE_PARITY_BACKENDS (comma-separated) narrows the list: tests/test_keras_backends.py reruns
the Keras rows with ``keras`` on each Keras backend, each in its own process.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Triton loaded after TensorFlow aborts the process (LLVM registers its options twice); before it,
# both load. torch imports Triton lazily (torch._dynamo: transformers' models import it), which in a
# suite whose Keras runs on TensorFlow would come after TensorFlow: so load it first, here.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

# after the path above and Triton; NumPy only: no framework is imported here
import _child_runs
from _backends import BACKEND_NAMES, required

from initscale import parity

# What the suite needs beyond NumPy (scipy: the test tools' statistics, used by a few checks).
FRAMEWORKS = (
    "torch",
    "tensorflow",
    "keras",
    "jax",
    "jaxlib",
    "flax",
    "tf_keras",
    "triton",
    "matplotlib",
    "ml_dtypes",
    "scipy",
)
# Skip reasons that name a missing module: pytest.importorskip's "could not import 'torch': ...",
# and the suite's own "torch is not installed" / "['keras', 'jax'] not installed".
_IMPORTORSKIP = re.compile(r"could not import '([\w.]+)'")
_NOT_INSTALLED = re.compile(r"^\[?([\w.', ]+?)\]? (?:is |are )?not installed")


def missing_frameworks(reason: str) -> list[str]:
    """The frameworks a skip reason says are missing (top-level module names), else []."""
    found = _IMPORTORSKIP.findall(reason)
    match = _NOT_INSTALLED.match(reason.strip())
    if match:
        found += [w.strip(" '") for w in match.group(1).split(",")]
    return sorted({m.split(".")[0] for m in found} & set(FRAMEWORKS))


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after pytest's -ra list, just above the counts
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    result = yield
    _report_missing(terminalreporter)
    return result


def _report_missing(terminalreporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if getattr(r, "skipped", False)]
    missing: dict[str, int] = {}
    caused = 0
    for report in skipped:
        names = missing_frameworks(_skip_reason(report))
        caused += bool(names)
        for name in names:
            missing[name] = missing.get(name, 0) + 1
    if not caused:
        return
    listed = ", ".join(f"{name} ({count})" for name, count in sorted(missing.items()))
    terminalreporter.write_line(
        f"!!! NOT A FULL RUN: frameworks missing: {listed}; {caused} of {len(skipped)} skips are theirs "
        "(a test file skipped whole counts once); every framework: bash .ci/run",
        red=True,
        bold=True,
    )


# --- the backend fixture -------------------------------------------------------------------------


@pytest.fixture(params=BACKEND_NAMES)
def backend(request) -> str:
    """A backend's name; skips (fails, when INITSCALE_REQUIRE names it) if its modules do not import."""
    name = request.param
    try:
        for module in parity.BACKENDS[name].modules:
            importlib.import_module(module)
    except ImportError as err:
        if required(name):
            pytest.fail(f"backend {name} is required by INITSCALE_REQUIRE but does not import: {err}")
        pytest.skip(f"{name} is not installed")
    return name


# --- child runs (tests/_child_runs.py) -------------------------------------------------------------


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "child_run(name): the test awaits the child run `name` (tests/_child_runs.py)")


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(session, config, items) -> None:
    """Tests that await a child run go last, so their runs (started when collection ends) have the
    whole session to finish beside this process."""
    if _child_runs.mode() == "background":
        items[:] = sorted(items, key=lambda item: item.get_closest_marker("child_run") is not None)


def pytest_collection_finish(session) -> None:
    _child_runs.start(mark.args[0] for item in session.items for mark in item.iter_markers("child_run"))


def pytest_sessionfinish(session, exitstatus) -> None:
    _child_runs.stop()
