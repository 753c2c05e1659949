import itertools
import time

import numpy as np
import pytest

from compressnet_lite import huffman


def _fibonacci_stream(n_symbols, rng):
    """Symbols with Fibonacci counts: the distribution whose Huffman tree is deepest."""
    counts = [1, 1]
    while len(counts) < n_symbols:
        counts.append(counts[-1] + counts[-2])
    s = np.repeat(np.arange(n_symbols), counts)
    rng.shuffle(s)
    return s, np.array(counts)


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


@pytest.mark.parametrize("dist", ["geometric", "uniform", "two-symbols", "sparse-alphabet"])
def test_huffman_round_trip_and_within_one_bit_of_entropy(dist):
    rng = np.random.default_rng(1)
    if dist == "geometric":
        s = rng.geometric(0.2, 20_000) - 1
    elif dist == "uniform":
        s = rng.integers(0, 32, 5_000)
    elif dist == "two-symbols":
        s = (rng.random(3_000) < 0.1).astype(int)
    else:
        s = rng.choice([0, 7, 300, 4095], 2_000, p=[0.7, 0.1, 0.1, 0.1])
    payload, lengths = huffman.huffman_encode(s)
    decoded = huffman.huffman_decode(payload, lengths, s.size)
    np.testing.assert_array_equal(decoded, s)
    counts = np.bincount(s)
    avg = (counts * lengths[:counts.size]).sum() / s.size
    h = huffman.entropy_bits(s)
    assert h - 1e-9 <= avg < h + 1
    assert len(payload) == -(-int((counts * lengths[:counts.size]).sum()) // 8)


def _brute_force_limited(counts, limit):
    """The cheapest code lengths <= limit satisfying Kraft's inequality, by enumeration."""
    best = None
    for lengths in itertools.product(range(1, limit + 1), repeat=len(counts)):
        if sum(2.0 ** -np.array(lengths)) <= 1 + 1e-12:
            cost = int(np.dot(counts, lengths))
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("counts, limit", [
    ([1, 1, 2, 3, 5, 8], 3),
    ([1, 1, 2, 3, 5, 8, 13], 4),
    ([1, 2, 4, 8, 16, 32], 3),
    ([3, 1, 4, 1, 5, 9, 2], 3),
    ([1, 1, 1, 1, 1, 1, 1, 100], 4),
], ids=["fib6-L3", "fib7-L4", "powers-L3", "pi-L3", "one-heavy-L4"])
def test_package_merge_is_optimal_among_limited_codes(counts, limit):
    lengths = huffman.huffman_code_lengths(counts, max_length=limit)
    assert lengths.max() <= limit
    assert np.sum(2.0 ** -lengths) <= 1 + 1e-12                     # a prefix code exists
    assert int(np.dot(counts, lengths)) == _brute_force_limited(counts, limit)
    unlimited = huffman.huffman_code_lengths(counts, max_length=None)
    assert np.dot(counts, unlimited) <= np.dot(counts, lengths)     # Huffman is optimal overall


def test_skewed_distribution_needs_the_limit_and_round_trips():
    # Fibonacci counts over 23 symbols (75,024 in all): the unlimited Huffman code is 22 deep.
    s, counts = _fibonacci_stream(23, np.random.default_rng(2))
    unlimited = huffman.huffman_code_lengths(counts, max_length=None)
    assert unlimited.max() > 20
    lengths = huffman.huffman_code_lengths(counts)  # default limit: 16
    assert lengths.max() == huffman.MAX_CODE_LENGTH == 16
    payload, used = huffman.huffman_encode(s)
    np.testing.assert_array_equal(used, lengths)
    start = time.perf_counter()
    np.testing.assert_array_equal(huffman.huffman_decode(payload, used, s.size), s)
    assert time.perf_counter() - start < 30  # a table lookup per symbol, not a loop per bit
    # Within what theory allows: H <= L, Huffman's own L_huff <= L, and L < H + 2, the average
    # length of the lengths ceil(-log2 q) for q = (p + 1/n) / 2, all <= 1 + ceil(log2 n) <= 16.
    p = counts[counts > 0] / counts.sum()
    h = float(-(p * np.log2(p)).sum())
    avg = float((counts * lengths).sum() / counts.sum())
    avg_huffman = float((counts * unlimited).sum() / counts.sum())
    assert h - 1e-9 <= avg_huffman <= avg < h + 2
    assert avg - avg_huffman < 0.01  # only the rarest symbols got longer codes


def test_long_codes_written_without_a_limit_still_decode():
    # Files of format version 1 may hold codes longer than the table decoder's 16 bits.
    s, _ = _fibonacci_stream(23, np.random.default_rng(1))
    counts = np.bincount(s)
    lengths = huffman.huffman_code_lengths(counts, max_length=None)
    assert lengths.max() > 20
    payload, _ = huffman.huffman_encode(s, lengths)
    np.testing.assert_array_equal(huffman.huffman_decode(payload, lengths, s.size), s)


def test_package_merge_errors():
    with pytest.raises(ValueError, match="max_length=2 allows at most 4 codes, 5 symbols"):
        huffman.huffman_code_lengths([1, 1, 1, 1, 1], max_length=2)
    with pytest.raises(ValueError, match="max_length must be in 1..63"):
        huffman.huffman_code_lengths([1, 1], max_length=0)
    with pytest.raises(TypeError, match="max_length must be an integer"):
        huffman.huffman_code_lengths([1, 1], max_length=2.5)


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
    long = huffman.huffman_code_lengths([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377,
                                         610, 987, 1597, 2584, 4181], max_length=None)
    with pytest.raises(ValueError, match="invalid Huffman code at bit 0"):
        huffman.huffman_decode(b"\xff" * 4, np.r_[long[:-1], 0], 1)  # all-ones: no code


def test_huffman_code_lengths_of_all_zero_counts_are_no_codes():
    assert huffman.huffman_code_lengths([0, 0, 0]).tolist() == [0, 0, 0]


def test_entropy_bits():
    assert huffman.entropy_bits([]) == 0.0
    assert huffman.entropy_bits([3, 3, 3]) == 0.0
    assert huffman.entropy_bits([0, 1, 2, 3]) == pytest.approx(2.0)
