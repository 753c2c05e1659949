"""Tests for compressnet_lite.pruning: masks, schedules, criteria, masked training, structure."""

import keras
import numpy as np
from keras.ops import convert_to_numpy as as_numpy
import pytest

from compressnet_lite import metrics, models, pruning, surgery

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 12)).astype("float32")
Y = RNG.integers(0, 4, size=64).astype("int32")


def _model(seed=0, hidden=(16, 8)):
    keras.utils.set_random_seed(seed)
    return models.mlp(12, hidden, 4)


def _conv_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(6, activation="relu", name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(x), name="convnet")


X_IMG = RNG.normal(size=(32, 6, 6, 2)).astype("float32")
Y_IMG = RNG.integers(0, 4, size=32).astype("int32")


# ------------------------------------------------------------------------ array math

@pytest.mark.parametrize("shape", [(100,), (12, 7), (3, 3, 4, 5)], ids=["vector", "dense", "conv"])
@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 0.99])
def test_magnitude_mask_exact_sparsity(shape, sparsity):
    w = RNG.normal(size=shape)
    mask = pruning.magnitude_mask(w, sparsity=sparsity)
    assert mask.shape == w.shape and mask.dtype == np.float32
    assert int((mask == 0).sum()) == int(round(sparsity * w.size))
    if 0 < sparsity:
        assert np.abs(w[mask == 0]).max() <= np.abs(w[mask == 1]).min()


def test_magnitude_mask_ties_are_deterministic():
    w = np.ones(10)
    mask = pruning.magnitude_mask(w, sparsity=0.3)
    np.testing.assert_array_equal(mask, [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(mask, pruning.magnitude_mask(w, sparsity=0.3))


def test_magnitude_mask_threshold_is_the_articles_rule():
    w = np.array([[0.1, -0.3], [0.29, -0.31], [0.3, 0.0]])
    mask = pruning.magnitude_mask(w, threshold=0.3)
    np.testing.assert_array_equal(mask, (np.abs(w) >= 0.3).astype(np.float32))
    np.testing.assert_array_equal(mask, [[0, 1], [0, 1], [1, 0]])


@pytest.mark.parametrize("kwargs,error,match", [
    pytest.param({}, ValueError, "exactly one", id="neither"),
    pytest.param({"sparsity": 0.5, "threshold": 0.1}, ValueError, "exactly one", id="both"),
    pytest.param({"sparsity": 1.0}, ValueError, r"sparsity must be in \[0, 1\)", id="sparsity-1"),
    pytest.param({"sparsity": -0.1}, ValueError, r"sparsity must be in \[0, 1\)", id="sparsity-negative"),
    pytest.param({"sparsity": "half"}, TypeError, "sparsity must be a number", id="sparsity-str"),
    pytest.param({"threshold": -1.0}, ValueError, "threshold must be", id="threshold-negative"),
])
def test_magnitude_mask_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        pruning.magnitude_mask(np.ones(4), **kwargs)


def test_magnitude_mask_rejects_nan_and_empty():
    with pytest.raises(ValueError, match="NaN"):
        pruning.magnitude_mask([1.0, np.nan], sparsity=0.5)
    with pytest.raises(ValueError, match="empty"):
        pruning.magnitude_mask([], sparsity=0.5)


@pytest.mark.parametrize("shape", [(16, 3), (3, 3, 8, 5)], ids=["dense", "conv"])
@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)], ids=["2:4", "1:4", "4:8"])
def test_nm_mask_pattern(shape, n, m):
    w = RNG.normal(size=shape)
    mask = pruning.nm_mask(w, n=n, m=m)
    assert mask.shape == w.shape
    groups = np.moveaxis(mask, -2, -1).reshape(-1, m)
    np.testing.assert_array_equal(groups.sum(axis=1), n)
    aw = np.moveaxis(np.abs(w), -2, -1).reshape(-1, m)
    kept_min = np.where(groups == 1, aw, np.inf).min(axis=1)
    pruned_max = np.where(groups == 0, aw, -np.inf).max(axis=1)
    assert np.all(kept_min >= pruned_max)
    assert abs(1 - mask.mean() - (1 - n / m)) < 1e-9


@pytest.mark.parametrize("kwargs,match", [
    pytest.param({"n": 5, "m": 4}, "n must be in 1..4", id="n-above-m"),
    pytest.param({"n": 0, "m": 4}, "n must be in 1..4", id="n-zero"),
    pytest.param({"n": 2, "m": 3}, "not a multiple of m=3", id="not-multiple"),
])
def test_nm_mask_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pruning.nm_mask(np.ones((8, 2)), **kwargs)


