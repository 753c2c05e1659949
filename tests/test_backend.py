"""compressnet_lite._backend: the per-backend helpers, checked against NumPy on every backend."""

from __future__ import annotations

import contextlib
import io
import os

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


@pytest.mark.parametrize("batch_size", [8, 37, 256], ids=["batches", "one-full-batch", "one-short-batch"])
def test_predict_equals_keras_predict(batch_size):
    model = _softmax_regression("softmax")
    out = _backend.predict(model, X, batch_size=batch_size)
    assert isinstance(out, np.ndarray) and out.shape == (37, 3)
    np.testing.assert_allclose(out, model.predict(X, verbose=0), rtol=1e-5, atol=1e-6)


def test_predict_of_a_model_with_dict_inputs_and_two_outputs():
    a, b = keras.Input((5,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Dense(4, name="h")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, [h, keras.layers.Dense(1, name="y")(h)])
    x = {"a": X, "b": X[:, :2] * 2}
    got, want = _backend.predict(model, x, batch_size=10), model.predict(x, batch_size=10, verbose=0)
    assert len(got) == 2 and [g.shape for g in got] == [(37, 4), (37, 1)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _compiled(kind):
    model = _softmax_regression("softmax")
    if kind == "distiller":
        from compressnet_lite.distillation import Distiller

        model = Distiller(model, _softmax_regression("softmax", seed=1))
        model.compile(optimizer=keras.optimizers.Adam(0.1))
    else:
        model.compile(optimizer=keras.optimizers.Adam(0.1), loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=["accuracy"] if kind == "with-a-metric" else [])
    return model


@pytest.mark.parametrize("kind", ["with-a-metric", "loss-only", "distiller"])
def test_build_for_fit_builds_first_and_changes_no_number(kind):
    runs = []
    for build_first in (False, True):
        model = _compiled(kind)
        if build_first:
            _backend.build_for_fit(model, X[:8], Y[:8])
            if _backend.name() == "tensorflow":  # the other trainers build when fit starts
                assert model.optimizer.built and len(model.optimizer.variables) > 2
        keras.utils.set_random_seed(1)  # (keras.Model.fit: without the Distiller's own build)
        history = keras.Model.fit(model, X, Y, epochs=2, batch_size=8, verbose=0)
        runs.append((model.get_weights(), history.history))
    (w_plain, h_plain), (w_built, h_built) = runs
    for a, b in zip(w_plain, w_built):
        np.testing.assert_array_equal(a, b)
    assert h_plain == h_built and len(h_plain["loss"]) == 2


def test_build_for_fit_reads_a_datasets_elements_and_leaves_what_it_cannot_read_to_fit():
    tf = pytest.importorskip("tensorflow")
    batches = tf.data.Dataset.from_tensor_slices((X, Y)).batch(8)
    built, generator, named = (_compiled("with-a-metric") for _ in range(3))
    _backend.build_for_fit(built, batches)
    _backend.build_for_fit(generator, (b for b in [(X, Y)]))
    _backend.build_for_fit(generator, None)
    _backend.build_for_fit(named, batches.map(lambda x, y: {"x": x, "y": y}))
    assert built.optimizer.built == (_backend.name() == "tensorflow")
    assert not generator.optimizer.built and not named.optimizer.built
    for model in (built, generator):
        model.fit(batches, epochs=1, verbose=0, shuffle=False)  # fit builds what is left


def test_distiller_fit_builds_first(monkeypatch):
    from compressnet_lite.distillation import Distiller

    distiller = Distiller(_softmax_regression("softmax"), _softmax_regression("softmax", seed=1))
    distiller.compile(optimizer=keras.optimizers.Adam(0.1))
    seen, real = [], _backend.build_for_fit
    monkeypatch.setattr(_backend, "build_for_fit", lambda *a: (seen.append(a[1:]), real(*a)))
    distiller.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    assert len(seen) == 1 and seen[0][0] is X and seen[0][1] is Y and distiller.optimizer.built


def test_build_for_fit_leaves_an_uncompiled_model_alone_and_refuses_a_non_model():
    model = _softmax_regression()
    _backend.build_for_fit(model, X, Y)
    assert getattr(model, "optimizer", None) is None
    with pytest.raises(TypeError, match="model"):
        _backend.build_for_fit("a model", X, Y)


def test_require_names_the_needed_backend():
    _backend.require(_backend.name(), "anything")  # the running backend passes
    other = next(b for b in _backend.BACKENDS if b != _backend.name())
    message = (f"this feature needs Keras' .+ backend, but Keras runs on '{_backend.name()}': "
               f"set KERAS_BACKEND={other} .*\\. Use another\\.$")
    with pytest.raises(_backend.BackendError, match=message):
        _backend.require(other, "this feature", "Use another.")
    with pytest.raises(_backend.BackendError, match=f"KERAS_BACKEND={other} before importing keras$"):
        _backend.require(other, "this feature")


def test_scope_value_reads_the_stateless_scope():
    v = keras.Variable(np.zeros(2, np.float32))
    w = keras.Variable(np.zeros(2, np.float32))
    assert _backend.scope_value(v) is None and not _backend.outside_scope(v)
    with keras.StatelessScope(state_mapping=[(v, np.ones(2, np.float32))]):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(_backend.scope_value(v)), [1, 1])
        assert not _backend.outside_scope(v) and _backend.outside_scope(w)


# ---------------------------------------------------------------------------------------
# The caller's model survives every transform and the training of its result, on every
# backend (JAX donates the buffers of the variables it trains; PyTorch updates in place)
# ---------------------------------------------------------------------------------------

def _small(digits, n=256):
    return digits.x_train[:n], digits.y_train[:n]


def _user_model(trained_mlp, digits):
    """A user's model: trained, compiled, fitted on this backend (its arrays come from fit)."""
    from compressnet_lite import models

    models.compile_model(trained_mlp)
    trained_mlp.fit(*_small(digits), epochs=1, batch_size=32, verbose=0)
    return trained_mlp


def _fit(model, digits, callbacks=()):
    from compressnet_lite import models

    models.compile_model(model)
    model.fit(*_small(digits), epochs=1, batch_size=32, verbose=0, callbacks=list(callbacks))
    return model


def _prune(m, d):
    from compressnet_lite import pruning

    return pruning.prune(m, 0.5)


def _gradual(m, d):
    from compressnet_lite import pruning

    new = pruning.prune(m, 0.0)
    schedule = pruning.PolynomialDecay(0.0, 0.8, begin=0, end=6, frequency=2)
    return _fit(new, d, [pruning.PruningCallback(schedule)])


def _compress(m, d):
    from compressnet_lite import data, pipeline

    small = data.Dataset(*_small(d), d.x_test[:64], d.y_test[:64])
    return pipeline.compress(m, small, [("prune", 0.5), ("quantize", 8)], fine_tune_epochs=1)[0]


def _round_trip(m, d, tmp_path):
    from compressnet_lite import storage

    storage.save_compressed(m, tmp_path / "m.cnl")
    return storage.load_compressed(tmp_path / "m.cnl")


def _transforms():
    from compressnet_lite import clustering, lowrank, merging, models, pruning, quantization

    return {
        "prune": (None, _prune),
        "prune-taylor": (None, lambda m, d: pruning.prune(m, 0.5, criterion="taylor", data=_small(d))),
        "gradual-pruning": (None, _gradual),
        "strip": (_prune, lambda m, d: pruning.strip(m)),
        "prune-neurons": (None, lambda m, d: pruning.prune_neurons(m, 0.5)),
        "merge": (None, lambda m, d: merging.merge_neurons(m, "fc1", ratio=0.25)),
        "factorize": (None, lambda m, d: lowrank.factorize(m, "fc1", rank=8)),
        "quantize": (None, lambda m, d: quantization.quantize_model(m, bits=8)),
        "qat": (None, lambda m, d: quantization.quantize_aware(m, bits=8, activation_bits=8,
                                                               calibration_data=d.x_train[:64])),
        "cluster": (None, lambda m, d: clustering.cluster_weights(m, n_clusters=8)),
        "strip-clustering": (lambda m, d: clustering.cluster_weights(m, n_clusters=8),
                             lambda m, d: clustering.strip_clustering(m)),
        "clone": (None, lambda m, d: models.clone(m)),
        "pipeline": (None, _compress),
        "storage-round-trip": (None, _round_trip),
    }


@pytest.mark.parametrize("case", list(_transforms()))
def test_transform_and_fit_leave_the_callers_model_bit_identical(case, trained_mlp, digits, tmp_path):
    prepare, transform = _transforms()[case]
    caller = _user_model(trained_mlp, digits)
    if prepare is not None:
        caller = prepare(caller, digits)
    x = digits.x_test[:50]
    weights = [np.array(w, copy=True) for w in caller.get_weights()]
    outputs = np.array(caller.predict(x, verbose=0), copy=True)
    args = (caller, digits, tmp_path) if case == "storage-round-trip" else (caller, digits)
    new = transform(*args)
    assert new is not caller
    _fit(new, digits)  # training the result must not reach the caller's arrays
    new.predict(x, verbose=0)
    for before, after in zip(weights, caller.get_weights()):
        np.testing.assert_array_equal(after, before)
    # the same function (recompiled predict steps may round differently in the last bit)
    np.testing.assert_allclose(caller.predict(x, verbose=0), outputs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(caller(x, training=False)), outputs,
                               rtol=1e-5, atol=1e-7)


def test_distiller_leaves_the_teacher_bit_identical_and_trains_the_student(trained_mlp, digits):
    from compressnet_lite import distillation, models

    teacher = _user_model(trained_mlp, digits)
    x = digits.x_test[:50]
    weights = [np.array(w, copy=True) for w in teacher.get_weights()]
    outputs = np.array(teacher.predict(x, verbose=0), copy=True)
    keras.utils.set_random_seed(1)
    student = models.mlp(64, (16,), name="student")
    start = [np.array(w, copy=True) for w in student.get_weights()]
    distiller = distillation.Distiller(student, teacher, temperature=4.0, alpha=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    distiller.fit(*_small(digits), epochs=1, batch_size=32, verbose=0)
    for before, after in zip(weights, teacher.get_weights()):
        np.testing.assert_array_equal(after, before)
    np.testing.assert_allclose(teacher.predict(x, verbose=0), outputs, rtol=1e-5, atol=1e-7)
    assert all(layer.trainable for layer in teacher.layers)
    assert any(not np.array_equal(a, b) for a, b in zip(start, student.get_weights()))
    student.predict(x, verbose=0)  # the student, trained in place, is usable


# ---------------------------------------------------------------------------------------
# Determinism under keras.utils.set_random_seed, on every backend
# ---------------------------------------------------------------------------------------

def _seeded_runs():
    from compressnet_lite import clustering, distillation, models, pruning, quantization

    def base():
        return models.seed_mlp()

    def train(m, d, callbacks=()):
        return models.train(m, d, epochs=1, seed=None, callbacks=callbacks)

    def gradual(d):
        schedule = pruning.PolynomialDecay(0.0, 0.8, begin=0, end=20, frequency=5)
        return train(pruning.prune(base(), 0.0), d, [pruning.PruningCallback(schedule)])

    def distill(d):
        student = models.mlp(64, (16,), name="student")
        distiller = distillation.Distiller(student, base(), temperature=4.0)
        distiller.compile(optimizer="adam")
        distiller.fit(d.x_train, d.y_train, epochs=1, batch_size=32, verbose=0)
        return student

    return {
        "train": lambda d: train(base(), d),
        "gradual-pruning": gradual,
        "qat": lambda d: train(quantization.quantize_aware(base(), bits=4), d),
        "cluster-fine-tune": lambda d: train(clustering.cluster_weights(base(), 8), d),
        "distiller": distill,
    }


@pytest.mark.parametrize("case", list(_seeded_runs()))
def test_same_seed_same_numbers(case, digits):
    from compressnet_lite import data

    small = data.Dataset(*_small(digits, 320), digits.x_test[:10], digits.y_test[:10])
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        runs.append([np.array(w, copy=True) for w in _seeded_runs()[case](small).get_weights()])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(8)  # and the seed matters: another seed, other numbers
    other = _seeded_runs()[case](small).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(runs[0], other))


# ---------------------------------------------------------------------------------------
# Scale-out on JAX: keras.distribution.DataParallel over two host CPU devices
# ---------------------------------------------------------------------------------------

_DATA_PARALLEL = """
import jax, keras, numpy as np
assert len(jax.devices()) == 2, jax.devices()
import compressnet_lite as cnl
from compressnet_lite import clustering, distillation, models, pruning, quantization

d = cnl.data.load_digits()
x, y = d.x_train[:512], d.y_train[:512]   # 16 batches of 32: each device gets 16 examples


def fit(m, callbacks=()):
    models.compile_model(m)
    m.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0, callbacks=list(callbacks))
    return m


def workloads():
    out = {}
    keras.utils.set_random_seed(0)
    base = fit(models.seed_mlp())
    schedule = pruning.PolynomialDecay(0.0, 0.7, begin=0, end=24, frequency=8)
    g = fit(pruning.prune(base, 0.0), [pruning.PruningCallback(schedule)])
    out["gradual"] = g.get_weights()
    out["qat"] = fit(quantization.quantize_aware(base, bits=8)).get_weights()
    out["cluster"] = fit(clustering.cluster_weights(base, 8)).get_weights()
    student = models.mlp(64, (16,), name="student")
    dist = distillation.Distiller(student, base, temperature=4.0)
    dist.compile(optimizer="adam")
    dist.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    out["distiller"] = student.get_weights()
    return out


one = workloads()
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
two = workloads()
for name in one:
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(one[name], two[name]))
    print(name, "largest difference", worst)
    for a, b in zip(one[name], two[name]):
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(b, a, err_msg=name)
print("OK")
"""


@pytest.mark.backend("jax", reason="keras.distribution (DataParallel) runs on the JAX backend")
def test_data_parallel_on_two_devices_matches_one_device(run_python):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    out = run_python(_DATA_PARALLEL, env={"XLA_FLAGS": flags}, timeout=600)
    assert all(name in out for name in ("gradual", "qat", "cluster", "distiller"))


# ---------------------------------------------------------------------------------------
# .keras files move between backends
# ---------------------------------------------------------------------------------------

_WRITE = """
import sys, keras, numpy as np
import compressnet_lite as cnl
from compressnet_lite import clustering, models, pruning, quantization
out, backend = sys.argv[1], keras.backend.backend()
d = cnl.data.load_digits()
keras.utils.set_random_seed(0)
base = models.train(models.seed_mlp(), cnl.data.Dataset(d.x_train[:256], d.y_train[:256],
                    d.x_test[:8], d.y_test[:8]), epochs=1)
qat = quantization.quantize_aware(base, bits=4, activation_bits=8, calibration_data=d.x_train[:64])
models.compile_model(qat)
qat.fit(d.x_train[:64], d.y_train[:64], epochs=1, batch_size=32, verbose=0)  # moves the ranges
made = {"masks": pruning.prune(base, 0.6), "qat": qat,
        "clustered": clustering.cluster_weights(base, 8), "quantized": quantization.quantize_model(base, 4)}
for kind, m in made.items():
    models.clone(m).save(f"{out}/{backend}-{kind}.keras")
    np.save(f"{out}/{backend}-{kind}.npy", m.predict(d.x_test, verbose=0))
print("OK")
"""

_READ = """
import glob, os, sys, keras, numpy as np
import compressnet_lite as cnl
from compressnet_lite import clustering, pruning, quantization  # noqa: F401  (registers the layers)
backend = keras.backend.backend()
d = cnl.data.load_digits()
files = [f for f in sorted(glob.glob(sys.argv[1] + "/*.keras"))
         if not os.path.basename(f).startswith(backend)]
assert len(files) == 8, files
for f in files:
    m = keras.models.load_model(f)  # safe_mode=True
    got, want = m.predict(d.x_test, verbose=0), np.load(f[:-6] + ".npy")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f)
    if f.endswith("masks.keras"):
        assert 0.55 < 1 - np.mean(np.concatenate([v.ravel() for v in pruning.masks(m).values()])) < 0.65
    print(os.path.basename(f), "->", backend, "max |diff|", float(np.abs(got - want).max()))
print("OK")
"""


def _installed(*names):
    import importlib.util

    return all(importlib.util.find_spec(n) is not None for n in names)


@pytest.mark.backend("jax", reason="one run covers every pair of backends (the JAX suite runs it)")
@pytest.mark.skipif(not _installed("jax", "torch"), reason="needs jax and torch (make test-backends)")
def test_keras_files_load_under_every_other_backend(run_python, tmp_path):
    # This suite's backend writes and reads in this process; the two others in three fresh
    # ones (the second writes, then reads the files of the two before it): every backend
    # reads the 8 files the two others wrote.
    write, read = (script.replace("sys.argv[1]", repr(str(tmp_path))) for script in (_WRITE, _READ))
    here = _backend.name()
    first, second = (b for b in ("tensorflow", "jax", "torch") if b != here)
    exec(write, {"__name__": "write_here"})
    run_python(write, backend=first)
    reads = [run_python(write + read, backend=second), run_python(read, backend=first)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(read, {"__name__": "read_here"})
    reads.append(printed.getvalue())
    for out, backend in zip(reads, (second, first, here)):
        assert out.count(f"-> {backend} max") == 8, out  # the 8 files the two others wrote
