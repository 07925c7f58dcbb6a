"""Depth-aware recipes (issue 20 item 3, "others"): nanogpt, megatron, neox, torchtitan.llama.

For each recipe and two depths, every parameter's std in the dry-run report equals the formula
transcribed from the source's code (written here independently of initscale.recipes), and the
real draws match it: the std about 0 within z·√((κ−1)/(4n)) of it (κ = 3 for normals; the
truncated normal's own kurtosis for torchtitan's ±3σ head), constants exact. nanoGPT and
torchtitan also run their own init (the source's init code, transcribed into the small module
trees below, which mirror the sources' class and attribute names) and are compared to the recipe
by a two-sample KS test. Family-wise false-alarm rate ALPHA = 1e-4 per model (Bonferroni).

Sources: karpathy/nanoGPT model.py (commit 0011cd4442915c844e9b8f5c5117f25f5a7096c5);
pytorch/torchtitan torchtitan/models/llama3/model/model.py (commit 6404b932421f5ce382e7dac5ad381b2c17b1373c);
NVIDIA/Megatron-LM megatron/legacy/model/utils.py (commit 9538bb8e280fd5b7609779049a604278edae0967);
EleutherAI/gpt-neox megatron/model/init_functions.py (commit 330a80215d765530d828c70f2abe1d2a450b69bd).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from statistics import NormalDist

import pytest

torch = pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")
nn = torch.nn

from _recipes_common import mutated_recipe  # noqa: E402

import initscale  # noqa: E402
from initscale import recipes  # noqa: E402
from initscale.specs import Ones, TruncatedNormal, Zeros  # noqa: E402

ALPHA = 1e-4
D = 64


# --- nanoGPT's module tree and init (model.py) -----------------------------------------------------


@dataclasses.dataclass
class GPTConfig:
    n_layer: int
    n_embd: int = D
    n_head: int = 4
    vocab_size: int = 96
    block_size: int = 32
    bias: bool = True


class LayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = LayerNorm(c.n_embd, c.bias)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = LayerNorm(c.n_embd, c.bias)
        self.mlp = MLP(c)


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(c.vocab_size, c.n_embd),
                wpe=nn.Embedding(c.block_size, c.n_embd),
                h=nn.ModuleList([Block(c) for _ in range(c.n_layer)]),
                ln_f=LayerNorm(c.n_embd, c.bias),
            )
        )
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        # nanoGPT's init, as in GPT.__init__
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)


def nanogpt_std(name: str, L: int) -> float | None:
    """nanoGPT's std per parameter (None: a constant)."""
    if name.endswith("c_proj.weight"):
        return 0.02 / math.sqrt(2 * L)
    if "ln_" in name or name.endswith(".bias"):
        return None
    return 0.02


# --- torchtitan's module tree and init (models/llama3/model/model.py) -------------------------------


@dataclasses.dataclass
class TransformerModelArgs:
    n_layers: int
    dim: int = D
    n_heads: int = 4
    n_kv_heads: int = 2
    vocab_size: int = 96
    depth_init: bool = True


class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        hd = a.dim // a.n_heads
        self.wq = nn.Linear(a.dim, a.n_heads * hd, bias=False)
        self.wk = nn.Linear(a.dim, a.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(a.dim, a.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(a.n_heads * hd, a.dim, bias=False)

    def init_weights(self, init_std):
        for linear in (self.wq, self.wk, self.wv):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=0.02)
        nn.init.trunc_normal_(self.wo.weight, mean=0.0, std=init_std)


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def init_weights(self, init_std):
        nn.init.trunc_normal_(self.w1.weight, mean=0.0, std=0.02)
        for linear in (self.w2, self.w3):
            nn.init.trunc_normal_(linear.weight, mean=0.0, std=init_std)


class TransformerBlock(nn.Module):
    def __init__(self, layer_id, a):
        super().__init__()
        self.attention = Attention(a)
        self.feed_forward = FeedForward(a.dim, 2 * a.dim)
        self.attention_norm = nn.RMSNorm(a.dim)
        self.ffn_norm = nn.RMSNorm(a.dim)
        self.weight_init_std = 0.02 / (2 * (layer_id + 1)) ** 0.5 if a.depth_init else 0.02 / (2 * a.n_layers) ** 0.5

    def init_weights(self):
        for norm in (self.attention_norm, self.ffn_norm):
            norm.reset_parameters()
        self.attention.init_weights(self.weight_init_std)
        self.feed_forward.init_weights(self.weight_init_std)


class Transformer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.model_args = a
        self.tok_embeddings = nn.Embedding(a.vocab_size, a.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(i, a) for i in range(a.n_layers)})
        self.norm = nn.RMSNorm(a.dim)
        self.output = nn.Linear(a.dim, a.vocab_size, bias=False)
        self.init_weights()

    def init_weights(self):
        nn.init.normal_(self.tok_embeddings.weight)
        for layer in self.layers.values():
            layer.init_weights()
        self.norm.reset_parameters()
        final_out_std = self.model_args.dim**-0.5
        cutoff_factor = 3
        nn.init.trunc_normal_(
            self.output.weight,
            mean=0.0,
            std=final_out_std,
            a=-cutoff_factor * final_out_std,
            b=cutoff_factor * final_out_std,
        )


