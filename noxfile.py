"""nox sessions for initscale.

- ``core``: NumPy only — proves every framework is optional (the main job's test suite).
- ``torch`` / ``keras`` / ``jax``: the suite with that framework installed (adapters land there).
- ``all``: everything in one environment.
- ``wheel``: build the wheel, install it in a clean venv, import every shipped adapter.
- ``lint`` (ruff check and ruff format --check) and ``typecheck`` (mypy --strict on the package as
  the wheel installs it, core and adapters: scripts/typecheck.sh, as in ``.ci/run``).

Exact framework pins (CPU torch wheel, tensorflow-cpu, ...) live in ``requirements/frameworks.txt``,
read here, by ``.ci/run`` and by ``scripts/parity.sh`` through ``scripts/pins.py``; not in the
package's extras.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["core", "lint", "typecheck", "wheel"]

TEST_DEPS = ["pytest>=8", "hypothesis>=6.100", "scipy>=1.11", "mpmath>=1.3"]
_spec = importlib.util.spec_from_file_location("pins", Path(__file__).resolve().parent / "scripts" / "pins.py")
assert _spec is not None and _spec.loader is not None
_pins_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pins_module)


def pins(*groups: str, no_deps: bool = False) -> list[str]:
    """The pins of ``groups`` from requirements/frameworks.txt (see scripts/pins.py)."""
    return list(_pins_module.pins(*groups, no_deps=no_deps))


def _install_pins(session: nox.Session, *groups: str) -> None:
    session.install(*pins(*groups))
    no_deps = pins(*groups, no_deps=True)  # tf-keras: its "tensorflow" requirement is tensorflow-cpu here
    if no_deps:
        session.install("--no-deps", *no_deps)


def _tests(session: nox.Session, *frameworks: str) -> None:
    for fw in frameworks:
        _install_pins(session, fw)
    session.install("-e", ".", *TEST_DEPS)
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def core(session: nox.Session) -> None:
    """The test suite with NumPy only."""
    _tests(session)


@nox.session
def torch(session: nox.Session) -> None:
    _tests(session, "torch")


@nox.session
def keras(session: nox.Session) -> None:
    _tests(session, "keras", "tensorflow")


@nox.session
def jax(session: nox.Session) -> None:
    _tests(session, "jax")


@nox.session(name="all")
def all_(session: nox.Session) -> None:
    _tests(session, "torch", "tensorflow", "keras", "jax", "triton", "plot", "models")


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the wheel, install it in this clean venv with torch, JAX/Flax and Keras (JAX backend,
    so TensorFlow's 3 GB are not needed here), and import every shipped adapter from outside the
    repository."""
    tmp = session.create_tmp()
    session.install("build")
    session.run("python", "-m", "build", "--wheel", "--outdir", tmp)
    import glob

    session.install(*glob.glob(f"{tmp}/initscale-*.whl"), *pins("torch", "jax", "keras"))
    session.chdir(tmp)
    session.run(
        "python",
        "-c",
        "import importlib, initscale, initscale.adapters; "
        "mods = [importlib.import_module('initscale.adapters.' + m) for m in ('numpy', 'torch', 'keras', 'jax')]; "
        "assert [initscale.numpy, initscale.torch, initscale.keras, initscale.jax] == mods; "
        "import importlib.util as u; assert u.find_spec('adapters') is None, 'top-level adapters leaked'; "
        "print('wheel ok', initscale.__version__, [m.__file__ for m in mods])",
        env={"KERAS_BACKEND": "jax"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check (the version .ci/run and .pre-commit-config.yaml pin)."""
    paths = ("initscale", "adapters", "tests", "noxfile.py", "scripts", "benchmarks")
    session.install("ruff==0.17.6")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict (the pyproject's config) on the package as the wheel installs it, core and
    adapters, with the frameworks whose types the adapters use (torch, JAX + Flax; Keras, tf_keras
    and TensorFlow have no type information and are ignored by the config; the Triton kernels are
    source text): scripts/typecheck.sh, the step .ci/run runs, with the same mypy pin."""
    session.install("mypy==2.4.1", "numpy", *pins("torch", "jax", "keras"))
    session.run("bash", "scripts/typecheck.sh", env={"PYTHON": "python"}, external=True)
