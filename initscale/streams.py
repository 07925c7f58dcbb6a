"""Portable streams: the same seed and name give the same weights in every framework.

A :class:`Stream` names one weight's random numbers. Its values are defined, element by element,
by this module, so NumPy, torch and JAX compute the same numbers (the integer stage bit for bit;
the float stage as stated below) whatever the framework's layout or the weight's sharding:

1. **Key**: the first 8 bytes of BLAKE2b(``"initscale-stream-v1:{seed}:{name}"``), read as two
   little-endian uint32 words (k0, k1).
2. **Canonical index**: the element's position in the weight's *canonical logical layout*
   (batch, out, in, receptive axes, row-major; stacked input groups, as in a Keras depthwise
   kernel, before the out axes) — the same for a torch ``Linear`` weight (out, in) and a
   Keras/Flax ``Dense`` kernel (in, out), for a torch depthwise (C·m, 1, k, k) and a Keras
   depthwise (k, k, C, m) kernel. Stacked recurrent gates count in the canonical gate order
   (torch's: LSTM i, f, g, o; GRU r, z, n), so a Keras GRU kernel, which stacks (z, r, h),
   gets the same values per gate as a torch GRU weight (:func:`gate_index`). Element ``i`` is
   lane ``i % 4`` of the Philox4x32-10 block with counter (i // 4 mod 2³², i // 2³⁴, 0, 0).
3. **Philox4x32-10** (Salmon et al., SC'11; Random123's known-answer vectors are in the tests):
   ten rounds of (hi₀, lo₀) = M₀·c₀, (hi₁, lo₁) = M₁·c₂, c ← (hi₁⊕c₁⊕k₀, lo₁, hi₀⊕c₃⊕k₁, lo₀), the
   key bumped by the Weyl constants between rounds. Each product is one multiply in 64-bit
   integers (NumPy uint64; torch int64, whose wrap keeps all 64 bits), or 16-bit partial products
   in uint32 (JAX without x64): the same words either way.
4. **Uniform**: u = (2·(x >> 9) + 1) · 2⁻²⁴, one of 2²³ odd multiples of 2⁻²⁴ in (0, 1), exact in
   float32 and symmetric (u and 1 − u are both values).
5. **Distribution**: uniform ``low + (high − low)·u``; normal ``mean + std·Φ⁻¹(u)``; truncated
   normal ``loc + σ·Φ⁻¹(Φ(a) + u·(Φ(b) − Φ(a)))`` (an upper-tail interval as the mirror of the
   lower one), in float64 where the backend has it. Beyond Φ's range (the interval, mirrored to
   the lower tail, below −37σ in float64, −11σ in a float32 stage:
   :func:`initscale.normal_math.truncated_plan`) the same quantile is computed from the bound
   instead: z = −(α + y) with α = −hi and y the exact offset
   (:func:`initscale.normal_math.far_tail_offset`, its log1p written as
   log(w) − ((w − 1) − t)/w, w = 1 + t, so only ``log`` and ``sqrt`` are needed) at
   E = −log(1 − kept·(1 − u)), kept = 1 − Q(β)/Q(α) (Q(x) = Φ(−x), β = −lo): every value
   finite and inside the bounds at any distance. ``offset + width·u`` (the uniform, and the
   truncated normal's Φ⁻¹ argument) is RN(offset + RN(width·u)), computed as
   ``offset + (hi·u + lo·u)`` with ``width = hi + lo`` split so that both products are exact
   (:func:`split_width`): a compiler that fuses a multiply and an add into one FMA (XLA does, on
   CPU and GPU) then rounds the same as one that does not. A bounded distribution is then clipped to
   the bounds representable in the weight's dtype (:mod:`initscale.rounding`), and the values
   are rounded once to that dtype. (NumPy casts float64 straight to float16; the other paths go
   through float32 rounded to odd. A plain float64 → float32 → float16/bfloat16 cast, which
   torch, TensorFlow and XLA do, rounds twice: 31 of 530,965 float16 values of a test weight
   were one ulp off.)
   Φ⁻¹ is Wichura's AS241 in the reference, the C kernel and the Triton kernel, else the
   backend's own ``ndtri``, so normal and truncated-normal values may differ by a few ulps
   between backends: in float64 within 8 ulps of the weight's largest magnitude (measured at
   most 6 on TensorFlow, JAX with x64 and torch; tests/test_streams.py); rounded to float32
   they were equal in every test in NumPy, torch, TensorFlow and JAX with x64. The integers
   never differ; the uniforms and the uniform distribution's values (float64 included) never
   differ wherever the float stage runs in float64 (all but JAX without x64, whose float32
   stage is within 8 float32 ulps; the Triton kernel has not run on a GPU). Each backend gives
   one stream the same values on every call, eager or compiled.

Generation follows the definition without its cost: a box of the weight (the whole of it, or one
shard) is cut into runs of consecutive canonical indices (:func:`runs`), and each run costs one
Philox block per four elements (:func:`run_bits`); only the box's own elements are generated.
The steps are written once, against a few array operations each adapter supplies
(:class:`StreamOps`): :func:`draw` (a box in one piece: the NumPy reference, Keras on TensorFlow
and on backends without an adapter of their own) and :func:`pieces` (piece by piece, each written
where it sits: torch's ops), both :func:`run_bits`, :func:`uniforms`, :func:`finish` (the float
stage: :func:`transform`, the clip to the dtype's bounds, one rounding) and :func:`to_layout`.
JAX keeps the definition's element-by-element integer stage (XLA partitions it under
``out_shardings``) and shares :func:`uniforms` and :func:`finish`.
On the CPU, torch and the NumPy adapter (float32, float16) run a small C kernel instead
(:mod:`initscale._kernels.cpu`, built with the system compiler on first use): the definition
element by element in one pass, a Philox block shared by the four elements of a block; without a
compiler, the integer ops above. On a GPU with Triton, torch runs one Triton kernel
(``tl.randint4x`` is this Philox4x32-10).

Orthogonal specs are not portable (their QR differs between linear-algebra libraries).

Example:
    >>> import numpy as np, initscale
    >>> from initscale.streams import Stream, stream_values
    >>> spec = initscale.presets.get("he_uniform")
    >>> torch_form = stream_values(Stream(7, "fc.weight"), spec, (3, 5), "torch")     # (out, in)
    >>> keras_form = stream_values(Stream(7, "fc.weight"), spec, (5, 3), "keras")     # (in, out)
    >>> bool(np.array_equal(torch_form, keras_form.T))
    True
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from . import _validate
from ._shared import lower_tail
from .distributions import ConstantDist, Distribution, NormalDist, OrthogonalDist, TruncatedNormalDist, UniformDist
from .fans import LayoutLike
from .normal_math import TruncatedPlan, far_tail_offset, ndtri, normal_cdf, truncated_plan
from .plan import WeightPlan, canonical_strides, gate_index, weight_plan
from .rounding import clip_bounds
from .specs import Spec

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
else:
    from ._lazy import numpy as np

__all__ = [
    "PHILOX_M",
    "PHILOX_W",
    "Runs",
    "Stream",
    "StreamDraw",
    "StreamOps",
    "backend_draw",
    "canonical_strides",
    "draw",
    "finish",
    "gate_index",
    "inverse_permutation",
    "layout_uniforms",
    "philox4x32",
    "pieces",
    "plan_stream",
    "plan_values",
    "portable",
    "register_draw",
    "round_keys",
    "run_bits",
    "runs",
    "split_width",
    "stream_values",
    "to_layout",
    "transform",
    "uniform_from_bits",
    "uniforms",
]

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK16 = 0xFFFF
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Stream:
    """The random numbers of one weight: a seed (any non-negative int) and a name (its path)."""

    seed: int
    name: str = ""

    def __post_init__(self) -> None:
        _validate.integer("seed", self.seed, minimum=0)
        if not isinstance(self.name, str):
            raise TypeError(f"Argument `name` must be a str. Received: name={self.name!r}.")

    @property
    def key(self) -> tuple[int, int]:
        """The Philox key (k0, k1)."""
        digest = hashlib.blake2b(f"initscale-stream-v1:{self.seed}:{self.name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")

    def child(self, name: str) -> Stream:
        """The stream of a parameter below this one: same seed, ``name`` appended with ``/``."""
        return Stream(self.seed, f"{self.name}/{name}" if self.name else name)


def _mulhilo(a: Any, m: int) -> tuple[Any, Any]:
    """(hi, lo) 32-bit words of a·m for 32-bit a (any unsigned integer array) and constant m, from
    16-bit partial products, so no intermediate reaches 2³² and no constant exceeds 2¹⁶."""
    a0, a1 = a & _MASK16, a >> 16
    m0, m1 = m & _MASK16, m >> 16
    p00, p01, p10, p11 = a0 * m0, a0 * m1, a1 * m0, a1 * m1
    mid = (p00 >> 16) + (p01 & _MASK16) + (p10 & _MASK16)
    hi = p11 + (p01 >> 16) + (p10 >> 16) + (mid >> 16)
    lo = ((mid & _MASK16) << 16) | (p00 & _MASK16)
    return hi, lo


def round_keys(key: tuple[int, int], rounds: int = 10) -> list[tuple[int, int]]:
    """The key of each Philox round: (k0 + r·W0, k1 + r·W1) mod 2³²."""
    return [((key[0] + r * PHILOX_W[0]) & _MASK32, (key[1] + r * PHILOX_W[1]) & _MASK32) for r in range(rounds)]


def philox4x32(
    c0: Any, c1: Any, c2: Any, c3: Any, key: tuple[Any, Any], rounds: int = 10, const: Any = None, wide: bool = False
) -> tuple[Any, Any, Any, Any]:
    """Philox4x32-``rounds`` on arrays of 32-bit counter words.

    ``wide=True`` is for 64-bit integer arrays (NumPy uint64, torch int64): each 32×32-bit product
    is one multiply (wrapping in int64 keeps its 64 bits), the words are masked to 32 bits only
    before each multiply and at the end, and the rounds update the arrays in place where the
    array library can (so pass arrays the caller owns). ``wide=False`` is for
    unsigned 32-bit arrays (NumPy uint32, JAX uint32): the high word comes from 16-bit partial
    products. ``const`` turns a round-key word into the array library's scalar (JAX needs
    ``jnp.uint32`` for words ≥ 2³¹). ``key`` is two ints, or two uint32 arrays (JAX: a key traced
    under ``jit``, so one compiled program serves every stream).
    """
    if isinstance(key[0], int) and isinstance(key[1], int):
        schedule = [(k0, k1) if const is None else (const(k0), const(k1)) for k0, k1 in round_keys(key, rounds)]
    else:  # key words as uint32 arrays (a traced key under jit): bumped by the Weyl constants, wrapping
        assert const is not None, "array key words need `const` for the Weyl increments"
        schedule = [
            (key[0] + const((r * PHILOX_W[0]) & _MASK32), key[1] + const((r * PHILOX_W[1]) & _MASK32))
            for r in range(rounds)
        ]
    for k0, k1 in schedule:
        if wide:  # words carry junk above bit 31 until masked: before each multiply, and at the end
            c0 &= _MASK32
            c2 &= _MASK32
            c0 *= PHILOX_M[0]
            c2 *= PHILOX_M[1]
            hi1 = c2 >> 32
            hi1 ^= c1
            hi1 ^= k0
            hi0 = c0 >> 32
            hi0 ^= c3
            hi0 ^= k1
            c0, c1, c2, c3 = hi1, c2, hi0, c0
        else:
            hi0, lo0 = _mulhilo(c0, PHILOX_M[0])
            hi1, lo1 = _mulhilo(c2, PHILOX_M[1])
            c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    if wide:
        return c0 & _MASK32, c1 & _MASK32, c2 & _MASK32, c3 & _MASK32
    return c0, c1, c2, c3


def uniform_from_bits(x: NDArray[Any]) -> NDArray[np.float64]:
    """u = (2·(x >> 9) + 1) · 2⁻²⁴ ∈ (0, 1); 2·(x >> 9) + 1 is computed as (x >> 8) | 1."""
    odd = x >> 8
    odd |= 1
    u = odd.astype(np.float64)
    u *= 2.0**-24
    return u


@dataclass(frozen=True)
class Runs:
    """A box of a weight as runs of consecutive canonical indices: what a backend generates.

    The box's axes, taken slowest canonical stride first (``perm``, with the box's extent on each
    in ``counts``), form a row-major block of the canonical array; its trailing full axes merge
    into runs of ``run`` consecutive indices. Run ``r`` starts at ``base + Σ idx_j·stride_j`` over
    the ``rows`` axes (count, stride). ``aligned`` says every run starts at a multiple of 4 (a
    Philox block boundary), so no lanes need skipping.
    """

    perm: tuple[int, ...]
    counts: tuple[int, ...]
    rows: tuple[tuple[int, int], ...]
    base: int
    run: int

    @property
    def aligned(self) -> bool:
        return self.base % 4 == 0 and all(stride % 4 == 0 for _, stride in self.rows)

    @property
    def size(self) -> int:
        return self.run * math.prod(count for count, _ in self.rows)

    def split(self, max_size: int) -> list[tuple[Runs, int, int]]:
        """Pieces of about ``max_size`` elements (at least one run or, for a single run, a multiple
        of 4 elements), each with its [start, stop) in the box's flat canonical order: generating
        piece by piece keeps the temporaries in cache."""
        if self.size <= max_size:
            return [(self, 0, self.size)]
        if not self.rows:
            step = max(max_size // 4 * 4, 4)
            return [
                (
                    Runs(self.perm, (min(step, self.run - i),), (), self.base + i, min(step, self.run - i)),
                    i,
                    min(i + step, self.run),
                )
                for i in range(0, self.run, step)
            ]
        (count, stride), rest = self.rows[0], self.rows[1:]
        per_row = self.size // count
        step = max(max_size // per_row, 1)
        return [
            (
                Runs(
                    self.perm,
                    (per_row * min(step, count - i),),
                    ((min(step, count - i), stride), *rest),
                    self.base + i * stride,
                    self.run,
                ),
                i * per_row,
                min(i + step, count) * per_row,
            )
            for i in range(0, count, step)
        ]


def runs(shape: Sequence[int], strides: Sequence[int], box: Sequence[slice] | None = None) -> Runs:
    """The :class:`Runs` of ``box`` (contiguous slices, one per axis; the whole weight if None)
    of a weight of ``shape`` whose axes have the canonical ``strides``."""
    dims = tuple(shape)
    ranges = [(0, n) for n in dims] if box is None else [_slice_range(s, n) for s, n in zip(box, dims, strict=True)]
    perm = tuple(sorted(range(len(dims)), key=lambda axis: -strides[axis]))
    starts = [ranges[a][0] for a in perm]
    counts = tuple(ranges[a][1] for a in perm)
    canon = [strides[a] for a in perm]
    base = sum(start * stride for start, stride in zip(starts, canon, strict=True))
    k = len(perm)  # the axes from k on are full: they merge into each run
    while k > 0 and (starts[k - 1] == 0 and counts[k - 1] == dims[perm[k - 1]]):
        k -= 1
    if k == 0:
        return Runs(perm, counts, (), base, math.prod(counts))
    run = counts[k - 1] * canon[k - 1]
    rows = tuple((counts[j], canon[j]) for j in range(k - 1) if counts[j] != 1)
    return Runs(perm, counts, rows, base, run if math.prod(counts) else 0)


def _slice_range(s: slice, n: int) -> tuple[int, int]:
    start, stop, step = s.indices(n)
    if step != 1:
        raise ValueError(f"A stream box takes contiguous slices (step 1). Received: {s!r}.")
    return start, max(stop - start, 0)


def run_bits(box_runs: Runs, key: tuple[int, int], xp: Any, wide: bool = True, const: Any = None) -> Any:
    """The Philox words of every element of ``box_runs``, shaped ``box_runs.counts`` (canonical order).

    ``xp`` gives the array library's ``arange(n)`` (of the counter dtype: NumPy uint64, torch
    int64, or unsigned 32-bit with ``wide=False``), ``stack(arrays)`` (on a new last axis) and
    ``take(array, index)`` (along the last axis). Each run costs ⌈run/4⌉ Philox blocks (one more
    where runs are not block-aligned), so a box costs about a quarter of a call per element.
    """
    if box_runs.size == 0:
        return xp.arange(0).reshape(box_runs.counts)
    starts = xp.arange(1) + box_runs.base
    for count, stride in box_runs.rows:
        starts = (starts[:, None] + xp.arange(count)[None, :] * stride).reshape(-1)
    lead = 0 if box_runs.aligned else 3
    nblocks = (box_runs.run + lead + 3) // 4
    blocks = (starts >> 2)[:, None] + xp.arange(nblocks)[None, :]
    last = box_runs.base + sum((count - 1) * stride for count, stride in box_runs.rows) + 4 * nblocks
    rows = blocks.shape[0]
    # (zero words as arrays: torch mixes Python ints into int64 ops more slowly than arrays)
    if last < 2**34:  # every block counter fits one word (c0 is masked inside, before its multiply)
        words = philox4x32(blocks, blocks * 0, blocks * 0, blocks * 0, key, const=const, wide=wide)
    else:
        high = blocks >> 32
        words = philox4x32(blocks, high, high * 0, high * 0, key, const=const, wide=wide)
    bits = xp.stack(words).reshape(rows, -1)
    if box_runs.aligned:
        bits = bits[:, : box_runs.run]
    else:
        bits = xp.take(bits, (starts & 3)[:, None] + xp.arange(box_runs.run)[None, :])
    return bits.reshape(box_runs.counts)


def _numpy_ops() -> Any:
    """NumPy's :class:`StreamOps` (uint64 counters; NumPy casts float64 to float16 rounding once)."""
    return SimpleNamespace(
        wide=True,
        const=None,
        arange=lambda n: np.arange(n, dtype=np.uint64),
        stack=lambda arrays: np.stack(arrays, axis=-1),
        take=lambda array, index: np.take_along_axis(array, index, axis=-1),
        to_float=lambda odd: odd.astype(np.float64),
        ndtri=ndtri,
        log=np.log,
        sqrt=np.sqrt,
        store=lambda values, dtype: np.asarray(values, dtype=dtype),
        permute=np.transpose,
        take_axis=lambda x, index, axis: np.take(x, index, axis=axis),
    )


