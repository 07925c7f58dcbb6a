"""Fused single-pass samplers for GPU tensors, in Triton: truncated normals, and uniforms in
float16/bfloat16.

torch's ``nn.init.trunc_normal_`` makes five passes over memory (uniform_, erfinv_, mul_, add_,
clamp_) and the torch adapter's inverse-CDF path four; on a GPU, where initialization is
memory-bound, one pass is the limit. Each program here draws Philox4x32-10 words
(``tl.randint4x``: four 32-bit words per counter), turns them into uniforms, applies the
documented transform in registers and stores once, in the weight's dtype:

- truncated normal: v = pa + u·(pb − pa), z = Φ⁻¹(v) by Wichura's AS241 (the reference's, in
  float32 inside ±4σ and float64 beyond, as the torch adapter), z clipped to [a, b], then
  loc + scale·z (an upper-tail interval is drawn as the mirror of the lower one:
  :func:`initscale.streams.kernel_params`);
- uniform: low + (high − low)·u, for float16/bfloat16 weights (torch's own ``uniform_`` is used
  for float32 and float64: it is one pass already);

then the clip to the bounds that hold in the stored dtype (:mod:`initscale.rounding`) and one
rounding to it: bfloat16 and float16 are computed in float32 registers and stored once.

The seed is drawn from the caller's ``torch.Generator`` (or torch's default generator for the
device), so ``manual_seed`` reproduces the values. ``INITSCALE_TRITON=0`` switches the kernels
off; without Triton, :func:`usable` is False and the adapter keeps its torch-ops path. Under
``TRITON_INTERPRET=1`` Triton runs the kernels on CPU tensors (the tests check them there).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import torch

from initscale.normal_math import _A, _B, _C, _D, _E, _F

UNIFORM, TRUNCATED = 1, 3  # the codes of initscale.streams.kernel_params
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_QUARTER = 512  # counters per program: 2,048 elements


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def usable(tensor: torch.Tensor) -> bool:
    """Whether :func:`fill` can fill ``tensor``: Triton is importable and not switched off, and
    the tensor is a contiguous float32/float16/bfloat16 GPU tensor (any device under the
    interpreter)."""
    if os.environ.get("INITSCALE_TRITON", "1") == "0":
        return False
    if tensor.dtype not in _DTYPES or not tensor.is_contiguous():
        return False
    if not (tensor.is_cuda or _interpreting()):
        return False
    return _kernel() is not None


def _horner(coefficients: Sequence[float]) -> str:
    expression = repr(float(coefficients[0]))
    for c in coefficients[1:]:
        expression = f"({expression}) * r + {float(c)!r}"
    return expression


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
def _value(u, p0, p1, p2, p3, p4, p5, lo, hi, DIST: tl.constexpr, WIDE: tl.constexpr, CLIP: tl.constexpr):
    if WIDE:
        u = u.to(tl.float64)
    if DIST == 1:
        x = p0 + p1 * u
    else:
        z = _ndtri(p0 + u * p1)
        z = tl.minimum(tl.maximum(z, p2), p3)
        x = p4 + p5 * z
    if CLIP:
        x = tl.minimum(tl.maximum(x, lo), hi)
    return x.to(tl.float32)  # bounds representable in the stored dtype stay inside through float32


@triton.jit
def sample(out_ptr, n, seed, p0, p1, p2, p3, p4, p5, lo, hi, DIST: tl.constexpr, WIDE: tl.constexpr,
           CLIP: tl.constexpr, QUARTER: tl.constexpr):
    """Elements [4·QUARTER·pid, 4·QUARTER·(pid + 1)): four quarters, one per Philox word."""
    pid = tl.program_id(0).to(tl.int64)
    q = tl.arange(0, QUARTER)
    counter = pid * QUARTER + q
    u0, u1, u2, u3 = tl.rand4x(seed, counter)
    base = pid * 4 * QUARTER + q
    tl.store(out_ptr + base, _value(u0, p0, p1, p2, p3, p4, p5, lo, hi, DIST, WIDE, CLIP), mask=base < n)
    base += QUARTER
    tl.store(out_ptr + base, _value(u1, p0, p1, p2, p3, p4, p5, lo, hi, DIST, WIDE, CLIP), mask=base < n)
    base += QUARTER
    tl.store(out_ptr + base, _value(u2, p0, p1, p2, p3, p4, p5, lo, hi, DIST, WIDE, CLIP), mask=base < n)
    base += QUARTER
    tl.store(out_ptr + base, _value(u3, p0, p1, p2, p3, p4, p5, lo, hi, DIST, WIDE, CLIP), mask=base < n)
'''


@functools.cache
def _kernel() -> Any:
    """The jitted kernel, or None without Triton. Its source (AS241's coefficients written into
    Horner form) is saved once in initscale's cache folder, since Triton reads kernels from files."""
    import hashlib
    import importlib.util
    import tempfile

    if importlib.util.find_spec("triton") is None:
        return None

    from initscale._stream_kernel import _cache_dir

    tag = hashlib.sha256(_SOURCE.encode()).hexdigest()[:16]
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = type(folder)(tempfile.mkdtemp(prefix="initscale-triton-"))
    path = folder / f"triton_sampler_{tag}.py"  # Triton reads a kernel's source from its file
    if not path.exists():
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".py", delete=False, encoding="utf-8") as f:
            f.write(_SOURCE)
        os.replace(f.name, path)
    spec = importlib.util.spec_from_file_location(f"initscale_triton_sampler_{tag}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sample


def _seed(tensor: torch.Tensor, generator: torch.Generator | None) -> int:
    device = generator.device if generator is not None else tensor.device
    return int(torch.randint(0, 2**62, (), device=device, generator=generator).item())


def fill(tensor: torch.Tensor, code: int, params: Sequence[float], clip: tuple[float, float] | None,
         wide: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Fill ``tensor`` (see :func:`usable`) in one pass with the distribution ``code``/``params``
    of :func:`initscale.streams.kernel_params` (uniform or truncated normal), computed in float64
    when ``wide`` else float32, clipped to ``clip`` and stored once."""
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("Triton is not available: check usable(tensor) first.")
    if code not in (UNIFORM, TRUNCATED):
        raise ValueError(f"The Triton sampler draws uniforms (code 1) and truncated normals (code 3); received {code}.")
    n = tensor.numel()
    if n == 0:
        return tensor
    p = [float(x) for x in params] + [0.0] * (6 - len(params))
    lo, hi = clip if clip is not None else (0.0, 0.0)
    grid = ((n + 4 * _QUARTER - 1) // (4 * _QUARTER),)
    kernel[grid](tensor, n, _seed(tensor, generator), *p, float(lo), float(hi), DIST=code, WIDE=wide,
                 CLIP=clip is not None, QUARTER=_QUARTER)
    return tensor
