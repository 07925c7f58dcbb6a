"""initscale.keras.lsuv and initscale.auto on keras-hub backbones built from small configs (GPT-2, BERT,
Llama: the builders of test_keras.py, nothing downloaded), on the Keras backend of this process;
test_keras_process.py reruns this file on each other backend.

LSUV's contract is deterministic: after the run, each layer it rescaled has output variance 1 ± tol on
the batch (tol = 0.1, LSUV's own stopping rule |Var − 1| < tol). The test reads every layer's output
(before a fused activation) on a fresh forward pass through its own wrapper, independent of the
report, and checks it; a planted bug (W / Var instead of W / √Var) makes that check fail. Weights
that are not a layer's main kernel (Llama's untied ``reverse_embeddings``, unused by the backbone's
lookup) are left as the rules drew them, and a failure part-way through puts every variable back.

auto: every kernel the rules set with fans has a row or is named in a warning; what follows each
layer is checked against a table of what the model's code does (written from keras-hub's source,
not from what auto reports); where auto cannot see it (an activation inside a block's own call) the
row must be linear and named in the plan's notes, never the identity silently.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import warnings

import numpy as np
import pytest
from test_keras import SEQ, V, _bert, _gpt2, _llama

import initscale
from initscale import gains
from initscale import lsuv as lsuv_core

keras = pytest.importorskip("keras")
isk = pytest.importorskip("initscale.adapters.keras")
from initscale.adapters import _keras_lsuv  # noqa: E402

TOL = 0.1  # LSUV's tolerance (the paper's and the default): |Var(B_L) - 1| < TOL
BATCH = 8


def _batch(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    batch = {
        "token_ids": rng.integers(0, V, (BATCH, SEQ)).astype("int32"),
        "padding_mask": np.ones((BATCH, SEQ), "int32"),
    }
    if name == "bert":
        batch["segment_ids"] = (rng.random((BATCH, SEQ)) < 0.5).astype("int32")
    return batch


MODELS = {"gpt2": _gpt2, "bert": _bert, "llama": _llama}


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def _layer_of(model, weight: str):
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for attr in ("kernel", "pointwise_kernel"):
            try:
                v = getattr(layer, attr, None)
            except Exception:
                v = None
            if v is not None and v.path == weight:
                return layer
    raise KeyError(weight)


def _spy(fn, store: dict, key: int, read):
    """``fn`` that also stores ``read(args, out)`` of its first call under ``key``."""

    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        store.setdefault(key, read(args, out))
        return out

    return wrapped


def _outputs(model, batch, layers) -> dict[int, np.ndarray]:
    """Each layer's first output on one forward pass (before its fused activation), by its own wrapper."""
    seen: dict[int, np.ndarray] = {}
    patched = []
    for layer in layers:
        fused = getattr(layer, "activation", None)
        if callable(fused) and fused is not keras.activations.linear:
            layer.activation = _spy(fused, seen, id(layer), lambda args, out: _np(args[0]))
            patched.append((layer, fused))
        layer.call = _spy(layer.call, seen, id(layer), lambda args, out: _np(out))
    try:
        model(batch, training=False)
    finally:
        for layer in layers:
            del layer.call
        for layer, fused in patched:
            layer.activation = fused
    return seen


def _off_unit(model, batch, report) -> list[str]:
    """The rescaled layers whose output variance, read afresh, is not 1 ± TOL."""
    rows = [r for r in report.rows if not r.status.startswith("skipped")]
    layers = [_layer_of(model, r.weight) for r in rows]
    seen = _outputs(model, batch, layers)
    off = []
    for row, layer in zip(rows, layers, strict=True):
        var = float(seen[id(layer)].var(ddof=1))
        if not abs(var - 1.0) < TOL:
            off.append(f"{row.name}: output variance {var:.4g}")
    return off


@functools.cache
def _model(name: str, role: str):
    """One model per name and role: "lsuv" holds the state the LSUV checks read (auto's plan only reads
    it), "scratch" the one the other tests rewrite (each starts with a full reinit of its kernels)."""
    return MODELS[name]()


