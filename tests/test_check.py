"""initscale.check and its faces: fresh models give no flag, each planted init bug is flagged by name.

Models: HF GPT-2 and BERT built from tiny configs (transformers), a hand-built CNN; the CLI on a
safetensors file and a torch state dict. The chance flags' level is the family-wise α of
initscale.check (Bonferroni over a model's tests); the simulations at the end check that rate and
that the mutated checks (hand-tuned tolerance, no Bonferroni, NaN ignored, no chance bound) fail.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import initscale
from initscale import check as core
from initscale.check import Entry, Expected, check_arrays
from initscale.distributions import NormalDist, UniformDist

torch = pytest.importorskip("torch")
nn = torch.nn


def _quiet_transformers():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


def gpt2(n_layer: int = 2):
    transformers = _quiet_transformers()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=n_layer, n_embd=64, n_head=2, vocab_size=300, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def gpt2_rules(n_layer: int = 2):
    """HF GPT-2's _init_weights as rules: N(0, 0.02), residual projections 0.02/√(2·n_layer)."""
    return {
        "LayerNorm": initscale.Ones(),
        "*.c_proj.weight": initscale.Normal(0.02 / math.sqrt(2 * n_layer)),
        "*.weight": initscale.Normal(0.02),
    }


def bert():
    transformers = _quiet_transformers()
    torch.manual_seed(0)
    config = transformers.BertConfig(
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=32,
    )
    return transformers.BertModel(config)


BERT_RULES = {"LayerNorm": initscale.Ones(), "*.weight": initscale.Normal(0.02)}


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, groups=4)
        self.norm = nn.GroupNorm(8, 64)
        self.fc = nn.Linear(64 * 4, 10)


CNN_RULES = {"Conv2d": initscale.presets.get("he_normal"), "Linear": initscale.presets.get("glorot_uniform")}


def cnn():
    model = CNN()
    initscale.torch.reinit_(model, CNN_RULES, generator=torch.Generator().manual_seed(0))
    return model


# --- fresh models: nothing flagged ----------------------------------------------------------------


def test_fresh_gpt2_gives_no_flag_with_and_without_rules():
    model = gpt2()
    for report in (initscale.torch.check(model), initscale.torch.check(model, rules=gpt2_rules())):
        assert report.flags == {}, str(report)
        assert report.tied == (("transformer.wte.weight", "lm_head.weight"),)
    report = initscale.torch.check(model, rules=gpt2_rules())
    assert report["transformer.h.0.attn.c_proj.weight"].expected_std == pytest.approx(0.01)
    assert report["lm_head.weight"].name == "transformer.wte.weight"  # tied: one row, either name


def test_fresh_bert_gives_no_flag():
    model = bert()
    assert initscale.torch.check(model).flags == {}
    report = initscale.torch.check(model, rules=BERT_RULES)
    assert report.flags == {}, str(report)
    assert report["embeddings.LayerNorm.weight"].role == "norm_scale"


def test_fresh_cnn_gives_no_flag():
    model = cnn()
    report = initscale.torch.check(model, rules=CNN_RULES)
    assert report.flags == {}, str(report)
    assert report["conv2.weight"].expected_std == pytest.approx(math.sqrt(2 / (8 * 9)))  # per group: 32/4 · 9


# --- planted bugs: each flagged by name -----------------------------------------------------------


