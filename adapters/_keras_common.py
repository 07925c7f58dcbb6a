"""One Keras implementation for the Keras 3 adapter (:mod:`initscale.adapters.keras`, every
backend) and the legacy Keras 2 one (:mod:`initscale.adapters.tf_keras`).

What both share, written once and parametrized by a :class:`Framework` (the few things that
differ: the random and tensor ops, dtype names, seed handling, how a layer lists its variables
and names them): the draws of every distribution (:func:`sample`: truncated normals by inverse
CDF, orthogonal blocks, constants, normals, uniforms), how an initializer reads a shape
(:func:`fan_layout`, Keras 3.15's axes as :class:`CountedAxes`), the initializer classes' logic
(:class:`SpecInitializer`, :class:`Named` and the drop-in mixins, bound to a framework's base
class by :func:`bind`), the model walk with its layer roles and norm detection (:func:`walk`),
and ``reinit``'s backend for :func:`initscale.reinit.run` (:class:`Backend`). The two public
modules bind these to their framework and keep their own public names and signatures.

A variable of a layer initscale does not recognise gets no layout in either walk (never a
guessed one), so a fan-based rule that reaches it raises before anything is written, and the
one spec for all weights warns naming it (:func:`initscale.reinit.plan`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from initscale import _shared, from_dict, presets
from initscale._registry import deprecated_positional, layout_like
from initscale._shared import lower_tail
from initscale.distributions import ConstantDist, NormalDist, OrthogonalDist, TruncatedNormalDist, UniformDist
from initscale.fans import Fans, Layout, LayoutLike, layout_from_config, layout_to_config
from initscale.normal_math import far_tail_offset, normal_cdf, truncated_plan
from initscale.plan import plans
from initscale.reinit import (
    ADDED_TENSOR,
    ADDED_TENSOR_NOTE,
    Param,
    Report,
    Role,
    Target,
    Write,
)
from initscale.rounding import representable_bounds
from initscale.specs import Constant as ConstantSpec
from initscale.specs import Normal, Spec, Uniform
from initscale.specs import Ones as OnesSpec
from initscale.specs import Orthogonal as OrthogonalSpec
from initscale.specs import Zeros as ZerosSpec
from initscale.streams import Stream, portable

from ._keras_layers import (
    NORM_CLASSES,
    NORM_NAME,
    NORM_OFFSET_LEAVES,
    NORM_SCALE_LEAVES,
    UNIT_OFFSET,
    expert_role,
    keras_role,
    stacked_dense,
    stacked_einsum,
)

if TYPE_CHECKING:  # annotations only
    from initscale.distributions import Distribution

DEFAULT_LAYOUT = "keras:native=true"
FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")
PACKAGE = "initscale"


@dataclass(frozen=True)
class Framework:
    """What differs between Keras 3 and tf_keras, for the shared code.

    Sampling: ``ops`` is a ``keras.ops``-like namespace (``add``, ``cast``, ``clip``,
    ``diagonal``, ``erfinv``, ``full``, ``log1p``, ``multiply``, ``negative``,
    ``qr``, ``reshape``, ``sign``, ``subtract``, ``swapaxes``, ``transpose``); ``xp`` has the
    ``log``/``log1p``/``sqrt`` of :func:`initscale.normal_math.far_tail_offset`; ``uniform`` and
    ``normal`` draw ``(shape, low_or_mean, high_or_std, dtype, seed)``; ``ndtri`` is Φ⁻¹ on a
    tensor; ``work_dtype()`` the float stage's dtype ("float64", or "float32" where the backend
    lacks it); ``dtype_name`` a dtype's standard name, ``floatx()`` the default one.

    Initializers: ``check_seed`` validates a seed argument, ``serialize_seed`` writes it into a
    config, ``draw_seed`` turns the checked seed into what ``uniform``/``normal`` take; ``sample``
    and ``stream_tensor`` are called through these fields at call time (so the adapter's own
    module-level functions can be patched in tests); ``stream_tensor`` is None where the
    framework has no portable stream.

    Walk: ``trainable``/``non_trainable`` list a layer's own variables, ``names`` gives a
    variable's (path, leaf), ``frozen(variable, layer_frozen)`` whether a variable is frozen
    (``layer_frozen``: the layer or one above it has ``trainable=False``), ``skip_classes`` the
    framework's base classes a class rule never names, ``builtin`` the module prefix of the
    framework's own layers (whose norms use their scale as is).
    """

    ops: Any
    xp: Any
    uniform: Callable[[tuple[int, ...], float, float, str, Any], Any]
    normal: Callable[[tuple[int, ...], float, float, str, Any], Any]
    ndtri: Callable[[Any], Any]
    work_dtype: Callable[[], str]
    dtype_name: Callable[[Any], str]
    floatx: Callable[[], str]
    check_seed: Callable[[Any], Any]
    serialize_seed: Callable[[Any], Any]
    draw_seed: Callable[[Any], Any]
    sample: Callable[[Distribution, Layout | None, tuple[int, ...], str, Any], Any]
    stream_tensor: Callable[[Stream, Distribution, tuple[int, ...], LayoutLike | None, str], Any] | None
    trainable: Callable[[Any], Sequence[Any]]
    non_trainable: Callable[[Any], Sequence[Any]]
    names: Callable[[Any], tuple[str, str]]
    frozen: Callable[[Any, bool], bool]
    skip_classes: frozenset[str]
    builtin: str


def float_dtype(fw: Framework, dtype: Any) -> str:
    """The standard name of ``dtype`` (None: the framework's floatx), which must be a float."""
    name = fw.dtype_name(dtype if dtype is not None else fw.floatx())
    if name not in FLOAT_DTYPES:
        raise TypeError(
            f"initscale initializers make floating-point values only. Received: dtype={name!r}; valid: "
            f"{', '.join(repr(d) for d in FLOAT_DTYPES)}."
        )
    return name


# --- sampling ------------------------------------------------------------------------------------


def truncated(fw: Framework, dist: TruncatedNormalDist, shape: tuple[int, ...], dtype: str, seed: Any) -> Any:
    """Inverse CDF in the working precision (float64, or float32 on JAX without x64), from the side
    where the interval is representable (:func:`initscale.normal_math.truncated_plan`): ordinary
    intervals by erfinv, one-sided, far-tail and narrow ones by the framework's Φ⁻¹ of
    u ∈ (Φ(lo), Φ(hi)] (never 0), and beyond Φ's range by the exact offset from the bound."""
    ops = fw.ops
    a, b = dist.standard_bounds
    work = fw.work_dtype()
    low, high = representable_bounds(dist.low, dist.high, dtype)  # bounds that hold in dtype
    plan = truncated_plan(a, b, work)
    if plan.method != "erf":
        # Native operators with Python floats keep the tensor's dtype on every backend.
        unit = fw.uniform(shape, 0.0, 1.0, work, seed)
        if plan.method == "ndtri":
            z = fw.ndtri(plan.p_hi - plan.p_width * unit)
        else:
            e = -ops.log1p(-plan.kept * unit)
            z = -(plan.a + far_tail_offset(e, plan.a, plan.log_s_a, fw.xp))
        z = ops.clip(z, plan.z_low, plan.z_high)
        return ops.cast(ops.clip(z * (plan.sign * dist.sigma) + dist.loc, low, high), dtype)
    a, b, flip = lower_tail(a, b)  # an upper-tail interval is drawn as the mirror of the lower one
    u = fw.uniform(shape, normal_cdf(a), normal_cdf(b), work, seed)
    z = ops.clip(ops.multiply(ops.erfinv(ops.subtract(ops.multiply(u, 2.0), 1.0)), math.sqrt(2.0)), a, b)
    if flip:
        z = ops.negative(z)
    return ops.cast(ops.clip(ops.add(ops.multiply(z, dist.sigma), dist.loc), low, high), dtype)


class _Haar:
    """A tensor of the orthogonal draw with the ``*`` and ``.reshape`` that
    :func:`initscale._shared.orthogonal` uses, as ``fw.ops`` calls (a TensorFlow tensor has no
    ``.reshape``): ``q * d`` and ``gain * q`` are ``ops.multiply(q, ...)``, as Keras drew before."""

    __slots__ = ("ops", "x")

    def __init__(self, ops: Any, x: Any) -> None:
        self.ops, self.x = ops, x

    def __mul__(self, other: Any) -> _Haar:
        return _Haar(self.ops, self.ops.multiply(self.x, other))

    __rmul__ = __mul__  # gain * q: ops.multiply(q, gain)

    def reshape(self, *shape: Any) -> _Haar:
        dims = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        return _Haar(self.ops, self.ops.reshape(self.x, dims))


def haar_ops(fw: Framework, work: str, seed: Any) -> SimpleNamespace:
    """``fw``'s ops for :func:`initscale._shared.orthogonal` (its ``HaarOps``): normals in ``work``
    drawn with ``seed``, Q wrapped as a :class:`_Haar` up to the last permutation."""
    ops = fw.ops

    def qr(g: Any) -> tuple[_Haar, Any]:
        q, r = ops.qr(g)
        return _Haar(ops, q), r

    return SimpleNamespace(
        normal=lambda size: fw.normal(size, 0.0, 1.0, work, seed),
        qr=qr,
        diagonal=lambda r: ops.diagonal(r, axis1=-2, axis2=-1),
        phase=ops.sign,  # real weights only: the signs
        swap=lambda q: _Haar(ops, ops.swapaxes(q.x, -1, -2)),
        permute=lambda q, axes: _Haar(ops, ops.transpose(q.x, axes)),
    )


def orthogonal(
    fw: Framework, dist: OrthogonalDist, layout: Layout, shape: tuple[int, ...], dtype: str, seed: Any
) -> Any:
    """``gain`` × a Haar-random orthogonal matrix per block of ``layout``
    (:func:`initscale._shared.orthogonal` with ``fw``'s ops), in float64 for a float64 weight,
    else float32."""
    work = "float64" if dtype == "float64" else "float32"
    q: _Haar = _shared.orthogonal(dist.gain, layout.blocks(shape), shape, haar_ops(fw, work, seed))
    return fw.ops.cast(q.x, dtype)


@functools.cache
def tf_odd_ops() -> SimpleNamespace:
    """TensorFlow's ops for :func:`initscale._shared.round_to_odd` (its float64 → float16/bfloat16
    cast rounds twice, through float32), for Keras 3's TensorFlow backend; TensorFlow is imported
    when they are first asked for."""
    import tensorflow as tf

    def set_low_bit(t: Any, mask: Any) -> Any:
        bits = tf.bitcast(t, tf.int32)
        return tf.bitcast(tf.where(mask, tf.bitwise.bitwise_or(bits, 1), bits), tf.float32)

    return SimpleNamespace(
        narrow=lambda x: tf.cast(x, tf.float32),
        widen=lambda x: tf.cast(x, tf.float64),
        where=tf.where,
        toward_zero=lambda t: tf.math.nextafter(t, tf.zeros_like(t)),
        set_low_bit=set_low_bit,
    )


def sample(
    fw: Framework, dist: Distribution, layout: Layout | None, shape: tuple[int, ...], dtype: str, seed: Any
) -> Any:
    """Values of ``dist`` in ``shape`` and ``dtype`` (a standard name), drawn with ``seed``."""
    if isinstance(dist, ConstantDist):
        return fw.ops.full(shape, dist.value, dtype)
    if isinstance(dist, TruncatedNormalDist):
        return truncated(fw, dist, shape, dtype, seed)
    if isinstance(dist, OrthogonalDist):
        if layout is None:  # pragma: no cover - the planner always gives one
            raise ValueError("An orthogonal init needs the weight's layout.")
        return orthogonal(fw, dist, layout, shape, dtype, seed)
    work = "float32" if dtype in ("float16", "bfloat16") else dtype
    if isinstance(dist, NormalDist):
        out = fw.normal(shape, dist.mean, dist.std, work, seed)
    elif isinstance(dist, UniformDist):
        out = fw.uniform(shape, dist.low, dist.high, work, seed)
        out = fw.ops.clip(out, *representable_bounds(dist.low, dist.high, dtype))  # bounds that hold in dtype
    else:  # pragma: no cover - every Distribution is handled above
        raise TypeError(f"Unknown distribution {dist!r}.")
    return fw.ops.cast(out, dtype)


# --- how an initializer reads a shape ------------------------------------------------------------


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


class CountedAxes(Layout):
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


def uses_fans(spec: Spec) -> bool:
    """Specs whose numbers come from the fans (VarianceScaling); fixed-scale and orthogonal
    specs use none, so Keras's axes do not concern them (Keras's own RandomNormal and
    Orthogonal never receive any)."""
    return not spec.fixed_scale and not isinstance(spec, OrthogonalSpec)


def fan_layout(spec: Spec, layout: LayoutLike | None, input_axes: Any, output_axes: Any) -> LayoutLike:
    """How an initializer reads a shape: ``layout`` when given, else Keras's axes (for specs that
    use fans), else Keras's own fan rule."""
    if (input_axes is None) != (output_axes is None):
        raise ValueError(
            "Arguments `input_axes` and `output_axes` go together: give both or neither. Received: "
            f"input_axes={input_axes!r}, output_axes={output_axes!r}."
        )
    if input_axes is None:
        return DEFAULT_LAYOUT if layout is None else layout
    if layout is not None:
        raise ValueError(
            "Give either `layout` or `input_axes`/`output_axes`, not both. Received: "
            f"layout={layout!r}, input_axes={input_axes!r}, output_axes={output_axes!r}."
        )
    counted = CountedAxes(input_axes, output_axes)  # checked whatever the spec
    return counted if uses_fans(spec) else DEFAULT_LAYOUT


deprecated_seed_layout = deprecated_positional(
    ("spec", "seed", "layout"),
    new=2,
    is_old=lambda args: len(args) >= 2 and not layout_like(args[1]),
    since="0.2",
    removed_in="0.3",
)
"""Both adapters' ``initializer``: the old positional ``initializer(spec, seed, layout)`` keeps
working until initscale 0.3 with a DeprecationWarning naming the adapter's own function (a second
positional that cannot be a layout is the old ``seed``)."""


# --- the initializers' logic (mixins: each adapter adds its framework's Initializer base) ---------


class SpecInitializer:
    """What every initscale Keras initializer shares: a spec, a seed, how to read the shape
    (``layout``, or Keras's ``input_axes``/``output_axes``) and an optional stream. A mixin: an
    adapter's base class adds its framework's ``Initializer`` and sets ``_fw``; its public
    classes' ``__init__`` (their signatures are the adapter's) call :meth:`_setup`."""

    _fw: ClassVar[Framework]

    def _setup(
        self, spec: Any, seed: Any, layout: Any, stream: Any = None, axes: tuple[Any, Any] = (None, None)
    ) -> None:
        """What each public ``__init__`` runs: check and hold the arguments, plan the draws.
        ``axes``: Keras 3.15's ``(input_axes, output_axes)``."""
        input_axes, output_axes = axes
        if isinstance(spec, Mapping):
            spec = from_dict(spec)
        if not isinstance(spec, Spec):
            raise TypeError(f"Argument `spec` must be an initscale spec. Received: spec={spec!r}.")
        self.spec = spec
        self._init_seed = seed
        self.seed = self._fw.check_seed(seed)
        self.layout = layout_from_config(layout)
        self.input_axes, self.output_axes = input_axes, output_axes
        self._planner, self._fan_layout = plans(spec, fan_layout(spec, self.layout, input_axes, output_axes))
        if isinstance(stream, Mapping):
            stream = Stream(**stream)
        if stream is not None and not isinstance(stream, Stream):
            raise TypeError(f"Argument `stream` must be an initscale.Stream. Received: stream={stream!r}.")
        self.stream = stream

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        plan = self._planner(tuple(int(d) for d in shape))  # the weight's cached plan (initscale.plan)
        if self.stream is not None and self._fw.stream_tensor is not None:
            dist = portable(plan).dist  # an orthogonal spec raises the explanation
            return self._fw.stream_tensor(self.stream, dist, plan.shape, self._fan_layout, float_dtype(self._fw, dtype))
        draw_seed = self._fw.draw_seed(self.seed)
        return self._fw.sample(plan.dist, plan.layout, plan.shape, float_dtype(self._fw, dtype), draw_seed)

    def spec_config(self) -> dict[str, Any]:
        """The config of an initializer made from a spec: the spec as its versioned dict, so
        ``from_config`` rebuilds it exactly."""
        config = {
            "spec": self.spec.to_dict(),
            "seed": self._fw.serialize_seed(self._init_seed),
            "layout": layout_to_config(self.layout),
        }
        if self.stream is not None:
            config["stream"] = {"seed": self.stream.seed, "name": self.stream.name}
        if self.input_axes is not None:
            config.update(input_axes=self.input_axes, output_axes=self.output_axes)
        return config

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
        return f"{type(self).__name__}({self.spec!r}, seed={self._init_seed!r}, layout={self._fan_layout})"


class Named(SpecInitializer):
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
        self._setup(spec, seed, layout, axes=(input_axes, output_axes))

    def get_config(self) -> dict[str, Any]:
        config = dict(self._keras_args)
        config["seed"] = self._fw.serialize_seed(self._init_seed)
        if self.input_axes is not None:
            config.update(input_axes=self.input_axes, output_axes=self.output_axes)
        if self.layout is not None:
            config["layout"] = layout_to_config(self.layout)
        return config

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# The fixed VarianceScaling drop-ins: (name, preset, Keras's (scale, mode, distribution), what it draws).
FIXED = (
    ("GlorotUniform", "glorot_uniform", (1.0, "fan_avg", "uniform"), "U(±√(6/(fan_in+fan_out)))."),
    (
        "GlorotNormal",
        "glorot_normal",
        (1.0, "fan_avg", "truncated_normal"),
        "truncated (±2σ), variance 2/(fan_in+fan_out).",
    ),
    ("HeUniform", "he_uniform", (2.0, "fan_in", "uniform"), "U(±√(6/fan_in))."),
    ("HeNormal", "he_normal", (2.0, "fan_in", "truncated_normal"), "truncated (±2σ), variance 2/fan_in."),
    ("LecunUniform", "lecun_uniform", (1.0, "fan_in", "uniform"), "U(±√(3/fan_in))."),
    ("LecunNormal", "lecun_normal", (1.0, "fan_in", "truncated_normal"), "truncated (±2σ), variance 1/fan_in."),
)


class RandomNormal(Named):
    """N(mean, stddev²)."""

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: Any = None, layout: LayoutLike | None = None
    ) -> None:
        super().__init__(Normal(stddev, mean), seed, layout, mean=mean, stddev=stddev)


