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
# # Network pruning (网络剪枝, article 3.1.1)
#
# The article describes pruning as deleting "unimportant neurons and connections"
# (删除网络中不重要的神经元和连接), with importance measured by "the absolute value of the weights
# or the size of the gradient" (权重的绝对值或者梯度的大小). Its whole mathematical model is one
# inequality,
#
# $$
# |W_{ij}| < \text{threshold},
# $$
#
# after which "neuron $j$ is unimportant and its connections are deleted" (则认为神经元 $j$ 不重要，
# 并删除其连接). Its code (section 4.1.1) sums the absolute values of each weight array and sets
# `model.layers[i].trainable = False` when the sum is below 10.
#
# This chapter runs that code and shows that it prunes nothing, then gives the mathematics
# that does work (connections versus neurons, layer versus global thresholds, gradual
# schedules, importance criteria), the library functions that implement it, and measured
# results on the bundled digits with the article's MLP and LeNet-300-100.

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import compressnet_lite as cnl
from compressnet_lite.notebook import setup, show_source

setup()
digits = cnl.data.load_digits()
P = cnl.pruning
print(digits.x_train.shape, digits.x_test.shape)

# %% [markdown]
# ## The article's code, run
#
# Here is the article's `Net` and its pruning loop, unchanged except that it trains for 5
# epochs on the digits (the article leaves `x_train` undefined) and the loop is wrapped in
# `try` so that the notebook can show what happens.

# %%
class Net(keras.Model):
    def __init__(self):
        super(Net, self).__init__()
        self.dense1 = keras.layers.Dense(64, activation='relu')
        self.dense2 = keras.layers.Dense(32, activation='relu')
        self.dense3 = keras.layers.Dense(10, activation='softmax')

    def call(self, x):
        x = self.dense1(x)
        x = self.dense2(x)
        x = self.dense3(x)
        return x


keras.utils.set_random_seed(0)
model = Net()
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
model.fit(digits.x_train, digits.y_train, epochs=5, verbose=0)
before_weights = [w.copy() for w in model.get_weights()]
before_pred = model.predict(digits.x_test, verbose=0)

# 计算每个神经元的权重绝对值 (the article's loop)
weights = model.get_weights()
abs_values = [np.abs(weight).sum() for weight in weights]
threshold = 10
frozen = []
try:
    for i, abs_value in enumerate(abs_values):
        if abs_value < threshold:
            model.layers[i].trainable = False
            frozen.append(model.layers[i].name)
except IndexError as exc:
    print(f"IndexError at i={i}: {exc}")
print("sums of |w| per weight array:", [round(float(a), 1) for a in abs_values])
print("layers frozen:", frozen)
print("non-zero weights before/after:", cnl.metrics.count_nonzero(before_weights),
      cnl.metrics.count_nonzero(model.get_weights()))

# %%
after_pred = model.predict(digits.x_test, verbose=0)
assert all(np.array_equal(a, b) for a, b in zip(before_weights, model.get_weights()))
assert np.array_equal(before_pred, after_pred)
assert cnl.metrics.count_nonzero(model.get_weights()) == cnl.metrics.count_nonzero(before_weights)

# %% [markdown]
# Three things go wrong:
#
# 1. `get_weights()` returns six arrays (a kernel and a bias per layer) but the model has
#    three layers, so index `i` of a weight array is not index `i` of a layer. The small
#    sums belong to the *biases* (arrays 1, 3, 5); array 1 freezes `dense2` (not the layer the
#    bias belongs to), and array 3 raises `IndexError`.
# 2. `trainable = False` only stops future gradient updates. No weight becomes zero, the
#    outputs are bit-for-bit identical, the file is just as large and inference just as slow.
# 3. Summing $|W|$ over a *whole layer* and comparing it to a fixed 10 mixes the article's two
#    ideas: the formula $|W_{ij}| < \text{threshold}$ is about single connections, while
#    removing a neuron needs a score per neuron. A layer-level sum depends mostly on how many
#    weights the layer has.

