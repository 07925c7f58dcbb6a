"""The torch adapter on every device this machine has: the CPU always, CUDA where there is one.

Each test takes a ``device``; the CUDA cases skip without CUDA (CI has none) and are the "CUDA
tests" of issue 19 that scripts/gpu_check.sh runs on a lent GPU. The same checks run on the CPU
here, so a GPU run tests only what differs there: the GPU's generators, the Triton kernels and
their self-checks, the GPU orthogonal path, the CUDA caching allocator's peaks. The statistical
checks are tests/_stats.py's and tests/_materialize.py's (their false-alarm rates are stated
there); the memory bounds are issue 19's (max(64 MiB, 2% of the parameters)).
"""

from __future__ import annotations

import math

import pytest
from _materialize import buffer_problems, std_problems

import initscale
from _stats import failures
from initscale import presets

torch = pytest.importorskip("torch")
ist = pytest.importorskip("initscale.adapters.torch")
nn = torch.nn
tinit = torch.nn.init

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs CUDA"))]
cuda_only = pytest.mark.skipif(not CUDA, reason="needs CUDA")


def _gen(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# preset and kwargs, the nn.init function of the same name and kwargs, and whether torch's float32
# bound may round above the exact one (uniforms: then every value is within 2 ulps of the bound,
# tests/test_torch_native_parity.py's ulp test; else bit for bit)
NATIVE_CASES = [
    ("torch.kaiming_normal", {"mode": "fan_out"}, "kaiming_normal_", False),
    ("torch.xavier_normal", {"gain": 0.5}, "xavier_normal_", False),
    ("torch.normal", {"std": 0.02}, "normal_", False),
    ("torch.trunc_normal", {"std": 0.02, "a": -0.04, "b": 0.04}, "trunc_normal_", False),
    ("torch.orthogonal", {"gain": 1.5}, "orthogonal_", False),
    ("torch.kaiming_uniform", {"a": math.sqrt(5)}, "kaiming_uniform_", True),
    ("torch.xavier_uniform", {"gain": 1.7}, "xavier_uniform_", True),
    ("torch.uniform", {"a": -0.1, "b": 0.1}, "uniform_", True),
]


@pytest.mark.parametrize("shape", [(96, 40), (40, 96), (16, 8, 3, 3)])
@pytest.mark.parametrize(("name", "kwargs", "native", "bound_ulps"), NATIVE_CASES, ids=[c[0] for c in NATIVE_CASES])
@pytest.mark.parametrize("device", DEVICES)
def test_torch_presets_give_nn_inits_values_for_the_same_generator(device, name, kwargs, native, bound_ulps, shape):
    theirs = getattr(tinit, native)(torch.empty(shape, device=device), **kwargs, generator=_gen(device, 3))
    ours = ist.init_(
        torch.empty(shape, device=device), presets.get(name, **kwargs), "torch:native=true", generator=_gen(device, 3)
    )
    if not bound_ulps:
        assert torch.equal(ours, theirs)
        return
    ulp = torch.finfo(torch.float32).eps * float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) <= 2 * ulp


