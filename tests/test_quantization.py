"""Tests for compressnet_lite.quantization: array math, Keras glue, TFLite int8."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import compressnet_lite as cnl
from compressnet_lite import _backend
from compressnet_lite import quantization as Q


# ---------------------------------------------------------------------------------------
# Array math
# ---------------------------------------------------------------------------------------

floats = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=floats)


@settings(max_examples=150, deadline=None)
@given(w=arrays, bits=st.integers(2, 16), symmetric=st.booleans(), per_channel=st.booleans())
def test_error_bound_property(w, bits, symmetric, per_channel):
    axis = w.ndim - 1 if per_channel else None
    qt = Q.quantize(w, bits=bits, symmetric=symmetric, axis=axis)
    err = np.abs(w - Q.dequantize(qt))
    scale = Q._expand(qt.scale, w.ndim, axis)
    qmin, qmax = Q.code_range(bits, symmetric)
    zero = Q._expand(qt.zero_point.astype(np.float32), w.ndim, axis)
    lo, hi = scale * (qmin - zero), scale * (qmax - zero)
    tol = 1e-5 * (1 + np.abs(w))  # float32 arithmetic
    inside = (w >= lo - tol) & (w <= hi + tol)
    assert np.all((err <= scale / 2 + tol)[inside])
    # Outside the range (affine only: the zero point is rounded) the error stays below one step.
    assert np.all(err <= scale + tol)
    if symmetric:
        assert inside.all(), "the symmetric range covers every value"


@settings(max_examples=60, deadline=None)
@given(w=arrays, bits=st.integers(1, 16), symmetric=st.booleans())
def test_codes_in_range_and_smallest_dtype(w, bits, symmetric):
    qt = Q.quantize(w, bits=bits, symmetric=symmetric)
    qmin, qmax = Q.code_range(bits, symmetric)
    assert qt.q.min() >= qmin and qt.q.max() <= qmax
    expected = {(True, True): np.int8, (True, False): np.int16,
                (False, True): np.uint8, (False, False): np.uint16}[(symmetric, bits <= 8)]
    assert qt.q.dtype == expected and qt.q.shape == w.shape


@settings(max_examples=60, deadline=None)
@given(w=arrays, bits=st.integers(1, 16), symmetric=st.booleans())
def test_pack_unpack_round_trip_property(w, bits, symmetric):
    qt = Q.quantize(w, bits=bits, symmetric=symmetric)
    packed = Q.pack(qt)
    assert packed.dtype == np.uint8 and packed.size == -(-w.size * bits // 8)
    np.testing.assert_array_equal(Q.unpack(packed, bits, w.shape, symmetric), qt.q)


@pytest.mark.parametrize("bits, symmetric, codes, scale, zero", [
    (8, True, [-127, 0, 64, 127], 1 / 127, 0),
    (4, True, [-7, 0, 4, 7], 1 / 7, 0),       # 0.5 * 7 = 3.5 rounds half to even: 4
    (2, True, [-1, 0, 0, 1], 1.0, 0),         # 0.5 rounds to 0 (half to even)
    # range [-1, 1] on 0..255: Z = round(127.5) = 128 (half to even), so +1 -> 256 is clipped to 255
    (8, False, [0, 128, 192, 255], 2 / 255, 128),
    (2, False, [0, 2, 3, 3], 2 / 3, 2),       # Z = round(1.5) = 2; 0.5 -> round(0.75) + 2 = 3
], ids=["int8-sym", "int4-sym", "int2-sym", "uint8-affine", "uint2-affine"])
def test_exact_codes_by_hand(bits, symmetric, codes, scale, zero):
    qt = Q.quantize(np.array([-1.0, 0.0, 0.5, 1.0], np.float32), bits=bits, symmetric=symmetric)
    np.testing.assert_array_equal(qt.q, codes)
    assert float(qt.scale) == pytest.approx(scale, rel=1e-6)
    assert int(qt.zero_point) == zero


def test_affine_keeps_zero_exact_and_fits_positive_range():
    w = np.array([0.0, 0.2, 0.4, 1.0], np.float32)
    qt = Q.quantize(w, bits=8, symmetric=False)
    assert int(qt.zero_point) == 0 and qt.q.tolist() == [0, 51, 102, 255]
    assert Q.dequantize(qt)[0] == 0.0


@pytest.mark.parametrize("shape, axis", [((5, 3), 1), ((5, 3), -1), ((3, 3, 2, 4), 3), ((3, 3, 4, 1), 2)],
                         ids=["dense", "dense-neg", "conv2d", "depthwise"])
def test_per_channel_axis(shape, axis):
    rng = np.random.default_rng(0)
    w = rng.normal(size=shape).astype(np.float32)
    w = w * np.logspace(-3, 0, shape[axis]).reshape([-1 if i == axis % len(shape) else 1
                                                     for i in range(len(shape))])
    qt = Q.quantize(w, bits=8, axis=axis)
    assert qt.scale.shape == (shape[axis],) and qt.axis == axis % len(shape)
    moved = np.moveaxis(w, axis, 0).reshape(shape[axis], -1)
    np.testing.assert_allclose(qt.scale, np.abs(moved).max(axis=1) / 127, rtol=1e-6)
    per_tensor = np.abs(w - Q.dequantize(Q.quantize(w, bits=8))).mean()
    per_channel = np.abs(w - Q.dequantize(qt)).mean()
    assert per_channel < per_tensor  # channels of very different magnitude: per-channel wins


def test_all_zero_array_is_exact():
    qt = Q.quantize(np.zeros((3, 2), np.float32), bits=4, axis=1)
    assert np.all(qt.q == 0) and np.all(Q.dequantize(qt) == 0)


@pytest.mark.parametrize("axis", [None, 0, 1], ids=["per-tensor", "axis0", "axis1"])
def test_agrees_with_keras_abs_max_quantize(axis):
    """Same int8 codes as Keras; Keras returns the reciprocal scale 127 / (max|w| + eps).

    Keras' ``axis`` is the axis reduced over; ours is the axis that keeps a scale per index.
    """
    rng = np.random.default_rng(1)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    keras_axis = None if axis is None else 1 - axis
    kq, ks = keras.quantizers.abs_max_quantize(w, axis=keras_axis, to_numpy=True)
    qt = Q.quantize(w, bits=8, axis=axis)
    np.testing.assert_array_equal(np.asarray(kq), qt.q)
    np.testing.assert_allclose(1.0 / np.asarray(ks).ravel(), np.ravel(qt.scale), rtol=1e-6)
    kq2, _ = keras.quantizers.abs_max_quantize(w, axis=keras_axis)  # the backend path, too
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kq2), qt.q)


def test_binarize_is_xnor_per_filter():
    w = np.array([[0.5, -2.0], [-1.5, 1.0], [1.0, 0.0]], np.float32)
    b = Q.binarize(w, axis=1)
    np.testing.assert_allclose(b, [[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(Q.binarize(w), np.where(w >= 0, 1, -1) * np.abs(w).mean(), rtol=1e-6)
    # alpha = mean|w| minimises the squared error among all alphas
    err = lambda a: ((w - a * np.where(w >= 0, 1, -1)) ** 2).sum()  # noqa: E731
    alpha = np.abs(w).mean()
    assert err(alpha) <= min(err(alpha * 0.9), err(alpha * 1.1))


@pytest.mark.parametrize("bits, expected", [
    (4, [0x07, 0xBE]),       # codes -7 0 4 7 -> unsigned 0 7 11 14, first code in the high nibble
    (2, [0b00010110]),       # codes -1 0 0 1 -> unsigned 0 1 1 2, two bits each, MSB first
    (1, [0b01110000]),       # signs - + + + -> bits 0 1 1 1
], ids=["4bit", "2bit", "1bit"])
def test_pack_by_hand(bits, expected):
    qt = Q.quantize(np.array([-1.0, 0.0, 0.5, 1.0], np.float32), bits=bits)
    assert Q.pack(qt).tolist() == expected
    np.testing.assert_array_equal(Q.unpack(np.array(expected, np.uint8), bits, (4,)), qt.q)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: Q.quantize(np.ones(3, np.float32), bits=0), ValueError, "bits must be in 1..16"),
    (lambda: Q.quantize(np.ones(3, np.float32), bits=17), ValueError, "bits must be in 1..16"),
    (lambda: Q.quantize(np.ones(3, np.float32), bits=4.0), TypeError, "bits must be an integer"),
    (lambda: Q.quantize(np.ones((3, 2), np.float32), axis=2), ValueError, "axis must be in"),
    (lambda: Q.quantize(np.ones((3, 2), np.float32), axis=-3), ValueError, "axis must be in"),
    (lambda: Q.quantize(np.ones((3, 2), np.float32), axis=1.0), TypeError, "axis must be an int"),
    (lambda: Q.quantize(np.arange(3)), TypeError, "floating-point"),
    (lambda: Q.quantize(np.array([], np.float32)), ValueError, "must not be empty"),
    (lambda: Q.quantize(np.array([1.0, np.nan])), ValueError, "NaN"),
    (lambda: Q.quantize([[1.0], [1.0, 2.0]]), TypeError, "array of numbers"),
    (lambda: Q.dequantize(np.ones(3)), TypeError, "QTensor"),
    (lambda: Q.pack(np.ones(3)), TypeError, "QTensor"),
    (lambda: Q.unpack(np.zeros(1, np.uint8), 4, (3,)), ValueError, "needs 2"),
    (lambda: Q.unpack(np.zeros(2, np.int32), 4, (3,)), TypeError, "uint8"),
], ids=["bits0", "bits17", "bits-float", "axis-high", "axis-low", "axis-float", "int-weights",
        "empty", "nan", "ragged", "deq-type", "pack-type", "unpack-short", "unpack-dtype"])
def test_array_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------
# Keras glue
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp(_trained_mlp):
    """The session's trained seed_mlp (conftest); tests here only read it."""
    return _trained_mlp


