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
# # Code examples (具体代码实例, article section 4)
#
# The article closes its method sections with four code snippets: pruning (4.1.1), "network
# compression" (4.1.2), weight quantization (4.2.1) and knowledge distillation (4.2.2). This
# chapter runs each one exactly as printed, on the bundled 8x8 digits, and shows what happens:
# one prunes nothing and then crashes, two do not run at all, and the quantization rule, once it
# is made to run, leaves a network at chance level. For each snippet we then list what is wrong,
# give corrected code that is short enough to copy (with the library, and the key lines again in
# plain Keras/NumPy for readers who do not want a dependency), and measure the result:
# accuracy, parameters, bytes and latency, before and after, each claim checked by an `assert`.
#
# The algorithms themselves are explained in {doc}`03_1_pruning`,
# {doc}`03_2_network_compression`, {doc}`03_3_distillation` and {doc}`03_4_quantization`; this
# chapter is about the code.

# %%
import time

import keras
import numpy as np  # the article uses np everywhere, never imports it
import pandas as pd
import tensorflow as tf

import matplotlib.pyplot as plt
from myst_nb import glue

import compressnet_lite as cnl
from compressnet_lite import stats
from compressnet_lite.notebook import (brief, latency_ratio, report, setup,
                                       time_rounds)

setup()

digits = cnl.data.load()      # $CNL_DATA, else the bundled digits
x_train, y_train, x_test, y_test = digits  # the article's names
n_in = digits.input_shape[0]
steps_per_epoch = int(np.ceil(len(x_train) / 32))
print(f"train {x_train.shape}, test {x_test.shape}, "
      f"classes {digits.num_classes}")


def guarded(fn):
    """Run one of the article's snippets; print the exception, don't stop."""
    try:
        fn()
        print("ran without an exception")
        return None
    except Exception as exc:  # noqa: BLE001 - show whatever it raises
        text = str(exc).strip()
        first_line = text.splitlines()[0] if text else ""
        print(f"{type(exc).__name__}: {first_line[:160]}")
        return exc


def test_acc(model):
    return cnl.metrics.accuracy(model, x_test, y_test)


def correct(model):
    """Which test images `model` classifies correctly."""
    scores = model.predict(x_test, batch_size=256, verbose=0)
    return np.argmax(scores, axis=-1) == y_test


def measure(model, name):
    """One row of the results tables: accuracy, parameters, bytes, MACs."""
    plain = cnl.storage.plain_model(model)
    right = correct(plain)
    RIGHT[name] = right
    return {"model": name,
            "accuracy": round(float(right.mean()), 3),
            "params": cnl.metrics.count_params(plain),
            "nonzero": cnl.metrics.count_nonzero(plain),
            "compressed bytes": cnl.storage.compressed_size(plain).total,
            "dense MACs": cnl.metrics.flops(plain)}


RIGHT = {}   # model name -> its per-image correctness on the test set


def vs(a, b):
    """Exact McNemar test of two measured models on the same test images."""
    return stats.mcnemar(RIGHT[a], RIGHT[b], names=(a, b))


def speed(models, reference):
    """Latency of each model against `reference`, batch of 256, 15 rounds."""
    plain = {k: cnl.storage.plain_model(m) for k, m in models.items()}
    times = time_rounds(plain, x_test[:256], rounds=15, runs=10)
    return {k: latency_ratio(times[k], times[reference],
                             names=(k, reference))
            for k in plain if k != reference}


# %% [markdown]
# `guarded` runs a snippet and prints the exception's type and first line instead of stopping;
# `measure` collects the figures every section reports, with bytes measured by encoding the
# model in the compressed format of `compressnet_lite.storage` (sparse positions, integer
# codes, Huffman coding: whatever is cheapest for each array), never computed on paper. Two
# trained models are compared on the same test images by the exact McNemar test (`vs`,
# `cnl.stats.mcnemar`), and latencies by 15 interleaved rounds and the geometric mean of the
# per-round ratio with its 95% interval (`speed`, `cnl.notebook.latency_ratio`): one run of
# either says little on 450 test images and a shared machine.
#
# ## The article's model, trained as printed
#
# All four snippets start from the same network, written as a subclassed `tf.keras.Model`.
# This part runs. (`tf.keras` is Keras 3 in TensorFlow 2.21; `compile` is called with keyword
# arguments, which is right: a positional `compile("adam", loss, ["accuracy"])` would pass the
# metrics as `loss_weights` in Keras 3. And a softmax output with `sparse_categorical_crossentropy`,
# whose default is `from_logits=False`, is a consistent pair.) The article trains without a
# seed and never evaluates on held-out data; we seed it and evaluate on the test split.

# %%
class Net(tf.keras.Model):
    def __init__(self):
        super(Net, self).__init__()
        self.dense1 = tf.keras.layers.Dense(64, activation='relu')
        self.dense2 = tf.keras.layers.Dense(32, activation='relu')
        self.dense3 = tf.keras.layers.Dense(10, activation='softmax')

    def call(self, x):
        x = self.dense1(x)
        x = self.dense2(x)
        x = self.dense3(x)
        return x


keras.utils.set_random_seed(0)
model = Net()
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy',
              metrics=['accuracy'])
