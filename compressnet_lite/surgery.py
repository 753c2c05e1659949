"""Model surgery: keep a subset of a layer's units, or replace a layer by a chain of layers.

This is the one model-rewriting primitive that structured pruning, neuron merging and
low-rank factorization are built on. Removing output unit ``j`` of a weighted layer means
deleting column ``j`` of its kernel and entry ``j`` of its bias, carrying the deletion
through the per-channel layers that follow (BatchNormalization, activations, dropout,
pooling, Flatten) and deleting the matching *input rows* of the next weighted layer.
Neuron merging (Srinivas & Babu 2015) instead *adds* a removed unit's outgoing weights,
scaled, into a kept unit: both are one linear map on the next layer's input rows,

    new_rows[k] = sum_u fold[u, k] * old_rows[u]

where ``fold`` is a ``(units, kept)`` matrix (a selection matrix for plain removal).

The array math comes first (NumPy, no Keras); the Keras glue below it rebuilds
Sequential and functional *chains* (one input, one output, every layer applied once to
the previous layer's output). Anything else (residual ``Add``/``Concatenate``, shared
layers, nested or subclassed models) is refused with an error naming the layer.

Example:
    >>> import numpy as np, compressnet_lite as cnl
    >>> model = cnl.models.seed_mlp()
    >>> small = keep_units(model, "fc1", np.arange(48))
    >>> small.get_layer("fc1").units, tuple(small.get_layer("fc2").kernel.shape)
    (48, (48, 32))
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

from compressnet_lite._checks import check_array, check_layer, check_model, check_positive_int

__all__ = [
    "selection_fold", "slice_outputs", "fold_inputs", "keep_units", "replace_layer",
    "chain_layers", "CARRY_THROUGH",
]


# ---------------------------------------------------------------------------------------
# Array math
# ---------------------------------------------------------------------------------------

def selection_fold(units: int, keep: np.ndarray) -> np.ndarray:
    """The ``(units, len(keep))`` matrix with ``fold[keep[k], k] = 1``: plain removal.

    Raises:
        ValueError / TypeError: ``units < 1``; ``keep`` not sorted, unique integers in
            ``0 .. units - 1``.
    """
    keep = _check_keep(keep, check_positive_int(units, "units"))
    fold = np.zeros((units, len(keep)), dtype=np.float32)
    fold[np.asarray(keep), np.arange(len(keep))] = 1.0
    return fold


def slice_outputs(weights: Sequence[np.ndarray], keep: np.ndarray) -> list[np.ndarray]:
    """Keep output units ``keep`` of a layer: every array is indexed on its last axis.

    Works for a Dense or Conv2D ``[kernel, bias]`` (outputs are the last axis of both) and
    for BatchNormalization's per-channel vectors.

    Raises:
        ValueError / TypeError: ``keep`` not sorted, unique integers in ``0 .. units - 1``
            (``units``: the last axis of the first array).
    """
    if len(weights):
        keep = _check_keep(keep, np.shape(weights[0])[-1])
    return [np.take(np.asarray(w), keep, axis=-1) for w in weights]


def fold_inputs(kernel: np.ndarray, fold: np.ndarray, positions: int = 1) -> np.ndarray:
    """Apply ``fold`` to the input rows of the next layer's kernel.

    Args:
        kernel: a Dense kernel ``(inputs, outputs)`` or a Conv2D kernel
            ``(kh, kw, inputs, outputs)``.
        fold: ``(units, kept)``; ``new_rows[k] = sum_u fold[u, k] * old_rows[u]``.
        positions: for a Dense after Flatten, the number of spatial positions each
            channel appears at (channels-last flattening: row ``p * units + u``).

    Returns:
        The new kernel, with ``kept`` (times ``positions``) input rows.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim == 2:  # Dense: rows are (position, channel) flattened channels-last
        out = kernel.shape[1]
        rows = kernel.reshape(positions, fold.shape[0], out)
        new = np.einsum("puo,uk->pko", rows, fold)
        return new.reshape(positions * fold.shape[1], out).astype(kernel.dtype)
    # Conv: (..., inputs, outputs)
    return np.einsum("...uo,uk->...ko", kernel, fold).astype(kernel.dtype)


