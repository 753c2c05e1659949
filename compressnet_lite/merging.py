"""Neuron merging (Srinivas & Babu 2015, "Data-free parameter pruning for deep neural networks").

Two neurons ``i`` and ``j`` of a layer whose *incoming* weights (and biases) are equal
compute the same activation, so the next layer sees ``a_i h + a_j h = (a_i + a_j) h``:
delete ``j`` and add its *outgoing* weights to ``i``'s, ``a_i <- a_i + a_j``. The output
does not change at all. With a ReLU (positively homogeneous: ``relu(c z) = c relu(z)``
for ``c > 0``), a scaled copy ``w_j = c w_i`` merges exactly too, with
``a_i <- a_i + c a_j``. For nearly equal neurons the error is bounded by the saliency

    s_ij = <a_j^2> ||w_j - c w_i||^2,

(``<a_j^2>``: mean square of ``j``'s outgoing weights; ``w`` includes the bias), and
neurons are merged greedily, smallest saliency first. No data are needed.

Array math first (NumPy): :func:`merge_plan`, :func:`cluster_plan`. Keras glue after it:
:func:`merge_neurons`, a thin caller of :func:`compressnet_lite.surgery.keep_channels`, whose
``fold`` matrix adds the removed units' outgoing weights into the kept ones in every layer that
reads them (through residual adds and concatenations too).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import keras
import numpy as np

from compressnet_lite import surgery
from compressnet_lite._checks import (check_array, check_bool, check_choice, check_fraction, check_model,
                                      check_positive_int)

__all__ = ["MergePlan", "merge_plan", "cluster_plan", "merge_neurons", "mergeable_layers"]


class MergePlan(NamedTuple):
    """Which neuron folds into which.

    ``removed[t]`` was merged into ``into[t]`` with scale ``scale[t]`` at saliency
    ``saliency[t]`` (in merge order, so saliencies mostly increase). ``keep`` lists the
    surviving units (sorted) and ``fold`` is the ``(units, len(keep))`` matrix for
    :func:`compressnet_lite.surgery.keep_units`: ``fold[u, k]`` is how much of unit ``u``'s
    outgoing weights go to kept unit ``keep[k]``. ``w_in``/``b_in`` are the kept units' new
    incoming weights and biases (unchanged by pairwise merging; cluster centroids for
    :func:`cluster_plan`).
    """

    keep: np.ndarray
    fold: np.ndarray
    removed: np.ndarray
    into: np.ndarray
    scale: np.ndarray
    saliency: np.ndarray
    w_in: np.ndarray
    b_in: np.ndarray


# --------------------------------------------------------------------------- array math


def merge_plan(w_in: Any, b_in: Any, w_out: Any, ratio: float | None = None,
               threshold: float | None = None, *, scaled: bool = True) -> MergePlan:
    """Plan which neurons of a layer to merge, greedily by Srinivas & Babu's saliency.

    Each step takes the pair ``(j -> i)`` of surviving neurons with the smallest saliency
    ``<a_j^2> ||w_j - c w_i||^2`` (``w`` = incoming weights plus bias, ``a`` = outgoing
    weights, already holding earlier merges), removes ``j`` and adds ``c a_j`` to ``a_i``.
    The scale ``c = <w_j, w_i> / ||w_i||^2`` is the least-squares fit (pairs with ``c <= 0``
    are never merged); with ``scaled=False``, ``c = 1`` (the paper's plain rule, exact
    for identical neurons with any activation).

    Args:
        w_in: incoming weights, ``(fan_in, units)`` (a Dense kernel) or a conv kernel
            ``(..., units)``, flattened to ``(fan_in, units)``.
        b_in: biases, ``(units,)``.
        w_out: outgoing weights, one row per unit: ``(units, ...)`` flattened to
            ``(units, fan_out)`` (the next Dense kernel; for a conv, move the unit axis first).
        ratio: fraction of the units to remove, in [0, 1) (``round(ratio * units)`` merges,
            as :func:`compressnet_lite.pruning.prune_neurons` removes; one unit always stays).
        threshold: merge while the smallest saliency is ``<= threshold`` (at least one unit
            always stays). Give exactly one of ``ratio`` and ``threshold``.
        scaled: allow ``w_j = c w_i`` with ``c > 0`` (exact only for positively homogeneous
            activations such as ReLU).

    Returns:
        A :class:`MergePlan`.

    Raises:
        ValueError: shapes that do not fit, NaN, neither or both of ``ratio``/``threshold``,
            ``ratio`` outside [0, 1), negative ``threshold``.

    Example:
        >>> w = np.array([[1.0, 2.0, 1.0], [0.5, 1.0, -1.0]])   # unit 0 = 0.5 x unit 1
        >>> plan = merge_plan(w, np.zeros(3), np.ones((3, 2)), ratio=0.34)
        >>> plan.removed.tolist(), plan.into.tolist(), plan.scale.round(3).tolist()
        ([0], [1], [0.5])
    """
    vectors, a = _check_arrays(w_in, b_in, w_out)
    units = vectors.shape[0]
    n_remove = _how_many(ratio, threshold, units)
    norms2 = np.einsum("ud,ud->u", vectors, vectors)
    gram = vectors @ vectors.T  # gram[j, i] = <w_j, w_i>
    if scaled:
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(norms2[None, :] > 0, gram / norms2[None, :], 0.0)
        err = norms2[:, None] - 2 * c * gram + c ** 2 * norms2[None, :]  # ||w_j - c w_i||^2
        err = np.where(c > 0, np.maximum(err, 0.0), np.inf)
    else:
        c = np.ones_like(gram)
        err = np.maximum(norms2[:, None] - 2 * gram + norms2[None, :], 0.0)
    np.fill_diagonal(err, np.inf)
    a = a.copy()
    alive = np.ones(units, bool)
    target, coef = np.arange(units), np.ones(units)
    removed, into, scales, saliencies = [], [], [], []
    while alive.sum() > 1 and len(removed) < n_remove:
        ms = np.mean(a ** 2, axis=1)
        sal = ms[:, None] * err
        sal[~alive, :] = np.inf
        sal[:, ~alive] = np.inf
        # a zero-weight neuron (err finite) beats nothing; ties broken by lowest index.
        j, i = np.unravel_index(np.argmin(sal), sal.shape)
        if not np.isfinite(sal[j, i]) or (threshold is not None and sal[j, i] > threshold):
            break
        a[i] += c[j, i] * a[j]
        alive[j] = False
        moved = target == j
        target[moved], coef[moved] = i, coef[moved] * c[j, i]
        removed.append(j), into.append(i), scales.append(c[j, i]), saliencies.append(sal[j, i])
    keep = np.flatnonzero(alive)
    fold = np.zeros((units, keep.size), np.float32)
    fold[np.arange(units), np.searchsorted(keep, target)] = coef
    d = vectors.shape[1]
    return MergePlan(keep, fold, np.array(removed, np.int64), np.array(into, np.int64),
                     np.array(scales, np.float64), np.array(saliencies, np.float64),
                     vectors[keep, : d - 1].T.copy(), vectors[keep, d - 1].copy())


def cluster_plan(w_in: Any, b_in: Any, w_out: Any, ratio: float, *, seed: int = 0,
                 max_iter: int = 100) -> MergePlan:
    """Merge by clustering: k-means on the incoming vectors, one neuron per cluster.

    The ``units - round(ratio * units)`` clusters of the vectors ``[w_i; b_i]`` (Lloyd,
    k-means++ init seeded by ``seed``) each become one neuron whose incoming weights are
    the centroid and whose outgoing weights are the sum of the members'. The kept unit of
    a cluster is its lowest index; ``removed``/``into`` list the others, ``saliency`` their
    ``<a_j^2> ||w_j - centroid||^2``.

    Args:
        w_in, b_in, w_out: as for :func:`merge_plan`.
        ratio: fraction of the units to remove, in [0, 1).
        seed: seed of the k-means++ initialization.
        max_iter: Lloyd iterations at most.

    Returns:
        A :class:`MergePlan` whose ``w_in``/``b_in`` are the centroids.

    Raises:
        ValueError: as for :func:`merge_plan`; ``seed`` negative, ``max_iter < 1``.
        TypeError: ``seed`` or ``max_iter`` not an integer.
    """
    vectors, a = _check_arrays(w_in, b_in, w_out)
    units = vectors.shape[0]
    k = units - _how_many(ratio, None, units)
    check_positive_int(max_iter, "max_iter")
    rng = np.random.default_rng(check_positive_int(seed, "seed", minimum=0))
    centers = [vectors[rng.integers(units)]]
    d2 = np.sum((vectors - centers[0]) ** 2, axis=1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(units, 1 / units)
        centers.append(vectors[rng.choice(units, p=p)])
        d2 = np.minimum(d2, np.sum((vectors - centers[-1]) ** 2, axis=1))
    centers = np.array(centers)
    labels = None
    for _ in range(max_iter):
        dist = np.sum((vectors[:, None, :] - centers[None]) ** 2, axis=2)
        new = np.argmin(dist, axis=1)
        for j in range(k):  # an empty cluster takes the worst-fit vector of a larger cluster
            if not np.any(new == j):
                counts = np.bincount(new, minlength=k)
                far = np.argmax(dist[np.arange(units), new] * (counts[new] > 1))
                new[far] = j
                dist[far] = 0.0
        centers = np.stack([vectors[new == j].mean(axis=0) for j in range(k)])
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
    keep = np.array(sorted(np.flatnonzero(labels == j).min() for j in range(k)), np.int64)
    cluster_of_keep = labels[keep]
    fold = np.zeros((units, k), np.float32)
    fold[np.arange(units), np.argsort(cluster_of_keep)[labels]] = 1.0
    removed = np.setdiff1d(np.arange(units), keep)
    into = keep[np.argsort(cluster_of_keep)[labels[removed]]]
    mismatch = np.sum((vectors[removed] - centers[labels[removed]]) ** 2, axis=1)
    sal = np.mean(a ** 2, axis=1)[removed] * mismatch
    cent = centers[cluster_of_keep]
    d = vectors.shape[1]
    return MergePlan(keep, fold, removed, into, np.ones(removed.size), sal,
                     cent[:, : d - 1].T.copy(), cent[:, d - 1].copy())


def _check_arrays(w_in: Any, b_in: Any, w_out: Any) -> tuple[np.ndarray, np.ndarray]:
    w_in = check_array(w_in, "w_in", ndim=(2, 3, 4, 5)).astype(np.float64)
    units = w_in.shape[-1]
    b_in = check_array(b_in, "b_in", ndim=1).astype(np.float64)
    if b_in.shape != (units,):
        raise ValueError(f"b_in must have shape (units,) = ({units},), got {b_in.shape}")
    w_out = check_array(w_out, "w_out", ndim=(2, 3, 4, 5)).astype(np.float64)
    if w_out.shape[0] != units:
        raise ValueError(f"w_out must have one row per unit ({units}), got shape {w_out.shape}")
    vectors = np.concatenate([w_in.reshape(-1, units), b_in[None]], axis=0).T  # (units, fan_in + 1)
    return vectors, w_out.reshape(units, -1)


def _how_many(ratio: float | None, threshold: float | None, units: int) -> int:
    if (ratio is None) == (threshold is None):
        raise ValueError("give exactly one of ratio (fraction of units to remove) and threshold "
                         f"(largest saliency to merge), got ratio={ratio}, threshold={threshold}")
    if ratio is not None:
        return min(int(round(check_fraction(ratio, "ratio") * units)), units - 1)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    return units - 1


# --------------------------------------------------------------------------- Keras glue

def mergeable_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose output units can be merged: the first producer of every
    dependency group where a merge is exact (for identical units) and allowed."""
    check_model(model)
    return [g.root for g in surgery.dependency_groups(model) if g.mergeable and g.producers]


