"""``initscale.auto`` for torch: record the model's graph on one forward pass, then plan each weight.

The pass runs in eval mode under ``torch.no_grad()`` with a :class:`torch.overrides.TorchFunctionMode`
that sees every torch function and tensor method (``F.gelu``, ``x + y``, ``torch.cat``, ...), and
forward hooks on three kinds of module, whose insides are then not recorded:

- the layers whose main ``weight`` a one-spec ``reinit_`` sets (Linear, ConvNd, ConvTransposeNd,
  transformers' Conv1D, ...): the weights ``auto`` plans;
- normalization layers (torch's, any class named ``...Norm``): their output's second moment is
  the mean square of their scale;
- parameter-free modules that act elementwise on one tensor (``nn.GELU``, HF's
  ``NewGELUActivation``, any custom activation module): tested on the pass's own input by
  changing one value and checking that only that output changes; the module itself is then the
  activation, integrated by quadrature (named classes use the closed forms of
  :mod:`initscale.gains`).

See :mod:`initscale.autogain` for the rules (the residual rule included: ``residual=``; a norm's
scale is its ``weight`` parameter); this module only builds the graph and walks it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from initscale import presets
from initscale.autogain import Auto, AutoPlan, AutoRow, Follower, layer_gain, propagate

from . import _torch_reparam as _reparam

__all__ = ["apply_", "plan"]

# torch functions and modules with a closed form in initscale.gains: name -> (gains name, param reader)
_FUNCTIONS: dict[str, tuple[str, Callable[[Sequence[Any], dict[str, Any]], float | None]]] = {
    "relu": ("relu", lambda a, k: None),
    "relu_": ("relu", lambda a, k: None),
    "gelu": ("gelu", lambda a, k: None),
    "silu": ("silu", lambda a, k: None),
    "tanh": ("tanh", lambda a, k: None),
    "tanh_": ("tanh", lambda a, k: None),
    "sigmoid": ("sigmoid", lambda a, k: None),
    "selu": ("selu", lambda a, k: None),
    "mish": ("mish", lambda a, k: None),
    "softsign": ("softsign", lambda a, k: None),
    "leaky_relu": ("leaky_relu", lambda a, k: float(k.get("negative_slope", a[1] if len(a) > 1 else 0.01))),
    "elu": ("elu", lambda a, k: float(k.get("alpha", a[1] if len(a) > 1 else 1.0))),
    "celu": ("celu", lambda a, k: float(k.get("alpha", a[1] if len(a) > 1 else 1.0))),
    "softplus": ("softplus", lambda a, k: float(k.get("beta", a[1] if len(a) > 1 else 1.0))),
}
_MODULES = {
    "ReLU": "relu",
    "GELU": "gelu",
    "SiLU": "silu",
    "Tanh": "tanh",
    "Sigmoid": "sigmoid",
    "SELU": "selu",
    "Mish": "mish",
    "Softsign": "softsign",
    "LeakyReLU": "leaky_relu",
    "ELU": "elu",
    "CELU": "celu",
    "Softplus": "softplus",
    # transformers.activations (5.24): the same functions under HF's class names
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu_tanh",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "SiLUActivation": "silu",
    "MishActivation": "mish",
}
_IDENTITY_IN_EVAL = (
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "AlphaDropout",
    "FeatureAlphaDropout",
    "Identity",
    "DropPath",
)
_SHAPE_OPS = {
    "view",
    "reshape",
    "permute",
    "transpose",
    "flatten",
    "contiguous",
    "__getitem__",
    "unsqueeze",
    "squeeze",
    "expand",
    "chunk",
    "split",
    "unbind",
    "dropout",
    "to",
    "float",
    "type_as",
    "clone",
    "detach",
    "t",
    "movedim",
    "narrow",
    "unflatten",
    "repeat_interleave",
    "half",
    "bfloat16",
    "double",
    "flip",
    "neg",
    "__neg__",
    "roll",
}
_SUMS = {"add", "__add__", "__radd__", "add_", "__iadd__", "sub", "__sub__", "__rsub__", "sub_", "__isub__"}
_PRODUCTS = {"mul", "__mul__", "__rmul__", "mul_", "__imul__"}
_QUOTIENTS = {"div", "__truediv__", "div_", "__itruediv__"}
_CATS = {"cat", "concat", "concatenate", "stack"}
_GATHERS = {"embedding", "index_select", "gather", "take"}  # rows of their first float input, the table


@dataclass
class _Event:
    category: str  # "layer", "norm", "act", "op"
    name: str  # function name, or module name
    inputs: list[int]  # node ids of tensor inputs
    outputs: list[int]
    scalars: list[float] = field(default_factory=list)
    activation: Any = None  # (gains name, param) or a callable
    label: str = ""
    sizes: list[int] = field(default_factory=list)  # for concatenations: each input's size along the axis


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[int, int] = {}  # id(tensor) -> node
        self.measured: list[float] = []  # node -> mean square measured on this pass
        self.data: list[bool] = []  # node -> derived from the example inputs (else parameters and constants)
        self.keep: list[torch.Tensor] = []  # keeps every recorded tensor alive (ids stay unique)
        self.events: list[_Event] = []
        self.depth = 0
        self.pending: list[tuple[str, str, list[int]]]  # set per pass (enter's hooks)

    def node(self, tensor: torch.Tensor, fresh: bool = False, data: bool = False) -> int:
        if not fresh and id(tensor) in self.nodes:
            return self.nodes[id(tensor)]
        self.keep.append(tensor)
        self.nodes[id(tensor)] = len(self.measured)
        self.data.append(data)
        self.depth += 1  # the measurement's own ops are not the model's
        try:
            value = tensor.detach()
            self.measured.append(_mean_square(value) if value.numel() else 0.0)
        finally:
            self.depth -= 1
        return self.nodes[id(tensor)]

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0:
            self._record(func, args, kwargs, out)
        return out

    def _record(self, func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> None:
        outs = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor)]
        if not outs:
            return
        name = getattr(func, "__name__", str(func))
        flat: list[Any] = []
        sizes: list[int] = []
        for a in args:
            if isinstance(a, (tuple, list)):
                flat.extend(a)
                if name in _CATS:
                    dim = kwargs.get("dim", args[1] if len(args) > 1 and isinstance(args[1], int) else 0)
                    sizes = [_size(t, dim) for t in a if isinstance(t, torch.Tensor)]
            else:
                flat.append(a)
        tensors = [t for t in flat if isinstance(t, torch.Tensor) and t.is_floating_point()]
        scalars = [float(s) for s in flat if isinstance(s, (int, float)) and not isinstance(s, bool)]
        inputs = [self.node(t) for t in tensors]
        data = any(self.data[self.nodes[id(t)]] for t in flat if isinstance(t, torch.Tensor) and id(t) in self.nodes)
        outputs = [self.node(t, fresh=True, data=data) for t in outs]
        event = _Event("op", name, inputs, outputs, scalars, sizes=sizes)
        if name in _FUNCTIONS and tensors:
            gname, read = _FUNCTIONS[name]
            event.category, event.activation, event.label = "act", (gname, read(args, kwargs)), gname
        self.events.append(event)


def _mean_square(tensor: torch.Tensor) -> float:
    """The mean square in float64, as ``tensor.double().square().mean()`` (the same values), squaring
    in place in one float64 copy instead of two."""
    return float(tensor.detach().to(torch.float64, copy=True).square_().mean())


def _size(tensor: torch.Tensor, dim: int) -> int:
    """The tensor's size along ``dim`` in a concatenation (an empty 1-D tensor, which torch.cat skips: 0)."""
    if tensor.numel() == 0:
        return 0
    return int(tensor.shape[dim]) if tensor.dim() else 1


