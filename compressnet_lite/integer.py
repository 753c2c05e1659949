"""Integer-only inference (Jacob et al. 2018): int8 weights and activations, int32 biases,
fixed-point requantization, in NumPy, bit for bit like TensorFlow Lite's reference kernels.

Every real value is ``r = S (q - Z)``. A layer ``y = x W + b`` with int8 codes ``q_x``,
``q_w`` (``Z_w = 0``, one scale per output channel) and an int32 bias ``q_b = round(b /
(S_x S_w))`` computes the int32 accumulator ``acc = sum (q_x - Z_x) q_w + q_b`` and then

    q_y = clamp(Z_y + M * acc),        M = S_x S_w / S_y,

where the real multiplier ``M`` is applied without floating point: ``M = M0 * 2^shift``
with ``M0`` a 32-bit fixed-point number in [0.5, 1) stored as the integer
``round(M0 * 2^31)`` (for ``M < 1``, ``shift = -n <= 0``). The product is a rounding,
saturating "doubling high multiply" followed by a rounding right shift, the two gemmlowp
primitives TFLite's kernels use (:func:`saturating_rounding_doubling_high_mul`,
:func:`rounding_divide_by_pot`, :func:`multiply_by_quantized_multiplier`).

Array math first: the fixed-point primitives and the int8 ops (:func:`conv2d`,
:func:`fully_connected`, :func:`max_pool2d`). Then :class:`IntegerModel`, which reads a
full-integer ``.tflite`` model (its int8 weights, int32 biases, scales and zero points
from the interpreter's tensor details; the op list and options from the flatbuffer) and
runs it with these functions, so that both use the same quantization parameters.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from compressnet_lite._checks import check_array, check_choice, check_positive_int, check_real

__all__ = ["quantize_multiplier", "saturating_rounding_doubling_high_mul", "rounding_divide_by_pot",
           "multiply_by_quantized_multiplier", "requantize", "quantize_input", "activation_limits", "conv2d",
           "fully_connected", "max_pool2d", "IntegerOp", "IntegerModel", "OpDifference", "op_differences"]

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


# ---------------------------------------------------------------------------------------
# Fixed-point arithmetic (gemmlowp / TFLite)
# ---------------------------------------------------------------------------------------

def _round_half_away(v: Any) -> Any:
    """C's ``round``: halves away from zero (NumPy's ``np.round`` rounds them to even)."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def quantize_multiplier(m: float) -> tuple[int, int]:
    """Split a real multiplier into a 32-bit fixed-point mantissa and a power of two.

    ``m = (M0 / 2^31) * 2^shift`` with ``M0 / 2^31`` in [0.5, 1): ``frexp`` gives the
    mantissa and exponent, the mantissa is rounded (halves away from zero) to 31
    fractional bits; a mantissa that rounds up to 1.0 is halved and the exponent raised.
    This is TFLite's ``QuantizeMultiplier``. For ``m < 1``, ``shift = -n`` is a right shift.

    Args:
        m: the multiplier, a finite number >= 0 (``S_x S_w / S_y``).

    Returns:
        ``(M0, shift)``: ``M0`` an int in [2^30, 2^31) (0 for ``m = 0``), ``shift`` an int.

    Example:
        >>> quantize_multiplier(0.75), quantize_multiplier(0.1)
        ((1610612736, 0), (1717986918, -3))
    """
    m = check_real(m, "m", minimum=0.0)
    if m == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(m)
    m0 = int(_round_half_away(mantissa * (1 << 31)))
    if m0 == 1 << 31:
        m0 //= 2
        shift += 1
    if shift < -31:  # too small to represent: TFLite flushes it to 0
        return 0, 0
    return m0, shift


def _div_trunc(a: np.ndarray, d: int) -> np.ndarray:
    """C's integer division (truncates toward zero); NumPy's ``//`` floors."""
    q = np.abs(a) // d
    return np.where(a < 0, -q, q)


def saturating_rounding_doubling_high_mul(a: Any, b: Any) -> np.ndarray:
    """``round(a * b / 2^31)`` for int32 ``a``, ``b``: the high 32 bits of ``2 a b``, rounded.

    gemmlowp's ``SaturatingRoundingDoublingHighMul``: the 64-bit product plus a nudge of
    ``2^30`` (``1 - 2^30`` for negative products), divided by ``2^31`` truncating toward
    zero; the one overflowing case ``a = b = -2^31`` saturates to ``2^31 - 1``.

    Example:
        >>> half = 1 << 30                        # 0.5 in Q31 fixed point
        >>> saturating_rounding_doubling_high_mul([half, -(1 << 31)], [half, -(1 << 31)]).tolist()
        [536870912, 2147483647]
    """
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _div_trunc(ab + nudge, 1 << 31)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(np.int32)


