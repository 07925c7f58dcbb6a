"""Legacy Keras 2 (``tf_keras`` on TensorFlow) adapter: the same API as :mod:`initscale.adapters.keras`.

For users pinned to Keras 2: ``initializer(spec, layout=None, *, stream=None, seed=None)``, drop-ins under Keras's
names (``VarianceScaling``, ``GlorotUniform``, ``HeNormal``, ...), registered as
``"initscale>Name"`` with ``tf_keras.utils.register_keras_serializable`` so ``.keras`` and H5
models load back, and :func:`reinit`, :func:`check` and :func:`lsuv` for a built model (the Keras 3
adapter's, bound to tf_keras). ``initscale.keras`` resolves to this module when
``TF_USE_LEGACY_KERAS=1`` (TensorFlow's own switch to Keras 2); import it directly as
``initscale.adapters.tf_keras`` otherwise.

Sampling with TensorFlow ops: an int seed draws with the stateless ops (the same values on every
call, as Keras 2's seeded initializers), None with the stateful ones (fresh values every call).
Truncated normals by inverse CDF in float64 (exact bounds, corrected variance). A portable
stream (``stream=``, ``reinit(..., stream_seed=)``) gives the values of Keras 3 on TensorFlow,
NumPy, torch and JAX for the same seed and name (:mod:`initscale.streams`).

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

import zlib
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import tensorflow as tf
import tf_keras

from initscale import presets
from initscale.distributions import Distribution, OrthogonalDist
from initscale.fans import Layout, LayoutLike
from initscale.reinit import Report, Target
from initscale.reinit import run as reinit_run
from initscale.specs import Spec
from initscale.streams import Stream, canonical_strides, gate_index, transform

from . import _keras_common as _common
from . import _keras_tf_stream

__all__ = [*_common.CLASS_NAMES, "check", "initializer", "lsuv", "reinit"]

_PACKAGE = _common.PACKAGE
_register = tf_keras.utils.register_keras_serializable(package=_PACKAGE)


# --- sampling with TensorFlow ops (the draws themselves: _keras_common.sample) ------------------


def _uniform(shape: tuple[int, ...], low: float, high: float, dtype: Any, seed: Any) -> tf.Tensor:
    if seed is None:
        return tf.random.uniform(shape, low, high, dtype)
    return tf.random.stateless_uniform(shape, seed, low, high, dtype)


def _normal(shape: tuple[int, ...], mean: float, std: float, dtype: Any, seed: Any) -> tf.Tensor:
    if seed is None:
        return tf.random.normal(shape, mean, std, dtype)
    return tf.random.stateless_normal(shape, seed, mean, std, dtype)


def _sample(dist: Distribution, layout: Layout | None, shape: tuple[int, ...], dtype: str, seed: Any) -> tf.Tensor:
    """``dist``'s values with TensorFlow's ops: an int pair ``seed`` by the stateless ops, None by
    the stateful ones (:func:`._keras_common.sample`)."""
    return _common.sample(_FW, dist, layout, shape, dtype, seed)


def _stream_tensor(
    stream: Stream, dist: Distribution, shape: tuple[int, ...], layout: LayoutLike | None, dtype: str
) -> tf.Tensor:
    """The portable stream (:mod:`initscale.streams`) with TensorFlow ops, as Keras 3 on
    TensorFlow draws it (:mod:`._keras_tf_stream`: the integer stage XLA-compiled from a shape's second
    draw, the float stage eager): the same values for the same seed and name."""
    if isinstance(dist, OrthogonalDist):
        transform(dist, None)  # raises the explanation
    strides = canonical_strides(shape, layout)
    u = _keras_tf_stream.stream_uniforms(stream.key, shape, strides, gate_index(shape, layout), _TF_SEEN)
    return _keras_tf_stream.values(dist, u, dtype)


_TF_SEEN: set[tuple[Any, ...]] = set()  # the (shape, canonical strides, gate order) drawn eagerly once


def _check_seed(seed: Any) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"Argument `seed` must be an int or None. Received: seed={seed!r}.")
    return seed


_TF_OPS = SimpleNamespace(
    add=tf.add,
    cast=tf.cast,
    clip=tf.clip_by_value,
    diagonal=lambda x, axis1, axis2: tf.linalg.diag_part(x),  # the last two axes, as the shared code asks
    erfinv=tf.math.erfinv,
    expand_dims=tf.expand_dims,
    full=lambda shape, value, dtype: tf.fill(shape, tf.constant(value, dtype)),
    log1p=tf.math.log1p,
    multiply=tf.multiply,
    negative=tf.negative,
    qr=tf.linalg.qr,
    reshape=tf.reshape,
    sign=tf.sign,
    subtract=tf.subtract,
    swapaxes=lambda x, a, b: tf.linalg.matrix_transpose(x),  # the last two axes, as the shared code asks
    transpose=tf.transpose,
)

_FW = _common.Framework(
    ops=_TF_OPS,
    xp=tf.math,
    uniform=_uniform,
    normal=_normal,
    ndtri=tf.math.ndtri,
    work_dtype=lambda: "float64",
    dtype_name=lambda dtype: tf.as_dtype(dtype).name,
    floatx=tf_keras.backend.floatx,
    check_seed=_check_seed,
    serialize_seed=lambda seed: seed,
    draw_seed=lambda seed: None if seed is None else (seed, 0),
    sample=lambda *args: _sample(*args),
    stream_tensor=lambda *args: _stream_tensor(*args),
    trainable=lambda layer: layer._trainable_weights,
    non_trainable=lambda layer: layer._non_trainable_weights,
    names=lambda variable: (variable.name.rsplit(":", 1)[0], variable.name.rsplit(":", 1)[0].split("/")[-1]),
    frozen=lambda variable, layer_frozen: layer_frozen,
    skip_classes=frozenset(
        {"Layer", "Module", "AutoTrackable", "Trackable", "object", "Model", "BaseRandomLayer", "DropoutRNNCellMixin"}
    ),
    builtin="tf_keras.",
)


# --- initializers (their logic: _keras_common.SpecInitializer, Named and the drop-in mixins) ------


class _SpecInitializer(_common.SpecInitializer, tf_keras.initializers.Initializer):  # type: ignore[misc]
    """The shared initializer logic on Keras 2's ``Initializer`` (no axes: Keras 2 passes none)."""

    _fw = _FW

    def __call__(self, shape: Any, dtype: Any = None, **kwargs: Any) -> tf.Tensor:
        return super().__call__(shape, dtype)


