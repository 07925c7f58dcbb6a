"""Presets: exact reproductions of what each framework and classic recipe does.

Every preset is a function of its source's own arguments that returns a spec; fetch one with
``get(name, **kwargs)`` or the string form ``get("torch.kaiming_normal:a=0.2,mode=fan_out")``,
list them with :func:`names`, and read where each comes from with :func:`info`.

Every argument is checked by its annotated type before the preset runs: a ``bool`` takes a bool or
exactly the strings the string form parses (``"true"``/``"false"``, any case), never a value read by
its truthiness; a ``float`` a finite real number (a truncation bound may be ±inf); an ``int`` an
integer; a ``str`` a string. Magnitudes
(``gain``, ``scale``, ``factor``, ``magnitude``) must be > 0: their sign cannot reach the distribution.

The unqualified names (``glorot_uniform``, ``he_normal``, ``lecun_normal``, ``variance_scaling``,
and the aliases ``xavier_*``/``kaiming_*``) mean the Keras/JAX definitions, which agree with each
other: normals are truncated at ±2σ and *corrected* so the variance is exactly scale/n.
Names qualified by source reproduce that source, including where it differs from the maths:

======================  ===============================================================
prefix                  what differs
======================  ===============================================================
``torch.*``             untruncated normals; gains from ``calculate_gain``; absolute
                        trunc_normal_ bounds; layer defaults (kaiming_uniform a=√5);
                        ``native="torch"``: drawn in torch with torch's own calls
``tf1.*``, ``tfjs.*``,  truncated normals *not* corrected (TF1 contrib multiplies by 1.3
``prettytensor.*``      instead: variance 1.0058·factor/n)
``caffe.*``             ``xavier`` is uniform over fan_in by default (LeCun, not Glorot)
``mxnet.*``             ``Xavier(gaussian, magnitude=3)`` has 3× Glorot's variance
======================  ===============================================================

Each preset's :class:`PresetInfo` names the weight layout its source assumes (``layout``); use
that layout (with ``native=True`` where given) to reproduce the source bit for bit.

Example:
    >>> get("torch.kaiming_normal", a=0.2, mode="fan_out")  # doctest: +ELLIPSIS
    VarianceScaling(scale=1.923076923076923, mode='fan_out', distribution='normal', ..., native='torch')
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _validate
from ._named import parse_named
from .gains import gain as _gain
from .specs import (
    Constant,
    Normal,
    Ones,
    Orthogonal,
    Spec,
    TruncatedNormal,
    Uniform,
    VarianceScaling,
    Zeros,
)

__all__ = ["PresetInfo", "get", "info", "names"]


@dataclass(frozen=True)
class PresetInfo:
    """Where a preset comes from: its source, the layout that source assumes, and its docs."""

    name: str
    source: str
    layout: str
    doc: str
    factory: Callable[..., Spec]

    @property
    def parameters(self) -> dict[str, Any]:
        """The preset's arguments and their defaults (the source's own)."""
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(self.factory).parameters.values()
        }


_REGISTRY: dict[str, PresetInfo] = {}


# Arguments that set a magnitude: each is squared into the variance, is the variance's numerator, or
# (for an orthogonal matrix) only flips its sign, which leaves a Haar-random matrix's distribution
# unchanged; a negative value would silently mean its absolute value, so they must be > 0.
_GAIN_LIKE = frozenset({"gain", "scale", "factor", "magnitude"})


Bound = float  # a truncation bound: a real number, ±inf allowed (a one-sided truncation)


def _coercer(preset: str, name: str, annotation: Any) -> Callable[[Any], Any]:
    """The check of one preset argument, chosen by its annotation: every preset's arguments are
    read by these rules and no other (bools are never read by their truthiness)."""
    if annotation == "Bound":
        return lambda v: _validate.real(name, v, infinite_ok=True)
    if annotation == "bool":
        return lambda v: _validate.boolean(name, v)
    if annotation == "int":
        return lambda v: _validate.integer(name, v)
    if annotation == "str":
        return lambda v: _validate.string(name, v)
    if annotation == "float":
        if name not in _GAIN_LIKE:
            return lambda v: _validate.real(name, v)

        def gain_like(v: Any) -> float:
            out = _validate.real(name, v)
            if not out > 0.0:
                why = (
                    (
                        " (a negative one would silently mean its absolute value: it is squared into the variance, "
                        "or flips an orthogonal matrix, whose distribution is the same)"
                    )
                    if out < 0.0
                    else ""
                )
                raise ValueError(f"Argument `{name}` must be > 0{why}. Received: {name}={v!r}.")
            return out

        return gain_like
    raise TypeError(
        f"Preset {preset!r}: argument {name!r} has no checked type (bool, int, float, Bound or str); "
        f"annotation {annotation!r}."
    )  # pragma: no cover - a registration-time guard


def _checked(fn: Callable[..., Spec]) -> Callable[..., Spec]:
    """``fn`` with each argument checked and coerced by :func:`_coercer` before it runs."""
    signature = inspect.signature(fn)
    checks = {p.name: _coercer(fn.__name__, p.name, p.annotation) for p in signature.parameters.values()}

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Spec:
        bound = signature.bind(*args, **kwargs)
        for key, value in bound.arguments.items():
            bound.arguments[key] = checks[key](value)
        return fn(*bound.args, **bound.kwargs)

    return checked


def _preset(*names_: str, source: str, layout: str) -> Callable[[Callable[..., Spec]], Callable[..., Spec]]:
    def register(fn: Callable[..., Spec]) -> Callable[..., Spec]:
        checked = _checked(fn)
        for name in names_:
            _REGISTRY[name] = PresetInfo(name, source, layout, inspect.cleandoc(fn.__doc__ or ""), checked)
        return checked

    return register


def names() -> list[str]:
    """Every preset name, sorted."""
    return sorted(_REGISTRY)


def info(name: str) -> PresetInfo:
    """The :class:`PresetInfo` of ``name``."""
    return _REGISTRY[_validate.choice("preset", name, _REGISTRY)]


def get(name: str, **kwargs: Any) -> Spec:
    """The spec of preset ``name`` with the source's arguments ``kwargs``.

    ``name`` may carry arguments itself: ``get("caffe.xavier:variance_norm=AVERAGE")``.
    """
    if ":" in name:
        name, parsed = parse_named(name)
        kwargs = {**parsed, **kwargs}
    preset = info(name)
    valid = preset.parameters
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        listed = ", ".join(repr(k) for k in sorted(valid)) or "none"
        raise ValueError(f"Preset {name!r} takes no argument {unknown[0]!r}; valid arguments: {listed}.")
    return preset.factory(**kwargs)


# --- Keras / JAX: the unqualified names --------------------------------------------------------

_KJ = "Keras 3 keras.initializers and jax.nn.initializers (identical definitions)"


@_preset("glorot_uniform", "xavier_uniform", "keras.glorot_uniform", "jax.glorot_uniform", source=_KJ, layout="keras")
def glorot_uniform() -> Spec:
    """U(±√(6/(fan_in+fan_out))): VarianceScaling(1, fan_avg, uniform). Glorot & Bengio 2010."""
    return VarianceScaling(1.0, "fan_avg", "uniform")


@_preset("glorot_normal", "xavier_normal", "keras.glorot_normal", "jax.glorot_normal", source=_KJ, layout="keras")
def glorot_normal() -> Spec:
    """Truncated normal (±2σ, corrected), Var = 2/(fan_in+fan_out). Glorot & Bengio 2010."""
    return VarianceScaling(1.0, "fan_avg", "truncated_normal")


@_preset("he_uniform", "kaiming_uniform", "keras.he_uniform", "jax.he_uniform", source=_KJ, layout="keras")
def he_uniform() -> Spec:
    """U(±√(6/fan_in)): VarianceScaling(2, fan_in, uniform). He et al. 2015."""
    return VarianceScaling(2.0, "fan_in", "uniform")


@_preset("he_normal", "kaiming_normal", "keras.he_normal", "jax.he_normal", source=_KJ, layout="keras")
def he_normal() -> Spec:
    """Truncated normal (±2σ, corrected), Var = 2/fan_in. He et al. 2015."""
    return VarianceScaling(2.0, "fan_in", "truncated_normal")


@_preset("lecun_uniform", "keras.lecun_uniform", "jax.lecun_uniform", source=_KJ, layout="keras")
def lecun_uniform() -> Spec:
    """U(±√(3/fan_in)): VarianceScaling(1, fan_in, uniform). LeCun et al. 1998."""
    return VarianceScaling(1.0, "fan_in", "uniform")


@_preset("lecun_normal", "keras.lecun_normal", "jax.lecun_normal", source=_KJ, layout="keras")
def lecun_normal() -> Spec:
    """Truncated normal (±2σ, corrected), Var = 1/fan_in. LeCun et al. 1998; Klambauer et al. 2017."""
    return VarianceScaling(1.0, "fan_in", "truncated_normal")


@_preset("variance_scaling", "jax.variance_scaling", source=_KJ, layout="keras")
def variance_scaling(scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal") -> Spec:
    """Var = scale/n; jax.nn.initializers.variance_scaling semantics ("normal" is untruncated)."""
    return VarianceScaling(scale, mode, distribution)


@_preset("keras.variance_scaling", source="keras.initializers.VarianceScaling (Keras 3)", layout="keras")
def keras_variance_scaling(scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal") -> Spec:
    """Keras 3 VarianceScaling: "normal" is stored as "truncated_normal"; "untruncated_normal" is N(0, scale/n).
    As in Keras, the distribution name is case-insensitive."""
    distribution = distribution.lower() if isinstance(distribution, str) else distribution
    distribution = _validate.choice(
        "distribution", distribution, ("normal", "truncated_normal", "untruncated_normal", "uniform")
    )
    name = {"normal": "truncated_normal", "untruncated_normal": "normal"}.get(distribution, distribution)
    return VarianceScaling(scale, mode, name)


@_preset("keras.random_normal", source="keras.initializers.RandomNormal", layout="keras")
def keras_random_normal(mean: float = 0.0, stddev: float = 0.05) -> Spec:
    """N(mean, stddev²), untruncated."""
    return Normal(stddev, mean)


@_preset("keras.truncated_normal", source="keras.initializers.TruncatedNormal", layout="keras")
def keras_truncated_normal(mean: float = 0.0, stddev: float = 0.05) -> Spec:
    """N(mean, stddev²) truncated at ±2 stddev, not corrected (std 0.8796·stddev)."""
    return TruncatedNormal(stddev, mean, -2.0, 2.0, "std")


@_preset("keras.random_uniform", source="keras.initializers.RandomUniform", layout="keras")
def keras_random_uniform(minval: float = -0.05, maxval: float = 0.05) -> Spec:
    """U(minval, maxval); Keras's default for Embedding."""
    return Uniform(minval, maxval)


