"""Knowledge distillation (Hinton, Vinyals & Dean 2015; Ba & Caruana 2014).

The article lists "model distillation" (3.1.3) and "knowledge distillation" (3.2.2) as two
methods; they are one algorithm. A small *student* is trained to reproduce a large
*teacher*'s outputs: either its class probabilities softened at a temperature ``T``
(:func:`kd_loss`, Hinton et al.) or its raw logits (:func:`logit_matching_loss`, Ba &
Caruana), usually mixed with the ordinary loss on the true labels.

The array math comes first (NumPy, then the same three functions in ``keras.ops``, which
run inside a compiled training step); the Keras glue follows: :func:`logits_model` (where a
model's logits are), :class:`Distiller` (online distillation, built on
``keras.distillation.Distiller``), :func:`teacher_targets` and :class:`SoftTargetLoss`
(offline distillation from cached teacher outputs).

A trap this module avoids: ``keras.distillation.LogitsDistillation(temperature=T)`` with its
default ``loss="kl_divergence"`` (Keras 3.15) resolves the string to the *function*
``kl_divergence`` and applies it to the scaled logits themselves, skipping the softmax it
applies only for a ``keras.losses.KLDivergence`` *instance*; it also drops the ``T**2``
factor. On ``t = [[2, 1, 0.1]]``, ``s = [[0.5, 1.5, 0]]``, ``T = 4`` it returns 0.9025
instead of ``KL * T**2 = 0.3842``.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import keras
import numpy as np

from compressnet_lite import _backend, models
from compressnet_lite._checks import check_array, check_choice, check_fraction, check_model

__all__ = [
    "soften", "kd_loss", "logit_matching_loss",
    "soften_ops", "kd_loss_ops", "logit_matching_loss_ops",
    "logits_model", "KDLoss", "LogitMatchingLoss", "SoftTargetLoss", "teacher_targets",
    "Distiller", "LOSSES",
]

LOSSES = ("kl", "mse_logits")


# ---------------------------------------------------------------------------------------
# Array math (NumPy)
# ---------------------------------------------------------------------------------------

def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)  # shift for stability: softmax ignores it
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def soften(logits: Any, temperature: float) -> np.ndarray:
    """Softmax at temperature ``T``: ``p_i = exp(z_i / T) / sum_j exp(z_j / T)``.

    ``T = 1`` is the ordinary softmax; a larger ``T`` gives a softer distribution that shows
    how the model ranks the wrong classes (Hinton et al.'s "dark knowledge").

    Args:
        logits: class scores, shape ``(..., classes)``.
        temperature: ``T > 0``.

    Returns:
        Probabilities (float64), same shape, summing to 1 over the last axis.

    Example:
        >>> soften([[2.0, 1.0, 0.1]], 1.0).round(3)
        array([[0.659, 0.242, 0.099]])
    """
    z = check_array(logits, "logits", ndim=(1, 2)).astype(np.float64)
    return np.exp(_log_softmax(z / _check_temperature(temperature)))


def kd_loss(teacher_logits: Any, student_logits: Any, temperature: float) -> float:
    """Hinton et al.'s distillation loss: ``T**2 * KL(soften(t, T) || soften(s, T))``, batch mean.

    Why ``T**2``: the gradient of the KL term with respect to a student logit is
    ``(q_i - p_i) / T``, and for large ``T`` that is ``~ (s_i - t_i) / (N T**2)`` (N classes,
    zero-mean logits). Multiplying by ``T**2`` keeps the soft-target gradients the same size
    whatever ``T`` is, so changing ``T`` does not silently change the weight of the soft
    loss against the hard-label loss. In the same limit the loss becomes
    ``mean((s - t)**2) / 2``: logit matching (:func:`logit_matching_loss`) is the high-T
    case of distillation.

    Args:
        teacher_logits: the teacher's logits, shape ``(batch, classes)``.
        student_logits: the student's logits, same shape.
        temperature: ``T > 0``.

    Returns:
        The mean over the batch of ``T**2 * KL``, a float >= 0.

    Raises:
        ValueError: the shapes differ, or ``temperature <= 0``.

    Example:
        >>> round(kd_loss([[2.0, 1.0, 0.1]], [[0.5, 1.5, 0.0]], 4.0), 4)
        0.3842
    """
    t, s = _pair(teacher_logits, student_logits)
    temperature = _check_temperature(temperature)
    log_p, log_q = _log_softmax(t / temperature), _log_softmax(s / temperature)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    return float(temperature**2 * np.mean(kl))


def logit_matching_loss(teacher_logits: Any, student_logits: Any) -> float:
    """Ba & Caruana's logit regression: mean squared error between the two sets of logits.

    The article's "use the original model's outputs as the targets", done right: the
    targets are the teacher's logits (real numbers), the loss is a regression loss.
    (Ba & Caruana sum the squares over classes; this is the mean, ``1/N`` of theirs.)

    Args:
        teacher_logits: the teacher's logits, shape ``(batch, classes)``.
        student_logits: the student's logits, same shape.

    Returns:
        ``mean((student - teacher)**2)`` over the batch and the classes.

    Example:
        >>> logit_matching_loss([[2.0, 1.0, 0.1]], [[0.5, 1.5, 0.0]])
        0.8366666666666666
    """
    t, s = _pair(teacher_logits, student_logits)
    return float(np.mean((s - t) ** 2))


# ---------------------------------------------------------------------------------------
# The same math in keras.ops (runs inside a compiled train step, differentiable)
# ---------------------------------------------------------------------------------------

def soften_ops(logits: Any, temperature: float) -> Any:
    """:func:`soften` in ``keras.ops``: ``softmax(logits / T)`` as a backend tensor."""
    return keras.ops.softmax(keras.ops.divide(logits, temperature), axis=-1)


def kd_loss_ops(teacher_logits: Any, student_logits: Any, temperature: float) -> Any:
    """:func:`kd_loss` in ``keras.ops`` (scalar tensor, batch mean, log-softmax for stability)."""
    log_p = keras.ops.log_softmax(keras.ops.divide(teacher_logits, temperature), axis=-1)
    log_q = keras.ops.log_softmax(keras.ops.divide(student_logits, temperature), axis=-1)
    kl = keras.ops.sum(keras.ops.exp(log_p) * (log_p - log_q), axis=-1)
    return keras.ops.mean(kl) * (temperature**2)


def logit_matching_loss_ops(teacher_logits: Any, student_logits: Any) -> Any:
    """:func:`logit_matching_loss` in ``keras.ops`` (scalar tensor)."""
    return keras.ops.mean(keras.ops.square(keras.ops.subtract(student_logits, teacher_logits)))


def _check_temperature(temperature: Any) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 (and finite), got {temperature}")
    return float(temperature)


def _pair(teacher_logits: Any, student_logits: Any) -> tuple[np.ndarray, np.ndarray]:
    t = check_array(teacher_logits, "teacher_logits", ndim=2).astype(np.float64)
    s = check_array(student_logits, "student_logits", ndim=2).astype(np.float64)
    if t.shape != s.shape:
        raise ValueError(f"teacher_logits and student_logits must have the same shape, "
                         f"got {t.shape} and {s.shape}")
    return t, s


# ---------------------------------------------------------------------------------------
# Keras glue
# ---------------------------------------------------------------------------------------

def _is_linear(fn: Any) -> bool:
    return fn is None or getattr(fn, "__name__", "") == "linear"


class _PreActivation(keras.layers.Layer):
    """Calls a layer with its activation switched off: the logits of a ``Dense(..., "softmax")``.

    It reuses the wrapped layer's own weights (nothing is copied), so training through it
    trains the original layer. Internal to :func:`logits_model` (a training-time view, not
    meant to be saved: save the original model).
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{layer.name}_logits"), **kwargs)
        self.inner = layer

    def call(self, inputs):
        activation = self.inner.activation
        self.inner.activation = keras.activations.linear
        try:
            return self.inner(inputs)
        finally:
            self.inner.activation = activation

    def compute_output_spec(self, inputs):
        return self.inner.compute_output_spec(inputs)


def logits_model(model: keras.Model, name: str = "model") -> keras.Model:
    """A model that returns ``model``'s logits, sharing its layers and weights.

    The rule, applied to the layer that produces the model's (single) output:

    1. no activation or ``linear`` (e.g. ``cnl.models.mlp(..., logits=True)``): the model
       already returns logits and is returned as is;
    2. a ``keras.layers.Softmax`` layer or ``Activation("softmax")``: the logits are that
       layer's input (the output of the layer before);
    3. a layer with ``activation="softmax"`` (``Dense(10, activation="softmax")``): the
       logits are that layer's pre-activation, computed with the same weights;
    4. anything else (sigmoid, relu, several outputs, a subclassed model whose graph cannot
       be read) raises an error: pass a model that ends in logits or in a softmax.

    Taking the logits from the graph is exact; ``log(softmax(z))`` would also give
    ``softmax(z / T)`` back, but loses the tail once probabilities underflow in float32.

    Args:
        model: a built functional or Sequential Keras model with one output.
        name: the argument's name, used in error messages.

    Returns:
        ``model`` itself (rule 1) or a new functional model sharing its layers.

    Raises:
        TypeError: ``model`` is not a Keras model.
        ValueError: unbuilt, subclassed, several outputs, or an output activation other than
            linear/softmax.
    """
    check_model(model, name)
    outputs = getattr(model, "outputs", None)
    if not getattr(model, "inputs", None) or not outputs:
        raise ValueError(f"{name} must be a functional or Sequential model (its output layer is read to "
                         f"find the logits); {type(model).__name__!r} {model.name!r} has no symbolic graph")
    if len(outputs) != 1:
        raise ValueError(f"{name} must have one output (the class scores), got {len(outputs)}")
    layer = outputs[0]._keras_history.operation
    if isinstance(layer, keras.Model):  # a nested head: read its own output layer
        if models._ends_in_softmax(layer):
            raise ValueError(f"{name} ends in a softmax inside its sub-model {layer.name!r}; its logits "
                             f"cannot be read from the outer graph: end the model in a linear layer "
                             f"or a Softmax layer of the outer model")
        layer = models._output_layer(layer)
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax) or (isinstance(layer, keras.layers.Activation)
                                                    and models._is_softmax(activation)):
        logits = layer.input  # rule 2: the layer before
    elif models._is_softmax(activation):
        logits = _PreActivation(layer)(layer.input)  # rule 3: same layer, activation off
    elif _is_linear(activation) and not isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)):
        return model  # rule 1
    else:
        act_name = getattr(activation, "__name__", type(layer).__name__)
        raise ValueError(f"{name} must end in logits (a linear output layer) or in a softmax; its output "
                         f"layer {layer.name!r} ends in {act_name!r}. Distillation compares logits; "
                         f"build the model with a linear output (e.g. logits=True)")
    if isinstance(logits, (list, tuple)):
        raise ValueError(f"{name}'s softmax layer {layer.name!r} has several inputs; cannot read its logits")
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")


