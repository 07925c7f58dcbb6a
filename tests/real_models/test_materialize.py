"""materialize_ on HF transformers models built from tiny configs on the meta device (no
downloads): GPT-2 (tied LM head, Conv1D), BERT (position_ids / token_type_ids buffers, restored by
BertPreTrainedModel._init_weights), Llama (rotary inv_freq / original_inv_freq, from its rope
function) and T5 (four names of one embedding). After materialize_: every buffer equals the one of
the same model built directly on the CPU (torch.equal), the ties are those of the CPU-built model,
an eval forward pass is finite, and every parameter holds the std its report gives
(tests/_materialize.py states the tolerances).

Building an HF model imports Triton (through torch._dynamo), which aborts the process after
TensorFlow: where TensorFlow is loaded, the model tests skip and the last test runs this file in a
fresh process.
"""

from __future__ import annotations

from pathlib import Path

import _child_runs
import pytest
from _guards import triton_would_abort
from _materialize import buffer_problems, std_problems, tie_problems

import initscale

torch = pytest.importorskip("torch")
transformers = pytest.importorskip(
    "transformers", reason="the real-model suite needs HF transformers (pip install 'transformers>=5.0')"
)
ist = pytest.importorskip("initscale.adapters.torch")

D, HEADS, FF, VOCAB, POS = 32, 4, 64, 50, 16
HE = initscale.presets.get("he_normal")
RULES = {"Embedding": initscale.Normal(0.02), "lm_head.weight": initscale.Normal(0.02), "Linear": HE, "Conv1D": HE}


def _gpt2():
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_embd=D, n_layer=2, n_head=HEADS, n_positions=POS, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0
        )
    )


def _bert():
    return transformers.BertModel(
        transformers.BertConfig(
            hidden_size=D,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            intermediate_size=FF,
            vocab_size=VOCAB,
            max_position_embeddings=POS,
            pad_token_id=0,
        )
    )


def _llama():
    return transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=D,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            num_key_value_heads=2,
            intermediate_size=FF,
            vocab_size=VOCAB,
            max_position_embeddings=POS,
        )
    )


def _t5():
    return transformers.T5ForConditionalGeneration(
        transformers.T5Config(d_model=D, d_kv=8, d_ff=FF, num_layers=2, num_heads=HEADS, vocab_size=VOCAB)
    )


MODELS = {"gpt2": _gpt2, "bert": _bert, "llama": _llama, "t5": _t5}
BUFFERS = {
    "gpt2": [],
    "bert": ["embeddings.position_ids", "embeddings.token_type_ids"],
    "llama": ["model.rotary_emb.inv_freq", "model.rotary_emb.original_inv_freq"],
    "t5": [],
}
TIES = {
    "gpt2": [("transformer.wte.weight", "lm_head.weight")],
    "bert": [],
    "llama": [],
    "t5": [("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")],
}


@pytest.fixture(scope="module")
def built() -> dict:
    if triton_would_abort():
        pytest.skip("TensorFlow is loaded and Triton would abort after it: test_in_a_fresh_process runs this file")
    out = {}
    for name, build in MODELS.items():
        torch.manual_seed(0)
        reference = build()
        with torch.device("meta"):
            model = build()
        report = ist.materialize_(model, RULES, device="cpu", generator=torch.Generator().manual_seed(1))
        out[name] = (reference, model, report)
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_buffer_equals_the_cpu_built_models(built, name: str) -> None:
    reference, model, _ = built[name]
    assert sorted(n for n, _ in reference.named_buffers()) == sorted(BUFFERS[name])  # what is checked
    assert buffer_problems(model, reference) == []


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ties_are_those_of_the_cpu_built_model(built, name: str) -> None:
    reference, model, _ = built[name]
    assert tie_problems(model, reference) == []
    for group in TIES[name]:
        assert len({id(model.get_parameter(n)) for n in group}) == 1, group


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_eval_forward_pass_is_finite(built, name: str) -> None:
    _, model, _ = built[name]
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model.eval()(input_ids=ids, **({"decoder_input_ids": ids} if name == "t5" else {}))
    values = out.logits if hasattr(out, "logits") else out.last_hidden_state
    assert bool(values.isfinite().all())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_has_its_reported_std(built, name: str) -> None:
    _, model, report = built[name]
    assert not report.untouched
    assert std_problems(model, report) == []


SMALL = {
    "hidden_size": D,
    "num_hidden_layers": 2,
    "num_attention_heads": HEADS,
    "intermediate_size": FF,
    "vocab_size": VOCAB,
    "max_position_embeddings": POS,
}
MORE = {  # more rotary and embedding variants: buffers only (model class, config class, extra config)
    "mistral": ("MistralForCausalLM", "MistralConfig", {"num_key_value_heads": 2}),
    "gemma": ("GemmaForCausalLM", "GemmaConfig", {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", {"num_key_value_heads": 2, "head_dim": 8}),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig", {}),
    "roberta": ("RobertaModel", "RobertaConfig", {}),
}


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_models_buffers_equal_the_cpu_built_models(name: str) -> None:
    if triton_would_abort():
        pytest.skip("TensorFlow is loaded and Triton would abort after it: test_in_a_fresh_process runs this file")
    model_class, config_class, extra = MORE[name]
    if not hasattr(transformers, model_class):
        pytest.skip(f"transformers {transformers.__version__} has no {model_class}")
    config = getattr(transformers, config_class)(**SMALL, **extra)
    reference = getattr(transformers, model_class)(config)
    with torch.device("meta"):
        model = getattr(transformers, model_class)(config)
    report = ist.materialize_(model, RULES, device="cpu", generator=torch.Generator().manual_seed(1))
    assert list(reference.buffers())  # each has buffers to restore
    assert buffer_problems(model, reference) == [] and tie_problems(model, reference) == []
    assert std_problems(model, report) == []


_FRESH_RUN = "materialize-models"
_child_runs.register(_FRESH_RUN, _child_runs.pytest_command(__file__), timeout=900, wanted=triton_would_abort)


@pytest.mark.child_run(_FRESH_RUN)
def test_in_a_fresh_process() -> None:
    if not triton_would_abort():
        pytest.skip("this process runs the tests above itself")
    done = _child_runs.result(_FRESH_RUN)
    assert done.returncode == 0, f"{Path(__file__).name} failed in a fresh process:\n{done.stdout[-6000:]}"
