import keras
import numpy as np
from keras.ops import convert_to_numpy as as_numpy
import pytest

import compressnet_lite as cnl
from compressnet_lite import merging


def _relu_layer(x, w, b):
    return np.maximum(x @ w + b, 0.0)


def _with_copies(model, layer, copies):
    """A copy of ``model`` where unit j of ``layer`` is ``c`` times unit i, for (j, i, c) in copies."""
    copy = cnl.models.clone(model)
    kernel, bias = copy.get_layer(layer).get_weights()
    for j, i, c in copies:
        kernel[..., j], bias[j] = c * kernel[..., i], c * bias[i]
    copy.get_layer(layer).set_weights([kernel, bias])
    return copy


# ----------------------------------------------------------------------------- array math

@pytest.mark.parametrize("scaled, c", [(False, 1.0), (True, 1.0), (True, 3.5), (True, 0.2)],
                         ids=["identical", "identical-scaled", "scale-3.5", "scale-0.2"])
def test_merge_plan_of_a_copy_is_exact(scaled, c):
    rng = np.random.default_rng(0)
    w, b, a = rng.normal(size=(6, 5)), rng.normal(size=5), rng.normal(size=(5, 4))
    w[:, 3], b[3] = c * w[:, 1], c * b[1]
    plan = merging.merge_plan(w, b, a, ratio=0.2, scaled=scaled)
    assert sorted([plan.removed[0], plan.into[0]]) == [1, 3]
    assert plan.saliency[0] == pytest.approx(0.0, abs=1e-12)
    x = rng.normal(size=(50, 6))
    before = _relu_layer(x, w, b) @ a
    after = _relu_layer(x, plan.w_in, plan.b_in) @ (plan.fold.T @ a)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert plan.keep.tolist() == [u for u in range(5) if u != plan.removed[0]]


def test_merge_plan_numeric_example():
    w = np.array([[1.0, 2.0, 1.0], [0.5, 1.0, -1.0]])  # unit 0 = 0.5 x unit 1
    plan = merging.merge_plan(w, np.zeros(3), np.ones((3, 2)), ratio=0.34)
    assert (plan.removed.tolist(), plan.into.tolist()) == ([0], [1])
    assert plan.scale[0] == pytest.approx(0.5)
    np.testing.assert_allclose(plan.fold, [[0.5, 0.0], [1.0, 0.0], [0.0, 1.0]])


def test_negative_scale_is_never_merged():
    w = np.array([[1.0, -1.0], [2.0, -2.0]])  # unit 1 = -1 x unit 0: relu does not commute
    plan = merging.merge_plan(w, np.zeros(2), np.ones((2, 1)), threshold=1e9)
    assert plan.removed.size == 0 and plan.keep.tolist() == [0, 1]


def test_plan_orders_by_saliency_smallest_first():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(8, 1))
    noise = [0.3, 0.01, 0.1]  # units 1, 2, 3 are noisy copies of unit 0
    w = np.concatenate([base] + [base + s * rng.normal(size=(8, 1)) for s in noise]
                       + [rng.normal(size=(8, 4)) * 5], axis=1)
    plan = merging.merge_plan(w, np.zeros(8), np.ones((8, 3)), ratio=3 / 8, scaled=False)
    assert plan.removed.size == 3
    assert np.all(np.diff(plan.saliency) >= 0)
    pairs = [tuple(sorted(p)) for p in zip(plan.removed.tolist(), plan.into.tolist())]
    assert pairs[0] == (0, 2)  # the closest copy goes first


def test_saliency_formula_for_one_pair():
    w = np.array([[1.0, 1.5], [2.0, 2.0]])
    a = np.array([[1.0, 3.0], [2.0, 4.0]])
    plan = merging.merge_plan(w, np.array([0.0, 0.5]), a, ratio=0.5, scaled=False)
    j = plan.removed[0]
    expected = np.mean(a[j] ** 2) * (0.5 ** 2 + 0.0 ** 2 + 0.5 ** 2)
    assert plan.saliency[0] == pytest.approx(expected)


