"""The parity matrix: every preset × layer kind × backend, against the maths and each other.

For each row, a backend draws a weight of one logical layer (dense, conv2d, grouped conv,
conv-transpose, depthwise, embedding, LSTM gates, packed QKV) in its own framework's layout, and
:mod:`initscale.testing` checks it against the preset's exact distribution at that layer's
forward fans (second moment, mean, support, bound approach, KS; orthogonality per block for
orthogonal presets). Cross-backend rows compare each backend's draw with the NumPy reference's
(two-sample KS and second moments); native rows compare the framework's own initializer with
initscale's native-compat draw of the same preset (same fans, same distribution).

Backends are reached by name through the adapter registry, so a framework that is not
installed is simply not listed by :func:`available_backends`.

Example:
    >>> from initscale import parity
    >>> rows = parity.run(backends=["numpy"], presets=["he_normal"], layers=["dense", "lstm_gates"])
    >>> [(r.layer, r.passed) for r in rows]
    [('dense', True), ('lstm_gates', True)]
    >>> round(rows[1].expected_std, 6)             # per gate: fan_in 128
    0.125
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import _registry, testing
from . import presets as _presets
from .distributions import Distribution, OrthogonalDist
from .fans import Layout, LayoutLike, resolve
from .plan import weight_plan
from .specs import TruncatedNormal

__all__ = [
    "BACKENDS",
    "EDGES",
    "EDGE_LAYERS",
    "LAYERS",
    "NATIVES",
    "LogicalLayer",
    "Row",
    "SummaryLine",
    "available_backends",
    "draw",
    "family",
    "run",
    "run_iter",
    "summarize",
]


@dataclass(frozen=True)
class LogicalLayer:
    """One layer as each framework family stores its weight: ``family -> (shape, layout)``."""

    name: str
    doc: str
    forms: dict[str, tuple[tuple[int, ...], LayoutLike]]

    def form(self, family: str) -> tuple[tuple[int, ...], LayoutLike]:
        return self.forms[family]


_QKV = Layout(0, 1, out_groups=3, name="packed_qkv(in, 3·embed)")

LAYERS: dict[str, LogicalLayer] = {
    layer.name: layer
    for layer in (
        LogicalLayer(
            "dense",
            "in 512 -> out 256",
            {
                "torch": ((256, 512), "torch.linear"),
                "keras": ((512, 256), "keras.dense"),
                "flax": ((512, 256), "flax.dense"),
            },
        ),
        LogicalLayer(
            "conv2d",
            "3×3, 64 -> 128 channels",
            {
                "torch": ((128, 64, 3, 3), "torch.conv"),
                "keras": ((3, 3, 64, 128), "keras.conv"),
                "flax": ((3, 3, 64, 128), "flax.conv"),
            },
        ),
        LogicalLayer(
            "grouped_conv",
            "3×3, 64 -> 128 channels in 4 groups",
            {
                "torch": ((128, 16, 3, 3), "torch.conv:groups=4"),
                "keras": ((3, 3, 16, 128), "keras.conv:groups=4"),
                "flax": ((3, 3, 16, 128), "flax.conv:groups=4"),
            },
        ),
        LogicalLayer(
            "conv_transpose",
            "3×3 transposed, 128 -> 64 channels",
            {
                "torch": ((128, 64, 3, 3), "torch.conv_transpose"),
                "keras": ((3, 3, 64, 128), "keras.conv_transpose"),
                "flax": ((3, 3, 128, 64), "flax.conv_transpose"),
            },
        ),
        LogicalLayer(
            "depthwise",
            "5×5 depthwise, 256 channels × 4",
            {
                "torch": ((1024, 1, 5, 5), "torch.depthwise_conv:multiplier=4"),
                "keras": ((5, 5, 256, 4), "keras.depthwise_conv"),
                "flax": ((5, 5, 1, 1024), "flax.conv:groups=256"),
            },
        ),
        LogicalLayer(
            "embedding",
            "vocabulary 2000, dim 64",
            {
                "torch": ((2000, 64), "torch.embedding"),
                "keras": ((2000, 64), "keras.embedding"),
                "flax": ((2000, 64), "flax.embed"),
            },
        ),
        LogicalLayer(
            "lstm_gates",
            "LSTM input kernel, in 128, hidden 256, 4 gates stacked",
            {
                "torch": ((1024, 128), "torch.lstm"),
                "keras": ((128, 1024), "keras.lstm"),
                "flax": ((128, 1024), Layout(-2, -1, out_groups=4, name="flax.lstm(stacked)")),
            },
        ),
        LogicalLayer(
            "packed_qkv",
            "attention in-projection, embed 256, Q/K/V packed",
            {"torch": ((768, 256), "torch.mha_in_proj"), "keras": ((256, 768), _QKV), "flax": ((256, 768), _QKV)},
        ),
    )
}


# Distribution edges (issue 16): far-tail, one-sided and narrow truncated normals, where float32
# erf/Φ lose their digits. Their scale is fixed (no fans), so they run on the dense layer only,
# which keeps the matrix small; :func:`run` takes their names like presets' names.
EDGES: dict[str, Any] = {
    "edge.truncated_one_sided": TruncatedNormal(0.05, lower=3.0, upper=math.inf),
    "edge.truncated_left_tail": TruncatedNormal(0.05, lower=-math.inf, upper=-4.5),
    "edge.truncated_far_narrow": TruncatedNormal(0.05, lower=5.5, upper=6.5),
    "edge.truncated_narrow": TruncatedNormal(0.05, lower=4.2, upper=4.4),
    "edge.truncated_past_float32": TruncatedNormal(0.05, lower=20.0, upper=20.5),
}
EDGE_LAYERS = ("dense",)


def _spec(name: str) -> Any:
    """A preset by name, or one of :data:`EDGES`."""
    return EDGES[name] if name in EDGES else _presets.get(name)


def _chosen_presets(presets: Sequence[str] | None) -> list[str]:
    """The presets a run covers: those named, or every preset and every edge."""
    return list(presets) if presets is not None else [*_presets.names(), *EDGES]


def _layers_of(preset: str, layer_names: Sequence[str]) -> list[str]:
    """The layers of ``layer_names`` that ``preset`` runs on: an edge, on :data:`EDGE_LAYERS` only."""
    return [x for x in layer_names if x in EDGE_LAYERS] if preset in EDGES else list(layer_names)


def _check_known(what: str, names: Iterable[str], valid: Collection[str]) -> None:
    """Raise naming the first of ``names`` that is not in ``valid``, and the valid ones."""
    for name in names:
        if name not in valid:
            raise ValueError(f"Unknown {what} {name!r}; valid: {', '.join(sorted(valid))}.")


# --- backends ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    modules: tuple[str, ...]
    family: str
    draw: Callable[[Any, tuple[int, ...], LayoutLike, int], np.ndarray]


def _backend(name: str) -> Backend:
    adapter = _registry.get(name)

    def draw(spec: Any, shape: tuple[int, ...], layout: LayoutLike, seed: int) -> np.ndarray:
        # the reference in float64; every framework in its default float32
        return np.asarray(_registry.draw(name, spec, shape, layout, seed, "float64" if name == "numpy" else None))

    return Backend(name, adapter.requires, adapter.family, draw)


# the adapters that serve the matrix, from the one registry of adapters (initscale._registry)
BACKENDS: dict[str, Backend] = {name: _backend(name) for name in _registry.serving("parity")}


def available_backends() -> list[str]:
    """The backends whose frameworks import here (``keras`` on its configured backend)."""
    found = []
    for name, backend in BACKENDS.items():
        try:
            for module in backend.modules:
                importlib.import_module(module)
        except Exception:  # a broken install is as absent as a missing one
            continue
        found.append(name)
    return found


def draw(backend: str, preset: str, layer: str, seed: int = 0) -> tuple[np.ndarray, Distribution, Layout | None]:
    """One backend's draw of ``preset`` for ``layer``, with the exact distribution and concrete layout."""
    b = BACKENDS[backend]
    shape, layout = LAYERS[layer].form(b.family)
    spec = _spec(preset)
    dist = weight_plan(spec, shape, layout).dist
    return b.draw(spec, shape, layout, seed), dist, resolve(layout).layout(shape)


