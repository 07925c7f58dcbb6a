"""Backend-neutral initializer specs: immutable, validated when built, analytic.

A spec says *what* distribution a weight should have; given the weight's :class:`~initscale.Fans`
it resolves to an exact :mod:`~initscale.distributions` object, from which every number follows
(variance, std, mean, bounds, the sampler's own parameter) and which every adapter draws.

:class:`VarianceScaling` is the family behind He, Glorot and LeCun (Glorot & Bengio 2010,
He et al. 2015, LeCun et al. 1998): with n the fan chosen by ``mode``,

.. math::

    \\operatorname{Var}[W] = \\frac{\\text{scale}}{n}

- ``truncated_normal``: N(0, σ²) truncated to ±``truncation``·σ with
  σ = √(scale/n) / s(t), where s(t) is the std of a standard normal truncated to ±t
  (s(2) = 0.87962566…), so the variance after truncation is exactly scale/n. With
  ``corrected=False``, σ = √(scale/n) as TF1's contrib initializer, prettytensor and tfjs do,
  and the variance is s(t)²·scale/n (0.774·scale/n for t = 2).
- ``normal``: N(0, scale/n), untruncated.
- ``uniform``: U(−√(3·scale/n), √(3·scale/n)).

Example:
    >>> import initscale
    >>> he = initscale.VarianceScaling(2.0, "fan_in", "truncated_normal")
    >>> fans = initscale.compute_fans((3, 3, 64, 128), "keras")
    >>> round(he.variance(fans), 8), round(he.sampler_parameter(fans), 6)
    (0.00347222, 0.066989)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from . import _validate, normal_math
from .distributions import (
    ConstantDist,
    Distribution,
    NormalDist,
    OrthogonalDist,
    TruncatedNormalDist,
    UniformDist,
)
from .fans import MODES, Fans, LayoutLike, resolve

__all__ = [
    "DISTRIBUTIONS",
    "SPEC_FORMAT_VERSION",
    "Constant",
    "Description",
    "Normal",
    "Ones",
    "Orthogonal",
    "Spec",
    "TruncatedNormal",
    "Uniform",
    "VarianceScaling",
    "Zeros",
    "from_dict",
]

DistributionName = Literal["truncated_normal", "normal", "uniform"]
DISTRIBUTIONS: tuple[str, ...] = ("truncated_normal", "normal", "uniform")
BOUNDS_UNITS: tuple[str, ...] = ("std", "absolute")
SPEC_FORMAT_VERSION = 1
_INF_TO_TEXT = {math.inf: "inf", -math.inf: "-inf"}
_TEXT_TO_INF = {"inf": math.inf, "-inf": -math.inf}


def _coerce(spec: Any, name: str, value: Any) -> None:
    object.__setattr__(spec, name, value)


NATIVE: tuple[str, ...] = ("torch",)  # the frameworks whose own sampler a spec can ask for (``native``)


def _check_native(native: Any) -> str | None:
    if native is not None and native not in NATIVE:
        raise ValueError(
            f"Argument `native` must be None or one of {', '.join(repr(n) for n in NATIVE)}. "
            f"Received: native={native!r}."
        )
    return native  # type: ignore[no-any-return]


def _native_config(native: str | None) -> dict[str, str]:
    return {} if native is None else {"native": native}


@dataclass(frozen=True)
class Description:
    """Every number a spec implies for one weight shape and layout."""

    spec: Spec
    shape: tuple[int, ...]
    layout: str
    fans: Fans
    distribution: Distribution
    variance: float
    std: float
    mean: float
    bounds: tuple[float, float] | None
    sampler_parameter: float

    def __str__(self) -> str:
        bounds = "unbounded" if self.bounds is None else f"[{self.bounds[0]:.6g}, {self.bounds[1]:.6g}]"
        rows = [
            ("spec", repr(self.spec)),
            ("shape", str(self.shape)),
            ("layout", self.layout),
            ("fan_in", f"{self.fans.fan_in:g}"),
            ("fan_out", f"{self.fans.fan_out:g}"),
            ("receptive_field", f"{self.fans.receptive_field:g}"),
            ("distribution", type(self.distribution).__name__),
            ("variance", f"{self.variance:.6g}"),
            ("std", f"{self.std:.6g}"),
            ("mean", f"{self.mean:.6g}"),
            ("bounds", bounds),
            ("sampler_parameter", f"{self.sampler_parameter:.6g}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


class Spec:
    """Base of every spec: analytic numbers from the resolved distribution, and serialization."""

    fixed_scale: ClassVar[bool] = True  # False where the distribution depends on the fans

    def resolve(self, fans: Fans | None = None) -> Distribution:
        """The exact distribution this spec draws for a weight with these ``fans``."""
        raise NotImplementedError

    def _needs(self, fans: Fans | None) -> Fans:
        if fans is None:
            raise ValueError(
                f"{type(self).__name__} depends on the weight's fans: pass fans=initscale.compute_fans(shape, layout)."
            )
        if not isinstance(fans, Fans):
            raise TypeError(f"Argument `fans` must be an initscale.Fans. Received: fans={fans!r}.")
        return fans

    def variance(self, fans: Fans | None = None) -> float:
        """Var[W] of every element (about the mean)."""
        return self.resolve(fans).variance

    def std(self, fans: Fans | None = None) -> float:
        """√Var[W]: the std of the drawn values (after any truncation)."""
        return math.sqrt(self.resolve(fans).variance)

    def bounds(self, fans: Fans | None = None) -> tuple[float, float] | None:
        """The support ``(low, high)``, or None when unbounded."""
        return self.resolve(fans).bounds

    def sampler_parameter(self, fans: Fans | None = None) -> float:
        """The number the sampler is called with: the pre-truncation sigma of a truncated
        normal, the std of a normal, the limit of a symmetric uniform (half-width), the value
        of a constant, the gain of an orthogonal."""
        return self.resolve(fans).sampler_parameter

    def describe(self, shape: Sequence[int], layout: LayoutLike) -> Description:
        """All the numbers for one weight ``shape`` under ``layout``.

        Example:
            >>> import initscale
            >>> print(initscale.presets.get("he_uniform").describe((128, 64), "torch"))  # doctest: +ELLIPSIS
            spec               VarianceScaling(scale=2.0, mode='fan_in', distribution='uniform', ...)
            shape              (128, 64)
            layout             torch
            fan_in             64
            fan_out            128
            receptive_field    1
            distribution       UniformDist
            variance           0.03125
            std                0.176777
            mean               0
            bounds             [-0.306186, 0.306186]
            sampler_parameter  0.306186
        """
        fan_layout = resolve(layout)
        fans = fan_layout.fans(shape)
        dist = self.resolve(fans)
        return Description(
            spec=self,
            shape=tuple(shape),
            layout=str(fan_layout),
            fans=fans,
            distribution=dist,
            variance=dist.variance,
            std=math.sqrt(dist.variance),
            mean=dist.mean,
            bounds=dist.bounds,
            sampler_parameter=dist.sampler_parameter,
        )

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this spec: ``type(spec)(**spec.config())``
        (``native`` only where it is set)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if not (f.name == "native" and getattr(self, f.name) is None)
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe, versioned dict; :func:`from_dict` rebuilds an equal spec.

        Infinite bounds are written as the strings ``"inf"`` / ``"-inf"`` (strict JSON has no
        infinity)."""
        config = {k: _INF_TO_TEXT.get(v, v) if isinstance(v, float) else v for k, v in self.config().items()}
        return {"version": SPEC_FORMAT_VERSION, "kind": type(self).__name__, "config": config}


