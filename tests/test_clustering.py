import keras
import numpy as np
from keras.ops import convert_to_numpy as as_numpy
import pytest

import compressnet_lite as cnl
from compressnet_lite import _backend, clustering


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _distinct(layer):
    return np.unique(keras.ops.convert_to_numpy(layer.kernel))


# ----------------------------------------------------------------------------- array math

@pytest.mark.parametrize("init", clustering.INITS)
@pytest.mark.parametrize("k", [1, 2, 7, 32])
def test_kmeans_codebook_uses_exactly_k_sorted_centroids(init, k):
    w = np.random.default_rng(1).normal(size=(40, 30))
    centroids, labels = clustering.kmeans_codebook(w, k, init)
    assert centroids.shape == (k,) and centroids.dtype == np.float32
    assert labels.shape == w.shape and labels.dtype == np.int32
    assert np.all(np.diff(centroids) > 0)
    assert np.unique(labels).size == k
    # Lloyd's fixed point: each centroid is the mean of its weights.
    for j in range(k):
        assert centroids[j] == pytest.approx(w[labels == j].mean(), rel=1e-5, abs=1e-6)


def test_kmeans_codebook_small_example():
    centroids, labels = clustering.kmeans_codebook(np.array([0.1, 0.11, 0.9, 1.0]), 2)
    np.testing.assert_allclose(centroids, [0.105, 0.95], rtol=1e-6)
    assert labels.tolist() == [0, 0, 1, 1]


def test_linear_init_keeps_rare_large_weights_better_than_density():
    # Han et al.: density init puts few centroids on the rare large weights; linear keeps them.
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.normal(0, 0.05, 5000), [1.0, -1.0, 0.9, -0.95]])
    lin, lab_lin = clustering.kmeans_codebook(w, 4, "linear", max_iter=1)
    den, lab_den = clustering.kmeans_codebook(w, 4, "density", max_iter=1)
    big = np.abs(w) > 0.8
    assert np.abs(lin[lab_lin][big] - w[big]).max() < np.abs(den[lab_den][big] - w[big]).max()


def test_kmeans_codebook_reseeds_empty_clusters():
    # Linear init on a gap-y distribution leaves middle centroids empty; all k must be used.
    w = np.concatenate([np.linspace(-1, -0.9, 50), np.linspace(0.9, 1, 50)])
    centroids, labels = clustering.kmeans_codebook(w, 6, "linear")
    assert np.unique(labels).size == 6 and np.unique(centroids).size == 6


def test_kmeans_plus_plus_is_deterministic_by_seed():
    w = np.random.default_rng(2).normal(size=500)
    a = clustering.kmeans_codebook(w, 8, "kmeans++", seed=3)
    b = clustering.kmeans_codebook(w, 8, "kmeans++", seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("w, k, init, error", [
    (np.zeros(0), 2, "linear", ValueError),
    (np.array([1.0, np.nan]), 1, "linear", ValueError),
    (np.arange(5.0), 0, "linear", ValueError),
    (np.arange(5.0), 6, "linear", ValueError),
    (np.array([1.0, 1.0, 2.0]), 3, "linear", ValueError),
    (np.arange(5.0), 2, "median", ValueError),
    (np.arange(5.0), 2.0, "linear", TypeError),
    (["a", "b"], 1, "linear", TypeError),
], ids=["empty", "nan", "k=0", "k>n", "k>distinct", "bad-init", "float-k", "strings"])
def test_kmeans_codebook_errors(w, k, init, error):
    with pytest.raises(error):
        clustering.kmeans_codebook(w, k, init)


@pytest.mark.parametrize("bits", [0, 1, 3, 5, 8, 11, 16])
def test_pack_unpack_round_trip(bits):
    n = 37
    labels = np.random.default_rng(bits).integers(0, 2 ** bits, size=n)
    data = clustering.pack_indices(labels, bits)
    assert len(data) == (n * bits + 7) // 8
    np.testing.assert_array_equal(clustering.unpack_indices(data, bits, n), labels)


def test_pack_indices_errors():
    with pytest.raises(ValueError, match="fit in 2 bits"):
        clustering.pack_indices(np.array([4]), 2)
    with pytest.raises(ValueError, match="bits"):
        clustering.pack_indices(np.array([1]), 17)
    with pytest.raises(ValueError, match="fewer than"):
        clustering.unpack_indices(b"\x00", 4, 3)


@pytest.mark.parametrize("n, bits", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (16, 4), (17, 5), (256, 8)])
def test_index_bits(n, bits):
    assert clustering.index_bits(n) == bits


