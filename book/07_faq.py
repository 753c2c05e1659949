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
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

import compressnet_lite as cnl
from compressnet_lite.notebook import setup

setup()
digits = cnl.data.load_digits()
keras.utils.set_random_seed(0)
mlp = cnl.models.train(cnl.models.seed_mlp(), digits, epochs=10)  # the article's Net: 64-32-10
base_acc = cnl.metrics.accuracy(mlp, digits.x_test, digits.y_test)
print(f"the article's MLP on the digits: test accuracy {base_acc:.3f}")
assert base_acc > 0.9

# %% [markdown]
# ## The article's four questions
#
# **Q: What is the difference between structure optimisation and weight optimisation?
# (网络结构优化与权重优化的区别是什么？)**
#
# Structure optimisation changes the architecture: fewer neurons, filters or layers
# (structured pruning, neuron merging, low-rank factorization, or a smaller student trained
# by distillation), so the dense computation itself shrinks. Weight optimisation keeps the
# architecture and changes how the weights are *stored*: zeros (unstructured pruning),
# low-bit codes (quantization), a shared codebook (weight sharing), entropy coding. The
# article files unstructured pruning under structure and lists distillation twice, once in
# each family; it is one method, and it trains a new architecture
# ({doc}`02_concepts`, {doc}`03_3_distillation`).
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

# %%
pruned = cnl.pruning.strip(cnl.pruning.prune(mlp, 0.9))
dense_file, pruned_file = cnl.metrics.model_bytes(mlp), cnl.metrics.model_bytes(pruned)
stored = cnl.storage.compressed_size(pruned)
print(f"sparsity {cnl.metrics.sparsity(pruned):.1%}")
print(f".keras file: dense {dense_file.keras / 1024:.0f} KiB, pruned {pruned_file.keras / 1024:.0f} KiB")
print(f"cnl.storage (sparse positions + values): pruned {stored.total / 1024:.1f} KiB, "
      f"{stored.ratio:.1f}x smaller than float32")
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

# %% tags=["nbval-ignore-output"]
x_batch = digits.x_test[:256]
rounds = {"dense": [], "pruned": []}
for _ in range(3):  # interleaved rounds, best median of each: a busy machine slows both alike
    rounds["dense"].append(cnl.metrics.latency(mlp, x_batch, runs=30))
    rounds["pruned"].append(cnl.metrics.latency(pruned, x_batch, runs=30))
lat_dense, lat_pruned = (min(rounds[k], key=lambda lat: lat.median) for k in ("dense", "pruned"))
print(f"dense  {lat_dense}\npruned {lat_pruned}")
print(f"FLOPs counted on the non-zeros: {cnl.metrics.flops(pruned, nonzero_only=True):,} "
      f"of {cnl.metrics.flops(mlp):,}")
assert lat_pruned.median > 0.5 * lat_dense.median  # not even 2x faster, with 10x fewer non-zeros

# %% [markdown]
# The FLOPs "saved" exist only on paper. Speed comes from fewer neurons or filters
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
acc_round = cnl.metrics.accuracy(rounded, digits.x_test, digits.y_test)
acc_int8 = cnl.metrics.accuracy(int8, digits.x_test, digits.y_test)
print(f"kernel weights that round(W) sets to 0: {np.mean(np.round(kernels) == 0):.1%}")
print(f"accuracy: float {base_acc:.3f}, round(W) {acc_round:.3f}, 8-bit with a scale {acc_int8:.3f}")
assert np.mean(np.round(kernels) == 0) > 0.9
assert acc_round < base_acc - 0.2
assert acc_int8 >= base_acc - 0.01

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
for T in (1, 4, 20):
    print(f"T={T:>2}: {np.round(cnl.distillation.soften(logits, T)[0], 3)}")
assert cnl.distillation.soften(logits, 20)[0, 1] > cnl.distillation.soften(logits, 1)[0, 1]

# %% [markdown]
# At $T = 1$ the runner-up classes are invisible; at $T = 20$ nearly uniform. The student
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
    return any(isinstance(node, (ast.Import, ast.ImportFrom)) and "tensorflow" in ast.unparse(node)
               for node in ast.walk(tree))


modules = [cnl.pruning, cnl.quantization, cnl.tflite, cnl.distillation, cnl.metrics, cnl.storage,
           cnl.pipeline, cnl.clustering, cnl.merging, cnl.lowrank, cnl.surgery]
tf_bound = sorted(f"{m.__name__.split('.')[-1]}.{name}" for m in modules
                  for name, fn in vars(m).items()
                  if (inspect.isfunction(fn) or inspect.isclass(fn)) and fn.__module__ == m.__name__
                  and imports_tensorflow(fn))
print("public functions and classes that import TensorFlow:")
print([name for name in tf_bound if not name.split(".")[1].startswith("_")])
assert "tflite.to_tflite" in tf_bound
assert not any(n.startswith(("pruning.", "metrics.")) for n in tf_bound), tf_bound

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
    run = subprocess.run([sys.executable, "-m", "compressnet_lite", *args], capture_output=True, text=True)
    return run.returncode, run.stdout


code, out = cli("--help")
print(out)
assert code == 0 and "compress" in out

# %% [markdown]
# Here on the article's MLP: prune 50% of every layer, then 4-bit codes, two epochs of
# fine-tuning after each step on the digits (`--data npz:PATH` takes your own arrays
# `x_train, y_train, x_test, y_test`; `mnist:PATH` a Keras `mnist.npz`):

# %% tags=["nbval-ignore-output"]
work = Path(tempfile.mkdtemp())
cnl.models.clone(mlp).save(work / "mlp.keras")
code, out = cli("compress", str(work / "mlp.keras"), "--prune", "0.5", "--quantize", "4",
                "--fine-tune-epochs", "2", "--data", "digits", "-o", str(work / "mlp.cnl"))
print(out)
assert code == 0

# %% [markdown]
# The table's figures vary a little from machine to machine (fine-tuning), so they are not
# checked here; what the file holds is. Loaded back in Python, it is a plain Keras model:

# %%
small = cnl.storage.load_compressed(work / "mlp.cnl")
cnl_bytes, keras_bytes = (work / "mlp.cnl").stat().st_size, (work / "mlp.keras").stat().st_size
small_acc = cnl.metrics.accuracy(small, digits.x_test, digits.y_test)
print(f"sparsity {cnl.metrics.sparsity(small):.0%}; file {keras_bytes / cnl_bytes:.0f}x smaller than the .keras; "
      f"accuracy within 2 points of {base_acc:.3f}: {small_acc >= base_acc - 0.02}")
assert small_acc >= base_acc - 0.02
assert cnl_bytes < 0.2 * keras_bytes

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
# report = cnl.storage.save_compressed(pruned, "pruned.cnl")
# print(report.total, cnl.metrics.model_bytes(pruned).gzip, report.float32_bytes)
# ```
# gzip finds the long runs of zero bytes and shrinks the file, but it does not know that the
# data are float32 weights; the sparse format stores only the survivors and their positions,
# and codes both compactly (compare the printed sizes). Ship the format your runtime can load: a
# `.cnl` file is decoded back to a Keras model by `cnl.storage.load_compressed`.
# :::
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