@_register
class Initializer(_SpecInitializer):
    """An initscale spec as a Keras 2 initializer: ``init(shape, dtype=None)``.

    Args:
        spec: the initscale spec (or its ``to_dict()`` form, as in a saved config).
        seed: int (stateless: the same values every call) or None (fresh values every call).
        layout: a layer kind name (``"keras.lstm"``), a :class:`~initscale.Layout`, or None for
            Keras's own fan rule.
        stream: an :class:`initscale.Stream` (or its ``{"seed", "name"}`` dict): draw the
            portable stream instead (``seed`` unused) with TensorFlow ops: the same values on
            every call, and as Keras 3 on TensorFlow for the same seed and name (as NumPy and
            torch: float64 normals within 8 ulps of the weight's largest magnitude).
    """

    def __init__(
        self,
        spec: Spec | Mapping[str, Any],
        seed: int | None = None,
        layout: LayoutLike | None = None,
        stream: Stream | Mapping[str, Any] | None = None,
    ) -> None:
        self._setup(spec, seed, layout, stream)

    def get_config(self) -> dict[str, Any]:
        return self.spec_config()


@_common.deprecated_seed_layout
def initializer(
    spec: Spec, layout: LayoutLike | None = None, *, stream: Stream | None = None, seed: int | None = None
) -> Initializer:
    """Compile ``spec`` into a Keras 2 initializer (see :class:`Initializer`).

    The contract's ``initializer(spec, layout=None, *, stream=None)`` (:mod:`initscale.adapters`)
    with Keras's keyword-only ``seed``; ``initializer(spec, seed, layout)`` still works until
    initscale 0.3, with a DeprecationWarning."""
    return Initializer(spec, seed=seed, layout=layout, stream=stream)


class _KerasNamed(_common.Named, _SpecInitializer):
    """Base of the drop-in classes: Keras's constructor arguments in, Keras's config out."""


@_register
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


def _fixed(name: str, preset: str, keras_args: tuple[float, str, str], doc: str) -> type[_KerasNamed]:
    spec = presets.get(preset)

    def __init__(self: _KerasNamed, seed: int | None = None, layout: LayoutLike | None = None) -> None:
        _KerasNamed.__init__(self, spec, seed, layout)

    doc = f"Drop-in for ``tf_keras.initializers.{name}``: {doc}"
    return _common.make_class(name, (_KerasNamed,), {"__init__": __init__}, _register, __name__, doc)  # type: ignore[no-any-return]


GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal = (_fixed(*row) for row in _common.FIXED)
_DROP_INS = _common.bind(_common.DROP_INS, _KerasNamed, _register, __name__, "tf_keras.initializers.")
RandomNormal, TruncatedNormal, RandomUniform, Orthogonal, Zeros, Ones, Constant = _DROP_INS


# --- whole-model re-initialization --------------------------------------------------------------


