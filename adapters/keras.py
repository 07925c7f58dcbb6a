"""Keras 3 adapter: initscale specs as ``keras.initializers.Initializer`` objects, on every backend.

``initializer(spec, seed=None, layout=None)`` returns an :class:`Initializer` to pass as
``kernel_initializer=``; it is registered as ``"initscale>Initializer"``, so a model that uses it
saves to ``.keras`` and loads back with ``keras.saving.load_model`` (safe mode, no
``custom_objects``) once ``initscale.keras`` is imported. Drop-in classes under Keras's own names
(:class:`VarianceScaling`, :class:`GlorotUniform`, :class:`HeNormal`, :class:`LecunNormal`, ...)
take Keras's arguments. :func:`reinit` re-initializes a built model in place with the fans of
each layer, atomically, and returns a report.

Sampling uses ``keras.random`` and ``keras.ops`` only, so it runs on the TensorFlow, JAX and
PyTorch backends. Truncated normals are drawn by inverse CDF (u ~ U(Φ(α), Φ(β)),
z = √2·erfinv(2u − 1), in float64 where the backend allows it, else float32), so the bounds are
exactly ±truncation·σ and the variance is the corrected one on every backend; Keras's own
``keras.random.truncated_normal`` re-draws (TensorFlow, JAX) or, on the torch backend, keeps the
first of four draws inside ±2σ and returns an untruncated value when all four miss (p ≈ 4e-6).

Seeds follow ``keras.random``: an int gives the same values on every call, a
``keras.random.SeedGenerator`` advances on every call, None draws fresh values on every call
(Keras's own initializers instead fix a random int when unseeded).

Example:
    >>> import keras, initscale
    >>> from initscale.adapters import keras as isk
    >>> init = isk.initializer(initscale.presets.get("he_normal"), seed=0)
    >>> layer = keras.layers.Dense(64, kernel_initializer=init)
    >>> layer.build((None, 128))
    >>> bound = initscale.presets.get("he_normal").bounds(initscale.Fans(128, 64))[1]
    >>> bool(keras.ops.max(keras.ops.abs(layer.kernel)) <= bound)
    True

Note:
    Without ``layout`` the fans are Keras's own ``compute_fans`` (``"keras:native=true"``: the
    kernel is (*kernel, in, out); rank 0 and 1 handled as Keras does), except where Keras passes
    axes: ``EinsumDense`` (so ``MultiHeadAttention``) hands every
    ``keras.initializers.VarianceScaling`` its einsum's ``input_axes``/``output_axes``, and
    :class:`Initializer` and the VarianceScaling drop-ins are such instances, so they get
    Keras's fans there. Otherwise a Keras initializer sees only a shape, so pass a layer kind
    for stacked or grouped kernels (``"keras.lstm"``, ``"keras.depthwise_conv"``,
    ``"keras.conv:groups=4"``), or use :func:`reinit`, which reads the layout from each layer.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import keras

from initscale import from_dict, presets
from initscale.distributions import (
    ConstantDist,
    Distribution,
    NormalDist,
    OrthogonalDist,
    TruncatedNormalDist,
    UniformDist,
)
from initscale.fans import Fans, Layout, LayoutLike, layout_from_config, layout_to_config
from initscale.keras_layers import NORM_CLASSES, keras_role
from initscale.normal_math import far_tail_offset, normal_cdf, truncated_plan
from initscale.plan import planner
from initscale.reinit import ADDED_TENSOR, ADDED_TENSOR_NOTE, Param, Report, Role, Target, Write
from initscale.reinit import run as reinit_run
from initscale.rounding import clip_bounds, representable_bounds
from initscale.specs import Constant as ConstantSpec
from initscale.specs import Normal, Spec, Uniform
from initscale.specs import Ones as OnesSpec
from initscale.specs import Orthogonal as OrthogonalSpec
from initscale.specs import Zeros as ZerosSpec
from initscale.streams import (
    Stream,
    backend_draw,
    canonical_strides,
    gate_index,
    inverse_permutation,
    plan_stream,
    run_bits,
    runs,
    transform,
)

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "check",
    "initializer",
    "lsuv",
    "reinit",
]

_PACKAGE = "initscale"
_DEFAULT_LAYOUT = "keras:native=true"
_FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")


# --- sampling with keras.random / keras.ops -------------------------------------------------------


def _uniform_dtype() -> str:
    """float64 where the backend has it without extra configuration; JAX needs jax_enable_x64."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if getattr(jax.config, "jax_enable_x64", False) else "float32"
    return "float64"


def _truncated(dist: TruncatedNormalDist, shape: tuple[int, ...], dtype: str, seed: Any) -> Any:
    """Inverse CDF in the working precision (float64, or float32 on JAX without x64), from the side
    where the interval is representable (:func:`initscale.normal_math.truncated_plan`): ordinary
    intervals by erfinv, one-sided, far-tail and narrow ones by the backend's Φ⁻¹ of
    u ∈ (Φ(lo), Φ(hi)] (never 0), and beyond Φ's range by the exact offset from the bound."""
    ops = keras.ops
    a, b = dist.standard_bounds
    work = _uniform_dtype()
    low, high = representable_bounds(dist.low, dist.high, dtype)  # bounds that hold in dtype
    plan = truncated_plan(a, b, work)
    if plan.method != "erf":
        # Native operators with Python floats keep the tensor's dtype on every backend.
        unit = keras.random.uniform(shape, 0.0, 1.0, dtype=work, seed=seed)
        if plan.method == "ndtri":
            z = _ndtri()(_Ops(plan.p_hi - plan.p_width * unit)).x
        else:
            e = -ops.log1p(-plan.kept * unit)
            z = -(plan.a + far_tail_offset(e, plan.a, plan.log_s_a, ops))
        z = ops.clip(z, plan.z_low, plan.z_high)
        return ops.cast(ops.clip(z * (plan.sign * dist.sigma) + dist.loc, low, high), dtype)
    flip = a > 0.0  # an upper-tail interval is drawn as the mirror of the lower one
    if flip:
        a, b = -b, -a
    u = keras.random.uniform(shape, normal_cdf(a), normal_cdf(b), dtype=work, seed=seed)
    z = ops.clip(ops.multiply(ops.erfinv(ops.subtract(ops.multiply(u, 2.0), 1.0)), math.sqrt(2.0)), a, b)
    if flip:
        z = ops.negative(z)
    return ops.cast(ops.clip(ops.add(ops.multiply(z, dist.sigma), dist.loc), low, high), dtype)


