"""The compiled CPU sampler of the torch adapter (issue 19, item 3): Philox4x32-10 seeded from the
torch generator, float32 transforms, all intra-op threads, the stored dtype written once.

Every fast path passes the reference path's checks: the whole distribution (initscale.testing:
support, bound approach, KS at alpha = 1e-4, moments at z = 4.5), bounds after rounding in
bfloat16/float16, and planted bugs (a mutated C source, wrong parameters) that must fail them.
Beyond the statistics, each value is checked against a NumPy reference computed in float64 from
the same Philox words (initscale.streams.philox4x32), so the float32 formulas are tested value by
value. ``torch.*`` presets (``native="torch"``) keep torch's own calls: bit for bit with
torch.nn.init for the same generator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

import initscale
from _stats import failures
from initscale import presets
from initscale._kernels import cpu as _stream_kernel
from initscale.distributions import NormalDist, TruncatedNormalDist, UniformDist

torch = pytest.importorskip("torch")
ist = pytest.importorskip("initscale.adapters.torch")

SHAPE = (400, 500)  # 200,000 draws per check
needs_kernel = pytest.mark.skipif(_stream_kernel.load() is None, reason="no C compiler: the sampler is not built")

SPECS = {  # the spec, and what the sampler draws for it (every distribution code, both tails)
    "he_normal": presets.get("he_normal"),  # truncated ±2σ
    "glorot_uniform": presets.get("glorot_uniform"),
    "normal": initscale.Normal(0.02, mean=0.5),
    "uniform_off_centre": initscale.Uniform(0.1, 0.7),
    "truncated_upper": initscale.TruncatedNormal(0.5, mean=0.1, lower=1.0, upper=3.0),  # mass in one tail
    "truncated_wide": initscale.TruncatedNormal(1.0, lower=-4.0, upper=3.5),
    "uniform_bf16_edge": initscale.Uniform(-0.1, 0.1),  # 0.1 rounds up in bfloat16
    "truncated_absolute": initscale.TruncatedNormal(0.02, lower=-2.0, upper=2.0, bounds_in="absolute"),  # ±100σ
}


def _dist(spec, shape=SHAPE):
    return spec.resolve(None if spec.fixed_scale else initscale.compute_fans(shape, "torch"))


def _outside(t, dist) -> int:
    """How many stored values lie outside the exact support (no ulp of slack)."""
    low, high = dist.bounds
    x = t.double()
    return int(((x < low) | (x > high)).sum())


@pytest.fixture
def calls(monkeypatch):
    """The sampler calls made (each a (kind, n, dist code)), to prove the fast path ran."""
    made = []
    real = _stream_kernel.sample

    def counted(lib, address, kind, n, key, dist, *rest, **kwargs):
        made.append((kind, n, dist))
        return real(lib, address, kind, n, key, dist, *rest, **kwargs)

    monkeypatch.setattr(_stream_kernel, "sample", counted)
    return made


def _draw(spec, dtype=torch.float32, shape=SHAPE, seed=0):
    t = torch.empty(shape, dtype=dtype)
    return ist.init_(t, spec, "torch", generator=torch.Generator().manual_seed(seed))


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", list(SPECS))
def test_sampler_draws_the_exact_distribution(name, dtype, calls) -> None:
    spec = SPECS[name]
    t = _draw(spec, getattr(torch, dtype))
    assert calls and calls[0][1] == t.numel()  # the compiled sampler drew it
    assert failures(t, _dist(spec)) == []  # support after rounding, approach, KS, moments


@needs_kernel
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_bounds_hold_after_rounding(dtype) -> None:
    # U(−0.1, 0.1): 0.1 rounds up to 0.10009765625 in bfloat16, so an unclipped draw leaves the
    # support in a few thousand of 2·10⁵ values; a truncated normal likewise at its bounds
    for spec in (SPECS["uniform_bf16_edge"], SPECS["he_normal"]):
        shape = (1000, 1000)
        assert _outside(_draw(spec, getattr(torch, dtype), shape=shape), _dist(spec, shape)) == 0


@needs_kernel
def test_values_do_not_depend_on_the_thread_count() -> None:
    threads = torch.get_num_threads()
    shape = (3, 1000, 257)  # 771,000 values: several 64-value batches per thread, a ragged end
    try:
        torch.set_num_threads(1)
        one = [_draw(s, shape=shape, seed=5) for s in SPECS.values()]
        torch.set_num_threads(4)
        four = [_draw(s, shape=shape, seed=5) for s in SPECS.values()]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, four, strict=True))


@needs_kernel
def test_seeds_reproduce_and_draws_advance_the_generator() -> None:
    spec = SPECS["he_normal"]
    assert torch.equal(_draw(spec, seed=3), _draw(spec, seed=3))
    g = torch.Generator().manual_seed(3)
    a, b = (ist.init_(torch.empty(SHAPE), spec, generator=g) for _ in range(2))
    assert not torch.equal(a, b)
    torch.manual_seed(11)  # the global generator, when none is given
    c = ist.init_(torch.empty(SHAPE), spec)
    torch.manual_seed(11)
    assert torch.equal(c, ist.init_(torch.empty(SHAPE), spec))


@needs_kernel
def test_a_transposed_weight_is_drawn_in_place_and_a_slice_by_torch_ops(calls) -> None:
    spec = SPECS["glorot_uniform"]
    w = torch.empty(500, 400).t()  # dense, not contiguous
    ist.init_(w, spec)
    assert calls[-1][1] == w.numel() and failures(w, _dist(spec)) == []
    base = torch.zeros(400, 1000)
    part = base[:, :500]  # not dense: torch's ops
    before = len(calls)
    ist.init_(part, spec)
    assert len(calls) == before and failures(part, _dist(spec)) == [] and bool((base[:, 500:] == 0).all())


@needs_kernel
def test_a_write_counts_as_an_in_place_change_for_autograd(calls) -> None:
    # autograd must see the weight change (as after nn.init's in-place ops): a tensor saved for
    # backward and then re-initialized makes backward raise instead of using the new values silently
    w = torch.nn.Parameter(torch.ones(300, 300))
    loss = (w * w).sum()
    before = w._version
    ist.init_(w, SPECS["he_normal"])
    assert calls and w._version > before
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@needs_kernel
def test_a_forked_child_draws_with_threads_of_its_own() -> None:
    # the pool's threads do not survive fork(): a child must not hand its work to them (it would
    # wait forever); it gets a pool of its own and draws the parent's values for the same key.
    # The child calls the kernel directly (NumPy buffers): torch's own OpenMP threads can hang a
    # forked child after the parent used several, which is not what this tests.
    import multiprocessing

    parent = _sample_sum(500_000)  # two threads: the pool is made here, before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_sample_sum, (500_000,)).get(timeout=120)
    assert child == parent


def _sample_sum(n: int) -> float:
    code, params = _stream_kernel.sample_params(NormalDist(0.0, 1.0))
    out = np.empty(n, np.float32)
    _stream_kernel.sample(_stream_kernel.load(), out.ctypes.data, 0, n, (5, 6, 7, 8), code, params, None, threads=2)
    return float(out.astype(np.float64).sum())


# --- value by value, against a float64 reference from the same Philox words --------------------------


def _words(key, n):
    """The 32-bit words the sampler gives element i < n: word (i % 64) // 16 of block
    16·(i // 64) + i % 16, counter (block, n0, n1), key (k0, k1)."""
    from initscale.streams import philox4x32

    i = np.arange(-(-n // 64) * 64, dtype=np.uint64)
    block = (i // 64) * 16 + i % 16
    c0, c1 = block & np.uint64(0xFFFFFFFF), block >> np.uint64(32)
    c2, c3 = np.full_like(i, key[2]), np.full_like(i, key[3])
    out = philox4x32(c0, c1, c2, c3, (key[0], key[1]), wide=True)
    lane = ((i % 64) // 16).astype(np.int64)
    return np.choose(lane, out).astype(np.uint32)[:n]


def _reference(dist, key, n):
    """float64 values of the documented transforms (the uniforms in float32 exactly as the kernel
    forms them, so the reference differs only by the float32 ln, sin, cos and erfinv)."""
    w = _words(key, -(-n // 64) * 64)
    f32 = np.float32
    if isinstance(dist, UniformDist):
        s = ((w & np.uint32(0xFFFFFF00)) | np.uint32(0x80)).view(np.int32).astype(f32) * f32(2.0**-31)
        mid, half = f32((dist.low + dist.high) / 2), f32((dist.high - dist.low) / 2)
        return (mid + half * s)[:n].astype(np.float64)  # exact: float32, no fused multiply-add
    if isinstance(dist, NormalDist):
        w = w.reshape(-1, 64)
        u = ((w[:, :32] >> 1).astype(np.int32).astype(f32) + f32(0.5)) * f32(2.0**-31)
        r = np.sqrt(-2.0 * np.log(u.astype(np.float64)))
        b = w[:, 32:]
        k = ((b >> 6) & 0xFFFFFF).astype(np.float64)
        phi = (math.pi / 2) * ((2 * k + 1) * 2.0**-25 - 0.5) + (b >> 30) * (math.pi / 2)
        z = np.concatenate([r * np.cos(phi), r * np.sin(phi)], axis=1).reshape(-1)
        return (dist.mean + dist.std * z)[:n]
    a, b_ = dist.standard_bounds
    mass = initscale.normal_math.truncated_mass(a, b_)
    u = (((w >> 9) << 1) | 1).astype(np.int32).astype(f32) * f32(2.0**-24)
    p = f32(special.ndtr(a)) + u * f32(mass)
    q = f32(special.ndtr(-b_)) + (f32(1) - u) * f32(mass)
    lower = p <= q
    z = np.where(lower, special.ndtri(np.where(lower, p, q).astype(np.float64)), -special.ndtri(q.astype(np.float64)))
    return (dist.loc + dist.sigma * np.clip(z, a, b_))[:n]


@needs_kernel
@pytest.mark.parametrize(
    "name", ["he_normal", "glorot_uniform", "normal", "uniform_off_centre", "truncated_upper", "truncated_wide"]
)
def test_each_value_matches_the_float64_reference(name) -> None:
    assert _reference_problem(_dist(SPECS[name])) is None


def _reference_problem(dist) -> str | None:
    """None if every value of one sampler call is within the float32 formulas' error of the
    float64 reference; else what is off."""
    code, params = _stream_kernel.sample_params(dist)
    key, n = (0x12345678, 0x9ABCDEF0, 7, 0xFFFFFFFF), 100_000 + 37
    out = np.empty(n, np.float32)
    _stream_kernel.sample(_stream_kernel.load(), out.ctypes.data, 0, n, key, code, params, None)
    ref = _reference(dist, key, n)
    scale = max(abs(v) for v in (*(dist.bounds or ()), dist.mean + 6.7 * dist.std, dist.mean - 6.7 * dist.std))
    ulps = np.abs(out - ref) / (scale * 2.0**-23)  # in float32 ulps of the largest magnitude possible
    # uniforms: bit for bit; normals and truncated normals: the float32 ln, sin, cos and erfinv
    # (relative errors up to ~4e-7 each, a few ulps; measured at most 3 ulps of the scale)
    allowed = 0 if isinstance(dist, UniformDist) else 8
    worst = float(ulps.max())
    return None if worst <= allowed else f"{worst:.3g} ulps from the reference (allowed {allowed})"


@needs_kernel
def test_the_avx2_and_baseline_builds_give_the_same_bits(monkeypatch) -> None:
    # the entry point runs the AVX2 build where the CPU has it; the baseline build must agree bit
    # for bit (the same Philox words, the same IEEE single-precision operations, no FMA)
    lib = _stream_kernel.load()
    baseline = lib.initscale_sample_fill_baseline
    baseline.restype, baseline.argtypes = None, lib.initscale_sample_fill.argtypes
    for name in ("he_normal", "normal", "uniform_off_centre", "truncated_upper", "truncated_absolute"):
        dist = _dist(SPECS[name])
        code, params = _stream_kernel.sample_params(dist)
        for kind, dtype in ((0, np.float32), (1, np.uint16), (2, np.uint16)):
            outs = []
            for fn in (lib.initscale_sample_fill, baseline):
                out = np.empty(100_003, dtype)
                monkeypatch.setattr(lib, "initscale_sample_fill", fn)
                _stream_kernel.sample(lib, out.ctypes.data, kind, out.size, (1, 2, 3, 4), code, params, dist.bounds)
                outs.append(out)
            assert np.array_equal(*outs), (name, kind)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_narrow_dtypes_are_one_rounding_of_the_float32_value(dtype) -> None:
    # the kernel's own float32 → bfloat16/float16 rounding (nearest even, subnormals, overflow to
    # inf) is torch's cast, bit for bit: the same seed in float32 and in the narrow dtype (normals:
    # no bounds, so no clip that differs between the dtypes)
    for spec in (initscale.Normal(3e4), initscale.Normal(1e-5), initscale.Normal(1.0, mean=0.3)):
        wide = _draw(spec, torch.float32, seed=9)
        narrow = _draw(spec, dtype, seed=9)
        assert torch.equal(narrow.view(torch.int16), wide.to(dtype).view(torch.int16))


# --- without a compiler, or switched off: torch's ops, as before -------------------------------------


@pytest.mark.parametrize("how", ["switched_off", "no_compiler"])
def test_without_the_kernel_torch_ops_draw_it(monkeypatch, tmp_path, how, calls) -> None:
    monkeypatch.setattr(_stream_kernel, "_state", {})
    if how == "switched_off":
        monkeypatch.setenv("INITSCALE_STREAM_KERNEL", "0")
    else:
        monkeypatch.setenv("INITSCALE_CACHE", str(tmp_path))
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert _stream_kernel.load() is None
    for spec in SPECS.values():
        for dtype in (torch.float32, torch.bfloat16):
            t = _draw(spec, dtype)
            assert failures(t, _dist(spec)) == []
    assert calls == []


# --- torch.* presets: torch's own stream ------------------------------------------------------------

NATIVE = [  # a torch.* preset, its nn.init call, and shapes whose float32 bounds torch rounds down
    ("torch.kaiming_normal", {}, lambda t, g: torch.nn.init.kaiming_normal_(t, generator=g)),
    ("torch.xavier_normal", {"gain": 0.5}, lambda t, g: torch.nn.init.xavier_normal_(t, gain=0.5, generator=g)),
    ("torch.normal", {"mean": 0.3, "std": 2.0}, lambda t, g: torch.nn.init.normal_(t, 0.3, 2.0, generator=g)),
    ("torch.embedding_default", {}, lambda t, g: torch.nn.init.normal_(t, generator=g)),
    ("torch.uniform", {"a": -0.5, "b": 2.0}, lambda t, g: torch.nn.init.uniform_(t, -0.5, 2.0, generator=g)),
    (
        "torch.kaiming_uniform",
        {"a": math.sqrt(5)},
        lambda t, g: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g),
    ),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("name", "kwargs", "native"), NATIVE, ids=[c[0] for c in NATIVE])
def test_torch_presets_keep_torchs_stream_bit_for_bit(name, kwargs, native, dtype, calls) -> None:
    spec = presets.get(name, **kwargs)
    assert spec.native == "torch" and _dist(spec).native == "torch"
    shape = (256, 1024)  # fan_in 1024: torch's float32 bound 1/32 is exact
    theirs = native(torch.empty(shape, dtype=dtype), torch.Generator().manual_seed(4))
    ours = ist.init_(torch.empty(shape, dtype=dtype), spec, generator=torch.Generator().manual_seed(4))
    if dtype == torch.float32 or "uniform" not in name:
        assert torch.equal(ours, theirs)
    else:  # bfloat16 uniforms are staged in float32 (torch's own bf16 uniform_ leaves its bounds)
        assert failures(ours, _dist(spec, shape)) == []
    assert calls == []  # never the sampler


def test_torch_presets_keep_torchs_stream_through_reinit() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(1024, 256), torch.nn.Linear(1024, 256))
    theirs = [torch.empty(256, 1024) for _ in range(2)]
    g = torch.Generator().manual_seed(8)
    for t in theirs:
        torch.nn.init.kaiming_normal_(t, generator=g)
    ist.reinit_(
        model,
        {"*.weight": presets.get("torch.kaiming_normal"), "*.bias": None},
        generator=torch.Generator().manual_seed(8),
    )
    assert all(torch.equal(m.weight.detach(), t) for m, t in zip(model, theirs, strict=True))


def test_the_native_marker_separates_equal_distributions() -> None:
    torch_spec, keras_spec = presets.get("torch.xavier_uniform"), presets.get("glorot_uniform")
    assert torch_spec != keras_spec and torch_spec.variance(initscale.Fans(3, 5)) == keras_spec.variance(
        initscale.Fans(3, 5)
    )
    assert initscale.from_dict(torch_spec.to_dict()) == torch_spec and "native" not in keras_spec.to_dict()["config"]
    w = torch.empty(300, 400)
    a = ist.init_(w.clone(), torch_spec, generator=torch.Generator().manual_seed(1))
    b = torch.nn.init.xavier_uniform_(w.clone(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"Argument `native` must be None or one of 'torch'. Received: native='jax'"):
        initscale.Normal(1.0, native="jax")


# --- planted bugs: a mutated kernel or wrong parameters fail the checks ------------------------------

C_BUGS = {  # name: (the text replaced in the C source, its replacement, the spec drawn, dtype, the check)
    "quadrant_ignored": (
        "uint32_t q = b >> 30,",
        "uint32_t q = 0u * (b >> 30),",
        "normal",
        torch.float32,
        "distribution",
    ),
    "radius_and_angle_from_one_word": (
        "uint32_t b = w[p + H];",
        "uint32_t b = w[p];",
        "normal",
        torch.float32,
        "distribution",
    ),
    "tail_sign_flipped": (
        "z = lower[j] ? -z : z;",
        "z = lower[j] ? z : -z;",
        "truncated_upper",
        torch.float32,
        "distribution",
    ),
    "no_clip_before_rounding": (
        "        if (clip)\n            for (int j = 0; j < SB; ++j) { float x = v[j] < flo",
        "        if (0)\n            for (int j = 0; j < SB; ++j) { float x = v[j] < flo",
        "uniform_bf16_edge",
        torch.bfloat16,
        "bounds",
    ),
    "tail_polynomial_skipped": ("    if (tail)  /*", "    if (0)  /*", "truncated_wide", torch.float32, "reference"),
    "bf16_rounding_truncates": (
        "return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);",
        "return (uint16_t)(x >> 16);",
        "normal",
        torch.bfloat16,
        "rounding",
    ),
}


@needs_kernel
@pytest.mark.parametrize("bug", list(C_BUGS))
def test_planted_kernel_bugs_are_caught(monkeypatch, tmp_path, bug, calls) -> None:
    old, new, name, dtype, check = C_BUGS[bug]
    assert _stream_kernel.SOURCE.count(old) == 1
    monkeypatch.setenv("INITSCALE_CACHE", str(tmp_path))
    spec, shape = SPECS[name], (1000, 1000)
    if check == "rounding":  # the float32 draw of the correct kernel, cast by torch
        expected = _draw(spec, torch.float32, shape=shape, seed=2).to(dtype)
    monkeypatch.setattr(_stream_kernel, "SOURCE", _stream_kernel.SOURCE.replace(old, new))
    monkeypatch.setattr(_stream_kernel, "_state", {})
    t = _draw(spec, dtype, shape=shape, seed=2)
    assert calls, "the mutated kernel did not run"
    caught = {
        "distribution": lambda: failures(t, _dist(spec, shape)) != [],
        "bounds": lambda: _outside(t, _dist(spec, shape)) > 0,
        "reference": lambda: _reference_problem(_dist(spec)) is not None,
        "rounding": lambda: not torch.equal(t.view(torch.int16), expected.view(torch.int16)),
    }[check]()
    assert caught, f"the {check} check did not notice {bug}"


_PARAMS = _stream_kernel.sample_params
PARAM_BUGS = {  # name: the wrong parameters the sampler is given, and the spec it should have drawn
    "uniform_limit_sqrt_var": (lambda d: (1, (0.0, math.sqrt(d.variance))), "glorot_uniform"),
    "normal_std_not_scaled": (lambda d: (2, (d.mean, 1.0)), "normal"),
    "truncated_mass_of_the_whole_normal": (
        lambda d: (
            3,
            (
                special.ndtr(d.standard_bounds[0]),
                1.0,
                special.ndtr(-d.standard_bounds[1]),
                *d.standard_bounds,
                d.loc,
                d.sigma,
            ),
        ),
        "he_normal",
    ),
    "truncated_normal_for_normal_sigma": (
        lambda d: _PARAMS(TruncatedNormalDist(d.loc, d.std, d.loc - 2 * d.std, d.loc + 2 * d.std)),
        "he_normal",
    ),
}


@needs_kernel
@pytest.mark.parametrize("bug", list(PARAM_BUGS))
def test_planted_parameter_bugs_are_caught(monkeypatch, bug, calls) -> None:
    wrong, name = PARAM_BUGS[bug]
    monkeypatch.setattr(_stream_kernel, "sample_params", wrong)
    spec = SPECS[name]
    t = _draw(spec)
    assert calls and failures(t, _dist(spec)) != [], f"the checks did not notice {bug}"


# --- orthogonal inits on the CPU: the gaussian drawn into LAPACK's blocks, factored in place ---------


def _one_call_orthogonal(dist, layout, out, generator):
    """The reference: one ``normal_`` draw and ``torch.linalg.qr`` (what the CPU path replaces)."""
    from types import SimpleNamespace

    from initscale._shared import orthogonal

    dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
    ops = SimpleNamespace(
        normal=lambda size: torch.empty(size, dtype=dtype).normal_(generator=generator),
        qr=torch.linalg.qr,
        diagonal=lambda r: torch.diagonal(r, dim1=-2, dim2=-1),
        phase=torch.sign,
        swap=lambda q: q.transpose(-1, -2),
        permute=lambda x, axes: x.permute(*axes),
    )
    return orthogonal(dist.gain, layout.blocks(tuple(out.shape)), tuple(out.shape), ops)


@pytest.mark.parametrize("piece", [16, 40, 2**18])  # pieces of one row, several rows, the whole weight
@pytest.mark.parametrize(
    ("size", "dtype"),
    [
        ((1, 5, 3), torch.float32),
        ((1, 17, 1), torch.float32),
        ((3, 33, 5), torch.float64),
        ((2, 64, 48), torch.float32),
    ],
)
def test_the_column_major_gaussian_is_one_normal_call(size, dtype, piece, monkeypatch) -> None:
    from initscale._kernels import torch_ops

    monkeypatch.setattr(torch_ops, "_NORMAL_PIECE", piece)
    got = torch_ops._column_major_normal(size, dtype, torch.Generator().manual_seed(5))
    want = torch.empty(size, dtype=dtype).normal_(generator=torch.Generator().manual_seed(5))
    assert got.mT.is_contiguous()  # each block column-major: LAPACK factors it where it is
    assert torch.equal(got, want)


@pytest.mark.parametrize(("size", "dtype"), [((1, 5, 3), torch.float32), ((3, 33, 5), torch.float64)])
def test_the_other_devices_column_major_gaussian_is_one_normal_call(size, dtype) -> None:
    from initscale._kernels import torch_ops

    got = torch_ops._column_major_draw(size, dtype, torch.device("cpu"), torch.Generator().manual_seed(5))
    want = torch.empty(size, dtype=dtype).normal_(generator=torch.Generator().manual_seed(5))
    assert got.mT.is_contiguous()
    assert torch.equal(got, want)


def test_a_last_piece_under_16_values_would_change_the_bits() -> None:
    # the mutation of the piece rule (no merge of a short last piece): the check above must see it
    g = torch.Generator().manual_seed(5)
    pieces = torch.cat([torch.empty(16).normal_(generator=g), torch.empty(1).normal_(generator=g)])
    assert not torch.equal(pieces, torch.empty(17).normal_(generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize(
    ("shape", "layout", "dtype"),
    [
        ((64, 48), "torch", torch.float32),
        ((48, 64), "torch", torch.bfloat16),  # wider than tall: Q transposed
        ((6, 4, 3, 3), "torch", torch.float32),  # a convolution: out × in·receptive
        ((4 * 8, 8), "torch.lstm", torch.float64),  # four gate blocks
        ((3, 3, 4, 6), "keras", torch.float16),
    ],
)
@pytest.mark.parametrize("path", ["cpu", "other devices"])
def test_orthogonal_factors_in_place_with_the_same_values(shape, layout, dtype, path, monkeypatch) -> None:
    from initscale._kernels import torch_ops
    from initscale.plan import plans

    if path == "other devices":  # the GPU's draw (one normal_ call, then its column-major copy), run here
        draw = torch_ops._column_major_draw
        monkeypatch.setattr(torch_ops, "_column_major_normal", lambda s, d, g: draw(s, d, torch.device("cpu"), g))
    planned = plans(initscale.Orthogonal(gain=1.5), layout)[0](shape, dtype)
    dist, lay = planned.dist, planned.layout
    want = _one_call_orthogonal(dist, lay, torch.empty(shape, dtype=dtype), torch.Generator().manual_seed(2))
    monkeypatch.setattr(torch.linalg, "qr", lambda *a, **k: pytest.fail("torch.linalg.qr: a copy of the input and R"))
    monkeypatch.setattr(torch_ops, "_NORMAL_PIECE", 64)
    got = torch.empty(shape, dtype=dtype)
    torch_ops.fill(dist, lay, got, torch.Generator().manual_seed(2))
    assert torch.equal(got, want.to(dtype))
