"""The sampling algorithms every adapter shares, written once against a few framework ops.

Each function takes the array library's handful of operations as an ``ops`` namespace (as einops
does: the adapter supplies them), so NumPy, torch and JAX run the same steps in the same order and
give the same bits. The compiled kernels keep their own forms of the same steps (named beside
each function): C in :mod:`initscale._stream_kernel`, Triton in ``initscale.adapters._triton_sampler``.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["OddOps", "lower_tail", "round_to_odd"]


def lower_tail(a: float, b: float) -> tuple[float, float, bool]:
    """``[a, b]`` (bounds in σ units) as the interval an inverse-CDF draw samples: an interval in the
    upper tail (a > 0) as its mirror ``[−b, −a]``, where Φ⁻¹ keeps full relative precision, and
    whether it was mirrored (the draw is then negated: ``loc − σ·z``).

    The C kernel's twin is ``kernel_params``'s parameters (:func:`initscale.streams.kernel_params`
    passes the mirrored interval and −σ); :func:`initscale.normal_math.truncated_plan` mirrors its
    one-sided, narrow and far-tail intervals by ``a + b > 0`` instead."""
    return (-b, -a, True) if a > 0.0 else (a, b, False)


class OddOps(Protocol):
    """What :func:`round_to_odd` needs of an array library (float64 arrays in, float32 out)."""

    def narrow(self, x: Any) -> Any:
        """float64 → float32, rounded to nearest."""

    def widen(self, x: Any) -> Any:
        """float32 → float64 (exact)."""

    def where(self, condition: Any, x: Any, y: Any) -> Any: ...

    def toward_zero(self, x: Any) -> Any:
        """The next float32 toward zero (``nextafter(x, 0)``)."""

    def set_low_bit(self, x: Any, mask: Any) -> Any:
        """``x`` (float32) with the lowest bit of its encoding set where ``mask``; may work in place."""


def round_to_odd(values: Any, ops: OddOps) -> Any:
    """float64 → float32 rounded to odd (toward zero, lowest bit set where inexact): cast on to
    float16/bfloat16 (nearest even), it gives the float64 value rounded once, as NumPy's direct
    cast does. torch, TensorFlow and XLA cast float64 to float16 through float32 with two
    roundings, which misrounded 31 of 530,965 float16 values of a test weight.

    Compiled twins: ``to_odd`` in the C source of :mod:`initscale._stream_kernel` and the
    float16/bfloat16 store of ``initscale.adapters._triton_sampler``."""
    t = ops.narrow(values)
    over = abs(ops.widen(t)) > abs(values)  # rounded away from zero: step back toward it
    t = ops.where(over, ops.toward_zero(t), t)
    return ops.set_low_bit(t, ops.widen(t) != values)
