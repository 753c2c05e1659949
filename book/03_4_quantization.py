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
# channel, after training (PTQ) or during it (QAT), down to one bit
# {cite}`courbariaux2015binaryconnect,rastegari2016xnor`, and finally with real int8 kernels
# through TensorFlow Lite.

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import compressnet_lite as cnl
from compressnet_lite.notebook import setup, show_source
from compressnet_lite import quantization as Q

setup()

# %% [markdown]
# ## The article's rule, run
#
# We train the article's network (Dense 64-32-10, `seed_mlp`) on the bundled 8x8 digits, as
# the article does, and look at its weights.

# %%
digits = cnl.data.load_digits()
keras.utils.set_random_seed(0)
mlp = cnl.models.train(cnl.models.seed_mlp(), digits, epochs=10)
float_acc = cnl.metrics.accuracy(mlp, digits.x_test, digits.y_test)
kernels = [w for w in mlp.get_weights() if w.ndim == 2]
all_w = np.concatenate([k.ravel() for k in kernels])
inside = np.mean(np.abs(all_w) < 0.5)
print(f"float accuracy {float_acc:.3f}; {inside:.1%} of the kernel weights have |w| < 0.5 "
      f"(round to 0); largest |w| = {np.abs(all_w).max():.2f}")
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

# %%
rounded = keras.models.clone_model(mlp)
rounded.set_weights([np.round(w) for w in mlp.get_weights()])
round_acc = cnl.metrics.accuracy(rounded, digits.x_test, digits.y_test)
zero_after = np.mean(np.concatenate([np.round(k).ravel() for k in kernels]) == 0)
print(f"after round(W): {zero_after:.1%} of kernel weights are 0, accuracy {round_acc:.3f} "
      f"(was {float_acc:.3f}; chance is 0.100)")
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
# q = \operatorname{clip}\!\left(\operatorname{round}\!\left(\frac{r}{S}\right) + Z,\; q_\min,\; q_\max\right),
# \qquad \hat r = S\,(q - Z).
# $$
#
# The **scale** $S$ is the step between neighbouring levels; the **zero point** $Z$ is the
# code that stands for the real value 0. Two common choices:
#
# * **Affine (asymmetric)**: the range $[\alpha, \beta] = [\min(r, 0), \max(r, 0)]$ maps onto
#   the unsigned codes $0 \ldots 2^b - 1$:
#   $S = (\beta - \alpha) / (2^b - 1)$, $Z = \operatorname{round}(-\alpha / S)$. The range always
#   contains 0, so 0 (a pruned weight, zero padding) is represented exactly.
# * **Symmetric**: $Z = 0$ and signed codes $-(2^{b-1} - 1) \ldots 2^{b-1} - 1$ (int8: $-127
#   \ldots 127$, the "narrow range" that TFLite and Keras use for weights), $S = \max|r| /
#   (2^{b-1}-1)$. Without a zero point an integer matrix product needs no correction terms,
#   which is why weights are usually symmetric and activations (after ReLU, all $\ge 0$) affine.
#
# **Error bound.** Inside the representable range $[S(q_\min - Z), S(q_\max - Z)]$ rounding to
# the nearest level is off by at most half a step:
#
# $$
# |r - \hat r| \le \frac{S}{2}.
# $$
#
# Outside it, values are clipped. Per tensor, the range is set by the *largest* weight: one
# outlier stretches $S$ and every other weight gets coarser levels. **Per channel**, each
# output channel (a column of a Dense kernel, a filter of a convolution) gets its own $S$, so
# a channel of small weights is not quantized with the step of a channel of large ones.
# Channels can be scaled independently because each output channel's dot product is
# multiplied by a single number afterwards.
#
# One bit is a special case: the codes are $\pm 1$ and the best scale for $\hat r = \alpha
# \operatorname{sign}(r)$ is $\alpha = \operatorname{mean}|r|$ (XNOR-Net
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
# Affine 8 bit: $S = 2/255$, $Z = \operatorname{round}(127.5) = 128$, so $r = 1$ would be code
# 256: it is clipped to 255, the one value outside the representable range.

