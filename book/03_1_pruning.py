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
# that does work (connections versus neurons, layer versus global thresholds, Han et al.'s
# prune-retrain loop and regularisation, gradual schedules, importance criteria), the
# library functions that implement it, and results measured over five training seeds on
# the bundled digits with the article's MLP and LeNet-300-100.

# %%
import time

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown
from myst_nb import glue

import compressnet_lite as cnl
from compressnet_lite import stats
from compressnet_lite.notebook import setup, show_source

setup()
data = cnl.data.load()  # the digits; CNL_DATA=mnist:PATH switches to MNIST
P = cnl.pruning
print(data.x_train.shape, data.x_test.shape)

# %% [markdown]
# ## The article's code, run
#
# Here is the article's `Net` and its pruning loop, unchanged except that it trains for 5
# epochs on the digits (the article leaves `x_train` undefined) and the loop is wrapped in
# `try` so that the notebook can show what happens.

# %% tags=["nbval-ignore-output"]
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
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy',
              metrics=['accuracy'])
model.fit(data.x_train, data.y_train, epochs=5, verbose=0)
before_weights = [w.copy() for w in model.get_weights()]
before_pred = model.predict(data.x_test, verbose=0)

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

# %%
after_pred = model.predict(data.x_test, verbose=0)
same = [np.array_equal(a, b)
        for a, b in zip(before_weights, model.get_weights())]
print("weight arrays unchanged:", all(same),
      "| predictions unchanged:", np.array_equal(before_pred, after_pred))
assert all(same) and np.array_equal(before_pred, after_pred)
assert cnl.metrics.count_nonzero(model.get_weights()) == \
    cnl.metrics.count_nonzero(before_weights)

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
# **How much per layer?** Layers are not equally sensitive. Han et al. pruned each layer
# alone, measured the accuracy, and chose each layer's threshold from those curves. Such a
# *sensitivity scan*, and an allocator that spends a budget where it costs least accuracy,
# are run in section 2 ("Adaptive optimisation") of {doc}`06_future`; here the two fixed
# rules above are compared.
#
# **Han et al.'s loop** {cite}`han2015learning` has three steps: train the dense network
# (to learn *which* connections matter), prune the small weights, and retrain the
# survivors. Pruning and retraining are then repeated, each round at a higher sparsity;
# Han et al. found this *iterative* pruning reaches a higher sparsity at the same accuracy
# than one aggressive cut. Two details of theirs matter here:
#
# * the survivors are retrained from their trained values: re-initialising the pruned
#   network and training it from scratch was worse (the lottery-ticket aside below measures
#   a refinement of that observation);
# * **regularisation** decides how many weights are near zero when pruning starts. An L1
#   penalty $\lambda \sum |w|$ has the gradient $\lambda\,\mathrm{sign}(w)$, which pushes
#   every weight towards zero at the same speed, so many small weights end up near zero; an
#   L2 penalty $\lambda \sum w^2$ has the gradient $2\lambda w$, which shrinks weights in
#   proportion and leaves few near zero. Han et al. report that L1 gives the better accuracy
#   right after pruning, L2 the better one after retraining.
#
# **Keeping the zeros while fine-tuning.** An optimizer step $W \leftarrow W - \eta \nabla L$
# would revive pruned weights, and with Adam even a zero gradient moves a weight through
# its momentum. The update must be masked *after* the optimizer:
# $W \leftarrow M \odot (W - \eta\, \mathrm{step})$. The library does that inside the
# compiled training step (measured below).
#
# **Gradual pruning** {cite}`zhu2017prune` makes Han et al.'s rounds small and frequent: the
# sparsity rises during training along
#
# $$
# s_t = s_f + (s_i - s_f) \left(1 - \frac{t - t_0}{n \Delta t}\right)^3, \qquad t \in \{t_0, t_0 + \Delta t, \dots, t_0 + n\Delta t\},
# $$
#
# pruning fast while there are many redundant weights and slowly near the end.
#
# **Criteria.** The article's "gradient size" is $|\partial L / \partial W_{ij}|$. A weight's
# importance is really the change in loss when it is removed. Optimal Brain Damage
# {cite}`lecun1990optimal` expands the loss around the trained weights $w$ (one index $q$
# per weight):
#
# $$
# \delta L \approx \sum_q g_q\, \delta w_q + \tfrac12 \sum_q H_{qq}\, \delta w_q^2
# + \tfrac12 \sum_{q \ne r} H_{qr}\, \delta w_q\, \delta w_r ,
# $$
#
# with $g = \partial L / \partial w$ and $H$ the Hessian. Removing weight $q$ means
# $\delta w_q = -w_q$. The first-order term alone gives the Taylor score
# $|g_q w_q|$ {cite}`molchanov2017pruning`; but at a trained minimum the mean gradient is
# close to zero, and OBD drops the cross terms and keeps the saliency
# $\tfrac12 H_{qq} w_q^2$, which is why plain magnitude works so well. The measurements
# below show this.
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
assert np.array_equal(m_t, m_s)  # the 6 smallest |w| are those below 0.2

# %%
show_source(P.polynomial_sparsity)

