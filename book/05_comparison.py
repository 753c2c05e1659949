# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Comparison (比较, article section 5)
#
# Section 5.1 of the article lists advantages and disadvantages of *structure optimisation*
# (pruning, "network compression", model distillation) and *weight optimisation*
# (quantization, knowledge distillation) without a single measurement. Section 5.2 then says:
# if model performance matters most, try structure optimisation; if compute and storage matter
# most, try weight optimisation; or combine them. This chapter measures every method of the
# library, and the main combinations, on the same data and models, and checks each claim:
#
# | | article's claim (5.1) | checked below by |
# |---|---|---|
# | S+1 | structure optimisation reduces model complexity and compute cost | parameters, MACs, latency |
# | S+2 | it improves generalisation and model performance | test accuracy vs the dense model |
# | S-1 | it may lose information and hurt performance | accuracy at strong compression |
# | S-2 | it needs several rounds of training, increasing training time | wall time of fine-tuning |
# | W+1 | weight optimisation reduces the number of parameters and storage cost | parameters, bytes on disk |
# | W+2 | it makes the model faster | latency, Keras and TFLite int8 |
# | W-1 | it may reduce accuracy | accuracy at 8, 4, 2 bits |
# | W-2 | it may cause vanishing or exploding gradients | gradient norms during QAT |
#
# Everything runs on the bundled 8x8 digits (1,347 training and 450 test images): the
# article's MLP (`seed_mlp`, 6,570 parameters), LeNet-300-100 (50,610 parameters on 64 inputs)
# and, where convolution matters (latency), LeNet-5. Settings are small so that the chapter
# runs in about two minutes; with 450 test images one image is 0.22 percentage points and the
# standard error of an accuracy near 97% is about 0.8 points, so differences below ~1.5 points
# between single runs are noise.

# %%
import time

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

import compressnet_lite as cnl
from compressnet_lite.notebook import setup

setup()
digits = cnl.data.load_digits()
steps_per_epoch = int(np.ceil(len(digits.x_train) / 32))

# %% [markdown]
# ## How each method is run and measured
#
# Each method starts from the same trained model and is fine-tuned for a few epochs where it
# needs it (post-training quantization needs none). A small callback records the wall time of
# every fine-tuning epoch: those are the training costs, shown with their spread further down.
# Every result is measured the same way: test accuracy, parameters, non-zero weights, MACs
# (multiply-adds per example) that *dense* kernels perform and that a *sparse* kernel would
# perform (non-zero weights only), and bytes of the file written by
# `cnl.storage.save_compressed` (sparse positions, integer codes, codebooks
# and Huffman coding, whichever is cheapest for each array; a float32 model costs about 4 bytes
# per parameter plus ~1.5 kB of architecture).