def test_threshold_stops_at_the_first_larger_saliency():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 6))
    w[:, 4] = w[:, 0]
    w[:, 5] = w[:, 1] + 0.01
    plan = merging.merge_plan(w, np.zeros(6), np.ones((6, 2)), threshold=1e-2, scaled=False)
    assert plan.removed.size == 2 and np.all(plan.saliency <= 1e-2)


def test_chained_merges_compose_their_scales():
    w = np.array([[1.0, 2.0, 4.0]])  # 1 = 2 x 0, 2 = 2 x 1
    a = np.array([[1.0], [10.0], [100.0]])
    plan = merging.merge_plan(w, np.zeros(3), a, ratio=0.67)
    assert plan.keep.size == 1
    x = np.linspace(-2, 2, 9)[:, None]
    np.testing.assert_allclose(_relu_layer(x, plan.w_in, plan.b_in) @ (plan.fold.T @ a),
                               _relu_layer(x, w, np.zeros(3)) @ a, atol=1e-9)


def test_cluster_plan_merges_to_centroids_and_sums_outgoing():
    w = np.array([[1.0, 1.2, -3.0, -3.2, 5.0]])
    a = np.arange(10.0).reshape(5, 2)
    plan = merging.cluster_plan(w, np.zeros(5), a, ratio=0.4)
    assert plan.keep.tolist() == [0, 2, 4]
    np.testing.assert_allclose(plan.w_in, [[1.1, -3.1, 5.0]])
    np.testing.assert_allclose(plan.fold.T @ a, [a[0] + a[1], a[2] + a[3], a[4]])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(), ValueError, "exactly one"),
    (dict(ratio=0.5, threshold=1.0), ValueError, "exactly one"),
    (dict(ratio=1.0), ValueError, "ratio"),
    (dict(ratio=-0.1), ValueError, "ratio"),
    (dict(ratio="half"), TypeError, "ratio"),
    (dict(threshold=-1.0), ValueError, "threshold"),
    (dict(threshold="x"), TypeError, "threshold"),
], ids=["neither", "both", "ratio=1", "ratio<0", "ratio-str", "threshold<0", "threshold-str"])
def test_merge_plan_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        merging.merge_plan(np.ones((3, 4)), np.zeros(4), np.ones((4, 2)), **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed="a"), TypeError, "seed must be an integer"),
    (dict(max_iter=0), ValueError, "max_iter must be >= 1"),
    (dict(ratio=1.0), ValueError, "ratio"),
], ids=["seed<0", "seed-str", "max_iter=0", "ratio=1"])
def test_cluster_plan_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        merging.cluster_plan(np.ones((3, 4)), np.zeros(4), np.ones((4, 2)), **{"ratio": 0.5, **kwargs})


@pytest.mark.parametrize("w_in, b_in, w_out, match", [
    (np.ones((3, 4)), np.zeros(3), np.ones((4, 2)), "b_in"),
    (np.ones((3, 4)), np.zeros(4), np.ones((5, 2)), "w_out"),
    (np.ones(4), np.zeros(4), np.ones((4, 2)), "w_in"),
    (np.full((3, 4), np.nan), np.zeros(4), np.ones((4, 2)), "w_in"),
], ids=["bias-shape", "w_out-rows", "w_in-1d", "nan"])
def test_merge_plan_shape_errors(w_in, b_in, w_out, match):
    with pytest.raises(ValueError, match=match):
        merging.merge_plan(w_in, b_in, w_out, ratio=0.5)


# ----------------------------------------------------------------------------- Keras glue