# %% [markdown]
# ## The mathematics that works
#
# **Connection (unstructured) pruning** {cite}`lecun1990optimal,han2015learning` multiplies each
# kernel by a binary mask $M$:
#
# $$
# W' = M \odot W, \qquad M_{ij} = \begin{cases} 0 & s_{ij} \text{ among the } k \text{ lowest scores} \\ 1 & \text{otherwise} \end{cases}
# $$
#
# with score $s_{ij} = |W_{ij}|$ for magnitude pruning. The article's threshold is the same
# rule written with $t$ instead of $k$: choosing $t$ as the $k$-th smallest $|W_{ij}|$ gives
# sparsity $k / n$. A sparsity target is easier to use than a threshold because weight scales
# differ between layers and models.
#
# **Layer versus global scope.** With *layer* scope every layer loses the same fraction;
# with *global* scope one threshold is shared by all layers, so layers with many small weights
# (the large first layer) lose more and small, critical layers (the output layer) less.
#
# **Keeping the zeros while fine-tuning.** Pruning costs accuracy, and the survivors are
# retrained. An optimizer step $W \leftarrow W - \eta \nabla L$ would revive pruned weights, and
# with Adam even a zero gradient moves a weight through its momentum. The update must be
# masked *after* the optimizer: $W \leftarrow M \odot (W - \eta\, \mathrm{step})$. The library
# stores $M$ as a non-trainable `cnl_mask` weight of the layer and applies it with a kernel
# constraint, which Keras runs after every update inside the compiled training step.
#
# **Gradual pruning** {cite}`zhu2017prune` raises the sparsity during training instead of
# removing everything at once:
#
# $$
# s_t = s_f + (s_i - s_f) \left(1 - \frac{t - t_0}{n \Delta t}\right)^3, \qquad t \in \{t_0, t_0 + \Delta t, \dots, t_0 + n\Delta t\},
# $$
#
# pruning fast while there are many redundant weights and slowly near the end.
#
# **Criteria.** The article's "gradient size" is $|\partial L / \partial W_{ij}|$. A weight's
# importance is really the change in loss when it is removed. To first order
# {cite}`molchanov2017pruning`,
#
# $$
# \Delta L_{ij} \approx \left| \frac{\partial L}{\partial W_{ij}} \, W_{ij} \right|
# \quad \text{(Taylor)},
# $$
#
# but at a trained minimum the mean gradient is close to zero, and the second-order term
# $\tfrac12 H_{ii} W_{ij}^2$ of Optimal Brain Damage {cite}`lecun1990optimal` dominates, which
# is why plain magnitude works so well. The measurements below show this.
#
# **Neuron (structured) pruning** removes whole units: column $j$ of a Dense kernel (or
# filter $j$ of a convolution) and row $j$ of the next layer's kernel. The score is a norm of
# the unit's incoming weights, e.g. $\lVert W_{:,j} \rVert_1$ {cite}`li2017pruning`, or a
# statistic of its activations on data, such as the average percentage of zeros (APoZ)
# {cite}`hu2016network`. Only this kind of pruning makes a dense model physically smaller
# and faster on ordinary hardware.
#
# ## The library
#
# The masks are plain NumPy. `score_mask` prunes exactly $k$ lowest scores (ties broken by
# position, so results are reproducible):

# %%
show_source(P.score_mask)

# %%
show_source(P.magnitude_mask)

# %% [markdown]
# A worked example: the article's threshold rule and the sparsity rule on a $3 \times 4$ kernel.

# %%
W = np.array([[0.40, -0.05, 0.12, -0.90],
              [0.02, 0.33, -0.21, 0.07],
              [-0.60, 0.15, 0.01, -0.28]])
m_t = P.magnitude_mask(W, threshold=0.2)
m_s = P.magnitude_mask(W, sparsity=0.5)
print("threshold 0.2 ->\n", W * m_t, f"\nsparsity {1 - m_t.mean():.3f}")
print("sparsity 0.5 ->\n", W * m_s)
assert np.array_equal(m_t, m_s)  # here the 6 smallest |w| are exactly those below 0.2

# %%
show_source(P.polynomial_sparsity)

# %%
show_source(P.MaskConstraint)

