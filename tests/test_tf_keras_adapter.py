"""The legacy Keras 2 adapter (tf_keras on TensorFlow): same API and guarantees as the Keras 3 one.

Every preset on every logical layer is the parity matrix's (tests/test_parity.py); dtypes, seeds,
zero-size shapes, bad dtypes and specs, orthogonal blocks and the far-tail truncated normals are
every adapter's (tests/test_adapters.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import initscale
from _stats import failures, same_distribution
from initscale import presets

tf_keras = pytest.importorskip("tf_keras")
istk = pytest.importorskip("initscale.adapters.tf_keras")

F32 = 2.0**-24
HE = presets.get("he_normal")
SHAPE = (3, 3, 100, 200)


def test_a_seed_that_is_not_an_int_is_refused() -> None:
    with pytest.raises(TypeError, match="Argument `seed` must be an int"):
        istk.initializer(HE, seed="1")


NATIVE = [  # drop-in, tf_keras's own (Keras 2 corrects the truncated normal too), shape
    (lambda: istk.GlorotUniform(seed=1), lambda: tf_keras.initializers.GlorotUniform(seed=2), SHAPE),
    (lambda: istk.HeNormal(seed=1), lambda: tf_keras.initializers.HeNormal(seed=2), SHAPE),
    (lambda: istk.LecunNormal(seed=1), lambda: tf_keras.initializers.LecunNormal(seed=2), SHAPE),
    (
        lambda: istk.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=1),
        lambda: tf_keras.initializers.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=2),
        SHAPE,
    ),
    (
        lambda: istk.TruncatedNormal(0.1, 0.3, seed=1),
        lambda: tf_keras.initializers.TruncatedNormal(0.1, 0.3, seed=2),
        SHAPE,
    ),
    (
        lambda: istk.RandomUniform(-0.2, 0.5, seed=1),
        lambda: tf_keras.initializers.RandomUniform(-0.2, 0.5, seed=2),
        SHAPE,
    ),
]


@pytest.mark.parametrize(("ours", "theirs", "shape"), NATIVE, ids=[str(i) for i in range(len(NATIVE))])
def test_drop_ins_match_tf_keras_own_initializers(ours, theirs, shape) -> None:
    mine = ours()
    dist = mine.spec.resolve(None if mine.spec.fixed_scale else initscale.compute_fans(shape, "keras:native=true"))
    a, b = mine(shape).numpy(), theirs()(shape).numpy()
    assert failures(a, dist, F32) == [] and failures(b, dist, F32) == []
    assert same_distribution(a, b) == []


def _tf_keras_std(native, shape) -> float:
    """tf_keras's own std from its own helper (tf_keras.src.initializers.initializers._compute_fans)."""
    from tf_keras.src.initializers.initializers import _compute_fans

    fan_in, fan_out = _compute_fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[native.mode]
    return math.sqrt(native.scale / max(1.0, n))


@pytest.mark.parametrize(
    "case",
    [
        ("abc,cde->abde", (None, 4, 16), (2, 5, 64)),  # MHA's query/key/value: (64, 4, 16)
        ("abcd,cde->abe", (None, 64), (2, 5, 4, 16)),  # MHA's output: (4, 16, 64)
        ("abc,bcd->abd", (5, 24), (2, 5, 40)),  # (5, 40, 24)
        ("...b,bc->...c", 64, (2, 3, 40)),  # (40, 64)
    ],
    ids=lambda c: c[0],
)
def test_drop_ins_equal_tf_keras_inside_einsum_dense(case) -> None:
    """tf_keras's EinsumDense hands its initializer no axes (Keras 3.15's does): tf_keras's own
    initializers read an EinsumDense kernel with the conv rule, and so do the drop-ins."""
    equation, output_shape, input_shape = case
    for ours, theirs in (
        (istk.GlorotUniform(seed=1), tf_keras.initializers.GlorotUniform(seed=2)),
        (istk.HeNormal(seed=1), tf_keras.initializers.HeNormal(seed=2)),
        (istk.initializer(presets.get("lecun_uniform"), seed=1), tf_keras.initializers.LecunUniform(seed=2)),
    ):
        kernels = []
        for init in (ours, theirs):
            layer = tf_keras.layers.EinsumDense(equation, output_shape, kernel_initializer=init)
            layer.build(input_shape)
            kernels.append(layer.kernel.numpy())
        a, b = kernels
        dist = ours._planner(a.shape).dist  # the weight's cached WeightPlan
        assert dist.std == pytest.approx(_tf_keras_std(theirs, a.shape), rel=1e-9)
        assert failures(a, dist, F32) == [] and failures(b, dist, F32) == []


