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
# # Background (背景介绍, article section 1)
#
# The article opens by saying that as data grow, models grow, and with them "the
# computational cost and storage space explode" (计算成本和存储空间的 explode 增长); compression
# algorithms are meant to cut both while keeping accuracy. That is right in spirit, but the
# article gives no numbers. This chapter measures them: how many parameters, multiply-adds,
# bytes on disk and milliseconds of CPU time the models of this book cost, next to a real
# mobile network. It then sets out the three families of methods the article names.
#
# Everything below runs on the CPU of the machine that builds the book.

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import compressnet_lite as cnl
from compressnet_lite.notebook import setup, show_source

setup()

# %% [markdown]
# ## What a model costs
#
# Four quantities describe the cost of a trained network:
#
# * **parameters** $P$: the number of weights. A Dense layer with $m$ inputs and $n$ outputs
#   has $mn + n$; a convolution with a $k \times k$ kernel, $c_\text{in}$ input and
#   $c_\text{out}$ output channels has $k^2 c_\text{in} c_\text{out} + c_\text{out}$.
# * **multiply-accumulates** (MACs, often loosely called FLOPs): for one example, a Dense layer
#   does $mn$ of them, a convolution $H_\text{out} W_\text{out} \, k^2 c_\text{in} c_\text{out}$.
#   Convolutions reuse each weight at every output position, so they cost many MACs per weight.
# * **bytes on disk**: float32 weights take $4P$ bytes, plus the file format's overhead.
# * **latency**: wall time of one forward pass, measured, because it depends on the kernels
#   and the hardware, not only on $P$ and MACs.
#
# The library measures each of them; `flops` counts the MACs of Dense and convolution layers:

# %%
show_source(cnl.metrics.flops)

# %% [markdown]
# The models of this book: the article's MLP (`seed_mlp`: 64-64-32-10), and the two
# reference networks of Han et al.'s pruning and Deep Compression papers
# {cite}`han2015learning,han2016deep`, LeNet-300-100 and LeNet-5 {cite}`lecun1998gradient`,
# built for the 8x8 digits this book trains on and for MNIST's 28x28 images. For scale we add
# MobileNetV2 {cite}`sandler2018mobilenetv2`, a network designed for phones, built with random
# weights (nothing is downloaded).

# %%
digits = cnl.data.load_digits()
images = cnl.data.load_digits(image=True)

builders = {
    "seed_mlp (digits)": lambda: cnl.models.seed_mlp(),
    "LeNet-300-100 (digits)": lambda: cnl.models.lenet_300_100((64,)),
    "LeNet-300-100 (MNIST)": lambda: cnl.models.lenet_300_100((784,)),
    "LeNet-5 (digits)": lambda: cnl.models.lenet5((8, 8, 1)),
    "LeNet-5 (MNIST)": lambda: cnl.models.lenet5((28, 28, 1)),
    "MobileNetV2 (224x224 RGB)":
        lambda: keras.applications.MobileNetV2(weights=None),
}
built = {}
for name, build in builders.items():
    keras.utils.set_random_seed(0)
    built[name] = build()

counts = pd.DataFrame({
    "parameters": {name: cnl.metrics.count_params(m)
                   for name, m in built.items()},
    "MACs per example": {name: cnl.metrics.flops(m)
                         for name, m in built.items()},
})
counts

# %% [markdown]
# And the bytes, measured by saving each model in Keras' `.keras` format and gzipping the file.
# (The archive records the saving time, so the gzip column can differ by a few bytes from one
# run to the next; this cell's output is not compared when the book is tested, the claims about
# it are checked in the cell after.)

# %% tags=["nbval-ignore-output"]
sizes = {name: cnl.metrics.model_bytes(m) for name, m in built.items()}
costs = counts.assign(**{
    "float32 bytes (4P)": 4 * counts["parameters"],
    ".keras file bytes": [sizes[name].keras for name in counts.index],
    "gzip bytes": [sizes[name].gzip for name in counts.index],
})
costs[["float32 bytes (4P)", ".keras file bytes", "gzip bytes"]]