def reinit(
    model: Any,
    rules: Spec | Mapping[str, Spec | None],
    seed: int | None = None,
    *,
    dry_run: bool = False,
    include_frozen: bool = False,
    include_buffers: bool = False,
    defaults: bool = True,
    stream_seed: int | None = None,
    stream_names: Mapping[str, str] | Callable[[str], str] | None = None,
    fans: str = "forward",
) -> Report:
    """Re-initialize a built Keras 2 model's variables in place, each with its layer's fans.

    Same rules, defaults, layouts, atomicity and report as ``initscale.keras.reinit``. With an
    int ``seed`` each variable draws from the stateless stream (seed, crc32 of its name), so the
    result does not depend on the order of the layers; None draws fresh values. The walk is the
    Keras 3 adapter's (``adapters/_keras_common.py``): a class rule reaches the variables of the
    layers inside (``"MultiHeadAttention"`` its projections), and a weight of a layer initscale
    does not recognise gets no layout, never a guessed one: a fan-based rule that reaches it
    raises before anything is written, and the one spec for all weights warns naming it.

    Args:
        seed: int or None, as above.
        stream_seed: draw each variable from the portable stream ``Stream(stream_seed, name)``
            instead (its name without the ``:0``): the same weights as Keras 3's, torch's and
            JAX's ``reinit`` for the same names.
        stream_names: a mapping or function from variable names to stream names.
        fans: ``"forward"`` (default) or ``"native"``: Keras's own ``compute_fans`` on each
            kernel's shape (:func:`initscale.reinit.plan`); the report's rows say which was used.

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
    if stream_seed is not None:
        Stream(stream_seed)  # checks it: a non-negative int
    return reinit_run(
        _Backend(model, include_buffers, seed, stream_seed, stream_names),
        rules,
        include_frozen=include_frozen,
        defaults=defaults,
        dry_run=dry_run,
        fans=fans,
        stacklevel=2,
    )


class _Backend(_common.Backend):
    """``reinit``'s walk and write for :func:`initscale.reinit.run`: the model's variables, each
    drawn from its stateless stream (seed, crc32 of its name) or its portable stream, all before
    the first ``assign``."""

    _fw = _FW

    def __init__(
        self,
        model: Any,
        include_buffers: bool,
        seed: int | None,
        stream_seed: int | None = None,
        stream_names: Mapping[str, str] | Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(model, include_buffers, seed)
        self.stream_seed, self.stream_names = stream_seed, stream_names

    def _draw(self, target: Target[Any], source: Any) -> tf.Tensor:
        decision = target.decision
        assert decision.dist is not None
        if self.stream_seed is not None:
            name, names = decision.param.name, self.stream_names
            if names is not None:
                name = names(name) if callable(names) else names.get(name, name)
            dtype = _common.float_dtype(_FW, target.handle.dtype)
            return _stream_tensor(
                Stream(self.stream_seed, name), decision.dist, decision.param.shape, decision.param.layout, dtype
            )
        stream = None if self.seed is None else (self.seed, zlib.crc32(decision.param.name.encode()) & 0x7FFFFFFF)
        dtype = _common.float_dtype(_FW, target.handle.dtype)
        return _sample(decision.dist, decision.layout, decision.param.shape, dtype, stream)


# --- check and LSUV: the shared Keras implementation (adapters/_keras_check.py, _keras_lsuv.py) --------

from . import _keras_check, _keras_lsuv  # noqa: E402

_FACE = _keras_check.Face(
    _FW,
    "tf_keras",
    "adapters.tf_keras",
    tf_keras.layers.Layer,
    lambda x: x.numpy(),
    tf_keras.activations.linear,
    reinit,
)
check = _keras_check.bind(
    _FACE,
    __name__,
    """\
        >>> import tf_keras, initscale
        >>> from initscale.adapters.tf_keras import check
        >>> model = tf_keras.Sequential([tf_keras.layers.Dense(64, input_shape=(32,)),
        ...                              tf_keras.layers.LayerNormalization()])
        >>> bool(check(model))
        True
        >>> _ = model.layers[1].gamma.assign(tf_keras.backend.zeros((64,)))
        >>> list(check(model).flags.values())
        [('norm_scale_not_one',)]
""",
)
lsuv = _keras_lsuv.bind(
    _FACE,
    __name__,
    """\
        >>> import tf_keras, numpy as np
        >>> from initscale.adapters.tf_keras import lsuv
        >>> model = tf_keras.Sequential([tf_keras.layers.Dense(64, activation="tanh", input_shape=(32,)),
        ...                              tf_keras.layers.Dense(8)])
        >>> report = lsuv(model, np.random.default_rng(0).standard_normal((256, 32)).astype("float32"), seed=0)
        >>> [row.status for row in report.rows]
        ['converged', 'converged']
""",
)