@_preset("keras.orthogonal", "orthogonal", source="keras.initializers.Orthogonal", layout="keras")
def keras_orthogonal(gain: float = 1.0) -> Spec:
    """gain × a random orthogonal matrix (Saxe et al. 2014); Keras's recurrent_kernel default."""
    return Orthogonal(gain)


@_preset("keras.zeros", "zeros", "jax.zeros", "flax.bias", source="keras/jax zeros", layout="keras")
def zeros() -> Spec:
    """All zeros (the bias default of Keras, JAX and Flax)."""
    return Zeros()


@_preset("keras.ones", "ones", "jax.ones", source="keras/jax ones", layout="keras")
def ones() -> Spec:
    """All ones."""
    return Ones()


@_preset("jax.normal", source="jax.nn.initializers.normal", layout="flax")
def jax_normal(stddev: float = 1e-2) -> Spec:
    """N(0, stddev²), untruncated."""
    return Normal(stddev)


@_preset("jax.uniform", source="jax.nn.initializers.uniform", layout="flax")
def jax_uniform(scale: float = 1e-2) -> Spec:
    """U[0, scale): note jax's uniform is not centred."""
    return Uniform(0.0, scale)


@_preset("jax.truncated_normal", source="jax.nn.initializers.truncated_normal", layout="flax")
def jax_truncated_normal(stddev: float = 1e-2, lower: Bound = -2.0, upper: Bound = 2.0) -> Spec:
    """stddev × N(0, 1) truncated to [lower, upper] (bounds in std units, not corrected)."""
    return TruncatedNormal(stddev, 0.0, lower, upper, "std")


