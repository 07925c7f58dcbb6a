"""The one registry of adapters, and the contract every adapter's public surface follows.

Framework-free: importing this module imports no framework (nor NumPy). Everything that needs to
know which adapters exist reads :data:`ADAPTERS`: the lazy attributes ``initscale.numpy`` /
``initscale.torch`` / ..., the parity matrix (:data:`initscale.parity.BACKENDS`), the
propagation experiment (:func:`initscale.propagate.propagate`'s ``backend``) and the CLI's
``--backend`` choices.

**The contract** (:data:`CONTRACT`), as safetensors keeps ``save``/``save_file``/``load``/
``load_file`` the same in ``safetensors.torch``, ``.numpy``, ``.flax`` and ``.tensorflow``: every
adapter has the same public names with the same parameters (names, order, kinds, defaults).
Four rules say where a framework's idioms go, and nowhere else:

1. **Keyword-only extras.** An adapter may add parameters only as keyword-only ones, each named
   in its :attr:`Adapter.extras` (and documented in its docstring): JAX's ``in_axis``/
   ``out_axis``/``batch_axis``/``dtype`` on ``initializer``, Keras's ``seed``, torch's
   ``include_frozen``. Keyword-only parameters compare by name, not by order.
2. **The subject.** The first parameter of ``reinit``/``check``/``lsuv`` is the thing being
   initialized, passed positionally; its name is the framework's own word (torch ``module`` or
   ``model``, JAX ``params``, Keras ``model``) and is not part of the contract.
3. **The randomness source** of ``reinit`` is its third parameter (positional or keyword), under
   the framework's name and default (:attr:`Adapter.rng`): torch ``generator=None``, JAX ``key``
   (required: JAX keys are explicit), Keras ``seed=None``. ``initializer``'s randomness is the
   framework's initializer protocol instead (torch ``fn(tensor, *, generator=None)``, JAX
   ``init(key, shape, dtype)``, NumPy ``fn(shape, *, rng, dtype)``; Keras's ``seed`` is a
   keyword-only extra, as Keras initializers take it when they are built).
4. **Torch's trailing underscore.** torch spells functions that modify their argument in place
   with a trailing ``_`` (``torch.nn.init.normal_``), so in the torch adapter the contract's
   in-place functions are ``reinit_`` and ``lsuv_`` (:attr:`Function.in_place`,
   :attr:`Adapter.in_place_suffix`). JAX's ``reinit`` returns new params; Keras's mutates but
   Keras has no such spelling.

``initializer``'s ``layout`` defaults to the adapter's own layout (:attr:`Adapter.native_layout`:
NumPy ``"keras"``, torch ``"torch"``, JAX and Keras ``None``: the axes / Keras's own fan rule).

What an adapter does not offer, or offers differently, is written in its :attr:`Adapter.missing`
and :attr:`Adapter.differs` with the reason; ``tests/test_contract.py`` checks every installed
adapter against the contract and fails on any difference not written there, and on any entry
there that is no longer true.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

__all__ = [
    "ADAPTERS",
    "CONTRACT",
    "TYPES",
    "Adapter",
    "Function",
    "Param",
    "Problem",
    "available",
    "check_module",
    "deprecated_positional",
    "draw",
    "get",
    "load",
    "names",
    "public_name",
    "resolve_alias",
    "serving",
]

POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
KEYWORD = inspect.Parameter.KEYWORD_ONLY
VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD
REQUIRED = inspect.Parameter.empty

SUBJECT = "<subject>"  # rule 2: the first parameter, positional, named by the framework
RNG = "<rng>"  # rule 3: the randomness source, named by the framework (Adapter.rng)


class _Native:
    """The default of ``initializer``'s ``layout``: the adapter's own (Adapter.native_layout)."""

    def __repr__(self) -> str:
        return "<the adapter's native layout>"


NATIVE = _Native()


@dataclass(frozen=True)
class Param:
    """One parameter of a contract function: ``name`` (or :data:`SUBJECT` / :data:`RNG`), its
    kind and its default (:data:`REQUIRED` for none; ``core`` names a core constant instead,
    ``"module:NAME"``, read when checking so that this module imports nothing)."""

    name: str
    kind: Any
    default: Any = REQUIRED
    core: str | None = None

    def expected_default(self, adapter: Adapter) -> Any:
        if self.name == RNG:
            return adapter.rng[1] if adapter.rng else REQUIRED
        if self.default is NATIVE:
            return adapter.native_layout
        if self.core is not None:
            module, _, attribute = self.core.partition(":")
            return getattr(importlib.import_module(module), attribute)
        return self.default


@dataclass(frozen=True)
class Function:
    """A public function of every adapter. ``in_place``: torch spells it with a trailing ``_``."""

    name: str
    params: tuple[Param, ...]
    doc: str
    in_place: bool = False


CONTRACT: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "initializer",
            (Param("spec", POSITIONAL), Param("layout", POSITIONAL, NATIVE), Param("stream", KEYWORD, None)),
            "Compile a spec into the framework's native initializer; stream= draws the portable stream.",
        ),
        Function(
            "reinit",
            (
                Param(SUBJECT, POSITIONAL),
                Param("rules", POSITIONAL),
                Param(RNG, POSITIONAL),
                Param("dry_run", KEYWORD, False),
                Param("defaults", KEYWORD, True),
                Param("fans", KEYWORD, "forward"),
                Param("stream_seed", KEYWORD, None),
                Param("stream_names", KEYWORD, None),
            ),
            "Re-initialize a whole model by rules (atomic: validates everything before writing).",
            in_place=True,
        ),
        Function(
            "check",
            (
                Param(SUBJECT, POSITIONAL),
                Param("recipe", POSITIONAL, None),
                Param("rules", KEYWORD, None),
                Param("fresh", KEYWORD, True),
                Param("alpha", KEYWORD, core="initscale.check:ALPHA"),
            ),
            "Check a freshly initialized model for the silent init bugs (initscale.check).",
        ),
        Function(
            "lsuv",
            (
                Param(SUBJECT, POSITIONAL),
                Param("batch", POSITIONAL),
                Param("rules", POSITIONAL, None),
                Param("tol", KEYWORD, 0.1),
                Param("max_iters", KEYWORD, 10),
                Param("reinit_kwargs", VAR_KEYWORD),
            ),
            "reinit, then rescale each layer to unit output variance on one batch (initscale.lsuv).",
            in_place=True,
        ),
    )
}

# Public types every adapter exports (names only: their call protocol is the framework's).
TYPES: dict[str, str] = {"Initializer": "the type initializer() returns: the framework's initializer protocol"}


# --- drawing glue (parity and propagate): one weight, as a float NumPy array --------------------------


def _np() -> Any:
    return importlib.import_module("numpy")


def _draw_numpy(spec: Any, shape: tuple[int, ...], layout: Any, seed: int, dtype: str | None) -> Any:
    np = _np()
    adapter = load("numpy")
    return np.asarray(adapter.initializer(spec, layout)(shape, rng=seed, dtype=dtype or "float32"))


def _draw_torch(spec: Any, shape: tuple[int, ...], layout: Any, seed: int, dtype: str | None) -> Any:
    np, torch = _np(), importlib.import_module("torch")
    adapter = load("torch")
    t = torch.empty(shape, dtype=getattr(torch, dtype or "float32"))
    adapter.initializer(spec, layout)(t, generator=torch.Generator().manual_seed(seed))
    return np.asarray(t.numpy())


def _draw_jax(spec: Any, shape: tuple[int, ...], layout: Any, seed: int, dtype: str | None) -> Any:
    np, jax = _np(), importlib.import_module("jax")
    adapter = load("jax")
    init = adapter.initializer(spec, layout)
    out = init(jax.random.key(seed), shape) if dtype is None else init(jax.random.key(seed), shape, dtype)
    return np.asarray(out)


def _draw_keras(spec: Any, shape: tuple[int, ...], layout: Any, seed: int, dtype: str | None) -> Any:
    np, keras = _np(), importlib.import_module("keras")
    adapter = importlib.import_module(ADAPTERS["keras"].module)
    values = adapter.initializer(spec, layout, seed=seed)(shape, dtype or "float32")
    return np.asarray(keras.ops.convert_to_numpy(values))


def _draw_tf_keras(spec: Any, shape: tuple[int, ...], layout: Any, seed: int, dtype: str | None) -> Any:
    np = _np()
    adapter = importlib.import_module(ADAPTERS["tf_keras"].module)
    return np.asarray(adapter.initializer(spec, layout, seed=seed)(shape, dtype or "float32").numpy())


Draw = Callable[[Any, tuple[int, ...], Any, int, "str | None"], Any]


@dataclass(frozen=True)
class Adapter:
    """One adapter: where it lives, what it needs, and how it meets the contract.

    Attributes:
        name: the attribute on ``initscale`` (``initscale.torch``).
        module: the adapter module.
        requires: the modules that must import for it to be available, its framework first (the
            lazy attribute checks the framework; parity also needs the rest: JAX's rows use flax).
        extra: the pip extra that installs the framework (``pip install 'initscale[EXTRA]'``).
        family: the parity matrix's layout family (``"torch"``, ``"keras"``, ``"flax"``).
        native_layout: ``initializer``'s default ``layout``.
        rng: ``reinit``'s randomness source, ``(name, default)`` (:data:`REQUIRED`: no default).
        in_place_suffix: appended to the names of the contract's in-place functions.
        extras: contract function -> its keyword-only extras here (rule 1).
        idioms: the other public names (``__all__`` is the contract's names plus these).
        missing: contract name -> why this adapter does not offer it.
        differs: contract name -> why its signature differs here (a known gap, to be closed).
        serves: what else reaches it through the registry: ``"parity"``, ``"propagate"``.
        draw: ``draw(spec, shape, layout, seed, dtype)`` -> a NumPy array, for ``serves``.
    """

    name: str
    module: str
    requires: tuple[str, ...]
    extra: str
    family: str
    native_layout: Any
    rng: tuple[str, Any] | None
    in_place_suffix: str = ""
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    idioms: tuple[str, ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)
    differs: Mapping[str, str] = field(default_factory=dict)
    serves: tuple[str, ...] = ()
    draw: Draw | None = None

    @property
    def framework(self) -> str:
        return self.requires[0]

    def expected_all(self) -> list[str]:
        """The adapter's ``__all__``: the contract's names it offers, plus its idioms."""
        names = [public_name(self, f) for f in CONTRACT if f not in self.missing]
        return sorted({*names, *(t for t in TYPES if t not in self.missing), *self.idioms})


_NO_MODEL = (
    "NumPy has no model object: the NumPy adapter is the reference sampler for arrays (check a "
    "state dict of arrays with initscale.check.check_state or `initscale check FILE`)."
)
_TORCH_INIT = ("glorot_normal_", "glorot_uniform_", "he_normal_", "he_uniform_", "lecun_normal_", "lecun_uniform_")
_KERAS_CLASSES = (
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
)

ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        Adapter(
            "numpy",
            "initscale.adapters.numpy",
            ("numpy",),
            "initscale",
            family="keras",
            native_layout="keras",
            rng=None,
            idioms=("NumpyInitializer", "sample"),
            missing={"reinit": _NO_MODEL, "check": _NO_MODEL, "lsuv": _NO_MODEL},
            serves=("parity", "propagate"),
            draw=_draw_numpy,
        ),
        Adapter(
            "torch",
            "initscale.adapters.torch",
            ("torch",),
            "torch",
            family="torch",
            native_layout="torch",
            rng=("generator", None),
            in_place_suffix="_",
            extras={
                "reinit": ("include_buffers", "include_frozen"),
                "check": ("include_buffers", "include_frozen"),
                "lsuv": ("generator",),
            },
            idioms=(
                "PartialWriteError",
                "apply_fn",
                "init_",
                "materialize_",
                "orthogonal_",
                "variance_scaling_",
                *_TORCH_INIT,
            ),
            serves=("parity", "propagate"),
            draw=_draw_torch,
        ),
        Adapter(
            "jax",
            "initscale.adapters.jax",
            ("jax", "flax"),
            "jax",
            family="flax",
            native_layout=None,
            rng=("key", REQUIRED),
            extras={
                "initializer": ("batch_axis", "dtype", "in_axis", "out_axis"),
                "reinit": ("example_inputs", "example_kwargs", "module"),
                "check": ("example_inputs", "example_kwargs", "module"),
                "lsuv": ("apply_kwargs", "key", "module"),
            },
            serves=("parity", "propagate"),
            draw=_draw_jax,
        ),
        Adapter(
            "keras",
            "initscale.adapters.keras",
            ("keras",),
            "keras",
            family="keras",
            native_layout=None,
            rng=("seed", None),
            extras={
                "initializer": ("seed",),
                "reinit": ("include_buffers", "include_frozen"),
                "check": ("include_buffers", "include_frozen"),
                "lsuv": ("seed", "training"),
            },
            idioms=_KERAS_CLASSES,
            serves=("parity",),
            draw=_draw_keras,
        ),
        Adapter(
            "tf_keras",
            "initscale.adapters.tf_keras",
            ("tf_keras",),
            "tf-keras",
            family="keras",
            native_layout=None,
            rng=("seed", None),
            extras={
                "initializer": ("seed",),
                "reinit": ("include_buffers", "include_frozen"),
                "check": ("include_buffers", "include_frozen"),
                "lsuv": ("seed", "training"),
            },
            idioms=_KERAS_CLASSES,
            serves=("parity",),
            draw=_draw_tf_keras,
        ),
    )
}


def get(name: str) -> Adapter:
    """The registry entry ``name``; a ValueError names the valid ones."""
    if name not in ADAPTERS:
        raise ValueError(f"Unknown adapter {name!r}; valid: {', '.join(sorted(ADAPTERS))}.")
    return ADAPTERS[name]


def names() -> list[str]:
    return list(ADAPTERS)


def serving(role: str) -> list[str]:
    """The adapters that serve ``role`` (``"parity"``, ``"propagate"``), in registry order."""
    return [a.name for a in ADAPTERS.values() if role in a.serves]


def legacy_keras() -> bool:
    """TensorFlow's own switch to Keras 2: with TF_USE_LEGACY_KERAS=1, tf.keras is tf_keras."""
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


def resolve_alias(name: str) -> str:
    """``initscale.keras`` is the tf_keras adapter when ``TF_USE_LEGACY_KERAS=1``."""
    return "tf_keras" if name == "keras" and legacy_keras() else name


def load(name: str, *, attribute: str | None = None) -> ModuleType:
    """Import adapter ``name``; when its framework is missing, an ImportError names the extra."""
    adapter = get(name)
    shown = attribute or name
    try:
        importlib.import_module(adapter.framework)
    except ImportError as err:
        raise ImportError(
            f"initscale.{shown} needs {adapter.framework}, which is not importable ({err}). "
            f"Install it with: pip install 'initscale[{adapter.extra}]'"
        ) from err
    return importlib.import_module(adapter.module)


def available(role: str | None = None) -> list[str]:
    """The adapters whose required modules import here (a broken install counts as missing)."""
    found = []
    for name in serving(role) if role else names():
        try:
            for module in ADAPTERS[name].requires:
                importlib.import_module(module)
        except Exception:  # a broken install is as absent as a missing one
            continue
        found.append(name)
    return found


def draw(name: str, spec: Any, shape: tuple[int, ...], layout: Any, seed: int, dtype: str | None = None) -> Any:
    """One weight of ``shape`` (the framework's own form) drawn by adapter ``name``, as NumPy.

    ``dtype`` None: the framework's default (float32)."""
    adapter = get(name)
    if adapter.draw is None:
        valid = sorted(a.name for a in ADAPTERS.values() if a.draw is not None)
        raise ValueError(f"Adapter {name!r} has no drawing glue; valid: {', '.join(valid)}.")
    return adapter.draw(spec, shape, layout, seed, dtype)


# --- the contract checker --------------------------------------------------------------------------


def public_name(adapter: Adapter, function: str) -> str:
    """The name contract function ``function`` has in ``adapter`` (rule 4: torch's ``reinit_``)."""
    return function + adapter.in_place_suffix if CONTRACT[function].in_place else function


@dataclass(frozen=True)
class Problem:
    """One way ``adapter``'s ``name`` departs from the contract."""

    adapter: str
    name: str
    difference: str

    def __str__(self) -> str:
        return f"{self.adapter}.{self.name}: {self.difference}"


def _kind(kind: Any) -> str:
    return {
        inspect.Parameter.POSITIONAL_ONLY: "positional-only",
        POSITIONAL: "positional-or-keyword",
        inspect.Parameter.VAR_POSITIONAL: "*args",
        KEYWORD: "keyword-only",
        VAR_KEYWORD: "**kwargs",
    }[kind]


def _signature_problems(adapter: Adapter, function: Function, obj: Any) -> list[str]:
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError) as err:
        return [f"no signature ({err})"]
    out: list[str] = []
    allowed = set(adapter.extras.get(function.name, ()))
    positional = [p for p in function.params if p.kind == POSITIONAL]
    have_pos = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, POSITIONAL)]
    for i, want in enumerate(positional):
        name = adapter.rng[0] if want.name == RNG and adapter.rng else want.name
        if i >= len(have_pos):
            out.append(f"missing positional parameter #{i + 1} {name!r}")
            continue
        got = have_pos[i]
        if want.name != SUBJECT and got.name != name:
            out.append(f"positional parameter #{i + 1} is {got.name!r}, the contract has {name!r}")
        if want.name != SUBJECT and got.kind != POSITIONAL:
            out.append(f"parameter {got.name!r} is {_kind(got.kind)}, the contract has positional-or-keyword")
        default = want.expected_default(adapter)
        if want.name != SUBJECT and got.default != default:
            shown = "no default" if default is REQUIRED else f"default {default!r}"
            got_shown = "no default" if got.default is REQUIRED else f"default {got.default!r}"
            out.append(f"parameter {got.name!r} has {got_shown}, the contract has {shown}")
    for extra in have_pos[len(positional) :]:
        out.append(f"extra positional parameter {extra.name!r}: extras must be keyword-only (rule 1)")
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        out.append("takes *args: extras must be keyword-only (rule 1)")
    have_kw = {p.name: p for p in params if p.kind == KEYWORD}
    for want in (p for p in function.params if p.kind == KEYWORD):
        if want.name not in have_kw:
            moved = next((p for p in have_pos if p.name == want.name), None)
            if moved is None:
                out.append(f"missing keyword-only parameter {want.name!r}")
            continue
        got, default = have_kw[want.name], want.expected_default(adapter)
        if got.default != default:
            got_shown = "no default" if got.default is REQUIRED else f"default {got.default!r}"
            out.append(f"parameter {want.name!r} has {got_shown}, the contract has default {default!r}")
    contract_kw = {p.name for p in function.params if p.kind == KEYWORD}
    for name in sorted(set(have_kw) - contract_kw - allowed):
        out.append(f"keyword-only parameter {name!r} is neither in the contract nor in the adapter's extras")
    for name in sorted(allowed - set(have_kw)):
        out.append(f"documented extra {name!r} is not a keyword-only parameter")
    wants_var_kw = any(p.kind == VAR_KEYWORD for p in function.params)
    has_var_kw = any(p.kind == VAR_KEYWORD for p in params)
    if wants_var_kw != has_var_kw:
        out.append("takes **kwargs, the contract does not" if has_var_kw else "does not take **kwargs as the contract")
    return out


