"""The torch adapter fills tensors in place with exactly the spec's distribution."""

from __future__ import annotations

import numpy as np
import pytest
from _tails import TAIL_CASES, TAIL_IDS, TAIL_SHAPE, tail_failures, tail_spec

import initscale
from _stats import PRESET_SHAPES, failures
from initscale import presets

torch = pytest.importorskip("torch")
ist = pytest.importorskip("initscale.adapters.torch")

SHAPE = (400, 500)  # 200,000 draws per check

SPECS = [
    "he_normal",
    "glorot_uniform",
    "lecun_normal",
    "torch.kaiming_normal",
    "torch.xavier_uniform",
    "tf1.variance_scaling_initializer",
    "torch.linear_default",
    "torch.embedding_default",
]


def _draw(spec, dtype, layout="torch", shape=SHAPE, seed=0):
    t = torch.empty(shape, dtype=dtype)
    ist.init_(t, spec, layout, generator=torch.Generator().manual_seed(seed))
    return t


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("name", SPECS)
def test_draws_match_the_analytic_distribution(name, dtype) -> None:
    """The whole distribution in every float dtype (the checks allow one ulp of the dtype)."""
    spec = presets.get(name)
    t = _draw(spec, getattr(torch, dtype))
    dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(SHAPE, "torch"))
    assert failures(t, dist) == []


@pytest.mark.parametrize("name", ["he_normal", "torch.kaiming_uniform", "torch.kaiming_normal"])
def test_low_precision_dtypes_keep_the_second_moment(name) -> None:
    spec = presets.get(name)
    var = spec.variance(initscale.compute_fans(SHAPE, "torch"))
    for dtype in (torch.float16, torch.bfloat16):
        x = _draw(spec, dtype).double()
        # relative sd of the sample second moment: sqrt((κ−1)/n) ≤ sqrt(2/n) for κ ≤ 3; z = 4.5;
        # plus the cast's relative rounding (bfloat16: 2^-8), which moves a square by ≤ 2·2^-8.
        tol = 4.5 * np.sqrt(2 / x.numel()) + 2 * 2.0**-8
        assert abs(float((x**2).mean()) / var - 1) <= tol


def test_native_torch_kaiming_and_ours_draw_the_same_distribution() -> None:
    spec = presets.get("torch.kaiming_normal", a=0.2, mode="fan_out")
    dist = spec.resolve(initscale.compute_fans(SHAPE, "torch"))
    native = torch.empty(SHAPE)
    torch.nn.init.kaiming_normal_(native, a=0.2, mode="fan_out", generator=torch.Generator().manual_seed(1))
    assert failures(native.double().numpy(), dist) == []
    assert failures(_draw(spec, torch.float32).double().numpy(), dist) == []


def test_generator_reproducible_and_global_rng_untouched() -> None:
    spec = presets.get("he_normal")
    state = torch.random.get_rng_state()
    a, b = _draw(spec, torch.float32, seed=5), _draw(spec, torch.float32, seed=5)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


def test_in_place_on_parameters_and_returns_the_tensor() -> None:
    p = torch.nn.Parameter(torch.zeros(8, 4))
    out = ist.glorot_uniform_(p)
    assert out is p and p.requires_grad and bool((p != 0).any())


@pytest.mark.parametrize(
    ("layout", "shape", "view"),
    [
        ("torch.lstm", (256, 64), lambda w: [w[g * 64 : (g + 1) * 64] for g in range(4)]),
        ("torch", (16, 8, 3), lambda w: [w.reshape(16, 24)]),
    ],
)
def test_orthogonal_blocks(layout, shape, view) -> None:
    w = torch.empty(shape, dtype=torch.float64)
    ist.orthogonal_(w, 1.5, layout=layout)
    for m in view(w):
        gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
        assert torch.allclose(gram, 2.25 * torch.eye(min(m.shape), dtype=torch.float64), atol=1e-10)


