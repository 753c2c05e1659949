import keras
import numpy as np
import pytest

from compressnet_lite import _checks, models


@pytest.mark.parametrize("value, kwargs, ok", [
    (0.0, {}, True), (0.99, {}, True), (1.0, {}, False), (1.0, {"high_inclusive": True}, True),
    (-0.01, {}, False), (float("nan"), {}, False)], ids=["zero", "high", "one", "one-incl", "neg", "nan"])
def test_check_fraction(value, kwargs, ok):
    if ok:
        assert _checks.check_fraction(value, "sparsity", **kwargs) == value
    else:
        with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1"):
            _checks.check_fraction(value, "sparsity", **kwargs)


def test_check_fraction_type():
    with pytest.raises(TypeError, match="sparsity must be a number"):
        _checks.check_fraction(True, "sparsity")


def test_check_positive_int_and_choice():
    assert _checks.check_positive_int(np.int64(3), "bits", maximum=16) == 3
    with pytest.raises(ValueError, match="bits must be in 1..16, got 17"):
        _checks.check_positive_int(17, "bits", maximum=16)
    with pytest.raises(TypeError, match="bits must be an integer"):
        _checks.check_positive_int(2.0, "bits")
    assert _checks.check_choice("layer", "scope", ("layer", "global")) == "layer"
    with pytest.raises(ValueError, match="scope must be one of 'layer', 'global', got 'net'"):
        _checks.check_choice("net", "scope", ("layer", "global"))


def test_check_array():
    assert _checks.check_array([[1, 2]], "w", ndim=2).shape == (1, 2)
    with pytest.raises(ValueError, match="w must have 2 dimensions"):
        _checks.check_array([1, 2], "w", ndim=2)
    with pytest.raises(ValueError, match="NaN"):
        _checks.check_array([1.0, np.inf], "w")
    with pytest.raises(ValueError, match="empty"):
        _checks.check_array([], "w")
    with pytest.raises(TypeError, match="w must be an array of numbers"):
        _checks.check_array(["a"], "w")
    with pytest.raises(TypeError, match="w must be an array of numbers"):
        _checks.check_array([np.zeros(2), np.zeros(3)], "w")  # ragged, as model.get_weights()


def test_check_model_and_layer():
    m = models.seed_mlp()
    assert _checks.check_layer(m, "fc2") is m.get_layer("fc2")
    assert _checks.check_layer(m, m.get_layer("out")).name == "out"
    with pytest.raises(ValueError, match="layer 'fc9' is not in model 'seed_mlp'; its layers are"):
        _checks.check_layer(m, "fc9")
    with pytest.raises(ValueError, match="is not a layer of model"):
        _checks.check_layer(m, keras.layers.Dense(2, name="stranger"))
    with pytest.raises(TypeError, match="layer must be a layer name"):
        _checks.check_layer(m, 3)
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        _checks.check_model(np.zeros(3))


@pytest.mark.parametrize("value, kwargs, error, match", [
    ("0.5", {}, TypeError, "threshold must be a number, got str"),
    (None, {}, TypeError, "threshold must be a number, got NoneType"),
    (True, {}, TypeError, "threshold must be a number, got bool"),
    (float("nan"), {}, ValueError, "threshold must be a finite number, got nan"),
    (float("inf"), {"minimum": 0}, ValueError, "threshold must be a finite number >= 0, got inf"),
    (-1.0, {"minimum": 0}, ValueError, "threshold must be a finite number >= 0, got -1.0"),
    (0.0, {"minimum": 0, "min_inclusive": False}, ValueError, "must be a finite number > 0, got 0.0"),
    (2.0, {"minimum": 0, "maximum": 1}, ValueError, "must be a finite number >= 0 and <= 1, got 2.0"),
    (1.0, {"maximum": 1, "max_inclusive": False}, ValueError, "must be a finite number < 1, got 1.0"),
], ids=["str", "none", "bool", "nan", "inf", "below", "strict-low", "above", "strict-high"])
def test_check_real_errors(value, kwargs, error, match):
    with pytest.raises(error, match=match):
        _checks.check_real(value, "threshold", **kwargs)


def test_check_real_and_bool_accept():
    assert _checks.check_real(np.float32(0.25), "x", minimum=0, maximum=1) == 0.25
    assert _checks.check_real(3, "x") == 3.0 and isinstance(_checks.check_real(3, "x"), float)
    assert _checks.check_bool(np.bool_(True), "flag") is True
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="flag must be True or False"):
            _checks.check_bool(bad, "flag")