@pytest.fixture(scope="module")
def convnet():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax", name="out")(x)
    return keras.Model(inp, out)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_quantize_model_per_channel_codes_and_caller_untouched(mlp, digits):
    before = _weights(mlp)
    qmodel = Q.quantize_model(mlp, bits=4)
    for a, b in zip(before, mlp.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert qmodel is not mlp and not any(isinstance(l, Q.QuantizedDense) for l in mlp.layers)
    fc1 = qmodel.get_layer("fc1")
    assert isinstance(fc1, Q.QuantizedDense) and fc1.bits == 4 and fc1.axis == 1
    qt = fc1.qtensor()
    assert qt.q.dtype == np.int8 and qt.scale.shape == (64,)
    np.testing.assert_array_equal(qt.q, Q.quantize(mlp.get_layer("fc1").kernel.numpy(), 4, axis=1).q)
    np.testing.assert_array_equal(fc1.kernel.numpy(), Q.dequantize(qt))
    assert not fc1.kernel.trainable
    # Bookkeeping weights are cnl_-prefixed and not counted as parameters.
    names = {w.path.split("/")[-1] for w in fc1.weights}
    assert names == {"kernel", "bias", "cnl_codes", "cnl_scale", "cnl_zero_point"}
    assert cnl.metrics.count_params(qmodel) == cnl.metrics.count_params(mlp)
    assert cnl.metrics.accuracy(qmodel, digits.x_test, digits.y_test) >= \
        cnl.metrics.accuracy(mlp, digits.x_test, digits.y_test) - 0.02


def test_quantize_model_conv_and_depthwise_axes(convnet):
    q = Q.quantize_model(convnet, bits=8, symmetric=False)
    conv, dw = q.get_layer("conv"), q.get_layer("dw")
    assert isinstance(conv, Q.QuantizedConv2D) and conv.axis == 3 and conv.qtensor().scale.shape == (4,)
    assert isinstance(dw, Q.QuantizedDepthwiseConv2D) and dw.axis == 2 and dw.qtensor().scale.shape == (4,)
    assert conv.qtensor().q.dtype == np.uint8
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(q.predict(x, verbose=0), convnet.predict(x, verbose=0), atol=2e-2)
    pt = Q.quantize_model(convnet, bits=8, per_channel=False, layers=["conv"])
    assert pt.get_layer("conv").axis is None and pt.get_layer("conv").qtensor().scale.shape == ()
    assert type(pt.get_layer("dw")) is keras.layers.DepthwiseConv2D


def test_quantized_model_keras_round_trip(mlp, convnet, tmp_path, digits):
    for model, x in [(Q.quantize_model(mlp, bits=3), digits.x_test),
                     (Q.quantize_model(convnet, bits=4, symmetric=False),
                      np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32))]:
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)  # safe_mode=True
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
        for name, qt in Q.quantized_layers(model).items():
            got = loaded.get_layer(name).qtensor()
            np.testing.assert_array_equal(got.q, qt.q)
            np.testing.assert_array_equal(got.scale, qt.scale)
            assert got.bits == qt.bits and got.axis == qt.axis


