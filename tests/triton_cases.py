"""Cases for the fused Triton samplers (truncated normals; float16/bfloat16 uniforms): they draw
exactly the spec's distribution, inside the bounds that hold in the stored dtype.

Run by tests/test_triton_sampler.py in a fresh process: natively on a GPU, else under Triton's
interpreter, which must be switched on (TRITON_INTERPRET=1) before Triton is first imported.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import initscale
from _stats import failures
from initscale import presets
from initscale.distributions import TruncatedNormalDist, UniformDist
from initscale.rounding import representable_bounds
from initscale.streams import kernel_params

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
ist = pytest.importorskip("initscale.adapters.torch")
from initscale._kernels import gpu as _triton_sampler  # noqa: E402
from initscale._kernels import torch_ops  # noqa: E402

SHAPE = (400, 500)  # 200,000 draws per check
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


CASES = [
    "he_normal",
    "lecun_normal",
    "tf1.variance_scaling_initializer",
    "torch.trunc_normal:std=0.5,a=0.2,b=1.0",  # an upper-tail interval (drawn mirrored)
    "torch.trunc_normal:std=1,a=-5,b=4.5",  # beyond ±4σ: float64 registers
    "he_uniform",
    "torch.uniform:a=-0.1,b=0.1",
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", CASES)
def test_the_adapter_routes_to_the_kernel_and_draws_the_distribution(name, dtype, monkeypatch) -> None:
    spec = presets.get(name)
    dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(SHAPE, "torch"))
    t = torch.empty(SHAPE, dtype=getattr(torch, dtype), device=DEVICE)
    calls = []
    real = _triton_sampler.fill
    monkeypatch.setattr(_triton_sampler, "fill", lambda *a, **k: calls.append(1) or real(*a, **k))
    # under the interpreter the tensors are on the CPU, where the compiled CPU sampler comes first
    # (tests/test_torch_sampler.py); this test is about the Triton route, which a GPU tensor takes
    monkeypatch.setattr(torch_ops, "sampler_ready", lambda *a: None)
    ist.init_(t, spec, generator=torch.Generator(device=DEVICE).manual_seed(1))
    # float32 uniforms, and float32 truncated normals of torch.* presets: torch's own calls
    routed = dtype != "float32" or (isinstance(dist, TruncatedNormalDist) and dist.native is None)
    assert len(calls) == int(routed)
    assert failures(t.cpu(), dist) == []  # mean, second moment, support, reach of the bounds, KS
    if not isinstance(dist, TruncatedNormalDist | UniformDist):
        return
    low, high = representable_bounds(dist.low, dist.high, str(t.dtype))
    x = t.double().cpu().numpy()
    assert low <= x.min() and x.max() <= high  # stored inside the bounds


def test_a_generator_seed_reproduces_the_draw() -> None:
    spec = presets.get("he_normal")
    draws = []
    for seed in (3, 3, 4):
        t = torch.empty(64, 128, device=DEVICE)
        ist.init_(t, spec, generator=torch.Generator(device=DEVICE).manual_seed(seed))
        draws.append(t.cpu())
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def _uncorrected(dist: TruncatedNormalDist) -> TruncatedNormalDist:
    s = dist.std  # σ = √(scale/n): the /0.8796 correction forgotten
    a, b = dist.standard_bounds
    return TruncatedNormalDist(dist.loc, s, dist.loc + a * s, dist.loc + b * s)


@pytest.mark.parametrize("bug", ["no truncation correction", "uniform limit sqrt(var)"])
def test_the_checks_catch_planted_bugs_in_the_kernel(bug) -> None:
    """The same checks fail when the kernel is given a classic wrong parameterization."""
    fans = initscale.compute_fans(SHAPE, "torch")
    if bug == "no truncation correction":
        dist = presets.get("he_normal").resolve(fans)
        planted = _uncorrected(dist)
        dtype = torch.float32
    else:
        dist = presets.get("he_uniform").resolve(fans)
        half = math.sqrt(dist.variance)
        planted = UniformDist(-half, half)
        dtype = torch.bfloat16
    for drawn, ok in ((dist, True), (planted, False)):
        t = torch.empty(SHAPE, dtype=dtype, device=DEVICE)
        code, params = kernel_params(drawn)
        _triton_sampler.fill(
            t,
            code,
            params,
            representable_bounds(drawn.low, drawn.high, str(dtype)),
            False,
            torch.Generator(device=DEVICE).manual_seed(0),
        )
        assert (failures(t.cpu(), dist) == []) is ok, bug


def test_switched_off_or_unsuitable_tensors_keep_the_torch_path(monkeypatch) -> None:
    assert not _triton_sampler.usable(torch.empty(4, 4, dtype=torch.float64, device=DEVICE))
    assert not _triton_sampler.usable(torch.empty(4, 4, device=DEVICE).t()[:, :2])
    monkeypatch.setenv("INITSCALE_TRITON", "0")
    assert not _triton_sampler.usable(torch.empty(4, 4, device=DEVICE))
    monkeypatch.delenv("INITSCALE_TRITON")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if DEVICE == "cpu":
        assert not _triton_sampler.usable(torch.empty(4, 4))  # a CPU tensor, no interpreter
    with pytest.raises(ValueError, match="uniforms"):
        _triton_sampler.fill(torch.empty(4, device=DEVICE), 2, (0.0, 1.0), None, False, None)
    assert np.isfinite(0.0)


STREAM_CASES = [
    ((129, 257), "torch.linear"),
    ((9, 4, 3, 3), "torch.conv"),
    ((60, 7), "torch.gru"),
    ((3, 3, 4, 9), "keras.conv"),
    ((2, 3, 4, 5, 6, 7), "torch.conv"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_the_triton_stream_equals_the_reference(dtype, monkeypatch) -> None:
    """Through the adapter (the C kernel switched off, so the Triton kernel serves this CPU tensor
    under the interpreter; natively on a GPU): every distribution, layouts of 2 to 6 axes, float16
    equal to the reference (rounded once), bfloat16 equal to the torch-ops path."""
    from initscale._kernels import cpu as _stream_kernel
    from initscale.streams import Stream, stream_values

    monkeypatch.setattr(_stream_kernel, "load", lambda: None)
    used = []
    real = _triton_sampler.stream_fill
    monkeypatch.setattr(_triton_sampler, "stream_fill", lambda *a, **k: used.append(1) or real(*a, **k))
    for name in ("he_uniform", "torch.kaiming_normal", "he_normal", "torch.trunc_normal:std=0.5,a=0.2,b=1.0", "ones"):
        spec = presets.get(name)
        for shape, layout in STREAM_CASES:
            fn = ist.initializer(spec, layout, stream=Stream(8, "w"))
            got = fn(torch.empty(shape, dtype=getattr(torch, dtype), device=DEVICE)).cpu()
            if dtype == "bfloat16":
                with monkeypatch.context() as m:  # the torch-ops path, for comparison
                    m.setattr(_triton_sampler, "stream_usable", lambda t: False)
                    assert torch.equal(got, fn(torch.empty(shape, dtype=torch.bfloat16))), (name, shape)
                continue
            ref = stream_values(Stream(8, "w"), spec, shape, layout, dtype=dtype)
            if DEVICE == "cpu" or dtype != "float64":
                assert np.array_equal(got.numpy(), ref), (name, shape, layout, dtype)
            else:  # the GPU's float64 log may differ from NumPy's by an ulp
                assert np.abs(got.numpy().view(np.int64) - ref.view(np.int64)).max() <= 8, (name, shape, layout)
    assert used


def test_the_triton_stream_of_a_shard_is_that_box_of_the_whole() -> None:
    from initscale.streams import Stream, stream_values

    spec = presets.get("he_normal")
    whole = stream_values(Stream(4, "w"), spec, (96, 80), "torch.linear")
    code, params = kernel_params(spec.resolve(initscale.compute_fans((96, 80), "torch.linear")))
    shard = torch.empty(96, 40, device=DEVICE)
    _triton_sampler.stream_fill(shard, Stream(4, "w").key, (80, 1), (0, 40), code, params, None)
    assert np.array_equal(shard.cpu().numpy(), whole[:, 40:])


def test_triton_failures_name_the_way_out(monkeypatch, tmp_path) -> None:
    """A kernel that fails to launch raises an error naming INITSCALE_TRITON=0; kernels that cannot
    load warn once and leave torch's ops in charge."""

    class Broken:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                raise ValueError("no such device feature")

            return run

    with pytest.raises(RuntimeError, match="INITSCALE_TRITON=0"):
        _triton_sampler._launch(Broken(), (1,))
    monkeypatch.setenv("INITSCALE_CACHE", str(tmp_path))
    monkeypatch.setattr(_triton_sampler, "_SOURCE", "import triton\nraise ImportError('broken build')\n")
    _triton_sampler._kernel.cache_clear()
    with pytest.warns(RuntimeWarning, match="broken build"):
        assert _triton_sampler._kernel() is None
    assert not _triton_sampler.usable(torch.empty(4, device=DEVICE))
    _triton_sampler._kernel.cache_clear()


