"""Weight clustering: compressnet_lite on Keras 3 vs tfmot's ``cluster_weights`` on tf_keras.

Same model (LeNet-300-100 on the bundled 8x8 digits), same pretrained weights, same data;
every Dense kernel clustered to k values with the linear, density-based and k-means++
initializations (the three tfmot offers besides random), then fine-tuned with the same
optimizer, batch size and epochs. Both libraries update a centroid with the sum of the
gradients of its weights (tfmot's default ``GradientAggregation.SUM``). Prints a Markdown
table:

* test accuracy right after clustering and after fine-tuning, both;
* the same for ours with ``max_iter=0`` (initial centroids kept, no Lloyd iterations);
* the most distinct values any kernel holds after fine-tuning (must be <= k), all;
* bytes: ours as written by ``clustered_bytes`` (packed ceil(log2 k)-bit indices +
  codebooks + float32 biases); tfmot has no packed format, so its stripped model is saved
  as ``.h5`` and gzipped, which is how its guide measures clustering;
* seconds to cluster the model (before fine-tuning), both.

Run from the repository root (not in CI; a few minutes):

    .venv/bin/python benchmarks/clustering_vs_tfmot.py [--epochs 3]

The tfmot environment is created at ``benchmarks/.venv-tfmot`` if missing (needs pip
access to tensorflow 2.21, tf_keras 2.21, tensorflow-model-optimization 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _tfmot_env import ensure_tfmot_venv, lenet_300_100  # noqa: E402  (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
KS = (2, 4, 8, 16, 32)
INITS = ("linear", "density", "kmeans++")
BATCH = 32
LR = 1e-4  # fine-tuning shared weights: a small step, as in Han et al.


# ----------------------------------------------------------------------------- tfmot side

def tfmot_worker(npz: str, out: str, epochs: int) -> None:
    """Runs inside benchmarks/.venv-tfmot with TF_USE_LEGACY_KERAS=1."""
    import gzip

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    f = np.load(npz)
    x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    init = [f[f"w{i}"] for i in range(6)]
    cluster = tfmot.clustering.keras
    inits = {"linear": cluster.CentroidInitialization.LINEAR,
             "density": cluster.CentroidInitialization.DENSITY_BASED,
             "kmeans++": cluster.CentroidInitialization.KMEANS_PLUS_PLUS}

    def build():
        return lenet_300_100(keras, x_train.shape[1], init)

    def accuracy(model):
        return float(np.mean(np.argmax(model.predict(x_test, batch_size=256, verbose=0), -1) == y_test))

    results = {}
    for k in KS:
        for name, how in inits.items():
            keras.utils.set_random_seed(0)
            start = time.perf_counter()
            clustered = cluster.cluster_weights(build(), number_of_clusters=k, cluster_centroids_init=how)
            seconds = time.perf_counter() - start
            before = accuracy(cluster.strip_clustering(clustered))
            clustered.compile(optimizer=keras.optimizers.Adam(LR),
                              loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
            clustered.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0)
            stripped = cluster.strip_clustering(clustered)
            kernels = [w for w in stripped.get_weights() if w.ndim == 2]
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "m.h5")
                keras.models.save_model(stripped, path, include_optimizer=False)
                gz = len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))
            results[f"{k}/{name}"] = {"before": before, "after": accuracy(stripped),
                                      "distinct": max(len(np.unique(w)) for w in kernels),
                                      "bytes": gz, "seconds": seconds}
    results["versions"] = {"tensorflow": tf.__version__, "tf_keras": keras.__version__,
                           "tfmot": getattr(tfmot, "__version__", "?")}
    Path(out).write_text(json.dumps(results))


# ------------------------------------------------------------------------------ our side

def ours(model, data, epochs: int, max_iter: int = 100) -> dict:
    import keras

    import compressnet_lite as cnl

    results = {}
    for k in KS:
        for init in INITS:
            keras.utils.set_random_seed(0)
            start = time.perf_counter()
            clustered = cnl.clustering.cluster_weights(model, k, init=init, max_iter=max_iter)
            seconds = time.perf_counter() - start
            before = cnl.metrics.accuracy(clustered, data.x_test, data.y_test)
            cnl.models.train(clustered, data, epochs=epochs, batch_size=BATCH, learning_rate=LR)
            distinct = max(len(np.unique(keras.ops.convert_to_numpy(l.kernel)))
                           for l in clustered.layers if isinstance(l, cnl.clustering.ClusteredDense))
            results[f"{k}/{init}"] = {
                "before": before, "after": cnl.metrics.accuracy(clustered, data.x_test, data.y_test),
                "distinct": distinct, "bytes": cnl.clustering.clustered_bytes(clustered).total,
                "seconds": seconds}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--worker", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tfmot_worker(*args.worker, epochs=args.epochs)
        return

    sys.path.insert(0, str(ROOT))
    import keras

    import compressnet_lite as cnl

    data = cnl.data.load_digits()
    keras.utils.set_random_seed(0)
    model = cnl.models.train(cnl.models.lenet_300_100(data.input_shape), data, epochs=args.pretrain_epochs)
    base = cnl.metrics.accuracy(model, data.x_test, data.y_test)
    float32 = 4 * cnl.metrics.count_params(model)

    python = ensure_tfmot_venv()
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = os.path.join(tmp, "data.npz"), os.path.join(tmp, "tfmot.json")
        np.savez(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                 **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        start = time.perf_counter()
        subprocess.run([str(python), __file__, "--epochs", str(args.epochs), "--worker", npz, out],
                       check=True, env=env)
        tfmot_wall = time.perf_counter() - start
        theirs = json.loads(Path(out).read_text())
    start = time.perf_counter()
    mine = ours(model, data, args.epochs)
    ours_wall = time.perf_counter() - start
    init_only = ours(model, data, args.epochs, max_iter=0)

    versions = theirs.pop("versions")
    print(f"LeNet-300-100 on digits (1347 train / 450 test), pretrained {args.pretrain_epochs} epochs: "
          f"accuracy {base:.3f}, float32 parameters {float32:,} bytes. Fine-tuning: Adam lr {LR}, "
          f"batch {BATCH}, {args.epochs} epochs. Keras {keras.__version__} vs tfmot {versions['tfmot']} "
          f"on tf_keras {versions['tf_keras']} (TF {versions['tensorflow']}); {platform.machine()}, "
          f"{os.cpu_count()} CPUs. Wall time of each whole run: ours {ours_wall:.0f} s, "
          f"tfmot {tfmot_wall:.0f} s.")
    print()
    print("Ours: Lloyd iterations after the initialization (default); ours-0: `max_iter=0`, the initial "
          "centroids kept as tfmot does before fine-tuning.")
    print()
    print("| k | init | acc. clustered (ours / ours-0 / tfmot) | acc. fine-tuned (ours / ours-0 / tfmot) "
          "| max distinct after (ours / ours-0 / tfmot) | bytes (ours packed / tfmot .h5 gzip) "
          "| s to cluster (ours / tfmot) |")
    print("|---|---|---|---|---|---|---|")
    for key in mine:
        k, init = key.split("/")
        a, z, b = mine[key], init_only[key], theirs[key]
        print(f"| {k} | {init} | {a['before']:.3f} / {z['before']:.3f} / {b['before']:.3f} "
              f"| {a['after']:.3f} / {z['after']:.3f} / {b['after']:.3f} "
              f"| {a['distinct']} / {z['distinct']} / {b['distinct']} | {a['bytes']:,} / {b['bytes']:,} "
              f"| {a['seconds']:.2f} / {b['seconds']:.2f} |")


if __name__ == "__main__":
    main()