@pytest.mark.parametrize("step", [0, 10, 25, 50, 99, 100, 150])
def test_polynomial_sparsity_matches_formula(step):
    begin, end, si, sf = 10, 100, 0.1, 0.9
    t = min(max(step, begin), end)
    expected = sf + (si - sf) * (1 - (t - begin) / (end - begin)) ** 3
    assert pruning.polynomial_sparsity(step, si, sf, begin, end) == pytest.approx(expected)


def test_schedules():
    sched = pruning.PolynomialDecay(0.0, 0.8, begin=10, end=95, frequency=20)
    updates = [s for s in range(120) if sched(s)[0]]
    assert updates == [10, 30, 50, 70, 90, 95]  # every 20 steps from begin, and at end
    assert sched(95)[1] == pytest.approx(0.8) and sched(5) == (False, 0.0)
    const = pruning.ConstantSparsity(0.6, begin=3, frequency=5)
    assert const(2) == (False, 0.0) and const(3) == (True, 0.6) and const(4) == (False, 0.6)
    assert pruning.constant_sparsity(10, 0.5, begin=3) == 0.5


@pytest.mark.parametrize("schedule", [
    pruning.PolynomialDecay(0.1, 0.9, begin=5, end=50, power=2, frequency=7),
    pruning.ConstantSparsity(0.5, begin=1, end=9, frequency=3),
], ids=["polynomial", "constant"])
def test_schedule_serialization_round_trip(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is type(schedule) and again.get_config() == schedule.get_config()
    assert [again(s) for s in range(60)] == [schedule(s) for s in range(60)]


@pytest.mark.parametrize("make,match", [
    pytest.param(lambda: pruning.PolynomialDecay(0.0, 1.0, 0, 10), r"final must be in \[0, 1\)",
                 id="final-1"),
    pytest.param(lambda: pruning.PolynomialDecay(0.0, 0.5, 10, 10), "end must be after begin", id="end"),
    pytest.param(lambda: pruning.PolynomialDecay(0.6, 0.5, 0, 10),
                 "initial sparsity must not exceed final, got initial=0.6, final=0.5",
                 id="initial-above-final"),
    pytest.param(lambda: pruning.PolynomialDecay(0.0, 0.5, 0, 10, power=0), "power", id="power"),
    pytest.param(lambda: pruning.ConstantSparsity(0.5, frequency=0), "frequency", id="frequency"),
    pytest.param(lambda: pruning.ConstantSparsity(0.5, begin=10, end=5),
                 "end must be -1 .no end. or >= begin=10", id="constant-end-before-begin"),
    pytest.param(lambda: pruning.ConstantSparsity(0.5, end=-2), "end must be >= -1",
                 id="end-below-minus-one"),
    pytest.param(lambda: pruning.polynomial_sparsity(0, 0, 0.5, 5, 5), "end must be after", id="fn-end"),
])
def test_schedule_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_neuron_score_math():
    kernel = np.array([[1.0, -2.0, 0.0], [-3.0, 0.0, 0.0]])
    np.testing.assert_allclose(pruning.l1_scores(kernel), [4, 2, 0])
    np.testing.assert_allclose(pruning.l2_scores(kernel), [np.sqrt(10), 2, 0])
    acts = np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    np.testing.assert_allclose(pruning.mean_activation_scores(acts), [0.5, 1.0])
    np.testing.assert_allclose(pruning.apoz_scores(acts), [0.25, 0.5])


# ------------------------------------------------------------------- one-shot pruning

def test_prune_layer_scope_is_exact_per_layer_and_leaves_caller_alone():
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    pruned = pruning.prune(model, 0.75)
    for name in ("fc1", "fc2", "out"):
        layer = pruned.get_layer(name)
        assert isinstance(layer, pruning.PrunableDense)
        size = int(np.prod(layer.kernel.shape))
        assert metrics.sparsity(layer) == pytest.approx(round(0.75 * size) / size)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(type(l) in (keras.layers.Dense, keras.layers.InputLayer) for l in model.layers)
    assert metrics.count_params(pruned) == metrics.count_params(model)  # masks are not parameters


def test_prune_global_scope_uses_one_threshold():
    model = _model()
    k = model.get_layer("fc2").get_weights()[0]
    model.get_layer("fc2").set_weights([k * 10, model.get_layer("fc2").get_weights()[1]])
    pruned = pruning.prune(model, 0.6, scope="global")
    kernels = [model.get_layer(n).get_weights()[0] for n in ("fc1", "fc2", "out")]
    masks = pruning.masks(pruned)
    all_w = np.concatenate([np.abs(k).ravel() for k in kernels])
    all_m = np.concatenate([masks[n].ravel() for n in ("fc1", "fc2", "out")])
    assert int((all_m == 0).sum()) == round(0.6 * all_w.size)
    assert all_w[all_m == 0].max() <= all_w[all_m == 1].min()
    assert metrics.sparsity(pruned.get_layer("fc2")) < 0.2 < metrics.sparsity(pruned.get_layer("fc1"))


def test_prune_layers_argument():
    pruned = pruning.prune(_model(), 0.5, layers=["fc2"])
    assert isinstance(pruned.get_layer("fc2"), pruning.PrunableDense)
    assert type(pruned.get_layer("fc1")) is keras.layers.Dense
    assert metrics.sparsity(pruned.get_layer("fc1")) == 0.0


@pytest.mark.parametrize("criterion", ["gradient", "taylor"])
def test_data_criteria(criterion):
    model = _model()
    pruned = pruning.prune(model, 0.5, criterion=criterion, data=(X, Y))
    layer = model.get_layer("fc1")
    scores = pruning.WEIGHT_CRITERIA[criterion](model, [layer], (X, Y))[0]
    mask = pruning.masks(pruned)["fc1"]
    np.testing.assert_array_equal(mask, pruning.score_mask(scores, 0.5))
    assert not np.array_equal(mask, pruning.magnitude_mask(layer.get_weights()[0], sparsity=0.5))


def test_taylor_is_weight_times_gradient():
    from compressnet_lite import _backend

    model = _model()
    layer = model.get_layer("fc2")
    loss = keras.losses.SparseCategoricalCrossentropy()  # the model ends in a softmax
    g = _backend.loss_gradients(model, [layer.kernel], X, Y, loss=loss)[0]
    assert np.abs(g).max() > 0
    np.testing.assert_allclose(pruning.gradient(model, [layer], (X, Y))[0], np.abs(g), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(pruning.taylor(model, [layer], (X, Y))[0],
                               np.abs(g * layer.get_weights()[0]), rtol=1e-4, atol=1e-7)


def test_custom_criterion_callable():
    model = _model()
    pruned = pruning.prune(model, 0.5, criterion=lambda m, ls, d: [-np.abs(l.get_weights()[0]) for l in ls])
    w = np.abs(model.get_layer("fc1").get_weights()[0])
    mask = pruning.masks(pruned)["fc1"]
    assert w[mask == 1].max() <= w[mask == 0].min()  # the largest half was pruned
    assert metrics.sparsity(pruned.get_layer("fc1")) == 0.5


def _nan_model():
    m = _model()
    k, b = m.get_layer("fc1").get_weights()
    k[0, 0] = np.nan
    m.get_layer("fc1").set_weights([k, b])
    return m


class _Sub(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = keras.layers.Dense(2)

    def call(self, x):
        return self.fc(x)


def _subclassed():
    m = _Sub()
    m(X[:1])
    return m


def _nested():
    inputs = keras.Input((12,))
    return keras.Model(inputs, keras.layers.Dense(2, name="o")(_model()(inputs)))


@pytest.mark.parametrize("make,kwargs,error,match", [
    pytest.param(_model, {"sparsity": 1.0}, ValueError, r"\[0, 1\)", id="sparsity-1"),
    pytest.param(_model, {"sparsity": -0.5}, ValueError, r"\[0, 1\)", id="sparsity-negative"),
    pytest.param(_model, {"sparsity": 0.5, "scope": "model"}, ValueError, "scope must be one of", id="scope"),
    pytest.param(_model, {"sparsity": 0.5, "criterion": "random"}, ValueError, "criterion must be one of",
                 id="criterion"),
    pytest.param(_model, {"sparsity": 0.5, "criterion": "gradient"}, ValueError, "needs data", id="no-data"),
    pytest.param(_model, {"sparsity": 0.5, "criterion": "taylor", "data": X}, ValueError, "needs labels",
                 id="no-labels"),
    pytest.param(_model, {"sparsity": 0.5, "criterion": "taylor", "data": (X[:0], Y[:0])}, ValueError,
                 "empty",
                 id="empty-data"),
    pytest.param(_model, {"sparsity": 0.5, "layers": ["fc9"]}, ValueError, "'fc9' is not in model",
                 id="unknown-layer"),
    pytest.param(_model, {"sparsity": 0.5, "layers": ["input"]}, ValueError, "supports Dense and Conv2D",
                 id="unsupported-layer"),
    pytest.param(_nan_model, {"sparsity": 0.5}, ValueError, "NaN", id="nan-weights"),
    pytest.param(_subclassed, {"sparsity": 0.5}, ValueError, "subclassed", id="subclassed"),
    pytest.param(lambda: keras.Sequential([keras.layers.Dense(2)]), {"sparsity": 0.5}, ValueError,
                 "not built",
                 id="unbuilt"),
    pytest.param(lambda: "model", {"sparsity": 0.5}, TypeError, "keras.Model", id="not-a-model"),
])
def test_prune_errors(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        pruning.prune(make(), **kwargs)


# --------------------------------------------------------- masks during training, saving

def test_masks_hold_during_fine_tuning_with_adam():
    model = pruning.prune(_model(), 0.7)
    before = {n: model.get_layer(n).get_weights()[0].copy() for n in ("fc1", "fc2", "out")}
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    model.fit(X, Y, epochs=3, batch_size=16, verbose=0)
    for name, old in before.items():
        mask = pruning.masks(model)[name]
        new = model.get_layer(name).get_weights()[0]
        assert np.all(new[mask == 0] == 0.0)
        assert not np.allclose(new[mask == 1], old[mask == 1])  # the kept weights did train
        assert np.count_nonzero(new == 0) >= np.count_nonzero(mask == 0) == round(0.7 * mask.size)


def test_strip_gives_plain_layers_with_the_zeros():
    pruned = pruning.prune(_model(), 0.5)
    plain = pruning.strip(pruned)
    assert all(type(l) in (keras.layers.Dense, keras.layers.InputLayer) for l in plain.layers)
    assert not any(v.name.startswith("cnl_") for v in plain.weights)
    assert metrics.sparsity(plain) == pytest.approx(metrics.sparsity(pruned))
    np.testing.assert_allclose(as_numpy(plain(X)), as_numpy(pruned(X)), rtol=1e-6)
    assert isinstance(pruned.get_layer("fc1"), pruning.PrunableDense)  # input untouched


@pytest.mark.parametrize("make,x", [(_model, X), (_conv_model, X_IMG)], ids=["dense", "conv"])
def test_keras_round_trip_keeps_masks(tmp_path, make, x):
    pruned = pruning.prune(make(), 0.6)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path)  # default safe_mode=True
    for name, mask in pruning.masks(pruned).items():
        np.testing.assert_array_equal(pruning.masks(loaded)[name], mask)
        assert type(loaded.get_layer(name)) is type(pruned.get_layer(name))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-6)
    # the reloaded masks still hold during training
    loaded.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    loaded.fit(x, np.arange(len(x)) % 4, epochs=1, batch_size=16, verbose=0)
    for name, mask in pruning.masks(loaded).items():
        assert np.all(loaded.get_layer(name).get_weights()[0][mask == 0] == 0)


def test_user_kernel_constraint_is_kept():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    x = keras.layers.Dense(8, kernel_constraint=keras.constraints.MaxNorm(0.1), name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(x))
    pruned = pruning.prune(model, 0.5, layers=["fc1"])
    pruned.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    pruned.fit(X, np.ones((64, 4)), epochs=2, verbose=0)
    k = pruned.get_layer("fc1").get_weights()[0]
    assert np.all(np.sqrt((k ** 2).sum(axis=0)) <= 0.1 + 1e-5)
    assert metrics.sparsity(pruned.get_layer("fc1")) >= 0.5


# --------------------------------------------------------------------- gradual pruning

def test_pruning_callback_reaches_final_sparsity_monotonically():
    model = pruning.prune(_model(), 0.0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(pruning.masks(self.model)["fc1"].copy())

    schedule = pruning.PolynomialDecay(0.0, 0.8, begin=0, end=10, frequency=3)
    cb = pruning.PruningCallback(schedule)
    history = model.fit(X, Y, epochs=4, batch_size=16, verbose=0, callbacks=[cb, Record()])  # 16 steps
    sparsities = [1 - m.mean() for m in seen]
    assert sparsities == sorted(sparsities)
    assert sparsities[-1] == pytest.approx(0.8, abs=0.01)
    for earlier, later in zip(seen, seen[1:]):
        assert np.all(later <= earlier)  # once pruned, stays pruned
    assert history.history["sparsity"][-1] == pytest.approx(0.8)  # the scheduled target
    for name in ("fc1", "fc2", "out"):
        assert metrics.sparsity(model.get_layer(name)) == pytest.approx(0.8, abs=0.02)


def test_pruning_callback_resumes_from_optimizer_iterations():
    model = pruning.prune(_model(), 0.0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    calls = []
    cb = pruning.PruningCallback(lambda step: (calls.append(step) or False, 0.0))
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert calls == list(range(8))


def _gradual(steps_per_execution, epochs=4):
    model = pruning.prune(_model(), 0.0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  steps_per_execution=steps_per_execution)
    cb = pruning.PruningCallback(pruning.PolynomialDecay(0.0, 0.8, begin=0, end=12, frequency=4))
    keras.utils.set_random_seed(3)
    model.fit(X, Y, epochs=epochs, batch_size=16, shuffle=False, verbose=0, callbacks=[cb])  # 4 steps/epoch
    return model, cb


_NO_TORCH_SPE = "Keras' PyTorch trainer refuses steps_per_execution > 1"


@pytest.mark.backend("tensorflow", "jax", reason=_NO_TORCH_SPE)
def test_pruning_callback_follows_optimizer_steps_with_steps_per_execution():
    """Issue 12 item 7: with steps_per_execution=4 the callback runs once per 4 optimizer
    steps; a schedule counted in callback calls would end at step 48, not 12."""
    one, cb_one = _gradual(1)
    four, cb_four = _gradual(4)
    assert int(keras.ops.convert_to_numpy(four.optimizer.iterations)) == 16
    assert cb_four.step == cb_one.step == 16
    assert cb_four.sparsity == cb_one.sparsity == pytest.approx(0.8)
    for name, mask in pruning.masks(one).items():
        np.testing.assert_array_equal(pruning.masks(four)[name], mask)  # same steps, same masks
        assert 1 - mask.mean() == pytest.approx(0.8, abs=0.02)
    for a, b in zip(one.get_weights(), four.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.backend("tensorflow", "jax", reason=_NO_TORCH_SPE)
def test_pruning_callback_updates_inside_a_group_of_steps():
    """A scheduled step inside a group of steps_per_execution steps updates before the group."""
    model = pruning.prune(_model(), 0.0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=3)
    calls = []
    cb = pruning.PruningCallback(lambda step: (calls.append(step) or step == 4, 0.5))
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])  # 4 steps: groups of 3, 1
    assert calls == [0, 1, 2, 3, 4, 5]  # every step of both groups was asked
    assert cb.sparsity == 0.5 and pruning.masks(model)["fc1"].mean() == pytest.approx(0.5, abs=0.02)


def test_pruning_callback_errors():
    model = _model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="no masked layers"):
        model.fit(X, Y, epochs=1, verbose=0,
                  callbacks=[pruning.PruningCallback(pruning.ConstantSparsity(0.5))])
    with pytest.raises(TypeError, match="schedule must be"):
        pruning.PruningCallback(0.5)
    with pytest.raises(ValueError, match="needs data"):
        pruning.PruningCallback(pruning.ConstantSparsity(0.5), criterion="taylor")


# ------------------------------------------------------------------ structured pruning

def _zero_outgoing(model, removed_by_layer, positions=None):
    """Masked original: the removed units' outgoing weights (next layer's input rows) set to zero."""
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    layers = [l for l in masked.layers if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D))]
    for layer, nxt in zip(layers, layers[1:]):
        removed = removed_by_layer.get(layer.name, [])
        k, b = nxt.get_weights()
        if k.ndim == 4:
            k[:, :, removed, :] = 0
        else:
            units = layer.get_weights()[0].shape[-1]
            k = k.reshape(-1, units, k.shape[-1])
            k[:, removed, :] = 0
            k = k.reshape(-1, k.shape[-1])
        nxt.set_weights([k, b])
    return masked


