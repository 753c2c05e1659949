"""Shared fixtures: the digits data and a small trained MLP, built once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

import compressnet_lite as cnl  # noqa: E402


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
    def run(script: str) -> str:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run([sys.executable, "-c", _TWO_CPUS + textwrap.dedent(script)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
        return done.stdout
    return run
