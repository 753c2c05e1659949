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
# # Future directions (未来展望, article section 6)
#
# The article closes with five research directions, one sentence each:
#
# 1. more efficient optimisation algorithms (更高效的神经网络优化算法);
# 2. adaptive optimisation, choosing the best strategy for each model automatically (自适应优化);
# 3. fusing different methods (融合不同优化方法);
# 4. hardware optimisation (深度学习模型的硬件优化);
# 5. further work on knowledge distillation (知识蒸馏的进一步研究).
#
# All five are real directions, and all five already have a large literature that the
# article does not mention. This chapter gives, for each, what the current state of the art
# does (with the papers), and where a small experiment fits, runs it on the bundled digits
# with the library:
#
# | trend | run here |
# |---|---|
# | 1 more efficient algorithms | Wanda's one-shot pruning score, against magnitude |
# | 2 adaptive optimisation | a per-layer sensitivity scan that chooses per-layer sparsity and bit width under a budget, against a uniform setting at the same budget |
# | 3 fusing methods | `cnl.pipeline.compress`: the chosen pruning, then 4-bit quantization-aware fine-tuning, measured in real bytes |
# | 4 hardware | float32 against full-int8 TensorFlow Lite kernels: latency, size, accuracy |
#
# Trend 5 concerns methods whose interest shows with large teachers and long training,
# which a two-minute chapter cannot reach; for it we give the literature and point to the
# distillation chapter.

# %%
import time

import keras
import matplotlib.pyplot as plt
import numpy as np

import compressnet_lite as cnl
from compressnet_lite.notebook import setup, show_source

setup()
Q = cnl.quantization

# %% [markdown]
# We train LeNet-300-100 {cite}`lecun1998gradient` (Dense 300-100-10, here on 64-pixel
# inputs) on the digits. 300 of the training examples are held out as a **validation**
# split: every automatic choice below is made on them, and the test split is only used to
# report the result (choosing on the test set would flatter the automatic method).

# %%
digits = cnl.data.load_digits()
n_val = 300
x_val, y_val = digits.x_train[:n_val], digits.y_train[:n_val]
train = cnl.data.Dataset(digits.x_train[n_val:], digits.y_train[n_val:], digits.x_test, digits.y_test)

keras.utils.set_random_seed(0)
net = cnl.models.train(cnl.models.lenet_300_100(64), train, epochs=10)
base_acc = cnl.metrics.accuracy(net, digits.x_test, digits.y_test)
base_val = cnl.metrics.accuracy(net, x_val, y_val)
layers = ["fc1", "fc2", "out"]
size = {name: int(np.prod(net.get_layer(name).kernel.shape)) for name in layers}
print(f"test accuracy {base_acc:.3f}, validation accuracy {base_val:.3f}; kernel weights {size}")
assert base_acc > 0.95

# %% [markdown]
# ## 1. More efficient algorithms
#
# The pruning and quantization of this book's chapter 3 retrain the model after compressing
# it ({doc}`03_1_pruning`, {doc}`03_4_quantization`). For models with billions of weights,
# retraining is the expensive part, so the last few years' work went into **one-shot,
# post-training** methods that use a little calibration data instead:
#
# - *Pruning*: SparseGPT {cite}`frantar2023sparsegpt` prunes GPT-scale models to 50-60%
#   sparsity in one shot by solving a layer-wise reconstruction problem (an approximate
#   Optimal Brain Surgeon {cite}`hassibi1993second` update of the remaining weights);
#   Wanda {cite}`sun2024simple` gets close to it with no weight update at all, scoring each
#   weight by $|W_{ij}| \cdot \lVert X_j \rVert_2$, its magnitude times the norm of its input
#   feature over the calibration data.
# - *Quantization*: GPTQ {cite}`frantar2023gptq` quantizes weights to 3-4 bits column by
#   column, correcting the not-yet-quantized columns for the error made so far; AWQ
#   {cite}`lin2024awq` protects the few weight channels that see large activations by
#   scaling; LLM.int8() {cite}`dettmers2022llmint8` keeps the rare outlier features in 16 bits
#   and the rest in int8.
# - *Training sparse from the start*: the lottery-ticket experiments
#   {cite}`frankle2019lottery` found sparse sub-networks that train to full accuracy from their
#   original initialisation, which raised the question of whether dense training is needed at
#   all; surveys of what sparsity buys in practice are {cite}`gale2019state`,
#   {cite}`blalock2020state` and {cite}`hoefler2021sparsity`. Blalock et al. also note that
#   many pruning papers cannot be compared because they use different baselines and budgets.
#
# Wanda's score is easy to try, because `cnl.pruning.prune` accepts any criterion
# `fn(model, layers, data) -> list of score arrays`. One shot, 90% of every layer, no
# fine-tuning, 256 training examples as calibration data:

# %%
def wanda(model, layers, data):
    """Wanda's score |W_ij| * ||X_j||_2, X_j = input feature j of the layer on the calibration data."""
    x = data[0]
    scores = []
    for layer in layers:
        features = keras.Model(model.inputs, layer.input).predict(x, verbose=0)
        norms = np.linalg.norm(features, axis=0)
        scores.append(np.abs(keras.ops.convert_to_numpy(layer.kernel)) * norms[:, None])  # (in, out)
    return scores


calibration = (train.x_train[:256], train.y_train[:256])
one_shot = {name: cnl.metrics.accuracy(cnl.pruning.prune(net, 0.9, criterion=criterion, data=calibration),
                                       digits.x_test, digits.y_test)
            for name, criterion in [("magnitude", "magnitude"), ("Wanda", wanda)]}
print({name: round(acc, 3) for name, acc in one_shot.items()})
assert one_shot["Wanda"] < one_shot["magnitude"]

# %% [markdown]
# On this small network Wanda does *worse* than plain magnitude pruning. Its advantage was
# shown on large language models, whose hidden features include a few with very large
# magnitudes {cite}`dettmers2022llmint8`, so that a weight's magnitude alone misjudges its
# effect; it also compares weights within each output neuron rather than across the layer
# (exercise 1). A method that wins at one scale need not win at another, which is why
# Blalock et al. ask for comparisons on common baselines.
#
# ## 2. Adaptive optimisation: let the model choose per layer
#
# Layers are not equally sensitive. Han et al. {cite}`han2015learning` and Li et al.
# {cite}`li2017pruning` pruned each layer alone, measured the accuracy, and chose per-layer
# rates by hand from those curves. AMC {cite}`he2018amc` automated the choice of per-layer
# pruning rates with a reinforcement-learning agent, HAQ {cite}`wang2019haq` the choice of
# per-layer bit widths (with the latency measured on the target hardware in the loop), and
# HAWQ {cite}`dong2019hawq` ranks layers by the curvature (Hessian) of the loss instead of by
# trial. Neural architecture search {cite}`zoph2017neural` and compound scaling
# {cite}`tan2019efficientnet` apply the same idea to the architecture itself.
#
# A "poor man's AMC" needs only two pieces: a **sensitivity scan** (compress one layer at a
# time, measure validation accuracy) and an **allocator** that spends a budget where it
# costs least accuracy. The scan uses the library's array math directly on a scratch copy of
# the model, so each point costs one evaluation, no model rebuilding:

# %%
show_source(cnl.pruning.magnitude_mask)

# %%
probe = cnl.models.clone(net)
base_weights = net.get_weights()


def val_accuracy_with(layer, new_kernel):
    """Validation accuracy of `net` with one layer's kernel replaced (on a scratch copy)."""
    probe.set_weights(base_weights)
    probe.get_layer(layer).kernel.assign(new_kernel)
    return cnl.metrics.accuracy(probe, x_val, y_val)


kernel = {name: keras.ops.convert_to_numpy(net.get_layer(name).kernel) for name in layers}
sparsities = [0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98]
bit_widths = [8, 6, 5, 4, 3, 2, 1]
prune_scan = {name: {s: val_accuracy_with(name, kernel[name] * cnl.pruning.magnitude_mask(kernel[name], s))
                     for s in sparsities} for name in layers}
quant_scan = {name: {b: val_accuracy_with(name, Q.dequantize(Q.quantize(kernel[name], b, axis=-1)))
                     for b in bit_widths} for name in layers}

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
for name in layers:
    ax1.plot(sparsities, [prune_scan[name][s] for s in sparsities], "o-", label=f"{name} ({size[name]:,} w)")
    ax2.plot(bit_widths, [quant_scan[name][b] for b in bit_widths], "o-", label=name)
