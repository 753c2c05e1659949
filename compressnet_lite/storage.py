"""Compressed storage: every weight in its cheapest exact encoding, entropy-coded, in one file.

A compression method only saves bytes if the file format exploits what it did. This
module looks at each weight ARRAY (not at how it was produced) and stores it in the
smallest of these exact encodings:

* **dense**: the float32 values as they are;
* **sparse**: the positions of the non-zeros, as Deep Compression's *relative indices*
  (the gap since the previous non-zero in ``b`` bits; a gap too long for ``b`` bits is
  bridged by filler entries) or as a *bitmask* (one bit per element), whichever is
  smaller, plus the non-zero values;
* values as **raw** float32, as a **codebook** (the distinct values, exact float32, plus
  one small index per value: k-means clustering / weight sharing), or as **affine**
  integer codes with a scale per tensor or per output channel (``w = scale * k``: what
  quantize-then-dequantize leaves);
* every integer stream (relative indices, codebook indices, integer codes) packed at its
  bit width or **Huffman-coded** (canonical code, :mod:`compressnet_lite.huffman`),
  whichever is smaller.

Every encoding is lossless on the stored float32 arrays: ``load_compressed`` returns
bit-identical weights, except that a negative zero comes back as ``+0.0`` (equal as a
number; masking by multiplication, ``w * mask``, leaves ``-0.0`` where ``w < 0``, and
storing those signs would cost a value per pruned weight).

File format (version 1): a zip archive holding

* ``manifest.json`` (deflated): format name and version, and for each weight its path,
  shape, dtype, encoding and the (offset, length) of its streams in ``streams.bin``;
* ``model.json`` (deflated): the architecture, ``model.to_json()``; it is rebuilt with
  ``keras.saving.deserialize_keras_object(..., safe_mode=True)``, so a file can name only
  Keras' own layers and classes registered with Keras (never ``Lambda`` code, never pickle);
* ``streams.bin`` (stored): the concatenated binary streams;
* the zip comment: the SHA-256 of every byte before it. Any flipped byte or truncation is
  reported as :class:`CorruptFileError`; the zip's own CRC-32 per
  entry checks the entries again when they are read.

Models with transform layers (pruning masks, clustered or quantized layers) are stored as
the *plain* Keras model that computes the same outputs (see :func:`plain_model` for the
rule); the encodings find the zeros, shared values and integer grids in its arrays. A layer
that is neither a Keras layer nor a class registered with Keras is rejected with a
``ValueError`` naming it.

Example:
    >>> import numpy as np
    >>> w = np.zeros((100, 10), np.float32); w[::7, 3] = 0.5
    >>> spec, streams = encode_array(w)
    >>> spec["layout"], spec["positions"]["kind"], spec["values"]["kind"]
    ('sparse', 'relative', 'affine')
    >>> np.array_equal(decode_array(spec, streams), w)
    True
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compressnet_lite._checks import check_array, check_model, check_positive_int
from compressnet_lite.huffman import (
    huffman_code_lengths, huffman_decode, huffman_encode, pack_bits, unpack_bits,
)

__all__ = [
    "FORMAT", "VERSION", "CorruptFileError", "relative_index_encode", "relative_index_decode",
    "encode_ints", "decode_ints", "encode_array", "decode_array", "save_compressed",
    "load_compressed", "compressed_size", "SizeReport", "plain_model", "register_library_classes",
]

FORMAT = "compressnet-lite"
VERSION = 1
MAX_INDEX_BITS = 12        # widest relative-index width tried
MAX_CODEBOOK = 1 << 16     # most distinct values a codebook / affine code may have
_EOCD = b"PK\x05\x06"      # zip end-of-central-directory signature
_HASH_LEN = 32             # SHA-256 in the zip comment


class CorruptFileError(ValueError):
    """The compressed file is damaged, truncated, or not a compressnet-lite file."""


# ---------------------------------------------------------------------------------------
# Array math: relative indices, integer streams, value encodings (NumPy only)
# ---------------------------------------------------------------------------------------

def relative_index_encode(positions: Any, bits: int) -> np.ndarray:
    """Deep Compression's relative indices: each non-zero's gap since the previous one.

    The gap ``g`` (zeros skipped) must fit in ``bits`` bits. Symbol ``M = 2**bits - 1`` is
    reserved as a *filler*: "skip M positions, no value". A gap ``g`` is written as
    ``g // M`` fillers followed by ``g % M``. (Han et al. store a filler as an explicit
    zero weight; here it carries no value, which saves the value's bits.)

    Args:
        positions: sorted flat indices of the non-zeros.
        bits: width of one entry, >= 1.

    Returns:
        The entry stream (int64), one entry per non-zero plus the fillers.

    Raises:
        ValueError / TypeError: ``positions`` not 1-D non-negative integers in increasing
            order, ``bits`` outside 1..62.

    Example:
        >>> relative_index_encode([1, 4, 20], bits=3).tolist()   # gaps 1, 2, 15 = 7+7+1
        [1, 2, 7, 7, 1]
    """
    positions, top = _check_positions(positions), (1 << check_positive_int(bits, "bits", maximum=62)) - 1
    gaps = np.diff(positions, prepend=-1) - 1
    if top == 1:  # 1 bit: symbol 1 = filler (skip 1), symbol 0 = "next position"
        fillers, rest = gaps, np.zeros_like(gaps)
    else:
        fillers, rest = gaps // top, gaps % top
    out = np.full(int(fillers.sum()) + positions.size, top, dtype=np.int64)
    out[np.cumsum(fillers + 1) - 1] = rest
    return out


def relative_index_decode(entries: Any, bits: int) -> np.ndarray:
    """Inverse of :func:`relative_index_encode`: the flat positions of the non-zeros.

    Raises:
        ValueError / TypeError: ``bits`` outside 1..62, ``entries`` not 1-D integers in
            ``0 .. 2**bits - 1``.
    """
    top = (1 << check_positive_int(bits, "bits", maximum=62)) - 1
    entries = check_array(entries, "entries", ndim=1, allow_empty=True)
    if entries.size and not (np.issubdtype(entries.dtype, np.integer)
                             and entries.min() >= 0 and entries.max() <= top):
        raise ValueError(f"entries must be integers in 0..{top} for bits={bits}")
    entries = entries.astype(np.int64)
    is_filler = entries == top
    step = np.where(is_filler, top, entries + 1)
    return (np.cumsum(step) - 1)[~is_filler]


def _check_positions(positions: Any) -> np.ndarray:
    positions = check_array(positions, "positions", ndim=1, allow_empty=True)
    if positions.size and (not np.issubdtype(positions.dtype, np.integer) or positions.min() < 0):
        raise ValueError("positions must be non-negative integers (flat indices)")
    if np.any(np.diff(positions) <= 0):
        raise ValueError("positions must be in increasing order, without repeats")
    return positions.astype(np.int64)


def _table_bytes(lengths: np.ndarray) -> bytes:
    """Huffman code lengths, 4 bits each (lengths above 15 use 8 bits)."""
    if lengths.max(initial=0) <= 15:
        return pack_bits(lengths, 4)
    return lengths.astype(np.uint8).tobytes()


def _huffman_cost(values: np.ndarray) -> tuple[int, np.ndarray]:
    counts = np.bincount(values)
    lengths = huffman_code_lengths(counts)
    payload = (int((counts * lengths).sum()) + 7) // 8
    table = (lengths.size * (4 if lengths.max() <= 15 else 8) + 7) // 8
    return payload + table, lengths


def encode_ints(values: Any, *, huffman: bool = True) -> tuple[dict, dict[str, bytes]]:
    """Store non-negative integers packed at their bit width, or Huffman-coded if smaller.

    Returns:
        ``(spec, streams)``: a JSON-able description and the byte streams (``data``, and
        ``table`` holding the code lengths when Huffman-coded).
    """
    values = np.asarray(values, dtype=np.int64).ravel()
    count = int(values.size)
    width = int(values.max()).bit_length() if count else 0
    fixed_bytes = (width * count + 7) // 8
    if huffman and count and width > 0:
        cost, lengths = _huffman_cost(values)
        if cost < fixed_bytes:
            payload, lengths = huffman_encode(values, lengths)
            spec = {"codec": "huffman", "count": count, "symbols": int(lengths.size),
                    "table_bits": 4 if lengths.max() <= 15 else 8}
            return spec, {"data": payload, "table": _table_bytes(lengths)}
    return {"codec": "fixed", "count": count, "bits": width}, {"data": pack_bits(values, width)}


def decode_ints(spec: dict, streams: dict[str, bytes]) -> np.ndarray:
    """Inverse of :func:`encode_ints`."""
    count = int(spec["count"])
    if spec["codec"] == "fixed":
        width = int(spec["bits"])
        if len(streams["data"]) != (width * count + 7) // 8:
            raise CorruptFileError("packed integer stream has the wrong length")
        return unpack_bits(streams["data"], width, count)
    if spec["codec"] == "huffman":
        n, table_bits = int(spec["symbols"]), int(spec["table_bits"])
        if table_bits == 4:
            lengths = unpack_bits(streams["table"], 4, n)
        else:
            lengths = np.frombuffer(streams["table"], dtype=np.uint8)[:n].astype(np.int64)
        return huffman_decode(streams["data"], lengths, count)
    raise CorruptFileError(f"unknown integer codec {spec['codec']!r}")


def _affine_fit(u: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Find ``scale`` (float64) and integers ``k`` with ``float32(scale * k) == u`` exactly.

    ``u`` holds distinct float32 values. Each value pins ``scale * k`` inside its float32
    rounding interval; the scale is the middle of the intersection of those intervals.
    Returns None when no such scale exists (the values are not on one grid).
    """
    bits = u.view(np.uint32)
    nz = u[u != 0].astype(np.float64)
    if nz.size == 0:
        return 1.0, np.zeros(u.size, np.int64)
    s = np.sort(u.astype(np.float64))
    gaps = np.diff(s)
    gap = gaps[gaps > 0].min() if gaps.size else np.abs(nz).min()
    # Candidate grid steps, largest first (the first exact fit gives the smallest codes): the
    # smallest gap and its fractions, and the peak or range over 2^b - 1 levels.
    levels = (1 << np.arange(1, 17)) - 1
    cands = np.concatenate([gap / np.arange(1, 5), np.abs(nz).max() / levels,
                            (s[-1] - min(s[0], 0.0)) / levels, [np.abs(nz).min()]])
    for step in np.unique(cands)[::-1]:
        fit = _affine_check(u, bits, step)
        if fit is not None:
            return fit
    return None


