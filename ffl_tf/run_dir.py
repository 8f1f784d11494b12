"""A training run's directory: the config it was built from, its checkpoints, and rebuilding its model.

    RUN/flags.txt            the flags it ran with (reusable: --flagfile=RUN/flags.txt)
    RUN/config.json          {"model": build_ffl_model kwargs, "dataset": data.load kwargs, "training": {...}}
    RUN/checkpoints/         epoch-NNNN.weights.h5 (weights + optimizer state)
    RUN/logs/                TensorBoard
    RUN/results.json         per-head accuracy, parameter counts, throughput
"""

import json
import os

from ffl_tf import checkpoint
from ffl_tf.ffl_model import FFLModel, build_ffl_model

CONFIG = "config.json"
FLAGS_FILE = "flags.txt"
RESULTS = "results.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"


class RunError(Exception):
    """A run directory that cannot be used as asked; the message says why and what to do."""


def read_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, CONFIG)
    if not os.path.isfile(path):
        raise RunError(
            f"{model_dir} is not a training run: {CONFIG} is missing. Pass the --model_dir of a run "
            "started with `python -m ffl_tf.train`."
        )
    with open(path) as f:
        return json.load(f)


def build_model(config: dict) -> FFLModel:
    """The (untrained) FFL network described by a run's config."""
    model = dict(config["model"])
    model["image_shape"] = tuple(model["image_shape"])
    return build_ffl_model(**model)


def load_trained_model(model_dir: str) -> tuple[FFLModel, dict]:
    """Rebuilds a run's model from its config and restores its newest checkpoint; returns (model, config)."""
    config = read_config(model_dir)
    found = checkpoint.latest(os.path.join(model_dir, CHECKPOINTS))
    if found is None:
        raise RunError(f"{model_dir} has no checkpoint yet in {CHECKPOINTS}/; train it for at least one epoch.")
    model = build_model(config)
    try:
        model.load_weights(found[1], skip_mismatch=False)
    except (ValueError, KeyError) as error:
        raise RunError(
            f"The checkpoint {found[1]} does not fit the model described by {CONFIG} "
            f"({config['model']['backbones']}, shared_stages={config['model']['shared_stages']}): "
            f"{str(error).splitlines()[0]} "
            "The run directory was modified or mixes two runs; retrain into a fresh --model_dir."
        ) from error
    return model, config
