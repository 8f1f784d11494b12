"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis, 2016) for 32x32 images: pre-activation blocks.

Stem: 3x3 conv, 16 channels. Three stages of (d-4)/6 blocks with 16k, 32k, 64k channels. The last
stage ends with BN-ReLU, so the branch's feature map is activated like a post-activation ResNet's.

Pads like the authors' PyTorch code, so its weights give the same outputs: the stride-2 3x3 convs pad
1 pixel on each side, the stride-2 1x1 shortcut convs none; stride-1 convs keep "same".
"""

import functools

import keras

from ffl_tf.backbones import layers
from ffl_tf.backbones.backbone import Backbone


def _preact_block(x, filters: int, stride: int, *, sync_bn: bool, name: str):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut (1x1 conv of the activated input if shapes change)."""
    act = layers.batch_norm(sync=sync_bn, name=f"{name}_1_bn")(x)
    act = layers.relu(f"{name}_1_relu")(act)
    y = layers.conv(act, filters, 3, stride, name=f"{name}_1_conv")
    y = layers.batch_norm(sync=sync_bn, name=f"{name}_2_bn")(y)
    y = layers.relu(f"{name}_2_relu")(y)
    y = layers.conv(y, filters, 3, name=f"{name}_2_conv")
    if stride != 1 or x.shape[-1] != filters:
        x = layers.conv(act, filters, 1, stride, name=f"{name}_shortcut_conv")
    return keras.layers.Add(name=f"{name}_add")([y, x])


def _stem(x, name: str):
    return layers.conv(x, 16, 3, name=f"{name}_conv")


def _stage(x, name: str, *, filters: int, stride: int, blocks: int, last: bool, sync_bn: bool):
    for i in range(blocks):
        x = _preact_block(x, filters, stride if i == 0 else 1, sync_bn=sync_bn, name=f"{name}_block{i}")
    if last:
        x = layers.batch_norm(sync=sync_bn, name=f"{name}_final_bn")(x)
        x = layers.relu(f"{name}_final_relu")(x)
    return x


def wide_resnet(depth: int, width: int, *, sync_bn: bool = False) -> Backbone:
    """WRN-`depth`-`width`; `depth` must be 6n+4 (16, 22, 28, 40, ...)."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n+4 (16, 28, 40, ...), got {depth}.")
    blocks = (depth - 4) // 6
    widths = (16 * width, 32 * width, 64 * width)
    stages = tuple(
        functools.partial(
            _stage, filters=w, stride=1 if i == 0 else 2, blocks=blocks, last=i == 2, sync_bn=sync_bn
        )
        for i, w in enumerate(widths)
    )
    return Backbone(f"wrn{depth}_{width}", _stem, stages)
