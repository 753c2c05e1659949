"""Tests for compressnet_lite.integer: fixed-point requantization and int8 inference vs TFLite."""

from __future__ import annotations

from fractions import Fraction

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compressnet_lite import integer as I
from compressnet_lite import tflite as T

# The integer engine is NumPy; the models it runs come from the TFLite converter.
needs_tflite = pytest.mark.backend("tensorflow", reason="the models come from to_tflite, which needs "
                                                        "the TensorFlow backend")

int32s = st.integers(I.INT32_MIN, I.INT32_MAX)


def _round_half_away(fr: Fraction) -> int:
    return int(fr + Fraction(1, 2)) if fr >= 0 else -int(-fr + Fraction(1, 2))


# ---------------------------------------------------------------------------------------
# Fixed-point primitives
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("m, expected", [
    (0.5, (1 << 30, 0)), (0.75, (1610612736, 0)), (0.1, (1717986918, -3)),
    (1.0, (1 << 30, 1)), (3.0, (3 << 29, 2)),
    (1 - 2.0 ** -40, (1 << 30, 1)),   # the mantissa rounds up to 1.0: halved, exponent + 1
    (0.0, (0, 0)), (1e-12, (0, 0)),   # below 2^-32: flushed to 0 as TFLite does
], ids=["half", "three-quarters", "tenth", "one", "three", "rounds-up", "zero", "tiny"])
def test_quantize_multiplier_by_hand(m, expected):
    assert I.quantize_multiplier(m) == expected


@settings(max_examples=300, deadline=None)
@given(m=st.floats(1e-9, 100.0))
def test_quantize_multiplier_reconstructs(m):
    m0, shift = I.quantize_multiplier(m)
    assert (1 << 30) <= m0 < (1 << 31)
    assert abs(Fraction(m0) * Fraction(2) ** (shift - 31) - Fraction(m)) <= Fraction(2) ** (shift - 32)


@pytest.mark.parametrize("a, b, expected", [
    (1 << 30, 1 << 30, 1 << 29),          # 0.5 * 0.5 = 0.25 in Q31
    (3, 1 << 30, 2),                      # 1.5 rounds up
    (-3, 1 << 30, -1),                    # -1.5: the nudge 1 - 2^30, then truncation: -1
    (-5, 1 << 30, -2),                    # -2.5 -> -2
    (I.INT32_MIN, I.INT32_MIN, I.INT32_MAX),  # the one overflow saturates
    (I.INT32_MIN, I.INT32_MAX, -I.INT32_MAX),
], ids=["quarter", "tie-up", "negative-tie", "negative-tie2", "saturate", "extreme"])
def test_srdhm_by_hand(a, b, expected):
    assert int(I.saturating_rounding_doubling_high_mul(a, b)) == expected


@settings(max_examples=300, deadline=None)
@given(a=int32s, b=int32s)
def test_srdhm_is_rounded_high_product(a, b):
    got = int(I.saturating_rounding_doubling_high_mul(a, b))
    if a == b == I.INT32_MIN:
        assert got == I.INT32_MAX
    else:
        assert abs(Fraction(got) - Fraction(a * b, 1 << 31)) <= Fraction(1, 2)


@pytest.mark.parametrize("x, e, expected", [
    (5, 1, 3), (-5, 1, -3), (4, 1, 2), (-6, 2, -2), (7, 0, 7), (-1, 31, 0), (100, 3, 13)],
    ids=["2.5", "-2.5", "2", "-1.5", "e0", "tiny-negative", "12.5"])
def test_rounding_divide_by_pot_by_hand(x, e, expected):
    assert int(I.rounding_divide_by_pot(x, e)) == expected


@settings(max_examples=300, deadline=None)
@given(x=int32s, e=st.integers(0, 31))
def test_rounding_divide_by_pot_rounds_half_away(x, e):
    assert int(I.rounding_divide_by_pot(x, e)) == _round_half_away(Fraction(x, 1 << e))


