"""What the method tests share: NumPy references, a short run on an image folder (real or generated images)
written as a run directory, its exports, and training under two replicas against one device."""

import dataclasses
import pathlib

import keras
import numpy as np
import tensorflow as tf

from ffl_tf import data, methods
from ffl_tf.data import pipeline
from ffl_tf.export import saved_model, tflite
from ffl_tf.model.distillation import DistillationModel, head_model
from ffl_tf.runs import checkpoint, run_dir
from ffl_tf.utils import atomic
from tests.model.test_losses import np_log_softmax
from tests.runs.test_distribution import in_memory_source

BATCH_SIZE = 32
EVAL_BATCH_SIZE = 100


def np_softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(np_log_softmax(z / temperature))


def np_student_gradient(teacher: np.ndarray, student: np.ndarray, temperature: float) -> np.ndarray:
    """d KL_T(teacher -> student) / d student with the teacher held constant: T (p_T(s) - p_T(t)) / batch."""
    return temperature * (np_softmax(student, temperature) - np_softmax(teacher, temperature)) / len(student)


def random_logits(k: int, n: int = 16, classes: int = 10, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = [rng.normal(scale=3.0, size=(n, classes)).astype("float32") for _ in range(k)]
    return logits, rng.integers(0, classes, n).astype("int32")


def random_images(n: int = 8, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3)).astype("uint8"), rng.integers(0, 10, n).astype("int32")


def compile_method(model: DistillationModel, method: str, *, lr: float = 0.05, steps_per_epoch: int = 4,
                   rampup_epochs: float = 1.0, **kwargs) -> DistillationModel:
    """Like tests/test_model.py's compile_sgd, with `method`'s loss and momentum settings."""
    declared = methods.get(method)
    model.compile(keras.optimizers.SGD(lr, momentum=0.9, nesterov=declared.defaults["nesterov"]),
                  distillation_loss=declared.loss_fn(), steps_per_epoch=steps_per_epoch, rampup_epochs=rampup_epochs,
                  weight_decay=1e-4, module_weight_decay=dict.fromkeys(declared.module_weight_decay, 1e-5), **kwargs)
    return model


@dataclasses.dataclass
class SampleRun:
    path: pathlib.Path
    model: DistillationModel
    config: dict
    history: dict


def train_on_sample(method: str, backbones: list[str], path: pathlib.Path, folder: pathlib.Path, *,
                    epochs: int = 3, steps: int = 20) -> SampleRun:
    """Trains `method` for epochs x steps on the image folder `folder` (the real CIFAR-10 sample, or the generated
    squares), written as a run directory (config.json, checkpoints/) in the layout `ffl_tf.train` produces, so the
    exporters can read it."""
    keras.utils.set_random_seed(0)
    dataset = {"dataset": "image_folder", "data_dir": str(folder), "image_size": None, "validation_fraction": 0.2,
               "skip_bad_images": False}
    train_ds, _, info = data.load(**dataset, batch_size=BATCH_SIZE, eval_batch_size=EVAL_BATCH_SIZE, download=False)
    config = {
        "model_version": run_dir.MODEL_VERSION, "method": method, "class_names": list(info.class_names),
        "model": {"backbones": backbones, "num_classes": info.num_classes, "image_shape": list(info.image_shape),
                  "shared_stages": methods.get(method).defaults["shared_stages"], "mean": list(info.mean),
                  "std": list(info.std), "sync_batchnorm": False},
        "dataset": dataset,
        "training": {"batch_size": BATCH_SIZE, "eval_batch_size": EVAL_BATCH_SIZE, "seed": 0},
    }
    model = compile_method(run_dir.build_model(config), method, steps_per_epoch=steps)
    history = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False).history
    atomic.write_json(str(path / run_dir.CONFIG), config)
    checkpoint.save(model, str(path / run_dir.CHECKPOINTS), epochs)
    return SampleRun(path, model, config, history)


