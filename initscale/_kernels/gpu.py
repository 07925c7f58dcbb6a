"""Fused single-pass samplers for GPU tensors, in Triton: truncated normals, and uniforms in
float16/bfloat16.

torch's ``nn.init.trunc_normal_`` makes five passes over memory (uniform_, erfinv_, mul_, add_,
clamp_) and the torch adapter's inverse-CDF path four; on a GPU, where initialization is
memory-bound, one pass is the limit. Each program here draws Philox4x32-10 words
(``tl.randint4x``: four 32-bit words per counter), turns them into uniforms u = ((w >> 8) | 1)·2⁻²⁴
(in (0, 1): never 0 or 1), applies the documented transform in registers and stores once, in the
weight's dtype:

- truncated normal (:func:`sampler_params`, from :func:`initscale.normal_math.truncated_plan`):
  an ordinary interval (inside ±4σ, mass ≥ 1e-3) in float32 as z = Φ⁻¹(pa + u·(pb − pa)) by
  Wichura's AS241 (the reference's), clipped to [a, b]; a one-sided, far-tail or narrow one in
  float64, from the side where it is representable (mirrored to the lower tail): Φ⁻¹(p_hi −
  p_width·u) clipped to the quantiles float64 resolves, or beyond 37σ the exact offset from the
  bound (:func:`initscale.streams.far_values`); then loc + scale·z;
- uniform: low + (high − low)·u, for float16/bfloat16 weights (torch's own ``uniform_`` is used
  for float32 and float64: it is one pass already);

then the clip to the bounds that hold in the stored dtype (:mod:`initscale.rounding`) and one
rounding to it: bfloat16 and float16 are computed in float32 registers and stored once.

The seed is drawn from the caller's ``torch.Generator`` (or torch's default generator for the
device), so ``manual_seed`` reproduces the values. ``INITSCALE_TRITON=0`` switches the kernels
off; without Triton, :func:`usable` is False and the adapter keeps its torch-ops path. Under
``TRITON_INTERPRET=1`` Triton runs the kernels on CPU tensors (the tests check them there).

The kernels check themselves on each device before they are trusted (:func:`trusted`): on the
first :func:`usable` / :func:`stream_usable` for a device, each path draws a small tensor and
compares it with torch's ops on that device (the sampler: finiteness, bounds and the first two
moments, two-sample at z = 6; the stream: the uniforms to the bit, truncated normals within the
documented 8 ulps). On a disagreement it warns once, naming the path, the device and what
differed, and that device keeps torch's ops from then on.
"""

from __future__ import annotations

import functools
import importlib.abc
import math
import os
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from initscale.normal_math import _A, _B, _C, _D, _E, _F, _MILLS, truncated_plan

UNIFORM, TRUNCATED, FAR = 1, 3, 4  # the codes of initscale.streams.kernel_params
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_QUARTER = 512  # counters per program: 2,048 elements
_MAX_AXES = 6  # axes of the stream kernel's index arithmetic (the sampler takes any shape)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _ready(tensor: torch.Tensor, dtypes: tuple[torch.dtype, ...], max_axes: int | None = None) -> bool:
    """Triton importable and not switched off, and ``tensor`` a contiguous GPU tensor (any device
    under the interpreter) of one of ``dtypes``, with at most ``max_axes`` axes."""
    if os.environ.get("INITSCALE_TRITON", "1") == "0" or (max_axes is not None and tensor.dim() > max_axes):
        return False
    if tensor.dtype not in dtypes or not tensor.is_contiguous():
        return False
    if not (tensor.is_cuda or _interpreting()):
        return False
    return _kernel() is not None


def usable(tensor: torch.Tensor) -> bool:
    """Whether :func:`fill` can fill ``tensor``: a contiguous float32/float16/bfloat16 GPU
    tensor, with Triton importable and not switched off, on a device where the sampler passed its
    check (:func:`trusted`)."""
    return _ready(tensor, _DTYPES) and trusted("fill", tensor.device)


def _horner(coefficients: Sequence[float]) -> str:
    expression = repr(float(coefficients[0]))
    for c in coefficients[1:]:
        expression = f"({expression}) * r + {float(c)!r}"
    return expression


def _mills() -> str:
    """initscale.normal_math.mills_series's operations, in its order, on ``r`` = 1/t²."""
    expression = f"{float(_MILLS[0])!r} * r"
    for c in _MILLS[1:]:
        expression = f"(({expression}) + {float(c)!r}) * r"
    return f"({expression}) + 1.0"