@settings(max_examples=300, deadline=None)
@given(x=st.integers(-(1 << 24), 1 << 24), m=st.floats(1e-6, 8.0))
def test_multiply_by_quantized_multiplier_within_one_of_exact(x, m):
    m0, shift = I.quantize_multiplier(m)
    got = int(I.multiply_by_quantized_multiplier(x, m0, shift))
    exact = Fraction(x) * Fraction(m0) * Fraction(2) ** (shift - 31)
    assert abs(got - exact) <= 1  # two roundings: each at most half a unit


@settings(max_examples=300, deadline=None)
@given(x=int32s, m=st.floats(1e-6, 0.999))
def test_single_rounding_is_one_rounding(x, m):
    m0, shift = I.quantize_multiplier(m)
    got = int(I.multiply_by_quantized_multiplier(x, m0, shift, rounding="single"))
    exact = Fraction(x) * Fraction(m0) * Fraction(2) ** (shift - 31)
    assert -Fraction(1, 2) < got - exact <= Fraction(1, 2)   # halves round up


def test_double_and_single_rounding_differ_by_hand():
    m0, shift = I.quantize_multiplier(0.25)                   # m0 = 2^30, shift = -1
    # -7 * 0.25 = -1.75: both -2. -6 * 0.25 = -1.5: the high multiply gives -3 (ties up),
    # the right shift rounds -1.5 away from zero to -2; one rounding of -1.5 ties up to -1.
    x = np.array([-7, -6, 6])
    assert I.multiply_by_quantized_multiplier(x, m0, shift).tolist() == [-2, -2, 2]
    assert I.multiply_by_quantized_multiplier(x, m0, shift, rounding="single").tolist() == [-2, -1, 2]
    assert I.requantize(np.array([-6, 1000]), m0, shift, zero_point=3).tolist() == [1, 127]


def test_multiply_by_quantized_multiplier_per_channel_broadcasts():
    pairs = [I.quantize_multiplier(m) for m in (0.5, 0.25, 0.1)]
    m0, shift = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    got = I.multiply_by_quantized_multiplier(np.array([[100, 100, 100], [-7, -7, -7]]), m0, shift)
    # -3.5 -> -3 (the high multiply rounds a tie up), -1.75 -> -2, -0.7 -> -1
    assert got.tolist() == [[50, 25, 10], [-3, -2, -1]]


def test_quantize_input_and_activation_limits_by_hand():
    assert I.quantize_input(np.array([0.5, 1.5, -0.5, -2.5]), 1.0, 0).tolist() == [1, 2, -1, -3]
    assert I.quantize_input(np.array([0.0, 1.0, 9.0]), 0.5, -128).tolist() == [-128, -126, -110]
    assert I.quantize_input(np.array([1e6, -1e6]), 1.0, 0).tolist() == [127, -128]
    assert I.activation_limits("NONE", 0.1, 3) == (-128, 127)
    assert I.activation_limits("RELU", 0.1, -20) == (-20, 127)
    assert I.activation_limits("RELU6", 0.01, -128) == (-128, 127)   # code of 6 saturates
    assert I.activation_limits("RELU6", 0.1, -128) == (-128, -68)
    assert I.activation_limits("RELU_N1_TO_1", 0.01, 0) == (-100, 100)


def test_conv2d_matches_a_float_convolution_of_the_codes():
    """With M = 1 and zero points 0 the int8 conv is an exact integer convolution."""
    rng = np.random.default_rng(0)
    x = rng.integers(-10, 10, size=(2, 7, 6, 3)).astype(np.int8)
    w = rng.integers(-5, 5, size=(4, 3, 3, 3)).astype(np.int8)
    bias = np.arange(4, dtype=np.int32)
    m0, shift = I.quantize_multiplier(0.5)
    for padding, strides, dilation in [("SAME", (1, 1), (1, 1)), ("VALID", (2, 1), (1, 1)),
                                       ("SAME", (2, 2), (1, 1)), ("VALID", (1, 1), (2, 2)),
                                       ("SAME", (1, 1), (2, 1))]:
        got = I.conv2d(x, 0, w, bias, m0, shift + 1, 0, strides=strides, padding=padding,
                       dilation=dilation)
        ref = keras.ops.convert_to_numpy(keras.ops.conv(
            x.astype(np.float32), np.transpose(w, (1, 2, 3, 0)).astype(np.float32),
            strides=strides, padding=padding.lower(), dilation_rate=dilation)) + bias
        np.testing.assert_array_equal(got, np.clip(ref, -128, 127))


