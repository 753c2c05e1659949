"""Shared fixtures: the digits data and a small trained MLP, built once per test session."""

from __future__ import annotations

import os

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
