"""Weight sharing by k-means clustering (Han, Mao & Dally 2016, "Deep Compression", section 3).

The weights of a layer are clustered into ``k`` groups; every weight is replaced by its
group's centroid, so the layer stores a ``log2(k)``-bit index per weight plus a codebook of
``k`` floats. Fine-tuning keeps the sharing: the gradient of a centroid is the sum of the
gradients of the weights that share it,

    dL/dc_j = sum_{i: idx_i = j} dL/dW_i,

which is exactly what automatic differentiation gives when the kernel is computed as
``W = codebook[idx]``. Weights that are exactly zero (pruned) stay zero and are not clustered.

Array math first (NumPy): :func:`kmeans_codebook`, :func:`pack_indices`,
:func:`unpack_indices`. Keras glue after it: the layers :class:`ClusteredDense` and
:class:`ClusteredConv2D`, :func:`cluster_weights`, :func:`strip_clustering` and
:func:`clustered_bytes` (bytes measured on disk).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import keras
import numpy as np

from compressnet_lite import codecs
from compressnet_lite._checks import check_array, check_choice, check_layer, check_model, check_positive_int
from compressnet_lite.storage import register_transform

__all__ = [
    "INITS", "kmeans_codebook", "index_bits", "pack_indices", "unpack_indices",
    "ClusteredDense", "ClusteredConv2D", "cluster_weights", "strip_clustering",
    "ClusterBytes", "clustered_bytes",
]

INITS = ("linear", "density", "kmeans++")
"""Centroid initializations: Han et al. recommend ``linear`` (keeps the rare large weights)."""


# --------------------------------------------------------------------------- array math


def kmeans_codebook(w: Any, k: int, init: str = "linear", *, max_iter: int = 100,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the values of ``w`` into ``k`` shared values with 1-D k-means (Lloyd).

    Initialization (Han et al. 2016, section 3.2):

    * ``"linear"``: ``k`` points evenly spaced between ``min(w)`` and ``max(w)``;
    * ``"density"``: the quantiles of ``w`` at ``(2j + 1) / 2k`` (evenly spaced on the CDF);
    * ``"kmeans++"``: Arthur & Vassilvitskii's D^2 sampling, seeded by ``seed``.

    A cluster left empty is re-seeded at the value farthest from its centroid, so every
    one of the ``k`` centroids is used and they are all distinct.

    Args:
        w: array of weights (any shape; flattened).
        k: number of clusters, ``1 <= k <= `` number of distinct values of ``w``.
        init: ``"linear"``, ``"density"`` or ``"kmeans++"``.
        max_iter: Lloyd iterations at most (stops early when no assignment changes). ``0``
            keeps the initial centroids and only assigns each weight to the nearest one
            (what tfmot's ``cluster_weights`` does before fine-tuning); a centroid no weight
            is nearest to is then dropped, so fewer than ``k`` values may be returned.
        seed: seed of the ``"kmeans++"`` draws (the other inits are deterministic).

    Returns:
        ``(centroids, labels)``: ``k`` float32 centroids in increasing order, and an int32
        array shaped like ``w`` with the cluster of each weight, so ``centroids[labels]``
        is the shared-weight version of ``w``.

    Raises:
        ValueError: ``w`` empty or not finite, ``k`` outside ``1..n``, too few distinct values,
            unknown ``init``.

    Example:
        >>> c, idx = kmeans_codebook(np.array([0.1, 0.11, 0.9, 1.0]), 2)
        >>> [round(float(v), 3) for v in c], idx.tolist()
        ([0.105, 0.95], [0, 0, 1, 1])
    """
    w = check_array(w, "w")
    x = w.astype(np.float64).ravel()
    k = check_positive_int(k, "k", maximum=x.size)
    check_choice(init, "init", INITS)
    check_positive_int(max_iter, "max_iter", minimum=0)
    distinct = np.unique(x).size
    if distinct < k:
        raise ValueError(f"k must be at most the number of distinct values of w ({distinct}), got {k}")
    if init == "linear":
        c = np.linspace(x.min(), x.max(), k)
    elif init == "density":
        c = np.quantile(x, (2 * np.arange(k) + 1) / (2 * k))
    else:
        rng = np.random.default_rng(seed)
        c = [x[rng.integers(x.size)]]
        d2 = (x - c[0]) ** 2
        for _ in range(1, k):
            c.append(x[rng.choice(x.size, p=d2 / d2.sum())])
            d2 = np.minimum(d2, (x - c[-1]) ** 2)
        c = np.array(c)
    c = np.sort(c)
    if max_iter == 0:
        nearest = np.searchsorted((c[1:] + c[:-1]) / 2, x)
        used, labels = np.unique(nearest, return_inverse=True)
        return c[used].astype(np.float32), labels.reshape(w.shape).astype(np.int32)
    labels = None
    for _ in range(max_iter):
        new = np.searchsorted((c[1:] + c[:-1]) / 2, x)  # nearest centroid (c is sorted)
        counts = np.bincount(new, minlength=k)
        for j in np.flatnonzero(counts == 0):  # re-seed an empty cluster at the worst-fit value
            far = np.argmax(np.abs(x - c[new]) * (counts[new] > 1))
            c[j], counts[new[far]], counts[j], new[far] = x[far], counts[new[far]] - 1, 1, j
        c = np.bincount(new, weights=x, minlength=k) / counts
        order = np.argsort(c, kind="stable")
        c, new = c[order], np.argsort(order)[new]
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
    return c.astype(np.float32), labels.reshape(w.shape).astype(np.int32)