@pytest.mark.parametrize("copies", [[(5, 3, 1.0)], [(5, 3, 2.5), (7, 1, 0.4)]], ids=["identical", "scaled"])
def test_merge_neurons_exact_on_copies_and_caller_untouched(trained_mlp, digits, copies):
    model = _with_copies(trained_mlp, "fc1", copies)
    before = [w.copy() for w in model.get_weights()]
    small = merging.merge_neurons(model, "fc1", ratio=len(copies) / 64)
    assert small.get_layer("fc1").units == 64 - len(copies)
    assert small.get_layer("fc2").kernel.shape == (64 - len(copies), 32)
    np.testing.assert_allclose(small.predict(digits.x_test, verbose=0),
                               model.predict(digits.x_test, verbose=0), atol=1e-5)
    for x, y in zip(before, model.get_weights()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("method", ["pairwise", "kmeans"])
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_merged_model_is_smaller_by_the_planned_count(trained_mlp, method, ratio):
    small = merging.merge_neurons(trained_mlp, ratio=ratio, method=method)
    assert small.get_layer("fc1").units == 64 - int(ratio * 64)
    assert small.get_layer("fc2").units == 32 - int(ratio * 32)
    assert small.get_layer("out").units == 10
    assert cnl.metrics.count_params(small) < cnl.metrics.count_params(trained_mlp)


def test_light_merging_keeps_accuracy(trained_mlp, digits):
    base = cnl.metrics.accuracy(trained_mlp, digits.x_test, digits.y_test)
    small = merging.merge_neurons(trained_mlp, "fc1", ratio=0.1)
    assert cnl.metrics.accuracy(small, digits.x_test, digits.y_test) >= base - 0.03


def test_threshold_zero_merges_only_exact_copies(trained_mlp, digits):
    model = _with_copies(trained_mlp, "fc2", [(4, 9, 1.7)])
    small = merging.merge_neurons(model, "fc2", threshold=1e-10)
    assert small.get_layer("fc2").units == 31


def test_conv_filters_merge_exactly_through_pooling_and_flatten(digits_images):
    keras.utils.set_random_seed(0)
    model = cnl.models.lenet5(digits_images.input_shape)
    model = _with_copies(model, "conv1", [(3, 0, 2.0)])
    model = _with_copies(model, "conv2", [(7, 2, 0.5), (11, 5, 1.0)])
    small = merging.merge_neurons(model, ["conv1", "conv2"], threshold=1e-8)
    assert small.get_layer("conv1").filters == 19 and small.get_layer("conv2").filters == 48
    x = digits_images.x_test[:32]
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(model(x)), atol=1e-5)


def test_kmeans_merging_sets_centroid_weights(trained_mlp):
    small = merging.merge_neurons(trained_mlp, "fc1", ratio=0.5, method="kmeans")
    kernel, bias = trained_mlp.get_layer("fc1").get_weights()
    new_kernel = small.get_layer("fc1").get_weights()[0]
    assert new_kernel.shape == (64, 32)
    plan = merging.cluster_plan(kernel, bias, trained_mlp.get_layer("fc2").get_weights()[0], 0.5)
    np.testing.assert_allclose(new_kernel, plan.w_in, atol=1e-6)


def test_merged_model_round_trips_through_keras_file(trained_mlp, digits, tmp_path):
    small = merging.merge_neurons(trained_mlp, ratio=0.25)
    path = tmp_path / "merged.keras"
    small.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(digits.x_test, verbose=0),
                               small.predict(digits.x_test, verbose=0), atol=1e-6)


def test_nothing_to_merge_still_returns_a_new_model(trained_mlp):
    same = merging.merge_neurons(trained_mlp, "fc1", ratio=0.0)
    assert same is not trained_mlp and same.get_layer("fc1").units == 64


def test_mergeable_layers(trained_mlp, digits_images):
    assert merging.mergeable_layers(trained_mlp) == ["fc1", "fc2"]
    assert merging.mergeable_layers(cnl.models.lenet5(digits_images.input_shape)) == ["conv1", "conv2", "fc1"]