# %%
r = np.array([-1.0, 0.0, 0.5, 1.0], np.float32)
for bits, symmetric in [(8, True), (2, True), (8, False)]:
    qt = Q.quantize(r, bits=bits, symmetric=symmetric)
    print(f"{bits} bit {'symmetric' if symmetric else 'affine   '}: codes {qt.q.tolist()}, "
          f"S = {float(qt.scale):.5f}, Z = {int(qt.zero_point)}, "
          f"dequantized {[round(float(v), 4) for v in Q.dequantize(qt)]}")
assert Q.quantize(r, 8).q.tolist() == [-127, 0, 64, 127]
assert Q.quantize(r, 8, symmetric=False).q.tolist() == [0, 128, 192, 255]

# %% [markdown]
# Keras ships the same symmetric int8 rule as `keras.quantizers.abs_max_quantize`. It returns
# the *reciprocal* of our scale ($127 / (\max|r| + \epsilon)$, a multiplier) and its `axis` is
# the axis it reduces over, where ours is the axis that keeps one scale per index. The codes
# agree exactly (the tests check this on random kernels, per tensor and per channel):

# %%
fc1 = mlp.get_layer("fc1").kernel.numpy()
k_codes, k_mult = keras.quantizers.abs_max_quantize(fc1, axis=0, to_numpy=True)
ours = Q.quantize(fc1, bits=8, axis=1)
same = np.array_equal(np.asarray(k_codes), ours.q)
rel = np.max(np.abs(1 / np.asarray(k_mult).ravel() - ours.scale) / ours.scale)
print(f"codes identical: {same}; scale = 1/multiplier within {rel:.1e} (relative)")
assert same and rel < 1e-5

# %% [markdown]
# ### Why per channel matters
#
# The columns of `fc1` (one per output unit) have very different ranges. With one scale for
# the whole kernel, the step is set by the largest column:

# %%
col_max = np.abs(fc1).max(axis=0)
print(f"max |w| per output channel of fc1: smallest {col_max.min():.3f}, "
      f"median {np.median(col_max):.3f}, largest {col_max.max():.3f}")
for bits in (4, 3):
    e_t = np.abs(fc1 - Q.dequantize(Q.quantize(fc1, bits))).mean()
    e_c = np.abs(fc1 - Q.dequantize(Q.quantize(fc1, bits, axis=1))).mean()
    print(f"{bits} bit: mean |error| per tensor {e_t:.4f}, per channel {e_c:.4f}")
    assert e_c < e_t

# %% [markdown]
# The histogram of `fc1`'s weights with the levels of 3-bit symmetric quantization (per
# tensor: 7 levels, $-3S \ldots 3S$) shows how few levels are left, and that most weights
# fall near the levels around 0:

# %%
qt3 = Q.quantize(fc1, bits=3)
levels = float(qt3.scale) * np.arange(-3, 4)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
axes[0].hist(fc1.ravel(), bins=80, color="tab:blue", alpha=0.7)
for lv in levels:
    axes[0].axvline(lv, color="tab:red", lw=1)
axes[0].set(title="fc1 weights and the 7 levels of 3-bit (per tensor)", xlabel="w")
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
# scales and zero points as non-trainable `cnl_codes`, `cnl_scale`, `cnl_zero_point` weights
# (saved in the `.keras` file). Biases stay float32: there are few of them.

# %%
q4 = Q.quantize_model(mlp, bits=4)
layer = q4.get_layer("fc1")
print(type(layer).__name__, "weights:", [w.path.split("/")[-1] for w in layer.weights])
qt = layer.qtensor()
print(f"codes {qt.q.dtype} in [{qt.q.min()}, {qt.q.max()}], {qt.scale.size} scales; "
      f"kernel == S * codes: {np.array_equal(layer.kernel.numpy(), Q.dequantize(qt))}")
assert np.array_equal(layer.kernel.numpy(), Q.dequantize(qt))
assert np.array_equal(mlp.get_layer("fc1").kernel.numpy(), fc1)  # the caller's model is untouched

# %% [markdown]
# We sweep 8 down to 1 bit, per tensor and per channel, on the MLP and on LeNet-5 (its two
# convolutions quantized per filter), trained on the digits as 8x8x1 images.

