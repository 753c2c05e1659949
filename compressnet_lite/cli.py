"""The ``compressnet-lite`` command: compress a Keras model into a small file, inspect it,
evaluate it, export it, or run a demo that needs no files at all.

Exit codes: 0 success; 1 the command ran but failed (missing or invalid model file,
damaged compressed file, data that does not fit the model); 2 bad command line (unknown
option, value out of range, impossible combination of settings).

Examples::

    compressnet-lite demo
    compressnet-lite compress model.keras --prune 0.9 --cluster 32 -o model.cnl
    compressnet-lite info model.cnl
    compressnet-lite evaluate model.cnl --data digits
    compressnet-lite export model.cnl --tflite model.tflite
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from typing import Sequence

__all__ = ["main", "build_parser", "load_data"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Settings that cannot work together (exit code 2)."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0.0):  # inf would turn every weight into NaN
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value}")
    return value


def _int_range(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value
    return parse


_DATA_HELP = ("data set: 'digits' (bundled with scikit-learn, the default), 'mnist:PATH' (a Keras "
              "mnist.npz file) or 'npz:PATH' (an .npz with arrays x_train, y_train, x_test, y_test)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="compressnet-lite",
        description="Compress Keras models (pruning, weight sharing, quantization) into a small "
                    "checksummed file whose size is the real size on disk.",
        epilog="Exit codes: 0 success, 1 failure while running (bad model or data file), "
               "2 bad command line. Run 'compressnet-lite COMMAND --help' for each command.")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compress", help="compress a .keras model into a .cnl file",
                       description="Apply the chosen steps in this order: prune, then cluster or "
                                   "quantize, fine-tuning after each step on the training data while "
                                   "keeping the zeros of pruning; then write the compressed file and "
                                   "print a table of accuracy and bytes per stage.")
    p.add_argument("model", help="the input model, saved with model.save('....keras')")
    p.add_argument("--prune", type=_fraction, metavar="S",
                   help="magnitude-prune this fraction of every Dense/Conv2D kernel, in [0, 1)")
    p.add_argument("--cluster", type=_int_range(2, 65536), metavar="K",
                   help="share weights: K values per layer (k-means on the non-zero weights, trained "
                        "centroids); the file stores log2(K)-bit indices")
    p.add_argument("--quantize", type=_int_range(2, 16), metavar="BITS",
                   help="quantize kernels to BITS-bit integer codes, one scale per output channel "
                        "(quantization-aware fine-tuning when --fine-tune-epochs > 0)")
    p.add_argument("--data", default=None,
                   help=_DATA_HELP + "; read only when given or when fine-tuning (then 'digits' "
                        "by default): compression without fine-tuning needs no data")
    p.add_argument("--fine-tune-epochs", type=_int_range(0, 1000), default=2, metavar="N",
                   help="epochs of fine-tuning after each step (default 2; 0 = none)")
    p.add_argument("--seed", type=_int_range(0, 2 ** 31 - 1), default=None, metavar="N",
                   help="seed the fine-tuning (keras.utils.set_random_seed): the same seed and "
                        "input give the same file (default: unseeded)")
    p.add_argument("--weight-decay", type=_non_negative, default=0.0, metavar="WD",
                   help="AdamW weight decay while fine-tuning after pruning (default 0)")
    p.add_argument("--no-huffman", action="store_true", help="store integer streams at fixed width "
                   "(no entropy coding; the same as --codecs fixed)")
    p.add_argument("--codecs", choices=("all", "huffman", "fixed"), default=None,
                   help="the codecs the file may use: all (default: Huffman, rANS, context-coded "
                        "positions, compact codebooks, each where smaller), huffman (Deep "
                        "Compression's) or fixed")
    p.add_argument("-o", "--output", required=True, metavar="OUT.cnl", help="the compressed file to write")

    p = sub.add_parser("info", help="show where the bytes of a .cnl file go",
                       description="Print each weight's encoding and bytes, and the file's total.")
    p.add_argument("file", help="a file written by 'compress'")
    p.add_argument("--streams", action="store_true",
                   help="also list every stream with its category (positions, codes, tables, "
                        "codebooks, scales, biases, manifest, architecture, container) and the "
                        "order-0 entropy bound of what it codes, then the totals per category")

    p = sub.add_parser("evaluate", help="accuracy of a .cnl (or .keras) model on a data set",
                       description="Load the model (weights decoded exactly) and print its test accuracy.")
    p.add_argument("file", help="a .cnl file (or a .keras model)")
    p.add_argument("--data", default="digits", help=_DATA_HELP)

    p = sub.add_parser("export", help="convert a .cnl model to TensorFlow Lite",
                       description="Write a .tflite flatbuffer: full-integer int8 (weights and "
                                   "activations, calibrated on the data's training inputs) by default.")
    p.add_argument("file", help="a .cnl file (or a .keras model)")
    p.add_argument("--tflite", required=True, metavar="OUT.tflite", help="the file to write")
    p.add_argument("--float", action="store_true", help="a float32 TFLite model instead of int8")
    p.add_argument("--data", default="digits", help=_DATA_HELP + " (for int8 calibration)")

    p = sub.add_parser("demo", help="train the article's MLP on the bundled digits and compress it",
                       description="No files needed: trains seed_mlp (64-32-10) on the digits, saves "
                                   "it, compresses it (prune 0.7 + 16 shared values), prints the "
                                   "report, the file's breakdown and the accuracy of the reloaded file.")
    p.add_argument("-o", "--output-dir", metavar="DIR",
                   help="where to write demo.keras and demo.cnl (default: a temporary directory)")
    p.add_argument("--epochs", type=_int_range(1, 200), default=20, help="training epochs (default 20)")
    return parser


def load_data(spec: str):
    """A :class:`~compressnet_lite.data.Dataset` from a ``--data`` value.

    Raises:
        UsageError: unknown form of ``spec``.
        FileNotFoundError / ValueError: the file is missing or unreadable.
    """
    import numpy as np

    from compressnet_lite import data

    if spec == "digits":
        return data.load_digits()
    kind, _, path = spec.partition(":")
    if kind == "mnist" and path:
        return data.load_mnist(path)
    if kind == "npz" and path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data file not found: {path!r}")
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except KeyError as exc:
            raise ValueError(f"{path}: missing array {exc} (need x_train, y_train, x_test, y_test)") from None
        except Exception as exc:
            raise ValueError(f"{path} is not a readable .npz file: {exc}") from None
        return data.Dataset(arrays["x_train"].astype("float32"), arrays["y_train"].astype("int32"),
                            arrays["x_test"].astype("float32"), arrays["y_test"].astype("int32"))
    raise UsageError(f"--data must be 'digits', 'mnist:PATH' or 'npz:PATH', got {spec!r}")


def _fit_data(model, dataset):
    """Reshape the data to the model's input when only the layout differs (8x8x1 vs 64)."""
    import numpy as np

    from compressnet_lite.data import Dataset

    want = tuple(model.inputs[0].shape[1:])
    have = dataset.input_shape
    if want == have:
        return dataset
    if None not in want and int(np.prod(want)) == int(np.prod(have)):
        return Dataset(dataset.x_train.reshape((-1, *want)), dataset.y_train,
                       dataset.x_test.reshape((-1, *want)), dataset.y_test)
    raise ValueError(f"the model expects inputs of shape {want}, the data has {have}: "
                     "choose matching --data")


