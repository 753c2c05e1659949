"""Quantization benchmark: ours (PTQ int8/int4, QAT int4) vs Keras' model.quantize vs TFLite int8.

One run, one model (LeNet-300-100, 784-300-100-10), one data set: MNIST when
``~/.keras/datasets/mnist.npz`` exists, else the bundled digits upsampled to 28x28 (each
pixel repeated 3x3, plus a 2-pixel border), so the network has MNIST's shape offline.

Columns:
  accuracy      test accuracy
  weight bytes  measured size of a raw file holding what the variant computes with:
                float32 kernels+biases; ours: packed codes + float32 scales + float32 biases;
                Keras: its int8 (int4: two per byte) kernels + scales + biases;
                TFLite: the .tflite flatbuffer (graph and quantization parameters included)
  latency ms    median of 50 runs at batch 256, one thread (TF intra/inter-op threads = 1;
                TFLite num_threads = 1)

Target (issue 4): TFLite full-int8 >= 4x faster than the float32 TFLite model at batch 256,
1 thread, on LeNet-300-100. The NumPy integer-only reference (compressnet_lite.integer) runs
the same int8 model; its output codes are compared with each TFLite kernel set.

Run: .venv/bin/python benchmarks/quantization.py   (prints a Markdown table for RESULTS.md)
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402

import compressnet_lite as cnl  # noqa: E402
from compressnet_lite import integer as I  # noqa: E402
from compressnet_lite import quantization as Q  # noqa: E402
from compressnet_lite import tflite as T  # noqa: E402
from compressnet_lite.notebook import setup  # noqa: E402

BATCH, RUNS, EPOCHS = 256, 50, 10


def load_data():
    try:
        return cnl.data.load_mnist(flatten=True), "MNIST"
    except FileNotFoundError:
        d = cnl.data.load_digits()

        def up(x):
            img = np.kron(x.reshape(-1, 8, 8), np.ones((3, 3), np.float32))
            return np.pad(img, ((0, 0), (2, 2), (2, 2))).reshape(len(x), 784).astype(np.float32)

        return cnl.data.Dataset(up(d.x_train), d.y_train, up(d.x_test), d.y_test), \
            "digits upsampled to 28x28 (MNIST not found offline)"


def raw_bytes(arrays) -> int:
    with tempfile.NamedTemporaryFile(delete=False) as f:
        for a in arrays:
            f.write(np.ascontiguousarray(a).tobytes())
        path = f.name
    size = os.path.getsize(path)
    os.unlink(path)
    return size


def ours_bytes(model) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        packed = Q.write_packed(model, Path(tmp) / "codes.bin")
    biases = [l.bias.numpy() for l in model.layers if getattr(l, "bias", None) is not None]
    return packed + raw_bytes(biases)


def keras_bytes(model) -> int:
    return raw_bytes([keras.ops.convert_to_numpy(w) for w in model.weights])


def keras_latency(model, x):
    return cnl.metrics.latency(model, x, runs=RUNS).median * 1e3


def main() -> None:
    setup()
    data, source = load_data()
    x_lat = np.resize(data.x_test, (BATCH, 784)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = cnl.models.train(cnl.models.lenet_300_100((784,)), data, epochs=EPOCHS)
    rows = []

    def add(name, acc, nbytes, lat, note=""):
        rows.append((name, acc, nbytes, lat, note))
        print(f"{name:32s} acc {acc:.4f}  bytes {nbytes:>9,d}  latency {lat:7.3f} ms  {note}", flush=True)

    acc = lambda m: cnl.metrics.accuracy(m, data.x_test, data.y_test)  # noqa: E731
    add("Keras float32", acc(model), keras_bytes(model), keras_latency(model, x_lat))

    for bits in (8, 4):
        q = Q.quantize_model(model, bits=bits)
        add(f"ours PTQ int{bits} per channel", acc(q), ours_bytes(q), keras_latency(q, x_lat),
            "computes with dequantized float32 kernels")

    keras.utils.set_random_seed(0)
    qat = Q.quantize_aware(model, bits=4)
    cnl.models.train(qat, data, epochs=3, learning_rate=5e-4)
    q = Q.quantize_model(qat)
    add("ours QAT int4 (3 epochs)", acc(q), ours_bytes(q), keras_latency(q, x_lat),
        "computes with dequantized float32 kernels")

    for mode in ("int8", "int4"):
        k = keras.models.clone_model(model)
        k.set_weights(model.get_weights())
        try:
            k.quantize(mode)
        except Exception as exc:  # noqa: BLE001 - report whatever Keras says
            add(f"Keras quantize('{mode}')", float("nan"), 0, float("nan"), f"failed: {exc}")
            continue
        add(f"Keras quantize('{mode}')", acc(k), keras_bytes(k), keras_latency(k, x_lat),
            "Keras int kernels (Dense only)")

    f32 = T.to_tflite(model, int8=False)
    i8 = T.to_tflite(model, representative_data=data.x_train[:256])
    rf, ri = T.TFLiteRunner(f32, num_threads=1), T.TFLiteRunner(i8, num_threads=1)
    tfl_acc = lambda r: float(np.mean(r(data.x_test).argmax(1) == data.y_test))  # noqa: E731
    lat_f = cnl.metrics.latency(rf, x_lat, runs=RUNS).median * 1e3
    lat_i = cnl.metrics.latency(ri, x_lat, runs=RUNS).median * 1e3
    add("TFLite float32", tfl_acc(rf), len(f32), lat_f, f"interpreter: {rf.backend}")
    add("TFLite full int8", tfl_acc(ri), len(i8), lat_i, f"interpreter: {ri.backend}")
    speedup = lat_f / lat_i

    # Jacob et al.'s integer arithmetic in NumPy, on the same int8 model (int8 in/out).
    logits = cnl.models.lenet_300_100((784,), logits=True)
    logits.set_weights(model.get_weights())
    io = T.to_tflite(logits, representative_data=data.x_train[:256], int8_io=True)
    ref = I.IntegerModel.from_tflite(io)
    codes = I.quantize_input(data.x_test, *ref.input_details["quantization"])
    ours = ref(codes).astype(int)
    agree = {k: int(np.abs(ours - T.TFLiteRunner(io, kernels=k).raw(codes).astype(int)).max())
             for k in T.KERNELS}
    int_acc = float(np.mean(ours.argmax(1) == data.y_test))
    lat_ref = cnl.metrics.latency(lambda x: ref(I.quantize_input(x, *ref.input_details["quantization"])),
                                  x_lat, runs=5).median * 1e3
    add("NumPy integer-only reference", int_acc, len(io), lat_ref,
        "max |code difference| vs TFLite " + ", ".join(f"{k} {v}" for k, v in agree.items()))

    lines = [
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
        f"{platform.machine()} ({os.cpu_count()} CPUs, {platform.processor() or 'cpu'}), "
        f"Python {sys.version.split()[0]}, TF {tf.__version__}, Keras {keras.__version__}.",
        f"Model: LeNet-300-100 trained {EPOCHS} epochs; data: {source} "
        f"({len(data.x_train)} train / {len(data.x_test)} test). Latency: batch {BATCH}, 1 thread, "
        f"median of {RUNS} runs.",
        "",
        "| variant | accuracy | weight bytes | latency (ms) | note |",
        "|---|---|---|---|---|",
    ]
    for name, a, b, lat, note in rows:
        lines.append(f"| {name} | {a:.4f} | {b:,} | {lat:.3f} | {note} |")
    lines += [
        "",
        f"TFLite int8 vs float32 TFLite: {speedup:.2f}x faster (target >= 4x: "
        f"{'met' if speedup >= 4 else 'missed'}); accuracy {rows[-2][1]:.4f} vs {rows[-3][1]:.4f} "
        f"({'within' if rows[-2][1] >= rows[-3][1] - 0.01 else 'NOT within'} 1 pp).",
        f"NumPy integer reference vs TFLite int8 (int8 output codes, test set): max difference "
        f"{agree} (target: <= 1; 0 against the reference kernels).",
    ]
    text = "\n".join(lines)
    print("\n" + text)


if __name__ == "__main__":
    main()
