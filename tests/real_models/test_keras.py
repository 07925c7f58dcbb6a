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
Conv2DTranspose kernel (kh, kw, out, in), stride s: forward fan_in = in·kh·kw/s² (kh/s taps per
axis reach an output), fan_out = out·kh·kw.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import warnings

import numpy as np
import pytest
from _table import (
    SPEC,
    Expect,
    coverage_problems,
    group_problems,
    groups,
    match,
    report_problems,
    silent_problems,
    value_problems,
)

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
    y = layers.SeparableConv2D(
        48, 3, depth_multiplier=2, padding="same", name="sep", pointwise_initializer="zeros", **ZD
    )(y)
    y = layers.Conv2DTranspose(16, 4, strides=2, padding="same", name="up", **ZK)(y)
    y = layers.GlobalAveragePooling2D()(y)
    return keras.Model([tokens, image], layers.Dense(10, name="head", **ZK)(layers.Concatenate()([x, y])))


K3 = 9
KERAS = (
    Expect("tok/embeddings", "embedding", "(vocab, d)", (50, D), "embeddings"),
    Expect(
        "mha/[qkv]*/kernel", "weight", "(d, heads, key_dim): d -> heads·key_dim", (D, HEADS * KEY), "MultiHeadAttention"
    ),
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
    Expect("up/kernel", "weight", "(4, 4, out=16, in=48) transposed, stride 2", (48 * 16 / 4, 16 * 16), "convs"),
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


# --- keras-hub backbones built from configs (no downloads) ---------------------------------------
#
# keras-hub (requirements/frameworks.txt, group "models", installed with --no-deps: its
# tensorflow-text would pull the full tensorflow) builds its backbones from sizes alone. Its
# layers: ReversibleEmbedding (a Keras Embedding; untied, its reverse_embeddings (d, vocab) is the
# output projection logits = x @ W: in d, out vocab), PositionEmbedding (a learned (seq, d) tensor
# added to the tokens: no matmul, no fans), attention as EinsumDense q/k/v (d, heads, head_dim)
# "bqm,muh->bquh" or Gemma's (heads, d, head_dim) "btd,ndh->btnh" (each one projection
# d -> heads·head_dim) and output (heads, head_dim, d), Dense feed-forward kernels (in, out),
# LlamaLayerNorm (RMS, x · scale), Gemma's RMSNormalization (x · (1 + scale): its scale starts at
# zeros) and Keras LayerNormalization.
V, SEQ, FFH, HD = 50, 16, 64, D // HEADS
KV_HEADS = 2


def _hub():
    if os.environ.get("INITSCALE_REQUIRE", "").strip():  # CI installs it (the "models" pins): never skip there
        import keras_hub
    else:
        keras_hub = pytest.importorskip(
            "keras_hub", reason="pip install --no-deps keras-hub (requirements/frameworks.txt, group models)"
        )
    return keras_hub.models


def _decoder(backbone: str, **extra):
    """A keras-hub decoder backbone of Llama-like sizes: two layers, grouped-query attention."""
    return getattr(_hub(), backbone)(
        vocabulary_size=V,
        num_layers=2,
        num_query_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        hidden_dim=D,
        intermediate_dim=FFH,
        **extra,
    )


def _llama():
    return _decoder("LlamaBackbone")  # tie_word_embeddings=False


def _gpt2():
    return _hub().GPT2Backbone(
        vocabulary_size=V, num_layers=2, num_heads=HEADS, hidden_dim=D, intermediate_dim=FFH, max_sequence_length=SEQ
    )


def _bert():
    return _hub().BertBackbone(
        vocabulary_size=V, num_layers=2, num_heads=HEADS, hidden_dim=D, intermediate_dim=FFH, max_sequence_length=SEQ
    )


def _gemma():
    return _hub().GemmaBackbone(
        vocabulary_size=V,
        num_layers=2,
        num_query_heads=HEADS,
        num_key_value_heads=1,
        hidden_dim=D,
        intermediate_dim=FFH,
        head_dim=HD,
    )


LLAMA = (
    Expect("token_embedding/embeddings", "embedding", "(vocab, d) lookup", (V, D), "embeddings"),
    Expect("token_embedding/reverse_embeddings", "weight", "(d, vocab): logits = x @ W", (D, V), "dense and heads"),
    Expect(
        "transformer_layer_*/self_attention/query/kernel",
        "weight",
        "(d, heads, head_dim): d -> heads·hd",
        (D, HEADS * HD),
        "attention",
    ),
    Expect(
        "transformer_layer_*/self_attention/[kv]*/kernel",
        "weight",
        "(d, kv_heads, head_dim): d -> kv·hd",
        (D, KV_HEADS * HD),
        "attention",
    ),
    Expect(
        "transformer_layer_*/self_attention/attention_output/kernel",
        "weight",
        "(heads, head_dim, d)",
        (HEADS * HD, D),
        "attention",
    ),
    Expect(
        "transformer_layer_*/feedforward_[ig]*_dense/kernel", "weight", "(in=d, out=ff)", (D, FFH), "dense and heads"
    ),
    Expect(
        "transformer_layer_*/feedforward_output_dense/kernel", "weight", "(in=ff, out=d)", (FFH, D), "dense and heads"
    ),
    Expect("*layernorm/scale", "norm_scale", "(d,): x / rms(x) · scale", None, "norms"),
)

GPT2 = (
    Expect("token_embedding/embeddings", "embedding", "(vocab, d) lookup, tied output", (V, D), "embeddings"),
    Expect("position_embedding/embeddings", "pos_embedding", "(seq, d), added", None, "embeddings"),
    Expect(
        "transformer_layer_*/self_attention/[qkv]*/kernel",
        "weight",
        "(d, heads, head_dim): d -> heads·hd",
        (D, HEADS * HD),
        "attention",
    ),
    Expect(
        "transformer_layer_*/self_attention/attention_output/kernel",
        "weight",
        "(heads, head_dim, d)",
        (HEADS * HD, D),
        "attention",
    ),
    Expect("transformer_layer_*/self_attention/*/bias", "bias", "(heads, head_dim) / (d,)", None, "biases"),
    Expect(
        "transformer_layer_*/feedforward_intermediate_dense/kernel",
        "weight",
        "(in=d, out=ff)",
        (D, FFH),
        "dense and heads",
    ),
    Expect(
        "transformer_layer_*/feedforward_output_dense/kernel", "weight", "(in=ff, out=d)", (FFH, D), "dense and heads"
    ),
    Expect("transformer_layer_*/feedforward_*_dense/bias", "bias", "(out,)", None, "biases"),
    Expect("*layer_norm/gamma", "norm_scale", "(d,)", None, "norms"),
    Expect("*layer_norm/beta", "norm_offset", "(d,)", None, "norms"),
)

BERT = (
    Expect("token_embedding/embeddings", "embedding", "(vocab, d) lookup", (V, D), "embeddings"),
    Expect("segment_embedding/embeddings", "embedding", "(2, d) lookup", (2, D), "embeddings"),
    Expect("position_embedding/embeddings", "pos_embedding", "(seq, d), added", None, "embeddings"),
    Expect(
        "transformer_layer_*/self_attention_layer/[qkv]*/kernel",
        "weight",
        "(d, heads, head_dim): d -> heads·hd",
        (D, HEADS * HD),
        "attention",
    ),
    Expect(
        "transformer_layer_*/self_attention_layer/attention_output/kernel",
        "weight",
        "(heads, head_dim, d)",
        (HEADS * HD, D),
        "attention",
    ),
    Expect("transformer_layer_*/self_attention_layer/*/bias", "bias", "(heads, head_dim) / (d,)", None, "biases"),
    Expect(
        "transformer_layer_*/feedforward_intermediate_dense/kernel",
        "weight",
        "(in=d, out=ff)",
        (D, FFH),
        "dense and heads",
    ),
    Expect(
        "transformer_layer_*/feedforward_output_dense/kernel", "weight", "(in=ff, out=d)", (FFH, D), "dense and heads"
    ),
    Expect("pooled_dense/kernel", "weight", "(in=d, out=d)", (D, D), "dense and heads"),
    Expect("*dense/bias", "bias", "(out,)", None, "biases"),
    Expect("*layer_norm/gamma", "norm_scale", "(d,)", None, "norms"),
    Expect("*layer_norm/beta", "norm_offset", "(d,)", None, "norms"),
)

# Gemma's feed-forward: gating and gating_2 (d, ff/2) "btd,df->btf", linear (ff/2, d).
GEMMA = (
    Expect("token_embedding/embeddings", "embedding", "(vocab, d) lookup, tied output", (V, D), "embeddings"),
    Expect(
        "decoder_block_*/attention/query/kernel",
        "weight",
        "(heads, d, head_dim): d -> heads·hd",
        (D, HEADS * HD),
        "attention",
    ),
    Expect("decoder_block_*/attention/[kv]*/kernel", "weight", "(1, d, head_dim): d -> hd", (D, HD), "attention"),
    Expect(
        "decoder_block_*/attention/attention_output/kernel",
        "weight",
        "(heads, head_dim, d)",
        (HEADS * HD, D),
        "attention",
    ),
    Expect("decoder_block_*/ffw_gating*/kernel", "weight", "(d, ff/2)", (D, FFH // 2), "dense and heads"),
    Expect("decoder_block_*/ffw_linear/kernel", "weight", "(ff/2, d)", (FFH // 2, D), "dense and heads"),
    Expect("*norm*/scale", "unit_norm_scale", "(d,): x / rms(x) · (1 + scale)", None, "norms"),
)


def _moe(backbone: str, **extra: int):
    """A keras-hub MoE backbone of Llama-like attention (GQA) and EXPERTS experts, top 2."""
    return _decoder(backbone, num_experts=EXPERTS, top_k=2, **extra)


def _mixtral():
    return _moe("MixtralBackbone")


def _gpt_oss():
    return _moe("GptOssBackbone", head_dim=HD)


EXPERTS = 4
# Attention and norms as in Llama (GQA); the MoE blocks' names carry a process-wide counter, so
# the globs match from the experts layer on.
_GQA = (
    Expect("token_embedding/embeddings", "embedding", "(vocab, d) lookup", (V, D), "embeddings"),
    Expect("token_embedding/reverse_embeddings", "weight", "(d, vocab): logits = x @ W", (D, V), "dense and heads"),
    Expect("*/self_attention/query/kernel", "weight", "(d, heads, head_dim)", (D, HEADS * HD), "attention"),
    Expect("*/self_attention/[kv]*/kernel", "weight", "(d, kv_heads, head_dim)", (D, KV_HEADS * HD), "attention"),
    Expect("*/self_attention/attention_output/kernel", "weight", "(heads, head_dim, d)", (HEADS * HD, D), "attention"),
    Expect("*layernorm/scale", "norm_scale", "(d,): x / rms(x) · scale", None, "norms"),
)
# Mixtral (keras_hub/src/models/mixtral/mixtral_decoder.py, MixtralMoeExperts): gate, up (E, d, ff)
# used per expert as einsum("th,ehm->etm"), down (E, ff, d); the router is a bias-free Dense (d, E).
MIXTRAL = (
    *_GQA,
    Expect("*/sparse_feedforward_gate_dense/kernel", "weight", "router (in=d, out=experts)", (D, EXPERTS), "router"),
    Expect("*/experts/expert_feedforward_[gi]*_dense", "weight", "(experts, in=d, out=ff)", (D, FFH), "experts"),
    Expect("*/experts/expert_feedforward_output_dense", "weight", "(experts, in=ff, out=d)", (FFH, D), "experts"),
)
# GPT-OSS (gpt_oss/gpt_oss_decoder.py, GptOssExperts): gate_up_proj (E, d, 2·ff), gate and up
# interleaved on the last axis (gate = [..., ::2], up = [..., 1::2]), down_proj (E, ff, d), each
# with a per-expert bias; attention with biases and per-head sinks (softmax logits); a router
# Dense (d, E) with a bias.
GPT_OSS = (
    *_GQA,
    Expect("*/self_attention/sinks", "kept", "(heads,) softmax logits", None, "sinks"),
    Expect("*/self_attention/*/bias", "bias", "(heads, head_dim) / (d,)", None, "biases"),
    Expect("*/router/router_dense/kernel", "weight", "router (in=d, out=experts)", (D, EXPERTS), "router"),
    Expect("*/router/router_dense/bias", "bias", "(experts,)", None, "biases"),
    Expect("*/experts/gate_up_proj", "weight", "(experts, in=d, out=2·ff interleaved)", (D, FFH), "experts"),
    Expect("*/experts/down_proj", "weight", "(experts, in=ff, out=d)", (FFH, D), "experts"),
    Expect("*/experts/*_proj_bias", "bias", "(experts, out)", None, "biases"),
)

HUB = {
    "llama": (_llama, LLAMA),
    "gpt2": (_gpt2, GPT2),
    "bert": (_bert, BERT),
    "gemma": (_gemma, GEMMA),
    "mixtral": (_mixtral, MIXTRAL),
    "gpt_oss": (_gpt_oss, GPT_OSS),
}


@functools.cache
def _hub_run(name: str):
    model = HUB[name][0]()
    names = [v.path for v in model.trainable_variables]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dry = isk.reinit(model, SPEC, dry_run=True)
    before = {v.path: _np(v) for v in model.trainable_variables}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dry run's warnings, again
        real = isk.reinit(model, SPEC, seed=2)
    after = {v.path: _np(v) for v in model.trainable_variables}
    return names, dry, " ".join(str(w.message) for w in caught), real, before, after


@pytest.mark.parametrize("name", sorted(HUB))
def test_hub_table_covers_every_variable(name: str) -> None:
    problems = coverage_problems(HUB[name][1], _hub_run(name)[0])
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize(("name", "group"), [(n, g) for n in sorted(HUB) for g in groups(HUB[n][1])])
def test_hub_report_and_draws_match_the_table(name: str, group: str) -> None:
    problems = group_problems(HUB[name][1], group, _hub_run(name))
    assert not problems, "\n" + "\n".join(problems)


def test_hub_position_embeddings_are_named_in_the_one_spec_warning() -> None:
    warned = _hub_run("gpt2")[2]
    assert "PositionEmbedding (1: 'position_embedding/embeddings')" in warned, warned


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("gpt2", "MultiHeadAttention"),
        ("bert", "MultiHeadAttention"),
        ("llama", "LlamaAttention"),
        ("gemma", "CachedGemmaAttention"),
    ],
)
def test_a_hub_attention_rule_reaches_its_projections(name: str, rule: str) -> None:
    """keras-hub's attention layers (CachedMultiHeadAttention subclasses MultiHeadAttention) hold
    their kernels in EinsumDense sublayers: a class rule on the attention reaches them, with the
    table's fans, and nothing else."""
    build, table = HUB[name]
    model = build()
    report = isk.reinit(model, {rule: SPEC}, dry_run=True)
    problems = []
    for row in report:
        entry = match(table, row.name)[0]
        by_rule = row.reason == f"rule {rule!r}"
        if entry.group == "attention":
            want = SPEC.resolve(initscale.Fans(*entry.fans)).std
            if not by_rule or abs(row.std / want - 1) > 1e-9:
                problems.append(f"{row.name}: expected std {want:.6g} from the rule, got {row.reason!r} std {row.std}")
        elif by_rule:
            problems.append(f"{row.name}: not an attention projection, but set by {rule!r}")
    assert not problems, "\n" + "\n".join(problems)


def test_a_block_rule_reaches_its_kernels_and_leaves_its_norms_to_the_defaults() -> None:
    """A rule on a keras-hub block (TransformerEncoder) sets every kernel inside it, through its
    MultiHeadAttention and Dense sublayers; its LayerNormalization's gamma/beta keep the norm
    defaults (ones/zeros) and its biases zeros, as a rule on a layer never sets its biases."""
    report = isk.reinit(_bert(), {"TransformerEncoder": SPEC}, dry_run=True)
    for row in report:
        entry = match(BERT, row.name)[0]
        inside = row.name.startswith("transformer_layer_")
        if inside and entry.role == "weight":
            assert row.reason == "rule 'TransformerEncoder'" and row.fan_in == entry.fans[0], (row.name, row.reason)
        elif entry.role in ("norm_scale", "norm_offset"):
            assert row.reason.startswith("default: norm"), (row.name, row.reason)
        elif entry.role == "bias":
            assert row.reason == "default: biases -> zeros", (row.name, row.reason)
        else:
            assert row.reason != "rule 'TransformerEncoder'", row.name


# --- layers initscale does not know: never a guessed layout ------------------------------------


class Mixer(keras.layers.Layer):
    """A weight of 2 axes whose layout only its author knows (x @ w: (in=6, out=4), say)."""

    def __init__(self, shape=(6, 4), **kwargs):
        super().__init__(**kwargs)
        self.shape = shape

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=self.shape, initializer=keras.initializers.Constant(3.0))
        self.bias = self.add_weight(name="bias", shape=self.shape[-1:], initializer=keras.initializers.Constant(3.0))

    def call(self, x):
        return x @ self.w + self.bias


class ScaleNorm(keras.layers.Layer):
    """A norm known by its class name only (…Norm): x / rms(x) · scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x * keras.ops.rsqrt(keras.ops.mean(x * x, axis=-1, keepdims=True) + 1e-6) * self.scale


class OffsetRMSNorm(ScaleNorm):
    """Gemma's RMSNorm: the scale is used as 1 + scale, so its init is zeros."""

    def call(self, x):
        return x * keras.ops.rsqrt(keras.ops.mean(x * x, axis=-1, keepdims=True) + 1e-6) * (1.0 + self.scale)


class Whitening(keras.layers.Layer):
    """A norm known by duck typing only: an epsilon and a per-feature gamma and beta."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = 1e-5

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return (x - keras.ops.mean(x, axis=-1, keepdims=True)) * self.gamma + self.beta


def _mixer_model():
    inp = keras.Input((6,))
    x = Mixer(name="mixer")(inp)
    x = Whitening(name="white")(OffsetRMSNorm(name="unit")(ScaleNorm(name="norm")(x)))
    return keras.Model(inp, keras.layers.Dense(2, name="head", **ZK)(x))


def test_an_unknown_layers_weight_with_a_fan_based_rule_is_an_error_before_writing() -> None:
    model = _mixer_model()
    before = {v.path: _np(v) for v in model.trainable_variables}
    for rules in ({"Mixer": SPEC}, {"mixer/w": SPEC}, {"*/w": SPEC}):
        with pytest.raises(
            ValueError,
            match=r"(?s)'mixer/w' \(shape \(6, 4\), in Mixer\).*"
            r"\{'Mixer': initscale\.Rule\(VarianceScaling\(scale=2\.0\), layout=",
        ):
            isk.reinit(model, {**rules, "Dense": SPEC}, seed=0)
        assert all(np.array_equal(_np(v), before[v.path]) for v in model.trainable_variables), rules
    report = isk.reinit(model, {"Mixer": initscale.Normal(0.5)}, seed=0)  # a fixed scale needs no fans
    assert report["mixer/w"].touched and report["mixer/w"].fan_in is None


def test_one_spec_warns_naming_the_unknown_layers_weights() -> None:
    model = _mixer_model()
    with pytest.warns(UserWarning, match=r"left 1 parameter\(s\) of 2 or more axes untouched.*Mixer \(1: 'mixer/w'\)"):
        report = isk.reinit(model, SPEC, seed=0)
    assert not report["mixer/w"].touched and np.all(_np(model.get_layer("mixer").w) == 3.0)


def test_a_rule_says_the_layout_of_an_unknown_layer() -> None:
    model = _mixer_model()
    report = isk.reinit(model, {"Mixer": initscale.Rule(SPEC, layout="keras.dense")}, seed=4)
    row = report["mixer/w"]  # x @ w: (in=6, out=4)
    want = SPEC.resolve(initscale.Fans(6, 4))
    assert (row.layout, row.fan_in, row.fan_out, row.std) == ("keras.dense", 6, 4, want.std)
    values = _np(model.get_layer("mixer").w)
    assert np.all(np.abs(values) <= want.high) and len(np.unique(values)) == values.size  # drawn, within ±2σ
    assert report["mixer/bias"].spec == initscale.Zeros()  # a class rule leaves the biases to the defaults
    transposed = isk.reinit(model, {"Mixer": initscale.Rule(SPEC, layout="torch.linear")}, dry_run=True)
    assert (transposed["mixer/w"].fan_in, transposed["mixer/w"].fan_out) == (4, 6)  # the rule's layout wins


def test_a_rules_layout_gives_the_drawn_std() -> None:
    """The values drawn under Rule(layout=...) have the std of that layout's fans (the second moment
    within z = 4.5 of its sampling sd, _table.value_problems), and not those of the other reading."""
    inp = keras.Input((256,))
    model = keras.Model(inp, Mixer((256, 64), name="mixer")(inp))  # x @ w: in 256, out 64
    report = isk.reinit(model, {"Mixer": initscale.Rule(SPEC, layout="keras.dense")}, seed=5)
    row, values = report["mixer/w"], _np(model.get_layer("mixer").w)
    assert (row.fan_in, row.fan_out) == (256, 64) and value_problems(row, values) == []
    misread = dataclasses.replace(row, fan_in=64, fan_out=256, std=SPEC.resolve(initscale.Fans(64, 256)).std)
    assert value_problems(misread, values) != []  # mutation: the (out, in) reading, std 2x, is caught


def test_norms_by_class_name_and_by_what_they_hold() -> None:
    with pytest.warns(UserWarning, match="Mixer"):
        report = isk.reinit(_mixer_model(), SPEC, dry_run=True)
    assert report["norm/scale"].spec == initscale.Ones(), report["norm/scale"].reason  # ...Norm
    assert report["unit/scale"].spec == initscale.Zeros(), report["unit/scale"].reason  # 1 + scale
    assert "1 +" in report["unit/scale"].reason
    assert report["white/gamma"].spec == initscale.Ones(), report["white/gamma"].reason  # epsilon, 1-D
    assert report["white/beta"].spec == initscale.Zeros() and "norm offset" in report["white/beta"].reason


def test_check_knows_a_fresh_gemma_norm_starts_at_zeros() -> None:
    """initscale.keras.check without rules: a fresh Gemma's RMSNormalization scales are zeros (used
    as 1 + scale), which is right, not a norm_scale_not_one; a scale set to ones (a gain of 2) is
    flagged."""
    model = _gemma()
    fresh = isk.check(model)
    assert not fresh.flags, fresh.flags
    layer = model.get_layer("final_normalization")
    layer.scale.assign(keras.ops.ones(layer.scale.shape))
    assert "final_normalization/scale" in isk.check(model).flags


def _clip():
    m = _hub()
    return m.CLIPBackbone(
        m.CLIPVisionEncoder(
            patch_size=4, hidden_dim=D, num_layers=1, num_heads=HEADS, intermediate_dim=FFH, image_shape=(16, 16, 3)
        ),
        m.CLIPTextEncoder(
            vocabulary_size=V,
            embedding_dim=D,
            hidden_dim=D,
            num_layers=1,
            num_heads=HEADS,
            intermediate_dim=FFH,
            max_sequence_length=8,
        ),
        projection_dim=24,
    )


def _t5():
    return _hub().T5Backbone(
        vocabulary_size=V, num_layers=1, num_heads=HEADS, hidden_dim=D, intermediate_dim=FFH, key_value_dim=HD
    )


@pytest.mark.parametrize(
    ("build", "colliding", "qualified"),
    [
        (_clip, "encoder_block_0/attention/query/kernel", ("clip_vision_encoder/", "clip_text_encoder/")),
        (_t5, "self_attention/embeddings", ("transformer_encoder_layer_0/", "transformer_decoder_layer_0/")),
    ],
    ids=["clip", "t5"],
)
def test_hub_variables_that_share_a_path_get_names_of_their_own(build, colliding, qualified) -> None:
    """keras-hub's CLIP builds its text and vision encoders as models of their own, so both hold
    ``encoder_block_0/attention/query/kernel`` (19 paths twice); T5's encoder and decoder each hold
    a relative attention bias at ``self_attention/embeddings``. Each variable gets its own name
    in the report (the enclosing layer that tells them apart first), and each is reached alone."""
    model = build()
    paths = [v.path for v in model.trainable_variables]
    assert paths.count(colliding) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one spec's notes (position embeddings kept, ...)
        report = isk.reinit(model, SPEC, dry_run=True)
    names = [r.name for r in report]
    assert len(names) == len(set(names)) == len(paths)
    assert [n for n in names if n.endswith("/" + colliding)] == [q + colliding for q in qualified]
    one = qualified[1] + colliding
    variable = next(v for v in model.trainable_variables if v.path == colliding and v is not _first(model, colliding))
    isk.reinit(model, {one: initscale.Constant(0.25)}, seed=0)
    assert (_np(variable) == 0.25).all() and not (_np(_first(model, colliding)) == 0.25).all()


def _first(model, path):
    return next(v for v in model.trainable_variables if v.path == path)


def test_hub_interleaved_experts_refuse_an_orthogonal_block_per_projection() -> None:
    """keras-hub GPT-OSS's gate_up_proj interleaves gate and up: an orthogonal spec on it is refused
    before anything is written; the whole-expert layout the message names works."""
    model = _gpt_oss()
    before = {v.path: _np(v) for v in model.trainable_variables}
    with pytest.raises(ValueError, match=r"interleaved along its out axis .*in_axes=1, out_axes=2, batch_axes=0"):
        isk.reinit(model, {"*experts/gate_up_proj": initscale.Orthogonal()}, seed=0)
    assert all(np.array_equal(_np(v), before[v.path]) for v in model.trainable_variables)
    whole = initscale.Rule(initscale.Orthogonal(), layout=initscale.Layout(in_axes=1, out_axes=2, batch_axes=0))
    isk.reinit(model, {"*experts/gate_up_proj": whole}, seed=0)
    w = next(_np(v) for v in model.trainable_variables if v.path.endswith("experts/gate_up_proj"))[1]
    # float32 storage of orthonormal rows: inner products off by at most 2u + u² (u = 2⁻²⁴), plus the
    # float32 QR's own error (1e-4, as in tests/test_adapters.py)
    assert np.allclose(w @ w.T, np.eye(D), atol=2 * 2.0**-24 + 1e-4)


def test_the_experts_table_catches_fused_gates_read_as_one_projection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted bug: GPT-OSS's gate_up_proj read as one projection (fan_out 2·ff): the table check
    names it; with the real reading it passes (test_hub_report_and_draws_match_the_table)."""
    from initscale.adapters import _keras_layers

    monkeypatch.setitem(
        _keras_layers.EXPERT_LAYERS, "GptOssExperts", {"gate_up_proj": (1, False), "down_proj": (1, False)}
    )
    model = _gpt_oss()
    report = isk.reinit(model, SPEC, dry_run=True)
    names = [v.path for v in model.trainable_variables]
    problems = report_problems(GPT_OSS, "experts", report, names)
    assert problems and all("gate_up_proj" in p and f"fans expected ({D}, {FFH})" in p for p in problems), problems


