"""Running the training command in a subprocess, as a user does, with tiny settings."""

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Tiny, fast settings for the tests' training runs.
TINY = ["--backbones=resnet8,resnet8", "--shared_stages=1", "--eval_batch_size=64", "--rampup_epochs=1",
        "--lr_decay_epochs=100"]


def cli_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ffl_tf.train", *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=timeout, env=cli_env(),
    )


def digits_args(tmp_path: pathlib.Path, model_dir: pathlib.Path, *extra: str) -> list[str]:
    return ["--dataset=digits", f"--data_dir={tmp_path / 'tfds'}", f"--model_dir={model_dir}", "--batch_size=32",
            "--steps_per_epoch=5", *TINY, *extra]


def read_json(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())

