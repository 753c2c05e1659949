"""rANS: an entropy coder that spends fractions of a bit per symbol (Duda 2013).

Huffman's code gives every symbol a whole number of bits, so it loses up to one bit per
symbol against the entropy ``H`` (and at least ``1 - H`` bits on a two-symbol stream whose
entropy is below one bit: a bitmask at 8% density has ``H = 0.40`` bits, Huffman needs 1).
Arithmetic coding reaches ``H`` by coding the whole stream as one number; *range asymmetric
numeral systems* (rANS) does the same with one integer state ``x``:

* a symbol ``s`` with frequency ``f_s`` out of ``M = 2^scale`` (and cumulative start
  ``c_s``) is encoded as ``x <- (x // f_s) * M + (x % f_s) + c_s``: the state grows by a
  factor ``M / f_s``, i.e. by ``-log2(f_s / M)`` bits, exactly the information of ``s``;
* decoding reads ``slot = x % M``, finds the ``s`` with ``c_s <= slot < c_s + f_s``, and
  inverts: ``x <- f_s * (x // M) + slot - c_s``.

Decoding pops symbols in the reverse order of encoding, so the encoder runs backwards over
the stream. The state is kept in ``[2^16, 2^32)`` by moving 16-bit words out (encoder) and
in (decoder) whenever it leaves that interval; at most one word per symbol. The coded size
is ``sum(-log2(f_s / M))`` bits plus a 4-byte final state: within a few bytes of the
entropy bound when the frequencies match the stream.

The frequencies may change from symbol to symbol as long as the decoder can compute the
same ones before it decodes each symbol: :func:`encode` takes one ``(start, freq)`` pair per
symbol, so the same coder serves a static table (:func:`encode_static`) and an adaptive
binary model with contexts (the positions coder of :mod:`compressnet_lite.codecs`).

Large streams are split into ``lanes`` interleaved states (symbol ``i`` goes to lane
``i % lanes``), which NumPy advances together; ``lanes=1`` is the plain coder above.

Example:
    >>> import numpy as np
    >>> s = np.array([0, 0, 1, 0, 2, 0, 0, 1])
    >>> freqs = normalized_frequencies(np.bincount(s), scale=8)
    >>> freqs.tolist()
    [160, 64, 32]
    >>> data = encode_static(s, freqs, scale=8)
    >>> decode_static(data, freqs, len(s), scale=8).tolist()
    [0, 0, 1, 0, 2, 0, 0, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compressnet_lite._checks import check_positive_int

__all__ = [
    "MAX_SCALE", "normalized_frequencies", "encode", "encode_static", "decode_static",
    "static_cost_bits", "BinaryDecoder", "encode_binary", "PROB_SCALE",
]

MAX_SCALE = 16          # frequencies add up to 2**scale, scale <= 16
PROB_SCALE = 12         # binary models: probabilities in units of 2**-12
_LOW = 1 << 16          # the state lives in [_LOW, 2**32)
_MASK16 = 0xFFFF


def normalized_frequencies(counts: Any, scale: int) -> np.ndarray:
    """Integer frequencies summing to ``2**scale``, proportional to ``counts``.

    Every symbol with a non-zero count keeps a frequency of at least 1 (it must stay
    codable); symbols with count 0 get 0. The rounding error is taken from the largest
    frequencies.

    Raises:
        ValueError: ``counts`` holds no positive count, or more used symbols than
            ``2**scale``; ``scale`` outside 1..16.

    Example:
        >>> normalized_frequencies([5, 0, 1, 2], scale=4).tolist()
        [10, 0, 2, 4]
    """
    scale = check_positive_int(scale, "scale", maximum=MAX_SCALE)
    counts = np.asarray(counts, dtype=np.float64).ravel()
    total = 1 << scale
    used = counts > 0
    if not used.any():
        raise ValueError("counts must hold at least one positive count")
    if used.sum() > total:
        raise ValueError(f"{int(used.sum())} used symbols do not fit in 2**{scale} = {total}")
    freqs = np.where(used, np.maximum(1, np.floor(counts / counts.sum() * total)), 0).astype(np.int64)
    order = np.argsort(-counts, kind="stable")[:int(used.sum())]  # largest first
    diff = total - int(freqs.sum())
    while diff != 0:  # hand the rounding error to the largest symbols, one unit each per round
        if diff > 0:
            take = order[:diff]
            freqs[take] += 1
        else:
            room = order[freqs[order] > 1][:-diff]
            freqs[room] -= 1
            take = room
        diff = total - int(freqs.sum())
    return freqs


def static_cost_bits(counts: Any, freqs: Any, scale: int) -> float:
    """Payload bits of :func:`encode_static` for a stream with these symbol ``counts``
    (without the 32-bit final state): ``sum(counts * -log2(freqs / 2**scale))``."""
    counts = np.asarray(counts, dtype=np.float64)
    freqs = np.asarray(freqs, dtype=np.float64)[:counts.size]
    used = counts > 0
    return float(-(counts[used] * np.log2(freqs[used] / (1 << scale))).sum())


def encode(starts: Any, freqs: Any, scale: int, lanes: int = 1) -> bytes:
    """rANS-encode a stream given each symbol's ``(start, freq)`` out of ``2**scale``.

    Args:
        starts: per symbol, the cumulative frequency of the symbols below it.
        freqs: per symbol, its frequency (>= 1).
        scale: the frequencies' total is ``2**scale`` (1..16).
        lanes: interleaved states (1 for small streams; more lets NumPy advance many
            symbols per step).

    Returns:
        The coded bytes: 16-bit words, the final states first.
    """
    starts = np.asarray(starts, dtype=np.int64).ravel()
    freqs = np.asarray(freqs, dtype=np.int64).ravel()
    scale = check_positive_int(scale, "scale", maximum=MAX_SCALE)
    lanes = check_positive_int(lanes, "lanes")
    if starts.size != freqs.size:
        raise ValueError(f"starts and freqs must have the same length, got {starts.size} and {freqs.size}")
    if freqs.size and (freqs.min() < 1 or (starts + freqs).max() > 1 << scale or starts.min() < 0):
        raise ValueError(f"each symbol needs 1 <= freq and 0 <= start, start + freq <= 2**{scale}")
    if lanes == 1:
        words = _encode_scalar(starts.tolist(), freqs.tolist(), scale)
    else:
        words = _encode_lanes(starts, freqs, scale, lanes)
    return np.asarray(words[::-1], dtype=">u2").tobytes()


def _encode_scalar(starts: list[int], freqs: list[int], scale: int) -> list[int]:
    x, out = _LOW, []
    top = 32 - scale
    for c, f in zip(reversed(starts), reversed(freqs)):
        if x >= f << top:           # renormalize: move the low word out
            out.append(x & _MASK16)
            x >>= 16
        q, r = divmod(x, f)
        x = (q << scale) + r + c
    out.append(x & _MASK16)         # the final state: read first by the decoder
    out.append(x >> 16)
    return out


def _encode_lanes(starts: np.ndarray, freqs: np.ndarray, scale: int, lanes: int) -> list[int]:
    n = starts.size
    steps = -(-n // lanes)
    x = np.full(lanes, _LOW, dtype=np.uint64)
    out = []
    idx = np.arange(lanes)
    for t in range(steps - 1, -1, -1):
        pos = t * lanes + idx
        active = pos < n
        p = pos[active]
        f = freqs[p].astype(np.uint64)
        c = starts[p].astype(np.uint64)
        xa = x[active]
        emit = xa >= (f << np.uint64(32 - scale))
        if emit.any():
            out.extend((xa[emit] & np.uint64(_MASK16)).tolist())
            xa = np.where(emit, xa >> np.uint64(16), xa)
        x[active] = ((xa // f) << np.uint64(scale)) + (xa % f) + c
    for state in x.tolist():
        out.append(state & _MASK16)
        out.append(state >> 16)
    return out


def _read_words(data: bytes) -> np.ndarray:
    if len(data) % 2:
        raise ValueError("a rANS stream holds whole 16-bit words")
    return np.frombuffer(data, dtype=">u2").astype(np.int64)


def encode_static(symbols: Any, freqs: Any, scale: int, lanes: int = 1) -> bytes:
    """rANS-encode non-negative integer ``symbols`` with one frequency table.

    Raises:
        ValueError: a symbol without a frequency, or a table not summing to ``2**scale``.
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    freqs = np.asarray(freqs, dtype=np.int64).ravel()
    if int(freqs.sum()) != 1 << scale:
        raise ValueError(f"freqs must add up to 2**{scale} = {1 << scale}, got {int(freqs.sum())}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= freqs.size or
                         np.any(freqs[symbols] == 0)):
        raise ValueError("every symbol needs a frequency >= 1 in freqs")
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]])
    return encode(starts[symbols], freqs[symbols], scale, lanes)