def test_hub_qwen3_5_gated_query_gets_the_fans_of_each_projection(monkeypatch: pytest.MonkeyPatch) -> None:
    """keras-hub's Qwen 3.5 attention computes its query and its output gate in one EinsumDense,
    ``query`` ("bqm,muh->bquh", head_dim · 2 per head), and splits each head in two
    (qwen3_5_attention.py, Qwen3_5Attention.call): each projection has fan_out heads · head_dim.
    Planted bug: without the table entry the query kernel shows fan_out twice that."""
    head_dim = 8

    def build():
        return _decoder(
            "Qwen3_5Backbone",
            head_dim=head_dim,
            layer_types=["linear_attention", "full_attention"],
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
            linear_conv_kernel_dim=4,
        )

    def query_fans():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the gated delta net's conv kernel, its packed in_proj_qkv
            report = isk.reinit(build(), initscale.presets.get("glorot_uniform"), dry_run=True)
        row = report["transformer_layer_1/self_attention/query/kernel"]
        return row.fan_in, row.fan_out

    assert query_fans() == (D, HEADS * head_dim)
    from initscale.adapters import _keras_layers

    monkeypatch.setattr(_keras_layers, "STACKED_EINSUMS", {})
    assert query_fans() == (D, 2 * HEADS * head_dim)


