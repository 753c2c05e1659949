"""Weight quantization: k-bit affine/symmetric codes, binary weights, QAT and real int8 with TFLite.

The article rounds every weight to the nearest integer, ``W~ = round(W)``; weights of a
trained network lie mostly in (-1, 1), so almost all of them become 0. Quantization needs a
*scale* ``S`` (and, for an asymmetric range, a *zero point* ``Z``) (Jacob et al. 2018)::

    q = clip(round(w / S) + Z, qmin, qmax)        w ~ S * (q - Z)

Array math (NumPy, no Keras) comes first: :func:`quantize`, :func:`dequantize`,
:func:`binarize`, :func:`pack` / :func:`unpack`. The Keras glue follows:
:func:`quantize_model` (post-training, per channel), :func:`quantize_aware` (fake
quantization with the straight-through estimator), :func:`quantization_report` (bytes
measured on disk); :func:`to_tflite` / :func:`tflite_predict` (full-integer int8 kernels
through TensorFlow Lite) are aliases of :mod:`compressnet_lite.tflite`.

How a quantized layer stores itself (:class:`QuantizedDense`, :class:`QuantizedConv2D`,
:class:`QuantizedDepthwiseConv2D`): its ``kernel`` is an ordinary, frozen (non-trainable)
float kernel equal to ``dequantize(codes)``, so the layer computes exactly like its Keras
parent; beside it live three non-trainable weights ``cnl_codes`` (integer codes, kernel
shape, smallest integer dtype), ``cnl_scale`` and ``cnl_zero_point`` (shape ``()``
per tensor or ``(channels,)`` per channel), and the config holds ``bits``, ``symmetric``
and ``axis`` (the kernel axis that has one scale per index, or ``None``).
``layer.qtensor()`` returns all of it as a :class:`QTensor`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import keras
import numpy as np
from keras import ops

from compressnet_lite import _backend, codecs
from compressnet_lite._checks import (check_array, check_bool, check_model, check_positive_int,
                                      check_real)
from compressnet_lite.storage import register_transform

__all__ = [
    "QTensor", "code_range", "quantize", "dequantize", "binarize", "pack", "unpack",
    "fake_quantize", "minmax_range", "percentile_range", "mse_range", "RANGE_RULES",
    "fake_quant_weights", "fold_batchnorm_weights", "fold_batchnorm", "calibrate",
    "activation_ranges",
    "QuantizedDense", "QuantizedConv2D", "QuantizedDepthwiseConv2D",
    "QATDense", "QATConv2D", "QATDepthwiseConv2D",
    "quantize_model", "quantize_aware", "quantized_layers", "write_packed",
    "QuantReport", "quantization_report",
    "to_tflite", "TFLiteRunner", "tflite_predict",  # noqa: F822 - module __getattr__ aliases
]

MAX_BITS = 16


# ---------------------------------------------------------------------------------------
# Array math
# ---------------------------------------------------------------------------------------

class QTensor(NamedTuple):
    """A quantized array: ``dequantize(qt) == scale * (q - zero_point)`` (broadcast along ``axis``).

    Attributes:
        q: integer codes, same shape as the original array, smallest integer dtype.
        scale: float32 step size, shape ``()`` (per tensor) or ``(w.shape[axis],)``.
        zero_point: integer code of the real value 0, same shape as ``scale``.
        bits: bit width of the codes (1..16).
        axis: the axis with one scale per index, or ``None`` for one scale.
        symmetric: the codes are signed and centred on 0 (zero point 0), in
            ``code_range(bits, True)``; ``False``: unsigned codes with a zero point, in
            ``code_range(bits, False)``. Stored, not guessed from the dtype of ``q`` (codes
            widened to a larger integer type keep their meaning).
    """

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    axis: int | None
    symmetric: bool


def code_range(bits: int, symmetric: bool = True) -> tuple[int, int]:
    """Smallest and largest integer code for ``bits``.

    Symmetric codes use the narrow signed range ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (int8:
    -127..127, as Keras and TFLite weights do), except 1 bit, which is ``{-1, +1}``
    (a sign). Affine codes use ``[0, 2^b - 1]``.

    Example:
        >>> code_range(8), code_range(4, symmetric=False), code_range(1)
        ((-127, 127), (0, 15), (-1, 1))
    """
    bits = check_positive_int(bits, "bits", maximum=MAX_BITS)
    if not symmetric:
        return 0, 2 ** bits - 1
    return (-1, 1) if bits == 1 else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)


def _code_dtype(bits: int, symmetric: bool) -> np.dtype:
    if symmetric:
        return np.dtype(np.int8 if bits <= 8 else np.int16)
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def _check_float(w: Any, name: str) -> np.ndarray:
    arr = check_array(w, name)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    return arr


def _check_axis(axis: Any, ndim: int) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim - 1}] for an array with {ndim} dimensions, "
                         f"got {axis}")
    return int(axis) % ndim


def _reduce_axes(ndim: int, axis: int | None) -> tuple[int, ...]:
    return tuple(i for i in range(ndim) if i != axis)


def _expand(v: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape a per-channel vector so it broadcasts along ``axis`` of an ``ndim`` array."""
    if axis is None or ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def quantize(w: Any, bits: int = 8, symmetric: bool = True, axis: int | None = None) -> QTensor:
    """Quantize a float array to ``bits``-bit integer codes with round-to-nearest.

    Symmetric: ``S = max|w| / qmax``, ``Z = 0`` (1 bit: ``q = sign(w)``, ``S = mean|w|``,
    the XNOR-Net scale). Affine: the range ``[min(w, 0), max(w, 0)]`` (it always contains 0,
    so 0 is exact) maps onto ``[0, 2^b - 1]``: ``S = (max - min) / (2^b - 1)``,
    ``Z = round(-min / S)``. Inside the representable range the error is at most ``S / 2``.

    Args:
        w: float array (any shape).
        bits: code width, 1..16.
        symmetric: signed codes centred on 0 (``True``) or unsigned codes with a zero point.
        axis: per-channel quantization, one scale per index of this axis (the output
            channel: ``-1`` for Dense and Conv2D kernels); ``None`` for one scale.

    Returns:
        A :class:`QTensor`.

    Raises:
        TypeError: ``w`` is not a float array, ``bits`` or ``axis`` is not an int,
            ``symmetric`` is not a bool.
        ValueError: ``w`` is empty or not finite, ``bits`` outside 1..16, ``axis`` out of range.

    Example:
        >>> qt = quantize(np.array([-1.0, 0.0, 0.5, 1.0]), bits=8)
        >>> qt.q, float(qt.scale)
        (array([-127,    0,   64,  127], dtype=int8), 0.007874015718698502)
    """
    bits = check_positive_int(bits, "bits", maximum=MAX_BITS)
    symmetric = check_bool(symmetric, "symmetric")
    w = _check_float(w, "w")
    axis = _check_axis(axis, w.ndim)
    w = w.astype(np.promote_types(w.dtype, np.float32))
    qmin, qmax = code_range(bits, symmetric)
    red = _reduce_axes(w.ndim, axis)
    # Codes are computed as w * (levels / range), like keras.quantizers.abs_max_quantize: the
    # factor is exact for ties such as 0.5 * 7 = 3.5, where w / (range / levels) can land on
    # 3.4999998 in float32. Rounding is half to even (np.round).
    floor = np.finfo(w.dtype).tiny * 2.0 ** 16  # keeps levels / range finite for subnormal ranges
    if symmetric:
        zero = np.zeros(() if axis is None else w.shape[axis], dtype=_code_dtype(bits, True))
        if bits == 1:
            scale = np.mean(np.abs(w), axis=red)
            q = np.where(w >= 0, 1, -1)
        else:
            peak = np.max(np.abs(w), axis=red)
            peak = np.where(peak > 0, np.maximum(peak, floor), qmax).astype(w.dtype)  # all-zero: S = 1
            scale, inv = peak / qmax, (qmax / peak).astype(w.dtype)
            q = np.clip(np.round(w * _expand(inv, w.ndim, axis)), qmin, qmax)
    else:
        lo = np.minimum(np.min(w, axis=red), 0.0)
        hi = np.maximum(np.max(w, axis=red), 0.0)
        levels = qmax - qmin
        span = np.where(hi > lo, np.maximum(hi - lo, floor), levels).astype(w.dtype)
        scale, inv = span / levels, (levels / span).astype(w.dtype)
        zero = np.clip(np.round(qmin - lo * inv), qmin, qmax)
        q = np.clip(np.round(w * _expand(inv, w.ndim, axis)) + _expand(zero, w.ndim, axis), qmin, qmax)
    dtype = _code_dtype(bits, symmetric)
    return QTensor(q.astype(dtype), np.asarray(scale, np.float32), np.asarray(zero).astype(dtype),
                   bits, axis, bool(symmetric))


