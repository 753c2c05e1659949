"""Deep Compression (Han, Mao & Dally 2016) on LeNet-300-100: the paper's Table 2 beside ours.

Runs ``compressnet_lite.pipeline.deep_compression`` (iterative magnitude pruning with AdamW
weight decay, 5-bit trained weight sharing of the non-zero weights, Huffman coding in the
storage format) on the bundled digits, or on MNIST when given Keras' ``mnist.npz``, and
prints a Markdown table of measured bytes (files written to disk) next to the paper's.

Target (issue 7): >= 40x smaller than the float32 weights, test error <= dense + 0.1 pp.

    python benchmarks/deep_compression.py                 # digits (offline, ~1 minute)
    python benchmarks/deep_compression.py --mnist mnist.npz
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402

import compressnet_lite as cnl  # noqa: E402
from compressnet_lite import pipeline  # noqa: E402

# Han, Mao & Dally (2016), Table 2 (LeNet-300-100 on MNIST): kept, weight bits P+Q / P+Q+H,
# index bits P+Q / P+Q+H, compression rate P+Q / P+Q+H.
PAPER = {
    "fc1/kernel": ("8%", "6", "4.4", "5", "3.7", "3.1%", "2.32%"),
    "fc2/kernel": ("9%", "6", "4.4", "5", "4.3", "3.8%", "3.04%"),
    "out/kernel": ("26%", "6", "4.3", "5", "3.2", "15.7%", "12.70%"),
    "total": ("8%", "6", "5.1", "5", "3.7", "3.1% (32x)", "2.49% (40x)"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="PATH", help="Keras mnist.npz (default: the bundled digits)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (15 digits, 20 MNIST)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--fc-bits", type=int, default=5)
    args = parser.parse_args(argv)

    if args.mnist:
        data, name, epochs = cnl.data.load_mnist(args.mnist, flatten=True), "MNIST", args.epochs or 20
    else:
        data, name, epochs = cnl.data.load_digits(), "digits", args.epochs or 15
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    dense = cnl.models.lenet_300_100(input_shape=data.input_shape)
    cnl.models.compile_model(dense, optimizer=keras.optimizers.AdamW(1e-3, weight_decay=args.weight_decay))
    cnl.models.train(dense, data, epochs=epochs, recompile=False)
    small, report = pipeline.deep_compression(dense, data, weight_decay=args.weight_decay,
                                              fc_bits=args.fc_bits, progress=lambda s: print(s, file=sys.stderr))
    elapsed = time.perf_counter() - start

    print(f"LeNet-300-100 on {name} ({data.x_train.shape[0]} train / {data.x_test.shape[0]} test), "
          f"weight decay {args.weight_decay}, {2 ** args.fc_bits} shared values per layer; "
          f"{platform.processor() or platform.machine()}, {elapsed:.0f} s\n")
    print("| stage | test error | non-zeros | float32 B | .keras gzip B | our file B | weight streams B | ratio (file) | ratio (weights) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in report.rows:
        print(f"| {r['stage']} | {100 * (1 - r['accuracy']):.2f}% | {r['nonzero']:,} | {r['float32_bytes']:,} | "
              f"{r['gzip_bytes']:,} | {r['cnl_bytes']:,} | {r['cnl_weight_bytes']:,} | "
              f"{r['float32_bytes'] / r['cnl_bytes']:.1f}x | {r['float32_bytes'] / r['cnl_weight_bytes']:.1f}x |")
    pq, pqh = report.rows[2]["size"], report.rows[3]["size"]
    print("\n| layer | kept | weight bits P+Q | P+Q+H | index bits P+Q | P+Q+H | rate P+Q | P+Q+H | paper (same columns) |")
    print("|---|---|---|---|---|---|---|---|---|")
    tot = {"size": 0, "stored": 0, "pq": 0, "pqh": 0, "vq": 0, "vh": 0, "iq": 0, "ih": 0}
    for a, b in zip(pq.per_weight(), pqh.per_weight()):
        if not a["weight"].endswith("kernel"):
            continue
        print(f"| {a['weight']} | {a['kept']:.1%} | {a['value_bits']:.1f} | {b['value_bits']:.1f} | "
              f"{a['index_bits']:.1f} | {b['index_bits']:.1f} | {a['bytes'] / (4 * a['size']):.2%} | "
              f"{b['bytes'] / (4 * b['size']):.2%} | {' / '.join(PAPER[a['weight']])} |")
        tot["size"] += a["size"]
        tot["stored"] += a["stored"]
        tot["pq"] += a["bytes"]
        tot["pqh"] += b["bytes"]
        tot["vq"] += a["value_bits"] * a["stored"]
        tot["vh"] += b["value_bits"] * b["stored"]
        tot["iq"] += a["index_bits"] * a["stored"]
        tot["ih"] += b["index_bits"] * b["stored"]
    n = max(tot["stored"], 1)
    print(f"| kernels | {tot['stored'] / tot['size']:.1%} | {tot['vq'] / n:.1f} | {tot['vh'] / n:.1f} | "
          f"{tot['iq'] / n:.1f} | {tot['ih'] / n:.1f} | {tot['pq'] / (4 * tot['size']):.2%} "
          f"({4 * tot['size'] / tot['pq']:.0f}x) | {tot['pqh'] / (4 * tot['size']):.2%} "
          f"({4 * tot['size'] / tot['pqh']:.0f}x) | {' / '.join(PAPER['total'])} |")

    final, first = report.rows[-1], report.rows[0]
    ratio = final["float32_bytes"] / final["cnl_weight_bytes"]
    file_ratio = final["float32_bytes"] / final["cnl_bytes"]
    err_delta = 100 * (first["accuracy"] - final["accuracy"])
    met = ratio >= 40 and err_delta <= 0.1
    print(f"\nTarget >= 40x with error <= dense + 0.1 pp: {'MET' if met else 'MISSED'} "
          f"({ratio:.1f}x on the weight streams, {file_ratio:.1f}x on the whole file; "
          f"error {100 * (1 - first['accuracy']):.2f}% -> {100 * (1 - final['accuracy']):.2f}%, "
          f"{err_delta:+.2f} pp)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
