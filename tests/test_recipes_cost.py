"""A recipe costs no more than the same plain rules (issue 20 item 5), without stale results.

``reinit_`` resolves a recipe on the walk it already made (no second walk), and
``Recipe.rules_for(model, params)`` keeps its result for the next call on the same model under a
key of everything the result is computed from. These tests pin the second half: a repeated call
does not resolve again, and a call on a model changed in any way the result depends on (its
config, a swapped layer, a new tie, the recipe's own settings) resolves again and gets the new
rules. The timing itself is benchmarks/recipes.py (not a test: the machine is shared).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import initscale  # noqa: E402
from initscale import recipes, reinit  # noqa: E402
from initscale.adapters import torch as ist  # noqa: E402


def _gpt2(n_layer: int = 2):
    cfg = transformers.GPT2Config(
        n_embd=32, n_layer=n_layer, n_head=4, n_positions=16, vocab_size=64, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


def _walk(model):
    return [p for p, _ in ist._walk(model, True, False)]


@pytest.fixture
def resolutions(monkeypatch):
    """Counts the real resolutions (cache misses) of Recipe.rules_for."""
    calls = []
    real = recipes.Recipe._rules_for

    def counted(self, model, params):
        calls.append(self.name)
        return real(self, model, params)

    monkeypatch.setattr(recipes.Recipe, "_rules_for", counted)
    return calls


def test_reinit_resolves_a_recipe_once_per_model_state(resolutions) -> None:
    model, recipe = _gpt2(), recipes.get("hf.gpt2")
    gen = torch.Generator().manual_seed(0)
    first = initscale.torch.reinit_(model, recipe, generator=gen)
    second = initscale.torch.reinit_(model, recipe, generator=gen)
    assert resolutions == ["hf.gpt2"]  # the second call found the first's resolution
    assert [(r.name, r.spec, r.reason) for r in first] == [(r.name, r.spec, r.reason) for r in second]


def _config_change_problems() -> list[str]:
    model, recipe = _gpt2(), recipes.get("hf.gpt2")
    before = recipe.rules_for(model, _walk(model))["transformer.h.*.mlp.c_fc.weight"].spec
    model.config.initializer_range = 0.05
    after = recipe.rules_for(model, _walk(model))["transformer.h.*.mlp.c_fc.weight"].spec
    return [
        f"{name}: {got!r}, expected {want!r}"
        for name, got, want in (("before", before, initscale.Normal(0.02)), ("after", after, initscale.Normal(0.05)))
        if got != want
    ]


def test_a_changed_config_resolves_again(resolutions) -> None:
    assert _config_change_problems() == []
    assert len(resolutions) == 2


def test_a_swapped_layer_resolves_again(resolutions) -> None:
    model, recipe = _gpt2(), recipes.get("hf.gpt2")
    before = recipe.rules_for(model, _walk(model))
    model.transformer.ln_f = torch.nn.RMSNorm(32, elementwise_affine=False)  # no parameters now
    after = recipe.rules_for(model, _walk(model))
    assert len(resolutions) == 2
    assert "transformer.ln_f.weight" in before and "transformer.ln_f.weight" not in after


def test_untying_resolves_again(resolutions) -> None:
    model, recipe = _gpt2(), recipes.get("hf.gpt2")
    tied = recipe.rules_for(model, _walk(model))
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untied now
    untied = recipe.rules_for(model, _walk(model))
    assert len(resolutions) == 2
    assert "lm_head.weight" not in tied and untied["lm_head.weight"].label == "recipe hf.gpt2: lm_head"


def test_the_recipe_settings_are_part_of_the_key(resolutions) -> None:
    model = _gpt2(2)
    params = _walk(model)
    a = recipes.get("megatron").rules_for(model, params)
    b = recipes.get("megatron", std=0.01).rules_for(model, params)
    c = recipes.get("nanogpt").rules_for(model, params)
    assert resolutions == ["megatron", "megatron", "nanogpt"]
    assert a["transformer.h.*.mlp.c_fc.weight"].spec == initscale.Normal(0.02)
    assert b["transformer.h.*.mlp.c_fc.weight"].spec == initscale.Normal(0.01)
    assert c["transformer.h.*.attn.c_proj.weight"].spec == initscale.Normal(0.02 / math.sqrt(4))


def test_without_the_walk_nothing_is_kept(resolutions) -> None:
    model, recipe = _gpt2(), recipes.get("hf.gpt2")
    recipe.rules_for(model)
    recipe.rules_for(model)
    assert len(resolutions) == 2


def test_the_kept_rules_are_a_copy() -> None:
    model, recipe = _gpt2(), recipes.get("hf.gpt2")
    params = _walk(model)
    first = recipe.rules_for(model, params)
    first.clear()  # a caller that edits its rules does not edit the kept ones
    assert recipe.rules_for(model, params)


def test_mutation_a_key_without_the_settings_goes_stale(monkeypatch) -> None:
    real = recipes.Recipe._cache_key

    def no_settings(self, model, params):  # the planted bug: the model's config left out of the key
        key = real(self, model, params)
        return None if key is None else key[:2] + key[3:]

    monkeypatch.setattr(recipes.Recipe, "_cache_key", no_settings)
    assert _config_change_problems() == ["after: Normal(std=0.02, mean=0.0), expected Normal(std=0.05, mean=0.0)"]


def test_nothing_is_kept_past_its_model() -> None:
    import gc
    import weakref

    model = _gpt2()
    recipes.get("hf.gpt2").rules_for(model, _walk(model))
    ref = weakref.ref(model)
    assert ref() in recipes._RESOLVED
    del model
    gc.collect()
    assert ref() is None  # the kept resolution did not keep the model alive


def test_settings_holding_objects_are_not_kept() -> None:
    assert recipes._frozen({"L": 2, "beta": {"decoder": 0.5}, "encoder": {1, 2}}) == (
        ("L", 2),
        ("beta", (("decoder", 0.5),)),
        ("encoder", frozenset({1, 2})),
    )
    with pytest.raises(TypeError, match="not kept"):  # t_fixup's settings hold the model: no cache for it
        recipes._frozen({"model": torch.nn.Linear(2, 2)})


# --- the cost itself: what a repeated reinit_ with a recipe does again, and the same weights ------------


def _plain(n_layer: int) -> dict[str, initscale.Spec | None]:
    """benchmarks/recipes.py's "plain rules", hf.gpt2 written by hand: read from there, so the test
    below shows that the benchmark compares the recipe with rules that draw the same weights."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "recipes.py"
    spec = importlib.util.spec_from_file_location("_benchmark_recipes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._plain(n_layer)


def test_a_recipe_and_the_same_plain_rules_draw_the_same_weights() -> None:
    model, recipe = _gpt2(3), recipes.get("hf.gpt2")
    cases = {
        "recipe": recipe,
        "recipe, kept": recipe,  # the second call: the kept, compiled resolution
        "plain rules": _plain(3),
        "resolved rules": recipe.rules_for(model),
    }
    weights = {}
    for case, rules in cases.items():
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))  # a parameter the case leaves alone stays NaN and compares unequal
        initscale.torch.reinit_(model, rules, generator=torch.Generator().manual_seed(5))
        weights[case] = {k: v.clone() for k, v in model.state_dict().items()}
    first = weights["recipe"]
    assert not any(torch.isnan(v).any() for v in first.values())
    assert [
        (case, k) for case, got in weights.items() for k in first if not torch.equal(got[k], first[k])
    ] == []  # bit for bit


