import keras
import numpy as np
from keras.ops import convert_to_numpy as as_numpy
import pytest

import compressnet_lite as cnl
from compressnet_lite import lowrank


# ----------------------------------------------------------------------------- array math

@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)], ids=["tall", "wide", "square"])
def test_svd_factors_full_rank_is_exact_and_truncation_is_eckart_young(shape):
    w = np.random.default_rng(0).normal(size=shape)
    a, b = lowrank.svd_factors(w, min(shape))
    np.testing.assert_allclose(a @ b, w, atol=1e-5)
    s = np.linalg.svd(w, compute_uv=False)
    a, b = lowrank.svd_factors(w, 2)
    assert a.shape == (shape[0], 2) and b.shape == (2, shape[1])
    # The rank-2 error (Frobenius) is the energy of the dropped singular values.
    assert np.linalg.norm(w - a @ b) == pytest.approx(np.sqrt(np.sum(s[2:] ** 2)), rel=1e-5)


@pytest.mark.parametrize("s, energy, rank", [
    ([3.0, 2.0, 1.0], 0.5, 1), ([3.0, 2.0, 1.0], 9 / 14, 1), ([3.0, 2.0, 1.0], 0.9, 2),
    ([3.0, 2.0, 1.0], 1.0, 3), ([1.0, 3.0, 2.0], 0.9, 2), ([5.0, 0.0, 0.0], 1.0, 1),
], ids=["half", "exactly-first", "0.9", "all", "unsorted", "zeros"])
def test_rank_for_energy(s, energy, rank):
    assert lowrank.rank_for_energy(s, energy) == rank


@pytest.mark.parametrize("s, energy, error", [
    ([1.0, 2.0], 0.0, ValueError), ([1.0, 2.0], 1.1, ValueError), ([1.0, -2.0], 0.5, ValueError),
    ([0.0, 0.0], 0.5, ValueError), ([], 0.5, ValueError), ([1.0], "all", TypeError),
], ids=["energy=0", "energy>1", "negative", "all-zero", "empty", "energy-str"])
def test_rank_for_energy_errors(s, energy, error):
    with pytest.raises(error):
        lowrank.rank_for_energy(np.array(s), energy)


def test_svd_factors_errors():
    with pytest.raises(ValueError, match="rank"):
        lowrank.svd_factors(np.ones((3, 4)), 4)
    with pytest.raises(ValueError, match="rank"):
        lowrank.svd_factors(np.ones((3, 4)), 0)
    with pytest.raises(ValueError, match="w"):
        lowrank.svd_factors(np.ones(3), 1)


def test_lowrank_cost():
    cost = lowrank.lowrank_cost(64, 32, 8)
    assert cost == (2048, 768, 2048, 768)
    assert cost.params_saved == 1280 and cost.flops_saved == 1280
    with pytest.raises(ValueError, match="rank"):
        lowrank.lowrank_cost(64, 32, 33)


# ----------------------------------------------------------------------------- Keras glue

