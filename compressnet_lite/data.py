"""Data sets for the book: scikit-learn's bundled digits (offline, the default) and MNIST.

The digits set (1,797 8x8 grey images, 10 classes) ships inside scikit-learn, so every
chapter runs without a network. MNIST is read from Keras' ``mnist.npz`` file when the user
has it; nothing here downloads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from compressnet_lite._checks import check_fraction, check_positive_int

__all__ = ["Dataset", "load_digits", "load_mnist", "MNIST_URL"]

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"


class Dataset(NamedTuple):
    """A train/test split: features are float32 in [0, 1], labels are int32 class ids."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        """Number of classes (largest label + 1 over both splits)."""
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(64,)`` or ``(8, 8, 1)``."""
        return tuple(self.x_train.shape[1:])


def load_digits(test_size: float = 0.25, seed: int = 0, image: bool = False) -> Dataset:
    """Load scikit-learn's bundled handwritten digits, scaled to [0, 1], split stratified.

    Args:
        test_size: fraction of the 1,797 examples held out for testing, in (0, 1).
        seed: seed of the stratified shuffle split (same seed, same split).
        image: return examples as 8x8x1 images (for CNNs) instead of 64-vectors.

    Returns:
        A :class:`Dataset` with float32 features and int32 labels.

    Raises:
        ValueError: ``test_size`` is not in (0, 1) or leaves a split without every class.
        TypeError: ``seed`` is not an integer.

    Example:
        >>> d = load_digits()
        >>> d.x_train.shape, d.x_test.shape
        ((1347, 64), (450, 64))
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    test_size = check_fraction(test_size, "test_size")
    if test_size == 0.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    check_positive_int(seed, "seed", minimum=0)
    bunch = _sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # pixel values are 0..16
    y = bunch.target.astype(np.int32)
    n_test = int(np.ceil(test_size * len(y)))
    if n_test < 10 or len(y) - n_test < 10:
        raise ValueError(f"test_size={test_size} leaves fewer examples than classes in a split")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y)
    if image:
        x_train, x_test = x_train.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    return Dataset(x_train, y_train, x_test, y_test)


def load_mnist(path: str | os.PathLike | None = None, flatten: bool = False) -> Dataset:
    """Load MNIST from a Keras-format ``mnist.npz`` file, scaled to [0, 1]. Never downloads.

    Args:
        path: the ``mnist.npz`` file; ``None`` looks in the Keras cache
            (``$KERAS_HOME/datasets/mnist.npz``, default ``~/.keras/datasets/mnist.npz``).
        flatten: return 784-vectors (for MLPs such as LeNet-300-100) instead of 28x28x1 images.

    Returns:
        A :class:`Dataset` with float32 features and int32 labels.

    Raises:
        FileNotFoundError: the file is missing; the message says what to download and where.
        ValueError: the file lacks the arrays ``x_train, y_train, x_test, y_test`` or they do
            not fit together.
    """
    path = Path(path) if path is not None else _keras_cache() / "datasets" / "mnist.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST file not found at {path}. Download {MNIST_URL} (11 MB) on a machine with "
            f"internet and copy it to {path}, or pass its location as load_mnist(path=...).")
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            arrays = {k: f[k] for k in keys if k in files}
    except Exception as exc:  # not a zip, truncated, pickled objects ...
        raise ValueError(f"{path} is not a readable .npz file: {exc}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{path} is not a Keras mnist.npz file: missing arrays {missing}")
    for split in ("train", "test"):
        xs, ys = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
            raise ValueError(f"{path}: x_{split} must be (n, height, width) and y_{split} (n,), "
                             f"got {xs.shape} and {ys.shape}")
    scale = 255.0 if arrays["x_train"].max() > 1.0 else 1.0
    out = []
    for split in ("train", "test"):
        xs = arrays[f"x_{split}"].astype(np.float32) / scale
        xs = xs.reshape(len(xs), -1) if flatten else xs[..., None]
        out += [xs, arrays[f"y_{split}"].astype(np.int32)]
    return Dataset(*out)


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
