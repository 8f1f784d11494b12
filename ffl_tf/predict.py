"""Predicts the top-k classes of image files with every head (or one) of a trained run.

    python -m ffl_tf.predict --model_dir=RUN IMAGE_OR_FOLDER... [--head=fused] [--top_k=5] [--format=table|json]

--model_dir may also be a `.keras` model file (model.save(), or RUN/model.keras that training writes).

Folders are searched recursively for .png/.jpg/.jpeg files (in sorted order); a file named on the command
line is read whatever its extension. Every image reaches the model exactly as the run's evaluation feeds
its images (`decode_image`): for runs on images up to 64 px (CIFAR, digits, small image folders) the
whole image is resized to the run's size, for larger ones its central 224/256 is cropped and resized;
grey-scale runs get it converted to grey. The newest readable checkpoint is used, or --checkpoint.

Files that cannot be decoded are skipped: one line on stderr names them and the other images are still
predicted (exit status 0), so one bad file in a folder does not hide the rest; if no file can be decoded,
the command fails. `--format=json` prints {"predictions": [{"image", "heads": {head: [{"class", "index",
"probability"}, ...]}}], "skipped": [...]} for scripts.
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__)

import json
import sys
from collections.abc import Sequence

import keras
import numpy as np
from absl import app, flags

from ffl_tf import saving
from ffl_tf.inspection.images import load_images, report_skipped
from ffl_tf.model.distillation import head_model
from ffl_tf.runs import run_dir

FLAGS = flags.FLAGS
BATCH_SIZE = 64


def probabilities(model: keras.Model, images: np.ndarray, head: str | None = None) -> dict[str, np.ndarray]:
    """{head: softmax probabilities [N, classes]} for every head of `model`, or only `head`."""
    network = head_model(model, head) if head else model
    outputs = [network(images[i : i + BATCH_SIZE], training=False) for i in range(0, len(images), BATCH_SIZE)]
    if head:
        outputs = [{head: logits} for logits in outputs]
    return {name: np.concatenate([keras.ops.convert_to_numpy(keras.ops.softmax(o[name])) for o in outputs])
            for name in outputs[0]}


def top_k(probs: dict[str, np.ndarray], names: Sequence[str], k: int) -> list[dict[str, list[dict]]]:
    """Per image, {head: the k most probable classes as {"class", "index", "probability"}, best first}."""
    ranked = {head: np.argsort(-p, axis=-1, kind="stable")[:, :k] for head, p in probs.items()}
    return [
        {head: [{"class": names[c], "index": int(c), "probability": float(probs[head][i, c])} for c in order[i]]
         for head, order in ranked.items()}
        for i in range(len(next(iter(probs.values()))))
    ]


def table(paths: Sequence[str], predictions: list[dict]) -> str:
    """A readable block per image: one line per head with its top classes and probabilities."""
    lines = []
    for path, by_head in zip(paths, predictions):
        width = max(len(head) for head in by_head)
        lines.append(path)
        for head, ranked in by_head.items():
            cells = "  ".join(f"{p['class']} {p['probability']:6.1%}" for p in ranked)
            lines.append(f"  {head:<{width}}  {cells}")
    return "\n".join(lines)


def predict(model_dir: str, paths: Sequence[str], *, head: str | None = None, k: int = 5,
            checkpoint_path: str | None = None) -> dict:
    """{"predictions": [{"image", "heads"}], "skipped": [undecodable paths]} for the images in `paths`; `model_dir`
    is a run directory or a .keras model file."""
    heads = saving.run_heads(model_dir)
    _check_head(heads, head, "this run")  # a run's before its model is built; a model file's once loaded
    trained = saving.load_trained(model_dir, checkpoint_path)
    _check_head(trained.heads, head, "this model")
    images, decoded, bad = load_images(paths, saving.image_shape(trained))
    ranked = top_k(probabilities(trained.model, images, head), trained.class_names, k)
    return {"predictions": [{"image": p, "heads": r} for p, r in zip(decoded, ranked)], "skipped": bad}


def _check_head(valid: list[str] | None, head: str | None, of: str) -> None:
    if head is not None and valid is not None and head not in valid:
        raise ValueError(f"--head={head} is not a head of {of}; choose one of: {', '.join(valid)}.")


def define_flags() -> None:
    """Defined only when run as a program, so importing this module never clashes with other CLIs' flags."""
    run_dir.define_run_flags(model_file=True)
    flags.adopt_module_key_flags(run_dir)  # --help lists them
    flags.DEFINE_string("head", None, "Only this head (branch_<k>, ensemble, fused); default: every head.")
    flags.DEFINE_integer("top_k", 5, "Classes shown per head, most probable first.", lower_bound=1)
    flags.DEFINE_enum("format", "table", ["table", "json"], "table: readable; json: for scripts.")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise app.UsageError("Pass at least one image file or folder after the flags.")
    try:
        result = predict(FLAGS.model_dir, argv[1:], head=FLAGS.head, k=FLAGS.top_k, checkpoint_path=FLAGS.checkpoint)
    except (run_dir.RunError, ValueError) as error:
        sys.exit(f"ffl_tf.predict: error: {error}")
    report_skipped("ffl_tf.predict", result["skipped"])
    if FLAGS.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(table([p["image"] for p in result["predictions"]], [p["heads"] for p in result["predictions"]]))


if __name__ == "__main__":
    define_flags()
    app.run(main)
