"""Weights a torch layer computes from other tensors (adapters/_torch_reparam.py): weight norm
(``torch.nn.utils.parametrizations.weight_norm`` and the legacy ``torch.nn.utils.weight_norm``),
spectral norm, and other parametrizations, through ``reinit_``, ``check``, ``lsuv_`` and ``auto``."""

from __future__ import annotations

import copy
import warnings

import pytest

import initscale
from _stats import failures
from initscale import presets

torch = pytest.importorskip("torch")
ist = pytest.importorskip("initscale.adapters.torch")
reparam = pytest.importorskip("initscale.adapters._torch_reparam")
nn = torch.nn
P = torch.nn.utils.parametrizations

HE = presets.get("he_normal")
EPS = torch.finfo(torch.float32).eps


def _rtol(v, dim: int) -> float:
    """How far the layer's weight w = v · (g / ‖v‖') may be from v when g = ‖v‖ (norm_except_dim)
    and ‖v‖' is torch._weight_norm's own float32 norm of the same n squares, summed in another
    order: two such sums differ by at most (n − 1)ε relatively (Higham, Accuracy and Stability of
    Numerical Algorithms, §4.2: γ_{n−1}), halved by the square root; the division and the product
    add one rounding each. So |w − v| <= ((n − 1)/2 + 2)ε|v|."""
    n = v.numel() if dim == -1 else v.numel() // v.shape[dim]
    return ((n - 1) / 2 + 2) * EPS


def _gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


