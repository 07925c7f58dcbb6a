"""Every number a spec implies for one weight, how the fans were counted, and the native call that
draws the same distribution in each framework (or why there is none).

Example:
    >>> from initscale.explain import explain
    >>> e = explain("he_normal", (3, 3, 64, 128), "keras")
    >>> e.fans.fan_in, round(e.std, 6), round(e.sampler_parameter, 6)
    (576, 0.058926, 0.066989)
    >>> e.native["jax"]
    'jax.nn.initializers.truncated_normal(stddev=0.0669894, lower=-2, upper=2)'
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import presets
from .distributions import (
    ConstantDist,
    Distribution,
    NormalDist,
    OrthogonalDist,
    TruncatedNormalDist,
    UniformDist,
)
from .fans import Fans, LayerKind, LayoutLike, resolve
from .plan import weight_plan
from .rounding import clip_bounds
from .specs import _INF_TO_TEXT, Spec, VarianceScaling, from_dict

__all__ = ["Explanation", "explain", "fans_explanation", "json_safe", "native_calls", "parse_spec"]

FRAMEWORKS = ("torch", "keras", "jax", "numpy", "tf1")


def parse_spec(text: str) -> tuple[Spec, str | None]:
    """A preset name with arguments (``"torch.kaiming_normal:a=0.2,mode=fan_out"``) or a JSON spec
    (``{"version": 1, "kind": ..., "config": ...}``); returns the spec and the preset name, if any.
    An unknown preset name raises ValueError listing the closest names."""
    text = text.strip()
    if text.startswith("{"):
        return from_dict(json.loads(text)), None
    name = text.split(":", 1)[0]
    if name not in presets.names():
        close = difflib.get_close_matches(name, presets.names(), n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown preset {name!r}.{hint} See `initscale.presets.names()` for all of them.")
    return presets.get(text), name


def fans_explanation(shape: Sequence[int], layout: LayoutLike) -> str:
    """How the fans of ``shape`` are counted under ``layout``, as one line of arithmetic."""
    fan_layout = resolve(layout)
    dims = tuple(int(d) for d in shape)
    fans = fan_layout.fans(dims)
    if isinstance(fan_layout, LayerKind) and fan_layout.native:
        return (
            f"{fan_layout}: the framework's own fan rule for {dims}: "
            f"fan_in = {fans.fan_in:g}, fan_out = {fans.fan_out:g}"
        )
    concrete = fan_layout.layout(dims)
    ins, outs, batch, receptive = concrete.split_axes(dims)

    def size(axes: tuple[int, ...]) -> str:
        if not axes:
            return "1"
        return "·".join(str(dims[a]) for a in axes)

    rf = f" × receptive field {size(receptive)} (axes {list(receptive)})" if receptive else ""
    skipped = f"; batch axes {list(batch)} not counted" if batch else ""
    in_g = f" / in_groups {concrete.in_groups}" if concrete.in_groups > 1 else ""
    out_g = f" / out_groups {concrete.out_groups}" if concrete.out_groups > 1 else ""
    return (
        f"{fan_layout}: fan_in = in {size(ins)} (axes {list(ins)}){in_g}{rf} = {fans.fan_in:g}; "
        f"fan_out = out {size(outs)} (axes {list(outs)}){out_g}{rf} = {fans.fan_out:g}{skipped}"
    )


def json_safe(value: Any) -> Any:
    """``value`` with every infinite float written as the string ``"inf"``/``"-inf"`` (as
    :meth:`Spec.to_dict` writes infinite bounds: strict JSON has no infinity) and NaN as ``"nan"``,
    through dicts, lists and tuples; everything else unchanged."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return _INF_TO_TEXT.get(value, value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _g(x: float) -> str:
    return f"{x:.6g}"