# %% [markdown]
# ## Measured: one-shot versus gradual pruning
#
# LeNet-300-100 {cite}`han2015learning` (here on the 64-pixel digits: 50K weights) is trained
# for 10 epochs. For each target sparsity it is then
#
# * pruned once by magnitude with no retraining (*one-shot*);
# * pruned once and fine-tuned for 6 epochs with the masks held (*one-shot + fine-tune*);
# * pruned gradually during 6 epochs with the cubic schedule, from 0 to the target over the
#   first 60% of the steps, masks updated every 10 steps (*gradual*).
#
# Both fine-tuned variants see exactly the same data and optimizer steps.

# %%
EPOCHS = 6
steps_per_epoch = int(np.ceil(len(digits.x_train) / 32))
end_step = int(0.6 * EPOCHS * steps_per_epoch)


def accuracy(m):
    return cnl.metrics.accuracy(m, digits.x_test, digits.y_test)


def gradual(base, sparsity, epochs=EPOCHS, end=end_step):
    model = P.prune(base, 0.0)
    callback = P.PruningCallback(P.PolynomialDecay(0.0, sparsity, begin=0, end=end, frequency=10))
    return cnl.models.train(model, digits, epochs=epochs, seed=1, callbacks=[callback])


def one_shot_finetune(base, sparsity, epochs=EPOCHS):
    return cnl.models.train(P.prune(base, sparsity), digits, epochs=epochs, seed=1)


keras.utils.set_random_seed(0)
lenet = cnl.models.train(cnl.models.lenet_300_100(input_shape=(64,)), digits, epochs=10)
dense_acc = accuracy(lenet)
print(f"LeNet-300-100 dense: {cnl.metrics.count_params(lenet):,} parameters, accuracy {dense_acc:.3f}")

# %%
LEVELS = [0.5, 0.8, 0.9, 0.95]
rows, tuned = [], {}
for s in LEVELS:
    tuned[s] = gradual(lenet, s)
    rows.append({"sparsity": s,
                 "one-shot": accuracy(P.prune(lenet, s)),
                 "one-shot + fine-tune": accuracy(one_shot_finetune(lenet, s)),
                 "gradual": accuracy(tuned[s]),
                 "measured sparsity (gradual)": cnl.metrics.sparsity(tuned[s])})
curves = pd.DataFrame(rows).set_index("sparsity")
print(curves.round(3).to_string())

# %%
ax = curves[["one-shot", "one-shot + fine-tune", "gradual"]].plot(marker="o")
ax.axhline(dense_acc, color="grey", ls="--", label="dense")
ax.set(xlabel="sparsity (fraction of weights removed)", ylabel="test accuracy",
       title="LeNet-300-100 on digits: magnitude pruning")
ax.legend()
plt.show()

# %%
assert np.allclose(curves["measured sparsity (gradual)"], LEVELS, atol=0.002)
assert (curves["one-shot"].diff().dropna() < 0).all()           # no retraining: steadily worse
assert curves.loc[0.9, "one-shot"] < dense_acc - 0.2            # ...and far worse at 90%
assert curves.loc[0.8, "gradual"] >= dense_acc - 0.01            # 5x fewer weights, same accuracy
assert curves.loc[0.8, "one-shot + fine-tune"] >= dense_acc - 0.01
gap = curves["gradual"] - curves["one-shot + fine-tune"]
print("gradual minus one-shot + fine-tune:", gap.round(3).to_dict())
assert (gap >= 0).all() and gap[0.95] > 0.02 and gap[0.95] > 4 * gap[0.5]

# %% [markdown]
# What the numbers say:
#
# * Without retraining, accuracy falls steeply past 50%: pruning is a two-step method
#   (prune, then retrain the survivors), as in Han et al. {cite}`han2015learning`.
# * With retraining, LeNet-300-100 keeps its accuracy (within one point) at 80% sparsity,
#   either way.
# * Gradual pruning is at least as good at every level, but the advantage is small until the
#   sparsity is extreme: a fraction of a point up to 90%, about three points at 95%. A
#   one-shot cut at 95% removes weights the network still needs, and retraining the
#   survivors cannot bring them back; the gradual schedule lets the network move their work
#   onto other weights while they are still there. Gale et al. {cite}`gale2019state` report
#   the same pattern on large models: the schedule matters most at extreme sparsity.
#
# ### The article's MLP at 90%
#
# The same comparison on the article's `Net` (6,570 parameters, 10 epochs of fine-tuning).