def _reference(
    stream: Stream,
    dist: Distribution,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: str,
    box: Sequence[slice] | None,
    gates: tuple[int, list[int]] | None = None,
) -> NDArray[Any]:
    """:func:`draw` with NumPy: a box of a gated weight draws the gate axis whole, puts the gates in
    the framework's order, then cuts the box."""
    if isinstance(dist, OrthogonalDist):
        transform(dist, None)  # raises the explanation
    if gates is not None and box is not None:
        axis = gates[0]
        whole_axis = list(box)
        cut, whole_axis[axis] = whole_axis[axis], slice(None)
        values = draw(stream.key, dist, shape, strides, dtype, _numpy_ops(), whole_axis, gates)
        return values[(slice(None),) * axis + (cut,)]  # type: ignore[no-any-return]
    return draw(stream.key, dist, shape, strides, dtype, _numpy_ops(), box, gates)  # type: ignore[no-any-return]


def inverse_permutation(perm: Sequence[int]) -> tuple[int, ...]:
    """The axes that undo ``perm``: canonical-order arrays back to the framework's layout."""
    inverse = [0] * len(perm)
    for i, axis in enumerate(perm):
        inverse[axis] = i
    return tuple(inverse)


def split_width(width: float) -> tuple[float, float]:
    """``width`` as ``hi + lo`` exactly: ``hi`` its top 29 significant bits, ``lo`` the other 24.

    A stream uniform has 24 significant bits, so ``hi·u`` (at most 53 bits) and ``lo·u`` (at most
    48) are exact in float64, and ``offset + (hi·u + lo·u)`` is RN(offset + RN(width·u)) whether or
    not a compiler fuses a multiply and the add that uses it into one FMA (XLA does on CPU and GPU):
    fused or not, each multiply feeding an add is exact. ``(width, 0.0)`` where no such split
    exists (zero, non-finite, or below 2⁻⁹⁹⁷ in magnitude, where ``lo·u`` could be subnormal and inexact)."""
    if width == 0.0 or not math.isfinite(width) or math.frexp(width)[1] < -996:
        return width, 0.0
    mantissa, exponent = math.frexp(width)  # width = mantissa·2^exponent, 0.5 ≤ |mantissa| < 1
    hi = math.ldexp(math.trunc(math.ldexp(mantissa, 29)), exponent - 29)
    return hi, width - hi  # the difference is the low 24 bits of width: exact


