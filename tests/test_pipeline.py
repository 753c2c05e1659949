import importlib.util

import keras
import numpy as np
import pytest

from compressnet_lite import metrics, pipeline, storage

needs = pytest.mark.skipif(
    any(importlib.util.find_spec(f"compressnet_lite.{m}") is None
        for m in ("pruning", "clustering", "quantization")),
    reason="pruning, clustering and quantization modules are needed")


def _kernels(model):
    return {v.path: np.asarray(v) for v in model.weights if v.path.endswith("kernel")}


@needs
@pytest.mark.parametrize("last", [("cluster", 8), ("quantize", 4)], ids=["cluster", "quantize-qat"])
def test_sparsity_is_kept_through_clustering_and_quantization(trained_mlp, digits, last):
    before = [w.copy() for w in trained_mlp.get_weights()]
    small, report = pipeline.compress(trained_mlp, digits, [("prune", 0.8), last], fine_tune_epochs=1)
    pruned_rows = report.rows[1]
    final = report.rows[2]
    assert final["nonzero"] <= pruned_rows["nonzero"]
    for path, k in _kernels(small).items():
        assert np.mean(k == 0) >= 0.79, path
        distinct = np.unique(k[k != 0]).size
        if last[0] == "cluster":
            assert distinct <= 8, path
    for w, b in zip(trained_mlp.get_weights(), before):  # caller's model untouched
        np.testing.assert_array_equal(w, b)
    assert final["cnl_bytes"] < pruned_rows["cnl_bytes"] < report.rows[0]["cnl_bytes"]
    assert final["accuracy"] > 0.5  # mechanics (1 epoch, 8 values per layer); accuracy: the chapter
    assert all(type(l).__module__.startswith("keras.") for l in small.layers)


@needs
def test_report_renders_and_accounts_bytes(trained_mlp, digits, tmp_path):
    small, report = pipeline.compress(trained_mlp, digits, [("prune", {"fc1": 0.9, "fc2": 0.5})],
                                      fine_tune_epochs=0)
    df = report.frame()
    assert list(df.index) == ["input", "prune 0.5/0.9"]
    for col in ("accuracy", "params", "nonzero", "flops", "float32_bytes", "gzip_bytes", "cnl_bytes",
                "cnl_weight_bytes_no_huffman", "ratio"):
        assert col in df.columns
    k = _kernels(small)
    assert np.mean(k["fc1/kernel"] == 0) == pytest.approx(0.9, abs=0.01)
    assert np.mean(k["out/kernel"] == 0) == 0
    assert storage.save_compressed(small, tmp_path / "s.cnl").total == df["cnl_bytes"].iloc[-1]
    assert "prune" in str(report) and "<table" in report._repr_html_()
    import matplotlib

    matplotlib.use("Agg")
    fig = report.plot()
    assert len(fig.axes) == 2


@needs
def test_deep_compression_preset(trained_mlp, digits):
    small, report = pipeline.deep_compression(trained_mlp, digits, prune_rounds=1, fine_tune_epochs=1,
                                              cluster_epochs=1, fc_bits=4)
    assert [r["stage"] for r in report.rows] == ["input", "pruned (P)", "P+Q", "P+Q+H", "P+Q+E"]
    k = _kernels(small)
    assert np.mean(k["fc1/kernel"] == 0) == pytest.approx(0.92, abs=0.01)
    assert all(np.unique(v[v != 0]).size <= 16 for v in k.values())
    pq, pqh, pqe = report.rows[2], report.rows[3], report.rows[4]
    assert pqe["cnl_weight_bytes"] <= pqh["cnl_weight_bytes"] <= pq["cnl_weight_bytes"]
    assert pqe["accuracy"] == pqh["accuracy"] == pq["accuracy"]  # one model, stored three ways
    assert [pq["size"].codecs, pqh["size"].codecs, pqe["size"].codecs] == ["fixed", "huffman", "all"]
    assert pqh["cnl_bytes"] < report.rows[1]["cnl_bytes"] < report.rows[0]["cnl_bytes"]
    # 8-bit biases and shared values: each bias vector on one grid of at most 255 values
    for v in small.weights:
        if v.path.endswith("bias"):
            assert np.unique(np.asarray(v)).size <= 255