def _orthogonal(dist: OrthogonalDist, layout: Layout, shape: tuple[int, ...], dtype: str, seed: Any) -> Any:
    ops = keras.ops
    order, (nb, og, o, ig, i, rf) = layout.blocks(shape)
    rows, cols = o, i * rf
    big, small = max(rows, cols), min(rows, cols)
    work = "float64" if dtype == "float64" else "float32"
    g = keras.random.normal((nb * og * ig, big, small), dtype=work, seed=seed)
    q, r = ops.linalg.qr(g)
    q = ops.multiply(q, ops.expand_dims(ops.sign(ops.diagonal(r, axis1=-2, axis2=-1)), -2))  # Haar
    if rows < cols:
        q = ops.swapaxes(q, -1, -2)
    blocks = ops.transpose(ops.reshape(ops.multiply(q, dist.gain), (nb, og, ig, o, i, rf)), (0, 1, 3, 2, 4, 5))
    permuted = ops.reshape(blocks, tuple(shape[a] for a in order))
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return ops.cast(ops.transpose(permuted, inverse), dtype)


def _sample(dist: Distribution, layout: Layout | None, shape: tuple[int, ...], dtype: str, seed: Any) -> Any:
    if isinstance(dist, ConstantDist):
        return keras.ops.full(shape, dist.value, dtype=dtype)
    if isinstance(dist, TruncatedNormalDist):
        return _truncated(dist, shape, dtype, seed)
    if isinstance(dist, OrthogonalDist):
        if layout is None:  # pragma: no cover - the planner always gives one
            raise ValueError("An orthogonal init needs the weight's layout.")
        return _orthogonal(dist, layout, shape, dtype, seed)
    work = "float32" if dtype in ("float16", "bfloat16") else dtype
    if isinstance(dist, NormalDist):
        out = keras.random.normal(shape, mean=dist.mean, stddev=dist.std, dtype=work, seed=seed)
    elif isinstance(dist, UniformDist):
        out = keras.random.uniform(shape, minval=dist.low, maxval=dist.high, dtype=work, seed=seed)
        out = keras.ops.clip(out, *representable_bounds(dist.low, dist.high, dtype))  # bounds that hold in dtype
    else:  # pragma: no cover - every Distribution is handled above
        raise TypeError(f"Unknown distribution {dist!r}.")
    return keras.ops.cast(out, dtype)


# --- portable streams with keras.ops ---------------------------------------------------------------


class _Ops:
    """A backend tensor with Python's operators mapped to ``keras.ops``, so the backend-neutral
    Philox and run code of :mod:`initscale.streams` runs on it (TensorFlow tensors lack ``>>``,
    ``&`` and ``reshape``)."""

    __slots__ = ("x",)

    def __init__(self, x: Any) -> None:
        self.x = x

    def _raw(self, other: Any) -> Any:
        """The other operand as a tensor of this one's dtype: a Python scalar converted by the
        backend alone may become float32 or int32 (the torch backend does), losing bits."""
        if isinstance(other, _Ops):
            return other.x
        return keras.ops.convert_to_tensor(other, dtype=keras.backend.standardize_dtype(self.x.dtype))

    def __add__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.add(self.x, self._raw(other)))

    def __radd__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.add(self._raw(other), self.x))

    def __sub__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.subtract(self.x, self._raw(other)))

    def __rsub__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.subtract(self._raw(other), self.x))

    def __mul__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.multiply(self.x, self._raw(other)))

    def __rmul__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.multiply(self._raw(other), self.x))

    def __truediv__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.divide(self.x, self._raw(other)))

    def __rtruediv__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.divide(self._raw(other), self.x))

    def __neg__(self) -> _Ops:
        return _Ops(keras.ops.negative(self.x))

    def __rshift__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.right_shift(self.x, self._raw(other)))

    def __lshift__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.left_shift(self.x, self._raw(other)))

    def __and__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.bitwise_and(self.x, self._raw(other)))

    def __or__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.bitwise_or(self.x, self._raw(other)))

    def __xor__(self, other: Any) -> _Ops:
        return _Ops(keras.ops.bitwise_xor(self.x, self._raw(other)))

    __rxor__ = __xor__  # bitwise operators commute
    __rand__ = __and__
    __ror__ = __or__

    def __getitem__(self, index: Any) -> _Ops:
        return _Ops(self.x[index])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    def reshape(self, *shape: Any) -> _Ops:
        return _Ops(keras.ops.reshape(self.x, shape[0] if len(shape) == 1 else shape))

    def clip(self, low: float, high: float) -> _Ops:
        return _Ops(keras.ops.clip(self.x, low, high))


_OPS_XP = SimpleNamespace(log=lambda t: _Ops(keras.ops.log(t.x)), sqrt=lambda t: _Ops(keras.ops.sqrt(t.x)))
"""``log`` and ``sqrt`` on :class:`_Ops` (the far-tail stream transform, :func:`initscale.streams.far_values`)."""


