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