def test_drop_ins_equal_tf_keras_inside_multi_head_attention() -> None:
    """MultiHeadAttention(4, 16) on d_model 64 in tf_keras: q/k/v (64, 4, 16) with conv-rule fans
    (256, 1024), the output (4, 16, 64) with (64, 256), for tf_keras's own and the drop-in.
    Mutation: Keras 3's axis fans (64, 64) fail the same check."""
    spec = presets.get("glorot_uniform")
    x = np.zeros((2, 5, 64), "float32")
    kernels = {}
    for key, init in (("ours", istk.GlorotUniform(seed=1)), ("theirs", tf_keras.initializers.GlorotUniform(seed=2))):
        mha = tf_keras.layers.MultiHeadAttention(4, 16, kernel_initializer=init)
        mha(x, x)
        kernels[key] = {w.name.split("/")[-2]: w.numpy() for w in mha.weights if w.name.endswith("kernel:0")}
    assert set(kernels["ours"]) == {"query", "key", "value", "attention_output"}
    for sub, a in kernels["ours"].items():
        fans = initscale.Fans(256, 1024) if sub != "attention_output" else initscale.Fans(64, 256)
        dist = spec.resolve(fans)
        assert dist.std == pytest.approx(_tf_keras_std(tf_keras.initializers.GlorotUniform(), a.shape), rel=1e-9)
        assert failures(a, dist, F32) == [] and failures(kernels["theirs"][sub], dist, F32) == [], sub
        assert same_distribution(a, kernels["theirs"][sub]) == [], sub
        assert failures(a, spec.resolve(initscale.Fans(64, 64)), F32) != [], sub


