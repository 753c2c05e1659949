"""Tests for compressnet_lite.tflite: conversion, running, and the scoped silencing of fd 2."""

from __future__ import annotations

import os
import sys
import threading
import time

import keras
import numpy as np
import pytest

import compressnet_lite as cnl
from compressnet_lite._backend import BackendError
from compressnet_lite import quantization as Q
from compressnet_lite import tflite as T


_NEEDS_TF = "TFLite conversion needs the TensorFlow backend (to_tflite refuses the others)"


@pytest.fixture(scope="module")
def mlp(_trained_mlp):
    """The session's trained seed_mlp (conftest); tests here only read it."""
    return _trained_mlp


@pytest.fixture(scope="module")
def blobs(mlp, digits):
    """The MLP converted once: float32, int8 with float I/O, int8 with int8 I/O."""
    return {"float": T.to_tflite(mlp, int8=False),
            "int8": T.to_tflite(mlp, digits.x_train),
            "int8_io": T.to_tflite(mlp, digits.x_train, int8_io=True)}


@pytest.mark.backend("tensorflow", reason=_NEEDS_TF)
def test_int8_matches_float_accuracy(mlp, digits, blobs):
    assert len(blobs["int8"]) < len(blobs["float"]) / 2
    runner = T.TFLiteRunner(blobs["int8"])
    assert runner.backend in ("ai_edge_litert", "tf.lite")
    acc_float = np.mean(T.tflite_predict(blobs["float"], digits.x_test).argmax(1) == digits.y_test)
    acc_int8 = np.mean(runner(digits.x_test).argmax(1) == digits.y_test)
    acc_keras = cnl.metrics.accuracy(mlp, digits.x_test, digits.y_test)
    assert abs(acc_float - acc_keras) < 1e-9
    assert acc_int8 >= acc_float - 0.01
    assert runner(digits.x_test[:7]).shape == (7, 10)  # batch size can change


@pytest.mark.backend("tensorflow", reason=_NEEDS_TF)
def test_int8_io_takes_and_returns_codes(digits, blobs):
    io = T.TFLiteRunner(blobs["int8_io"])
    inp, out = io.input_details, io.output_details
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    s, z = inp["quantization"]
    x = digits.x_test[:20]
    codes = T._quantize_io(x, s, z, np.int8)
    raw = io.raw(codes)
    assert raw.dtype == np.int8 and raw.shape == (20, 10)
    # The float call quantizes the same way and dequantizes the codes it gets back.
    so, zo = out["quantization"]
    np.testing.assert_allclose(io(x), (raw.astype(np.float32) - zo) * so, rtol=1e-6)
    # Same arithmetic as the float-I/O model: identical predictions on the test set.
    same = io(digits.x_test).argmax(1) == T.TFLiteRunner(blobs["int8"])(digits.x_test).argmax(1)
    assert same.all()


def test_quantize_io_rounds_halves_away_from_zero():
    x = np.array([0.5, 1.5, -0.5, -2.5, 1000.0, -1000.0], np.float32)
    np.testing.assert_array_equal(T._quantize_io(x, 1.0, 0, np.int8), [1, 2, -1, -3, 127, -128])
    np.testing.assert_array_equal(T._quantize_io(np.array([0.0, 1.0]), 0.5, -128, np.int8), [-128, -126])


@pytest.mark.backend("tensorflow", reason=_NEEDS_TF)
@pytest.mark.parametrize("kernels", T.KERNELS)
def test_kernel_sets_run_the_same_model(digits, blobs, kernels):
    runner = T.TFLiteRunner(blobs["int8_io"], kernels=kernels)
    assert runner.kernels == kernels
    codes = T._quantize_io(digits.x_test, *runner.input_details["quantization"], np.int8)
    ref = T.TFLiteRunner(blobs["int8_io"], kernels="reference").raw(codes).astype(int)
    got = runner.raw(codes).astype(int)
    assert got.shape == ref.shape == (len(codes), 10)
    if kernels == "auto":
        # The default (XNNPACK) int8 kernels requantize like the reference kernels.
        assert np.abs(got - ref).max() <= 1
    else:
        # The optimized builtin kernels round differently in places; the differences grow
        # over layers (a few codes), so only the predicted classes are compared.
        assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.98


def test_aliases_in_quantization():
    assert Q.to_tflite is T.to_tflite
    assert Q.TFLiteRunner is T.TFLiteRunner and Q.tflite_predict is T.tflite_predict
    from compressnet_lite.quantization import to_tflite

    assert to_tflite is T.to_tflite
    with pytest.raises(AttributeError, match="no attribute 'to_tflight'"):
        Q.to_tflight  # noqa: B018
    assert "tflite" in cnl.__all__ and cnl.tflite is T


