"""One adapter contract, one registry (issue 22, item 4).

Every installed adapter has the contract's names with the contract's signatures
(:data:`initscale._registry.CONTRACT`, checked with ``inspect.signature``), its ``__all__`` is the
contract's names plus its documented idioms, and what it does not offer or offers differently is
exactly what the registry says, by name (a gap that closes must leave the registry; a new
difference fails). The lazy attributes, parity, propagate and the CLI read the one registry.
"""

from __future__ import annotations

import importlib
import inspect
import types
import warnings

import pytest

import initscale
from initscale import _registry, cli, parity, propagate
from initscale._registry import ADAPTERS, CONTRACT, Problem, check_module


def _adapter_module(name: str) -> types.ModuleType:
    adapter = ADAPTERS[name]
    pytest.importorskip(adapter.framework)
    return importlib.import_module(adapter.module)


def _known(adapter: _registry.Adapter) -> set[str]:
    """The public names the registry says depart from the contract here."""
    return {_registry.public_name(adapter, f) for f in (*adapter.missing, *adapter.differs) if f in CONTRACT}


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_adapter_meets_the_contract(name: str) -> None:
    adapter = ADAPTERS[name]
    problems = check_module(_adapter_module(name), adapter)
    unknown = [str(p) for p in problems if p.name not in _known(adapter)]
    assert unknown == [], "departures from the contract not written in the registry:\n" + "\n".join(unknown)


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_every_known_gap_is_still_real(name: str) -> None:
    """The registry's missing/differs entries are each a real departure (and reported by name)."""
    adapter = ADAPTERS[name]
    module = _adapter_module(name)
    found = {p.name for p in check_module(module, adapter)}
    for function in adapter.missing:
        public = _registry.public_name(adapter, function)
        assert not hasattr(module, public), f"{name}.{public} exists now: drop it from the registry's `missing`"
    stale = sorted(n for n in _known(adapter) if n not in found)
    assert stale == [], f"{name}: these meet the contract now, drop them from the registry: {stale}"


def test_the_gaps_say_why() -> None:
    for adapter in ADAPTERS.values():
        for function, why in {**adapter.missing, **adapter.differs}.items():
            assert function in CONTRACT or function in _registry.TYPES, (adapter.name, function)
            assert len(why) > 40, f"{adapter.name}.{function}: say why, and what conforming would take"


def test_known_gaps_by_name() -> None:
    """The gaps, as the report of this session states them (changing one is a decision)."""
    gaps = {(a.name, f) for a in ADAPTERS.values() for f in (*a.missing, *a.differs)}
    assert gaps == {
        ("numpy", "reinit"),
        ("numpy", "check"),
        ("numpy", "lsuv"),
    }


def test_torch_spells_in_place_functions_with_an_underscore() -> None:
    torch_adapter = ADAPTERS["torch"]
    assert [_registry.public_name(torch_adapter, f) for f in CONTRACT] == ["initializer", "reinit_", "check", "lsuv_"]
    assert [_registry.public_name(ADAPTERS["keras"], f) for f in CONTRACT] == list(CONTRACT)


# --- the checker itself: a planted wrong signature is reported with its name and the difference -----


def _fake_module(**functions) -> types.ModuleType:
    module = types.ModuleType("initscale.adapters.fake")

    def initializer(spec, layout="x", *, stream=None, seed=None):
        pass

    def reinit(model, rules, seed=None, *, dry_run=False, defaults=True, fans="forward", stream_seed=None,
               stream_names=None, include_frozen=False):  # fmt: skip
        pass

    def check(model, recipe=None, *, rules=None, fresh=True, alpha=1e-4):
        pass

    def lsuv(model, batch, rules=None, *, tol=0.1, max_iters=10, **reinit_kwargs):
        pass

    base = {"Initializer": object, "initializer": initializer, "reinit": reinit, "check": check, "lsuv": lsuv}
    for key, value in {**base, **functions}.items():
        if value is not None:
            setattr(module, key, value)
    module.__all__ = sorted(k for k in base if getattr(module, k, None) is not None)
    return module


