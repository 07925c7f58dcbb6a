"""The framework-neutral part of the re-init helpers: rules, matching, defaults, the report."""

from __future__ import annotations

import dataclasses
import re
import warnings

import pytest

import initscale
from initscale.reinit import CompiledRule, Param, compile_rules, plan

HE = initscale.presets.get("he_normal")


def _p(name, role="weight", classes=("Dense", "Layer"), shape=(4, 3), layout="keras", **kw):
    return Param(name, shape, classes, role, layout, **kw)


@pytest.mark.parametrize(
    ("pattern", "pattern_type"),
    [
        ("Conv2d", "class"),
        ("_ConvNd", "class"),
        ("encoder.*.weight", "glob"),
        ("*/kernel", "glob"),
        ("layer[0-9].bias", "glob"),
        ("block-1/dense:0", "glob"),
        ("?", "glob"),
        ("[!a]*", "glob"),
    ],
)
def test_pattern_types(pattern, pattern_type) -> None:
    assert compile_rules({pattern: HE})[0].pattern_type == pattern_type


@pytest.mark.parametrize("pattern", ["", " ", "a b", "enc(oder)", "x[", "x]", "x[]", "x[!]", "é*"])
def test_invalid_patterns_are_named(pattern) -> None:
    with pytest.raises(ValueError, match=re.escape(f"Invalid pattern {pattern!r} in `rules`")):
        compile_rules({pattern: HE})


def test_matching() -> None:
    weights = CompiledRule("*", HE, "weights")
    assert weights.matches(_p("d/kernel")) and not weights.matches(_p("d/bias", "bias"))
    assert not weights.matches(_p("e/embeddings", "embedding"))
    by_class = CompiledRule("Layer", HE, "class")  # a base class counts
    assert by_class.matches(_p("d/kernel")) and by_class.matches(_p("e", "embedding"))
    assert not by_class.matches(_p("d/bias", "bias")) and not by_class.matches(_p("n/beta", "norm_offset"))
    assert CompiledRule("kernel", HE, "class").matches(_p("kernel", classes=("Other",)))  # exact whole name
    glob = CompiledRule("*/bias", HE, "glob")
    assert glob.matches(_p("a/b/bias", "bias")) and not glob.matches(_p("a/bias_x", "bias"))
    assert not CompiledRule("*", HE, "weights").matches(_p("bn/moving_mean", "other", buffer=True))
    assert CompiledRule("*moving*", HE, "glob").matches(_p("bn/moving_mean", "other", buffer=True))
    assert not CompiledRule("Dense", HE, "class").matches(_p("d/seed", "other", buffer=True))


def test_defaults_and_first_match_wins() -> None:
    params = [
        _p("d/kernel"),
        _p("d/bias", "bias", layout=None, shape=(3,)),
        _p("n/gamma", "norm_scale", ("LayerNormalization",), layout=None, shape=(3,)),
        _p("n/beta", "norm_offset", ("LayerNormalization",), layout=None, shape=(3,)),
        _p("e/embeddings", "embedding", ("Embedding",)),
    ]
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
    params = [
        _p("d/kernel", layout="flax.dense", guessed=True),
        _p("d/bias", "bias", layout=None, shape=(3,), guessed=True),  # no layout: nothing guessed
        _p("e/kernel", layout="flax.dense"),
    ]
    report = plan(params, HE).report
    assert [r.name for r in report.guessed] == ["d/kernel"] and report.to_dicts()[0]["guessed"] is True
    lines = report.table().splitlines()
    assert "flax.dense?" in lines[1] and "flax.dense?" not in lines[3]
    assert lines[-1].startswith("? layout guessed from names")
    assert "?" not in str(plan(params[2:], HE).report)  # no footnote when nothing is guessed


def test_a_bias_the_adapter_keeps_is_kept_by_defaults_and_class_rules() -> None:
    """A Keras LSTM's forget-gate bias (unit_forget_bias=True) is a bias with a note: class rules
    and the one-spec form skip it as they skip every bias, the defaults keep it (the note says
    why), a name rule sets it."""
    forget = Param(
        "lstm/lstm_cell/bias",
        (20,),
        ("LSTMCell", "LSTM"),
        "bias",
        None,
        note="Keras starts this LSTM's forget-gate bias at 1 (unit_forget_bias=True)",
    )
    kernel = Param("lstm/lstm_cell/kernel", (8, 20), ("LSTMCell", "LSTM"), "weight", "keras.lstm")
    for rules in ({"LSTM": HE}, {"LSTM": initscale.Normal(0.05)}, HE):
        report = plan([kernel, forget], rules).report
        assert report[kernel.name].touched
        assert not report[forget.name].touched and "unit_forget_bias" in report[forget.name].reason
    assert plan([kernel, forget], {"*/bias": initscale.Zeros()}).report[forget.name].touched
    assert plan([forget], {"*/bias": None}).report[forget.name].reason == "rule '*/bias' says leave as is"
    old = dataclasses.replace(forget, role="other")  # mutation: the old reading ("other", not a bias)
    assert plan([kernel, old], {"LSTM": initscale.Normal(0.05)}).report[old.name].touched  # the check sees it


