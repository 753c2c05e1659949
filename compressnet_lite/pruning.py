"""Network pruning (article 3.1.1): connections by magnitude, gradient or Taylor score;
gradual schedules (Zhu & Gupta 2017); N:M sparsity; neurons/filters by norm or activation.

The article's rule ``|W_ij| < threshold`` removes *connections* (single weights). A pruned
weight must stay zero while the network is fine-tuned; here a mask is a non-trainable
``cnl_mask`` variable of the layer, applied by a kernel constraint that the optimizer runs
after every update inside the compiled train step (so Adam's momentum cannot revive a
pruned weight). Removing whole *neurons* (Dense units, Conv2D filters) makes the model
physically smaller; that is :func:`prune_neurons`, built on :mod:`compressnet_lite.surgery`.

Array math first (NumPy, no Keras): :func:`score_mask`, :func:`magnitude_mask`,
:func:`nm_mask`, :func:`polynomial_sparsity`, :func:`constant_sparsity`, the neuron
scores; then the Keras glue.

Example:
    >>> import compressnet_lite as cnl
    >>> data = cnl.data.load_digits()
    >>> model = cnl.models.train(cnl.models.seed_mlp(), data, epochs=5)
    >>> pruned = cnl.pruning.prune(model, 0.8)
    >>> print(f"{cnl.metrics.sparsity(pruned):.2f}")
    0.80
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any, Callable, NamedTuple, Sequence

import keras
import numpy as np

from compressnet_lite import _backend
from compressnet_lite._checks import (
    check_array, check_choice, check_fraction, check_model, check_positive_int, check_real,
)
from compressnet_lite.storage import register_transform

__all__ = [
    # array math
    "lowest", "score_mask", "magnitude_mask", "nm_mask", "polynomial_sparsity", "constant_sparsity",
    "l1_scores", "l2_scores", "mean_activation_scores", "apoz_scores",
    # schedules and criteria
    "ConstantSparsity", "PolynomialDecay", "magnitude", "gradient", "taylor",
    "WEIGHT_CRITERIA", "NEURON_CRITERIA", "GroupImportance", "neuron_scores", "normalize_scores",
    # Keras glue
    "MaskConstraint", "PrunableDense", "PrunableConv2D", "prune", "strip", "masks",
    "PruningCallback", "prune_neurons", "recalibrate_batchnorm",
    "save_sparse", "load_sparse", "SparseBytes", "sparse_bytes",
]


# =======================================================================================
# Array math
# =======================================================================================

def lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` lowest scores; ties go to the earlier position.

    Linear time: ``np.partition`` finds the k-th smallest score, no full sort.
    """
    flat = np.asarray(scores).ravel()
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= flat.size:
        return np.arange(flat.size)
    kth = np.partition(flat, k - 1)[k - 1]
    below = np.flatnonzero(flat < kth)
    ties = np.flatnonzero(flat == kth)[:k - below.size]
    return np.concatenate([below, ties])


def score_mask(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask (1 keep, 0 prune) that prunes exactly ``round(sparsity * size)`` lowest scores.

    Ties are broken by position (the earlier element is pruned first, as a stable sort
    would), so the result is deterministic and the sparsity exact.

    Raises:
        ValueError: ``sparsity`` outside [0, 1].
    """
    sparsity = check_fraction(sparsity, "sparsity", high_inclusive=True)
    mask = np.ones(np.size(scores), dtype=np.float32)
    mask[lowest(scores, int(round(sparsity * np.size(scores))))] = 0.0
    return mask.reshape(np.shape(scores))


def magnitude_mask(w: Any, sparsity: float | None = None,
                   threshold: float | None = None) -> np.ndarray:
    """Mask of a weight array by magnitude: give exactly one of ``sparsity`` or ``threshold``.

    ``threshold`` is the article's rule: weights with ``|w| < threshold`` are pruned.
    ``sparsity`` prunes exactly that fraction, the smallest ``|w|`` first.

    Args:
        w: weight array (any shape).
        sparsity: fraction of weights to prune, in [0, 1).
        threshold: prune ``|w| < threshold``; must be >= 0.

    Returns:
        A float32 array shaped like ``w``: 1 where the weight is kept, 0 where pruned.

    Raises:
        ValueError: both or neither of ``sparsity``/``threshold``; out-of-range values;
            NaN/inf weights; empty ``w``.

    Example:
        >>> magnitude_mask([0.1, -2.0, 0.5, -0.05], sparsity=0.5)
        array([0., 1., 1., 0.], dtype=float32)
        >>> magnitude_mask([0.1, -2.0, 0.5, -0.05], threshold=0.3)
        array([0., 1., 1., 0.], dtype=float32)
    """
    w = check_array(w, "w")
    if (sparsity is None) == (threshold is None):
        raise ValueError("give exactly one of sparsity or threshold")
    if threshold is not None:
        if not np.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        return (np.abs(w) >= threshold).astype(np.float32)
    return score_mask(np.abs(w), check_fraction(sparsity, "sparsity"))


def nm_mask(w: Any, n: int = 2, m: int = 4) -> np.ndarray:
    """N:M mask: in every group of ``m`` consecutive inputs of an output, keep the ``n`` largest.

    The groups run along the *input* axis (axis -2 of a Dense ``(in, out)`` or Conv2D
    ``(kh, kw, in, out)`` kernel; axis 0 of a vector), the layout sparse tensor cores use
    for 2:4 sparsity (Mishra et al. 2021). Ties keep the earlier input.

    Raises:
        ValueError: ``n`` not in 1..m, or the input axis is not a multiple of ``m``.

    Example:
        >>> nm_mask(np.array([[1.0], [-4.0], [3.0], [0.5]]), n=2, m=4).ravel()
        array([0., 1., 1., 0.], dtype=float32)
    """
    w = check_array(w, "w")
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n", maximum=m)
    axis = -2 if w.ndim >= 2 else 0
    moved = np.moveaxis(np.abs(w), axis, -1)
    if moved.shape[-1] % m:
        raise ValueError(f"the input axis of w has {moved.shape[-1]} entries, not a multiple of m={m}")
    groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
    order = np.argsort(-groups, axis=-1, kind="stable")  # largest first, earlier on ties
    mask = np.zeros_like(groups, dtype=np.float32)
    np.put_along_axis(mask, order[..., :n], 1.0, axis=-1)
    return np.moveaxis(mask.reshape(moved.shape), -1, axis)


def polynomial_sparsity(step: int, initial: float, final: float, begin: int, end: int,
                        power: float = 3) -> float:
    """Zhu & Gupta (2017): ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0)) ** power``.

    Before ``begin`` the value is ``initial``, after ``end`` it is ``final``. Sparsity
    rises fast at first, while the network has many redundant weights, and slowly at the
    end, when few are left.

    Raises:
        ValueError: ``initial``/``final`` outside [0, 1), ``initial > final``, ``end <= begin``.

    Example:
        >>> polynomial_sparsity(50, 0.0, 0.9, 0, 100)
        0.7875
    """
    initial, final = check_fraction(initial, "initial"), check_fraction(final, "final")
    if initial > final:
        raise ValueError(f"initial sparsity must not exceed final, got initial={initial}, final={final}")
    if end <= begin:
        raise ValueError(f"end must be after begin, got begin={begin}, end={end}")
    progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return float(final + (initial - final) * (1.0 - progress) ** power)


def constant_sparsity(step: int, sparsity: float, begin: int = 0) -> float:
    """One-shot schedule: ``sparsity`` from step ``begin`` on, 0 before.

    Raises:
        ValueError: ``sparsity`` outside [0, 1).
    """
    sparsity = check_fraction(sparsity, "sparsity")
    return sparsity if step >= begin else 0.0


def l1_scores(kernel: Any) -> np.ndarray:
    """L1 norm of each output unit's incoming weights (Li et al. 2017): sum over all but the last axis."""
    kernel = np.asarray(kernel)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def l2_scores(kernel: Any) -> np.ndarray:
    """L2 norm of each output unit's incoming weights."""
    kernel = np.asarray(kernel)
    return np.sqrt(np.square(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0))