@functools.cache
def _lsuv(name: str):
    model = _model(name, "lsuv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = isk.lsuv(model, _batch(name), seed=0)
    return model, report, " ".join(str(w.message) for w in caught)


def _kernels(model) -> set[str]:
    """The kernels a one-spec reinit sets with fans (what LSUV and auto must cover)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dry = isk.reinit(model, initscale.presets.get("orthogonal"), dry_run=True)
    return {row.name for row in dry.touched if row.layout is not None}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lsuv_every_rescaled_layer_ends_at_unit_variance(name: str) -> None:
    model, report, warned = _lsuv(name)
    assert "did not reach output variance" not in warned, warned
    off = _off_unit(model, _batch(name), report)
    assert not off, f"{name}: layers whose output is not at variance 1 ± {TOL}: {off}"
    # the report's variance is a float32 forward pass of the same values: equal to float32 rounding
    rows = [r for r in report.rows if r.status == "converged"]
    seen = _outputs(model, _batch(name), [_layer_of(model, r.weight) for r in rows])
    fresh = [float(seen[id(_layer_of(model, r.weight))].var(ddof=1)) for r in rows]
    assert [r.variance_after for r in rows] == pytest.approx(fresh, rel=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lsuv_covers_every_kernel_once_with_unique_names(name: str) -> None:
    model, report, _ = _lsuv(name)
    rows = {r.weight: r for r in report.rows}
    assert len(rows) == len(report.rows) and len({r.name for r in report.rows}) == len(report.rows)
    assert set(rows) == _kernels(model), set(rows) ^ _kernels(model)
    skipped = {w: r.status for w, r in rows.items() if r.status.startswith("skipped")}
    expected = (
        {"token_embedding/reverse_embeddings"} if name == "llama" else set()
    )  # untied: the backbone never calls it
    assert set(skipped) == expected, skipped
    assert all("not the layer's main `kernel`" in s for s in skipped.values())
    assert all(r.status == "converged" for r in report.rows if r.weight not in expected)


def test_lsuv_leaves_a_weight_the_forward_pass_does_not_use_as_drawn() -> None:
    """Llama's untied reverse_embeddings (the LM head's, not the backbone's): LSUV must not rescale it
    (its lookup output does not depend on it: rescaling would never converge, and multiply it by
    (1/sqrt(Var))^max_iters); a reinit with the same seed draws it again bit for bit."""
    model, report, _ = _lsuv("llama")
    head = model.get_layer("token_embedding").reverse_embeddings
    after = _np(head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        isk.reinit(model, initscale.presets.get("orthogonal"), seed=0)
    np.testing.assert_array_equal(after, _np(head))
    assert report["token_embedding"].scale == 1.0


def test_lsuv_failing_part_way_changes_nothing(monkeypatch) -> None:
    model, batch = _model("llama", "scratch"), _batch("llama")
    model(batch)
    variables = list(model.variables)  # trainable and not (none here are updated by an inference pass)
    _assert_atomic(model, batch, variables, [_np(v) for v in variables], monkeypatch)


def _assert_atomic(model, batch, variables, before, monkeypatch) -> None:
    real, calls = _keras_lsuv._output_variance, []

    def failing(run, layer):  # the 6th measurement fails: several kernels are rescaled by then
        calls.append(layer.name)
        if len(calls) == 6:
            raise RuntimeError("planted failure")
        return real(run, layer)

    monkeypatch.setattr(_keras_lsuv, "_output_variance", failing)
    with pytest.raises(RuntimeError, match="planted failure"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        isk.lsuv(model, batch, seed=0)
    changed = [v.path for v, old in zip(variables, before, strict=True) if not np.array_equal(_np(v), old)]
    assert not changed, f"a failed lsuv changed {changed}"


def test_planted_bug_no_restore_is_caught(monkeypatch) -> None:
    """Mutation: an lsuv that copies no variable (so restores none) fails the atomicity check."""
    model, batch = _model("gpt2", "scratch"), _batch("gpt2")
    model(batch)
    variables = list(model.variables)
    before = [_np(v) for v in variables]
    monkeypatch.setattr(type(model), "variables", property(lambda self: []))  # what lsuv copies and restores
    with pytest.raises(AssertionError, match="a failed lsuv changed"):
        _assert_atomic(model, batch, variables, before, monkeypatch)


def test_planted_bug_divide_by_variance_is_caught(monkeypatch) -> None:
    """Mutation: W / Var instead of W / sqrt(Var) never settles; the fresh per-layer check fails on it."""
    monkeypatch.setattr(
        lsuv_core, "math", type("M", (), {"sqrt": staticmethod(lambda v: v), "isfinite": staticmethod(math.isfinite)})
    )
    model, batch = _model("gpt2", "scratch"), _batch("gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = isk.lsuv(model, batch, seed=0, max_iters=1)
    assert _off_unit(model, batch, report)


# --- auto on the same models ---------------------------------------------------------------------

# What follows each kernel's layer in keras-hub's code: (follower, activation or the op it goes to).
# "own:X": the output goes to layer X's own keras.ops (attention scores, a residual add, a cast):
# invisible to the pass. A gated SiLU applied there (Llama) is the truth; auto may only report it as
# linear-into-own-ops if a note names the weight (KNOWN).
OWN = "own"
FOLLOWS = {
    "gpt2": {
        "*/self_attention/*/kernel": ("linear", "own:CachedMultiHeadAttention"),
        "*/feedforward_intermediate_dense/kernel": ("activation", "gelu_approximate"),  # fused activation="gelu" (tanh)
        "*/feedforward_output_dense/kernel": ("linear", "own:TransformerDecoder"),  # dropout, residual add
    },
    "bert": {
        "*/self_attention_layer/*/kernel": ("linear", "own:MultiHeadAttention"),
        "*/feedforward_intermediate_dense/kernel": ("activation", "gelu_approximate"),
        "*/feedforward_output_dense/kernel": ("linear", "own:TransformerEncoder"),
        "pooled_dense/kernel": ("activation", "tanh"),
    },
    "llama": {
        "*/self_attention/query/kernel": ("linear", "LlamaRotaryEmbedding"),
        "*/self_attention/key/kernel": ("linear", "LlamaRotaryEmbedding"),
        "*/self_attention/value/kernel": ("linear", "own:LlamaAttention"),
        "*/self_attention/attention_output/kernel": ("linear", "own:LlamaAttention"),
        "*/feedforward_gate_dense/kernel": ("activation", "silu"),  # cast to float32, silu, in the block's call
        "*/feedforward_intermediate_dense/kernel": ("linear", "own:LlamaTransformerDecoder"),  # times the gate
        "*/feedforward_output_dense/kernel": ("linear", "own:LlamaTransformerDecoder"),
    },
}
KNOWN = {("llama", "*/feedforward_gate_dense/kernel"): "the SiLU runs in LlamaTransformerDecoder's own call"}
CLOSED = {"gelu_approximate": "gelu_tanh", "tanh": "tanh"}  # keras-hub's gelu_approximate is the tanh GELU


@functools.cache
def _plan(name: str):
    model = _lsuv(name)[0]  # a plan only reads the model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = initscale.auto(_batch(name)).plan(model)
    return model, plan, " ".join(str(w.message) for w in caught)


def _follows_problems(name: str, plan) -> list[str]:
    problems = []
    for row in plan.rows:
        globs = [g for g in FOLLOWS[name] if fnmatch.fnmatchcase(row.weight, g)]
        if len(globs) != 1:
            problems.append(f"{row.weight}: {len(globs)} table entries")
            continue
        follower, what = FOLLOWS[name][globs[0]]
        seen = row.activation if row.follower == "activation" else row.activation.removesuffix(" (its own ops)")
        own = row.follower == "linear" and row.activation.endswith(" (its own ops)")
        named = any(note.startswith(f"{row.weight}: its layer's output goes to") for note in plan.notes)
        if (name, globs[0]) in KNOWN and own and named:
            continue
        if what.startswith(f"{OWN}:") and not (own and named and seen == what.split(":", 1)[1]):
            problems.append(f"{row.weight}: expected linear into {what}'s own ops (named in a note), got {row}")
        elif not what.startswith(f"{OWN}:") and (row.follower, seen) != (follower, what):
            problems.append(f"{row.weight}: expected {follower} {what}, got {row.follower} {row.activation!r}")
    return problems


@pytest.mark.parametrize("name", sorted(MODELS))
def test_auto_names_every_kernel_and_what_follows_it(name: str) -> None:
    model, plan, warned = _plan(name)
    rows = [r.weight for r in plan.rows]
    assert len(rows) == len(set(rows)), "a weight planned twice"
    unplanned = _kernels(model) - set(rows)
    assert all(w in warned for w in unplanned), f"kernels neither planned nor named in a warning: {unplanned}"
    assert unplanned == ({"token_embedding/reverse_embeddings"} if name == "llama" else set())
    problems = _follows_problems(name, plan)
    assert not problems, "\n" + "\n".join(problems)


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_auto_integrates_keras_hub_s_own_activations_not_the_identity(name: str) -> None:
    """keras-hub's gelu_approximate has no closed form in auto's table: it is integrated by quadrature,
    and must give the tanh GELU's fixed-point gain (1e-6: the quadrature's float64 error is far below,
    the backend's float64 evaluation of tanh agrees to ~1e-15), not the identity's sqrt(q/m)."""
    _, plan, _ = _plan(name)
    for row in (r for r in plan.rows if r.follower == "activation"):
        fp = gains.fixed_point(CLOSED[row.activation])
        assert row.gain == pytest.approx(fp.gain * math.sqrt(fp.q_star) / math.sqrt(row.m_in), rel=1e-6), row
        assert row.chi == pytest.approx(fp.chi, rel=1e-6), row


def test_planted_bug_unknown_activation_as_identity_is_caught(monkeypatch) -> None:
    """Mutation: a recorder that drops fused activations (planned as linear, no note) fails the table check."""
    from initscale.adapters import _keras_auto

    monkeypatch.setattr(_keras_auto, "_function_activation", lambda fn: (("identity", None), "identity"))
    model = _model("gpt2", "scratch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = initscale.auto(_batch("gpt2")).plan(model)
    assert _follows_problems("gpt2", plan)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_auto_applied_measures_what_arrives(name: str) -> None:
    model, batch = _model(name, "scratch"), _batch(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = isk.reinit(model, initscale.auto(batch), seed=0)
    layers = {w: _layer_of(model, w) for w in (r.name for r in report.touched if "auto:" in r.reason)}
    arrived: dict[int, float] = {}
    for layer in layers.values():
        layer.call = _spy(layer.call, arrived, id(layer), lambda args, out: float(np.mean(np.square(_np(args[0])))))
    try:
        model(batch, training=False)
    finally:
        for layer in layers.values():
            del layer.call
    assert len(layers) == len(_kernels(model)) - (name == "llama")
    for weight, layer in layers.items():
        row = report[weight]
        assert "(measured)" in row.reason, row.reason
        m_in = float(row.reason.split("m_in ")[1].split(" ")[0])
        assert m_in == pytest.approx(arrived[id(layer)], rel=1e-3), weight  # the label prints 4 digits
        values = _np(layer.kernel)
        assert np.all(np.isfinite(values))
        # the drawn std: relative sd of a sample std of n normal values is 1/sqrt(2n); z = 6 (Bonferroni
        # over <= 14 kernels at a false-alarm rate ~ 1e-8 each)
        assert float(values.std()) == pytest.approx(row.std, rel=6 / math.sqrt(2 * values.size)), weight