@pytest.mark.parametrize("make,x,criterion,fraction", [
    pytest.param(_model, X, "l1", 0.5, id="mlp-l1"),
    pytest.param(_model, X, "l2", 0.25, id="mlp-l2"),
    pytest.param(_model, X, "apoz", 0.5, id="mlp-apoz"),
    pytest.param(_model, X, "mean_activation", 0.5, id="mlp-mean-activation"),
    pytest.param(_conv_model, X_IMG, "l1", 0.5, id="conv-flatten-l1"),
])
def test_prune_neurons_equals_masked_original(make, x, criterion, fraction):
    model = make()
    before = [w.copy() for w in model.get_weights()]
    small = pruning.prune_neurons(model, fraction, criterion=criterion, data=x)
    assert small.count_params() < model.count_params()
    removed = {}
    for layer in model.layers[:-1]:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            scores = pruning.neuron_scores(model, layer, criterion, x)
            keep = pruning.score_mask(scores, fraction).astype(bool)
            removed[layer.name] = list(np.flatnonzero(~keep))
            assert small.get_layer(layer.name).kernel.shape[-1] == keep.sum()
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(_zero_outgoing(model, removed)(x)),
                               rtol=1e-5, atol=1e-6)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert metrics.flops(small) < metrics.flops(model)


