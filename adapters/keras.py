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

The draws, the initializer classes' logic, the walk and ``reinit``'s backend are shared with the
legacy tf_keras adapter (``adapters/_keras_common.py``); this module binds them to Keras 3.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import keras

from initscale import presets
from initscale.distributions import Distribution, OrthogonalDist
from initscale.fans import Layout, LayoutLike
from initscale.reinit import Report, Target
from initscale.reinit import run as reinit_run
from initscale.specs import Spec
from initscale.streams import (
    Stream,
    backend_draw,
    canonical_strides,
    finish,
    gate_index,
    layout_uniforms,
    transform,
)

from . import _keras_common as _common

__all__ = [*_common.CLASS_NAMES, "check", "initializer", "lsuv", "reinit"]

_PACKAGE = _common.PACKAGE
_register = keras.saving.register_keras_serializable(package=_PACKAGE)


# --- sampling with keras.random / keras.ops (the draws themselves: _keras_common.sample) -------------


def _uniform_dtype() -> str:
    """float64 where the backend has it without extra configuration; JAX needs jax_enable_x64."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if getattr(jax.config, "jax_enable_x64", False) else "float32"
    return "float64"


def _sample(dist: Distribution, layout: Layout | None, shape: tuple[int, ...], dtype: str, seed: Any) -> Any:
    """``dist``'s values with ``keras.random`` and ``keras.ops`` (:func:`._keras_common.sample`)."""
    return _common.sample(_FW, dist, layout, shape, dtype, seed)


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
    if backend == "tensorflow":  # the integer stage compiled from a shape's second draw (XLA: ~0.3 s)
        from . import _keras_tf_stream

        u = _keras_tf_stream.stream_uniforms(stream.key, shape, strides, gates, _TF_SEEN, _tf_uniform_program)
    else:
        u = layout_uniforms(stream.key, shape, strides, _KERAS_OPS, gates=gates).x
    return _ops_values(dist, u, dtype)


_TF_SEEN: set[tuple[Any, ...]] = set()  # the (shape, canonical strides, gate order) drawn eagerly once


@functools.lru_cache(maxsize=256)
def _tf_uniform_program(
    shape: tuple[int, ...], strides: tuple[int, ...], gates: tuple[int, tuple[int, ...]] | None
) -> Callable[[Any], Any]:
    """The compiled integer stage on TensorFlow (:func:`._keras_tf_stream.uniform_program`)."""
    from . import _keras_tf_stream

    return _keras_tf_stream.uniform_program(shape, strides, gates)


def _ops_values(dist: Distribution, u: Any, dtype: str) -> Any:
    """The float stage (:func:`initscale.streams.finish`) on uniforms ``u``, with the backend's
    ndtri, clipped to the bounds that hold in ``dtype`` and rounded once to it (TensorFlow's
    float64 → float16 cast rounds twice: :mod:`._keras_tf_stream` goes through float32 rounded to odd)."""
    if keras.backend.backend() == "tensorflow":
        from . import _keras_tf_stream

        return _keras_tf_stream.values(dist, u, dtype)
    return finish(dist, _Ops(u), dtype, _KERAS_OPS).x


_KERAS_OPS = SimpleNamespace(
    wide=True,
    const=None,
    arange=lambda n: _Ops(keras.ops.arange(n, dtype="int64")),
    stack=lambda arrays: _Ops(keras.ops.stack([a.x for a in arrays], axis=-1)),
    take=lambda array, index: _Ops(keras.ops.take_along_axis(array.x, index.x, axis=-1)),
    to_float=lambda odd: _Ops(keras.ops.cast(odd.x, _uniform_dtype())),
    ndtri=lambda u: _ndtri()(u),
    log=lambda t: _Ops(keras.ops.log(t.x)),
    sqrt=lambda t: _Ops(keras.ops.sqrt(t.x)),
    store=lambda values, dtype: _Ops(keras.ops.cast(values.x, dtype)),
    permute=lambda x, axes: _Ops(keras.ops.transpose(x.x, axes)),
    take_axis=lambda x, index, axis: _Ops(
        keras.ops.take(x.x, keras.ops.convert_to_tensor(list(index), "int32"), axis=axis)
    ),
)
""":class:`initscale.streams.StreamOps` with keras.ops on :class:`_Ops` (the backends without an
adapter of their own: NumPy, OpenVINO): int64 counters, the float stage in :func:`_uniform_dtype`."""


