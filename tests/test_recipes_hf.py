"""HF recipes against HF's own init (issue 20 items 1-3): for every HF family, a model built from a
small config runs transformers' ``_init_weights`` (``post_init``, global seed fixed) and then the
recipe (``reinit_``, its own generator); per tensor:

- the recipe's spec is a constant (biases, norm scales, offsets): HF's values and the recipe's are
  exactly that constant;
- otherwise a two-sample KS test between HF's values and the recipe's, and each sample's std
  about 0 within its sampling tolerance of the recipe's σ: for n iid normal values (kurtosis
  κ = 3) the sample second moment has relative sd √((κ−1)/n) = √(2/n), so the std has relative
  sd √((κ−1)/(4n)) = √(1/(2n)) (delta method); |s/σ − 1| ≤ z·√(1/(2n)).

Every check of one model shares the family-wise false-alarm rate ALPHA = 1e-4 (Bonferroni: each
of the T checks runs at ALPHA/T; z is the two-sided normal quantile of ALPHA/T). An embedding's
padding_idx row is compared exactly (zeros) and left out of the statistics.

Building an HF model imports Triton through torch._dynamo, and Triton imported after TensorFlow
aborts the process: where TensorFlow is loaded these tests skip (the real-model suite has the
same guard and runs itself in a fresh process).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import math
import sys
from statistics import NormalDist

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="the HF recipe tests need transformers")
stats = pytest.importorskip("scipy.stats")

from _hf_models import Sizes, config, tiny  # noqa: E402
from _recipes_common import mutated_recipe  # noqa: E402

import initscale  # noqa: E402
from initscale import recipes  # noqa: E402
from initscale.specs import Constant, Normal, Ones, Zeros  # noqa: E402

ALPHA = 1e-4
SIZES = Sizes(d=64, heads=4, ff=128, vocab=96, positions=32)


@pytest.fixture(autouse=True)
def _no_triton_after_tensorflow() -> None:
    if "tensorflow" in sys.modules and "triton" not in sys.modules and importlib.util.find_spec("triton") is not None:
        pytest.skip("TensorFlow is loaded and Triton (imported by HF models) would abort after it")


def _gpt2():
    return tiny("GPT2LMHeadModel", SIZES, 3, bos_token_id=0, eos_token_id=0)


def _bert():
    return tiny("BertForMaskedLM", SIZES, 2, pad_token_id=0)


def _llama():
    return tiny("LlamaForCausalLM", SIZES, 2, num_key_value_heads=2, tie_word_embeddings=False, pad_token_id=1)


def _t5(tied: bool = True):
    cfg = config("T5ForConditionalGeneration", SIZES, 2, relative_attention_num_buckets=8, initializer_factor=0.5)
    cfg.tie_word_embeddings = tied  # T5Config's own argument is overridden to True in 5.24; the attribute holds
    return transformers.T5ForConditionalGeneration(cfg)


def _vit():
    return tiny("ViTForImageClassification", SIZES, 2, image_size=32, patch_size=4, num_channels=3, num_labels=10)


MODELS = {
    "hf.gpt2": _gpt2,
    "hf.bert": _bert,
    "hf.llama": _llama,
    "hf.t5": _t5,
    "hf.t5-untied": lambda: _t5(tied=False),
    "hf.vit": _vit,
}


def _values(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().double() for n, p in model.named_parameters()}


def compare(recipe_name: str, build, recipe=None) -> list[str]:
    """Every difference between HF's init and the recipe's on one model (empty: they agree)."""
    torch.manual_seed(1234)
    model = build()
    hf = _values(model)
    recipe = recipe or recipes.get(recipe_name)
    planned = {f.name: (f, spec) for f, spec, _ in recipe.plan(model)}
    report = initscale.torch.reinit_(model, recipe, generator=torch.Generator().manual_seed(99))
    ours = _values(model)
    random = [n for n in hf if not isinstance(planned[n][1], (Zeros, Ones, Constant))]
    tests = 3 * len(random)
    level = ALPHA / tests
    z = NormalDist().inv_cdf(1 - level / 2)
    problems = []
    for name in hf:
        found, spec = planned[name]
        assert report[name].touched, f"{name}: {report[name].reason}"
        a, b = hf[name], ours[name]
        if found.padding_idx is not None:
            row = found.padding_idx
            if not (a[row] == 0).all() or not (b[row] == 0).all():
                problems.append(f"{name}: padding row {row} not zero")
            keep = torch.ones(a.shape[0], dtype=torch.bool)
            keep[row] = False
            a, b = a[keep], b[keep]
        if isinstance(spec, (Zeros, Ones, Constant)):
            value = {Zeros: 0.0, Ones: 1.0}.get(type(spec), getattr(spec, "value", None))
            for who, x in (("HF", a), ("recipe", b)):
                if not (x == value).all():
                    problems.append(f"{name}: {who} values not all {value} (range {x.min():.4g}..{x.max():.4g})")
            continue
        assert isinstance(spec, Normal), (name, spec)
        a, b = a.flatten().numpy(), b.flatten().numpy()
        n = a.size
        p = stats.ks_2samp(a, b).pvalue
        if p < level:
            problems.append(f"{name}: KS two-sample p = {p:.3g} < {level:.3g}")
        tol = z * math.sqrt(1 / (2 * n))  # std's relative sd for normal draws: sqrt((kappa-1)/(4n)), kappa = 3
        for who, x in (("HF", a), ("recipe", b)):
            ratio = math.sqrt(float((x**2).mean())) / spec.stddev
            if abs(ratio - 1) > tol:
                problems.append(
                    f"{name}: {who} std / recipe σ = {ratio:.4f}, beyond 1 ± {tol:.4f} (σ = {spec.stddev:.5g}, n = {n})"
                )
    return problems


@pytest.mark.parametrize("key", sorted(MODELS))
def test_recipe_matches_hf_init(key: str) -> None:
    problems = compare(key.split("-")[0], MODELS[key])
    assert not problems, "\n".join(problems)


def test_mutation_gpt2_without_residual_scaling_is_caught() -> None:
    # the bug of transformers#47458: c_proj left at N(0, r²) instead of r/sqrt(2 n_layer)
    bad = mutated_recipe("hf.gpt2", lambda role, part, s: recipes._generic_spec(role, part, s["std"]))
    problems = compare("hf.gpt2", _gpt2, bad)
    assert problems and all("c_proj" in p for p in problems), problems


def test_mutation_t5_query_std_is_caught() -> None:
    good = recipes._REGISTRY["hf.t5"].spec

    def wrong_q(role, part, s):
        return Normal(s["factor"] * s["d_model"] ** -0.5) if role == "attn_q" else good(role, part, s)

    problems = compare("hf.t5", _t5, mutated_recipe("hf.t5", wrong_q))
    assert problems and all(".q.weight" in p for p in problems), problems


def test_mutation_norm_not_one_is_caught() -> None:
    good = recipes._REGISTRY["hf.llama"].spec

    def half(role, part, s):  # the planted bug: norm scales at 0.5
        return Constant(0.5) if part.base == "norm_scale" else good(role, part, s)

    problems = compare("hf.llama", _llama, mutated_recipe("hf.llama", half))
    assert problems and all("norm" in p for p in problems), problems


# --- item 2: nothing silent ----------------------------------------------------------------------


def test_wrong_family_names_recipe_role_and_what_the_model_has() -> None:
    torch.manual_seed(0)
    with pytest.raises(
        ValueError,
        match=r"Recipe 'hf.gpt2': role\(s\) 'position_embedding', 'attn_qkv', "
        r"'residual_out', 'mlp_in' match no parameter of LlamaForCausalLM"
        r".*linear \(14\)",
    ):
        initscale.torch.reinit_(_llama(), recipes.get("hf.gpt2"))


def test_unknown_layer_is_an_error() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Bilinear(4, 4, 4))
    model.config = transformers.LlamaConfig()
    with pytest.raises(ValueError, match=r"(?s)gives no role to 2 parameter.*'1.weight'.*in Bilinear"):
        recipes.get("hf.llama").rules_for(model)


def test_not_a_torch_module_names_the_type() -> None:
    with pytest.raises(TypeError, match="reads roles from a torch module tree.*dict"):
        recipes.get("hf.gpt2").rules_for({"w": 1})


def test_tied_tensor_gets_one_value_under_the_source_role() -> None:
    torch.manual_seed(0)
    model = _gpt2()
    report = initscale.torch.reinit_(model, recipes.get("hf.gpt2"), generator=torch.Generator().manual_seed(0))
    assert model.lm_head.weight is model.transformer.wte.weight
    assert report["transformer.wte.weight"].reason.startswith(
        "recipe hf.gpt2: token_embedding (tied: 'lm_head.weight' follow it)"
    )
    assert report["lm_head.weight"].tied_to == "transformer.wte.weight"
    assert report["transformer.h.1.mlp.c_proj.weight"].reason.startswith("recipe hf.gpt2: residual_out")
    assert report["transformer.h.1.mlp.c_proj.weight"].std == pytest.approx(0.02 / math.sqrt(6))


def test_untied_t5_head_is_its_own_role() -> None:
    torch.manual_seed(0)
    rules = recipes.get("hf.t5").rules_for(_t5(tied=False))
    assert rules["lm_head.weight"].label == "recipe hf.t5: lm_head"
    assert rules["lm_head.weight"].spec == Normal(0.5)


def test_config_overrides_and_bad_settings() -> None:
    torch.manual_seed(0)
    rules = recipes.get("hf.gpt2", initializer_range=0.01).rules_for(_gpt2())
    assert rules["transformer.h.*.attn.c_attn.weight"].spec == Normal(0.01)
    with pytest.raises(
        ValueError,
        match=r"Recipe 'hf.gpt2' takes the settings 'initializer_range', 'n_layer'\. "
        r"Received: std=0.1",
    ):
        recipes.get("hf.gpt2", std=0.1)
    with pytest.raises(ValueError, match=r"Argument `name` must be one of .*'hf.bert'.*Received: name='gpt2'"):
        recipes.get("gpt2")


def test_globs_match_exactly_their_names() -> None:
    torch.manual_seed(0)
    model = _bert()
    rules = recipes.get("hf.bert").rules_for(model)
    names = [n for n, _ in model.named_parameters()]  # each tensor's first name: tied aliases follow it
    for name in names:
        hits = [p for p in rules if fnmatch.fnmatchcase(name, p)]
        assert len(hits) == 1, (name, hits)


# --- item 4: check(model, recipe=...) ------------------------------------------------------------


def test_check_with_recipe_passes_fresh_and_flags_a_bug() -> None:
    torch.manual_seed(3)
    model = _gpt2()  # HF's own init: what hf.gpt2 expects
    assert initscale.torch.check(model, recipe="hf.gpt2"), str(initscale.torch.check(model, recipe="hf.gpt2"))
    with torch.no_grad():
        model.transformer.h[1].attn.c_proj.weight.mul_(math.sqrt(6))  # the unscaled residual projection
    flags = initscale.torch.check(model, recipe="hf.gpt2").flags
    assert flags == {"transformer.h.1.attn.c_proj.weight": ("std_off",)}


def test_check_of_a_state_dict_with_a_recipe_says_what_to_do() -> None:
    torch.manual_seed(0)
    model = _gpt2()
    with pytest.raises(ValueError, match="module tree.*--config"):
        initscale.torch.check(model.state_dict(), recipe="hf.gpt2")
    assert initscale.torch.check(model.state_dict(), rules=recipes.get("hf.gpt2").rules_for(model))


def _cli(*args: str):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "initscale", "check", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_check_with_recipe_and_config(tmp_path) -> None:
    torch.manual_seed(5)
    model = _gpt2()
    model.save_pretrained(tmp_path / "good")
    done = _cli(str(tmp_path / "good" / "model.safetensors"), "--recipe", "hf.gpt2", "--config", str(tmp_path / "good"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with torch.no_grad():
        model.transformer.h[0].mlp.c_proj.weight.mul_(math.sqrt(6))  # residual scaling lost
    model.save_pretrained(tmp_path / "bad")
    done = _cli(
        str(tmp_path / "bad" / "model.safetensors"),
        "--recipe",
        "hf.gpt2",
        "--config",
        str(tmp_path / "bad"),
        "--format",
        "json",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(done.stdout)["rows"]}
    assert [f["name"] for f in rows["transformer.h.0.mlp.c_proj.weight"]["flags"]] == ["std_off"]
    assert not any(r["flags"] for n, r in rows.items() if n != "transformer.h.0.mlp.c_proj.weight")
    done = _cli(str(tmp_path / "good" / "model.safetensors"), "--recipe", "hf.gpt2")
    assert done.returncode != 0 and "needs --config" in done.stderr
