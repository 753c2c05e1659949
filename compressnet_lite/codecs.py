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

from dataclasses import dataclass
from typing import Any

import numpy as np

from compressnet_lite import rans
from compressnet_lite._checks import check_array, check_choice, check_positive_int
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
# Which codecs an encoding may use
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CodecSet:
    """The codecs an encoding may choose from (each stream takes the smallest of them).

    Attributes:
        entropy: entropy coders for integer streams: ``"huffman"``, ``"rans"`` (static
            frequency table), ``"adaptive"`` (adaptive binary rANS, no table).
        positions: position codes of sparse arrays: ``"bitmask"``, ``"relative"``,
            ``"context"`` (a bitmask coded with its row/column context).
        books: how a codebook's values are stored: ``"f32"``, ``"f16"``, ``"affine"``.
    """

    entropy: frozenset = frozenset()
    positions: frozenset = frozenset({"bitmask", "relative"})
    books: frozenset = frozenset({"f32"})


CODECS = {
    # no entropy coding: the paper's "pruning + quantization" stage
    "fixed": CodecSet(),
    # Deep Compression's: Huffman-coded relative indices and codebook indices
    "huffman": CodecSet(frozenset({"huffman"})),
    # everything: rANS where it is smaller than Huffman, context-coded positions, compact codebooks
    "all": CodecSet(frozenset({"huffman", "rans", "adaptive"}),
                    frozenset({"bitmask", "relative", "context"}),
                    frozenset({"f32", "f16", "affine"})),
}


def codec_set(codecs: str | CodecSet) -> CodecSet:
    """The :class:`CodecSet` named ``codecs`` (``"all"``, ``"huffman"`` or ``"fixed"``).

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(codecs, CodecSet):
        return codecs
    check_choice(codecs, "codecs", tuple(CODECS))
    return CODECS[codecs]


def _entropy_bytes(values: np.ndarray) -> float:
    """Order-0 empirical entropy of a symbol stream, in bytes: the bound no code that codes
    each symbol by its frequency alone can beat."""
    if values.size == 0:
        return 0.0
    counts = np.bincount(values)
    p = counts[counts > 0] / values.size
    return float(-(p * np.log2(p)).sum() * values.size / 8)


# ---------------------------------------------------------------------------------------
# Adaptive binary coding: probabilities from the counts seen so far in each context
# ---------------------------------------------------------------------------------------

def kt_probability(n0: Any, n1: Any) -> Any:
    """Probability (in 1/4096) that the next bit is 1 after ``n0`` zeros and ``n1`` ones in
    its context: the Krichevsky-Trofimov estimate ``(n1 + 1/2) / (n0 + n1 + 1)``, in integer
    arithmetic so that encoder (NumPy) and decoder (Python ints) agree exactly.

    Example:
        >>> kt_probability(0, 0), kt_probability(3, 0), kt_probability(0, 3)
        (2048, 512, 3584)
    """
    p = ((2 * np.asarray(n1, np.int64) + 1) << rans.PROB_SCALE) // (2 * (np.asarray(n0, np.int64)
                                                                       + np.asarray(n1, np.int64)) + 2)
    p = np.clip(p, 1, (1 << rans.PROB_SCALE) - 1)
    return int(p) if p.ndim == 0 else p


def adaptive_probabilities(bits: np.ndarray, contexts: np.ndarray) -> np.ndarray:
    """For each bit (in coding order), :func:`kt_probability` of the bits before it in its context."""
    n = bits.size
    order = np.argsort(contexts, kind="stable")
    b, c = bits[order], contexts[order]
    first = np.r_[True, c[1:] != c[:-1]] if n else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    ones = np.cumsum(b) - b
    n1 = ones - ones[start]
    seen = np.arange(n) - start
    p1 = np.empty(n, np.int64)
    p1[order] = kt_probability(seen - n1, n1)
    return p1


def _binary_cost_bytes(bits: np.ndarray, p1: np.ndarray) -> float:
    p = np.where(bits == 1, p1, (1 << rans.PROB_SCALE) - p1)
    return float(-np.log2(p / (1 << rans.PROB_SCALE)).sum() / 8) + 4


def _binarize(values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The bits of each value, MSB first, and the context of each bit: its node in the
    binary tree of ``width`` levels (the prefix above it, with a leading 1)."""
    shifts = np.arange(width - 1, -1, -1)
    bits = ((values[:, None] >> shifts) & 1).ravel()
    nodes = ((values[:, None] >> (shifts + 1)) | (1 << np.arange(width))).ravel()
    return bits, nodes


