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


# --------------------------------------------------------------------------- stratified_subset


def test_stratified_subset_keeps_class_shares_and_is_deterministic():
    y = np.repeat(np.arange(10), np.arange(10, 110, 10))  # 10, 20, ..., 100 of each class
    idx = data.stratified_subset(y, 110)
    assert len(idx) == 110 and len(np.unique(idx)) == 110
    assert np.all(np.diff(idx) > 0)  # sorted: the subset keeps the original order
    np.testing.assert_array_equal(np.bincount(y[idx]), np.arange(2, 22, 2))
    np.testing.assert_array_equal(idx, data.stratified_subset(y, 110))
    assert not np.array_equal(idx, data.stratified_subset(y, 110, seed=1))


def test_stratified_subset_shares_add_up_with_remainders():
    y = np.array([0] * 7 + [1] * 7 + [2] * 7)
    counts = np.bincount(y[data.stratified_subset(y, 10)], minlength=3)
    assert counts.sum() == 10 and counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(data.stratified_subset(y, 21), np.arange(21))


@pytest.mark.parametrize("labels, size, seed, exc, match", [
    (np.zeros((2, 2), int), 1, 0, ValueError, "labels"),
    (np.zeros(0, int), 1, 0, ValueError, "labels"),
    (np.zeros(4), 1, 0, TypeError, "labels"),
    (np.zeros(4, int), 0, 0, ValueError, "size"),
    (np.zeros(4, int), 5, 0, ValueError, "size"),
    (np.zeros(4, int), 2.0, 0, TypeError, "size"),
    (np.zeros(4, int), 2, -1, ValueError, "seed"),
], ids=["2d", "empty", "float-labels", "size-zero", "size-too-big", "size-float", "seed-neg"])
def test_stratified_subset_rejects_bad_arguments(labels, size, seed, exc, match):
    with pytest.raises(exc, match=match):
        data.stratified_subset(labels, size, seed=seed)


# --------------------------------------------------------------------------- parse_spec / load


@pytest.mark.parametrize("spec, expected", [
    ("digits", ("digits", None)),
    ("mnist:/data/mnist.npz", ("mnist", "/data/mnist.npz")),
    ("npz:rel/x.npz", ("npz", "rel/x.npz")),
    ("npz:C:/odd:name.npz", ("npz", "C:/odd:name.npz")),
], ids=["digits", "mnist", "npz", "colon-in-path"])
def test_parse_spec(spec, expected):
    assert data.parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["cifar", "mnist", "mnist:", "npz:", "Digits", "digits:x", ""],
                         ids=["unknown", "no-path", "empty-path", "npz-empty", "case", "digits-path",
                              "empty"])
def test_parse_spec_rejects_bad_spec(spec):
    with pytest.raises(ValueError, match="spec must be 'digits', 'mnist:PATH' or 'npz:PATH'"):
        data.parse_spec(spec)


def test_parse_spec_rejects_non_string():
    with pytest.raises(TypeError, match="spec must be a string"):
        data.parse_spec(3)


def test_parse_spec_reads_environment(monkeypatch):
    monkeypatch.delenv("CNL_DATA", raising=False)
    assert data.parse_spec() == ("digits", None)
    monkeypatch.setenv("CNL_DATA", "  ")
    assert data.parse_spec() == ("digits", None)
    monkeypatch.setenv("CNL_DATA", "mnist:/x/mnist.npz")
    assert data.parse_spec() == ("mnist", "/x/mnist.npz")
    monkeypatch.setenv("CNL_DATA", "imagenet")
    with pytest.raises(ValueError, match="environment variable CNL_DATA"):
        data.parse_spec()
    assert data.parse_spec("digits") == ("digits", None)  # an explicit spec wins


def test_load_digits_spec_matches_load_digits(monkeypatch):
    monkeypatch.delenv("CNL_DATA", raising=False)
    d, ref = data.load(), data.load_digits()
    np.testing.assert_array_equal(d.x_train, ref.x_train)
    np.testing.assert_array_equal(d.y_test, ref.y_test)
    assert data.load("digits", image=True).input_shape == (8, 8, 1)


