"""Portable streams: Philox4x32-10 known answers, canonical layouts, and the same weights from the
same seed and name in NumPy, torch and JAX."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import initscale
from _stats import failures
from initscale import presets
from initscale.adapters import numpy as isnp
from initscale.streams import Stream, canonical_strides, philox4x32, run_bits, runs, stream_values

# Random123's published known-answer vectors for Philox4x32-10 (its tests/kat_vectors).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
SPECS = [
    "he_uniform",
    "he_normal",
    "glorot_normal",
    "torch.kaiming_normal",
    "torch.linear_default",
    "tf1.variance_scaling_initializer",
    "keras.truncated_normal",
    "jax.uniform",
    "torch.trunc_normal:std=0.5,a=0.2,b=1.0",
    "torch.uniform:a=-3,b=5",
    "ones",
]


@pytest.fixture(params=["kernel", "torch ops"])
def torch_path(request, monkeypatch) -> str:
    """Run a torch stream test through the compiled CPU kernel (skipped where no C compiler built
    it) and through torch's own ops (the fallback, and the path on accelerators)."""
    from initscale._kernels import cpu as _stream_kernel

    if request.param == "kernel" and _stream_kernel.load() is None:
        pytest.skip("the stream kernel could not be built here (no C compiler)")
    if request.param == "torch ops":
        monkeypatch.setattr(_stream_kernel, "load", lambda: None)
    return str(request.param)


