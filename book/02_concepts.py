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
# # Core concepts and how they relate (核心概念与联系, article section 2)
#
# The article sorts compression methods into *structure optimisation* (网络结构优化: pruning,
# "network compression", model distillation) and *weight optimisation* (权重优化: quantization,
# knowledge distillation), and says the two can be combined. This chapter states each concept
# in one paragraph with its math, corrects the taxonomy where it is wrong, shows how the
# methods combine, and ends with a small experiment: what the weights of a trained network
# look like, which is what makes pruning and quantization work at all.

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np

from myst_nb import glue

import compressnet_lite as cnl
from compressnet_lite import stats
from compressnet_lite.notebook import report, setup

setup()

# %% [markdown]
# ## Structure optimisation: change the architecture
#
# **Pruning** (网络剪枝, {doc}`03_1_pruning`) removes weights judged unimportant. Unstructured
# pruning multiplies each weight matrix by a 0/1 mask,
#
# $$
# \hat W = W \odot M, \qquad M_{ij} = \begin{cases} 0 & |W_{ij}| < \tau \\ 1 & \text{otherwise,} \end{cases}
# $$
#
# where the threshold $\tau$ is usually chosen to reach a target sparsity (the fraction of
# zeros) {cite}`han2015learning`. The mask must stay applied while the network is fine-tuned,
# or training fills the zeros back in. Structured pruning removes whole neurons or filters: in
# Keras' kernel layout, `(inputs, outputs)`, the weights into unit $j$ are *column* $j$, and a
# column norm $\lVert W_{:,j} \rVert_1$ below a threshold removes unit $j$ (with row $j$ of the
# next layer's kernel). It is the only kind that makes dense kernels faster
# {cite}`li2017pruning`. Both kinds are structure optimisation in the article's taxonomy, and
# in this book: unstructured pruning removes *connections*, structured pruning *units*. The
# difference is in what they save: unstructured zeros keep every dense shape, so they save
# bytes only in a sparse format and time only with sparse kernels ({doc}`05_comparison`).
#
# **Merging neurons** (the article's 网络压缩, "network compression", {doc}`03_2_network_compression`)
# removes a neuron $j$ whose incoming weights equal those of a neuron $i$: both compute the same
# activation $a_i = a_j$, so the next layer's weights can be added, $W'_{i,:} \leftarrow W'_{i,:} +
# W'_{j,:}$, and neuron $j$ deleted without changing the output {cite}`srinivas2015datafree`. The
# article's formula, $\tilde W = \sum_i W_i$ with $\tilde A = f(\sum_i A_i)$, sums the *incoming*
# weights instead, which changes what the network computes.
#
# **Distillation** (模型蒸馏, {doc}`03_3_distillation`) trains a smaller architecture, the student,
# to match the softened output distribution of a large trained teacher {cite}`hinton2015distilling`:
#
# $$
# \mathcal{L} = \alpha\, \mathrm{CE}\big(y, \sigma(z_s)\big) + (1 - \alpha)\, T^2\, \mathrm{KL}\big(\sigma(z_t / T) \,\big\Vert\, \sigma(z_s / T)\big),
# $$
#
# with $\sigma$ the softmax, $z_t, z_s$ the logits and $T$ a temperature.
#
# ## Weight optimisation: change how the weights are stored
#
# **Quantization** (权重量化, {doc}`03_4_quantization`) stores each weight as a $b$-bit integer $q$
# with a real scale $S$ and an integer zero point $Z$ {cite}`jacob2018quantization`:
#
# $$
# q = \operatorname{clip}\!\big(\operatorname{round}(w / S) + Z,\; q_\min,\; q_\max\big), \qquad \hat w = S\,(q - Z).
# $$
#
# The article's rule $\tilde W = \operatorname{round}(W)$ is this with $S = 1$, $Z = 0$: it sets
# almost every weight of a trained network to zero, as the experiment below shows.
#
# **Weight sharing** (权重共享, in {doc}`03_2_network_compression`) clusters the weights of a layer
# into $k$ values with k-means and stores each weight as a $\log_2 k$-bit index into that codebook
# {cite}`han2016deep`.
#
# **Knowledge distillation** (知识蒸馏) is listed again by the article under weight optimisation,
# with the same principle, steps and formula as "model distillation". It is one method, and it
# belongs to neither family cleanly: it trains new weights for a new (usually smaller)
# architecture. The book treats both article sections in one chapter.
#
# ## How the methods combine
#
# The methods act on different things (which weights exist, how many bits each takes, which
# architecture is trained), so their savings multiply. Storing a layer with a fraction $s$ of
# its $P$ weights pruned, $b_w$-bit codes for the rest and $b_i$-bit relative indices for
# their positions costs about
#
# $$
# \text{bits} \approx (1 - s)\,P\,(b_w + b_i) + \text{codebook}, \qquad
# \text{ratio} \approx \frac{32}{(1 - s)(b_w + b_i)},
# $$
#
# so 92 % sparsity with 5-bit codes and 4-bit indices gives about $32 / (0.08 \cdot 9) \approx
# 44\times$: the order of Deep Compression's 40x on LeNet-300-100 {cite}`han2016deep`
# ({doc}`03_5_combining`). Distillation composes with both: a distilled student can then be
# pruned and quantized {cite}`polino2018model`. Order matters: pruning first (it needs the full
# precision weights to rank), quantization after (its codebook then covers only survivors),
# entropy coding last.
#
# | concept | article section | chapter | library module | main functions |
# |---|---|---|---|---|
# | pruning | 3.1.1 | {doc}`03_1_pruning` | `cnl.pruning`, `cnl.surgery` | `magnitude_mask`, `prune`, `PruningCallback`, `prune_neurons` |
# | merging neurons, weight sharing, low rank | 3.1.2 | {doc}`03_2_network_compression` | `cnl.merging`, `cnl.clustering`, `cnl.lowrank` | `merge_neurons`, `cluster_weights`, `factorize` |
# | distillation (both sections) | 3.1.3, 3.2.2 | {doc}`03_3_distillation` | `cnl.distillation` | `kd_loss`, `Distiller` |
# | quantization | 3.2.1 | {doc}`03_4_quantization` | `cnl.quantization` | `quantize`, `quantize_model`, `quantize_aware`, `to_tflite` |
# | combining, real bytes | 2.3, 6 | {doc}`03_5_combining` | `cnl.storage`, `cnl.pipeline` | `save_compressed`, `compress` |
#
# ## What trained weights look like
#
# Train the article's network five times (seeds 0-4) on the data of `cnl.data.load()` (the
# bundled digits unless `CNL_DATA` says otherwise) and look at its weights. Every claim below
# is checked on all five networks: one training run could be a lucky one.

