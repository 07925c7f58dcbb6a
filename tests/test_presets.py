"""Presets: every name builds, and its numbers match values derived by hand from each source.

Every expected value below is written as the formula the source framework applies (see
research/presets.md), evaluated with the fans of the row's shape worked out by hand. The only
shared constant is the variance of a standard normal truncated to [-2, 2], computed here from its
textbook formula, not taken from initscale:

    Var[Z | a ≤ Z ≤ b] = 1 + (aφ(a) − bφ(b))/Z − ((φ(a) − φ(b))/Z)²,   Z = Φ(b) − Φ(a)

Notation: FI/FO are fan_in/fan_out, TV2 = tvar(-2, 2) = 0.8796256610342398², S2 = √TV2.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import initscale
from initscale import presets
from initscale.presets import PresetInfo

sqrt = math.sqrt
REL = 1e-12


# --- reference maths, independent of initscale ----------------------------------------------------


def phi(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / sqrt(2.0 * math.pi)


def Phi(x: float) -> float:
    return 0.5 * math.erfc(-x / sqrt(2.0))


def tvar(a: float, b: float) -> float:
    """Variance of N(0, 1) truncated to [a, b]."""
    z = Phi(b) - Phi(a)
    m = (phi(a) - phi(b)) / z
    return 1.0 + (a * phi(a) - b * phi(b)) / z - m * m


def tmean(a: float, b: float) -> float:
    """Mean of N(0, 1) truncated to [a, b]."""
    return (phi(a) - phi(b)) / (Phi(b) - Phi(a))


TV2 = tvar(-2.0, 2.0)  # 0.7737413053…
S2 = sqrt(TV2)  # 0.8796256610… (the Keras/JAX correction constant)


def pm(x: float) -> tuple[float, float]:
    return (-x, x)


def test_reference_constant_is_the_frameworks_literal() -> None:
    # Keras 3, JAX and TF core all divide by the literal .87962566103423978.
    assert pytest.approx(0.87962566103423978, rel=1e-15) == S2
    stats = pytest.importorskip("scipy.stats")
    assert pytest.approx(stats.truncnorm.var(-2, 2), rel=1e-13) == TV2
    assert pytest.approx(stats.truncnorm.var(-1.5, 2.5), rel=1e-13) == tvar(-1.5, 2.5)


# --- the table ---------------------------------------------------------------------------------------

# Keras-layout conv kernel (3, 3, 64, 128): receptive field 9.
KS = (3, 3, 64, 128)
KFI, KFO = 3 * 3 * 64, 3 * 3 * 128  # 576, 1152
# Torch-layout conv weight (64, 32, 3, 3) = (out, in, kh, kw).
TS = (64, 32, 3, 3)
TFI, TFO = 32 * 9, 64 * 9  # 288, 576
# A dense (in, out) = (784, 500) keras kernel, as in the Theano/numpy recipes.
DS = (784, 500)
DFI, DFO = 784, 500


@dataclass(frozen=True)
class Case:
    name: str
    kwargs: dict[str, Any]
    shape: tuple[int, ...]
    layout: str
    variance: float
    bounds: tuple[float, float] | None
    param: float
    label: str = ""


CASES: list[Case] = []


def case(
    name: str,
    kwargs: dict[str, Any],
    shape: tuple[int, ...],
    layout: str,
    variance: float,
    bounds: tuple[float, float] | None,
    param: float,
    label: str = "",
) -> None:
    CASES.append(Case(name, kwargs, shape, layout, variance, bounds, param, label))


# Keras / JAX unqualified names and their aliases: corrected truncated normals (σ = √(scale/n)/S2).
for n in ("glorot_uniform", "xavier_uniform", "keras.glorot_uniform", "jax.glorot_uniform"):
    case(n, {}, KS, "keras", 2 / (KFI + KFO), pm(sqrt(6 / (KFI + KFO))), sqrt(6 / (KFI + KFO)))
for n in ("glorot_normal", "xavier_normal", "keras.glorot_normal", "jax.glorot_normal"):
    case(n, {}, KS, "keras", 2 / (KFI + KFO), pm(2 * sqrt(2 / (KFI + KFO)) / S2), sqrt(2 / (KFI + KFO)) / S2)
for n in ("he_uniform", "kaiming_uniform", "keras.he_uniform", "jax.he_uniform"):
    case(n, {}, KS, "keras", 2 / KFI, pm(sqrt(6 / KFI)), sqrt(6 / KFI))
for n in ("he_normal", "kaiming_normal", "keras.he_normal", "jax.he_normal"):
    case(n, {}, KS, "keras", 2 / KFI, pm(2 * sqrt(2 / KFI) / S2), sqrt(2 / KFI) / S2)
for n in ("lecun_uniform", "keras.lecun_uniform", "jax.lecun_uniform"):
    case(n, {}, KS, "keras", 1 / KFI, pm(sqrt(3 / KFI)), sqrt(3 / KFI))
for n in ("lecun_normal", "keras.lecun_normal", "jax.lecun_normal"):
    case(n, {}, KS, "keras", 1 / KFI, pm(2 * sqrt(1 / KFI) / S2), sqrt(1 / KFI) / S2)
# the same on the jax layout (identical fans for a rank-4 kernel)
case("jax.he_normal", {}, KS, "jax", 2 / KFI, pm(2 * sqrt(2 / KFI) / S2), sqrt(2 / KFI) / S2, "jax-layout")

# variance_scaling (JAX semantics: "normal" is untruncated)
for n in ("variance_scaling", "jax.variance_scaling"):
    case(n, {}, KS, "keras", 1 / KFI, pm(2 * sqrt(1 / KFI) / S2), sqrt(1 / KFI) / S2, "defaults")
    case(
        n,
        {"scale": 2.0, "mode": "fan_geo_avg", "distribution": "normal"},
        KS,
        "jax",
        2 / sqrt(KFI * KFO),
        None,
        sqrt(2 / sqrt(KFI * KFO)),
        "geo-normal",
    )
    case(
        n,
        {"scale": 0.5, "mode": "fan_out", "distribution": "uniform"},
        KS,
        "jax",
        0.5 / KFO,
        pm(sqrt(3 * 0.5 / KFO)),
        sqrt(1.5 / KFO),
        "fan_out-uniform",
    )
    case(
        n,
        {"scale": 3.0, "mode": "fan_avg", "distribution": "truncated_normal"},
        KS,
        "jax",
        3 / ((KFI + KFO) / 2),
        pm(2 * sqrt(6 / (KFI + KFO)) / S2),
        sqrt(6 / (KFI + KFO)) / S2,
        "fan_avg-tn",
    )

# keras.variance_scaling: "normal" is stored as the (corrected) truncated normal,
# "untruncated_normal" is N(0, scale/n).
case("keras.variance_scaling", {}, KS, "keras", 1 / KFI, pm(2 * sqrt(1 / KFI) / S2), sqrt(1 / KFI) / S2, "defaults")
case(
    "keras.variance_scaling",
    {"scale": 2.0, "mode": "fan_avg", "distribution": "normal"},
    KS,
    "keras",
    4 / (KFI + KFO),
    pm(2 * sqrt(4 / (KFI + KFO)) / S2),
    sqrt(4 / (KFI + KFO)) / S2,
    "normal=truncated",
)
case(
    "keras.variance_scaling",
    {"scale": 2.0, "mode": "fan_avg", "distribution": "untruncated_normal"},
    KS,
    "keras",
    4 / (KFI + KFO),
    None,
    sqrt(4 / (KFI + KFO)),
    "untruncated",
)
case(
    "keras.variance_scaling",
    {"scale": 1.0, "mode": "fan_out", "distribution": "uniform"},
    KS,
    "keras",
    1 / KFO,
    pm(sqrt(3 / KFO)),
    sqrt(3 / KFO),
    "uniform",
)

# plain Keras initializers: RandomNormal(0, 0.05), TruncatedNormal(0, 0.05) cut at ±2 stddev,
# not corrected, RandomUniform(±0.05).
case("keras.random_normal", {}, KS, "keras", 0.05**2, None, 0.05, "defaults")
case("keras.random_normal", {"mean": 0.3, "stddev": 0.2}, KS, "keras", 0.2**2, None, 0.2, "mean-stddev")
case("keras.truncated_normal", {}, KS, "keras", 0.05**2 * TV2, pm(2 * 0.05), 0.05, "defaults")
case(
    "keras.truncated_normal",
    {"mean": 1.0, "stddev": 0.5},
    KS,
    "keras",
    0.5**2 * TV2,
    (1 - 2 * 0.5, 1 + 2 * 0.5),
    0.5,
    "mean-stddev",
)
case("keras.random_uniform", {}, KS, "keras", (0.05 - -0.05) ** 2 / 12, (-0.05, 0.05), 0.05, "defaults")
case("keras.random_uniform", {"minval": 0.0, "maxval": 1.0}, KS, "keras", 1 / 12, (0.0, 1.0), 0.5, "0-1")

# orthogonal: gain × Haar (rows × cols); mean square gain²/max(rows, cols).
# Keras kernel (3,3,64,128): matrix view 128 outputs × 576 (=3·3·64) inputs.
for n in ("keras.orthogonal", "orthogonal"):
    case(n, {}, KS, "keras", 1 / max(128, 576), pm(1.0), 1.0, "defaults")
    case(n, {"gain": 2.0}, KS, "keras", 2.0**2 / max(128, 576), pm(2.0), 2.0, "gain2")
case("jax.orthogonal", {}, (256, 64), "flax", 1 / max(64, 256), pm(1.0), 1.0, "defaults")
case("jax.orthogonal", {"scale": 0.5}, (64, 256), "flax", 0.5**2 / max(64, 256), pm(0.5), 0.5, "scale")
case("flax.lstm_recurrent_kernel", {}, (128, 128), "flax", 1 / 128, pm(1.0), 1.0)
case("torch.orthogonal", {}, TS, "torch", 1 / max(64, 288), pm(1.0), 1.0, "defaults")
case("torch.orthogonal", {"gain": sqrt(2)}, TS, "torch", 2 / max(64, 288), pm(sqrt(2)), sqrt(2), "gain")

# constants
for n in ("keras.zeros", "zeros", "jax.zeros", "flax.bias"):
    case(n, {}, KS, "keras", 0.0, (0.0, 0.0), 0.0)
for n in ("keras.ones", "ones", "jax.ones"):
    case(n, {}, KS, "keras", 0.0, (1.0, 1.0), 1.0)
case("torch.constant", {}, TS, "torch", 0.0, (0.0, 0.0), 0.0, "defaults")
case("torch.constant", {"val": 0.3}, TS, "torch", 0.0, (0.3, 0.3), 0.3, "val")

# jax simple initializers: normal(1e-2), uniform U[0, 1e-2) (not centred), truncated_normal(1e-2)
# with bounds in std units and no correction.
case("jax.normal", {}, KS, "flax", 1e-2**2, None, 1e-2, "defaults")
case("jax.normal", {"stddev": 0.5}, KS, "flax", 0.25, None, 0.5, "stddev")
case("jax.uniform", {}, KS, "flax", 1e-2**2 / 12, (0.0, 1e-2), 1e-2 / 2, "defaults")
case("jax.uniform", {"scale": 2.0}, KS, "flax", 4 / 12, (0.0, 2.0), 1.0, "scale")
case("jax.truncated_normal", {}, KS, "flax", 1e-2**2 * TV2, pm(2e-2), 1e-2, "defaults")
case(
    "jax.truncated_normal",
    {"stddev": 0.1, "lower": -1.0, "upper": 3.0},
    KS,
    "flax",
    0.1**2 * tvar(-1, 3),
    (-0.1, 0.3),
    0.1,
    "asymmetric",
)

# Flax layer defaults: lecun_normal kernels; Embed N(0, 1/features) untruncated.
FLAX_CONV = (3, 3, 32, 64)  # fan_in = 9·32 = 288
case("flax.dense_kernel", {}, (512, 256), "flax.dense", 1 / 512, pm(2 * sqrt(1 / 512) / S2), sqrt(1 / 512) / S2)
case("flax.conv_kernel", {}, FLAX_CONV, "flax.conv", 1 / 288, pm(2 * sqrt(1 / 288) / S2), sqrt(1 / 288) / S2)
case("flax.lstm_kernel", {}, (64, 128), "flax.lstm", 1 / 64, pm(2 * sqrt(1 / 64) / S2), sqrt(1 / 64) / S2)
case("flax.embed", {}, (1000, 64), "flax.embed", 1 / 64, None, 1 / 8, "forward")
case("flax.embed", {}, (1000, 64), "flax.embed:native=true", 1 / 64, None, 1 / 8, "native")

# PyTorch (weight (64, 32, 3, 3): FI = 32·9 = 288, FO = 64·9 = 576); normals are untruncated.
case(
    "torch.xavier_uniform",
    {},
    TS,
    "torch",
    2 / (TFI + TFO),
    pm(sqrt(6 / (TFI + TFO))),
    sqrt(6 / (TFI + TFO)),
    "defaults",
)
case(
    "torch.xavier_uniform",
    {"gain": 5 / 3},
    TS,
    "torch",
    (5 / 3) ** 2 * 2 / (TFI + TFO),
    pm(5 / 3 * sqrt(6 / (TFI + TFO))),
    5 / 3 * sqrt(6 / (TFI + TFO)),
    "gain-tanh",
)
case("torch.xavier_normal", {}, TS, "torch", 2 / (TFI + TFO), None, sqrt(2 / (TFI + TFO)), "defaults")
case(
    "torch.xavier_normal",
    {"gain": sqrt(2)},
    TS,
    "torch",
    2 * 2 / (TFI + TFO),
    None,
    sqrt(2) * sqrt(2 / (TFI + TFO)),
    "gain-relu",
)
# kaiming defaults: nonlinearity='leaky_relu' with a=0 → gain √(2/(1+0²)) = √2 (not the 0.01 slope).
case(
    "torch.kaiming_uniform", {}, TS, "torch", 2 / TFI, pm(sqrt(2) * sqrt(3 / TFI)), sqrt(2) * sqrt(3 / TFI), "defaults"
)
case(
    "torch.kaiming_uniform",
    {"a": sqrt(5)},
    TS,
    "torch",
    (2 / (1 + 5)) / TFI,
    pm(1 / sqrt(TFI)),
    1 / sqrt(TFI),
    "a=sqrt5",
)
case(
    "torch.kaiming_uniform",
    {"mode": "fan_out", "nonlinearity": "relu"},
    TS,
    "torch",
    2 / TFO,
    pm(sqrt(6 / TFO)),
    sqrt(6 / TFO),
    "relu-fan_out",
)
case(
    "torch.kaiming_uniform",
    {"a": 0.3, "nonlinearity": "tanh"},
    TS,
    "torch",
    (5 / 3) ** 2 / TFI,
    pm(5 / 3 * sqrt(3 / TFI)),
    5 / 3 * sqrt(3 / TFI),
    "tanh-ignores-a",
)
case("torch.kaiming_normal", {}, TS, "torch", 2 / TFI, None, sqrt(2 / TFI), "defaults")
case(
    "torch.kaiming_normal",
    {"a": 0.2, "mode": "fan_out"},
    TS,
    "torch",
    (2 / (1 + 0.04)) / (64 * 9),
    None,
    sqrt(2 / (1 + 0.04)) / sqrt(576),
    "a0.2-fan_out",
)
case("torch.kaiming_normal", {"nonlinearity": "selu"}, TS, "torch", 0.75**2 / TFI, None, 0.75 / sqrt(TFI), "selu")
case(
    "torch.kaiming_normal",
    {"nonlinearity": "leaky_relu", "a": 0.01},
    TS,
    "torch",
    (2 / (1 + 0.01**2)) / TFI,
    None,
    sqrt(2 / (1 + 0.01**2) / TFI),
    "a0.01",
)
# trunc_normal_ bounds [a, b] are absolute: with std=0.02 the cut is at ±100σ (nothing truncated).
case("torch.trunc_normal", {}, TS, "torch", 1.0 * TV2, (-2.0, 2.0), 1.0, "defaults")
case(
    "torch.trunc_normal", {"std": 0.02}, TS, "torch", 0.02**2 * tvar(-2 / 0.02, 2 / 0.02), (-2.0, 2.0), 0.02, "std0.02"
)
case(
    "torch.trunc_normal",
    {"mean": 0.5, "std": 1.0, "a": -1.0, "b": 3.0},
    TS,
    "torch",
    tvar((-1 - 0.5) / 1, (3 - 0.5) / 1),
    (-1.0, 3.0),
    1.0,
    "asymmetric",
)
case("torch.normal", {}, TS, "torch", 1.0, None, 1.0, "defaults")
case("torch.normal", {"mean": 0.1, "std": 0.02}, TS, "torch", 0.02**2, None, 0.02, "mean-std")
case("torch.uniform", {}, TS, "torch", 1 / 12, (0.0, 1.0), 0.5, "defaults")
case("torch.uniform", {"a": -0.1, "b": 0.1}, TS, "torch", 0.2**2 / 12, (-0.1, 0.1), 0.1, "symmetric")
# layer defaults: kaiming_uniform_(a=√5) → U(±1/√fan_in); the bias uses the weight's fan_in.
# nn.Linear(400, 30): weight (30, 400), fan_in 400 → bound 1/20.
for n in ("torch.linear_default", "torch.linear_default_bias"):
    case(n, {}, (30, 400), "torch:native=true", (1 / sqrt(400)) ** 2 / 3, pm(1 / sqrt(400)), 1 / sqrt(400), "linear")
# nn.Conv2d(16, 64, 3, groups=2): weight (64, 8, 3, 3), fan_in 8·9 = 72.
for n in ("torch.conv_default", "torch.conv_default_bias"):
    case(n, {}, (64, 8, 3, 3), "torch:native=true", 1 / 72 / 3, pm(1 / sqrt(72)), 1 / sqrt(72), "conv")
    # nn.ConvTranspose2d(16, 64, 3, groups=2): weight (16, 32, 3, 3); torch's fan_in = out/groups·k = 32·9 = 288.
    case(
        n,
        {},
        (16, 32, 3, 3),
        "torch.conv_transpose:native=true",
        1 / 288 / 3,
        pm(1 / sqrt(288)),
        1 / sqrt(288),
        "conv_transpose-native",
    )
# …whereas the forward-pass layout gives the true fan_in = in/groups·k = 16/2·9 = 72.
case(
    "torch.conv_default",
    {},
    (16, 32, 3, 3),
    "torch.conv_transpose:groups=2",
    1 / 72 / 3,
    pm(1 / sqrt(72)),
    1 / sqrt(72),
    "conv_transpose-forward",
)
case("torch.embedding_default", {}, (1000, 64), "torch.embedding", 1.0, None, 1.0)
# RNNBase: every weight and bias U(±1/√hidden_size) (LSTM(64, 128): weight_ih (512, 64)).
case(
    "torch.rnn_default",
    {"hidden_size": 128},
    (512, 64),
    "torch.lstm",
    (1 / sqrt(128)) ** 2 / 3,
    pm(1 / sqrt(128)),
    1 / sqrt(128),
    "hidden128",
)
case("torch.rnn_default", {}, (4, 1), "torch.lstm", 1 / 3, pm(1.0), 1.0, "defaults")
# Bilinear.reset_parameters: bound 1/√weight.size(1) = 1/√in1 on weight and bias (Bilinear(20, 30, 7):
# weight (7, 20, 30), bound 1/√20), not 1/√fan_in (torch's fan_in is in1·in2 = 600).
case(
    "torch.bilinear_default",
    {"in1_features": 20},
    (7, 20, 30),
    "torch",
    (1 / sqrt(20)) ** 2 / 3,
    pm(1 / sqrt(20)),
    1 / sqrt(20),
    "in1-20",
)
case("torch.bilinear_default", {}, (7, 1, 30), "torch", 1 / 3, pm(1.0), 1.0, "defaults")
# MultiheadAttention: xavier_uniform_ on the packed (3E, E) in_proj_weight: fans (E, 3E) → U(±√(6/4E)).
E = 256
case(
    "torch.mha_in_proj_default",
    {},
    (3 * E, E),
    "torch.mha_in_proj:native=true",
    6 / (4 * E) / 3,
    pm(sqrt(6 / (4 * E))),
    sqrt(6 / (4 * E)),
    "native",
)
# (the forward-pass layout counts per projection, (E, E): the U(±√(6/2E)) of three separate layers)
case(
    "torch.mha_in_proj_default",
    {},
    (3 * E, E),
    "torch.mha_in_proj",
    6 / (2 * E) / 3,
    pm(sqrt(6 / (2 * E))),
    sqrt(6 / (2 * E)),
    "per-projection",
)

# TF1 contrib variance_scaling_initializer: truncated normal with σ = √(1.3·factor/n), NOT corrected
# (Var = 1.3·factor/n·TV2); uniform limit √(3·factor/n).
case(
    "tf1.variance_scaling_initializer",
    {},
    KS,
    "keras",
    1.3 * 2.0 / KFI * TV2,
    pm(2 * sqrt(1.3 * 2.0 / KFI)),
    sqrt(1.3 * 2.0 / KFI),
    "defaults",
)
case(
    "tf1.variance_scaling_initializer",
    {"factor": 1.0, "mode": "FAN_OUT"},
    KS,
    "keras",
    1.3 * 1.0 / KFO * TV2,
    pm(2 * sqrt(1.3 / KFO)),
    sqrt(1.3 / KFO),
    "fan_out",
)
case(
    "tf1.variance_scaling_initializer",
    {"factor": 1.0, "mode": "FAN_AVG", "uniform": True},
    KS,
    "keras",
    1.0 / ((KFI + KFO) / 2),
    pm(sqrt(3 * 1.0 / ((KFI + KFO) / 2))),
    sqrt(6 / (KFI + KFO)),
    "avg-uniform",
)
case(
    "tf1.xavier_initializer",
    {},
    KS,
    "keras",
    2 / (KFI + KFO),
    pm(sqrt(6 / (KFI + KFO))),
    sqrt(6 / (KFI + KFO)),
    "defaults",
)
case(
    "tf1.xavier_initializer",
    {"uniform": False},
    KS,
    "keras",
    1.3 * 2 / (KFI + KFO) * TV2,
    pm(2 * sqrt(2.6 / (KFI + KFO))),
    sqrt(2.6 / (KFI + KFO)),
    "normal",
)
# TF ≤ 1.12 core and tfjs: "normal" is a truncated normal with σ = √(scale/n), NOT corrected.
for n in ("tf1.variance_scaling", "tfjs.variance_scaling"):
    case(n, {}, KS, "keras", 1 / KFI * TV2, pm(2 * sqrt(1 / KFI)), sqrt(1 / KFI), "defaults")
    case(
        n,
        {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform"},
        KS,
        "keras",
        4 / (KFI + KFO),
        pm(sqrt(12 / (KFI + KFO))),
        sqrt(12 / (KFI + KFO)),
        "uniform",
    )
    case(
        n,
        {"scale": 2.0, "mode": "fan_out"},
        KS,
        "keras",
        2 / KFO * TV2,
        pm(2 * sqrt(2 / KFO)),
        sqrt(2 / KFO),
        "fan_out",
    )
for n in ("tf1.glorot_normal", "tfjs.glorot_normal"):
    case(n, {}, KS, "keras", 2 / (KFI + KFO) * TV2, pm(2 * sqrt(2 / (KFI + KFO))), sqrt(2 / (KFI + KFO)))
for n in ("tf1.he_normal", "tfjs.he_normal"):
    case(n, {}, KS, "keras", 2 / KFI * TV2, pm(2 * sqrt(2 / KFI)), sqrt(2 / KFI))
for n in ("tf1.lecun_normal", "tfjs.lecun_normal"):
    case(n, {}, KS, "keras", 1 / KFI * TV2, pm(2 * sqrt(1 / KFI)), sqrt(1 / KFI))

# prettytensor xavier_init(n_in, n_out): uniform ±√(6/(ni+no)); else TN σ = √(3/(ni+no)) uncorrected.
case(
    "prettytensor.xavier_init",
    {},
    (256, 128),
    "keras",
    2 / (256 + 128),
    pm(sqrt(6 / (256 + 128))),
    sqrt(6 / (256 + 128)),
    "defaults",
)
case(
    "prettytensor.xavier_init",
    {"uniform": False},
    (256, 128),
    "keras",
    3 / (256 + 128) * TV2,
    pm(2 * sqrt(3 / (256 + 128))),
    sqrt(3 / (256 + 128)),
    "normal",
)

# Caffe (blob (out, in, kh, kw) = (64, 32, 3, 3): fan_in = count/num = 288, fan_out = count/channels = 576).
# XavierFiller: U(±√(3/n)), n = fan_in by default (LeCun uniform!); MSRAFiller: N(0, 2/n).
case("caffe.xavier", {}, TS, "torch", 1 / TFI, pm(sqrt(3 / TFI)), sqrt(3 / TFI), "FAN_IN")
case(
    "caffe.xavier",
    {"variance_norm": "AVERAGE"},
    TS,
    "torch",
    1 / ((TFI + TFO) / 2),
    pm(sqrt(3 / ((TFI + TFO) / 2))),
    sqrt(6 / (TFI + TFO)),
    "AVERAGE",
)
case("caffe.xavier", {"variance_norm": "FAN_OUT"}, TS, "torch", 1 / TFO, pm(sqrt(3 / TFO)), sqrt(3 / TFO), "FAN_OUT")
case("caffe.msra", {}, TS, "torch", 2 / TFI, None, sqrt(2 / TFI), "FAN_IN")
case(
    "caffe.msra",
    {"variance_norm": "AVERAGE"},
    TS,
    "torch",
    2 / ((TFI + TFO) / 2),
    None,
    sqrt(2 / ((TFI + TFO) / 2)),
    "AVERAGE",
)
case("caffe.msra", {"variance_norm": "FAN_OUT"}, TS, "torch", 2 / TFO, None, sqrt(2 / TFO), "FAN_OUT")

# MXNet Xavier(rnd_type, factor_type, magnitude): scale = √(magnitude/n); uniform U(±scale),
# gaussian N(0, scale²). Default (uniform, avg, 3) is Glorot uniform; gaussian is 3× Glorot normal.
TFA = (TFI + TFO) / 2  # 432
case("mxnet.xavier", {}, TS, "torch", (3 / TFA) / 3, pm(sqrt(3 / TFA)), sqrt(3 / TFA), "defaults")
case("mxnet.xavier", {"rnd_type": "gaussian"}, TS, "torch", 3 / TFA, None, sqrt(3 / TFA), "gaussian")
case(
    "mxnet.xavier",
    {"rnd_type": "gaussian", "factor_type": "in", "magnitude": 2.0},
    TS,
    "torch",
    2 / TFI,
    None,
    sqrt(2 / TFI),
    "gaussian-in-2",
)
case(
    "mxnet.xavier",
    {"factor_type": "out", "magnitude": 6.0},
    TS,
    "torch",
    (6 / TFO) / 3,
    pm(sqrt(6 / TFO)),
    sqrt(6 / TFO),
    "uniform-out-6",
)
# MSRAPrelu(factor_type='avg', slope=0.25) = Xavier('gaussian', 'avg', 2/(1+slope²)).
case("mxnet.msra_prelu", {}, TS, "torch", (2 / (1 + 0.25**2)) / TFA, None, sqrt(2 / (1 + 0.25**2) / TFA), "defaults")
case("mxnet.msra_prelu", {"factor_type": "in", "slope": 0.0}, TS, "torch", 2 / TFI, None, sqrt(2 / TFI), "in-0")

# Theano tutorial HiddenLayer (n_in, n_out): U(±√(6/(n_in+n_out))), ×4 for sigmoid.
case(
    "theano.glorot_uniform", {}, DS, "keras", 2 / (DFI + DFO), pm(sqrt(6 / (DFI + DFO))), sqrt(6 / (DFI + DFO)), "tanh"
)
case(
    "theano.glorot_uniform",
    {"activation": "sigmoid"},
    DS,
    "keras",
    16 * 2 / (DFI + DFO),
    pm(4 * sqrt(6 / (DFI + DFO))),
    4 * sqrt(6 / (DFI + DFO)),
    "sigmoid",
)

# numpy recipes: randn(n_in, n_out) * √(k/n), untruncated.
case("numpy.randn_lecun", {}, DS, "keras", 1 / DFI, None, sqrt(1 / DFI))
case("numpy.randn_glorot", {}, DS, "keras", 2 / (DFI + DFO), None, sqrt(2 / (DFI + DFO)))
case("numpy.randn_he", {}, DS, "keras", 2 / DFI, None, sqrt(2 / DFI))


def _case_id(c: Case) -> str:
    return c.name + (f"[{c.label}]" if c.label else "")


_ids = [_case_id(c) for c in CASES]
assert len(set(_ids)) == len(_ids), "duplicate case ids in the table"


def test_table_covers_every_preset() -> None:
    assert {c.name for c in CASES} == set(presets.names())


@pytest.mark.parametrize("c", CASES, ids=_ids)
def test_analytic_numbers(c: Case) -> None:
    spec = presets.get(c.name, **c.kwargs)
    fans = initscale.compute_fans(c.shape, c.layout)
    assert spec.variance(fans) == pytest.approx(c.variance, rel=REL)
    assert spec.std(fans) == pytest.approx(sqrt(c.variance), rel=REL)
    assert spec.sampler_parameter(fans) == pytest.approx(c.param, rel=REL)
    if c.bounds is None:
        assert spec.bounds(fans) is None
    else:
        assert spec.bounds(fans) == pytest.approx(c.bounds, rel=REL)
    # describe() gives the same numbers
    d = spec.describe(c.shape, c.layout)
    assert (d.variance, d.std, d.sampler_parameter) == pytest.approx((c.variance, sqrt(c.variance), c.param), rel=REL)
    assert d.bounds == (None if c.bounds is None else pytest.approx(c.bounds, rel=REL))


@pytest.mark.parametrize(
    ("name", "kwargs", "mean"),
    [
        ("keras.random_normal", {"mean": 0.3}, 0.3),
        ("keras.truncated_normal", {"mean": 1.0, "stddev": 0.5}, 1.0),  # symmetric cut keeps the mean
        ("torch.normal", {"mean": 0.1, "std": 0.02}, 0.1),
        ("jax.uniform", {}, 1e-2 / 2),  # U[0, scale) is not centred
        ("torch.uniform", {}, 0.5),
        # asymmetric cut: μ + σ·(φ(α) − φ(β))/(Φ(β) − Φ(α)), α = (a−μ)/σ, β = (b−μ)/σ
        ("torch.trunc_normal", {"mean": 0.5, "a": -1.0, "b": 3.0}, 0.5 + tmean(-1.5, 2.5)),
        ("jax.truncated_normal", {"stddev": 0.1, "lower": -1.0, "upper": 3.0}, 0.1 * tmean(-1.0, 3.0)),
        ("torch.constant", {"val": 0.3}, 0.3),
        ("ones", {}, 1.0),
        ("he_normal", {}, 0.0),
    ],
)
def test_means(name: str, kwargs: dict[str, Any], mean: float) -> None:
    d = presets.get(name, **kwargs).describe(KS, "keras")
    assert d.mean == pytest.approx(mean, rel=REL, abs=1e-15)


def test_torch_trunc_normal_small_std_is_effectively_untruncated() -> None:
    # The classic pitfall: trunc_normal_(w, std=0.02) keeps a=-2, b=2 absolute = ±100σ.
    spec = presets.get("torch.trunc_normal", std=0.02)
    assert spec.bounds() == (-2.0, 2.0)
    assert spec.std() == pytest.approx(0.02, rel=1e-15)
    # whereas Keras's TruncatedNormal(stddev=0.02) cuts at ±2σ
    keras_tn = presets.get("keras.truncated_normal", stddev=0.02)
    assert keras_tn.bounds() == pytest.approx((-0.04, 0.04), rel=REL)
    assert keras_tn.std() == pytest.approx(0.02 * S2, rel=REL)


# --- (a) every name builds and documents itself -------------------------------------------------------


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_builds_with_defaults_and_is_documented(name: str) -> None:
    spec = presets.get(name)
    assert isinstance(spec, initscale.Spec)
    meta = presets.info(name)
    assert isinstance(meta, PresetInfo)
    assert meta.name == name
    assert meta.doc.strip() and meta.source.strip() and meta.layout.strip()
    # the declared layout is a real layout, and the preset resolves on a weight in it
    rule = initscale.layouts.resolve(meta.layout)
    d = spec.describe((24, 12), rule)
    assert math.isfinite(d.variance) and d.variance >= 0.0
    assert math.isfinite(d.sampler_parameter)
    # the factory's defaults rebuild the same spec
    assert presets.get(name, **meta.parameters) == spec


def test_names_sorted_and_unique() -> None:
    names = presets.names()
    assert names == sorted(set(names))


# --- aliases equal their canonical spec ------------------------------------------------------------

ALIASES = {
    "glorot_uniform": ["xavier_uniform", "keras.glorot_uniform", "jax.glorot_uniform"],
    "glorot_normal": ["xavier_normal", "keras.glorot_normal", "jax.glorot_normal"],
    "he_uniform": ["kaiming_uniform", "keras.he_uniform", "jax.he_uniform"],
    "he_normal": ["kaiming_normal", "keras.he_normal", "jax.he_normal"],
    "lecun_uniform": ["keras.lecun_uniform", "jax.lecun_uniform"],
    "lecun_normal": [
        "keras.lecun_normal",
        "jax.lecun_normal",
        "flax.dense_kernel",
        "flax.conv_kernel",
        "flax.lstm_kernel",
        "variance_scaling",
        "jax.variance_scaling",
        "keras.variance_scaling",
    ],
    "variance_scaling": ["jax.variance_scaling"],
    "zeros": ["keras.zeros", "jax.zeros", "flax.bias"],
    "ones": ["keras.ones", "jax.ones"],
    "orthogonal": ["keras.orthogonal", "jax.orthogonal", "flax.lstm_recurrent_kernel"],
    "torch.linear_default": ["torch.conv_default", "torch.linear_default_bias", "torch.conv_default_bias"],
    "tf1.glorot_normal": ["tfjs.glorot_normal"],
    "tf1.he_normal": ["tfjs.he_normal"],
    "tf1.lecun_normal": ["tfjs.lecun_normal"],
    "tf1.variance_scaling": ["tfjs.variance_scaling"],
}
ALIAS_PAIRS = [(canon, alias) for canon, aliases in ALIASES.items() for alias in aliases]


@pytest.mark.parametrize(("canonical", "alias"), ALIAS_PAIRS, ids=[f"{a}={c}" for c, a in ALIAS_PAIRS])
def test_alias_equals_canonical(canonical: str, alias: str) -> None:
    assert presets.get(alias) == presets.get(canonical)


@pytest.mark.parametrize(
    ("spec_a", "spec_b"),
    [
        # the classic identities between sources
        (("caffe.xavier", {}), ("lecun_uniform", {})),
        (("caffe.xavier", {"variance_norm": "AVERAGE"}), ("glorot_uniform", {})),
        (("mxnet.xavier", {}), ("glorot_uniform", {})),
        (("tf1.xavier_initializer", {}), ("glorot_uniform", {})),
        (("prettytensor.xavier_init", {}), ("glorot_uniform", {})),
        (("theano.glorot_uniform", {}), ("glorot_uniform", {})),
        (("torch.xavier_uniform", {}), ("glorot_uniform", {})),
        (("torch.kaiming_uniform", {}), ("he_uniform", {})),
        (("caffe.msra", {}), ("numpy.randn_he", {})),
        (("torch.kaiming_normal", {}), ("numpy.randn_he", {})),
        (("torch.xavier_normal", {}), ("numpy.randn_glorot", {})),
        (("mxnet.xavier", {"rnd_type": "gaussian", "magnitude": 1.0}), ("numpy.randn_glorot", {})),
        (("keras.variance_scaling", {"distribution": "normal"}), ("lecun_normal", {})),
        (("keras.variance_scaling", {"distribution": "untruncated_normal"}), ("numpy.randn_lecun", {})),
        (("variance_scaling", {"distribution": "normal"}), ("numpy.randn_lecun", {})),
        (("flax.embed", {}), ("variance_scaling", {"mode": "fan_out", "distribution": "normal"})),
        (("torch.orthogonal", {}), ("orthogonal", {})),  # torch's draw order: the same distribution
    ],
    ids=lambda pair: pair[0] + ":" + ",".join(f"{k}={v}" for k, v in pair[1].items()),
)
def test_cross_source_identities(spec_a: tuple[str, dict[str, Any]], spec_b: tuple[str, dict[str, Any]]) -> None:
    a, b = presets.get(spec_a[0], **spec_a[1]), presets.get(spec_b[0], **spec_b[1])
    assert type(a) is type(b)
    # torch.* presets also say native="torch" (drawn with torch's own calls in torch): the same
    # distribution, so compare the rest; torch's scale is gain² = √2² = 2.0000000000000004, so
    # compare numbers to rounding
    ca, cb = a.config(), b.config()
    assert ca.pop("native", None) == ("torch" if spec_a[0].startswith("torch.") else None)
    assert "native" not in cb
    assert ca.keys() == cb.keys()
    for key in ca:
        if isinstance(ca[key], float):
            assert ca[key] == pytest.approx(cb[key], rel=1e-15), key
        else:
            assert ca[key] == cb[key], key


def test_keras_variance_scaling_distribution_mapping() -> None:
    assert presets.get("keras.variance_scaling", distribution="normal").distribution == "truncated_normal"
    assert presets.get("keras.variance_scaling", distribution="untruncated_normal").distribution == "normal"
    # while JAX's (and the unqualified) "normal" is untruncated
    assert presets.get("variance_scaling", distribution="normal").distribution == "normal"


def test_uncorrected_truncated_normals_fall_short_of_the_target() -> None:
    fans = initscale.compute_fans(KS, "keras")
    # tf1 contrib: 1.3·TV2 = 1.00585 (TV2 ≈ 0.7737); tfjs / old TF: TV2 of the target.
    assert presets.get("tf1.variance_scaling_initializer").variance(fans) * KFI / 2 == pytest.approx(1.3 * TV2)
    assert 1.3 * TV2 == pytest.approx(1.00586, abs=1e-5)
    assert presets.get("tfjs.lecun_normal").variance(fans) * KFI == pytest.approx(TV2, rel=REL)


# --- (c) bad input ----------------------------------------------------------------------------------


def _listed(choices: list[str]) -> str:
    return re.escape(", ".join(repr(c) for c in sorted(choices)))


def test_unknown_preset_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"Argument `preset` must be one of " + _listed(presets.names())) as err:
        presets.get("he_normall")
    assert "Received: preset='he_normall'" in str(err.value)
    with pytest.raises(ValueError, match="must be one of"):
        presets.info("torch.kaiming")
    with pytest.raises(ValueError, match="must be one of"):
        presets.get("nope:a=1")


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        (
            "torch.kaiming_normal",
            {"b": 1.0},
            r"Preset 'torch\.kaiming_normal' takes no argument 'b'; valid arguments: 'a', 'mode', 'nonlinearity'\.",
        ),
        (
            "torch.trunc_normal",
            {"stddev": 0.02},
            r"Preset 'torch\.trunc_normal' takes no argument 'stddev'; valid arguments: 'a', 'b', 'mean', 'std'\.",
        ),
        ("keras.random_normal", {"std": 0.1}, r"takes no argument 'std'; valid arguments: 'mean', 'stddev'\."),
        (
            "mxnet.xavier",
            {"rnd": "gaussian"},
            r"takes no argument 'rnd'; valid arguments: 'factor_type', 'magnitude', 'rnd_type'\.",
        ),
        ("he_normal", {"seed": 0}, r"Preset 'he_normal' takes no argument 'seed'; valid arguments: none\."),
    ],
)
def test_unknown_kwarg_names_valid_arguments(name: str, kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        presets.get(name, **kwargs)


def test_unknown_kwarg_in_string_form() -> None:
    with pytest.raises(ValueError, match=r"takes no argument 'sd'; valid arguments: 'mean', 'std'"):
        presets.get("torch.normal:sd=1")


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        # torch's kaiming has no fan_avg
        (
            "torch.kaiming_normal",
            {"mode": "fan_avg"},
            r"Argument `mode` must be one of 'fan_in', 'fan_out'\. Received: mode='fan_avg'\.",
        ),
        (
            "torch.kaiming_uniform",
            {"mode": "fan_avg"},
            r"Argument `mode` must be one of 'fan_in', 'fan_out'\. Received: mode='fan_avg'\.",
        ),
        ("torch.kaiming_uniform", {"mode": "fan_geo_avg"}, r"Argument `mode` must be one of 'fan_in', 'fan_out'\."),
        # TF1 contrib modes are upper case
        (
            "tf1.variance_scaling_initializer",
            {"mode": "fan_in"},
            r"Argument `mode` must be one of 'FAN_AVG', 'FAN_IN', 'FAN_OUT'\. Received: mode='fan_in'\.",
        ),
        (
            "tf1.variance_scaling_initializer",
            {"mode": "FAN_GEO_AVG", "uniform": True},
            r"Argument `mode` must be one of 'FAN_AVG', 'FAN_IN', 'FAN_OUT'\.",
        ),
        # TF ≤ 1.12 / tfjs accept only normal and uniform
        (
            "tf1.variance_scaling",
            {"distribution": "truncated_normal"},
            r"Argument `distribution` must be one of 'normal', 'uniform'\. Received: distribution='truncated_normal'\.",
        ),
        (
            "keras.variance_scaling",
            {"distribution": "gaussian"},
            r"Argument `distribution` must be one of 'normal', 'truncated_normal', 'uniform', 'untruncated_normal'\.",
        ),
        # Caffe's VarianceNorm enum
        (
            "caffe.xavier",
            {"variance_norm": "FAN_AVG"},
            r"Argument `variance_norm` must be one of 'AVERAGE', 'FAN_IN', 'FAN_OUT'\. "
            r"Received: variance_norm='FAN_AVG'\.",
        ),
        (
            "caffe.msra",
            {"variance_norm": "fan_in"},
            r"Argument `variance_norm` must be one of 'AVERAGE', 'FAN_IN', 'FAN_OUT'\.",
        ),
        # MXNet
        (
            "mxnet.xavier",
            {"rnd_type": "normal"},
            r"Argument `rnd_type` must be one of 'gaussian', 'uniform'\. Received: rnd_type='normal'\.",
        ),
        (
            "mxnet.xavier",
            {"factor_type": "fan_in"},
            r"Argument `factor_type` must be one of 'avg', 'in', 'out'\. Received: factor_type='fan_in'\.",
        ),
        ("mxnet.msra_prelu", {"factor_type": "average"}, r"Argument `factor_type` must be one of 'avg', 'in', 'out'\."),
        ("mxnet.xavier", {"magnitude": 0.0}, r"Argument `magnitude` must be > 0\."),
        (
            "theano.glorot_uniform",
            {"activation": "relu"},
            r"Argument `activation` must be one of 'sigmoid', 'tanh'\. Received: activation='relu'\.",
        ),
        ("torch.rnn_default", {"hidden_size": 0}, r"Argument `hidden_size` must be >= 1\."),
        ("torch.bilinear_default", {"in1_features": 0}, r"Argument `in1_features` must be >= 1\."),
        ("torch.kaiming_normal", {"nonlinearity": "gelu"}, r"no value for 'gelu'"),
    ],
)
def test_bad_arguments(name: str, kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        presets.get(name, **kwargs)


_BOOL_ERROR = r"Argument `uniform` must be one of False, True \(or the strings 'false', 'true'\)\. Received: uniform="


def _annotations(name: str) -> dict[str, Any]:
    return {p.name: p.annotation for p in inspect.signature(presets.info(name).factory).parameters.values()}


@pytest.mark.parametrize(
    ("name", "arg"), [(n, p) for n in presets.names() for p, a in _annotations(n).items() if a == "bool"]
)
def test_boolean_arguments_mean_what_they_say(name: str, arg: str) -> None:
    """A bool argument takes a bool or exactly what the ':uniform=false' form parses; "false" was read by
    its truthiness (the uniform variant) before."""
    for text, value in (("false", False), ("FALSE", False), (" true ", True), ("True", True)):
        assert presets.get(name, **{arg: text}) == presets.get(name, **{arg: value}), text
    assert presets.get(f"{name}:{arg}=false") == presets.get(name, **{arg: False})
    assert presets.get(name, **{arg: np.bool_(False)}) == presets.get(name, **{arg: False})
    assert presets.get(name, **{arg: False}) != presets.get(name, **{arg: True})
    for bad in ("no", "0", 0, 1, None, 1.0, ""):
        with pytest.raises(ValueError, match=rf"Argument `{arg}` must be one of False, True") as err:
            presets.get(name, **{arg: bad})
        assert f"Received: {arg}={bad!r}." in str(err.value)
    with pytest.raises(ValueError, match=rf"Received: {arg}=0\."):
        presets.get(f"{name}:{arg}=0")


def test_every_preset_argument_has_a_checked_type() -> None:
    """One coercion per annotation (bool, int, float, str) for every preset: none is left unchecked."""
    for name in presets.names():
        for arg, annotation in _annotations(name).items():
            assert annotation in ("bool", "int", "float", "Bound", "str"), (name, arg, annotation)


@pytest.mark.parametrize(
    ("name", "low", "high"), [("torch.trunc_normal", "a", "b"), ("jax.truncated_normal", "lower", "upper")]
)
def test_truncation_bounds_may_be_infinite(name: str, low: str, high: str) -> None:
    """One-sided truncations stay expressible through the checked arguments (only bounds take ±inf)."""
    spec = presets.get(name, **{low: -math.inf, high: 0.0})
    assert spec.lower == -math.inf and spec.upper == 0.0
    assert presets.get(f"{name}:{high}=inf").upper == math.inf
    with pytest.raises(ValueError, match=r"Argument `mean` must be finite"):
        presets.get("torch.trunc_normal", mean=math.inf)


_GAIN_ARGS = sorted(
    (n, p) for n in presets.names() for p in _annotations(n) if p in ("gain", "scale", "factor", "magnitude")
)


@pytest.mark.parametrize(("name", "arg"), _GAIN_ARGS)
@pytest.mark.parametrize("value", [-1, -0.5, 0.0])
def test_gain_like_arguments_must_be_positive(name: str, arg: str, value: float) -> None:
    """A negative gain was squared into a positive variance (torch.xavier_normal gain=-1 gave gain 1)."""
    with pytest.raises(ValueError, match=rf"Argument `{arg}` must be > 0.*\. Received: {arg}={value!r}\."):
        presets.get(name, **{arg: value})
    assert presets.get(name, **{arg: 1.5}) != presets.get(name, **{arg: 1.0})


def test_the_torch_gain_is_not_squared_away() -> None:
    assert set(_GAIN_ARGS) >= {
        ("torch.xavier_normal", "gain"),
        ("torch.xavier_uniform", "gain"),
        ("torch.orthogonal", "gain"),
        ("keras.orthogonal", "gain"),
        ("jax.orthogonal", "scale"),
    }
    negative = r"Argument `gain` must be > 0 \(a negative one would silently mean its absolute value.*gain=-1\."
    with pytest.raises(ValueError, match=negative):
        presets.get("torch.xavier_normal", gain=-1)
    with pytest.raises(ValueError, match=r"Received: gain=-2\."):
        presets.get("torch.xavier_uniform:gain=-2")


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "pattern"),
    [
        ("torch.xavier_normal", {"gain": "2"}, TypeError, r"`gain` must be a real number\. Received: gain='2'"),
        ("torch.kaiming_normal", {"a": True}, TypeError, r"Argument `a` must be a real number\. Received: a=True"),
        ("torch.kaiming_normal", {"mode": 1}, TypeError, r"Argument `mode` must be a string\. Received: mode=1"),
        ("torch.rnn_default", {"hidden_size": 2.0}, TypeError, r"Argument `hidden_size` must be an integer"),
        ("mxnet.msra_prelu", {"slope": None}, TypeError, r"Argument `slope` must be a real number"),
    ],
)
def test_argument_types_are_checked(name: str, kwargs: dict[str, Any], error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        presets.get(name, **kwargs)


# --- (d) the string form ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "kwargs"),
    [
        ("torch.kaiming_normal:a=0.2,mode=fan_out", "torch.kaiming_normal", {"a": 0.2, "mode": "fan_out"}),
        ("torch.kaiming_uniform:a=0,nonlinearity=relu", "torch.kaiming_uniform", {"a": 0, "nonlinearity": "relu"}),
        ("caffe.xavier:variance_norm=AVERAGE", "caffe.xavier", {"variance_norm": "AVERAGE"}),
        ("tf1.xavier_initializer:uniform=false", "tf1.xavier_initializer", {"uniform": False}),
        ("mxnet.xavier: rnd_type = gaussian , magnitude = 2", "mxnet.xavier", {"rnd_type": "gaussian", "magnitude": 2}),
        ("torch.rnn_default:hidden_size=64", "torch.rnn_default", {"hidden_size": 64}),
        ("he_normal:", "he_normal", {}),
    ],
)
def test_string_form_equals_kwargs_form(text: str, name: str, kwargs: dict[str, Any]) -> None:
    assert presets.get(text) == presets.get(name, **kwargs)


def test_string_form_kwargs_override_parsed() -> None:
    assert presets.get("torch.kaiming_normal:a=0.2,mode=fan_out", mode="fan_in") == presets.get(
        "torch.kaiming_normal", a=0.2, mode="fan_in"
    )


def test_string_form_example_numbers() -> None:
    spec = presets.get("torch.kaiming_normal:a=0.2,mode=fan_out")
    fans = initscale.compute_fans((64, 32, 3, 3), "torch")
    assert spec.std(fans) == pytest.approx(sqrt(2 / (1 + 0.2**2)) / sqrt(64 * 3 * 3), rel=REL)


# --- suspected source disagreements -----------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="torch nn.Linear/_ConvNd: bias bound = 1/sqrt(fan_in) if fan_in > 0 else 0; initscale's "
    "VarianceScaling counts a zero fan as 1 (Keras's max(1, fan)), giving U(±1) instead of zeros",
)
def test_torch_linear_default_bias_with_zero_fan_in() -> None:
    # nn.Linear(0, 5): weight (5, 0), fan_in 0 → torch fills the bias with U(-0, 0) = zeros.
    spec = presets.get("torch.linear_default_bias")
    fans = initscale.compute_fans((5, 0), "torch:native=true")
    assert spec.bounds(fans) == (0.0, 0.0)


# --- (e) optional cross-checks against the frameworks themselves (no sampling) -----------------------


class TestNativeCrossCheck:
    # torch ----------------------------------------------------------------------------------------

    @pytest.mark.parametrize("shape", [(3, 4), (8, 4, 3, 3), (16, 32, 3, 3), (2, 3, 4, 5, 6), (5, 0), (1, 7, 2)])
    def test_torch_fans(self, shape: tuple[int, ...]) -> None:
        torch = pytest.importorskip("torch")
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
        fans = initscale.compute_fans(shape, "torch:native=true")
        assert (fans.fan_in, fans.fan_out) == (fan_in, fan_out)

    @pytest.mark.parametrize("shape", [(), (5,)])
    def test_torch_fans_reject_rank_below_two(self, shape: tuple[int, ...]) -> None:
        torch = pytest.importorskip("torch")
        with pytest.raises(ValueError):
            torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
        with pytest.raises(ValueError, match="fewer than 2 dimensions"):
            initscale.compute_fans(shape, "torch:native=true")

    @pytest.mark.parametrize(
        ("nonlinearity", "param"),
        [
            ("linear", None),
            ("conv1d", None),
            ("conv2d", None),
            ("conv3d", None),
            ("conv_transpose1d", None),
            ("conv_transpose2d", None),
            ("conv_transpose3d", None),
            ("sigmoid", None),
            ("tanh", None),
            ("relu", None),
            ("selu", None),
            ("leaky_relu", None),
            ("leaky_relu", 0),
            ("leaky_relu", 0.2),
            ("leaky_relu", math.sqrt(5)),
        ],
    )
    def test_torch_calculate_gain(self, nonlinearity: str, param: float | None) -> None:
        torch = pytest.importorskip("torch")
        expected = torch.nn.init.calculate_gain(nonlinearity, param)
        assert initscale.gain(nonlinearity, param, method="table") == expected

    @pytest.mark.parametrize(
        ("preset", "fn", "mapping"),
        [
            ("torch.xavier_uniform", "xavier_uniform_", {"gain": "gain"}),
            ("torch.xavier_normal", "xavier_normal_", {"gain": "gain"}),
            ("torch.kaiming_uniform", "kaiming_uniform_", {"a": "a", "mode": "mode", "nonlinearity": "nonlinearity"}),
            ("torch.kaiming_normal", "kaiming_normal_", {"a": "a", "mode": "mode", "nonlinearity": "nonlinearity"}),
            ("torch.trunc_normal", "trunc_normal_", {"mean": "mean", "std": "std", "a": "a", "b": "b"}),
            ("torch.normal", "normal_", {"mean": "mean", "std": "std"}),
            ("torch.uniform", "uniform_", {"a": "a", "b": "b"}),
            ("torch.orthogonal", "orthogonal_", {"gain": "gain"}),
        ],
    )
    def test_torch_defaults(self, preset: str, fn: str, mapping: dict[str, str]) -> None:
        torch = pytest.importorskip("torch")
        import inspect

        params = inspect.signature(getattr(torch.nn.init, fn)).parameters
        ours = presets.info(preset).parameters
        for our_name, their_name in mapping.items():
            assert ours[our_name] == params[their_name].default, (preset, our_name)

    def test_torch_bilinear_default_is_reset_parameters(self) -> None:
        # torch/nn/modules/linear.py Bilinear.reset_parameters: bound = 1 / math.sqrt(self.weight.size(1)),
        # uniform_(weight, -bound, bound) and uniform_(bias, -bound, bound): the same draws from the same
        # generator state (global RNG), bit for bit where the float32 bound rounds down, else the bound
        # one ulp apart (initscale samples inside the exact bound).
        torch = pytest.importorskip("torch")
        ist = pytest.importorskip("initscale.adapters.torch")
        for in1 in (20, 33):
            layer = torch.nn.Bilinear(in1, 30, 7)
            spec = presets.get("torch.bilinear_default", in1_features=in1)
            assert spec.bounds() == (-1 / math.sqrt(layer.weight.size(1)), 1 / math.sqrt(layer.weight.size(1)))
            with torch.random.fork_rng():
                torch.manual_seed(9)
                layer.reset_parameters()
                theirs = [p.detach().clone() for p in layer.parameters()]
                torch.manual_seed(9)
                report = ist.reinit_(layer, {"Bilinear": spec})
            assert [r.spec for r in report] == [spec, spec]  # the bias follows its weight
            exact = 1 / math.sqrt(in1)
            ulp = float(np.spacing(np.float32(exact)))
            for ours, their in zip(layer.parameters(), theirs, strict=True):
                assert float(ours.detach().abs().max()) <= exact
                if float(np.float32(exact)) <= exact:
                    assert torch.equal(ours.detach(), their)
                else:
                    assert float((ours.detach() - their).abs().max()) <= 2 * ulp

    @pytest.mark.parametrize(
        ("shape", "mode"), [((64, 32, 3, 3), "fan_in"), ((64, 32, 3, 3), "fan_out"), ((30, 400), "fan_in")]
    )
    def test_torch_correct_fan(self, shape: tuple[int, ...], mode: str) -> None:
        torch = pytest.importorskip("torch")
        expected = torch.nn.init._calculate_correct_fan(torch.empty(shape), mode)
        assert initscale.compute_fans(shape, "torch:native=true").fan(mode) == expected

    # keras ----------------------------------------------------------------------------------------

    @pytest.mark.parametrize("shape", [(), (5,), (4, 8), (3, 3, 4, 8), (2, 3, 4, 5, 6), (0, 4)])
    def test_keras_fans(self, shape: tuple[int, ...]) -> None:
        rnd = pytest.importorskip("keras.src.initializers.random_initializers")
        fan_in, fan_out = rnd.compute_fans(shape)
        fans = initscale.compute_fans(shape, "keras:native=true")
        assert (fans.fan_in, fans.fan_out) == (fan_in, fan_out)

    def test_keras_variance_scaling_normal_is_stored_as_truncated(self) -> None:
        keras = pytest.importorskip("keras")
        for ours, theirs in (
            ("normal", "truncated_normal"),
            ("untruncated_normal", "untruncated_normal"),
            ("uniform", "uniform"),
            ("truncated_normal", "truncated_normal"),
        ):
            cfg = keras.initializers.VarianceScaling(distribution=ours).get_config()
            assert cfg["distribution"] == theirs
            spec = presets.get("keras.variance_scaling", distribution=ours)
            assert spec.distribution == {"untruncated_normal": "normal"}.get(theirs, theirs)

    @pytest.mark.parametrize(
        ("preset", "cls", "keys"),
        [
            ("keras.variance_scaling", "VarianceScaling", ("scale", "mode", "distribution")),
            ("keras.random_normal", "RandomNormal", ("mean", "stddev")),
            ("keras.truncated_normal", "TruncatedNormal", ("mean", "stddev")),
            ("keras.random_uniform", "RandomUniform", ("minval", "maxval")),
            ("keras.orthogonal", "Orthogonal", ("gain",)),
        ],
    )
    def test_keras_defaults(self, preset: str, cls: str, keys: tuple[str, ...]) -> None:
        keras = pytest.importorskip("keras")
        cfg = getattr(keras.initializers, cls)().get_config()
        ours = presets.info(preset).parameters
        for key in keys:
            assert ours[key] == cfg[key], (preset, key)

    @pytest.mark.parametrize(
        ("preset", "cls", "scale", "mode", "distribution"),
        [
            ("keras.glorot_uniform", "GlorotUniform", 1.0, "fan_avg", "uniform"),
            ("keras.glorot_normal", "GlorotNormal", 1.0, "fan_avg", "truncated_normal"),
            ("keras.he_uniform", "HeUniform", 2.0, "fan_in", "uniform"),
            ("keras.he_normal", "HeNormal", 2.0, "fan_in", "truncated_normal"),
            ("keras.lecun_uniform", "LecunUniform", 1.0, "fan_in", "uniform"),
            ("keras.lecun_normal", "LecunNormal", 1.0, "fan_in", "truncated_normal"),
        ],
    )
    def test_keras_named_variance_scaling(
        self, preset: str, cls: str, scale: float, mode: str, distribution: str
    ) -> None:
        keras = pytest.importorskip("keras")
        init = getattr(keras.initializers, cls)()
        assert (init.scale, init.mode, init.distribution) == (scale, mode, distribution)
        spec = presets.get(preset)
        assert (spec.scale, spec.mode, spec.distribution, spec.corrected) == (scale, mode, distribution, True)

    # jax / flax -----------------------------------------------------------------------------------

    @pytest.mark.parametrize("shape", [(3, 4), (3, 3, 4, 8), (2, 3, 4, 5), (10, 20)])
    def test_jax_fans(self, shape: tuple[int, ...]) -> None:
        jinit = pytest.importorskip("jax._src.nn.initializers")
        fan_in, fan_out = jinit._compute_fans(shape)
        for layout in ("jax:native=true", "flax:native=true"):
            fans = initscale.compute_fans(shape, layout)
            assert (fans.fan_in, fans.fan_out) == pytest.approx((fan_in, fan_out), rel=1e-15)

    def test_flax_embed_fans(self) -> None:
        jinit = pytest.importorskip("jax._src.nn.initializers")
        # flax's default_embed_init = variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)
        fan_in, fan_out = jinit._compute_fans((1000, 64), in_axis=-2, out_axis=0)
        assert fan_in == pytest.approx(64, rel=1e-15)
        fans = initscale.compute_fans((1000, 64), "flax.embed:native=true")
        assert (fans.fan_in, fans.fan_out) == pytest.approx((fan_in, fan_out), rel=1e-15)
        # jax's variance is 1/fan_in; initscale's preset divides by its fan_out: the same 1/64
        assert presets.get("flax.embed").variance(fans) == pytest.approx(1 / fan_in, rel=REL)

    @pytest.mark.parametrize(
        ("preset", "fn", "mapping"),
        [
            ("jax.normal", "normal", {"stddev": "stddev"}),
            ("jax.uniform", "uniform", {"scale": "scale"}),
            ("jax.truncated_normal", "truncated_normal", {"stddev": "stddev", "lower": "lower", "upper": "upper"}),
            ("jax.orthogonal", "orthogonal", {"scale": "scale"}),
        ],
    )
    def test_jax_defaults(self, preset: str, fn: str, mapping: dict[str, str]) -> None:
        jax_init = pytest.importorskip("jax.nn.initializers")
        import inspect

        params = inspect.signature(getattr(jax_init, fn)).parameters
        ours = presets.info(preset).parameters
        for our_name, their_name in mapping.items():
            assert ours[our_name] == params[their_name].default, (preset, our_name)