# (keras-form shape, keras layout, torch-form shape, torch layout, axes taking torch form to keras form)
FORMS = [
    ((256, 128), "keras.dense", (128, 256), "torch.linear", (1, 0)),
    ((3, 3, 32, 64), "keras.conv", (64, 32, 3, 3), "torch.conv", (2, 3, 1, 0)),
    ((64, 512), "keras.lstm", (512, 64), "torch.lstm", (1, 0)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox_known_answers_in_numpy(counter, key, expected) -> None:
    for dtype, wide in ((np.uint32, False), (np.uint64, False), (np.uint64, True)):
        words = philox4x32(*[np.array([c], dtype) for c in counter], key, wide=wide)
        assert tuple(int(w[0]) for w in words) == expected


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox_known_answers_in_torch_and_jax(counter, key, expected) -> None:
    torch = pytest.importorskip("torch")
    for wide in (False, True):  # 16-bit partial products, or one int64 multiply that wraps
        words = philox4x32(*[torch.tensor([c], dtype=torch.int64) for c in counter], key, wide=wide)
        assert tuple(int(w[0]) for w in words) == expected
    jnp = pytest.importorskip("jax.numpy")
    words = philox4x32(*[jnp.array([c], jnp.uint32) for c in counter], key, const=jnp.uint32)
    assert tuple(int(w[0]) for w in words) == expected


def test_keys_are_fixed_by_the_documented_hash() -> None:
    # BLAKE2b("initscale-stream-v1:{seed}:{name}")[:8] as two little-endian uint32: changing the
    # derivation changes every user's weights, so these values are frozen.
    assert Stream(0).key == (3432665052, 3796626784)
    assert Stream(7, "fc.weight").key == (3421783930, 2079195631)
    assert Stream(7, "fc").child("weight") == Stream(7, "fc/weight")
    with pytest.raises(ValueError, match="Argument `seed` must be >= 0"):
        Stream(-1)
    with pytest.raises(TypeError, match="Argument `name` must be a str"):
        Stream(1, 3)


def test_canonical_strides_make_layouts_agree() -> None:
    assert canonical_strides((128, 256), "torch.linear") == (256, 1)  # (out, in): row-major already
    assert canonical_strides((256, 128), "keras.dense") == (1, 256)  # (in, out): out is the slow axis
    for keras_shape, keras_layout, torch_shape, torch_layout, axes in FORMS:
        ref = stream_values(Stream(1, "w"), presets.get("he_uniform"), keras_shape, keras_layout)
        other = stream_values(Stream(1, "w"), presets.get("he_uniform"), torch_shape, torch_layout)
        assert np.array_equal(np.transpose(other, axes), ref)


@pytest.mark.parametrize("name", SPECS)
def test_stream_draws_pass_the_distribution_checks(name) -> None:
    spec = presets.get(name)
    shape = (3, 3, 100, 200)
    dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(shape, "keras"))
    values = isnp.initializer(spec, "keras", stream=Stream(11, name))(shape, dtype=np.float64)
    assert failures(values, dist) == []


def test_a_box_is_the_same_slice_of_the_whole() -> None:
    spec = presets.get("he_normal")
    whole = stream_values(Stream(5, "w"), spec, (64, 96), "keras")
    box = (slice(16, 48), slice(32, 96))
    assert np.array_equal(stream_values(Stream(5, "w"), spec, (64, 96), "keras", box=box), whole[box])


def _definition_bits(key, shape, strides, box):
    """The stream's words straight from its definition, one Philox call per element: element i is
    lane i % 4 of block i // 4 (the slow form that run_bits must reproduce)."""
    grids = np.meshgrid(*[np.arange(n)[b] for n, b in zip(shape, box, strict=True)], indexing="ij")
    index = sum(
        (g.astype(np.uint64) * np.uint64(st) for g, st in zip(grids, strides, strict=True)),
        np.zeros(grids[0].shape, np.uint64),
    )
    block = index >> np.uint64(2)
    zeros = np.zeros_like(block)
    words = philox4x32(block & np.uint64(0xFFFFFFFF), block >> np.uint64(32), zeros, zeros.copy(), key)
    return np.choose((index & np.uint64(3)).astype(np.intp), words)


def _random_box(rng, shape):
    box = []
    for n in shape:
        start = int(rng.integers(0, n))
        box.append(slice(start, int(rng.integers(start + 1, n + 1))))
    return tuple(box)


def test_run_bits_follow_the_element_wise_definition() -> None:
    """run_bits (a Philox block per 4 consecutive canonical elements, runs merged over full
    trailing axes, unaligned runs shifted by their lane, pieces split for cache) gives, for every
    element of random boxes of random layouts, exactly the words of the element-wise definition."""
    from initscale.streams import _numpy_ops, inverse_permutation

    rng = np.random.default_rng(0)
    layouts = [
        ((13, 7), "torch.linear"),
        ((7, 13), "keras.dense"),
        ((6, 5, 3, 3), "torch.conv"),
        ((3, 3, 5, 6), "keras.conv"),
        ((3, 3, 4, 3), "keras.depthwise_conv"),
        ((4, 18), "torch.lstm"),
    ]
    for trial in range(60):
        shape, layout = layouts[trial % len(layouts)]
        strides = canonical_strides(shape, layout)
        box = tuple(slice(0, n) for n in shape) if trial < len(layouts) else _random_box(rng, shape)
        expected = _definition_bits(Stream(trial, "w").key, shape, strides, box)
        box_runs = runs(shape, strides, box)
        got = run_bits(box_runs, Stream(trial, "w").key, _numpy_ops()).transpose(inverse_permutation(box_runs.perm))
        assert np.array_equal(got, expected), (shape, layout, box)
        pieces = [
            run_bits(piece, Stream(trial, "w").key, _numpy_ops()).reshape(-1)
            for piece, _, _ in box_runs.split(int(rng.integers(1, 40)))
        ]
        assert np.array_equal(
            np.concatenate(pieces).reshape(box_runs.counts).transpose(inverse_permutation(box_runs.perm)), expected
        ), (shape, layout, box)
    # a box of a weight with 2^36 elements: block counters above 2^32 use the second counter word
    shape, box = (2**18, 2**18), (slice(2**18 - 3, 2**18), slice(5, 40))
    box_runs = runs(shape, (2**18, 1), box)
    got = run_bits(box_runs, Stream(1, "big").key, _numpy_ops())
    assert np.array_equal(got, _definition_bits(Stream(1, "big").key, shape, (2**18, 1), box))
    with pytest.raises(ValueError, match="contiguous slices"):
        runs((4, 4), (4, 1), (slice(0, 4, 2), slice(0, 4)))


def test_torch_pieces_equal_the_reference_for_every_alignment(torch_path) -> None:
    """Weights whose size is not a multiple of the CPU piece (nor of 4) still equal the reference."""
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    spec = presets.get("he_normal")
    for shape in ((1, 1), (5, 3), (257, 2049 + 3)):
        w = ist.initializer(spec, "torch.linear", stream=Stream(4, "w"))(torch.empty(shape))
        assert np.array_equal(w.numpy(), stream_values(Stream(4, "w"), spec, shape, "torch.linear")), shape


def test_gru_gates_are_indexed_in_the_canonical_order(torch_path) -> None:
    """Keras GRU kernels stack (z, r, h), torch GRU weights (r, z, n): the stream gives each gate
    the same values in both (gate by gate, transposed), also for a box, in torch and in JAX."""
    from initscale.fans import gate_order

    assert gate_order("keras.gru") == (1, 0, 2) and gate_order("torch.gru") is None
    assert gate_order("keras.lstm") is None and gate_order("keras.dense") is None
    spec, hidden, features = presets.get("he_uniform"), 4, 6
    torch_form = stream_values(Stream(1, "gru"), spec, (3 * hidden, features), "torch.gru")
    keras_form = stream_values(Stream(1, "gru"), spec, (features, 3 * hidden), "keras.gru")
    swapped = np.concatenate([torch_form[hidden : 2 * hidden], torch_form[:hidden], torch_form[2 * hidden :]])
    assert np.array_equal(keras_form, swapped.T)
    box = (slice(1, 5), slice(3, 10))
    assert np.array_equal(
        stream_values(Stream(1, "gru"), spec, (features, 3 * hidden), "keras.gru", box=box), keras_form[box]
    )
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    w = ist.initializer(spec, "keras.gru", stream=Stream(1, "gru"))(torch.empty(features, 3 * hidden))
    assert np.array_equal(w.numpy(), keras_form)
    gru = torch.nn.GRU(features, hidden)
    ist.reinit_(gru, {"weight_*": spec}, stream_seed=1, stream_names={"weight_ih_l0": "gru"})
    assert np.array_equal(gru.weight_ih_l0.detach().numpy(), torch_form)
    pytest.importorskip("jax")
    isj = pytest.importorskip("initscale.adapters.jax")
    k = np.asarray(isj.initializer(spec, layout="keras.gru", stream=Stream(1, "gru"))(None, (features, 3 * hidden)))
    assert np.abs(k.astype(np.float64) - keras_form).max() <= 8 * np.spacing(np.float32(np.abs(keras_form).max()))


def test_names_and_seeds_give_independent_streams() -> None:
    spec = presets.get("he_uniform")
    a = stream_values(Stream(1, "a"), spec, (200, 100), "keras").ravel()
    b = stream_values(Stream(1, "b"), spec, (200, 100), "keras").ravel()
    c = stream_values(Stream(2, "a"), spec, (200, 100), "keras").ravel()
    # correlation of independent streams: |r| ≤ 4.5/√n (z = 4.5)
    for x, y in ((a, b), (a, c)):
        assert abs(np.corrcoef(x, y)[0, 1]) <= 4.5 / np.sqrt(a.size)


def test_orthogonal_has_no_portable_stream_and_bad_input() -> None:
    with pytest.raises(ValueError, match="no portable stream"):
        stream_values(Stream(1), initscale.Orthogonal(), (4, 4), "keras")
    with pytest.raises(TypeError, match="must be an initscale.Stream"):
        isnp.initializer(presets.get("he_normal"), stream=3)
    with pytest.raises(TypeError, match="Argument `rng` is required"):
        isnp.initializer(presets.get("he_normal"))((3, 4))


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("form", FORMS, ids=["dense", "conv", "lstm"])
def test_torch_equals_numpy_to_the_bit(name, form, torch_path) -> None:
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    keras_shape, keras_layout, torch_shape, torch_layout, axes = form
    spec = presets.get(name)
    ref = stream_values(Stream(3, "layer.weight"), spec, keras_shape, keras_layout)
    w = ist.initializer(spec, torch_layout, stream=Stream(3, "layer.weight"))(torch.empty(torch_shape))
    assert np.array_equal(np.transpose(w.numpy(), axes), ref)


LAYER_KINDS = [
    "dense",
    "conv2d",
    "grouped_conv",
    "conv_transpose",
    "depthwise",
    "embedding",
    "lstm_gates",
    "packed_qkv",
]


@pytest.mark.parametrize("layer", LAYER_KINDS)
def test_every_layer_kind_matches_across_backends(layer, torch_path) -> None:
    """Each logical layer in each framework's own form (initscale.parity.LAYERS): torch equals
    the reference to the bit, JAX within the float32 bound; for uniform, normal and truncated
    normal (the Keras forms are checked on every Keras backend in tests/test_keras_adapter.py)."""
    from initscale import parity

    for name in ("he_uniform", "torch.kaiming_normal", "he_normal"):
        spec = presets.get(name)
        torch = pytest.importorskip("torch")
        ist = pytest.importorskip("initscale.adapters.torch")
        shape, layout = parity.LAYERS[layer].form("torch")
        w = ist.initializer(spec, layout, stream=Stream(6, layer))(torch.empty(shape))
        assert np.array_equal(w.numpy(), stream_values(Stream(6, layer), spec, shape, layout)), (layer, name)
        pytest.importorskip("jax")
        isj = pytest.importorskip("initscale.adapters.jax")
        shape, layout = parity.LAYERS[layer].form("flax")
        ref = stream_values(Stream(6, layer), spec, shape, layout)
        k = np.asarray(isj.initializer(spec, layout=layout, stream=Stream(6, layer))(None, shape))
        assert np.abs(k.astype(np.float64) - ref).max() <= 8 * np.spacing(np.float32(np.abs(ref).max())), (layer, name)


@pytest.mark.parametrize("name", SPECS)
def test_jax_float32_within_the_stated_bound(name) -> None:
    """Without x64, JAX computes the float stage in float32: every value within 8 float32 ulps of
    the distribution's scale (its largest bound, or σ) of the reference (measured: at most 6),
    and the same values eagerly and under jit (one compiled program, inlined)."""
    jax = pytest.importorskip("jax")
    isj = pytest.importorskip("initscale.adapters.jax")
    spec = presets.get(name)
    shape = (3, 3, 32, 64)
    ref = stream_values(Stream(3, "w"), spec, shape, "keras")
    w = np.asarray(isj.initializer(spec, layout="flax", stream=Stream(3, "w"))(None, shape))
    dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(shape, "keras"))
    scale = max(abs(b) for b in dist.bounds) if dist.bounds else dist.std
    bound = 8 * np.spacing(np.float32(max(scale, 1e-30)))
    assert np.abs(w.astype(np.float64) - ref).max() <= bound
    jitted = jax.jit(lambda: isj.initializer(spec, layout="flax", stream=Stream(3, "w"))(None, shape))()
    assert np.abs(np.asarray(jitted, dtype=np.float64) - ref).max() <= bound
    assert np.array_equal(np.asarray(jitted), w)  # one stream, one set of values: eager and under jit


