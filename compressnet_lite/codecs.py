"""The codecs of the compressed format, in NumPy: bit packing, positions, integers, values.

A compression method only saves bytes if the file format exploits what it did. The
functions here look at one weight ARRAY (not at how it was produced) and store it in the
smallest of these exact encodings:

* **dense**: every element through a value encoding;
* **sparse**: the positions of the non-zeros, as Deep Compression's *relative indices*
  (the gap since the previous non-zero in ``b`` bits; a gap too long for ``b`` bits is
  bridged by filler entries) or as a *bitmask* (one bit per element), whichever is
  smaller, plus the non-zero values;
* values as **raw** float32, as a **codebook** (the distinct values, exact float32, plus
  one small index per value: k-means clustering / weight sharing), or as **affine**
  integer codes with one scale (``w = scale * k``: what quantize-then-dequantize leaves) or
  one scale per channel along any axis (the output channels of a Dense or Conv2D kernel
  are its last axis; a DepthwiseConv2D kernel ``(kh, kw, channels, multiplier)`` has them
  on axis 2);
* every integer stream (relative indices, codebook indices, integer codes) packed at its
  bit width or **Huffman-coded** (canonical, length-limited code,
  :mod:`compressnet_lite.huffman`), whichever is smaller.

Every encoding is lossless on float32 arrays: :func:`decode_array` returns bit-identical
values, except that a negative zero comes back as ``+0.0`` (equal as a number; masking by
multiplication, ``w * mask``, leaves ``-0.0`` where ``w < 0``, and storing those signs would
cost a value per pruned weight).

Integers are packed by one function, :func:`pack_bits` (most significant bit first, the
last byte zero-padded); every fixed-width stream of the library goes through it.

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

from typing import Any

import numpy as np

from compressnet_lite._checks import check_array, check_positive_int
from compressnet_lite.huffman import huffman_code_lengths, huffman_decode, huffman_encode

__all__ = [
    "CorruptFileError", "pack_bits", "unpack_bits", "relative_index_encode",
    "relative_index_decode", "affine_fit", "encode_ints", "decode_ints", "encode_array",
    "decode_array", "MAX_INDEX_BITS", "MAX_CODEBOOK",
]

MAX_INDEX_BITS = 12        # widest relative-index width tried
MAX_CODEBOOK = 1 << 16     # most distinct values a codebook / affine code may have


class CorruptFileError(ValueError):
    """The compressed data is damaged, truncated, or not a compressnet-lite file."""


# ---------------------------------------------------------------------------------------
# Bit packing: the one packer of the library
# ---------------------------------------------------------------------------------------

def pack_bits(values: Any, bits: int) -> bytes:
    """Pack non-negative integers into ``bits`` bits each, most significant bit first.

    ``n`` values take ``ceil(n * bits / 8)`` bytes; the last byte is zero-padded.

    Args:
        values: integers (any shape, flattened), each in ``0 .. 2**bits - 1``.
        bits: bits per value, 0..63 (0: every value must be 0; packs to nothing).

    Returns:
        The packed bytes.

    Raises:
        TypeError: ``values`` are not integers, ``bits`` is not an int.
        ValueError: ``bits`` outside 0..63, a value outside ``0 .. 2**bits - 1``.

    Example:
        >>> pack_bits([1, 2, 3, 0], 2).hex()          # 01 10 11 00
        '6c'
        >>> unpack_bits(bytes.fromhex("6c"), 2, 4).tolist()
        [1, 2, 3, 0]
    """
    bits = check_positive_int(bits, "bits", minimum=0, maximum=63)
    values = np.asarray(values)
    if values.size and not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise TypeError(f"values must be integers, got dtype {values.dtype}")
    values = values.ravel()
    if values.size and (int(values.min()) < 0 or int(values.max()) >= 1 << bits):
        raise ValueError(f"values must be in 0..{(1 << bits) - 1} to fit in {bits} bits, got "
                         f"{int(values.min())}..{int(values.max())}")
    if bits == 0 or values.size == 0:
        return b""
    if bits == 8:
        return values.astype(np.uint8).tobytes()
    if bits == 1:
        return np.packbits(values.astype(np.uint8)).tobytes()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    planes = ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.ravel()).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` integers of ``bits`` bits each (int64).

    Raises:
        TypeError / ValueError: ``bits`` outside 0..63, ``count < 0``, or ``data`` holds fewer
            than ``count * bits`` bits.
    """
    bits = check_positive_int(bits, "bits", minimum=0, maximum=63)
    count = check_positive_int(count, "count", minimum=0)
    if bits == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    data = bytes(data)
    if 8 * len(data) < bits * count:
        raise ValueError(f"data holds {len(data)} bytes; {count} values of {bits} bits need "
                         f"{(bits * count + 7) // 8}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw[:count].astype(np.int64)
    flat = np.unpackbits(raw, count=bits * count).reshape(count, bits)
    if bits == 1:
        return flat[:, 0].astype(np.int64)
    weights = np.left_shift(np.uint64(1), np.arange(bits - 1, -1, -1, dtype=np.uint64))
    return (flat.astype(np.uint64) * weights).sum(axis=1).astype(np.int64)


# ---------------------------------------------------------------------------------------
# Positions: relative indices
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
    positions = _check_positions(positions)
    top = (1 << check_positive_int(bits, "bits", maximum=62)) - 1
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


# ---------------------------------------------------------------------------------------
# Integer streams: fixed width or Huffman
# ---------------------------------------------------------------------------------------

def _table_bits(lengths: np.ndarray) -> int:
    return 4 if lengths.max(initial=0) <= 15 else 5


def _huffman_cost(values: np.ndarray) -> tuple[int, np.ndarray]:
    counts = np.bincount(values)
    lengths = huffman_code_lengths(counts)
    payload = (int((counts * lengths).sum()) + 7) // 8
    table = (lengths.size * _table_bits(lengths) + 7) // 8
    return payload + table, lengths


def encode_ints(values: Any, *, huffman: bool = True,
                width: int | None = None) -> tuple[dict, dict[str, bytes]]:
    """Store non-negative integers in the smallest of: packed at a fixed width; "mapped"
    (the distinct values in a table, each value an index into it at
    ``ceil(log2(distinct))`` bits: e.g. 1-bit codes ``{-1, +1}`` that are 0 and 2 after the
    offset); Huffman-coded.

    Args:
        values: non-negative integers (flattened).
        huffman: allow Huffman coding.
        width: the fixed width to use (default: the bit length of the largest value).

    Returns:
        ``(spec, streams)``: a JSON-able description and the byte streams (``data``, and
        ``table`` holding the code lengths when Huffman-coded, the values when mapped).
    """
    values = np.asarray(values, dtype=np.int64).ravel()
    count = int(values.size)
    if width is None:
        width = int(values.max()).bit_length() if count else 0
    best = ((width * count + 7) // 8, "fixed")
    used = np.unique(values) if count else values
    index_bits = int(used.size - 1).bit_length() if used.size else 0
    mapped = (used.size * width + 7) // 8 + (index_bits * count + 7) // 8
    if mapped < best[0]:  # few distinct values spread over a wide range: index a value table
        best = (mapped, "mapped")
    if huffman and count and width > 0:
        cost, lengths = _huffman_cost(values)
        if cost < best[0]:
            payload, lengths = huffman_encode(values, lengths)
            bits = _table_bits(lengths)
            spec = {"codec": "huffman", "count": count, "symbols": int(lengths.size),
                    "table_bits": bits}
            return spec, {"data": payload, "table": pack_bits(lengths, bits)}
    if best[1] == "mapped":
        index = np.searchsorted(used, values)
        return ({"codec": "mapped", "count": count, "bits": index_bits, "symbols": int(used.size),
                 "table_bits": width},
                {"data": pack_bits(index, index_bits), "table": pack_bits(used, width)})
    return {"codec": "fixed", "count": count, "bits": width}, {"data": pack_bits(values, width)}


def decode_ints(spec: dict, streams: dict[str, bytes]) -> np.ndarray:
    """Inverse of :func:`encode_ints`.

    Raises:
        CorruptFileError: the streams do not match the description.
    """
    count = int(spec["count"])
    try:
        if spec["codec"] == "fixed":
            width = int(spec["bits"])
            if len(streams["data"]) != (width * count + 7) // 8:
                raise CorruptFileError("packed integer stream has the wrong length")
            return unpack_bits(streams["data"], width, count)
        if spec["codec"] == "mapped":
            table = unpack_bits(streams["table"], int(spec["table_bits"]), int(spec["symbols"]))
            index = unpack_bits(streams["data"], int(spec["bits"]), count)
            if index.size and index.max() >= table.size:
                raise CorruptFileError("mapped integer stream indexes past its table")
            return table[index]
        if spec["codec"] == "huffman":
            n, table_bits = int(spec["symbols"]), int(spec["table_bits"])
            if table_bits == 8:  # files of format version 1: one byte per code length
                lengths = np.frombuffer(streams["table"], dtype=np.uint8)[:n].astype(np.int64)
            else:
                lengths = unpack_bits(streams["table"], table_bits, n)
            return huffman_decode(streams["data"], lengths, count)
    except CorruptFileError:
        raise
    except ValueError as exc:  # a stream that ends early or holds no code
        raise CorruptFileError(f"damaged integer stream: {exc}") from None
    raise CorruptFileError(f"unknown integer codec {spec['codec']!r}")


# ---------------------------------------------------------------------------------------
# Values: affine grids (one scale, or one per channel along an axis), codebooks, raw
# ---------------------------------------------------------------------------------------

def affine_fit(values: Any, channel: Any = None, n_channels: int = 1) -> tuple[np.ndarray, np.ndarray] | None:
    """Find scales ``s_c`` (float64) and integers ``k`` with ``float32(s[channel] * k) == values``.

    Each float32 value ``u`` pins ``s * k`` inside its rounding interval; for a candidate
    grid step the codes are ``k = rint(u / step)`` and the scale must lie in the intersection
    of the intervals ``[lo(u) / k, hi(u) / k]`` of its channel. Candidate steps, per channel
    and largest first (the first exact fit gives the smallest codes): the smallest gap
    between distinct values and its fractions, the peak or the range over ``2^b - 1`` levels.
    Every channel is searched at once (one pass over the values per candidate).

    Args:
        values: float32 values (flattened).
        channel: each value's channel in ``0 .. n_channels - 1`` (default: one channel).
        n_channels: number of channels.

    Returns:
        ``(scales, codes)`` with ``scales`` of shape ``(n_channels,)`` (1.0 for a channel
        without values, or without non-zeros) and ``codes`` int64 like ``values``; or None
        when some channel's values lie on no grid with codes below 2**16.

    Example:
        >>> scales, k = affine_fit(np.float32(0.1) * np.array([3, -1, 7], np.float32))
        >>> k.tolist(), bool(np.float32(scales[0] * 7) == np.float32(0.1) * np.float32(7))
        ([3, -1, 7], True)
    """
    u = np.asarray(values, dtype=np.float32).ravel()
    ch = np.zeros(u.size, np.int64) if channel is None else np.asarray(channel, np.int64).ravel()
    scales = np.ones(n_channels, np.float64)
    codes = np.zeros(u.size, np.int64)
    if u.size == 0:
        return scales, codes
    # Work on the distinct (channel, value) pairs, sorted by channel, then value.
    key = (ch << 32) | u.view(np.uint32).astype(np.int64)
    pairs, inverse = np.unique(key, return_inverse=True)
    pc = pairs >> 32
    pu = (pairs & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
    order = np.lexsort((pu, pc))
    pc, pu = pc[order], pu[order]
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    if n_channels > 1 and np.any(pu != 0):
        # Every channel must fit: try one channel alone first, a quick way to refuse values
        # that lie on no grid (most float weights) without searching all channels.
        probe = pc == pc[np.flatnonzero(pu != 0)[0]]
        if _affine_fit_pairs(pu[probe], np.zeros(int(probe.sum()), np.int64), 1, np.ones(1)) is None:
            return None
    fit_k = _affine_fit_pairs(pu, pc, n_channels, scales)
    if fit_k is None:
        return None
    return scales, fit_k[rank[inverse]]


def _affine_fit_pairs(u: np.ndarray, ch: np.ndarray, n_channels: int,
                      scales: np.ndarray) -> np.ndarray | None:
    """The search of :func:`affine_fit` on distinct values sorted by (channel, value)."""
    x = u.astype(np.float64)
    nz = u != 0
    k_out = np.zeros(u.size, np.int64)
    todo = np.bincount(ch[nz], minlength=n_channels) > 0  # channels holding a non-zero
    if not todo.any():
        return k_out
    peak = np.zeros(n_channels)
    np.maximum.at(peak, ch[nz], np.abs(x[nz]))
    smallest = np.full(n_channels, np.inf)
    np.minimum.at(smallest, ch[nz], np.abs(x[nz]))
    hi = np.full(n_channels, -np.inf)
    lo = np.full(n_channels, np.inf)
    np.maximum.at(hi, ch, x)
    np.minimum.at(lo, ch, x)
    d = np.diff(x)
    step_ok = (ch[1:] == ch[:-1]) & (d > 0)
    gap = np.full(n_channels, np.inf)
    np.minimum.at(gap, ch[1:][step_ok], d[step_ok])
    gap = np.where(np.isfinite(gap), gap, smallest)
    levels = (1 << np.arange(1, 17)) - 1
    span = hi - np.minimum(lo, 0.0)
    with np.errstate(invalid="ignore"):
        cands = np.concatenate([gap[:, None] / np.arange(1, 5), peak[:, None] / levels,
                                span[:, None] / levels, smallest[:, None]], axis=1)
    cands = -np.sort(-np.where(np.isfinite(cands), cands, 0.0), axis=1)  # largest step first
    below = np.nextafter(u, np.float32(-np.inf)).astype(np.float64)
    above = np.nextafter(u, np.float32(np.inf)).astype(np.float64)
    edge_lo, edge_hi = (x + below) / 2, (x + above) / 2
    bits = u.view(np.uint32)
    # A candidate that fails on a sample of the values fails on all of them (each value can
    # only shrink the interval), so every candidate is tried on a sample first.
    sample = np.zeros(u.size, bool)
    sample[::max(1, u.size // 2048)] = True
    for j in range(cands.shape[1]):
        if not todo.any():
            break
        step = cands[:, j]
        ok = _grid_check(x, nz, ch, step, edge_lo, edge_hi, todo[ch] & sample, n_channels)[0]
        ok &= todo
        if not ok.any():
            continue
        ok, k, a, b = _grid_check(x, nz, ch, step, edge_lo, edge_hi, ok[ch], n_channels)
        ok &= todo
        # Rounding ties put the true scale on an interval's edge: try the edges too; float32
        # scales first (they are what quantize() produced, and store in 4 bytes).
        with np.errstate(invalid="ignore", over="ignore"):  # channels not ok: +-inf, unused
            mid = (a + b) / 2
            tries = [mid, a, b, a + (b - a) / 4, a + 3 * (b - a) / 4]
            tries = [t.astype(np.float32).astype(np.float64) for t in tries[:3]] + tries
        for s in tries:
            if not ok.any():
                break
            s = np.where(np.isfinite(s), s, 1.0)
            sel = ok[ch]
            exact = (s[ch[sel]] * k[sel]).astype(np.float32).view(np.uint32) == bits[sel]
            wrong = np.zeros(n_channels, bool)
            wrong[ch[sel][~exact]] = True
            good = ok & ~wrong
            if good.any():
                scales[good] = s[good]
                gm = good[ch]
                k_out[gm] = k[gm].astype(np.int64)
                ok &= ~good
                todo &= ~good
    return None if todo.any() else k_out


def _grid_check(x, nz, ch, step, edge_lo, edge_hi, sel, n_channels):
    """Per channel: do the selected values fit the grid ``step`` (codes ``rint(x / step)``)?

    Returns ``(ok, k, a, b)``: ``ok`` per channel (channels without selected values: False),
    the codes of all values (meaningful where selected), and the interval ``[a, b]`` of
    scales that reproduce the selected values of each channel.
    """
    c = ch[sel]
    with np.errstate(divide="ignore", invalid="ignore"):
        ks = np.rint(x[sel] / step[c])
    bad = ~np.isfinite(ks) | (np.abs(ks) >= MAX_CODEBOOK) | ((ks == 0) & nz[sel])
    kz = np.where(ks == 0, 1.0, ks)
    lo_e, hi_e = edge_lo[sel] / kz, edge_hi[sel] / kz
    a_e = np.where(ks == 0, -np.inf, np.minimum(lo_e, hi_e))
    b_e = np.where(ks == 0, np.inf, np.maximum(lo_e, hi_e))
    a = np.full(n_channels, -np.inf)
    b = np.full(n_channels, np.inf)
    np.maximum.at(a, c, a_e)
    np.minimum.at(b, c, b_e)
    seen = np.zeros(n_channels, bool)
    seen[c] = True
    failed = np.zeros(n_channels, bool)
    failed[c[bad]] = True
    k = np.zeros(x.size)
    k[sel] = np.where(bad, 0.0, ks)
    return seen & ~failed & (a <= b), k, a, b


def _channel_ids(index: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The index along ``axis`` of each flat (C-order) ``index`` into an array of ``shape``."""
    stride = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return (index // stride) % shape[axis]


def _encode_values(v: np.ndarray, index: np.ndarray, shape: tuple[int, ...],
                   huffman: bool) -> tuple[dict, dict[str, bytes]]:
    """Cheapest exact encoding of float32 values ``v`` (at flat positions ``index`` of ``shape``)."""
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
    candidates.extend(_affine_candidates(v, keys, inverse, index, shape, huffman))
    for spec, streams in candidates:
        size = sum(len(b) for b in streams.values())
        if size < best[0]:
            best = (size, spec, streams)
    return best[1], best[2]


def _affine_candidates(v, keys, inverse, index, shape, huffman):
    out = []
    fit = affine_fit(keys.view(np.float32)) if keys.size <= MAX_CODEBOOK else None
    if fit is not None:
        scale, k = float(fit[0][0]), fit[1]
        codes = k[inverse]
        low = int(codes.min())
        ispec, istreams = encode_ints(codes - low, huffman=huffman)
        out.append(({"kind": "affine", "scale": scale, "offset": low, "codes": ispec},
                    {f"codes.{n}": b for n, b in istreams.items()}))
        return out  # one scale fits: per-channel scales cannot be smaller
    for axis in range(len(shape)):
        if shape[axis] <= 1:
            continue
        channel = _channel_ids(index, shape, axis)
        fit = affine_fit(v, channel, shape[axis])
        if fit is None:
            continue
        scales, codes = fit
        low = int(codes.min())
        ispec, istreams = encode_ints(codes - low, huffman=huffman)
        f32 = np.array_equal(scales.astype(np.float32).astype(np.float64), scales)
        out.append(({"kind": "affine_channel", "channels": int(shape[axis]), "axis": axis,
                     "scale_dtype": "<f4" if f32 else "<f8", "offset": low, "codes": ispec},
                    {"scales": scales.astype(np.float32 if f32 else np.float64).tobytes(),
                     **{f"codes.{n}": b for n, b in istreams.items()}}))
    return out


def _sub(streams: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    return {k[len(prefix) + 1:]: b for k, b in streams.items() if k.startswith(prefix + ".")}


def _decode_values(spec: dict, streams: dict[str, bytes], index: np.ndarray,
                   shape: tuple[int, ...]) -> np.ndarray:
    kind, count = spec["kind"], index.size
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
        axis = int(spec.get("axis", len(shape) - 1))  # format version 1: the last axis
        scales = np.frombuffer(streams["scales"], dtype=np.dtype(spec.get("scale_dtype", "<f8")))
        if not 0 <= axis < len(shape) or scales.size != shape[axis] or spec["channels"] != shape[axis]:
            raise CorruptFileError("per-channel scales do not match the array's shape")
        k = decode_ints(spec["codes"], _sub(streams, "codes")) + int(spec["offset"])
        if k.size != count:
            raise CorruptFileError(f"expected {count} values, decoded {k.size}")
        v = (scales.astype(np.float64)[_channel_ids(index, shape, axis)] * k).astype(np.float32)
    else:
        raise CorruptFileError(f"unknown value encoding {kind!r}")
    if v.size != count:
        raise CorruptFileError(f"expected {count} values, decoded {v.size}")
    return v


# ---------------------------------------------------------------------------------------
# Whole arrays
# ---------------------------------------------------------------------------------------

def encode_array(x: Any, *, huffman: bool = True) -> tuple[dict, dict[str, bytes]]:
    """Encode one weight array in the cheapest exact encoding (see the module docstring).

    Args:
        x: the array. float32 arrays get every encoding; other dtypes are stored raw.
        huffman: allow Huffman coding of the integer streams (``False`` gives the paper's
            "pruning + quantization" stage: fixed-width indices).

    Returns:
        ``(spec, streams)``: a JSON-able description and named byte streams.

    Raises:
        TypeError: an array of a dtype that is not a number.
    """
    x = np.asarray(x, order="C")
    spec: dict[str, Any] = {"shape": list(x.shape), "dtype": x.dtype.str}
    if x.dtype != np.float32:
        if x.dtype.kind not in "biuf":
            raise TypeError(f"cannot store weights of dtype {x.dtype}")
        return {**spec, "layout": "dense", "values": {"kind": "raw"}}, {"values": x.tobytes()}
    shape = tuple(x.shape)
    flat = x.ravel() + np.float32(0)  # -0.0 + 0.0 = +0.0: a zero is a zero, whatever its sign
    options = []
    # dense: every element through a value encoding
    vspec, vstreams = _encode_values(flat, np.arange(flat.size), shape, huffman)
    options.append(({**spec, "layout": "dense", "values": vspec}, _prefixed(vspec, vstreams)))
    # sparse: positions + non-zero values
    positions = np.flatnonzero(flat)
    if positions.size < flat.size:
        pspec, pstreams = _encode_positions(positions, flat.size, huffman)
        vspec, vstreams = _encode_values(flat[positions], positions, shape, huffman)
        options.append(({**spec, "layout": "sparse", "nonzero": int(positions.size),
                         "positions": pspec, "values": vspec},
                        {**{f"positions.{k}": b for k, b in pstreams.items()},
                         **_prefixed(vspec, vstreams)}))
    return min(options, key=lambda o: sum(len(b) for b in o[1].values()))


def _prefixed(vspec: dict, vstreams: dict[str, bytes]) -> dict[str, bytes]:
    return {f"values.{k}" if vspec["kind"] != "raw" else k: b for k, b in vstreams.items()}


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
        return spec, {"mask": pack_bits(mask, 1)}
    ispec, istreams = encode_ints(entries, huffman=huffman, width=spec["bits"])
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
    if spec["layout"] == "dense":
        if spec["values"]["kind"] == "raw":
            flat = np.frombuffer(streams["values"], dtype=dtype)
            if flat.size != n:
                raise CorruptFileError(f"expected {n} values, found {flat.size}")
        else:
            flat = _decode_values(spec["values"], _sub(streams, "values"), np.arange(n), shape)
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
    values = _decode_values(spec["values"], vstreams, positions, shape)
    flat = np.zeros(n, dtype=np.float32)
    flat[positions] = values
    return flat.reshape(shape)
