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
# # Weight quantization (权重量化, article 3.2.1)
#
# The article's idea is right: store weights as small integers instead of 32-bit floats, and
# the model shrinks (and, on hardware with integer kernels, runs faster). Its rule is not:
#
# $$
# \tilde W_{ij} = \operatorname{round}(W_{ij})
# $$
#
# rounds each weight to the nearest *integer*. The weights of a trained network are small
# numbers, mostly well inside $(-1, 1)$, so this rule maps almost all of them to 0. And the
# article's code, `np.round(model.get_weights())`, does not run at all. This chapter runs
# both, then builds quantization properly: a **scale** and a **zero point** that map the
# weights' real range onto the integer grid {cite}`jacob2018quantization`, per tensor or per
# channel, after training (PTQ) or during it (QAT, with the straight-through estimator),
# down to one bit {cite}`courbariaux2015binaryconnect,rastegari2016xnor`; then activations
# (their ranges calibrated on data), BatchNorm folding, and Jacob et al.'s integer-only
# arithmetic, run in NumPy and checked against TensorFlow Lite's int8 interpreter.
#
# Every comparison below is made over five training seeds of the article's network, paired
# by seed, with a 95% interval for the mean difference (`cnl.stats`); a comparison of two
# fixed models uses the exact McNemar test on the same test images. Where the interval
# contains 0 the text says the methods are indistinguishable here.

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from myst_nb import glue

import compressnet_lite as cnl
from compressnet_lite import integer as I
from compressnet_lite import quantization as Q
from compressnet_lite import stats
from compressnet_lite import tflite as T
from compressnet_lite.notebook import setup, show_source

setup()
data = cnl.data.load()                 # the digits, or CNL_DATA=mnist:PATH
images = cnl.data.load(image=True)
SEEDS = range(5)


def train_mlp(seed):
    """The article's network (Dense 64-32-10), trained 10 epochs from seed."""
    keras.utils.set_random_seed(seed)
    model = cnl.models.seed_mlp(data.input_shape[0], data.num_classes)
    return cnl.models.train(model, data, epochs=10, seed=seed)


def correct(model, d=data):
    """Per-test-image correctness (for paired statistics)."""
    scores = keras.ops.convert_to_numpy(model(d.x_test, training=False))
    return np.argmax(scores, axis=-1) == d.y_test


mlps = [train_mlp(seed) for seed in SEEDS]
mlp = mlps[0]
float_acc = np.array([correct(m).mean() for m in mlps])

# %% [markdown]
# ## The article's rule, run
#
# The article's network (Dense 64-32-10, `seed_mlp`) is trained on the bundled 8x8 digits,
# as in the article, five times from five seeds. Its weights:

# %% tags=["nbval-ignore-output"]
kernels = [w for w in mlp.get_weights() if w.ndim == 2]
all_w = np.concatenate([k.ravel() for k in kernels])
inside = np.mean(np.abs(all_w) < 0.5)
print(f"float accuracy over 5 seeds: {stats.mean_interval(float_acc)}")
print(f"seed 0: {inside:.1%} of the kernel weights have |w| < 0.5 (they round "
      f"to 0); largest |w| = {np.abs(all_w).max():.2f}")
assert inside > 0.9

# %% [markdown]
# The article's code, `np.round(model.get_weights())`, hands NumPy a list of arrays of
# different shapes (kernels `(64, 64)`, `(64, 32)`, `(32, 10)` and their biases). NumPy
# cannot make one array out of that ragged list:

# %%
try:
    quantized_weights = np.round(mlp.get_weights()).astype(np.float32)
except ValueError as err:
    print(f"{type(err).__name__}: {'. '.join(str(err).split('. ')[:2])}.")
    ragged_error = err
assert isinstance(ragged_error, ValueError)

# %% [markdown]
# Rounding each array separately runs, and shows what the rule does:

# %% tags=["nbval-ignore-output"]
rounded = cnl.models.clone(mlp)
rounded.set_weights([np.round(w) for w in mlp.get_weights()])
round_acc = correct(rounded).mean()
zero_after = np.mean(np.round(all_w) == 0)
print(f"after round(W): {zero_after:.1%} of kernel weights are 0, accuracy "
      f"{round_acc:.3f} (was {float_acc[0]:.3f}; chance is 0.100)")
assert zero_after > 0.9 and round_acc < 0.5

# %% [markdown]
# The network is destroyed. Rounding to integers is quantization with a step of 1, and a step
# of 1 is far coarser than the weights themselves. Quantization has to choose the step from
# the data.
#
# ## The correct math: scale and zero point
#
# Uniform quantization with $b$ bits maps a real number $r$ to an integer code $q$ in
# $[q_\min, q_\max]$ and back {cite}`jacob2018quantization,krishnamoorthi2018quantizing`:
#
# $$
# q = \operatorname{clip}\!\left(\operatorname{round}\!\left(\frac{r}{S}\right) + Z,\;
# q_\min,\; q_\max\right), \qquad \hat r = S\,(q - Z).
# $$
#
# The **scale** $S$ is the step between neighbouring levels; the **zero point** $Z$ is the
# code that stands for the real value 0. Two common choices:
#
# * **Affine (asymmetric)**: the range $[\alpha, \beta] = [\min(r, 0), \max(r, 0)]$ maps
#   onto the unsigned codes $0 \ldots 2^b - 1$: $S = (\beta - \alpha) / (2^b - 1)$,
#   $Z = \operatorname{round}(-\alpha / S)$. The range always contains 0, so 0 (a pruned
#   weight, zero padding) is represented exactly.
# * **Symmetric**: $Z = 0$ and signed codes $-(2^{b-1} - 1) \ldots 2^{b-1} - 1$ (int8:
#   $-127 \ldots 127$, the "narrow range" that TFLite and Keras use for weights),
#   $S = \max|r| / (2^{b-1}-1)$. Without a zero point an integer matrix product needs no
#   correction terms, which is why weights are usually symmetric and activations (after
#   ReLU, all $\ge 0$) affine.
#
# **Error bound.** Inside the representable range $[S(q_\min - Z), S(q_\max - Z)]$ rounding
# to the nearest level is off by at most half a step:
#
# $$
# |r - \hat r| \le \frac{S}{2}.
# $$
#
# Outside it, values are clipped. Per tensor, the range is set by the *largest* weight: one
# outlier stretches $S$ and every other weight gets coarser levels. **Per channel**, each
# output channel (a column of a Dense kernel, a filter of a convolution) gets its own $S$,
# so a channel of small weights is not quantized with the step of a channel of large ones.
# Channels can be scaled independently because each output channel's dot product is
# multiplied by a single number afterwards.
#
# One bit is a special case: the codes are $\pm 1$ and the best scale for
# $\hat r = \alpha \operatorname{sign}(r)$ is $\alpha = \operatorname{mean}|r|$ (XNOR-Net
# {cite}`rastegari2016xnor`), not $\max|r|$.
#
# The library's `quantize` implements all of it in a few lines of NumPy:

# %%
show_source(Q.quantize)

# %%
show_source(Q.dequantize)

# %% [markdown]
# A worked example: $r = (-1, 0, 0.5, 1)$. Symmetric 8 bit: $S = 1/127$ and
# $0.5 \cdot 127 = 63.5$ rounds to 64 (NumPy rounds halves to the even neighbour). Symmetric
# 2 bit has only the levels $\{-1, 0, 1\} \cdot S$ with $S = 1$, and 0.5 rounds to 0.
# Affine 8 bit: $S = 2/255$, $Z = \operatorname{round}(127.5) = 128$, so $r = 1$ would be
# code 256: it is clipped to 255, the one value outside the representable range.

