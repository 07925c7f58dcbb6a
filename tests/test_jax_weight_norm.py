"""flax linen ``WeightNorm`` through ``initscale.jax.reinit``: the wrapped layer uses
scale · v / √(Σ v² + ε) (flax/linen/normalization.py, ``WeightNorm._l2_normalize``), with a scale
that flax starts at ones, so the kernel the layer uses has unit-norm columns whatever v's init.
reinit draws v as the layer's kernel and sets scale = √(Σ v² + ε): the layer then uses v. Also:
flax nnx's ``nnx.WeightNorm`` (scales that are not Params, a forward pass that overwrites the
kernel) and ``initscale.auto`` through linen's WeightNorm (LSUV's in tests/test_jax_lsuv.py)."""

from __future__ import annotations

import contextlib

import pytest

import initscale
from _stats import failures
from initscale import presets

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")
ij = pytest.importorskip("initscale.adapters.jax")

HE = presets.get("he_normal")
EPS = float(jnp.finfo(jnp.float32).eps)


class Net(nn.Module):
    features_axes: object = -1

    @nn.compact
    def __call__(self, x):
        y = nn.WeightNorm(nn.Conv(32, (3, 3), name="conv"), feature_axes=self.features_axes)(x)
        y = nn.relu(y).reshape(y.shape[0], -1)
        return nn.WeightNorm(nn.Dense(64, name="fc"))(y)


def _used(kernel, scale, axes, eps=1e-12):
    """The kernel the wrapped layer uses: scale · v / √(Σ v² + ε) over ``axes``."""
    keep = [1 if a in axes else d for a, d in enumerate(kernel.shape)]
    norm = jnp.sqrt(jnp.sum(kernel * kernel, axis=axes, keepdims=True) + eps)
    return kernel / norm * scale.reshape(keep)


def _rtol(kernel, axes) -> float:
    """|used − v| / |v|: the norm of the same n squares summed in float32 by flax (rsqrt) and by
    initscale (sqrt), in possibly other orders: (n − 1)ε apart at most (Higham §4.2), halved by
    the root; plus one rounding each for the root, the division and the product."""
    n = 1
    for a in axes:
        n *= kernel.shape[a]
    return ((n - 1) / 2 + 4) * EPS


@pytest.mark.parametrize(("features_axes", "conv_axes"), [(-1, (0, 1, 2)), (None, (0, 1, 2, 3))])
def test_weight_norm_scale_is_set_so_the_layer_uses_v_as_drawn(features_axes, conv_axes) -> None:
    net = Net(features_axes)
    x = jnp.ones((2, 6, 6, 3))
    variables = net.init(jax.random.key(0), x)
    new, report = ij.reinit(variables, HE, jax.random.key(1), module=net, example_inputs=(x,))
    for layer, axes in (("conv", conv_axes), ("fc", (0,))):
        scale_name = f"params/WeightNorm_{0 if layer == 'conv' else 1}/{layer}/kernel/scale"
        row, scale_row = report[f"params/{layer}/kernel"], report[scale_name]
        assert row.touched and row.layout is not None
        assert scale_row.touched and scale_row.spec is None and scale_row.reason.startswith("weight norm: scale")
        kernel = new["params"][layer]["kernel"]
        scale = new["params"][f"WeightNorm_{0 if layer == 'conv' else 1}"][f"{layer}/kernel/scale"]
        used = _used(kernel, scale, axes)
        assert float(jnp.max(jnp.abs(used - kernel) - _rtol(kernel, axes) * jnp.abs(kernel))) <= 0
        assert failures(kernel, HE.resolve(initscale.Fans(row.fan_in, row.fan_out))) == []
    # the model computes with v: its output equals the same layers without WeightNorm on v, within
    # what the weights' relative error r (_rtol, each layer) and the float32 dot products of n terms
    # on both sides (n·ε each, Higham §3.1) allow, relative to M = the same net on |x| with |v|
    # (ReLU is 1-Lipschitz and the biases are zeros): |Δ| <= (r₁ + r₂ + 2ε(n₁ + n₂))·M to first order.
    plain = nn.Sequential([nn.Conv(32, (3, 3)), nn.relu, lambda y: y.reshape(y.shape[0], -1), nn.Dense(64)])
    p = {"params": {"layers_0": new["params"]["conv"], "layers_3": new["params"]["fc"]}}
    magnitude = plain.apply(jax.tree_util.tree_map(jnp.abs, p), jnp.abs(x))
    conv, fc = new["params"]["conv"]["kernel"], new["params"]["fc"]["kernel"]
    n1, n2 = conv.shape[0] * conv.shape[1] * conv.shape[2], fc.shape[0]
    bound = (_rtol(conv, conv_axes) + _rtol(fc, (0,)) + 2 * EPS * (n1 + n2)) * magnitude
    assert bool(jnp.all(jnp.abs(net.apply(new, x) - plain.apply(p, x)) <= bound))


