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
# # Frequently asked questions (常见问题, article section 7)
#
# The article ends with four questions. Their answers repeat its earlier sections, errors
# included; here they are answered again, shortly, with links to the chapters that measure
# each point. After them come the questions readers of this book ask. Every figure on this
# page comes from a cell below or from the linked chapter.

# %%
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
from myst_nb import glue

import compressnet_lite as cnl
from compressnet_lite import stats
from compressnet_lite.notebook import (latency_ratio, report, setup,
                                       time_rounds)

setup()
digits = cnl.data.load()            # $CNL_DATA, else the bundled digits
keras.utils.set_random_seed(0)
mlp = cnl.models.seed_mlp(digits.input_shape[0], digits.num_classes)
mlp = cnl.models.train(mlp, digits, epochs=10)  # the article's Net


def correct(model):
    """Which test images `model` classifies correctly."""
    scores = model.predict(digits.x_test, verbose=0)
    return np.argmax(scores, axis=-1) == digits.y_test


base_right = correct(mlp)
base_acc = base_right.mean()

# %% tags=["nbval-ignore-output"]
print(f"the article's MLP: {stats.accuracy_interval(base_right)}")
assert base_acc > 0.9

# %% [markdown]
# Single models below are compared on the same test images with the exact McNemar test
# (`cnl.stats.mcnemar`): it counts the images one model gets right and the other wrong,
# which is what a paired comparison of two fixed models can use.

# %% [markdown]
# ## The article's four questions
#
# **Q: What is the difference between structure optimisation and weight optimisation?
# (网络结构优化与权重优化的区别是什么？)**
#
# Structure optimisation changes the network itself: which connections and units exist.
# Pruning (unstructured: connections; structured: whole neurons or filters), neuron merging,
# low-rank factorization, and a smaller student trained by distillation. Weight
# optimisation keeps the network and changes how its weights are *represented*: low-bit
# codes (quantization), a shared codebook (weight sharing), entropy coding. This is the
# article's taxonomy, and the book uses it throughout ({doc}`01_background`,
# {doc}`02_concepts`, {doc}`05_comparison`). One caution: unstructured pruning is structure
# optimisation by what it removes (connections), but not by what it saves: it keeps every
# dense shape, so it saves bytes only in a sparse format and time only with sparse kernels,
# like a storage change; only structured pruning and the other structural methods shrink
# the dense computation. The article also lists distillation twice, once in each family; it
# is one method, and it trains a new architecture ({doc}`03_3_distillation`).
#
# **Q: What are the advantages and disadvantages of each? (优缺点分别是什么？)**
#
# Measured, not asserted, in {doc}`05_comparison`. Three of the article's claims need
# correcting. Compression does not in general "improve generalisation or performance": it
# usually costs some accuracy, which fine-tuning recovers, sometimes slightly exceeding the
# dense model {cite}`han2015learning` ({doc}`03_1_pruning`). Fewer
# parameters do not mean faster inference: only structural changes or low-precision
# *kernels* make it faster (see the questions below). And "weight optimisation may cause
# vanishing or exploding gradients" concerns only training through rounding, i.e. low-bit
# quantization-aware training with the straight-through estimator
# {cite}`bengio2013estimating,courbariaux2015binaryconnect`, not quantization in general
# ({doc}`03_4_quantization`).
#
# **Q: How do I choose a strategy? (如何选择适合的优化策略？)**
#
# By what you need to save, then by measurement on your model ({doc}`05_comparison` has the
# decision guide):
# a smaller *file* comes from pruning, quantization or weight sharing and entropy coding,
# which combine ({doc}`03_5_combining`); *faster* inference on a CPU or GPU from fewer
# neurons or filters (structured pruning, merging, low rank: {doc}`03_2_network_compression`)
# or from integer kernels (int8 TensorFlow Lite: {doc}`03_4_quantization`, {doc}`06_future`);
# a smaller *architecture* with the accuracy of a large one from distillation
# ({doc}`03_3_distillation`). Choose per layer, not uniformly: {doc}`06_future` shows a
# sensitivity-driven choice beating a uniform one at the same budget.
#
# **Q: What are the future research trends? (未来的研究趋势有哪些？)**
#
# The article's five (more efficient algorithms, adaptive optimisation, fusing methods,
# hardware, distillation) are all active; {doc}`06_future` gives the state of the art of each
# with citations and runs three of them.
#
# ## Your questions
#
# ### Why is my pruned model not smaller?
#
# Because a zero stored as a float32 still takes 4 bytes. Pruning 90% of the weights and
# saving with `model.save(...)` writes the same dense arrays:

# %% tags=["nbval-ignore-output"]
pruned = cnl.pruning.strip(cnl.pruning.prune(mlp, 0.9))
dense_file = cnl.metrics.model_bytes(mlp)
pruned_file = cnl.metrics.model_bytes(pruned)
stored = cnl.storage.compressed_size(pruned)
print(f"sparsity {cnl.metrics.sparsity(pruned):.1%}")
print(f".keras file: dense {dense_file.keras / 1024:.0f} KiB, "
      f"pruned {pruned_file.keras / 1024:.0f} KiB")
print(f"cnl.storage (sparse positions + values): pruned "
      f"{stored.total / 1024:.1f} KiB, {stored.ratio:.1f}x less than float32")
assert abs(pruned_file.keras - dense_file.keras) < 0.02 * dense_file.keras
assert stored.ratio > 3

# %% [markdown]
# Only a sparse format (the positions of the survivors plus their values) turns zeros into
# saved bytes; gzip recovers part of it. The file of `cnl.storage.save_compressed` stores
# relative indices and Huffman-coded integer streams ({doc}`03_5_combining`). In a small
# model the positions cost as much as the values, so 90% sparsity does not give 10x.
#
# ### Why is my pruned model not faster?
#
# Because the matrix multiply does not look at the values: a dense kernel with 90% zeros
# performs exactly the same multiply-adds.

# %%
macs_dense = cnl.metrics.flops(mlp)
macs_nonzero = cnl.metrics.flops(pruned, nonzero_only=True)
print(f"multiply-accumulates (MACs) per example: dense kernels "
      f"{macs_dense:,}; counted on the non-zeros only {macs_nonzero:,}")

# %% tags=["nbval-ignore-output"]
rounds = time_rounds({"dense": mlp, "pruned": pruned}, digits.x_test[:256],
                     rounds=15, runs=10)
speed = latency_ratio(rounds["pruned"], rounds["dense"],
                      names=("pruned", "dense"))
report(speed)
assert speed.low > 0.5  # not even 2x faster, with 10x fewer non-zeros

# %% [markdown]
# (`cnl.metrics.flops` counts multiply-accumulates: one MAC is a multiplication and an
# addition, two floating-point operations, so "FLOPs" in papers are often twice the MACs;
# see the {doc}`glossary`.) The latency is compared in 15 interleaved rounds, by the
# geometric mean of the per-round ratio with its 95% interval (`cnl.notebook.latency_ratio`).
# The MACs "saved" exist only on paper. Speed comes from fewer neurons or filters
# (`cnl.pruning.prune_neurons`, `cnl.merging.merge_neurons`: {doc}`03_2_network_compression`),
# from kernels that exploit a sparsity pattern (2:4 on recent NVIDIA GPUs
# {cite}`mishra2021accelerating`; very high unstructured sparsity with special kernels
# {cite}`elsen2020fast`), or from integer kernels ({doc}`06_future`, section 4).
# {doc}`05_comparison` measures all of them.
#
# ### Why does `round(W)` destroy accuracy?
#
# Because the weights of a trained network are small: rounding to the nearest *integer*
# turns almost all of them into 0. Quantization needs a scale (and, for asymmetric ranges, a
# zero point): $q = \operatorname{round}(w/S) + Z$ {cite}`jacob2018quantization`.

# %%
weights = mlp.get_weights()
rounded = cnl.models.clone(mlp)
rounded.set_weights([np.round(w) for w in weights])
kernels = np.concatenate([w.ravel() for w in weights if w.ndim == 2])
int8 = cnl.quantization.quantize_model(mlp, bits=8)
zero_share = np.mean(np.round(kernels) == 0)
vs_round = stats.mcnemar(correct(rounded), base_right,
                         names=("round(W)", "float"))
vs_int8 = stats.mcnemar(correct(int8), base_right,
                        names=("8 bit with a scale", "float"))

# %% tags=["nbval-ignore-output"]
print(f"kernel weights that round(W) sets to 0: {zero_share:.1%}")
report(vs_round)
report(vs_int8)
assert zero_share > 0.9
assert vs_round.verdict == "float better" and vs_round.difference < -0.2
assert vs_int8.verdict == "indistinguishable here"

# %% [markdown]
# (The article's literal `np.round(model.get_weights())` does not even run: the list of
# differently shaped arrays is ragged. {doc}`03_4_quantization` runs both.)
#
# ### Which temperature should I use for distillation?
#
# Start at $T = 4$, keep the $T^2$ factor on the soft-target term, give the hard labels a
# small weight, and tune $T$ on validation data. Hinton et al. {cite}`hinton2015distilling`
# found on MNIST that all temperatures above 8 gave similar results for a student with 300 or
# more units per layer, while a much smaller student (30 units) did best with $T$ between
# 2.5 and 4. What $T$ does is visible on one teacher output:

# %%
logits = np.array([[9.0, 4.0, 1.0, 0.0]])
soft = {T: cnl.distillation.soften(logits, T)[0] for T in (1, 4, 20)}
for T, p in soft.items():
    print(f"T={T:>2}: {np.round(p, 3)}")
assert soft[20][1] > soft[4][1] > soft[1][1]

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.6))
width = 0.27
for k, (T, p) in enumerate(soft.items()):
    ax.bar(np.arange(4) + (k - 1) * width, p, width, label=f"T = {T}")
ax.set_xticks(range(4), [f"class {c}\nlogit {z:g}" for c, z in
                         enumerate(logits[0])])
ax.set(ylabel="softmax(z / T)", yscale="log", ylim=(1e-5, 30),
       title="One teacher output at three temperatures")
ax.legend(ncol=3, loc="upper right")
glue("p3_t1", f"{soft[1][3]:.3%}", display=False)
fig.tight_layout()
plt.show()

# %% [markdown]
# At $T = 1$ the runner-up classes are invisible (note the log scale: class 3 gets
# {glue:text}`p3_t1`); at $T = 20$ the four are nearly uniform. The student
# learns from the relative sizes of the small probabilities, so $T$ should make them
# visible without flattening everything. {doc}`03_3_distillation` measures students over
# $T \in \{1, 2, 4, 8, 20\}$ on the digits; also beware Keras'
# `keras.distillation.LogitsDistillation` default loss, which skips the softmax (same chapter).
#
# ### Does this work on Keras 3, `tf_keras`, other backends?
#
# - **Keras 3 on TensorFlow, JAX or PyTorch**: yes; the library's tests run on all three
#   (Keras 3.15, TensorFlow 2.21, JAX and PyTorch on the CPU; `make test-backends`), and
#   {doc}`01_background` runs the same code on each. `import compressnet_lite` keeps the
#   `KERAS_BACKEND` you chose and picks TensorFlow only when you chose none.
# - **`tf_keras` (Keras 2, `TF_USE_LEGACY_KERAS=1`)**: not supported. The library builds
#   and checks Keras 3 objects (`keras.Model`); `tf_keras` is used in this project only in
#   `benchmarks/`, to run the TensorFlow Model Optimization Toolkit for comparison. Rebuild
#   or reload your model with Keras 3 (a `.keras` file, or `model.get_weights()` into the same
#   architecture).
# - **What needs TensorFlow on any backend**: the array math is NumPy and the Keras glue
#   `keras.ops`; the steps that differ per backend (gradients, compiled assignments, the
#   timed forward pass) sit in `compressnet_lite._backend`. These functions import
#   TensorFlow directly:

# %%
import ast
import inspect
import textwrap


def imports_tensorflow(fn):
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return any(isinstance(node, (ast.Import, ast.ImportFrom))
               and "tensorflow" in ast.unparse(node)
               for node in ast.walk(tree))


def defined_here(fn, module):
    return ((inspect.isfunction(fn) or inspect.isclass(fn))
            and fn.__module__ == module.__name__)


modules = [cnl.pruning, cnl.quantization, cnl.tflite, cnl.distillation,
           cnl.metrics, cnl.storage, cnl.pipeline, cnl.clustering,
           cnl.merging, cnl.lowrank, cnl.surgery]
tf_bound = sorted(f"{m.__name__.split('.')[-1]}.{name}" for m in modules
                  for name, fn in vars(m).items()
                  if defined_here(fn, m) and imports_tensorflow(fn))
print("public functions and classes that import TensorFlow:")
print([name for name in tf_bound if not name.split(".")[1].startswith("_")])
assert "tflite.to_tflite" in tf_bound
assert not any(n.startswith(("pruning.", "metrics.")) for n in tf_bound), \
    tf_bound

# %% [markdown]
# TensorFlow Lite export is TensorFlow by nature (on another backend `to_tflite` says so);
# the distillation helpers import TensorFlow only when the backend is TensorFlow (for
# `tf.distribute`) or to recognise a `tf.data.Dataset`. Pruning (gradient and Taylor
# criteria included) and latency timing no longer import it.
#
# ### How do I use this on my own model?
#
# Save it with `model.save("my_model.keras")` and use the command line that comes with the
# package, run as `python -m compressnet_lite` (it calls itself `compressnet-lite` in its
# help):