# %% [markdown]
# The counts agree with the papers: LeNet-300-100 on MNIST has 266,610 weights (Han et al.
# report 267K) and LeNet-5 431,080 (431K). The file on disk is about four bytes per weight plus
# a constant overhead for the architecture and the HDF5 container. Note the gzip column: on
# the larger networks general-purpose compression saves only 10-15 %, because the low-order
# mantissa bits of float32 weights look random (these are initial weights; exercise 3 shows
# that trained weights behave the same). Compression has to change what is stored, which is what the
# methods in this book do.

# %%
assert costs.loc["LeNet-300-100 (MNIST)", "parameters"] == 266_610
assert costs.loc["LeNet-5 (MNIST)", "parameters"] == 431_080
assert costs.loc["seed_mlp (digits)", "parameters"] == (
    64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10)
for name in costs.index:
    # the file holds every float32 weight: it is at least 4 bytes per parameter
    assert (costs.loc[name, ".keras file bytes"]
            >= costs.loc[name, "float32 bytes (4P)"])
# gzip saves little on the large random-initialised networks (< 15 %)
big = costs.loc[["LeNet-5 (MNIST)", "MobileNetV2 (224x224 RGB)"]]
assert (big["gzip bytes"] / big[".keras file bytes"] > 0.85).all()

# %% [markdown]
# ## Latency, measured
#
# `cnl.metrics.latency` compiles the model's forward pass (a `tf.function` on TensorFlow,
# which this chapter runs on; the section on backends below covers the others) and reports
# the median and interquartile range of repeated calls; the first calls (tracing, warm-up) are
# not timed. We time one example (the interactive case) and a batch of 256 (the throughput
# case). The numbers depend on this machine and its load, so the cell's output is not compared
# when the book is tested; the claims after it are checked with generous margins.

# %% tags=["nbval-ignore-output"]
def example_batch(model, n):
    shape = model.inputs[0].shape[1:]
    return np.random.default_rng(0).random((n, *shape), dtype=np.float32)


timings = {}
for name, model in built.items():
    runs = 10 if "MobileNet" in name else 30
    timings[name] = {
        n: cnl.metrics.latency(model, example_batch(model, n), runs=runs)
        for n in (1, 256) if not ("MobileNet" in name and n == 256)}
    print(f"{name:28s} batch 1: {timings[name][1]}")

# %% [markdown]
# For the small models one forward pass costs a few tenths of a millisecond to about one, most of
# it fixed overhead of calling into TensorFlow; MobileNetV2 with 300 million MACs per image
# costs tens of milliseconds per image on this CPU. The plot shows MACs against measured
# latency: at batch 1 the small models sit on a floor set by overhead, not by arithmetic.
# This is why, later in the book, removing weights only pays off in time when it also removes
# *work* that dominates the call (structured pruning, smaller layers, integer kernels).

# %%
fig, ax = plt.subplots()
macs = costs["MACs per example"]
lat1 = pd.Series({name: t[1].median * 1e3 for name, t in timings.items()})
ax.loglog(macs, lat1, "o")
for name in costs.index:
    ax.annotate(name.split(" (")[0] + ("\n(MNIST)" if "MNIST" in name else ""),
                (macs[name], lat1[name]), fontsize=8, xytext=(4, 4),
                textcoords="offset points")
ax.set_xlabel("multiply-accumulates per example")
ax.set_ylabel("latency, batch 1 (ms, median)")
ax.set_title("Cost of one forward pass on this CPU")
plt.show()

# %%
mobilenet = timings["MobileNetV2 (224x224 RGB)"][1].median
small = timings["seed_mlp (digits)"][1].median
assert mobilenet > 5 * small, \
    "MobileNetV2 must be much slower per example than the article's MLP"
# throughput: a batch of 256 costs far less than 256 single calls for the
# small models
for name in ["seed_mlp (digits)", "LeNet-300-100 (MNIST)"]:
    assert timings[name][256].median < 256 * timings[name][1].median / 4

