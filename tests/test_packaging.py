"""Packaging: the core imports no framework; adapters load lazily and name their extra."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import initscale
from initscale import _registry

FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "keras", "flax")


def test_import_initscale_imports_no_framework() -> None:
    code = (
        "import sys, initscale, initscale.presets, initscale.gains, initscale.adapters\n"
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_initscale_needs_only_the_standard_library() -> None:
    """NumPy is imported on first array use: with it blocked, `import initscale` and the analytic
    answers (fans, variance, gains from the table, explain) still work, and an array call names it."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'numpy':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import initscale\n"
        "from initscale.explain import explain\n"
        "fans = initscale.compute_fans((3, 3, 64, 128), 'keras')\n"
        "he = initscale.presets.get('he_normal')\n"
        "print(he.std(fans), initscale.gain('relu') ** 2, explain('he_normal', (4, 5)).std)\n"
        "try:\n"
        "    initscale.distributions.NormalDist(0.0, 1.0).cdf(0.0)\n"
        "except ImportError as err:\n"
        "    print('needs numpy' if 'pip install numpy' in str(err) else err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "needs numpy"
    std, gain_sq, _ = (float(v) for v in lines[0].split())
    assert std == pytest.approx((2 / 576) ** 0.5) and gain_sq == pytest.approx(2.0)


