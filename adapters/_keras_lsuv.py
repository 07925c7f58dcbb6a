"""``lsuv`` for both Keras adapters: layer-sequential unit-variance init (LSUV; Mishkin & Matas 2016).

Written once for Keras 3 (``initscale.keras.lsuv``, every backend) and Keras 2
(``initscale.adapters.tf_keras.lsuv``); each binds it to its framework with a
:class:`._keras_check.Face` and :func:`bind`. No framework is imported here.

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

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from initscale import lsuv as _core
from initscale import presets
from initscale.lsuv import LSUVReport
from initscale.specs import Spec

from ._keras_check import Face

__all__ = ["bind", "run"]

_RECURRENT = ("RNN", "LSTMCell", "GRUCell", "SimpleRNNCell", "Bidirectional")


class _Runner:
    """One forward pass of the model on the batch (``run()``), and the face that reads its outputs."""

    def __init__(self, face: Face, model: Any, batch: Any, training: bool) -> None:
        if isinstance(batch, (tuple, list)) and not batch:
            raise TypeError("Argument `batch` of lsuv is an empty sequence; pass the model's inputs.")
        if batch is None or isinstance(batch, (str, bytes)):
            raise TypeError(
                f"Argument `batch` of lsuv must be an array, a tuple/list of arrays or a mapping of named "
                f"inputs for the model's call. Received: {type(batch).__name__}."
            )
        self.face, self.model, self.batch, self.training = face, model, batch, training
        self.path = face.paths(model)  # a variable -> its name in reinit's report

    def __call__(self) -> Any:
        return self.model(self.batch, training=self.training)


def _layers(model: Any) -> list[Any]:
    return list(model._flatten_layers(include_self=True, recursive=True))


_MAIN = ("kernel", "pointwise_kernel")  # the weight a layer's output is linear in (SeparableConv: its pointwise one)


def _kernel(path_of: Callable[[Any], str], layer: Any, weights: set[str]) -> Any | None:
    """The layer's main kernel, if the rules set it (never another weight: the output of a
    ReversibleEmbedding's lookup does not depend on its ``reverse_embeddings``)."""
    for attr in _MAIN:
        try:
            variable = getattr(layer, attr, None)
            path = None if variable is None else path_of(variable)
        except Exception:  # a kernel property that cannot be read, or not a variable: not this layer's
            path = None
        if path is not None and path in weights:
            return variable
    return None


def _others(face: Face, path_of: Callable[[Any], str], layer: Any, weights: set[str]) -> list[str]:
    """The layer's own weights the rules set that are not its main kernel (LSUV leaves them as drawn)."""
    main = _kernel(path_of, layer, weights)
    return [path_of(v) for v in face.fw.trainable(layer) if path_of(v) in weights and v is not main]


def _names(path_of: Callable[[Any], str], layers: list[Any], weights: set[str]) -> dict[int, str]:
    """A row name per layer: its own where unique, else its kernel's path without the variable's name
    (keras-hub's blocks each hold a ``query``, a ``feedforward_output_dense``, ...)."""
    count: dict[str, int] = {}
    for layer in layers:
        count[layer.name] = count.get(layer.name, 0) + 1
    names = {}
    for layer in layers:
        kernel = _kernel(path_of, layer, weights)
        shared = count[layer.name] > 1 and kernel is not None
        names[id(layer)] = path_of(kernel).rsplit("/", 1)[0] if shared and kernel is not None else layer.name
    return names


class _Capture:
    """Records the first output of some layers during one forward pass, in call order: their
    ``call`` is wrapped for the length of the pass, and for a layer with a fused activation
    (``Dense(..., activation="relu")``) the input of that activation, so that what is measured is
    the layer's own output before its nonlinearity, as torch's ``Linear`` gives it."""

    def __init__(self, layers: list[Any], linear: Any) -> None:
        self.layers, self.linear, self.outputs = layers, linear, dict[int, Any]()
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
            if callable(activation) and activation is not self.linear:
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


def _output_variance(run: _Runner, layer: Any) -> float:
    with _Capture([layer], run.face.linear) as outputs:
        run()
    return _core.variance(run.face.to_numpy(outputs[id(layer)]))