def decode_static(data: bytes, freqs: Any, count: int, scale: int, lanes: int = 1) -> np.ndarray:
    """Inverse of :func:`encode_static`: ``count`` symbols (int64).

    Raises:
        ValueError: the stream is too short, or does not end in the encoder's initial state
            (damaged data).
    """
    count = check_positive_int(count, "count", minimum=0)
    lanes = check_positive_int(lanes, "lanes")
    freqs = np.asarray(freqs, dtype=np.int64).ravel()
    if int(freqs.sum()) != 1 << scale:
        raise ValueError(f"freqs must add up to 2**{scale}")
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]])
    table = np.repeat(np.arange(freqs.size), freqs)  # slot -> symbol
    words = _read_words(data)
    if words.size < 2 * lanes:
        raise ValueError("rANS stream shorter than its final states")
    if lanes == 1:
        return _decode_static_scalar(words.tolist(), table.tolist(), freqs.tolist(),
                                     starts.tolist(), count, scale)
    return _decode_static_lanes(words, table, freqs, starts, count, scale, lanes)


def _decode_static_scalar(words, table, freqs, starts, count, scale):
    x = (words[0] << 16) | words[1]
    p, mask, out = 2, (1 << scale) - 1, [0] * count
    n_words = len(words)
    for i in range(count):
        slot = x & mask
        s = table[slot]
        out[i] = s
        x = freqs[s] * (x >> scale) + slot - starts[s]
        if x < _LOW:
            if p >= n_words:
                raise ValueError(f"rANS stream ended after {i + 1} of {count} symbols")
            x = (x << 16) | words[p]
            p += 1
    if x != _LOW or p != n_words:
        raise ValueError("rANS stream damaged: it does not end in the initial state")
    return np.asarray(out, dtype=np.int64)


