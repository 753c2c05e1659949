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


@pytest.mark.parametrize("codec_set", ["all", "huffman", "fixed"])
@pytest.mark.parametrize("name", list(_arrays()))
def test_every_encoding_round_trips_bit_exactly(name, codec_set):
    x, layout, kind = _arrays()[name]
    spec, streams = codecs.encode_array(x, codecs=codec_set)
    y = codecs.decode_array(spec, streams)
    assert y.dtype == x.dtype and y.shape == x.shape
    if name == "negative-zero":  # documented: a zero is stored as +0.0 whatever its sign
        np.testing.assert_array_equal(y, x)
        assert not np.signbit(y).any()
    else:
        assert y.tobytes() == x.tobytes()  # bit-exact
    if layout is not None and not (name == "very-sparse" and codec_set == "all"):
        assert spec["layout"] == layout  # (all codecs: 1-bit codes coded adaptively beat positions)
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
    assert size("sparse-clustered") <= size("sparse-clustered", codecs="huffman") \
        <= size("sparse-clustered", codecs="fixed")
    for name in arrays:  # a newer codec never makes an array larger
        assert size(name) <= size(name, codecs="huffman") <= size(name, codecs="fixed"), name




# ---------------------------------------------------------------------------- entropy coders

def _ints(kind, rng):
    if kind == "geometric":
        return rng.geometric(0.25, 6000) - 1
    if kind == "cluster-like":
        return np.clip(np.rint(rng.normal(16, 5, 4000)), 0, 31).astype(np.int64)
    if kind == "big-skewed":
        return np.minimum(rng.geometric(0.6, 120_000) - 1, 255)
    if kind == "sparse-alphabet":
        return rng.choice([0, 700, 3000], 3000, p=[0.8, 0.15, 0.05])
    return rng.integers(0, 4, 5)  # tiny


@pytest.mark.parametrize("kind", ["geometric", "cluster-like", "big-skewed", "sparse-alphabet", "tiny"])
def test_integer_streams_round_trip_and_newer_codecs_never_lose(kind):
    from compressnet_lite import huffman

    values = _ints(kind, np.random.default_rng(7))
    sizes = {}
    for name in ("fixed", "huffman", "all"):
        bounds = {}
        spec, streams = codecs.encode_ints(values, codecs=name, bounds=bounds)
        np.testing.assert_array_equal(codecs.decode_ints(spec, streams), values)
        sizes[name] = (sum(len(b) for b in streams.values()), spec["codec"])
        assert bounds["data"] == pytest.approx(huffman.entropy_bits(values) * values.size / 8)
    assert sizes["all"][0] <= sizes["huffman"][0] <= sizes["fixed"][0]
    if kind in ("big-skewed", "geometric"):  # Huffman's whole bits: the rANS coders beat it
        assert sizes["all"][1] in ("rans", "adaptive") and sizes["all"][0] < sizes["huffman"][0]


@pytest.mark.parametrize("codec", ["rans", "adaptive"])
def test_each_entropy_coder_near_the_empirical_entropy(codec):
    from compressnet_lite import huffman

    values = _ints("geometric", np.random.default_rng(8))
    only = codecs.CodecSet(frozenset({codec}))
    spec, streams = codecs.encode_ints(values, codecs=only)
    assert spec["codec"] == codec
    np.testing.assert_array_equal(codecs.decode_ints(spec, streams), values)
    entropy = huffman.entropy_bits(values) * values.size / 8
    symbols = int(values.max()) + 1
    # rANS: the frequency table, a 4-byte state; adaptive: the cost of learning the
    # distribution, about (symbols - 1) / 2 * log2(n) bits (Krichevsky & Trofimov)
    slack = {"rans": len(streams.get("table", b"")) + 8,
             "adaptive": (symbols - 1) / 2 * np.log2(values.size) / 8 + 16}[codec]
    assert entropy <= sum(len(b) for b in streams.values()) <= entropy + slack


def test_adaptive_decoding_detects_damage():
    values = _ints("geometric", np.random.default_rng(9))
    spec, streams = codecs.encode_ints(values, codecs=codecs.CodecSet(frozenset({"adaptive"})))
    data = bytearray(streams["data"])
    data[5] ^= 0x21
    with pytest.raises(codecs.CorruptFileError, match="damaged integer stream"):
        codecs.decode_ints(spec, {"data": bytes(data)})


