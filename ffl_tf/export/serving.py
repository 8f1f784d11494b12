"""Inference functions on raw uint8 images, written as an inference-only SavedModel with `keras.export`.

The models normalise their input themselves, so every exported function takes the pixels as stored
(uint8, [batch, height, width, channels]) and needs no preprocessing from the caller.
"""

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

SIGNATURE = "serving_default"


def image_spec(model: keras.Model) -> tf.TensorSpec:
    """Any number of raw images of the size the model was trained on."""
    return tf.TensorSpec([None, *model.input.shape[1:]], tf.uint8, name="images")


def predictions_fn(model: keras.Model, class_names: Sequence[str]) -> Callable:
    """images -> {logits, probabilities, classes (int64 top class), class_names (its name)}."""

    def predict(images):
        logits = model(images, training=False)
        classes = tf.argmax(logits, axis=-1)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits),
            "classes": classes,
            "class_names": tf.gather(tf.constant(list(class_names)), classes),
        }

    return predict


def logits_fn(model: keras.Model) -> Callable:
    """images -> {logits}: the lean function converted to TFLite."""

    def predict(images):
        return {"logits": model(images, training=False)}

    return predict


def write_saved_model(model: keras.Model, fn: Callable, path: str) -> None:
    """Writes `fn` as the `serving_default` signature of a SavedModel holding only `model`'s variables."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, fn, input_signature=[image_spec(model)])
    archive.write_out(path, verbose=False)