def dequantize(qt: QTensor) -> np.ndarray:
    """The float32 array a :class:`QTensor` stands for: ``scale * (q - zero_point)``.

    Raises:
        TypeError: ``qt`` is not a QTensor.

    Example:
        >>> dequantize(quantize(np.array([-1.0, 0.0, 0.5, 1.0]), bits=2))  # 0.5 ties to even: 0
        array([-1.,  0.,  0.,  1.], dtype=float32)
    """
    if not isinstance(qt, QTensor):
        raise TypeError(f"qt must be a QTensor (from quantize), got {type(qt).__name__}")
    q = np.asarray(qt.q)
    scale = _expand(np.asarray(qt.scale, np.float32), q.ndim, qt.axis)
    zero = _expand(np.asarray(qt.zero_point).astype(np.float32), q.ndim, qt.axis)
    return (scale * (q.astype(np.float32) - zero)).astype(np.float32)


def binarize(w: Any, axis: int | None = None) -> np.ndarray:
    """Binary weights with a scale (XNOR-Net, Rastegari et al. 2016): ``alpha * sign(w)``.

    ``alpha = mean |w|`` minimises ``||w - alpha * sign(w)||^2``; XNOR-Net takes one alpha per
    output filter (``axis=-1`` for a Conv2D or Dense kernel). ``sign(0)`` is taken as +1.

    Args:
        w: float array.
        axis: one alpha per index of this axis, or ``None`` for one alpha.

    Returns:
        A float32 array of ``w``'s shape holding two values per channel, ``+-alpha``.

    Example:
        >>> binarize(np.array([0.5, -1.5, 1.0]))
        array([ 1., -1.,  1.], dtype=float32)
    """
    return dequantize(quantize(w, bits=1, symmetric=True, axis=axis))


# Activation ranges ---------------------------------------------------------------------
# Weights are known before inference; activations are not. Their quantization range
# [lo, hi] is chosen from data (calibration) or tracked during QAT. Activations use the
# affine grid 0 .. 2^b - 1 with a zero point, nudged so that the real value 0 is a level.

def fake_quantize(x: Any, lo: float, hi: float, bits: int = 8) -> np.ndarray:
    """Affine fake quantization of activations over ``[lo, hi]``: quantize, then dequantize.

    The NumPy twin of TensorFlow's ``FakeQuantWithMinMaxVars`` (what
    ``keras.quantizers.fake_quant_with_min_max_vars`` runs, and what the TFLite converter
    reads as an activation range): ``S = (hi - lo) / (2^b - 1)``, the zero point
    ``Z = round(-lo / S)`` is clipped to the grid and the range is shifted to
    ``[-Z S, (2^b - 1 - Z) S]`` so that 0 is exact; values are clipped to it and rounded
    half up to the nearest level.

    Args:
        x: float array.
        lo, hi: the range, ``lo <= 0 <= hi``, ``lo < hi``.
        bits: grid width, 2..16.

    Returns:
        A float32 array of ``x``'s shape holding at most ``2^bits`` distinct values.

    Raises:
        TypeError / ValueError: ``x`` not a finite float array, bad ``lo``/``hi``/``bits``.

    Example:
        >>> fake_quantize(np.array([-0.2, 0.0, 0.26, 2.0]), 0.0, 1.0, bits=2) * 3  # levels k/3
        array([0., 0., 1., 3.], dtype=float32)
    """
    bits = check_positive_int(bits, "bits", minimum=2, maximum=MAX_BITS)
    x = _check_float(x, "x").astype(np.float32)
    lo, hi = _check_range(lo, hi)
    qmax = np.float32(2 ** bits - 1)
    scale = np.float32(hi - lo) / qmax
    zero = np.float32(0) - np.float32(lo) / scale
    zero = np.float32(0 if zero < 0 else qmax if zero > qmax else np.floor(zero + np.float32(0.5)))
    low, high = (np.float32(0) - zero) * scale, (qmax - zero) * scale
    shifted = np.clip(x, low, high) - low
    return (np.floor(shifted * (np.float32(1) / scale) + np.float32(0.5)) * scale + low).astype(np.float32)


def _check_range(lo: Any, hi: Any, *, empty_ok: bool = False) -> tuple[float, float]:
    lo = check_real(lo, "lo", maximum=0.0)
    hi = check_real(hi, "hi", minimum=0.0)
    if not (hi > lo or (empty_ok and hi == lo)):
        raise ValueError(f"hi must be greater than lo, got lo={lo}, hi={hi}")
    return lo, hi


def minmax_range(x: Any, bits: int = 8) -> tuple[float, float]:
    """The range ``[min(x, 0), max(x, 0)]``: nothing is clipped, one outlier sets the step.

    ``bits`` is accepted (and ignored) so that every range rule is called as ``rule(x, bits)``.

    Example:
        >>> minmax_range(np.array([0.5, 3.0, 1.0]))
        (0.0, 3.0)
    """
    x = _check_float(x, "x")
    check_positive_int(bits, "bits", minimum=2, maximum=MAX_BITS)
    return float(min(np.min(x), 0.0)), float(max(np.max(x), 0.0))