def check_module(module: Any, adapter: Adapter) -> list[Problem]:
    """Every way ``module`` departs from the contract for ``adapter``, known gaps included.

    The caller compares these with ``adapter.missing`` / ``adapter.differs`` (see
    ``tests/test_contract.py``): a problem on a name written there is the known gap."""
    problems: list[Problem] = []
    for function in CONTRACT.values():
        name = public_name(adapter, function.name)
        obj = getattr(module, name, None)
        if obj is None:
            problems.append(Problem(adapter.name, name, "missing"))
            continue
        if not callable(obj):
            problems.append(Problem(adapter.name, name, f"not callable ({type(obj).__name__})"))
            continue
        problems += [Problem(adapter.name, name, d) for d in _signature_problems(adapter, function, obj)]
    for type_name in TYPES:
        if getattr(module, type_name, None) is None:
            problems.append(Problem(adapter.name, type_name, "missing"))
    exported = getattr(module, "__all__", None)
    expected = adapter.expected_all()
    if exported is None:
        problems.append(Problem(adapter.name, "__all__", "missing"))
    elif sorted(exported) != expected:
        extra, lacking = sorted(set(exported) - set(expected)), sorted(set(expected) - set(exported))
        problems.append(
            Problem(adapter.name, "__all__", f"exports {extra} beyond the contract and idioms, lacks {lacking}")
        )
    return problems


