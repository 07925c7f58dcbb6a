"""The repository's habits, checked: commit-message rules (scripts/check_commit_msg.py)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "check_commit_msg.py"
_spec = importlib.util.spec_from_file_location("check_commit_msg", _PATH)
assert _spec is not None and _spec.loader is not None
check_commit_msg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_commit_msg)


@pytest.mark.parametrize(
    "message",
    ["fix: one line", "x" * 72, "subject\n\nbody line\nmore body", "subject\n# a git comment\n\nbody", "subject\n\n\n"],
)
def test_good_messages_pass(message: str) -> None:
    assert check_commit_msg.problems(message) == []


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("x" * 73, "73 characters"),
        ("subject\nbody without a blank line", "not blank"),
        ("", "empty"),
        ("\n\nbody", "empty"),
    ],
)
def test_bad_messages_name_the_problem(message: str, words: str) -> None:
    found = check_commit_msg.problems(message)
    assert len(found) == 1 and words in found[0], found


def test_main_exit_status(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("short subject\n\nbody\n")
    bad.write_text("y" * 90 + "\n")
    assert check_commit_msg.main([str(good)]) == 0
    assert check_commit_msg.main([str(bad)]) == 1


# --- names with one meaning each (issue 22, item 6; docs/glossary.md) -----------------------------
# `rule` is one entry of the user's rules, `plan` a plan object (what will be drawn, decided before
# drawing), `kind` a layer kind. The retired meanings must not come back under the old names.
_ROOT = Path(__file__).resolve().parents[1]
_LAYOUT_TYPES = ("Layout", "LayerKind", "LayoutLike")
# where `kind` keeps a meaning of its own: layer kinds themselves, and inspect.Parameter.kind
_KIND_FILES = ("initscale/fans.py", "initscale/_registry.py")
# the deprecated aliases (until 0.3), by (file, qualified name)
_ALIASES = {("initscale/parity.py", "Row.kind"), ("initscale/plan.py", "WeightPlan.rule")}


def _foreign_kind(node: ast.Attribute) -> bool:
    """NumPy's ``x.dtype.kind`` and ``inspect.Parameter.kind`` (``parameter.kind``) are theirs."""
    value = node.value
    return (isinstance(value, ast.Attribute) and value.attr == "dtype") or (
        isinstance(value, ast.Name) and value.id == "parameter"
    )


def _rule_like(name: str) -> bool:
    return name.lstrip("_") in ("rule", "rules") or name.endswith(("_rule", "_rules"))


def _plan_like(name: str) -> bool:
    return name.lstrip("_") == "plan"


def _target_names(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Attribute):
        return [target.attr]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _target_names(elt)]
    return []


def _called(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Call):
        return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
    return None


