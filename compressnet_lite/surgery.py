"""Model surgery: rebuild any Keras graph with layers replaced, and remove coupled channels.

Two primitives that every structural transform of the library is built on.

:func:`rewrite` rebuilds a Sequential or functional model (nested sub-models and shared
layers included) node by node, with some layers replaced by new ones, and copies every
weight *by layer name and weight path* ("fc1/kernel" to "fc1/kernel"), never by position,
always as a fresh NumPy copy (so the new model shares no buffer with the old one).
Pruning masks, quantized and clustered layers, stripping back to built-in layers and the
low-rank split of a layer are all ``rewrite`` with a different ``make``.

:func:`dependency_groups` finds which channel dimensions are *coupled* and must be removed
together (the idea of DepGraph, Fang et al. 2023, written for Keras). Removing output channel
``c`` of a convolution removes input row ``c`` of every layer that reads it; if the
convolution feeds an ``Add``, channel ``c`` of the other branch must go as well, and with it
that branch's producers and the consumers of the sum. Every tensor's channel axis and every
layer's per-channel parameters are "slots"; each layer type links slots (identity through
BatchNormalization or an activation, offsets through Concatenate, one channel to ``m``
outputs through a depthwise convolution, one channel to every spatial position through
Flatten); the connected components of that graph are the units that can be removed, and
units touching the same tensors and layers form one group. :func:`keep_channels` removes
units of groups (and, for neuron merging, folds the removed units' outgoing weights into
kept ones), slicing every member's weights.

The array math comes first (NumPy, no Keras): the fold of a merge is one linear map on the
next layer's input rows,

    new_rows[k] = sum_u fold[u, k] * old_rows[u]

where ``fold`` is a ``(units, kept)`` matrix (a selection matrix for plain removal).

Example:
    >>> import numpy as np, compressnet_lite as cnl
    >>> model = cnl.models.seed_mlp()
    >>> small = keep_units(model, "fc1", np.arange(48))
    >>> small.get_layer("fc1").units, tuple(small.get_layer("fc2").kernel.shape)
    (48, (48, 32))
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence

import keras
import numpy as np

from compressnet_lite import _backend
from compressnet_lite._checks import check_array, check_model, check_positive_int, read_value, reading

__all__ = [
    # array math
    "selection_fold", "slice_outputs", "fold_inputs",
    # graph rewriting
    "rewrite", "replace_layer", "graph_layers",
    # dependency groups
    "Member", "DependencyGroup", "DependencyGroups", "dependency_groups", "keep_channels",
    "keep_units", "group_of", "positively_homogeneous", "reading", "plot_group", "SUPPORTED",
]


# =======================================================================================
# Array math
# =======================================================================================

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


# =======================================================================================
# Keras glue: rebuilding a graph
# =======================================================================================

def _np(v: Any) -> np.ndarray:
    """A variable's value as NumPy (read once per :func:`reading` block; read-only)."""
    return read_value(v)


def _reads_once(fn: Callable) -> Callable:
    """Run a public function inside one :func:`reading` block (each weight read once)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with reading():
            return fn(*args, **kwargs)
    return wrapper


def _is_graph_model(obj: Any) -> bool:
    """Sequential or functional (a graph of layers that can be walked), not subclassed."""
    if isinstance(obj, keras.Sequential):
        return True
    return isinstance(obj, keras.Model) and hasattr(obj, "_nodes_by_depth") and \
        any(c.__name__ == "Functional" for c in type(obj).__mro__)


def _check_graph_model(model: keras.Model, what: str = "surgery") -> None:
    if not _is_graph_model(model):
        raise ValueError(
            f"model {model.name!r} is a subclassed {type(model).__name__}; {what} needs a "
            "Sequential or functional model (rebuild it with keras.Input and named layers)")


def _graph(model: keras.Model):
    """The functional graph behind a model (a built Sequential has one)."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(f"Sequential model {model.name!r} has no input shape yet; build it "
                             "with keras.Input(...) as its first layer or call it once")
        return graph
    return model


def _nodes(model: keras.Model) -> list:
    graph = _graph(model)
    return [node for depth in sorted(graph._nodes_by_depth, reverse=True)
            for node in graph._nodes_by_depth[depth]]


@_reads_once
def graph_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model`` and of its nested sub-models, in graph order (no InputLayer).

    Raises:
        TypeError / ValueError: not a built Sequential or functional model.
    """
    check_model(model)
    _check_graph_model(model)
    out, seen = [], set()

    def walk(m):
        for node in _nodes(m):
            op = node.operation
            if node.is_input or not isinstance(op, keras.layers.Layer) or id(op) in seen:
                continue
            seen.add(id(op))
            if _is_graph_model(op):
                walk(op)
            else:
                out.append(op)
    walk(model)
    return out


def _relative_variables(layer: keras.layers.Layer) -> dict[str, Any]:
    """The layer's variables by path relative to the layer: "kernel", "query/kernel", ..."""
    prefix = (layer.path + "/") if getattr(layer, "path", None) else None
    out = {}
    for v in layer.weights:
        path = v.path
        rel = path[len(prefix):] if prefix and path.startswith(prefix) else path.split("/")[-1]
        out[rel] = v
    return out


class _Deferred(keras.initializers.Initializer):
    """Zeros made in NumPy, standing in for an initializer of a layer whose weights are all
    copied in right after it is built (a copy of an old layer, or one with channels removed).

    Running the real initializers would be wasted work, and on JAX costly: each random
    initializer of a new shape compiles an XLA program (threefry), most of the time of a
    rebuild. NumPy zeros become the variables without compiling anything. The originals are
    put back on the layer once it is built (:func:`_restore_initializers`), and a variable
    no weight is copied into gets its real initial value then.
    """

    def __init__(self, original: Any = None):
        self.original = original

    def __call__(self, shape, dtype=None):
        dtype = keras.backend.standardize_dtype(dtype or keras.backend.floatx())
        try:
            return np.zeros(shape, dtype)
        except TypeError:  # a dtype NumPy lacks (bfloat16): the variable casts
            return np.zeros(shape, "float32")

    def get_config(self) -> dict:  # a layer that clones its initializers (MultiHeadAttention)
        return {"original": self.original}

    @classmethod
    def from_config(cls, config: dict) -> "_Deferred":
        return cls(config["original"])


_DEFERRED: "weakref.WeakKeyDictionary[keras.layers.Layer, dict]" = weakref.WeakKeyDictionary()


def _defer_initializers(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Swap the initializers of the unbuilt ``layer`` (attributes named ``*_initializer``)
    for :class:`_Deferred`; ``layer`` must get every weight copied after it is built."""
    if isinstance(layer, keras.Model):
        return layer
    swapped = {name: value for name, value in vars(layer).items()
               if name.endswith("_initializer") and isinstance(value, keras.initializers.Initializer)}
    for name, value in swapped.items():
        setattr(layer, name, _Deferred(value))
    if swapped:
        _DEFERRED[layer] = swapped
    return layer


def _sublayers(layer: keras.layers.Layer) -> list:
    """``layer`` and every layer held in its attributes (directly or in lists and dicts)."""
    out, todo, seen = [], [layer], set()
    while todo:
        item = todo.pop()
        if isinstance(item, keras.layers.Layer):
            if id(item) in seen:
                continue
            seen.add(id(item))
            out.append(item)
            todo.extend(vars(item).values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item.values())
    return out


def _restore_initializers(layer: keras.layers.Layer) -> bool:
    """Put the real initializers back on a built, deferred ``layer`` and on the copies of
    them its sub-layers were built with; ``False`` when ``layer`` was not deferred."""
    swapped = _DEFERRED.pop(layer, None)
    if swapped is None:
        return False
    for name, value in swapped.items():
        setattr(layer, name, value)
    for sub in _sublayers(layer):
        for name, value in list(vars(sub).items()):
            if isinstance(value, _Deferred):
                original = value.original
                setattr(sub, name, original.__class__.from_config(original.get_config()))
    return True


def _initial_values(layer: keras.layers.Layer) -> dict:
    """Initial values of a built layer's variables, by relative path, from a twin built from
    its config with its real initializers."""
    try:
        twin = layer.__class__.from_config(layer.get_config())
        twin.build_from_config(layer.get_build_config())
    except Exception as exc:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has a weight that is not "
                         f"copied and cannot be initialized from a twin built from its config "
                         f"({exc})") from None
    return {rel: _np(v) for rel, v in _relative_variables(twin).items()}


def _fresh_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new, unbuilt layer from ``layer``'s config (a Lambda's function is reused as is),
    its initializers deferred (its weights are copied from ``layer``)."""
    from keras.src.saving.serialization_lib import SafeModeScope

    try:
        with SafeModeScope(False):  # an in-memory copy of code the caller already runs
            return _defer_initializers(layer.__class__.from_config(layer.get_config()))
    except Exception as exc:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) cannot be rebuilt from its "
                         f"config ({exc}); give it a get_config() that from_config accepts") from None


Make = Callable[[keras.layers.Layer], Any]


def _replacement(layer: keras.layers.Layer, make: Make | None) -> list[keras.layers.Layer]:
    made = make(layer) if make is not None else None
    if made is None:
        return [_fresh_copy(layer)]
    if isinstance(made, keras.layers.Layer):
        made = [made]
    if isinstance(made, (str, bytes)) or not isinstance(made, Sequence):
        raise TypeError(f"make({layer.name!r}) must return None, a new Keras layer or a list of "
                        f"them, got {type(made).__name__}")
    for i, new in enumerate(made):
        if not isinstance(new, keras.layers.Layer) or isinstance(new, keras.Model):
            raise TypeError(f"make({layer.name!r})[{i}] must be a Keras layer, got {type(new).__name__}")
        if new is layer or (new.built and new.weights):
            raise ValueError(f"make({layer.name!r}) returned a built layer ({new.name!r}); return new, "
                             "unbuilt layers (the old model must keep its own)")
    return list(made)


def _input_like(x: Any, like: Any = None) -> Any:
    """A new Input named like ``x``'s InputLayer, shaped like ``like`` (default: ``x``)."""
    history = getattr(x, "_keras_history", None)
    name = history[0].name if history is not None else None
    like = x if like is None else like
    return keras.Input(batch_shape=tuple(like.shape), dtype=like.dtype,
                       sparse=bool(getattr(like, "sparse", False)), name=name)


