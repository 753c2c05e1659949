import numpy as np
import pytest

from compressnet_lite import data


def test_load_digits_split_scaled_stratified():
    d = data.load_digits()
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0 and d.x_train.max() == 1.0
    # stratified: every class's share in the test split is within one example of its share overall
    all_y = np.concatenate([d.y_train, d.y_test])
    for c in range(10):
        expected = np.mean(all_y == c) * len(d.y_test)
        assert abs(np.sum(d.y_test == c) - expected) <= 1.0
    assert d.num_classes == 10 and d.input_shape == (64,)


def test_load_digits_is_deterministic_and_seed_changes_split():
    a, b, c = data.load_digits(seed=0), data.load_digits(seed=0), data.load_digits(seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_train, c.y_train)


def test_load_digits_image_shape():
    d = data.load_digits(image=True, test_size=0.5)
    assert d.x_train.shape[1:] == (8, 8, 1) and d.input_shape == (8, 8, 1)
    assert len(d.x_train) + len(d.x_test) == 1797


@pytest.mark.parametrize("bad, exc", [(0.0, ValueError), (1.0, ValueError), (-0.1, ValueError),
                                      (0.001, ValueError), ("0.2", TypeError)],
                         ids=["zero", "one", "negative", "too-small", "string"])
def test_load_digits_rejects_bad_test_size(bad, exc):
    with pytest.raises(exc, match="test_size"):
        data.load_digits(test_size=bad)


def test_load_digits_rejects_bad_seed():
    with pytest.raises(TypeError, match="seed"):
        data.load_digits(seed=0.5)


def _write_mnist(path, n_train=12, n_test=5, max_value=255):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, max_value + 1, (n_train, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, n_train, dtype=np.uint8),
             x_test=rng.integers(0, max_value + 1, (n_test, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test, dtype=np.uint8))


def test_load_mnist_reads_keras_format(tmp_path):
    path = tmp_path / "mnist.npz"
    _write_mnist(path)
    d = data.load_mnist(path)
    assert d.x_train.shape == (12, 28, 28, 1) and d.x_test.shape == (5, 28, 28, 1)
    assert d.x_train.dtype == np.float32 and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    with np.load(path) as raw:
        np.testing.assert_allclose(d.x_train[..., 0], raw["x_train"] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(d.y_test, raw["y_test"])
    flat = data.load_mnist(path, flatten=True)
    assert flat.x_train.shape == (12, 784)


def test_load_mnist_uses_keras_cache(tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    _write_mnist(tmp_path / "datasets" / "mnist.npz")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert data.load_mnist().x_train.shape[0] == 12


def test_load_mnist_missing_file_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="mnist.npz") as info:
        data.load_mnist(tmp_path / "nope" / "mnist.npz")
    assert data.MNIST_URL in str(info.value) and "load_mnist(path=" in str(info.value)


def test_load_mnist_rejects_wrong_arrays(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28)), y_train=np.zeros(2))
    with pytest.raises(ValueError, match="missing arrays"):
        data.load_mnist(path)
    path2 = tmp_path / "bad_shapes.npz"
    np.savez(path2, x_train=np.zeros((2, 784)), y_train=np.zeros(2),
             x_test=np.zeros((1, 28, 28)), y_test=np.zeros(1))
    with pytest.raises(ValueError, match="x_train"):
        data.load_mnist(path2)


def test_load_mnist_rejects_corrupt_file(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.load_mnist(path)