def _affine_check(u: np.ndarray, bits: np.ndarray, step: float) -> tuple[float, np.ndarray] | None:
    k = np.rint(u.astype(np.float64) / step)
    if np.abs(k).max() >= MAX_CODEBOOK or np.any((k == 0) & (u != 0)):
        return None
    kz = k[k != 0]
    uz = u[k != 0]
    below = np.nextafter(uz, np.float32(-np.inf)).astype(np.float64)
    above = np.nextafter(uz, np.float32(np.inf)).astype(np.float64)
    lo = (uz.astype(np.float64) + below) / 2 / kz
    hi = (uz.astype(np.float64) + above) / 2 / kz
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    a, b = lo.max(), hi.min()
    if not a <= b:
        return None
    # Rounding ties put the true scale on an interval's edge, so the edges are tried too.
    one = uz[np.abs(kz) == np.abs(kz).min()][0] / kz[np.abs(kz) == np.abs(kz).min()][0]
    for scale in ((a + b) / 2, a, b, float(one), a + (b - a) / 4, a + 3 * (b - a) / 4):
        if np.array_equal((scale * k).astype(np.float32).view(np.uint32), bits):
            return float(scale), k.astype(np.int64)
    return None


def _encode_values(v: np.ndarray, channel: np.ndarray, n_channels: int,
                   huffman: bool) -> tuple[dict, dict[str, bytes]]:
    """Cheapest exact encoding of float32 values ``v`` (``channel[i]``: v[i]'s output channel)."""
    best: tuple[int, dict, dict[str, bytes]] = (4 * v.size, {"kind": "raw"}, {"values": v.tobytes()})
    if v.size == 0:
        return best[1], best[2]
    keys, inverse = np.unique(v.view(np.uint32), return_inverse=True)
    candidates = []
    if keys.size <= MAX_CODEBOOK and keys.size < 0.9 * v.size:
        ispec, istreams = encode_ints(inverse, huffman=huffman)
        candidates.append(({"kind": "codebook", "size": int(keys.size), "indices": ispec},
                           {"codebook": keys.view(np.float32).tobytes(),
                            **{f"indices.{k}": b for k, b in istreams.items()}}))
    candidates.extend(_affine_candidates(v, keys, inverse, channel, n_channels, huffman))
    for spec, streams in candidates:
        size = sum(len(b) for b in streams.values())
        if size < best[0]:
            best = (size, spec, streams)
    return best[1], best[2]


