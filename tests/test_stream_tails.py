"""Portable streams of one-sided, far-tail and narrow truncated normals (issue 16, item 1): the
reference and every backend's stream pass tests/_tails.py's checks (every value finite, inside
the bounds, KS-exact against the analytic CDF at α = 1e-4, moments at z = 4.5), and every backend
gives the reference's values (float32 to the bit; float64 within STREAM_ULPS ulps of the largest
|value|: the C library's or a backend's own log and ndtri against NumPy's).

Beyond −37σ (the interval mirrored to the lower tail) Φ underflows in float64 and the stream is
the offset from the bound (initscale.streams.far_values); a float32 stage (JAX without x64) takes
that form from −11σ. The Triton kernels are checked in tests/triton_cases.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from _tails import TAIL_CASES, tail_failures, tail_spec

from initscale import streams
from initscale.streams import Stream, stream_values

STREAM_CASES = (*TAIL_CASES, (38.3, math.inf), (-38.45, -38.3), (-math.inf, -38.0), (37.5, 37.5001))
STREAM_IDS = [f"[{a:g},{b:g}]" for a, b in STREAM_CASES]
FAR_ONLY = [(a, b) for a, b in STREAM_CASES if min(abs(a), abs(b)) > 37.0]
SHAPE = (400, 250)  # 100,000 draws: tests/_tails.py's TAIL_N
STREAM_ULPS = 8  # tests/test_streams.py: a backend's own log or ndtri against the reference's, float64


def _ulps(got: np.ndarray, ref: np.ndarray) -> float:
    """The largest difference in ulps of the reference's largest |value| (tests/test_streams.py's measure)."""
    return float(np.abs(got.astype(np.float64) - ref).max() / np.spacing(np.abs(ref).max().astype(ref.dtype)))


@pytest.fixture(params=["kernel", "torch ops"])
def torch_path(request, monkeypatch) -> str:
    from initscale._kernels import cpu as _stream_kernel

    if request.param == "kernel" and _stream_kernel.load() is None:
        pytest.skip("the stream kernel could not be built here (no C compiler)")
    if request.param == "torch ops":
        monkeypatch.setattr(_stream_kernel, "load", lambda: None)
    return str(request.param)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize(("a", "b"), STREAM_CASES, ids=STREAM_IDS)
def test_the_reference_stream_passes_the_tail_checks(a, b, dtype) -> None:
    values = stream_values(Stream(5, "tail"), tail_spec(a, b), SHAPE, "torch", dtype=dtype)
    assert tail_failures(values, a, b) == []


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize(("a", "b"), STREAM_CASES, ids=STREAM_IDS)
def test_torch_tail_streams_equal_the_reference(a, b, dtype, torch_path) -> None:
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    spec = tail_spec(a, b)
    got = ist.initializer(spec, "torch", stream=Stream(5, "tail"))(torch.empty(SHAPE, dtype=getattr(torch, dtype)))
    if dtype == "bfloat16":  # NumPy has no bfloat16: the checks, on the stored values
        assert tail_failures(got, a, b) == []
        return
    ref = stream_values(Stream(5, "tail"), spec, SHAPE, "torch", dtype=dtype)
    got = got.numpy()
    assert np.isfinite(got).all()
    if dtype != "float64":  # rounded once from the float64 stage
        assert np.array_equal(got, ref)
    else:  # the C library's or torch's log and torch's ndtri against NumPy's
        assert _ulps(got, ref) <= STREAM_ULPS


@pytest.mark.parametrize(("a", "b"), STREAM_CASES, ids=STREAM_IDS)
def test_jax_float32_tail_streams_pass_the_checks_within_the_stated_bound(a, b) -> None:
    """Without x64 the float stage is float32 (Φ(−20) underflows there): from −11σ it takes the
    offset from the bound; within 8 float32 ulps of the largest |value| of the reference, as
    tests/test_streams.py states for every stream."""
    jax = pytest.importorskip("jax")
    isj = pytest.importorskip("initscale.adapters.jax")
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on: the float64 stage is checked in a subprocess")
    spec = tail_spec(a, b)
    got = np.asarray(isj.initializer(spec, layout="torch", stream=Stream(5, "tail"))(None, SHAPE))
    assert tail_failures(got, a, b) == []
    ref = stream_values(Stream(5, "tail"), spec, SHAPE, "torch", dtype="float64")
    assert np.abs(got.astype(np.float64) - ref).max() <= 8 * np.spacing(np.float32(np.abs(ref).max()))


_OTHER_BACKENDS = """
import math, numpy as np
inf = math.inf
from initscale.streams import Stream, stream_values
import initscale
problems = []
for a, b in {cases!r}:
    spec = initscale.TruncatedNormal(1.0, lower=a, upper=b)
    for dtype in ("float32", "float64"):
        ref = stream_values(Stream(5, "tail"), spec, (400, 250), "keras.dense", dtype=dtype)
        got = np.asarray(DRAW(spec, dtype))
        err = np.abs(got.astype(np.float64) - ref).max() / np.spacing(np.abs(ref).max().astype(ref.dtype))
        if not np.isfinite(got).all() or (err > 0 if dtype == "float32" else err > {ulps}):
            problems.append(f"[{{a}}, {{b}}] {{dtype}}: {{err}} ulps, {{int((~np.isfinite(got)).sum())}} not finite")