model.fit(x_train, y_train, epochs=10, verbose=0)
net_acc = cnl.metrics.accuracy(model, x_test, y_test)
print(f"the article's Net: {model.count_params():,} parameters")

# %% tags=["nbval-ignore-output"]
print(f"the article's Net: test accuracy {net_acc:.3f}")
assert net_acc > 0.9

# %% [markdown]
# The three structure and weight snippets below all train this same network for 10 epochs; we
# train it once and run each snippet on it.
#
# ## 4.1.1 Pruning
#
# ### The snippet as printed
#
# The article scores every array of `get_weights()` by the sum of its absolute values and sets
# `trainable = False` on the layers below a threshold of 10. We count the zero weights before
# and after and compare every array.

# %%
before = [w.copy() for w in model.get_weights()]
zeros_before = sum(int(np.sum(w == 0)) for w in before)


def article_pruning():
    # 计算每个神经元的权重绝对值
    weights = model.get_weights()
    abs_values = [np.abs(weight).sum() for weight in weights]
    print("abs_values:", [round(float(v), 1) for v in abs_values])

    # 删除不重要的神经元和连接
    threshold = 10
    for i, abs_value in enumerate(abs_values):
        if abs_value < threshold:
            print(f"  i={i}: freezing model.layers[{i}]")
            model.layers[i].trainable = False


pruning_error = guarded(article_pruning)
after = model.get_weights()
zeros_after = sum(int(np.sum(w == 0)) for w in after)
unchanged = all(np.array_equal(a, b) for a, b in zip(before, after))
print(f"zero weights: {zeros_before} before, {zeros_after} after; "
      f"every array unchanged: {unchanged}")
print("trainable flags:",
      {layer.name: layer.trainable for layer in model.layers})
assert isinstance(pruning_error, IndexError)
assert zeros_after == zeros_before and unchanged
assert cnl.metrics.accuracy(model, x_test, y_test) == net_acc
for layer in model.layers:  # undo the snippet's side effect
    layer.trainable = True

# %% [markdown]
# The snippet prunes nothing: not one weight became zero, and the accuracy is exactly what it
# was. Its loop froze `dense_1` (the *second* layer, because the *bias* of the first layer sums
# to less than 10) and then crashed with an `IndexError`.
#
# ### What is wrong
#
# 1. `get_weights()` returns six arrays (a kernel and a bias per layer) but the loop uses the
#    same index `i` on `model.layers`, which has three entries: array 1 (the first layer's bias)
#    freezes layer 1 (the second layer), and array 3 raises `IndexError`.
# 2. One sum per array scores whole arrays, not connections or neurons. The article's own rule,
#    $|W_{ij}| < \tau$, is per *weight*; removing a *neuron* needs one norm per unit (a column
#    of the kernel), $\lVert W_{:,j} \rVert_1$.
# 3. The absolute threshold 10 compares sums of arrays of very different sizes: every bias is
#    below it, no kernel is. A threshold has to be set per weight, usually from a target
#    sparsity (a quantile of $|W|$).
# 4. `layer.trainable = False` changes no weight. It only stops later training from updating
#    the layer. Nothing is removed: the model is as large and as slow as before.
# 5. There is no fine-tuning, and nothing that would keep pruned weights at zero during it
#    (gradient updates, and Adam's momentum, would revive them).
# 6. Even correct unstructured pruning does not make the file smaller (a zero in a dense float32
#    array costs 4 bytes like any other value) or the model faster (dense kernels multiply by
#    zeros too). Bytes fall with a sparse format; speed comes from removing whole neurons.
# 7. The library cannot read a subclassed model's graph (it has no symbolic inputs and
#    outputs), so the corrected code uses the same network written as a functional model,
#    `cnl.models.seed_mlp()`.
#
# ### Corrected code
#
# Magnitude pruning of 80% of each kernel, raised gradually over the first epochs (Zhu & Gupta's
# schedule {cite}`zhu2017prune`) while the masks are kept inside the compiled train step; and,
# for a model that is really smaller, removal of half the neurons of each hidden layer by the
# L1 norm of their incoming weights {cite}`li2017pruning`, followed by fine-tuning:

# %%
keras.utils.set_random_seed(0)
base = cnl.models.train(cnl.models.seed_mlp(n_in), digits, epochs=10)

# unstructured: 80% of every kernel, gradual, masks kept while training
pruned = cnl.pruning.prune(base, sparsity=0.0)        # adds the masks
schedule = cnl.pruning.PolynomialDecay(0.0, 0.8, begin=0,
                                       end=4 * steps_per_epoch, frequency=20)
pruned = cnl.models.train(pruned, digits, epochs=8,
                          callbacks=[cnl.pruning.PruningCallback(schedule)])
pruned = cnl.pruning.strip(pruned)        # plain Dense layers with zeros

# structured: half the units of fc1 and fc2 removed, then fine-tuned
smaller = cnl.pruning.prune_neurons(base, fraction=0.5, criterion="l1")
smaller = cnl.models.train(smaller, digits, epochs=5)

# %% [markdown]
# The same two ideas without the library. Unstructured: a mask per kernel from a quantile of
# $|W|$, re-applied after every training batch. Structured: keep the columns of the kernel with
# the largest L1 norm and the matching rows of the next kernel, in a new, narrower model.