# --- seeds, and what Keras 3 gives the shared code ---------------------------------------------


# The int seeds each backend's keras.random.SeedGenerator can store (its state's dtype: uint32 on
# JAX, int32 on torch, int64 on TensorFlow; keras 3.15); outside them it fails deep inside Keras
# (an OverflowError or RuntimeError naming no argument). 0 <= seed < 2**31 works on all of them.
_SEED_RANGES = {"jax": (0, 2**32), "torch": (-(2**31), 2**31), "tensorflow": (-(2**63), 2**63)}


def _check_seed(seed: Any) -> Any:
    if isinstance(seed, dict):
        seed = keras.saving.deserialize_keras_object(seed)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, keras.random.SeedGenerator))):
        raise TypeError(
            f"Argument `seed` must be an int, a keras.random.SeedGenerator or None. Received: seed={seed!r}."
        )
    backend = keras.backend.backend()
    low, high = _SEED_RANGES.get(backend, (-(2**63), 2**63))
    if isinstance(seed, int) and not low <= seed < high:
        raise ValueError(
            f"Argument `seed` must satisfy {low} <= seed < {high} on Keras's {backend} backend (its "
            f"SeedGenerator stores it in that range; 0 <= seed < 2**31 works on every backend). "
            f"Received: seed={seed}."
        )
    return seed


_FW = _common.Framework(
    ops=keras.ops,
    xp=keras.ops,
    uniform=lambda shape, low, high, dtype, seed: keras.random.uniform(shape, low, high, dtype=dtype, seed=seed),
    normal=lambda shape, mean, std, dtype, seed: keras.random.normal(shape, mean, std, dtype=dtype, seed=seed),
    ndtri=lambda x: _ndtri()(_Ops(x)).x,
    work_dtype=_uniform_dtype,
    dtype_name=lambda dtype: str(keras.backend.standardize_dtype(dtype)),
    floatx=keras.backend.floatx,
    check_seed=_check_seed,
    serialize_seed=keras.saving.serialize_keras_object,
    draw_seed=lambda seed: seed,
    sample=lambda *args: _sample(*args),
    stream_tensor=lambda *args: _stream_tensor(*args),
    trainable=lambda layer: layer._trainable_variables,
    non_trainable=lambda layer: layer._non_trainable_variables,
    names=lambda variable: (variable.path, variable.name.split("/")[-1]),
    frozen=lambda variable, layer_frozen: not variable.trainable,
    skip_classes=frozenset(
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
    ),
    builtin="keras.",
)


# --- the initializers (their logic: _keras_common.SpecInitializer, Named and the drop-in mixins) ---


class _SpecInitializer(_common.SpecInitializer, keras.initializers.Initializer):  # type: ignore[misc]
    """The shared initializer logic on Keras 3's ``Initializer``."""

    _fw = _FW


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
        self._setup(spec, seed, layout, stream, (input_axes, output_axes))

    def get_config(self) -> dict[str, Any]:
        return self.spec_config()


@_common.deprecated_seed_layout
def initializer(
    spec: Spec, layout: LayoutLike | None = None, *, stream: Stream | None = None, seed: Any = None
) -> Initializer:
    """Compile ``spec`` into a Keras initializer (see :class:`Initializer`).

    The contract's ``initializer(spec, layout=None, *, stream=None)`` (:mod:`initscale.adapters`)
    with Keras's keyword-only ``seed``; ``initializer(spec, seed, layout)`` still works until
    initscale 0.3, with a DeprecationWarning."""
    return Initializer(spec, seed=seed, layout=layout, stream=stream)


class _KerasNamed(_common.Named, _SpecInitializer):
    """Base of the drop-in classes: Keras's constructor arguments in, Keras's config out."""


