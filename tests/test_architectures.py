"""Structured compression of real architectures (keras.applications, weights=None: offline).

Each model is built once per module at a small input size; every transform is checked to
give a smaller model that runs, saves and loads (safe_mode=True), and to leave the
original untouched.
"""

import keras
import numpy as np
import pytest

from compressnet_lite import lowrank, merging, metrics, pruning, surgery

APPS = {
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                                          weights=None, classes=10),
    "resnet50": lambda: keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10),
    "densenet121": lambda: keras.applications.DenseNet121(input_shape=(32, 32, 3), weights=None, classes=10),
    "efficientnet_b0": lambda: keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None,
                                                                 classes=10),
}


def encoder(tokens=8, features=6, width=32, heads=4, hidden=64, blocks=2, classes=5):
    """A small transformer encoder from Keras layers: attention, residual adds, layer norms."""
    x = inputs = keras.Input((tokens, features), name="tokens")
    x = keras.layers.Dense(width, name="embed")(x)
    for b in range(blocks):
        a = keras.layers.MultiHeadAttention(heads, width // heads, name=f"mha{b}")(x, x)
        x = keras.layers.LayerNormalization(name=f"ln{b}a")(keras.layers.Add(name=f"res{b}a")([x, a]))
        h = keras.layers.Dense(hidden, activation="gelu", name=f"ff{b}a")(x)
        h = keras.layers.Dense(width, name=f"ff{b}b")(h)
        x = keras.layers.LayerNormalization(name=f"ln{b}b")(keras.layers.Add(name=f"res{b}b")([x, h]))
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(x), name="encoder")


def _input(model, n=2):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(0).normal(size=(n,) + shape).astype("float32")


def _forward(model, x):
    """``model``'s outputs on ``x`` as NumPy. On JAX through ``predict``, one compiled call:
    an eager call compiles every op of a new shape on its own (a DenseNet's forward pass
    then takes 25 s instead of 5 s); elsewhere eagerly, which skips tracing."""
    if keras.backend.backend() == "jax":
        return model.predict(x, verbose=0)
    return keras.ops.convert_to_numpy(model(x))


def _check_smaller_and_working(model, small, tmp_path, save=True):
    x = _input(model)
    out = _forward(small, x)
    assert out.shape == (len(x),) + tuple(model.outputs[0].shape[1:]) and np.all(np.isfinite(out))
    assert metrics.count_params(small) < metrics.count_params(model)
    assert metrics.flops(small) < metrics.flops(model)
    if save:
        path = tmp_path / f"{small.name}.keras"
        small.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_allclose(_forward(loaded, x), out, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def built():
    """``built(name)``: the architecture, seeded, built once for the module (a real graph
    costs seconds to build, JAX compiling each initializer); every test checks that the
    transforms leave it untouched, so tests can share it."""
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(0)
            cache[name] = APPS[name]()
        return cache[name]
    return get


@pytest.fixture(scope="module", params=list(APPS), ids=list(APPS))
def app(request, built):
    return built(request.param)


def test_half_of_the_channels_of_real_architectures(app, tmp_path):
    before = [w.copy() for w in app.get_weights()[:6]]
    groups = surgery.dependency_groups(app)
    prunable = groups.prunable()
    assert len(prunable) >= len(groups) - 2      # only the input and the classifier's outputs stay
    small = pruning.prune_neurons(app, 0.5)
    _check_smaller_and_working(app, small, tmp_path)
    # channels halve on both sides of most kernels: MACs drop far more than by half
    assert metrics.flops(small) < 0.5 * metrics.flops(app)
    for a, b in zip(before, app.get_weights()[:6]):
        np.testing.assert_array_equal(a, b)


def test_the_mobilenet_v2_calls_of_the_issue(built, tmp_path):
    """prune_neurons, merge_neurons on the first conv, factorize the classifier head."""
    m = built("mobilenet_v2")
    before = [w.copy() for w in m.get_weights()]
    first_conv = next(l.name for l in m.layers if isinstance(l, keras.layers.Conv2D))
    merged = merging.merge_neurons(m, first_conv, 0.25)
    assert merged.get_layer(first_conv).filters == m.get_layer(first_conv).filters - round(
        0.25 * m.get_layer(first_conv).filters)
    _check_smaller_and_working(m, merged, tmp_path)
    head = lowrank.factorize(m, "predictions", rank=4)
    assert head.get_layer("predictions_u").units == 4
    _check_smaller_and_working(m, head, tmp_path, save=False)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_transformer_encoder_heads_and_units(tmp_path):
    keras.utils.set_random_seed(0)
    model = encoder()
    small = pruning.prune_neurons(model, 0.5)
    assert small.get_layer("mha0").num_heads == 2 and small.get_layer("ff1a").units == 32
    assert small.get_layer("embed").units == 16
    _check_smaller_and_working(model, small, tmp_path)
    heads_only = pruning.prune_neurons(model, 0.5, layers=["mha0", "mha1"])
    assert heads_only.get_layer("embed").units == 32 and heads_only.get_layer("mha1").num_heads == 2


def test_global_scope_and_round_to_on_a_real_graph(built):
    m = built("mobilenet_v2")
    before = [w.copy() for w in m.get_weights()]
    small = pruning.prune_neurons(m, 0.3, scope="global", normalize="lamp", round_to=8)
    counts = [l.filters for l in small.layers if isinstance(l, keras.layers.Conv2D)]
    originals = [l.filters for l in m.layers if isinstance(l, keras.layers.Conv2D)]
    assert all(c % 8 == 0 or c == o for c, o in zip(counts, originals))
    assert metrics.count_params(small) < metrics.count_params(m)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