@pytest.mark.parametrize("bits", [8, 4, 2, 1], ids=lambda b: f"{b}bit")
def test_report_bytes_are_measured(mlp, bits):
    report = Q.quantization_report(Q.quantize_model(mlp, bits=bits))
    kernels = 64 * 64 + 64 * 32 + 32 * 10
    scales = 4 * (64 + 32 + 10)
    assert report.float_bytes == 4 * kernels
    # the storage file's kernel streams: at most the packed codes plus float32 scales, and for
    # 1 bit (codes -1, +1: two of three values) a table of the two codes, 1 byte per layer
    assert 0 < report.quantized_bytes <= sum(-(-n * bits // 8) for n in (4096, 2048, 320)) + scales + 3
    assert report.bits == {"fc1": bits, "fc2": bits, "out": bits} and report.accuracy is None
    assert report.ratio > 3.5


def test_qat_gradient_flows_through_rounding():
    """The straight-through estimator: d/dW sum(C * fake_quant(W)) = C, although rounding has
    zero gradient almost everywhere; the gradient is taken by the backend's own autodiff."""
    w = np.array([[0.3, -0.7], [0.1, 0.9]], np.float32)
    c = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    dense = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False, name="d")])
    dense.get_layer("d").set_weights([w])
    qat = Q.quantize_aware(dense, bits=2)
    kernel = qat.get_layer("d").kernel
    # on the identity batch the output is fake_quant(W) itself
    grad, = _backend.loss_gradients(qat, [kernel], np.eye(2, dtype=np.float32), np.zeros(2),
                                    loss=lambda _, out: keras.ops.sum(keras.ops.multiply(out, c)))
    np.testing.assert_allclose(grad, c, rtol=1e-6)  # STE: identity
    want = Q.dequantize(Q.quantize(w, 2, axis=1))
    np.testing.assert_allclose(qat.predict(np.eye(2, dtype=np.float32), verbose=0), want, rtol=1e-6)
    fake = Q.fake_quant_weights(keras.Variable(w), 2, axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fake), want, rtol=1e-6)


