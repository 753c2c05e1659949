"""Reference models: the article's MLP and Han et al.'s LeNets, plus deterministic training.

All builders return functional Keras 3 models with named layers (``fc1``, ``fc2``, ...), so
that transforms can address a layer by name and rewrite the graph.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

from compressnet_lite import _backend
from compressnet_lite._checks import check_model, check_positive_int
from compressnet_lite.data import Dataset

__all__ = ["seed_mlp", "mlp", "lenet_300_100", "lenet5", "train", "compile_model", "clone"]


def mlp(input_dim: int, hidden: Sequence[int], num_classes: int = 10, *,
        logits: bool = False, name: str = "mlp") -> keras.Model:
    """A fully connected classifier ``input -> hidden[0] relu -> ... -> num_classes``.

    Args:
        input_dim: length of one input vector.
        hidden: widths of the hidden ReLU layers (named ``fc1``, ``fc2``, ...).
        num_classes: number of output units (layer ``out``).
        logits: end in raw logits instead of a softmax (useful for distillation).
        name: the model's name.

    Raises:
        TypeError / ValueError: a width or dimension that is not a positive integer.
    """
    check_positive_int(input_dim, "input_dim")
    check_positive_int(num_classes, "num_classes", minimum=2)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"hidden must be a sequence of layer widths, got {type(hidden).__name__}")
    inputs = keras.Input(shape=(input_dim,), name="input")
    x = inputs
    for i, width in enumerate(hidden, start=1):
        check_positive_int(width, f"hidden[{i - 1}]")
        x = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(x)
    outputs = keras.layers.Dense(num_classes, activation=None if logits else "softmax", name="out")(x)
    return keras.Model(inputs, outputs, name=name)


def seed_mlp(input_dim: int = 64, num_classes: int = 10, *, logits: bool = False) -> keras.Model:
    """The article's ``Net``: Dense 64 ReLU, Dense 32 ReLU, Dense ``num_classes`` softmax.

    The article writes it as a subclassed ``tf.keras.Model``; here it is a functional model
    (same layers, same math) so its graph can be inspected and rewritten.

    Example:
        >>> seed_mlp().count_params()
        6570
    """
    return mlp(input_dim, (64, 32), num_classes, logits=logits, name="seed_mlp")


def lenet_300_100(input_shape: Sequence[int] | int = (784,), num_classes: int = 10, *,
                  logits: bool = False) -> keras.Model:
    """LeNet-300-100 (LeCun et al. 1998), the MLP of Han et al. 2015/2016: 300 and 100 ReLU units.

    Args:
        input_shape: shape of one example; images are flattened first (``(64,)`` for the
            digits, ``(784,)`` or ``(28, 28, 1)`` for MNIST).
        num_classes: number of classes.
        logits: end in raw logits instead of a softmax.
    """
    shape = _shape(input_shape)
    inputs = keras.Input(shape=shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(shape) > 1 else inputs
    x = keras.layers.Dense(300, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(100, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(num_classes, activation=None if logits else "softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="lenet_300_100")


def lenet5(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, *,
           logits: bool = False) -> keras.Model:
    """LeNet-5 as used by Han et al. (Caffe version): conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10.

    On inputs smaller than 28x28 (the 8x8 digits) the convolutions use ``padding="same"`` so
    the spatial size never drops below 1; on MNIST they are ``valid`` as in the original.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of classes.
        logits: end in raw logits instead of a softmax.

    Raises:
        ValueError: ``input_shape`` is not (height, width, channels).
    """
    shape = _shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {tuple(shape)}")
    padding = "valid" if min(shape[:2]) >= 28 else "same"
    inputs = keras.Input(shape=shape, name="input")
    x = keras.layers.Conv2D(20, 5, padding=padding, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(50, 5, padding=padding, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(500, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, activation=None if logits else "softmax", name="out")(x)
    return keras.Model(inputs, outputs, name="lenet5")


def compile_model(model: keras.Model, *, learning_rate: float = 1e-3,
                  from_logits: bool | None = None, optimizer: Any = None) -> keras.Model:
    """Compile ``model`` for integer labels, always with keyword arguments.

    Keras 3's signature is ``compile(optimizer, loss, loss_weights, metrics, ...)``: a
    positional ``compile("adam", loss, ["accuracy"])`` passes the metrics as loss weights.

    Args:
        model: the model to compile (in place; it is returned for chaining).
        learning_rate: Adam's learning rate (ignored when ``optimizer`` is given).
        from_logits: whether the model outputs logits; ``None`` infers it from the last
            layer's activation (softmax -> probabilities).
        optimizer: a Keras optimizer instance to use instead of Adam.
    """
    if from_logits is None:
        from_logits = not _ends_in_softmax(model)
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    return model


def train(model: keras.Model, dataset: Dataset, epochs: int = 10, *, batch_size: int = 32,
          learning_rate: float = 1e-3, seed: int | None = 0, validation: bool = False,
          callbacks: Sequence[keras.callbacks.Callback] = (), verbose: int = 0,
          recompile: bool = True) -> keras.Model:
    """Compile (Adam, sparse cross-entropy, accuracy) and fit ``model`` on ``dataset``, in place.

    Training is deterministic: ``keras.utils.set_random_seed(seed)`` is called first and the
    data are shuffled by that seed.

    Args:
        model: a Keras model whose output has one unit per class.
        dataset: a :class:`~compressnet_lite.data.Dataset`.
        epochs: number of passes over the training data (>= 1).
        batch_size: examples per step (>= 1).
        learning_rate: Adam's learning rate.
        seed: random seed for weights-independent randomness (shuffling, dropout); ``None``
            leaves the global seed alone.
        validation: evaluate on the test split after every epoch (shown in the history).
        callbacks: extra Keras callbacks (e.g. a pruning callback).
        verbose: Keras' verbosity (0 = silent).
        recompile: compile the model first; pass ``False`` to keep a compiled state (for
            example a custom optimizer) the caller has set.

    Returns:
        The same model, trained; its ``history`` attribute holds the Keras History.

    Raises:
        TypeError: ``dataset`` is not a Dataset or ``model`` is not a keras.Model.
        ValueError: bad ``epochs``/``batch_size`` or output width smaller than the classes.
    """
    check_model(model)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a compressnet_lite.data.Dataset, got {type(dataset).__name__}")
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    out_units = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if out_units is not None and out_units < dataset.num_classes:
        raise ValueError(f"model has {out_units} outputs but dataset has {dataset.num_classes} classes")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    if recompile or getattr(model, "optimizer", None) is None:
        compile_model(model, learning_rate=learning_rate)
    _backend.build_for_fit(model, dataset.x_train[:batch_size], dataset.y_train[:batch_size])
    model.fit(dataset.x_train, dataset.y_train, epochs=epochs, batch_size=batch_size,
              validation_data=(dataset.x_test, dataset.y_test) if validation else None,
              callbacks=list(callbacks), verbose=verbose)
    return model


def clone(model: keras.Model) -> keras.Model:
    """A new, uncompiled model with the same architecture and a copy of the weights.

    Unlike ``keras.models.clone_model``, which in Keras 3 also compiles the copy with a new
    optimizer when the original was compiled, the copy carries no optimizer state: saving it
    stores the weights alone.

    Raises:
        TypeError / ValueError: ``model`` is not a built Keras model.
    """
    from compressnet_lite import surgery

    check_model(model)
    if surgery._is_graph_model(model):
        return surgery.rewrite(model)  # weights copied by name and path, as fresh arrays
    try:  # a subclassed model: its own config, if it has one
        copy = model.__class__.from_config(model.get_config())
    except (NotImplementedError, TypeError, ValueError):
        raise ValueError(f"model {model.name!r} is a subclassed {type(model).__name__} without a usable "
                         "get_config(); clone needs a Sequential or functional model") from None
    copy.set_weights([np.array(w) for w in model.get_weights()])
    return copy


def _is_softmax(fn: Any) -> bool:
    """Whether an activation function is Keras' softmax."""
    return getattr(fn, "__name__", "") == "softmax"


def _output_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer that produces ``model``'s single output, looking into nested sub-models.

    A model without a symbolic graph, or with several outputs, gives its last layer.
    """
    layer = model
    while isinstance(layer, keras.Model):
        outputs = getattr(layer, "outputs", None) or []
        if len(outputs) == 1 and hasattr(outputs[0], "_keras_history"):
            layer = outputs[0]._keras_history.operation
        elif layer.layers:
            layer = layer.layers[-1]
        else:
            break
    return layer


def _ends_in_softmax(model: keras.Model) -> bool:
    """Whether ``model`` outputs probabilities: its output layer is a ``Softmax`` layer or has
    a softmax activation (``Dense(..., "softmax")``, ``Activation("softmax")``). The one
    detector the library uses (losses, gradient criteria, distillation)."""
    layer = _output_layer(model)
    return isinstance(layer, keras.layers.Softmax) or _is_softmax(getattr(layer, "activation", None))


def _shape(input_shape: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = tuple(input_shape)
    for i, n in enumerate(shape):
        check_positive_int(n, f"input_shape[{i}]")
    return shape
