"""Tests for compressnet_lite.surgery: keep_units and replace_layer."""

import keras
import numpy as np
from keras.ops import convert_to_numpy as as_numpy
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
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(expected), rtol=1e-5, atol=1e-5)
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
    np.testing.assert_allclose(as_numpy(merged(X_VEC)), as_numpy(model(X_VEC)), rtol=1e-5, atol=1e-6)
    # without folding, the same removal changes the outputs
    plain = surgery.keep_units(model, "fc1", keep)
    assert not np.allclose(as_numpy(plain(X_VEC)), as_numpy(model(X_VEC)), atol=1e-4)


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
    np.testing.assert_allclose(as_numpy(folded(X_IMG)), as_numpy(scaled(X_IMG)), rtol=1e-5, atol=1e-5)


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
    np.testing.assert_allclose(as_numpy(replaced(X_VEC)), as_numpy(model(X_VEC)), rtol=1e-5, atol=1e-5)
    assert model.get_layer("fc1").kernel.shape == (12, 10)  # untouched


def _clone(layer):
    return layer.__class__.from_config(layer.get_config())


def test_replace_last_layer_is_allowed():
    model = _randomize(models.mlp(12, (10,), 4))
    w, b = model.get_layer("out").get_weights()
    new = [keras.layers.Dense(4, use_bias=False, name="out_u"),
           keras.layers.Dense(4, activation="softmax", name="out_v")]
    replaced = surgery.replace_layer(model, "out", new, [[w], [np.eye(4, dtype="float32"), b]])
    np.testing.assert_allclose(as_numpy(replaced(X_VEC)), as_numpy(model(X_VEC)), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- error paths

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


def _softmax_hidden():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="softmax", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _lambda_between():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, name="fc1")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _grouped_conv():
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _nan():
    m = models.mlp(8, (4,), 2)
    k, b = m.get_layer("fc1").get_weights()
    k[0, 0] = np.nan
    m.get_layer("fc1").set_weights([k, b])
    return m


@pytest.mark.parametrize("build,layer,error,match", [
    pytest.param(_subclassed, "fc1", ValueError, "subclassed", id="subclassed"),
    pytest.param(lambda: models.mlp(8, (4,), 2), "out", ValueError, "'out'.*cannot be pruned.*softmax",
                 id="output-layer"),
    pytest.param(lambda: models.mlp(8, (4,), 2, logits=True), "out", ValueError, "model output 'out'",
                 id="output-logits"),
    pytest.param(lambda: models.mlp(8, (4,), 2), "nope", ValueError, "'nope' is not in model",
                 id="unknown-layer"),
    pytest.param(lambda: models.mlp(8, (4,), 2), 3, TypeError, "layer name", id="not-a-name"),
    pytest.param(lambda: _conv_net(False), "bn", ValueError, "BatchNormalization.*produces no channel group",
                 id="not-a-producer"),
    pytest.param(_lambda_between, "fc1", ValueError, "'double' \\(Lambda\\) is not understood", id="lambda"),
    pytest.param(_softmax_hidden, "fc1", ValueError, "softmax across channels", id="softmax-units"),
    pytest.param(_grouped_conv, "c1", ValueError, "grouped convolution", id="grouped-conv"),
    pytest.param(_nan, "fc1", ValueError, "NaN", id="nan-weights"),
])
def test_keep_units_refuses(build, layer, error, match):
    with pytest.raises(error, match=match):
        surgery.keep_units(build(), layer, [0])


def test_unbuilt_model_is_refused():
    model = keras.Sequential([keras.layers.Dense(4, name="fc1"), keras.layers.Dense(2, name="out")])
    for call in (lambda: surgery.keep_units(model, "fc1", [0]), lambda: surgery.rewrite(model),
                 lambda: surgery.dependency_groups(model)):
        with pytest.raises(ValueError, match="not built"):
            call()
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


def test_scaled_fold_through_batchnorm_is_refused():
    """BatchNormalization is affine per channel: only identical units (c = 1) merge exactly."""
    model = _randomize(_conv_net(False))
    fold = surgery.selection_fold(6, np.array([0, 1]))
    surgery.keep_units(model, "conv1", [0, 1], fold=fold)   # the selection itself is fine
    fold[2, 0] = 1.0
    surgery.keep_units(model, "conv1", [0, 1], fold=fold)   # c = 1: exact for identical units
    fold[2, 0] = 0.5
    with pytest.raises(ValueError, match="scaled fold.*'bn'"):
        surgery.keep_units(model, "conv1", [0, 1], fold=fold)