def torchtitan_std(name: str, L: int, depth_init: bool = True) -> float | None:
    """torchtitan's std per parameter before truncation (None: a constant)."""
    if "norm" in name:
        return None
    if name.startswith("tok_embeddings"):
        return 1.0
    if name.startswith("output"):
        return D**-0.5
    layer = int(name.split(".")[1])
    init_std = 0.02 / (2 * (layer + 1)) ** 0.5 if depth_init else 0.02 / (2 * L) ** 0.5
    return init_std if name.split(".")[-2] in ("wo", "w2", "w3") else 0.02


# --- Megatron and NeoX on nanoGPT's tree (their roles: QKV, attention out, MLP in/out) --------------


def megatron_std(name: str, L: int, sigma: float = 0.02) -> float | None:
    """init_method_normal(σ) and, for the output layers, scaled_init_method_normal(σ, L)."""
    if "ln_" in name or name.endswith(".bias"):
        return None
    return sigma / math.sqrt(2.0 * L) if name.endswith("c_proj.weight") else sigma


def neox_std(name: str, L: int) -> float | None:
    """small_init_init_method(d) and wang_init_method(L, d)."""
    if "ln_" in name or name.endswith(".bias"):
        return None
    return 2 / L / math.sqrt(D) if name.endswith("c_proj.weight") else math.sqrt(2 / (5 * D))


CASES = {
    "nanogpt": (lambda L: GPT(GPTConfig(L)), nanogpt_std, True),
    "megatron": (lambda L: GPT(GPTConfig(L)), megatron_std, False),
    "neox": (lambda L: GPT(GPTConfig(L)), neox_std, False),
    "torchtitan.llama": (lambda L: Transformer(TransformerModelArgs(L)), torchtitan_std, True),
}


def problems_of(name: str, L: int, recipe=None, expected=None) -> list[str]:
    build, std_of, native = CASES[name]
    expected = expected or std_of
    torch.manual_seed(7)
    model = build(L)
    theirs = {n: p.detach().clone().double() for n, p in model.named_parameters()}
    recipe = recipe or recipes.get(name)
    report = initscale.torch.reinit_(model, recipe, generator=torch.Generator().manual_seed(11))
    ours = {n: p.detach().double() for n, p in model.named_parameters()}
    random = [n for n in ours if expected(n, L) is not None]
    level = ALPHA / (len(random) * (2 if native else 1))
    z = NormalDist().inv_cdf(1 - level / 2)
    out = []
    for pname, values in ours.items():
        row = report[pname]
        want = expected(pname, L)
        if want is None:
            value = 1.0 if isinstance(row.spec, Ones) else 0.0
            if not isinstance(row.spec, (Ones, Zeros)) or not (values == value).all():
                out.append(f"{pname}: expected a constant, got {row.spec!r}")
            continue
        spec = row.spec
        # a truncated normal's source formula is its std before truncation (what the source passes as std);
        # every other one is the std of the values (the report's)
        sigma = spec.stddev if isinstance(spec, TruncatedNormal) else row.std
        if abs(sigma - want) > 1e-12 * want:
            out.append(f"{pname}: recipe std {sigma:.6g}, source formula {want:.6g}")
            continue
        x = values.flatten().numpy()
        kind = type(spec).__name__ if spec.fixed_scale else spec.distribution
        if kind in ("TruncatedNormal", "truncated_normal"):  # bounds in std units: ±2 (VarianceScaling) or spec's
            a, b = (spec.lower, spec.upper) if kind == "TruncatedNormal" else (-spec.truncation, spec.truncation)
            kurtosis = 3.0 + float(stats.truncnorm.stats(a, b, moments="k"))
        elif kind in ("Uniform", "uniform"):
            kurtosis = 1.8  # a uniform's kurtosis, 9/5
        else:
            kurtosis = 3.0  # a normal's
        tol = z * math.sqrt((kurtosis - 1) / (4 * x.size))  # std's relative sd: sqrt((kappa-1)/(4n))
        drawn_std = row.std
        ratio = math.sqrt(float((x**2).mean())) / drawn_std
        if abs(ratio - 1) > tol:
            out.append(f"{pname}: drawn std / expected = {ratio:.4f}, beyond 1 ± {tol:.4f}")
        if native:
            p = stats.ks_2samp(theirs[pname].flatten().numpy(), x).pvalue
            if p < level:
                out.append(f"{pname}: KS against the source's own init p = {p:.3g} < {level:.3g}")
    return out


@pytest.mark.parametrize("depth", [2, 5])
@pytest.mark.parametrize("name", sorted(CASES))
def test_depth_recipe_matches_its_source(name: str, depth: int) -> None:
    problems = problems_of(name, depth)
    assert not problems, "\n".join(problems)


def test_mutation_torchtitan_layer_id_off_by_one_is_caught() -> None:
    good = recipes._REGISTRY["torchtitan.llama"].spec

    def off_by_one(role, part, s):
        if role in ("attn_out", "mlp_out", "mlp_in"):
            return initscale.Normal(0.02 / math.sqrt(2 * max(part.layer, 1)))  # layer_id instead of layer_id + 1
        return good(role, part, s)

    problems = problems_of("torchtitan.llama", 5, mutated_recipe("torchtitan.llama", off_by_one))
    assert problems and all(".wo." in p or ".w2." in p or ".w3." in p for p in problems), problems