# %%
data = cnl.data.load()
SEEDS = range(5)
models = {}
for seed in SEEDS:
    keras.utils.set_random_seed(seed)
    net = cnl.models.seed_mlp(data.input_shape[0], data.num_classes)
    models[seed] = cnl.models.train(net, data, epochs=20, seed=seed)
model = models[0]  # the one the histograms show
base_acc = np.array([cnl.metrics.accuracy(m, data.x_test, data.y_test)
                     for m in models.values()])

# %% tags=["nbval-ignore-output"]
print("test accuracy of the trained seed_mlp:", stats.mean_interval(base_acc))

# %% tags=["hide-input"]
assert base_acc.min() > 0.9

kernels = {layer.name: layer.get_weights()[0] for layer in model.layers
           if layer.get_weights()}
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4), sharey=False)
for ax, (name, w) in zip(axes, kernels.items()):
    ax.hist(w.ravel(), bins=60, color="C0")
    ax.axvline(-0.5, color="C3", ls="--", lw=1)
    ax.axvline(0.5, color="C3", ls="--", lw=1)
    ax.set_title(f"{name}: kernel {w.shape[0]}x{w.shape[1]}")
    ax.set_xlabel("weight value")
axes[0].set_ylabel("count")
fig.suptitle("Weights of the trained seed_mlp (seed 0); "
             "between the dashed lines, round(w) = 0")
fig.tight_layout()
plt.show()

# %% [markdown]
# The weights are concentrated around zero and few exceed 1 in magnitude. Two consequences:
#
# * Most weights lie in $(-0.5, 0.5)$, where $\operatorname{round}(w) = 0$: the article's
#   quantization rule erases them.
# * Many weights are tiny compared with the largest ones: the magnitude criterion has a lot
#   to remove before it touches the weights that matter.
#
# We count both, and check what happens to accuracy when (a) every weight is rounded to an
# integer, as the article prescribes, and (b) the fraction $s$ of each layer's weights smallest
# in magnitude is set to zero, for several $s$ (the simplest pruning, one line of NumPy here;
# the library's version with exact sparsity and fine-tuning is in {doc}`03_1_pruning`). Each
# is compared with the trained network it came from, paired by seed
# (`cnl.stats.paired_difference`: mean over the five seeds and its 95% interval).