@_preset("jax.orthogonal", source="jax.nn.initializers.orthogonal", layout="flax")
def jax_orthogonal(scale: float = 1.0) -> Spec:
    """scale × a random orthogonal matrix."""
    return Orthogonal(scale)


# --- Flax layer defaults -------------------------------------------------------------------------


@_preset(
    "flax.dense_kernel",
    "flax.conv_kernel",
    "flax.lstm_kernel",
    source="flax.linen / flax.nnx default_kernel_init",
    layout="flax",
)
def flax_kernel() -> Spec:
    """lecun_normal(): the default kernel of Dense/Linear, Conv, ConvTranspose, attention and LSTM input kernels."""
    return lecun_normal()


@_preset("flax.lstm_recurrent_kernel", source="flax LSTMCell recurrent_kernel_init", layout="flax")
def flax_lstm_recurrent_kernel() -> Spec:
    """orthogonal(): the default of each per-gate (hidden, hidden) LSTMCell recurrent kernel."""
    return Orthogonal(1.0)


@_preset(
    "flax.embed",
    source="flax default_embed_init = variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)",
    layout="flax.embed",
)
def flax_embed() -> Spec:
    """N(0, 1/features), untruncated. jax's fan rule with in_axis=-2 and out_axis=0 both on the vocabulary
    axis of a (num_embeddings, features) table gives fan_in = features; with initscale's flax.embed
    layout that is fan_out, so this is VarianceScaling(1, fan_out, normal)."""
    return VarianceScaling(1.0, "fan_out", "normal")