def _scaled_uniform(offset: float, width: float, u: Any) -> Any:
    """offset + RN(width·u), rounded the same by every compiler (:func:`split_width`): no multiply
    feeding an add is inexact, so contracting it into an FMA cannot change a bit."""
    hi, lo = split_width(width)
    return offset + (hi * u + lo * u) if lo else offset + hi * u


def _work(u: Any) -> str:
    """The precision of the float stage: "float32" for a float32 array (JAX without x64), else
    "float64"."""
    dtype = getattr(getattr(u, "x", u), "dtype", None)
    return "float32" if dtype is not None and str(dtype).rsplit(".", 1)[-1] == "float32" else "float64"


def _far_plan(dist: TruncatedNormalDist, work: str) -> TruncatedPlan | None:
    """The far-tail plan of ``dist`` in the stage's precision, or None where Φ⁻¹ of a uniform
    keeps its digits (cached: :func:`initscale.normal_math.truncated_plan`)."""
    plan = truncated_plan(*dist.standard_bounds, work)
    return plan if plan.method == "far" else None


def _log1p(t: Any, log: Any) -> Any:
    """log(1 + t) from ``log`` alone (backends' log1p differ, and Triton's interpreter has none):
    w = 1 + t, log(w) − ((w − 1) − t)/w, the rounding of w corrected to first order."""
    w = 1.0 + t
    return log(w) - ((w - 1.0) - t) / w


