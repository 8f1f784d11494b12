"""Keras model files: every method's model (a heterogeneous pair, a keras.applications branch and a user builder
among them) saves with `model.save("x.keras")` and loads with `keras.saving.load_model`: the same logits per head,
its compile state and class names back, cut by `head_model`, and one more training step runs."""

import functools
import warnings

import keras
import numpy as np
import pytest

import ffl_tf.saving  # noqa: F401  (registers ffl_tf's classes, as a user does before load_model)
from ffl_tf import methods
from ffl_tf.backbones import batch_norm, keras_apps
from ffl_tf.methods import okddip, one
from ffl_tf.model import calibration
from ffl_tf.model.distillation import DistillationModel, head_model
from ffl_tf.utils import keras_compat

CLASSES = ("ant", "bee", "cat", "dog", "eel")
# method -> (backbones, shared_stages, image size): together every method, every kind of branch.
CASES = {
    "ffl": (["resnet8", "resnet8"], 1, 16),
    "one": (["resnet8", "resnet8"], 1, 16),
    "okddip": (["resnet8"] * 3, 1, 16),
    "dml": (["resnet8", "wrn16_2"], 0, 16),  # a heterogeneous pair
    "vanilla": (["keras:MobileNetV3Small", "tests.backbones.builders:tiny_cnn"], 0, 32),
}


def batch(size: int, n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype("uint8"), rng.integers(0, len(CLASSES), n).astype("int32")


def compiled(method: str, *, eager: bool = True) -> tuple[DistillationModel, int]:
    """Method `method`'s model of CASES, compiled with distinctive settings; returns (model, image size)."""
    backbones, shared_stages, size = CASES[method]
    model = methods.get(method).build(backbones, len(CLASSES), (size, size, 3), shared_stages=shared_stages,
                                      pretrained="none")
    model.class_names = CLASSES
    declared = methods.get(method)
    model.compile(keras.optimizers.SGD(keras.optimizers.schedules.PiecewiseConstantDecay([5], [0.1, 0.01]),
                                       momentum=0.9, nesterov=True),
                  distillation_loss=declared.loss_fn(**({"temperature": 2.5} if declared.loss_settings else {})),
                  steps_per_epoch=7, rampup_epochs=3.0, weight_decay=2e-4,
                  module_weight_decay=dict.fromkeys(declared.module_weight_decay, 3e-5), run_eagerly=eager)
    return model, size


def assert_same_heads(model: keras.Model, loaded: keras.Model, images: np.ndarray) -> None:
    expected, actual = model(images, training=False), loaded(images, training=False)
    assert list(actual) == list(expected)
    for head in expected:
        np.testing.assert_allclose(actual[head], expected[head], atol=1e-6, err_msg=head)
        np.testing.assert_allclose(head_model(loaded, head)(images, training=False), expected[head], atol=1e-6,
                                   err_msg=head)


@pytest.mark.parametrize("method", ["one", "okddip", "dml", "vanilla"])
def test_every_method_and_kind_of_branch_round_trips_and_keeps_training(method, tmp_path):
    model, size = compiled(method)
    images, labels = batch(size)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded) is DistillationModel and loaded.class_names == CLASSES
    assert_same_heads(model, loaded, images)
    assert methods.loss_config(loaded.distillation_loss) == methods.loss_config(model.distillation_loss)
    assert (loaded.steps_per_epoch, loaded.rampup_epochs, loaded.weight_decay) == (7, 3.0, 2e-4)
    assert loaded.run_eagerly
    history = loaded.fit(images, labels, batch_size=len(images), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and int(loaded.optimizer.iterations.numpy()) == 1


def test_a_trained_model_resumes_with_its_optimizer_state(tmp_path):
    """After a step: the step count, the momentum and the schedule come back; the next step of the
    loaded model is the next step of the original."""
    model, size = compiled("ffl")
    images, labels = batch(size)
    model.fit(images, labels, batch_size=len(images), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert_same_heads(model, loaded, images)
    assert loaded.module_weight_decay == {"fusion": 3e-5}
    assert int(loaded.optimizer.iterations.numpy()) == 1
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.path)
    expected = model.fit(images, labels, batch_size=len(images), epochs=1, verbose=0).history
    actual = loaded.fit(images, labels, batch_size=len(images), epochs=1, verbose=0).history
    for name in ("loss", "kd_weight", "l2"):
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, err_msg=name)
    assert_same_heads(model, loaded, images)