def test_quantize_aware_fit_and_convert(mlp, digits):
    before = _weights(mlp)
    qat = Q.quantize_aware(mlp, bits=3, activation_bits=8)
    assert isinstance(qat.get_layer("fc1"), Q.QATDense)
    kernel0 = qat.get_layer("fc1").kernel.numpy().copy()
    cnl.models.train(qat, digits, epochs=1)
    assert not np.allclose(kernel0, qat.get_layer("fc1").kernel.numpy())  # gradients reached it
    act_max = float(qat.get_layer("fc1").cnl_act_max.numpy())
    assert act_max > 0
    for a, b in zip(before, mlp.get_weights()):
        np.testing.assert_array_equal(a, b)
    weights_only = Q.quantize_aware(mlp, bits=3)
    cnl.models.train(weights_only, digits, epochs=1)
    converted = Q.quantize_model(weights_only)  # one call; keeps the trained bit width
    assert converted.get_layer("fc1").bits == 3
    np.testing.assert_allclose(converted.predict(digits.x_test, verbose=0),
                               weights_only.predict(digits.x_test, verbose=0), atol=1e-5)


def test_qat_model_keras_round_trip(convnet, tmp_path):
    qat = Q.quantize_aware(convnet, bits=4, activation_bits=8)
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    qat(x, training=True)  # set the activation ranges
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)
    assert float(loaded.get_layer("conv").cnl_act_max.numpy()) > 0


def test_model_errors(mlp):
    with pytest.raises(ValueError, match="bits must be in 1..16"):
        Q.quantize_model(mlp, bits=17)
    with pytest.raises(ValueError, match="bits must be in 1..16"):
        Q.quantize_aware(mlp, bits=0)
    with pytest.raises(ValueError, match="activation_bits must be in 2..16"):
        Q.quantize_aware(mlp, activation_bits=1)
    with pytest.raises(ValueError, match="'nope' is not in model"):
        Q.quantize_model(mlp, layers=["nope"])
    with pytest.raises(TypeError, match="keras.Model"):
        Q.quantize_model("model")
    with pytest.raises(ValueError, match="no quantized layer"):
        Q.quantization_report(mlp)
    with pytest.raises(ValueError, match="x and y must be given together"):
        Q.quantization_report(Q.quantize_model(mlp), x=np.zeros((2, 64)))
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
                            keras.layers.LayerNormalization(name="ln")])
    with pytest.raises(ValueError, match="LayerNormalization, which cannot be quantized"):
        Q.quantize_model(seq, layers=["ln"])
    only_norm = keras.Sequential([keras.Input((4,)), keras.layers.LayerNormalization()])
    with pytest.raises(ValueError, match="no layer to quantize"):
        Q.quantize_model(only_norm)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="subclassed.*Sequential or functional"):
        Q.quantize_model(sub)


def test_sequential_model_works():
    keras.utils.set_random_seed(0)
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    q = Q.quantize_model(seq, bits=8)
    assert isinstance(q.get_layer("d"), Q.QuantizedDense)


_STRATEGY_SCRIPT = """
import numpy as np
import compressnet_lite as cnl
from compressnet_lite import quantization as Q
d = cnl.data.load_digits()
m = cnl.models.train(cnl.models.seed_mlp(), d, epochs=1)
with strategy.scope():
    qat = Q.quantize_aware(m, bits=4, activation_bits=8)
    cnl.models.compile_model(qat)
qat.fit(d.x_train, d.y_train, epochs=1, verbose=0)
with strategy.scope():
    q = Q.quantize_model(qat)
assert float(qat.get_layer("fc1").cnl_act_max.numpy()) > 0
assert q.get_layer("fc1").qtensor().q.dtype == np.int8
print("OK")
"""


def test_qat_and_convert_inside_distribution_strategy(run_on_two_cpus):
    run_on_two_cpus(_STRATEGY_SCRIPT)


# ---------------------------------------------------------------------------------------
# QAT with fake-quantized activations (issue 12 item 1)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp2(digits):
    """The issue's case: seed_mlp trained only 2 epochs (float accuracy about 0.66)."""
    return cnl.models.train(cnl.models.seed_mlp(), digits, epochs=2)


