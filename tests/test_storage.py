import hashlib
import json
import os

import keras
import numpy as np
import pytest

from compressnet_lite import codecs, models, storage
from compressnet_lite.storage import CorruptFileError


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


def _records(data: bytes) -> list[bytes]:
    """The three records of a version-3 file: manifest and architecture (inflated), streams."""
    pos, lengths = 4, []
    for _ in range(3):
        n, pos = storage._read_varint(data, pos)
        lengths.append(n)
    out = []
    for n in lengths:
        out.append(data[pos:pos + n])
        pos += n
    return [storage._inflate(out[0]), storage._inflate(out[1]), out[2]]


def _rewrite(data: bytes, name: str, content: bytes, version: int = 3) -> bytes:
    """Replace the manifest or the architecture and re-seal the checksum, as a forger would."""
    manifest, arch, blob = _records(data)
    manifest, arch = (content, arch) if name == "manifest.json" else (manifest, content)
    records = [storage._deflate(manifest), storage._deflate(arch), blob]
    body = b"CNL" + bytes([version]) + b"".join(storage._varint(len(r)) for r in records) + b"".join(records)
    return body + hashlib.sha256(body).digest()


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
    del src


def test_files_of_a_newer_version_are_refused_clearly(small_file, tmp_path):
    path = tmp_path / "future.cnl"
    manifest = _manifest(small_file)
    path.write_bytes(_rewrite(small_file, "manifest.json", json.dumps(manifest).encode(), version=99))
    with pytest.raises(CorruptFileError, match="unsupported format version 99 .*newer compressnet-lite"):
        storage.load_compressed(path)
    manifest["format"] = "something-else"
    path.write_bytes(_rewrite(small_file, "manifest.json", json.dumps(manifest).encode()))
    with pytest.raises(CorruptFileError, match="no format tag"):
        storage.load_compressed(path)


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


# ---------------------------------------------------------------------------- format versions

DATA = os.path.join(os.path.dirname(__file__), "data")


def test_files_of_format_version_1_still_load():
    # tests/data/format_v1.cnl was written by the library's format version 1 (zip container,
    # float64 per-channel scales on the last axis, 8-bit Huffman tables).
    path = os.path.join(DATA, "format_v1.cnl")
    report = storage.compressed_size(path)
    assert report.total == os.path.getsize(path) and report.huffman is True
    loaded = storage.load_compressed(path)
    with np.load(os.path.join(DATA, "format_v1_weights.npz")) as f:
        for var in loaded.weights:
            assert np.asarray(var).tobytes() == f[var.path.replace("/", "__")].tobytes(), var.path
    with np.load(os.path.join(DATA, "format_v1_io.npz")) as f:
        np.testing.assert_allclose(loaded.predict(f["x"], verbose=0), f["y"], atol=1e-6)


# ---------------------------------------------------------------------------- weights by path

def _manifest(data: bytes) -> dict:
    return json.loads(_records(data)[0])


def test_weights_are_matched_by_path_not_by_position(small_file, tmp_path):
    manifest_json, arch, blob = _records(small_file)
    manifest = json.loads(manifest_json)
    segments, pos = [], 0
    for entry in manifest["weights"]:  # each weight's streams follow one another
        n = sum(length for _, length in entry["streams"])
        segments.append(blob[pos:pos + n])
        pos += n
    manifest["weights"] = manifest["weights"][::-1]  # same weights, other order
    records = [storage._deflate(json.dumps(manifest).encode()), storage._deflate(arch),
               b"".join(segments[::-1])]
    body = b"CNL\x03" + b"".join(storage._varint(len(r)) for r in records) + b"".join(records)
    path = tmp_path / "reordered.cnl"
    path.write_bytes(body + hashlib.sha256(body).digest())
    loaded = storage.load_compressed(path)
    for a, b in zip(loaded.get_weights(), _small_model().get_weights()):
        assert a.tobytes() == (b + np.float32(0)).tobytes()


def test_paths_that_do_not_match_are_refused_by_name(small_file, tmp_path):
    manifest = _manifest(small_file)
    manifest["weights"][0]["path"] = "dense_9/kernel"
    manifest["keras"] = "2.99.0"
    path = tmp_path / "renamed.cnl"
    path.write_bytes(_rewrite(small_file, "manifest.json", json.dumps(manifest).encode()))
    with pytest.raises(CorruptFileError, match=r"lacks: fc1/kernel.*lacks: dense_9/kernel.*Keras 2\.99\.0"):
        storage.load_compressed(path)
    manifest["weights"][0]["path"] = "fc2/kernel"  # the same path twice
    path.write_bytes(_rewrite(small_file, "manifest.json", json.dumps(manifest).encode()))
    with pytest.raises(CorruptFileError, match="holds weight 'fc2/kernel' twice"):
        storage.load_compressed(path)


def test_repeated_weight_paths_cannot_be_saved(tmp_path):
    inputs = keras.Input((4,))
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="block")
    twin = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="block2")
    m = keras.Model(inputs, twin(inner(inputs)))
    paths = [v.path for v in m.weights]
    if len(set(paths)) == len(paths):
        pytest.skip("this Keras gives nested layers distinct paths")
    with pytest.raises(ValueError, match="several weights with the path"):
        storage.save_compressed(m, tmp_path / "twins.cnl")


# ---------------------------------------------------------------------------- the huffman flag