def test_prune_reaches_layers_of_nested_models():
    model = _nested()
    pruned = pruning.prune(model, 0.5)
    inner = pruned.layers[1]
    assert isinstance(inner.get_layer("fc1"), pruning.PrunableDense)
    assert set(pruning.masks(pruned)) == {"fc1", "fc2", "out", "o"}
    assert abs(cnl_sparsity(pruned) - 0.5) < 0.01
    plain = pruning.strip(pruned)
    np.testing.assert_allclose(as_numpy(plain(X[:8])), as_numpy(pruned(X[:8])), rtol=1e-6)
    assert not any(isinstance(l, pruning._Prunable) for l in plain.layers[1].layers)


def cnl_sparsity(model):
    from compressnet_lite import metrics
    return metrics.sparsity(model)


def test_group_importance_members():
    """In a chain, the producers-only L1 norm is Li et al.'s filter norm; "all" adds the next
    layer's input rows (Torch-Pruning's group importance), averaged over the two members."""
    model = _model()
    k1, k2 = model.get_layer("fc1").get_weights()[0], model.get_layer("fc2").get_weights()[0]
    filters = pruning.neuron_scores(model, "fc1", pruning.GroupImportance("l1", members="producers"))
    np.testing.assert_allclose(filters, pruning.l1_scores(k1), rtol=1e-6)
    both = pruning.neuron_scores(model, "fc1", "l1")
    np.testing.assert_allclose(both, (np.abs(k1).sum(0) + np.abs(k2).sum(1)) / 2, rtol=1e-6)
    summed = pruning.neuron_scores(model, "fc1", pruning.GroupImportance("l2", reduce="sum"))
    np.testing.assert_allclose(summed, np.square(k1).sum(0) + np.square(k2).sum(1), rtol=1e-6)
    assert "members='producers'" in repr(pruning.GroupImportance("l1", members="producers"))


