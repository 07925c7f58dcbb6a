"""Portable streams with TensorFlow ops: what Keras 3 on TensorFlow and tf_keras both draw through.

The stream is :func:`initscale.streams.draw`'s, in two parts: the integer stage to the uniforms
in the weight's own axes (:func:`initscale.streams.layout_uniforms`: Philox in int64, one multiply
per product), compiled by XLA from a shape's second draw (:func:`uniform_program`; the first is
drawn eagerly, which is faster than compiling for it once: the same integers either way), and
the float stage (:func:`initscale.streams.finish`), always TensorFlow's eager kernels, so every
call of a stream gives the same values: XLA contracts a multiply and an add into one FMA and
evaluates ``ndtri`` with other roundings than the eager kernel (different in about half of the
float64 values of a normal). TensorFlow casts float64 to float16/bfloat16 through float32 with
two roundings, so those go through float32 rounded to odd (:func:`initscale._shared.round_to_odd`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import tensorflow as tf

from initscale._shared import round_to_odd
from initscale.distributions import Distribution
from initscale.streams import finish, layout_uniforms

from ._keras_common import tf_odd_ops

__all__ = ["OPS", "T", "stream_uniforms", "uniform_program", "values"]


class T:
    """A TensorFlow tensor with Python's operators mapped to TensorFlow's ops (its tensors lack
    ``>>``, ``&`` and ``reshape``), so the backend-neutral code of :mod:`initscale.streams` runs on
    it; a Python scalar operand becomes a tensor of this one's dtype (never float32 or int32)."""

    __slots__ = ("x",)

    def __init__(self, x: Any) -> None:
        self.x = x

    def _raw(self, other: Any) -> Any:
        return other.x if isinstance(other, T) else tf.constant(other, dtype=self.x.dtype)

    def __add__(self, other: Any) -> T:
        return T(tf.add(self.x, self._raw(other)))

    def __radd__(self, other: Any) -> T:
        return T(tf.add(self._raw(other), self.x))

    def __sub__(self, other: Any) -> T:
        return T(tf.subtract(self.x, self._raw(other)))

    def __rsub__(self, other: Any) -> T:
        return T(tf.subtract(self._raw(other), self.x))

    def __mul__(self, other: Any) -> T:
        return T(tf.multiply(self.x, self._raw(other)))

    def __rmul__(self, other: Any) -> T:
        return T(tf.multiply(self._raw(other), self.x))

    def __truediv__(self, other: Any) -> T:
        return T(tf.divide(self.x, self._raw(other)))

    def __rtruediv__(self, other: Any) -> T:
        return T(tf.divide(self._raw(other), self.x))

    def __neg__(self) -> T:
        return T(tf.negative(self.x))

    def __rshift__(self, other: Any) -> T:
        return T(tf.bitwise.right_shift(self.x, self._raw(other)))

    def __lshift__(self, other: Any) -> T:
        return T(tf.bitwise.left_shift(self.x, self._raw(other)))

    def __and__(self, other: Any) -> T:
        return T(tf.bitwise.bitwise_and(self.x, self._raw(other)))

    def __or__(self, other: Any) -> T:
        return T(tf.bitwise.bitwise_or(self.x, self._raw(other)))

    def __xor__(self, other: Any) -> T:
        return T(tf.bitwise.bitwise_xor(self.x, self._raw(other)))

    __rxor__ = __xor__  # bitwise operators commute
    __rand__ = __and__
    __ror__ = __or__

    def __getitem__(self, index: Any) -> T:
        return T(self.x[index])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    def reshape(self, *shape: Any) -> T:
        return T(tf.reshape(self.x, shape[0] if len(shape) == 1 else shape))

    def clip(self, low: float, high: float) -> T:
        return T(tf.clip_by_value(self.x, tf.constant(low, self.x.dtype), tf.constant(high, self.x.dtype)))


def _store(values: T, dtype: str) -> T:
    x = values.x
    if dtype in ("float16", "bfloat16") and x.dtype == tf.float64:
        x = round_to_odd(x, tf_odd_ops())  # TensorFlow's float64 → float16 cast rounds twice
    return T(tf.cast(x, dtype))


OPS = SimpleNamespace(
    wide=True,
    const=None,
    arange=lambda n: T(tf.range(n, dtype=tf.int64)),
    stack=lambda arrays: T(tf.stack([a.x for a in arrays], axis=-1)),
    take=lambda array, index: T(tf.gather(array.x, index.x, batch_dims=index.x.shape.rank - 1)),
    to_float=lambda odd: T(tf.cast(odd.x, tf.float64)),
    ndtri=lambda u: T(tf.math.ndtri(u.x)),
    log=lambda t: T(tf.math.log(t.x)),
    sqrt=lambda t: T(tf.math.sqrt(t.x)),
    store=_store,
    permute=lambda x, axes: T(tf.transpose(x.x, axes)),
    take_axis=lambda x, index, axis: T(tf.gather(x.x, tf.constant(list(index), tf.int32), axis=axis)),
)
""":class:`initscale.streams.StreamOps` on :class:`T`: int64 counters, a float64 stage."""


def _uniforms(key: Any, shape: tuple[int, ...], strides: tuple[int, ...], gates: Any) -> Any:
    traced = not isinstance(key[0], int)  # key words as tensors: the round keys' Weyl steps as int64 too
    ops = SimpleNamespace(**{**vars(OPS), "const": lambda k: T(tf.constant(k, tf.int64))}) if traced else OPS
    return layout_uniforms(key, shape, strides, ops, gates=gates).x


@functools.lru_cache(maxsize=256)
def uniform_program(
    shape: tuple[int, ...], strides: tuple[int, ...], gates: tuple[int, tuple[int, ...]] | None
) -> Callable[[Any], Any]:
    """One XLA program per (shape, layout) for the integer stage, the key an input: eager
    TensorFlow runs the ~200 integer ops of Philox one full pass over memory each. It ends at
    the uniforms (exact: an odd integer times 2⁻²⁴), so every distribution and dtype of a shape
    shares it, and no float operation of the transform is compiled."""

    def program(key: Any) -> Any:
        return _uniforms((T(key[0]), T(key[1])), shape, strides, gates)

    compiled: Callable[[Any], Any] = tf.function(
        program, jit_compile=True, autograph=False, input_signature=[tf.TensorSpec([2], tf.int64)]
    )
    return compiled


def stream_uniforms(
    key: tuple[int, int],
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    gates: tuple[int, Sequence[int]] | None,
    seen: set[tuple[Any, ...]],
    program: Callable[..., Callable[[Any], Any]] = uniform_program,
) -> Any:
    """The uniforms of a stream in the weight's axes: eagerly the first time a (shape, strides,
    gates) is drawn (recorded in ``seen``), then by its compiled ``program``."""
    order = None if gates is None else (gates[0], tuple(gates[1]))
    signature = (shape, strides, order)
    if signature in seen:
        return program(*signature)(tf.constant(key, tf.int64))
    seen.add(signature)
    return _uniforms(key, shape, strides, order)


def values(dist: Distribution, u: Any, dtype: str) -> Any:
    """The float stage (:func:`initscale.streams.finish`) on uniforms ``u``, eagerly: TensorFlow's
    ndtri, clipped to the bounds that hold in ``dtype`` and rounded once to it."""
    return finish(dist, T(u), dtype, OPS).x