def test_a_repeated_reinit_neither_compiles_nor_tries_its_recipe_again(monkeypatch) -> None:
    model, recipe = _gpt2(), recipes.get("hf.gpt2")
    initscale.torch.reinit_(model, recipe, generator=torch.Generator().manual_seed(0))
    counts = {"compiled": 0, "tried": 0, "compared": 0}
    real_pattern, real_matches, real_eq = reinit._check_pattern, reinit.CompiledRule.matches, reinit.Param.__eq__

    def pattern(p):
        counts["compiled"] += 1
        return real_pattern(p)

    def matches(self, param):
        counts["tried"] += 1
        return real_matches(self, param)

    def eq(self, other):
        counts["compared"] += 1
        return real_eq(self, other)

    monkeypatch.setattr(reinit, "_check_pattern", pattern)
    monkeypatch.setattr(reinit.CompiledRule, "matches", matches)
    monkeypatch.setattr(reinit.Param, "__eq__", eq)
    report = initscale.torch.reinit_(model, recipe, generator=torch.Generator().manual_seed(0))
    # before: 16 patterns validated again, ~7 rules tried per parameter, the kept walk compared Param by Param
    assert counts == {"compiled": 0, "tried": 0, "compared": 0}
    assert len(report.touched) == len(report) == 2 + 2 * 12 + 2 + 1  # wte, wpe, 12 a block, ln_f, the tied LM head
    counts.update(compiled=0, tried=0)
    initscale.torch.reinit_(model, _plain(2), generator=torch.Generator().manual_seed(0))
    assert counts["compiled"] == 5 and counts["tried"] > 0  # plain rules: compiled and tried each call, as before