def mean_activation_scores(activations: Any) -> np.ndarray:
    """Mean activation of each unit over examples (and positions): low means unimportant."""
    a = np.asarray(activations)
    return a.reshape(-1, a.shape[-1]).mean(axis=0)


def apoz_scores(activations: Any) -> np.ndarray:
    """``1 - APoZ``, the fraction of non-zero activations (Hu et al. 2016): low means unimportant."""
    a = np.asarray(activations)
    return (a.reshape(-1, a.shape[-1]) != 0).mean(axis=0)


# =======================================================================================
# Schedules
# =======================================================================================

class _Schedule:
    """A pruning schedule: ``schedule(step) -> (update_masks_now, target_sparsity)``."""

    def __init__(self, begin: int, end: int, frequency: int) -> None:
        self.begin = check_positive_int(begin, "begin", minimum=0)
        self.end = check_positive_int(end, "end", minimum=-1)
        if 0 <= self.end < self.begin:  # the masks would never be updated
            raise ValueError(f"end must be -1 (no end) or >= begin={self.begin}, got {self.end}")
        self.frequency = check_positive_int(frequency, "frequency")

    def _in_range(self, step: int) -> bool:
        return step >= self.begin and (self.end < 0 or step <= self.end)

    def _turn(self, step: int) -> bool:
        return self._in_range(step) and ((step - self.begin) % self.frequency == 0 or step == self.end)

    def get_config(self) -> dict:
        return {k: getattr(self, k) for k in self._config_keys}

    @classmethod
    def from_config(cls, config: dict) -> "_Schedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._config_keys)
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="compressnet_lite")
class ConstantSparsity(_Schedule):
    """Prune to a fixed ``sparsity`` every ``frequency`` steps from ``begin`` to ``end`` (-1: forever).

    Example:
        >>> ConstantSparsity(0.8, frequency=10)(20)
        (True, 0.8)
    """

    _config_keys = ("sparsity", "begin", "end", "frequency")

    def __init__(self, sparsity: float, begin: int = 0, end: int = -1, frequency: int = 100) -> None:
        super().__init__(begin, end, frequency)
        self.sparsity = check_fraction(sparsity, "sparsity")

    def __call__(self, step: int) -> tuple[bool, float]:
        return self._turn(step), constant_sparsity(step, self.sparsity, self.begin)


@keras.saving.register_keras_serializable(package="compressnet_lite")
class PolynomialDecay(_Schedule):
    """Gradual pruning (Zhu & Gupta 2017): ``initial`` -> ``final`` between ``begin`` and ``end``.

    Masks are updated every ``frequency`` steps and at ``end`` (so ``final`` is reached).

    Example:
        >>> PolynomialDecay(0.0, 0.9, begin=0, end=100, frequency=50)(50)
        (True, 0.7875)
    """

    _config_keys = ("initial", "final", "begin", "end", "power", "frequency")

    def __init__(self, initial: float, final: float, begin: int, end: int, power: float = 3,
                 frequency: int = 100) -> None:
        super().__init__(begin, end, frequency)
        self.initial = check_fraction(initial, "initial")
        self.final = check_fraction(final, "final")
        if self.initial > self.final:
            raise ValueError(f"initial sparsity must not exceed final, got initial={self.initial}, "
                             f"final={self.final}")
        if self.end <= self.begin:
            raise ValueError(f"end must be after begin, got begin={begin}, end={end}")
        if not power > 0:
            raise ValueError(f"power must be > 0, got {power}")
        self.power = float(power)

    def __call__(self, step: int) -> tuple[bool, float]:
        return self._turn(step), polynomial_sparsity(step, self.initial, self.final, self.begin,
                                                     self.end, self.power)