@dataclass(frozen=True, repr=False)
class VarianceScaling(Spec):
    """Var[W] = scale / n, n the fan chosen by ``mode`` (see the module docstring).

    Args:
        scale: the numerator, > 0 (1 for Glorot/LeCun, 2 for He, gain² in torch terms).
        mode: ``"fan_in"``, ``"fan_out"``, ``"fan_avg"`` ((fan_in + fan_out)/2) or
            ``"fan_geo_avg"`` (√(fan_in·fan_out)).
        distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.
        truncation: truncated normal bounds in pre-truncation sigmas, > 0 (2 in Keras/JAX/TF).
        corrected: for ``truncated_normal``, divide sigma by the truncated std so that the final
            variance is exactly scale/n (True, as Keras and JAX) or not (False, as TF1 contrib,
            prettytensor and tfjs).
        native: None (any sampler: in torch on the CPU, initscale's compiled multi-threaded one),
            or ``"torch"``: drawn in torch with torch's own sampler calls in ``torch.nn.init``'s
            order, so the same generator gives ``torch.nn.init``'s values (the ``torch.*`` presets
            set it). It changes no number of the distribution, but makes the spec unequal to one
            without it. Normal, TruncatedNormal and Uniform take it too.

    A fan of 0 (a zero-size weight, nothing to draw) counts as 1, as Keras does.
    """

    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"
    truncation: float = 2.0
    corrected: bool = True
    native: str | None = None

    fixed_scale: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_native(self.native)
        _coerce(self, "scale", _validate.real("scale", self.scale, positive=True))
        _validate.choice("mode", self.mode, MODES)
        _validate.choice("distribution", self.distribution, DISTRIBUTIONS)
        _coerce(self, "truncation", _validate.real("truncation", self.truncation, positive=True))
        if not isinstance(self.corrected, bool):
            raise TypeError(f"Argument `corrected` must be a bool. Received: corrected={self.corrected!r}.")
        if self.distribution != "truncated_normal" and (not self.corrected or self.truncation != 2.0):
            raise ValueError(
                "Arguments `truncation` and `corrected` only apply to distribution='truncated_normal'. "
                f"Received: distribution={self.distribution!r}, truncation={self.truncation!r}, "
                f"corrected={self.corrected!r}."
            )

    def target_variance(self, fans: Fans) -> float:
        """scale / n before any truncation shortfall (equals the variance when corrected)."""
        n = self._needs(fans).fan(self.mode)
        return self.scale / (n if n > 0 else 1.0)

    def truncation_std(self) -> float:
        """s(t): the std of N(0, 1) truncated to ±truncation (0.8796… for t = 2)."""
        return normal_math.truncated_std(-self.truncation, self.truncation)

    def resolve(self, fans: Fans | None = None) -> Distribution:
        if self.native == "torch" and self.distribution == "normal":
            return NormalDist(0.0, self._torch_std(self._needs(fans)), self.native)
        var = self.target_variance(self._needs(fans))
        if self.distribution == "normal":
            return NormalDist(0.0, math.sqrt(var), self.native)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * var)
            return UniformDist(-limit, limit, self.native)
        sigma = math.sqrt(var) / (self.truncation_std() if self.corrected else 1.0)
        return TruncatedNormalDist(0.0, sigma, -self.truncation * sigma, self.truncation * sigma, self.native)

    def _torch_std(self, fans: Fans) -> float:
        """The normal's std with torch's arithmetic (``kaiming_normal_``, ``xavier_normal_``:
        torch/nn/init.py, torch 2.13): gain/√fan or gain·√(2/(fan_in + fan_out)), gain = √scale
        (exactly the gain the preset squared: √(x²) rounds back to |x|). √(scale/fan) can be one
        ulp away (√2 squared is 2.0000000000000004), which a float64 draw shows. Uniform bounds
        keep the exact √(3·scale/fan), inside which every value is drawn (docs/conventions.md:
        torch's own can round one ulp above it)."""
        gain = math.sqrt(self.scale)
        if self.mode == "fan_avg":
            total = float(fans.fan_in + fans.fan_out)
            return gain * math.sqrt(2.0 / (total if total > 0 else 2.0))  # a zero fan counts as 1, as above
        n = fans.fan(self.mode)
        return gain / math.sqrt(n if n > 0 else 1.0)


