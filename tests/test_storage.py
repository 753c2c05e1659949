import hashlib
import os

import keras
import numpy as np
import pytest

from compressnet_lite import huffman, models, storage
from compressnet_lite.storage import CorruptFileError

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------- Huffman

def test_huffman_code_lengths_match_textbook_example():
    # Cormen et al., Introduction to Algorithms, sec. 16.3: a:45 b:13 c:12 d:16 e:9 f:5
    lengths = huffman.huffman_code_lengths([45, 13, 12, 16, 9, 5])
    assert lengths.tolist() == [1, 3, 3, 3, 4, 4]
    assert int((lengths * [45, 13, 12, 16, 9, 5]).sum()) == 224  # the optimal cost (x1000 bits)


@pytest.mark.parametrize("counts, expected", [
    ([5], [1]),
    ([0, 7, 0], [0, 1, 0]),
    ([1, 1], [1, 1]),
    ([1, 1, 2, 4], [3, 3, 2, 1]),
], ids=["one-symbol", "one-used-symbol", "two-equal", "dyadic"])
def test_huffman_code_lengths_small_cases(counts, expected):
    assert huffman.huffman_code_lengths(counts).tolist() == expected


def test_canonical_codes_are_prefix_free():
    codes = huffman.canonical_codes([1, 2, 3, 3])
    assert [format(int(c), "b").zfill(n) for c, n in zip(codes, [1, 2, 3, 3])] == ["0", "10", "110", "111"]
    with pytest.raises(ValueError, match="Kraft"):
        huffman.canonical_codes([1, 1, 1])


@pytest.mark.parametrize("dist", ["geometric", "uniform", "two-symbols", "long-codes"])
def test_huffman_round_trip_and_within_one_bit_of_entropy(dist):
    rng = np.random.default_rng(1)
    if dist == "geometric":
        s = rng.geometric(0.2, 20_000) - 1
    elif dist == "uniform":
        s = rng.integers(0, 32, 5_000)
    elif dist == "two-symbols":
        s = (rng.random(3_000) < 0.1).astype(int)
    else:  # Fibonacci-like counts force codes longer than the decoder's lookup table
        counts = [1, 1]
        while len(counts) < 26:
            counts.append(counts[-1] + counts[-2])
        s = np.repeat(np.arange(len(counts)), counts)
        rng.shuffle(s)
    payload, lengths = huffman.huffman_encode(s)
    if dist == "long-codes":
        assert lengths.max() > 20
    decoded = huffman.huffman_decode(payload, lengths, s.size)
    np.testing.assert_array_equal(decoded, s)
    counts = np.bincount(s)
    avg = (counts * lengths[:counts.size]).sum() / s.size
    h = huffman.entropy_bits(s)
    assert h - 1e-9 <= avg < h + 1
    assert len(payload) == -(-int((counts * lengths[:counts.size]).sum()) // 8)


def test_huffman_errors():
    with pytest.raises(ValueError, match="non-negative"):
        huffman.huffman_code_lengths([1, -1])
    with pytest.raises(ValueError, match="1-D"):
        huffman.huffman_code_lengths([])
    with pytest.raises(ValueError, match="non-negative integers"):
        huffman.huffman_encode(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="no code"):
        huffman.huffman_encode([0, 3], lengths=[1, 1])
    payload, lengths = huffman.huffman_encode([0, 1, 1, 2])
    with pytest.raises(ValueError, match="ended"):
        huffman.huffman_decode(payload, lengths, 50)
    with pytest.raises(ValueError, match="count must be >= 0"):
        huffman.huffman_decode(payload, lengths, -1)
    with pytest.raises(TypeError, match="count must be an integer"):
        huffman.huffman_decode(payload, lengths, 2.5)
    with pytest.raises(ValueError, match="no symbol has a code"):
        huffman.huffman_decode(payload, [0, 0], 1)
    with pytest.raises(ValueError, match="invalid Huffman code at bit 0"):
        huffman.huffman_decode(b"\xff", [2, 2], 1)  # codes 00, 01: a leading 1 is no code


def test_huffman_code_lengths_of_all_zero_counts_are_no_codes():
    assert huffman.huffman_code_lengths([0, 0, 0]).tolist() == [0, 0, 0]


def test_entropy_bits():
    assert huffman.entropy_bits([]) == 0.0
    assert huffman.entropy_bits([3, 3, 3]) == 0.0
    assert huffman.entropy_bits([0, 1, 2, 3]) == pytest.approx(2.0)


# ---------------------------------------------------------------------------- encodings

def test_relative_index_round_trip_with_fillers():
    positions = np.array([0, 1, 9, 200, 201, 5000])
    for bits in range(1, 10):
        entries = storage.relative_index_encode(positions, bits)
        assert entries.max() <= (1 << bits) - 1
        np.testing.assert_array_equal(storage.relative_index_decode(entries, bits), positions)
    assert storage.relative_index_encode([1, 4, 20], 3).tolist() == [1, 2, 7, 7, 1]


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
        storage.relative_index_encode(positions, bits)


@pytest.mark.parametrize("entries, bits, error, match", [
    ([-1], 3, ValueError, "integers in 0..7"),
    ([8], 3, ValueError, "integers in 0..7"),
    ([1.0], 3, ValueError, "integers in 0..7"),
    ([1], 0, ValueError, "bits must be in 1..62"),
], ids=["negative", "too-wide", "float", "zero-bits"])
def test_relative_index_decode_rejects_bad_input(entries, bits, error, match):
    with pytest.raises(error, match=match):
        storage.relative_index_decode(entries, bits)


def test_relative_index_of_no_positions_is_empty():
    assert storage.relative_index_encode([], 4).size == 0
    assert storage.relative_index_decode(np.zeros(0, np.int64), 4).size == 0


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
    spec, streams = storage.encode_array(x, huffman=use_huffman)
    y = storage.decode_array(spec, streams)
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
        return sum(len(b) for b in storage.encode_array(arrays[name][0], **kw)[1].values())

    assert size("clustered") < 0.2 * arrays["clustered"][0].nbytes      # 4-bit indices + codebook
    assert size("quantized-per-tensor") <= arrays["quantized-per-tensor"][0].nbytes // 4 + 16
    assert size("very-sparse") < 200
    assert size("sparse-clustered") <= size("sparse-clustered", huffman=False)


# ---------------------------------------------------------------------------- files

def _small_model(sparse=True):
    keras.utils.set_random_seed(0)
    m = models.seed_mlp()
    if sparse:
        w = m.get_weights()
        w[0] = np.where(np.abs(w[0]) > 0.15, w[0], 0).astype(np.float32)
        m.set_weights(w)
    return m


def test_save_load_round_trip_is_exact_and_size_matches_disk(tmp_path):
    m = _small_model()
    before = [w.copy() for w in m.get_weights()]
    path = tmp_path / "m.cnl"
    report = storage.save_compressed(m, path)
    assert report.total == os.path.getsize(path)
    assert sum(r.bytes for r in report.rows) == report.total
    assert storage.compressed_size(m).total == os.path.getsize(path)
    assert storage.compressed_size(path).total == os.path.getsize(path)
    assert storage.compressed_size(path).by_layer() == report.by_layer()
    assert set(report.by_layer()) == {"fc1", "fc2", "out", "(file)"}
    loaded = storage.load_compressed(path)
    assert [l.name for l in loaded.layers] == [l.name for l in m.layers]
    for a, b in zip(loaded.get_weights(), m.get_weights()):
        assert a.tobytes() == b.tobytes()
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), m.predict(x, verbose=0))
    for a, b in zip(m.get_weights(), before):  # the caller's model is untouched
        np.testing.assert_array_equal(a, b)
    assert report.weights[0]["layout"] == "sparse"
    assert "fc1/kernel" in str(report)
    assert list(report.to_frame().columns) == ["layer", "weight", "stream", "bytes"]


