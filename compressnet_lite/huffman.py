"""Huffman coding in NumPy and ``heapq``: code lengths, canonical codes, encode, decode.

Deep Compression (Han, Mao & Dally 2016) ends with Huffman coding of the two integer
streams it stores: the cluster index of every kept weight and the relative position of
every kept weight. Both are far from uniform, so a variable-length prefix code saves
20-30% over fixed-width packing. Huffman's code (Huffman 1952) is optimal among prefix
codes for a known symbol distribution: its average length ``L`` satisfies
``H <= L < H + 1`` where ``H`` is the Shannon entropy in bits per symbol.

A *canonical* code is determined by its code lengths alone (codes are assigned in order
of length, then symbol), so a file stores one small length per symbol, not a tree.

Example:
    >>> import numpy as np
    >>> symbols = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    >>> payload, lengths = huffman_encode(symbols)
    >>> lengths.tolist()
    [1, 2, 3, 3]
    >>> huffman_decode(payload, lengths, len(symbols)).tolist()
    [0, 0, 0, 0, 1, 1, 2, 3]
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from compressnet_lite._checks import check_positive_int

__all__ = [
    "huffman_code_lengths", "canonical_codes", "huffman_encode", "huffman_decode",
    "entropy_bits", "pack_bits", "unpack_bits",
]

_TABLE_BITS = 20  # decode through a lookup table when the longest code is at most this long


def huffman_code_lengths(counts: Any) -> np.ndarray:
    """Length in bits of each symbol's Huffman code, from the symbols' counts.

    Repeatedly merges the two least frequent subtrees (a min-heap); a symbol's code length
    is its depth in the final tree. Symbols with count 0 get length 0 (no code), so all-zero
    counts give no codes. A lone symbol gets length 1 so that it still costs one bit per
    occurrence.

    Args:
        counts: non-negative integer counts, one per symbol ``0 .. len(counts) - 1``.

    Returns:
        An int64 array of code lengths, same length as ``counts``.

    Raises:
        ValueError: ``counts`` is not 1-D, is empty, or holds negative or non-integer values.

    Example:
        >>> huffman_code_lengths([45, 13, 12, 16, 9, 5]).tolist()   # CLRS's example
        [1, 3, 3, 3, 4, 4]
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0) or \
            np.any(counts != np.floor(counts)):
        raise ValueError("counts must hold non-negative integers")
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = np.flatnonzero(counts)
    if used.size <= 1:
        lengths[used] = 1
        return lengths
    # Heap items: (count, node id). Leaves are nodes 0..k-1, each merge creates the next
    # id, so ties break by creation order and the result is deterministic.
    k = used.size
    parent = np.zeros(2 * k - 1, dtype=np.int64)
    heap = [(int(counts[s]), i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    for node in range(k, 2 * k - 1):
        c1, a = heapq.heappop(heap)
        c2, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (c1 + c2, node))
    depth = np.zeros(2 * k - 1, dtype=np.int64)
    for node in range(2 * k - 3, -1, -1):  # parents have larger ids: walk from the root down
        depth[node] = depth[parent[node]] + 1
    lengths[used] = depth[:k]
    return lengths


def canonical_codes(lengths: Any) -> np.ndarray:
    """The canonical prefix code for the given code lengths (as integers, MSB first).

    Symbols are sorted by (length, symbol); each code is the previous one plus one,
    shifted left whenever the length grows. Symbols of length 0 get code 0 (unused).

    Raises:
        ValueError: the lengths violate Kraft's inequality (no prefix code has them).

    Example:
        >>> [format(int(c), "b") for c in canonical_codes([1, 2, 3, 3])]
        ['0', '10', '110', '111']
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if np.any(lengths < 0) or np.any(lengths > 63):
        raise ValueError("code lengths must be in 0..63")
    used = np.flatnonzero(lengths)
    if used.size and np.sum(2.0 ** -lengths[used]) > 1.0 + 1e-12:
        raise ValueError("code lengths violate Kraft's inequality: not a prefix code")
    codes = np.zeros(lengths.size, dtype=np.uint64)
    order = used[np.lexsort((used, lengths[used]))]
    code, prev = 0, 0
    for s in order:
        code <<= int(lengths[s]) - prev
        prev = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def pack_bits(values: Any, width: int) -> bytes:
    """Pack non-negative integers into ``width`` bits each, MSB first (the last byte zero-padded)."""
    values = np.asarray(values, dtype=np.uint64).ravel()
    if width == 0 or values.size == 0:
        return b""
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    bits = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def unpack_bits(payload: bytes, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` integers of ``width`` bits each (int64)."""
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=width * count)
    bits = bits.reshape(count, width).astype(np.int64)
    return bits @ (np.int64(1) << np.arange(width - 1, -1, -1, dtype=np.int64))


