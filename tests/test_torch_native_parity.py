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
    (
        "torch.xavier_uniform",
        {"gain": 1.7},
        (300, 400),
        lambda t, g: tinit.xavier_uniform_(t, gain=1.7, generator=g),
        lambda t: (1.7 * math.sqrt(2 / sum(_fans(t))), 1.7 * math.sqrt(6 / sum(_fans(t)))),
    ),
    (
        "torch.xavier_normal",
        {"gain": 0.5},
        (64, 32, 3, 3),
        lambda t, g: tinit.xavier_normal_(t, gain=0.5, generator=g),
        lambda t: (0.5 * math.sqrt(2 / sum(_fans(t))), None),
    ),
    (
        "torch.kaiming_uniform",
        {"a": 0.2, "mode": "fan_out"},
        (300, 400),
        lambda t, g: tinit.kaiming_uniform_(t, a=0.2, mode="fan_out", generator=g),
        lambda t: (
            tinit.calculate_gain("leaky_relu", 0.2) / math.sqrt(_fan(t, "fan_out")),
            tinit.calculate_gain("leaky_relu", 0.2) * math.sqrt(3 / _fan(t, "fan_out")),
        ),
    ),
    (
        "torch.kaiming_uniform",
        {"nonlinearity": "relu"},
        (128, 64, 3, 3),
        lambda t, g: tinit.kaiming_uniform_(t, nonlinearity="relu", generator=g),
        lambda t: (math.sqrt(2 / _fan(t, "fan_in")), math.sqrt(6 / _fan(t, "fan_in"))),
    ),
    (
        "torch.kaiming_normal",
        {},
        (300, 400),
        lambda t, g: tinit.kaiming_normal_(t, generator=g),
        lambda t: (math.sqrt(2 / _fan(t, "fan_in")), None),
    ),
    (
        "torch.kaiming_normal",
        {"mode": "fan_out", "nonlinearity": "tanh"},
        (300, 400),
        lambda t, g: tinit.kaiming_normal_(t, mode="fan_out", nonlinearity="tanh", generator=g),
        lambda t: (tinit.calculate_gain("tanh") / math.sqrt(_fan(t, "fan_out")), None),
    ),
    (
        "torch.trunc_normal",
        {"mean": 0.1, "std": 0.5, "a": -0.4, "b": 0.9},
        (300, 400),
        lambda t, g: tinit.trunc_normal_(t, mean=0.1, std=0.5, a=-0.4, b=0.9, generator=g),
        None,
    ),
    ("torch.trunc_normal", {}, (300, 400), lambda t, g: tinit.trunc_normal_(t, generator=g), None),
    (
        "torch.normal",
        {"mean": 0.3, "std": 2.0},
        (300, 400),
        lambda t, g: tinit.normal_(t, 0.3, 2.0, generator=g),
        lambda t: (2.0, None),
    ),
    (
        "torch.uniform",
        {"a": -0.5, "b": 2.0},
        (300, 400),
        lambda t, g: tinit.uniform_(t, -0.5, 2.0, generator=g),
        lambda t: (2.5 / math.sqrt(12), 2.0),
    ),
]

LAYERS = [  # name, layout of the preset, module factory, which parameters it fills
    ("torch.linear_default", "torch:native=true", lambda: nn.Linear(400, 300), ["weight"]),
    ("torch.conv_default", "torch:native=true", lambda: nn.Conv2d(64, 128, 3), ["weight"]),
    ("torch.conv_default", "torch.conv_transpose:native=true", lambda: nn.ConvTranspose2d(64, 128, 3), ["weight"]),
    ("torch.embedding_default", "torch", lambda: nn.Embedding(1000, 200), ["weight"]),
    (
        "torch.mha_in_proj_default",
        "torch.mha_in_proj:native=true",
        lambda: nn.MultiheadAttention(256, 4),
        ["in_proj_weight"],
    ),
]


def _ours(spec, shape, layout, seed):
    t = torch.empty(shape, dtype=torch.float64)
    return ist.init_(t, spec, layout, generator=torch.Generator().manual_seed(seed)).numpy()


