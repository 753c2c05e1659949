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
# # Structured pruning of a residual network
#
# The networks of {doc}`03_1_pruning` are chains: removing unit $j$ of one layer deletes
# column $j$ of its kernel and row $j$ of the next layer's, and nothing else. The networks
# people compress are not chains. In a residual block (He et al. {cite}`he2016deep`) the
# block's output is $x + F(x)$: channel $c$ of the shortcut and channel $c$ of the branch's
# last convolution are added into one channel, and every block that follows reads it.
# Remove that channel from the branch alone and the `Add` fails (the shapes differ); remove
# it from the branch and the shortcut, and every layer that reads the sum must lose the same
# input channel, and so must the BatchNormalization in between. Fang et al.
# {cite}`fang2023depgraph` call the set of channel dimensions that must go together a
# **dependency group** and find the groups from the graph (their Torch-Pruning library
# does this for PyTorch). `cnl.surgery.dependency_groups` does it for Keras 3 functional
# graphs; `cnl.pruning.prune_neurons` scores and removes whole groups.
#
# This section trains a small residual network on the digits (upsampled to 16x16), shows
# its groups, removes half of the channels in two ways, fine-tunes over five seeds, and
# measures accuracy, multiply-adds and latency against L1 filter pruning layer by layer
# (Li et al. {cite}`li2017pruning`).

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

import compressnet_lite as cnl
from compressnet_lite import stats
from compressnet_lite.notebook import latency_ratio, report, setup, time_rounds

setup()
data = cnl.data.load(image=True)  # 8x8x1 digits; CNL_DATA=mnist:PATH for MNIST
P, S = cnl.pruning, cnl.surgery


# %% [markdown]
# ## A small residual network
#
# Two stages of two basic blocks (two 3x3 convolutions with BatchNormalization, a shortcut
# that is the identity, or a strided 1x1 convolution where the shape changes), global
# average pooling, a softmax classifier. The 8x8 digits are resized to 16x16 inside the
# model, so that the second stage still has a 8x8 map. BatchNormalization keeps its running
# statistics with momentum 0.9 instead of Keras' 0.99: a few hundred training steps are not
# enough for 0.99 to forget its initial values.