def test_file_is_deterministic(tmp_path):
    m = _small_model()
    storage.save_compressed(m, tmp_path / "a.cnl")
    storage.save_compressed(m, tmp_path / "b.cnl")
    assert (tmp_path / "a.cnl").read_bytes() == (tmp_path / "b.cnl").read_bytes()


def test_huffman_off_is_not_smaller():
    m = _small_model()
    assert storage.compressed_size(m, huffman=False).weight_bytes >= storage.compressed_size(m).weight_bytes


def test_conv_model_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    m = models.lenet5((8, 8, 1))
    storage.save_compressed(m, tmp_path / "c.cnl")
    loaded = storage.load_compressed(tmp_path / "c.cnl")
    for a, b in zip(loaded.get_weights(), m.get_weights()):
        assert a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnl") / "m.cnl"
    storage.save_compressed(_small_model(), path)
    return path.read_bytes()


def test_every_flipped_byte_is_rejected(small_file, tmp_path):
    # The SHA-256 in the zip comment covers every byte before it; a flip inside the hash
    # breaks the comparison too. Checked before any decoding, so this loop is fast.
    data = small_file
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        with pytest.raises(CorruptFileError):
            storage._verify_and_open(bytes(damaged))
    path = tmp_path / "flipped.cnl"
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    path.write_bytes(damaged)
    with pytest.raises(CorruptFileError, match="corrupted"):
        storage.load_compressed(path)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1, -33],
                         ids=["empty", "10-bytes", "half", "minus-1", "minus-33"])
def test_truncated_file_is_rejected(small_file, tmp_path, keep):
    n = len(small_file)
    keep = int(n * keep) if isinstance(keep, float) else (keep if keep >= 0 else n + keep)
    path = tmp_path / "t.cnl"
    path.write_bytes(small_file[:keep])
    with pytest.raises(CorruptFileError):
        storage.load_compressed(path)
    with pytest.raises(CorruptFileError):
        storage.compressed_size(path)


