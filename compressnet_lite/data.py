"""Data sets for the book: scikit-learn's bundled digits (offline, the default) and MNIST.

The digits set (1,797 8x8 grey images, 10 classes) ships inside scikit-learn, so every
chapter runs without a network. MNIST is read from Keras' ``mnist.npz`` file when the user
has it; nothing here downloads.

Chapters call :func:`load`, which picks the data set from a *spec* string, by default
the environment variable ``CNL_DATA``:

* ``digits`` (the default): scikit-learn's digits, 1,347 training and 450 test images.
* ``mnist:PATH``: Keras' ``mnist.npz`` at ``PATH``, reduced to a fixed, stratified subset of
  :data:`MNIST_TRAIN_SUBSET` training and :data:`MNIST_TEST_SUBSET` test images (drawn once,
  deterministically, by :func:`stratified_subset`) so that every chapter stays under about
  five minutes on two CPU cores; ``subset=False`` loads all 60,000 + 10,000.
* ``npz:PATH``: any ``.npz`` file with the arrays ``x_train, y_train, x_test, y_test``,
  used whole.

So ``CNL_DATA=mnist:$HOME/mnist.npz make test`` runs the book on MNIST.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from compressnet_lite._checks import check_array, check_bool, check_fraction, check_positive_int

__all__ = ["Dataset", "load", "parse_spec", "load_digits", "load_mnist", "load_npz",
           "stratified_subset", "write_mnist_like", "MNIST_URL", "MNIST_TRAIN_SUBSET",
           "MNIST_TEST_SUBSET", "ENV_VAR"]

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"

#: Environment variable read by :func:`load` when no spec is given.
ENV_VAR = "CNL_DATA"

#: Training images a chapter gets from ``mnist:PATH`` (stratified, fixed; see :func:`load`).
MNIST_TRAIN_SUBSET = 3000

#: Test images a chapter gets from ``mnist:PATH``: one image is 0.1 points.
MNIST_TEST_SUBSET = 1000

_KEYS = ("x_train", "y_train", "x_test", "y_test")


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


# --------------------------------------------------------------------------- array math


def stratified_subset(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of a deterministic, stratified random subset of ``size`` examples.

    Each class gets a share of ``size`` proportional to its frequency (largest remainder
    rounding, so the shares add up to ``size`` exactly); within a class the examples are
    drawn without replacement by a NumPy generator seeded with ``seed``. The indices are
    returned sorted, so the subset keeps the order of the original array.

    Args:
        labels: 1-D integer class ids.
        size: number of indices to return, 1..len(labels). ``size == len(labels)`` returns
            every index.
        seed: seed of the draw (same labels, size and seed, same subset).

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        ValueError: ``labels`` is not 1-D or is empty, or ``size`` is out of range.
        TypeError: ``labels`` are not integers, or ``size``/``seed`` is not an integer.

    Example:
        >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
        >>> idx = stratified_subset(y, 4)
        >>> np.bincount(y[idx]).tolist()
        [2, 2]
    """
    labels = check_array(labels, "labels", ndim=1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    size = check_positive_int(size, "size", maximum=len(labels))
    seed = check_positive_int(seed, "seed", minimum=0)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (size / len(labels))
    share = np.floor(exact).astype(np.int64)
    # give the remaining examples to the classes with the largest fractional parts
    # (ties broken by class order, so the result does not depend on sort stability)
    rest = size - int(share.sum())
    order = np.lexsort((classes, -(exact - share)))
    share[order[:rest]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), k, replace=False)
              for c, k in zip(classes, share) if k]
    return np.sort(np.concatenate(picked)).astype(np.int64)


# --------------------------------------------------------------------------- loaders


def parse_spec(spec: str | None = None) -> tuple[str, str | None]:
    """Split a data spec into ``(kind, path)``; ``None`` reads ``$CNL_DATA`` (else digits).

    Args:
        spec: ``"digits"``, ``"mnist:PATH"`` or ``"npz:PATH"`` (``PATH`` may contain
            colons; only the first one separates), or ``None``.

    Returns:
        ``("digits", None)``, ``("mnist", PATH)`` or ``("npz", PATH)``. The file is not
        opened here.

    Raises:
        TypeError: ``spec`` is not a string.
        ValueError: any other form, naming where the spec came from.

    Example:
        >>> parse_spec("mnist:/data/mnist.npz")
        ('mnist', '/data/mnist.npz')
    """
    origin = "spec"
    if spec is None:
        spec = os.environ.get(ENV_VAR, "").strip() or "digits"
        origin = f"the environment variable {ENV_VAR}"
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string such as 'digits' or 'mnist:PATH', "
                        f"got {type(spec).__name__}")
    if spec == "digits":
        return "digits", None
    kind, sep, path = spec.partition(":")
    if sep and kind in ("mnist", "npz") and path:
        return kind, path
    raise ValueError(f"{origin} must be 'digits', 'mnist:PATH' or 'npz:PATH', got {spec!r}")


