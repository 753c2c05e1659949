import keras
import numpy as np
import pytest

import compressnet_lite as cnl
from compressnet_lite import models


def test_seed_mlp_is_the_articles_net():
    m = models.seed_mlp()
    dense = [l for l in m.layers if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [64, 32, 10]
    assert [l.name for l in dense] == ["fc1", "fc2", "out"]
    assert [l.activation.__name__ for l in dense] == ["relu", "relu", "softmax"]
    assert m.count_params() == 64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10


def test_logits_variant_has_no_softmax():
    m = models.seed_mlp(logits=True)
    assert m.get_layer("out").activation.__name__ == "linear"


@pytest.mark.parametrize("shape, params", [((784,), 266_610), ((28, 28, 1), 266_610), ((64,), 50_610)],
                         ids=["mnist-flat", "mnist-image", "digits"])
def test_lenet_300_100_sizes(shape, params):
    # Han et al. 2015: LeNet-300-100 has 267K weights on MNIST
    assert models.lenet_300_100(shape).count_params() == params


def test_lenet5_matches_han_et_al_on_mnist():
    m = models.lenet5((28, 28, 1))
    assert m.count_params() == 431_080  # Han et al. 2015, Table 1: 431K
    assert m.get_layer("conv1").kernel.shape == (5, 5, 1, 20)
    assert m.get_layer("fc1").kernel.shape == (800, 500)


def test_lenet5_runs_on_digits_images():
    m = models.lenet5((8, 8, 1))
    assert m.predict(np.zeros((2, 8, 8, 1), np.float32), verbose=0).shape == (2, 10)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: models.lenet5((28, 28)), ValueError, "input_shape"),
    (lambda: models.mlp(0, (8,)), ValueError, "input_dim"),
    (lambda: models.mlp(4, "64"), TypeError, "hidden"),
    (lambda: models.mlp(4, (8, -1)), ValueError, r"hidden\[1\]"),
    (lambda: models.mlp(4, (8,), num_classes=1), ValueError, "num_classes"),
    (lambda: models.lenet_300_100((28, 0)), ValueError, r"input_shape\[1\]"),
], ids=["lenet5-2d", "zero-input", "hidden-str", "negative-width", "one-class", "zero-dim"])
def test_builders_reject_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_train_learns_and_is_deterministic(digits):
    accs, weights = [], []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        m = models.train(models.seed_mlp(), digits, epochs=3, seed=1)
        accs.append(cnl.metrics.accuracy(m, digits.x_test, digits.y_test))
        weights.append(m.get_weights())
    assert accs[0] > 0.8  # 3 epochs is plenty for the digits
    assert accs[0] == accs[1]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_train_compiles_with_keywords_and_right_loss(digits):
    m = models.train(models.seed_mlp(logits=True), digits, epochs=1)
    assert m.loss.from_logits is True
    m2 = models.train(models.seed_mlp(), digits, epochs=1)
    assert m2.loss.from_logits is False


def test_train_keeps_callers_optimizer_when_asked(digits):
    m = models.seed_mlp()
    sgd = keras.optimizers.SGD(0.01)
    models.compile_model(m, optimizer=sgd)
    models.train(m, digits, epochs=1, recompile=False)
    assert m.optimizer is sgd


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(epochs=1.5), TypeError, "epochs"),
], ids=["zero-epochs", "zero-batch", "float-epochs"])
def test_train_rejects_bad_arguments(digits, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        models.train(models.seed_mlp(), digits, **kwargs)


def test_train_rejects_non_dataset_and_narrow_output(digits):
    with pytest.raises(TypeError, match="dataset"):
        models.train(models.seed_mlp(), (digits.x_train, digits.y_train))
    with pytest.raises(ValueError, match="outputs"):
        models.train(models.seed_mlp(num_classes=5), digits)
    with pytest.raises(TypeError, match="model"):
        models.train("seed_mlp", digits)


def test_clone_copies_weights_without_optimizer(digits):
    m = models.train(models.seed_mlp(), digits, epochs=1)
    c = models.clone(m)
    assert c is not m and getattr(c, "optimizer", None) is None
    for a, b in zip(m.get_weights(), c.get_weights()):
        np.testing.assert_array_equal(a, b)
    c.get_layer("fc1").set_weights([np.zeros((64, 64)), np.zeros(64)])
    assert np.any(m.get_layer("fc1").get_weights()[0] != 0)  # the original is untouched


def _head(kind):
    """Small functional models whose heads differ; the layer list order hides the output."""
    inp = keras.Input((4,))
    side = keras.layers.Dense(3, name="side")
    if kind == "softmax-layer":
        out = keras.layers.Softmax(name="sm")(keras.layers.Dense(3)(inp))
    elif kind == "activation-softmax":
        out = keras.layers.Activation("softmax", name="sm")(keras.layers.Dense(3)(inp))
    elif kind == "dense-softmax":
        out = keras.layers.Dense(3, activation="softmax", name="sm")(inp)
    elif kind == "logits":
        out = keras.layers.Dense(3, name="logits")(inp)
    elif kind.startswith("nested"):  # the head is a sub-model
        activation = "softmax" if kind == "nested-softmax" else None
        head = keras.Sequential([keras.layers.Dense(3, activation=activation)], name="head")
        out = head(keras.layers.Dense(5)(inp))
    else:  # the output is a linear Dense, but the last layer Keras lists is a softmax Dense
        hidden = keras.layers.Dense(3, activation="softmax", name="late")(inp)
        out = keras.layers.Add(name="sum")([keras.layers.Dense(3)(inp), side(hidden)])
    model = keras.Model(inp, out)
    return model


@pytest.mark.parametrize("kind, expected", [
    ("softmax-layer", True), ("activation-softmax", True), ("dense-softmax", True),
    ("nested-softmax", True), ("nested-logits", False), ("logits", False),
    ("softmax-inside", False)])
def test_one_softmax_head_detector(kind, expected):
    """The output layer decides (not the last layer of the list); every module asks models."""
    from compressnet_lite import _backend, distillation, models

    model = _head(kind)
    assert models._ends_in_softmax(model) is expected
    assert _backend._default_loss(model).get_config()["from_logits"] is (not expected)
    if kind == "nested-softmax":  # never read the probabilities as logits
        with pytest.raises(ValueError, match="softmax inside its sub-model 'head'"):
            distillation.logits_model(model)
    elif kind != "softmax-inside":
        assert (distillation.logits_model(model) is model) is (not expected)
