"""Structured (channel) pruning: compressnet_lite on Keras 3 vs Torch-Pruning on PyTorch.

The same two networks in both frameworks, with the same weights: ``keras.applications.ResNet50``
and ``keras.applications.MobileNetV2(alpha=...)`` (``weights=None``, random weights with
random BatchNormalization statistics, seed 0) and hand-written PyTorch twins with the same
layout (``benchmarks/_torch_env.py``). Before pruning the script checks that the two agree:
parameter counts exactly, MAC counts exactly, and the features before the classifier on the
same random images (the Keras weights are copied into the PyTorch modules by layer name).

Each network is then pruned at 30/50/70% of the channels of every prunable group, in both:

* ours: ``cnl.pruning.prune_neurons(model, r, criterion=GroupImportance("l2"))``, every
  dependency group losing the same fraction (``scope="layer"``), model outputs never pruned;
* Torch-Pruning: ``BasePruner(model, example, GroupMagnitudeImportance(p=2), pruning_ratio=r,
  global_pruning=False, ignored_layers=[classifier])`` then ``step()``.

Both score a channel by the sum of squared weights of its slice in each member of its group
(convolution/dense filters and input rows, BatchNorm scales), averaged over members; no
``round_to`` on either side. Printed: parameters and MACs after pruning (ours vs theirs), how
many layers kept the same number of channels and the very same channels, the time to prune
(median over repeats; for Torch-Pruning, building the dependency graph plus ``step()``; beside
it, the time Keras alone takes to build a model of the pruned size, ``clone_model``), and
our latency gain over MAC reduction: Keras (a compiled forward pass, as ``predict`` runs it)
and float32 TFLite (``cnl.tflite.to_tflite`` + ``TFLiteRunner``), batch 32 and 1, one thread,
dense and pruned models timed in interleaved rounds (the gain is the median over rounds of
the per-round ratio).

Two untimed rows explain the differences: ours with Torch-Pruning's count rule (every group
keeps ``int(n * (1 - r))`` of ``n`` units; ``prune_neurons`` removes ``round(r * n)``), and, for
MobileNetV2, our score without depthwise kernels (which Torch-Pruning's importance skips).

Targets (issue 11): MACs and parameters within 2% of Torch-Pruning's at equal ratio; our
pruning time <= Torch-Pruning's; latency gain >= 0.7 x MAC reduction on the 50%-pruned
ResNet-50 at batch 32 in TFLite.

Run from the repository root (not in CI; 17 minutes on 2 shared cores, most of it the
latency rounds and the TFLite conversions; ``--rounds 0`` skips the latency part):

    .venv/bin/python benchmarks/structured_vs_torch_pruning.py [--size 96] [--alpha 1.0]

The PyTorch environment is created at ``benchmarks/.venv-torch`` if missing (CPU torch 2.13
and torch-pruning from the package index).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _torch_env import ensure_torch_venv, torch_networks  # noqa: E402  (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
NETS = ("resnet50", "mobilenetv2")
TITLES = {"resnet50": "ResNet-50", "mobilenetv2": "MobileNetV2"}
RATIOS = (0.3, 0.5, 0.7)
BATCHES = (32, 1)
TARGET_COUNTS, TARGET_GAIN = 0.02, 0.7


# ------------------------------------------------------------------------- shared helpers

def rel(a: float, b: float) -> float:
    """Relative difference of ``a`` from the reference ``b``."""
    return (a - b) / b


def compare_layers(ours: dict, theirs: dict) -> tuple[int, int, int]:
    """(layers, layers with the same weight shape, layers with the same kept channels).

    Each table maps a layer name to ``(shape in PyTorch's layout, sum of squared weights)``;
    with the same starting weights, the same shape and the same sum of squares (to 1e-6)
    means the very same channels were kept."""
    names = sorted(set(ours) & set(theirs))
    if set(ours) != set(theirs):
        raise RuntimeError(f"the two networks have different weighted layers: "
                           f"{sorted(set(ours) ^ set(theirs))}")
    shape = [n for n in names if tuple(ours[n][0]) == tuple(theirs[n][0])]
    same = [n for n in shape if abs(ours[n][1] - theirs[n][1]) <= 1e-6 * max(abs(theirs[n][1]), 1e-12)]
    return len(names), len(shape), len(same)


# ------------------------------------------------------------------------ PyTorch side

def torch_worker(npz: str, out: str, args) -> None:
    """Runs inside benchmarks/.venv-torch: build, check, count and prune the PyTorch twins."""
    import torch
    import torch.nn as nn
    import torch_pruning as tp

    torch.set_num_threads(1)
    classes = torch_networks()
    data = np.load(npz)
    from importlib.metadata import version

    results = {"versions": {"torch": torch.__version__, "torch_pruning": version("torch-pruning")}}

    def load_keras_weights(model, net):
        for name, module in model.named_modules():
            keras_name = name.replace(".", "")
            if not isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                continue
            w = [data[f"{net}/{keras_name}/{i}"] for i in range(4) if f"{net}/{keras_name}/{i}" in data]
            if isinstance(module, nn.BatchNorm2d):
                for t, a in zip((module.weight, module.bias, module.running_mean, module.running_var), w):
                    t.data = torch.from_numpy(a.copy())
                continue
            if isinstance(module, nn.Linear):
                kernel = w[0].T
            elif module.groups > 1:                     # depthwise: (kh, kw, c, m) -> (c*m, 1, kh, kw)
                kh, kw, c, m = w[0].shape
                kernel = w[0].transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
            else:                                       # (kh, kw, in, out) -> (out, in, kh, kw)
                kernel = w[0].transpose(3, 2, 0, 1)
            if tuple(kernel.shape) != tuple(module.weight.shape):
                raise RuntimeError(f"{net}: {name} has shape {tuple(module.weight.shape)}, "
                                   f"Keras layer {keras_name} gives {kernel.shape}")
            module.weight.data = torch.from_numpy(np.ascontiguousarray(kernel))
            if module.bias is not None:
                module.bias.data = torch.from_numpy(w[1].copy())

    def counts(model, example):
        """Parameters (with BN statistics, as Keras counts them), trainable parameters, MACs
        (kernel size x output positions, as cnl.metrics.flops), bias adds, Torch-Pruning's
        count_ops_and_params and its share from convolution/linear modules."""
        macs, bias_adds, hooks = [0], [0], []

        def hook(module, inputs, output):
            positions = int(np.prod(output.shape[2:])) if output.dim() > 2 else 1
            macs[0] += module.weight.numel() * positions
            if module.bias is not None:
                bias_adds[0] += module.bias.numel() * positions

        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                hooks.append(m.register_forward_hook(hook))
        with torch.no_grad():
            model.eval()(example)
        for h in hooks:
            h.remove()
        ops, params, layer_ops, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
        conv_linear_ops = sum(v or 0 for m, v in layer_ops.items() if isinstance(m, (nn.Conv2d, nn.Linear)))
        stats = sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
        trainable = sum(p.numel() for p in model.parameters())
        return {"params": trainable + stats, "trainable": trainable, "tp_params": int(params),
                "macs": macs[0], "bias_adds": bias_adds[0], "tp_ops": int(ops),
                "tp_conv_linear_ops": int(conv_linear_ops)}

    def layer_table(model):
        table = {}
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                w = m.weight.detach().numpy().astype(np.float64)
                table[name.replace(".", "")] = (list(w.shape), float(np.square(w).sum()))
        return table

    for net in args.nets:
        model = classes[net](**({"alpha": args.alpha} if net == "mobilenetv2" else {}))
        load_keras_weights(model, net)
        model.eval()
        x = torch.from_numpy(data[f"{net}/x"].transpose(0, 3, 1, 2).copy())
        with torch.no_grad():
            feats = model.features(x).numpy()
        ref = data[f"{net}/features"]
        example = torch.randn(1, 3, args.size, args.size)
        r = {"dense": counts(model, example),
             "feature_error": float(np.abs(feats - ref).max() / np.abs(ref).max()), "ratios": {}}
        for ratio in args.ratios:
            times = []
            for _ in range(args.repeats):
                pruned = copy.deepcopy(model)
                start = time.perf_counter()
                pruner = tp.pruner.BasePruner(
                    pruned, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                    pruning_ratio=ratio, global_pruning=False, ignored_layers=[pruned.predictions])
                pruner.step()
                times.append(time.perf_counter() - start)
            with torch.no_grad():
                pruned(example)                         # the pruned network still runs
            r["ratios"][str(ratio)] = {**counts(pruned, example), "times": times,
                                       "layers": layer_table(pruned)}
            print(f"  torch-pruning {net} {ratio:.0%}: {np.median(times):.2f} s", flush=True)
        results[net] = r
    Path(out).write_text(json.dumps(results))


# --------------------------------------------------------------------------- Keras side

def keras_layer_table(model) -> dict:
    """``{layer: (weight shape in PyTorch's layout, sum of squares)}`` for the layers that
    have a PyTorch twin with a ``weight`` (convolutions, Dense, BatchNormalization)."""
    import keras

    table = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            w = layer.kernel.numpy()
            kh, kw, c, m = w.shape
            shape = [c * m, 1, kh, kw]
        elif isinstance(layer, keras.layers.Conv2D):
            w = layer.kernel.numpy()
            shape = [w.shape[3], w.shape[2], w.shape[0], w.shape[1]]
        elif isinstance(layer, keras.layers.Dense):
            w = layer.kernel.numpy()
            shape = [w.shape[1], w.shape[0]]
        elif isinstance(layer, keras.layers.BatchNormalization):
            w = layer.gamma.numpy()
            shape = list(w.shape)
        else:
            continue
        table[layer.name] = (shape, float(np.square(w.astype(np.float64)).sum()))
    return table


def l2_without_depthwise(model, group, data=None) -> np.ndarray:
    """``GroupImportance("l2")`` over every member of the group except depthwise kernels.

    Torch-Pruning 1.6's ``GroupMagnitudeImportance`` scores only members whose pruning
    function is one of its conv/linear/norm functions; a depthwise convolution is pruned by
    ``prune_depthwise_conv_out_channels``, which is not in that list, so its kernel never
    counts. Used once, to show that this is the whole difference in the channels chosen."""
    import keras

    from compressnet_lite.pruning import GroupImportance

    view = copy.copy(group)
    view.members = [m for m in group.members if not isinstance(m.layer, keras.layers.DepthwiseConv2D)]
    return GroupImportance("l2")(model, view, data)


def keep_tp_counts(model, ratio: float, criterion):
    """Our scores and our surgery with Torch-Pruning's count rule: every group keeps
    ``int(units * (1 - ratio))`` units (``prune_neurons`` removes ``round(ratio * units)``,
    so it keeps one unit more wherever ``ratio * units`` has a fractional part below 0.5)."""
    from compressnet_lite import surgery

    keeps = {}
    with surgery.reading():
        for g in surgery.dependency_groups(model).prunable():
            n_keep = max(1, int(g.units * (1 - ratio)))
            if n_keep < g.units:
                keeps[g] = np.sort(np.argsort(-criterion(model, g), kind="stable")[:n_keep])
    return surgery.keep_channels(model, keeps)


def keras_net(net: str, size: int, alpha: float):
    import keras

    if net == "resnet50":
        return keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    return keras.applications.MobileNetV2(weights=None, alpha=alpha, input_shape=(size, size, 3))


def randomize_batchnorm(model, rng) -> None:
    """Random BN scales, shifts and statistics, so that the equivalence check and the
    importance scores (which include BN scales) see them."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                               rng.uniform(0.5, 1.5, c)])


def latencies(variants: list, size: int, rounds: int, runs: dict, rng) -> dict:
    """Seconds per call of every variant (a Keras model) in Keras and in float32 TFLite, at
    each batch size: ``rounds`` interleaved rounds, each the median of ``runs[batch]`` calls.
    Returns ``{(runtime, batch): array (rounds, variants)}``."""
    import tensorflow as tf

    import compressnet_lite as cnl

    calls = {"keras": [], "tflite": []}
    for model in variants:
        fn = tf.function(lambda b, m=model: m(b, training=False), reduce_retracing=True)
        calls["keras"].append(lambda x, fn=fn: fn(x).numpy())
        runner = cnl.tflite.TFLiteRunner(cnl.tflite.to_tflite(model, int8=False), num_threads=1)
        calls["tflite"].append(runner)
    out = {}
    for batch in BATCHES:
        x = rng.random((batch, size, size, 3), dtype=np.float32)
        xt = tf.convert_to_tensor(x)
        for runtime, fns in calls.items():
            arg = xt if runtime == "keras" else x
            for f in fns:                               # warm-up: tracing, tensor allocation
                f(arg)
                f(arg)
            table = np.zeros((rounds, len(fns)))
            for r in range(rounds):
                for i, f in enumerate(fns):
                    t = []
                    for _ in range(runs[batch]):
                        start = time.perf_counter()
                        f(arg)
                        t.append(time.perf_counter() - start)
                    table[r, i] = np.median(t)
            out[runtime, batch] = table
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=96, help="input height = width")
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    parser.add_argument("--nets", default=",".join(NETS))
    parser.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    parser.add_argument("--repeats", type=int, default=3, help="timed pruning runs per ratio")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (0: no latency)")
    parser.add_argument("--runs", type=int, nargs=2, default=(3, 15), metavar=("B32", "B1"),
                        help="calls per round at batch 32 and at batch 1")
    parser.add_argument("--torch-worker", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.nets = [n for n in args.nets.split(",") if n]
    args.ratios = [float(r) for r in args.ratios.split(",")]
    if set(args.nets) - set(NETS):
        parser.error(f"--nets: choose from {NETS}")
    if args.torch_worker:
        torch_worker(*args.torch_worker, args)
        return

    start = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.get_logger().setLevel("ERROR")              # one tf.function per model: no retracing notes
    import keras

    import compressnet_lite as cnl
    from compressnet_lite.pruning import GroupImportance

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    models, arrays = {}, {}
    for net in args.nets:
        model = keras_net(net, args.size, args.alpha)
        randomize_batchnorm(model, rng)
        models[net] = model
        for layer in model.layers:
            for i, w in enumerate(layer.get_weights()):
                arrays[f"{net}/{layer.name}/{i}"] = w
        x = rng.random((2, args.size, args.size, 3), dtype=np.float32)
        arrays[f"{net}/x"] = x                          # features: the pooled tensor the classifier reads
        arrays[f"{net}/features"] = keras.Model(model.input, model.layers[-2].output)(x).numpy()

    python = ensure_torch_venv()
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.json")
        np.savez(npz, **arrays)
        del arrays
        print("PyTorch side (benchmarks/.venv-torch):", flush=True)
        subprocess.run([str(python), __file__, "--torch-worker", npz, out, "--size", str(args.size),
                        "--alpha", str(args.alpha), "--nets", ",".join(args.nets),
                        "--ratios", ",".join(map(str, args.ratios)), "--repeats", str(args.repeats)],
                       check=True)
        theirs = json.loads(Path(out).read_text())

    print("Keras side:", flush=True)
    criterion = GroupImportance("l2")
    ours = {}
    for net, model in models.items():
        dense = {"params": cnl.metrics.count_params(model),
                 "trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                 "macs": cnl.metrics.flops(model)}
        pruned, rows = {}, {}
        for ratio in args.ratios:
            times, clones = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                small = cnl.pruning.prune_neurons(model, ratio, criterion=criterion)
                t1 = time.perf_counter()
                keras.models.clone_model(small)         # Keras alone building a model that size
                clones.append(time.perf_counter() - t1)
                times.append(t1 - t0)
            pruned[ratio] = small
            rows[ratio] = {"params": cnl.metrics.count_params(small), "macs": cnl.metrics.flops(small),
                           "times": times, "clone": clones, "layers": keras_layer_table(small)}
            print(f"  compressnet_lite {net} {ratio:.0%}: {np.median(times):.2f} s", flush=True)
        checks = {}                                 # explaining the differences, untimed
        for ratio in args.ratios:
            if any(round(ratio * g.units) != g.units - int(g.units * (1 - ratio))
                   for g in cnl.surgery.dependency_groups(model).prunable()):
                checks["Torch-Pruning's count rule", ratio] = keep_tp_counts(model, ratio, criterion)
        if any(isinstance(l, keras.layers.DepthwiseConv2D) for l in model.layers) and 0.5 in args.ratios:
            checks["depthwise kernels not scored", 0.5] = cnl.pruning.prune_neurons(
                model, 0.5, criterion=l2_without_depthwise)
        checks = {key: {"params": cnl.metrics.count_params(m), "macs": cnl.metrics.flops(m),
                        "layers": keras_layer_table(m)} for key, m in checks.items()}
        lat = None
        if args.rounds:
            print(f"  latency {net} (converting {1 + len(pruned)} models to TFLite) ...", flush=True)
            lat = latencies([model, *pruned.values()], args.size, args.rounds,
                            dict(zip(BATCHES, args.runs)), rng)
        ours[net] = {"dense": dense, "ratios": rows, "checks": checks, "latency": lat}

    # ------------------------------------------------------------------------ report
    print(f"\nMeasured {time.strftime('%Y-%m-%d')} on {platform.machine()} ({os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}; PyTorch side: "
          f"torch {theirs['versions']['torch']}, torch-pruning {theirs['versions']['torch_pruning']}. "
          f"Input {args.size}x{args.size}x3, 1000 classes, MobileNetV2 alpha {args.alpha}; "
          f"random weights (seed 0) copied from Keras into PyTorch.\n")

    print("| network | parameters Keras / PyTorch | MACs ours (`cnl.metrics.flops`) / PyTorch "
          "| Torch-Pruning `count_ops_and_params` ops | features max rel. difference |")
    print("|---|---|---|---|---|")
    for net in args.nets:
        k, t = ours[net]["dense"], theirs[net]["dense"]
        same_p = "same" if k["params"] == t["params"] and k["trainable"] == t["trainable"] else "DIFFER"
        same_m = "same" if k["macs"] == t["macs"] else "DIFFER"
        print(f"| {TITLES[net]} | {k['params']:,} / {t['params']:,} ({same_p}) | {k['macs']:,} / "
              f"{t['macs']:,} ({same_m}) | {t['tp_ops']:,} | {theirs[net]['feature_error']:.1e} |")
    conv_split = all(theirs[n]["dense"]["tp_conv_linear_ops"] ==
                     theirs[n]["dense"]["macs"] + theirs[n]["dense"]["bias_adds"] for n in args.nets)

    print("\n| network | removed | parameters ours / TP (diff) | MACs ours / TP (diff) | MAC reduction "
          "| layers: same width / same channels | prune s ours / TP | Keras `clone_model` s |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    speed = {}
    for net in args.nets:
        for ratio in args.ratios:
            k, t = ours[net]["ratios"][ratio], theirs[net]["ratios"][str(ratio)]
            dp, dm = rel(k["params"], t["params"]), rel(k["macs"], t["macs"])
            worst = max(worst, abs(dp), abs(dm))
            n, shape, same = compare_layers(k["layers"], t["layers"])
            tk, tt = float(np.median(k["times"])), float(np.median(t["times"]))
            speed[net, ratio] = (tk, tt)
            red = ours[net]["dense"]["macs"] / k["macs"]
            print(f"| {TITLES[net]} | {ratio:.0%} | {k['params']:,} / {t['params']:,} ({dp:+.2%}) | "
                  f"{k['macs']:,} / {t['macs']:,} ({dm:+.2%}) | {red:.2f}x | {shape}/{n} / {same}/{n} "
                  f"| {tk:.2f} / {tt:.2f} | {np.median(k['clone']):.2f} |")
        for (what, ratio), k in ours[net]["checks"].items():
            t = theirs[net]["ratios"][str(ratio)]
            n, shape, same = compare_layers(k["layers"], t["layers"])
            print(f"| {TITLES[net]}, ours with {what} | {ratio:.0%} | {k['params']:,} / "
                  f"{t['params']:,} ({rel(k['params'], t['params']):+.2%}) | {k['macs']:,} / {t['macs']:,} "
                  f"({rel(k['macs'], t['macs']):+.2%}) | | {shape}/{n} / {same}/{n} | | |")

    if args.rounds:
        print("\n| network | removed | MAC reduction | runtime | batch 32: ms | gain | gain / MAC red. "
              "| batch 1: ms | gain | gain / MAC red. |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    key_ratio = None
    for net in args.nets if args.rounds else ():
        lat = ours[net]["latency"]
        for runtime in ("tflite", "keras"):
            for i, ratio in enumerate([0.0, *args.ratios]):
                red = 1.0 if i == 0 else ours[net]["dense"]["macs"] / ours[net]["ratios"][ratio]["macs"]
                cells = []
                for batch in BATCHES:
                    table = lat[runtime, batch]
                    ms = np.median(table[:, i]) * 1e3
                    gain = float(np.median(table[:, 0] / table[:, i]))
                    cells.append(f"{ms:.1f} | {gain:.2f}x | {gain / red:.2f}" if i else f"{ms:.1f} | | ")
                    if net == "resnet50" and runtime == "tflite" and batch == 32 and ratio == 0.5:
                        key_ratio = gain / red
                name = "TFLite float32" if runtime == "tflite" else "Keras (compiled call)"
                print(f"| {TITLES[net]} | {ratio:.0%} | {red:.2f}x | {name} | {' | '.join(cells)} |")

    ok_counts = worst <= TARGET_COUNTS
    ok_speed = all(tk <= tt for tk, tt in speed.values())
    print(f"\nTargets: MACs and parameters within {TARGET_COUNTS:.0%} of Torch-Pruning's: "
          f"{'met' if ok_counts else 'MISSED'} (largest difference {worst:.2%}); "
          f"pruning time <= Torch-Pruning's: {'met' if ok_speed else 'MISSED'} ("
          + ", ".join(f"{TITLES[n]} {r:.0%} {tk / tt:.2f}x" for (n, r), (tk, tt) in speed.items())
          + " of TP's time); latency gain >= 0.7 x MAC reduction, ResNet-50 50% TFLite batch 32: "
          + ("not run" if key_ratio is None else
             f"{'met' if key_ratio >= TARGET_GAIN else 'MISSED'} ({key_ratio:.2f})")
          + f". Torch-Pruning's ops = our MACs + bias adds + BN/activation/pooling ops "
          f"(conv/linear share = MACs + bias adds: {'yes' if conv_split else 'NO'}). "
          f"Run time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