# Names in torch's and Keras's styles, buffers among them, and globs that overlap, so the first
# match is not the only one: the kept rules must find the same first match as the loop over every rule.
_NAMES = [
    "h.0.attn.c_attn.weight",
    "h.0.attn.c_attn.bias",
    "h.1.attn.c_proj.weight",
    "h.12.mlp.c_fc.weight",
    "h.2.ln_1.weight",
    "wte.weight",
    "lm_head.weight",
    "enc/block_0/dense/kernel",
    "enc/block_1/dense/bias",
    "bn.running_mean",
    "bias",
]
_PATTERNS = [
    "*",
    "*.weight",
    "*.bias",
    "h.*.weight",
    "h.1*",
    "h.?.attn.*",
    "h.[0-2].*",
    "[!h]*",
    "*ln_*.weight",
    "*/kernel",
    "enc/*",
    "*running*",
    "wte.weight",
    "h.0.attn.c_attn.bias",
    "b?as",
]


def _params() -> list[reinit.Param]:
    out = []
    for name in _NAMES:
        buffer = "running" in name
        role = "other" if buffer else ("bias" if name.endswith("bias") else "weight")
        out.append(reinit.Param(name, (4,) if role != "weight" else (4, 3), ("Linear",), role, None, buffer=buffer))
    tied = reinit.Param("lm_head.weight", (4, 3), ("Linear",), "weight", None, tied_to="wte.weight")
    return [tied if p.name == "lm_head.weight" else p for p in out]


def _kept_against_loop_problems(trials: int = 120) -> list[str]:
    import random

    rng, params, problems = random.Random(20), _params(), []
    for trial in range(trials):
        chosen = rng.sample(_PATTERNS, rng.randint(1, 8))
        rules = {p: initscale.Rule(initscale.Normal(0.01 * (i + 1)), label=f"r{i}") for i, p in enumerate(chosen)}
        kept = reinit._KeptRules(rules)
        want = _outcome(params, rules)
        for attempt in ("first", "kept"):  # the first plan fills what the kept rules remember, the second reads it
            got = _outcome(params, kept)
            if got != want:
                problems.append(f"trial {trial} {chosen} ({attempt}): {got} != {want}")
    return problems


def _outcome(params, rules) -> object:
    """Each row's name, spec and reason, or the error (two rules that disagree on the tied tensor)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # patterns that match nothing, or only what an earlier one takes
        try:
            return [(r.name, r.spec, r.reason) for r in reinit.plan(params, rules).report]
        except ValueError as err:
            return str(err)


def test_kept_rules_find_the_first_match_as_the_loop_does() -> None:
    assert _kept_against_loop_problems() == []


def test_mutation_kept_rules_taking_the_last_match_are_caught(monkeypatch) -> None:
    def last(self, name):  # the planted bug: the last matching rule, not the first
        hits = [r for r in self.compiled() if r._glob(name) is not None]
        return hits[-1] if hits else None

    monkeypatch.setattr(reinit._KeptRules, "first", last)
    assert _kept_against_loop_problems()


def test_kept_rules_with_a_class_rule_match_by_the_loop() -> None:
    params = _params()
    rules = {"*.bias": initscale.Zeros(), "Linear": initscale.Normal(0.5)}
    kept = reinit._KeptRules(rules)
    assert _outcome(params, kept) == _outcome(params, rules) != []
    assert not kept.by_name  # a class rule matches by class: nothing is kept per name


def test_kept_rules_cannot_be_changed() -> None:
    kept = reinit._KeptRules({"*.bias": initscale.Zeros()})
    with pytest.raises(TypeError):
        kept["*.weight"] = initscale.Ones()  # type: ignore[index]
    assert dict(kept) == {"*.bias": initscale.Zeros()}
