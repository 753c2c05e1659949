"""compressnet_lite._backend: the per-backend helpers, checked against NumPy on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from compressnet_lite import _backend

RNG = np.random.default_rng(0)
X = RNG.normal(size=(37, 5)).astype("float32")
Y = RNG.integers(0, 3, size=37).astype("int32")


def _softmax_regression(activation=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(3, activation=activation, name="fc")(inputs)
    return keras.Model(inputs, outputs)


def _numpy_gradients(w, b, x, y):
    """d mean CE / d(W, b) of softmax(xW + b): x^T (p - onehot) / n and mean(p - onehot)."""
    z = x.astype(np.float64) @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = p - np.eye(w.shape[1])[y]
    return x.T @ d / len(x), d.mean(0)


@pytest.mark.parametrize("activation", [None, "softmax"], ids=["logits", "softmax"])
@pytest.mark.parametrize("batch_size", [512, 8], ids=["one-batch", "batches-of-8"])
def test_loss_gradients_match_the_numpy_formula(activation, batch_size):
    model = _softmax_regression(activation)
    layer = model.get_layer("fc")
    w, b = (np.asarray(v, np.float64) for v in layer.get_weights())
    gw, gb = _backend.loss_gradients(model, [layer.kernel, layer.bias], X, Y, batch_size=batch_size)
    ew, eb = _numpy_gradients(w, b, X, Y)
    assert gw.shape == w.shape and gb.shape == b.shape and gw.dtype == np.float64
    assert np.abs(ew).max() > 1e-3  # a real gradient, not zeros
    np.testing.assert_allclose(gw, ew, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gb, eb, rtol=1e-4, atol=1e-6)


def test_loss_gradients_take_a_loss_name_object_or_function():
    model = _softmax_regression()
    kernel = model.get_layer("fc").kernel
    onehot = np.eye(3, dtype="float32")[Y]
    by_name = _backend.loss_gradients(model, [kernel], X, onehot, loss="mean_squared_error")[0]
    by_object = _backend.loss_gradients(model, [kernel], X, onehot, loss=keras.losses.MeanSquaredError())[0]
    by_fn = _backend.loss_gradients(model, [kernel], X, onehot,
                                    loss=lambda t, p: keras.ops.mean(keras.ops.square(p - t)))[0]
    z = X @ model.get_layer("fc").get_weights()[0] + model.get_layer("fc").get_weights()[1]
    expected = X.T.astype(np.float64) @ (2 * (z - onehot) / z.size)  # d mean((z - t)^2) / dW
    for got in (by_name, by_object, by_fn):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_loss_gradients_leave_the_model_alone_and_reach_frozen_layers():
    model = _softmax_regression()
    layer = model.get_layer("fc")
    layer.trainable = False
    before = [w.copy() for w in model.get_weights()]
    grads = _backend.loss_gradients(model, [layer.kernel], X, Y)
    assert np.abs(grads[0]).max() > 1e-3
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert layer.trainable is False
    if _backend.name() == "torch":
        assert layer.kernel.value.grad is None  # no gradient left on the model's parameters
    np.testing.assert_allclose(model.predict(X, verbose=0), _softmax_regression().predict(X, verbose=0))


def test_loss_gradients_of_a_deeper_model_match_finite_differences():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(6, activation="tanh", name="hidden")(inputs)  # smooth: no kinks
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    layer = model.get_layer("hidden")
    g = _backend.loss_gradients(model, [layer.kernel], X, Y)[0]
    loss = keras.losses.SparseCategoricalCrossentropy()
    w = layer.get_weights()

    def value(kernel):
        layer.set_weights([kernel, w[1]])
        return float(np.asarray(loss(Y, model.predict(X, verbose=0))))

    eps = 1e-3
    for i, j in [(0, 0), (2, 3), (4, 5)]:
        plus, minus = w[0].copy(), w[0].copy()
        plus[i, j] += eps
        minus[i, j] -= eps
        assert g[i, j] == pytest.approx((value(plus) - value(minus)) / (2 * eps), abs=5e-4)
    layer.set_weights(w)


@pytest.mark.parametrize("make, error, match", [
    pytest.param(lambda m: dict(variables=m.get_layer("fc").kernel), TypeError, "list of the model's",
                 id="not-a-list"),
    pytest.param(lambda m: dict(variables=[]), ValueError, "at least one", id="empty"),
    pytest.param(lambda m: dict(variables=[np.zeros((5, 3))]), TypeError, r"variables\[0\] must be",
                 id="array"),
    pytest.param(lambda m: dict(variables=[_softmax_regression(seed=1).get_layer("fc").kernel]),
                 ValueError, "not a variable of model", id="foreign"),
    pytest.param(lambda m: dict(x=X[:5]), ValueError, "same length", id="lengths"),
    pytest.param(lambda m: dict(x=X[:0], y=Y[:0]), ValueError, "x", id="empty-x"),
    pytest.param(lambda m: dict(loss="no_such_loss"), ValueError, "Keras loss name", id="loss-name"),
    pytest.param(lambda m: dict(loss=3), TypeError, "loss must be", id="loss-type"),
    pytest.param(lambda m: dict(batch_size=0), ValueError, "batch_size", id="batch-size"),
])
def test_loss_gradients_errors(make, error, match):
    model = _softmax_regression()
    kwargs = dict(variables=[model.get_layer("fc").kernel], x=X, y=Y) | make(model)
    with pytest.raises(error, match=match):
        _backend.loss_gradients(model, kwargs.pop("variables"), kwargs.pop("x"), kwargs.pop("y"), **kwargs)


def test_loss_gradients_refuse_an_integer_variable():
    from compressnet_lite import clustering

    model = clustering.cluster_weights(_softmax_regression(), 4)
    with pytest.raises(ValueError, match="floating-point"):
        _backend.loss_gradients(model, [model.get_layer("fc").cnl_cluster_index], X, Y)


def test_assign_products_sets_and_scales():
    model = _softmax_regression()
    layer = model.get_layer("fc")
    mask = keras.Variable(np.ones((5, 3), np.float32), trainable=False)
    kernel = layer.get_weights()[0]
    new = (RNG.random((5, 3)) > 0.5).astype(np.float32)
    assign = _backend.assign_products([(mask, layer.kernel), (layer.bias, None)])
    assign([new, np.full(3, 2.0, np.float32)])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), new)
    np.testing.assert_array_equal(layer.get_weights()[0], kernel * new)
    np.testing.assert_array_equal(layer.get_weights()[1], np.full(3, 2.0, np.float32))
    assign([np.ones((5, 3), np.float32), np.zeros(3, np.float32)])  # a second call, same function
    np.testing.assert_array_equal(layer.get_weights()[0], kernel * new)
    np.testing.assert_array_equal(layer.get_weights()[1], np.zeros(3, np.float32))


def test_forward_function_equals_predict():
    model = _softmax_regression("softmax")
    fn = _backend.forward_function(model)
    out = fn(X)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, model.predict(X, verbose=0), rtol=1e-5, atol=1e-6)
    model.get_layer("fc").set_weights([np.zeros((5, 3), np.float32), np.zeros(3, np.float32)])
    np.testing.assert_allclose(fn(X), np.full((37, 3), 1 / 3), atol=1e-6)  # reads current weights


def test_require_names_the_needed_backend():
    _backend.require(_backend.name(), "anything")  # the running backend passes
    other = next(b for b in _backend.BACKENDS if b != _backend.name())
    with pytest.raises(RuntimeError, match=f"needs the {other} backend.*KERAS_BACKEND={other}"):
        _backend.require(other, "this feature")


def test_scope_value_reads_the_stateless_scope():
    v = keras.Variable(np.zeros(2, np.float32))
    w = keras.Variable(np.zeros(2, np.float32))
    assert _backend.scope_value(v) is None and not _backend.outside_scope(v)
    with keras.StatelessScope(state_mapping=[(v, np.ones(2, np.float32))]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(_backend.scope_value(v)), [1, 1])
        assert not _backend.outside_scope(v) and _backend.outside_scope(w)
