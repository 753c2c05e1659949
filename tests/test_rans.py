import numpy as np
import pytest

from compressnet_lite import huffman, rans


def _stream(kind, n, rng):
    if kind == "geometric":
        return rng.geometric(0.3, n) - 1
    if kind == "skewed-binary":
        return (rng.random(n) < 0.03).astype(np.int64)
    if kind == "uniform":
        return rng.integers(0, 37, n)
    if kind == "one-symbol":
        return np.full(n, 5)
    raise ValueError(kind)


@pytest.mark.parametrize("lanes", [1, 3, 64])
@pytest.mark.parametrize("kind", ["geometric", "skewed-binary", "uniform", "one-symbol"])
def test_static_round_trip_and_size_near_the_entropy(kind, lanes):
    rng = np.random.default_rng(len(kind) + lanes)
    s = _stream(kind, 20_000, rng)
    counts = np.bincount(s)
    freqs = rans.normalized_frequencies(counts, 14)
    data = rans.encode_static(s, freqs, 14, lanes)
    np.testing.assert_array_equal(rans.decode_static(data, freqs, s.size, 14, lanes), s)
    entropy = huffman.entropy_bits(s) * s.size / 8
    # the payload is the cost of the (rounded) frequencies, plus a 4-byte state per lane and
    # at most one partly used 16-bit word per lane
    cost = rans.static_cost_bits(counts, freqs, 14) / 8
    assert entropy - 1e-6 <= cost <= entropy + 0.002 * s.size / 8 + 1
    assert len(data) <= cost + 4 * lanes + 2 * lanes + 2


def test_rans_beats_huffman_where_huffman_cannot_reach_the_entropy():
    # 3% ones: entropy 0.19 bits per symbol; Huffman needs a whole bit for each.
    s = _stream("skewed-binary", 50_000, np.random.default_rng(0))
    freqs = rans.normalized_frequencies(np.bincount(s), 12)
    data = rans.encode_static(s, freqs, 12)
    payload, _ = huffman.huffman_encode(s)
    entropy = huffman.entropy_bits(s) * s.size / 8
    assert len(payload) == s.size // 8       # 1 bit each
    assert len(data) < 1.02 * entropy + 8 < 0.25 * len(payload)


def test_scalar_and_lane_encoders_agree_on_one_lane():
    rng = np.random.default_rng(3)
    s = _stream("geometric", 3000, rng)
    freqs = rans.normalized_frequencies(np.bincount(s), 10)
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]])
    scalar = rans._encode_scalar(starts[s].tolist(), freqs[s].tolist(), 10)
    lanes = rans._encode_lanes(starts[s], freqs[s], 10, 1)
    assert scalar == lanes


def test_binary_coder_with_changing_probabilities():
    rng = np.random.default_rng(4)
    p1 = rng.integers(1, 4096, 5000)
    bits = (rng.random(5000) < p1 / 4096).astype(int)
    data = rans.encode_binary(bits, p1)
    dec = rans.BinaryDecoder(data)
    assert [dec.decode(int(p)) for p in p1] == bits.tolist() and dec.finished()
    ideal = -np.log2(np.where(bits == 1, p1, 4096 - p1) / 4096).sum() / 8
    assert ideal <= len(data) <= ideal + 6


def test_normalized_frequencies():
    f = rans.normalized_frequencies([1000, 1, 0, 3], 8)
    assert f.sum() == 256 and f[2] == 0 and f[1] >= 1 and f[3] >= 1
    with pytest.raises(ValueError, match="at least one positive count"):
        rans.normalized_frequencies([0, 0], 8)
    with pytest.raises(ValueError, match="3 used symbols do not fit in 2\\*\\*1"):
        rans.normalized_frequencies([1, 1, 1], 1)
    with pytest.raises(ValueError, match="scale must be in 1..16"):
        rans.normalized_frequencies([1], 17)


@pytest.mark.parametrize("call, match", [
    (lambda: rans.encode_static([0, 2], [128, 128, 0], 8), "frequency >= 1"),
    (lambda: rans.encode_static([0], [100, 100], 8), "add up to 2\\*\\*8"),
    (lambda: rans.encode([0], [0], 8), "1 <= freq"),
    (lambda: rans.encode([0, 1], [1], 8), "same length"),
    (lambda: rans.encode_binary([1], [4096]), "p1 must be in 1..4095"),
    (lambda: rans.decode_static(b"\x00", [256], 1, 8), "whole 16-bit words"),
    (lambda: rans.decode_static(b"", [256], 1, 8), "shorter than its final states"),
], ids=["unknown-symbol", "bad-total", "zero-freq", "lengths", "p1-range", "odd-bytes", "empty"])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_damaged_streams_are_detected():
    s = _stream("geometric", 4000, np.random.default_rng(5))
    freqs = rans.normalized_frequencies(np.bincount(s), 12)
    data = bytearray(rans.encode_static(s, freqs, 12))
    data[len(data) // 2] ^= 0x40
    with pytest.raises(ValueError, match="damaged|ended"):
        rans.decode_static(bytes(data), freqs, s.size, 12)
    with pytest.raises(ValueError, match="ended|damaged"):
        rans.decode_static(bytes(data[:-10]), freqs, s.size, 12)