class TruncatedNormal(Named):
    """N(mean, stddev²) cut at ±2·stddev, uncorrected (``stddev`` is the σ before truncation, as
    in Keras; the std after it is 0.8796·stddev)."""

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: Any = None, layout: LayoutLike | None = None
    ) -> None:
        spec = presets.get("keras.truncated_normal", mean=mean, stddev=stddev)
        super().__init__(spec, seed, layout, mean=mean, stddev=stddev)


class RandomUniform(Named):
    """U(minval, maxval)."""

    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: Any = None, layout: LayoutLike | None = None
    ) -> None:
        super().__init__(Uniform(minval, maxval), seed, layout, minval=minval, maxval=maxval)


class Orthogonal(Named):
    """``gain`` × a Haar-random orthogonal matrix (per block with a layer kind such as
    ``"keras.lstm"``: one per gate)."""

    def __init__(self, gain: float = 1.0, seed: Any = None, layout: LayoutLike | None = None) -> None:
        super().__init__(OrthogonalSpec(gain), seed, layout, gain=gain)


class Zeros(Named):
    """All zeros."""

    def __init__(self) -> None:
        super().__init__(ZerosSpec())

    def get_config(self) -> dict[str, Any]:
        return {}


class Ones(Named):
    """All ones."""

    def __init__(self) -> None:
        super().__init__(OnesSpec())

    def get_config(self) -> dict[str, Any]:
        return {}