# %%
r = np.array([-1.0, 0.0, 0.5, 1.0], np.float32)
for bits, symmetric in [(8, True), (2, True), (8, False)]:
    qt = Q.quantize(r, bits=bits, symmetric=symmetric)
    kind = "symmetric" if symmetric else "affine   "
    deq = [round(float(v), 4) for v in Q.dequantize(qt)]
    print(f"{bits} bit {kind}: codes {qt.q.tolist()}, "
          f"S = {float(qt.scale):.5f}, Z = {int(qt.zero_point)}, "
          f"dequantized {deq}")
assert Q.quantize(r, 8).q.tolist() == [-127, 0, 64, 127]
assert Q.quantize(r, 8, symmetric=False).q.tolist() == [0, 128, 192, 255]

# %% [markdown]
# Keras ships the same symmetric int8 rule as `keras.quantizers.abs_max_quantize`. It
# returns the *reciprocal* of our scale ($127 / (\max|r| + \epsilon)$, a multiplier) and its
# `axis` is the axis it reduces over, where ours is the axis that keeps one scale per index.
# The codes agree exactly (the tests check this on random kernels, per tensor and per
# channel):

# %%
fc1 = mlp.get_layer("fc1").kernel.numpy()
k_codes, k_mult = keras.quantizers.abs_max_quantize(fc1, axis=0, to_numpy=True)
ours = Q.quantize(fc1, bits=8, axis=1)
same = np.array_equal(np.asarray(k_codes), ours.q)
rel = np.max(np.abs(1 / np.asarray(k_mult).ravel() - ours.scale) / ours.scale)
print(f"codes identical: {same}; scale = 1/multiplier within 1e-5: "
      f"{rel < 1e-5}")
assert same and rel < 1e-5

# %% [markdown]
# ### Why per channel matters
#
# The columns of `fc1` (one per output unit) have very different ranges. With one scale for
# the whole kernel, the step is set by the largest column:

# %% tags=["nbval-ignore-output"]
col_max = np.abs(fc1).max(axis=0)
print(f"max |w| per output channel of fc1 (seed 0): smallest "
      f"{col_max.min():.3f}, median {np.median(col_max):.3f}, "
      f"largest {col_max.max():.3f}")


def mean_error(w, bits, axis):
    return np.abs(w - Q.dequantize(Q.quantize(w, bits, axis=axis))).mean()


for bits in (4, 3):
    fc1s = [m.get_layer("fc1").kernel.numpy() for m in mlps]
    e_t = [mean_error(k, bits, None) for k in fc1s]
    e_c = [mean_error(k, bits, 1) for k in fc1s]
    print(f"{bits} bit, mean |error| over 5 seeds: per tensor "
          f"{np.mean(e_t):.4f}, per channel {np.mean(e_c):.4f}")
    assert all(c < t for c, t in zip(e_c, e_t))

# %% [markdown]
# The histogram of `fc1`'s weights with the levels of 3-bit symmetric quantization (per
# tensor: 7 levels, $-3S \ldots 3S$) shows how few levels are left, and that most weights
# fall near the levels around 0:

# %% tags=["hide-input"]
qt3 = Q.quantize(fc1, bits=3)
levels = float(qt3.scale) * np.arange(-3, 4)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].hist(fc1.ravel(), bins=80, color="tab:blue", alpha=0.7)
for lv in levels:
    axes[0].axvline(lv, color="tab:red", lw=1)
axes[0].set(title="fc1 weights and the 7 levels of 3 bits (per tensor)",
            xlabel="w", ylabel="weights")
codes, counts = np.unique(qt3.q, return_counts=True)
axes[1].bar(codes, counts, color="tab:red")
axes[1].set(title="how many weights get each code", xlabel="code q")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Post-training quantization of a model
#
# `quantize_model` quantizes the kernels of every Dense, Conv2D and DepthwiseConv2D layer
# (per output channel by default) and returns a new model. Each such layer becomes a
# `QuantizedDense` / `QuantizedConv2D` / `QuantizedDepthwiseConv2D`: its `kernel` is the
# frozen dequantized kernel $S(q - Z)$, so it computes exactly what integer arithmetic with
# these codes would compute (up to float rounding), and it carries the integer codes,
# scales and zero points as non-trainable `cnl_codes`, `cnl_scale`, `cnl_zero_point`
# weights (saved in the `.keras` file). Biases stay float32: there are few of them.

# %%
q4 = Q.quantize_model(mlp, bits=4)
layer = q4.get_layer("fc1")
print(type(layer).__name__, "weights:",
      [w.path.split("/")[-1] for w in layer.weights])
qt = layer.qtensor()
exact = np.array_equal(layer.kernel.numpy(), Q.dequantize(qt))
print(f"codes {qt.q.dtype} in [{qt.q.min()}, {qt.q.max()}], {qt.scale.size} "
      f"scales; kernel == S * codes: {exact}")
assert exact
# the caller's model is untouched:
assert np.array_equal(mlp.get_layer("fc1").kernel.numpy(), fc1)

# %% [markdown]
# A quantized model is therefore the float model with each kernel replaced by
# `dequantize(quantize(kernel))`. The sweeps below use exactly that, written into one
# reusable copy of each network (building 70 new models would cost most of the chapter's
# time); the cell checks that it is the same model `quantize_model` builds.

# %%
def ptq_weights(model, bits, per_channel=True, symmetric=True, layers=None):
    """The weights of quantize_model(model, ...): kernels dequantized."""
    new = []
    for lay in model.layers:
        for w in lay.get_weights():
            if w.ndim > 1 and (layers is None or lay.name in layers):
                axis = w.ndim - 1 if per_channel else None
                w = Q.dequantize(Q.quantize(w, bits, symmetric, axis))
            new.append(w)
    return new


def ptq_correct(model, bits, template, d=data, **kwargs):
    """Per-image correctness of the PTQ model (evaluated in `template`)."""
    template.set_weights(ptq_weights(model, bits, **kwargs))
    return correct(template, d)


template = cnl.models.clone(mlp)
template.set_weights(ptq_weights(mlp, 4))
same = all(np.array_equal(template.get_layer(n).kernel.numpy(),
                          q4.get_layer(n).kernel.numpy())
           for n in ("fc1", "fc2", "out"))
print("same kernels as quantize_model(mlp, bits=4):", same)
assert same

# %% [markdown]
# We sweep 8 down to 1 bit, per tensor and per channel, over the five MLPs, and on LeNet-5
# (one training run; its convolutions quantized per filter), trained on the digits as
# 8x8x1 images. LeNet-5 ends in logits here (no softmax layer): the same network, and the
# form whose integer arithmetic is reproduced at the end of the chapter.

# %% tags=["nbval-ignore-output"]
keras.utils.set_random_seed(0)
lenet = cnl.models.lenet5(images.input_shape, images.num_classes, logits=True)
cnl.models.train(lenet, images, epochs=3)
lenet_template = cnl.models.clone(lenet)
BITS = [8, 6, 4, 3, 2, 1]
MODES = {"per tensor": dict(per_channel=False), "per channel": {},
         "per channel, 4-level grid": dict(symmetric=False)}
sweep = {}  # (model, mode, bits) -> per-seed correctness, shape (seeds, images)
for mode, kw in MODES.items():
    for bits in BITS:
        if "4-level" in mode and bits not in (2, 3):
            continue
        sweep["mlp", mode, bits] = np.array(
            [ptq_correct(m, bits, template, **kw) for m in mlps])
        sweep["lenet", mode, bits] = ptq_correct(lenet, bits, lenet_template,
                                                 images, **kw)[None]