def run(
    face: Face,
    model: Any,
    batch: Any,
    rules: Spec | Mapping[str, Any] | None,
    *,
    tol: float,
    max_iters: int,
    seed: Any,
    training: bool,
    reinit_kwargs: Mapping[str, Any],
) -> LSUVReport:
    """LSUV on ``model`` by ``face``'s framework (what every bound ``lsuv`` runs)."""
    tol, max_iters = _core.check_arguments("lsuv", tol, max_iters)
    if not isinstance(model, face.layer):
        raise TypeError(
            f"Argument `model` of lsuv must be a {face.name} layer or model. Received: {type(model).__name__}."
        )
    forward = _Runner(face, model, batch, training)
    if rules is None:
        rules = presets.get("orthogonal")
    reinit = face.reinit
    init = reinit(model, rules, seed=seed, dry_run=True, **reinit_kwargs)  # checks before any write
    weights = {row.name for row in init.touched if row.layout is not None}
    saved = [(v, np.array(face.to_numpy(v))) for v in model.variables]
    try:
        init = reinit(model, rules, seed=seed, **reinit_kwargs)
        every = _layers(model)
        kernels = {id(layer): _kernel(forward.path, layer, weights) for layer in every}
        candidates = [layer for layer in every if kernels[id(layer)] is not None]
        names = _names(forward.path, candidates, weights)
        with _Capture(candidates, face.linear) as first:
            forward()
        order = sorted((c for c in candidates if id(c) in first), key=lambda c: list(first).index(id(c)))
        rows = [_layer(forward, layer, names[id(layer)], weights, tol, max_iters) for layer in order]
        rows += [
            _core.skipped(
                names[id(c)],
                type(c).__name__,
                forward.path(kernels[id(c)]),
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
            for path in _others(face, forward.path, layer, weights)
        ]
        report = _core.finish("lsuv", rows, init, tol, max_iters, len(candidates), stacklevel=4)
    except BaseException:
        for variable, copy in saved:
            variable.assign(copy)
        raise
    for variable, copy in saved:
        if not variable.trainable:
            variable.assign(copy)
    return report


def _layer(run: _Runner, layer: Any, name: str, weights: set[str], tol: float, max_iters: int) -> _core.LSUVRow:
    kernel = _kernel(run.path, layer, weights)
    assert kernel is not None
    cls, path = type(layer).__name__, run.path(kernel)
    if any(c.__name__ in _RECURRENT for c in type(layer).__mro__):
        return _core.skipped(name, cls, path, "several kernels (recurrent layer)")

    def scale(factor: float) -> None:
        kernel.assign(kernel * factor)

    return _core.rescale_layer(
        name,
        cls,
        path,
        lambda: _output_variance(run, layer),
        scale,
        tol=tol,
        max_iters=max_iters,
        function="lsuv",
    )


_DOC = """Re-initialize a built {name} ``model`` by ``rules``, then rescale each layer to unit output
    variance on ``batch`` (Mishkin & Matas 2016; the loop in :mod:`initscale.lsuv`).

    Args:
        model: a built {name} model (Sequential, functional or subclassed).
        batch: one mini-batch, as the model's call takes it (an array, a tuple/list, a dict).
        rules: the starting init, anything ``initscale.{public}.reinit`` takes; None:
            ``presets.get("orthogonal")`` on every supported layer's kernels.
        tol, max_iters: as in :func:`initscale.torch.lsuv_` (the paper's 0.1 and 10).
        seed: the seed of the starting init (``reinit``'s).
        training: passed to the model's call (False: dropout off, BatchNorm on its moving statistics).
        **reinit_kwargs: passed on to ``reinit``.

    Each layer's output is read by wrapping its ``call`` for one forward pass; a fused activation
    (``Dense(..., activation="tanh")``) is measured before it. Atomic: every variable is copied
    (NumPy) before the first write and assigned back if anything fails; non-trainable variables
    are always put back.

    Example:
{example}"""


def bind(face: Face, module: str, example: str) -> Callable[..., LSUVReport]:
    """The contract's ``lsuv`` for ``face``'s framework, placed in the adapter ``module`` and
    documented with its doctest ``example`` (lines indented by 8 spaces)."""

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
        return run(
            face,
            model,
            batch,
            rules,
            tol=tol,
            max_iters=max_iters,
            seed=seed,
            training=training,
            reinit_kwargs=reinit_kwargs,
        )

    lsuv.__module__ = module
    lsuv.__doc__ = _DOC.format(name=face.name, public=face.public, example=example)
    return lsuv