# %%
def small_resnet(input_shape, classes, width=16, size=16):
    """He et al.'s basic blocks, two stages of two, BatchNorm after convs."""
    def bn(name):
        return keras.layers.BatchNormalization(momentum=0.9, name=name)

    def conv(w, k, s, name):
        return keras.layers.Conv2D(w, k, strides=s, padding="same",
                                   use_bias=False, name=name)

    x = inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Resizing(size, size, name="resize")(x)
    x = bn("stem_bn")(conv(width, 3, 1, "stem")(x))
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, (w, stride) in enumerate([(width, 1), (2 * width, 2)], start=1):
        for block in (1, 2):
            name, s = f"s{stage}b{block}", stride if block == 1 else 1
            y = bn(f"{name}_bn1")(conv(w, 3, s, f"{name}_conv1")(x))
            y = keras.layers.ReLU(name=f"{name}_relu1")(y)
            y = bn(f"{name}_bn2")(conv(w, 3, 1, f"{name}_conv2")(y))
            if s != 1 or x.shape[-1] != w:  # projection shortcut
                x = bn(f"{name}_proj_bn")(conv(w, 1, s, f"{name}_proj")(x))
            x = keras.layers.Add(name=f"{name}_add")([x, y])
            x = keras.layers.ReLU(name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(classes, activation="softmax",
                             name="predictions")(x)
    return keras.Model(inputs, out, name="small_resnet")


keras.utils.set_random_seed(0)
net = small_resnet(data.input_shape, data.num_classes)
groups = S.dependency_groups(net)
groups

# %% [markdown]
# Each row is one group: the layer whose output channels it is named after (its root), its
# number of channels, whether it can be pruned, and its members. Stage 1 has one group for
# the stem and both of its blocks' second convolutions: the identity shortcuts add them all
# into the same 16 channels. Stage 2 starts with a projection, so its group holds the
# projection and the two second convolutions of that stage. The first convolution of each
# block is a group of its own (its channels go only to the second convolution). The
# input's one channel and the classifier's ten outputs are the model's input and output,
# never pruned (the table gives the reasons).

# %%
def member_layers(group):
    return {m.layer.name for m in group.members}


stage1 = S.group_of(net, "s1b2_conv2", groups)
stage2 = S.group_of(net, "s2b1_conv2", groups)
inner = [g for g in groups.prunable() if g.root.endswith("conv1")]
assert {"stem", "s1b1_conv2", "s1b2_conv2"} <= member_layers(stage1)
assert {"s2b1_proj", "s2b1_conv2", "s2b2_conv2"} <= member_layers(stage2)
assert len(inner) == 4 and all(g.units in (16, 32) for g in inner)

# %% tags=["hide-input"]
ax = S.plot_group(net, "s2b1_conv2")
ax.set_title("The dependency group of stage 2: every member loses the same "
             "channels", fontsize=10)
plt.show()

# %% [markdown]
# ## Three ways to remove half of the channels
#
# * **Li et al.**: the L1 norm of each filter (the output slice of one convolution's
#   kernel), layer by layer, 50% of the filters of the first convolution of every block.
#   Li et al. prune ResNets this way and leave the convolutions tied to the shortcuts alone
#   (`GroupImportance("l1", members="producers")` scores only the filters).
# * **group L1, same layers**: the same four groups, scored by the L1 norm averaged over
#   every member (the filter, the BatchNorm scale and shift, and the input slice of the
#   next convolution that reads the channel): `prune_neurons`' default. Same architecture,
#   same multiply-adds as Li et al.: only the criterion differs.
# * **group L1, all groups**: every prunable group, the two residual groups included. This
#   is what the dependency groups make possible: the shortcuts lose channels too.
#
# After the cut, `recalibrate_batchnorm` measures each BatchNormalization's statistics
# again on 512 training images (their running means and variances describe the channels
# before the cut), then each pruned model is fine-tuned for 4 epochs. The base network is
# trained once (12 epochs); the five seeds vary the fine-tuning (initial order of the
# batches), so the comparison is paired on the same trained network and the same test
# images.

# %% tags=["nbval-ignore-output"]
EPOCHS, FINE_TUNE, SEEDS = 12, 4, range(5)


def test_acc(model):
    return cnl.metrics.accuracy(model, data.x_test, data.y_test)


base = cnl.models.train(small_resnet(data.input_shape, data.num_classes), data,
                        epochs=EPOCHS, batch_size=64, seed=0)
layers = [g.root for g in inner]
cut = {
    "Li et al. (L1 filters)": P.prune_neurons(
        base, 0.5, layers=layers,
        criterion=P.GroupImportance("l1", members="producers")),
    "group L1, same layers": P.prune_neurons(base, 0.5, layers=layers),
    "group L1, all groups": P.prune_neurons(base, 0.5),
}
calibration = data.x_train[:512]
cut = {k: P.recalibrate_batchnorm(m, calibration) for k, m in cut.items()}
tuned = {k: [cnl.models.train(cnl.models.clone(m), data, epochs=FINE_TUNE,
                              batch_size=64, seed=s) for s in SEEDS]
         for k, m in cut.items()}
acc = {k: np.array([test_acc(m) for m in ms]) for k, ms in tuned.items()}
print(f"base network: {test_acc(base):.3f}")
for k, a in acc.items():
    print(f"{k}: before fine-tuning {test_acc(cut[k]):.3f}, after",
          stats.mean_interval(a))

# %% [markdown]
# Parameters and multiply-adds are a property of the architecture, the same on every
# machine:

# %%
sizes = pd.DataFrame(
    {k: {"parameters": cnl.metrics.count_params(m),
         "MACs / image": cnl.metrics.flops(m)}
     for k, m in {"base": base, **cut}.items()}).T
sizes["MACs kept"] = sizes["MACs / image"] / sizes.loc["base", "MACs / image"]
sizes.round(3)

# %% tags=["nbval-ignore-output"]
li, same, every = acc.values()
names = list(acc)
d_same = stats.paired_difference(same, li, names=names[1::-1])
d_all = stats.paired_difference(every, li, names=(names[2], names[0]))


def correct(model):
    """Which test images `model` classifies correctly."""
    scores = model.predict(data.x_test, batch_size=256, verbose=0)
    return scores.argmax(axis=1) == data.y_test


base_acc = np.full(len(SEEDS), test_acc(base))
d_base = stats.paired_difference(li, base_acc, names=(names[0], "base"))
report(d_same, d_all, d_base)

# %%
assert d_same.verdict == stats.INDISTINGUISHABLE
assert d_all.verdict == f"{names[0]} better"
assert sizes.loc[names[2], "MACs kept"] < 0.3 < sizes.loc[names[0], "MACs kept"]

# %% [markdown]
# What the numbers say:
#
# * On the first convolution of each block the criterion hardly matters: the filters'
#   L1 norm (Li et al.) and the group's L1 norm, with the next convolution's input
#   weights and the BatchNorm parameters averaged in, are **indistinguishable here** after
#   fine-tuning. Both keep about half of the multiply-adds. Against the base network (one
#   trained network, so the interval covers the fine-tuning seeds only) the Li et al.
#   networks are read off the last printed line: in the run above a point or two lower on
#   average, with an interval that reaches zero, so five fine-tunings do not tell whether
#   halving the inner channels costs accuracy at all.
# * Removing half of *every* group, the residual ones included, keeps about a quarter of
#   the multiply-adds (the stage groups feed two convolutions each, and each of them loses
#   half its inputs and half its outputs), and costs several points after 4 epochs of
#   fine-tuning: Li et al.'s network, which keeps twice the compute, is better on the
#   paired statistic. (Why a quarter: exercise 2.)
# * Before fine-tuning every pruned network is far below the base network (the printed
#   accuracies; an unbalanced cut of coupled channels shifts every later layer's input).
#   Structured pruning of a residual network is a cut, then training.
#
# ## Latency
#
# The multiply-adds are the compute; the time is what a user sees. The three models, timed
# on the same batch of 32 test images in 15 interleaved rounds (one call of each model per
# round, in rotating order), compared by the geometric mean ratio of their times per round
# with its 95% interval (`cnl.notebook.latency_ratio`):

# %% tags=["nbval-ignore-output"]
timed = {"base": base, "Li et al.": cut[names[0]], "all groups": cut[names[2]]}
rounds = time_rounds(timed, data.x_test[:32])
ratios = {k: latency_ratio(rounds[k], rounds["base"], names=(k, "base"))
          for k in ("Li et al.", "all groups")}
report(*ratios.values())

# %%
assert all(r.verdict != "base faster" for r in ratios.values())

# %% [markdown]
# Neither pruned network is slower than the base network (checked in code); how much
# faster depends on the machine. In the run printed above the all-groups network, with a
# quarter of the multiply-adds, takes about three quarters of the time: on 16x16 maps and
# a batch of 32 the work that does not shrink with the channels (the per-layer calls, the
# resizing, the memory traffic) is a large share. The benchmark
# `benchmarks/structured_vs_torch_pruning.py` measures ResNet-50 and MobileNetV2 on
# TFLite, where the latency gain is at least 0.7 of the MAC reduction
# (`benchmarks/RESULTS.md`).
#
# ## Merging and low rank on the same graph
#
# Neuron merging and low-rank factorization ({doc}`03_2_network_compression`) use the
# same groups. `merge_neurons` on the stage-2 group merges a quarter of its 32 channels
# into others across the residual adds (every member: the projection, both second
# convolutions and their BatchNorms, and every consumer's input weights), and
# `factorize` replaces the classifier (32 x 10) by a rank-4 product; neither needs data,
# and neither is fine-tuned here:

# %% tags=["nbval-ignore-output"]
merged = cnl.merging.merge_neurons(base, "s2b1_conv2", 0.25)
low = cnl.lowrank.factorize(base, "predictions", rank=4)
for name, model in (("merged", merged), ("rank 4 head", low)):
    report(stats.mcnemar(correct(model), correct(base), names=(name, "base")))

# %%
assert S.group_of(merged, "s2b1_conv2").units == 24
assert low.get_layer("predictions_u").get_weights()[0].shape == (32, 4)
for model in (merged, low):
    assert cnl.metrics.count_params(model) < cnl.metrics.count_params(base)
    assert model.output.shape == base.output.shape

# %% [markdown]
# Without fine-tuning, merging a quarter of the stage-2 channels costs a few points in the
# run above and the rank-4 classifier far more (its 32 x 10 kernel has ten directions,
# and four are too few): like the pruned networks before fine-tuning, starting points.
# The exactness of both on graphs (a merge of identical channels across the adds changes
# no output; the full rank reproduces the layer) is tested in the library's test suite.
#
# ## Summary
#
# * In a residual network the channels of a stage are one dependency group: the shortcut,
#   every convolution that writes into the sum and every layer that reads it lose the same
#   channels, or none. `surgery.dependency_groups` finds the groups of any functional
#   Keras graph, `prune_neurons` removes whole groups, `recalibrate_batchnorm` measures the
#   BatchNorm statistics again after the cut.
# * On this small network, half of the inner channels can go (half the multiply-adds) at a
#   cost five fine-tunings cannot tell from zero, and which L1 criterion ranks them makes
#   no measurable difference; cutting the residual groups as well halves the compute again
#   and costs accuracy that 4 epochs of fine-tuning do not recover.
#
# ## Exercises
#
# 1. List the dependency groups of `keras.applications.MobileNetV2(input_shape=(96, 96,
#    3), alpha=0.35, weights=None, classes=10)`. How many are prunable, and which kind of
#    layer is a member of a group without being its producer or its consumer?
# 2. Removing half of every group keeps about a quarter of the multiply-adds, not half.
#    Derive it from the multiply-adds of a convolution, and say which layers keep half.
#
# :::{admonition} Solution 1
# :class: dropdown
#
# The hidden cell below builds the network and counts: {glue:text}`ex1_groups` groups,
# {glue:text}`ex1_prunable` of them prunable. Each inverted residual block expands the
# channels with a 1x1 convolution, filters them with a `DepthwiseConv2D` and projects them
# back; the depthwise layer computes channel $c$ from channel $c$ alone, so it is a
# `channel` member of the expansion's group (like a BatchNormalization), neither producer
# nor consumer. The groups that are not prunable hold the model's input or output.
# :::
#
# :::{admonition} Solution 2
# :class: dropdown
#
# A convolution with a $k \times k$ kernel on an $h \times w$ output map costs
# $h w k^2 C_\text{in} C_\text{out}$ multiply-adds. Every convolution after the stem
# reads channels of one group and writes channels of another, so it keeps
# $\frac12 \cdot \frac12 = \frac14$. The stem reads the one input channel, which is
# never pruned, and keeps half; the classifier keeps half of its inputs and all ten
# outputs. The hidden cell below measures it layer by layer: {glue:text}`ex2_quarter` of
# the convolutions keep exactly a quarter, the stem {glue:text}`ex2_stem`.
# :::

# %% tags=["hide-cell"]
mobilenet = keras.applications.MobileNetV2(
    input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
mobile_groups = S.dependency_groups(mobilenet)
roles = {m.role for g in mobile_groups for m in g.members
         if type(m.layer).__name__ == "DepthwiseConv2D"}
glue("ex1_groups", str(len(mobile_groups)), display=False)
glue("ex1_prunable", str(len(mobile_groups.prunable())), display=False)
assert roles == {"channel"}
assert 0 < len(mobile_groups.prunable()) < len(mobile_groups)


def layer_macs(model):
    return {layer.name: cnl.metrics.flops(
        keras.Model(layer.input, layer.output)) for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)}


before, after = layer_macs(base), layer_macs(cut[names[2]])
kept = {name: after[name] / before[name] for name in before}
quarter = [name for name, r in kept.items() if r == 0.25]
glue("ex2_quarter", f"{len(quarter)} of {len(kept)}", display=False)
glue("ex2_stem", f"{kept['stem']:.0%}", display=False)
assert kept["stem"] == 0.5 and len(quarter) == len(kept) - 1
