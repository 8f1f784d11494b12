"""The exports take a Keras model file (`.keras`) where they take a run directory: its class names reach the
SavedModel, int8 calibrates (and accuracy is measured) on `--dataset`, and what a model file cannot do is refused
before any work, in one line."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import data, saving
from ffl_tf.export import checks, saved_model, tflite
from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.model.distillation import head_model
from ffl_tf.runs import run_dir
from ffl_tf.utils import atomic
from tests.export.conftest import run_config

CLASSES = tuple(f"digit {d}" for d in range(10))


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("tfds"))
    data.dataset_info("digits", data_dir=path)  # prepared once
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, digits_dir) -> tuple[pathlib.Path, object]:
    """An (untrained) FFL model for the digits, saved with class names of its own: (its file, the model)."""
    info = data.dataset_info("digits", data_dir=digits_dir)
    model = build_ffl_model(["resnet8", "resnet8"], 10, info.image_shape, shared_stages=1, mean=info.mean,
                            std=info.std)
    model.class_names = CLASSES
    path = tmp_path_factory.mktemp("model") / "digits.keras"
    saving.save_model(model, str(path))
    return path, model


def digit_images(digits_dir: str, n: int = 16) -> np.ndarray:
    _, eval_ds, _ = data.load("digits", data_dir=digits_dir, batch_size=32, eval_batch_size=n)
    return next(iter(eval_ds))[0].numpy()


def test_a_saved_model_export_serves_the_files_logits_and_class_names(model_file, digits_dir, tmp_path):
    path, model = model_file
    version_dir = saved_model.export(str(path), "fused", str(tmp_path / "serving"))
    assert version_dir == str(tmp_path / "serving" / "1")
    serve = tf.saved_model.load(version_dir).signatures["serving_default"]
    images = digit_images(digits_dir)
    outputs = serve(images=tf.constant(images))
    expected = head_model(model, "fused")(images, training=False)
    np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-5)
    names = [name.decode() for name in outputs["class_names"].numpy()]
    assert names == [CLASSES[c] for c in np.argmax(expected, axis=-1)]


def test_int8_calibrates_and_measures_on_the_dataset_given(model_file, digits_dir, tmp_path):
    path, _ = model_file
    output = tmp_path / "branch_0.int8.tflite"
    result = tflite.export(str(path), "branch_0", "int8", str(output), dataset="digits", data_dir=digits_dir,
                           eval_examples=40, calibration_examples=20)
    assert output.stat().st_size == result["bytes"] > 0
    assert result["examples"] == 40 and 0 <= result["tflite"] <= 1 and result["agreement"] > 0.5


def test_without_a_dataset_a_model_file_has_no_data_and_its_export_is_not_evaluated(model_file):
    path, _ = model_file
    assert tflite.open_data(saving.load_trained(str(path))) is None
    result = {"output": "m.tflite", "bytes": 2**20, "head": "fused", "quantize": "float16", "examples": 0}
    assert tflite.report(result) == ("Wrote m.tflite: fused, quantize=float16, 1,048,576 bytes (1.00 MiB)\n"
                                     "Not evaluated: pass --dataset (and --data_dir) to measure its top-1 accuracy.")


def test_what_a_model_file_cannot_do_is_refused_before_any_work(model_file, digits_dir, tmp_path):
    path, _ = model_file
    output = str(tmp_path / "m.tflite")
    with pytest.raises(checks.ExportError, match=r"--quantize=int8 calibrates on training images, which the model "
                                                 r"file .*digits.keras does not name: pass --dataset"):
        tflite.export(str(path), "fused", "int8", output)
    with pytest.raises(checks.ExportError, match="--quantize=qat rebuilds a branch from its run's config.json"):
        tflite.export(str(path), "branch_0", "qat", output, dataset="digits", data_dir=digits_dir)
    with pytest.raises(checks.ExportError, match=r"--head=branch_2 is not a head of .*digits.keras; choose one of: "
                                                 "branch_0, branch_1, ensemble, fused."):
        saved_model.export(str(path), "branch_2", str(tmp_path / "serving"))
    with pytest.raises(run_dir.RunError, match="--checkpoint=c.weights.h5 applies to a run directory"):
        saving.load_trained(str(path), "c.weights.h5")
    with pytest.raises(run_dir.RunError, match="Model file .*missing.keras does not exist"):
        saved_model.export(str(tmp_path / "missing.keras"), "fused", str(tmp_path / "serving"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_run_directory_exports_with_its_own_data(digits_dir, tmp_path):
    info = data.dataset_info("digits", data_dir=digits_dir)
    atomic.write_json(str(tmp_path / run_dir.CONFIG), run_config(info, {"dataset": "digits", "data_dir": digits_dir}))
    with pytest.raises(checks.ExportError, match="--dataset=digits applies to a .keras model file; the run directory"):
        tflite.export(str(tmp_path), "fused", "int8", str(tmp_path / "m.tflite"), dataset="digits")
