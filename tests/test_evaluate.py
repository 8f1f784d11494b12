"""`python -m ffl_tf.evaluate`: reproduces results.json, reads image folders, refuses other classes in one line."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from ffl_tf import data, evaluate
from ffl_tf.data import pipeline
from ffl_tf.inspection import evaluation
from ffl_tf.runs import run_dir
from tests.data.images import write_png
from tests.inspection.helpers import run_module

TRAIN = ["--dataset=digits", "--backbones=resnet8,resnet8", "--shared_stages=1", "--epochs=1", "--steps_per_epoch=5",
         "--batch_size=32", "--eval_batch_size=64", "--rampup_epochs=1", "--lr_decay_epochs=100", "--verbose=0"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("digits")
    model_dir = root / "run"
    result = run_module("ffl_tf.train", *TRAIN, f"--data_dir={root / 'tfds'}", f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


@pytest.fixture(scope="module")
def evaluated(digits_run) -> tuple[dict, str]:
    result = run_module("ffl_tf.evaluate", f"--model_dir={digits_run}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((digits_run / "eval" / "digits-eval.json").read_text()), result.stdout


def test_evaluate_reproduces_the_accuracy_calibration_and_disagreement_of_results_json(digits_run, evaluated):
    report, stdout = evaluated
    results = json.loads((digits_run / run_dir.RESULTS).read_text())
    assert report["examples"] == results["eval_examples"] == 359
    assert report["checkpoint"].endswith("epoch-0001.weights.h5")
    for head, accuracy in results["accuracy"].items():
        top1 = report["branch_mean_top1"] if head == "branch_mean" else report["heads"][head]["top1"]
        assert top1 == pytest.approx(accuracy, abs=1e-6), head
    for head, ece in results["calibration"]["ece"].items():
        assert report["heads"][head]["ece"] == pytest.approx(ece, abs=1e-5), head
    assert report["disagreement"]["mean"] == pytest.approx(results["disagreement"], abs=1e-6)
    assert list(report["disagreement"]["pairs"]) == ["branch_0/branch_1"]
    assert all(0.0 <= report["heads"][h]["top1"] <= report["heads"][h]["top5"] <= 1.0 for h in report["heads"])
    assert "top-1" in stdout and "ECE" in stdout and "per-class top-1 accuracy" in stdout
    # Training drew its curves at its end.
    assert (digits_run / "plots" / "accuracy.png").stat().st_size > 0
    assert (digits_run / "plots" / "losses.png").stat().st_size > 0


def test_per_class_accuracy_sums_to_the_top1_and_the_ensemble_gain_is_over_the_best_branch(evaluated):
    report, _ = evaluated
    counts = report["examples_per_class"]
    assert list(counts) == [str(d) for d in range(10)] and sum(counts.values()) == report["examples"]
    for head, numbers in report["heads"].items():
        correct = sum(numbers["per_class_accuracy"][name] * count for name, count in counts.items())
        assert correct / report["examples"] == pytest.approx(numbers["top1"], abs=1e-9), head
    best_branch = max(report["heads"][b]["top1"] for b in ("branch_0", "branch_1"))
    assert report["ensemble_gain"] == pytest.approx(report["heads"]["ensemble"]["top1"] - best_branch)


def test_an_image_folder_split_with_the_runs_classes_gives_the_same_numbers(digits_run, evaluated, tmp_path):
    """The digits test split written as PNG files (DIR/test/<digit>/) evaluates like the tfds split."""
    config = run_dir.read_config(str(digits_run))
    source = data.open_source(**config.dataset, download=False)
    index = 0
    for images, labels in pipeline.eval_batches(source, batch_size=100):
        for image, label in zip(images.numpy(), labels.numpy()):
            write_png(tmp_path / "digit_pngs" / "test" / str(label) / f"{index:04d}.png", image)
            index += 1
    report, path = evaluate.evaluate(str(digits_run), dataset="image_folder", data_dir=str(tmp_path / "digit_pngs"),
                                     split="test")
    assert pathlib.Path(path) == digits_run / "eval" / "digit_pngs-test.json"
    assert report["examples"] == 359
    expected, _ = evaluated
    for head, numbers in report["heads"].items():
        assert numbers["top1"] == pytest.approx(expected["heads"][head]["top1"], abs=1e-9), head
        np.testing.assert_allclose(numbers["loss"], expected["heads"][head]["loss"], rtol=1e-4)


def test_other_class_names_are_refused_in_one_line(digits_run, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("0", "1", "cat", "dog"):
        write_png(tmp_path / "pets" / "test" / name / "a.png", rng.integers(0, 256, (8, 8, 1), dtype=np.uint8))
    result = run_module("ffl_tf.evaluate", f"--model_dir={digits_run}", "--dataset=image_folder",
                        f"--data_dir={tmp_path / 'pets'}", "--split=test")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("ffl_tf.evaluate: error: The classes of")
    assert "only in" in message and "['cat', 'dog']" in message
    assert "only in the run: ['2', '3', '4', '5', '6', '7', '8', '9']" in message
    assert not (digits_run / "eval" / "pets-test.json").exists()


def test_a_missing_split_and_a_wrong_image_size_are_refused(digits_run):
    config = run_dir.read_config(str(digits_run))
    with pytest.raises(ValueError, match=r"--split=nope is not a split of digits; its splits are"):
        evaluation.evaluation_data(config, split="nope")
    with pytest.raises(ValueError, match="--split=test: .* is not a directory"):
        evaluation.evaluation_data(config, dataset="image_folder", data_dir="/nonexistent", split="test")
    other_size = dataclasses.replace(config, model={**config.model, "image_shape": [16, 16, 1]})
    with pytest.raises(ValueError, match="digits has 8x8x1 images and the run takes 16x16x1"):
        evaluation.evaluation_data(other_size)