@_register
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

    doc = f"Drop-in for ``keras.initializers.{name}``: {doc}"
    return _common.make_class(name, (VarianceScaling,), {"__init__": __init__}, _register, __name__, doc)  # type: ignore[no-any-return]


GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal = (_fixed(*row) for row in _common.FIXED)
_DROP_INS = _common.bind(_common.DROP_INS, _KerasNamed, _register, __name__, "keras.initializers.")
RandomNormal, TruncatedNormal, RandomUniform, Orthogonal, Zeros, Ones, Constant = _DROP_INS


# --- whole-model re-initialization --------------------------------------------------------------


def _walk(model: Any, include_buffers: bool) -> list[tuple[Any, Any]]:
    """Every variable once, in Keras's order, with its owner, each under a name of its own
    (:func:`._keras_common.walk_model`)."""
    return _common.walk_model(_FW, model, include_buffers)


def reinit(
    model: Any,
    rules: Spec | Mapping[str, Spec | None],
    seed: Any = None,
    *,
    dry_run: bool = False,
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
            return reinit(model, rules.plan(model).rules(), seed, dry_run=True, **options)  # type: ignore[arg-type]
        init: Report | None = _auto_apply(model, rules, seed=seed, **options).init
        assert init is not None
        return init
    backend = _Backend(model, include_buffers, seed, stream_seed, stream_names)
    return reinit_run(
        backend, rules, include_frozen=include_frozen, defaults=defaults, dry_run=dry_run, fans=fans, stacklevel=2
    )


class _Backend(_common.Backend):
    """``reinit``'s walk and write for :func:`initscale.reinit.run`: the model's variables; every
    value drawn (in order, from one seed generator or each variable's stream) before the first
    ``assign``."""

    _fw = _FW

    def __init__(
        self,
        model: Any,
        include_buffers: bool,
        seed: Any,
        stream_seed: int | None,
        stream_names: Mapping[str, str] | Callable[[str], str] | None,
    ) -> None:
        super().__init__(model, include_buffers, seed)
        self.stream_seed, self.stream_names = stream_seed, stream_names

    def _source(self) -> Any:
        seed = self.seed
        if isinstance(seed, keras.random.SeedGenerator) or self.stream_seed is not None:
            return seed
        return keras.random.SeedGenerator(_check_seed(seed))

    def _draw(self, target: Target[Any], generator: Any) -> Any:
        decision, dims = target.decision, target.decision.param.shape
        dtype = _common.float_dtype(_FW, target.handle.dtype)
        assert decision.dist is not None
        if self.stream_seed is None:
            return _sample(decision.dist, decision.layout, dims, dtype, generator)
        name, names = decision.param.name, self.stream_names
        if names is not None:
            name = names(name) if callable(names) else names.get(name, name)
        return _stream_tensor(Stream(self.stream_seed, name), decision.dist, dims, decision.param.layout, dtype)


# --- check and LSUV: the shared Keras implementation (adapters/_keras_check.py, _keras_lsuv.py) --------

from . import _keras_check, _keras_lsuv  # noqa: E402

_FACE = _keras_check.Face(
    _FW, "Keras", "keras", keras.layers.Layer, keras.ops.convert_to_numpy, keras.activations.linear, reinit
)
check = _keras_check.bind(
    _FACE,
    __name__,
    """\
        >>> import keras, initscale
        >>> from initscale.adapters.keras import check
        >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64), keras.layers.LayerNormalization()])
        >>> bool(check(model))
        True
        >>> _ = model.layers[1].gamma.assign(keras.ops.zeros((64,)))
        >>> list(check(model).flags.values())
        [('norm_scale_not_one',)]
""",
)
lsuv = _keras_lsuv.bind(
    _FACE,
    __name__,
    """\
        >>> import keras, numpy as np
        >>> from initscale.adapters.keras import lsuv
        >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="tanh"),
        ...                           keras.layers.Dense(8)])
        >>> report = lsuv(model, np.random.default_rng(0).standard_normal((256, 32)).astype("float32"), seed=0)
        >>> [row.status for row in report.rows]
        ['converged', 'converged']
""",
)
