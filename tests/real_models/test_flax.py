"""Flax models against hand-written forward-fan tables (tests/real_models/README.md): a linen
transformer block and CNN whose modules all have explicit names (``name="attn"``, the way
real code is written), and the same layers in nnx.

Flax layouts: Dense kernel (in, out); Conv kernel (kh, kw, in/g, out) with per-group fans
fan_in = in/g·kh·kw, fan_out = out/g·kh·kw; ConvTranspose kernel (kh, kw, in, out) with stride s:
forward fan_in = in·kh·kw/s² (kh/s taps per axis reach an output), fan_out = out·kh·kw; attention
q/k/v kernels (in, heads, head_dim), each one projection in -> heads·head_dim, and out
(heads, head_dim, out); Embed (num_embeddings, features).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from _table import SPEC, Expect, coverage_problems, group_problems, groups, match

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
isj = pytest.importorskip("initscale.adapters.jax")

D, HEADS, FF, VOCAB = 32, 4, 64, 50
HD = D // HEADS


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.MultiHeadDotProductAttention(num_heads=HEADS, qkv_features=D, name="attn")(nn.LayerNorm(name="ln1")(x))
        x = x + h
        h = nn.Dense(D, name="fc2")(nn.gelu(nn.Dense(FF, name="fc1")(nn.LayerNorm(name="ln2")(x))))
        return x + h


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, img, tokens):
        x = nn.Conv(32, (3, 3), name="stem")(img)
        x = nn.Conv(32, (3, 3), feature_group_count=4, name="grouped")(x)
        x = nn.Conv(64, (3, 3), feature_group_count=32, name="dw")(x)  # depthwise, multiplier 2
        x = nn.BatchNorm(use_running_average=True, name="bn")(x)
        x = nn.ConvTranspose(16, (4, 4), strides=(2, 2), name="up")(x)
        x = x.mean((1, 2)) + nn.Embed(VOCAB, 16, name="tok")(tokens)
        return nn.Dense(10, name="head")(x)


class Linen(nn.Module):
    @nn.compact
    def __call__(self, x, img, tokens):
        return Block(name="block")(x).sum() + ConvNet(name="cnn")(img, tokens).sum()


LINEN = (
    Expect(
        "params/block/attn/[qkv]*/kernel",
        "weight",
        "(in=d, heads, head_dim): one projection d -> d",
        (D, D),
        "attention (named)",
    ),
    Expect("params/block/attn/out/kernel", "weight", "(heads, head_dim, out=d)", (D, D), "attention (named)"),
    Expect("params/block/attn/*/bias", "bias", "(heads, head_dim) / (out,)", None, "biases"),
    Expect("params/block/fc1/kernel", "weight", "(in=d, out=ff)", (D, FF), "Dense"),
    Expect("params/block/fc2/kernel", "weight", "(in=ff, out=d)", (FF, D), "Dense"),
    Expect("params/cnn/head/kernel", "weight", "(in=16, out=10)", (16, 10), "Dense"),
    Expect("params/block/fc[12]/bias", "bias", "(out,)", None, "biases"),
    Expect("params/cnn/*[!n]/bias", "bias", "(out,)", None, "biases"),
    Expect("params/block/ln[12]/scale", "norm_scale", "(d,)", None, "norms (named)"),
    Expect("params/block/ln[12]/bias", "norm_offset", "(d,)", None, "norms (named)"),
    Expect("params/cnn/bn/scale", "norm_scale", "(c,)", None, "norms (named)"),
    Expect("params/cnn/bn/bias", "norm_offset", "(c,)", None, "norms (named)"),
    Expect("batch_stats/cnn/bn/*", "state", "(c,) running statistics", None, "batch stats"),
    Expect("params/cnn/stem/kernel", "weight", "(3, 3, in=8, out=32)", (72, 288), "convs"),
    Expect(
        "params/cnn/up/kernel", "weight", "(4, 4, in=64, out=16) transposed, stride 2", (64 * 16 / 4, 16 * 16), "convs"
    ),
    Expect(
        "params/cnn/grouped/kernel",
        "weight",
        "(3, 3, in/g=8, out=32), groups 4",
        (72, 72),
        "grouped and depthwise convs (named)",
    ),
    Expect(
        "params/cnn/dw/kernel",
        "weight",
        "(3, 3, in/g=1, out=64), groups 32: multiplier 2",
        (9, 18),
        "grouped and depthwise convs (named)",
    ),
    Expect("params/cnn/tok/embedding", "embedding", "(vocab, features)", (VOCAB, 16), "embeddings"),
)


class NnxModel(nnx.Module):
    def __init__(self, rngs):
        self.ln1 = nnx.LayerNorm(D, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=HEADS, in_features=D, qkv_features=D, decode=False, rngs=rngs)
        self.rms = nnx.RMSNorm(D, rngs=rngs)
        self.fc1 = nnx.Linear(D, FF, rngs=rngs)
        self.fc2 = nnx.Linear(FF, D, rngs=rngs)
        self.emb = nnx.Embed(VOCAB, D, rngs=rngs)
        self.conv = nnx.Conv(D, D, (3, 3), feature_group_count=4, rngs=rngs)
        self.dw = nnx.Conv(D, 2 * D, (3, 3), feature_group_count=D, rngs=rngs)  # depthwise, multiplier 2
        self.bn = nnx.BatchNorm(2 * D, rngs=rngs)
        self.up = nnx.ConvTranspose(2 * D, 16, (4, 4), strides=(2, 2), rngs=rngs)

    def __call__(self, x, img, tokens):
        h = x + self.attn(self.ln1(x))
        h = h + self.fc2(nnx.gelu(self.fc1(self.rms(h))))
        y = self.up(self.bn(self.dw(self.conv(img)), use_running_average=True))
        return h.sum() + y.sum() + self.emb(tokens).sum()


NNX = (
    Expect("attn/[qkv]*/kernel", "weight", "(in=d, heads, head_dim): one projection d -> d", (D, D), "attention"),
    Expect("attn/out/kernel", "weight", "(heads, head_dim, out=d)", (D, D), "attention"),
    Expect("fc1/kernel", "weight", "(in=d, out=ff)", (D, FF), "Linear"),
    Expect("fc2/kernel", "weight", "(in=ff, out=d)", (FF, D), "Linear"),
    Expect("conv/kernel", "weight", "(3, 3, in/g=8, out=32), groups 4", (72, 72), "convs"),
    Expect("dw/kernel", "weight", "(3, 3, in/g=1, out=64), groups 32: multiplier 2", (9, 18), "convs"),
    Expect("up/kernel", "weight", "(4, 4, in=64, out=16) transposed, stride 2", (64 * 16 / 4, 16 * 16), "convs"),
    Expect("emb/embedding", "embedding", "(vocab, features)", (VOCAB, D), "embeddings"),
    Expect("[acfdu]*/bias", "bias", "(out,) / (heads, head_dim)", None, "biases"),
    Expect("ln1/scale", "norm_scale", "(d,)", None, "norms"),
    Expect("ln1/bias", "norm_offset", "(d,)", None, "norms"),
    Expect("rms/scale", "norm_scale", "(d,)", None, "norms"),
    Expect("bn/scale", "norm_scale", "(c,)", None, "norms"),
    Expect("bn/bias", "norm_offset", "(c,)", None, "norms"),
)


# XLA compiles once per shape on the CPU: the shapes are abstract (jax.eval_shape traces the
# forward pass without compiling it), the values random, and linen and nnx share kernel shapes, so
# the samplers compile once for both models.
def _values(tree):
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), tree)


def _linen_inputs():
    return jnp.zeros((1, 8, D)), jnp.zeros((1, 8, 8, 8)), jnp.zeros((1,), jnp.int32)


def _linen():
    return _values(jax.eval_shape(Linen().init, jax.random.key(0), *_linen_inputs()))


def _nnx():
    graph, state = nnx.split(nnx.eval_shape(lambda: NnxModel(nnx.Rngs(0))))
    model = nnx.merge(graph, _values(state))
    out = nnx.eval_shape(
        lambda m: m(jnp.zeros((1, 8, D)), jnp.zeros((1, 8, 8, D)), jnp.zeros((1,), jnp.int32)), model
    )  # the forward pass the table describes
    assert out.shape == ()
    return model


MODELS = {"linen": (_linen, LINEN), "nnx": (_nnx, NNX)}
# (model, group) -> the reason of a strict xfail; none is left. A linen call passes module= and
# example_inputs=, as initscale.jax.reinit requires for named modules (without them the layouts
# are guessed from names, flagged and warned about: tests/test_jax_reinit.py).
KNOWN: dict[tuple[str, str], str] = {}


def _flat(tree) -> dict:
    """``/``-joined leaf paths, as initscale.jax.reinit names them."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = []
        for entry in path:
            if isinstance(entry, jax.tree_util.GetAttrKey):
                if entry.name != "value":
                    parts.append(entry.name)
            elif isinstance(entry, jax.tree_util.SequenceKey):
                parts.append(str(entry.idx))
            else:
                parts.append(str(getattr(entry, "key", entry)))
        out["/".join(parts)] = leaf
    return out