def test_mutation_neox_wang_init_with_sqrt_layers_is_caught() -> None:
    good = recipes._REGISTRY["neox"].spec

    def wrong(role, part, s):
        if role == "residual_out":
            return initscale.Normal(2 / math.sqrt(s["L"]) / math.sqrt(s["d"]))
        return good(role, part, s)

    problems = problems_of("neox", 5, mutated_recipe("neox", wrong))
    assert problems and all("c_proj" in p for p in problems), problems


def test_torchtitan_depth_init_false_uses_n_layers() -> None:
    torch.manual_seed(0)
    model = Transformer(TransformerModelArgs(4))
    report = initscale.torch.reinit_(model, recipes.get("torchtitan.llama", depth_init=False), dry_run=True)
    for i in range(4):
        assert report[f"layers.{i}.attention.wo.weight"].spec.stddev == pytest.approx(0.02 / math.sqrt(8))
    report = initscale.torch.reinit_(model, recipes.get("torchtitan.llama"), dry_run=True)
    assert report["layers.3.feed_forward.w3.weight"].reason.startswith("recipe torchtitan.llama: mlp_in")
    assert report["layers.3.feed_forward.w3.weight"].spec.stddev == pytest.approx(0.02 / math.sqrt(8))


def test_depth_recipes_on_hf_models() -> None:
    transformers = pytest.importorskip("transformers")
    if "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        pytest.skip("TensorFlow is loaded and Triton (imported by HF models) would abort after it")
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=D,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=96,
            tie_word_embeddings=False,
        )
    )
    report = initscale.torch.reinit_(llama, recipes.get("torchtitan.llama"), dry_run=True)
    assert report["model.layers.2.mlp.down_proj.weight"].spec.stddev == pytest.approx(0.02 / math.sqrt(6))
    assert report["model.layers.2.mlp.gate_proj.weight"].spec.stddev == 0.02
    assert report["model.embed_tokens.weight"].spec.stddev == 1.0
    assert report["lm_head.weight"].spec == TruncatedNormal(D**-0.5, lower=-3.0, upper=3.0)
    report = initscale.torch.reinit_(llama, recipes.get("megatron", std=0.01), dry_run=True)
    assert report["model.layers.0.self_attn.o_proj.weight"].spec.stddev == pytest.approx(0.01 / math.sqrt(6))
    assert report["model.layers.0.self_attn.q_proj.weight"].spec.stddev == 0.01
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_embd=D, n_layer=3, n_head=4, vocab_size=96, n_positions=32, bos_token_id=0, eos_token_id=0
        )
    )
    report = initscale.torch.reinit_(gpt2, recipes.get("neox"), dry_run=True)
    assert report["transformer.h.1.mlp.c_proj.weight"].spec.stddev == pytest.approx(2 / 3 / math.sqrt(D))
    assert report["transformer.h.1.attn.c_attn.weight"].spec.stddev == pytest.approx(math.sqrt(2 / (5 * D)))


def test_missing_residual_role_is_an_error() -> None:
    model = Transformer(TransformerModelArgs(2))
    with pytest.raises(
        ValueError,
        match=r"Recipe 'nanogpt': role\(s\) 'residual_out' match no parameter of "
        r"Transformer.*attn_out \(2\)",
    ):
        recipes.get("nanogpt").rules_for(model)


# --- OLMo's module tree and init (olmo/model.py, olmo/initialization.py) ----------------------------


@dataclasses.dataclass
class ModelConfig:
    n_layers: int
    init_fn: str = "mitchell"
    d_model: int = D
    mlp_hidden: int = 3 * D
    vocab_size: int = 96
    init_std: float = 0.02


def init_normal(module, std, init_cutoff_factor=None):
    if init_cutoff_factor is not None:
        cutoff_value = init_cutoff_factor * std
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-cutoff_value, b=cutoff_value)
    else:
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class OLMoBlock(nn.Module):
    def __init__(self, layer_id, c):
        super().__init__()
        self.layer_id, self.config = layer_id, c
        self.attn_out = nn.Linear(c.d_model, c.d_model, bias=False)
        self.ff_out = nn.Linear(c.mlp_hidden // 2, c.d_model, bias=False)  # SwiGLU: output_multiplier 0.5

    def reset_parameters(self):
        if self.config.init_fn == "mitchell":
            attn_out_std = 1 / (math.sqrt(2 * self.config.d_model * (self.layer_id + 1)))
            ff_out_std = 1 / (math.sqrt(2 * self.ff_out.in_features * (self.layer_id + 1)))
        else:  # full_megatron
            attn_out_std = ff_out_std = self.config.init_std / math.sqrt(2.0 * self.config.n_layers)
        init_normal(self.attn_out, std=attn_out_std, init_cutoff_factor=3.0)
        init_normal(self.ff_out, std=ff_out_std, init_cutoff_factor=3.0)


class OLMoSequentialBlock(OLMoBlock):
    def __init__(self, layer_id, c):
        super().__init__(layer_id, c)
        self.att_proj = nn.Linear(c.d_model, 3 * c.d_model, bias=False)
        self.ff_proj = nn.Linear(c.d_model, c.mlp_hidden, bias=False)
        self.attn_norm = nn.LayerNorm(c.d_model, bias=False)
        self.ff_norm = nn.LayerNorm(c.d_model, bias=False)

    def reset_parameters(self):
        super().reset_parameters()
        self.attn_norm.reset_parameters()
        self.ff_norm.reset_parameters()
        std = 1 / math.sqrt(self.config.d_model) if self.config.init_fn == "mitchell" else self.config.init_std
        init_normal(self.att_proj, std, 3.0)
        init_normal(self.ff_proj, std, 3.0)


class OLMo(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(c.vocab_size, c.d_model),
                blocks=nn.ModuleList([OLMoSequentialBlock(i, c) for i in range(c.n_layers)]),
                ln_f=nn.LayerNorm(c.d_model, bias=False),
                ff_out=nn.Linear(c.d_model, c.vocab_size, bias=False),
            )
        )
        self.reset_parameters()

    def reset_parameters(self):
        wte_std = 1.0 / math.sqrt(self.config.d_model) if self.config.init_fn == "mitchell" else self.config.init_std
        init_normal(self.transformer.wte, std=wte_std, init_cutoff_factor=3.0)
        self.transformer.ln_f.reset_parameters()
        init_normal(self.transformer.ff_out, 1 / math.sqrt(self.config.d_model), 3.0)
        for block in self.transformer.blocks:
            block.reset_parameters()


