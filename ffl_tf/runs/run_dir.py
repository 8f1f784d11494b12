"""A training run's directory: its config, checkpoints and logs; resuming it and rebuilding its model.

    RUN/flags.txt            the flags it ran with (reusable: --flagfile=RUN/flags.txt)
    RUN/config.json          the run's `RunConfig` (ffl_tf.runs.config)
    RUN/checkpoints/         epoch-NNNN[-step-SSSSSS].weights.h5 (weights + optimizer state)
    RUN/logs/                TensorBoard
    RUN/history.csv          every metric, every epoch
    RUN/results.json         per-head accuracy, parameter counts, throughput
    RUN/model.keras          the trained model as a Keras model file (`keras.saving.load_model`, `ffl_tf.saving`)
"""

import json
import os

from absl import flags, logging

from ffl_tf import methods
from ffl_tf.model.distillation import DistillationModel
from ffl_tf.runs import checkpoint, config, settings
from ffl_tf.runs.config import MODEL_VERSION, RunConfig
from ffl_tf.runs.settings import Role

CONFIG = "config.json"
FLAGS_FILE = "flags.txt"
RESULTS = "results.json"
MODEL_FILE = "model.keras"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
HISTORY = "history.csv"


class RunError(Exception):
    """A run directory that cannot be used as asked; the message says why and what to do."""


def read_config(model_dir: str) -> RunConfig:
    """The run's config.json; refuses directories that are not runs or were written by an older ffl_tf."""
    path = os.path.join(model_dir, CONFIG)
    if not os.path.isfile(path):
        raise RunError(
            f"{model_dir} is not a training run: {CONFIG} is missing. Pass the --model_dir of a run started "
            "with `python -m ffl_tf.train`."
        )
    with open(path) as f:
        value = json.load(f)
    if value.get("model_version", 1) != MODEL_VERSION:
        raise RunError(
            f"{model_dir} was trained by an earlier ffl_tf (model_version {value.get('model_version', 1)}) whose "
            "networks pad stride-2 layers differently; its checkpoints would compute something else here. "
            "Retrain it in a new --model_dir (or export it with ffl_tf 0.1)."
        )
    return RunConfig.from_json(value)


def read_results(model_dir: str) -> dict:
    """The run's results.json (written when training ends); raises OSError or ValueError if it is missing or cut."""
    with open(os.path.join(model_dir, RESULTS)) as f:
        return json.load(f)


def build_model(run_config: RunConfig | dict) -> DistillationModel:
    """The (untrained) network described by a run's config (a `RunConfig`, or config.json's content), its
    `class_names` the run's."""
    if not isinstance(run_config, RunConfig):
        run_config = RunConfig.from_json(run_config)
    model = methods.get(run_config.method).build(**run_config.model)
    model.class_names = tuple(run_config.class_names)
    return model


def load_trained_model(model_dir: str, checkpoint_path: str | None = None) -> tuple[DistillationModel, RunConfig, str]:
    """Rebuilds a run's model and restores `checkpoint_path` or its newest readable checkpoint (a damaged newer
    one is skipped with a warning); returns (model, config, the checkpoint restored)."""
    run_config = read_config(model_dir)
    model = build_model(run_config)
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
            f"({run_config.model['backbones']}, method {run_config.method}): {str(error).splitlines()[0]} "
            "The run directory was modified or mixes two runs; retrain into a fresh --model_dir."
        ) from error
    except (OSError, checkpoint.CheckpointError) as error:
        raise RunError(f"Cannot read the checkpoint of {model_dir}: {str(error).splitlines()[0]}") from error
    logging.info("Loaded %s", found)
    return model, run_config, found


def define_run_flags(*, model_file: bool = False) -> None:
    """--model_dir (required) and --checkpoint: how the commands that read a trained run name it (`model_file`:
    the command also takes a .keras model file, `ffl_tf.saving`)."""
    flags.DEFINE_string("model_dir", None, "Required: the run directory written by `python -m ffl_tf.train`"
                        + (", or a .keras model file." if model_file else "."))
    flags.DEFINE_string("checkpoint", None, "A .weights.h5 checkpoint of the run; default: its newest readable one.")
    flags.mark_flags_as_required(["model_dir"])


def check_resumable(model_dir: str, run_config: RunConfig) -> None:
    """Refuses to resume a run whose method, data or FIXED settings differ from `run_config`; warns about the
    RESULT settings that changed (`settings.Role`)."""
    if not os.path.isfile(os.path.join(model_dir, CONFIG)):
        return
    previous = read_config(model_dir)
    old, new = previous.settings(), run_config.settings()
    fixed = config.changes(old, new, [Role.FIXED])
    fixed += [(name, previous.model.get(name), value) for name, value in run_config.model.items()
              if name in config.DATA_FACTS and previous.model.get(name) != value]
    if list(previous.class_names) != list(run_config.class_names):
        fixed.append(("class_names", list(previous.class_names), list(run_config.class_names)))
    for section in ("model", "dataset", "method", "training"):
        changed = [change for change in fixed if _section(change[0]) == section]
        if changed:
            raise RunError(
                f"--model_dir={model_dir} holds a run with a different "
                f"{'training setup' if section == 'training' else section} ({config.describe(changed)}). Use a new "
                f"--model_dir, or the original flags (saved in {os.path.join(model_dir, FLAGS_FILE)}) to resume it."
            )
    changed = config.changes(old, new, [Role.RESULT])
    if changed:
        logging.warning("Resuming %s with changed settings: %s", model_dir, config.describe(changed))


def _section(name: str) -> str:
    """The config.json section a setting (or a fact the data decides) belongs to, for messages."""
    if name in settings.SETTINGS:
        return settings.SETTINGS[name].section
    return "method" if name == "method" else "dataset" if name == "class_names" else "model"


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


def default_model_dir(method: str, dataset: str, backbones: list[str]) -> str:
    """runs/<dataset>-<backbones>[-<method>] (no method for the default one): deterministic, so rerunning the
    same command resumes."""
    if len(set(backbones)) == 1:
        name = f"{dataset}-{backbones[0]}x{len(backbones)}"
    else:
        name = f"{dataset}-{'+'.join(backbones)}"
    return os.path.join("runs", name if method == methods.DEFAULT else f"{name}-{method}")
