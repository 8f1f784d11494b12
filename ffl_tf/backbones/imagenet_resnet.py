"""ImageNet ResNet-18/34 (He et al., 2016) with BasicBlocks, for 224x224 images.

Stem: 7x7/2 conv, 64 channels, BN-ReLU, 3x3/2 max-pool. Four stages with 64, 128, 256, 512 channels;
the FFL recipe shares the stem and the first three stages between branches.

Pads like torchvision's resnet18/resnet34, so its weights give the same outputs: the 7x7/2 stem conv
pads 3 pixels on each side, the 3x3/2 max-pool and the stride-2 3x3 convs of stages 2-4 pad 1, their
stride-2 1x1 shortcut convs none; stride-1 convs keep "same".
"""

import functools

from ffl_tf.backbones import layers
from ffl_tf.backbones.backbone import Backbone
from ffl_tf.backbones.cifar_resnet import resnet_stage

WIDTHS = (64, 128, 256, 512)
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _stem(x, name: str, *, sync_bn: bool):
    x = layers.conv_bn(x, WIDTHS[0], 7, 2, sync_bn=sync_bn, name=name)
    x = layers.relu(f"{name}_relu")(x)
    # Zero padding where torchvision pads with -inf: the same maxima, since the ReLU makes every input >= 0.
    return layers.max_pool(x, 3, 2, name=f"{name}_pool")


def imagenet_resnet(depth: int, *, sync_bn: bool = False) -> Backbone:
    """ResNet-18 or ResNet-34."""
    if depth not in BLOCKS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(BLOCKS)}, got {depth}.")
    stages = tuple(
        functools.partial(resnet_stage, filters=w, stride=1 if i == 0 else 2, blocks=n, sync_bn=sync_bn)
        for i, (w, n) in enumerate(zip(WIDTHS, BLOCKS[depth]))
    )
    return Backbone(f"resnet{depth}", functools.partial(_stem, sync_bn=sync_bn), stages)
