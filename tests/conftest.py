"""Shared fixtures: the digits data and a small trained MLP, built once per test session.

The suite runs on the Keras backend chosen the usual way, ``KERAS_BACKEND=tensorflow|jax|
torch`` (TensorFlow when unset): ``make test`` runs it on TensorFlow, ``make test-backends``
on JAX and PyTorch. A test that needs one backend says so with
``@pytest.mark.backend("tensorflow", reason="...")`` and is skipped, with that reason, on
the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

import compressnet_lite as cnl  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backend(*names, reason): run only on these Keras backends; skipped with "
                   "the reason on the others")


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend: {BACKEND}"


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="backend"):
        reason = mark.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.backend(...) needs reason=")
        if BACKEND not in mark.args:
            pytest.skip(f"needs the {' or '.join(mark.args)} backend (running {BACKEND}): {reason}")


@pytest.fixture(scope="session")
def digits():
    """The bundled digits, as 64-vectors."""
    return cnl.data.load_digits()


@pytest.fixture(scope="session")
def digits_images():
    """The bundled digits, as 8x8x1 images."""
    return cnl.data.load_digits(image=True)


@pytest.fixture(scope="session")
def _trained_mlp(digits):
    keras.utils.set_random_seed(0)
    return cnl.models.train(cnl.models.seed_mlp(), digits, epochs=8)


@pytest.fixture
def trained_mlp(_trained_mlp):
    """A trained seed_mlp; a fresh copy per test so no test can spoil it for another."""
    copy = keras.models.clone_model(_trained_mlp)
    copy.set_weights(_trained_mlp.get_weights())
    return copy


_TWO_CPUS = """
import tensorflow as tf
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
"""


@pytest.fixture
def run_on_two_cpus():
    """Run a script in a fresh Python process whose TensorFlow sees two logical CPUs.

    Logical devices must be configured before TensorFlow starts, so ``tf.distribute`` tests
    run in a subprocess. The script finds ``tf`` and a two-replica ``strategy`` defined and
    must print ``OK`` last; the test fails with the script's stderr otherwise.
    """
    if BACKEND != "tensorflow":
        pytest.skip(f"tf.distribute needs the tensorflow backend (running {BACKEND})")

    def run(script: str) -> str:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
               "KERAS_BACKEND": "tensorflow"}
        done = subprocess.run([sys.executable, "-c", _TWO_CPUS + textwrap.dedent(script)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
        return done.stdout
    return run


def _run_python(script: str, *, backend: str | None = None, env: dict | None = None,
                timeout: int = 300) -> str:
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
            "KERAS_BACKEND": backend or BACKEND, **(env or {})}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, env=full, timeout=timeout)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), \
        (done.stdout[-2000:], done.stderr[-3000:])
    return done.stdout


@pytest.fixture
def run_python():
    """``run(script, backend=None, env=None, timeout=300) -> stdout``: run a script in a fresh
    Python process on ``backend`` (default: this suite's), with extra environment ``env``.

    The script must print ``OK`` last; the test fails with the script's stderr otherwise.
    """
    return _run_python