# %% [markdown]
# ## The same code on TensorFlow, JAX and PyTorch
#
# Keras 3 runs one model definition on three backends: TensorFlow, JAX and PyTorch. The
# TensorFlow Model Optimization Toolkit is tied to the legacy `tf_keras` and offers nothing
# for the other two; this library runs on all three. Choose the backend the Keras way, with
# the environment variable `KERAS_BACKEND=tensorflow|jax|torch` set before Keras is
# imported (`import compressnet_lite` keeps your choice and picks TensorFlow only when you
# made none). The algorithms are written once, in NumPy and `keras.ops`; the few steps that
# differ between backends sit in one small module, `compressnet_lite._backend`: the
# gradients of the gradient and Taylor pruning criteria (taken as Keras' own trainers take
# them: `tf.GradientTape`, `jax.grad`, `torch.autograd`), the compiled assignment that sets
# pruning masks between training steps, and the compiled forward pass that `latency` times.
# The JAX gradient, for example, feeds the chosen variables through a `StatelessScope`:

# %%
from compressnet_lite import _backend

show_source(_backend._grads_jax)

# %% [markdown]
# Two backend differences matter to a user. JAX *donates* the buffers of the variables it
# trains, so a compressed copy that shared arrays with your model would destroy your model
# when the copy is fitted; every transform here copies weights through NumPy, and the tests
# check on each backend that the input model is bit-identical and usable after each transform
# and the training of its result. And TensorFlow Lite export (`to_tflite`) and `tf.distribute`
# are TensorFlow by nature; on JAX, scale-out is `keras.distribution.DataParallel`, which
# gradual pruning, QAT, clustering fine-tuning and the distiller also run under.
#
# The program below trains the article's MLP, then times gradual pruning (to 80 %) and
# quantization-aware training (8 bits) on the digits. It is run unchanged in a fresh Python
# process per backend. This book's environment has TensorFlow only; JAX and PyTorch live in
# the separate environment `.venv-backends` that `make test-backends` creates (it adds
# `jax[cpu]` and the CPU build of `torch`, about 1 GB, which a reader of the book does not
# need). Where that environment is not there or not finished (make marks a finished one
# with `.venv-backends/.installed`), the cell says so and measures TensorFlow alone.

# %%
WORKLOAD = r"""
import json, statistics, time
import keras
import compressnet_lite as cnl


class StepTime(keras.callbacks.Callback):
    # wall time per training step, per epoch
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append((time.perf_counter() - self.start) / self.steps)


def step_ms(model, data, epochs=4, callbacks=()):
    timer = StepTime()
    timer.times, timer.steps = [], -(-len(data.x_train) // 32)
    cnl.models.train(model, data, epochs=epochs, seed=None,
                     callbacks=[*callbacks, timer])
    return 1e3 * statistics.median(timer.times[1:])  # epoch 1 compiles


data = cnl.data.load_digits()
keras.utils.set_random_seed(0)
base = cnl.models.train(cnl.models.seed_mlp(), data, epochs=5)

pruned = cnl.pruning.prune(base, 0.0)
schedule = cnl.pruning.PolynomialDecay(0.0, 0.8, begin=0, end=120, frequency=10)
prune_ms = step_ms(pruned, data,
                   callbacks=[cnl.pruning.PruningCallback(schedule)])
qat = cnl.quantization.quantize_aware(base, bits=8)
qat_ms = step_ms(qat, data)
print(json.dumps({
    "backend": keras.backend.backend(), "prune_ms": prune_ms, "qat_ms": qat_ms,
    "sparsity": cnl.metrics.sparsity(pruned),
    "pruned_acc": cnl.metrics.accuracy(pruned, data.x_test, data.y_test),
    "qat_acc": cnl.metrics.accuracy(qat, data.x_test, data.y_test),
}))
"""

# %% [markdown]
# One run per backend, one after the other, each with one compute thread, on a CPU other
# jobs share: the times are
# relative and noisy (they change from run to run and machine to machine), so the cell's
# output is not compared when the book is tested; the checks after it do not depend on them.

