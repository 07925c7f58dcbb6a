"""Tiny HF transformers models for the tests, built from small configs (nothing downloaded).

``tiny("BertForMaskedLM", Sizes(d=64, heads=4, ff=128, vocab=96, positions=32), layers=2,
pad_token_id=0)`` builds that class from its own config class, with the sizes under the names
its family gives them (``hidden_size``/``n_embd``/``d_model``, ...) and every further argument
passed as it is; ``config(...)`` is the config alone, for a test that edits it first. A size left
None is left at the config's default, and a family without that size (GPT-2's MLP width is
4·d; T5 and ViT have no position table; ViT no vocabulary) ignores it, so one ``Sizes`` serves
a test file's every family. Without transformers the calling test skips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Sizes:
    """The widths of a tiny model: ``d`` the hidden width, ``heads`` the attention heads, ``ff``
    the MLP width, ``vocab`` the vocabulary, ``positions`` the position table."""

    d: int
    heads: int
    ff: int | None = None
    vocab: int | None = None
    positions: int | None = None


def _given(**sizes: int | None) -> dict[str, int]:
    """The sizes that are set: None leaves the config's default."""
    return {name: value for name, value in sizes.items() if value is not None}


def _gpt2(s: Sizes, layers: int) -> dict[str, int]:  # n_inner stays None: the MLP is 4·d
    return _given(n_embd=s.d, n_layer=layers, n_head=s.heads, vocab_size=s.vocab, n_positions=s.positions)


def _bert(s: Sizes, layers: int) -> dict[str, int]:  # BERT's names, which Llama and Gemma use too
    return _given(
        hidden_size=s.d,
        num_hidden_layers=layers,
        num_attention_heads=s.heads,
        intermediate_size=s.ff,
        vocab_size=s.vocab,
        max_position_embeddings=s.positions,
    )


def _t5(s: Sizes, layers: int) -> dict[str, int]:  # as many decoder layers as encoder layers
    return _given(
        d_model=s.d,
        d_kv=s.d // s.heads,
        d_ff=s.ff,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=s.heads,
        vocab_size=s.vocab,
    )


def _vit(s: Sizes, layers: int) -> dict[str, int]:
    return _given(hidden_size=s.d, num_hidden_layers=layers, num_attention_heads=s.heads, intermediate_size=s.ff)


def _mamba(s: Sizes, layers: int) -> dict[str, int]:  # no attention, no position table; ff is 2·d (expand=2)
    return _given(hidden_size=s.d, num_hidden_layers=layers, vocab_size=s.vocab)


def _jetmoe(s: Sizes, layers: int) -> dict[str, int]:  # heads from num_key_value_heads and kv_channels
    return _given(hidden_size=s.d, num_hidden_layers=layers, intermediate_size=s.ff, vocab_size=s.vocab)


#: a config's model_type -> its arguments for the sizes
FAMILIES: dict[str, Callable[[Sizes, int], dict[str, int]]] = {
    "gpt2": _gpt2,
    "bert": _bert,
    "llama": _bert,
    "gemma": _bert,
    "mixtral": _bert,
    "gpt_oss": _bert,
    "gpt_neox": _bert,
    "mamba": _mamba,
    "jetmoe": _jetmoe,
    "t5": _t5,
    "vit": _vit,
}


def _model_class(model: str) -> Any:
    transformers = pytest.importorskip("transformers")
    return getattr(transformers, model)


def config(model: str, sizes: Sizes, layers: int, **extra: Any) -> Any:
    """The config of ``transformers.<model>`` at ``sizes`` with ``layers`` blocks, and ``extra``."""
    config_class = _model_class(model).config_class
    return config_class(**FAMILIES[config_class.model_type](sizes, layers), **extra)


def tiny(model: str, sizes: Sizes, layers: int, **extra: Any) -> Any:
    """``transformers.<model>`` built from :func:`config` (it draws from torch's global generator)."""
    return _model_class(model)(config(model, sizes, layers, **extra))