def test_identical_units_merge_exactly_through_batchnorm():
    model = _randomize(_conv_net(False))
    k, b = model.get_layer("conv1").get_weights()
    k[..., 3], b[3] = k[..., 1], b[1]
    model.get_layer("conv1").set_weights([k, b])
    bn = [w.copy() for w in model.get_layer("bn").get_weights()]
    for w in bn:
        w[3] = w[1]
    model.get_layer("bn").set_weights(bn)
    keep = np.array([0, 1, 2, 4, 5])
    fold = surgery.selection_fold(6, keep)
    fold[3, 1] = 1.0
    merged = surgery.keep_units(model, "conv1", keep, fold=fold)
    np.testing.assert_allclose(as_numpy(merged(X_IMG)), as_numpy(model(X_IMG)), rtol=1e-5, atol=1e-5)


def test_fold_through_layer_normalization_is_refused():
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, name="fc1")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    surgery.keep_units(model, "fc1", [0, 1])  # removal is allowed (not exact: LN statistics change)
    with pytest.raises(ValueError, match="cannot be merged exactly.*'ln' normalises across channels"):
        surgery.keep_units(model, "fc1", [0, 1], fold=surgery.selection_fold(6, np.array([0, 1])) + 0.0
                           + np.eye(6, 2, -2))


@pytest.mark.parametrize("new_layers,weights,error,match", [
    pytest.param("dense", [[]], TypeError, "non-empty list", id="not-a-list"),
    pytest.param([], [], TypeError, "non-empty list", id="empty"),
    pytest.param([object()], [[]], TypeError, r"new_layers\[0\]", id="not-a-layer"),
    pytest.param(lambda: [keras.layers.Dense(10, name="x")], [], ValueError, "one weight list", id="count"),
    pytest.param(lambda: [keras.layers.Dense(10, name="x")], [[np.ones((3, 10)), np.ones(10)]],
                 ValueError, r"'x/kernel'.*\(12, 10\).*\(3, 10\)", id="shape"),
    pytest.param(lambda: [keras.layers.Dense(10, name="x")], [[np.ones((12, 10))]],
                 ValueError, r"'x': 1 arrays given.*2 weights", id="too-few"),
    pytest.param(lambda: [keras.layers.Dense(10, name="x")], [{"kernel": np.ones((12, 10))}],
                 ValueError, r"'x' miss \['bias'\]", id="missing-path"),
    pytest.param(lambda: [keras.layers.Dense(10, name="fc2")], [[np.ones((12, 10)), np.ones(10)]],
                 ValueError, "already used", id="name-clash"),
    pytest.param(lambda: [keras.layers.Dense(7, name="x")], [[np.ones((12, 7)), np.ones(7)]],
                 ValueError, r"'fc2/kernel'.*\(7, 8\).*\(10, 8\)", id="misfit"),
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
    with pytest.raises(ValueError, match="2 tensor inputs.*single-input"):
        surgery.replace_layer(_residual(), "add", [keras.layers.Dense(8, name="x")],
                              [[np.ones((8, 8)), np.ones(8)]])


def test_result_saves_and_loads(tmp_path):
    model = _randomize(_conv_net(False))
    small = surgery.keep_units(model, "conv1", [0, 3])
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(as_numpy(loaded(X_IMG)), as_numpy(small(X_IMG)), rtol=1e-6, atol=1e-6)


def test_masked_layer_is_refused():
    from compressnet_lite import pruning
    masked = pruning.prune(models.mlp(12, (10, 8), 2), 0.5)
    with pytest.raises(ValueError, match="'fc1' holds extra variables.*cnl_mask.*strip"):
        surgery.keep_units(masked, "fc1", [0, 1])


# ------------------------------------------------------------------------- rewrite

def _residual():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8, name="fc1")(inputs)
    h2 = keras.layers.Dense(8, name="fc2")(h)
    x = keras.layers.Add(name="add")([h, h2])
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def _nested():
    inner = models.mlp(8, (4,), 3, name="inner")
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="relu", name="pre")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(x)), name="outer")