def test_jax_with_x64_equals_numpy_to_the_bit() -> None:
    pytest.importorskip("jax")
    code = (
        "import numpy as np, initscale\n"
        "from initscale.streams import Stream, stream_values\n"
        "from initscale.adapters import jax as isj\n"
        f"for name in {SPECS!r}:\n"
        "    spec = initscale.presets.get(name)\n"
        "    ref = stream_values(Stream(3, 'w'), spec, (3, 3, 32, 64), 'keras')\n"
        "    w = np.asarray(isj.initializer(spec, layout='flax', stream=Stream(3, 'w'))(None, (3, 3, 32, 64)))\n"
        "    assert np.array_equal(w, ref), name\n"
        "    half = np.asarray(isj.initializer(spec, layout='flax', stream=Stream(3, 'w'))(None, (3, 3, 32, 64),\n"
        "                                                                               'float16'))\n"
        "    ref16 = stream_values(Stream(3, 'w'), spec, (3, 3, 32, 64), 'keras', dtype='float16')\n"
        "    assert np.array_equal(half, ref16), name  # rounded once, through float32 rounded to odd\n"
        "print('ok')\n"
    )
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


class _Contracted:
    """An array whose every multiply that feeds an add is one fused multiply-add (one rounding,
    exact through fractions), as XLA compiles float code on CPU and GPU: the float stage run on it
    is what a contracting compiler computes."""

    def __init__(self, x, factors=None) -> None:
        self.x, self.factors = np.asarray(x, dtype=np.float64), factors

    @staticmethod
    def _value(other):
        return other.x if isinstance(other, _Contracted) else other

    def __mul__(self, other):
        return _Contracted(self.x * self._value(other), (self.x, self._value(other)))

    __rmul__ = __mul__

    def __add__(self, other):
        fused = self if self.factors else other if isinstance(other, _Contracted) and other.factors else None
        if fused is None:
            return _Contracted(self.x + self._value(other))
        addend = self._value(other) if fused is self else self.x
        a, b, c = np.broadcast_arrays(*fused.factors, addend)
        exact = [float(Fraction(x) * Fraction(y) + Fraction(z)) for x, y, z in zip(a.flat, b.flat, c.flat, strict=True)]
        return _Contracted(np.reshape(exact, a.shape))  # Python's int/int division rounds correctly

    __radd__ = __add__

    def clip(self, low, high):
        return _Contracted(self.x.clip(low, high))


