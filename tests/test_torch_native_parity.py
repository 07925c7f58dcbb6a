"""Every torch preset against torch's own initializer: the same numbers and the same distribution.

For each preset the native draws (torch.nn.init or the layer's reset_parameters) and
initscale's draws (the preset compiled to torch) must both pass the one-sample checks against
the preset's exact distribution, and each other's two-sample test; and torch's own formula,
evaluated with torch's own helpers, must give the preset's std and bound exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import initscale
from _stats import failures, same_distribution
from initscale import presets

torch = pytest.importorskip("torch")
ist = pytest.importorskip("initscale.adapters.torch")
nn = torch.nn
tinit = torch.nn.init


def _fan(t, mode):
    return tinit._calculate_correct_fan(t, mode)


def _fans(t):
    return tinit._calculate_fan_in_and_fan_out(t)


# name, kwargs, shape, native fill (t, generator), torch's own (std, bound) from its helpers
CASES = [
    ("torch.xavier_uniform", {"gain": 1.7}, (300, 400),
     lambda t, g: tinit.xavier_uniform_(t, gain=1.7, generator=g),
     lambda t: (1.7 * math.sqrt(2 / sum(_fans(t))), 1.7 * math.sqrt(6 / sum(_fans(t))))),
    ("torch.xavier_normal", {"gain": 0.5}, (64, 32, 3, 3),
     lambda t, g: tinit.xavier_normal_(t, gain=0.5, generator=g),
     lambda t: (0.5 * math.sqrt(2 / sum(_fans(t))), None)),
    ("torch.kaiming_uniform", {"a": 0.2, "mode": "fan_out"}, (300, 400),
     lambda t, g: tinit.kaiming_uniform_(t, a=0.2, mode="fan_out", generator=g),
     lambda t: (tinit.calculate_gain("leaky_relu", 0.2) / math.sqrt(_fan(t, "fan_out")),
                tinit.calculate_gain("leaky_relu", 0.2) * math.sqrt(3 / _fan(t, "fan_out")))),
    ("torch.kaiming_uniform", {"nonlinearity": "relu"}, (128, 64, 3, 3),
     lambda t, g: tinit.kaiming_uniform_(t, nonlinearity="relu", generator=g),
     lambda t: (math.sqrt(2 / _fan(t, "fan_in")), math.sqrt(6 / _fan(t, "fan_in")))),
    ("torch.kaiming_normal", {}, (300, 400),
     lambda t, g: tinit.kaiming_normal_(t, generator=g),
     lambda t: (math.sqrt(2 / _fan(t, "fan_in")), None)),
    ("torch.kaiming_normal", {"mode": "fan_out", "nonlinearity": "tanh"}, (300, 400),
     lambda t, g: tinit.kaiming_normal_(t, mode="fan_out", nonlinearity="tanh", generator=g),
     lambda t: (tinit.calculate_gain("tanh") / math.sqrt(_fan(t, "fan_out")), None)),
    ("torch.trunc_normal", {"mean": 0.1, "std": 0.5, "a": -0.4, "b": 0.9}, (300, 400),
     lambda t, g: tinit.trunc_normal_(t, mean=0.1, std=0.5, a=-0.4, b=0.9, generator=g),
     None),
    ("torch.trunc_normal", {}, (300, 400), lambda t, g: tinit.trunc_normal_(t, generator=g), None),
    ("torch.normal", {"mean": 0.3, "std": 2.0}, (300, 400),
     lambda t, g: tinit.normal_(t, 0.3, 2.0, generator=g), lambda t: (2.0, None)),
    ("torch.uniform", {"a": -0.5, "b": 2.0}, (300, 400),
     lambda t, g: tinit.uniform_(t, -0.5, 2.0, generator=g), lambda t: (2.5 / math.sqrt(12), 2.0)),
]

LAYERS = [  # name, layout of the preset, module factory, which parameters it fills
    ("torch.linear_default", "torch:native=true", lambda: nn.Linear(400, 300), ["weight"]),
    ("torch.conv_default", "torch:native=true", lambda: nn.Conv2d(64, 128, 3), ["weight"]),
    ("torch.conv_default", "torch.conv_transpose:native=true", lambda: nn.ConvTranspose2d(64, 128, 3), ["weight"]),
    ("torch.embedding_default", "torch", lambda: nn.Embedding(1000, 200), ["weight"]),
    ("torch.mha_in_proj_default", "torch.mha_in_proj:native=true", lambda: nn.MultiheadAttention(256, 4),
     ["in_proj_weight"]),
]


def _ours(spec, shape, layout, seed):
    t = torch.empty(shape, dtype=torch.float64)
    return ist.init_(t, spec, layout, generator=torch.Generator().manual_seed(seed)).numpy()


@pytest.mark.parametrize(("name", "kwargs", "shape", "native", "formula"), CASES,
                         ids=[f"{c[0]}{c[1] or ''}" for c in CASES])
def test_nn_init_functions(name, kwargs, shape, native, formula) -> None:
    spec = presets.get(name, **kwargs)
    dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(shape, "torch:native=true"))
    theirs = native(torch.empty(shape, dtype=torch.float64), torch.Generator().manual_seed(11)).numpy()
    ours = _ours(spec, shape, "torch:native=true", 12)
    assert failures(theirs, dist) == []
    assert failures(ours, dist) == []
    assert same_distribution(theirs, ours) == []
    if formula is not None:
        std, bound = formula(torch.empty(shape))
        assert dist.std == pytest.approx(std, rel=1e-12)
        if bound is not None:
            assert dist.bounds[1] == pytest.approx(bound, rel=1e-12)


@pytest.mark.parametrize(("name", "layout", "make", "params"), LAYERS, ids=[f"{c[0]}-{c[1]}" for c in LAYERS])
def test_layer_defaults(name, layout, make, params) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(5)
        module = make()
    spec = presets.get(name)
    for p in params:
        theirs = getattr(module, p).detach().double().numpy()
        dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans(theirs.shape, layout))
        assert failures(theirs, dist) == [], p
        assert same_distribution(theirs, _ours(spec, theirs.shape, layout, 13)) == [], p


def test_linear_default_bias_uses_the_weights_fan_in() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(6)
        module = nn.Linear(4, 50_000)
    spec = presets.get("torch.linear_default_bias")
    dist = spec.resolve(initscale.compute_fans(tuple(module.weight.shape), "torch:native=true"))
    assert dist.bounds == pytest.approx((-0.5, 0.5), rel=1e-12)  # 1/√fan_in
    assert failures(module.bias.detach().double().numpy(), dist) == []


def test_rnn_default_on_every_weight_and_bias() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(7)
        module = nn.LSTM(64, 100)
    theirs = torch.cat([p.detach().double().ravel() for p in module.parameters()]).numpy()
    dist = presets.get("torch.rnn_default", hidden_size=100).resolve(None)
    assert dist.bounds == pytest.approx((-0.1, 0.1), rel=1e-12)
    assert failures(theirs, dist) == []


def test_constant_is_exact() -> None:
    t = tinit.constant_(torch.empty(7, 5), 0.7)
    assert torch.equal(ist.init_(torch.empty(7, 5), presets.get("torch.constant", val=0.7)), t)


def test_orthogonal_matches_torch_entrywise_and_as_a_matrix() -> None:
    shape, gain = (200, 300), 2.0
    theirs = tinit.orthogonal_(torch.empty(shape, dtype=torch.float64), gain,
                               generator=torch.Generator().manual_seed(1))
    ours = torch.from_numpy(_ours(presets.get("torch.orthogonal", gain=gain), shape, "torch", 2))
    for q in (theirs, ours):
        assert torch.allclose(q @ q.T, gain**2 * torch.eye(200, dtype=torch.float64), atol=1e-10)
    # Entries of Haar-random orthogonal rows share one marginal law; the torch and initscale
    # draws must not be distinguishable by it (two-sample KS at α = 1e-4).
    assert same_distribution(theirs.numpy(), ours.numpy()) == []


def test_mutation_a_wrong_uniform_limit_is_caught_against_the_native_draws() -> None:
    # Planted bug: kaiming_uniform with the normal's std as the limit (√(2/n) instead of √(6/n)).
    shape = (300, 400)
    theirs = tinit.kaiming_uniform_(torch.empty(shape, dtype=torch.float64),
                                    generator=torch.Generator().manual_seed(3)).numpy()
    wrong = initscale.Uniform(-math.sqrt(2 / 400), math.sqrt(2 / 400)).resolve(None)
    assert failures(theirs, wrong) != []
    assert same_distribution(theirs, np.random.default_rng(0).uniform(wrong.low, wrong.high, theirs.size)) != []