lenet_correct = correct(lenet, images)
print(f"float: MLP {float_acc.mean():.3f} (mean of 5 seeds), "
      f"LeNet-5 {lenet_correct.mean():.3f}")
short = {"per tensor": "tensor", "per channel": "channel",
         "per channel, 4-level grid": "4 levels"}
for name, title in (("mlp", "MLP, mean of 5 seeds"), ("lenet", "LeNet-5")):
    table = pd.DataFrame({short[mode]: {bits: sweep[name, mode, bits].mean()
                                        for bits in BITS
                                        if (name, mode, bits) in sweep}
                          for mode in MODES}).sort_index(ascending=False)
    print(f"\n{title}, PTQ accuracy by bits per weight:")
    print(table.round(3).to_string(na_rep="-"))

# %% [markdown]
# Paired over the five seeds (each PTQ model against its own float model), and for
# LeNet-5 the exact McNemar test on the 450 test images:

# %% tags=["nbval-ignore-output"]
mlp_float = np.array([correct(m) for m in mlps])
vs = {}
for bits in (8, 4, 3, 2):
    vs[bits] = stats.paired_difference(
        sweep["mlp", "per channel", bits], mlp_float,
        names=(f"{bits}-bit per channel", "float"))
    print("MLP:", vs[bits])
for bits in (3, 2):
    vs["channel", bits] = stats.paired_difference(
        sweep["mlp", "per channel", bits], sweep["mlp", "per tensor", bits],
        names=(f"{bits}-bit per channel", "per tensor"))
    print("MLP:", vs["channel", bits])
lenet_vs = {bits: stats.mcnemar(sweep["lenet", "per channel", bits][0],
                                lenet_correct,
                                names=(f"{bits}-bit per channel", "float"))
            for bits in (8, 4, 2)}
for test in lenet_vs.values():
    print("LeNet-5:", test)
glue("v3", str(vs[3]), display=False)
glue("ch3", str(vs["channel", 3]), display=False)
glue("ch2", str(vs["channel", 2]), display=False)
glue("v2_mlp", f"{-vs[2].mean * 100:.0f}", display=False)
glue("v2_lenet", f"{-lenet_vs[2].difference * 100:.0f}", display=False)

# %% [markdown]
# What the sweep shows:
#
# * 8 and 4 bits per weight, per channel, cost nothing measurable: on the MLPs the paired
#   difference to float is indistinguishable from zero here, with an interval inside one
#   point either way; on LeNet-5 McNemar finds no difference either (asserted below).
# * 3 bits per channel, against float: {glue:text}`v3`.
# * Per channel against per tensor, at 3 bits: {glue:text}`ch3`; at 2 bits:
#   {glue:text}`ch2`. At 2 bits the models differ so much from seed to seed that five
#   seeds cannot separate the two.
# * At 2 bits accuracy collapses: {glue:text}`v2_mlp` points lost on the MLPs (mean),
#   {glue:text}`v2_lenet` on LeNet-5. The narrow symmetric grid keeps only the levels
#   $\{-S, 0, S\}$ with $S = \max|w|$ (next section): most weights become 0.

# %%
for bits in (8, 4):
    assert vs[bits].verdict == stats.INDISTINGUISHABLE
    assert -0.01 < vs[bits].low and vs[bits].high < 0.01
    assert lenet_vs[bits].verdict == stats.INDISTINGUISHABLE
assert vs[2].verdict == "float better" and vs[2].high < -0.1
assert vs["channel", 3].mean > 0
assert lenet_vs[2].verdict == "float better"

# %% [markdown]
# ### The narrow 2-bit grid has three levels
#
# Symmetric "narrow range" codes run from $-(2^{b-1}-1)$ to $2^{b-1}-1$: $2^b - 1$ levels,
# one fewer than $b$ bits can hold, so that $+q$ and $-q$ are both representable and zero
# is exact with $Z = 0$. At 8 bits that wastes 1 of 256 levels. At 2 bits it leaves three:
# $\{-S, 0, +S\}$, which is $\log_2 3 \approx 1.58$ bits of information stored in 2 bits.
# The full 4-level grid (here the affine codes $0 \ldots 3$ with a zero point, per channel)
# uses all four codes; at 3 bits the comparison is 7 levels against 8.

# %% tags=["nbval-ignore-output"]
w = fc1
for bits in (3, 2):
    narrow = Q.quantize(w, bits, axis=1)
    full = Q.quantize(w, bits, symmetric=False, axis=1)
    print(f"{bits} bits: narrow symmetric {len(np.unique(narrow.q))} levels, "
          f"log2 = {np.log2(2 ** bits - 1):.2f} bits; affine "
          f"{len(np.unique(full.q))} levels")
    grid = stats.paired_difference(
        sweep["mlp", "per channel, 4-level grid", bits],
        sweep["mlp", "per channel", bits],
        names=(f"{bits}-bit {2 ** bits}-level", f"{2 ** bits - 1}-level"))
    print("   MLP accuracy:", grid)
    vs["grid", bits] = grid
    glue(f"grid{bits}", str(grid), display=False)
assert len(np.unique(Q.quantize(w, 2, axis=1).q)) == 3
assert vs["grid", 2].verdict == "2-bit 4-level better"

# %% [markdown]
# The fourth level is worth a lot at 2 bits: {glue:text}`grid2`. At 3 bits the eighth
# level is not: {glue:text}`grid3`. (The symmetric narrow grid is what integer kernels
# want for weights, since a zero point on the weights adds correction terms to every dot
# product; the price at 2 bits is a quarter of the codes unused.)
#
# ## Quantization-aware training (QAT)
#
# Below 4 bits, rounding after training costs accuracy. QAT trains *with* the rounding in
# the forward pass. Why it needs a trick: the quantized weight is
#
# $$
# \hat w = S \operatorname{clip}\!\left(\operatorname{round}(w / S),\,
# -q_\max,\, q_\max\right),
# $$
#
# a staircase in $w$. Its derivative is $\partial \hat w / \partial w = 0$ wherever $w/S$ is
# not a half-integer (each step is flat) and undefined at the jumps, so by the chain rule
# $\partial L / \partial w = \partial L / \partial \hat w \cdot \partial \hat w / \partial w
# = 0$ almost everywhere: gradient descent through the true derivative never moves a
# weight. The **straight-through estimator** (STE)
# {cite}`bengio2013estimating,courbariaux2015binaryconnect` replaces the derivative of
# round by 1 in the backward pass only:
#
# $$
# \frac{\partial \hat w}{\partial w} := 1 \quad\text{(STE)}, \qquad
# \frac{\partial \hat w}{\partial w} := \mathbb{1}\!\left[\,|w| \le q_\max S\,\right]
# \quad\text{(clipped STE)}.
# $$
#
# The clipped STE {cite}`hubara2016binarized` passes the gradient only where the clip is
# inactive: a value beyond the range would not change the output if moved a little, so it
# gets no gradient. For our weights the two coincide, because $S = \max|w| / q_\max$ puts
# every weight inside the range; for activations quantized over a calibrated range
# $[lo, hi]$, values above $hi$ are clipped and receive zero gradient (TensorFlow's
# `FakeQuantWithMinMaxVars` gradient, which `keras.quantizers.fake_quant_with_min_max_vars`
# runs). In code the STE is one line, `w + stop_gradient(w_hat - w)`: forward $\hat w$,
# backward the identity.

# %%
show_source(Q.fake_quant_weights)

# %% [markdown]
# The staircase and its three gradients, measured with a gradient tape on the library's
# weight quantizer (2 bits: levels $\{-S, 0, S\}$) and on the activation quantizer over the
# range $[0, 1]$ (2 bits: four levels):