# %% [markdown]
# ### How the zeros are kept, and what it costs
#
# `P.prune(model, s)` returns a new model in which each pruned Dense/Conv2D layer is a
# `PrunableDense`/`PrunableConv2D`: the same layer plus a non-trainable weight `cnl_mask`
# shaped like the kernel, and a `MaskConstraint` set as the kernel variable's constraint.
# Keras' optimizers apply a variable's constraint right after updating it, inside the
# compiled training step: the kernel is replaced by `kernel * cnl_mask` after every step,
# so every forward pass sees exact zeros and no Python code runs between batches.

# %%
show_source(P.MaskConstraint)

# %% [markdown]
# What that costs: one element-wise multiply and one assignment per kernel weight per step
# (the forward and backward passes cost about three multiply-adds per weight *per example*,
# so this is small next to them); one float32 mask per weight, on top of the kernel and Adam's
# two moment slots; and no saving at all during training, since gradients and Adam moments
# are still computed for the pruned weights (the arrays stay dense). `P.strip` returns a plain
# Keras model with the zeros and no masks once training is over. The alternative, a callback
# that re-zeroes the weights from Python after every batch, keeps the same zeros at batch
# boundaries but pays a round trip to Python per batch, and it breaks when Keras runs several
# batches per call (`steps_per_execution > 1`). Measured on LeNet-300-100, time per epoch of
# training (median of 5 epochs each, alternating the two models, after a first epoch that
# compiles the step); the difference is small next to the timing noise of a shared machine:

# %% tags=["nbval-ignore-output"]
def lenet():
    return cnl.models.lenet_300_100(data.input_shape, data.num_classes)


keras.utils.set_random_seed(0)
probe = cnl.models.train(lenet(), data, epochs=1)
timed = {"dense": cnl.models.train(cnl.models.clone(probe), data, epochs=1),
         "masked (90%)": cnl.models.train(P.prune(probe, 0.9), data, epochs=1)}
seconds = {name: [] for name in timed}
for _ in range(5):  # alternate the two, so that load on the machine hits both
    for name, model in timed.items():
        start = time.perf_counter()
        model.fit(data.x_train, data.y_train, epochs=1, verbose=0)
        seconds[name].append(time.perf_counter() - start)
cost = {name: float(np.median(s)) for name, s in seconds.items()}
print({name: f"{1e3 * s:.0f} ms" for name, s in cost.items()},
      f"ratio {cost['masked (90%)'] / cost['dense']:.2f}")
masked = timed["masked (90%)"]

# %%
# trained for 6 epochs with Adam: the pruned weights are still exactly zero
for layer in masked.layers[1:]:
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    mask = keras.ops.convert_to_numpy(layer.cnl_mask)
    assert np.all(kernel[mask == 0] == 0) and np.count_nonzero(kernel) > 0
print("pruned weights still exactly zero after training:",
      P.masks(masked).keys() == {"fc1", "fc2", "out"})

# %% [markdown]
# ## How the comparisons are made
#
# On 450 test images one image is 0.22 points, and two trainings that differ only in their
# random seed differ by a point or more. Every comparison below is therefore repeated over
# five seeds (each seed trains its own dense LeNet-300-100 from its own initialisation and
# shuffles the data its own way) and reported as the mean paired difference with a 95%
# interval, `stats.paired_difference(a, b)` (the paired $t$ interval of `scipy.stats`).
# Where the interval includes zero the two methods are **indistinguishable here**: five
# seeds on this test set cannot tell them apart, whatever the means say.

# %% tags=["nbval-ignore-output"]
SEEDS = range(5)
EPOCHS = 6  # fine-tuning epochs: the same for every pruning method
steps = EPOCHS * int(np.ceil(len(data.x_train) / 32))  # optimizer steps in them


def accuracy(m):
    return cnl.metrics.accuracy(m, data.x_test, data.y_test)


inits, bases = [], []
for seed in SEEDS:
    keras.utils.set_random_seed(seed)
    net = lenet()
    inits.append(net.get_weights())  # kept for the lottery-ticket aside
    bases.append(cnl.models.train(net, data, epochs=10, seed=seed))
dense = np.array([accuracy(m) for m in bases])
print(f"LeNet-300-100: {cnl.metrics.count_params(bases[0]):,} parameters;",
      "dense accuracy", stats.mean_interval(dense))

# %% [markdown]
# ## Measured: retraining, and the schedule
#
# For each seed the trained LeNet-300-100 {cite}`han2015learning` (here on the 64-pixel
# digits: 50K weights) is pruned by magnitude
#
# * once, with no retraining (*one-shot*), at 50, 80, 90 and 95% sparsity;
# * once and fine-tuned for 6 epochs with the masks held (*one-shot + fine-tune*);
# * in Han et al.'s loop: three rounds of pruning and 2 epochs of retraining each, at the
#   sparsities of the cubic curve at the end of each round (*iterative*);
# * gradually during the 6 epochs with the cubic schedule, from 0 to the target over the
#   first 60% of the steps, masks updated every 10 steps (*gradual*).
#
# All three fine-tuned variants see exactly the same data and optimizer steps. A schedule is
# any callable `step -> (update now?, sparsity)`, so Han et al.'s rounds are a four-line
# function for the same `PruningCallback` that runs the gradual schedule:

# %% tags=["nbval-ignore-output"]
def han_rounds(final, rounds=3):
    """Prune at the start of each of `rounds` equal retraining rounds."""
    def schedule(step):
        r, into = divmod(step, steps // rounds)
        if into == 0 and r < rounds:
            return True, P.polynomial_sparsity(r + 1, 0.0, final, 0, rounds)
        return False, 0.0
    return schedule


def fine_tune(model, seed, schedule=None):
    callbacks = [P.PruningCallback(schedule)] if schedule else []
    return cnl.models.train(model, data, epochs=EPOCHS, seed=seed,
                            callbacks=callbacks)


def one_shot(base, s, seed):
    return fine_tune(P.prune(base, s), seed)


def iterative(base, s, seed):
    return fine_tune(P.prune(base, 0.0), seed, han_rounds(s))


def gradual(base, s, seed):
    cubic = P.PolynomialDecay(0.0, s, begin=0, end=int(0.6 * steps),
                              frequency=10)
    return fine_tune(P.prune(base, 0.0), seed, cubic)


LEVELS = [0.5, 0.8, 0.9, 0.95]
no_retrain = {s: np.array([accuracy(P.prune(b, s)) for b in bases])
              for s in LEVELS}
pairs = list(zip(bases, SEEDS))
retrained_80 = np.array([accuracy(one_shot(b, 0.8, seed)) for b, seed in pairs])
METHODS = {"one-shot + fine-tune": one_shot, "iterative": iterative,
           "gradual": gradual}
at_95 = {name: [fn(b, 0.95, seed) for b, seed in pairs]
         for name, fn in METHODS.items()}
acc_95 = {name: np.array([accuracy(m) for m in ms])
          for name, ms in at_95.items()}
print("sparsity reached by every gradual run:",
      sorted({round(cnl.metrics.sparsity(m), 3) for m in at_95["gradual"]}))

# %% tags=["hide-input", "nbval-ignore-output"]
def cell(values):
    e = stats.mean_interval(values)
    return f"{100 * e.mean:.1f} [{100 * e.low:.1f}, {100 * e.high:.1f}]"


def table(columns):
    """Mean [95% interval] per column over the seeds, as points."""
    return pd.DataFrame({name: {row: cell(v) for row, v in col.items()}
                         for name, col in columns.items()})


print(table({"no retraining": {f"{s:.0%}": v for s, v in no_retrain.items()},
             "dense": {"-": dense}}).fillna("").to_string())
print("\n95% sparsity, 6 epochs:")
print(table({"accuracy": acc_95}).to_string())
print()
d80 = stats.paired_difference(retrained_80, dense,
                              names=("80% one-shot + fine-tune", "dense"))
d95 = {name: stats.paired_difference(acc_95[name], dense, names=(name, "dense"))
       for name in METHODS}
vs = {(a, b): stats.paired_difference(acc_95[a], acc_95[b], names=(a, b))
      for a, b in [("gradual", "one-shot + fine-tune"),
                   ("iterative", "one-shot + fine-tune"),
                   ("gradual", "iterative")]}
for d in [d80, *d95.values(), *vs.values()]:
    print(d)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(8, 4.5))


def with_interval(x, values, **style):
    e = [stats.mean_interval(v) for v in values]
    below = [i.mean - i.low for i in e]
    above = [i.high - i.mean for i in e]
    ax.errorbar(x, [i.mean for i in e], yerr=[below, above], capsize=4, **style)


with_interval(LEVELS, [no_retrain[s] for s in LEVELS], marker="o",
              label="one-shot, no retraining")
for k, (name, v) in enumerate(acc_95.items()):
    with_interval([0.95 + 0.006 * (k - 1)], [v], marker="s", ls="none",
                  color=f"C{k + 1}", label=f"{name}, 6 epochs")
with_interval([0.8], [retrained_80], marker="s", ls="none", color="C1")
ax.axhline(dense.mean(), color="grey", ls="--", label="dense (mean)")
ax.set(xlabel="sparsity (fraction of weights removed)", ylabel="test accuracy",
       title="LeNet-300-100, magnitude pruning: mean and 95% interval, 5 seeds")
ax.legend(loc="lower left")
plt.show()

# %%
means = [no_retrain[s].mean() for s in LEVELS]
assert all(np.diff(means) < 0)  # no retraining: steadily worse, and far worse
assert stats.paired_difference(no_retrain[0.95], dense).high < -0.1
assert d80.high > 0 and d80.low > -0.025  # 5x fewer weights: no measured loss
for d in d95.values():
    assert d.verdict == "dense better"  # at 95% every schedule loses
assert vs["iterative", "one-shot + fine-tune"].verdict == "iterative better"
assert vs["gradual", "one-shot + fine-tune"].verdict == stats.INDISTINGUISHABLE
assert vs["gradual", "iterative"].verdict != "gradual better"

# %% [markdown]
# What the numbers say:
#
# * Without retraining, accuracy falls steeply past 50%: pruning is a two-step method
#   (prune, then retrain the survivors), as in Han et al. {cite}`han2015learning`.
# * With 6 epochs of retraining, 80% sparsity (5x fewer weights) costs no measured accuracy:
#   the paired interval against the dense model includes zero.
# * At 95% every schedule loses several points against the dense model, and the schedule
#   matters: Han et al.'s three prune-retrain rounds beat one cut followed by the same
#   6 epochs of fine-tuning, on the paired statistic. The gradual cubic schedule, on the
#   other hand, is **indistinguishable here** from the one-shot cut. Against the iterative
#   rounds the gradual schedule's interval lies below zero in this run, but ends close to
#   it: weak evidence, which we have not traced to a cause. Gale et al.
#   {cite}`gale2019state` find schedules matter most at extreme sparsity on large models
#   with long training; on this small network and 6 epochs, only the iterative rounds show
#   a measured gain.
#
# ### Regularisation before pruning
#
# Han et al.'s observation about L1 is easy to test: the same five LeNet-300-100 trainings,
# from the same initial weights, with an L1 penalty of $10^{-4}$ on every kernel (Keras
# applies a variable's `regularizer` in `fit`), then one-shot pruning with no retraining.