# %%
images = cnl.data.load_digits(image=True)
keras.utils.set_random_seed(0)
lenet = cnl.models.train(cnl.models.lenet5(input_shape=(8, 8, 1)), images, epochs=5)
models = {"seed_mlp": (mlp, digits), "lenet5": (lenet, images)}
base = {name: cnl.metrics.accuracy(m, d.x_test, d.y_test) for name, (m, d) in models.items()}
BITS = [8, 6, 5, 4, 3, 2, 1]
rows = []
for name, (model, data) in models.items():
    for bits in BITS:
        for per_channel in (False, True):
            qm = Q.quantize_model(model, bits=bits, per_channel=per_channel)
            rep = Q.quantization_report(qm, data.x_test, data.y_test)
            rows.append({"model": name, "bits": bits,
                         "method": "PTQ per channel" if per_channel else "PTQ per tensor",
                         "accuracy": rep.accuracy, "kernel bytes": rep.quantized_bytes,
                         "ratio": rep.ratio})
ptq = pd.DataFrame(rows)
print({k: round(v, 3) for k, v in base.items()})
print(ptq.pivot_table(index="bits", columns=["model", "method"], values="accuracy")
      .sort_index(ascending=False).round(3).to_string())

# %% [markdown]
# ## Quantization-aware training (QAT)
#
# Below 4 bits, rounding after training costs accuracy. QAT trains *with* the rounding: the
# forward pass uses the fake-quantized kernel $S\,\operatorname{round}(W/S)$, the backward pass
# pretends the rounding is the identity (the **straight-through estimator**
# {cite}`bengio2013estimating,courbariaux2015binaryconnect,hubara2016binarized`), so the float
# "shadow" weights keep accumulating updates too small to move a weight to the next level on
# their own. `quantize_aware` builds that model from a trained one; `fit` it as usual, then
# one call to `quantize_model` gives the integer form (it keeps each layer's trained bit width):

# %%
show_source(Q.fake_quant_weights)

# %%
QAT_BITS = [4, 2, 1]
qat_rows = []
for name, (model, data) in models.items():
    for bits in QAT_BITS:
        keras.utils.set_random_seed(0)
        qat = Q.quantize_aware(model, bits=bits)
        cnl.models.train(qat, data, epochs=5 if name == "seed_mlp" else 3, learning_rate=5e-4)
        converted = Q.quantize_model(qat)
        acc = cnl.metrics.accuracy(converted, data.x_test, data.y_test)
        assert abs(acc - cnl.metrics.accuracy(qat, data.x_test, data.y_test)) < 0.005
        qat_rows.append({"model": name, "bits": bits, "method": "QAT per channel", "accuracy": acc})
qat_df = pd.DataFrame(qat_rows)
print(qat_df.pivot_table(index="bits", columns="model", values="accuracy")
      .sort_index(ascending=False).round(3).to_string())

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
results = pd.concat([ptq, qat_df])
for ax, name in zip(axes, models):
    for method, style in [("PTQ per tensor", "o--"), ("PTQ per channel", "s-"), ("QAT per channel", "^-")]:
        part = results[(results.model == name) & (results.method == method)].sort_values("bits")
        ax.plot(part.bits, part.accuracy, style, label=method)
    ax.axhline(base[name], color="gray", lw=1, label="float32")
    ax.set(title=name, xlabel="bits per weight", xticks=BITS)
axes[0].set_ylabel("test accuracy")
axes[1].legend(loc="lower right")
plt.tight_layout()
plt.show()

# %% [markdown]
# What the sweep shows (each statement is checked below):
#
# * 8 bits per weight cost nothing measurable on either model: int8 PTQ is within 1 point of
#   float32, and so is 4-bit per-channel PTQ.
# * Per-channel scales matter for the MLP at 3 and 2 bits (per tensor loses several points
#   more). On LeNet-5 the two are within noise of each other down to 2 bits: its layers have
#   many weights per channel and similar channel ranges.
# * At 2 bits, symmetric PTQ has only the levels $\{-S, 0, S\}$ with $S = \max|w|$: most
#   weights become 0 and accuracy drops sharply. On LeNet-5, 1 bit with
#   $\alpha = \operatorname{mean}|w|$ is *better* than 2 bits with the max scale: the choice
#   of scale matters as much as the number of levels.
# * QAT recovers most of it: a few epochs of training at 2 bits bring both models back
#   within a few points of float accuracy, and even 1-bit weights work after QAT.