@pytest.mark.parametrize(
    ("name", "kwargs", "shape", "native", "formula"), CASES, ids=[f"{c[0]}{c[1] or ''}" for c in CASES]
)
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
    theirs = tinit.orthogonal_(
        torch.empty(shape, dtype=torch.float64), gain, generator=torch.Generator().manual_seed(1)
    )
    ours = torch.from_numpy(_ours(presets.get("torch.orthogonal", gain=gain), shape, "torch", 2))
    for q in (theirs, ours):
        assert torch.allclose(q @ q.T, gain**2 * torch.eye(200, dtype=torch.float64), atol=1e-10)
    # Entries of Haar-random orthogonal rows share one marginal law; the torch and initscale
    # draws must not be distinguishable by it (two-sample KS at α = 1e-4).
    assert same_distribution(theirs.numpy(), ours.numpy()) == []


ORTHOGONAL_SHAPES = [(64, 64), (100, 40), (40, 100), (1, 30), (8, 4, 3, 3), (16, 3, 5)]


def _both_orthogonal(shape, dtype, gain=1.5):
    theirs = tinit.orthogonal_(torch.empty(shape, dtype=dtype), gain, generator=torch.Generator().manual_seed(4))
    spec = presets.get("torch.orthogonal", gain=gain)
    return theirs, ist.init_(torch.empty(shape, dtype=dtype), spec, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", ORTHOGONAL_SHAPES)
def test_torch_orthogonal_is_nn_init_orthogonal_bit_for_bit(shape, dtype) -> None:
    theirs, ours = _both_orthogonal(shape, dtype)
    assert torch.equal(theirs, ours)


def test_torch_orthogonal_in_reinit_is_nn_init_orthogonal_bit_for_bit() -> None:
    model = nn.Sequential(nn.Linear(50, 20), nn.Conv2d(3, 8, 3))
    ist.reinit_(model, {"*weight": presets.get("torch.orthogonal")}, torch.Generator().manual_seed(3), defaults=False)
    g = torch.Generator().manual_seed(3)
    for name in ("0.weight", "1.weight"):  # reinit_ draws in the model's order from the one generator
        want = tinit.orthogonal_(torch.empty_like(model.get_parameter(name)), generator=g)
        assert torch.equal(model.get_parameter(name), want), name


def test_mutation_initscales_own_orthogonal_order_is_caught(monkeypatch) -> None:
    # without torch's draw order a wide block is another Haar draw: the bit check must see it
    from initscale._kernels import torch_ops

    own = torch_ops._column_major_normal  # initscale's own (batch, big, small) order, on the CPU
    monkeypatch.setattr(torch_ops, "_torch_order_draw", lambda size, dtype, device, g: own(size, dtype, g))
    caught = [s for s in ORTHOGONAL_SHAPES if not torch.equal(*_both_orthogonal(s, torch.float32))]
    assert caught == [(40, 100), (8, 4, 3, 3)]  # the wide ones (one row is the same memory either way)


def test_mutation_a_wrong_uniform_limit_is_caught_against_the_native_draws() -> None:
    # Planted bug: kaiming_uniform with the normal's std as the limit (√(2/n) instead of √(6/n)).
    shape = (300, 400)
    theirs = tinit.kaiming_uniform_(
        torch.empty(shape, dtype=torch.float64), generator=torch.Generator().manual_seed(3)
    ).numpy()
    wrong = initscale.Uniform(-math.sqrt(2 / 400), math.sqrt(2 / 400)).resolve(None)
    assert failures(theirs, wrong) != []
    assert same_distribution(theirs, np.random.default_rng(0).uniform(wrong.low, wrong.high, theirs.size)) != []


# --- reinit_(..., fans="native"): torch's own fans for grouped, depthwise and transposed convs ---------


def _mobilenet_like():
    """The layers of a MobileNetV3 block that torch and initscale count differently, and a plain one."""
    return nn.Sequential(
        nn.Conv2d(16, 96, 1),  # expand (plain: both rules agree)
        nn.Conv2d(96, 96, 5, groups=96),  # depthwise
        nn.Conv2d(96, 192, 3, groups=96),  # depthwise, multiplier 2
        nn.Conv2d(192, 128, 3, groups=4),  # grouped
        nn.ConvTranspose2d(128, 64, 3, groups=2),  # transposed, grouped
        nn.ConvTranspose2d(64, 48, 4),  # transposed
    )


NATIVE_PRESETS = [
    ("torch.kaiming_uniform", {}),
    ("torch.kaiming_uniform", {"mode": "fan_out"}),
    ("torch.kaiming_normal", {"mode": "fan_out"}),
]  # torchvision MobileNetV3's conv init


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
    with pytest.raises(
        ValueError,
        match=r"Argument `fans` must be one of 'forward', 'native'\. "
        r"Received: fans='torch'\.",
    ):
        ist.reinit_(nn.Linear(3, 2), presets.get("he_normal"), fans="torch")


def _float32_bound(fan_in: int) -> tuple[float, float]:
    """torch's kaiming_uniform_(a=√5) bound as torch computes it (gain·√(3/fan_in) in double,
    rounded to float32 by uniform_) and the exact 1/√fan_in."""
    gain = tinit.calculate_gain("leaky_relu", math.sqrt(5))
    return float(np.float32(gain * math.sqrt(3.0 / fan_in))), 1 / math.sqrt(fan_in)


ULP_LAYERS = {
    "conv-27": lambda: nn.Conv2d(3, 8, 3),
    "conv-63": lambda: nn.Conv2d(7, 8, 3),
    "depthwise": lambda: nn.Conv2d(40, 40, 3, groups=40),
    "grouped": lambda: nn.Conv2d(12, 24, 3, groups=4),
    "transpose-108": lambda: nn.ConvTranspose2d(8, 12, 3),
    "transpose-18": lambda: nn.ConvTranspose2d(8, 2, 3),
    "conv1d": lambda: nn.Conv1d(5, 6, 5),
    "linear-10": lambda: nn.Linear(10, 4),
    "linear-9": lambda: nn.Linear(9, 4),
}


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
    ist.reinit_(
        module,
        {"weight": presets.get("torch.linear_default"), "bias": None},
        fans="native",
        generator=torch.Generator().manual_seed(4),
    )
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

    monkeypatch.setattr(core, "_fan_layout", lambda layout, fans: core.resolve(layout))
    model = _mobilenet_like()
    with pytest.warns(UserWarning, match="forward fans were used"):  # the rows say "forward": warned
        report = ist.reinit_(model, presets.get("torch.kaiming_uniform"), fans="native", dry_run=True)
    wrong = [
        n
        for n, m in model.named_children()
        if (report[f"{n}.weight"].fan_in, report[f"{n}.weight"].fan_out) != _fans(m.weight)
    ]
    assert wrong == ["1", "2", "3", "4", "5"]


# --- biases that depend on their weight: reset_parameters whole, through reinit_ --------------------------
# torch/nn/modules/linear.py Linear.reset_parameters and conv.py _ConvNd.reset_parameters:
# kaiming_uniform_(weight, a=√5), then bound = 1/√fan_in (fan_in from _calculate_fan_in_and_fan_out of the
# weight) and uniform_(bias, -bound, bound); Bilinear.reset_parameters: bound = 1/√weight.size(1) for both.


def _torch_layers(fans_in_that_round_down: bool):
    if fans_in_that_round_down:  # each fan_in distinct, and torch's float32 bounds at most the exact ones
        return nn.Sequential(
            nn.Linear(40, 64),
            nn.Conv1d(13, 16, 5),
            nn.Conv2d(7, 16, 3),
            nn.Conv2d(12, 24, 2, groups=3),
            nn.Conv2d(8, 8, 2, groups=8),
            nn.ConvTranspose2d(16, 14, 2, groups=2),
            nn.Bilinear(20, 6, 5),
        )
    return nn.Sequential(
        nn.Linear(50, 4000),
        nn.Conv1d(6, 3000, 5),
        nn.Conv2d(9, 2000, 3, groups=1),
        nn.ConvTranspose2d(3000, 24, 3),
        nn.Bilinear(11, 6, 3000),
    )


def _rules(model):
    bilinear = next(m for m in model if isinstance(m, nn.Bilinear))
    return {
        "Bilinear": presets.get("torch.bilinear_default", in1_features=bilinear.in1_features),
        "Linear": presets.get("torch.linear_default"),
        "_ConvNd": presets.get("torch.conv_default"),
    }


def _reset_all(model, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for layer in model:
            layer.reset_parameters()
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _torch_bias_bound(layer) -> float:
    fan_in = layer.weight.size(1) if isinstance(layer, nn.Bilinear) else _fans(layer.weight)[0]
    return 1 / math.sqrt(fan_in)


def test_reinit_reproduces_reset_parameters_bit_for_bit() -> None:
    # The same global generator state, the same order (each layer's weight then its bias, layer by layer:
    # torch.* presets are drawn one tensor at a time, never grouped; repeated layers below), the same
    # uniform_ calls: the same bits, where torch's float32 bounds round down (asserted; elsewhere they
    # differ by an ulp: test_reinit_native_draws_torchs_stream_to_the_ulp).
    model = _torch_layers(True)
    gain = tinit.calculate_gain("leaky_relu", math.sqrt(5))
    for layer in model:
        exact = _torch_bias_bound(layer)
        fan_in = _fans(layer.weight)[0]
        weight_bound = exact if isinstance(layer, nn.Bilinear) else gain * math.sqrt(3.0 / fan_in)
        assert float(np.float32(weight_bound)) <= exact and float(np.float32(exact)) <= exact, layer
    theirs = _reset_all(model, 31)
    with torch.random.fork_rng():
        torch.manual_seed(31)
        report = ist.reinit_(model, _rules(model), fans="native")
    for name, value in model.named_parameters():
        assert torch.equal(value.detach(), theirs[name]), name
    assert report["0.bias"].reason == "as its weight: the layer's own default covers its bias; fans of '0.weight'"
    assert report["5.bias"].fan_in == 7 * 4 and report["5.bias"].fans == "native"  # ConvTranspose: torch's fan_in


def test_reinit_of_repeated_layers_reproduces_reset_parameters_bit_for_bit() -> None:
    # Six Linear(40, 3) and four Conv1d(13, 3, 5): parameters that share a distribution, whose sizes
    # (120, 3, 195) are not multiples of 16. Drawn as one buffer they would be another stream (below).
    model = nn.Sequential(*(nn.Linear(40, 3) for _ in range(6)), *(nn.Conv1d(13, 3, 5) for _ in range(4)))
    theirs = _reset_all(model, 32)
    with torch.random.fork_rng():
        torch.manual_seed(32)
        ist.reinit_(model, {"Linear": presets.get("torch.linear_default"), "Conv1d": presets.get("torch.conv_default")})
    for name, value in model.named_parameters():
        assert torch.equal(value.detach(), theirs[name]), name


NATIVE_LOOPS = [
    ("torch.kaiming_normal", {}, "kaiming_normal_"),
    ("torch.kaiming_normal", {"mode": "fan_out", "nonlinearity": "tanh"}, "kaiming_normal_"),
    ("torch.xavier_normal", {"gain": 0.7}, "xavier_normal_"),
    ("torch.normal", {"std": 0.02}, "normal_"),
    ("torch.trunc_normal", {"std": 0.02, "a": -0.04, "b": 0.04}, "trunc_normal_"),  # normal proposals
    ("torch.trunc_normal", {"std": 0.5, "a": 0.5, "b": 1.0}, "trunc_normal_"),  # uniform proposals
    ("torch.orthogonal", {"gain": 2.0}, "orthogonal_"),
]


LOOP_CASES = [(*case, dtype) for case in NATIVE_LOOPS for dtype in (torch.float32, torch.float64)]


@pytest.mark.parametrize(
    ("name", "kwargs", "native", "dtype"), LOOP_CASES, ids=[f"{c[0]}{c[1]}-{c[3]}" for c in LOOP_CASES]
)
def test_reinit_with_a_torch_preset_is_a_loop_of_nn_init_calls(name, kwargs, native, dtype) -> None:
    model = nn.Sequential(*(nn.Linear(10, 3, bias=False) for _ in range(4)), nn.Linear(10, 700, bias=False))
    model.to(dtype)
    ist.reinit_(model, presets.get(name, **kwargs), torch.Generator().manual_seed(6), defaults=False)
    g = torch.Generator().manual_seed(6)
    for i, layer in enumerate(model):  # torch's own function, layer by layer, from the one generator
        want = getattr(tinit, native)(torch.empty_like(layer.weight), **kwargs, generator=g)
        assert torch.equal(layer.weight.detach(), want), i


def test_a_flat_draw_of_several_tensors_would_be_another_stream() -> None:
    # the mutation of the rule above (torch.* presets grouped into one buffer): the check must see it
    flat = torch.empty(2 * 30).normal_(generator=torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    loop = torch.cat([torch.empty(30).normal_(generator=g), torch.empty(30).normal_(generator=g)])
    assert not torch.equal(flat, loop)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_trunc_normal_in_half_precision_is_initscales_exact_draw_inside_the_bounds(dtype) -> None:
    # torch rounds its bounds outward in these dtypes (docs/conventions.md): initscale's sampler instead
    spec = presets.get("torch.trunc_normal", std=0.05, a=-0.1, b=0.1)
    w = ist.init_(torch.empty(400, 500, dtype=dtype), spec, generator=torch.Generator().manual_seed(1))
    assert failures(w, spec.resolve(None)) == []  # support: inside the bounds that hold in the dtype
    assert float(w.abs().max()) <= 0.1


def test_torch_trunc_normal_on_a_one_sided_interval_is_initscales_draw() -> None:
    # torch's own raises (uniform_ of an infinite bound): initscale's exact sampler draws it
    spec = presets.get("torch.trunc_normal", std=1.0, a=2.0, b=math.inf)
    with pytest.raises(RuntimeError):
        tinit.trunc_normal_(torch.empty(100), std=1.0, a=2.0, b=math.inf)
    w = ist.init_(torch.empty(200_000, dtype=torch.float64), spec, generator=torch.Generator().manual_seed(2))
    assert failures(w, spec.resolve(None)) == []


def test_reinit_layer_default_biases_have_torchs_distribution() -> None:
    # Large layers whose bounds need not round down: per parameter, the exact bounds ±1/√fan_in of torch's
    # formula, initscale.testing's one-sample checks against that distribution, and a two-sample KS test
    # against torch's own reset_parameters draws (alpha as documented in initscale.testing).
    model = _torch_layers(False).double()
    theirs = _reset_all(model, 32)
    report = ist.reinit_(model, _rules(model), fans="native", generator=torch.Generator().manual_seed(33))
    for index, layer in enumerate(model):
        bound = _torch_bias_bound(layer)
        for leaf in ("weight", "bias"):
            name = f"{index}.{leaf}"
            row = report[name]
            dist = row.spec.resolve(None if row.spec.fixed_scale else initscale.Fans(row.fan_in, row.fan_out))
            assert dist.bounds == pytest.approx((-bound, bound), rel=1e-15), name
            ours = getattr(layer, leaf).detach().numpy()
            assert float(np.abs(ours).max()) <= bound, name
            assert failures(ours, dist) == [], name
            assert same_distribution(ours, theirs[name].numpy()) == [], name


def test_bias_presets_by_name_take_their_weights_fans() -> None:
    model = nn.Sequential(nn.Linear(50, 4000), nn.ConvTranspose2d(30, 24, 3), nn.LayerNorm(24))
    ld, bias = presets.get("torch.linear_default"), presets.get("torch.linear_default_bias")
    report = ist.reinit_(model, {"0.weight": ld, "[01].bias": bias, "1.weight": None}, dry_run=True)
    assert report["0.bias"].spec == bias and report["0.bias"].fan_in == 50  # no longer "has no fans"
    assert report["0.bias"].reason == "rule '[01].bias'; fans of '0.weight'"
    assert report["1.bias"].fan_in == 30 * 9  # forward fans by default: in_channels × kernel ...
    native = ist.reinit_(model, {"[01].bias": bias, "*": None}, dry_run=True, fans="native")
    assert native["1.bias"].fan_in == 24 * 9  # ... torch's own with fans="native"
    # a rule that names the bias wins over following the weight
    kept = ist.reinit_(model, {"Linear": ld, "0.bias": None}, dry_run=True)
    assert not kept["0.bias"].touched and kept["0.weight"].touched
    zeros = ist.reinit_(model, {"0.bias": initscale.Zeros(), "Linear": ld}, dry_run=True)
    assert zeros["0.bias"].spec == initscale.Zeros()
    # other weights' specs do not reach their biases: biases stay zeros
    he = ist.reinit_(model, presets.get("torch.kaiming_uniform"), dry_run=True)
    assert he["0.bias"].spec == initscale.Zeros() and he["0.bias"].fan_in is None


def test_bias_fans_from_a_weight_without_fans_or_as_a_matrix_are_errors() -> None:
    class Scale(nn.Module):  # a 1-D weight and a bias: no layout to take fans from
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))
            self.bias = nn.Parameter(torch.zeros(4))

    model = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), Scale())
    with pytest.raises(
        ValueError,
        match=r"Parameter '2\.bias' .* takes its fans from '2\.weight', which has no "
        r"layout",
    ):
        ist.reinit_(model, {"2.bias": presets.get("torch.linear_default_bias")}, dry_run=True)
    with pytest.raises(ValueError, match=r"Parameter '1\.bias' .* has no fans"):  # a norm's offset: no weight fans
        ist.reinit_(model, {"1.bias": presets.get("torch.linear_default_bias")}, dry_run=True)
    with pytest.raises(ValueError, match=r"Parameter '0\.bias' .* makes orthogonal matrices; a bias is not one"):
        ist.reinit_(model, {"0.bias": presets.get("torch.orthogonal")}, dry_run=True)
    before = model[0].weight.detach().clone()
    with pytest.raises(ValueError, match="which has no layout"):  # atomic: nothing written
        ist.reinit_(model, {"Linear": presets.get("torch.linear_default"), "2.bias": presets.get("he_normal")})
    assert torch.equal(model[0].weight.detach(), before)