@dataclass(frozen=True, repr=False)
class Normal(Spec):
    """N(mean, std²), untruncated.

    The std is stored as ``stddev`` (``spec.std(fans)`` is the analytic method every spec has).

    Example:
        >>> Normal(0.02).variance()
        0.0004
    """

    stddev: float
    mean: float = 0.0
    native: str | None = None

    def __init__(self, std: float, mean: float = 0.0, native: str | None = None) -> None:
        _coerce(self, "stddev", _validate.real("std", std, positive=True))
        _coerce(self, "mean", _validate.real("mean", mean))
        _coerce(self, "native", _check_native(native))

    def config(self) -> dict[str, Any]:
        return {"std": self.stddev, "mean": self.mean, **_native_config(self.native)}

    def resolve(self, fans: Fans | None = None) -> Distribution:
        return NormalDist(self.mean, self.stddev, self.native)


@dataclass(frozen=True, repr=False)
class TruncatedNormal(Spec):
    """N(mean, std²) truncated to [lower, upper]; ``std`` is the std *before* truncation.

    Either bound may be infinite (``lower=0, upper=inf`` is a half-normal).
    ``bounds_in="std"`` (default, as Keras/JAX/TF): the bounds are mean + lower·std and
    mean + upper·std. ``bounds_in="absolute"`` (as torch's ``trunc_normal_(a, b)``): the bounds
    are lower and upper themselves. The classic pitfall: ``torch.nn.init.trunc_normal_(w,
    std=0.02)`` keeps a=-2, b=2 *absolute*, i.e. ±100 std, so nothing is truncated.

    The drawn values have a smaller std than ``std``: see :meth:`std`.

    Example:
        >>> round(TruncatedNormal(1.0).std(), 6)          # ±2 std
        0.879626
        >>> round(TruncatedNormal(0.02, bounds_in="absolute").std(), 6)   # ±2 absolute
        0.02
    """

    stddev: float
    mean: float = 0.0
    lower: float = -2.0
    upper: float = 2.0
    bounds_in: str = "std"
    native: str | None = None

    def __init__(
        self,
        std: float,
        mean: float = 0.0,
        lower: float = -2.0,
        upper: float = 2.0,
        bounds_in: str = "std",
        native: str | None = None,
    ) -> None:
        _coerce(self, "native", _check_native(native))
        _coerce(self, "stddev", _validate.real("std", std, positive=True))
        _coerce(self, "mean", _validate.real("mean", mean))
        _coerce(self, "lower", _validate.real("lower", lower, infinite_ok=True))
        _coerce(self, "upper", _validate.real("upper", upper, infinite_ok=True))
        _coerce(self, "bounds_in", _validate.choice("bounds_in", bounds_in, BOUNDS_UNITS))
        if not self.lower < self.upper:
            raise ValueError(f"Arguments `lower` < `upper` required. Received: lower={lower!r}, upper={upper!r}.")
        low, high = self.absolute_bounds()
        try:
            normal_math.truncated_moments((low - self.mean) / self.stddev, (high - self.mean) / self.stddev)
        except ValueError as err:
            raise ValueError(
                f"TruncatedNormal bounds [{low}, {high}] hold no probability mass of N({self.mean}, {self.stddev}²): "
                f"{err}"
            ) from None

    def config(self) -> dict[str, Any]:
        return {
            "std": self.stddev,
            "mean": self.mean,
            "lower": self.lower,
            "upper": self.upper,
            "bounds_in": self.bounds_in,
            **_native_config(self.native),
        }

    def absolute_bounds(self) -> tuple[float, float]:
        """The support [low, high] in absolute units, whichever ``bounds_in``."""
        if self.bounds_in == "absolute":
            return self.lower, self.upper
        return self.mean + self.lower * self.stddev, self.mean + self.upper * self.stddev

    def resolve(self, fans: Fans | None = None) -> Distribution:
        low, high = self.absolute_bounds()
        return TruncatedNormalDist(self.mean, self.stddev, low, high, self.native)


