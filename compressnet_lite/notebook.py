"""One import that sets up a chapter: seeds, print precision, quiet logs, plot style.

Also the chapters' one way of comparing two latencies on a shared, noisy machine
(:func:`time_rounds`, :func:`latency_ratio`): interleaved rounds, and the geometric mean
of the per-round ratio with a paired t interval, so that a claim "A is faster than B"
rests on an interval, not on one lucky round.

Example:
    >>> from compressnet_lite.notebook import setup, show_source
    >>> setup()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import textwrap
import warnings
from typing import Any, Mapping, Sequence

import keras
import numpy as np

__all__ = ["setup", "show_source", "SEED", "time_rounds", "latency_ratio", "LatencyRatio",
           "brief", "report"]

SEED = 0


def setup(seed: int = SEED) -> None:
    """Make a chapter reproducible and its output quiet.

    Seeds Python, NumPy and TensorFlow (``keras.utils.set_random_seed``), prints NumPy
    floats with 4 significant digits, silences TensorFlow's Python logging and Keras'
    progress bars, and sets a small, readable matplotlib style.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras.utils.set_random_seed(seed)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    keras.utils.disable_interactive_logging()
    try:
        import matplotlib

        if "ipykernel" not in _running_kernel():
            matplotlib.use("Agg")  # no display outside Jupyter: draw to files
        import matplotlib.pyplot as plt

        plt.rcParams.update({"figure.figsize": (6.4, 3.6), "figure.dpi": 100,
                             "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})
    except ImportError:  # plotting is optional for the library
        pass


def show_source(obj: Any) -> Any:
    """Display the source code of a library function or class (syntax-highlighted in Jupyter)."""
    source = inspect.getsource(obj)
    try:
        from IPython.display import Code

        return Code(source, language="python")
    except ImportError:
        return source


def _running_kernel() -> str:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return type(shell).__module__ if shell is not None else ""
    except ImportError:
        return ""


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass(frozen=True)
class LatencyRatio:
    """Latency of A over latency of B: geometric mean of per-round ratios, with an interval.

    Attributes:
        ratio, low, high: ``exp`` of the mean of ``log(t_a / t_b)`` over rounds and of its
            t interval's ends (below 1: A is faster).
        rounds: paired rounds. confidence: the interval's level.
        a_ms, b_ms: median latency of A and of B over the rounds, in milliseconds.
        names: what A and B are called.
    """

    ratio: float
    low: float
    high: float
    rounds: int
    a_ms: float
    b_ms: float
    confidence: float = 0.95
    names: tuple[str, str] = ("A", "B")

    @property
    def speedup(self) -> float:
        """How many times faster A is than B (``1 / ratio``)."""
        return 1.0 / self.ratio

    @property
    def verdict(self) -> str:
        """``"<A> faster"`` if the whole interval is below 1, ``"<B> faster"`` if above,
        else ``"indistinguishable here"``."""
        if self.high < 1.0:
            return f"{self.names[0]} faster"
        if self.low > 1.0:
            return f"{self.names[1]} faster"
        return "indistinguishable here"

    def __str__(self) -> str:
        a, b = self.names
        return (f"{a} / {b} latency: {self.ratio:.2f}x [{self.confidence:.0%} CI "
                f"{self.low:.2f}, {self.high:.2f}] over {self.rounds} rounds "
                f"(medians {self.a_ms:.3g} and {self.b_ms:.3g} ms): {self.verdict}")


def time_rounds(models: Mapping[str, Any], x: Any, *, rounds: int = 15, runs: int = 5,
                warmup: int = 2) -> dict[str, np.ndarray]:
    """Time several models on the same batch in interleaved rounds.

    Each round times every model once (the median of ``runs`` calls, by
    :func:`compressnet_lite.metrics.latency`); the order of the models rotates from round
    to round, so that neither a slow start nor a load that drifts over the minute favours
    one model. Rounds, not calls, are the unit a comparison pairs: a burst of load from
    another process slows every model of that round alike.

    Args:
        models: name -> Keras model or callable taking ``x``.
        x: one input batch.
        rounds: number of rounds (>= 2).
        runs: timed calls per model and round (>= 3).
        warmup: untimed calls per model before its first round.

    Returns:
        name -> seconds per round, shape ``(rounds,)``.

    Raises:
        ValueError / TypeError: no models, or bad ``rounds``/``runs``/``warmup``.
    """
    from compressnet_lite import metrics
    from compressnet_lite._checks import check_positive_int

    rounds = check_positive_int(rounds, "rounds", minimum=2)
    runs = check_positive_int(runs, "runs", minimum=3)
    warmup = check_positive_int(warmup, "warmup", minimum=0)
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping of name -> model")
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # trace and warm every model before any round counts
        metrics.latency(models[name], x, runs=3, warmup=warmup)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(metrics.latency(models[name], x, runs=runs, warmup=0).median)
    return {name: np.asarray(t) for name, t in times.items()}


def latency_ratio(a: Sequence[float], b: Sequence[float], *, names: Sequence[str] = ("A", "B"),
                  confidence: float = 0.95) -> LatencyRatio:
    """Compare two latencies measured in the same rounds (see :func:`time_rounds`).

    Latencies are compared on a log scale: the mean over rounds of ``log(a) - log(b)``
    with its paired t interval (:func:`compressnet_lite.stats.paired_difference`),
    exponentiated. A ratio of 0.6 [0.5, 0.7] means A takes 60% of B's time, and the
    machine's noise cannot explain the difference.

    Args:
        a, b: seconds per round of A and of B, paired by round (same length, >= 2).
        names: names of A and B for the text and the verdict.
        confidence: level of the interval, in (0, 1).

    Returns:
        A :class:`LatencyRatio`.

    Raises:
        ValueError: different lengths, fewer than 2 rounds, or non-positive times.
        TypeError: names that are not two strings.

    Example:
        >>> r = latency_ratio([1.0, 1.1, 0.9, 1.0], [2.0, 2.1, 2.0, 1.9], names=("new", "old"))
        >>> round(r.ratio, 2), r.verdict
        (0.5, 'new faster')
    """
    from compressnet_lite import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be 1-D times of the same rounds, got shapes "
                         f"{a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and a.min() > 0 and b.min() > 0):
        raise ValueError("a and b must be positive, finite times")
    d = stats.paired_difference(np.log(a), np.log(b), confidence, names=tuple(names))
    return LatencyRatio(float(np.exp(d.mean)), float(np.exp(d.low)), float(np.exp(d.high)),
                        d.n, float(np.median(a) * 1e3), float(np.median(b) * 1e3),
                        d.confidence, d.names)


def brief(result: Any) -> str:
    """A short line for prose: a comparison's size, interval and verdict, no names.

    ``str()`` of a :class:`~compressnet_lite.stats.PairedDifference`,
    :class:`~compressnet_lite.stats.McNemar` or :class:`LatencyRatio` names both sides and
    every detail, which suits a printed log; inside a sentence (a glued value) this shorter
    form reads better.

    Raises:
        TypeError: ``result`` is none of the three.

    Example:
        >>> from compressnet_lite import stats
        >>> brief(stats.paired_difference([0.95, 0.96, 0.97], [0.94, 0.96, 0.95]))
        '+1.00 points [95% CI -1.48, +3.48], 3 seeds: indistinguishable here'
    """
    from compressnet_lite import stats

    if isinstance(result, stats.PairedDifference):
        k, u = result.scale, f" {result.unit}" if result.unit else ""
        return (f"{result.mean * k:+.2f}{u} [{result.confidence:.0%} CI "
                f"{result.low * k:+.2f}, {result.high * k:+.2f}], {result.n} seeds: "
                f"{result.verdict}")
    if isinstance(result, stats.McNemar):
        p = "p < 0.001" if result.p_value < 0.001 else f"p = {result.p_value:.2g}"
        return (f"{result.difference * 100:+.2f} points on {result.n} test images, "
                f"McNemar {p}: {result.verdict}")
    if isinstance(result, LatencyRatio):
        return (f"{result.ratio:.2f}x the time [{result.confidence:.0%} CI "
                f"{result.low:.2f}, {result.high:.2f}], {result.rounds} rounds: "
                f"{result.verdict}")
    raise TypeError(f"result must be a PairedDifference, McNemar or LatencyRatio, "
                    f"got {type(result).__name__}")


def report(*items: Any, width: int = 78) -> None:
    """Print each item (a statistic, a latency ratio, any text) wrapped to ``width`` columns.

    A comparison's full line (names, interval, test, verdict) is longer than a book's code
    column; wrapped, with continuation lines indented, it stays readable without scrolling.

    Example:
        >>> report("a " * 10, width=12)
        a a a a a a
            a a a a
    """
    for item in items:
        print(textwrap.fill(str(item), width, subsequent_indent="    ",
                            break_long_words=False, break_on_hyphens=False))
