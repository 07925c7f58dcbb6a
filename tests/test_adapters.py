"""What every adapter must do beyond the parity matrix, one property per test, each run once per
backend by the ``backend`` fixture (tests/conftest.py): the test id names the backend.

The matrix (tests/test_parity.py) checks each backend's float32 draws of every preset on every
logical layer; here: the other float dtypes, seeds, zero-size and rank-1 shapes, bad input, and
the far-tail truncated normals in every dtype. What only one framework has (torch's in-place
fills and devices, JAX's keys and complex weights, Keras's serialization, ...) stays in that
adapter's own test file. tests/test_keras_backends.py reruns this file with ``keras`` on each
Keras backend, each in its own process.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import pytest
from _backends import BACKEND_NAMES
from _tails import TAIL_CASES, TAIL_SHAPE, tail_failures, tail_spec

import initscale
from _stats import failures
from initscale import parity, presets

HE = presets.get("he_normal")
SHAPE = (400, 500)  # 200,000 draws per check
# A 2-D layout per backend, so that every backend reads SHAPE's fans the same way: in 400, out 500
# (torch stores (out, in): its SHAPE is transposed).
LAYOUT = {"numpy": "keras.dense", "torch": "torch.linear", "jax": "flax.dense", "keras": "keras.dense"}
LAYOUT["tf_keras"] = "keras.dense"
FORM = {"torch": lambda shape: shape[::-1]}  # the backend's form of an (in, out) shape

# The float dtypes each adapter draws (float32, the frameworks' default, is the matrix's).
DTYPES = {
    "numpy": ("float16", "float32", "float64"),  # the matrix draws the reference in float64
    "torch": ("float16", "bfloat16", "float64"),
    "jax": ("float16", "bfloat16"),  # float64 needs jax_enable_x64
    "keras": ("float16", "bfloat16", "float64"),  # float64: not on JAX without x64 (skipped there)
    "tf_keras": ("float16", "bfloat16", "float64"),
}
DTYPE_CASES = [(b, d) for b in BACKEND_NAMES for d in DTYPES.get(b, ())]
# The three families of samplers: truncated normal, uniform, normal.
DTYPE_SPECS = ["he_normal", "glorot_uniform", "torch.kaiming_normal"]


def _adapter(backend: str) -> Any:
    return importlib.import_module(f"initscale.adapters.{backend}")


def _draw(
    backend: str, spec: Any, shape: tuple[int, ...], dtype: str = "float32", seed: Any = 0, layout: Any = None
) -> Any:
    """``backend``'s initializer of ``spec`` on ``shape`` (its own form), in ``dtype``, as the
    framework's array; ``seed`` an int, or the framework's stateful source (a NumPy or torch
    Generator); ``layout`` None: :data:`LAYOUT`'s."""
    adapter, layout = _adapter(backend), layout or LAYOUT[backend]
    if backend == "numpy":
        return adapter.initializer(spec, layout)(shape, rng=seed, dtype=dtype)
    if backend == "torch":
        torch = importlib.import_module("torch")
        t = torch.empty(shape, dtype=getattr(torch, dtype))
        generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        return adapter.initializer(spec, layout)(t, generator=generator)
    if backend == "jax":
        jax = importlib.import_module("jax")
        return adapter.initializer(spec, layout)(jax.random.key(seed), shape, getattr(jax.numpy, dtype))
    return adapter.initializer(spec, layout, seed=seed)(shape, dtype)


def _numpy(backend: str, x: Any) -> np.ndarray:
    """A draw as NumPy in its own dtype (bfloat16 as ml_dtypes'); torch's as float64 (exact)."""
    if backend == "torch":
        return x.double().numpy() if x.dtype.is_floating_point else x.numpy()
    if backend == "keras":
        return np.asarray(importlib.import_module("keras").ops.convert_to_numpy(x))
    if backend == "tf_keras":
        return np.asarray(x.numpy())
    return np.asarray(x)


def _dtype(backend: str, x: Any) -> str:
    """The dtype's name (``bfloat16``, ...) of a draw."""
    if backend == "torch":
        return str(x.dtype).removeprefix("torch.")
    return np.dtype(_numpy(backend, x).dtype).name


def _skip_float64_without_x64(backend: str, dtype: str) -> None:
    if dtype == "float64" and backend == "keras":
        keras = importlib.import_module("keras")
        if keras.backend.backend() == "jax" and not importlib.import_module("jax").config.jax_enable_x64:
            pytest.skip("JAX without jax_enable_x64 has no float64")