def _legacy_weight_norm(module, dim=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of parametrizations
        return nn.utils.weight_norm(module, dim=dim)


# (layer under weight norm, the same layer without it, the weight-norm dim, the name of v, of g)
CASES = {
    "conv1d_dim0": (lambda: P.weight_norm(nn.Conv1d(16, 32, 5)), lambda: nn.Conv1d(16, 32, 5), 0),
    "grouped_conv_dim2": (  # wav2vec2's positional conv: groups, and g over the kernel axis
        lambda: P.weight_norm(nn.Conv1d(32, 32, 16, groups=4), dim=2),
        lambda: nn.Conv1d(32, 32, 16, groups=4),
        2,
    ),
    "linear_whole_tensor": (lambda: P.weight_norm(nn.Linear(64, 48), dim=None), lambda: nn.Linear(64, 48), -1),
    "conv_transpose_stride2": (  # EnCodec's upsampler
        lambda: P.weight_norm(nn.ConvTranspose1d(16, 8, 4, stride=2)),
        lambda: nn.ConvTranspose1d(16, 8, 4, stride=2),
        0,
    ),
    "legacy_linear": (lambda: _legacy_weight_norm(nn.Linear(64, 48)), lambda: nn.Linear(64, 48), 0),
    "legacy_conv2d_whole_tensor": (
        lambda: _legacy_weight_norm(nn.Conv2d(8, 16, 3), dim=None),
        lambda: nn.Conv2d(8, 16, 3),
        -1,
    ),
}


def _names(layer) -> tuple[str, str]:
    """(v, g) of a weight-normed layer."""
    if hasattr(layer, "parametrizations"):
        return "parametrizations.weight.original1", "parametrizations.weight.original0"
    return "weight_v", "weight_g"


def _weight_norm_problems(layer, v_name: str, g_name: str, dim: int, scaled: bool = False) -> list[str]:
    """The layer's weight is v as drawn (within :func:`_rtol`) and g is ‖v‖ as right_inverse gives
    it. ``scaled``: v and g were multiplied by one factor since (lsuv_, auto), so g is f·‖v‖
    rounded against ‖f·v‖: each within :func:`_rtol` of the exact f‖v‖, so the two within twice it."""
    v, g = layer.get_parameter(v_name), layer.get_parameter(g_name)
    with torch.no_grad():
        w = layer.weight if hasattr(layer, "parametrizations") else torch._weight_norm(v, g, dim)
        problems = []
        norm = torch.norm_except_dim(v, 2, dim)
        if (not scaled and not torch.equal(g, norm)) or float(((g - norm).abs() - 2 * _rtol(v, dim) * norm).max()) > 0:
            problems.append(f"g is not ‖v‖: max |g − ‖v‖| = {float((g - norm).abs().max())}")
        rtol = _rtol(v, dim) * (2 if scaled else 1)
        excess = float(((w - v).abs() - rtol * v.abs()).max())
        if excess > 0:
            problems.append(f"the layer's weight is not v: |w − v| exceeds {rtol:.3g}·|v| by {excess}")
    return problems


@pytest.mark.parametrize("case", sorted(CASES))
def test_weight_norm_draws_v_as_the_layers_weight_and_sets_g(case: str) -> None:
    normed, plain, dim = CASES[case]
    torch.manual_seed(0)
    layer = normed()
    v_name, g_name = _names(layer)
    twin = ist.reinit_(plain(), HE, dry_run=True)["weight"]  # the same layer without weight norm
    report = ist.reinit_(layer, HE, generator=_gen(1))
    v_row, g_row = report[v_name], report[g_name]
    assert (v_row.layout, v_row.fan_in, v_row.fan_out, v_row.std) == (twin.layout, twin.fan_in, twin.fan_out, twin.std)
    assert g_row.touched and g_row.spec is None and g_row.fan_in is None
    assert g_row.reason.startswith(f"weight norm: g = ‖v‖ of {v_name!r}")
    assert _weight_norm_problems(layer, v_name, g_name, dim) == []
    v = layer.get_parameter(v_name).detach()
    assert failures(v, HE.resolve(initscale.Fans(v_row.fan_in, v_row.fan_out))) == []
    assert report["bias"].touched and not layer.bias.detach().any()


def test_mutation_g_left_as_it_was_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The planted bug: g is not set after v is drawn (the behaviour before weight norm was read):
    # the layer then computes g_old · v / ‖v‖, not v.
    monkeypatch.setattr(reparam, "finish", lambda *args, **kwargs: None)
    torch.manual_seed(0)
    layer = P.weight_norm(nn.Conv1d(16, 32, 5))
    ist.reinit_(layer, HE, generator=_gen(1))
    assert _weight_norm_problems(layer, *_names(layer), 0) != []


def test_a_class_rule_on_the_layer_reaches_v_and_not_g() -> None:
    net = nn.Sequential(P.weight_norm(nn.Conv1d(4, 8, 3)), nn.ReLU(), _legacy_weight_norm(nn.Linear(8, 2)))
    report = ist.reinit_(net, {"Conv1d": HE, "Linear": HE}, dry_run=True)
    assert report["0.parametrizations.weight.original1"].reason == "rule 'Conv1d'"
    assert report["2.weight_v"].reason == "rule 'Linear'"
    assert report["0.parametrizations.weight.original0"].layer == "_WeightNorm"
    assert report["2.weight_g"].layer == "WeightNorm"
    assert all(
        report[g].reason.startswith("weight norm: g") for g in ("0.parametrizations.weight.original0", "2.weight_g")
    )


def test_a_rule_that_names_g_is_obeyed_and_g_is_then_not_recomputed() -> None:
    torch.manual_seed(0)
    layer = P.weight_norm(nn.Linear(16, 8))
    g_name = "parametrizations.weight.original0"
    before = layer.get_parameter(g_name).detach().clone()
    report = ist.reinit_(layer, {g_name: None, "Linear": HE}, generator=_gen(1))
    assert not report[g_name].touched and report[g_name].reason == f"rule {g_name!r} says leave as is"
    assert torch.equal(layer.get_parameter(g_name).detach(), before)
    report = ist.reinit_(layer, {g_name: initscale.Ones(), "Linear": HE}, generator=_gen(1))
    assert isinstance(report[g_name].spec, initscale.Ones) and bool((layer.get_parameter(g_name) == 1).all())


def test_the_bias_takes_the_fans_of_v() -> None:
    layer = P.weight_norm(nn.Conv1d(16, 32, 5))
    report = ist.reinit_(layer, {"Conv1d": presets.get("torch.conv_default")}, dry_run=True)
    assert (report["bias"].fan_in, report["bias"].fan_out) == (80, 160)
    assert "fans of 'parametrizations.weight.original1'" in report["bias"].reason


def test_a_failed_reinit_leaves_v_and_g_as_they_were() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), P.weight_norm(nn.Linear(8, 4)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"(?s)not weights and have no fans.*magnitude g of '1.weight'") as raised:
        ist.reinit_(net, {"*": HE}, generator=_gen(1))  # the glob reaches g, which has no fans
    assert "layout=" not in str(raised.value)  # g is known: no layout to give it
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_check_reads_the_weight_the_layer_computes() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(P.weight_norm(nn.Linear(256, 256)), nn.ReLU(), _legacy_weight_norm(nn.Linear(256, 256)))
    ist.reinit_(net, HE, generator=_gen(1))
    assert ist.check(net, HE).flags == {}
    with torch.no_grad():  # v untouched, g times 3: the layer's weight has 3x the std
        net[0].parametrizations.weight.original0.mul_(3)
        net[2].weight_g.mul_(3)
    assert set(ist.check(net, HE).flags) == {"0.parametrizations.weight.original1", "2.weight_v"}


