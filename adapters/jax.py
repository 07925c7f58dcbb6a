"""JAX/Flax adapter: initscale specs as ``(key, shape, dtype) -> Array`` initializers, and pytree re-init.

``initializer(spec, layout=None, *, stream=None, in_axis=-2, out_axis=-1, batch_axis=(), dtype=jnp.float32)``
follows
``jax.nn.initializers.Initializer``: it is traceable under ``jax.jit`` (the shape and dtype are
static, the fans are computed from them in Python once per shape), so it works as
``kernel_init=`` in ``flax.linen`` and ``flax.nnx`` layers and inside
``jax.jit(..., out_shardings=...)``, where the shape is the global one and every device gets the
values of its shard. Typed keys (``jax.random.key``) and raw ``uint32`` keys
(``jax.random.PRNGKey``) are both accepted. ``layout=`` takes a named layer kind from the core
(``"flax.conv:groups=4"``, ``"flax.embed"``, ...) instead of axes.

Sampling: normal and uniform with ``jax.random``; truncated normals with
``jax.random.truncated_normal`` (inverse CDF in erf space, so the bounds hold exactly) at the
spec's own bounds and scale, upper-tail intervals drawn as the mirror of lower-tail ones.

Complex dtypes, as jax does: a normal is a circular complex normal (real and imaginary parts
each with half the variance); a symmetric uniform is uniform on a disk; a truncated normal
truncates the modulus at ``truncation`` pre-truncation standard deviations. In every case
E|w|² is the spec's variance. For the truncated normal this differs from jax, which divides by
0.95311164380491208 where the exact factor for a modulus cut at 2 is
√(1 − 4e⁻⁴/(1 − e⁻⁴)) = 0.9619618, so jax's complex ``variance_scaling`` has E|w|² =
1.0187 × scale/n.

Example:
    >>> import jax, initscale
    >>> from initscale.adapters import jax as isj
    >>> init = isj.initializer(initscale.presets.get("he_normal"))
    >>> w = init(jax.random.key(0), (128, 64))
    >>> bound = initscale.presets.get("he_normal").bounds(initscale.Fans(128, 64))[1]
    >>> bool(abs(w).max() <= bound), w.dtype
    (True, dtype('float32'))
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from initscale._registry import deprecated_positional, layout_like
from initscale._shared import lower_tail, orthogonal, round_to_odd
from initscale.distributions import (
    ConstantDist,
    Distribution,
    NormalDist,
    OrthogonalDist,
    TruncatedNormalDist,
    UniformDist,
)
from initscale.fans import Layout, LayoutLike, einsum_layout, resolve, stride_product
from initscale.normal_math import complex_truncated_rms, far_tail_offset, truncated_plan
from initscale.plan import WeightPlan, canonical_strides, gate_index, plans
from initscale.reinit import UNIT_OFFSET, Param, Report, Role, Target, Write, derived_to_set, mark_derived
from initscale.reinit import run as reinit_run
from initscale.rounding import clip_bounds
from initscale.specs import Spec
from initscale.streams import Stream, finish, philox4x32, portable, register_draw, uniforms

__all__ = ["Initializer", "check", "initializer", "lsuv", "reinit"]


class Initializer(Protocol):
    """jax's initializer protocol: ``init(key, shape, dtype=...) -> jax.Array``."""

    def __call__(self, key: Any, shape: Sequence[int], dtype: Any = ...) -> jax.Array: ...


# --- sampling --------------------------------------------------------------------------------------


def _check_key(key: Any) -> Any:
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape == ():
            return key
    elif dtype is not None and dtype == jnp.uint32 and tuple(key.shape) == (2,):
        return key
    raise TypeError(
        "Argument `key` must be one PRNG key: jax.random.key(seed) (typed) or jax.random.PRNGKey(seed) "
        f"(raw uint32, shape (2,)). Received: {type(key).__name__} with dtype {dtype} and shape "
        f"{getattr(key, 'shape', None)}. Split a batch of keys first."
    )


def _complex_disk(key: Any, shape: tuple[int, ...], real: Any, modulus_sq: jax.Array) -> jax.Array:
    theta = 2 * np.pi * jax.random.uniform(key, shape, real)
    return jnp.sqrt(modulus_sq) * jnp.exp(1j * theta)