# ---------------------------------------------------------------------------------------
# A full-integer model, against the TFLite interpreter
# ---------------------------------------------------------------------------------------

def _convnet(seed: int, kind: str) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    if kind == "lenet":   # the shapes of models.lenet5 on the digits, smaller
        x = keras.layers.Conv2D(6, 5, padding="same", activation="relu")(inp)
        x = keras.layers.MaxPooling2D(2)(x)
        x = keras.layers.Conv2D(12, 5, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(32, activation="relu")(x)
    else:                 # strides, SAME padding of even kernels and odd pools, ReLU6, no bias
        x = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu6")(inp)
        x = keras.layers.Conv2D(7, 2, padding="same", use_bias=False)(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10)(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="module", params=["lenet", "geometry"])
def converted(request, digits_images):
    model = _convnet(0, request.param)
    blob = T.to_tflite(model, digits_images.x_train[:200], int8_io=True)
    return model, blob, I.IntegerModel.from_tflite(blob)


@needs_tflite
def test_reads_the_ops_and_shares_quantization(converted):
    _, blob, ref = converted
    names = [op.name for op in ref.ops]
    assert "CONV_2D" in names and names[-1] == "FULLY_CONNECTED"
    runner = T.TFLiteRunner(blob)
    assert ref.input_details["quantization"] == runner.input_details["quantization"]
    conv = next(op for op in ref.ops if op.name == "CONV_2D")
    assert conv.params["w"].dtype == np.int8 and conv.params["m0"].shape == (conv.params["w"].shape[0],)
    if conv.params["bias"] is not None:
        assert conv.params["bias"].dtype == np.int32


@needs_tflite
def test_bit_exact_with_tflite_reference_kernels(converted, digits_images):
    _, blob, ref = converted
    codes = I.quantize_input(digits_images.x_test, *ref.input_details["quantization"])
    ours = ref(codes)
    theirs = T.TFLiteRunner(blob, kernels="reference").raw(codes)
    assert ours.dtype == theirs.dtype == np.int8
    np.testing.assert_array_equal(ours, theirs)
    # gemmlowp's double rounding everywhere differs from the reference fully connected
    # kernel (one rounding) by at most one code in that op.
    rows = I.op_differences(I.IntegerModel.from_tflite(blob, rounding="double"),
                            T.TFLiteRunner(blob, kernels="reference", keep_tensors=True), codes)
    assert all(r.max_difference == 0 for r in rows if r.op != "FULLY_CONNECTED")
    assert max(r.max_difference for r in rows) <= 1


@needs_tflite
@pytest.mark.parametrize("kernels", ["auto", "builtin"])
def test_each_op_within_one_code_of_optimized_kernels(converted, digits_images, kernels):
    """XNNPACK requantizes in float32, the optimized builtin kernels in fixed point: each op's
    outputs, from the same inputs, are two roundings of nearly the same real number."""
    _, blob, ref = converted
    codes = I.quantize_input(digits_images.x_test, *ref.input_details["quantization"])
    rows = I.op_differences(ref, T.TFLiteRunner(blob, kernels=kernels, keep_tensors=True), codes)
    assert [r.op for r in rows] == [op.name for op in ref.ops]
    assert all(r.max_difference <= 1 for r in rows), rows
    assert all(r.max_difference == 0 for r in rows if r.op in ("MAX_POOL_2D", "RESHAPE"))
    assert 0 <= rows[0].fraction < 0.05


@needs_tflite
def test_predict_with_float_io(converted, digits_images):
    model, _, _ = converted
    blob = T.to_tflite(model, digits_images.x_train[:200])
    ref = I.IntegerModel.from_tflite(blob)
    assert [op.name for op in ref.ops][0] == "QUANTIZE" and ref.ops[-1].name == "DEQUANTIZE"
    x = digits_images.x_test[:100]
    ours = ref.predict(x, batch_size=33)
    np.testing.assert_array_equal(ours, T.TFLiteRunner(blob, kernels="reference")(x))
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(model(x)), atol=0.1 * np.abs(ours).max())