# %%
acc = results.set_index(["model", "method", "bits"]).accuracy
for name in models:
    assert acc[name, "PTQ per channel", 8] >= base[name] - 0.01
    assert acc[name, "PTQ per tensor", 8] >= base[name] - 0.01
    assert acc[name, "PTQ per channel", 4] >= base[name] - 0.01
    assert acc[name, "PTQ per channel", 2] < base[name] - 0.05           # PTQ breaks at 2 bits
    assert acc[name, "QAT per channel", 2] > acc[name, "PTQ per channel", 2] + 0.05
    assert acc[name, "QAT per channel", 2] >= base[name] - 0.05
    assert acc[name, "QAT per channel", 1] >= base[name] - 0.05
for bits in (3, 2):
    assert acc["seed_mlp", "PTQ per channel", bits] > acc["seed_mlp", "PTQ per tensor", bits] + 0.01
assert abs(acc["lenet5", "PTQ per channel", 3] - acc["lenet5", "PTQ per tensor", 3]) < 0.02
assert acc["lenet5", "PTQ per channel", 1] > acc["lenet5", "PTQ per channel", 2] + 0.03

# %% [markdown]
# ## Bytes on disk
#
# Quantized codes only save space if they are stored with $b$ bits each, not one byte (or
# four) per code. `pack` writes the codes bit by bit (two 4-bit codes per byte, four 2-bit
# codes ...); `quantization_report` *measures* the file of packed codes plus the float32
# scales against a file of the same kernels in float32:

# %%
show_source(Q.pack)

# %%
sizes = ptq[ptq.method == "PTQ per channel"].pivot_table(index="bits", columns="model",
                                                        values=["kernel bytes", "ratio"])
print(sizes.sort_index(ascending=False).round(1).to_string())
for name, (model, _) in models.items():
    n = sum(l.kernel.numpy().size for l in model.layers if hasattr(l, "kernel"))
    for bits in BITS:
        row = ptq[(ptq.model == name) & (ptq.bits == bits) & (ptq.method == "PTQ per channel")].iloc[0]
        assert row["kernel bytes"] < n * bits / 8 * 1.1 + 2000   # packed codes + a few scales
    assert ptq[(ptq.model == name) & (ptq.bits == 8)].ratio.min() > 3.5

# %% [markdown]
# 8 bits give close to 4x, 4 bits close to 8x, 1 bit up to 32x: the per-channel scales
# (4 bytes per output channel) are the only overhead, noticeable only on the small MLP. These
# are the kernels alone; Deep Compression {cite}`han2016deep` combines this with pruning and
# entropy coding (see {doc}`03_5_combining`).
#
# ## Binary weights
#
# `binarize` is the 1-bit case: $\hat W = \alpha \operatorname{sign}(W)$ with one
# $\alpha = \operatorname{mean}|W|$ per output filter, the weight half of XNOR-Net
# {cite}`rastegari2016xnor` (BinaryConnect {cite}`courbariaux2015binaryconnect` uses the sign
# alone during training). $\alpha = \operatorname{mean}|W|$ is the least-squares optimum:
# $\|W - \alpha B\|^2$ with $B = \operatorname{sign}(W)$ is minimised at $\alpha = W^\top B / n$.

# %%
show_source(Q.binarize)

# %%
b = Q.binarize(fc1, axis=1)
alphas = np.unique(np.abs(b), axis=None).size
one_bit = acc["seed_mlp", "PTQ per channel", 1], acc["seed_mlp", "QAT per channel", 1]
print(f"fc1 binarized: {alphas} distinct magnitudes (one alpha per output unit, at most 64); "
      f"MLP accuracy with binary weights: PTQ {one_bit[0]:.3f}, QAT {one_bit[1]:.3f} "
      f"(float {base['seed_mlp']:.3f})")
assert alphas <= 64 and one_bit[1] > one_bit[0]

