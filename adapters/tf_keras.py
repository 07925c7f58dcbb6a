"""Legacy Keras 2 (``tf_keras`` on TensorFlow) adapter: the same API as :mod:`initscale.adapters.keras`.

For users pinned to Keras 2: ``initializer(spec, seed=None, layout=None)``, drop-ins under Keras's
names (``VarianceScaling``, ``GlorotUniform``, ``HeNormal``, ...), registered as
``"initscale>Name"`` with ``tf_keras.utils.register_keras_serializable`` so ``.keras`` and H5
models load back, and :func:`reinit` for a built model. ``initscale.keras`` resolves to this
module when ``TF_USE_LEGACY_KERAS=1`` (TensorFlow's own switch to Keras 2); import it directly
as ``initscale.adapters.tf_keras`` otherwise.

Sampling with TensorFlow ops: an int seed draws with the stateless ops (the same values on every
call, as Keras 2's seeded initializers), None with the stateful ones (fresh values every call).
Truncated normals by inverse CDF in float64 (exact bounds, corrected variance).

Keras 2's ``EinsumDense`` (so ``MultiHeadAttention``) hands its initializer no axes (Keras 3.15's
passes ``input_axes``/``output_axes`` to a VarianceScaling): there Keras 2's own initializers
read an EinsumDense kernel with the conv rule, and so do these drop-ins.

Example:
    >>> import tf_keras, initscale
    >>> from initscale.adapters import tf_keras as istk
    >>> layer = tf_keras.layers.Dense(64, kernel_initializer=istk.HeNormal(seed=0))
    >>> layer.build((None, 128))
    >>> bound = initscale.presets.get("he_normal").bounds(initscale.Fans(128, 64))[1]
    >>> bool(abs(layer.kernel.numpy()).max() <= bound)
    True
"""

from __future__ import annotations

import contextlib
import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras

from initscale import from_dict, presets
from initscale.distributions import (
    ConstantDist,
    Distribution,
    NormalDist,
    OrthogonalDist,
    TruncatedNormalDist,
    UniformDist,
)
from initscale.fans import Layout, LayoutLike, layout_from_config, layout_to_config
from initscale.normal_math import far_tail_offset, normal_cdf, truncated_plan
from initscale.plan import planner
from initscale.reinit import Param, Report, Target, Write
from initscale.reinit import run as reinit_run
from initscale.rounding import representable_bounds
from initscale.specs import Constant as ConstantSpec
from initscale.specs import Normal, Spec, Uniform
from initscale.specs import Ones as OnesSpec
from initscale.specs import Orthogonal as OrthogonalSpec
from initscale.specs import Zeros as ZerosSpec

from ._keras_layers import keras_role

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
    "initializer",
    "reinit",
]

_PACKAGE = "initscale"
_DEFAULT_LAYOUT = "keras:native=true"
_FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")
_register = tf_keras.utils.register_keras_serializable


# --- sampling ------------------------------------------------------------------------------------


def _uniform(shape: tuple[int, ...], low: float, high: float, dtype: Any, seed: Any) -> tf.Tensor:
    if seed is None:
        return tf.random.uniform(shape, low, high, dtype)
    return tf.random.stateless_uniform(shape, seed, low, high, dtype)


def _normal(shape: tuple[int, ...], mean: float, std: float, dtype: Any, seed: Any) -> tf.Tensor:
    if seed is None:
        return tf.random.normal(shape, mean, std, dtype)
    return tf.random.stateless_normal(shape, seed, mean, std, dtype)