def _load_model(path: str):
    from compressnet_lite import storage

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path!r}")
    if path.endswith(".keras"):
        import keras

        storage.register_library_classes()  # a saved pruned/clustered/quantized model uses them
        try:
            return keras.saving.load_model(path, compile=False)  # safe_mode=True (the default)
        except Exception as exc:
            raise ValueError(f"{path} is not a loadable .keras model: {exc}") from None
    return storage.load_compressed(path)


def _run(args, say) -> int:
    from compressnet_lite import metrics, storage

    if args.command == "info":
        report = storage.compressed_size(args.file, bounds=args.streams)
        print(report)
        if args.streams:
            print()
            print(report.streams_table())
        return EXIT_OK
    if args.command == "evaluate":
        dataset = load_data(args.data)
        model = _load_model(args.file)
        dataset = _fit_data(model, dataset)
        say(f"evaluating on {len(dataset.y_test)} test examples")
        print(f"accuracy {metrics.accuracy(model, dataset.x_test, dataset.y_test):.4f}")
        return EXIT_OK
    if args.command == "export":
        from compressnet_lite import quantization
        from compressnet_lite.tflite import _check_tensorflow_backend

        _check_tensorflow_backend("export")  # before loading the model and the data
        model = _load_model(args.file)
        rep = None
        if not args.float:
            rep = _fit_data(model, load_data(args.data)).x_train
        say("converting with the TensorFlow Lite converter")
        blob = quantization.to_tflite(model, rep, int8=not args.float)
        with open(args.tflite, "wb") as f:
            f.write(blob)
        print(f"wrote {args.tflite}: {len(blob):,} bytes ({'float32' if args.float else 'int8'})")
        return EXIT_OK
    if args.command == "compress":
        return _compress(args, say)
    if args.command == "demo":
        return _demo(args, say)
    raise UsageError(f"unknown command {args.command!r}")  # argparse prevents this