def test_native_fans_are_the_frameworks_own_rule() -> None:
    params = [
        _p("dw/depthwise_kernel", classes=("DepthwiseConv2D",), shape=(3, 3, 64, 1), layout="keras.depthwise_conv"),
        _p("up/kernel", classes=("Conv2DTranspose",), shape=(3, 3, 32, 16), layout="keras.conv_transpose"),
        _p("c/kernel", classes=("Conv",), shape=(3, 3, 8, 64), layout="flax.conv:groups=4"),
        _p("d/bias", "bias", shape=(3,), layout=None),
    ]
    forward = plan(params, HE).report
    native = plan(params, HE, fans="native").report
    # Keras's compute_fans and jax's _compute_fans on the shape alone (docs/conventions.md, section 3)
    assert [(r.fan_in, r.fan_out) for r in native.rows[:3]] == [(576, 9), (288, 144), (72, 576)]
    assert [(r.fan_in, r.fan_out) for r in forward.rows[:3]] == [(9, 9), (144, 288), (72, 144)]
    assert [r.fans for r in native] == ["native"] * 3 + [None] and native.fans == "native"
    assert [r.fans for r in forward] == ["forward"] * 3 + [None] and forward.fans == "forward"
    assert native["dw/depthwise_kernel"].layout == "keras.depthwise_conv:native=true"
    assert native.to_dicts()[0]["fans"] == "native"
    assert "fans: native (the framework's own rule)" in native.summary().splitlines()[0]
    assert "fans:" not in forward.summary()


def test_native_fans_on_a_layout_without_a_framework_rule_warn() -> None:
    general = initscale.Layout(0, (1, 2), name="flax.attention_qkv")  # (in, heads, head_dim)
    params = [
        _p("q/kernel", classes=("DenseGeneral",), shape=(64, 4, 16), layout=general),
        _p("d/kernel", classes=("Dense",), shape=(64, 8), layout="flax.dense"),
    ]
    with pytest.warns(
        UserWarning,
        match=r"layouts of 1 parameter\(s\) have no framework fan rule, so their "
        r"forward fans were used: 'q/kernel'",
    ):
        report = plan(params, HE, fans="native").report
    assert report["q/kernel"].fans == "forward" and report["d/kernel"].fans == "native"
    assert "1 layout(s) without one keep forward fans" in report.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fixed-scale spec does not use the fans: nothing to warn about
        plan(params, initscale.Normal(0.02), fans="native")


@pytest.mark.parametrize("bad", ["Native", "torch", None, 1])
def test_fans_must_be_forward_or_native(bad) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"Argument `fans` must be one of 'forward', 'native'. Received: fans={bad!r}.")
    ):
        plan([_p("d/kernel")], HE, fans=bad)


def test_a_bias_takes_its_weights_fans_when_its_spec_needs_fans() -> None:
    layer_default = initscale.presets.get("torch.linear_default")
    params = [
        _p("fc.weight", classes=("Linear",), shape=(30, 400), layout="torch.linear"),
        _p("fc.bias", "bias", classes=("Linear",), shape=(30,), layout=None, fans_of="fc.weight"),
        _p("other.weight", classes=("Linear",), shape=(30, 9), layout="torch.linear"),
        _p("other.bias", "bias", classes=("Linear",), shape=(30,), layout=None, fans_of="other.weight"),
    ]
    report = plan(params, {"fc.weight": layer_default, "other.weight": HE}).report
    row = report["fc.bias"]
    assert (row.spec, row.fan_in, row.fan_out, row.layout, row.fans) == (
        layer_default,
        400,
        30,
        "torch.linear",
        "forward",
    )
    assert row.std == pytest.approx(1 / 20 / 3**0.5, rel=1e-12)  # U(±1/√400)
    assert report["other.bias"].spec == initscale.Zeros()  # he_normal is not a layer default: zeros
    assert plan(params, {"fc.weight": layer_default, "fc.bias": None}).report["fc.bias"].touched is False