def _contraction_changes(n: int = 4000) -> list[str]:
    """Where fusing a multiply-add changes the float stage: the uniforms of every width, and the
    Φ⁻¹ argument pa + (pb − pa)·u of every truncated interval, against the reference's rounding."""
    from initscale.distributions import TruncatedNormalDist, UniformDist
    from initscale.streams import _numpy_ops, transform, uniform_from_bits

    u = uniform_from_bits(run_bits(runs((n,), (1,)), Stream(4, "fma").key, _numpy_ops()))
    changed = []
    for low, high in ((-0.0541, 0.0541), (0.1, 0.7), (-3.0, 5.0), (-1.0 / 3.0, 2.0 / 7.0), (1e-300, 3e-300)):
        dist = UniformDist(low, high)
        if not np.array_equal(transform(dist, _Contracted(u)).x, transform(dist, u)):
            changed.append(f"uniform({low}, {high})")
    for lower, upper in ((-2.0, 2.0), (0.2, 1.0), (-3.0, -0.5), (1.0, math.inf), (5.5, 6.5), (-0.01, 0.01)):
        dist = TruncatedNormalDist(0.0, 1.0, lower, upper)
        seen: list[np.ndarray] = []
        transform(dist, _Contracted(u), lambda p, seen=seen: seen.append(p.x) or p.x * 0.0)
        transform(dist, u, lambda p, seen=seen: seen.append(p) or p * 0.0)
        if not np.array_equal(seen[0], seen[1]):
            changed.append(f"truncated[{lower}, {upper}]")
    return changed


