"""`python -m ffl_tf.predict`: images decoded exactly as evaluation decodes them, top-k per head, folders, JSON."""

import json
import pathlib

import numpy as np
import pytest

from ffl_tf import data, predict, saving
from ffl_tf.data import pipeline
from ffl_tf.inspection import images as image_files
from ffl_tf.methods.ffl import build_ffl_model
from tests.data.images import write_png
from tests.inspection.helpers import run_module, write_run

CLASSES = ["ant", "bee", "cat"]
SIZE = 16


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> pathlib.Path:
    """An image folder: train/ (for the dataset's classes) and test/ with images of several sizes and shapes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        write_png(root / "train" / name / "0.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        for i, shape in enumerate([(16, 16), (24, 20), (90, 120), (7, 9)]):
            write_png(root / "test" / name / f"{k}{i}.png", rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[pathlib.Path, object]:
    model_config = {"backbones": ["resnet8", "resnet8"], "num_classes": 3, "image_shape": [SIZE, SIZE, 3],
                    "shared_stages": 1}
    model = build_ffl_model(**model_config)
    return write_run(tmp_path_factory.mktemp("run"), model, model_config, CLASSES), model


@pytest.mark.parametrize("size", [SIZE, 72])  # resized whole (small images) and centre-cropped (large)
def test_files_are_decoded_exactly_like_the_evaluation_pipeline(images, size):
    source = data.open_source("image_folder", data_dir=str(images), image_size=size)
    evaluated = np.concatenate([x.numpy() for x, _ in pipeline.eval_batches(source, batch_size=100)])
    paths = sorted((images / "test").rglob("*.png"), key=lambda p: (p.parent.name, p.name))
    assert len(evaluated) == len(paths) == 12
    for path, expected in zip(paths, evaluated):
        np.testing.assert_array_equal(image_files.decode_image(str(path), (size, size, 3)), expected, err_msg=str(path))


def test_top1_of_every_head_equals_the_keras_models_on_the_evaluation_images(images, run):
    model_dir, model = run
    source = data.open_source("image_folder", data_dir=str(images), image_size=SIZE)
    evaluated = np.concatenate([x.numpy() for x, _ in pipeline.eval_batches(source, batch_size=100)])
    expected = {head: np.argmax(logits, axis=-1) for head, logits in model(evaluated, training=False).items()}
    result = predict.predict(str(model_dir), [str(images / "test" / name) for name in CLASSES], k=3)
    assert result["skipped"] == [] and len(result["predictions"]) == 12
    for i, prediction in enumerate(result["predictions"]):
        assert set(prediction["heads"]) == {"branch_0", "branch_1", "ensemble", "fused"}
        for head, ranked in prediction["heads"].items():
            assert ranked[0]["index"] == expected[head][i] and ranked[0]["class"] == CLASSES[expected[head][i]]
            probabilities = [r["probability"] for r in ranked]
            assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1.0)
    only_fused = predict.predict(str(model_dir), [str(images / "test" / "ant")], head="fused", k=1)
    assert [list(p["heads"]) for p in only_fused["predictions"]] == [["fused"]] * 4
    with pytest.raises(ValueError, match="--head=nope is not a head of this run; choose one of: branch_0"):
        predict.predict(str(model_dir), [str(images)], head="nope")


def test_json_output_parses_folders_are_walked_and_undecodable_files_skipped(images, run, tmp_path):
    model_dir, _ = run
    nested = tmp_path / "photos"
    write_png(nested / "a.png", np.full((16, 16, 3), 200, np.uint8))
    write_png(nested / "deeper" / "still" / "b.PNG", np.zeros((30, 30, 3), np.uint8))
    (nested / "deeper" / "broken.jpg").write_text("not an image")
    (nested / "notes.txt").write_text("not an image either, and not listed")
    result = run_module("ffl_tf.predict", f"--model_dir={model_dir}", "--format=json", "--top_k=2", nested,
                        images / "test" / "bee" / "10.png")
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    assert [pathlib.Path(p["image"]).name for p in output["predictions"]] == ["a.png", "b.PNG", "10.png"]
    assert all(len(ranked) == 2 for p in output["predictions"] for ranked in p["heads"].values())
    assert output["skipped"] == [str(nested / "deeper" / "broken.jpg")]
    assert "skipped 1 file(s) that cannot be decoded as images" in result.stderr and "broken.jpg" in result.stderr

    table = predict.table([p["image"] for p in output["predictions"]], [p["heads"] for p in output["predictions"]])
    assert table.splitlines()[0].endswith("a.png") and table.splitlines()[1].lstrip().startswith("branch_0")
    with pytest.raises(ValueError, match="nowhere.png does not exist"):
        image_files.image_files([str(tmp_path / "nowhere.png")])


def test_a_keras_model_file_predicts_as_its_run_does_with_the_class_names_it_holds(images, run, tmp_path):
    model_dir, model = run
    model.class_names = tuple(CLASSES)
    saving.save_model(model, str(tmp_path / "model.keras"))
    folder = [str(images / "test" / "cat")]
    from_file = predict.predict(str(tmp_path / "model.keras"), folder, k=2)
    assert from_file == predict.predict(str(model_dir), folder, k=2)
    assert {ranked[0]["class"] for p in from_file["predictions"] for ranked in p["heads"].values()} <= set(CLASSES)
    with pytest.raises(ValueError, match="--head=nope is not a head of this model; choose one of: branch_0"):
        predict.predict(str(tmp_path / "model.keras"), folder, head="nope")