def olmo_std(mode: str):
    def std(name: str, L: int) -> float | None:
        if "norm" in name or "ln_f" in name:
            return None
        if name == "transformer.ff_out.weight":
            return D**-0.5
        if name.startswith("transformer.wte"):
            return D**-0.5 if mode == "mitchell" else 0.02
        i, leaf = int(name.split(".")[2]), name.split(".")[3]
        if leaf == "attn_out":
            return 1 / math.sqrt(2 * D * (i + 1)) if mode == "mitchell" else 0.02 / math.sqrt(2 * L)
        if leaf == "ff_out":
            return 1 / math.sqrt(2 * (3 * D // 2) * (i + 1)) if mode == "mitchell" else 0.02 / math.sqrt(2 * L)
        return D**-0.5 if mode == "mitchell" else 0.02

    return std


CASES["olmo.mitchell"] = (lambda L: OLMo(ModelConfig(L)), olmo_std("mitchell"), True)
CASES["olmo.full_megatron"] = (lambda L: OLMo(ModelConfig(L, init_fn="full_megatron")), olmo_std("full_megatron"), True)


@pytest.mark.parametrize("depth", [2, 5])
@pytest.mark.parametrize("name", ["olmo.mitchell", "olmo.full_megatron"])
def test_olmo_recipe_matches_its_source(name: str, depth: int) -> None:
    problems = problems_of(name, depth)
    assert not problems, "\n".join(problems)


def test_mutation_olmo_mitchell_ff_out_with_d_model_is_caught() -> None:
    good = recipes._REGISTRY["olmo.mitchell"].spec

    def wrong(role, part, s):  # ff_out scaled by d_model instead of its own in_features
        if role == "mlp_out":
            return TruncatedNormal(1 / math.sqrt(2 * s["d"] * (part.layer + 1)), lower=-3.0, upper=3.0)
        return good(role, part, s)

    problems = problems_of("olmo.mitchell", 5, mutated_recipe("olmo.mitchell", wrong))
    assert problems and all(".ff_out." in p for p in problems), problems


# --- timm's ViT tree and init (timm/models/vision_transformer.py) -----------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 4, stride=4)


class TimmAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)


TimmAttention.__name__ = "Attention"  # timm's class name (this file already has torchtitan's Attention)


class Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)


class TimmBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TimmAttention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)


TimmBlock.__name__ = "Block"