def _sample_complex(key: Any, dist: Distribution, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    real = jnp.real(jnp.zeros((), dtype)).dtype
    k_r, k_theta = jax.random.split(key)
    if isinstance(dist, NormalDist):
        return (jax.random.normal(key, shape, dtype) * dist.std + dist.mean).astype(dtype)
    if isinstance(dist, UniformDist) and dist.low == -dist.high:  # disk: E|z|² = 2U·var
        r2 = 2.0 * jax.random.uniform(k_r, shape, real) * dist.variance
        return _complex_disk(k_theta, shape, real, r2).astype(dtype)
    if isinstance(dist, TruncatedNormalDist) and dist.loc == 0.0 and dist.low == -dist.high:
        t = dist.standard_bounds[1]
        # |z|²/c² ~ Exp(1) cut at t²: by inverse CDF, −log(1 − (1 − e^{−t²})·U); c makes E|z|² = var.
        u = jax.random.uniform(k_r, shape, real)
        kept = -math.expm1(-t * t)  # 1 − e^{−t²}: the Exp(1) mass below t²
        e = -jnp.log1p(-kept * u)
        scale2 = dist.variance / complex_truncated_rms(t) ** 2
        return _complex_disk(k_theta, shape, real, e * scale2).astype(dtype)
    raise TypeError(
        f"initscale draws complex weights for normal, symmetric uniform, centred symmetric truncated "
        f"normal and orthogonal specs. Received {dist!r} with dtype {jnp.dtype(dtype).name}."
    )


def _orthogonal(key: Any, dist: OrthogonalDist, layout: Layout, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """Haar-random orthogonal (unitary, for complex dtypes) blocks (:func:`initscale._shared.orthogonal`)
    from ``key``, in ``dtype`` or float32 for narrower ones."""
    work = dtype if jnp.dtype(dtype).itemsize >= 4 else jnp.float32
    ops = SimpleNamespace(
        normal=lambda size: jax.random.normal(key, size, work),
        qr=jnp.linalg.qr,
        diagonal=lambda r: jnp.diagonal(r, axis1=-2, axis2=-1),
        phase=lambda d: d / jnp.abs(d),  # the phases (signs for real dtypes)
        swap=lambda q: jnp.swapaxes(q, -1, -2),
        permute=lambda x, axes: x.transpose(axes),
    )
    result: jax.Array = orthogonal(dist.gain, layout.blocks(shape), shape, ops).astype(dtype)
    return result


@functools.partial(jax.jit, static_argnames=("sampler", "shape", "dtype"))
def _draw_real(key: Any, sampler: str, shape: tuple[int, ...], dtype: Any, p: jax.Array) -> jax.Array:
    """One compiled sampler per (sampler, shape, dtype); the distribution's numbers are traced
    arguments, so new scales or bounds do not recompile."""
    work = jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype
    p = p.astype(work)
    if sampler == "normal":  # p = (std, mean)
        return (jax.random.normal(key, shape, work) * p[0] + p[1]).astype(dtype)
    if sampler == "uniform":  # p = (low, high, clip low, clip high)
        out = jax.random.uniform(key, shape, work, p[0], p[1])
    elif sampler == "truncated":  # p = (a, b, sigma, loc, clip low, clip high), a <= 0
        out = jax.random.truncated_normal(key, p[0], p[1], shape, work) * p[2] + p[3]
    elif sampler == "truncated_mirror":  # an upper-tail interval drawn as the mirror of the lower one
        out = -jax.random.truncated_normal(key, -p[1], -p[0], shape, work) * p[2] + p[3]
    elif sampler == "truncated_ndtri":  # p = (p_hi, p_width, z low, z high, sign·sigma, loc, clip low, clip high)
        u = p[0] - p[1] * jax.random.uniform(key, shape, work)  # in (Φ(lo), Φ(hi)]: never 0
        out = jnp.clip(jax.scipy.special.ndtri(u), p[2], p[3]) * p[4] + p[5]
    else:  # "truncated_far": p = (a, kept, log S(a), z low, z high, sign·sigma, loc, clip low, clip high)
        e = -jnp.log1p(-p[1] * jax.random.uniform(key, shape, work))
        z = -(p[0] + far_tail_offset(e, p[0], p[2], jnp))
        out = jnp.clip(z, p[3], p[4]) * p[5] + p[6]
    return jnp.clip(out, p[-2], p[-1]).astype(dtype)  # bounds that hold in dtype (initscale.rounding)


def _sample(key: Any, dist: Distribution, layout: Layout | None, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    if isinstance(dist, ConstantDist):
        return jnp.full(shape, dist.value, dtype)
    if isinstance(dist, OrthogonalDist):
        if layout is None:  # pragma: no cover - the planner always gives one
            raise ValueError("An orthogonal init needs the weight's layout.")
        return _orthogonal(key, dist, layout, shape, dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return _sample_complex(key, dist, shape, dtype)
    params: tuple[float, ...]
    if isinstance(dist, NormalDist):
        sampler, params = "normal", (dist.std, dist.mean)
    elif isinstance(dist, UniformDist):
        sampler, params = "uniform", (dist.low, dist.high)
    elif isinstance(dist, TruncatedNormalDist):
        a, b = dist.standard_bounds
        plan = truncated_plan(a, b, "float64" if jnp.dtype(dtype) == jnp.float64 else "float32")  # _draw_real's work
        if plan.method == "erf":  # an ordinary interval: jax's own sampler, lower tail (erf precision)
            sampler = "truncated_mirror" if lower_tail(a, b)[2] else "truncated"
            params = (a, b, dist.sigma, dist.loc)
        elif plan.method == "ndtri":  # one-sided, far or narrow: Φ⁻¹ where Φ is representable
            sampler = "truncated_ndtri"
            params = (plan.p_hi, plan.p_width, plan.z_low, plan.z_high, plan.sign * dist.sigma, dist.loc)
        else:  # beyond Φ's range in the working precision: the offset from the bound
            sampler = "truncated_far"
            params = (plan.a, plan.kept, plan.log_s_a, plan.z_low, plan.z_high, plan.sign * dist.sigma, dist.loc)
    else:  # pragma: no cover - every Distribution is handled above
        raise TypeError(f"Unknown distribution {dist!r}.")
    clip = clip_bounds(dist, jnp.dtype(dtype).name)
    if clip is not None:
        params += clip
    wide = jnp.float64 if getattr(jax.config, "jax_enable_x64", False) else jnp.float32
    out: jax.Array = _draw_real(key, sampler, shape, jnp.dtype(dtype), jnp.asarray(params, wide))
    return out


def _check_dtype(dtype: Any) -> Any:
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"Argument `dtype` must be a JAX dtype. Received: dtype={dtype!r}.") from err
    if not jnp.issubdtype(dt, jnp.inexact):
        raise TypeError(
            f"initscale makes floating-point or complex weights only. Received: dtype={dt.name!r}; "
            "valid: bfloat16, float16, float32, float64, complex64, complex128."
        )
    return dt


def _stream_values(stream: Stream, plan: WeightPlan, dtype: Any) -> jax.Array:
    """The portable stream's values (see :mod:`initscale.streams`) with jnp uint32 integer ops:
    traceable, and under ``jax.jit(..., out_shardings=...)`` XLA computes each shard's elements
    on its own device."""
    portable(plan)
    return _stream_draw(stream, plan.dist, plan.strides, plan.shape, dtype, plan.gates)


def _stream_draw(
    stream: Stream,
    dist: Distribution,
    strides: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: Any,
    gates: tuple[int, list[int]] | None = None,
) -> jax.Array:
    if isinstance(dist, OrthogonalDist):
        raise ValueError("Orthogonal specs have no portable stream: their QR differs between linear-algebra libraries.")
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(
            f"Portable streams make real weights; dtype={jnp.dtype(dtype).name} is complex. Draw "
            "complex weights from a key (stream=None), or use a real dtype."
        )
    if math.prod(shape) >= 2**32:
        raise ValueError(
            f"Portable streams in JAX index elements with uint32: shape {shape} has 2^32 or more "
            "elements. Split the weight, or draw it with torch or NumPy."
        )
    key = jnp.asarray(np.array(stream.key, dtype=np.uint32))
    order = None if gates is None else (gates[0], tuple(gates[1]))
    out: jax.Array = _stream_compiled(key, dist, strides, shape, jnp.dtype(dtype), order)
    return out


def _shared_draw(
    stream: Stream,
    dist: Distribution,
    strides: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: Any,
    gates: tuple[int, list[int]] | None,
    out: None = None,
) -> jax.Array:
    """:func:`_stream_draw` as :data:`initscale.streams.StreamDraw` (Keras on JAX draws through it;
    JAX arrays are immutable, so ``out`` is None)."""
    return _stream_draw(stream, dist, strides, shape, dtype, gates)


register_draw("jax", _shared_draw)


def _set_low_bit(t: jax.Array, mask: jax.Array) -> jax.Array:
    bits = jax.lax.bitcast_convert_type(t, jnp.int32)
    return jax.lax.bitcast_convert_type(jnp.where(mask, bits | 1, bits), jnp.float32)


_ODD_OPS = SimpleNamespace(
    narrow=lambda x: x.astype(jnp.float32),
    widen=lambda x: x.astype(jnp.float64),
    where=jnp.where,
    toward_zero=lambda t: jnp.nextafter(t, jnp.zeros_like(t)),
    set_low_bit=_set_low_bit,
)
"""jnp's ops for :func:`initscale._shared.round_to_odd` (XLA's float64 → float16 cast rounds twice)."""


@functools.partial(jax.jit, static_argnames=("dist", "strides", "shape", "dtype", "gates"))
def _stream_compiled(
    key: jax.Array,
    dist: Distribution,
    strides: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: Any,
    gates: tuple[int, tuple[int, ...]] | None,
) -> jax.Array:
    """One compiled program per (distribution, shape, layout, dtype): the stream's key is traced,
    so every weight of a shape shares it, called eagerly (as flax's ``init`` runs) or inside a
    jit (inlined there, and partitioned under ``out_shardings``). XLA fuses multiply-adds into
    FMAs here; the transform's ``offset + width·u`` steps round the same either way
    (:func:`initscale.streams.split_width`), so uniforms are the reference's to the bit. A
    normal's ndtri and final ``mean + std·z`` are not proof against fusion: they were equal
    eagerly, under ``jit`` and inside a larger jitted program in every test (XLA fuses the same
    element-wise chain), and within 8 ulps of the reference in float64."""
    index = jnp.zeros((), jnp.uint32)
    for axis, (n, stride) in enumerate(zip(shape, strides, strict=True)):
        iota = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
        index = index + iota * jnp.uint32(stride) if n > 1 else index
    index = jnp.broadcast_to(index, shape)
    block, lane = index >> 2, index & 3
    zeros = jnp.zeros_like(block)
    words = philox4x32(block, zeros, zeros, zeros, (key[0], key[1]), const=jnp.uint32)
    bits = jnp.select([lane == 0, lane == 1, lane == 2], list(words[:3]), words[3])
    out: jax.Array = finish(dist, uniforms(bits, _OPS), jnp.dtype(dtype).name, _OPS)
    if gates is not None:  # stacked gates drawn in canonical order, put in the framework's (a Keras GRU)
        out = jnp.take(out, jnp.asarray(gates[1]), axis=gates[0])
    return out


def _store(values: jax.Array, dtype: str) -> jax.Array:
    if values.dtype == jnp.float64 and dtype in ("float16", "bfloat16"):
        values = round_to_odd(values, _ODD_OPS)  # XLA's float64 → float16 cast rounds twice, through float32
    return values.astype(dtype)


_OPS = SimpleNamespace(
    to_float=lambda odd: odd.astype(jnp.float64 if getattr(jax.config, "jax_enable_x64", False) else jnp.float32),
    ndtri=jax.scipy.special.ndtri,
    log=jnp.log,
    sqrt=jnp.sqrt,
    store=_store,
)
"""The float stage's :class:`initscale.streams.StreamOps` (:func:`initscale.streams.finish`): the
integer stage is the definition element by element (the canonical index from iotas of the
weight's own axes, a Philox block per element), which XLA partitions under ``out_shardings``
without a temporary of the whole weight (tests/test_jax_sharded.py), as the runs of
:func:`initscale.streams.run_bits` would not be."""


@deprecated_positional(
    ("spec", "in_axis", "out_axis", "batch_axis", "dtype"),
    new=2,
    is_old=lambda args: len(args) >= 2 and not layout_like(args[1]),
    since="0.2",
    removed_in="0.3",
)
def initializer(
    spec: Spec,
    layout: LayoutLike | None = None,
    *,
    stream: Stream | None = None,
    in_axis: int | Sequence[int] = -2,
    out_axis: int | Sequence[int] = -1,
    batch_axis: int | Sequence[int] = (),
    dtype: Any = jnp.float32,
) -> Initializer:
    """Compile ``spec`` into ``init(key, shape, dtype=dtype) -> jax.Array``.

    The contract's ``initializer(spec, layout=None, *, stream=None)`` (:mod:`initscale.adapters`)
    with JAX's keyword-only extras ``in_axis``, ``out_axis``, ``batch_axis``, ``dtype``. The
    positional form of ``jax.nn.initializers.variance_scaling``'s axes,
    ``initializer(spec, -2, -1)``, still works until initscale 0.3, with a DeprecationWarning.

    Args:
        spec: the initscale spec.
        layout: a named layer kind or :class:`~initscale.Layout`, used instead of the axes;
            None (the default): the axes.
        in_axis, out_axis, batch_axis: as in ``jax.nn.initializers.variance_scaling``; every other
            axis is receptive field.
        dtype: the default dtype of the result.
        stream: an :class:`initscale.Stream`: draw the portable stream instead of from ``key``
            (the key is then not used): the same values as NumPy and torch for the same seed and
            name, and the same on every call, eager or under ``jit``. With x64: uniforms and
            float32 weights to the bit, float64 normals and truncated normals within 8 ulps of
            the weight's largest magnitude (JAX's ndtri); without x64 (a float32 float stage)
            within 8 float32 ulps of the distribution's scale.

    The fans of each shape are computed once, in Python, so the result is traceable under
    ``jax.jit`` with static shapes.

    Example:
        >>> import jax, flax.linen as nn, initscale
        >>> from initscale.adapters import jax as isj
        >>> conv = nn.Conv(32, (3, 3), feature_group_count=4,
        ...                kernel_init=isj.initializer(initscale.presets.get("he_normal"), layout="flax.conv:groups=4"))
        >>> params = conv.init(jax.random.key(0), jax.numpy.zeros((1, 8, 8, 16)))
        >>> params["params"]["kernel"].shape
        (3, 3, 4, 32)
    """
    fan_layout: LayoutLike = layout if layout is not None else Layout(in_axis, out_axis, batch_axis, name="jax")
    plan_of, resolved = plans(spec, fan_layout)
    default_dtype = _check_dtype(dtype)

    if stream is not None and not isinstance(stream, Stream):
        raise TypeError(f"Argument `stream` must be an initscale.Stream. Received: stream={stream!r}.")

    def init(key: Any, shape: Sequence[int], dtype: Any = default_dtype) -> jax.Array:
        dims = tuple(int(d) for d in shape)
        if stream is not None:
            dt = _check_dtype(dtype)
            return _stream_values(stream, plan_of(dims, dt), dt)
        key = _check_key(key)
        planned = plan_of(dims, None)
        return _sample(key, planned.dist, planned.layout, dims, _check_dtype(dtype))

    init.__doc__ = f"Initialize with {spec!r} (layout {resolved})."
    return init


# --- pytree re-initialization ------------------------------------------------------------------------

_AUTO_NAME = re.compile(r"([A-Z][A-Za-z0-9]*?)_\d+\Z")  # linen names modules Dense_0, Conv_1 (not layer_0)
_NORMS = {"LayerNorm", "BatchNorm", "GroupNorm", "RMSNorm", "InstanceNorm"}
# Any other normalization layer by its class name: MyRMSNorm, T5LayerNorm, LayerNorm2d, ...
_NORM_NAME = re.compile(r"(Norm|Normalization)\d*d?\Z")
_OFFSET_LEAVES = {"bias", "beta", "offset", "shift"}
_SCALE_LEAVES = {"scale", "weight", "gamma"}
_ATTENTION = {"MultiHeadDotProductAttention", "MultiHeadAttention", "SelfAttention"}
_WEIGHT_LEAVES = frozenset({"w", "kernel"})  # beside one of these, a leaf ``b`` is the module's bias
_GENERAL = {"DenseGeneral", "LinearGeneral"}  # linen's and nnx's n-d dense: kernel (*batch, *in, *out)


def _key_name(entry: Any) -> str | None:
    if isinstance(entry, jax.tree_util.DictKey):  # a tuple key (nnx.WeightNorm's scales): its names, /-joined
        return "/".join(str(k) for k in entry.key) if isinstance(entry.key, tuple) else str(entry.key)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return None if entry.name == "value" else entry.name  # nnx variables hold their array in .value
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    return str(getattr(entry, "key", entry))


@dataclass(frozen=True)
class _Owner:
    """A module on a leaf's path: its class names (most derived first) and the module itself,
    whose attributes give the layout; ``module`` is None when the class was guessed from a
    linen automatic name (``Conv_0`` -> ``Conv``). ``equations``: the einsum equations its scope's
    modules were called with, by their ``weight_name`` (None: the module names none)."""

    classes: tuple[str, ...]
    module: Any = None
    equations: tuple[tuple[str | None, str | None], ...] = ()


def _class_names(module: Any) -> tuple[str, ...]:
    """The module's class and base classes up to flax's own ``Module`` (linen or nnx)."""
    names = []
    for cls in type(module).__mro__:
        if cls.__name__ == "Module" and cls.__module__.startswith("flax."):
            break
        names.append(cls.__name__)
    return tuple(names)


def _count(value: Any) -> int:
    """How many axes an int-or-sequence attribute (``features``, ``axis``) names."""
    return 1 if isinstance(value, int) else len(tuple(value))


def _general_layout(module: Any, attention: bool, leaf_owner: str) -> tuple[Layout, int]:
    """A DenseGeneral/LinearGeneral kernel is (*batch, *contracted in, *features): its in, out and
    batch axes from the module's attributes, and its rank."""
    if hasattr(module, "in_features"):  # nnx.LinearGeneral
        n_in, n_out, n_batch = _count(module.in_features), _count(module.out_features), len(module.batch_axis)
    else:  # linen.DenseGeneral
        n_in, n_out, n_batch = _count(module.axis), _count(module.features), len(tuple(module.batch_dims))
    name = "flax.dense_general"
    if attention:
        name = "flax.attention_out" if leaf_owner == "out" else "flax.attention_qkv"
    rank = n_batch + n_in + n_out
    return Layout(
        tuple(range(n_batch, n_batch + n_in)), tuple(range(n_batch + n_in, rank)), tuple(range(n_batch)), name=name
    ), rank


def _read_layout(owner: _Owner, parent: _Owner | None, leaf_owner: str) -> tuple[LayoutLike, int] | None:
    """A kernel's layout from its module's class and attributes, and the kernel's rank in that
    module; None if initscale does not know the class."""
    classes, module = set(owner.classes), owner.module
    if classes & {"ConvTranspose", "Conv"}:
        size = getattr(module, "kernel_size", None)
        rank = 2 + (1 if isinstance(size, int) else len(tuple(size))) if size is not None else None
        if rank is None:
            return None
        if "ConvTranspose" in classes:
            stride = stride_product(getattr(module, "strides", None), rank - 2)
            if getattr(module, "transpose_kernel", False):  # (*kernel, out, in), as the gradient of a conv
                if stride > 1:  # a Layout has no stride: not read, so a fan-based rule says so
                    return None
                return Layout(-1, -2, name="flax.conv_transpose:transpose_kernel"), rank
            return "flax.conv_transpose" + (f":stride={stride}" if stride > 1 else ""), rank
        return f"flax.conv:groups={int(getattr(module, 'feature_group_count', 1))}", rank
    if classes & _GENERAL:
        return _general_layout(module, parent is not None and bool(set(parent.classes) & _ATTENTION), leaf_owner)
    if classes & {"Dense", "Linear"}:
        return "flax.dense", 2
    return None


_EINSUM = re.compile(r"[A-Za-z.]+,[A-Za-z]+->[A-Za-z.]*")  # x,w->y with a weight of named axes
_EQUATION_ATTRIBUTES = ("eqn", "equation", "einsum_str")  # recurrentgemma's Einsum: eqn


def _einsum_equation(owner: _Owner | None, leaf: str, siblings: Set[str]) -> str | None:
    """The einsum equation a module computes with its weight ``leaf``: the one it was called with
    under that ``weight_name`` (DeepMind gemma's ``Einsum(shape)(eqn, x)``), or, for the module's
    only leaf besides a bias (``siblings``: the others), an equation attribute (recurrentgemma's
    ``Einsum.eqn``) or the one it was called with; None if there is none, if calls disagreed, or
    if the forward rescales the weight (gemma4's ``w_scale``: initscale's std would not be the
    weight's in the forward)."""
    if owner is None or owner.module is None:
        return None
    scale = getattr(owner.module, "w_scale", None)
    if scale is not None and scale != 1:
        return None
    recorded = dict(owner.equations)
    if leaf in recorded:
        return recorded[leaf]
    if siblings - {leaf, "b", "bias"}:  # which of several weights an unnamed equation is for is not known
        return None
    for attribute in _EQUATION_ATTRIBUTES:
        value = getattr(owner.module, attribute, None)
        if isinstance(value, str) and _EINSUM.fullmatch(value.replace(" ", "")):
            return value.replace(" ", "")
    return recorded.get(None)


def _lifted(layout: LayoutLike, shape: tuple[int, ...], rank: int) -> Layout:
    """``layout`` for the trailing ``rank`` axes of ``shape``, the leading ones batch axes: a
    kernel stacked by a lifted transform (``nn.scan``/``nn.vmap`` with ``variable_axes`` 0)."""
    extra = len(shape) - rank
    concrete = resolve(layout).layout(shape[extra:])
    ins, outs, batch, _ = concrete.split_axes(shape[extra:])
    return Layout(
        tuple(a + extra for a in ins),
        tuple(a + extra for a in outs),
        tuple(range(extra)) + tuple(a + extra for a in batch),
        concrete.in_groups,
        concrete.out_groups,
        name=f"{layout if isinstance(layout, str) else concrete.name} over {extra} leading stacked axes",
    )


def _guess_layout(owners: Sequence[_Owner], leaf_owner: str, ndim: int) -> LayoutLike | None:
    """A kernel's layout from the names on its path alone (no module): linen's automatic names
    give the class, never its attributes (a Conv's ``feature_group_count`` is taken as 1)."""
    owner = owners[-1].classes[0] if owners else None
    grand = owners[-2].classes[0] if len(owners) > 1 else None
    if (owner in _ATTENTION or grand in _ATTENTION) and ndim == 3:
        if leaf_owner == "out":  # (heads, head_dim, out)
            return Layout((0, 1), 2, name="flax.attention_out")
        return Layout(0, (1, 2), name="flax.attention_qkv")  # (in, heads, head_dim)
    if owner == "ConvTranspose" and ndim >= 3:
        return "flax.conv_transpose"
    if owner == "Conv" and ndim >= 3:
        return "flax.conv:groups=1"
    if ndim == 2:
        return "flax.dense"
    if ndim >= 3:
        return "flax"  # (*kernel, in, out), as flax Conv
    return None


def _infer(
    names: tuple[str, ...], shape: tuple[int, ...], owners: Sequence[_Owner], siblings: Set[str] = frozenset()
) -> tuple[Role, LayoutLike | None, tuple[str, ...], bool]:
    """Role, forward-fan layout, owner class names (innermost module's first, then each enclosing
    module's; a norm's scale and offset: its own module's only) and whether the layout was
    guessed from names, for one leaf. ``owners`` are the modules on its path, root first,
    innermost last; ``siblings``: the names of the other leaves of its module."""
    ndim = len(shape)
    leaf = names[-1]
    leaf_owner = names[-2] if len(names) > 1 else ""
    owner = owners[-1] if owners else None
    classes = set(owner.classes) if owner else set()
    owner_classes = tuple(dict.fromkeys(c for o in reversed(owners) for c in o.classes))
    if classes & _NORMS or any(_NORM_NAME.search(c) for c in classes):
        # a norm's scale and offset span its normalized features: one axis of size > 1 at most
        # (its statistics, BatchNorm's mean and var, are neither)
        spans = sum(d > 1 for d in shape) <= 1
        role: Role = (
            "norm_offset"
            if leaf in _OFFSET_LEAVES and spans
            else "norm_scale"
            if leaf in _SCALE_LEAVES and spans
            else "other"
        )
        # a norm's scale and offset keep their own classes only: a rule on an enclosing block
        # leaves them to the defaults (a fan-based spec has no fans for them), as in Keras and torch
        mine = tuple(owner.classes) if owner else ()
        return role, None, mine if role in ("norm_scale", "norm_offset") else owner_classes, False
    if leaf == "bias" or (leaf == "b" and siblings & _WEIGHT_LEAVES):  # haiku-style w and b (recurrentgemma)
        return "bias", None, owner_classes, False
    if leaf == "embedding":
        return "embedding", "flax.embed", owner_classes, owner is None or owner.module is None or "Embed" not in classes
    equation = _einsum_equation(owner, leaf, siblings)
    if equation is not None:  # an einsum module's weight, the equation's second operand
        layout = einsum_layout(equation, name=f"flax.einsum[{equation}]")
        if layout is not None and len(equation.split("->")[0].split(",")[1]) == ndim:
            return "weight", layout, owner_classes, False
    if leaf != "kernel":  # never guessed: a fan-based rule on it says to give the layout
        return "other", None, owner_classes, False
    if owner is not None and owner.module is not None:
        read = _read_layout(owner, owners[-2] if len(owners) > 1 else None, leaf_owner)
        if read is not None and ndim == read[1]:
            return "weight", read[0], owner_classes, False
        if read is not None and ndim > read[1]:  # which axes the transform added is not known: guessed
            return "weight", _lifted(read[0], shape, read[1]), owner_classes, True
        if read is None:  # a class initscale does not read: its layout is not guessed
            return "other", None, owner_classes, False
    guess = _guess_layout(owners, leaf_owner, ndim)
    return ("weight" if guess is not None else "other"), guess, owner_classes, True


def _nnx_modules(module: Any) -> dict[tuple[str, ...], Any]:
    """Every nnx module in the graph by path, the root (path ()) included."""
    from flax import nnx

    return {tuple(str(p) for p in path): node for path, node in nnx.iter_graph(module) if isinstance(node, nnx.Module)}


def _submodules(value: Any) -> Iterator[Any]:
    """linen modules held by an attribute, also inside lists, tuples and dicts (``nn.Sequential``)."""
    import flax.linen as nn

    if isinstance(value, nn.Module):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _submodules(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _submodules(item)


class _Modules(dict[tuple[str, ...], Any]):
    """Modules by scope path, and the einsum equations that the modules of each path were called
    with (by ``weight_name``; None where calls disagreed)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.equations: dict[tuple[str, ...], dict[str | None, str | None]] = {}


def _is_scope_of(path: tuple[str, ...], called: Any, root: Any) -> bool:
    """Whether the linen module ``called`` at ``path`` is the module of that scope: a layer lifted by
    ``nn.map_variables`` (WeightNorm's, SpectralNorm's) is also called unbound, with path (), which
    is the root's scope (whose class every leaf's owners start with) and not the layer's."""
    return bool(path) or type(called) is type(root)


def _linen_modules(
    module: Any, variables: Any, example_inputs: tuple[Any, ...] | None, example_kwargs: Mapping[str, Any]
) -> dict[tuple[str, ...], Any]:
    """Every linen submodule by scope path, the root (path ()) included.

    Without example inputs: the module bound to the variables, each ``setup`` run and the
    submodules it assigns (or that are passed as attributes) walked. Submodules made inside
    ``@nn.compact`` methods exist only while the module runs: with ``example_inputs``,
    ``module.apply`` is traced by :func:`jax.eval_shape` (nothing is computed) and every module
    whose method is called is recorded by :func:`flax.linen.intercept_methods`."""
    import flax.linen as nn

    found = _Modules({(): module})

    def walk(bound: Any, path: tuple[str, ...]) -> None:
        setup = getattr(bound, "_try_setup", None)  # runs setup() once, as any attribute access would
        if setup is None:  # pragma: no cover - every flax release since 0.4 has it
            return
        setup()
        for key, value in vars(bound).items():
            if key in ("parent", "scope", "_parent_ref"):  # any other attribute may hold one (`_query_norm`)
                continue
            for child in _submodules(value):
                child_path = tuple(getattr(child, "path", None) or ())
                if len(child_path) > len(path) and child_path[: len(path)] == path and child_path not in found:
                    found[child_path] = child
                    walk(child, child_path)

    walk(module.bind(variables), ())
    if example_inputs is not None:

        def record(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
            path = tuple(context.module.path)
            if _is_scope_of(path, context.module, module):
                found[path] = context.module
            texts = (a.replace(" ", "") for a in args if isinstance(a, str))
            equation = next((t for t in texts if _EINSUM.fullmatch(t)), None)
            if equation is not None:  # an einsum module called with its equation (gemma's Einsum)
                weight = getattr(context.module, "weight_name", None)
                seen = found.equations.setdefault(path, {})
                key = weight if isinstance(weight, str) else None
                seen[key] = equation if seen.get(key, equation) == equation else None  # calls that disagree: none
            return next_fun(*args, **kwargs)

        def run(v: Any, *inputs: Any) -> Any:
            with nn.intercept_methods(record):
                return module.apply(v, *inputs, mutable=True, rngs={"dropout": jax.random.key(0)}, **example_kwargs)

        try:
            # without jit: a method under nn.jit whose trace is cached (a second call with the same shapes)
            # would not run its Python again, so its submodules would not be seen
            with jax.disable_jit():
                jax.eval_shape(run, variables, *example_inputs)
        except Exception as err:
            raise ValueError(
                f"Tracing module.apply(variables, *example_inputs) of the {type(module).__name__} given as `module` "
                f"failed, so its submodules cannot be read: {type(err).__name__}: {err}. Give example_inputs= (and "
                "example_kwargs=, e.g. {'train': False}) as for module.init, and the variables this module made (a "
                "missing 'params' PRNG means that the variables lack a parameter the module makes)."
            ) from err
    return found


def _owners(
    names: tuple[str, ...],
    skip: int,
    modules: Mapping[tuple[str, ...], Any] | None,
    unresolved: set[tuple[str, ...]] | None,
) -> list[_Owner]:
    """The modules on a leaf's path, root first. ``skip`` leading names are not modules (linen's
    collection, ``params``). From ``modules`` when given (a missing innermost one is added to
    ``unresolved``, for linen, where every scope holding leaves is a module), else guessed from
    linen's automatic names."""
    path = names[skip:-1]
    if modules is None:
        return [_Owner((m.group(1),)) for m in (_AUTO_NAME.match(seg) for seg in path) if m]
    equations = getattr(modules, "equations", {})
    owners = [
        _Owner(_class_names(modules[path[:i]]), modules[path[:i]], tuple(equations.get(path[:i], {}).items()))
        for i in range(len(path) + 1)
        if path[:i] in modules
    ]
    if unresolved is not None and path not in modules:
        unresolved.add(path)
    return owners


def _is_nnx_module(obj: Any) -> bool:
    try:
        from flax import nnx
    except ImportError:  # flax is optional for plain pytrees
        return False
    return isinstance(obj, nnx.Module)


def _leaf_key(key: Any, name: str) -> Any:
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return jax.random.fold_in(key, int.from_bytes(digest, "little") & 0x7FFFFFFF)


def _is_linen_module(obj: Any) -> bool:
    try:
        import flax.linen as nn
    except ImportError:  # flax is optional for plain pytrees
        return False
    return isinstance(obj, nn.Module)


def _read_modules(
    params: Any, module: Any, example_inputs: Any, example_kwargs: Mapping[str, Any] | None
) -> tuple[Any, dict[tuple[str, ...], Any] | None, int, bool]:
    """The tree to walk, its modules by path (None: guess from names), how many leading path
    names are not modules (a linen variables dict's collection) and whether it is linen."""
    if example_kwargs is not None and not isinstance(example_kwargs, Mapping):
        raise TypeError(
            f"Argument `example_kwargs` must be a mapping of keyword arguments for module.apply. "
            f"Received: example_kwargs={example_kwargs!r}."
        )
    if _is_nnx_module(params):
        from flax import nnx

        if module is not None and module is not params:
            raise ValueError(
                "`params` is an nnx.Module, which is its own module: leave out `module=` (or pass the same module)."
            )
        module = params
        params = nnx.state(params, _nnx_scales_filter(params))  # the Params, and WeightNorm scales to set
    if module is None:
        if example_inputs is not None or example_kwargs is not None:
            raise ValueError(
                "example_inputs= and example_kwargs= are the arguments with which `module` is run; "
                "pass module= too (the flax module that made these variables)."
            )
        return params, None, int(isinstance(params, Mapping) and "params" in params), False
    if _is_nnx_module(module):
        if example_inputs is not None or example_kwargs is not None:
            raise ValueError(
                "An nnx module holds all its submodules already: leave out example_inputs= and example_kwargs=."
            )
        return params, _nnx_modules(module), 0, False
    if not _is_linen_module(module):
        raise TypeError(
            "Argument `module` must be the flax.linen.Module (or flax.nnx.Module) that made `params`. "
            f"Received: module of type {type(module).__name__}."
        )
    skip = int(isinstance(params, Mapping) and "params" in params)  # a variables dict, or its "params" only
    variables = params if skip else {"params": params}
    inputs = (
        None if example_inputs is None else (example_inputs if isinstance(example_inputs, tuple) else (example_inputs,))
    )
    return params, _linen_modules(module, variables, inputs, example_kwargs or {}), skip, True


def _listed(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


_UNIT_NORMS: dict[type, bool] = {}  # a norm class -> whether its forward uses its scale as 1 + scale


def _unit_offset(module: Any) -> bool:
    """Whether a norm ``module`` multiplies by ``1 + scale`` (DeepMind gemma's and recurrentgemma's
    RMSNorm; :data:`~initscale.reinit.UNIT_OFFSET`), read from its ``__call__``'s source; False for
    flax's own norms, without a module (layouts guessed from names) and without source."""
    if module is None:
        return False
    cls = type(module)
    if cls not in _UNIT_NORMS:
        unit = False
        if not cls.__module__.startswith("flax."):
            try:
                unit = bool(UNIT_OFFSET.search(inspect.getsource(cls.__call__)))
            except (OSError, TypeError):  # no source (compiled, interactive): a plain scale
                unit = False
        _UNIT_NORMS[cls] = unit
    return _UNIT_NORMS[cls]


@dataclass(frozen=True)
class _WeightNormed:
    """A flax ``WeightNorm`` scale and the variable it rescales: the wrapped layer uses
    scale · v / √(Σ v² + ε), the sum over ``axes`` (every axis but ``feature_axes``), so
    ``reinit`` sets scale = √(Σ v² + ε) of the drawn v: the layer's variable is then v as drawn.
    flax's own ``scale_init`` is ones, which gives unit-norm columns whatever v's init."""

    scale: int  # leaf indices
    source: int
    axes: tuple[int, ...]
    epsilon: float
    how: str


def _is_nnx_weight_norm(module: Any) -> bool:
    """Whether ``module`` is an ``nnx.WeightNorm`` with a scale: it keeps its scales as plain
    arrays (not ``nnx.Param``) in a dict ``scales`` keyed by each kernel's path in
    ``layer_instance``, and its ``__call__`` overwrites each kernel with scale · v / √(Σ v² + ε)
    (flax/nnx/nn/normalization.py ``WeightNorm._weightnorm_inplace``, flax 0.12.8)."""
    if not _is_nnx_module(module):
        return False
    from flax import nnx

    return isinstance(module, nnx.WeightNorm) and bool(module.use_scale) and isinstance(module.scales, Mapping)


def _nnx_scale_names(module: Any) -> dict[tuple[str, ...], tuple[Any, ...]]:
    """Each ``nnx.WeightNorm`` kernel of an nnx ``module`` by path, with its scale's path in the
    module's state (its last entry the scale's tuple key, ``('kernel',)``)."""
    from flax import nnx

    found = {}
    for path, node in nnx.iter_graph(module):
        if _is_nnx_weight_norm(node):
            at = tuple(str(p) for p in path)
            for key in node.scales:
                kernel = (*at, "layer_instance", *(str(k) for k in key))
                found[kernel] = (*at, "scales", key)
    return found


def _nnx_scale_name(names: Sequence[str]) -> str:
    """The name of an nnx.WeightNorm scale at ``(*WeightNorm, "scales", key)``, its key's names
    /-joined (:func:`_key_name`): ``"<WeightNorm>/scales/<path in the layer>/scale"``, so that a glob
    on kernels (``"*/kernel"``) does not match it (as linen's ``"<layer>/<variable>/scale"``)."""
    return "/".join(names) + "/scale"


def _nnx_scales_filter(module: Any) -> Callable[[Any, Any], bool]:
    """An ``nnx.state`` filter for ``module``'s ``nnx.Param`` variables, its ``nnx.WeightNorm``
    scales and its ``nnx.SpectralNorm`` states, which reinit sets from the kernels it draws."""
    from flax import nnx

    scales = set(_nnx_scale_names(module).values())
    spectral = {tuple(str(p) for p in path) for path, node in nnx.iter_graph(module) if _is_spectral_norm(node)}

    def wanted(path: Any, value: Any) -> bool:
        if isinstance(value, nnx.Param) or (*(str(p) for p in path[:-1]), path[-1]) in scales:
            return True
        # a SpectralNorm's power-iteration state (u, sigma), refreshed from the kernels reinit draws
        return isinstance(value, nnx.BatchStat) and len(path) >= 2 and tuple(str(p) for p in path[:-2]) in spectral

    return wanted


def _weight_normed(
    named: Sequence[tuple[str, ...]], owners_of: Sequence[list[_Owner]], shapes: Sequence[tuple[int, ...]]
) -> dict[int, _WeightNormed]:
    """Each flax ``WeightNorm`` scale by leaf index, with the variable it rescales: linen's a leaf
    ``<layer>/<variable>/scale`` of a WeightNorm module, its layer a sibling scope
    (flax/linen/normalization.py ``WeightNorm._l2_normalize``); nnx's a leaf
    ``<WeightNorm>/scales/('kernel',)`` for the kernel ``<WeightNorm>/layer_instance/kernel`` (a
    scale per kernel path in the wrapped layer, the tuple key printed as nnx prints it)."""
    index = {names: i for i, names in enumerate(named)}
    found = {}
    for i, (names, owners) in enumerate(zip(named, owners_of, strict=True)):
        wn = owners[-1].module if owners else None
        if _is_nnx_weight_norm(wn) and len(names) >= 2 and names[-2] == "scales" and names[-1].endswith("/scale"):
            source = index.get((*names[:-2], "layer_instance", *names[-1].removesuffix("/scale").split("/")))
        elif type(wn).__name__ == "WeightNorm" and names and names[-1].endswith("/scale"):
            if not getattr(wn, "use_scale", True):
                continue
            source = index.get(names[:-2] + tuple(names[-1].removesuffix("/scale").split("/")))
        else:
            continue
        if source is None:
            continue
        ndim = len(shapes[source])
        features = getattr(wn, "feature_axes", -1)
        if features is None:
            axes = tuple(range(ndim))
        else:
            kept = {a % ndim for a in ((features,) if isinstance(features, int) else tuple(features))}
            axes = tuple(a for a in range(ndim) if a not in kept)
        v = "/".join(named[source])
        how = f"weight norm: scale = ‖v‖ of {v!r} (over axes {axes}), so the layer's {v!r} is v as drawn (to rounding)"
        found[i] = _WeightNormed(i, source, axes, float(getattr(wn, "epsilon", 1e-12)), how)
    return found


@dataclass(frozen=True)
class _SpectralNormed:
    """A flax ``SpectralNorm``'s power-iteration state for one kernel: the layer divides the kernel W
    (as a matrix, (-1, last axis)) by σ, the power-iteration estimate of its largest singular value
    from the stored ``u`` (``n_steps`` iterations each call; linen
    flax/linen/normalization.py ``SpectralNorm._spectral_normalize``, nnx the same). reinit refreshes
    u (and the recorded σ) from the drawn W by :data:`SPECTRAL_STEPS` iterations from the stored u,
    as torch's ``spectral_norm`` does when applied: the layer then uses W / σ(W), spectral norm 1
    whatever the spec (a warning says so)."""

    u: int  # leaf indices
    sigma: int | None
    source: int
    epsilon: float
    how: str


SPECTRAL_STEPS = 15  # torch.nn.utils.parametrizations.spectral_norm's power iterations when applied


def _is_spectral_norm(module: Any) -> bool:
    """Whether ``module`` is flax's ``SpectralNorm`` wrapper (linen's or nnx's)."""
    return type(module).__name__ == "SpectralNorm" and type(module).__module__.startswith("flax.")


def _spectral_normed(named: Sequence[tuple[str, ...]], owners_of: Sequence[list[_Owner]]) -> dict[int, _SpectralNormed]:
    """Each flax ``SpectralNorm`` ``u`` by leaf index, with its σ and the kernel it estimates: linen's
    ``<collection>/<SpectralNorm scope>/<layer>/<variable>/u`` for ``params/<parent scope>/<layer>/
    <variable>`` (the layer a sibling scope); nnx's ``<SpectralNorm>/batch_stats/<path>/u`` for
    ``<SpectralNorm>/layer_instance/<path>``."""
    index = {names: i for i, names in enumerate(named)}
    found = {}
    for i, (names, owners) in enumerate(zip(named, owners_of, strict=True)):
        sn = owners[-1].module if owners else None
        if not _is_spectral_norm(sn) or len(names) < 2 or not names[-1].endswith("/u"):
            continue
        variable = names[-1].removesuffix("/u")
        if _is_nnx_module(sn):
            source = index.get((*names[:-2], "layer_instance", *variable.split("/")))
        else:  # linen: the collection (batch_stats), the SpectralNorm's scope, "<layer>/<variable>/u"
            source = index.get(("params", *names[1:-2], *variable.split("/")))
        if source is None:
            continue
        sigma = index.get((*names[:-1], f"{variable}/sigma"))
        w = "/".join(named[source])
        how = (
            f"spectral norm: u (and σ) refreshed by {SPECTRAL_STEPS} power iterations on the drawn {w!r}, whose "
            "layer divides it by σ (so the weight it uses has spectral norm 1)"
        )
        found[i] = _SpectralNormed(i, sigma, source, float(getattr(sn, "epsilon", 1e-12)), how)
    return found


def _spectral_kernels(modules: Mapping[tuple[str, ...], Any] | None, params: Sequence[Param]) -> list[int]:
    """The leaf indices of the kernels (2+ axes) of the layers a flax ``SpectralNorm`` wraps, read
    from the modules: linen's ``params/<layer>/...`` (the layer's scope path), nnx's
    ``<SpectralNorm>/layer_instance/...``."""
    if not modules:
        return []
    layers = []
    for path, node in modules.items():
        if not _is_spectral_norm(node):
            continue
        if _is_nnx_module(node):
            layers.append((*path, "layer_instance"))
        elif (wrapped := getattr(getattr(node, "layer_instance", None), "path", None)) is not None:
            layers.append(tuple(wrapped))
    found = []
    for i, param in enumerate(params):
        names = tuple(param.name.split("/"))
        if len(param.shape) >= 2 and any(names[: len(p)] == p or names[1 : len(p) + 1] == p for p in layers):
            found.append(i)
    return found


def _power_iteration(kernel: Any, u: Any, epsilon: float, steps: int) -> tuple[Any, Any]:
    """(u, σ) after ``steps`` power iterations on ``kernel`` as a matrix (-1, last axis) from ``u``
    (1, last axis), as flax's ``SpectralNorm`` computes them: v = l2(u Wᵀ), u = l2(v W), σ = v W uᵀ,
    l2(x) = x / √(Σ x² + ε); a u of zeros or non-finite values (an uninitialized buffer) starts
    from ones instead."""
    w = kernel.astype(jnp.promote_types(kernel.dtype, jnp.float32)).reshape(-1, kernel.shape[-1])
    u0 = u.astype(w.dtype).reshape(1, w.shape[-1])
    u0 = jnp.where(jnp.all(jnp.isfinite(u0)) & jnp.any(u0 != 0), u0, jnp.ones_like(u0))

    def l2(x: Any) -> Any:
        return x * jax.lax.rsqrt(jnp.sum(x * x) + epsilon)

    v0 = l2(u0 @ w.T)
    for _ in range(steps):
        v0 = l2(u0 @ w.T)
        u0 = l2(v0 @ w)
    return u0, (v0 @ w @ u0.T)[0, 0]


def _unscaled_kernels(
    named: Sequence[tuple[str, ...]], modules: Mapping[tuple[str, ...], Any], paired: Set[int]
) -> dict[int, str]:
    """The kernels of an ``nnx.WeightNorm`` whose scale the walked state lacks (an
    ``nnx.state(model, nnx.Param)``: the scales are plain arrays, not Params), by leaf index, each
    with the error that drawing or checking it raises: the layer would use scale · v / ‖v‖ with a
    scale nobody set."""
    if () not in modules or not any(_is_nnx_weight_norm(node) for node in modules.values()):
        return {}
    kernels = _nnx_scale_names(modules[()])
    return {
        i: _NO_SCALE.format(kernel="/".join(names), scale=_nnx_scale_name([*kernels[names][:-1], *kernels[names][-1]]))
        for i, names in enumerate(named)
        if i not in paired and names in kernels
    }


_NO_SCALE = (
    "{kernel!r} is the kernel of an nnx.WeightNorm, whose layer uses scale · v / ‖v‖, and its scale {scale!r} is "
    "not in the state passed (nnx.WeightNorm keeps its scales as plain arrays, not nnx.Param). Pass the module "
    "itself (reinit(model, ...) returns its Params and scales, for nnx.update(model, state)) or nnx.state(model)"
)


def _weight_norm_scales(
    params: Any, module: Any, example_inputs: Any, example_kwargs: Mapping[str, Any] | None = None
) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each variable under a flax ``WeightNorm`` by its ``/``-joined name: (its scale's path in the
    tree, the WeightNorm's module path), for LSUV, which scales the two together."""
    normed: dict[int, _WeightNormed] = {}
    _, _, leaves_with_paths, found = _walk(params, module, example_inputs, example_kwargs, normed)
    named = [tuple(n for n in (_key_name(e) for e in path) if n is not None) for path, _ in leaves_with_paths]
    skip = int(isinstance(params, Mapping) and "params" in params)
    return {found[w.source].name: (named[w.scale], named[w.scale][skip:-1]) for w in normed.values()}


def _derived(param: Param, note: str) -> Param:
    """``param`` as a value reinit computes from another one after the draws (a WeightNorm scale,
    a SpectralNorm state): no role of its own, no layout, its own layer's class only, and the
    note the report gives when no rule names it."""
    return replace(param, role="other", layout=None, owner_classes=param.owner_classes[:1], note=note)


def _walk(
    params: Any,
    module: Any,
    example_inputs: Any,
    example_kwargs: Mapping[str, Any] | None,
    weight_normed: dict[int, _WeightNormed] | None = None,
    unscaled: dict[int, str] | None = None,
    spectral_normed: dict[int, _SpectralNormed] | None = None,
) -> tuple[Any, dict[tuple[str, ...], Any] | None, list[tuple[Any, Any]], list[Param]]:
    """The tree to walk, its modules by path (None: layouts guessed from names), its leaves with
    their paths and one :class:`~initscale.reinit.Param` per leaf (role, layout, owner classes),
    as :func:`reinit` and :func:`check` read them. Raises before anything is drawn when ``module``
    lacks a submodule the tree has. ``weight_normed``: filled with the linen ``WeightNorm``
    scales found (:func:`_weight_normed`), whose Params carry a note; ``unscaled``: filled with the
    nnx.WeightNorm kernels whose scale the tree lacks (:func:`_unscaled_kernels`);
    ``spectral_normed``: with the flax SpectralNorm states found (:func:`_spectral_normed`)."""
    tree, modules, skip, linen = _read_modules(params, module, example_inputs, example_kwargs)
    leaves_with_paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    unresolved: set[tuple[str, ...]] | None = set() if linen else None
    found: list[Param] = []
    named = [tuple(n for n in (_key_name(e) for e in path) if n is not None) for path, _ in leaves_with_paths]
    leaves_of: dict[tuple[str, ...], set[str]] = {}
    for names in named:
        leaves_of.setdefault(names[:-1], set()).add(names[-1] if names else "")
    owners_of = []
    for i, (names, (_, leaf)) in enumerate(zip(named, leaves_with_paths, strict=True)):
        shape = tuple(int(d) for d in np.shape(leaf))
        owners = _owners(names, skip, modules, unresolved)
        owners_of.append(owners)
        if owners and _is_nnx_weight_norm(owners[-1].module) and names[-2:-1] == ("scales",):
            named[i] = names = (*names[:-1], _nnx_scale_name(names[-1:]))
        role, layout, classes, guessed = _infer(names, shape, owners, leaves_of[names[:-1]])
        unit = role == "norm_scale" and bool(owners) and _unit_offset(owners[-1].module)
        found.append(Param("/".join(names), shape, classes, role, layout, guessed=guessed, unit_offset=unit))
    normed = _weight_normed(named, owners_of, [p.shape for p in found])
    if modules is not None and not linen and unscaled is not None:
        unscaled.update(_unscaled_kernels(named, modules, {w.source for w in normed.values()}))
    for i, wn in normed.items():  # a scale is no norm's: the defaults leave it to finish(), set from v
        note = wn.how.replace("weight norm: scale =", "weight norm's scale: set to", 1)
        found[i] = _derived(found[i], f"{note} whenever v is drawn and no rule names it")
    spectral = _spectral_normed(named, owners_of)
    for sn in spectral.values():  # the power-iteration state: refreshed in finish(), set from the kernel
        for state in (sn.u, sn.sigma):
            if state is not None:
                found[state] = _derived(found[state], f"{sn.how}, whenever the kernel is drawn and no rule names it")
    if weight_normed is not None:
        weight_normed.update(normed)
    if spectral_normed is not None:
        spectral_normed.update(spectral)
    if unresolved:
        paths = sorted("/".join(p) for p in unresolved)
        how = (
            (
                "they are made inside @nn.compact methods and exist only while it runs: pass example_inputs= (the "
                "positional arguments of module.apply after the variables, arrays or jax.ShapeDtypeStruct; and "
                "example_kwargs= for keyword arguments). Nothing is computed: the call is traced with jax.eval_shape"
            )
            if example_inputs is None
            else "are these the variables of this module?"
        )
        raise ValueError(f"`module` ({type(module).__name__}) has no submodule at {_listed(paths)}: {how}.")
    return tree, modules, leaves_with_paths, found


def reinit(
    params: Any,
    rules: Spec | Mapping[str, Spec | None],
    key: Any,
    *,
    dry_run: bool = False,
    module: Any = None,
    example_inputs: Any = None,
    example_kwargs: Mapping[str, Any] | None = None,
    defaults: bool = True,
    stream_seed: int | None = None,
    stream_names: Mapping[str, str] | Callable[[str], str] | None = None,
    fans: str = "forward",
) -> tuple[Any, Report]:
    """Re-initialize a pytree of parameters; returns ``(new_params, report)`` (nothing is mutated).

    The contract's ``reinit`` (:mod:`initscale.adapters`): its randomness source is ``key``
    (third, required: JAX keys are explicit) and its extras are ``module``, ``example_inputs``,
    ``example_kwargs``. ``dry_run`` is keyword-only (a fourth positional argument is a TypeError).

    Args:
        params: a flax linen variables dict (or its ``"params"`` collection), an ``nnx.State``,
            or an ``nnx.Module`` (then the state of its ``nnx.Param`` variables, and of its
            ``nnx.WeightNorm`` scales and ``nnx.SpectralNorm`` states, is returned, for
            ``nnx.update(module, state)``, and the layers come from the module itself).
        rules: one spec (for every kernel) or an ordered mapping from pattern to spec,
            ``initscale.Rule(spec, layout=...)`` (the layout of a layer initscale does not know)
            or None;
            patterns are module class names (``"Dense"``, ``"Conv"``, base classes and
            enclosing modules count; from ``module`` or, without it, from linen's automatic
            names such as ``Dense_0``) or globs on ``/``-joined paths (``"*/kernel"``,
            ``"params/Dense_0/bias"``). First match wins.
        key: one PRNG key. Each leaf draws from ``fold_in(key, hash(path))``, so its values do
            not depend on the order of traversal or on the other leaves.
        dry_run: return the params unchanged and the report of what would be done.
        module: the module that made ``params`` (a ``flax.linen.Module``, or the
            ``nnx.Module`` of an ``nnx.State``). Each leaf's layer class and attributes are then
            read from it: a Conv's ``feature_group_count`` (grouped and depthwise fans),
            DenseGeneral/LinearGeneral axes (attention projections), ConvTranspose's
            ``transpose_kernel``, linen ``WeightNorm`` and ``nnx.WeightNorm`` (the wrapped
            kernel is drawn, then its scale set to √(Σ v² + ε) so that the layer uses the kernel
            as drawn: docs/conventions.md §3; nnx's scales are not Params: pass the nnx module
            itself, or ``nnx.state(model)``, so that they are returned), flax's ``SpectralNorm``
            (its u and σ refreshed for the drawn kernel, with a warning: the layer uses spectral
            norm 1), and the class of explicitly named submodules. Without it
            the layouts are guessed from names: flagged in the report (``guessed``, ``?``) and
            listed in a warning.
        example_inputs: for a linen ``module`` whose submodules are made inside
            ``@nn.compact`` methods (they exist only while it runs): the positional arguments of
            ``module.apply`` after the variables (a tuple; arrays or ``jax.ShapeDtypeStruct``).
            ``module.apply`` is then traced with :func:`jax.eval_shape` (nothing is computed)
            and every module whose method runs is recorded. Submodules made in ``setup`` (and
            ``nn.Sequential``'s layers) are found without it.
        example_kwargs: keyword arguments for that ``module.apply`` (e.g. ``{"train": False}``).
        defaults: biases -> zeros, norm scale -> ones and bias -> zeros; embeddings and anything
            else unmatched kept.
        stream_seed: draw each leaf from the portable stream ``Stream(stream_seed, path)``
            (:mod:`initscale.streams`) instead of from ``key`` (which may then be None): the same
            weights as ``initscale.torch.reinit_(..., stream_seed=...)`` for the same names.
        stream_names: a mapping or function from this tree's ``/``-joined paths to stream names.
        fans: ``"forward"`` (default) or ``"native"``: jax's own ``_compute_fans`` on each
            kernel's shape (:func:`initscale.reinit.plan`); the report's rows say which was used.

    Layouts by flax convention: ``kernel`` (in, out) for Dense/Linear, (*kernel, in/groups, out)
    for Conv (fans per feature group), (*kernel, in, out) for ConvTranspose, (*batch, *in, *out)
    for DenseGeneral/LinearGeneral, so attention q/k/v (in, heads, head_dim) and out
    (heads, head_dim, out) get per-projection fans (LSTM cells keep one Dense per gate, so
    per-gate fans come from the dense rule); ``embedding`` (num_embeddings, features). Without
    ``module``, a Conv counts as ungrouped and an attention kernel is recognized only under
    linen's automatic names. A kernel with more axes than its layer makes (stacked by
    ``nn.scan``/``nn.vmap``) gets its layer's layout on the trailing axes, the leading ones as
    batch axes, flagged as guessed (the transform's ``variable_axes`` is not visible).
    Norms by class (flax's, or any class named ``...Norm``): ``scale`` -> ones (zeros where the
    norm's ``__call__`` multiplies by ``1 + scale``: DeepMind gemma's, recurrentgemma's RMSNorm),
    ``bias`` -> zeros; a leaf ``b`` beside a ``w`` or ``kernel`` is a bias. A layout is never
    guessed for a kernel whose ``module=`` class initscale does not read, nor for a leaf of 2+
    axes that is not a kernel or an embedding: a fan-based rule on it raises (naming it and the
    fix, ``initscale.Rule(spec, layout=...)``) and the one spec for all weights leaves it, with
    a warning.

    Raises before drawing anything if ``module`` lacks a submodule the tree has (a compact
    submodule without ``example_inputs``, or variables of another module).

    Example:
        >>> import jax, jax.numpy as jnp, flax.linen as nn, initscale
        >>> from initscale.adapters import jax as isj
        >>> model = nn.Sequential([nn.Conv(32, (3, 3), feature_group_count=4), nn.relu, nn.Dense(4)])
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 16)))
        >>> new, report = isj.reinit(variables, initscale.presets.get("he_uniform"), jax.random.key(1),
        ...                          module=model)
        >>> [(r.name, r.layer, r.fan_in, r.fan_out) for r in report.touched if r.name.endswith("kernel")]
        [('params/layers_0/kernel', 'Conv', 36, 72), ('params/layers_2/kernel', 'Dense', 32, 4)]
    """
    from initscale.autogain import Auto

    if isinstance(rules, Auto):  # initscale.auto(...): planned on the traced apply, then measured (_jax_auto)
        from ._jax_auto import apply as _auto_apply

        if module is None:
            raise TypeError(
                "reinit with initscale.auto(...) needs module=, the flax.linen.Module that made the "
                "variables: its apply is traced on the auto object's example inputs."
            )
        if example_inputs is not None or example_kwargs is not None:
            raise TypeError(
                "reinit with initscale.auto(...) takes its example inputs from the auto object; "
                "pass example_inputs=None here (initscale.auto(x, example_kwargs))."
            )
        options: dict[str, Any] = {
            "defaults": defaults,
            "stream_seed": stream_seed,
            "stream_names": stream_names,
            "fans": fans,
        }
        if dry_run:
            plan = rules.plan(module, variables=params)
            return reinit(
                params,
                plan.rules(),
                key,
                dry_run=True,
                module=module,
                example_inputs=rules.example_inputs,
                example_kwargs=rules.example_kwargs,
                **options,
            )
        new, applied = _auto_apply(params, module, rules, key, **options)
        assert applied.init is not None
        return new, applied.init
    if stream_seed is None:
        key = _check_key(key)
    backend = _Backend(params, module, example_inputs, example_kwargs, key, stream_seed, stream_names)
    report = mark_derived(
        reinit_run(backend, rules, defaults=defaults, dry_run=dry_run, fans=fans, stacklevel=2), backend.derived()
    )  # linen WeightNorm scales: set from the variable they rescale
    if dry_run:
        return backend.tree if _is_nnx_module(params) else params, report
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(backend.tree), backend.new_leaves), report


class _Backend:
    """``reinit``'s walk and write for :func:`initscale.reinit.run`: the tree's leaves (with the
    modules that made them); each target's new leaf drawn from its own key (or stream), then put
    in a new list of leaves (nothing is mutated)."""

    entry = "reinit"

    def __init__(
        self,
        params: Any,
        module: Any,
        example_inputs: Any,
        example_kwargs: Mapping[str, Any] | None,
        key: Any,
        stream_seed: int | None,
        stream_names: Mapping[str, str] | Callable[[str], str] | None,
    ) -> None:
        self.model, self.module, self.example_inputs, self.example_kwargs = (
            params,
            module,
            example_inputs,
            example_kwargs,
        )
        self.key, self.stream_seed, self.stream_names = key, stream_seed, stream_names
        self.tree: Any = None
        self.modules: dict[tuple[str, ...], Any] | None = None
        self.new_leaves: list[Any] = []
        self.weight_normed: dict[int, _WeightNormed] = {}  # flax WeightNorm scales, by leaf index
        self.unscaled: dict[int, str] = {}  # nnx.WeightNorm kernels without their scale in the tree
        self.spectral_normed: dict[int, _SpectralNormed] = {}  # flax SpectralNorm states, by u's leaf index
        self.spectral_stale: list[int] = []  # kernels under a SpectralNorm whose state the tree lacks
        self.names: list[str] = []
        self.setting: dict[str, str] = {}  # the scales finish() sets (derived_to_set)

    def derived(self) -> dict[str, tuple[str, str]]:
        """Each WeightNorm scale and SpectralNorm state -> (the variable it is computed from, how)."""
        derived = {self.names[w.scale]: (self.names[w.source], w.how) for w in self.weight_normed.values()}
        for sn in self.spectral_normed.values():
            for i in (sn.u, sn.sigma):
                if i is not None:
                    derived[self.names[i]] = (self.names[sn.source], sn.how)
        return derived

    def walk(self) -> list[tuple[Param, Any]]:
        self.tree, self.modules, leaves_with_paths, found = _walk(
            self.model,
            self.module,
            self.example_inputs,
            self.example_kwargs,
            self.weight_normed,
            self.unscaled,
            self.spectral_normed,
        )
        self.names = [p.name for p in found]
        paired = {sn.source for sn in self.spectral_normed.values()}
        self.spectral_stale = [i for i in _spectral_kernels(self.modules, found) if i not in paired]
        self.new_leaves = [leaf for _, leaf in leaves_with_paths]
        return [(param, leaf) for param, (_, leaf) in zip(found, leaves_with_paths, strict=True)]

    def constant_value(self, handle: Any) -> float | None:
        if not isinstance(handle, jax.Array) or handle.size < 2 or not jnp.issubdtype(handle.dtype, jnp.floating):
            return None
        if not handle.is_fully_addressable:  # another process holds part of it: no transfer for a warning
            return None
        flat = handle.reshape(-1)
        return float(flat[0]) if bool(jnp.all(flat == flat[0])) else None

    def notes(self, report: Report) -> list[str]:
        self.setting = derived_to_set(report, self.derived())
        rows = {r.name: r for r in report.rows}
        spectral = sorted(
            {self.names[sn.source] for sn in self.spectral_normed.values() if rows[self.names[sn.source]].touched}
        )
        messages = []
        if spectral:
            messages.append(
                f"reinit: {len(spectral)} kernel(s) under SpectralNorm were drawn as their layer's kernel "
                f"({_listed(spectral, 8)}); the layer divides each by its largest singular value, so the kernel it "
                "uses has spectral norm 1, not the report's std. Its power-iteration state (u, sigma) was "
                f"refreshed for the new values ({SPECTRAL_STEPS} iterations)."
            )
        stale = [self.names[i] for i in self.spectral_stale if rows[self.names[i]].touched]
        if stale:
            messages.append(
                f"reinit: {len(stale)} kernel(s) under SpectralNorm were drawn but their power-iteration state (u, "
                f"sigma) is not in the variables passed, so it was not refreshed: {_listed(stale, 8)}. The layer "
                "divides each by its largest singular value, estimated from the old u (spectral norm 1 at best, not "
                "the report's std). Pass the whole variables dict (with its 'batch_stats'), or the nnx module itself."
            )
        scaled = [
            r.name for r in report.rows if r.guessed and r.touched and r.spec is not None and not r.spec.fixed_scale
        ]
        if not scaled:
            return messages
        fix = (
            "pass module= (the flax module that made them; example_inputs= too for @nn.compact modules) so that "
            "each layer's class and attributes are read"
            if self.modules is None
            else "they are kernels stacked by nn.scan/nn.vmap (taken as stacked on their leading axes); if that is "
            "wrong, give them a rule that says the layout, initscale.Rule(spec, layout=...), or a fixed-scale "
            "spec (or None)"
        )
        return [
            *messages,
            f"reinit: the layouts (and so the fans) of {len(scaled)} parameter(s) were guessed from names: "
            f"{_listed(scaled)}; {fix}. The report marks them (guessed=True).",
        ]

    def check(self, targets: Sequence[Target[Any]], dry_run: bool) -> None:
        unscaled = [t for t in targets if t.index in self.unscaled]
        if unscaled:
            more = f" (so are {_listed([t.name for t in unscaled[1:]])})" if len(unscaled) > 1 else ""
            raise ValueError(f"reinit: {self.unscaled[unscaled[0].index]}{more}. Nothing was drawn.")
        for target in targets:
            dtype = getattr(target.handle, "dtype", None)
            if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
                raise TypeError(
                    f"Leaf {target.name!r} has dtype {dtype}: initscale fills floating-point or complex leaves only."
                )

    def _draw(self, target: Target[Any]) -> jax.Array:
        d, dtype = target.decision, target.handle.dtype
        assert d.dist is not None
        if self.stream_seed is None:
            return _sample(_leaf_key(self.key, d.param.name), d.dist, d.layout, d.param.shape, dtype)
        names = self.stream_names
        name = (
            d.param.name
            if names is None
            else (names(d.param.name) if callable(names) else names.get(d.param.name, d.param.name))
        )
        strides = canonical_strides(d.param.shape, d.param.layout)
        return _stream_draw(
            Stream(self.stream_seed, name),
            d.dist,
            strides,
            d.param.shape,
            dtype,
            gate_index(d.param.shape, d.param.layout),
        )

    def writes(self, targets: Sequence[Target[Any]]) -> list[Write]:
        return [
            Write((t.name,), functools.partial(self._draw, t), functools.partial(self.new_leaves.__setitem__, t.index))
            for t in targets
        ]

    def writing(self) -> Any:
        return contextlib.nullcontext()

    def finish(self, targets: Sequence[Target[Any]]) -> None:
        for w in self.weight_normed.values():  # WeightNorm: scale = √(Σ v² + ε) of the drawn v
            if self.names[w.scale] in self.setting:
                v, scale = self.new_leaves[w.source], self.new_leaves[w.scale]
                wide = v.astype(jnp.promote_types(v.dtype, jnp.float32))  # float64 kept under x64
                norm = jnp.sqrt(jnp.sum(jnp.square(wide), axis=w.axes) + w.epsilon)
                self.new_leaves[w.scale] = norm.reshape(np.shape(scale)).astype(scale.dtype)
        for sn in self.spectral_normed.values():  # SpectralNorm: u, σ by power iteration on the drawn kernel
            setting = [i for i in (sn.u, sn.sigma) if i is not None and self.names[i] in self.setting]
            if setting:
                u, sigma = _power_iteration(
                    self.new_leaves[sn.source], self.new_leaves[sn.u], sn.epsilon, SPECTRAL_STEPS
                )
                for i, value in ((sn.u, u), (sn.sigma, sigma)):
                    if i in setting:
                        old = self.new_leaves[i]
                        self.new_leaves[i] = value.reshape(np.shape(old)).astype(old.dtype)


from ._jax_check import check  # noqa: E402  (the model check: initscale.check, walked here)
from ._jax_lsuv import lsuv  # noqa: E402  (LSUV: reinit, then each layer to unit output variance)