def _adaptive_ints_cost(values: np.ndarray, width: int) -> float:
    bits, nodes = _binarize(values, width)
    return _binary_cost_bytes(bits, adaptive_probabilities(bits, nodes))


def _encode_adaptive_ints(values: np.ndarray, width: int) -> bytes:
    bits, nodes = _binarize(values, width)
    return rans.encode_binary(bits, adaptive_probabilities(bits, nodes))


def _decode_adaptive_ints(data: bytes, width: int, count: int) -> np.ndarray:
    dec = rans.BinaryDecoder(data)
    n0 = [0] * (1 << width)
    n1 = [0] * (1 << width)
    out = [0] * count
    for i in range(count):
        node = 1
        for _ in range(width):
            a, b = n0[node], n1[node]
            p = ((2 * b + 1) << 12) // (2 * (a + b) + 2)
            bit = dec.decode(1 if p < 1 else (4095 if p > 4095 else p))
            if bit:
                n1[node] = b + 1
            else:
                n0[node] = a + 1
            node = (node << 1) | bit
        out[i] = node - (1 << width)
    if not dec.finished():
        raise ValueError("adaptive stream damaged: it does not end in the initial state")
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------------------------------
# Integer streams: fixed width, mapped, Huffman, rANS (static table or adaptive)
# ---------------------------------------------------------------------------------------

ADAPTIVE_LIMIT = 1 << 20   # most binary decisions an adaptive stream may hold (decoding is a loop)


def _table_bits(lengths: np.ndarray) -> int:
    return 4 if lengths.max(initial=0) <= 15 else 5


def _huffman_cost(values: np.ndarray) -> tuple[int, np.ndarray]:
    counts = np.bincount(values)
    lengths = huffman_code_lengths(counts)
    payload = (int((counts * lengths).sum()) + 7) // 8
    table = (lengths.size * _table_bits(lengths) + 7) // 8
    return payload + table, lengths


def _rans_lanes(count: int) -> int:
    return 1 if count < 1 << 14 else min(256, count >> 12)


def _rans_plan(values: np.ndarray) -> tuple[float, int, np.ndarray]:
    """The best frequency precision for static rANS: (estimated bytes, scale, frequencies)."""
    counts = np.bincount(values)
    lanes = _rans_lanes(values.size)
    best = (np.inf, 0, counts)
    low = max(4, int(np.count_nonzero(counts) - 1).bit_length())
    for scale in sorted({min(max(low, s), rans.MAX_SCALE) for s in (low, 8, 10, 12, 14, 16)}):
        freqs = rans.normalized_frequencies(counts, scale)
        table = (counts.size * int(freqs.max()).bit_length() + 7) // 8
        cost = 2 * np.ceil(rans.static_cost_bits(counts, freqs, scale) / 16) + 4 * lanes + table
        if cost < best[0]:
            best = (cost, scale, freqs)
    return best