# %% tags=["nbval-ignore-output"]
import json
import os
import subprocess
import sys
from pathlib import Path

repo = Path(cnl.__file__).resolve().parents[1]
other_venv = repo / ".venv-backends"
other_python = other_venv / "bin" / "python"
pythons = {"tensorflow": sys.executable}
if (other_venv / ".installed").exists():  # make writes it once installed
    pythons |= {"jax": str(other_python), "torch": str(other_python)}
else:
    print(f"JAX and PyTorch are not installed here ({other_venv} is missing or "
          "half made; `make test-backends` creates it): TensorFlow only.")

# one compute thread each: the numbers compare the backends, not how each one's
# thread pool copes with a CPU that other jobs share
one_thread = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
              "TF_NUM_INTEROP_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
results = {}
for backend, python in pythons.items():
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           **one_thread}
    run = subprocess.run([python, "-c", WORKLOAD], env=env, capture_output=True,
                         text=True, timeout=600, cwd=repo)
    assert run.returncode == 0, run.stderr[-2000:]
    results[backend] = json.loads(run.stdout.strip().splitlines()[-1])

table = pd.DataFrame(results).T
tf_ms = table.loc["tensorflow", ["prune_ms", "qat_ms"]]
pd.DataFrame({
    "gradual pruning, ms/step": table["prune_ms"].astype(float).round(2),
    "QAT, ms/step": table["qat_ms"].astype(float).round(2),
    "relative to TF (pruning, QAT)": [
        f"{p / tf_ms['prune_ms']:.1f}x, {q / tf_ms['qat_ms']:.1f}x"
        for p, q in zip(table["prune_ms"], table["qat_ms"])],
    "accuracy (pruned, QAT)": [f"{a:.3f}, {b:.3f}" for a, b in
                               zip(table["pruned_acc"], table["qat_acc"])],
})

# %% [markdown]
# On a model this small a training step is a few milliseconds of framework overhead more
# than arithmetic, so the table compares how much each backend spends around a step:
# compiled TensorFlow and JAX steps against PyTorch's eager ones. It says nothing about
# large models. What holds on every backend, and is checked here, is the result: each reaches
# exactly the scheduled 80 % sparsity, and both compressed models still classify the digits.

# %%
assert "tensorflow" in results
for backend, r in results.items():
    assert abs(r["sparsity"] - 0.8) < 0.005, (backend, r["sparsity"])
    assert r["pruned_acc"] > 0.7 and r["qat_acc"] > 0.7, (backend, r)
    assert r["prune_ms"] > 0 and r["qat_ms"] > 0

