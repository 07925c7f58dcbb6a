"""The framework-neutral part of the re-init helpers: rules, matching, defaults, the report."""

from __future__ import annotations

import re

import pytest

import initscale
from initscale.reinit import Param, Rule, compile_rules, plan

HE = initscale.presets.get("he_normal")


def _p(name, role="weight", classes=("Dense", "Layer"), shape=(4, 3), layout="keras", **kw):
    return Param(name, shape, classes, role, layout, **kw)


@pytest.mark.parametrize(("pattern", "kind"), [
    ("Conv2d", "class"), ("_ConvNd", "class"), ("encoder.*.weight", "glob"), ("*/kernel", "glob"),
    ("layer[0-9].bias", "glob"), ("block-1/dense:0", "glob"), ("?", "glob"), ("[!a]*", "glob"),
])
def test_pattern_kinds(pattern, kind) -> None:
    assert compile_rules({pattern: HE})[0].kind == kind


@pytest.mark.parametrize("pattern", ["", " ", "a b", "enc(oder)", "x[", "x]", "x[]", "x[!]", "é*"])
def test_invalid_patterns_are_named(pattern) -> None:
    with pytest.raises(ValueError, match=re.escape(f"Invalid pattern {pattern!r} in `rules`")):
        compile_rules({pattern: HE})


def test_matching() -> None:
    weights = Rule("*", HE, "weights")
    assert weights.matches(_p("d/kernel")) and not weights.matches(_p("d/bias", "bias"))
    assert not weights.matches(_p("e/embeddings", "embedding"))
    by_class = Rule("Layer", HE, "class")  # a base class counts
    assert by_class.matches(_p("d/kernel")) and by_class.matches(_p("e", "embedding"))
    assert not by_class.matches(_p("d/bias", "bias")) and not by_class.matches(_p("n/beta", "norm_offset"))
    assert Rule("kernel", HE, "class").matches(_p("kernel", classes=("Other",)))  # exact whole name
    glob = Rule("*/bias", HE, "glob")
    assert glob.matches(_p("a/b/bias", "bias")) and not glob.matches(_p("a/bias_x", "bias"))
    assert not Rule("*", HE, "weights").matches(_p("bn/moving_mean", "other", buffer=True))
    assert Rule("*moving*", HE, "glob").matches(_p("bn/moving_mean", "other", buffer=True))
    assert not Rule("Dense", HE, "class").matches(_p("d/seed", "other", buffer=True))


def test_defaults_and_first_match_wins() -> None:
    params = [_p("d/kernel"), _p("d/bias", "bias", layout=None, shape=(3,)),
              _p("n/gamma", "norm_scale", ("LayerNormalization",), layout=None, shape=(3,)),
              _p("n/beta", "norm_offset", ("LayerNormalization",), layout=None, shape=(3,)),
              _p("e/embeddings", "embedding", ("Embedding",))]
    with pytest.warns(UserWarning, match=r"every parameter that 'Dense' matches is taken by an earlier rule"):
        report = plan(params, {"d/*": initscale.Constant(2.0), "Dense": HE}).report
    assert report["d/kernel"].spec == initscale.Constant(2.0) and report["d/kernel"].reason == "rule 'd/*'"
    assert report["d/bias"].spec == initscale.Constant(2.0)
    assert report["n/gamma"].spec == initscale.Ones() and report["n/beta"].spec == initscale.Zeros()
    assert not report["e/embeddings"].touched
    off = plan(params, HE, defaults=False).report
    assert [r.name for r in off.touched] == ["d/kernel"]


def test_variance_scaling_on_a_parameter_without_fans_names_it() -> None:
    with pytest.raises(ValueError, match=r"Parameter 'n/gamma' \(shape \(3,\), in Dense\) has no fans"):
        plan([_p("n/gamma", "norm_scale", layout=None, shape=(3,))], {"n/*": HE})
    with pytest.raises(ValueError, match=r"Parameter 'w' \(shape \(3,\), in Dense\).*rank 1"):
        plan([_p("w", shape=(3,))], HE)


def test_frozen() -> None:
    report = plan([_p("k", frozen=True)], HE).report
    assert not report["k"].touched and "include_frozen=True" in report["k"].reason
    assert plan([_p("k", frozen=True)], HE, include_frozen=True).report["k"].touched


def test_unused_patterns_warn() -> None:
    with pytest.warns(UserWarning, match=r"'Dence' \(did you mean 'Dense'\?\)"):
        report = plan([_p("d/kernel")], {"Dence": HE}).report
    assert report.unused_patterns == ("Dence",)


def test_guessed_layouts_are_marked_in_the_report() -> None:
    params = [_p("d/kernel", layout="flax.dense", guessed=True),
              _p("d/bias", "bias", layout=None, shape=(3,), guessed=True),  # no layout: nothing guessed
              _p("e/kernel", layout="flax.dense")]
    report = plan(params, HE).report
    assert [r.name for r in report.guessed] == ["d/kernel"] and report.to_dicts()[0]["guessed"] is True
    lines = report.table().splitlines()
    assert "flax.dense?" in lines[1] and "flax.dense?" not in lines[3]
    assert lines[-1].startswith("? layout guessed from names")
    assert "?" not in str(plan(params[2:], HE).report)  # no footnote when nothing is guessed
