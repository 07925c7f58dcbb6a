"""Signal propagation through a deep network at initialization: forward and backward variances.

For each spec, a network of ``depth`` layers of ``width`` units (an MLP, or a CNN of 3×3
convolutions with ``width`` channels on 8×8 images, "same" padding) is initialized with the spec,
a batch of unit-variance inputs is passed forward and a unit-variance gradient backward, and the
variance of each layer's pre-activations (forward) and of the gradient at each layer's input
(backward) is recorded. Biases are zero. The backward pass multiplies by each activation's analytic
derivative (:data:`initscale.gains.DERIVATIVES`), exact at every signal scale. The textbook results
(He et al. 2015; Glorot & Bengio 2010) follow: ReLU with He keeps both flat; ReLU with Glorot
(fan_in = fan_out) halves them at every layer; tanh with too small a scale vanishes.

Example:
    >>> from initscale import presets
    >>> from initscale.propagate import propagate
    >>> run = propagate(presets.get("he_normal"), "relu", depth=30, width=256, seed=0)
    >>> round(run.forward_growth(), 1), round(run.backward_growth(), 1)   # per layer: flat
    (1.0, 1.0)
    >>> run = propagate(presets.get("glorot_normal"), "relu", depth=30, width=256, seed=0)
    >>> round(run.forward_growth(), 1), round(run.backward_growth(), 1)   # halves at every layer
    (0.5, 2.0)

An activation may also be any numpy-vectorized callable; give its derivative with ``derivative=``.
Without one, f' is estimated by central differences with a step relative to each value,
h = ε^(1/3)·|x| (ε the float64 machine epsilon), so the step shrinks with the signal (a fixed step
larger than the signal is what reads ReLU's derivative as 0.5 once the signal falls below it): the
estimate is exact to rounding for piecewise-linear activations at every scale, and for smooth ones
has a relative error about ε^(2/3)·|f(x)/(x·f'(x))|. A warning says so, and the run's
``derivative`` field records which was used.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from . import _registry, _validate, gains
from .explain import json_safe
from .specs import Spec

__all__ = ["Propagation", "propagate", "propagate_model"]

Array = NDArray[np.float64]
_ANALYTIC = "analytic"
_RELATIVE_DIFFERENCE = "central difference, step eps^(1/3)*|x|"


@dataclass(frozen=True)
class Propagation:
    """Per-layer variances for one spec: forward (pre-activations) and backward (input gradients)."""

    spec: str
    activation: str
    arch: str
    depth: int
    width: int
    forward_variance: list[float] = field(default_factory=list)
    backward_variance: list[float] = field(default_factory=list)
    derivative: str = _ANALYTIC  # how f' was computed: "analytic" or the relative central difference
    predicted_forward: list[float] = field(default_factory=list)  # the variance map's prediction, per layer
    layers: list[str] = field(default_factory=list)  # layer names (a model's); empty for the built-in nets

    def forward_growth(self) -> float:
        """Per-layer factor of the forward variance: exp of the least-squares slope of its log over
        the layers after the first (whose input is the raw, not the activated, signal)."""
        return _growth(self.forward_variance[1:])

    def backward_growth(self) -> float:
        """Per-layer factor of the backward variance, from the input towards the output (so a
        gradient that shrinks on its way back to the input has a factor above 1)."""
        return _growth(self.backward_variance[:-1])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (an overflowed variance is the string ``"inf"``, as in ``Spec.to_dict``)."""
        safe: dict[str, Any] = json_safe(
            {
                "spec": self.spec,
                "activation": self.activation,
                "arch": self.arch,
                "depth": self.depth,
                "width": self.width,
                "forward_variance": self.forward_variance,
                "backward_variance": self.backward_variance,
                "derivative": self.derivative,
                "predicted_forward": self.predicted_forward,
                "layers": self.layers,
            }
        )
        return safe


def _growth(values: list[float]) -> float:
    logs = np.log(np.maximum(np.asarray(values, dtype=np.float64), 1e-300))
    if logs.size < 2:
        return 1.0
    slope = np.polyfit(np.arange(logs.size, dtype=np.float64), logs, 1)[0]
    return float(np.exp(slope))


