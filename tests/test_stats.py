import numpy as np
import pytest
from scipy import stats as st

from compressnet_lite import stats

RNG = np.random.default_rng(0)
A = 0.96 + 0.01 * RNG.standard_normal(7)
B = A - 0.004 + 0.003 * RNG.standard_normal(7)


# ---- paired_difference -------------------------------------------------------------------

@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99], ids=["90", "95", "99"])
def test_paired_difference_matches_scipy(confidence):
    d = stats.paired_difference(A, B, confidence)
    ref = st.ttest_rel(A, B)
    ci = ref.confidence_interval(confidence)
    assert d.mean == pytest.approx(np.mean(A - B))
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
    assert d.p_value == pytest.approx(ref.pvalue)
    assert d.n == 7 and d.confidence == confidence


def test_paired_difference_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t(2) quantile 4.3027 -> half width 2.4841;
    # t = 2 * sqrt(3), and with 2 degrees of freedom p = 1 - t / sqrt(t^2 + 2) = 0.0742
    d = stats.paired_difference([3, 4, 5], [2, 2, 2], scale=1, unit="")
    assert (d.mean, d.n) == (2.0, 3)
    assert (d.low, d.high) == pytest.approx((2 - 2.48414, 2 + 2.48414), abs=1e-4)
    assert d.p_value == pytest.approx(1 - 12 ** 0.5 / 14 ** 0.5)
    assert d.verdict == "indistinguishable here"
    assert str(d) == "A - B: +2.00 [95% CI -0.48, +4.48], 3 seeds, p = 0.074: " \
                     "indistinguishable here"


@pytest.mark.parametrize("a, b, verdict", [
    ([0.97, 0.98, 0.99], [0.95, 0.95, 0.96], "dense better"),
    ([0.95, 0.95, 0.96], [0.97, 0.98, 0.99], "pruned better"),
    ([0.95, 0.97, 0.96], [0.96, 0.96, 0.96], "indistinguishable here"),
], ids=["a-better", "b-better", "overlap"])
def test_paired_difference_verdict(a, b, verdict):
    d = stats.paired_difference(a, b, names=("dense", "pruned"))
    assert d.verdict == verdict
    assert str(d).endswith(": " + verdict) and repr(d).startswith("PairedDifference(dense - pruned")


def test_paired_difference_identical_and_constant():
    same = stats.paired_difference(A, A)
    assert (same.mean, same.low, same.high, same.p_value) == (0, 0, 0, 1.0)
    assert same.verdict == "indistinguishable here"
    shift = stats.paired_difference(A + 0.01, A)  # the same 1-point gain on every seed
    assert shift.low == shift.high == pytest.approx(0.01) and shift.p_value == 0.0
    assert shift.verdict == "A better"


def test_paired_difference_is_paired_not_pooled():
    # a seed effect larger than the method effect: pooled groups overlap, pairs do not
    seed = np.array([0.90, 0.95, 0.99, 0.93, 0.97])
    d = stats.paired_difference(seed + 0.005 + [0, .001, -.001, .002, 0], seed)
    assert d.verdict == "A better"
    assert st.ttest_ind(seed + 0.005, seed).pvalue > 0.5


def test_paired_difference_from_per_image_correctness():
    ca = RNG.random((5, 450)) < 0.97
    cb = RNG.random((5, 450)) < 0.95
    d = stats.paired_difference(ca, cb)
    assert d.mean == pytest.approx(np.mean(ca.mean(1) - cb.mean(1)))
    assert stats.per_seed(ca) == pytest.approx(ca.mean(axis=1))


@pytest.mark.parametrize("a, b, exc, match", [
    ([0.9, 0.95], [0.9, 0.95, 0.97], ValueError, "one value per seed each.*got 2 and 3"),
    ([0.9], [0.8], ValueError, "at least 2 seeds"),
    ([0.9, np.nan], [0.9, 0.9], ValueError, "a contains NaN"),
    ([0.9, 0.9], [0.9, np.inf], ValueError, "b contains NaN or infinite"),
    (["x", "y"], [0.9, 0.9], TypeError, "a must be an array of numbers"),
    ([0.9, 0.9], [[[0.9]]], ValueError, "b must have 1 or 2 dimensions"),
    ([], [], ValueError, "a must not be empty"),
], ids=["lengths", "one-seed", "nan", "inf", "strings", "3d", "empty"])
def test_paired_difference_errors(a, b, exc, match):
    with pytest.raises(exc, match=match):
        stats.paired_difference(a, b)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"confidence": 1.0}, ValueError, "confidence must be a finite number > 0 and < 1"),
    ({"confidence": 0}, ValueError, "confidence must be"),
    ({"confidence": "95%"}, TypeError, "confidence must be a number"),
    ({"names": "AB"}, TypeError, "names must be two strings"),
    ({"names": ("A", "B", "C")}, TypeError, "names must be two strings"),
    ({"names": ("A", 2)}, TypeError, "names must be two strings"),
    ({"scale": 0}, ValueError, "scale must be"),
    ({"unit": None}, TypeError, "unit must be a str"),
], ids=["conf-1", "conf-0", "conf-str", "names-str", "names-3", "names-int", "scale", "unit"])
def test_paired_difference_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        stats.paired_difference(A, B, **kwargs)