def _affine_candidates(v, keys, inverse, channel, n_channels, huffman):
    out = []
    fit = _affine_fit(keys.view(np.float32)) if keys.size <= MAX_CODEBOOK else None
    if fit is not None:
        scale, k = fit
        codes = k[inverse]
        low = int(codes.min())
        ispec, istreams = encode_ints(codes - low, huffman=huffman)
        out.append(({"kind": "affine", "scale": scale, "offset": low, "codes": ispec},
                    {f"codes.{n}": b for n, b in istreams.items()}))
        return out  # one scale fits: per-channel scales cannot be smaller
    if n_channels <= 1:
        return out
    scales = np.ones(n_channels, np.float64)
    codes = np.zeros(v.size, np.int64)
    for c in range(n_channels):
        sel = channel == c
        if not sel.any():
            continue
        ck, cinv = np.unique(v[sel].view(np.uint32), return_inverse=True)
        fit = _affine_fit(ck.view(np.float32))
        if fit is None:
            return out
        scales[c] = fit[0]
        codes[sel] = fit[1][cinv]
    low = int(codes.min())
    ispec, istreams = encode_ints(codes - low, huffman=huffman)
    out.append(({"kind": "affine_channel", "channels": int(n_channels), "offset": low, "codes": ispec},
                {"scales": scales.tobytes(), **{f"codes.{n}": b for n, b in istreams.items()}}))
    return out


