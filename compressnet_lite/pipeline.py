"""Combined pipelines: several compressions in a row, fine-tuned between steps, measured in real bytes.

Methods combine (Han, Mao & Dally 2016: pruning, then trained quantization by weight
sharing, then Huffman coding). The rule that makes them combine is that a later step keeps
what an earlier one did: the zeros of pruning stay zero while clustering and quantization
fine-tune (tfmot calls these "sparsity-preserving clustering" and "PQAT"). Here every
fine-tuning holds the zero pattern of the model it started from inside the compiled train
step (a mask constraint the optimizer applies after each update; no Python runs per
batch), and clustering shares only the non-zero weights.

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

from compressnet_lite import _backend, metrics, models, storage
from compressnet_lite._checks import check_choice, check_fraction, check_model, check_positive_int
from compressnet_lite.data import Dataset

__all__ = ["STEPS", "compress", "deep_compression", "quantize_extras", "measure", "Report",
           "hold_zeros",
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

def _kernel_variables(model: keras.Model) -> list:
    """The trainable kernel variables of every layer (nested models included)."""
    from compressnet_lite.metrics import _flat_layers

    out = []
    for layer in _flat_layers(model):
        for var in layer.trainable_weights:
            if var.path.split("/")[-1] in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                out.append(var)
    return out


class hold_zeros:
    """Keep the zeros of every kernel while fine-tuning, inside the compiled train step.

    A context manager: on entry, each trainable kernel variable that holds zeros (and has no
    mask of its own, as :func:`compressnet_lite.pruning.prune`'s layers do) gets a
    :class:`compressnet_lite.pruning.MaskConstraint` with the mask ``kernel != 0``; on exit
    the variables get their previous constraints back. The optimizer applies a variable's
    constraint after every update, in the same compiled step as the update, so no Python
    code runs per batch (compare a callback that re-zeroes the kernels after every batch,
    which runs eagerly between the compiled steps). Weights that are zero but not pruned
    (exactly 0.0 by chance) are held too: there is no telling them apart.

    Example:
        >>> with hold_zeros(model):                         # doctest: +SKIP
        ...     model.fit(x, y, epochs=2)
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self._saved: list[tuple[Any, Any]] = []

    def __enter__(self) -> "hold_zeros":
        from compressnet_lite.pruning import MaskConstraint

        for var in _kernel_variables(self.model):
            if isinstance(var.constraint, MaskConstraint):
                continue  # a masked layer: its cnl_mask already holds its zeros
            value = np.asarray(keras.ops.convert_to_numpy(var))
            if value.all():
                continue
            mask = keras.ops.convert_to_tensor((value != 0).astype(value.dtype))
            self._saved.append((var, var.constraint))
            var.constraint = MaskConstraint(mask, var.constraint)
        return self

    def __exit__(self, *exc) -> None:
        for var, constraint in self._saved:
            var.constraint = constraint
        self._saved = []


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


def _compile(model: keras.Model, lr: float, wd: float, steps: int) -> None:
    """Compile for fine-tuning: loss only (no metric to compute per step), ``steps`` train
    steps per compiled call (no per-batch Python runs between them)."""
    from_logits = not models._ends_in_softmax(model)
    model.compile(optimizer=_optimizer(lr, wd),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                  steps_per_execution=steps)


def _steps(data: Dataset, batch_size: int) -> int:
    if keras.backend.backend() == "torch":  # Keras' PyTorch trainer runs one step per call
        return 1
    return max(1, min(64, -(-len(data.y_train) // batch_size)))


def _fit(model: keras.Model, data: Dataset, epochs: int, batch_size: int, callbacks: Sequence,
         seed: int | None) -> None:
    if seed is not None:
        keras.utils.set_random_seed(seed)
    _backend.build_for_fit(model, data.x_train[:batch_size], data.y_train[:batch_size])
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, verbose=0,
              callbacks=list(callbacks))


def _fine_tune_with(model, data: Dataset | None, epochs: int, lr: float, wd: float, batch_size: int,
                    callbacks: Sequence = (), seed: int | None = None) -> keras.Model:
    """Fine-tune ``model`` in place with its zeros held in the compiled step (:class:`hold_zeros`)."""
    if epochs <= 0:
        return model
    _need_data(data, "fine-tuning")
    _compile(model, lr, wd, _steps(data, batch_size))
    with hold_zeros(model):
        _fit(model, data, epochs, batch_size, callbacks, seed)
    return model


def _need_data(data: Dataset | None, what: str) -> None:
    if data is None:
        raise ValueError(f"{what} needs data: pass a compressnet_lite.data.Dataset "
                         "(or use fine_tune_epochs=0 and no distill step)")


class _Pruner:
    """One compiled, masked copy of a model for a run of consecutive prune steps.

    The Dense/Conv2D layers become :func:`compressnet_lite.pruning.prune`'s masked layers
    (a ``cnl_mask`` variable and a :class:`~compressnet_lite.pruning.MaskConstraint`); each
    step only assigns new masks, and each fine-tuning starts from a fresh optimizer state
    (its variables zeroed), so the train step is traced once for all the rounds.
    """

    def __init__(self, model: keras.Model, layers: list[str]) -> None:
        pruning = _module("pruning")
        self.layers = sorted(layers)
        self.model = pruning.prune(model, 0.0, layers=self.layers)
        for name in self.layers:  # the zeros the model already has stay zero
            layer = self.model.get_layer(name)
            layer.apply_mask((np.asarray(keras.ops.convert_to_numpy(layer.kernel)) != 0)
                             .astype(np.float32))
        self.compiled = False
        self._holder: hold_zeros | None = None

    def prune(self, sparsity: dict[str, float]) -> None:
        """Magnitude-prune each named layer to its sparsity (pruned weights stay pruned)."""
        pruning = _module("pruning")
        for name, s in sparsity.items():
            layer = self.model.get_layer(name)
            kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
            mask = np.asarray(keras.ops.convert_to_numpy(layer.cnl_mask))
            s = max(float(s), float(np.mean(mask == 0)))
            score = np.where(mask > 0, np.abs(kernel), -1.0)  # pruned ones are the lowest
            layer.apply_mask(pruning.score_mask(score, s))

    def fine_tune(self, data: Dataset, epochs: int, lr: float, wd: float, batch_size: int,
                  callbacks: Sequence, seed: int | None) -> None:
        if epochs <= 0:
            return
        _need_data(data, "fine-tuning")
        if not self.compiled:
            _compile(self.model, lr, wd, _steps(data, batch_size))
            self._holder = hold_zeros(self.model).__enter__()  # zeros of unmasked layers
            self.compiled = True
        else:  # a fresh optimizer state, the same traced train step
            for var in self.model.optimizer.variables:
                if var.name != "learning_rate":
                    var.assign(np.zeros(var.shape, dtype=var.dtype))
        _fit(self.model, data, epochs, batch_size, callbacks, seed)

    def plain(self) -> keras.Model:
        return _module("pruning").strip(self.model)

    def close(self) -> None:
        if self._holder is not None:
            self._holder.__exit__()
            self._holder = None


def _module(name: str):
    try:
        return importlib.import_module(f"compressnet_lite.{name}")
    except ImportError as exc:  # a module of the library that is not installed
        raise ValueError(f"step needs compressnet_lite.{name}, which is not available: {exc}") from None


def _run_step(model, name: str, arg: Any, original, data: Dataset | None, epochs: int, lr: float,
              wd: float, batch_size: int, callbacks: Sequence = (), seed: int | None = None) -> keras.Model:
    """Apply one step (not ``prune``: see :class:`_Pruner`) to the plain ``model`` and
    fine-tune; returns a model (maybe with transform layers)."""
    def _fine_tune(model, data, epochs, lr, wd, batch_size):
        return _fine_tune_with(model, data, epochs, lr, wd, batch_size, callbacks, seed)

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
        _need_data(data, "the distill step")
        distiller = _module("distillation").Distiller(model, original, **opts)
        distiller.compile(optimizer=_optimizer(lr, wd))
        with hold_zeros(distiller.student):
            _fit(distiller, data, max(epochs, 1), batch_size, callbacks, seed)
        return distiller.student
    if name == "cluster":
        clustering = _module("clustering")
        by_k: dict[int, list[str]] = {}
        for layer, k in _per_layer(arg, model, "cluster").items():
            by_k.setdefault(check_positive_int(k, f"cluster[{layer!r}]", minimum=2), []).append(layer)
        for k, layers in sorted(by_k.items()):
            model = clustering.cluster_weights(model, k, layers=layers)
        # trained centroids: the codebooks get the summed gradient of their weights; a
        # clustered layer keeps its zeros through its index (index n_clusters means 0)
        return _fine_tune(model, data, epochs, lr, 0.0, batch_size)
    if name == "quantize":
        quantization = _module("quantization")
        bits = check_positive_int(arg, "quantize bits", maximum=16)
        if epochs > 0:  # quantization-aware fine-tuning, the zeros held on the float kernels
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


def _scores(model: keras.Model, batch_size: int = 1024) -> Callable[[np.ndarray], np.ndarray]:
    """Class scores of ``model`` by direct (eager) calls: no ``predict`` function to trace for
    each new model of a pipeline."""
    def call(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(keras.ops.convert_to_numpy(model(x[i:i + batch_size],
                                                                          training=False)))
                               for i in range(0, len(x), batch_size)])
    return call


def measure(model: keras.Model, data: Dataset | None, *, stage: str = "",
            latency: bool = False) -> dict[str, Any]:
    """One row of a :class:`Report`: accuracy, size and cost of ``model`` (its plain form).

    Args:
        model: the model to measure.
        data: the test split gives the accuracy; ``None``: no accuracy (and no latency).
        stage: the row's name.
        latency: also time inference.

    Returns:
        A dict with ``stage, accuracy, params, nonzero, flops, float32_bytes, keras_bytes,
        gzip_bytes, cnl_bytes, cnl_weight_bytes, cnl_weight_bytes_no_huffman`` and, with
        ``latency=True``, ``latency_ms`` (median of repeated batch-256 inference calls).
        ``accuracy`` is None without data.
    """
    plain = storage.plain_model(model)
    size = storage.compressed_size(plain)
    fixed = storage.compressed_size(plain, huffman=False)
    kb = metrics.model_bytes(plain)
    accuracy = None if data is None else metrics.accuracy(_scores(plain), data.x_test, data.y_test)
    row = {"stage": stage,
           "accuracy": accuracy,
           "params": metrics.count_params(plain),
           "nonzero": metrics.count_nonzero(plain),
           "flops": metrics.flops(plain, nonzero_only=True),
           "float32_bytes": size.float32_bytes,
           "keras_bytes": kb.keras, "gzip_bytes": kb.gzip,
           "cnl_bytes": size.total, "cnl_weight_bytes": size.weight_bytes,
           "cnl_weight_bytes_no_huffman": fixed.weight_bytes,
           "size": size, "size_fixed": fixed}
    if latency and data is not None:
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

        df = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("size")}
                           for r in self.rows]).set_index("stage")
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
        acc.plot(x, df["accuracy"].astype(float) * 100, "ko-", label="accuracy")
        acc.set_ylabel("test accuracy (%)")
        acc.grid(False)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        return fig

    def __str__(self) -> str:
        lines = [f"{'stage':<22}{'acc':>7}{'nonzero':>10}{'float32 B':>12}{'gzip B':>11}{'cnl B':>10}"
                 f"{'ratio':>7}"]
        base = self.rows[0]["float32_bytes"] if self.rows else 0
        for r in self.rows:
            acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
            lines.append(f"{r['stage']:<22}{acc:>7}{r['nonzero']:>10,}{r['float32_bytes']:>12,}"
                         f"{r['gzip_bytes']:>11,}{r['cnl_bytes']:>10,}{base / r['cnl_bytes']:>6.1f}x")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.frame().to_html(float_format=lambda v: f"{v:.3f}")


