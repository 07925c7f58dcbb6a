"""PyTorch adapter: initscale specs as ``torch.nn.init``-style in-place functions.

``initializer(spec, layout="torch")`` returns ``fn(tensor, *, generator=None) -> tensor`` that
fills ``tensor`` in place under ``torch.no_grad()`` and returns it, like ``torch.nn.init``.
Named conveniences follow torch's style: ``init_(tensor, spec)``, ``variance_scaling_``,
``glorot_uniform_``, ``glorot_normal_``, ``he_uniform_``, ``he_normal_``, ``lecun_uniform_``,
``lecun_normal_``, ``orthogonal_``. For whole models, ``reinit_(module, rules)`` re-initializes
every parameter with the fans of its own layer (atomically, with a report), and
``apply_fn(spec)`` does the same one module at a time for ``module.apply``.

Sampling: on the CPU, with a C compiler, normals, uniforms and truncated normals (|α|, |β| <= 4,
or both beyond ±6.7) of float32, bfloat16 and float16 weights come from initscale's compiled
sampler (:func:`initscale._kernels.cpu.sample`): Philox4x32-10 keyed by one 128-bit draw from
the generator, vectorized, on all of torch's intra-op threads, the same values whatever the
thread count, each stored once inside the bounds that hold in its dtype. ``torch.*`` presets
(``native="torch"``) keep torch's own calls (``trunc_normal_`` and ``orthogonal_``'s draw order
included), one tensor at a time, so they equal ``torch.nn.init`` for the same generator
(docs/conventions.md has the ulp exceptions). Everything else, and everything without a compiler (or with
``INITSCALE_STREAM_KERNEL=0``), takes torch's ops as follows. Normals and uniforms use torch's
own kernels (in float32 for float16/bfloat16, then cast). Truncated normals are drawn by inverse
CDF — u ~ U(Φ(α), Φ(β)), z = √2·erfinv(2u − 1), in float32 inside ±4σ and in float64 beyond or
for float64 weights — so the bounds are exactly ±truncation·σ and the variance is the corrected
one; torch's own ``trunc_normal_`` has no corrected variant. On the CPU the float32 uniform stage
takes 64 random bits per two values (``random_`` over the full int64 range) instead of
``uniform_``'s one word per value, which makes the whole truncated draw about as fast as
``normal_``. On a GPU with Triton installed, truncated normals (and float16/bfloat16 uniforms)
take one fused pass instead, computed in float32 registers and stored once
(:mod:`initscale._kernels.gpu`). With a
``torch.Generator`` every draw comes from it and the global RNG is never touched.

Example:
    >>> import torch, initscale
    >>> from initscale.adapters import torch as ist
    >>> w = torch.empty(256, 128)
    >>> _ = ist.he_normal_(w, generator=torch.Generator().manual_seed(0))
    >>> bool(w.abs().max() <= initscale.presets.get("he_normal").bounds(initscale.Fans(128, 256))[1])
    True

Note:
    The default layout ``"torch"`` reads weights as (out, in, *kernel). Pass a layer kind
    (``"torch.conv_transpose"``, ``"torch.lstm"``, ``"torch.conv:groups=4"``, ...) for the
    forward-pass fans of that layer.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

import torch

from initscale import presets
from initscale._kernels import cpu as _stream_kernel
from initscale._kernels import gpu as _triton_sampler
from initscale._kernels import torch_ops as _torch_ops
from initscale._kernels.torch_ops import dense as _dense
from initscale._kernels.torch_ops import fill as _fill  # torch's ops-path sampler, shared with the kernels' checks
from initscale._shared import round_to_odd
from initscale.distributions import (
    ConstantDist,
    Distribution,
    OrthogonalDist,
)
from initscale.fans import Layout, LayoutLike, experts_layout, stride_product
from initscale.plan import WeightPlan, canonical_strides, gate_index, plans
from initscale.reinit import (
    ADDED_TENSOR,
    ADDED_TENSOR_NOTE,
    UNIT_OFFSET,
    Param,
    PartialWriteError,
    Report,
    Role,
    Target,
    Write,
    bounded_groups,
    derived_to_set,
    mark_derived,
    refuse,
)
from initscale.reinit import run as reinit_run
from initscale.rounding import clip_bounds
from initscale.specs import Orthogonal, Spec, VarianceScaling
from initscale.streams import (
    Stream,
    kernel_params,
    pieces,
    portable,
    register_draw,
    runs,
)

from . import _torch_reparam as _reparam

__all__ = [
    "Initializer",
    "PartialWriteError",
    "apply_fn",
    "check",
    "glorot_normal_",
    "glorot_uniform_",
    "he_normal_",
    "he_uniform_",
    "init_",
    "initializer",
    "lecun_normal_",
    "lecun_uniform_",
    "lsuv_",
    "materialize_",
    "orthogonal_",
    "reinit_",
    "variance_scaling_",
]


class Initializer(Protocol):
    """What :func:`initializer` returns: ``fn(tensor, *, generator=None) -> tensor``, filled in place."""

    def __call__(self, tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor: ...


TorchInitializer = Initializer


def _check_tensor(tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"Argument `tensor` must be a torch.Tensor. Received: {type(tensor).__name__}.")
    if tensor.is_meta:
        raise ValueError(
            "Cannot initialize a meta tensor: it has no storage. Materialize the module first, "
            "e.g. module.to_empty(device='cpu'), then initialize."
        )
    if not tensor.is_floating_point():
        raise TypeError(
            f"initscale fills floating-point tensors only. Received dtype {tensor.dtype}; "
            "valid: torch.float16, torch.bfloat16, torch.float32, torch.float64."
        )


def _dtensor_class() -> type | None:
    # einops' rule: look in sys.modules only, so a user who never imported DTensor pays nothing.
    module = sys.modules.get("torch.distributed.tensor")
    cls = getattr(module, "DTensor", None)
    return cls if isinstance(cls, type) else None


def _is_dtensor(tensor: torch.Tensor) -> bool:
    cls = _dtensor_class()
    return cls is not None and isinstance(tensor, cls)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The storage this process writes: the local shard of a DTensor, else the tensor itself."""
    if _is_dtensor(tensor):
        local: torch.Tensor = tensor.to_local()  # type: ignore[attr-defined]
        return local
    return tensor