def percentile_range(x: Any, bits: int = 8, percentile: float = 99.99) -> tuple[float, float]:
    """Clip the tails: ``[P_(100-p)(x), P_p(x)]`` widened to contain 0.

    Values beyond the ``p``-th percentile are clipped (each costs up to its distance to the
    range), in exchange for a finer step for all the others.

    Args:
        x: float array (activations from calibration data).
        bits: accepted for a uniform rule signature.
        percentile: ``p`` in (50, 100]; 100 is :func:`minmax_range`.

    Example:
        >>> percentile_range(np.append(np.ones(999), 100.0), percentile=99.0)
        (0.0, 1.0)
    """
    x = _check_float(x, "x")
    check_positive_int(bits, "bits", minimum=2, maximum=MAX_BITS)
    p = check_real(percentile, "percentile", minimum=50.0, maximum=100.0, min_inclusive=False)
    lo, hi = np.percentile(x, [100.0 - p, p])
    return float(min(lo, 0.0)), float(max(hi, 0.0))


def mse_range(x: Any, bits: int = 8, candidates: int = 100, max_values: int = 1 << 16
              ) -> tuple[float, float]:
    """The range whose fake quantization has the smallest mean squared error on ``x``.

    Candidates shrink the min/max range by ``c = 1/candidates, 2/candidates, ..., 1``; the
    error of each is measured with :func:`fake_quantize` on (a fixed random sample of at
    most ``max_values`` of) the values. Low bit widths choose a tighter range than 8 bits.

    Args:
        x: float array.
        bits: the grid width the range is chosen for, 2..16.
        candidates: how many ranges to try (>= 1).
        max_values: sample size for the search (the sample is seeded: deterministic).

    Example:
        >>> x = np.random.default_rng(0).laplace(size=10_000)
        >>> lo, hi = mse_range(x, bits=4)
        >>> bool(hi < x.max())
        True
    """
    x = _check_float(x, "x").astype(np.float32).ravel()
    bits = check_positive_int(bits, "bits", minimum=2, maximum=MAX_BITS)
    candidates = check_positive_int(candidates, "candidates")
    max_values = check_positive_int(max_values, "max_values")
    if x.size > max_values:
        x = np.random.default_rng(0).choice(x, size=max_values, replace=False)
    lo, hi = minmax_range(x)
    if hi == lo:
        return lo, hi
    best, best_err = (lo, hi), np.inf
    for c in np.arange(1, candidates + 1) / candidates:
        err = float(np.mean((fake_quantize(x, c * lo, c * hi, bits) - x) ** 2))
        if err < best_err:
            best, best_err = (float(c * lo), float(c * hi)), err
    return best


RANGE_RULES = {"minmax": minmax_range, "percentile": percentile_range, "mse": mse_range}


# BatchNorm folding ------------------------------------------------------------------------
# In inference a BatchNormalization after a linear layer is a per-channel affine map, so it
# can be folded into the layer's kernel and bias (Jacob et al. 2018, section 3.2): one
# integer layer instead of a layer plus a float normalisation.