def test_mutation_bias_bound_from_the_wrong_fan_is_caught(monkeypatch) -> None:
    # Planted bug: the bias takes its weight's fan_out (1/√4000 instead of 1/√50 for Linear(50, 4000)).
    from initscale import reinit as core

    real = core._from_weight

    def swapped(param, source, spec, rule):
        _, fans = real(param, source, spec, rule)
        return spec.resolve(initscale.Fans(fans.fan_out, fans.fan_in)), fans

    monkeypatch.setattr(core, "_from_weight", swapped)
    model = nn.Sequential(nn.Linear(50, 4000)).double()
    theirs = _reset_all(model, 34)["0.bias"].numpy()
    ist.reinit_(model, presets.get("torch.linear_default"), generator=torch.Generator().manual_seed(35))
    ours = model[0].bias.detach().numpy()
    right = presets.get("torch.linear_default").resolve(initscale.Fans(50, 4000))
    assert failures(ours, right) != [] and same_distribution(ours, theirs) != []


def test_only_draws_that_give_torchs_values_are_drawn_whole_and_alone() -> None:
    from initscale._kernels import torch_ops

    def whole(name, dtype, **kwargs):
        spec = presets.get(name, **kwargs)
        dist = spec.resolve(None if spec.fixed_scale else initscale.compute_fans((8, 8), "torch"))
        return torch_ops.torchs_stream(dist, torch.empty(8, 8, dtype=dtype))

    assert whole("torch.kaiming_uniform", torch.float32) and whole("torch.trunc_normal", torch.float64)
    assert whole("torch.normal", torch.bfloat16)  # torch's normal_ rounds once: torch's values in any dtype
    # float32-staged uniforms and exact truncations in half precision are initscale's draws: bounded pieces
    assert not whole("torch.kaiming_uniform", torch.bfloat16) and not whole("torch.trunc_normal", torch.float16)
    assert not whole("he_normal", torch.float32) and not whole("torch.orthogonal", torch.float32)


