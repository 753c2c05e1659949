import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import compressnet_lite as cnl
from compressnet_lite import distillation as dist

T_LOGITS = [[2.0, 1.0, 0.1]]
S_LOGITS = [[0.5, 1.5, 0.0]]


def _kl(p, q):
    return float(np.sum(p * np.log(p / q)))


def _softmax(z):
    e = np.exp(np.asarray(z, float) - np.max(z))
    return e / e.sum()


# ----------------------------------------------------------------------------- array math

def test_soften_hand_computed():
    e = np.exp([2.0, 1.0, 0.1])
    np.testing.assert_allclose(dist.soften(T_LOGITS, 1.0)[0], e / e.sum())
    e4 = np.exp(np.array([2.0, 1.0, 0.1]) / 4)
    np.testing.assert_allclose(dist.soften(T_LOGITS, 4.0)[0], e4 / e4.sum())


def test_soften_gets_flatter_with_temperature_and_ignores_shifts():
    z = np.array([[5.0, 1.0, -2.0, 0.0]])
    entropies = [-(p * np.log(p)).sum() for p in (dist.soften(z, t)[0] for t in (1, 2, 4, 8, 20, 1e6))]
    assert np.all(np.diff(entropies) > 0)
    np.testing.assert_allclose(dist.soften(z, 1e6)[0], np.full(4, 0.25), atol=1e-5)
    np.testing.assert_allclose(dist.soften(z + 100.0, 3.0), dist.soften(z, 3.0))
    assert np.isfinite(dist.soften([[1000.0, -1000.0]], 1.0)).all()  # no overflow


def test_kd_loss_hand_computed():
    # KL(softmax(t/4) || softmax(s/4)) * 16, written out by hand
    p = _softmax(np.array(T_LOGITS[0]) / 4)
    q = _softmax(np.array(S_LOGITS[0]) / 4)
    assert round(16 * _kl(p, q), 4) == 0.3842
    assert dist.kd_loss(T_LOGITS, S_LOGITS, 4.0) == pytest.approx(16 * _kl(p, q), rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0, 20.0], ids=lambda t: f"T{t:g}")
def test_kd_loss_is_kl_times_t_squared(temperature):
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
    kl = np.mean([_kl(_softmax(a / temperature), _softmax(b / temperature)) for a, b in zip(t, s)])
    assert dist.kd_loss(t, s, temperature) == pytest.approx(temperature**2 * kl, rel=1e-10)


def test_kd_loss_zero_iff_same_distribution():
    t = np.array([[3.0, -1.0, 0.5]])
    assert dist.kd_loss(t, t, 4.0) == pytest.approx(0.0, abs=1e-12)
    assert dist.kd_loss(t, t + 7.0, 4.0) == pytest.approx(0.0, abs=1e-12)  # a shift changes nothing
    assert dist.kd_loss(t, t[:, ::-1], 4.0) > 0


def test_logit_matching_loss_hand_computed():
    assert dist.logit_matching_loss(T_LOGITS, S_LOGITS) == pytest.approx((1.5**2 + 0.5**2 + 0.1**2) / 3)


def test_high_temperature_kd_becomes_logit_matching():
    # Hinton et al. 2015, eq. 4: for zero-mean logits and large T, KL*T^2 -> mean((s-t)^2)/2
    rng = np.random.default_rng(2)
    t, s = rng.normal(size=(4, 10)), rng.normal(size=(4, 10))
    t, s = t - t.mean(1, keepdims=True), s - s.mean(1, keepdims=True)
    assert dist.kd_loss(t, s, 1000.0) == pytest.approx(dist.logit_matching_loss(t, s) / 2, rel=1e-3)


