"""Recipes on JAX pytrees (issue 20 item 1): Flax linen modules (submodules made in ``setup``,
and ``@nn.compact`` ones read with ``example_inputs=``) and nnx modules, through
``initscale.jax.reinit(..., module=..., example_inputs=...)``; roles from submodule classes and
names (a nanoGPT-shaped linen GPT, a torchtitan-shaped nnx Llama).

For each recipe and two depths, every leaf's std in the report equals the formula written here
from the recipe's source (independently of initscale.recipes; the formulas are those of
tests/test_recipes_keras.py's docstring), and the draws match it: the std about 0 within
z·√((κ−1)/(4n)) of it (κ = 3 for a normal, the truncated normal's own kurtosis for torchtitan's
±3σ head), constants exact, kept leaves unchanged. Family-wise false-alarm rate ALPHA = 1e-4 per
model (Bonferroni over its random leaves).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")
stats = pytest.importorskip("scipy.stats")
isj = pytest.importorskip("initscale.adapters.jax")
jnp = jax.numpy

from _recipes_common import value_problems  # noqa: E402

from initscale import _recipe_paths, recipes  # noqa: E402

ALPHA = 1e-4
D, V, SEQ = 32, 64, 8


# --- a nanoGPT-shaped linen GPT (setup-named submodules; the head is wte.attend: tied) --------------


class Attn(nn.Module):
    d: int

    def setup(self):
        self.c_attn = nn.Dense(3 * self.d)
        self.c_proj = nn.Dense(self.d)

    def __call__(self, x):
        q, k, v = jnp.split(self.c_attn(x), 3, -1)
        return self.c_proj(jax.nn.softmax(q @ k.swapaxes(-1, -2)) @ v)


class MLP(nn.Module):
    d: int
    extra: bool = False

    def setup(self):
        self.c_fc = nn.Dense(4 * self.d)
        self.c_proj = nn.Dense(self.d)
        if self.extra:
            self.mystery = nn.Dense(self.d)

    def __call__(self, x):
        x = self.c_proj(nn.gelu(self.c_fc(x)))
        return self.mystery(x) if self.extra else x


class Block(nn.Module):
    d: int
    extra: bool = False

    def setup(self):
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(), Attn(self.d), nn.LayerNorm()
        self.mlp = MLP(self.d, self.extra)

    def __call__(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    n_layer: int
    extra: bool = False

    def setup(self):
        self.wte, self.wpe = nn.Embed(V, D), nn.Embed(SEQ, D)
        self.h = [Block(D, self.extra) for _ in range(self.n_layer)]
        self.ln_f = nn.LayerNorm()

    def __call__(self, idx):
        x = self.wte(idx) + self.wpe(jnp.arange(idx.shape[-1]))
        for block in self.h:
            x = block(x)
        return self.wte.attend(self.ln_f(x))


class CompactGPT(nn.Module):
    """The same in @nn.compact form, attention by Flax's MultiHeadDotProductAttention."""

    n_layer: int

    @nn.compact
    def __call__(self, idx):
        x = nn.Embed(V, D, name="wte")(idx)
        for i in range(self.n_layer):
            h = nn.LayerNorm(name=f"h_{i}_ln")(x)
            x = x + _CompactBlock(D, name=f"h_{i}")(h)
        return nn.Dense(V, use_bias=False, name="lm_head")(nn.LayerNorm(name="ln_f")(x))


class _CompactBlock(nn.Module):
    d: int

    @nn.compact
    def __call__(self, x):
        x = x + nn.MultiHeadDotProductAttention(num_heads=4, name="attn")(x, x)
        return x + nn.Dense(self.d, name="c_proj")(nn.gelu(nn.Dense(4 * self.d, name="c_fc")(x)))


# --- a torchtitan-shaped nnx Llama ------------------------------------------------------------------


class NAttention(nnx.Module):
    def __init__(self, d, rngs):
        self.wq, self.wk, self.wv, self.wo = (nnx.Linear(d, d, use_bias=False, rngs=rngs) for _ in range(4))


class NFeedForward(nnx.Module):
    def __init__(self, d, hidden, rngs, extra=False):
        self.w1 = nnx.Linear(d, hidden, use_bias=False, rngs=rngs)
        self.w2 = nnx.Linear(hidden, d, use_bias=False, rngs=rngs)
        self.w3 = nnx.Linear(d, hidden, use_bias=False, rngs=rngs)
        if extra:
            self.w4 = nnx.Linear(d, d, use_bias=False, rngs=rngs)


class NBlock(nnx.Module):
    def __init__(self, d, rngs, extra=False):
        self.attention_norm = nnx.RMSNorm(d, rngs=rngs)
        self.attention = NAttention(d, rngs)
        self.ffn_norm = nnx.RMSNorm(d, rngs=rngs)
        self.feed_forward = NFeedForward(d, 2 * d, rngs, extra)


