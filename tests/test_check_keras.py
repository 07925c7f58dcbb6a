"""initscale.keras.check on the backend this process runs (KERAS_BACKEND): a fresh model with
Keras's own initializers gives no flag against the rules that say what Keras draws; planted bugs
(a zeroed norm, one NaN, a 3x std) are each flagged by name."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import initscale

keras = pytest.importorskip("keras")
isk = pytest.importorskip("initscale.adapters.keras")

# What Keras 3 draws by default: glorot_uniform kernels, zero biases, U(-0.05, 0.05) embeddings,
# ones/zeros for norms (the defaults of the rules).
KERAS_DEFAULTS = {"Dense": initscale.presets.get("glorot_uniform"), "Conv2D": initscale.presets.get("glorot_uniform")}
EMBEDDING_DEFAULT = {"Embedding": initscale.Uniform(-0.05, 0.05)}


def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, name="fc")(x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))


def test_fresh_keras_model_gives_no_flag():
    m = model()
    assert isk.check(m).flags == {}
    report = isk.check(m, rules=KERAS_DEFAULTS)
    assert report.flags == {}, str(report)
    assert report["fc/kernel"].expected_std is not None


def test_fresh_embedding_gives_no_flag():
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,), dtype="int32"), keras.layers.Embedding(500, 32, name="emb")])
    assert isk.check(m, rules=EMBEDDING_DEFAULT).flags == {}


def _set(variable, fn):
    values = np.array(keras.ops.convert_to_numpy(variable.value))
    variable.assign(fn(values))


@pytest.mark.parametrize(
    ("path", "bug", "flag"),
    [
        ("ln/gamma", lambda v: np.zeros_like(v), "norm_scale_not_one"),
        ("bn/gamma", lambda v: np.zeros_like(v), "norm_scale_not_one"),
        ("fc/kernel", lambda v: np.where(np.arange(v.size).reshape(v.shape) == 7, np.nan, v), "non_finite"),
        ("fc/kernel", lambda v: 3 * v, "std_off"),
        ("conv/kernel", lambda v: np.zeros_like(v), "all_zero"),
    ],
    ids=["zeroed-layernorm", "zeroed-batchnorm", "nan", "3x", "all-zero"],
)
def test_planted_bug_is_flagged_by_name(path, bug, flag):
    m = model()
    variable = next(v for v in m.variables if v.path == path)
    _set(variable, bug)
    flags = isk.check(m, rules=KERAS_DEFAULTS).flags
    assert set(flags) == {path} and flag in flags[path], flags


def test_unbuilt_model_is_refused():
    with pytest.raises(ValueError, match="not built"):
        isk.check(keras.Sequential([keras.layers.Dense(4)]))


def test_keras_check_docstring_examples_run():
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(isk.check, "check", globs={}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0
