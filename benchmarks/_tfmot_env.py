"""The separate environment the tfmot comparisons run in.

tensorflow-model-optimization 0.8 works only on legacy tf_keras (``TF_USE_LEGACY_KERAS=1``),
never beside this project's Keras 3 code, so the benchmarks run their tfmot half in
``benchmarks/.venv-tfmot`` as a subprocess and compare the two halves in one table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TFMOT_VENV = Path(__file__).resolve().parent / ".venv-tfmot"
PACKAGES = ["tensorflow==2.21.*", "tf_keras==2.21.*", "tensorflow-model-optimization==0.8.*", "scikit-learn"]


def ensure_tfmot_venv() -> Path:
    """Create ``benchmarks/.venv-tfmot`` with tf_keras and tfmot if missing; return its python."""
    python = TFMOT_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {TFMOT_VENV} (tensorflow 2.21 + tf_keras + tensorflow-model-optimization)")
        subprocess.run([sys.executable, "-m", "venv", str(TFMOT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    return python


def lenet_300_100(keras, n_inputs: int, weights: list):
    """LeNet-300-100 built with the given Keras module (tf_keras inside the tfmot venv, where
    ``compressnet_lite.models`` cannot be imported), with the same layer names and starting
    weights as ``compressnet_lite.models.lenet_300_100`` on our side."""
    inputs = keras.Input((n_inputs,))
    x = keras.layers.Dense(300, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(100, activation="relu", name="fc2")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="out")(x))
    model.set_weights(weights)
    return model