def _ndtri() -> Callable[[_Ops], _Ops]:
    """The backend's own Φ⁻¹ (as the torch and JAX adapters use theirs)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        fn: Callable[[Any], Any] = tf.math.ndtri
    elif backend == "torch":
        import torch

        fn = torch.special.ndtri
    elif backend == "jax":
        import jax

        fn = jax.scipy.special.ndtri
    else:
        from initscale.normal_math import ndtri

        fn = ndtri
    return lambda u: _Ops(fn(u.x))


def _stream_tensor(
    stream: Stream, dist: Distribution, shape: tuple[int, ...], layout: LayoutLike | None, dtype: str
) -> Any:
    """The portable stream (:mod:`initscale.streams`) on the backend's device, compiled where the
    backend compiles: the JAX adapter's jitted program on JAX (one per shape, the key traced), the
    torch adapter's stream code on torch (its C kernel on the CPU, Triton on a GPU, else int64
    ops); keras.ops elsewhere. On TensorFlow the integer stage (Philox in int64, one multiply per
    product, to the uniforms in the weight's layout) is an XLA-compiled ``tf.function`` per shape
    and layout, the key an input (a shape not seen before is drawn eagerly, which is faster than
    compiling for it once: the same integers either way), and the float stage always runs as
    TensorFlow's eager kernels, so every call of a stream gives the same values: XLA contracts a
    multiply and an add into one FMA and evaluates ``ndtri`` with other roundings than the eager
    kernel (different in about half of the float64 values of a normal). The float stage is
    float64 where the backend has it (JAX needs x64)."""
    if isinstance(dist, OrthogonalDist):
        transform(dist, None)  # raises the explanation
    strides = canonical_strides(shape, layout)
    gates = gate_index(shape, layout)
    backend = keras.backend.backend()
    if backend in ("jax", "torch"):  # the framework adapter's own draw, shared through the core
        out = keras.ops.empty(shape, dtype) if backend == "torch" else None
        return backend_draw(backend)(stream, dist, strides, shape, dtype, gates, out)
    order = None if gates is None else (gates[0], tuple(gates[1]))
    program = (shape, strides, order)
    if backend == "tensorflow" and program in _TF_SEEN:  # compiled from a shape's second draw (XLA: ~0.3 s)
        import tensorflow as tf

        u = _tf_uniform_program(*program)(tf.constant(stream.key, tf.int64))
    else:
        if backend == "tensorflow":
            _TF_SEEN.add(program)
        u = _ops_uniforms(stream.key, shape, strides, order)
    return _ops_values(dist, u, dtype)


_TF_SEEN: set[tuple[Any, ...]] = set()  # the (shape, canonical strides, gate order) drawn eagerly once


def _tf_round_to_odd(values: Any) -> Any:
    """float64 → float32 rounded to odd (toward zero, lowest bit set where inexact): cast on to
    float16/bfloat16 (nearest even), it gives the float64 value rounded once, as NumPy does."""
    import tensorflow as tf

    t = tf.cast(values, tf.float32)
    over = tf.abs(tf.cast(t, tf.float64)) > tf.abs(values)
    t = tf.where(over, tf.math.nextafter(t, tf.zeros_like(t)), t)
    bits = tf.bitcast(t, tf.int32)
    bits = tf.where(tf.cast(t, tf.float64) != values, tf.bitwise.bitwise_or(bits, 1), bits)
    return tf.bitcast(bits, tf.float32)


@functools.lru_cache(maxsize=256)
def _tf_uniform_program(
    shape: tuple[int, ...], strides: tuple[int, ...], gates: tuple[int, tuple[int, ...]] | None
) -> Callable[[Any], Any]:
    """One XLA program per (shape, layout) for the integer stage, the key an input: eager
    TensorFlow runs the ~200 integer ops of Philox one full pass over memory each. It ends at
    the uniforms (exact: an odd integer times 2⁻²⁴), so every distribution and dtype of a shape
    shares it, and no float operation of the transform is compiled (see :func:`_stream_tensor`)."""
    import tensorflow as tf

    def program(key: Any) -> Any:
        return _ops_uniforms((_Ops(key[0]), _Ops(key[1])), shape, strides, gates)

    compiled: Callable[[Any], Any] = tf.function(
        program, jit_compile=True, autograph=False, input_signature=[tf.TensorSpec([2], tf.int64)]
    )
    return compiled


def _ops_uniforms(
    key: tuple[Any, Any], shape: tuple[int, ...], strides: tuple[int, ...], gates: tuple[int, tuple[int, ...]] | None
) -> Any:
    """The stream's uniforms with keras.ops, in the weight's layout: Philox in int64 on runs of
    consecutive canonical indices (:func:`initscale.streams.run_bits`), then (2·(x >> 9) + 1)·2⁻²⁴
    (exact); ``key`` two ints, or two int64 tensors (traced)."""
    ops = keras.ops
    xp = SimpleNamespace(
        arange=lambda n: _Ops(ops.arange(n, dtype="int64")),
        stack=lambda arrays: _Ops(ops.stack([a.x for a in arrays], axis=-1)),
        take=lambda array, index: _Ops(ops.take_along_axis(array.x, index.x, axis=-1)),
    )
    plan = runs(shape, strides)
    const = None if isinstance(key[0], int) else (lambda k: _Ops(ops.convert_to_tensor(k, "int64")))
    bits = run_bits(plan, key, xp, const=const)
    u = ops.multiply(ops.cast(((bits >> 8) | 1).x, _uniform_dtype()), 2.0**-24)  # 2·(x >> 9) + 1, times 2⁻²⁴
    u = ops.reshape(u, plan.counts)
    u = ops.transpose(u, inverse_permutation(plan.perm)) if plan.perm else u
    if gates is not None:
        u = ops.take(u, ops.convert_to_tensor(gates[1], "int32"), axis=gates[0])
    return u


def _ops_values(dist: Distribution, u: Any, dtype: str) -> Any:
    """The float stage (:func:`initscale.streams.transform`) on uniforms ``u``, with the
    backend's ndtri, clipped to the bounds that hold in ``dtype`` and rounded once to it."""
    ops = keras.ops
    values = transform(dist, _Ops(u), _ndtri(), _OPS_XP).x
    clip = clip_bounds(dist, dtype)
    values = values if clip is None else ops.clip(values, *clip)
    if dtype in ("float16", "bfloat16") and keras.backend.backend() == "tensorflow":
        values = _tf_round_to_odd(values)  # TensorFlow's float64 → float16 cast rounds twice
    return ops.cast(values, dtype)


def _float_dtype(dtype: Any) -> str:
    name = str(keras.backend.standardize_dtype(dtype if dtype is not None else keras.backend.floatx()))
    if name not in _FLOAT_DTYPES:
        raise TypeError(
            f"initscale initializers make floating-point values only. Received: dtype={name!r}; valid: "
            f"{', '.join(repr(d) for d in _FLOAT_DTYPES)}."
        )
    return name


# --- seeds and layouts in configs ----------------------------------------------------------------


def _check_seed(seed: Any) -> Any:
    if isinstance(seed, dict):
        seed = keras.saving.deserialize_keras_object(seed)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, keras.random.SeedGenerator))):
        raise TypeError(
            f"Argument `seed` must be an int, a keras.random.SeedGenerator or None. Received: seed={seed!r}."
        )
    return seed