def native_calls(dist: Distribution) -> dict[str, str]:
    """For each framework, a native call drawing exactly ``dist`` (with this weight's numbers), or
    a note starting with "no exact equivalent"."""
    if isinstance(dist, ConstantDist):
        v = _g(dist.value)
        return {
            "torch": f"torch.nn.init.constant_(w, {v})",
            "keras": f"keras.initializers.Constant({v})",
            "jax": f"jax.nn.initializers.constant({v})",
            "numpy": f"np.full(shape, {v})",
            "tf1": f"tf.compat.v1.constant_initializer({v})",
        }
    if isinstance(dist, NormalDist):
        m, s = _g(dist.mean), _g(dist.std)
        jax_call = (
            f"jax.nn.initializers.normal(stddev={s})"
            if dist.mean == 0.0
            else f"lambda key, shape, dtype: {m} + {s} * jax.random.normal(key, shape, dtype)"
        )
        return {
            "torch": f"torch.nn.init.normal_(w, mean={m}, std={s})",
            "keras": f"keras.initializers.RandomNormal(mean={m}, stddev={s})",
            "jax": jax_call,
            "numpy": f"rng.normal({m}, {s}, shape)",
            "tf1": f"tf.compat.v1.random_normal_initializer(mean={m}, stddev={s})",
        }
    if isinstance(dist, UniformDist):
        lo, hi = _g(dist.low), _g(dist.high)
        jax_call = (
            f"jax.nn.initializers.uniform(scale={hi})"
            if dist.low == 0.0
            else f"lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, {lo}, {hi})"
        )
        return {
            "torch": f"torch.nn.init.uniform_(w, a={lo}, b={hi})",
            "keras": f"keras.initializers.RandomUniform(minval={lo}, maxval={hi})",
            "jax": jax_call,
            "numpy": f"rng.uniform({lo}, {hi}, shape)",
            "tf1": f"tf.compat.v1.random_uniform_initializer(minval={lo}, maxval={hi})",
        }
    if isinstance(dist, TruncatedNormalDist):
        a, b = dist.standard_bounds
        m, s, lo, hi = _g(dist.loc), _g(dist.sigma), _g(dist.low), _g(dist.high)
        symmetric_2 = dist.loc == 0.0 and math.isclose(-a, 2.0) and math.isclose(b, 2.0)
        two_sigma = math.isclose(-a, 2.0) and math.isclose(b, 2.0)
        keras_call = (
            f"keras.initializers.TruncatedNormal(mean={m}, stddev={s})"
            if two_sigma
            else f"no exact equivalent: Keras cuts at ±2σ only (here [{_g(a)}, {_g(b)}]σ)"
        )
        tf1_call = (
            f"tf.compat.v1.truncated_normal_initializer(mean={m}, stddev={s})"
            if two_sigma
            else "no exact equivalent: TF cuts at ±2σ only"
        )
        jax_call = (
            f"jax.nn.initializers.truncated_normal(stddev={s}, lower={_g(a)}, upper={_g(b)})"
            if dist.loc == 0.0
            else f"lambda key, shape, dtype: {m} + {s} * "
            f"jax.random.truncated_normal(key, {_g(a)}, {_g(b)}, shape, dtype)"
        )
        torch_call = f"torch.nn.init.trunc_normal_(w, mean={m}, std={s}, a={lo}, b={hi})"
        if symmetric_2:
            torch_call += "  # absolute bounds; torch has no corrected truncated initializer by fan"
        return {
            "torch": torch_call,
            "keras": keras_call,
            "jax": jax_call,
            "numpy": f"scipy.stats.truncnorm({_g(a)}, {_g(b)}, loc={m}, scale={s}).rvs(shape)",
            "tf1": tf1_call,
        }
    if isinstance(dist, OrthogonalDist):
        g = _g(dist.gain)
        note = f"  # one {dist.rows}×{dist.cols} block; for stacked or grouped blocks use initscale"
        return {
            "torch": f"torch.nn.init.orthogonal_(w, gain={g}){note}",
            "keras": f"keras.initializers.Orthogonal(gain={g}){note}",
            "jax": f"jax.nn.initializers.orthogonal(scale={g}){note}",
            "numpy": f"initscale.numpy.initializer(initscale.Orthogonal({g}))",
            "tf1": f"tf.compat.v1.orthogonal_initializer(gain={g}){note}",
        }
    raise TypeError(f"Unknown distribution {dist!r}.")  # pragma: no cover


