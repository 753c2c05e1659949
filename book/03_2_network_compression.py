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
# # Network compression: merging neurons, sharing weights, low rank (网络压缩, article 3.1.2)
#
# The article's second structural method, "network compression" (网络压缩), "merges several
# neurons into one neuron to reduce the number of parameters" (将多个神经元合并为一个神经元). Its
# recipe: train the model, "merge the weights and activation functions of several neurons to
# create a new neuron", update the connections. Its formulas, for $k$ neurons with weights
# $W_i$ and activations $A_i$:
#
# $$
# \tilde W = \sum_{i=1}^{k} W_i, \qquad \tilde A = f\Big(\sum_{i=1}^{k} A_i\Big).
# $$
#
# The idea is real (Srinivas & Babu call it *data-free parameter pruning*
# {cite}`srinivas2015datafree`), but the formulas merge the wrong weights, and the article's
# code does not run. This chapter runs that code, derives the rule that is exact, measures it
# against structured pruning on the digits, and then covers the two other ways of compressing
# a layer's weights that the same heading usually stands for: **weight sharing** by k-means
# (Han et al. {cite}`han2016deep`) and **low-rank factorization** by truncated SVD
# {cite}`denton2014exploiting,xue2013restructuring`.

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

import compressnet_lite as cnl
from compressnet_lite.notebook import setup, show_source

setup()
data = cnl.data.load_digits()

# %% [markdown]
# ## The article's code, run
#
# Section 4.1.2 of the article trains its `Net` (Dense 64 ReLU, 32 ReLU, 10 softmax) and then
# "merges" with three statements. We run them verbatim on the bundled digits (one epoch is
# enough to have weights):

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
model.fit(data.x_train, data.y_train, epochs=1, verbose=0)

article_steps = {
    "merged_weights": lambda: tf.keras.layers.concatenate(
        [model.layers[0].weights, model.layers[2].weights]),
    "merged_activation": lambda: tf.keras.layers.concatenate(
        [model.layers[0].activation, model.layers[2].activation]),
    "model.layers[0].weights = ...": lambda: setattr(model.layers[0], "weights", []),
}
failures = {}
for step, run in article_steps.items():
    try:
        run()
        failures[step] = None
    except Exception as exc:
        failures[step] = type(exc).__name__
        print(f"{step}: {type(exc).__name__}: {str(exc).splitlines()[0][:110]}")

# %%
assert all(failures.values())  # every one of the three statements fails

# %% [markdown]
# Each statement fails, for a different reason:
#
# 1. `concatenate` joins *tensors* along an axis. The two lists hold the kernel and bias of
#    layer 1 (64x64 and 64) and of layer 3 (32x10 and 10): the shapes do not match, and
#    joining weights of two different layers has no meaning anyway (they act on different
#    inputs).
# 2. An activation is a function, not a tensor; there is nothing to concatenate.
# 3. `layer.weights` is a read-only property. Keras changes weights with `set_weights`, and a
#    layer's *shape* (its number of units) cannot change in place at all: removing a neuron
#    means building a new layer, and a new next layer with fewer inputs.
#
# The formulas fail too, more quietly. Summing the incoming weights of $k$ neurons gives a
# neuron whose pre-activation is $\sum_i z_i$, and $f(\sum_i z_i) \ne \sum_i f(z_i)$ for a
# nonlinear $f$; nothing is said about the *outgoing* weights, which are where the merge has
# to happen.

