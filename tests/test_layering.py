"""Layering (issue 22, item 3): no adapter, and no kernel, reaches into another adapter's private
names; they share through the core (:mod:`initscale`) or the kernels (:mod:`initscale._kernels`).

The rule, checked on the source with :mod:`ast` (nothing is imported):

- **Families.** An adapter's own modules are its module ``adapters/<name>.py`` and its private
  submodules ``adapters/_<name>_*.py`` (``_torch_auto``, ``_torch_check``, ...). The Keras family
  is ``keras``, ``tf_keras`` and ``_keras_*`` (one Keras implementation serves both, issue 22).
- **Private names** are names with a leading underscore: ``from initscale.adapters.torch import
  _fill``, ``ist._fill`` where ``ist`` is bound to an adapter module, and a private submodule
  itself (``from initscale.adapters import _torch_auto``). A module may use the private names of
  its own family only.
- **The kernels** (``initscale/_kernels/``) sit below the adapters: they import no adapter at all.
- **The core** (the rest of ``initscale/``) dispatches to a few adapter internals lazily today
  (the walks that recipes read, ``auto``'s and the CLI's entry points): those places are listed in
  ``CORE_KNOWN``; a new one fails. Relative imports are resolved (``from .torch import _x`` in
  ``adapters/``, ``from .adapters import _x`` in ``initscale/``).
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
ADAPTERS = "initscale.adapters"

# (core module, adapter module, private name) in use when this test was written; shrink, never grow
CORE_KNOWN = frozenset(
    {
        ("initscale._recipe_paths", "initscale.adapters.jax", "_walk"),
        ("initscale._recipe_paths", "initscale.adapters.keras", "_walk"),
        ("initscale.recipes", "initscale.adapters.torch", "_walk"),
        ("initscale.autogain", "initscale.adapters", "_jax_auto"),
        ("initscale.autogain", "initscale.adapters", "_keras_auto"),
        ("initscale.autogain", "initscale.adapters", "_torch_auto"),
        ("initscale.cli", "initscale.adapters", "_torch_check"),
    }
)


def sources() -> dict[str, str]:
    """Every module of initscale/ and adapters/ (shipped as initscale.adapters) by dotted name."""
    found = {}
    for base, package in ((ROOT / "initscale", "initscale"), (ROOT / "adapters", ADAPTERS)):
        for path in sorted(base.rglob("*.py")):
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path.read_text(encoding="utf-8")
    return found


def family(module: str) -> str | None:
    """The adapter family of an ``initscale.adapters.*`` module, else None."""
    if not module.startswith(ADAPTERS + "."):
        return None
    name = module[len(ADAPTERS) + 1 :].split(".")[0]
    if name == "tf_keras":
        return "keras"
    return name.lstrip("_").split("_")[0]


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, target] if target else parts)


def violations(modules: dict[str, str], known: frozenset[tuple[str, str, str]] = CORE_KNOWN) -> list[str]:
    """Each use of an adapter's private name outside its family, and each adapter import in the
    kernels, as ``module:line: what`` (core uses listed in ``known`` pass)."""
    packages = {"initscale", ADAPTERS, "initscale._kernels"}  # the modules that are packages (__init__)
    found = []
    for module, source in modules.items():
        mine = family(module)
        kernel = module == "initscale._kernels" or module.startswith("initscale._kernels.")
        aliases: dict[str, str] = {}  # local name -> the adapter module it is bound to
        uses: list[tuple[int, str, str]] = []  # (line, adapter module, name)
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == ADAPTERS or a.name.startswith(ADAPTERS + "."):
                        uses.append((node.lineno, a.name, ""))
                        if a.asname:
                            aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                source_module = _absolute(module, module in packages, node.level, node.module)
                if source_module == ADAPTERS:
                    for a in node.names:
                        aliases[a.asname or a.name] = f"{ADAPTERS}.{a.name}"
                        uses.append((node.lineno, ADAPTERS, a.name))
                elif source_module.startswith(ADAPTERS + "."):
                    for a in node.names:
                        uses.append((node.lineno, source_module, a.name))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                uses.append((node.lineno, aliases[node.value.id], node.attr))
        for line, target, name in uses:
            where = f"{module}:{line}"
            if kernel:
                found.append(f"{where}: the kernels import no adapter ({target} {name})".rstrip())
                continue
            if not name.startswith("_"):
                continue
            owner = f"{ADAPTERS}.{name}" if target == ADAPTERS else target  # a private submodule, or a name
            if family(owner) == mine and mine is not None:
                continue
            if mine is None and (module, target, name) in known:
                continue
            found.append(f"{where}: {target}.{name} is private to the {family(owner)} adapter")
    return sorted(set(found))


def test_no_module_reaches_into_another_adapters_private_names() -> None:
    assert violations(sources()) == []


def test_the_core_exceptions_are_still_in_use() -> None:
    # every CORE_KNOWN entry is a use today (a stale one would let a new use of that name pass):
    # when one goes, delete its entry
    found = violations(sources(), known=frozenset())
    for module, target, name in CORE_KNOWN:
        assert any(v.startswith(module + ":") and f"{target}.{name} " in v for v in found), (module, target, name)


def test_planted_violations_are_found() -> None:
    base = sources()
    planted = {
        # the kernels' self-check as it was before the ops-path sampler moved into the kernels
        "initscale._kernels.gpu": base["initscale._kernels.gpu"]
        + "\n\ndef _old():\n    from initscale.adapters import torch as ist\n\n    ist._fill(None, None, None, None)\n",
        # an adapter importing another's private function, absolute and relative
        "initscale.adapters.keras": base["initscale.adapters.keras"]
        + "\nfrom initscale.adapters.torch import _stream_draw\nfrom .jax import _walk\n",
        # an adapter reaching another's private submodule, and a module attribute
        "initscale.adapters.numpy": base["initscale.adapters.numpy"]
        + "\nfrom . import _torch_auto\nimport initscale.adapters.jax as isj\nisj._orthogonal\n",
        # a new core use
        "initscale.plan": base["initscale.plan"] + "\nfrom .adapters import torch as ist\nist._walk\n",
    }
    found = violations({**base, **planted})
    expected = [
        "initscale._kernels.gpu:",  # the import itself
        "initscale.adapters.keras:",
        "initscale.adapters.numpy:",
        "initscale.plan:",
    ]
    for prefix in expected:
        assert any(v.startswith(prefix) for v in found), (prefix, found)
    assert sum("_stream_draw" in v for v in found) == 1 and sum("jax._walk" in v for v in found) == 1
    assert sum("_torch_auto" in v for v in found) == 1 and sum("_orthogonal" in v for v in found) == 1
    assert sum(v.startswith("initscale._kernels.gpu:") and "_fill" in v for v in found) == 1


def test_a_family_may_use_its_own_private_names() -> None:
    own = {
        "initscale.adapters._torch_auto": "from initscale.adapters.torch import _walk\n"
        "from . import torch as ist\nist._x\n",
        "initscale.adapters.tf_keras": "from . import _keras_common as c\nc._draw\nfrom ._keras_layers import _t\n",
        "initscale.adapters.torch": "from ._torch_check import _helper\n"
        "from initscale._kernels.torch_ops import fill\n",
    }
    assert violations(own) == []