def encode_ints(values: Any, *, codecs: str | CodecSet = "all", width: int | None = None,
                bounds: dict | None = None, limit: float | None = None) -> tuple[dict, dict[str, bytes]]:
    """Store non-negative integers in the smallest of the allowed codecs:

    * ``fixed``: packed at a fixed width (:func:`pack_bits`);
    * ``mapped``: the distinct values in a table, each value an index into it at
      ``ceil(log2(distinct))`` bits (e.g. 1-bit codes ``{-1, +1}``, 0 and 2 after the offset);
    * ``huffman``: a canonical Huffman code (table: the code lengths);
    * ``rans``: rANS with a static frequency table (:mod:`compressnet_lite.rans`), which
      reaches the entropy where Huffman loses up to a bit per symbol, at the cost of a larger
      table (it wins on large or very skewed streams);
    * ``adaptive``: each value's bits (MSB first) coded by rANS with probabilities learnt
      as the stream goes (one context per node of the binary tree): no table at all.

    A codec is chosen only when its measured size is strictly below the previous best (in
    the order above), so a newer codec never makes a stream larger.

    Args:
        values: non-negative integers (flattened).
        codecs: the allowed codecs (:func:`codec_set`).
        width: the fixed width to use (default: the bit length of the largest value).
        bounds: if given, receives ``{"data": order-0 entropy of the values in bytes}``.
        limit: the caller needs fewer bytes than this, or the stream is of no use: the
            entropy coders are skipped when the order-0 entropy already reaches it.

    Returns:
        ``(spec, streams)``: a JSON-able description and the byte streams (``data``, and
        ``table`` holding the code lengths, frequencies or values where the codec has one).
    """
    allowed = codec_set(codecs)
    values = np.asarray(values, dtype=np.int64).ravel()
    count = int(values.size)
    if width is None:
        width = int(values.max()).bit_length() if count else 0
    entropy = _entropy_bytes(values)
    if bounds is not None:
        bounds["data"] = entropy
    if limit is not None and entropy >= limit:
        allowed = CodecSet(frozenset(), allowed.positions, allowed.books)
    best_size = (width * count + 7) // 8
    best = ({"codec": "fixed", "count": count, "bits": width}, {"data": pack_bits(values, width)})

    def consider(spec, streams):
        nonlocal best, best_size
        size = sum(len(b) for b in streams.values())
        if size < best_size:
            best, best_size = (spec, streams), size

    if count == 0 or width == 0:
        return best
    used = np.unique(values)
    index_bits = int(used.size - 1).bit_length()
    if (used.size * width + 7) // 8 + (index_bits * count + 7) // 8 < best_size:
        index = np.searchsorted(used, values)
        consider({"codec": "mapped", "count": count, "bits": index_bits, "symbols": int(used.size),
                  "table_bits": width},
                 {"data": pack_bits(index, index_bits), "table": pack_bits(used, width)})
    # Entropy coders: estimate each (Huffman's estimate is exact, rANS's within a few bytes),
    # encode only the cheapest estimate, and keep it only if its real size is smaller.
    plans = []
    if "huffman" in allowed.entropy:
        cost, lengths = _huffman_cost(values)
        plans.append((cost, 0, "huffman", lengths))
    if "rans" in allowed.entropy and used.size > 1:
        cost, scale, freqs = _rans_plan(values)
        plans.append((cost, 1, "rans", (scale, freqs)))
    if "adaptive" in allowed.entropy and count * width <= ADAPTIVE_LIMIT:
        plans.append((_adaptive_ints_cost(values, width), 2, "adaptive", None))
    for cost, _, codec, plan in sorted(plans, key=lambda p: (p[0], p[1])):
        if cost >= best_size + 4:
            break
        before = best_size
        if codec == "huffman":
            payload, lengths = huffman_encode(values, plan)
            bits = _table_bits(lengths)
            consider({"codec": "huffman", "count": count, "symbols": int(lengths.size),
                      "table_bits": bits}, {"data": payload, "table": pack_bits(lengths, bits)})
        elif codec == "rans":
            scale, freqs = plan
            lanes = _rans_lanes(count)
            fbits = int(freqs.max()).bit_length()
            consider({"codec": "rans", "count": count, "scale": scale, "lanes": lanes,
                      "symbols": int(freqs.size), "table_bits": fbits},
                     {"data": rans.encode_static(values, freqs, scale, lanes),
                      "table": pack_bits(freqs, fbits)})
        else:
            consider({"codec": "adaptive", "count": count, "bits": width},
                     {"data": _encode_adaptive_ints(values, width)})
        if best_size < before:
            break  # the cheapest estimate won; otherwise try the next one
    return best


