"""CIFAR ResNets of depth 6n+2 with BasicBlocks, as in the official FFL (and ONE) PyTorch code.

Stem: 3x3 conv, 16 channels. Three stages of n blocks with 16, 32, 64 channels; the first block of
stages 2 and 3 halves the resolution and projects its shortcut with a 1x1 conv + BN.

Pads like the official FFL PyTorch code, so its weights give the same outputs: the stride-2 3x3 convs
pad 1 pixel on each side, the stride-2 1x1 shortcut convs none; stride-1 convs keep "same".
"""

import functools

import keras

from ffl_tf.backbones import layers
from ffl_tf.backbones.backbone import Backbone

WIDTHS = (16, 32, 64)


def basic_block(x, filters: int, stride: int, *, sync_bn: bool, name: str):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU."""
    shortcut = x
    y = layers.conv_bn(x, filters, 3, stride, sync_bn=sync_bn, name=f"{name}_1")
    y = layers.relu(f"{name}_1_relu")(y)
    y = layers.conv_bn(y, filters, 3, sync_bn=sync_bn, name=f"{name}_2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.conv_bn(x, filters, 1, stride, sync_bn=sync_bn, name=f"{name}_shortcut")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.relu(f"{name}_out")(y)


def _stem(x, name: str, *, sync_bn: bool):
    x = layers.conv_bn(x, WIDTHS[0], 3, sync_bn=sync_bn, name=name)
    return layers.relu(f"{name}_relu")(x)


def resnet_stage(x, name: str, *, filters: int, stride: int, blocks: int, sync_bn: bool):
    """`blocks` BasicBlocks; the first one has `stride` (shared by the CIFAR and ImageNet ResNets)."""
    for i in range(blocks):
        x = basic_block(x, filters, stride if i == 0 else 1, sync_bn=sync_bn, name=f"{name}_block{i}")
    return x


def cifar_resnet(depth: int, *, sync_bn: bool = False) -> Backbone:
    """ResNet-`depth` for 32x32 images; `depth` must be 6n+2 (20, 32, 44, 56, 110, ...)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, 110, ...), got {depth}.")
    blocks = (depth - 2) // 6
    stages = tuple(
        functools.partial(resnet_stage, filters=w, stride=1 if i == 0 else 2, blocks=blocks, sync_bn=sync_bn)
        for i, w in enumerate(WIDTHS)
    )
    return Backbone(f"resnet{depth}", functools.partial(_stem, sync_bn=sync_bn), stages)
