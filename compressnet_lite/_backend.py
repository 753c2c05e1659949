"""The steps that differ between Keras 3 backends, one small helper per backend.

Everything else in the library is written once, in ``keras.ops`` and NumPy. What cannot be:

* :func:`loss_gradients`: gradients of a loss with respect to chosen variables, the way
  Keras' own trainers take them (``tf.GradientTape`` on TensorFlow, ``jax.grad`` on JAX,
  ``torch.autograd`` on PyTorch). The gradient and Taylor pruning criteria use it.
* :func:`assign_products`: several ``variable <- value`` and ``variable <- variable * value``
  assignments as one compiled call (a ``tf.function`` on TensorFlow, one ``jax.jit``-ed
  product on JAX, in-place copies under ``torch.no_grad`` on PyTorch). The pruning callback
  uses it to set masks between training steps.
* :func:`predict`: outputs of a model evaluated once (accuracy of a new model): Keras'
  ``predict`` on JAX, eager batches on TensorFlow and PyTorch, where tracing costs more.
* :func:`forward_function`: the compiled forward pass that latency is measured on.
* :func:`build_for_fit`: on TensorFlow, the optimizer's and the compiled metrics'
  variables made before ``fit`` traces its train step, as Keras' JAX and PyTorch trainers
  make them.
* :func:`require`: a clear error for what exists on one backend only (TFLite conversion,
  ``tf.distribute``).

None of these helpers keeps a reference to a caller's array: values are copied through
NumPy, so JAX's buffer donation in a compiled train step cannot delete an array the caller
still holds.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import numpy as np

from compressnet_lite._checks import check_array, check_model, check_positive_int

__all__ = ["BackendError", "name", "require", "loss_gradients", "assign_products", "predict",
           "forward_function", "scope_value", "outside_scope", "BACKENDS"]

BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras 3 backends the library is tested on."""


class BackendError(RuntimeError):
    """A feature needs another Keras backend than the one running (e.g. ``to_tflite`` on JAX)."""