# %%
def all_kernels(model):
    return np.concatenate([layer.get_weights()[0].ravel()
                           for layer in model.layers if layer.get_weights()])


def with_weights(model, transform):
    """A copy of `model` with every kernel replaced by transform(kernel)."""
    copy = cnl.models.clone(model)
    for layer in copy.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([transform(weights[0]), *weights[1:]])
    return copy


def zero_smallest(s):
    return lambda w: np.where(np.abs(w) < np.quantile(np.abs(w), s), 0.0, w)


def test_acc(model):
    return cnl.metrics.accuracy(model, data.x_test, data.y_test)


rounded_to_zero = np.array([np.mean(np.abs(all_kernels(m)) < 0.5)
                            for m in models.values()])
fractions = [0.1, 0.25, 0.5, 0.75, 0.9]
acc_rounded = np.array([test_acc(with_weights(m, np.round))
                        for m in models.values()])
acc_zeroed = {s: np.array([test_acc(with_weights(m, zero_smallest(s)))
                           for m in models.values()]) for s in fractions}
w0 = all_kernels(model)
print(f"seed 0: weights with |w| < 0.5 (round(w) = 0): "
      f"{np.mean(np.abs(w0) < 0.5):.1%}; below 10% of the largest magnitude: "
      f"{np.mean(np.abs(w0) < 0.1 * np.abs(w0).max()):.1%}")

# %% tags=["nbval-ignore-output"]
print(f"round(W) sets {rounded_to_zero.min():.1%} to "
      f"{rounded_to_zero.max():.1%} of the kernel weights to 0 (5 seeds)")
d_round = stats.paired_difference(acc_rounded, base_acc,
                                  names=("round(W)", "trained"))
d_zero = {s: stats.paired_difference(acc_zeroed[s], base_acc,
                                     names=(f"smallest {s:.0%} zeroed",
                                            "trained")) for s in fractions}
half_vs_round = stats.paired_difference(acc_zeroed[0.5], acc_rounded,
                                        names=("50% zeroed", "round(W)"))
for d in (d_round, *d_zero.values(), half_vs_round):
    report(d)

# %% tags=["hide-input", "nbval-ignore-output"]
est = [stats.mean_interval(base_acc)] + [stats.mean_interval(acc_zeroed[s])
                                         for s in fractions]
fig, ax = plt.subplots(figsize=(7, 4))
ax.errorbar([0, *fractions], [e.mean for e in est], fmt="o-", capsize=4,
            yerr=[[e.mean - e.low for e in est],
                  [e.high - e.mean for e in est]],
            label="smallest weights set to zero (mean, 95% CI)")
ax.axhline(acc_rounded.mean(), color="C3", ls="--",
           label="round(W), the article's rule (mean)")
ax.set(xlabel="fraction of each kernel set to zero, no fine-tuning",
       ylabel="test accuracy", title="seed_mlp, 5 seeds")
ax.legend()
fig.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
assert rounded_to_zero.min() > 0.9     # the article's rule zeroes almost all
assert acc_rounded.max() < 0.2         # ... and leaves chance level (0.1)
assert d_zero[0.1].low > -0.02         # the smallest 10% hardly matter
assert half_vs_round.low > 0.5         # half by magnitude: far milder
assert d_zero[0.9].high < -0.3         # 90% without fine-tuning breaks it

# %% tags=["remove-cell", "nbval-ignore-output"]
for s in (0.1, 0.5):
    d = d_zero[s]
    glue(f"zero_{int(100 * s)}", f"{100 * d.mean:+.1f} points "
         f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]", display=False)
glue("zero_90", f"{100 * d_zero[0.9].mean:+.0f}", display=False)