# --- deprecations ------------------------------------------------------------------------------------


def deprecated_positional(
    old: Sequence[str],
    *,
    new: int,
    is_old: Callable[[tuple[Any, ...]], bool],
    since: str,
    removed_in: str,
    call: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Keep an old positional form working for a while, with a DeprecationWarning.

    ``old`` is the old positional parameter order; ``new`` how many positionals the contract
    signature takes. A call is in the old form when it passes more than ``new`` positionals, or
    when ``is_old(args)`` says so (the old second argument cannot be a new one's value, e.g. an
    int where a layout goes). Its positionals are then passed by their old names, as keywords.
    ``inspect.signature`` shows the contract's signature (``functools.wraps``), the one to use.
    ``call``: the new call, spelled out, for the warning to name (where some of the moved
    arguments stay positional in it); without it the warning says to pass them by keyword.
    The pattern is scikit-learn's ``_deprecate_positional_args``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if len(args) <= new and not is_old(args):
                return func(*args, **kwargs)
            if len(args) > len(old):
                raise TypeError(f"{func.__qualname__}() takes at most {len(old)} positional arguments.")
            moved = dict(zip(old[1:], args[1:], strict=False))
            clash = sorted(set(moved) & set(kwargs))
            if clash:
                raise TypeError(f"{func.__qualname__}() got multiple values for {', '.join(map(repr, clash))}.")
            spelled = ", ".join(f"{k}=..." for k in moved)
            how = f"call {call} instead" if call else f"pass them by keyword ({spelled})"
            warnings.warn(
                f"{func.__module__}.{func.__qualname__}: passing {', '.join(moved)} positionally is deprecated "
                f"since initscale {since} and stops working in {removed_in}; {how}.",
                DeprecationWarning,
                stacklevel=2,
            )
            return func(args[0], **moved, **kwargs)

        return wrapper

    return decorate


def layout_like(value: Any) -> bool:
    """Whether ``value`` can be a ``layout`` argument (None, a name, a Layout or LayerKind)."""
    from .fans import LayerKind, Layout

    return value is None or isinstance(value, str | Layout | LayerKind)
