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