print(problems)
"""
_DRAWS = {
    "jax-x64": (
        "import jax.numpy as jnp\nfrom initscale.adapters import jax as isj\n"
        "DRAW = lambda spec, dtype: isj.initializer(spec, layout='keras.dense', stream=Stream(5, 'tail'))"
        "(None, (400, 250), getattr(jnp, dtype))\n",
        {"JAX_ENABLE_X64": "1"},
    ),
    "keras-tensorflow": (
        "import keras\nfrom initscale.adapters import keras as isk\n"
        "DRAW = lambda spec, dtype: keras.ops.convert_to_numpy(isk.initializer(spec, "
        "layout='keras.dense', stream=Stream(5, 'tail'))((400, 250), dtype))\n",
        {"KERAS_BACKEND": "tensorflow"},
    ),
}


def _other_backend(name: str, cases: list[tuple[float, float]]) -> list[str]:
    prelude, env = _DRAWS[name]
    code = prelude + _OTHER_BACKENDS.format(cases=cases, ulps=STREAM_ULPS)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return eval(done.stdout.strip().splitlines()[-1])  # a list of strings, printed by the code above


@pytest.mark.parametrize("name", sorted(_DRAWS))
def test_far_tail_streams_on_jax_x64_and_keras_tensorflow_equal_the_reference(name) -> None:
    """float32 to the bit, float64 within STREAM_ULPS (each backend's own log), every value finite;
    Keras on JAX and on torch draw through the JAX and torch adapters, checked above."""
    pytest.importorskip("jax" if name == "jax-x64" else "tensorflow")
    assert _other_backend(name, [*FAR_ONLY, (20.0, 20.5), (-math.inf, -4.5)]) == []


# --- mutations: the checks above fail on the planted bugs ---------------------------------------------


def _no_far_branch(monkeypatch) -> None:
    """Φ⁻¹(pa + u·(pb − pa)) at any distance (the stream before issue 16's fix): Φ(−38.3) is subnormal."""
    monkeypatch.setattr(streams, "_far_plan", lambda dist, work: None)


def _float64_thresholds_in_float32(monkeypatch) -> None:
    """A float32 stage planned with float64's thresholds: Φ(−20) = 2.8e-89 rounds to 0 in float32."""
    real = streams._far_plan
    monkeypatch.setattr(streams, "_far_plan", lambda dist, work: real(dist, "float64"))


def _reversed_far_reference(monkeypatch) -> None:
    """The reference's far quantile taken at 1 − u: the same distribution, other values than the kernels'."""
    real = streams.far_values
    monkeypatch.setattr(streams, "far_values", lambda plan, u, xp: real(plan, 1.0 - u, xp))


def test_mutation_no_far_branch_fails_the_reference_tail_check(monkeypatch) -> None:
    _no_far_branch(monkeypatch)
    found = tail_failures(stream_values(Stream(5, "tail"), tail_spec(38.3, math.inf), SHAPE, "torch"), 38.3, math.inf)
    assert any(f.startswith("finite") for f in found), found


def test_mutation_float64_thresholds_fail_the_jax_float32_check(monkeypatch) -> None:
    jax = pytest.importorskip("jax")
    isj = pytest.importorskip("initscale.adapters.jax")
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on")
    _float64_thresholds_in_float32(monkeypatch)
    isj._stream_compiled.clear_cache()  # the program was traced with the real plan
    try:
        got = np.asarray(isj.initializer(tail_spec(20.0, 20.5), layout="torch", stream=Stream(5, "tail"))(None, SHAPE))
    finally:
        monkeypatch.undo()
        isj._stream_compiled.clear_cache()
    assert tail_failures(got, 20.0, 20.5) != []


def test_mutation_a_reversed_reference_fails_the_equality_check(monkeypatch) -> None:
    """Distribution checks cannot see which end of the quantile u maps to; the equality with the
    compiled kernel can."""
    torch = pytest.importorskip("torch")
    ist = pytest.importorskip("initscale.adapters.torch")
    spec = tail_spec(38.3, math.inf)
    got = ist.initializer(spec, "torch", stream=Stream(5, "tail"))(torch.empty(SHAPE, dtype=torch.float64)).numpy()
    _reversed_far_reference(monkeypatch)
    ref = stream_values(Stream(5, "tail"), spec, SHAPE, "torch", dtype="float64")
    assert tail_failures(ref, 38.3, math.inf) == []  # still the right distribution
    assert _ulps(got, ref) > STREAM_ULPS