def load(spec: str | None = None, *, image: bool = False, subset: bool = True) -> Dataset:
    """The data set a chapter (or the command line) asks for, by spec string.

    Args:
        spec: ``"digits"``, ``"mnist:PATH"`` (Keras' ``mnist.npz``) or ``"npz:PATH"`` (any
            file with ``x_train, y_train, x_test, y_test``); ``None`` reads the environment
            variable ``CNL_DATA`` and falls back to ``"digits"``.
        image: return images with a channel axis, ``(n, height, width, channels)``, for
            CNNs; otherwise flat vectors ``(n, features)`` for MLPs.
        subset: with ``mnist:``, draw the chapters' fixed stratified subset of
            :data:`MNIST_TRAIN_SUBSET` training and :data:`MNIST_TEST_SUBSET` test images
            (seed 0, same images every time); ``False`` keeps all of them. The digits and
            ``npz:`` files are always used whole.

    Returns:
        A :class:`Dataset` with float32 features in [0, 1] (uint8 pixels are divided by
        255) and int32 labels.

    Raises:
        TypeError: ``spec`` is not a string or ``image``/``subset`` not a bool.
        ValueError: an unknown spec, or a file without the four arrays or whose arrays do
            not fit together.
        FileNotFoundError: the file named by the spec does not exist.

    Example:
        >>> d = load("digits")
        >>> d.x_train.shape, load("digits", image=True).input_shape
        ((1347, 64), (8, 8, 1))
    """
    image = check_bool(image, "image")
    subset = check_bool(subset, "subset")
    kind, path = parse_spec(spec)
    if kind == "digits":
        return load_digits(image=image)
    if kind == "npz":
        return load_npz(path, image=image)
    data = load_mnist(path, flatten=not image)
    if not subset:
        return data
    train = stratified_subset(data.y_train, min(MNIST_TRAIN_SUBSET, len(data.y_train)))
    test = stratified_subset(data.y_test, min(MNIST_TEST_SUBSET, len(data.y_test)))
    return Dataset(data.x_train[train], data.y_train[train], data.x_test[test], data.y_test[test])


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
        A :class:`Dataset` with float32 features and int32 labels (every image, no subset;
        :func:`load` draws the chapters' subset).

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
    arrays = _read_arrays(path, "a Keras mnist.npz file")
    for split in ("train", "test"):
        xs = arrays[f"x_{split}"]
        if xs.ndim != 3:
            raise ValueError(f"{path}: x_{split} must be (n, height, width) images, "
                             f"got shape {xs.shape}")
    return _to_dataset(arrays, image=not flatten, pixels=arrays["x_train"].max() > 1)


def load_npz(path: str | os.PathLike, *, image: bool = False) -> Dataset:
    """Load a data set stored as ``x_train, y_train, x_test, y_test`` in one ``.npz`` file.

    Args:
        path: the file. Features may be vectors ``(n, d)``, images ``(n, h, w)`` or
            ``(n, h, w, c)``; uint8 features are divided by 255, others are used as stored.
        image: return ``(n, h, w, c)`` images (``(n, h, w)`` gains a channel axis, square
            vectors ``(n, s*s)`` become ``(n, s, s, 1)``); otherwise flat ``(n, d)`` vectors.

    Returns:
        A :class:`Dataset` with float32 features and int32 labels.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a missing array, labels that are not non-negative integers, lengths that
            differ, or vectors that cannot be shaped into the images asked for.
    """
    image = check_bool(image, "image")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {str(path)!r}")
    arrays = _read_arrays(path, "a data file")
    return _to_dataset(arrays, image=image, pixels=arrays["x_train"].dtype == np.uint8)


def write_mnist_like(path: str | os.PathLike, *, copies: int = 1, seed: int = 0) -> Path:
    """Write the digits, upsampled to 28x28, as a file in Keras' ``mnist.npz`` format.

    For trying the MNIST code path (``CNL_DATA=mnist:PATH``) where MNIST itself is not at
    hand: each 8x8 digit is resized to 20x20 by bilinear interpolation and centred in a
    28x28 frame, as MNIST's digits are, with uint8 pixels 0..255. The split is
    :func:`load_digits`' (1,347 train, 450 test images per copy). It is *not* MNIST:
    accuracies on it say nothing about MNIST, only that the code runs on 28x28 inputs.

    Args:
        path: where to write the ``.npz`` file (its folder must exist).
        copies: how many copies of each split to write; every copy after the first is
            shifted by a random offset of up to 2 pixels in each direction, so that
            ``copies=3`` (4,041 training, 1,350 test images) is large enough for
            :func:`load`'s MNIST subset and gives a chapter's MNIST running time.
        seed: seed of the digits' train/test split and of the shifts.

    Returns:
        The path written.

    Raises:
        TypeError / ValueError: ``copies`` or ``seed`` is not a non-negative integer
            (``copies`` at least 1).

    Example:
        >>> import tempfile, pathlib
        >>> p = write_mnist_like(pathlib.Path(tempfile.mkdtemp()) / "mnist_like.npz")
        >>> load_mnist(p).x_train.shape
        (1347, 28, 28, 1)
    """
    from scipy.ndimage import zoom

    copies = check_positive_int(copies, "copies")
    seed = check_positive_int(seed, "seed", minimum=0)
    digits = load_digits(seed=seed, image=True)
    rng = np.random.default_rng(seed)

    def upsample(x: np.ndarray) -> np.ndarray:
        small = np.clip(zoom(x[..., 0], (1, 20 / 8, 20 / 8), order=1), 0.0, 1.0)
        frames = []
        for copy in range(copies):
            frame = np.zeros((len(x), 28, 28), np.float32)
            frame[:, 4:24, 4:24] = small
            if copy:
                for i, (dy, dx) in enumerate(rng.integers(-2, 3, (len(x), 2))):
                    frame[i] = np.roll(frame[i], (dy, dx), axis=(0, 1))
            frames.append(frame)
        return np.round(np.concatenate(frames) * 255).astype(np.uint8)

    path = Path(path)
    np.savez_compressed(path, x_train=upsample(digits.x_train),
                        y_train=np.tile(digits.y_train, copies).astype(np.uint8),
                        x_test=upsample(digits.x_test),
                        y_test=np.tile(digits.y_test, copies).astype(np.uint8))
    return path


def _read_arrays(path: Path, what: str) -> dict[str, np.ndarray]:
    """The four arrays of an ``.npz`` file, checked for labels and matching lengths."""
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
            arrays = {k: f[k] for k in _KEYS if k in files}
    except Exception as exc:  # not a zip, truncated, pickled objects ...
        raise ValueError(f"{path} is not a readable .npz file: {exc}") from None
    missing = [k for k in _KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path} is not {what}: missing arrays {missing} "
                         f"(need {', '.join(_KEYS)})")
    for split in ("train", "test"):
        xs, ys = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if ys.ndim != 1 or xs.ndim < 2 or len(xs) != len(ys) or len(ys) == 0:
            raise ValueError(f"{path}: x_{split} must be (n, ...) and y_{split} (n,) with the "
                             f"same n > 0, got {xs.shape} and {ys.shape}")
        whole = np.issubdtype(ys.dtype, np.integer) or (
            np.issubdtype(ys.dtype, np.floating) and np.all(np.isfinite(ys))
            and np.array_equal(ys, np.round(ys)))
        if not whole or ys.min() < 0:
            raise ValueError(f"{path}: y_{split} must hold non-negative integer class ids, "
                             f"got dtype {ys.dtype} with values from {ys.min()} to {ys.max()}")
        if not np.issubdtype(xs.dtype, np.number):
            raise ValueError(f"{path}: x_{split} must be numeric, got dtype {xs.dtype}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(f"{path}: x_train and x_test examples differ in shape, "
                         f"{arrays['x_train'].shape[1:]} vs {arrays['x_test'].shape[1:]}")
    return arrays


def _to_dataset(arrays: dict[str, np.ndarray], *, image: bool, pixels: bool) -> Dataset:
    """Float32 features (divided by 255 when they are 0..255 ``pixels``), int32 labels."""
    out = []
    for split in ("train", "test"):
        xs = arrays[f"x_{split}"].astype(np.float32)
        if pixels:
            xs /= np.float32(255.0)
        out += [_shape(xs, image), arrays[f"y_{split}"].astype(np.int32)]
    return Dataset(*out)


def _shape(x: np.ndarray, image: bool) -> np.ndarray:
    if not image:
        return x.reshape(len(x), -1)
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x[..., None]
    side = int(round(np.sqrt(x.shape[1])))
    if x.ndim != 2 or side * side != x.shape[1]:
        raise ValueError(f"image=True needs images or square vectors, got features of shape "
                         f"{x.shape[1:]}")
    return x.reshape(len(x), side, side, 1)


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
