"""``initscale.keras.lsuv``: layer-sequential unit-variance init (LSUV; Mishkin & Matas 2016) for Keras 3.

The loop, the report and the references are in :mod:`initscale.lsuv`; this module finds the layers,
measures their outputs and rescales their kernels (``assign``). A layer's output is read by wrapping
its ``call`` for the length of one forward pass (on any backend, for Sequential, functional and
subclassed models alike), which also gives the order in which the forward pass first calls the
layers. The layers are those whose main kernel (``kernel``; SeparableConv's ``pointwise_kernel``) the rules
set with a layout: Dense, EinsumDense (and so MultiHeadAttention's projections), ConvND,
ConvNDTranspose, DepthwiseConv, SeparableConv. Recurrent layers (several kernels) and any other
weight the rules set (a ReversibleEmbedding's ``reverse_embeddings``, which its lookup does not
use) are reported as skipped, left as the rules drew them. A row is named by its layer's name, or,
where several layers share it (keras-hub's blocks), by its kernel's path without ``/kernel``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import keras
import numpy as np

from initscale import lsuv as _core
from initscale import presets
from initscale.lsuv import LSUVReport
from initscale.specs import Spec

__all__ = ["lsuv"]

_RECURRENT = ("RNN", "LSTMCell", "GRUCell", "SimpleRNNCell", "Bidirectional")


def _runner(model: Any, batch: Any, training: bool) -> Any:
    if isinstance(batch, Mapping):
        return lambda: model(batch, training=training)
    if isinstance(batch, (tuple, list)) and not batch:
        raise TypeError("Argument `batch` of lsuv is an empty sequence; pass the model's inputs.")
    if batch is None or isinstance(batch, (str, bytes)):
        raise TypeError(
            f"Argument `batch` of lsuv must be an array, a tuple/list of arrays or a mapping of named "
            f"inputs for the model's call. Received: {type(batch).__name__}."
        )
    return lambda: model(batch, training=training)


def _layers(model: Any) -> list[Any]:
    return list(model._flatten_layers(include_self=True, recursive=True))


_MAIN = ("kernel", "pointwise_kernel")  # the weight a layer's output is linear in (SeparableConv: its pointwise one)


def _kernel(layer: Any, weights: set[str]) -> Any | None:
    """The layer's main kernel, if the rules set it (never another weight: the output of a
    ReversibleEmbedding's lookup does not depend on its ``reverse_embeddings``)."""
    for attr in _MAIN:
        try:
            variable = getattr(layer, attr, None)
        except Exception:  # a kernel property that cannot be read: not this layer's
            variable = None
        if variable is not None and getattr(variable, "path", None) in weights:
            return variable
    return None


def _others(layer: Any, weights: set[str]) -> list[str]:
    """The layer's own weights the rules set that are not its main kernel (LSUV leaves them as drawn)."""
    main = _kernel(layer, weights)
    return [v.path for v in layer._trainable_variables if v.path in weights and v is not main]


def _names(layers: list[Any], weights: set[str]) -> dict[int, str]:
    """A row name per layer: its own where unique, else its kernel's path without the variable's name
    (keras-hub's blocks each hold a ``query``, a ``feedforward_output_dense``, ...)."""
    count: dict[str, int] = {}
    for layer in layers:
        count[layer.name] = count.get(layer.name, 0) + 1
    return {
        id(layer): layer.name if count[layer.name] == 1 else cast(Any, _kernel(layer, weights)).path.rsplit("/", 1)[0]
        for layer in layers
    }


