import gzip
import os

import keras
import numpy as np
import pytest

from compressnet_lite import metrics, models


@keras.saving.register_keras_serializable(package="compressnet_lite_tests")
class _MaskedDense(keras.layers.Dense):
    """A Dense layer with a bookkeeping variable, as a pruning transform would add."""

    def build(self, input_shape):
        super().build(input_shape)
        self.cnl_mask = self.add_weight(name="cnl_mask", shape=self.kernel.shape,
                                        initializer="ones", trainable=False)


def test_count_params_and_nonzero_on_arrays_layers_models():
    assert metrics.count_params(np.zeros((3, 4))) == 12
    assert metrics.count_params([np.zeros(3), np.zeros((2, 2))]) == 7
    assert metrics.count_nonzero(np.array([0.0, 1.0, -2.0, 0.0])) == 2
    m = models.seed_mlp()
    assert metrics.count_params(m) == m.count_params() == 6570
    assert metrics.count_params(m.get_layer("fc2")) == 64 * 32 + 32


def test_bookkeeping_variables_are_not_parameters():
    inputs = keras.Input((4,))
    m = keras.Model(inputs, _MaskedDense(3, name="masked")(inputs))
    assert m.count_params() == 4 * 3 + 3 + 4 * 3  # Keras counts the mask
    assert metrics.count_params(m) == 4 * 3 + 3     # we do not
    assert not metrics.is_parameter(m.get_layer("masked").cnl_mask)


def test_sparsity_over_kernels_only():
    m = models.seed_mlp()
    w = m.get_layer("fc1").get_weights()
    w[0][:32] = 0.0  # half of fc1's kernel
    m.get_layer("fc1").set_weights(w)
    assert metrics.sparsity(m.get_layer("fc1")) == pytest.approx(0.5)
    assert metrics.sparsity(m) == pytest.approx(32 * 64 / (64 * 64 + 64 * 32 + 32 * 10))
    per_layer = metrics.layer_sparsity(m)
    assert list(per_layer) == ["fc1", "fc2", "out"] and per_layer["fc1"] == pytest.approx(0.5)
    assert metrics.sparsity(np.array([0.0, 1.0, 0.0, 2.0])) == 0.5


def test_sparsity_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="nothing|no kernels"):
        metrics.sparsity(np.zeros(0))
    with pytest.raises(ValueError, match="no kernels"):
        metrics.sparsity(keras.layers.Dropout(0.5))


def test_flops_hand_counted():
    assert metrics.flops(models.seed_mlp()) == 64 * 64 + 64 * 32 + 32 * 10
    # LeNet-5 on MNIST: conv1 24*24*20*25, conv2 8*8*50*(25*20), fc1 800*500, out 500*10
    expected = 24 * 24 * 20 * 25 + 8 * 8 * 50 * 25 * 20 + 800 * 500 + 500 * 10
    assert metrics.flops(models.lenet5((28, 28, 1))) == expected


def test_flops_depthwise_and_nonzero_only():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="valid", name="dw")(inputs)
    m = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="pw")(x))
    assert metrics.flops(m) == 4 * 4 * 3 * 9 + 4 * 4 * 3 * 4
    mlp = models.seed_mlp()
    w = mlp.get_layer("out").get_weights()
    w[0][:] = 0.0
    mlp.get_layer("out").set_weights(w)
    assert metrics.flops(mlp, nonzero_only=True) == 64 * 64 + 64 * 32


def test_accuracy_matches_manual_and_accepts_callables(trained_mlp, digits):
    acc = metrics.accuracy(trained_mlp, digits.x_test, digits.y_test)
    manual = np.mean(trained_mlp.predict(digits.x_test, verbose=0).argmax(1) == digits.y_test)
    assert acc == pytest.approx(manual) and acc > 0.85
    assert metrics.accuracy(lambda x: np.eye(10)[np.zeros(len(x), int)], digits.x_test, digits.y_test) \
        == pytest.approx(np.mean(digits.y_test == 0))