def test_mutation_the_scale_left_at_ones_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The planted bug: the scale kept at flax's ones (the behaviour before WeightNorm was read):
    # the layer then uses v / ‖v‖, unit-norm columns, not the drawn std.
    monkeypatch.setattr(ij._Backend, "finish", lambda self, targets: None)
    net = Net()
    x = jnp.ones((2, 6, 6, 3))
    variables = net.init(jax.random.key(0), x)
    new, _ = ij.reinit(variables, HE, jax.random.key(1), module=net, example_inputs=(x,))
    kernel, scale = new["params"]["fc"]["kernel"], new["params"]["WeightNorm_1"]["fc/kernel/scale"]
    used = _used(kernel, scale, (0,))
    assert float(jnp.max(jnp.abs(used - kernel) - _rtol(kernel, (0,)) * jnp.abs(kernel))) > 0


def test_a_rule_that_names_the_scale_is_obeyed() -> None:
    net = Net()
    x = jnp.ones((2, 6, 6, 3))
    variables = net.init(jax.random.key(0), x)
    name = "params/WeightNorm_1/fc/kernel/scale"
    new, report = ij.reinit(variables, {name: None, "*/kernel": HE}, jax.random.key(1), module=net, example_inputs=(x,))
    assert not report[name].touched and bool(jnp.all(new["params"]["WeightNorm_1"]["fc/kernel/scale"] == 1))


def test_check_reads_the_kernel_the_layer_uses() -> None:
    net = Net()
    x = jnp.ones((2, 6, 6, 3))
    variables = net.init(jax.random.key(0), x)
    new, _ = ij.reinit(variables, HE, jax.random.key(1), module=net, example_inputs=(x,))
    assert ij.check(new, HE, module=net, example_inputs=(x,)).flags == {}
    # flax's own init: scale ones, so each fc column has unit norm, std 1/√fan_in instead of He's
    params = dict(new["params"])
    params["WeightNorm_1"] = {"fc/kernel/scale": jnp.ones(64)}
    flags = ij.check({"params": params}, HE, module=net, example_inputs=(x,)).flags
    assert "params/fc/kernel" in flags


# flax nnx: nnx.WeightNorm keeps its scales as plain arrays (a dict keyed by each kernel's path in
# the wrapped layer, not nnx.Param) and its __call__ overwrites the kernel with scale · v / √(Σ v² + ε)
# (flax/nnx/nn/normalization.py WeightNorm._weightnorm_inplace, flax 0.12.8): a forward pass after a
# reinit that left the scales at ones would replace the drawn kernel by unit-norm columns.
nnx = pytest.importorskip("flax.nnx")


class NnxNet(nnx.Module):
    def __init__(self, rngs, conv_features_axes=-1):
        self.conv = nnx.WeightNorm(nnx.Conv(3, 32, (3, 3), rngs=rngs), feature_axes=conv_features_axes, rngs=rngs)
        self.fc = nnx.WeightNorm(nnx.Linear(32 * 36, 64, rngs=rngs), rngs=rngs)
        self.out = nnx.Linear(64, 4, rngs=rngs)

    def __call__(self, x):
        y = nnx.relu(self.conv(x)).reshape(x.shape[0], -1)
        return self.out(self.fc(y))


def _nnx_kernels(net):
    return {"conv": net.conv.layer_instance.kernel[...], "fc": net.fc.layer_instance.kernel[...]}


@pytest.mark.parametrize(("features_axes", "conv_axes"), [(-1, (0, 1, 2)), (None, (0, 1, 2, 3))])
def test_nnx_weight_norm_scale_is_set_so_a_forward_pass_keeps_v(features_axes, conv_axes) -> None:
    net = NnxNet(nnx.Rngs(0), features_axes)
    state, report = ij.reinit(net, HE, jax.random.key(1))
    for layer in ("conv", "fc"):
        scale_row = report[f"{layer}/scales/kernel/scale"]
        assert scale_row.touched and scale_row.spec is None and scale_row.reason.startswith("weight norm: scale")
        kernel = state[layer]["layer_instance"]["kernel"][...]
        assert failures(kernel, _he(report, f"{layer}/layer_instance/kernel")) == []
    nnx.update(net, state)
    drawn = _nnx_kernels(net)
    net(jnp.ones((2, 6, 6, 3)))  # overwrites each kernel with scale · v / ‖v‖
    for layer, axes in (("conv", conv_axes), ("fc", (0,))):
        v, used = drawn[layer], _nnx_kernels(net)[layer]
        assert float(jnp.max(jnp.abs(used - v) - _rtol(v, axes) * jnp.abs(v))) <= 0
    assert ij.check(net, HE).flags == {}