@pytest.mark.backend("tensorflow", reason="the test differentiates with tf.GradientTape itself")
def test_gradient_at_high_temperature_matches_hinton_eq4():
    rng = np.random.default_rng(3)
    batch, n, temperature = 3, 10, 1000.0
    t = rng.normal(size=(batch, n))
    s = rng.normal(size=(batch, n))
    t, s = t - t.mean(1, keepdims=True), s - s.mean(1, keepdims=True)
    s_var = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = dist.kd_loss_ops(tf.constant(t), s_var, temperature) / temperature**2  # plain KL
    grad = tape.gradient(loss, s_var).numpy()
    expected = (s - t) / (n * temperature**2) / batch  # eq. 4, batch mean
    np.testing.assert_allclose(grad, expected, rtol=1e-2, atol=1e-12)
    # with the T^2 factor the gradient does not shrink as T grows
    with tf.GradientTape() as tape:
        loss = dist.kd_loss_ops(tf.constant(t), s_var, temperature)
    np.testing.assert_allclose(tape.gradient(loss, s_var).numpy(), (s - t) / n / batch, rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0], ids=["small", "medium", "large-logits"])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0], ids=lambda t: f"T{t:g}")
def test_numpy_and_keras_ops_agree(scale, temperature):
    rng = np.random.default_rng(4)
    t, s = rng.normal(size=(6, 10)) * scale, rng.normal(size=(6, 10)) * scale  # float64: exact sums
    if keras.backend.backend() == "jax" and scale < 1 and temperature >= 20:
        pytest.skip("JAX computes in float32 (x64 off): the KL of two nearly equal softened "
                    "distributions loses about 0.4 % to round-off at small logits and high T")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dist.soften_ops(t, temperature)),
                               dist.soften(t, temperature), rtol=1e-4, atol=1e-6)
    assert float(dist.kd_loss_ops(t, s, temperature)) == pytest.approx(
        dist.kd_loss(t, s, temperature), rel=1e-4, abs=1e-5)
    assert float(dist.logit_matching_loss_ops(t, s)) == pytest.approx(
        dist.logit_matching_loss(t, s), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0], ids=lambda t: f"T{t:g}")
def test_matches_keras_logits_distillation_with_kl_instance(temperature):
    rng = np.random.default_rng(5)
    t = rng.normal(size=(8, 10)).astype("float32") * 2
    s = rng.normal(size=(8, 10)).astype("float32") * 2
    keras_loss = keras.distillation.LogitsDistillation(temperature, loss=keras.losses.KLDivergence())
    assert float(keras_loss.compute_loss(t, s)) == pytest.approx(dist.kd_loss(t, s, temperature), rel=1e-4)
    ours = dist.KDLoss(temperature).compute_loss(t, s)
    assert float(ours) == pytest.approx(dist.kd_loss(t, s, temperature), rel=1e-4)


def test_keras_default_logits_distillation_trap():
    """Keras 3.15's LogitsDistillation(loss="kl_divergence") skips the softmax: 0.9025, not 0.3842."""
    t, s = np.array(T_LOGITS, "float32"), np.array(S_LOGITS, "float32")
    default = float(keras.distillation.LogitsDistillation(temperature=4.0).compute_loss(t, s))
    correct = float(keras.distillation.LogitsDistillation(
        temperature=4.0, loss=keras.losses.KLDivergence()).compute_loss(t, s))
    assert round(correct, 4) == round(dist.kd_loss(t, s, 4.0), 4) == 0.3842
    if keras.__version__ == "3.15.1":
        assert round(default, 4) == 0.9025  # KL of the scaled logits themselves, no T^2
    assert abs(default - correct) > 0.1 or keras.__version__ != "3.15.1"


