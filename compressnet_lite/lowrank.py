"""Low-rank factorization of a Dense layer by truncated SVD (Denton et al. 2014; Xue et al. 2013).

A Dense kernel ``W`` (``m`` inputs x ``n`` outputs) with singular values
``s_1 >= s_2 >= ...`` is replaced by the best rank-``r`` approximation (Eckart-Young)

    W ~ U_r S_r V_r^T = (U_r S_r^(1/2)) (S_r^(1/2) V_r^T) = A B,

i.e. by two Dense layers, ``m x r`` (no bias, linear) then ``r x n`` (the old bias and
activation). Parameters drop from ``m n`` to ``r (m + n)``, so it pays only when
``r < m n / (m + n)``. The rank can be chosen by the *energy* kept,
``sum_{i<=r} s_i^2 / sum_i s_i^2`` (the squared Frobenius norm of the approximation).

Array math first (NumPy): :func:`svd_factors`, :func:`rank_for_energy`,
:func:`lowrank_cost`. Keras glue: :func:`factorize`, a thin caller of
:func:`compressnet_lite.surgery.replace_layer`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import numpy as np

from compressnet_lite import surgery
from compressnet_lite._checks import check_array, check_fraction, check_model, check_positive_int

__all__ = ["svd_factors", "rank_for_energy", "LowRankCost", "lowrank_cost", "factorize"]


# --------------------------------------------------------------------------- array math


def svd_factors(w: Any, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The best rank-``rank`` factors ``A (m, r)``, ``B (r, n)`` of ``w (m, n)``: ``A @ B ~ w``.

    The singular values are split evenly, ``A = U_r sqrt(S_r)``, ``B = sqrt(S_r) V_r^T``, so
    both factors have similar scales (better for fine-tuning than putting ``S`` on one side).

    Raises:
        ValueError: ``w`` not a finite 2-D array, ``rank`` outside ``1..min(m, n)``.

    Example:
        >>> a, b = svd_factors(np.outer([1.0, 2.0], [3.0, 4.0, 5.0]), 1)
        >>> np.allclose(a @ b, np.outer([1.0, 2.0], [3.0, 4.0, 5.0]))
        True
    """
    w = check_array(w, "w", ndim=2)
    rank = check_positive_int(rank, "rank", maximum=min(w.shape))
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(np.float32), (root[:, None] * vt[:rank]).astype(np.float32)


def rank_for_energy(s: Any, energy: float) -> int:
    """Smallest ``r`` with ``sum(s[:r]**2) >= energy * sum(s**2)`` (``s`` in decreasing order).

    Args:
        s: singular values (non-negative, any order: they are sorted first).
        energy: fraction of the squared Frobenius norm to keep, in (0, 1].

    Raises:
        ValueError: ``s`` empty, negative or all zero; ``energy`` outside (0, 1].

    Example:
        >>> rank_for_energy([3.0, 2.0, 1.0], 0.9)   # 9/14 = 0.64, 13/14 = 0.93
        2
    """
    s = check_array(s, "s", ndim=1)
    if np.any(s < 0) or not np.any(s > 0):
        raise ValueError("s must hold non-negative singular values, not all zero")
    energy = check_fraction(energy, "energy", high_inclusive=True)
    if energy == 0.0:
        raise ValueError("energy must be in (0, 1], got 0.0")
    e = np.sort(s.astype(np.float64))[::-1] ** 2
    cumulative = np.cumsum(e) / e.sum()
    return int(min(np.searchsorted(cumulative, energy - 1e-12) + 1, s.size))


class LowRankCost(NamedTuple):
    """Parameters and multiply-adds (per example) of a Dense kernel before and after factorizing."""

    params_before: int
    params_after: int
    flops_before: int
    flops_after: int

    @property
    def params_saved(self) -> int:
        return self.params_before - self.params_after

    @property
    def flops_saved(self) -> int:
        return self.flops_before - self.flops_after


def lowrank_cost(m: int, n: int, rank: int) -> LowRankCost:
    """Kernel parameters and MACs of an ``m x n`` Dense layer and of its rank-``rank`` factors.

    Example:
        >>> lowrank_cost(64, 64, 8)
        LowRankCost(params_before=4096, params_after=1024, flops_before=4096, flops_after=1024)
    """
    m, n = check_positive_int(m, "m"), check_positive_int(n, "n")
    rank = check_positive_int(rank, "rank", maximum=min(m, n))
    return LowRankCost(m * n, rank * (m + n), m * n, rank * (m + n))


# --------------------------------------------------------------------------- Keras glue


def factorize(model: keras.Model, layer: Any, rank: int | None = None,
              energy: float | None = None) -> keras.Model:
    """Replace a Dense layer by two thinner Dense layers from its truncated SVD.

    ``layer`` (kernel ``W``, ``m x n``) becomes ``Dense(r, use_bias=False, name=layer + "_u")``
    with ``A`` then ``Dense(n, name=layer)`` with ``B``, the old bias and activation, so the
    model computes ``f(x A B + b)``; at ``r = min(m, n)`` it reproduces the old outputs.
    Compare the models with :func:`compressnet_lite.metrics.count_params` and
    :func:`compressnet_lite.metrics.flops`, or the kernel alone with :func:`lowrank_cost`.

    Args:
        model: a built Sequential or functional model (any graph: residual, nested, ...).
        layer: name (or instance) of a Dense layer (on vectors, or on the last axis of a
            sequence or feature map: ``x A B`` acts on the last axis too).
        rank: the rank ``r``, 1..min(m, n).
        energy: instead of ``rank``, the fraction of singular-value energy to keep, in (0, 1]
            (:func:`rank_for_energy`). Give exactly one of the two.

    Returns:
        A new, uncompiled model; ``model`` is not changed.

    Raises:
        TypeError: ``model`` not a keras.Model, ``layer`` not a name or layer.
        ValueError: unknown layer, a layer that is not a plain Dense, neither or both of
            ``rank``/``energy``, ``rank > min(m, n)``, ``energy`` outside (0, 1], a
            subclassed model.

    Example:
        >>> small = factorize(model, "fc1", energy=0.9)   # doctest: +SKIP
    """
    check_model(model)
    target = surgery._find_layer(model, layer)
    if type(target) is not keras.layers.Dense:
        raise ValueError(f"layer {target.name!r} is a {type(target).__name__}; factorize replaces a "
                         "Dense layer (kernel m x n) by two Dense layers")
    if (rank is None) == (energy is None):
        raise ValueError(f"give exactly one of rank and energy, got rank={rank}, energy={energy}")
    weights = target.get_weights()
    if len(weights) != (2 if target.use_bias else 1):
        raise ValueError(f"layer {target.name!r} holds extra variables; factorize needs a plain Dense")
    kernel = weights[0]
    m, n = kernel.shape
    if rank is None:
        rank = rank_for_energy(np.linalg.svd(kernel.astype(np.float64), compute_uv=False), energy)
    rank = check_positive_int(rank, "rank", maximum=min(m, n))
    a, b = svd_factors(kernel, rank)
    config = target.get_config()
    first = keras.layers.Dense(rank, use_bias=False, name=f"{target.name}_u", dtype=config.get("dtype"))
    second = target.__class__.from_config(config)
    return surgery.replace_layer(model, target, [first, second], [[a], [b, *weights[1:]]])