def _xavier_or_moco(module, name):
    if "qkv" in name:
        val = math.sqrt(6.0 / float(module.weight.shape[0] // 3 + module.weight.shape[1]))
        nn.init.uniform_(module.weight, -val, val)
    else:
        nn.init.xavier_uniform_(module.weight)


class VisionTransformer(nn.Module):
    def __init__(self, depth, mode="", fix_init=False, num_classes=10, dim=D):
        super().__init__()
        self.num_classes, self.fix_init = num_classes, fix_init
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 65, dim))
        self.blocks = nn.Sequential(*[TimmBlock(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.init_weights(mode)

    def init_weights(self, mode):
        head_bias = -math.log(self.num_classes) if "nlhb" in mode else 0.0
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for name, module in self.named_modules():  # named_apply visits children first; each leaf once
            if isinstance(module, nn.Linear):
                if mode.startswith("jax"):
                    if name.startswith("head"):
                        nn.init.zeros_(module.weight)
                        nn.init.constant_(module.bias, head_bias)
                    else:
                        nn.init.xavier_uniform_(module.weight)
                        nn.init.normal_(module.bias, std=1e-6) if "mlp" in name else nn.init.zeros_(module.bias)
                elif mode == "moco":
                    _xavier_or_moco(module, name)
                    nn.init.zeros_(module.bias)
                else:
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d) and mode.startswith("jax"):
                fan_in = module.weight[0].numel()
                nn.init.trunc_normal_(
                    module.weight,
                    std=math.sqrt(1 / fan_in) / 0.87962566103423978,
                    a=-2 * math.sqrt(1 / fan_in) / 0.87962566103423978,
                    b=2 * math.sqrt(1 / fan_in) / 0.87962566103423978,
                )
                nn.init.zeros_(module.bias)
        if self.fix_init:
            with torch.no_grad():
                for layer_id, layer in enumerate(self.blocks):
                    scale = math.sqrt(2.0 * (layer_id + 1))
                    layer.attn.proj.weight.div_(scale)
                    layer.mlp.fc2.weight.div_(scale)


def timm_std(mode: str, fix: bool):
    """timm's std per parameter, as the drawn values' std (None: a constant)."""

    def std(name: str, L: int) -> float | None:
        leaf = name.split(".")[-1]
        if name.startswith("norm") or ".norm" in name:
            return None
        if name == "pos_embed":
            return 0.02
        if name == "cls_token":
            return 1e-6
        if name.startswith("patch_embed"):
            fan_in = 3 * 16
            if mode.startswith("jax"):
                return None if leaf == "bias" else math.sqrt(1 / fan_in)
            return math.sqrt(1 / 3 / fan_in)  # U(±1/√fan_in): std 1/√(3·fan_in), the bias too
        if leaf == "bias":
            if mode.startswith("jax") and ".mlp." in name:
                return 1e-6
            return None
        if name.startswith("head") and mode.startswith("jax"):
            return None
        shapes = {"qkv": (3 * D, D), "proj": (D, D), "fc1": (4 * D, D), "fc2": (D, 4 * D), "head": (10, D)}
        out, inp = shapes[name.split(".")[-2]]
        scale = 1.0
        if fix and name.split(".")[-2] in ("proj", "fc2"):
            scale = 1 / math.sqrt(2.0 * (int(name.split(".")[1]) + 1))
        if mode == "":
            return 0.02 * scale
        if mode == "moco" and "qkv" in name:
            return math.sqrt(6.0 / (out // 3 + inp)) / math.sqrt(3) * scale
        return math.sqrt(2.0 / (out + inp)) * scale

    return std


@pytest.mark.parametrize("fix", [False, True])
@pytest.mark.parametrize("mode", ["", "jax", "moco"])
@pytest.mark.parametrize("depth", [2, 5])
def test_timm_vit_matches_its_source(mode: str, fix: bool, depth: int) -> None:
    CASES[f"timm.vit:{mode}:{fix}"] = (lambda L: VisionTransformer(L, mode, fix), timm_std(mode, fix), True)
    recipe = recipes.get("timm.vit", mode=mode, fix_init=fix)
    problems = problems_of(f"timm.vit:{mode}:{fix}", depth, recipe)
    assert not problems, "\n".join(problems)


def test_mutation_timm_fix_init_ignored_is_caught() -> None:
    CASES["timm.vit::True"] = (lambda L: VisionTransformer(L, "", True), timm_std("", True), True)
    problems = problems_of("timm.vit::True", 5, recipes.get("timm.vit", fix_init=False))
    assert problems and all(".proj." in p or ".fc2." in p for p in problems), problems


# --- Fixup's ResNet (hongyi-zhang/Fixup imagenet/models/fixup_resnet_imagenet.py), small widths ------


def conv3x3(i, o, stride=1):
    return nn.Conv2d(i, o, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(i, o, stride=1):
    return nn.Conv2d(i, o, kernel_size=1, stride=stride, bias=False)


class FixupBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.conv2 = conv3x3(planes, planes)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias2b = nn.Parameter(torch.zeros(1))
        self.downsample = downsample


class FixupBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bias1a = nn.Parameter(torch.zeros(1))
        self.conv1 = conv1x1(inplanes, planes)
        self.bias1b = nn.Parameter(torch.zeros(1))
        self.bias2a = nn.Parameter(torch.zeros(1))
        self.conv2 = conv3x3(planes, planes, stride)
        self.bias2b = nn.Parameter(torch.zeros(1))
        self.bias3a = nn.Parameter(torch.zeros(1))
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias3b = nn.Parameter(torch.zeros(1))
        self.downsample = downsample


class FixupResNet(nn.Module):
    def __init__(self, block, layers, num_classes=10, width=16):
        super().__init__()
        self.num_layers = sum(layers)
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1))
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(2 * width * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, FixupBasicBlock):
                nn.init.normal_(
                    m.conv1.weight,
                    mean=0,
                    std=math.sqrt(2 / (m.conv1.weight.shape[0] * math.prod(m.conv1.weight.shape[2:])))
                    * self.num_layers ** (-0.5),
                )
                nn.init.constant_(m.conv2.weight, 0)
                if m.downsample is not None:
                    nn.init.normal_(
                        m.downsample.weight,
                        mean=0,
                        std=math.sqrt(2 / (m.downsample.weight.shape[0] * math.prod(m.downsample.weight.shape[2:]))),
                    )
            elif isinstance(m, FixupBottleneck):
                nn.init.normal_(
                    m.conv1.weight,
                    mean=0,
                    std=math.sqrt(2 / (m.conv1.weight.shape[0] * math.prod(m.conv1.weight.shape[2:])))
                    * self.num_layers ** (-0.25),
                )
                nn.init.normal_(
                    m.conv2.weight,
                    mean=0,
                    std=math.sqrt(2 / (m.conv2.weight.shape[0] * math.prod(m.conv2.weight.shape[2:])))
                    * self.num_layers ** (-0.25),
                )
                nn.init.constant_(m.conv3.weight, 0)
                if m.downsample is not None:
                    nn.init.normal_(
                        m.downsample.weight,
                        mean=0,
                        std=math.sqrt(2 / (m.downsample.weight.shape[0] * math.prod(m.downsample.weight.shape[2:]))),
                    )
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.weight, 0)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = conv1x1(self.inplanes, planes * block.expansion, stride)
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def fixup_problems(bottleneck: bool, layers, recipe=None) -> list[str]:
    block = FixupBottleneck if bottleneck else FixupBasicBlock
    torch.manual_seed(3)
    model = FixupResNet(block, list(layers))
    theirs = {n: p.detach().clone().double() for n, p in model.named_parameters()}
    report = initscale.torch.reinit_(model, recipe or recipes.get("fixup"), generator=torch.Generator().manual_seed(4))
    L = sum(layers)
    problems = []
    for name, p in model.named_parameters():
        row, x = report[name], p.detach().double()
        leaf = name.split(".")[-1]
        last = "conv3.weight" if bottleneck else "conv2.weight"
        if name.startswith("fc") or leaf.startswith("bias") or name.endswith(last) or leaf == "scale":
            want = 1.0 if leaf == "scale" else 0.0
            if not (x == want).all() or not (theirs[name] == want).all():
                problems.append(f"{name}: not all {want}")
            continue
        shape = tuple(p.shape)
        fan_out, fan_in = shape[0] * math.prod(shape[2:]), math.prod(shape[1:])
        if name == "conv1.weight":
            want = 1 / math.sqrt(3 * fan_in)  # U(±1/√fan_in)
        elif "downsample" in name:
            want = math.sqrt(2 / fan_out)
        else:
            want = math.sqrt(2 / fan_out) * L ** (-0.25 if bottleneck else -0.5)
        if abs(row.std - want) > 1e-12 * want:
            problems.append(f"{name}: recipe std {row.std:.6g}, source {want:.6g} ({row.reason})")
            continue
        p_ks = stats.ks_2samp(theirs[name].flatten().numpy(), x.flatten().numpy()).pvalue
        if p_ks < ALPHA / 40:  # at most 40 random tensors here: Bonferroni
            problems.append(f"{name}: KS against Fixup's own init p = {p_ks:.3g}")
    role = "branch_bottleneck" if bottleneck else "branch_basic"
    if not report["layer1.0.conv1.weight"].reason.startswith(f"recipe fixup: {role}"):
        problems.append(f"layer1.0.conv1.weight: {report['layer1.0.conv1.weight'].reason}")
    return problems


@pytest.mark.parametrize("layers", [(1, 1), (3, 2)])
@pytest.mark.parametrize("bottleneck", [False, True])
def test_fixup_matches_its_source(bottleneck: bool, layers) -> None:
    problems = fixup_problems(bottleneck, layers)
    assert not problems, "\n".join(problems)


def test_mutation_fixup_depth_exponent_is_caught() -> None:
    good = recipes._REGISTRY["fixup"].spec

    def wrong(role, part, s):  # L^-1/2 on a bottleneck's convs too (m = 2 instead of 3)
        return good("branch_basic" if role == "branch_bottleneck" else role, part, s)

    problems = fixup_problems(True, (3, 2), mutated_recipe("fixup", wrong))
    assert problems and all("conv1" in p or "conv2" in p for p in problems), problems


# --- DeepNet (arXiv:2203.00555, Figure 2 and Table 1) on HF Llama (decoder-only) and T5 (encoder-decoder) --


def _hf():
    transformers = pytest.importorskip("transformers")
    if "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        pytest.skip("TensorFlow is loaded and Triton (imported by HF models) would abort after it")
    return transformers


def deepnet_problems(kind: str, depth: tuple[int, int], recipe=None) -> list[str]:
    transformers = _hf()
    torch.manual_seed(5)
    N, M = depth
    if kind == "decoder":
        model = transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                hidden_size=D,
                num_hidden_layers=M,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=128,
                vocab_size=96,
                tie_word_embeddings=False,
            )
        )
        betas = {"decoder": (8 * M) ** -0.25}
    else:
        model = transformers.T5ForConditionalGeneration(
            transformers.T5Config(
                d_model=D,
                d_kv=16,
                d_ff=128,
                num_layers=N,
                num_decoder_layers=M,
                num_heads=4,
                vocab_size=96,
                relative_attention_num_buckets=8,
            )
        )
        betas = {"encoder": 0.87 * (N**4 * M) ** (-1 / 16), "decoder": (12 * M) ** -0.25}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = initscale.torch.reinit_(
        model, recipe or recipes.get("deepnet"), generator=torch.Generator().manual_seed(6)
    )
    out = []
    names = [n for n, p in model.named_parameters() if p.dim() == 2]
    z = NormalDist().inv_cdf(1 - ALPHA / len(names) / 2)
    for name, p in model.named_parameters():
        row, leaf_owner = report[name], name.split(".")[-2]
        if p.dim() == 1:  # norms
            if not (p == 1).all():
                out.append(f"{name}: norm weight not 1")
            continue
        if "embed" in name or "shared" in name or "lm_head" in name or "relative_attention_bias" in name:
            if not torch.equal(p.detach(), before[name]):
                out.append(f"{name}: DeepNet does not set it, but it changed ({row.reason})")
            continue
        gain = (
            1.0
            if leaf_owner in ("q_proj", "k_proj", "q", "k")
            else betas["encoder" if name.startswith("encoder.") else "decoder"]
        )
        fan_out, fan_in = p.shape
        want = gain * math.sqrt(2 / (fan_in + fan_out))  # xavier_normal_(w, gain)
        if abs(row.std - want) > 1e-12 * want:
            out.append(f"{name}: recipe std {row.std:.6g}, paper {want:.6g}")
            continue
        ratio = float(p.detach().double().pow(2).mean().sqrt()) / want
        tol = z * math.sqrt(1 / (2 * p.numel()))  # std's relative sd for normal draws, kappa = 3
        if abs(ratio - 1) > tol:
            out.append(f"{name}: drawn std / expected {ratio:.4f} beyond 1 ± {tol:.4f}")
    return out


