"""Paired statistics for comparing two methods: over seeds, or on the same test images.

A difference of a few test images between two single training runs is noise (on 450
test images one image is 0.22 points). Compare methods over repeated seeds, paired by
seed, with a confidence interval for the mean difference, or, for two fixed models, with
an exact McNemar test on the images they disagree on. Everything here is a thin layer
over ``scipy.stats`` (``ttest_rel`` with its t interval, ``binomtest``).

Example:
    >>> from compressnet_lite import stats
    >>> pruned = [0.962, 0.958, 0.969, 0.960, 0.964]    # one accuracy per seed
    >>> dense = [0.971, 0.969, 0.973, 0.967, 0.975]
    >>> d = stats.paired_difference(pruned, dense, names=("pruned", "dense"))
    >>> print(d)
    pruned - dense: -0.84 points [95% CI -1.21, -0.47], 5 seeds, p = 0.003: dense better
    >>> d.verdict
    'dense better'
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
from scipy import stats as _st

from compressnet_lite._checks import check_array, check_real

__all__ = ["PairedDifference", "McNemar", "Estimate", "paired_difference", "mcnemar",
           "mean_interval", "accuracy_interval", "per_seed"]

INDISTINGUISHABLE = "indistinguishable here"


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired runs, with a t confidence interval.

    Attributes:
        mean, low, high: the mean difference and its interval (in the inputs' units).
        n: number of pairs (seeds). p_value: two-sided paired t test of mean 0.
        confidence: the interval's level. names: what ``a`` and ``b`` are called.
        scale, unit: how the text shows a difference (default: fractions as points).
    """

    mean: float
    low: float
    high: float
    n: int
    p_value: float
    confidence: float = 0.95
    names: tuple[str, str] = ("A", "B")
    scale: float = 100.0
    unit: str = "points"

    @property
    def verdict(self) -> str:
        """``"<A> better"`` if the interval lies above 0, ``"<B> better"`` if below, else
        ``"indistinguishable here"`` (for quantities where higher is better)."""
        return _verdict(self.low > 0, self.high < 0, self.names)

    def __str__(self) -> str:
        s, u = self.scale, f" {self.unit}" if self.unit else ""
        return (f"{self.names[0]} - {self.names[1]}: {self.mean * s:+.2f}{u} "
                f"[{self.confidence:.0%} CI {self.low * s:+.2f}, {self.high * s:+.2f}], "
                f"{self.n} seeds, {_p(self.p_value)}: {self.verdict}")

    def __repr__(self) -> str:
        return f"PairedDifference({self})"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean (or a proportion) with its confidence interval, over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95
    scale: float = 100.0
    unit: str = "%"
    of: str = "seeds"

    def __str__(self) -> str:
        s, u = self.scale, self.unit if self.unit in ("", "%") else f" {self.unit}"
        return (f"{self.mean * s:.2f}{u} [{self.confidence:.0%} CI {self.low * s:.2f}, "
                f"{self.high * s:.2f}], {self.n} {self.of}")

    def __repr__(self) -> str:
        return f"Estimate({self})"


@dataclasses.dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models' correctness on the same test images.

    Attributes:
        b: images ``A`` gets right and ``B`` wrong. c: images ``A`` gets wrong and ``B`` right.
        n: test images. p_value: two-sided exact binomial test of ``b`` in ``b + c`` at 1/2.
        alpha: level at which ``verdict`` names a winner. names: what A and B are called.
    """

    b: int
    c: int
    n: int
    p_value: float
    alpha: float = 0.05
    names: tuple[str, str] = ("A", "B")

    @property
    def difference(self) -> float:
        """Accuracy of A minus accuracy of B, ``(b - c) / n``."""
        return (self.b - self.c) / self.n

    @property
    def verdict(self) -> str:
        """The better model's name if ``p_value < alpha``, else ``"indistinguishable here"``."""
        significant = self.p_value < self.alpha
        return _verdict(significant and self.b > self.c, significant and self.b < self.c,
                        self.names)

    def __str__(self) -> str:
        a, b = self.names
        return (f"{a} - {b}: {self.difference * 100:+.2f} points on {self.n} images "
                f"({a} alone right on {self.b}, {b} alone right on {self.c}), "
                f"exact McNemar {_p(self.p_value)}: {self.verdict}")

    def __repr__(self) -> str:
        return f"McNemar({self})"