def fold_batchnorm_weights(kernel: Any, bias: Any, gamma: Any, beta: Any, mean: Any, variance: Any,
                           epsilon: float = 1e-3, depth_multiplier: int | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of ``BN(x W + b)`` as one linear layer (BatchNorm in inference mode).

    With ``s = gamma / sqrt(variance + epsilon)`` per output channel::

        BN(x W + b) = s (x W + b - mean) + beta = x (W s) + (s (b - mean) + beta)

    so ``W' = W * s`` (each output channel's column scaled) and ``b' = s (b - mean) + beta``.

    Args:
        kernel: the layer's kernel, output channels on the last axis (Dense ``(in, out)``,
            Conv ``(..., in, out)``); for a DepthwiseConv2D ``(kh, kw, in, multiplier)``
            pass ``depth_multiplier`` (output channel ``c = i * multiplier + m``).
        bias: the layer's bias, or ``None`` (no bias: 0).
        gamma, beta, mean, variance: the BatchNormalization's vectors, one per output
            channel (``gamma = 1`` / ``beta = 0`` when it has no scale / center).
        epsilon: the BatchNormalization's epsilon (> 0).
        depth_multiplier: set for a depthwise kernel.

    Returns:
        ``(kernel', bias')`` as float32 (``kernel'`` of ``kernel``'s shape).

    Raises:
        TypeError / ValueError: non-float or non-finite arrays, vectors of the wrong length,
            negative variance, bad ``epsilon``.

    Example:
        >>> k, b = fold_batchnorm_weights(np.ones((2, 1)), None, gamma=[2.0], beta=[1.0],
        ...                               mean=[0.5], variance=[3.0], epsilon=1.0)
        >>> k.ravel().tolist(), b.tolist()                 # s = 2 / sqrt(4) = 1
        ([1.0, 1.0], [0.5])
    """
    kernel = _check_float(kernel, "kernel").astype(np.float64)
    epsilon = check_real(epsilon, "epsilon", minimum=0.0, min_inclusive=False)
    if depth_multiplier is not None:
        depth_multiplier = check_positive_int(depth_multiplier, "depth_multiplier")
        if kernel.ndim != 4 or kernel.shape[3] != depth_multiplier:
            raise ValueError(f"a depthwise kernel must have shape (kh, kw, in, {depth_multiplier}), "
                             f"got {kernel.shape}")
        channels = kernel.shape[2] * kernel.shape[3]
    else:
        channels = kernel.shape[-1]
    vectors = {}
    for name, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("variance", variance),
                    ("bias", np.zeros(channels) if bias is None else bias)):
        arr = check_array(v, name).astype(np.float64)
        if arr.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},) (one value per output channel), "
                             f"got {arr.shape}")
        vectors[name] = arr
    if np.any(vectors["variance"] < 0):
        raise ValueError("variance must be >= 0")
    s = vectors["gamma"] / np.sqrt(vectors["variance"] + epsilon)
    if depth_multiplier is None:
        new_kernel = kernel * s
    else:
        new_kernel = kernel * s.reshape(kernel.shape[2], kernel.shape[3])
    new_bias = s * (vectors["bias"] - vectors["mean"]) + vectors["beta"]
    return new_kernel.astype(np.float32), new_bias.astype(np.float32)


def pack(qt: QTensor) -> np.ndarray:
    """Pack the codes of ``qt`` into bytes, ``bits`` bits each (two 4-bit codes per byte, ...).

    Codes are first shifted to unsigned ``0 .. 2^b - 1`` (``q - qmin``; for 1 bit
    ``(q + 1) / 2``), then packed by :func:`compressnet_lite.codecs.pack_bits` (most
    significant bit first, the library's one bit order). ``n`` codes take
    ``ceil(n * bits / 8)`` bytes.

    Raises:
        TypeError: ``qt`` is not a QTensor, or its codes are not integers.
        ValueError: a code lies outside ``code_range(qt.bits, qt.symmetric)`` (1 bit
            symmetric: a code other than -1 and +1).

    Example:
        >>> pack(quantize(np.array([-1.0, 0.0, 0.5, 1.0]), bits=4)).tolist()  # 0 7 11 14
        [7, 190]
    """
    if not isinstance(qt, QTensor):
        raise TypeError(f"qt must be a QTensor (from quantize), got {type(qt).__name__}")
    q = np.asarray(qt.q)
    if q.size and not np.issubdtype(q.dtype, np.integer):
        raise TypeError(f"qt.q must hold integer codes, got dtype {q.dtype}")
    qmin, qmax = code_range(qt.bits, qt.symmetric)
    kind = "symmetric" if qt.symmetric else "affine"
    if q.size and (int(q.min()) < qmin or int(q.max()) > qmax or
                   (qt.bits == 1 and qt.symmetric and np.any(q == 0))):
        allowed = "-1 and +1" if qt.bits == 1 and qt.symmetric else f"{qmin}..{qmax}"
        raise ValueError(f"qt.q holds codes {int(q.min())}..{int(q.max())}; {qt.bits}-bit {kind} "
                         f"codes must be {allowed}")
    u = q.astype(np.int64).ravel()
    u = (u + 1) // 2 if qt.bits == 1 and qt.symmetric else u - qmin
    return np.frombuffer(codecs.pack_bits(u, qt.bits), dtype=np.uint8).copy()


def unpack(data: Any, bits: int, shape: Sequence[int], symmetric: bool = True) -> np.ndarray:
    """Inverse of :func:`pack`: integer codes of ``shape`` from packed bytes.

    Raises:
        ValueError: ``data`` holds fewer bytes than ``shape`` needs.
        TypeError: ``data`` is not an array of bytes.
    """
    bits = check_positive_int(bits, "bits", maximum=MAX_BITS)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise TypeError(f"data must be a uint8 array (from pack), got dtype {data.dtype}")
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    if data.size * 8 < n * bits:
        raise ValueError(f"data holds {data.size} bytes; shape {shape} at {bits} bits needs "
                         f"{(n * bits + 7) // 8}")
    u = codecs.unpack_bits(data.tobytes(), bits, n)
    qmin, _ = code_range(bits, symmetric)
    q = 2 * u - 1 if bits == 1 and symmetric else u + qmin
    return q.astype(_code_dtype(bits, symmetric)).reshape(shape)


# ---------------------------------------------------------------------------------------
# Keras glue: layers
# ---------------------------------------------------------------------------------------

_PACKAGE = "compressnet_lite"


def _output_axis(layer: keras.layers.Layer) -> int:
    """Kernel axis of the output channels (per-channel quantization runs along it)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return 2  # (kh, kw, in_channels, depth_multiplier): one channel group per input channel
    return -1 % len(layer.kernel.shape)


class _QuantizedMixin:
    """State of a post-training quantized layer: frozen float kernel + integer codes + scales."""

    def _init_quant(self, bits: int, symmetric: bool, axis: int | None) -> None:
        self.bits = check_positive_int(bits, "bits", maximum=MAX_BITS)
        self.symmetric = bool(symmetric)
        self.axis = None if axis is None else int(axis)

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel.trainable = False  # the kernel must stay equal to dequantize(codes)
        shape = tuple(self.kernel.shape)
        vec = () if self.axis is None else (shape[self.axis],)
        dtype = str(_code_dtype(self.bits, self.symmetric))
        self.cnl_codes = self.add_weight(name="cnl_codes", shape=shape, dtype=dtype,
                                         initializer="zeros", trainable=False)
        self.cnl_scale = self.add_weight(name="cnl_scale", shape=vec, dtype="float32",
                                         initializer="ones", trainable=False)
        self.cnl_zero_point = self.add_weight(name="cnl_zero_point", shape=vec, dtype=dtype,
                                              initializer="zeros", trainable=False)

    def qtensor(self) -> QTensor:
        """The layer's kernel as a :class:`QTensor` (codes, scale, zero point, bits, axis)."""
        return QTensor(np.asarray(keras.ops.convert_to_numpy(self.cnl_codes)),
                       np.asarray(keras.ops.convert_to_numpy(self.cnl_scale)),
                       np.asarray(keras.ops.convert_to_numpy(self.cnl_zero_point)),
                       self.bits, self.axis, self.symmetric)

    def set_qtensor(self, qt: QTensor) -> None:
        """Store ``qt`` and set the kernel to ``dequantize(qt)``."""
        self.cnl_codes.assign(qt.q)
        self.cnl_scale.assign(qt.scale)
        self.cnl_zero_point.assign(qt.zero_point)
        self.kernel.assign(dequantize(qt))

    # Keras' Dense/Conv save only kernel and bias; save every variable instead.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "symmetric": self.symmetric, "axis": self.axis}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizedDense(_QuantizedMixin, keras.layers.Dense):
    """A Dense layer whose kernel is ``dequantize(codes)``; codes and scales are ``cnl_*`` weights."""

    def __init__(self, *args, bits: int = 8, symmetric: bool = True, axis: int | None = -1, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(bits, symmetric, axis)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizedConv2D(_QuantizedMixin, keras.layers.Conv2D):
    """A Conv2D layer whose kernel is ``dequantize(codes)``; codes and scales are ``cnl_*`` weights."""

    def __init__(self, *args, bits: int = 8, symmetric: bool = True, axis: int | None = 3, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(bits, symmetric, axis)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizedDepthwiseConv2D(_QuantizedMixin, keras.layers.DepthwiseConv2D):
    """A DepthwiseConv2D whose kernel is ``dequantize(codes)``; codes and scales are ``cnl_*`` weights."""

    def __init__(self, *args, bits: int = 8, symmetric: bool = True, axis: int | None = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(bits, symmetric, axis)


def fake_quant_weights(w: Any, bits: int, axis: int | None = None) -> Any:
    """Symmetric fake quantization with the straight-through estimator, in ``keras.ops``.

    Forward: ``dequantize(quantize(w, bits, axis=axis))`` (the same numbers as the NumPy
    path). Backward: the gradient passes through unchanged (``w + stop_gradient(wq - w)``),
    the straight-through estimator of Bengio et al. 2013 / Courbariaux et al. 2015.
    """
    ndim = len(w.shape)
    red = _reduce_axes(ndim, axis)
    _, qmax = code_range(bits, True)
    if bits == 1:
        scale = ops.mean(ops.abs(w), axis=red, keepdims=True)
        wq = ops.where(w >= 0, scale, -scale)
    else:
        peak = ops.max(ops.abs(w), axis=red, keepdims=True)
        floor = float(np.finfo(np.float32).tiny) * 2.0 ** 16
        peak = ops.where(peak > 0, ops.maximum(peak, floor), float(qmax) * ops.ones_like(peak))
        wq = ops.clip(ops.round(w * (qmax / peak)), -qmax, qmax) * (peak / qmax)
    return w + ops.stop_gradient(wq - w)


_MIN_SPAN = 1e-6  # smallest activation range width used for fake quantization


class _QATMixin:
    """Fake-quantized kernel (STE) and, optionally, fake-quantized outputs with tracked ranges."""

    def _init_qat(self, bits: int, axis: int | None, activation_bits: int | None,
                  ema_decay: float) -> None:
        self.bits = check_positive_int(bits, "bits", maximum=MAX_BITS)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise TypeError(f"axis must be an int or None, got {type(axis).__name__}")
        self.axis = None if axis is None else int(axis)
        self.activation_bits = None if activation_bits is None else check_positive_int(
            activation_bits, "activation_bits", minimum=2, maximum=MAX_BITS)
        self.ema_decay = check_real(ema_decay, "ema_decay", minimum=0.0, maximum=1.0)

    def build(self, input_shape):
        super().build(input_shape)
        if self.activation_bits is not None:
            self.cnl_act_min = self.add_weight(name="cnl_act_min", shape=(), initializer="zeros",
                                               trainable=False)
            self.cnl_act_max = self.add_weight(name="cnl_act_max", shape=(), initializer="zeros",
                                               trainable=False)
            self.cnl_act_steps = self.add_weight(name="cnl_act_steps", shape=(), initializer="zeros",
                                                 trainable=False)

    def _fq_kernel(self):
        return fake_quant_weights(self.kernel, self.bits, self.axis)

    def _fq_outputs(self, x, training):
        """Fake-quantize ``x`` over the tracked range; pass it through while none is known.

        ``cnl_act_steps`` counts the batches (and calibrations) that set the range. At 0 no
        range is known (a model fresh from :func:`quantize_aware` without calibration data),
        and the outputs pass through unquantized: predict and evaluate compute like the
        weight-only model instead of collapsing every activation onto the range [0, 0]. A
        training step first sets the range (the batch's own min/max on the first step, an
        exponential moving average after it), then quantizes with it.
        """
        if self.activation_bits is None:
            return x
        if training:
            lo, hi = ops.minimum(ops.min(x), 0.0), ops.maximum(ops.max(x), 0.0)
            first = ops.equal(self.cnl_act_steps.value, 0.0)
            d = self.ema_decay
            self.cnl_act_min.assign(ops.where(first, lo, d * self.cnl_act_min + (1 - d) * lo))
            self.cnl_act_max.assign(ops.where(first, hi, d * self.cnl_act_max + (1 - d) * hi))
            self.cnl_act_steps.assign(self.cnl_act_steps + 1.0)
        # .value: the tensors (JAX's jnp.where refuses a Keras Variable itself)
        act_min, act_max = self.cnl_act_min.value, self.cnl_act_max.value
        known = ops.greater(self.cnl_act_steps.value, 0.0)
        # Placeholders keep the unused branch finite; a range of width 0 (a dead unit's
        # outputs) is widened so the step S = (hi - lo) / (2^b - 1) is never 0.
        lo = ops.where(known, act_min, -1.0)
        hi = ops.where(known, ops.maximum(act_max, act_min + _MIN_SPAN), 1.0)
        fq = keras.quantizers.fake_quant_with_min_max_vars(x, lo, hi, num_bits=self.activation_bits)
        return ops.where(known, fq, x)

    def set_activation_range(self, lo: float, hi: float) -> None:
        """Set the output range (e.g. from calibration); later training steps update it by EMA."""
        if self.activation_bits is None:
            raise ValueError(f"layer {self.name!r} does not quantize its outputs (activation_bits=None)")
        lo, hi = _check_range(lo, hi, empty_ok=True)  # [0, 0]: a unit that never fires
        self.cnl_act_min.assign(lo)
        self.cnl_act_max.assign(hi)
        self.cnl_act_steps.assign(max(1.0, float(keras.ops.convert_to_numpy(self.cnl_act_steps))))

    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "axis": self.axis,
                "activation_bits": self.activation_bits, "ema_decay": self.ema_decay}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QATDense(_QATMixin, keras.layers.Dense):
    """Dense trained with a fake-quantized kernel (STE); optional fake-quantized outputs."""

    def __init__(self, *args, bits: int = 8, axis: int | None = -1, activation_bits: int | None = None,
                 ema_decay: float = 0.99, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_qat(bits, axis, activation_bits, ema_decay)

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self._fq_kernel())
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return self._fq_outputs(x, training)


class _QATConvCall:
    def _conv(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)

    def call(self, inputs, training=None):
        x = self._conv(inputs, self._fq_kernel())
        if self.use_bias:
            channels = x.shape[-1] if self.data_format == "channels_last" else x.shape[1]
            shape = (1,) * (self.rank + 1) + (channels,) if self.data_format == "channels_last" \
                else (1, channels) + (1,) * self.rank
            x = ops.add(x, ops.reshape(self.bias, shape))
        if self.activation is not None:
            x = self.activation(x)
        return self._fq_outputs(x, training)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QATConv2D(_QATMixin, _QATConvCall, keras.layers.Conv2D):
    """Conv2D trained with a fake-quantized kernel (STE); optional fake-quantized outputs."""

    def __init__(self, *args, bits: int = 8, axis: int | None = 3, activation_bits: int | None = None,
                 ema_decay: float = 0.99, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_qat(bits, axis, activation_bits, ema_decay)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QATDepthwiseConv2D(_QATMixin, _QATConvCall, keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D trained with a fake-quantized kernel (STE); optional fake-quantized outputs."""

    def __init__(self, *args, bits: int = 8, axis: int | None = 2, activation_bits: int | None = None,
                 ema_decay: float = 0.99, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_qat(bits, axis, activation_bits, ema_decay)

    def _conv(self, inputs, kernel):
        return ops.depthwise_conv(inputs, kernel, strides=self.strides, padding=self.padding,
                                  dilation_rate=self.dilation_rate, data_format=self.data_format)


# ---------------------------------------------------------------------------------------
# Keras glue: model rewriting
# ---------------------------------------------------------------------------------------

_PLAIN = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
_QUANTIZED = {keras.layers.Dense: QuantizedDense, keras.layers.Conv2D: QuantizedConv2D,
              keras.layers.DepthwiseConv2D: QuantizedDepthwiseConv2D}
_QAT = {keras.layers.Dense: QATDense, keras.layers.Conv2D: QATConv2D,
        keras.layers.DepthwiseConv2D: QATDepthwiseConv2D}
_OWN_KEYS = ("bits", "symmetric", "axis", "activation_bits", "ema_decay")


def _base_type(layer: keras.layers.Layer) -> type | None:
    """Dense, Conv2D or DepthwiseConv2D for a supported layer (plain, QAT or quantized), else None."""
    for cls in _PLAIN:
        if type(layer) is cls or type(layer) in (_QUANTIZED[cls], _QAT[cls]):
            return cls
    return None


def _select(model: keras.Model, layers: Iterable[str] | None) -> list[keras.layers.Layer]:
    supported = "Dense, Conv2D, DepthwiseConv2D"
    if layers is None:
        chosen = [l for l in model.layers if _base_type(l) is not None]
        if not chosen:
            kinds = ", ".join(sorted({type(l).__name__ for l in model.layers}))
            raise ValueError(f"model has no layer to quantize (supported: {supported}); "
                             f"its layers are {kinds}")
        return chosen
    if isinstance(layers, str):
        layers = [layers]
    by_name = {l.name: l for l in model.layers}
    chosen = []
    for name in layers:
        if name not in by_name:
            raise ValueError(f"layers: {name!r} is not in model {model.name!r}; its layers are: "
                             f"{', '.join(map(repr, by_name))}")
        if _base_type(by_name[name]) is None:
            raise ValueError(f"layers: {name!r} is a {type(by_name[name]).__name__}, which cannot be "
                             f"quantized (supported: {supported})")
        chosen.append(by_name[name])
    return chosen


def _rebuild(model: keras.Model, new_layer) -> keras.Model:
    """Rebuild ``model`` with ``new_layer(old) -> new layer or None (plain copy)``; every weight
    the new layer shares with the old one (kernel, bias, by path) is copied."""
    from compressnet_lite import surgery

    return surgery.rewrite(model, new_layer)


def _plain_config(layer: keras.layers.Layer) -> dict:
    return {k: v for k, v in layer.get_config().items() if k not in _OWN_KEYS}


def quantize_model(model: keras.Model, bits: int = 8, per_channel: bool = True, symmetric: bool = True,
                   layers: Iterable[str] | None = None) -> keras.Model:
    """Post-training weight quantization of Dense, Conv2D and DepthwiseConv2D layers.

    Each selected layer becomes a ``Quantized*`` layer of the same class family whose kernel
    is the dequantized kernel (so predictions use exactly the quantized values) and which
    carries the integer codes, scales and zero points as ``cnl_*`` weights. Biases stay
    float32 (they are few). Layers trained with :func:`quantize_aware` keep the bit width and
    per-channel choice they were trained with, so ``quantize_model(qat_model)`` converts a
    QAT model in one call (their activation fake-quantization is dropped: this form
    quantizes weights only).

    Args:
        model: a built functional or Sequential model (not changed).
        bits: code width 1..16 (1 = sign times a per-channel scale).
        per_channel: one scale per output channel (``True``) or one per kernel.
        symmetric: signed codes with zero point 0, or unsigned codes with a zero point.
        layers: names of the layers to quantize; ``None`` = every supported layer.

    Returns:
        A new model; see :func:`quantization_report` for bytes and accuracy.

    Raises:
        TypeError: ``model`` is not a Keras model, ``bits`` is not an int, ``per_channel`` or
            ``symmetric`` is not a bool.
        ValueError: ``bits`` outside 1..16, unknown or unsupported layer, model not built,
            subclassed model, NaN weights.

    Example:
        >>> qmodel = quantize_model(model, bits=4)          # doctest: +SKIP
        >>> qmodel.get_layer("fc1").qtensor().q.dtype       # doctest: +SKIP
        dtype('int8')
    """
    check_model(model)
    bits = check_positive_int(bits, "bits", maximum=MAX_BITS)
    per_channel = check_bool(per_channel, "per_channel")
    symmetric = check_bool(symmetric, "symmetric")
    chosen = {l.name for l in _select(model, layers)}
    specs: dict[str, tuple[int, bool, int | None]] = {}

    def new_layer(layer):
        if layer.name not in chosen:
            return None
        cls = _base_type(layer)
        axis = _output_axis(layer)
        if isinstance(layer, _QATMixin):
            spec = (layer.bits, True, layer.axis)
        elif isinstance(layer, _QuantizedMixin) and layer.bits == bits and layer.symmetric == symmetric:
            spec = (layer.bits, layer.symmetric, layer.axis)
        else:
            spec = (bits, symmetric, axis if per_channel else None)
        specs[layer.name] = spec
        return _QUANTIZED[cls].from_config({**_plain_config(layer), "bits": spec[0],
                                            "symmetric": spec[1], "axis": spec[2]})

    new = _rebuild(model, new_layer)
    for name, (b, sym, axis) in specs.items():
        kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        new.get_layer(name).set_qtensor(quantize(kernel, b, sym, axis))
    return new


register_transform(_QATMixin, lambda m: quantize_model(  # storage stores QAT layers' codes
    m, layers=[l.name for l in m.layers if isinstance(l, _QATMixin)]))


def quantize_aware(model: keras.Model, bits: int = 8, per_channel: bool = True,
                   activation_bits: int | None = None, layers: Iterable[str] | None = None, *,
                   calibration_data: Any = None, calibration: str | Callable = "minmax",
                   ema_decay: float = 0.99) -> keras.Model:
    """Quantization-aware training: a new model whose kernels are fake-quantized in every forward pass.

    The forward pass uses ``dequantize(quantize(kernel))`` (symmetric, ``bits``); the backward
    pass treats rounding as the identity (straight-through estimator), so the float
    "shadow" kernel keeps learning small updates that rounding would erase. With
    ``activation_bits`` the selected layers' outputs are fake-quantized too (affine, see
    :func:`fake_quantize`) over a range that is

    * calibrated on ``calibration_data`` by a range rule (:func:`minmax_range`,
      :func:`percentile_range`, :func:`mse_range`, or any ``rule(values, bits) -> (lo, hi)``),
      when given, and
    * tracked during training by an exponential moving average of each batch's min/max,
      ``r <- ema_decay * r + (1 - ema_decay) * r_batch`` (the first batch sets it when no
      calibration did).

    Until a range is known the outputs pass through unquantized. Compile and ``fit`` the
    model as usual, then ``quantize_model(qat_model)`` gives the integer weights.

    Args:
        model: a built functional or Sequential model (not changed; its weights initialise
            the new one).
        bits: weight code width 1..16.
        per_channel: one scale per output channel.
        activation_bits: fake-quantize the outputs of the selected layers at this width
            (2..16), or ``None`` for weights only.
        layers: names of the layers to train quantized; ``None`` = every supported layer.
        calibration_data: example inputs ``(n, ...)`` whose activations set the initial
            ranges (needs ``activation_bits``); a few hundred examples are enough.
        calibration: ``"minmax"``, ``"percentile"``, ``"mse"`` or a callable range rule.
        ema_decay: weight of the old range in the moving average, in [0, 1].

    Returns:
        A new, uncompiled model.

    Raises:
        TypeError / ValueError: as :func:`quantize_model`; ``activation_bits``, ``ema_decay``
            or ``calibration`` out of range; ``calibration_data`` without ``activation_bits``
            or of the wrong shape; a rule that returns a range not containing 0.

    Example:
        >>> qat = quantize_aware(model, bits=4, activation_bits=8,
        ...                      calibration_data=x_train[:256])   # doctest: +SKIP
    """
    check_model(model)
    bits = check_positive_int(bits, "bits", maximum=MAX_BITS)
    per_channel = check_bool(per_channel, "per_channel")
    if activation_bits is not None:
        check_positive_int(activation_bits, "activation_bits", minimum=2, maximum=MAX_BITS)
    ema_decay = check_real(ema_decay, "ema_decay", minimum=0.0, maximum=1.0)
    rule = _range_rule(calibration)
    if calibration_data is not None:
        if activation_bits is None:
            raise ValueError("calibration_data sets activation ranges: it needs activation_bits "
                             "(e.g. activation_bits=8)")
        calibration_data = _check_examples(model, calibration_data, "calibration_data")
    chosen = {l.name for l in _select(model, layers)}

    def new_layer(layer):
        if layer.name not in chosen:
            return None
        cls = _base_type(layer)
        return _QAT[cls].from_config({**_plain_config(layer), "bits": bits,
                                      "axis": _output_axis(layer) if per_channel else None,
                                      "activation_bits": activation_bits, "ema_decay": ema_decay})

    new = _rebuild(model, new_layer)
    if calibration_data is not None:
        calibrate(new, calibration_data, rule)
    return new


def _range_rule(calibration: Any) -> Callable:
    if callable(calibration):
        return calibration
    if not isinstance(calibration, str):
        raise TypeError(f"calibration must be a rule name or a callable rule(values, bits) -> "
                        f"(lo, hi), got {type(calibration).__name__}")
    if calibration not in RANGE_RULES:
        raise ValueError(f"calibration must be one of {', '.join(map(repr, RANGE_RULES))} or a "
                         f"callable, got {calibration!r}")
    return RANGE_RULES[calibration]


def _check_examples(model: keras.Model, data: Any, name: str) -> np.ndarray:
    """``data`` as a float32 batch whose example shape fits ``model``'s (single) input."""
    x = check_array(data, name)
    want = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if want is not None and (x.ndim != len(want) + 1 or
                             any(w is not None and w != h for w, h in zip(want, x.shape[1:]))):
        raise ValueError(f"{name} must have shape (n, {', '.join(map(str, want))}) "
                         f"to fit the model's input, got {x.shape}")
    return x.astype(np.float32)


def calibrate(model: keras.Model, data: Any, rule: str | Callable = "minmax"
              ) -> dict[str, tuple[float, float]]:
    """Set the activation ranges of a QAT model from its layers' outputs on ``data``, in place.

    Like ``fit``, this updates the model's state (its ``cnl_act_*`` weights) rather than
    building a new model. One pass on the model as it computes with no range known
    (fake-quantized weights, activations passed through), as a post-training calibrator
    does: each layer's range comes from the float activations of the layers before it.
    Training steps afterwards move the ranges by the moving average.

    Args:
        model: a model from :func:`quantize_aware` with ``activation_bits``.
        data: example inputs ``(n, ...)`` (a few hundred are enough).
        rule: ``"minmax"``, ``"percentile"``, ``"mse"`` or a callable
            ``rule(values, bits) -> (lo, hi)`` with ``lo <= 0 <= hi``.

    Returns:
        The range set for each layer, ``{layer name: (lo, hi)}`` (as :func:`activation_ranges`).

    Raises:
        ValueError: no layer quantizes its outputs; bad data or rule (see :func:`quantize_aware`).
    """
    check_model(model)
    rule = _range_rule(rule)
    targets = [l for l in model.layers if isinstance(l, _QATMixin) and l.activation_bits is not None]
    if not targets:
        raise ValueError(f"model {model.name!r} has no layer that quantizes its outputs: build it with "
                         f"quantize_aware(..., activation_bits=8)")
    x = _check_examples(model, data, "data")
    steps = [float(keras.ops.convert_to_numpy(l.cnl_act_steps)) for l in targets]
    for layer in targets:  # pass-through while the float activations are read
        layer.cnl_act_steps.assign(0.0)
    try:
        probe = keras.Model(model.inputs, [l.output for l in targets])
        outs = _backend.predict(probe, x, batch_size=256)
    except Exception:
        for layer, n in zip(targets, steps):
            layer.cnl_act_steps.assign(n)
        raise
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    checked = []
    for layer, out, n in zip(targets, outs, steps):
        got = rule(np.asarray(out, np.float32), layer.activation_bits)
        try:
            lo, hi = (float(v) for v in got)
        except (TypeError, ValueError):
            lo = hi = None
        if lo is None or not (np.isfinite(lo) and np.isfinite(hi) and lo <= 0.0 <= hi):
            for other, m in zip(targets, steps):
                other.cnl_act_steps.assign(m)
            if lo is None:
                raise TypeError(f"calibration rule must return two numbers (lo, hi), got {got!r}")
            raise ValueError(f"calibration rule must return a finite range lo <= 0 <= hi, got "
                             f"({lo}, {hi}) for layer {layer.name!r}")
        checked.append((layer, lo, hi))
    for layer, lo, hi in checked:
        layer.set_activation_range(lo, hi)
    return activation_ranges(model)  # as stored (float32)


def activation_ranges(model: keras.Model) -> dict[str, tuple[float, float] | None]:
    """The current output range of every activation-quantizing QAT layer (``None``: none yet)."""
    check_model(model)
    out = {}
    for l in model.layers:
        if isinstance(l, _QATMixin) and l.activation_bits is not None:
            known = float(keras.ops.convert_to_numpy(l.cnl_act_steps)) > 0
            out[l.name] = (float(keras.ops.convert_to_numpy(l.cnl_act_min)),
                           float(keras.ops.convert_to_numpy(l.cnl_act_max))) if known else None
    return out


# ---------------------------------------------------------------------------------------
# Keras glue: BatchNorm folding
# ---------------------------------------------------------------------------------------

_FOLDABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
             keras.layers.DepthwiseConv2D)


def _fold_target(bn: keras.layers.BatchNormalization) -> tuple[Any, str | None]:
    """The layer ``bn`` can be folded into, or ``(None, why not)``."""
    nodes = bn._inbound_nodes
    if len(nodes) != 1:
        return None, f"{bn.name!r} is called {len(nodes)} times"
    history = getattr(nodes[0].input_tensors[0], "_keras_history", None)
    producer = history.operation if history is not None else None
    if type(producer) not in _FOLDABLE:
        kind = type(producer).__name__ if producer is not None else "no layer"
        return None, f"{bn.name!r} follows {kind} (foldable: Dense, Conv1D/2D/3D, DepthwiseConv2D)"
    if len(producer._inbound_nodes) != 1 or len(producer._outbound_nodes) != 1:
        return None, f"{bn.name!r}: the output of {producer.name!r} is used elsewhere too"
    act = getattr(producer.activation, "__name__", "")
    if act != "linear":
        return None, f"{bn.name!r} follows {producer.name!r}, which applies {act} before it"
    channels_first = getattr(producer, "data_format", "channels_last") == "channels_first"
    ndim = len(producer.output.shape)
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    if axis is None or axis % ndim != (1 if channels_first else ndim - 1):
        return None, f"{bn.name!r} normalises axis {bn.axis}, not {producer.name!r}'s channels"
    return producer, None


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A new model with every foldable BatchNormalization folded into the layer before it.

    A BatchNormalization directly after a Dense, Conv1D/2D/3D or DepthwiseConv2D without an
    activation (``conv -> BN -> ReLU``, the usual order), whose input nothing else reads,
    is removed and the layer gets the folded kernel and bias of
    :func:`fold_batchnorm_weights` (a bias is added if it had none). The new model computes
    what ``model`` computes in inference (moving statistics), up to float rounding; it is
    what integer kernels run (TFLite's converter folds the same way). Other
    BatchNormalization layers stay. Built through ``surgery.rewrite``.

    Args:
        model: a built Sequential or functional model (not changed).

    Returns:
        A new, uncompiled model.

    Raises:
        TypeError / ValueError: not a built graph model; no BatchNormalization can be folded
            (the message says why for each).

    Example:
        >>> folded = fold_batchnorm(model)                     # doctest: +SKIP
    """
    from compressnet_lite import surgery

    check_model(model)
    bns = [l for l in surgery.graph_layers(model) if type(l) is keras.layers.BatchNormalization]
    targets, reasons = {}, []
    for bn in bns:
        producer, why = _fold_target(bn)
        if producer is None:
            reasons.append(why)
        else:
            targets[producer.name] = (producer, bn)
    if not targets:
        detail = "; ".join(reasons) if reasons else "it has none"
        raise ValueError(f"model {model.name!r} has no BatchNormalization to fold: {detail}")
    weights, dropped = {}, set()
    for name, (layer, bn) in targets.items():
        v = {k.split("/")[-1]: keras.ops.convert_to_numpy(w) for k, w in
             ((w.path, w) for w in bn.weights)}
        ones = np.ones(v["moving_mean"].shape, np.float32)
        bias = keras.ops.convert_to_numpy(layer.bias) if layer.use_bias else None
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        multiplier = layer.depth_multiplier if isinstance(layer, keras.layers.DepthwiseConv2D) else None
        k, b = fold_batchnorm_weights(kernel, bias, v.get("gamma", ones), v.get("beta", 0 * ones),
                                      v["moving_mean"], v["moving_variance"], bn.epsilon, multiplier)
        weights[name] = {"kernel": k, "bias": b}
        dropped.add(bn.name)

    def make(layer):
        if layer.name in dropped:
            return []
        if layer.name in targets:
            return type(layer).from_config({**layer.get_config(), "use_bias": True})
        return None

    return surgery.rewrite(model, make, weights=weights)


# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------

def quantized_layers(model: keras.Model) -> dict[str, QTensor]:
    """The :class:`QTensor` of every quantized layer of ``model``, by layer name."""
    check_model(model)
    return {l.name: l.qtensor() for l in model.layers if isinstance(l, _QuantizedMixin)}


def write_packed(model: keras.Model, path: str | os.PathLike) -> int:
    """Write ``model`` with :func:`compressnet_lite.storage.save_compressed`, fixed-width codes.

    The file is the library's one on-disk format; its integer streams are packed at their
    width (no entropy coding: what a device would flash). Used by
    :func:`quantization_report` to measure bytes instead of computing them on paper.

    Returns:
        The bytes the quantized kernels take in that file (their codes and scales), as its
        :class:`~compressnet_lite.storage.SizeReport` accounts them.

    Raises:
        ValueError: ``model`` has no quantized layer.
    """
    from compressnet_lite import storage

    qts = quantized_layers(model)
    if not qts:
        raise ValueError(f"model {model.name!r} has no quantized layer: run quantize_model first")
    report = storage.save_compressed(model, path, huffman=False)
    return sum(r.bytes for r in report.rows if r.layer in qts and r.weight.endswith("/kernel"))


class QuantReport(NamedTuple):
    """Bytes of the quantized kernels on disk versus the same kernels as float32, and accuracy."""

    bits: dict[str, int]
    float_bytes: int
    quantized_bytes: int
    accuracy: float | None

    @property
    def ratio(self) -> float:
        """How many times smaller the quantized kernels are."""
        return self.float_bytes / self.quantized_bytes

    def __str__(self) -> str:
        acc = "" if self.accuracy is None else f", accuracy {self.accuracy:.3f}"
        return (f"kernels: {self.float_bytes} B float32 -> {self.quantized_bytes} B packed "
                f"({self.ratio:.1f}x){acc}")


def quantization_report(model: keras.Model, x: Any = None, y: Any = None) -> QuantReport:
    """Bytes (measured by writing files) and optional accuracy of a quantized model.

    ``float_bytes`` is the size of a file holding the same kernels as float32;
    ``quantized_bytes`` the size of :func:`write_packed`'s file. Biases are left out of both.

    Args:
        model: a model from :func:`quantize_model`.
        x, y: test data for the accuracy (optional, both or neither).

    Raises:
        ValueError: no quantized layer, or only one of ``x`` and ``y``.
    """
    from compressnet_lite.metrics import accuracy

    if (x is None) != (y is None):
        raise ValueError("x and y must be given together (or neither)")
    qts = quantized_layers(model)
    with tempfile.TemporaryDirectory() as tmp:
        packed = write_packed(model, os.path.join(tmp, "codes.bin"))
        path = os.path.join(tmp, "float.bin")
        with open(path, "wb") as f:
            for qt in qts.values():
                f.write(dequantize(qt).astype(np.float32).tobytes())
        float_bytes = os.path.getsize(path)
    acc = None if x is None else accuracy(model, x, y)
    return QuantReport({k: qt.bits for k, qt in qts.items()}, float_bytes, packed, acc)


# ---------------------------------------------------------------------------------------
# Real int8 kernels: TensorFlow Lite, in compressnet_lite.tflite
# ---------------------------------------------------------------------------------------

_TFLITE_NAMES = ("to_tflite", "TFLiteRunner", "tflite_predict")


def __getattr__(name: str) -> Any:
    """``to_tflite``, ``TFLiteRunner`` and ``tflite_predict`` live in :mod:`compressnet_lite.tflite`;
    the names here are aliases, loaded on first use (``import quantization`` stays light)."""
    if name in _TFLITE_NAMES:
        from compressnet_lite import tflite

        return getattr(tflite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
