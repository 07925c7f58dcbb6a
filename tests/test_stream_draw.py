"""The one stream draw (initscale.streams.draw/pieces) as each adapter writes it: piece by piece,
straight to where each element sits, the same bits whatever the piece size, and no staging copy
of the whole weight (issue 19: peak extra memory bounded by the piece, not the weight)."""

from __future__ import annotations

import numpy as np
import pytest

import initscale
from initscale import presets
from initscale.plan import weight_plan
from initscale.streams import Stream, plan_values

torch = pytest.importorskip("torch")
from initscale.adapters import torch as ist  # noqa: E402

SPECS = {
    "uniform": presets.get("he_uniform"),
    "normal": initscale.Normal(0.3),
    "truncated": presets.get("he_normal"),
    "upper_tail": initscale.TruncatedNormal(0.7, lower=3.0, upper=float("inf")),
    "far_tail": initscale.TruncatedNormal(0.7, lower=38.3, upper=float("inf")),
}
# (layout, shape, transposed target): canonical order = memory order, permuted, stacked gates
CASES = [
    ("torch", (37, 23), False),
    ("torch", (37, 23), True),
    ("keras", (3, 3, 5, 7), False),
    ("keras.gru", (6, 15), False),
]
DTYPES = ["float32", "bfloat16", "float16", "float64"]


def _target(shape, transposed, dtype):
    dt = getattr(torch, dtype)
    return torch.empty(shape[::-1], dtype=dt).t() if transposed else torch.empty(shape, dtype=dt)


def _draw(spec, layout, shape, transposed, dtype, into=True):
    plan = weight_plan(spec, shape, layout, dtype)
    target = _target(shape, transposed, dtype)
    out = ist._stream_draw(Stream(5, "w"), plan.dist, plan.strides, target, into, plan.gates)
    assert (out is target) == into
    return out.to(torch.float64).numpy()


@pytest.fixture(params=["kernel", "ops"])
def path(request, monkeypatch):
    if request.param == "ops":
        monkeypatch.setenv("INITSCALE_STREAM_KERNEL", "0")
    elif ist._stream_kernel.load() is None:
        pytest.skip("no C compiler: the kernel path is not built")
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout,shape,transposed", CASES)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_pieces_of_any_size_give_the_same_bits(path, monkeypatch, name, layout, shape, transposed, dtype) -> None:
    """Small pieces (cut mid-row, mid-run and mid-gate) write the values of one whole piece; in
    float32 and below they equal the NumPy reference (tests/test_streams.py: rounded to float32
    every backend's Φ⁻¹ agreed), in float64 the whole-piece draw of the same path."""
    spec = SPECS[name]
    whole = _draw(spec, layout, shape, transposed, dtype)
    monkeypatch.setattr(ist, "_STREAM_PIECE", 12)  # a multiple of 4 below every row
    monkeypatch.setattr(ist, "_STAGE_PIECE", 10)
    small = _draw(spec, layout, shape, transposed, dtype)
    fresh = _draw(spec, layout, shape, transposed, dtype, into=False)
    np.testing.assert_array_equal(small, whole)
    np.testing.assert_array_equal(fresh, whole)
    if dtype in ("float32", "float16"):  # (NumPy has no bfloat16)
        ref = plan_values(Stream(5, "w"), weight_plan(spec, shape, layout, dtype))
        np.testing.assert_array_equal(small, ref.astype(np.float64))


def _big_allocations(monkeypatch) -> list[int]:
    """The sizes (elements) of every torch.empty/empty_like the draw makes."""
    sizes: list[int] = []
    empty, empty_like = torch.empty, torch.empty_like

    def spy_empty(*shape, **kw):
        out = empty(*shape, **kw)
        sizes.append(out.numel())
        return out

    def spy_like(t, **kw):
        out = empty_like(t, **kw)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(torch, "empty", spy_empty)
    monkeypatch.setattr(torch, "empty_like", spy_like)
    return sizes


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("transposed", [False, True])
def test_reinit_stream_stages_no_copy_of_the_weight(path, monkeypatch, dtype, transposed) -> None:
    """A stream reinit_ of a bfloat16/float16 or permuted weight allocates no buffer of the
    whole weight: pieces of at most _STAGE_PIECE (kernel) / _STREAM_PIECE (torch ops) elements."""
    monkeypatch.setattr(ist, "_STREAM_PIECE", 64)
    monkeypatch.setattr(ist, "_STAGE_PIECE", 64)
    layer = torch.nn.Linear(40, 30, bias=False).to(getattr(torch, dtype))
    if transposed:
        layer.weight = torch.nn.Parameter(layer.weight.detach().t().contiguous().t())
    expected = ist.initializer(presets.get("he_normal"), stream=Stream(2, "weight"))(
        torch.empty(30, 40, dtype=layer.weight.dtype)
    )
    sizes = _big_allocations(monkeypatch)
    ist.reinit_(layer, {"weight": presets.get("he_normal")}, stream_seed=2)
    assert max(sizes, default=0) <= 64, sizes
    assert torch.equal(layer.weight.detach(), expected)


def test_planted_writer_bugs_are_caught(monkeypatch) -> None:
    """Mutation proof for the piece writer: a dropped last block, or gates written in canonical
    order, must make the equality checks above fail."""
    monkeypatch.setenv("INITSCALE_STREAM_KERNEL", "0")
    spec = SPECS["normal"]
    whole = _draw(spec, "keras.gru", (6, 15), False, "float32")
    blocks = ist._flat_blocks
    monkeypatch.setattr(ist, "_STREAM_PIECE", 12)
    monkeypatch.setattr(ist, "_flat_blocks", lambda *a: list(blocks(*a))[:-1])
    assert not np.array_equal(_draw(spec, "keras.gru", (6, 15), False, "float32"), whole)
    monkeypatch.setattr(ist, "_flat_blocks", blocks)
    write = ist._write_flat
    monkeypatch.setattr(
        ist, "_write_flat", lambda dest, start, stop, values, gated: write(dest, start, stop, values, None)
    )
    assert not np.array_equal(_draw(spec, "keras.gru", (6, 15), False, "float32"), whole)