ax1.set(xlabel="sparsity of this layer alone", ylabel="validation accuracy", title="pruning, no fine-tuning")
ax2.set(xlabel="bits of this layer alone", title="per-channel quantization")
ax2.invert_xaxis()
ax1.legend(fontsize=8)
fig.tight_layout()
plt.show()
for name in layers:
    print(f"{name:>4}: 90% sparse -> {prune_scan[name][0.9]:.3f}, 98% -> {prune_scan[name][0.98]:.3f}; "
          f"2 bits -> {quant_scan[name][2]:.3f}, 1 bit -> {quant_scan[name][1]:.3f}")

# %% [markdown]
# The small output layer (1,000 weights) is the most sensitive to pruning; the largest
# layer, fc2 (30,000 weights), the least. A uniform 90% treats them alike.
#
# The allocator is a greedy knapsack: start every layer at its most accurate setting, then
# repeatedly move the one layer whose next cheaper setting loses the least validation
# accuracy per unit of budget saved, until the total cost fits the budget. (AMC and HAQ
# search the same space with a learned agent and fine-tune in the loop; a greedy scan over
# layers taken one at a time ignores how layers interact, which is its main weakness.)

# %%
def allocate(scan, cost, budget):
    """Greedy per-layer choice: scan[layer][setting] -> accuracy, cost(layer, setting) -> units."""
    order = {name: sorted(scan[name], key=lambda s: cost(name, s), reverse=True) for name in scan}
    choice = {name: order[name][0] for name in scan}
    while sum(cost(name, choice[name]) for name in scan) > budget:
        moves = []
        for name in scan:
            i = order[name].index(choice[name])
            if i + 1 < len(order[name]):
                nxt = order[name][i + 1]
                saved = cost(name, choice[name]) - cost(name, nxt)
                drop = max(scan[name][choice[name]] - scan[name][nxt], 0.0)
                moves.append((drop / saved, -saved, name, nxt))
        if not moves:
            raise ValueError("budget cannot be met by any setting in the scan")
        _, _, name, nxt = min(moves)
        choice[name] = nxt
    return choice


def kept_weights(name, s):
    return round(size[name] * (1 - s))


weight_budget = sum(kept_weights(name, 0.9) for name in layers)  # what uniform 90% keeps
sparsity_plan = allocate(prune_scan, kept_weights, weight_budget)
kept = sum(kept_weights(name, s) for name, s in sparsity_plan.items())
print("chosen sparsity per layer:", sparsity_plan)
print(f"weights kept: chosen {kept:,} <= budget {weight_budget:,} (uniform 90%)")
assert kept <= weight_budget

# %% [markdown]
# The same allocator with bit widths: the budget is the number of bits of a uniform 2-bit
# model ($2 \times 50{,}200$ kernel bits).

# %%
def kernel_bits(name, b):
    return size[name] * b


bit_budget = sum(kernel_bits(name, 2) for name in layers)
bit_plan = allocate(quant_scan, kernel_bits, bit_budget)
used = sum(kernel_bits(name, b) for name, b in bit_plan.items())
print("chosen bits per layer:", bit_plan, f"-> {used / sum(size.values()):.2f} bits per weight on average")
assert used <= bit_budget

# %% [markdown]
# Now both plans and their uniform counterparts on the **test** split, before any
# fine-tuning. The pruned models come from `cnl.pruning.prune` (one call per layer, each
# with its own sparsity), the quantized ones from `cnl.quantization.quantize_model`, and
# the bytes of the quantized models are those `cnl.storage` writes (integer codes packed,
# plus scales and biases), not a count on paper.

# %%
def pruned(model, plan):
    for name, s in plan.items():
        if s > 0:
            model = cnl.pruning.strip(cnl.pruning.prune(model, s, layers=[name]))
    return model


def quantized(model, plan):
    for name, b in plan.items():
        model = Q.quantize_model(model, b, layers=[name])
    return model


def test_acc(model):
    return cnl.metrics.accuracy(model, digits.x_test, digits.y_test)


oneshot = {
    "prune uniform 90%": test_acc(pruned(net, {name: 0.9 for name in layers})),
    "prune chosen": test_acc(pruned(net, sparsity_plan)),
}
q_uniform, q_chosen = quantized(net, {name: 2 for name in layers}), quantized(net, bit_plan)
oneshot["2-bit uniform"], oneshot["mixed bits chosen"] = test_acc(q_uniform), test_acc(q_chosen)
q_bytes = {"2-bit uniform": cnl.storage.compressed_size(q_uniform).weight_bytes,
           "mixed bits chosen": cnl.storage.compressed_size(q_chosen).weight_bytes}