def far_values(plan: TruncatedPlan, u: Any, xp: Any) -> Any:
    """The stream's far-tail quantile (module docstring, step 5): z ∈ [plan.z_low, plan.z_high],
    increasing in ``u`` as Φ⁻¹(Φ(lo) + u·(Φ(hi) − Φ(lo))) is; ``xp`` gives ``log`` and ``sqrt``
    for ``u``'s array type. 1 − kept·(1 − u) is an exact product added once (1 − u is exact and
    has 24 significant bits: :func:`split_width`)."""
    v = _scaled_uniform(1.0, -plan.kept, 1.0 - u)
    e = -xp.log(v)
    ops = SimpleNamespace(sqrt=xp.sqrt, log=xp.log, log1p=lambda t: _log1p(t, xp.log))
    y = far_tail_offset(e, plan.a, plan.log_s_a, ops)
    return (-(y + plan.a)).clip(plan.z_low, plan.z_high)


def transform(dist: Distribution, u: Any, ndtri_fn: Any = ndtri, xp: Any = None) -> Any:
    """The documented float stage: uniforms in (0, 1) to draws of ``dist``. ``u`` may be a NumPy,
    torch or JAX array (float64 where available); ``ndtri_fn`` is that library's Φ⁻¹ and ``xp``
    its namespace (``log``, ``sqrt``; default NumPy), for far-tail intervals. The
    ``offset + width·u`` steps round the same fused into an FMA or not (:func:`split_width`); the
    final ``mean + std·z`` of a normal may not (it is one more rounding beside the ndtri's)."""
    if isinstance(dist, ConstantDist):
        return u * 0.0 + dist.value
    if isinstance(dist, UniformDist):
        return _scaled_uniform(dist.low, dist.high - dist.low, u)
    if isinstance(dist, NormalDist):
        return dist.mean + dist.std * ndtri_fn(u)
    if isinstance(dist, TruncatedNormalDist):
        a, b = dist.standard_bounds
        far = _far_plan(dist, _work(u))
        if far is not None:  # beyond Φ's range in this precision: the offset from the bound
            return dist.loc + (far.sign * dist.sigma) * far_values(far, u, np if xp is None else xp)
        lo, hi, flip = lower_tail(a, b)  # an upper-tail interval keeps its precision as its mirror
        pa, pb = normal_cdf(lo), normal_cdf(hi)
        z = ndtri_fn(_scaled_uniform(pa, pb - pa, u)).clip(lo, hi)
        return dist.loc - dist.sigma * z if flip else dist.loc + dist.sigma * z
    if isinstance(dist, OrthogonalDist):
        raise ValueError(
            "Orthogonal specs have no portable stream: their QR differs between linear-algebra "
            "libraries. Use a framework generator for them."
        )
    raise TypeError(f"Unknown distribution {dist!r}.")  # pragma: no cover


