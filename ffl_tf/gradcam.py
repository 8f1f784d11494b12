"""Grad-CAM of every head of a trained run: where in each image the branches and the fused classifier look.

    python -m ffl_tf.gradcam --model_dir=RUN IMAGE_OR_FOLDER... --output=grid.png [--class_name=NAME] [--dpi=100]

Grad-CAM (Selvaraju et al., ICCV 2017): for a class c with logit y_c and a feature map A (channels A^j),
the weights a_j = spatial mean of dy_c/dA^j and the map ReLU(sum_j a_j A^j), upsampled to the image.
Here A is a branch's last feature map (before pooling). A head that depends on several branches, the
fused classifier (through the fusion module) and the ensemble, gets one Grad-CAM per branch, each with
the gradient flowing from that head into that branch's map; their sum, each upsampled to the input size
and before normalisation, is the head's map. So every head, of every method, is explained the same way:
a branch head by its own branch only (the others' gradients are zero), the fused head by what each
branch's features contribute to it. ONE's gated ensemble is explained through its branches' logits, its
gate's weights held as computed (the gate reads the shared trunk, not the branches' maps).

The grid has one row per image: the image (as the model sees it, decoded like `ffl_tf.predict`), then
one panel per head titled with the head, the predicted class (or --class_name) and its probability. Each
panel's heat is normalised to its own maximum: colours compare regions within a panel, not across them;
image and heat are drawn at the model's input resolution. Files that cannot be decoded are skipped with
one line naming them, as `ffl_tf.predict` does.
"""

import dataclasses
import os
import sys
from collections.abc import Sequence

import keras
import matplotlib.cm
import matplotlib.colors
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from matplotlib.figure import Figure

from ffl_tf import heads, plots, predict, run_dir

FLAGS = flags.FLAGS
HEAT_ALPHA = 0.5
COLORMAP = "jet"


@dataclasses.dataclass
class Explanation:
    """One head's Grad-CAMs of N images: maps [N, H, W] (>= 0, not normalised), the class explained and its
    probability."""

    maps: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray


def feature_model(model: keras.Model) -> keras.Model:
    """images -> {"features": {branch_<k>: its last feature map}, "heads": model's logits}, sharing `model`'s layers.

    Re-traces the functional graph with the same layers (`clone_model` without copying any), recording
    the output of every `branch_<k>` sub-model as it is called, so any method and backbone works.
    """
    features = {}

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if heads.branch_index(layer.name) is not None:
            features[layer.name] = outputs["features"]
        return outputs

    graph = keras.Model(model.input, model.output)  # plain functional: cloning never recompiles it
    traced = keras.models.clone_model(graph, clone_function=lambda layer: layer, call_function=call)
    return keras.Model(traced.input, {"features": features, "heads": traced.output})


def grad_cam(model: keras.Model, images: np.ndarray, class_index: int | None = None) -> dict[str, Explanation]:
    """{head: Explanation} for every head of `model` on uint8 `images` [N, H, W, C].

    Explains each head's own top-1 class, or `class_index` for every head.
    """
    network = feature_model(model)
    images = tf.convert_to_tensor(images)
    with tf.GradientTape(persistent=True) as tape:
        outputs = network(images, training=False)
        features = [tf.cast(f, tf.float32) for f in outputs["features"].values()]
        scores, explained = {}, {}
        for head, logits in outputs["heads"].items():
            explained[head] = tf.argmax(logits, -1) if class_index is None else tf.fill([len(images)], class_index)
            scores[head] = tf.reduce_sum(tf.gather(logits, explained[head], axis=-1, batch_dims=1))
    size = images.shape[1:3]
    explanations = {}
    for head, logits in outputs["heads"].items():
        gradients = tape.gradient(scores[head], features, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        maps = sum(_upsampled_cam(f, g, size) for f, g in zip(features, gradients))
        probs = tf.gather(tf.nn.softmax(logits), explained[head], axis=-1, batch_dims=1)
        explanations[head] = Explanation(maps.numpy(), explained[head].numpy(), probs.numpy())
    return explanations


def _upsampled_cam(feature_map: tf.Tensor, gradient: tf.Tensor, size) -> tf.Tensor:
    """ReLU(sum_j a_j A^j) with a_j the spatial mean of the gradient, bilinearly resized to `size`: [N, H, W]."""
    weights = tf.reduce_mean(gradient, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1, keepdims=True))
    return tf.image.resize(cam, size, method="bilinear")[..., 0]