def _elementwise(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` maps ``x`` elementwise: changing one value changes only that output."""
    if x.numel() < 2 or not x.is_floating_point():
        return False
    y = module(x)
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        return False
    flat = x.reshape(-1)
    for i in (0, flat.numel() // 2):
        probe = flat.clone()
        probe[i] = probe[i] + 0.5 + probe[i].abs()
        z = module(probe.reshape(x.shape)).reshape(-1)
        changed = z != y.reshape(-1)
        changed[i] = False
        if bool(changed.any()):
            return False
    return True


def _module_activation(module: torch.nn.Module) -> tuple[Any, str]:
    """(gains name, param) for a named activation class, else the module itself as a NumPy callable
    (evaluated in eval mode, in float64) with its exact derivative by autograd."""
    name = type(module).__name__
    if name in _MODULES:
        param = getattr(module, "negative_slope", getattr(module, "alpha", getattr(module, "beta", None)))
        approximate = getattr(module, "approximate", "none")
        gname = "gelu_tanh" if name == "GELU" and approximate == "tanh" else _MODULES[name]
        return (gname, None if param is None else float(param)), gname

    def run(x: Any, grad: bool) -> Any:
        was = module.training
        module.eval()
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64)).requires_grad_(grad)
            with torch.enable_grad() if grad else torch.no_grad():
                y = module(t)
                if not grad:
                    return y.numpy()
                (dy,) = torch.autograd.grad(y.sum(), t)
                return dy.numpy()
        finally:
            module.train(was)

    def f(x: Any) -> Any:
        return run(x, False)

    def df(x: Any) -> Any:
        return run(x, True)

    f.__name__ = name
    f.derivative = df  # type: ignore[attr-defined]
    return f, name


def _is_norm(module: torch.nn.Module) -> bool:
    norms = (
        torch.nn.LayerNorm,
        torch.nn.GroupNorm,
        torch.nn.modules.batchnorm._NormBase,
        getattr(torch.nn, "RMSNorm", torch.nn.LayerNorm),
    )
    return isinstance(module, norms) or type(module).__name__.endswith("Norm")


def _record(model: torch.nn.Module, auto: Auto, layers: dict[str, tuple[str, int, str]]) -> tuple[_Recorder, list[int]]:
    recorder = _Recorder()
    handles = []
    by_module = dict(model.named_modules())

    def enter(name: str, category: str) -> Any:
        def pre(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if recorder.depth == 0:
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                recorder.pending.append((name, category, [recorder.node(t) for t in tensors]))
            recorder.depth += 1

        return pre

    def leave(name: str, category: str) -> Any:
        def post(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            recorder.depth -= 1
            if recorder.depth == 0:
                _, _, inputs = recorder.pending.pop()
                outs = [
                    t
                    for t in (output if isinstance(output, (tuple, list)) else (output,))
                    if isinstance(t, torch.Tensor)
                ]
                data = any(recorder.data[i] for i in inputs)
                event = _Event(category, name, inputs, [recorder.node(t, fresh=True, data=data) for t in outs])
                if category == "norm":
                    weight = getattr(module, "weight", None)
                    event.scalars = [
                        _mean_square(weight) if isinstance(weight, torch.Tensor) and weight.numel() else 1.0
                    ]
                if category == "act":
                    event.activation, event.label = _module_activation(module)
                recorder.events.append(event)

        return post

    recorder.pending = []  # type: ignore[attr-defined]
    decided: dict[str, bool] = {}  # leaf module -> acts elementwise (tested on its first call)
    calls: list[bool] = []  # per call in progress of a leaf module: whether it was entered as an activation
    probing = {"on": False}

    def is_activation(name: str, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if name not in decided:
            ok = False
            one_tensor = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            named = one_tensor and type(module).__name__ in _MODULES
            if named and args[0].is_floating_point() and args[0].numel() >= 2:
                ok = True  # a named elementwise activation (closed form in initscale.gains): no probe needed
            elif one_tensor:
                probing["on"] = True
                recorder.depth += 1  # the probe's own calls are not the model's
                try:
                    ok = _elementwise(module, args[0])
                except Exception:  # a module that cannot run on its input alone is no activation
                    ok = False
                finally:
                    recorder.depth -= 1
                    probing["on"] = False
            decided[name] = ok
        return decided[name]

    def leaf_pre(name: str) -> Any:
        enter_act = enter(name, "act")

        def pre(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if probing["on"]:
                return
            entered = recorder.depth == 0 and is_activation(name, module, args, kwargs)
            calls.append(entered)
            if entered:
                enter_act(module, args)

        return pre

    def leaf_post(name: str) -> Any:
        leave_act = leave(name, "act")

        def post(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if probing["on"]:
                return
            if calls.pop():
                leave_act(module, args, output)

        return post

    for name, module in by_module.items():
        if name in layers:
            handles += [
                module.register_forward_pre_hook(enter(name, "layer")),
                module.register_forward_hook(leave(name, "layer")),
            ]
        elif _is_norm(module) and name:
            handles += [
                module.register_forward_pre_hook(enter(name, "norm")),
                module.register_forward_hook(leave(name, "norm")),
            ]
        elif (
            name
            and type(module).__name__ not in _IDENTITY_IN_EVAL
            and not any(True for _ in module.parameters())
            and not any(True for _ in module.children())
        ):  # a parameter-free leaf: an activation if elementwise
            handles += [
                module.register_forward_pre_hook(leaf_pre(name), with_kwargs=True),
                module.register_forward_hook(leaf_post(name)),
            ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recorder:  # one pass: the graph, and which leaf modules act elementwise
            for t in [*auto.example_inputs, *dict(auto.example_kwargs or {}).values()]:  # the data
                if isinstance(t, torch.Tensor):
                    recorder.node(t, data=True)
            out = model(*auto.example_inputs, **dict(auto.example_kwargs or {}))
            outputs = _output_nodes(recorder, out)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return recorder, outputs


def _output_nodes(recorder: _Recorder, out: Any) -> list[int]:
    found: list[int] = []

    def visit(x: Any) -> None:
        if isinstance(x, torch.Tensor) and id(x) in recorder.nodes:
            found.append(recorder.nodes[id(x)])
        elif isinstance(x, (tuple, list)):
            for v in x:
                visit(v)
        elif isinstance(x, dict) or hasattr(x, "values"):
            try:
                for v in x.values():
                    visit(v)
            except Exception:  # an output object without values(): nothing to follow
                pass

    visit(out)
    return found


def _op_propagation(event: _Event) -> str | None:
    """Which second-moment rule of :func:`initscale.autogain.propagate` a torch function obeys."""
    name = event.name
    if name in _SHAPE_OPS or name in _GATHERS:
        return "shape"
    for rule, names in (("sum", _SUMS), ("product", _PRODUCTS), ("quotient", _QUOTIENTS), ("cat", _CATS)):
        if name in names:
            return rule
    return None


def plan(model: torch.nn.Module, auto: Auto) -> AutoPlan:
    """The predicted :class:`~initscale.autogain.AutoPlan` of ``model`` under ``auto`` (module docstring)."""
    return _plan(model, auto)[0]


def _plan(model: torch.nn.Module, auto: Auto) -> tuple[AutoPlan, dict[str, tuple[Follower, Any, float | None]]]:
    from initscale.adapters.torch import reinit_

    report = reinit_(model, presets.get("he_normal"), dry_run=True)
    layers: dict[str, tuple[str, int, str]] = {}
    others: list[str] = []
    normed = _weight_normed(model)
    for row in report.touched:
        if row.fan_in is None:
            continue
        module, _, leaf = row.name.rpartition(".")
        if row.name in normed:  # a weight-normed layer's v: the layer's weight (w = v as drawn)
            module, leaf = normed[row.name].layer, normed[row.name].leaf
        if leaf == "weight" and module not in layers:
            layers[module] = (row.name, int(row.fan_in), row.layer)
        else:
            others.append(row.name)
    recorder, outputs = _record(model, auto, layers)
    walked = propagate(
        recorder.events,
        recorder.measured,
        layers,
        outputs,
        auto.q,
        op_propagation=_op_propagation,
        op_label=lambda e: e.name,
        ratio=lambda e, m, notes: _measured_ratio(recorder, e, m, notes),
        residual=auto.residual,
        norm_weight=lambda e: _norm_weight(model, e.name),
    )
    notes, seen = walked.notes, walked.seen
    if others:
        warnings.warn(
            f"initscale.auto: {len(others)} weight(s) are not one layer's main `weight` and get no gain from "
            f"the graph (left to the other rules and defaults): {', '.join(others[:10])}"
            f"{' ...' if len(others) > 10 else ''}. Give them a rule.",
            UserWarning,
            stacklevel=4,
        )
    missing = [w for name, (w, _, _) in layers.items() if name not in seen]
    if missing:
        warnings.warn(
            f"initscale.auto: the example pass did not call {len(missing)} layer(s), which get no gain: "
            f"{', '.join(missing[:10])}. Pass example inputs that reach them, or give them a rule.",
            UserWarning,
            stacklevel=4,
        )
    plan = AutoPlan(
        tuple(walked.rows), auto.q, auto.distribution, tuple(dict.fromkeys(notes)), residuals=tuple(walked.residuals)
    )
    return plan, walked.decided


def _weight_normed(model: torch.nn.Module) -> dict[str, _reparam.Reparam]:
    """Weight norm's v by name (:mod:`._torch_reparam`): drawn as its layer's weight, which is then
    rescaled through g (w = g · v / ‖v‖). Spectral norm is left out: its layer divides out a scale."""
    return {r.drawn: r for r in _reparam.find(list(model.named_modules())) if r.method == "weight_norm" and r.drawn}


def _norm_weight(model: torch.nn.Module, name: str) -> str | None:
    """The name of a norm module's scale parameter (its ``weight``), or None where it has none."""
    weight = getattr(model.get_submodule(name), "weight", None)
    return f"{name}.weight" if isinstance(weight, torch.nn.Parameter) and weight.numel() else None


class _AllMeasured(Exception):
    """Raised by the measuring pass's last pre-hook: the pass stops there (nothing after it is measured)."""


def apply_(
    model: torch.nn.Module, auto: Auto, *, generator: torch.Generator | None = None, **reinit_kwargs: Any
) -> AutoPlan:
    """Re-initialize ``model`` by ``auto``: ``reinit_`` with the predicted plan's rules (every target
    checked before the first write), then, with ``arriving="measured"``, one pass over the example
    inputs in which each planned layer, before it runs, has its weight multiplied by
    gain(measured m_in) / gain(predicted m_in): the gain for the mean square that actually arrives,
    its predecessors already final (the pass stops once the last planned layer is rescaled). A
    variance-scaling draw times a constant is the same family
    at the new scale, so the result is the draw the measured plan would have made.

    Returns the plan whose rows hold what was used (``init``: the reinit report)."""
    from initscale.adapters.torch import reinit_

    predicted, decided = _plan(model, auto)
    report = reinit_(model, predicted.rules(), generator=generator, **reinit_kwargs)
    if auto.arriving == "predicted":
        return dataclasses.replace(predicted, init=report)
    by_weight = {row.weight: row for row in predicted.rows}
    modules = dict(model.named_modules())
    final: dict[str, AutoRow] = {}
    handles = []

    normed = _weight_normed(model)

    def layer_of(weight: str) -> str:
        return normed[weight].layer if weight in normed else weight.rpartition(".")[0]

    def rescale(weight: str) -> Any:
        module_name = layer_of(weight)
        # weight norm (w = g · v / ‖v‖): v and g both times the factor, so w is, and g stays ‖v‖
        params = [model.get_parameter(weight)] if weight in normed else [modules[module_name].get_parameter("weight")]
        params += [model.get_parameter(normed[weight].magnitude or "")] if weight in normed else []

        def pre(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            if weight in final or not args or not isinstance(args[0], torch.Tensor):
                return
            row, (follower, fn, act_param) = by_weight[weight], decided[weight]
            m_in = _mean_square(args[0])
            g = layer_gain(follower, fn, m_in, auto.q, act_param)
            if row.gain != 0.0:  # a weight the residual rule zeroes stays zero
                for param in params:
                    param.mul_(g.gain / (row.gain / row.scale))
            final[weight] = dataclasses.replace(row, m_in=m_in, gain=row.scale * g.gain, chi=g.chi, verdict=g.verdict)
            if len(final) == len(by_weight):
                raise _AllMeasured  # every planned layer is final: the rest of the pass measures nothing

        return pre

    for weight in by_weight:
        handles.append(modules[layer_of(weight)].register_forward_pre_hook(rescale(weight)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*auto.example_inputs, **dict(auto.example_kwargs or {}))
    except _AllMeasured:
        pass
    except Exception as err:
        raise RuntimeError(
            f"initscale.auto: the measuring pass failed after {len(final)} of {len(by_weight)} layers were rescaled "
            f"({', '.join(final) or 'none'}); those hold the measured gains, the others the predicted plan's. "
            f"Re-run, or use initscale.auto(..., arriving='predicted')."
        ) from err
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    rows = tuple(final.get(row.weight, row) for row in predicted.rows)
    measured = dataclasses.replace(predicted, rows=rows, arriving="measured")
    # the report of what the weights now hold: the measured plan's rules, planned without writing
    final_report = reinit_(model, measured.rules(), dry_run=True, **reinit_kwargs)
    return dataclasses.replace(measured, init=dataclasses.replace(final_report, dry_run=False))


def _measured_ratio(recorder: _Recorder, event: _Event, m_in: float, notes: list[str]) -> float:
    """An op without a rule: the predicted input times the ratio of mean squares measured on the
    pass (noted when the op is on the data's path; parameters and constants are simply measured)."""
    measured_in = recorder.measured[event.inputs[0]] if event.inputs else 0.0
    measured_out = recorder.measured[event.outputs[0]] if event.outputs else 0.0
    if not any(recorder.data[i] for i in event.inputs):
        return measured_out
    notes.append(f"op {event.name!r}: ratio of mean squares measured on the example pass")
    if measured_in > 0.0 and m_in > 0.0:
        return m_in * measured_out / measured_in
    return measured_out