@needs
def test_quantize_extras_rounds_biases_and_shared_values(trained_mlp):
    import compressnet_lite as cnl

    shared = cnl.clustering.strip_clustering(cnl.clustering.cluster_weights(
        cnl.pruning.strip(cnl.pruning.prune(trained_mlp, 0.5)), 16))
    before = [np.array(w) for w in shared.get_weights()]
    rounded = pipeline.quantize_extras(shared, bias_bits=4, codebook_bits=6)
    for a, b in zip(shared.get_weights(), before):  # the caller's model is untouched
        np.testing.assert_array_equal(a, b)
    for layer in ("fc1", "fc2", "out"):
        k0, b0 = shared.get_layer(layer).get_weights()
        k, b = rounded.get_layer(layer).get_weights()
        np.testing.assert_array_equal(k == 0, k0 == 0)                    # zeros kept
        assert np.unique(k[k != 0]).size <= np.unique(k0[k0 != 0]).size   # no new values
        step = np.abs(k0).max() / 31
        assert np.abs(k - k0).max() <= step / 2 + 1e-7                    # 6-bit grid
        assert np.abs(b - b0).max() <= np.abs(b0).max() / 7 / 2 + 1e-7      # 4-bit grid
    untouched = pipeline.quantize_extras(shared, bias_bits=None, codebook_bits=None)
    for a, b in zip(untouched.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="bias_bits must be in 2..16"):
        pipeline.quantize_extras(shared, bias_bits=1)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        pipeline.quantize_extras(shared, layers=["nope"])


@pytest.mark.parametrize("step, module", [
    (("prune_neurons", 0.25), "pruning"),
    (("merge", 0.25), "merging"),
    (("factorize", {"layer": "fc1", "rank": 8}), "lowrank"),
    (("distill", 4.0), "distillation"),
], ids=["prune-neurons", "merge", "factorize", "distill"])
def test_structural_steps_compose(trained_mlp, digits, step, module):
    if importlib.util.find_spec(f"compressnet_lite.{module}") is None:
        pytest.skip(f"compressnet_lite.{module} not available")
    small, report = pipeline.compress(trained_mlp, digits, [step, ("cluster", 16)], fine_tune_epochs=0)
    df = report.frame()
    assert len(df) == 3
    if step[0] != "distill":
        assert df["params"].iloc[1] < df["params"].iloc[0]
    assert df["ratio"].iloc[2] > df["ratio"].iloc[1] > 0.8
    assert df["accuracy"].iloc[2] > 0.5


def test_paper_sparsity():
    assert [pipeline.paper_sparsity("fc", i, 3) for i in range(3)] == [0.92, 0.91, 0.74]
    assert pipeline.paper_sparsity("conv", 0, 2) == 0.34


@pytest.mark.parametrize("args, error, match", [
    (("Conv", 0, 2), ValueError, "kind must be one of"),
    (("fc", 3, 3), ValueError, "position must be in 0..2"),
    (("fc", -1, 3), ValueError, "position"),
    (("fc", 0, 0), ValueError, "count must be >= 1"),
    (("fc", 0.5, 3), TypeError, "position must be an integer"),
], ids=["kind-case", "position-past-end", "position-negative", "count-zero", "position-float"])
def test_paper_sparsity_rejects_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        pipeline.paper_sparsity(*args)


def test_hold_zeros_keeps_them_inside_the_compiled_step(trained_mlp, digits):
    from compressnet_lite.pruning import MaskConstraint

    w = trained_mlp.get_weights()
    w[0][:, :10] = 0
    trained_mlp.set_weights(w)
    kernel = trained_mlp.get_layer("fc1").kernel
    before = kernel.constraint
    with pipeline.hold_zeros(trained_mlp):
        assert isinstance(kernel.constraint, MaskConstraint)
        assert trained_mlp.get_layer("out").kernel.constraint is None  # no zeros: no mask
    assert kernel.constraint is before
    # no callback: the constraint is traced into the train step, several steps per call
    pipeline._fine_tune_with(trained_mlp, digits, 1, 1e-3, 1e-3, 64)
    if keras.backend.backend() != "torch":  # Keras' PyTorch trainer runs one step per call
        assert trained_mlp.steps_per_execution > 1
    assert np.all(trained_mlp.get_weights()[0][:, :10] == 0)
    assert metrics.sparsity(trained_mlp.get_layer("fc1")) >= 10 / 64
    assert kernel.constraint is before


@needs
def test_pruning_rounds_share_one_compiled_model(trained_mlp, digits):
    rounds = [("prune", 0.5), ("prune", 0.7), ("prune", 0.8)]
    traces = []
    original = pipeline._Pruner.fine_tune

    def counting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        traces.append(id(self.model.train_function))
    pipeline._Pruner.fine_tune = counting
    try:
        small, report = pipeline.compress(trained_mlp, digits, rounds, fine_tune_epochs=1, seed=0)
    finally:
        pipeline._Pruner.fine_tune = original
    assert len(traces) == 3 and len(set(traces)) == 1  # one traced train step for the rounds
    nonzero = [r["nonzero"] for r in report.rows]
    assert nonzero[0] > nonzero[1] > nonzero[2] > nonzero[3]
    k = _kernels(small)
    assert np.mean(k["fc1/kernel"] == 0) == pytest.approx(0.8, abs=0.01)
    assert all(type(l).__module__.startswith("keras.") for l in small.layers)


@needs
@pytest.mark.parametrize("step, seed", [(("distill", 2.0), None), (("prune", 0.5), None),
                                        (("prune", 0.5), 3)], ids=["distill", "prune", "prune-seed-3"])