def _truncated(dist: TruncatedNormalDist, shape: tuple[int, ...], dtype: Any, seed: Any) -> tf.Tensor:
    """Inverse CDF in float64, from the side where the interval is representable
    (:func:`initscale.normal_math.truncated_plan`): ordinary intervals by erfinv, one-sided,
    far-tail and narrow ones by ``tf.math.ndtri`` of u ∈ (Φ(lo), Φ(hi)] (never 0), and beyond
    37σ by the exact offset from the bound."""
    a, b = dist.standard_bounds
    low, high = representable_bounds(dist.low, dist.high, tf.as_dtype(dtype).name)  # bounds that hold in dtype
    plan = truncated_plan(a, b, "float64")
    if plan.method != "erf":
        unit = _uniform(shape, 0.0, 1.0, tf.float64, seed)
        if plan.method == "ndtri":
            z = tf.math.ndtri(plan.p_hi - plan.p_width * unit)
        else:
            z = -(plan.a + far_tail_offset(-tf.math.log1p(-plan.kept * unit), plan.a, plan.log_s_a, tf.math))
        z = tf.clip_by_value(z, plan.z_low, plan.z_high)
        return tf.cast(tf.clip_by_value(z * (plan.sign * dist.sigma) + dist.loc, low, high), dtype)
    flip = a > 0.0  # an upper-tail interval is drawn as the mirror of the lower one
    if flip:
        a, b = -b, -a
    u = _uniform(shape, normal_cdf(a), normal_cdf(b), tf.float64, seed)
    z = tf.clip_by_value(tf.math.erfinv(2.0 * u - 1.0) * math.sqrt(2.0), a, b)
    if flip:
        z = -z
    return tf.cast(tf.clip_by_value(z * dist.sigma + dist.loc, low, high), dtype)


def _orthogonal(dist: OrthogonalDist, layout: Layout, shape: tuple[int, ...], dtype: Any, seed: Any) -> tf.Tensor:
    order, (nb, og, o, ig, i, rf) = layout.blocks(shape)
    rows, cols = o, i * rf
    big, small = max(rows, cols), min(rows, cols)
    work = tf.float64 if dtype == tf.float64 else tf.float32
    q, r = tf.linalg.qr(_normal((nb * og * ig, big, small), 0.0, 1.0, work, seed))
    q = q * tf.expand_dims(tf.sign(tf.linalg.diag_part(r)), -2)  # Haar: fix the signs
    if rows < cols:
        q = tf.linalg.matrix_transpose(q)
    blocks = tf.transpose(tf.reshape(q * dist.gain, (nb, og, ig, o, i, rf)), (0, 1, 3, 2, 4, 5))
    permuted = tf.reshape(blocks, tuple(shape[a] for a in order))
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return tf.cast(tf.transpose(permuted, inverse), dtype)


def _sample(dist: Distribution, layout: Layout | None, shape: tuple[int, ...], dtype: Any, seed: Any) -> tf.Tensor:
    if isinstance(dist, ConstantDist):
        return tf.fill(shape, tf.constant(dist.value, dtype))
    if isinstance(dist, TruncatedNormalDist):
        return _truncated(dist, shape, dtype, seed)
    if isinstance(dist, OrthogonalDist):
        if layout is None:  # pragma: no cover - the planner always gives one
            raise ValueError("An orthogonal init needs the weight's layout.")
        return _orthogonal(dist, layout, shape, dtype, seed)
    work = tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype
    if isinstance(dist, NormalDist):
        out = _normal(shape, dist.mean, dist.std, work, seed)
    elif isinstance(dist, UniformDist):
        out = _uniform(shape, dist.low, dist.high, work, seed)
        out = tf.clip_by_value(out, *representable_bounds(dist.low, dist.high, tf.as_dtype(dtype).name))
    else:  # pragma: no cover - every Distribution is handled above
        raise TypeError(f"Unknown distribution {dist!r}.")
    return tf.cast(out, dtype)


def _float_dtype(dtype: Any) -> tf.DType:
    dt = tf.as_dtype(dtype if dtype is not None else tf_keras.backend.floatx())
    if dt.name not in _FLOAT_DTYPES:
        raise TypeError(
            f"initscale initializers make floating-point values only. Received: dtype={dt.name!r}; valid: "
            f"{', '.join(repr(d) for d in _FLOAT_DTYPES)}."
        )
    return dt