def _call(new: list, op: keras.layers.Layer, node, args: tuple, kwargs: dict) -> Any:
    if len(new) == 1:
        return new[0](*args, **kwargs)
    tensors = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
    extra = {k: v for k, v in kwargs.items() if v is not None and k not in ("training", "mask")}
    if len(tensors) != 1 or extra or len(node.outputs) != 1:
        raise ValueError(f"layer {op.name!r} takes {len(tensors)} tensor inputs or extra arguments "
                         f"{sorted(extra)}; only a single-input, single-output layer can be replaced "
                         "by a chain of layers or dropped")
    x = tensors[0]
    for layer in new:
        x = layer(x)
    return x


def _rebuild(model: keras.Model, make: Make | None, cache: dict, like: list | None = None) -> keras.Model:
    """Rebuild ``model``'s graph; ``cache[id(old)] = (old, [new layers])`` collects every swap.

    ``like``: new tensors a nested model will be called on; its inputs take their shapes.
    """
    def replacement(layer, args=()):
        entry = cache.get(id(layer))
        if entry is None:
            if _is_graph_model(layer):
                tensors = [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)]
                new = [_rebuild(layer, make, cache, tensors or None)]
            else:
                new = _replacement(layer, make)
            entry = cache[id(layer)] = (layer, new)
        return entry[1]

    if isinstance(model, keras.Sequential):
        new_layers = []
        for layer in model.layers:
            new_layers.extend(replacement(layer))
        inputs = _input_like(model.inputs[0], like[0] if like else None)
        new_model = keras.Sequential([inputs] + new_layers, name=model.name)
        if not model.trainable:  # setting True would unfreeze frozen variables (JAX, torch)
            new_model.trainable = False
        return new_model
    tensors: dict[int, Any] = {}
    new_inputs = []
    for i, x in enumerate(model.inputs):
        tensors[id(x)] = _input_like(x, like[i] if like and i < len(like) else None)
        new_inputs.append(tensors[id(x)])
    for node in _nodes(model):
        if node.is_input or any(id(t) not in tensors for t in node.input_tensors):
            continue
        op = node.operation
        args, kwargs = node.arguments.fill_in(tensors)
        if isinstance(op, keras.layers.Layer):
            try:
                outputs = _call(replacement(op, (args, kwargs)), op, node, args, kwargs)
            except (ValueError, TypeError) as exc:
                if "cannot" in str(exc) or "make(" in str(exc) or "only a single-input" in str(exc):
                    raise
                raise ValueError(f"layer {op.name!r}: the new layer(s) cannot take the new input: {exc}") \
                    from None
        else:  # a stateless keras.ops operation used in the graph (e.g. x + y)
            outputs = op(*args, **kwargs)
        for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(old)] = new
    outputs = keras.tree.pack_sequence_as(model._outputs_struct, [tensors[id(t)] for t in model.outputs])
    inputs = keras.tree.pack_sequence_as(model._inputs_struct, new_inputs)
    new_model = keras.Model(inputs, outputs, name=model.name)
    if not model.trainable:  # setting True would unfreeze frozen variables (JAX, torch)
        new_model.trainable = False
    return new_model


def _copy_weights(cache: dict, weights_for: Callable) -> None:
    for old, news in cache.values():
        if isinstance(old, keras.Model):
            continue
        source = _relative_variables(old)
        for new in news:
            if isinstance(new, keras.Model):
                continue
            deferred = _restore_initializers(new)
            initial = None
            given = dict(weights_for(old, new) or {})
            target = _relative_variables(new)
            unknown = sorted(set(given) - set(target))
            if unknown:
                raise ValueError(f"weights for layer {new.name!r} name {unknown}, which it does not have; "
                                 f"its weights are {sorted(target)}")
            for rel, var in target.items():
                if rel in given:
                    value = np.asarray(given[rel])
                    origin = "the given array"
                elif new.name == old.name and rel in source:
                    value = _np(source[rel])
                    origin = f"old weight {source[rel].path!r}"
                elif deferred:  # built with _Deferred zeros: give it its real initial value
                    initial = _initial_values(new) if initial is None else initial
                    if rel not in initial:
                        raise ValueError(f"weight {var.path!r} of the rebuilt layer {new.name!r} has no "
                                         "value to copy, and a twin built from its config lacks it")
                    value = initial[rel]
                    origin = "its initializer"
                else:
                    continue  # a new variable (e.g. a pruning mask): keeps its initial value
                if tuple(value.shape) != tuple(var.shape):
                    raise ValueError(f"weight {var.path!r} of the new layer has shape {tuple(var.shape)}, "
                                     f"but {origin} has shape {tuple(value.shape)}; pass weights="
                                     f"{{{new.name!r}: {{{rel!r}: array}}}}")
                var.assign(np.array(value, dtype=var.dtype, copy=True))


def rewrite(model: keras.Model, make: Make | None = None, *,
            weights: Mapping[str, Mapping[str, Any]] | None = None) -> keras.Model:
    """Rebuild ``model`` node by node, with some layers replaced; copy weights by name and path.

    Every layer is replaced by what ``make(layer)`` returns:

    * ``None``: a fresh copy of the layer from its config (the default for every layer);
    * a new, unbuilt layer (e.g. the same layer with fewer units, or a ``PrunableDense``);
    * a list of new, unbuilt layers applied in order (a chain replacing a single-input,
      single-output layer, as low-rank factorization does); ``[]`` drops such a layer,
      its input passing straight through.

    Nested functional or Sequential sub-models are rebuilt the same way (``make`` sees their
    layers), a shared layer is replaced once and stays shared, and stateless ``keras.ops``
    operations in the graph are reused. Then, for each new layer, every weight is set from
    ``weights[new_layer_name][path]`` when given there, else copied from the old layer of
    the same name and the same relative path ("kernel", "bias", "cnl_mask",
    "query/kernel", ...), else left at its initial value. Copies are fresh NumPy arrays:
    the new model shares no buffer with ``model``.

    Args:
        model: a built Sequential or functional model (not changed).
        make: ``make(layer) -> None | layer | list of layers``; ``None`` copies everything.
        weights: arrays for new layers, ``{layer_name: {relative_path: array}}``.

    Returns:
        A new, uncompiled model with ``model``'s name, inputs and output structure.

    Raises:
        TypeError: ``model`` not a keras.Model; ``make`` returns something else than layers.
        ValueError: unbuilt or subclassed model, NaN weights, a built layer returned by
            ``make``, a chain replacing a multi-input layer, new layers that cannot take their
            new inputs, a weight shape that does not fit and was not given, unknown paths
            in ``weights``.

    Example:
        >>> wide = rewrite(cnl.models.seed_mlp(), lambda l: keras.layers.Dense(
        ...     80, activation="relu", name="fc1") if l.name == "fc1" else None,
        ...     weights={"fc1": {"kernel": np.zeros((64, 80)), "bias": np.zeros(80)},
        ...              "fc2": {"kernel": np.zeros((80, 32))}})   # doctest: +SKIP
    """
    with reading():
        return _rewrite(model, make, weights)


def _rewrite(model, make, weights) -> keras.Model:
    check_model(model)
    _check_graph_model(model, "rewrite")
    if make is not None and not callable(make):
        raise TypeError(f"make must be a callable layer -> None | layer | list, got {type(make).__name__}")
    if weights is None:
        weights = {}
    if not isinstance(weights, Mapping) or not all(isinstance(v, Mapping) for v in weights.values()):
        raise TypeError("weights must be a dict {layer_name: {relative_path: array}}")
    cache: dict = {}
    new = _rebuild(model, make, cache)
    names = {n.name for _, news in cache.values() for n in news if not isinstance(n, keras.Model)}
    unused = sorted(set(weights) - names)
    if unused:
        raise ValueError(f"weights name layers {unused} that are not in the new model")
    _copy_weights(cache, lambda old, layer: weights.get(layer.name))
    return new


@_reads_once
def replace_layer(model: keras.Model, layer: Any, new_layers: Sequence[keras.layers.Layer],
                  weights: Sequence[Any]) -> keras.Model:
    """Replace one single-input layer by a chain of new layers with the given weights.

    Example (low rank): a Dense ``W`` of shape ``(n, m)`` with bias ``b`` becomes
    ``Dense(r, use_bias=False)`` with ``U (n, r)`` then ``Dense(m)`` with ``V (r, m)``
    and ``b``; the model computes ``x U V + b``. Works on any graph :func:`rewrite` takes.

    Args:
        model: a built Sequential or functional model.
        layer: name (or instance) of the layer to replace.
        new_layers: unbuilt Keras layers, applied in order; their names must not clash
            with the model's other layers.
        weights: one entry per new layer: a dict ``{relative_path: array}``, or a list of
            arrays in the order of that (new) layer's ``weights``.

    Returns:
        A new, uncompiled model; ``model`` is not changed.

    Raises:
        TypeError: ``new_layers`` holds something that is not an unbuilt Keras layer.
        ValueError: unknown layer, unsupported graph, built new layers, a count or shape
            mismatch between ``weights`` and the layers, a new chain whose output does
            not fit the layers after it, duplicate names.
    """
    check_model(model)
    _check_graph_model(model)
    target = _find_layer(model, layer)
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
    given = []
    for i, ws in enumerate(weights):
        if isinstance(ws, Mapping):
            given.append({k: check_array(w, f"weights[{i}][{k!r}]") for k, w in ws.items()})
        else:
            given.append([check_array(w, f"weights[{i}]") for w in ws])
    for node in target._inbound_nodes:
        if len(node.input_tensors) != 1:
            raise ValueError(f"layer {target.name!r} takes {len(node.input_tensors)} tensor inputs; "
                             "replace_layer replaces a single-input layer by a chain")
    others = {l.name for l in graph_layers(model) if l is not target}
    clash = sorted(others & {l.name for l in new_layers})
    if clash:
        raise ValueError(f"new layer names {clash} are already used in model {model.name!r}")
    cache: dict = {}
    new_model = _rebuild(model, lambda l: list(new_layers) if l is target else None, cache)
    by_layer = {}
    for new, ws in zip(new_layers, given):
        paths = list(_relative_variables(new))
        if isinstance(ws, list):
            if len(ws) != len(paths):
                raise ValueError(f"weights for layer {new.name!r}: {len(ws)} arrays given, the layer has "
                                 f"{len(paths)} weights {paths}")
            ws = dict(zip(paths, ws))
        missing = sorted(set(paths) - set(ws))
        if missing:
            raise ValueError(f"weights for layer {new.name!r} miss {missing}")
        by_layer[id(new)] = ws
    _copy_weights(cache, lambda old, layer: by_layer.get(id(layer)))
    if [tuple(o.shape[1:]) for o in new_model.outputs] != [tuple(o.shape[1:]) for o in model.outputs]:
        raise ValueError(f"replacing {target.name!r} changes the model's output shape from "
                         f"{[tuple(o.shape[1:]) for o in model.outputs]} to "
                         f"{[tuple(o.shape[1:]) for o in new_model.outputs]}")
    return new_model