class Constant(Named):
    """A scalar ``value`` everywhere."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__(ConstantSpec(value), value=value)

    def get_config(self) -> dict[str, Any]:
        return {"value": self._keras_args["value"]}


DROP_INS = (RandomNormal, TruncatedNormal, RandomUniform, Orthogonal, Zeros, Ones, Constant)
# Every class both adapters export under Keras's names (with Initializer, initscale's own).
CLASS_NAMES = ("Initializer", "VarianceScaling", *(row[0] for row in FIXED), *(c.__name__ for c in DROP_INS))


def make_class(
    name: str, bases: tuple[type, ...], namespace: dict[str, Any], register: Any, module: str, doc: str
) -> Any:
    """The class ``name`` on ``bases`` (with ``namespace``), documented as ``doc``, placed in the
    adapter's ``module`` and registered with ``register`` (Keras's ``register_keras_serializable``,
    so a saved ``"initscale>Name"`` loads back)."""
    return register(type(name, bases, {**namespace, "__doc__": doc, "__module__": module, "__qualname__": name}))


def bind(mixins: Sequence[type], base: type, register: Any, module: str, prefix: str) -> tuple[Any, ...]:
    """The framework's classes of the drop-in ``mixins``: each on ``base`` (the adapter's own
    drop-in base), named as the mixin and documented as a drop-in for ``prefix + name``."""
    return tuple(
        make_class(m.__name__, (m, base), {}, register, module, f"Drop-in for ``{prefix}{m.__name__}``: {m.__doc__}")
        for m in mixins
    )


# --- the model walk ------------------------------------------------------------------------------

_NORMS: dict[type, bool] = {}  # a layer class -> whether its scale is used as 1 + scale


def _spans(shape: tuple[int, ...]) -> bool:
    """One axis of size > 1 at most: a norm's scale or offset over its normalized features."""
    return sum(d > 1 for d in shape) <= 1