def test_rule_values_say_the_layout_and_padding() -> None:
    compiled = compile_rules({"Mixer": initscale.Rule(HE, layout="keras.dense", padding="draw"), "*.b": None})
    assert compiled[0] == CompiledRule("Mixer", HE, "class", "keras.dense", "draw")
    assert compiled[1] == CompiledRule("*.b", None, "glob")
    unknown = _p("m.w", "other", ("Mixer",), shape=(6, 4), layout=None)
    row = plan([unknown], {"Mixer": initscale.Rule(HE, layout="keras.dense")}).report["m.w"]
    assert (row.layout, row.fan_in, row.fan_out) == ("keras.dense", 6, 4)
    assert (
        plan([unknown], {"Mixer": initscale.Rule(HE, layout="torch.linear")}).decisions[0].param.layout
        == "torch.linear"
    )  # the adapter draws (and streams) with the layout the fans came from


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layout": "keras.dens"}, ValueError, r"Received: layout='keras\.dens'\. Did you mean 'keras\.dense'"),
        ({"layout": "torch.conv:grups=2"}, ValueError, r"takes no argument 'grups'"),
        ({"layout": 3}, TypeError, r"layout=3"),
        ({"padding": "keep"}, ValueError, r"`padding`.*'draw', 'zero'\. Received: padding='keep'"),
    ],
)
def test_rule_checks_its_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        initscale.Rule(HE, **kwargs)
    with pytest.raises(TypeError, match=r"`spec` of initscale.Rule.*presets.get\('he_normal'\)"):
        initscale.Rule("he_normal")


def test_a_fan_based_spec_never_guesses_a_layout() -> None:
    params = [
        _p("d/kernel"),
        _p("m/w", "other", ("Mixer",), shape=(6, 4), layout=None),
        _p("m/v", "other", ("Mixer",), shape=(2, 3, 4), layout=None),
    ]
    with pytest.raises(
        ValueError,
        match=r"(?s)2 parameter\(s\).*'m/w' \(shape \(6, 4\), in Mixer\): rule 'Mixer'.*"
        r"'m/v'.*\{'Mixer': initscale\.Rule\(VarianceScaling\(scale=2\.0\), layout=",
    ):
        plan(params, {"Mixer": HE})
    assert plan(params, {"Mixer": initscale.Normal(0.02)}).report["m/w"].std == 0.02  # fixed scale: fine
    with pytest.warns(UserWarning, match=r"left 2 parameter\(s\) of 2 or more axes untouched.*Mixer \(2: 'm/w', 'm/v'"):
        report = plan(params, HE).report
    assert [r.name for r in report.touched] == ["d/kernel"]


def test_tied_names_rows_rules_and_conflicts() -> None:
    emb = _p("wte", "embedding", ("Embedding",), shape=(10, 4), layout="torch.embedding")
    head = _p("head", "weight", ("Linear",), shape=(10, 4), layout="torch.linear", tied_to="wte")
    params = [emb, _p("head.b", "bias", shape=(10,), layout=None), head]
    kept = plan(params, HE)  # the one spec for all weights leaves a tied embedding an embedding
    assert [r.name for r in kept.report] == ["wte", "head.b", "head"]
    assert kept.report["head"].tied_to == "wte" and not kept.report["head"].touched
    decided = plan(params, {"Linear": HE})  # a rule on the alias: the shared tensor, with its layout
    first, alias = decided.report["wte"], decided.report["head"]
    assert first.touched and (first.layout, first.fan_in, first.fan_out) == ("torch.linear", 4, 10)
    assert first.reason == "rule 'Linear' (on its tied name 'head')"
    assert alias.reason == "tied to 'wte', set once" and alias.std == first.std
    assert decided.decisions[2].dist is None and decided.decisions[0].dist is not None  # drawn once
    with pytest.raises(ValueError, match=r"'wte' and 'head' are one tensor.*rule 'Embedding'.*rule 'Linear'"):
        plan(params, {"Embedding": initscale.Normal(0.1), "Linear": HE})
    assert plan(params, {"Embedding": HE, "head": HE}).report["wte"].layout == "torch.embedding"  # agree: fine


def test_padding_rows() -> None:
    emb = _p("e", "embedding", ("Embedding",), shape=(10, 4), layout="torch.embedding", padding_idx=0)
    decided = plan([emb], {"Embedding": initscale.Normal(1.0)})
    assert decided.decisions[0].padding_idx == 0 and decided.report["e"].reason.endswith("padding row 0 kept at zero")
    drawn = plan([emb], {"Embedding": initscale.Rule(initscale.Normal(1.0), padding="draw")})
    assert drawn.decisions[0].padding_idx is None and "padding row 0 drawn" in drawn.report["e"].reason
    assert plan([emb], HE).decisions[0].padding_idx is None  # kept: nothing to keep at zero