# %% tags=["hide-input"]
grid = np.linspace(-1.5, 1.5, 601).astype(np.float32)
act_grid = np.linspace(-0.5, 1.5, 601).astype(np.float32)
wv, av = tf.constant(grid), tf.constant(act_grid)
with tf.GradientTape(persistent=True) as tape:
    tape.watch([wv, av])
    w_hat = Q.fake_quant_weights(wv, 2)
    a_hat = keras.quantizers.fake_quant_with_min_max_vars(av, 0.0, 1.0,
                                                          num_bits=2)
    w_sum, a_sum = tf.reduce_sum(w_hat), tf.reduce_sum(a_hat)
ste = tape.gradient(w_sum, wv).numpy()
clipped = tape.gradient(a_sum, av).numpy()
step = Q.fake_quantize(act_grid, 0.0, 1.0, bits=2)
true_grad = np.gradient(step, act_grid)          # finite differences
flat = np.abs(true_grad) < 1e-3                  # 0 between the jumps
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].plot(grid, w_hat.numpy(), label="weights: $\\hat w$ (2 bits, S = 1.5)")
axes[0].plot(act_grid, a_hat.numpy(), label="activations: range [0, 1], 2 bits")
axes[0].plot(grid, grid, ":", color="gray", label="identity")
axes[0].set(title="the staircase", xlabel="w or x", ylabel="quantized value")
axes[0].legend(fontsize=9)
axes[1].plot(act_grid, np.where(flat, 0.0, np.nan), lw=3,
             label="true derivative (0 between jumps)")
axes[1].plot(grid, ste, "--", label="STE (weights, measured)")
axes[1].plot(act_grid, clipped, label="clipped STE (activations, measured)")
axes[1].set(title="the gradient used in training", xlabel="w or x",
            ylabel="d output / d input", ylim=(-0.1, 1.2))
axes[1].legend(fontsize=9, loc="center right")
plt.tight_layout()
plt.show()
assert np.all(ste == 1.0)
assert np.all(clipped[(act_grid > 0.01) & (act_grid < 0.99)] == 1.0)
assert np.all(clipped[(act_grid < -0.01) | (act_grid > 1.01)] == 0.0)
assert np.mean(flat) > 0.95

# %% [markdown]
# ### QAT against PTQ, with a fair control
#
# QAT fine-tunes a trained model for a few more epochs. Comparing it with PTQ of the model
# it started from mixes two effects: the quantization-aware training, and the extra
# training itself. So every run below has a **float control**: the same model fine-tuned
# the same $K = 2$ extra epochs, with the same learning rate and data order, without
# quantization, and then quantized after training. QAT here fake-quantizes the weights at
# 2 bits (per channel) *and* the outputs of every layer at 8 bits ("W2A8"); the activation
# ranges start from a min/max calibration on 256 training images and then follow an
# exponential moving average of each batch's range during training,
# $r \leftarrow 0.99\, r + 0.01\, r_\text{batch}$.

# %% tags=["nbval-ignore-output"]
K = 2
calib = data.x_train[:256]


def fine_tune(model, seed):
    return cnl.models.train(model, data, epochs=K, learning_rate=5e-4,
                            seed=seed)


runs = {"float": [], "control": [], "PTQ": [], "PTQ control": [], "QAT": []}
ema = []
for seed, base in zip(SEEDS, mlps):
    control = fine_tune(cnl.models.clone(base), seed)
    qat = Q.quantize_aware(base, bits=2, activation_bits=8,
                           calibration_data=calib)
    start = Q.activation_ranges(qat)["fc1"]
    fine_tune(qat, seed)
    ema.append((start, Q.activation_ranges(qat)["fc1"]))
    runs["float"].append(correct(base))
    runs["control"].append(correct(control))
    runs["PTQ"].append(ptq_correct(base, 2, template))
    runs["PTQ control"].append(ptq_correct(control, 2, template))
    runs["QAT"].append(correct(qat))
runs = {k: np.array(v) for k, v in runs.items()}
print(pd.Series({k: v.mean() for k, v in runs.items()},
                name="accuracy, mean of 5 seeds").round(3).to_string())
print(f"fc1's activation range, seed 0: calibrated [{ema[0][0][0]:.2f}, "
      f"{ema[0][0][1]:.2f}], after QAT (EMA) [{ema[0][1][0]:.2f}, "
      f"{ema[0][1][1]:.2f}]")
qat_vs = {
    "extra epochs": stats.paired_difference(runs["control"], runs["float"],
                                            names=("control", "float")),
    "QAT vs PTQ": stats.paired_difference(runs["QAT"], runs["PTQ"],
                                          names=("QAT", "PTQ of the start")),
    "QAT vs control": stats.paired_difference(
        runs["QAT"], runs["PTQ control"], names=("QAT", "PTQ of the control")),
    "QAT vs float": stats.paired_difference(runs["QAT"], runs["control"],
                                            names=("QAT", "float control")),
}
for test in qat_vs.values():
    print(test)
glue("qat_extra", qat_vs["extra epochs"].verdict, display=False)
glue("qat_float", qat_vs["QAT vs float"].verdict, display=False)
glue("qat_float_mean", f"{-qat_vs['QAT vs float'].mean * 100:.1f}",
     display=False)

# %% [markdown]
# QAT recovers most of what 2-bit PTQ loses, and the control shows that this is the
# quantization-aware training, not the extra epochs: PTQ of the fine-tuned control is as
# bad as PTQ of the starting model, while QAT with the same budget is far better. The
# extra epochs alone, float against float: {glue:text}`qat_extra`. W2A8 QAT trails the
# float control by {glue:text}`qat_float_mean` points on average; paired over the five
# seeds: {glue:text}`qat_float`. The activation range moved from its calibrated value
# during training (printed above for `fc1`).

# %%
assert qat_vs["QAT vs PTQ"].verdict == "QAT better"
assert qat_vs["QAT vs control"].verdict == "QAT better"
assert qat_vs["QAT vs control"].low > 0.05
assert qat_vs["QAT vs float"].mean < 0
assert all(after != start for start, after in ema)

# %% [markdown]
# ## Activation ranges: calibration
#
# Weights are known before inference; activations are not. Integer inference needs a range
# $[lo, hi]$ for every layer's output, chosen on **calibration data** (a few hundred
# training images) by a rule:
#
# * **min/max**: $[\min(x, 0), \max(x, 0)]$. Nothing is clipped; one large activation sets
#   the step for all.
# * **percentile**: $[P_{100-p}, P_p]$ (here $p = 99.99$): the tail beyond the $p$-th
#   percentile is clipped, for a finer step everywhere else.
# * **MSE**: the range (shrinking min/max by a factor $c$) whose fake quantization has the
#   smallest mean squared error on the calibration activations; the fewer the bits, the
#   tighter the range it picks.
#
# Activations use the affine grid $0 \ldots 2^b-1$; `fake_quantize` (the NumPy twin of
# TensorFlow's fake-quant op) nudges the range so that 0 is a level.

# %%
show_source(Q.mse_range)

# %% tags=["nbval-ignore-output"]
RULES = ("minmax", "percentile", "mse")
A_BITS = 3
calib_acc = {rule: [] for rule in RULES}
ranges = {}
for seed, base in zip(SEEDS, mlps):
    model = Q.quantize_aware(base, bits=8, activation_bits=A_BITS)
    for rule in RULES:  # recalibrating reads the float activations again
        ranges[seed, rule] = Q.calibrate(model, calib, rule)
        calib_acc[rule].append(correct(model))