# --- rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One cell of the matrix. ``comparison`` is "analytic", "cross" (vs the NumPy reference) or "native"."""

    backend: str
    preset: str
    layer: str
    comparison: str
    expected_std: float
    measured_std: float
    z: float
    p_value: float | None
    passed: bool
    n: int
    failures: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """Deprecated (until 0.3): :attr:`comparison`."""  # names: deprecated alias
        import warnings

        warnings.warn(
            "initscale.parity.Row.kind is deprecated and stops working in initscale 0.3; use Row.comparison.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.comparison

    def to_dict(self) -> dict[str, Any]:
        """The row's fields; the JSON also keeps the old key "kind" (= "comparison") until 0.3."""
        out = asdict(self)
        out["kind"] = self.comparison  # names: deprecated alias (a JSON key cannot warn)
        return out


def _orthogonality(x: np.ndarray, dist: OrthogonalDist, layout: Layout) -> float:
    shape = x.shape
    order, (nb, og, o, ig, i, rf) = layout.blocks(shape)
    blocks = np.transpose(x, order).reshape(nb, og, o, ig, i, rf).transpose(0, 1, 3, 2, 4, 5).reshape(-1, o, i * rf)
    worst = 0.0
    for m in blocks.astype(np.float64):
        gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        worst = max(worst, float(np.abs(gram - dist.gain**2 * np.eye(gram.shape[0])).max()))
    return worst


def _z(x: np.ndarray, dist: Distribution) -> float:
    """(sample second moment − σ²) in units of its standard error σ²·√((κ−1)/n)."""
    var, kurt = dist.variance, dist.kurtosis
    if var == 0.0 or kurt <= 1.0:
        return 0.0
    m2 = float(np.mean((x.astype(np.float64) - dist.mean) ** 2))
    return (m2 - var) / (var * math.sqrt((kurt - 1.0) / x.size))


def _analytic_row(
    backend: str, preset: str, layer: str, x: np.ndarray, dist: Distribution, layout: Layout | None
) -> Row:
    report = testing.check_samples(x, dist)
    failures = report.failures
    if isinstance(dist, OrthogonalDist) and layout is not None:
        error = _orthogonality(x, dist, layout)
        tol = 1e-4 * max(1.0, dist.gain**2)  # float32 QR: |QᵀQ − g²I| ≲ 1e-5·g²
        if error > tol:
            failures = [*failures, f"orthogonality: max |QᵀQ − g²I| = {error:.3g} > {tol:.1g}"]
    ks = next((c.statistic for c in report.checks if c.name == "ks"), None)
    return Row(
        backend,
        preset,
        layer,
        "analytic",
        dist.std,
        float(np.sqrt(np.mean(x.astype(np.float64) ** 2) - float(np.mean(x)) ** 2)),
        _z(x, dist),
        ks,
        not failures,
        int(x.size),
        failures,
    )


def _cross_row(backend: str, preset: str, layer: str, x: np.ndarray, reference: np.ndarray, dist: Distribution) -> Row:
    report = testing.same_distribution(x, reference)
    return Row(
        backend,
        preset,
        layer,
        "cross",
        float(np.std(reference)),
        float(np.std(x)),
        report["second_moments"].statistic / max(report["second_moments"].tolerance / testing.Z, 1e-300),
        report["ks_2samp"].statistic,
        bool(report),
        int(x.size),
        report.failures,
    )


# --- native initializers -------------------------------------------------------------------------


def _torch_native(fill: str, **kwargs: Any) -> Callable[[tuple[int, ...], int], np.ndarray]:
    def draw(shape: tuple[int, ...], seed: int) -> np.ndarray:
        torch = importlib.import_module("torch")
        t = torch.empty(shape, dtype=torch.float32)
        getattr(torch.nn.init, fill)(t, **kwargs, generator=torch.Generator().manual_seed(seed))
        return np.asarray(t.numpy())

    return draw


def _keras_native(name: str) -> Callable[[tuple[int, ...], int], np.ndarray]:
    def draw(shape: tuple[int, ...], seed: int) -> np.ndarray:
        keras = importlib.import_module("keras")
        init = keras.initializers.get({"class_name": name, "config": {"seed": seed}})
        return np.asarray(keras.ops.convert_to_numpy(init(shape, "float32")))

    return draw


def _jax_native(name: str, *args: Any) -> Callable[[tuple[int, ...], int], np.ndarray]:
    def draw(shape: tuple[int, ...], seed: int) -> np.ndarray:
        jax = importlib.import_module("jax")
        return np.asarray(getattr(jax.nn.initializers, name)(*args)(jax.random.key(seed), shape))

    return draw


# preset -> (backend, native draw(shape, seed), the native-compat layout that reproduces its fans)
NATIVES: dict[str, tuple[str, Callable[[tuple[int, ...], int], np.ndarray], str]] = {
    "torch.xavier_uniform": ("torch", _torch_native("xavier_uniform_"), "torch:native=true"),
    "torch.xavier_normal": ("torch", _torch_native("xavier_normal_"), "torch:native=true"),
    "torch.kaiming_uniform": ("torch", _torch_native("kaiming_uniform_"), "torch:native=true"),
    "torch.kaiming_normal": ("torch", _torch_native("kaiming_normal_"), "torch:native=true"),
    "torch.linear_default": ("torch", _torch_native("kaiming_uniform_", a=math.sqrt(5)), "torch:native=true"),
    "torch.trunc_normal": ("torch", _torch_native("trunc_normal_"), "torch:native=true"),
    "torch.normal": ("torch", _torch_native("normal_"), "torch:native=true"),
    "torch.uniform": ("torch", _torch_native("uniform_"), "torch:native=true"),
    "torch.orthogonal": ("torch", _torch_native("orthogonal_"), "torch:native=true"),
    **{
        f"keras.{n}": ("keras", _keras_native(c), "keras:native=true")
        for n, c in (
            ("glorot_uniform", "GlorotUniform"),
            ("glorot_normal", "GlorotNormal"),
            ("he_uniform", "HeUniform"),
            ("he_normal", "HeNormal"),
            ("lecun_uniform", "LecunUniform"),
            ("lecun_normal", "LecunNormal"),
            ("variance_scaling", "VarianceScaling"),
            ("random_normal", "RandomNormal"),
            ("truncated_normal", "TruncatedNormal"),
            ("random_uniform", "RandomUniform"),
            ("orthogonal", "Orthogonal"),
        )
    },
    **{
        f"jax.{n}": ("jax", _jax_native(n), "jax:native=true")
        for n in (
            "glorot_uniform",
            "glorot_normal",
            "he_uniform",
            "he_normal",
            "lecun_uniform",
            "lecun_normal",
            "normal",
            "uniform",
            "truncated_normal",
            "orthogonal",
        )
    },
    "jax.variance_scaling": (
        "jax",
        _jax_native("variance_scaling", 1.0, "fan_in", "truncated_normal"),
        "jax:native=true",
    ),
}


def _native_row(preset: str, layer: str, seed: int) -> Row:
    backend, native, layout = NATIVES[preset]
    shape, _ = LAYERS[layer].form(BACKENDS[backend].family)
    spec = _presets.get(preset)
    dist = weight_plan(spec, shape, layout).dist
    theirs = native(shape, seed)
    ours = BACKENDS[backend].draw(spec, shape, layout, seed + 1)
    same = testing.same_distribution(theirs, ours)
    failures = same.failures
    if not isinstance(dist, OrthogonalDist):
        # The native draw's moments against the exact distribution. Support is not required of
        # a native sampler: Keras's torch backend leaves ~4e-6 of its truncated draws uncut.
        analytic = testing.check_samples(theirs, dist)
        failures += [
            f
            for c, f in zip(analytic.checks, map(str, analytic.checks), strict=True)
            if not c.ok and c.name in ("second_moment", "mean", "ks")
        ]
    return Row(
        f"{backend}-native",
        preset,
        layer,
        "native",
        dist.std,
        float(np.std(theirs)),
        _z(theirs, dist),
        same["ks_2samp"].statistic,
        not failures,
        int(theirs.size),
        failures,
    )


def run_iter(
    backends: Sequence[str] | None = None,
    presets: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    *,
    cross: bool = True,
    native: bool = True,
    seed: int = 0,
) -> Iterator[Row]:
    """Yield the matrix rows one by one (see :func:`run`)."""
    names = list(backends) if backends is not None else available_backends()
    _check_known("backend", names, BACKENDS)
    chosen = _chosen_presets(presets)
    for name in chosen:
        _spec(name)  # an unknown preset or argument fails here, with the valid names
    layer_names = list(layers) if layers is not None else list(LAYERS)
    _check_known("layer", layer_names, LAYERS)
    # Presets that are the same spec (he_normal, keras.he_normal, jax.he_normal, kaiming_normal)
    # draw the same values: their rows are computed once and reported under each name.
    memo: dict[tuple[Any, ...], list[Row]] = {}
    for preset in chosen:
        spec = _spec(preset)
        for layer in _layers_of(preset, layer_names):
            layer_seed = seed + 1000 * list(LAYERS).index(layer)  # independent draws per layer
            reference = None
            for backend in names:
                key = (backend, spec, layer)
                if key not in memo:
                    memo[key] = []
                    x, dist, layout = draw(backend, preset, layer, layer_seed)
                    memo[key].append(_analytic_row(backend, preset, layer, x, dist, layout))
                    if cross and not isinstance(dist, OrthogonalDist) and dist.variance != 0.0:
                        if backend == "numpy":
                            reference = x
                        else:
                            if reference is None:
                                reference, _, _ = draw("numpy", preset, layer, layer_seed + 1)
                            memo[key].append(_cross_row(backend, preset, layer, x, reference, dist))
                for row in memo[key]:
                    yield dataclasses.replace(row, preset=preset)
            if native and preset in NATIVES and NATIVES[preset][0] in names:
                yield _native_row(preset, layer, layer_seed)


def run(
    backends: Sequence[str] | None = None,
    presets: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    *,
    cross: bool = True,
    native: bool = True,
    seed: int = 0,
) -> list[Row]:
    """Run the matrix on ``backends`` (default: every installed one), ``presets`` (default: all)
    and ``layers`` (default: all of :data:`LAYERS`); fixed seeds, so the result is deterministic.

    ``presets`` may name :data:`EDGES` too (the default includes them, on :data:`EDGE_LAYERS`).
    Rows: "analytic" for each backend × preset × layer; "cross" for each non-NumPy backend
    against the NumPy reference; "native" where a preset reproduces a framework initializer
    (:data:`NATIVES`) and that framework's backend is among ``backends``."""
    return list(run_iter(backends, presets, layers, cross=cross, native=native, seed=seed))


def count(backends: Iterable[str], presets: Sequence[str] | None = None, layers: Sequence[str] | None = None) -> int:
    """How many analytic rows :func:`run` makes (for progress bars)."""
    layer_names = list(layers or LAYERS)
    return len(list(backends)) * sum(len(_layers_of(p, layer_names)) for p in _chosen_presets(presets))


# --- summaries -----------------------------------------------------------------------------------


def family(preset: str) -> str:
    """A preset's family: its source prefix (``torch``, ``keras``, ``tf1``, ...), or ``unqualified``
    for the unqualified names (the Keras/JAX definitions: ``he_normal``, ``zeros``, ...).

    Example:
        >>> family("torch.kaiming_normal:a=0.2"), family("he_normal")
        ('torch', 'unqualified')
    """
    name = preset.split(":", 1)[0]
    return name.split(".", 1)[0] if "." in name else "unqualified"


@dataclass(frozen=True)
class SummaryLine:
    """The checks of one backend on one preset family: how many, how many failed, and the slowest."""

    backend: str
    family: str
    checks: int
    failed: int
    slowest_s: float
    slowest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(rows: Sequence[Row], seconds: Sequence[float] | None = None) -> list[SummaryLine]:
    """One line per backend × preset family (in the order first seen), with ``seconds[i]`` the time
    spent on ``rows[i]`` (default 0): checks, failures, and the slowest row's time and name."""
    times = list(seconds) if seconds is not None else [0.0] * len(rows)
    if len(times) != len(rows):
        raise ValueError(f"summarize needs one time per row: {len(rows)} rows, {len(times)} times.")
    groups: dict[tuple[str, str], list[tuple[Row, float]]] = {}
    for row, t in zip(rows, times, strict=True):
        groups.setdefault((row.backend, family(row.preset)), []).append((row, t))
    lines = []
    for (backend, fam), members in groups.items():
        slow_row, slow_t = max(members, key=lambda m: m[1])
        lines.append(
            SummaryLine(
                backend,
                fam,
                len(members),
                sum(not r.passed for r, _ in members),
                slow_t,
                f"{slow_row.preset} {slow_row.layer} ({slow_row.comparison})",
            )
        )
    return lines