def per_seed(values: Any, name: str = "values") -> np.ndarray:
    """One number per seed: a 1-D array as it is, or per-image correctness of shape
    ``(seeds, images)`` reduced to each seed's accuracy (the row means).

    Example:
        >>> per_seed([[1, 1, 0, 1], [1, 1, 1, 1]])
        array([0.75, 1.  ])
    """
    arr = check_array(values, name, ndim=(1, 2)).astype(float)
    return arr.mean(axis=1) if arr.ndim == 2 else arr


def paired_difference(a: Any, b: Any, confidence: float = 0.95, *,
                      names: Sequence[str] = ("A", "B"), scale: float = 100.0,
                      unit: str = "points") -> PairedDifference:
    """Mean difference ``a - b`` over seeds, paired by seed, with a t interval.

    ``a[i]`` and ``b[i]`` must come from the same seed (same data split, same initial
    weights where the methods share them). The interval is the paired t interval
    (``scipy.stats.ttest_rel``); if it contains 0 the methods are indistinguishable here.

    Args:
        a, b: one number per seed (e.g. test accuracy as a fraction), or per-image
            correctness of shape ``(seeds, images)`` (see :func:`per_seed`).
        confidence: level of the interval, in (0, 1).
        names: two names for ``a`` and ``b`` used by ``str()`` and ``verdict``.
        scale, unit: how ``str()`` shows differences (default: fractions as points).

    Returns:
        A :class:`PairedDifference`.

    Raises:
        TypeError: non-numeric input or names that are not two strings.
        ValueError: different numbers of seeds, fewer than 2 seeds, NaN/inf values, or
            ``confidence`` outside (0, 1).

    Example:
        >>> d = paired_difference([0.95, 0.96, 0.97], [0.94, 0.96, 0.95])
        >>> round(d.mean, 4), d.n, d.verdict
        (0.01, 3, 'indistinguishable here')
    """
    confidence = check_real(confidence, "confidence", minimum=0, maximum=1,
                            min_inclusive=False, max_inclusive=False)
    names = _check_names(names)
    scale = check_real(scale, "scale", minimum=0, min_inclusive=False)
    if not isinstance(unit, str):
        raise TypeError(f"unit must be a str, got {type(unit).__name__}")
    a, b = per_seed(a, "a"), per_seed(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one value per seed each, for the same seeds: "
                         f"got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"a and b need at least 2 seeds for an interval, got {a.size}")
    d = a - b
    mean = float(d.mean())
    if np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):  # no spread: no t statistic
        return PairedDifference(mean, mean, mean, d.size, 1.0 if mean == 0 else 0.0,
                                confidence, names, scale, unit)
    test = _st.ttest_rel(a, b)
    ci = test.confidence_interval(confidence)
    return PairedDifference(mean, float(ci.low), float(ci.high), d.size, float(test.pvalue),
                            confidence, names, scale, unit)


def mean_interval(values: Any, confidence: float = 0.95, *, scale: float = 100.0,
                  unit: str = "%") -> Estimate:
    """Mean over seeds with a t interval (``scipy.stats.t``).

    Args:
        values: one number per seed, or per-image correctness ``(seeds, images)``.
        confidence: level of the interval, in (0, 1).
        scale, unit: how ``str()`` shows the numbers (default: fractions as percent).

    Raises:
        TypeError: non-numeric input. ValueError: fewer than 2 values, NaN/inf, or
            ``confidence`` outside (0, 1).

    Example:
        >>> print(mean_interval([0.96, 0.97, 0.98]))
        97.00% [95% CI 94.52, 99.48], 3 seeds
    """
    confidence = check_real(confidence, "confidence", minimum=0, maximum=1,
                            min_inclusive=False, max_inclusive=False)
    scale = check_real(scale, "scale", minimum=0, min_inclusive=False)
    v = per_seed(values)
    if v.size < 2:
        raise ValueError(f"values needs at least 2 seeds for an interval, got {v.size}")
    mean, sem = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    half = float(_st.t.ppf((1 + confidence) / 2, v.size - 1)) * sem
    return Estimate(mean, mean - half, mean + half, v.size, confidence, scale, unit)