class Llama(nnx.Module):
    def __init__(self, n_layers, extra=False):
        rngs = nnx.Rngs(0)
        self.tok_embeddings = nnx.Embed(V, D, rngs=rngs)
        blocks = [NBlock(D, rngs, extra) for _ in range(n_layers)]
        self.layers = nnx.List(blocks) if hasattr(nnx, "List") else blocks
        self.norm = nnx.RMSNorm(D, rngs=rngs)
        self.output = nnx.Linear(D, V, use_bias=False, rngs=rngs)


def linen(L: int, extra: bool = False):
    model = GPT(L, extra)
    return model.init(jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32)), {"module": model}


def compact(L: int):
    model = CompactGPT(L)
    tokens = jnp.zeros((1, SEQ), jnp.int32)
    return model.init(jax.random.key(0), tokens), {"module": model, "example_inputs": (tokens,)}


def nnx_llama(L: int, extra: bool = False):
    return Llama(L, extra), {}


# --- the formulas, by leaf path -------------------------------------------------------------------


def _constant(path: str) -> float | None:
    if path.endswith("/bias"):
        return 0.0
    if path.endswith("/scale"):
        return 1.0
    return None


OUT = ("c_proj/kernel", "attn/out/kernel", "wo/kernel", "w2/kernel")


def _layer(path: str) -> int:
    segs = path.split("/")
    if "layers" in segs:
        return int(segs[segs.index("layers") + 1])
    return int(next(s for s in segs if s.startswith("h_")).split("_")[1])


def gpt2_std(path, L, fans):
    return 0.02 / math.sqrt(2 * L) if path.endswith(OUT) else 0.02


def neox_std(path, L, fans):
    return 2 / (L * math.sqrt(D)) if path.endswith(OUT) else math.sqrt(2 / (5 * D))


def torchtitan_std(path, L, fans):
    if path == "tok_embeddings/embedding":
        return 1.0
    if path == "output/kernel":
        return D**-0.5  # before truncation at ±3σ
    if path.endswith(("wo/kernel", "w2/kernel", "w3/kernel")):
        return 0.02 / math.sqrt(2 * (_layer(path) + 1))
    return 0.02


def hf_std(path, L, fans):
    return 0.02


def deepnet_std(path, L, fans):
    if path.endswith(("embedding", "output/kernel")):
        return None  # DeepNet does not set embeddings or heads: kept
    xavier = math.sqrt(2 / (fans[0] + fans[1]))  # Flax Dense/Linear kernel (in, out)
    return xavier if path.endswith(("wq/kernel", "wk/kernel")) else (8 * L) ** -0.25 * xavier


def _leaves(tree) -> dict[str, np.ndarray]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(n for n in (isj._key_name(e) for e in path) if n is not None): np.asarray(leaf, np.float64)
        for path, leaf in flat
    }


def problems_of(built, recipe, std_of, L: int) -> list[str]:
    params, kwargs = built
    before = _leaves(params if not isinstance(params, nnx.Module) else nnx.state(params, nnx.Param))
    new, report = isj.reinit(params, recipe, jax.random.key(5), **kwargs)
    after = _leaves(new)
    assert sorted(r.name for r in report) == sorted(after), "one row per leaf, tied ones once"
    rows = {r.name: r for r in report}
    wanted = {p: (_constant(p), None if _constant(p) is not None else std_of(p, L, v.shape)) for p, v in after.items()}
    return value_problems(before, after, rows, wanted, ALPHA)


CASES = {
    ("nanogpt", "linen"): (linen, gpt2_std),
    ("hf.gpt2", "linen"): (linen, gpt2_std),
    ("megatron", "linen"): (linen, gpt2_std),
    ("neox", "linen"): (linen, neox_std),
    ("nanogpt", "compact"): (compact, gpt2_std),
    ("torchtitan.llama", "nnx"): (nnx_llama, torchtitan_std),
    ("hf.llama", "nnx"): (nnx_llama, hf_std),
    ("megatron", "nnx"): (nnx_llama, gpt2_std),
    ("deepnet", "nnx"): (nnx_llama, deepnet_std),
}


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("case", sorted(CASES), ids="-".join)
def test_recipe_on_flax_matches_its_formulas(case, depth: int) -> None:
    build, std_of = CASES[case]
    problems = problems_of(build(depth), recipes.get(case[0]), std_of, depth)
    assert not problems, "\n".join(problems)


def test_report_says_which_role_set_each_leaf() -> None:
    variables, kwargs = linen(2)
    _, report = isj.reinit(variables, recipes.get("nanogpt"), jax.random.key(0), dry_run=True, **kwargs)
    assert report["params/h_1/mlp/c_proj/kernel"].reason == (
        "recipe nanogpt: residual_out (rule 'params/h_*/mlp/c_proj/kernel')"
    )


def test_tied_embedding_is_one_leaf_under_the_token_role() -> None:
    variables, kwargs = linen(2)  # the head is wte.attend: one leaf, params/wte/embedding
    _, report = isj.reinit(variables, recipes.get("hf.gpt2"), jax.random.key(0), dry_run=True, **kwargs)
    embeddings = [r for r in report if r.name.endswith("/embedding")]
    assert sorted(r.name for r in embeddings) == ["params/wpe/embedding", "params/wte/embedding"]
    assert report["params/wte/embedding"].reason.startswith("recipe hf.gpt2: token_embedding")


