"""torch's ops-path sampler: the draws of the torch adapter that take torch's own ops (and the
compiled CPU sampler and the Triton sampler where they apply), private to initscale.

:func:`fill` fills a tensor in place with a resolved :mod:`initscale.distributions` object from a
``torch.Generator`` (or torch's global generator): constants by ``fill_``; normals, uniforms and
ordinary truncated normals of dense float32/bfloat16/float16 CPU tensors by the compiled sampler
(:func:`sampled`, :func:`initscale._kernels.cpu.sample`); truncated normals (and float16/bfloat16
uniforms) of GPU tensors by the fused Triton pass (:mod:`initscale._kernels.gpu`, once trusted);
everything else by torch's ops: normals and uniforms by torch's own kernels (float32-staged
uniforms for float16/bfloat16), truncated normals by inverse CDF (:func:`truncated`), orthogonal
matrices by QR (:func:`orthogonal_values`). The torch adapter (``initscale.adapters.torch``) draws
every generator-driven value through it, and the Triton self-check (:func:`initscale._kernels.gpu._check_fill`)
compares the fused sampler with it, so the kernels never reach into the adapter.

Imports torch: only the torch adapter (and :mod:`initscale._kernels.gpu`'s check) import it.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace
from typing import Any, cast

import torch

from initscale._kernels import cpu as _stream_kernel
from initscale._kernels import gpu as _triton_sampler
from initscale._shared import lower_tail, orthogonal
from initscale.distributions import (
    ConstantDist,
    Distribution,
    NormalDist,
    OrthogonalDist,
    TruncatedNormalDist,
    UniformDist,
)
from initscale.fans import Layout
from initscale.normal_math import far_tail_offset, normal_cdf, truncated_plan
from initscale.rounding import representable_bounds
from initscale.streams import kernel_params

LOW_PRECISION = (torch.float16, torch.bfloat16)


def uniform_grid(out: torch.Tensor, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    """float32 U(low, high) on the 2^24-point grid mid + half·(2k + 1)·2^-24, k ∈ [-2^23, 2^23),
    from 64 random bits per two elements; into ``out`` when it is a contiguous float32 tensor.

    torch's CPU ``uniform_`` spends 85% of ``normal_``'s time turning one mt19937 word into one
    float; ``random_`` over the full int64 range yields two words per call at 58% of that time,
    and the integer word becomes the grid value in four memory-speed passes: clear the low 8 bits,
    set bit 7 (the odd multiple (2k + 1)·2^7, exact in float32), convert, scale. Each grid point
    has probability 2^-24, as in ``uniform_`` (which uses the grid k·2^-24, k ∈ [0, 2^24)).
    """
    n = out.numel()
    fits = out.dtype == torch.float32 and out.is_contiguous() and n % 2 == 0 and out.data_ptr() % 8 == 0
    v = out if fits else torch.empty(n + n % 2, dtype=torch.float32, device=out.device)
    flat = v.view(-1)
    words = flat.view(torch.int64).random_(-(2**63), None, generator=generator).view(torch.int32)
    words.bitwise_and_(-256).bitwise_or_(128)
    flat.copy_(words)  # |value| < 2^31 with at most 24 significant bits: exact
    flat.mul_((high - low) / 2.0 * 2.0**-31)
    if low != -high:
        flat.add_((high + low) / 2.0)
    return v if fits else flat[:n].view(out.shape)


def truncated(
    dist: TruncatedNormalDist, out: torch.Tensor, generator: torch.Generator | None, stored: torch.dtype | None = None
) -> torch.Tensor:
    """Inverse CDF: for an ordinary interval v ~ U(erf(α/√2), erf(β/√2)), z = √2·erfinv(v); for a
    one-sided, far-tail or narrow one, Φ⁻¹ or the far-tail offset in float64 (see below); scaled
    and clamped to the bounds that hold in ``stored`` (default: ``out``'s dtype). Drawn straight
    into ``out`` when it has the working dtype (no extra pass)."""
    a, b = dist.standard_bounds
    bounds = representable_bounds(dist.low, dist.high, str(stored or out.dtype))  # bounds that hold
    plan = truncated_plan(a, b, "float64")
    if plan.method != "erf":
        # One-sided, far-tail or narrow (initscale.normal_math.truncated_plan), in float64: Φ⁻¹ of
        # u ∈ (Φ(lo), Φ(hi)] (never 0) from the side where Φ is representable, or beyond 37σ the
        # exact offset from the bound. erf(−8.5/√2) is −1 even in float64, so not erfinv.
        v = (
            out
            if out.dtype == torch.float64 and out.is_contiguous()
            else torch.empty(out.shape, dtype=torch.float64, device=out.device)
        )
        v.uniform_(generator=generator)
        if plan.method == "ndtri":
            z = cast(torch.Tensor, torch.special.ndtri(v.mul_(-plan.p_width).add_(plan.p_hi), out=v))
        else:
            e = v.mul_(-plan.kept).log1p_().neg_()
            z = far_tail_offset(e, plan.a, plan.log_s_a, torch).add_(plan.a).neg_()
        z = z.clamp_(plan.z_low, plan.z_high).mul_(plan.sign * dist.sigma)
        if dist.loc != 0.0:
            z.add_(dist.loc)
        return z.clamp_(*bounds)
    a, b, flip = lower_tail(a, b)  # an upper-tail interval is drawn as the mirror of the lower one
    # float32 is exact enough for an ordinary interval (inside ±4σ, |dz| ≲ 1e-6·|z| there) and 7x
    # faster on CPU than float64; float64 weights are drawn in float64.
    work = torch.float32 if out.dtype != torch.float64 else torch.float64
    low, high = 2.0 * normal_cdf(a) - 1.0, 2.0 * normal_cdf(b) - 1.0
    if work == torch.float32 and out.device.type == "cpu":
        v = uniform_grid(out, low, high, generator)
    else:
        v = out if out.dtype == work and out.is_contiguous() else torch.empty(out.shape, dtype=work, device=out.device)
        v.uniform_(low, high, generator=generator)
    eps = torch.finfo(work).eps
    if max(abs(low), abs(high)) > 1.0 - 4 * eps:  # a bound at (or rounding to) ±1: keep erfinv finite
        v.clamp_(-(1.0 - eps / 2), 1.0 - eps / 2)
    scale = -math.sqrt(2.0) * dist.sigma if flip else math.sqrt(2.0) * dist.sigma
    z = v.erfinv_().mul_(scale)
    if dist.loc != 0.0:
        z.add_(dist.loc)
    return z.clamp_(*bounds)


_STAGE = 2**18  # float32 elements staged at a time for a bfloat16/float16 weight on the CPU (1 MiB)


def truncated_staged(dist: TruncatedNormalDist, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
    """A float16/bfloat16 weight drawn in float32 through one cache-sized buffer, each piece
    rounded once into the weight: no full-size float32 temporary (its page faults and memory
    passes made this 1.25x-1.5x of ``normal_``)."""
    flat = tensor.view(-1)
    buffer = torch.empty(min(flat.numel(), _STAGE), dtype=torch.float32)
    for start in range(0, flat.numel(), _STAGE):
        part = flat[start : start + _STAGE]
        part.copy_(truncated(dist, buffer[: part.numel()], generator, stored=tensor.dtype))


_NORMAL_PIECE = 2**18  # gaussian elements drawn at a time into an orthogonal init's QR blocks (1 MiB fp32)


def _column_major_normal(size: tuple[int, int, int], dtype: torch.dtype, generator: torch.Generator | None) -> Any:
    """A (batch, big, small) standard-normal CPU tensor whose blocks are column-major (what LAPACK
    factors in place), holding the values one ``normal_`` call gives a contiguous tensor of
    ``size``, without that tensor: drawn in runs of rows whose lengths are multiples of 16
    elements but the last, which has at least 16. torch's CPU ``normal_`` of n >= 16 contiguous
    values draws n uniforms in order, transforms them 16 at a time and redraws the last 16 where
    16 does not divide n, so such pieces take the generator's values as one call does
    (tests/test_torch_sampler.py checks the bits against one call)."""
    nb, big, small = size
    out = torch.empty((nb, small, big), dtype=dtype).mT
    rows = nb * big
    unit = 16 // math.gcd(small, 16)  # rows whose length is a multiple of 16
    step = max(unit, _NORMAL_PIECE // small // unit * unit)
    starts = list(range(0, rows, step))
    if len(starts) > 1 and (rows - starts[-1]) * small < 16:
        starts.pop()  # a last piece under 16 values joins the one before
    bounds = [*starts, rows]
    buffer = torch.empty(max(b - a for a, b in itertools.pairwise(bounds)) * small, dtype=dtype)
    for start, stop in itertools.pairwise(bounds):
        piece = buffer[: (stop - start) * small].normal_(generator=generator).view(stop - start, small)
        row = start
        while row < stop:  # copied block by block into the column-major blocks
            b, i = divmod(row, big)
            take = min(stop - row, big - i)
            out[b, i : i + take].copy_(piece[row - start : row - start + take])
            row += take
    return out


def _qr_in_place(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, diagonal of R) of the reduced QR of the column-major blocks ``a``, computed in ``a``'s
    memory: geqrf then orgqr (``householder_product``), the two calls ``torch.linalg.qr`` makes on
    every device (its ``linalg_qr_helper_default``, torch 2.13), without its column-major copy of
    the input and its full R, so Q holds the same bits."""
    tau = torch.empty((*a.shape[:-2], a.shape[-1]), dtype=a.dtype, device=a.device)
    torch.geqrf(a, out=(a, tau))
    diagonal = torch.diagonal(a, dim1=-2, dim2=-1).clone()
    torch.linalg.householder_product(a, tau, out=a)
    return a, diagonal


def _column_major_draw(
    size: tuple[int, int, int], dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """The values of one ``normal_`` call on a contiguous (batch, big, small) tensor, in column-major
    blocks, on any device: the draw, then one copy (a GPU generator's values depend on the call's
    size, so the draw cannot be split as :func:`_column_major_normal` splits a CPU one). The draw
    is freed on return: two copies of the weight at the peak, one after."""
    drawn = torch.empty(size, dtype=dtype, device=device).normal_(generator=generator)
    out = torch.empty((size[0], size[2], size[1]), dtype=dtype, device=device).mT
    return out.copy_(drawn)


def _torch_order_draw(
    size: tuple[int, int, int], dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """``torch.nn.init.orthogonal_``'s gaussian for (batch, big, small) blocks wider than tall: one
    ``normal_`` call on a contiguous (batch, rows, cols) tensor, transposed, so column-major as
    drawn (no copy). (A tall or square block's torch order is the one initscale draws anyway.)"""
    return torch.empty((size[0], size[2], size[1]), dtype=dtype, device=device).normal_(generator=generator).mT


def orthogonal_values(
    dist: OrthogonalDist, layout: Layout, out: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Haar-random orthogonal blocks (:func:`initscale._shared.orthogonal`) for ``out``, drawn from
    ``generator`` in float64 for a float64 weight, else float32, and factored in place
    (:func:`_qr_in_place`): Q takes the gaussian's memory, and the phases and the gain multiply it
    in place (``scale_``).

    The gaussian: on the CPU drawn piece by piece straight into column-major blocks
    (:func:`_column_major_normal`), one working-dtype copy of the weight in all; on other devices
    one ``normal_`` draw and its column-major copy (:func:`_column_major_draw`), two copies at the
    peak, one after (``torch.linalg.qr`` of the draw took three: the draw, Q and R). Either way
    the values of ``torch.linalg.qr`` of one ``normal_`` draw of (batch, big, small). With
    ``native="torch"`` a wide block's gaussian is drawn as ``torch.nn.init.orthogonal_`` draws
    it (:func:`_torch_order_draw`: one copy, no transpose copy), which gives its values."""
    dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
    device = out.device
    blocks = layout.blocks(tuple(out.shape))
    _, (_, _, rows, _, i, rf) = blocks
    wide = rows < i * rf

    def normal(size: tuple[int, int, int]) -> torch.Tensor:
        if dist.native == "torch" and wide:
            return _torch_order_draw(size, dtype, device, generator)
        if device.type == "cpu":
            return cast(torch.Tensor, _column_major_normal(size, dtype, generator))
        return _column_major_draw(size, dtype, device, generator)

    ops = SimpleNamespace(
        normal=normal,
        qr=_qr_in_place,
        diagonal=lambda d: d,  # qr gives R's diagonal
        phase=torch.sign,
        swap=lambda q: q.transpose(-1, -2),
        permute=lambda x, axes: x.permute(*axes),
        scale_=lambda x, factor: x.mul_(factor),  # in place: no copy for the phases and the gain
    )
    result: torch.Tensor = orthogonal(dist.gain, blocks, tuple(out.shape), ops)
    return result


_SAMPLE_FORMATS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # _kernels.cpu.SAMPLE_FORMATS
_WORD = 0xFFFFFFFF


def sampler_ready(dist: Distribution, tensor: torch.Tensor) -> tuple[Any, int, tuple[int, tuple[float, ...]]] | None:
    """(kernel, output format, parameters) when the compiled CPU sampler applies to ``tensor``
    (see :func:`sampled`), else None."""
    out_format = _SAMPLE_FORMATS.get(tensor.dtype)
    if (
        out_format is None
        or isinstance(dist, OrthogonalDist)
        or not hasattr(dist, "native")
        or dist.native is not None
        or tensor.device.type != "cpu"
        or not dense(tensor)
    ):  # constants (no marker) and orthogonal matrices have no sampler
        return None
    params = _stream_kernel.sample_params(dist)
    if params is None:
        return None
    kernel = _stream_kernel.load()
    return None if kernel is None else (kernel, out_format, params)


def sampled(dist: Distribution, tensor: torch.Tensor, generator: torch.Generator | None) -> bool:
    """Draw ``tensor`` with the compiled CPU sampler (:func:`initscale._kernels.cpu.sample`) if it
    applies, and say whether it did: a dense float32/bfloat16/float16 CPU tensor, a normal,
    uniform or ordinary truncated normal (|α|, |β| <= 4) without a ``native`` marker (``torch.*``
    presets keep torch's own calls), and a compiled kernel (else torch's ops, as before).

    The Philox key and counter words are one small draw of 128 bits from ``generator`` (or torch's
    global generator), so a seed reproduces the values, and every element depends only on them and
    its place in memory, never on the thread count; the work is split over
    ``torch.get_num_threads()`` threads. Each value is computed in float32 and stored once, clipped
    first to the bounds that hold in the stored dtype (:func:`initscale.rounding.representable_bounds`)."""
    ready = sampler_ready(dist, tensor)
    if ready is None:
        return False
    kernel, out_format, params = ready
    words = torch.empty(2, dtype=torch.int64).random_(-(2**63), None, generator=generator).tolist()
    key = (words[0] & _WORD, (words[0] >> 32) & _WORD, words[1] & _WORD, (words[1] >> 32) & _WORD)
    bounds = None if dist.bounds is None else representable_bounds(*dist.bounds, str(tensor.dtype))
    _stream_kernel.sample(
        kernel, tensor.data_ptr(), out_format, tensor.numel(), key, *params, bounds, threads=torch.get_num_threads()
    )
    torch.autograd.graph.increment_version(tensor)  # written behind torch's back: as an in-place op would
    return True


def torchs_stream(dist: Distribution, tensor: torch.Tensor) -> bool:
    """Whether :func:`fill` draws ``tensor`` with torch's own call, as ``torch.nn.init`` does (a
    ``native="torch"`` normal, uniform or truncated normal of a float32/float64 tensor,
    or such a normal in any dtype: torch's ``normal_`` rounds once), so that it must be drawn
    whole and on its own to give torch's values. Other natives in float16/bfloat16 are initscale's
    draws (float32-staged uniforms, exact truncation) and may be drawn in bounded pieces."""
    if getattr(dist, "native", None) != "torch" or isinstance(dist, OrthogonalDist):
        return False
    return tensor.dtype in (torch.float32, torch.float64) or isinstance(dist, NormalDist)


def torch_trunc_normal(dist: TruncatedNormalDist, tensor: torch.Tensor, generator: torch.Generator | None) -> bool:
    """Draw a ``native="torch"`` truncated normal with ``torch.nn.init.trunc_normal_`` itself, and
    say whether it did: a float32/float64 tensor and a finite interval (torch's ``uniform_(a, b)``
    raises on an infinite bound). torch 2.13's sampler is exact (rejection: normal proposals where
    [a, b] holds over 0.3 of the mass, else uniform proposals with a density test), so the values
    are torch's for the same generator; then clamped to the bounds that hold in the stored dtype
    (torch compares with a and b rounded to nearest, which may lie one ulp outside; a value there
    has probability about one ulp's mass). Not for bfloat16/float16 (torch's bounds round outward
    there, by up to half an ulp of the dtype: docs/conventions.md) nor one-sided intervals: those
    take initscale's own exact sampler, as every other truncated normal does."""
    if tensor.dtype not in (torch.float32, torch.float64) or not (math.isfinite(dist.low) and math.isfinite(dist.high)):
        return False
    torch.nn.init.trunc_normal_(tensor, dist.loc, dist.sigma, dist.low, dist.high, generator=generator)
    tensor.clamp_(*representable_bounds(dist.low, dist.high, str(tensor.dtype)))
    return True


def fill(dist: Distribution, layout: Layout | None, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
    if isinstance(dist, ConstantDist):
        tensor.fill_(dist.value)
        return
    if isinstance(dist, (NormalDist, UniformDist, TruncatedNormalDist)) and sampled(dist, tensor, generator):
        return
    if isinstance(dist, TruncatedNormalDist) and dist.native == "torch" and torch_trunc_normal(dist, tensor, generator):
        return
    if isinstance(dist, TruncatedNormalDist):
        if _triton_sampler.usable(tensor):  # a GPU: one fused pass, stored once
            code, params, wide = _triton_sampler.sampler_params(dist)
            _triton_sampler.fill(
                tensor, code, params, representable_bounds(dist.low, dist.high, str(tensor.dtype)), wide, generator
            )
            return
        if tensor.dtype in LOW_PRECISION and tensor.device.type == "cpu" and tensor.is_contiguous():
            truncated_staged(dist, tensor, generator)
            return
        values = truncated(dist, tensor, generator)
        if values is not tensor:
            tensor.copy_(values)
        return
    if isinstance(dist, OrthogonalDist):
        if layout is None:
            raise ValueError("An orthogonal init needs the weight's layout.")
        tensor.copy_(orthogonal_values(dist, layout, tensor, generator))
        return
    # bf16/fp16: torch's own normal_ samples in float and rounds once, but its uniform_ computes in
    # the low precision and is biased (docs/conventions.md, section 7): uniforms are staged in fp32.
    if isinstance(dist, UniformDist) and tensor.dtype in LOW_PRECISION and _triton_sampler.usable(tensor):
        code, params = kernel_params(dist)  # a GPU: sampled in float32 registers, stored once
        _triton_sampler.fill(
            tensor, code, params, representable_bounds(dist.low, dist.high, str(tensor.dtype)), False, generator
        )
        return
    staged = tensor.dtype in LOW_PRECISION and not isinstance(dist, NormalDist)
    target = tensor.float() if staged else tensor
    if isinstance(dist, NormalDist):
        target.normal_(dist.mean, dist.std, generator=generator)
    elif isinstance(dist, UniformDist):
        # Bounds that hold once stored (initscale.rounding). low + (high - low)·u with u < 1 stays
        # inside representable symmetric bounds in the sampling precision; other intervals, and
        # float32 samples stored in a narrower dtype, are clamped to them.
        low, high = representable_bounds(dist.low, dist.high, str(tensor.dtype))
        if target is tensor:  # the bounds move by under one ulp: sample inside them
            target.uniform_(low, high, generator=generator)
            if low != -high:
                target.clamp_(low, high)
        else:  # float32 staging for a narrower dtype, whose ulp is too wide to move the bounds by
            target.uniform_(dist.low, dist.high, generator=generator).clamp_(low, high)
    else:  # pragma: no cover - every Distribution is handled above
        raise TypeError(f"Unknown distribution {dist!r}.")
    if target is not tensor:
        tensor.copy_(target)


def dense(tensor: torch.Tensor) -> bool:
    """Every element at its own place in one block of memory (contiguous up to a permutation of
    the axes: a transposed weight is dense, a broadcast or sliced one is not)."""
    expected = 1
    for stride, n in sorted((st, n) for st, n in zip(tensor.stride(), tensor.shape, strict=True) if n != 1):
        if stride != expected:
            return False
        expected *= n
    return True
