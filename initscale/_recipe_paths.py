"""Recipes on Keras models and JAX pytrees: each tensor's role from its path and its layer's class.

A torch model's roles come from its module tree (:mod:`initscale.recipes`); a Keras model's
variables and a JAX pytree's leaves have ``/``-joined paths instead (``transformer_layer_0/
self_attention/query/kernel``, ``params/h_1/mlp/c_proj/kernel``, ``h/1/mlp/c_proj/kernel``), and
the adapter's walk (``initscale.keras.reinit``'s, ``initscale.jax.reinit``'s, with ``module=``
and ``example_inputs=`` as that takes them) gives each its base role (weight, bias, norm_scale,
embedding, ...) and the classes of the layers around it. This reader turns those into recipe
roles:

- **the blocks**: the repeated layers are the indexed path component (``transformer_layer_3``,
  ``h_3``, ``layers/3``, a linen ``Block_3``) that holds the attention layers (a component named
  ``*attn*``/``*attention*``, keras-hub's ``self_attention``, Keras's and Flax's
  MultiHeadAttention); the index is the layer, their count the depth L (keras-hub backbones:
  their ``num_layers``);
- **inside a block**, the name of the layer that owns the tensor, read as attention (under an
  attention layer) or MLP (anywhere else in the block): ``query``/``q_proj``/``wq`` -> attn_q,
  ``attention_output``/``o_proj``/``out``/``c_proj``/``wo`` -> attn_out, ``c_attn``/``qkv`` ->
  attn_qkv; ``c_fc``/``fc1``/``up_proj``/``w3``/``feedforward_intermediate_dense`` -> mlp_in,
  ``gate_proj``/``w1``/``feedforward_gate_dense`` -> mlp_gate, ``c_proj``/``fc2``/``down_proj``/
  ``w2``/``feedforward_output_dense`` -> mlp_out (the tables below). A weight in a block under
  any other name is an error naming it: a recipe never guesses a projection;
- **outside the blocks**: token embeddings (``wte``, ``token_embedding``, ``embed_tokens``,
  ...), position embeddings (``wpe``, ``position_embedding``, ...), keras-hub's segment
  embedding (token_type_embedding), an output head (``lm_head``, ``output``, keras-hub's
  ``reverse_embeddings`` of an untied ReversibleEmbedding), a pooler; other Dense weights
  ``linear`` and embeddings ``embedding``, as HF's ``_init_weights`` treats them;
- norms and biases by the walk's base role.

For the GPT-2 recipes (``hf.gpt2``, ``nanogpt``) the attention and MLP output projections are
``residual_out`` (HF's and nanoGPT's ``c_proj``); q, k and v in three kernels stand in for GPT-2's
packed ``attn_qkv``. A tied tensor is one variable (Keras's ReversibleEmbedding with
``tie_weights``, Flax's ``Embed.attend``): it is listed once, under the token embedding's role.
The settings (depth, width) come from keras-hub's ``num_layers``/``hidden_dim`` or, failing
those, from the count of blocks and the token embedding's width; ``recipes.get(name, n_layers=...,
dim=...)`` overrides them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from .recipes import Reader, _Part

_ATTN = re.compile(r"attn|attention", re.IGNORECASE)
_INDEXED = re.compile(r"(.*?)_?(\d+)")

#: an attention layer's projections, by the name of the layer that holds the kernel
_ATTN_NAMES = {
    **dict.fromkeys(("query", "q_proj", "wq", "q", "to_q", "q_lin"), "attn_q"),
    **dict.fromkeys(("key", "k_proj", "wk", "k", "to_k", "k_lin"), "attn_k"),
    **dict.fromkeys(("value", "v_proj", "wv", "v", "to_v", "v_lin"), "attn_v"),
    **dict.fromkeys(("c_attn", "qkv", "qkv_proj", "in_proj", "att_proj", "query_key_value", "Wqkv"), "attn_qkv"),
    **dict.fromkeys(
        (
            "attention_output",
            "o_proj",
            "out_proj",
            "out",
            "o",
            "wo",
            "c_proj",
            "proj",
            "dense",
            "to_out",
            "out_lin",
            "attn_out",
        ),
        "attn_out",
    ),
}
#: a block's MLP, by the name of the layer that holds the kernel
_MLP_NAMES = {
    **dict.fromkeys(
        (
            "c_fc",
            "fc1",
            "fc_in",
            "up_proj",
            "w3",
            "up",
            "feedforward_intermediate_dense",
            "wi",
            "wi_1",
            "ff_proj",
            "dense_h_to_4h",
            "mlp_in",
            "intermediate_dense",
        ),
        "mlp_in",
    ),
    **dict.fromkeys(("gate_proj", "w1", "gate", "feedforward_gate_dense", "wi_0", "mlp_gate"), "mlp_gate"),
    **dict.fromkeys(
        (
            "c_proj",
            "fc2",
            "fc_out",
            "down_proj",
            "w2",
            "down",
            "feedforward_output_dense",
            "wo",
            "ff_out",
            "dense_4h_to_h",
            "mlp_out",
            "output_dense",
        ),
        "mlp_out",
    ),
    # an attention layer's projections named directly in the block (no attention sublayer)
    **{
        k: v
        for k, v in _ATTN_NAMES.items()
        if k in ("q_proj", "k_proj", "v_proj", "o_proj", "wq", "wk", "wv", "c_attn", "qkv", "att_proj", "attn_out")
    },
}
_TOKEN = frozenset(
    {
        "wte",
        "token_embedding",
        "token_embeddings",
        "tok_embeddings",
        "embed_tokens",
        "word_embeddings",
        "embed",
        "tok",
        "tokens",
        "embedding",
        "embeddings",
        "token_emb",
        "tok_emb",
    }
)
_POSITION = frozenset(
    {
        "wpe",
        "position_embedding",
        "position_embeddings",
        "pos_embed",
        "pos_embedding",
        "pos",
        "pos_emb",
        "positional_embedding",
    }
)
_TOKEN_TYPE = frozenset({"segment_embedding", "token_type_embedding", "token_type_embeddings"})
_HEAD = frozenset({"lm_head", "output", "head", "logits", "out_head", "output_projection"})
_POOLER = frozenset({"pooled_dense", "pooler"})
_GPT2_LIKE = ("hf.gpt2", "nanogpt")  # their torch readers call both output projections residual_out (c_proj)


def _walked(model: Any, params: Sequence[Any] | None) -> list[Any]:
    """The adapter's :class:`~initscale.reinit.Param` list of ``model``: ``params`` if the entry
    gave it, else the Keras or JAX walk (the one ``reinit`` makes)."""
    if params is not None:
        return list(params)
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.layers.Layer):
        from .adapters import keras as isk

        return [p for p, _ in isk._walk(model, True)]  # buffers too: a glob must not reach one by accident
    linen = sys.modules.get("flax.linen")
    if linen is not None and isinstance(model, linen.Module):
        raise TypeError(
            f"A flax.linen module ({type(model).__name__}) holds no variables: a recipe reads the variables it made, "
            "with the module. Pass both to initscale.jax.reinit(variables, recipe, key, module=model, "
            "example_inputs=...), or resolve it with recipe.rules_for(model, params=<that walk's Param list>)."
        )
    if "jax" in sys.modules or "flax" in sys.modules:
        from .adapters import jax as isj

        try:
            _, _, leaves, found = isj._walk(model, None, None, None)
        except (TypeError, ValueError, IndexError):  # not a pytree the walk reads (a bare leaf, ...)
            leaves, found = [], []
        if leaves and all(hasattr(leaf, "shape") and hasattr(leaf, "dtype") for _, leaf in leaves):
            return found  # a pytree of arrays
    raise TypeError(
        "A recipe reads roles from a torch module tree (torch.nn.Module), a built Keras model or a JAX pytree "
        f"(with the flax module that made it); received {type(model).__module__}.{type(model).__name__}. Pass rules "
        "(a mapping pattern -> spec) instead."
    )


def _blocks(split: Sequence[tuple[str, ...]]) -> tuple[int, str] | None:
    """The (depth, stem) of the indexed path component holding the attention layers: the
    shallowest indexed component above an attention component, the most common one."""
    votes: dict[tuple[int, str], int] = {}
    for segs in split:
        attn = next((i for i, seg in enumerate(segs[:-1]) if _ATTN.search(seg)), None)
        if attn is None:
            continue
        for j in range(attn):
            key = _indexed(segs, j)
            if key is not None:
                votes[(j, key[0])] = votes.get((j, key[0]), 0) + 1
                break
    return max(votes, key=lambda k: (votes[k], -k[0])) if votes else None


def _indexed(segs: Sequence[str], j: int) -> tuple[str, int] | None:
    """(stem, index) of path component ``j`` if it is indexed (``h_3``, or ``3`` under ``h``)."""
    m = _INDEXED.fullmatch(segs[j])
    if m is None:
        return None
    stem = m.group(1) or (f"{segs[j - 1]}/" if j > 0 else "/")
    return stem, int(m.group(2))


def _role(part: _Part) -> str | None:
    """The recipe role of one tensor of a Keras model or JAX pytree (the module docstring)."""
    base, attr, leaf = part.base, part.attr, part.leaf
    if base in ("norm_scale", "norm_offset"):
        return base
    if part.scope == "":  # outside the blocks
        if attr in _TOKEN and leaf == "reverse_embeddings":
            return "lm_head"  # keras-hub ReversibleEmbedding, untied: logits = x @ reverse_embeddings
        if base in ("embedding", "other") and len(part.shape) == 2:
            for names, known in (
                (_POSITION, "position_embedding"),
                (_TOKEN_TYPE, "token_type_embedding"),
                (_TOKEN, "token_embedding"),
            ):
                if attr in names or leaf in names:
                    return known
        weight = "lm_head" if attr in _HEAD else "pooler" if attr in _POOLER else "linear"
        if base == "weight":
            return weight
        if base == "bias":
            return f"{weight}.bias" if weight != "linear" else "bias"
        return "embedding" if base == "embedding" else None
    table = _ATTN_NAMES if part.scope == "attn" else _MLP_NAMES
    role = table.get(attr)
    if role is None:
        return None  # a layer in a block under a name no table knows: an error naming it
    if base == "weight":
        return role
    return f"{role}.bias" if base == "bias" else None


def _reader(name: str) -> Reader:
    def read(model: Any, part: _Part, settings: dict[str, Any]) -> str | None:
        role = _role(part)
        if name in _GPT2_LIKE and role is not None:
            head, dot, tail = role.partition(".")
            if head in ("attn_out", "mlp_out"):
                role = f"residual_out{dot}{tail}"
        return role

    return read


def path_model(name: str, model: Any, params: Sequence[Any] | None) -> tuple[list[_Part], list[str], Any, Reader]:
    """The parts of a Keras model or JAX pytree (each non-buffer tensor, with its layer index
    and scope), every name a rule could match, the view of the model that recipe ``name``'s
    settings read (``.config`` with its depth and width) and the role reader."""
    walked = _walked(model, params)
    every = [p.name for p in walked]
    tensors = [p for p in walked if not p.buffer]
    split = [tuple(p.name.split("/")) for p in tensors]
    block = _blocks(split)
    parts, layers = [], set()
    for param, segs in zip(tensors, split, strict=True):
        layer, scope = None, ""
        if block is not None and len(segs) > block[0] + 1:
            key = _indexed(segs, block[0])
            if key is not None and key[0] == block[1]:
                layer, scope = key[1], "block"
                layers.add(layer)
                if any(_ATTN.search(seg) for seg in segs[block[0] + 1 : -2]):
                    scope = "attn"
        parts.append(
            _Part(
                param.name,
                None,
                segs[-1],
                None,
                segs[-2] if len(segs) > 1 else "",
                param.role,
                param.shape,
                param.tied_to,
                param.padding_idx,
                param.owner_classes or ("-",),
                param.owner_classes[1:],
                layer,
                scope,
            )
        )
    config: dict[str, Any] = {}
    depth = getattr(model, "num_layers", None)  # keras-hub backbones
    depth = depth if isinstance(depth, int) and not isinstance(depth, bool) else (len(layers) or None)
    width = getattr(model, "hidden_dim", None)
    if not (isinstance(width, int) and not isinstance(width, bool)):
        token = next(
            (
                p
                for p in parts
                if p.scope == ""
                and p.base in ("embedding", "other")
                and len(p.shape) == 2
                and (p.attr in _TOKEN or p.leaf in _TOKEN)
            ),
            None,
        )
        width = token.shape[-1] if token is not None else None
    for field in ("n_layer", "num_hidden_layers", "n_layers"):
        if depth is not None:
            config[field] = depth
    for field in ("n_embd", "hidden_size", "dim", "d_model"):
        if width is not None:
            config[field] = width
    return parts, every, _PathView(SimpleNamespace(**config)), _reader(name)


class _PathView:
    """What a recipe's settings read of a Keras model or JAX pytree: a ``config`` with its depth
    (``n_layer``, ``num_hidden_layers``, ``n_layers``) and width (``n_embd``, ``hidden_size``,
    ``dim``, ``d_model``), where the reader found them."""

    def __init__(self, config: SimpleNamespace) -> None:
        self.config = config