def _find_layer(model: keras.Model, layer: Any, name: str = "layer") -> keras.layers.Layer:
    """A layer of ``model`` or of its nested sub-models, by name or instance."""
    layers = [l for l in model.layers if isinstance(l, keras.layers.InputLayer)] + graph_layers(model)
    if isinstance(layer, keras.layers.Layer):
        if any(l is layer for l in layers):
            return layer
        raise ValueError(f"{name} {layer.name!r} is not a layer of model {model.name!r}")
    if not isinstance(layer, str):
        raise TypeError(f"{name} must be a layer name (str) or a keras Layer, got {type(layer).__name__}")
    found = [l for l in layers if l.name == layer]
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{name} {layer!r} names {len(found)} layers (in nested models); pass the layer")
    if len(layers) > 40:
        listed = ", ".join(repr(l.name) for l in layers[:40]) + f", ... ({len(layers)} layers)"
    else:
        listed = ", ".join(repr(l.name) for l in layers)
    raise ValueError(f"{name} {layer!r} is not in model {model.name!r}; its layers are: {listed}")


# =======================================================================================
# Dependency groups: which channels are coupled
# =======================================================================================

@dataclasses.dataclass(frozen=True)
class _Space:
    """A run of slots: one tensor's channel axis, or one per-channel parameter axis of a layer."""

    id: int
    start: int
    size: int
    kind: str                      # "tensor" or "param"
    layer: Any = None              # the owning layer (param spaces)
    name: str = ""                 # "in", "out", "ch", "heads", ... (param spaces); tensor name
    role: str = ""                 # "producer", "consumer", "channel", "heads", "" (no weights)
    slices: tuple = ()             # ((relative weight path, axis, block), ...)
    tensor: Any = dataclasses.field(default=None, compare=False)   # the KerasTensor (tensor spaces)


@dataclasses.dataclass(eq=False)
class Member:
    """One layer's part in a dependency group.

    ``role`` is ``"producer"`` (the layer computes these channels: a Dense/conv output),
    ``"consumer"`` (it reads them through input rows of its kernel), ``"channel"`` (a
    per-channel layer with parameters: BatchNormalization, a depthwise kernel, PReLU) or
    ``"heads"`` (attention heads). ``index[u]`` lists, for unit ``u`` of the group, the
    positions along the layer's parameter axis that belong to it (several for a Dense after
    Flatten: one per spatial position). ``slices`` says which weights are cut along that
    axis: ``(relative_path, axis, block)``, position ``p`` covering entries
    ``p * block .. p * block + block - 1``.
    """

    layer: keras.layers.Layer
    space: str
    role: str
    index: np.ndarray
    slices: tuple

    def __repr__(self) -> str:
        return f"{self.layer.name}.{self.space} ({self.role})"

    def weight_slices(self) -> list[np.ndarray]:
        """The member's weights cut per unit: one ``(units, ...)`` array per sliced weight."""
        variables = _relative_variables(self.layer)
        out = []
        for path, axis, block in self.slices:
            w = np.moveaxis(_np(variables[path]), axis, 0)
            rows = (self.index[..., None] * block + np.arange(block)).reshape(self.index.shape[0], -1)
            out.append(w[rows].reshape(rows.shape[0], -1))
        return out


@dataclasses.dataclass(repr=False, eq=False)
class DependencyGroup:
    """Channels that must be removed together, and every layer they touch.

    Attributes:
        index: position in :func:`dependency_groups`' list.
        units: number of removable units (usually channels; a GroupNormalization group or
            a depthwise channel with its ``depth_multiplier`` outputs is one unit).
        members: the :class:`Member` of every layer with weights along these channels.
        layers: names of every layer the channels pass through (weighted or not).
        prunable: False when removing units would change something that must not change
            (a model input or output, a layer the analysis does not understand, ...).
        reason: why the group is not prunable ("" if it is).
        merge_reason: why neuron merging is not exact through the group ("" if it is).
        scalable: merging scaled copies (``w_j = c w_i``, ``c > 0``) is exact too: every
            layer on the way is positively homogeneous and has no per-channel parameters.
    """

    index: int
    units: int
    members: list
    layers: list
    prunable: bool
    reason: str
    merge_reason: str
    scalable: bool
    model: Any = None
    _spaces: list = dataclasses.field(default_factory=list)  # [(_Space, index (units, k))]
    read: list = dataclasses.field(default_factory=list)     # [(KerasTensor, index)] consumers read

    def activations(self, x: Any, batch_size: int = 256) -> list[np.ndarray]:
        """The group's channels on ``x``: one ``(examples, units, k)`` array per tensor its
        consumers read (``k`` positions per unit, e.g. spatial positions after a Flatten),
        with every other axis (positions in a feature map) flattened into the examples."""
        if not self.read:
            raise ValueError(f"group {self.index} ({self.root!r}) has no tensor in the outer graph that "
                             "a consumer reads; activation criteria cannot see its channels")
        probe = keras.Model(self.model.input, [t for t, _ in self.read])
        outs = _backend.predict(probe, x, batch_size=batch_size)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        result = []
        for a, (_, idx) in zip(outs, self.read):
            a = np.asarray(a).reshape(-1, np.shape(a)[-1])
            result.append(a[:, idx])
        return result

    @property
    def producers(self) -> list[str]:
        """Names of the layers that compute these channels."""
        return [m.layer.name for m in self.members if m.role == "producer"]

    @property
    def consumers(self) -> list[str]:
        """Names of the layers that read these channels through their kernels."""
        return [m.layer.name for m in self.members if m.role == "consumer"]

    @property
    def root(self) -> str:
        """A name for the group: its first producer (or first member, or first layer)."""
        names = self.producers or self.layers
        return names[0] if names else f"group {self.index}"

    @property
    def mergeable(self) -> bool:
        return self.prunable and not self.merge_reason

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"not prunable: {self.reason}"
        kind = "heads" if any(m.role == "heads" for m in self.members) else "channels"
        more = f", ... ({len(self.layers)} layers)" if len(self.layers) > 6 else ""
        shown = ", ".join(self.layers[:6]) + more
        return (f"<DependencyGroup {self.index}: {self.units} {kind} of {self.root!r}; {state}; "
                f"producers {self.producers}; through {shown}>")


class DependencyGroups(list):
    """The list :func:`dependency_groups` returns, printed as a readable table."""

    def __repr__(self) -> str:
        lines = [f"{'#':>3}  {'units':>5}  {'prunable':<8}  {'root':<24} layers"]
        for g in self:
            flag = "yes" if g.prunable else "no"
            shown = ", ".join(g.layers[:4]) + (", ..." if len(g.layers) > 4 else "")
            lines.append(f"{g.index:>3}  {g.units:>5}  {flag:<8}  {g.root[:24]:<24} {shown}")
            if not g.prunable:
                lines.append(f"{'':>3}  {'':>5}  {'':<8}  ({g.reason})")
        return "\n".join(lines)

    def prunable(self) -> "DependencyGroups":
        """Only the groups whose units can be removed."""
        return DependencyGroups(g for g in self if g.prunable)


class _Analysis:
    """Slots, links and flags collected while walking a graph (see :func:`dependency_groups`)."""

    def __init__(self) -> None:
        self.spaces: list[_Space] = []
        self.size = 0
        self.links_a: list[np.ndarray] = []
        self.links_b: list[np.ndarray] = []
        self.tensor_spaces: dict[int, _Space] = {}
        self.param_spaces: dict[tuple[int, str], _Space] = {}
        self.flags: list[tuple[str, np.ndarray, str]] = []   # (kind, slots, reason)
        self.tensor_names: dict[int, str] = {}
        self.visits: dict[int, list[str]] = {}                # space id -> layer names
        self.read: set[int] = set()                           # tensor spaces a consumer reads
        self.top: set[int] = set()                            # tensor spaces of the outer graph

    def _new(self, size: int, **kw) -> _Space:
        space = _Space(id=len(self.spaces), start=self.size, size=int(size), **kw)
        self.spaces.append(space)
        self.size += int(size)
        return space

    def tensor(self, x: Any) -> _Space:
        space = self.tensor_spaces.get(id(x))
        if space is None:
            shape = tuple(x.shape)
            size = shape[-1] if len(shape) >= 2 and isinstance(shape[-1], int) else 1
            space = self.tensor_spaces[id(x)] = self._new(size, kind="tensor", name=getattr(x, "name", ""),
                                                          tensor=x)
            if not (len(shape) >= 2 and isinstance(shape[-1], int)):
                self.flag("block", space, f"tensor {getattr(x, 'name', '?')} of shape {shape} has no "
                          "channel axis")
        return space

    def param(self, layer: Any, name: str, size: int, role: str = "", slices: tuple = ()) -> _Space:
        key = (id(layer), name)
        space = self.param_spaces.get(key)
        if space is None:
            space = self.param_spaces[key] = self._new(size, kind="param", layer=layer, name=name,
                                                        role=role, slices=tuple(slices))
        elif space.size != size:
            self.flag("block", space, f"shared layer {layer.name!r} is called with {space.size} and "
                      f"{size} channels")
        return space

    def slots(self, space: _Space) -> np.ndarray:
        return np.arange(space.start, space.start + space.size)

    def link(self, a: Any, b: Any) -> None:
        a = self.slots(a) if isinstance(a, _Space) else np.asarray(a)
        b = self.slots(b) if isinstance(b, _Space) else np.asarray(b)
        if a.size != b.size:
            raise AssertionError("link: slot counts differ")  # an internal invariant
        self.links_a.append(a)
        self.links_b.append(b)

    def flag(self, kind: str, where: Any, reason: str) -> None:
        slots = self.slots(where) if isinstance(where, _Space) else np.asarray(where)
        self.flags.append((kind, slots, reason))

    def visit(self, space: _Space, layer: Any) -> None:
        self.visits.setdefault(space.id, []).append(layer.name)