@pytest.mark.parametrize("fan_in", [10, 27, 300])
def test_the_normal_presets_std_is_torchs_arithmetic_exactly(fan_in) -> None:
    w = torch.empty(7, fan_in)
    fans = initscale.compute_fans(tuple(w.shape), "torch:native=true")
    std = presets.get("torch.kaiming_normal", nonlinearity="tanh").resolve(fans).std
    assert std == tinit.calculate_gain("tanh") / math.sqrt(fan_in)  # ==, not approx: the same doubles
    assert presets.get("torch.xavier_normal", gain=0.7).resolve(fans).std == 0.7 * math.sqrt(2.0 / (fan_in + 7))


def test_the_other_arithmetic_is_an_ulp_away_where_the_loop_check_sees_it() -> None:
    # the planted bug (√(scale/fan) for the native std): torch's ReLU gain √2 squared is
    # 2.0000000000000004, and √(that/10) is not √2/√10: a float64 draw differs, as the loop test saw
    scale = tinit.calculate_gain("relu") ** 2
    assert math.sqrt(scale / 10) != math.sqrt(2.0) / math.sqrt(10)
    draws = [
        torch.empty(30, dtype=torch.float64).normal_(0, std, generator=torch.Generator().manual_seed(0))
        for std in (math.sqrt(scale / 10), math.sqrt(2.0) / math.sqrt(10))
    ]
    assert not torch.equal(*draws)