@pytest.mark.parametrize("calibrate", [False, True], ids=["pass-through", "calibrated"])
def test_fresh_qat_with_activations_computes_like_float(mlp2, digits, calibrate):
    """Before any training step, predict/evaluate/the first step must not collapse to chance."""
    x, y = digits.x_test, digits.y_test
    kwargs = {"calibration_data": digits.x_train} if calibrate else {}
    qat = Q.quantize_aware(mlp2, bits=8, activation_bits=8, **kwargs)
    p_float = keras.ops.convert_to_numpy(mlp2(x))
    p_qat = qat.predict(x, verbose=0)
    # 8-bit weights (and 8-bit activations over a calibrated range) stay close to float.
    np.testing.assert_allclose(p_qat, p_float, atol=0.05)
    agree = np.mean(p_qat.argmax(1) == p_float.argmax(1))
    assert agree >= 0.97, agree
    loss = keras.losses.SparseCategoricalCrossentropy()
    cnl.models.compile_model(qat)
    loss_qat = qat.evaluate(x, y, verbose=0)[0]
    assert abs(loss_qat - float(loss(y, p_float))) < 0.05 * float(loss(y, p_float))
    xb, yb = digits.x_train[:32], digits.y_train[:32]
    ref = float(loss(yb, mlp2(xb)))
    first = float(qat.train_on_batch(xb, yb, return_dict=True)["loss"])
    assert abs(first - ref) < 0.1 * ref, (first, ref)
    assert float(qat.get_layer("fc1").cnl_act_steps.numpy()) >= 1


def test_calibration_sets_ranges_from_data(mlp2, digits):
    qat = Q.quantize_aware(mlp2, bits=8, activation_bits=8, calibration_data=digits.x_train)
    probe = keras.Model(mlp2.inputs, mlp2.get_layer("fc1").output)
    act = probe.predict(digits.x_train, verbose=0)
    layer = qat.get_layer("fc1")
    # 8-bit fake-quantized weights change fc1's outputs by far less than their range.
    assert float(layer.cnl_act_min.numpy()) == 0.0  # ReLU outputs: 0 is the low end
    assert float(layer.cnl_act_max.numpy()) == pytest.approx(act.max(), rel=0.02)
    pct = Q.quantize_aware(mlp2, bits=8, activation_bits=8, calibration_data=digits.x_train,
                           calibration="percentile")
    assert float(pct.get_layer("fc1").cnl_act_max.numpy()) < float(layer.cnl_act_max.numpy())
    rule = lambda v, bits: (-1.0, 2.0)  # noqa: E731 - a callable rule
    own = Q.quantize_aware(mlp2, activation_bits=4, calibration_data=digits.x_train[:10],
                           calibration=rule)
    assert float(own.get_layer("out").cnl_act_min.numpy()) == -1.0
    assert float(own.get_layer("out").cnl_act_max.numpy()) == 2.0


def test_ema_follows_batches_after_calibration(mlp2, digits):
    qat = Q.quantize_aware(mlp2, bits=8, activation_bits=8, ema_decay=0.5,
                           calibration_data=digits.x_train)
    layer = qat.get_layer("fc1")
    start = float(layer.cnl_act_max.numpy())
    batch = digits.x_train[:16]
    qat(batch, training=True)
    # The range moves halfway (decay 0.5) towards the batch's own max of fc1's float output.
    kernel = Q.fake_quant_weights(layer.kernel, 8, axis=1)
    raw = np.maximum(batch @ keras.ops.convert_to_numpy(kernel) + layer.bias.numpy(), 0)
    assert float(layer.cnl_act_max.numpy()) == pytest.approx(0.5 * start + 0.5 * raw.max(), rel=1e-5)


# ---------------------------------------------------------------------------------------
# Activation ranges: fake quantization and calibration rules (array math)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lo, hi, bits", [(0.0, 1.0, 8), (-0.7, 2.3, 8), (-1.3, 0.4, 4),
                                          (0.0, 6.0, 2), (-0.01, 5.0, 3)],
                         ids=["relu8", "mixed8", "mostly-negative4", "relu2", "zero-nudged3"])
def test_fake_quantize_is_tensorflows(lo, hi, bits):
    x = np.random.default_rng(3).uniform(-3, 7, size=2000).astype(np.float32)
    x[:5] = [0.0, lo, hi, lo - 1, hi + 1]
    ours = Q.fake_quantize(x, lo, hi, bits)
    theirs = keras.ops.convert_to_numpy(
        keras.quantizers.fake_quant_with_min_max_vars(x, lo, hi, num_bits=bits))
    step = (hi - lo) / (2 ** bits - 1)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * max(1.0, hi - lo))
    assert ours[0] == 0.0                                  # 0 is exact (nudged zero point)
    assert len(np.unique(ours)) <= 2 ** bits
    inside = (x >= lo) & (x <= hi)
    assert np.all(np.abs(ours - x)[inside] <= step + 1e-6)  # half a step plus the nudge