@pytest.mark.parametrize(
    ("kind", "depth"),
    [("decoder", (0, 2)), ("decoder", (0, 6)), ("encoder_decoder", (1, 2)), ("encoder_decoder", (3, 2))],
)
def test_deepnet_matches_the_paper(kind: str, depth) -> None:
    problems = deepnet_problems(kind, depth)
    assert not problems, "\n".join(problems)


def test_mutation_deepnet_beta_from_the_alpha_formula_is_caught() -> None:
    good = recipes._REGISTRY["deepnet"].spec

    def wrong(role, part, s):
        if role in ("attn_v", "attn_out", "mlp_in", "mlp_gate", "mlp_out"):
            return initscale.VarianceScaling(1 / math.sqrt(2 * s["alpha"]["decoder"] ** 4), "fan_avg", "normal")
        return good(role, part, s)

    problems = deepnet_problems("decoder", (0, 6), mutated_recipe("deepnet", wrong))
    assert problems and not any("q_proj" in p or "k_proj" in p for p in problems), problems


def test_deepnet_refuses_packed_qkv() -> None:
    with pytest.raises(ValueError, match=r"deepnet: 'transformer.h.0.attn.c_attn.weight' packs Q, K and V"):
        recipes.get("deepnet").rules_for(GPT(GPTConfig(2)))