# ----------------------------------------------------------------------------- Keras glue

@pytest.mark.parametrize("k", [2, 5, 16])
def test_cluster_weights_gives_k_values_per_layer_and_leaves_caller_alone(trained_mlp, digits, k):
    before = [w.copy() for w in trained_mlp.get_weights()]
    small = clustering.cluster_weights(trained_mlp, k)
    for name in ("fc1", "fc2", "out"):
        assert _distinct(small.get_layer(name)).size == k
        assert isinstance(small.get_layer(name), clustering.ClusteredDense)
    for a, b in zip(before, trained_mlp.get_weights()):
        np.testing.assert_array_equal(a, b)
    acc = cnl.metrics.accuracy(small, digits.x_test, digits.y_test)
    assert 0.0 <= acc <= 1.0


def test_sixteen_clusters_keep_accuracy(trained_mlp, digits):
    base = cnl.metrics.accuracy(trained_mlp, digits.x_test, digits.y_test)
    small = clustering.cluster_weights(trained_mlp, 16)
    assert cnl.metrics.accuracy(small, digits.x_test, digits.y_test) >= base - 0.02


def test_only_selected_layers_are_clustered(trained_mlp):
    small = clustering.cluster_weights(trained_mlp, 4, layers=["fc2"])
    assert _distinct(small.get_layer("fc2")).size == 4
    assert type(small.get_layer("fc1")) is keras.layers.Dense
    np.testing.assert_array_equal(small.get_layer("fc1").get_weights()[0],
                                  trained_mlp.get_layer("fc1").get_weights()[0])


def test_fine_tuning_keeps_sharing_and_moves_centroids(trained_mlp, digits):
    small = clustering.cluster_weights(trained_mlp, 8)
    before = small.get_layer("fc1").codebook.numpy().copy()
    cnl.models.train(small, digits, epochs=1)
    layer = small.get_layer("fc1")
    assert _distinct(layer).size == 8
    assert not np.allclose(before, layer.codebook.numpy())


def test_centroid_gradient_is_sum_of_weight_gradients(trained_mlp, digits):
    small = clustering.cluster_weights(trained_mlp, 4, layers=["fc2"])
    plain = clustering.strip_clustering(small)
    x, y = digits.x_train[:64], digits.y_train[:64]
    loss = keras.losses.SparseCategoricalCrossentropy()
    g_codebook, = _backend.loss_gradients(small, [small.get_layer("fc2").codebook], x, y, loss=loss)
    g_kernel, = _backend.loss_gradients(plain, [plain.get_layer("fc2").kernel], x, y, loss=loss)
    index = as_numpy(small.get_layer("fc2").cnl_cluster_index)
    expected = np.bincount(index.ravel(), weights=g_kernel.ravel(), minlength=4)
    np.testing.assert_allclose(g_codebook, expected, rtol=1e-4, atol=1e-6)


def test_pruned_zeros_stay_zero_and_cost_one_index_symbol(trained_mlp, digits):
    w = trained_mlp.get_layer("fc1").get_weights()
    w[0][np.abs(w[0]) < np.quantile(np.abs(w[0]), 0.8)] = 0.0
    trained_mlp.get_layer("fc1").set_weights(w)
    small = clustering.cluster_weights(trained_mlp, 4, layers=["fc1"])
    kernel = keras.ops.convert_to_numpy(small.get_layer("fc1").kernel)
    np.testing.assert_array_equal(kernel == 0, w[0] == 0)
    assert np.unique(kernel[kernel != 0]).size == 4
    cnl.models.train(small, digits, epochs=1)
    kernel = keras.ops.convert_to_numpy(small.get_layer("fc1").kernel)
    np.testing.assert_array_equal(kernel == 0, w[0] == 0)
    size = clustering.clustered_bytes(small)
    # the storage format: positions of the non-zeros + 2-bit indices, or at worst
    # 4 clusters + the zero as a fifth index symbol -> 3 bits per weight
    assert 0 < size.indices <= (64 * 64 * 3 + 7) // 8