def norm_flags(fw: Framework, layer: Any) -> tuple[bool, bool]:
    """Whether ``layer`` is a normalization layer (by class, :data:`NORM_CLASSES`; by a class
    name ending in Norm or Normalization; or by duck typing: an ``epsilon`` attribute and
    variables of one non-singleton axis at most), and whether its scale is used as 1 + scale."""
    cls = type(layer)
    names = [c.__name__ for c in cls.__mro__]
    named = bool(NORM_CLASSES.intersection(names)) or any(NORM_NAME.search(n) for n in names)
    if not named:
        own = list(fw.trainable(layer)) + list(fw.non_trainable(layer))
        named = hasattr(layer, "epsilon") and bool(own) and all(_spans(tuple(int(d) for d in v.shape)) for v in own)
    if not named:
        return False, False
    if cls not in _NORMS:
        unit = False
        if not cls.__module__.startswith(fw.builtin):  # the framework's own norms use their scale as is
            try:
                unit = bool(UNIT_OFFSET.search(inspect.getsource(cls.call)))
            except (OSError, TypeError):  # no source (compiled, interactive): a plain scale
                unit = False
        _NORMS[cls] = unit
    return True, _NORMS[cls]


def role_and_layout(
    fw: Framework, layer: Any, leaf: str, shape: tuple[int, ...]
) -> tuple[Role, LayoutLike | None, str]:
    """What a variable is to the layer that owns it, its forward-fan layout, and a note.

    A variable of a layer initscale does not recognise gets no layout (never a guessed one), so
    a fan-based rule that reaches it raises naming it (:func:`initscale.reinit.plan`)."""
    if norm_flags(fw, layer)[0]:
        if leaf in NORM_OFFSET_LEAVES and _spans(shape):
            return "norm_offset", None, ""
        if leaf in NORM_SCALE_LEAVES and _spans(shape):
            return "norm_scale", None, ""
        return "other", None, ""  # moving statistics, or a variable of more axes
    class_names = {c.__name__ for c in type(layer).__mro__}
    experts = expert_role(class_names, leaf, shape, getattr(layer, "num_experts", None))
    if experts is not None:
        return experts
    role, layout, note = keras_role(
        class_names,
        leaf,
        len(shape),
        groups=getattr(layer, "groups", 1),
        unit_forget_bias=bool(getattr(layer, "unit_forget_bias", False)),
        equation=getattr(layer, "equation", None),
        strides=getattr(layer, "strides", None),
    )
    if (
        role == "other"
        and len(shape) >= 2
        and (ADDED_TENSOR.search(leaf) or any(ADDED_TENSOR.search(k) for k in class_names))
    ):
        return "other", None, ADDED_TENSOR_NOTE  # kept with this note; a one spec's warning lists it
    return role, layout, note