_HOMOGENEOUS_ACTIVATIONS = {"linear", "relu", "leaky_relu"}
_CROSS_CHANNEL_ACTIVATIONS = {"softmax", "log_softmax"}


def _activation_name(fn: Any) -> str:
    return getattr(fn, "__name__", str(fn))


def positively_homogeneous(layer: keras.layers.Layer) -> bool:
    """``f(c x) = c f(x)`` for every ``c > 0``: what an exact *scaled* neuron merge needs.

    True for ReLU without a cap or threshold, LeakyReLU, linear activations, pooling,
    dropout, reshaping, padding and the linear merges (Add, Subtract, Average, Concatenate,
    Maximum, Minimum); False for ELU, tanh, sigmoid, ReLU6, softmax, BatchNormalization
    (an affine map per channel) and anything unknown.
    """
    L = keras.layers
    if isinstance(layer, L.ReLU):
        return layer.max_value is None and float(layer.threshold) == 0.0 and float(layer.negative_slope) >= 0
    if isinstance(layer, L.LeakyReLU):
        return True
    if isinstance(layer, L.Activation):
        return _activation_name(layer.activation) in _HOMOGENEOUS_ACTIVATIONS
    if isinstance(layer, _HOMOGENEOUS_TYPES):
        return True
    if isinstance(layer, (L.Dense, L.EinsumDense)) or _is_conv(layer):
        return _activation_name(getattr(layer, "activation", None)) in _HOMOGENEOUS_ACTIVATIONS
    return False


def _is_conv(layer: Any) -> bool:
    from keras.src.layers.convolutional.base_conv import BaseConv
    from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
    return isinstance(layer, (BaseConv, BaseConvTranspose))


def _pass_types() -> tuple:
    L = keras.layers
    names = ["Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
             "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity", "Masking",
             "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
             "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
             "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
             "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
             "UpSampling1D", "UpSampling2D", "UpSampling3D", "RepeatVector", "ReLU", "LeakyReLU", "ELU",
             "Activation", "Rescaling", "UnitNormalization", "Resizing", "CenterCrop"]
    return tuple(getattr(L, n) for n in names if hasattr(L, n))


_PASS_TYPES = _pass_types()
_HOMOGENEOUS_TYPES = tuple(t for t in _PASS_TYPES if t.__name__ not in
                           ("ELU", "Activation", "ReLU", "LeakyReLU", "Rescaling", "UnitNormalization",
                            "GaussianNoise", "Masking", "Resizing", "CenterCrop"))
_ELEMENTWISE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
_OP_ELEMENTWISE = ("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Divide", "TrueDivide")
_OP_UNARY = ("Relu", "Relu6", "Sigmoid", "Tanh", "Silu", "Gelu", "Elu", "Selu", "LeakyRelu",
             "HardSigmoid", "HardSilu", "Softplus", "Abs", "Negative", "Square", "Sqrt", "Exp", "Log")
_HOMOGENEOUS_OPS = ("Add", "Subtract", "Maximum", "Minimum", "Relu", "LeakyRelu", "Negative", "Abs")

SUPPORTED = ("Dense, EinsumDense (a contracted or produced last axis), Conv1D/2D/3D, "
             "Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D, Embedding, "
             "BatchNormalization, LayerNormalization, GroupNormalization, PReLU, Normalization, "
             "MultiHeadAttention, Add/Subtract/Multiply/Average/Maximum/Minimum (broadcasting "
             "inputs included), Concatenate, Flatten, Reshape (keeping or merging the channel axis), "
             "Permute (keeping it last), pooling, padding, cropping, upsampling, dropout, noise, "
             "activations, Rescaling, nested functional/Sequential models")
"""The layers :func:`dependency_groups` understands; any other layer blocks its channels."""


def _couple_identity(an: _Analysis, layer, node, space: _Space | None = None) -> None:
    """Output channel ``c`` is input channel ``c`` (a per-channel layer)."""
    x, y = an.tensor(node.input_tensors[0]), an.tensor(node.outputs[0])
    if x.size != y.size:
        an.flag("block", x, f"layer {layer.name!r} changes the channel count {x.size} -> {y.size}")
        an.flag("block", y, f"layer {layer.name!r} changes the channel count {x.size} -> {y.size}")
        return
    an.link(x, y)
    if space is not None:
        an.link(x, space)


def _weighted_checks(an: _Analysis, layer, node, allowed: Iterable[str]) -> bool:
    extra = sorted(set(_relative_variables(layer)) - set(allowed))
    fmt = getattr(layer, "data_format", "channels_last")
    reason = ""
    if extra:
        reason = (f"layer {layer.name!r} holds extra variables {extra}; make it a plain Keras layer first "
                  "(compressnet_lite.pruning.strip, clustering.strip_clustering, storage.plain_model)")
    elif fmt != "channels_last":
        reason = f"layer {layer.name!r} uses data_format={fmt!r}; channels_last only"
    if reason:
        for t in list(node.input_tensors) + list(node.outputs):
            an.flag("block", an.tensor(t), reason)
        return False
    return True


def _act_flags(an: _Analysis, layer, space: _Space) -> None:
    act = _activation_name(getattr(layer, "activation", None))
    if act in _CROSS_CHANNEL_ACTIVATIONS:
        an.flag("block", space, f"layer {layer.name!r} applies {act} across channels")
    elif act not in _HOMOGENEOUS_ACTIVATIONS:
        an.flag("noscale", space, f"layer {layer.name!r} applies {act}")


def _rule_dense(an, layer, node):
    if not _weighted_checks(an, layer, node, ("kernel", "bias")):
        return
    n_in, n_out = (int(d) for d in layer.kernel.shape)
    bias = (("bias", 0, 1),) if layer.use_bias else ()
    sin = an.param(layer, "in", n_in, "consumer", (("kernel", 0, 1),))
    sout = an.param(layer, "out", n_out, "producer", (("kernel", 1, 1),) + bias)
    an.link(an.tensor(node.input_tensors[0]), sin)
    an.link(an.tensor(node.outputs[0]), sout)
    _act_flags(an, layer, sout)


def _rule_conv(an, layer, node):
    if not _weighted_checks(an, layer, node, ("kernel", "bias")):
        return
    if getattr(layer, "groups", 1) != 1:
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t), f"layer {layer.name!r} is a grouped convolution "
                    f"(groups={layer.groups})")
        return
    k = layer.kernel.shape
    transpose = type(layer).__name__.endswith("Transpose")
    a_in, a_out = (k.__len__() - 1, k.__len__() - 2) if transpose else (k.__len__() - 2, k.__len__() - 1)
    bias = (("bias", 0, 1),) if layer.use_bias else ()
    sin = an.param(layer, "in", int(k[a_in]), "consumer", (("kernel", a_in, 1),))
    sout = an.param(layer, "out", int(k[a_out]), "producer", (("kernel", a_out, 1),) + bias)
    an.link(an.tensor(node.input_tensors[0]), sin)
    an.link(an.tensor(node.outputs[0]), sout)
    _act_flags(an, layer, sout)


def _rule_depthwise(an, layer, node):
    if not _weighted_checks(an, layer, node, ("kernel", "bias")):
        return
    k = layer.kernel.shape            # (..., channels, multiplier)
    c, m = int(k[-2]), int(k[-1])
    ch = an.param(layer, "ch", c, "channel", (("kernel", len(k) - 2, 1),))
    x, y = an.tensor(node.input_tensors[0]), an.tensor(node.outputs[0])
    an.link(x, ch)
    out_slots = an.slots(y).reshape(c, m)
    for j in range(m):
        an.link(an.slots(x), out_slots[:, j])
    if layer.use_bias:
        an.param(layer, "bias", c * m, "channel", (("bias", 0, 1),))
        an.link(y, an.param_spaces[(id(layer), "bias")])
    an.flag("noscale", y, f"layer {layer.name!r} applies its own kernel to each channel")
    _act_flags(an, layer, y)


def _rule_separable(an, layer, node):
    if not _weighted_checks(an, layer, node, ("depthwise_kernel", "pointwise_kernel", "bias")):
        return
    dk, pk = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
    c, m = int(dk[-2]), int(dk[-1])
    nd = len(dk)
    bias = (("bias", 0, 1),) if layer.use_bias else ()
    sin = an.param(layer, "in", c, "consumer",
                   (("depthwise_kernel", nd - 2, 1), ("pointwise_kernel", nd - 2, m)))
    sout = an.param(layer, "out", int(pk[-1]), "producer", (("pointwise_kernel", nd - 1, 1),) + bias)
    an.link(an.tensor(node.input_tensors[0]), sin)
    an.link(an.tensor(node.outputs[0]), sout)
    _act_flags(an, layer, sout)


def _rule_embedding(an, layer, node):
    if not _weighted_checks(an, layer, node, ("embeddings",)):
        return
    sout = an.param(layer, "out", int(layer.embeddings.shape[1]), "producer", (("embeddings", 1, 1),))
    an.link(an.tensor(node.outputs[0]), sout)