def test_the_float_stage_does_not_change_when_a_compiler_fuses_multiply_adds() -> None:
    """XLA contracts a·b + c into one FMA: every multiply feeding an add in the uniform and the
    truncated normal's Φ⁻¹ argument is exact (split_width), so the fused and the plain rounding
    are the same, bit for bit, for every width (here emulated exactly, for 4,000 stream uniforms)."""
    assert _contraction_changes() == []


def test_the_fusion_check_catches_an_inexact_product(monkeypatch) -> None:
    """Mutation: the plain form offset + width·u (one inexact product, then the add) is changed by
    fusing, in almost every width."""
    from initscale import streams

    monkeypatch.setattr(streams, "_scaled_uniform", lambda offset, width, u: offset + width * u)
    changed = _contraction_changes()
    assert "uniform(-0.0541, 0.0541)" in changed and "truncated[-2.0, 2.0]" in changed, changed
    assert "uniform(-3.0, 5.0)" not in changed  # a width of 8: its product is exact either way


def test_split_width_is_exact_and_its_products_with_a_uniform_are_exact() -> None:
    from initscale.streams import split_width

    rng = np.random.default_rng(0)
    mantissas = rng.choice([-1.0, 1.0], 300) * rng.uniform(0.5, 1.0, 300)
    widths = np.concatenate([np.ldexp(mantissas, rng.integers(-996, 1000, 300)), [1.0, 0.1, 8.0, 2.0**-997]])
    u = (2.0 * rng.integers(0, 2**23, widths.size) + 1) * 2.0**-24  # every exponent the split covers
    for w, v in zip(widths.tolist(), u.tolist(), strict=True):
        hi, lo = split_width(w)
        assert Fraction(hi) + Fraction(lo) == Fraction(w)
        assert Fraction(hi * v) == Fraction(hi) * Fraction(v) and Fraction(lo * v) == Fraction(lo) * Fraction(v)
    assert split_width(2.0**-1000) == (2.0**-1000, 0.0) and split_width(math.inf) == (math.inf, 0.0)


# Every kind of float stage: uniform (a width with an inexact product, and an exact one), normal
# (zero and non-zero mean), truncated normal (two-sided, upper tail mirrored, lower tail,
# one-sided), constant. Uniforms and constants equal the reference to the bit; the rest within
# STREAM_ULPS ulps of the weight's largest |value| (each backend's own ndtri).
STREAM_DISTS = [
    "he_uniform",
    "torch.uniform:a=0.1,b=0.7",
    "torch.uniform:a=-3,b=5",
    "torch.kaiming_normal",
    "torch.normal:mean=1,std=0.5",
    "he_normal",
    "torch.trunc_normal:std=0.5,a=0.2,b=1.0",
    "torch.trunc_normal:std=1,a=-3,b=-0.5",
    "torch.trunc_normal:std=1,a=1,b=inf",
    "ones",
]
STREAM_ULPS = 8  # measured in float64 on TensorFlow, JAX and torch: at most 6
_JAX_CALLS = """
import jax, jax.numpy as jnp, numpy as np, initscale
from initscale import streams
from initscale.streams import Stream, stream_values
from initscale.adapters import jax as isj
if {plant!r}:  # the plain form offset + width*u, which XLA fuses into one FMA
    streams._scaled_uniform = lambda offset, width, u: offset + width * u
assert jax.config.jax_enable_x64
problems = []
for i, name in enumerate({dists!r}):
    spec, shape = initscale.presets.get(name), (97 + i, 80)  # he_uniform: sqrt(6/97), inexact
    init = isj.initializer(spec, layout="keras.dense", stream=Stream(7, name))
    ref = stream_values(Stream(7, name), spec, shape, "keras.dense", dtype="float64")
    draws = [np.asarray(init(None, shape, jnp.float64)) for _ in range(2)]
    draws += [np.asarray(jax.jit(lambda: init(None, shape, jnp.float64))()) for _ in range(2)]
    draws += [np.asarray(jax.jit(lambda: init(None, shape, jnp.float64) * 2.0)()) / 2.0]  # fused on
    if any(not np.array_equal(d, draws[0]) for d in draws):
        problems.append(f"{{name}}: calls differ")
    err = np.abs(draws[0] - ref).max() / np.spacing(np.abs(ref).max())
    if (err > 0) if name.startswith(("he_uniform", "torch.uniform", "ones")) else (err > {ulps}):
        problems.append(f"{{name}}: {{err}} ulps from the reference")
print(problems)
"""