def classes(fw: Framework, layer: Any) -> tuple[str, ...]:
    """``layer``'s class names, most derived first, without the framework's base classes."""
    return tuple(c.__name__ for c in type(layer).__mro__ if c.__name__ not in fw.skip_classes)


def walk(
    fw: Framework,
    layer: Any,
    ancestors: tuple[str, ...],
    seen: set[int],
    include_buffers: bool,
    found: list[tuple[Param, Any]],
    frozen_above: bool = False,
    scopes: list[tuple[str, ...]] | None = None,
    scope: tuple[str, ...] = (),
    parent: Any = None,
) -> None:
    """Every variable once, in Keras's order, with its owner. ``owner_classes`` are the owning
    layer's class names, then (for every role but a norm's scale and offset) those of each
    enclosing layer, innermost first: a class rule on ``"MultiHeadAttention"`` reaches its
    EinsumDense kernels, ``"LSTM"`` its cell's kernels, a keras-hub ``"TransformerEncoder"`` its
    dense and attention kernels, while the norms inside keep their own defaults (a fan-based spec
    on a norm scale has no fans). ``ancestors``: the enclosing layers' class names;
    ``frozen_above``: whether an enclosing layer has ``trainable=False``; ``scopes``, if given,
    gets each found variable's ``scope``: the names of the layers from below the walk's root
    down to its owner (:func:`walk_model` names variables whose paths collide by it); ``parent``:
    the layer that holds ``layer`` (a Dense whose output it splits: :func:`stacked_dense`)."""
    layer_frozen = frozen_above or not layer.trainable
    own = [(v, False) for v in fw.trainable(layer)]
    if include_buffers:
        own += [(v, True) for v in fw.non_trainable(layer)]
    mine = classes(fw, layer)
    nested = tuple(dict.fromkeys(mine + ancestors))
    for variable, is_buffer in own:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        shape = tuple(int(d) for d in variable.shape)
        path, leaf = fw.names(variable)
        role, layout, note = role_and_layout(fw, layer, leaf, shape)
        if isinstance(layout, Layout) and ancestors:
            layout = stacked_einsum(layout, ancestors, str(layer.name))
        elif layout == "keras.dense" and role == "weight":
            layout = stacked_dense(parent, layer) or layout
        param = Param(
            path,
            shape,
            mine if role in ("norm_scale", "norm_offset") else nested,
            role,
            layout,
            frozen=not is_buffer and fw.frozen(variable, layer_frozen),
            buffer=is_buffer,
            note=note,
            unit_offset=role == "norm_scale" and norm_flags(fw, layer)[1],
        )
        found.append((param, variable))
        if scopes is not None:
            scopes.append(scope)
    for child in layer._flatten_layers(include_self=False, recursive=False):
        walk(fw, child, nested, seen, include_buffers, found, layer_frozen, scopes, (*scope, str(child.name)), layer)


