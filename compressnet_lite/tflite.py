"""Real integer kernels: conversion with the TensorFlow Lite converter and running in LiteRT.

:func:`to_tflite` converts a Keras model into a ``.tflite`` flatbuffer, by default with
full-integer post-training quantization (int8 weights *and* activations, the activation
ranges calibrated on representative data); :class:`TFLiteRunner` runs one in LiteRT's
interpreter (``ai_edge_litert``, else the deprecated ``tf.lite.Interpreter``).
:mod:`compressnet_lite.integer` re-implements the int8 arithmetic of such a model in NumPy.

The converter reads TensorFlow graphs, so :func:`to_tflite` needs Keras' TensorFlow
backend; running a flatbuffer needs only the interpreter. The converter and the
interpreters print C++ log lines straight to file descriptor 2; :func:`_quiet` silences
them around those calls only (and replays them if the call fails).

``cnl.quantization.to_tflite``, ``TFLiteRunner`` and ``tflite_predict`` are aliases of the
names here.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
import warnings
from typing import Any, Iterator

import keras
import numpy as np

from compressnet_lite import _backend
from compressnet_lite._checks import check_array, check_bool, check_choice, check_model, check_positive_int

__all__ = ["to_tflite", "TFLiteRunner", "tflite_predict", "representative_batches", "KERNELS"]

#: Kernel sets :class:`TFLiteRunner` can run with: ``"auto"`` (LiteRT's default: optimized
#: builtin kernels, most float and int8 ops delegated to XNNPACK), ``"builtin"`` (the
#: optimized builtin kernels, no delegate) and ``"reference"`` (TFLite's reference kernels).
KERNELS = ("auto", "builtin", "reference")


# ---------------------------------------------------------------------------------------
# Quiet: the C++ chatter of converter and interpreter, scoped
# ---------------------------------------------------------------------------------------

_QUIET_LOCK = threading.RLock()
_quiet_depth = 0


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converter's and interpreters' chatter for the calls inside the block.

    Python warnings and ``sys.stdout`` are captured, and file descriptor 2 (where the C++
    code writes lines such as "fully_quantize: 0 ...") is pointed at a temporary file. File
    descriptors belong to the whole process, so one lock serialises the blocks of all
    threads (a second thread waits instead of saving the first one's redirect as "the
    original" and restoring it for good), a nested block in the same thread reuses the
    outer redirect, and the original descriptor is restored on the way out, also when the
    block raises. If it raises, the captured output is written back to the real stdout and
    stderr, so the converter's own explanation is not lost.
    """
    global _quiet_depth
    with _QUIET_LOCK:
        if _quiet_depth:  # nested: the outer block has redirected already
            _quiet_depth += 1
            try:
                yield
            finally:
                _quiet_depth -= 1
            return
        log = tempfile.TemporaryFile()
        saved = None
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(log.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (some embedded consoles)
            if saved is not None:
                os.close(saved)
            saved = None
        out = io.StringIO()
        _quiet_depth = 1
        failed = False
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(out):
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            failed = True
            raise
        finally:
            _quiet_depth = 0
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            if failed:
                log.seek(0)
                sys.stdout.write(out.getvalue())
                sys.stderr.write(log.read().decode("utf-8", errors="replace"))
                sys.stderr.flush()
            log.close()


# ---------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------

def _check_tensorflow_backend(what: str) -> None:
    _backend.require("tensorflow", what, "The TensorFlow Lite converter reads TensorFlow graphs: "
                     "convert in a TensorFlow-backend process (a .keras file saved on any backend "
                     "loads there)")


def representative_batches(data: Any, limit: int = 256) -> Iterator[list[np.ndarray]]:
    """Yield the first ``limit`` examples of ``data`` one at a time, as the converter wants.

    The converter calls the representative dataset for each calibration example and expects
    a list with one float32 array of batch size 1 per model input.

    Raises:
        TypeError / ValueError: ``data`` is not a non-empty finite batch ``(n, ...)``.
    """
    x = check_array(data, "representative_data")
    limit = check_positive_int(limit, "limit")
    if x.ndim < 2:
        raise ValueError(f"representative_data must be a batch of examples (n, ...), got shape {x.shape}")
    for i in range(min(len(x), limit)):
        yield [x[i:i + 1].astype(np.float32)]


def to_tflite(model: keras.Model, representative_data: Any = None, int8: bool = True, *,
              int8_io: bool = False) -> bytes:
    """Convert ``model`` with the TensorFlow Lite converter; full-integer int8 by default.

    With ``int8=True`` weights *and* activations become int8 (activation ranges calibrated
    on up to 256 examples of ``representative_data``) and every op must have an int8 kernel
    (``TFLITE_BUILTINS_INT8``). Inputs and outputs stay float32 (a quantize op at the entry,
    a dequantize op at the exit) unless ``int8_io=True``, which makes the model take and
    return int8 codes (their scales and zero points are in the interpreter's tensor details;
    :class:`TFLiteRunner` converts for you). With ``int8=False`` the float32 model is converted.

    Args:
        model: a built Keras model (a ``quantize_model`` or QAT model works too: its kernels
            are plain float tensors to the converter).
        representative_data: example inputs, shape ``(n, ...)``; required for int8.
        int8: full-integer quantization (``True``) or a float32 model.
        int8_io: int8 input and output tensors (needs ``int8``).

    Returns:
        The ``.tflite`` flatbuffer as bytes.

    Raises:
        BackendError: (a ``RuntimeError``) Keras does not run on the TensorFlow backend.
        TypeError: ``int8`` or ``int8_io`` is not a bool.
        ValueError: ``int8`` without ``representative_data``, ``int8_io`` without ``int8``,
            empty/NaN data, or data whose example shape is not the model's input shape.

    Example:
        >>> blob = to_tflite(model, x_train[:256])                     # doctest: +SKIP
    """
    from compressnet_lite.quantization import _check_examples

    _check_tensorflow_backend("to_tflite")
    import tensorflow as tf

    check_model(model)
    int8 = check_bool(int8, "int8")
    int8_io = check_bool(int8_io, "int8_io")
    if int8 and representative_data is None:
        raise ValueError("representative_data is required for int8=True: full-integer quantization "
                         "calibrates activation ranges on example inputs (pass e.g. x_train[:256])")
    if int8_io and not int8:
        raise ValueError("int8_io=True needs int8=True: a float32 model has no int8 inputs")
    if representative_data is not None:
        representative_data = _check_examples(model, representative_data, "representative_data")
    with _quiet():  # from_keras_model exports a SavedModel and prints its signature
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative_batches(representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    with _quiet():
        return bytes(converter.convert())


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------

def _quantize_io(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Float inputs to the codes of an integer input tensor, as TFLite's QUANTIZE op computes them."""
    from compressnet_lite.integer import quantize_input

    return quantize_input(x, scale, zero_point, dtype)


class TFLiteRunner:
    """A callable that runs a single-input, single-output ``.tflite`` model on a batch.

    Uses LiteRT's ``ai_edge_litert.interpreter.Interpreter`` when it is installed, else the
    deprecated ``tf.lite.Interpreter`` (its deprecation warning is silenced). ``backend``
    says which one runs. Calling it takes and returns floats: int8 inputs/outputs, if the
    model has them, are (de)quantized here. :meth:`raw` feeds and returns the tensors as
    stored (int8 codes for an ``int8_io`` model).

    Args:
        tflite_bytes: a flatbuffer from :func:`to_tflite`.
        num_threads: interpreter threads (1 for comparable latency).
        kernels: ``"auto"``, ``"builtin"`` or ``"reference"`` (see :data:`KERNELS`).
        keep_tensors: keep every intermediate tensor of the last run readable with
            :meth:`tensor` (for debugging and op-by-op comparisons; uses more memory).

    Raises:
        TypeError: ``tflite_bytes`` is not non-empty bytes.
        ValueError: bad ``num_threads`` or ``kernels``.
    """

    def __init__(self, tflite_bytes: bytes, num_threads: int = 1, *, kernels: str = "auto",
                 keep_tensors: bool = False):
        if not isinstance(tflite_bytes, (bytes, bytearray)) or not tflite_bytes:
            raise TypeError(f"tflite_bytes must be non-empty bytes (from to_tflite), got "
                            f"{type(tflite_bytes).__name__}")
        num_threads = check_positive_int(num_threads, "num_threads")
        self.kernels = check_choice(kernels, "kernels", KERNELS)
        self.keep_tensors = check_bool(keep_tensors, "keep_tensors")
        with _quiet():
            try:
                from ai_edge_litert import interpreter as module

                resolvers = module.OpResolverType
                self.backend = "ai_edge_litert"
            except ImportError:  # pragma: no cover - depends on the environment
                import tensorflow as tf

                module, resolvers = tf.lite, tf.lite.experimental.OpResolverType
                self.backend = "tf.lite"
            resolver = {"auto": resolvers.AUTO,
                        "builtin": resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                        "reference": resolvers.BUILTIN_REF}[self.kernels]
            self.interpreter = module.Interpreter(model_content=bytes(tflite_bytes),
                                                  num_threads=num_threads,
                                                  experimental_op_resolver_type=resolver,
                                                  experimental_preserve_all_tensors=self.keep_tensors)
        self.tflite_bytes = bytes(tflite_bytes)
        inp = self.interpreter.get_input_details()[0]
        self._example = tuple(int(d) for d in inp.get("shape_signature", inp["shape"])[1:])  # -1: any
        self._batch = None
        self._first = True

    @property
    def input_details(self) -> dict:
        """The interpreter's details of the input tensor (dtype, shape, quantization)."""
        return self.interpreter.get_input_details()[0]

    @property
    def output_details(self) -> dict:
        """The interpreter's details of the output tensor."""
        return self.interpreter.get_output_details()[0]

    def _check(self, x: Any, name: str) -> np.ndarray:
        x = check_array(x, name)
        fits = x.ndim == len(self._example) + 1 and all(w in (-1, h)
                                                        for w, h in zip(self._example, x.shape[1:]))
        if not fits:
            want = ", ".join("?" if w == -1 else str(w) for w in self._example)
            raise ValueError(f"{name} must have shape (n, {want}) to fit the model's input, got {x.shape}")
        return x

    def tensor(self, index: int) -> np.ndarray:
        """A copy of tensor ``index`` (see the interpreter's ``get_tensor_details``) as the last
        run left it. The interpreter reuses the memory of intermediate tensors, so reading
        any tensor but the input and the output needs ``keep_tensors=True``.

        Raises:
            ValueError: not a runner with ``keep_tensors``, or no run yet.
        """
        index = check_positive_int(index, "index", minimum=0)
        ends = (self.input_details["index"], self.output_details["index"])
        if not self.keep_tensors and index not in ends:
            raise ValueError(f"tensor {index} is not the input or output: create the runner with "
                             f"keep_tensors=True to read the others")
        if self._batch is None:
            raise ValueError("no run yet: call the runner (or raw) on a batch first")
        return np.array(self.interpreter.get_tensor(index))

    def raw(self, x: Any) -> np.ndarray:
        """Run on ``x`` given in the input tensor's own dtype; return the output tensor as stored.

        Raises:
            ValueError: wrong example shape, or values that do not fit the input dtype.
        """
        x = self._check(x, "x")
        dtype = np.dtype(self.input_details["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            if not np.array_equal(x, np.round(x)) or x.min() < info.min or x.max() > info.max:
                raise ValueError(f"x must hold {dtype} codes ({info.min}..{info.max}) for this model's "
                                 f"{dtype} input; call the runner itself with float inputs")
        return self._invoke(x.astype(dtype))

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        it = self.interpreter
        if self._batch != len(x):
            with _quiet():
                it.resize_tensor_input(self.input_details["index"], [len(x), *x.shape[1:]])
                it.allocate_tensors()
            self._batch = len(x)
        it.set_tensor(self.input_details["index"], x)
        if self._first:
            with _quiet():  # XNNPACK announces itself on the first run
                it.invoke()
            self._first = False
        else:
            it.invoke()
        return np.array(it.get_tensor(self.output_details["index"]))

    def __call__(self, x: Any) -> np.ndarray:
        x = self._check(x, "x")
        inp = self.input_details
        if inp["dtype"] in (np.int8, np.uint8):
            s, z = inp["quantization"]
            x = _quantize_io(x, s, z, inp["dtype"])
        y = self._invoke(x.astype(inp["dtype"]))
        out = self.output_details
        if out["dtype"] in (np.int8, np.uint8):
            s, z = out["quantization"]
            y = (y.astype(np.float32) - z) * np.float32(s)
        return y


def tflite_predict(tflite_bytes: bytes, x: Any, *, num_threads: int = 1) -> np.ndarray:
    """Run a ``.tflite`` model on ``x`` and return its outputs (see :class:`TFLiteRunner`).

    Example:
        >>> probs = tflite_predict(to_tflite(model, x_train), x_test)   # doctest: +SKIP
    """
    return TFLiteRunner(tflite_bytes, num_threads=num_threads)(x)
