"""Keras model files (`.keras`) of ffl_tf models: what `keras.saving.load_model` needs, and one way for the commands
to open a trained model, from a run directory or a model file alike.

    import keras, ffl_tf.saving                                   # registers ffl_tf's classes with Keras
    model = keras.saving.load_model("runs/quickstart/model.keras")
    heads = model.predict(uint8_images)                           # {"branch_0": logits, ..., "fused": logits}

A model file names its classes by their registered names ("ffl_tf>DistillationModel", "ffl_tf>BatchNorm", ...);
Keras finds them once the modules defining them are imported, which importing this module does. The names are
explicit, so moving a class to another module never breaks a file already saved.
"""

import dataclasses
import os
import zipfile

import keras

from ffl_tf import methods  # noqa: F401  (imports every module defining a registered class)
from ffl_tf.model.distillation import DistillationModel
from ffl_tf.runs import run_dir
from ffl_tf.runs.config import RunConfig
from ffl_tf.utils import atomic

SUFFIX = ".keras"


def is_model_file(path: str) -> bool:
    """Whether `path` names a Keras model file (by its `.keras` suffix) rather than a run directory."""
    return str(path).endswith(SUFFIX)


def save_model(model: keras.Model, path: str) -> None:
    """`model.save(path)`, atomically: a reader sees the previous file or the complete new one."""
    with atomic.atomic_path(path) as tmp:
        model.save(tmp)


def load_model(path: str, *, compile: bool = True) -> DistillationModel:
    """`keras.saving.load_model(path)`; raises RunError, naming the file, if it cannot be read or holds another
    kind of model."""
    if not os.path.isfile(path):
        raise run_dir.RunError(f"Model file {path} does not exist; pass a .keras file written by model.save() or by "
                               f"`ffl-train` (RUN/{run_dir.MODEL_FILE}).")
    try:
        model = keras.saving.load_model(path, compile=compile)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise run_dir.RunError(f"Cannot read the model file {path}: {str(error).splitlines()[0]}") from error
    if not isinstance(model, DistillationModel):
        raise run_dir.RunError(f"{path} holds a {type(model).__name__}, not an ffl_tf model (DistillationModel); "
                               "save one built by ffl_tf.methods.")
    return model


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained model and what the commands need to know of it.

    Attributes:
        model: the model, uncompiled.
        class_names: its classes in label order (class indices as text when a model file has none).
        config: the run's config for a run directory; None for a model file.
        source: the checkpoint or model file it was read from.
    """

    model: DistillationModel
    class_names: tuple[str, ...]
    config: RunConfig | None
    source: str

    @property
    def heads(self) -> list[str]:
        return list(self.model.output)


def run_heads(path: str) -> list[str] | None:
    """The heads of the run directory `path`, from its config.json (nothing is built); None for a model file, whose
    heads are known once it is loaded. Raises RunError if `path` is not a run directory."""
    return None if is_model_file(path) else run_dir.read_config(path).heads()


def load_trained(path: str, checkpoint: str | None = None) -> Trained:
    """The model of a run directory (its newest readable checkpoint, or `checkpoint`) or of a `.keras` file."""
    if not is_model_file(path):
        model, config, found = run_dir.load_trained_model(path, checkpoint)
        return Trained(model, tuple(config.class_names), config, found)
    if checkpoint:
        raise run_dir.RunError(f"--checkpoint={checkpoint} applies to a run directory, not to the model file {path}; "
                               "drop it.")
    model = load_model(path, compile=False)
    num_classes = int(next(iter(model.output.values())).shape[-1])
    return Trained(model, model.class_names or tuple(map(str, range(num_classes))), None, path)


def image_shape(trained: Trained) -> tuple[int, int, int]:
    """The (height, width, channels) of the images the model takes; raises RunError if they are not fixed."""
    shape = tuple(trained.model.input.shape[1:])
    if None in shape:
        raise run_dir.RunError(f"{trained.source} takes images of any size {shape}; these commands need a model built "
                               "for one image size.")
    return shape