_SOURCE = f'''
import triton
import triton.language as tl


@triton.jit
def _ndtri(p):
    """Wichura's AS241 (initscale.normal_math.ndtri) in p's precision, branch-free."""
    q = p - 0.5
    r = 0.180625 - q * q
    central = q * (({_horner(_A)}) / ({_horner(_B)}))
    t = tl.where(q < 0.0, p, 1.0 - p)
    s = tl.sqrt(-tl.log(t))
    r = s - 1.6
    middle = ({_horner(_C)}) / ({_horner(_D)})
    r = s - 5.0
    far = ({_horner(_E)}) / ({_horner(_F)})
    x = tl.where(s <= 5.0, middle, far)
    x = tl.where(q < 0.0, -x, x)
    return tl.where(tl.abs(q) <= 0.425, central, x)


@triton.jit
def _mills(t):
    """initscale.normal_math.mills_series: S(t) = t·Q(t)/φ(t), t ≥ 11."""
    r = 1.0 / (t * t)
    return {_mills()}


@triton.jit
def _far(u, a, kept, z_low, z_high, log_s_a):
    """initscale.streams.far_values: z = −(a + y) at E = −log(1 − kept·(1 − u)), y by
    initscale.normal_math.far_tail_offset (three Newton steps), log1p(t) = log(w) − ((w − 1) − t)/w."""
    e = -tl.log(1.0 + (-kept) * (1.0 - u))
    y = 2.0 * e / (a + tl.sqrt(a * a + 2.0 * e))
    for _ in tl.static_range(3):
        x = y + a
        s = _mills(x)
        t = y / a
        w = 1.0 + t
        h = y * (0.5 * y + a) + (tl.log(w) - ((w - 1.0) - t) / w) - (tl.log(s) - log_s_a)
        y = y - (h - e) * s / x
    z = -(y + a)
    return tl.minimum(tl.maximum(z, z_low), z_high)


@triton.jit
def _bf16_bits(t):
    """float32 → bfloat16 bit patterns, rounded to nearest even (finite values), as int16: stored
    through an int16 view, so the rounding is this one on every backend (Triton's interpreter
    truncates when it converts)."""
    b = t.to(tl.uint32, bitcast=True)
    r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return r.to(tl.uint16).to(tl.int16, bitcast=True)


@triton.jit
def _put(ptr, x, mask, BF16: tl.constexpr):
    if BF16:
        tl.store(ptr, _bf16_bits(x), mask=mask)
    else:
        tl.store(ptr, x, mask=mask)


@triton.jit
def _stream_value(u, p0, p1, p2, p3, p4, p5, p6, DIST: tl.constexpr):
    """initscale.streams.transform in u's precision, in the reference's order of operations
    (DIST 4: the far tail, initscale.streams.far_values)."""
    if DIST == 0:
        x = u * 0.0 + p0
    elif DIST == 1:
        x = p0 + p1 * u
    elif DIST == 2:
        x = p0 + p1 * _ndtri(u)
    elif DIST == 3:
        z = _ndtri(p0 + u * p1)
        z = tl.minimum(tl.maximum(z, p2), p3)
        x = p4 + p5 * z
    else:
        x = p4 + p5 * _far(u, p0, p1, p2, p3, p6)
    return x


@triton.jit
def _unit(w, WIDE: tl.constexpr):
    """A Philox word to the stream's uniform ((w >> 8) | 1)·2⁻²⁴: in (0, 1), never 0 or 1, and 1 − u exact."""
    x = ((w.to(tl.uint32, bitcast=True) >> 8) | 1)
    if WIDE:
        return x.to(tl.float64) * 5.9604644775390625e-08
    return x.to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def _value(w, p0, p1, p2, p3, p4, p5, p6, lo, hi, DIST: tl.constexpr, WIDE: tl.constexpr, CLIP: tl.constexpr):
    u = _unit(w, WIDE)
    x = _stream_value(u, p0, p1, p2, p3, p4, p5, p6, DIST)
    if CLIP:
        x = tl.minimum(tl.maximum(x, lo), hi)
    return x.to(tl.float32)  # bounds representable in the stored dtype stay inside through float32


@triton.jit
def _params(prm_ptr, WIDE: tl.constexpr):
    """p0..p6, lo, hi from float64 memory (a Python float argument would arrive as float32)."""
    dtype = tl.float64 if WIDE else tl.float32
    return (tl.load(prm_ptr).to(dtype), tl.load(prm_ptr + 1).to(dtype), tl.load(prm_ptr + 2).to(dtype),
            tl.load(prm_ptr + 3).to(dtype), tl.load(prm_ptr + 4).to(dtype), tl.load(prm_ptr + 5).to(dtype),
            tl.load(prm_ptr + 6).to(dtype), tl.load(prm_ptr + 7).to(dtype), tl.load(prm_ptr + 8).to(dtype))


@triton.jit
def sample(out_ptr, n, seed, prm_ptr, DIST: tl.constexpr, WIDE: tl.constexpr, CLIP: tl.constexpr,
           BF16: tl.constexpr, QUARTER: tl.constexpr):
    """Elements [4·QUARTER·pid, 4·QUARTER·(pid + 1)): four quarters, one per Philox word. The
    parameters come as float64 values in memory (a float argument would be float32)."""
    p0, p1, p2, p3, p4, p5, p6, lo, hi = _params(prm_ptr, WIDE)
    pid = tl.program_id(0).to(tl.int64)
    q = tl.arange(0, QUARTER)
    counter = pid * QUARTER + q
    u0, u1, u2, u3 = tl.randint4x(seed, counter)
    base = pid * 4 * QUARTER + q
    _put(out_ptr + base, _value(u0, p0, p1, p2, p3, p4, p5, p6, lo, hi, DIST, WIDE, CLIP), base < n, BF16)
    base += QUARTER
    _put(out_ptr + base, _value(u1, p0, p1, p2, p3, p4, p5, p6, lo, hi, DIST, WIDE, CLIP), base < n, BF16)
    base += QUARTER
    _put(out_ptr + base, _value(u2, p0, p1, p2, p3, p4, p5, p6, lo, hi, DIST, WIDE, CLIP), base < n, BF16)
    base += QUARTER
    _put(out_ptr + base, _value(u3, p0, p1, p2, p3, p4, p5, p6, lo, hi, DIST, WIDE, CLIP), base < n, BF16)


@triton.jit
def stream(out_ptr, n, key, s0, s1, s2, s3, s4, s5, c0, c1, c2, c3, c4, c5, o0, o1, o2, o3, o4, o5,
           prm_ptr, DIST: tl.constexpr, OUT_FORMAT: tl.constexpr, CLIP: tl.constexpr, BLOCK: tl.constexpr):
    """The portable stream (initscale.streams) of a row-major box of up to six axes (sizes s,
    canonical strides c, offsets o): element i is lane i % 4 of the Philox4x32-10 block
    (i // 4 mod 2^32, i // 2^34, 0, 0) under key (key mod 2^32, key >> 32), which is what
    tl.randint4x computes; OUT_FORMAT 0 stores float32, 1 float64, 2 float16 and 3 bfloat16 (each
    from float32 rounded to odd: one correct rounding of the float64 value)."""
    p0, p1, p2, p3, p4, p5, p6, lo, hi = _params(prm_ptr, True)
    j = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    rest = j
    i5 = rest % s5
    rest = rest // s5
    i4 = rest % s4
    rest = rest // s4
    i3 = rest % s3
    rest = rest // s3
    i2 = rest % s2
    rest = rest // s2
    i1 = rest % s1
    i0 = rest // s1
    c = (o0 + i0) * c0 + (o1 + i1) * c1 + (o2 + i2) * c2 + (o3 + i3) * c3 + (o4 + i4) * c4 + (o5 + i5) * c5
    lane = c & 3
    w0, w1, w2, w3 = tl.randint4x(key, c >> 2)
    x = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3))).to(tl.uint32, bitcast=True)
    u = ((x >> 8) | 1).to(tl.float64) * 5.9604644775390625e-08  # 2^-24
    v = _stream_value(u, p0, p1, p2, p3, p4, p5, p6, DIST)
    if CLIP:
        v = tl.minimum(tl.maximum(v, lo), hi)
    if OUT_FORMAT == 1:
        tl.store(out_ptr + j, v, mask=j < n)
    elif OUT_FORMAT == 0:
        tl.store(out_ptr + j, v.to(tl.float32), mask=j < n)
    else:  # float32 rounded to odd (toward zero, lowest bit set where inexact), then rounded once more
        t = v.to(tl.float32)
        bits = t.to(tl.int32, bitcast=True)
        bits = tl.where(tl.abs(t.to(tl.float64)) > tl.abs(v), bits - 1, bits)
        inexact = bits.to(tl.float32, bitcast=True).to(tl.float64) != v
        odd = tl.where(inexact, bits | 1, bits).to(tl.float32, bitcast=True)
        if OUT_FORMAT == 2:
            tl.store(out_ptr + j, odd.to(tl.float16), mask=j < n)
        else:
            tl.store(out_ptr + j, _bf16_bits(odd), mask=j < n)
'''