def test_range_rules_by_hand():
    x = np.concatenate([np.linspace(0, 1, 10_000), [50.0]]).astype(np.float32)
    assert Q.minmax_range(x) == (0.0, 50.0)
    assert Q.minmax_range(np.array([1.0, 2.0])) == (0.0, 2.0)       # 0 always inside
    assert Q.minmax_range(np.array([-3.0, -1.0])) == (-3.0, 0.0)
    lo, hi = Q.percentile_range(x, percentile=99.0)
    assert lo == 0.0 and hi == pytest.approx(np.percentile(x, 99.0))
    assert Q.percentile_range(x, percentile=100.0) == Q.minmax_range(x)
    lo, hi = Q.mse_range(x, bits=4)
    assert lo == 0.0 and 1.0 < hi < 50.0, hi                # the outlier is clipped
    err = lambda r: np.mean((Q.fake_quantize(x, *r, bits=4) - x) ** 2)  # noqa: E731
    assert err((lo, hi)) <= err(Q.minmax_range(x)) and err((lo, hi)) <= err((0.0, 1.0))
    assert Q.mse_range(np.zeros(5, np.float32)) == (0.0, 0.0)
    assert set(Q.RANGE_RULES) == {"minmax", "percentile", "mse"}


def test_mse_range_prefers_tighter_ranges_at_fewer_bits():
    x = np.abs(np.random.default_rng(0).laplace(size=20_000)).astype(np.float32)
    his = [Q.mse_range(x, bits=b)[1] for b in (8, 4, 2)]
    assert his[0] > his[1] > his[2]
    assert Q.mse_range(x, bits=4, max_values=1000) == Q.mse_range(x, bits=4, max_values=1000)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: Q.fake_quantize(np.ones(3), 0.0, 1.0, bits=1), ValueError, "bits must be in 2..16"),
    (lambda: Q.fake_quantize(np.ones(3), 0.5, 1.0), ValueError, "lo must be a finite number <= 0"),
    (lambda: Q.fake_quantize(np.ones(3), -1.0, -0.5), ValueError, "hi must be a finite number >= 0"),
    (lambda: Q.fake_quantize(np.ones(3), 0.0, 0.0), ValueError, "hi must be greater than lo"),
    (lambda: Q.fake_quantize(np.ones(3), "0", 1.0), TypeError, "lo must be a number"),
    (lambda: Q.fake_quantize(np.ones(3), 0.0, float("nan")), ValueError, "hi must be a finite"),
    (lambda: Q.fake_quantize(np.arange(3), 0.0, 1.0), TypeError, "floating-point"),
    (lambda: Q.minmax_range(np.array([], np.float32)), ValueError, "must not be empty"),
    (lambda: Q.percentile_range(np.ones(3), percentile=50), ValueError, "percentile must be"),
    (lambda: Q.percentile_range(np.ones(3), percentile=101), ValueError, "percentile must be"),
    (lambda: Q.percentile_range(np.ones(3), percentile="99"), TypeError, "percentile must be a number"),
    (lambda: Q.mse_range(np.ones(3), candidates=0), ValueError, "candidates must be >= 1"),
    (lambda: Q.mse_range(np.ones(3), bits=17), ValueError, "bits must be in 2..16"),
    (lambda: Q.mse_range(np.ones(3), max_values=1.5), TypeError, "max_values must be an integer"),
    (lambda: Q.quantize(np.ones(3, np.float32), symmetric=1), TypeError, "symmetric must be True or False"),
], ids=["fq-bits", "fq-lo-positive", "fq-hi-negative", "fq-empty-range", "fq-lo-type", "fq-hi-nan",
        "fq-int", "minmax-empty", "pct-low", "pct-high", "pct-type", "mse-candidates", "mse-bits",
        "mse-max-values", "quantize-symmetric"])
def test_activation_math_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"symmetric": "yes"}, TypeError, "symmetric must be True or False"),
    ({"per_channel": 1}, TypeError, "per_channel must be True or False"),
    ({"per_channel": None}, TypeError, "per_channel must be True or False"),
], ids=["symmetric-str", "per-channel-int", "per-channel-none"])
def test_quantize_model_flag_errors(mlp, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Q.quantize_model(mlp, **kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"per_channel": "no"}, TypeError, "per_channel must be True or False"),
    ({"ema_decay": "0.9"}, TypeError, "ema_decay must be a number"),
    ({"ema_decay": 1.5}, ValueError, r"ema_decay must be a finite number >= 0 and <= 1"),
    ({"ema_decay": -0.1}, ValueError, "ema_decay must be a finite number"),
    ({"ema_decay": float("nan")}, ValueError, "ema_decay must be a finite number"),
    ({"calibration": "max"}, ValueError, "calibration must be one of 'minmax', 'percentile', 'mse'"),
    ({"calibration": 3}, TypeError, "calibration must be a rule name or a callable"),
    ({"calibration_data": np.zeros((4, 64), np.float32)}, ValueError, "needs activation_bits"),
    ({"activation_bits": 8, "calibration_data": np.zeros((4, 7), np.float32)}, ValueError,
     r"calibration_data must have shape \(n, 64\)"),
    ({"activation_bits": 8, "calibration_data": np.zeros((0, 64), np.float32)}, ValueError,
     "calibration_data must not be empty"),
    ({"activation_bits": 8, "calibration_data": np.ones((2, 64)),
      "calibration": lambda v, b: (0.5, 1.0)}, ValueError, "lo <= 0 <= hi"),
    ({"activation_bits": 8, "calibration_data": np.ones((2, 64)),
      "calibration": lambda v, b: 1.0}, TypeError, "must return two numbers"),
], ids=["per-channel", "ema-type", "ema-high", "ema-low", "ema-nan", "rule-name", "rule-type",
        "data-without-bits", "data-shape", "data-empty", "rule-range", "rule-return"])
