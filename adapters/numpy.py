"""NumPy reference adapter: exact sampling of every initscale distribution.

``initializer(spec, layout="keras")`` returns ``fn(shape, *, rng, dtype=np.float32)``. Draws are
made in float64 and cast once, so float16/32/64 results differ only by the final rounding.
Truncated normals are drawn by inverse CDF (never by clipping or rejection): u is uniform on
[Φ(α), Φ(β)] and x = loc + σ·Φ⁻¹(u), with α, β the bounds in σ units; an interval in the upper
tail is sampled by symmetry from the lower one, where Φ⁻¹ keeps full relative precision.

Example:
    >>> import numpy as np, initscale
    >>> init = initializer(initscale.presets.get("he_normal"), layout="torch")
    >>> w = init((256, 128), rng=np.random.default_rng(0))
    >>> w.shape, w.dtype
    ((256, 128), dtype('float32'))
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Protocol, cast

import numpy as np
from numpy.typing import DTypeLike, NDArray

from initscale import _validate
from initscale._kernels import cpu as _stream_kernel
from initscale._shared import lower_tail, orthogonal
from initscale.distributions import (
    ConstantDist,
    Distribution,
    NormalDist,
    OrthogonalDist,
    TruncatedNormalDist,
    UniformDist,
)
from initscale.fans import Layout, LayoutLike
from initscale.normal_math import far_tail_offset, ndtri, normal_cdf, truncated_plan
from initscale.plan import WeightPlan, plans
from initscale.specs import Spec
from initscale.streams import Stream, plan_values, portable

__all__ = ["Initializer", "NumpyInitializer", "initializer", "sample"]

_DTYPES = ("float16", "float32", "float64")


class NumpyInitializer(Protocol):
    """``fn(shape, *, rng, dtype=np.float32) -> np.ndarray``."""

    def __call__(
        self, shape: Sequence[int], *, rng: np.random.Generator | int | None = None, dtype: DTypeLike = np.float32
    ) -> NDArray[Any]: ...


Initializer = NumpyInitializer  # the contract's name for the type initializer() returns (initscale._registry)


def _dtype(dtype: DTypeLike) -> np.dtype[Any]:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in _DTYPES:
        raise TypeError(f"Argument `dtype` must be one of {', '.join(map(repr, _DTYPES))}. Received: dtype={dtype!r}.")
    return dt


def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"Argument `rng` must be a numpy.random.Generator or an int seed. Received: rng={rng!r}. "
        "Use numpy.random.default_rng(seed)."
    )


def _truncated(dist: TruncatedNormalDist, size: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
    """Inverse CDF in float64, from the side where the interval is representable
    (:func:`initscale.normal_math.truncated_plan`): one-sided, far-tail and narrow intervals by
    Φ⁻¹ of u ∈ (Φ(lo), Φ(hi)] (never 0) or, beyond 37σ, by the exact offset from the bound."""
    a, b = dist.standard_bounds
    plan = truncated_plan(a, b, "float64")
    if plan.method == "ndtri":
        z = np.clip(ndtri(plan.p_hi - plan.p_width * rng.random(size)), plan.z_low, plan.z_high)
        return dist.loc + plan.sign * dist.sigma * z
    if plan.method == "far":
        e = -np.log1p(-plan.kept * rng.random(size))
        z = cast(
            "NDArray[np.float64]",
            np.clip(-(plan.a + far_tail_offset(e, plan.a, plan.log_s_a, np)), plan.z_low, plan.z_high),
        )
        return dist.loc + plan.sign * dist.sigma * z
    a, b, flip = lower_tail(a, b)  # both bounds in the upper tail: sample -X on [-b, -a] instead
    u = rng.uniform(normal_cdf(a), normal_cdf(b), size)
    z = np.clip(ndtri(u), a, b)  # the clip only absorbs the last-bit rounding of Φ⁻¹
    return dist.loc + dist.sigma * (-z if flip else z)


def _orthogonal(
    dist: OrthogonalDist, layout: Layout, shape: tuple[int, ...], rng: np.random.Generator
) -> NDArray[np.float64]:
    """Haar-random orthogonal blocks (:func:`initscale._shared.orthogonal`) from ``rng``, in float64."""
    ops = SimpleNamespace(
        normal=rng.standard_normal,
        qr=np.linalg.qr,
        diagonal=lambda r: np.diagonal(r, axis1=-2, axis2=-1),
        phase=np.sign,  # Mezzadri 2007: unique Haar Q
        swap=lambda q: np.swapaxes(q, -1, -2),
        permute=np.transpose,
    )
    result: NDArray[np.float64] = orthogonal(dist.gain, layout.blocks(shape), shape, ops)
    return result


def sample(
    dist: Distribution, shape: Sequence[int], rng: np.random.Generator, layout: Layout | None = None
) -> NDArray[np.float64]:
    """Draw ``dist`` in float64 for a weight of ``shape`` (``layout`` only for orthogonal)."""
    size = tuple(shape)
    if isinstance(dist, NormalDist):
        return dist.mean + dist.std * rng.standard_normal(size)
    if isinstance(dist, TruncatedNormalDist):
        return _truncated(dist, size, rng)
    if isinstance(dist, UniformDist):
        return rng.uniform(dist.low, dist.high, size)
    if isinstance(dist, ConstantDist):
        return np.full(size, dist.value, dtype=np.float64)
    if isinstance(dist, OrthogonalDist):
        if layout is None:
            raise ValueError("An orthogonal draw needs the weight's layout.")
        return _orthogonal(dist, layout, size, rng)
    raise TypeError(f"Unknown distribution {dist!r}.")


def _kernel_stream(stream: Stream, plan: WeightPlan) -> NDArray[Any] | None:
    """float32 and float16 streams from the compiled kernel (:mod:`initscale._kernels.cpu`),
    equal to :func:`initscale.streams.stream_values` (float16 through float32 rounded to odd);
    None where the kernel is not built, or for float64 (whose Φ⁻¹ tails differ from NumPy's log
    by up to a few ulps: the reference itself is used) and for weights of more axes than the
    kernel walks (:data:`initscale._kernels.cpu.MAX_AXES`)."""
    dims, dt = plan.shape, np.dtype(plan.dtype)
    if dt not in (np.float32, np.float16) or len(dims) > _stream_kernel.MAX_AXES:
        return None
    lib = _stream_kernel.load()
    if lib is None:
        return None
    portable(plan)
    out = np.empty(dims, dtype=np.float32)
    out_format = _stream_kernel.output_format(dt.name)
    _stream_kernel.draw(
        lib,
        out.ctypes.data,
        out_format,
        dims,
        [s // out.itemsize for s in out.strides],
        plan.strides,
        plan.dist,
        stream.key,
        plan.clip,
        threads=os.cpu_count() or 1,
        gates=plan.gates,
    )
    return out if dt == np.float32 else out.astype(dt)


def initializer(spec: Spec, layout: LayoutLike = "keras", *, stream: Stream | None = None) -> NumpyInitializer:
    """Compile ``spec`` into ``fn(shape, *, rng, dtype=np.float32)``.

    The contract's ``initializer(spec, layout=<native>, *, stream=None)``
    (:mod:`initscale.adapters`), with no extras.

    Args:
        spec: any initscale spec.
        layout: how to read fans from the shape (default ``"keras"``: (*kernel, in, out)).
            Specs with a fixed scale (Normal, Uniform, Constant, ...) ignore it, so they also
            fill biases and other rank-1 weights.
        stream: an :class:`initscale.Stream`, or None (draw from ``rng``); see below.

    Each call draws from ``rng`` (a ``numpy.random.Generator``, or an int seed); the
    distribution for each shape is resolved once and cached. With ``stream`` (an
    :class:`initscale.Stream`) the values are the portable stream's instead (``rng`` is then not
    needed): the same in torch and JAX for the same seed and name (:mod:`initscale.streams`);
    float32 and float16 from the compiled kernel where a C compiler built it (equal to the
    reference, :func:`initscale.streams.stream_values`), float64 from the reference.
    """
    plan_of, fan_layout = plans(spec, layout)
    if stream is not None and not isinstance(stream, Stream):
        raise TypeError(f"Argument `stream` must be an initscale.Stream. Received: stream={stream!r}.")

    def init(
        shape: Sequence[int], *, rng: np.random.Generator | int | None = None, dtype: DTypeLike = np.float32
    ) -> NDArray[Any]:
        dims = _validate.shape("shape", shape)
        dt = _dtype(dtype)
        if stream is not None:
            planned = plan_of(dims, dt.name)
            fast = _kernel_stream(stream, planned)
            return plan_values(stream, planned) if fast is None else fast
        if rng is None:
            raise TypeError(
                "Argument `rng` is required (a numpy.random.Generator or an int seed) unless the "
                "initializer was built with stream=initscale.Stream(seed, name)."
            )
        generator = _rng(rng)
        if math.prod(dims) == 0:
            return np.zeros(dims, dtype=dt)
        planned = plan_of(dims, dt.name)
        values = sample(planned.dist, dims, generator, planned.layout)
        clip = planned.clip  # bounds that hold once rounded to dt (initscale.rounding)
        return (values if clip is None else np.clip(values, *clip)).astype(dt)

    init.__doc__ = f"NumPy initializer for {spec!r} (layout {fan_layout})."
    return init
