"""Compressed storage: a model's architecture and every weight in its cheapest exact encoding, in one file.

A compression method only saves bytes if the file format exploits what it did. The
encodings of :mod:`compressnet_lite.codecs` look at each weight ARRAY (not at how it was
produced) and store it in the smallest exact form: dense or sparse (relative indices or a
bitmask for the positions of the non-zeros), values as float32, as a codebook or as integer
codes with one scale per tensor or per channel, every integer stream packed or
entropy-coded. ``load_compressed`` returns bit-identical weights (a negative zero comes
back as ``+0.0``).

File format (version 2; version 1 files are read too): a zip archive holding

* ``manifest.json`` (deflated): format name and version, the Keras version that wrote it,
  and for each weight its path, shape, dtype, encoding and the (offset, length) of its
  streams in ``streams.bin``;
* ``model.json`` (deflated): the architecture, ``model.to_json()``; it is rebuilt with
  ``keras.saving.deserialize_keras_object(..., safe_mode=True)``, so a file can name only
  Keras' own layers and classes registered with Keras (never ``Lambda`` code, never pickle);
* ``streams.bin`` (stored): the concatenated binary streams;
* the zip comment: the SHA-256 of every byte before it. Any flipped byte or truncation is
  reported as :class:`CorruptFileError`; the zip's own CRC-32 per
  entry checks the entries again when they are read.

Weights are matched to the rebuilt model by their paths (``"fc1/kernel"``); a file whose
paths do not match the architecture is refused with the missing and extra paths named.

Models with transform layers (pruning masks, clustered or quantized layers) are stored as
the *plain* Keras model that computes the same outputs (see :func:`plain_model`): each
transform module registers, with :func:`register_transform`, how its layers become plain
Keras layers; the encodings then find the zeros, shared values and integer grids in the
arrays. A layer that is neither a Keras layer nor a class registered with Keras is rejected
with a ``ValueError`` naming it.

Example:
    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs))
    >>> report = compressed_size(model)
    >>> [w["path"] for w in report.weights], report.total == sum(r.bytes for r in report.rows)
    (['d/kernel', 'd/bias'], True)
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import importlib.util
import io
import json
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from compressnet_lite._checks import check_model
from compressnet_lite._zdict import ZDICT
from compressnet_lite.codecs import CorruptFileError, codec_set, decode_array, encode_array

__all__ = [
    "FORMAT", "VERSION", "CorruptFileError", "save_compressed", "load_compressed",
    "compressed_size", "SizeReport", "StreamSize", "plain_model", "register_transform",
    "register_library_classes",
]

FORMAT = "compressnet-lite"
VERSION = 3                # 3: compact container, rANS and context codecs, compact codebooks
READABLE = (1, 2, 3)       # versions this library reads (1 and 2: zip archives)
_MAGIC = b"CNL"            # version 3 on: the file starts with these bytes and the version
_EOCD = b"PK\x05\x06"      # zip end-of-central-directory signature
_HASH_LEN = 32             # SHA-256 in the zip comment


# ---------------------------------------------------------------------------------------
# Keras glue: plain model, file writing and reading, size accounting
# ---------------------------------------------------------------------------------------

def _is_keras_builtin(obj: Any) -> bool:
    return type(obj).__module__.startswith("keras.")


def _is_registered(obj: Any) -> bool:
    import keras

    name = keras.saving.get_registered_name(type(obj))
    return isinstance(name, str) and ">" in name


def _library_layers(model, names: tuple[str, ...]) -> list:
    from compressnet_lite.metrics import _flat_layers

    return [l for l in _flat_layers(model)
            if type(l).__module__.startswith("compressnet_lite.") and
            any(c.__name__ in names for c in type(l).__mro__)]


def _builtin_base(layer) -> type | None:
    import keras

    for cls in type(layer).__mro__:
        if cls.__module__.startswith("keras.") and issubclass(cls, keras.layers.Layer):
            return cls
    return None


def _to_builtin_layers(model):
    """Replace library layers that subclass a Keras layer (e.g. ``QuantizedDense``) by that
    Keras layer, holding the kernel the layer computes with (``layer.kernel``) and its bias."""
    import keras

    targets = {l.name for l in _library_layers(model, ("Layer",))
               if _builtin_base(l) not in (None, keras.layers.Layer) and hasattr(l, "kernel")}
    if not targets:
        return model

    from compressnet_lite import surgery

    layers = {l.name: l for l in _library_layers(model, ("Layer",)) if l.name in targets}

    def make(layer):
        if layer.name not in targets:
            return None
        base = _builtin_base(layer)
        keys = set(base.get_config(layer))
        return base.from_config({k: v for k, v in layer.get_config().items() if k in keys})

    # the effective kernel (layer.kernel: dequantized codes, codebook[index]) replaces the stored one
    return surgery.rewrite(model, make, weights={
        name: {"kernel": keras.ops.convert_to_numpy(layer.kernel)} for name, layer in layers.items()})


_TRANSFORMS: list[tuple[type, Callable]] = []


def register_transform(layer_class: type, to_plain: Callable) -> None:
    """Tell :func:`plain_model` how a model with ``layer_class`` layers becomes plain Keras.

    Each transform module calls this once per layer family it defines (pruning: masked
    layers -> ``strip``; clustering: clustered layers -> ``strip_clustering``;
    quantization: quantization-aware layers -> ``quantize_model``), so storage needs to know
    no module's classes.

    Args:
        layer_class: the class (or mixin) whose instances need converting.
        to_plain: ``to_plain(model) -> model``: a new model without such layers (the layers
            it produces may belong to another registered family, or be library layers that
            subclass a Keras layer, which :func:`plain_model` turns into that Keras layer).

    Raises:
        TypeError: ``layer_class`` is not a class or ``to_plain`` is not callable.
    """
    if not isinstance(layer_class, type):
        raise TypeError(f"layer_class must be a class, got {type(layer_class).__name__}")
    if not callable(to_plain):
        raise TypeError(f"to_plain must be callable, got {type(to_plain).__name__}")
    for i, (cls, _) in enumerate(_TRANSFORMS):
        if cls is layer_class:  # a module imported twice (reload): the newer function wins
            _TRANSFORMS[i] = (layer_class, to_plain)
            return
    _TRANSFORMS.append((layer_class, to_plain))


def plain_model(model: Any):
    """The model the file stores: plain Keras layers holding the weights the model computes with.

    The rule, each step only when the model needs it:

    1. every layer family registered with :func:`register_transform` (quantization-aware
       layers, pruning masks, clustered layers, ...) is converted by its module's function,
       until none is left;
    2. any other library layer that subclasses a Keras layer (``QuantizedDense`` ...) becomes
       that Keras layer with the layer's effective ``kernel`` and its bias; bookkeeping
       ``cnl_*`` variables are dropped.

    The storage encodings then recover the structure from the arrays themselves (zeros,
    shared values, integer grids). Other custom layers are kept only if registered with
    ``keras.saving.register_keras_serializable`` (they are rebuilt under safe_mode).

    Raises:
        ValueError: a ``Lambda`` layer (its Python code would have to be stored and run), or a
            layer that is neither a Keras layer nor a registered class.
    """
    import keras

    check_model(model)
    from compressnet_lite.metrics import _flat_layers

    done: set[type] = set()  # each family converted once (a nested model may keep some)
    while True:
        layers = _flat_layers(model)
        todo = [(cls, fn) for cls, fn in _TRANSFORMS
                if cls not in done and any(isinstance(l, cls) for l in layers)]
        if not todo:
            break
        cls, fn = todo[0]
        model = fn(model)
        done.add(cls)
    model = _to_builtin_layers(model)
    for layer in _flat_layers(model):
        if isinstance(layer, keras.layers.Lambda):
            raise ValueError(f"layer {layer.name!r} is a Lambda layer: the compressed format stores "
                             "no Python code; replace it with a built-in or registered layer")
        if not (_is_keras_builtin(layer) or _is_registered(layer)):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) is neither a Keras layer nor "
                "registered with keras.saving.register_keras_serializable; convert the model to "
                "plain layers first")
    return model


def register_library_classes() -> None:
    """Import every module of the library, so that its Keras-serializable classes are
    registered (needed to rebuild a model that uses them, from a ``.keras`` or ``.cnl`` file)."""
    import compressnet_lite

    for name in compressnet_lite._MODULES:
        if importlib.util.find_spec(f"compressnet_lite.{name}") is not None:
            importlib.import_module(f"compressnet_lite.{name}")


def _codecs_arg(huffman: bool, codecs: str | None) -> str:
    name = codecs if codecs is not None else ("all" if huffman else "fixed")
    codec_set(name)  # a clear error for an unknown name
    return name


def _encode_model(model, huffman: bool = True, codecs: str | None = None) -> tuple[bytes, "SizeReport"]:
    import keras

    codecs = _codecs_arg(huffman, codecs)
    model = plain_model(model)
    paths = [v.path for v in model.weights]
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    if repeated:
        raise ValueError(f"model {model.name!r} has several weights with the path {repeated[0]!r}: "
                         "the file matches weights by path; give the layers distinct names")
    entries, blob, rows, bounds = [], bytearray(), [], {}
    for var in model.weights:
        arr = np.asarray(keras.ops.convert_to_numpy(var))
        spec, streams, info = _encode_cached(arr, codecs)
        if spec["dtype"] == "<f4":
            del spec["dtype"]  # the default
        table = []
        for name, data in streams.items():
            table.append([name, len(data)])
            rows.append(StreamSize(_layer_of(var.path), var.path, name, len(data)))
            if name in info:
                bounds[(var.path, name)] = info[name]
            blob += data
        entries.append({"path": var.path, **spec, "streams": table})
    manifest = {"format": FORMAT, "version": VERSION, "keras": keras.__version__,
                "model": model.name, "codecs": codecs, "weights": entries}
    manifest_z = _deflate(json.dumps(manifest, separators=(",", ":")).encode())
    arch_z = _deflate(json.dumps(_architecture(model), separators=(",", ":")).encode())
    head = _MAGIC + bytes([VERSION]) + b"".join(_varint(len(x)) for x in (manifest_z, arch_z, blob))
    body = head + manifest_z + arch_z + bytes(blob)
    data = body + hashlib.sha256(body).digest()
    sizes = {"manifest.json": len(manifest_z), "model.json": len(arch_z)}
    report = _report(_normalized(manifest), rows, sizes, len(data), bounds)
    return data, report


_CACHE: "collections.OrderedDict[tuple, tuple[dict, dict, dict]]" = collections.OrderedDict()
_CACHE_BYTES = 64 << 20  # encoded bytes kept at most (the last arrays encoded)


def _encode_cached(arr: np.ndarray, codecs: str) -> tuple[dict, dict, dict]:
    """:func:`~compressnet_lite.codecs.encode_array`, remembering the last results: a
    pipeline measures the same arrays several times (every stage, with and without entropy
    coding, then saves them), and the search for the smallest encoding is the costly part."""
    key = (hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=16).digest(),
           arr.shape, arr.dtype.str, codecs)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        spec, streams, info = hit
        return json.loads(json.dumps(spec)), dict(streams), dict(info)
    info: dict = {}
    spec, streams = encode_array(arr, codecs=codecs, info=info)
    _CACHE[key] = (json.loads(json.dumps(spec)), dict(streams), dict(info))
    while _CACHE and sum(sum(len(b) for b in v[1].values()) for v in _CACHE.values()) > _CACHE_BYTES:
        _CACHE.popitem(last=False)
    return spec, streams, info


def _deflate(data: bytes) -> bytes:
    """Raw deflate (no zlib header) with the library's preset dictionary of typical Keras
    layer configs and manifest entries: a small model's architecture costs tens of bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=ZDICT)
    return c.compress(data) + c.flush()


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15, zdict=ZDICT)
    out = d.decompress(data, 1 << 28) + d.flush()
    if not d.eof or d.unused_data:
        raise CorruptFileError("damaged record: the deflated data do not end where they should")
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 56:
            raise CorruptFileError("damaged header")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _normalized(manifest: dict) -> dict:
    """A version-3 manifest in the layout of versions 1 and 2 (dtype given, stream offsets)."""
    out = dict(manifest)
    entries, offset = [], 0
    for e in manifest["weights"]:
        e = dict(e)
        e.setdefault("dtype", "<f4")
        table = []
        for name, length in e["streams"]:
            table.append([name, offset, length])
            offset += length
        e["streams"] = table
        entries.append(e)
    out["weights"] = entries
    out["streams_size"] = offset
    return out


