"""The torch adapter fills tensors in place with exactly the spec's distribution.

Every preset on every logical layer (float32) is the parity matrix's (tests/test_parity.py), with
torch's own initializers beside initscale's native-compat ones; the other dtypes, seeds, zero-size
shapes, bad dtypes, orthogonal blocks and the far-tail truncated normals are every adapter's
(tests/test_adapters.py). Here: what only torch has (in-place fills of parameters, devices, the
global RNG, the CPU sampler's uniform stage)."""

from __future__ import annotations

import numpy as np
import pytest

import initscale
from _stats import failures
from initscale import presets

torch = pytest.importorskip("torch")
ist = pytest.importorskip("initscale.adapters.torch")

SHAPE = (400, 500)  # 200,000 draws per check


def _draw(spec, dtype, layout="torch", shape=SHAPE, seed=0):
    t = torch.empty(shape, dtype=dtype)
    ist.init_(t, spec, layout, generator=torch.Generator().manual_seed(seed))
    return t


def test_a_generator_leaves_the_global_rng_untouched() -> None:
    state = torch.random.get_rng_state()
    _draw(presets.get("he_normal"), torch.float32, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())


def test_in_place_on_parameters_and_returns_the_tensor() -> None:
    p = torch.nn.Parameter(torch.zeros(8, 4))
    out = ist.glorot_uniform_(p)
    assert out is p and p.requires_grad and bool((p != 0).any())


def test_edge_cases_and_bad_input() -> None:
    empty = torch.empty(0, 5)
    assert ist.he_normal_(empty) is empty
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