def test_quantize_aware_argument_errors(mlp, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Q.quantize_aware(mlp, **kwargs)


def test_qat_layer_argument_errors():
    with pytest.raises(TypeError, match="ema_decay must be a number"):
        Q.QATDense(3, activation_bits=8, ema_decay=None)
    with pytest.raises(TypeError, match="axis must be an int or None"):
        Q.QATDense(3, axis="last")
    layer = Q.QATDense(3)
    layer.build((None, 4))
    with pytest.raises(ValueError, match="does not quantize its outputs"):
        layer.set_activation_range(0.0, 1.0)


# ---------------------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------------------

def _bn_stats(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones are the identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for w in layer.weights:
                n = w.shape[0]
                name = w.path.split("/")[-1]
                value = {"gamma": rng.uniform(0.5, 2.0, n), "beta": rng.normal(0, 0.5, n),
                         "moving_mean": rng.normal(0, 0.5, n),
                         "moving_variance": rng.uniform(0.1, 3.0, n)}[name]
                w.assign(value.astype(np.float32))
    return model


def test_fold_batchnorm_weights_by_hand_and_depthwise():
    k, b = Q.fold_batchnorm_weights(np.array([[1.0, 2.0]]), np.array([0.5, -1.0]), gamma=[2.0, 1.0],
                                    beta=[0.0, 3.0], mean=[0.5, 1.0], variance=[3.0, 0.0], epsilon=1.0)
    np.testing.assert_allclose(k, [[1.0, 2.0]])          # s = (2/2, 1/1)
    np.testing.assert_allclose(b, [0.0, 1.0])            # s (b - mean) + beta
    dw = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4) + 1   # in 3, multiplier 4
    gamma = np.arange(12, dtype=np.float32) + 1
    k, b = Q.fold_batchnorm_weights(dw, None, gamma, np.zeros(12), np.zeros(12), np.ones(12) - 1e-3,
                                    epsilon=1e-3, depth_multiplier=4)
    np.testing.assert_allclose(k.ravel(), dw.ravel() * gamma, rtol=1e-6)  # channel c = i * 4 + m


def _bn_models():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn_conv")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn_dw", center=False)(x)
    x = keras.layers.Conv2D(3, 1, activation="relu", name="conv_relu")(x)
    x = keras.layers.BatchNormalization(name="bn_after_relu")(x)   # stays: ReLU comes first
    x = keras.layers.Flatten()(x)
    y = keras.layers.Dense(6, name="fc")(x)
    y = keras.layers.BatchNormalization(name="bn_fc", scale=False)(y)
    graph = keras.Model(inp, y, name="graph")
    seq = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="d"),
                            keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(2)],
                           name="seq")
    return {"graph": _bn_stats(graph), "sequential": _bn_stats(seq, 1)}


@pytest.mark.parametrize("kind", ["graph", "sequential"])
def test_fold_batchnorm_is_exact_and_leaves_the_caller(kind):
    model = _bn_models()[kind]
    before = _weights(model)
    folded = Q.fold_batchnorm(model)
    names = [l.name for l in folded.layers]
    x = np.random.default_rng(2).normal(size=(16, *model.inputs[0].shape[1:])).astype(np.float32)
    ref = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(folded(x, training=False))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    if kind == "graph":
        assert "bn_after_relu" in names and not {"bn_conv", "bn_dw", "bn_fc"} & set(names)
        assert folded.get_layer("dw").use_bias and not model.get_layer("dw").use_bias
    else:
        assert "bn" not in names and len(folded.layers) == 2