# %%
keras.utils.set_random_seed(0)
seed = cnl.models.train(cnl.models.seed_mlp(), digits, epochs=10)
seed_dense = accuracy(seed)
seed_end = int(0.6 * 10 * steps_per_epoch)
seed_one = accuracy(one_shot_finetune(seed, 0.9, epochs=10))
seed_grad = accuracy(gradual(seed, 0.9, epochs=10, end=seed_end))
print(f"seed MLP dense {seed_dense:.3f}; 90% one-shot + fine-tune {seed_one:.3f}; "
      f"90% gradual {seed_grad:.3f}")

# %%
assert seed_one < seed_dense - 0.05 and seed_grad < seed_dense - 0.05
assert seed_one > seed_grad

# %% [markdown]
# Both lose several points, and here the gradual schedule is *worse* than one-shot pruning
# with fine-tuning: at 90% the small MLP keeps only 657 weights, no schedule gives back
# capacity that is not there, and the gradual run spends only its last 4 epochs at the final
# mask while the one-shot run retrains for all 10. (Its 10-unit output layer alone loses 288 of its 320
# weights under layer scope; global scope below spares it.) LeNet-300-100 keeps 5,000 weights
# at the same sparsity and loses about one point. Pruning works on *over-parameterized*
# networks; the article's tiny example is close to the worst case.
#
# ## Criteria: magnitude, gradient, Taylor
#
# One-shot pruning of the trained LeNet-300-100, no retraining, with three criteria scored on
# the training set.

# %%
crit_rows = []
for crit in ["magnitude", "gradient", "taylor"]:
    crit_rows.append({"criterion": crit, **{f"{s:.0%}": accuracy(P.prune(lenet, s, criterion=crit, data=digits))
                                            for s in [0.5, 0.8, 0.9]}})
criteria = pd.DataFrame(crit_rows).set_index("criterion")
print(criteria.round(3).to_string())

# %%
assert (criteria.loc["magnitude"] > criteria.loc["gradient"]).all()
assert (criteria.loc["magnitude"] > criteria.loc["taylor"]).all()
assert (criteria.loc["taylor", ["50%", "80%"]] > criteria.loc["gradient", ["50%", "80%"]]).all()
assert (criteria.loc[["gradient", "taylor"], "90%"] < 0.2).all()  # near chance (0.1)

# %% [markdown]
# The article's "gradient size" criterion is the worst of the three: at a minimum, weights
# with small gradients include the large, important ones that the network has settled. The
# first-order Taylor score $|w\,\partial L/\partial w|$ is better than the plain gradient at
# 50% and 80% (the $|w|$ factor brings magnitude back in) but far below magnitude at every
# level, and at 90% both gradient-based scores leave a model close to chance: the gradient
# factor is near zero for a trained network, so it ranks weights largely by noise.
# Molchanov et al. {cite}`molchanov2017pruning` apply the Taylor criterion to whole feature
# maps, averaging over many examples, and interleave pruning with training; for single
# weights of a converged network, magnitude is the robust default.
#
# ## Layer versus global thresholds

# %%
scope_rows = []
for s in [0.5, 0.8, 0.9]:
    scope_rows.append({"sparsity": s, "layer": accuracy(P.prune(lenet, s, scope="layer")),
                       "global": accuracy(P.prune(lenet, s, scope="global"))})
scopes = pd.DataFrame(scope_rows).set_index("sparsity")
print(scopes.round(3).to_string())
per_layer = cnl.metrics.layer_sparsity(P.prune(lenet, 0.9, scope="global"))
print("global 90%, sparsity per layer:", {k: round(float(v), 3) for k, v in per_layer.items()})

# %%
fig, ax = plt.subplots()
ax.bar(list(per_layer), list(per_layer.values()))
ax.axhline(0.9, color="grey", ls="--", label="overall 90%")
ax.set(ylabel="sparsity", title="Global magnitude pruning at 90%: sparsity per layer")
ax.legend()
plt.show()

# %%
assert (scopes["global"] >= scopes["layer"]).all()
assert per_layer["out"] < 0.7 < 0.85 < per_layer["fc1"]

# %% [markdown]
# One global threshold prunes the output layer (1,000 weights that every class depends on)
# far less than the hidden layers, and it is at least as accurate at every level.
#
# ## What pruning does to the weights
#
# Histograms of `fc2`'s weights before pruning and after gradual pruning to 90% with
# fine-tuning: the small weights are gone, and the survivors have grown to compensate.

