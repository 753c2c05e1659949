import pytest
import keras
import numpy as np

from compressnet_lite import data, notebook


def test_setup_seeds_everything_the_same_way():
    draws = []
    for _ in range(2):
        notebook.setup(seed=3)
        draws.append((np.random.rand(3), keras.ops.convert_to_numpy(keras.random.uniform((3,)))))
    np.testing.assert_array_equal(draws[0][0], draws[1][0])
    np.testing.assert_array_equal(draws[0][1], draws[1][1])
    notebook.setup(seed=4)
    assert not np.array_equal(np.random.rand(3), draws[0][0])


def test_setup_sets_print_precision():
    notebook.setup()
    assert np.get_printoptions()["precision"] == 4


def test_show_source_returns_the_function_source():
    shown = notebook.show_source(data.load_digits)
    text = getattr(shown, "data", shown)
    assert "def load_digits(" in text and "train_test_split" in text


def _sleeper(seconds):
    import time

    def call(x):
        time.sleep(seconds)
        return x
    return call


def test_time_rounds_interleaves_and_returns_one_time_per_round():
    order = []

    def recorder(name, seconds):
        sleep = _sleeper(seconds)

        def call(x):
            order.append(name)
            return sleep(x)
        return call
    times = notebook.time_rounds({"fast": recorder("fast", 0.001), "slow": recorder("slow", 0.004)},
                                 np.zeros(3), rounds=4, runs=3, warmup=0)
    assert set(times) == {"fast", "slow"} and times["fast"].shape == (4,)
    # a sleep never ends early; how late it ends depends on the machine's load, not asserted
    assert np.all(times["fast"] >= 0.001) and np.all(times["slow"] >= 0.004)
    timed = order[2 * 3:]  # after one untimed check of 3 calls per model
    firsts = [timed[r * 6] for r in range(4)]
    assert firsts == ["fast", "slow", "fast", "slow"]  # the order rotates from round to round


def test_latency_ratio_finds_the_faster_one():
    # rounds as time_rounds returns them: a load shared by both models in each round
    load = 1 + np.random.default_rng(0).random(5)
    times = {"fast": 1e-3 * load * (1 + 0.05 * np.random.default_rng(1).random(5)),
             "slow": 4e-3 * load * (1 + 0.05 * np.random.default_rng(2).random(5))}
    r = notebook.latency_ratio(times["fast"], times["slow"], names=("fast", "slow"))
    assert r.high < 1 and r.verdict == "fast faster" and r.speedup > 1.5
    assert "fast / slow latency" in str(r) and "5 rounds" in str(r)
    flipped = notebook.latency_ratio(times["slow"], times["fast"], names=("slow", "fast"))
    assert flipped.verdict == "fast faster" and flipped.low > 1


def test_latency_ratio_with_noise_only_is_indistinguishable():
    rng = np.random.default_rng(0)
    a, b = 1e-3 * (1 + 0.2 * rng.random(8)), 1e-3 * (1 + 0.2 * rng.random(8))
    r = notebook.latency_ratio(a, b)
    assert r.low < 1 < r.high and r.verdict == "indistinguishable here"


@pytest.mark.parametrize("a, b, exc, match", [
    ([1.0, 2.0], [1.0], ValueError, "same rounds"),
    ([1.0], [1.0], ValueError, "at least 2"),
    ([1.0, 0.0], [1.0, 1.0], ValueError, "positive"),
    ([1.0, np.nan], [1.0, 1.0], ValueError, "positive"),
], ids=["lengths", "one-round", "zero", "nan"])
def test_latency_ratio_rejects_bad_times(a, b, exc, match):
    with pytest.raises(exc, match=match):
        notebook.latency_ratio(a, b)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(models={}), ValueError, "models"),
    (dict(rounds=1), ValueError, "rounds"),
    (dict(runs=2), ValueError, "runs"),
    (dict(warmup=-1), ValueError, "warmup"),
], ids=["no-models", "one-round", "two-runs", "negative-warmup"])
def test_time_rounds_rejects_bad_arguments(kwargs, exc, match):
    args = dict(models={"a": _sleeper(0)}, x=np.zeros(1))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        notebook.time_rounds(args.pop("models"), args.pop("x"), **args)


def test_brief_formats_each_result_without_names():
    from compressnet_lite import stats

    d = stats.paired_difference([0.95, 0.96, 0.97], [0.90, 0.93, 0.92], names=("new", "old"))
    assert notebook.brief(d).startswith("+4.33 points [95% CI ")
    assert "3 seeds: new better" in notebook.brief(d)
    m = stats.mcnemar([1] * 10 + [0] * 5, [0] * 10 + [0] * 5, names=("a", "b"))
    assert notebook.brief(m) == "+66.67 points on 15 test images, McNemar p = 0.002: a better"
    r = notebook.latency_ratio([1.0, 1.1, 0.9, 1.0], [2.0, 2.1, 2.0, 1.9], names=("x", "y"))
    assert notebook.brief(r).startswith("0.50x the time [95% CI ") and r.verdict in notebook.brief(r)


def test_brief_rejects_other_objects():
    with pytest.raises(TypeError, match="result must be"):
        notebook.brief(0.5)


def test_report_wraps_long_results(capsys):
    from compressnet_lite import stats

    d = stats.paired_difference([0.95, 0.96, 0.97], [0.90, 0.93, 0.92],
                                names=("a long method name", "another long name"))
    notebook.report(d, "short")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 3 and all(len(line) <= 78 for line in lines)
    assert lines[1].startswith("    ") and lines[-1] == "short"
    assert " ".join(line.strip() for line in lines[:-1]) == str(d)