def _model_with(activation_layer=None, activation="relu", bn=False):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activation=activation, name="h")(inputs)
    if bn:
        x = keras.layers.BatchNormalization(name="bn")(x)
    if activation_layer is not None:
        x = activation_layer(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("model_kwargs, merge_kwargs, error, match", [
    (dict(activation="tanh"), dict(ratio=0.2, scaled=True), ValueError, "scaled=False"),
    (dict(activation=None, activation_layer=keras.layers.Activation("sigmoid")), dict(ratio=0.2, scaled=True),
     ValueError, "positively homogeneous"),
    (dict(activation=None, activation_layer=keras.layers.ELU()), dict(ratio=0.2, scaled=True),
     ValueError, "positively homogeneous.*elu"),
    (dict(), dict(layer="out", ratio=0.2), ValueError, "'out' cannot be merged.*model output"),
    (dict(), dict(layer="nope", ratio=0.2), ValueError, "not in model"),
    (dict(), dict(layer=3, ratio=0.2), TypeError, "layer"),
    (dict(), dict(ratio=0.2, method="random"), ValueError, "method"),
    (dict(), dict(threshold=0.1, method="kmeans"), ValueError, "threshold"),
    (dict(), dict(ratio=1.5), ValueError, "ratio"),
    (dict(), dict(), ValueError, "exactly one"),
    (dict(bn=True), dict(layer="h", threshold=1e9, scaled=True), ValueError, "BatchNormalization"),
    (dict(), dict(ratio=0.2, scaled=1), TypeError, "scaled must be True or False"),
], ids=["tanh", "sigmoid-layer", "elu-layer", "output-layer", "unknown-layer", "layer-int", "bad-method",
        "kmeans-threshold", "ratio>1", "no-amount", "batchnorm", "scaled-int"])
def test_merge_neurons_errors(model_kwargs, merge_kwargs, error, match):
    model = _model_with(**model_kwargs)
    merge_kwargs.setdefault("layer", "h")
    with pytest.raises(error, match=match):
        merging.merge_neurons(model, **merge_kwargs)


def test_unscaled_merge_accepts_any_activation():
    model = _model_with(activation="tanh")
    kernel, bias = model.get_layer("h").get_weights()
    kernel[:, 4], bias[4] = kernel[:, 0], bias[0]
    model.get_layer("h").set_weights([kernel, bias])
    small = merging.merge_neurons(model, "h", threshold=1e-10, scaled=False)
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    assert small.get_layer("h").units == 4
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(model(x)), atol=1e-5)


def test_a_group_tied_to_the_input_is_refused():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, activation="relu", name="h")(inputs)
    out = keras.layers.Dense(4, name="out")(keras.layers.Add()([h, inputs]))
    with pytest.raises(ValueError, match="'h' cannot be merged: it reaches model input"):
        merging.merge_neurons(keras.Model(inputs, out), "h", ratio=0.5)
    with pytest.raises(TypeError, match="model"):
        merging.merge_neurons("model", ratio=0.5)


def test_default_merges_unscaled_where_scaling_is_not_exact():
    """With ELU (not homogeneous), the default uses c = 1: identical units still merge exactly."""
    model = _model_with(activation=None, activation_layer=keras.layers.ELU())
    kernel, bias = model.get_layer("h").get_weights()
    kernel[:, 3], bias[3] = kernel[:, 1], bias[1]
    kernel[:, 4], bias[4] = 2 * kernel[:, 0], 2 * bias[0]   # a scaled copy: not merged exactly
    model.get_layer("h").set_weights([kernel, bias])
    small = merging.merge_neurons(model, "h", threshold=1e-10)
    assert small.get_layer("h").units == 4
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(model(x)), atol=1e-5)


def _residual_copies():
    """Two residual branches whose channel 2 duplicates channel 0 in every member."""
    inputs = keras.Input((6,))
    a = keras.layers.Dense(5, activation="relu", name="a")(inputs)
    b = keras.layers.Dense(5, name="b")(a)
    x = keras.layers.Add(name="add")([a, b])
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.ReLU(name="relu")(x)))
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=v.shape).astype("float32") for v in model.weights])
    ka, ba = model.get_layer("a").get_weights()
    ka[:, 2], ba[2] = ka[:, 0], ba[0]
    model.get_layer("a").set_weights([ka, ba])
    kb, bb = model.get_layer("b").get_weights()
    kb[2, :] = 0.0                        # b reads channel 2 nowhere ...
    kb[:, 2], bb[2] = kb[:, 0], bb[0]     # ... and writes channel 2 as channel 0
    model.get_layer("b").set_weights([kb, bb])
    return model


def test_merging_through_a_residual_add_is_exact_for_copies():
    model = _residual_copies()
    group = cnl.surgery.group_of(model, "a")
    assert sorted(group.producers) == ["a", "b"]
    small = merging.merge_neurons(model, "a", threshold=1e-9)
    assert small.get_layer("a").units == 4 and small.get_layer("b").units == 4
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    np.testing.assert_allclose(as_numpy(small(x)), as_numpy(model(x)), rtol=1e-5, atol=1e-5)