# ---- mean_interval -----------------------------------------------------------------------

def test_mean_interval_matches_scipy():
    e = stats.mean_interval(A, 0.9)
    lo, hi = st.t.interval(0.9, len(A) - 1, loc=A.mean(), scale=st.sem(A))
    assert (e.mean, e.low, e.high, e.n) == pytest.approx((A.mean(), lo, hi, 7))
    assert str(e).endswith("7 seeds") and repr(e).startswith("Estimate(")


@pytest.mark.parametrize("values, kwargs, exc, match", [
    ([0.9], {}, ValueError, "at least 2 seeds"),
    ([0.9, np.nan], {}, ValueError, "NaN"),
    (["a", "b"], {}, TypeError, "array of numbers"),
    ([0.9, 0.8], {"confidence": 2}, ValueError, "confidence must be"),
    ([0.9, 0.8], {"scale": -1}, ValueError, "scale must be"),
], ids=["one", "nan", "strings", "confidence", "scale"])
def test_mean_interval_errors(values, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        stats.mean_interval(values, **kwargs)


# ---- accuracy_interval -------------------------------------------------------------------

@pytest.mark.parametrize("k, n", [(437, 450), (0, 20), (20, 20)], ids=["97pct", "none", "all"])
def test_accuracy_interval_matches_scipy(k, n):
    e = stats.accuracy_interval(np.arange(n) < k)
    ci = st.binomtest(k, n).proportion_ci(0.95, method="exact")
    assert (e.mean, e.low, e.high, e.n) == pytest.approx((k / n, ci.low, ci.high, n))
    assert e.low <= e.mean <= e.high and str(e).endswith(f"{n} images")


@pytest.mark.parametrize("correct, exc, match", [
    ([0, 2, 1], ValueError, "correct must hold per-image correctness"),
    ([[1, 0]], ValueError, "correct must have 1 dimensions"),
    ([], ValueError, "must not be empty"),
    (["yes"], TypeError, "array of numbers"),
], ids=["not-01", "2d", "empty", "strings"])
def test_accuracy_interval_errors(correct, exc, match):
    with pytest.raises(exc, match=match):
        stats.accuracy_interval(correct)


# ---- mcnemar -----------------------------------------------------------------------------

def test_mcnemar_matches_scipy():
    ca, cb = RNG.random(450) < 0.97, RNG.random(450) < 0.93
    m = stats.mcnemar(ca, cb)
    b, c = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    assert (m.b, m.c, m.n) == (b, c, 450)
    assert m.p_value == pytest.approx(st.binomtest(b, b + c, 0.5).pvalue)
    assert m.difference == pytest.approx(ca.mean() - cb.mean())


@pytest.mark.parametrize("ca, cb, b, c, p, verdict", [
    ([1, 0, 1, 1], [1, 0, 1, 1], 0, 0, 1.0, "indistinguishable here"),
    ([1] * 6, [0] * 6, 6, 0, 2 / 2 ** 6, "new better"),    # all discordant: 2 * 0.5^6
    ([0] * 6, [1] * 6, 0, 6, 2 / 2 ** 6, "old better"),
    ([1] * 5, [0] * 5, 5, 0, 2 / 2 ** 5, "indistinguishable here"),  # 0.0625 > 0.05
    ([1, 0, 1, 0], [0, 1, 0, 1], 2, 2, 1.0, "indistinguishable here"),
], ids=["identical", "all-a", "all-b", "five", "balanced"])
def test_mcnemar_by_hand(ca, cb, b, c, p, verdict):
    m = stats.mcnemar(ca, cb, names=("new", "old"))
    assert (m.b, m.c) == (b, c) and m.p_value == pytest.approx(p)
    assert m.verdict == verdict and str(m).endswith(verdict)
    assert repr(m).startswith("McNemar(new - old")


def test_mcnemar_alpha():
    assert stats.mcnemar([1] * 5, [0] * 5, alpha=0.1).verdict == "A better"


@pytest.mark.parametrize("ca, cb, kwargs, exc, match", [
    ([1, 0], [1, 0, 1], {}, ValueError, "same test images: got 2 and 3"),
    ([1, 0.5], [1, 0], {}, ValueError, "correct_a must hold per-image correctness"),
    ([1, 0], [1, np.nan], {}, ValueError, "correct_b contains NaN"),
    (["a"], [1], {}, TypeError, "correct_a must be an array of numbers"),
    ([1, 0], [1, 0], {"alpha": 0}, ValueError, "alpha must be"),
    ([1, 0], [1, 0], {"names": ["A"]}, TypeError, "names must be two strings"),
], ids=["lengths", "fraction", "nan", "strings", "alpha", "names"])
def test_mcnemar_errors(ca, cb, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        stats.mcnemar(ca, cb, **kwargs)
