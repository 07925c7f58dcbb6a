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


# --- reinit_(..., fans="native"): torch's own fans for grouped, depthwise and transposed convs ---------


def _mobilenet_like():
    """The layers of a MobileNetV3 block that torch and initscale count differently, and a plain one."""
    return nn.Sequential(
        nn.Conv2d(16, 96, 1),                      # expand (plain: both rules agree)
        nn.Conv2d(96, 96, 5, groups=96),           # depthwise
        nn.Conv2d(96, 192, 3, groups=96),          # depthwise, multiplier 2
        nn.Conv2d(192, 128, 3, groups=4),          # grouped
        nn.ConvTranspose2d(128, 64, 3, groups=2),  # transposed, grouped
        nn.ConvTranspose2d(64, 48, 4),             # transposed
    )


NATIVE_PRESETS = [("torch.kaiming_uniform", {}), ("torch.kaiming_uniform", {"mode": "fan_out"}),
                  ("torch.kaiming_normal", {"mode": "fan_out"})]  # torchvision MobileNetV3's conv init


@pytest.mark.parametrize(("name", "kwargs"), NATIVE_PRESETS, ids=[f"{n}{k or ''}" for n, k in NATIVE_PRESETS])
def test_reinit_native_fans_are_torchs_own(name, kwargs) -> None:
    model = _mobilenet_like().double()
    spec = presets.get(name, **kwargs)
    report = ist.reinit_(model, spec, fans="native", generator=torch.Generator().manual_seed(21))
    assert report.fans == "native" and "fans: native" in report.summary()
    for module_name, module in model.named_children():
        row = report[f"{module_name}.weight"]
        assert (row.fan_in, row.fan_out) == _fans(module.weight), module
        assert row.fans == "native" and row.layout.endswith("native=true")
        # torch's own numbers, from torch's helpers, and the drawn weights against them (the
        # whole-distribution and moment checks of initscale.testing, at their stated false-alarm rates)
        mode = kwargs.get("mode", "fan_in")
        std = math.sqrt(2.0 / tinit._calculate_correct_fan(module.weight, mode))
        assert row.std == pytest.approx(std, rel=1e-12)
        dist = spec.resolve(initscale.Fans(row.fan_in, row.fan_out))
        assert failures(module.weight.detach().numpy(), dist) == [], module
        assert report[f"{module_name}.bias"].fans is None  # zeros: no fans


def test_reinit_forward_fans_stay_the_default() -> None:
    model = _mobilenet_like()
    spec = presets.get("torch.kaiming_normal", mode="fan_out")
    forward = ist.reinit_(model, spec, dry_run=True)
    native = ist.reinit_(model, spec, dry_run=True, fans="native")
    assert forward.fans == "forward" and {r.fans for r in forward if r.name.endswith("weight")} == {"forward"}
    # depthwise Conv2d(96, 96, 5, groups=96): forward fan_out 25 per channel, torch's 96·25
    assert (forward["1.weight"].fan_in, forward["1.weight"].fan_out) == (25, 25)
    assert (native["1.weight"].fan_in, native["1.weight"].fan_out) == (25, 2400)
    assert forward["1.weight"].std / native["1.weight"].std == pytest.approx(math.sqrt(96), rel=1e-12)
    # ConvTranspose2d(64, 48, 4) weight (64, 48, 4, 4): forward fan_in 64·16, torch's 48·16
    assert (forward["5.weight"].fan_in, native["5.weight"].fan_in) == (1024, 768)


def test_reinit_fans_must_be_forward_or_native() -> None:
    with pytest.raises(ValueError, match=r"Argument `fans` must be one of 'forward', 'native'\. "
                                         r"Received: fans='torch'\."):
        ist.reinit_(nn.Linear(3, 2), presets.get("he_normal"), fans="torch")


def _float32_bound(fan_in: int) -> tuple[float, float]:
    """torch's kaiming_uniform_(a=√5) bound as torch computes it (gain·√(3/fan_in) in double,
    rounded to float32 by uniform_) and the exact 1/√fan_in."""
    gain = tinit.calculate_gain("leaky_relu", math.sqrt(5))
    return float(np.float32(gain * math.sqrt(3.0 / fan_in))), 1 / math.sqrt(fan_in)


ULP_LAYERS = {"conv-27": lambda: nn.Conv2d(3, 8, 3), "conv-63": lambda: nn.Conv2d(7, 8, 3),
              "depthwise": lambda: nn.Conv2d(40, 40, 3, groups=40), "grouped": lambda: nn.Conv2d(12, 24, 3, groups=4),
              "transpose-108": lambda: nn.ConvTranspose2d(8, 12, 3),
              "transpose-18": lambda: nn.ConvTranspose2d(8, 2, 3),
              "conv1d": lambda: nn.Conv1d(5, 6, 5), "linear-10": lambda: nn.Linear(10, 4),
              "linear-9": lambda: nn.Linear(9, 4)}


@pytest.mark.parametrize("make", list(ULP_LAYERS.values()), ids=list(ULP_LAYERS))
def test_reinit_native_draws_torchs_stream_to_the_ulp(make) -> None:
    # torch.* presets draw from torch's own generator with torch's own uniform_ (one draw per
    # element, in order), so the values equal nn.init.kaiming_uniform_(w, a=√5) for the same
    # generator state bit for bit whenever torch's float32 bound is at most the exact 1/√fan_in.
    # Otherwise initscale samples inside the exact bound (the float32 below it, docs/conventions.md
    # section 7) where torch rounds to the nearest float32, one ulp above: then every value
    # differs by at most 2 ulps of the bound (u·2B computed with B one ulp apart, then rounded).
    module = make()
    theirs = torch.empty_like(module.weight)
    tinit.kaiming_uniform_(theirs, a=math.sqrt(5), generator=torch.Generator().manual_seed(4))
    ist.reinit_(module, {"weight": presets.get("torch.linear_default"), "bias": None}, fans="native",
                generator=torch.Generator().manual_seed(4))
    ours = module.weight.detach()
    fan_in, _ = _fans(theirs)
    torch_bound, exact = _float32_bound(fan_in)
    assert float(ours.abs().max()) <= exact  # inside the exact support
    if torch_bound <= exact:
        assert torch.equal(ours, theirs)
    else:
        ulp = float(np.spacing(np.float32(torch_bound)))
        assert 0 < float((ours - theirs).abs().max()) <= 2 * ulp


def test_the_ulp_cases_cover_both_roundings() -> None:
    # The parametrization above has fans where torch's float32 bound rounds down (bit-equal) and up.
    bounds = [_float32_bound(_fans(make().weight)[0]) for make in ULP_LAYERS.values()]
    assert {torch_bound <= exact for torch_bound, exact in bounds} == {True, False}


def test_mutation_native_fans_ignored_is_caught(monkeypatch) -> None:
    # Planted bug: fans="native" silently gives the forward fans. The fan comparison with torch's
    # helper must fail on the depthwise and transposed layers.
    from initscale import reinit as core

    monkeypatch.setattr(core, "_fan_rule", lambda layout, fans: core.resolve(layout))
    model = _mobilenet_like()
    with pytest.warns(UserWarning, match="forward fans were used"):  # the rows say "forward": warned
        report = ist.reinit_(model, presets.get("torch.kaiming_uniform"), fans="native", dry_run=True)
    wrong = [n for n, m in model.named_children() if (report[f"{n}.weight"].fan_in, report[f"{n}.weight"].fan_out)
             != _fans(m.weight)]
    assert wrong == ["1", "2", "3", "4", "5"]