calib_vs = {rule: stats.paired_difference(
    calib_acc[rule], calib_acc["minmax"], names=(rule, "min/max"))
    for rule in RULES[1:]}
print(f"8-bit weights, {A_BITS}-bit activations, accuracy (mean of 5):",
      {rule: round(float(np.mean(v)), 3) for rule, v in calib_acc.items()})
for rule, test in calib_vs.items():
    print(test)
print(f"upper ends of the ranges for {A_BITS} bits, seed 0:")
print(pd.DataFrame({rule: {name: round(hi, 2)
                           for name, (lo, hi) in ranges[0, rule].items()}
                    for rule in RULES}).to_string())
for rule in RULES[1:]:
    glue(f"calib_{rule}", str(calib_vs[rule]), display=False)

# %% [markdown]
# Both clipping rules pick tighter ranges than min/max (the table), the MSE rule the
# tightest. Whether that buys accuracy at 3-bit activations, paired over the five seeds:
# percentile against min/max {glue:text}`calib_percentile`; MSE against min/max
# {glue:text}`calib_mse`.

# %%
for name in ("fc1", "fc2"):                 # the ReLU layers
    assert ranges[0, "mse"][name][1] < ranges[0, "minmax"][name][1]
    assert ranges[0, "percentile"][name][1] <= ranges[0, "minmax"][name][1]

# %% tags=["hide-input"]
probe = keras.Model(mlp.inputs, mlp.get_layer("fc2").output)
acts = probe.predict(calib, verbose=0).ravel()
fig, ax = plt.subplots(figsize=(11, 3.8))
ax.hist(acts[acts > 0], bins=120, color="tab:blue", alpha=0.7, log=True)
for rule, color in zip(RULES, ("tab:red", "tab:green", "tab:purple")):
    hi = ranges[0, rule]["fc2"][1]
    ax.axvline(hi, color=color, lw=2, label=f"{rule}: hi = {hi:.2f}")
ax.set(title="fc2's positive outputs on 256 calibration images (seed 0), "
       f"and the upper end each rule picks for {A_BITS} bits",
       xlabel="activation", ylabel="count (log scale)")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Bytes on disk
#
# Quantized codes only save space if they are stored with $b$ bits each, not one byte (or
# four) per code. `pack` writes the codes bit by bit (two 4-bit codes per byte, four 2-bit
# codes, ...); `quantization_report` *measures* the file of packed codes plus the float32
# scales against a file of the same kernels in float32:

# %%
show_source(Q.pack)

# %% tags=["nbval-ignore-output"]
sizes = {}
for name, model in {"seed_mlp": mlp, "lenet5": lenet}.items():
    for bits in BITS:
        rep = Q.quantization_report(Q.quantize_model(model, bits=bits))
        sizes[name, bits] = rep
print(pd.DataFrame({name: {bits: f"{sizes[name, bits].quantized_bytes:,} B "
                           f"({sizes[name, bits].ratio:.1f}x)" for bits in BITS}
                    for name in ("seed_mlp", "lenet5")}).to_string())
for name, model in {"seed_mlp": mlp, "lenet5": lenet}.items():
    n = sum(w.size for w in model.get_weights() if w.ndim > 1)
    for bits in BITS:
        assert sizes[name, bits].quantized_bytes < n * bits / 8 * 1.1 + 2000
    assert sizes[name, 8].ratio > 3.5

# %% [markdown]
# 8 bits give close to 4x, 4 bits close to 8x, 1 bit up to 32x: the per-channel scales
# (4 bytes per output channel) are the only overhead, noticeable only on the small MLP.
# These are the kernels alone; Deep Compression {cite}`han2016deep` combines this with
# pruning and entropy coding (see {doc}`03_5_combining`).
#
# ## Binary weights
#
# `binarize` is the 1-bit case: $\hat W = \alpha \operatorname{sign}(W)$ with one
# $\alpha = \operatorname{mean}|W|$ per output filter, the weight half of XNOR-Net
# {cite}`rastegari2016xnor` (BinaryConnect {cite}`courbariaux2015binaryconnect` uses the
# sign alone during training). $\alpha = \operatorname{mean}|W|$ is the least-squares
# optimum: $\|W - \alpha B\|^2$ with $B = \operatorname{sign}(W)$ is minimised at
# $\alpha = W^\top B / n$.

# %%
show_source(Q.binarize)

# %% tags=["nbval-ignore-output"]
b = Q.binarize(fc1, axis=1)
alphas = np.unique(np.abs(b)).size
one_vs_two = stats.paired_difference(
    sweep["mlp", "per channel", 1], sweep["mlp", "per channel", 2],
    names=("1 bit, alpha = mean|w|", "2 bits narrow, S = max|w|"))
print(f"fc1 binarized: {alphas} distinct magnitudes (one alpha per unit)")
print("MLP PTQ:", one_vs_two)
glue("one_vs_two", str(one_vs_two), display=False)
assert alphas <= fc1.shape[1]

# %% [markdown]
# With no training at all, binary weights with the mean scale against the 3-level 2-bit
# grid with the max scale, over five seeds: {glue:text}`one_vs_two`. Two levels with a
# well-chosen scale are no worse here than three with the max scale: the choice of scale
# matters as much as the number of levels. Both are far from float accuracy without QAT.

# %%
assert one_vs_two.verdict in (stats.INDISTINGUISHABLE,
                              "1 bit, alpha = mean|w| better")
assert sweep["mlp", "per channel", 1].mean() < float_acc.mean() - 0.1

# %% [markdown]
# ## Folding BatchNorm into the layer before it
#
# Integer kernels compute $y = \operatorname{clamp}(Z_y + M\,\text{acc})$ per layer; a
# BatchNormalization between a convolution and its ReLU would be a float operation in the
# middle. In inference it is an affine map per channel with fixed statistics, so it folds
# into the kernel and bias before quantization (Jacob et al., section 3.2):
#
# $$
# \gamma\,\frac{xW + b - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta
# = x\,(W s) + \bigl(s\,(b - \mu) + \beta\bigr),
# \qquad s = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}},
# $$
#
# each output channel's kernel column scaled by its $s$. `fold_batchnorm` rewrites a model
# this way (through `surgery.rewrite`, dropping the BatchNormalization layers); the
# arithmetic is `fold_batchnorm_weights`:

# %%
show_source(Q.fold_batchnorm_weights)

# %% tags=["nbval-ignore-output"]
keras.utils.set_random_seed(0)
inp = keras.Input(images.input_shape)
x = inp
for i, filters in enumerate((16, 32), start=1):
    x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
    x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
    x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
x = keras.layers.Flatten()(x)
bn_net = keras.Model(inp, keras.layers.Dense(images.num_classes, name="out")(x))
cnl.models.train(bn_net, images, epochs=2)
folded = Q.fold_batchnorm(bn_net)
before = bn_net.predict(images.x_test, verbose=0)
after = folded.predict(images.x_test, verbose=0)
rel = np.abs(after - before).max() / np.abs(before).max()
print(f"layers: {len(bn_net.layers)} -> {len(folded.layers)}; largest logit "
      f"difference {rel:.1e} of the largest logit")
print("same predictions on all test images:",
      np.array_equal(after.argmax(1), before.argmax(1)))
assert rel < 1e-4
assert not any(isinstance(l, keras.layers.BatchNormalization)
               for l in folded.layers)

# %% [markdown]
# The folded model computes the same outputs up to float rounding, with two layers fewer.
# The TFLite converter folds BatchNorm the same way: its int8 model of `bn_net` has no
# normalisation op left (the op list, read from the file):