def rounding_divide_by_pot(x: Any, exponent: Any) -> np.ndarray:
    """``round(x / 2^exponent)`` with an arithmetic shift, halves away from zero (gemmlowp).

    Example:
        >>> rounding_divide_by_pot(np.array([5, -5, 4, -6]), np.array([1, 1, 1, 2])).tolist()
        [3, -3, 2, -2]
    """
    x = np.asarray(x, np.int64)
    e = np.asarray(exponent, np.int64)
    if np.any(e < 0) or np.any(e > 31):
        raise ValueError(f"exponent must be in 0..31, got {np.unique(e).tolist()}")
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return ((x >> e) + (remainder > threshold)).astype(np.int32)


ROUNDINGS = ("double", "single")


def multiply_by_quantized_multiplier(x: Any, m0: Any, shift: Any, rounding: str = "double") -> np.ndarray:
    """``round(x * M)`` in integer arithmetic, ``M = (m0 / 2^31) * 2^shift`` (TFLite's kernels).

    ``rounding="double"`` is gemmlowp's (Jacob et al.; TFLite's reference convolution): a
    positive ``shift`` multiplies ``x`` first, then the doubling high multiply by ``m0``
    rounds to 32 bits, and a rounding right shift by ``-shift`` rounds again. Two roundings:
    the result can differ by one from the exact ``round(x * M)``. ``"single"`` rounds the
    64-bit product once, ``(x m0 + 2^(30 - shift)) >> (31 - shift)`` (TFLite's
    ``TFLITE_SINGLE_ROUNDING`` form, which its reference fully connected kernel computes).
    ``m0`` and ``shift`` broadcast (one per output channel).

    Example:
        >>> m0, shift = quantize_multiplier(0.1)
        >>> multiply_by_quantized_multiplier(np.array([1000, -1000, 15]), m0, shift).tolist()
        [100, -100, 2]
    """
    check_choice(rounding, "rounding", ROUNDINGS)
    x = np.asarray(x, np.int64)
    shift = np.asarray(shift, np.int64)
    if rounding == "single":
        if np.any(shift > 30):
            raise ValueError(f"shift must be <= 30, got {int(np.max(shift))}")
        total = 31 - shift
        return ((x * np.asarray(m0, np.int64) + (np.int64(1) << (total - 1))) >> total).astype(np.int32)
    left = np.where(shift > 0, shift, 0)
    right = np.where(shift > 0, 0, -shift)
    shifted = x * (np.int64(1) << left)
    if np.any(shifted < INT32_MIN) or np.any(shifted > INT32_MAX):
        raise ValueError("x * 2^shift overflows int32")
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m0), right)


def quantize_input(x: Any, scale: float, zero_point: int, dtype: Any = np.int8) -> np.ndarray:
    """Float values to integer codes as TFLite's QUANTIZE op: ``round(x / S) + Z``, saturated.

    The division is in float32 and halves round away from zero (C's ``round``).

    Example:
        >>> quantize_input(np.array([0.0, 0.5, 1.0, 2.0]), 1 / 256, -128).tolist()
        [-128, 0, 127, 127]
    """
    x = check_array(x, "x")
    scale = check_real(scale, "scale", minimum=0.0, min_inclusive=False)
    info = np.iinfo(dtype)
    v = x.astype(np.float32) / np.float32(scale)
    return np.clip(_round_half_away(v) + int(zero_point), info.min, info.max).astype(dtype)