# --- T-Fixup's fairseq tree (layer6ai-labs/T-Fixup, --Tfixup), transcribed at small widths -----------


class MultiheadAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.k_proj, self.v_proj, self.q_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.k_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.v_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.q_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.constant_(self.out_proj.bias, 0.0)


def fairseq_linear(i, o):
    m = nn.Linear(i, o)
    nn.init.xavier_uniform_(m.weight)
    nn.init.constant_(m.bias, 0.0)
    return m


class TransformerEncoderLayer(nn.Module):
    def __init__(self, d, N):
        super().__init__()
        self.self_attn = MultiheadAttention(d)
        self.fc1, self.fc2 = fairseq_linear(d, 2 * d), fairseq_linear(2 * d, d)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name in ["fc1.weight", "fc2.weight", "self_attn.out_proj.weight"]:
                    param.mul_(0.67 * N ** (-1.0 / 4.0))
                elif name in ["self_attn.v_proj.weight"]:
                    param.mul_(0.67 * N ** (-1.0 / 4.0) * 2**0.5)


class TransformerDecoderLayer(nn.Module):
    def __init__(self, d, M):
        super().__init__()
        self.self_attn = MultiheadAttention(d)
        self.encoder_attn = MultiheadAttention(d)
        self.fc1, self.fc2 = fairseq_linear(d, 2 * d), fairseq_linear(2 * d, d)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name in ["fc1.weight", "fc2.weight", "self_attn.out_proj.weight", "encoder_attn.out_proj.weight"]:
                    param.mul_((9 * M) ** (-1.0 / 4.0))
                elif name in ["self_attn.v_proj.weight", "encoder_attn.v_proj.weight"]:
                    param.mul_((9 * M) ** (-1.0 / 4.0) * 2**0.5)


def fairseq_embedding(n, d, padding_idx):
    m = nn.Embedding(n, d, padding_idx=padding_idx)
    nn.init.normal_(m.weight, mean=0, std=d**-0.5)
    nn.init.constant_(m.weight[padding_idx], 0)
    return m


class TransformerEncoder(nn.Module):
    def __init__(self, d, N):
        super().__init__()
        self.embed_tokens = fairseq_embedding(96, d, 1)
        with torch.no_grad():
            self.embed_tokens.weight.mul_((9 * N) ** (-1 / 4))
        self.layers = nn.ModuleList([TransformerEncoderLayer(d, N) for _ in range(N)])


class TransformerDecoder(nn.Module):
    def __init__(self, d, M):
        super().__init__()
        self.embed_tokens = fairseq_embedding(96, d, 1)
        with torch.no_grad():
            self.embed_tokens.weight.mul_((9 * M) ** (-1 / 4))
        self.layers = nn.ModuleList([TransformerDecoderLayer(d, M) for _ in range(M)])
        self.embed_out = nn.Parameter(torch.empty(96, d))
        nn.init.normal_(self.embed_out, mean=0, std=d**-0.5)


class FairseqTransformer(nn.Module):
    def __init__(self, N, M, d=D):
        super().__init__()
        self.encoder, self.decoder = TransformerEncoder(d, N), TransformerDecoder(d, M)