# --- the initializer -----------------------------------------------------------------------------


def _axis_tuple(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
    ):
        raise TypeError(f"Argument `{name}` must be an int or a list of ints. Received: {name}={value!r}.")
    return tuple(value)


class _CountedAxes(Layout):
    """Keras 3.15's ``input_axes``/``output_axes``, as ``keras.initializers.compute_fans`` reads
    them when both are given: fan_in is the product of the input axes' sizes, fan_out of the
    output axes' (an empty product is 1: EinsumDense ``"ab,b->a"`` has no output axis,
    ``"abc,cd->abcd"`` no input axis), no receptive field; every other axis is a batch axis (and
    orders the portable stream as one). Unlike a plain :class:`~initscale.Layout`, a side may be
    empty, so the fields are set here."""

    def __init__(self, input_axes: Any, output_axes: Any) -> None:
        ins, outs = _axis_tuple("input_axes", input_axes), _axis_tuple("output_axes", output_axes)
        if len(set(ins + outs)) != len(ins + outs):
            raise ValueError(
                f"Arguments `input_axes` and `output_axes` must name distinct axes. Received: "
                f"input_axes={input_axes!r}, output_axes={output_axes!r}."
            )
        name = f"keras(input_axes={list(ins)}, output_axes={list(outs)})"
        for key, value in (
            ("in_axes", ins),
            ("out_axes", outs),
            ("batch_axes", ()),
            ("in_groups", 1),
            ("out_groups", 1),
            ("name", name),
        ):
            object.__setattr__(self, key, value)

    def split_axes(
        self, shape: Sequence[int]
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        ins, outs, batch, rest = super().split_axes(shape)
        return ins, outs, tuple(sorted(batch + rest)), ()

    def fans(self, shape: Sequence[int]) -> Fans:
        dims = tuple(int(d) for d in shape)
        ins, outs, _, _ = self.split_axes(dims)
        return Fans(math.prod(dims[a] for a in ins), math.prod(dims[a] for a in outs))


def _uses_fans(spec: Spec) -> bool:
    """Specs whose numbers come from the fans (VarianceScaling); fixed-scale and orthogonal
    specs use none, so Keras's axes do not concern them (Keras's own RandomNormal and
    Orthogonal never receive any)."""
    return not spec.fixed_scale and not isinstance(spec, OrthogonalSpec)


def _fan_layout(spec: Spec, layout: LayoutLike | None, input_axes: Any, output_axes: Any) -> LayoutLike:
    """How an initializer reads a shape: ``layout`` when given, else Keras's axes (for specs that
    use fans), else Keras's own fan rule."""
    if (input_axes is None) != (output_axes is None):
        raise ValueError(
            "Arguments `input_axes` and `output_axes` go together: give both or neither. Received: "
            f"input_axes={input_axes!r}, output_axes={output_axes!r}."
        )
    if input_axes is None:
        return _DEFAULT_LAYOUT if layout is None else layout
    if layout is not None:
        raise ValueError(
            "Give either `layout` or `input_axes`/`output_axes`, not both. Received: "
            f"layout={layout!r}, input_axes={input_axes!r}, output_axes={output_axes!r}."
        )
    counted = _CountedAxes(input_axes, output_axes)  # checked whatever the spec
    return counted if _uses_fans(spec) else _DEFAULT_LAYOUT


class _SpecInitializer(keras.initializers.Initializer):  # type: ignore[misc]
    """What every initscale Keras initializer shares: a spec, a seed, how to read the shape
    (``layout``, or Keras's ``input_axes``/``output_axes``) and an optional stream."""

    def __init__(
        self,
        spec: Spec | Mapping[str, Any],
        seed: Any = None,
        layout: LayoutLike | None = None,
        stream: Stream | Mapping[str, Any] | None = None,
        *,
        input_axes: Any = None,
        output_axes: Any = None,
    ) -> None:
        if isinstance(spec, Mapping):
            spec = from_dict(spec)
        if not isinstance(spec, Spec):
            raise TypeError(f"Argument `spec` must be an initscale spec. Received: spec={spec!r}.")
        self.spec = spec
        self._init_seed = seed
        self.seed = _check_seed(seed)
        self.layout = layout_from_config(layout)
        self.input_axes, self.output_axes = input_axes, output_axes
        self._plan, self._rule = planner(spec, _fan_layout(spec, self.layout, input_axes, output_axes))
        if isinstance(stream, Mapping):
            stream = Stream(**stream)
        if stream is not None and not isinstance(stream, Stream):
            raise TypeError(f"Argument `stream` must be an initscale.Stream. Received: stream={stream!r}.")
        self.stream = stream

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        dims = tuple(int(d) for d in shape)
        if self.stream is not None:
            dist, _ = plan_stream(self.stream, self.spec, dims, self._rule)
            return _stream_tensor(self.stream, dist, dims, self._rule, _float_dtype(dtype))
        dist, concrete = self._plan(dims)
        return _sample(dist, concrete, dims, _float_dtype(dtype), self.seed)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        """Rebuild from :meth:`get_config`. Keras's EinsumDense clones a VarianceScaling whose axes
        are None through here with its ``input_axes``/``output_axes`` added: an explicit
        ``layout`` already fixes the fans, so it wins and the added axes are dropped."""
        config = dict(config)
        if config.get("layout") is not None and config.get("input_axes") is not None:
            config.pop("input_axes")
            config.pop("output_axes", None)
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, seed={self._init_seed!r}, layout={self._rule})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Initializer(_SpecInitializer, keras.initializers.VarianceScaling):  # type: ignore[misc]
    """An initscale spec as a Keras initializer: ``init(shape, dtype=None)``.

    Args:
        spec: the initscale spec (or its ``to_dict()`` form, as in a saved config).
        seed: int (same values every call), ``keras.random.SeedGenerator`` (advances every
            call) or None (fresh values every call).
        layout: how to read the kernel's shape: a layer kind name (``"keras.lstm"``), a
            :class:`~initscale.Layout`, or None for Keras's own fan rule.
        stream: an :class:`initscale.Stream` (or its ``{"seed", "name"}`` dict): draw the
            portable stream instead (``seed`` unused), computed on the backend's device (an
            XLA program for the integers on TensorFlow, the JAX and torch adapters' stream code
            on those backends): the same values on every call, and as NumPy and torch for the
            same seed and name on the TensorFlow and torch backends (float64 normals within 8
            ulps of the weight's largest magnitude: each backend's ndtri); on JAX without x64,
            within the float32 bound of ``initscale.adapters.jax``.
        input_axes, output_axes: Keras 3.15's axis hints (both or neither, not with ``layout``):
            the fans count only these axes, as ``keras.initializers.compute_fans`` does. Keras's
            ``EinsumDense`` (so ``MultiHeadAttention``) passes its einsum's axes to every
            ``keras.initializers.VarianceScaling``, which this class is, so a spec scaled by the
            fans gets the same fans there as Keras's own initializer. Fixed-scale and orthogonal
            specs ignore them (Keras never hands its RandomNormal or Orthogonal axes).

    ``get_config()`` holds the spec as its versioned dict; ``from_config`` rebuilds it exactly.
    A subclass of ``keras.initializers.VarianceScaling`` for Keras's axis protocol only: its
    ``__init__`` is not run and it has no ``scale``/``mode``/``distribution``.
    """

    def __init__(
        self,
        spec: Spec | Mapping[str, Any],
        seed: Any = None,
        layout: LayoutLike | None = None,
        stream: Stream | Mapping[str, Any] | None = None,
        input_axes: Any = None,
        output_axes: Any = None,
    ) -> None:
        super().__init__(spec, seed, layout, stream, input_axes=input_axes, output_axes=output_axes)

    def get_config(self) -> dict[str, Any]:
        config = {
            "spec": self.spec.to_dict(),
            "seed": keras.saving.serialize_keras_object(self._init_seed),
            "layout": layout_to_config(self.layout),
        }
        if self.stream is not None:
            config["stream"] = {"seed": self.stream.seed, "name": self.stream.name}
        if self.input_axes is not None:
            config.update(input_axes=self.input_axes, output_axes=self.output_axes)
        return config