def normalised(heat: np.ndarray) -> np.ndarray:
    """`heat` scaled to [0, 1] by its maximum (all zeros stays zeros)."""
    peak = heat.max()
    return heat / peak if peak > 0 else heat


def draw_grid(images: np.ndarray, explanations: dict[str, Explanation], class_names: Sequence[str],
              labels: Sequence[str]) -> Figure:
    """A Figure with one row per image: the image titled by `labels`, then each head's heat over it."""
    rows, columns = len(images), 1 + len(explanations)
    figure = Figure(figsize=(1.9 * columns + 0.9, 2.05 * rows + 0.2), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    grey = images.shape[-1] == 1
    shown = images[..., 0] if grey else images
    for row in range(rows):
        axes[row, 0].imshow(shown[row], cmap="gray" if grey else None, vmin=0, vmax=255, interpolation="nearest")
        axes[row, 0].set_title(labels[row], fontsize=9)
        for column, (head, explanation) in enumerate(explanations.items(), start=1):
            ax = axes[row, column]
            ax.imshow(shown[row], cmap="gray" if grey else None, vmin=0, vmax=255, interpolation="nearest")
            ax.imshow(normalised(explanation.maps[row]), cmap=COLORMAP, vmin=0, vmax=1, alpha=HEAT_ALPHA,
                      interpolation="nearest")
            name = class_names[explanation.classes[row]]
            ax.set_title(f"{head}\n{name} {explanation.probabilities[row]:.0%}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), COLORMAP)
    figure.colorbar(scale, ax=axes, shrink=min(1.0, 0.9 / rows + 0.3), label="Grad-CAM (per panel, 0 to max)")
    return figure


def explain(model_dir: str, paths: Sequence[str], output: str, *, class_name: str | None = None,
            checkpoint_path: str | None = None, dpi: int = 100) -> list[str]:
    """Writes the Grad-CAM grid of the images in `paths` to `output`; returns the files it could not decode."""
    config = run_dir.read_config(model_dir)
    names = run_dir.class_names(config)
    if class_name is not None and class_name not in names:
        raise ValueError(f"--class_name={class_name} is not a class of this run; choose one of: {', '.join(names)}.")
    images, decoded, bad = predict.load_images(paths, config["model"]["image_shape"])
    model, _, _ = run_dir.load_trained_model(model_dir, checkpoint_path)
    explanations = grad_cam(model, images, None if class_name is None else names.index(class_name))
    plots.write_png(draw_grid(images, explanations, names, [_label(p) for p in decoded]), output, dpi=dpi)
    return bad


def _label(path: str, width: int = 24) -> str:
    """`folder/file` (the folder is often the class), shortened from the left to fit a panel's title."""
    label = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    return label if len(label) <= width else "…" + label[-(width - 1):]


def define_flags() -> None:
    """Defined only when run as a program, so importing this module never clashes with other CLIs' flags."""
    run_dir.define_run_flags()
    flags.adopt_module_key_flags(run_dir)  # --help lists them
    flags.DEFINE_string("output", None, "Required: the PNG file to write (one row per image, one column per head).")
    flags.DEFINE_string("class_name", None, "Explain this class for every head; default: each head's prediction.")
    flags.DEFINE_integer("dpi", 100, "Resolution of the PNG (pixels per inch; a panel is about 2 inches).",
                         lower_bound=20)
    flags.mark_flags_as_required(["output"])


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise app.UsageError("Pass at least one image file or folder after the flags.")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        bad = explain(FLAGS.model_dir, argv[1:], FLAGS.output, class_name=FLAGS.class_name,
                      checkpoint_path=FLAGS.checkpoint, dpi=FLAGS.dpi)
    except (run_dir.RunError, ValueError, OSError) as error:
        sys.exit(f"ffl_tf.gradcam: error: {error}")
    predict.report_skipped("ffl_tf.gradcam", bad)
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
