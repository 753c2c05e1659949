"""Measurements: parameters, non-zeros, sparsity, FLOPs, latency, accuracy and bytes on disk.

Conventions used by every module:

* A *parameter* is a weight of the model. Bookkeeping variables that transforms add (masks,
  integer codes, schedule counters) are named with the prefix ``cnl_`` and are not counted.
* *Sparsity* is measured over kernels (``kernel``, ``depthwise_kernel``, ``embeddings``):
  the weights pruning removes. Biases and normalisation statistics are left out.
* Bytes are measured on disk (a saved file), never computed on paper.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import time
from typing import Any, NamedTuple

import keras
import numpy as np

from compressnet_lite._checks import check_array, check_model, check_positive_int

__all__ = [
    "AUX_PREFIX", "KERNEL_NAMES", "is_parameter", "count_params", "count_nonzero", "sparsity",
    "layer_sparsity", "flops", "Latency", "latency", "accuracy", "ModelBytes", "model_bytes",
]

AUX_PREFIX = "cnl_"
"""Variables whose name starts with this prefix are bookkeeping, not parameters."""

KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")
"""Names of the weights that sparsity is measured over."""


def is_parameter(variable: Any) -> bool:
    """True for a model weight, False for a transform's bookkeeping variable (``cnl_*``)."""
    return not _name(variable).startswith(AUX_PREFIX)


def _name(variable: Any) -> str:
    return str(getattr(variable, "name", "")).split("/")[-1]


def _weights(obj: Any, *, kernels_only: bool = False) -> list[np.ndarray]:
    """The arrays of ``obj``: an array, a layer or a model (parameters only)."""
    if isinstance(obj, (keras.Model, keras.layers.Layer)):
        if isinstance(obj, keras.Model):
            check_model(obj)
        variables = [v for v in obj.weights if is_parameter(v)]
        if kernels_only:
            variables = [v for v in variables if _name(v) in KERNEL_NAMES]
        return [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]
    if isinstance(obj, (list, tuple)):
        return [check_array(a, "weights", allow_empty=True, finite=False) for a in obj]
    return [check_array(obj, "weights", allow_empty=True, finite=False)]


def count_params(obj: Any) -> int:
    """Number of parameters of a model, a layer, an array or a list of arrays.

    Example:
        >>> count_params(np.zeros((3, 4)))
        12
    """
    return int(sum(a.size for a in _weights(obj)))


def count_nonzero(obj: Any) -> int:
    """Number of non-zero parameters of a model, a layer, an array or a list of arrays."""
    return int(sum(np.count_nonzero(a) for a in _weights(obj)))


def sparsity(obj: Any) -> float:
    """Fraction of zeros: over the kernels of a model or layer, or over all of an array.

    Raises:
        ValueError: there is nothing to measure (no kernels, empty array).

    Example:
        >>> sparsity(np.array([0.0, 1.0, 0.0, 2.0]))
        0.5
    """
    arrays = _weights(obj, kernels_only=isinstance(obj, (keras.Model, keras.layers.Layer)))
    total = sum(a.size for a in arrays)
    if total == 0:
        raise ValueError(f"sparsity: {type(obj).__name__} has no kernels or elements to measure")
    return float(1.0 - sum(np.count_nonzero(a) for a in arrays) / total)


def layer_sparsity(model: keras.Model) -> dict[str, float]:
    """Sparsity of each layer that has a kernel, by layer name (in model order)."""
    check_model(model)
    return {layer.name: sparsity(layer) for layer in _flat_layers(model)
            if any(_name(v) in KERNEL_NAMES for v in layer.weights)}


def flops(model: keras.Model, *, nonzero_only: bool = False) -> int:
    """Multiply-accumulate operations (MACs) of one example through the model's weighted layers.

    Counted: Dense and EinsumDense (the kernel at every position it is applied),
    convolutions of every rank, grouped and transposed ones included, DepthwiseConv,
    SeparableConv (depthwise then pointwise), and MultiHeadAttention (its four
    projections plus the two attention products ``Q K^T`` and ``A V``). Element-wise layers,
    normalisation and pooling are not counted (they are a few operations per activation).
    Nested models are followed.

    Args:
        model: a built functional or Sequential model.
        nonzero_only: count only the multiplications by non-zero weights (what a sparse
            kernel would do); the default counts what dense kernels do.

    Returns:
        The number of multiply-adds (one MAC = one multiplication + one addition).

    Raises:
        ValueError: a subclassed model, whose layers have no known output shape.
    """
    check_model(model)
    total = 0
    for layer in _flat_layers(model):
        if not layer.weights:
            continue
        try:
            total += _layer_macs(layer, nonzero_only)
        except (AttributeError, ValueError):  # a layer of a subclassed model has no symbolic shapes
            raise ValueError(
                f"flops needs a functional or Sequential model to know each layer's output shape; "
                f"layer {layer.name!r} of model {model.name!r} has none (subclassed model?). "
                f"Rebuild it with keras.Input and the functional API.") from None
    return int(total)


def _used(variable: Any, nonzero_only: bool) -> int:
    value = np.asarray(keras.ops.convert_to_numpy(variable))
    return int(np.count_nonzero(value)) if nonzero_only else int(value.size)