# --- PyTorch ------------------------------------------------------------------------------------

_TORCH = "torch.nn.init (torch 2.13)"
_TORCH_MODES = ("fan_in", "fan_out")


def _torch_gain_sq(nonlinearity: str, a: float) -> float:
    param = a if nonlinearity == "leaky_relu" else None  # torch ignores `a` for other activations
    return _gain(nonlinearity, param, method="table") ** 2


@_preset("torch.xavier_uniform", source=_TORCH, layout="torch")
def torch_xavier_uniform(gain: float = 1.0) -> Spec:
    """U(±gain·√(6/(fan_in+fan_out))) = VarianceScaling(gain², fan_avg, uniform)."""
    return VarianceScaling(gain**2, "fan_avg", "uniform", native="torch")


@_preset("torch.xavier_normal", source=_TORCH, layout="torch")
def torch_xavier_normal(gain: float = 1.0) -> Spec:
    """N(0, gain²·2/(fan_in+fan_out)), untruncated."""
    return VarianceScaling(gain**2, "fan_avg", "normal", native="torch")


@_preset("torch.kaiming_uniform", source=_TORCH, layout="torch")
def torch_kaiming_uniform(a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Spec:
    """U(±gain·√(3/n)), gain = calculate_gain(nonlinearity, a); torch's default is leaky_relu with a=0 (√2)."""
    mode = _validate.choice("mode", mode, _TORCH_MODES)
    return VarianceScaling(_torch_gain_sq(nonlinearity, a), mode, "uniform", native="torch")


@_preset("torch.kaiming_normal", source=_TORCH, layout="torch")
def torch_kaiming_normal(a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Spec:
    """N(0, gain²/n), untruncated, gain = calculate_gain(nonlinearity, a)."""
    mode = _validate.choice("mode", mode, _TORCH_MODES)
    return VarianceScaling(_torch_gain_sq(nonlinearity, a), mode, "normal", native="torch")


@_preset("torch.trunc_normal", source=_TORCH, layout="torch")
def torch_trunc_normal(mean: float = 0.0, std: float = 1.0, a: Bound = -2.0, b: Bound = 2.0) -> Spec:
    """N(mean, std²) truncated to [a, b] with **absolute** bounds (with std=0.02 nothing is truncated)."""
    return TruncatedNormal(std, mean, a, b, "absolute", native="torch")


@_preset("torch.normal", source=_TORCH, layout="torch")
def torch_normal(mean: float = 0.0, std: float = 1.0) -> Spec:
    """N(mean, std²)."""
    return Normal(std, mean, native="torch")


@_preset("torch.uniform", source=_TORCH, layout="torch")
def torch_uniform(a: float = 0.0, b: float = 1.0) -> Spec:
    """U(a, b)."""
    return Uniform(a, b, native="torch")


@_preset("torch.orthogonal", source=_TORCH, layout="torch")
def torch_orthogonal(gain: float = 1.0) -> Spec:
    """gain × a random orthogonal matrix of the (out, in·kernel) view, drawn in torch's order:
    the same generator gives ``torch.nn.init.orthogonal_``'s values (float32/float64 weights)."""
    return Orthogonal(gain, native="torch")


@_preset("torch.constant", source=_TORCH, layout="torch")
def torch_constant(val: float = 0.0) -> Spec:
    """Every element ``val``."""
    return Constant(val)


@_preset(
    "torch.linear_default",
    "torch.conv_default",
    "torch.linear_default_bias",
    "torch.conv_default_bias",
    source="torch.nn.Linear/_ConvNd.reset_parameters: kaiming_uniform_(a=sqrt(5))",
    layout="torch:native=true",
)
def torch_layer_default() -> Spec:
    """U(±1/√fan_in) = kaiming_uniform_(a=√5): gain² = 2/(1+5) = 1/3, limit √(3·(1/3)/fan_in).
    The bias gets the same bound from the *weight's* fan_in (torch/nn/modules/linear.py
    ``Linear.reset_parameters``, conv.py ``_ConvNd.reset_parameters``: ``bound = 1 / sqrt(fan_in)``
    with ``fan_in`` from ``_calculate_fan_in_and_fan_out(self.weight)``). ``reinit_`` does both: a
    bias takes its weight's fans, and a bias whose weight gets this spec (one spec, or a rule such
    as ``{"Linear": spec}``) and that no rule names gets it too. For ConvTranspose, torch's fan_in
    is out_channels/groups × kernel: use layout "torch.conv_transpose:native=true" (``reinit_(...,
    fans="native")``) to reproduce it."""
    return VarianceScaling(1.0 / 3.0, "fan_in", "uniform", native="torch")


@_preset(
    "torch.bilinear_default",
    source="torch.nn.Bilinear.reset_parameters: uniform_(±1/sqrt(weight.size(1)))",
    layout="torch",
)
def torch_bilinear_default(in1_features: int = 1) -> Spec:
    """U(±1/√in1_features) for ``nn.Bilinear``'s weight (out, in1, in2) and its bias alike
    (torch/nn/modules/linear.py ``Bilinear.reset_parameters``: ``bound = 1 / math.sqrt(self.weight.size(1))``,
    then ``uniform_(weight, -bound, bound)`` and ``uniform_(bias, -bound, bound)``). Not a fan rule
    (torch's fan_in of that weight is in1·in2), so ``in1_features`` is an argument, as
    ``hidden_size`` is for ``torch.rnn_default``. Through ``reinit_``, a rule
    ``{"Bilinear": spec}`` gives it to the weight and, since it is that layer's own default, to the
    layer's bias."""
    n = _validate.integer("in1_features", in1_features, minimum=1)
    return Uniform(-1.0 / math.sqrt(n), 1.0 / math.sqrt(n), native="torch")


@_preset("torch.embedding_default", source="torch.nn.Embedding.reset_parameters: normal_(weight)", layout="torch")
def torch_embedding_default() -> Spec:
    """N(0, 1) (the padding_idx row is then zeroed by the module)."""
    return Normal(1.0, native="torch")


@_preset("torch.rnn_default", source="torch.nn.RNNBase.reset_parameters", layout="torch")
def torch_rnn_default(hidden_size: int = 1) -> Spec:
    """U(±1/√hidden_size) for every weight and bias of RNN/LSTM/GRU (and their cells)."""
    h = _validate.integer("hidden_size", hidden_size, minimum=1)
    return Uniform(-1.0 / math.sqrt(h), 1.0 / math.sqrt(h), native="torch")


@_preset(
    "torch.mha_in_proj_default",
    source="torch.nn.MultiheadAttention._reset_parameters",
    layout="torch.mha_in_proj:native=true",
)
def torch_mha_in_proj_default() -> Spec:
    """xavier_uniform_ on the packed (3E, E) in_proj_weight: with the stacked fans (E, 3E) that is
    U(±√(6/4E)), not the per-projection U(±√(6/2E))."""
    return VarianceScaling(1.0, "fan_avg", "uniform", native="torch")


# --- TensorFlow 1.x, tfjs, prettytensor --------------------------------------------------------

_TF1_MODES = {"FAN_IN": "fan_in", "FAN_OUT": "fan_out", "FAN_AVG": "fan_avg"}


@_preset("tf1.variance_scaling_initializer", source="tf.contrib.layers.variance_scaling_initializer", layout="keras")
def tf1_variance_scaling_initializer(factor: float = 2.0, mode: str = "FAN_IN", uniform: bool = False) -> Spec:
    """uniform: U(±√(3·factor/n)); else a truncated normal (±2σ) with σ = √(1.3·factor/n), not
    corrected: Var = 1.3·0.7737·factor/n = 1.0058·factor/n."""
    m = _TF1_MODES[_validate.choice("mode", mode, _TF1_MODES)]
    if uniform:
        return VarianceScaling(factor, m, "uniform")
    return VarianceScaling(1.3 * factor, m, "truncated_normal", corrected=False)


@_preset("tf1.xavier_initializer", source="tf.contrib.layers.xavier_initializer", layout="keras")
def tf1_xavier_initializer(uniform: bool = True) -> Spec:
    """variance_scaling_initializer(factor=1.0, mode='FAN_AVG', uniform=uniform)."""
    return tf1_variance_scaling_initializer(1.0, "FAN_AVG", uniform)


@_preset(
    "tf1.variance_scaling",
    "tfjs.variance_scaling",
    source="tf.variance_scaling_initializer (TF <= 1.12) and tfjs-layers VarianceScaling",
    layout="keras",
)
def tf1_variance_scaling(scale: float = 1.0, mode: str = "fan_in", distribution: str = "normal") -> Spec:
    """ "normal" = truncated normal (±2σ) with σ = √(scale/n), *not* corrected: Var = 0.7737·scale/n."""
    distribution = _validate.choice("distribution", distribution, ("normal", "uniform"))
    if distribution == "uniform":
        return VarianceScaling(scale, mode, "uniform")
    return VarianceScaling(scale, mode, "truncated_normal", corrected=False)


@_preset("tf1.glorot_normal", "tfjs.glorot_normal", source="TF <= 1.12 / tfjs glorot_normal", layout="keras")
def tf1_glorot_normal() -> Spec:
    """Uncorrected truncated normal, σ = √(2/(fan_in+fan_out)): Var = 0.7737·2/(fan_in+fan_out)."""
    return tf1_variance_scaling(1.0, "fan_avg")


@_preset("tf1.he_normal", "tfjs.he_normal", source="TF <= 1.12 / tfjs he_normal", layout="keras")
def tf1_he_normal() -> Spec:
    """Uncorrected truncated normal, σ = √(2/fan_in)."""
    return tf1_variance_scaling(2.0, "fan_in")


@_preset("tf1.lecun_normal", "tfjs.lecun_normal", source="TF <= 1.12 / tfjs lecun_normal", layout="keras")
def tf1_lecun_normal() -> Spec:
    """Uncorrected truncated normal, σ = √(1/fan_in)."""
    return tf1_variance_scaling(1.0, "fan_in")


@_preset("prettytensor.xavier_init", source="prettytensor layers.xavier_init", layout="keras")
def prettytensor_xavier_init(uniform: bool = True) -> Spec:
    """uniform: U(±√(6/(n_in+n_out))); else a truncated normal with σ = √(3/(n_in+n_out)) not
    corrected ("3 gives approximately the same limits"): Var = 0.7737·3/(n_in+n_out)."""
    if uniform:
        return VarianceScaling(1.0, "fan_avg", "uniform")
    return VarianceScaling(1.5, "fan_avg", "truncated_normal", corrected=False)


# --- Caffe, MXNet, Theano, NumPy -------------------------------------------------------------------

_CAFFE_NORMS = {"FAN_IN": "fan_in", "FAN_OUT": "fan_out", "AVERAGE": "fan_avg"}


@_preset("caffe.xavier", source="BVLC caffe filler.hpp XavierFiller", layout="torch")
def caffe_xavier(variance_norm: str = "FAN_IN") -> Spec:
    """U(±√(3/n)), n by variance_norm (default FAN_IN: LeCun uniform; AVERAGE gives Glorot)."""
    return VarianceScaling(1.0, _CAFFE_NORMS[_validate.choice("variance_norm", variance_norm, _CAFFE_NORMS)], "uniform")


@_preset("caffe.msra", source="BVLC caffe filler.hpp MSRAFiller", layout="torch")
def caffe_msra(variance_norm: str = "FAN_IN") -> Spec:
    """N(0, 2/n), untruncated, n by variance_norm (default FAN_IN)."""
    return VarianceScaling(2.0, _CAFFE_NORMS[_validate.choice("variance_norm", variance_norm, _CAFFE_NORMS)], "normal")


_MXNET_FACTORS = {"in": "fan_in", "out": "fan_out", "avg": "fan_avg"}


@_preset("mxnet.xavier", source="mxnet.initializer.Xavier", layout="torch")
def mxnet_xavier(rnd_type: str = "uniform", factor_type: str = "avg", magnitude: float = 3.0) -> Spec:
    """scale = √(magnitude/n): uniform → U(±scale) (Var = magnitude/(3n)); gaussian → N(0, scale²)
    (Var = magnitude/n: with the default magnitude 3 that is 3× Glorot normal)."""
    mode = _MXNET_FACTORS[_validate.choice("factor_type", factor_type, _MXNET_FACTORS)]
    rnd = _validate.choice("rnd_type", rnd_type, ("gaussian", "uniform"))
    m = magnitude
    return VarianceScaling(m / 3.0, mode, "uniform") if rnd == "uniform" else VarianceScaling(m, mode, "normal")


@_preset("mxnet.msra_prelu", source="mxnet.initializer.MSRAPrelu", layout="torch")
def mxnet_msra_prelu(factor_type: str = "avg", slope: float = 0.25) -> Spec:
    """Xavier("gaussian", factor_type, magnitude=2/(1+slope²)): N(0, 2/((1+slope²)·n)); default fan_avg."""
    return mxnet_xavier("gaussian", factor_type, 2.0 / (1.0 + slope**2))


@_preset("theano.glorot_uniform", source="deeplearning.net Theano tutorial mlp.py HiddenLayer", layout="keras")
def theano_glorot_uniform(activation: str = "tanh") -> Spec:
    """U(±√(6/(n_in+n_out))), times 4 for sigmoid units (the "4x for sigmoid" range)."""
    act = _validate.choice("activation", activation, ("sigmoid", "tanh"))
    return VarianceScaling(_gain("sigmoid_4x") ** 2 if act == "sigmoid" else 1.0, "fan_avg", "uniform")


@_preset("numpy.randn_lecun", source="randn(n_in, n_out) * sqrt(1 / n_in)", layout="keras")
def numpy_randn_lecun() -> Spec:
    """N(0, 1/n_in), untruncated."""
    return VarianceScaling(1.0, "fan_in", "normal")


@_preset("numpy.randn_glorot", source="randn(n_in, n_out) * sqrt(2 / (n_in + n_out))", layout="keras")
def numpy_randn_glorot() -> Spec:
    """N(0, 2/(n_in+n_out)), untruncated."""
    return VarianceScaling(1.0, "fan_avg", "normal")


@_preset("numpy.randn_he", source="randn(n_in, n_out) * sqrt(2 / n_in)", layout="keras")
def numpy_randn_he() -> Spec:
    """N(0, 2/n_in), untruncated."""
    return VarianceScaling(2.0, "fan_in", "normal")