class _Capture:
    """Records the first output of some layers during one forward pass, in call order: their
    ``call`` is wrapped for the length of the pass, and for a layer with a fused activation
    (``Dense(..., activation="relu")``) the input of that activation, so that what is measured is
    the layer's own output before its nonlinearity, as torch's ``Linear`` gives it."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers, self.outputs = layers, dict[int, Any]()
        self.fused: list[Any] = []

    def _record(self, key: int, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            self.outputs.setdefault(key, out)
            return out

        return wrapped

    def __enter__(self) -> dict[int, Any]:
        for layer in self.layers:
            activation = getattr(layer, "activation", None)
            if callable(activation) and activation is not keras.activations.linear:
                self.fused.append(layer)
                layer.activation = self._activation_input(id(layer), activation)
            layer.call = self._record(id(layer), layer.call)  # after the activation's record, if any
        return self.outputs

    def _activation_input(self, key: int, activation: Any) -> Any:
        def wrapped(x: Any) -> Any:
            self.outputs.setdefault(key, x)
            return activation(x)

        wrapped.original = activation  # type: ignore[attr-defined]
        return wrapped

    def __exit__(self, *_exc: Any) -> None:
        for layer in self.layers:
            if layer in self.fused:
                layer.activation = layer.activation.original
            del layer.call  # back to the class's method


def _output_variance(run: Any, layer: Any) -> float:
    with _Capture([layer]) as outputs:
        run()
    return _core.variance(keras.ops.convert_to_numpy(outputs[id(layer)]))


def lsuv(
    model: Any,
    batch: Any,
    rules: Spec | Mapping[str, Any] | None = None,
    *,
    tol: float = 0.1,
    max_iters: int = 10,
    seed: Any = None,
    training: bool = False,
    **reinit_kwargs: Any,
) -> LSUVReport:
    """Re-initialize a built Keras ``model`` by ``rules``, then rescale each layer to unit output
    variance on ``batch`` (Mishkin & Matas 2016; the loop in :mod:`initscale.lsuv`).

    Args:
        model: a built Keras model (Sequential, functional or subclassed).
        batch: one mini-batch, as the model's call takes it (an array, a tuple/list, a dict).
        rules: the starting init, anything :func:`initscale.keras.reinit` takes; None:
            ``presets.get("orthogonal")`` on every supported layer's kernels.
        tol, max_iters: as in :func:`initscale.torch.lsuv_` (the paper's 0.1 and 10).
        seed: the seed of the starting init (``reinit``'s).
        training: passed to the model's call (False: dropout off, BatchNorm on its moving statistics).
        **reinit_kwargs: passed on to ``reinit``.

    Atomic: every variable is copied (NumPy) before the first write and assigned back if anything
    fails; non-trainable variables are always put back.

    Example:
        >>> import keras, numpy as np
        >>> from initscale.adapters.keras import lsuv
        >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="tanh"),
        ...                           keras.layers.Dense(8)])
        >>> report = lsuv(model, np.random.default_rng(0).standard_normal((256, 32)).astype("float32"), seed=0)
        >>> [row.status for row in report.rows]
        ['converged', 'converged']
    """
    from initscale.adapters.keras import reinit

    tol, max_iters = _core.check_arguments("lsuv", tol, max_iters)
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"Argument `model` of lsuv must be a Keras layer or model. Received: {type(model).__name__}.")
    run = _runner(model, batch, training)
    if rules is None:
        rules = presets.get("orthogonal")
    init = reinit(model, rules, seed=seed, dry_run=True, **reinit_kwargs)  # checks before any write
    weights = {row.name for row in init.touched if row.layout is not None}
    saved = [(v, np.array(keras.ops.convert_to_numpy(v))) for v in model.variables]
    try:
        init = reinit(model, rules, seed=seed, **reinit_kwargs)
        every = _layers(model)
        candidates = [layer for layer in every if _kernel(layer, weights) is not None]
        names = _names(candidates, weights)
        with _Capture(candidates) as first:
            run()
        order = sorted((c for c in candidates if id(c) in first), key=lambda c: list(first).index(id(c)))
        rows = [_layer(run, layer, names[id(layer)], weights, tol, max_iters) for layer in order]
        rows += [
            _core.skipped(
                names[id(c)],
                type(c).__name__,
                _kernel(c, weights).path,  # type: ignore[union-attr]  # candidates all have a kernel
                "not called by the forward pass on `batch` (or not through its `call`)",
            )
            for c in candidates
            if id(c) not in first
        ]
        rows += [
            _core.skipped(
                path.rsplit("/", 1)[0],
                type(layer).__name__,
                path,
                "not the layer's main `kernel` (its output need not be linear in it): left as the rules drew it",
            )
            for layer in every
            for path in _others(layer, weights)
        ]
        report = _core.finish("lsuv", rows, init, tol, max_iters, len(candidates))
    except BaseException:
        for variable, copy in saved:
            variable.assign(copy)
        raise
    for variable, copy in saved:
        if not variable.trainable:
            variable.assign(copy)
    return report


def _layer(run: Any, layer: Any, name: str, weights: set[str], tol: float, max_iters: int) -> _core.LSUVRow:
    kernel = _kernel(layer, weights)
    assert kernel is not None
    cls = type(layer).__name__
    if any(c.__name__ in _RECURRENT for c in type(layer).__mro__):
        return _core.skipped(name, cls, kernel.path, "several kernels (recurrent layer)")

    def scale(factor: float) -> None:
        kernel.assign(kernel * factor)

    return _core.rescale_layer(
        name,
        cls,
        kernel.path,
        lambda: _output_variance(run, layer),
        scale,
        tol=tol,
        max_iters=max_iters,
        function="lsuv",
    )