def test_nnx_state_with_its_module_reads_the_same_roles() -> None:
    model = Llama(2)
    state = nnx.state(model, nnx.Param)
    _, report = isj.reinit(state, recipes.get("torchtitan.llama"), jax.random.key(0), dry_run=True, module=model)
    assert report["layers/1/feed_forward/w2/kernel"].std == pytest.approx(0.02 / 2)  # 0.02/√(2(1+1))


def test_linen_module_without_its_variables_is_an_error() -> None:
    with pytest.raises(TypeError, match="flax.linen module .GPT. holds no variables.*module=model"):
        recipes.get("nanogpt").rules_for(GPT(2))


def test_compact_module_without_example_inputs_says_so() -> None:
    variables, kwargs = compact(1)
    with pytest.raises(ValueError, match="example_inputs="):
        isj.reinit(variables, recipes.get("nanogpt"), jax.random.key(0), module=kwargs["module"])


def test_unknown_layer_in_a_block_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"(?s)gives no role to 2 parameter.*'layers/0/feed_forward/w4/kernel'"):
        isj.reinit(Llama(2, extra=True), recipes.get("torchtitan.llama"), jax.random.key(0))
    variables, kwargs = linen(1, extra=True)
    with pytest.raises(ValueError, match=r"(?s)gives no role.*'params/h_0/mlp/mystery/kernel'"):
        isj.reinit(variables, recipes.get("nanogpt"), jax.random.key(0), **kwargs)


def test_role_the_recipe_needs_missing_is_an_error() -> None:
    variables, kwargs = linen(1)
    # the head is wte.attend (tied): torchtitan's untied output head is not there
    with pytest.raises(
        ValueError,
        match=r"(?s)Recipe 'torchtitan.llama': role\(s\) 'lm_head' match no parameter of GPT"
        r".*The model has the roles: .*attn_qkv \(1\)",
    ):
        isj.reinit(variables, recipes.get("torchtitan.llama"), jax.random.key(0), **kwargs)


def test_not_a_model_names_the_type() -> None:
    with pytest.raises(TypeError, match="reads roles from a torch module tree.*builtins.object"):
        recipes.get("hf.gpt2").rules_for(object())
    with pytest.raises(TypeError, match="Recipe 'fixup' reads roles from a torch module tree only"):
        isj.reinit(Llama(1), recipes.get("fixup"), jax.random.key(0))


# --- mutation tests: planted bugs make the checks above fail ---------------------------------------


def test_mutation_layer_index_off_by_one_is_caught(monkeypatch) -> None:
    real = _recipe_paths._indexed

    def shifted(segs, j):
        key = real(segs, j)
        return None if key is None else (key[0], key[1] + 1)

    monkeypatch.setattr(_recipe_paths, "_indexed", shifted)
    problems = problems_of(nnx_llama(3), recipes.get("torchtitan.llama"), torchtitan_std, 3)
    assert problems and all("recipe std" in p for p in problems), problems


def test_mutation_blocks_not_found_is_caught(monkeypatch) -> None:
    import re

    monkeypatch.setattr(_recipe_paths, "_ATTN", re.compile(r"(?!)"))  # no attention layer seen: no blocks
    try:
        problems = problems_of(nnx_llama(2), recipes.get("megatron"), gpt2_std, 2)
    except ValueError as err:  # or the depth is unknown: an error, never silent
        problems = [str(err)]
    assert problems, "a model read without its blocks must fail a check"


def test_mutation_drawn_values_off_the_spec_are_caught(monkeypatch) -> None:
    real = isj._sample

    def loud(key, dist, layout, shape, dtype):  # a sampler that draws 1.2x the std it was given
        return real(key, dist, layout, shape, dtype) * 1.2

    monkeypatch.setattr(isj, "_sample", loud)
    built = linen(3)
    problems = problems_of(built, recipes.get("hf.gpt2"), gpt2_std, 3)
    flagged = {p.split(":")[0] for p in problems if "drawn std" in p}
    random = {p for p in _leaves(built[0]) if _constant(p) is None}
    assert random and flagged == random, problems


def test_check_with_a_recipe_flags_a_wrong_residual_std() -> None:
    variables, kwargs = linen(2)
    new, _ = isj.reinit(variables, recipes.get("nanogpt"), jax.random.key(0), **kwargs)
    assert not isj.check(new, recipe="nanogpt", **kwargs).flags  # a fresh recipe init: no flags
    kernel = new["params"]["h_1"]["attn"]["c_proj"]["kernel"]
    new["params"]["h_1"]["attn"]["c_proj"]["kernel"] = kernel * 3.0  # 3x its recipe's std
    flags = isj.check(new, recipe="nanogpt", **kwargs).flags
    assert list(flags) == ["params/h_1/attn/c_proj/kernel"] and "std_off" in flags["params/h_1/attn/c_proj/kernel"]