def _scaled(group, scaled: bool | None, name: str) -> bool:
    if scaled is None:
        return group.scalable
    if scaled and not group.scalable:
        raise ValueError(f"scaled merging (w_j = c w_i) is exact only through positively homogeneous "
                         f"layers without per-channel parameters (ReLU, LeakyReLU, linear, pooling); "
                         f"after {name!r}: {surgery._noscale_reason(group)} ({_first_noscale(group)}); "
                         "pass scaled=False (or None) to merge with c = 1")
    return bool(scaled)


def _first_noscale(group) -> str:
    channel = [m.layer.name for m in group.members if m.role == "channel"]
    if channel:
        names = {type(m.layer).__name__ for m in group.members if m.role == "channel"}
        return ", ".join(sorted(names)) + f" in {channel}"
    bad = []
    for layer_name in group.layers:
        layer = next((m.layer for m in group.members if m.layer.name == layer_name), None)
        if layer is not None and not surgery.positively_homogeneous(layer):
            bad.append(layer_name)
    return f"not positively homogeneous: {bad or group.layers}"


def merge_neurons(model: keras.Model, layer: str | Sequence[str] | None = None,
                  ratio: float | None = None, threshold: float | None = None, *,
                  method: str = "pairwise", scaled: bool | None = None, seed: int = 0) -> keras.Model:
    """Merge redundant units (Dense units, conv filters, coupled channels) into others; no data needed.

    For each chosen layer, the dependency group of its outputs
    (:func:`compressnet_lite.surgery.group_of`) describes each unit by everything that
    computes it (:meth:`~compressnet_lite.surgery.DependencyGroup.incoming`: every
    producer's filter and bias, BatchNormalization's parameters, a depthwise kernel ...) and
    by everything that reads it (:meth:`~compressnet_lite.surgery.DependencyGroup.outgoing`).
    :func:`merge_plan` (``method="pairwise"``, Srinivas & Babu) or :func:`cluster_plan`
    (``method="kmeans"``) decides which units go, and
    :func:`compressnet_lite.surgery.keep_channels` removes them, adding their outgoing weights
    (times the scale) into the units they merge into, in every consumer. Two units that are
    identical in every member merge exactly, whatever the graph (residual adds included);
    groups where even that is not exact (LayerNormalization, attention heads) are refused.
    Layers are processed in order, each on the result of the previous.

    Args:
        model: a built Sequential or functional model.
        layer: a layer name, a list of names, or ``None`` for every mergeable group
            (:func:`mergeable_layers`).
        ratio: fraction of each group's units to remove, in [0, 1).
        threshold: merge while the saliency is at most this (pairwise only). Give exactly
            one of ``ratio`` and ``threshold``.
        method: ``"pairwise"`` or ``"kmeans"``.
        scaled: merge scaled copies ``w_j = c w_i``, ``c > 0`` (pairwise; exact only when every
            layer on the way is positively homogeneous and has no per-channel parameters);
            ``None`` (default) merges scaled copies where that is exact and identical ones
            (``c = 1``) elsewhere; ``False`` always uses ``c = 1`` (the paper's rule).
        seed: seed of k-means++ (``method="kmeans"``).

    Returns:
        A new, smaller, uncompiled model; ``model`` is not changed.

    Raises:
        TypeError: ``model`` not a keras.Model, ``layer`` not a name.
        ValueError: unknown layer, a layer whose outputs cannot be pruned or merged (the
            reason is given: a model output, LayerNormalization, ...), ``scaled=True``
            through a layer where it is not exact, a ``threshold`` with ``method="kmeans"``,
            ``ratio``/``threshold`` out of range.

    Example:
        >>> small = merge_neurons(model, "fc1", ratio=0.25)   # doctest: +SKIP
        >>> small.get_layer("fc1").units                      # doctest: +SKIP
        48
    """
    check_model(model)
    check_choice(method, "method", ("pairwise", "kmeans"))
    if method == "kmeans" and threshold is not None:
        raise ValueError("threshold applies to method='pairwise'; give ratio for method='kmeans'")
    if scaled is not None:
        check_bool(scaled, "scaled")
    _how_many(ratio, threshold, 2)  # argument checks before any work
    if layer is None:
        names = mergeable_layers(model)
    elif isinstance(layer, (str, keras.layers.Layer)):
        names = [surgery._find_layer(model, layer).name]
    elif isinstance(layer, Sequence):
        names = [surgery._find_layer(model, name).name for name in layer]
    else:
        raise TypeError(f"layer must be a layer name, a list of names or None, got {type(layer).__name__}")
    current = model
    for name in names:
        group = surgery.group_of(current, name)
        if not group.prunable:
            raise ValueError(f"the units of layer {name!r} cannot be merged: {group.reason}")
        if group.merge_reason:
            raise ValueError(f"the units of layer {name!r} cannot be merged exactly: {group.merge_reason}")
        use_scale = _scaled(group, scaled, name) if method == "pairwise" else False
        with surgery.reading():
            v, a = group.incoming(), group.outgoing()
        zeros = np.zeros(group.units)
        if method == "pairwise":
            plan = merge_plan(v.T, zeros, a, ratio, threshold, scaled=use_scale)
        else:
            plan = cluster_plan(v.T, zeros, a, ratio, seed=seed)
        if plan.keep.size == group.units:
            continue
        incoming = {group: plan.w_in.T} if method == "kmeans" else None
        current = surgery.keep_channels(current, {group: plan.keep}, fold={group: plan.fold},
                                        incoming=incoming)
    if current is model:  # nothing merged: still return a new model
        current = surgery.rewrite(model)
    return current
