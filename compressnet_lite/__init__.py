"""compressnet_lite: neural-network compression on Keras 3, one module per algorithm.

Each module starts with the array math of its algorithm (NumPy, no Keras) and ends with
the Keras glue that applies it to a model. Every transform returns a new model and leaves
the caller's model untouched.

Example:
    >>> import compressnet_lite as cnl
    >>> data = cnl.data.load_digits()
    >>> model = cnl.models.train(cnl.models.seed_mlp(), data, epochs=5)
    >>> round(cnl.metrics.accuracy(model, data.x_test, data.y_test), 2) > 0.8
    True
"""

import os as _os

# Quiet TensorFlow's C++ start-up lines unless the user asked for them, and make sure
# Keras 3 runs on the TensorFlow backend this project is tested with.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from compressnet_lite import data, metrics, models  # noqa: E402

__version__ = "0.1.0"

__all__ = ["__version__", "data", "metrics", "models"]