def walk_model(fw: Framework, model: Any, include_buffers: bool) -> list[tuple[Param, Any]]:
    """Every variable of ``model`` once (:func:`walk`), each under a name no other has.

    A variable is named by its path, unless another variable has the same path: a sub-model
    built on its own names its variables from its own scope, so keras-hub's CLIP and SigLIP
    text and vision encoders both hold ``embedding/position_embedding/embeddings``, and T5's
    encoder and decoder both a ``self_attention/embeddings``. Those are named by their path
    after the fewest enclosing layer names, from the outermost, that tell them apart
    (``"clip_text_encoder/embedding/position_embedding/embeddings"``), with ``#k`` (k = 1, 2,
    ...) after any that the layer names cannot tell apart. ``report[name]``, name rules and
    portable streams (one stream per name) then reach each variable on its own."""
    found: list[tuple[Param, Any]] = []
    scopes: list[tuple[str, ...]] = []
    walk(fw, model, (), set(), include_buffers, found, scopes=scopes)
    members: dict[str, list[int]] = {}
    for index, (param, _) in enumerate(found):
        members.setdefault(param.name, []).append(index)
    taken = set(members)
    for name, indices in members.items():
        if len(indices) < 2:
            continue
        depth = max(len(scopes[i]) for i in indices)
        for k in range(1, depth + 1):
            names = ["/".join((*scopes[i][:k], name)) for i in indices]
            if len(set(names)) == len(names) and not taken & set(names):
                break
        else:
            names = [f"{name}#{j}" for j in range(1, len(indices) + 1)]
        taken.update(names)
        for i, new in zip(indices, names, strict=True):
            param, variable = found[i]
            found[i] = (dataclasses.replace(param, name=new), variable)
    return found