def decode_ints(spec: dict, streams: dict[str, bytes]) -> np.ndarray:
    """Inverse of :func:`encode_ints`.

    Raises:
        CorruptFileError: the streams do not match the description.
    """
    count = int(spec["count"])
    codec = spec["codec"]
    try:
        if codec == "fixed":
            width = int(spec["bits"])
            if len(streams["data"]) != (width * count + 7) // 8:
                raise CorruptFileError("packed integer stream has the wrong length")
            return unpack_bits(streams["data"], width, count)
        if codec == "mapped":
            table = unpack_bits(streams["table"], int(spec["table_bits"]), int(spec["symbols"]))
            index = unpack_bits(streams["data"], int(spec["bits"]), count)
            if index.size and index.max() >= table.size:
                raise CorruptFileError("mapped integer stream indexes past its table")
            return table[index]
        if codec == "huffman":
            n, table_bits = int(spec["symbols"]), int(spec["table_bits"])
            if table_bits == 8:  # files of format version 1: one byte per code length
                lengths = np.frombuffer(streams["table"], dtype=np.uint8)[:n].astype(np.int64)
            else:
                lengths = unpack_bits(streams["table"], table_bits, n)
            return huffman_decode(streams["data"], lengths, count)
        if codec == "rans":
            freqs = unpack_bits(streams["table"], int(spec["table_bits"]), int(spec["symbols"]))
            return rans.decode_static(streams["data"], freqs, count, int(spec["scale"]),
                                      int(spec["lanes"]))
        if codec == "adaptive":
            return _decode_adaptive_ints(streams["data"], int(spec["bits"]), count)
    except CorruptFileError:
        raise
    except (ValueError, IndexError) as exc:  # a stream that ends early or holds no code
        raise CorruptFileError(f"damaged integer stream: {exc}") from None
    raise CorruptFileError(f"unknown integer codec {codec!r}")


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
    # Two distinct values on a grid differ by at least its step, so the codes reach at least
    # peak / gap: a channel whose peak is 2**16 gaps or more lies on no usable grid.
    with np.errstate(divide="ignore", invalid="ignore"):
        if np.any(todo & ~(peak / gap < MAX_CODEBOOK)):
            return None
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


def _prefix(prefix: str, streams: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in streams.items()}


def _encode_ints_into(values, allowed, name, streams, bounds, width=None, limit=None) -> dict:
    """:func:`encode_ints` whose streams (and bounds) go into ``streams`` under ``name.``."""
    b: dict = {}
    spec, st = encode_ints(values, codecs=allowed, width=width, bounds=b, limit=limit)
    streams.update(_prefix(name, st))
    bounds.update(_prefix(name, b))
    return spec


def _encode_book(keys: np.ndarray, allowed: CodecSet, streams: dict, bounds: dict) -> dict:
    """A codebook's float32 values: raw, as float16 when each value is one exactly, or as
    integer codes on one grid (``scale * k``) when they lie on one."""
    f32 = keys.view(np.float32)
    best = ({"kind": "f32"}, {"codebook": f32.tobytes()}, {})
    size = 4 * f32.size
    if "f16" in allowed.books and np.array_equal(f32.astype(np.float16).astype(np.float32).view(np.uint32),
                                                 keys):
        best, size = ({"kind": "f16"}, {"codebook": f32.astype("<f2").tobytes()}, {}), 2 * f32.size
    if "affine" in allowed.books:
        fit = affine_fit(f32)
        if fit is not None:
            scale, k = float(fit[0][0]), fit[1]
            low = int(k.min()) if k.size else 0
            st: dict = {}
            bd: dict = {}
            ispec = _encode_ints_into(k - low, CODECS["fixed"], "codebook", st, bd)
            if sum(len(x) for x in st.values()) + 8 < size:
                best = ({"kind": "affine", "scale": scale, "offset": low, "codes": ispec}, st, bd)
    spec, st, bd = best
    streams.update(st)
    bounds.update(bd)
    return spec