# %%
class EpochTimer(keras.callbacks.Callback):
    """Wall time of every epoch of a fit."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


COST = {}    # method -> one list of epoch times (s) per fine-tuned model
LOSSES = {}  # method -> training loss per epoch of its last fit


def fine_tune(model, method, epochs, callbacks=(), **kw):
    timer = EpochTimer()
    model = cnl.models.train(model, digits, epochs=epochs, callbacks=[timer, *callbacks], **kw)
    COST.setdefault(method, []).append(timer.times)
    LOSSES[method] = model.history.history["loss"]
    return model


def row(model, arch, method, family, setting=""):
    plain = cnl.storage.plain_model(model)
    return {"model": arch, "method": method, "family": family, "setting": setting,
            "accuracy": cnl.metrics.accuracy(plain, digits.x_test, digits.y_test),
            "params": cnl.metrics.count_params(plain),
            "nonzero": cnl.metrics.count_nonzero(plain),
            "dense MACs": cnl.metrics.flops(plain),
            "sparse MACs": cnl.metrics.flops(plain, nonzero_only=True),
            "bytes": cnl.storage.compressed_size(plain).total}


# %% [markdown]
# The methods, each a few lines of library calls (the chapters of part 3 explain them):
# gradual magnitude pruning {cite}`han2015learning,zhu2017prune`, removing neurons by the L1
# norm of their weights {cite}`li2017pruning`, merging neurons {cite}`srinivas2015datafree`,
# low-rank factorization {cite}`denton2014exploiting`, distillation into a one-hidden-layer
# student {cite}`hinton2015distilling`, post-training quantization (PTQ) and
# quantization-aware training (QAT) {cite}`jacob2018quantization`, and weight sharing by k-means
# {cite}`han2016deep`.

# %%
def prune(base, sparsity, method="prune"):
    model = cnl.pruning.prune(base, 0.0)
    schedule = cnl.pruning.PolynomialDecay(0.0, sparsity, 0, 2 * steps_per_epoch, frequency=10)
    model = fine_tune(model, method, 4, [cnl.pruning.PruningCallback(schedule)])
    return cnl.pruning.strip(model)


def prune_neurons(base, fraction):
    return fine_tune(cnl.pruning.prune_neurons(base, fraction), "remove neurons", 3)


def merge(base, ratio):
    return fine_tune(cnl.merging.merge_neurons(base, ratio=ratio), "merge neurons", 3)


def factorize(base, rank):
    return fine_tune(cnl.lowrank.factorize(base, "fc2", rank=rank), "low rank", 3)


def distill(base, hidden=16):
    keras.utils.set_random_seed(1)
    student = cnl.models.mlp(64, (hidden,), logits=True)
    distiller = cnl.distillation.Distiller(student, base, temperature=4.0, alpha=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    timer = EpochTimer()
    distiller.fit(digits.x_train, digits.y_train, epochs=10, batch_size=32, verbose=0, callbacks=[timer])
    COST.setdefault("distillation", []).append(timer.times)
    return student


def ptq(base, bits):
    start = time.perf_counter()
    model = cnl.quantization.quantize_model(base, bits=bits)
    COST.setdefault("PTQ", []).append([time.perf_counter() - start])  # no epochs: conversion time
    return model


def qat(base, bits):
    model = fine_tune(cnl.quantization.quantize_aware(base, bits=bits), "QAT", 3)
    return cnl.quantization.quantize_model(model)


def cluster(base, k):
    model = fine_tune(cnl.clustering.cluster_weights(base, k), "weight sharing", 3)
    return cnl.clustering.strip_clustering(model)


# %% [markdown]
# ## The sweep
#
# Both MLPs are trained for 15 epochs. LeNet-300-100 gets every method at two strengths and four
# combinations; the article's small MLP gets the main ones.

# %%
bases, rows, models = {}, [], {}
for arch, build in [("seed_mlp", cnl.models.seed_mlp),
                    ("lenet_300_100", lambda: cnl.models.lenet_300_100(input_shape=(64,)))]:
    keras.utils.set_random_seed(0)
    bases[arch] = cnl.models.train(build(), digits, epochs=15)

# %% tags=["nbval-ignore-output"]
start = time.perf_counter()
for arch, base in bases.items():
    big = arch == "lenet_300_100"
    runs = [("dense", "baseline", "", lambda: base)]
    runs += [("prune", "structure", f"{s:.0%}", lambda s=s: prune(base, s)) for s in ((0.8, 0.95) if big else (0.8,))]
    runs += [("remove neurons", "structure", f"{f:.0%}", lambda f=f: prune_neurons(base, f))
             for f in ((0.5, 0.8) if big else (0.5,))]
    if big:
        runs += [("merge neurons", "structure", "50%", lambda: merge(base, 0.5)),
                 ("low rank", "structure", "fc2 rank 16", lambda: factorize(base, 16)),
                 ("distillation", "structure", "16 hidden", lambda: distill(base))]
    runs += [("PTQ", "weight", f"{b} bit", lambda b=b: ptq(base, b)) for b in (8, 4, 2)]
    if big:
        runs += [("QAT", "weight", "2 bit", lambda: qat(base, 2))]
    runs += [("weight sharing", "weight", f"k={k}", lambda k=k: cluster(base, k)) for k in ((16, 4) if big else (16,))]
    for method, family, setting, make in runs:
        keras.utils.set_random_seed(0)
        models[arch, method, setting] = make()
        rows.append(row(models[arch, method, setting], arch, method, family, setting))
    # combinations
    p = models[arch, "prune", "80%"]
    combos = [("prune + PTQ", "80% + 4 bit", lambda: ptq(p, 4)),
              ("prune + sharing", "80% + k=16", lambda: cluster(p, 16))]
    if big:
        combos += [("neurons + PTQ", "50% + 8 bit", lambda: ptq(models[arch, "remove neurons", "50%"], 8)),
                   ("distillation + PTQ", "16 hidden + 8 bit", lambda: ptq(models[arch, "distillation", "16 hidden"], 8))]
    for method, setting, make in combos:
        keras.utils.set_random_seed(0)
        models[arch, method, setting] = make()
        rows.append(row(models[arch, method, setting], arch, method, "combination", setting))
print(f"sweep: {len(rows)} models in {time.perf_counter() - start:.0f} s")

# %%
df = pd.DataFrame(rows)
dense = df[df.method == "dense"].set_index("model")
df["Δ accuracy (pt)"] = 100 * (df.accuracy - df.model.map(dense.accuracy))
df["bytes ratio"] = df.model.map(dense.bytes) / df.bytes
df["MACs ratio"] = df.model.map(dense["dense MACs"]) / df["dense MACs"]
table = df.set_index(["model", "method", "setting"])
pd.options.display.float_format = "{:.3f}".format
table[["family", "accuracy", "Δ accuracy (pt)", "params", "nonzero", "bytes", "bytes ratio",
       "dense MACs", "sparse MACs", "MACs ratio"]].round(3)

# %% [markdown]
# ## Accuracy against bytes, MACs and latency
#
# A method is on the **Pareto front** if no other model is both smaller and more accurate. The
# front is computed over all models of one architecture; the plots label the models on it and
# those that lost more than 2 points (the table above names every point).

# %%
def pareto(frame, cost):
    frame = frame.sort_values([cost, "accuracy"], ascending=[True, False])
    best, keep = -1.0, []
    for i, r in frame.iterrows():
        if r.accuracy > best:
            keep.append(i)
            best = r.accuracy
    return frame.loc[keep]


colors = {"baseline": "black", "structure": "tab:blue", "weight": "tab:orange", "combination": "tab:green"}
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
lenet = df[df.model == "lenet_300_100"]
for ax, cost, label in [(axes[0], "bytes", "compressed file (bytes, log)"),
                        (axes[1], "dense MACs", "dense MACs per example (log)")]:
    for fam, part in lenet.groupby("family"):
        ax.scatter(part[cost], 100 * part.accuracy, c=colors[fam], label=fam, s=30)
    front = pareto(lenet, cost)
    for i, r in lenet.iterrows():  # label the front, the dense model and the clear losses
        if i in front.index or r.method == "dense" or r.accuracy < dense.accuracy["lenet_300_100"] - 0.02:
            ax.annotate(f"{r.method} {r.setting}".strip(), (r[cost], 100 * r.accuracy), fontsize=7,
                        xytext=(4, -9 if i in front.index else 3), textcoords="offset points")
    ax.step(front[cost], 100 * front.accuracy, where="post", color="gray", lw=1, label="Pareto front")
    ax.set(xscale="log", xlabel=label, ylabel="test accuracy (%)", ylim=(max(0, 100 * lenet.accuracy.min() - 5), 100))
axes[0].legend(fontsize=7, loc="lower right")
fig.suptitle("LeNet-300-100 on the digits: every method and combination")
fig.tight_layout()
plt.show()
front_bytes = pareto(lenet, "bytes")
print("Pareto front (bytes):", "; ".join(f"{r.method} {r.setting} ({r.bytes:,} B, {r.accuracy:.3f})"
                                           for _, r in front_bytes.iterrows()))

# %% [markdown]
# Latency needs a model where the arithmetic, not Python and TensorFlow's call overhead, takes
# the time: on the MLPs above one batch of 256 takes well under a millisecond whatever the
# method. We use LeNet-5 on the 8x8 images: dense, 75% of the weights pruned (unstructured),
# 75% of the filters and units removed (structured), int8 weights in Keras, and the same
# network as a TensorFlow Lite model in float32 and in full int8 (integer kernels). All run on
# the same batch of 256 images, one after the other in seven rounds; we report the median over
# rounds with its spread, and compare variants by their fastest round (the one least disturbed
# by other processes: the machine that runs this book is shared and noisy).

# %%
images = cnl.data.load_digits(image=True)
keras.utils.set_random_seed(0)
lenet5 = cnl.models.train(cnl.models.lenet5(input_shape=(8, 8, 1)), images, epochs=6)


def tune5(model, epochs=2, callbacks=()):
    keras.utils.set_random_seed(0)
    return cnl.models.train(model, images, epochs=epochs, callbacks=list(callbacks))


schedule = cnl.pruning.PolynomialDecay(0.0, 0.75, 0, steps_per_epoch, frequency=10)
conv = {"dense": lenet5,
        "prune 75% (zeros)": cnl.pruning.strip(tune5(cnl.pruning.prune(lenet5, 0.0),
                                                     callbacks=[cnl.pruning.PruningCallback(schedule)])),
        "remove 75% filters/units": tune5(cnl.pruning.prune_neurons(lenet5, 0.75)),
        "int8 weights (Keras)": cnl.quantization.quantize_model(lenet5, bits=8)}
tflite = {"TFLite float32": cnl.quantization.to_tflite(lenet5, int8=False),
          "TFLite int8": cnl.quantization.to_tflite(lenet5, images.x_train[:256], int8=True)}
runners = {k: cnl.quantization.TFLiteRunner(v, num_threads=1) for k, v in tflite.items()}
conv_rows = []
for name, m in conv.items():
    plain = cnl.storage.plain_model(m)
    conv_rows.append({"variant": name, "accuracy": cnl.metrics.accuracy(plain, images.x_test, images.y_test),
                      "dense MACs": cnl.metrics.flops(plain), "sparse MACs": cnl.metrics.flops(plain, nonzero_only=True),
                      "bytes": cnl.storage.compressed_size(plain).total})
for name, run in runners.items():
    conv_rows.append({"variant": name, "accuracy": cnl.metrics.accuracy(run, images.x_test, images.y_test),
                      "dense MACs": cnl.metrics.flops(lenet5), "sparse MACs": cnl.metrics.flops(lenet5),
                      "bytes": len(tflite[name])})
conv_df = pd.DataFrame(conv_rows).set_index("variant")

# %% tags=["nbval-ignore-output"]
batch = images.x_test[:256]
timed = {**{k: cnl.storage.plain_model(m) for k, m in conv.items()}, **runners}
samples = {k: [] for k in timed}
for _ in range(7):                                    # interleaved rounds against drifting load
    for name, m in timed.items():
        samples[name].append(cnl.metrics.latency(m, batch, runs=10, warmup=2).median * 1e3)
conv_df["latency ms"] = [float(np.median(samples[k])) for k in conv_df.index]
conv_df["q1 ms"] = [float(np.percentile(samples[k], 25)) for k in conv_df.index]
conv_df["q3 ms"] = [float(np.percentile(samples[k], 75)) for k in conv_df.index]
conv_df["fastest round ms"] = [float(np.min(samples[k])) for k in conv_df.index]
conv_df.round(3)

# %% tags=["nbval-ignore-output"]
lat = conv_df["fastest round ms"]   # the round least disturbed by other work on the machine
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.errorbar(conv_df["latency ms"], 100 * conv_df.accuracy, fmt="o",
            xerr=[conv_df["latency ms"] - conv_df["q1 ms"], conv_df["q3 ms"] - conv_df["latency ms"]])
for k, (name, r) in enumerate(conv_df.iterrows()):
    ax.annotate(name, (r["latency ms"], 100 * r.accuracy), fontsize=7, xytext=(4, 4 if k % 2 else -10),
                textcoords="offset points")
ax.set(xlabel="latency, batch of 256 (ms, median and IQR over rounds; TFLite: 1 thread)", ylabel="test accuracy (%)",
       title="LeNet-5 on the 8x8 digits: accuracy against measured latency")
plt.show()
speed = {k: lat["dense"] / lat[k] for k in ("prune 75% (zeros)", "remove 75% filters/units", "int8 weights (Keras)")}
speed["TFLite int8 vs TFLite float32"] = lat["TFLite float32"] / lat["TFLite int8"]
print("speed-ups (fastest rounds) measured on this machine: " + ", ".join(f"{k} {v:.2f}x" for k, v in speed.items()))

# %% [markdown]
# ## Training cost
#
# For every method: how many training epochs it needed per model, the wall time of one epoch
# (median and interquartile range over all the epochs it ran in the sweep; the first epoch of
# each fit also traces the training graph, hence the long upper tail), and the total training
# time per compressed model. Post-training quantization trains nothing; its time is the
# conversion. Timings depend on the machine and its load; only orders of magnitude matter.

# %% tags=["nbval-ignore-output"]
def cost_row(method, fits):
    epochs = [t for fit in fits for t in fit]
    per_model = [sum(fit) for fit in fits]
    return {"models": len(fits), "epochs per model": 0 if method == "PTQ" else len(fits[0]),
            "epoch median s": np.median(epochs), "epoch q1 s": np.percentile(epochs, 25),
            "epoch q3 s": np.percentile(epochs, 75), "per model s": np.median(per_model),
            "per model min s": np.min(per_model), "per model max s": np.max(per_model)}


cost = pd.DataFrame({m: cost_row(m, fits) for m, fits in COST.items()}).T.sort_values("per model s")
fig, ax = plt.subplots(figsize=(6.4, 3.2))
ax.barh(cost.index, cost["per model s"], color="lightgray")
for k, m in enumerate(cost.index):  # every compressed model's training time as a dot
    totals = [sum(fit) for fit in COST[m]]
    ax.plot(totals, [k] * len(totals), "k.", ms=6)
ax.set(xscale="log", xlabel="training time per compressed model (s): bar = median, dots = each model")
plt.show()
cost.round(3)

# %% [markdown]
# ## Does gradient flow suffer in weight optimisation?
#
# Post-training quantization computes no gradient at all. Quantization-aware training does:
# the forward pass uses the rounded weights, and the backward pass treats rounding as the
# identity (the straight-through estimator, STE {cite}`bengio2013estimating`), so gradients
# reach the float "shadow" weights. We compare the gradient norm of each layer of LeNet-300-100
# on one batch, float model against QAT models at 8, 2 and 1 bits, and look at the training
# loss of the 2-bit QAT run of the sweep.

# %%
base = bases["lenet_300_100"]
xb, yb = digits.x_train[:256], digits.y_train[:256]
loss_fn = keras.losses.SparseCategoricalCrossentropy()


def grad_norms(model):
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, model(xb, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    return {v.path.split("/")[0]: float(tf.norm(g)) for v, g in zip(model.trainable_weights, grads)
            if v.path.endswith("kernel")}


norms = {"float": grad_norms(base)}
for bits in (8, 2, 1):
    norms[f"QAT {bits} bit"] = grad_norms(cnl.quantization.quantize_aware(base, bits=bits))
norms = pd.DataFrame(norms).T
ratios = norms / norms.loc["float"]
print("kernel gradient norms, relative to the float model:")
print(ratios.round(1).to_string())
qat_loss = LOSSES["QAT"]
print("2-bit QAT training loss per epoch: " + ", ".join(f"{v:.3f}" for v in qat_loss))
finite = bool(np.isfinite(norms.values).all() and np.isfinite(qat_loss).all())

# %% [markdown]
# ## The claims, checked
#
# Each cell below states a claim of section 5.1 as the measurements decide it and asserts it.

# %%
L = table.loc["lenet_300_100"]
S = table.loc["seed_mlp"]
get = lambda t, m, s: t.loc[(m, s)]   # noqa: E731
d_l, d_s = get(L, "dense", ""), get(S, "dense", "")

# S+1: structure optimisation lowers compute, but only when it removes whole units
structured = [get(L, "remove neurons", "50%"), get(L, "merge neurons", "50%"), get(L, "low rank", "fc2 rank 16"),
              get(L, "distillation", "16 hidden")]
assert all(r["dense MACs"] < 0.6 * d_l["dense MACs"] for r in structured)
assert get(L, "prune", "95%")["dense MACs"] == d_l["dense MACs"]        # zeros are still multiplied
assert get(L, "prune", "95%")["sparse MACs"] < 0.1 * d_l["dense MACs"]  # ... by a dense kernel
assert lat["remove 75% filters/units"] < 0.7 * lat["dense"]             # generous margins: shared machine
assert lat["prune 75% (zeros)"] > 0.6 * lat["dense"]                    # no real speed-up from zeros
print(f"S+1: dense MACs of the structured LeNet-300-100 models: "
      + ", ".join(f"{d_l['dense MACs'] / r['dense MACs']:.1f}x fewer" for r in structured)
      + "; 95% unstructured pruning: same dense MACs")

# %%
# S+2: no method improves accuracy beyond noise; S-1: strong structural compression costs accuracy
struct_rows = df[(df.family == "structure")]
gain = 100 * (struct_rows.accuracy - struct_rows.model.map(dense.accuracy))
print(f"S+2: best accuracy change of a structure method {gain.max():+.1f} pt, worst {gain.min():+.1f} pt "
      f"(one test image = 0.2 pt, standard error ~0.8 pt)")
assert gain.max() <= 1.5
assert get(L, "remove neurons", "80%")["accuracy"] < d_l["accuracy"] - 0.015
assert get(L, "prune", "95%")["accuracy"] < d_l["accuracy"] - 0.015
best = df.loc[(df.accuracy - df.model.map(dense.accuracy)).idxmax()]
print(f"largest gain of any model in the sweep: {best.method} {best.setting} on {best.model}, "
      f"{100 * (best.accuracy - dense.accuracy[best.model]):+.1f} pt")
# S-2: every structure method trains again (epochs per compressed model); PTQ trains nothing
epochs = cost["epochs per model"]
assert all(epochs[m] >= 3 for m in ("prune", "remove neurons", "merge neurons", "low rank", "distillation"))
assert epochs["PTQ"] == 0

# %% [markdown]
# %%
# W+1: weight optimisation keeps every parameter but stores each in fewer bits
for r in (get(L, "PTQ", "8 bit"), get(L, "PTQ", "4 bit"), get(L, "weight sharing", "k=16")):
    assert r["params"] == d_l["params"]
assert d_l["bytes"] / get(L, "PTQ", "8 bit")["bytes"] > 3.5
assert d_l["bytes"] / get(L, "PTQ", "4 bit")["bytes"] > 6
assert d_l["bytes"] / get(L, "weight sharing", "k=16")["bytes"] > 6
# W-1: 8 bits cost nothing measurable, 2 bits post-training do, and QAT recovers most of it
assert abs(get(L, "PTQ", "8 bit")["accuracy"] - d_l["accuracy"]) <= 0.005
assert abs(get(S, "PTQ", "8 bit")["accuracy"] - d_s["accuracy"]) <= 0.005
assert get(L, "PTQ", "2 bit")["accuracy"] < d_l["accuracy"] - 0.05
assert get(L, "QAT", "2 bit")["accuracy"] > get(L, "PTQ", "2 bit")["accuracy"] + 0.05
# W+2: int8 weights in a float Keras model do the same float work; integer kernels are faster
assert get(L, "PTQ", "8 bit")["dense MACs"] == d_l["dense MACs"]
assert lat["TFLite int8"] < 0.8 * lat["TFLite float32"]             # generous margin: shared machine
# W-2: QAT gradients neither vanish nor blow up training: finite, not smaller than the float
# model's, and 2-bit QAT's loss ends far below where it started while it recovers the accuracy
assert finite and ratios.values.min() > 0.5
assert qat_loss[-1] < 0.7 * qat_loss[0]
assert get(L, "QAT", "2 bit")["accuracy"] >= d_l["accuracy"] - 0.02
# combinations beat each method alone on bytes at similar accuracy
combo = get(L, "prune + sharing", "80% + k=16")
assert combo["bytes"] < min(get(L, "prune", "80%")["bytes"], get(L, "weight sharing", "k=16")["bytes"])
assert combo["accuracy"] >= d_l["accuracy"] - 0.02
print(f"W: 8-bit PTQ {d_l['bytes'] / get(L, 'PTQ', '8 bit')['bytes']:.1f}x fewer bytes at "
      f"{100 * (get(L, 'PTQ', '8 bit')['accuracy'] - d_l['accuracy']):+.1f} pt; 2-bit PTQ "
      f"{100 * (get(L, 'PTQ', '2 bit')['accuracy'] - d_l['accuracy']):+.1f} pt, 2-bit QAT "
      f"{100 * (get(L, 'QAT', '2 bit')['accuracy'] - d_l['accuracy']):+.1f} pt; prune 80% + k=16: "
      f"{d_l['bytes'] / combo['bytes']:.1f}x at {100 * (combo['accuracy'] - d_l['accuracy']):+.1f} pt")

# %% [markdown]
# | | article's claim | verdict on the digits | condition |
# |---|---|---|---|
# | S+1 | structure optimisation lowers compute cost | **holds for structured methods only** | removing neurons/filters, merging, low rank and distillation cut the dense MACs (and, on LeNet-5, the measured latency); unstructured pruning leaves dense MACs and latency unchanged: zeros are multiplied like any other weight unless a sparse kernel runs them |
# | S+2 | it improves generalisation and performance | **not supported** | no structure method beat the dense model by more than the noise of a 450-image test set; compression is at best neutral at mild settings |
# | S-1 | it may lose information | **holds, at strong settings** | 95% unstructured or 80% structured pruning with a few epochs of fine-tuning cost accuracy; mild settings recover fully |
# | S-2 | it needs more training | **holds** | every structure method needs fine-tuning epochs (distillation a full training of the student); PTQ needs none |
# | W+1 | weight optimisation reduces parameters and storage | **half right** | storage falls (8 bit: 3.7x, 4 bit or 16 shared values: about 7x, on LeNet-300-100), the number of parameters does not change at all |
# | W+2 | it makes the model faster | **only with integer kernels** | int8 weights inside a float Keras model compute in float32 with the dequantized kernels (same MACs and the same float work, so any latency difference in the table above is run-to-run noise); TFLite int8 kernels were faster than TFLite float32 |
# | W-1 | it may reduce accuracy | **holds below 8 bits** | 8-bit PTQ stayed within 0.5 pt of the float model on both MLPs, 4-bit within 0.5 pt; 2-bit PTQ lost 14 (LeNet-300-100) to 30 (article's MLP) points; 2-bit QAT recovered the float accuracy in 3 epochs |
# | W-2 | it may cause vanishing/exploding gradients | **does not apply as stated** | PTQ computes no gradients. In QAT the straight-through estimator passes gradients unchanged at 8 bits (norms equal to the float model's); at 2 and 1 bits they start 10-40 times *larger*, because the rounded network starts with a much higher loss, not because of an instability: the 2-bit run's training loss ended at about half its first-epoch value and its accuracy recovered. The real low-bit difficulty is gradient *mismatch* (the STE's gradient is not the gradient of the rounded network) {cite}`bengio2013estimating`, which limits accuracy at 1-2 bits on harder tasks |
#
# ## Choosing a strategy (5.2), from the numbers
#
# The article's rule (performance: structure optimisation; efficiency and storage: weight
# optimisation) does not match the measurements: structure optimisation did not improve
# performance, and weight optimisation saves storage but not compute on float hardware. What
# the numbers support:
#
# 1. **Smaller files, any hardware, no training budget**: 8-bit post-training quantization.
#    About 3.7x fewer bytes on LeNet-300-100 (3x on the small MLP, whose file is a larger
#    share of fixed overhead), no measurable accuracy change, seconds of work.
# 2. **Smallest files, a little training, same architecture**: prune (gradually, masks kept)
#    *and* share or quantize the remaining weights, then let the storage format encode the zeros
#    and codes (Deep Compression {cite}`han2016deep`). Pruning plus 16 shared values was on the
#    bytes Pareto front, with fewer bytes than either method alone and no accuracy lost.
# 3. **Smallest and fastest, when you can train a new architecture**: distil into a small student,
#    then quantize it. On the digits this was the front's smallest point by far (a one-hidden-
#    layer student at 8 bits); the digits are an easy task, though, and a student that small
#    trained alone came close too (see {doc}`04_code_examples`). On harder tasks the student has
#    to be larger and the teacher's soft targets matter more {cite}`hinton2015distilling`.
# 4. **Faster on ordinary dense kernels (CPU/GPU)**: remove structure (neurons/filters,
#    low rank, or train a smaller student by distillation), because only fewer dense MACs
#    make dense kernels faster; then run int8 kernels (TFLite or another integer runtime) for a
#    further speed-up. Unstructured sparsity helps speed only with sparse kernels or hardware
#    support (e.g. 2:4 sparsity {cite}`mishra2021accelerating`).
# 5. **Very low bits (2 or 3)**: use quantization-aware training with per-channel scales; PTQ
#    at 2 bits lost 14 to 30 points, 2-bit QAT none. 4-bit PTQ was still fine on these MLPs.
# 6. **Keep the accuracy budget honest**: measure on a held-out set with enough examples;
#    gains below the standard error are not gains.
#
# ## Exercises
#
# 1. Add 90% gradual pruning followed by 4-bit PTQ to the sweep for LeNet-300-100. Where does
#    it land relative to the Pareto front?
# 2. Re-run the latency cell with a batch of 16 instead of 256. Does the structured speed-up on
#    LeNet-5 persist? Why might it shrink?
# 3. Repeat the S+2 check with three different training seeds for the dense model and each
#    structure method. Does any method improve accuracy consistently?
#
# :::{admonition} Solution 1
# :class: dropdown
# ```python
# p90 = prune(bases["lenet_300_100"], 0.9)
# r = row(ptq(p90, 4), "lenet_300_100", "prune + PTQ", "combination", "90% + 4 bit")
# print(r["bytes"], r["accuracy"])
# ```
# The zeros cost only their positions (relative indices, Huffman-coded) and the survivors 4
# bits each, so the file is a few kB, smaller than every single method. Whether it stays on the
# front depends on how much accuracy 90% plus 4 bits costs after only four epochs; gradual
# pruning over more epochs, or QAT instead of PTQ, moves it up.
# :::
#
# :::{admonition} Solution 2
# :class: dropdown
# Change `batch = images.x_test[:256]` to `images.x_test[:16]`. With 16 images the arithmetic
# is 16 times smaller while the fixed cost of each call (graph dispatch, memory allocation)
# stays, so all variants move closer together and the measured speed-up shrinks. The MACs do
# not change: per example the structured model still does less than a tenth of the work (7%).
# :::
#
# :::{admonition} Solution 3
# :class: dropdown
# Wrap the sweep in `for seed in (0, 1, 2)`, calling `keras.utils.set_random_seed(seed)`
# before building each base model, and compare each method's accuracy with its own base.
# On the digits the differences change sign from seed to seed and stay within about one
# standard error: no method improves generalisation consistently. Compression can act as a
# regulariser on large over-parameterised networks trained on little data, but that is a
# property of a particular setting, not of structure optimisation.
# :::