class StreamOps(Protocol):
    """What :func:`draw` needs of an array library (as einops does, the adapter supplies them; the
    integer stage's ``arange``/``stack``/``take`` as :func:`run_bits` takes them). The arrays also
    take ``>>``, ``|``, ``*``, ``+``, ``-``, ``.reshape`` and ``.clip(low, high)``."""

    wide: bool
    """True for 64-bit counters (NumPy uint64, torch and TensorFlow int64): :func:`philox4x32`."""
    const: Callable[[int], Any] | None
    """A round-key word as the library's scalar, or None (Python ints mix in): :func:`philox4x32`."""

    def arange(self, n: int) -> Any:
        """0, 1, ..., n − 1 as counters."""

    def stack(self, arrays: Sequence[Any]) -> Any:
        """The arrays stacked on a new last axis."""

    def take(self, array: Any, index: Any) -> Any:
        """``array`` indexed along its last axis by ``index`` (take_along_axis)."""

    def to_float(self, odd: Any) -> Any:
        """Integers (below 2²⁴, exact) as the float stage's dtype: float64 where the library has it."""

    def ndtri(self, u: Any) -> Any:
        """The library's Φ⁻¹."""

    def log(self, x: Any) -> Any: ...

    def sqrt(self, x: Any) -> Any: ...

    def store(self, values: Any, dtype: str) -> Any:
        """Float-stage values rounded once to ``dtype`` (a format name): through float32 rounded to
        odd (:func:`initscale._shared.round_to_odd`) where the library's cast to float16/bfloat16
        rounds twice."""

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any:
        """``x`` with its axes in the order ``axes``."""

    def take_axis(self, x: Any, index: Sequence[int], axis: int) -> Any:
        """``x`` indexed by ``index`` along ``axis`` (the stacked-gate order)."""