def huffman_encode(symbols: Any, lengths: Any = None) -> tuple[bytes, np.ndarray]:
    """Huffman-code a stream of non-negative integer symbols.

    Args:
        symbols: 1-D array of non-negative integers.
        lengths: code lengths to use (one per symbol value); by default they are computed
            from the symbols' own counts with :func:`huffman_code_lengths`.

    Returns:
        ``(payload, lengths)``: the bit stream packed into bytes (MSB first, zero-padded to
        a whole byte) and the code lengths needed to decode it.

    Raises:
        ValueError: negative symbols, or a symbol without a code in ``lengths``.
    """
    symbols = np.asarray(symbols).ravel()
    if symbols.size and (not np.issubdtype(symbols.dtype, np.integer) or symbols.min() < 0):
        raise ValueError("symbols must be non-negative integers")
    symbols = symbols.astype(np.int64)
    if lengths is None:
        counts = np.bincount(symbols, minlength=1) if symbols.size else np.zeros(1, np.int64)
        lengths = huffman_code_lengths(counts) if symbols.size else np.zeros(1, np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.size == 0:
        return b"", lengths
    if symbols.max() >= lengths.size or np.any(lengths[symbols] == 0):
        raise ValueError("a symbol has no code in lengths")
    codes = canonical_codes(lengths)
    sym_len = lengths[symbols]
    total = int(sym_len.sum())
    owner = np.repeat(np.arange(symbols.size), sym_len)           # which symbol each bit belongs to
    starts = np.cumsum(sym_len) - sym_len
    pos = np.arange(total) - starts[owner]                         # bit index inside that code
    shift = (sym_len[owner] - 1 - pos).astype(np.uint64)
    bits = ((codes[symbols][owner] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes(), lengths


def huffman_decode(payload: bytes, lengths: Any, count: int) -> np.ndarray:
    """Decode ``count`` symbols from a canonical Huffman bit stream.

    Args:
        payload: the bytes from :func:`huffman_encode`.
        lengths: the code lengths the stream was encoded with.
        count: number of symbols to read.

    Returns:
        An int64 array of ``count`` symbols.

    Raises:
        TypeError: ``count`` is not an integer.
        ValueError: ``count`` is negative, or the stream ends early or holds a bit pattern
            that is no code.
    """
    count = check_positive_int(count, "count", minimum=0)
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    used = np.flatnonzero(lengths)
    if used.size == 0:
        raise ValueError("huffman_decode: no symbol has a code")
    codes = canonical_codes(lengths)
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8))
    max_len = int(lengths.max())
    out = np.empty(count, dtype=np.int64)
    if max_len <= _TABLE_BITS:
        # Lookup table over every max_len-bit window: the window starting with a code
        # maps to (symbol, length). One table read per symbol.
        table_sym = np.full(1 << max_len, -1, dtype=np.int64)
        table_len = np.zeros(1 << max_len, dtype=np.int64)
        for s in used:
            lo = int(codes[s]) << (max_len - int(lengths[s]))
            hi = lo + (1 << (max_len - int(lengths[s])))
            table_sym[lo:hi] = s
            table_len[lo:hi] = lengths[s]
        padded = np.concatenate([bits, np.zeros(max_len, np.uint8)]).astype(np.int64)
        # windows[p] = the max_len bits starting at bit p, as an integer
        windows = np.zeros(bits.size + 1, dtype=np.int64)
        for j in range(max_len):
            windows = (windows << 1) | padded[j:j + bits.size + 1]
        windows_l, sym_l, len_l = windows.tolist(), table_sym.tolist(), table_len.tolist()
        p, n_bits = 0, bits.size
        for i in range(count):
            if p >= n_bits:
                raise ValueError(f"Huffman stream ended after {i} of {count} symbols")
            w = windows_l[p]
            s = sym_l[w]
            if s < 0:
                raise ValueError(f"invalid Huffman code at bit {p}")
            out[i] = s
            p += len_l[w]
        if p > n_bits:
            raise ValueError(f"Huffman stream ended inside symbol {count - 1}")
        return out
    # Long codes: walk bit by bit through the canonical code (first code of each length).
    lookup = {(int(lengths[s]), int(codes[s])): int(s) for s in used}
    bits_l = bits.tolist()
    p = 0
    for i in range(count):
        code, n = 0, 0
        while True:
            if p >= len(bits_l):
                raise ValueError(f"Huffman stream ended after {i} of {count} symbols")
            code = (code << 1) | bits_l[p]
            p += 1
            n += 1
            if (n, code) in lookup:
                out[i] = lookup[(n, code)]
                break
            if n > max_len:
                raise ValueError(f"invalid Huffman code at bit {p - n}")
    return out


def entropy_bits(symbols: Any) -> float:
    """Shannon entropy of a symbol stream's empirical distribution, in bits per symbol.

    No lossless code that codes each symbol independently (by its frequency) averages
    fewer bits per symbol; Huffman's code is within one bit of it.

    Example:
        >>> entropy_bits([0, 1, 0, 1])
        1.0
    """
    symbols = np.asarray(symbols).ravel()
    if symbols.size == 0:
        return 0.0
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())