def test_config_round_trip_and_saving(tmp_path) -> None:
    inits = [
        istk.initializer(presets.get("tf1.xavier_initializer"), seed=3, layout="keras.lstm"),
        istk.VarianceScaling(2.0, "fan_avg", "normal", seed=4),
        istk.HeNormal(seed=1),
        istk.Orthogonal(1.5),
        istk.Zeros(),
        istk.Constant(0.5),
        istk.RandomNormal(0.1, 0.2),
    ]
    for init in inits:
        data = json.loads(json.dumps(tf_keras.utils.serialize_keras_object(init)))
        back = tf_keras.utils.deserialize_keras_object(data)
        assert type(back) is type(init) and back.get_config() == init.get_config() and back.spec == init.spec
    path = tmp_path / "m.keras"
    model = tf_keras.Sequential(
        [
            tf_keras.layers.LSTM(5, input_shape=(4, 6), kernel_initializer=inits[0], recurrent_initializer=inits[3]),
            tf_keras.layers.Dense(2, kernel_initializer=inits[2]),
        ]
    )
    model.save(path)
    code = textwrap.dedent(f"""
        import json, tf_keras
        from initscale.adapters import tf_keras as istk
        m = tf_keras.models.load_model({str(path)!r})
        cell = m.layers[0].cell
        print(json.dumps([i.get_config() for i in (cell.kernel_initializer, cell.recurrent_initializer,
                                                    m.layers[1].kernel_initializer)]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == json.loads(
        json.dumps([inits[0].get_config(), inits[3].get_config(), inits[2].get_config()])
    )


def test_reinit_layouts_defaults_and_atomicity() -> None:
    inp = tf_keras.Input((12, 12, 8))
    x = tf_keras.layers.Conv2D(16, 3, groups=4, name="grouped")(inp)
    x = tf_keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = tf_keras.layers.SeparableConv2D(8, 3, depth_multiplier=3, name="sep")(x)
    x = tf_keras.layers.Conv2DTranspose(6, 3, name="up")(x)
    x = tf_keras.layers.BatchNormalization(name="bn")(x)
    x = tf_keras.layers.Reshape((-1, 6))(x)
    x = tf_keras.layers.LSTM(7, name="lstm")(x)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(3, name="head")(x))
    report = istk.reinit(model, HE, seed=0)
    expected = {
        "grouped/kernel": ("keras.conv:groups=4", 18, 36),
        "dw/depthwise_kernel": ("keras.depthwise_conv", 9, 18),
        "sep/depthwise_kernel": ("keras.separable_conv.depthwise", 9, 27),
        "sep/pointwise_kernel": ("keras.separable_conv.pointwise", 96, 8),
        "up/kernel": ("keras.conv_transpose", 72, 54),
        "head/kernel": ("keras.dense", 7, 3),
    }
    for name, (layout, fan_in, fan_out) in expected.items():
        row = report[name]
        assert (row.layout, row.fan_in, row.fan_out) == (layout, fan_in, fan_out), name
        assert row.std == pytest.approx(math.sqrt(2 / fan_in), rel=1e-12)
    lstm = next(r for r in report if r.name.endswith("recurrent_kernel"))
    assert (lstm.layout, lstm.fan_in, lstm.fan_out) == ("keras.lstm", 7, 7)
    assert np.all(model.get_layer("bn").gamma.numpy() == 1) and np.all(model.get_layer("head").bias.numpy() == 0)
    forget = next(r for r in report if r.name.endswith("lstm_cell/bias"))
    assert not forget.touched and "unit_forget_bias" in forget.reason
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"Parameter 'bn/gamma'"):
        istk.reinit(model, {"Conv": HE, "bn/gamma": HE}, seed=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True))
    model.get_layer("head").trainable = False
    assert "frozen" in istk.reinit(model, HE, dry_run=True)["head/kernel"].reason


@pytest.mark.parametrize("spec", [presets.get("glorot_uniform"), initscale.Normal(0.05)], ids=["glorot", "normal"])
def test_class_rules_target_weights_not_biases(spec) -> None:
    """A class rule sets kernels and recurrent kernels, never biases: biases get zeros and the
    LSTM's forget-gate bias keeps Keras's 1.0 (unit_forget_bias=True, Keras's default)."""
    model = tf_keras.Sequential(
        [
            tf_keras.layers.LSTM(5, return_sequences=True, input_shape=(6, 8), name="lstm"),
            tf_keras.layers.GRU(4, return_sequences=True, name="gru"),
            tf_keras.layers.SimpleRNN(3, return_sequences=True, name="rnn"),
            tf_keras.layers.Conv1D(6, 3, name="conv"),
            tf_keras.layers.Dense(2, name="head"),
        ]
    )
    for w in model.weights:
        if w.name.endswith("bias:0") and not w.name.startswith("lstm"):
            w.assign(np.full(w.shape, 0.3, "float32"))
    before = {w.name.rsplit(":", 1)[0]: w.numpy().copy() for w in model.weights}
    lstm_bias = "lstm/lstm_cell/bias"
    assert np.array_equal(before[lstm_bias], np.repeat([0.0, 1.0, 0.0, 0.0], 5))
    classes = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN", "conv": "Conv1D", "head": "Dense"}
    report = istk.reinit(model, {c: spec for c in classes.values()}, seed=0)
    values = {w.name.rsplit(":", 1)[0]: w.numpy() for w in model.weights}
    for row in report:
        if row.name.endswith("kernel"):
            assert row.touched and row.reason == f"rule {classes[row.name.split('/')[0]]!r}", row.name
            assert not np.array_equal(values[row.name], before[row.name]), row.name
        elif row.name == lstm_bias:
            assert not row.touched and "unit_forget_bias" in row.reason
            assert np.array_equal(values[row.name], before[row.name])
        else:
            assert row.touched and row.reason == "default: biases -> zeros" and np.all(values[row.name] == 0), row.name
    assert sum(r.name.endswith("kernel") for r in report) == 8
    named = istk.reinit(model, {"LSTM": spec, "*/bias": initscale.Constant(0.5)}, seed=0)
    assert named[lstm_bias].reason == "rule '*/bias'" and np.all(model.layers[0].cell.bias.numpy() == 0.5)


def test_reinit_seed_is_per_variable_and_reproducible() -> None:
    def build():
        return tf_keras.Sequential(
            [tf_keras.layers.Dense(8, input_shape=(4,), name="a"), tf_keras.layers.Dense(3, name="b")]
        )

    m1, m2 = build(), build()
    istk.reinit(m1, HE, seed=3)
    istk.reinit(m2, HE, seed=3)
    assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(m1.weights, m2.weights, strict=True))


# --- layers initscale does not know: never a guessed layout (as the Keras 3 walk) ---------------


class Mixer(tf_keras.layers.Layer):
    """A weight of 2 axes whose layout only its author knows (x @ w: (in=6, out=4), say)."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(6, 4), initializer=tf_keras.initializers.Constant(3.0))
        self.bias = self.add_weight(name="bias", shape=(4,), initializer=tf_keras.initializers.Constant(3.0))

    def call(self, x):
        return tf_keras.backend.dot(x, self.w) + self.bias


def _mixer_model():
    inp = tf_keras.Input((6,))
    return tf_keras.Model(inp, tf_keras.layers.Dense(2, name="head")(Mixer(name="mixer")(inp)))


def test_an_unknown_layers_weight_with_a_fan_based_rule_is_an_error_before_writing() -> None:
    """Keras 2's walk used to read such a weight with a guessed layout ("keras") and write it."""
    model = _mixer_model()
    before = [w.numpy().copy() for w in model.weights]
    said = (
        r"(?s)'mixer/w' \(shape \(6, 4\), in Mixer\).*"
        r"\{'Mixer': initscale\.Rule\(VarianceScaling\(scale=2\.0\), layout="
    )
    for pattern in ("Mixer", "mixer/w", "*/w"):
        with pytest.raises(ValueError, match=said):
            istk.reinit(model, {pattern: HE, "Dense": HE}, seed=0)
        unchanged = [np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights, strict=True)]
        assert all(unchanged), (pattern, unchanged)  # nothing written, the Dense kernel neither
    fixed = istk.reinit(model, {"Mixer": initscale.Normal(0.5)}, seed=0)["mixer/w"]  # a fixed scale needs no fans
    assert fixed.touched and fixed.fan_in is None


def test_one_spec_warns_naming_the_unknown_layers_weights_and_the_fix() -> None:
    model = _mixer_model()
    with pytest.warns(
        UserWarning, match=r"left 1 parameter\(s\) of 2 or more axes untouched.*Mixer \(1: 'mixer/w'\).*layout="
    ):
        report = istk.reinit(model, HE, seed=0)
    assert not report["mixer/w"].touched and report["mixer/w"].layout is None
    assert np.all(model.get_layer("mixer").w.numpy() == 3.0)
    said = istk.reinit(model, {"Mixer": initscale.Rule(HE, layout="keras.dense")}, seed=4)["mixer/w"]
    assert (said.layout, said.fan_in, said.fan_out) == ("keras.dense", 6, 4)  # a rule that says the layout


def test_initscale_keras_is_tf_keras_under_tf_use_legacy_keras() -> None:
    code = "import initscale; print(initscale.keras.__name__)"
    for flag, expected in (("1", "initscale.adapters.tf_keras"), ("", "initscale.adapters.keras")):
        env = {**os.environ, "TF_USE_LEGACY_KERAS": flag}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == expected