# %% [markdown]
# ## Merging done right (Srinivas & Babu 2015)
#
# Take a hidden layer $h = f(W^\top x + b)$ followed by $y = A^\top h$. Neuron $j$ has
# incoming weights $w_j$ (a column of $W$, with its bias $b_j$) and outgoing weights $a_j$ (a
# row of $A$). If two neurons have the same incoming weights, $w_i = w_j$, they compute the
# same activation $h_i = h_j$, and
#
# $$
# a_i h_i + a_j h_j = (a_i + a_j)\, h_i ,
# $$
#
# so deleting $j$ and setting $a_i \leftarrow a_i + a_j$ changes nothing: one neuron fewer, the
# same outputs. With a ReLU, a *scaled* copy merges exactly too: if $w_j = c\, w_i$ with
# $c > 0$, then $h_j = \max(0, c z_i) = c\, h_i$ (positive homogeneity) and
# $a_i \leftarrow a_i + c\, a_j$. When the neurons are only similar, the change in the output is
# bounded by $\lVert a_j\rVert\,\lVert w_j - c\, w_i\rVert\,\lVert x\rVert$; Srinivas & Babu
# rank the pairs by the *saliency*
#
# $$
# s_{ij} = \langle a_j^2 \rangle \, \lVert w_j - c\, w_i \rVert^2
# $$
#
# ($\langle a_j^2\rangle$ the mean square of the outgoing weights) and merge greedily,
# smallest first. No training data are needed: that is the paper's claim, tested below.
# `merge_plan` is that greedy loop; it also returns the `fold` matrix that the model surgery
# applies to the next layer's input rows (`new_rows = fold.T @ old_rows`):

# %%
show_source(cnl.merging.merge_plan)

# %% [markdown]
# A small example: three ReLU neurons on two inputs, where neuron 1 is exactly twice neuron 0.
# The correct merge keeps the outputs; the article's rule (sum the incoming weights, keep one
# outgoing row) does not.

# %%
relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
W = np.array([[0.5, 1.0, -0.3],
              [-0.2, -0.4, 0.8]])  # incoming weights, one column per neuron
b = np.array([0.1, 0.2, 0.0])     # neuron 1 = 2 x neuron 0, bias included
A = np.array([[1.0, -1.0],
              [0.5, 2.0],
              [-0.7, 0.3]])       # outgoing weights, one row per neuron
x = np.random.default_rng(0).normal(size=(6, 2))
y = relu(x @ W + b) @ A

plan = cnl.merging.merge_plan(W, b, A, ratio=1 / 3)
print("removed", plan.removed, "into", plan.into, "scale", plan.scale, "saliency", plan.saliency)
print("fold (units x kept):\n", plan.fold)
y_merged = relu(x @ plan.w_in + plan.b_in) @ (plan.fold.T @ A)

# the article: W~ = W_0 + W_1, A~ = f(z_0 + z_1), outgoing weights of neuron 0 kept
W_art = np.stack([W[:, 0] + W[:, 1], W[:, 2]], axis=1)
b_art = np.array([b[0] + b[1], b[2]])
y_article = relu(x @ W_art + b_art) @ A[[0, 2]]
err_merged, err_article = np.abs(y_merged - y).max(), np.abs(y_article - y).max()
print(f"max |change| of the outputs: correct merge {err_merged:.1e}, article's rule {err_article:.3f}")

# %%
assert err_merged < 1e-12 and err_article > 0.1

# %% [markdown]
# The planner removed neuron 0 into neuron 1 with scale $c = 0.5$: the outgoing weights of
# the kept neuron became $a_1 + 0.5\, a_0$, and the outputs did not move.
#
# On a model, `cnl.merging.merge_neurons(model, layer, ratio=... | threshold=...)` computes
# the plan for each hidden layer and calls the shared surgery
# (`cnl.surgery.keep_units(model, layer, keep, fold)`), which builds the smaller layer and
# the next layer with the folded input rows. Conv2D filters merge the same way, compared by
# their flattened kernels (max pooling and flattening commute with a positive scale). The
# variant `method="kmeans"` clusters the incoming vectors instead and replaces each cluster
# by its centroid, with the members' outgoing weights summed.
#
# ## Merging vs pruning neurons, measured
#
# Two trained models: the article's MLP and LeNet-300-100 {cite}`han2015learning`, both on the
# 8x8 digits. We remove the same fraction of the units of every hidden layer with three
# methods: pairwise merging, k-means merging and structured magnitude pruning
# (`cnl.pruning.prune_neurons`, the units with the smallest L1 norm of incoming weights, see
# {doc}`03_1_pruning`). For one fraction the three give the *same* architecture, so the same
# number of parameters: only the weights differ. Then the pairwise merge and the pruned model
# are fine-tuned for 3 epochs.

# %% tags=["nbval-ignore-output"]
keras.utils.set_random_seed(0)
mlp = cnl.models.train(cnl.models.seed_mlp(), data, epochs=20)
keras.utils.set_random_seed(0)
lenet = cnl.models.train(cnl.models.lenet_300_100(data.input_shape), data, epochs=10)
bases = {"seed_mlp": mlp, "LeNet-300-100": lenet}