def _he(report, name):
    row = report[name]
    return HE.resolve(initscale.Fans(row.fan_in, row.fan_out))


def test_mutation_nnx_scales_left_at_ones_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The planted bug: the scales not set (finish a no-op, as before nnx.WeightNorm was read): the
    # forward pass replaces each drawn kernel by unit-norm columns, std 1/√fan_in, not He's √2 times it.
    monkeypatch.setattr(ij._Backend, "finish", lambda self, targets: None)
    net = NnxNet(nnx.Rngs(0))
    state, _ = ij.reinit(net, HE, jax.random.key(1))
    nnx.update(net, state)
    v = _nnx_kernels(net)["fc"]
    net(jnp.ones((2, 6, 6, 3)))
    used = _nnx_kernels(net)["fc"]
    assert float(jnp.max(jnp.abs(used - v) - _rtol(v, (0,)) * jnp.abs(v))) > 0
    assert "fc/layer_instance/kernel" in ij.check(net, HE).flags


def test_nnx_state_without_the_scales_is_refused_before_drawing() -> None:
    net = NnxNet(nnx.Rngs(0))
    params = nnx.state(net, nnx.Param)  # the scales are not Params: not in this state
    for call in (
        lambda: ij.reinit(params, HE, jax.random.key(1), module=net),
        lambda: ij.reinit(params, HE, jax.random.key(1), module=net, dry_run=True),
    ):
        with pytest.raises(ValueError, match=r"'conv/layer_instance/kernel' is the kernel of an nnx.Weight") as info:
            call()
        assert "'conv/scales/kernel/scale'" in str(info.value) and "'fc/layer_instance/kernel'" in str(info.value)
    with pytest.raises(ValueError, match="nnx.state"):
        ij.check(params, HE, module=net)
    # a rule that leaves the normed kernels alone draws the rest; the whole state works as the module does
    _, report = ij.reinit(params, {"*/layer_instance/kernel": None, "*/kernel": HE}, jax.random.key(1), module=net)
    assert report["out/kernel"].touched and not report["fc/layer_instance/kernel"].touched
    _, report = ij.reinit(nnx.state(net), HE, jax.random.key(1), module=net)
    assert report["fc/scales/kernel/scale"].touched


def test_nnx_rule_that_names_the_scale_is_obeyed() -> None:
    net = NnxNet(nnx.Rngs(0))
    state, report = ij.reinit(net, {"fc/scales/kernel/scale": None, "*/kernel": HE}, jax.random.key(1))
    assert not report["fc/scales/kernel/scale"].touched and bool(jnp.all(state["fc"]["scales"][("kernel",)] == 1))
    assert report["conv/scales/kernel/scale"].touched


# initscale.auto through linen's WeightNorm: the wrapper is no activation norm (its output is its
# layer's), and a measured factor goes to v and to its scale together, at the WeightNorm's call (it
# computes scale · v / ‖v‖ before calling its layer). The same net without WeightNorm, with the same
# layer names, draws the same v: auto must give it the same gains, so the kernels the two use agree.
class AutoNet(nn.Module):
    weight_norm: bool

    @nn.compact
    def __call__(self, x):
        for i in range(4):
            dense = nn.Dense(64, name=f"fc{i}")
            x = nn.relu((nn.WeightNorm(dense, name=f"wn{i}") if self.weight_norm else dense)(x))
        return x


def _auto_kernels(weight_norm: bool):
    x = jax.random.normal(jax.random.key(0), (512, 32)) * 3
    net = AutoNet(weight_norm)
    new, report = ij.reinit(net.init(jax.random.key(1), x), initscale.auto(x), jax.random.key(2), module=net)
    kernels = []
    for i in range(4):
        v = new["params"][f"fc{i}"]["kernel"]
        kernels.append(_used(v, new["params"][f"wn{i}"][f"fc{i}/kernel/scale"], (0,)) if weight_norm else v)
    return kernels, report


def _auto_rtol(kernels) -> list[float]:
    """|used − plain| / |plain| for layer L, to first order: its own weight-norm rounding r_L
    (:func:`_rtol`, plus one rounding each for the factor on v and on the scale), and half the relative
    error of the m_in its factor is computed from (gain ∝ 1/√m_in), which is at most twice the relative
    error of the layer inputs: Σ over the layers before of r_l and of two float32 dot products of n_l
    terms (n_l·ε each, Higham §3.1)."""
    out, before = [], 0.0
    for k in kernels:
        n = k.shape[0]
        r = _rtol(k, (0,)) + 2 * EPS
        out.append(r + before)  # ½ · 2 · Σ_{l<L}
        before += r + 2 * n * EPS
    return out