def name() -> str:
    """The running Keras backend: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    return keras.backend.backend()


_LABELS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def require(backend: str, what: str, why: str = "") -> None:
    """Raise a clear error unless Keras runs on ``backend``.

    Args:
        backend: the backend ``what`` needs, e.g. ``"tensorflow"``.
        what: the feature, as the message should name it (``"to_tflite"``).
        why: a sentence the message ends with: why the feature needs that backend, or what
            to do instead.

    Raises:
        BackendError: Keras runs on another backend; the message says which one is needed
            and how to select it (``KERAS_BACKEND``, before Keras is imported).
    """
    current = name()
    if current != backend:
        raise BackendError(f"{what} needs Keras' {_LABELS.get(backend, backend)} backend, but Keras runs "
                           f"on {current!r}: set KERAS_BACKEND={backend} before importing keras"
                           + (f". {why}" if why else ""))


def scope_value(variable: Any) -> Any:
    """The value ``variable`` has in the enclosing ``keras.StatelessScope`` (the state a
    compiled JAX step passes around), or ``None`` outside one or when the scope does not
    hold it."""
    from keras.src.backend.common.stateless_scope import get_stateless_scope, in_stateless_scope

    if not in_stateless_scope():
        return None
    return get_stateless_scope().get_current_value(variable)


def outside_scope(variable: Any) -> bool:
    """True inside a ``keras.StatelessScope`` that does not hold ``variable``: there its
    stored value is stale or gone (JAX's trainer applies the optimizer in a scope of only
    the trainable and optimizer variables and frees the others' buffers during ``fit``)."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    return in_stateless_scope() and scope_value(variable) is None


# ---------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------

def _default_loss(model: keras.Model) -> Callable:
    from compressnet_lite.models import _ends_in_softmax

    return keras.losses.SparseCategoricalCrossentropy(from_logits=not _ends_in_softmax(model))


def _loss_fn(model: keras.Model, loss: Any) -> Callable:
    if loss is None:
        fn = _default_loss(model)
    elif isinstance(loss, str):
        try:
            fn = keras.losses.get(loss)
        except ValueError:
            raise ValueError(f"loss must be a Keras loss name, a loss object or a callable "
                             f"(y_true, y_pred) -> loss, got {loss!r}") from None
    elif callable(loss):
        fn = loss
    else:
        raise TypeError(f"loss must be None, a Keras loss name, a loss object or a callable, "
                        f"got {type(loss).__name__}")

    def mean_loss(y_true, y_pred):
        value = fn(y_true, y_pred)
        return keras.ops.mean(value) if len(keras.ops.shape(value)) else value

    return mean_loss


def _check_variables(model: keras.Model, variables: Sequence[Any]) -> list:
    if isinstance(variables, keras.Variable) or not isinstance(variables, (list, tuple)):
        raise TypeError(f"variables must be a list of the model's keras.Variable objects, "
                        f"got {type(variables).__name__}")
    if not variables:
        raise ValueError("variables must name at least one variable")
    owned = {id(v) for v in model.weights}
    for i, v in enumerate(variables):
        if not isinstance(v, keras.Variable):
            raise TypeError(f"variables[{i}] must be a keras.Variable, got {type(v).__name__}")
        if id(v) not in owned:
            raise ValueError(f"variables[{i}] ({v.path!r}) is not a variable of model {model.name!r}")
        if not keras.backend.is_float_dtype(v.dtype):
            raise ValueError(f"variables[{i}] ({v.path!r}) has dtype {v.dtype}; gradients need a "
                             "floating-point variable")
    return list(variables)


def loss_gradients(model: keras.Model, variables: Sequence[Any], x: Any, y: Any, *,
                   loss: Any = None, batch_size: int = 512) -> list[np.ndarray]:
    """Gradient of the mean loss over ``(x, y)`` with respect to each of ``variables``.

    The data are fed in batches of ``batch_size`` with ``training=False`` (dropout off,
    batch-norm statistics frozen); each batch's gradient is weighted by its size, so the
    result is the gradient of the loss averaged over all of ``x`` (for a loss that averages
    over its batch, as Keras' losses do). The model is not changed.

    Args:
        model: a built Keras model.
        variables: floating-point variables of ``model`` (e.g. ``[layer.kernel, ...]``).
        x: inputs, an array with the model's input shape.
        y: targets, one per input.
        loss: ``None`` (sparse categorical cross-entropy; on logits unless the model ends in
            a softmax), a Keras loss name or object, or ``fn(y_true, y_pred) -> loss``.
        batch_size: examples per gradient computation.

    Returns:
        One float64 NumPy array per variable, shaped like it.

    Raises:
        TypeError / ValueError: unbuilt model, a variable not of the model or not
            floating-point, empty or mismatched ``x``/``y``, bad ``loss`` or ``batch_size``.

    Example:
        >>> data = cnl.data.load_digits()  # doctest: +SKIP
        >>> grads = loss_gradients(model, [model.layers[1].kernel],
        ...                        data.x_train, data.y_train)  # doctest: +SKIP
    """
    check_model(model)
    variables = _check_variables(model, variables)
    x = check_array(x, "x")
    y = check_array(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    batch_size = check_positive_int(batch_size, "batch_size")
    if np.issubdtype(x.dtype, np.floating) or x.dtype == np.float64:
        x = x.astype(np.float32)
    loss_fn = _loss_fn(model, loss)
    step = {"tensorflow": _grads_tensorflow, "jax": _grads_jax, "torch": _grads_torch}[name()]
    grad = step(model, variables, loss_fn)
    total = [np.zeros(tuple(v.shape), np.float64) for v in variables]
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        for acc, g in zip(total, grad(xb, yb)):
            acc += np.asarray(g, np.float64) * len(xb)
    return [t / len(x) for t in total]


def _grads_tensorflow(model, variables, loss_fn):
    import tensorflow as tf

    def grad(xb, yb):
        with tf.GradientTape() as tape:
            value = loss_fn(yb, model(xb, training=False))
        return [keras.ops.convert_to_numpy(g) for g in tape.gradient(value, variables)]

    return grad


def _grads_jax(model, variables, loss_fn):
    import jax

    # The chosen variables become arguments through a StatelessScope (as Keras' JAX trainer
    # does with stateless_call); every other variable is read as a constant.
    def value(chosen, xb, yb):
        with keras.StatelessScope(state_mapping=list(zip(variables, chosen))):
            return loss_fn(yb, model(xb, training=False))

    fn = jax.jit(jax.grad(value))

    def grad(xb, yb):
        chosen = [jax.numpy.array(np.array(keras.ops.convert_to_numpy(v))) for v in variables]
        return [np.asarray(g) for g in fn(chosen, xb, yb)]

    return grad


def _grads_torch(model, variables, loss_fn):
    import torch

    def grad(xb, yb):
        # Fresh leaf tensors stand in for the variables: the model's own parameters (and
        # their .grad fields) are not touched, and frozen variables get gradients too.
        chosen = [torch.tensor(np.array(keras.ops.convert_to_numpy(v)), requires_grad=True)
                  for v in variables]
        with torch.enable_grad(), keras.StatelessScope(state_mapping=list(zip(variables, chosen))):
            value = loss_fn(keras.ops.convert_to_tensor(yb), model(xb, training=False))
        return [g.detach().cpu().numpy() for g in torch.autograd.grad(value, chosen)]

    return grad


# ---------------------------------------------------------------------------------------
# Assignments between training steps
# ---------------------------------------------------------------------------------------

def assign_products(pairs: Sequence[tuple[Any, Any]]) -> Callable[[Sequence[np.ndarray]], None]:
    """A compiled function setting ``target <- value`` and ``scaled <- scaled * value``.

    Args:
        pairs: ``(target, scaled)`` variable pairs, e.g. ``(layer.cnl_mask, layer.kernel)``;
            ``scaled`` may be ``None`` (only ``target`` is set).

    Returns:
        ``assign(values)``: for each pair and its array in ``values`` (same order), sets
        ``target`` to the array and multiplies ``scaled`` by it, in one compiled call where
        the backend has one.
    """
    pairs = [(t, s) for t, s in pairs]
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def run(values):
            for (target, scaled), value in zip(pairs, values):
                target.assign(value)
                if scaled is not None:
                    scaled.assign(scaled * keras.ops.cast(value, scaled.dtype))

        return lambda values: run([np.asarray(v, np.float32) for v in values])
    if backend == "jax":
        import jax

        @jax.jit
        def products(scaled_values, values):
            return [s * v.astype(s.dtype) for s, v in zip(scaled_values, values)]

        def run_jax(values):
            values = [jax.numpy.array(np.asarray(v, np.float32)) for v in values]
            with_scaled = [(s, v) for (_, s), v in zip(pairs, values) if s is not None]
            new = products([s.value for s, _ in with_scaled], [v for _, v in with_scaled])
            for (target, _), value in zip(pairs, values):
                target.assign(value)
            for (scaled, _), value in zip(with_scaled, new):
                scaled.assign(value)

        return run_jax

    import torch

    def run_torch(values):
        with torch.no_grad():
            for (target, scaled), value in zip(pairs, values):
                target.assign(np.asarray(value, np.float32))
                if scaled is not None:
                    scaled.assign(scaled.value * keras.ops.cast(target.value, scaled.dtype))

    return run_torch


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------

def build_for_fit(model: keras.Model, x: Any, y: Any = None) -> None:
    """Make a compiled ``model``'s optimizer and metric variables now, for ``fit(x, y)``.

    Keras' JAX and PyTorch trainers build them eagerly when ``fit`` starts. Its TensorFlow
    trainer (without a ``tf.distribute`` strategy) leaves them to the first trace of the
    train step, and a ``tf.function`` that creates variables is traced twice, the second
    time without creating them: for a new small model that doubles the cost of its first
    ``fit`` call (measured: the digits' MLP, one epoch, 2.0 -> 0.9 CPU-s). Here the same
    variables are made first, with the same initial values, so the trained weights are
    bit-identical. ``x`` and ``y`` are what ``fit`` gets (arrays, or a ``tf.data.Dataset``
    of ``(x, y)`` or ``(x, y, sample_weight)`` as ``x``); only their shapes and dtypes are
    used. Nothing happens on the other backends, for other kinds of data, or when
    everything is built.
    """
    if not isinstance(model, keras.Model):  # (a Distiller is built by its first fit)
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if name() != "tensorflow" or getattr(model, "optimizer", None) is None \
            or getattr(model, "_distribute_strategy", None) is not None:  # (Keras builds then)
        return
    import tensorflow as tf

    batch = (x, y, None)
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        if y is not None or not isinstance(spec, tuple) or not 1 <= len(spec) <= 3:
            return  # (Keras' fit refuses y with a dataset; other structures: fit builds)
        batch = spec + (None,) * (3 - len(spec))
    elif x is None or not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in keras.tree.flatten(x)):
        return  # (no data, a generator, a PyDataset: fit builds, or says what is wrong)
    symbolic_build = getattr(model, "_symbolic_build", None)  # what Keras runs under a strategy
    if symbolic_build is not None:
        symbolic_build(data_batch=batch)
    elif not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


# ---------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------

def predict(model: keras.Model, x: Any, batch_size: int = 256) -> Any:
    """``model``'s outputs on ``x`` (an array, or a structure of arrays) as NumPy, for a model
    that is evaluated once or a few times: a new model, a probe of some layers' outputs.

    On JAX it is Keras' ``predict`` (one compiled program; an eager call would compile every
    op of a new shape on its own). On TensorFlow and PyTorch the model is called eagerly in
    batches: tracing the ``tf.function`` of ``predict`` costs more than the forward pass of
    a small model (measured: 0.30 against 0.03 CPU-s for the digits' MLP on its 450 test
    images). The same ops run either way.
    """
    leaves = keras.tree.flatten(x)
    if name() == "jax" or not leaves or not all(isinstance(a, np.ndarray) and a.ndim for a in leaves) \
            or len(leaves[0]) == 0:  # (a tf.data pipeline, tensors, no examples: Keras' predict)
        return model.predict(x, batch_size=batch_size, verbose=0)
    n = len(leaves[0])
    if name() == "torch":
        import torch

        context = torch.no_grad()
    else:
        import contextlib

        context = contextlib.nullcontext()
    parts = []
    with context:
        for i in range(0, n, batch_size):
            batch = keras.tree.map_structure(lambda a: a[i:i + batch_size], x)
            parts.append(keras.tree.map_structure(keras.ops.convert_to_numpy, model(batch, training=False)))
    return keras.tree.map_structure(lambda *a: np.concatenate(a), *parts)


def forward_function(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """``fn(x) -> outputs as NumPy``: the model's inference pass, compiled where the backend
    compiles (``tf.function`` on TensorFlow, ``jax.jit`` on JAX; PyTorch runs eagerly
    under ``torch.no_grad``, as Keras' own ``predict`` does without ``jit_compile``).

    The call returns once the result is computed (it is copied to NumPy), so it can be timed.
    """
    check_model(model)
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
        return lambda x: keras.ops.convert_to_numpy(fn(tf.convert_to_tensor(x)))
    if backend == "jax":
        import jax

        @jax.jit
        def run(trainable, non_trainable, batch):
            return model.stateless_call(trainable, non_trainable, batch, training=False)[0]

        def call(x):
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            return np.asarray(run(trainable, non_trainable, x))

        return call
    import torch

    def call_torch(x):
        with torch.no_grad():
            return keras.ops.convert_to_numpy(model(x, training=False))

    return call_torch
