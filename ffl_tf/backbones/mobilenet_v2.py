"""MobileNetV2 (Sandler et al., 2018): inverted residual blocks, for mobile-sized branches.

On small inputs (at most 64 px, e.g. CIFAR) the stem and the first downsampling block keep stride 1,
the usual CIFAR adaptation, so a 32x32 image ends in a 4x4 map rather than 1x1.

Pads like torchvision's mobilenet_v2, so its weights give the same outputs: the stem's 3x3 conv and the
3x3 depthwise convs pad 1 pixel on each side when their stride is 2; stride-1 convs keep "same".
"""

import functools

import keras

from ffl_tf.backbones import layers
from ffl_tf.backbones.backbone import Backbone

SMALL_INPUT = 64

# (expansion t, channels c, repeats n, first stride s) per group, grouped into the stages branches may share.
STAGES = (
    ((1, 16, 1, 1), (6, 24, 2, 2)),
    ((6, 32, 3, 2),),
    ((6, 64, 4, 2), (6, 96, 3, 1)),
    ((6, 160, 3, 2), (6, 320, 1, 1)),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8 without losing more than 10%, as the reference implementation."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _stride(x, stride: int) -> int:
    """Stride for the stem and the first stage: 1 while the map is small (CIFAR-sized inputs)."""
    return 1 if max(x.shape[1], x.shape[2]) <= SMALL_INPUT else stride


def inverted_residual(x, expansion: int, filters: int, stride: int, *, sync_bn: bool, name: str):
    """1x1 expand - 3x3 depthwise - 1x1 linear project, with a residual when shapes match."""
    y = x
    if expansion != 1:
        y = layers.conv_bn(y, x.shape[-1] * expansion, 1, sync_bn=sync_bn, name=f"{name}_expand")
        y = layers.relu(f"{name}_expand_relu", 6.0)(y)
    y = layers.depthwise_conv(y, 3, stride, name=f"{name}_dw_conv")
    y = layers.batch_norm(sync=sync_bn, name=f"{name}_dw_bn")(y)
    y = layers.relu(f"{name}_dw_relu", 6.0)(y)
    y = layers.conv_bn(y, filters, 1, sync_bn=sync_bn, name=f"{name}_project")
    if stride == 1 and x.shape[-1] == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def _stem(x, name: str, *, alpha: float, sync_bn: bool):
    x = layers.conv_bn(x, _make_divisible(32 * alpha), 3, _stride(x, 2), sync_bn=sync_bn, name=name)
    return layers.relu(f"{name}_relu", 6.0)(x)


def _stage(x, name: str, *, groups, alpha: float, first: bool, last: bool, sync_bn: bool):
    block = 0
    for expansion, channels, repeats, stride in groups:
        stride = _stride(x, stride) if first else stride
        for i in range(repeats):
            x = inverted_residual(
                x, expansion, _make_divisible(channels * alpha), stride if i == 0 else 1,
                sync_bn=sync_bn, name=f"{name}_block{block}",
            )
            block += 1
    if last:
        x = layers.conv_bn(x, _make_divisible(1280 * max(alpha, 1.0)), 1, sync_bn=sync_bn, name=f"{name}_head")
        x = layers.relu(f"{name}_head_relu", 6.0)(x)
    return x


def mobilenet_v2(alpha: float = 1.0, *, sync_bn: bool = False) -> Backbone:
    """MobileNetV2 with width multiplier `alpha`; the last stage ends in the 1x1 conv to 1280 channels."""
    stages = tuple(
        functools.partial(
            _stage, groups=g, alpha=alpha, first=i == 0, last=i == len(STAGES) - 1, sync_bn=sync_bn
        )
        for i, g in enumerate(STAGES)
    )
    name = "mobilenetv2" if alpha == 1.0 else f"mobilenetv2_{round(alpha * 100):03d}"
    return Backbone(name, functools.partial(_stem, alpha=alpha, sync_bn=sync_bn), stages)