def acc(model):
    return cnl.metrics.accuracy(model, data.x_test, data.y_test)


base_acc = {name: acc(m) for name, m in bases.items()}
base_params = {name: cnl.metrics.count_params(m) for name, m in bases.items()}

# %%
print({name: f"{a:.3f}" for name, a in base_acc.items()}, base_params)

# %%
methods = {
    "merge": lambda m, f: cnl.merging.merge_neurons(m, ratio=f),
    "merge k-means": lambda m, f: cnl.merging.merge_neurons(m, ratio=f, method="kmeans"),
    "prune L1": lambda m, f: cnl.pruning.prune_neurons(m, fraction=f),
}
fractions = [0.25, 0.5, 0.75, 0.9]
rows = []
for name, model in bases.items():
    for f in fractions:
        for method, shrink in methods.items():
            small = shrink(model, f)
            row = {"model": name, "removed": f, "method": method,
                   "params": cnl.metrics.count_params(small), "accuracy": acc(small)}
            if method != "merge k-means" and f >= 0.5:
                keras.utils.set_random_seed(0)
                row["fine-tuned"] = acc(cnl.models.train(small, data, epochs=3))
            rows.append(row)
merge_table = pd.DataFrame(rows)
merge_table.pivot_table(index=["model", "removed", "params"], columns="method",
                        values=["accuracy", "fine-tuned"]).round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, name in zip(axes, bases):
    part = merge_table[merge_table.model == name]
    for (method, group), color in zip(part.groupby("method", sort=False), ["C0", "C1", "C3"]):
        ax.plot(group.removed, group.accuracy, "o-", color=color, label=f"{method}, no data")
        if group["fine-tuned"].notna().any():
            tuned = group.dropna(subset=["fine-tuned"])
            ax.plot(tuned.removed, tuned["fine-tuned"], "s--", color=color, label=f"{method}, fine-tuned")
    ax.axhline(base_acc[name], color="gray", lw=0.8, label="unchanged model")
    ax.set(title=name, xlabel="fraction of hidden units removed")
axes[0].set_ylabel("test accuracy")
axes[1].legend(fontsize=8)
plt.show()

# %%
get = lambda name, f, m, col="accuracy": float(merge_table.query(  # noqa: E731
    "model == @name and removed == @f and method == @m")[col].iloc[0])
for name in bases:
    for f in fractions:  # same fraction -> same architecture -> same parameter count
        assert len(set(merge_table.query("model == @name and removed == @f").params)) == 1
    for f in (0.5, 0.75):  # data-free: merging beats pruning by a wide margin before any training
        assert get(name, f, "merge") > get(name, f, "prune L1") + 0.1
    # fine-tuning closes most of the gap at 50 %; both end near the unchanged model
    assert abs(get(name, 0.5, "merge", "fine-tuned") - get(name, 0.5, "prune L1", "fine-tuned")) < 0.03
    assert get(name, 0.5, "merge", "fine-tuned") >= base_acc[name] - 0.01
    # at 25 % merging stays within a point of the model without any data
    assert get(name, 0.25, "merge") >= base_acc[name] - 0.01
    # at the extreme fractions merging stays ahead after fine-tuning too
    assert get(name, 0.75, "merge", "fine-tuned") > get(name, 0.75, "prune L1", "fine-tuned")
    assert get(name, 0.9, "merge", "fine-tuned") > get(name, 0.9, "prune L1", "fine-tuned")