def test_lsuv_rescales_a_weight_normed_layer_through_v_and_g() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(P.weight_norm(nn.Linear(32, 64)), nn.Tanh(), _legacy_weight_norm(nn.Linear(64, 16)))
    x = torch.randn(512, 32)
    report = ist.lsuv_(net, x, generator=_gen(0))
    assert [(r.name, r.status) for r in report.rows] == [("0", "converged"), ("2", "converged")]
    assert report.rows[0].weight == "0.parametrizations.weight.original1"
    with torch.no_grad():
        assert abs(float(net[2](net[1](net[0](x))).var()) - 1) <= 0.1  # the tolerance lsuv_ converged to
    assert _weight_norm_problems(net[0], *_names(net[0]), 0, scaled=True) == []
    assert _weight_norm_problems(net[2], *_names(net[2]), 0, scaled=True) == []


def test_lsuv_skips_spectral_norm_which_divides_out_a_scale() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), P.spectral_norm(nn.Linear(64, 16)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = ist.lsuv_(net, torch.randn(256, 32), generator=_gen(0))
    assert report.rows[1].status == "skipped: its weight is computed by _SpectralNorm, which divides out a rescaling"


def test_auto_gives_a_weight_normed_layer_its_gain() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(P.weight_norm(nn.Linear(32, 64)), nn.ReLU(), nn.Linear(64, 8))
    x = torch.randn(1024, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "get no gain from the graph" warning
        plan = ist.reinit_(net, initscale.auto(x), generator=_gen(0))
    assert "relu" in plan["0.parametrizations.weight.original1"].reason
    assert _weight_norm_problems(net[0], *_names(net[0]), 0, scaled=True) == []
    with torch.no_grad():  # the measured plan holds the second moment after ReLU at q = 1
        assert abs(float(net[1](net[0](x)).pow(2).mean()) - 1) < 0.1


def _spectral_estimate(layer) -> float:
    sn = layer.parametrizations.weight[0]
    w = layer.parametrizations.weight.original.detach()
    return float(torch.vdot(sn._u, sn._reshape_weight_to_matrix(w) @ sn._v))


def test_spectral_norm_draws_w_refreshes_its_estimate_and_warns() -> None:
    torch.manual_seed(0)
    layer = P.spectral_norm(nn.Linear(32, 64))
    stale = copy.deepcopy(layer)
    with pytest.warns(UserWarning, match=r"under spectral norm.*'parametrizations.weight.original'.*spectral norm 1"):
        report = ist.reinit_(layer, HE, generator=_gen(1))
    row = report["parametrizations.weight.original"]
    assert (row.layout, row.fan_in, row.fan_out) == ("torch.linear", 32, 64)
    # what refreshing means: 15 power iterations from the old (u, v) on the new W, as spectral_norm
    # runs when applied; the stale pair would leave the layer's σ estimate for the old W
    w = layer.parametrizations.weight.original.detach()
    with torch.no_grad():
        stale.parametrizations.weight.original.copy_(w)
        sn = stale.parametrizations.weight[0]
        sn._power_method(sn._reshape_weight_to_matrix(w), 15)
    assert torch.equal(layer.parametrizations.weight[0]._u, sn._u)
    assert torch.equal(layer.parametrizations.weight[0]._v, sn._v)


def test_mutation_a_stale_spectral_estimate_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reparam, "finish", lambda *args, **kwargs: None)
    torch.manual_seed(0)
    layer = P.spectral_norm(nn.Linear(32, 64))
    u_before = layer.parametrizations.weight[0]._u.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ist.reinit_(layer, HE, generator=_gen(1))
    assert torch.equal(layer.parametrizations.weight[0]._u, u_before)  # what the test above would catch


def test_another_parametrization_is_kept_and_named_in_a_warning() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), P.orthogonal(nn.Linear(8, 8)))
    original = net[1].parametrizations.weight.original.detach().clone()
    with pytest.warns(UserWarning) as caught:
        report = ist.reinit_(net, HE, generator=_gen(1))
    text = " ".join(str(w.message) for w in caught)
    assert "'1.weight' is computed by the parametrization _Orthogonal from '1.parametrizations.weight.original'" in text
    assert "model.get_submodule('1').weight = w" in text
    assert "held by layers initscale does not recognise" not in text  # named once, by what it is
    assert not report["1.parametrizations.weight.original"].touched
    assert torch.equal(net[1].parametrizations.weight.original.detach(), original)