# %% [markdown]
# Rounding to integers keeps the biases and a handful of large weights, and accuracy drops
# to chance on every seed. Zeroing weights by magnitude degrades gracefully at first: the
# smallest tenth costs {glue:text}`zero_10` (mean over the seeds, 95% interval) and half of
# them {glue:text}`zero_50`, without any fine-tuning; this small network has little slack,
# and by 75-90% it breaks ({glue:text}`zero_90` points at 90%). The rest of the book turns these
# observations into algorithms: a scale factor makes rounding harmless
# ({doc}`03_4_quantization`), and masks kept during fine-tuning, with sparsity raised gradually,
# take pruning far beyond what a one-shot cut survives ({doc}`03_1_pruning`).
#
# ## Exercises
#
# 1. Quantize $w = (-0.42, 0.07, 0.31, 0.9)$ to 8-bit symmetric integers by hand:
#    $S = \max|w| / 127$, $Z = 0$. Which codes do you get, and what is the largest error
#    $|w - S q|$? Compare with $\operatorname{round}(w)$.
# 2. Using the storage formula above, what compression ratio do 90 % sparsity, 4-bit codes and
#    5-bit relative indices give? And 50 % sparsity with 8-bit codes and a 1-bit-per-weight
#    bitmask instead of indices (count the mask for all $P$ weights)?
# 3. The experiment above zeroes the same fraction of every layer. Zero instead the globally
#    smallest weights (one threshold for all layers) at 50 % and compare. Which layers lose most?
#
# :::{admonition} Solution 1
# :class: dropdown
# $S = 0.9 / 127 \approx 0.007087$; $w / S = (-59.27, 9.88, 43.74, 127)$, so
# $q = (-59, 10, 44, 127)$. The reconstruction $S q = (-0.4181, 0.0709, 0.3118, 0.9)$ has error
# at most $0.0019 \le S / 2 = 0.0035$. Rounding without a scale gives $(0, 0, 0, 1)$: three of
# four weights lost.
# :::
#
# :::{admonition} Solution 2
# :class: dropdown
# $32 / (0.1 \cdot (4 + 5)) \approx 35.6\times$. With a bitmask: per weight $1$ bit of mask
# plus $0.5 \cdot 8 = 4$ bits of codes, so $32 / 5 = 6.4\times$; at low sparsity a bitmask beats
# relative indices, at high sparsity indices win.
# :::
#
# :::{admonition} Solution 3
# :class: dropdown
# ```python
# tau = np.quantile(np.abs(all_kernels(model)), 0.5)
# global_half = with_weights(model, lambda w: np.where(np.abs(w) < tau, 0.0, w))
# print(test_acc(global_half), cnl.metrics.layer_sparsity(global_half))
# ```
# On the five networks, global minus per-layer at 50%: {glue:text}`ex3_diff`. On seed 0 the
# global threshold zeroes, per layer: {glue:text}`ex3_layers`. It removes most from the
# largest layer ({glue:text}`ex3_big`), whose weights are smallest, and least from the small
# output layer, and on these networks that was the better choice (the interval above).
# Whether it is elsewhere depends on the network; {doc}`03_1_pruning` measures layer-wise
# against global thresholds with fine-tuning.
# :::

# %% tags=["remove-cell", "nbval-ignore-output"]
def global_half(model):
    tau = np.quantile(np.abs(all_kernels(model)), 0.5)
    return with_weights(model, lambda w: np.where(np.abs(w) < tau, 0.0, w))


acc_global = [test_acc(global_half(m)) for m in models.values()]
d = stats.paired_difference(acc_global, acc_zeroed[0.5],
                            names=("global", "per layer"))
glue("ex3_diff", f"{100 * d.mean:+.1f} points [{100 * d.low:+.1f}, "
     f"{100 * d.high:+.1f}], {d.verdict}", display=False)
layer_s = cnl.metrics.layer_sparsity(global_half(model))
glue("ex3_layers", ", ".join(f"{k} {v:.0%}" for k, v in layer_s.items()),
     display=False)
big = max(kernels, key=lambda k: kernels[k].size)
glue("ex3_big", f"`{big}`, {kernels[big].size:,} of the "
     f"{sum(k.size for k in kernels.values()):,} kernel weights",
     display=False)

# %% tags=["remove-cell"]
# solution 1's codes, by the library
qt = cnl.quantization.quantize(np.array([-0.42, 0.07, 0.31, 0.9]), bits=8)
assert np.array_equal(np.asarray(qt.q).ravel(), [-59, 10, 44, 127])
err = np.abs(cnl.quantization.dequantize(qt) - [-0.42, 0.07, 0.31, 0.9]).max()
assert abs(err - 0.0019) < 5e-5, err