def _shared():
    inputs = keras.Input((8,))
    shared = keras.layers.Dense(6, activation="relu", name="shared")
    a = shared(keras.layers.Dense(5, name="a")(inputs))
    b = shared(keras.layers.Dense(5, name="b")(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Add(name="add")([a, b])))


def _self_composed():
    inputs = keras.Input((8,))
    shared = keras.layers.Dense(8, name="shared")
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(shared(shared(inputs))))


def _multi_io():
    a, b = keras.Input((4,), name="a"), keras.Input((6,), name="b")
    x = keras.layers.Concatenate(name="cat")([keras.layers.Dense(3, name="fa")(a),
                                              keras.layers.Dense(5, name="fb")(b)])
    h = keras.layers.Dense(7, activation="relu", name="h")(x)
    return keras.Model({"a": a, "b": b}, {"y": keras.layers.Dense(2, name="y")(h),
                                          "z": keras.layers.Dense(1, name="z")(h + 1.0)})


@pytest.mark.parametrize("build", [
    pytest.param(lambda: models.mlp(12, (10, 8), 4), id="functional"),
    pytest.param(_seq_dense, id="sequential"),
    pytest.param(lambda: _conv_net(False), id="conv-bn"),
    pytest.param(_nested, id="nested"),
    pytest.param(_shared, id="shared"),
    pytest.param(_multi_io, id="dict-io-with-ops"),
], )
def test_rewrite_copies_exactly_and_shares_nothing(build):
    model = _randomize(build())
    dict_input = isinstance(getattr(model, "_inputs_struct", None), dict)
    x = ({"a": X_VEC[:, :4], "b": X_VEC[:, 4:10]} if dict_input else
         X_IMG if len(model.inputs[0].shape) == 4 else X_VEC[:, :model.inputs[0].shape[1]])
    before = [w.copy() for w in model.get_weights()]
    new = surgery.rewrite(model)
    assert type(new) is type(model) and new is not model
    ref, out = model(x), new(x)
    for a, b in zip(keras.tree.flatten(ref), keras.tree.flatten(out)):
        np.testing.assert_array_equal(as_numpy(a), as_numpy(b))
    assert [v.path for v in new.weights] == [v.path for v in model.weights]
    for v in new.weights:  # a change to the copy never reaches the original
        v.assign(np.zeros(v.shape, v.dtype))
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_rewrite_keeps_shared_layers_shared():
    new = surgery.rewrite(_randomize(_shared()))
    shared = new.get_layer("shared")
    assert sum(1 for l in new.layers if l is shared) == 1 and len(shared._inbound_nodes) == 2


def test_rewrite_replaces_nested_layers_by_name():
    model = _randomize(_nested())
    seen = []

    def make(layer):
        seen.append(layer.name)
        if layer.name == "fc1":
            return keras.layers.Dense(4, activation="relu", name="fc1")
        return None
    new = surgery.rewrite(model, make)
    assert "fc1" in seen and "pre" in seen
    np.testing.assert_array_equal(as_numpy(new(X_VEC[:, :8])), as_numpy(model(X_VEC[:, :8])))


def test_rewrite_chain_and_drop():
    model = _randomize(_seq_dense())
    dropped = surgery.rewrite(model, lambda l: [] if l.name == "drop" else None)
    assert "drop" not in [l.name for l in dropped.layers]
    np.testing.assert_allclose(as_numpy(dropped(X_VEC)), as_numpy(model(X_VEC)), rtol=1e-6)
    w, b = model.get_layer("d2").get_weights()
    chain = surgery.rewrite(
        model, lambda l: [keras.layers.Dense(8, use_bias=False, name="d2_a"),
                          keras.layers.Dense(8, name="d2")]
        if l.name == "d2" else None,
        weights={"d2_a": {"kernel": w}, "d2": {"kernel": np.eye(8, dtype="float32"), "bias": b}})
    np.testing.assert_allclose(as_numpy(chain(X_VEC)), as_numpy(model(X_VEC)), rtol=1e-5, atol=1e-6)