def test_fold_batchnorm_skips_shared_outputs_and_explains():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    d = keras.layers.Dense(3, name="d")(inp)
    out = keras.layers.Add()([keras.layers.BatchNormalization(name="bn")(d), d])
    model = keras.Model(inp, out)
    with pytest.raises(ValueError, match="the output of 'd' is used elsewhere too"):
        Q.fold_batchnorm(model)
    first = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(name="bn0"),
                              keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="'bn0' follows InputLayer"):
        Q.fold_batchnorm(first)
    with pytest.raises(ValueError, match="has no BatchNormalization to fold: it has none"):
        Q.fold_batchnorm(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    with pytest.raises(TypeError, match="keras.Model"):
        Q.fold_batchnorm("model")


@pytest.mark.parametrize("call, exc, match", [
    (lambda: Q.fold_batchnorm_weights(np.ones((2, 3)), None, np.ones(2), np.zeros(3), np.zeros(3),
                                      np.ones(3)), ValueError, r"gamma must have shape \(3,\)"),
    (lambda: Q.fold_batchnorm_weights(np.ones((2, 3)), np.ones(3), np.ones(3), np.zeros(3), np.zeros(3),
                                      -np.ones(3)), ValueError, "variance must be >= 0"),
    (lambda: Q.fold_batchnorm_weights(np.ones((2, 3)), None, np.ones(3), np.zeros(3), np.zeros(3),
                                      np.ones(3), epsilon=0), ValueError,
     "epsilon must be a finite number > 0"),
    (lambda: Q.fold_batchnorm_weights(np.ones((2, 3), int), None, np.ones(3), np.zeros(3), np.zeros(3),
                                      np.ones(3)), TypeError, "kernel must be a floating-point array"),
    (lambda: Q.fold_batchnorm_weights(np.ones((1, 1, 2, 2)), None, np.ones(4), np.zeros(4), np.zeros(4),
                                      np.ones(4), depth_multiplier=3), ValueError, "depthwise kernel"),
    (lambda: Q.fold_batchnorm_weights(np.ones((2, 3)), None, np.ones(3), [0, 0, np.nan], np.zeros(3),
                                      np.ones(3)), ValueError, "beta contains NaN"),
], ids=["gamma-length", "negative-variance", "epsilon", "int-kernel", "depthwise-shape", "nan"])
def test_fold_batchnorm_weights_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_calibrate_in_place_reads_float_activations(mlp2, digits):
    x = digits.x_train[:200]
    qat = Q.quantize_aware(mlp2, bits=8, activation_bits=4)
    assert Q.activation_ranges(qat) == {"fc1": None, "fc2": None, "out": None}
    first = Q.calibrate(qat, x, "mse")
    assert Q.activation_ranges(qat) == first and first["fc1"][1] > 0
    # Recalibrating ignores the ranges already set: the same as calibrating a fresh model.
    again = Q.calibrate(qat, x, "mse")
    fresh = Q.calibrate(Q.quantize_aware(mlp2, bits=8, activation_bits=4), x, "mse")
    assert again == first
    for name, (lo, hi) in fresh.items():
        assert (lo, hi) == pytest.approx(again[name], rel=1e-5)
    minmax = Q.calibrate(qat, x)
    assert minmax["fc2"][1] >= first["fc2"][1]
    with pytest.raises(ValueError, match="lo <= 0 <= hi"):
        Q.calibrate(qat, x, lambda v, b: (1.0, 2.0))
    assert Q.activation_ranges(qat) == minmax  # a refused rule changes nothing
    with pytest.raises(ValueError, match="no layer that quantizes its outputs"):
        Q.calibrate(Q.quantize_aware(mlp2, bits=8), x)
    with pytest.raises(ValueError, match=r"data must have shape \(n, 64\)"):
        Q.calibrate(qat, np.zeros((3, 5)))

# ------------------------------------------------- QTensor: the symmetric flag, code ranges

@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "affine"])
def test_symmetric_is_stored_not_guessed_from_the_dtype(symmetric):
    qt = Q.quantize(np.array([-1.0, 0.0, 0.5, 1.0], np.float32), bits=4, symmetric=symmetric)
    assert qt.symmetric is symmetric
    widened = qt._replace(q=qt.q.astype(np.int32))  # e.g. codes read back as int32
    assert widened.symmetric is symmetric
    assert Q.pack(widened).tolist() == Q.pack(qt).tolist()
    np.testing.assert_array_equal(Q.dequantize(widened), Q.dequantize(qt))


@pytest.mark.parametrize("codes, bits, symmetric, match", [
    ([200, 0], 4, False, "codes 0..200; 4-bit affine codes must be 0..15"),
    ([-8, 3], 4, True, "codes -8..3; 4-bit symmetric codes must be -7..7"),
    ([-1, 0, 1], 1, True, "1-bit symmetric codes must be -1 and \\+1"),
    ([-1, 2], 2, False, "2-bit affine codes must be 0..3"),
], ids=["affine-too-big", "symmetric-too-small", "one-bit-zero", "affine-negative"])
def test_pack_refuses_codes_outside_their_range(codes, bits, symmetric, match):
    q = np.array(codes, np.int32)
    qt = Q.QTensor(q, np.float32(1.0), np.int32(0), bits, None, symmetric)
    with pytest.raises(ValueError, match=match):
        Q.pack(qt)
    with pytest.raises(TypeError, match="integer codes"):
        Q.pack(qt._replace(q=q.astype(np.float32)))
