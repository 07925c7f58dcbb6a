"""tf_keras's portable streams (``initializer(..., stream=)``, ``reinit(..., stream_seed=)``):
the same values as Keras 3 on TensorFlow for the same seed and name, both drawn through
adapters/_keras_tf_stream.py (initscale.streams.draw's two stages with TensorFlow ops). Run in a child
process with KERAS_BACKEND=tensorflow, so Keras 3 and tf_keras share one TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("tf_keras")
pytest.importorskip("keras")

SCRIPT = r"""
import json, numpy as np, keras, tf_keras, initscale
from initscale.streams import Stream, stream_values
from initscale.adapters import keras as isk, tf_keras as istk
assert keras.backend.backend() == "tensorflow"
SPECS = ["he_normal", "he_uniform", "keras.truncated_normal", "lecun_normal"]
EXTRA = {"upper": initscale.TruncatedNormal(0.7, lower=3.0, upper=float("inf")),
         "far": initscale.TruncatedNormal(0.7, lower=38.3, upper=float("inf"))}
out = {"init": [], "reinit": None, "native": None, "reference": []}
for name in SPECS + list(EXTRA):
    spec = EXTRA.get(name) or initscale.presets.get(name)
    for layout, shape in (("keras", (5, 7)), ("keras.gru", (6, 12)), ("keras", (3, 3, 4, 6))):
        for dtype in ("float16", "bfloat16", "float32", "float64"):
            stream = Stream(3, "w")
            a = [np.asarray(istk.initializer(spec, layout, stream=stream)(shape, dtype), np.float64) for _ in range(3)]
            b = np.asarray(isk.initializer(spec, layout, stream=stream)(shape, dtype), np.float64)
            out["init"].append([name, layout, dtype, all(np.array_equal(x, b) for x in a)])
            if dtype in ("float16", "float32"):
                ref = stream_values(stream, spec, shape, layout, dtype=dtype)
                out["reference"].append([name, layout, dtype, bool(np.array_equal(a[0], ref))])

def build(lib):
    model = lib.Sequential([lib.layers.Input((4, 6)), lib.layers.GRU(5, name="gru"), lib.layers.Dense(3, name="d")])
    return model
k3, k2 = build(keras), build(tf_keras)
rules = {"GRU": initscale.presets.get("he_normal"), "Dense": initscale.presets.get("glorot_uniform")}
def names(path):  # Keras 3 paths and tf_keras names differ above the layer: name by (layer, leaf)
    return ("gru" if "gru" in path else "d") + "/" + path.rsplit(":", 1)[0].split("/")[-1]
r3 = isk.reinit(k3, rules, stream_seed=11, stream_names=names)
r2 = istk.reinit(k2, rules, stream_seed=11, stream_names=names)
w3 = {names(v.path): np.asarray(v.value) for v in k3.weights}
w2 = {names(v.name): v.numpy() for v in k2.weights}
out["names"] = [sorted(w3), sorted(w2)]
out["reinit"] = {k: bool(k in w2 and np.array_equal(w3[k], w2[k])) for k in w3}
n2 = istk.reinit(build(tf_keras), initscale.presets.get("he_normal"), stream_seed=1, fans="native")
out["native"] = sorted({row.fans for row in n2 if row.fans})
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def result():
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_initializer_stream_equals_keras3_on_tensorflow(result) -> None:
    """Every spec x layout x dtype: three tf_keras calls equal each other and Keras 3's (the first
    eager, then the compiled integer stage), bit for bit."""
    bad = [row for row in result["init"] if not row[3]]
    assert len(result["init"]) == 6 * 3 * 4 and not bad, bad


def test_initializer_stream_equals_the_numpy_reference(result) -> None:
    """float32 and float16 (rounded once, through float32 rounded to odd) equal the reference."""
    bad = [row for row in result["reference"] if not row[3]]
    assert result["reference"] and not bad, bad


def test_reinit_stream_seed_equals_keras3(result) -> None:
    """A GRU (gates stacked z, r, h: the canonical order taken) and a Dense: every variable the
    same as Keras 3's ``reinit(..., stream_seed=)`` for the same stream names."""
    assert len(result["reinit"]) == 5 and all(result["reinit"].values()), (result["reinit"], result["names"])


def test_reinit_takes_native_fans(result) -> None:
    assert result["native"] == ["native"]
