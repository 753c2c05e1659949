"""Combined pipelines: several compressions in a row, fine-tuned between steps, measured in real bytes.

Methods combine (Han, Mao & Dally 2016: pruning, then trained quantization by weight
sharing, then Huffman coding). The rule that makes them combine is that a later step keeps
what an earlier one did: the zeros of pruning stay zero while clustering and quantization
fine-tune (tfmot calls these "sparsity-preserving clustering" and "PQAT"). Here every
fine-tuning re-applies the zero pattern of the model it started from after each batch, and
clustering shares only the non-zero weights.

Every stage is measured the same way (:func:`measure`): accuracy, parameters, non-zeros,
FLOPs of the non-zero weights, bytes as float32, as a ``.keras`` file, gzipped, and in the
compressed format of :mod:`compressnet_lite.storage` (with and without Huffman coding).

Example:
    >>> data = cnl.data.load_digits()                                            # doctest: +SKIP
    >>> small, report = compress(model, data, [("prune", 0.8), ("cluster", 16)])  # doctest: +SKIP
    >>> report.frame()                                                            # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras
import numpy as np

from compressnet_lite import metrics, models, storage
from compressnet_lite._checks import check_choice, check_fraction, check_model, check_positive_int
from compressnet_lite.data import Dataset

__all__ = ["STEPS", "compress", "deep_compression", "measure", "Report", "KeepZeros",
           "paper_sparsity"]

STEPS = ("prune", "prune_neurons", "merge", "factorize", "distill", "cluster", "quantize")
"""Step names :func:`compress` understands. ``cluster`` and ``quantize`` share weights, so
they come last (fine-tuning after them would move the shared values)."""

_FINAL = ("cluster", "quantize")


# ---------------------------------------------------------------------------------------
# Array math
# ---------------------------------------------------------------------------------------

def paper_sparsity(kind: str, position: int, count: int) -> float:
    """Per-layer sparsity in the spirit of Han et al.'s LeNet results (2015/2016).

    LeNet-300-100 kept 8% / 9% / 26% of fc1 / fc2 / fc3; LeNet-5 kept 66% / 12% of conv1 /
    conv2 and 8% / 19% of fc1 / fc2. The first convolution and the output layer are the most
    sensitive, so they keep the most.

    Args:
        kind: ``"conv"`` or ``"fc"``.
        position: index of the layer among the layers of its kind (0 = first).
        count: number of layers of that kind.

    Raises:
        ValueError / TypeError: ``kind`` not ``"conv"``/``"fc"``, ``count < 1``, ``position``
            outside ``0 .. count - 1``.

    Example:
        >>> [paper_sparsity("fc", i, 3) for i in range(3)]
        [0.92, 0.91, 0.74]
    """
    check_choice(kind, "kind", ("conv", "fc"))
    count = check_positive_int(count, "count")
    position = check_positive_int(position, "position", minimum=0, maximum=count - 1)
    if kind == "conv":
        return 0.34 if position == 0 else 0.88
    if position == count - 1:
        return 0.74 if count > 2 else 0.81
    return 0.92 if position == 0 else 0.91


# ---------------------------------------------------------------------------------------
# Keras glue
# ---------------------------------------------------------------------------------------

def _kernel_vars(model: keras.Model) -> list:
    return [v for v in model.weights if v.path.split("/")[-1] in ("kernel", "depthwise_kernel")]


class KeepZeros(keras.callbacks.Callback):
    """Re-apply the zero pattern the model had when training began, after every batch.

    What makes fine-tuning keep an earlier pruning step: gradients reach pruned weights,
    and this puts them back to zero (for layers whose kernel is a variable; clustered
    layers keep their zeros through their index).
    """

    def on_train_begin(self, logs=None):
        self._pairs = []
        for var in _kernel_vars(self.model):
            mask = np.asarray(keras.ops.convert_to_numpy(var)) != 0
            if not mask.all():
                self._pairs.append((var, keras.ops.convert_to_tensor(mask.astype(var.dtype))))

    def on_train_batch_end(self, batch, logs=None):
        for var, mask in self._pairs:
            var.assign(var * mask)


def _weighted_layers(model: keras.Model) -> list:
    return [l for l in model.layers if isinstance(l, (keras.layers.Dense, keras.layers.Conv2D))]


def _per_layer(value: Any, model: keras.Model, name: str) -> dict[str, Any]:
    """A scalar for every Dense/Conv2D layer, or a {layer: value} dict checked against the model."""
    if isinstance(value, dict):
        names = {l.name for l in model.layers}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{name}: no layer named {unknown[0]!r}; layers are {sorted(names)}")
        return dict(value)
    return {l.name: value for l in _weighted_layers(model)}


def _optimizer(learning_rate: float, weight_decay: float):
    if weight_decay > 0:  # decoupled decay: weights that get no gradient shrink towards 0
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    return keras.optimizers.Adam(learning_rate)


def _fine_tune_with(model, data: Dataset, epochs: int, lr: float, wd: float, batch_size: int,
                    callbacks: Sequence = ()) -> keras.Model:
    if epochs <= 0:
        return model
    models.compile_model(model, optimizer=_optimizer(lr, wd))
    return models.train(model, data, epochs=epochs, batch_size=batch_size, recompile=False,
                        callbacks=[KeepZeros(), *callbacks])


def _module(name: str):
    try:
        return importlib.import_module(f"compressnet_lite.{name}")
    except ImportError as exc:  # a module of the library that is not installed
        raise ValueError(f"step needs compressnet_lite.{name}, which is not available: {exc}") from None


def _run_step(model, name: str, arg: Any, original, data: Dataset, epochs: int, lr: float,
              wd: float, batch_size: int, callbacks: Sequence = ()) -> keras.Model:
    """Apply one step to the plain ``model`` and fine-tune; returns a model (maybe wrapped)."""
    def _fine_tune(model, data, epochs, lr, wd, batch_size):
        return _fine_tune_with(model, data, epochs, lr, wd, batch_size, callbacks)

    if name == "prune":
        pruning = _module("pruning")
        for layer, sparsity in _per_layer(arg, model, "prune").items():
            model = pruning.strip(pruning.prune(model, sparsity, layers=[layer]))
        return _fine_tune(model, data, epochs, lr, wd, batch_size)
    if name == "prune_neurons":
        model = _module("pruning").prune_neurons(model, _number(arg, name))
        return _fine_tune(model, data, epochs, lr, wd, batch_size)
    if name == "merge":
        model = _module("merging").merge_neurons(model, ratio=_number(arg, name))
        return _fine_tune(model, data, epochs, lr, wd, batch_size)
    if name == "factorize":
        if not isinstance(arg, dict) or "layer" not in arg:
            raise ValueError("factorize step needs a dict: {'layer': name, 'rank': r} or "
                             "{'layer': name, 'energy': e}")
        model = _module("lowrank").factorize(model, **arg)
        return _fine_tune(model, data, epochs, lr, wd, batch_size)
    if name == "distill":
        opts = arg if isinstance(arg, dict) else {"temperature": _number(arg, name)}
        distiller = _module("distillation").Distiller(model, original, **opts)
        distiller.compile(optimizer=_optimizer(lr, wd))
        keras.utils.set_random_seed(0)
        distiller.fit(data.x_train, data.y_train, epochs=max(epochs, 1), batch_size=batch_size,
                      verbose=0, callbacks=[KeepZeros(), *callbacks])
        return distiller.student
    if name == "cluster":
        clustering = _module("clustering")
        by_k: dict[int, list[str]] = {}
        for layer, k in _per_layer(arg, model, "cluster").items():
            by_k.setdefault(check_positive_int(k, f"cluster[{layer!r}]", minimum=2), []).append(layer)
        for k, layers in sorted(by_k.items()):
            model = clustering.cluster_weights(model, k, layers=layers)
        # trained centroids: the codebooks get the summed gradient of their weights
        return _fine_tune(model, data, epochs, lr, 0.0, batch_size)
    if name == "quantize":
        quantization = _module("quantization")
        bits = check_positive_int(arg, "quantize bits", maximum=16)
        if epochs > 0:  # quantization-aware fine-tuning; zeros re-applied to the float kernels
            model = quantization.quantize_aware(model, bits)
            model = _fine_tune(model, data, epochs, lr, 0.0, batch_size)
        return quantization.quantize_model(model, bits)
    raise ValueError(f"unknown step {name!r}; steps are {', '.join(STEPS)}")


def _number(arg: Any, step: str) -> float:
    if isinstance(arg, bool) or not isinstance(arg, (int, float, np.integer, np.floating)):
        raise TypeError(f"the {step} step needs a number, got {arg!r}")
    return float(arg)


def _parse_steps(steps: Any) -> list[tuple[str, Any]]:
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise TypeError(f"steps must be a list of (name, argument) pairs, got {type(steps).__name__}")
    parsed = []
    for i, step in enumerate(steps):
        if isinstance(step, dict):
            step = dict(step)
            name = step.pop("name", None)
            arg = step
        elif isinstance(step, (tuple, list)) and len(step) == 2:
            name, arg = step
        else:
            raise TypeError(f"steps[{i}] must be a (name, argument) pair or a dict with 'name', got {step!r}")
        check_choice(name, f"steps[{i}] name", STEPS)
        if parsed and parsed[-1][0] in _FINAL:
            raise ValueError(f"steps[{i}] ({name!r}) comes after {parsed[-1][0]!r}: cluster and quantize "
                             "share weights and must be the last step")
        parsed.append((name, arg))
    return parsed


def measure(model: keras.Model, data: Dataset, *, stage: str = "", latency: bool = False) -> dict[str, Any]:
    """One row of a :class:`Report`: accuracy, size and cost of ``model`` (its plain form).

    Returns:
        A dict with ``stage, accuracy, params, nonzero, flops, float32_bytes, keras_bytes,
        gzip_bytes, cnl_bytes, cnl_weight_bytes, cnl_weight_bytes_no_huffman`` and, with
        ``latency=True``, ``latency_ms`` (median of repeated batch-256 inference calls).
    """
    plain = storage.plain_model(model)
    size = storage.compressed_size(plain)
    fixed = storage.compressed_size(plain, huffman=False)
    kb = metrics.model_bytes(plain)
    row = {"stage": stage,
           "accuracy": metrics.accuracy(plain, data.x_test, data.y_test),
           "params": metrics.count_params(plain),
           "nonzero": metrics.count_nonzero(plain),
           "flops": metrics.flops(plain, nonzero_only=True),
           "float32_bytes": size.float32_bytes,
           "keras_bytes": kb.keras, "gzip_bytes": kb.gzip,
           "cnl_bytes": size.total, "cnl_weight_bytes": size.weight_bytes,
           "cnl_weight_bytes_no_huffman": fixed.weight_bytes,
           "size": size}
    if latency:
        row["latency_ms"] = metrics.latency(plain, data.x_test[:256]).median * 1e3
    return row


@dataclass
class Report:
    """The measurements of every stage of a pipeline, in order (the first is the input model).

    ``frame()`` gives a pandas DataFrame (also what a notebook displays), ``plot()`` a
    matplotlib figure, ``str()`` a plain-text table. ``sizes[i]`` is stage ``i``'s
    :class:`~compressnet_lite.storage.SizeReport` (per-layer, per-stream bytes).
    """

    rows: list[dict] = field(default_factory=list)

    @property
    def sizes(self) -> list:
        return [r["size"] for r in self.rows]

    def frame(self):
        """A pandas DataFrame, one row per stage (bytes; ``ratio``: the input model's float32
        weights over the stage's compressed file)."""
        import pandas as pd

        df = pd.DataFrame([{k: v for k, v in r.items() if k != "size"} for r in self.rows]).set_index("stage")
        df["ratio"] = df["float32_bytes"].iloc[0] / df["cnl_bytes"]  # vs the input model's float32
        return df

    def plot(self):
        """Bytes per stage (log scale: float32, gzip, compressed file) and accuracy."""
        import matplotlib.pyplot as plt

        df = self.frame()
        fig, ax = plt.subplots(figsize=(7, 3.6))
        x = np.arange(len(df))
        for i, (col, label) in enumerate([("float32_bytes", "float32"), ("gzip_bytes", ".keras gzipped"),
                                          ("cnl_bytes", "compressed file")]):
            ax.bar(x + (i - 1) * 0.27, df[col], width=0.27, label=label)
        ax.set_yscale("log")
        ax.set_ylabel("bytes")
        ax.set_xticks(x, df.index, rotation=15)
        acc = ax.twinx()
        acc.plot(x, df["accuracy"] * 100, "ko-", label="accuracy")
        acc.set_ylabel("test accuracy (%)")
        acc.grid(False)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        return fig

    def __str__(self) -> str:
        lines = [f"{'stage':<22}{'acc':>7}{'nonzero':>9}{'float32 B':>11}{'gzip B':>9}{'cnl B':>8}"
                 f"{'ratio':>7}"]
        base = self.rows[0]["float32_bytes"] if self.rows else 0
        for r in self.rows:
            lines.append(f"{r['stage']:<22}{r['accuracy']:>7.3f}{r['nonzero']:>9,}{r['float32_bytes']:>11,}"
                         f"{r['gzip_bytes']:>9,}{r['cnl_bytes']:>8,}{base / r['cnl_bytes']:>6.1f}x")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.frame().to_html(float_format=lambda v: f"{v:.3f}")


def compress(model: keras.Model, data: Dataset, steps: Sequence[Any], *, fine_tune_epochs: int = 2,
             learning_rate: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 32,
             latency: bool = False, progress: Callable[[str], None] | None = None,
             callbacks: Sequence[keras.callbacks.Callback] = ()) -> tuple[keras.Model, Report]:
    """Apply ``steps`` in order, fine-tuning after each, and measure every stage.

    Args:
        model: a trained, built Keras model (not changed).
        data: a :class:`~compressnet_lite.data.Dataset` (training split for fine-tuning,
            test split for accuracy).
        steps: ``(name, argument)`` pairs (or dicts with ``"name"``):
            ``("prune", sparsity or {layer: sparsity})``, ``("prune_neurons", fraction)``,
            ``("merge", ratio)``, ``("factorize", {"layer": ..., "rank"|"energy": ...})``,
            ``("distill", temperature or Distiller kwargs)`` (teacher: the input model),
            ``("cluster", n_clusters or {layer: n_clusters})``, ``("quantize", bits)``.
            ``cluster``/``quantize`` must be last.
        fine_tune_epochs: epochs of fine-tuning after each step (0: none; distillation
            always trains at least one epoch).
        learning_rate: Adam's learning rate for fine-tuning.
        weight_decay: decoupled (AdamW) weight decay while fine-tuning before weight sharing.
        batch_size: fine-tuning batch size.
        latency: also time inference (slower; timings vary run to run).
        progress: called with a line of text as each stage starts (for command-line output).
        callbacks: extra Keras callbacks for every fine-tuning run (e.g. a progress bar).

    Returns:
        ``(compressed model, Report)``: the model is a plain Keras model (its zeros, shared
        values and integer grids are in its arrays; :func:`storage.save_compressed` stores
        them as such).

    Raises:
        TypeError / ValueError: bad model, data, steps or settings (an unknown step, a step
            after cluster/quantize, an unknown layer name, an out-of-range argument).
    """
    check_model(model)
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a compressnet_lite.data.Dataset, got {type(data).__name__}")
    parsed = _parse_steps(steps)
    check_positive_int(fine_tune_epochs, "fine_tune_epochs", minimum=0)
    check_positive_int(batch_size, "batch_size")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not (np.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
            or not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    say = progress or (lambda line: None)
    original = models.clone(model)
    current = models.clone(storage.plain_model(model))  # transform layers (masks, wrappers) -> plain Keras
    report = Report()
    say(f"[0/{len(parsed)}] measuring the input model")
    report.rows.append(measure(current, data, stage="input", latency=latency))
    for i, (name, arg) in enumerate(parsed, start=1):
        say(f"[{i}/{len(parsed)}] {name} {arg if not isinstance(arg, dict) else ''}".rstrip())
        current = _run_step(current, name, arg, original, data, fine_tune_epochs, learning_rate,
                            weight_decay, batch_size, callbacks)
        current = storage.plain_model(current)
        report.rows.append(measure(current, data, stage=f"{name} {_short(arg)}".strip(), latency=latency))
    return current, report


def _short(arg: Any) -> str:
    if isinstance(arg, dict):
        values = sorted({str(v) for v in arg.values()})
        return "/".join(values) if len(values) <= 3 else "per layer"
    return str(arg)


def deep_compression(model: keras.Model, data: Dataset, *, sparsity: dict[str, float] | None = None,
                     conv_bits: int = 8, fc_bits: int = 5, prune_rounds: int = 3,
                     fine_tune_epochs: int = 4, cluster_epochs: int = 3, weight_decay: float = 0.05,
                     learning_rate: float = 1e-3, batch_size: int = 32,
                     progress: Callable[[str], None] | None = None) -> tuple[keras.Model, Report]:
    """Deep Compression (Han, Mao & Dally 2016): pruning, trained weight sharing, Huffman coding.

    1. Iterative magnitude pruning to a per-layer sparsity in ``prune_rounds`` rounds, each
       followed by fine-tuning with decoupled weight decay (the paper trains with L2
       regularization: weights of inputs that never fire decay and prune into long zero runs).
    2. Weight sharing of the non-zero weights: ``2**conv_bits`` clusters per conv layer,
       ``2**fc_bits`` per fully connected layer (linear initialization), then the centroids
       are fine-tuned (each gets the summed gradient of its weights); zeros stay zero.
    3. Huffman coding of the relative indices and cluster indices: done by
       :mod:`compressnet_lite.storage` when the model is saved (stage "P+Q+H" of the report
       differs from "P+Q" only in the bytes).

    Args:
        model: a trained Keras model with Dense/Conv2D layers (not changed).
        data: the Dataset to fine-tune on and evaluate.
        sparsity: {layer: sparsity}; default :func:`paper_sparsity` for each layer.
        conv_bits / fc_bits: bits of the shared-weight index (8 and 5 in the paper).
        prune_rounds: pruning + fine-tuning rounds (sparsity grows geometrically to the target).
        fine_tune_epochs: epochs after each pruning round.
        cluster_epochs: epochs of centroid fine-tuning.
        weight_decay: AdamW's decoupled weight decay while pruning (Keras multiplies it by the
            learning rate: 0.05 shrinks every weight by 5e-5 per step).
        learning_rate / batch_size: fine-tuning settings.
        progress: called with a line of text per stage.

    Returns:
        ``(model, Report)`` with stages ``input``, ``pruned`` (P), ``P+Q`` and ``P+Q+H``.
    """
    check_model(model)
    check_positive_int(prune_rounds, "prune_rounds")
    conv_bits = check_positive_int(conv_bits, "conv_bits", maximum=16)
    fc_bits = check_positive_int(fc_bits, "fc_bits", maximum=16)
    layers = _weighted_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no Dense or Conv2D layer")
    convs = [l for l in layers if isinstance(l, keras.layers.Conv2D)]
    fcs = [l for l in layers if not isinstance(l, keras.layers.Conv2D)]
    if sparsity is None:
        sparsity = {l.name: paper_sparsity("conv", i, len(convs)) for i, l in enumerate(convs)}
        sparsity.update({l.name: paper_sparsity("fc", i, len(fcs)) for i, l in enumerate(fcs)})
    sparsity = {n: check_fraction(s, f"sparsity[{n!r}]")
                for n, s in _per_layer(sparsity, model, "sparsity").items()}
    rounds = []
    for r in range(1, prune_rounds + 1):  # kept fraction shrinks geometrically: 1 -> (1 - s)
        rounds.append(("prune", {n: float(1 - (1 - s) ** (r / prune_rounds)) for n, s in sparsity.items()}))
    clusters = {l.name: 2 ** (conv_bits if l in convs else fc_bits) for l in layers}
    say = progress or (lambda line: None)
    pruned, rep1 = compress(model, data, rounds, fine_tune_epochs=fine_tune_epochs,
                            learning_rate=learning_rate, weight_decay=weight_decay,
                            batch_size=batch_size, progress=say)
    say("weight sharing with trained centroids")
    shared, rep2 = compress(pruned, data, [("cluster", clusters)], fine_tune_epochs=cluster_epochs,
                            learning_rate=learning_rate, batch_size=batch_size)
    report = Report([dict(rep1.rows[0], stage="input"), dict(rep1.rows[-1], stage="pruned (P)"),
                     dict(rep2.rows[-1], stage="P+Q")])
    fixed = storage.compressed_size(shared, huffman=False)
    report.rows[-1].update(cnl_bytes=fixed.total, cnl_weight_bytes=fixed.weight_bytes, size=fixed)
    report.rows.append(dict(rep2.rows[-1], stage="P+Q+H"))
    return shared, report
