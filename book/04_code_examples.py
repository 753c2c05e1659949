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
import numpy as np  # the article uses np in every snippet but never imports it
import pandas as pd
import tensorflow as tf

import compressnet_lite as cnl
from compressnet_lite.notebook import setup, show_source

setup()

digits = cnl.data.load_digits()
x_train, y_train, x_test, y_test = digits  # the names the article's snippets use
print(f"train {x_train.shape}, test {x_test.shape}, classes {digits.num_classes}")


def guarded(fn):
    """Run one of the article's snippets; print the exception instead of stopping the chapter."""
    try:
        fn()
        print("ran without an exception")
        return None
    except Exception as exc:  # noqa: BLE001 - we want to see whatever it raises
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{type(exc).__name__}: {first_line[:160]}")
        return exc


def measure(model, name):
    """One row of the results tables: accuracy, parameters, non-zeros, bytes, FLOPs."""
    plain = cnl.storage.plain_model(model)
    return {"model": name,
            "accuracy": round(cnl.metrics.accuracy(plain, x_test, y_test), 3),
            "params": cnl.metrics.count_params(plain),
            "nonzero": cnl.metrics.count_nonzero(plain),
            "compressed bytes": cnl.storage.compressed_size(plain).total,
            "dense MACs": cnl.metrics.flops(plain)}


def latency_ms(model, runs=50):
    """Median time of one forward pass on a batch of 256 test digits, in milliseconds."""
    return cnl.metrics.latency(cnl.storage.plain_model(model), x_test[:256], runs=runs).median * 1e3


# %% [markdown]
# `guarded` runs a snippet and prints the exception's type and first line instead of stopping;
# `measure` collects the figures every section reports, with bytes measured by encoding the
# model in the compressed format of `compressnet_lite.storage` (sparse positions, integer
# codes, Huffman coding: whatever is cheapest for each array), never computed on paper.
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
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
model.fit(x_train, y_train, epochs=10, verbose=0)
net_acc = cnl.metrics.accuracy(model, x_test, y_test)
print(f"the article's Net: test accuracy {net_acc:.3f}, {model.count_params():,} parameters")
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
print(f"zero weights: {zeros_before} before, {zeros_after} after; every array unchanged: {unchanged}")
print("trainable flags:", {layer.name: layer.trainable for layer in model.layers})
assert isinstance(pruning_error, IndexError)
assert zeros_after == zeros_before and unchanged
assert cnl.metrics.accuracy(model, x_test, y_test) == net_acc
for layer in model.layers:  # undo the snippet's side effect before the next sections
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
base = cnl.models.train(cnl.models.seed_mlp(), digits, epochs=10)

# unstructured: 80% of every kernel, gradual, masks kept while training
pruned = cnl.pruning.prune(base, sparsity=0.0)                    # adds the masks
schedule = cnl.pruning.PolynomialDecay(0.0, 0.8, begin=0, end=4 * 43, frequency=20)
pruned = cnl.models.train(pruned, digits, epochs=8,
                          callbacks=[cnl.pruning.PruningCallback(schedule)])
pruned = cnl.pruning.strip(pruned)                                # plain Dense layers with zeros

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
        masks[layer.name] = (np.abs(w) > np.quantile(np.abs(w), 0.8)).astype("float32")
        layer.kernel.assign(w * masks[layer.name])


class KeepMasks(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        for name, mask in masks.items():
            kernel = self.model.get_layer(name).kernel
            kernel.assign(kernel * mask)


plain.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
              metrics=["accuracy"])
plain.fit(x_train, y_train, epochs=8, verbose=0, callbacks=[KeepMasks()])

# structured, by hand: keep the 32 strongest of fc1's 64 units
w1, b1 = base.get_layer("fc1").get_weights()
w2, b2 = base.get_layer("fc2").get_weights()
keep = np.sort(np.argsort(np.abs(w1).sum(axis=0))[-32:])
narrow = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                           keras.layers.Dense(32, activation="relu"),
                           keras.layers.Dense(10, activation="softmax")])
narrow.set_weights([w1[:, keep], b1[keep], w2[keep, :], b2, *base.get_layer("out").get_weights()])
print(f"plain-Keras magnitude pruning: sparsity {cnl.metrics.sparsity(plain):.3f}, "
      f"accuracy {cnl.metrics.accuracy(plain, x_test, y_test):.3f}; "
      f"fc1 halved by hand, before fine-tuning: {cnl.metrics.accuracy(narrow, x_test, y_test):.3f}")
assert cnl.metrics.sparsity(plain) > 0.79

# %% [markdown]
# ### Measured

# %%
rows = [measure(base, "dense (seed_mlp)"), measure(pruned, "80% of weights pruned"),
        measure(smaller, "50% of neurons removed")]
