"""A training run's directory: its config, checkpoints and logs; resuming it and rebuilding its model.

    RUN/flags.txt            the flags it ran with (reusable: --flagfile=RUN/flags.txt)
    RUN/config.json          {"method", "model": build kwargs, "dataset": data.open_source kwargs, "loss":
                             the method's loss settings, "training": {...}, "class_names", "model_version"}
    RUN/checkpoints/         epoch-NNNN[-step-SSSSSS].weights.h5 (weights + optimizer state)
    RUN/logs/                TensorBoard
    RUN/history.csv          every metric, every epoch
    RUN/results.json         per-head accuracy, parameter counts, throughput
"""

import json
import os

from absl import flags, logging

from ffl_tf import atomic, checkpoint, methods
from ffl_tf.model import DistillationModel

CONFIG = "config.json"
FLAGS_FILE = "flags.txt"
RESULTS = "results.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
HISTORY = "history.csv"
# config.json's format: 2 = networks padded like their PyTorch references; runs without it are version 1.
MODEL_VERSION = 2
# Training settings a checkpoint can only continue under: they fix what its step count means (images per
# step, steps per epoch: the learning-rate schedule, ramp-up and data position), which variables its
# optimizer has (mixed_float16), and the data stream and hold-out (seed).
FIXED_ON_RESUME = ("batch_size", "steps_per_epoch", "mixed_precision", "seed")


class RunError(Exception):
    """A run directory that cannot be used as asked; the message says why and what to do."""


def read_config(model_dir: str) -> dict:
    """The run's config.json; refuses directories that are not runs or were written by an older ffl_tf."""
    path = os.path.join(model_dir, CONFIG)
    if not os.path.isfile(path):
        raise RunError(
            f"{model_dir} is not a training run: {CONFIG} is missing. Pass the --model_dir of a run started "
            "with `python -m ffl_tf.train`."
        )
    with open(path) as f:
        config = json.load(f)
    if config.get("model_version", 1) != MODEL_VERSION:
        raise RunError(
            f"{model_dir} was trained by an earlier ffl_tf (model_version {config.get('model_version', 1)}) whose "
            "networks pad stride-2 layers differently; its checkpoints would compute something else here. "
            "Retrain it in a new --model_dir (or export it with ffl_tf 0.1)."
        )
    return config


def read_results(model_dir: str) -> dict:
    """The run's results.json (written when training ends); raises OSError or ValueError if it is missing or cut."""
    with open(os.path.join(model_dir, RESULTS)) as f:
        return json.load(f)


def class_names(config: dict) -> list[str]:
    """The run's class names, or the class ids as strings for runs that did not record them."""
    return config.get("class_names") or [str(k) for k in range(config["model"]["num_classes"])]


def build_model(config: dict) -> DistillationModel:
    """The (untrained) network described by a run's config."""
    model = dict(config["model"])
    return methods.get(config.get("method", "ffl")).build(**model)


def load_trained_model(model_dir: str, checkpoint_path: str | None = None) -> tuple[DistillationModel, dict, str]:
    """Rebuilds a run's model and restores `checkpoint_path` or its newest readable checkpoint (a damaged newer
    one is skipped with a warning); returns (model, config, the checkpoint restored)."""
    config = read_config(model_dir)
    model = build_model(config)
    try:
        if checkpoint_path:
            checkpoint.restore(model, checkpoint_path)
            found = checkpoint_path
        else:
            restored = checkpoint.restore_newest(model, os.path.join(model_dir, CHECKPOINTS), move_aside=False)
            if restored is None:
                raise RunError(f"{model_dir} has no checkpoint yet in {CHECKPOINTS}/; train it for at least one epoch.")
            found = restored[1]
    except (ValueError, KeyError) as error:
        raise RunError(
            f"The checkpoint in {model_dir} does not fit the model described by {CONFIG} "
            f"({config['model']['backbones']}, method {config.get('method', 'ffl')}): {str(error).splitlines()[0]} "
            "The run directory was modified or mixes two runs; retrain into a fresh --model_dir."
        ) from error
    except (OSError, checkpoint.CheckpointError) as error:
        raise RunError(f"Cannot read the checkpoint of {model_dir}: {str(error).splitlines()[0]}") from error
    logging.info("Loaded %s", found)
    return model, config, found


def define_run_flags() -> None:
    """--model_dir (required) and --checkpoint: how the commands that read a trained run name it."""
    flags.DEFINE_string("model_dir", None, "Required: the run directory written by `python -m ffl_tf.train`.")
    flags.DEFINE_string("checkpoint", None, "A .weights.h5 checkpoint of the run; default: its newest readable one.")
    flags.mark_flags_as_required(["model_dir"])


def check_resumable(model_dir: str, config: dict) -> None:
    """Refuses to resume a run whose method, model, data or FIXED_ON_RESUME settings differ from `config`."""
    if not os.path.isfile(os.path.join(model_dir, CONFIG)):
        return
    previous = read_config(model_dir)
    fixed = {section: (previous.get(section, {}), config[section]) for section in ("model", "dataset")}
    fixed["method"] = ({"method": previous.get("method", "ffl")}, {"method": config["method"]})
    fixed["training setup"] = tuple({k: c["training"].get(k) for k in FIXED_ON_RESUME} for c in (previous, config))
    for section, (old_values, new_values) in fixed.items():
        changed = {k: (old_values.get(k), v) for k, v in new_values.items() if old_values.get(k) != v}
        if changed:
            details = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items())
            raise RunError(
                f"--model_dir={model_dir} holds a run with a different {section} ({details}). Use a new "
                f"--model_dir, or the original flags (saved in {os.path.join(model_dir, FLAGS_FILE)}) to resume it."
            )
    changed = sorted(
        f"{section}.{k}" for section in ("loss", "training")
        for k, v in config[section].items() if previous.get(section, {}).get(k) != v
    )
    if changed:
        logging.warning("Resuming %s with changed settings: %s", model_dir, ", ".join(changed))


def prepare(model_dir: str) -> None:
    """Creates the run directory, failing early and clearly if it cannot be written."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise RunError(f"--model_dir={model_dir} is not writable ({error.strerror}); choose another.") from None


def trim_history(path: str, initial_epoch: int) -> None:
    """Drops history.csv rows of epochs a resumed run will redo (logged before a kill, never checkpointed)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.read().splitlines()
    if lines:
        kept = [row for row in lines[1:] if int(row.split(",", 1)[0]) < initial_epoch]
        atomic.write_text(path, "".join(f"{line}\n" for line in [lines[0], *kept]))


def default_model_dir(method: str, dataset: str, backbones: list[str]) -> str:
    """runs/<dataset>-<backbones>[-<method>]: deterministic, so rerunning the same command resumes."""
    if len(set(backbones)) == 1:
        name = f"{dataset}-{backbones[0]}x{len(backbones)}"
    else:
        name = f"{dataset}-{'+'.join(backbones)}"
    return os.path.join("runs", name if method == "ffl" else f"{name}-{method}")
