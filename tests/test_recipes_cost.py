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
from initscale import recipes  # noqa: E402
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
