"""Deep Compression (Han, Mao & Dally 2016) on LeNet-300-100: before/after the codec work, and the paper.

For each seed, one LeNet-300-100 is trained (AdamW weight decay) and compressed twice by
``pipeline.deep_compression``: by this library ("after") and by the library as it was at
an earlier commit ("before", default ``27a1a18``, extracted with ``git archive``), each in
its own Python process, so both start alike and their times compare. It prints Markdown
tables: file bytes and pipeline time per seed, the paired accuracy comparison (the same
dense network and test images: exact McNemar per seed, mean paired difference over seeds
with its 95% interval), the bytes per stream category with the entropy bounds, which codec
each stream of the new file chose against the paper's (Huffman) codecs, and the paper's
Table 2 beside ours. Every byte count is the size of a file written to disk.

Targets (issue 15): every new codec a strict improvement or not chosen; the file on the
digits at least 15% below 9,062 bytes at the same accuracy; the pipeline at least 2x faster.

    python benchmarks/deep_compression.py                  # digits (offline, a few minutes)
    python benchmarks/deep_compression.py --mnist mnist.npz --seeds 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import compressnet_lite as cnl  # noqa: E402
from compressnet_lite import stats, storage  # noqa: E402

BEFORE = "27a1a18"   # main before the codec work (issues 12 and 15)
TODAY = 9062         # the digits file this benchmark wrote at BEFORE (RESULTS.md, 2026-11-28)

# Han, Mao & Dally (2016), Table 2 (LeNet-300-100 on MNIST): kept, weight bits P+Q / P+Q+H,
# index bits P+Q / P+Q+H, compression rate P+Q / P+Q+H.
PAPER = {
    "fc1/kernel": ("8%", "6", "4.4", "5", "3.7", "3.1%", "2.32%"),
    "fc2/kernel": ("9%", "6", "4.4", "5", "4.3", "3.8%", "3.04%"),
    "out/kernel": ("26%", "6", "4.3", "5", "3.2", "15.7%", "12.70%"),
    "total": ("8%", "6", "5.1", "5", "3.7", "3.1% (32x)", "2.49% (40x)"),
}

# Runs inside a fresh Python with either library on its path; uses only API both have.
DRIVER = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
import compressnet_lite as cnl
from compressnet_lite import pipeline, storage
a = json.loads(sys.argv[1])
data = cnl.data.load_mnist(a["mnist"], flatten=True) if a["mnist"] else cnl.data.load_digits()
dense = keras.saving.load_model(a["dense"], compile=False)
kw = {"weight_decay": a["wd"], "fc_bits": a["fc_bits"]}
if a["new"]:
    kw["seed"] = a["seed"]
keras.utils.set_random_seed(a["seed"])
start = time.perf_counter()
small, report = pipeline.deep_compression(dense, data, **kw)
seconds = time.perf_counter() - start
size = storage.save_compressed(small, a["out"])
pred = np.argmax(small.predict(data.x_test, verbose=0), axis=-1)
out = {"seconds": seconds, "file": os.path.getsize(a["out"]), "float32": size.float32_bytes,
       "rows": [[r.layer, r.weight, r.stream, r.bytes] for r in size.rows],
       "stages": [{k: v for k, v in r.items() if not k.startswith("size")} for r in report.rows],
       "correct": (pred == data.y_test).astype(int).tolist(),
       "per_weight": size.per_weight(), "encodings": {w["path"]: w["encoding"] for w in size.weights}}
if a["new"]:
    paper = storage.compressed_size(small, codecs="huffman")
    out["paper_rows"] = [[r.layer, r.weight, r.stream, r.bytes] for r in paper.rows]
    out["paper_encodings"] = {w["path"]: w["encoding"] for w in paper.weights}
    out["bounds"] = [[w, s, b] for (w, s), b in size.bounds.items()]
    out["paper_total"] = paper.total
    stages = {r["stage"]: r["size"] for r in report.rows}
    out["table2"] = {k: stages[k].per_weight() for k in ("P+Q", "P+Q+H", "P+Q+E")}
json.dump(out, open(a["json"], "w"), default=lambda o: o.item() if hasattr(o, "item") else str(o))
"""