# %% [markdown]
# What the measurements say:
#
# * **The data-free claim holds.** Without any data or training, removing a quarter of the
#   hidden units by merging costs less than a point of accuracy, and merging half of them
#   keeps far more accuracy than pruning the same units away (more than 10 points on both
#   models). The folded outgoing weights carry most of what the removed neurons contributed,
#   while pruning simply drops it.
# * **With fine-tuning the advantage mostly disappears.** Three epochs bring both methods back
#   near the unchanged model at 50 % (within half a point of each other); merging stays ahead
#   at 75 % and 90 %, where the pruned network has lost too much to recover in 3 epochs. When
#   training data are at hand, merging is a better *starting point*; at 50 % the end result is
#   the same.
# * **k-means merging** is mostly between the two (at 90 % on LeNet-300-100 it is slightly
#   ahead of pairwise merging): it replaces each group by its centroid, which
#   changes the incoming weights of the kept neurons as well, so even well-matched neurons
#   are no longer reproduced exactly.
#
# Which neurons did the planner merge? The incoming weights of a first-layer neuron form an
# 8x8 image (one weight per pixel). For each of the 150 merges of LeNet-300-100's `fc1` at
# 50 %, we measure how well the kept neuron, scaled, matches the removed one:
# $\lVert w_j - c\, w_i\rVert / \lVert w_j\rVert$ (0 for an exact copy). The four best-matched pairs,
# removed neuron above, kept neuron times the scale below:

# %%
kernel, bias = lenet.get_layer("fc1").get_weights()
lenet_plan = cnl.merging.merge_plan(kernel, bias, lenet.get_layer("fc2").get_weights()[0], ratio=0.5)
vectors = np.vstack([kernel, bias[None]]).T  # one row [w_j; b_j] per neuron
mismatch = np.array([np.linalg.norm(vectors[j] - c * vectors[i]) / np.linalg.norm(vectors[j])
                     for j, i, c in zip(lenet_plan.removed, lenet_plan.into, lenet_plan.scale)])
fig, axes = plt.subplots(2, 4, figsize=(8, 4.4))
for col, t in enumerate(np.argsort(mismatch)[:4]):
    j, i, c = lenet_plan.removed[t], lenet_plan.into[t], lenet_plan.scale[t]
    pair = [kernel[:, j], c * kernel[:, i]]
    lim = max(np.abs(p).max() for p in pair)
    for row, (image, title) in enumerate(zip(pair, [f"neuron {j}", f"{c:.2f} x neuron {i}"])):
        axes[row, col].imshow(image.reshape(8, 8), cmap="RdBu", vmin=-lim, vmax=lim)
        axes[row, col].set(title=title, xticks=[], yticks=[])
    axes[1, col].set_xlabel(f"mismatch {mismatch[t]:.2f}")
fig.suptitle("fc1 incoming weights: the best-matched merged pairs")
plt.show()
outgoing = lenet.get_layer("fc2").get_weights()[0]
first_ten = float(np.mean(outgoing[lenet_plan.removed[:10]] ** 2))
print(f"mismatch of the 150 merges: best {mismatch.min():.2f}, median {np.median(mismatch):.2f}; "
      f"mean square outgoing weight of the first 10 removed {first_ten:.4f}, "
      f"of all neurons {np.mean(outgoing ** 2):.4f}")

# %%
assert np.all(lenet_plan.scale > 0) and lenet_plan.removed.size == 150
assert mismatch.min() > 0.5  # no near-copies in this trained layer
assert first_ten < np.mean(outgoing ** 2)  # the first merges are neurons with weak outgoing weights

# %% [markdown]
# The pairs are far from copies: even the best-matched pair differs by 80 % of its norm, and
# the saliency picks first neurons whose *outgoing* weights are weaker than average (the
# factor $\langle a_j^2\rangle$). A network trained without any pressure towards redundancy does not contain
# duplicate neurons; Srinivas & Babu applied the method to far wider layers (the 4,096-unit
# fully connected layers of AlexNet), where more redundancy can be expected than in a
# 300-unit layer on 8x8 digits. Merging still beats pruning here because
# $c = \langle w_j, w_i\rangle / \lVert w_i\rVert^2$ is the least-squares projection of $w_j$ on
# $w_i$: folding $c\, a_j$ into $a_i$ keeps the part of neuron $j$'s contribution that neuron
# $i$ can express, where pruning throws all of it away.