for k, v in oneshot.items():
    extra = f"  ({q_bytes[k] / 1024:.1f} KiB of weights stored)" if k in q_bytes else ""
    print(f"{k:<18} test accuracy {v:.3f}{extra}")
assert oneshot["prune chosen"] > oneshot["prune uniform 90%"] + 0.05
assert oneshot["mixed bits chosen"] > oneshot["2-bit uniform"] + 0.05
assert q_bytes["mixed bits chosen"] <= 1.1 * q_bytes["2-bit uniform"]

# %% [markdown]
# At the same budget, the sensitivity-chosen plan beats the uniform one in both cases, by
# more than 5 points of test accuracy (asserted; the figures are printed above). The greedy
# pruning plan even leaves part of its budget unused (a finer grid, or a second pass that
# spends the remainder, would use it), and the bit plan averages fewer bits than 2 because
# fc2 loses almost nothing at 1 bit. Yet the stored bytes of the two quantized models are
# within 10% of each other: bits on paper are not bytes on disk. The storage format
# Huffman-codes the integer codes, and 2-bit codes, whose four values are far from equally
# frequent, shrink below 2 bits each, while 1-bit codes cannot shrink at all; the
# per-channel scales cost the same in both. A budget in real bytes (or, as in HAQ, in
# measured latency) is the honest one.
#
# Without fine-tuning, 90% pruning costs a lot of accuracy whichever the plan.
# Fine-tuning recovers most of it, and AMC's and HAQ's reported gains are
# measured after fine-tuning. The next section fine-tunes both pruning plans.
#
# ## 3. Fusing methods
#
# Compression methods compose: Deep Compression {cite}`han2016deep` prunes, then shares
# weights, then Huffman-codes (chapter {doc}`03_5_combining`); quantized distillation
# {cite}`polino2018model` and Apprentice {cite}`mishra2018apprentice` distil into a
# low-precision student. The rule that makes steps compose is that a later step must keep
# what an earlier one did: the zeros of pruning stay zero while quantization fine-tunes.
# `cnl.pipeline.compress` runs such a chain, fine-tuning after each step (re-applying the
# zero pattern after every batch) and measuring every stage:

# %%
start = time.perf_counter()
chain = {}
for label, plan in [("uniform 90%", 0.9), ("chosen", sparsity_plan)]:
    _, chain[label] = cnl.pipeline.compress(net, train, [("prune", plan), ("quantize", 4)], fine_tune_epochs=3)
pipeline_seconds = time.perf_counter() - start

# %%
print(f"{'pruning plan':<13}{'stage':<24}{'accuracy':>9}{'non-zeros':>11}{'stored KiB':>12}{'vs float32':>12}")
for label, report in chain.items():
    for row in report.rows:
        print(f"{label:<13}{row['stage'][:23]:<24}{row['accuracy']:>9.3f}{row['nonzero']:>11,}"
              f"{row['cnl_bytes'] / 1024:>12.1f}{row['float32_bytes'] / row['cnl_bytes']:>11.1f}x")
final = {label: report.rows[-1] for label, report in chain.items()}
pruned_ft = {label: report.rows[1]["accuracy"] for label, report in chain.items()}
assert pruned_ft["chosen"] >= pruned_ft["uniform 90%"]
assert final["chosen"]["accuracy"] >= base_acc - 0.03
assert final["chosen"]["float32_bytes"] / final["chosen"]["cnl_bytes"] > 10

# %% tags=["nbval-ignore-output"]
print(f"both pipelines (2 x 2 steps, 3 epochs of fine-tuning each, measured): {pipeline_seconds:.0f} s")