def initializer(
    spec: Spec, seed: Any = None, layout: LayoutLike | None = None, *, stream: Stream | None = None
) -> Initializer:
    """Compile ``spec`` into a Keras initializer (see :class:`Initializer`)."""
    return Initializer(spec, seed=seed, layout=layout, stream=stream)


class _KerasNamed(_SpecInitializer):
    """Base of the drop-in classes: Keras's constructor arguments in, Keras's config out."""

    def __init__(
        self,
        spec: Spec,
        seed: Any = None,
        layout: LayoutLike | None = None,
        *,
        input_axes: Any = None,
        output_axes: Any = None,
        **args: Any,
    ) -> None:
        self._keras_args = args
        super().__init__(spec, seed=seed, layout=layout, input_axes=input_axes, output_axes=output_axes)

    def get_config(self) -> dict[str, Any]:
        config = dict(self._keras_args)
        config["seed"] = keras.saving.serialize_keras_object(self._init_seed)
        if self.input_axes is not None:
            config.update(input_axes=self.input_axes, output_axes=self.output_axes)
        if self.layout is not None:
            config["layout"] = layout_to_config(self.layout)
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VarianceScaling(_KerasNamed, keras.initializers.VarianceScaling):  # type: ignore[misc]
    """Drop-in for ``keras.initializers.VarianceScaling``: Var[W] = scale / n.

    Keras's arguments and spellings: ``distribution`` is one of ``"truncated_normal"`` (corrected
    so that the std after the ±2σ cut is √(scale/n)), ``"untruncated_normal"``, ``"uniform"``,
    and ``"normal"``, which Keras treats as ``"truncated_normal"``. ``mode`` also takes
    ``"fan_geo_avg"``. ``input_axes``/``output_axes`` (Keras 3.15) count only those axes; like
    Keras's own class (and its subclasses GlorotUniform, HeNormal, ...), it is a
    ``keras.initializers.VarianceScaling``, so ``EinsumDense`` and ``MultiHeadAttention`` hand
    it their einsum's axes and it gets the fans Keras's own gets there.
    """

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: Any = None,
        input_axes: Any = None,
        output_axes: Any = None,
        layout: LayoutLike | None = None,
    ) -> None:
        spec = presets.get("keras.variance_scaling", scale=scale, mode=mode, distribution=distribution)
        name = distribution.lower()  # the preset has checked it
        super().__init__(
            spec,
            seed,
            layout,
            input_axes=input_axes,
            output_axes=output_axes,
            scale=scale,
            mode=mode,
            distribution=name,
        )
        self._keras_attributes(scale, mode, name)

    def _keras_attributes(self, scale: float, mode: str, distribution: str) -> None:
        """Keras's attributes, as Keras's own class holds them ("normal" read as "truncated_normal")."""
        self.scale, self.mode = scale, mode
        self.distribution = "truncated_normal" if distribution == "normal" else distribution