def _decode_book(spec: dict | None, streams: dict[str, bytes], size: int) -> np.ndarray:
    kind = "f32" if spec is None else spec["kind"]  # format versions 1, 2: float32
    if kind == "f32":
        return np.frombuffer(streams["codebook"], dtype=np.float32)
    if kind == "f16":
        return np.frombuffer(streams["codebook"], dtype="<f2").astype(np.float32)
    if kind == "affine":
        k = decode_ints(spec["codes"], _sub(streams, "codebook")) + int(spec["offset"])
        return (float(spec["scale"]) * k).astype(np.float32)
    raise CorruptFileError(f"unknown codebook encoding {kind!r}")


def _encode_values(v: np.ndarray, index: np.ndarray, shape: tuple[int, ...],
                   allowed: CodecSet) -> tuple[dict, dict[str, bytes], dict]:
    """Cheapest exact encoding of float32 values ``v`` (at flat positions ``index`` of ``shape``)."""
    best = (4 * v.size, {"kind": "raw"}, {"values": v.tobytes()}, {})
    if v.size == 0:
        return best[1:]
    keys, inverse = np.unique(v.view(np.uint32), return_inverse=True)
    candidates = []
    if keys.size <= MAX_CODEBOOK and keys.size < 0.9 * v.size:
        streams: dict = {}
        bounds: dict = {}
        book = _encode_book(keys, allowed, streams, bounds)
        ispec = _encode_ints_into(inverse, allowed, "indices", streams, bounds,
                                  limit=best[0] - sum(len(b) for b in streams.values()))
        spec = {"kind": "codebook", "size": int(keys.size), "indices": ispec}
        if book["kind"] != "f32":
            spec["book"] = book
        candidates.append((spec, streams, bounds))
    smallest = min([best[0]] + [sum(len(b) for b in c[1].values()) for c in candidates])
    candidates.extend(_affine_candidates(v, keys, inverse, index, shape, allowed, smallest))
    for spec, streams, bounds in candidates:
        size = sum(len(b) for b in streams.values())
        if size < best[0]:
            best = (size, spec, streams, bounds)
    return best[1:]


_FITS: dict = {}


def _cached_fit(v: np.ndarray, index: np.ndarray | None, shape: tuple, axis: int | None):
    """:func:`affine_fit` of ``v`` (one scale, or one per channel along ``axis`` of the
    values at flat positions ``index``), remembered for the last arrays: the same array is
    fitted once per codec set it is encoded with."""
    import hashlib

    h = hashlib.blake2b(v.tobytes(), digest_size=16)
    if index is not None:
        h.update(np.ascontiguousarray(index, np.int64).tobytes())
    key = (h.digest(), shape, axis)
    if key not in _FITS:
        if len(_FITS) >= 256:
            _FITS.pop(next(iter(_FITS)))
        _FITS[key] = (affine_fit(v) if axis is None else
                      affine_fit(v, _channel_ids(index, shape, axis), shape[axis]))
    return _FITS[key]


