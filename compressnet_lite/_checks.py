"""Argument checks shared by every module: each raises a clear error naming the argument.

Private: the public functions call these so that every error message has the same shape
("<name> must be ..., got ...").
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
from typing import Any

import keras
import numpy as np


_READS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("cnl_reads", default=None)


def read_value(variable: Any) -> np.ndarray:
    """A variable's value as NumPy; read from the backend once per :func:`reading` block.

    Treat the result as read-only (inside a block it is shared by every caller).
    """
    cache = _READS.get()
    if cache is None:
        return np.asarray(keras.ops.convert_to_numpy(variable))
    key = id(variable)
    if key not in cache:   # the variable is kept alive with its value: ids cannot be reused
        cache[key] = (variable, np.asarray(keras.ops.convert_to_numpy(variable)))
    return cache[key][1]


@contextlib.contextmanager
def reading():
    """Read every variable at most once inside the block: one transform (and the helpers it
    calls) reads the same weights many times. Nothing may change those weights meanwhile."""
    if _READS.get() is not None:
        yield
        return
    token = _READS.set({})
    try:
        yield
    finally:
        _READS.reset(token)


def check_fraction(value: Any, name: str, *, high_inclusive: bool = False) -> float:
    """Return ``value`` as a float in [0, 1) (or [0, 1] with ``high_inclusive``).

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is outside the allowed interval or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    upper_ok = value <= 1.0 if high_inclusive else value < 1.0
    if not (np.isfinite(value) and value >= 0.0 and upper_ok):
        interval = "[0, 1]" if high_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_positive_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int in [minimum, maximum].

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value`` is out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def check_real(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
               min_inclusive: bool = True, max_inclusive: bool = True) -> float:
    """Return ``value`` as a finite float, optionally within ``[minimum, maximum]``.

    ``min_inclusive=False`` (``max_inclusive=False``) makes that bound strict, e.g.
    ``check_real(t, "temperature", minimum=0, min_inclusive=False)`` for ``t > 0``.

    Raises:
        TypeError: ``value`` is not a real number (a bool, a string, None, an array).
        ValueError: ``value`` is NaN, infinite or out of range.

    Example:
        >>> check_real(0.5, "threshold", minimum=0)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    low_ok = minimum is None or (value >= minimum if min_inclusive else value > minimum)
    high_ok = maximum is None or (value <= maximum if max_inclusive else value < maximum)
    if not (np.isfinite(value) and low_ok and high_ok):
        parts = []
        if minimum is not None:
            parts.append(f"{'>=' if min_inclusive else '>'} {minimum:g}")
        if maximum is not None:
            parts.append(f"{'<=' if max_inclusive else '<'} {maximum:g}")
        allowed = f"a finite number {' and '.join(parts)}" if parts else "a finite number"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is a bool (or NumPy bool).

    Raises:
        TypeError: anything else (``0``/``1``, strings, None).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ValueError: ``value`` is not one of ``choices``.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_array(value: Any, name: str, *, ndim: int | tuple[int, ...] | None = None,
                allow_empty: bool = False, finite: bool = True) -> np.ndarray:
    """Return ``value`` as a float NumPy array after checking dtype, shape and values.

    Args:
        value: array-like of real numbers.
        name: the argument's name, used in error messages.
        ndim: allowed number of dimensions (an int or a tuple of ints), or None for any.
        allow_empty: accept an array with no elements.
        finite: reject NaN and infinite values.

    Raises:
        TypeError: ``value`` is not numeric.
        ValueError: wrong number of dimensions, empty, or not finite.
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                             f"got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if finite and arr.size and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_model(model: Any, name: str = "model") -> keras.Model:
    """Return ``model`` if it is a built Keras model with finite weights.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        ValueError: the model is not built (no weights yet) or holds NaN/inf weights.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"{name} must be a keras.Model, got {type(model).__name__}")
    if not model.built or (model.layers and not model.weights and _has_weighted_layers(model)):
        raise ValueError(f"{name} is not built: call it on data or give it an Input first")
    for w in model.weights:
        value = read_value(w)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ValueError(f"{name} has NaN or infinite values in weight {w.path!r}")
    return model


def check_layer(model: keras.Model, layer: Any, name: str = "layer") -> keras.layers.Layer:
    """Return the layer of ``model`` named ``layer`` (or ``layer`` itself if it belongs to it).

    Raises:
        TypeError: ``layer`` is neither a name nor a layer.
        ValueError: no such layer in ``model``.
    """
    if isinstance(layer, keras.layers.Layer):
        if any(l is layer for l in model.layers):
            return layer
        raise ValueError(f"{name} {layer.name!r} is not a layer of model {model.name!r}")
    if not isinstance(layer, str):
        raise TypeError(f"{name} must be a layer name (str) or a keras Layer, got {type(layer).__name__}")
    for candidate in model.layers:
        if candidate.name == layer:
            return candidate
    names = ", ".join(repr(l.name) for l in model.layers)
    raise ValueError(f"{name} {layer!r} is not in model {model.name!r}; its layers are: {names}")


def _has_weighted_layers(model: keras.Model) -> bool:
    return any(isinstance(l, (keras.layers.Dense, keras.layers.Conv2D)) for l in model.layers)