def test_distiller_never_uses_the_default_path(digits_teacher):
    student = cnl.models.mlp(64, (8,), logits=True)
    d = dist.Distiller(student, digits_teacher, temperature=4.0)
    (loss,) = d.distillation_losses
    assert isinstance(loss, dist.KDLoss)
    t, s = np.array(T_LOGITS, "float32"), np.array(S_LOGITS, "float32")
    assert float(loss.compute_loss(t, s)) == pytest.approx(0.3842, abs=1e-4)
    mse = dist.Distiller(student, digits_teacher, loss="mse_logits").distillation_losses[0]
    assert float(mse.compute_loss(t, s)) == pytest.approx(dist.logit_matching_loss(t, s), rel=1e-5)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: dist.soften(T_LOGITS, 0.0), ValueError, "temperature"),
    (lambda: dist.soften(T_LOGITS, -1), ValueError, "temperature"),
    (lambda: dist.soften(T_LOGITS, float("inf")), ValueError, "temperature"),
    (lambda: dist.soften(T_LOGITS, "4"), TypeError, "temperature"),
    (lambda: dist.kd_loss(T_LOGITS, [[1.0, 2.0]], 4.0), ValueError, "same shape"),
    (lambda: dist.kd_loss([1.0, 2.0], [1.0, 2.0], 4.0), ValueError, "teacher_logits"),
    (lambda: dist.kd_loss(T_LOGITS, [[np.nan, 1.0, 0.0]], 4.0), ValueError, "student_logits"),
    (lambda: dist.logit_matching_loss(T_LOGITS, [[1.0]]), ValueError, "same shape"),
    (lambda: dist.KDLoss(0.0), ValueError, "temperature"),
    (lambda: dist.SoftTargetLoss(-2.0), ValueError, "temperature"),
], ids=["T-zero", "T-negative", "T-inf", "T-string", "shape-mismatch", "1d-logits", "nan",
        "mse-shape", "kdloss-T", "softtarget-T"])
def test_array_math_rejects_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- Keras glue

@pytest.fixture(scope="module")
def digits_teacher(digits):
    """A small trained teacher ending in softmax (the usual case for a deployed model)."""
    keras.utils.set_random_seed(0)
    return cnl.models.train(cnl.models.mlp(64, (128,), name="teacher"), digits, epochs=6)


def _ends_softmax_layer():
    inp = keras.Input((64,))
    x = keras.layers.Dense(16, activation="relu")(inp)
    x = keras.layers.Dense(10, name="scores")(x)
    return keras.Model(inp, keras.layers.Softmax()(x))


def _ends_activation_layer():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, name="scores"),
                             keras.layers.Activation("softmax")])


@pytest.mark.parametrize("build", [
    lambda: cnl.models.mlp(64, (16,), logits=False),
    _ends_softmax_layer,
    _ends_activation_layer,
], ids=["dense-softmax", "softmax-layer", "activation-layer"])
def test_logits_model_reads_logits_before_the_softmax(build):
    keras.utils.set_random_seed(0)
    model = build()
    view = dist.logits_model(model)
    assert view is not model
    x = np.random.default_rng(0).random((5, 64)).astype("float32")
    logits = view.predict(x, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-7)
    assert not np.allclose(logits.sum(1), 1.0)  # real logits, not probabilities
    assert {id(v) for v in view.trainable_variables} <= {id(v) for v in model.trainable_variables}


def test_logits_model_returns_a_logits_model_unchanged():
    model = cnl.models.mlp(64, (16,), logits=True)
    assert dist.logits_model(model) is model
    linear = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10), keras.layers.Activation("linear")])
    assert dist.logits_model(linear) is linear


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return self.dense(x)


def _sigmoid_model():
    inp = keras.Input((64,))
    return keras.Model(inp, keras.layers.Dense(10, activation="sigmoid")(inp))


def _relu_layer_model():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10), keras.layers.ReLU()])


def _two_outputs():
    inp = keras.Input((64,))
    return keras.Model(inp, [keras.layers.Dense(10)(inp), keras.layers.Dense(10)(inp)])


def _subclassed():
    m = _Subclassed()
    m(np.zeros((1, 64), "float32"))
    return m


@pytest.mark.parametrize("build, exc, match", [
    (_sigmoid_model, ValueError, "sigmoid"),
    (_relu_layer_model, ValueError, "must end in logits"),
    (_two_outputs, ValueError, "one output"),
    (_subclassed, ValueError, "functional or Sequential"),
    (lambda: "model", TypeError, "keras.Model"),
], ids=["sigmoid", "relu-layer", "two-outputs", "subclassed", "not-a-model"])
def test_logits_model_errors(build, exc, match):
    with pytest.raises(exc, match=match):
        dist.logits_model(build())


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=-4.0), ValueError, "temperature"),
    (dict(alpha=-0.1), ValueError, "alpha"),
    (dict(alpha=1.5), ValueError, "alpha"),
    (dict(alpha="0.5"), TypeError, "alpha"),
    (dict(loss="kl_divergence"), ValueError, "loss"),
    (dict(student=lambda: cnl.models.mlp(64, (8,), num_classes=5)), ValueError, "output shapes differ"),
    (dict(student=lambda: cnl.models.mlp(32, (8,))), ValueError, "input shapes differ"),
    (dict(student="student"), TypeError, "student"),
    (dict(student=_sigmoid_model), ValueError, "student must end in logits"),
    (dict(student="teacher"), ValueError, "different models"),
], ids=["T-zero", "T-negative", "alpha-low", "alpha-high", "alpha-str", "unknown-loss",
        "output-shape", "input-shape", "student-not-model", "student-sigmoid", "student-is-teacher"])
