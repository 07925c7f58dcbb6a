"""flax linen ``WeightNorm`` through ``initscale.jax.reinit``: the wrapped layer uses
scale · v / √(Σ v² + ε) (flax/linen/normalization.py, ``WeightNorm._l2_normalize``), with a scale
that flax starts at ones, so the kernel the layer uses has unit-norm columns whatever v's init.
reinit draws v as the layer's kernel and sets scale = √(Σ v² + ε): the layer then uses v."""

from __future__ import annotations

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
