"""The one reinit skeleton (initscale.reinit.run): the order of its steps, with a fake backend.

Each adapter's reinit entry supplies only its walk and its write (a Backend); these tests pin what
run() does for all of them: every check before the first draw, dry runs that draw nothing, staged
draws before the first store, and a failure midway reported as a PartialWriteError.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest

import initscale
from initscale import reinit
from initscale.reinit import Param, PartialWriteError, Write, bounded_groups

HE = initscale.presets.get("he_normal")


class Fake:
    """A backend over a dict name -> list of floats; logs every step it is asked for."""

    entry = "fake_reinit"

    def __init__(
        self, staged: bool = True, fail_draw: str = "", fail_store: str = "", bad: str = "", note: str = ""
    ) -> None:
        self.model = {"a.weight": [0.0] * 6, "a.bias": [1.0] * 2, "b.weight": [0.0] * 6, "b.bias": [1.0] * 2}
        self.log: list[str] = []
        self.staged, self.fail_draw, self.fail_store, self.bad, self.note = staged, fail_draw, fail_store, bad, note

    def walk(self):
        self.log.append("walk")
        layer = {"a": "Linear", "b": "Linear"}
        return [
            (
                Param(
                    n,
                    (2, 3) if n.endswith("weight") else (2,),
                    (layer[n[0]],),
                    "weight" if n.endswith("weight") else "bias",
                    "torch" if n.endswith("weight") else None,
                ),
                n,
            )
            for n in self.model
        ]

    def notes(self, report):
        self.log.append("notes")
        return (self.note,) if self.note else ()

    constants = False  # whether constant_value reads the values (off: every test's log stays as it is)

    def constant_value(self, handle):
        values = self.model[handle]
        return values[0] if self.constants and len(values) > 1 and len(set(values)) == 1 else None

    def check(self, targets, dry_run):
        self.log.append(f"check {[t.name for t in targets]} dry_run={dry_run}")
        if self.bad:
            raise TypeError(f"Parameter {self.bad!r} cannot be written")

    def writes(self, targets):
        self.log.append("writes")

        def draw(name):
            self.log.append(f"draw {name}")
            if name == self.fail_draw:
                raise RuntimeError("draw failed")
            values = [float(len(name))] * len(self.model[name])
            if not self.staged:
                self.store(name, values)
            return values

        return [
            Write(
                (t.handle,),
                lambda n=t.handle: draw(n),
                (lambda v, n=t.handle: self.store(n, v)) if self.staged else None,
            )
            for t in targets
        ]

    def store(self, name, values):
        self.log.append(f"store {name}")
        if name == self.fail_store:
            raise RuntimeError("store failed")
        self.model[name] = values

    def writing(self):
        self.log.append("writing")
        return contextlib.nullcontext()

    def finish(self, targets):
        self.log.append("finish")


def test_run_checks_every_target_before_the_first_draw_and_stores_after_every_draw() -> None:
    fake = Fake()
    report = reinit.run(fake, HE)
    assert fake.log == [
        "walk",
        "notes",
        "check ['a.weight', 'a.bias', 'b.weight', 'b.bias'] dry_run=False",
        "writes",
        "draw a.weight",
        "draw a.bias",
        "draw b.weight",
        "draw b.bias",
        "writing",
        "store a.weight",
        "store a.bias",
        "store b.weight",
        "store b.bias",
        "finish",
    ]
    assert [r.touched for r in report] == [True] * 4 and fake.model["a.bias"] == [6.0, 6.0]


def test_a_dry_run_checks_and_draws_nothing() -> None:
    fake = Fake()
    report = reinit.run(fake, HE, dry_run=True)
    assert fake.log == ["walk", "notes", "check ['a.weight', 'a.bias', 'b.weight', 'b.bias'] dry_run=True"]
    assert report.dry_run and fake.model["a.bias"] == [1.0, 1.0]


def test_a_failing_check_or_staged_draw_changes_nothing() -> None:
    fake = Fake(bad="b.weight")
    with pytest.raises(TypeError, match="'b.weight' cannot be written"):
        reinit.run(fake, HE)
    assert "writes" not in fake.log
    fake = Fake(fail_draw="b.weight")
    with pytest.raises(RuntimeError, match="draw failed"):  # as it is: nothing was written
        reinit.run(fake, HE)
    assert not any(step.startswith("store") for step in fake.log) and fake.model["a.bias"] == [1.0, 1.0]


@pytest.mark.parametrize("staged", [True, False])
def test_a_write_failing_midway_names_what_was_written(staged) -> None:
    fake = Fake(staged=staged, fail_store="b.weight")
    with pytest.raises(
        PartialWriteError,
        match=r"^fake_reinit failed while writing 'b\.weight' \(RuntimeError: store "
        r"failed\).*Already re-initialized \(2\): 'a\.weight', 'a\.bias'\. Possibly partly written: "
        r"'b\.weight'\. Unchanged \(1\): 'b\.bias'\.$",
    ) as caught:
        reinit.run(fake, HE)
    assert (caught.value.written, caught.value.failed, caught.value.unchanged) == (
        ("a.weight", "a.bias"),
        ("b.weight",),
        ("b.bias",),
    )
    assert "finish" not in fake.log


def test_backend_notes_are_warned_at_the_callers_line() -> None:
    with pytest.warns(UserWarning, match="a note from the backend") as caught:
        reinit.run(Fake(note="a note from the backend"), HE, dry_run=True)
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reinit.run(Fake(), HE, dry_run=True)


def test_refuse_names_every_problem_under_the_first_type() -> None:
    reinit.refuse([])
    with pytest.raises(TypeError, match=r"^one$"):
        reinit.refuse([(TypeError, "one")])
    with pytest.raises(TypeError, match=r"^2 parameters cannot be written; nothing was changed\.\none\ntwo$"):
        reinit.refuse([(TypeError, "one"), (ValueError, "two")])


def test_bounded_groups_keep_each_buffer_under_its_bound_in_draw_order() -> None:
    items = [("n", 4, "a"), ("u", 4, "b"), ("n", 8, "c"), ("n", 4, "d"), ("n", 4, "e")]
    # "n" totals 20 > 10: "c" (>= 8) alone, the small ones in buffers of at most 10 bytes, in order.
    assert bounded_groups(items, group_bytes=10, direct_bytes=8) == [
        ("n", True, ["c"]),
        ("n", False, ["a", "d"]),
        ("n", False, ["e"]),
        ("u", False, ["b"]),
    ]
    assert bounded_groups(items, group_bytes=20, direct_bytes=8) == [
        ("n", False, ["a", "c", "d", "e"]),
        ("u", False, ["b"]),
    ]  # one buffer per key under the bound
    assert bounded_groups([], group_bytes=1, direct_bytes=1) == []


def test_zeroing_a_constant_bias_by_default_warns_naming_it_and_how_to_keep_it() -> None:
    # The fake's biases hold [1.0, 1.0]: a value a model sets on purpose. The defaults zero them and
    # say so; a rule that names them (zeros asked for, or None) says nothing.
    fake = Fake()
    fake.constants = True
    with pytest.warns(UserWarning, match=r"2 bias\(es\) \('a.bias' = 1, 'b.bias' = 1\) held one other value .*None"):
        reinit.run(fake, HE, dry_run=True)
    for rules in ({"*.weight": HE, "*.bias": initscale.Zeros()}, {"*.weight": HE, "*.bias": None}):
        fake = Fake()
        fake.constants = True
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            reinit.run(fake, rules, dry_run=True)


def test_packed_projection_notes_name_dense_weights_whose_fan_out_spans_every_projection() -> None:
    # Glorot's std depends on fan_out: a dense weight named like a packed projection is named,
    # with its own in and out axes in the fix, for each framework's dense layouts; He (fan_in), a
    # fixed-scale spec, a rule's own layout, a batched layout and an unpacked name say nothing.
    glorot = initscale.presets.get("glorot_uniform")
    einsum = initscale.Layout(0, (1, 2), name="keras.einsum_dense[abc,cde->abde]")
    walked = [
        Param("h.0.attn.query_key_value.weight", (96, 32), ("Linear",), "weight", "torch.linear"),
        Param("blk/attention_qkv/kernel", (32, 96), ("Dense",), "weight", "keras.dense"),
        Param("blk/query_key_value/kernel", (32, 2, 48), ("EinsumDense",), "weight", einsum),
        Param("params/qkv/kernel", (32, 96), ("Dense",), "weight", "flax.dense"),
        Param("h.0.mlp.up_proj.weight", (96, 32), ("Linear",), "weight", "torch.linear"),
        Param("b.0.attn.queries_keys_values.linear.weight", (96, 32), ("Linear",), "weight", "torch.linear"),
        Param("experts/gate_up_proj", (4, 32, 96), ("Experts",), "weight", initscale.Layout(1, 2, 0, name="x")),
    ]
    (text,) = reinit.packed_projection_notes(walked, reinit.plan(walked, glorot))
    assert text.startswith("reinit: 5 dense weight(s) named like packed projections"), text
    assert all(repr(p.name) in text for p in (*walked[:4], walked[5])) and "up_proj.weight" not in text
    assert "Layout(AXES, out_groups=k)" in text  # three layouts: each one's axes, named by a weight of it
    assert "(AXES: in_axes=1, out_axes=0 for 'h.0.attn.query_key_value.weight'; in_axes=0, out_axes=1 for " in text
    assert "in_axes=0, out_axes=(1, 2) for 'blk/query_key_value/kernel', as their layers)." in text
    for rules in (HE, initscale.Normal(0.02), {"*": initscale.Rule(glorot, layout=initscale.Layout(1, 0))}):
        assert reinit.packed_projection_notes(walked, reinit.plan(walked, rules)) == ()


def test_a_fan_based_rule_on_a_known_non_weight_says_what_it_is_not_a_layout() -> None:
    # A parameter the adapter knows (a note: Mamba's A_log, weight norm's g) has no fans because it
    # is not a weight: the error says what it is and how to leave it out, never "give it a layout",
    # which would draw it as a weight. An unknown layer's weight in the same call keeps that advice.
    walked = [
        Param("mixer.A_log", (64, 4), ("MambaMixer",), "other", None, note="a state-space model's A_log"),
        Param("odd.kernel", (8, 8), ("Odd",), "other", None),
    ]
    with pytest.raises(ValueError) as raised:
        reinit.plan(walked, {"*": HE})
    known, unknown = str(raised.value).split("\n1 parameter(s) that a fan-based rule reaches")[::-1]
    assert "'mixer.A_log' (shape (64, 4), in MambaMixer): rule '*' gives VarianceScaling(scale=2.0); it is a " in known
    assert "{'mixer.A_log': None}" in known and "layout=" not in known
    assert "'odd.kernel'" in unknown and "layout='torch.linear'" in unknown and "A_log" not in unknown


def test_the_untouched_warning_says_which_classes_hold_per_channel_values_and_offers_ones() -> None:
    # DAC's Snake1d alpha (1, C, 1) is a per-channel scale that starts at ones, not a matrix: the
    # warning marks its class so, and its advice names Ones/Zeros beside a layout and Normal(0.02).
    walked = [
        Param("block.snake.alpha", (1, 8, 1), ("Snake1d",), "other", None),
        Param("odd.kernel", (8, 8), ("Odd",), "other", None),
    ]
    with pytest.warns(UserWarning) as caught:
        reinit.plan(walked, HE)
    (text,) = [str(w.message) for w in caught]
    assert "Snake1d (1, one axis above 1 each: 'block.snake.alpha')" in text
    assert "Odd (1: 'odd.kernel')" in text
    assert "initscale.Ones() or initscale.Zeros()" in text and "layout='torch.linear'" in text


def test_packed_projection_names_of_more_models_and_an_mlps_in_proj() -> None:
    # ModernBERT's Wqkv, Bark's att_proj, Qwen3-Next's in_proj_qkvz and in_proj_ba, Mamba's in_proj,
    # GPT-BigCode's Linear c_attn and DeepSeek-V3's kv_a_proj_with_mqa and kv_b_proj pack projections
    # (transformers 5.24's modeling files); Bark's MLP in_proj (d -> 4d) and T5's wi do not.
    glorot = initscale.presets.get("glorot_uniform")
    packed = [
        "layers.0.attn.Wqkv.weight",
        "h.0.attn.att_proj.weight",
        "layers.0.linear_attn.in_proj_qkvz.weight",
        "layers.0.linear_attn.in_proj_ba.weight",
        "layers.0.mixer.in_proj.weight",
        "transformer.h.0.attn.c_attn.weight",
        "layers.0.self_attn.kv_a_proj_with_mqa.weight",
        "layers.0.self_attn.kv_b_proj.weight",
    ]
    plain = ["h.0.mlp.in_proj.weight", "block.0.layer.1.DenseReluDense.wi.weight"]
    walked = [Param(n, (96, 32), ("Linear",), "weight", "torch.linear") for n in (*packed, *plain)]
    for names in (packed[:6], packed[6:]):  # the warning lists six names and counts the rest
        subset = [p for p in walked if p.name in names or p.name in plain]
        (text,) = reinit.packed_projection_notes(subset, reinit.plan(subset, glorot))
        assert text.startswith(f"reinit: {len(names)} dense weight(s)") and all(repr(n) in text for n in names), text
        assert not any(repr(n) in text for n in plain), text