def _positions(shape: tuple) -> int:
    """Number of positions (all but the batch and the channel axis) of a symbolic shape."""
    return int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def _layer_macs(layer: keras.layers.Layer, nonzero_only: bool) -> int:
    from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose

    L = keras.layers
    if isinstance(layer, L.MultiHeadAttention):
        node = layer._inbound_nodes[0]
        query = node.input_tensors[0]
        value = node.input_tensors[1] if len(node.input_tensors) > 1 else query
        key = node.input_tensors[2] if len(node.input_tensors) > 2 else value
        tq, tk, tv = _positions(query.shape), _positions(key.shape), _positions(value.shape)
        macs = tq * _used(layer._query_dense.kernel, nonzero_only)
        macs += tk * _used(layer._key_dense.kernel, nonzero_only)
        macs += tv * _used(layer._value_dense.kernel, nonzero_only)
        macs += tq * _used(layer._output_dense.kernel, nonzero_only)
        if getattr(layer, "_gate_dense", None) is not None:
            macs += tq * _used(layer._gate_dense.kernel, nonzero_only)
        heads, dk, dv = int(layer.num_heads), int(layer.key_dim), int(layer.value_dim or layer.key_dim)
        return macs + heads * tq * tk * (dk + dv)
    out = tuple(layer.output.shape)
    if isinstance(layer, L.EinsumDense):
        lhs, out_spec = layer.equation.replace(" ", "").split("->")
        in_spec, k_spec = lhs.split(",")
        sizes = dict(zip(in_spec, tuple(layer.input.shape)))
        sizes.update({k: v for k, v in zip(out_spec, out) if v is not None})
        broadcast = [sizes.get(letter) for letter in out_spec[1:] if letter not in k_spec]  # no batch
        return int(np.prod([d or 1 for d in broadcast])) * _used(layer.kernel, nonzero_only)
    if type(layer).__name__ in ("SeparableConv1D", "SeparableConv2D"):
        return _positions(out) * (_used(layer.depthwise_kernel, nonzero_only) +
                                  _used(layer.pointwise_kernel, nonzero_only))
    kernel = next((v for v in layer.weights if _name(v) == "kernel"), None)
    if kernel is None:
        return 0
    if isinstance(layer, BaseConvTranspose):   # every input position meets the whole kernel
        return _positions(tuple(layer.input.shape)) * _used(kernel, nonzero_only)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return int(np.prod(out[2:])) * _used(kernel, nonzero_only)
    return _positions(out) * _used(kernel, nonzero_only)


class Latency(NamedTuple):
    """Timing of repeated inference calls, in seconds."""

    median: float
    q1: float
    q3: float
    runs: int

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3f} ms (IQR {self.q1 * 1e3:.3f}-{self.q3 * 1e3:.3f}, n={self.runs})"


def latency(model: Any, x: Any, *, runs: int = 30, warmup: int = 3) -> Latency:
    """Median and quartiles of the wall time of one compiled forward pass on batch ``x``.

    The model's call is compiled once for the running Keras backend (a ``tf.function`` on
    TensorFlow, ``jax.jit`` on JAX; PyTorch runs eagerly under ``torch.no_grad``, as its
    ``predict`` does) and timed ``runs`` times after ``warmup`` untimed calls, each until its
    result is in NumPy. A plain Python callable (e.g. a TFLite interpreter's predict
    function) is timed as is.

    Args:
        model: a Keras model, or any callable taking ``x``.
        x: one input batch.
        runs: timed repetitions (>= 3).
        warmup: untimed calls first (>= 0).

    Returns:
        A :class:`Latency` (seconds); ``str()`` of it prints milliseconds.
    """
    from compressnet_lite import _backend

    check_positive_int(runs, "runs", minimum=3)
    check_positive_int(warmup, "warmup", minimum=0)
    if isinstance(model, keras.Model):
        check_model(model)
        x = check_array(x, "x")
        fn = _backend.forward_function(model)
        if np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
        x = keras.ops.convert_to_tensor(x)  # once, outside the timed calls
        call = lambda: fn(x)  # noqa: E731  (returns NumPy: waits for the result)
    elif callable(model):
        call = lambda: model(x)  # noqa: E731
    else:
        raise TypeError(f"model must be a keras.Model or a callable, got {type(model).__name__}")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return Latency(float(med), float(q1), float(q3), runs)


def accuracy(model: Any, x: Any, y: Any, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``: works with softmax or logit outputs.

    Args:
        model: a Keras model, or a callable returning class scores for a batch.
        x: inputs.
        y: integer labels, shape ``(n,)``.
        batch_size: inference batch size.

    Raises:
        ValueError: ``x`` and ``y`` differ in length or are empty.
    """
    x = check_array(x, "x")
    y = check_array(y, "y", ndim=1)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if isinstance(model, keras.Model):
        check_model(model)
        from compressnet_lite import _backend

        scores = _backend.predict(model, x, batch_size=batch_size)
    elif callable(model):
        scores = np.asarray(keras.ops.convert_to_numpy(model(x)))
    else:
        raise TypeError(f"model must be a keras.Model or a callable, got {type(model).__name__}")
    return float(np.mean(np.argmax(scores, axis=-1) == y))


class ModelBytes(NamedTuple):
    """Size of a saved model on disk, in bytes."""

    keras: int
    gzip: int


def model_bytes(model: keras.Model, *, include_optimizer: bool = False) -> ModelBytes:
    """Bytes of ``model`` saved in Keras' ``.keras`` format, and of that file gzipped (level 9).

    Both are measured by writing the file: nothing is estimated. The archive holds a saving
    date and HDF5 object timestamps, so the gzip size of the same weights can differ by a few
    bytes from one save to the next.

    Args:
        model: a built Keras model.
        include_optimizer: keep the optimizer's state (Adam stores two more copies of every
            weight); by default an uncompiled copy with the same weights is saved, which is
            what a deployed model weighs.
    """
    check_model(model)
    if not include_optimizer and getattr(model, "optimizer", None) is not None:
        from compressnet_lite.models import clone

        model = clone(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as f:
            raw = f.read()
    return ModelBytes(len(raw), len(gzip.compress(raw, compresslevel=9, mtime=0)))


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of ``model`` with nested models expanded, in order."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out