table = pd.DataFrame(rows).set_index("model")
table

# %%
base_r, pruned_r, small_r = rows
assert pruned_r["nonzero"] < 0.25 * base_r["nonzero"]
assert pruned_r["accuracy"] >= base_r["accuracy"] - 0.05
assert pruned_r["compressed bytes"] < 0.5 * base_r["compressed bytes"]
assert pruned_r["dense MACs"] == base_r["dense MACs"]          # dense kernels do the same work
assert small_r["params"] < 0.5 * base_r["params"] and small_r["dense MACs"] < 0.5 * base_r["dense MACs"]
assert small_r["accuracy"] >= base_r["accuracy"] - 0.02

# %% tags=["nbval-ignore-output"]
for m, name in [(base, "dense"), (pruned, "80% pruned (zeros)"), (smaller, "50% neurons removed")]:
    print(f"{name:>22}: {latency_ms(m):.3f} ms per batch of 256")

# %% [markdown]
# Pruning 80% of the weights of this small network (6,570 parameters, little redundancy) with
# the masks kept while fine-tuning costs a couple of points of accuracy (the plain-Keras
# version, which prunes everything at once and has its own training loop, ends lower on this
# seed; {doc}`03_1_pruning` compares one-shot and gradual pruning under equal training and
# finds the schedule matters mainly at extreme sparsity) and shrinks the
# compressed file several times, but the number of multiply-adds a dense kernel
# performs is unchanged, and so is the latency (within the noise of this tiny model). Removing
# neurons halves parameters and multiply-adds and gives a plain, smaller Keras model. (On a
# network this small the latency is mostly call overhead; {doc}`05_comparison` measures it on a
# convolutional network, where the difference is clear.)
#
# ## 4.1.2 Network compression
#
# ### The snippet as printed
#
# The article "merges the weights and activation functions of several neurons" with three
# statements. Each fails on its own, so we run them one by one:

# %%
def merge_weights():
    merged_weights = tf.keras.layers.concatenate([model.layers[0].weights, model.layers[2].weights])


def merge_activations():
    merged_activation = tf.keras.layers.concatenate([model.layers[0].activation, model.layers[2].activation])


def assign_weights():
    model.layers[0].weights = model.layers[0].weights  # what the last two lines do