class Mixed(nn.Module):
    """Dense, grouped and transposed convolutions, an LSTM's stacked gates, an embedding with a
    padding row, norms, and 400 small tensors (drawn in bounded groups)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 64, 3)
        self.grouped = nn.Conv2d(64, 64, 3, groups=4)
        self.up = nn.ConvTranspose2d(64, 16, 4)
        self.lstm = nn.LSTM(32, 48)
        self.embed = nn.Embedding(500, 64, padding_idx=0)
        self.norm = nn.LayerNorm(64)
        self.dense = nn.Linear(512, 384)
        self.small = nn.ModuleList(nn.Linear(6, 5) for _ in range(200))  # 200 weights + 200 biases


RULES = {
    "Conv2d": presets.get("he_normal"),
    "ConvTranspose2d": presets.get("glorot_uniform"),
    "LSTM": initscale.Orthogonal(),
    "Embedding": initscale.TruncatedNormal(0.02),  # ±2σ
    "dense.weight": presets.get("lecun_uniform"),
    "small.*.weight": presets.get("he_uniform"),
}


def _gate_orthogonality_error(weight) -> float:
    """max |GᵀG − I| over the 4 stacked (48 × n) gate blocks of an LSTM weight (columns or rows,
    whichever are fewer, orthonormal)."""
    errors = []
    for block in weight.detach().double().cpu().chunk(4):
        gram = block.T @ block if block.shape[0] > block.shape[1] else block @ block.T
        errors.append(float((gram - torch.eye(gram.shape[0], dtype=torch.float64)).abs().max()))
    return max(errors)


# The float32 QR's own |QᵀQ − I| (a few ulps·√n, ~1e-6 here): tests/test_adapters.py's float32 tolerance
_QR_FLOAT32_TOL = 1e-4


def _orthogonality_tol(dtype) -> float:
    """Storing each entry of orthonormal vectors q_i, q_j in ``dtype`` (unit roundoff u) moves
    q_iᵀq_j by at most Σ_k |q_ik q_jk|·(2u + u²) ≤ (2u + u²)·‖q_i‖‖q_j‖ = 2u + u² (Cauchy–Schwarz),
    on top of the float32 QR's own error."""
    u = torch.finfo(dtype).eps / 2
    return 2 * u + u * u + _QR_FLOAT32_TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_gate_stack_drawn_as_one_matrix_fails_the_orthogonality_check(dtype) -> None:
    # the planted bug: an LSTM weight drawn orthogonal as one (192 × 32) matrix (layout "torch"
    # instead of "torch.lstm"): each gate block's columns have squared norm ~1/4, not 1
    w = ist.init_(torch.empty(4 * 48, 32, dtype=dtype), initscale.Orthogonal(), "torch", generator=_gen("cpu", 0))
    assert _gate_orthogonality_error(w) > _orthogonality_tol(dtype)
    right = ist.init_(
        torch.empty(4 * 48, 32, dtype=dtype), initscale.Orthogonal(), "torch.lstm", generator=_gen("cpu", 0)
    )
    assert _gate_orthogonality_error(right) <= _orthogonality_tol(dtype)  # the control


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("device", DEVICES)
def test_reinit_draws_every_parameter_of_a_mixed_model(device, dtype) -> None:
    model = Mixed().to(device=device, dtype=dtype)
    report = ist.reinit_(model, RULES, _gen(device, 1))
    assert std_problems(model, report) == []  # every parameter: its std and its bounds (rounded)
    assert float(model.embed.weight[0].abs().max()) == 0.0  # the padding row
    for name in ("lstm.weight_hh_l0", "lstm.weight_ih_l0"):  # each of the 4 gate blocks orthogonal
        assert _gate_orthogonality_error(model.get_parameter(name)) <= _orthogonality_tol(dtype), name
    pooled = torch.cat([m.weight.detach().cpu().ravel() for m in model.small])  # in its dtype: its rounding
    dist = presets.get("he_uniform").resolve(initscale.compute_fans((5, 6), "torch"))
    assert failures(pooled, dist) == []  # the grouped draws, as one sample


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("device", DEVICES)
def test_a_stream_gives_the_cpus_values_on_every_device(device, dtype) -> None:
    rules = {k: v for k, v in RULES.items() if k != "LSTM"}  # orthogonal specs have no stream
    reference = Mixed().to(dtype=dtype)
    ist.reinit_(reference, rules, stream_seed=7)
    model = Mixed().to(device=device, dtype=dtype)
    ist.reinit_(model, rules, stream_seed=7)
    for name, want in reference.named_parameters():
        if not name.startswith("lstm."):
            assert torch.equal(model.get_parameter(name).detach().cpu(), want.detach()), name


@pytest.mark.parametrize("device", DEVICES)
def test_the_same_generator_seed_reproduces_the_model(device) -> None:
    a, b = Mixed().to(device), Mixed().to(device)
    ist.reinit_(a, RULES, _gen(device, 4))
    ist.reinit_(b, RULES, _gen(device, 4))
    for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(x, y), name


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("device", DEVICES)
def test_materialize_from_meta_onto_the_device(device) -> None:
    reference = ConvNet()
    with torch.device("meta"):
        model = ConvNet()
    report = ist.materialize_(model, presets.get("he_normal"), device=device, generator=_gen(device, 2))
    assert {t.device.type for t in model.state_dict().values()} == {device}
    assert buffer_problems(model.cpu(), reference) == []  # running stats reset, num_batches_tracked 0
    assert std_problems(model, report) == []
    assert bool(model.eval()(torch.randn(2, 3, 8, 8)).isfinite().all())


@cuda_only
def test_a_generator_on_another_device_is_refused_before_any_write() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)).cuda()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"`generator` is on cpu but 2 parameter\(s\) to draw are on cuda"):
        ist.reinit_(model, presets.get("he_normal"), torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def _peak_extra_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reinit_on_the_gpu_takes_no_second_copy(dtype) -> None:
    model = nn.Sequential(*(nn.Linear(2048, 2048) for _ in range(16))).to(device="cuda", dtype=dtype)
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20  # 256 MiB fp32
    for rules in (presets.get("he_normal"), initscale.TruncatedNormal(0.02)):
        extra = _peak_extra_mib(lambda rules=rules: ist.reinit_(model, rules, _gen("cuda", 0)))
        assert extra <= max(64.0, 0.02 * size), (rules, extra)
        extra = _peak_extra_mib(lambda rules=rules: ist.reinit_(model, rules, stream_seed=1))
        assert extra <= max(64.0, 0.02 * size), ("stream", rules, extra)


@cuda_only
@pytest.mark.parametrize("shape", [(4096, 2048), (2048, 4096)])
def test_a_gpu_orthogonal_init_takes_at_most_two_copies(shape) -> None:
    w = torch.empty(shape, device="cuda")
    weight = w.numel() * 4 / 2**20
    extra = _peak_extra_mib(lambda: ist.init_(w, initscale.Orthogonal(), generator=_gen("cuda", 0)))
    assert extra <= 2 * weight + 16, extra  # the draw and its column-major copy, plus geqrf's tau and workspace
    extra = _peak_extra_mib(lambda: ist.init_(w, presets.get("torch.orthogonal"), generator=_gen("cuda", 0)))
    limit = weight if shape[0] < shape[1] else 2 * weight  # torch's order: a wide draw is column-major as drawn
    assert extra <= limit + 16, extra