def _check_seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"Argument `seed` must be an int or None. Received: seed={seed!r}.")
    return seed


# --- initializers --------------------------------------------------------------------------------


@_register(package=_PACKAGE)
class Initializer(tf_keras.initializers.Initializer):  # type: ignore[misc]
    """An initscale spec as a Keras 2 initializer: ``init(shape, dtype=None)``.

    Args:
        spec: the initscale spec (or its ``to_dict()`` form, as in a saved config).
        seed: int (stateless: the same values every call) or None (fresh values every call).
        layout: a layer kind name (``"keras.lstm"``), a :class:`~initscale.Layout`, or None for
            Keras's own fan rule.
    """

    def __init__(
        self, spec: Spec | Mapping[str, Any], seed: int | None = None, layout: LayoutLike | None = None
    ) -> None:
        if isinstance(spec, Mapping):
            spec = from_dict(spec)
        if not isinstance(spec, Spec):
            raise TypeError(f"Argument `spec` must be an initscale spec. Received: spec={spec!r}.")
        self.spec = spec
        self.seed = _check_seed(seed)
        self.layout = layout_from_config(layout)
        self._plan, self._rule = planner(spec, _DEFAULT_LAYOUT if self.layout is None else self.layout)

    def __call__(self, shape: Any, dtype: Any = None, **kwargs: Any) -> tf.Tensor:
        dims = tuple(int(d) for d in shape)
        dist, concrete = self._plan(dims)
        seed = None if self.seed is None else (self.seed, 0)
        return _sample(dist, concrete, dims, _float_dtype(dtype), seed)

    def get_config(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "seed": self.seed, "layout": layout_to_config(self.layout)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Initializer:
        return cls(**config)


def initializer(spec: Spec, seed: int | None = None, layout: LayoutLike | None = None) -> Initializer:
    """Compile ``spec`` into a Keras 2 initializer (see :class:`Initializer`)."""
    return Initializer(spec, seed=seed, layout=layout)


class _KerasNamed(Initializer):
    def __init__(self, spec: Spec, seed: int | None = None, layout: LayoutLike | None = None, **args: Any) -> None:
        self._keras_args = args
        super().__init__(spec, seed=seed, layout=layout)

    def get_config(self) -> dict[str, Any]:
        config = {**self._keras_args, "seed": self.seed}
        if self.layout is not None:
            config["layout"] = layout_to_config(self.layout)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Initializer:
        return cls(**config)


@_register(package=_PACKAGE)
class VarianceScaling(_KerasNamed):
    """Drop-in for ``tf_keras.initializers.VarianceScaling`` (Keras's spellings: "normal" means
    "truncated_normal", corrected; "untruncated_normal"; "uniform")."""

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
        layout: LayoutLike | None = None,
    ) -> None:
        spec = presets.get("keras.variance_scaling", scale=scale, mode=mode, distribution=distribution)
        name = distribution.lower()  # the preset has checked it
        super().__init__(spec, seed, layout, scale=scale, mode=mode, distribution=name)


def _fixed(name: str, preset: str, doc: str) -> type[_KerasNamed]:
    spec = presets.get(preset)

    def __init__(self: _KerasNamed, seed: int | None = None, layout: LayoutLike | None = None) -> None:
        _KerasNamed.__init__(self, spec, seed, layout)

    cls = type(name, (_KerasNamed,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})
    return _register(package=_PACKAGE)(cls)  # type: ignore[no-any-return]


GlorotUniform = _fixed("GlorotUniform", "glorot_uniform", "Drop-in for GlorotUniform: U(±√(6/(fan_in+fan_out))).")
GlorotNormal = _fixed("GlorotNormal", "glorot_normal", "Drop-in for GlorotNormal: truncated, 2/(fan_in+fan_out).")
HeUniform = _fixed("HeUniform", "he_uniform", "Drop-in for HeUniform: U(±√(6/fan_in)).")
HeNormal = _fixed("HeNormal", "he_normal", "Drop-in for HeNormal: truncated (±2σ), variance 2/fan_in.")
LecunUniform = _fixed("LecunUniform", "lecun_uniform", "Drop-in for LecunUniform: U(±√(3/fan_in)).")
LecunNormal = _fixed("LecunNormal", "lecun_normal", "Drop-in for LecunNormal: truncated (±2σ), variance 1/fan_in.")