def test_other_files_are_rejected(tmp_path):
    m = _small_model()
    keras_path = tmp_path / "m.keras"
    m.save(keras_path)
    with pytest.raises(CorruptFileError, match="not a compressnet-lite file"):
        storage.load_compressed(keras_path)
    with pytest.raises(FileNotFoundError):
        storage.load_compressed(tmp_path / "missing.cnl")
    with pytest.raises(TypeError, match="obj must be"):
        storage.compressed_size(42)


def _rewrite(data: bytes, name: str, content: bytes) -> bytes:
    """Replace one archive entry and re-seal the checksum, as a forger would."""
    import io
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info in src.infolist():
            zf.writestr(info, content if info.filename == name else src.read(info.filename))
    raw = buf.getvalue()
    head = raw[:-2] + (32).to_bytes(2, "little")
    return head + hashlib.sha256(head).digest()


def test_code_in_a_resealed_file_is_never_executed(small_file, tmp_path):
    # A file whose checksum is valid but whose architecture names a Lambda layer: safe_mode
    # deserialisation refuses it instead of running its code.
    import json

    src = _small_model()
    inputs = keras.Input((64,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    arch = lam.to_json().encode()
    assert b"Lambda" in arch and json.loads(arch)
    path = tmp_path / "evil.cnl"
    path.write_bytes(_rewrite(small_file, "model.json", arch))
    with pytest.raises(CorruptFileError, match="architecture"):
        storage.load_compressed(path)
    path.write_bytes(_rewrite(small_file, "manifest.json", b'{"format": "compressnet-lite", "version": 99}'))
    with pytest.raises(CorruptFileError, match="version 99"):
        storage.load_compressed(path)
    del src


def test_lambda_and_unregistered_layers_cannot_be_saved(tmp_path):
    inputs = keras.Input((4,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t + 1)(inputs))
    with pytest.raises(ValueError, match="Lambda"):
        storage.save_compressed(lam, tmp_path / "l.cnl")

    class Unregistered(keras.layers.Dense):
        pass

    m = keras.Model(inputs, Unregistered(3, name="odd")(inputs))
    with pytest.raises(ValueError, match="'odd'.*register_keras_serializable"):
        storage.save_compressed(m, tmp_path / "u.cnl")
    with pytest.raises(TypeError, match="keras.Model"):
        storage.save_compressed("not a model", tmp_path / "x.cnl")


@keras.saving.register_keras_serializable(package="compressnet_lite_tests")
class _ScaledDense(keras.layers.Dense):
    """A registered custom layer: allowed in the file, rebuilt under safe_mode."""


def test_registered_custom_layer_round_trips(tmp_path):
    inputs = keras.Input((4,))
    m = keras.Model(inputs, _ScaledDense(3, name="scaled")(inputs))
    storage.save_compressed(m, tmp_path / "r.cnl")
    loaded = storage.load_compressed(tmp_path / "r.cnl")
    assert type(loaded.get_layer("scaled")) is _ScaledDense
    np.testing.assert_array_equal(loaded.get_weights()[0], m.get_weights()[0])


def _library_transforms():
    """Each library transform whose model the file must store as plain layers, exactly."""
    out = {}
    for name, module, fn in [
        ("pruned", "pruning", lambda cnl, m: cnl.pruning.prune(m, 0.8)),
        ("clustered", "clustering", lambda cnl, m: cnl.clustering.cluster_weights(m, 8)),
        ("quantized-per-channel", "quantization", lambda cnl, m: cnl.quantization.quantize_model(m, 8)),
        ("quantized-4bit-tensor", "quantization",
         lambda cnl, m: cnl.quantization.quantize_model(m, 4, per_channel=False)),
        ("quantize-aware", "quantization", lambda cnl, m: cnl.quantization.quantize_aware(m, 8)),
    ]:
        out[name] = (module, fn)
    return out


@pytest.mark.parametrize("name", list(_library_transforms()))
def test_transformed_models_are_stored_plain_and_exact(name, tmp_path):
    import importlib.util

    module, fn = _library_transforms()[name]
    if importlib.util.find_spec(f"compressnet_lite.{module}") is None:
        pytest.skip(f"compressnet_lite.{module} not available")
    import compressnet_lite as cnl

    model = fn(cnl, _small_model(sparse=False))
    report = storage.save_compressed(model, tmp_path / "t.cnl")
    loaded = storage.load_compressed(tmp_path / "t.cnl")
    assert all(type(l).__module__.startswith("keras.") for l in loaded.layers)
    x = np.random.default_rng(0).random((8, 64)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    kernels = [w for w in report.weights if w["path"].endswith("kernel")]
    expected = {"pruned": "sparse", "clustered": "codebook", "quantized-per-channel": "affine_channel",
                "quantized-4bit-tensor": "affine", "quantize-aware": "affine_channel"}[name]
    assert all(expected in (w["layout"], w["values"]) for w in kernels), [w["encoding"] for w in kernels]
    assert report.total < 0.45 * report.float32_bytes