def _rule_einsum(an, layer, node):
    if not _weighted_checks(an, layer, node, ("kernel", "bias")):
        return
    equation = layer.equation.replace(" ", "")
    try:
        lhs, out_spec = equation.split("->")
        in_spec, k_spec = lhs.split(",")
    except ValueError:
        in_spec = k_spec = out_spec = ""
    x, y = an.tensor(node.input_tensors[0]), an.tensor(node.outputs[0])
    if not (in_spec and k_spec and out_spec) or "." in equation:
        reason = f"layer {layer.name!r}: EinsumDense equation {layer.equation!r} is not understood"
        an.flag("block", x, reason), an.flag("block", y, reason)
        return
    c_in, c_out = in_spec[-1], out_spec[-1]
    if c_in in k_spec and c_in not in out_spec:
        an.link(x, an.param(layer, "in", int(layer.kernel.shape[k_spec.index(c_in)]), "consumer",
                            (("kernel", k_spec.index(c_in), 1),)))
    elif c_in == c_out and c_in not in k_spec:
        an.link(x, y)
    else:
        an.flag("block", x, f"layer {layer.name!r}: equation {layer.equation!r} does not contract the "
                "input's channel axis")
    if c_out in k_spec and c_out not in in_spec:
        slices = [("kernel", k_spec.index(c_out), 1)]
        bias_axes = layer.bias_axes or ""
        if c_out in bias_axes:
            slices.append(("bias", bias_axes.index(c_out), 1))
        elif bias_axes:
            an.flag("block", y, f"layer {layer.name!r}: bias axes {bias_axes!r} do not include the "
                    "output axis")
            return
        sout = an.param(layer, "out", int(layer.kernel.shape[k_spec.index(c_out)]), "producer", tuple(slices))
        an.link(y, sout)
        _act_flags(an, layer, sout)
    elif not (c_in == c_out and c_in not in k_spec):
        an.flag("block", y, f"layer {layer.name!r}: equation {layer.equation!r} does not produce the "
                "output's channel axis from the kernel")


def _rule_batchnorm(an, layer, node):
    if not _weighted_checks(an, layer, node, ("gamma", "beta", "moving_mean", "moving_variance")):
        return
    rank = len(node.input_tensors[0].shape)
    if layer.axis not in (-1, rank - 1) and list(np.atleast_1d(layer.axis)) != [rank - 1]:
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t),
                    f"layer {layer.name!r} normalises axis {layer.axis}, not the channels")
        return
    paths = [p for p in ("gamma", "beta", "moving_mean", "moving_variance")
             if p in _relative_variables(layer)]
    ch = an.param(layer, "ch", int(node.input_tensors[0].shape[-1]), "channel",
                  tuple((p, 0, 1) for p in paths))
    _couple_identity(an, layer, node, ch)
    an.flag("noscale", ch, f"layer {layer.name!r} is an affine map per channel")


def _rule_layernorm(an, layer, node):
    if not _weighted_checks(an, layer, node, ("gamma", "beta")):
        return
    rank = len(node.input_tensors[0].shape)
    axes = [a % rank for a in np.atleast_1d(layer.axis)]
    if axes != [rank - 1]:
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t),
                    f"layer {layer.name!r} normalises axes {layer.axis}, not the channels alone")
        return
    paths = [p for p in ("gamma", "beta") if p in _relative_variables(layer)]
    ch = an.param(layer, "ch", int(node.input_tensors[0].shape[-1]), "channel",
                  tuple((p, 0, 1) for p in paths))
    _couple_identity(an, layer, node, ch)
    an.flag("nomerge", ch,
            f"layer {layer.name!r} normalises across channels: removing one changes the others")


def _rule_groupnorm(an, layer, node):
    if not _weighted_checks(an, layer, node, ("gamma", "beta")):
        return
    c, g = int(node.input_tensors[0].shape[-1]), int(layer.groups)
    if layer.axis not in (-1, len(node.input_tensors[0].shape) - 1):
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t), f"layer {layer.name!r} normalises axis {layer.axis}")
        return
    paths = [p for p in ("gamma", "beta") if p in _relative_variables(layer)]
    ch = an.param(layer, "ch", c, "channel", tuple((p, 0, 1) for p in paths))
    _couple_identity(an, layer, node, ch)
    per = c // g
    slots = an.slots(ch).reshape(g, per)
    for j in range(1, per):  # a unit is a whole group: its channels go together
        an.link(slots[:, 0], slots[:, j])
    an.flag("nomerge", ch, f"layer {layer.name!r} normalises groups of channels")


def _rule_prelu(an, layer, node):
    if not _weighted_checks(an, layer, node, ("alpha",)):
        return
    alpha = layer.alpha.shape
    if int(alpha[-1]) == 1:
        _couple_identity(an, layer, node)
        return
    ch = an.param(layer, "ch", int(alpha[-1]), "channel", (("alpha", len(alpha) - 1, 1),))
    _couple_identity(an, layer, node, ch)
    an.flag("noscale", ch, f"layer {layer.name!r} has a slope per channel")


def _rule_normalization(an, layer, node):
    variables = _relative_variables(layer)
    if not _weighted_checks(an, layer, node, ("mean", "variance", "count")):
        return
    rank = len(node.input_tensors[0].shape)
    axes = [a % rank for a in np.atleast_1d(layer.axis)] if layer.axis is not None else []
    if axes != [rank - 1]:
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t), f"layer {layer.name!r} normalises axes {layer.axis}")
        return
    paths = tuple((p, len(variables[p].shape) - 1, 1) for p in ("mean", "variance") if p in variables)
    ch = an.param(layer, "ch", int(node.input_tensors[0].shape[-1]), "channel", paths)
    _couple_identity(an, layer, node, ch)
    an.flag("noscale", ch, f"layer {layer.name!r} is an affine map per channel")


def _rule_pass(an, layer, node):
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last":
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t), f"layer {layer.name!r} uses data_format={cfg['data_format']!r}")
        return
    if isinstance(layer, keras.layers.Rescaling) and (np.size(cfg.get("scale", 1)) > 1 or
                                                      np.size(cfg.get("offset", 0)) > 1):
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t), f"layer {layer.name!r} rescales each channel differently")
        return
    _couple_identity(an, layer, node)
    y = an.tensor(node.outputs[0])
    if isinstance(layer, keras.layers.Activation):
        act = _activation_name(layer.activation)
        if act in _CROSS_CHANNEL_ACTIVATIONS:
            an.flag("block", y, f"layer {layer.name!r} applies {act} across channels")
            an.flag("block", an.tensor(node.input_tensors[0]),
                    f"layer {layer.name!r} applies {act} across channels")
    if isinstance(layer, keras.layers.UnitNormalization):
        an.flag("nomerge", y, f"layer {layer.name!r} normalises across channels")
    if not positively_homogeneous(layer):
        an.flag("noscale", y, f"layer {layer.name!r} ({type(layer).__name__}) is not positively homogeneous")


def _rule_softmax(an, layer, node):
    rank = len(node.input_tensors[0].shape)
    if [a % rank for a in np.atleast_1d(layer.axis)] == [rank - 1]:
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t), f"layer {layer.name!r} applies softmax across channels")
    else:
        _couple_identity(an, layer, node)
        an.flag("noscale", an.tensor(node.outputs[0]), f"layer {layer.name!r} applies softmax")


def _elementwise(an, name, node, homogeneous: bool, label: str):
    y = an.tensor(node.outputs[0])
    for x in node.input_tensors:
        sx = an.tensor(x)
        if sx.size == y.size:
            an.link(sx, y)
        elif sx.size != 1:
            reason = f"{label} {name!r} combines {sx.size} and {y.size} channels"
            an.flag("block", sx, reason), an.flag("block", y, reason)
    if not homogeneous:
        an.flag("noscale", y, f"{label} {name!r} multiplies its inputs")


def _rule_merge(an, layer, node):
    kind = type(layer).__name__
    if kind == "Concatenate":
        _rule_concat(an, layer, node)
        return
    homogeneous = kind != "Multiply" or sum(an.tensor(t).size > 1 for t in node.input_tensors) <= 1
    _elementwise(an, layer.name, node, homogeneous, "layer")


def _rule_concat(an, layer, node):
    y = an.tensor(node.outputs[0])
    rank = len(node.outputs[0].shape)
    if layer.axis % rank != rank - 1:
        _elementwise(an, layer.name, node, True, "layer")
        return
    offset = 0
    for x in node.input_tensors:
        sx = an.tensor(x)
        an.link(sx, an.slots(y)[offset:offset + sx.size])
        offset += sx.size