# %% [markdown]
# ## Weight sharing: k-means on the weights (Han et al. 2016)
#
# Merging removes neurons; weight sharing keeps every connection but lets the weights of a
# layer take only $k$ distinct values. The weights are clustered into $k$ groups
# (one-dimensional k-means, Lloyd's algorithm {cite}`lloyd1982least`) minimising
#
# $$
# \sum_{j=1}^{k} \sum_{w \in C_j} (w - c_j)^2 ,
# $$
#
# and each weight is stored as the $\lceil \log_2 k \rceil$-bit index of its centroid, plus a
# codebook of $k$ floats. A layer with $n$ weights then takes $n \lceil\log_2 k\rceil / 8 + 4k$
# bytes instead of $4n$: about $32 / \log_2 k$ times smaller. Han et al. initialise the
# centroids *linearly* between the smallest and largest weight, because the rare large
# weights matter most and density-based or random (k-means++ {cite}`arthur2007kmeans`)
# initialisations put few centroids there. While fine-tuning, the weights of a cluster must
# stay equal, so the centroid is updated with the *sum* of their gradients:
#
# $$
# \frac{\partial L}{\partial c_j} = \sum_{w_i \in C_j} \frac{\partial L}{\partial w_i} .
# $$
#
# `kmeans_codebook` implements the three initialisations and Lloyd's iterations in NumPy:

# %%
show_source(cnl.clustering.kmeans_codebook)

# %% [markdown]
# `cnl.clustering.cluster_weights(model, k)` replaces each Dense/Conv2D layer by a
# `ClusteredDense`/`ClusteredConv2D` whose kernel is computed as `codebook[index]`, with
# `index` a non-trainable integer variable and `codebook` the $k$ trainable centroids. Automatic
# differentiation of that gather gives exactly the summed gradient above, so plain `fit`
# fine-tunes the centroids and the sharing can never break. `clustered_bytes` writes the packed
# indices, the codebooks and the remaining parameters (biases) to files and measures them.
#
# Where do the three initialisations put their centroids? On `fc1` of LeNet-300-100 with
# $k = 8$, after the first of Lloyd's iterations and at convergence:

# %%
w_fc1 = lenet.get_layer("fc1").get_weights()[0].ravel()
fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
init_error = {}
for ax, init in zip(axes, cnl.clustering.INITS):
    first, _ = cnl.clustering.kmeans_codebook(w_fc1, 8, init, max_iter=1)
    final, labels = cnl.clustering.kmeans_codebook(w_fc1, 8, init)
    init_error[init] = float(np.mean((final[labels] - w_fc1) ** 2))
    ax.hist(w_fc1, bins=80, color="0.7")
    ax.vlines(first, 0, 8, color="C0", lw=2, label="after 1 iteration")
    ax.vlines(final, 10, 80, color="C3", lw=2, label="final")
    ax.set(title=f"{init} init", xlabel="weight value", yscale="log")
axes[0].set_ylabel("count")
axes[0].legend(fontsize=8)
plt.show()
print({init: f"{e:.2e}" for init, e in init_error.items()}, "(mean squared error of the shared weights)")

# %% [markdown]
# Accuracy against $k$, from 2 to 64 values per layer, with the measured bytes and the
# compression ratio against float32; for $k \le 4$ also after 2 epochs of fine-tuning the
# centroids:

# %%
rows = []
for name, model in bases.items():
    for k in [2, 4, 8, 16, 32, 64]:
        shared = cnl.clustering.cluster_weights(model, k)
        size = cnl.clustering.clustered_bytes(shared)
        row = {"model": name, "k": k, "bits/index": cnl.clustering.index_bits(k),
               "bytes": size.total, "ratio": round(size.ratio, 1), "accuracy": acc(shared)}
        if k <= 4:
            keras.utils.set_random_seed(0)
            tuned = cnl.models.train(shared, data, epochs=2)
            row["fine-tuned"] = acc(tuned)
            row["distinct after"] = max(len(np.unique(keras.ops.convert_to_numpy(tuned.get_layer(n).kernel)))
                                        for n in ("fc1", "fc2", "out"))
        rows.append(row)
share_table = pd.DataFrame(rows)
share_table.round(3)

# %%
fig, ax = plt.subplots()
for (name, group), color in zip(share_table.groupby("model", sort=False), ["C0", "C1"]):
    ax.plot(group.k, group.accuracy, "o-", color=color, label=f"{name}, clustered")
    tuned = group.dropna(subset=["fine-tuned"])
    ax.plot(tuned.k, tuned["fine-tuned"], "s--", color=color, label=f"{name}, fine-tuned")
    ax.axhline(base_acc[name], color=color, lw=0.8, ls=":")
