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

import bisect
import heapq
from typing import Any

import numpy as np

from compressnet_lite._checks import check_positive_int

__all__ = [
    "MAX_CODE_LENGTH", "huffman_code_lengths", "package_merge", "canonical_codes",
    "huffman_encode", "huffman_decode", "entropy_bits",
]

MAX_CODE_LENGTH = 16  # default limit: a decoder table has at most 2**16 entries


def huffman_code_lengths(counts: Any, max_length: int | None = MAX_CODE_LENGTH) -> np.ndarray:
    """Length in bits of each symbol's Huffman code, from the symbols' counts.

    Repeatedly merges the two least frequent subtrees (a min-heap); a symbol's code length
    is its depth in the final tree. Symbols with count 0 get length 0 (no code), so all-zero
    counts give no codes. A lone symbol gets length 1 so that it still costs one bit per
    occurrence.

    Huffman's tree can be deep: counts that grow like the Fibonacci numbers give a code of
    length ``k - 1`` for ``k`` symbols. When the tree is deeper than ``max_length``, the
    optimal code *among those no longer than* ``max_length`` is computed instead, by
    :func:`package_merge` (Larmore & Hirschberg 1990), so that a decoder can look every code up
    in a table of ``2**max_length`` entries.

    Args:
        counts: non-negative integer counts, one per symbol ``0 .. len(counts) - 1``.
        max_length: longest code allowed (default 16); ``None`` for no limit.

    Returns:
        An int64 array of code lengths, same length as ``counts``.

    Raises:
        ValueError: ``counts`` is not 1-D, is empty, or holds negative or non-integer values;
            ``max_length`` is too small for the number of used symbols.

    Example:
        >>> huffman_code_lengths([45, 13, 12, 16, 9, 5]).tolist()   # CLRS's example
        [1, 3, 3, 3, 4, 4]
        >>> huffman_code_lengths([1, 1, 2, 3, 5, 8], max_length=3).tolist()  # unlimited: 5,5,4,3,2,1
        [3, 3, 3, 3, 2, 2]
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0) or \
            np.any(counts != np.floor(counts)):
        raise ValueError("counts must hold non-negative integers")
    if max_length is not None:
        max_length = check_positive_int(max_length, "max_length", maximum=63)
    lengths = np.zeros(counts.size, dtype=np.int64)
    used = np.flatnonzero(counts)
    if used.size <= 1:
        lengths[used] = 1
        return lengths
    if max_length is not None and used.size > 1 << max_length:
        raise ValueError(f"max_length={max_length} allows at most {1 << max_length} codes, "
                         f"{used.size} symbols are used")
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
    if max_length is not None and lengths.max() > max_length:
        lengths[used] = package_merge(counts[used], max_length)
    return lengths


def package_merge(counts: Any, max_length: int) -> np.ndarray:
    """Optimal prefix-code lengths no longer than ``max_length`` (Larmore & Hirschberg 1990).

    The "coin collector" view: every symbol is a coin of face value ``2**-l`` for each
    level ``l = 1 .. max_length``, weighted by its count. Starting from the deepest level,
    the sorted coins of a level are paired into *packages* (value doubled, weights added)
    and merged into the coins of the level above; the cheapest ``2 (n - 1)`` items of the top
    level pay for a total value ``n - 1``, and a symbol's code length is the number of times
    it occurs in them (directly or inside packages). Each level's list is kept only as a
    boolean "is this item a coin", so the whole computation is a few sorts per level.

    Args:
        counts: positive counts of the ``n >= 2`` used symbols.
        max_length: longest code allowed, with ``2**max_length >= n``.

    Returns:
        The code lengths (int64), satisfying Kraft's inequality with equality.
    """
    w = np.asarray(counts, dtype=np.float64)
    n = w.size
    order = np.argsort(w, kind="stable")
    coins = w[order]
    levels = []          # per level (deepest first): is_coin flags of the merged, sorted list
    items = coins
    for _ in range(max_length - 1):
        packages = items[0:2 * (items.size // 2):2] + items[1:2 * (items.size // 2):2]
        merged = np.concatenate([coins, packages])
        is_coin = np.concatenate([np.ones(n, bool), np.zeros(packages.size, bool)])
        sort = np.argsort(merged, kind="stable")  # ties: coins before packages
        levels.append(is_coin[sort])
        items = merged[sort]
    lengths = np.zeros(n, dtype=np.int64)
    take = 2 * (n - 1)   # items taken from the current level
    for is_coin in reversed(levels):
        chosen = is_coin[:take]
        n_coins = int(chosen.sum())
        lengths[:n_coins] += 1       # the coins of a level are the cheapest symbols, in order
        take = 2 * (take - n_coins)  # each chosen package is two items of the level below
    lengths[:take] += 1              # the deepest level holds only coins
    out = np.empty(n, dtype=np.int64)
    out[order] = lengths
    return out


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


def huffman_encode(symbols: Any, lengths: Any = None) -> tuple[bytes, np.ndarray]:
    """Huffman-code a stream of non-negative integer symbols.

    Args:
        symbols: 1-D array of non-negative integers.
        lengths: code lengths to use (one per symbol value); by default they are computed
            from the symbols' own counts with :func:`huffman_code_lengths` (at most
            :data:`MAX_CODE_LENGTH` bits).

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
    # One row of max_len bit slots per symbol; a code of length l fills the first l slots.
    # Reading the filled slots row by row gives the bit stream (memory: max_len bytes per symbol).
    max_len = int(sym_len.max())
    slot = np.arange(max_len, dtype=np.int64)
    shift = np.clip(sym_len[:, None] - 1 - slot, 0, None).astype(np.uint64)
    bits = ((codes[symbols][:, None] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits[slot < sym_len[:, None]]).tobytes(), lengths


def huffman_decode(payload: bytes, lengths: Any, count: int) -> np.ndarray:
    """Decode ``count`` symbols from a canonical Huffman bit stream.

    Codes of at most :data:`MAX_CODE_LENGTH` bits are decoded through a table of
    ``2**max_len`` entries indexed by the next ``max_len`` bits of the stream: one table read
    per symbol. Longer codes (written by an encoder without a length limit) are decoded with
    the canonical code's "first code of each length" limits, a binary search per symbol.
    The stream is read through one 32-bit window per payload byte (never a value per bit).

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
    max_len = int(lengths.max())
    n_bits = 8 * len(payload)
    data = bytes(payload) + bytes(9)
    out = [0] * count
    if max_len <= MAX_CODE_LENGTH:
        # table[w] for every max_len-bit window w that starts with a code: (symbol, length)
        span = np.left_shift(1, max_len - lengths[used])
        starts = codes[used].astype(np.int64) << (max_len - lengths[used])
        table_sym = np.full(1 << max_len, -1, dtype=np.int64)
        table_len = np.zeros(1 << max_len, dtype=np.int64)
        index = np.repeat(starts, span) + (np.arange(int(span.sum())) -
                                           np.repeat(np.cumsum(span) - span, span))
        table_sym[index] = np.repeat(used, span)
        table_len[index] = np.repeat(lengths[used], span)
        buf = np.frombuffer(data, dtype=np.uint8).astype(np.uint32)
        windows = ((buf[:-3] << 24) | (buf[1:-2] << 16) | (buf[2:-1] << 8) | buf[3:]).tolist()
        sym_l, len_l = table_sym.tolist(), table_len.tolist()
        shift, mask, p = 32 - max_len, (1 << max_len) - 1, 0
        for i in range(count):
            if p >= n_bits:
                raise ValueError(f"Huffman stream ended after {i} of {count} symbols")
            w = (windows[p >> 3] >> (shift - (p & 7))) & mask
            s = sym_l[w]
            if s < 0:
                raise ValueError(f"invalid Huffman code at bit {p}")
            out[i] = s
            p += len_l[w]
    else:
        # Canonical decoding: codes of length l are consecutive from first[l]; a max_len-bit
        # window v starts with a code of the smallest l with v < limit[l].
        order = used[np.lexsort((used, lengths[used]))]
        limits, firsts, offsets, lens = [], [], [], []
        for n in range(1, max_len + 1):
            of_len = np.flatnonzero(lengths[order] == n)
            if of_len.size:
                first = int(codes[order[of_len[0]]])
                lens.append(n)
                firsts.append(first)
                offsets.append(int(of_len[0]))
                limits.append((first + of_len.size) << (max_len - n))
        sorted_syms = order.tolist()
        mask, p = (1 << max_len) - 1, 0
        for i in range(count):
            if p >= n_bits:
                raise ValueError(f"Huffman stream ended after {i} of {count} symbols")
            b = p >> 3
            v = (int.from_bytes(data[b:b + 9], "big") >> (72 - max_len - (p & 7))) & mask
            j = bisect.bisect_right(limits, v)
            if j == len(limits):
                raise ValueError(f"invalid Huffman code at bit {p}")
            n = lens[j]
            out[i] = sorted_syms[offsets[j] + (v >> (max_len - n)) - firsts[j]]
            p += n
    if p > n_bits:
        raise ValueError(f"Huffman stream ended inside symbol {count - 1}")
    return np.asarray(out, dtype=np.int64)


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