@_register(package=_PACKAGE)
class RandomNormal(_KerasNamed):
    """Drop-in for ``RandomNormal``: N(mean, stddev²)."""

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None, layout: LayoutLike | None = None
    ) -> None:
        super().__init__(Normal(stddev, mean), seed, layout, mean=mean, stddev=stddev)


@_register(package=_PACKAGE)
class TruncatedNormal(_KerasNamed):
    """Drop-in for ``TruncatedNormal``: N(mean, stddev²) cut at ±2·stddev, uncorrected."""

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None, layout: LayoutLike | None = None
    ) -> None:
        super().__init__(
            presets.get("keras.truncated_normal", mean=mean, stddev=stddev), seed, layout, mean=mean, stddev=stddev
        )


@_register(package=_PACKAGE)
class RandomUniform(_KerasNamed):
    """Drop-in for ``RandomUniform``: U(minval, maxval)."""

    def __init__(
        self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None, layout: LayoutLike | None = None
    ) -> None:
        super().__init__(Uniform(minval, maxval), seed, layout, minval=minval, maxval=maxval)


@_register(package=_PACKAGE)
class Orthogonal(_KerasNamed):
    """Drop-in for ``Orthogonal``: ``gain`` × a Haar-random orthogonal matrix per block."""

    def __init__(self, gain: float = 1.0, seed: int | None = None, layout: LayoutLike | None = None) -> None:
        super().__init__(OrthogonalSpec(gain), seed, layout, gain=gain)


def _constant_class(name: str, spec: Spec) -> type[_KerasNamed]:
    def __init__(self: _KerasNamed) -> None:
        _KerasNamed.__init__(self, spec)

    def get_config(self: _KerasNamed) -> dict[str, Any]:
        return {}

    cls = type(
        name,
        (_KerasNamed,),
        {"__init__": __init__, "get_config": get_config, "__doc__": f"Drop-in for {name}.", "__module__": __name__},
    )
    return _register(package=_PACKAGE)(cls)  # type: ignore[no-any-return]


Zeros = _constant_class("Zeros", ZerosSpec())
Ones = _constant_class("Ones", OnesSpec())