@pytest.mark.parametrize("name", DTYPE_SPECS)
@pytest.mark.parametrize(("backend", "dtype"), DTYPE_CASES, indirect=["backend"])
def test_draws_keep_the_distribution_in_every_float_dtype(backend, dtype, name) -> None:
    """The weight has the dtype asked for and the spec's whole distribution (the checks allow the
    dtype's rounding: one ulp on the bounds, the rounding-aware KS)."""
    _skip_float64_without_x64(backend, dtype)
    spec = presets.get(name)
    shape = FORM.get(backend, tuple)(SHAPE)
    out = _draw(backend, spec, shape, dtype, seed=1)
    assert _dtype(backend, out) == dtype
    dist = spec.resolve(initscale.compute_fans(shape, LAYOUT[backend]))
    assert failures(out, dist) == []


def test_a_seed_gives_the_same_values_and_a_stateful_source_moves_on(backend) -> None:
    """The same seed (NumPy ``rng=``, torch ``generator=``, JAX key, Keras ``seed=``) draws the
    same values; a stateful source (a Generator, Keras's SeedGenerator or no seed) draws new ones."""
    shape = (8, 6)
    same = _numpy(backend, _draw(backend, HE, shape, seed=3))
    assert np.array_equal(same, _numpy(backend, _draw(backend, HE, shape, seed=3)))
    assert not np.array_equal(same, _numpy(backend, _draw(backend, HE, shape, seed=4)))
    if backend == "numpy":
        rng = np.random.default_rng(3)
        stateful = [_draw(backend, HE, shape, seed=rng) for _ in range(2)]
    elif backend == "torch":
        g = importlib.import_module("torch").Generator().manual_seed(3)
        stateful = [_draw(backend, HE, shape, seed=g) for _ in range(2)]
    elif backend == "jax":
        return  # JAX keys are explicit: there is no stateful source
    else:
        sources = [None]
        if backend == "keras":
            sources.append(importlib.import_module("keras").random.SeedGenerator(5))
        for source in sources:
            init = _adapter(backend).initializer(HE, LAYOUT[backend], seed=source)
            stateful = [init(shape) for _ in range(2)]
            assert not np.array_equal(*(_numpy(backend, x) for x in stateful)), source
        return
    assert not np.array_equal(*(_numpy(backend, x) for x in stateful))


def test_zero_size_and_rank_one_weights(backend) -> None:
    """A zero-size weight is drawn without error (nothing to draw); fixed-scale specs fill any
    rank, rank 1 included (they need no fans)."""
    empty = _draw(backend, HE, FORM.get(backend, tuple)((0, 7)))
    assert tuple(empty.shape) == FORM.get(backend, tuple)((0, 7))
    assert _numpy(backend, _draw(backend, initscale.Zeros(), (5,))).tolist() == [0.0] * 5
    assert _numpy(backend, _draw(backend, initscale.Constant(0.5), (2,))).tolist() == [0.5, 0.5]


def test_orthogonal_blocks_are_orthogonal_to_the_dtype_precision(backend) -> None:
    """Each gate's block of an LSTM kernel (parity's lstm_gates form: 4 blocks of 256 × 128) is
    orthogonal, QᵀQ = g²·I, to 1e-10·g² in float64 (float32, where the backend has no float64:
    1e-4·g², the matrix's tolerance). The matrix checks float32 draws at 1e-4 only."""
    dtype = "float32" if backend == "jax" else "float64"
    if backend == "keras" and importlib.import_module("keras").backend.backend() == "jax":
        dtype = "float64" if importlib.import_module("jax").config.jax_enable_x64 else "float32"
    shape, layout = parity.LAYERS["lstm_gates"].form(parity.BACKENDS[backend].family)
    w = _numpy(backend, _draw(backend, initscale.Orthogonal(1.5), shape, dtype, seed=2, layout=layout))
    blocks = (
        [w[g * 256 : (g + 1) * 256] for g in range(4)]
        if backend == "torch"
        else [w[:, g * 256 : (g + 1) * 256].T for g in range(4)]
    )
    assert _orthogonality_error(blocks, 1.5) <= _ORTHOGONAL_TOL[dtype] * 1.5**2


# float64 QR leaves |QᵀQ − I| at a few ulps·√n (~1e-14 for n = 256); float32's ~1e-6: 1e-10 tells them apart
_ORTHOGONAL_TOL = {"float64": 1e-10, "float32": 1e-4}


def _orthogonality_error(blocks: list[np.ndarray], gain: float) -> float:
    """max |MᵀM − g²·I| over the (256, 128) blocks: their 128 columns are orthonormal·g."""
    return max(
        float(np.abs(m.astype(np.float64).T @ m.astype(np.float64) - gain**2 * np.eye(128)).max()) for m in blocks
    )


