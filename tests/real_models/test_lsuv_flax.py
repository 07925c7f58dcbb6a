"""initscale.jax.lsuv and initscale.auto on real Flax linen models: the transformer block and CNN of
test_flax.py, and a small language model with a packed QKV projection (one DenseGeneral kernel
(d, 3, heads, head_dim)) and a head tied to its embedding (``Embed.attend``).

LSUV's contract is deterministic: each layer it rescaled has output variance 1 ± tol on the batch
(tol = 0.1, LSUV's own stopping rule |Var − 1| < tol). The test reads every module's ``__call__``
output on a fresh apply of the returned variables through ``nn.intercept_methods`` (LSUV itself reads
``capture_intermediates``) and checks it; a planted bug (W / Var instead of W / √Var) makes that check
fail. The packed kernel is rescaled as one (one factor for q, k and v); the tied embedding, which is
no layer's kernel, is left as drawn; a failure part-way leaves the input variables as they were.

auto: every kernel has a row, and what follows each layer is checked against a table of what the
model's code does; a planted recorder that takes every activation for the identity is caught.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")
from test_flax import FF, HD, HEADS, VOCAB, Block, ConvNet, D  # noqa: E402

import initscale  # noqa: E402
from initscale import gains  # noqa: E402
from initscale import lsuv as lsuv_core  # noqa: E402
from initscale.adapters import _jax_auto, _jax_lsuv  # noqa: E402
from initscale.adapters import jax as isj  # noqa: E402

TOL = 0.1  # LSUV's tolerance (the paper's and the default): |Var(B_L) - 1| < TOL
SEQ = 16


class PackedLM(nn.Module):
    """tokens -> Embed -> pre-norm attention with one packed qkv kernel -> pre-norm MLP -> Embed.attend (tied)."""

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(VOCAB, D, name="tok")
        x = embed(tokens)
        qkv = nn.DenseGeneral((3, HEADS, HD), name="qkv")(nn.LayerNorm(name="ln1")(x))
        att = nn.dot_product_attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :])
        x = x + nn.DenseGeneral(D, axis=(-2, -1), name="proj")(att)
        x = x + nn.Dense(D, name="fc2")(nn.gelu(nn.Dense(FF, name="fc1")(nn.LayerNorm(name="ln2")(x))))
        return embed.attend(nn.LayerNorm(name="lnf")(x))


def _inputs(name: str) -> tuple:
    rng = np.random.default_rng(0)
    if name == "block":
        return (jnp.asarray(rng.standard_normal((8, SEQ, D)), jnp.float32),)
    if name == "cnn":
        return jnp.asarray(rng.standard_normal((8, 8, 8, 8)), jnp.float32), jnp.asarray(rng.integers(0, VOCAB, (8,)))
    return (jnp.asarray(rng.integers(0, VOCAB, (8, SEQ)), jnp.int32),)


MODELS = {"block": Block, "cnn": ConvNet, "packed_lm": PackedLM}


@functools.cache
def _setup(name: str):
    """The module and variables of the shapes ``init`` gives (traced by ``jax.eval_shape``, not compiled:
    XLA compiles per shape on the CPU, slowly): kernels and scales standard normal (LSUV and auto redraw
    them), BatchNorm's running mean 0 and variance 1."""
    module = MODELS[name]()
    shapes = jax.eval_shape(module.init, jax.random.key(0), *_inputs(name))
    rng = np.random.default_rng(0)

    def value(path, leaf):
        if jax.tree_util.keystr(path).endswith("['var']"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if jax.tree_util.keystr(path).endswith("['mean']"):
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.standard_normal(leaf.shape), leaf.dtype)

    return module, jax.tree_util.tree_map_with_path(value, shapes)


@functools.cache
def _lsuv(name: str):
    module, variables = _setup(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new, report = isj.lsuv(variables, _inputs(name), module=module, key=jax.random.key(1))
    return new, report, " ".join(str(w.message) for w in caught)


def _outputs(module, variables, inputs) -> dict[str, np.ndarray]:
    """Each module's first __call__ output, by module path, on a fresh apply (intercepted)."""
    seen: dict[str, np.ndarray] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(out, jax.Array):
            seen.setdefault("/".join(context.module.path), np.asarray(out, np.float64))
        return out

    with nn.intercept_methods(interceptor):
        module.apply(variables, *inputs)
    return seen


def _off_unit(name: str, new, report) -> list[str]:
    module, _ = _setup(name)
    seen = _outputs(module, new, _inputs(name))
    return [
        f"{row.name}: output variance {float(seen[row.name].var(ddof=1)):.4g}"
        for row in report.rows
        if not row.status.startswith("skipped") and not abs(float(seen[row.name].var(ddof=1)) - 1.0) < TOL
    ]


@functools.cache
def _kernels(name: str) -> frozenset[str]:
    module, variables = _setup(name)
    _, dry = isj.reinit(
        variables,
        initscale.presets.get("orthogonal"),
        jax.random.key(1),
        dry_run=True,
        module=module,
        example_inputs=_inputs(name),
    )
    return frozenset(row.name for row in dry.touched if row.layout is not None and row.name.endswith("/kernel"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lsuv_every_layer_ends_at_unit_variance_and_each_kernel_has_a_row(name: str) -> None:
    new, report, warned = _lsuv(name)
    assert "did not reach output variance" not in warned, warned
    assert sorted(r.weight for r in report.rows) == sorted(_kernels(name))
    assert all(r.status == "converged" for r in report.rows), str(report)
    off = _off_unit(name, new, report)
    assert not off, f"{name}: layers whose output is not at variance 1 ± {TOL}: {off}"
    for leaf in jax.tree_util.tree_leaves(new):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64)))