@pytest.mark.parametrize("build", [_mixtral, _gpt_oss], ids=["mixtral", "gpt_oss"])
def test_hub_check_reads_the_expert_banks_as_reinit_draws_them(build) -> None:
    """``check`` walks as ``reinit`` does: right after ``reinit(model, SPEC)`` nothing is flagged,
    and an expert bank planted at 3x its std is flagged by name."""
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # attention sinks, packed projections: said elsewhere
        isk.reinit(model, SPEC, seed=0)
        fresh = isk.check(model, rules=SPEC)
        assert not fresh.flags, fresh.flags
        bank = next(
            v
            for v in model.trainable_variables
            if v.path.endswith(("experts/gate_up_proj", "_dense")) and "/experts/" in v.path
        )
        bank.assign(bank * 3)
        assert "std_off" in isk.check(model, rules=SPEC).flags.get(bank.path, ()), bank.path


def _dinov2_swiglu():
    return _hub().DINOV2Backbone(
        patch_size=4,
        num_layers=1,
        hidden_dim=D,
        num_heads=HEADS,
        intermediate_dim=FFH,
        use_swiglu_ffn=True,
        image_shape=(16, 16, 3),
        position_embedding_shape=(16, 16, 3),
    )


def _vitdet():
    return _hub().ViTDetBackbone(
        hidden_size=D,
        num_layers=2,
        intermediate_dim=FFH,
        num_heads=HEADS,
        global_attention_layer_indices=[1],
        image_shape=(32, 32, 3),
        patch_size=4,
        num_output_channels=16,
        window_size=4,
    )


