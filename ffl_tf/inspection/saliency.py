"""Grad-CAM of every head of a model (Selvaraju et al., ICCV 2017), and the grid of images that shows them.

`ffl_tf.gradcam` (the command) explains how each head's map is made from the branches' last feature maps.
"""

import dataclasses
from collections.abc import Sequence

import keras
import matplotlib.cm
import matplotlib.colors
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from ffl_tf.model import heads

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