def compress(model: keras.Model, data: Dataset | None, steps: Sequence[Any], *,
             fine_tune_epochs: int = 2, learning_rate: float = 1e-3, weight_decay: float = 0.0,
             batch_size: int = 32, latency: bool = False, seed: int | None = None,
             progress: Callable[[str], None] | None = None,
             callbacks: Sequence[keras.callbacks.Callback] = ()) -> tuple[keras.Model, Report]:
    """Apply ``steps`` in order, fine-tuning after each, and measure every stage.

    Fine-tuning keeps the zeros of every kernel inside the compiled train step: the pruned
    layers of a run of ``prune`` steps are :func:`compressnet_lite.pruning.prune`'s masked
    layers (one compiled model for the whole run, new masks assigned between rounds, a
    fresh optimizer state per round), every other kernel with zeros gets a mask constraint
    (:class:`hold_zeros`), and clustered layers keep theirs through their index.

    Args:
        model: a trained, built Keras model (not changed).
        data: a :class:`~compressnet_lite.data.Dataset` (training split for fine-tuning,
            test split for accuracy); ``None`` when no step needs data (no fine-tuning, no
            distillation): the report then has no accuracy.
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
        seed: ``keras.utils.set_random_seed(seed)`` before each fine-tuning (reproducible
            runs); ``None`` (default): the caller's random state is left alone.
        progress: called with a line of text as each stage starts (for command-line output).
        callbacks: extra Keras callbacks for every fine-tuning run (e.g. a progress bar);
            several train steps run per compiled call, so batch-level hooks see groups of
            batches.

    Returns:
        ``(compressed model, Report)``: the model is a plain Keras model (its zeros, shared
        values and integer grids are in its arrays; :func:`storage.save_compressed` stores
        them as such).

    Raises:
        TypeError / ValueError: bad model, data, steps or settings (an unknown step, a step
            after cluster/quantize, an unknown layer name, an out-of-range argument, no
            data where a step needs it).
    """
    check_model(model)
    parsed = _parse_steps(steps)
    _check_settings(data, fine_tune_epochs, batch_size, seed, weight_decay, learning_rate)
    if data is None and any(n == "distill" for n, _ in parsed):
        _need_data(data, "the distill step")
    return _run(model, data, parsed, fine_tune_epochs, learning_rate, weight_decay, batch_size,
                latency, seed, progress or (lambda line: None), callbacks)