# %% tags=["nbval-ignore-output"]
def with_penalty(seed, regularizer):
    keras.utils.set_random_seed(seed)
    net = lenet()  # the same initial weights as bases[seed]
    for layer in net.layers[1:]:
        layer.kernel.regularizer = regularizer
    return cnl.models.train(net, data, epochs=10, seed=seed)


l1_bases = [with_penalty(seed, keras.regularizers.L1(1e-4)) for seed in SEEDS]


def near_zero(m):
    return np.mean([np.mean(np.abs(keras.ops.convert_to_numpy(l.kernel)) < 1e-3)
                    for l in m.layers[1:]])


zeros = {"plain": np.mean([near_zero(m) for m in bases]),
         "L1": np.mean([near_zero(m) for m in l1_bases])}
print("kernel weights with |w| < 1e-3 (mean over layers and seeds):",
      {name: f"{z:.1%}" for name, z in zeros.items()})
l1 = {"dense": stats.paired_difference([accuracy(m) for m in l1_bases], dense,
                                       names=("L1", "plain"))}
for s in (0.5, 0.8, 0.9):
    l1[f"{s:.0%}"] = stats.paired_difference(
        [accuracy(P.prune(m, s)) for m in l1_bases], no_retrain[s],
        names=("L1", "plain"))
for label, d in l1.items():
    print(f"{label:>5}, no retraining: {d}")

# %%
assert zeros["L1"] > 2 * zeros["plain"]
assert l1["dense"].low > -0.02  # the penalty costs the dense model little
assert all(d.verdict == stats.INDISTINGUISHABLE
           for label, d in l1.items() if label != "dense")

# %% [markdown]
# The penalty does what the mathematics says: many more weights sit near zero. But at every
# sparsity printed the paired interval includes zero: L1 and no penalty are
# **indistinguishable here** for one-shot pruning, and Han et al.'s observation (made on
# AlexNet and VGG) is not reproduced on this small network. The weights near zero are few
# next to the 50-90% that are cut, and the penalty does not change which of the larger
# weights matter. Retraining after pruning (above) recovers far more accuracy than any
# penalty before it.
#
# ### The lottery ticket
#
# Han et al. observed that re-initialising a pruned network and training it from scratch
# is worse than retraining the survivors. Frankle and Carbin {cite}`frankle2019lottery`
# refined this: the mask found by pruning a trained network, applied to the network's
# *original* initial weights and trained again, trains as well as the dense network (a
# "winning ticket"), while the same mask on *fresh* random weights does not. One-shot
# version: take the 90% magnitude mask of each trained LeNet-300-100, put it on that seed's
# own initial weights (*rewind*) or on a new random initialisation (*re-init*), and train
# both for the same 10 epochs as the dense network.

# %% tags=["nbval-ignore-output"]
def ticket(weights, masks):
    """LeNet-300-100 with `weights` and the pruning `masks` (kept in fit)."""
    net = lenet()
    net.set_weights(weights)
    net = P.prune(net, 0.0)
    for name, mask in masks.items():
        net.get_layer(name).apply_mask(mask)
    return net


rewind, reinit = [], []
for base, w0, seed in zip(bases, inits, SEEDS):
    masks = P.masks(P.prune(base, 0.9))
    keras.utils.set_random_seed(100 + seed)
    fresh = lenet().get_weights()
    for start, out in ((w0, rewind), (fresh, reinit)):
        net = ticket(start, masks)
        out.append(accuracy(cnl.models.train(net, data, epochs=10, seed=seed)))
lottery = {"rewind vs re-init": stats.paired_difference(
               rewind, reinit, names=("rewind", "re-init")),
           "rewind vs dense": stats.paired_difference(
               rewind, dense, names=("rewind", "dense"))}
for d in lottery.values():
    print(d)

# %%
assert lottery["rewind vs re-init"].verdict == "rewind better"
assert lottery["rewind vs dense"].low > -0.04

# %% [markdown]
# Half of the result reproduces on the digits: at 90% sparsity the rewound ticket beats the
# same mask on fresh weights, on the paired statistic, so what the mask found is not only
# *which* weights to keep but which weights to keep *given their starting values*. The
# other half, that the ticket trains as well as the dense network, does not hold here: the
# rewound ticket ends a point or two below the dense model it came from (the second
# interval). Frankle and Carbin prune
# iteratively (and, for deeper networks, rewind to an early training step rather than to
# initialisation); this one-shot version at one sparsity is the smallest measurement of the
# idea, not a study of it.
#
# ### The article's MLP at 90%
#
# The same question on the article's `Net` (6,570 parameters): five seeds, 10 epochs of
# training, then 90% one-shot pruning with 6 epochs of fine-tuning.

# %% tags=["nbval-ignore-output"]
def seed_mlp():
    return cnl.models.seed_mlp(data.input_shape[0], data.num_classes)


