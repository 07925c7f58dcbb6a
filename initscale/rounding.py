"""Bounds that survive rounding: the support of a bounded distribution in a given float format.

A truncated normal on [a, b] or a uniform on [low, high] sampled in float32 and stored in
bfloat16 can land *outside* its bounds: 0.1 is not a bfloat16, and a draw just below 0.1 rounds
up to 0.10009765625. Of 4,194,304 fp32 draws cast to bfloat16 (torch and JAX alike), 1,379
truncated-normal draws on [−0.1, 0.1] and 6,235 uniform draws did. initscale's samplers
clip, in the sampling precision, to the bounds *representable in the weight's dtype* — the
largest value of the format at or below ``high`` and the smallest at or above ``low`` — so the
stored weight never leaves [low, high]. The clip moves only draws that lie within one unit in the
last place of a bound.

Example:
    >>> representable_bounds(-0.1, 0.1, "bfloat16")
    (-0.099609375, 0.099609375)
    >>> round_down(0.1, "float32") < 0.1 < round_up(0.1, "float32")
    True
"""

from __future__ import annotations

import functools
import math
import struct

from .distributions import Distribution, TruncatedNormalDist, UniformDist

__all__ = ["FORMATS", "clip_bounds", "representable_bounds", "round_down", "round_up"]

#: The float formats initscale samples, by their NumPy/torch/JAX/Keras name.
FORMATS: tuple[str, ...] = ("bfloat16", "float16", "float32", "float64")
_PACK = {"float16": ("<e", "<H"), "float32": ("<f", "<I")}


def _format(dtype: str) -> str:
    name = str(dtype).rsplit(".", 1)[-1]  # "torch.bfloat16" -> "bfloat16"
    if name not in FORMATS:
        raise ValueError(f"Argument `dtype` must be one of {', '.join(map(repr, FORMATS))}. Received: dtype={dtype!r}.")
    return name


def _step_down(value: float, fmt: str) -> float:
    """The next value of ``fmt`` below ``value`` (a value of ``fmt``)."""
    if fmt == "bfloat16":
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        unit = 1 << 16
    else:
        bits = struct.unpack(_PACK[fmt][1], struct.pack(_PACK[fmt][0], value))[0]
        unit = 1
    sign = 1 << (31 if fmt == "bfloat16" else 15 if fmt == "float16" else 31)
    if value == 0.0:
        bits = sign | unit  # below ±0: the negative smallest subnormal
    elif value > 0.0:
        bits -= unit
    else:
        bits += unit
    if fmt == "bfloat16":
        return float(struct.unpack("<f", struct.pack("<I", bits))[0])
    return float(struct.unpack(_PACK[fmt][0], struct.pack(_PACK[fmt][1], bits))[0])


def round_down(x: float, dtype: str) -> float:
    """The largest value of the float format ``dtype`` at or below ``x`` (``x`` itself for
    float64, infinities and NaN)."""
    fmt = _format(dtype)
    x = float(x)
    if fmt == "float64" or not math.isfinite(x):
        return x
    if fmt == "bfloat16":
        below = round_down(x, "float32")  # every bfloat16 is a float32: floor to float32 first
        bits = struct.unpack("<I", struct.pack("<f", below))[0]
        cut = float(struct.unpack("<f", struct.pack("<I", bits & 0xFFFF0000))[0])  # toward zero
        return cut if cut <= below else _step_down(cut, fmt)
    try:
        nearest = float(struct.unpack(_PACK[fmt][0], struct.pack(_PACK[fmt][0], x))[0])
    except OverflowError:  # beyond the format's range: its largest finite value, or -inf
        nearest = math.copysign(65504.0 if fmt == "float16" else 3.4028234663852886e38, x)
        return nearest if x > 0 else -math.inf
    return nearest if nearest <= x else _step_down(nearest, fmt)


def round_up(x: float, dtype: str) -> float:
    """The smallest value of ``dtype`` at or above ``x`` (float formats are sign-symmetric)."""
    return -round_down(-float(x), dtype)


@functools.lru_cache(maxsize=1024)  # samplers ask on every draw; the answer depends on these three only
def representable_bounds(low: float, high: float, dtype: str) -> tuple[float, float]:
    """[low, high] shrunk to the nearest values of ``dtype`` inside it."""
    return round_up(low, dtype), round_down(high, dtype)


def clip_bounds(dist: Distribution, dtype: str) -> tuple[float, float] | None:
    """The clip that keeps ``dist``'s draws inside its support once stored as ``dtype``: the
    representable bounds of a uniform or truncated normal, None for unbounded distributions."""
    if isinstance(dist, (UniformDist, TruncatedNormalDist)):
        return representable_bounds(*dist.bounds, dtype)
    return None