# %%
keras.utils.set_random_seed(0)
plain = keras.models.clone_model(base)
plain.set_weights(base.get_weights())
masks = {}
for layer in plain.layers:
    if isinstance(layer, keras.layers.Dense):
        w = layer.kernel.numpy()
        masks[layer.name] = (np.abs(w) > np.quantile(np.abs(w), 0.8)
                             ).astype("float32")
        layer.kernel.assign(w * masks[layer.name])


class KeepMasks(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        for name, mask in masks.items():
            kernel = self.model.get_layer(name).kernel
            kernel.assign(kernel * mask)


plain.compile(optimizer="adam",
              loss=keras.losses.SparseCategoricalCrossentropy(),
              metrics=["accuracy"])
plain.fit(x_train, y_train, epochs=8, verbose=0, callbacks=[KeepMasks()])

# structured, by hand: keep the 32 strongest of fc1's 64 units
w1, b1 = base.get_layer("fc1").get_weights()
w2, b2 = base.get_layer("fc2").get_weights()
keep = np.sort(np.argsort(np.abs(w1).sum(axis=0))[-32:])
narrow = keras.Sequential([keras.Input((n_in,)),
                           keras.layers.Dense(32, activation="relu"),
                           keras.layers.Dense(32, activation="relu"),
                           keras.layers.Dense(10, activation="softmax")])
narrow.set_weights([w1[:, keep], b1[keep], w2[keep, :], b2,
                    *base.get_layer("out").get_weights()])
print(f"plain-Keras magnitude pruning: sparsity "
      f"{cnl.metrics.sparsity(plain):.3f}")
assert cnl.metrics.sparsity(plain) > 0.79

# %% tags=["nbval-ignore-output"]
print(f"plain-Keras pruning: accuracy {test_acc(plain):.3f}; fc1 halved "
      f"by hand, before fine-tuning: {test_acc(narrow):.3f}")

# %% [markdown]
# ### Measured

# %% tags=["nbval-ignore-output"]
DENSE = "dense (seed_mlp)"
rows = [measure(base, DENSE), measure(pruned, "80% of weights pruned"),
        measure(smaller, "50% of neurons removed")]
table = pd.DataFrame(rows).set_index("model")
table

# %% tags=["nbval-ignore-output"]
base_r, pruned_r, small_r = rows
assert pruned_r["nonzero"] < 0.25 * base_r["nonzero"]
assert pruned_r["compressed bytes"] < 0.5 * base_r["compressed bytes"]
assert pruned_r["dense MACs"] == base_r["dense MACs"]   # same dense work
assert small_r["params"] < 0.5 * base_r["params"]
assert small_r["dense MACs"] < 0.5 * base_r["dense MACs"]
prune_cost = vs("80% of weights pruned", DENSE)
small_cost = vs("50% of neurons removed", DENSE)
report(prune_cost, small_cost)
assert prune_cost.difference > -0.05 and small_cost.difference > -0.03
lat = speed({"dense": base, "80% pruned": pruned, "50% removed": smaller},
            "dense")
for r in lat.values():
    report(r)

# %% tags=["remove-cell", "nbval-ignore-output"]
glue("prune_cost", brief(prune_cost), display=False)
glue("small_cost", brief(small_cost), display=False)
glue("prune_speed", brief(lat["80% pruned"]), display=False)
glue("small_speed", brief(lat["50% removed"]), display=False)

# %% [markdown]
# Pruning 80% of the weights of this small network (little redundancy) with the masks kept
# while fine-tuning: {glue:text}`prune_cost`. ({doc}`03_1_pruning` compares one-shot and
# gradual pruning under equal training and finds the schedule matters mainly at extreme
# sparsity.) It shrinks the compressed file several times, but the number of multiply-adds a
# dense kernel performs is unchanged, and the latency measured here is
# {glue:text}`prune_speed`. Removing neurons halves parameters and multiply-adds and gives a
# plain, smaller Keras model: {glue:text}`small_cost`; its latency: {glue:text}`small_speed`.
# On a network this small much of the latency is call overhead; {doc}`05_comparison` measures
# it on a convolutional network, where arithmetic dominates.
#
# ## 4.1.2 Network compression
#
# ### The snippet as printed
#
# The article "merges the weights and activation functions of several neurons" with three
# statements. Each fails on its own, so we run them one by one:

# %%
def merge_weights():
    merged_weights = tf.keras.layers.concatenate(
        [model.layers[0].weights, model.layers[2].weights])


def merge_activations():
    merged_activation = tf.keras.layers.concatenate(
        [model.layers[0].activation, model.layers[2].activation])


def assign_weights():
    # what the last two lines do
    model.layers[0].weights = model.layers[0].weights


merge_errors = [guarded(merge_weights), guarded(merge_activations),
                guarded(assign_weights)]
assert [type(e) for e in merge_errors] == [ValueError, ValueError,
                                           AttributeError]

# %% [markdown]
# ### What is wrong
#
# 1. `model.layers[0].weights` is a list `[kernel (64, 64), bias (64,)]` and
#    `model.layers[2].weights` is `[kernel (32, 10), bias (10,)]`. `concatenate` is a layer
#    that joins *tensors* along an axis in a model graph; joining two lists of variables of
#    unrelated shapes from the first and the last layer has no meaning.
# 2. An activation is a function (`relu`, `softmax`); functions cannot be concatenated.
# 3. `layer.weights` is a read-only property; a layer's values are set with `set_weights`,
#    and only in the shapes the layer already has.
# 4. Conceptually, merging happens *inside* one layer: two neurons whose incoming weights (and
#    bias) are (nearly) equal compute the same activation, so one is deleted and its
#    *outgoing* weights are added to the other's, $a_i \leftarrow a_i + a_j$
#    {cite}`srinivas2015datafree`. The article's $\tilde A = f(\sum_i A_i)$ sums incoming weights,
#    which changes what the network computes.
# 5. Removing a neuron changes the shape of two kernels (its layer's columns and the next
#    layer's rows), so the model has to be rebuilt; it cannot be patched in place.
#
# ### Corrected code
#
# `merge_neurons` pairs the most similar neurons of each hidden layer (with ReLU, a positive
# multiple $w_j = c\,w_i$ merges exactly too) and folds their outgoing weights:

# %%
merged = cnl.merging.merge_neurons(base, ratio=0.5)   # halves fc1 and fc2
merged_acc0 = cnl.metrics.accuracy(merged, x_test, y_test)
merged = cnl.models.train(merged, digits, epochs=5)
print(f"units: fc1 {merged.get_layer('fc1').units}, "
      f"fc2 {merged.get_layer('fc2').units}")

# %% tags=["nbval-ignore-output"]
print(f"accuracy right after merging {merged_acc0:.3f}, after 5 epochs "
      f"{cnl.metrics.accuracy(merged, x_test, y_test):.3f}")

# %% [markdown]
# When two neurons really are copies, merging is exact. We append a copy of unit 0 of `fc1` to
# a network (unit 64, with half of unit 0's outgoing weights moved to it, so the network
# computes the same function) and merge it back: once with the library, once with the NumPy
# lines a reader can paste anywhere (find the closest pair of incoming weight vectors, add
# outgoing rows, delete).

# %%
w1, b1 = base.get_layer("fc1").get_weights()
w2, b2 = base.get_layer("fc2").get_weights()
w1x, b1x = np.hstack([w1, w1[:, :1]]), np.append(b1, b1[0])
w2x = np.vstack([w2, 0.5 * w2[:1]])
w2x[0] *= 0.5
wide = cnl.models.mlp(n_in, (65, 32))
wide.set_weights([w1x, b1x, w2x, b2, *base.get_layer("out").get_weights()])

lib_merged = cnl.merging.merge_neurons(wide, "fc1", ratio=1 / 65)

# the same in NumPy: closest pair of units by their incoming weights and bias
units = np.vstack([w1x, b1x]).T                     # one row per unit
dist = np.linalg.norm(units[:, None] - units[None], axis=-1)
dist += np.diag(np.full(len(units), np.inf))
i, j = np.unravel_index(np.argmin(dist), dist.shape)
w2m = w2x.copy()
w2m[i] += w2m[j]                                    # a_i <- a_i + a_j
keep = np.delete(np.arange(len(units)), j)
np_merged = cnl.models.mlp(n_in, (64, 32))
np_merged.set_weights([w1x[:, keep], b1x[keep], w2m[keep], b2,
                       *base.get_layer("out").get_weights()])

ref = base.predict(x_test, verbose=0)
for name, m in [("library", lib_merged), ("NumPy", np_merged)]:
    err = np.abs(m.predict(x_test, verbose=0) - ref).max()
    print(f"{name}: merged units ({min(i, j)}, {max(i, j)}); "
          f"max |output difference| < 1e-5: {err < 1e-5}")
    assert err < 1e-5

# %% [markdown]
# ### Measured

# %% tags=["nbval-ignore-output"]
merge_rows = [base_r, measure(merged, "50% of neurons merged")]
pd.DataFrame(merge_rows).set_index("model")

# %% tags=["nbval-ignore-output"]
assert merge_rows[1]["params"] < 0.5 * base_r["params"]
merge_cost = vs("50% of neurons merged", DENSE)
report(merge_cost)
assert merge_cost.difference > -0.03

# %% [markdown]
# ## 4.2.1 Weight quantization
#
# ### The snippet as printed

# %%
def article_quantization():
    # 对每个权重值进行舍入
    quantized_weights = np.round(model.get_weights()).astype(np.float32)
    # 更新模型权重
    model.set_weights(quantized_weights)


quant_error = guarded(article_quantization)
assert isinstance(quant_error, ValueError)

# %% [markdown]
# `get_weights()` is a list of six arrays of different shapes; NumPy cannot turn it into one
# array. Rounding each array on its own runs, and shows what the rule does to the network:

# %%
rounded = Net()             # a second instance of the article's Net
rounded(x_test[:1])         # builds it
rounded.set_weights([np.round(w).astype(np.float32)
                     for w in model.get_weights()])
kernels = [w for w in model.get_weights() if w.ndim == 2]
zero_share = np.mean(np.concatenate([np.round(k).ravel()
                                     for k in kernels]) == 0)
round_acc = cnl.metrics.accuracy(rounded, x_test, y_test)

# %% tags=["nbval-ignore-output"]
print(f"round(W): {zero_share:.1%} of the kernel weights become 0; "
      f"accuracy {net_acc:.3f} -> {round_acc:.3f} (chance: 0.100)")
assert zero_share > 0.9 and round_acc < 0.3

# %% [markdown]
# ### What is wrong
#
# 1. `np.round` on a ragged list of arrays raises `ValueError`; it has to be applied per array.
# 2. Rounding to integers is quantization with a step of 1. The weights of a trained network are
#    far smaller (here almost all in $(-1, 1)$), so nearly every weight becomes 0 and the network
#    predicts one class. Quantization needs a **scale** $S$ fitted to the weights, and for an
#    asymmetric range a **zero point** $Z$: $q = \operatorname{clip}(\operatorname{round}(w/S) + Z)$,
#    $\hat w = S(q - Z)$ {cite}`jacob2018quantization`.
# 3. `.astype(np.float32)` stores the rounded values as 32-bit floats again: nothing is saved.
#    The point is to store the integer codes (8 bits or fewer) and one scale per tensor or per
#    output channel.
# 4. Biases are rounded too; they are few, and are usually kept in higher precision.
# 5. Storing integers does not make Keras faster: a Keras layer computes in float32 with the
#    dequantized weights. Speed needs integer kernels (TensorFlow Lite int8, see
#    {doc}`03_4_quantization` and {doc}`05_comparison`).
#
# ### Corrected code

# %% tags=["nbval-ignore-output"]
q8 = cnl.quantization.quantize_model(base, bits=8)  # per-channel, symmetric
q4 = cnl.quantization.quantize_model(base, bits=4)
print(cnl.quantization.quantization_report(q8, x_test, y_test))
print(cnl.quantization.quantization_report(q4, x_test, y_test))

# %% [markdown]
# The key lines without the library: one scale per output channel (column), integer codes in
# `int8`, and the dequantized kernel for a float model:

# %%
plain_q = keras.models.clone_model(base)
weights = []
for w in base.get_weights():
    if w.ndim == 2:                     # kernels only; biases stay float
        scale = np.abs(w).max(axis=0) / 127       # one scale per output
        codes = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        w = codes.astype(np.float32) * scale      # what the float model uses
    weights.append(w)                             # (codes: what you store)
plain_q.set_weights(weights)
library_q8 = cnl.storage.plain_model(q8).get_weights()
same = all(np.array_equal(a, b)
           for a, b in zip(plain_q.get_weights(), library_q8))
print(f"plain NumPy int8: identical weights to the library's: {same}")
assert same

# %% [markdown]
# ### Measured

# %% tags=["nbval-ignore-output"]
rounded_f = cnl.models.clone(base)  # round(W) on the functional Net
rounded_f.set_weights([np.round(w) for w in base.get_weights()])
quant_rows = [base_r, measure(rounded_f, "round(W) per array"),
              measure(q8, "int8 per channel"),
              measure(q4, "4 bit per channel")]
pd.DataFrame(quant_rows).set_index("model")

# %% tags=["nbval-ignore-output"]
_, round_r, q8_r, q4_r = quant_rows
assert round_r["accuracy"] < 0.3
assert q8_r["compressed bytes"] < 0.4 * base_r["compressed bytes"]
assert q4_r["compressed bytes"] < q8_r["compressed bytes"]
q8_cost = vs("int8 per channel", DENSE)
q4_cost = vs("4 bit per channel", DENSE)
report(q8_cost, q4_cost)
assert q8_cost.verdict == "indistinguishable here"
assert q4_cost.difference > -0.03
q_speed = speed({"float": base, "int8 weights": q8}, "float")["int8 weights"]
report(q_speed)

# %% tags=["remove-cell", "nbval-ignore-output"]
shrink = base_r["compressed bytes"] / q8_r["compressed bytes"]
glue("q8_shrink", f"{shrink:.1f}", display=False)
glue("q8_cost", brief(q8_cost), display=False)
glue("q_speed", brief(q_speed), display=False)

# %% [markdown]
# The article's rule destroys the network; with a scale per channel, 8 bits keep the accuracy
# ({glue:text}`q8_cost`) and the compressed file is {glue:text}`q8_shrink` times smaller (4
# bits: smaller still), while the number of parameters stays the same. The speed of a float
# Keras model with int8 weights, measured: {glue:text}`q_speed`. Its layers compute in
# float32 with the dequantized kernel, the same float work as the original, so any
# difference comes from the dequantization step and from noise, not from integer
# arithmetic.
#
# ## 4.2.2 Knowledge distillation
#
# ### The snippet as printed

# %%
# 定义原始模型
class OriginalModel(tf.keras.Model):
    def __init__(self):
        super(OriginalModel, self).__init__()
        self.dense1 = tf.keras.layers.Dense(64, activation='relu')
        self.dense2 = tf.keras.layers.Dense(32, activation='relu')
        self.dense3 = tf.keras.layers.Dense(10, activation='softmax')

    def call(self, x):
        x = self.dense1(x)
        x = self.dense2(x)
        x = self.dense3(x)
        return x


# 定义蒸馏模型
class DistillationModel(tf.keras.Model):
    def __init__(self):
        super(DistillationModel, self).__init__()
        self.dense1 = tf.keras.layers.Dense(32, activation='relu')
        self.dense2 = tf.keras.layers.Dense(10, activation='softmax')

    def call(self, x, teacher_output):
        x = self.dense1(x)
        x = self.dense2(x)
        x = tf.reduce_mean(x * teacher_output, axis=1)
        return x


keras.utils.set_random_seed(0)
original_model = OriginalModel()
original_model.compile(optimizer='adam',
                       loss='sparse_categorical_crossentropy',
                       metrics=['accuracy'])
original_model.fit(x_train, y_train, epochs=10, verbose=0)
distillation_model = DistillationModel()
distillation_model.compile(optimizer='adam',
                           loss='sparse_categorical_crossentropy',
                           metrics=['accuracy'])
teacher_probs = original_model.predict(x_train, verbose=0)
kd_error = guarded(lambda: distillation_model.fit(x_train, teacher_probs,
                                                  epochs=10, verbose=0))
assert isinstance(kd_error, TypeError)

# %% [markdown]
# `fit` calls the model with the inputs only, and `call` requires a second argument. Passing
# the teacher's output by hand shows what the student would compute, and what the loss makes of
# it:

# %%
out = distillation_model(x_test[:5], original_model(x_test[:5]))
print(f"student output shape {tuple(out.shape)}")
loss_error = guarded(lambda: keras.losses.sparse_categorical_crossentropy(
    teacher_probs[:5], out))
assert tuple(out.shape) == (5,) and loss_error is not None

# %% tags=["nbval-ignore-output"]
print(f"student outputs: {np.round(out.numpy(), 3)}")

# %% [markdown]
# One number per example (the average of student times teacher probabilities, about 0.01):
# no class scores at all, nothing a loss can compare with the targets, and nothing to predict
# at test time, when there is no teacher output to multiply with.
#
# ### What is wrong
#
# 1. `call(self, x, teacher_output)` needs an argument `fit` never passes: `TypeError`.
# 2. `reduce_mean(student * teacher, axis=1)` turns the student's class probabilities into one
#    number per example. A student must produce its own class scores, and must work alone at
#    inference time.
# 3. The targets are the teacher's probabilities, shape `(n, 10)`, but the loss
#    `sparse_categorical_crossentropy` expects integer labels. Soft targets need a loss between
#    two distributions (cross-entropy or KL divergence).
# 4. There is no temperature. At $T = 1$ a trained teacher's softmax is nearly one-hot, so it
#    says little beyond the label; Hinton et al. soften both with $T > 1$, multiply the soft
#    loss by $T^2$ so its gradients keep their scale, and mix in the ordinary loss on the true
#    labels {cite}`hinton2015distilling`:
#    $\mathcal{L} = \alpha\,\mathrm{CE}(y, \sigma(z_s)) + (1-\alpha)\,T^2\,\mathrm{KL}(\sigma(z_t/T) \,\Vert\, \sigma(z_s/T))$.
# 5. Softening needs the *logits*; a model that ends in a softmax hides them (the library reads
#    them from the graph, `cnl.distillation.logits_model`).
# 6. The article lists "model distillation" (3.1.3) and "knowledge distillation" (3.2.2) as two
#    methods; they are this one algorithm.
#
# ### Corrected code
#
# A teacher (LeNet-300-100) and a student with one hidden layer of 16 units that ends in
# logits. The student trained alone and the distilled student start from the same initial
# weights and train for the same 10 epochs; both are trained with five seeds (the student is
# cheap), so that the comparison is the paired difference over seeds with its interval:

# %%
keras.utils.set_random_seed(0)
teacher = cnl.models.train(cnl.models.lenet_300_100(digits.input_shape),
                           digits, epochs=10)


def student_pair(hidden, seed):
    """The same student (same initial weights) alone and distilled."""
    keras.utils.set_random_seed(seed)
    alone = cnl.models.mlp(n_in, (hidden,), logits=True)
    student = cnl.models.clone(alone)   # same initial weights
    cnl.models.train(alone, digits, epochs=10, learning_rate=1e-2, seed=seed)
    distiller = cnl.distillation.Distiller(student, teacher, temperature=4.0,
                                           alpha=0.1)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    keras.utils.set_random_seed(seed)
    distiller.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    return alone, student     # `fit` trained `student`


SEEDS = range(1, 6)
pairs = {seed: student_pair(16, seed) for seed in SEEDS}
alone, student = pairs[1]     # the pair the tables show

# %% [markdown]
# Closer to the article's plan (train the teacher, save its outputs, fit the student on them)
# is *offline* distillation: compute the softened targets once and fit the student with a
# loss between distributions. Without the library, the key lines are these (here without the
# hard-label term, $\alpha = 0$):

# %%
T = 4.0
teacher_logits = cnl.distillation.logits_model(teacher).predict(x_train,
                                                                verbose=0)
soft_targets = tf.nn.softmax(teacher_logits / T).numpy()  # softened teacher


def soft_target_loss(p_teacher, student_logits):  # T^2 KL(p_t || p_s at T)
    return T**2 * keras.losses.kl_divergence(
        p_teacher, tf.nn.softmax(student_logits / T))


keras.utils.set_random_seed(1)
offline = cnl.models.mlp(n_in, (16,), logits=True)
offline.compile(optimizer=keras.optimizers.Adam(1e-2), loss=soft_target_loss)
history = offline.fit(x_train, soft_targets, epochs=10, batch_size=32,
                      verbose=0)

# %% [markdown]
# ### Measured

# %% tags=["nbval-ignore-output"]
TEACHER, KD = "teacher (LeNet-300-100)", "student distilled (T=4)"
kd_rows = [measure(teacher, TEACHER), measure(alone, "student alone"),
           measure(student, KD),
           measure(offline, "student, offline soft targets")]
pd.DataFrame(kd_rows).set_index("model")

# %% tags=["nbval-ignore-output"]
teacher_r, alone_r, kd_r, offline_r = kd_rows
assert kd_r["params"] < teacher_r["params"] / 40
assert kd_r["compressed bytes"] < teacher_r["compressed bytes"] / 20


def student_accs(pairs):
    return ([test_acc(a) for a, _ in pairs.values()],
            [test_acc(s) for _, s in pairs.values()])



acc_alone, acc_kd = student_accs(pairs)
kd_gain = stats.paired_difference(acc_kd, acc_alone,
                                  names=("distilled", "alone"))
kd_vs_teacher = vs(KD, TEACHER)
report(kd_gain, kd_vs_teacher)
assert kd_vs_teacher.difference > -0.05   # within 5 points of the teacher
assert kd_gain.low > -0.02                # distilling costs nothing
kd_speed = speed({"teacher": teacher, "student": student}, "teacher")
report(kd_speed["student"])

# %% tags=["remove-cell", "nbval-ignore-output"]
glue("kd_share", f"{kd_r['params'] / teacher_r['params']:.1%}", display=False)
glue("kd_gain", brief(kd_gain), display=False)
glue("kd_vs_teacher", brief(kd_vs_teacher), display=False)
glue("kd_speed", brief(kd_speed["student"]), display=False)

# %% [markdown]
# The distilled student has {glue:text}`kd_share` of the teacher's parameters. Against the
# teacher, on the same test images (seed 1): {glue:text}`kd_vs_teacher`. Against the same
# student trained alone from the same initial weights, over five seeds:
# {glue:text}`kd_gain`. On the digits the teacher's soft targets carry little the labels do
# not, so the gain, if any, is small: distillation pays most when the student is small
# relative to the task. Latency: {glue:text}`kd_speed`. Where the numbers come from, and how
# temperature and $\alpha$ matter, is in {doc}`03_3_distillation`.
#
# A figure of every model of this chapter, accuracy against bytes on disk:

# %% tags=["hide-input", "nbval-ignore-output"]
all_rows = pd.DataFrame([*rows, merge_rows[1], *quant_rows[1:], *kd_rows])
all_rows = all_rows.drop_duplicates("model").set_index("model")
fig, ax = plt.subplots(figsize=(8, 4.4))
ax.scatter(all_rows["compressed bytes"] / 1000, 100 * all_rows.accuracy, s=40)
for name, r in all_rows.iterrows():
    ax.annotate(name, (r["compressed bytes"] / 1000, 100 * r.accuracy),
                fontsize=9, xytext=(5, 3), textcoords="offset points")
ax.set(xscale="log", xlabel="compressed file (kB, log scale)",
       ylabel="test accuracy (%)",
       title="The corrected snippets: accuracy against bytes")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# | snippet | as printed | corrected (library) | measured on the digits |
# |---|---|---|---|
# | 4.1.1 pruning | freezes the wrong layer, then `IndexError`; prunes nothing | `prune` + `PruningCallback`, `strip`; `prune_neurons` | see the tables above |
# | 4.1.2 network compression | `ValueError` / `AttributeError` | `merge_neurons` | exact on duplicated neurons |
# | 4.2.1 quantization | `ValueError`; per array: accuracy to chance | `quantize_model(bits=8)` | accuracy indistinguishable, {glue:text}`q8_shrink`x fewer bytes |
# | 4.2.2 distillation | `TypeError`; output one number per example | `Distiller(T=4, alpha=0.1)` | student {glue:text}`kd_share` of the teacher's parameters |
#
# ## Exercises
#
# 1. Run the article's pruning loop with the index bug fixed (iterate over
#    `zip(model.layers, ...)` with one score per layer). Which layers are frozen, and how many
#    weights are zero afterwards? What would you change to make it prune?
# 2. Quantize `base` with the NumPy lines above at 4, 3 and 2 bits, once per tensor
#    (`scale = np.abs(w).max() / (2**(b-1) - 1)`) and once per channel. At which bit width does
#    accuracy drop below 90% in each case?
# 3. Distil into a student with 8 hidden units and compare with the student alone. Does the
#    gain grow or shrink as the student gets smaller?
#
# :::{admonition} Solution 1
# :class: dropdown
# ```python
# for layer in model.layers:
#     score = np.abs(layer.kernel.numpy()).sum()
#     layer.trainable = bool(score >= 10)
# ```
# Scored by the sum of its kernel's absolute values, each layer gets
# {glue:text}`ex1_sums`, so with `threshold = 10` {glue:text}`ex1_frozen`. Whatever the
# threshold, every weight keeps its value ({glue:text}`ex1_zeros` zero weights before and
# after), because `trainable = False` only stops updates. To prune, zero the weights: compute
# `mask = np.abs(w) > np.quantile(np.abs(w), s)`, assign `w * mask`, and keep the mask
# applied while fine-tuning (`cnl.pruning.prune`, or the `KeepMasks` callback above).
# :::

# %% tags=["remove-cell", "nbval-ignore-output"]
sums = {layer.name: float(np.abs(layer.kernel.numpy()).sum())
        for layer in model.layers}
frozen = [name for name, v in sums.items() if v < 10]
glue("ex1_sums", ", ".join(f"{k} {v:,.0f}" for k, v in sums.items()),
     display=False)
glue("ex1_frozen", f"the layers frozen are {frozen}" if frozen
     else "no layer is frozen", display=False)
glue("ex1_zeros", f"{zeros_after:,}", display=False)

# %% [markdown]
# :::{admonition} Solution 2
# :class: dropdown
# ```python
# def quantize_kernels(model, bits, per_channel):
#     qmax = 2 ** (bits - 1) - 1
#     ws = []
#     for w in model.get_weights():
#         if w.ndim == 2:
#             s = np.abs(w).max(axis=0 if per_channel else None) / qmax
#             w = np.clip(np.round(w / s), -qmax, qmax) * s
#         ws.append(w.astype(np.float32))
#     m = keras.models.clone_model(model)
#     m.set_weights(ws)
#     return m
#
# for bits in (4, 3, 2):
#     for per_channel in (False, True):
#         m = quantize_kernels(base, bits, per_channel)
#         print(bits, per_channel, cnl.metrics.accuracy(m, x_test, y_test))
# ```
# Test accuracy of `base` (float: {glue:text}`ex2_float`): {glue:text}`ex2_table`.
# Below 90%: {glue:text}`ex2_below`. Per channel degrades later than per tensor, because a
# column of small weights is no longer quantized with the step of the largest column. At 2
# bits the narrow-range grid has three levels $\{-1, 0, 1\}$ times the scale, and most
# weights, being much smaller than the largest in their column, round to 0; without
# quantization-aware training this costs most of the accuracy ({doc}`03_4_quantization`).
# :::

# %% tags=["remove-cell", "nbval-ignore-output"]
def quantize_kernels(model, bits, per_channel):
    qmax = 2 ** (bits - 1) - 1
    ws = []
    for w in model.get_weights():
        if w.ndim == 2:
            s = np.abs(w).max(axis=0 if per_channel else None) / qmax
            w = np.clip(np.round(w / s), -qmax, qmax) * s
        ws.append(w.astype(np.float32))
    m = keras.models.clone_model(model)
    m.set_weights(ws)
    return m


ex2 = {(b, pc): test_acc(quantize_kernels(base, b, pc))
       for b in (4, 3, 2) for pc in (False, True)}
glue("ex2_float", f"{test_acc(base):.3f}", display=False)
glue("ex2_table", "; ".join(
    f"{b} bits per {'channel' if pc else 'tensor'} {a:.3f}"
    for (b, pc), a in ex2.items()), display=False)
below = {pc: max([b for b in (4, 3, 2) if ex2[b, pc] < 0.9], default=None)
         for pc in (False, True)}
glue("ex2_below", ", ".join(
    f"per {'channel' if pc else 'tensor'} " +
    (f"from {b} bits down" if b else "at none of these widths")
    for pc, b in below.items()), display=False)

# %% [markdown]
# :::{admonition} Solution 3
# :class: dropdown
# ```python
# pairs8 = {seed: student_pair(8, seed) for seed in SEEDS}
# acc_alone8, acc_kd8 = student_accs(pairs8)
# gain8 = stats.paired_difference(acc_kd8, acc_alone8)
# ```
# With 8 hidden units, distilled minus alone over five seeds: {glue:text}`ex3_gain8`; with
# 16 (above): {glue:text}`ex3_gain16`. The gain's change from 16 to 8 units, paired by
# seed: {glue:text}`ex3_change`. A smaller student has less capacity to reach the teacher,
# and the soft targets' extra information (which wrong digits look alike) matters more
# relative to the labels; but with very little capacity neither training reaches the teacher.
# Whether the gain grows is decided by the interval, not by one seed.
# :::

# %% tags=["remove-cell", "nbval-ignore-output"]
pairs8 = {seed: student_pair(8, seed) for seed in SEEDS}
acc_alone8, acc_kd8 = student_accs(pairs8)
gain8 = stats.paired_difference(acc_kd8, acc_alone8,
                                names=("distilled", "alone"))
change = stats.paired_difference(np.subtract(acc_kd8, acc_alone8),
                                 np.subtract(acc_kd, acc_alone),
                                 names=("gain at 8", "gain at 16"))
glue("ex3_gain8", brief(gain8), display=False)
glue("ex3_gain16", brief(kd_gain), display=False)
glue("ex3_change", brief(change), display=False)