# %%
bn_ops = I.IntegerModel.from_tflite(
    T.to_tflite(bn_net, images.x_train[:256], int8_io=True)).ops
print([op.name for op in bn_ops])
assert [op.name for op in bn_ops].count("CONV_2D") == 2

# %% [markdown]
# ## Integer-only inference (Jacob et al. 2018)
#
# The PTQ models above *store* integer codes but compute in float32 with the dequantized
# weights. Integer-only inference {cite}`jacob2018quantization` runs the whole network in
# integers. With $r = S(q - Z)$ for the input $x$, the weights $w$ (symmetric:
# $Z_w = 0$, one $S_w$ per output channel) and the output $y$ of a layer
# $y = xW + b$:
#
# $$
# S_y (q_y - Z_y) = \sum_k S_x (q_{x,k} - Z_x)\, S_w\, q_{w,k} + b
# \quad\Longrightarrow\quad
# q_y = Z_y + M \Bigl(\underbrace{\textstyle\sum_k (q_{x,k} - Z_x)\, q_{w,k} + q_b}_
# {\text{int32 accumulator}}\Bigr),
# \qquad M = \frac{S_x S_w}{S_y},
# $$
#
# with the bias stored as int32 in the accumulator's scale, $q_b = \operatorname{round}(b /
# (S_x S_w))$, and the result rounded and clamped to int8 (a fused ReLU is just the clamp
# at $Z_y$). The only real number left is the multiplier $M$, and it is applied without
# floating point: $M = 2^{-n} M_0$ with $M_0 \in [0.5, 1)$ a 32-bit fixed-point number
# (stored as the integer $\operatorname{round}(M_0 \cdot 2^{31})$). Then $M \cdot
# \text{acc}$ is one integer multiply keeping the rounded high 32 bits of the 64-bit
# product (gemmlowp's `SaturatingRoundingDoublingHighMul`), followed by a rounding right
# shift by $n$ (`RoundingDivideByPOT`):

# %%
show_source(I.quantize_multiplier)

# %%
show_source(I.multiply_by_quantized_multiplier)

# %% [markdown]
# `IntegerModel` reads a full-integer `.tflite` file: the op list and options from the
# flatbuffer, and the int8 weights, int32 biases, scales and zero points from the
# interpreter's tensor details, so the NumPy reference and the interpreter use the same
# quantization parameters; it then runs each op with the functions of
# `compressnet_lite.integer` (`conv2d`, `max_pool2d`, `fully_connected`). The LeNet-5 from
# the sweep, converted with int8 input and output:

# %%
int8_blob = T.to_tflite(lenet, images.x_train[:256], int8_io=True)
ref = I.IntegerModel.from_tflite(int8_blob)
for op in ref.ops:
    p = op.params
    shape = p["w"].shape if "w" in p else ""
    bias = f"bias {p['bias'].dtype}" if p.get("bias") is not None else ""
    print(f"{op.name:<16} {str(shape):<18} {bias}")
conv1 = ref.ops[0]
assert conv1.params["w"].dtype == np.int8
assert conv1.params["bias"].dtype == np.int32

# %% [markdown]
# The first convolution's multiplier for its first filter, from the model's own scales, and
# one accumulator value through the integer path:

# %% tags=["nbval-ignore-output"]
tensors = {t["index"]: t for t in
           T.TFLiteRunner(int8_blob).interpreter.get_tensor_details()}


def scales(index):
    return tensors[index]["quantization_parameters"]["scales"]


s_x, s_w, s_y = (scales(i) for i in (conv1.inputs[0], conv1.inputs[1],
                                     conv1.output))
m = float(s_x[0]) * float(s_w[0]) / float(s_y[0])
m0, shift = I.quantize_multiplier(m)
acc = 12345
print(f"M = S_x S_w / S_y = {m:.6e} = M0 2^-n with M0 = {m0} "
      f"({m0 / 2 ** 31:.6f} in Q31), n = {-shift}")
print(f"acc = {acc}: exact acc * M = {acc * m:.4f}, integer result "
      f"{int(I.multiply_by_quantized_multiplier(acc, m0, shift))}")
assert 0.5 <= m0 / 2 ** 31 < 1
assert abs(m0 / 2 ** 31 * 2.0 ** shift - m) < 1e-9 * m

# %% [markdown]
# Now the whole test set, through the NumPy reference and through the LiteRT interpreter
# with each of its kernel sets: the default (most ops delegated to XNNPACK), the optimized
# builtin kernels, and TFLite's reference kernels. Both sides get the same int8 input
# codes; the table counts the int8 output codes (450 images x 10 logits) that differ:

# %% tags=["nbval-ignore-output"]
codes = I.quantize_input(images.x_test, *ref.input_details["quantization"])
ours = ref(codes)
agreement, per_op = {}, {}
for kernels in T.KERNELS:
    runner = T.TFLiteRunner(int8_blob, kernels=kernels, keep_tensors=True)
    diff = np.abs(ours.astype(int) - runner.raw(codes).astype(int))
    agreement[kernels] = {"max |difference|": diff.max(),
                          "codes that differ": int((diff > 0).sum()),
                          "of": diff.size}
    per_op[kernels] = I.op_differences(ref, runner, codes)
print(pd.DataFrame(agreement).T.to_string())
print("\nop by op (each op fed the interpreter's own input), "
      "codes that differ:")
print(pd.DataFrame({k: [f"{r.differing} (max {r.max_difference})" for r in rows]
                    for k, rows in per_op.items()},
                   index=[r.op for r in per_op["auto"]]).to_string())

# %% [markdown]
# The NumPy reference agrees with the interpreter's reference kernels bit for bit on every
# output of the test set, and with the optimized and XNNPACK kernels to within one unit in
# the last place (one int8 step), the target. The differences are rounding conventions
# inside TFLite itself, visible op by op: the reference convolution uses gemmlowp's two
# roundings (as the code above), the reference fully connected kernel rounds the 64-bit
# product once (`rounding="single"`, which `IntegerModel` follows op by op), and XNNPACK
# multiplies the accumulator by $M$ in float32. Two roundings of nearly the same real
# number differ by at most one, op by op; across layers such differences can add up, which
# is why the end-to-end agreement is checked, not assumed.

# %%
assert agreement["reference"]["max |difference|"] == 0
assert all(a["max |difference|"] <= 1 for a in agreement.values())
assert all(r.max_difference <= 1 for rows in per_op.values() for r in rows)

# %% tags=["nbval-ignore-output"]
int_correct = ours.argmax(1) == images.y_test
print("integer-only LeNet-5:", stats.accuracy_interval(int_correct))
int_vs_float = stats.mcnemar(int_correct, lenet_correct,
                             names=("integer-only", "float"))
print(int_vs_float)
assert int_vs_float.verdict == stats.INDISTINGUISHABLE

# %% [markdown]
# On the same test images the integer-only network and the float one are
# indistinguishable here (McNemar).
#
# ## Real int8 kernels: TensorFlow Lite
#
# The same flatbuffer is what a phone runs. `to_tflite` uses the converter's full-integer
# post-training quantization: it runs 256 representative examples through the model to
# calibrate every activation's range (affine int8, min/max), quantizes the weights per
# channel (symmetric int8), and emits a model in which every op has an int8 kernel.
# Against the float32 conversion of the same LeNet-5:

# %% tags=["nbval-ignore-output"]
f32_blob = T.to_tflite(lenet, int8=False)
run_f32, run_int8 = T.TFLiteRunner(f32_blob), T.TFLiteRunner(int8_blob)
tfl_correct = {"float32": run_f32(images.x_test).argmax(1) == images.y_test,
               "int8": run_int8(images.x_test).argmax(1) == images.y_test}