# %% [markdown]
# ## Real int8 kernels: TensorFlow Lite
#
# The models above *store* integer codes but compute in float32 with the dequantized
# weights: smaller files, same speed. To run integer arithmetic, the activations must be
# quantized too, which needs their ranges. `to_tflite` uses the TensorFlow Lite converter's
# full-integer post-training quantization: it runs a few hundred representative examples
# through the model to calibrate every activation's range (affine int8), quantizes the
# weights per channel (symmetric int8), and emits a model in which every op has an int8
# kernel (inputs and outputs stay float32, with a quantize op at the entry and a dequantize
# op at the exit). `tflite_predict` runs it in LiteRT's interpreter.

# %%
tfl = {}
for name, (model, data) in models.items():
    f32 = Q.to_tflite(model, int8=False)
    i8 = Q.to_tflite(model, representative_data=data.x_train)
    runner_f, runner_i = Q.TFLiteRunner(f32), Q.TFLiteRunner(i8)
    tfl[name] = {"float32 bytes": len(f32), "int8 bytes": len(i8),
                 "float32 acc": np.mean(runner_f(data.x_test).argmax(1) == data.y_test),
                 "int8 acc": np.mean(runner_i(data.x_test).argmax(1) == data.y_test),
                 "runners": (runner_f, runner_i)}
print("interpreter:", runner_i.backend)
print(pd.DataFrame(tfl).T.drop(columns="runners").to_string(float_format=lambda v: f"{v:.3f}"))
for name, t in tfl.items():
    assert t["int8 acc"] >= t["float32 acc"] - 0.01
    assert t["int8 bytes"] < t["float32 bytes"] / 2
assert tfl["lenet5"]["int8 bytes"] < tfl["lenet5"]["float32 bytes"] / 3

# %% [markdown]
# Int8 TFLite keeps the float model's accuracy (within one point) on both models. LeNet-5's
# file shrinks about 3.5x; the MLP's only about 2x, because a `.tflite` file also holds the
# graph, tensor names and per-tensor quantization parameters, a fixed few kilobytes that
# dominate a model of 6,570 parameters.

# %% [markdown]
# Latency: the median of 30 runs at batch 256 on one thread (timings depend on the machine,
# so this cell is not checked by the tests; the benchmark script measures the same thing on
# LeNet-300-100).

# %% tags=["nbval-ignore-output"]
for name, (model, data) in models.items():
    runner_f, runner_i = tfl[name]["runners"]
    x = np.resize(data.x_test, (256, *data.x_test.shape[1:]))
    lat_f, lat_i = cnl.metrics.latency(runner_f, x), cnl.metrics.latency(runner_i, x)
    print(f"{name}: float32 {lat_f}, int8 {lat_i}: {lat_f.median / lat_i.median:.1f}x")

# %% [markdown]
# ## Keras' own `model.quantize("int8")`
#
# Keras 3 quantizes Dense, EinsumDense and Embedding layers in place: the kernel becomes an
# int8 variable with one scale per output unit, and the layer computes with the integer
# kernel. On the same MLP it stores exactly our per-channel int8 codes. It does not
# quantize convolutions (a model with Conv2D keeps them in float, with a warning per
# layer), has no integer widths other than int8/int4 (besides a float8 mode and GPTQ/AWQ
# modes for large language models), and changes the model it is called on, so we call it on a copy:

# %%
keras_q = keras.models.clone_model(mlp)
keras_q.set_weights(mlp.get_weights())
keras_q.quantize("int8")
keras_acc = cnl.metrics.accuracy(keras_q, digits.x_test, digits.y_test)
k_kernel = keras_q.get_layer("fc1")._kernel.numpy()
print(f"Keras int8 accuracy {keras_acc:.3f} (ours {acc['seed_mlp', 'PTQ per channel', 8]:.3f}); "
      f"kernel dtype {k_kernel.dtype}; codes identical to ours: {np.array_equal(k_kernel, ours.q)}; "
      f"trainable after quantize: {[w.path for w in keras_q.trainable_weights]}")
