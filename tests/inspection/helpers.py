"""Helpers shared by the tests of the inspection tools (evaluate, predict, gradcam, plot)."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from ffl_tf.runs import checkpoint, run_dir
from ffl_tf.utils import atomic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repository root, quietly, without a cluster configuration."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"})


def write_run(path: pathlib.Path, model: keras.Model, model_config: dict, class_names: list[str],
              method: str = "ffl") -> pathlib.Path:
    """A run directory as `ffl_tf.train` leaves it (config.json, one checkpoint) holding `model`'s weights."""
    config = {"model_version": run_dir.MODEL_VERSION, "method": method, "model": model_config,
              "dataset": {"dataset": "image_folder", "data_dir": None}, "class_names": class_names,
              "training": {"eval_batch_size": 64, "seed": 0}}
    atomic.write_json(str(path / run_dir.CONFIG), config)
    checkpoint.save(model, str(path / run_dir.CHECKPOINTS), 1)
    return path


def read_png(path: pathlib.Path) -> np.ndarray:
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()