def index_bits(n_symbols: int) -> int:
    """Bits of a fixed-width index into ``n_symbols`` values: ``ceil(log2(n))`` (0 for one value)."""
    check_positive_int(n_symbols, "n_symbols")
    return math.ceil(math.log2(n_symbols))


def pack_indices(labels: Any, bits: int) -> bytes:
    """Pack cluster indices into a bit stream, ``bits`` bits each, most significant bit first.

    A thin caller of :func:`compressnet_lite.codecs.pack_bits`, the library's one packer.

    Args:
        labels: integer array (any shape, flattened), each value in ``0 .. 2**bits - 1``.
        bits: bits per value, 0..16 (0 packs to nothing: one cluster needs no index).

    Returns:
        ``ceil(labels.size * bits / 8)`` bytes.

    Raises:
        ValueError: a label does not fit in ``bits`` bits, or ``bits`` outside 0..16.

    Example:
        >>> pack_indices(np.array([1, 2, 3, 0]), 2).hex()
        '6c'
    """
    bits = check_positive_int(bits, "bits", minimum=0, maximum=16)
    labels = check_array(labels, "labels", allow_empty=True).ravel()
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= 2 ** bits):
        raise ValueError(f"labels must be integers in 0..{2 ** bits - 1} to fit in {bits} bits")
    return codecs.pack_bits(labels, bits)