def test_orthogonal_blocks_rounded_through_float32_are_caught() -> None:
    """Mutation: a float64 orthogonal weight computed in float32 (a QR of float32 draws) fails the
    float64 tolerance above, while the float64 one passes (the control)."""
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((256, 128)))[0] * 1.5
    assert _orthogonality_error([q], 1.5) <= _ORTHOGONAL_TOL["float64"] * 1.5**2
    rounded = [q.astype(np.float32).astype(np.float64)]
    assert _orthogonality_error(rounded, 1.5) > _ORTHOGONAL_TOL["float64"] * 1.5**2


INTEGER = {  # what each adapter says of an integer dtype
    "numpy": "`dtype` must be one of 'float16', 'float32', 'float64'",
    "torch": "floating-point tensors only",
    "jax": "floating-point or complex weights only",
    "keras": "floating-point values only",
    "tf_keras": "floating-point values only",
}


def test_integer_dtypes_are_refused(backend) -> None:
    for dtype in ("int32", "bool") if backend == "torch" else ("int32",):
        with pytest.raises(TypeError, match=INTEGER[backend]):
            _draw(backend, HE, (3, 4), dtype)


def test_a_spec_that_is_not_a_spec_is_refused(backend) -> None:
    with pytest.raises(TypeError, match="`spec` must be an initscale spec"):
        _adapter(backend).initializer("he_normal")


def test_a_shape_that_does_not_fit_the_layout_is_refused(backend) -> None:
    """Before drawing: a rank the layout has no axis for; groups that do not divide the channels."""
    # a generic layout has no axis for it; a dense layer kind (keras.dense) says it needs rank 2
    with pytest.raises(ValueError, match=r"needs axis -?\d, but shape \(3,\) has rank 1|rank 2 .*shape=\(3,\)"):
        _draw(backend, HE, (3,))
    grouped = {"torch": ("torch.conv:groups=3", (8, 4, 3, 3)), "jax": ("flax.conv:groups=3", (3, 3, 4, 8))}
    layout, shape = grouped.get(backend, ("keras.conv:groups=3", (3, 3, 4, 8)))
    with pytest.raises(ValueError, match="does not divide"):
        _draw(backend, HE, shape, layout=layout)


# --- far-tail, one-sided and narrow truncated normals (issue 16) -------------------------------------

TAIL_DTYPES = {
    "numpy": ("float64",),  # the reference draws in float64
    "torch": ("float32", "bfloat16", "float16", "float64"),
    "jax": ("float32", "bfloat16", "float16"),
    "keras": ("float32", "bfloat16", "float16"),
    "tf_keras": ("float32", "bfloat16", "float16"),
}
# float32 draws of the intervals that are also the matrix's distribution edges (parity.EDGES, on
# its dense layer) are its rows already (test_parity.py::test_distribution_edges_*)
_EDGE_INTERVALS = {(s.lower, s.upper) for s in parity.EDGES.values()}
TAIL_PARAMS = [
    pytest.param(b, d, a, z, id=f"{b}-{d}-[{a:g},{z:g}]")
    for b in BACKEND_NAMES
    for d in TAIL_DTYPES.get(b, ())
    for a, z in TAIL_CASES
    if not (d == "float32" and (a, z) in _EDGE_INTERVALS)
]


@pytest.mark.parametrize(("backend", "dtype", "a", "b"), TAIL_PARAMS, indirect=["backend"])
def test_tail_truncated_normals_are_exact(backend, dtype, a, b) -> None:
    """Every value finite and inside [a, b]; the law by KS at α = 1e-4 against initscale's and
    SciPy's CDFs; the moments at z = 4.5 in float32/float64 (tests/_tails.py). The work is float64,
    or float32 on JAX without x64 (where erf(−6/√2) = −1 and Φ(−20) underflows); bfloat16 and
    float16 weights through a float32 stage."""
    out = _draw(backend, tail_spec(a, b), TAIL_SHAPE, dtype, seed=11)
    assert _dtype(backend, out) == dtype
    assert tail_failures(out if backend == "torch" else _numpy(backend, out), a, b) == []


def test_the_tail_intervals_that_the_matrix_covers_are_its_edges() -> None:
    """The float32 cases left out above are exactly parity.EDGES' intervals (a rename there shows)."""
    assert _EDGE_INTERVALS <= set(TAIL_CASES) and math.inf in {z for _, z in _EDGE_INTERVALS}