def _architecture(model) -> dict:
    """The model's serialized architecture, without its compile settings (optimizer, loss,
    metrics: nothing a stored model needs, and they differ between otherwise equal models)."""
    import keras

    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


def _layer_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else path


def _verify_and_open(data: bytes) -> tuple[dict, str, bytes, dict[str, int]]:
    """Check the whole-file SHA-256 and the container; return (manifest, architecture JSON,
    streams, sizes of the manifest and architecture records)."""
    if data[:len(_MAGIC)] == _MAGIC:
        return _open_v3(data)
    tail = 22 + _HASH_LEN
    if len(data) < tail or data[-tail:-tail + 4] != _EOCD or \
            struct.unpack("<H", data[-_HASH_LEN - 2:-_HASH_LEN])[0] != _HASH_LEN:
        raise CorruptFileError("not a compressnet-lite file, or truncated (no compressnet-lite header, "
                               "no end-of-archive record with checksum)")
    if hashlib.sha256(data[:-_HASH_LEN]).digest() != data[-_HASH_LEN:]:
        raise CorruptFileError("checksum mismatch: the file is corrupted or truncated")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            arch = zf.read("model.json").decode()
            blob = zf.read("streams.bin")
            sizes = {i.filename: i.compress_size for i in zf.infolist()}
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as exc:
        raise CorruptFileError(f"damaged archive: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptFileError("not a compressnet-lite file (manifest has no format tag)")
    if manifest.get("version") not in (1, 2):
        raise CorruptFileError(f"unsupported format version {manifest.get('version')!r} in a zip "
                               "container (versions 1 and 2 are zip archives)")
    if manifest.get("streams_size") != len(blob):
        raise CorruptFileError("streams.bin has the wrong size")
    return manifest, arch, blob, sizes


def _open_v3(data: bytes) -> tuple[dict, str, bytes, dict[str, int]]:
    if len(data) < len(_MAGIC) + 4 + _HASH_LEN:
        raise CorruptFileError("truncated compressnet-lite file")
    version = data[len(_MAGIC)]
    if version not in READABLE:
        raise CorruptFileError(f"unsupported format version {version} (this library reads versions "
                               f"{', '.join(map(str, READABLE))}; a newer compressnet-lite wrote it)")
    if hashlib.sha256(data[:-_HASH_LEN]).digest() != data[-_HASH_LEN:]:
        raise CorruptFileError("checksum mismatch: the file is corrupted or truncated")
    pos = len(_MAGIC) + 1
    lengths = []
    for _ in range(3):
        n, pos = _read_varint(data, pos)
        lengths.append(n)
    if pos + sum(lengths) != len(data) - _HASH_LEN:
        raise CorruptFileError("the header's lengths do not match the file's size")
    m_end = pos + lengths[0]
    a_end = m_end + lengths[1]
    try:
        manifest = json.loads(_inflate(data[pos:m_end]))
        arch = _inflate(data[m_end:a_end]).decode()
    except (zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"damaged record: {exc}") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != FORMAT
            or manifest.get("version") != version):
        raise CorruptFileError("not a compressnet-lite file (manifest has no format tag)")
    try:
        manifest = _normalized(manifest)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"inconsistent manifest: {exc}") from None
    blob = data[a_end:len(data) - _HASH_LEN]
    if manifest["streams_size"] != len(blob):
        raise CorruptFileError("the streams do not add up to the file's streams section")
    return manifest, arch, blob, {"manifest.json": lengths[0], "model.json": lengths[1]}