def test_load_mnist_spec_from_environment_draws_stratified_subset(tmp_path, monkeypatch):
    path = tmp_path / "mnist.npz"
    n_train, n_test = data.MNIST_TRAIN_SUBSET + 500, data.MNIST_TEST_SUBSET + 300
    _write_mnist(path, n_train=n_train, n_test=n_test)
    monkeypatch.setenv("CNL_DATA", f"mnist:{path}")
    d = data.load(image=True)
    assert d.x_train.shape == (data.MNIST_TRAIN_SUBSET, 28, 28, 1)
    assert d.x_test.shape == (data.MNIST_TEST_SUBSET, 28, 28, 1)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    with np.load(path) as raw:
        idx = data.stratified_subset(raw["y_train"], data.MNIST_TRAIN_SUBSET)
        np.testing.assert_allclose(d.x_train[..., 0], raw["x_train"][idx] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(d.y_train, raw["y_train"][idx])
        share = np.bincount(raw["y_test"], minlength=10) / n_test
    sub_share = np.bincount(d.y_test, minlength=10) / data.MNIST_TEST_SUBSET
    assert np.abs(sub_share - share).max() <= 1 / data.MNIST_TEST_SUBSET
    flat = data.load(f"mnist:{path}")  # the same images, flat, in the same order
    assert flat.x_train.shape == (data.MNIST_TRAIN_SUBSET, 784)
    np.testing.assert_array_equal(flat.x_train.reshape(d.x_train.shape), d.x_train)
    full = data.load(f"mnist:{path}", subset=False)
    assert len(full.y_train) == n_train and len(full.y_test) == n_test


def test_load_mnist_spec_smaller_than_subset_keeps_everything(tmp_path):
    path = tmp_path / "mnist.npz"
    _write_mnist(path, n_train=40, n_test=20)
    d = data.load(f"mnist:{path}")
    assert d.x_train.shape == (40, 784) and d.x_test.shape == (20, 784)


def test_load_npz_spec(tmp_path):
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(1)
    x_tr, x_te = rng.random((30, 16)), rng.random((10, 16))
    np.savez(path, x_train=x_tr, y_train=np.arange(30) % 3, x_test=x_te, y_test=np.arange(10) % 3)
    d = data.load(f"npz:{path}")  # floats used as stored, never sub-sampled
    assert d.x_train.shape == (30, 16) and d.x_test.shape == (10, 16)
    np.testing.assert_allclose(d.x_train, x_tr.astype(np.float32))
    assert d.y_train.dtype == np.int32 and d.num_classes == 3
    assert data.load(f"npz:{path}", image=True).input_shape == (4, 4, 1)
    pix = tmp_path / "pixels.npz"
    np.savez(pix, x_train=np.full((4, 3, 3, 2), 255, np.uint8), y_train=np.arange(4),
             x_test=np.zeros((2, 3, 3, 2), np.uint8), y_test=np.arange(2))
    assert data.load(f"npz:{pix}").x_train.shape == (4, 18)
    img = data.load(f"npz:{pix}", image=True)
    assert img.input_shape == (3, 3, 2) and img.x_train.max() == 1.0


def _npz(path, **arrays):
    base = dict(x_train=np.zeros((4, 6)), y_train=np.arange(4), x_test=np.zeros((2, 6)),
                y_test=np.arange(2))
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


@pytest.mark.parametrize("arrays, match", [
    (dict(y_test=None), r"missing arrays \['y_test'\]"),
    (dict(y_train=np.arange(3)), "same n"),
    (dict(y_train=np.zeros((4, 1), int)), "same n"),
    (dict(x_train=np.zeros((0, 6)), y_train=np.zeros(0, int)), "same n"),
    (dict(y_train=np.array([0.0, 1.5, 2, 3])), "integer class ids"),
    (dict(y_train=np.array([0, -1, 2, 3])), "integer class ids"),
    (dict(x_test=np.zeros((2, 5))), "differ in shape"),
    (dict(x_train=np.array([["a"] * 6] * 4)), "numeric"),
], ids=["missing-key", "length", "2d-labels", "empty", "float-labels", "negative-label",
        "shape-mismatch", "strings"])
def test_load_npz_rejects_bad_files(tmp_path, arrays, match):
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        data.load(f"npz:{path}")


def test_load_npz_image_of_non_square_vectors_says_so(tmp_path):
    path = _npz(tmp_path / "flat.npz")
    with pytest.raises(ValueError, match="image=True needs images or square vectors"):
        data.load(f"npz:{path}", image=True)


@pytest.mark.parametrize("spec, exc, match", [
    ("npz:{tmp}/missing.npz", FileNotFoundError, "data file not found"),
    ("mnist:{tmp}/missing.npz", FileNotFoundError, "MNIST file not found"),
    ("npz:{tmp}/corrupt.npz", ValueError, "not a readable .npz"),
    ("mnist:{tmp}/wrong_keys.npz", ValueError, "not a Keras mnist.npz file: missing arrays"),
    ("mnist:{tmp}/flat.npz", ValueError, r"x_train must be \(n, height, width\)"),
], ids=["npz-missing", "mnist-missing", "corrupt", "mnist-wrong-keys", "mnist-flat"])
def test_load_file_errors(tmp_path, spec, exc, match):
    (tmp_path / "corrupt.npz").write_bytes(b"PK but not really")
    np.savez(tmp_path / "wrong_keys.npz", images=np.zeros((2, 28, 28), np.uint8))
    _npz(tmp_path / "flat.npz")
    with pytest.raises(exc, match=match):
        data.load(spec.format(tmp=tmp_path))


@pytest.mark.parametrize("kwargs, match", [(dict(image=1), "image"), (dict(subset="no"), "subset")],
                         ids=["image-int", "subset-str"])
def test_load_rejects_non_bool_flags(kwargs, match):
    with pytest.raises(TypeError, match=match):
        data.load("digits", **kwargs)


def test_write_mnist_like_is_a_keras_mnist_file(tmp_path):
    path = data.write_mnist_like(tmp_path / "like.npz", copies=2)
    with np.load(path) as raw:
        assert raw["x_train"].dtype == np.uint8 and raw["x_train"].shape == (2 * 1347, 28, 28)
        assert raw["y_train"].dtype == np.uint8 and raw["x_test"].shape == (2 * 450, 28, 28)
        assert raw["x_train"].max() == 255
        # centred 20x20 digits: the first copy leaves a 4-pixel empty border
        assert raw["x_train"][:1347, :4].max() == 0 and raw["x_train"][:1347, :, 24:].max() == 0
        # the shifted copy holds the same digits, moved
        assert not np.array_equal(raw["x_train"][:1347], raw["x_train"][1347:])
        np.testing.assert_array_equal(raw["y_train"][:1347], raw["y_train"][1347:])
    digits = data.load_digits()
    d = data.load(f"mnist:{path}")
    np.testing.assert_array_equal(d.y_test[:450], digits.y_test)
    assert d.input_shape == (784,)


@pytest.mark.parametrize("kwargs, exc", [(dict(copies=0), ValueError), (dict(copies=1.5), TypeError),
                                         (dict(seed=-1), ValueError)],
                         ids=["copies-zero", "copies-float", "seed-negative"])
def test_write_mnist_like_rejects_bad_arguments(tmp_path, kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs))):
        data.write_mnist_like(tmp_path / "x.npz", **kwargs)