def _rule_flatten(an, layer, node):
    x, y = an.tensor(node.input_tensors[0]), an.tensor(node.outputs[0])
    if x.size * max(1, y.size // max(x.size, 1)) != y.size:
        an.flag("block", x, f"layer {layer.name!r}: cannot map channels through it")
        an.flag("block", y, f"layer {layer.name!r}: cannot map channels through it")
        return
    positions = y.size // x.size
    out = an.slots(y).reshape(positions, x.size)   # channels-last: index p * C + c
    for p in range(positions):
        an.link(an.slots(x), out[p])
    if positions > 1:
        an.param(layer, "reshape", x.size)       # config follows the channel count
        an.link(x, an.param_spaces[(id(layer), "reshape")])


def _rule_reshape(an, layer, node):
    x_shape = tuple(node.input_tensors[0].shape[1:])
    y_shape = tuple(node.outputs[0].shape[1:])
    x, y = an.tensor(node.input_tensors[0]), an.tensor(node.outputs[0])
    if None not in x_shape + y_shape and x_shape and y_shape:
        c = x_shape[-1]
        if y_shape[-1] == c:
            an.link(x, y)
            an.link(x, an.param(layer, "reshape", c))
            return
        merged = any(int(np.prod(x_shape[k:])) == y_shape[-1] for k in range(len(x_shape)))
        if y_shape[-1] % c == 0 and merged:
            _rule_flatten(an, layer, node)
            return
    reason = f"layer {layer.name!r} reshapes {x_shape} -> {y_shape}: the channel axis is split or moved"
    an.flag("block", x, reason), an.flag("block", y, reason)


def _rule_permute(an, layer, node):
    dims = tuple(layer.dims)
    if dims and dims[-1] == len(dims):
        _couple_identity(an, layer, node)
    else:
        for t in (node.input_tensors[0], node.outputs[0]):
            an.flag("block", an.tensor(t), f"layer {layer.name!r} permutes the channel axis away")


def _rule_mha(an, layer, node):
    variables = _relative_variables(layer)
    allowed = [p for p in variables if p.split("/")[0] in ("query", "key", "value", "gate",
                                                         "attention_output")]
    if not _weighted_checks(an, layer, node, allowed):
        return
    args = node.arguments
    tensors = keras.tree.flatten(args.args)
    query = tensors[0] if tensors else args.kwargs.get("query")
    value = tensors[1] if len(tensors) > 1 else args.kwargs.get("value")
    key = tensors[2] if len(tensors) > 2 else args.kwargs.get("key")
    key = value if key is None else key
    heads = int(layer.num_heads)
    head_slices = [("attention_output/kernel", 0, 1)]
    for name in ("query", "key", "value", "gate"):
        if f"{name}/kernel" in variables:
            head_slices.append((f"{name}/kernel", 1, 1))
            if f"{name}/bias" in variables:
                head_slices.append((f"{name}/bias", 0, 1))
    an.flag("nomerge", an.param(layer, "heads", heads, "heads", tuple(head_slices)),
            f"attention heads of {layer.name!r} are removed, not merged")
    q_rows = [("query/kernel", 0, 1)] + ([("gate/kernel", 0, 1)] if "gate/kernel" in variables else [])
    sq = an.param(layer, "query", int(variables["query/kernel"].shape[0]), "consumer", tuple(q_rows))
    sk = an.param(layer, "key", int(variables["key/kernel"].shape[0]), "consumer", (("key/kernel", 0, 1),))
    sv = an.param(layer, "value", int(variables["value/kernel"].shape[0]), "consumer",
                  (("value/kernel", 0, 1),))
    out_k = variables["attention_output/kernel"]
    out_slices = [("attention_output/kernel", len(out_k.shape) - 1, 1)]
    if "attention_output/bias" in variables:
        out_slices.append(("attention_output/bias", 0, 1))
    so = an.param(layer, "out", int(out_k.shape[-1]), "producer", tuple(out_slices))
    an.link(an.tensor(query), sq), an.link(an.tensor(value), sv), an.link(an.tensor(key), sk)
    out = node.outputs[0]
    an.link(an.tensor(out), so)
    if layer._output_shape is None:   # the output size follows the query's
        an.link(sq, so)
    if len(node.outputs) > 1:  # attention scores returned: heads are an output axis
        an.flag("block", an.param_spaces[(id(layer), "heads")], f"layer {layer.name!r} returns its scores")


def _rule_op(an, op, node):
    kind = type(op).__name__
    if kind in _OP_ELEMENTWISE:
        _elementwise(an, kind.lower(), node, kind in _HOMOGENEOUS_OPS, "operation")
    elif kind in _OP_UNARY and len(node.input_tensors) == 1:
        x, y = an.tensor(node.input_tensors[0]), an.tensor(node.outputs[0])
        if x.size == y.size:
            an.link(x, y)
            if kind not in _HOMOGENEOUS_OPS:
                an.flag("noscale", y, f"operation {kind} is not positively homogeneous")
            return
        _unknown(an, op, node)
    else:
        _unknown(an, op, node)


def _unknown(an, op, node):
    name = getattr(op, "name", type(op).__name__)
    reason = f"layer {name!r} ({type(op).__name__}) is not understood by the dependency analysis"
    for t in list(node.input_tensors) + list(node.outputs):
        an.flag("block", an.tensor(t), reason)


def _rule_for(layer: Any) -> Callable | None:
    L = keras.layers
    if isinstance(layer, L.MultiHeadAttention):
        return _rule_mha
    if type(layer).__name__ in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return _rule_depthwise
    if type(layer).__name__ in ("SeparableConv1D", "SeparableConv2D"):
        return _rule_separable
    if _is_conv(layer):
        return _rule_conv
    table = [(L.EinsumDense, _rule_einsum), (L.Dense, _rule_dense), (L.Embedding, _rule_embedding),
             (L.BatchNormalization, _rule_batchnorm), (L.LayerNormalization, _rule_layernorm),
             (L.GroupNormalization, _rule_groupnorm), (L.PReLU, _rule_prelu),
             (L.Normalization, _rule_normalization), (L.Softmax, _rule_softmax),
             (L.Flatten, _rule_flatten), (L.Reshape, _rule_reshape), (L.Permute, _rule_permute),
             (L.Concatenate, _rule_merge)]
    for cls, rule in table:
        if isinstance(layer, cls):
            return rule
    if type(layer).__name__ in _ELEMENTWISE and isinstance(layer, L.Layer):
        return _rule_merge
    if isinstance(layer, _PASS_TYPES):
        return _rule_pass
    return None


def _walk(an: _Analysis, model: keras.Model, layers_of: dict, top: bool = True) -> None:
    """Apply each node's rule; nested models are walked with their inputs/outputs linked."""
    for node in _nodes(model):
        op = node.operation
        if node.is_input:
            continue
        if isinstance(op, keras.layers.Layer):
            layers_of.setdefault(id(op), op)
        if _is_graph_model(op):
            inner = _graph(op)
            for outer, inner_x in zip(node.input_tensors, inner.inputs):
                an.link(an.tensor(outer), an.tensor(inner_x))
            _walk(an, op, layers_of, top=False)
            for outer, inner_y in zip(node.outputs, inner.outputs):
                an.link(an.tensor(outer), an.tensor(inner_y))
            continue
        rule = _rule_for(op) if isinstance(op, keras.layers.Layer) else _rule_op
        before = len(an.spaces)
        if rule is None:
            _unknown(an, op, node)
        else:
            rule(an, op, node)
        for t in list(node.input_tensors) + list(node.outputs):
            an.visit(an.tensor(t), op)
            if top:
                an.top.add(an.tensor(t).id)
        for space in an.spaces[before:]:
            if space.kind == "param":
                an.visit(space, op)
        if any(an.param_spaces.get((id(op), name)) is not None and an.param_spaces[(id(op), name)].role ==
               "consumer" for name in ("in", "query", "key", "value")):
            for t in node.input_tensors:
                an.read.add(an.tensor(t).id)


def _components(an: _Analysis) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = an.size
    if an.links_a:
        a, b = np.concatenate(an.links_a), np.concatenate(an.links_b)
    else:
        a = b = np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _analyse(model: keras.Model, prune_inputs: bool = False, prune_outputs: bool = False):
    an = _Analysis()
    graph = _graph(model)
    for x in graph.inputs:
        space = an.tensor(x)
        an.visit(space, x._keras_history.operation)
        if not prune_inputs:
            an.flag("block", space, f"it reaches model input {x._keras_history.operation.name!r} "
                    "(inputs are never pruned unless prune_inputs=True)")
    layers_of: dict = {}
    _walk(an, model, layers_of)
    for y in graph.outputs:
        if not prune_outputs:
            an.flag("block", an.tensor(y), f"it reaches model output {y._keras_history.operation.name!r} "
                    "(outputs are not "
                    "pruned unless prune_outputs=True)")
    return an


@_reads_once
def dependency_groups(model: keras.Model, *, prune_inputs: bool = False,
                      prune_outputs: bool = False) -> DependencyGroups:
    """The coupled channel groups of a Sequential or functional model (nested models included).

    A group is a set of units (channels) that can only be removed together, with every
    layer whose weights or shape change when they are: the producers that compute them, the
    consumers that read them, per-channel layers in between, merges and concatenations
    joining branches. See the module docstring for how it is computed; :data:`SUPPORTED`
    lists the layers it understands. Groups that touch a model input or output, or a layer it
    does not understand, are listed with ``prunable=False`` and the reason.

    Args:
        model: a built Sequential or functional model.
        prune_inputs / prune_outputs: allow groups that reach a model input / output.

    Returns:
        A :class:`DependencyGroups` list (prints as a table), in graph order.

    Raises:
        TypeError / ValueError: not a built Sequential or functional model, NaN weights.

    Example:
        >>> import compressnet_lite as cnl
        >>> groups = dependency_groups(cnl.models.seed_mlp())
        >>> [(g.root, g.units, g.prunable) for g in groups]
        [('input', 64, False), ('fc1', 64, True), ('fc2', 32, True), ('out', 10, False)]
    """
    check_model(model)
    _check_graph_model(model, "dependency_groups")
    an = _analyse(model, prune_inputs, prune_outputs)
    labels = _components(an)
    n = an.size
    space_of = np.empty(n, np.int64)
    for s in an.spaces:
        space_of[s.start:s.start + s.size] = s.id
    flags = {k: np.zeros(n, bool) for k in ("block", "noscale", "nomerge")}
    first_reason: dict[str, dict[int, str]] = {k: {} for k in flags}
    for kind, slots, reason in an.flags:
        flags[kind][slots] = True
        for lab in np.unique(labels[slots]):
            first_reason[kind].setdefault(int(lab), reason)
    # signature of a component: the spaces it touches
    order = np.lexsort((space_of, labels))
    pairs = np.stack([labels[order], space_of[order]], 1)
    keep = np.ones(len(pairs), bool)
    keep[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    pairs = pairs[keep]
    bounds = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0], True])
    by_signature: dict[tuple, list[int]] = {}
    for i in range(len(bounds) - 1):
        chunk = pairs[bounds[i]:bounds[i + 1]]
        by_signature.setdefault(tuple(chunk[:, 1].tolist()), []).append(int(chunk[0, 0]))
    # order groups by their first slot (graph order), units by their first slot too
    n_labels = int(labels.max()) + 1 if n else 0
    first_slot = np.full(n_labels, n, np.int64)
    np.minimum.at(first_slot, labels, np.arange(n))
    ordered = sorted(by_signature.items(), key=lambda kv: min(first_slot[c] for c in kv[1]))
    label_group = np.full(n_labels, -1, np.int64)
    label_unit = np.full(n_labels, -1, np.int64)
    for gi, (_, comps) in enumerate(ordered):
        comps.sort(key=lambda c: first_slot[c])
        label_group[comps] = gi
        label_unit[comps] = np.arange(len(comps))
    slot_group, slot_unit = label_group[labels], label_unit[labels]
    by_group = np.argsort(slot_group, kind="stable")
    cuts = np.searchsorted(slot_group[by_group], np.arange(len(ordered) + 1))
    groups = []
    for gi, (signature, comps) in enumerate(ordered):
        slot_ids = by_group[cuts[gi]:cuts[gi + 1]]
        unit_of = slot_unit[slot_ids]
        spaces, irregular = [], False
        for sid in signature:
            space = an.spaces[sid]
            sel = space_of[slot_ids] == sid
            pos, units_here = slot_ids[sel] - space.start, unit_of[sel]
            counts = np.bincount(units_here, minlength=len(comps))
            if counts.min() != counts.max():
                irregular = True
                break
            o = np.lexsort((pos, units_here))
            spaces.append((space, pos[o].reshape(len(comps), counts[0])))
        reason = ""
        blocked = flags["block"][slot_ids].any() or irregular
        if irregular:
            reason = "its channels map unevenly onto some layer"
        elif blocked:
            lab = next(int(l) for l in comps if int(l) in first_reason["block"])
            reason = first_reason["block"][lab]
        merge_reason = ""
        if flags["nomerge"][slot_ids].any():
            lab = next(int(l) for l in comps if int(l) in first_reason["nomerge"])
            merge_reason = first_reason["nomerge"][lab]
        members = [Member(s.layer, s.name, s.role, idx, s.slices)
                   for s, idx in spaces if s.kind == "param" and s.slices]
        layer_names = []
        for s, _ in spaces:
            for name in an.visits.get(s.id, []):
                if name not in layer_names:
                    layer_names.append(name)
        has_channel_params = any(m.role in ("channel",) for m in members)
        scalable = not flags["noscale"][slot_ids].any() and not has_channel_params
        read = [(s.tensor, idx) for s, idx in spaces
                if s.kind == "tensor" and s.id in an.read and s.id in an.top]
        groups.append(DependencyGroup(len(groups), len(comps), members, layer_names, not blocked, reason,
                                      merge_reason, scalable, model, spaces, read))
    return DependencyGroups(groups)


