"""What a Keras variable is to its layer, and the layout of its forward fans (Keras 3 and Keras 2).

Shared by the Keras 3 adapter and the legacy ``tf_keras`` adapter, which see the same layer
names with different class hierarchies: Keras 3 has ``BaseConv``, ``BaseConvTranspose``,
``BaseDepthwiseConv`` and ``BaseSeparableConv``; Keras 2 has ``Conv`` with ``Conv2DTranspose``
a subclass of ``Conv2D``, ``DepthwiseConv`` and ``SeparableConv``, and names a depthwise
layer's kernel ``depthwise_kernel``. Framework-free (plain tables and functions of class names
and a few attributes), on the adapter side: only the Keras adapters read these tables. A variable
of a layer it does not recognise gets no layout, never a guessed one.

Example:
    >>> keras_role({"Conv2D", "BaseConv"}, "kernel", 4, groups=4)
    ('weight', 'keras.conv:groups=4', '')
    >>> keras_role({"Conv2DTranspose", "Conv2D", "Conv"}, "kernel", 4)
    ('weight', 'keras.conv_transpose', '')
    >>> layout = keras_role({"EinsumDense"}, "kernel", 3, equation="abc,cde->abde")[1]
    >>> layout.in_axes, layout.out_axes
    ((0,), (1, 2))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence, Set
from typing import Any

from initscale.fans import Layout, LayoutLike, experts_layout, stride_product
from initscale.fans import einsum_layout as _einsum_layout
from initscale.reinit import UNIT_OFFSET, Role

__all__ = [
    "EXPERT_LAYERS",
    "NORM_CLASSES",
    "NORM_NAME",
    "NORM_OFFSET_LEAVES",
    "NORM_SCALE_LEAVES",
    "STACKED_DENSES",
    "STACKED_EINSUMS",
    "UNIT_OFFSET",
    "einsum_layout",
    "expert_role",
    "keras_role",
    "stacked_dense",
    "stacked_einsum",
]

NORM_CLASSES = frozenset(
    {"BatchNormalization", "LayerNormalization", "GroupNormalization", "RMSNormalization", "SyncBatchNormalization"}
)
# Normalization layers by class (Keras's own, NORM_CLASSES), by a class name ending in Norm or
# Normalization (keras-hub's LlamaLayerNorm, T5LayerNorm, Gemma's RMSNormalization, ...), or by
# duck typing (the walk's): an ``epsilon`` attribute and variables of one non-singleton axis at most.
NORM_NAME = re.compile(r"(Norm|Normalization)\d*\Z")
NORM_SCALE_LEAVES = ("gamma", "scale", "weight")
NORM_OFFSET_LEAVES = ("beta", "bias", "offset", "shift")
_CELL_KINDS = {"LSTMCell": "keras.lstm", "GRUCell": "keras.gru", "SimpleRNNCell": "keras.simple_rnn"}


# keras-hub's mixture-of-experts layers (keras_hub 0.32, src/models/<family>/): each expert
# projection is one (num_experts, in, out) variable used per expert as x @ W[e] (an einsum such
# as "th,ehm->etm"), its expert axis a batch axis. Qwen-MoE's gate and up share one variable,
# split into halves on the last axis ([gate | up]); GPT-OSS's interleave there (gate = W[..., ::2],
# up = W[..., 1::2]), with per-expert biases. By the owning class: leaf -> (blocks, interleaved).
EXPERT_LAYERS: dict[str, dict[str, tuple[int, bool]]] = {
    "MixtralMoeExperts": {  # mixtral/mixtral_decoder.py
        "expert_feedforward_gate_dense": (1, False),
        "expert_feedforward_intermediate_dense": (1, False),
        "expert_feedforward_output_dense": (1, False),
    },
    "QwenMoeExperts": {"expert_feedforward_gate_dense": (2, False), "expert_feedforward_output_dense": (1, False)},
    "Qwen3MoeExperts": {"expert_feedforward_gate_dense": (2, False), "expert_feedforward_output_dense": (1, False)},
    "Qwen3_5MoeExperts": {"expert_feedforward_gate_dense": (2, False), "expert_feedforward_output_dense": (1, False)},
    "GptOssExperts": {"gate_up_proj": (2, True), "down_proj": (1, False)},  # gpt_oss/gpt_oss_decoder.py
    "Gemma4MoEBlock": {"gate_proj": (1, False), "up_proj": (1, False), "down_proj": (1, False)},  # gemma4/gemma4_moe.py
}


def expert_role(
    class_names: Set[str], leaf: str, shape: tuple[int, ...], experts: object
) -> tuple[Role, LayoutLike | None, str] | None:
    """The role and layout of a keras-hub expert bank's variable (:data:`EXPERT_LAYERS`), or of
    its per-expert bias (GPT-OSS's ``gate_up_proj_bias``), when its leading axis holds the layer's
    ``num_experts``; None for anything else.

    Example:
        >>> role, layout, _ = expert_role({"QwenMoeExperts"}, "expert_feedforward_gate_dense", (4, 16, 48), 4)
        >>> role, layout.fans((4, 16, 48))
        ('weight', Fans(fan_in=16, fan_out=24, receptive_field=1))
    """
    table = next((EXPERT_LAYERS[c] for c in class_names if c in EXPERT_LAYERS), None)
    if table is None or not isinstance(experts, int) or not shape or shape[0] != experts:
        return None
    stem = leaf.removesuffix("_bias")
    if stem not in table:
        return None
    if leaf != stem:
        return ("bias", None, "") if len(shape) == 2 else None
    blocks, interleaved = table[stem]
    return ("weight", experts_layout("keras_hub.experts", 1, 2, blocks, interleaved), "") if len(shape) == 3 else None


# EinsumDense kernels whose output stacks projections that the enclosing layer's call splits, by
# (enclosing layer class, kernel layer name): how many. keras-hub 0.32's Qwen 3.5 attention
# (src/models/qwen3_5/qwen3_5_attention.py, Qwen3_5Attention.build and call) makes its `query`
# "bqm,muh->bquh" with head_dim * 2 per head and splits each head into the query and the gate of
# its output (``qg[..., :head_dim]``, ``qg[..., head_dim:]``).
STACKED_EINSUMS = {("Qwen3_5Attention", "query"): 2}


# Dense kernels (in, out) whose output the enclosing layer splits into equal projections, by
# (enclosing layer class, the attribute that holds the Dense): how many, or a function of the
# enclosing layer giving it (keras-hub 0.32): ViTDet's and SAM's MultiHeadAttentionWithRelativePE
# `qkv` (src/models/vit_det/vit_layers.py: reshaped to (.., 3, heads, key_dim) and unstacked);
# DINOv2's SwiGLU `weights_in` (dinov2_layers.py, DINOV2SwiGLUFFN: ops.split(x, 2)); Moonshine's
# MLP `dense_1` under SwiGLU (moonshine_layers.py, MoonshineMLP: ops.split(x, 2)); SD3's
# AdaptiveLayerNormalization `dense` (stable_diffusion_3/mmdit.py: ops.split(emb, num_modulations)).
STACKED_DENSES: dict[tuple[str, str], int | Callable[[Any], int]] = {
    ("MultiHeadAttentionWithRelativePE", "qkv"): 3,
    ("DINOV2SwiGLUFFN", "weights_in"): 2,
    ("MoonshineMLP", "dense_1"): lambda mlp: 2 if getattr(mlp, "use_swiglu_activation", False) else 1,
    ("AdaptiveLayerNormalization", "dense"): lambda norm: int(getattr(norm, "num_modulations", 1)),
}


def stacked_dense(parent: Any, layer: Any) -> Layout | None:
    """The layout of a Dense ``layer``'s kernel with one block per projection where its enclosing
    layer ``parent`` splits its output (:data:`STACKED_DENSES`), else None."""
    if parent is None:
        return None
    # the torch backend's layers are torch modules: their sublayers live in _modules, not __dict__
    held = {**vars(parent), **(getattr(parent, "_modules", None) or {})}
    attribute = next((a for a, value in held.items() if value is layer), None)
    blocks = STACKED_DENSES.get((type(parent).__name__, attribute or ""))
    count = blocks(parent) if callable(blocks) else blocks
    if not isinstance(count, int) or count < 2:
        return None
    return Layout(0, 1, out_groups=count, name=f"keras.dense:blocks={count}")


def stacked_einsum(layout: Layout, ancestors: Sequence[str], name: str) -> Layout:
    """``layout`` with one block per projection where an enclosing layer splits the kernel's
    output (:data:`STACKED_EINSUMS`), else as it is."""
    blocks = next((k for (cls, layer), k in STACKED_EINSUMS.items() if layer == name and cls in ancestors), 1)
    if blocks == 1:
        return layout
    return Layout(
        layout.in_axes, layout.out_axes, layout.batch_axes, out_groups=blocks, name=f"{layout.name}:blocks={blocks}"
    )


def einsum_layout(equation: str | None) -> Layout | None:
    """In, out and batch axes of an EinsumDense kernel from its equation (``"abc,cde->abde"``):
    :func:`initscale.fans.einsum_layout`, named ``keras.einsum_dense[<equation>]``."""
    return _einsum_layout(equation, name=f"keras.einsum_dense[{equation}]")


def keras_role(
    class_names: Set[str],
    leaf: str,
    ndim: int,
    *,
    groups: int = 1,
    unit_forget_bias: bool = False,
    equation: str | None = None,
    strides: Any = None,
) -> tuple[Role, LayoutLike | None, str]:
    """``(role, layout, note)`` of a variable named ``leaf`` of a layer whose class and base-class
    names are ``class_names``; ``note`` says why the defaults keep it, when they do. A variable it does
    not recognise is ``("other", None, "")``: no layout, so a fan-based rule that reaches it raises
    naming it (:func:`initscale.reinit.plan`) instead of reading a guessed one. ``strides``: the
    layer's ``strides``, read for a transposed conv (:func:`initscale.fans.stride_product`)."""
    if class_names & NORM_CLASSES:
        if leaf == "beta":
            return "norm_offset", None, ""
        if leaf in ("gamma", "scale"):
            return "norm_scale", None, ""
        return "other", None, ""
    if leaf == "bias":
        if "LSTMCell" in class_names and unit_forget_bias:  # a bias (class rules skip it) that the defaults keep
            return "bias", None, "Keras starts this LSTM's forget-gate bias at 1 (unit_forget_bias=True)"
        return "bias", None, ""
    cell = next((_CELL_KINDS[k] for k in _CELL_KINDS if k in class_names), None)
    if cell and leaf in ("kernel", "recurrent_kernel"):
        return "weight", cell, ""
    separable = class_names & {"BaseSeparableConv", "SeparableConv"}
    if separable and leaf == "depthwise_kernel":
        return "weight", "keras.separable_conv.depthwise", ""
    if separable and leaf == "pointwise_kernel":
        return "weight", "keras.separable_conv.pointwise", ""
    if class_names & {"BaseDepthwiseConv", "DepthwiseConv"} and leaf in ("kernel", "depthwise_kernel"):
        return "weight", "keras.depthwise_conv", ""
    transposed = "BaseConvTranspose" in class_names or any(k.endswith("Transpose") for k in class_names)
    if transposed and leaf == "kernel":
        stride = stride_product(strides, ndim - 2)
        return "weight", "keras.conv_transpose" + (f":stride={stride}" if stride > 1 else ""), ""
    if class_names & {"BaseConv", "Conv"} and leaf == "kernel":
        return "weight", f"keras.conv:groups={groups}", ""
    if "Dense" in class_names and leaf == "kernel":
        return "weight", "keras.dense", ""
    if "EinsumDense" in class_names and leaf == "kernel":
        layout = einsum_layout(equation)
        if layout is not None:
            return "weight", layout, ""
    if "Embedding" in class_names and leaf == "embeddings":
        return "embedding", "keras.embedding", ""
    if "ReversibleEmbedding" in class_names and leaf == "reverse_embeddings" and ndim == 2:
        return "weight", "keras.dense", ""  # an untied output projection: logits = x @ W, W (d, vocab)
    return "other", None, ""
