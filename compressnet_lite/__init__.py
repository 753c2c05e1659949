"""compressnet_lite: neural-network compression on Keras 3, one module per algorithm.

Each module starts with the array math of its algorithm (NumPy, no Keras) and ends with
the Keras glue that applies it to a model. Every transform returns a new model and leaves
the caller's model untouched. Submodules load on first use (``cnl.pruning`` imports
``compressnet_lite.pruning``), so ``import compressnet_lite`` stays cheap.

Example:
    >>> import compressnet_lite as cnl
    >>> data = cnl.data.load_digits()
    >>> model = cnl.models.train(cnl.models.seed_mlp(), data, epochs=5)
    >>> cnl.metrics.accuracy(model, data.x_test, data.y_test) > 0.8
    True
"""

import importlib as _importlib
import os as _os

# Quiet TensorFlow's C++ start-up lines unless the user asked for them, and make sure
# Keras 3 runs on the TensorFlow backend this project is tested with.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

_MODULES = (
    "data", "models", "metrics", "notebook", "stats",
    "surgery", "pruning", "merging", "clustering", "lowrank",
    "quantization", "tflite", "integer", "distillation", "huffman", "codecs", "storage", "pipeline",
    "cli",
)

__all__ = ["__version__", *_MODULES]


def __getattr__(name: str):
    if name in _MODULES:
        module = _importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MODULES))
