"""A small trained run directory (two resnet14 branches on the generated squares folder) shared by the export tests.

It is trained in-process for TRAIN_STEPS steps, without the training CLI, on the ten-class image folder of
coloured squares (tests/conftest.py: squares_folder), to about 80% accuracy on the held-out images: well above
chance (10%) without being perfect, so the int8 and float16 agreement checks compare real decisions rather
than a model sure of everything. It is written in the layout `ffl_tf.train` produces: config.json and
checkpoints/epoch-0001.weights.h5.
"""

import dataclasses
import pathlib

import keras
import pytest

from ffl_tf import data, methods
from ffl_tf.model.distillation import DistillationModel
from ffl_tf.runs import checkpoint, run_dir
from ffl_tf.utils import atomic

# Measured accuracy of the fused head on the 1,020 held-out images after 40, 60, 150 steps (each its own
# schedule): 0.49, 0.81, 1.0. At 60 steps eight colours are learnt and orange and yellow still taken for black.
TRAIN_STEPS = 60
LEARNING_RATE = 0.02
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 100


@dataclasses.dataclass
class TrainedRun:
    path: pathlib.Path
    model: DistillationModel  # the in-memory model whose weights were checkpointed
    config: dict


def run_config(info: data.DatasetInfo, dataset: dict) -> dict:
    """A config.json as `ffl_tf.train` writes it, for resnet14 branches sharing the stem and stage 1."""
    return {
        "model_version": run_dir.MODEL_VERSION,
        "method": "ffl",
        "model": {
            "backbones": ["resnet14", "resnet14"],
            "num_classes": info.num_classes,
            "image_shape": list(info.image_shape),
            "shared_stages": 1,
            "mean": list(info.mean),
            "std": list(info.std),
            "fusion_channels": None,
            "sync_batchnorm": False,
        },
        "dataset": dataset,
        "class_names": list(info.class_names),
        "training": {"batch_size": BATCH_SIZE, "eval_batch_size": EVAL_BATCH_SIZE, "seed": 0},
    }


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, squares_folder) -> TrainedRun:
    keras.utils.set_random_seed(0)
    dataset = {"dataset": "image_folder", "data_dir": str(squares_folder), "image_size": None,
               "validation_fraction": 0.2, "skip_bad_images": False}
    train_ds, _, info = data.load(**dataset, batch_size=BATCH_SIZE, eval_batch_size=EVAL_BATCH_SIZE, download=False)
    config = run_config(info, dataset)
    model = run_dir.build_model(config)
    model.compile(keras.optimizers.SGD(LEARNING_RATE, momentum=0.9, nesterov=True),
                  distillation_loss=methods.loss_fn("ffl"), steps_per_epoch=TRAIN_STEPS, rampup_epochs=1.0,
                  weight_decay=1e-4, module_weight_decay={"fusion": 1e-5})
    model.fit(train_ds, steps_per_epoch=TRAIN_STEPS, epochs=1, verbose=0, shuffle=False)
    path = tmp_path_factory.mktemp("run")
    atomic.write_json(str(path / run_dir.CONFIG), config)
    checkpoint.save(model, str(path / run_dir.CHECKPOINTS), 1)
    return TrainedRun(path, model, config)