# ---------------------------------------------------------------------------------------
# Keras glue
# ---------------------------------------------------------------------------------------

_WEIGHTED = (keras.layers.Dense, keras.layers.Conv2D)

CARRY_THROUGH = (
    keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU,
    keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.Dropout,
    keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D, keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D, keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D, keras.layers.Flatten,
)
"""Per-channel layers that ``keep_units`` carries a unit removal through."""

_CHANNEL_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def chain_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a Sequential or functional *chain*, input to output (no InputLayer).

    Raises:
        TypeError: ``model`` is not a keras.Model.
        ValueError: the model is unbuilt, subclassed, has several inputs or outputs, a
            nested model, a shared layer, or a layer with several inputs or consumers
            (residual ``Add``, ``Concatenate``, branches); the message names the layer.
    """
    check_model(model)
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
    elif _is_functional(model):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
                "outputs; surgery supports single-input, single-output chains only")
        layers = _functional_chain(model)
    else:
        raise ValueError(
            f"model {model.name!r} is a subclassed {type(model).__name__}; surgery needs a "
            "Sequential or functional model (rebuild it with keras.Input and named layers)")
    for layer in layers:
        if isinstance(layer, keras.Model):
            raise ValueError(f"layer {layer.name!r} is a nested model; flatten it into one "
                             "Sequential or functional chain first")
    return layers


def _is_functional(model: keras.Model) -> bool:
    return hasattr(model, "_nodes_by_depth") and not isinstance(model, keras.Sequential)


def _functional_chain(model: keras.Model) -> list[keras.layers.Layer]:
    nodes = [n for depth in sorted(model._nodes_by_depth, reverse=True)
             for n in model._nodes_by_depth[depth]]
    seen: dict[int, Any] = {}
    chain = []
    previous = None  # the operation whose output the next node must consume
    for node in nodes:
        op = node.operation
        name = getattr(op, "name", type(op).__name__)
        if id(op) in seen:
            raise ValueError(f"layer {name!r} is shared (called more than once); surgery "
                             "supports chains where each layer is applied once")
        seen[id(op)] = op
        if isinstance(op, keras.layers.InputLayer):
            if previous is not None:
                raise ValueError(f"model {model.name!r} has several inputs; surgery supports chains")
            previous = op
            continue
        parents = node.parent_nodes
        if len(node.input_tensors) != 1 or len(parents) != 1:
            raise ValueError(
                f"layer {name!r} ({type(op).__name__}) takes {len(node.input_tensors)} inputs: "
                "residual Add, Concatenate and other multi-input layers are not supported; "
                "surgery supports Sequential and functional chains")
        if parents[0].operation is not previous:
            prev_name = getattr(previous, "name", "?")
            raise ValueError(
                f"layer {name!r} does not consume the output of {prev_name!r}: the model "
                "branches; surgery supports Sequential and functional chains")
        if not isinstance(op, keras.layers.Layer):
            raise ValueError(f"operation {name!r} ({type(op).__name__}) is not a Keras layer; "
                             "surgery supports chains of layers")
        chain.append(op)
        previous = op
    return chain


def _input_spec(model: keras.Model) -> tuple[tuple, Any, str | None]:
    tensor = model.inputs[0]
    history = getattr(tensor, "_keras_history", None)
    name = history[0].name if history is not None and not isinstance(model, keras.Sequential) else None
    return tuple(tensor.shape[1:]), tensor.dtype, name


def _clone_layer(layer: keras.layers.Layer, **changes: Any) -> keras.layers.Layer:
    config = layer.get_config()
    config.update(changes)
    return layer.__class__.from_config(config)


def _rebuild(model: keras.Model, layers: list[keras.layers.Layer],
             plan: dict[str, tuple[list[keras.layers.Layer], list[list[np.ndarray]]]]) -> keras.Model:
    """Rebuild the chain ``layers``; ``plan[name] = (new_layers, their_weights)`` replaces a layer.

    Layers not in ``plan`` are cloned from their config and get their old weights.
    """
    shape, dtype, input_name = _input_spec(model)
    pairs: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    for layer in layers:
        if layer.name in plan:
            new_layers, weights = plan[layer.name]
            pairs.extend(zip(new_layers, weights))
        else:
            pairs.append((_clone_layer(layer), layer.get_weights()))
    names = [p[0].name for p in pairs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"layer names must be unique in the new model, duplicated: {duplicates}")
    inputs = keras.Input(shape=shape, dtype=dtype, name=input_name)
    sequential = isinstance(model, keras.Sequential)
    new_model = keras.Sequential([inputs], name=model.name) if sequential else None
    x = inputs
    for new_layer, _ in pairs:
        try:
            if sequential:
                new_model.add(new_layer)
            else:
                x = new_layer(x)
        except Exception as exc:
            raise ValueError(f"layer {new_layer.name!r} cannot take its new input: {exc}") from None
    if not sequential:
        new_model = keras.Model(inputs, x, name=model.name)
    for new_layer, weights in pairs:
        expected = [tuple(v.shape) for v in new_layer.weights]
        got = [tuple(np.shape(w)) for w in weights]
        if expected != got:
            raise ValueError(f"weights for layer {new_layer.name!r} have shapes {got}, but on "
                             f"its new input the layer needs {expected}")
        if weights:
            new_layer.set_weights(weights)
    return new_model


def _plain_weights(layer: keras.layers.Layer) -> None:
    names = [v.name.split("/")[-1] for v in layer.weights]
    extra = [n for n in names if n not in ("kernel", "bias")]
    if extra:
        raise ValueError(
            f"layer {layer.name!r} holds extra variables {extra}; surgery handles plain "
            "Dense/Conv2D layers (remove pruning masks with compressnet_lite.pruning.strip first)")
    if isinstance(layer, keras.layers.Conv2D):
        if getattr(layer, "groups", 1) != 1:
            raise ValueError(f"layer {layer.name!r} is a grouped convolution; not supported")
        if layer.data_format != "channels_last":
            raise ValueError(f"layer {layer.name!r} uses data_format={layer.data_format!r}; "
                             "surgery supports channels_last only")


def _check_carry(layer: keras.layers.Layer) -> None:
    if not isinstance(layer, CARRY_THROUGH) or isinstance(
            layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
        supported = ", ".join(sorted({c.__name__ for c in CARRY_THROUGH}))
        raise ValueError(
            f"layer {layer.name!r} ({type(layer).__name__}) lies between the pruned layer and "
            f"the next Dense/Conv2D; keep_units can carry a removal through: {supported}")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"layer {layer.name!r} uses data_format={layer.data_format!r}; "
                         "surgery supports channels_last only")
    if isinstance(layer, keras.layers.BatchNormalization) and \
            layer.axis not in (-1, len(layer.input.shape) - 1):
        raise ValueError(f"layer {layer.name!r} normalises axis {layer.axis}, not the channel "
                         "(last) axis")
    if isinstance(layer, keras.layers.Activation) and _activation_name(layer) in _CHANNEL_MIXING_ACTIVATIONS:
        raise ValueError(f"layer {layer.name!r} applies {_activation_name(layer)} across units; "
                         "removing a unit would change the others")


def _activation_name(layer: keras.layers.Layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act))


def keep_units(model: keras.Model, layer: Any, keep: Any, fold: Any = None) -> keras.Model:
    """Keep output units (Dense) or filters (Conv2D) ``keep`` of ``layer``; shrink the next layer.

    The layer keeps ``kernel[..., keep]`` and ``bias[keep]``. BatchNormalization
    (gamma, beta, moving statistics), activations, dropout, pooling and Flatten between
    it and the next Dense/Conv2D are carried through, and that next layer's input rows
    become ``new_rows[k] = sum_u fold[u, k] * old_rows[u]`` (for a Dense after Flatten,
    at every spatial position, channels-last). With the default selection ``fold`` the new
    model computes exactly what the old one computes when the removed units' outgoing
    weights are zero.

    Args:
        model: a built Sequential or functional chain.
        layer: name (or instance) of a Dense or Conv2D layer of ``model``; not the last one.
        keep: 1-D integer indices of the units to keep, sorted and unique, at least one.
        fold: optional ``(units, len(keep))`` float matrix applied to the next weighted
            layer's input rows (neuron merging: ``fold[j, i] = c`` adds removed unit
            ``j``'s outgoing weights, times ``c``, into kept unit ``i``). Default: the
            selection matrix ``fold[keep[k], k] = 1``.

    Returns:
        A new, uncompiled model with the same layer names; ``model`` is not changed.

    Raises:
        TypeError: ``model`` is not a keras.Model, ``layer`` neither a name nor a layer.
        ValueError: unknown or unsupported layer, the last weighted layer (nothing
            downstream to shrink), unsupported graph (residual, shared, nested,
            subclassed, multi-input/output), bad ``keep`` or ``fold``, a non-default
            ``fold`` across BatchNormalization, NaN weights, an unbuilt model.

    Example:
        >>> small = keep_units(cnl.models.seed_mlp(), "fc2", [0, 2, 5])  # doctest: +SKIP
    """
    layers = chain_layers(model)
    target = check_layer(model, layer)
    if not isinstance(target, _WEIGHTED) or isinstance(
            target, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
        raise ValueError(f"layer {target.name!r} is a {type(target).__name__}; keep_units "
                         "shrinks Dense or Conv2D layers")
    _plain_weights(target)
    units = int(target.kernel.shape[-1])
    keep = _check_keep(keep, units)

    index = layers.index(target)
    between, nxt = [], None
    for candidate in layers[index + 1:]:
        if isinstance(candidate, _WEIGHTED) or candidate.weights and not isinstance(
                candidate, keras.layers.BatchNormalization):
            nxt = candidate
            break
        between.append(candidate)
    if nxt is None:
        raise ValueError(f"layer {target.name!r} is the model's last weighted layer: shrinking "
                         "the output layer would change the model's output; nothing "
                         "downstream to shrink")
    if _activation_name(target) in _CHANNEL_MIXING_ACTIVATIONS:
        raise ValueError(f"layer {target.name!r} applies {_activation_name(target)} across its "
                         "units; removing a unit would change the others")
    for carried in between:
        _check_carry(carried)
    if not isinstance(nxt, _WEIGHTED) or isinstance(
            nxt, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
        raise ValueError(f"layer {nxt.name!r} ({type(nxt).__name__}) follows {target.name!r}; "
                         "keep_units can shrink the inputs of a Dense or Conv2D only")
    _plain_weights(nxt)

    has_bn = any(isinstance(l, keras.layers.BatchNormalization) for l in between)
    if fold is None:
        fold = selection_fold(units, keep)
    else:
        fold = check_array(fold, "fold", ndim=2).astype(np.float32)
        if fold.shape != (units, len(keep)):
            raise ValueError(f"fold must have shape (units, len(keep)) = {(units, len(keep))}, "
                             f"got {fold.shape}")
        if has_bn and not np.array_equal(fold, selection_fold(units, keep)):
            bn = next(l.name for l in between if isinstance(l, keras.layers.BatchNormalization))
            raise ValueError(f"a non-default fold cannot pass BatchNormalization layer {bn!r}: "
                             f"merging units through it is not exact")

    flatten = next((l for l in between if isinstance(l, keras.layers.Flatten)), None)
    positions = 1
    if flatten is not None:
        in_shape = tuple(flatten.input.shape[1:])
        positions = int(np.prod(in_shape[:-1])) if len(in_shape) > 1 else 1
    elif isinstance(nxt, keras.layers.Dense) and isinstance(target, keras.layers.Conv2D):
        # A Dense applied to a 4-D tensor acts on the channel axis: no position mapping.
        positions = 1

    plan: dict[str, tuple[list, list]] = {}
    size_key = "units" if isinstance(target, keras.layers.Dense) else "filters"
    plan[target.name] = ([_clone_layer(target, **{size_key: len(keep)})],
                         [slice_outputs(target.get_weights(), keep)])
    for carried in between:
        if carried.weights:  # BatchNormalization: per-channel vectors
            plan[carried.name] = ([_clone_layer(carried)], [slice_outputs(carried.get_weights(), keep)])
    next_weights = nxt.get_weights()
    next_weights[0] = fold_inputs(next_weights[0], fold, positions)
    plan[nxt.name] = ([_clone_layer(nxt)], [next_weights])
    return _rebuild(model, layers, plan)


def _check_keep(keep: Any, units: int) -> np.ndarray:
    arr = check_array(keep, "keep", ndim=1)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"keep must hold integer unit indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= units:
        raise ValueError(f"keep must hold indices in [0, {units}), got min {arr.min()} max {arr.max()}")
    if np.any(np.diff(arr) <= 0):
        raise ValueError("keep must be sorted and unique")
    return arr


def replace_layer(model: keras.Model, layer: Any, new_layers: Sequence[keras.layers.Layer],
                  weights: Sequence[Sequence[Any]]) -> keras.Model:
    """Replace one layer of a chain by a chain of new layers with the given weights.

    Example (low rank): a Dense ``W`` of shape ``(n, m)`` with bias ``b`` becomes
    ``Dense(r, use_bias=False)`` with ``U (n, r)`` then ``Dense(m)`` with ``V (r, m)``
    and ``b``; the model computes ``x U V + b``.

    Args:
        model: a built Sequential or functional chain.
        layer: name (or instance) of the layer to replace.
        new_layers: unbuilt Keras layers, applied in order; their names must not clash
            with the model's other layers.
        weights: one list of arrays per new layer, in that layer's ``weights`` order.

    Returns:
        A new, uncompiled model; ``model`` is not changed.

    Raises:
        TypeError: ``new_layers`` holds something that is not an unbuilt Keras layer.
        ValueError: unknown layer, unsupported graph, built new layers, a count or shape
            mismatch between ``weights`` and the layers, a new chain whose output does
            not fit the layers after it, duplicate names.
    """
    layers = chain_layers(model)
    target = check_layer(model, layer)
    if (isinstance(new_layers, (keras.layers.Layer, str, bytes))
            or not isinstance(new_layers, Sequence) or not new_layers):
        raise TypeError("new_layers must be a non-empty list of Keras layers")
    for i, new in enumerate(new_layers):
        if not isinstance(new, keras.layers.Layer) or isinstance(new, keras.Model):
            raise TypeError(f"new_layers[{i}] must be a Keras layer, got {type(new).__name__}")
        if new.built:
            raise ValueError(f"new_layers[{i}] ({new.name!r}) is already built; pass new, unbuilt layers")
    if (isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence)
            or len(weights) != len(new_layers)):
        raise ValueError(f"weights must be a list with one weight list per new layer "
                         f"({len(new_layers)}), got {type(weights).__name__} of length "
                         f"{len(weights) if isinstance(weights, Sequence) else '?'}")
    arrays = [[check_array(w, f"weights[{i}]") for w in ws] for i, ws in enumerate(weights)]
    others = {l.name for l in layers if l is not target}
    clash = sorted(others & {l.name for l in new_layers})
    if clash:
        raise ValueError(f"new layer names {clash} are already used in model {model.name!r}")
    new_model = _rebuild(model, layers, {target.name: (list(new_layers), arrays)})
    if tuple(new_model.outputs[0].shape[1:]) != tuple(model.outputs[0].shape[1:]):
        raise ValueError(f"replacing {target.name!r} changes the model's output shape from "
                         f"{tuple(model.outputs[0].shape[1:])} to {tuple(new_model.outputs[0].shape[1:])}")
    return new_model