# =======================================================================================
# Keras glue: masked layers
# =======================================================================================

@keras.saving.register_keras_serializable(package="compressnet_lite")
class MaskConstraint(keras.constraints.Constraint):
    """Kernel constraint ``w -> inner(w) * mask``; the mask is a variable of the layer.

    The optimizer applies a variable's constraint after every update, inside the compiled
    train step, so pruned weights stay exactly zero with any optimizer. The mask is state,
    so it is not part of the config: the layer owns it as its ``cnl_mask`` weight.

    On JAX the compiled step applies constraints in a scope that holds only the trainable
    and optimizer variables, so the mask is read as the value the layer's forward pass saw
    in the same step (recorded by the layer's ``call``): still in-graph, still current.
    """

    def __init__(self, mask: Any = None, inner: Any = None) -> None:
        self.mask = mask
        self.inner = inner
        self.step_mask = None  # JAX: the mask's value in the step being traced

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        if self.mask is None:
            return w
        mask = self.mask
        if self.step_mask is not None and _backend.outside_scope(mask):
            mask = self.step_mask
        return w * (mask if mask.dtype == w.dtype else keras.ops.cast(mask, w.dtype))

    def get_config(self) -> dict:
        return {}


class _Prunable:
    """Mixin: a ``cnl_mask`` variable shaped like the kernel, enforced by a MaskConstraint."""

    def build(self, input_shape):
        super().build(input_shape)
        self.cnl_mask = self.add_weight(name="cnl_mask", shape=tuple(self.kernel.shape),
                                        initializer="ones", trainable=False)
        self._kernel.constraint = MaskConstraint(self.cnl_mask, self.kernel_constraint)

    def call(self, inputs, *args, **kwargs):
        constraint = self._kernel.constraint
        if isinstance(constraint, MaskConstraint) and keras.backend.backend() == "jax":
            value = _backend.scope_value(self.cnl_mask)
            if value is not None:  # inside a compiled step: the constraint will need it
                constraint.step_mask = value
        return super().call(inputs, *args, **kwargs)

    def _own_variables(self) -> list:
        return [self._kernel] + ([self.bias] if self.use_bias else []) + [self.cnl_mask]

    # Dense/Conv2D save a fixed list (kernel, bias); the mask must travel with them.
    def save_own_variables(self, store):
        if self.built:
            for i, variable in enumerate(self._own_variables()):
                store[str(i)] = variable

    def load_own_variables(self, store):
        self._check_load_own_variables(store)
        if self.built:
            for i, variable in enumerate(self._own_variables()):
                variable.assign(store[str(i)])

    def apply_mask(self, mask: np.ndarray) -> None:
        """Set the mask and zero the pruned kernel weights (outside the train step)."""
        mask = np.asarray(mask, dtype=np.float32)
        self.cnl_mask.assign(mask)
        self._kernel.assign(self._kernel * self.cnl_mask)


@keras.saving.register_keras_serializable(package="compressnet_lite")
class PrunableDense(_Prunable, keras.layers.Dense):
    """A Dense layer whose kernel is multiplied by its ``cnl_mask`` after every update."""


@keras.saving.register_keras_serializable(package="compressnet_lite")
class PrunableConv2D(_Prunable, keras.layers.Conv2D):
    """A Conv2D layer whose kernel is multiplied by its ``cnl_mask`` after every update."""


_PRUNABLE = {keras.layers.Dense: PrunableDense, keras.layers.Conv2D: PrunableConv2D}


def _plain_class(layer: keras.layers.Layer) -> type | None:
    if isinstance(layer, _Prunable):
        return keras.layers.Dense if isinstance(layer, keras.layers.Dense) else keras.layers.Conv2D
    return type(layer) if type(layer) in _PRUNABLE else None


def _select_layers(model: keras.Model, layers: Sequence[Any] | None) -> list[keras.layers.Layer]:
    """The Dense/Conv2D layers to prune (all of them by default, nested models included), in graph order."""
    from compressnet_lite import surgery

    all_layers = surgery.graph_layers(model)
    if layers is None:
        chosen = [l for l in all_layers if _plain_class(l) is not None]
        if not chosen:
            raise ValueError(f"model {model.name!r} has no Dense or Conv2D layer to prune")
        return chosen
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    chosen = []
    for item in layers:
        layer = surgery._find_layer(model, item, "layers")
        if _plain_class(layer) is None:
            raise ValueError(f"layer {layer.name!r} is a {type(layer).__name__}; pruning supports "
                             "Dense and Conv2D layers")
        chosen.append(layer)
    if not chosen:
        raise ValueError("layers must name at least one layer")
    return [l for l in all_layers if any(l is c for c in chosen)]


def _np(v: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v))


def masks(model: keras.Model) -> dict[str, np.ndarray]:
    """The pruning masks of ``model``'s masked layers (nested models included), by layer name."""
    from compressnet_lite import surgery

    check_model(model)
    return {l.name: _np(l.cnl_mask) for l in surgery.graph_layers(model) if isinstance(l, _Prunable)}


def _with_masks(model: keras.Model, new_masks: dict[str, np.ndarray]) -> keras.Model:
    """A copy of ``model`` whose layers in ``new_masks`` are masked layers holding those masks."""
    from compressnet_lite import surgery

    def make(layer):
        if layer.name in new_masks and type(layer) in _PRUNABLE:
            return _PRUNABLE[type(layer)].from_config(layer.get_config())
        return None

    new = surgery.rewrite(model, make)  # kernel, bias (and an existing mask) copied by path
    by_name = {l.name: l for l in surgery.graph_layers(new)}
    for name, mask in new_masks.items():
        by_name[name].apply_mask(mask)
    return new


# =======================================================================================
# Importance criteria (callables): weights -> scores, higher = more important
# =======================================================================================