def _frozen(teacher_outputs: Any) -> Any:
    # A tensor first: PyTorch's stop_gradient calls .detach(), which NumPy arrays lack.
    return keras.ops.stop_gradient(keras.ops.convert_to_tensor(teacher_outputs))


@keras.saving.register_keras_serializable(package="compressnet_lite")
class KDLoss(keras.distillation.DistillationLoss):
    """Hinton et al.'s soft-target loss (:func:`kd_loss_ops`) for ``keras.distillation.Distiller``.

    Equal to ``keras.distillation.LogitsDistillation(T, loss=keras.losses.KLDivergence())``
    but with an exact log-softmax (Keras' ``KLDivergence`` clips probabilities at 1e-7, which
    zeroes the gradient of very unlikely classes), and without the default-string trap.
    """

    def __init__(self, temperature: float = 4.0):
        self.temperature = _check_temperature(temperature)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return kd_loss_ops(_frozen(teacher_outputs), student_outputs, self.temperature)

    def get_config(self) -> dict:
        return {"temperature": self.temperature}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="compressnet_lite")
class LogitMatchingLoss(keras.distillation.DistillationLoss):
    """Ba & Caruana's logit regression (:func:`logit_matching_loss_ops`) for a Keras ``Distiller``."""

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return logit_matching_loss_ops(_frozen(teacher_outputs), student_outputs)

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="compressnet_lite")
class SoftTargetLoss(keras.losses.Loss):
    """Offline distillation: ``T**2 * KL(y_true || softmax(y_pred / T))`` per example.

    ``y_true`` are soft targets cached once with :func:`teacher_targets` (probabilities at
    temperature ``T``); ``y_pred`` are the student's logits. Compile a logits-ending student
    with it and fit on ``(x, teacher_targets(teacher, x, T))``.

    Args:
        temperature: the temperature the targets were softened with, ``T > 0``.
        name, reduction: as for any Keras loss.
    """

    def __init__(self, temperature: float = 4.0, name: str = "soft_target_loss",
                 reduction: str = "sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.temperature = _check_temperature(temperature)

    def call(self, y_true, y_pred):
        p = keras.ops.cast(y_true, y_pred.dtype)
        log_q = keras.ops.log_softmax(y_pred / self.temperature, axis=-1)
        p_log_p = keras.ops.where(p > 0, p * keras.ops.log(keras.ops.maximum(p, 1e-30)), 0.0)
        return (self.temperature**2) * keras.ops.sum(p_log_p - p * log_q, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}


def teacher_targets(teacher: keras.Model, x: Any, temperature: float = 4.0, *,
                    batch_size: int = 256) -> np.ndarray:
    """The teacher's soft targets ``soften(teacher_logits(x), T)``, computed once (offline distillation).

    This is the article's step 1, "train the original model and save its outputs", with
    the temperature that makes the outputs informative. The result is a plain array, so it
    can be stored, and it feeds ``tf.data`` directly.

    Args:
        teacher: a trained model ending in logits or a softmax (see :func:`logits_model`).
        x: the inputs (an array, or a ``tf.data.Dataset`` of inputs or ``(x, y)`` batches).
        temperature: ``T > 0``.
        batch_size: inference batch size for arrays.

    Returns:
        float32 array ``(n, classes)``, rows summing to 1.

    Raises:
        TypeError / ValueError: bad teacher (see :func:`logits_model`), empty ``x``, or
            ``temperature <= 0``.

    Example:
        >>> import compressnet_lite as cnl
        >>> data = cnl.data.load_digits()
        >>> teacher = cnl.models.seed_mlp()  # train it first; untrained here for speed
        >>> targets = teacher_targets(teacher, data.x_train, 4.0)
        >>> targets.shape, bool(np.allclose(targets.sum(axis=1), 1.0))
        ((1347, 10), True)
        >>> student = cnl.models.mlp(64, [16], logits=True)
        >>> student.compile(optimizer="adam", loss=SoftTargetLoss(4.0))
        >>> history = student.fit(data.x_train, targets, batch_size=64, epochs=1, verbose=0)
    """
    temperature = _check_temperature(temperature)
    view = logits_model(teacher, "teacher")
    if not _is_dataset(x):
        x = check_array(x, "x")
    logits = view.predict(x, batch_size=batch_size, verbose=0) if not _is_dataset(x) \
        else view.predict(x, verbose=0)
    return soften(logits, temperature).astype(np.float32)


def _is_dataset(x: Any) -> bool:
    # Only a program that imported TensorFlow can hold a tf.data.Dataset: do not import it
    # here (seconds of start-up on the JAX and PyTorch backends).
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def _hard_label_loss(y_true, logits):
    # A function, not a keras.losses.Loss instance: its value is not pre-scaled for
    # tf.distribute, so it adds up with the distillation term before the single scaling
    # in Distiller.compute_loss.
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True))