print(f"file: float32 {len(f32_blob):,} B, int8 {len(int8_blob):,} B "
      f"({len(f32_blob) / len(int8_blob):.1f}x smaller); "
      f"interpreter: {run_int8.backend}")
tfl_vs = stats.mcnemar(tfl_correct["int8"], tfl_correct["float32"],
                       names=("int8 TFLite", "float32 TFLite"))
print(tfl_vs)
assert len(int8_blob) < len(f32_blob) / 3
assert tfl_vs.verdict == stats.INDISTINGUISHABLE

# %% [markdown]
# Latency: the median of 30 runs at batch 256 on one thread (timings depend on the machine,
# so this cell is not checked by the tests; `benchmarks/quantization.py` measures the same
# on LeNet-300-100):

# %% tags=["nbval-ignore-output"]
x256 = np.resize(images.x_test, (256, *images.input_shape))
lat_f = cnl.metrics.latency(run_f32, x256)
lat_i = cnl.metrics.latency(run_int8, x256)
print(f"float32 {lat_f}, int8 {lat_i}: {lat_f.median / lat_i.median:.1f}x")

# %% [markdown]
# ## Keras' own `model.quantize("int8")`
#
# Keras 3 quantizes Dense, EinsumDense and Embedding layers in place: the kernel becomes an
# int8 variable with one scale per output unit, and the layer computes with the integer
# kernel. On the same MLP it stores exactly our per-channel int8 codes. It does not
# quantize convolutions (a model with Conv2D keeps them in float, with a warning per
# layer), has no integer widths other than int8/int4 (besides a float8 mode and GPTQ/AWQ
# modes for large language models), and changes the model it is called on, so we call it
# on a copy:

# %% tags=["nbval-ignore-output"]
keras_q = cnl.models.clone(mlp)
keras_q.quantize("int8")
k_kernel = keras_q.get_layer("fc1")._kernel.numpy()
identical = np.array_equal(k_kernel, Q.quantize(fc1, 8, axis=1).q)
keras_vs = stats.mcnemar(correct(keras_q), sweep["mlp", "per channel", 8][0],
                         names=("Keras int8", "ours"))
print(f"kernel dtype {k_kernel.dtype}; codes identical to ours: {identical}")
print(keras_vs)
print("trainable after quantize:", [w.path for w in keras_q.trainable_weights])
assert identical
assert keras_vs.verdict == stats.INDISTINGUISHABLE

# %% [markdown]
# After `quantize("int8")` only the biases remain trainable: a quantized Keras model can be
# fine-tuned no further than that, which is why QAT here uses fake quantization on float
# shadow weights instead.
#
# ## Summary
#
# | | the article | this chapter |
# |---|---|---|
# | rule | $\operatorname{round}(W)$: step 1 | step $S$ from the data: $q = \operatorname{round}(W/S) + Z$ |
# | result on the MLP | almost every weight 0, accuracy near chance | int8 and int4 per channel: indistinguishable from float |
# | code | `np.round(model.get_weights())` fails on the ragged list | per-layer codes, scales, packed bytes |
# | low bits | - | QAT with the straight-through estimator, against a float control; 2 bits narrow = 3 levels |
# | activations | - | ranges calibrated (min/max, percentile, MSE), EMA during QAT |
# | integers | - | BatchNorm folded; Jacob et al.'s int8/int32 arithmetic in NumPy, bit-exact with TFLite's reference kernels |
#
# ## Exercises
#
# 1. By hand: quantize $r = (-0.3, 0.1, 0.9)$ with 8-bit affine quantization. Give $S$, $Z$,
#    the codes and the dequantized values, then check with `Q.quantize(...,
#    symmetric=False)`.
# 2. Where does low-bit PTQ break? Quantize only one layer of the MLP (`layers=["fc1"]`,
#    then `fc2`, then `out`) at 4, 3 and 2 bits. Which layer is most sensitive? Does a
#    layer with a larger fan-in average its rounding errors away?
# 3. Show that for 1 bit the scale $\alpha = \operatorname{mean}|w|$ minimises the squared
#    error of $\alpha\operatorname{sign}(w)$, and compare numerically with
#    $\alpha = \max|w|$ on `fc1`.
# 4. Replace the max-abs scale of 2-bit symmetric quantization by one that clips: choose
#    $S$ to minimise $\|W - \hat W\|^2$ over a grid of clipping ranges. How much of the
#    2-bit PTQ loss does clipping recover?

# %% tags=["remove-cell"]
s1 = Q.quantize(np.array([-0.3, 0.1, 0.9], np.float32), bits=8, symmetric=False)
glue("s1_scale", float(s1.scale), display=False)
glue("s1_zero", int(s1.zero_point), display=False)
glue("s1_codes", str(s1.q.tolist()), display=False)
glue("s1_deq", str([round(float(v), 4) for v in Q.dequantize(s1)]),
     display=False)
glue("s1_half", float(s1.scale) / 2, display=False)
assert s1.q.tolist() == [0, 85, 255] and int(s1.zero_point) == 64

# %% [markdown]
# :::{admonition} Solution 1
# :class: dropdown
# The range is $[\min(r,0), \max(r,0)] = [-0.3, 0.9]$, so $S = 1.2/255 =$
# {glue:text}`s1_scale:.6f` and $Z = \operatorname{round}(0.3/S) =
# \operatorname{round}(63.75) =$ {glue:text}`s1_zero`. Codes:
# $\operatorname{round}(r/S) + Z =$ {glue:text}`s1_codes`; dequantized $S(q - Z) =$
# {glue:text}`s1_deq`, each within $S/2 =$ {glue:text}`s1_half:.5f` of $r$.
# ```python
# qt = Q.quantize(np.array([-0.3, 0.1, 0.9], np.float32), bits=8,
#                 symmetric=False)
# print(qt.q, qt.scale, qt.zero_point, Q.dequantize(qt))
# ```
# :::

# %% tags=["remove-cell", "nbval-ignore-output"]
only = {(name, bits): stats.paired_difference(
    np.array([ptq_correct(m, bits, template, layers=[name]) for m in mlps]),
    mlp_float, names=(f"{name} at {bits} bits", "float"))
    for name in ("fc1", "fc2", "out") for bits in (4, 3, 2)}
for (name, bits), test in only.items():
    glue(f"s2_{name}_{bits}", f"{test.mean * 100:+.1f}", display=False)
    glue(f"s2_{name}_{bits}_ci",
         f"[{test.low * 100:+.1f}, {test.high * 100:+.1f}]", display=False)
# Fan-in: the error of one unit's pre-activation, z - z_hat = sum_k x_k dw_k,
# against sqrt(n) * rms(x) * rms(dw) (independent errors) and n * ... (aligned).
x_in = keras.Model(mlp.inputs, mlp.get_layer("fc1").output).predict(
    data.x_test, verbose=0)
fan = {}
for name, xs in (("fc1", data.x_test), ("fc2", x_in)):
    kernel = mlp.get_layer(name).kernel.numpy()
    dw = Q.dequantize(Q.quantize(kernel, 3, axis=1)) - kernel
    err = (xs @ dw).std()
    indep = np.sqrt((xs ** 2).sum(1).mean()) * dw.std()
    aligned = np.abs(xs).sum(1).mean() * np.abs(dw).mean()
    fan[name] = (err, indep, aligned)
    glue(f"s2_{name}_err", f"{err:.3f}", display=False)
    glue(f"s2_{name}_indep", f"{indep:.3f}", display=False)
    glue(f"s2_{name}_aligned", f"{aligned:.3f}", display=False)
    assert abs(err / indep - 1) < 0.5 and err < aligned / 2