FAKE = _registry.Adapter(
    "fake",
    "initscale.adapters.fake",
    ("fake",),
    "fake",
    family="keras",
    native_layout="x",
    rng=("seed", None),
    extras={"initializer": ("seed",), "reinit": ("include_frozen",)},
)


def test_the_checker_passes_a_conforming_fake() -> None:
    assert check_module(_fake_module(), FAKE) == []


def _swapped(spec, seed=None, layout="x", *, stream=None):  # the Keras adapter's old order
    pass


def _no_stream(spec, layout="x", *, seed=None):
    pass


def _wrong_default(spec, layout="keras", *, stream=None, seed=None):
    pass


def _undocumented(spec, layout="x", *, stream=None, seed=None, colour="red"):
    pass


def _positional_dry_run(model, rules, seed=None, dry_run=False, *, defaults=True, fans="forward", stream_seed=None,
                        stream_names=None, include_frozen=False):  # fmt: skip
    pass


def _args(model, batch, rules=None, *args, tol=0.1, max_iters=10, **reinit_kwargs):
    pass


@pytest.mark.parametrize(
    ("planted", "name", "difference"),
    [
        ({"initializer": _swapped}, "initializer", "positional parameter #2 is 'seed', the contract has 'layout'"),
        ({"initializer": _no_stream}, "initializer", "missing keyword-only parameter 'stream'"),
        ({"initializer": _wrong_default}, "initializer", "'layout' has default 'keras', the contract has default 'x'"),
        ({"initializer": _undocumented}, "initializer", "'colour' is neither in the contract nor in the adapter's"),
        ({"reinit": _positional_dry_run}, "reinit", "extra positional parameter 'dry_run'"),
        ({"lsuv": _args}, "lsuv", "takes *args"),
        ({"check": None}, "check", "missing"),
        ({"Initializer": None}, "Initializer", "missing"),
    ],
    ids=["order", "missing-param", "default", "undocumented-extra", "positional-extra", "varargs", "name", "type"],
)
def test_the_checker_reports_a_planted_difference(planted, name, difference) -> None:
    problems = check_module(_fake_module(**planted), FAKE)
    assert any(p.name == name and difference in p.difference for p in problems), [str(p) for p in problems]
    assert all(p.adapter == "fake" for p in problems)


def test_the_checker_reports_a_wrong_all() -> None:
    module = _fake_module()
    module.__all__ = [*module.__all__, "secret"]
    (problem,) = check_module(module, FAKE)
    assert problem == Problem("fake", "__all__", "exports ['secret'] beyond the contract and idioms, lacks []")
    assert str(problem).startswith("fake.__all__: exports ['secret']")


def test_the_checker_applies_the_in_place_suffix() -> None:
    suffixed = _registry.Adapter(**{**FAKE.__dict__, "in_place_suffix": "_"})
    names = {p.name for p in check_module(_fake_module(), suffixed)}
    assert {"reinit_", "lsuv_"} <= names  # reinit/lsuv under torch's spelling are missing


# --- one registry -------------------------------------------------------------------------------------


def test_lazy_attributes_come_from_the_registry() -> None:
    assert not hasattr(initscale, "_ADAPTERS")
    assert set(ADAPTERS) <= set(dir(initscale))
    assert initscale.numpy is importlib.import_module(ADAPTERS["numpy"].module)


def test_parity_backends_come_from_the_registry() -> None:
    assert list(parity.BACKENDS) == _registry.serving("parity")
    for name, backend in parity.BACKENDS.items():
        assert (backend.modules, backend.family) == (ADAPTERS[name].requires, ADAPTERS[name].family)
    assert not hasattr(parity, "_draw_numpy") and not hasattr(parity, "_draw_torch")


def test_propagate_backends_come_from_the_registry() -> None:
    valid = _registry.serving("propagate")
    assert valid == ["numpy", "torch", "jax"]
    with pytest.raises(ValueError, match="must be one of 'jax', 'numpy', 'torch'. Received: backend='keras'"):
        propagate._sampler("keras")