def _decode_static_lanes(words, table, freqs, starts, count, scale, lanes):
    states = words[:2 * lanes].reshape(lanes, 2)[::-1]
    x = (states[:, 0] << 16) | states[:, 1]
    p, mask = 2 * lanes, (1 << scale) - 1
    out = np.empty(count, dtype=np.int64)
    idx = np.arange(lanes)
    for t in range(-(-count // lanes)):
        pos = t * lanes + idx
        active = pos < count
        xa = x[active]
        slot = xa & mask
        s = table[slot]
        out[pos[active]] = s
        xa = freqs[s] * (xa >> scale) + slot - starts[s]
        need = np.flatnonzero(xa < _LOW)
        if need.size:
            if p + need.size > words.size:
                raise ValueError("rANS stream ended early")
            xa[need] = (xa[need] << 16) | words[p:p + need.size][::-1]
            p += need.size
        x[active] = xa
    if np.any(x != _LOW) or p != words.size:
        raise ValueError("rANS stream damaged: it does not end in the initial state")
    return out


# ---------------------------------------------------------------------------------------
# Binary symbols with probabilities that change (adaptive, context models)
# ---------------------------------------------------------------------------------------

def encode_binary(bits: Any, p1: Any) -> bytes:
    """rANS-encode bits, bit ``i`` having probability ``p1[i] / 4096`` of being 1.

    ``p1`` must be what the decoder will compute from the bits before ``i``
    (see :class:`BinaryDecoder`), each in ``1 .. 4095``.
    """
    bits = np.asarray(bits, dtype=np.int64).ravel()
    p1 = np.asarray(p1, dtype=np.int64).ravel()
    if bits.size != p1.size:
        raise ValueError("bits and p1 must have the same length")
    if p1.size and (p1.min() < 1 or p1.max() >= 1 << PROB_SCALE):
        raise ValueError(f"p1 must be in 1..{(1 << PROB_SCALE) - 1}")
    p0 = (1 << PROB_SCALE) - p1
    starts = np.where(bits == 1, p0, 0)
    freqs = np.where(bits == 1, p1, p0)
    return encode(starts, freqs, PROB_SCALE)


class BinaryDecoder:
    """Decodes, one at a time, the bits of :func:`encode_binary`.

    Example:
        >>> data = encode_binary([1, 0, 0], [2048, 1000, 1000])
        >>> dec = BinaryDecoder(data)
        >>> [dec.decode(2048), dec.decode(1000), dec.decode(1000)], dec.finished()
        ([1, 0, 0], True)
    """

    def __init__(self, data: bytes) -> None:
        self._words = _read_words(data).tolist()
        if len(self._words) < 2:
            raise ValueError("rANS stream shorter than its final state")
        self._x = (self._words[0] << 16) | self._words[1]
        self._p = 2

    def decode(self, p1: int) -> int:
        """The next bit, given its probability of being 1 (in 1/4096 units)."""
        x = self._x
        slot = x & 0xFFF
        p0 = 4096 - p1
        if slot < p0:
            bit, x = 0, p0 * (x >> 12) + slot
        else:
            bit, x = 1, p1 * (x >> 12) + slot - p0
        if x < _LOW:
            if self._p >= len(self._words):
                raise ValueError("rANS stream ended early")
            x = (x << 16) | self._words[self._p]
            self._p += 1
        self._x = x
        return bit

    def finished(self) -> bool:
        """True when every word was read and the state is back to the encoder's start."""
        return self._x == _LOW and self._p == len(self._words)
