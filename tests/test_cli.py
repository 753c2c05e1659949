"""The command line, run as users run it: as a subprocess (``python -m compressnet_lite``).

Each subprocess that imports TensorFlow costs ~6 s, so the successful paths share one demo
run and the remaining checks call ``main`` in-process.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from compressnet_lite import cli, storage

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "compressnet_lite", *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = run("demo", "--epochs", "8", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "reloaded accuracy" in proc.stdout and "fc1/kernel" in proc.stdout
    assert "epoch 8/8" in proc.stderr  # progress on stderr
    return out


def test_demo_writes_a_loadable_compressed_model(demo_dir, capsys):
    cnl_file = demo_dir / "demo.cnl"
    assert (demo_dir / "demo.keras").is_file()
    assert cnl_file.stat().st_size < 0.25 * (demo_dir / "demo.keras").stat().st_size
    assert cli.main(["--quiet", "info", str(cnl_file), "--streams"]) == 0
    out = capsys.readouterr().out
    assert f"{cnl_file.stat().st_size:,}" in out
    assert "positions." in out


def test_help_and_usage_errors_exit_0_and_2():
    proc = run("--help")
    assert proc.returncode == 0 and "Exit codes" in proc.stdout
    proc = run("compress", "--help")
    assert proc.returncode == 0 and "--fine-tune-epochs" in proc.stdout and "--prune" in proc.stdout
    proc = run("compress", "m.keras", "--prune", "1.5", "-o", "x.cnl")
    assert proc.returncode == 2 and "must be in [0, 1)" in proc.stderr
    proc = run("shrink")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.parametrize("value, message", [
    ("-1", "must be a finite number >= 0, got -1.0"),
    ("inf", "must be a finite number >= 0, got inf"),
    ("nan", "must be a finite number >= 0, got nan"),
    ("lots", "must be a number >= 0, got 'lots'"),
], ids=["negative", "inf", "nan", "text"])
def test_bad_weight_decay_is_a_usage_error(tmp_path, capsys, value, message):
    argv = ["-q", "compress", str(tmp_path / "m.keras"), "--weight-decay", value,
            "-o", str(tmp_path / "o.cnl")]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_files_fail_cleanly_with_exit_1(tmp_path, demo_dir):
    damaged = tmp_path / "damaged.cnl"
    data = bytearray((demo_dir / "demo.cnl").read_bytes())
    data[100] ^= 0xFF
    damaged.write_bytes(data)
    proc = run("evaluate", str(damaged))
    assert proc.returncode == 1
    assert "corrupted" in proc.stderr and "Traceback" not in proc.stderr
    # in-process from here (same code path, no TensorFlow start-up per call)
    assert cli.main(["-q", "compress", str(tmp_path / "missing.keras"), "--prune", "0.5",
                     "-o", str(tmp_path / "o.cnl")]) == 1
    not_a_model = tmp_path / "bad.keras"
    not_a_model.write_bytes(b"not a zip")
    assert cli.main(["-q", "compress", str(not_a_model), "-o", str(tmp_path / "o.cnl")]) == 1
    assert cli.main(["-q", "info", str(tmp_path / "missing.cnl")]) == 1


def test_compress_evaluate_export_in_process(demo_dir, tmp_path, capsys):
    out = tmp_path / "q.cnl"
    code = cli.main(["-q", "compress", str(demo_dir / "demo.keras"), "--prune", "0.5", "--quantize", "8",
                     "--fine-tune-epochs", "1", "-o", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "quantize 8" in text and f"{out.stat().st_size:,} bytes" in text
    model = storage.load_compressed(out)
    k = model.get_layer("fc1").get_weights()[0]
    assert np.mean(k == 0) >= 0.5 and np.unique(k).size <= 2 ** 8 * k.shape[1]
    assert cli.main(["evaluate", str(out), "--data", "digits"]) == 0
    acc = float(capsys.readouterr().out.split()[-1])
    assert acc > 0.7
    tfl = tmp_path / "q.tflite"
    if keras.backend.backend() == "tensorflow":
        assert cli.main(["-q", "export", str(out), "--tflite", str(tfl)]) == 0
        assert tfl.stat().st_size > 0 and "int8" in capsys.readouterr().out
    else:  # LiteRT converts TensorFlow graphs: a clear error and exit 1, no traceback
        assert cli.main(["-q", "export", str(out), "--tflite", str(tfl)]) == 1
        assert "needs Keras' TensorFlow backend" in capsys.readouterr().err and not tfl.exists()


def test_export_on_another_backend_fails_cleanly(demo_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    tfl = tmp_path / "m.tflite"
    assert cli.main(["export", str(demo_dir / "demo.keras"), "--tflite", str(tfl)]) == 1
    assert "needs Keras' TensorFlow backend" in capsys.readouterr().err and not tfl.exists()


def test_compress_with_a_seed_writes_the_same_file_twice(demo_dir, tmp_path):
    files = []
    for name in ("a.cnl", "b.cnl"):
        files.append(tmp_path / name)
        assert cli.main(["-q", "compress", str(demo_dir / "demo.keras"), "--prune", "0.5",
                         "--fine-tune-epochs", "1", "--seed", "3", "-o", str(files[-1])]) == 0
    assert files[0].read_bytes() == files[1].read_bytes()


@pytest.mark.parametrize("argv, code, message", [
    (["compress", "{keras}", "--cluster", "16", "--quantize", "8", "-o", "x.cnl"], 2, "choose one of"),
    (["compress", "{keras}", "--cluster", "5000", "-o", "x.cnl"], 2, "smallest layer"),
    (["compress", "{keras}", "--data", "cifar", "-o", "x.cnl"], 2, "--data must be"),
    (["compress", "{keras}", "--seed", "-1", "-o", "x.cnl"], 2, "--seed"),
    (["compress", "{keras}", "--data", "npz:{missing}", "-o", "x.cnl"], 1, "not found"),
    (["evaluate", "{keras}", "--data", "npz:{wrong_shape}"], 1, "expects inputs of shape"),
], ids=["cluster-and-quantize", "too-many-clusters", "unknown-data", "negative-seed",
        "missing-data-file", "wrong-shape"])
def test_impossible_settings(demo_dir, tmp_path, capsys, argv, code, message):
    wrong = tmp_path / "wrong.npz"
    x = np.zeros((20, 10), np.float32)
    y = np.arange(20) % 10
    np.savez(wrong, x_train=x, y_train=y, x_test=x, y_test=y)
    fill = {"keras": str(demo_dir / "demo.keras"), "missing": str(tmp_path / "none.npz"),
            "wrong_shape": str(wrong)}
    argv = [a.format(**fill) for a in argv]
    assert cli.main(["-q", *argv]) == code
    assert message in capsys.readouterr().err


def test_cluster_on_a_model_without_kernels_is_a_clear_failure(tmp_path, capsys):
    import keras

    inputs = keras.Input((64,))
    keras.Model(inputs, keras.layers.Activation("softmax")(inputs)).save(tmp_path / "nokernel.keras")
    code = cli.main(["--quiet", "compress", str(tmp_path / "nokernel.keras"), "--cluster", "4",
                     "-o", str(tmp_path / "out.cnl")])
    assert code == 1
    assert "has no Dense or Conv2D kernel" in capsys.readouterr().err
    assert not (tmp_path / "out.cnl").exists()


def test_compress_without_fine_tuning_needs_no_data(tmp_path, capsys):
    # A model whose input is not the digits' (64 or 8x8x1): no data is read when no step
    # needs it. (By hand: MobileNetV2 at 96x96x3 with --prune 0.5 --cluster 16 works too.)
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    keras.Model(inputs, keras.layers.Dense(5, name="out")(x)).save(tmp_path / "odd.keras")
    out = tmp_path / "odd.cnl"
    argv = ["compress", str(tmp_path / "odd.keras"), "--prune", "0.5", "--cluster", "4",
            "--fine-tune-epochs", "0", "-o", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "without data" in captured.err and f"{out.stat().st_size:,} bytes" in captured.out
    k = storage.load_compressed(out).get_layer("conv").get_weights()[0]
    assert np.mean(k == 0) >= 0.5 and np.unique(k[k != 0]).size <= 4
    # fine-tuning needs data: the default digits do not fit this model, and it says so
    assert cli.main(["-q", *argv[:-4], "--fine-tune-epochs", "1", "-o", str(out)]) == 1
    assert "expects inputs of shape (6, 6, 2)" in capsys.readouterr().err


def test_info_streams_shows_categories_and_entropy_bounds(demo_dir, capsys):
    cnl_file = demo_dir / "demo.cnl"
    assert cli.main(["--quiet", "info", str(cnl_file), "--streams"]) == 0
    out = capsys.readouterr().out
    for word in ("category", "positions", "codes", "biases", "architecture", "container", "bound"):
        assert word in out
    report = storage.compressed_size(cnl_file, bounds=True)
    assert report.bounds and sum(c["bytes"] for c in report.by_category().values()) == report.total