def _compress(args, say) -> int:
    from compressnet_lite import pipeline, storage

    if args.cluster is not None and args.quantize is not None:
        raise UsageError("choose one of --cluster and --quantize: both share weights, and the "
                         "second would undo the first")
    if args.prune is None and args.cluster is None and args.quantize is None:
        say("no --prune/--cluster/--quantize given: storing the model as it is")
    steps = []
    if args.prune is not None:
        steps.append(("prune", args.prune))
    if args.cluster is not None:
        steps.append(("cluster", args.cluster))
    if args.quantize is not None:
        steps.append(("quantize", args.quantize))
    spec = args.data if args.data is not None else ("digits" if args.fine_tune_epochs else None)
    dataset = load_data(spec) if spec is not None else None
    model = _load_model(args.model)
    if dataset is not None:
        dataset = _fit_data(model, dataset)
    else:
        say("no --data and no fine-tuning: compressing without data (no accuracy measured)")
    if args.cluster is not None:
        import numpy as np

        kernels = [int(np.prod(l.kernel.shape)) for l in model.layers if hasattr(l, "kernel")]
        if not kernels:
            raise ValueError(f"{args.model} has no Dense or Conv2D kernel to share values in")
        smallest = min(int(n * (1 - (args.prune or 0.0))) for n in kernels)
        if args.cluster > smallest:
            raise UsageError(f"--cluster {args.cluster} is more values than the smallest layer keeps "
                             f"({smallest} weights)")
    start = time.perf_counter()
    bar = [_EpochBar(args.fine_tune_epochs, say)] if args.fine_tune_epochs else []
    small, report = pipeline.compress(model, dataset, steps, fine_tune_epochs=args.fine_tune_epochs,
                                      weight_decay=args.weight_decay, progress=say, callbacks=bar,
                                      seed=args.seed)
    if args.no_huffman and args.codecs not in (None, "fixed"):
        raise UsageError("--no-huffman means --codecs fixed: give one of them")
    size = storage.save_compressed(small, args.output, huffman=not args.no_huffman, codecs=args.codecs)
    print(report)
    print(f"wrote {args.output}: {size.total:,} bytes ({size.ratio:.1f}x smaller than float32) "
          f"in {time.perf_counter() - start:.0f} s")
    return EXIT_OK


def _demo(args, say) -> int:
    import keras

    from compressnet_lite import data, metrics, models, pipeline, storage

    out = args.output_dir or tempfile.mkdtemp(prefix="compressnet-lite-demo-")
    os.makedirs(out, exist_ok=True)
    dataset = data.load_digits()
    say(f"training seed_mlp on the digits for {args.epochs} epochs")
    keras.utils.set_random_seed(0)
    model = models.train(models.seed_mlp(), dataset, epochs=args.epochs,
                         callbacks=[_EpochBar(args.epochs, say)])
    keras_path = os.path.join(out, "demo.keras")
    model.save(keras_path)
    small, report = pipeline.compress(model, dataset, [("prune", 0.7), ("cluster", 16)],
                                      fine_tune_epochs=3, progress=say)
    cnl_path = os.path.join(out, "demo.cnl")
    size = storage.save_compressed(small, cnl_path)
    print(report)
    print()
    print(storage.compressed_size(cnl_path))
    loaded = storage.load_compressed(cnl_path)
    print(f"\nwrote {keras_path} ({os.path.getsize(keras_path):,} bytes) and {cnl_path} "
          f"({size.total:,} bytes); reloaded accuracy "
          f"{metrics.accuracy(loaded, dataset.x_test, dataset.y_test):.4f}")
    return EXIT_OK


class _EpochBar:
    """A minimal progress bar over epochs, on stderr (a Keras callback)."""

    def __new__(cls, epochs: int, say):
        import keras

        class Bar(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                done = epoch + 1
                bar = "#" * (20 * done // epochs)
                say(f"\r  [{bar:<20}] epoch {done}/{epochs} loss {logs.get('loss', 0):.3f}",
                    end="\n" if done == epochs else "")

        return Bar()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failed, 2 bad usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)

    def say(line: str, end: str = "\n") -> None:
        if not args.quiet:
            print(line, end=end, file=sys.stderr, flush=True)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        _quiet_tensorflow()
        return _run(args, say)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"compressnet-lite: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError, TypeError, OSError) as exc:
        print(f"compressnet-lite: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RuntimeError as exc:
        from compressnet_lite._backend import BackendError  # keras: imported only when needed

        if not isinstance(exc, BackendError):
            raise
        print(f"compressnet-lite: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("compressnet-lite: interrupted", file=sys.stderr)
        return EXIT_FAILED


def _quiet_tensorflow() -> None:
    import logging
    import warnings

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        import keras

        keras.utils.disable_interactive_logging()
    except Exception:  # pragma: no cover
        pass


if __name__ == "__main__":
    sys.exit(main())