def test_the_callers_random_state_is_left_alone(trained_mlp, digits, monkeypatch, step, seed):
    # The distill step once called keras.utils.set_random_seed(0), and every fine-tuning
    # reseeded with 0: whatever the caller had seeded was overwritten.
    calls = []
    real = keras.utils.set_random_seed
    monkeypatch.setattr(keras.utils, "set_random_seed", lambda s: (calls.append(s), real(s)))
    pipeline.compress(trained_mlp, digits, [step], fine_tune_epochs=1, seed=seed)
    assert calls == ([] if seed is None else [seed])


@needs
def test_compression_without_fine_tuning_needs_no_data(trained_mlp):
    small, report = pipeline.compress(trained_mlp, None, [("prune", 0.5), ("cluster", 8)],
                                      fine_tune_epochs=0)
    assert [r["accuracy"] for r in report.rows] == [None, None, None]
    assert "-" in str(report) and report.rows[-1]["cnl_bytes"] < report.rows[0]["cnl_bytes"]
    with pytest.raises(ValueError, match="fine-tuning needs data"):
        pipeline.compress(trained_mlp, None, [("prune", 0.5)], fine_tune_epochs=1)
    with pytest.raises(ValueError, match="the distill step needs data"):
        pipeline.compress(trained_mlp, None, [("distill", 2.0)], fine_tune_epochs=0)


@pytest.mark.parametrize("steps, error, match", [
    ("prune", TypeError, "list of"),
    ([("shrink", 0.5)], ValueError, "steps\\[0\\] name"),
    ([("cluster", 8), ("prune", 0.5)], ValueError, "must be the last step"),
    ([("prune", {"nope": 0.5})], ValueError, "no layer named 'nope'"),
    ([("prune", 0.5, 1)], TypeError, "pair"),
    ([("factorize", 3)], ValueError, "factorize step needs a dict"),
    ([("prune_neurons", "half")], TypeError, "prune_neurons step needs a number, got 'half'"),
    ([("merge", None)], TypeError, "merge step needs a number, got None"),
    ([("distill", "hot")], TypeError, "distill step needs a number, got 'hot'"),
], ids=["not-a-list", "unknown-step", "after-cluster", "unknown-layer", "triple", "factorize-arg",
        "prune_neurons-str", "merge-none", "distill-str"])
def test_bad_steps(trained_mlp, digits, steps, error, match):
    with pytest.raises(error, match=match):
        pipeline.compress(trained_mlp, digits, steps, fine_tune_epochs=0)


def test_bad_arguments(trained_mlp, digits):
    with pytest.raises(TypeError, match="data must be"):
        pipeline.compress(trained_mlp, (digits.x_train, digits.y_train), [])
    with pytest.raises(ValueError, match="seed must be >= 0"):
        pipeline.compress(trained_mlp, digits, [], seed=-1)
    with pytest.raises(ValueError, match="fine_tune_epochs"):
        pipeline.compress(trained_mlp, digits, [], fine_tune_epochs=-1)
    for wd in (-1, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
            pipeline.compress(trained_mlp, digits, [], weight_decay=wd)
    with pytest.raises(TypeError, match="keras.Model"):
        pipeline.compress("model", digits, [])
    with pytest.raises(ValueError, match="fc_bits"):
        pipeline.deep_compression(trained_mlp, digits, fc_bits=0)
    for lr in (-1e-3, 0.0, float("nan")):
        with pytest.raises(ValueError, match="learning_rate must be"):
            pipeline.compress(trained_mlp, digits, [], learning_rate=lr)
    with pytest.raises(ValueError, match=r"sparsity\['fc1'\] must be in \[0, 1\)"):
        pipeline.deep_compression(trained_mlp, digits, sparsity={"fc1": 1.5})
    with pytest.raises(TypeError, match=r"sparsity\['fc1'\] must be a number"):
        pipeline.deep_compression(trained_mlp, digits, sparsity={"fc1": "0.9"})
    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="no Dense or Conv2D"):
        pipeline.deep_compression(keras.Model(inputs, keras.layers.ReLU()(inputs)), digits)


def test_result_is_uncompiled_even_when_the_input_was_compiled(trained_mlp, digits):
    assert trained_mlp.optimizer is not None
    small, _ = pipeline.compress(trained_mlp, digits, [], fine_tune_epochs=0)
    assert small is not trained_mlp
    assert getattr(small, "optimizer", None) is None  # no optimizer state is saved with it


@needs
def test_input_with_transform_layers_is_made_plain_first(trained_mlp, digits):
    import compressnet_lite as cnl

    wrapped = cnl.pruning.prune(trained_mlp, 0.5)
    small, report = pipeline.compress(wrapped, digits, [("cluster", 8)], fine_tune_epochs=0)
    assert report.rows[0]["nonzero"] < 0.6 * metrics.count_params(trained_mlp)
    assert all(type(l).__module__.startswith("keras.") for l in small.layers)
    assert np.mean(_kernels(small)["fc1/kernel"] == 0) >= 0.5