def _affine_candidates(v, keys, inverse, index, shape, allowed, limit=None):
    out = []
    fit = _cached_fit(keys.view(np.float32), None, shape, None) if keys.size <= MAX_CODEBOOK else None
    if fit is not None:
        scale, k = float(fit[0][0]), fit[1]
        codes = k[inverse]
        low = int(codes.min())
        streams: dict = {}
        bounds: dict = {}
        ispec = _encode_ints_into(codes - low, allowed, "codes", streams, bounds, limit=limit)
        out.append(({"kind": "affine", "scale": scale, "offset": low, "codes": ispec}, streams, bounds))
        return out  # one scale fits: per-channel scales cannot be smaller
    for axis in range(len(shape)):
        if shape[axis] <= 1:
            continue
        fit = _cached_fit(v, index, shape, axis)
        if fit is None:
            continue
        scales, codes = fit
        low = int(codes.min())
        f32 = np.array_equal(scales.astype(np.float32).astype(np.float64), scales)
        streams = {"scales": scales.astype(np.float32 if f32 else np.float64).tobytes()}
        bounds = {}
        ispec = _encode_ints_into(codes - low, allowed, "codes", streams, bounds,
                                  limit=None if limit is None else limit - len(streams["scales"]))
        if limit is not None:
            limit = min(limit, sum(len(b) for b in streams.values()))
        out.append(({"kind": "affine_channel", "channels": int(shape[axis]), "axis": axis,
                     "scale_dtype": "<f4" if f32 else "<f8", "offset": low, "codes": ispec},
                    streams, bounds))
    return out


