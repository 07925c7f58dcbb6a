"""PyTorch adapter: initscale specs as ``torch.nn.init``-style in-place functions.

``initializer(spec, layout="torch")`` returns ``fn(tensor, *, generator=None) -> tensor`` that
fills ``tensor`` in place under ``torch.no_grad()`` and returns it, like ``torch.nn.init``.
Named conveniences follow torch's style: ``init_(tensor, spec)``, ``variance_scaling_``,
``glorot_uniform_``, ``glorot_normal_``, ``he_uniform_``, ``he_normal_``, ``lecun_uniform_``,
``lecun_normal_``, ``orthogonal_``.

Sampling: normals and uniforms use torch's own kernels (in float32 for float16/bfloat16, then
cast). Truncated normals are drawn by inverse CDF in float64 — u ~ U(Φ(α), Φ(β)),
z = √2·erfinv(2u − 1) — so the bounds are exactly ±truncation·σ and the variance is the
corrected one; torch's own ``trunc_normal_`` has no corrected variant. With a
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

import math
from collections.abc import Callable

import torch

from initscale import presets
from initscale.distributions import (
    ConstantDist,
    Distribution,
    NormalDist,
    OrthogonalDist,
    TruncatedNormalDist,
    UniformDist,
)
from initscale.fans import Layout, LayoutLike
from initscale.normal_math import normal_cdf
from initscale.plan import planner
from initscale.specs import Orthogonal, Spec, VarianceScaling

__all__ = [
    "glorot_normal_",
    "glorot_uniform_",
    "he_normal_",
    "he_uniform_",
    "init_",
    "initializer",
    "lecun_normal_",
    "lecun_uniform_",
    "orthogonal_",
    "variance_scaling_",
]

TorchInitializer = Callable[..., torch.Tensor]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


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


def _truncated(dist: TruncatedNormalDist, out: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    a, b = dist.standard_bounds
    flip = a > 0.0  # an upper-tail interval is drawn as the mirror of the lower one
    if flip:
        a, b = -b, -a
    u = torch.empty(out.shape, dtype=torch.float64, device=out.device)
    u.uniform_(normal_cdf(a), normal_cdf(b), generator=generator)
    z = u.mul_(2.0).sub_(1.0).erfinv_().mul_(math.sqrt(2.0)).clamp_(a, b)
    if flip:
        z.neg_()
    return z.mul_(dist.sigma).add_(dist.loc)


def _orthogonal(dist: OrthogonalDist, layout: Layout, out: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
    shape = tuple(out.shape)
    order, (nb, og, o, ig, i, rf) = layout.blocks(shape)
    rows, cols = o, i * rf
    big, small = max(rows, cols), min(rows, cols)
    dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
    g = torch.empty((nb * og * ig, big, small), dtype=dtype, device=out.device).normal_(generator=generator)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar: fix the signs
    if rows < cols:
        q = q.transpose(-1, -2)
    blocks = (dist.gain * q).reshape(nb, og, ig, o, i, rf).permute(0, 1, 3, 2, 4, 5)
    permuted = blocks.reshape(tuple(shape[a] for a in order))
    inverse = sorted(range(len(order)), key=order.__getitem__)
    result: torch.Tensor = permuted.permute(*inverse)
    return result


def _fill(dist: Distribution, layout: Layout | None, tensor: torch.Tensor,
          generator: torch.Generator | None) -> None:
    if isinstance(dist, ConstantDist):
        tensor.fill_(dist.value)
        return
    if isinstance(dist, TruncatedNormalDist):
        tensor.copy_(_truncated(dist, tensor, generator))
        return
    if isinstance(dist, OrthogonalDist):
        if layout is None:
            raise ValueError("An orthogonal init needs the weight's layout.")
        tensor.copy_(_orthogonal(dist, layout, tensor, generator))
        return
    target = tensor.float() if tensor.dtype in _LOW_PRECISION else tensor
    if isinstance(dist, NormalDist):
        target.normal_(dist.mean, dist.std, generator=generator)
    elif isinstance(dist, UniformDist):
        target.uniform_(dist.low, dist.high, generator=generator)
    else:  # pragma: no cover - every Distribution is handled above
        raise TypeError(f"Unknown distribution {dist!r}.")
    if target is not tensor:
        tensor.copy_(target)


def initializer(spec: Spec, layout: LayoutLike = "torch") -> TorchInitializer:
    """Compile ``spec`` into ``fn(tensor, *, generator=None) -> tensor`` (fills in place).

    The distribution for each weight shape is resolved once and cached.
    """
    plan, rule = planner(spec, layout)

    def init(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_tensor(tensor)
        if tensor.numel() == 0:
            return tensor
        dist, concrete = plan(tuple(tensor.shape))
        with torch.no_grad():
            _fill(dist, concrete, tensor, generator)
        return tensor

    init.__doc__ = f"Fill a tensor in place with {spec!r} (layout {rule})."
    return init


def init_(tensor: torch.Tensor, spec: Spec, layout: LayoutLike = "torch", *,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``tensor`` in place with ``spec`` and return it."""
    return initializer(spec, layout)(tensor, generator=generator)


def variance_scaling_(tensor: torch.Tensor, scale: float = 1.0, mode: str = "fan_in",
                      distribution: str = "truncated_normal", *, layout: LayoutLike = "torch",
                      generator: torch.Generator | None = None) -> torch.Tensor:
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

    def fill(tensor: torch.Tensor, *, layout: LayoutLike = "torch",
             generator: torch.Generator | None = None) -> torch.Tensor:
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


def orthogonal_(tensor: torch.Tensor, gain: float = 1.0, *, layout: LayoutLike = "torch",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``tensor`` with ``gain`` × a Haar-random orthogonal matrix per weight block."""
    return init_(tensor, Orthogonal(gain), layout, generator=generator)