# %%
w_before = lenet.get_layer("fc2").get_weights()[0].ravel()
w_after = tuned[0.9].get_layer("fc2").get_weights()[0].ravel()
w_after = w_after[w_after != 0]
fig, ax = plt.subplots()
bins = np.linspace(-0.6, 0.6, 121)
ax.hist(w_before, bins=bins, alpha=0.6, label=f"dense ({w_before.size:,} weights)")
ax.hist(w_after, bins=bins, alpha=0.6, label=f"90% pruned, non-zeros ({w_after.size:,})")
ax.set(xlabel="weight value", ylabel="count", yscale="log", title="fc2 weights")
ax.legend()
plt.show()
print(f"smallest surviving |w|: {np.abs(w_after).min():.4f}; "
      f"median |w| dense {np.median(np.abs(w_before)):.3f} -> survivors {np.median(np.abs(w_after)):.3f}")

# %%
assert np.median(np.abs(w_after)) > 2 * np.median(np.abs(w_before))

# %% [markdown]
# ## Structured pruning: a smaller, faster model
#
# `prune_neurons` scores each unit (here by the L1 norm of its incoming weights) and removes
# the lowest ones with `surgery.keep_units`, which also deletes the matching rows of the next
# layer's kernel. The result is an ordinary, smaller Keras model, numerically identical to
# the original with those units' outgoing weights zeroed:

# %%
show_source(cnl.surgery.fold_inputs)

# %%
small = P.prune_neurons(lenet, 0.5)
masked = keras.models.clone_model(lenet)
masked.set_weights(lenet.get_weights())
for name, nxt in [("fc1", "fc2"), ("fc2", "out")]:
    removed = np.setdiff1d(np.arange(lenet.get_layer(name).units),
                           np.flatnonzero(P.score_mask(P.l1_scores(lenet.get_layer(name).get_weights()[0]), 0.5)))
    k, b = masked.get_layer(nxt).get_weights()
    k[removed] = 0.0
    masked.get_layer(nxt).set_weights([k, b])
print([(l.name, l.units) for l in small.layers[1:]])
assert np.allclose(small.predict(digits.x_test, verbose=0), masked.predict(digits.x_test, verbose=0),
                   atol=1e-5)

# %%
x256 = digits.x_test[:256]
struct_rows = []
for f in [0.0, 0.25, 0.5, 0.75]:
    m = lenet if f == 0 else P.prune_neurons(lenet, f)
    no_ft = accuracy(m)
    if f:
        m = cnl.models.train(m, digits, epochs=3, seed=1)
    struct_rows.append({"units removed": f, "parameters": cnl.metrics.count_params(m),
                        "MACs": cnl.metrics.flops(m), "accuracy, no fine-tune": no_ft,
                        "accuracy, 3 epochs": accuracy(m), "model": m})
structured = pd.DataFrame(struct_rows).set_index("units removed")
print(structured.drop(columns="model").round(3).to_string())

# %% tags=["nbval-ignore-output"]
structured["latency ms (batch 256)"] = [cnl.metrics.latency(m, x256, runs=50).median * 1e3
                                        for m in structured["model"]]
print(structured[["MACs", "latency ms (batch 256)"]].round(3).to_string())

# %%
assert (structured["parameters"].diff().dropna() < 0).all()
assert structured.loc[0.5, "accuracy, 3 epochs"] >= dense_acc - 0.01
mac_ratio = structured.loc[0.0, "MACs"] / structured.loc[0.5, "MACs"]
print(f"MACs divided by {mac_ratio:.2f} when half the hidden units go")
assert 2.5 < mac_ratio < 3.2
assert structured.loc[0.75, "accuracy, no fine-tune"] < structured.loc[0.75, "accuracy, 3 epochs"]

