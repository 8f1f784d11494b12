"""The TF Serving export: same outputs as Keras, only the head's variables, versioned layout, signature, REST body."""

import collections
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ffl_tf import data
from ffl_tf.export import saved_model, serving
from ffl_tf.model.distillation import head_model

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
HEADS = ("branch_0", "branch_1", "ensemble", "fused")
SAVED_MODEL_CLI = pathlib.Path(sys.executable).parent / "saved_model_cli"
EXPECTED_SIGNATURE = {
    "inputs": {"images": ("DT_UINT8", "(-1, 32, 32, 3)")},
    "outputs": {
        "class_names": ("DT_STRING", "(-1)"),
        "classes": ("DT_INT64", "(-1)"),
        "logits": ("DT_FLOAT", "(-1, 10)"),
        "probabilities": ("DT_FLOAT", "(-1, 10)"),
    },
}


@pytest.fixture(scope="module")
def exports(trained_run, tmp_path_factory) -> dict[str, pathlib.Path]:
    """Every head of the trained run, exported once: {head: its version directory}."""
    root = tmp_path_factory.mktemp("exports")
    return {head: pathlib.Path(saved_model.export(str(trained_run.path), head, str(root / head))) for head in HEADS}


@pytest.fixture(scope="module")
def images(trained_run) -> np.ndarray:
    """64 raw evaluation images, uint8."""
    _, eval_ds, _ = data.load(**trained_run.config["dataset"], batch_size=32, eval_batch_size=100, download=False)
    return next(iter(eval_ds.unbatch().shard(10, 0).batch(64)))[0].numpy()


def keras_logits(trained_run, head: str, images: np.ndarray) -> np.ndarray:
    return head_model(trained_run.model, head)(images, training=False).numpy()


@pytest.mark.parametrize("head", HEADS)
def test_reloaded_export_gives_the_keras_outputs(exports, trained_run, images, head):
    outputs = tf.saved_model.load(str(exports[head])).signatures["serving_default"](images=tf.constant(images))
    logits = keras_logits(trained_run, head, images)
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(logits), atol=1e-5)
    np.testing.assert_array_equal(outputs["classes"], np.argmax(logits, axis=-1))
    names = [trained_run.config["class_names"][k] for k in np.argmax(logits, axis=-1)]
    assert [name.decode() for name in outputs["class_names"].numpy()] == names
    for other in set(HEADS) - {head}:  # the heads differ, so matching one proves the right head was exported
        assert np.max(np.abs(outputs["logits"] - keras_logits(trained_run, other, images))) > 1e-3


def weight_fingerprints(variables) -> collections.Counter:
    return collections.Counter((v.name.removesuffix(":0"), np.asarray(v).tobytes()) for v in variables)


@pytest.mark.parametrize("head", HEADS)
def test_export_holds_exactly_the_variables_its_head_needs(exports, trained_run, head):
    loaded = tf.saved_model.load(str(exports[head]))
    needed = head_model(trained_run.model, head).weights
    assert len(loaded.variables) == len(needed)
    assert weight_fingerprints(loaded.variables) == collections.Counter(
        (w.path, np.asarray(w).tobytes()) for w in needed
    )


def test_branch_export_has_no_fusion_module_and_no_other_branch(exports, trained_run):
    exported = weight_fingerprints(tf.saved_model.load(str(exports["branch_0"])).variables)
    for layer in ("fusion", "branch_1"):
        others = trained_run.model.get_layer(layer).weights
        assert not exported & collections.Counter((w.path, np.asarray(w).tobytes()) for w in others), layer


def saved_model_cli_signature(version_dir: pathlib.Path) -> dict:
    """{"inputs"|"outputs": {name: (dtype, shape)}} as `saved_model_cli show` prints serving_default."""
    shown = subprocess.run(
        [str(SAVED_MODEL_CLI), "show", "--dir", str(version_dir), "--tag_set", "serve",
         "--signature_def", "serving_default"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    parsed = {"inputs": {}, "outputs": {}}
    for kind, name, dtype, shape in re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (.+)",
                                              shown):
        parsed[kind][name] = (dtype, shape.strip())
    return parsed


def test_first_export_is_version_1(exports):
    assert {path.name for path in exports.values()} == {"1"}
    assert all(os.listdir(path.parent) == ["1"] for path in exports.values())  # no temporary directory left


def test_cli_adds_the_next_version_and_prints_how_to_serve_it(trained_run, tmp_path):
    export_dir = tmp_path / "serving" / "ffl"
    (export_dir / "1").mkdir(parents=True)  # an earlier version; other names are not versions to TF Serving
    (export_dir / "9-notes").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "export.saved_model", f"--model_dir={trained_run.path}", "--head=branch_1",
         f"--export_dir={export_dir}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(export_dir)) == ["1", "2", "9-notes"]
    assert (export_dir / "2" / "saved_model.pb").is_file()
    assert (f"docker run -p 8501:8501 --mount type=bind,source={export_dir},target=/models/ffl "
            "-e MODEL_NAME=ffl -t tensorflow/serving") in result.stdout
    assert "-X POST http://localhost:8501/v1/models/ffl:predict" in result.stdout
    assert "images         uint8    [-1, 32, 32, 3]" in result.stdout
    assert saved_model_cli_signature(export_dir / "2") == EXPECTED_SIGNATURE


def test_printed_signature_is_read_from_the_saved_model(exports):
    assert saved_model.signature(str(exports["fused"])) == {
        "inputs": {"images": ("uint8", [-1, 32, 32, 3])},
        "outputs": {
            "class_names": ("string", [-1]),
            "classes": ("int64", [-1]),
            "logits": ("float32", [-1, 10]),
            "probabilities": ("float32", [-1, 10]),
        },
    }


def test_documented_rest_request_is_valid_for_the_signature(exports, trained_run, tmp_path, monkeypatch):
    image_file = sorted(pathlib.Path(trained_run.config["dataset"]["data_dir"], "train").glob("*/*.png"))[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["make_request.py", str(image_file)])
    exec(saved_model.REQUEST_SNIPPET.format(height=32, width=32, channels=3), {})

    body = json.loads((tmp_path / "request.json").read_text())
    assert list(body) == ["instances"]
    pixels = np.asarray(body["instances"])
    assert pixels.dtype == np.int64 and pixels.shape == (1, 32, 32, 3)
    decoded = tf.io.decode_png(tf.io.read_file(str(image_file)), channels=3).numpy()
    np.testing.assert_array_equal(pixels[0], decoded)

    signature = tf.saved_model.load(str(exports["fused"])).signatures[serving.SIGNATURE]
    outputs = signature(images=tf.constant(body["instances"], tf.uint8))
    assert {name: (t.dtype, t.shape.as_list()) for name, t in outputs.items()} == {
        "class_names": (tf.string, [1]),
        "classes": (tf.int64, [1]),
        "logits": (tf.float32, [1, 10]),
        "probabilities": (tf.float32, [1, 10]),
    }
    np.testing.assert_allclose(outputs["logits"], keras_logits(trained_run, "fused", decoded[None]), atol=1e-5)