def test_auto_gains_through_weight_norm_equal_the_plain_nets() -> None:
    plain, _ = _auto_kernels(False)
    normed, report = _auto_kernels(True)
    for i, (a, b, tol) in enumerate(zip(plain, normed, _auto_rtol(plain), strict=True)):
        assert "then relu" in report[f"params/fc{i}/kernel"].reason
        assert float(jnp.max(jnp.abs(b - a) - tol * jnp.abs(a))) <= 0, i


@pytest.mark.parametrize("bug", ["read as a norm", "marked at its layer's call", "factor on v alone"])
def test_mutation_auto_through_weight_norm(monkeypatch: pytest.MonkeyPatch, bug: str) -> None:
    # The planted bugs: WeightNorm taken for an activation norm (the behaviour before: every kernel
    # "then norm", gain 1); the layer not marked at its WeightNorm's call (then it counts as inside a
    # WeightNorm over a block: predicted gains, with a warning, not the plain net's measured ones); the
    # measured factor multiplied into v alone (divided out by scale · v / ‖v‖).
    from initscale.adapters import _jax_auto

    if bug != "factor on v alone":
        monkeypatch.setattr(_jax_auto, "_weight_normed_layer", lambda module: None)
    if bug == "read as a norm":
        monkeypatch.setattr(_jax_auto, "_KERNEL_NORMS", ())
    if bug == "factor on v alone":
        monkeypatch.setattr(ij, "_weight_norm_scales", lambda *a, **k: {})
    plain, _ = _auto_kernels(False)
    with (
        contextlib.nullcontext()
        if bug == "factor on v alone"
        else pytest.warns(UserWarning, match="keep their predicted gains")
    ):
        normed, _ = _auto_kernels(True)
    assert any(
        float(jnp.max(jnp.abs(b - a) - tol * jnp.abs(a))) > 0
        for a, b, tol in zip(plain, normed, _auto_rtol(plain), strict=True)
    )


@pytest.mark.parametrize("planted", [False, True])
def test_auto_inside_a_weight_norm_over_a_block_keeps_predicted_gains_and_says_so(monkeypatch, planted) -> None:
    # The block's kernels are normalized before it runs: their measured factors could not reach the
    # pass, so they keep the predicted gains, labelled so, with a warning naming them. Its last layer
    # is followed by relu (WeightNorm is no activation norm); the planted bug (WeightNorm read as a norm,
    # the behaviour before) gives "then norm", gain 1.
    from _weight_norm_nets import BlockNet

    from initscale.adapters import _jax_auto

    if planted:
        monkeypatch.setattr(_jax_auto, "_KERNEL_NORMS", ())
    x = jax.random.normal(jax.random.key(0), (256, 24))
    net = BlockNet()
    with pytest.warns(UserWarning, match=r"inside a WeightNorm that wraps a block.*params/block/a/kernel"):
        _, report = ij.reinit(net.init(jax.random.key(1), x), initscale.auto(x), jax.random.key(2), module=net)
    b = report["params/block/b/kernel"].reason
    assert ("then norm" in b) is planted and ("then relu" in b) is not planted
    assert "(predicted)" in report["params/block/a/kernel"].reason and "(predicted)" in b
    assert "(measured)" in report["params/head/kernel"].reason


class MixedNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = nn.WeightNorm(nn.Dense(64, name="fc"))(x)
        return nn.Conv(8, (3,), name="conv")(y.reshape(y.shape[0], 8, 8))


@pytest.mark.parametrize("planted", [False, True])
def test_a_class_rule_reaches_only_its_class_beside_a_weight_norm(monkeypatch, planted) -> None:
    # linen's map_variables calls the wrapped Dense unbound too, with path (): read as the root, every
    # leaf's owners started with Dense, so a rule on "Dense" also drew the Conv kernel. The planted bug
    # (every call recorded, the behaviour before) shows it.
    if planted:
        monkeypatch.setattr(ij, "_is_scope_of", lambda path, called, root: True)
    net, x = MixedNet(), jnp.ones((2, 32))
    variables = net.init(jax.random.key(0), x)
    _, report = ij.reinit(variables, {"Dense": HE}, jax.random.key(1), module=net, example_inputs=(x,))
    assert report["params/fc/kernel"].touched
    assert report["params/conv/kernel"].touched is planted