def _fixed(name: str, preset: str, keras_args: tuple[float, str, str], doc: str) -> type[VarianceScaling]:
    spec = presets.get(preset)

    def __init__(
        self: VarianceScaling,
        seed: Any = None,
        input_axes: Any = None,
        output_axes: Any = None,
        layout: LayoutLike | None = None,
    ) -> None:
        _KerasNamed.__init__(self, spec, seed, layout, input_axes=input_axes, output_axes=output_axes)
        self._keras_attributes(*keras_args)

    cls = type(name, (VarianceScaling,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})
    return keras.saving.register_keras_serializable(package=_PACKAGE)(cls)  # type: ignore[no-any-return]


GlorotUniform = _fixed(
    "GlorotUniform",
    "glorot_uniform",
    (1.0, "fan_avg", "uniform"),
    "Drop-in for keras.initializers.GlorotUniform: U(±√(6/(fan_in+fan_out))).",
)
GlorotNormal = _fixed(
    "GlorotNormal",
    "glorot_normal",
    (1.0, "fan_avg", "truncated_normal"),
    "Drop-in for keras.initializers.GlorotNormal: truncated (±2σ), variance 2/(fan_in+fan_out).",
)
HeUniform = _fixed(
    "HeUniform", "he_uniform", (2.0, "fan_in", "uniform"), "Drop-in for keras.initializers.HeUniform: U(±√(6/fan_in))."
)
HeNormal = _fixed(
    "HeNormal",
    "he_normal",
    (2.0, "fan_in", "truncated_normal"),
    "Drop-in for keras.initializers.HeNormal: truncated (±2σ), variance 2/fan_in.",
)
LecunUniform = _fixed(
    "LecunUniform",
    "lecun_uniform",
    (1.0, "fan_in", "uniform"),
    "Drop-in for keras.initializers.LecunUniform: U(±√(3/fan_in)).",
)
LecunNormal = _fixed(
    "LecunNormal",
    "lecun_normal",
    (1.0, "fan_in", "truncated_normal"),
    "Drop-in for keras.initializers.LecunNormal: truncated (±2σ), variance 1/fan_in.",
)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomNormal(_KerasNamed):
    """Drop-in for ``keras.initializers.RandomNormal``: N(mean, stddev²)."""

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: Any = None, layout: LayoutLike | None = None
    ) -> None:
        super().__init__(Normal(stddev, mean), seed, layout, mean=mean, stddev=stddev)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TruncatedNormal(_KerasNamed):
    """Drop-in for ``keras.initializers.TruncatedNormal``: N(mean, stddev²) cut at ±2·stddev
    (``stddev`` is the σ before truncation, as in Keras; the std after it is 0.8796·stddev)."""

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: Any = None, layout: LayoutLike | None = None
    ) -> None:
        super().__init__(
            presets.get("keras.truncated_normal", mean=mean, stddev=stddev), seed, layout, mean=mean, stddev=stddev
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RandomUniform(_KerasNamed):
    """Drop-in for ``keras.initializers.RandomUniform``: U(minval, maxval)."""

    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: Any = None, layout: LayoutLike | None = None
    ) -> None:
        super().__init__(Uniform(minval, maxval), seed, layout, minval=minval, maxval=maxval)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Orthogonal(_KerasNamed):
    """Drop-in for ``keras.initializers.Orthogonal``: ``gain`` × a Haar-random orthogonal matrix
    (per block with a layer kind such as ``"keras.lstm"``: one per gate)."""

    def __init__(self, gain: float = 1.0, seed: Any = None, layout: LayoutLike | None = None) -> None:
        super().__init__(OrthogonalSpec(gain), seed, layout, gain=gain)


def _constant_class(name: str, spec: Spec, doc: str) -> type[_KerasNamed]:
    def __init__(self: _KerasNamed) -> None:
        _KerasNamed.__init__(self, spec)

    def get_config(self: _KerasNamed) -> dict[str, Any]:
        return {}

    cls = type(
        name, (_KerasNamed,), {"__init__": __init__, "get_config": get_config, "__doc__": doc, "__module__": __name__}
    )
    return keras.saving.register_keras_serializable(package=_PACKAGE)(cls)  # type: ignore[no-any-return]