def test_rewrite_new_variables_keep_their_initial_values():
    from compressnet_lite import pruning
    model = _randomize(models.mlp(12, (10,), 2))
    new = surgery.rewrite(model, lambda l: pruning.PrunableDense.from_config(l.get_config())
                          if l.name == "fc1" else None)
    np.testing.assert_array_equal(new.get_layer("fc1").cnl_mask, np.ones((12, 10)))
    np.testing.assert_array_equal(new.get_layer("fc1").kernel, model.get_layer("fc1").kernel)


class _Grows(keras.layers.Layer):
    """A layer whose copy from its config has one weight more than the original has (``v``).

    Every build with ``extra`` adds ``v`` while ``twins >= 0`` and spends one: ``twins = 1``
    lets the copy and one twin built after it have ``v``, ``twins = 0`` the copy only."""

    twins = 1

    def __init__(self, extra=False, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra
        self.scale_initializer = keras.initializers.Constant(3.0)

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer=self.scale_initializer, name="w")
        if self.extra and _Grows.twins >= 0:
            _Grows.twins -= 1
            self.v = self.add_weight(shape=(input_shape[-1],), initializer=self.scale_initializer, name="v")

    def call(self, x):
        return x * self.w

    def get_config(self):
        return {**super().get_config(), "extra": True}


def _every_layer(model):
    return [sub for layer in surgery.graph_layers(model) for sub in surgery._sublayers(layer)]