@_reads_once
def group_of(model: keras.Model, layer: Any,
             groups: Sequence[DependencyGroup] | None = None) -> DependencyGroup:
    """The dependency group of ``layer``'s *output* channels (the group it produces); for
    MultiHeadAttention, the group of its heads.

    Raises:
        ValueError: unknown layer, or a layer that produces no channel group (no weights
            along its output channels: e.g. an activation or a BatchNormalization).
    """
    target = _find_layer(model, layer)
    groups = dependency_groups(model) if groups is None else groups
    for role in ("heads", "producer"):   # attention: its heads, rather than its output channels
        for g in groups:
            if any(m.layer is target and m.role == role for m in g.members):
                return g
    for g in groups:  # a layer the analysis refused: say why
        if not g.prunable and target.name in g.layers and f"{target.name!r}" in g.reason:
            raise ValueError(f"the outputs of layer {target.name!r} cannot be pruned: {g.reason}")
    raise ValueError(f"layer {target.name!r} ({type(target).__name__}) produces no channel group: only "
                     "layers with weights along their output channels (Dense, convolutions, EinsumDense, "
                     "Embedding, MultiHeadAttention) do")


# =======================================================================================
# Removing (and folding) units of dependency groups
# =======================================================================================

def _rows(idx: np.ndarray, block: int) -> np.ndarray:
    """Row indices along a weight axis: ``(units, k)`` positions -> ``(units, k * block)`` rows."""
    return (idx[..., None] * block + np.arange(block)).reshape(idx.shape[0], idx.shape[1] * block)


def _resolve_groups(model: keras.Model, items: Iterable[Any]) -> list[DependencyGroup]:
    items = list(items)
    if all(isinstance(g, DependencyGroup) and g.model is model for g in items):
        return items
    groups = dependency_groups(model)
    out = []
    for g in items:
        if isinstance(g, DependencyGroup):
            if g.model is not model:
                raise ValueError(f"group {g.index} ({g.root!r}) belongs to another model; compute "
                                 f"dependency_groups(model) for model {model.name!r}")
            out.append(g)
        elif isinstance(g, (int, np.integer)) and not isinstance(g, bool):
            if not 0 <= int(g) < len(groups):
                raise ValueError(f"group index {g} is out of range: model {model.name!r} has "
                                 f"{len(groups)} groups")
            out.append(groups[int(g)])
        elif isinstance(g, (str, keras.layers.Layer)):
            out.append(group_of(model, g, groups))
        else:
            raise TypeError(f"groups are given as DependencyGroup, group index or producer layer name, "
                            f"got {type(g).__name__}")
    return out


