"""Mutation proof for the real-model checks (tests/real_models/_table.py): each planted bug in a
report or in drawn values is caught, at the suite's smallest touched tensor size."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from _table import SPEC, Expect, coverage_problems, row_problems, silent_problems, value_problems

import initscale
from initscale.adapters import numpy as isnp
from initscale.reinit import ReportRow

SHAPE = (96, 1, 3, 3)  # 864 values: the smallest touched weight of the suite's torch CNN
FANS = (9, 9)
ENTRY = Expect("w", "weight", "(out, in/g, kh, kw)", FANS, "convs")


def _row(**change) -> ReportRow:
    dist = SPEC.resolve(initscale.Fans(*FANS))
    row = ReportRow(
        name="w",
        shape=SHAPE,
        layer="Conv2d",
        layout="torch.depthwise_conv:multiplier=1",
        fan_in=FANS[0],
        fan_out=FANS[1],
        spec=SPEC,
        std=dist.std,
        touched=True,
        reason="one spec for all weights",
    )
    return dataclasses.replace(row, **change)


def _draw(std_factor: float = 1.0, seed: int = 3) -> np.ndarray:
    dist = SPEC.resolve(initscale.Fans(*FANS))
    return std_factor * isnp.sample(dist, SHAPE, np.random.default_rng(seed))


def test_the_right_row_and_draws_pass() -> None:
    assert row_problems(ENTRY, _row()) == []
    assert value_problems(_row(), _draw()) == []


@pytest.mark.parametrize(
    ("name", "row"),
    [
        ("fan_in read from the wrong axis", _row(fan_in=96 * 9, fan_out=9)),
        ("weight kept", _row(touched=False, spec=None, std=None, reason="no rule matched")),
        ("no layout", _row(layout=None)),
        ("std from other fans", _row(std=math.sqrt(2.0 / 18) / 0.8796)),
    ],
)
def test_a_wrong_row_is_caught(name: str, row: ReportRow) -> None:
    assert row_problems(ENTRY, row) != [], name


@pytest.mark.parametrize(
    ("name", "factor"),
    [
        ("fan_in doubled", math.sqrt(0.5)),
        ("fan_in halved", math.sqrt(2.0)),
        ("no truncation correction", 0.8796),  # sigma not divided by the truncated std: 0.88x
    ],
)
def test_wrong_draws_are_caught(name: str, factor: float) -> None:
    assert value_problems(_row(), _draw(factor)) != [], name


def test_constants_and_kept_values_are_exact() -> None:
    bias = _row(name="b", shape=(8,), spec=initscale.Zeros(), std=0.0, reason="default: biases -> zeros")
    assert value_problems(bias, np.zeros(8)) == []
    assert value_problems(bias, np.r_[np.zeros(7), 1e-7]) != []
    kept = _row(touched=False, spec=None, std=None, reason="no rule matched")
    x = _draw()
    assert value_problems(kept, x, before=x.copy()) == []
    assert value_problems(kept, x, before=x + 1e-6) != []


def test_roles_are_read_from_what_was_done() -> None:
    norm = Expect("g", "norm_scale", "(c,)", None, "norms")
    ones = _row(
        name="g",
        shape=(8,),
        spec=initscale.Ones(),
        std=0.0,
        layout=None,
        fan_in=None,
        fan_out=None,
        reason="default: norm scale -> ones",
    )
    assert row_problems(norm, ones) == []
    assert row_problems(norm, dataclasses.replace(ones, spec=initscale.Zeros())) != []
    assert row_problems(norm, dataclasses.replace(ones, touched=False, spec=None, reason="no rule matched")) != []
    unit = Expect("s", "unit_norm_scale", "(c,), used as 1 + s", None, "norms")
    zeros = dataclasses.replace(
        ones, name="s", spec=initscale.Zeros(), reason="default: norm scale used as 1 + weight -> zeros"
    )
    assert row_problems(unit, zeros) == []
    assert row_problems(unit, ones) != []  # a gain of 2 at init: the planted bug of issue 18
    assert row_problems(norm, zeros) != []  # and a plain scale at zeros (the model outputs zero)
    pos = Expect("p", "pos_embedding", "(1, n, d)", None, "pos")
    kept = _row(
        name="p",
        shape=(1, 17, 32),
        touched=False,
        spec=None,
        std=None,
        layout="torch",
        fan_in=544,
        fan_out=32,
        reason="embeddings are kept unless a rule names them",
    )
    assert row_problems(pos, kept) != []  # fans where there are none
    assert row_problems(pos, dataclasses.replace(kept, fan_in=None, fan_out=None, layout=None)) == []


def test_silence_and_coverage_are_caught() -> None:
    kept = _row(touched=False, spec=None, std=None, reason="no rule matched")
    assert silent_problems([ENTRY], [kept], warned="") != []
    assert silent_problems([ENTRY], [kept], warned="weights of Conv2d were left untouched") == []
    table = [ENTRY, Expect("*", "bias", "(out,)", None, "biases")]
    assert coverage_problems(table, ["w"]) != []  # two entries claim it
    assert coverage_problems([ENTRY], ["w", "b"]) != []  # b has no entry