def test_distiller_rejects_bad_arguments(digits_teacher, kwargs, exc, match):
    kwargs = dict(kwargs)
    student = kwargs.pop("student", lambda: cnl.models.mlp(64, (8,)))
    student = digits_teacher if student == "teacher" else student() if callable(student) else student
    with pytest.raises(exc, match=match):
        dist.Distiller(student, digits_teacher, **kwargs)


def test_distiller_compile_rejects_a_loss(digits_teacher):
    d = dist.Distiller(cnl.models.mlp(64, (8,)), digits_teacher)
    with pytest.raises(ValueError, match="loss"):
        d.compile(optimizer="adam", loss="mse")


@pytest.mark.parametrize("loss, temperature, alpha", [("kl", 4.0, 0.1), ("mse_logits", 1.0, 0.5)],
                         ids=["kl-T4", "mse-logits"])
def test_distiller_trains_student_and_leaves_teacher_alone(digits, digits_teacher, loss, temperature, alpha):
    before = [w.copy() for w in digits_teacher.get_weights()]
    trainable = [l.trainable for l in digits_teacher.layers]
    keras.utils.set_random_seed(0)
    student = cnl.models.seed_mlp()  # ends in softmax
    d = dist.Distiller(student, digits_teacher, temperature=temperature, alpha=alpha, loss=loss)
    d.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    hist = d.fit(digits.x_train, digits.y_train, epochs=4, batch_size=64, verbose=0).history
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["distillation_loss"][-1] < hist["distillation_loss"][0]
    assert d.student is student and not isinstance(student, keras.distillation.Distiller)
    acc = cnl.metrics.accuracy(d.student, digits.x_test, digits.y_test)
    assert acc > 0.6  # chance is 0.1
    probs = d.student.predict(digits.x_test[:5], verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)  # still ends in its softmax
    result = d.evaluate(digits.x_test, digits.y_test, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(acc, abs=1e-6)
    for a, b in zip(before, digits_teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [l.trainable for l in digits_teacher.layers] == trainable and digits_teacher.trainable


def test_alpha_one_is_plain_training(digits, digits_teacher):
    def run(distill):
        keras.utils.set_random_seed(3)
        student = cnl.models.mlp(64, (16,), logits=True)
        if distill:
            d = dist.Distiller(student, digits_teacher, alpha=1.0)
            d.compile(optimizer=keras.optimizers.SGD(0.1))
            d.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, shuffle=False, verbose=0)
        else:
            student.compile(optimizer=keras.optimizers.SGD(0.1),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            student.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, shuffle=False, verbose=0)
        return student.get_weights()

    for a, b in zip(run(True), run(False)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_student_keras_round_trip(digits, digits_teacher, tmp_path):
    keras.utils.set_random_seed(0)
    student = cnl.models.seed_mlp()
    d = dist.Distiller(student, digits_teacher)
    d.compile(optimizer="adam")
    d.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    path = tmp_path / "student.keras"
    d.student.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True, no custom objects
    np.testing.assert_allclose(loaded.predict(digits.x_test, verbose=0),
                               student.predict(digits.x_test, verbose=0), rtol=1e-6)


def test_distiller_is_deterministic(digits, digits_teacher):
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        student = cnl.models.mlp(64, (16,), logits=True)
        d = dist.Distiller(student, digits_teacher, temperature=2.0)
        d.compile(optimizer="adam")
        d.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
        runs.append(student.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_teacher_targets_and_offline_distillation(digits, digits_teacher):
    targets = dist.teacher_targets(digits_teacher, digits.x_train, temperature=4.0)
    assert targets.shape == (len(digits.x_train), 10) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-5)
    logits = dist.logits_model(digits_teacher).predict(digits.x_train, verbose=0)
    np.testing.assert_allclose(targets, dist.soften(logits, 4.0), rtol=1e-5, atol=1e-7)
    # softer than T=1, same ranking
    sharp = dist.teacher_targets(digits_teacher, digits.x_train, temperature=1.0)
    assert targets.max(1).mean() < sharp.max(1).mean()
    np.testing.assert_array_equal(targets.argmax(1), sharp.argmax(1))
    # from a tf.data input pipeline too
    ds_x = tf.data.Dataset.from_tensor_slices((digits.x_train, digits.y_train)).batch(100)
    np.testing.assert_allclose(dist.teacher_targets(digits_teacher, ds_x, 4.0), targets, rtol=1e-5, atol=1e-7)
    # SoftTargetLoss on cached targets equals kd_loss on the logits
    rng = np.random.default_rng(0)
    s = rng.normal(size=logits[:7].shape).astype("float32")
    assert float(dist.SoftTargetLoss(4.0)(targets[:7], s)) == pytest.approx(
        dist.kd_loss(logits[:7], s, 4.0), rel=1e-4)
    # and trains a student through a tf.data pipeline
    keras.utils.set_random_seed(0)
    student = cnl.models.mlp(64, (32,), logits=True)
    student.compile(optimizer=keras.optimizers.Adam(3e-3), loss=dist.SoftTargetLoss(4.0))
    ds = tf.data.Dataset.from_tensor_slices((digits.x_train, targets)).shuffle(2048, seed=0).batch(64)
    hist = student.fit(ds, epochs=4, verbose=0).history
    assert hist["loss"][-1] < hist["loss"][0]
    assert cnl.metrics.accuracy(student, digits.x_test, digits.y_test) > 0.6


def test_soft_target_loss_round_trip(tmp_path):
    model = cnl.models.mlp(64, (4,), logits=True)
    model.compile(optimizer="adam", loss=dist.SoftTargetLoss(3.0))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, dist.SoftTargetLoss) and loaded.loss.temperature == 3.0


def test_teacher_targets_errors(digits_teacher):
    with pytest.raises(ValueError, match="temperature"):
        dist.teacher_targets(digits_teacher, np.zeros((2, 64)), 0.0)
    with pytest.raises(ValueError, match="x must not be empty"):
        dist.teacher_targets(digits_teacher, np.zeros((0, 64)), 4.0)
    with pytest.raises(ValueError, match="teacher must end in logits"):
        dist.teacher_targets(_sigmoid_model(), np.zeros((2, 64)), 4.0)


MIRRORED = textwrap.dedent("""
    import keras, numpy as np
    import compressnet_lite as cnl
    from compressnet_lite.distillation import Distiller
    data = cnl.data.load_digits()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        teacher = cnl.models.mlp(64, (64,), name="teacher")
        cnl.models.compile_model(teacher)
    teacher.fit(data.x_train, data.y_train, epochs=3, verbose=0)
    with strategy.scope():
        student = cnl.models.seed_mlp()
        d = Distiller(student, teacher, temperature=4.0, alpha=0.1)
        d.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    hist = d.fit(data.x_train, data.y_train, epochs=3, batch_size=64, verbose=0).history
    assert np.isfinite(hist["loss"]).all() and hist["loss"][-1] < hist["loss"][0], hist
    # the reported loss is the true batch mean, not the per-replica share
    assert abs(hist["total_loss"][-1] - hist["loss"][-1]) < 0.05 * hist["loss"][-1], hist
    acc = cnl.metrics.accuracy(student, data.x_test, data.y_test)
    assert acc > 0.6, acc
    print("accuracy", round(acc, 3), "OK")
""")


def test_distiller_in_mirrored_strategy_with_two_cpus(run_on_two_cpus):
    run_on_two_cpus(MIRRORED)