def test_latency_reports_median_and_quartiles(trained_mlp, digits):
    lat = metrics.latency(trained_mlp, digits.x_test[:64], runs=5, warmup=1)
    assert lat.runs == 5 and 0 < lat.q1 <= lat.median <= lat.q3
    assert "ms" in str(lat)
    calls = []
    metrics.latency(lambda x: calls.append(len(x)), digits.x_test[:8], runs=3, warmup=2)
    assert calls == [8] * 5


def test_model_bytes_is_the_file_on_disk(trained_mlp, digits, tmp_path):
    models.train(trained_mlp, digits, epochs=1)  # compiled, with Adam's state
    sizes = metrics.model_bytes(trained_mlp)
    fresh = models.clone(trained_mlp)  # uncompiled: what model_bytes saves
    path = tmp_path / "m.keras"
    fresh.save(path)
    raw = path.read_bytes()
    assert abs(sizes.keras - os.path.getsize(path)) < 16  # only the saving timestamps differ
    assert abs(sizes.gzip - len(gzip.compress(raw, 9))) < 64
    with_opt = metrics.model_bytes(trained_mlp, include_optimizer=True)
    assert with_opt.keras > sizes.keras  # Adam's moments are stored too


@pytest.mark.parametrize("call, exc, match", [
    (lambda m, d: metrics.count_params("model"), TypeError, "weights"),
    (lambda m, d: metrics.accuracy(m, d.x_test, d.y_test[:-1]), ValueError, "same length"),
    (lambda m, d: metrics.accuracy(m, d.x_test[:0], d.y_test[:0]), ValueError, "empty"),
    (lambda m, d: metrics.accuracy("m", d.x_test, d.y_test), TypeError, "model"),
    (lambda m, d: metrics.latency(m, d.x_test, runs=2), ValueError, "runs"),
    (lambda m, d: metrics.latency(m, d.x_test, warmup=-1), ValueError, "warmup"),
    (lambda m, d: metrics.latency(42, d.x_test), TypeError, "model"),
    (lambda m, d: metrics.flops("m"), TypeError, "model"),
], ids=["params-str", "acc-length", "acc-empty", "acc-model", "lat-runs", "lat-warmup", "lat-model",
        "flops-model"])
def test_metrics_reject_bad_input(trained_mlp, digits, call, exc, match):
    with pytest.raises(exc, match=match):
        call(trained_mlp, digits)


def test_unbuilt_and_nan_models_are_rejected():
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        metrics.flops(unbuilt)
    m = models.seed_mlp()
    w = m.get_weights()
    w[0][0, 0] = np.nan
    m.set_weights(w)
    with pytest.raises(ValueError, match="NaN"):
        metrics.model_bytes(m)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


def test_flops_rejects_subclassed_models_instead_of_counting_zero():
    m = _Subclassed()
    m(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="functional or Sequential"):
        metrics.flops(m)


def test_flops_of_each_layer_family():
    """MACs by hand: conv, depthwise, separable, transposed, einsum and attention layers."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)            # 64 * 3*3*3*4
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)   # 64 * 3*3*4*2
    x = keras.layers.SeparableConv2D(5, 3, strides=2, padding="same", name="sep")(x)  # 16 * (9*8 + 8*5)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, name="tconv")(x)             # 16 inputs * 2*2*2*5
    model = keras.Model(inputs, x)
    expected = 64 * 108 + 64 * 72 + 16 * (72 + 40) + 16 * 40
    assert metrics.flops(model) == expected
    seq = keras.Input((6, 5))
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(seq, seq)    # 4 projections + 2 products
    e = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 7), name="ein")(a)
    attention = keras.Model(seq, e)
    projections = 6 * (5 * 2 * 4) * 3 + 6 * (2 * 4 * 5)
    assert metrics.flops(attention) == projections + 2 * 6 * 6 * (4 + 4) + 6 * 5 * 7