def _plant(tensor, bug: str) -> None:
    with torch.no_grad():
        if bug == "zeroed":
            tensor.zero_()
        elif bug == "nan":
            tensor.view(-1)[tensor.numel() // 2] = float("nan")
        elif bug == "3x":
            tensor.mul_(3.0)


GPT2_BUGS = [
    ("transformer.h.0.ln_1.weight", "zeroed", "norm_scale_not_one"),
    ("transformer.h.1.attn.c_attn.weight", "nan", "non_finite"),
    ("transformer.h.0.mlp.c_fc.weight", "3x", "std_off"),
    ("transformer.h.1.mlp.c_proj.weight", "zeroed", "all_zero"),
]


@pytest.mark.parametrize(("name", "bug", "flag"), GPT2_BUGS, ids=[f"{b}-{f}" for _, b, f in GPT2_BUGS])
def test_planted_bug_in_gpt2_is_flagged_by_name(name, bug, flag):
    model = gpt2()
    _plant(model.get_parameter(name), bug)
    report = initscale.torch.check(model, rules=gpt2_rules())
    assert set(report.flags) == {name}, str(report)
    assert flag in report.flags[name]
    assert not report
    assert f"FLAG {name}: {flag}" in str(report)


def test_unscaled_residual_projection_is_flagged():
    """transformers#47458: c_proj left at 0.02 instead of 0.02/√(2·n_layer)."""
    model = gpt2(n_layer=4)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_proj.weight.normal_(0.0, 0.02)
    flags = initscale.torch.check(model, rules=gpt2_rules(4)).flags
    assert flags == {f"transformer.h.{i}.attn.c_proj.weight": ("std_off",) for i in range(4)}


@pytest.mark.parametrize(
    ("name", "bug", "flag"),
    [
        ("encoder.layer.0.output.LayerNorm.weight", "zeroed", "norm_scale_not_one"),
        ("embeddings.position_embeddings.weight", "nan", "non_finite"),
        ("encoder.layer.0.intermediate.dense.weight", "3x", "std_off"),
    ],
)
def test_planted_bug_in_bert_is_flagged_by_name(name, bug, flag):
    model = bert()
    _plant(model.get_parameter(name), bug)
    flags = initscale.torch.check(model, rules=BERT_RULES).flags
    assert set(flags) == {name} and flag in flags[name]


def test_bert_padding_row_not_zero():
    model = bert()
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[0].normal_(0.0, 0.02)
    flags = initscale.torch.check(model).flags
    assert flags == {"embeddings.word_embeddings.weight": ("padding_row_not_zero",)}


@pytest.mark.parametrize(
    ("name", "bug", "flag"),
    [
        ("bn1.weight", "zeroed", "norm_scale_not_one"),
        ("norm.weight", "zeroed", "norm_scale_not_one"),
        ("conv1.weight", "nan", "non_finite"),
        ("conv2.weight", "3x", "std_off"),
        ("fc.weight", "3x", "out_of_bounds"),
        ("fc.bias", "nan", "not_constant"),
    ],
)
def test_planted_bug_in_cnn_is_flagged_by_name(name, bug, flag):
    model = cnn()
    _plant(model.get_parameter(name), bug)
    flags = initscale.torch.check(model, rules=CNN_RULES).flags
    assert set(flags) == {name} and flag in flags[name], flags


def test_fresh_false_keeps_only_the_always_true_flags():
    model = cnn()
    _plant(model.bn1.weight, "zeroed")
    _plant(model.conv2.weight, "3x")
    _plant(model.conv1.weight, "nan")
    flags = initscale.torch.check(model, rules=CNN_RULES, fresh=False).flags
    assert flags == {"conv1.weight": ("non_finite",)}


def test_uninitialized_memory_flags():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64))
    with torch.no_grad():
        model[0].weight.zero_()  # never initialized
        model[1].weight[1:] = model[1].weight[0]  # one row broadcast
        model[2].weight[:, :32] = torch.full((64, 32), 1e-40)  # leftover subnormals
    flags = initscale.torch.check(model).flags
    assert flags == {"0.weight": ("all_zero",), "1.weight": ("repeated_rows",), "2.weight": ("denormal",)}


def test_rules_saying_zeros_allow_an_all_zero_weight():
    model = nn.Sequential(nn.Linear(64, 64))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
    assert initscale.torch.check(model, rules={"0.weight": initscale.Zeros()}).flags == {}


def test_check_expects_what_reinit_draws_for_biases_that_follow_their_weight():
    # check walks as reinit_ does, biases linked to their weight: a fresh nn.Linear/Conv2d (torch's
    # own init, U(±1/√fan_in) on weight and bias) holds what reinit_(model, torch.linear_default)
    # would draw, and a bias rule that takes its weight's fans is expected with those fans.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Conv2d(8, 16, 3))
    default, bias = initscale.presets.get("torch.linear_default"), initscale.presets.get("torch.linear_default_bias")
    assert initscale.torch.check(model, rules=default).flags == {}
    report = initscale.torch.check(model, rules={"*.weight": default, "*.bias": bias})
    assert report.flags == {}, str(report)
    assert report["1.bias"].expected_std == pytest.approx(1 / math.sqrt(8 * 9) / math.sqrt(3))  # U(±b): b/√3