Activation = Callable[[Array], Array]


def _activation(name: str, param: float | None) -> tuple[Activation, Activation]:
    """The named activation and its analytic derivative, with ``param`` (or its default) bound."""
    if name not in gains.ACTIVATIONS:
        raise ValueError(
            f"Argument `activation` must be one of {', '.join(sorted(gains.ACTIVATIONS))}. "
            f"Received: activation={name!r}."
        )
    f, default = gains.ACTIVATIONS[name]
    df = gains.DERIVATIVES[name]
    p = default if param is None else param
    q = p if p is not None else 0.0
    return (lambda x: f(x, q)), (lambda x: df(x, q))


def _sampler(backend: str) -> Callable[[Spec, tuple[int, ...], str, int], Array]:
    """``draw(spec, shape, layout, seed)`` in float64, ``shape`` and ``layout`` (*kernel, in, out),
    by an adapter of the registry (:mod:`initscale._registry`) that serves propagation."""
    valid = _registry.serving("propagate")
    if backend not in valid:
        raise ValueError(
            f"Argument `backend` must be one of {', '.join(map(repr, sorted(valid)))}. Received: backend={backend!r}."
        )
    if _registry.get(backend).family == "torch":

        def draw_torch(spec: Spec, shape: tuple[int, ...], layout: str, seed: int) -> Array:
            # torch stores (out, in, *kernel): draw in that form and move the axes to (*kernel, in, out)
            tshape = (shape[-1], shape[-2], *shape[:-2])
            t = _registry.draw(backend, spec, tshape, "torch", seed, "float64")
            return np.asarray(np.moveaxis(t, (0, 1), (-1, -2)))

        return draw_torch
    # numpy in float64; jax in its default float32 (x64 off), as float64
    dtype = "float64" if backend == "numpy" else None
    return lambda spec, shape, layout, seed: np.asarray(
        _registry.draw(backend, spec, shape, layout, seed, dtype), dtype=np.float64
    )