def _new_config(layer: keras.layers.Layer, kept: dict[str, int], sizes: dict[str, int]) -> dict:
    cfg = layer.get_config()
    L = keras.layers
    if "out" in kept:
        n = kept["out"]
        if isinstance(layer, L.MultiHeadAttention):
            shape = cfg.get("output_shape")
            if shape is not None:
                cfg["output_shape"] = n if isinstance(shape, int) else tuple(shape[:-1]) + (n,)
        elif isinstance(layer, L.EinsumDense):
            shape = cfg["output_shape"]
            cfg["output_shape"] = n if isinstance(shape, int) else tuple(shape[:-1]) + (n,)
        elif isinstance(layer, L.Embedding):
            cfg["output_dim"] = n
        elif isinstance(layer, L.Dense):
            cfg["units"] = n
        elif "filters" in cfg:
            cfg["filters"] = n
    if "heads" in kept:
        cfg["num_heads"] = kept["heads"]
    if isinstance(layer, L.GroupNormalization) and "ch" in kept:
        cfg["groups"] = int(cfg["groups"]) * kept["ch"] // sizes["ch"]
    if isinstance(layer, L.Reshape) and "reshape" in kept:
        target = tuple(cfg["target_shape"])
        cfg["target_shape"] = target[:-1] + (target[-1] // sizes["reshape"] * kept["reshape"],)
    return cfg


def keep_channels(model: keras.Model, keep: Mapping[Any, Any], *, fold: Mapping[Any, Any] | None = None,
                  incoming: Mapping[Any, Any] | None = None) -> keras.Model:
    """Keep the given units of dependency groups; every member layer is cut to match.

    Producers lose the removed output channels, consumers the matching input rows (at every
    spatial position after a Flatten), per-channel layers (BatchNormalization, depthwise
    kernels, ...) the matching entries, attention the removed heads; shapes in configs
    (units, filters, num_heads, Reshape targets, GroupNormalization groups) follow. With
    the default selection the new model computes exactly what the old one computes when
    the removed units' outgoing weights are zero.

    Args:
        model: a built Sequential or functional model.
        keep: ``{group: sorted unique unit indices to keep}``; a group is given as a
            :class:`DependencyGroup` of ``dependency_groups(model)``, its index, or the name
            of its producer layer. At least one unit per group.
        fold: optional ``{group: (units, len(keep)) matrix}``: each consumer's input rows
            become ``new_rows[k] = sum_u fold[u, k] * old_rows[u]`` (neuron merging).
        incoming: optional ``{group: (len(keep), d) array}``: new values of the kept units'
            incoming weights, laid out as :meth:`DependencyGroup.incoming` returns them
            (cluster centroids when merging by k-means).

    Returns:
        A new, uncompiled model with the same layer names; ``model`` is not changed.

    Raises:
        TypeError / ValueError: unknown group, a group that is not prunable (the message
            says why), bad ``keep``/``fold``/``incoming`` shapes, a fold for a group whose
            merge is not exact (``merge_reason``).
    """
    with reading():
        check_model(model)
        _check_graph_model(model)
        if not isinstance(keep, Mapping):
            raise TypeError(f"keep must be a dict {{group: unit indices}}, got {type(keep).__name__}")
        return _keep_channels(model, keep, fold, incoming)


def _keep_channels(model, keep, fold, incoming) -> keras.Model:
    fold, incoming = dict(fold or {}), dict(incoming or {})
    groups = _resolve_groups(model, list(keep) + list(fold) + list(incoming))
    n_keep = len(keep)
    key_group = dict(zip(list(keep) + list(fold) + list(incoming), groups))
    plans: dict[int, tuple] = {}
    for key, group in list(key_group.items())[:n_keep]:
        if not group.prunable:
            raise ValueError(f"group {group.index} ({group.root!r}) cannot be pruned: {group.reason}")
        kept = _check_keep(keep[key], group.units)
        plans[group.index] = (group, kept, None, None)
    for mapping, slot in ((fold, 2), (incoming, 3)):
        for key, value in mapping.items():
            group = key_group[key]
            if group.index not in plans:
                raise ValueError(f"group {group.index} ({group.root!r}) has a fold or incoming weights "
                                 "but no entry in keep")
            entry = list(plans[group.index])
            if group.merge_reason:
                raise ValueError(f"units of group {group.index} ({group.root!r}) cannot be merged exactly: "
                                 f"{group.merge_reason}")
            entry[slot] = check_array(value, "fold" if slot == 2 else "incoming", ndim=2).astype(np.float64)
            plans[group.index] = tuple(entry)
    removed: dict[int, list[np.ndarray]] = {}          # param space id -> removed positions
    spaces: dict[int, _Space] = {}
    edits: dict[int, list] = {}                         # id(layer) -> [(kind, space, idx, data)]
    for group, kept, f, inc in plans.values():
        mask = np.zeros(group.units, bool)
        mask[kept] = True
        if f is not None and f.shape != (group.units, kept.size):
            raise ValueError(f"fold for group {group.index} must have shape (units, kept) = "
                             f"{(group.units, kept.size)}, got {f.shape}")
        for space, idx in group._spaces:
            if space.kind != "param":
                continue
            spaces[space.id] = space
            removed.setdefault(space.id, []).append(idx[~mask].ravel())
            if f is not None and space.role == "consumer":
                edits.setdefault(id(space.layer), []).append(("fold", space, idx, (f, kept)))
        if inc is not None:
            layout = group.incoming_layout()
            width = sum(w for *_, w in layout)
            if inc.shape != (kept.size, width):
                raise ValueError(f"incoming for group {group.index} must have shape (kept, {width}), "
                                 f"got {inc.shape}")
            start = 0
            for member, (path, axis, block), w in layout:
                edits.setdefault(id(member.layer), []).append(
                    ("set", member, (path, axis, block), (inc[:, start:start + w], kept)))
                start += w
    changed: dict[int, tuple] = {}
    for sid, parts in removed.items():
        space = spaces[sid]
        gone = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        if gone.size == 0:
            continue
        entry = changed.setdefault(id(space.layer), (space.layer, {}))
        entry[1][space.name] = (space, gone)
    for lid, items in edits.items():
        if lid not in changed:
            layer = items[0][1].layer
            changed[lid] = (layer, {})
    new_layers, new_weights = {}, {}
    for lid, (layer, by_space) in changed.items():
        arrays = {rel: _np(v).copy() for rel, v in _relative_variables(layer).items()}
        for kind, where, idx, data in edits.get(lid, []):
            if kind == "fold":
                f, kept = data
                for path, axis, block in where.slices:
                    w = np.moveaxis(arrays[path], axis, 0)
                    rows = _rows(idx, block)
                    folded = np.einsum("uq...,uk->kq...", w[rows].astype(np.float64), f)
                    w[rows[kept]] = folded.astype(w.dtype)
            else:
                path, axis, block = idx
                values, kept = data
                w = np.moveaxis(arrays[path], axis, 0)
                rows = _rows(where.index, block)[kept]
                w[rows] = values.reshape(rows.shape + w.shape[1:]).astype(w.dtype)
        for name, (space, gone) in by_space.items():
            for path, axis, block in space.slices:
                rows = _rows(gone[:, None], block).ravel()
                arrays[path] = np.delete(arrays[path], rows, axis=axis)
        kept_counts = {name: space.size - gone.size for name, (space, gone) in by_space.items()}
        sizes = {name: space.size for name, (space, gone) in by_space.items()}
        cfg = _new_config(layer, kept_counts, sizes)
        from keras.src.saving.serialization_lib import SafeModeScope
        with SafeModeScope(False):
            new_layers[lid] = _defer_initializers(layer.__class__.from_config(cfg))
        new_weights[lid] = arrays
    cache: dict = {}
    try:
        new_model = _rebuild(model, lambda l: new_layers.get(id(l)), cache)
    except ValueError as exc:
        raise ValueError(f"removing these channels gives a graph Keras cannot build: {exc}") from None
    _copy_weights(cache, lambda old, new: new_weights.get(id(old)))
    return new_model


def _incoming_layout(group: DependencyGroup) -> list:
    """``[(member, slice, width)]`` of the weights that compute each unit (producers and
    per-channel members), in member order: the rows of :meth:`DependencyGroup.incoming`."""
    out = []
    for m in group.members:
        if m.role not in ("producer", "channel"):
            continue
        variables = _relative_variables(m.layer)
        for path, axis, block in m.slices:
            shape = tuple(variables[path].shape)
            rest = int(np.prod(shape)) // shape[axis]
            out.append((m, (path, axis, block), m.index.shape[1] * block * rest))
    return out


def _incoming(group: DependencyGroup) -> tuple[np.ndarray, list]:
    layout = _incoming_layout(group)
    parts = []
    for member, (path, axis, block), _ in layout:
        w = np.moveaxis(_np(_relative_variables(member.layer)[path]), axis, 0)
        parts.append(w[_rows(member.index, block)].reshape(group.units, -1))
    v = np.concatenate(parts, axis=1) if parts else np.zeros((group.units, 0))
    return v, layout


def _outgoing(group: DependencyGroup) -> np.ndarray:
    parts = []
    for m in group.members:
        if m.role == "consumer":
            parts.extend(m.weight_slices())
    return np.concatenate(parts, axis=1) if parts else np.zeros((group.units, 0))


DependencyGroup.incoming_layout = _incoming_layout
DependencyGroup.incoming = lambda self: _incoming(self)[0]
DependencyGroup.incoming.__doc__ = (
    "``(units, d)``: every weight that computes each unit (producers' output slices with "
    "biases, per-channel parameters), concatenated member by member.")
DependencyGroup.outgoing = _outgoing
DependencyGroup.outgoing.__doc__ = "``(units, f)``: every consumer's input rows of each unit, concatenated."


@_reads_once
def keep_units(model: keras.Model, layer: Any, keep: Any, fold: Any = None) -> keras.Model:
    """Keep output units ``keep`` of ``layer`` (and of everything coupled to them).

    A thin caller of :func:`keep_channels` for the group that ``layer`` produces
    (:func:`group_of`): in a chain, the layer keeps ``kernel[..., keep]`` and ``bias[keep]``,
    per-channel layers after it the matching entries, and the next weighted layer the
    matching input rows, ``new_rows[k] = sum_u fold[u, k] * old_rows[u]``.

    Args:
        model: a built Sequential or functional model.
        layer: name (or instance) of a layer that produces a prunable group.
        keep: 1-D integer indices of the units to keep, sorted and unique, at least one.
        fold: optional ``(units, len(keep))`` matrix for the consumers' input rows.

    Returns:
        A new, uncompiled model with the same layer names; ``model`` is not changed.

    Raises:
        TypeError / ValueError: unknown layer, a layer that produces no prunable group (its
            channels reach the model output, pass a layer the analysis does not know, ...),
            bad ``keep`` or ``fold``, a non-default ``fold`` through a layer where merging
            is not exact (e.g. BatchNormalization).
    """
    check_model(model)
    group = group_of(model, layer)
    if not group.prunable:
        raise ValueError(f"the outputs of layer {group.root!r} cannot be pruned: {group.reason}")
    keep = _check_keep(keep, group.units)
    if fold is not None:
        fold = check_array(fold, "fold", ndim=2).astype(np.float32)
        if fold.shape != (group.units, len(keep)):
            raise ValueError(f"fold must have shape (units, len(keep)) = {(group.units, len(keep))}, "
                             f"got {fold.shape}")
        if np.array_equal(fold, selection_fold(group.units, keep)):
            fold = None
        elif not group.scalable and np.any((fold != 0) & (fold != 1)):
            raise ValueError(f"a scaled fold cannot pass through group {group.root!r}: "
                             f"{_noscale_reason(group)}")
    return keep_channels(model, {group: keep}, fold=None if fold is None else {group: fold})


def _noscale_reason(group: DependencyGroup) -> str:
    channel = [m.layer.name for m in group.members if m.role == "channel"]
    if channel:
        return f"per-channel parameters in {channel} (e.g. BatchNormalization)"
    return "a layer on the way is not positively homogeneous"


@_reads_once
def plot_group(model: keras.Model, group: Any, ax: Any = None, *, whole: bool = False,
               max_layers: int = 60) -> Any:
    """Draw the layers of one dependency group (and their neighbours) as a graph.

    Layers are placed by depth (longest path from the input) from left to right, branches
    one under the other; producers are drawn red, consumers blue, per-channel layers green,
    layers the channels only pass through grey, and neighbours outside the group white.
    Needs matplotlib.

    Args:
        model: a built Sequential or functional model.
        group: a :class:`DependencyGroup` of ``dependency_groups(model)``, or a layer name
            (the group it produces, :func:`group_of`).
        ax: a matplotlib Axes to draw on (default: a new figure).
        whole: draw every layer of the model, not only the group and its neighbours.
        max_layers: refuse to draw more layers than this (the figure becomes unreadable).

    Returns:
        The Axes.

    Raises:
        ValueError: more than ``max_layers`` layers, a group of another model.
    """
    import matplotlib.pyplot as plt

    group = _resolve_groups(model, [group])[0]
    nodes = [n for n in _nodes(model) if not _is_graph_model(n.operation)]
    layers, parents = [], {}
    for node in nodes:
        op = node.operation
        if op not in layers:
            layers.append(op)
        parents.setdefault(id(op), set()).update(
            id(t._keras_history.operation) for t in node.input_tensors if hasattr(t, "_keras_history"))
    if not whole:
        inside = set(group.layers)
        near = {id(op) for op in layers if getattr(op, "name", "") in inside}
        for op in layers:
            if id(op) in near:
                continue
            if parents.get(id(op), set()) & {id(o) for o in layers if o.name in inside} or \
                    any(id(op) in parents.get(id(o), ()) for o in layers if o.name in inside):
                near.add(id(op))
        layers = [op for op in layers if id(op) in near]
        kept = {id(op) for op in layers}
        parents = {k: v & kept for k, v in parents.items() if k in kept}
    if len(layers) > max_layers:
        raise ValueError(f"model {model.name!r} has {len(layers)} layers; plot_group draws at most "
                         f"max_layers={max_layers}")
    depth: dict[int, int] = {}
    for op in layers:   # nodes come in topological order
        depth[id(op)] = 1 + max((depth.get(p, -1) for p in parents.get(id(op), ())), default=-1)
    rows: dict[int, int] = {}
    pos = {}
    for op in layers:
        d = depth[id(op)]
        pos[id(op)] = (d, -rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
    roles = {}
    for m in group.members:
        roles.setdefault(m.layer.name, m.role)
    colours = {"producer": "#d62728", "consumer": "#1f77b4", "channel": "#2ca02c", "heads": "#9467bd"}
    if ax is None:
        size = (max(6.0, 0.9 * (max(depth.values()) + 1)), 1.2 + 0.9 * max(rows.values()))
        _, ax = plt.subplots(figsize=size)
    for op in layers:
        x, y = pos[id(op)]
        for p in parents.get(id(op), ()):
            if p in pos:
                px, py = pos[p]
                bend = 0.35 if py == y and x - px > 1 else 0.0   # a skip connection arcs over
                ax.annotate("", xy=(x, y), xytext=(px, py),
                            arrowprops=dict(arrowstyle="->", color="0.6", lw=0.8, shrinkA=9, shrinkB=9,
                                            connectionstyle=f"arc3,rad={-bend}"))
    for op in layers:
        x, y = pos[id(op)]
        name = getattr(op, "name", type(op).__name__)
        role = roles.get(name, "through" if name in group.layers else "")
        face = colours.get(role, "0.85" if role == "through" else "white")
        ax.text(x, y, name, ha="center", va="center", fontsize=7, rotation=30,
                bbox=dict(boxstyle="round,pad=0.25", fc=face, ec="0.3", alpha=0.9,
                          lw=1.2 if role else 0.5),
                color="white" if role in colours else "black")
    ax.set_xlim(-0.7, max(depth.values()) + 0.7)
    ax.set_ylim(-max(rows.values()) + 0.4, 1.0)
    ax.set_axis_off()
    handles = [plt.Line2D([], [], marker="s", ls="", color=c, label=r) for r, c in colours.items()
               if r in roles.values()]
    handles.append(plt.Line2D([], [], marker="s", ls="", color="0.85", label="passes through"))
    ax.legend(handles=handles, loc="lower left", fontsize=7, frameon=False, ncol=len(handles))
    ax.set_title(f"dependency group of {group.root!r}: {group.units} units", fontsize=9)
    return ax