def evaluation_images(run: SampleRun, n: int) -> np.ndarray:
    """`n` images spread over the run's evaluation split (which lists its classes one after the other)."""
    _, eval_ds, info = data.load(**run.config["dataset"], batch_size=BATCH_SIZE, eval_batch_size=EVAL_BATCH_SIZE,
                                 download=False)
    return next(iter(eval_ds.unbatch().map(lambda image, label: image).shard(info.num_eval // n, 0).batch(n))).numpy()


def check_saved_model_export(run: SampleRun, head: str, export_dir: pathlib.Path) -> None:
    """The TF Serving export of `head` reloads and gives the Keras head's logits on images of the run's data.

    (Not on uniform random pixels: after a run on the generated squares, whose noise stays below 120, such
    images are far outside the training data and the logits reach 50 to 120, where float32 round-off alone
    exceeds the tolerance.)
    """
    version_dir = saved_model.export(str(run.path), head, str(export_dir))
    images = evaluation_images(run, 8)
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images))
    expected = head_model(run.model, head)(images, training=False)
    np.testing.assert_allclose(served["logits"], expected, atol=1e-5)


def check_tflite_export(run: SampleRun, head: str, output: pathlib.Path) -> None:
    """The float TFLite model of `head` classifies evaluation images as the Keras head does."""
    result = tflite.export(str(run.path), head, "none", str(output), eval_examples=50)
    assert output.stat().st_size > 10_000
    assert result["examples"] == 50 and result["agreement"] == 1.0
    assert result["tflite"] == result["keras"]


def _train_under(strategy, build, method: str, initial: list, train_source, eval_source) -> tuple:
    with strategy.scope():
        model = build()
        model.set_weights(initial)
        # Eager: for two steps, faster than tracing the steps under each strategy.
        compile_method(model, method, lr=0.02, steps_per_epoch=1, rampup_epochs=2.0, run_eagerly=True)
    train_ds = pipeline.distribute_train(strategy, train_source, global_batch_size=16, seed=0)
    history = model.fit(train_ds, epochs=2, steps_per_epoch=1, verbose=0, shuffle=False).history
    eval_ds, eval_steps = pipeline.distribute_eval(strategy, eval_source, global_batch_size=16)
    return model.get_weights(), history, model.evaluate(eval_ds, steps=eval_steps, verbose=0, return_dict=True)


def check_two_replicas_match_one_device(strategy, method: str, backbones: list[str], shared_stages: int) -> None:
    """Two epochs of one step on two replicas update the weights as one device does (tests/test_distribution.py);
    metrics and the padded evaluation agree too."""
    def build():
        return methods.get(method).build(backbones, 10, (16, 16, 3), shared_stages=shared_stages, sync_batchnorm=True)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train_source = in_memory_source(rng.integers(0, 256, (16, 16, 16, 3)).astype("uint8"),
                                    rng.integers(0, 10, 16).astype("int32"))
    eval_source = in_memory_source(rng.integers(0, 256, (17, 16, 16, 3)).astype("uint8"),
                                   rng.integers(0, 10, 17).astype("int32"))
    initial = build().get_weights()
    one = _train_under(tf.distribute.get_strategy(), build, method, initial, train_source, eval_source)
    two = _train_under(strategy, build, method, initial, train_source, eval_source)
    updates = [np.linalg.norm(w1 - w0) for w0, w1 in zip(initial, one[0])]
    errors = [np.linalg.norm(w2 - w1) for w1, w2 in zip(one[0], two[0])]
    assert max(updates) > 1e-2  # training really changed the weights
    assert np.linalg.norm(errors) < 1e-3 * np.linalg.norm(updates)
    # Per weight, 5%: with the classifiers initialised as PyTorch's nn.Linear (narrower than Keras's Glorot
    # default), the smallest updates (stem, early batch norms) are ill-conditioned in this tiny setup: on ONE
    # device, a 1e-6 relative change of the initial weights moves them by 1.3% (measured). A missing division
    # by the replicas, or half-batch BN statistics, miss by 10% and more.
    for error, update in zip(errors, updates):
        assert error <= 5e-2 * update + 1e-6
    for one_logs, two_logs in [(one[1], two[1]), (one[2], two[2])]:
        assert one_logs.keys() == two_logs.keys()
        for name, value in one_logs.items():
            np.testing.assert_allclose(two_logs[name], value, rtol=1e-3, atol=1e-4, err_msg=name)