def test_strip_clustering_gives_plain_equivalent_model(trained_mlp, digits):
    small = clustering.cluster_weights(trained_mlp, 8)
    plain = clustering.strip_clustering(small)
    assert all(type(plain.get_layer(n)) is keras.layers.Dense for n in ("fc1", "fc2", "out"))
    np.testing.assert_allclose(plain.predict(digits.x_test, verbose=0),
                               small.predict(digits.x_test, verbose=0), atol=1e-6)
    assert cnl.metrics.count_params(plain) == trained_mlp.count_params()


def test_clustered_bytes_are_indices_plus_codebook(trained_mlp):
    small = clustering.cluster_weights(trained_mlp, 16)
    size = clustering.clustered_bytes(small)
    kernels = 64 * 64 + 64 * 32 + 32 * 10
    assert size.indices == sum((n * 4 + 7) // 8 for n in (64 * 64, 64 * 32, 32 * 10))
    assert size.codebooks == 3 * 16 * 4
    assert size.other <= (64 + 32 + 10) * 4  # biases: float32 at most
    assert size.float32 == 4 * (kernels + 64 + 32 + 10)
    assert size.total == size.indices + size.codebooks + size.other
    assert size.ratio > 6


def test_conv2d_clustering_and_round_trip(digits_images, tmp_path):
    keras.utils.set_random_seed(0)
    model = cnl.models.lenet5(digits_images.input_shape)
    small = clustering.cluster_weights(model, 8, init="density")
    assert isinstance(small.get_layer("conv2"), clustering.ClusteredConv2D)
    assert _distinct(small.get_layer("conv2")).size == 8
    x = digits_images.x_test[:8]
    np.testing.assert_allclose(as_numpy(clustering.strip_clustering(small)(x)), as_numpy(small(x)),
                               atol=1e-5)
    path = tmp_path / "lenet5.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(as_numpy(loaded(x)), as_numpy(small(x)), atol=1e-6)


def test_keras_round_trip_after_fine_tuning(trained_mlp, digits, tmp_path):
    small = clustering.cluster_weights(trained_mlp, 4, init="kmeans++")
    cnl.models.train(small, digits, epochs=1)
    path = tmp_path / "clustered.keras"
    small.save(path)
    loaded = keras.models.load_model(path)  # default safe_mode=True
    np.testing.assert_allclose(loaded.predict(digits.x_test, verbose=0),
                               small.predict(digits.x_test, verbose=0), atol=1e-6)
    np.testing.assert_array_equal(loaded.get_layer("fc1").cnl_cluster_index.numpy(),
                                  small.get_layer("fc1").cnl_cluster_index.numpy())
    assert _distinct(loaded.get_layer("fc1")).size == 4


def test_bookkeeping_index_is_not_a_parameter(trained_mlp):
    small = clustering.cluster_weights(trained_mlp, 16)
    assert cnl.metrics.count_params(small) == 3 * 16 + 64 + 32 + 10


def test_cluster_weights_is_deterministic(trained_mlp):
    a = clustering.cluster_weights(trained_mlp, 8, init="kmeans++", seed=1)
    b = clustering.cluster_weights(trained_mlp, 8, init="kmeans++", seed=1)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_clusters=0), ValueError, "n_clusters"),
    (dict(n_clusters=2.5), TypeError, "n_clusters"),
    (dict(n_clusters=321), ValueError, "n_clusters must be at most"),
    (dict(n_clusters=4, layers=["nope"]), ValueError, "not in model"),
    (dict(n_clusters=4, layers=["input"]), ValueError, "only Dense and Conv2D"),
    (dict(n_clusters=4, init="random"), ValueError, "init"),
], ids=["k=0", "float-k", "k>weights", "unknown-layer", "unsupported-layer", "bad-init"])
def test_cluster_weights_errors(trained_mlp, kwargs, error, match):
    with pytest.raises(error, match=match):
        clustering.cluster_weights(trained_mlp, **kwargs)


