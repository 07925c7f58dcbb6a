"""Recipes on Keras 3 models (issue 20 item 1): keras-hub backbones (GPT2Backbone, LlamaBackbone,
BertBackbone, from tiny configs: nothing downloaded) and a hand-built GPT-2 block, on the Keras
backend of this process (KERAS_BACKEND; roles come from variable paths and layer classes, the
same on every backend; run this file once per backend, each in its own process).

For each recipe and two depths, every variable's std in the report equals the formula written
here from the recipe's source (independently of initscale.recipes), and the draws match it: the
std about 0 within z·√((κ−1)/(4n)) of it (κ = 3 for a normal, the truncated normal's own
kurtosis for torchtitan's ±3σ head), constants exact, kept variables unchanged. Family-wise
false-alarm rate ALPHA = 1e-4 per model (Bonferroni over its random variables).

Formulas: hf.gpt2 / nanogpt, transformers 5.24 GPT2PreTrainedModel._init_weights and nanoGPT
model.py: N(0, 0.02²), the residual projections (attention output, MLP output) 0.02/√(2L).
megatron (init_method_normal / scaled_init_method_normal): σ = 0.02, output projections σ/√(2L).
neox (small_init / wang_init): √(2/(5d)), output projections 2/(L·√d). torchtitan.llama
(model.py init_weights): q/k/v and the gate (w1) 0.02, wo, w2 (down) and w3 (up) 0.02/√(2(i+1)),
tok_embeddings 1, the output head d^-½ truncated at ±3σ. hf.llama / hf.bert: N(0, 0.02²).
deepnet (arXiv:2203.00555 Fig. 2, decoder-only): q, k xavier_normal_ (std √(2/(fan_in+fan_out))),
v, out and the MLP β·√(2/(fan_in+fan_out)) with β = (8M)^-¼, fans per projection (EinsumDense
d -> heads·head_dim); embeddings and heads kept.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
stats = pytest.importorskip("scipy.stats")
isk = pytest.importorskip("initscale.adapters.keras")

from _recipes_common import mutated_recipe, value_problems  # noqa: E402

import initscale  # noqa: E402
from initscale import _recipe_paths, recipes  # noqa: E402

ALPHA = 1e-4
D, HEADS, V, FF, SEQ = 32, 4, 64, 64, 16
OUT = ("attention_output/kernel", "feedforward_output_dense/kernel", "c_proj/kernel")


def _hub():
    if os.environ.get("INITSCALE_REQUIRE", "").strip():  # CI installs it: never skip there
        import keras_hub
    else:
        keras_hub = pytest.importorskip("keras_hub")
    return keras_hub.models


def gpt2(L: int):
    return _hub().GPT2Backbone(
        vocabulary_size=V, num_layers=L, num_heads=HEADS, hidden_dim=D, intermediate_dim=FF, max_sequence_length=SEQ
    )


def llama(L: int):
    return _hub().LlamaBackbone(
        vocabulary_size=V, num_layers=L, num_query_heads=HEADS, num_key_value_heads=2, hidden_dim=D, intermediate_dim=FF
    )  # untied: token_embedding/reverse_embeddings


def bert(L: int):
    return _hub().BertBackbone(
        vocabulary_size=V, num_layers=L, num_heads=HEADS, hidden_dim=D, intermediate_dim=FF, max_sequence_length=SEQ
    )


class Block(keras.layers.Layer):
    """nanoGPT's Block in Keras: ln_1, attn (MultiHeadAttention), ln_2, c_fc, c_proj."""

    def __init__(self, d: int, extra: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ln_1 = keras.layers.LayerNormalization(name="ln_1")
        self.attn = keras.layers.MultiHeadAttention(HEADS, d // HEADS, name="attn")
        self.ln_2 = keras.layers.LayerNormalization(name="ln_2")
        self.c_fc = keras.layers.Dense(4 * d, name="c_fc")
        self.c_proj = keras.layers.Dense(d, name="c_proj")
        self.extra = keras.layers.Dense(d, name="mystery") if extra else None

    def call(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h)
        x = x + self.c_proj(self.c_fc(self.ln_2(x)))
        return x if self.extra is None else self.extra(x)


def hand_gpt(L: int, extra: bool = False):
    tokens = keras.Input((8,), dtype="int32")
    x = keras.layers.Embedding(V, D, name="wte")(tokens)
    for i in range(L):
        x = Block(D, extra, name=f"h_{i}")(x)
    x = keras.layers.LayerNormalization(name="ln_f")(x)
    return keras.Model(tokens, keras.layers.Dense(V, use_bias=False, name="lm_head")(x))


def _constant(path: str) -> float | None:
    if path.endswith(("/bias", "/beta")):
        return 0.0
    if path.endswith(("/gamma", "/scale")):
        return 1.0
    return None


def gpt2_std(path: str, L: int, d: int, fans) -> float | None:
    return 0.02 / math.sqrt(2 * L) if path.endswith(OUT) else 0.02


def megatron_std(path: str, L: int, d: int, fans) -> float | None:
    return 0.02 / math.sqrt(2 * L) if path.endswith(OUT) else 0.02


def neox_std(path: str, L: int, d: int, fans) -> float | None:
    return 2 / (L * math.sqrt(d)) if path.endswith(OUT) else math.sqrt(2 / (5 * d))


def torchtitan_std(path: str, L: int, d: int, fans) -> float | None:
    if path == "token_embedding/embeddings":
        return 1.0
    if path == "token_embedding/reverse_embeddings":
        return d**-0.5  # before truncation at ±3σ
    if path.endswith((*OUT, "feedforward_intermediate_dense/kernel")):  # wo, w2 (down), w3 (up)
        layer = int(path.split("/")[0].removeprefix("transformer_layer_"))
        return 0.02 / math.sqrt(2 * (layer + 1))
    return 0.02  # wq, wk, wv, w1 (feedforward_gate_dense)


def hf_std(path: str, L: int, d: int, fans) -> float | None:
    return 0.02


def deepnet_std(path: str, L: int, d: int, fans) -> float | None:
    if "embeddings" in path:
        return None  # DeepNet does not set embeddings or heads: kept
    xavier = math.sqrt(2 / (fans[0] + fans[1]))
    if path.endswith(("query/kernel", "key/kernel")):
        return xavier
    return (8 * L) ** -0.25 * xavier


def _fans(path: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """Forward fans of one projection, from its Keras layout: q/k/v EinsumDense (d, heads, head_dim):
    d -> heads·head_dim; the attention output (heads, head_dim, d): heads·head_dim -> d; Dense (in, out)."""
    if len(shape) == 3:
        return (
            (shape[0] * shape[1], shape[2])
            if path.endswith("attention_output/kernel")
            else (shape[0], shape[1] * shape[2])
        )
    return (shape[0], shape[-1]) if len(shape) == 2 else (1, 1)


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def problems_of(model, recipe, std_of, L: int) -> list[str]:
    """Every variable against ``std_of`` (None: kept), as the module docstring says."""
    before = {v.path: _np(v) for v in model.trainable_variables}
    report = isk.reinit(model, recipe, seed=3)
    after = {v.path: _np(v) for v in model.trainable_variables}
    assert sorted(r.name for r in report) == sorted(after), "one row per variable, tied ones once"
    rows = {r.name: r for r in report}
    wanted = {
        p: (_constant(p), None if _constant(p) is not None else std_of(p, L, D, _fans(p, v.shape)))
        for p, v in after.items()
    }
    return value_problems(before, after, rows, wanted, ALPHA)


CASES = {
    ("hf.gpt2", "gpt2"): (gpt2, gpt2_std),
    ("nanogpt", "gpt2"): (gpt2, gpt2_std),
    ("nanogpt", "hand"): (hand_gpt, gpt2_std),
    ("megatron", "gpt2"): (gpt2, megatron_std),
    ("megatron", "llama"): (llama, megatron_std),
    ("neox", "llama"): (llama, neox_std),
    ("torchtitan.llama", "llama"): (llama, torchtitan_std),
    ("hf.llama", "llama"): (llama, hf_std),
    ("hf.bert", "bert"): (bert, hf_std),
    ("deepnet", "llama"): (llama, deepnet_std),
}


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("case", sorted(CASES), ids="-".join)
def test_recipe_on_keras_matches_its_formulas(case, depth: int) -> None:
    build, std_of = CASES[case]
    problems = problems_of(build(depth), recipes.get(case[0]), std_of, depth)
    assert not problems, "\n".join(problems)


def test_report_says_which_role_set_each_variable() -> None:
    report = isk.reinit(gpt2(2), recipes.get("hf.gpt2"), dry_run=True)
    assert report["transformer_layer_1/feedforward_output_dense/kernel"].reason == (
        "recipe hf.gpt2: residual_out (rule 'transformer_layer_*/feedforward_output_dense/kernel')"
    )
    assert report["transformer_layer_0/self_attention/query/kernel"].reason.startswith("recipe hf.gpt2: attn_q")


def test_tied_embedding_is_one_variable_under_the_token_role() -> None:
    model = gpt2(2)  # GPT2Backbone ties its ReversibleEmbedding: the logits reuse token_embedding/embeddings
    found = {f.name: f for f in recipes.get("hf.gpt2").roles(model)}
    tied = [f for f in found.values() if f.name.startswith("token_embedding/")]
    assert [(f.name, f.role) for f in tied] == [("token_embedding/embeddings", "token_embedding")]
    assert "lm_head" not in {f.role for f in found.values()}
    report = isk.reinit(model, recipes.get("hf.gpt2"), seed=0)
    assert [r.name for r in report].count("token_embedding/embeddings") == 1
    # untied (Llama): the output head is its own variable, with its own role
    roles = {f.name: f.role for f in recipes.get("torchtitan.llama").roles(llama(1))}
    assert roles["token_embedding/reverse_embeddings"] == "lm_head"


def test_role_the_recipe_needs_missing_is_an_error() -> None:
    with pytest.raises(
        ValueError,
        match=r"(?s)Recipe 'hf.llama': role\(s\) 'mlp_gate' match no parameter of "
        r"GPT2Backbone.*The model has the roles: .*attn_out \(1\).*mlp_out \(1\)",
    ):
        isk.reinit(gpt2(1), recipes.get("hf.llama"), seed=0)


def test_unknown_layer_in_a_block_is_an_error_naming_it() -> None:
    model = hand_gpt(2, extra=True)
    before = [_np(v) for v in model.trainable_variables]
    with pytest.raises(ValueError, match=r"(?s)gives no role to 4 parameter.*'h_0/mystery/kernel'.*in Dense"):
        isk.reinit(model, recipes.get("nanogpt"), seed=0)
    assert all((_np(v) == b).all() for v, b in zip(model.trainable_variables, before, strict=True))


def test_torch_only_recipe_on_keras_names_the_readable_ones() -> None:
    with pytest.raises(TypeError, match=r"Recipe 'hf.t5' reads roles from a torch module tree only.*'hf.gpt2'"):
        isk.reinit(gpt2(1), recipes.get("hf.t5"), seed=0)


def test_recipe_settings_override_the_model() -> None:
    rules = recipes.get("megatron", n_layers=8, std=0.01).rules_for(gpt2(2))
    assert rules["transformer_layer_*/feedforward_output_dense/kernel"].spec == initscale.Normal(0.01 / 4)


# --- mutation tests: planted bugs make the checks above fail ---------------------------------------


def test_mutation_residual_scaling_over_n_layer_not_2n_layer_is_caught() -> None:
    good = recipes._REGISTRY["hf.gpt2"].spec

    def wrong(role, part, s):  # 1/√L instead of 1/√(2L): the classic transformers#47458 shape of bug
        return initscale.Normal(s["std"] / math.sqrt(s["n_layer"])) if role == "residual_out" else good(role, part, s)

    problems = problems_of(gpt2(2), mutated_recipe("hf.gpt2", wrong), gpt2_std, 2)
    assert problems and all(p.split(":")[0].endswith(OUT) for p in problems), problems


def test_mutation_layer_index_off_by_one_is_caught(monkeypatch) -> None:
    real = _recipe_paths._indexed

    def shifted(segs, j):
        key = real(segs, j)
        return None if key is None else (key[0], key[1] + 1)

    monkeypatch.setattr(_recipe_paths, "_indexed", shifted)
    problems = problems_of(llama(3), recipes.get("torchtitan.llama"), torchtitan_std, 3)
    assert problems and all("recipe std" in p for p in problems), problems


def test_mutation_drawn_values_off_the_spec_are_caught(monkeypatch) -> None:
    real = isk._sample

    def loud(dist, layout, shape, dtype, seed):  # a sampler that draws 1.2x the std it was given
        return real(dist, layout, shape, dtype, seed) * 1.2

    monkeypatch.setattr(isk, "_sample", loud)
    model = gpt2(3)
    problems = problems_of(model, recipes.get("hf.gpt2"), gpt2_std, 3)
    flagged = {p.split(":")[0] for p in problems if "drawn std" in p}
    random = {v.path for v in model.trainable_variables if _constant(v.path) is None}
    assert random and flagged == random, problems  # every random variable, none of the constants' std checks


def test_check_with_a_recipe_flags_a_wrong_residual_std() -> None:
    model = gpt2(2)
    isk.reinit(model, recipes.get("hf.gpt2"), seed=0)
    assert not isk.check(model, recipe="hf.gpt2").flags  # a fresh recipe init: no flags
    variable = next(
        v for v in model.trainable_variables if v.path == "transformer_layer_1/feedforward_output_dense/kernel"
    )
    variable.assign(variable * 3.0)  # the residual projection at 3x its recipe's std
    flags = isk.check(model, recipe="hf.gpt2").flags
    assert list(flags) == [variable.path] and "std_off" in flags[variable.path]