def test_chance_alone_is_not_flagged():
    """float16 N(0, 0.02) holds subnormals (p₀ ≈ 2·2⁻¹⁴/(0.02√(2π)) ≈ 2.4e-3 each); a narrow
    bfloat16 embedding repeats rows by chance (p_e² per pair)."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512).half(), nn.Embedding(4000, 2).bfloat16())
    with torch.no_grad():
        model[0].weight.normal_(0.0, 0.02, generator=gen)
        model[1].weight.normal_(generator=gen)
    w0, w1 = model[0].weight.float(), model[1].weight.float()
    assert int(((w0 != 0) & (w0.abs() < 2**-14)).sum()) > 100  # the subnormals are there
    assert 4000 - torch.unique(w1, dim=0).shape[0] > 0  # and so are repeated rows
    assert initscale.torch.check(model).flags == {}


def test_absolute_truncation_bound_beyond_6_sigma_is_flagged():
    model = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        nn.init.trunc_normal_(model[0].weight, std=0.02, generator=gen)  # a, b = ±2 absolute
        nn.init.trunc_normal_(model[1].weight, std=0.02, a=-0.04, b=0.04, generator=gen)
    rules = {
        "0.weight": initscale.TruncatedNormal(0.02, lower=-2, upper=2, bounds_in="absolute"),
        "1.weight": initscale.TruncatedNormal(0.02, lower=-0.04, upper=0.04, bounds_in="absolute"),
    }
    report = initscale.torch.check(model, rules=rules)
    assert report.flags == {"0.weight": ("truncation_no_op",)}
    assert "+100σ" in str(report)


def test_tied_parameters_are_listed_not_flagged():
    model = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 100, bias=False))
    model[1].weight = model[0].weight
    report = initscale.torch.check(model)
    assert report and report.tied == (("0.weight", "1.weight"),)
    assert report.to_dict()["tied"] == [["0.weight", "1.weight"]]


# --- output ---------------------------------------------------------------------------------------


def test_json_is_strict_and_complete():
    model = cnn()
    _plant(model.conv1.weight, "nan")
    report = initscale.torch.check(model, rules=CNN_RULES)
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["flagged"] == {"conv1.weight": ["non_finite"]}
    row = next(r for r in data["rows"] if r["name"] == "conv2.weight")
    assert set(row) >= {
        "mean",
        "std",
        "min",
        "max",
        "expected_mean",
        "expected_std",
        "std_ratio",
        "std_tolerance",
        "flags",
        "tied",
        "role",
        "shape",
        "dtype",
    }
    assert data["tests"] == report.tests and data["alpha"] == core.ALPHA


def test_bad_arguments_name_the_argument():
    model = cnn()
    with pytest.raises(ValueError, match="either `recipe` or `rules`"):
        initscale.torch.check(model, recipe=CNN_RULES, rules=CNN_RULES)
    with pytest.raises(ValueError, match=r"Recipe 'hf.gpt2' on CNN: needs `n_layer`"):  # not a GPT-2
        initscale.torch.check(model, recipe="hf.gpt2")
    with pytest.raises(ValueError, match="alpha"):
        initscale.torch.check(model, alpha=1.5)
    with pytest.raises(TypeError, match="Argument `model`"):
        initscale.torch.check([1, 2])
    with pytest.raises(ValueError, match="meta device"):
        initscale.torch.check(nn.Linear(4, 4, device="meta"))


def test_recipe_may_be_a_rule_set():
    model = gpt2()
    assert initscale.torch.check(model, recipe=gpt2_rules()).flags == {}


# --- the CLI on checkpoints -----------------------------------------------------------------------


def _cli(*argv):
    from initscale.cli import main

    return main(list(argv))


def test_cli_safetensors(tmp_path, capsys):
    st = pytest.importorskip("safetensors.torch")
    model = gpt2()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    st.save_file(state, tmp_path / "fresh.safetensors")
    assert _cli("check", str(tmp_path / "fresh.safetensors")) == 0, capsys.readouterr().out
    state["transformer.h.0.ln_2.weight"] = torch.zeros(64)
    state["transformer.h.1.mlp.c_fc.weight"] = state["transformer.h.1.mlp.c_fc.weight"].clone()
    state["transformer.h.1.mlp.c_fc.weight"][0, 0] = float("nan")
    st.save_file(state, tmp_path / "bad.safetensors")
    capsys.readouterr()
    assert _cli("check", str(tmp_path / "bad.safetensors"), "--format", "json") == 1
    data = json.loads(capsys.readouterr().out)
    assert data["flagged"] == {
        "transformer.h.0.ln_2.weight": ["norm_scale_not_one"],
        "transformer.h.1.mlp.c_fc.weight": ["non_finite"],
    }


def test_cli_bfloat16_safetensors_and_arguments(tmp_path, capsys):
    st = pytest.importorskip("safetensors.torch")
    model = bert()
    state = {k: v.contiguous().bfloat16() for k, v in model.state_dict().items()}
    st.save_file(state, tmp_path / "bf16.safetensors")
    assert _cli("check", str(tmp_path / "bf16.safetensors")) == 0, capsys.readouterr().out
    state["encoder.layer.0.attention.output.LayerNorm.weight"] = torch.zeros(32, dtype=torch.bfloat16)
    st.save_file(state, tmp_path / "bad.safetensors")
    assert _cli("check", str(tmp_path / "bad.safetensors"), "--no-fresh") == 0  # norms may be anything later
    assert _cli("check", str(tmp_path / "bad.safetensors")) == 1
    assert "bfloat16" in capsys.readouterr().out
    assert _cli("check", str(tmp_path / "bad.safetensors"), "--alpha", "2") == 2
    assert "alpha=2.0" in capsys.readouterr().err


def test_safetensors_reader_matches_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 5).bfloat16(), "b": torch.randn(7).half(), "c": torch.arange(6).reshape(2, 3)}
    st.save_file(tensors, tmp_path / "t.safetensors")
    arrays, dtypes = core.load_safetensors(tmp_path / "t.safetensors")
    assert dtypes == {"a": "bfloat16", "b": "float16", "c": "int64"}
    for name, t in tensors.items():
        np.testing.assert_array_equal(arrays[name], t.float().numpy() if name == "a" else t.numpy())


def test_cli_torch_state_dict(tmp_path, capsys):
    model = gpt2()
    torch.save(model.state_dict(), tmp_path / "fresh.pt")
    assert _cli("check", str(tmp_path / "fresh.pt")) == 0
    out = capsys.readouterr().out
    assert "tied: transformer.wte.weight = lm_head.weight" in out
    _plant(model.transformer.h[1].ln_1.weight, "zeroed")
    torch.save({"model": model.state_dict(), "step": 0}, tmp_path / "bad.pt")
    assert _cli("check", str(tmp_path / "bad.pt")) == 1
    out = capsys.readouterr().out
    assert "FLAG model.transformer.h.1.ln_1.weight: norm_scale_not_one" in out
    assert "note: step skipped" in out


def test_cli_refuses_what_it_cannot_read(tmp_path, capsys):
    import pickle

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(object(), protocol=2))  # not loadable with weights_only=True
    assert _cli("check", str(path)) == 2
    assert "weights_only=True" in capsys.readouterr().err
    assert _cli("check", str(tmp_path / "missing.pt")) == 2


# --- the statistics: tolerance, rate, mutations ---------------------------------------------------


def test_n_min_keeps_the_exact_normal_tail_within_2_2x_nominal():
    """The std test's normal approximation: for normal weights, s²·n/σ² ~ χ²_n exactly; at
    n = N_MIN the two-sided tail beyond z·√(2/(4n)) is within 2.2x of 2(1−Φ(z)) for z ≤ 7."""
    stats = pytest.importorskip("scipy.stats")
    n = core.N_MIN
    for z in (3.0, 4.0, 5.0, 6.0, 7.0):
        tol = core._std_tolerance(3.0, n, z)
        exact = stats.chi2.sf(n * (1 + tol) ** 2, n) + stats.chi2.cdf(n * (1 - tol) ** 2, n)
        assert exact <= 2.2 * math.erfc(z / math.sqrt(2)), z


def _synthetic_model(seed: int, params: int = 20, n: int = 2000) -> list[Entry]:
    rng = np.random.default_rng(seed)
    normal, uniform = NormalDist(0.0, 0.05), UniformDist(-0.1, 0.1)
    out = []
    for i in range(params):
        dist = normal if i % 2 else uniform
        x = rng.normal(0.0, 0.05, (n // 40, 40)) if i % 2 else rng.uniform(-0.1, 0.1, (n // 40, 40))
        out.append(Entry(f"p{i}", x.astype(np.float32), expected=Expected(dist)))
    return out


def _false_alarms(alpha: float, trials: int = 200) -> int:
    return sum(not check_arrays(_synthetic_model(s), alpha=alpha) for s in range(trials))


def test_false_alarm_rate_is_at_most_alpha():
    """200 fresh 20-parameter models at α = 0.2: the flagged count stays below the binomial
    bound 200·α + 4.5·√(200·α(1−α)) (z = 4.5)."""
    alpha, trials = 0.2, 200
    assert _false_alarms(alpha, trials) <= trials * alpha + 4.5 * math.sqrt(trials * alpha * (1 - alpha))


def test_mutation_no_bonferroni_raises_false_alarms(monkeypatch):
    monkeypatch.setattr(core, "_z", lambda alpha, tests: float(core.normal_math.ndtri(1 - alpha / 2)))
    alpha, trials = 0.2, 200
    assert _false_alarms(alpha, trials) > trials * alpha + 4.5 * math.sqrt(trials * alpha * (1 - alpha))


def _planted_misses() -> list[str]:
    """The planted cases the check does not flag (empty when it works)."""
    rng = np.random.default_rng(1)
    dist = NormalDist(0.0, 0.02)
    w = rng.normal(0.0, 0.02, (128, 128)).astype(np.float32)
    nan = w.copy()
    nan[5, 7] = np.nan
    cases = {"std_off": 1.2 * w, "non_finite": nan, "mean_off": w + 0.002}
    misses = []
    for flag, x in cases.items():
        report = check_arrays([Entry("w", x, expected=Expected(dist))])
        if flag not in report[0].flag_names:
            misses.append(flag)
    return misses


def test_planted_cases_are_flagged():
    assert _planted_misses() == []


def test_mutation_hand_tuned_tolerance_misses_a_planted_case(monkeypatch):
    monkeypatch.setattr(core, "_std_tolerance", lambda kurtosis, n, z: 0.5)  # "within 50 %"
    assert "std_off" in _planted_misses()


def test_mutation_ignoring_nan_misses_a_planted_case(monkeypatch):
    monkeypatch.setattr(core, "_finite", lambda x: np.ones(x.shape, dtype=bool))
    assert "non_finite" in _planted_misses()


def test_mutation_without_chance_bounds_false_alarms(monkeypatch):
    monkeypatch.setattr(core, "_binomial_tail_bound", lambda k, n, p: 0.0)
    monkeypatch.setattr(core, "_repeated_rows", lambda x, axis: None if x.ndim < 2 else (1, 0.0))
    with pytest.raises(AssertionError):
        test_chance_alone_is_not_flagged()


def test_torch_check_docstring_examples_run():
    import doctest

    from initscale.adapters import _torch_check

    assert doctest.testmod(_torch_check, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.parametrize("role", ["bias", "norm_offset"])
def test_zero_bias_of_two_axes_is_not_flagged(role):
    # Keras MultiHeadAttention's query/key/value biases are (heads, head_dim) zeros at init: a zero
    # bias or norm offset is the default whatever its shape, so ``all_zero`` must not fire on it...
    zeros = np.zeros((2, 4), dtype=np.float32)
    assert check_arrays([Entry("attn/query/bias", zeros, role=role)]).flags == {}


def test_zero_weight_of_two_axes_is_still_flagged():
    # ...while the same zeros as a weight (the planted bug) still are.
    zeros = np.zeros((2, 4), dtype=np.float32)
    assert check_arrays([Entry("attn/query/kernel", zeros, role="weight")]).flags == {
        "attn/query/kernel": ("all_zero",)
    }
