import numpy as np
import pytest

from compressnet_lite import codecs


# ---------------------------------------------------------------------------- bit packing

@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8, 12, 16, 33, 63])
def test_pack_bits_round_trip_msb_first(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2 ** min(bits, 62), 1001, dtype=np.int64)
    values[0] = (1 << bits) - 1 if bits < 63 else (1 << 62)
    data = codecs.pack_bits(values, bits)
    assert len(data) == -(-1001 * bits // 8)
    np.testing.assert_array_equal(codecs.unpack_bits(data, bits, 1001), values)


def test_pack_bits_by_hand():
    assert codecs.pack_bits([1, 2, 3, 0], 2) == bytes([0b01101100])
    assert codecs.pack_bits([5], 3) == bytes([0b10100000])          # zero-padded at the end
    assert codecs.pack_bits([1, 0, 0, 0, 0, 0, 0, 0, 1], 1) == bytes([0x80, 0x80])
    assert codecs.pack_bits([0, 0], 0) == b"" and codecs.pack_bits([], 5) == b""
    assert codecs.unpack_bits(b"", 0, 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("call, error, match", [
    (lambda: codecs.pack_bits([4], 2), ValueError, "values must be in 0..3 to fit in 2 bits"),
    (lambda: codecs.pack_bits([-1], 4), ValueError, "values must be in 0..15"),
    (lambda: codecs.pack_bits(np.array([1], np.int32) + 2 ** 20, 8), ValueError, "0..255"),
    (lambda: codecs.pack_bits([1.0], 4), TypeError, "values must be integers"),
    (lambda: codecs.pack_bits([1], 64), ValueError, "bits must be in 0..63"),
    (lambda: codecs.pack_bits([1], 2.0), TypeError, "bits must be an integer"),
    (lambda: codecs.unpack_bits(b"\x00", 4, 3), ValueError, "3 values of 4 bits need 2"),
    (lambda: codecs.unpack_bits(b"\x00", 4, -1), ValueError, "count must be >= 0"),
], ids=["too-wide", "negative", "widened-int32", "float", "bits-64", "bits-float", "short",
        "negative-count"])
def test_pack_bits_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------- affine grids

@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
def test_affine_fit_per_channel_recovers_quantize(bits):
    from compressnet_lite import quantization as Q

    rng = np.random.default_rng(bits)
    w = rng.normal(0, 0.1, (3, 3, 16, 2)).astype(np.float32)
    for axis, symmetric in [(2, True), (3, True), (2, False)]:
        qt = Q.quantize(w, bits=bits, symmetric=symmetric, axis=axis)
        d = Q.dequantize(qt).ravel()
        channel = codecs._channel_ids(np.arange(d.size), w.shape, axis)
        fit = codecs.affine_fit(d, channel, w.shape[axis])
        assert fit is not None, (axis, symmetric)
        scales, k = fit
        assert (scales[channel] * k).astype(np.float32).tobytes() == d.tobytes()
        assert np.abs(k).max() < 2 ** bits


def test_affine_fit_refuses_values_off_any_grid():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(300, 40)).astype(np.float32)
    assert codecs.affine_fit(w.ravel()) is None
    assert codecs.affine_fit(w.ravel(), np.arange(w.size) % 40, 40) is None
    scales, k = codecs.affine_fit(np.zeros(5, np.float32))  # all zero: codes 0
    assert k.tolist() == [0] * 5 and scales.tolist() == [1.0]


def test_depthwise_kernel_codes_on_axis_2():
    # DepthwiseConv2D kernels are (kh, kw, channels, multiplier): per-channel scales on axis 2.
    from compressnet_lite import quantization as Q

    w = np.random.default_rng(0).normal(0, 0.2, (3, 3, 24, 1)).astype(np.float32)
    w *= np.linspace(0.1, 3, 24, dtype=np.float32)[None, None, :, None]
    q = Q.dequantize(Q.quantize(w, bits=8, axis=2))
    spec, streams = codecs.encode_array(q)
    assert spec["values"]["kind"] == "affine_channel"
    assert spec["values"]["axis"] == 2 and spec["values"]["channels"] == 24
    assert spec["values"]["scale_dtype"] == "<f4" and len(streams["values.scales"]) == 4 * 24
    assert sum(len(b) for b in streams.values()) <= w.size + 4 * 24
    assert codecs.decode_array(spec, streams).tobytes() == q.tobytes()


# ---------------------------------------------------------------------------- encodings

def test_relative_index_round_trip_with_fillers():
    positions = np.array([0, 1, 9, 200, 201, 5000])
    for bits in range(1, 10):
        entries = codecs.relative_index_encode(positions, bits)
        assert entries.max() <= (1 << bits) - 1
        np.testing.assert_array_equal(codecs.relative_index_decode(entries, bits), positions)
    assert codecs.relative_index_encode([1, 4, 20], 3).tolist() == [1, 2, 7, 7, 1]


@pytest.mark.parametrize("positions, bits, error, match", [
    ([5, 2], 3, ValueError, "increasing order"),
    ([2, 2], 3, ValueError, "increasing order"),
    ([-1, 2], 3, ValueError, "non-negative integers"),
    ([0.5, 2.0], 3, ValueError, "non-negative integers"),
    ([[1, 2]], 3, ValueError, "positions must have 1 dimensions"),
    ([1, 2], 0, ValueError, "bits must be in 1..62"),
    ([1, 2], 2.0, TypeError, "bits must be an integer"),
], ids=["unsorted", "repeated", "negative", "float", "2-D", "zero-bits", "float-bits"])
def test_relative_index_encode_rejects_bad_input(positions, bits, error, match):
    with pytest.raises(error, match=match):
        codecs.relative_index_encode(positions, bits)


@pytest.mark.parametrize("entries, bits, error, match", [
    ([-1], 3, ValueError, "integers in 0..7"),
    ([8], 3, ValueError, "integers in 0..7"),
    ([1.0], 3, ValueError, "integers in 0..7"),
    ([1], 0, ValueError, "bits must be in 1..62"),
], ids=["negative", "too-wide", "float", "zero-bits"])
def test_relative_index_decode_rejects_bad_input(entries, bits, error, match):
    with pytest.raises(error, match=match):
        codecs.relative_index_decode(entries, bits)


def test_relative_index_of_no_positions_is_empty():
    assert codecs.relative_index_encode([], 4).size == 0
    assert codecs.relative_index_decode(np.zeros(0, np.int64), 4).size == 0


def _arrays():
    """One array per encoding the format has, each built the way a transform would build it."""
    rng = np.random.default_rng(0)  # its own generator: the same arrays whichever tests ran before
    w = rng.normal(0, 0.1, (64, 40)).astype(np.float32)
    pruned = np.where(np.abs(w) > 0.15, w, 0).astype(np.float32)
    codebook = np.sort(rng.normal(0, 0.1, 16)).astype(np.float32)
    clustered = codebook[rng.integers(0, 16, w.shape)]
    scale = np.float32(0.0037)
    q = rng.integers(-127, 128, w.shape)
    per_channel = (rng.random(40) * 0.01).astype(np.float32)
    very_sparse = np.zeros((300, 100), np.float32)
    very_sparse[rng.integers(0, 300, 40), rng.integers(0, 100, 40)] = 1.5
    negzero = np.zeros((4, 4), np.float32)
    negzero[1, 2] = -0.0
    return {
        "dense-float": (w, "dense", "raw"),
        "sparse-float": (pruned, "sparse", "raw"),
        "clustered": (clustered, "dense", "codebook"),
        "sparse-clustered": (np.where(pruned != 0, clustered, 0).astype(np.float32),  # ~87% zeros
                             "sparse", "codebook"),
        "quantized-per-tensor": ((scale * q).astype(np.float32), "dense", "affine"),
        "quantized-per-channel": ((per_channel * (q - 3)).astype(np.float32), "dense", "affine_channel"),
        "quantized-float64-scale": ((0.00123456789 * q).astype(np.float32), "dense", "affine"),
        "very-sparse": (very_sparse, "sparse", None),
        "all-zero": (np.zeros((8, 8), np.float32), None, None),
        "negative-zero": (negzero, None, None),
        "bias": (rng.normal(size=40).astype(np.float32), "dense", "raw"),
        "int32": (q.astype(np.int32), "dense", "raw"),
        "scalar": (np.array(3.5, np.float32), None, None),
        "conv": (rng.normal(size=(3, 3, 4, 8)).astype(np.float32), "dense", "raw"),
    }


@pytest.mark.parametrize("use_huffman", [True, False], ids=["huffman", "fixed"])
@pytest.mark.parametrize("name", list(_arrays()))
def test_every_encoding_round_trips_bit_exactly(name, use_huffman):
    x, layout, kind = _arrays()[name]
    spec, streams = codecs.encode_array(x, huffman=use_huffman)
    y = codecs.decode_array(spec, streams)
    assert y.dtype == x.dtype and y.shape == x.shape
    if name == "negative-zero":  # documented: a zero is stored as +0.0 whatever its sign
        np.testing.assert_array_equal(y, x)
        assert not np.signbit(y).any()
    else:
        assert y.tobytes() == x.tobytes()  # bit-exact
    if layout is not None:
        assert spec["layout"] == layout
    if kind is not None:
        assert spec["values"]["kind"] == kind
    assert sum(len(b) for b in streams.values()) <= x.nbytes


def test_encodings_are_smaller_than_float32_as_expected():
    arrays = _arrays()
    def size(name, **kw):
        return sum(len(b) for b in codecs.encode_array(arrays[name][0], **kw)[1].values())

    assert size("clustered") < 0.2 * arrays["clustered"][0].nbytes      # 4-bit indices + codebook
    assert size("quantized-per-tensor") <= arrays["quantized-per-tensor"][0].nbytes // 4 + 16
    assert size("very-sparse") < 200
    assert size("sparse-clustered") <= size("sparse-clustered", huffman=False)