def unbuilt_layers(model: Any) -> list[tuple[str, str]]:
    """(path, class) of each layer inside ``model`` that is not built, outermost only (keras-hub
    0.32's SAMBackbone is built while its ``sam_mask_decoder`` is not: it holds no variables yet)."""
    found: list[tuple[str, str]] = []

    def visit(layer: Any, path: tuple[str, ...]) -> None:
        for child in layer._flatten_layers(include_self=False, recursive=False):
            where = (*path, str(child.name))
            if not getattr(child, "built", True):
                found.append(("/".join(where), type(child).__name__))
            else:
                visit(child, where)

    visit(model, ())
    return found


def variable_names(fw: Framework, model: Any) -> dict[int, str]:
    """``id(variable)`` -> its name in ``reinit``'s report (:func:`walk_model`), buffers included."""
    return {id(variable): param.name for param, variable in walk_model(fw, model, True)}


# --- reinit's backend ----------------------------------------------------------------------------


class Backend:
    """``reinit``'s walk and write for :func:`initscale.reinit.run`: the model's variables, every
    value drawn (:meth:`_draw`, the adapter's) before the first ``assign``. An adapter subclasses
    it, sets ``_fw`` and gives :meth:`_draw` (and :meth:`_source`, what every draw shares)."""

    entry = "reinit"
    _fw: ClassVar[Framework]

    def __init__(self, model: Any, include_buffers: bool, seed: Any) -> None:
        self.model, self.include_buffers, self.seed = model, include_buffers, seed

    def walk(self) -> list[tuple[Param, Any]]:
        return walk_model(self._fw, self.model, self.include_buffers)

    def notes(self, report: Report) -> tuple[str, ...]:
        unbuilt = unbuilt_layers(self.model)
        if not unbuilt:
            return ()
        shown = ", ".join(f"{path!r} ({cls})" for path, cls in unbuilt[:8]) + (" ..." if len(unbuilt) > 8 else "")
        return (
            f"reinit: {len(unbuilt)} layer(s) inside the built model are not built, so their variables do not "
            f"exist yet and were not re-initialized: {shown}. Build them (call the model on inputs that reach "
            "them, or call each layer's build()) and run reinit again.",
        )

    def constant_value(self, handle: Any) -> float | None:
        to_numpy = getattr(self._fw.ops, "convert_to_numpy", None)  # Keras 3; a tf.Variable (tf_keras) has .numpy()
        with warnings.catch_warnings():  # NumPy 2's note on the backends' __array__ (no copy=): not the user's
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.asarray(to_numpy(handle.value) if to_numpy is not None else handle.numpy()).reshape(-1)
        if values.size < 2 or not np.issubdtype(values.dtype, np.floating):
            return None
        return float(values[0]) if bool((values == values[0]).all()) else None

    def check(self, targets: Sequence[Target[Any]], dry_run: bool) -> None:
        for target in targets:
            try:
                float_dtype(self._fw, target.handle.dtype)
            except TypeError as err:
                raise TypeError(f"Variable {target.name!r}: {err}") from err

    def _source(self) -> Any:
        """What every draw of one ``reinit`` shares (a seed generator, say); None by default."""
        return None

    def _draw(self, target: Target[Any], source: Any) -> Any:  # pragma: no cover - every adapter gives one
        raise NotImplementedError

    def writes(self, targets: Sequence[Target[Any]]) -> list[Write]:
        source = self._source()
        return [Write((t.name,), functools.partial(self._draw, t, source), t.handle.assign) for t in targets]

    def writing(self) -> Any:
        return contextlib.nullcontext()

    def finish(self, targets: Sequence[Target[Any]]) -> None:
        pass