@dataclass(frozen=True, repr=False)
class Uniform(Spec):
    """U(low, high).

    Example:
        >>> Uniform(-0.05, 0.05).bounds()
        (-0.05, 0.05)
    """

    low: float
    high: float
    native: str | None = None

    def __post_init__(self) -> None:
        _check_native(self.native)
        _coerce(self, "low", _validate.real("low", self.low))
        _coerce(self, "high", _validate.real("high", self.high))
        if not self.low < self.high:
            raise ValueError(f"Arguments `low` < `high` required. Received: low={self.low!r}, high={self.high!r}.")

    def resolve(self, fans: Fans | None = None) -> Distribution:
        return UniformDist(self.low, self.high, self.native)


@dataclass(frozen=True, repr=False)
class Constant(Spec):
    """Every element equals ``value``."""

    value: float

    def __post_init__(self) -> None:
        _coerce(self, "value", _validate.real("value", self.value))

    def resolve(self, fans: Fans | None = None) -> Distribution:
        return ConstantDist(self.value)


@dataclass(frozen=True, repr=False)
class Zeros(Spec):
    """Every element 0."""

    def resolve(self, fans: Fans | None = None) -> Distribution:
        return ConstantDist(0.0)


@dataclass(frozen=True, repr=False)
class Ones(Spec):
    """Every element 1."""

    def resolve(self, fans: Fans | None = None) -> Distribution:
        return ConstantDist(1.0)