def test_prune_neurons_threshold_and_masked_input():
    model = _model()
    scores = pruning.neuron_scores(model, "fc1")
    t = float(np.median(scores))
    small = pruning.prune_neurons(pruning.prune(model, 0.0), threshold=t, layers=["fc1"])
    assert small.get_layer("fc1").units == int((scores >= t).sum())
    assert small.get_layer("fc2").units == 8
    assert type(small.get_layer("fc2")) is keras.layers.Dense  # masks stripped
    tiny = pruning.prune_neurons(model, threshold=1e9, layers=["fc1"])
    assert tiny.get_layer("fc1").units == 1  # at least one unit stays


def _residual_bn_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


@pytest.mark.parametrize("transform", [
    pytest.param(lambda m, g: pruning.prune_neurons(m, 0.5, criterion=pruning.GroupImportance("l2")),
                 id="prune_neurons"),
    pytest.param(lambda m, g: surgery.keep_channels(m, {g: np.arange(4)}), id="keep_channels"),
    pytest.param(lambda m, g: surgery.rewrite(m), id="rewrite"),
    pytest.param(lambda m, g: surgery.group_of(m, "c1"), id="group_of"),
])
def test_structured_transforms_read_each_variable_once(transform, monkeypatch):
    """One transform reads every weight of the caller's model once (the reading() cache):
    a large model's weights are copied out of the backend once, not once per helper."""
    model = _residual_bn_model()
    group = surgery.group_of(model, "c1")
    reads = {}
    variable_type = type(model.weights[0])
    real = variable_type.__array__

    def counting(self, *args, **kwargs):
        value = real(self, *args, **kwargs)   # NumPy retries without copy= after a TypeError
        reads[id(self)] = reads.get(id(self), 0) + 1
        return value

    monkeypatch.setattr(variable_type, "__array__", counting)
    transform(model, group)
    counts = {v.path: reads.get(id(v), 0) for v in model.weights}
    assert max(counts.values()) == 1, counts