def _jax_x64_calls(plant: bool) -> list[str]:
    code = _JAX_CALLS.format(plant=plant, dists=STREAM_DISTS, ulps=STREAM_ULPS)
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return eval(done.stdout.strip().splitlines()[-1])  # a list of strings, printed by the code above


def test_jax_x64_float64_streams_give_one_set_of_values_on_every_call() -> None:
    """float64 with x64: the same stream eagerly (twice), under jit (twice) and fused into a
    larger jitted program gives the same values; uniforms and constants are the reference's to
    the bit; normal and truncated values within STREAM_ULPS ulps of the largest |value| (JAX's
    ndtri; the reference's is AS241)."""
    pytest.importorskip("jax")
    assert _jax_x64_calls(plant=False) == []


def test_the_jax_x64_check_catches_a_fused_uniform() -> None:
    """Mutation: with the plain uniform form, XLA's FMA moves float64 uniforms off the reference."""
    pytest.importorskip("jax")
    problems = _jax_x64_calls(plant=True)
    assert any(p.startswith("he_uniform: ") and "reference" in p for p in problems), problems
    assert not any(p.startswith("torch.uniform:a=-3,b=5") for p in problems), problems  # width 8: exact


def test_a_torch_model_and_a_flax_model_start_from_the_same_weights() -> None:
    """reinit_ / reinit with stream_seed and a name mapping: the torch Linear weights are the
    transposes of the flax Dense kernels (to the bit with x64; here JAX is float32, so within the
    stated bound), and the biases match."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    nn = pytest.importorskip("flax.linen")
    ist = pytest.importorskip("initscale.adapters.torch")
    isj = pytest.importorskip("initscale.adapters.jax")
    spec = presets.get("he_normal")
    torch_model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    flax_vars = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(4)]).init(jax.random.key(0), np.zeros((1, 16)))
    torch_names = {"0.weight": "l0/w", "0.bias": "l0/b", "2.weight": "l1/w", "2.bias": "l1/b"}
    ist.reinit_(
        torch_model,
        {"*.bias": presets.get("torch.uniform:a=-0.1,b=0.1"), "Linear": spec},
        stream_seed=5,
        stream_names=torch_names,
    )
    new, _ = isj.reinit(
        flax_vars,
        {"*/bias": presets.get("torch.uniform:a=-0.1,b=0.1"), "*/kernel": spec},
        None,
        stream_seed=5,
        stream_names=lambda p: (
            p.replace("params/layers_0/", "l0/")
            .replace("params/layers_2/", "l1/")
            .replace("kernel", "w")
            .replace("bias", "b")
        ),
    )
    for i, layer in (("0", "layers_0"), ("2", "layers_2")):
        w = torch_model.get_parameter(f"{i}.weight").detach().numpy()
        k = np.asarray(new["params"][layer]["kernel"])
        ref = stream_values(Stream(5, torch_names[f"{i}.weight"]), spec, w.shape, "torch.linear")
        assert np.array_equal(w, ref)  # torch is the reference to the bit
        assert np.abs(k.T.astype(np.float64) - w).max() <= 8 * np.spacing(np.float32(np.abs(w).max()))
        b = torch_model.get_parameter(f"{i}.bias").detach().numpy()
        assert np.abs(np.asarray(new["params"][layer]["bias"], dtype=np.float64) - b).max() <= 8 * 2.0**-24 * 0.1
    with pytest.raises(ValueError, match="no portable stream"):
        ist.reinit_(torch_model, initscale.Orthogonal(), stream_seed=1)


@pytest.mark.parametrize("layer", LAYER_KINDS)
def test_every_layer_kind_has_one_canonical_order(layer) -> None:
    """The torch, Keras and Flax forms of each logical layer hold the same values: sorted, the
    three arrays are equal, and the canonical flat orders agree element by element."""
    from initscale import parity

    spec = presets.get("he_uniform")
    flats = []
    for family in ("torch", "keras", "flax"):
        shape, layout = parity.LAYERS[layer].form(family)
        values = stream_values(Stream(9, layer), spec, shape, layout)
        strides = canonical_strides(shape, layout)
        order = np.argsort(np.array(strides))[::-1]  # axes from slowest to fastest canonical stride
        flats.append(np.transpose(values, order).ravel())
    assert np.array_equal(flats[0], flats[1]) and np.array_equal(flats[0], flats[2]), layer


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_the_kernel_equals_the_reference(dtype, monkeypatch) -> None:
    """Every dtype, 0-d to 4-d weights, gates, weights big enough to use several threads: the
    compiled kernel computes the reference's own Φ⁻¹ (AS241) in the same order: it equals the
    NumPy reference in float32 and float16 (one correct rounding from float64, through float32
    rounded to odd), and in float64 within 8 ulps (measured: 2; the libraries' log differ).
    torch's ops use torch's Φ⁻¹ (Cephes): the same bounds. bfloat16 (no NumPy reference): the
    kernel equals the torch-ops path."""
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    from initscale._kernels import cpu as _stream_kernel

    if _stream_kernel.load() is None:
        pytest.skip("the stream kernel could not be built here (no C compiler)")
    cases = [
        ((), "torch"),
        ((7,), "torch"),
        ((0, 5), "torch.linear"),
        ((515, 1031), "torch.linear"),
        ((9, 4, 3, 3), "torch.conv"),
        ((3, 3, 4, 9), "keras.conv"),
        ((7, 30), "keras.gru"),
        ((60, 7), "torch.gru"),
    ]
    for name in (
        "he_uniform",
        "torch.kaiming_normal",
        "he_normal",
        "torch.trunc_normal:std=0.5,a=0.2,b=1.0",
        "torch.uniform:a=-0.1,b=0.1",
        "ones",
    ):
        spec = presets.get(name)
        for shape, layout in cases:
            if len(shape) < 2 and not spec.fixed_scale:
                continue  # fans need in and out axes
            fn = ist.initializer(spec, layout, stream=Stream(8, "w"))
            fast = fn(torch.empty(shape, dtype=getattr(torch, dtype)))
            with monkeypatch.context() as m:
                m.setattr(_stream_kernel, "load", lambda: None)
                slow = fn(torch.empty(shape, dtype=getattr(torch, dtype)))
            label = (name, shape, layout, dtype)
            if dtype == "bfloat16":
                assert torch.equal(fast, slow), label
                continue
            ref = stream_values(Stream(8, "w"), spec, shape, layout, dtype=dtype)
            for got in (fast, slow):
                if dtype == "float64":
                    assert np.abs(got.numpy().view(np.int64) - ref.view(np.int64)).max(initial=0) <= 8, label
                else:
                    assert np.array_equal(got.numpy(), ref), label


def test_the_kernel_builds_once_and_falls_back_cleanly(monkeypatch, tmp_path) -> None:
    """Built into the cache on first use (then loaded from it); without a compiler, or switched
    off, load() is None and torch streams still give the reference values."""
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    from initscale._kernels import cpu as _stream_kernel

    monkeypatch.setenv("INITSCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_stream_kernel, "_state", {})
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert _stream_kernel.load() is None
    spec = presets.get("he_normal")
    w = ist.initializer(spec, "torch.linear", stream=Stream(2, "w"))(torch.empty(6, 5))
    assert np.array_equal(w.numpy(), stream_values(Stream(2, "w"), spec, (6, 5), "torch.linear"))
    monkeypatch.setenv("INITSCALE_STREAM_KERNEL", "0")
    monkeypatch.setattr(_stream_kernel, "_state", {})
    assert _stream_kernel.load() is None
    monkeypatch.delenv("INITSCALE_STREAM_KERNEL")
    monkeypatch.delenv("CC")
    monkeypatch.setattr(_stream_kernel, "_state", {})
    import shutil

    if shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    assert _stream_kernel.load() is not None
    assert len(list((tmp_path / "cache").glob("stream-kernel-*"))) == 1  # built once, cached


@pytest.mark.parametrize(
    ("dtype", "value", "rounded"),
    [
        ("float16", 1 + 2.0**-11 + 2.0**-40, 1 + 2.0**-10),  # just above a float16 tie: up
        ("bfloat16", 1 + 2.0**-8 + 2.0**-30, 1 + 2.0**-7),  # just above a bfloat16 tie: up
        ("bfloat16", -(1 + 3 * 2.0**-8 - 2.0**-30), -(1 + 2.0**-7)),  # just below a tie: the smaller magnitude
    ],
)
def test_narrow_dtypes_are_rounded_once(dtype, value, rounded, torch_path) -> None:
    """float64 → float16/bfloat16 in one rounding: through float32 with round-to-nearest twice, the
    first rounding lands on the tie and the second goes to even, the wrong way here."""
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    w = ist.initializer(initscale.Constant(value), stream=Stream(0, "c"))(torch.empty(4, dtype=getattr(torch, dtype)))
    assert float(torch.tensor(value, dtype=torch.float64).to(getattr(torch, dtype))) != rounded  # torch's own cast
    assert w.double().tolist() == [rounded] * 4


def test_strided_weights_are_written_in_place(torch_path) -> None:
    """A transposed (dense) weight is written where each element sits; a sliced (not dense) one
    through a buffer. Both equal the reference, and nothing outside the view changes."""
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    spec = presets.get("he_normal")
    ref = stream_values(Stream(5, "w"), spec, (300, 70), "torch.linear")
    fill = ist.initializer(spec, "torch.linear", stream=Stream(5, "w"))
    transposed = torch.empty(70, 300).t()
    assert fill(transposed) is transposed and np.array_equal(transposed.numpy(), ref)
    base = torch.zeros(600, 70)
    sliced = base[::2]
    assert fill(sliced) is sliced and np.array_equal(sliced.numpy(), ref)
    assert not base[1::2].any()


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_the_numpy_adapter_equals_the_reference_with_or_without_the_kernel(dtype, monkeypatch) -> None:
    """The NumPy adapter draws float32/float16 streams with the compiled kernel where it is built:
    the reference's values (stream_values) either way; float64 always from the reference."""
    from initscale._kernels import cpu as _stream_kernel

    built = _stream_kernel.load() is not None
    calls = []
    real = _stream_kernel.draw
    monkeypatch.setattr(_stream_kernel, "draw", lambda *a, **k: calls.append(1) or real(*a, **k))
    cases = [((64, 129), "keras.dense"), ((3, 3, 8, 16), "keras.conv"), ((7, 30), "keras.gru"), ((5,), "keras")]
    for kernel_on in (True, False):
        if not kernel_on:
            monkeypatch.setattr(_stream_kernel, "load", lambda: None)
        for name in ("he_uniform", "he_normal", "torch.kaiming_normal", "torch.uniform:a=-3,b=5"):
            spec = presets.get(name)
            for shape, layout in cases:
                if len(shape) < 2 and not spec.fixed_scale:
                    continue
                got = isnp.initializer(spec, layout, stream=Stream(9, "n"))(shape, dtype=getattr(np, dtype))
                ref = stream_values(Stream(9, "n"), spec, shape, layout, dtype=dtype)
                assert got.dtype == ref.dtype and np.array_equal(got, ref), (name, shape, dtype, kernel_on)
    assert bool(calls) == (built and dtype != "float64")  # float64: always the reference


def test_weights_of_more_axes_than_the_kernel_walks_take_the_array_path(monkeypatch) -> None:
    """The kernel walks at most MAX_AXES (16) axes: a weight of 17 or more in NumPy and torch is
    drawn by the array path (the reference's values), not refused; 16 axes still use the kernel."""
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    from initscale._kernels import cpu as _stream_kernel

    built = _stream_kernel.load() is not None
    calls = []
    real = _stream_kernel.draw
    monkeypatch.setattr(_stream_kernel, "draw", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))
    for name in ("he_normal", "torch.uniform:a=-3,b=5"):
        spec = presets.get(name)
        for shape in ((2,) * 17, (3, 5) + (1,) * 15 + (2,), (2,) * 16):
            ref32 = stream_values(Stream(4, "deep"), spec, shape, "keras", dtype="float32")
            got = isnp.initializer(spec, "keras", stream=Stream(4, "deep"))(shape)
            assert np.array_equal(got, ref32), (name, shape)
            ref = stream_values(Stream(4, "deep"), spec, shape, "torch", dtype="float32")
            w = ist.initializer(spec, "torch", stream=Stream(4, "deep"))(torch.empty(shape))
            assert np.array_equal(w.numpy(), ref), (name, shape)
    assert all(n <= _stream_kernel.MAX_AXES for n in calls)
    assert bool(calls) == built  # the 16-axis weights still go through the kernel where it is built