@pytest.mark.parametrize("transform,exact", [
    pytest.param(lambda m: surgery.rewrite(m), True, id="rewrite"),
    pytest.param(lambda m: surgery.keep_units(m, "embed", np.arange(8)), False, id="keep-units"),
])
def test_rebuilt_layers_get_their_own_initializers_back(transform, exact):
    """Rebuilt layers are built with NumPy zeros standing in for their initializers (their
    weights are copied in); the real ones are back on every layer and sub-layer after."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 6))
    x = keras.layers.Dense(16, kernel_initializer="he_normal", name="embed")(inputs)
    x = keras.layers.MultiHeadAttention(2, 8, kernel_initializer="lecun_uniform", name="mha")(x, x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    new = transform(model)
    assert not [(sub.name, k) for sub in _every_layer(new) for k, v in vars(sub).items()
                if isinstance(v, surgery._Deferred)]
    for layer in new.layers:
        old = model.get_layer(layer.name).get_config()
        mine = layer.get_config()
        assert {k: v for k, v in mine.items() if k.endswith("_initializer")} == \
            {k: v for k, v in old.items() if k.endswith("_initializer")}
    einsum = [sub for sub in _every_layer(new) if isinstance(sub, keras.layers.EinsumDense)]
    assert len(einsum) == 4 and all(isinstance(e.kernel_initializer, keras.initializers.LecunUniform)
                                    for e in einsum)
    if exact:  # the copied weights, not the zeros, are in the copy
        x = np.random.default_rng(1).normal(size=(2, 4, 6)).astype("float32")
        np.testing.assert_array_equal(as_numpy(new(x)), as_numpy(model(x)))


def test_a_weight_the_copy_adds_gets_its_real_initial_value():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, _Grows(name="grows")(keras.layers.Dense(5, name="fc")(inputs)))
    _randomize(model)
    _Grows.twins = 1  # the copy and the twin that gives the copy's new weight its value
    new = surgery.rewrite(model)
    np.testing.assert_array_equal(as_numpy(new.get_layer("grows").v), np.full(5, 3.0))
    np.testing.assert_array_equal(as_numpy(new.get_layer("grows").w), as_numpy(model.get_layer("grows").w))
    _Grows.twins = 0  # the twin lacks it: no value to give
    with pytest.raises(ValueError, match="'grows' has no value to copy, and a twin"):
        surgery.rewrite(model)


@pytest.mark.parametrize("make,weights,error,match", [
    pytest.param("fc1", None, TypeError, "make must be a callable", id="make-not-callable"),
    pytest.param(lambda l: "dense", None, TypeError, r"make\('input'\)|make\('fc1'\) must return",
                 id="bad-return"),
    pytest.param(lambda l: l if l.name == "fc1" else None, None, ValueError, "built layer", id="same-layer"),
    pytest.param(lambda l: [keras.layers.Dense(3)] if l.name == "fc1" else None, None, ValueError,
                 "'fc2/kernel'.*shape", id="misfit-weights"),
    pytest.param(None, {"fc1": {"kernal": np.ones((12, 10))}}, ValueError, r"'fc1' name \['kernal'\]",
                 id="unknown-path"),
    pytest.param(None, {"fc9": {"kernel": np.ones((12, 10))}}, ValueError, r"\['fc9'\].*not in the new model",
                 id="unknown-layer"),
    pytest.param(None, {"fc1": {"kernel": np.ones((3, 3))}}, ValueError, r"'fc1/kernel'.*\(12, 10\).*given",
                 id="given-shape"),
    pytest.param(None, [1, 2], TypeError, "weights must be a dict", id="weights-type"),
])
def test_rewrite_refuses(make, weights, error, match):
    with pytest.raises(error, match=match):
        surgery.rewrite(models.mlp(12, (10, 8), 2), make, weights=weights)


def test_rewrite_refuses_subclassed():
    with pytest.raises(ValueError, match="subclassed"):
        surgery.rewrite(_subclassed())


# ------------------------------------------------------------------------- dependency groups

def _groups(model):
    return {g.root: g for g in surgery.dependency_groups(model)}


def test_groups_of_a_chain():
    groups = surgery.dependency_groups(models.seed_mlp())
    assert [(g.root, g.units, g.prunable) for g in groups] == [
        ("input", 64, False), ("fc1", 64, True), ("fc2", 32, True), ("out", 10, False)]
    assert "model input 'input'" in groups[0].reason
    text = repr(groups)
    assert "fc1" in text and "prunable" in text and "softmax" in text
    assert "64 channels of 'fc1'; prunable" in repr(groups[1])
    assert [repr(m) for m in groups[1].members] == ["fc1.out (producer)", "fc2.in (consumer)"]


def test_residual_add_couples_both_branches():
    g = _groups(_residual())["fc1"]
    assert g.prunable and g.units == 8
    assert sorted(g.producers) == ["fc1", "fc2"] and sorted(g.consumers) == ["fc2", "out"]


def test_concatenate_maps_offsets_into_each_input():
    groups = _groups(_multi_io())
    fa, fb = groups["fa"], groups["fb"]
    assert (fa.units, fb.units) == (3, 5) and fa is not fb
    h_in = next(m for m in fb.members if m.layer.name == "h")
    np.testing.assert_array_equal(h_in.index.ravel(), np.arange(3, 8))   # fb's rows of h sit after fa's


def test_depthwise_multiplier_and_separable():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 1, name="c")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = keras.layers.SeparableConv2D(5, 3, depth_multiplier=3, padding="same", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    groups = _groups(model)
    c = groups["c"]
    assert c.units == 4   # one unit = a channel and its two depthwise outputs
    bias = next(m for m in c.members if m.space == "bias")
    np.testing.assert_array_equal(bias.index, np.arange(8).reshape(4, 2))
    sep_in = next(m for m in c.members if m.layer.name == "sep")
    assert sep_in.index.shape == (4, 2) and ("pointwise_kernel", 2, 3) in sep_in.slices
    assert groups["sep"].units == 5


def test_squeeze_excitation_broadcast_multiply():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c")(inputs)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = keras.layers.Conv2D(2, 1, activation="relu", name="se_reduce")(s)
    s = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    x = keras.layers.Multiply(name="excite")([x, s])
    x = keras.layers.Conv2D(4, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    g = _groups(model)["c"]
    assert sorted(g.producers) == ["c", "se_expand"] and sorted(g.consumers) == ["project", "se_reduce"]
    assert not g.scalable


def test_attention_heads_and_feed_forward_are_groups():
    model = _encoder()
    groups = _groups(model)
    heads = groups["mha0"]
    assert heads.units == 4 and heads.members[0].role == "heads" and heads.mergeable is False
    assert groups["ff0a"].units == 32 and groups["ff0a"].consumers == ["ff0b"]
    stream = groups["embed"]
    assert stream.prunable and "ln0a" in stream.layers and "normalises across channels" in stream.merge_reason


def test_group_normalization_removes_whole_groups():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(8, 3, name="c")(inputs)
    x = keras.layers.GroupNormalization(groups=4, name="gn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = _randomize(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
    g = _groups(model)["c"]
    assert g.units == 4   # a unit is one normalisation group of 2 channels
    small = surgery.keep_channels(model, {g: [0, 3]})
    assert small.get_layer("gn").groups == 2 and small.get_layer("c").filters == 4


def test_flatten_and_reshape_map_positions():
    inputs = keras.Input((3, 3, 2))
    x = keras.layers.Conv2D(4, 1, name="c")(inputs)
    x = keras.layers.Reshape((9, 4), name="rows")(x)
    x = keras.layers.Reshape((36,), name="flat")(x)
    model = _randomize(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
    g = _groups(model)["c"]
    out_rows = next(m for m in g.members if m.layer.name == "out")
    assert out_rows.index.shape == (4, 9) and out_rows.index[1, 1] == 5
    small = surgery.keep_channels(model, {g: [0, 2]})
    assert small.get_layer("flat").target_shape == (18,) and small.get_layer("rows").target_shape == (9, 2)


def test_unknown_layers_block_their_channels():
    groups = surgery.dependency_groups(_lambda_between())
    fc1 = next(g for g in groups if g.root == "fc1")
    assert not fc1.prunable and "'double' (Lambda) is not understood" in fc1.reason


def test_shared_layer_couples_its_call_sites():
    groups = _groups(_shared())
    rows = surgery.group_of(_shared(), "a")   # both branches feed the same kernel rows
    assert rows.prunable and sorted(rows.producers) == ["a", "b"] and rows.consumers == ["shared"]
    assert groups["shared"].units == 6 and groups["shared"].consumers == ["out"]
    model = _randomize(_shared())
    small = surgery.keep_channels(model, {"a": [0, 3]})
    assert small.get_layer("shared").kernel.shape == (2, 6) and small.get_layer("b").units == 2
    # a layer applied to its own output couples its input with the model input: not prunable
    g = _groups(_self_composed())["shared"]
    assert not g.prunable and "model input" in g.reason


def test_nested_models_are_analysed_through():
    groups = _groups(_nested())
    assert groups["pre"].consumers == ["fc1"]
    assert groups["fc1"].consumers == ["out"] and groups["fc1"].prunable
    small = surgery.keep_channels(_randomize(_nested()), {"pre": [0, 1, 2]})
    assert small.get_layer("pre").units == 3


def test_outputs_can_be_pruned_when_asked():
    model = models.mlp(8, (4,), 3, logits=True)
    assert not _groups(model)["out"].prunable
    groups = surgery.dependency_groups(model, prune_outputs=True)
    out = next(g for g in groups if g.root == "out")
    small = surgery.keep_channels(model, {out: [0, 2]})
    assert tuple(small.outputs[0].shape) == (None, 2)


def test_keep_channels_refuses():
    model = _randomize(_residual())
    groups = surgery.dependency_groups(model)
    other = surgery.dependency_groups(_residual())
    with pytest.raises(ValueError, match="belongs to another model"):
        surgery.keep_channels(model, {other[1]: [0]})
    with pytest.raises(ValueError, match="out of range"):
        surgery.keep_channels(model, {99: [0]})
    with pytest.raises(ValueError, match="cannot be pruned: it reaches model input"):
        surgery.keep_channels(model, {0: [0]})
    with pytest.raises(TypeError, match="keep must be a dict"):
        surgery.keep_channels(model, [0])
    with pytest.raises(TypeError, match="DependencyGroup, group index or producer"):
        surgery.keep_channels(model, {1.5: [0]})
    with pytest.raises(ValueError, match="fold or incoming weights but no entry in keep"):
        surgery.keep_channels(model, {groups[1]: [0]}, fold={groups[2]: np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"fold for group 1 must have shape \(units, kept\) = \(8, 1\)"):
        surgery.keep_channels(model, {groups[1]: [0]}, fold={groups[1]: np.ones((8, 2))})
    with pytest.raises(ValueError, match=r"incoming for group 1 must have shape \(kept, 18\)"):
        surgery.keep_channels(model, {groups[1]: [0]}, incoming={groups[1]: np.ones((1, 3))})


# ------------------------------------------------------------------------- exactness on graphs

def _encoder(T=6, F=5, d=16, heads=4, ff=32, classes=3):
    x = inp = keras.Input((T, F), name="tokens")
    x = keras.layers.Dense(d, name="embed")(x)
    a = keras.layers.MultiHeadAttention(heads, d // heads, name="mha0")(x, x)
    x = keras.layers.LayerNormalization(name="ln0a")(keras.layers.Add(name="res0a")([x, a]))
    h = keras.layers.Dense(ff, activation="relu", name="ff0a")(x)
    h = keras.layers.Dense(d, name="ff0b")(h)
    x = keras.layers.LayerNormalization(name="ln0b")(keras.layers.Add(name="res0b")([x, h]))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inp, keras.layers.Dense(classes, name="head")(x), name="encoder")


def _resnet_block():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    y = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b1")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", name="b2")(y)
    y = keras.layers.BatchNormalization(name="b2_bn")(y)
    x = keras.layers.ReLU(name="out_relu")(keras.layers.Add(name="add")([x, y]))
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _dense_concat():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c0")(inputs)
    y = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(x)
    x = keras.layers.Concatenate(name="cat1")([x, y])
    y = keras.layers.Conv2D(5, 1, activation="relu", name="c2")(x)
    x = keras.layers.Concatenate(name="cat2")([x, y])
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _mobile_block():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(6, 1, name="expand")(inputs)
    x = keras.layers.BatchNormalization(name="expand_bn")(x)
    x = keras.layers.ReLU(6.0, name="expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = keras.layers.Conv2D(3, 1, activation="relu", name="se_reduce")(s)
    s = keras.layers.Conv2D(12, 1, activation="sigmoid", name="se_expand")(s)
    x = keras.layers.Multiply(name="excite")([x, s])
    x = keras.layers.Conv2D(4, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _zero_outgoing(model, group, removed):
    """A copy of ``model`` where the removed units reach no consumer (their rows are zero)."""
    return _zero_outgoing_on(model, model, group, removed)


@pytest.mark.parametrize("build,root,x", [
    pytest.param(_resnet_block, "stem", X_IMG[:, :, :, :1].repeat(3, -1), id="residual"),
    pytest.param(_dense_concat, "c0", X_IMG[:, :, :, :1].repeat(3, -1), id="concat-c0"),
    pytest.param(_dense_concat, "c1", X_IMG[:, :, :, :1].repeat(3, -1), id="concat-c1"),
    pytest.param(_mobile_block, "expand", X_IMG[:, :, :, :1].repeat(3, -1), id="depthwise-se"),
    pytest.param(_mobile_block, "se_reduce", X_IMG[:, :, :, :1].repeat(3, -1), id="se-reduce"),
    pytest.param(_encoder, "ff0a", RNG.normal(size=(4, 6, 5)).astype("float32"), id="attention-ffn"),
])
def test_zero_contribution_channels_are_removed_exactly(build, root, x):
    model = _randomize(build())
    before = [w.copy() for w in model.get_weights()]
    groups = surgery.dependency_groups(model)
    group = next(g for g in groups if g.root == root)
    keep = np.arange(0, group.units, 2)
    removed = np.setdiff1d(np.arange(group.units), keep)
    small = surgery.keep_channels(model, {group: keep})
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(_zero_outgoing(model, group, removed)(x)),
                               rtol=1e-5, atol=1e-5)
    assert small.count_params() < model.count_params()
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_removing_attention_heads_is_exact_when_their_output_is_zero():
    model = _randomize(_encoder())
    group = _groups(model)["mha0"]
    x = RNG.normal(size=(4, 6, 5)).astype("float32")
    zeroed = surgery.rewrite(model)
    out_kernel = zeroed.get_layer("mha0")._output_dense.kernel
    w = np.array(out_kernel)
    w[[1, 3]] = 0.0
    out_kernel.assign(w)
    small = surgery.keep_channels(model, {group: [0, 2]})
    assert small.get_layer("mha0").num_heads == 2
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(zeroed(x)), rtol=1e-5, atol=1e-5)


def test_pruned_graph_round_trips_and_converts(tmp_path):
    from compressnet_lite import quantization
    model = _randomize(_mobile_block())
    groups = surgery.dependency_groups(model).prunable()
    small = surgery.keep_channels(model, {g: np.arange(0, g.units, 2) for g in groups})
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = X_IMG[:, :, :, :1].repeat(3, -1)
    np.testing.assert_allclose(as_numpy(loaded(x)), as_numpy(small(x)), rtol=1e-6, atol=1e-6)
    if keras.backend.backend() == "tensorflow":  # LiteRT converts TensorFlow graphs only
        runner = quantization.TFLiteRunner(quantization.to_tflite(small, x, int8=False))
        np.testing.assert_allclose(runner(x), as_numpy(small(x)), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- property test

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


_BLOCKS = st.tuples(st.sampled_from(["conv", "residual", "concat", "bn", "depthwise"]),
                   st.integers(0, 10), st.integers(1, 6))


def _build_random(stem, blocks):
    """A small graph of conv blocks joined by residual adds and concatenations."""
    inputs = keras.Input((5, 5, 2))
    tensors = [keras.layers.Conv2D(stem, 1, name="stem")(inputs)]
    for b, (kind, source, width) in enumerate(blocks):
        src = tensors[source % len(tensors)]
        c = src.shape[-1]
        if kind == "conv":
            y = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{b}")(src)
        elif kind == "residual":
            y = keras.layers.Add(name=f"add{b}")([src, keras.layers.Conv2D(c, 1, name=f"res{b}")(src)])
        elif kind == "concat":
            y = keras.layers.Concatenate(name=f"cat{b}")(
                [src, keras.layers.Conv2D(width, 1, name=f"cat_conv{b}")(src)])
        elif kind == "bn":
            y = keras.layers.BatchNormalization(name=f"bn{b}")(src)
        else:
            y = keras.layers.DepthwiseConv2D(3, padding="same", name=f"dw{b}")(src)
        tensors.append(y)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(tensors[-1])
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 6), st.lists(_BLOCKS, min_size=1, max_size=4), st.integers(0, 10_000))
def test_property_removing_unused_channels_changes_nothing(stem, blocks, seed):
    model = _randomize(_build_random(stem, blocks), seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 5, 5, 2)).astype("float32")
    groups = surgery.dependency_groups(model).prunable()
    keeps = {g: np.sort(rng.choice(g.units, size=max(1, g.units // 2), replace=False)) for g in groups}
    reference = model
    for g, keep in keeps.items():   # zero every removed unit's outgoing rows
        reference = _zero_outgoing_on(reference, model, g, np.setdiff1d(np.arange(g.units), keep))
    small = surgery.keep_channels(model, keeps) if keeps else surgery.rewrite(model)
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(reference(x)), rtol=1e-4, atol=1e-4)
    if any(g.units > 1 for g in keeps):
        assert small.count_params() < model.count_params()


def _zero_outgoing_on(current, original, group, removed):
    """Like _zero_outgoing, on a copy of ``current`` whose layers are named as ``original``'s."""
    zeroed = surgery.rewrite(current)
    for member in group.members:
        if member.role != "consumer":
            continue
        variables = surgery._relative_variables(zeroed.get_layer(member.layer.name))
        for path, axis, block in member.slices:
            w = np.moveaxis(np.array(variables[path]), axis, 0)
            w[surgery._rows(member.index[removed], block)] = 0.0
            variables[path].assign(np.moveaxis(w, 0, axis))
    return zeroed


def test_plot_group_draws_the_members():
    import matplotlib
    matplotlib.use("Agg")
    model = _resnet_block()
    ax = surgery.plot_group(model, "stem")
    names = {t.get_text(): t for t in ax.texts}
    assert {"stem", "b2", "head", "add"} <= set(names)
    assert names["stem"].get_bbox_patch().get_facecolor()[:3] == matplotlib.colors.to_rgb("#d62728")
    assert names["head"].get_bbox_patch().get_facecolor()[:3] == matplotlib.colors.to_rgb("#1f77b4")
    whole = surgery.plot_group(model, "stem", whole=True)
    assert len(whole.texts) > len(ax.texts) - 1
    with pytest.raises(ValueError, match="at most max_layers=3"):
        surgery.plot_group(model, "stem", max_layers=3)
    matplotlib.pyplot.close("all")