@pytest.mark.parametrize("kwargs,match", [
    pytest.param({}, "exactly one", id="neither"),
    pytest.param({"fraction": 0.5, "threshold": 1.0}, "exactly one", id="both"),
    pytest.param({"fraction": 1.0}, r"\[0, 1\)", id="fraction-1"),
    pytest.param({"threshold": float("nan")}, "finite", id="threshold-nan"),
    pytest.param({"fraction": 0.5, "criterion": "apoz"}, "needs data", id="no-data"),
    pytest.param({"fraction": 0.5, "criterion": "random"}, "criterion must be one of", id="criterion"),
    pytest.param({"fraction": 0.5, "layers": ["out"]}, "'out' cannot be pruned", id="output-layer"),
])
def test_prune_neurons_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pruning.prune_neurons(_model(), **kwargs)


# ----------------------------------------------------------------------- bytes on disk

def test_sparse_storage_round_trip_and_size(tmp_path):
    pruned = pruning.prune(_model(hidden=(64, 32)), 0.9)
    path = tmp_path / "w.cnl"
    size = pruning.save_sparse(pruned, path)
    assert size == path.stat().st_size
    plain = pruning.strip(pruned)
    for a, b in zip(pruning.load_sparse(path), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    report = pruning.sparse_bytes(pruned)
    assert report.sparse < report.dense / 2  # positions + (10% of) 32 bits vs 32 bits, plus headers
    assert report.keras_gzip < report.keras


def test_prune_neurons_refuses_a_graph_with_nothing_to_remove():
    """fc1's outputs are added to the model input: removing one would change the input."""
    inputs = keras.Input((12,))
    h = keras.layers.Dense(12, name="fc1")(inputs)
    x = keras.layers.Add(name="add")([inputs, h])
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(x))
    with pytest.raises(ValueError, match="(?s)no prunable channel group.*model input"):
        pruning.prune_neurons(model, 0.5)
    with pytest.raises(ValueError, match="'fc1' cannot be pruned: it reaches model input"):
        pruning.prune_neurons(model, 0.5, layers=["fc1"])
    assert isinstance(pruning.prune(model, 0.5).get_layer("fc1"), pruning.PrunableDense)  # masks work