@dataclass(frozen=True)
class Explanation:
    """The answer of :func:`explain`; ``to_dict()`` for JSON, ``str()`` for people."""

    spec: Spec
    preset: str | None
    shape: tuple[int, ...]
    layout: str
    fans: Fans | None
    fans_how: str
    distribution: Distribution
    variance: float
    std: float
    mean: float
    bounds: tuple[float, float] | None
    sampler_parameter: float
    native: dict[str, str]
    source: str | None
    stored_bounds: dict[str, tuple[float, float]] | None = None  # per float format (initscale.rounding)
    notes: tuple[str, ...] = ()  # what the numbers above do not say by themselves (a zero fan, no elements)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: infinite numbers are the strings ``"inf"``/``"-inf"``, as in
        :meth:`Spec.to_dict`, so ``json.dumps(..., allow_nan=False)`` accepts it."""
        safe: dict[str, Any] = json_safe(
            {
                "spec": self.spec.to_dict(),
                "spec_repr": repr(self.spec),
                "preset": self.preset,
                "source": self.source,
                "shape": list(self.shape),
                "layout": self.layout,
                "fan_in": None if self.fans is None else self.fans.fan_in,
                "fan_out": None if self.fans is None else self.fans.fan_out,
                "receptive_field": None if self.fans is None else self.fans.receptive_field,
                "fans_how": self.fans_how,
                "distribution": type(self.distribution).__name__,
                "variance": self.variance,
                "std": self.std,
                "mean": self.mean,
                "bounds": None if self.bounds is None else list(self.bounds),
                "sampler_parameter": self.sampler_parameter,
                "native": self.native,
                "stored_bounds": None
                if self.stored_bounds is None
                else {fmt: list(b) for fmt, b in self.stored_bounds.items()},
                "notes": list(self.notes),
            }
        )
        return safe

    def __str__(self) -> str:
        rows = [("spec", repr(self.spec))]
        if self.preset:
            rows.append(("preset", f"{self.preset}  ({self.source})"))
        rows += [("shape", str(self.shape)), ("layout", self.layout), ("fans", self.fans_how)]
        rows += [("note", note) for note in self.notes]
        rows += [
            ("distribution", type(self.distribution).__name__),
            ("variance", _g(self.variance)),
            ("std", _g(self.std)),
            ("mean", _g(self.mean)),
            ("bounds", "none (unbounded)" if self.bounds is None else f"[{_g(self.bounds[0])}, {_g(self.bounds[1])}]"),
        ]
        if self.stored_bounds:
            rows.append(
                (
                    "stored inside",
                    "  ".join(f"{fmt} [{_g(lo)}, {_g(hi)}]" for fmt, (lo, hi) in self.stored_bounds.items()),
                )
            )
        rows.append(("sampler parameter", f"{_g(self.sampler_parameter)}  ({_sampler_label(self.distribution)})"))
        rows += [(f"{fw}", call) for fw, call in self.native.items()]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _sampler_label(dist: Distribution) -> str:
    if isinstance(dist, TruncatedNormalDist):
        return "σ before truncation"
    if isinstance(dist, UniformDist):
        return "uniform limit" if dist.low == -dist.high else "upper end"
    if isinstance(dist, OrthogonalDist):
        return "gain"
    if isinstance(dist, ConstantDist):
        return "value"
    return "σ"


def explain(spec: Spec | str, shape: Sequence[int], layout: LayoutLike | None = None) -> Explanation:
    """Explain ``spec`` (a spec, preset name with arguments, or JSON text) for a weight of ``shape``.

    ``layout`` defaults to the preset's own layout (``"keras"`` for a spec given directly)."""
    preset = None
    if isinstance(spec, str):
        spec, preset = parse_spec(spec)
    if layout is None:
        layout = presets.info(preset).layout if preset else "keras"
    fan_layout = resolve(layout)
    dims = tuple(int(d) for d in shape)
    fans: Fans | None
    if spec.fixed_scale:  # the fans, where the layout reads the shape, are shown but not used
        try:
            fans, how = fan_layout.fans(dims), fans_explanation(dims, fan_layout)
        except ValueError as err:
            fans, how = None, f"not needed for a fixed-scale spec ({err})"
        dist = spec.resolve(None)
    else:
        plan = weight_plan(spec, dims, fan_layout)  # the adapters' own plan of this weight
        fans, how, dist = plan.fans, fans_explanation(dims, fan_layout), plan.dist
        if isinstance(dist, OrthogonalDist):
            _, (_, _, o, _, i, rf) = plan.blocks
            dist = OrthogonalDist(dist.gain, o, i * rf, dist.native)
    return Explanation(
        notes=_notes(spec, dims, fans),
        spec=spec,
        preset=preset,
        shape=dims,
        layout=str(fan_layout),
        fans=fans,
        fans_how=how,
        distribution=dist,
        variance=dist.variance,
        std=dist.std,
        mean=dist.mean,
        bounds=dist.bounds,
        sampler_parameter=dist.sampler_parameter,
        native=native_calls(dist),
        source=presets.info(preset).source if preset else None,
        stored_bounds=_stored_bounds(dist),
    )


def _notes(spec: Spec, dims: tuple[int, ...], fans: Fans | None) -> tuple[str, ...]:
    """What the numbers do not say by themselves: a weight without elements, a zero fan counted as 1."""
    notes = []
    if math.prod(dims) == 0:
        notes.append(f"shape {dims} has a zero dimension: the weight has no elements, so nothing is drawn")
    if isinstance(spec, VarianceScaling) and fans is not None and fans.fan(spec.mode) == 0:
        notes.append(
            f"{spec.mode} is 0: VarianceScaling counts a fan of 0 as 1 (as Keras does), so the "
            f"variance is scale/1 = {_g(spec.scale)}, a placeholder, not a property of this weight"
        )
    return tuple(notes)


def _stored_bounds(dist: Distribution) -> dict[str, tuple[float, float]] | None:
    """The bounds a bounded draw keeps once stored in each narrower float format."""
    if clip_bounds(dist, "float64") is None:
        return None
    return {fmt: clip for fmt in ("float32", "float16", "bfloat16") if (clip := clip_bounds(dist, fmt)) is not None}
