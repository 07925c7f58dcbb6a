"""initscale.jax.check on linen variables and nnx modules: Flax's own init gives no flag against
rules saying what Flax draws; planted bugs (a zeroed norm, one NaN, a 3x std) are flagged by name."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import initscale

jax = pytest.importorskip("jax")
linen = pytest.importorskip("flax.linen")
isj = pytest.importorskip("initscale.adapters.jax")
jnp = jax.numpy

# Flax's defaults: lecun_normal kernels (jax's: truncated at ±2σ, corrected), zero biases, LayerNorm ones/zeros.
FLAX_DEFAULTS = {"Dense": initscale.presets.get("lecun_normal"), "Conv": initscale.presets.get("lecun_normal")}


class Net(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.Conv(32, (3, 3))(x)
        x = linen.LayerNorm()(x.reshape((x.shape[0], -1)))
        return linen.Dense(10)(linen.Dense(64)(x))


def variables():
    return Net().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_fresh_linen_model_gives_no_flag():
    v = variables()
    assert isj.check(v).flags == {}
    report = isj.check(v, rules=FLAX_DEFAULTS)
    assert report.flags == {}, str(report)
    assert report["params/Dense_1/kernel"].expected_std == pytest.approx(1 / np.sqrt(8 * 8 * 32))  # 2048 -> 64


def test_fresh_nnx_module_gives_no_flag():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Sequential(nnx.Linear(64, 128, rngs=nnx.Rngs(0)), nnx.LayerNorm(128, rngs=nnx.Rngs(1)))
    assert isj.check(model, rules={"Linear": initscale.presets.get("lecun_normal")}).flags == {}


def _plant(v, path, fn):
    node = v
    *parents, leaf = path.split("/")
    for key in parents:
        node = node[key]
    node[leaf] = fn(np.asarray(node[leaf]))


@pytest.mark.parametrize(
    ("path", "fn", "flag"),
    [
        ("params/LayerNorm_0/scale", np.zeros_like, "norm_scale_not_one"),
        ("params/Dense_0/kernel", lambda w: np.where(np.arange(w.size).reshape(w.shape) == 3, np.nan, w), "non_finite"),
        ("params/Dense_0/kernel", lambda w: 3 * w, "std_off"),
        ("params/Conv_0/kernel", np.zeros_like, "all_zero"),
    ],
    ids=["zeroed-norm", "nan", "3x", "all-zero"],
)
def test_planted_bug_is_flagged_by_name(path, fn, flag):
    v = jax.tree_util.tree_map(np.asarray, variables())
    _plant(v, path, fn)
    flags = isj.check(v, rules=FLAX_DEFAULTS).flags
    assert set(flags) == {path} and flag in flags[path], flags


def test_jax_check_docstring_examples_run():
    from initscale.adapters import _jax_check

    assert doctest.testmod(_jax_check, optionflags=doctest.ELLIPSIS).failed == 0