def test_lsuv_rescales_a_packed_kernel_as_one_and_leaves_a_tied_embedding_as_drawn() -> None:
    """The packed qkv kernel is multiplied by one factor (the row's scale) for q, k and v alike: its ratio
    to the starting init's draw (same key) is that factor everywhere, to float32 rounding (1e-6); the
    embedding the head is tied to is no layer's kernel: LSUV leaves it bit for bit."""
    module, variables = _setup("packed_lm")
    new, report, _ = _lsuv("packed_lm")
    drawn, _ = isj.reinit(
        variables,
        initscale.presets.get("orthogonal"),
        jax.random.key(1),
        module=module,
        example_inputs=_inputs("packed_lm"),
    )
    ratio = np.asarray(new["params"]["qkv"]["kernel"], np.float64) / np.asarray(
        drawn["params"]["qkv"]["kernel"], np.float64
    )
    assert ratio == pytest.approx(np.full(ratio.shape, report["qkv"].scale), rel=1e-6)
    np.testing.assert_array_equal(
        np.asarray(new["params"]["tok"]["embedding"]), np.asarray(drawn["params"]["tok"]["embedding"])
    )
    assert "tok" not in {r.name for r in report.rows}


def _assert_atomic(name: str, monkeypatch) -> None:
    module, variables = _setup(name)
    before = jax.tree_util.tree_map(np.array, variables)
    real, calls = lsuv_core.variance, []

    def failing(values):  # the 4th measurement fails: some kernels are rescaled by then
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("planted failure")
        return real(values)

    monkeypatch.setattr(_jax_lsuv._core, "variance", failing)
    with pytest.raises(RuntimeError, match="planted failure"):
        isj.lsuv(variables, _inputs(name), module=module, key=jax.random.key(1))
    flat_before = jax.tree_util.tree_flatten_with_path(before)[0]
    flat_after = jax.tree_util.tree_flatten_with_path(variables)[0]
    changed = [
        jax.tree_util.keystr(p)
        for (p, a), (_, b) in zip(flat_before, flat_after, strict=True)
        if not np.array_equal(a, b)
    ]
    assert [p for p, _ in flat_before] == [p for p, _ in flat_after] and not changed, f"a failed lsuv changed {changed}"


def test_lsuv_failing_part_way_changes_nothing(monkeypatch) -> None:
    _assert_atomic("packed_lm", monkeypatch)


def test_planted_bug_in_place_write_is_caught(monkeypatch) -> None:
    """Mutation: an lsuv whose starting init writes into the caller's dicts fails the atomicity check."""
    from initscale.adapters import jax as adapter

    real = adapter.reinit

    def in_place(variables, *args, **kwargs):
        new, report = real(variables, *args, **kwargs)

        def write(into, values):
            for key, value in values.items():
                if isinstance(value, dict):
                    write(into[key], value)
                else:
                    into[key] = value

        write(variables, new)
        return variables, report

    monkeypatch.setattr(adapter, "reinit", in_place)
    variables = _setup("packed_lm")[1]
    snapshot = jax.tree_util.tree_map(np.array, variables)
    try:
        with pytest.raises(AssertionError, match="a failed lsuv changed"):
            _assert_atomic("packed_lm", monkeypatch)
    finally:  # the shared fixture, as it was
        monkeypatch.undo()
        _setup.cache_clear()
        _lsuv.cache_clear()
        _plan.cache_clear()
    del snapshot


def test_planted_bug_divide_by_variance_is_caught(monkeypatch) -> None:
    """Mutation: W / Var instead of W / sqrt(Var) never settles; the fresh per-layer check fails on it."""
    monkeypatch.setattr(
        lsuv_core, "math", type("M", (), {"sqrt": staticmethod(lambda v: v), "isfinite": staticmethod(math.isfinite)})
    )
    module, variables = _setup("block")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new, report = isj.lsuv(variables, _inputs("block"), module=module, key=jax.random.key(1), max_iters=1)
    assert _off_unit("block", new, report)