def tfixup_problems(depth, recipe=None) -> list[str]:
    N, M = depth
    torch.manual_seed(8)
    model = FairseqTransformer(N, M)
    theirs = {n: p.detach().clone().double() for n, p in model.named_parameters()}
    report = initscale.torch.reinit_(
        model, recipe or recipes.get("t_fixup"), generator=torch.Generator().manual_seed(9)
    )
    out = []
    params = dict(model.named_parameters())
    level = ALPHA / (2 * len(params))
    z = NormalDist().inv_cdf(1 - level / 2)
    for name, p in params.items():
        row, x = report[name], p.detach().double()
        leaf, owner = name.split(".")[-1], name.split(".")[-2]
        decoder = name.startswith("decoder.")
        factor = (9 * M) ** -0.25 if decoder else 0.67 * N**-0.25
        if leaf == "bias" and owner in ("out_proj", "fc1", "fc2"):
            if not (x == 0).all():
                out.append(f"{name}: not 0")
            continue
        if leaf == "bias":  # nn.Linear's own: U(±1/√fan_in), std 1/√(3·fan_in)
            want, kurtosis = 1 / math.sqrt(3 * D), 1.8
        elif owner == "embed_tokens":
            x = torch.cat([x[:1], x[2:]])  # the padding row (1) stays zero
            theirs[name] = torch.cat([theirs[name][:1], theirs[name][2:]])
            want, kurtosis = D**-0.5 * (9 * (M if decoder else N)) ** -0.25, 3.0
        elif leaf == "embed_out":
            want, kurtosis = D**-0.5, 3.0
        else:
            fan_out, fan_in = p.shape
            gain = 1 / math.sqrt(2) if owner in ("q_proj", "k_proj") else factor
            want, kurtosis = gain * math.sqrt(2 / (fan_in + fan_out)), 1.8  # xavier_uniform_: U(±gain·√(6/(i+o)))
        if abs(row.std - want) > 1e-12 * want:
            out.append(f"{name}: recipe std {row.std:.6g}, source {want:.6g} ({row.reason})")
            continue
        ratio = float(x.pow(2).mean().sqrt()) / want
        tol = z * math.sqrt((kurtosis - 1) / (4 * x.numel()))  # std's relative sd: sqrt((kappa-1)/(4n))
        if abs(ratio - 1) > tol:
            out.append(f"{name}: drawn std / expected {ratio:.4f} beyond 1 ± {tol:.4f}")
        p_ks = stats.ks_2samp(theirs[name].flatten().numpy(), x.flatten().numpy()).pvalue
        if p_ks < level:
            out.append(f"{name}: KS against T-Fixup's own init p = {p_ks:.3g} < {level:.3g}")
    return out


@pytest.mark.parametrize("depth", [(1, 2), (3, 4)])
def test_t_fixup_matches_its_source(depth) -> None:
    problems = tfixup_problems(depth)
    assert not problems, "\n".join(problems)


def test_mutation_t_fixup_encoder_factor_is_caught() -> None:
    good = recipes._REGISTRY["t_fixup"].spec

    def wrong(role, part, s):  # the decoder's (9M)^-1/4 everywhere
        spec = good(role, part, s)
        if role in ("attn_v", "attn_out", "mlp_in", "mlp_out") and part.name.startswith("encoder."):
            return initscale.VarianceScaling((9 * s["M"]) ** -0.5, "fan_avg", "uniform")
        return spec

    problems = tfixup_problems((3, 4), mutated_recipe("t_fixup", wrong))
    assert problems and all(p.startswith("encoder.") for p in problems), problems


# --- check(model, recipe=...) on models fresh from their own init code -----------------------------

OWN_INIT = {
    "nanogpt": lambda: GPT(GPTConfig(3)),
    "torchtitan.llama": lambda: Transformer(TransformerModelArgs(3)),
    "olmo.mitchell": lambda: OLMo(ModelConfig(3)),
    "olmo.full_megatron": lambda: OLMo(ModelConfig(3, init_fn="full_megatron")),
    "fixup": lambda: FixupResNet(FixupBottleneck, [2, 1]),
    "t_fixup": lambda: FairseqTransformer(2, 3),
}


@pytest.mark.parametrize("name", sorted(OWN_INIT))
def test_check_with_recipe_passes_a_model_fresh_from_its_own_init(name: str) -> None:
    torch.manual_seed(12)
    report = initscale.torch.check(OWN_INIT[name](), recipe=name)
    assert report, str(report)


def test_check_with_recipe_flags_a_planted_depth_bug() -> None:
    torch.manual_seed(12)
    model = Transformer(TransformerModelArgs(3))
    with torch.no_grad():  # layer 2's wo left at 0.02 (depth scaling lost)
        nn.init.trunc_normal_(model.layers["2"].attention.wo.weight, std=0.02)
    assert initscale.torch.check(model, recipe="torchtitan.llama").flags == {
        "layers.2.attention.wo.weight": ("std_off",)
    }


def test_every_recipe_says_its_formulas_and_source() -> None:
    for name in recipes.names():
        text = recipes.get(name).describe()
        assert text.startswith(f"{name}: ") and "\nsource: " in text, name
        source = text.split("\nsource: ")[1]
        assert "commit" in source or "arXiv" in source or "transformers 5.24.0" in source, (name, source)


def test_model_rules_hook_passes_rules_through_and_resolves_recipes() -> None:
    import doctest

    from initscale.reinit import model_rules

    spec, mapping = initscale.Normal(0.02), {"*.bias": initscale.Zeros()}
    assert model_rules(spec, object()) is spec and model_rules(mapping, object()) is mapping
    model = GPT(GPTConfig(2))
    resolved = model_rules(recipes.get("nanogpt"), model)
    assert resolved["transformer.h.*.attn.c_proj.weight"].spec == initscale.Normal(0.02 / 2)
    with pytest.raises(TypeError, match="reads roles from a torch module tree"):  # a JAX/Keras model: say so
        model_rules(recipes.get("nanogpt"), {"params": {}})
    assert doctest.testmod(recipes).failed == 0