def test_huffman_flag_is_a_field_not_a_word_in_the_file(tmp_path):
    # A layer named "huffman" once made compressed_size(path) report Huffman coding.
    inputs = keras.Input((8,))
    m = keras.Model(inputs, keras.layers.Dense(3, name="huffman")(inputs))
    storage.save_compressed(m, tmp_path / "named.cnl", huffman=False)
    assert storage.compressed_size(tmp_path / "named.cnl").huffman is False
    storage.save_compressed(m, tmp_path / "named.cnl", huffman=True)
    assert storage.compressed_size(tmp_path / "named.cnl").huffman is True


# ---------------------------------------------------------------------------- depthwise kernels

def _depthwise_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 1, name="expand")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw2")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_quantized_depthwise_kernels_are_int_codes_with_scales_on_axis_2(tmp_path):
    import compressnet_lite as cnl

    m = _depthwise_model()
    w = m.get_weights()  # give each channel its own range, as trained kernels have
    w[2] = w[2] * np.linspace(0.2, 2, 16, dtype=np.float32)[None, None, :, None]
    m.set_weights(w)
    q = cnl.quantization.quantize_model(m, 8)
    report = storage.save_compressed(q, tmp_path / "dw.cnl")
    by_path = {e["path"]: e for e in report.weights}
    for name, channels, mult in (("dw", 16, 1), ("dw2", 16, 2)):
        entry = by_path[f"{name}/kernel"]
        assert entry["values"] == "affine_channel", entry["encoding"]
        assert "axis 2" in entry["encoding"]
        kernel_bytes = sum(r.bytes for r in report.rows if r.weight == f"{name}/kernel")
        assert kernel_bytes <= 9 * channels * mult + 4 * channels  # int8 codes + float32 scales
    loaded = storage.load_compressed(tmp_path / "dw.cnl")
    for a, b in zip(loaded.get_weights(), storage.plain_model(q).get_weights()):
        assert a.tobytes() == b.tobytes()


def test_mobilenet_v2_depthwise_kernels_are_stored_as_int8_codes():
    # The case that showed the defect: MobileNetV2 (alpha 0.35) quantized to 8 bits, whose
    # DepthwiseConv2D kernels fell back to raw float32. Built offline, no training needed.
    import compressnet_lite as cnl

    net = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                         classes=10)
    depthwise = [l.name for l in net.layers if isinstance(l, keras.layers.DepthwiseConv2D)]
    q = cnl.quantization.quantize_model(net, 8, layers=depthwise)
    assert len(depthwise) == 17
    for name in depthwise:
        layer = q.get_layer(name)
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        spec, streams = codecs.encode_array(kernel)
        assert spec["values"]["kind"] == "affine_channel" and spec["values"]["axis"] == 2, name
        assert spec["values"]["channels"] == kernel.shape[2]
        assert sum(len(b) for b in streams.values()) <= kernel.size + 4 * kernel.shape[2]


def test_compile_settings_are_not_stored(tmp_path):
    m = _small_model()
    storage.save_compressed(m, tmp_path / "plain.cnl")
    models.compile_model(m)
    storage.save_compressed(m, tmp_path / "compiled.cnl")
    assert (tmp_path / "plain.cnl").read_bytes() == (tmp_path / "compiled.cnl").read_bytes()


# ---------------------------------------------------------------------------- format version 3

def test_container_and_records_are_small(tmp_path):
    m = models.lenet_300_100(input_shape=(64,))
    report = storage.save_compressed(m, tmp_path / "l.cnl")
    cats = report.by_category()
    assert cats["architecture"]["bytes"] < 120   # deflated against the preset dictionary
    assert cats["container"]["bytes"] < 48       # header + SHA-256
    assert cats["manifest"]["bytes"] < 200
    assert sum(c["bytes"] for c in cats.values()) == report.total == (tmp_path / "l.cnl").stat().st_size
    assert (tmp_path / "l.cnl").read_bytes()[:4] == b"CNL\x03"


@pytest.mark.parametrize("codecs", ["all", "huffman", "fixed"])
def test_codec_sets_round_trip_and_order(codecs, tmp_path):
    m = _small_model()
    report = storage.save_compressed(m, tmp_path / f"{codecs}.cnl", codecs=codecs)
    assert report.codecs == codecs == storage.compressed_size(tmp_path / f"{codecs}.cnl").codecs
    loaded = storage.load_compressed(tmp_path / f"{codecs}.cnl")
    for a, b in zip(loaded.get_weights(), m.get_weights()):
        assert a.tobytes() == (b + np.float32(0)).tobytes()
    sizes = {c: storage.compressed_size(m, codecs=c).total for c in ("all", "huffman", "fixed")}
    assert sizes["all"] <= sizes["huffman"] <= sizes["fixed"]
    with pytest.raises(ValueError, match="codecs must be one of"):
        storage.compressed_size(m, codecs="zip")


def test_entropy_bounds_of_a_file_match_those_of_its_model(tmp_path):
    m = _small_model()
    report = storage.save_compressed(m, tmp_path / "b.cnl")
    from_file = storage.compressed_size(tmp_path / "b.cnl", bounds=True)
    assert report.bounds and from_file.bounds == pytest.approx(report.bounds)
    assert storage.compressed_size(tmp_path / "b.cnl").bounds == {}
    for (weight, stream), bound in report.bounds.items():
        row = next(r for r in report.rows if (r.weight, r.stream) == (weight, stream))
        if storage.stream_category(weight, stream) == "positions" and "ctx" not in str(report):
            assert row.bytes >= bound - 1e-6
    text = report.streams_table()
    assert "category" in text and "fc1/kernel" in text
