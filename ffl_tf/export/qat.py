"""Quantization-aware fine-tuning (QAT) of one FFL branch with tensorflow-model-optimization, to int8 TFLite.

tfmot only accepts tf_keras (Keras 2) models, so the branch (with the trunk it shares) is rebuilt here
with tf_keras layers mirroring ffl_tf/models/cifar_resnet.py and imagenet_resnet.py, under the same layer
names, and its weights are copied from the Keras 3 model by name. Every layer is quantized, and so is the
output of the input normalisation (a layer tfmot does not know), which marks where the int8 network
begins. The tf_keras model takes pixels as float32 (tfmot quantizes its input with the range fixed to
[0, 255], so exactly); the TFLite model takes raw uint8 pixels, normalises them in float (a few
element-wise ops) and runs everything after that in int8.

This module and `tfmot_compat` (tfmot's private names it relies on) are the only ones that import tf_keras and
tfmot. Importing tfmot points `tf.keras` at tf_keras for the whole process, so import this module only when
QAT is asked for.
"""

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from ffl_tf.backbones import BACKBONES
from ffl_tf.backbones.cifar_resnet import WIDTHS as CIFAR_WIDTHS
from ffl_tf.backbones.cifar_resnet import cifar_resnet
from ffl_tf.backbones.imagenet_resnet import BLOCKS as IMAGENET_BLOCKS
from ffl_tf.backbones.imagenet_resnet import WIDTHS as IMAGENET_WIDTHS
from ffl_tf.backbones.imagenet_resnet import imagenet_resnet
from ffl_tf.backbones.layers import BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM
from ffl_tf.export import checks, serving, tfmot_compat
from ffl_tf.export.tfmot_compat import tfmot  # imported there without its side effect on os.environ
from ffl_tf.model import heads
from ffl_tf.runs.config import RunConfig

layers = tf_keras.layers
quantization = tfmot.quantization.keras

# The copied tf_keras branch must reproduce the Keras 3 logits to this absolute tolerance.
MIRROR_TOLERANCE = 1e-4


def resnet_layout(backbone: str) -> tuple[str, tuple[int, ...], tuple[int, ...]] | None:
    """(stem, channels per stage, blocks per stage) of a registered ResNet backbone, or None for others."""
    factory = BACKBONES.get(backbone)
    if getattr(factory, "func", None) is cifar_resnet:
        blocks = (factory.args[0] - 2) // 6
        return "cifar", CIFAR_WIDTHS, (blocks,) * len(CIFAR_WIDTHS)
    if getattr(factory, "func", None) is imagenet_resnet:
        return "imagenet", IMAGENET_WIDTHS, IMAGENET_BLOCKS[factory.args[0]]
    return None


def check_supported(config: RunConfig, head: str) -> None:
    """Raises ExportError unless `head` is a branch whose backbone the tf_keras mirror can build."""
    if heads.branch_index(head) is None:
        raise checks.ExportError(
            f"--quantize=qat fine-tunes a single branch, not --head={head}; pass --head=branch_<k>, or use "
            "--quantize=int8 for this head."
        )
    backbone = config.model["backbones"][heads.branch_index(head)]
    if resnet_layout(backbone) is None:
        supported = [name for name in BACKBONES if resnet_layout(name)]
        raise checks.ExportError(
            f"--quantize=qat is not supported yet for {head}'s backbone {backbone}, only for "
            f"{', '.join(supported)}; use --quantize=int8 instead."
        )


def _reference_pad(x, kernel_size: int, stride: int, *, name: str):
    """Mirrors ffl_tf.models.layers.reference_pad: (k - 1) // 2 zeros on each side at stride > 1, then "valid"."""
    if stride == 1:
        return x, "same"
    if kernel_size > 1:
        x = layers.ZeroPadding2D((kernel_size - 1) // 2, name=f"{name}_pad")(x)
    return x, "valid"


def _conv_bn(x, filters: int, kernel_size: int, stride: int = 1, *, name: str):
    x, padding = _reference_pad(x, kernel_size, stride, name=f"{name}_conv")
    x = layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    return layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)


