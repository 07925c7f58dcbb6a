"""flax ``SpectralNorm`` (linen's and nnx's) through ``initscale.jax.reinit``: the wrapped layer
divides its kernel W (as a matrix, (-1, last axis)) by σ, a power-iteration estimate of its largest
singular value from a stored ``u`` (flax/linen/normalization.py ``SpectralNorm._spectral_normalize``,
flax 0.12.8; nnx the same). reinit draws W as the layer's kernel, then refreshes u and the recorded
σ by 15 power iterations from the stored u (as torch's ``spectral_norm`` does when applied), and
warns that the layer uses W / σ(W), spectral norm 1, whatever the spec."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from initscale import presets

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")
ij = pytest.importorskip("initscale.adapters.jax")

HE = presets.get("he_normal")
EPS = float(np.finfo(np.float32).eps)
STEPS = 15


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.SpectralNorm(nn.Conv(16, (3, 3), name="conv"))(x, update_stats=train)
        y = nn.relu(y).reshape(y.shape[0], -1)
        return nn.SpectralNorm(nn.Dense(32, name="fc"))(y, update_stats=train)


def _reference(kernel, u, eps=1e-12, steps=STEPS):
    """u and σ after ``steps`` power iterations, in float64 NumPy, as flax computes them."""
    w = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    u = np.asarray(u, np.float64).reshape(1, -1)

    def l2(x):
        return x / np.sqrt((x * x).sum() + eps)

    for _ in range(steps):
        v = l2(u @ w.T)
        u = l2(v @ w)
    return u, float((v @ w @ u.T)[0, 0])


def _tolerance(kernel) -> float:
    """|u₃₂ − u₆₄| (u of unit norm) and |σ₃₂ − σ₆₄| / σ₆₄: each step's two float32 products of at
    most m + n terms add (m + n)·ε (Higham §3.1) and the two normalizations 4ε; a normalized power
    step does not amplify an earlier error (its Jacobian has norm σ₂/σ₁ < 1 off u), so the steps add:
    steps · (m + n + 4) · ε."""
    m = int(np.prod(kernel.shape[:-1]))
    return STEPS * (m + kernel.shape[-1] + 4) * EPS


def _linen():
    net = Net()
    x = jnp.ones((2, 6, 6, 3))
    return net, x, net.init(jax.random.key(0), x)


def _assert_refreshed(kernel, u_before, u_after, sigma_after) -> None:
    u_ref, sigma_ref = _reference(kernel, u_before)
    tol = _tolerance(kernel)
    assert float(np.max(np.abs(np.asarray(u_after, np.float64).reshape(1, -1) - u_ref))) <= tol
    assert abs(float(sigma_after) - sigma_ref) <= tol * sigma_ref


def test_linen_spectral_norm_state_is_refreshed_for_the_drawn_kernel() -> None:
    net, x, variables = _linen()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new, report = ij.reinit(variables, HE, jax.random.key(1), module=net, example_inputs=(x,))
    messages = [str(w.message) for w in caught]
    assert any("under SpectralNorm" in m and "'params/fc/kernel'" in m and "spectral norm 1" in m for m in messages)
    assert not any("does not recognise" in m or "untouched" in m for m in messages)
    for i, layer in enumerate(("conv", "fc")):
        state = f"batch_stats/SpectralNorm_{i}/{layer}/kernel"
        for leaf in ("u", "sigma"):
            row = report[f"{state}/{leaf}"]
            assert row.touched and row.spec is None and row.reason.startswith("spectral norm: u (and σ) refreshed")
        stats = new["batch_stats"][f"SpectralNorm_{i}"]
        kernel = new["params"][layer]["kernel"]
        u_before = variables["batch_stats"][f"SpectralNorm_{i}"][f"{layer}/kernel/u"]
        _assert_refreshed(kernel, u_before, stats[f"{layer}/kernel/u"], stats[f"{layer}/kernel/sigma"])
        assert report[f"params/{layer}/kernel"].touched


def test_mutation_the_state_left_stale_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The planted bug: the power-iteration state kept (the behaviour before): u is flax's random start
    # and σ its 1.0, which say nothing of the drawn kernel.
    monkeypatch.setattr(ij, "_power_iteration", lambda kernel, u, eps, steps: (u, jnp.ones(())))
    net, x, variables = _linen()
    with pytest.warns(UserWarning, match="under SpectralNorm"):
        new, _ = ij.reinit(variables, HE, jax.random.key(1), module=net, example_inputs=(x,))
    stats, kernel = new["batch_stats"]["SpectralNorm_1"], new["params"]["fc"]["kernel"]
    u_before = variables["batch_stats"]["SpectralNorm_1"]["fc/kernel/u"]
    with pytest.raises(AssertionError):
        _assert_refreshed(kernel, u_before, stats["fc/kernel/u"], stats["fc/kernel/sigma"])


def test_a_rule_that_names_u_keeps_it_and_sigma_is_still_set() -> None:
    net, x, variables = _linen()
    u_name = "batch_stats/SpectralNorm_1/fc/kernel/u"
    with pytest.warns(UserWarning, match="under SpectralNorm"):
        new, report = ij.reinit(
            variables, {u_name: None, "*/kernel": HE}, jax.random.key(1), module=net, example_inputs=(x,)
        )
    assert not report[u_name].touched
    assert bool(
        jnp.all(
            new["batch_stats"]["SpectralNorm_1"]["fc/kernel/u"]
            == variables["batch_stats"]["SpectralNorm_1"]["fc/kernel/u"]
        )
    )
    assert report["batch_stats/SpectralNorm_1/fc/kernel/sigma"].touched
    _, sigma = _reference(new["params"]["fc"]["kernel"], variables["batch_stats"]["SpectralNorm_1"]["fc/kernel/u"])
    tol = _tolerance(new["params"]["fc"]["kernel"])
    assert abs(float(new["batch_stats"]["SpectralNorm_1"]["fc/kernel/sigma"]) - sigma) <= tol * sigma


nnx = pytest.importorskip("flax.nnx")


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.sn = nnx.SpectralNorm(nnx.Linear(32, 64, rngs=rngs), rngs=rngs)
        self.bn = nnx.BatchNorm(64, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.sn(x))


def test_nnx_spectral_norm_state_is_returned_refreshed() -> None:
    net = NnxNet(nnx.Rngs(0))
    u_before = net.sn.batch_stats[("kernel", "u")][...]
    with pytest.warns(UserWarning, match="under SpectralNorm were drawn as their layer's kernel"):
        state, report = ij.reinit(net, HE, jax.random.key(1))
    assert report["sn/batch_stats/kernel/u"].touched and report["sn/batch_stats/kernel/sigma"].touched
    assert "bn/mean" not in {r.name for r in report.rows}  # BatchNorm's running stats are not SpectralNorm's
    nnx.update(net, state)
    kernel = net.sn.layer_instance.kernel[...]
    _assert_refreshed(
        kernel, u_before, net.sn.batch_stats[("kernel", "u")][...], net.sn.batch_stats[("kernel", "sigma")][...]
    )


def test_nnx_state_without_the_spectral_state_warns_by_name() -> None:
    net = NnxNet(nnx.Rngs(0))
    with pytest.warns(
        UserWarning, match=r"not in the variables passed, so it was not refreshed: 'sn/layer_instance/kernel'"
    ):
        ij.reinit(nnx.state(net, nnx.Param), HE, jax.random.key(1), module=net)
