"""The Keras implementation (Keras 3 on this process's backend, and tf_keras) draws through the
shared algorithms (initscale._shared) and the one cached plan per weight (initscale.plan), and its
two adapters share one deprecation of the old positional ``initializer(spec, seed, layout)``.

That the values stayed the same to the bit is checked outside the suite, with the harness that
hashes every draw before and after (see the commit that made these algorithms shared)."""

from __future__ import annotations

import numpy as np
import pytest

import initscale
from initscale import _shared, plan, presets

keras = pytest.importorskip("keras")
isk = pytest.importorskip("initscale.adapters.keras")
_common = pytest.importorskip("initscale.adapters._keras_common")


def _adapter(name: str):
    return isk if name == "keras" else pytest.importorskip("initscale.adapters.tf_keras")


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def _spy(monkeypatch, module, name: str) -> list[tuple]:
    calls: list[tuple] = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("name", ["keras", "tf_keras"])
def test_orthogonal_is_the_shared_draw(monkeypatch, name) -> None:
    """An orthogonal init runs initscale._shared.orthogonal with the framework's ops, and gives
    gain x orthonormal blocks (one per gate of an LSTM kernel: 4 blocks of 16 x 4, Q^T Q = gain^2 I
    to float32 rounding, |error| <= 1e-5 for these 16-term sums of values below 1)."""
    calls = _spy(monkeypatch, _shared, "orthogonal")
    adapter = _adapter(name)
    w = adapter.Initializer(initscale.Orthogonal(2.0), seed=1, layout="keras.lstm")((16, 16), "float32")
    assert len(calls) == 1 and calls[0][0] == 2.0
    w = w.numpy() if name == "tf_keras" else _np(w)
    for block in np.split(np.asarray(w, np.float64), 4, axis=1):
        np.testing.assert_allclose(block.T @ block, 4.0 * np.eye(4), atol=1e-5)


@pytest.mark.parametrize("name", ["keras", "tf_keras"])
def test_upper_tail_interval_is_the_shared_mirror(monkeypatch, name) -> None:
    """A truncated normal on an upper-tail interval in [0.2, 1.0] sigma is mirrored by
    initscale._shared.lower_tail, and its values stay inside the interval."""
    calls = _spy(monkeypatch, _common, "lower_tail")
    adapter = _adapter(name)
    spec = initscale.TruncatedNormal(0.7, lower=0.2, upper=1.0)
    w = adapter.Initializer(spec, seed=2)((50, 40), "float32")
    w = w.numpy() if name == "tf_keras" else _np(w)
    assert calls and calls[0] == pytest.approx((0.2, 1.0))  # the standard bounds (a - loc)/sigma
    assert w.min() >= 0.7 * 0.2 * (1 - 2.0**-23) and w.max() <= 0.7 * 1.0 * (1 + 2.0**-23)


def test_an_initializer_reads_the_cached_weight_plan(monkeypatch) -> None:
    """Each draw looks up the weight's one cached plan (initscale.plan.weight_plan), built once per
    shape: the second call of a shape does not plan again."""
    calls = _spy(monkeypatch, plan, "weight_plan")
    init = isk.Initializer(presets.get("he_normal"), seed=0, layout="keras.lstm")
    init((8, 32), "float32")
    init((8, 32), "float32")
    init((4, 16), "float32")
    assert [c[1] for c in calls] == [(8, 32), (4, 16)]


def _double_rounding_cases() -> np.ndarray:
    """float64 values within 2^-30 (relative) of a float16 midpoint: a float64 -> float32 cast lands on
    the midpoint, and float32 -> float16 (ties to even) then rounds the wrong way for about half."""
    rng = np.random.default_rng(0)
    h = rng.uniform(-60000, 60000, 1000).astype(np.float16).astype(np.float64)
    mid = (h + np.nextafter(h.astype(np.float16), np.float16(np.inf)).astype(np.float64)) / 2
    return mid + np.abs(mid) * 2.0**-30 * rng.choice([-1.0, 1.0], mid.size)


def test_tensorflow_round_to_odd_rounds_once() -> None:
    """The TensorFlow ops of initscale._shared.round_to_odd (Keras 3's TensorFlow backend): float32
    rounded to odd, cast to float16, is NumPy's one rounding of the float64 value, exactly."""
    tf = pytest.importorskip("tensorflow")
    values = _double_rounding_cases()
    odd = _shared.round_to_odd(tf.constant(values, tf.float64), _common.tf_odd_ops())
    assert odd.dtype == tf.float32
    np.testing.assert_array_equal(tf.cast(odd, tf.float16).numpy(), values.astype(np.float16))


def test_mutation_tensorflows_plain_cast_rounds_twice() -> None:
    """A planted bug (TensorFlow's float64 -> float32 -> float16 cast, round to nearest twice) fails
    the check above."""
    tf = pytest.importorskip("tensorflow")
    values = _double_rounding_cases()
    twice = tf.cast(tf.cast(tf.constant(values, tf.float64), tf.float32), tf.float16).numpy()
    assert (twice != values.astype(np.float16)).sum() > 0


@pytest.mark.parametrize("name", ["keras", "tf_keras"])
def test_one_deprecation_names_each_adapters_own_function(name) -> None:
    """Both adapters wrap ``initializer`` with the one decorator of _keras_common, and its warning
    names the adapter's own function."""
    adapter = _adapter(name)
    assert adapter.initializer.__wrapped__.__module__ == adapter.__name__
    with pytest.warns(DeprecationWarning, match=rf"^{adapter.__name__}\.initializer: passing seed positionally"):
        adapter.initializer(presets.get("he_normal"), 3)
