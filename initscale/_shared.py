"""The sampling algorithms every adapter shares, written once against a few framework ops.

Each function takes the array library's handful of operations as an ``ops`` namespace (as einops
does: the adapter supplies them), so NumPy, torch and JAX run the same steps in the same order and
give the same bits. The compiled kernels keep their own forms of the same steps (named beside
each function): C in :mod:`initscale._kernels.cpu`, Triton in :mod:`initscale._kernels.gpu`.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["HaarOps", "OddOps", "lower_tail", "orthogonal", "round_to_odd"]


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

    Compiled twins: ``to_odd`` in the C source of :mod:`initscale._kernels.cpu` and the
    float16/bfloat16 store of :mod:`initscale._kernels.gpu`."""
    t = ops.narrow(values)
    over = abs(ops.widen(t)) > abs(values)  # rounded away from zero: step back toward it
    t = ops.where(over, ops.toward_zero(t), t)
    return ops.set_low_bit(t, ops.widen(t) != values)


class HaarOps(Protocol):
    """What :func:`orthogonal` needs of an array library; arrays also take ``*``, ``[..., None, :]``
    and ``.reshape``. Optional: ``scale_(x, factor)``, ``x * factor`` written into ``x`` (torch's
    ops have it: the phases and the gain then take no copy of the weight)."""

    def normal(self, shape: tuple[int, int, int]) -> Any:
        """Standard normal draws of ``shape`` in the working dtype, from the caller's generator."""

    def qr(self, g: Any) -> tuple[Any, Any]:
        """The reduced QR of a stack of matrices."""

    def diagonal(self, r: Any) -> Any:
        """The diagonals of a stack of matrices (the last two axes)."""

    def phase(self, d: Any) -> Any:
        """``d/|d|``: the signs of a real ``d``, the phases of a complex one."""

    def swap(self, q: Any) -> Any:
        """The last two axes swapped."""

    def permute(self, x: Any, axes: tuple[int, ...]) -> Any:
        """``x`` with its axes in the order ``axes``."""


def orthogonal(
    gain: float, blocks: tuple[tuple[int, ...], tuple[int, ...]], shape: tuple[int, ...], ops: HaarOps
) -> Any:
    """``gain`` times a Haar-random matrix with orthonormal rows or columns per independent block of a
    weight of ``shape``, ``blocks`` its :meth:`initscale.Layout.blocks`: one (out × in·receptive)
    block per (batch, out group, in group), laid out back in the weight's own axes.

    Each block is Q of the QR of a Gaussian (big × small) matrix with the signs (phases) of R's
    diagonal moved into Q, which makes Q Haar-distributed (Mezzadri 2007), transposed when the block
    is wider than tall."""
    order, (nb, og, o, ig, i, rf) = blocks
    rows, cols = o, i * rf
    big, small = max(rows, cols), min(rows, cols)
    q, r = ops.qr(ops.normal((nb * og * ig, big, small)))
    scale = getattr(ops, "scale_", None)  # optional (HaarOps): the same products, in place
    phases = ops.phase(ops.diagonal(r))[..., None, :]
    q = q * phases if scale is None else scale(q, phases)  # Haar: fix the signs (phases)
    if rows < cols:
        q = ops.swap(q)
    scaled = gain * q if scale is None else scale(q, gain)
    # blocks (B·og·ig, o, i·rf) -> (B, og, ig, o, i, rf) -> (B, og, o, ig, i, rf) -> the permuted weight
    stacked = ops.permute(scaled.reshape(nb, og, ig, o, i, rf), (0, 1, 3, 2, 4, 5))
    permuted = stacked.reshape(tuple(shape[a] for a in order))
    return ops.permute(permuted, tuple(sorted(range(len(order)), key=order.__getitem__)))
