"""One import that sets up a chapter: seeds, print precision, quiet logs, plot style.

Example:
    >>> from compressnet_lite.notebook import setup, show_source
    >>> setup()  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from typing import Any

import keras
import numpy as np

__all__ = ["setup", "show_source", "SEED"]

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