def test_edge_cases_and_bad_input() -> None:
    empty = torch.empty(0, 5)
    assert ist.he_normal_(empty) is empty
    with pytest.raises(TypeError, match="floating-point tensors only"):
        ist.he_normal_(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating-point tensors only"):
        ist.he_normal_(torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"to_empty\(device="):
        ist.he_normal_(torch.empty(3, 4, device="meta"))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        ist.he_normal_(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="Argument `mode` must be one of"):
        ist.variance_scaling_(torch.empty(3, 4), mode="avg")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws() -> None:
    spec = presets.get("he_normal")
    t = torch.empty(SHAPE, device="cuda")
    ist.init_(t, spec, generator=torch.Generator(device="cuda").manual_seed(0))
    assert failures(t.double().cpu().numpy(), spec.resolve(initscale.compute_fans(SHAPE, "torch"))) == []


_SHAPES = PRESET_SHAPES


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [n for n in presets.names() if "orthogonal" not in n])
def test_every_preset_compiled_to_torch_draws_its_analytic_distribution(name, dtype) -> None:
    info = presets.info(name)
    spec = presets.get(name)
    shape = _SHAPES[info.layout.split(":")[0]]
    dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(shape, info.layout))
    values = _draw(spec, getattr(torch, dtype), layout=info.layout, shape=shape, seed=len(name))
    assert failures(values.double().numpy(), dist) == []


GRID_CASES = [((-0.9, 0.9), (1000, 200)), ((0.2, 0.95), (1000, 200)), ((-0.99, -0.5), (999, 201))]


@pytest.mark.parametrize(("bounds", "shape"), GRID_CASES)
def test_uniform_grid_is_uniform_on_its_grid(bounds, shape) -> None:
    """The CPU truncated normal's uniform stage (64 random bits per two float32 values)."""
    from initscale._kernels.torch_ops import uniform_grid as _uniform_grid

    low, high = bounds
    g = torch.Generator().manual_seed(3)
    for out in (torch.empty(shape), torch.empty(shape[::-1]).t(), torch.empty(shape, dtype=torch.bfloat16)):
        u = _uniform_grid(out, low, high, g)
        assert u.shape == out.shape and u.dtype == torch.float32
        assert (u is out) == (out.dtype == torch.float32 and out.is_contiguous() and out.numel() % 2 == 0)
        x = u.double().numpy()
        assert failures(x, initscale.distributions.UniformDist(low, high), rounding=2.0**-24) == []
    # on U(-1, 1) the scale is 2^-31 and every value is exactly (2k + 1)·2^-24, k ∈ [-2^23, 2^23)
    odd = _uniform_grid(torch.empty(SHAPE), -1.0, 1.0, g).double().numpy() * 2.0**24
    assert np.array_equal(odd, np.round(odd)) and np.all(np.abs(odd) % 2 == 1)
    assert np.abs(odd).max() <= 2.0**24 - 1


@pytest.mark.parametrize("bug", ["random_ default range: 63 bits", "32-bit words only"])
def test_uniform_grid_checks_catch_planted_bugs(monkeypatch, bug) -> None:
    """Drawing the words with too few random bits is caught by the distribution checks."""
    from initscale._kernels.torch_ops import uniform_grid as _uniform_grid

    real = torch.Tensor.random_

    def buggy(self, *args, **kwargs):
        return (
            real(self, generator=kwargs.get("generator"))
            if bug.startswith("random_")
            else real(self, 0, 2**32, generator=kwargs.get("generator"))
        )

    dist = initscale.distributions.UniformDist(-0.9, 0.9)
    clean = _uniform_grid(torch.empty(SHAPE), -0.9, 0.9, torch.Generator().manual_seed(3))
    assert failures(clean.double().numpy(), dist) == []  # the control
    monkeypatch.setattr(torch.Tensor, "random_", buggy)
    x = _uniform_grid(torch.empty(SHAPE), -0.9, 0.9, torch.Generator().manual_seed(3))
    assert failures(x.double().numpy(), dist) != [], bug


# --- far-tail, one-sided and narrow truncated normals (issue 16) -------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
@pytest.mark.parametrize(("a", "b"), TAIL_CASES, ids=TAIL_IDS)
def test_tail_truncated_normals_are_exact(a, b, dtype) -> None:
    # float64 work beyond the ordinary intervals (erf(−8.5/√2) = −1 even there); bfloat16 and
    # float16 weights through the staged float32 buffer.
    t = _draw(tail_spec(a, b), getattr(torch, dtype), shape=TAIL_SHAPE, seed=11)
    assert tail_failures(t, a, b) == []