mlps = []
for seed in SEEDS:
    keras.utils.set_random_seed(seed)
    mlps.append(cnl.models.train(seed_mlp(), data, epochs=10, seed=seed))
mlp_dense = np.array([accuracy(m) for m in mlps])
mlp_90 = [cnl.models.train(P.prune(m, 0.9), data, epochs=EPOCHS, seed=seed)
          for m, seed in zip(mlps, SEEDS)]
mlp_loss = stats.paired_difference([accuracy(m) for m in mlp_90], mlp_dense,
                                   names=("90% pruned", "dense"))
print("seed MLP dense", stats.mean_interval(mlp_dense))
print(mlp_loss)

# %%
kept = {l.name: int(np.count_nonzero(keras.ops.convert_to_numpy(l.kernel)))
        for l in mlp_90[0].layers[1:]}
sizes = {l.name: int(np.prod(l.kernel.shape)) for l in mlp_90[0].layers[1:]}
print("kernel weights kept of", sizes, ":", kept, "=", sum(kept.values()))
assert mlp_loss.high < -0.02  # several points lost, with fine-tuning

# %% [markdown]
# The small MLP loses several points even with fine-tuning: at 90% it keeps only the kernel
# weights printed above, 647 of 6,464 on the digits (its 10-unit output layer keeps one
# weight in ten under layer scope; global scope, in the exercises, spares it).
# LeNet-300-100 keeps about eight times as many weights at the same sparsity. Pruning works
# on *over-parameterized* networks; the article's tiny example is close to the worst case.
#
# ## Criteria: magnitude, gradient, Taylor
#
# One-shot pruning of the five trained LeNet-300-100s, no retraining, with three criteria
# scored on the training set (magnitude is the one-shot column above).

# %% tags=["nbval-ignore-output"]
CRIT_LEVELS = (0.5, 0.8, 0.9)
crit = {"magnitude": {s: no_retrain[s] for s in CRIT_LEVELS}}
for name in ("gradient", "taylor"):
    crit[name] = {s: np.array([accuracy(P.prune(b, s, criterion=name,
                                                data=data))
                               for b in bases]) for s in CRIT_LEVELS}
print(table({name: {f"{s:.0%}": v for s, v in c.items()}
             for name, c in crit.items()}).T.to_string())
crit_d = {}
for s in CRIT_LEVELS:
    for a, b in [("magnitude", "taylor"), ("taylor", "gradient")]:
        crit_d[a, b, s] = stats.paired_difference(crit[a][s], crit[b][s],
                                                  names=(a, b))
        print(f"{s:.0%}: {crit_d[a, b, s]}")

# %%
for s in CRIT_LEVELS:
    assert crit_d["magnitude", "taylor", s].verdict == "magnitude better"
for s in (0.5, 0.8):
    assert crit_d["taylor", "gradient", s].verdict == "taylor better"
assert all(crit[c][0.9].mean() < 0.3 for c in ("gradient", "taylor"))

# %% [markdown]
# The article's "gradient size" criterion is the worst of the three: at a minimum, weights
# with small gradients include the large, important ones that the network has settled. The
# first-order Taylor score $|w\,\partial L/\partial w|$ is better than the plain gradient at
# 50% and 80% (the $|w|$ factor brings magnitude back in) but below magnitude at every
# level, and at 90% both gradient-based scores leave a model close to chance: the gradient
# factor is near zero for a trained network, so it ranks weights largely by noise.
# Molchanov et al. {cite}`molchanov2017pruning` apply the Taylor criterion to whole feature
# maps, averaging over many examples, and interleave pruning with training; for single
# weights of a converged network, magnitude is the robust default.
#
# ## Layer versus global thresholds

# %% tags=["nbval-ignore-output"]
scope_d = {s: stats.paired_difference(
    [accuracy(P.prune(b, s, scope="global")) for b in bases], no_retrain[s],
    names=("global", "layer")) for s in CRIT_LEVELS}
for s, d in scope_d.items():
    print(f"{s:.0%}, no retraining: {d}")
per_layer = [cnl.metrics.layer_sparsity(P.prune(b, 0.9, scope="global"))
             for b in bases]
print("global 90%, sparsity per layer (seed 0):",
      {k: round(float(v), 3) for k, v in per_layer[0].items()})

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 4))
ax.bar(list(per_layer[0]), list(per_layer[0].values()))
ax.axhline(0.9, color="grey", ls="--", label="overall 90%")
ax.set(ylabel="sparsity",
       title="Global magnitude pruning at 90%: sparsity per layer (seed 0)")
ax.legend()
plt.show()

# %%
assert scope_d[0.5].verdict != "layer better"
assert scope_d[0.8].verdict == scope_d[0.9].verdict == "global better"
assert all(p["out"] < 0.7 < 0.85 < p["fc1"] for p in per_layer)

# %% [markdown]
# One global threshold prunes the output layer (1,000 weights that every class depends on)
# far less than the hidden layers. At 80% and 90% that makes it far more accurate than
# layer scope, on the paired statistic; at 50%, where layer scope still leaves the output
# layer half its weights, the two are indistinguishable here.
#
# ## What pruning does to the weights
#
# Histograms of `fc2`'s weights before pruning and after gradual pruning to 95% with
# fine-tuning (seed 0): the small weights are gone.