Zeros = _constant_class("Zeros", ZerosSpec(), "Drop-in for keras.initializers.Zeros.")
Ones = _constant_class("Ones", OnesSpec(), "Drop-in for keras.initializers.Ones.")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Constant(_KerasNamed):
    """Drop-in for ``keras.initializers.Constant`` (a scalar ``value``)."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__(ConstantSpec(value), value=value)

    def get_config(self) -> dict[str, Any]:
        return {"value": self._keras_args["value"]}


# --- whole-model re-initialization --------------------------------------------------------------

# Normalization layers by class (Keras's own, NORM_CLASSES), by a class name ending in Norm or
# Normalization (keras-hub's LlamaLayerNorm, T5LayerNorm, Gemma's RMSNormalization, ...), or by
# duck typing: an ``epsilon`` attribute and variables of one non-singleton axis at most.
_NORM_NAME = re.compile(r"(Norm|Normalization)\d*\Z")
_NORM_SCALE_LEAVES = ("gamma", "scale", "weight")
_NORM_OFFSET_LEAVES = ("beta", "bias", "offset", "shift")
# A scale used as (1 + scale) in call (keras-hub's Gemma and Gemma 3 RMSNormalization): stored as
# an offset from one, so its own init is zeros.
_UNIT_OFFSET = re.compile(r"\(\s*1(\.0*)?\s*\+\s*(self\.)?(scale|gamma|weight)\b")
_NORMS: dict[type, bool] = {}  # a layer class -> whether its scale is used as 1 + scale


def _spans(shape: tuple[int, ...]) -> bool:
    """One axis of size > 1 at most: a norm's scale or offset over its normalized features."""
    return sum(d > 1 for d in shape) <= 1


def _norm_kind(layer: Any) -> tuple[bool, bool]:
    """Whether ``layer`` is a normalization layer, and whether its scale is used as 1 + scale."""
    cls = type(layer)
    names = [c.__name__ for c in cls.__mro__]
    named = bool(NORM_CLASSES.intersection(names)) or any(_NORM_NAME.search(n) for n in names)
    if not named:
        own = list(layer._trainable_variables) + list(layer._non_trainable_variables)
        named = hasattr(layer, "epsilon") and bool(own) and all(_spans(tuple(int(d) for d in v.shape)) for v in own)
    if not named:
        return False, False
    if cls not in _NORMS:
        unit = False
        if not cls.__module__.startswith("keras."):  # Keras's own norms use their scale as is
            try:
                unit = bool(_UNIT_OFFSET.search(inspect.getsource(cls.call)))
            except (OSError, TypeError):  # no source (compiled, interactive): a plain scale
                unit = False
        _NORMS[cls] = unit
    return True, _NORMS[cls]


def _role_and_layout(layer: Any, leaf: str, shape: tuple[int, ...]) -> tuple[Role, LayoutLike | None, str]:
    """What a variable is to the layer that owns it, its forward-fan layout, and a note.

    A variable of a layer initscale does not recognise gets no layout (never a guessed one), so
    a fan-based rule that reaches it raises naming it (:func:`initscale.reinit.plan`)."""
    if _norm_kind(layer)[0]:
        if leaf in _NORM_OFFSET_LEAVES and _spans(shape):
            return "norm_offset", None, ""
        if leaf in _NORM_SCALE_LEAVES and _spans(shape):
            return "norm_scale", None, ""
        return "other", None, ""  # moving statistics, or a variable of more axes
    kinds = {c.__name__ for c in type(layer).__mro__}
    role, layout, note = keras_role(
        kinds,
        leaf,
        len(shape),
        groups=getattr(layer, "groups", 1),
        unit_forget_bias=bool(getattr(layer, "unit_forget_bias", False)),
        equation=getattr(layer, "equation", None),
    )
    if role != "other":
        return role, layout, note
    if len(shape) >= 2 and (ADDED_TENSOR.search(leaf) or any(ADDED_TENSOR.search(k) for k in kinds)):
        return "other", None, ADDED_TENSOR_NOTE  # kept with this note; a one spec's warning lists it
    return "other", None, note


_SKIP_CLASSES = frozenset(
    {
        "Layer",
        "Operation",
        "KerasSaveable",
        "object",
        "Model",
        "Trainer",
        "TFLayer",
        "JaxLayer",
        "TorchLayer",
        "TorchModuleWrapper",
        "Module",
    }
)


def _classes(layer: Any) -> tuple[str, ...]:
    return tuple(c.__name__ for c in type(layer).__mro__ if c.__name__ not in _SKIP_CLASSES)


def _walk(
    layer: Any, ancestors: tuple[str, ...], seen: set[int], include_buffers: bool, found: list[tuple[Param, Any]]
) -> None:
    """Every variable once, in Keras's order, with its owner. ``owner_classes`` are the owning
    layer's class names, then (for every role but a norm's scale and offset) those of each
    enclosing layer, innermost first: a class rule on ``"MultiHeadAttention"`` reaches its
    EinsumDense kernels, ``"LSTM"`` its cell's kernels, a keras-hub ``"TransformerEncoder"`` its
    dense and attention kernels, while the norms inside keep their own defaults (a fan-based spec
    on a norm scale has no fans). ``ancestors``: the enclosing layers' class names."""
    own = [(v, False) for v in layer._trainable_variables]
    if include_buffers:
        own += [(v, True) for v in layer._non_trainable_variables]
    mine = _classes(layer)
    nested = tuple(dict.fromkeys(mine + ancestors))
    for variable, is_buffer in own:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        shape = tuple(int(d) for d in variable.shape)
        leaf = variable.name.split("/")[-1]
        role, layout, note = _role_and_layout(layer, leaf, shape)
        classes = mine if role in ("norm_scale", "norm_offset") else nested
        frozen = not is_buffer and not variable.trainable
        found.append(
            (
                Param(
                    variable.path,
                    shape,
                    classes,
                    role,
                    layout,
                    frozen=frozen,
                    buffer=is_buffer,
                    note=note,
                    unit_offset=role == "norm_scale" and _norm_kind(layer)[1],
                ),
                variable,
            )
        )
    for child in layer._flatten_layers(include_self=False, recursive=False):
        _walk(child, nested, seen, include_buffers, found)