_DISTRIBUTED = """
import numpy as np, keras
from compressnet_lite import models, pruning
x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
y = np.arange(64) % 4
with strategy.scope():
    m = pruning.prune(models.mlp(12, (16, 8), 4), 0.5)
    m.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
cb = pruning.PruningCallback(pruning.PolynomialDecay(0.5, 0.8, 0, 6, frequency=2))
m.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
for name, mask in pruning.masks(m).items():
    assert abs(mask.mean() - 0.2) < 0.02, (name, mask.mean())
    assert np.all(m.get_layer(name).get_weights()[0][mask == 0] == 0), name
print("OK")
"""


def test_gradual_pruning_in_a_distribution_strategy(run_on_two_cpus):
    run_on_two_cpus(_DISTRIBUTED)



@pytest.mark.parametrize("call, match", [
    (lambda: pruning.score_mask(np.arange(4.0), 1.5), r"sparsity must be in \[0, 1\]"),
    (lambda: pruning.score_mask(np.arange(4.0), -0.1), r"sparsity must be in \[0, 1\]"),
    (lambda: pruning.polynomial_sparsity(5, 0.9, 0.5, 0, 10), "initial sparsity must not exceed final"),
    (lambda: pruning.polynomial_sparsity(5, 0.0, 1.0, 0, 10), r"final must be in \[0, 1\)"),
    (lambda: pruning.polynomial_sparsity(5, -0.1, 0.5, 0, 10), r"initial must be in \[0, 1\)"),
    (lambda: pruning.constant_sparsity(5, 1.2), r"sparsity must be in \[0, 1\)"),
], ids=["mask-above-one", "mask-negative", "decreasing-schedule", "final-one", "initial-negative",
        "constant-above-one"])
