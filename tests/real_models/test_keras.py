"""A Keras 3 model with the layers of real Keras code — Embedding, MultiHeadAttention (EinsumDense
projections), LayerNormalization, EinsumDense, LSTM, GRU, grouped Conv2D, DepthwiseConv2D,
BatchNormalization, SeparableConv2D, Conv2DTranspose, Dense — against a hand-written table of
forward fans (tests/real_models/README.md), on the Keras backend of this process (KERAS_BACKEND;
roles and fans come from layer classes and shapes, the same on every backend, and the per-backend
sampling is tested by tests/test_keras_adapter.py, which test_keras_backends.py runs per backend).

Keras layouts: Dense kernel (in, out); EinsumDense from its equation (kernel axes summed with
the input are in axes, the rest out axes): MultiHeadAttention q/k/v (d, heads, key_dim) each one
projection d -> heads·key_dim, output (heads, key_dim, d); LSTM/GRU kernel (in, gates·units) and
recurrent_kernel (units, gates·units), per gate (in, units) / (units, units); Conv2D kernel
(kh, kw, in/g, out), per group; DepthwiseConv2D kernel (kh, kw, in, multiplier): fan_in = kh·kw,
fan_out = multiplier·kh·kw; SeparableConv2D depthwise likewise and pointwise (1, 1, in·m, out);
Conv2DTranspose kernel (kh, kw, out, in): forward fan_in = in·kh·kw, fan_out = out·kh·kw.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from _table import SPEC, Expect, coverage_problems, groups, match, report_problems, silent_problems

import initscale

keras = pytest.importorskip("keras")
isk = pytest.importorskip("initscale.adapters.keras")

D, HEADS, KEY = 32, 4, 8


# reinit replaces every weight, so they start at zeros: Keras draws each initializer with one
# compiled sampler per shape, which would double the file's time.
ZK = {"kernel_initializer": "zeros"}
ZR = {**ZK, "recurrent_initializer": "zeros"}
ZD = {"depthwise_initializer": "zeros"}


def _model():
    layers = keras.layers
    tokens, image = keras.Input((8,), dtype="int32"), keras.Input((8, 8, 8))
    x = layers.Embedding(50, D, name="tok")(tokens)
    x = layers.LayerNormalization(name="ln")(x + layers.MultiHeadAttention(HEADS, KEY, name="mha", **ZK)(x, x))
    x = layers.EinsumDense("abc,cde->abde", output_shape=(8, 4, 16), bias_axes="de", name="ein", **ZK)(x)
    x = layers.LSTM(32, return_sequences=True, name="lstm", **ZR)(layers.Reshape((8, 64))(x))
    x = layers.GRU(16, name="gru", **ZR)(x)
    y = layers.Conv2D(32, 3, groups=4, padding="same", name="gconv", **ZK)(image)
    y = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw", **ZD)(y)
    y = layers.BatchNormalization(name="bn")(y)
    y = layers.SeparableConv2D(48, 3, depth_multiplier=2, padding="same", name="sep", pointwise_initializer="zeros",
                               **ZD)(y)
    y = layers.Conv2DTranspose(16, 4, strides=2, padding="same", name="up", **ZK)(y)
    y = layers.GlobalAveragePooling2D()(y)
    return keras.Model([tokens, image], layers.Dense(10, name="head", **ZK)(layers.Concatenate()([x, y])))


K3 = 9
KERAS = (
    Expect("tok/embeddings", "embedding", "(vocab, d)", (50, D), "embeddings"),
    Expect("mha/[qkv]*/kernel", "weight", "(d, heads, key_dim): d -> heads·key_dim", (D, HEADS * KEY),
           "MultiHeadAttention"),
    Expect("mha/attention_output/kernel", "weight", "(heads, key_dim, d)", (HEADS * KEY, D), "MultiHeadAttention"),
    Expect("mha/*/bias", "bias", "(heads, key_dim) / (d,)", None, "biases"),
    Expect("ln/gamma", "norm_scale", "(d,)", None, "norms"),
    Expect("ln/beta", "norm_offset", "(d,)", None, "norms"),
    Expect("bn/gamma", "norm_scale", "(c,)", None, "norms"),
    Expect("bn/beta", "norm_offset", "(c,)", None, "norms"),
    Expect("ein/kernel", "weight", "(c=d, d=4, e=16) in abc,cde->abde", (D, 64), "EinsumDense and Dense"),
    Expect("head/kernel", "weight", "(in=32, out=10)", (32, 10), "EinsumDense and Dense"),
    Expect("lstm/lstm_cell/kernel", "weight", "(in=64, 4·32), per gate", (64, 32), "LSTM and GRU"),
    Expect("lstm/lstm_cell/recurrent_kernel", "weight", "(32, 4·32), per gate", (32, 32), "LSTM and GRU"),
    Expect("lstm/lstm_cell/bias", "gate_bias", "(4·32,), forget gate at 1", None, "LSTM and GRU"),
    Expect("gru/gru_cell/kernel", "weight", "(in=32, 3·16), per gate", (32, 16), "LSTM and GRU"),
    Expect("gru/gru_cell/recurrent_kernel", "weight", "(16, 3·16), per gate", (16, 16), "LSTM and GRU"),
    Expect("gru/gru_cell/bias", "bias", "(2, 3·16): input and recurrent biases (reset_after)", None, "LSTM and GRU"),
    Expect("gconv/kernel", "weight", "(3, 3, in/g=2, out=32), groups 4", (2 * K3, 8 * K3), "convs"),
    Expect("dw/kernel", "weight", "(3, 3, in=32, multiplier=2)", (K3, 2 * K3), "convs"),
    Expect("sep/depthwise_kernel", "weight", "(3, 3, in=64, multiplier=2)", (K3, 2 * K3), "convs"),
    Expect("sep/pointwise_kernel", "weight", "(1, 1, in=128, out=48)", (128, 48), "convs"),
    Expect("up/kernel", "weight", "(4, 4, out=16, in=48) transposed", (48 * 16, 16 * 16), "convs"),
    Expect("ein/bias", "bias", "(heads=4, 16)", None, "biases"),
    *(Expect(f"{layer}/bias", "bias", "(out,)", None, "biases") for layer in ("gconv", "dw", "sep", "up", "head")),
)


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


@functools.cache
def _run():
    model = _model()
    names = [v.path for v in model.trainable_variables]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dry = isk.reinit(model, SPEC, dry_run=True)
    before = {v.path: _np(v) for v in model.trainable_variables}
    real = isk.reinit(model, SPEC, seed=1)
    after = {v.path: _np(v) for v in model.trainable_variables}
    return names, dry, " ".join(str(w.message) for w in caught), real, before, after


def test_table_covers_every_parameter() -> None:
    problems = coverage_problems(KERAS, _run()[0])
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize("group", groups(KERAS))
def test_report_and_draws_match_the_table(group: str) -> None:
    names, dry, warned, real, before, after = _run()
    mine = [n for n in names if any(e.group == group for e in match(KERAS, n))]
    problems = report_problems(KERAS, group, dry, mine)
    problems += silent_problems([e for e in KERAS if e.group == group], [r for r in dry if r.name in mine], warned)
    problems += [f"real call: {p}" for p in report_problems(KERAS, group, real, mine, after, before)]
    assert not problems, "\n" + "\n".join(problems)


def test_a_multi_head_attention_rule_reaches_its_projections() -> None:
    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = isk.reinit(model, {"MultiHeadAttention": SPEC}, dry_run=True)
    problems = [str(w.message) for w in caught]
    for name in (v.path for v in model.trainable_variables):
        entry = match(KERAS, name)[0]
        if entry.group == "MultiHeadAttention":
            row = report[name]
            want = SPEC.resolve(initscale.Fans(*entry.fans)).std
            if not row.touched or row.std is None or abs(row.std / want - 1) > 1e-9:
                problems.append(f"{name}: expected std {want:.6g} from the rule, got {row.reason!r} std {row.std}")
    assert not problems, "\n" + "\n".join(problems)