def _sub(streams: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    return {k[len(prefix) + 1:]: b for k, b in streams.items() if k.startswith(prefix + ".")}


def _decode_values(spec: dict, streams: dict[str, bytes], count: int, channel_of) -> np.ndarray:
    kind = spec["kind"]
    if kind == "raw":
        v = np.frombuffer(streams["values"], dtype=np.float32)
    elif kind == "codebook":
        codebook = np.frombuffer(streams["codebook"], dtype=np.float32)
        idx = decode_ints(spec["indices"], _sub(streams, "indices"))
        if codebook.size != spec["size"] or (idx.size and idx.max() >= codebook.size):
            raise CorruptFileError("codebook indices out of range")
        v = codebook[idx]
    elif kind == "affine":
        k = decode_ints(spec["codes"], _sub(streams, "codes")) + int(spec["offset"])
        v = (float(spec["scale"]) * k).astype(np.float32)
    elif kind == "affine_channel":
        scales = np.frombuffer(streams["scales"], dtype=np.float64)
        k = decode_ints(spec["codes"], _sub(streams, "codes")) + int(spec["offset"])
        v = (scales[channel_of()] * k).astype(np.float32)
    else:
        raise CorruptFileError(f"unknown value encoding {kind!r}")
    if v.size != count:
        raise CorruptFileError(f"expected {count} values, decoded {v.size}")
    return v


def encode_array(x: Any, *, huffman: bool = True) -> tuple[dict, dict[str, bytes]]:
    """Encode one weight array in the cheapest exact encoding (see the module docstring).

    Args:
        x: the array. float32 arrays get every encoding; other dtypes are stored raw.
        huffman: allow Huffman coding of the integer streams (``False`` gives the paper's
            "pruning + quantization" stage: fixed-width indices).

    Returns:
        ``(spec, streams)``: a JSON-able description and named byte streams.
    """
    x = np.asarray(x, order="C")
    spec: dict[str, Any] = {"shape": list(x.shape), "dtype": x.dtype.str}
    if x.dtype != np.float32:
        if x.dtype.kind not in "biuf":
            raise TypeError(f"cannot store weights of dtype {x.dtype}")
        return {**spec, "layout": "dense", "values": {"kind": "raw"}}, {"values": x.tobytes()}
    flat = x.ravel() + np.float32(0)  # -0.0 + 0.0 = +0.0: a zero is a zero, whatever its sign
    n_channels = x.shape[-1] if x.ndim >= 2 else 1
    options = []
    # dense: every element through a value encoding
    vspec, vstreams = _encode_values(flat, np.arange(flat.size) % n_channels, n_channels, huffman)
    options.append(({**spec, "layout": "dense", "values": vspec},
                    {f"values.{k}" if vspec["kind"] != "raw" else k: b for k, b in vstreams.items()}))
    # sparse: positions + non-zero values
    positions = np.flatnonzero(flat)
    if positions.size < flat.size:
        pspec, pstreams = _encode_positions(positions, flat.size, huffman)
        vspec, vstreams = _encode_values(flat[positions], positions % n_channels, n_channels, huffman)
        options.append(({**spec, "layout": "sparse", "nonzero": int(positions.size),
                         "positions": pspec, "values": vspec},
                        {**{f"positions.{k}": b for k, b in pstreams.items()},
                         **{f"values.{k}" if vspec["kind"] != "raw" else k: b
                            for k, b in vstreams.items()}}))
    return min(options, key=lambda o: sum(len(b) for b in o[1].values()))


def _encode_positions(positions: np.ndarray, n: int, huffman: bool) -> tuple[dict, dict[str, bytes]]:
    best = ((n + 7) // 8, {"kind": "bitmask"}, None)
    for bits in range(1, MAX_INDEX_BITS + 1):
        entries = relative_index_encode(positions, bits)
        fixed = (entries.size * bits + 7) // 8
        cost = min(fixed, _huffman_cost(entries)[0]) if huffman and entries.size else fixed
        if cost < best[0]:
            best = (cost, {"kind": "relative", "bits": bits}, entries)
    _, spec, entries = best
    if spec["kind"] == "bitmask":
        mask = np.zeros(n, np.uint8)
        mask[positions] = 1
        return spec, {"mask": np.packbits(mask).tobytes()}
    bits = spec["bits"]
    ispec, istreams = encode_ints(entries, huffman=huffman)
    if ispec["codec"] == "fixed":  # keep the chosen width (the largest entry may be narrower)
        ispec = {"codec": "fixed", "count": int(entries.size), "bits": bits}
        istreams = {"data": pack_bits(entries, bits)}
    return {**spec, "entries": ispec}, {f"entries.{k}": b for k, b in istreams.items()}


def decode_array(spec: dict, streams: dict[str, bytes]) -> np.ndarray:
    """Inverse of :func:`encode_array`: the exact array.

    Raises:
        CorruptFileError: the streams do not match the description.
    """
    shape = tuple(int(s) for s in spec["shape"])
    dtype = np.dtype(spec["dtype"])
    if dtype.kind not in "biuf":
        raise CorruptFileError(f"unsupported dtype {dtype}")
    n = int(np.prod(shape, dtype=np.int64))
    if any(d < 0 for d in shape) or n > 1 << 31:
        raise CorruptFileError(f"implausible weight shape {shape}")
    n_channels = shape[-1] if len(shape) >= 2 else 1
    if spec["layout"] == "dense":
        if spec["values"]["kind"] == "raw":
            flat = np.frombuffer(streams["values"], dtype=dtype)
            if flat.size != n:
                raise CorruptFileError(f"expected {n} values, found {flat.size}")
        else:
            flat = _decode_values(spec["values"], _sub(streams, "values"), n,
                                  lambda: np.arange(n) % n_channels)
        return flat.reshape(shape).copy()
    if spec["layout"] != "sparse":
        raise CorruptFileError(f"unknown layout {spec['layout']!r}")
    pspec = spec["positions"]
    if pspec["kind"] == "bitmask":
        mask = np.unpackbits(np.frombuffer(streams["positions.mask"], np.uint8), count=n)
        positions = np.flatnonzero(mask)
    elif pspec["kind"] == "relative":
        entries = decode_ints(pspec["entries"], _sub(_sub(streams, "positions"), "entries"))
        positions = relative_index_decode(entries, int(pspec["bits"]))
    else:
        raise CorruptFileError(f"unknown position encoding {pspec['kind']!r}")
    if positions.size != spec["nonzero"] or (positions.size and positions[-1] >= n):
        raise CorruptFileError("sparse positions do not match the array's shape")
    vstreams = streams if spec["values"]["kind"] == "raw" else _sub(streams, "values")
    values = _decode_values(spec["values"], vstreams, positions.size, lambda: positions % n_channels)
    flat = np.zeros(n, dtype=np.float32)
    flat[positions] = values
    return flat.reshape(shape)


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


def plain_model(model: Any):
    """The model the file stores: plain Keras layers holding the weights the model computes with.

    The rule, applied in this order (each step only when the model needs it):

    1. quantization-aware layers (``QAT*``) -> ``quantization.quantize_model`` (their codes);
    2. pruning wrappers -> ``pruning.strip`` (masks dropped, zeros kept);
    3. clustered layers -> ``clustering.strip_clustering`` (kernel = codebook[index]);
    4. any other library layer that subclasses a Keras layer (``QuantizedDense`` ...) -> that
       Keras layer with the layer's effective ``kernel`` and its bias; bookkeeping ``cnl_*``
       variables are dropped.

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

    qat = _library_layers(model, ("_QATMixin",))
    if qat:
        quantization = importlib.import_module("compressnet_lite.quantization")
        model = quantization.quantize_model(model, layers=[l.name for l in qat])
    if _library_layers(model, ("_Prunable",)):
        model = importlib.import_module("compressnet_lite.pruning").strip(model)
    if _library_layers(model, ("_Clustered",)):
        model = importlib.import_module("compressnet_lite.clustering").strip_clustering(model)
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


def _encode_model(model, huffman: bool) -> tuple[bytes, "SizeReport"]:
    import keras

    model = plain_model(model)
    entries, blob, rows = [], bytearray(), []
    for var in model.weights:
        arr = np.asarray(keras.ops.convert_to_numpy(var))
        spec, streams = encode_array(arr, huffman=huffman)
        table = []
        for name, data in streams.items():
            table.append([name, len(blob), len(data)])
            rows.append(StreamSize(_layer_of(var.path), var.path, name, len(data)))
            blob += data
        entries.append({"path": var.path, **spec, "streams": table})
    blob = bytes(blob)
    manifest = {"format": FORMAT, "version": VERSION, "keras": keras.__version__,
                "model": model.name, "streams_size": len(blob), "weights": entries}
    manifest_json = json.dumps(manifest, separators=(",", ":")).encode()
    arch_json = model.to_json().encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, method in (("manifest.json", manifest_json, zipfile.ZIP_DEFLATED),
                                   ("model.json", arch_json, zipfile.ZIP_DEFLATED),
                                   ("streams.bin", blob, zipfile.ZIP_STORED)):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data, compresslevel=9 if method == zipfile.ZIP_DEFLATED else None)
        sizes = {i.filename: i.compress_size for i in zf.infolist()}
    raw = buf.getvalue()
    if raw[-22:-18] != _EOCD:  # zipfile wrote no comment, so the record is the last 22 bytes
        raise RuntimeError("unexpected zip layout")
    head = raw[:-2] + struct.pack("<H", _HASH_LEN)  # end record announcing a 32-byte comment
    data = head + hashlib.sha256(head).digest()
    report = _report(manifest, rows, sizes, len(data), huffman)
    return data, report


def _layer_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else path


def _verify_and_open(data: bytes) -> tuple[dict, str, bytes, dict[str, int]]:
    """Check the whole-file SHA-256 and the zip, return (manifest, architecture, blob, sizes)."""
    tail = 22 + _HASH_LEN
    if len(data) < tail or data[-tail:-tail + 4] != _EOCD or \
            struct.unpack("<H", data[-_HASH_LEN - 2:-_HASH_LEN])[0] != _HASH_LEN:
        raise CorruptFileError("not a compressnet-lite file, or truncated (end-of-archive record "
                               "with checksum not found)")
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
    if manifest.get("version") != VERSION:
        raise CorruptFileError(f"unsupported format version {manifest.get('version')!r} "
                               f"(this library reads version {VERSION})")
    if manifest.get("streams_size") != len(blob):
        raise CorruptFileError("streams.bin has the wrong size")
    return manifest, arch, blob, sizes


def _read(path: Any) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    with open(path, "rb") as f:
        return f.read()


def _decode_weights(manifest: dict, blob: bytes) -> list[np.ndarray]:
    arrays = []
    try:
        for entry in manifest["weights"]:
            streams = {}
            for name, offset, length in entry["streams"]:
                if offset < 0 or offset + length > len(blob):
                    raise CorruptFileError(f"stream {name!r} of {entry['path']!r} lies outside the file")
                streams[name] = blob[offset:offset + length]
            arrays.append(decode_array(entry, streams))
    except CorruptFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CorruptFileError(f"inconsistent manifest: {exc}") from None
    return arrays


def save_compressed(model: Any, path: Any, *, huffman: bool = True) -> "SizeReport":
    """Write ``model`` (architecture + weights) to ``path`` in the compressed format.

    Args:
        model: a built Keras model (a transformed model is stored as :func:`plain_model`).
        path: the file to write (conventionally ``*.cnl``).
        huffman: Huffman-code the integer streams when that is smaller.

    Returns:
        The :class:`SizeReport` of the written file (``report.total`` is its size in bytes).

    Raises:
        TypeError / ValueError: not a built model; a layer that cannot be stored.

    Example:
        >>> report = save_compressed(model, "model.cnl")          # doctest: +SKIP
        >>> report.total == os.path.getsize("model.cnl")           # doctest: +SKIP
        True
    """
    data, report = _encode_model(model, huffman)
    with open(os.fspath(path), "wb") as f:
        f.write(data)
    return report


def load_compressed(path: Any):
    """Read a file written by :func:`save_compressed`: the model with bit-identical weights.

    The architecture is rebuilt with Keras' deserialisation under ``safe_mode=True``;
    nothing in the file is executed.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CorruptFileError: (a ``ValueError``) damaged, truncated, or not a compressnet-lite file.
    """
    import keras

    manifest, arch, blob, _ = _verify_and_open(_read(path))
    arrays = _decode_weights(manifest, blob)
    if "compressnet_lite>" in arch:
        register_library_classes()
    try:
        model = keras.saving.deserialize_keras_object(json.loads(arch), safe_mode=True)
    except Exception as exc:  # unknown classes, bad config
        raise CorruptFileError(f"cannot rebuild the architecture: {exc}") from None
    if len(model.weights) != len(arrays):
        raise CorruptFileError(f"the architecture has {len(model.weights)} weights, the file {len(arrays)}")
    for var, arr in zip(model.weights, arrays):
        if tuple(var.shape) != arr.shape:
            raise CorruptFileError(f"weight {var.path!r} has shape {tuple(var.shape)}, file has {arr.shape}")
        var.assign(arr)
    return model


@dataclass(frozen=True)
class StreamSize:
    """Bytes of one stream of one weight (or of the container: manifest, architecture)."""

    layer: str
    weight: str
    stream: str
    bytes: int


@dataclass
class SizeReport:
    """Where the bytes of a compressed file go.

    Attributes:
        total: size of the whole file in bytes (equals the size on disk).
        rows: one :class:`StreamSize` per stream, plus ``manifest``, ``architecture`` and
            ``container`` (zip headers and checksum) rows; their bytes sum to ``total``.
        float32_bytes: 4 bytes per stored weight element: the uncompressed reference.
        weights: per weight: path, shape, layout, value kind, number of stored values.
        huffman: whether Huffman coding was allowed.
    """

    total: int
    rows: list[StreamSize]
    float32_bytes: int
    weights: list[dict] = field(default_factory=list)
    huffman: bool = True

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
        lines = [f"{'weight':<24}{'encoding':<34}{'bytes':>9}"]
        by_weight: dict[str, int] = {}
        for r in self.rows:
            by_weight[r.weight] = by_weight.get(r.weight, 0) + r.bytes
        for w in self.weights:
            lines.append(f"{w['path']:<24}{w['encoding']:<34}{by_weight.get(w['path'], 0):>9,}")
        for r in self.rows:
            if r.layer == "(file)":
                lines.append(f"{r.weight:<24}{'':<34}{r.bytes:>9,}")
        lines.append(f"{'total':<24}{'':<34}{self.total:>9,}")
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
    kind = {"raw": np.dtype(entry["dtype"]).name, "codebook": f"codebook {v.get('size')}",
            "affine": "int codes, 1 scale", "affine_channel": "int codes, scale/channel"}.get(v["kind"], v["kind"])
    for key in ("indices", "codes"):
        if key in v:
            c = v[key]
            kind += f" ({'huffman' if c['codec'] == 'huffman' else str(c['bits']) + ' bit'})"
    if entry["layout"] == "sparse":
        p = entry["positions"]
        pos = "bitmask" if p["kind"] == "bitmask" else f"rel {p['bits']}b" + (
            " huff" if p["entries"]["codec"] == "huffman" else "")
        return f"sparse {pos}, {kind}"
    return kind


def _report(manifest: dict, rows: list[StreamSize], sizes: dict[str, int], total: int,
            huffman: bool) -> SizeReport:
    rows = list(rows)
    rows.append(StreamSize("(file)", "manifest", "manifest.json", sizes["manifest.json"]))
    rows.append(StreamSize("(file)", "architecture", "model.json", sizes["model.json"]))
    rows.append(StreamSize("(file)", "container", "zip+sha256", total - sum(r.bytes for r in rows)))
    weights, float32 = [], 0
    for e in manifest["weights"]:
        n = int(np.prod(e["shape"], dtype=np.int64))
        float32 += 4 * n
        weights.append({"path": e["path"], "shape": tuple(e["shape"]), "layout": e["layout"],
                        "values": e["values"]["kind"], "size": n,
                        "stored": int(e.get("nonzero", n)), "encoding": _describe(e)})
    return SizeReport(total, rows, float32, weights, huffman)


def compressed_size(obj: Any, *, huffman: bool = True) -> SizeReport:
    """The size of ``obj`` in the compressed format, with a per-layer, per-stream breakdown.

    Args:
        obj: a Keras model (encoded in memory exactly as :func:`save_compressed` writes it)
            or the path of a compressed file (read and checked).
        huffman: for a model, allow Huffman coding (``False``: fixed-width integer streams).

    Returns:
        A :class:`SizeReport` whose ``total`` equals the file's size on disk.

    Raises:
        TypeError: ``obj`` is neither a model nor a path.
        CorruptFileError: the file is damaged.
    """
    import keras

    if isinstance(obj, keras.Model):
        return _encode_model(obj, huffman)[1]
    if not isinstance(obj, (str, os.PathLike)):
        raise TypeError(f"obj must be a keras.Model or a file path, got {type(obj).__name__}")
    data = _read(obj)
    manifest, _, _, sizes = _verify_and_open(data)
    rows = [StreamSize(_layer_of(e["path"]), e["path"], name, length)
            for e in manifest["weights"] for name, _, length in e["streams"]]
    uses_huffman = "huffman" in json.dumps(manifest["weights"])
    return _report(manifest, rows, sizes, len(data), uses_huffman)