# %% tags=["hide-input", "nbval-ignore-output"]
def fc2_kernel(m):
    return keras.ops.convert_to_numpy(m.get_layer("fc2").kernel)


w_before = fc2_kernel(bases[0]).ravel()
w_after = fc2_kernel(at_95["gradual"][0]).ravel()
fig, ax = plt.subplots(figsize=(8, 4))
bins = np.linspace(-0.6, 0.6, 121)
ax.hist(w_before, bins=bins, alpha=0.6,
        label=f"dense ({w_before.size:,} weights)")
ax.hist(w_after[w_after != 0], bins=bins, alpha=0.6,
        label=f"95% pruned, non-zeros ({np.count_nonzero(w_after):,})")
ax.set(xlabel="weight value", ylabel="count", yscale="log", title="fc2 weights")
ax.legend()
plt.show()

# %% tags=["nbval-ignore-output"]
growth = []
for base, tuned in zip(bases, at_95["gradual"]):
    before, after = fc2_kernel(base), fc2_kernel(tuned)
    kept_w = after != 0
    growth.append(np.abs(after[kept_w]).mean() / np.abs(before[kept_w]).mean())
growth = stats.mean_interval(growth, scale=1, unit="")
print("mean |w| of the surviving fc2 weights, after / before:", growth)

# %%
assert growth.low > 1

# %% [markdown]
# The survivors are not only the largest weights of the dense model: fine-tuning makes
# them larger still (the ratio of their mean magnitude after and before is above 1 on
# every seed's interval), taking over the work of the weights that were removed.
#
# ## Structured pruning: a smaller, faster model
#
# `prune_neurons` scores each unit (by default the L1 norm of its weights, averaged over the
# layers that hold them: its column of incoming weights and its row of outgoing weights,
# `P.neuron_scores`) and removes the lowest ones with the shared surgery, which also deletes
# the matching rows of the next layer's kernel. The result is an ordinary, smaller Keras
# model, numerically identical to the original with those units' outgoing weights zeroed.
# (LeNet is a chain; in a residual network channels are coupled across the skip
# connections and must go in groups: {doc}`03_1_1_residual`.)

# %%
show_source(cnl.surgery.fold_inputs)

# %%
lenet0 = bases[0]
small = P.prune_neurons(lenet0, 0.5)
zeroed = cnl.models.clone(lenet0)
for name, nxt in [("fc1", "fc2"), ("fc2", "out")]:
    scores = P.neuron_scores(lenet0, name)  # what prune_neurons ranks by
    removed = np.flatnonzero(P.score_mask(scores, 0.5) == 0)
    k, b = zeroed.get_layer(nxt).get_weights()
    k[removed] = 0.0
    zeroed.get_layer(nxt).set_weights([k, b])
print([(l.name, l.units) for l in small.layers[1:]])
np.testing.assert_allclose(small.predict(data.x_test, verbose=0),
                           zeroed.predict(data.x_test, verbose=0), atol=1e-5)

# %% tags=["nbval-ignore-output"]
half = [cnl.models.train(P.prune_neurons(b, 0.5), data, epochs=3, seed=1)
        for b in bases]
half_d = stats.paired_difference([accuracy(m) for m in half], dense,
                                 names=("half the units, 3 epochs", "dense"))
print(half_d)

# %% tags=["nbval-ignore-output"]
x256 = data.x_test[:256]
struct_rows = []
for f in [0.0, 0.25, 0.5, 0.75]:
    m = lenet0 if f == 0 else P.prune_neurons(lenet0, f)
    no_ft = accuracy(m)
    if f == 0.5:
        m = half[0]  # trained above
    elif f:
        m = cnl.models.train(m, data, epochs=3, seed=1)
    struct_rows.append({"removed": f, "params": cnl.metrics.count_params(m),
                        "MACs": cnl.metrics.flops(m), "no fine-tune": no_ft,
                        "3 epochs": accuracy(m),
                        "ms/256": 1e3 * cnl.metrics.latency(m, x256).median})
structured = pd.DataFrame(struct_rows).set_index("removed")
print("seed 0 (latency measured on this machine, median of 30 runs):")
print(structured.round(3).to_string())

# %%
def dense_macs(widths):
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


n_in, n_out = data.input_shape[0], data.num_classes
assert structured.loc[0.0, "MACs"] == dense_macs([n_in, 300, 100, n_out])
assert structured.loc[0.5, "MACs"] == dense_macs([n_in, 150, 50, n_out])
mac_ratio = structured.loc[0.0, "MACs"] / structured.loc[0.5, "MACs"]
print(f"MACs divided by {mac_ratio:.2f} when half the hidden units go")
assert (structured["params"].diff().dropna() < 0).all()
assert half_d.low > -0.03