def test_kt_probability_is_the_same_in_numpy_and_python():
    n0, n1 = np.meshgrid(np.arange(40), np.arange(40))
    vec = codecs.kt_probability(n0.ravel(), n1.ravel())
    scalar = [codecs.kt_probability(int(a), int(b)) for a, b in zip(n0.ravel(), n1.ravel())]
    assert vec.tolist() == scalar and vec.min() >= 1 and vec.max() <= 4095


# ---------------------------------------------------------------------------- context positions

def _structured_mask(rng, rows=64, cols=300):
    """Kept weights as pruning leaves them: some inputs (rows) and units (columns) dead,
    the others kept at different densities."""
    row_density = rng.choice([0.0, 0.05, 0.2], rows, p=[0.3, 0.4, 0.3])
    col_scale = rng.choice([0.0, 1.0, 2.0], cols, p=[0.2, 0.5, 0.3])
    return rng.random((rows, cols)) < row_density[:, None] * col_scale[None, :]


@pytest.mark.parametrize("model", codecs.CONTEXT_MODELS)
def test_context_coded_mask_round_trips(model):
    mask = _structured_mask(np.random.default_rng(10), 20, 30)
    p1 = codecs.adaptive_probabilities(mask.ravel().astype(np.int64), codecs.mask_contexts(mask, model))
    data = codecs.rans.encode_binary(mask.ravel(), p1)
    positions = codecs._decode_context_mask(data, mask.shape, model)
    np.testing.assert_array_equal(positions, np.flatnonzero(mask))


def test_context_coding_beats_the_order_0_bound_on_structured_positions():
    mask = _structured_mask(np.random.default_rng(11))
    w = np.where(mask, 0.25, 0.0).astype(np.float32)
    info = {}
    spec, streams = codecs.encode_array(w, info=info)
    assert spec["layout"] == "sparse" and spec["positions"]["kind"] == "context"
    assert len(streams["positions.mask"]) < 0.85 * info["positions.mask"]  # below order 0
    paper, paper_streams = codecs.encode_array(w, codecs="huffman")
    paper_positions = sum(len(b) for k, b in paper_streams.items() if k.startswith("positions"))
    assert len(streams["positions.mask"]) < paper_positions
    assert codecs.decode_array(spec, streams).tobytes() == w.tobytes()


def test_random_positions_keep_a_paper_code_when_context_does_not_help():
    # Uniformly random positions: no context can beat the order-0 bound by much, and the
    # chosen code is never larger than the relative indices with Huffman coding.
    rng = np.random.default_rng(12)
    w = np.where(rng.random((64, 300)) < 0.08, 0.5, 0.0).astype(np.float32)
    spec, streams = codecs.encode_array(w)
    _, paper = codecs.encode_array(w, codecs="huffman")
    assert sum(map(len, streams.values())) <= sum(map(len, paper.values()))
    assert codecs.decode_array(spec, streams).tobytes() == w.tobytes()


# ---------------------------------------------------------------------------- codebooks

@pytest.mark.parametrize("book", ["f16", "affine"])
def test_codebooks_on_a_grid_or_in_float16_are_stored_compactly(book):
    rng = np.random.default_rng(13)
    if book == "f16":
        centroids = rng.normal(0, 0.1, 32).astype(np.float16).astype(np.float32)
    else:
        centroids = (np.float32(0.1 / 127) * rng.choice(np.arange(-127, 128), 32, replace=False)
                     ).astype(np.float32)
    w = centroids[rng.integers(0, 32, (200, 50))]
    spec, streams = codecs.encode_array(w)
    assert spec["values"]["kind"] in ("codebook", "affine")
    if spec["values"]["kind"] == "codebook":
        assert spec["values"]["book"]["kind"] == book
        assert sum(len(b) for k, b in streams.items() if "codebook" in k) < 4 * 32 / 1.9
    assert codecs.decode_array(spec, streams).tobytes() == w.tobytes()
    _, f32 = codecs.encode_array(w, codecs="huffman")
    assert sum(map(len, streams.values())) <= sum(map(len, f32.values()))


def test_unknown_codec_set_is_refused():
    with pytest.raises(ValueError, match="codecs must be one of"):
        codecs.encode_array(np.zeros(3, np.float32), codecs="best")