def test_triton_is_not_loaded_after_tensorflow(monkeypatch) -> None:
    """Triton imported after TensorFlow aborts the process (both register LLVM's options): with
    TensorFlow loaded (here a stand-in), the kernels are skipped with a warning."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    _triton_sampler._kernel.cache_clear()
    with pytest.warns(RuntimeWarning, match="TensorFlow is loaded"):
        assert _triton_sampler._kernel() is None
    _triton_sampler._kernel.cache_clear()


# --- one-sided, far-tail and narrow truncated normals (issue 16, item 1) -------------------------------

TAIL_SAMPLER_CASES = [
    (3.0, math.inf),
    (-math.inf, -4.5),
    (6.0, math.inf),
    (5.5, 6.5),
    (4.2, 4.4),
    (8.5, math.inf),
    (20.0, 20.5),
    (-math.inf, -30.0),
    (38.3, math.inf),
    (-38.45, -38.3),
]
TAIL_SAMPLER_DTYPES = [(case, "float32") for case in TAIL_SAMPLER_CASES] + [
    ((6.0, math.inf), "bfloat16"),
    ((20.0, 20.5), "bfloat16"),
    ((38.3, math.inf), "bfloat16"),
    ((4.2, 4.4), "float16"),
]


@pytest.mark.parametrize(
    ("case", "dtype"), TAIL_SAMPLER_DTYPES, ids=[f"[{a:g},{b:g}]-{d}" for (a, b), d in TAIL_SAMPLER_DTYPES]
)
def test_the_fused_sampler_draws_exact_tails(case, dtype) -> None:
    """Through the adapter: every value finite, inside the bounds, KS-exact (tests/_tails.py)."""
    from _tails import TAIL_SHAPE, tail_failures, tail_spec

    a, b = case
    t = torch.empty(TAIL_SHAPE, dtype=getattr(torch, dtype), device=DEVICE)
    assert _triton_sampler.usable(t)
    ist.init_(t, tail_spec(a, b), generator=torch.Generator(device=DEVICE).manual_seed(2))
    assert tail_failures(t.cpu(), a, b) == []


def _old_sampler_params(dist):
    """The planted bug: Φ⁻¹(pa + u·(pb − pa)) at any distance (the kernel before issue 16's fix),
    float64 registers beyond ±4σ; Φ(−38.3) is subnormal and the one-sided pa is 0."""
    code, params = kernel_params(dist)
    if code == 4:  # rebuild the plain form kernel_params had
        from initscale.normal_math import normal_cdf

        a, b = dist.standard_bounds
        pa, pb = normal_cdf(-b), normal_cdf(-a)
        code, params = 3, (pa, pb - pa, -b, -a, dist.loc, -dist.sigma)
    a, b = dist.standard_bounds
    return code, params, max(abs(a), abs(b)) > 4.0


def test_the_tail_check_catches_the_old_sampler_form(monkeypatch) -> None:
    from _tails import TAIL_SHAPE, tail_failures, tail_spec

    monkeypatch.setattr(_triton_sampler, "sampler_params", _old_sampler_params)
    t = torch.empty(TAIL_SHAPE, device=DEVICE)
    ist.init_(t, tail_spec(38.3, math.inf), generator=torch.Generator(device=DEVICE).manual_seed(2))
    found = tail_failures(t.cpu(), 38.3, math.inf)
    assert any(f.startswith("finite") for f in found), found


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_far_tail_triton_streams_equal_the_reference(dtype, monkeypatch) -> None:
    """The stream's far-tail form (initscale.streams.far_values) in the Triton kernel: equal to
    the reference (float64 under the interpreter; on a GPU within 8 ulps: its log)."""
    from _tails import tail_spec

    from initscale._kernels import cpu as _stream_kernel
    from initscale.streams import Stream, stream_values

    monkeypatch.setattr(_stream_kernel, "load", lambda: None)
    for a, b in [(38.3, math.inf), (-38.45, -38.3), (-math.inf, -38.0), (20.0, 20.5), (-math.inf, -4.5)]:
        spec = tail_spec(a, b)
        got = (
            ist.initializer(spec, "torch", stream=Stream(8, "w"))(
                torch.empty((129, 257), dtype=getattr(torch, dtype), device=DEVICE)
            )
            .cpu()
            .numpy()
        )
        ref = stream_values(Stream(8, "w"), spec, (129, 257), "torch", dtype=dtype)
        assert np.isfinite(got).all(), (a, b, dtype)
        if DEVICE == "cpu" or dtype != "float64":
            assert np.array_equal(got, ref), (a, b, dtype)
        else:
            assert np.abs(got.view(np.int64) - ref.view(np.int64)).max() <= 8, (a, b)


# --- the kernels check themselves on each device (issue 19, item 5) -----------------------------------


class _Planted:
    """The real kernels, one of them planted with a bug (``sample``: its output scaled by 1.5;
    ``stream``: launched with the key's lowest bit flipped)."""

    def __init__(self, real, bug: str) -> None:
        self.real, self.bug = real, bug

    def __getattr__(self, name):
        kernel = getattr(self.real, name)
        if name != self.bug:
            return kernel

        class Launcher:
            def __getitem__(self, grid):
                def run(*args, **options):
                    if name == "stream":
                        args = (args[0], args[1], args[2] ^ 1, *args[3:])
                    kernel[grid](*args, **options)
                    if name == "sample" and args[0].is_floating_point():
                        args[0].mul_(1.5)

                return run

        return Launcher()


def _count(monkeypatch, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(_triton_sampler, name)
    monkeypatch.setattr(_triton_sampler, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_each_path_checks_itself_once_per_device(monkeypatch, recwarn) -> None:
    monkeypatch.setattr(_triton_sampler, "_checked", {})
    fills, streams = _count(monkeypatch, "_check_fill"), _count(monkeypatch, "_check_stream")
    t = torch.empty(8, 8, device=DEVICE)
    assert _triton_sampler.usable(t) and _triton_sampler.usable(t)
    assert _triton_sampler.stream_usable(t) and _triton_sampler.stream_usable(t)
    assert (len(fills), len(streams)) == (1, 1)
    assert not [w for w in recwarn if "Triton" in str(w.message)]


@pytest.mark.parametrize("bug", ["sample", "stream"])
def test_a_planted_bad_kernel_warns_once_and_torch_ops_take_over(bug, monkeypatch) -> None:
    """The check is the mutation test's subject: a kernel that is wrong on this device is caught,
    named in one warning, and the adapter draws with torch's ops there (right values)."""
    import warnings

    from initscale._kernels import cpu as _stream_kernel
    from initscale.streams import Stream, stream_values

    real = _triton_sampler._kernel()
    monkeypatch.setattr(_triton_sampler, "_kernel", lambda: _Planted(real, bug))
    monkeypatch.setattr(_triton_sampler, "_checked", {})
    monkeypatch.setattr(_stream_kernel, "load", lambda: None)  # on the CPU: Triton would serve streams
    path = "fill" if bug == "sample" else "stream_fill"
    usable = _triton_sampler.usable if bug == "sample" else _triton_sampler.stream_usable
    t = torch.empty(SHAPE, device=DEVICE)
    device = _triton_sampler._device_name(t.device)
    with pytest.warns(
        RuntimeWarning,
        match=rf"Triton {path} path on {device} disagrees with torch's ops: .*"
        r"(mean|variance|outside|differ)",
    ):
        assert not usable(t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: no second warning
        assert not usable(t)
    kernel_calls = _count(monkeypatch, "fill" if bug == "sample" else "stream_fill")
    spec = presets.get("he_normal")
    if bug == "sample":
        ist.init_(t, spec, generator=torch.Generator(device=DEVICE).manual_seed(3))
        assert failures(t.cpu(), spec.resolve(initscale.compute_fans(SHAPE, "torch"))) == []
    else:
        got = ist.initializer(spec, "torch", stream=Stream(2, "w"))(t)
        assert np.array_equal(got.cpu().numpy(), stream_values(Stream(2, "w"), spec, SHAPE, "torch"))
    assert kernel_calls == []
    other = "stream_fill" if bug == "sample" else "fill"
    assert _triton_sampler.trusted(other, t.device)  # the healthy path on the same device stays on


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_kernels_pass_their_check_on_this_gpu() -> None:
    assert _triton_sampler._check_fill(torch.device("cuda")) == ""
    assert _triton_sampler._check_stream(torch.device("cuda")) == ""