def test_the_kernels_are_one_private_package_that_imports_no_framework() -> None:
    """The C and Triton kernels live in initscale._kernels (a package the wheel ships), one module
    per family; the package and its C kernel import no framework (the Triton kernels and torch's
    ops-path sampler import torch, and only the torch adapter imports them)."""
    root = Path(__file__).resolve().parent.parent
    (packages,) = [
        line for line in (root / "pyproject.toml").read_text().splitlines() if line.startswith("packages = ")
    ]
    assert '"initscale._kernels"' in packages  # [tool.setuptools] lists its packages (no tomllib on 3.10)
    kernels = sorted(p.name for p in (root / "initscale" / "_kernels").glob("*.py"))
    assert kernels == ["__init__.py", "cpu.py", "gpu.py", "torch_ops.py"]
    assert not (root / "initscale" / "_stream_kernel.py").exists()
    assert not (root / "adapters" / "_triton_sampler.py").exists()
    code = (
        "import sys, initscale._kernels, initscale._kernels.cpu\n"
        f"print(','.join(m for m in {(*FRAMEWORKS, 'triton')!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_adapters_ship_inside_the_package_only() -> None:
    import initscale.adapters

    assert initscale.adapters.__name__ == "initscale.adapters"
    code = "import importlib.util as u, os; os.chdir('/'); print(u.find_spec('adapters') is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_lazy_adapter_attribute() -> None:
    assert initscale.numpy.__name__ == "initscale.adapters.numpy"
    assert "numpy" in dir(initscale)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        initscale.nonsense  # noqa: B018


def test_missing_framework_names_the_extra(monkeypatch) -> None:
    fake = _registry.Adapter(
        "fakefw", "initscale.adapters.fakefw", ("no_such_framework_xyz",), "fakefw", "keras", None, None
    )
    monkeypatch.setitem(_registry.ADAPTERS, "fakefw", fake)
    with pytest.raises(ImportError, match=r"pip install 'initscale\[fakefw\]'"):
        initscale.fakefw  # noqa: B018


def _modules():
    # initscale.__main__ runs the command line when imported: it has no examples to run
    names = [m.name for m in pkgutil.walk_packages(initscale.__path__, "initscale.") if m.name != "initscale.__main__"]
    return ["initscale", *names, *(a.module for a in _registry.ADAPTERS.values())]


@pytest.mark.parametrize("name", sorted(set(_modules())))
def test_docstring_examples_run(name: str) -> None:
    for adapter in _registry.ADAPTERS.values():
        if name == adapter.module:
            pytest.importorskip(adapter.framework)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_required_frameworks_are_importable() -> None:
    """CI names the frameworks it installed in INITSCALE_REQUIRE; a missing one must fail the run
    instead of quietly skipping its tests ("keras-jax" means keras and jax)."""
    import os
    import subprocess
    import sys

    wanted = {x.strip() for x in os.environ.get("INITSCALE_REQUIRE", "").split(",") if x.strip()}
    modules = {m for w in wanted for m in w.split("-")}
    missing = []
    for module in sorted(modules):  # each in its own process: Triton aborts a process that loaded TensorFlow
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            missing.append(f"{module} ({done.stderr.strip().splitlines()[-1:]})")
    assert not missing, f"INITSCALE_REQUIRE names frameworks that cannot be imported: {missing}"


def test_a_run_without_a_framework_says_so_in_one_loud_line(tmp_path) -> None:
    """tests/conftest.py: a green run with frameworks missing names them in its summary."""
    (tmp_path / "block_torch.py").write_text(
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'triton'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "INITSCALE_REQUIRE": ""}
    files = ["tests/test_torch_adapter.py", "tests/test_torch_reinit.py", "tests/test_fans.py"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "block_torch",
            *files,
            "-k",
            "torch or compute_fans",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    loud = [line for line in done.stdout.splitlines() if "NOT A FULL RUN" in line]
    assert len(loud) == 1, done.stdout[-3000:]
    assert loud[0].startswith("!!!") and "frameworks missing: torch (2); 2 of 2 skips are theirs" in loud[0]
    # with nothing missing, no such line
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fans.py"],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0 and "NOT A FULL RUN" not in done.stdout, done.stdout[-3000:]


def test_version_from_one_source_and_on_the_command_line() -> None:
    """pyproject's version is dynamic: setuptools reads initscale.__version__ (statically)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "initscale.__version__"}
    for command in (
        ["-m", "initscale", "--version"],
        ["-c", "import sys; from initscale.cli import main; sys.exit(main(['--version']))"],
    ):
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=False)
        assert done.returncode == 0 and done.stdout.strip() == f"initscale {initscale.__version__}", done


# Standard-library packages that take milliseconds to import and that initscale has no need for at
# import time: `import initscale` must load none of them (its import time, under 50 ms of CPU, is
# measured by benchmarks/run.py's import row, not by a timed test).
HEAVY_STDLIB = (
    "asyncio", "concurrent", "ctypes", "decimal", "email", "http", "json", "logging", "multiprocessing",
    "pickle", "random", "socket", "sqlite3", "ssl", "subprocess", "tempfile", "threading", "unittest",
    "urllib", "xml", "zipfile",
)  # fmt: skip


def _modules_loaded_by(statement: str) -> list[str]:
    code = f"import sys; before = set(sys.modules); {statement}; print(' '.join(sorted(set(sys.modules) - before)))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_import_initscale_loads_only_its_own_and_light_standard_modules() -> None:
    """`import initscale` loads initscale's own modules and standard-library ones only, none of
    HEAVY_STDLIB: what decides its import time, checked without timing it."""
    loaded = _modules_loaded_by("import initscale")
    top = {m.split(".")[0] for m in loaded}
    assert "initscale" in top
    assert sorted(top - {"initscale"} - set(sys.stdlib_module_names)) == []
    assert sorted(top & set(HEAVY_STDLIB)) == []


def test_the_import_check_catches_a_heavy_import() -> None:
    """Planted: an import of json and of NumPy beside initscale's is seen by the same check."""
    top = {m.split(".")[0] for m in _modules_loaded_by("import initscale, json, numpy")}
    assert "numpy" in top - set(sys.stdlib_module_names) and "json" in top & set(HEAVY_STDLIB)


def test_the_wheel_has_pep_639_license_metadata_and_no_deprecation_warning(tmp_path) -> None:
    """Build the wheel from a copy of the sources: License-Expression and License-File, the
    version from initscale.__version__, extras that name their frameworks, and no setuptools
    deprecation warning (the license table form stops building in 2027)."""
    import shutil
    import zipfile

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, src / name)
    for package in ("initscale", "adapters"):
        shutil.copytree(root / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0 and "No matching distribution found for setuptools" in done.stdout + done.stderr:
        pytest.skip("setuptools>=77 (the build requirement) is not reachable from here")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "DeprecationWarning" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-4000:]
    (wheel,) = (tmp_path / "dist").glob("initscale-*.whl")
    with zipfile.ZipFile(wheel) as z:
        info = f"initscale-{initscale.__version__}.dist-info"
        metadata = z.read(f"{info}/METADATA").decode()
        assert f"{info}/licenses/LICENSE" in z.namelist()
        assert {"initscale/_kernels/__init__.py", "initscale/_kernels/cpu.py", "initscale/_kernels/gpu.py"} <= set(
            z.namelist()
        )
    fields = [line.split(": ", 1) for line in metadata.splitlines() if ": " in line]
    assert ["Version", initscale.__version__] in fields
    assert ["License-Expression", "Apache-2.0"] in fields and ["License-File", "LICENSE"] in fields
    assert not any(key == "License" for key, _ in fields)
    requires = {value for key, value in fields if key == "Requires-Dist"}
    assert {'keras>=3.15; extra == "keras"', 'tensorflow>=2.16; extra == "keras"'} <= requires  # with a backend
    assert 'initscale[jax,keras,plot,tensorflow,tf-keras,torch]; extra == "all"' in requires


def test_parity_script_runs_every_keras_backend_in_its_own_process(tmp_path) -> None:
    """scripts/parity.sh, with its install step already done (a stand-in virtualenv whose
    `initscale` records its arguments): three runs, Keras on each backend, --out renamed for the
    extra ones, and the exit status 1 when one run fails."""
    root = Path(__file__).resolve().parent.parent
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".initscale-frameworks.txt").write_bytes((root / "requirements" / "frameworks.txt").read_bytes())
    log = tmp_path / "runs.txt"
    stub = venv / "bin" / "initscale"
    stub.write_text(
        f'#!/usr/bin/env bash\necho "$KERAS_BACKEND $*" >> {log}\n'
        '[ "$KERAS_BACKEND" != torch ] || [ -z "${FAIL_TORCH:-}" ]\n'
    )
    stub.chmod(0o755)
    env = {**os.environ, "INITSCALE_VENV": str(venv)}
    done = subprocess.run(
        ["bash", "scripts/parity.sh", "--format", "markdown", "--out", "out/parity.md"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        "tensorflow parity --format markdown --out out/parity.md",
        "jax parity --backend keras --format markdown --out out/parity.keras-jax.md",
        "torch parity --backend keras --format markdown --out out/parity.keras-torch.md",
    ]
    log.unlink()
    done = subprocess.run(
        ["bash", "scripts/parity.sh", "--out=p"],
        cwd=root,
        env={**env, "FAIL_TORCH": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1 and log.read_text().splitlines()[1:] == [
        "jax parity --backend keras --out=p.keras-jax",
        "torch parity --backend keras --out=p.keras-torch",
    ]


def test_framework_pins_live_in_one_file() -> None:
    """requirements/frameworks.txt, read through scripts/pins.py by .ci/run, scripts/parity.sh and nox."""
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("pins", root / "scripts" / "pins.py")
    pins = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pins)
    assert pins.pins("torch") == ["torch==2.13.0"] and pins.pins("tensorflow", no_deps=True) == ["tf-keras==2.21.0"]
    assert {"tensorflow-cpu==2.21.0", "keras>=3.15", "triton==3.9.0", "jax", "flax"} <= set(pins.pins())
    with pytest.raises(ValueError, match="Unknown pin group 'pytorch'; valid: jax, keras, models, plot"):
        pins.pins("pytorch")
    for user in (".ci/run", "scripts/parity.sh", "noxfile.py"):
        text = (root / user).read_text()
        assert "pins.py" in text and "torch==" not in text and "tensorflow-cpu==" not in text, user