def test_cluster_weights_rejects_non_models_and_subclassed_models():
    with pytest.raises(TypeError, match="model"):
        clustering.cluster_weights("model", 4)
    sub = _Subclassed()
    sub(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="subclassed"):
        clustering.cluster_weights(sub, 2)
    inputs = keras.Input((4,))
    no_dense = keras.Model(inputs, keras.layers.ReLU()(inputs))
    with pytest.raises(ValueError, match="no Dense or Conv2D"):
        clustering.cluster_weights(no_dense, 2)


def test_max_iter_zero_keeps_linear_initial_centroids():
    w = np.array([-1.0, -0.2, -0.1, 0.0, 0.1, 0.3, 1.0])
    centroids, labels = clustering.kmeans_codebook(w, 2, "linear", max_iter=0)
    np.testing.assert_allclose(centroids, [-1.0, 1.0])
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    lloyd, _ = clustering.kmeans_codebook(w, 2, "linear")
    assert np.abs(lloyd).max() < 1.0  # Lloyd pulls the centroids towards the bulk
    # an initial centroid no weight is nearest to is dropped
    w = np.array([0.0, 0.01, 0.02, 0.03, 1.0])
    centroids, labels = clustering.kmeans_codebook(w, 5, "linear", max_iter=0)
    assert centroids.size == np.unique(labels).size == 2
    with pytest.raises(ValueError, match="max_iter"):
        clustering.kmeans_codebook(np.arange(5.0), 2, max_iter=-1)


def test_cluster_weights_with_initial_centroids_only(trained_mlp, digits, tmp_path):
    small = clustering.cluster_weights(trained_mlp, 2, max_iter=0)
    for name in ("fc1", "fc2", "out"):
        layer, kernel = small.get_layer(name), trained_mlp.get_layer(name).get_weights()[0]
        np.testing.assert_allclose(np.sort(_distinct(layer)), [kernel.min(), kernel.max()], rtol=1e-6)
    small.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    x = digits.x_test[:8]
    np.testing.assert_allclose(as_numpy(loaded(x)), as_numpy(small(x)), atol=1e-6)


_STRATEGY_SCRIPT = """
import keras, numpy as np
import compressnet_lite as cnl
d = cnl.data.load_digits()
m = cnl.models.train(cnl.models.seed_mlp(), d, epochs=1)
with strategy.scope():
    shared = cnl.clustering.cluster_weights(m, 4)
    cnl.models.compile_model(shared)
before = shared.get_layer("fc1").codebook.numpy().copy()
shared.fit(d.x_train, d.y_train, epochs=1, batch_size=64, verbose=0)
for name in ("fc1", "fc2", "out"):
    assert len(np.unique(keras.ops.convert_to_numpy(shared.get_layer(name).kernel))) == 4
assert not np.allclose(before, shared.get_layer("fc1").codebook.numpy())
print("OK")
"""


def test_fine_tuning_inside_distribution_strategy(run_on_two_cpus):
    run_on_two_cpus(_STRATEGY_SCRIPT)


def test_special_dense_layers_are_not_skipped_silently(trained_mlp):
    shared = clustering.cluster_weights(trained_mlp, 4, layers=["fc1"])
    with pytest.raises(ValueError, match="special Dense/Conv2D"):
        clustering.cluster_weights(shared, 4)
    with pytest.raises(ValueError, match="only Dense and Conv2D"):
        clustering.cluster_weights(shared, 4, layers=["fc1"])
    twice = clustering.cluster_weights(shared, 4, layers=["fc2", "out"])  # the plain ones
    assert all(isinstance(twice.get_layer(n), clustering.ClusteredDense) for n in ("fc1", "fc2", "out"))
    assert _distinct(twice.get_layer("fc1")).size == 4
