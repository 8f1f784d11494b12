"""The tf_keras copy behind QAT reproduces every kind of supported ResNet branch; QAT refuses what it cannot do.

Importing export.qat imports tfmot, which points tf.keras at tf_keras for the whole process (and sets
TF_USE_LEGACY_KERAS for its children), so these checks run in a subprocess. The CLI run of --quantize=qat
is in test_tflite.py.
"""

import json
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = """
import json
import numpy as np
from ffl_tf.export import checks, qat
from ffl_tf.runs import run_dir
from ffl_tf.runs.config import RunConfig
from ffl_tf.model.distillation import head_model

def config(backbones, shared_stages):
    return RunConfig.from_json({"method": "ffl", "model_version": 2, "model": {
        "backbones": backbones, "num_classes": 7, "image_shape": [32, 32, 3], "shared_stages": shared_stages,
        "mean": [120.0, 110.0, 100.0], "std": [60.0, 55.0, 50.0]}})

def copied(backbones, shared_stages, head):
    cfg = config(backbones, shared_stages)
    model = run_dir.build_model(cfg)
    rng = np.random.default_rng(0)
    for weight in model.weights:  # distinct values everywhere (BN statistics too), so any mix-up shows
        weight.assign(weight.numpy() * rng.uniform(0.5, 1.5, weight.shape) + rng.normal(0, 0.05, weight.shape))
    keras_branch = head_model(model, head)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    classifier = model.get_layer(head).get_layer("classifier")  # scaled so logits vary by about 1, as trained ones
    scale = np.std(keras_branch.predict_on_batch(images))
    for weight in classifier.weights:
        weight.assign(weight / scale)
    branch = qat.build_branch(cfg, head)
    qat.copy_weights(keras_branch, branch)
    return keras_branch, branch, images

def error(backbones, head):
    try:
        qat.check_supported(config(backbones, 0), head)
    except checks.ExportError as e:
        return str(e)

results = {"difference": {}, "scale": {}}
for backbones, shared_stages, head in ((["resnet8"] * 2, 0, "branch_1"), (["resnet18"] * 2, 3, "branch_0")):
    keras_branch, branch, images = copied(backbones, shared_stages, head)
    results["difference"][backbones[0]] = qat.check_same_logits(keras_branch, branch, images)
    results["scale"][backbones[0]] = float(np.std(keras_branch.predict_on_batch(images)))
gamma = branch.get_layer("stage4_block1_2_bn").weights[0]
gamma.assign(gamma * 1.01)
try:
    qat.check_same_logits(keras_branch, branch, images)
except RuntimeError as e:
    results["mismatch"] = str(e)
results["wrn"] = error(["resnet8", "wrn16_2"], "branch_1")
results["fused"] = error(["resnet8", "resnet8"], "fused")
print(json.dumps(results))
"""


def test_tf_keras_copy_matches_and_unsupported_cases_are_refused():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for backbone in ("resnet8", "resnet18"):
        assert results["difference"][backbone] <= 1e-4
        assert 0.5 < results["scale"][backbone] < 2  # logits that vary, as a trained model's
    assert "no longer mirrors ffl_tf/models" in results["mismatch"]
    assert results["wrn"] == (
        "--quantize=qat is not supported yet for branch_1's backbone wrn16_2, only for resnet8, resnet14, resnet20, "
        "resnet32, resnet44, resnet56, resnet110, resnet18, resnet34; use --quantize=int8 instead."
    )
    assert results["fused"].startswith("--quantize=qat fine-tunes a single branch, not --head=fused;")