def test_array_math_rejects_out_of_range_sparsity(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_score_mask_accepts_the_whole_range():
    assert pruning.score_mask(np.arange(4.0), 1.0).sum() == 0
    assert pruning.score_mask(np.arange(4.0), 0.0).sum() == 4
    assert pruning.constant_sparsity(5, 0.5, begin=3) == 0.5
    assert pruning.constant_sparsity(2, 0.5, begin=3) == 0.0


def test_group_taylor_and_activation_criteria():
    """Taylor: sum of |w dL/dw| over the group's slices; activations: on the tensor fc2 reads."""
    from compressnet_lite import _backend
    model = _model()
    x, y = X[:64], Y[:64]
    taylor = pruning.neuron_scores(model, "fc1", pruning.GroupImportance("taylor", reduce="sum"), (x, y))
    k1, k2 = model.get_layer("fc1").kernel, model.get_layer("fc2").kernel
    g1, g2 = _backend.loss_gradients(model, [k1, k2], x, y)
    w1, w2 = np.asarray(k1), np.asarray(k2)
    np.testing.assert_allclose(taylor, np.abs(w1 * g1).sum(0) + np.abs(w2 * g2).sum(1), rtol=1e-5)
    hidden = keras.Model(model.inputs, model.get_layer("fc1").output).predict(x, verbose=0)
    mean_act = pruning.neuron_scores(model, "fc1", "mean_activation", x)
    np.testing.assert_allclose(mean_act, np.abs(hidden).mean(0), rtol=1e-5)
    apoz = pruning.neuron_scores(model, "fc1", "apoz", x)
    np.testing.assert_allclose(apoz, (hidden != 0).mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="needs labels"):
        pruning.neuron_scores(model, "fc1", "taylor", x)
    with pytest.raises(ValueError, match="needs data"):
        pruning.neuron_scores(model, "fc1", pruning.GroupImportance("apoz"))
    small = pruning.prune_neurons(model, 0.5, criterion="taylor", data=(x, y))
    assert small.get_layer("fc1").units == 8


@pytest.mark.parametrize("kwargs,error,match", [
    pytest.param({"kind": "l3"}, ValueError, "kind must be one of", id="kind"),
    pytest.param({"members": "some"}, ValueError, "members must be one of", id="members"),
    pytest.param({"reduce": "max"}, ValueError, "reduce must be one of", id="reduce"),
])
def test_group_importance_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        pruning.GroupImportance(**kwargs)


def test_normalize_scores():
    s = np.array([1.0, 3.0, 2.0])
    np.testing.assert_allclose(pruning.normalize_scores(s, "mean"), s / 2)
    np.testing.assert_allclose(pruning.normalize_scores(s, "max"), s / 3)
    np.testing.assert_allclose(pruning.normalize_scores(s, "lamp"), [1 / 6, 1.0, 2 / 5])
    np.testing.assert_array_equal(pruning.normalize_scores(s, None), s)
    with pytest.raises(ValueError, match="normalize must be one of"):
        pruning.normalize_scores(s, "sum")


@pytest.mark.parametrize("kwargs,error,match", [
    pytest.param({"fraction": 0.5, "scope": "model"}, ValueError, "scope must be one of", id="scope"),
    pytest.param({"fraction": 0.5, "scope": "global", "normalize": "z"}, ValueError, "normalize must be",
                 id="normalize"),
    pytest.param({"fraction": 0.5, "round_to": 0}, ValueError, "round_to must be >= 1", id="round-to"),
    pytest.param({"threshold": "0.5"}, TypeError, "threshold must be a number", id="threshold-str"),
    pytest.param({"fraction": 0.5, "layers": []}, ValueError, "at least one layer", id="no-layers"),
    pytest.param({"fraction": 0.5, "criterion": lambda m, g, d: np.ones(3)}, ValueError,
                 r"criterion returned shape \(3,\)", id="criterion-shape"),
    pytest.param({"fraction": 0.5, "criterion": lambda m, g, d: np.full(g.units, np.nan)}, ValueError,
                 "NaN", id="criterion-nan"),
])
def test_prune_neurons_graph_options_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        pruning.prune_neurons(_model(), **kwargs)


def test_prune_neurons_global_scope_and_round_to():
    model = _model()                                  # fc1 16 units, fc2 8 units
    small = pruning.prune_neurons(model, 0.5, scope="global")
    assert small.get_layer("fc1").units + small.get_layer("fc2").units == 12
    rounded = pruning.prune_neurons(model, 0.6, round_to=4)
    assert rounded.get_layer("fc1").units == 8 and rounded.get_layer("fc2").units == 4


def _bn_net():
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(3, 3, padding="same", name="c2")(keras.layers.ReLU()(x))
    x = keras.layers.BatchNormalization(name="bn2")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling2D()(x)))


def test_recalibrate_batchnorm_sets_exact_statistics_layer_by_layer():
    model = _bn_net()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5, 5, 2)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    new = pruning.recalibrate_batchnorm(model, x, batch_size=16)
    for name in ("bn1", "bn2"):
        bn = new.get_layer(name)
        a = as_numpy(keras.Model(new.input, bn.input)(x)).reshape(-1, bn.input.shape[-1])
        np.testing.assert_allclose(new.get_layer(name).moving_mean, a.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(new.get_layer(name).moving_variance, a.var(0), rtol=1e-4, atol=1e-5)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(new.get_layer("c2").kernel, model.get_layer("c2").kernel)
    plain = pruning.recalibrate_batchnorm(_model(), X[:10])      # no BatchNormalization: a copy
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        pruning.recalibrate_batchnorm(model, x, batch_size=0)
    assert plain.count_params() == _model().count_params()