merge_errors = [guarded(merge_weights), guarded(merge_activations), guarded(assign_weights)]
assert [type(e) for e in merge_errors] == [ValueError, ValueError, AttributeError]

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
merged = cnl.merging.merge_neurons(base, ratio=0.5)          # fc1 64 -> 32, fc2 32 -> 16 units
merged_acc0 = cnl.metrics.accuracy(merged, x_test, y_test)
merged = cnl.models.train(merged, digits, epochs=5)
print(f"units: fc1 {merged.get_layer('fc1').units}, fc2 {merged.get_layer('fc2').units}; "
      f"accuracy right after merging {merged_acc0:.3f}, after 5 epochs "
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
wide = cnl.models.mlp(64, (65, 32))
wide.set_weights([w1x, b1x, w2x, b2, *base.get_layer("out").get_weights()])

lib_merged = cnl.merging.merge_neurons(wide, "fc1", ratio=1 / 65)

# the same in NumPy: closest pair of units by their incoming weights and bias
units = np.vstack([w1x, b1x]).T                                   # one row per unit
dist = np.linalg.norm(units[:, None] - units[None], axis=-1) + np.diag(np.full(len(units), np.inf))
i, j = np.unravel_index(np.argmin(dist), dist.shape)
w2m = w2x.copy()
w2m[i] += w2m[j]                                                  # a_i <- a_i + a_j
keep = np.delete(np.arange(len(units)), j)
np_merged = cnl.models.mlp(64, (64, 32))
np_merged.set_weights([w1x[:, keep], b1x[keep], w2m[keep], b2, *base.get_layer("out").get_weights()])

ref = base.predict(x_test, verbose=0)
for name, m in [("library", lib_merged), ("NumPy", np_merged)]:
    err = np.abs(m.predict(x_test, verbose=0) - ref).max()
    print(f"{name}: merged units ({min(i, j)}, {max(i, j)}); max |output difference| {err:.1e}")
    assert err < 1e-5

# %% [markdown]
# ### Measured

# %%
merge_rows = [base_r, measure(merged, "50% of neurons merged")]
pd.DataFrame(merge_rows).set_index("model")

# %%
assert merge_rows[1]["params"] < 0.5 * base_r["params"]
assert merge_rows[1]["accuracy"] >= base_r["accuracy"] - 0.02

# %% tags=["nbval-ignore-output"]
print(f"latency: dense {latency_ms(base):.3f} ms, merged {latency_ms(merged):.3f} ms per batch of 256")

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
rounded = Net()                   # a second instance of the article's Net, built by one call
rounded(x_test[:1])
rounded.set_weights([np.round(w).astype(np.float32) for w in model.get_weights()])
kernels = [w for w in model.get_weights() if w.ndim == 2]
zero_share = np.mean(np.concatenate([np.round(k).ravel() for k in kernels]) == 0)
round_acc = cnl.metrics.accuracy(rounded, x_test, y_test)
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

# %%
q8 = cnl.quantization.quantize_model(base, bits=8)              # per-channel symmetric int8 codes
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
    if w.ndim == 2:                                               # kernels only; biases stay float
        scale = np.abs(w).max(axis=0) / 127                       # one scale per output channel
        codes = np.clip(np.round(w / scale), -127, 127).astype(np.int8)   # what you store
        w = codes.astype(np.float32) * scale                      # what the float model computes with
    weights.append(w)
plain_q.set_weights(weights)
plain_q_acc = cnl.metrics.accuracy(plain_q, x_test, y_test)
same = all(np.array_equal(a, b) for a, b in zip(plain_q.get_weights(), cnl.storage.plain_model(q8).get_weights()))
print(f"plain NumPy int8: accuracy {plain_q_acc:.3f}; identical weights to the library's: {same}")

# %% [markdown]
# ### Measured

# %%
rounded_f = cnl.models.clone(base)     # round(W) per array on the functional copy of Net
rounded_f.set_weights([np.round(w) for w in base.get_weights()])
quant_rows = [base_r, measure(rounded_f, "round(W) per array"), measure(q8, "int8 per channel"),
              measure(q4, "4 bit per channel")]
pd.DataFrame(quant_rows).set_index("model")

# %%
_, round_r, q8_r, q4_r = quant_rows
assert round_r["accuracy"] < 0.3
assert q8_r["accuracy"] >= base_r["accuracy"] - 0.005 and q4_r["accuracy"] >= base_r["accuracy"] - 0.03
assert q8_r["compressed bytes"] < 0.4 * base_r["compressed bytes"]
assert q4_r["compressed bytes"] < q8_r["compressed bytes"]
assert q8_r["params"] == base_r["params"]                        # same parameters, fewer bits each
assert abs(plain_q_acc - q8_r["accuracy"]) < 0.005

# %% tags=["nbval-ignore-output"]
print(f"Keras latency: float {latency_ms(base):.3f} ms, int8 weights {latency_ms(q8):.3f} ms "
      "(same float kernels: no speed-up without integer kernels)")

# %% [markdown]
# The article's rule destroys the network; with a scale per channel, 8 bits keep the accuracy
# and the compressed file shrinks about three times (the kernels alone 3.8x; 4 bits: more), while the number of parameters, and the
# speed of a float Keras model, stay the same.
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
original_model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
original_model.fit(x_train, y_train, epochs=10, verbose=0)
distillation_model = DistillationModel()
distillation_model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
teacher_probs = original_model.predict(x_train, verbose=0)
kd_error = guarded(lambda: distillation_model.fit(x_train, teacher_probs, epochs=10, verbose=0))
assert isinstance(kd_error, TypeError)

# %% [markdown]
# `fit` calls the model with the inputs only, and `call` requires a second argument. Passing
# the teacher's output by hand shows what the student would compute, and what the loss makes of
# it:

# %%
out = distillation_model(x_test[:5], original_model(x_test[:5]))
print(f"student output shape {tuple(out.shape)}: {np.round(out.numpy(), 3)}")
loss_error = guarded(lambda: keras.losses.sparse_categorical_crossentropy(teacher_probs[:5], out))
assert tuple(out.shape) == (5,) and loss_error is not None

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
# A teacher (LeNet-300-100, 50,610 parameters) and a student with one hidden layer of 16 units
# (1,210 parameters) that ends in logits. The student trained alone and the distilled student
# start from the same initial weights and train for the same 10 epochs:

# %%
keras.utils.set_random_seed(0)
teacher = cnl.models.train(cnl.models.lenet_300_100(input_shape=(64,)), digits, epochs=15)

keras.utils.set_random_seed(1)
alone = cnl.models.train(cnl.models.mlp(64, (16,), logits=True), digits, epochs=10, learning_rate=1e-2)

keras.utils.set_random_seed(1)
student = cnl.models.mlp(64, (16,), logits=True)
distiller = cnl.distillation.Distiller(student, teacher, temperature=4.0, alpha=0.1)
distiller.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
history = distiller.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)   # trains `student`

# %% [markdown]
# Closer to the article's plan (train the teacher, save its outputs, fit the student on them)
# is *offline* distillation: compute the softened targets once and fit the student with a
# loss between distributions. Without the library, the key lines are these (here without the
# hard-label term, $\alpha = 0$):