def _check_settings(data, epochs, batch_size, seed, weight_decay, learning_rate) -> None:
    if data is not None and not isinstance(data, Dataset):
        raise TypeError(f"data must be a compressnet_lite.data.Dataset or None, got {type(data).__name__}")
    check_positive_int(epochs, "fine_tune_epochs", minimum=0)
    check_positive_int(batch_size, "batch_size")
    if seed is not None:
        check_positive_int(seed, "seed", minimum=0)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not (np.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
            or not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    if data is None and epochs > 0:
        _need_data(data, "fine-tuning")


def _run(model, data, parsed, fine_tune_epochs, learning_rate, weight_decay, batch_size, latency,
         seed, say, callbacks, measured: Callable[[int], bool] = lambda i: True):
    """The loop of :func:`compress`; ``measured(i)`` tells which stages get a report row
    (stage 0 is the input)."""
    # the teacher of a distill step: the input model, copied once
    original = models.clone(model) if any(n == "distill" for n, _ in parsed) else None
    current = models.clone(storage.plain_model(model))  # transform layers (masks, wrappers) -> plain Keras
    report = Report()
    if measured(0):
        say(f"[0/{len(parsed)}] measuring the input model")
        report.rows.append(measure(current, data, stage="input", latency=latency))
    pruner: _Pruner | None = None
    stale = False  # the pruner's model is ahead of ``current`` (stripped only when needed)
    try:
        for i, (name, arg) in enumerate(parsed, start=1):
            say(f"[{i}/{len(parsed)}] {name} {arg if not isinstance(arg, dict) else ''}".rstrip())
            if name == "prune":
                sparsity = {n: check_fraction(v, f"prune[{n!r}]")
                            for n, v in _per_layer(arg, current, "prune").items()}
                if pruner is None or pruner.layers != sorted(sparsity):
                    if pruner is not None:
                        current, stale = (pruner.plain() if stale else current), False
                        pruner.close()
                    pruner = _Pruner(current, list(sparsity))
                pruner.prune(sparsity)
                pruner.fine_tune(data, fine_tune_epochs, learning_rate, weight_decay, batch_size,
                                 callbacks, seed)
                stale = True
            else:
                if pruner is not None:
                    current, stale = (pruner.plain() if stale else current), False
                    pruner.close()
                    pruner = None
                current = _run_step(current, name, arg, original, data, fine_tune_epochs,
                                    learning_rate, weight_decay, batch_size, callbacks, seed)
                current = storage.plain_model(current)
            if measured(i):
                if stale:
                    current, stale = pruner.plain(), False
                report.rows.append(measure(current, data, stage=f"{name} {_short(arg)}".strip(),
                                           latency=latency))
        if stale:
            current = pruner.plain()
    finally:
        if pruner is not None:
            pruner.close()
    if getattr(current, "optimizer", None) is not None:
        current = models.clone(current)  # no optimizer state goes with the result
    return current, report


def _short(arg: Any) -> str:
    if isinstance(arg, dict):
        values = sorted({str(v) for v in arg.values()})
        return "/".join(values) if len(values) <= 3 else "per layer"
    return str(arg)


def quantize_extras(model: keras.Model, bias_bits: int | None = 8, codebook_bits: int | None = 8,
                    layers: Sequence[str] | None = None) -> keras.Model:
    """Round what Deep Compression leaves in float32: the biases and the shared values.

    Each bias vector becomes ``bias_bits``-bit symmetric codes with one scale
    (:func:`compressnet_lite.quantization.quantize`); each layer's distinct non-zero kernel
    values (its codebook, after weight sharing) are rounded the same way with
    ``codebook_bits`` bits, so the kernel keeps at most as many values and exactly its zeros
    (a value that would round to 0 takes the smallest code of its sign instead). A bias
    may round to 0.
    :mod:`compressnet_lite.storage` then stores biases and codebooks as small integer codes
    instead of float32. The paper's byte counts leave biases out; the codebooks are in them.

    Args:
        model: a plain Keras model (not changed).
        bias_bits / codebook_bits: bits (2..16), or ``None`` to leave them as they are.
        layers: the Dense/Conv2D layers to round (default: all).

    Returns:
        A new model.

    Raises:
        ValueError / TypeError: bits outside 2..16, an unknown layer name.
    """
    quantization = _module("quantization")
    check_model(model)
    for name, bits in (("bias_bits", bias_bits), ("codebook_bits", codebook_bits)):
        if bits is not None:
            check_positive_int(bits, name, minimum=2, maximum=16)
    chosen = _weighted_layers(model) if layers is None else [model.get_layer(_check_name(model, n))
                                                           for n in layers]
    new = models.clone(model)
    for layer in chosen:
        target = new.get_layer(layer.name)
        weights = [np.array(w) for w in target.get_weights()]
        if codebook_bits is not None and weights and np.any(weights[0]):
            kernel = weights[0]
            values, index = np.unique(kernel[kernel != 0], return_inverse=True)
            qt = quantization.quantize(values, codebook_bits)
            q = np.asarray(qt.q).astype(np.int64)
            q = np.where(q == 0, np.sign(values).astype(np.int64), q)  # no new zeros
            rounded = quantization.dequantize(qt._replace(q=q.astype(qt.q.dtype)))
            kernel[kernel != 0] = rounded[index]
            weights[0] = kernel
        if bias_bits is not None and getattr(target, "use_bias", False) and np.any(weights[-1]):
            weights[-1] = quantization.dequantize(quantization.quantize(weights[-1], bias_bits))
        target.set_weights(weights)
    return new


def _check_name(model: keras.Model, name: str) -> str:
    names = {l.name for l in model.layers}
    if name not in names:
        raise ValueError(f"layers: no layer named {name!r}; layers are {sorted(names)}")
    return name


def deep_compression(model: keras.Model, data: Dataset, *, sparsity: dict[str, float] | None = None,
                     conv_bits: int = 8, fc_bits: int = 5, prune_rounds: int = 3,
                     fine_tune_epochs: int = 4, cluster_epochs: int = 3, weight_decay: float = 0.05,
                     learning_rate: float = 1e-3, batch_size: int = 32, bias_bits: int | None = 8,
                     codebook_bits: int | None = 8, seed: int | None = None,
                     progress: Callable[[str], None] | None = None) -> tuple[keras.Model, Report]:
    """Deep Compression (Han, Mao & Dally 2016): pruning, trained weight sharing, entropy coding.

    1. Iterative magnitude pruning to a per-layer sparsity in ``prune_rounds`` rounds, each
       followed by fine-tuning with decoupled weight decay (the paper trains with L2
       regularization: weights of inputs that never fire decay and prune into long zero runs).
       The zeros are held in the compiled train step by pruning's masks.
    2. Weight sharing of the non-zero weights: ``2**conv_bits`` clusters per conv layer,
       ``2**fc_bits`` per fully connected layer (linear initialization), then the centroids
       are fine-tuned (each gets the summed gradient of its weights); zeros stay zero.
       Then the biases and the shared values are rounded to ``bias_bits`` and
       ``codebook_bits`` (:func:`quantize_extras`; ``None`` keeps them float32).
    3. Entropy coding, done by :mod:`compressnet_lite.storage` when the model is saved: the
       report's stages ``P+Q`` (no entropy coding), ``P+Q+H`` (Huffman, the paper's) and
       ``P+Q+E`` (every codec of the format: rANS, context-coded positions, compact
       codebooks, each where it is smaller) are one model, stored three ways.

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
        bias_bits / codebook_bits: see step 2.
        seed: reseed before each fine-tuning (see :func:`compress`); ``None`` leaves the
            caller's random state alone.
        progress: called with a line of text per stage.

    Returns:
        ``(model, Report)`` with stages ``input``, ``pruned (P)``, ``P+Q``, ``P+Q+H`` and
        ``P+Q+E``.
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
    _check_settings(data, fine_tune_epochs, batch_size, seed, weight_decay, learning_rate)
    check_positive_int(cluster_epochs, "cluster_epochs", minimum=0)
    if data is None and cluster_epochs:
        _need_data(data, "fine-tuning the centroids")
    # measured: the input and the last pruning round only
    pruned, rep1 = _run(model, data, rounds, fine_tune_epochs, learning_rate, weight_decay,
                        batch_size, False, seed, say, (),
                        measured=lambda i: i in (0, len(rounds)))
    say("weight sharing with trained centroids")
    shared, _ = _run(pruned, data, [("cluster", clusters)], cluster_epochs, learning_rate,
                     0.0, batch_size, False, seed, say, (), measured=lambda i: False)
    if bias_bits is not None or codebook_bits is not None:
        say(f"rounding biases ({bias_bits} bits) and shared values ({codebook_bits} bits)")
        shared = quantize_extras(shared, bias_bits, codebook_bits, layers=list(clusters))
    final = measure(shared, data)
    report = Report([dict(rep1.rows[0], stage="input"), dict(rep1.rows[-1], stage="pruned (P)")])
    for stage, codecs in (("P+Q", "fixed"), ("P+Q+H", "huffman"), ("P+Q+E", "all")):
        size = {"all": final["size"], "fixed": final["size_fixed"]}.get(codecs) or \
            storage.compressed_size(shared, codecs=codecs)
        report.rows.append(dict(final, stage=stage, cnl_bytes=size.total,
                                cnl_weight_bytes=size.weight_bytes, size=size))
    return shared, report