ax.set_xscale("log", base=2)
ax.minorticks_off()
ax.set(xticks=[2, 4, 8, 16, 32, 64], xticklabels=[2, 4, 8, 16, 32, 64],
       xlabel="shared values per layer (k)", ylabel="test accuracy")
ax.legend(fontsize=8)
plt.show()

# %%
for name in bases:
    t = share_table[share_table.model == name].set_index("k")
    assert t.loc[16, "accuracy"] >= base_acc[name] - 0.01   # 4-bit indices: no loss
    assert t.loc[16, "ratio"] > 6                            # ~7x smaller, measured
    assert (t.loc[[2, 4], "fine-tuned"] >= t.loc[[2, 4], "accuracy"]).all()
    assert (t.loc[[2, 4], "distinct after"] == [2, 4]).all()  # sharing kept while training
assert max(init_error.values()) < 1.05 * min(init_error.values())

# %% [markdown]
# Sixteen shared values per layer (4-bit indices) cost nothing in accuracy here, and the
# measured files are about 7x smaller than float32, not 8x: the codebooks and the float32
# biases count too. Below 8 values accuracy falls, and fine-tuning the centroids with the
# summed gradient recovers much of it while every layer keeps exactly $k$ values.
#
# The three initialisations start in different places, but on these bell-shaped weights
# Lloyd's iterations bring all three to practically the same codebook (the same error to
# three digits). So does the initialisation matter at all? It does if Lloyd's iterations are
# *not* run, as in TensorFlow Model Optimization's `cluster_weights`, which starts fine-tuning
# from the initial centroids. `max_iter=0` keeps them; with linear initialisation the extreme
# weights stay representable:

# %%
rows = []
for name, model in bases.items():
    for k in (2, 4):
        rows.append({"model": name, "k": k,
                     "k-means codebook": acc(cnl.clustering.cluster_weights(model, k)),
                     "linear centroids kept": acc(cnl.clustering.cluster_weights(model, k, max_iter=0))})
init_table = pd.DataFrame(rows).set_index(["model", "k"])
init_table.round(3)

# %%
for name in bases:
    # k = 2: keeping the extreme centroids is far better than the squared-error optimum
    assert init_table.loc[(name, 2), "linear centroids kept"] > init_table.loc[(name, 2), "k-means codebook"] + 0.1
    # k = 4: little difference
    assert abs(init_table.loc[(name, 4)].diff().iloc[-1]) < 0.02

# %% [markdown]
# With two values per layer, the k-means optimum (the smallest squared error) pulls both
# centroids into the bulk of the weights and loses the large ones, and accuracy drops much
# further than with the linear centroids at the extremes, although their squared error is
# larger. That is Han et al.'s argument for linear initialisation: the rare large weights
# matter more than their number suggests. From four values on the difference is small, and
# fine-tuning removes most of it. The side-by-side comparison with tfmot's `cluster_weights`
# (the same three initialisations, with and without Lloyd's iterations, before and after
# fine-tuning) is in the repository's `benchmarks/clustering_vs_tfmot.py` and its results file.
#
# Weight sharing alone does not make inference faster: the kernel is rebuilt from the
# codebook. Its value is storage, and it combines with pruning and entropy coding
# ({doc}`03_5_combining`).

# %% [markdown]
# ## Low-rank factorization
#
# A Dense kernel $W \in \mathbb{R}^{m \times n}$ has the singular value decomposition
# $W = U S V^\top$ with $s_1 \ge s_2 \ge \dots \ge 0$. Keeping the $r$ largest gives the best
# rank-$r$ approximation in the Frobenius norm (Eckart-Young), with error
# $\lVert W - W_r \rVert_F^2 = \sum_{i > r} s_i^2$, and it factors into two thin layers:
#
# $$
# W_r = \underbrace{U_r S_r^{1/2}}_{m \times r}\; \underbrace{S_r^{1/2} V_r^\top}_{r \times n}, \qquad
# mn \;\to\; r(m + n) \text{ parameters and multiply-adds.}
# $$
#
# It pays only for $r < mn / (m + n)$. The rank can be chosen by the *energy* kept,
# $\sum_{i \le r} s_i^2 / \sum_i s_i^2$. `cnl.lowrank.factorize(model, layer, rank=... |
# energy=...)` replaces the layer by `Dense(r, use_bias=False)` and `Dense(n)` (the old bias
# and activation) through `cnl.surgery.replace_layer`:

# %%
show_source(cnl.lowrank.svd_factors)

# %% [markdown]
# LeNet-300-100's `fc1` maps the 64 pixels to 300 units (19,200 weights; it pays below rank
# 52), `fc2` maps 300 to 100 (30,000 weights; below rank 75). Accuracy against rank for each,
# the other layer left alone:

# %%
rows = []
for layer in ("fc1", "fc2"):
    for r in [1, 2, 4, 8, 16, 32, 64]:
        low = cnl.lowrank.factorize(lenet, layer, rank=r)
        rows.append({"layer": layer, "rank": r, "params": cnl.metrics.count_params(low),
                     "MACs": cnl.metrics.flops(low), "accuracy": acc(low)})
rank_table = pd.DataFrame(rows)
print(f"unchanged: {base_params['LeNet-300-100']} params, {cnl.metrics.flops(lenet)} MACs, "
      f"accuracy {base_acc['LeNet-300-100']:.3f}")
rank_table.round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for layer, color in zip(("fc1", "fc2"), ["C0", "C1"]):
    s = np.linalg.svd(lenet.get_layer(layer).get_weights()[0], compute_uv=False)
    axes[0].plot(np.arange(1, s.size + 1), np.cumsum(s ** 2) / np.sum(s ** 2), color=color, label=layer)
    part = rank_table[rank_table.layer == layer]
    axes[1].plot(part["rank"], part.accuracy, "o-", color=color, label=layer)
axes[0].set(xlabel="rank r", ylabel="energy kept", title="singular-value energy")
axes[1].axhline(base_acc["LeNet-300-100"], color="gray", lw=0.8)
axes[1].set_xscale("log", base=2)
axes[1].minorticks_off()
axes[1].set(xticks=[1, 2, 4, 8, 16, 32, 64], xticklabels=[1, 2, 4, 8, 16, 32, 64],
            xlabel="rank r", ylabel="test accuracy", title="accuracy after factorizing")
axes[0].legend(), axes[1].legend()
plt.show()

energy_rank = {e: cnl.lowrank.factorize(lenet, "fc2", energy=e).get_layer("fc2_u").units
               for e in (0.5, 0.8, 0.9, 0.95)}
print("fc2: energy -> rank", energy_rank)
keras.utils.set_random_seed(0)
low8 = cnl.lowrank.factorize(lenet, "fc2", rank=8)
low8_acc = acc(low8)
low8_tuned = acc(cnl.models.train(low8, data, epochs=3))
print(f"fc2 at rank 8: {low8_acc:.3f}, after 3 epochs of fine-tuning {low8_tuned:.3f}")

# %%
full = cnl.lowrank.factorize(lenet, "fc1", rank=64)
np.testing.assert_allclose(full.predict(data.x_test, verbose=0), lenet.predict(data.x_test, verbose=0), atol=1e-4)
t = rank_table.set_index(["layer", "rank"])
assert t.loc[("fc2", 16), "accuracy"] >= base_acc["LeNet-300-100"] - 0.015
assert t.loc[("fc2", 16), "params"] < base_params["LeNet-300-100"] - 20_000
assert t.loc[("fc1", 1), "accuracy"] < 0.5
assert list(energy_rank.values()) == sorted(energy_rank.values())
assert low8_tuned >= low8_acc