def uniforms(bits: Any, ops: StreamOps) -> Any:
    """Step 4 of the module docstring: u = (2·(x >> 9) + 1)·2⁻²⁴, computed as ((x >> 8) | 1)·2⁻²⁴
    (exact in float32 and float64)."""
    return ops.to_float((bits >> 8) | 1) * 2.0**-24


def finish(dist: Distribution, u: Any, dtype: str, ops: StreamOps) -> Any:
    """Step 5: uniforms to ``dist`` (:func:`transform`, the library's Φ⁻¹), clipped to the bounds
    that hold in ``dtype`` (:func:`initscale.rounding.clip_bounds`) and rounded once to it."""
    values = transform(dist, u, ops.ndtri, ops)
    clip = clip_bounds(dist, dtype)
    return ops.store(values if clip is None else values.clip(*clip), dtype)


def to_layout(values: Any, box_runs: Runs, gates: tuple[int, Sequence[int]] | None, ops: StreamOps) -> Any:
    """Canonical-order values of ``box_runs`` (shaped ``box_runs.counts``) in the weight's own axes, the
    stacked gates in the framework's order (:func:`gate_index`)."""
    values = values.reshape(box_runs.counts)
    if box_runs.perm != tuple(range(len(box_runs.perm))):
        values = ops.permute(values, inverse_permutation(box_runs.perm))
    return values if gates is None else ops.take_axis(values, gates[1], gates[0])