def reinit(
    model: Any,
    rules: Spec | Mapping[str, Spec | None],
    seed: Any = None,
    dry_run: bool = False,
    *,
    include_frozen: bool = False,
    include_buffers: bool = False,
    defaults: bool = True,
    stream_seed: int | None = None,
    stream_names: Mapping[str, str] | Callable[[str], str] | None = None,
    fans: str = "forward",
) -> Report:
    """Re-initialize a built Keras model's variables in place (``assign``), each with its layer's fans.

    Same rules, defaults, atomicity and report as ``initscale.torch.reinit_``: ``rules`` is one
    spec (for the kernels of Dense, EinsumDense, ConvND, ConvNDTranspose, DepthwiseConv,
    SeparableConv and the kernel/recurrent_kernel of LSTM/GRU/SimpleRNN) or an ordered mapping
    from pattern to spec or None; patterns are layer class names (``"Dense"``, ``"LSTM"``: that
    layer's kernels and recurrent kernels, never its biases) or globs on variable paths
    (``"*/kernel"``, ``"encoder/*"``). Biases → zeros (except an LSTM's bias with
    ``unit_forget_bias=True``, which is kept unless a glob names it), norm gamma/scale → ones, beta → zeros;
    embeddings and anything else unmatched are kept. Variables of frozen layers are skipped
    unless ``include_frozen``; non-trainable state (moving statistics) is offered to name
    patterns only with ``include_buffers``.

    Layouts: per group for grouped ConvND, per channel for depthwise kernels, forward fans for
    ConvNDTranspose, per gate for recurrent kernels, and EinsumDense (MultiHeadAttention's
    projections) from its equation.

    Args:
        seed: int, ``keras.random.SeedGenerator`` or None; variables draw in order from one
            generator made from it.
        stream_seed: draw each variable from the portable stream ``Stream(stream_seed, path)``
            instead (the same weights as torch's and JAX's ``reinit`` for the same names).
        stream_names: a mapping or function from variable paths to stream names.
        fans: ``"forward"`` (default) or ``"native"``: Keras's own ``compute_fans`` on each
            kernel's shape (:func:`initscale.reinit.plan`); the report's rows say which was used.

    Example:
        >>> import keras, initscale
        >>> from initscale.adapters.keras import reinit
        >>> model = keras.Sequential([keras.Input((10, 8)), keras.layers.LSTM(16), keras.layers.Dense(4)])
        >>> report = reinit(model, initscale.presets.get("glorot_uniform"), seed=0)
        >>> row = next(r for r in report if r.name.endswith("recurrent_kernel"))
        >>> (row.layout, row.fan_in, row.fan_out)                        # per gate: 16, not 64
        ('keras.lstm', 16, 16)
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"Argument `model` must be a Keras layer or model. Received: {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"The model {model.name!r} is not built, so its variables do not exist yet: build it first "
            "(call it on a batch, or model.build(input_shape))."
        )
    from initscale.autogain import Auto

    if isinstance(rules, Auto):  # initscale.auto(...): planned on the model's graph, then measured (_keras_auto)
        from ._keras_auto import apply as _auto_apply

        options = {
            "include_frozen": include_frozen,
            "include_buffers": include_buffers,
            "defaults": defaults,
            "stream_seed": stream_seed,
            "stream_names": stream_names,
            "fans": fans,
        }
        if dry_run:
            return reinit(model, rules.plan(model).rules(), seed, True, **options)  # type: ignore[arg-type]
        init = _auto_apply(model, rules, seed=seed, **options).init
        assert init is not None
        return init
    backend = _Backend(model, include_buffers, seed, stream_seed, stream_names)
    return reinit_run(
        backend, rules, include_frozen=include_frozen, defaults=defaults, dry_run=dry_run, fans=fans, stacklevel=2
    )


class _Backend:
    """``reinit``'s walk and write for :func:`initscale.reinit.run`: the model's variables; every
    value drawn (in order, from one seed generator or each variable's stream) before the first
    ``assign``."""

    entry = "reinit"

    def __init__(
        self,
        model: Any,
        include_buffers: bool,
        seed: Any,
        stream_seed: int | None,
        stream_names: Mapping[str, str] | Callable[[str], str] | None,
    ) -> None:
        self.model, self.include_buffers, self.seed = model, include_buffers, seed
        self.stream_seed, self.stream_names = stream_seed, stream_names

    def walk(self) -> list[tuple[Param, Any]]:
        found: list[tuple[Param, Any]] = []
        _walk(self.model, (), set(), self.include_buffers, found)
        return found

    def notes(self, report: Report) -> tuple[str, ...]:
        return ()

    def check(self, targets: Sequence[Target[Any]], dry_run: bool) -> None:
        for target in targets:
            try:
                _float_dtype(target.handle.dtype)
            except TypeError as err:
                raise TypeError(f"Variable {target.name!r}: {err}") from err

    def _draw(self, target: Target[Any], generator: Any) -> Any:
        decision, dims, dtype = target.decision, target.decision.param.shape, _float_dtype(target.handle.dtype)
        assert decision.dist is not None
        if self.stream_seed is None:
            return _sample(decision.dist, decision.layout, dims, dtype, generator)
        name, names = decision.param.name, self.stream_names
        if names is not None:
            name = names(name) if callable(names) else names.get(name, name)
        return _stream_tensor(Stream(self.stream_seed, name), decision.dist, dims, decision.param.layout, dtype)

    def writes(self, targets: Sequence[Target[Any]]) -> list[Write]:
        seed = self.seed
        generator = (
            seed
            if isinstance(seed, keras.random.SeedGenerator) or self.stream_seed is not None
            else keras.random.SeedGenerator(_check_seed(seed))
        )
        return [Write((t.name,), functools.partial(self._draw, t, generator), t.handle.assign) for t in targets]

    def writing(self) -> Any:
        return contextlib.nullcontext()

    def finish(self, targets: Sequence[Target[Any]]) -> None:
        pass


from ._keras_check import check  # noqa: E402  (the model check: initscale.check, walked here)
from ._keras_lsuv import lsuv  # noqa: E402  (LSUV: reinit, then each layer to unit output variance)