# %%
def cli(*args):
    run = subprocess.run([sys.executable, "-m", "compressnet_lite", *args],
                         capture_output=True, text=True)
    return run.returncode, run.stdout


code, out = cli("--help")
print(out)
assert code == 0 and "compress" in out

# %% [markdown]
# Here on the article's MLP: prune 50% of every layer, then 4-bit codes, two epochs of
# fine-tuning after each step on the chapter's data (`--data digits` by default; `npz:PATH`
# takes your own arrays `x_train, y_train, x_test, y_test`; `mnist:PATH` a Keras
# `mnist.npz`):

# %% tags=["nbval-ignore-output"]
work = Path(tempfile.mkdtemp())
cnl.models.clone(mlp).save(work / "mlp.keras")
spec = os.environ.get("CNL_DATA") or "digits"   # the chapter's data
code, out = cli("compress", str(work / "mlp.keras"), "--prune", "0.5",
                "--quantize", "4", "--fine-tune-epochs", "2", "--data", spec,
                "--seed", "0", "-o", str(work / "mlp.cnl"))
print(out)
assert code == 0

# %% [markdown]
# The table's figures vary a little from machine to machine (fine-tuning), so they are not
# compared here; what the file holds is. Loaded back in Python, it is a plain Keras model,
# compared with the original on the same test images by McNemar's test (one compression
# run; the comparisons over seeds are in {doc}`03_5_combining`):

# %%
small = cnl.storage.load_compressed(work / "mlp.cnl")
cnl_bytes = (work / "mlp.cnl").stat().st_size
keras_bytes = (work / "mlp.keras").stat().st_size
print(f"sparsity {cnl.metrics.sparsity(small):.0%}; "
      f"file {keras_bytes / cnl_bytes:.0f}x smaller than the .keras")
assert cnl_bytes < 0.2 * keras_bytes

# %% tags=["nbval-ignore-output"]
vs_small = stats.mcnemar(correct(small), base_right,
                         names=("compressed", "original"))
report(vs_small)
assert correct(small).mean() > 0.5  # a working classifier, far above chance

# %% [markdown]
# `python -m compressnet_lite info FILE` shows where the bytes go, `evaluate FILE --data ...`
# its accuracy, `export FILE` a TensorFlow Lite model. In Python, the same chain is
# `cnl.pipeline.compress(model, data, [("prune", 0.8), ("quantize", 4)])`, which returns the
# compressed model and a report of every stage ({doc}`03_5_combining`), and each method is
# one call on any functional or Sequential model with Dense/Conv2D layers: see the chapter
# of that method. Subclassed models are rejected with an error that says so: the library
# rewrites models layer by layer from their configuration.
#
# ## Exercises
#
# 1. Save `pruned` with `cnl.storage.save_compressed` and with `model.save` followed by gzip;
#    compare both with the float32 size. Which one would you ship, and why does gzip help
#    at all?
#
# :::{admonition} Solution
# :class: dropdown
# ```python
# saved = cnl.storage.save_compressed(pruned, "pruned.cnl")
# print(saved.total, cnl.metrics.model_bytes(pruned).gzip, saved.float32_bytes)
# ```
# gzip finds the long runs of zero bytes and shrinks the file, but it does not know that the
# data are float32 weights; the sparse format stores only the survivors and their positions,
# and codes both compactly. Here: {glue:text}`ex1_sizes`. Ship the format your runtime can
# load: a `.cnl` file is decoded back to a Keras model by `cnl.storage.load_compressed`.
# :::

# %% tags=["remove-cell", "nbval-ignore-output"]
saved = cnl.storage.save_compressed(pruned, work / "pruned.cnl")
gz = cnl.metrics.model_bytes(pruned).gzip
glue("ex1_sizes", f"float32 weights {saved.float32_bytes:,} bytes, "
     f".keras + gzip {gz:,} bytes, .cnl {saved.total:,} bytes",
     display=False)
assert saved.total < gz   # the sparse format beats gzip

# %% [markdown]
#
# 2. Run `python -m compressnet_lite compress` on the same model with `--cluster 16` instead
#    of `--quantize 4`. Both store 4-bit indices: why can the two files and accuracies
#    differ?
#
# :::{admonition} Solution
# :class: dropdown
# Quantization puts the 16 levels on a uniform grid (one scale per output channel);
# weight sharing places 16 centroids per layer where the weights are, by k-means, and
# fine-tunes them ({doc}`03_2_network_compression`). The index streams have the same width
# but different distributions, so Huffman coding shrinks them differently; the side
# information differs too (16 floats per layer against one scale per output channel), and
# so does the error each makes on the weights. Run both and compare the tables the command
# prints.
# :::