def pieces(
    key: tuple[Any, Any], dist: Distribution, box_runs: Runs, dtype: str, ops: StreamOps, piece: int
) -> Iterator[tuple[int, int, Any]]:
    """The stream of one box (``box_runs``, :func:`runs`) piece by piece: (start, stop, values) with
    the stored values (1-D, ``dtype``) of elements [start, stop) of the box's canonical order, at
    most about ``piece`` of them at a time (:meth:`Runs.split`), so temporaries stay bounded."""
    for sub, start, stop in box_runs.split(piece):
        bits = run_bits(sub, key, ops, wide=ops.wide, const=ops.const).reshape(-1)
        yield start, stop, finish(dist, uniforms(bits, ops), dtype, ops)


def layout_uniforms(
    key: tuple[Any, Any],
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    ops: StreamOps,
    box: Sequence[slice] | None = None,
    gates: tuple[int, Sequence[int]] | None = None,
) -> Any:
    """The integer stage of a box of the weight, to its uniforms in the weight's own axes (the
    part of :func:`draw` that Keras on TensorFlow compiles)."""
    box_runs = runs(shape, strides, box)
    return to_layout(uniforms(run_bits(box_runs, key, ops, wide=ops.wide, const=ops.const), ops), box_runs, gates, ops)


def draw(
    key: tuple[Any, Any],
    dist: Distribution,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: str,
    ops: StreamOps,
    box: Sequence[slice] | None = None,
    gates: tuple[int, Sequence[int]] | None = None,
    float_first: bool = True,
) -> Any:
    """The stream of a box of a weight (the whole weight if None), in one piece, as ``dtype`` in
    the weight's own axes: Philox words on runs (:func:`run_bits`), :func:`uniforms`,
    :func:`finish`, :func:`to_layout`. ``float_first=False`` puts the uniforms in the weight's
    axes before the float stage (the same values; it keeps the element order each backend's
    float kernels have always seen). Adapters that fill memory in place go by :func:`pieces`."""
    box_runs = runs(shape, strides, box)
    if not float_first:
        return finish(dist, layout_uniforms(key, shape, strides, ops, box, gates), dtype, ops)
    bits = run_bits(box_runs, key, ops, wide=ops.wide, const=ops.const)
    return to_layout(finish(dist, uniforms(bits, ops), dtype, ops), box_runs, gates, ops)


FAR = 4  # the compiled kernels' code for a far-tail truncated normal (:func:`kernel_params`)


