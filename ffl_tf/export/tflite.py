"""Converts one head of a trained FFL run to TFLite and measures its top-1 accuracy next to the Keras model's.

    python -m export.tflite --model_dir=RUN --head=branch_0 --quantize=int8 --output=branch_0.int8.tflite
    ffl-export-tflite --model_dir=model.keras --dataset=digits --head=branch_0 --quantize=int8 --output=b0.tflite

--model_dir is a run directory (its newest readable checkpoint, its data) or a `.keras` model file, which knows
no data: pass --dataset (and --data_dir) to calibrate int8 and measure accuracy on it.

Every model takes raw uint8 pixels ([batch, height, width, channels], input `images`) and returns float32
`logits`; normalisation is inside. Quantization modes:
  none     float32 weights and activations
  float16  float16 weights, float32 compute
  dynamic  int8 weights, activations quantized on the fly
  int8     int8 weights and activations (integer-only ops), ranges calibrated on --calibration_examples
           training images
  qat      int8 after quantization-aware fine-tuning of a branch (export/qat.py; branch_<k> heads only)
Accuracy is measured with the LiteRT interpreter on the run's evaluation split (a model file's: --dataset's, or
none without it).
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__)

import math
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from ai_edge_litert.interpreter import Interpreter

from ffl_tf import data, saving
from ffl_tf.export import checks, serving
from ffl_tf.model.distillation import head_model
from ffl_tf.runs import run_dir
from ffl_tf.utils import atomic

QUANTIZE = ("none", "float16", "dynamic", "int8", "qat")
# A model file's data: batch sizes of the calibration and evaluation streams, and the training stream's seed.
BATCH_SIZE, EVAL_BATCH_SIZE, SEED = 32, 100, 0

FLAGS = flags.FLAGS


def calibration_images(train_ds: tf.data.Dataset, count: int) -> np.ndarray:
    """`count` (augmented) training images, uint8 [count, H, W, C]."""
    return np.stack([image.numpy() for image, _ in train_ds.unbatch().take(count)])


def convert(model: keras.Model, quantize: str, calibration: np.ndarray | None = None) -> bytes:
    """`model` (raw uint8 images -> logits) as a TFLite flatbuffer, quantized as `quantize` says.

    The model goes through an inference-only SavedModel, from which the converter freezes Keras 3 variables
    (converting the concrete function directly leaves them as unresolved resource reads). For int8 the
    input stays the model's own uint8 tensor, so the converter needs no inference_input_type: it casts the
    pixels and quantizes them in the first ops. Calibration images are fed as uint8 for the same reason.
    """
    with tempfile.TemporaryDirectory() as saved_model_dir:
        serving.write_saved_model(model, serving.logits_fn(model), saved_model_dir)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def spread_sample(eval_ds: tf.data.Dataset, num_eval: int, count: int | None, batch_size: int) -> tf.data.Dataset:
    """Every (num_eval // count)-th evaluation image, `count` in all: covers every class of a class-sorted split."""
    if not count or count >= num_eval:
        return eval_ds
    return eval_ds.unbatch().shard(num_eval // count, 0).take(count).batch(batch_size)


def evaluate(keras_model: keras.Model, tflite_model: bytes, eval_ds: tf.data.Dataset, num_images: int) -> dict:
    """Top-1 accuracy of the Keras and LiteRT models on `eval_ds`, and how often their top-1 agree."""
    runner = Interpreter(model_content=tflite_model).get_signature_runner(serving.SIGNATURE)
    correct = {"keras": 0, "tflite": 0, "agreement": 0}
    seen = 0
    progress = keras.utils.Progbar(num_images, unit_name="image", stateful_metrics=["keras", "tflite"])
    for images, labels in eval_ds:
        keras_top = np.argmax(keras_model.predict_on_batch(images), axis=-1)
        tflite_top = np.argmax(runner(images=images.numpy())["logits"], axis=-1)
        correct["keras"] += int(np.sum(keras_top == labels.numpy()))
        correct["tflite"] += int(np.sum(tflite_top == labels.numpy()))
        correct["agreement"] += int(np.sum(keras_top == tflite_top))
        seen += len(labels)
        progress.update(seen, [("keras", correct["keras"] / seen), ("tflite", correct["tflite"] / seen)])
    return {"examples": seen, **{name: count / seen for name, count in correct.items()}}


def write(path: str, content: bytes) -> None:
    """Writes `content` to `path` atomically."""
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(content)


def validate(model_dir: str, head: str, quantize: str, output: str, dataset: str | None = None) -> None:
    """Checks the inputs before any work (a model file's heads are checked once it is loaded)."""
    heads = saving.run_heads(model_dir)
    if heads is not None:
        checks.check_head(heads, head)
    checks.check_writable_file(output, "output")
    if heads is None:
        if quantize == "qat":
            raise checks.ExportError(f"--quantize=qat rebuilds a branch from its run's config.json: pass the run "
                                     f"directory as --model_dir, not the model file {model_dir} (or use "
                                     "--quantize=int8).")
        if quantize == "int8" and not dataset:
            raise checks.ExportError(f"--quantize=int8 calibrates on training images, which the model file {model_dir} "
                                     "does not name: pass --dataset (and --data_dir) of the data it was trained on.")
    elif dataset:
        raise checks.ExportError(f"--dataset={dataset} applies to a .keras model file; the run directory {model_dir} "
                                 "exports with its own data: drop --dataset.")
    elif quantize == "qat":
        from ffl_tf.export import qat  # Imports tf_keras and tfmot, which only this mode needs.

        qat.check_supported(run_dir.read_config(model_dir), head)


def open_data(trained: saving.Trained, dataset: str | None = None, data_dir: str | None = None) -> tuple | None:
    """(train, eval, info, eval batch size): the run's own data, or `dataset` for a model file; None for a model
    file without `dataset`. Raises ExportError if `dataset` does not fit the model."""
    if trained.config is not None:
        config = trained.config
        train_ds, eval_ds, info = data.load(
            **config.dataset, seed=config.training["seed"], batch_size=config.training["batch_size"],
            eval_batch_size=config.execution["eval_batch_size"], download=False,
        )
        return train_ds, eval_ds, info, config.execution["eval_batch_size"]
    if not dataset:
        return None
    try:
        train_ds, eval_ds, info = data.load(dataset, data_dir=data_dir, image_size=saving.image_shape(trained)[0],
                                            seed=SEED, batch_size=BATCH_SIZE, eval_batch_size=EVAL_BATCH_SIZE,
                                            download=False)
    except ValueError as error:
        raise checks.ExportError(f"--dataset={dataset}: {error}") from None
    if len(info.class_names) != len(trained.class_names):
        raise checks.ExportError(f"--dataset={dataset} has {info.num_classes} classes and the model file "
                                 f"{trained.source} {len(trained.class_names)}: pass the data it was trained on.")
    return train_ds, eval_ds, info, EVAL_BATCH_SIZE


def export(
    model_dir: str,
    head: str,
    quantize: str,
    output: str,
    *,
    eval_examples: int | None = None,
    calibration_examples: int = 200,
    qat_steps: int = 200,
    qat_learning_rate: float = 1e-3,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> dict:
    """Converts `head` of the run in `model_dir` (or of a .keras model file, with `dataset` its data), writes it to
    `output`, evaluates it; returns the report."""
    validate(model_dir, head, quantize, output, dataset)
    trained = saving.load_trained(model_dir)
    checks.check_head(trained.heads, head, of=trained.source)
    keras_model = head_model(trained.model, head)
    opened = open_data(trained, dataset, data_dir)
    train_ds = opened[0] if opened else None
    if quantize == "qat":
        from ffl_tf.export import qat

        tflite_model = qat.quantization_aware_tflite(
            keras_model, trained.config, head, train_ds, steps=qat_steps, learning_rate=qat_learning_rate
        )
    else:
        calibration = calibration_images(train_ds, calibration_examples) if quantize == "int8" else None
        tflite_model = convert(keras_model, quantize, calibration)
    try:
        write(output, tflite_model)
    except OSError as error:
        raise checks.ExportError(f"--output={output} could not be written: {error}.") from error
    result = {"output": output, "bytes": len(tflite_model), "head": head, "quantize": quantize, "examples": 0}
    if opened is None:
        return result
    _, eval_ds, info, eval_batch_size = opened
    num_images = min(eval_examples or info.num_eval, info.num_eval)
    print(f"Evaluating on {num_images} of {info.num_eval} evaluation images "
          f"({math.ceil(num_images / eval_batch_size)} batches):")
    eval_ds = spread_sample(eval_ds, info.num_eval, eval_examples, eval_batch_size)
    return {**result, **evaluate(keras_model, tflite_model, eval_ds, num_images)}


def report(result: dict) -> str:
    """The file written and the two accuracies, for the terminal."""
    written = (f"Wrote {result['output']}: {result['head']}, quantize={result['quantize']}, "
               f"{result['bytes']:,} bytes ({result['bytes'] / 2**20:.2f} MiB)\n")
    if not result["examples"]:
        return written + "Not evaluated: pass --dataset (and --data_dir) to measure its top-1 accuracy."
    return (
        written +
        f"Top-1 accuracy on {result['examples']} evaluation images: Keras {result['keras']:.4f}, "
        f"TFLite {result['tflite']:.4f} (same top-1 class on {result['agreement']:.1%} of them)"
    )


def define_flags() -> None:
    """Defined only when run as a program, so importing this module never clashes with other CLIs' flags."""
    flags.DEFINE_string(
        "model_dir", None, "Required: the run directory written by `python -m ffl_tf.train` (its --model_dir), or a "
        ".keras model file."
    )
    flags.DEFINE_string("dataset", None, "With a .keras model file: the data it was trained on (as ffl_tf.train's "
                        "--dataset), to calibrate int8 on and measure accuracy on. A run directory uses its own.")
    flags.DEFINE_string("data_dir", None, "With --dataset: its data directory (as ffl_tf.train's --data_dir).")
    flags.DEFINE_string("head", "fused", "Head to convert: branch_<k>, ensemble or fused (qat: branch_<k> only).")
    flags.DEFINE_enum("quantize", "none", QUANTIZE, "Weight/activation quantization; see the module docstring.")
    flags.DEFINE_string("output", None, "Required: the .tflite file to write (atomically).")
    flags.DEFINE_integer(
        "eval_examples", None, "Evaluate on this many evaluation images (spread evenly); default: all.", lower_bound=1
    )
    flags.DEFINE_integer(
        "calibration_examples", 200, "Training images that calibrate the int8 activation ranges.", lower_bound=1
    )
    flags.DEFINE_integer("qat_steps", 200, "Quantization-aware fine-tuning steps (--quantize=qat).", lower_bound=1)
    flags.DEFINE_float("qat_learning_rate", 1e-3, "SGD learning rate of the quantization-aware fine-tuning.")
    flags.mark_flags_as_required(["model_dir", "output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        result = export(
            FLAGS.model_dir,
            FLAGS.head,
            FLAGS.quantize,
            FLAGS.output,
            eval_examples=FLAGS.eval_examples,
            calibration_examples=FLAGS.calibration_examples,
            qat_steps=FLAGS.qat_steps,
            qat_learning_rate=FLAGS.qat_learning_rate,
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
        )
    except (run_dir.RunError, checks.ExportError, data.DatasetNotFoundError) as error:
        sys.exit(f"export.tflite: error: {error}")
    print(report(result))


if __name__ == "__main__":
    define_flags()
    app.run(main)