def test_a_loss_that_cannot_be_stored_warns_and_loads_uncompiled(tmp_path):
    model = methods.get("vanilla").build(["resnet8"], 3, (8, 8, 3))
    model.compile("sgd", distillation_loss=lambda heads, labels, **kwargs: methods.loss_fn("vanilla")(
        heads, labels, **kwargs), steps_per_epoch=1, rampup_epochs=0.0, weight_decay=0.0)
    with pytest.warns(UserWarning, match="stores no compile state: compile the loaded model again"):
        model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert not loaded.compiled and loaded.class_names is None


@keras.saving.register_keras_serializable(package="tests", name="plain_cross_entropy")
def plain_cross_entropy(heads, labels, *, kd_weight, sample_weight=None):
    return methods.get("vanilla").loss(heads, labels, kd_weight=kd_weight, sample_weight=sample_weight)


def test_loss_configs_name_the_method_and_its_settings_or_a_registered_function():
    ffl = methods.loss_fn("ffl", temperature=4.0, distill_to_fused=False)
    config = methods.loss_config(ffl)
    assert config == {"method": "ffl", "settings": {"temperature": 4.0, "distill_to_fused": False,
                                                    "distill_to_branches": True}}
    rebuilt = methods.loss_from_config(config)
    assert rebuilt.func is ffl.func and rebuilt.keywords == ffl.keywords
    assert methods.loss_config(plain_cross_entropy) == {"registered": "tests>plain_cross_entropy"}
    assert methods.loss_from_config({"registered": "tests>plain_cross_entropy"}) is plain_cross_entropy
    assert methods.loss_config(functools.partial(plain_cross_entropy)) is None
    assert methods.loss_config(lambda *args, **kwargs: None) is None
    with pytest.raises(ValueError, match="register it with keras.saving.register_keras_serializable"):
        methods.loss_from_config({"registered": "tests>nowhere"})


def test_classes_are_registered_under_stable_explicit_names():
    """Saved files name these classes: the names must not follow the modules they live in."""
    for cls in (DistillationModel, batch_norm.BatchNorm, keras_apps.ApplicationPreprocessing, one.GatedSum,
                okddip.PeerAttention, calibration.ExpectedCalibrationError,
                keras_compat.ReplicaConsistentLossScaleOptimizer):
        assert keras.saving.get_registered_name(cls) == f"ffl_tf>{cls.__name__}"
        assert keras.saving.get_registered_object(f"ffl_tf>{cls.__name__}") is cls


def test_custom_pieces_rebuild_from_their_configs():
    with batch_norm.keras_batch_norm():
        keras_computed = batch_norm.BatchNorm(momentum=0.8, epsilon=1e-3)
    assert not batch_norm.BatchNorm.from_config(keras_computed.get_config()).fused
    assert batch_norm.BatchNorm.from_config(batch_norm.BatchNorm().get_config()).fused
    preprocess = keras_apps.ApplicationPreprocessing("mobilenet_v3", name="p")
    assert keras_apps.ApplicationPreprocessing.from_config(preprocess.get_config()).module == "mobilenet_v3"
    ece = calibration.ExpectedCalibrationError(7, from_logits=False, name="ece_x")
    rebuilt = calibration.ExpectedCalibrationError.from_config(ece.get_config())
    assert (rebuilt.num_bins, rebuilt.from_logits, rebuilt.name) == (7, False, "ece_x")
    optimizer = keras_compat.ReplicaConsistentLossScaleOptimizer(keras.optimizers.SGD(0.3), name="lso")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(restored) is keras_compat.ReplicaConsistentLossScaleOptimizer
    assert restored.inner_optimizer.learning_rate.numpy() == pytest.approx(0.3)