@functools.lru_cache(maxsize=1024)
def kernel_params(dist: Distribution) -> tuple[int, tuple[float, ...]]:
    """:func:`transform` (float64) as the compiled kernel's (code, parameters): constant (value);
    uniform (low, high − low); normal (mean, std); truncated normal (pa, pb − pa, z_low, z_high,
    loc, scale), the mirrored lower-tail form for upper-tail intervals, as :func:`transform` draws
    it; beyond Φ's float64 range code :data:`FAR` (α, kept, z_low, z_high, loc, scale, log S(α))
    of :func:`far_values`. Computed once per distribution (two Φ evaluations for a truncated normal)."""
    if isinstance(dist, ConstantDist):
        return 0, (dist.value,)
    if isinstance(dist, UniformDist):
        return 1, (dist.low, dist.high - dist.low)
    if isinstance(dist, NormalDist):
        return 2, (dist.mean, dist.std)
    if isinstance(dist, TruncatedNormalDist):
        a, b = dist.standard_bounds
        far = _far_plan(dist, "float64")
        if far is not None:
            return FAR, (far.a, far.kept, far.z_low, far.z_high, dist.loc, far.sign * dist.sigma, far.log_s_a)
        lo, hi, flip = lower_tail(a, b)  # mirrored: loc − σ·z == loc + (−σ)·z, exactly
        pa, pb = normal_cdf(lo), normal_cdf(hi)
        return 3, (pa, pb - pa, lo, hi, dist.loc, -dist.sigma if flip else dist.sigma)
    transform(dist, None)  # raises the explanation (orthogonal) or the type error
    raise AssertionError("unreachable")  # pragma: no cover


def plan_stream(
    stream: Stream, spec: Spec, shape: Sequence[int], layout: LayoutLike
) -> tuple[Distribution, tuple[int, ...]]:
    """What every backend needs: the distribution and the canonical strides of ``shape``
    (the cached :func:`initscale.plan.weight_plan`: initializers call this on every draw)."""
    if not isinstance(stream, Stream):
        raise TypeError(f"Argument `stream` must be an initscale.Stream. Received: stream={stream!r}.")
    plan = portable(weight_plan(spec, shape, layout))
    return plan.dist, plan.strides


def portable(plan: WeightPlan) -> WeightPlan:
    """``plan``, checked to have a portable stream (an orthogonal spec raises the explanation)."""
    if isinstance(plan.dist, OrthogonalDist):
        transform(plan.dist, None)  # raises the explanation
    return plan


def plan_values(stream: Stream, plan: WeightPlan, box: Sequence[slice] | None = None) -> NDArray[Any]:
    """The NumPy reference for a :class:`~initscale.plan.WeightPlan` with a dtype (see :func:`stream_values`)."""
    portable(plan)
    plan.clip  # noqa: B018  (raises for a bounded distribution in a plan without a dtype)
    return _reference(stream, plan.dist, plan.shape, plan.strides, np.dtype(plan.dtype).name, box, plan.gates)


def stream_values(
    stream: Stream,
    spec: Spec,
    shape: Sequence[int],
    layout: LayoutLike,
    box: Sequence[slice] | None = None,
    dtype: Any = "float32",
) -> NDArray[Any]:
    """The NumPy reference: the values of ``stream`` for a weight of ``shape`` in ``layout``
    (only the sub-box ``box`` of it when given, e.g. one shard), as ``dtype`` (float16, float32
    or float64; bounded draws clipped to the bounds representable in it)."""
    if not isinstance(stream, Stream):
        raise TypeError(f"Argument `stream` must be an initscale.Stream. Received: stream={stream!r}.")
    return plan_values(stream, weight_plan(spec, shape, layout, np.dtype(dtype).name), box)


StreamDraw = Callable[..., Any]
"""``draw(stream, dist, strides, shape, dtype, gates, out) -> array``: an adapter's stream draw on its
framework's arrays (``dtype`` a format name, ``gates`` as :func:`gate_index` gives, ``out`` an
array of ``shape`` and ``dtype`` to fill where the framework fills in place, else None)."""

_DRAWS: dict[str, StreamDraw] = {}


def register_draw(framework: str, draw: StreamDraw) -> None:
    """Make ``draw`` the stream draw of ``framework`` ("torch", "jax"): the adapter module calls
    this when imported, so another adapter (Keras on that backend) shares it through the core."""
    _DRAWS[framework] = draw


def backend_draw(framework: str) -> StreamDraw:
    """The stream draw registered for ``framework`` (importing ``initscale.adapters.<framework>``
    first, which registers it)."""
    if framework not in _DRAWS:
        importlib.import_module(f"initscale.adapters.{framework}")
    if framework not in _DRAWS:
        raise ValueError(
            f"No portable-stream draw is registered for framework={framework!r}; registered: {sorted(_DRAWS)}."
        )
    return _DRAWS[framework]