def _read(path: Any) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    with open(path, "rb") as f:
        return f.read()


def _decode_weights(manifest: dict, blob: bytes) -> dict[str, np.ndarray]:
    arrays = {}
    try:
        for entry in manifest["weights"]:
            streams = {}
            for name, offset, length in entry["streams"]:
                if offset < 0 or offset + length > len(blob):
                    raise CorruptFileError(f"stream {name!r} of {entry['path']!r} lies outside the file")
                streams[name] = blob[offset:offset + length]
            if entry["path"] in arrays:
                raise CorruptFileError(f"the file holds weight {entry['path']!r} twice")
            arrays[entry["path"]] = decode_array(entry, streams)
    except CorruptFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CorruptFileError(f"inconsistent manifest: {exc}") from None
    return arrays


def _assign_by_path(model, arrays: dict[str, np.ndarray], manifest: dict) -> None:
    """Assign each of the model's weights the file's array of the same path."""
    import keras

    paths = [v.path for v in model.weights]
    missing = [p for p in paths if p not in arrays]
    extra = [p for p in arrays if p not in set(paths)]
    if missing or extra:
        written = manifest.get("keras")
        version = "" if written in (None, keras.__version__) else (
            f" (the file was written with Keras {written}, this is Keras {keras.__version__})")
        parts = []
        if missing:
            parts.append(f"the architecture has weights the file lacks: {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else ""))
        if extra:
            parts.append(f"the file has weights the architecture lacks: {', '.join(extra[:8])}"
                         + (" ..." if len(extra) > 8 else ""))
        raise CorruptFileError("weight paths do not match: " + "; ".join(parts) + version)
    for var in model.weights:
        arr = arrays[var.path]
        if tuple(var.shape) != arr.shape:
            raise CorruptFileError(f"weight {var.path!r} has shape {tuple(var.shape)}, file has {arr.shape}")
        var.assign(arr)


def save_compressed(model: Any, path: Any, *, huffman: bool = True,
                    codecs: str | None = None) -> "SizeReport":
    """Write ``model`` (architecture + weights) to ``path`` in the compressed format.

    Args:
        model: a built Keras model (a transformed model is stored as :func:`plain_model`).
        path: the file to write (conventionally ``*.cnl``).
        huffman: ``False``: no entropy coding (the same as ``codecs="fixed"``).
        codecs: the codecs the streams may use (:data:`compressnet_lite.codecs.CODECS`):
            ``"all"`` (default: Huffman, rANS, context-coded positions, compact codebooks,
            each only where it is smaller), ``"huffman"`` (Deep Compression's: Huffman-coded
            relative indices and codebook indices) or ``"fixed"``.

    Returns:
        The :class:`SizeReport` of the written file (``report.total`` is its size in bytes).

    Raises:
        TypeError / ValueError: not a built model; a layer that cannot be stored; an unknown
            ``codecs``.

    Example:
        >>> report = save_compressed(model, "model.cnl")          # doctest: +SKIP
        >>> report.total == os.path.getsize("model.cnl")           # doctest: +SKIP
        True
    """
    data, report = _encode_model(model, huffman, codecs)
    with open(os.fspath(path), "wb") as f:
        f.write(data)
    return report


def load_compressed(path: Any):
    """Read a file written by :func:`save_compressed`: the model with bit-identical weights.

    The architecture is rebuilt with Keras' deserialisation under ``safe_mode=True``;
    nothing in the file is executed.

    Weights are assigned by path; a file whose paths do not match the rebuilt architecture
    is refused, naming the missing and extra paths (and the two Keras versions when the
    file was written by another one).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: (a ``ValueError``) damaged, truncated, or not a compressnet-lite
            file; weight paths that do not match the architecture; a newer format version.
    """
    import keras

    manifest, arch, blob, _ = _verify_and_open(_read(path))
    arrays = _decode_weights(manifest, blob)
    if "compressnet_lite>" in arch:
        register_library_classes()
    try:
        model = keras.saving.deserialize_keras_object(json.loads(arch), safe_mode=True)
    except Exception as exc:  # unknown classes, bad config
        written = manifest.get("keras")
        version = "" if written in (None, keras.__version__) else (
            f" (the file was written with Keras {written}, this is Keras {keras.__version__})")
        raise CorruptFileError(f"cannot rebuild the architecture: {exc}{version}") from None
    _assign_by_path(model, arrays, manifest)
    return model


@dataclass(frozen=True)
class StreamSize:
    """Bytes of one stream of one weight (or of the container: manifest, architecture)."""

    layer: str
    weight: str
    stream: str
    bytes: int


CATEGORIES = ("positions", "codes", "tables", "codebooks", "scales", "raw floats", "biases",
              "manifest", "architecture", "container")
"""Where the bytes of a file go (:meth:`SizeReport.by_category`): the positions of the
non-zeros, integer codes (cluster indices, quantized codes), code tables (Huffman lengths,
rANS frequencies, mapped values), codebooks, per-channel scales, weights stored as float32,
all streams of the biases, and the file's manifest, architecture and container."""


def stream_category(weight: str, stream: str) -> str:
    """The :data:`CATEGORIES` entry of one stream of one weight."""
    if weight in ("manifest", "architecture", "container"):
        return weight
    if weight.rsplit("/", 1)[-1] == "bias":
        return "biases"
    if stream.endswith(".table"):
        return "tables"
    if stream.startswith("positions"):
        return "positions"
    if stream.startswith("values.codebook"):
        return "codebooks"
    if stream == "values.scales":
        return "scales"
    if stream == "values":
        return "raw floats"
    return "codes"


@dataclass
class SizeReport:
    """Where the bytes of a compressed file go.

    Attributes:
        total: size of the whole file in bytes (equals the size on disk).
        rows: one :class:`StreamSize` per stream, plus ``manifest``, ``architecture`` and
            ``container`` (header and checksum) rows; their bytes sum to ``total``.
        float32_bytes: 4 bytes per stored weight element: the uncompressed reference.
        weights: per weight: path, shape, layout, value kind, number of stored values.
        huffman: whether entropy coding was allowed.
        codecs: the codec set the file was written with (``"all"``, ``"huffman"``, ``"fixed"``).
        bounds: ``{(weight, stream): bytes}``, the order-0 entropy of what each integer
            stream (and each position stream) codes: no code that codes each symbol by its
            frequency alone needs fewer bytes (context models can, by using the order).
    """

    total: int
    rows: list[StreamSize]
    float32_bytes: int
    weights: list[dict] = field(default_factory=list)
    huffman: bool = True
    codecs: str = "all"
    bounds: dict = field(default_factory=dict)

    def by_category(self) -> dict[str, dict[str, float]]:
        """Per :data:`CATEGORIES` entry (those with bytes): ``{"bytes": ..., "bound": ...}``
        (``bound``: the entropy bounds of its streams that have one, plus the bytes of those
        that have none, e.g. float32 values and tables)."""
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            cat = stream_category(r.weight, r.stream)
            row = out.setdefault(cat, {"bytes": 0, "bound": 0.0})
            row["bytes"] += r.bytes
            row["bound"] += self.bounds.get((r.weight, r.stream), r.bytes)
        return {c: out[c] for c in CATEGORIES if c in out}

    def streams_table(self) -> str:
        """A plain-text table of every stream: weight, stream, category, bytes, entropy bound."""
        lines = [f"{'weight':<26}{'stream':<26}{'category':<13}{'bytes':>9}{'bound':>10}"]
        for r in self.rows:
            bound = self.bounds.get((r.weight, r.stream))
            b = "" if bound is None else f"{bound:,.0f}"
            lines.append(f"{r.weight:<26}{r.stream:<26}{stream_category(r.weight, r.stream):<13}"
                         f"{r.bytes:>9,}{b:>10}")
        lines.append("")
        lines.append(f"{'category':<26}{'bytes':>9}{'bound':>10}")
        for cat, row in self.by_category().items():
            lines.append(f"{cat:<26}{row['bytes']:>9,}{row['bound']:>10,.0f}")
        lines.append(f"{'total':<26}{self.total:>9,}")
        return "\n".join(lines)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weight streams alone (indices, codes, codebooks, Huffman tables, values)."""
        return sum(r.bytes for r in self.rows if r.layer != "(file)")

    @property
    def ratio(self) -> float:
        """float32 weights / whole file."""
        return self.float32_bytes / self.total

    @property
    def weight_ratio(self) -> float:
        """float32 weights / weight streams (the ratio Han et al. report)."""
        return self.float32_bytes / max(self.weight_bytes, 1)

    def by_layer(self) -> dict[str, int]:
        """Bytes per layer (the file's container rows under ``(file)``)."""
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.layer] = out.get(r.layer, 0) + r.bytes
        return out

    def stream_bytes(self, kind: str) -> int:
        """Bytes of all streams of one kind: ``"positions"``, ``"values"`` (incl. codebooks,
        codes, scales) or a stream name's first part."""
        def family(name: str) -> str:
            first = name.split(".")[0]
            return "values" if first in ("values", "codebook", "codes", "scales", "indices") else first
        return sum(r.bytes for r in self.rows if r.layer != "(file)" and family(r.stream) == kind)

    def per_weight(self) -> list[dict]:
        """Per weight: elements, stored values, kept fraction, and bits per stored value spent
        on positions (``index_bits``) and on values (``value_bits``: codebook, indices, codes,
        scales or raw floats), as in Table 2 of Han, Mao & Dally (2016)."""
        out = []
        for w in self.weights:
            rows = [r for r in self.rows if r.weight == w["path"]]
            index = sum(r.bytes for r in rows if r.stream.startswith("positions"))
            value = sum(r.bytes for r in rows) - index
            n = max(w["stored"], 1)
            out.append({"weight": w["path"], "size": w["size"], "stored": w["stored"],
                        "kept": w["stored"] / max(w["size"], 1), "index_bits": 8 * index / n,
                        "value_bits": 8 * value / n, "bytes": index + value, "encoding": w["encoding"]})
        return out

    def to_frame(self):
        """The rows as a pandas DataFrame (layer, weight, stream, bytes)."""
        import pandas as pd

        return pd.DataFrame([r.__dict__ for r in self.rows])

    def __str__(self) -> str:
        width = max([24] + [len(w["path"]) + 2 for w in self.weights])
        enc = max([34] + [len(w["encoding"]) + 2 for w in self.weights])
        lines = [f"{'weight':<{width}}{'encoding':<{enc}}{'bytes':>9}"]
        by_weight: dict[str, int] = {}
        for r in self.rows:
            by_weight[r.weight] = by_weight.get(r.weight, 0) + r.bytes
        for w in self.weights:
            lines.append(f"{w['path']:<{width}}{w['encoding']:<{enc}}{by_weight.get(w['path'], 0):>9,}")
        for r in self.rows:
            if r.layer == "(file)":
                lines.append(f"{r.weight:<{width}}{'':<{enc}}{r.bytes:>9,}")
        lines.append(f"{'total':<{width}}{'':<{enc}}{self.total:>9,}")
        lines.append(f"float32 weights {self.float32_bytes:,} B: {self.ratio:.1f}x smaller "
                     f"({self.weight_ratio:.1f}x counting weight streams only)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        try:
            return self.to_frame().to_html(index=False)
        except ImportError:
            return "<pre>" + str(self) + "</pre>"


def _describe(entry: dict) -> str:
    v = entry["values"]
    book = v.get("book", {}).get("kind", "f32")
    kind = {"raw": np.dtype(entry["dtype"]).name,
            "codebook": f"codebook {v.get('size')}" + ("" if book == "f32" else f" {book}"),
            "affine": "int codes, 1 scale",
            "affine_channel": f"int codes, scale/ch axis {v.get('axis', len(entry['shape']) - 1)}",
            }.get(v["kind"], v["kind"])
    for key in ("indices", "codes"):
        if key in v:
            kind += f" ({_int_codec(v[key])})"
    if entry["layout"] == "sparse":
        p = entry["positions"]
        if p["kind"] == "relative":
            pos = f"rel {p['bits']}b" + ("" if p["entries"]["codec"] == "fixed"
                                         else " " + _int_codec(p["entries"]))
        elif p["kind"] == "context":
            pos = f"mask ctx {p.get('model')}"
        else:
            pos = p["kind"]
        return f"sparse {pos}, {kind}"
    return kind


def _int_codec(spec: dict) -> str:
    return {"fixed": f"{spec.get('bits')} bit", "mapped": f"{spec.get('bits')} bit mapped",
            }.get(spec["codec"], spec["codec"])


def _report(manifest: dict, rows: list[StreamSize], sizes: dict[str, int], total: int,
            bounds: dict | None = None) -> SizeReport:
    rows = list(rows)
    rows.append(StreamSize("(file)", "manifest", "manifest.json", sizes["manifest.json"]))
    rows.append(StreamSize("(file)", "architecture", "model.json", sizes["model.json"]))
    rows.append(StreamSize("(file)", "container", "header+sha256", total - sum(r.bytes for r in rows)))
    weights, float32 = [], 0
    for e in manifest["weights"]:
        n = int(np.prod(e["shape"], dtype=np.int64))
        float32 += 4 * n
        weights.append({"path": e["path"], "shape": tuple(e["shape"]), "layout": e["layout"],
                        "values": e["values"]["kind"], "size": n,
                        "stored": int(e.get("nonzero", n)), "encoding": _describe(e)})
    codecs = manifest.get("codecs")
    if codecs is None:  # versions 1, 2: a flag, or (version 1) nothing
        huffman = manifest.get("huffman")
        if huffman is None:
            huffman = any(_codecs_of(e) & {"huffman"} for e in manifest["weights"])
        codecs = "huffman" if huffman else "fixed"
    return SizeReport(total, rows, float32, weights, codecs != "fixed", codecs, dict(bounds or {}))


def _codecs_of(spec: Any) -> set[str]:
    """Every ``"codec"`` named anywhere inside an entry of the manifest."""
    if isinstance(spec, dict):
        found = {spec["codec"]} if isinstance(spec.get("codec"), str) else set()
        for value in spec.values():
            found |= _codecs_of(value)
        return found
    if isinstance(spec, list):
        return set().union(*map(_codecs_of, spec)) if spec else set()
    return set()


def compressed_size(obj: Any, *, huffman: bool = True, codecs: str | None = None,
                    bounds: bool = False) -> SizeReport:
    """The size of ``obj`` in the compressed format, with a per-layer, per-stream breakdown.

    Args:
        obj: a Keras model (encoded in memory exactly as :func:`save_compressed` writes it)
            or the path of a compressed file (read and checked).
        huffman / codecs: for a model, the codecs allowed (see :func:`save_compressed`).
        bounds: for a file, also compute each stream's entropy bound (decodes every weight;
            a model's report always has them).

    Returns:
        A :class:`SizeReport` whose ``total`` equals the file's size on disk.

    Raises:
        TypeError: ``obj`` is neither a model nor a path.
        CorruptFileError: the file is damaged.
    """
    import keras

    if isinstance(obj, keras.Model):
        return _encode_model(obj, huffman, codecs)[1]
    if not isinstance(obj, (str, os.PathLike)):
        raise TypeError(f"obj must be a keras.Model or a file path, got {type(obj).__name__}")
    data = _read(obj)
    manifest, _, blob, sizes = _verify_and_open(data)
    rows = [StreamSize(_layer_of(e["path"]), e["path"], name, length)
            for e in manifest["weights"] for name, _, length in e["streams"]]
    report = _report(manifest, rows, sizes, len(data))
    if bounds:
        arrays = _decode_weights(manifest, blob)
        names = {(r.weight, r.stream) for r in rows}
        for path, arr in arrays.items():  # the encoder computes the bounds as it encodes
            info: dict = {}
            encode_array(arr, codecs=report.codecs, info=info)
            report.bounds.update({(path, k): v for k, v in info.items() if (path, k) in names})
    return report
