"""The FFL fusion module: concatenated branch feature maps -> separable conv -> fused classifier."""

from collections.abc import Sequence

import keras

from ffl_tf.backbones import layers


def build_fusion(
    feature_shapes: Sequence[tuple[int, int, int]],
    num_classes: int,
    *,
    channels: int | None = None,
    sync_bn: bool = False,
    name: str = "fusion",
) -> keras.Model:
    """A model mapping K feature maps to fused logits (float32), as in the official FFL code.

    Maps are average-pooled to the smallest spatial size, concatenated on channels, mixed by a depthwise
    3x3 conv and a pointwise 1x1 conv to `channels` (default: the first map's channel count), each
    followed by BN-ReLU, then global-average-pooled into a dense classifier. Initialised as the official
    code initialises it (`layers.depthwise_init`, `layers.dense_initializers`).
    """
    if len(feature_shapes) < 2:
        raise ValueError(f"The fusion module needs at least 2 feature maps, got {len(feature_shapes)}.")
    height = min(s[0] for s in feature_shapes)
    width = min(s[1] for s in feature_shapes)
    inputs = [keras.Input(shape, name=f"features_{k}") for k, shape in enumerate(feature_shapes)]
    maps = [_pool_to(x, height, width, name=f"pool_{k}") for k, x in enumerate(inputs)]
    x = keras.layers.Concatenate(name="concat")(maps)
    x = layers.depthwise_conv(x, 3, name="depthwise")
    x = layers.batch_norm(sync=sync_bn, name="depthwise_bn")(x)
    x = layers.relu("depthwise_relu")(x)
    x = layers.conv(x, channels or feature_shapes[0][-1], 1, name="pointwise")
    x = layers.batch_norm(sync=sync_bn, name="pointwise_bn")(x)
    x = layers.relu("pointwise_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.dense(x, num_classes, dtype="float32", name="classifier")
    return keras.Model(inputs, logits, name=name)


def _pool_to(x, height: int, width: int, *, name: str):
    """Average-pool `x` down to height x width; the sizes must divide evenly."""
    h, w = x.shape[1], x.shape[2]
    if (h, w) == (height, width):
        return x
    if h % height or w % width:
        raise ValueError(
            f"Cannot fuse a {h}x{w} feature map with a {height}x{width} one: the larger size must be a "
            "multiple of the smaller. Choose backbones whose final maps divide evenly (e.g. same input size)."
        )
    return keras.layers.AveragePooling2D((h // height, w // width), name=name)(x)