def _basic_block(x, filters: int, stride: int, *, name: str):
    """Mirrors ffl_tf.models.cifar_resnet.basic_block."""
    shortcut = x
    y = _conv_bn(x, filters, 3, stride, name=f"{name}_1")
    y = layers.ReLU(name=f"{name}_1_relu")(y)
    y = _conv_bn(y, filters, 3, name=f"{name}_2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, name=f"{name}_shortcut")
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def build_branch(config: RunConfig, head: str) -> tf_keras.Model:
    """`head` (a ResNet branch with its trunk) as a tf_keras model from raw pixels (float32, 0-255) to logits."""
    model_config = config.model
    stem, widths, blocks = resnet_layout(model_config["backbones"][heads.branch_index(head)])
    images = layers.Input(model_config["image_shape"], name="images")
    x = layers.Normalization(
        mean=model_config["mean"], variance=np.square(model_config["std"]).tolist(), name="normalize"
    )(images)
    if stem == "cifar":
        x = layers.ReLU(name="stem_relu")(_conv_bn(x, widths[0], 3, name="stem"))
    else:
        x = layers.ReLU(name="stem_relu")(_conv_bn(x, widths[0], 7, 2, name="stem"))
        x, padding = _reference_pad(x, 3, 2, name="stem_pool")
        x = layers.MaxPooling2D(3, 2, padding=padding, name="stem_pool")(x)
    for i, (filters, count) in enumerate(zip(widths, blocks)):
        for j in range(count):
            stride = 2 if i > 0 and j == 0 else 1
            x = _basic_block(x, filters, stride, name=f"stage{i + 1}_block{j}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.Dense(model_config["num_classes"], name="classifier")(x)
    return tf_keras.Model(images, logits, name=head)


def _leaf_layers(model: keras.Model) -> list:
    """The layers of `model`, with nested models (the trunk, the branch) replaced by their own layers."""
    return [leaf for layer in model.layers for leaf in (_leaf_layers(layer) if hasattr(layer, "layers") else [layer])]


def copy_weights(source: keras.Model, target: tf_keras.Model) -> None:
    """Copies every weight of the Keras 3 `source` into the layer of the same name in `target`."""
    by_name = {layer.name: layer for layer in _leaf_layers(source)}
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(by_name[layer.name].get_weights())


def check_same_logits(source: keras.Model, target: tf_keras.Model, images: np.ndarray) -> float:
    """Raises unless the two models give the same logits on `images`; returns the largest difference."""
    difference = float(np.max(np.abs(source.predict_on_batch(images) - target.predict_on_batch(images))))
    if not difference <= MIRROR_TOLERANCE:
        raise RuntimeError(
            f"The tf_keras copy of {source.name} gives logits {difference:.2g} away from the Keras 3 model's "
            f"(tolerance {MIRROR_TOLERANCE}): export/qat.py's builder no longer mirrors ffl_tf/models."
        )
    return difference


class OutputQuantizeConfig(quantization.QuantizeConfig):
    """Quantizes only a layer's output: marks where the int8 network begins (after the float normalisation)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [quantization.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                                narrow_range=False)]

    def get_config(self):
        return {}


def quantize(model: tf_keras.Model) -> tf_keras.Model:
    """`model` with fake-quantization (tfmot's default 8-bit scheme) on every layer after the normalisation."""

    def annotate(layer):
        config = OutputQuantizeConfig() if layer.name == "normalize" else None
        return quantization.quantize_annotate_layer(layer, quantize_config=config)

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    with quantization.quantize_scope({"OutputQuantizeConfig": OutputQuantizeConfig}):
        quantized = quantization.quantize_apply(annotated)
    fix_pixel_range(quantized)
    return quantized


def fix_pixel_range(model: tf_keras.Model) -> None:
    """Sets the input quantizer's range to [0, 255]: pixels then quantize exactly, with scale 1.

    tfmot's input quantizer tracks the min/max of every batch seen, starting from these values, so the
    range stays [0, 255] during fine-tuning.
    """
    tfmot_compat.set_input_range(model, 0.0, 255.0)


def fine_tune(model: tf_keras.Model, train_ds: tf.data.Dataset, *, steps: int, learning_rate: float) -> None:
    """A short run of plain cross-entropy SGD that adapts the weights (and learns ranges) under quantization."""
    model.compile(
        optimizer=tf_keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_ds, steps_per_epoch=steps, epochs=1)


def to_tflite(model: tf_keras.Model) -> bytes:
    """The fine-tuned model as int8 TFLite; the fake-quant ranges become the int8 scales, no calibration needed.

    The converter is given a bare module holding the model's variables (enough to freeze them): given the
    tf_keras model itself, it would serialise it as a Keras SavedModel, tracing every layer, 5x slower.
    """
    predict = tf.function(
        lambda images: {"logits": model(tf.cast(images, tf.float32), training=False)},
        input_signature=[serving.image_spec(model)],
    )
    variables = tf.Module()
    variables.weights = list(model.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([predict.get_concrete_function()], variables)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def quantization_aware_tflite(
    keras_branch: keras.Model, config: dict, head: str, train_ds: tf.data.Dataset, *, steps: int, learning_rate: float
) -> bytes:
    """Copies `keras_branch` into tf_keras, checks the copy, fine-tunes it quantization-aware, converts it."""
    branch = build_branch(config, head)
    copy_weights(keras_branch, branch)
    images = next(iter(train_ds))[0].numpy()
    difference = check_same_logits(keras_branch, branch, images)
    print(f"tf_keras copy of {head} matches the Keras 3 logits (max difference {difference:.2g}); "
          f"quantization-aware fine-tuning for {steps} steps:")
    quantized = quantize(branch)
    fine_tune(quantized, train_ds, steps=steps, learning_rate=learning_rate)
    return to_tflite(quantized)
