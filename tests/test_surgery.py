"""Tests for compressnet_lite.surgery: keep_units and replace_layer."""

import keras
import numpy as np
import pytest

from compressnet_lite import models, surgery

RNG = np.random.default_rng(0)


def _randomize(model, seed=0):
    """Give every weight (incl. BatchNorm statistics) non-trivial random values."""
    rng = np.random.default_rng(seed)
    new = []
    for v in model.weights:
        shape = tuple(v.shape)
        if "variance" in v.path:
            new.append(rng.uniform(0.5, 2.0, shape).astype("float32"))
        else:
            new.append(rng.normal(0, 0.5, shape).astype("float32"))
    model.set_weights(new)
    return model


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _masked(model, nxt, removed, positions=1, channels=None):
    """The original with the next layer's input rows of the removed units set to zero."""
    masked = _copy(model)
    layer = masked.get_layer(nxt)
    kernel, *rest = layer.get_weights()
    if kernel.ndim == 2:
        channels = kernel.shape[0] // positions if channels is None else channels
        for p in range(positions):
            kernel[p * channels + np.asarray(removed)] = 0.0
    else:
        kernel[:, :, removed, :] = 0.0
    layer.set_weights([kernel, *rest])
    return masked


def _seq_dense():
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(10, activation="relu", name="d1"),
        keras.layers.Dropout(0.3, name="drop"),
        keras.layers.Dense(8, name="d2"),
        keras.layers.Activation("tanh", name="act"),
        keras.layers.Dense(4, activation="softmax", name="out"),
    ], name="seq_dense")


def _conv_net(sequential, pool="flatten"):
    head = ([keras.layers.MaxPooling2D(2, name="pool"), keras.layers.Flatten(name="flat")]
            if pool == "flatten" else [keras.layers.GlobalAveragePooling2D(name="gap")])
    layers = [
        keras.layers.Conv2D(6, 3, padding="same", name="conv1"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"),
        *head,
        keras.layers.Dense(5, activation="relu", name="fc"),
        keras.layers.Dense(3, name="out"),
    ]
    if sequential:
        return keras.Sequential([keras.Input((6, 6, 2)), *layers], name="seq_conv")
    x = inputs = keras.Input((6, 6, 2), name="image")
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="func_conv")


def _conv_conv():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x), name="conv_conv")


X_VEC = RNG.normal(size=(16, 12)).astype("float32")
X_IMG = RNG.normal(size=(16, 6, 6, 2)).astype("float32")


@pytest.mark.parametrize("build,layer,nxt,keep,x,positions", [
    pytest.param(lambda: models.mlp(12, (10, 8), 4), "fc1", "fc2", [0, 3, 4, 9], X_VEC, 1,
                 id="functional-fc1"),
    pytest.param(lambda: models.mlp(12, (10, 8), 4), "fc2", "out", [1, 2, 7], X_VEC, 1, id="functional-fc2"),
    pytest.param(_seq_dense, "d1", "d2", [2, 5, 6, 7, 8], X_VEC, 1, id="sequential-dropout"),
    pytest.param(_seq_dense, "d2", "out", [0, 7], X_VEC, 1, id="sequential-activation"),
    pytest.param(lambda: _conv_net(False), "conv1", "fc", [0, 2, 5], X_IMG, 9,
                 id="functional-conv-bn-pool-flatten"),
    pytest.param(lambda: _conv_net(True), "conv1", "fc", [1, 3, 4, 5], X_IMG, 9,
                 id="sequential-conv-bn-pool-flatten"),
    pytest.param(lambda: _conv_net(False, "gap"), "conv1", "fc", [0, 1], X_IMG, 1, id="conv-bn-gap-dense"),
    pytest.param(lambda: _conv_net(True), "fc", "out", [0, 4], X_IMG, 1, id="sequential-dense-after-conv"),
    pytest.param(_conv_conv, "c1", "c2", [0, 2, 3], X_IMG, 1, id="conv-conv"),
])
def test_keep_units_equals_masked_original(build, layer, nxt, keep, x, positions):
    model = _randomize(build())
    before = [w.copy() for w in model.get_weights()]
    units = model.get_layer(layer).kernel.shape[-1]
    removed = sorted(set(range(units)) - set(keep))
    small = surgery.keep_units(model, layer, np.array(keep))

    assert type(small) is type(model)
    assert [l.name for l in small.layers] == [l.name for l in model.layers]
    assert small.get_layer(layer).kernel.shape[-1] == len(keep)
    assert small.count_params() < model.count_params()
    expected = _masked(model, nxt, removed, positions, channels=units)(x)
    np.testing.assert_allclose(small(x), expected, rtol=1e-5, atol=1e-5)
    # the caller's model is untouched
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer(layer).kernel.shape[-1] == units
    # layers other than the pruned one, the carried ones and the next keep their weights
    changed = {layer, nxt, "bn"}
    for old in model.layers:
        if old.name not in changed:
            for a, b in zip(old.get_weights(), small.get_layer(old.name).get_weights()):
                np.testing.assert_array_equal(a, b)