def _batch(data: Any, name: str = "data") -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` from a Dataset (its training split), an ``(x, y)`` tuple or an array ``x``."""
    if data is None:
        raise ValueError(f"{name} is required: pass (x, y) or a compressnet_lite Dataset")
    if hasattr(data, "x_train"):
        x, y = data.x_train, data.y_train
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    x = check_array(x, f"{name} inputs")
    if y is not None:
        y = check_array(y, f"{name} labels", ndim=1)
        if len(y) != len(x):
            raise ValueError(f"{name}: inputs and labels differ in length ({len(x)} vs {len(y)})")
    return x.astype(np.float32), y


def _kernel_gradients(model: keras.Model, layers: list, data: Any, batch_size: int = 512) -> list[np.ndarray]:
    """Gradient of the mean cross-entropy over ``data`` with respect to each layer's kernel
    (on any backend: :func:`compressnet_lite._backend.loss_gradients`)."""
    x, y = _batch(data)
    if y is None:
        raise ValueError("data needs labels for a gradient criterion: pass (x, y)")
    return _backend.loss_gradients(model, [l.kernel for l in layers], x, y, batch_size=batch_size)


def magnitude(model: keras.Model, layers: list, data: Any = None) -> list[np.ndarray]:
    """Criterion ``|w|`` (Han et al. 2015): needs no data."""
    return [np.abs(_np(l.kernel)) for l in layers]


def gradient(model: keras.Model, layers: list, data: Any = None) -> list[np.ndarray]:
    """Criterion ``|dL/dw|`` on ``data``: the article's "gradient magnitude"."""
    return [np.abs(g) for g in _kernel_gradients(model, layers, data)]


def taylor(model: keras.Model, layers: list, data: Any = None) -> list[np.ndarray]:
    """Criterion ``|w * dL/dw|``, the first-order Taylor estimate of the loss change when
    ``w`` is set to zero (Molchanov et al. 2017)."""
    grads = _kernel_gradients(model, layers, data)
    return [np.abs(_np(l.kernel) * g) for l, g in zip(layers, grads)]


WEIGHT_CRITERIA: dict[str, Callable] = {"magnitude": magnitude, "gradient": gradient, "taylor": taylor}
"""Connection criteria by name: ``fn(model, layers, data) -> [scores shaped like each kernel]``."""

_NEEDS_DATA = {"gradient", "taylor", "mean_activation", "apoz"}


def _criterion(criterion: Any, table: dict, data: Any) -> Callable:
    if callable(criterion):
        return criterion
    check_choice(criterion, "criterion", tuple(table))
    if criterion in _NEEDS_DATA and data is None:
        raise ValueError(f"criterion {criterion!r} needs data: pass data=(x, y) or a Dataset")
    return table[criterion]


# =======================================================================================
# Keras glue: one-shot pruning, gradual pruning, strip
# =======================================================================================

def _compute_masks(model: keras.Model, layers: list, sparsity: float, scope: str,
                   criterion: Callable, data: Any,
                   current: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """New masks at ``sparsity``; weights a masked layer has already pruned stay pruned."""
    scores = [np.asarray(s) for s in criterion(model, layers, data)]
    alive = []  # flat indices still unpruned, per layer
    for layer, s in zip(layers, scores):
        if s.shape != tuple(layer.kernel.shape):
            raise ValueError(f"criterion returned shape {s.shape} for layer {layer.name!r}, "
                             f"expected {tuple(layer.kernel.shape)}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"criterion returned NaN or infinite scores for layer {layer.name!r}")
        if isinstance(layer, _Prunable):
            mask = current[layer.name] if current is not None else _np(layer.cnl_mask)
            alive.append(np.flatnonzero(mask))
        else:
            alive.append(np.arange(s.size))
    out = {}
    if scope == "layer":
        for layer, s, idx in zip(layers, scores, alive):
            extra = int(round(sparsity * s.size)) - (s.size - idx.size)
            mask = np.zeros(s.size, dtype=np.float32)
            mask[idx] = 1.0
            mask[idx[lowest(s.ravel()[idx], extra)]] = 0.0
            out[layer.name] = mask.reshape(s.shape)
        return out
    total = sum(s.size for s in scores)
    extra = int(round(sparsity * total)) - (total - sum(idx.size for idx in alive))
    pooled = np.concatenate([s.ravel()[idx] for s, idx in zip(scores, alive)])
    pruned = np.zeros(pooled.size, dtype=bool)
    pruned[lowest(pooled, extra)] = True
    start = 0
    for layer, s, idx in zip(layers, scores, alive):
        mask = np.zeros(s.size, dtype=np.float32)
        mask[idx[~pruned[start:start + idx.size]]] = 1.0
        out[layer.name] = mask.reshape(s.shape)
        start += idx.size
    return out


def prune(model: keras.Model, sparsity: float, scope: str = "layer", criterion: Any = "magnitude",
          data: Any = None, layers: Sequence[Any] | None = None) -> keras.Model:
    """One-shot pruning: a new model whose chosen kernels are zero where the criterion is lowest.

    The pruned Dense/Conv2D layers become :class:`PrunableDense`/:class:`PrunableConv2D`
    (same names, same config) holding the mask, so that fine-tuning with ``fit`` keeps the
    zeros. ``sparsity=0`` only adds the masks: the starting point of gradual pruning with
    :class:`PruningCallback`. Use :func:`strip` to get plain layers back.

    Args:
        model: a built Sequential or functional model.
        sparsity: fraction of the chosen kernels' weights to prune, in [0, 1).
        scope: ``"layer"`` prunes that fraction of every layer; ``"global"`` ranks all
            chosen weights together (one threshold for the whole model).
        criterion: ``"magnitude"`` (|w|), ``"gradient"`` (|dL/dw|), ``"taylor"``
            (|w dL/dw|), or a callable ``fn(model, layers, data) -> list of score arrays``.
        data: ``(x, y)`` or a :class:`~compressnet_lite.data.Dataset` (its training split),
            needed by the gradient and Taylor criteria.
        layers: names (or layers) to prune; default: every Dense and Conv2D layer.

    Returns:
        A new, uncompiled model; ``model`` is not changed.

    Raises:
        TypeError / ValueError: sparsity outside [0, 1), unknown scope or criterion,
            a criterion needing data without data, unknown or unsupported layer, unbuilt
            model, NaN weights, subclassed or nested model.
    """
    check_model(model)
    sparsity = check_fraction(sparsity, "sparsity")
    check_choice(scope, "scope", ("layer", "global"))
    fn = _criterion(criterion, WEIGHT_CRITERIA, data)
    chosen = _select_layers(model, layers)
    return _with_masks(model, _compute_masks(model, chosen, sparsity, scope, fn, data))


def strip(model: keras.Model) -> keras.Model:
    """A plain Keras copy of ``model``: masked layers become Dense/Conv2D holding the zeros.

    Raises:
        ValueError: unbuilt model, NaN weights, subclassed model.
    """
    from compressnet_lite import surgery

    check_model(model)
    masked = [l for l in surgery.graph_layers(model) if isinstance(l, _Prunable)]
    ids = {id(l) for l in masked}

    def make(layer):
        return _plain_class(layer).from_config(layer.get_config()) if id(layer) in ids else None

    return surgery.rewrite(model, make, weights={
        l.name: {"kernel": _np(l.kernel) * _np(l.cnl_mask)} for l in masked})


register_transform(_Prunable, strip)  # how storage.plain_model drops the masks


def _masks_assigner(layers: list) -> Callable:
    """One compiled function that sets every layer's mask and zeroes its pruned weights
    (a single call instead of several eager operations per layer, on any backend)."""
    return _backend.assign_products([(layer.cnl_mask, layer._kernel) for layer in layers])


class PruningCallback(keras.callbacks.Callback):
    """Gradual pruning during ``fit``: masks are recomputed on the schedule's steps.

    The model must already hold masks (``prune(model, 0.0)``, or any pruned model). On
    every step where ``schedule(step)`` says so, the chosen layers' masks are recomputed
    at the scheduled sparsity (weights pruned earlier stay pruned) and the newly pruned
    weights are zeroed; in between, the masks' kernel constraints keep them zero inside
    the compiled train step. The step is the optimizer's (``optimizer.iterations``), so a
    reloaded, compiled model resumes its schedule, and with ``steps_per_execution = k``
    (k optimizer steps per callback call) the schedule keeps its length in steps: the masks
    are updated before the first group of k steps that contains a scheduled step, at the
    latest scheduled sparsity of the group. Works on every Keras backend.

    Args:
        schedule: a :class:`PolynomialDecay`, :class:`ConstantSparsity` or any callable
            ``step -> (update_now, sparsity)``.
        scope: ``"layer"`` or ``"global"`` (see :func:`prune`).
        criterion: a weight criterion name or callable (see :func:`prune`).
        data: data for the gradient/Taylor criteria.

    Example:
        >>> model = prune(cnl.models.seed_mlp(), 0.0)  # doctest: +SKIP
        >>> cb = PruningCallback(PolynomialDecay(0.0, 0.9, 0, 400, frequency=40))  # doctest: +SKIP
        >>> cnl.models.train(model, data, epochs=10, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, schedule: Callable[[int], tuple[bool, float]], scope: str = "layer",
                 criterion: Any = "magnitude", data: Any = None) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be a callable step -> (update, sparsity), got "
                            f"{type(schedule).__name__}")
        self.schedule = schedule
        self.scope = check_choice(scope, "scope", ("layer", "global"))
        self.criterion = _criterion(criterion, WEIGHT_CRITERIA, data)
        self.data = data
        self.step = 0
        self.sparsity = 0.0

    def on_train_begin(self, logs=None):
        model = self.model
        self._layers = [l for l in model.layers if isinstance(l, _Prunable)]
        if not self._layers:
            raise ValueError(f"model {model.name!r} has no masked layers: call "
                             "compressnet_lite.pruning.prune(model, 0.0) before fit")
        self.step = self._epoch_start = self._iterations(model)
        # steps_per_execution > 1 runs several optimizer steps per batch callback
        self._per_call = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        self._masks = {l.name: _np(l.cnl_mask) for l in self._layers}
        key = tuple(id(l) for l in self._layers)
        if getattr(self, "_assign_key", None) != key:  # trace once, not on every fit call
            self._assign, self._assign_key = _masks_assigner(self._layers), key

    @staticmethod
    def _iterations(model: keras.Model) -> int:
        optimizer = getattr(model, "optimizer", None)
        return int(_np(optimizer.iterations)) if optimizer is not None and optimizer.built else 0

    def on_epoch_begin(self, epoch, logs=None):
        # The optimizer's step count, read where every backend has it in the model (JAX
        # keeps the training state outside the variables inside an epoch); Keras numbers
        # the batches of an epoch by optimizer step, also with steps_per_execution > 1.
        self.step = self._epoch_start = self._iterations(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        first = self._epoch_start + int(batch)
        due = [target for update, target in map(self.schedule, range(first, first + self._per_call))
               if update]
        if due:  # one mask update before these steps, at the latest scheduled sparsity
            target = float(due[-1])
            new = _compute_masks(self.model, self._layers, target, self.scope,
                                 self.criterion, self.data, self._masks)
            self._assign([new[l.name] for l in self._layers])
            self._masks = new
            self.sparsity = target
        self.step = first

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_start + int(batch) + 1  # optimizer steps done

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sparsity"] = self.sparsity


# =======================================================================================
# Structured pruning: physically smaller models
# =======================================================================================

_NOT_IMPORTANCE = ("bias", "beta", "moving_mean", "moving_variance", "mean", "variance", "count")


class GroupImportance:
    """Importance of each unit of a dependency group, aggregated over the group's members.

    A structured-pruning criterion in the spirit of Torch-Pruning's group importance (Fang
    et al. 2023): every member with weights along the group's channels (the producers'
    output filters, the consumers' input rows, BatchNormalization's scale, a depthwise
    kernel, attention heads' projections) gives a local score per unit, and the local
    scores are reduced over members. Biases and shifts do not count.

    Args:
        kind: ``"l1"`` (sum of ``|w|`` over the unit's slice), ``"l2"`` (sum of ``w**2``,
            as Torch-Pruning's ``GroupMagnitudeImportance(p=2)``), ``"taylor"`` (sum of
            ``|w * dL/dw|``, the first-order estimate of the loss change, Molchanov et al.
            2019; needs labelled data), ``"mean_activation"`` (mean ``|a|`` of the unit on the
            tensors its consumers read) or ``"apoz"`` (fraction of non-zero activations,
            Hu et al. 2016); the activation kinds need data and do not use ``members``.
        members: ``"all"`` or ``"producers"`` (only the weights that compute each unit: the
            filter norm of Li et al. 2017, "Pruning Filters for Efficient ConvNets").
        reduce: ``"mean"`` or ``"sum"`` over members.

    Example:
        >>> import compressnet_lite as cnl
        >>> from compressnet_lite import surgery
        >>> model = cnl.models.seed_mlp()
        >>> group = surgery.group_of(model, "fc1")
        >>> GroupImportance("l1")(model, group).shape
        (64,)
    """

    KINDS = ("l1", "l2", "taylor", "mean_activation", "apoz")

    def __init__(self, kind: str = "l1", members: str = "all", reduce: str = "mean") -> None:
        self.kind = check_choice(kind, "kind", self.KINDS)
        self.members = check_choice(members, "members", ("all", "producers"))
        self.reduce = check_choice(reduce, "reduce", ("mean", "sum"))

    @property
    def needs_data(self) -> bool:
        return self.kind in ("taylor", "mean_activation", "apoz")

    def __repr__(self) -> str:
        return f"GroupImportance({self.kind!r}, members={self.members!r}, reduce={self.reduce!r})"

    def __call__(self, model: keras.Model, group: Any, data: Any = None) -> np.ndarray:
        if self.needs_data and data is None:
            raise ValueError(f"criterion {self.kind!r} needs data: pass data=(x, y) or a Dataset")
        if self.kind in ("mean_activation", "apoz"):
            x, _ = _batch(data)
            acts = group.activations(x)
            if self.kind == "mean_activation":
                per = [np.abs(a).mean(axis=(0, 2)) for a in acts]
            else:
                per = [(a != 0).mean(axis=(0, 2)) for a in acts]
            return self._combine(per)
        members = [m for m in group.members
                   if self.members == "all" or m.role in ("producer", "heads")]
        grads = self._gradients(model, members, data) if self.kind == "taylor" else None
        per = []
        for m in members:
            total, counted = np.zeros(group.units), False
            for (path, axis, block), w in zip(m.slices, m.weight_slices()):
                if path.split("/")[-1] in _NOT_IMPORTANCE:
                    continue
                if self.kind == "l1":
                    total += np.abs(w).sum(axis=1)
                elif self.kind == "l2":
                    total += np.square(w).sum(axis=1)
                else:
                    total += np.abs(w * grads[(id(m), path)]).sum(axis=1)
                counted = True
            if counted:
                per.append(total)
        if not per:
            raise ValueError(f"group {group.index} ({group.root!r}) has no weights for criterion "
                             f"{self!r}")
        return self._combine(per)

    def _combine(self, per: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(per)
        return stacked.mean(axis=0) if self.reduce == "mean" else stacked.sum(axis=0)

    def _gradients(self, model, members, data) -> dict:
        from compressnet_lite import _backend, surgery

        x, y = _batch(data)
        if y is None:
            raise ValueError("data needs labels for the Taylor criterion: pass (x, y)")
        wanted = []
        for m in members:
            variables = surgery._relative_variables(m.layer)
            for path, _, _ in m.slices:
                if path.split("/")[-1] not in _NOT_IMPORTANCE:
                    wanted.append((m, path, variables[path]))
        unique = list({id(v): v for _, _, v in wanted}.values())
        grads = dict(zip((id(v) for v in unique),
                         _backend.loss_gradients(model, unique, x, y)))
        out = {}
        for m, path, v in wanted:
            g = np.moveaxis(np.asarray(grads[id(v)]), [a for p, a, _ in m.slices if p == path][0], 0)
            block = [b for p, _, b in m.slices if p == path][0]
            rows = surgery._rows(m.index, block)
            out[(id(m), path)] = g[rows].reshape(rows.shape[0], -1)
        return out


NEURON_CRITERIA: dict[str, Callable] = {kind: GroupImportance(kind) for kind in GroupImportance.KINDS}
"""Unit criteria by name (:class:`GroupImportance` over every member): ``fn(model, group, data)
-> one score per unit of the dependency group``."""


def neuron_scores(model: keras.Model, layer: Any, criterion: Any = "l1", data: Any = None) -> np.ndarray:
    """One importance score per unit of the dependency group ``layer`` produces (higher = keep).

    Args:
        model: a built Sequential or functional model.
        layer: a layer producing a channel group (see :func:`compressnet_lite.surgery.group_of`).
        criterion: a name of :data:`NEURON_CRITERIA`, a :class:`GroupImportance`, or any
            ``fn(model, group, data) -> (units,) scores``.
        data: ``(x, y)`` or a Dataset, for the criteria that need data.

    Raises:
        ValueError: unknown layer or criterion, scores of the wrong shape or not finite.
    """
    from compressnet_lite import surgery

    check_model(model)
    group = surgery.group_of(model, layer)
    return _group_scores(model, group, _criterion(criterion, NEURON_CRITERIA, data), data)


def _group_scores(model: keras.Model, group: Any, fn: Callable, data: Any) -> np.ndarray:
    scores = np.asarray(fn(model, group, data), dtype=np.float64)
    if scores.shape != (group.units,):
        raise ValueError(f"criterion returned shape {scores.shape} for group {group.root!r}, "
                         f"expected ({group.units},)")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"criterion returned NaN or infinite scores for group {group.root!r}")
    return scores


def normalize_scores(scores: Any, method: str | None = "mean") -> np.ndarray:
    """Make one group's unit scores comparable with another group's (for ``scope="global"``).

    ``"mean"`` and ``"max"`` divide by the group's mean or maximum; ``"lamp"`` is the LAMP
    score of Lee et al. 2021, ``s_i / sum_{s_j >= s_i} s_j`` (the unit's share of what
    remains when every smaller unit is gone); ``None`` leaves them as they are.

    Example:
        >>> normalize_scores([1.0, 2.0, 3.0], "lamp").round(3)
        array([0.167, 0.4  , 1.   ])
    """
    s = check_array(scores, "scores", ndim=1).astype(np.float64)
    if method is None:
        return s
    check_choice(method, "normalize", ("mean", "max", "lamp"))
    if method == "lamp":
        order = np.argsort(s, kind="stable")
        tail = np.cumsum(s[order][::-1])[::-1]       # sum of s_j >= s_i, over the sorted order
        out = np.empty_like(s)
        out[order] = s[order] / np.where(tail > 0, tail, 1.0)
        return out
    scale = s.mean() if method == "mean" else s.max()
    return s / scale if scale > 0 else s


def _round_keep(n_keep: int, units: int, unit_channels: int, round_to: int | None) -> int:
    """Kept units such that kept channels are a multiple of ``round_to`` (or all units)."""
    if not round_to:
        return n_keep
    step = round_to // math.gcd(round_to, unit_channels)
    return min(units, int(math.ceil(n_keep / step) * step))


def prune_neurons(model: keras.Model, fraction: float | None = None, threshold: float | None = None,
                  criterion: Any = "l1", data: Any = None, layers: Sequence[Any] | None = None, *,
                  scope: str = "layer", normalize: str | None = "mean",
                  round_to: int | None = None) -> keras.Model:
    """Remove whole units (channels, filters, attention heads) of any functional graph.

    The units are those of :func:`compressnet_lite.surgery.dependency_groups`: in a chain,
    a layer's outputs and the next layer's matching input rows; in a residual network,
    every channel of a residual stream with every layer that reads or writes it; in a
    transformer, attention heads and feed-forward units. Scores come from the original
    model; each group keeps its highest-scoring units (at least one) and
    :func:`compressnet_lite.surgery.keep_channels` cuts every member. The result computes
    what the original computes when the removed units' outgoing weights are zero.

    Args:
        model: a built Sequential or functional model (pruning masks are stripped first).
        fraction: fraction of the units to remove, in [0, 1): of every group
            (``scope="layer"``) or of all chosen units together (``scope="global"``).
        threshold: remove the units scoring below it instead (give exactly one of the two).
        criterion: a name of :data:`NEURON_CRITERIA` (``"l1"``, ``"l2"``, ``"taylor"``,
            ``"mean_activation"``, ``"apoz"``), a :class:`GroupImportance`, or any
            ``fn(model, group, data) -> scores``.
        data: ``(x, y)`` or a Dataset, for the criteria that need data.
        layers: names of layers whose output groups to prune; default: every prunable group.
        scope: ``"layer"`` (every group loses the same fraction) or ``"global"`` (scores are
            normalised per group, then ranked together).
        normalize: for ``scope="global"``: ``"mean"``, ``"max"``, ``"lamp"`` or ``None``
            (:func:`normalize_scores`); thresholds apply to the normalised scores then.
        round_to: keep channel counts multiples of this (e.g. 8 for fast kernels).

    Returns:
        A new, smaller, uncompiled model; ``model`` is not changed.

    Raises:
        TypeError / ValueError: both/neither of fraction and threshold, bad values, unknown
            scope/criterion/normalize, a named layer whose group cannot be pruned (the
            reason is given), a criterion needing data without data, a model with no
            prunable group.

    Example:
        >>> import compressnet_lite as cnl
        >>> small = prune_neurons(cnl.models.seed_mlp(), 0.5)
        >>> small.get_layer("fc1").units, small.get_layer("fc2").units
        (32, 16)
    """
    from compressnet_lite import surgery

    with surgery.reading():
        return _prune_neurons(model, fraction, threshold, criterion, data, layers, scope, normalize,
                              round_to)


def _prune_neurons(model, fraction, threshold, criterion, data, layers, scope, normalize, round_to):
    from compressnet_lite import surgery

    check_model(model)
    if (fraction is None) == (threshold is None):
        raise ValueError(f"give exactly one of fraction or threshold, got fraction={fraction}, "
                         f"threshold={threshold}")
    if fraction is not None:
        fraction = check_fraction(fraction, "fraction")
    else:
        threshold = check_real(threshold, "threshold")
    check_choice(scope, "scope", ("layer", "global"))
    if normalize is not None:
        check_choice(normalize, "normalize", ("mean", "max", "lamp"))
    if round_to is not None:
        round_to = check_positive_int(round_to, "round_to")
    fn = _criterion(criterion, NEURON_CRITERIA, data)
    if any(isinstance(l, _Prunable) for l in surgery.graph_layers(model)):
        model = strip(model)
    groups = surgery.dependency_groups(model)
    if layers is None:
        chosen = groups.prunable()
        if not chosen:
            raise ValueError(f"model {model.name!r} has no prunable channel group: {groups!r}")
    else:
        names = [layers] if isinstance(layers, (str, keras.layers.Layer)) else list(layers)
        if not names:
            raise ValueError("layers must name at least one layer")
        chosen = []
        for name in names:
            group = surgery.group_of(model, name, groups)
            if not group.prunable:
                raise ValueError(f"the outputs of layer {group.root!r} cannot be pruned: {group.reason}")
            if group not in chosen:
                chosen.append(group)
    scores = {g: _group_scores(model, g, fn, data) for g in chosen}
    if scope == "global":
        scores = {g: normalize_scores(s, normalize) for g, s in scores.items()}
    keep_mask = {}
    if threshold is not None:
        keep_mask = {g: s >= threshold for g, s in scores.items()}
    elif scope == "layer":
        keep_mask = {g: score_mask(s, fraction).astype(bool) for g, s in scores.items()}
    else:
        pooled = np.concatenate([scores[g] for g in chosen])
        mask = score_mask(pooled, fraction).astype(bool)
        cuts = np.cumsum([0] + [g.units for g in chosen])
        keep_mask = {g: mask[cuts[i]:cuts[i + 1]] for i, g in enumerate(chosen)}
    keeps = {}
    for g, mask in keep_mask.items():
        s = scores[g]
        width = next((m.index.shape[1] for m in g.members if m.role == "producer"), 1)
        n_keep = _round_keep(max(1, int(mask.sum())), g.units, width, round_to)
        order = np.argsort(-s, kind="stable")          # best first, earlier unit on ties
        keep = np.sort(order[:n_keep]) if n_keep != int(mask.sum()) else np.flatnonzero(mask)
        if keep.size < g.units:
            keeps[g] = keep
    if not keeps:
        return surgery.rewrite(model)
    return surgery.keep_channels(model, keeps)


def recalibrate_batchnorm(model: keras.Model, x: Any, *, batch_size: int = 256) -> keras.Model:
    """A copy of ``model`` whose BatchNormalization statistics are measured again on ``x``.

    Removing channels changes what the layers after them receive, so the moving means and
    variances a BatchNormalization layer learnt no longer describe its input, and a pruned
    network can fall to chance before any fine-tuning although no weight it keeps has
    changed. This sets each layer's statistics to the exact mean and variance of its input
    over ``x``, layer after layer in graph order (so every layer sees inputs already
    normalised by the new statistics of the layers before it), in inference mode (dropout
    off). No weight other than the moving statistics changes.

    Args:
        model: a built Sequential or functional model (not changed).
        x: calibration inputs (a few hundred training examples are enough), or ``(x, y)`` /
            a Dataset (its training inputs).
        batch_size: examples per forward pass.

    Returns:
        A new model; the same as ``model`` if it has no BatchNormalization layer.

    Raises:
        TypeError / ValueError: bad model or data, a BatchNormalization layer inside a nested
            model (flatten the model first) or normalising a non-channel axis.
    """
    from compressnet_lite import surgery

    check_model(model)
    check_positive_int(batch_size, "batch_size")
    x, _ = _batch(x, "x")
    new = surgery.rewrite(model)
    layers = [l for l in surgery.graph_layers(new) if isinstance(l, keras.layers.BatchNormalization)]
    top = {id(l) for l in new.layers}
    for layer in layers:
        if id(layer) not in top:
            raise ValueError(f"BatchNormalization layer {layer.name!r} sits in a nested model; "
                             "recalibrate_batchnorm needs it in the outer graph")
        rank = len(layer.input.shape)
        if layer.axis not in (-1, rank - 1):
            raise ValueError(f"layer {layer.name!r} normalises axis {layer.axis}; channels-last only")
        probe = keras.Model(new.input, layer.input)
        total, total2, count = 0.0, 0.0, 0
        for start in range(0, len(x), batch_size):
            a = np.asarray(_np(probe(x[start:start + batch_size], training=False)), np.float64)
            a = a.reshape(-1, a.shape[-1])
            total, total2, count = total + a.sum(0), total2 + np.square(a).sum(0), count + a.shape[0]
        mean = total / count
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(np.maximum(total2 / count - mean ** 2, 0.0).astype("float32"))
    return new


# =======================================================================================
# Bytes on disk
# =======================================================================================

def save_sparse(model: keras.Model, path: str | os.PathLike) -> int:
    """Write the (pruned) model with :func:`compressnet_lite.storage.save_compressed`.

    The masks are dropped (:func:`strip`) and the zeros kept; the storage format stores each
    kernel's non-zeros with their positions (relative indices or a bitmask, whichever is
    smaller) and everything else densely. Returns the file's size in bytes.
    """
    from compressnet_lite import storage

    check_model(model)
    return storage.save_compressed(strip(model), path).total


def load_sparse(path: str | os.PathLike) -> list[np.ndarray]:
    """Read a :func:`save_sparse` file back: the parameter arrays in ``model.weights`` order
    (masks excluded), ready for ``strip(model).set_weights``."""
    from compressnet_lite import storage

    return storage.load_compressed(path).get_weights()


class SparseBytes(NamedTuple):
    """Bytes on disk: dense float32 npz, the compressed file, ``.keras`` file, gzipped ``.keras``."""

    dense: int
    sparse: int
    keras: int
    keras_gzip: int


def sparse_bytes(model: keras.Model) -> SparseBytes:
    """Measure a (pruned) model's size four ways by writing each file (nothing estimated).

    ``dense`` is an ``.npz`` of every parameter as float32; ``sparse`` the
    :func:`save_sparse` file (the library's compressed format); ``keras``/``keras_gzip`` the
    plain (stripped) ``.keras`` file and its gzip (level 9), from
    :func:`compressnet_lite.metrics.model_bytes`.
    """
    from compressnet_lite.metrics import model_bytes

    check_model(model)
    plain = strip(model)
    with tempfile.TemporaryDirectory() as tmp:
        dense_path = os.path.join(tmp, "dense.npz")
        np.savez(dense_path, *[w.astype(np.float32) for w in plain.get_weights()])
        dense = os.path.getsize(dense_path)
        sparse = save_sparse(plain, os.path.join(tmp, "sparse.cnl"))
    kb = model_bytes(plain)
    return SparseBytes(dense, sparse, kb.keras, kb.gzip)