# %% [markdown]
# Removing half of the units of each hidden layer divides the MACs by about 2.85 (both
# layers shrink and `fc2`'s inputs shrink too), and after three epochs of fine-tuning the
# accuracy is within one point of the dense model. The latency column is measured on this
# machine (it varies from run to run); on a model this small, fixed per-call costs hide part of
# the saving. On MNIST-sized inputs (784-300-100-10) the benchmark
# `benchmarks/pruning_vs_tfmot.py` measured a batch of 256 1.8x faster for 2.1x fewer MACs
# with half of the units removed, but only 2.3x faster for 4.4x fewer MACs at 75 % and 3.7x
# for 11x at 90 %: the smaller the layers, the more the fixed costs dominate
# (`benchmarks/RESULTS.md`).
# Unstructured sparsity, by contrast, gives no speed-up at all with dense kernels: the zeros
# are still multiplied.
#
# Data-driven neuron criteria need a batch of inputs; APoZ {cite}`hu2016network` removes the
# units that are most often zero after the ReLU. Accuracy without fine-tuning:

# %%
neuron_rows = [{"criterion": c, **{f"{f:.0%}": accuracy(P.prune_neurons(lenet, f, criterion=c, data=digits))
                                   for f in [0.25, 0.5]}} for c in ["l1", "l2", "apoz", "mean_activation"]]
neuron_crit = pd.DataFrame(neuron_rows).set_index("criterion")
print(neuron_crit.round(3).to_string())

# %%
assert neuron_crit.loc["l1", "50%"] > neuron_crit.loc["apoz", "50%"]

# %% [markdown]
# On this small ReLU network the L1 norm of the incoming weights is the best of the four at
# 50%; APoZ, designed for large convolutional networks with many rarely-active units, is the
# worst. All four are within about a point at 25%, and fine-tuning recovers most of the loss
# (for L1, the table above).

# %% [markdown]
# ## 2:4 sparsity
#
# Sparse tensor cores on recent GPUs run a matrix product twice as fast when every group of
# four consecutive inputs has at most two non-zero weights {cite}`mishra2021accelerating`. The
# mask is a per-group top-2:

# %%
show_source(P.nm_mask)

# %% [markdown]
# Any mask can be imposed through a custom criterion (a callable returning scores), here the
# 2:4 mask itself:

# %%
def two_four(model, layers, data=None):
    return [P.nm_mask(layer.get_weights()[0], n=2, m=4) for layer in layers]


nm = P.prune(lenet, 0.5, criterion=two_four)
nm_one = accuracy(nm)
nm = cnl.models.train(nm, digits, epochs=3, seed=1)
groups = nm.get_layer("fc2").get_weights()[0].T.reshape(-1, 4)
print(f"2:4 one-shot {nm_one:.3f}, after 3 epochs {accuracy(nm):.3f} (dense {dense_acc:.3f}); "
      f"non-zeros per group of 4: max {np.count_nonzero(groups, axis=1).max()}")

# %%
assert np.count_nonzero(groups, axis=1).max() <= 2
assert accuracy(nm) >= dense_acc - 0.01

# %% [markdown]
# 50% sparsity in the 2:4 pattern costs nothing here after brief fine-tuning. On this CPU the
# model is not faster (the kernels are dense); the speed-up needs hardware that reads the
# pattern.
#
# ## Bytes on disk
#
# Zeros only save space when the file format skips them. `sparse_bytes` writes the weights
# four ways and measures the files: all dense float32 (`.npz`), a bitmask plus the non-zero
# values, the `.keras` file, and the `.keras` file gzipped.

# %% tags=["nbval-ignore-output"]
sizes = pd.DataFrame({"dense LeNet": P.sparse_bytes(lenet)._asdict(),
                      "90% gradual": P.sparse_bytes(tuned[0.9])._asdict()}).T
print(sizes.to_string())
print(f"bitmask file: {sizes.loc['dense LeNet', 'dense'] / sizes.loc['90% gradual', 'sparse']:.1f}x smaller "
      "than the dense one")

# %%
assert sizes.loc["90% gradual", "sparse"] < sizes.loc["dense LeNet", "dense"] / 5
assert sizes.loc["dense LeNet", "keras_gzip"] > 0.8 * sizes.loc["dense LeNet", "keras"]
assert sizes.loc["90% gradual", "keras_gzip"] < sizes.loc["dense LeNet", "keras_gzip"] / 4