def retired_names(source: str, path: str) -> list[str]:
    """Each use of `rule`, `plan` or `kind` in a retired meaning in ``source`` (file ``path``,
    relative to the repository), as ``"path:line: what"``."""
    tree = ast.parse(source)
    found: list[str] = []
    parents: dict[ast.AST, str] = {}

    def qualify(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                parents[child] = name
                name += "."
            qualify(child, name)

    qualify(tree, "")
    aliased = {n for (p, q), n in ((k, k[1]) for k in _ALIASES) if p == path}
    alias_lines = {
        line
        for node, q in parents.items()
        if q in aliased
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }

    def flag(node: ast.AST, what: str) -> None:
        line = getattr(node, "lineno", 0)
        if line not in alias_lines:
            found.append(f"{path}:{line}: {what}")

    for node in ast.walk(tree):
        # `kind` / `kinds` as any identifier outside the layer-kind and inspect files
        if path not in _KIND_FILES:
            names: list[str] = []
            if isinstance(node, ast.Name):
                names = [node.id]
            elif isinstance(node, ast.Attribute) and not _foreign_kind(node):
                names = [node.attr]
            elif isinstance(node, ast.arg):
                names = [node.arg]
            elif isinstance(node, ast.keyword) and node.arg:
                names = [node.arg]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            for name in names:
                if name in ("kind", "kinds"):
                    flag(node, f"`{name}` outside layer kinds (glossary: comparison, pattern_type, category, ...)")
        # a rule-named parameter, field or variable that holds a layout (glossary: fan_layout)
        if isinstance(node, (ast.arg, ast.AnnAssign)) and getattr(node, "annotation", None) is not None:
            name = node.arg if isinstance(node, ast.arg) else (_target_names(node.target) or [""])[0]
            text = ast.unparse(node.annotation)
            if _rule_like(name) and any(t in text for t in _LAYOUT_TYPES):
                flag(node, f"`{name}: {text}` is a layout: call it fan_layout")
            if _plan_like(name) and "Runs" in text:
                flag(node, f"`{name}: {text}` are index runs: call them box_runs")
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            call = _called(node.value)
            for target in targets:
                names = _target_names(target)
                if call == "resolve" and any(_rule_like(n) for n in names):
                    flag(node, "a resolved layout named like a rule: call it fan_layout")
                if call == "runs" and any(_plan_like(n) for n in names):
                    flag(node, "canonical index runs named `plan`: call them box_runs")
                if call in ("plans", "planner") and names and _plan_like(names[0]):
                    flag(node, f"the callable from {call}() named `{names[0]}`: plan_of / _planner")
                if call in ("plans", "planner") and len(names) > 1 and _rule_like(names[1]):
                    flag(node, f"the layout from {call}() named `{names[1]}`: fan_layout")
    return found


def _package_files() -> list[Path]:
    return sorted([*(_ROOT / "initscale").rglob("*.py"), *(_ROOT / "adapters").rglob("*.py")])


def test_retired_meanings_of_rule_plan_kind_stay_retired() -> None:
    found = [hit for p in _package_files() for hit in retired_names(p.read_text(), p.relative_to(_ROOT).as_posix())]
    assert found == [], "\n".join(found)


_PLANTED = """
def initializer(spec, layout, stream=None, kind=None):
    plan, rule = plans(spec, layout)
    rule = resolve(layout)

def draw(shape, strides, box):
    plan = runs(shape, strides, box)
    return plan

class WeightPlan:
    rule: Layout | LayerKind

class Row:
    kind: str

def walk(events):
    return [e for e in events if e.kind == "op"]

def to_layout(values, plan: Runs):
    return values
"""


def test_mutation_retired_meanings_planted_are_caught() -> None:
    found = retired_names(_PLANTED, "initscale/planted.py")
    lines = sorted(int(hit.split(":")[1]) for hit in found)
    # the `kind` parameter (2); plan and rule from plans() (3); a resolved rule (4); plan = runs() (7);
    # WeightPlan.rule (11); Row.kind (14); e.kind (17); runs as a `plan: Runs` parameter (19)
    assert lines == [2, 3, 3, 4, 7, 11, 14, 17, 19], found
    # the same names in their one meaning pass: the user's rules, a WeightPlan, a layer kind
    clean = (
        "def f(rules, layout, x):\n    rule = rules['x']\n    plan = weight_plan(spec, (2, 2), layout)\n"
        "    return rule, plan, x.dtype.kind\n"
    )
    assert retired_names(clean, "initscale/clean.py") == []
    # kind is a layer kind in fans.py; the deprecated aliases are allowed where they are listed
    assert retired_names("kind = _kind(name)\n", "initscale/fans.py") == []
    assert retired_names("class Row:\n    @property\n    def kind(self): ...\n", "initscale/parity.py") == []


def test_the_renamed_public_attributes_keep_a_deprecated_alias_until_0_3() -> None:
    import initscale
    from initscale import parity
    from initscale.plan import weight_plan

    planned = weight_plan(initscale.presets.get("he_normal"), (4, 3), "torch")
    with pytest.warns(DeprecationWarning, match=r"WeightPlan\.rule .*0\.3.*fan_layout"):
        assert planned.rule is planned.fan_layout
    row = parity.Row("numpy", "he_normal", "dense", "analytic", 1.0, 1.0, 0.0, None, True, 10)
    with pytest.warns(DeprecationWarning, match=r"Row\.kind .*0\.3.*Row\.comparison"):
        assert row.kind == "analytic"
    assert row.to_dict()["comparison"] == row.to_dict()["kind"] == "analytic"  # the JSON keeps the old key