@_register(package=_PACKAGE)
class Constant(_KerasNamed):
    """Drop-in for ``Constant`` (a scalar ``value``)."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__(ConstantSpec(value), value=value)

    def get_config(self) -> dict[str, Any]:
        return {"value": self._keras_args["value"]}


# --- whole-model re-initialization --------------------------------------------------------------


def _classes(layer: Any) -> tuple[str, ...]:
    skip = {
        "Layer",
        "Module",
        "AutoTrackable",
        "Trackable",
        "object",
        "Model",
        "BaseRandomLayer",
        "DropoutRNNCellMixin",
    }
    return tuple(c.__name__ for c in type(layer).__mro__ if c.__name__ not in skip)


def _walk(
    layer: Any,
    parents: tuple[str, ...],
    frozen_above: bool,
    seen: set[int],
    include_buffers: bool,
    found: list[tuple[Param, Any]],
) -> None:
    frozen = frozen_above or not layer.trainable
    own = [(v, False) for v in layer._trainable_weights]
    if include_buffers:
        own += [(v, True) for v in layer._non_trainable_weights]
    kinds = {c.__name__ for c in type(layer).__mro__}
    classes = _classes(layer) + parents
    for variable, is_buffer in own:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        name = variable.name.rsplit(":", 1)[0]
        shape = tuple(int(d) for d in variable.shape)
        role, layout, note = keras_role(
            kinds,
            name.split("/")[-1],
            len(shape),
            groups=getattr(layer, "groups", 1),
            unit_forget_bias=bool(getattr(layer, "unit_forget_bias", False)),
            equation=getattr(layer, "equation", None),
        )
        found.append(
            (
                Param(name, shape, classes, role, layout, frozen=frozen and not is_buffer, buffer=is_buffer, note=note),
                variable,
            )
        )
    wrapper = any(c.__name__ in ("RNN", "Bidirectional") for c in type(layer).__mro__)
    for child in layer._flatten_layers(include_self=False, recursive=False):
        _walk(child, _classes(layer)[:1] + parents if wrapper else parents, frozen, seen, include_buffers, found)


def reinit(
    model: Any,
    rules: Spec | Mapping[str, Spec | None],
    seed: int | None = None,
    dry_run: bool = False,
    *,
    include_frozen: bool = False,
    include_buffers: bool = False,
    defaults: bool = True,
) -> Report:
    """Re-initialize a built Keras 2 model's variables in place, each with its layer's fans.

    Same rules, defaults, layouts, atomicity and report as ``initscale.keras.reinit``. With an
    int ``seed`` each variable draws from the stateless stream (seed, crc32 of its name), so the
    result does not depend on the order of the layers; None draws fresh values.

    Example:
        >>> import tf_keras, initscale
        >>> from initscale.adapters.tf_keras import reinit
        >>> model = tf_keras.Sequential([tf_keras.layers.LSTM(16, input_shape=(10, 8)), tf_keras.layers.Dense(4)])
        >>> report = reinit(model, initscale.presets.get("glorot_uniform"), seed=0)
        >>> row = next(r for r in report if r.name.endswith("recurrent_kernel"))
        >>> (row.layout, row.fan_in, row.fan_out)
        ('keras.lstm', 16, 16)
    """
    if not isinstance(model, tf_keras.layers.Layer):
        raise TypeError(f"Argument `model` must be a tf_keras layer or model. Received: {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"The model {model.name!r} is not built: build it first (call it on a batch, or model.build(input_shape))."
        )
    _check_seed(seed)
    return reinit_run(
        _Backend(model, include_buffers, seed),
        rules,
        include_frozen=include_frozen,
        defaults=defaults,
        dry_run=dry_run,
        stacklevel=2,
    )


class _Backend:
    """``reinit``'s walk and write for :func:`initscale.reinit.run`: the model's variables, each
    drawn from its stateless stream (seed, crc32 of its name), all before the first ``assign``."""

    entry = "reinit"

    def __init__(self, model: Any, include_buffers: bool, seed: int | None) -> None:
        self.model, self.include_buffers, self.seed = model, include_buffers, seed

    def walk(self) -> list[tuple[Param, Any]]:
        found: list[tuple[Param, Any]] = []
        _walk(self.model, (), False, set(), self.include_buffers, found)
        return found

    def notes(self, report: Report) -> tuple[str, ...]:
        return ()

    def check(self, targets: Sequence[Target[Any]], dry_run: bool) -> None:
        for target in targets:
            try:
                _float_dtype(target.handle.dtype)
            except TypeError as err:
                raise TypeError(f"Variable {target.name!r}: {err}") from err

    def _draw(self, target: Target[Any]) -> tf.Tensor:
        decision = target.decision
        assert decision.dist is not None
        stream = None if self.seed is None else (self.seed, zlib.crc32(decision.param.name.encode()) & 0x7FFFFFFF)
        return _sample(decision.dist, decision.layout, decision.param.shape, _float_dtype(target.handle.dtype), stream)

    def writes(self, targets: Sequence[Target[Any]]) -> list[Write]:
        return [Write((t.name,), functools.partial(self._draw, t), t.handle.assign) for t in targets]

    def writing(self) -> Any:
        return contextlib.nullcontext()

    def finish(self, targets: Sequence[Target[Any]]) -> None:
        pass