# %% [markdown]
# A bitmask costs one bit per weight plus 32 bits per survivor: at 90% sparsity that is
# $0.1 \cdot 32 + 1 = 4.2$ bits per weight instead of 32 (7.6x less); the biases, kept dense,
# and the file's headers bring the measured gain to about 6.6x.
# Gzip of the dense model gains almost nothing (float mantissas look random), but gzip finds
# the runs of zeros in the pruned model. Relative indices, quantized values and Huffman
# coding {cite}`han2016deep` go further; see {doc}`03_5_combining`.
#
# ## Summary
#
# | the article | what holds |
# |---|---|
# | $\lvert W_{ij} \rvert < \text{threshold}$ deletes neuron $j$ | it deletes *connection* $ij$; neurons need a per-neuron score (norm, APoZ) |
# | `layer.trainable = False` prunes | it prunes nothing: weights and outputs are unchanged |
# | weight or gradient magnitude | magnitude works; gradient magnitude is the worst criterion measured here |
# | prune once | prune, then retrain with the masks held; gradual schedules help at extreme sparsity on a large enough network |
#
# ## Exercises
#
# 1. Apply the article's rule literally with the library: prune every kernel of the trained
#    LeNet-300-100 with `magnitude_mask(w, threshold=0.05)`. Which sparsity does each layer
#    reach, and why do they differ?
# 2. Write a criterion callable for the diagonal Fisher approximation of Optimal Brain Damage,
#    $s_{ij} = W_{ij}^2 \, \mathbb{E}[g_{ij}^2]$, with per-batch gradients, and compare it
#    with magnitude at 80% (no fine-tuning).
# 3. Prune the seed MLP at 90% with `scope="global"` and fine-tune it as above. Does sparing
#    the output layer help?
#
# :::{admonition} Solution 1
# :class: dropdown
# ```python
# for layer in lenet.layers[1:]:
#     w = layer.get_weights()[0]
#     print(layer.name, 1 - P.magnitude_mask(w, threshold=0.05).mean())
# ```
# About 36% of `fc1`, 38% of `fc2` and only 18% of `out`. Glorot initialization draws each
# layer's weights from $\pm\sqrt{6/(n_\text{in}+n_\text{out})}$: 0.13 for `fc1`, 0.12 for
# `fc2`, 0.23 for the 100-to-10 output layer. The layers start (and stay) on different
# scales (median $|w|$ 0.07 against 0.14), so one absolute threshold means a different
# sparsity per layer. This
# is why the library takes a sparsity rather than a threshold, and why global scope compares
# weights across layers only deliberately.
# :::
#
# :::{admonition} Solution 2
# :class: dropdown
# ```python
# import tensorflow as tf
#
# def fisher(model, layers, data):
#     x, y = data.x_train, data.y_train
#     loss_fn = keras.losses.SparseCategoricalCrossentropy()
#     acc = [np.zeros(l.kernel.shape) for l in layers]
#     for i in range(0, len(x), 32):
#         with tf.GradientTape() as tape:
#             loss = loss_fn(y[i:i + 32], model(x[i:i + 32]))
#         for a, g in zip(acc, tape.gradient(loss, [l.kernel for l in layers])):
#             a += g.numpy() ** 2
#     return [l.get_weights()[0] ** 2 * a for l, a in zip(layers, acc)]
#
# print(accuracy(P.prune(lenet, 0.8, criterion=fisher, data=digits)))
# ```
# Squaring per-batch gradients before averaging keeps the information that the mean gradient
# loses at a minimum, and the $W^2$ factor brings magnitude back in. On this model it matches
# magnitude at 50% (0.964) and is far better than the plain gradient or Taylor scores at 80%
# (about 0.52 against 0.17-0.20), but still well below magnitude (0.86): the diagonal
# Fisher is a rough stand-in for the Hessian of a network this small.
# :::
#
# :::{admonition} Solution 3
# :class: dropdown
# ```python
# g = cnl.models.train(P.prune(seed, 0.9, scope="global"), digits, epochs=10, seed=1)
# print(accuracy(g), cnl.metrics.layer_sparsity(g))
# ```
# Global scope leaves the output layer much denser (about 53% sparse) and the first layer
# sparser (94%). After fine-tuning the accuracy is about 0.93 against 0.88 with layer scope:
# sparing the output layer is worth five points, though with 657 weights the model stays below
# the dense 0.96.
# :::
