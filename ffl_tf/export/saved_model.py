"""Exports one head of a trained FFL run as a TF Serving model: `EXPORT_DIR/<version>/saved_model.pb`.

    python -m export.saved_model --model_dir=RUN --head=fused --export_dir=exports/ffl
    ffl-export-saved-model --model_dir=model.keras --head=fused --export_dir=exports/ffl   # a Keras model file

--model_dir is a run directory (its newest readable checkpoint is exported) or a `.keras` model file (model.save(),
or RUN/model.keras that training writes).

Each export adds the next version (1, 2, ...). A version is written to a hidden temporary directory and
renamed into place only when complete, so a running TF Serving never loads a half-written version and a
failed export leaves nothing behind. The `serving_default` signature takes raw uint8 images
(`images`, [batch, height, width, channels]) and returns `logits`, `probabilities`, `classes` (int64)
and `class_names` (string). A branch export holds that branch and the shared trunk only.
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__)

import os
import sys
from collections.abc import Callable

import keras
import tensorflow as tf
from absl import app, flags
from tensorflow.core.protobuf import saved_model_pb2

from ffl_tf import saving
from ffl_tf.export import checks, serving
from ffl_tf.model.distillation import head_model
from ffl_tf.runs import run_dir
from ffl_tf.utils import atomic

FLAGS = flags.FLAGS

# Builds a REST request from an image file; {height}, {width}, {channels} are the model's input size.
REQUEST_SNIPPET = """\
import json, sys
import tensorflow as tf
image = tf.io.decode_image(tf.io.read_file(sys.argv[1]), channels={channels}, expand_animations=False)
image = tf.image.resize(image, ({height}, {width}), antialias=True)
instances = [tf.saturate_cast(tf.round(image), tf.uint8).numpy().tolist()]
with open("request.json", "w") as f:
    json.dump({{"instances": instances}}, f)
"""


def next_version(export_dir: str) -> int:
    """One more than the largest numeric version in `export_dir` (TF Serving's versions), or 1."""
    if not os.path.isdir(export_dir):
        return 1
    return max((int(name) for name in os.listdir(export_dir) if name.isdigit()), default=0) + 1


def export_version(model: keras.Model, fn: Callable, export_dir: str) -> str:
    """Writes `fn` on `model` as the next version under `export_dir`, atomically; returns its directory."""
    version_dir = os.path.join(export_dir, str(next_version(export_dir)))
    with atomic.atomic_path(version_dir, is_dir=True) as tmp:
        serving.write_saved_model(model, fn, tmp)
    return version_dir


def signature(version_dir: str) -> dict[str, dict[str, tuple[str, list[int]]]]:
    """{"inputs"|"outputs": {name: (dtype, shape)}} of `serving_default`, read from saved_model.pb."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    signature_def = saved_model.meta_graphs[0].signature_def[serving.SIGNATURE]

    def describe(tensors) -> dict:
        return {
            name: (tf.dtypes.as_dtype(info.dtype).name, [d.size for d in info.tensor_shape.dim])
            for name, info in sorted(tensors.items())
        }

    return {"inputs": describe(signature_def.inputs), "outputs": describe(signature_def.outputs)}


def serving_instructions(version_dir: str, model_name: str) -> str:
    """The signature and the commands that serve this export with TF Serving and query it over REST."""
    base_path = os.path.dirname(os.path.abspath(version_dir))
    tensors_by_kind = signature(version_dir)
    lines = [f"Signature '{serving.SIGNATURE}' of {version_dir}:"]
    for kind, tensors in tensors_by_kind.items():
        for name, (dtype, shape) in tensors.items():
            lines.append(f"  {kind[:-1]:<6} {name:<14} {dtype:<8} {shape}")
    height, width, channels = tensors_by_kind["inputs"]["images"][1][1:]
    lines += [
        "",
        "Serve it (TF Serving loads the newest version and picks up new ones as they appear):",
        f"  docker run -p 8501:8501 --mount type=bind,source={base_path},target=/models/{model_name} "
        f"-e MODEL_NAME={model_name} -t tensorflow/serving",
        "",
        f'Query it: the body is {{"instances": [image, ...]}}, each image a {height}x{width}x{channels} nested '
        "list of 0-255 ints, e.g.",
        f"  curl -d '{{\"instances\": [[[[0, 0, 0], ...], ...]]}}' -X POST "
        f"http://localhost:8501/v1/models/{model_name}:predict",
        "To build a real request.json from an image file (python make_request.py cat.png), save as make_request.py:",
        *("  " + line for line in REQUEST_SNIPPET.format(height=height, width=width, channels=channels).splitlines()),
        f"then: curl -d @request.json -X POST http://localhost:8501/v1/models/{model_name}:predict",
    ]
    return "\n".join(lines)


def export(model_dir: str, head: str, export_dir: str) -> str:
    """Exports `head` of the run in `model_dir` (or of a .keras model file) as the next version under `export_dir`;
    returns its directory."""
    heads = saving.run_heads(model_dir)
    if heads is not None:  # a run: checked before its model is built
        checks.check_head(heads, head)
    checks.check_writable_dir(export_dir, "export_dir")
    trained = saving.load_trained(model_dir)
    checks.check_head(trained.heads, head, of=trained.source)
    head_net = head_model(trained.model, head)
    try:
        return export_version(head_net, serving.predictions_fn(head_net, trained.class_names), export_dir)
    except OSError as error:
        raise checks.ExportError(f"--export_dir={export_dir} could not be written: {error}.") from error


def define_flags() -> None:
    """Defined only when run as a program, so importing this module never clashes with other CLIs' flags."""
    flags.DEFINE_string(
        "model_dir", None, "Required: the run directory written by `python -m ffl_tf.train` (its --model_dir), or a "
        ".keras model file."
    )
    flags.DEFINE_string("head", "fused", "Head to export: branch_<k>, ensemble or fused.")
    flags.DEFINE_string(
        "export_dir", None, "Required: the TF Serving model base path; the export becomes its next version, <dir>/<n>/."
    )
    flags.DEFINE_string(
        "model_name", None, "Model name in the printed TF Serving commands; default: the export_dir's name."
    )
    flags.mark_flags_as_required(["model_dir", "export_dir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    model_dir, head, export_dir = FLAGS.model_dir, FLAGS.head, FLAGS.export_dir
    model_name = FLAGS.model_name or os.path.basename(os.path.abspath(export_dir))
    try:
        version_dir = export(model_dir, head, export_dir)
    except (run_dir.RunError, checks.ExportError) as error:
        sys.exit(f"export.saved_model: error: {error}")
    print(f"Exported {head} of {model_dir} to {version_dir}\n")
    print(serving_instructions(version_dir, model_name))


if __name__ == "__main__":
    define_flags()
    app.run(main)