def _sub(streams: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    return {k[len(prefix) + 1:]: b for k, b in streams.items() if k.startswith(prefix + ".")}


def _decode_values(spec: dict, streams: dict[str, bytes], index: np.ndarray,
                   shape: tuple[int, ...]) -> np.ndarray:
    kind, count = spec["kind"], index.size
    if kind == "raw":
        v = np.frombuffer(streams["values"], dtype=np.float32)
    elif kind == "codebook":
        codebook = _decode_book(spec.get("book"), streams, int(spec["size"]))
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
# Positions: a bitmask coded with its row/column context
# ---------------------------------------------------------------------------------------

# Density buckets: the estimate (2k + 1) / (2n + 2) of the ones among the n positions seen
# in a row (or column), in 1/4096, compared with half-octave steps from 1/256 to 1/2.
_DENSITY_STEPS = (16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 1448, 2048)
_NONE_SEEN = len(_DENSITY_STEPS) + 1   # the bucket of a row (column) with nothing seen yet
_BUCKETS = _NONE_SEEN + 1
CONTEXT_MODELS = ("row", "column", "row+column")
CONTEXT_LIMIT = 1 << 21  # most positions a context-coded bitmask may have (decoding is a loop)


def _density_bucket(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    q = ((2 * k + 1) << 12) // (2 * n + 2)
    return np.where(n == 0, _NONE_SEEN, np.searchsorted(_DENSITY_STEPS, q, side="right"))


def mask_contexts(mask: np.ndarray, model: str) -> np.ndarray:
    """The context of each bit of a 2-D bitmask scanned row by row (C order).

    A kernel's rows are its inputs and its columns its outputs (a conv kernel is viewed as
    ``(kh * kw * in, out)``). An input that never fires leaves a row of zeros, a dead unit a
    column of zeros: how dense the row (column) was so far predicts the next bit. ``model``
    is ``"row"``, ``"column"`` or ``"row+column"`` (the pair of both buckets).
    """
    mask = np.asarray(mask, dtype=np.int64)
    rows, cols = mask.shape
    row_ones = np.cumsum(mask, axis=1) - mask
    col_ones = np.cumsum(mask, axis=0) - mask
    rb = _density_bucket(row_ones, np.broadcast_to(np.arange(cols), mask.shape))
    cb = _density_bucket(col_ones, np.broadcast_to(np.arange(rows)[:, None], mask.shape))
    ctx = {"row": rb, "column": cb, "row+column": rb * _BUCKETS + cb}[model]
    return ctx.ravel()


def _view_2d(shape: tuple[int, ...]) -> tuple[int, int]:
    cols = shape[-1] if len(shape) >= 2 else 1
    return int(np.prod(shape, dtype=np.int64)) // max(cols, 1), cols


def _context_plan(positions: np.ndarray, shape: tuple[int, ...]) -> tuple[float, str, np.ndarray, np.ndarray]:
    rows, cols = _view_2d(shape)
    mask = np.zeros(rows * cols, np.int64)
    mask[positions] = 1
    mask = mask.reshape(rows, cols)
    best = (np.inf, "", mask.ravel(), np.zeros(0, np.int64))
    for model in CONTEXT_MODELS:
        p1 = adaptive_probabilities(mask.ravel(), mask_contexts(mask, model))
        cost = _binary_cost_bytes(mask.ravel(), p1)
        if cost < best[0]:
            best = (cost, model, mask.ravel(), p1)
    return best


def _decode_context_mask(data: bytes, shape: tuple[int, ...], model: str) -> np.ndarray:
    import bisect

    rows, cols = _view_2d(shape)
    dec = rans.BinaryDecoder(data)
    n0 = [0] * (_BUCKETS * _BUCKETS)
    n1 = [0] * (_BUCKETS * _BUCKETS)
    col_ones = [0] * cols
    steps = _DENSITY_STEPS
    out = bytearray(rows * cols)

    def bucket(k: int, n: int) -> int:
        return _NONE_SEEN if n == 0 else bisect.bisect_right(steps, ((2 * k + 1) << 12) // (2 * n + 2))

    pos = 0
    for i in range(rows):
        row_ones = 0
        for j in range(cols):
            if model == "row":
                c = bucket(row_ones, j)
            elif model == "column":
                c = bucket(col_ones[j], i)
            else:
                c = bucket(row_ones, j) * _BUCKETS + bucket(col_ones[j], i)
            a, b = n0[c], n1[c]
            p = ((2 * b + 1) << 12) // (2 * (a + b) + 2)
            bit = dec.decode(1 if p < 1 else (4095 if p > 4095 else p))
            if bit:
                n1[c] = b + 1
                row_ones += 1
                col_ones[j] += 1
                out[pos] = 1
            else:
                n0[c] = a + 1
            pos += 1
    if not dec.finished():
        raise CorruptFileError("context-coded bitmask damaged: it does not end in the initial state")
    return np.flatnonzero(np.frombuffer(bytes(out), dtype=np.uint8))


# ---------------------------------------------------------------------------------------
# Whole arrays
# ---------------------------------------------------------------------------------------

def encode_array(x: Any, *, codecs: str | CodecSet = "all", huffman: bool | None = None,
                 info: dict | None = None) -> tuple[dict, dict[str, bytes]]:
    """Encode one weight array in the cheapest exact encoding (see the module docstring).

    Args:
        x: the array. float32 arrays get every encoding; other dtypes are stored raw.
        codecs: the codecs allowed (:func:`codec_set`): ``"all"`` (default), ``"huffman"``
            (Deep Compression's: Huffman coding, relative indices or a bitmask, float32
            codebooks) or ``"fixed"`` (no entropy coding: the paper's "pruning +
            quantization" stage).
        huffman: ``False`` is ``codecs="fixed"`` (kept for older callers).
        info: if given, receives ``{stream name: order-0 entropy bound in bytes}`` for the
            integer streams and the positions.

    Returns:
        ``(spec, streams)``: a JSON-able description and named byte streams.

    Raises:
        TypeError: an array of a dtype that is not a number.
    """
    allowed = codec_set("fixed" if huffman is False else codecs)
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
    vspec, vstreams, vbounds = _encode_values(flat, np.arange(flat.size), shape, allowed)
    options.append(({**spec, "layout": "dense", "values": vspec}, _prefixed(vspec, vstreams),
                    _prefixed(vspec, vbounds)))
    # sparse: positions + non-zero values
    positions = np.flatnonzero(flat)
    if positions.size < flat.size:
        pspec, pstreams, pbounds = _encode_positions(positions, shape, allowed)
        vspec, vstreams, vbounds = _encode_values(flat[positions], positions, shape, allowed)
        options.append(({**spec, "layout": "sparse", "nonzero": int(positions.size),
                         "positions": pspec, "values": vspec},
                        {**_prefix("positions", pstreams), **_prefixed(vspec, vstreams)},
                        {**_prefix("positions", pbounds), **_prefixed(vspec, vbounds)}))
    spec, streams, bounds = min(options, key=lambda o: sum(len(b) for b in o[1].values()))
    if info is not None:
        info.update(bounds)
    return spec, streams


def _prefixed(vspec: dict, vstreams: dict) -> dict:
    return {f"values.{k}" if vspec["kind"] != "raw" else k: b for k, b in vstreams.items()}


def _mask_entropy(k: int, n: int) -> float:
    d = k / n
    return 0.0 if d in (0.0, 1.0) else float(n * (-d * np.log2(d) - (1 - d) * np.log2(1 - d)) / 8)


def _encode_positions(positions: np.ndarray, shape: tuple[int, ...],
                      allowed: CodecSet) -> tuple[dict, dict[str, bytes], dict]:
    """The positions of the non-zeros: bitmask, relative indices or context-coded bitmask,
    the smallest measured. Bound: the order-0 entropy of the bitmask (what any code that
    treats the positions as independent draws needs)."""
    n = int(np.prod(shape, dtype=np.int64))
    mask_bound = _mask_entropy(positions.size, n)
    relative_bounds: dict = {}
    mask = np.zeros(n, np.uint8)
    mask[positions] = 1
    best = ((n + 7) // 8, {"kind": "bitmask"}, {"mask": pack_bits(mask, 1)})
    plan = None
    widths = []
    for bits in range(1, MAX_INDEX_BITS + 1):
        entries = relative_index_encode(positions, bits)
        cost = (entries.size * bits + 7) // 8
        if "huffman" in allowed.entropy and entries.size:
            cost = min(cost, _huffman_cost(entries)[0])
        widths.append((cost, bits, entries))
    widths.sort(key=lambda w: w[0])
    for i, (cost, bits, entries) in enumerate(widths):
        # the adaptive coder is within a few percent of Huffman's cost: try it on the three
        # widths Huffman (or fixed width) codes best
        if i < 3 and "adaptive" in allowed.entropy and 0 < entries.size * bits <= ADAPTIVE_LIMIT:
            cost = min(cost, _adaptive_ints_cost(entries, bits))
        if plan is None or cost < plan[0]:
            plan = (cost, bits, entries)
    if plan is not None and plan[0] < best[0] + 16:  # estimates: encode the best, compare bytes
        _, bits, entries = plan
        streams: dict = {}
        ispec = _encode_ints_into(entries, allowed, "entries", streams, relative_bounds, width=bits)
        size = sum(len(b) for b in streams.values())
        if size < best[0]:
            best = (size, {"kind": "relative", "bits": bits, "entries": ispec}, streams)
    if "context" in allowed.positions and len(shape) >= 2 and 0 < positions.size and n <= CONTEXT_LIMIT:
        cost, model, bits, p1 = _context_plan(positions, shape)
        if cost < best[0]:
            data = rans.encode_binary(bits, p1)
            if len(data) < best[0]:
                best = (len(data), {"kind": "context", "model": model}, {"mask": data})
    if best[1]["kind"] == "relative":
        return best[1], best[2], relative_bounds
    return best[1], best[2], {"mask": mask_bound}


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
    elif pspec["kind"] == "context":
        if pspec.get("model") not in CONTEXT_MODELS or len(shape) < 2:
            raise CorruptFileError(f"unknown context model {pspec.get('model')!r}")
        try:
            positions = _decode_context_mask(streams["positions.mask"], shape, pspec["model"])
        except ValueError as exc:
            raise CorruptFileError(f"damaged positions: {exc}") from None
    else:
        raise CorruptFileError(f"unknown position encoding {pspec['kind']!r}")
    if positions.size != spec["nonzero"] or (positions.size and positions[-1] >= n):
        raise CorruptFileError("sparse positions do not match the array's shape")
    vstreams = streams if spec["values"]["kind"] == "raw" else _sub(streams, "values")
    values = _decode_values(spec["values"], vstreams, positions, shape)
    flat = np.zeros(n, dtype=np.float32)
    flat[positions] = values
    return flat.reshape(shape)
