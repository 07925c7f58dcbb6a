"""Fans and layouts: hand-derived values for every layer kind, properties, and bad input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import initscale
from initscale import Fans, Layout, compute_fans, layouts

# (layout, shape, fan_in, fan_out) — derived by hand from each layer's weight layout.
CASES = [
    ("torch", (64, 32, 3, 3), 32 * 9, 64 * 9),
    ("torch.linear", (10, 20), 20, 10),
    ("torch.conv:groups=4", (64, 8, 3, 3), 8 * 9, 64 // 4 * 9),  # in/groups already in the weight
    ("torch.depthwise_conv", (32, 1, 5, 5), 25, 25),  # one output per input channel
    ("torch.depthwise_conv:multiplier=2", (64, 1, 3), 3, 2 * 3),
    ("torch.conv_transpose", (16, 32, 3, 3), 16 * 9, 32 * 9),  # weight (in, out/g, k)
    ("torch.conv_transpose:groups=2", (16, 32, 3, 3), 8 * 9, 32 * 9),
    ("torch.embedding", (1000, 64), 1000, 64),
    ("torch.mha_in_proj", (3 * 256, 256), 256, 256),
    ("torch.lstm", (4 * 128, 64), 64, 128),
    ("torch.gru", (3 * 128, 128), 128, 128),
    ("torch.rnn", (128, 64), 64, 128),
    ("keras", (3, 3, 16, 32), 16 * 9, 32 * 9),
    ("keras.dense", (20, 10), 20, 10),
    ("keras.conv", (5, 8, 4), 5 * 8, 5 * 4),
    ("keras.conv_transpose", (3, 3, 32, 16), 16 * 9, 32 * 9),  # kernel (k, out, in)
    ("keras.depthwise_conv", (3, 3, 64, 2), 9, 2 * 9),
    ("keras.separable_conv.depthwise", (3, 3, 64, 1), 9, 9),
    ("keras.separable_conv.pointwise", (1, 1, 64, 128), 64, 128),
    ("keras.embedding", (1000, 64), 1000, 64),
    ("keras.lstm", (64, 4 * 128), 64, 128),
    ("keras.lstm", (128, 4 * 128), 128, 128),  # recurrent_kernel
    ("keras.gru", (64, 3 * 32), 64, 32),
    ("keras.simple_rnn", (64, 32), 64, 32),
    ("flax", (3, 3, 16, 32), 16 * 9, 32 * 9),
    ("jax", (16, 32), 16, 32),
    ("flax.dense", (16, 32), 16, 32),
    ("flax.conv:groups=2", (3, 3, 8, 32), 8 * 9, 16 * 9),
    ("flax.conv_transpose", (3, 3, 16, 32), 16 * 9, 32 * 9),
    ("flax.embed", (1000, 64), 1000, 64),
    ("flax.lstm", (64, 128), 64, 128),
]


@pytest.mark.parametrize(("layout", "shape", "fan_in", "fan_out"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_forward_fans(layout, shape, fan_in, fan_out) -> None:
    fans = compute_fans(shape, layout)
    assert (fans.fan_in, fans.fan_out) == (fan_in, fan_out)


NATIVE = [
    # torch _calculate_fan_in_and_fan_out: fan_in = size(1)·rf, fan_out = size(0)·rf
    ("torch.conv_transpose:native=true", (16, 32, 3, 3), 32 * 9, 16 * 9),
    ("torch.conv:groups=4,native=true", (64, 8, 3, 3), 8 * 9, 64 * 9),
    ("torch.lstm:native=true", (512, 64), 64, 512),
    ("torch.mha_in_proj:native=true", (768, 256), 256, 768),
    ("torch.embedding:native=true", (1000, 64), 64, 1000),
    # keras compute_fans: (*k, in, out); rank 0 -> (1, 1); rank 1 -> (n, n)
    ("keras:native=true", (), 1, 1),
    ("keras:native=true", (5,), 5, 5),
    ("keras.depthwise_conv:native=true", (3, 3, 64, 2), 64 * 9, 2 * 9),
    ("keras.conv_transpose:native=true", (3, 3, 32, 16), 32 * 9, 16 * 9),
    ("keras.lstm:native=true", (64, 512), 64, 512),
    # jax _compute_fans; flax Embed uses out_axis=0 on the vocabulary axis: fan_in = features
    ("flax.embed:native=true", (1000, 64), 64, 64),
    ("jax:native=true", (3, 3, 4, 8), 36, 72),
]


@pytest.mark.parametrize(("layout", "shape", "fan_in", "fan_out"), NATIVE, ids=[f"{c[0]}-{c[1]}" for c in NATIVE])
def test_native_fans(layout, shape, fan_in, fan_out) -> None:
    fans = compute_fans(shape, layout)
    assert (fans.fan_in, fans.fan_out) == (fan_in, fan_out)


def test_every_named_kind_resolves_and_documents_itself() -> None:
    shapes = {
        "torch.depthwise_conv": (8, 1, 3),
        "torch.mha_in_proj": (12, 4),
        "torch.lstm": (8, 3),
        "torch.gru": (6, 3),
        "keras.lstm": (3, 8),
        "keras.gru": (3, 6),
        "torch.linear": (4, 6),  # rank 2 only
        "keras.dense": (4, 6),
        "flax.dense": (4, 6),
    }
    for name in layouts.names():
        assert layouts.describe_kind(name)
        fans = compute_fans(shapes.get(name, (3, 3, 4, 6)), name)
        assert fans.fan_in > 0 and fans.fan_out > 0


@st.composite
def _weights(draw):
    rank = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank)))
    perm = draw(st.permutations(range(rank)))
    return shape, perm


@given(_weights())
def test_fans_follow_the_axes_under_any_permutation(weights) -> None:
    """Permuting a weight's axes and its layout's axes together leaves the fans unchanged."""
    shape, perm = weights
    base = Layout(in_axes=1, out_axes=0)
    permuted_shape = tuple(shape[p] for p in perm)
    where = {p: i for i, p in enumerate(perm)}
    moved = Layout(in_axes=where[1], out_axes=where[0])
    assert base.fans(shape) == moved.fans(permuted_shape)
    rf = math.prod(shape[2:])
    assert base.fans(shape) == Fans(shape[1] * rf, shape[0] * rf, rf)


@given(st.lists(st.integers(1, 5), min_size=3, max_size=5))
def test_torch_and_keras_agree_on_transposed_kernels(dims) -> None:
    """A torch (out, in, *k) weight and its Keras (*k, in, out) transpose have the same fans."""
    torch_shape = tuple(dims)
    keras_shape = (*dims[2:], dims[1], dims[0])
    assert compute_fans(torch_shape, "torch") == compute_fans(keras_shape, "keras")


@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 4))
def test_per_gate_fans_equal_one_gate(hidden, inputs, gates) -> None:
    stacked = Layout(1, 0, out_groups=gates)
    assert stacked.fans((gates * hidden, inputs)) == Layout(1, 0).fans((hidden, inputs))


def test_fan_modes() -> None:
    fans = Fans(8, 2)
    assert [fans.fan(m) for m in ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")] == [8, 2, 5, 4]


def test_zero_size_dimensions_are_defined() -> None:
    assert compute_fans((0, 7), "torch") == Fans(7, 0, 1)
    assert compute_fans((3, 3, 0, 4), "keras") == Fans(0, 36, 9)
    spec = initscale.presets.get("he_normal")
    assert math.isfinite(spec.variance(compute_fans((3, 3, 0, 4), "keras")))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: compute_fans((), "torch"), ValueError, "scalar weight"),
        (lambda: compute_fans((5,), "keras"), ValueError, r"needs axis -2, but shape \(5,\) has rank 1"),
        (lambda: compute_fans((5,), "torch:native=true"), ValueError, "fewer than 2 dimensions"),
        (lambda: compute_fans((4, 4), "tf"), ValueError, "Argument `layout` must be one of 'flax', 'flax.conv'"),
        (lambda: compute_fans((4, 4), "torch.conv:group=2"), ValueError, "no argument 'group'; valid: 'groups'"),
        (lambda: compute_fans((6, 4, 3), "torch.conv:groups=4"), ValueError, "out_groups=4 does not divide"),
        (lambda: compute_fans((6, 4, 3), "torch.conv:groups=0"), ValueError, "`groups` must be >= 1"),
        (lambda: compute_fans((6, 2, 3), "torch.depthwise_conv"), ValueError, r"\(channels \* multiplier, 1"),
        (lambda: compute_fans((4, -1), "torch"), ValueError, "non-negative integers"),
        # a dense kind on a stack of matrices (experts) would fold the stack into the fans
        (lambda: compute_fans((4, 32, 64), "torch.linear"), ValueError, r"'torch.linear' is for a weight of rank 2"),
        (lambda: compute_fans((4, 32, 64), "keras.dense"), ValueError, "with the stacking axes as batch axes"),
        (lambda: compute_fans((64,), "keras.dense"), ValueError, r"rank 2 \(Dense kernel \(in, out\)\)"),
        # DeepMind gemma's per-head (heads, d, head_dim) einsum weight: the heads would be a receptive field
        (lambda: compute_fans((4, 8, 2), "flax.dense"), ValueError, r"'flax.dense' is for a weight of rank 2"),
        (lambda: compute_fans("44", "torch"), TypeError, "sequence of non-negative integers"),
        (lambda: compute_fans((4, 4), 3), TypeError, "Argument `layout` must be a layout name"),
        (lambda: Layout(0, 0), ValueError, "axes must be distinct"),
        (lambda: Layout((), 0), ValueError, "at least one in axis"),
        (lambda: Layout(0, 1, in_groups=0), ValueError, "`in_groups` must be >= 1"),
        (lambda: Fans(-1, 2), ValueError, "`fan_in` must be >= 0"),
    ],
)
def test_bad_input_is_named(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()