class Distiller(keras.distillation.Distiller):
    """Online distillation: train ``student`` on ``alpha * CE(y, s) + (1 - alpha) * L(t, s)``.

    ``L`` is :func:`kd_loss` at temperature ``T`` (``loss="kl"``) or :func:`logit_matching_loss`
    (``loss="mse_logits"``, ``T`` unused); ``CE`` is sparse categorical cross-entropy on the
    student's logits and the true integer labels.

    What comes from Keras (``keras.distillation.Distiller``): the training loop (``fit``,
    ``evaluate``, ``predict`` are Keras' own), the combination of the two loss terms by
    ``student_loss_weight = alpha``, calling the teacher with ``training=False`` and
    freezing it, the ``student_loss``/``distillation_loss``/``total_loss`` metrics, and the
    output-shape checks. What is written here: the losses themselves (:class:`KDLoss` with
    an exact log-softmax and the ``T**2`` factor, never Keras' default
    ``LogitsDistillation(loss="kl_divergence")`` which skips the softmax;
    :class:`LogitMatchingLoss` on raw logits, which ``LogitsDistillation(loss="mse")`` is
    not: it divides the logits by ``T`` first); reading the logits of models that end in a
    softmax (:func:`logits_model`); a private frozen copy of the teacher, so the caller's
    teacher, its weights and its ``trainable`` flag are left exactly as they were; scaling
    the combined loss once for ``tf.distribute`` (Keras scales a ``Loss`` instance but not a
    loss function, so mixing them would weight the two terms differently on several
    replicas); argument checks with errors that name the argument.

    ``distiller.student`` is the caller's student model, trained in place (as
    ``student.fit`` would): a plain Keras model that saves to ``.keras`` with no custom
    object. ``distiller(x)`` and ``distiller.predict`` return the student's *logits*.

    Args:
        student: the model to train, functional or Sequential, ending in logits or softmax.
        teacher: the trained model to learn from, same input and output shapes.
        temperature: ``T > 0`` for ``loss="kl"``.
        alpha: weight of the hard-label loss in [0, 1]; ``1 - alpha`` goes to distillation.
            Hinton et al. found a small hard-label weight works best; ``alpha=1`` is plain
            training, ``alpha=0`` learns from the teacher alone.
        loss: ``"kl"`` (soft targets) or ``"mse_logits"`` (logit matching).
        name: the Keras model name.

    Raises:
        TypeError: ``student``/``teacher`` is not a Keras model, ``temperature``/``alpha``
            not a number.
        ValueError: ``temperature <= 0``; ``alpha`` outside [0, 1]; ``loss`` unknown;
            ``student is teacher``; input or output shapes differ; a model whose logits
            cannot be found (see :func:`logits_model`).

    Example:
        >>> import compressnet_lite as cnl
        >>> data = cnl.data.load_digits()
        >>> teacher = cnl.models.seed_mlp()  # train it first; untrained here for speed
        >>> student = cnl.models.mlp(64, [16], logits=True)
        >>> distiller = Distiller(student, teacher, temperature=4.0, alpha=0.1)
        >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = distiller.fit(data.x_train, data.y_train, epochs=1, verbose=0)
        >>> distiller.student.output.shape  # the student is the model to keep and save
        (None, 10)
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, temperature: float = 4.0,
                 alpha: float = 0.1, loss: str = "kl", *, name: str = "distiller"):
        check_model(student, "student")
        check_model(teacher, "teacher")
        if student is teacher:
            raise ValueError("student and teacher must be two different models, got the same object twice")
        temperature = _check_temperature(temperature)
        alpha = check_fraction(alpha, "alpha", high_inclusive=True)
        check_choice(loss, "loss", LOSSES)
        student_logits = logits_model(student, "student")
        teacher_logits = logits_model(teacher, "teacher")
        for what in ("inputs", "outputs"):
            ts = [tuple(v.shape[1:]) for v in getattr(teacher_logits, what)]
            ss = [tuple(v.shape[1:]) for v in getattr(student_logits, what)]
            if ts != ss:
                raise ValueError(f"teacher and student {what[:-1]} shapes differ: teacher {ts}, student {ss}")
        # A private copy: Keras' Distiller sets teacher.trainable = False, and that would
        # reach the caller's layers.
        teacher_copy = models.clone(teacher)
        distillation_loss = KDLoss(temperature) if loss == "kl" else LogitMatchingLoss()
        super().__init__(teacher=logits_model(teacher_copy, "teacher"), student=student_logits,
                         distillation_losses=distillation_loss, student_loss_weight=alpha, name=name)
        self._student_logits = student_logits
        self.student = student  # the caller's model: what users save and deploy
        self.temperature = temperature
        self.alpha = alpha
        self.loss_name = loss

    def compile(self, optimizer: Any = "adam", metrics: Any = None, **kwargs) -> None:
        """Compile for integer labels; the hard-label loss is fixed (cross-entropy on logits).

        Args:
            optimizer: a Keras optimizer or its name.
            metrics: a list of metrics computed on the student's logits (e.g. ``["accuracy"]``).
            **kwargs: passed to ``keras.Model.compile`` (``loss`` is not accepted).

        Raises:
            ValueError: ``loss`` is given.
        """
        if "loss" in kwargs:
            raise ValueError("loss is set by the Distiller (sparse categorical cross-entropy on the "
                             "student's logits, plus the distillation loss chosen with loss=...); "
                             "do not pass loss to compile")
        super().compile(optimizer=optimizer, loss=_hard_label_loss, metrics=metrics, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras' ``fit``, with the optimizer built first on TensorFlow (see
        ``_backend.build_for_fit``: one trace of the train step instead of two)."""
        _backend.build_for_fit(self, x, y)
        return super().fit(x, y, *args, **kwargs)

    def call(self, inputs, training=None):
        return self._student_logits(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=training)
        return _scale_for_replicas(total)


def _scale_for_replicas(loss: Any) -> Any:
    """Divide by the number of tf.distribute replicas, as Keras does for its own losses.

    Each replica's gradients are summed across replicas, so the per-replica loss must be
    ``1 / replicas`` of the batch mean; Keras' train step undoes this for the reported loss.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = keras.ops.multiply(loss, keras.ops.cast(1.0 / replicas, loss.dtype))
    return loss