def test_keep_units_accepts_a_layer_instance_and_list():
    model = _randomize(models.mlp(12, (10, 8), 4))
    small = surgery.keep_units(model, model.get_layer("fc1"), [0, 1, 2])
    assert small.get_layer("fc1").units == 3 and small.get_layer("fc2").kernel.shape == (3, 8)


def test_keep_units_keeps_bn_statistics_of_kept_channels():
    model = _randomize(_conv_net(False))
    small = surgery.keep_units(model, "conv1", [1, 4])
    for a, b in zip(model.get_layer("bn").get_weights(), small.get_layer("bn").get_weights()):
        np.testing.assert_array_equal(a[[1, 4]], b)


def test_fold_reproduces_merged_outputs():
    """Units 1 and 4 of fc1 are copies of units 0 and 2: folding them in is exact."""
    model = _randomize(models.mlp(12, (6, 5), 3))
    k, b = model.get_layer("fc1").get_weights()
    k[:, 1], b[1] = k[:, 0], b[0]
    k[:, 4], b[4] = k[:, 2], b[2]
    model.get_layer("fc1").set_weights([k, b])
    keep = np.array([0, 2, 3, 5])
    fold = surgery.selection_fold(6, keep)
    fold[1, 0] = 1.0  # unit 1 -> kept unit 0 (keep[0])
    fold[4, 1] = 1.0  # unit 4 -> kept unit 2 (keep[1])
    merged = surgery.keep_units(model, "fc1", keep, fold=fold)
    np.testing.assert_allclose(merged(X_VEC), model(X_VEC), rtol=1e-5, atol=1e-6)
    # without folding, the same removal changes the outputs
    plain = surgery.keep_units(model, "fc1", keep)
    assert not np.allclose(plain(X_VEC), model(X_VEC), atol=1e-4)


def test_fold_through_flatten_is_applied_at_every_position():
    keep = np.array([0, 1, 2, 3, 4])
    fold = surgery.selection_fold(6, keep) * 2.0
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    m = _randomize(keras.Model(inputs, keras.layers.Dense(3, name="out")(x)))
    scaled = _copy(m)
    k, b = scaled.get_layer("out").get_weights()
    k = k.reshape(36, 6, 3)
    k[:, 5, :] = 0.0
    k *= 2.0
    scaled.get_layer("out").set_weights([k.reshape(216, 3), b])
    folded = surgery.keep_units(m, "c", keep, fold=fold)
    np.testing.assert_allclose(folded(X_IMG), scaled(X_IMG), rtol=1e-5, atol=1e-5)


def test_fold_math_matches_selection():
    kernel = RNG.normal(size=(4 * 3, 2))
    keep = np.array([0, 2])
    out = surgery.fold_inputs(kernel, surgery.selection_fold(3, keep), positions=4)
    np.testing.assert_array_equal(out, kernel.reshape(4, 3, 2)[:, keep].reshape(8, 2))


@pytest.mark.parametrize("sequential", [False, True], ids=["functional", "sequential"])
def test_replace_layer_exact_low_rank(sequential):
    base = models.mlp(12, (10, 8), 4)
    if sequential:
        base = keras.Sequential([keras.Input((12,)), *[_clone(l) for l in base.layers[1:]]], name="seq")
    model = _randomize(base)
    w, b = model.get_layer("fc1").get_weights()
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    new_layers = [keras.layers.Dense(10, use_bias=False, name="fc1_u"),
                  keras.layers.Dense(10, activation="relu", name="fc1_v")]
    replaced = surgery.replace_layer(model, "fc1", new_layers, [[u * s], [vt, b]])
    names = [l.name for l in replaced.layers if not isinstance(l, keras.layers.InputLayer)]
    assert names == ["fc1_u", "fc1_v", "fc2", "out"]
    assert type(replaced) is type(model)
    np.testing.assert_allclose(replaced(X_VEC), model(X_VEC), rtol=1e-5, atol=1e-5)
    assert model.get_layer("fc1").kernel.shape == (12, 10)  # untouched