# --- auto on the same models ---------------------------------------------------------------------

# What follows each kernel's layer in the model's code: (follower, activation or the primitive it goes to).
FOLLOWS = {
    "block": {
        "params/attn/query/kernel": ("linear", "div"),  # flax scales the query by 1/sqrt(head_dim)
        "params/attn/key/kernel": ("linear", "dot_general"),
        "params/attn/value/kernel": ("linear", "dot_general"),
        "params/attn/out/kernel": ("linear", "add"),  # the residual
        "params/fc1/kernel": ("activation", "gelu_tanh"),  # nn.gelu: the tanh approximation
        "params/fc2/kernel": ("linear", "add"),
    },
    "cnn": {
        "params/stem/kernel": ("linear", "layer"),
        "params/grouped/kernel": ("linear", "layer"),
        "params/dw/kernel": ("norm", "norm"),
        "params/up/kernel": ("linear", "reduce_sum"),  # x.mean((1, 2))
        "params/head/kernel": ("output", "output"),
    },
    "packed_lm": {
        "params/qkv/kernel": ("linear", "*"),  # sliced into q, k, v: a shape primitive, then attention
        "params/proj/kernel": ("linear", "add"),
        "params/fc1/kernel": ("activation", "gelu_tanh"),
        "params/fc2/kernel": ("linear", "add"),
    },
}


@functools.cache
def _plan(name: str):
    module, variables = _setup(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = initscale.auto(_inputs(name)).plan(module, variables=variables)
    return plan, " ".join(str(w.message) for w in caught)


def _follows_problems(name: str, plan) -> list[str]:
    problems = []
    table = FOLLOWS[name]
    if sorted(r.weight for r in plan.rows) != sorted(table):
        problems.append(f"rows {sorted(r.weight for r in plan.rows)} != table {sorted(table)}")
    for row in plan.rows:
        follower, what = table.get(row.weight, (None, None))
        if row.follower != follower or not fnmatch.fnmatchcase(row.activation, what or ""):
            problems.append(f"{row.weight}: expected {follower} {what}, got {row.follower} {row.activation!r}")
    return problems


@pytest.mark.parametrize("name", sorted(MODELS))
def test_auto_names_every_kernel_and_what_follows_it(name: str) -> None:
    plan, warned = _plan(name)
    assert {r.weight for r in plan.rows} == _kernels(name), warned
    problems = _follows_problems(name, plan)
    assert not problems, "\n" + "\n".join(problems)
    for row in (r for r in plan.rows if r.follower == "activation"):  # the closed form's gain, not the identity's
        fp = gains.fixed_point(row.activation)
        assert row.gain == pytest.approx(fp.gain * math.sqrt(fp.q_star) / math.sqrt(row.m_in), rel=1e-9), row


def test_planted_bug_activation_as_identity_is_caught(monkeypatch) -> None:
    """Mutation: a trace reader that takes every activation for the identity fails the table check."""
    monkeypatch.setattr(_jax_auto, "_activation", lambda region, var, exit_var, env: (("identity", None), "identity"))
    module, variables = _setup("block")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = initscale.auto(_inputs("block")).plan(module, variables=variables)
    assert _follows_problems("block", plan)


@pytest.mark.parametrize("name", ["packed_lm"])  # packed and tied; the block's layers are the same kinds
def test_auto_applied_measures_what_arrives(name: str) -> None:
    """Applied: each row's m_in is the mean square that arrives at its layer when the returned variables
    are re-applied (eager primitives vs linen's apply in float32: rel 1e-5), each kernel's std is
    gain/sqrt(fan_in) (relative sd of a sample std of n normal values 1/sqrt(2n); z = 6, Bonferroni over
    <= 6 kernels at ~1e-8 each), every value finite."""
    module, variables = _setup(name)
    new, report = isj.reinit(variables, initscale.auto(_inputs(name)), jax.random.key(3), module=module)
    arrived: dict[str, float] = {}

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and "kernel" in context.module.variables.get("params", {}):
            arrived.setdefault(
                "/".join(("params", *context.module.path, "kernel")),
                float(np.mean(np.square(np.asarray(args[0], np.float64)))),
            )
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        module.apply(new, *_inputs(name))
    for weight in _kernels(name):
        row = report[weight]
        assert "(measured)" in row.reason, row.reason
        m_in = float(row.reason.split("m_in ")[1].split(" ")[0])
        assert m_in == pytest.approx(arrived[weight], rel=1e-3), weight  # the label prints 4 digits
        values = np.asarray(_leaf(new, weight), np.float64)
        assert np.all(np.isfinite(values))
        assert float(values.std()) == pytest.approx(row.std, rel=6 / math.sqrt(2 * values.size)), weight


def _leaf(tree, path: str):
    for key in path.split("/"):
        tree = tree[key]
    return tree