def _extract(rev: str, into: str) -> str:
    """The library at ``rev``, unpacked into ``into``; returns its root (for PYTHONPATH)."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "compressnet_lite"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def _run(root: str, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(args)], env=env, cwd=root,
                          capture_output=True, text=True)  # cwd: "-c" puts it first on sys.path
    if done.returncode != 0:
        raise RuntimeError(f"pipeline run failed ({root}):\n{done.stderr[-4000:]}")
    with open(args["json"]) as f:
        return json.load(f)


def _categories(rows: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, weight, stream, n in rows:
        cat = storage.stream_category(weight, stream)
        out[cat] = out.get(cat, 0) + n
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", metavar="PATH", help="Keras mnist.npz (default: the bundled digits)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds (default 5)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (15 digits, 20 MNIST)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--fc-bits", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help=f"git revision to compare with (default {BEFORE})")
    args = parser.parse_args(argv)

    if args.mnist:
        data, name, epochs = cnl.data.load_mnist(args.mnist, flatten=True), "MNIST", args.epochs or 20
    else:
        data, name, epochs = cnl.data.load_digits(), "digits", args.epochs or 15
    start = time.perf_counter()
    runs = {"before": [], "after": []}
    dense_correct = []
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "before"))
        before_root = _extract(args.before, os.path.join(tmp, "before"))
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            dense = cnl.models.lenet_300_100(input_shape=data.input_shape)
            cnl.models.compile_model(dense, optimizer=keras.optimizers.AdamW(
                1e-3, weight_decay=args.weight_decay))
            cnl.models.train(dense, data, epochs=epochs, recompile=False, seed=seed)
            dense_correct.append(np.argmax(dense.predict(data.x_test, verbose=0), -1) == data.y_test)
            path = os.path.join(tmp, f"dense{seed}.keras")
            dense.save(path)
            for which, root in (("before", before_root), ("after", ROOT)):
                print(f"seed {seed}: {which}", file=sys.stderr, flush=True)
                runs[which].append(_run(root, {
                    "mnist": args.mnist, "dense": path, "wd": args.weight_decay, "fc_bits": args.fc_bits,
                    "seed": seed, "new": which == "after", "out": os.path.join(tmp, f"{which}{seed}.cnl"),
                    "json": os.path.join(tmp, f"{which}{seed}.json")}))
    elapsed = time.perf_counter() - start
    _print(args, name, data, epochs, runs, np.array(dense_correct), elapsed)
    return 0


def _print(args, name, data, epochs, runs, dense_correct, elapsed) -> None:
    before, after = runs["before"], runs["after"]
    n = len(after)
    print(f"Measured {datetime.date.today()} on {platform.machine()} ({os.cpu_count()} CPUs), "
          f"Python {platform.python_version()}, Keras {keras.__version__}; {elapsed:.0f} s in all.")
    print(f"LeNet-300-100 on {name} ({data.x_train.shape[0]} train / {data.x_test.shape[0]} test), "
          f"trained {epochs} epochs (AdamW, weight decay {args.weight_decay}); "
          f"{2 ** args.fc_bits} shared values per layer; {n} seeds; before = the library at "
          f"{args.before}, after = this one.\n")

    print("| seed | file B before | after | change | pipeline s before | after | speed-up | "
          "accuracy dense | before | after | after vs before (exact McNemar) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s, (b, a) in enumerate(zip(before, after)):
        m = stats.mcnemar(a["correct"], b["correct"], names=("after", "before"))
        print(f"| {s} | {b['file']:,} | {a['file']:,} | {a['file'] / b['file'] - 1:+.1%} | "
              f"{b['seconds']:.1f} | {a['seconds']:.1f} | {b['seconds'] / a['seconds']:.1f}x | "
              f"{dense_correct[s].mean():.3f} | {np.mean(b['correct']):.3f} | "
              f"{np.mean(a['correct']):.3f} | {m.b}/{m.c}, p = {m.p_value:.2f} |")
    fb = np.array([r["file"] for r in before], float)
    fa = np.array([r["file"] for r in after], float)
    tb = np.array([r["seconds"] for r in before])
    ta = np.array([r["seconds"] for r in after])
    acc_b = np.array([np.mean(r["correct"]) for r in before])
    acc_a = np.array([np.mean(r["correct"]) for r in after])
    pooled = stats.mcnemar(np.concatenate([r["correct"] for r in after]),
                           np.concatenate([r["correct"] for r in before]), names=("after", "before"))
    diff = stats.paired_difference(acc_a, acc_b, names=("after", "before")) if n > 1 else None
    size_diff = stats.paired_difference(fa, fb, names=("after", "before"), scale=1, unit="bytes") \
        if n > 1 else None
    interval = (f"; paired difference {size_diff.mean:+,.0f} bytes [95% CI {size_diff.low:+,.0f}, "
                f"{size_diff.high:+,.0f}]") if size_diff else ""
    print(f"\nFile: {fb.mean():,.0f} -> {fa.mean():,.0f} bytes on average "
          f"({fa.mean() / fb.mean() - 1:+.1%}; {fa.mean() / TODAY - 1:+.1%} against the {TODAY:,} "
          f"bytes of {args.before}'s benchmark run){interval}.")
    print(f"Pipeline time: {tb.mean():.1f} -> {ta.mean():.1f} s on average, "
          f"{tb.mean() / ta.mean():.1f}x faster (range {min(tb / ta):.1f}-{max(tb / ta):.1f}x).")
    print(f"Accuracy: {pooled}" + (f"; over seeds: {diff}" if diff else "") + ".\n")

    cb = [_categories(r["rows"]) for r in before]
    ca = [_categories(r["rows"]) for r in after]
    bounds = []
    for r in after:
        per: dict[str, float] = {}
        bound_of = {(w, s): b for w, s, b in r["bounds"]}
        for _, w, s, nbytes in r["rows"]:
            cat = storage.stream_category(w, s)
            per[cat] = per.get(cat, 0.0) + bound_of.get((w, s), nbytes)
        bounds.append(per)
    print("Bytes per stream category, mean over seeds (bound: order-0 entropy of the integer and "
          "position streams, the bytes themselves for the others; the paper counts the kernels' "
          "positions, codes and codebooks only):\n")
    print("| category | before | after | change | after: entropy bound |")
    print("|---|---|---|---|---|")
    for cat in storage.CATEGORIES:
        b = np.mean([c.get(cat, 0) for c in cb])
        a = np.mean([c.get(cat, 0) for c in ca])
        if b == 0 and a == 0:
            continue
        bd = np.mean([c.get(cat, 0) for c in bounds])
        change = f"{a / b - 1:+.0%}" if b else "new"
        print(f"| {cat} | {b:,.0f} | {a:,.0f} | {change} | {bd:,.0f} |")
    print(f"| total | {fb.mean():,.0f} | {fa.mean():,.0f} | {fa.mean() / fb.mean() - 1:+.0%} | |")

    # every new codec: strictly smaller, or not chosen
    print("\nEach weight of the new files, all codecs against the paper's (Huffman) codecs, "
          "same model and container (seed 0; over all seeds below):\n")
    print("| weight | paper codecs | bytes | all codecs | bytes |")
    print("|---|---|---|---|---|")
    worse = strictly = same = 0
    for i, r in enumerate(after):
        new_w: dict[str, int] = {}
        old_w: dict[str, int] = {}
        for _, w, s, nb in r["rows"]:
            new_w[w] = new_w.get(w, 0) + nb
        for _, w, s, nb in r["paper_rows"]:
            old_w[w] = old_w.get(w, 0) + nb
        for w, nb in new_w.items():
            if w in ("manifest", "architecture", "container"):
                continue
            unchanged = r["encodings"][w] == r["paper_encodings"][w]
            worse += nb > old_w[w] or (nb == old_w[w] and not unchanged)  # chosen, not smaller
            strictly += nb < old_w[w]
            same += nb == old_w[w] and unchanged
            if i == 0:
                print(f"| {w} | {r['paper_encodings'][w]} | {old_w[w]:,} | {r['encodings'][w]} | {nb:,} |")
    print(f"\nOver {n} seeds: {strictly} weights smaller with the new codecs, {same} with the same "
          f"encoding as the paper's, {worse} larger or re-encoded at equal size (target: 0): "
          f"{'MET' if worse == 0 else 'MISSED'}.")

    # Table 2 of the paper, seed 0
    t2 = after[0]["table2"]
    print("\nTable 2 of the paper beside ours (seed 0): bits per kept weight (value: index into the "
          "codebook plus the codebook; index: its position) and the rate against float32 kernels.\n")
    print("| layer | kept | value bits P+Q / P+Q+H / P+Q+E | index bits P+Q / P+Q+H / P+Q+E | "
          "rate P+Q / P+Q+H / P+Q+E | paper (kept, bits P+Q/P+Q+H, index, rates) |")
    print("|---|---|---|---|---|---|")
    for k, row in enumerate(t2["P+Q+E"]):
        if not row["weight"].endswith("kernel"):
            continue
        cols = [t2[s][k] for s in ("P+Q", "P+Q+H", "P+Q+E")]
        print(f"| {row['weight']} | {row['kept']:.1%} | "
              + " / ".join(f"{c['value_bits']:.1f}" for c in cols) + " | "
              + " / ".join(f"{c['index_bits']:.1f}" for c in cols) + " | "
              + " / ".join(f"{c['bytes'] / (4 * c['size']):.2%}" for c in cols)
              + f" | {' / '.join(PAPER[row['weight']])} |")
    kernels = [sum(c["bytes"] for c in t2[s] if c["weight"].endswith("kernel"))
               for s in ("P+Q", "P+Q+H", "P+Q+E")]
    size = sum(c["size"] for c in t2["P+Q+E"] if c["weight"].endswith("kernel"))
    print("| kernels | | | | " + " / ".join(f"{4 * size / k:.0f}x" for k in kernels)
          + f" | {' / '.join(PAPER['total'])} |")

    ratio_w = np.mean([r["float32"] / sum(nb for ly, w, s, nb in r["rows"] if ly != "(file)") for r in after])
    ratio_f = np.mean([r["float32"] / r["file"] for r in after])
    print(f"\nAfter: {ratio_f:.1f}x smaller than the float32 weights as a whole file, {ratio_w:.1f}x "
          "counting the weight streams (biases included).")
    target_size = fa.mean() <= 0.85 * TODAY
    target_acc = ((diff is None or diff.low <= 0 <= diff.high or diff.low > 0)
                  and pooled.verdict != "before better")
    target_time = tb.mean() / ta.mean() >= 2
    print(f"\nTargets: file >= 15% below {TODAY:,} B at the same accuracy: "
          f"{'MET' if target_size and target_acc else 'MISSED'} "
          f"({fa.mean() / TODAY - 1:+.1%}; accuracy {pooled.verdict}); pipeline >= 2x faster: "
          f"{'MET' if target_time else 'MISSED'} ({tb.mean() / ta.mean():.1f}x); new codecs never "
          f"larger: {'MET' if worse == 0 else 'MISSED'}.")


if __name__ == "__main__":
    sys.exit(main())
