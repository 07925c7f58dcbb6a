"""The parity matrix (initscale.parity): one test per property, parametrized over a `backend`
fixture × every preset × every logical layer, so a failure's id names the backend, preset and
layer that broke.

Properties: (a) each backend's draw has the preset's exact distribution at the layer's forward
fans; (b) each backend draws the same distribution as the NumPy reference; (c) where a preset
reproduces a framework's own initializer, the native draw and initscale's native-compat draw
agree. The ``backend`` fixture (tests/conftest.py) runs each test once per backend of the
adapter registry; a backend named in INITSCALE_REQUIRE that cannot be imported fails instead of
skipping. Keras runs here on this process's Keras backend; tests/test_keras_backends.py reruns the
Keras rows on the other backends, each in its own process.
"""

from __future__ import annotations

from functools import cache

import pytest
from _backends import BACKEND_NAMES

import initscale
from initscale import parity, presets

PRESETS = presets.names()
LAYERS = list(parity.LAYERS)
# constant and orthogonal specs are compared exactly (values, orthogonality) in the analytic test
EXACT = (initscale.Orthogonal, initscale.Constant, initscale.Zeros, initscale.Ones)
SAMPLED = [p for p in PRESETS if not isinstance(presets.get(p), EXACT)]


@cache
def _all_rows() -> dict[tuple[str, str, str, str], parity.Row]:
    # One run over NumPy and every importable backend of this process: the NumPy reference is drawn
    # and checked once, not once per backend (the same rows, seeds and references as a run per
    # backend; the fixture has already failed or skipped a backend that does not import).
    names = ["numpy", *(b for b in parity.available_backends() if b in BACKEND_NAMES and b != "numpy")]
    return {(r.comparison, r.backend, r.preset, r.layer): r for r in parity.run(backends=names)}


def _check(row: parity.Row) -> None:
    assert row.passed, "\n".join(
        [
            f"{row.backend} {row.preset} {row.layer} ({row.comparison}): expected std "
            f"{row.expected_std:.6g}, measured {row.measured_std:.6g}, z={row.z:.2f}",
            *row.failures,
        ]
    )


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("preset", PRESETS)
def test_draws_match_the_analytic_distribution(backend, preset, layer) -> None:
    _check(_all_rows()[("analytic", backend, preset, layer)])


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("preset", SAMPLED)
@pytest.mark.parametrize("backend", [b for b in BACKEND_NAMES if b != "numpy"], indirect=True)
def test_draws_match_the_numpy_reference(backend, preset, layer) -> None:
    _check(_all_rows()[("cross", backend, preset, layer)])


NATIVE_CASES = [(parity.NATIVES[p][0], p) for p in sorted(parity.NATIVES) if parity.NATIVES[p][0] in BACKEND_NAMES]


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize(("backend", "preset"), NATIVE_CASES, indirect=["backend"])
def test_native_initializer_matches(backend, preset, layer) -> None:
    _check(_all_rows()[("native", f"{backend}-native", preset, layer)])


def test_layer_forms_agree_on_the_fans() -> None:
    """Every framework's form of a logical layer has the same forward fans."""
    for layer in parity.LAYERS.values():
        fans = {family: initscale.compute_fans(*layer.form(family)) for family in ("torch", "keras", "flax")}
        assert len({(f.fan_in, f.fan_out) for f in fans.values()}) == 1, (layer.name, fans)


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown backend 'mxnet'; valid: jax, keras, numpy, tf_keras, torch"):
        parity.run(backends=["mxnet"])
    with pytest.raises(ValueError, match="Unknown layer 'rnn'"):
        parity.run(backends=["numpy"], layers=["rnn"])
    with pytest.raises(ValueError, match="preset"):
        parity.run(backends=["numpy"], presets=["he_normall"])


# Distribution edges (issue 16): far-tail, one-sided and narrow truncated normals on EDGE_LAYERS.
@pytest.mark.parametrize("layer", parity.EDGE_LAYERS)
@pytest.mark.parametrize("preset", sorted(parity.EDGES))
def test_distribution_edges_match_the_analytic_distribution(backend, preset, layer) -> None:
    _check(_all_rows()[("analytic", backend, preset, layer)])


@pytest.mark.parametrize("layer", parity.EDGE_LAYERS)
@pytest.mark.parametrize("preset", sorted(parity.EDGES))
@pytest.mark.parametrize("backend", [b for b in BACKEND_NAMES if b != "numpy"], indirect=True)
def test_distribution_edges_match_the_numpy_reference(backend, preset, layer) -> None:
    _check(_all_rows()[("cross", backend, preset, layer)])


def test_edges_run_on_their_layers_only() -> None:
    rows = parity.run(backends=["numpy"], presets=sorted(parity.EDGES))
    assert {r.layer for r in rows} == set(parity.EDGE_LAYERS)
    assert len(rows) == parity.count(["numpy"], sorted(parity.EDGES))
