"""Fans from a weight shape and its layout.

A :class:`Layout` says which axes of a weight are inputs, which are outputs, which are batch
(independent copies, not counted) and, implicitly, that every other axis is receptive field::

    fan_in  = (size of in axes  / in_groups)  × receptive field
    fan_out = (size of out axes / out_groups) × receptive field

``in_groups``/``out_groups`` say that the in or out axes stack that many independent blocks
(groups of a grouped conv, gates of an LSTM, Q/K/V of a packed projection). initscale's fans
are always the **forward-pass** fans of one block: per group for grouped and depthwise conv,
per gate for stacked RNN gates, per projection for packed QKV, and for a transposed conv
``fan_in = in_channels / groups × kernel size / product of strides`` (the taps an output receives:
torch and Keras both swap in and out, and neither divides by the stride).

Named layer kinds (:func:`names`, :func:`get`, or strings such as ``"torch.conv:groups=4"``)
build the right layout for each layer users meet. Each takes ``native=True`` to reproduce
instead the fans that the framework's own initializers compute for that weight, bit for bit
(torch ``_calculate_fan_in_and_fan_out``, Keras ``compute_fans``, JAX ``_compute_fans``).

Example:
    >>> compute_fans((64, 3, 3, 3), "torch")
    Fans(fan_in=27, fan_out=576, receptive_field=9)
    >>> compute_fans((3, 3, 64, 1), "keras.depthwise_conv")       # per channel
    Fans(fan_in=9, fan_out=9, receptive_field=9)
    >>> compute_fans((3, 3, 64, 1), "keras.depthwise_conv:native=true")  # what Keras uses
    Fans(fan_in=576, fan_out=9, receptive_field=9)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _validate
from ._named import format_named, parse_named

__all__ = [
    "CANONICAL_GATES",
    "INTERLEAVED_GATES",
    "MODES",
    "Fans",
    "LayerKind",
    "Layout",
    "LayoutLike",
    "Mode",
    "compute_fans",
    "describe_kind",
    "einsum_layout",
    "experts_layout",
    "gate_order",
    "get",
    "layout_from_config",
    "layout_to_config",
    "names",
    "resolve",
    "stride_product",
]

Mode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]
MODES: tuple[str, ...] = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")


@dataclass(frozen=True)
class Fans:
    """Forward fans of one weight block.

    ``receptive_field`` is the product of the receptive-field axes (1 for a dense weight); it
    is what turns channel counts into fans and is needed for the orthogonal matrix view.
    """

    fan_in: float
    fan_out: float
    receptive_field: float = 1

    def __post_init__(self) -> None:
        for name in ("fan_in", "fan_out", "receptive_field"):
            _validate.real(name, getattr(self, name), nonnegative=True)

    def fan(self, mode: str) -> float:
        """The fan that ``mode`` divides by.

        ``fan_avg`` = (fan_in + fan_out)/2, so scale/fan_avg is the harmonic mean of
        scale/fan_in and scale/fan_out; ``fan_geo_avg`` = √(fan_in · fan_out).
        """
        _validate.choice("mode", mode, MODES)
        if mode == "fan_in":
            return float(self.fan_in)
        if mode == "fan_out":
            return float(self.fan_out)
        if mode == "fan_avg":
            return (self.fan_in + self.fan_out) / 2.0
        return math.sqrt(self.fan_in * self.fan_out)


def _axes(name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"Argument `{name}` must be an int or a sequence of ints. Received: {name}={value!r}.")
    return tuple(_validate.integer(name, v) for v in value)


@dataclass(frozen=True)
class Layout:
    """Which axes of a weight are inputs, outputs and batch; all others are receptive field.

    Args:
        in_axes: axis or axes holding input features (negative indices count from the end).
        out_axes: axis or axes holding output features.
        batch_axes: axes of independent copies, excluded from the fans.
        in_groups: the in axes stack this many independent blocks (each output sees one).
        out_groups: the out axes stack this many independent blocks (groups, gates, Q/K/V).
        name: a label shown in reprs and explanations.

    Example:
        >>> Layout(in_axes=-2, out_axes=-1).fans((3, 3, 16, 32))
        Fans(fan_in=144, fan_out=288, receptive_field=9)
    """

    in_axes: tuple[int, ...]
    out_axes: tuple[int, ...]
    batch_axes: tuple[int, ...] = ()
    in_groups: int = 1
    out_groups: int = 1
    name: str | None = field(default=None, compare=False)

    def __init__(
        self,
        in_axes: int | Sequence[int],
        out_axes: int | Sequence[int],
        batch_axes: int | Sequence[int] = (),
        in_groups: int = 1,
        out_groups: int = 1,
        name: str | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "in_axes", _axes("in_axes", in_axes))
        set_(self, "out_axes", _axes("out_axes", out_axes))
        set_(self, "batch_axes", _axes("batch_axes", batch_axes))
        set_(self, "in_groups", _validate.integer("in_groups", in_groups, minimum=1))
        set_(self, "out_groups", _validate.integer("out_groups", out_groups, minimum=1))
        set_(self, "name", name)
        if not self.in_axes or not self.out_axes:
            raise ValueError(
                f"A layout needs at least one in axis and one out axis. Received: in_axes={in_axes!r}, "
                f"out_axes={out_axes!r}."
            )
        every = self.in_axes + self.out_axes + self.batch_axes
        if len(set(every)) != len(every):
            raise ValueError(
                f"Layout axes must be distinct. Received: in_axes={self.in_axes}, out_axes={self.out_axes}, "
                f"batch_axes={self.batch_axes}."
            )

    def split_axes(
        self, shape: Sequence[int]
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Normalized (in, out, batch, receptive) axes of ``shape``; raises if any is out of range."""
        dims = _validate.shape("shape", shape)
        rank = len(dims)
        label = self.name or repr(self)

        def norm(axis: int) -> int:
            if not -rank <= axis < rank:
                raise ValueError(
                    f"Layout {label} needs axis {axis}, but shape {dims} has rank {rank}. "
                    "Give the full weight shape, or a layout that matches it."
                )
            return axis % rank

        ins = tuple(norm(a) for a in self.in_axes)
        outs = tuple(norm(a) for a in self.out_axes)
        batch = tuple(norm(a) for a in self.batch_axes)
        if len(set(ins + outs + batch)) != len(ins + outs + batch):
            raise ValueError(f"Layout {label} names the same axis twice for shape {dims}.")
        used = set(ins + outs + batch)
        receptive = tuple(a for a in range(rank) if a not in used)
        return ins, outs, batch, receptive

    def fans(self, shape: Sequence[int]) -> Fans:
        """Forward fans of one block of a weight of this ``shape``."""
        dims = _validate.shape("shape", shape)
        if not dims:
            raise ValueError("A scalar weight (shape ()) has no fans; give a shape with in and out axes.")
        ins, outs, _, receptive = self.split_axes(dims)
        in_size = math.prod(dims[a] for a in ins)
        out_size = math.prod(dims[a] for a in outs)
        rf = math.prod(dims[a] for a in receptive)
        for side, size, groups in (("in", in_size, self.in_groups), ("out", out_size, self.out_groups)):
            if size % groups:
                raise ValueError(
                    f"The {side} axes of shape {dims} hold {size} features, which {side}_groups={groups} "
                    "does not divide. Check the groups/gates of the layer kind."
                )
        return Fans(in_size // self.in_groups * rf, out_size // self.out_groups * rf, rf)

    def blocks(self, shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, int, int, int, int, int]]:
        """How a weight splits into independent (out × in·receptive) blocks, for matrix inits.

        Returns ``(order, (batch, out_groups, out_per_group, in_groups, in_per_group, receptive))``:
        transposing the weight to ``order`` (batch, out, in, receptive axes) and reshaping it to
        the six sizes gives each block as ``[b, og, :, ig, :, :]``.
        """
        dims = _validate.shape("shape", shape)
        ins, outs, batch, receptive = self.split_axes(dims)

        def size(axes: tuple[int, ...]) -> int:
            return math.prod(dims[a] for a in axes)

        og, ig = self.out_groups, self.in_groups
        sizes = (size(batch), og, size(outs) // og, ig, size(ins) // ig, size(receptive))
        return batch + outs + ins + receptive, sizes

    def layout(self, shape: Sequence[int]) -> Layout:
        """A plain layout is the same for every shape (the protocol shared with LayerKind)."""
        return self

    def __str__(self) -> str:
        return self.name or repr(self)


# --- the frameworks' own fan rules (native-compat) -------------------------------------------


def _torch_native(dims: tuple[int, ...]) -> Fans:
    # torch.nn.init._calculate_fan_in_and_fan_out: (out, in, *kernel), at least 2-D.
    if len(dims) < 2:
        raise ValueError(f"torch computes no fans for a tensor with fewer than 2 dimensions. Received: shape={dims}.")
    rf = math.prod(dims[2:])
    return Fans(dims[1] * rf, dims[0] * rf, rf)


def _keras_native(dims: tuple[int, ...]) -> Fans:
    # keras.src.initializers.random_initializers.compute_fans: (*kernel, in, out);
    # rank 0 gives (1, 1) and rank 1 gives (n, n).
    if not dims:
        return Fans(1, 1)
    if len(dims) == 1:
        return Fans(dims[0], dims[0])
    rf = math.prod(dims[:-2])
    return Fans(dims[-2] * rf, dims[-1] * rf, rf)


def _jax_native(dims: tuple[int, ...], in_axis: int = -2, out_axis: int = -1) -> Fans:
    # jax._src.nn.initializers._compute_fans: receptive = total / in_size / out_size, at least 2-D.
    # With in_axis == out_axis (flax's Embed default) the same axis is divided out twice.
    if len(dims) < 2:
        raise ValueError(f"jax computes no fans for a weight with fewer than 2 dimensions. Received: shape={dims}.")
    in_size, out_size = dims[in_axis], dims[out_axis]
    total = math.prod(dims)
    rf = total / in_size / out_size if in_size and out_size else 0.0
    return Fans(in_size * rf, out_size * rf, rf)


# --- named layer kinds -------------------------------------------------------------------------

_LayoutBuilder = Callable[[tuple[int, ...], dict[str, Any]], Layout]


@dataclass(frozen=True)
class _Kind:
    framework: str
    doc: str
    defaults: dict[str, Any]
    build: _LayoutBuilder
    native: Callable[[tuple[int, ...]], Fans]
    gates: tuple[str, ...] = ()
    stride: bool = False  # a ``stride`` param: the product of the strides, dividing the forward fan_in


# A transposed conv of kernel k and stride s sends each input to k outputs along an axis, s apart, so
# an output receives k/s taps per input channel on average (exactly, where s divides k; k = s:
# one): its forward fan_in is in/groups · Π k_i/s_i, not in/groups · Π k_i. Its fan_out (each input
# reaches out/groups · Π k_i outputs) does not depend on the stride.
_STRIDE_DOC = " ``stride``: the product of the strides (fan_in = in/groups · Π kernel_i / stride)."


#: The canonical order of stacked recurrent gates (torch's and cuDNN's), by which portable streams
#: index them: a Keras GRU kernel stacks (z, r, h) where torch stacks (r, z, n), so the same stream
#: gives each gate the same values in both (:func:`gate_order`).
CANONICAL_GATES: dict[str, tuple[str, ...]] = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def _need_rank(dims: tuple[int, ...], rank: int, kind: str) -> None:
    if len(dims) < rank:
        raise ValueError(f"Layer kind {kind!r} needs a weight of rank >= {rank}. Received: shape={dims}.")


_TORCH = Layout(in_axes=1, out_axes=0, name="torch")
_KERAS = Layout(in_axes=-2, out_axes=-1, name="keras")


def _torch_depthwise(dims: tuple[int, ...], p: dict[str, Any]) -> Layout:
    _need_rank(dims, 3, "torch.depthwise_conv")
    if dims[1] != 1:
        raise ValueError(
            f"A torch depthwise conv weight has shape (channels * multiplier, 1, *kernel). Received: shape={dims}."
        )
    if dims[0] % p["multiplier"]:
        raise ValueError(f"multiplier={p['multiplier']} does not divide the {dims[0]} output channels of shape {dims}.")
    return Layout(1, 0, out_groups=dims[0] // p["multiplier"], name="torch.depthwise_conv")


def _keras_depthwise(dims: tuple[int, ...], p: dict[str, Any]) -> Layout:
    _need_rank(dims, 3, "keras.depthwise_conv")
    return Layout(-2, -1, in_groups=max(dims[-2], 1), name="keras.depthwise_conv")


def _gated(framework: str, gates: int, in_axis: int, out_axis: int, label: str, order: tuple[str, ...] = ()) -> _Kind:
    stacked = f" ({', '.join(order)})" if order else ""
    return _Kind(
        framework,
        f"{label}: {gates} gate(s){stacked} stacked along the output axis; fans are per gate.",
        {},
        lambda d, p: Layout(in_axis, out_axis, out_groups=gates, name=label),
        _torch_native if framework == "torch" else _keras_native,
        order,
    )


def _fixed(
    framework: str,
    layout: Layout,
    doc: str,
    native: Callable[[tuple[int, ...]], Fans],
    rank: tuple[int, str] | None = None,
) -> _Kind:
    """A layer kind with one layout for every shape; ``rank``: the only rank its weights have, and
    the kind's name for the error."""
    if rank is None:
        return _Kind(framework, doc, {}, lambda d, p: layout, native)
    need, kind = rank

    def build(dims: tuple[int, ...], p: dict[str, Any]) -> Layout:
        if len(dims) != need:  # a dense kind on a stacked (experts, ...) tensor would fold the stack into the fans
            raise ValueError(
                f"Layer kind {kind!r} is for a weight of rank {need} ({doc.rstrip('.')}). Received: shape={dims}. For "
                "a stack of such weights (experts, heads), give initscale.Layout(in_axes=..., out_axes=..., "
                "batch_axes=...) with the stacking axes as batch axes."
            )
        return layout

    return _Kind(framework, doc, {}, build, native)


_KINDS: dict[str, _Kind] = {
    # generic layouts
    "torch": _fixed("torch", _TORCH, "torch weight layout (out, in, *kernel).", _torch_native),
    "keras": _fixed("keras", _KERAS, "Keras kernel layout (*kernel, in, out).", _keras_native),
    "flax": _fixed("jax", Layout(-2, -1, name="flax"), "Flax kernel layout (*kernel, in, out).", _jax_native),
    "jax": _fixed(
        "jax", Layout(-2, -1, name="jax"), "jax.nn.initializers default (in_axis=-2, out_axis=-1).", _jax_native
    ),
    # torch
    "torch.linear": _fixed("torch", _TORCH, "nn.Linear weight (out, in).", _torch_native, rank=(2, "torch.linear")),
    "torch.conv": _Kind(
        "torch",
        "nn.ConvNd weight (out, in/groups, *kernel); fan_out per group.",
        {"groups": 1},
        lambda d, p: Layout(1, 0, out_groups=p["groups"], name="torch.conv"),
        _torch_native,
    ),
    "torch.depthwise_conv": _Kind(
        "torch",
        "depthwise nn.ConvNd (groups=in_channels) weight (in*multiplier, 1, *kernel); per channel.",
        {"multiplier": 1},
        _torch_depthwise,
        _torch_native,
    ),
    "torch.conv_transpose": _Kind(
        "torch",
        "nn.ConvTransposeNd weight (in, out/groups, *kernel); forward fans, fan_in per group." + _STRIDE_DOC,
        {"groups": 1, "stride": 1},
        lambda d, p: Layout(0, 1, in_groups=p["groups"], name="torch.conv_transpose"),
        _torch_native,
        stride=True,
    ),
    "torch.embedding": _fixed(
        "torch",
        Layout(0, 1, name="torch.embedding"),
        "nn.Embedding weight (num_embeddings, embedding_dim): fan_in = vocabulary, fan_out = dim.",
        _torch_native,
    ),
    "torch.mha_in_proj": _Kind(
        "torch",
        "nn.MultiheadAttention packed in_proj_weight (3*embed, embed); fans per projection.",
        {},
        lambda d, p: Layout(1, 0, out_groups=3, name="torch.mha_in_proj"),
        _torch_native,
    ),
    "torch.lstm": _gated("torch", 4, 1, 0, "torch.lstm", ("i", "f", "g", "o")),
    "torch.gru": _gated("torch", 3, 1, 0, "torch.gru", ("r", "z", "n")),
    "torch.rnn": _gated("torch", 1, 1, 0, "torch.rnn"),
    # keras
    "keras.dense": _fixed("keras", _KERAS, "Dense kernel (in, out).", _keras_native, rank=(2, "keras.dense")),
    "keras.conv": _Kind(
        "keras",
        "ConvND kernel (*kernel, in/groups, out); fan_out per group.",
        {"groups": 1},
        lambda d, p: Layout(-2, -1, out_groups=p["groups"], name="keras.conv"),
        _keras_native,
    ),
    "keras.conv_transpose": _Kind(
        "keras",
        "ConvNDTranspose kernel (*kernel, out, in); forward fans." + _STRIDE_DOC,
        {"stride": 1},
        lambda d, p: Layout(-1, -2, name="keras.conv_transpose"),
        _keras_native,
        stride=True,
    ),
    "keras.depthwise_conv": _Kind(
        "keras",
        "DepthwiseConvND kernel (*kernel, in, multiplier); per channel.",
        {},
        _keras_depthwise,
        _keras_native,
    ),
    "keras.separable_conv.depthwise": _Kind(
        "keras",
        "SeparableConvND depthwise_kernel (*kernel, in, multiplier); per channel.",
        {},
        _keras_depthwise,
        _keras_native,
    ),
    "keras.separable_conv.pointwise": _fixed(
        "keras",
        _KERAS,
        "SeparableConvND pointwise_kernel (1.., in*multiplier, out).",
        _keras_native,
    ),
    "keras.embedding": _fixed(
        "keras",
        Layout(0, 1, name="keras.embedding"),
        "Embedding embeddings (input_dim, output_dim).",
        _keras_native,
    ),
    "keras.lstm": _gated("keras", 4, 0, 1, "keras.lstm", ("i", "f", "g", "o")),  # Keras names g "c"
    "keras.gru": _gated("keras", 3, 0, 1, "keras.gru", ("z", "r", "n")),  # Keras names n "h"
    "keras.simple_rnn": _gated("keras", 1, 0, 1, "keras.simple_rnn"),
    # flax (linen and nnx share these layouts)
    "flax.dense": _fixed(
        "jax", Layout(-2, -1, name="flax.dense"), "Dense/Linear kernel (in, out).", _jax_native, rank=(2, "flax.dense")
    ),
    "flax.conv": _Kind(
        "jax",
        "Conv kernel (*kernel, in/groups, out); fan_out per feature group.",
        {"groups": 1},
        lambda d, p: Layout(-2, -1, out_groups=p["groups"], name="flax.conv"),
        _jax_native,
    ),
    "flax.conv_transpose": _Kind(
        "jax",
        "ConvTranspose kernel (*kernel, in, out); forward fans." + _STRIDE_DOC,
        {"stride": 1},
        lambda d, p: Layout(-2, -1, name="flax.conv_transpose"),
        _jax_native,
        stride=True,
    ),
    "flax.embed": _Kind(
        "jax",
        "Embed embedding (num_embeddings, features); native=True gives jax's fans with out_axis=0 (fan_in = features).",
        {},
        lambda d, p: Layout(0, 1, name="flax.embed"),
        lambda d: _jax_native(d, in_axis=-2, out_axis=0),
    ),
    "flax.lstm": _fixed(
        "jax",
        Layout(-2, -1, name="flax.lstm"),
        "LSTMCell gate kernels: flax keeps one (in, hidden) Dense per gate, so fans are per gate.",
        _jax_native,
    ),
}


def names() -> list[str]:
    """Every named layout and layer kind, sorted."""
    return sorted(_KINDS)


def _kind(name: Any) -> _Kind:
    """The layer kind ``name``; an unknown name raises ValueError listing every valid one and,
    where some are close (a typo), ``Did you mean ...?`` first."""
    try:
        return _KINDS[_validate.choice("layout", name, _KINDS)]
    except ValueError as err:
        import difflib  # only on the error path: keeps `import initscale` light

        close = difflib.get_close_matches(name, sorted(_KINDS), n=3, cutoff=0.6) if isinstance(name, str) else []
        if not close:
            raise
        raise ValueError(f"Unknown layout {name!r}. Did you mean {', '.join(repr(c) for c in close)}? {err}") from None


def describe_kind(name: str) -> str:
    """One line on what a named layer kind is and how its fans are counted."""
    return _kind(name).doc


def kind_options(name: str) -> dict[str, Any]:
    """The arguments layer kind ``name`` takes and their defaults (every kind also takes ``native``,
    default False: the framework's own fans instead of the forward-pass ones).

    Example:
        >>> kind_options("torch.conv")
        {'groups': 1}
    """
    return dict(_kind(name).defaults)


def kind_framework(name: str) -> str:
    """The framework whose weight layout layer kind ``name`` describes ("torch", "keras" or "jax")."""
    return _kind(name).framework


@dataclass(frozen=True)
class LayerKind:
    """A named layer kind with its parameters, e.g. ``LayerKind("torch.conv", (("groups", 4),))``.

    ``native=True`` reproduces the framework's own fan rule for this weight instead of the
    forward-pass fans. Build one with :func:`get` or a string ``"torch.conv:groups=4"``.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    native: bool = False

    def __post_init__(self) -> None:
        kind = _kind(self.name)
        given = dict(self.params)
        unknown = set(given) - set(kind.defaults)
        if unknown:
            valid = ", ".join(repr(k) for k in sorted(kind.defaults)) or "none besides native"
            raise ValueError(f"Layer kind {self.name!r} takes no argument {sorted(unknown)[0]!r}; valid: {valid}.")
        merged = {**kind.defaults, **given}
        for key, value in merged.items():
            merged[key] = _validate.integer(key, value, minimum=1)
        object.__setattr__(self, "params", tuple(sorted(merged.items())))
        if not isinstance(self.native, bool):
            raise TypeError(f"Argument `native` must be a bool. Received: native={self.native!r}.")

    def __str__(self) -> str:
        params = dict(self.params)
        if _KINDS[self.name].stride and params.get("stride") == 1:
            del params["stride"]  # the usual case, named as before strides were read
        if self.native:
            params["native"] = "true"
        return format_named(self.name, params)

    def layout(self, shape: Sequence[int]) -> Layout:
        """The concrete :class:`Layout` of a weight of this ``shape`` (forward-pass convention)."""
        return _KINDS[self.name].build(_validate.shape("shape", shape), dict(self.params))

    def fans(self, shape: Sequence[int]) -> Fans:
        """Forward fans, or with ``native=True`` the framework's own fans, of ``shape``."""
        dims = _validate.shape("shape", shape)
        if self.native:
            return _KINDS[self.name].native(dims)
        fans = self.layout(dims).fans(dims)
        stride = dict(self.params).get("stride", 1) if _KINDS[self.name].stride else 1
        if stride == 1:
            return fans
        return Fans(fans.fan_in / stride, fans.fan_out, fans.receptive_field)

    @property
    def gates(self) -> tuple[str, ...]:
        """The stacked recurrent gates in this framework's order (empty for other kinds)."""
        return _KINDS[self.name].gates


LayoutLike = str | Layout | LayerKind


def get(name: str, **params: Any) -> LayerKind:
    """The layer kind ``name`` with its parameters (``native=True`` for framework fans)."""
    native = params.pop("native", False)
    return LayerKind(name, tuple(params.items()), native)


def gate_order(layout: LayoutLike) -> tuple[int, ...] | None:
    """For a layer kind that stacks recurrent gates in another order than :data:`CANONICAL_GATES`,
    the canonical position of each of its gate blocks; None when the order is canonical.

    Example:
        >>> gate_order("keras.gru")  # Keras (z, r, h): z is canonical gate 1, r gate 0
        (1, 0, 2)
        >>> gate_order("torch.gru") is None
        True
    """
    kind = resolve(layout)
    gates = kind.gates if isinstance(kind, LayerKind) else ()
    canonical = next((order for order in CANONICAL_GATES.values() if sorted(order) == sorted(gates)), gates)
    positions = tuple(canonical.index(g) for g in gates)
    return None if positions == tuple(range(len(gates))) else positions


#: The name suffix of a layout whose out axis interleaves two projections ([g0, u0, g1, u1, ...]:
#: GPT-OSS's gate_up_proj in transformers and keras-hub). Its fans are per projection; an
#: orthogonal block per projection is not a block of the tensor, so ``reinit`` refuses one.
INTERLEAVED_GATES = ":interleaved"


@functools.cache
def experts_layout(family: str, in_axis: int, out_axis: int, blocks: int = 1, interleaved: bool = False) -> Layout:
    """A stack of per-expert matrices, (experts, ...) with the expert axis 0 a batch axis and
    ``blocks`` projections stacked on the out axis (gate and up: 2), named ``family`` (plus
    ``:gates=2`` and :data:`INTERLEAVED_GATES` where they apply).

    Example:
        >>> experts_layout("hf.experts", 2, 1, blocks=2).fans((8, 28672, 4096))
        Fans(fan_in=4096, fan_out=14336, receptive_field=1)
    """
    name = family + (f":gates={blocks}" if blocks > 1 else "") + (INTERLEAVED_GATES if interleaved else "")
    return Layout(in_axis, out_axis, batch_axes=0, out_groups=blocks, name=name)


def einsum_layout(equation: str | None, name: str | None = None) -> Layout | None:
    """In, out and batch axes of an einsum's weight from its equation (``"abc,cde->abde"``, the
    weight the second operand): weight axes contracted with the input are in axes, those that
    reach only the output are out axes, those in both input and output are batch axes. None for
    an equation that is not ``x,w->y``, a weight written with ``...``, or one with no in or out axis.

    Example:
        >>> einsum_layout("BTD,NDH->BTNH").fans((4, 32, 8))  # gemma's q_einsum: (heads, d, head_dim)
        Fans(fan_in=32, fan_out=32, receptive_field=1)
    """
    try:
        inputs, output = str(equation).replace(" ", "").split("->")
        x, kernel = inputs.split(",")
    except ValueError:
        return None
    if "." in kernel or len(set(kernel)) != len(kernel):
        return None
    ins = tuple(i for i, c in enumerate(kernel) if c in x and c not in output)
    outs = tuple(i for i, c in enumerate(kernel) if c in output and c not in x)
    batch = tuple(i for i, c in enumerate(kernel) if c in output and c in x)
    if not ins or not outs:
        return None
    return Layout(ins, outs, batch, name=name or f"einsum[{equation}]")


def stride_product(strides: int | Sequence[int] | None, spatial: int) -> int:
    """The product of a conv's strides over its ``spatial`` kernel axes (an int stride applies to
    each; None is 1): the ``stride`` of the transposed-conv layer kinds.

    Example:
        >>> stride_product((2, 2), 2), stride_product(2, 3), stride_product(None, 2)
        (4, 8, 1)
    """
    if strides is None:
        return 1
    if isinstance(strides, int):
        return int(int(strides) ** spatial)
    return math.prod(int(s) for s in strides)


def resolve(layout: LayoutLike) -> Layout | LayerKind:
    """Turn a name such as ``"torch.conv:groups=4"`` into a LayerKind; pass objects through."""
    if isinstance(layout, (Layout, LayerKind)):
        return layout
    if isinstance(layout, str):
        name, params = parse_named(layout)
        return get(name, **params)
    raise TypeError(
        f"Argument `layout` must be a layout name (see initscale.layouts.names()), a Layout or a "
        f"LayerKind. Received: layout={layout!r}."
    )


def layout_to_config(layout: LayoutLike | None) -> Any:
    """A JSON-safe form of ``layout`` (names and layer kinds as their strings, a :class:`Layout`
    as a dict of its fields); :func:`layout_from_config` reads it back."""
    if layout is None or isinstance(layout, str):
        return layout
    if isinstance(layout, LayerKind):
        return str(layout)
    return {
        "in_axes": list(layout.in_axes),
        "out_axes": list(layout.out_axes),
        "batch_axes": list(layout.batch_axes),
        "in_groups": layout.in_groups,
        "out_groups": layout.out_groups,
    }


def layout_from_config(config: Any) -> LayoutLike | None:
    """The inverse of :func:`layout_to_config`."""
    if isinstance(config, dict):
        return Layout(**config)
    if config is None or isinstance(config, (str, Layout, LayerKind)):
        return config
    raise TypeError(f"A layout config must be a name, a dict of Layout fields or None. Received: {config!r}.")


def compute_fans(shape: Sequence[int], layout: LayoutLike) -> Fans:
    """Fans of a weight of ``shape`` under ``layout`` (a name, Layout or LayerKind).

    Example:
        >>> compute_fans((256, 64), "torch.lstm")   # weight_ih of an LSTM, hidden 64, input 64
        Fans(fan_in=64, fan_out=64, receptive_field=1)
    """
    return resolve(layout).fans(shape)