@dataclass(frozen=True, repr=False)
class Orthogonal(Spec):
    """``gain`` × a Haar-random (semi-)orthogonal matrix per weight block (Saxe et al. 2014).

    The matrix view of a block is (fan_out / receptive_field) × fan_in, i.e. outputs ×
    (inputs · receptive field), as torch, Keras and JAX flatten it; every element then has
    mean square gain² / max(rows, cols).

    Args:
        gain: the factor on the orthogonal matrix; non-zero.
        native: None (initscale's draw order: each block's gaussian as a (max(rows, cols) ×
            min(rows, cols)) matrix) or ``"torch"``: each block's gaussian drawn as
            ``torch.nn.init.orthogonal_`` draws it, a (rows × cols) matrix transposed when wider
            than tall, so the same generator gives ``torch.nn.init.orthogonal_``'s values for a
            float32 or float64 weight (the ``torch.orthogonal`` preset sets it; torch has no QR
            of bfloat16/float16, whose weights are drawn in float32 either way). The two orders
            differ only for wide blocks and have the same (Haar) distribution.

    Example:
        >>> from initscale import Fans
        >>> Orthogonal(2.0).variance(Fans(fan_in=64, fan_out=256))
        0.015625
    """

    gain: float = 1.0
    native: str | None = None

    fixed_scale: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_native(self.native)
        _coerce(self, "gain", _validate.real("gain", self.gain))
        if self.gain == 0.0:
            raise ValueError("Argument `gain` must be non-zero (use Zeros() for an all-zero weight). Received: gain=0.")

    def resolve(self, fans: Fans | None = None) -> Distribution:
        f = self._needs(fans)
        rows = round(f.fan_out / f.receptive_field) if f.receptive_field else 0
        return OrthogonalDist(self.gain, int(rows), round(f.fan_in), self.native)


_SPEC_CLASSES: dict[str, type[Spec]] = {
    cls.__name__: cls for cls in (VarianceScaling, Normal, TruncatedNormal, Uniform, Constant, Zeros, Ones, Orthogonal)
}


def _config_keys(cls: type[Spec]) -> tuple[set[str], set[str]]:
    """(all keys, required keys) of a spec class's config: its constructor's parameters."""
    params = list(inspect.signature(cls).parameters.values())
    return {p.name for p in params}, {p.name for p in params if p.default is inspect.Parameter.empty}


def from_dict(data: Mapping[str, Any]) -> Spec:
    """Rebuild a spec from :meth:`Spec.to_dict` output, validating every key; nothing is evaluated.

    Example:
        >>> spec = VarianceScaling(2.0, "fan_out", "normal")
        >>> from_dict(spec.to_dict()) == spec
        True
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"A spec dict must be a mapping. Received: {data!r}.")
    top = {"version", "kind", "config"}
    unknown = set(data) - top
    if unknown:
        raise ValueError(f"Unknown key(s) {sorted(unknown)} in spec dict; valid keys: {sorted(top)}.")
    missing = top - set(data)
    if missing:
        raise ValueError(f"Spec dict lacks key(s) {sorted(missing)}; it needs {sorted(top)}.")
    if data["version"] != SPEC_FORMAT_VERSION:
        raise ValueError(
            f"Unsupported spec format version {data['version']!r}; this initscale reads version {SPEC_FORMAT_VERSION}."
        )
    class_name = _validate.choice("kind", data["kind"], _SPEC_CLASSES)
    cls = _SPEC_CLASSES[class_name]
    config = data["config"]
    if not isinstance(config, Mapping):
        raise TypeError(f"Spec dict `config` must be a mapping. Received: config={config!r}.")
    keys, required = _config_keys(cls)
    unknown = set(config) - keys
    if unknown:
        raise ValueError(f"Unknown key(s) {sorted(unknown)} for {class_name}; valid keys: {sorted(keys)}.")
    missing = required - set(config)
    if missing:
        raise ValueError(f"{class_name} config lacks required key(s) {sorted(missing)}.")
    return cls(
        **{
            k: _TEXT_TO_INF.get(v, v) if isinstance(v, str) and k in ("lower", "upper") else v
            for k, v in config.items()
        }
    )