@functools.cache
def _run(model: str):
    build, _ = MODELS[model]
    tree = build()
    before = _flat(nnx.state(tree, nnx.Param) if model == "nnx" else tree)
    how = {"module": Linen(), "example_inputs": _linen_inputs()} if model == "linen" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, dry = isj.reinit(tree, SPEC, jax.random.key(1), dry_run=True, **how)
    new, real = isj.reinit(tree, SPEC, jax.random.key(2), **how)
    return list(before), dry, " ".join(str(w.message) for w in caught), real, before, _flat(new)


def _cases():
    for model, (_, table) in MODELS.items():
        for group in groups(table):
            reason = KNOWN.get((model, group))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(model, group, marks=marks, id=f"{model}-{group.replace(' ', '_')}")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_table_covers_every_parameter(model: str) -> None:
    problems = coverage_problems(MODELS[model][1], _run(model)[0])
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize(("model", "group"), list(_cases()))
def test_report_and_draws_match_the_table(model: str, group: str) -> None:
    problems = group_problems(MODELS[model][1], group, _run(model))
    assert not problems, "\n" + "\n".join(problems)


def test_a_rule_on_an_enclosing_module_reaches_its_kernels_not_its_norms() -> None:
    """linen: a class rule on the Block sets the kernels of every module inside it (attention,
    Dense) with their fans; its LayerNorms keep the norm defaults (a fan-based spec has no fans for
    a scale), and the ConvNet outside is left alone."""
    _, report = isj.reinit(
        _linen(), {"Block": SPEC}, jax.random.key(1), dry_run=True, module=Linen(), example_inputs=_linen_inputs()
    )
    problems = []
    for row in report:
        entry = match(LINEN, row.name)[0]
        inside = row.name.startswith("params/block/")
        if inside and entry.role == "weight":
            if row.reason != "rule 'Block'" or (row.fan_in, row.fan_out) != entry.fans:
                problems.append(f"{row.name}: {row.reason!r}, fans {row.fan_in}/{row.fan_out}, expected {entry.fans}")
        elif row.reason == "rule 'Block'":
            problems.append(f"{row.name} ({entry.role}): set by 'Block'")
        elif entry.role in ("norm_scale", "norm_offset") and not row.reason.startswith("default: norm"):
            problems.append(f"{row.name}: {row.reason!r}")
    assert not problems, "\n" + "\n".join(problems)
