"""``initscale.auto`` for Keras 3 (any backend): record the model's graph on one forward pass, then plan each weight.

The pass (``training=False``, eager) wraps ``call`` of every operation the model runs, as
``initscale.keras.lsuv`` does: the operations of a functional model (``model.operations``: its
layers and the ``keras.ops`` nodes such as ``x + y`` or ``2.0 * x``), the layers of a Sequential
one, the leaf layers of a subclassed one, and, recursively, nested models and the sublayers of a
composite layer (MultiHeadAttention, a custom block: recorded itself as one op too). Tensors are
matched by identity (Keras hands each op the very objects the previous ops returned, on every
backend). What each recorded op is:

- a layer whose ``kernel`` a one-spec ``reinit`` sets with forward fans (Dense, EinsumDense,
  ConvND, ConvNDTranspose, DepthwiseConv): a planned layer. Its own ``activation=`` (fused) is
  recorded as an activation applied to the layer's pre-activation output (the input of that
  activation, captured by wrapping it for the pass): the gain is for that activation.
- ``keras.layers.Activation``, ``ReLU``, ``LeakyReLU``, ``ELU``, and a fused activation: by the
  function's name, the closed forms of :mod:`initscale.gains` (``gelu`` is Keras's exact one,
  ``approximate=False``; ``leaky_relu`` Keras's slope 0.2 unless the layer says otherwise); any
  other activation function by quadrature of the function itself.
- any other parameter-free layer with one input that acts elementwise (a ``Lambda``, a custom
  activation layer; tested on the pass's own input by changing one value and checking that only
  that output changes): the activation, integrated by quadrature of the layer's ``call`` on
  float64 arrays, its derivative by the backend's autodiff (``jax.grad``, ``tf.GradientTape``,
  ``torch.autograd``).
- norms (LayerNormalization, BatchNormalization, GroupNormalization, RMSNormalization, any class
  named ``...Norm``/``...Normalization``): the mean square of their scale.
- Add/Subtract, Average, Multiply, Concatenate (layers and ops), with scalar operands; shape ops
  and inference-time identities (Flatten, Reshape, Permute, Dropout, GaussianNoise, ...).
- anything else (pooling, Softmax, attention, an op without a rule): the ratio of mean squares
  measured on the pass, named in the plan's notes, never taken as the identity silently.

Residual sums (``Add`` of a skip and a branch; :mod:`initscale.autogain`) get ``auto``'s
``residual=`` rule as on torch: the branch's last norm scale (``gamma``; keras-hub's ``scale`` or
``weight``; not a scale used as ``1 + scale``) or else its last layer's kernel is 0 (``"zero"``)
or times 1/√L (``"depth"``); the plan's ``residuals`` rows say what was scaled.

Limits: recurrent layers (several kernels) and kernels that are not one layer's main ``kernel``
(SeparableConv) are left to the other rules and named in a warning; a layer called twice is
planned for its first call (a note). See :mod:`initscale.autogain` for the rules.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import keras
import numpy as np

from initscale import presets
from initscale.autogain import Auto, AutoPlan, AutoRow, Follower, follow, layer_gain, propagate

__all__ = ["apply", "plan"]

# Keras activation functions (by __name__) with a closed form in initscale.gains: name -> (gains name, param)
_FUNCTIONS: dict[str, tuple[str, float | None]] = {
    "relu": ("relu", None),
    "gelu": ("gelu", None),
    "silu": ("silu", None),
    "swish": ("silu", None),
    "tanh": ("tanh", None),
    "sigmoid": ("sigmoid", None),
    "selu": ("selu", None),
    "elu": ("elu", 1.0),
    "celu": ("celu", 1.0),
    "softplus": ("softplus", 1.0),
    "softsign": ("softsign", None),
    "mish": ("mish", None),
    "leaky_relu": ("leaky_relu", 0.2),
}
_RECURRENT = ("RNN", "LSTMCell", "GRUCell", "SimpleRNNCell", "Bidirectional")
_SHAPE_OPS = {
    "Flatten",
    "Reshape",
    "Permute",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "Identity",
    "RepeatVector",
    "InputLayer",
    "Transpose",
    "Squeeze",
    "ExpandDims",
    "Negative",
    "Cast",
    "ActivityRegularization",
    "Masking",
}
_SUMS = {"Add", "Subtract"}
_PRODUCTS = {"Multiply"}
_QUOTIENTS = {"Divide", "TrueDivide"}
_CATS = {"Concatenate"}


@dataclass
class _Event:
    category: str  # "layer", "norm", "act", "op"
    name: str  # the layer's or op's name
    cls: str  # its class name
    inputs: list[int]
    outputs: list[int]
    scalars: list[float] = field(default_factory=list)
    activation: Any = None  # (gains name, param) or a NumPy callable with .derivative
    label: str = ""
    sizes: list[int] = field(default_factory=list)
    parent: str = ""  # the composite layer (MultiHeadAttention, a custom block) whose call this ran in
    scale_path: str | None = None  # a norm's scale variable, which the residual rule may set (None: none)


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (np.ndarray, np.generic))


def _mean_square(x: Any) -> float:
    if isinstance(x, keras.Variable):
        x = x.value
    value = np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)
    return float(np.mean(np.square(value))) if value.size else 0.0


class _Recorder:
    def __init__(self) -> None:
        self.nodes: dict[int, int] = {}
        self.measured: list[float] = []
        self.keep: list[Any] = []
        self.events: list[_Event] = []
        self.stack: list[str] = []  # the composite layers running now
        self.composites: list[str] = []  # composite layers whose insides the recorded sublayers only partly show
        self.own_code: dict[str, None] = {}  # composite layers not Keras's own: their call's ops go unseen
        self.depth = 0  # > 0 inside a layer whose insides are not the model's ops (a planned layer, a norm)

    def node(self, tensor: Any, fresh: bool = False) -> int:
        if not fresh and id(tensor) in self.nodes:
            return self.nodes[id(tensor)]
        self.keep.append(tensor)
        self.nodes[id(tensor)] = len(self.measured)
        self.measured.append(_mean_square(tensor))
        return self.nodes[id(tensor)]


def _flat(x: Any) -> list[Any]:
    return [t for t in keras.tree.flatten(x) if t is not None]


def _operations(model: Any) -> list[Any]:
    """The operations a forward pass of ``model`` runs: a functional model's ``operations``, a
    Sequential's layers, a subclassed model's direct sublayers; nested models are entered."""
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        children = list(model.layers)
    elif isinstance(model, Functional):
        children = list(model.operations)
    else:
        children = list(model._flatten_layers(include_self=False, recursive=False))
    out = []
    for op in children:
        if isinstance(op, keras.layers.InputLayer):
            continue
        if isinstance(op, keras.Model):
            out.extend(_operations(op))
            continue
        out.append(op)
        if isinstance(op, keras.layers.Layer) and not _recurrent(op):  # a recurrent layer's cell runs in a loop
            subs = list(op._flatten_layers(include_self=False, recursive=False))
            for sub in subs:
                out.extend(_operations(sub) if isinstance(sub, keras.Model) else [sub, *_sublayers(sub)])
    return list(dict.fromkeys(out))


def _recurrent(layer: Any) -> bool:
    return any(c.__name__ in _RECURRENT for c in type(layer).__mro__)


def _sublayers(layer: Any) -> list[Any]:
    out = []
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        out += [sub, *_sublayers(sub)]
    return out


def _is_norm(op: Any) -> bool:
    name = type(op).__name__
    return name in ("LayerNormalization", "BatchNormalization", "GroupNormalization", "RMSNormalization") or (
        name.endswith(("Norm", "Normalization"))
        and name != "UnitNormalization"
        and isinstance(op, keras.layers.Layer)
        and bool(op.weights)
    )


def _norm_scale(op: Any) -> float:
    scale = getattr(op, "gamma", None)
    scale = getattr(op, "scale", None) if scale is None else scale
    if scale is None or not hasattr(scale, "shape") or isinstance(scale, (bool, float)):
        return 1.0
    return _mean_square(scale)


def _norm_scale_path(op: Any, names: dict[int, str]) -> str | None:
    """The path of a norm's scale variable (``gamma``, keras-hub's ``scale``/``weight``: the leaves of
    :data:`NORM_SCALE_LEAVES`), which the residual rule sets; None where it has none, or uses it as
    ``1 + scale`` (Gemma's RMSNormalization: a constant written there is not the factor)."""
    from initscale.adapters._keras_common import norm_flags
    from initscale.adapters._keras_layers import NORM_SCALE_LEAVES
    from initscale.adapters.keras import _FW

    if norm_flags(_FW, op)[1]:
        return None
    for leaf in NORM_SCALE_LEAVES:
        variable = getattr(op, leaf, None)
        if isinstance(variable, keras.Variable) and int(np.prod(variable.shape)) > 0:
            return names.get(id(variable), str(variable.path))
    return None


def _named(function: Any) -> tuple[str, float | None] | None:
    name = getattr(function, "__name__", "")
    return _FUNCTIONS.get(name)


def _activation_layer(op: Any) -> tuple[str, float | None] | None:
    """(gains name, param) for Keras's activation layers with a closed form, else None."""
    cls = type(op).__name__
    if cls == "Activation":
        return _named(op.activation)
    if cls == "ReLU" and op.max_value is None and float(op.threshold) == 0.0:
        slope = float(op.negative_slope)
        return ("relu", None) if slope == 0.0 else ("leaky_relu", slope)
    if cls == "LeakyReLU":
        return ("leaky_relu", float(op.negative_slope))
    if cls == "ELU":
        return ("elu", float(op.alpha))
    return None


def _activation_op(op: Any) -> tuple[str, float | None] | None:
    """(gains name, param) for a ``keras.ops`` activation node of a functional graph (``keras.ops.gelu``'s
    default is the tanh approximation), else None."""
    name = {
        "Relu": "relu",
        "Gelu": "gelu",
        "Silu": "silu",
        "Tanh": "tanh",
        "Sigmoid": "sigmoid",
        "Selu": "selu",
        "Elu": "elu",
        "Celu": "celu",
        "Softplus": "softplus",
        "Softsign": "softsign",
        "LeakyRelu": "leaky_relu",
        "Mish": "mish",
    }.get(type(op).__name__)
    if name is None:
        return None
    if name == "gelu" and getattr(op, "approximate", False):
        return ("gelu_tanh", None)
    if name == "leaky_relu":
        return (name, float(getattr(op, "negative_slope", 0.2)))
    if name in ("elu", "celu"):
        return (name, float(getattr(op, "alpha", 1.0)))
    return _FUNCTIONS[name]


def _backend_grad(fn: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    """f'(x) elementwise for an elementwise ``fn`` on backend tensors, by the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda t: jax.numpy.sum(fn(t)))(jax.numpy.asarray(x)), dtype=np.float64)
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            total = tf.reduce_sum(fn(t))
        return np.asarray(tape.gradient(total, t), dtype=np.float64)
    if backend == "torch":
        import torch

        t = torch.as_tensor(x).requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(fn(t).sum(), t)
        return grad.detach().cpu().numpy().astype(np.float64)
    raise NotImplementedError(f"initscale.auto: no autodiff for the Keras backend {backend!r}")


def _as_numpy_activation(fn: Callable[[Any], Any], name: str) -> Any:
    """``fn`` (backend tensors -> tensors, elementwise) as a NumPy callable for the quadrature, in
    float64 (on JAX with ``jax.enable_x64`` for the call), with its derivative by autodiff."""

    def x64() -> Any:
        if keras.backend.backend() == "jax":
            import jax

            return jax.enable_x64(True)
        import contextlib

        return contextlib.nullcontext()

    def tensor(x: Any) -> Any:
        return keras.ops.convert_to_tensor(np.asarray(x, dtype=np.float64), dtype="float64")

    def f(x: Any) -> Any:
        with x64():
            return np.asarray(keras.ops.convert_to_numpy(fn(tensor(x))), dtype=np.float64)

    def df(x: Any) -> Any:
        with x64():
            return _backend_grad(fn, np.asarray(x, dtype=np.float64))

    f.__name__ = name
    f.derivative = df  # type: ignore[attr-defined]
    return f


def _elementwise(call: Callable[[Any], Any], x: Any) -> bool:
    """Whether ``call`` maps ``x`` elementwise: changing one value changes only that output."""
    value = np.asarray(keras.ops.convert_to_numpy(x))
    if value.size < 2 or "float" not in value.dtype.name:  # bfloat16 (ml_dtypes) is no np.floating
        return False
    y = np.asarray(keras.ops.convert_to_numpy(call(x)))
    if y.shape != value.shape:
        return False
    flat = value.reshape(-1)
    for i in (0, flat.size // 2):
        probe = flat.copy()
        probe[i] = probe[i] + 0.5 + abs(probe[i])
        z = np.asarray(keras.ops.convert_to_numpy(call(keras.ops.convert_to_tensor(probe.reshape(value.shape)))))
        changed = z.reshape(-1) != y.reshape(-1)
        changed[i] = False
        if bool(changed.any()):
            return False
    return True


def _call(model: Any, auto: Auto) -> Any:
    inputs = auto.example_inputs
    kwargs = dict(auto.example_kwargs or {})
    return model(inputs[0] if len(inputs) == 1 else list(inputs), training=False, **kwargs)


def _record(
    model: Any, auto: Auto, layers: dict[int, tuple[str, int, str]], keys: dict[int, str], names: dict[int, str]
) -> tuple[_Recorder, list[int]]:
    recorder = _Recorder()
    ops = _operations(model)
    patched: list[tuple[Any, str, Any]] = []

    def wrap(op: Any) -> None:
        fn = op.call
        layer = id(op) in layers
        norm = not layer and _is_norm(op)
        fused = getattr(op, "activation", None) if layer else None
        fused = (
            None
            if fused is None or fused is keras.activations.linear or getattr(fused, "__name__", "") == "linear"
            else fused
        )
        pre: dict[str, Any] = {}
        composite = isinstance(op, keras.layers.Layer) and bool(list(op._flatten_layers(include_self=False)))

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if recorder.depth:
                return fn(*args, **kwargs)
            flat = _flat((args, kwargs))
            tensors = [t for t in flat if _is_tensor(t)]
            inputs = [recorder.node(t) for t in tensors]
            scalars = [float(s) for s in flat if isinstance(s, (int, float)) and not isinstance(s, bool)]
            if layer or norm:
                recorder.depth += 1
            if composite:
                recorder.stack.append(type(op).__name__)
                if not type(op).__module__.startswith("keras."):
                    recorder.own_code[f"{getattr(op, 'path', None) or op.name} ({type(op).__name__})"] = None
            try:
                out = fn(*args, **kwargs)
            finally:
                if layer or norm:
                    recorder.depth -= 1
                if composite:
                    recorder.stack.pop()
            parent = recorder.stack[-1] if recorder.stack else ""
            outs = [t for t in _flat(out) if _is_tensor(t)]
            cls = type(op).__name__
            if layer:
                if fused is not None and "x" in pre:
                    mid = recorder.node(pre.pop("x"), fresh=True)
                    recorder.events.append(_Event("layer", keys[id(op)], cls, inputs, [mid], parent=parent))
                    act, label = _function_activation(fused)
                    recorder.events.append(
                        _Event(
                            "act",
                            keys[id(op)],
                            cls,
                            [mid],
                            [recorder.node(t, fresh=True) for t in outs],
                            activation=act,
                            label=label,
                        )
                    )
                else:
                    recorder.events.append(
                        _Event(
                            "layer",
                            keys[id(op)],
                            cls,
                            inputs,
                            [recorder.node(t, fresh=True) for t in outs],
                            parent=parent,
                        )
                    )
                return out
            if composite and outs and all(id(t) in recorder.nodes for t in outs):
                # its output is a recorded sublayer's (MultiHeadAttention's attention_output): that layer's
                # prediction stands; what happens between its recorded sublayers is measured, and named
                recorder.composites.append(f"{getattr(op, 'path', None) or op.name} ({cls})")
                return out
            event = _Event("op", op.name, cls, inputs, [recorder.node(t, fresh=True) for t in outs], scalars)
            if norm:
                event.category, event.scalars, event.scale_path = "norm", [_norm_scale(op)], _norm_scale_path(op, names)
            elif (named := _activation_layer(op)) is not None:
                event.category, event.activation, event.label = "act", named, named[0]
            elif cls == "Activation":
                event.category = "act"
                event.activation, event.label = _function_activation(op.activation)
            elif not isinstance(op, keras.layers.Layer) and (named := _activation_op(op)) is not None:
                event.category, event.activation, event.label = "act", named, named[0]
            elif (
                not (isinstance(op, keras.layers.Layer) and (composite or op.weights))
                and len(tensors) == 1
                and not scalars
                and not kwargs_tensors(kwargs)
                and cls not in _SHAPE_OPS
            ):
                recorder.depth += 1
                try:
                    elementwise = _elementwise(fn, tensors[0])
                except Exception:  # a layer that cannot run on its input alone is no activation
                    elementwise = False
                finally:
                    recorder.depth -= 1
                if elementwise:
                    event.category, event.label = "act", op.name
                    event.activation = _as_numpy_activation(fn, op.name)
            if cls in _CATS:
                axis = int(getattr(op, "axis", -1))
                event.sizes = [int(t.shape[axis]) for t in tensors]
            if cls == "Average":
                event.scalars = [float(len(tensors))]
            recorder.events.append(event)
            return out

        op.call = wrapped
        patched.append((op, "call", None))
        if fused is not None:

            def capture(x: Any, _fused: Any = fused) -> Any:
                if not recorder.depth or "x" in pre:
                    return _fused(x)
                pre["x"] = x
                return _fused(x)

            op.activation = capture
            patched.append((op, "activation", fused))

    try:
        for op in ops:
            wrap(op)
        out = _call(model, auto)
        outputs = [recorder.nodes[id(t)] for t in _flat(out) if id(t) in recorder.nodes]
    finally:
        for op, attr, original in reversed(patched):
            if attr == "activation":
                op.activation = original
            else:
                del op.call
    return recorder, outputs


def kwargs_tensors(kwargs: dict[str, Any]) -> bool:
    return any(_is_tensor(v) for v in _flat(kwargs))


def _function_activation(function: Any) -> tuple[Any, str]:
    named = _named(function)
    if named is not None:
        return named, named[0]
    name = getattr(function, "__name__", type(function).__name__)
    return _as_numpy_activation(function, name), name


def _op_propagation(event: _Event) -> str | None:
    """Which second-moment rule of :func:`initscale.autogain.propagate` a Keras op obeys."""
    if event.cls in _SHAPE_OPS:
        return "shape"
    if event.cls == "Average":
        return "average"
    for rule, names in (("sum", _SUMS), ("product", _PRODUCTS), ("quotient", _QUOTIENTS), ("cat", _CATS)):
        if event.cls in names:
            return rule
    return None


def _follower(recorder: _Recorder, node: int, outputs: set[int], start: int) -> tuple[Follower, Any, str]:
    """:func:`initscale.autogain.follow`, except that an output consumed only inside a composite
    layer's own (unrecorded) code says so."""
    follows = follow(recorder.events, node, outputs, start, _op_propagation, lambda e: e.cls)
    parent = recorder.events[start].parent
    if follows == ("linear", None, "unused") and parent:
        return "linear", None, f"{parent} (its own ops)"
    return follows


def _planned_layers(
    model: Any, names: dict[int, str]
) -> tuple[dict[int, tuple[str, int, str]], dict[int, Any], list[str]]:
    """The layers whose kernel ``reinit`` sets with fans (by the kernel's name in its report,
    ``names``: :func:`._keras_common.variable_names`), the layers by id, and the other weights it sets."""
    from initscale.adapters.keras import reinit

    report = reinit(model, presets.get("he_normal"), dry_run=True)
    rows = {row.name: row for row in report.touched if row.fan_in is not None}
    layers: dict[int, tuple[str, int, str]] = {}
    by_id: dict[int, Any] = {}
    used: set[str] = set()
    inside_recurrent = {
        id(sub)
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if _recurrent(layer)
        for sub in layer._flatten_layers(include_self=False, recursive=True)
    }
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if _recurrent(layer) or id(layer) in inside_recurrent:
            continue
        try:
            path = names.get(id(layer.kernel))
        except Exception:  # no kernel (or one that cannot be read): not a planned layer
            path = None
        if path in rows and path not in used:
            layers[id(layer)] = (path, int(cast(float, rows[path].fan_in)), type(layer).__name__)
            by_id[id(layer)] = layer
            used.add(path)
    return layers, by_id, [name for name in rows if name not in used]


def _keys(layers: dict[int, tuple[str, int, str]], by_id: dict[int, Any]) -> dict[int, str]:
    """A name per planned layer: its own where no other planned layer has it, else its kernel's path
    without ``/kernel`` (keras-hub's blocks each hold a ``query``, a ``feedforward_output_dense``, ...)."""
    count: dict[str, int] = {}
    for i in layers:
        count[by_id[i].name] = count.get(by_id[i].name, 0) + 1
    return {
        i: by_id[i].name if count[by_id[i].name] == 1 else weight.rsplit("/", 1)[0]
        for i, (weight, _, _) in layers.items()
    }


def plan(model: Any, auto: Auto) -> AutoPlan:
    """The predicted :class:`~initscale.autogain.AutoPlan` of a built Keras ``model`` (module docstring)."""
    return _plan(model, auto)[0]


def _plan(model: Any, auto: Auto) -> tuple[AutoPlan, dict[str, tuple[Follower, Any, float | None]], dict[str, Any]]:
    if not isinstance(model, keras.layers.Layer) or not model.built:
        raise TypeError(
            f"initscale.auto: the Keras model must be a built keras.layers.Layer or model. Received: "
            f"{type(model).__name__}."
        )
    from initscale.adapters._keras_common import variable_names
    from initscale.adapters.keras import _FW

    names = variable_names(_FW, model)
    layers, by_id, others = _planned_layers(model, names)
    keys = _keys(layers, by_id)
    recorder, outputs = _record(model, auto, layers, keys, names)
    by_name = {keys[i]: i for i in layers}
    output_set = set(outputs)
    walked = propagate(
        recorder.events,
        recorder.measured,
        {n: layers[i] for n, i in by_name.items()},
        outputs,
        auto.q,
        op_propagation=_op_propagation,
        op_label=lambda e: e.cls,
        ratio=lambda e, m, notes: _measured_ratio(recorder, e, m, notes),
        follower=lambda index, node: _follower(recorder, node, output_set, index),
        unused_note="{name}'s output goes to code the pass does not see (keras.ops called in a "
        "subclassed model's call): planned as linear; the next layer reads its input's "
        "measured mean square",
        residual=auto.residual,
        norm_weight=lambda e: e.scale_path,
    )
    notes, seen, decided = walked.notes, walked.seen, walked.decided
    kernels = {weight: by_id[by_name[name]] for weight, name in walked.planned_by.items()}
    if others:
        warnings.warn(
            f"initscale.auto: {len(others)} weight(s) are not one layer's main `kernel` and get no gain from "
            f"the graph (left to the other rules and defaults): {', '.join(others[:10])}"
            f"{' ...' if len(others) > 10 else ''}. Give them a rule.",
            UserWarning,
            stacklevel=4,
        )
    missing = [w for i, (w, _, _) in layers.items() if keys[i] not in seen]
    if missing:
        warnings.warn(
            f"initscale.auto: the example pass did not call {len(missing)} layer(s), which get no gain: "
            f"{', '.join(missing[:10])}. Pass example inputs that reach them, or give them a rule.",
            UserWarning,
            stacklevel=4,
        )
    notes += [
        f"{row.weight}: its layer's output goes to {row.activation.removesuffix(' (its own ops)')}'s own code "
        "(keras.ops in its call, which the pass does not see): planned as linear, so an activation applied "
        "there (a gated unit's SiLU, say) is not seen; give the layer a rule if one follows"
        for row in walked.rows
        if row.follower == "linear" and row.activation.endswith(" (its own ops)")
    ]
    notes += [
        f"layer {c}: the values between its recorded sublayers (attention scores, ...) are measured on the example pass"
        for c in recorder.composites
    ]
    if recorder.own_code and auto.residual != "none":
        shown = list(recorder.own_code)
        notes.append(
            f"residual={auto.residual!r} reaches only the sums the pass records: a residual sum inside the call of "
            f"{', '.join(shown[:5])}{' ...' if len(shown) > 5 else ''} (keras.ops in its own code, as keras-hub's "
            "transformer blocks add theirs) is not seen and keeps its branch as planned; scale that branch's last "
            "kernel with a rule if one is there"
        )
    planned = AutoPlan(
        tuple(walked.rows), auto.q, auto.distribution, tuple(dict.fromkeys(notes)), residuals=tuple(walked.residuals)
    )
    return planned, decided, kernels


def _measured_ratio(recorder: _Recorder, event: _Event, m_in: float, notes: list[str]) -> float:
    """An op without a rule: the predicted input times the ratio of mean squares measured on the pass (noted)."""
    measured_in = recorder.measured[event.inputs[0]] if event.inputs else 0.0
    measured_out = recorder.measured[event.outputs[0]] if event.outputs else 0.0
    if not event.inputs:
        return measured_out
    notes.append(f"op {event.name!r} ({event.cls}): ratio of mean squares measured on the example pass")
    if measured_in > 0.0 and m_in > 0.0:
        return m_in * measured_out / measured_in
    return measured_out


def apply(model: Any, auto: Auto, *, seed: Any = None, **reinit_kwargs: Any) -> AutoPlan:
    """Re-initialize a Keras ``model`` by ``auto``: ``reinit`` with the predicted plan's rules (every
    target checked before the first write), then, with ``arriving="measured"``, one pass over the
    example inputs in which each planned layer, before it runs, has its kernel multiplied (assign)
    by gain(measured m_in) / gain(predicted m_in), its predecessors already final (as
    ``initscale.torch.reinit_`` does). Returns the plan of what was used (``init``: the report)."""
    from initscale.adapters.keras import reinit

    predicted, decided, kernels = _plan(model, auto)
    report = reinit(model, predicted.rules(), seed, **reinit_kwargs)
    if auto.arriving == "predicted":
        return dataclasses.replace(predicted, arriving="predicted", init=report)
    by_weight = {row.weight: row for row in predicted.rows}
    final: dict[str, AutoRow] = {}
    patched = []

    def rescale(weight: str, layer: Any) -> None:
        fn = layer.call

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if weight not in final and args and _is_tensor(args[0]):
                row, (follower, act, act_param) = by_weight[weight], decided[weight]
                m_in = _mean_square(args[0])
                g = layer_gain(follower, act, m_in, auto.q, act_param)  # type: ignore[arg-type]
                if row.gain != 0.0:  # a kernel the residual rule zeroes stays zero; its factor is kept
                    layer.kernel.assign(layer.kernel * (g.gain / (row.gain / row.scale)))
                final[weight] = dataclasses.replace(
                    row, m_in=m_in, gain=row.scale * g.gain, chi=g.chi, verdict=g.verdict
                )
            return fn(*args, **kwargs)

        layer.call = wrapped
        patched.append(layer)

    for weight, layer in kernels.items():
        rescale(weight, layer)
    try:
        _call(model, auto)
    except Exception as err:
        raise RuntimeError(
            f"initscale.auto: the measuring pass failed after {len(final)} of {len(by_weight)} layers were rescaled "
            f"({', '.join(final) or 'none'}); those hold the measured gains, the others the predicted plan's. "
            f"Re-run, or use initscale.auto(..., arriving='predicted')."
        ) from err
    finally:
        for layer in patched:
            del layer.call
    rows = tuple(final.get(row.weight, row) for row in predicted.rows)
    measured = dataclasses.replace(predicted, rows=rows, arriving="measured")
    final_report = reinit(model, measured.rules(), dry_run=True, **reinit_kwargs)
    return dataclasses.replace(measured, init=dataclasses.replace(final_report, dry_run=False))