def test_materialize_from_meta_sets_g_from_v() -> None:
    with torch.device("meta"):
        net = nn.Sequential(P.weight_norm(nn.Conv1d(4, 8, 3)), nn.ReLU(), _legacy_weight_norm(nn.Conv1d(8, 2, 3)))
    ist.materialize_(net, HE, device="cpu", generator=_gen(0))
    assert _weight_norm_problems(net[0], *_names(net[0]), 0) == []
    assert _weight_norm_problems(net[2], *_names(net[2]), 0) == []
    assert bool(net(torch.randn(2, 4, 16)).isfinite().all())


def _low_precision_problems(layer, dtype) -> list[str]:
    """w = g · v / ‖v‖ against v in a half-precision layer: g = ‖v‖ rounded to ``dtype`` (unit
    roundoff u = eps/2), torch's norm rounded to it, the division and the product: four roundings of
    u each, plus the float32 sums of the norms (n·ε₃₂, :func:`_rtol`): |w − v| <= (4u + 2·r₃₂)·|v|."""
    u = torch.finfo(dtype).eps / 2
    p = layer.parametrizations.weight
    v, w = p.original1.detach().float(), layer.weight.detach().float()
    dim = 0 if p.original0.dim() > 0 and p.original0.numel() > 1 else -1
    bound = (4 * u + 2 * _rtol(v, dim)) * v.abs()
    worst = float(((w - v).abs() - bound).max())
    return [] if worst <= 0 else [f"{dtype}: |w − v| exceeds its bound by {worst:.3g}"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_weight_norm_in_half_precision_keeps_v_as_the_layers_weight(dtype) -> None:
    # g is stored in the layer's dtype: its rounding, and torch's own half-precision weight norm, stay
    # within a few unit roundoffs, so the layer's weight is v as drawn to the dtype's precision.
    torch.manual_seed(0)
    net = nn.Sequential(P.weight_norm(nn.Conv1d(16, 32, 5)), P.weight_norm(nn.Linear(32, 8), dim=None)).to(dtype)
    report = ist.reinit_(net, HE, generator=_gen(1))
    for i in range(2):
        layer = net[i]
        assert layer.parametrizations.weight.original0.dtype == dtype
        assert _low_precision_problems(layer, dtype) == []
        row = report[f"{i}.parametrizations.weight.original1"]
        v = layer.parametrizations.weight.original1.detach()
        assert failures(v.float(), HE.resolve(initscale.Fans(row.fan_in, row.fan_out))) == []


def test_mutation_half_precision_g_left_as_it_was_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reparam, "finish", lambda *args, **kwargs: None)
    torch.manual_seed(0)
    layer = P.weight_norm(nn.Conv1d(16, 32, 5)).to(torch.bfloat16)
    ist.reinit_(layer, HE, generator=_gen(1))
    assert _low_precision_problems(layer, torch.bfloat16) != []