# %%
T = 4.0
teacher_logits = cnl.distillation.logits_model(teacher).predict(x_train, verbose=0)
soft_targets = tf.nn.softmax(teacher_logits / T).numpy()          # softened teacher outputs


def soft_target_loss(p_teacher, student_logits):                  # T^2 * KL(p_t || softmax(z_s / T))
    return T**2 * keras.losses.kl_divergence(p_teacher, tf.nn.softmax(student_logits / T))


keras.utils.set_random_seed(1)
offline = cnl.models.mlp(64, (16,), logits=True)
offline.compile(optimizer=keras.optimizers.Adam(1e-2), loss=soft_target_loss)
history = offline.fit(x_train, soft_targets, epochs=10, batch_size=32, verbose=0)
offline_acc = cnl.metrics.accuracy(offline, x_test, y_test)
print(f"offline distillation, plain Keras: accuracy {offline_acc:.3f}")

# %% [markdown]
# ### Measured

# %%
kd_rows = [measure(teacher, "teacher (LeNet-300-100)"), measure(alone, "student alone"),
           measure(student, "student distilled (T=4)"), measure(offline, "student, offline soft targets")]
pd.DataFrame(kd_rows).set_index("model")

# %%
teacher_r, alone_r, kd_r, offline_r = kd_rows
assert kd_r["params"] < teacher_r["params"] / 40
assert kd_r["accuracy"] >= alone_r["accuracy"]
assert kd_r["accuracy"] >= teacher_r["accuracy"] - 0.02
assert kd_r["compressed bytes"] < teacher_r["compressed bytes"] / 20

# %% tags=["nbval-ignore-output"]
print(f"latency: teacher {latency_ms(teacher):.3f} ms, student {latency_ms(student):.3f} ms per batch of 256")

# %% [markdown]
# The distilled student keeps the teacher's accuracy with about 2% of its parameters and does
# better than the same student trained alone from the same initial weights. On the digits the
# gap is small (a few test images out of 450; one seed): distillation pays most when the
# student is small relative to the task and the teacher's soft targets carry information the
# labels do not. Where the numbers come from, and how temperature and $\alpha$ matter, is in
# {doc}`03_3_distillation`.
#
# ## Summary
#
# | snippet | as printed | corrected (library) | measured on the digits |
# |---|---|---|---|
# | 4.1.1 pruning | freezes the wrong layer, then `IndexError`; prunes nothing | `prune` + `PruningCallback`, `strip`; `prune_neurons` | see the tables above |
# | 4.1.2 network compression | `ValueError` / `AttributeError` | `merge_neurons` | exact on duplicated neurons |
# | 4.2.1 quantization | `ValueError`; per array: accuracy to chance | `quantize_model(bits=8)` | same accuracy, ~3x fewer bytes |
# | 4.2.2 distillation | `TypeError`; output one number per example | `Distiller(T=4, alpha=0.1)` | student ~2% of the teacher's size |
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
# Scoring each *layer* by the sum of its kernel's absolute values gives sums in the hundreds,
# so with `threshold = 10` no layer is frozen; with a larger threshold whole layers are
# frozen. Either way every weight keeps its value: `np.count_nonzero` is unchanged, because
# `trainable = False` only stops updates. To prune, zero the weights: compute
# `mask = np.abs(w) > np.quantile(np.abs(w), s)`, assign `w * mask`, and keep the mask applied
# while fine-tuning (`cnl.pruning.prune`, or the `KeepMasks` callback above).
# :::
#
# :::{admonition} Solution 2
# :class: dropdown
# ```python
# for bits in (4, 3, 2):
#     for per_channel in (False, True):
#         qmax = 2 ** (bits - 1) - 1
#         ws = []
#         for w in base.get_weights():
#             if w.ndim == 2:
#                 s = np.abs(w).max(axis=0 if per_channel else None) / qmax
#                 w = np.clip(np.round(w / s), -qmax, qmax) * s
#             ws.append(w.astype(np.float32))
#         m = keras.models.clone_model(base); m.set_weights(ws)
#         print(bits, per_channel, cnl.metrics.accuracy(m, x_test, y_test))
# ```
# Per channel degrades later than per tensor, because a column of small weights is no longer
# quantized with the step of the largest column; at 2 bits (three levels) both lose a large
# part of the accuracy without quantization-aware training ({doc}`03_4_quantization`).
# :::
#
# :::{admonition} Solution 3
# :class: dropdown
# Replace `(16,)` by `(8,)` in the three student cells. A smaller student has less capacity to
# reach the teacher's accuracy, and the soft targets' extra information (which wrong digits
# look alike) matters more relative to the labels; but with very little capacity neither
# training reaches the teacher, and with few epochs the distilled student can even be behind
# (it learns a harder target). Measure both with several seeds before drawing a conclusion.
# :::