# %% [markdown]
# Removing half of the units of each hidden layer divides the MACs by the ratio printed
# above (both layers shrink and `fc2`'s inputs shrink too: $64 \cdot 300 + 300 \cdot 100 +
# 100 \cdot 10$ against $64 \cdot 150 + 150 \cdot 50 + 50 \cdot 10$ on the digits), and after
# three epochs of fine-tuning the paired interval against the dense model stays within a
# couple of points. The latency column is measured on this machine (it varies from run to
# run); on a model this small, fixed per-call costs hide part of the saving. On
# MNIST-sized inputs (784-300-100-10) the benchmark `benchmarks/pruning_vs_tfmot.py`
# measured a batch of 256 1.8x faster for 2.1x fewer MACs with half of the units removed,
# but only 2.3x faster for 4.4x fewer MACs at 75 % and 3.7x for 11x at 90 %: the smaller
# the layers, the more the fixed costs dominate (`benchmarks/RESULTS.md`). Unstructured
# sparsity, by contrast, gives no speed-up at all with dense kernels: the zeros are still
# multiplied.
#
# Data-driven neuron criteria need a batch of inputs; APoZ {cite}`hu2016network` removes the
# units that are most often zero after the ReLU. Accuracy without fine-tuning, half of the
# hidden units removed, mean and 95% interval over the five seeds:

# %% tags=["nbval-ignore-output"]
def neurons_pruned(f, c):
    return np.array([accuracy(P.prune_neurons(b, f, criterion=c, data=data))
                     for b in bases])


neuron = {c: neurons_pruned(0.5, c)
          for c in ["l1", "l2", "apoz", "mean_activation"]}
print(table({"50% of the units": neuron}).to_string())
neuron_d = {c: stats.paired_difference(neuron["l1"], neuron[c], names=("l1", c))
            for c in ["l2", "apoz", "mean_activation"]}
for d in neuron_d.values():
    print(d)

# %%
assert all(d.verdict != f"{c} better" for c, d in neuron_d.items())
assert neuron["l1"].mean() == max(v.mean() for v in neuron.values())

# %% [markdown]
# On this small ReLU network the L1 score has the highest mean at 50%, and no criterion
# beats it on the paired statistic. L1 and L2 are indistinguishable here. The
# activation-based scores are far lower on average, but they vary so much from seed to
# seed (a few seeds collapse, others do not) that their intervals against L1 are tens of
# points wide, with lower ends near zero: five seeds rank them only loosely. APoZ was
# designed for large convolutional networks with many rarely-active units. Fine-tuning recovers most of
# the loss of any of them (for L1, the table above).

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

# %% tags=["nbval-ignore-output"]
def two_four(model, layers, data=None):
    return [P.nm_mask(layer.get_weights()[0], n=2, m=4) for layer in layers]


nm = [cnl.models.train(P.prune(b, 0.5, criterion=two_four), data, epochs=3,
                       seed=1) for b in bases]
nm_d = stats.paired_difference([accuracy(m) for m in nm], dense,
                               names=("2:4, 3 epochs", "dense"))
print(nm_d)

# %%
for m in nm:
    groups = fc2_kernel(m).T.reshape(-1, 4)
    assert np.count_nonzero(groups, axis=1).max() <= 2
print("non-zeros per group of 4 inputs, at most:", 2)
assert nm_d.low > -0.02

# %% [markdown]
# 50% sparsity in the 2:4 pattern costs at most about a point after brief fine-tuning (the
# interval above). On this CPU the model is not faster (the kernels are dense); the
# speed-up needs hardware that reads the pattern.
#
# ## Bytes on disk
#
# Zeros only save space when the file format skips them. `sparse_bytes` writes the weights
# four ways and measures the files: all dense float32 (`.npz`), the library's compressed
# format (each kernel's non-zeros with their positions, stored as a bitmask or as relative
# indices, whichever is smaller), the `.keras` file, and the `.keras` file gzipped.

# %% tags=["nbval-ignore-output"]
sizes = pd.DataFrame({
    "dense LeNet": P.sparse_bytes(lenet0)._asdict(),
    "95% gradual": P.sparse_bytes(at_95["gradual"][0])._asdict()}).T
print(sizes.to_string())
gain = sizes.loc["dense LeNet", "dense"] / sizes.loc["95% gradual", "sparse"]
print(f"compressed file: {gain:.1f}x smaller than the dense one")

# %%
dense_b, sparse_b = sizes.loc["dense LeNet"], sizes.loc["95% gradual"]
assert sparse_b["sparse"] < dense_b["dense"] / 5
assert dense_b["keras_gzip"] > 0.8 * dense_b["keras"]  # floats look random
assert sparse_b["keras_gzip"] < dense_b["keras_gzip"] / 4  # runs of zeros