def test_cli_choices_come_from_the_registry() -> None:
    parser = cli._parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    backend = {a.dest: a for a in subparsers["propagate"]._actions}["backend"]
    assert list(backend.choices) == _registry.serving("propagate")
    backend = {a.dest: a for a in subparsers["parity"]._actions}["backend"]
    assert sorted(backend.choices) == sorted(_registry.serving("parity"))


def test_no_other_registry_of_adapters() -> None:
    """No core module lists the adapter modules itself: only initscale/_registry.py names them."""
    import pathlib

    root = pathlib.Path(initscale.__file__).parent
    for path in sorted(root.glob("*.py")):
        if path.name == "_registry.py":
            continue
        text = path.read_text()
        named = [a.module for a in ADAPTERS.values() if f'"{a.module}"' in text or f"'{a.module}'" in text]
        assert named == [], f"{path.name} names adapter modules {named}: read initscale._registry instead"


def test_unknown_adapter_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="Unknown adapter 'mxnet'; valid: jax, keras, numpy, tf_keras, torch"):
        _registry.get("mxnet")


# --- deprecations: the old positional forms still work, and warn -------------------------------------


def test_jax_positional_axes_are_deprecated() -> None:
    jax = pytest.importorskip("jax")
    isj = _adapter_module("jax")
    spec = initscale.presets.get("he_normal")
    key, shape = jax.random.key(0), (3, 4, 5)
    with pytest.warns(DeprecationWarning, match=r"in_axis, out_axis positionally is deprecated.*in_axis=\.\.\."):
        old = isj.initializer(spec, 0, 1)
    new = isj.initializer(spec, in_axis=0, out_axis=1)
    assert (old(key, shape) == new(key, shape)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        isj.initializer(spec, "flax.dense")  # the contract's positional layout: no warning
    assert list(inspect.signature(isj.initializer).parameters)[:3] == ["spec", "layout", "stream"]


@pytest.mark.parametrize("name", ["jax", "keras", "tf_keras"])
def test_reinit_takes_dry_run_by_keyword_only(name: str) -> None:
    """Changed without a deprecation (a wrapper would move where reinit's own warnings point)."""
    adapter = _adapter_module(name)
    assert inspect.signature(adapter.reinit).parameters["dry_run"].kind is inspect.Parameter.KEYWORD_ONLY
    assert not hasattr(adapter.reinit, "__wrapped__")


def test_the_deprecation_wrapper_keeps_the_contract_signature() -> None:
    def f(spec, layout=None, *, stream=None, seed=None):
        return spec, layout, seed

    wrapped = _registry.deprecated_positional(
        ("spec", "seed", "layout"), new=2, is_old=lambda a: len(a) >= 2 and not _registry.layout_like(a[1]),
        since="0.2", removed_in="0.3",
    )(f)  # fmt: skip
    assert inspect.signature(wrapped) == inspect.signature(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wrapped("s", "keras.dense") == ("s", "keras.dense", None)
    with pytest.warns(DeprecationWarning, match="stops working in 0.3"):
        assert wrapped("s", 1, "keras.lstm") == ("s", "keras.lstm", 1)
    with pytest.raises(TypeError, match="multiple values for 'seed'"):
        wrapped("s", 1, seed=2)
    with pytest.raises(TypeError, match="at most 3 positional"):
        wrapped("s", 1, "x", 4)


@pytest.mark.parametrize("name", ["keras", "tf_keras"])
def test_keras_positional_seed_is_deprecated(name: str) -> None:
    adapter = _adapter_module(name)
    spec = initscale.presets.get("he_normal")
    with pytest.warns(DeprecationWarning, match=r"seed positionally is deprecated.*seed=\.\.\."):
        old = adapter.initializer(spec, 3)
    with pytest.warns(DeprecationWarning, match=r"seed, layout positionally"):
        legacy_layout = adapter.initializer(spec, 3, "keras.dense")
    assert old.get_config() == adapter.initializer(spec, seed=3).get_config()
    assert legacy_layout.get_config() == adapter.initializer(spec, "keras.dense", seed=3).get_config()