def _conv(x: Array, w: Array) -> Array:
    """'same' 3×3 convolution, NHWC input, (3, 3, in, out) kernel."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # N,H,W,C,3,3
    out: Array = np.einsum("nhwcij,ijco->nhwo", windows, w, optimize=True)
    return out


def _conv_backward(g: Array, w: Array) -> Array:
    """Gradient of :func:`_conv` with respect to its input: a 'same' convolution with the kernel
    flipped in space and transposed in channels."""
    return _conv(g, np.flip(w, (0, 1)).transpose(0, 1, 3, 2))


def _predicted(
    spec: Spec | str, fan_in: int, f: Activation, df: Activation, depth: int, name: str, param: float | None
) -> list[float]:
    """The variance map's prediction of each layer's pre-activation variance, from a unit input:
    v_l = Var(w)·fan_in·m_l and m_{l+1} = E[f(√v_l·Z)²] (quadrature); for "auto", a² at every layer
    (the pre-activation std a with E[f(aZ)²] = q* = the fixed point, see :func:`initscale.gains.fixed_point`)."""
    from .autogain import activation_moment

    act: Any = name if name in gains.ACTIVATIONS else f
    if callable(act):
        act.derivative = df  # type: ignore[union-attr]
    if isinstance(spec, str):
        fp = gains.fixed_point(
            act, 1.0, param if isinstance(act, str) else None, derivative=None if isinstance(act, str) else df
        )
        return [fp.gain * fp.gain * fp.q_star] * depth
    from .fans import Fans

    per = spec.variance(Fans(fan_in, fan_in)) * fan_in
    out, m = [], 1.0
    for _ in range(depth):
        v = per * m
        out.append(v)
        m = activation_moment(act, v, param if isinstance(act, str) else None) if v > 0 and v < 1e300 else v
    return out


def propagate(
    spec: Spec | str,
    activation: str | Activation = "relu",
    *,
    depth: int = 50,
    width: int = 512,
    arch: str = "mlp",
    batch: int = 256,
    param: float | None = None,
    backend: str = "numpy",
    seed: int = 0,
    label: str | None = None,
    derivative: Activation | None = None,
) -> Propagation:
    """Forward and backward variances per layer for a deep ``arch`` ("mlp" or "cnn") initialized
    with ``spec``. Weights are drawn by ``backend``'s adapter (numpy, torch or jax).

    ``spec`` may be ``"auto"``: each layer's weights then have std a/√(m·fan_in), with a the
    pre-activation std of the activation's fixed point (E[f(aZ)²] = q*, q = 1) and m the second
    moment that actually arrives at the layer (measured on the batch, the layers before it
    drawn): :func:`initscale.auto`'s measured mode on this net (NumPy draws). Every run also carries
    ``predicted_forward``, the variance map's prediction per layer.

    ``activation`` is a name of :data:`initscale.gains.ACTIVATIONS` (its analytic derivative is
    used) or a numpy-vectorized callable, whose derivative is ``derivative`` if given, else the
    relative central difference of the module docstring (with a warning). ``depth``, ``width`` and
    ``batch`` must be >= 1."""
    if isinstance(spec, str) and spec != "auto":
        raise ValueError(f"Argument `spec` must be an initscale spec or 'auto'. Received: spec={spec!r}.")
    if arch not in ("mlp", "cnn"):
        raise ValueError(f"Argument `arch` must be one of 'cnn', 'mlp'. Received: arch={arch!r}.")
    depth = _validate.integer("depth", depth, minimum=1)
    width = _validate.integer("width", width, minimum=1)
    batch = _validate.integer("batch", batch, minimum=1)
    how = _ANALYTIC
    if callable(activation):
        if param is not None:
            raise ValueError("A callable activation takes no `param`; close over it instead.")
        f = activation
        if derivative is None:
            how = _RELATIVE_DIFFERENCE
            df = gains._central_difference(f)
            warnings.warn(
                f"propagate: activation {getattr(f, '__name__', 'callable')!r} came without "
                f"`derivative`; f' is estimated by central differences with a step relative to each "
                f"value (h = eps^(1/3)*|x|). Pass derivative= for the exact backward pass.",
                stacklevel=2,
            )
        else:
            df = derivative
        name = getattr(f, "__name__", "callable")
    else:
        if derivative is not None:
            raise ValueError(
                f"Argument `derivative` is for a callable activation; {activation!r} has its analytic "
                f"derivative in initscale.gains.DERIVATIVES. Received: derivative={derivative!r}."
            )
        f, df = _activation(activation, param)
        name = activation
    draw = _sampler(backend)
    rng = np.random.default_rng(seed)
    shape: tuple[int, ...]
    if arch == "mlp":
        shape, layout = (width, width), "keras.dense"
        x = rng.standard_normal((batch, width))
    else:
        shape, layout = (3, 3, width, width), "keras.conv"
        x = rng.standard_normal((max(batch // 16, 2), 8, 8, width))
    # one independent stream per layer (so runs with nearby seeds share no weights)
    streams = np.random.SeedSequence(seed).generate_state(depth, np.uint32)
    fan_in = width if arch == "mlp" else 9 * width
    auto = isinstance(spec, str)
    predicted = _predicted(spec, fan_in, f, df, depth, name if isinstance(name, str) else "", param)
    weights: list[Array] = [] if auto else [draw(cast(Spec, spec), shape, layout, int(s) & 0x7FFFFFFF) for s in streams]
    pre: list[Array] = []
    forward: list[float] = []
    for layer in range(depth):
        if auto:  # the std for the second moment that arrives here (measured mode)
            m_in = float(np.mean(np.square(x)))
            z = np.random.default_rng(int(streams[layer]) & 0x7FFFFFFF).standard_normal(shape)
            weights.append(z * (np.sqrt(predicted[layer] / m_in) / np.sqrt(fan_in)))
        w = weights[layer]
        h = x @ w if arch == "mlp" else _conv(x, w)
        pre.append(h)
        forward.append(float(np.var(h)))
        x = f(h)
    g = rng.standard_normal(x.shape)
    backward: list[float] = [0.0] * depth
    for i in range(depth - 1, -1, -1):
        h = pre[i]
        g = g * df(h)
        g = g @ weights[i].T if arch == "mlp" else _conv_backward(g, weights[i])
        backward[i] = float(np.var(g))
    return Propagation(
        label or (cast(str, spec) if auto else repr(spec)), name, arch, depth, width, forward, backward, how, predicted
    )


def propagate_model(
    factory: Callable[[], Any], spec: Spec | str, *, seed: int = 0, label: str | None = None
) -> Propagation:
    """Forward and backward variances per layer of a user's torch model initialized with ``spec``
    (or ``"auto"``: :func:`initscale.auto` on the model's own graph).

    ``factory()`` returns ``(model, example_inputs)`` (a fresh model each call; the inputs a tensor
    or a tuple). The model is re-initialized with ``reinit_`` (seeded), run on the inputs, and a
    unit-variance gradient is sent back from its (first) output: for every layer whose weight the
    spec sets, in the order the forward pass calls them, the variance of its output (forward) and
    of the gradient at its input (backward). For ``"auto"``, ``predicted_forward`` is the plan's
    predicted pre-activation variance of each layer (gain²·m_in).

    Example:
        >>> import torch
        >>> from initscale.propagate import propagate_model
        >>> def net():
        ...     return (torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)),
        ...             torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
        >>> run = propagate_model(net, "auto")
        >>> run.layers, len(run.forward_variance), len(run.predicted_forward)
        (['0', '2'], 2, 2)
    """
    import torch

    from . import autogain
    from .adapters.torch import reinit_

    if isinstance(spec, str) and spec != "auto":
        raise ValueError(f"Argument `spec` must be an initscale spec or 'auto'. Received: spec={spec!r}.")
    built = factory()
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], torch.nn.Module)):
        raise TypeError(
            "The model factory must return (model, example_inputs): a torch.nn.Module and the inputs "
            f"of one forward pass. Received: {type(built).__name__}."
        )
    model, inputs = built
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    rules: Any = autogain.auto(inputs) if spec == "auto" else spec
    predicted_plan = autogain.auto(inputs, arriving="predicted").plan(model) if spec == "auto" else None
    report = reinit_(model, rules, generator=torch.Generator().manual_seed(seed))
    weights = {
        row.name.rpartition(".")[0] for row in report.touched if row.layout is not None and row.name.endswith("weight")
    }
    order: list[str] = []
    forward: dict[str, float] = {}
    backward: dict[str, float] = {}
    handles = []

    def hooks(name: str, module: torch.nn.Module) -> None:
        def fwd(_m: torch.nn.Module, _i: Any, out: Any) -> None:
            if name not in forward and isinstance(out, torch.Tensor):
                order.append(name)
                forward[name] = float(out.detach().double().var())

        def bwd(_m: torch.nn.Module, grad_input: Any, _grad_output: Any) -> None:
            g = grad_input[0] if grad_input else None
            if name not in backward and isinstance(g, torch.Tensor):
                backward[name] = float(g.detach().double().var())

        handles.extend([module.register_forward_hook(fwd), module.register_full_backward_hook(bwd)])

    for name, module in model.named_modules():
        if name in weights:
            hooks(name, module)
    try:
        leaves = [
            t.detach().requires_grad_(t.is_floating_point()) if isinstance(t, torch.Tensor) else t for t in inputs
        ]
        out = model(*leaves)
        first = (
            out
            if isinstance(out, torch.Tensor)
            else next(v for v in (out.values() if hasattr(out, "values") else out) if isinstance(v, torch.Tensor))
        )
        grad = torch.randn(first.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=first.dtype)
        first.backward(grad)  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
    finally:
        for handle in handles:
            handle.remove()
    predicted = []
    if predicted_plan is not None:
        by_module = {row.weight.rpartition(".")[0]: row for row in predicted_plan.rows}
        predicted = [by_module[n].gain ** 2 * by_module[n].m_in if n in by_module else float("nan") for n in order]
    width = max((int(report[f"{n}.weight"].fan_in or 0) for n in order), default=0)
    return Propagation(
        label or (spec if isinstance(spec, str) else repr(spec)),
        "model",
        "model",
        len(order),
        width,
        [forward[n] for n in order],
        [backward.get(n, float("nan")) for n in order],
        _ANALYTIC,
        predicted,
        order,
    )
