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

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _validate, gains
from .explain import json_safe
from .specs import Spec

__all__ = ["Propagation", "propagate"]

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
        return json_safe({"spec": self.spec, "activation": self.activation, "arch": self.arch, "depth": self.depth,
                          "width": self.width, "forward_variance": self.forward_variance,
                          "backward_variance": self.backward_variance, "derivative": self.derivative})


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
        raise ValueError(f"Argument `activation` must be one of {', '.join(sorted(gains.ACTIVATIONS))}. "
                         f"Received: activation={name!r}.")
    f, default = gains.ACTIVATIONS[name]
    df = gains.DERIVATIVES[name]
    p = default if param is None else param
    q = p if p is not None else 0.0
    return (lambda x: f(x, q)), (lambda x: df(x, q))


def _sampler(backend: str) -> Callable[[Spec, tuple[int, ...], str, int], Array]:
    if backend == "numpy":
        adapter = importlib.import_module("initscale.adapters.numpy")
        return lambda spec, shape, layout, seed: np.asarray(
            adapter.initializer(spec, layout)(shape, rng=seed, dtype=np.float64))
    if backend == "torch":
        torch = importlib.import_module("torch")
        adapter = importlib.import_module("initscale.adapters.torch")

        def draw_torch(spec: Spec, shape: tuple[int, ...], layout: str, seed: int) -> Array:
            # torch stores (out, in, *kernel): draw in that form and move the axes to (*kernel, in, out)
            tshape = (shape[-1], shape[-2], *shape[:-2])
            t = adapter.init_(torch.empty(tshape, dtype=torch.float64), spec, "torch",
                              generator=torch.Generator().manual_seed(seed))
            return np.asarray(np.moveaxis(t.numpy(), (0, 1), (-1, -2)))

        return draw_torch
    if backend == "jax":
        jax = importlib.import_module("jax")
        adapter = importlib.import_module("initscale.adapters.jax")
        return lambda spec, shape, layout, seed: np.asarray(
            adapter.initializer(spec, layout=layout)(jax.random.key(seed), shape), dtype=np.float64)
    raise ValueError(f"Argument `backend` must be one of 'jax', 'numpy', 'torch'. Received: backend={backend!r}.")


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


def propagate(spec: Spec, activation: str | Activation = "relu", *, depth: int = 50, width: int = 512,
              arch: str = "mlp", batch: int = 256, param: float | None = None, backend: str = "numpy",
              seed: int = 0, label: str | None = None, derivative: Activation | None = None) -> Propagation:
    """Forward and backward variances per layer for a deep ``arch`` ("mlp" or "cnn") initialized
    with ``spec``. Weights are drawn by ``backend``'s adapter (numpy, torch or jax).

    ``activation`` is a name of :data:`initscale.gains.ACTIVATIONS` (its analytic derivative is
    used) or a numpy-vectorized callable, whose derivative is ``derivative`` if given, else the
    relative central difference of the module docstring (with a warning). ``depth``, ``width`` and
    ``batch`` must be >= 1."""
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
            warnings.warn(f"propagate: activation {getattr(f, '__name__', 'callable')!r} came without "
                          f"`derivative`; f' is estimated by central differences with a step relative to each "
                          f"value (h = eps^(1/3)*|x|). Pass derivative= for the exact backward pass.", stacklevel=2)
        else:
            df = derivative
        name = getattr(f, "__name__", "callable")
    else:
        if derivative is not None:
            raise ValueError(f"Argument `derivative` is for a callable activation; {activation!r} has its analytic "
                             f"derivative in initscale.gains.DERIVATIVES. Received: derivative={derivative!r}.")
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
    weights = [draw(spec, shape, layout, int(s) & 0x7FFFFFFF) for s in streams]
    pre: list[Array] = []
    forward: list[float] = []
    for w in weights:
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
    return Propagation(label or repr(spec), name, arch, depth, width, forward, backward, how)