# %% [markdown]
# A bitmask costs one bit per weight plus 32 bits per survivor: at 95% sparsity that is
# $0.05 \cdot 32 + 1 = 2.6$ bits per weight instead of 32 (12.3x less). At this sparsity
# relative indices, a few bits per survivor, cost less than the bitmask's bit per weight,
# which the format uses where it pays; the biases, kept dense, and the file's headers pull
# the other way.
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
# | prune once | prune, then retrain with the masks held; at equal training and 95% sparsity Han et al.'s iterative rounds beat a single cut, the gradual schedule did not |
#
# ## Exercises
#
# 1. Apply the article's rule literally with the library: prune every kernel of the trained
#    LeNet-300-100 with `magnitude_mask(w, threshold=0.05)`. Which sparsity does each layer
#    reach, and why do they differ?
# 2. Write a criterion callable for the diagonal Fisher approximation of Optimal Brain Damage,
#    $s_q = w_q^2 \, \mathbb{E}[g_q^2]$, with per-batch gradients, and compare it
#    with magnitude and Taylor at 80% (no fine-tuning), over the five seeds.
# 3. Prune the seed MLP at 90% with `scope="global"` and fine-tune it as above. Does sparing
#    the output layer help?
#
# :::{admonition} Solution 1
# :class: dropdown
# ```python
# for layer in lenet0.layers[1:]:
#     w = layer.get_weights()[0]
#     print(layer.name, 1 - P.magnitude_mask(w, threshold=0.05).mean())
# ```
# (computed in the hidden cell below, seed 0) `fc1` reaches {glue:text}`sol1_fc1:.0%`,
# `fc2` {glue:text}`sol1_fc2:.0%` and `out` only {glue:text}`sol1_out:.0%`. Glorot
# initialization draws each layer's weights from $\pm\sqrt{6/(n_\text{in}+n_\text{out})}$:
# {glue:text}`glorot_fc1:.2f` for `fc1`, {glue:text}`glorot_fc2:.2f` for `fc2`,
# {glue:text}`glorot_out:.2f` for the 100-to-10 output layer. The layers start (and stay) on
# different scales (median $|w|$ {glue:text}`median_fc2:.3f` in `fc2` against
# {glue:text}`median_out:.3f` in `out`), so one absolute threshold means a different sparsity
# per layer. This is why the library takes a sparsity rather than a threshold, and why
# global scope compares weights across layers only deliberately.
# :::

# %% tags=["hide-cell", "nbval-ignore-output"]
for layer in lenet0.layers[1:]:
    w = layer.get_weights()[0]
    found = {"sol1": 1 - P.magnitude_mask(w, threshold=0.05).mean(),
             "glorot": np.sqrt(6 / sum(w.shape)),
             "median": np.median(np.abs(w))}
    for key, value in found.items():
        glue(f"{key}_{layer.name}", float(value), display=False)
    print(layer.name, {key: round(float(v), 3) for key, v in found.items()})

# %% [markdown]
# :::{admonition} Solution 2
# :class: dropdown
# The criterion `fisher(model, layers, data)` is in the hidden cell below: it sums, over
# batches of 32 training images, the squared gradient of the loss for every kernel weight,
# and returns $w^2$ times that sum; `P.prune(base, 0.8, criterion=fisher, data=data)` uses it.
# Squaring per-batch gradients before averaging keeps the information that the mean gradient
# loses at a minimum, and the $w^2$ factor brings magnitude back in. Over the five seeds
# (hidden cell below) the Fisher score at 80% reaches {glue:text}`fisher80:.1f`% on average:
# against Taylor {glue:md}`fisher_taylor`, and against magnitude
# {glue:md}`fisher_magnitude`. The diagonal Fisher is a rough stand-in for the Hessian of
# a network this small.
# :::

# %% tags=["hide-cell", "nbval-ignore-output"]
import tensorflow as tf


def fisher(model, layers, data):
    x, y = data.x_train, data.y_train
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    acc = [np.zeros(l.kernel.shape) for l in layers]
    for i in range(0, len(x), 32):
        with tf.GradientTape() as tape:
            loss = loss_fn(y[i:i + 32], model(x[i:i + 32]))
        for a, g in zip(acc, tape.gradient(loss, [l.kernel for l in layers])):
            a += g.numpy() ** 2
    return [l.get_weights()[0] ** 2 * a for l, a in zip(layers, acc)]


fisher80 = np.array([accuracy(P.prune(b, 0.8, criterion=fisher, data=data))
                     for b in bases])
sol2 = {"taylor": stats.paired_difference(fisher80, crit["taylor"][0.8],
                                          names=("Fisher", "Taylor")),
        "magnitude": stats.paired_difference(fisher80, no_retrain[0.8],
                                             names=("Fisher", "magnitude"))}
glue("fisher80", float(100 * fisher80.mean()), display=False)
for name, d in sol2.items():
    glue(f"fisher_{name}", Markdown(str(d).split(": ", 1)[1]), display=False)
    print(d)

# %% [markdown]
# :::{admonition} Solution 3
# :class: dropdown
# ```python
# g = [cnl.models.train(P.prune(m, 0.9, scope="global"), data, epochs=EPOCHS,
#                       seed=seed) for m, seed in zip(mlps, SEEDS)]
# ```
# Global scope leaves the output layer much denser (about {glue:text}`sol3_out:.0%` sparse,
# seed 0) and the first layer sparser ({glue:text}`sol3_fc1:.0%`). After fine-tuning, global
# against layer scope over the five seeds: {glue:md}`sol3_gain`. Against the dense MLP
# the globally pruned one still gives {glue:md}`sol3_dense`: sparing the output layer
# does not give back the capacity of a network with so few weights left.
# :::

# %% tags=["hide-cell", "nbval-ignore-output"]
g = [cnl.models.train(P.prune(m, 0.9, scope="global"), data, epochs=EPOCHS,
                      seed=seed) for m, seed in zip(mlps, SEEDS)]
g_acc = [accuracy(m) for m in g]
sol3 = {"gain": stats.paired_difference(g_acc, [accuracy(m) for m in mlp_90],
                                        names=("global", "layer")),
        "dense": stats.paired_difference(g_acc, mlp_dense,
                                         names=("global", "dense"))}
for name, d in sol3.items():
    glue(f"sol3_{name}", Markdown(str(d).split(": ", 1)[1]), display=False)
    print(d)
for name, s in cnl.metrics.layer_sparsity(g[0]).items():
    glue(f"sol3_{name}", float(s), display=False)