# %% [markdown]
# After three epochs of masked fine-tuning the chosen plan is still at least as accurate as
# the uniform one, with the same or fewer weights; 4-bit quantization-aware fine-tuning on
# top keeps the accuracy within 3 points of the dense model and the file more than 10x
# smaller than float32 (the exact figures are in the table). {doc}`05_comparison` compares
# every method and combination at matched budgets.
#
# ## 4. Hardware optimisation
#
# Compression pays off in time only where a kernel exploits it. Accelerators are built
# around dense low-precision matrix multiplication: the first TPU ran 8-bit integer
# multiply-accumulates in a 256x256 systolic array {cite}`jouppi2017datacenter`; Sze et al.
# {cite}`sze2017efficient` survey dataflows that minimise memory traffic, which costs more
# energy than arithmetic. Integer-only inference {cite}`jacob2018quantization` is what
# mobile runtimes such as TensorFlow Lite implement. For sparsity, GPUs since NVIDIA's
# Ampere accelerate only the 2:4 pattern (two non-zeros in every four consecutive weights)
# {cite}`mishra2021accelerating` (`cnl.pruning.nm_mask` builds it); unstructured sparsity
# needs very high sparsity and special kernels to run faster {cite}`elsen2020fast`, and does
# not speed up the dense kernels used here at all ({doc}`05_comparison` measures it).
#
# Integer kernels are something this machine has. The same network converted by the
# TensorFlow Lite converter, float32 against full int8 (weights and activations, calibrated
# on 256 training examples), run by the LiteRT interpreter on one thread, batch 256:

# %%
float_tfl = Q.to_tflite(net, int8=False)
int8_tfl = Q.to_tflite(net, digits.x_train[:256], int8=True)
run_float, run_int8 = Q.TFLiteRunner(float_tfl), Q.TFLiteRunner(int8_tfl)
acc_float, acc_int8 = test_acc(run_float), test_acc(run_int8)
print(f"float32 .tflite: {len(float_tfl) / 1024:.0f} KiB, accuracy {acc_float:.3f}")
print(f"int8 .tflite:    {len(int8_tfl) / 1024:.0f} KiB, accuracy {acc_int8:.3f}")
assert len(int8_tfl) < 0.35 * len(float_tfl)
assert acc_int8 >= acc_float - 0.01

# %% tags=["nbval-ignore-output"]
x_batch = digits.x_test[:256]
timings = {"float32": [], "int8": []}
for _ in range(3):  # interleaved rounds: a busy machine slows both alike
    timings["float32"].append(cnl.metrics.latency(run_float, x_batch, runs=30))
    timings["int8"].append(cnl.metrics.latency(run_int8, x_batch, runs=30))
best = {k: min(t, key=lambda lat: lat.median) for k, t in timings.items()}
speedup = best["float32"].median / best["int8"].median
for k, lat in best.items():
    print(f"{k:>8}: {lat}")
print(f"int8 is {speedup:.1f}x faster than float32 on the same interpreter")
assert speedup > 1.5

