"""nox sessions for initscale.

- ``core``: NumPy only — proves every framework is optional (the main job's test suite).
- ``torch`` / ``keras`` / ``jax``: the suite with that framework installed (adapters land there).
- ``all``: everything in one environment.
- ``wheel``: build the wheel, install it in a clean venv, import every shipped adapter.
- ``lint`` (ruff) and ``typecheck`` (mypy on a non-editable install, run outside the repo root).

Exact framework pins (CPU torch wheel, tensorflow-cpu) live here and in ``.ci/run``, not in
the package's extras.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["core", "lint", "typecheck", "wheel"]

TEST_DEPS = ["pytest>=8", "hypothesis>=6.100", "scipy>=1.11"]
PINS = {
    "torch": ["torch==2.13.0"],
    "keras": ["tensorflow-cpu==2.21.0", "keras>=3.15"],
    "jax": ["jax", "jaxlib", "flax"],
}


def _tests(session: nox.Session, *frameworks: str) -> None:
    for fw in frameworks:
        session.install(*PINS[fw])
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
    _tests(session, "keras")


@nox.session
def jax(session: nox.Session) -> None:
    _tests(session, "jax")


@nox.session(name="all")
def all_(session: nox.Session) -> None:
    _tests(session, "torch", "keras", "jax")


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the wheel, install it alone in this clean venv, import every adapter."""
    tmp = session.create_tmp()
    session.install("build")
    session.run("python", "-m", "build", "--wheel", "--outdir", tmp)
    import glob

    session.install(*glob.glob(f"{tmp}/initscale-*.whl"))
    session.chdir(tmp)
    session.run(
        "python", "-c",
        "import importlib, initscale, initscale.adapters; "
        "[importlib.import_module('initscale.adapters.' + m) for m in ('numpy',)]; "
        "import importlib.util as u; assert u.find_spec('adapters') is None, 'top-level adapters leaked'; "
        "print('wheel ok', initscale.__version__)",
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "initscale", "adapters", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict against a non-editable install, from outside the repo root."""
    session.install("mypy>=1.10", "numpy", ".")
    tmp = session.create_tmp()
    session.chdir(tmp)
    session.run("mypy", "-p", "initscale")