class _SourceLoader(importlib.abc.Loader):
    """The loader of the kernels' module: hands back the source it was built from (what
    :mod:`linecache`, and so Triton's ``inspect.getsource``, read for it)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def get_source(self, name: str) -> str:
        return self.source


@functools.cache
def _kernel() -> Any:
    """The module of jitted kernels (``sample``, ``stream``), or None without Triton (or with a
    Triton that cannot load them: then a warning says why).

    Triton reads a kernel's source through ``inspect.getsource``; the module is compiled from
    ``_SOURCE`` in memory and never written to disk, so there is no file to plant or corrupt: its
    virtual file name (in this package's folder, where it does not exist) is answered from
    :mod:`linecache`, filled with ``_SOURCE`` and backed by the module's loader."""
    import hashlib
    import importlib.util
    import linecache
    import warnings

    if importlib.util.find_spec("triton") is None:
        return None
    if "tensorflow" in sys.modules:  # both bundle LLVM: Triton loaded after TensorFlow aborts the process
        warnings.warn(
            "initscale: TensorFlow is loaded, and loading Triton after it aborts the process (LLVM "
            "registers its options twice); using torch's ops instead of the Triton kernels.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None

    source = _SOURCE
    tag = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = f"initscale_triton_sampler_{tag}"
    virtual = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"_triton_sampler_{tag}.generated.py")
    loader = _SourceLoader(source)
    try:
        spec = importlib.util.spec_from_loader(name, loader, origin=virtual)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__file__ = virtual
        linecache.cache[virtual] = (len(source), None, source.splitlines(keepends=True), virtual)  # never re-read
        sys.modules[name] = module  # inspect finds the module (and its loader) by name
        exec(compile(source, virtual, "exec"), module.__dict__)  # initscale's own source, from memory
    except Exception as err:  # any Triton failure means: use torch's ops
        sys.modules.pop(name, None)
        warnings.warn(
            f"initscale: Triton is installed but its kernels could not be loaded ({err!r}); using "
            "torch's ops instead (set INITSCALE_TRITON=0 to skip Triton).",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return module


def _launch(kernel: Any, grid: tuple[int], *args: Any, **options: Any) -> None:
    try:
        kernel[grid](*args, **options)
    except Exception as err:
        raise RuntimeError(
            f"initscale's Triton kernel failed on this device: {err!r}. Set INITSCALE_TRITON=0 to "
            "draw with torch's ops instead."
        ) from err


def _loaded(check: str) -> Any:
    """The jitted kernels' module (:func:`_kernel`), or a RuntimeError naming the ``check`` that
    says whether a tensor can take them."""
    kernels = _kernel()
    if kernels is None:
        raise RuntimeError(f"Triton is not available: check {check}(tensor) first.")
    return kernels


def _run(
    kernel: Any,
    tensor: torch.Tensor,
    block: int,
    seed: int,
    axes: Sequence[int],
    params: Sequence[float],
    clip: tuple[float, float] | None,
    **options: Any,
) -> torch.Tensor:
    """Launch ``kernel`` (``sample`` or ``stream``) over the n > 0 elements of ``tensor``, ``block``
    elements per program (grid ⌈n / block⌉), as ``kernel(out, n, seed, *axes, parameters, CLIP,
    **options)``: the parameters (p0..p6, lo, hi) as float64 in the device's memory
    (:func:`_param_tensor`), CLIP whether ``clip`` is given; a bfloat16 ``tensor`` is written
    through an int16 view (the kernels store bfloat16 bit patterns, rounded by :func:`_bf16_bits`)."""
    n = tensor.numel()
    grid = ((n + block - 1) // block,)
    out = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
    _launch(
        kernel, grid, out, n, seed, *axes, _param_tensor(params, clip, tensor.device), CLIP=clip is not None, **options
    )
    return tensor


def _param_tensor(params: Sequence[float], clip: tuple[float, float] | None, device: torch.device) -> torch.Tensor:
    """The kernel's parameters (p0..p6, lo, hi) as float64 in the device's memory: Triton passes a
    Python float argument as float32, which would round the float64 transform's constants."""
    lo, hi = clip if clip is not None else (0.0, 0.0)
    values = [float(x) for x in params] + [0.0] * (7 - len(params)) + [float(lo), float(hi)]
    return torch.tensor(values, dtype=torch.float64, device=device)


def _seed(tensor: torch.Tensor, generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else tensor.device
    return int(torch.randint(0, 2**62, (), device=device, generator=generator).item())


def sampler_params(dist: Any) -> tuple[int, tuple[float, ...], bool]:
    """(code, parameters, wide) of :func:`fill` for a uniform or truncated normal ``dist``, from the
    side where the interval is representable (:func:`initscale.normal_math.truncated_plan`): an
    ordinary interval in float32 registers as Φ⁻¹(pa + u·(pb − pa)); a one-sided, far-tail or
    narrow one in float64 as the torch adapter's CPU path, Φ⁻¹(p_hi − p_width·u) clipped to the
    quantiles float64 resolves, or beyond 37σ the offset from the bound (code 4,
    :func:`initscale.streams.far_values`). u ∈ (0, 1) (:func:`fill`), so no Φ⁻¹(0) = −∞."""
    from initscale.distributions import TruncatedNormalDist
    from initscale.streams import kernel_params

    if not isinstance(dist, TruncatedNormalDist):
        code, params = kernel_params(dist)
        return code, params, False
    a, b = dist.standard_bounds
    if truncated_plan(a, b, "float32").method == "erf":
        return TRUNCATED, kernel_params(dist)[1], False
    plan = truncated_plan(a, b, "float64")
    scale = plan.sign * dist.sigma
    if plan.method == "ndtri":
        return TRUNCATED, (plan.p_hi, -plan.p_width, plan.z_low, plan.z_high, dist.loc, scale), True
    return FAR, (plan.a, plan.kept, plan.z_low, plan.z_high, dist.loc, scale, plan.log_s_a), True


def fill(
    tensor: torch.Tensor,
    code: int,
    params: Sequence[float],
    clip: tuple[float, float] | None,
    wide: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Fill ``tensor`` (see :func:`usable`) in one pass with the distribution ``code``/``params``
    of :func:`sampler_params` (uniform or truncated normal), computed in float64 when ``wide``
    else float32, clipped to ``clip`` and stored once."""
    kernels = _loaded("usable")
    if code not in (UNIFORM, TRUNCATED, FAR):
        raise ValueError(
            f"The Triton sampler draws uniforms (code 1) and truncated normals (codes 3 and 4); received {code}."
        )
    if tensor.numel() == 0:
        return tensor
    return _run(
        kernels.sample,
        tensor,
        4 * _QUARTER,
        _seed(tensor, generator),
        (),
        params,
        clip,
        DIST=code,
        WIDE=wide,
        BF16=tensor.dtype == torch.bfloat16,
        QUARTER=_QUARTER,
    )


_fill = fill  # the self-check's name for it: a test that replaces `fill` leaves the check's kernel alone


_STREAM_BLOCK = 1024


def stream_usable(tensor: torch.Tensor) -> bool:
    """Whether :func:`stream_fill` can write ``tensor``'s stream: as :func:`usable`, float64
    included, on a device where the stream kernel passed its check (:func:`trusted`)."""
    return _ready(tensor, (*_DTYPES, torch.float64), _MAX_AXES) and trusted("stream_fill", tensor.device)


def stream_fill(
    tensor: torch.Tensor,
    key: tuple[int, int],
    strides: Sequence[int],
    offsets: Sequence[int],
    code: int,
    params: Sequence[float],
    clip: tuple[float, float] | None,
) -> torch.Tensor:
    """Write the portable stream of ``key`` into ``tensor`` (see :func:`stream_usable`), a box of
    a weight whose axes have the canonical ``strides``, starting at ``offsets``; ``code`` and
    ``params`` as :func:`initscale.streams.kernel_params`. One pass, float64 arithmetic in the
    reference's order (fused multiply-add switched off)."""
    kernels = _loaded("stream_usable")
    if tensor.numel() == 0:
        return tensor
    pad = _MAX_AXES - tensor.dim()
    sizes = [1] * pad + list(tensor.shape)
    canon = [0] * pad + list(strides)
    starts = [0] * pad + list(offsets)
    out_format = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}[tensor.dtype]
    seed = key[0] | (key[1] << 32)
    seed = seed - 2**64 if seed >= 2**63 else seed  # the same 64 bits as a signed argument
    return _run(
        kernels.stream,
        tensor,
        _STREAM_BLOCK,
        seed,
        (*sizes, *canon, *starts),
        params,
        clip,
        DIST=code,
        OUT_FORMAT=out_format,
        BLOCK=_STREAM_BLOCK,
        enable_fp_fusion=False,
    )


_stream_fill = stream_fill  # the self-check's name for it, as _fill


# --- the kernels check themselves, once per device and path -----------------------------------------

CHECK_Z = 6.0
"""Two-sample z of the sampler check: each of its 8 moment comparisons (4 distributions, mean and
variance) has a two-sided false-alarm rate 2·Φ(−6) = 2.0e-9, under 1.6e-8 per device together."""
_CHECK_N = 1 << 15  # draws per distribution and path: 32,768 (a few microseconds on a GPU)
_CHECK_SHAPE = (64, 64)  # the stream check's weight
STREAM_ULPS = 8  # the documented float64 bound between a backend's ndtri/log and the reference's
_checked: dict[tuple[str, str], bool] = {}
_check_lock = threading.RLock()


def _device_name(device: torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def trusted(path: str, device: torch.device) -> bool:
    """Whether the Triton ``path`` ("fill" or "stream_fill") agrees with torch's ops on ``device``:
    checked on the first call per device and path (:func:`_check_fill`, :func:`_check_stream`) and
    cached. A disagreement, or a kernel that raises, warns once and gives False from then on.
    While a check runs, the path reads as untrusted, so the torch-ops draw it compares with (and
    any other thread) takes torch's ops."""
    key = (path, _device_name(device))
    done = _checked.get(key)
    if done is not None:
        return done
    with _check_lock:
        if key in _checked:
            return _checked[key]
        _checked[key] = False  # provisional: the comparison draws through torch's ops
        try:
            problem = (_check_fill if path == "fill" else _check_stream)(torch.device(key[1]))
        except Exception as err:  # a kernel that fails on this device: torch's ops
            problem = f"the check raised {err!r}"
        if problem:
            warnings.warn(
                f"initscale: the Triton {path} path on {key[1]} disagrees with torch's ops: {problem}. "
                f"Using torch's ops on {key[1]} from now on (INITSCALE_TRITON=0 skips Triton).",
                RuntimeWarning,
                stacklevel=3,
            )
        _checked[key] = not problem
        return _checked[key]


def _moments(x: torch.Tensor) -> tuple[float, float, float]:
    """Sample mean, variance and fourth central moment (float64)."""
    x = x.double()
    m = float(x.mean())
    d = x - m
    v = float((d * d).mean())
    return m, v, float((d * d * d * d).mean())


def _check_cases() -> list[tuple[str, Any, torch.dtype]]:
    from initscale.distributions import TruncatedNormalDist, UniformDist

    return [
        ("truncated normal [-2σ, 2σ] float32", TruncatedNormalDist(0.0, 0.05, -0.1, 0.1), torch.float32),
        ("truncated normal [6, inf) float32", TruncatedNormalDist(0.0, 1.0, 6.0, math.inf), torch.float32),
        ("truncated normal [38.3, inf) float32", TruncatedNormalDist(0.0, 1.0, 38.3, math.inf), torch.float32),
        ("uniform bfloat16", UniformDist(-0.1, 0.1), torch.bfloat16),
    ]


def _check_fill(device: torch.device) -> str:
    """The fused sampler against torch's ops on ``device``: "" when they agree, else what
    differed. Per distribution: every value finite and inside the bounds that hold in the dtype;
    means within CHECK_Z·√(v₁/n + v₂/n), variances within CHECK_Z·√((μ₄₁ − v₁²)/n + (μ₄₂ − v₂²)/n)
    (the sampling sd of a sample mean and variance, two independent samples of n)."""
    from initscale._kernels import torch_ops
    from initscale.rounding import representable_bounds

    n = _CHECK_N
    for label, dist, dtype in _check_cases():
        bounds = representable_bounds(dist.low, dist.high, str(dtype))
        code, params, wide = sampler_params(dist)
        mine = _fill(
            torch.empty(n, dtype=dtype, device=device),
            code,
            params,
            bounds,
            wide,
            torch.Generator(device=device).manual_seed(0),
        )
        theirs = torch.empty(n, dtype=dtype, device=device)
        torch_ops.fill(dist, None, theirs, torch.Generator(device=device).manual_seed(1))  # torch's ops: untrusted now
        x = mine.double()
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            return f"{label}: {bad} of {n} values not finite"
        outside = int(((x < bounds[0]) | (x > bounds[1])).sum())
        if outside:
            return f"{label}: {outside} of {n} values outside [{bounds[0]:.6g}, {bounds[1]:.6g}]"
        (m1, v1, q1), (m2, v2, q2) = _moments(mine), _moments(theirs)
        tol_m = CHECK_Z * math.sqrt((v1 + v2) / n)
        if abs(m1 - m2) > tol_m:
            return f"{label}: mean {m1:.6g} against torch's {m2:.6g} (tolerance {tol_m:.3g})"
        tol_v = CHECK_Z * math.sqrt((max(q1 - v1 * v1, 0.0) + max(q2 - v2 * v2, 0.0)) / n)
        if abs(v1 - v2) > tol_v:
            return f"{label}: variance {v1:.6g} against torch's {v2:.6g} (tolerance {tol_v:.3g})"
    return ""


def _check_stream(device: torch.device) -> str:
    """The stream kernel against torch's ops on ``device``: "" when they agree, else what
    differed. A uniform stream (integers and uniforms, exact by definition) to the bit in float32,
    float64 and bfloat16; truncated normals (ordinary and far-tail) in float64 within
    STREAM_ULPS ulps of the largest |value| (torch's ndtri and log against AS241 and the
    kernel's)."""
    from initscale.distributions import TruncatedNormalDist, UniformDist
    from initscale.rounding import clip_bounds
    from initscale.streams import Stream, backend_draw, canonical_strides, kernel_params

    # The reference: torch's stream draw, through the core's registry of stream draws (the torch
    # adapter registers it when imported), never an adapter's private function. With ``out`` given
    # it fills ``out`` and returns it: the values the adapter's draw gives a new tensor (the same
    # bits on the five cases below, compiled CPU kernel and torch's ops, when this was written).
    reference = backend_draw("torch")

    stream = Stream(0, "initscale-triton-check")
    strides = canonical_strides(_CHECK_SHAPE, "torch")
    cases: list[tuple[UniformDist | TruncatedNormalDist, torch.dtype, int]] = [
        (UniformDist(-0.1, 0.3), dtype, 0) for dtype in (torch.float32, torch.float64, torch.bfloat16)
    ]
    cases += [
        (TruncatedNormalDist(0.0, 0.05, -0.1, 0.1), torch.float64, STREAM_ULPS),
        (TruncatedNormalDist(0.0, 1.0, 38.3, math.inf), torch.float64, STREAM_ULPS),
    ]
    for dist, dtype, ulps in cases:
        code, params = kernel_params(dist)
        mine = _stream_fill(
            torch.empty(_CHECK_SHAPE, dtype=dtype, device=device),
            stream.key,
            strides,
            [0, 0],
            code,
            params,
            clip_bounds(dist, str(dtype)),
        )
        theirs = reference(
            stream,
            dist,
            strides,
            _CHECK_SHAPE,
            str(dtype).rsplit(".", 1)[-1],
            None,
            torch.empty(_CHECK_SHAPE, dtype=dtype, device=device),
        )
        label = f"{type(dist).__name__}{dist.low, dist.high} {str(dtype).rsplit('.', 1)[-1]} stream"
        if ulps == 0:
            differ = int((mine.view(-1) != theirs.view(-1)).sum())
            if differ:
                return f"{label}: {differ} of {mine.numel()} values differ"
            continue
        a, b = mine.cpu().double(), theirs.cpu().double()
        if not bool(torch.isfinite(a).all()):
            return f"{label}: {int((~torch.isfinite(a)).sum())} values not finite"
        spacing = float(torch.nextafter(b.abs().max(), torch.tensor(math.inf, dtype=torch.float64)) - b.abs().max())
        err = float((a - b).abs().max()) / spacing
        if err > ulps:
            return f"{label}: {err:.3g} ulps from torch's ops (bound {ulps})"
    return ""