def activation_limits(activation: str, scale: float, zero_point: int,
                      dtype: Any = np.int8) -> tuple[int, int]:
    """The code range a fused activation clamps to (TFLite's ``CalculateActivationRangeQuantized``).

    ReLU keeps codes >= the code of 0 (``Z``); ReLU6 also <= the code of 6. With a range
    calibrated on ReLU outputs, ``Z`` is the smallest code and the clamp is the int8 range.

    Example:
        >>> activation_limits("RELU6", 6 / 255, -128)
        (-128, 127)
    """
    activation = check_choice(activation, "activation", ACTIVATIONS)
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)

    def code(r: float) -> int:
        return int(zero_point) + int(_round_half_away(np.float32(r) / np.float32(scale)))

    if activation == "RELU":
        lo = max(lo, code(0.0))
    elif activation == "RELU6":
        lo, hi = max(lo, code(0.0)), min(hi, code(6.0))
    elif activation == "RELU_N1_TO_1":
        lo, hi = max(lo, code(-1.0)), min(hi, code(1.0))
    return lo, hi


def requantize(acc: Any, m0: Any, shift: Any, zero_point: int, limits: tuple[int, int] = (-128, 127),
               rounding: str = "double") -> np.ndarray:
    """int32 accumulators to int8 codes: ``clamp(Z_y + round(acc * M), *limits)``.

    Example:
        >>> m0, shift = quantize_multiplier(0.02)
        >>> requantize(np.array([-10_000, 0, 1234, 10_000]), m0, shift, zero_point=-5).tolist()
        [-128, -5, 20, 127]
    """
    y = multiply_by_quantized_multiplier(acc, m0, shift, rounding).astype(np.int64) + int(zero_point)
    return np.clip(y, *limits).astype(np.int8)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """Output size and top/left padding of TFLite's SAME padding (``ComputePaddingHeightWidth``)."""
    out = (size + stride - 1) // stride
    effective = (kernel - 1) * dilation + 1
    pad = max(((out - 1) * stride + effective - size) // 2, 0)
    return out, pad


def _geometry(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    if padding == "SAME":
        return _same_padding(size, kernel, stride, dilation)
    effective = (kernel - 1) * dilation + 1
    return (size - effective + stride) // stride, 0


def conv2d(x: np.ndarray, x_zero_point: int, w: np.ndarray, bias: np.ndarray | None,
           m0: np.ndarray, shift: np.ndarray, y_zero_point: int, *, strides: Sequence[int] = (1, 1),
           padding: str = "VALID", dilation: Sequence[int] = (1, 1),
           limits: tuple[int, int] = (-128, 127), rounding: str = "double") -> np.ndarray:
    """Int8 2-D convolution, NHWC, per-output-channel requantization (TFLite's ``ConvPerChannel``).

    ``acc[n, i, j, c] = sum_{di, dj, k} (x[n, i s + di, j s + dj, k] - Z_x) w[c, di, dj, k] + bias[c]``
    (weights in TFLite's ``(out, kh, kw, in)`` layout, zero point 0), then
    ``clamp(Z_y + round(acc * M_c))``. Taps outside the image contribute 0, i.e. the input is
    padded with its zero point (the real value 0).

    The sums are formed with a float64 matrix product: every partial sum is an integer far
    below 2^53, so it is exact, and much faster than NumPy's integer matmul.
    """
    check_choice(padding, "padding", ("SAME", "VALID"))
    n, h, wd, cin = x.shape
    cout, kh, kw, cin_w = w.shape
    if cin_w != cin:
        raise ValueError(f"w expects {cin_w} input channels, x has {cin}")
    (sh, sw), (dh, dw) = strides, dilation
    oh, ph = _geometry(h, kh, sh, dh, padding)
    ow, pw = _geometry(wd, kw, sw, dw, padding)
    xs = x.astype(np.float64) - x_zero_point
    need_h, need_w = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    xs = np.pad(xs, ((0, 0), (ph, max(need_h - h - ph, 0)), (pw, max(need_w - wd - pw, 0)), (0, 0)))
    wf = w.astype(np.float64)
    acc = np.zeros((n, oh, ow, cout))
    for i in range(kh):
        for j in range(kw):
            tap = xs[:, i * dh: i * dh + (oh - 1) * sh + 1: sh, j * dw: j * dw + (ow - 1) * sw + 1: sw, :]
            acc += tap @ wf[:, i, j, :].T
    acc = acc.astype(np.int64)
    if bias is not None:
        acc += np.asarray(bias, np.int64)
    return requantize(acc, m0, shift, y_zero_point, limits, rounding)


def fully_connected(x: np.ndarray, x_zero_point: int, w: np.ndarray, bias: np.ndarray | None,
                    m0: np.ndarray, shift: np.ndarray, y_zero_point: int, *,
                    limits: tuple[int, int] = (-128, 127), rounding: str = "double") -> np.ndarray:
    """Int8 dense layer: ``clamp(Z_y + round(((x - Z_x) w^T + bias) * M))``, ``w`` of shape (out, in)."""
    acc = ((x.astype(np.float64) - x_zero_point) @ w.astype(np.float64).T).astype(np.int64)
    if bias is not None:
        acc += np.asarray(bias, np.int64)
    return requantize(acc, m0, shift, y_zero_point, limits, rounding)


def max_pool2d(x: np.ndarray, pool: Sequence[int], strides: Sequence[int], padding: str = "VALID",
               limits: tuple[int, int] = (-128, 127)) -> np.ndarray:
    """Int8 max pooling, NHWC: the maximum over each window's in-image codes (same scale in and out)."""
    check_choice(padding, "padding", ("SAME", "VALID"))
    n, h, wd, c = x.shape
    (fh, fw), (sh, sw) = pool, strides
    oh, ph = _geometry(h, fh, sh, 1, padding)
    ow, pw = _geometry(wd, fw, sw, 1, padding)
    low = np.iinfo(x.dtype).min
    need_h, need_w = (oh - 1) * sh + fh, (ow - 1) * sw + fw
    xp = np.pad(x, ((0, 0), (ph, max(need_h - h - ph, 0)), (pw, max(need_w - wd - pw, 0)), (0, 0)),
                constant_values=low)  # padding never wins a max
    out = np.full((n, oh, ow, c), low, x.dtype)
    for i in range(fh):
        for j in range(fw):
            out = np.maximum(out, xp[:, i: i + (oh - 1) * sh + 1: sh, j: j + (ow - 1) * sw + 1: sw, :])
    return np.clip(out, *limits).astype(x.dtype)


# ---------------------------------------------------------------------------------------
# A full-integer .tflite model, run with the functions above
# ---------------------------------------------------------------------------------------

class IntegerOp(NamedTuple):
    """One op of an :class:`IntegerModel`: its TFLite name, tensor indices and parameters."""

    name: str
    inputs: tuple[int, ...]
    output: int
    params: dict


_SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "PACK")  # int32 shape arithmetic feeding RESHAPE
SUPPORTED = ("QUANTIZE", "DEQUANTIZE", "CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE",
             *_SHAPE_OPS)


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on the environment
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


class IntegerModel:
    """A full-integer ``.tflite`` model run by this module's NumPy kernels.

    Built by :meth:`from_tflite`: the op list and each op's options (padding, strides,
    fused activation) come from the flatbuffer; the int8 weights, int32 biases, scales and
    zero points from the interpreter's tensor details, so the reference and the interpreter
    share every quantization parameter. Each op's requantization multipliers
    ``M_c = S_x S_w,c / S_y`` are computed in float64 and split by
    :func:`quantize_multiplier`, as TFLite's kernels do when they are prepared.

    Supported ops: QUANTIZE (float to int8 at the entry), DEQUANTIZE, CONV_2D, FULLY_CONNECTED,
    MAX_POOL_2D, RESHAPE (and the int32 shape ops that feed it). A model ending in int8
    SOFTMAX is refused: convert the logits (e.g. ``models.lenet5(logits=True)``).

    Rounding of ``acc * M``: ``"double"`` everywhere is gemmlowp's fixed point (Jacob et al.);
    ``"reference"`` (the default) rounds each op as TFLite's reference kernels do: the
    convolution in gemmlowp's two steps, the fully connected layer once (``"single"``).

    Attributes:
        ops: the :class:`IntegerOp` list, in execution order.
        rounding: ``"reference"``, ``"double"`` or ``"single"``.
        input_details, output_details: the interpreter's details of the model's input and output.
    """

    def __init__(self, ops: list[IntegerOp], tensors: dict[int, dict], input_index: int,
                 output_index: int, rounding: str = "reference"):
        self.ops = ops
        self.rounding = check_choice(rounding, "rounding", ("reference", *ROUNDINGS))
        self._tensors = tensors
        self.input_details = tensors[input_index]
        self.output_details = tensors[output_index]

    @classmethod
    def from_tflite(cls, tflite_bytes: bytes, rounding: str = "reference") -> IntegerModel:
        """Read a full-integer model (from ``tflite.to_tflite(model, data)``, ideally ``int8_io=True``).

        Raises:
            TypeError: ``tflite_bytes`` is not bytes.
            ValueError: an op this reference does not implement, float weights (not a
                full-integer model), or an unknown ``rounding``.
        """
        from compressnet_lite.tflite import TFLiteRunner

        check_choice(rounding, "rounding", ("reference", *ROUNDINGS))

        runner = TFLiteRunner(tflite_bytes, kernels="reference")
        it = runner.interpreter
        details = {d["index"]: d for d in it.get_tensor_details()}
        schema = _schema()
        codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        model = schema.Model.GetRootAs(bytes(tflite_bytes), 0)
        graph = model.Subgraphs(0)
        ops: list[IntegerOp] = []
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            opcode = model.OperatorCodes(op.OpcodeIndex())
            name = codes.get(max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode()), "CUSTOM")
            if name not in SUPPORTED:
                hint = ("; for a softmax classifier convert the model of its logits instead"
                        if name == "SOFTMAX" else "")
                raise ValueError(f"the model has a {name} op, which this integer reference does not "
                                 f"implement (supported: {', '.join(SUPPORTED)}){hint}")
            inputs = tuple(int(i) for i in op.InputsAsNumpy())
            output = int(op.OutputsAsNumpy()[0])
            if name in _SHAPE_OPS:
                continue
            ops.append(IntegerOp(name, inputs, output, cls._params(name, op, inputs, output, details, it,
                                                                   schema)))
        return cls(ops, details, runner.input_details["index"], runner.output_details["index"], rounding)

    @staticmethod
    def _params(name, op, inputs, output, details, it, schema) -> dict:
        def quant(index):
            q = details[index]["quantization_parameters"]
            return q["scales"].astype(np.float64), q["zero_points"].astype(np.int64)

        def options(kind):
            table = op.BuiltinOptions()
            o = getattr(schema, kind)()
            o.Init(table.Bytes, table.Pos)
            return o

        acts = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
        pads = {v: k for k, v in vars(schema.Padding).items() if not k.startswith("_")}
        params: dict[str, Any] = {}
        if name in ("CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D"):
            if np.dtype(details[output]["dtype"]) != np.int8:
                raise ValueError(f"{name} computes in {np.dtype(details[output]['dtype'])}: not a "
                                 f"full-integer model (convert with to_tflite(model, representative_data))")
            kind = {"CONV_2D": "Conv2DOptions", "FULLY_CONNECTED": "FullyConnectedOptions",
                    "MAX_POOL_2D": "Pool2DOptions"}[name]
            o = options(kind)
            act = acts[o.FusedActivationFunction()]
            s_y, z_y = quant(output)
            params["limits"] = activation_limits(act, float(s_y[0]), int(z_y[0]))
            if name != "FULLY_CONNECTED":
                params["padding"] = pads[o.Padding()]
                params["strides"] = (o.StrideH(), o.StrideW())
            if name == "CONV_2D":
                params["dilation"] = (o.DilationHFactor(), o.DilationWFactor())
            if name == "MAX_POOL_2D":
                params["pool"] = (o.FilterHeight(), o.FilterWidth())
                return params
            w = np.array(it.get_tensor(inputs[1]))
            if w.dtype != np.int8:
                raise ValueError(f"{name} has {w.dtype} weights: this reference runs int8 weights only")
            s_x, z_x = quant(inputs[0])
            s_w, _ = quant(inputs[1])
            bias = np.array(it.get_tensor(inputs[2])) if len(inputs) > 2 and inputs[2] >= 0 else None
            # M_c = S_x S_w,c / S_y in double precision, each split into (M0, shift).
            multipliers = [quantize_multiplier(float(s_x[0] * s / s_y[0]))
                           for s in np.broadcast_to(s_w, (w.shape[0],))]
            params.update(w=w, bias=bias, x_zero_point=int(z_x[0]), y_zero_point=int(z_y[0]),
                          m0=np.array([m for m, _ in multipliers], np.int64),
                          shift=np.array([s for _, s in multipliers], np.int64))
        elif name in ("QUANTIZE", "DEQUANTIZE"):
            params["scale"], params["zero_point"] = quant(output if name == "QUANTIZE" else inputs[0])
        elif name == "RESHAPE":
            params["shape"] = tuple(int(d) for d in details[output]["shape"][1:])
        return params

    def __call__(self, x: Any) -> np.ndarray:
        """Run on a batch given in the model's input dtype (int8 codes for an ``int8_io`` model,
        floats otherwise); returns the output tensor in its own dtype."""
        return self.trace(x)[self.output_details["index"]]

    def trace(self, x: Any) -> dict[int, np.ndarray]:
        """Run on ``x`` (as :meth:`__call__`) and return every tensor computed, by TFLite tensor index."""
        x = check_array(x, "x")
        want = tuple(self.input_details["shape"][1:])
        if x.shape[1:] != want:
            raise ValueError(f"x must have shape (n, {', '.join(map(str, want))}), got {x.shape}")
        if self.input_details["dtype"] == np.int8:
            if not np.array_equal(x, np.round(x)) or x.min() < -128 or x.max() > 127:
                raise ValueError("x must hold int8 codes (-128..127) for this model's int8 input")
            x = x.astype(np.int8)
        values = {self.input_details["index"]: x}
        for op in self.ops:
            values[op.output] = self.run_op(op, values[op.inputs[0]])
        return values

    def run_op(self, op: IntegerOp, x: np.ndarray) -> np.ndarray:
        """Run one op on its (data) input ``x``; e.g. on the interpreter's own tensor, to
        compare one op at a time."""
        p = op.params
        if op.name == "QUANTIZE":
            return quantize_input(x, float(p["scale"][0]), int(p["zero_point"][0]))
        if op.name == "DEQUANTIZE":
            return ((x.astype(np.float32) - np.float32(p["zero_point"][0])) *
                    np.float32(p["scale"][0])).astype(np.float32)
        if op.name == "RESHAPE":
            return x.reshape(len(x), *p["shape"])
        if op.name == "MAX_POOL_2D":
            return max_pool2d(x, p["pool"], p["strides"], p["padding"], p["limits"])
        common = (p["x_zero_point"], p["w"], p["bias"], p["m0"], p["shift"], p["y_zero_point"])
        if op.name == "CONV_2D":
            return conv2d(x, *common, strides=p["strides"], padding=p["padding"], dilation=p["dilation"],
                          limits=p["limits"], rounding="double" if self.rounding == "reference"
                          else self.rounding)
        return fully_connected(x.reshape(len(x), -1), *common, limits=p["limits"],
                               rounding="single" if self.rounding == "reference" else self.rounding)

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Float inputs in, dequantized float outputs out (quantizing the input if needed)."""
        batch_size = check_positive_int(batch_size, "batch_size")
        x = check_array(x, "x")
        inp, out = self.input_details, self.output_details
        outs = []
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            if inp["dtype"] == np.int8:
                s, z = inp["quantization"]
                xb = quantize_input(xb, s, z)
            y = self(xb)
            if out["dtype"] == np.int8:
                s, z = out["quantization"]
                y = (y.astype(np.float32) - np.float32(z)) * np.float32(s)
            outs.append(y)
        return np.concatenate(outs)


class OpDifference(NamedTuple):
    """How one op's int8 outputs differ between :class:`IntegerModel` and an interpreter."""

    op: str
    max_difference: int
    differing: int
    size: int

    @property
    def fraction(self) -> float:
        """Share of the op's output codes that differ."""
        return self.differing / self.size


def op_differences(model: IntegerModel, runner: Any, x: Any) -> list[OpDifference]:
    """Compare ``model`` with a TFLite interpreter one op at a time on the batch ``x``.

    ``runner`` (a :class:`~compressnet_lite.tflite.TFLiteRunner` with ``keep_tensors=True``,
    on the same flatbuffer) runs ``x`` (input codes for an int8-input model); then every
    op of ``model`` is fed the interpreter's own input tensor, so each row shows that op's
    rounding alone, not differences carried in from the ops before it.

    Raises:
        ValueError: ``runner`` does not keep its tensors.
    """
    if not getattr(runner, "keep_tensors", False):
        raise ValueError("runner must keep its tensors: TFLiteRunner(blob, keep_tensors=True)")
    runner.raw(x)
    rows = []
    for op in model.ops:
        ours = model.run_op(op, runner.tensor(op.inputs[0]))
        theirs = runner.tensor(op.output)
        if ours.dtype != np.int8:  # the float output of DEQUANTIZE
            continue
        diff = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
        rows.append(OpDifference(op.name, int(diff.max()), int((diff > 0).sum()), int(diff.size)))
    return rows