sensitive = max(("fc1", "fc2", "out"), key=lambda n: -only[n, 2].mean)
glue("s2_most", sensitive, display=False)
two_bit = {n: np.array([ptq_correct(m, 2, template, layers=[n]) for m in mlps])
           for n in ("fc1", sensitive)}
if sensitive != "fc1":
    glue("s2_vs", str(stats.paired_difference(
        two_bit["fc1"], two_bit[sensitive],
        names=("fc1 at 2 bits", f"{sensitive} at 2 bits"))), display=False)
else:
    glue("s2_vs", "fc1 itself", display=False)
assert all(only[n, b].mean > -0.015
           for n in ("fc1", "fc2", "out") for b in (4, 3))
print(pd.DataFrame({n: {b: str(only[n, b]) for b in (4, 3, 2)}
                    for n in ("fc1", "fc2", "out")}).to_string())

# %% [markdown]
# :::{admonition} Solution 2
# :class: dropdown
# ```python
# for layer in ["fc1", "fc2", "out"]:
#     for bits in [4, 3, 2]:
#         qm = Q.quantize_model(mlp, bits=bits, layers=[layer])
#         print(layer, bits, cnl.metrics.accuracy(qm, data.x_test, data.y_test))
# ```
# Over the five seeds (accuracy change in points against float, paired, with the 95%
# interval): at 4 bits `fc1` {glue:text}`s2_fc1_4` {glue:text}`s2_fc1_4_ci`, `fc2`
# {glue:text}`s2_fc2_4` {glue:text}`s2_fc2_4_ci`, `out` {glue:text}`s2_out_4`
# {glue:text}`s2_out_4_ci`; at 2 bits `fc1` {glue:text}`s2_fc1_2`
# {glue:text}`s2_fc1_2_ci`, `fc2` {glue:text}`s2_fc2_2` {glue:text}`s2_fc2_2_ci`, `out`
# {glue:text}`s2_out_2` {glue:text}`s2_out_2_ci`. At 4 and 3 bits no single layer costs
# more than about a point on average here; at 2 bits the largest mean loss is {glue:text}`s2_most`'s, and
# paired against quantizing `fc1` alone: {glue:text}`s2_vs`.
#
# Fan-in does *not* average rounding errors away. A unit's pre-activation error is
# $\Delta z = \sum_{k=1}^{n} x_k \Delta w_k$. If the rounding errors $\Delta w_k$ are
# independent with mean 0 (they are, roughly: uniform within $\pm S/2$), the variances add:
# $\operatorname{std}(\Delta z) = \sqrt{\textstyle\sum_k x_k^2}\;\operatorname{std}(\Delta
# w)$, which grows like $\sqrt n$, not like $n$ (errors of one sign would add like $n$) and
# not like $1/\sqrt n$ (an average). Measured at 3 bits on the test images:
# `fc1` std$(\Delta z)$ = {glue:text}`s2_fc1_err` against $\sqrt{\sum x^2}\,
# \operatorname{std}(\Delta w)$ = {glue:text}`s2_fc1_indep` (the all-aligned bound
# $\sum|x|\,\overline{|\Delta w|}$ would be {glue:text}`s2_fc1_aligned`); `fc2`
# {glue:text}`s2_fc2_err` against {glue:text}`s2_fc2_indep` (aligned
# {glue:text}`s2_fc2_aligned`). The signal $z$ grows with $\sqrt n$ too, so the relative
# error of a unit depends on the step relative to the weights, not on the fan-in. What
# makes a layer sensitive is how its output errors reach the loss: the output layer's
# errors move the logits directly. Per-layer bit widths (more bits where the loss is
# sensitive) are what mixed-precision methods such as HAQ {cite}`wang2019haq` search for.
# :::

# %% tags=["remove-cell", "nbval-ignore-output"]
signs = np.where(fc1 >= 0, 1, -1)
err_mean = ((fc1 - np.abs(fc1).mean() * signs) ** 2).sum()
err_max = ((fc1 - np.abs(fc1).max() * signs) ** 2).sum()
glue("s3_mean", f"{err_mean:.1f}", display=False)
glue("s3_max", f"{err_max:.1f}", display=False)
assert err_mean < err_max

# %% [markdown]
# :::{admonition} Solution 3
# :class: dropdown
# With $B = \operatorname{sign}(w)$, $\|w - \alpha B\|^2 = \|w\|^2 - 2\alpha\, w^\top B +
# \alpha^2 n$, and $w^\top B = \sum |w_i|$. Setting the derivative to 0 gives
# $\alpha = \sum|w_i| / n = \operatorname{mean}|w|$.
# ```python
# s = np.where(fc1 >= 0, 1, -1)
# for alpha in [np.abs(fc1).mean(), np.abs(fc1).max()]:
#     print(alpha, ((fc1 - alpha * s) ** 2).sum())
# ```
# On seed 0's `fc1`: squared error {glue:text}`s3_mean` with the mean against
# {glue:text}`s3_max` with the max.
# :::

# %% tags=["remove-cell", "nbval-ignore-output"]
def clipped(w, bits, grid=np.linspace(0.2, 1.0, 17)):
    """Per-tensor symmetric quantization with the best clipping range."""
    qmax = 2 ** (bits - 1) - 1
    best = None
    for c in grid * np.abs(w).max():
        s = c / qmax
        w_hat = np.clip(np.round(w / s), -qmax, qmax) * s
        err = ((w - w_hat) ** 2).sum()
        if best is None or err < best[0]:
            best = (err, w_hat)
    return best[1]


clip_correct = []
for m in mlps:
    template.set_weights([clipped(w, 2) if w.ndim == 2 else w
                          for w in m.get_weights()])
    clip_correct.append(correct(template))
s4 = stats.paired_difference(np.array(clip_correct),
                             sweep["mlp", "per tensor", 2],
                             names=("clipped", "max|w|"))
glue("s4_clip", f"{np.mean(clip_correct):.3f}", display=False)
glue("s4_max", f"{sweep['mlp', 'per tensor', 2].mean():.3f}", display=False)
glue("s4_float", f"{float_acc.mean():.3f}", display=False)
glue("s4_diff", str(s4), display=False)
print(s4)

# %% [markdown]
# :::{admonition} Solution 4
# :class: dropdown
# ```python
# def clipped(w, bits, grid=np.linspace(0.2, 1.0, 17)):
#     qmax = 2 ** (bits - 1) - 1
#     best = None
#     for c in grid * np.abs(w).max():
#         s = c / qmax
#         w_hat = np.clip(np.round(w / s), -qmax, qmax) * s
#         err = ((w - w_hat) ** 2).sum()
#         if best is None or err < best[0]:
#             best = (err, w_hat)
#     return best[1]
# m2 = cnl.models.clone(mlp)
# m2.set_weights([clipped(w, 2) if w.ndim == 2 else w for w in mlp.get_weights()])
# print(cnl.metrics.accuracy(m2, data.x_test, data.y_test))
# ```
# Over the five MLPs, 2-bit per-tensor PTQ scores {glue:text}`s4_max` with the max scale
# and {glue:text}`s4_clip` with the MSE-optimal clipping (float: {glue:text}`s4_float`);
# paired: {glue:text}`s4_diff`. Clipping the range (as TFLite and most PTQ tools do for
# activations, and as {cite}`nagel2021white` discuss for weights) trades a larger error on
# a few outliers for a finer step for everyone else; with only three levels, making the
# middle level catch more weights is most of the gain.
# :::