def unpack_indices(data: bytes, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: the first ``n`` values of ``bits`` bits each, as int32."""
    bits = check_positive_int(bits, "bits", minimum=0, maximum=16)
    n = check_positive_int(n, "n", minimum=0)
    if 8 * len(data) < n * bits:
        raise ValueError(f"data holds {8 * len(data)} bits, fewer than n * bits = {n * bits}")
    return codecs.unpack_bits(data, bits, n).astype(np.int32)


# --------------------------------------------------------------------------- Keras glue


class _Clustered:
    """Mixin: the kernel is ``codebook[cnl_cluster_index]``; index ``n_clusters`` means 0 (pruned).

    State lives in two weights: ``codebook`` (``n_clusters`` trainable floats) and
    ``cnl_cluster_index`` (int32, kernel-shaped, not trainable). Biases stay full precision.
    """

    def _build_clustered(self, kernel_shape: tuple[int, ...]) -> None:
        self.codebook = self.add_weight(name="codebook", shape=(self.n_clusters,),
                                        initializer="zeros", trainable=True)
        self.cnl_cluster_index = self.add_weight(name="cnl_cluster_index", shape=kernel_shape,
                                                 initializer="zeros", dtype="int32", trainable=False)

    @property
    def kernel(self):
        if not self.built:
            raise AttributeError("You must build the layer before accessing `kernel`.")
        values = keras.ops.concatenate([self.codebook, keras.ops.zeros((1,), self.codebook.dtype)])
        return keras.ops.take(values, self.cnl_cluster_index)

    # The base classes save only their own kernel/bias; save every variable instead.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return {**super().get_config(), "n_clusters": self.n_clusters}


@keras.saving.register_keras_serializable(package="compressnet_lite")
class ClusteredDense(_Clustered, keras.layers.Dense):
    """A ``Dense`` layer whose kernel takes at most ``n_clusters`` values (plus 0 for pruned weights).

    Args:
        units: output units, as for ``Dense``.
        n_clusters: size of the codebook.
        **kwargs: every other ``Dense`` argument (activation, use_bias, name ...).
    """

    def __init__(self, units: int, n_clusters: int, **kwargs):
        super().__init__(units, **kwargs)
        self.n_clusters = check_positive_int(n_clusters, "n_clusters")

    def build(self, input_shape):
        self._build_clustered((input_shape[-1], self.units))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer) \
            if self.use_bias else None
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_shape[-1]})
        self.built = True


@keras.saving.register_keras_serializable(package="compressnet_lite")
class ClusteredConv2D(_Clustered, keras.layers.Conv2D):
    """A ``Conv2D`` layer whose kernel takes at most ``n_clusters`` values (plus 0 for pruned weights).

    Args:
        filters: output channels, as for ``Conv2D``.
        kernel_size: as for ``Conv2D``.
        n_clusters: size of the codebook.
        **kwargs: every other ``Conv2D`` argument.
    """

    def __init__(self, filters: int, kernel_size: Any, n_clusters: int, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.n_clusters = check_positive_int(n_clusters, "n_clusters")

    def build(self, input_shape):
        axis = -1 if self.data_format == "channels_last" else 1
        channels = input_shape[axis]
        self._build_clustered(tuple(self.kernel_size) + (channels // self.groups, self.filters))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer) \
            if self.use_bias else None
        self.input_spec = keras.layers.InputSpec(min_ndim=4, axes={axis: channels})
        self.built = True


_CLUSTERED = {keras.layers.Dense: ClusteredDense, keras.layers.Conv2D: ClusteredConv2D}


def _clone(model: keras.Model, replace: dict, weights: dict | None = None) -> keras.Model:
    """Rebuild ``model``; ``replace[name](layer)`` builds a substitute layer; other weights are
    copied by name and path (:func:`compressnet_lite.surgery.rewrite`), ``weights`` given."""
    from compressnet_lite import surgery

    return surgery.rewrite(model, lambda layer: replace[layer.name](layer) if layer.name in replace else None,
                           weights=weights)


def _check_graph(model: keras.Model) -> None:
    if not (isinstance(model, keras.Sequential) or hasattr(model, "_nodes_by_depth")):
        raise ValueError(f"model {model.name!r} must be a Sequential or functional model; "
                         f"subclassed models ({type(model).__name__}) cannot be rewritten")


def cluster_weights(model: keras.Model, n_clusters: int, layers: Sequence[str] | None = None, *,
                    init: str = "linear", seed: int = 0, max_iter: int = 100) -> keras.Model:
    """Share weights: a new model whose clustered kernels take only ``n_clusters`` values each.

    Each selected ``Dense``/``Conv2D`` kernel is clustered on its own (one codebook per
    layer) with :func:`kmeans_codebook`; exact zeros (pruned weights) are kept at zero and
    not counted as a cluster. The layers become :class:`ClusteredDense` /
    :class:`ClusteredConv2D`, whose trainable codebook receives the summed gradient of its
    weights, so ``fit`` fine-tunes the centroids and keeps the sharing. Call
    :func:`strip_clustering` for a plain Keras model with the same outputs.

    Args:
        model: a built Sequential or functional model.
        n_clusters: values per layer (``k``), 1 .. number of non-zero weights of every selected layer.
        layers: names of the layers to cluster; ``None`` takes every ``Dense`` and ``Conv2D``.
        init: centroid initialization, ``"linear"`` (Han et al.'s choice), ``"density"`` or ``"kmeans++"``.
        seed: seed of the ``"kmeans++"`` initialization.
        max_iter: Lloyd iterations of :func:`kmeans_codebook`; ``0`` keeps the initial
            centroids (with ``init="linear"`` the extreme weights stay representable, which
            matters at small ``k``); a layer may then hold fewer than ``k`` values.

    Returns:
        A new model; ``model`` is not changed.

    Raises:
        TypeError: ``model`` is not a Keras model, ``n_clusters`` not an integer, a layer not a name.
        ValueError: unbuilt or subclassed model, unknown or unsupported layer, ``n_clusters``
            out of range, unknown ``init``.

    Example:
        >>> small = cluster_weights(model, 16)                        # doctest: +SKIP
        >>> len(np.unique(small.get_layer("fc1").kernel.numpy()))     # doctest: +SKIP
        16
    """
    check_model(model)
    check_positive_int(n_clusters, "n_clusters")
    check_choice(init, "init", INITS)
    _check_graph(model)
    if layers is None:
        chosen = [l for l in model.layers if type(l) in _CLUSTERED]
        special = [l.name for l in model.layers
                   if isinstance(l, tuple(_CLUSTERED)) and type(l) not in _CLUSTERED]
        if special:
            raise ValueError(f"layers {special} are special Dense/Conv2D layers (pruning masks, shared "
                             "or quantized weights); make them plain first (pruning.strip, "
                             "strip_clustering) or pass layers=[...] naming the plain layers to cluster")
        if not chosen:
            raise ValueError(f"model {model.name!r} has no Dense or Conv2D layer to cluster")
    else:
        if isinstance(layers, str):
            layers = [layers]
        chosen = [check_layer(model, name, "layers") for name in layers]
        for layer in chosen:
            if type(layer) not in _CLUSTERED:
                raise ValueError(f"layers: {layer.name!r} is a {type(layer).__name__}; only Dense and "
                                 f"Conv2D layers can be clustered")
    codes = {}
    for layer in chosen:
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        nonzero = kernel != 0
        if n_clusters > np.count_nonzero(nonzero):
            raise ValueError(f"n_clusters must be at most the number of non-zero weights of layer "
                             f"{layer.name!r} ({np.count_nonzero(nonzero)}), got {n_clusters}")
        centroids, labels = kmeans_codebook(kernel[nonzero], n_clusters, init, seed=seed, max_iter=max_iter)
        index = np.full(kernel.shape, centroids.size, np.int32)  # index k = pruned zero
        index[nonzero] = labels
        codes[layer.name] = (centroids, index)

    def to_clustered(layer):
        k = codes[layer.name][0].size
        return _CLUSTERED[type(layer)].from_config({**layer.get_config(), "n_clusters": k})

    return _clone(model, {name: to_clustered for name in codes},
                  {name: {"codebook": c, "cnl_cluster_index": i} for name, (c, i) in codes.items()})


def strip_clustering(model: keras.Model) -> keras.Model:
    """A plain Keras model (``Dense``/``Conv2D``) whose kernels hold the shared values.

    Raises:
        TypeError / ValueError: ``model`` is not a built Sequential or functional model.
    """
    check_model(model)
    _check_graph(model)
    clustered = {l.name: l for l in model.layers if isinstance(l, _Clustered)}

    def to_plain(layer):
        config = {k: v for k, v in layer.get_config().items() if k != "n_clusters"}
        base = keras.layers.Dense if isinstance(layer, ClusteredDense) else keras.layers.Conv2D
        return base.from_config(config)

    return _clone(model, {name: to_plain for name in clustered},
                  {name: {"kernel": keras.ops.convert_to_numpy(layer.kernel)}
                   for name, layer in clustered.items()})


register_transform(_Clustered, strip_clustering)  # how storage.plain_model stores them


class ClusterBytes(NamedTuple):
    """Bytes of a weight-shared model in the weight streams of the compressed format.

    ``indices``: the clustered kernels' cluster indices (and the positions of their pruned
    zeros, if any); ``codebooks``: their float32 centroids; ``other``: every other parameter
    (biases, unclustered layers); ``total`` = their sum (the file's architecture, manifest
    and container are not counted); ``float32``: all parameters as dense float32, for
    comparison.
    """

    indices: int
    codebooks: int
    other: int
    total: int
    float32: int

    @property
    def ratio(self) -> float:
        """Compression ratio ``float32 / total``."""
        return self.float32 / self.total


def clustered_bytes(model: keras.Model) -> ClusterBytes:
    """The bytes of a weight-shared model as :mod:`compressnet_lite.storage` writes it, with
    fixed-width (``ceil(log2 k)``-bit) indices and float32 codebooks, part by part.

    Nothing is estimated on paper: the parts are the streams of the storage encoding
    (:func:`compressnet_lite.storage.compressed_size` with ``huffman=False``, the paper's
    "pruning + quantization" stage, before Huffman coding).

    Args:
        model: a model returned by :func:`cluster_weights` (after fine-tuning or not).

    Raises:
        TypeError / ValueError: ``model`` is not a built Keras model.
    """
    from compressnet_lite import storage

    check_model(model)
    clustered = {l.name for l in model.layers if isinstance(l, _Clustered)}
    report = storage.compressed_size(model, huffman=False)
    sizes = {"indices": 0, "codebooks": 0, "other": 0}
    for r in report.rows:
        if r.layer == "(file)":
            continue
        if r.layer in clustered and r.weight.endswith("/kernel"):
            sizes["codebooks" if r.stream.startswith("values.codebook") else "indices"] += r.bytes
        else:
            sizes["other"] += r.bytes
    total = sizes["indices"] + sizes["codebooks"] + sizes["other"]
    return ClusterBytes(sizes["indices"], sizes["codebooks"], sizes["other"], total, report.float32_bytes)