def _clone(layer):
    return layer.__class__.from_config(layer.get_config())


def test_replace_last_layer_is_allowed():
    model = _randomize(models.mlp(12, (10,), 4))
    w, b = model.get_layer("out").get_weights()
    new = [keras.layers.Dense(4, use_bias=False, name="out_u"),
           keras.layers.Dense(4, activation="softmax", name="out_v")]
    replaced = surgery.replace_layer(model, "out", new, [[w], [np.eye(4, dtype="float32"), b]])
    np.testing.assert_allclose(replaced(X_VEC), model(X_VEC), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- error paths

def _residual():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8, name="fc1")(inputs)
    h2 = keras.layers.Dense(8, name="fc2")(h)
    x = keras.layers.Add(name="add")([h, h2])
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _concat():
    inputs = keras.Input((8,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _shared():
    inputs = keras.Input((8,))
    shared = keras.layers.Dense(8, name="shared")
    x = shared(shared(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _multi_input():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    x = keras.layers.Dense(3, name="fc")(a)
    return keras.Model([a, b], [x, b])


def _multi_output():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="fc")(inputs)
    return keras.Model(inputs, [keras.layers.Dense(2, name="o1")(x), keras.layers.Dense(2, name="o2")(x)])


def _nested():
    inner = models.mlp(8, (4,), 3)
    inputs = keras.Input((8,))
    x = inner(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc1 = keras.layers.Dense(4, name="fc1")
        self.out = keras.layers.Dense(2, name="out")

    def call(self, x):
        return self.out(self.fc1(x))


def _subclassed():
    m = _Subclassed()
    m(np.zeros((1, 8), "float32"))
    return m


def _reshape_between():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, name="fc1")(inputs)
    x = keras.layers.Reshape((2, 4), name="reshape")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _softmax_hidden():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="softmax", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _nan():
    m = models.mlp(8, (4,), 2)
    k, b = m.get_layer("fc1").get_weights()
    k[0, 0] = np.nan
    m.get_layer("fc1").set_weights([k, b])
    return m


@pytest.mark.parametrize("build,layer,match", [
    pytest.param(_residual, "fc1", "'add'.*residual Add", id="residual-add"),
    pytest.param(_concat, "a", "'a'|'b'|'cat'", id="concatenate"),
    pytest.param(_shared, "shared", "'shared' is shared", id="shared-layer"),
    pytest.param(_multi_input, "fc", "2 inputs", id="multi-input"),
    pytest.param(_multi_output, "fc", "2 outputs", id="multi-output"),
    pytest.param(_nested, "out", "nested model", id="nested-model"),
    pytest.param(_subclassed, "fc1", "subclassed", id="subclassed"),
    pytest.param(lambda: models.mlp(8, (4,), 2), "out", "last weighted layer", id="output-layer"),
    pytest.param(lambda: models.mlp(8, (4,), 2), "nope", "'nope' is not in model", id="unknown-layer"),
    pytest.param(lambda: _conv_net(False), "bn", "BatchNormalization; keep_units shrinks", id="not-weighted"),
    pytest.param(_reshape_between, "fc1", "'reshape'", id="unsupported-between"),
    pytest.param(_softmax_hidden, "fc1", "softmax", id="softmax-units"),
    pytest.param(_nan, "fc1", "NaN", id="nan-weights"),
])
def test_keep_units_refuses(build, layer, match):
    with pytest.raises(ValueError, match=match):
        surgery.keep_units(build(), layer, [0])


def test_unbuilt_model_is_refused():
    model = keras.Sequential([keras.layers.Dense(4, name="fc1"), keras.layers.Dense(2, name="out")])
    with pytest.raises(ValueError, match="not built"):
        surgery.keep_units(model, "fc1", [0])
    with pytest.raises(TypeError, match="keras.Model"):
        surgery.keep_units("model", "fc1", [0])


@pytest.mark.parametrize("keep,error,match", [
    pytest.param([2, 1], ValueError, "sorted and unique", id="unsorted"),
    pytest.param([1, 1], ValueError, "sorted and unique", id="duplicate"),
    pytest.param([0, 10], ValueError, r"\[0, 10\)", id="out-of-range"),
    pytest.param([-1], ValueError, r"\[0, 10\)", id="negative"),
    pytest.param([], ValueError, "must not be empty", id="empty"),
    pytest.param([0.0, 1.0], TypeError, "integer", id="float"),
    pytest.param([[0, 1]], ValueError, "dimensions", id="2d"),
])
def test_bad_keep(keep, error, match):
    with pytest.raises(error, match=match):
        surgery.keep_units(models.mlp(12, (10,), 2), "fc1", np.array(keep) if keep else keep)


@pytest.mark.parametrize("keep,error,match", [
    pytest.param([-1], ValueError, r"\[0, 10\)", id="negative"),
    pytest.param([10], ValueError, r"\[0, 10\)", id="out-of-range"),
    pytest.param([3, 1], ValueError, "sorted and unique", id="unsorted"),
    pytest.param([0.0], TypeError, "integer", id="float"),
])
def test_array_math_refuses_bad_keep(keep, error, match):
    """A negative index silently selected the last unit (NumPy wrap-around)."""
    with pytest.raises(error, match=match):
        surgery.selection_fold(10, np.array(keep))
    with pytest.raises(error, match=match):
        surgery.slice_outputs([np.ones((4, 10)), np.ones(10)], np.array(keep))
    with pytest.raises(ValueError, match="units must be >= 1"):
        surgery.selection_fold(0, np.array([0]))


def test_bad_fold():
    model = models.mlp(12, (10, 8), 2)
    with pytest.raises(ValueError, match=r"fold must have shape.*\(10, 2\)"):
        surgery.keep_units(model, "fc1", [0, 1], fold=np.ones((10, 3)))
    with pytest.raises(ValueError, match="NaN"):
        surgery.keep_units(model, "fc1", [0, 1], fold=np.full((10, 2), np.nan))


def test_fold_through_batchnorm_is_refused():
    model = _conv_net(False)
    fold = surgery.selection_fold(6, np.array([0, 1]))
    surgery.keep_units(model, "conv1", [0, 1], fold=fold)  # the selection itself is fine
    fold[2, 0] = 1.0
    with pytest.raises(ValueError, match="'bn'.*not exact"):
        surgery.keep_units(model, "conv1", [0, 1], fold=fold)


@pytest.mark.parametrize("new_layers,weights,error,match", [
    pytest.param("dense", [[]], TypeError, "non-empty list", id="not-a-list"),
    pytest.param([], [], TypeError, "non-empty list", id="empty"),
    pytest.param([object()], [[]], TypeError, r"new_layers\[0\]", id="not-a-layer"),
    pytest.param(lambda: [keras.layers.Dense(10, name="x")], [], ValueError, "one weight list", id="count"),
    pytest.param(lambda: [keras.layers.Dense(10, name="x")], [[np.ones((3, 10)), np.ones(10)]],
                 ValueError, r"'x' have shapes", id="shape"),
    pytest.param(lambda: [keras.layers.Dense(10, name="fc2")], [[np.ones((12, 10)), np.ones(10)]],
                 ValueError, "already used", id="name-clash"),
    pytest.param(lambda: [keras.layers.Dense(7, name="x")], [[np.ones((12, 7)), np.ones(7)]],
                 ValueError, "'fc2' have shapes.*new input", id="misfit"),
    pytest.param(lambda: [_built()], [[np.ones((12, 10)), np.ones(10)]], ValueError, "already built",
                 id="built"),
])
def test_replace_layer_refuses(new_layers, weights, error, match):
    new_layers = new_layers() if callable(new_layers) else new_layers
    with pytest.raises(error, match=match):
        surgery.replace_layer(models.mlp(12, (10, 8), 2), "fc1", new_layers, weights)


def _built():
    layer = keras.layers.Dense(10, name="x")
    layer.build((None, 12))
    return layer


def test_replace_layer_output_shape_change_is_refused():
    model = models.mlp(12, (10,), 2)
    with pytest.raises(ValueError, match="output shape"):
        surgery.replace_layer(model, "out", [keras.layers.Dense(3, name="o")],
                              [[np.ones((10, 3)), np.ones(3)]])
    with pytest.raises(ValueError, match="residual"):
        surgery.replace_layer(_residual(), "fc1", [keras.layers.Dense(8, name="x")],
                              [[np.ones((8, 8)), np.ones(8)]])


def test_result_saves_and_loads(tmp_path):
    model = _randomize(_conv_net(False))
    small = surgery.keep_units(model, "conv1", [0, 3])
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(X_IMG), small(X_IMG), rtol=1e-6, atol=1e-6)


def test_masked_layer_is_refused():
    from compressnet_lite import pruning
    masked = pruning.prune(models.mlp(12, (10, 8), 2), 0.5)
    with pytest.raises(ValueError, match="'fc1'.*strip"):
        surgery.keep_units(masked, "fc1", [0, 1])