# %% [markdown]
# On this CPU the int8 file is less than 35% of the float32 one (the weights take a
# quarter; the graph and the quantization parameters add the rest), as accurate, and faster (at
# least 1.5x, asserted; the measured factor is printed above and varies with the machine).
# This library's `quantize_model` stores int8 codes but computes with the dequantized float
# kernel (its layers subclass Keras' own, {doc}`03_4_quantization`): smaller files, same
# speed. The speed-up comes from TensorFlow Lite's integer kernels.
#
# ## 5. Knowledge distillation, refined
#
# Hinton et al.'s soft targets {cite}`hinton2015distilling` ({doc}`03_3_distillation`) were
# extended in several directions:
#
# - *what* to transfer: intermediate features (FitNets {cite}`romero2015fitnets`), attention
#   maps {cite}`zagoruyko2017paying`;
# - *from whom*: a student of the same size as its teacher can surpass it (born-again networks
#   {cite}`furlanello2018born`); a teacher much larger than the student helps less, and an
#   intermediate "teacher assistant" bridges the gap {cite}`mirzadeh2020improved,cho2019efficacy`;
# - *how well it works*: Stanton et al. {cite}`stanton2021does` show that students generalise
#   better but often do not match the teacher's predictions closely even when they could,
#   because the optimisation is hard;
# - *at scale*: DistilBERT {cite}`sanh2019distilbert` keeps most of BERT's language-
#   understanding performance with 40% fewer parameters. The survey by Gou et al.
#   {cite}`gou2021knowledge` covers the rest.
#
# Distillation also fuses with the other methods: `cnl.pipeline.compress` accepts a
# `("distill", T)` step, in which the model being compressed learns from the original.
#
# ## Summary
#
# | article trend | state of the art (examples) | measured here |
# |---|---|---|
# | more efficient algorithms | one-shot post-training pruning/quantization: SparseGPT, Wanda, GPTQ, AWQ, LLM.int8() | Wanda's score as a `prune` criterion: worse than magnitude on this MLP |
# | adaptive optimisation | AMC, HAQ, HAWQ; NAS, EfficientNet | greedy per-layer sparsity and bits beat uniform at the same budget |
# | fusing methods | Deep Compression, quantized distillation | prune (chosen plan) + 4-bit QAT: >10x smaller than float32, within 3 points |
# | hardware | TPU, 2:4 sparse tensor cores, integer-only inference | int8 TFLite: under 35% of the float file, faster (>1.5x), same accuracy |
# | distillation | FitNets, attention transfer, born-again, teacher assistant, DistilBERT | {doc}`03_3_distillation` |
#
# ## Exercises
#
# 1. **Wanda per output.** Wanda ranks the weights *within each output neuron* (each column of
#    a Dense kernel) and prunes the same fraction of every column, where `prune` with a
#    layer-wide score uses one threshold for the whole layer. Write a wrapper that turns any
#    criterion into a per-output one (hint: replace each score by its rank within its
#    column), and compare magnitude and Wanda, both per output, with the figures above.
#
# :::{admonition} Solution
# :class: dropdown
# ```python
# def per_output(criterion):
#     """Scores -> their rank within each column, scaled to [0, 1): a layer-wide threshold
#     on ranks prunes the same fraction of every column."""
#     def ranked(model, layers, data):
#         return [np.argsort(np.argsort(s, axis=0), axis=0) / s.shape[0]
#                 for s in criterion(model, layers, data)]
#     return ranked
#
# for name, criterion in [("magnitude", cnl.pruning.magnitude), ("Wanda", wanda)]:
#     m = cnl.pruning.prune(net, 0.9, criterion=per_output(criterion), data=calibration)
#     print(name, "per output:", round(cnl.metrics.accuracy(m, digits.x_test, digits.y_test), 3))
# ```
# `cnl.pruning.magnitude` is the library's built-in criterion function (the string
# `"magnitude"` names it). Compare the printed figures with the layer-wide ones above before
# concluding anything about either method on this model.
# :::
#
# 2. **Budget sweep.** Rerun the pruning allocator for budgets of 20%, 10% and 5% of the
#    weights and plot one-shot test accuracy of the chosen plan and of the uniform plan
#    against the budget. Where does the advantage of the chosen plan grow?
#
# :::{admonition} Solution
# :class: dropdown
# ```python
# keep = [0.2, 0.1, 0.05]
# chosen, uniform = [], []
# for k in keep:
#     budget = sum(kept_weights(n, 1 - k) for n in layers)
#     plan = allocate(prune_scan, kept_weights, budget)
#     chosen.append(test_acc(pruned(net, plan)))
#     uniform.append(test_acc(pruned(net, {n: 1 - k for n in layers})))
# plt.plot(keep, chosen, "o-", label="chosen"); plt.plot(keep, uniform, "o-", label="uniform")
# plt.xlabel("fraction of weights kept"); plt.legend(); plt.show()
# ```
# The chosen plan should win at every budget, by the most at the tightest one, where the
# uniform plan prunes the small, sensitive output layer as hard as the rest; the gap need
# not shrink steadily as the budget loosens, because the greedy plan is only as fine as the
# scan's grid. (The scan grid
# ends at 98%, so a 5% budget may be infeasible for some layers: `allocate` then raises.)
# :::
#
# 3. **Hardware in the loop.** HAQ measures the latency of each candidate on the target
#    device. Replace the bit budget by a latency budget for the TFLite int8 model: which
#    layers of `net` dominate its latency (hint: time `to_tflite` conversions of
#    sub-models, or count multiply-accumulates with `cnl.metrics.flops`)?
#
# :::{admonition} Solution
# :class: dropdown
# In a Dense network the multiply-accumulates of a layer are its kernel size, so fc2
# (30,000) and fc1 (19,200) dominate and the output layer (1,000) is negligible:
# `cnl.metrics.flops(net)` and the per-layer kernel sizes printed at the top of this
# chapter say the same. A latency budget therefore pushes the low bit widths onto fc1 and
# fc2, which the sensitivity scan shows they tolerate, and leaves the output layer at high
# precision, as the bit plan above already does.
# :::