def test_full_rank_reproduces_outputs_and_caller_untouched(trained_mlp, digits):
    before = [w.copy() for w in trained_mlp.get_weights()]
    full = lowrank.factorize(trained_mlp, "fc1", rank=64)
    np.testing.assert_allclose(full.predict(digits.x_test, verbose=0),
                               trained_mlp.predict(digits.x_test, verbose=0), atol=1e-4)
    assert [l.name for l in full.layers[1:3]] == ["fc1_u", "fc1"]
    for x, y in zip(before, trained_mlp.get_weights()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("layer, rank", [("fc1", 8), ("fc2", 4), ("out", 2)])
def test_factorized_model_has_the_planned_size(trained_mlp, layer, rank):
    small = lowrank.factorize(trained_mlp, layer, rank=rank)
    m, n = trained_mlp.get_layer(layer).kernel.shape
    cost = lowrank.lowrank_cost(m, n, rank)
    assert cnl.metrics.count_params(trained_mlp) - cnl.metrics.count_params(small) == cost.params_saved
    assert cnl.metrics.flops(trained_mlp) - cnl.metrics.flops(small) == cost.flops_saved
    assert small.get_layer(f"{layer}_u").kernel.shape == (m, rank)
    assert small.get_layer(layer).activation is trained_mlp.get_layer(layer).activation


def test_energy_picks_the_rank(trained_mlp):
    kernel = trained_mlp.get_layer("fc1").get_weights()[0]
    s = np.linalg.svd(kernel, compute_uv=False)
    r = lowrank.rank_for_energy(s, 0.9)
    small = lowrank.factorize(trained_mlp, "fc1", energy=0.9)
    assert small.get_layer("fc1_u").units == r


def test_moderate_rank_keeps_accuracy(trained_mlp, digits):
    base = cnl.metrics.accuracy(trained_mlp, digits.x_test, digits.y_test)
    small = lowrank.factorize(trained_mlp, "fc1", energy=0.95)
    assert cnl.metrics.accuracy(small, digits.x_test, digits.y_test) >= base - 0.03


def test_factorized_model_trains_and_round_trips(trained_mlp, digits, tmp_path):
    small = lowrank.factorize(trained_mlp, "fc1", rank=8)
    cnl.models.train(small, digits, epochs=1)
    path = tmp_path / "lowrank.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(digits.x_test, verbose=0),
                               small.predict(digits.x_test, verbose=0), atol=1e-6)


def test_factorize_in_a_sequential_model(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu", name="a"),
                              keras.layers.Dense(10, name="b")])
    small = lowrank.factorize(model, "a", rank=16)
    assert isinstance(small, keras.Sequential)
    x = digits.x_test[:8]
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(model(x)), atol=1e-4)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(layer="fc1"), ValueError, "exactly one"),
    (dict(layer="fc1", rank=4, energy=0.9), ValueError, "exactly one"),
    (dict(layer="fc1", rank=65), ValueError, "rank"),
    (dict(layer="fc1", rank=0), ValueError, "rank"),
    (dict(layer="fc1", rank=2.0), TypeError, "rank"),
    (dict(layer="fc1", energy=1.5), ValueError, "energy"),
    (dict(layer="fc1", energy=0.0), ValueError, "energy"),
    (dict(layer="nope", rank=2), ValueError, "not in model"),
    (dict(layer="input", rank=2), ValueError, "Dense"),
    (dict(layer=7, rank=2), TypeError, "layer"),
], ids=["neither", "both", "rank>min", "rank=0", "rank-float", "energy>1", "energy=0",
        "unknown-layer", "not-dense", "layer-int"])
def test_factorize_errors(trained_mlp, kwargs, error, match):
    with pytest.raises(error, match=match):
        lowrank.factorize(trained_mlp, **kwargs)


def test_factorize_refuses_conv(digits_images):
    with pytest.raises(ValueError, match="Conv2D"):
        lowrank.factorize(cnl.models.lenet5(digits_images.input_shape), "conv1", rank=2)
    with pytest.raises(TypeError, match="model"):
        lowrank.factorize(None, "h", rank=2)


def test_factorize_on_graphs_is_exact_at_full_rank():
    """A residual branch, a layer on sequences, a nested model: x A B + b at full rank."""
    inputs = keras.Input((5, 4))
    h = keras.layers.Dense(4, activation="relu", name="h")(inputs)         # on a sequence
    x = keras.layers.Add(name="add")([h, inputs])
    inner = cnl.models.mlp(4, (6,), 3, logits=True, name="inner")
    y = inner(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, y)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=v.shape).astype("float32") for v in model.weights])
    x_in = rng.normal(size=(3, 5, 4)).astype("float32")
    for name in ("h", "fc1"):
        small = lowrank.factorize(model, name, rank=4)
        np.testing.assert_allclose(as_numpy(small(x_in)), as_numpy(model(x_in)), rtol=1e-4, atol=1e-4)
    assert lowrank.factorize(model, "fc1", rank=2).count_params() < model.count_params()
