"""Specs: validation when built, immutability, analytic numbers, serialization."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

import initscale
from initscale import (
    Constant,
    Fans,
    Normal,
    Ones,
    Orthogonal,
    TruncatedNormal,
    Uniform,
    VarianceScaling,
    Zeros,
    from_dict,
)
from initscale.normal_math import truncated_std

FANS = Fans(fan_in=144, fan_out=288, receptive_field=9)
ALL = [
    VarianceScaling(),
    VarianceScaling(2.0, "fan_out", "normal"),
    VarianceScaling(1.0, "fan_avg", "uniform"),
    VarianceScaling(0.5, "fan_geo_avg", "truncated_normal", truncation=3.0, corrected=False),
    Normal(0.02),
    TruncatedNormal(0.02, mean=0.1, lower=-1.0, upper=3.0),
    TruncatedNormal(1.0, lower=-2.0, upper=2.0, bounds_in="absolute"),
    TruncatedNormal(0.5, lower=0.0, upper=math.inf),
    Uniform(-0.1, 0.3),
    Constant(0.5),
    Zeros(),
    Ones(),
    Orthogonal(1.5),
]


@pytest.mark.parametrize("spec", ALL, ids=repr)
def test_frozen_hashable_comparable_and_round_trips(spec) -> None:
    assert spec == type(spec)(**spec.config())
    assert hash(spec) == hash(type(spec)(**spec.config()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.foo = 1
    text = json.dumps(spec.to_dict(), allow_nan=False)  # strict JSON
    assert from_dict(json.loads(text)) == spec
    assert repr(spec).startswith(type(spec).__name__ + "(")
    assert eval(repr(spec), {**vars(initscale), "inf": math.inf}) == spec  # the repr is the constructor call


def test_ints_and_floats_build_equal_specs() -> None:
    assert VarianceScaling(2) == VarianceScaling(2.0)
    assert len({VarianceScaling(2), VarianceScaling(2.0), VarianceScaling(1.0)}) == 2


@pytest.mark.parametrize("t", [1.0, 2.0, 2.5, 3.0])
def test_variance_scaling_truncated_is_corrected_for_any_bound(t) -> None:
    spec = VarianceScaling(2.0, "fan_in", "truncated_normal", truncation=t)
    n = FANS.fan_in
    assert spec.variance(FANS) == pytest.approx(2.0 / n, rel=1e-12)
    sigma = math.sqrt(2.0 / n) / truncated_std(-t, t)
    assert spec.sampler_parameter(FANS) == pytest.approx(sigma, rel=1e-12)
    assert spec.bounds(FANS) == pytest.approx((-t * sigma, t * sigma), rel=1e-12)


def test_variance_scaling_uncorrected_and_other_distributions() -> None:
    n_avg = (FANS.fan_in + FANS.fan_out) / 2
    unc = VarianceScaling(1.3, "fan_avg", "truncated_normal", corrected=False)
    assert unc.sampler_parameter(FANS) == pytest.approx(math.sqrt(1.3 / n_avg))
    assert unc.variance(FANS) == pytest.approx(1.3 / n_avg * 0.7737413035499232, rel=1e-12)
    uni = VarianceScaling(1.0, "fan_geo_avg", "uniform")
    limit = math.sqrt(3.0 / math.sqrt(144 * 288))
    assert uni.bounds(FANS) == pytest.approx((-limit, limit))
    assert uni.sampler_parameter(FANS) == pytest.approx(limit)
    nrm = VarianceScaling(2.0, "fan_out", "normal")
    assert nrm.bounds(FANS) is None and nrm.std(FANS) == pytest.approx(math.sqrt(2 / 288))


def test_fixed_scale_specs() -> None:
    assert Normal(0.02, mean=1.0).variance() == pytest.approx(0.0004)
    tn = TruncatedNormal(0.02)
    assert tn.bounds() == pytest.approx((-0.04, 0.04))
    assert tn.std() == pytest.approx(0.02 * 0.8796256610342398)
    # torch's trap: std=0.02 with absolute bounds ±2 is ±100 std — effectively untruncated.
    abs_tn = TruncatedNormal(0.02, bounds_in="absolute")
    assert abs_tn.bounds() == (-2.0, 2.0) and abs_tn.std() == pytest.approx(0.02, rel=1e-12)
    # asymmetric truncation moves the mean
    assert TruncatedNormal(1.0, lower=0.0, upper=math.inf).resolve().mean == pytest.approx(math.sqrt(2 / math.pi))
    assert Uniform(0.0, 1.0).variance() == pytest.approx(1 / 12)
    assert Constant(3.0).bounds() == (3.0, 3.0) and Zeros().variance() == 0.0 and Ones().resolve().mean == 1.0
    assert Orthogonal(2.0).variance(Fans(64, 256)) == pytest.approx(4.0 / 256)


def test_describe_gives_every_number() -> None:
    d = initscale.presets.get("he_normal").describe((3, 3, 64, 128), "keras")
    assert d.fans == Fans(576, 1152, 9)
    assert d.variance == pytest.approx(2 / 576) and d.std == pytest.approx(math.sqrt(2 / 576))
    assert d.sampler_parameter == pytest.approx(math.sqrt(2 / 576) / 0.87962566103423978)
    assert "sampler_parameter" in str(d) and d.layout == "keras"


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: VarianceScaling(mode="fan-in"),
            ValueError,
            r"Argument `mode` must be one of 'fan_avg', 'fan_geo_avg', 'fan_in', 'fan_out'. Received: mode='fan-in'.",
        ),
        (
            lambda: VarianceScaling(distribution="gaussian"),
            ValueError,
            "Argument `distribution` must be one of 'normal', 'truncated_normal', 'uniform'",
        ),
        (lambda: VarianceScaling(scale=0), ValueError, "`scale` must be > 0"),
        (lambda: VarianceScaling(scale=-1.0), ValueError, "`scale` must be > 0"),
        (lambda: VarianceScaling(scale=float("nan")), ValueError, "`scale` must be finite"),
        (lambda: VarianceScaling(scale="2"), TypeError, "`scale` must be a real number"),
        (lambda: VarianceScaling(scale=True), TypeError, "`scale` must be a real number"),
        (lambda: VarianceScaling(truncation=0), ValueError, "`truncation` must be > 0"),
        (lambda: VarianceScaling(distribution="uniform", truncation=3.0), ValueError, "only apply to"),
        (lambda: VarianceScaling(distribution="normal", corrected=False), ValueError, "only apply to"),
        (lambda: VarianceScaling(corrected="yes"), TypeError, "`corrected` must be a bool"),
        (lambda: Normal(0.0), ValueError, "`std` must be > 0"),
        (lambda: Normal(-1.0), ValueError, "`std` must be > 0"),
        (lambda: TruncatedNormal(1.0, lower=2.0, upper=-2.0), ValueError, "`lower` < `upper`"),
        (lambda: TruncatedNormal(1.0, bounds_in="sigma"), ValueError, "one of 'absolute', 'std'"),
        (lambda: TruncatedNormal(0.01, lower=5.0, upper=6.0, bounds_in="absolute"), ValueError, "no probability mass"),
        (lambda: Uniform(1.0, 1.0), ValueError, "`low` < `high`"),
        (lambda: Constant(float("inf")), ValueError, "`value` must be finite"),
        (lambda: Orthogonal(0.0), ValueError, "non-zero"),
        (lambda: VarianceScaling().variance(), ValueError, "depends on the weight's fans"),
        (lambda: VarianceScaling().variance((3, 4)), TypeError, "must be an initscale.Fans"),
    ],
)
def test_invalid_arguments_fail_when_built(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"version": 1, "kind": "HeNormal", "config": {}}, ValueError, "`kind` must be one of 'Constant', 'Normal'"),
        ({"version": 2, "kind": "Zeros", "config": {}}, ValueError, "Unsupported spec format version 2"),
        ({"version": 1, "kind": "Zeros", "config": {}, "extra": 1}, ValueError, r"Unknown key\(s\) \['extra'\]"),
        ({"version": 1, "kind": "Zeros"}, ValueError, r"lacks key\(s\) \['config'\]"),
        (
            {"version": 1, "kind": "Normal", "config": {"stddev": 1.0}},
            ValueError,
            r"Unknown key\(s\) \['stddev'\] for Normal; valid keys: \['mean', 'native', 'std'\]",
        ),
        ({"version": 1, "kind": "Uniform", "config": {"low": 0.0}}, ValueError, r"lacks required key\(s\) \['high'\]"),
        (
            {"version": 1, "kind": "VarianceScaling", "config": {"mode": "__import__('os')"}},
            ValueError,
            "Argument `mode` must be one of",
        ),
        ([("kind", "Zeros")], TypeError, "must be a mapping"),
        ({"version": 1, "kind": "Zeros", "config": []}, TypeError, "`config` must be a mapping"),
    ],
)
def test_from_dict_rejects_bad_dicts(data, error, match) -> None:
    with pytest.raises(error, match=match):
        from_dict(data)