# %% [markdown]
# ## Why it matters beyond one CPU
#
# The models above are tiny. Those that motivated compression research are not: AlexNet's
# weights take 240 MB and VGG-16's 552 MB in float32, too large for on-chip memory, so every
# inference streams them from DRAM; Han et al. {cite}`han2016deep` reduced them to 6.9 MB and
# 11.3 MB without loss of accuracy. They also point out that fetching a 32-bit word from DRAM
# costs about 640 pJ against 0.9 pJ for a 32-bit floating-point add {cite}`han2015learning`:
# on a phone, memory traffic, not arithmetic, drains the battery. Today's language models
# repeat the story at a larger scale, and the same families of methods (pruning
# {cite}`frantar2023sparsegpt`, quantization {cite}`dettmers2022llmint8,frantar2023gptq`,
# distillation {cite}`sanh2019distilbert`) are how they are deployed.
#
# ## The three families, as the article names them
#
# | family (article) | what changes | methods in the article | chapter |
# |---|---|---|---|
# | structure optimisation (网络结构优化) | the architecture: fewer connections, neurons or layers | pruning, merging neurons ("network compression"), model distillation | {doc}`03_1_pruning`, {doc}`03_2_network_compression`, {doc}`03_3_distillation` |
# | weight optimisation (权重优化) | how weights are represented: fewer bits, shared values | quantization, knowledge distillation | {doc}`03_4_quantization`, {doc}`03_3_distillation` |
# | training optimisation (训练优化) | the training process: distributed, heterogeneous | (named, not covered by the article) | not covered |
#
# Two corrections to the article's taxonomy, developed in the next chapter: "model
# distillation" and "knowledge distillation" are one method listed twice, and distillation is
# not a weight representation at all: it trains a smaller architecture. And the families
# combine: Deep Compression {cite}`han2016deep` prunes, then shares and quantizes weights, then
# entropy-codes them ({doc}`03_5_combining`).
#
# ## Exercises
#
# 1. A Dense layer maps 784 inputs to 300 outputs. Compute its parameters, its MACs per example
#    and its float32 size in bytes by hand, then check with `cnl.metrics`.
# 2. LeNet-5 on MNIST has about 431K parameters but about 2.3M MACs per example, while
#    LeNet-300-100 has 267K parameters and 266K MACs. Explain the difference in ratio.
# 3. Save a *trained* `seed_mlp` and compare its `.keras` and gzip sizes. Does training change
#    how well gzip compresses the weights? Why?
#
# :::{admonition} Solution 1
# :class: dropdown
# Parameters $784 \cdot 300 + 300 = 235{,}500$; MACs $784 \cdot 300 = 235{,}200$; bytes
# $4 \cdot 235{,}500 = 942{,}000$.
# ```python
# inp = keras.Input((784,)); m = keras.Model(inp, keras.layers.Dense(300)(inp))
# assert cnl.metrics.count_params(m) == 235_500 and cnl.metrics.flops(m) == 235_200
# ```
# :::
#
# :::{admonition} Solution 2
# :class: dropdown
# A Dense weight is used once per example; a convolution weight is used at every output
# position. conv1 of LeNet-5 has only 520 weights but applies them at $24 \times 24$ positions
# (288,000 MACs), conv2 25,050 weights at $8 \times 8$ positions (1.6M MACs). So the
# convolutional layers dominate the compute and the fully connected layers dominate the
# parameters: pruning the FC layers shrinks the file, pruning the convolutions saves time.
# :::
#
# :::{admonition} Solution 3
# :class: dropdown
# ```python
# m = cnl.models.train(cnl.models.seed_mlp(), digits, epochs=5)
# print(cnl.metrics.model_bytes(m))
# ```
# For this small model gzip does shrink the file by almost half (0.55 for the untrained
# `seed_mlp` in the table above; the hidden cell below measures the trained one), but not
# because of its weights: a little under half of its `.keras` file is the architecture's JSON
# and the HDF5 container's metadata, text that gzip compresses well. The weights alone, the
# raw float32 bytes, shrink by under 15 %, trained or not (the cell measures both): trained
# weights are still float32 numbers whose low mantissa bits are essentially random, so a
# general-purpose compressor finds little redundancy, and on the larger networks, where the
# weights are nearly all of the file, the file ratio is close to one too. Only the zeros that
# pruning creates, or the few distinct values that quantization and weight sharing leave,
# give an entropy coder something to remove.
# :::

# %% tags=["hide-cell", "nbval-ignore-output"]
import gzip

keras.utils.set_random_seed(0)
trained = cnl.models.train(cnl.models.seed_mlp(), digits, epochs=5)
ratios = {}
for name, m in [("initial", built["seed_mlp (digits)"]), ("trained", trained)]:
    size = cnl.metrics.model_bytes(m)
    raw = b"".join(np.asarray(w, np.float32).tobytes() for w in m.get_weights())
    ratios[name] = {"gzip / .keras file": size.gzip / size.keras,
                    "gzip / raw weights": len(gzip.compress(raw, 9)) / len(raw)}
pd.DataFrame(ratios).T.round(3)

# %% tags=["hide-cell"]
for r in ratios.values():
    assert r["gzip / .keras file"] < 0.75  # its text and metadata compress
    assert r["gzip / raw weights"] > 0.85  # the weights barely do
assert abs(ratios["trained"]["gzip / raw weights"]
           - ratios["initial"]["gzip / raw weights"]) < 0.05