def _stream_seed(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # a non-negative 63-bit seed


class _ShardSeeds:
    """One base seed per device mesh, drawn from ``generator`` (or the global RNG) and made the
    same on every rank of the mesh by broadcasting it from the mesh's first rank along each mesh
    dimension. Each shard then draws from its own generator seeded by (base, name, global offset,
    local shape): shards are independent, replicas identical, and the values do not depend on
    which rank happens to hold which shard."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.bases: dict[Any, int] = {}

    def base(self, mesh: Any, device: torch.device) -> int:
        if mesh not in self.bases:
            device_of_gen = self.generator.device if self.generator is not None else "cpu"
            seed = torch.randint(0, 2**62, (1,), generator=self.generator, device=device_of_gen).to(device)
            import torch.distributed as tdist

            for dim in range(mesh.ndim):
                tdist.broadcast(seed, group=mesh.get_group(dim), group_src=0)
            self.bases[mesh] = int(seed.item())
        return self.bases[mesh]


def _shard_values(
    dist: Distribution, layout: Layout | None, tensor: torch.Tensor, name: str, seeds: _ShardSeeds
) -> torch.Tensor:
    """New values for this rank's shard of a DTensor whose fans come from its global shape."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh, placements = tensor.device_mesh, tensor.placements  # type: ignore[attr-defined]
    if any(p.is_partial() for p in placements):
        raise ValueError(
            f"Cannot initialize {name or 'a DTensor'} with a Partial placement (its value is a pending "
            "reduction). Redistribute it to Shard or Replicate placements first."
        )
    local = _local(tensor)
    local_shape, offset = compute_local_shape_and_global_offset(tuple(tensor.shape), mesh, placements)
    base = seeds.base(mesh, local.device)
    if isinstance(dist, OrthogonalDist):  # a matrix property: draw the global weight, keep the shard
        whole = torch.empty(tuple(tensor.shape), dtype=local.dtype, device=local.device)
        gen = torch.Generator(device=local.device).manual_seed(_stream_seed(base, name, "whole"))
        _fill(dist, layout, whole, gen)
        return whole[tuple(slice(o, o + n) for o, n in zip(offset, local_shape, strict=True))].clone()
    gen = torch.Generator(device=local.device).manual_seed(_stream_seed(base, name, tuple(offset), tuple(local_shape)))
    values = torch.empty_like(local)
    _fill(dist, layout, values, gen)
    return values


def _stream_values(stream: Stream, plan: WeightPlan, tensor: torch.Tensor, into: bool = False) -> torch.Tensor:
    """The portable stream's values for ``tensor`` (for a DTensor: its local shard only), computed
    with torch integer ops on the tensor's device; see :mod:`initscale.streams`."""
    portable(plan)
    return _stream_draw(stream, plan.dist, plan.strides, tensor, into, plan.gates)


_STREAM_PIECE = 2**18  # elements per piece on CPU: bounds the temporaries (2 MiB each) and keeps them warm
_STREAM_PIECE_ACCELERATOR = 2**24  # on a GPU: fewer launches, temporaries bounded to a few hundred MB


def _stream_draw(
    stream: Stream,
    dist: Distribution,
    strides: tuple[int, ...],
    tensor: torch.Tensor,
    into: bool = False,
    gates: tuple[int, list[int]] | None = None,
) -> torch.Tensor:
    """Only the elements of ``tensor``'s local shard are generated: the compiled CPU kernel
    (:func:`_kernel_draw`), one Triton pass on a GPU, else :func:`initscale.streams.pieces` with
    torch's ops (:func:`_ops`: a Philox block per four consecutive canonical elements, in int64
    on its device), each piece written straight to where its elements sit (:func:`_write_flat`,
    through the view of the memory in canonical order), so no staging copy of the weight is made.
    ``into=True`` fills ``tensor`` (its local shard) and returns it; ``into=False`` fills and
    returns a new tensor. ``gates`` (:func:`initscale.streams.gate_index`) puts stacked gates,
    drawn in canonical order, in the framework's order."""
    shape = tuple(tensor.shape)
    local = _local(tensor)
    box = None
    if _is_dtensor(tensor):
        if gates is not None:
            raise ValueError(
                "A sharded weight whose layer kind stacks its gates in a non-canonical order (a Keras "
                "GRU layout) has no portable stream in torch; give it torch's own layout."
            )
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        _, offset = compute_local_shape_and_global_offset(
            shape,
            tensor.device_mesh,  # type: ignore[attr-defined]
            tensor.placements,  # type: ignore[attr-defined]
        )
        box = [slice(start, start + n) for start, n in zip(offset, local.shape, strict=True)]
    if local.device.type == "cpu" and local.dim() <= _stream_kernel.MAX_AXES:  # more axes: torch's ops
        kernel = _stream_kernel.load()
        if kernel is not None:
            return _kernel_draw(kernel, stream, dist, strides, local, box, into, gates)
    if gates is None and _triton_sampler.stream_usable(local):  # a GPU: one Triton pass
        code, params = kernel_params(dist)
        out = local if into else torch.empty_like(local, memory_format=torch.contiguous_format)
        offsets = [0] * local.dim() if box is None else [s.start for s in box]
        return _triton_sampler.stream_fill(
            out, stream.key, strides, offsets, code, params, clip_bounds(dist, str(local.dtype))
        )
    out = local if into else torch.empty_like(local, memory_format=torch.contiguous_format)
    box_runs = runs(shape, strides, box)
    dest = out.permute(box_runs.perm)  # the box in canonical order, as a view of its memory
    gated = None
    if gates is not None:  # canonical gate g sits at position inverse[g] of the framework's gate axis
        inverse = [0] * len(gates[1])
        for position, g in enumerate(gates[1]):
            inverse[g] = position
        gated = (box_runs.perm.index(gates[0]), torch.tensor(inverse, device=out.device))
    limit = _STREAM_PIECE if out.device.type == "cpu" else _STREAM_PIECE_ACCELERATOR
    dtype = str(out.dtype).rsplit(".", 1)[-1]
    for start, stop, values in pieces(stream.key, dist, box_runs, dtype, _ops(out.device), limit):
        _write_flat(dest, start, stop, values, gated)  # each piece where it sits: no staging copy
    return out


def _ops(device: torch.device) -> SimpleNamespace:
    """torch's :class:`initscale.streams.StreamOps` on ``device``: int64 counters, a float64 stage."""
    return SimpleNamespace(
        wide=True,
        const=None,
        arange=lambda n: torch.arange(n, dtype=torch.int64, device=device),
        stack=lambda arrays: torch.stack(arrays, dim=-1),
        take=lambda array, index: torch.take_along_dim(array, index, dim=-1),
        to_float=lambda odd: odd.to(torch.float64),
        ndtri=torch.special.ndtri,
        log=torch.log,
        sqrt=torch.sqrt,
        store=lambda values, dtype: (_round_to_odd(values) if dtype in ("float16", "bfloat16") else values).to(
            getattr(torch, dtype)
        ),
        permute=lambda x, axes: x.permute(axes),
        take_axis=lambda x, index, axis: x.index_select(axis, torch.tensor(list(index), device=x.device)),
    )


def _flat_blocks(shape: Sequence[int], start: int, stop: int) -> Iterator[tuple[Any, ...]]:
    """Elements [start, stop) of the row-major order of ``shape`` as a few index tuples (integers,
    then one slice; the axes after it whole): at most two per axis."""
    if start >= stop:
        return
    if not shape:
        yield ()
        return
    inner = math.prod(shape[1:])
    first, rest_start = divmod(start, inner)
    last, rest_stop = divmod(stop, inner)
    if first == last:
        yield from ((first, *block) for block in _flat_blocks(shape[1:], rest_start, rest_stop))
        return
    if rest_start:
        yield from ((first, *block) for block in _flat_blocks(shape[1:], rest_start, inner))
        first += 1
    if first < last:
        yield (slice(first, last),)
    if rest_stop:
        yield from ((last, *block) for block in _flat_blocks(shape[1:], 0, rest_stop))


def _write_flat(
    dest: torch.Tensor, start: int, stop: int, values: torch.Tensor, gated: tuple[int, torch.Tensor] | None
) -> None:
    """Write ``values``, elements [start, stop) of ``dest``'s row-major order, where they sit in its
    memory (``dest`` a strided view: the weight's axes in canonical order). ``gated``: the gate
    axis of ``dest`` and the framework position of each canonical gate index along it."""
    at = 0
    for block in _flat_blocks(tuple(dest.shape), start, stop):
        target = dest[block]
        source = values[at : at + target.numel()].view(target.shape)
        at += target.numel()
        axis = None if gated is None else gated[0]
        if gated is None or axis is None:
            target.copy_(source)
        elif axis < len(block) and isinstance(block[axis], int):  # one canonical gate index: its position
            at_gate = (*block[:axis], int(gated[1][block[axis]]), *block[axis + 1 :])
            dest[at_gate].copy_(source)
        elif axis < len(block):  # the slice [a, b) of canonical gate indices: their positions
            part = block[axis]
            dest[block[:axis]].index_copy_(0, gated[1][part.start : part.stop], source)
        else:  # the gate axis whole, after the block's indices
            dim = axis - len(block) + (1 if block and isinstance(block[-1], slice) else 0)
            target.index_copy_(dim, gated[1], source)


def _shared_draw(
    stream: Stream,
    dist: Distribution,
    strides: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: str,
    gates: tuple[int, list[int]] | None,
    out: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`_stream_draw` as :data:`initscale.streams.StreamDraw` (Keras on torch draws through it),
    filling ``out`` in place (a new CPU tensor of ``shape`` and ``dtype`` when None)."""
    target = out if out is not None else torch.empty(shape, dtype=getattr(torch, dtype))
    return _stream_draw(stream, dist, strides, target, True, gates)


register_draw("torch", _shared_draw)


def _set_low_bit(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    t.view(torch.int32).bitwise_or_(mask.to(torch.int32))
    return t


_ODD_OPS = SimpleNamespace(
    narrow=lambda x: x.to(torch.float32),
    widen=lambda x: x.double(),
    where=torch.where,
    toward_zero=lambda t: torch.nextafter(t, torch.zeros_like(t)),
    set_low_bit=_set_low_bit,
)


def _round_to_odd(values: torch.Tensor) -> torch.Tensor:
    """float64 → float32 rounded to odd (:func:`initscale._shared.round_to_odd`): torch casts
    float64 to float16/bfloat16 through float32 with two roundings; from the odd float32 the cast
    rounds once, as NumPy does."""
    result: torch.Tensor = round_to_odd(values, _ODD_OPS)
    return result


def _kernel_draw(
    kernel: Any,
    stream: Stream,
    dist: Distribution,
    strides: tuple[int, ...],
    local: torch.Tensor,
    box: list[slice] | None,
    into: bool,
    gates: tuple[int, list[int]] | None,
) -> torch.Tensor:
    """The compiled CPU kernel (:func:`initscale._kernels.cpu.draw`): float32 and float64 written
    where each element sits (a dense ``local`` in place, in one pass); float16 and bfloat16 (from
    float32 rounded to odd: one correct rounding, see :func:`_round_to_odd`) and non-dense targets
    through a float32 box of at most :data:`_STAGE_PIECE` elements at a time (:func:`_sub_boxes`),
    copied to where its elements sit: no staging copy of the whole weight. ``into=False`` fills
    a new tensor."""
    out_format = _stream_kernel.output_format(str(local.dtype))
    work = torch.float64 if out_format == _stream_kernel.FLOAT64 else torch.float32
    out = local if into else torch.empty(local.shape, dtype=local.dtype)
    starts = [0] * local.dim() if box is None else [s.start for s in box]
    clip = clip_bounds(dist, str(local.dtype))

    def fill(target: torch.Tensor, at: Sequence[int], sub_gates: tuple[int, Sequence[int]] | None) -> None:
        _stream_kernel.draw(
            kernel,
            target.data_ptr(),
            out_format,
            tuple(target.shape),
            target.stride(),
            strides,
            dist,
            stream.key,
            clip,
            threads=torch.get_num_threads(),
            offsets=list(at) or None,  # (a scalar weight has no axes)
            gates=sub_gates,
        )

    if out.dtype == work and _dense(out):  # written where each element sits
        fill(out, starts, gates)
        return out
    # float16/bfloat16 (float32 rounded to odd, cast once) or a non-dense target: staged a box at a time
    memory = tuple(out.stride())
    order = sorted(range(out.dim()), key=lambda axis: -memory[axis])
    for ranges in _sub_boxes(tuple(out.shape), order, _STAGE_PIECE):
        index = tuple(slice(a, b) for a, b in ranges)
        stage = torch.empty(tuple(b - a for a, b in ranges), dtype=work)
        sub_gates = None if gates is None else (gates[0], gates[1][ranges[gates[0]][0] : ranges[gates[0]][1]])
        fill(stage, [s + a for s, (a, _) in zip(starts, ranges, strict=True)], sub_gates)
        out[index].copy_(stage)
    return out


_STAGE_PIECE = 2**20  # elements per staged box of the compiled kernel: 4 MiB of float32


def _sub_boxes(shape: tuple[int, ...], order: Sequence[int], limit: int) -> Iterator[list[tuple[int, int]]]:
    """Boxes ([start, stop) per axis) that tile ``shape``, each of at most ``limit`` elements (or
    one element along every axis but the last of ``order``), cut along the axes of ``order`` in
    turn, so that a box is a block of the memory where ``order`` is its axes by decreasing stride."""
    whole = [(0, n) for n in shape]
    if math.prod(shape) <= limit or not order:
        yield whole
        return
    axis, rest = order[0], order[1:]
    inner = math.prod(shape) // shape[axis]
    if inner <= limit or not rest:
        step = max(limit // max(inner, 1), 1)
        for a in range(0, shape[axis], step):
            yield [(a, min(a + step, shape[axis])) if d == axis else whole[d] for d in range(len(shape))]
        return
    one = tuple(1 if d == axis else n for d, n in enumerate(shape))
    for a in range(shape[axis]):
        for box in _sub_boxes(one, rest, limit):
            yield [(a, a + 1) if d == axis else box[d] for d in range(len(shape))]


def initializer(spec: Spec, layout: LayoutLike = "torch", *, stream: Stream | None = None) -> TorchInitializer:
    """Compile ``spec`` into ``fn(tensor, *, generator=None) -> tensor`` (fills in place).

    The contract's ``initializer(spec, layout=<native>, *, stream=None)``
    (:mod:`initscale.adapters`); the native layout is ``"torch"``: (out, in, *kernel).

    The distribution for each weight shape is resolved once and cached. A DTensor (as FSDP2
    produces) gets the fans of its global shape and each rank fills only its local shard.
    With ``stream`` (an :class:`initscale.Stream`) the values are the portable stream's: the same
    as NumPy's and JAX's for the same seed and name, on any device and under any sharding
    (``generator`` is then not used).
    """
    plan_of, fan_layout = plans(spec, layout)
    if stream is not None and not isinstance(stream, Stream):
        raise TypeError(f"Argument `stream` must be an initscale.Stream. Received: stream={stream!r}.")

    def init(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_tensor(tensor)
        if tensor.numel() == 0:
            return tensor
        planned = plan_of(tuple(tensor.shape), tensor.dtype)
        with torch.no_grad():
            if stream is not None:
                _stream_values(stream, planned, tensor, into=True)
            elif _is_dtensor(tensor):
                _local(tensor).copy_(_shard_values(planned.dist, planned.layout, tensor, "", _ShardSeeds(generator)))
            else:
                _fill(planned.dist, planned.layout, tensor, generator)
        return tensor

    init.__doc__ = f"Fill a tensor in place with {spec!r} (layout {fan_layout})."
    return init


@functools.lru_cache(maxsize=256)
def _compiled(spec: Spec, layout: LayoutLike) -> TorchInitializer:
    return initializer(spec, layout)


def init_(
    tensor: torch.Tensor, spec: Spec, layout: LayoutLike = "torch", *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fill ``tensor`` in place with ``spec`` and return it (each (spec, layout) is compiled once)."""
    return _compiled(spec, layout)(tensor, generator=generator)


def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    *,
    layout: LayoutLike = "torch",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` with Var[W] = scale / n (n chosen by ``mode``), in place.

    .. math::
        \text{truncated\_normal: } \sigma = \sqrt{\text{scale}/n} \,/\, 0.8796\ldots,\ |W| \le 2\sigma

    Examples:
        >>> w = torch.empty(3, 5)
        >>> _ = variance_scaling_(w, 2.0, "fan_out", "uniform")
    """
    return init_(tensor, VarianceScaling(scale, mode, distribution), layout, generator=generator)


def _preset_fn(name: str) -> Callable[..., torch.Tensor]:
    spec = presets.get(name)

    def fill(
        tensor: torch.Tensor, *, layout: LayoutLike = "torch", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return init_(tensor, spec, layout, generator=generator)

    fill.__name__ = f"{name}_"
    fill.__doc__ = f"Fill ``tensor`` in place with {name}: {presets.info(name).doc}\n\nSpec: {spec!r}."
    return fill


glorot_uniform_ = _preset_fn("glorot_uniform")
glorot_normal_ = _preset_fn("glorot_normal")
he_uniform_ = _preset_fn("he_uniform")
he_normal_ = _preset_fn("he_normal")
lecun_uniform_ = _preset_fn("lecun_uniform")
lecun_normal_ = _preset_fn("lecun_normal")


def orthogonal_(
    tensor: torch.Tensor, gain: float = 1.0, *, layout: LayoutLike = "torch", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Fill ``tensor`` with ``gain`` × a Haar-random orthogonal matrix per weight block."""
    return init_(tensor, Orthogonal(gain), layout, generator=generator)


# --- whole-model re-initialization --------------------------------------------------------------

_BIAS_PREFIXES = ("bias_ih", "bias_hh")
_RNN_KINDS = {"LSTM": "torch.lstm", "GRU": "torch.gru", "RNN_TANH": "torch.rnn", "RNN_RELU": "torch.rnn"}
_CELL_KINDS = {"LSTMCell": "torch.lstm", "GRUCell": "torch.gru", "RNNCell": "torch.rnn"}


@functools.cache
def _norm_types() -> tuple[type, ...]:
    nn = torch.nn
    found = [nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm]
    if hasattr(nn, "RMSNorm"):
        found.append(nn.RMSNorm)
    return tuple(found)


# Normalization layers by class name (LayerNorm, LlamaRMSNorm, T5LayerNorm, timm's LayerNorm2d,
# BatchNormAct2d, RmsNorm, ...) or by the attributes a norm keeps (normalized_shape,
# variance_epsilon), with no parameter of more than one non-singleton axis.
_NORM_NAME = re.compile(r"(Norm|Normalization)(Act)?\d*d?\Z")
_NORM_ATTRIBUTES = ("normalized_shape", "variance_epsilon")
_OFFSET_LEAVES = ("bias", "beta", "offset", "shift")
_HF_CONV1D = Layout(0, 1, name="hf.conv1d")  # transformers' Conv1D: weight (nx, nf) = (in, out)


@functools.cache
def _packed_conv1d(projections: int) -> Layout:
    """A Conv1D whose output stacks ``projections`` projections (GPT-2's c_attn: Q, K, V)."""
    return Layout(0, 1, out_groups=projections, name=f"hf.conv1d_packed:{projections}")


def _is_hf_conv1d(module: torch.nn.Module) -> bool:
    """transformers' ``Conv1D`` (a dense layer with an (in, out) weight), known by its class name,
    its ``nf``/``nx`` attributes and its weight's shape, without importing transformers."""
    weight = getattr(module, "weight", None)
    return (
        "Conv1D" in _owner_classes(module)
        and isinstance(getattr(module, "nf", None), int)
        and isinstance(getattr(module, "nx", None), int)
        and isinstance(weight, torch.Tensor)
        and tuple(weight.shape) == (module.nx, module.nf)  # type: ignore[comparison-overlap]  # torch types nf: Tensor | Module
    )


def _packed_projections(module: torch.nn.Module, parent: torch.nn.Module | None) -> int:
    """How many projections a Conv1D packs: its parent attention's ``split_size`` (GPT-2, OpenAI
    GPT, ImageGPT: the output is split into pieces of that size) divides its outputs."""
    split = getattr(parent, "split_size", None) if parent is not None else None
    if isinstance(split, int) and split > 0 and module.nf % split == 0 and module.nf > split:  # type: ignore[operator]  # torch types nf: Tensor | Module
        return int(module.nf // split)  # type: ignore[operator]  # torch types nf: Tensor | Module
    return 1


# transformers' mixture-of-experts weights (transformers >= 5, ``integrations/moe.py``): an experts
# module holds one 3-D tensor per projection, (num_experts, out, in) used as ``F.linear(x, W[e])``,
# or (num_experts, in, out) used as ``x @ W[e]`` where HF's ``use_experts_implementation`` sets
# ``is_transposed=True`` (GPT-OSS, Aria). ``gate_up_proj`` stacks the gate and up projections on its
# out axis: [gate; up] (``is_concatenated=True``, the default) or interleaved [g0, u0, g1, u1, ...]
# (GPT-OSS). Each expert is its own matrix (a batch axis), each projection its own block.
_EXPERT_BLOCKS = {"gate_up_proj": 2, "gate_proj": 1, "up_proj": 1, "down_proj": 1}
# Experts classes without HF's decorator, whose layout their forward fixes: is_transposed, by class.
_UNDECORATED_EXPERTS = {"Llama4TextExperts": True}  # bmm(x, gate_up_proj (E, d, 2·ff)), chunk(2, -1)


def _experts_role(module: torch.nn.Module, leaf: str) -> tuple[Role, LayoutLike | None] | None:
    """The role and layout of a transformers experts module's stacked projection (or its bias,
    GPT-OSS's ``gate_up_proj_bias``), read from the module's ``num_experts`` and ``is_transposed``
    (set by HF's ``use_experts_implementation``); None for anything else."""
    experts = getattr(module, "num_experts", None)
    transposed = _UNDECORATED_EXPERTS.get(type(module).__name__, getattr(module, "is_transposed", None))
    stem = leaf.removesuffix("_bias")
    tensor = module._parameters.get(stem)
    if (
        stem not in _EXPERT_BLOCKS
        or not isinstance(experts, int)
        or not isinstance(transposed, bool)
        or not isinstance(tensor, torch.Tensor)
        or tensor.dim() != 3
        or tensor.shape[0] != experts
    ):
        return None
    if leaf != stem:
        return "bias", None
    blocks = _EXPERT_BLOCKS[stem]
    interleaved = blocks > 1 and getattr(module, "is_concatenated", True) is False
    family, (ins, outs) = ("hf.experts_transposed", (1, 2)) if transposed else ("hf.experts", (2, 1))
    return "weight", experts_layout(family, ins, outs, blocks, interleaved)


# Experts modules of transformers that predate its experts decorator, each read from its own
# forward (transformers 5.24):
# - DBRX (models/dbrx/modeling_dbrx.py, DbrxExpertGLU): ``w1``, ``v1``, ``w2`` of shape (E·ff, d),
#   each viewed as (E, ff, d); ``w1`` and ``v1`` used as ``x @ W[e].T`` (each expert (out ff, in d)),
#   ``w2`` as ``x @ W[e]`` (in ff, out d). The expert axis is folded into axis 0: one group each.
# - JetMoE (models/jetmoe/modeling_jetmoe.py, JetMoeParallelExperts): ``weight`` (E, out, in) used
#   as ``F.linear(x, W[e])``; JetMoeMoE's ``input_linear`` stacks gate and up (``chunk(2, dim=-1)``).
_DBRX_EXPERTS = {"w1": "out", "v1": "out", "w2": "in"}  # the axis of (E·ff, d) that holds E·ff
_JETMOE_GATED = {("JetMoeMoE", "input_linear")}  # (parent class, attribute): gate and up stacked


def _legacy_experts_role(
    module: torch.nn.Module, leaf: str, parent: torch.nn.Module | None
) -> tuple[Role, LayoutLike | None] | None:
    """DBRX's and JetMoE's experts weights (above), read from their modules' own sizes; None for
    anything else."""
    tensor = module._parameters.get(leaf)
    if not isinstance(tensor, torch.Tensor):
        return None
    name = type(module).__name__
    if name == "DbrxExpertGLU" and leaf in _DBRX_EXPERTS:
        experts, ff, d = (getattr(module, a, None) for a in ("moe_num_experts", "ffn_hidden_size", "hidden_size"))
        if not (isinstance(experts, int) and isinstance(ff, int) and isinstance(d, int)):
            return None
        if tuple(tensor.shape) != (experts * ff, d):
            return None
        if _DBRX_EXPERTS[leaf] == "out":
            return "weight", Layout(1, 0, out_groups=experts, name="hf.dbrx_experts")  # per expert (ff, d)
        return "weight", Layout(0, 1, in_groups=experts, name="hf.dbrx_experts_down")  # per expert (ff, d), in ff
    if name == "JetMoeParallelExperts" and leaf == "weight":
        experts = getattr(module, "num_experts", None)
        shape = (experts, getattr(module, "output_size", None), getattr(module, "input_size", None))
        if not isinstance(experts, int) or tuple(tensor.shape) != shape:
            return None
        owner = type(parent).__name__ if parent is not None else ""
        gated = any(getattr(parent, attr, None) is module for cls, attr in _JETMOE_GATED if cls == owner)
        return "weight", experts_layout("hf.experts", 2, 1, 2 if gated else 1)
    return None


# RecurrentGemma's RG-LRU (modeling_recurrent_gemma.py, RecurrentGemmaRglru): each gate is
# ``baddbmm(bias[:, None, :], x, W)`` over heads, x (heads, N, block_width): W (heads, in, out)
# block-diagonal, per head fan_in = block_width (its _init_weights: std √(scale / block_width)),
# and its bias (heads, block_width) zeros; ``recurrent_param`` is the inverse softplus of a rate
# drawn in [0.9, 0.999] (set by the model's own init).
_RGLRU_GATES = {"input_gate_weight": "input_gate_bias", "recurrent_gate_weight": "recurrent_gate_bias"}
_RGLRU_NOTE = (
    "RecurrentGemma's recurrence parameter (softplus⁻¹ of −½ log a, a drawn in [0.9², 0.999²]), set by the model's "
    "own init"
)


def _rglru_role(module: torch.nn.Module, leaf: str) -> tuple[Role, LayoutLike | None] | None:
    """The RG-LRU's gate weights (a block-diagonal matmul per head) and biases (above); None for
    anything else."""
    if type(module).__name__ != "RecurrentGemmaRglru":
        return None
    tensor = module._parameters.get(leaf)
    if not isinstance(tensor, torch.Tensor):
        return None
    if leaf in _RGLRU_GATES and tensor.dim() == 3 and tensor.shape[1] == tensor.shape[2]:
        return "weight", Layout(1, 2, (0,), name="hf.rglru_gate")
    if leaf in _RGLRU_GATES.values() and tensor.dim() == 2:
        return "bias", None
    return None


def _is_router(module: torch.nn.Module, leaf: str) -> bool:
    """A transformers MoE router that holds its own (num_experts, hidden) ``weight`` and scores
    tokens with ``F.linear(x, weight)`` (MixtralTopKRouter, DeepseekV3TopkRouter, ...)."""
    tensor = module._parameters.get(leaf) if leaf == "weight" else None
    experts = getattr(module, "num_experts", None)
    return (
        isinstance(tensor, torch.Tensor)
        and tensor.dim() == 2
        and isinstance(experts, int)
        and tensor.shape[0] == experts
        and any(c.endswith("Router") for c in _owner_classes(module))
        and not isinstance(module, torch.nn.Linear)
    )


def _constant_value(tensor: torch.Tensor) -> float | None:
    """The one value every entry of a floating-point tensor of 2+ entries holds, else None (this
    process's shard of a DTensor; nothing for meta tensors, which hold no values)."""
    local = _local(tensor)
    if local.is_meta or local.numel() < 2 or not local.is_floating_point():
        return None
    with torch.no_grad():
        flat = local.reshape(-1)
        return float(flat[0]) if bool((flat == flat[0]).all()) else None


_NORM_CLASSES: dict[type, tuple[bool, bool]] = {}  # a module class -> (a norm, scale used as 1 + weight)


def _norm_flags(module: torch.nn.Module) -> tuple[bool, bool]:
    """Whether ``module`` is a normalization layer, and whether its scale is used as 1 + weight."""
    cls = type(module)
    if cls not in _NORM_CLASSES:
        named = isinstance(module, _norm_types()) or any(_NORM_NAME.search(c) for c in _owner_classes(module))
        unit = False
        if named and not isinstance(module, _norm_types()):
            try:
                unit = bool(UNIT_OFFSET.search(inspect.getsource(cls.forward)))
            except (OSError, TypeError):  # no source (compiled, interactive): a plain scale
                unit = False
        _NORM_CLASSES[cls] = (named, unit)
    named, unit = _NORM_CLASSES[cls]
    if named:
        return True, unit
    own = list(module.parameters(recurse=False))
    duck = (
        any(hasattr(module, a) for a in _NORM_ATTRIBUTES)
        and bool(own)
        and all(sum(d > 1 for d in t.shape) <= 1 for t in own)
    )
    return duck, False


# Mamba's selective state-space parameters (HF Mamba, FalconMamba, Jamba, Mamba2, mamba_ssm): a
# mixer holds A_log and D itself, and Mamba 1 a ``dt_proj`` Linear whose bias the model's own init
# sets to the inverse softplus of time steps drawn log-uniformly in [time_step_min, time_step_max]
# (HF MambaMixer.init_mamba_weights; mamba_ssm marks it ``_no_reinit``). None of them multiplies
# an input: zeros or a fan-based draw would change what the layer computes (dt = softplus(0) ≈
# 0.69 for every channel), so the defaults keep them, with these reasons.
_SSM_NOTES = {
    "A_log": "a state-space model's A_log (Mamba: the log of its S4D-real A; Qwen3-Next's gated DeltaNet: the log "
    "of U(0.01, 16)), set by the model's own init",
    "D": "a state-space model's skip term D (Mamba), set by the model's own init",
    "dt_bias": "a state-space model's time-step bias (Mamba 2: the inverse softplus of dt in "
    "[time_step_min, time_step_max]; Qwen3-Next's gated DeltaNet: ones), set by the model's own init",
}
_SSM_DT_NOTE = (
    "a state-space model's time-step bias (Mamba: the inverse softplus of dt in [time_step_min, time_step_max]), "
    "set by the model's own init; zeros would start every dt at softplus(0) = 0.69"
)
_SSM_KEPT = "; kept unless a rule names it"


def _is_ssm_mixer(module: torch.nn.Module | None) -> bool:
    """A Mamba mixer: it holds its own ``A_log`` and ``D`` parameters (or ``A_log`` and
    ``dt_bias`` without ``D``: Qwen3-Next's gated DeltaNet, modeling_qwen3_next.py
    ``Qwen3NextGatedDeltaNet``, g = −exp(A_log) · softplus(a + dt_bias))."""
    own = module._parameters if module is not None else {}
    return isinstance(own.get("A_log"), torch.Tensor) and (
        isinstance(own.get("D"), torch.Tensor) or isinstance(own.get("dt_bias"), torch.Tensor)
    )


# Parameters other models' own inits set to values that carry meaning, which the defaults
# (biases -> zeros) or the one spec would lose, each read from transformers 5.24's modeling file:
# - deformable attention (RT-DETR, Deformable DETR, Mask2Former's pixel decoder, Grounding DINO,
#   ...: a ``...MultiscaleDeformableAttention`` module, ``_init_weights``): ``sampling_offsets.bias``
#   is a grid of directions per head, point i at distance i + 1; zeros would put every sampling
#   point on its reference point (the same init zeroes ``sampling_offsets.weight`` and
#   ``attention_weights``).
# - xLSTM (modeling_xlstm.py, ``xLSTMLayer``; ``_init_weights``): the input gate's bias at −10, the
#   forget gate's a linspace(3, 6) over heads (the fused ``ifgate_preact``: both, heads first);
#   zeros would start every forget gate at sigmoid(0) = 0.5 instead of 0.95–0.998.
# - RWKV (modeling_rwkv.py, ``RwkvSelfAttention``, ``RwkvFeedForward``; ``_init_weights``):
#   ``time_decay`` and ``time_first`` (per-channel decay speeds and the first-token bonus) and the
#   ``time_mix_*`` ratios (1, 1, C), ramps over channels that depend on the layer's depth.
_DEFORMABLE_NOTE = (
    "deformable attention's sampling-offset bias: a grid of directions per head (point i at distance i + 1), set by "
    "the model's own init; zeros would put every sampling point on its reference point. Kept unless a rule names it "
    "(the same init zeroes sampling_offsets.weight and attention_weights: rules={'*.sampling_offsets.weight': "
    "initscale.Zeros(), '*.attention_weights.*': initscale.Zeros()} reproduce it)"
)
_XLSTM_GATES = {
    "igate_preact": "xLSTM's input-gate bias (−10), set by the model's own init",
    "fgate_preact": "xLSTM's forget-gate bias (linspace(3, 6) over heads), set by the model's own init; zeros would "
    "start every forget gate at sigmoid(0) = 0.5",
    "ifgate_preact": "xLSTM's fused input- and forget-gate bias (−10 for the input gates, linspace(3, 6) for the "
    "forget gates), set by the model's own init",
}
_RWKV_NOTES = {
    "time_decay": "RWKV's per-channel decay speed (a ramp over channels by layer depth), set by the model's own init",
    "time_first": "RWKV's per-channel first-token bonus, set by the model's own init",
    "time_mix_key": "RWKV's time-mixing ratio (a ramp over channels by layer depth), set by the model's own init",
    "time_mix_value": "RWKV's time-mixing ratio (a ramp over channels by layer depth), set by the model's own init",
    "time_mix_receptance": "RWKV's time-mixing ratio (a ramp over channels by layer depth), set by the model's own "
    "init",
}
_RWKV_CLASSES = ("RwkvSelfAttention", "RwkvFeedForward")


def _attribute_of(parent: torch.nn.Module | None, module: torch.nn.Module) -> str | None:
    """The name under which ``parent`` holds ``module`` as a direct submodule, or None."""
    if parent is None:
        return None
    return next((name for name, child in parent._modules.items() if child is module), None)


def _is_stacked_under_embeddings(module: torch.nn.Module, leaf: str, parent: torch.nn.Module | None) -> bool:
    """HF MobileBERT's LM head (modeling_mobilebert.py, ``MobileBertLMPredictionHead.forward``:
    ``x @ cat([decoder.weight.t(), dense.weight], 0)``): ``dense`` is an ``nn.Linear(vocab,
    hidden − emb)`` whose (hidden − emb, vocab) weight is used as the lower rows of one (hidden,
    vocab) matrix, (in, out), whose upper rows are the decoder's weight (tied to the word
    embeddings). Read as a Linear, its fans would be (vocab, hidden − emb); the matrix's fan_in is
    hidden, and its upper rows are embeddings: it has no fans of its own."""
    if leaf != "weight" or type(parent).__name__ != "MobileBertLMPredictionHead":
        return False
    decoder, weight = getattr(parent, "decoder", None), module._parameters.get("weight")
    decoder_weight = getattr(decoder, "weight", None)
    return (
        getattr(parent, "dense", None) is module
        and isinstance(weight, torch.Tensor)
        and isinstance(decoder_weight, torch.Tensor)
        and weight.dim() == 2
        and decoder_weight.dim() == 2
        and weight.shape[1] == decoder_weight.shape[0]
    )


# LayoutLMv2/v3 (and PP-DocLayoutV2's reading-order encoder): each relative-position bias is an
# nn.Linear(bins, heads) whose weight is read as a lookup table (modeling_layoutlmv3.py
# ``_relative_position_lookup``: ``bias.weight[:, buckets]`` under no_grad; v2:
# ``weight.t()[rel_pos]``), never multiplied: an embedding of num_embeddings = bins (axis 1).
_LOOKUP_LINEAR_OWNERS = frozenset({"LayoutLMv2Encoder", "LayoutLMv3Encoder", "PPDocLayoutV2ReadingOrderEncoder"})
_LOOKUP_LINEAR = re.compile(r"rel_pos(_x|_y)?_bias\Z")
_LOOKUP_NOTE = (
    "a relative-position bias table: an nn.Linear whose weight is read by bucket (weight[:, buckets]), not "
    "multiplied, so an embedding (bins, heads), kept unless a rule names it (HF draws it N(0, initializer_range): "
    "initscale.Normal(0.02))"
)


def _is_lookup_linear(module: torch.nn.Module, leaf: str, parent: torch.nn.Module | None) -> bool:
    """An ``nn.Linear`` of the models above read as a lookup table (see there)."""
    attribute = _attribute_of(parent, module) if leaf == "weight" else None
    return (
        attribute is not None
        and type(parent).__name__ in _LOOKUP_LINEAR_OWNERS
        and _LOOKUP_LINEAR.match(attribute) is not None
        and isinstance(module, torch.nn.Linear)
    )


def _stacked_head_note(module: torch.nn.Module, parent: torch.nn.Module) -> str:
    weight, decoder = module.get_parameter("weight"), parent.get_submodule("decoder").get_parameter("weight")
    emb = int(decoder.shape[1])
    hidden = emb + int(weight.shape[0])
    return (
        f"MobileBERT's LM head: this (hidden − emb, vocab) weight is stacked under the tied embeddings' transpose "
        f"(x @ cat([decoder.weight.t(), dense.weight], 0), a ({hidden}, {int(weight.shape[1])}) matrix of fan_in "
        f"{hidden}, its first {emb} rows the embeddings), so it has no fans of its own: kept unless a rule names it "
        "(a fixed-scale spec; HF draws it N(0, initializer_range): initscale.Normal(0.02))"
    )


def _is_fourier_features(module: torch.nn.Module, leaf: str) -> bool:
    """HF SAM's (and SAM-HQ's) ``SamPositionalEmbedding``: a (2, features) random Fourier-feature
    matrix that point coordinates are multiplied by (``coords @ positional_embedding``), drawn
    N(0, scale²) by the model (``scale * torch.randn``; ``_init_weights``: ``normal_(std=scale)``).
    Its name reads as an added position embedding, which it is not."""
    tensor = module._parameters.get(leaf)
    scale = getattr(module, "scale", None)
    return (
        isinstance(tensor, torch.Tensor)
        and tensor.dim() == 2
        and tensor.shape[0] == 2
        and isinstance(scale, int | float)
        and not isinstance(scale, bool)
        and any(c.endswith("PositionalEmbedding") for c in _owner_classes(module))
    )


def _model_set_note(module: torch.nn.Module, leaf: str, parent: torch.nn.Module | None) -> str:
    """Why the defaults keep a parameter whose value the model's own init computes (Mamba's A_log,
    D and time-step biases, SAM's Fourier features), or "" for every other parameter."""
    if _is_fourier_features(module, leaf):
        scale = float(getattr(module, "scale", 1.0))
        return (
            f"a random Fourier-feature matrix (coordinates @ it), drawn N(0, {scale:g}²) by the model: not an "
            f"added position embedding; kept unless a rule names it (initscale.Normal({scale:g}) redraws it as the "
            "model does)"
        )
    if leaf in _SSM_NOTES and _is_ssm_mixer(module):
        return _SSM_NOTES[leaf] + _SSM_KEPT
    if leaf == "bias" and _is_ssm_mixer(parent) and getattr(parent, "dt_proj", None) is module:
        return _SSM_DT_NOTE + _SSM_KEPT
    if leaf in _RWKV_NOTES and type(module).__name__ in _RWKV_CLASSES:
        return _RWKV_NOTES[leaf] + _SSM_KEPT
    if leaf == "recurrent_param" and type(module).__name__ == "RecurrentGemmaRglru":
        return _RGLRU_NOTE + _SSM_KEPT
    if leaf in ("emb_rel_k", "emb_rel_v") and type(module).__name__ == "VitsAttention":
        head_dim = getattr(module, "head_dim", None)
        std = f"{float(head_dim) ** -0.5:.4g}" if isinstance(head_dim, int) and head_dim > 0 else "head_dim^-½"
        return (
            f"VITS's relative-position embedding (window, head_dim), used in the attention's matmuls and drawn "
            f"N(0, head_dim⁻¹) by the model's own init; kept unless a rule names it (initscale.Normal({std}) redraws "
            "it as the model does)"
        )
    if leaf == "gru_rel_pos_const" and type(module).__name__ == "WavLMAttention":
        return "WavLM's per-head gated relative-position constant, ones by the model's own init" + _SSM_KEPT
    if _is_stacked_under_embeddings(module, leaf, parent):
        assert parent is not None
        return _stacked_head_note(module, parent)
    if _is_lookup_linear(module, leaf, parent):
        return _LOOKUP_NOTE
    attribute = _attribute_of(parent, module) if leaf == "bias" else None
    if attribute == "sampling_offsets" and type(parent).__name__.endswith("MultiscaleDeformableAttention"):
        return _DEFORMABLE_NOTE
    if attribute in _XLSTM_GATES and type(parent).__name__ == "xLSTMLayer":
        return _XLSTM_GATES[attribute] + _SSM_KEPT
    return ""


def _is_embedding(module: torch.nn.Module, leaf: str, ndim: int) -> bool:
    if isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
        return leaf == "weight"
    return (
        leaf == "weight"
        and ndim == 2
        and any(c.endswith("Embedding") for c in _owner_classes(module))
        and isinstance(getattr(module, "num_embeddings", None), int)
        and isinstance(getattr(module, "embedding_dim", None), int)
    )


def _is_bias(leaf: str) -> bool:
    return leaf in ("bias", "in_proj_bias") or leaf.startswith(_BIAS_PREFIXES)


def _role_and_layout(
    module: torch.nn.Module, leaf: str, ndim: int, parent: torch.nn.Module | None = None
) -> tuple[Role, LayoutLike | None]:
    """What a parameter is to its owning module, and the layer kind that gives its forward fans
    (None for a parameter of a layer initscale does not recognise: its layout is never guessed).
    ``parent``: the module that holds ``module``, for layers whose layout depends on it (a
    transformers Conv1D packing GPT-2's Q, K and V)."""
    nn = torch.nn
    if _norm_flags(module)[0]:
        if _is_bias(leaf) or leaf in _OFFSET_LEAVES:
            return "norm_offset", None
        tensor = getattr(module, leaf, None)
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else (ndim,) * ndim
        return ("norm_scale", None) if sum(d > 1 for d in shape) <= 1 else ("other", None)
    if (experts := _experts_role(module, leaf) or _legacy_experts_role(module, leaf, parent)) is not None:
        return experts
    if (gates := _rglru_role(module, leaf)) is not None:
        return gates
    if _is_bias(leaf):
        return "bias", None
    if _is_router(module, leaf):
        return "weight", "torch.linear"  # F.linear(x, weight): (num_experts, hidden) = (out, in)
    if isinstance(module, nn.Linear) and leaf == "weight":
        return "weight", "torch.linear"
    if isinstance(module, nn.Bilinear) and leaf == "weight":
        return "weight", "torch"  # (out, in1, in2): fan_in = in1 · in2
    if isinstance(module, nn.modules.conv._ConvTransposeNd) and leaf == "weight":
        stride = stride_product(module.stride, len(module.kernel_size))
        return "weight", f"torch.conv_transpose:groups={module.groups}" + (f",stride={stride}" if stride > 1 else "")
    if isinstance(module, nn.modules.conv._ConvNd) and leaf == "weight":
        if module.groups > 1 and module.groups == module.in_channels:
            return "weight", f"torch.depthwise_conv:multiplier={module.out_channels // module.in_channels}"
        return "weight", f"torch.conv:groups={module.groups}"
    if isinstance(module, nn.RNNBase) and leaf.startswith(("weight_ih", "weight_hh")):
        return "weight", _RNN_KINDS[module.mode]
    if isinstance(module, nn.RNNBase) and leaf.startswith("weight_hr"):
        return "weight", "torch.linear"  # LSTM projection (proj_size, hidden)
    if isinstance(module, nn.RNNCellBase) and leaf in ("weight_ih", "weight_hh"):
        return "weight", _CELL_KINDS.get(type(module).__name__, "torch.rnn")
    if isinstance(module, nn.MultiheadAttention) and leaf == "in_proj_weight":
        return "weight", "torch.mha_in_proj"
    if isinstance(module, nn.MultiheadAttention) and leaf in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
        return "weight", "torch.linear"
    if _is_embedding(module, leaf, ndim):
        return "embedding", "torch.embedding"
    if leaf == "weight" and _is_hf_conv1d(module):
        projections = _packed_projections(module, parent)
        return "weight", _HF_CONV1D if projections == 1 else _packed_conv1d(projections)
    return "other", None


_CLASS_NAMES: dict[type, tuple[str, ...]] = {}  # a module class -> its class names, computed once


# Zamba2's MLP (modeling_zamba2.py, Zamba2MLP.forward): ``gate_up_proj(x) + adapter(x)``, then
# ``chunk(2, dim=-1)`` into gate and up; the adapter a LoRA pair ``Sequential(Linear(d, rank),
# Linear(rank, 2·ff))`` per shared block. Both (2·ff)-output weights stack two equal projections.
_ZAMBA2_GATE_UP = re.compile(r"(\A|\.)(gate_up_proj|gate_up_proj_adapter_list\.\d+\.1)\Z")
_GATE_UP = Layout(1, 0, out_groups=2, name="hf.gate_up")  # (2·ff, in): per projection fans (in, ff)


def _is_zamba2_gate_up(prefix: str, owner: torch.nn.Module, by_prefix: Mapping[str, torch.nn.Module]) -> bool:
    """Whether the Linear at ``prefix`` is Zamba2's packed gate-and-up projection or its adapter's."""
    found = _ZAMBA2_GATE_UP.search(prefix) if isinstance(owner, torch.nn.Linear) else None
    if found is None or not isinstance(owner, torch.nn.Linear):
        return False
    mlp = by_prefix.get(prefix[: found.start()])
    return type(mlp).__name__ == "Zamba2MLP" and int(owner.out_features) % 2 == 0


def _owner_classes(module: torch.nn.Module) -> tuple[str, ...]:
    cls = type(module)
    if cls not in _CLASS_NAMES:
        _CLASS_NAMES[cls] = tuple(c.__name__ for c in cls.__mro__ if c not in (torch.nn.Module, object))
    return _CLASS_NAMES[cls]


def _padding_idx(module: torch.nn.Module, role: Role) -> int | None:
    """The row an embedding keeps at zero (``padding_idx``, made non-negative by torch)."""
    index = getattr(module, "padding_idx", None) if role == "embedding" else None
    if not isinstance(index, int) or isinstance(index, bool):
        return None
    return index % module.num_embeddings if isinstance(getattr(module, "num_embeddings", None), int) else index  # type: ignore[operator, return-value]  # an int, checked


def _walk(
    module: torch.nn.Module,
    recurse: bool,
    include_buffers: bool,
    reparams: Sequence[_reparam.Reparam] | None = None,
) -> list[tuple[Param, torch.Tensor]]:
    """Every parameter (and buffer, if asked) in ``named_parameters`` order, with its owner; a
    tied tensor's later names too, each with ``tied_to`` its first name. ``reparams``: the
    model's computed weights (:func:`._torch_reparam.find`), if the caller has them already."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"Argument `module` must be a torch.nn.Module. Received: {type(module).__name__}.")
    first: dict[int, str] = {}
    found: list[tuple[Param, torch.Tensor]] = []
    modules = list(module.named_modules(remove_duplicate=False)) if recurse else [("", module)]
    by_prefix = dict(modules)
    # The owner's class names, then each enclosing module's (innermost first): a class rule on
    # "MultiheadAttention" reaches its out_proj, one on "LlamaAttention" its q/k/v/o projections.
    # A norm's scale and offset keep their own classes only, so a rule on a block leaves its norms
    # to the defaults (a fan-based spec has no fans for them), as the Keras and JAX walks do.
    chains: dict[str, tuple[str, ...]] = {}
    for prefix, owner in modules:
        above = chains.get(prefix.rpartition(".")[0], ()) if prefix else ()
        chains[prefix] = tuple(dict.fromkeys(_owner_classes(owner) + above))
    # weights a layer computes from other tensors (weight norm, spectral norm, parametrizations)
    found_reparams = _reparam.find(modules) if reparams is None else reparams
    computes = {name: r for r in found_reparams for name in r.originals}
    for prefix, owner in modules:
        items: list[tuple[str, torch.Tensor, bool]] = [
            (leaf, t, False) for leaf, t in owner.named_parameters(recurse=False)
        ]
        if include_buffers:
            items += [(leaf, t, True) for leaf, t in owner.named_buffers(recurse=False)]
        parent = by_prefix.get(prefix.rpartition(".")[0]) if prefix else None
        for leaf, tensor, is_buffer in items:
            name = f"{prefix}.{leaf}" if prefix else leaf
            tied_to = first.get(id(tensor))  # tied weights: set once, under their first name
            if tied_to is None:
                first[id(tensor)] = name
            if torch.nn.parameter.is_lazy(tensor):
                raise ValueError(
                    f"Parameter {name!r} of the lazy module {type(owner).__name__} is not materialized yet: "
                    "run one forward pass with a sample input first, then re-initialize."
                )
            if not is_buffer and (computed := computes.get(name)) is not None:
                found.append((_reparam_param(computed, name, tensor, by_prefix, chains, tied_to), tensor))
                continue
            role, layout = _role_and_layout(owner, leaf, tensor.dim(), parent)
            if _is_stacked_under_embeddings(owner, leaf, parent):  # no fans of its own: not drawn as a Linear's
                role, layout = "other", None
            elif _is_lookup_linear(owner, leaf, parent):  # (heads, bins) read by bucket: the table's rows are axis 1
                role, layout = "embedding", Layout(1, 0, name="hf.lookup_linear")
            elif leaf == "weight" and _is_zamba2_gate_up(prefix, owner, by_prefix):
                layout = _GATE_UP
            classes = _owner_classes(owner) if role in ("norm_scale", "norm_offset") else chains[prefix]
            added = role == "other" and tensor.dim() >= 2 and ADDED_TENSOR.search(leaf) is not None
            param = Param(
                name,
                tuple(tensor.shape),
                classes,
                role,
                layout,
                frozen=not tensor.requires_grad and not is_buffer,
                buffer=is_buffer,
                tied_to=tied_to,
                padding_idx=_padding_idx(owner, role),
                unit_offset=role == "norm_scale" and _norm_flags(owner)[1],
                note=_model_set_note(owner, leaf, parent) or (ADDED_TENSOR_NOTE if added else ""),
            )
            found.append((param, tensor))
    return found


def _reparam_param(
    computed: _reparam.Reparam,
    name: str,
    tensor: torch.Tensor,
    by_prefix: Mapping[str, torch.nn.Module],
    chains: Mapping[str, tuple[str, ...]],
    tied_to: str | None,
) -> Param:
    """The Param of a tensor a layer's weight is computed from (:mod:`._torch_reparam`): weight
    norm's v and spectral norm's W are the layer's weight (its role, layout and classes, so a rule
    on ``"Conv1d"`` reaches them); weight norm's g and another parametrization's originals carry a
    note and only their own parametrization's class, so no rule on the layer reaches them."""
    frozen = not tensor.requires_grad
    if name == computed.drawn:
        layer = by_prefix[computed.layer]
        parent = by_prefix.get(computed.layer.rpartition(".")[0]) if computed.layer else None
        role, layout = _role_and_layout(layer, computed.leaf, tensor.dim(), parent)
        return Param(
            name,
            tuple(tensor.shape),
            chains[computed.layer],
            role,
            layout,
            frozen=frozen,
            tied_to=tied_to,
            padding_idx=_padding_idx(layer, role),
        )
    note = _reparam.magnitude_note(computed) if name == computed.magnitude else _reparam.other_note(computed)
    return Param(name, tuple(tensor.shape), computed.classes, "other", None, frozen=frozen, tied_to=tied_to, note=note)


def _self_overlapping(tensor: torch.Tensor) -> bool:
    """Whether two elements of ``tensor`` share one memory location (``expand()``, ``as_strided``).

    Exact: the axes sorted by stride are disjoint when each stride exceeds the farthest offset
    the smaller ones reach (every sliced, permuted or dense tensor); otherwise the element
    offsets are compared (rare layouts only, one int64 per element)."""
    if tensor.numel() <= 1:
        return False
    reach = 0
    for stride, n in sorted((abs(st), n) for st, n in zip(tensor.stride(), tensor.shape, strict=True) if n > 1):
        if stride <= reach:
            break
        reach += stride * (n - 1)
    else:
        return False
    offsets = torch.zeros((), dtype=torch.int64)
    for stride, n in zip(tensor.stride(), tensor.shape, strict=True):
        offsets = offsets.unsqueeze(-1) + torch.arange(n, dtype=torch.int64) * stride
    return bool(torch.unique(offsets.reshape(-1)).numel() < tensor.numel())


def _write_problem(name: str, tensor: torch.Tensor) -> tuple[type[Exception], str] | None:
    """Why writing new values into ``tensor`` would fail (or silently lose values), or None.

    Checked for every target before the first write, so that each predictable failure leaves the
    whole model unchanged: a meta tensor, a dtype or layout initscale cannot fill, an inference
    tensor (or a view of one) outside ``torch.inference_mode()``, memory shared between elements.
    Not detectable from torch: memory that is read-only outside torch (``torch.from_numpy`` of a
    read-only array only warns when it is made)."""
    where = f"Parameter {name!r} (shape {tuple(tensor.shape)})"
    if tensor.layout != torch.strided:
        return TypeError, (
            f"{where} has layout {tensor.layout}; initscale fills dense tensors of layout "
            f"torch.strided only. Leave it out with the rule {{{name!r}: None}}, or make it dense."
        )
    try:
        _check_tensor(tensor)
    except (TypeError, ValueError) as err:
        fix = f" Leave it out with the rule {{{name!r}: None}}." if isinstance(err, TypeError) else ""
        return type(err), f"Parameter {name!r}: {err}{fix}"
    local = _local(tensor)
    if local.is_inference() and not torch.is_inference_mode_enabled():
        return ValueError, (
            f"{where} is an inference tensor (made under torch.inference_mode(), or a view of one), which "
            "cannot be changed in place outside inference mode. Replace it by a normal tensor first, e.g. "
            f"module.{name} = torch.nn.Parameter(module.{name}.clone()) outside inference mode, or call "
            "reinit_ inside `with torch.inference_mode():`."
        )
    if _self_overlapping(local):
        return ValueError, (
            f"{where} has self-overlapping memory (strides {tuple(local.stride())}, e.g. from expand()): "
            "several of its elements share one memory location and cannot get independent values. Give it "
            f"its own memory first, e.g. module.{name} = torch.nn.Parameter(module.{name}.detach().clone())."
        )
    return None


def _check_writable(targets: Sequence[tuple[str, torch.Tensor]]) -> None:
    """Raise, naming every parameter that cannot be written and what to do, before any write."""
    refuse([found for name, tensor in targets if (found := _write_problem(name, tensor)) is not None])


def _check_generator_type(generator: Any) -> None:
    """A TypeError naming the value unless ``generator`` is a ``torch.Generator`` or None."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            "Argument `generator` must be a torch.Generator (on the device of the tensors it draws) or None "
            f"(torch's global generators). Received: generator={generator!r}."
        )


def _generator_device_problem(generator: torch.Generator | None, drawn: Sequence[tuple[str, Any]]) -> str | None:
    """The refusal when ``generator`` sits on another device type than tensors it would draw:
    torch draws on a device only from a generator of that device type (a DTensor's shards, a
    stream draw and a constant take no values from it, and are not passed here)."""
    if generator is None:
        return None
    device_type = generator.device.type
    others = [(name, t.device) for name, t in drawn if not t.is_meta and t.device.type != device_type]
    if not others:
        return None
    devices = sorted({str(d) for _, d in others})
    names = ", ".join(repr(n) for n, _ in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    return (
        f"Argument `generator` is on {generator.device} but {len(others)} parameter(s) to draw are on "
        f"{', '.join(devices)} ({names}): torch draws on a device only from a generator of that device type; "
        f"nothing was changed. Pass torch.Generator(device={devices[0]!r}).manual_seed(...), or move the "
        "model to the generator's device first (a model spread over several device types needs one "
        "reinit_ call per part, each with its own generator)."
    )


def _stream_for(seed: int, name: str, names: Mapping[str, str] | Callable[[str], str] | None) -> Stream:
    if names is None:
        return Stream(seed, name)
    return Stream(seed, names(name) if callable(names) else names.get(name, name))


def _with_weight_fans(
    module: torch.nn.Module,
    recurse: bool,
    found: list[tuple[Param, torch.Tensor]],
    reparams: Sequence[_reparam.Reparam],
) -> list[tuple[Param, torch.Tensor]]:
    """Each bias whose module also has the matching weight (``bias`` -> ``weight``,
    ``bias_ih_l0`` -> ``weight_ih_l0``, ``in_proj_bias`` -> ``in_proj_weight``) takes that weight's
    fans when its spec needs fans (``Param.fans_of``), as ``nn.Linear``/``_ConvNd.reset_parameters``
    bound the bias by 1/√fan_in of the weight (torch/nn/modules/linear.py, conv.py)."""
    names = {id(t): p.name for p, t in found}
    by_name = {p.name: t for p, t in found}
    modules = list(module.named_modules()) if recurse else [("", module)]
    # a parametrized layer's weight is computed: its bias takes the fans of the tensor drawn for it
    computed = {(r.layer, r.leaf): r.drawn for r in reparams if r.drawn is not None}
    weight_of: dict[int, str] = {}
    for prefix, owner in modules:
        own = dict(owner.named_parameters(recurse=False))
        for leaf, tensor in own.items():
            if _is_bias(leaf):
                sibling = own.get(leaf.replace("bias", "weight"))
                drawn = computed.get((prefix, leaf.replace("bias", "weight")))
                sibling = by_name.get(drawn) if sibling is None and drawn is not None else sibling
            elif leaf.endswith("_bias") and _experts_role(owner, leaf) == ("bias", None):
                sibling = own.get(leaf.removesuffix("_bias"))  # GPT-OSS: gate_up_proj_bias -> gate_up_proj
            else:
                sibling = None
            if sibling is not None and id(sibling) in names:
                weight_of[id(tensor)] = names[id(sibling)]
    return [
        (dataclasses.replace(p, fans_of=weight_of[id(t)]) if p.role == "bias" and id(t) in weight_of else p, t)
        for p, t in found
    ]


# --- the write path: checked first, then written in place with bounded temporaries --------------

_GROUP_BYTES = 16 * 2**20  # a flat buffer of small tensors drawn at once holds at most this much
_DIRECT_BYTES = 2**20  # a tensor this large is drawn straight into its own memory, not into a buffer
_PIECE_BYTES = 16 * 2**20  # ... this many bytes at a time (a fill may stage up to twice a piece: bf16 uniforms
# in float32, float32 truncated normals beyond ±4σ in float64), so one draw needs at most 3 × 16 MiB


def _pieces(tensor: torch.Tensor, limit: int) -> Any:
    """``tensor`` as views of at most ``limit`` elements each, in row-major order: flat slices of
    a contiguous tensor (each a multiple of 16 elements long but the last), else runs of rows."""
    if tensor.numel() <= limit:
        yield tensor
    elif tensor.is_contiguous():
        flat = tensor.view(-1)
        for start in range(0, flat.numel(), limit):
            yield flat[start : start + limit]
    elif tensor.dim() == 1 or tensor[0].numel() <= limit:
        step = max(1, limit // max(1, tensor[0].numel()))
        for start in range(0, tensor.shape[0], step):
            yield tensor.narrow(0, start, min(step, tensor.shape[0] - start))
    else:
        for row in tensor:
            yield from _pieces(row, limit)


def _fill_bounded(dist: Distribution, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
    """:func:`_fill` straight into ``tensor``, ``_PIECE_BYTES`` at a time (elementwise
    distributions only: the pieces are iid like the whole)."""
    limit = max(16, _PIECE_BYTES // tensor.element_size() // 16 * 16)
    for piece in _pieces(tensor, limit):
        _fill(dist, None, piece, generator)


def _partial_problem(name: str, tensor: torch.Tensor) -> str | None:
    if any(p.is_partial() for p in tensor.placements):  # type: ignore[attr-defined]
        return (
            f"Cannot initialize {name} with a Partial placement (its value is a pending reduction). "
            "Redistribute it to Shard or Replicate placements first."
        )
    return None


def _shard_fill(dist: Distribution, layout: Layout | None, tensor: torch.Tensor, name: str, seeds: _ShardSeeds) -> None:
    """This rank's shard of a DTensor filled in place: the values of :func:`_shard_values` (the
    same seeds), a local shard over ``_PIECE_BYTES`` drawn piece by piece."""
    if isinstance(dist, OrthogonalDist):  # a matrix property: the global weight is drawn anyway
        _local(tensor).copy_(_shard_values(dist, layout, tensor, name, seeds))
        return
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local = _local(tensor)
    local_shape, offset = compute_local_shape_and_global_offset(
        tuple(tensor.shape),
        tensor.device_mesh,  # type: ignore[attr-defined]
        tensor.placements,  # type: ignore[attr-defined]
    )
    base = seeds.base(tensor.device_mesh, local.device)  # type: ignore[attr-defined]
    gen = torch.Generator(device=local.device).manual_seed(_stream_seed(base, name, tuple(offset), tuple(local_shape)))
    _fill_bounded(dist, local, gen)


def _write_jobs(
    targets: Sequence[Target[torch.Tensor]],
    generator: torch.Generator | None,
    stream_seed: int | None,
    stream_names: Mapping[str, str] | Callable[[str], str] | None,
) -> list[Write]:
    """Every write, in place and in draw order, after every check a write could fail
    predictably: a problem raises here, before anything is written."""
    seeds = _ShardSeeds(generator)
    jobs: list[Write] = []
    problems: list[tuple[type[Exception], str]] = []
    # Parameters that share a distribution, dtype and device (and need no layout) are drawn as flat
    # buffers split into views (initscale.reinit.bounded_groups): one kernel call per buffer instead
    # of one per tensor, then one multi-tensor copy. A group of at most _GROUP_BYTES is one buffer
    # (as it always was: the same values for a seed); in a larger group each tensor of _DIRECT_BYTES
    # or more is drawn into its own memory and the small ones into buffers of at most _GROUP_BYTES.
    # torch.* presets whose values are torch's (torch_ops.torchs_stream) are never grouped.
    grouped: list[tuple[tuple[Any, torch.dtype, torch.device], int, tuple[str, torch.Tensor]]] = []
    for target in targets:
        decision, tensor, name = target.decision, target.handle, target.name
        dist = decision.dist
        assert dist is not None  # a target: the plan gives it values
        if tensor.numel() == 0:
            continue
        if stream_seed is not None:
            if isinstance(dist, OrthogonalDist):
                problems.append(
                    (
                        ValueError,
                        f"Parameter {name!r}: orthogonal specs have no portable stream; give "
                        "it a rule without stream_seed, or another spec.",
                    )
                )
                continue
            stream = _stream_for(stream_seed, name, stream_names)
            strides = canonical_strides(decision.param.shape, decision.param.layout)
            gates = gate_index(decision.param.shape, decision.param.layout)
            if gates is not None and _is_dtensor(tensor):
                problems.append(
                    (
                        ValueError,
                        f"Parameter {name!r}: a sharded weight whose layer kind stacks its "
                        "gates in a non-canonical order (a Keras GRU layout) has no portable "
                        "stream in torch; give it torch's own layout.",
                    )
                )
                continue
            jobs.append(Write((name,), functools.partial(_stream_draw, stream, dist, strides, tensor, True, gates)))
        elif _is_dtensor(tensor):
            if (problem := _partial_problem(repr(name), tensor)) is not None:
                problems.append((ValueError, problem))
                continue
            jobs.append(Write((name,), functools.partial(_shard_fill, dist, decision.layout, tensor, name, seeds)))
        elif isinstance(dist, OrthogonalDist):
            if decision.layout is None:
                problems.append((ValueError, f"Parameter {name!r}: an orthogonal init needs the weight's layout."))
                continue
            jobs.append(Write((name,), functools.partial(_fill, dist, decision.layout, tensor, generator)))
        elif _torch_ops.torchs_stream(dist, tensor):
            # torch.* presets: torch's own call on the whole tensor, one tensor at a time in the model's
            # order, so the values are a loop of torch.nn.init calls from the same generator (a flat
            # buffer of several tensors, or a large one drawn in pieces, would be another stream)
            jobs.append(Write((name,), functools.partial(_fill, dist, None, tensor, generator)))
        else:
            grouped.append(
                ((dist, tensor.dtype, tensor.device), tensor.numel() * tensor.element_size(), (name, tensor))
            )
    refuse(problems)
    for (dist, _, _), direct, members in bounded_groups(grouped, group_bytes=_GROUP_BYTES, direct_bytes=_DIRECT_BYTES):
        names = tuple(n for n, _ in members)
        if direct:
            jobs.append(Write(names, functools.partial(_fill_bounded, dist, members[0][1], generator)))
        else:
            jobs.append(Write(names, functools.partial(_fill_group, dist, members, generator)))
    return jobs


def _fill_group(
    dist: Distribution, members: Sequence[tuple[str, torch.Tensor]], generator: torch.Generator | None
) -> None:
    """One flat buffer for ``members`` (same dtype and device), drawn at once and copied in; or,
    where the compiled CPU sampler applies to every member, each drawn straight into its own memory
    (one call per tensor costs microseconds there, and the copy, which is most of the time on a
    model of many small convolutions, is gone)."""
    tensors = [t for _, t in members]
    if all(_torch_ops.sampler_ready(dist, t) is not None for t in tensors):
        for tensor in tensors:
            _torch_ops.sampled(dist, tensor, generator)
        return
    flat = torch.empty(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=tensors[0].device)
    _fill(dist, None, flat, generator)
    parts = torch.split(flat, [t.numel() for t in tensors])
    _copy_all([(t, p.view(t.shape)) for t, p in zip(tensors, parts, strict=True)])


@dataclasses.dataclass(frozen=True)
class _Backend:
    """``reinit_``'s walk and write for :func:`initscale.reinit.run`: the module's parameters (and
    buffers) with their tensors; checked writable, drawn in place under ``no_grad``, small ones in
    bounded groups; embedding padding rows zeroed after."""

    model: torch.nn.Module
    recurse: bool
    include_buffers: bool
    generator: torch.Generator | None
    stream_seed: int | None
    stream_names: Mapping[str, str] | Callable[[str], str] | None
    entry: str = "reinit_"
    # weight norms' g that finish() sets to ‖v‖, found by notes() from the plan's report
    magnitudes: dict[str, str] = dataclasses.field(default_factory=dict)

    def walk(self) -> list[tuple[Param, torch.Tensor]]:
        computed = self.reparams
        found = _walk(self.model, self.recurse, self.include_buffers, computed)
        return _with_weight_fans(self.model, self.recurse, found, computed)

    @functools.cached_property
    def reparams(self) -> tuple[_reparam.Reparam, ...]:
        """The weights the model's layers compute from other tensors (:mod:`._torch_reparam`),
        found once per call: the walk, the notes, finish and the report read them."""
        if not isinstance(self.model, torch.nn.Module):
            return ()  # the walk raises, naming what it got
        return _reparam.find(list(self.model.named_modules()) if self.recurse else [("", self.model)])

    def notes(self, report: Report) -> tuple[str, ...]:
        computed = self.reparams
        self.magnitudes.clear()
        self.magnitudes.update(derived_to_set(report, _reparam.derived(computed)))
        return _reparam.notes(report, computed)

    def constant_value(self, handle: torch.Tensor) -> float | None:
        return _constant_value(handle)

    def check(self, targets: Sequence[Target[torch.Tensor]], dry_run: bool) -> None:
        _check_writable([(t.name, t.handle) for t in targets if not (dry_run and t.handle.is_meta)])
        if self.stream_seed is None:  # a stream draw takes nothing from the generator
            drawn = [
                (t.name, t.handle)
                for t in targets
                if not isinstance(t.decision.dist, ConstantDist) and not _is_dtensor(t.handle)
            ]
            if (problem := _generator_device_problem(self.generator, drawn)) is not None:
                raise ValueError(problem)
        sharded = [t.name for t in targets if t.decision.padding_idx is not None and _is_dtensor(t.handle)]
        if sharded:
            raise ValueError(
                f"Embedding {sharded[0]!r} is a DTensor with a padding_idx row, which initscale cannot "
                "keep at zero shard by shard yet; nothing was changed. Re-initialize it before sharding, "
                f"or give it the rule {{{sharded[0]!r}: initscale.Rule(spec, padding='draw')}} and zero "
                "the row yourself."
            )

    def writes(self, targets: Sequence[Target[torch.Tensor]]) -> list[Write]:
        return _write_jobs(targets, self.generator, self.stream_seed, self.stream_names)

    def writing(self) -> Any:
        return torch.no_grad()

    def finish(self, targets: Sequence[Target[torch.Tensor]]) -> None:
        with torch.no_grad():  # embedding padding rows stay zero, as their layer keeps them
            for target in targets:
                if target.decision.padding_idx is not None:
                    _local(target.handle)[target.decision.padding_idx].zero_()
        if computed := self.reparams:  # weight norm's g = ‖v‖ of the drawn v; spectral norm's estimate
            named = dict(self.model.named_parameters(remove_duplicate=False))
            _reparam.finish(computed, named, {t.name for t in targets}, self.magnitudes)


def _reinit(
    module: torch.nn.Module,
    rules: Spec | Mapping[str, Spec | None],
    *,
    generator: torch.Generator | None,
    dry_run: bool,
    include_frozen: bool,
    include_buffers: bool,
    defaults: bool,
    recurse: bool,
    stream_seed: int | None = None,
    stream_names: Mapping[str, str] | Callable[[str], str] | None = None,
    fans: str = "forward",
) -> Report:
    _check_generator_type(generator)
    backend = _Backend(module, recurse, include_buffers, generator, stream_seed, stream_names)
    report = reinit_run(
        backend, rules, include_frozen=include_frozen, defaults=defaults, dry_run=dry_run, fans=fans, stacklevel=3
    )  # _reinit <- reinit_ <- the caller
    return mark_derived(report, _reparam.derived(backend.reparams))  # weight norm's g: set from v


def _copy_all(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Write every staged value: one multi-tensor copy per (device, dtype), as torch.optim does
    with its ``_foreach`` kernels, where torch has them; else one copy each."""
    by_device_dtype: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for target, values in pairs:
        targets, sources = by_device_dtype.setdefault((target.device, target.dtype), ([], []))
        targets.append(target)
        sources.append(values)
    foreach_copy = getattr(torch, "_foreach_copy_", None)
    for targets, sources in by_device_dtype.values():
        if foreach_copy is not None and all(t.is_contiguous() for t in targets):
            foreach_copy(targets, sources)
        else:
            for target, values in zip(targets, sources, strict=True):
                target.copy_(values)


def reinit_(
    module: torch.nn.Module,
    rules: Spec | Mapping[str, Spec | None],
    generator: torch.Generator | None = None,
    *,
    dry_run: bool = False,
    include_frozen: bool = False,
    include_buffers: bool = False,
    defaults: bool = True,
    stream_seed: int | None = None,
    stream_names: Mapping[str, str] | Callable[[str], str] | None = None,
    fans: str = "forward",
) -> Report:
    """Re-initialize a whole model in place, each weight with the fans of its own layer.

    The contract's ``reinit`` (:mod:`initscale.adapters`), spelled with torch's in-place ``_``;
    its randomness source is ``generator`` (third, positional or keyword) and its extras are
    ``include_frozen`` and ``include_buffers``.

    Args:
        module: the model (positional: its name is not part of the contract). Tied parameters
            are initialized once, under their first name; every other name gets a row that says
            so (``tied_to``), and a rule on any of the names sets the shared tensor (two rules
            that disagree on it are an error).
        rules: one spec, applied to the weights of every Linear, Bilinear, ConvNd,
            ConvTransposeNd, RNN/LSTM/GRU (and cells), MultiheadAttention projection and
            transformers ``Conv1D``; or an ordered mapping from pattern to spec, to
            ``initscale.Rule(spec, layout=..., padding=...)`` or to None (leave as is), first
            match wins. A pattern is a layer class name (``"Conv2d"``, ``"LSTM"``; base classes
            count), which targets that layer's weights, or a glob on qualified parameter names
            (``"encoder.*.weight"``, ``"*.bias"``). A weight of 2+ axes in a layer initscale
            does not recognise has no layout: a fan-based spec on it raises (naming it, its
            layer and the fix, ``initscale.Rule(spec, layout=...)``); one spec for all weights
            leaves it and warns.
        generator: draw every value from this ``torch.Generator`` (the global RNG is then never
            touched); None uses the global RNG, like ``torch.nn.init``.
        dry_run: change nothing and return the report of what would be done.
        include_frozen: also re-initialize parameters with ``requires_grad=False``.
        include_buffers: also offer buffers (``running_mean``, ...) to name patterns.
        defaults: after the rules, biases -> zeros and norm weight -> ones, bias -> zeros
            (torch's norms, any class named ``...Norm`` such as HF's ``LlamaRMSNorm`` and
            ``T5LayerNorm``, or a module with ``normalized_shape``/``variance_epsilon`` and 1-D
            parameters; a scale its ``forward`` uses as ``1 + self.weight``, as Gemma's, ->
            zeros). Embeddings and anything else unmatched are kept. A bias follows its weight
            instead when the weight gets torch's layer default (``torch.linear_default``/
            ``conv_default``; ``torch.bilinear_default`` on a Bilinear): U(±1/√fan_in of the
            weight), as ``reset_parameters`` (one spec, or ``{"Linear": spec}``). An embedding that a rule
            sets keeps its ``padding_idx`` row at zero unless the rule is
            ``initscale.Rule(spec, padding="draw")``.
        stream_seed: draw every value from the portable stream ``Stream(stream_seed, name)`` of
            each parameter (:mod:`initscale.streams`) instead of ``generator``: the same weights
            as ``initscale.jax.reinit(..., stream_seed=...)`` and the NumPy reference, for the
            same names, on any device and under any sharding.
        stream_names: a mapping or function from this model's parameter names to the stream
            names (e.g. ``"fc.weight" -> "fc/kernel"`` to match a Flax model).
        fans: ``"forward"`` (the default): initscale's forward-pass fans of each layer, as below.
            ``"native"``: torch's own ``nn.init._calculate_fan_in_and_fan_out`` on each weight's
            shape (fan_in = ``weight.size(1)`` × kernel, fan_out = ``weight.size(0)`` × kernel,
            whatever the groups or transposition), what ``torch.*`` presets need to reproduce
            torch and torchvision exactly: a depthwise ``Conv2d(C, C, 3, groups=C)`` then has
            fan_out C·9 instead of 9, a ``ConvTranspose2d(16, 32, 3)`` fan_in 288 instead of 144.
            Each report row's ``fans`` (and the ``:native=true`` layout) says which was used.

    Returns:
        A :class:`~initscale.reinit.Report`: one row per parameter with its layer, layout, fans,
        spec and std, and whether it was set or why it was kept. ``print(report)`` shows a table.

    A bias whose spec needs fans (``{"*.bias": presets.get("torch.linear_default_bias")}``)
    takes the fans of its module's weight (``bias`` -> ``weight``, ``bias_ih_l0`` ->
    ``weight_ih_l0``, ``in_proj_bias`` -> ``in_proj_weight``).

    The layout of each weight comes from its owning module: per-group fans for grouped and
    depthwise convolutions, forward fans for ConvTranspose (fan_in = in_channels/groups × kernel),
    per-gate fans for RNN ``weight_ih_l*``/``weight_hh_l*``, per-projection fans for
    MultiheadAttention's packed ``in_proj_weight``, (in, out) for transformers' ``Conv1D`` and per
    projection when its parent attention's ``split_size`` divides its outputs (GPT-2's ``c_attn``:
    Q, K, V). Under weight norm (``torch.nn.utils.parametrizations.weight_norm`` or the legacy
    ``weight_norm``) the layer's v is drawn as its weight and g is then set to ‖v‖, so the weight
    the layer computes, g · v / ‖v‖, is v as drawn; spectral norm and other parametrizations are
    warned about (docs/conventions.md §3). Layers are recognised from their classes and
    attributes without importing transformers. A DTensor parameter (FSDP2) gets the fans of
    its global shape and each rank fills its local shard.

    Atomic by checking first: every rule, layout and target is checked before the first write, so
    a predictable failure changes nothing. The checks on each target (one error naming
    every parameter that fails them, and what to do): a floating-point dtype, the strided layout,
    not a meta tensor, not an inference tensor or a view of one (outside
    ``torch.inference_mode()``), no two elements sharing memory (``expand()``). A dry run makes
    the same checks, except that meta tensors pass. Memory that is read-only outside torch
    (``torch.from_numpy`` of a read-only array) cannot be detected. Values are then drawn in
    place, with no second copy: small tensors through flat buffers of at most 16 MiB (straight
    into their own memory where the compiled CPU sampler applies), large ones straight into their
    memory 16 MiB at a time (at most ~48 MiB extra); ``torch.*`` presets each with torch's own
    call on the whole tensor, in the model's order (a loop of ``torch.nn.init`` calls: in place,
    except ``torch.trunc_normal``, which takes ``trunc_normal_``'s own temporaries, up to two
    copies of the tensor). Stream draws (``stream_seed``) write each piece
    where its elements sit, whatever the dtype or layout: the compiled CPU kernel through a float32
    box of at most 4 MiB for a bfloat16/float16 or non-dense weight (none for a dense float32 or
    float64 one), torch's ops in pieces of 2¹⁸ elements (``benchmarks/stream_memory.py``, a 423 MiB
    bfloat16 model: peak extra RSS 25 MiB with the kernel and 39 MiB with the ops, against 786 and
    445 MiB before). An orthogonal spec needs the QR of its
    whole weight: on the CPU one float32 copy of the weight (float64 for a float64 weight; so 1x
    an fp32 weight, 2x a bf16 one), into which the gaussian is drawn 1 MiB at a time and which
    LAPACK factors in place, plus LAPACK's workspace (a few MiB: 4 MiB at 2048 x 2048 fp32), and
    one more copy where its blocks interleave in the weight (stacked gates, as ``torch.lstm``'s:
    a reshape that is not a view). Measured (benchmarks/README.md): 20 MiB for a 16 MiB fp32 or
    an 8 MiB bf16 weight, where ``nn.init.orthogonal_`` takes 52 MiB (fp32; bf16 it refuses on
    the CPU: no geqrf kernel). On a GPU: two at the peak (the draw and its column-major copy, which
    geqrf and orgqr then factor in place), one for a wide block of ``torch.orthogonal``.
    A failure midway (a device error) raises :class:`PartialWriteError` naming what was written,
    what may be partly written and what is unchanged. A model whose tensors of one distribution
    total over 16 MiB gets other values for a seed than before this write path (the draw order
    changed); smaller ones get the same.

    Example:
        >>> import torch, initscale
        >>> from initscale.adapters.torch import reinit_
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, groups=4), torch.nn.ReLU(),
        ...                             torch.nn.Flatten(), torch.nn.LazyLinear(10))
        >>> _ = model(torch.zeros(1, 16, 8, 8))           # materialize the lazy layer
        >>> report = reinit_(model, {"Conv2d": initscale.presets.get("he_normal"),
        ...                          "Linear": initscale.presets.get("glorot_uniform")},
        ...                  generator=torch.Generator().manual_seed(0))
        >>> [(r.name, r.fan_in, r.fan_out) for r in report.touched][:1]   # per group: 16/4·9, 32/4·9
        [('0.weight', 36, 72)]
    """
    from initscale.autogain import Auto

    if isinstance(rules, Auto):  # initscale.auto(...): planned on the model's graph, then measured
        from ._torch_auto import apply_

        options: dict[str, Any] = {
            "include_frozen": include_frozen,
            "include_buffers": include_buffers,
            "defaults": defaults,
            "stream_seed": stream_seed,
            "stream_names": stream_names,
            "fans": fans,
        }
        if dry_run:
            return _reinit(
                module, rules.plan(module).rules(), generator=generator, dry_run=True, recurse=True, **options
            )
        init: Report | None = apply_(module, rules, generator=generator, **options).init
        assert init is not None
        return init
    return _reinit(
        module,
        rules,
        generator=generator,
        dry_run=dry_run,
        include_frozen=include_frozen,
        include_buffers=include_buffers,
        defaults=defaults,
        recurse=True,
        stream_seed=stream_seed,
        stream_names=stream_names,
        fans=fans,
    )


def apply_fn(
    spec: Spec, *, generator: torch.Generator | None = None, include_frozen: bool = False
) -> Callable[[torch.nn.Module], None]:
    """A function for ``model.apply(...)``: re-initializes each module's own parameters.

    Same semantics as :func:`reinit_` with a single spec (weights of supported layers get
    ``spec`` with their layer's fans, biases zeros, norms ones/zeros), one module at a time.

    Example:
        >>> import torch, initscale
        >>> from initscale.adapters.torch import apply_fn
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LSTM(4, 6))
        >>> _ = model.apply(apply_fn(initscale.presets.get("glorot_uniform"),
        ...                          generator=torch.Generator().manual_seed(0)))
        >>> float(model[0].bias.detach().abs().sum())
        0.0
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"Argument `spec` must be an initscale spec. Received: spec={spec!r}.")

    def apply(module: torch.nn.Module) -> None:
        _reinit(
            module,
            spec,
            generator=generator,
            dry_run=False,
            include_frozen=include_frozen,
            include_buffers=False,
            defaults=True,
            recurse=False,
        )

    return apply


from ._torch_check import check  # noqa: E402  (the model check: initscale.check, walked here)
from ._torch_lsuv import lsuv_  # noqa: E402  (LSUV: reinit_, then each layer to unit output variance)
from ._torch_materialize import materialize_  # noqa: E402  (meta device -> ready model, built on reinit_)