# %% [markdown]
# At full rank the factorized model reproduces the original outputs (checked above). On the
# digits, rank 16 is enough for both layers to stay within about a point of the unchanged
# model; for `fc2` that turns 30,000 weights into 6,400, almost half of the network's
# parameters saved. Below rank 8 accuracy collapses, and at rank 8 three epochs of
# fine-tuning the two thin layers recover nearly all of the loss. The
# energy rule is conservative: 90 % of the energy of `fc2` needs a rank well above 16, because
# trained kernels have a slowly decaying spectrum, yet the network does not need that energy.
# Measuring accuracy, as here, is the better rule when data are available.
#
# ## Summary
#
# | method | what changes | exact when | needs data | saves |
# |---|---|---|---|---|
# | merging (Srinivas & Babu) | neurons removed, outgoing weights folded | incoming weights equal (or scaled, ReLU) | no | parameters and MACs |
# | weight sharing (Han et al.) | weights take $k$ values | never (quantization) | for fine-tuning | storage ($\approx 32/\log_2 k$) |
# | low rank (SVD) | one layer becomes two thin ones | $r = \operatorname{rank} W$ | for fine-tuning | parameters and MACs when $r < mn/(m+n)$ |
#
# ## Exercises
#
# 1. Merging is exact for scaled copies $w_j = c\, w_i$, $c > 0$, with a ReLU. Is it exact
#    with a leaky ReLU? With $c < 0$? With tanh and $c = 1$? With tanh and $c = 2$?
# 2. Compute by hand the bytes that `clustered_bytes` reports for LeNet-300-100 (64-300-100-10)
#    clustered with $k = 16$, and compare with the table.
# 3. Merge 50 % of LeNet-300-100's hidden units *and then* share its weights with $k = 16$.
#    How much smaller is the model than the float32 original, and what accuracy does it keep?
# 4. For which ranks does factorizing a $784 \times 300$ layer (LeNet-300-100's `fc1` on MNIST)
#    save parameters? What rank keeps the parameters at 10 %?
#
# :::{admonition} Solution 1
# :class: dropdown
# A leaky ReLU $f(z) = \max(z, \alpha z)$ is positively homogeneous too, $f(cz) = c f(z)$ for
# $c > 0$, so the scaled merge is exact (`merge_neurons` accepts it). With $c < 0$ a ReLU neuron
# fires where the other is silent, so no single neuron reproduces both: never merged (the
# planner gives such pairs an infinite saliency). tanh with $c = 1$: identical neurons give
# identical activations for *any* activation, so the plain rule is exact
# (`merge_neurons(..., scaled=False)`). tanh with $c = 2$: $\tanh(2z) \ne 2\tanh(z)$, not exact;
# `merge_neurons` refuses the scaled merge for such activations.
# :::
#
# :::{admonition} Solution 2
# :class: dropdown
# Kernels: $64 \cdot 300 + 300 \cdot 100 + 100 \cdot 10 = 50{,}200$ weights at 4 bits: per layer
# $9{,}600 + 15{,}000 + 500 = 25{,}100$ bytes. Codebooks: $3 \cdot 16 \cdot 4 = 192$ bytes.
# Biases: $(300 + 100 + 10) \cdot 4 = 1{,}640$ bytes. Total $26{,}932$ bytes against
# $4 \cdot 50{,}610 = 202{,}440$ bytes of float32: $7.5\times$. The 4-bit ideal, $8\times$, is out
# of reach because biases and codebooks stay float32.
# :::
#
# :::{admonition} Solution 3
# :class: dropdown
# ```python
# merged = cnl.merging.merge_neurons(lenet, ratio=0.5)
# keras.utils.set_random_seed(0)
# merged = cnl.models.train(merged, data, epochs=3)
# both = cnl.clustering.cluster_weights(merged, 16)
# size = cnl.clustering.clustered_bytes(both)
# print(acc(both), 4 * base_params["LeNet-300-100"] / size.total)
# ```
# Merging halves the units of `fc1` and `fc2`, which cuts the kernels to
# $64 \cdot 150 + 150 \cdot 50 + 50 \cdot 10 = 17{,}600$ weights; at 4 bits they take 8,800
# bytes, plus 192 bytes of codebooks and 840 bytes of biases: 9,832 bytes against 202,440,
# about 20.6x smaller, and on this split the accuracy of the merged, fine-tuned model (0.978)
# survives the sharing unchanged. Cluster *after* fine-tuning the merge: fine-tuning a
# clustered model moves only the centroids.
# :::
#
# :::{admonition} Solution 4
# :class: dropdown
# $r(784 + 300) < 784 \cdot 300$ gives $r < 235{,}200 / 1{,}084 \approx 216.97$, so ranks up to 216 save parameters. At 10 %:
# $r \cdot 1084 \le 23{,}520$, so $r \le 21$.
# :::