assert np.array_equal(k_kernel, ours.q)
assert abs(keras_acc - acc["seed_mlp", "PTQ per channel", 8]) <= 0.005

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
# | result on the MLP | almost every weight 0, accuracy near chance | int8 and int4 per channel: no measurable loss |
# | code | `np.round(model.get_weights())` fails on the ragged list | per-layer codes, scales, packed bytes |
# | low bits | - | QAT with the straight-through estimator; binary weights with $\alpha = $ mean $\lvert W\rvert$ |
# | speed | - | int8 kernels via TFLite full-integer quantization |
#
# ## Exercises
#
# 1. By hand: quantize $r = (-0.3, 0.1, 0.9)$ with 8-bit affine quantization. Give $S$, $Z$,
#    the codes and the dequantized values, then check with `Q.quantize(..., symmetric=False)`.
# 2. Where does 4-bit break? Quantize only `fc1` of the MLP (`layers=["fc1"]`) at 4, 3, 2
#    bits, then only `out`. Which layer is more sensitive, and why might that be?
# 3. Show that for 1 bit the scale $\alpha = \operatorname{mean}|w|$ minimises the squared
#    error of $\alpha\operatorname{sign}(w)$, and compare numerically with $\alpha = \max|w|$ on `fc1`.
# 4. Replace the max-abs scale of 2-bit symmetric quantization by one that clips: choose $S$
#    to minimise $\|W - \hat W\|^2$ over a grid of clipping ranges. How much of the 2-bit
#    PTQ loss does clipping recover?
#
# :::{admonition} Solution 1
# :class: dropdown
# The range is $[\min(r,0), \max(r,0)] = [-0.3, 0.9]$, so $S = 1.2/255 \approx 0.004706$ and
# $Z = \operatorname{round}(0.3/S) = \operatorname{round}(63.75) = 64$. Codes:
# $\operatorname{round}(r/S) + Z = (-64, 21, 191) + 64 = (0, 85, 255)$; dequantized
# $S(q - Z) = (-0.3012, 0.0988, 0.8988)$, each within $S/2 = 0.00235$ of $r$.
# ```python
# qt = Q.quantize(np.array([-0.3, 0.1, 0.9], np.float32), bits=8, symmetric=False)
# print(qt.q, qt.scale, qt.zero_point, Q.dequantize(qt))   # [0 85 255] 0.004706 64 ...
# ```
# :::
#
# :::{admonition} Solution 2
# :class: dropdown
# ```python
# for layer in ["fc1", "out"]:
#     for bits in [4, 3, 2]:
#         qm = Q.quantize_model(mlp, bits=bits, layers=[layer])
#         print(layer, bits, cnl.metrics.accuracy(qm, digits.x_test, digits.y_test))
# ```
# 4 bits per channel are harmless for every layer of this MLP; the break comes at 2 bits.
# The first layer has the most weights, and its errors are averaged over 64 inputs per unit;
# the output layer has few weights, and each error moves a logit directly, so per weight it
# is the more sensitive one. Per-layer bit widths (more bits where the loss is sensitive) are
# what automatic mixed-precision methods such as HAQ {cite}`wang2019haq` search for.
# :::
#
# :::{admonition} Solution 3
# :class: dropdown
# With $B = \operatorname{sign}(w)$, $\|w - \alpha B\|^2 = \|w\|^2 - 2\alpha\, w^\top B + \alpha^2 n$,
# and $w^\top B = \sum |w_i|$. Setting the derivative to 0 gives
# $\alpha = \sum|w_i| / n = \operatorname{mean}|w|$.
# ```python
# s = np.where(fc1 >= 0, 1, -1)
# for alpha in [np.abs(fc1).mean(), np.abs(fc1).max()]:
#     print(alpha, ((fc1 - alpha * s) ** 2).sum())   # the mean gives a far smaller error
# ```
# :::
#
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
#         best = min(best or (err, w_hat), (err, w_hat), key=lambda t: t[0])
#     return best[1]
# m2 = keras.models.clone_model(mlp)
# m2.set_weights([clipped(w, 2) if w.ndim == 2 else w for w in mlp.get_weights()])
# print(cnl.metrics.accuracy(m2, digits.x_test, digits.y_test))
# ```
# Clipping the range (as TFLite and most PTQ tools do for activations, and methods such as
# {cite}`nagel2021white` discuss for weights) trades a larger error on a few outliers for a
# finer step for everyone else, and recovers a good part of the 2-bit loss.
# :::
