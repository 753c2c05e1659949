"""Gradual magnitude pruning: compressnet_lite on Keras 3 vs tfmot on tf_keras, side by side.

Same model (LeNet-300-100 on the bundled 8x8 digits), same pretrained weights, same data,
same schedule (Zhu & Gupta polynomial decay, 0 -> target sparsity), same optimizer, batch
size and epochs. Prints a Markdown table:

* test accuracy after gradual pruning to 50/75/90/95% sparsity (mean over seeds), both;
* training-step time with pruning / without, both (tfmot cannot prune a Keras 3 model, so
  it runs on tf_keras with TF_USE_LEGACY_KERAS=1 in its own virtual environment);
* structured pruning (``prune_neurons``): latency gain / FLOP reduction at batch 256.

Targets: our accuracy >= tfmot's at every level; our step-time overhead <= 1.10x; latency
gain / FLOP reduction >= 0.8.

Run from the repository root (not in CI; several minutes):

    .venv/bin/python benchmarks/pruning_vs_tfmot.py [--seeds 3] [--epochs 10]

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
LEVELS = (0.5, 0.75, 0.9, 0.95)
BATCH = 32
LR = 1e-3
FREQUENCY = 10        # steps between mask updates
PRUNE_FRACTION = 0.7  # fraction of the pruning run over which the schedule rises
TIME_TILES = 4        # the timing runs use the training set repeated this many times
TIME_ROUNDS = 10      # timed epochs per model (after one warm-up epoch each)
TIME_FREQUENCIES = (FREQUENCY, 100)  # mask-update periods timed (100 is tfmot's default)


def schedule_steps(n_train: int, epochs: int) -> tuple[int, int]:
    steps_per_epoch = -(-n_train // BATCH)
    end = int(PRUNE_FRACTION * steps_per_epoch * epochs) // FREQUENCY * FREQUENCY
    return steps_per_epoch, end


def interleaved_step_times(runs: dict, x, y, steps: int, keras) -> dict:
    """Seconds per training step of each ``name: (model, callbacks)``: one warm-up epoch
    each, then ``TIME_ROUNDS`` rounds of one epoch per model, interleaved so that load
    from other processes hits both alike. Returns the minimum and the median per model.
    ``keras`` is the Keras of the models (tf_keras on the tfmot side, Keras 3 on ours)."""

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    times = {name: [] for name in runs}
    for round_ in range(TIME_ROUNDS + 1):
        for name, (model, callbacks) in runs.items():
            timer = Timer()
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=list(callbacks) + [timer])
            if round_:
                times[name].append(timer.seconds / steps)
    return {name: {"min": float(np.min(t)), "median": float(np.median(t))} for name, t in times.items()}


# ----------------------------------------------------------------------------- tfmot side

def tfmot_worker(npz: str, out: str, seeds: int, epochs: int) -> None:
    """Runs inside benchmarks/.venv-tfmot with TF_USE_LEGACY_KERAS=1."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    f = np.load(npz)
    x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    init = [f[f"w{i}"] for i in range(6)]
    _, end = schedule_steps(len(x_train), epochs)

    def build():
        return lenet_300_100(keras, x_train.shape[1], init)

    def prunable(final, end_step, frequency=FREQUENCY):
        sched = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=final,
                                                     begin_step=0, end_step=end_step, frequency=frequency)
        return tfmot.sparsity.keras.prune_low_magnitude(build(), pruning_schedule=sched)

    def compile_(model):
        model.compile(optimizer=keras.optimizers.Adam(LR),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])

    results = {"accuracy": {}, "sparsity": {}}
    for level in LEVELS:
        accs, sps = [], []
        for seed in range(seeds):
            keras.utils.set_random_seed(seed)
            model = prunable(level, end)
            compile_(model)
            model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0,
                      callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
            stripped = tfmot.sparsity.keras.strip_pruning(model)
            pred = stripped.predict(x_test, batch_size=256, verbose=0)
            accs.append(float(np.mean(np.argmax(pred, -1) == y_test)))
            kernels = [w for w in stripped.get_weights() if w.ndim == 2]
            sps.append(1 - sum(np.count_nonzero(k) for k in kernels) / sum(k.size for k in kernels))
        results["accuracy"][str(level)] = accs
        results["sparsity"][str(level)] = sps

    xt, yt = np.tile(x_train, (TIME_TILES, 1)), np.tile(y_train, TIME_TILES)
    steps = -(-len(xt) // BATCH)

    keras.utils.set_random_seed(0)
    plain = build()
    compile_(plain)
    runs = {"plain": (plain, [])}
    for freq in TIME_FREQUENCIES:
        pruned = prunable(0.9, steps * TIME_ROUNDS, freq)
        compile_(pruned)
        runs[f"pruned{freq}"] = (pruned, [tfmot.sparsity.keras.UpdatePruningStep()])
    timing = interleaved_step_times(runs, xt, yt, steps, keras)
    results["step_time"] = timing
    results["versions"] = {"tensorflow": tf.__version__, "tf_keras": keras.__version__,
                           "tfmot": getattr(tfmot, "__version__", "?")}
    Path(out).write_text(json.dumps(results))


# ------------------------------------------------------------------------------ our side

def ours(seeds: int, epochs: int, data, init) -> dict:
    import keras

    import compressnet_lite as cnl

    _, end = schedule_steps(len(data.x_train), epochs)

    def build():
        model = cnl.models.lenet_300_100(input_shape=data.input_shape)
        model.set_weights(init)
        return model

    def prunable(final, end_step, frequency=FREQUENCY):
        cb = cnl.pruning.PruningCallback(cnl.pruning.PolynomialDecay(0.0, final, 0, end_step,
                                                                     frequency=frequency))
        return cnl.pruning.prune(build(), 0.0), cb

    results = {"accuracy": {}, "sparsity": {}}
    for level in LEVELS:
        accs, sps = [], []
        for seed in range(seeds):
            keras.utils.set_random_seed(seed)
            model, cb = prunable(level, end)
            cnl.models.train(model, data, epochs=epochs, batch_size=BATCH, learning_rate=LR,
                             seed=seed, callbacks=[cb])
            stripped = cnl.pruning.strip(model)
            accs.append(cnl.metrics.accuracy(stripped, data.x_test, data.y_test))
            sps.append(cnl.metrics.sparsity(stripped))
        results["accuracy"][str(level)] = accs
        results["sparsity"][str(level)] = sps

    xt, yt = np.tile(data.x_train, (TIME_TILES, 1)), np.tile(data.y_train, TIME_TILES)
    steps = -(-len(xt) // BATCH)

    keras.utils.set_random_seed(0)
    plain = cnl.models.compile_model(build(), learning_rate=LR)
    runs = {"plain": (plain, [])}
    for freq in TIME_FREQUENCIES:
        pruned, cb = prunable(0.9, steps * TIME_ROUNDS, freq)
        cnl.models.compile_model(pruned, learning_rate=LR)
        runs[f"pruned{freq}"] = (pruned, [cb])
    timing = interleaved_step_times(runs, xt, yt, steps, keras)
    results["step_time"] = timing
    return results


def structured(data, init) -> list[dict]:
    """prune_neurons on LeNet-300-100: FLOPs, latency at batch 256, accuracy (no fine-tuning)."""
    import compressnet_lite as cnl

    model = cnl.models.lenet_300_100(input_shape=data.input_shape)
    model.set_weights(init)
    # Latency on MNIST-sized inputs (784 features), where the layers do real work;
    # the same fractions of units are removed.
    big = cnl.models.lenet_300_100(input_shape=(784,))
    x = np.random.default_rng(0).random((256, 784), dtype=np.float32)
    rows = []
    fractions = (0.5, 0.75, 0.9)
    variants = [big] + [cnl.pruning.prune_neurons(big, f) for f in fractions]
    # Median of 100 calls, repeated in 7 interleaved rounds; the minimum over rounds is
    # the least disturbed by other processes on a shared machine.
    lats = [np.inf] * len(variants)
    for _ in range(7):
        for i, m in enumerate(variants):
            lats[i] = min(lats[i], cnl.metrics.latency(m, x, runs=100, warmup=10).median)
    base_lat, base_flops = lats[0], cnl.metrics.flops(big)
    for fraction, small_big, lat in zip(fractions, variants[1:], lats[1:]):
        small = cnl.pruning.prune_neurons(model, fraction)
        flop_red = base_flops / cnl.metrics.flops(small_big)
        rows.append({"fraction": fraction, "params": cnl.metrics.count_params(small_big),
                     "flop_reduction": flop_red, "latency_gain": base_lat / lat,
                     "ratio": (base_lat / lat) / flop_red,
                     "digits_acc": cnl.metrics.accuracy(small, data.x_test, data.y_test)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--tfmot-worker", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tfmot_worker:
        tfmot_worker(*args.tfmot_worker, seeds=args.seeds, epochs=args.epochs)
        return

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import compressnet_lite as cnl

    start = time.perf_counter()
    data = cnl.data.load_digits()
    keras.utils.set_random_seed(0)
    dense = cnl.models.train(cnl.models.lenet_300_100(input_shape=data.input_shape), data,
                             epochs=args.pretrain_epochs, batch_size=BATCH, learning_rate=LR)
    dense_acc = cnl.metrics.accuracy(dense, data.x_test, data.y_test)
    init = dense.get_weights()

    python = ensure_tfmot_venv()
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.json")
        np.savez(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                 y_test=data.y_test, **{f"w{i}": w for i, w in enumerate(init)})
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
        subprocess.run([str(python), __file__, "--seeds", str(args.seeds), "--epochs", str(args.epochs),
                        "--tfmot-worker", npz, out], check=True, env=env)
        theirs = json.loads(Path(out).read_text())
    mine = ours(args.seeds, args.epochs, data, init)
    rows = structured(data, init)

    steps_per_epoch, end = schedule_steps(len(data.x_train), args.epochs)
    print(f"\nMeasured {time.strftime('%Y-%m-%d')} on {platform.machine()} "
          f"({os.cpu_count()} CPU cores, {platform.processor() or 'CPU'}), Python "
          f"{platform.python_version()}, Keras {keras.__version__}; tfmot side: {theirs['versions']}.")
    print(f"LeNet-300-100 on the bundled digits (1347 train / 450 test), pretrained "
          f"{args.pretrain_epochs} epochs to {dense_acc:.3f}; then {args.epochs} epochs of gradual "
          f"magnitude pruning (polynomial decay 0 -> s over steps 0..{end} of "
          f"{steps_per_epoch * args.epochs}, masks updated every {FREQUENCY} steps, Adam {LR}, "
          f"batch {BATCH}); mean (min-max) test accuracy over {args.seeds} seeds.\n")
    print("| sparsity | compressnet_lite (Keras 3) | tfmot 0.8 (tf_keras) | ours >= tfmot |")
    print("|---|---|---|---|")
    met_acc = True
    for level in LEVELS:
        a, b = np.array(mine["accuracy"][str(level)]), np.array(theirs["accuracy"][str(level)])
        ok = a.mean() >= b.mean()
        met_acc &= bool(ok)
        print(f"| {level:.0%} (got {np.mean(mine['sparsity'][str(level)]):.1%} / "
              f"{np.mean(theirs['sparsity'][str(level)]):.1%}) | "
              f"{a.mean():.3f} ({a.min():.3f}-{a.max():.3f}) "
              f"| {b.mean():.3f} ({b.min():.3f}-{b.max():.3f}) | {'yes' if ok else 'no'} |")
    print(f"\n| training step, batch {BATCH} | masks updated every | plain | pruning "
          "| ratio (min) | ratio (median) |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for name, r in (("compressnet_lite", mine), ("tfmot", theirs)):
        t = r["step_time"]
        for freq in TIME_FREQUENCIES:
            p = t[f"pruned{freq}"]
            ratios[name, freq] = p["min"] / t["plain"]["min"]
            print(f"| {name} | {freq} steps | {t['plain']['min'] * 1e3:.3f} ms | {p['min'] * 1e3:.3f} ms | "
                  f"{ratios[name, freq]:.2f}x | {p['median'] / t['plain']['median']:.2f}x |")
    print("\n| neurons removed | parameters | FLOP reduction | latency gain (batch 256, 784 inputs) "
          "| gain / FLOP reduction | digits accuracy, no fine-tuning |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fraction']:.0%} | {r['params']:,} | {r['flop_reduction']:.2f}x | "
              f"{r['latency_gain']:.2f}x | {r['ratio']:.2f} | {r['digits_acc']:.3f} |")
    print(f"\nTargets: accuracy >= tfmot at every level: {'met' if met_acc else 'MISSED'}; "
          f"step-time overhead <= 1.10x: " + ", ".join(
              f"{ratios['compressnet_lite', f]:.2f}x at every {f} steps "
              f"({'met' if ratios['compressnet_lite', f] <= 1.10 else 'MISSED'})" for f in TIME_FREQUENCIES)
          + "; latency gain / FLOP "
          f"reduction >= 0.8: {'met' if all(r['ratio'] >= 0.8 for r in rows) else 'MISSED'} "
          f"({', '.join(format(r['ratio'], '.2f') for r in rows)}). "
          f"Run time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