def accuracy_interval(correct: Any, confidence: float = 0.95) -> Estimate:
    """Accuracy on a test set with its exact (Clopper-Pearson) binomial interval.

    Args:
        correct: per-image correctness (booleans or 0/1), 1-D.
        confidence: level of the interval, in (0, 1).

    Raises:
        TypeError: non-numeric input. ValueError: not 1-D, empty, values other than 0/1,
            or ``confidence`` outside (0, 1).

    Example:
        >>> print(accuracy_interval([1] * 437 + [0] * 13))
        97.11% [95% CI 95.11, 98.45], 450 images
    """
    confidence = check_real(confidence, "confidence", minimum=0, maximum=1,
                            min_inclusive=False, max_inclusive=False)
    c = _check_correct(correct, "correct")
    k, n = int(c.sum()), c.size
    ci = _st.binomtest(k, n).proportion_ci(confidence, method="exact")
    return Estimate(k / n, float(ci.low), float(ci.high), n, confidence, of="images")


def mcnemar(correct_a: Any, correct_b: Any, *, names: Sequence[str] = ("A", "B"),
            alpha: float = 0.05) -> McNemar:
    """Exact McNemar test: do two models differ in accuracy on the same test images?

    Only the discordant images count: ``b`` that A gets right and B wrong, ``c`` the
    reverse. Under "no difference" each discordant image is a fair coin, so the p-value
    is the two-sided exact binomial test of ``b`` successes in ``b + c`` trials at 1/2
    (``scipy.stats.binomtest``); with no discordant image it is 1.

    Args:
        correct_a, correct_b: per-image correctness (booleans or 0/1), 1-D, same images.
        names: two names for A and B used by ``str()`` and ``verdict``.
        alpha: level at which ``verdict`` names a winner, in (0, 1).

    Raises:
        TypeError: non-numeric input or names that are not two strings.
        ValueError: not 1-D, empty, different lengths, values other than 0/1, or
            ``alpha`` outside (0, 1).

    Example:
        >>> m = mcnemar([1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0])
        >>> m.b, m.c, round(m.p_value, 4), m.verdict
        (6, 0, 0.0312, 'A better')
    """
    alpha = check_real(alpha, "alpha", minimum=0, maximum=1, min_inclusive=False,
                       max_inclusive=False)
    names = _check_names(names)
    ca, cb = _check_correct(correct_a, "correct_a"), _check_correct(correct_b, "correct_b")
    if ca.shape != cb.shape:
        raise ValueError(f"correct_a and correct_b must cover the same test images: got "
                         f"{ca.size} and {cb.size}")
    b, c = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    p = 1.0 if b + c == 0 else float(_st.binomtest(b, b + c, 0.5).pvalue)
    return McNemar(b, c, ca.size, p, alpha, names)


def _check_correct(values: Any, name: str) -> np.ndarray:
    arr = check_array(values, name, ndim=1)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must hold per-image correctness (True/False or 0/1)")
    return arr.astype(bool)


def _check_names(names: Any) -> tuple[str, str]:
    if isinstance(names, str) or not isinstance(names, Sequence) or len(names) != 2 \
            or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be two strings, got {names!r}")
    return tuple(names)


def _verdict(a_better: bool, b_better: bool, names: tuple[str, str]) -> str:
    if a_better:
        return f"{names[0]} better"
    if b_better:
        return f"{names[1]} better"
    return INDISTINGUISHABLE


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"
