"""The legacy Keras 2 adapter (tf_keras on TensorFlow): same API and guarantees as the Keras 3 one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _tails import TAIL_CASES, TAIL_IDS, TAIL_SHAPE, tail_failures, tail_spec

import initscale
from _stats import PRESET_SHAPES, failures, same_distribution
from initscale import presets

tf_keras = pytest.importorskip("tf_keras")
istk = pytest.importorskip("initscale.adapters.tf_keras")

F32 = 2.0**-24
HE = presets.get("he_normal")
SHAPE = (3, 3, 100, 200)
_SHAPES = PRESET_SHAPES


@pytest.mark.parametrize("name", [n for n in presets.names() if "orthogonal" not in n])
def test_every_preset_draws_its_analytic_distribution(name) -> None:
    info, spec = presets.info(name), presets.get(name)
    shape = _SHAPES[info.layout.split(":")[0]]
    dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(shape, info.layout))
    values = istk.initializer(spec, seed=len(name), layout=info.layout)(shape, "float32").numpy()
    assert failures(values, dist, F32) == []


def test_seeds_dtypes_and_orthogonal_blocks() -> None:
    fixed = istk.initializer(HE, seed=5)
    assert np.array_equal(fixed((30, 40)).numpy(), fixed((30, 40)).numpy())
    fresh = istk.initializer(HE)
    assert not np.array_equal(fresh((30, 40)).numpy(), fresh((30, 40)).numpy())
    for dtype in ("float16", "bfloat16", "float64"):
        assert fixed((3, 4), dtype).dtype.name == dtype
    with pytest.raises(TypeError, match="floating-point values only"):
        fixed((3, 4), "int32")
    with pytest.raises(TypeError, match="Argument `seed` must be an int"):
        istk.initializer(HE, seed="1")
    q = istk.Orthogonal(seed=0, layout="keras.lstm")((32, 128)).numpy()
    for g in range(4):
        block = q[:, g * 32:(g + 1) * 32]
        assert np.allclose(block.T @ block, np.eye(32), atol=1e-5)


NATIVE = [  # drop-in, tf_keras's own (Keras 2 corrects the truncated normal too), shape
    (lambda: istk.GlorotUniform(seed=1), lambda: tf_keras.initializers.GlorotUniform(seed=2), SHAPE),
    (lambda: istk.HeNormal(seed=1), lambda: tf_keras.initializers.HeNormal(seed=2), SHAPE),
    (lambda: istk.LecunNormal(seed=1), lambda: tf_keras.initializers.LecunNormal(seed=2), SHAPE),
    (lambda: istk.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=1),
     lambda: tf_keras.initializers.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=2), SHAPE),
    (lambda: istk.TruncatedNormal(0.1, 0.3, seed=1), lambda: tf_keras.initializers.TruncatedNormal(0.1, 0.3, seed=2),
     SHAPE),
    (lambda: istk.RandomUniform(-0.2, 0.5, seed=1), lambda: tf_keras.initializers.RandomUniform(-0.2, 0.5, seed=2),
     SHAPE),
]


@pytest.mark.parametrize(("ours", "theirs", "shape"), NATIVE, ids=[str(i) for i in range(len(NATIVE))])
def test_drop_ins_match_tf_keras_own_initializers(ours, theirs, shape) -> None:
    mine = ours()
    dist = mine.spec.resolve(None if mine.spec.fixed_scale else initscale.compute_fans(shape, "keras:native=true"))
    a, b = mine(shape).numpy(), theirs()(shape).numpy()
    assert failures(a, dist, F32) == [] and failures(b, dist, F32) == []
    assert same_distribution(a, b) == []


def test_config_round_trip_and_saving(tmp_path) -> None:
    inits = [istk.initializer(presets.get("tf1.xavier_initializer"), seed=3, layout="keras.lstm"),
             istk.VarianceScaling(2.0, "fan_avg", "normal", seed=4), istk.HeNormal(seed=1), istk.Orthogonal(1.5),
             istk.Zeros(), istk.Constant(0.5), istk.RandomNormal(0.1, 0.2)]
    for init in inits:
        data = json.loads(json.dumps(tf_keras.utils.serialize_keras_object(init)))
        back = tf_keras.utils.deserialize_keras_object(data)
        assert type(back) is type(init) and back.get_config() == init.get_config() and back.spec == init.spec
    path = tmp_path / "m.keras"
    model = tf_keras.Sequential([tf_keras.layers.LSTM(5, input_shape=(4, 6), kernel_initializer=inits[0],
                                                      recurrent_initializer=inits[3]),
                                 tf_keras.layers.Dense(2, kernel_initializer=inits[2])])
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
        json.dumps([inits[0].get_config(), inits[3].get_config(), inits[2].get_config()]))


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
    expected = {"grouped/kernel": ("keras.conv:groups=4", 18, 36),
                "dw/depthwise_kernel": ("keras.depthwise_conv", 9, 18),
                "sep/depthwise_kernel": ("keras.separable_conv.depthwise", 9, 27),
                "sep/pointwise_kernel": ("keras.separable_conv.pointwise", 96, 8),
                "up/kernel": ("keras.conv_transpose", 72, 54), "head/kernel": ("keras.dense", 7, 3)}
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


def test_reinit_seed_is_per_variable_and_reproducible() -> None:
    def build():
        return tf_keras.Sequential([tf_keras.layers.Dense(8, input_shape=(4,), name="a"),
                                    tf_keras.layers.Dense(3, name="b")])

    m1, m2 = build(), build()
    istk.reinit(m1, HE, seed=3)
    istk.reinit(m2, HE, seed=3)
    assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(m1.weights, m2.weights, strict=True))


def test_initscale_keras_is_tf_keras_under_tf_use_legacy_keras() -> None:
    code = "import initscale; print(initscale.keras.__name__)"
    for flag, expected in (("1", "initscale.adapters.tf_keras"), ("", "initscale.adapters.keras")):
        env = {**os.environ, "TF_USE_LEGACY_KERAS": flag}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == expected


# --- far-tail, one-sided and narrow truncated normals (issue 16) -------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize(("a", "b"), TAIL_CASES, ids=TAIL_IDS)
def test_tail_truncated_normals_are_exact(a, b, dtype) -> None:
    # float64 work: erf(−8.5/√2) rounds to −1 there too, so Φ⁻¹ from the representable side.
    out = istk.initializer(tail_spec(a, b), seed=11)(TAIL_SHAPE, dtype)
    assert out.dtype.name == dtype
    assert tail_failures(out.numpy(), a, b) == []