@needs_tflite
def test_refuses_what_it_does_not_implement(digits_images):
    keras.utils.set_random_seed(0)
    soft = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(10, activation="softmax")])
    with pytest.raises(ValueError, match="SOFTMAX op, which this integer reference does not"):
        I.IntegerModel.from_tflite(T.to_tflite(soft, digits_images.x_train[:50]))
    logits = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="computes in float32: not a full-integer model"):
        I.IntegerModel.from_tflite(T.to_tflite(logits, int8=False))
    with pytest.raises(TypeError, match="tflite_bytes"):
        I.IntegerModel.from_tflite("model.tflite")


@pytest.mark.parametrize("call, exc, match", [
    (lambda: I.quantize_multiplier(-0.5), ValueError, "m must be a finite number >= 0"),
    (lambda: I.quantize_multiplier(float("inf")), ValueError, "m must be a finite number"),
    (lambda: I.quantize_multiplier("0.5"), TypeError, "m must be a number"),
    (lambda: I.rounding_divide_by_pot(5, 32), ValueError, "exponent must be in 0..31"),
    (lambda: I.rounding_divide_by_pot(5, -1), ValueError, "exponent must be in 0..31"),
    (lambda: I.multiply_by_quantized_multiplier(1 << 30, 1 << 30, 3), ValueError, "overflows int32"),
    (lambda: I.quantize_input(np.ones(2), 0.0, 0), ValueError, "scale must be a finite number > 0"),
    (lambda: I.quantize_input(np.array([np.nan]), 1.0, 0), ValueError, "NaN"),
    (lambda: I.activation_limits("TANH", 0.1, 0), ValueError, "activation must be one of"),
    (lambda: I.multiply_by_quantized_multiplier(5, 1 << 30, 0, rounding="up"), ValueError,
     "rounding must be one of"),
    (lambda: I.multiply_by_quantized_multiplier(5, 1 << 30, 31, rounding="single"), ValueError,
     "shift must be <= 30"),
    (lambda: I.conv2d(np.zeros((1, 4, 4, 2), np.int8), 0, np.zeros((3, 3, 3, 1), np.int8), None,
                      1 << 30, 0, 0), ValueError, "w expects 1 input channels, x has 2"),
    (lambda: I.conv2d(np.zeros((1, 4, 4, 1), np.int8), 0, np.zeros((3, 3, 3, 1), np.int8), None,
                      1 << 30, 0, 0, padding="same"), ValueError, "padding must be one of"),
    (lambda: I.max_pool2d(np.zeros((1, 4, 4, 1), np.int8), (2, 2), (2, 2), "full"), ValueError,
     "padding must be one of"),
], ids=["m-negative", "m-inf", "m-type", "pot-high", "pot-negative", "shift-overflow", "scale-zero",
        "input-nan", "activation", "rounding", "single-shift", "channels", "conv-padding", "pool-padding"])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@needs_tflite
def test_model_input_errors(converted):
    _, blob, ref = converted
    with pytest.raises(ValueError, match=r"x must have shape \(n, 8, 8, 1\)"):
        ref(np.zeros((2, 64)))
    with pytest.raises(ValueError, match="x must hold int8 codes"):
        ref(np.full((1, 8, 8, 1), 0.5))
    with pytest.raises(ValueError, match="x must hold int8 codes"):
        ref(np.full((1, 8, 8, 1), 300))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ref.predict(np.zeros((1, 8, 8, 1)), batch_size=0)
    with pytest.raises(ValueError, match="rounding must be one of"):
        I.IntegerModel.from_tflite(blob, rounding="nearest")
    with pytest.raises(ValueError, match="runner must keep its tensors"):
        I.op_differences(ref, T.TFLiteRunner(blob), np.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="keep_tensors=True to read the others"):
        T.TFLiteRunner(blob).tensor(3)