def test_other_backend_gets_a_clear_error(mlp, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(BackendError, match="to_tflite needs Keras' TensorFlow backend.*'jax'"):
        T.to_tflite(mlp, int8=False)
    assert issubclass(BackendError, RuntimeError)


@pytest.mark.backend("tensorflow", reason=_NEEDS_TF)
@pytest.mark.parametrize("call, exc, match", [
    (lambda m: T.to_tflite(m), ValueError, "representative_data is required"),
    (lambda m: T.to_tflite(m, np.zeros((0, 64), np.float32)), ValueError, "must not be empty"),
    (lambda m: T.to_tflite(m, np.zeros((4, 7), np.float32)), ValueError,
     r"representative_data must have shape \(n, 64\)"),
    (lambda m: T.to_tflite(m, np.zeros(64, np.float32)), ValueError,
     r"representative_data must have shape \(n, 64\)"),
    (lambda m: T.to_tflite(m, int8="yes"), TypeError, "int8 must be True or False"),
    (lambda m: T.to_tflite(m, np.zeros((4, 64)), int8_io=1), TypeError, "int8_io must be True or False"),
    (lambda m: T.to_tflite(m, int8=False, int8_io=True), ValueError, "int8_io=True needs int8=True"),
    (lambda m: T.to_tflite("model", int8=False), TypeError, "keras.Model"),
    (lambda m: T.tflite_predict("model.tflite", np.zeros((1, 64))), TypeError, "tflite_bytes"),
    (lambda m: T.TFLiteRunner(b""), TypeError, "tflite_bytes"),
    (lambda m: T.TFLiteRunner(b"x", num_threads=0), ValueError, "num_threads must be >= 1"),
    (lambda m: T.TFLiteRunner(b"x", kernels="fast"), ValueError, "kernels must be one of"),
    (lambda m: list(T.representative_batches(np.zeros(3))), ValueError, "a batch of examples"),
    (lambda m: list(T.representative_batches(np.zeros((3, 2)), limit=0)), ValueError, "limit must be"),
], ids=["no-data", "empty", "shape", "not-batch", "int8-type", "io-type", "io-float", "model-type",
        "bytes-type", "bytes-empty", "threads", "kernels", "batches-ndim", "batches-limit"])
def test_conversion_errors(mlp, call, exc, match):
    with pytest.raises(exc, match=match):
        call(mlp)


@pytest.mark.backend("tensorflow", reason=_NEEDS_TF)
def test_runner_refuses_wrong_inputs(blobs):
    runner = T.TFLiteRunner(blobs["float"])
    for x in (np.zeros((2, 7), np.float32), np.zeros(64, np.float32), np.zeros((2, 8, 8), np.float32)):
        with pytest.raises(ValueError, match=r"x must have shape \(n, 64\)"):
            runner(x)
    assert runner(np.zeros((3, 64), np.float32)).shape == (3, 10)  # still usable after the refusals
    io = T.TFLiteRunner(blobs["int8_io"])
    for bad in (np.full((1, 64), 200.0), np.full((1, 64), 0.5)):
        with pytest.raises(ValueError, match="x must hold int8 codes"):
            io.raw(bad)


def test_representative_batches_one_example_each():
    got = list(T.representative_batches(np.arange(12.0).reshape(6, 2), limit=4))
    assert len(got) == 4 and all(len(b) == 1 and b[0].shape == (1, 2) for b in got)
    assert got[3][0].dtype == np.float32 and got[3][0].tolist() == [[6.0, 7.0]]


# ---------------------------------------------------------------------------------------
# _quiet: fd 2 is silenced only inside the block, restored always (issue 12 item 8)
# ---------------------------------------------------------------------------------------

def _fd2() -> tuple[int, int]:
    st = os.fstat(2)
    return st.st_dev, st.st_ino


def test_quiet_silences_fd2_and_restores_it(capfd):
    before = _fd2()
    with T._quiet():
        os.write(2, b"c++ chatter\n")
        print("python chatter")
        assert _fd2() != before
    assert _fd2() == before
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    assert "chatter" not in out + err and "after" in err


def test_quiet_restores_and_replays_on_error(capfd):
    before = _fd2()
    with pytest.raises(RuntimeError, match="converter failed"):
        with T._quiet():
            os.write(2, b"the converter's reason\n")
            raise RuntimeError("converter failed")
    assert _fd2() == before
    out, err = capfd.readouterr()
    assert "the converter's reason" in err


def test_quiet_nested_keeps_the_outer_redirect(capfd):
    before = _fd2()
    with T._quiet():
        inside = _fd2()
        with T._quiet():
            pass
        assert _fd2() == inside  # the inner block did not restore fd 2 early
        os.write(2, b"still hidden\n")
    assert _fd2() == before
    assert "still hidden" not in capfd.readouterr().err


def test_quiet_is_safe_across_threads(capfd):
    """Two threads at once: neither may save the other's redirect and restore it for good."""
    before = _fd2()
    errors = []

    def work():
        try:
            for _ in range(5):
                with T._quiet():
                    os.write(2, b"hidden\n")
                    time.sleep(0.005)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and _fd2() == before
    os.write(2, b"visible\n")
    err = capfd.readouterr().err
    assert "visible" in err and "hidden" not in err


@pytest.mark.backend("tensorflow", reason=_NEEDS_TF)
def test_conversion_leaves_stderr_working(mlp, capfd):
    T.to_tflite(mlp, int8=False)
    sys.stderr.write("python stderr\n")
    sys.stderr.flush()
    os.write(2, b"fd stderr\n")
    err = capfd.readouterr().err
    assert "python stderr" in err and "fd stderr" in err