@pytest.mark.parametrize(
    ("build", "name", "blocks"),
    [
        (_dinov2_swiglu, r"mlp/weights_in/kernel", 2),
        (_vitdet, r"multi_head_attention_with_relative_pe(_\d+)?/dense(_\d+)?/kernel", 3),
    ],
    ids=["dinov2_swiglu", "vitdet"],
)
def test_hub_dense_kernels_their_layer_splits_get_the_fans_of_each_projection(
    build, name: str, blocks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DINOv2's SwiGLU ``weights_in`` (ops.split(x, 2)) and ViTDet's (and SAM's) attention ``qkv``
    (reshaped to (.., 3, heads, key_dim), unstacked) are Dense kernels stacking equal projections,
    read from their enclosing layer's class and attribute (_keras_layers.STACKED_DENSES): each
    projection's fan_out is a 1/blocks of the output. Planted bug: without the table, the whole."""
    from initscale.adapters import _keras_layers

    def fans():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = isk.reinit(build(), initscale.presets.get("glorot_uniform"), dry_run=True)
        # Keras numbers auto-named layers per process: the first kernel of this layer, by pattern
        row = next(r for r in report.rows if re.search(name, r.name) and r.shape[1] > D)
        return row.fan_in, row.fan_out, row.shape[1]

    fan_in, fan_out, width = fans()
    assert fan_in == D and fan_out == width // blocks
    monkeypatch.setattr(_keras_layers, "STACKED_DENSES", {})
    assert fans()[1] == width


def test_an_unbuilt_layer_inside_a_built_model_is_named_in_a_warning() -> None:
    # keras-hub's SAMBackbone is built while its mask decoder is not: it has no variables yet, so a
    # reinit cannot reach them; the warning names it and the fix instead of leaving it out silently.
    class TwoHeads(keras.Model):
        def __init__(self):
            super().__init__()
            self.used, self.unused = keras.layers.Dense(8), keras.layers.Dense(4)

        def call(self, x):
            return self.used(x)

    model = TwoHeads()
    model(np.zeros((1, 3), "float32"))
    with pytest.warns(UserWarning, match=r"1 layer\(s\) inside the built model are not built.*\(Dense\)"):
        report = isk.reinit(model, initscale.presets.get("he_normal"), dry_run=True)
    assert all("unused" not in r.name for r in report.rows)
