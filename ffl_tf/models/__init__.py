"""Backbone registry: every name accepted by `--backbones`."""

import functools
from collections.abc import Callable

from ffl_tf.models.backbone import Backbone
from ffl_tf.models.cifar_resnet import cifar_resnet
from ffl_tf.models.imagenet_resnet import imagenet_resnet
from ffl_tf.models.mobilenet_v2 import mobilenet_v2
from ffl_tf.models.wide_resnet import wide_resnet

BACKBONES: dict[str, Callable[..., Backbone]] = {
    **{f"resnet{d}": functools.partial(cifar_resnet, d) for d in (8, 14, 20, 32, 44, 56, 110)},
    **{f"wrn{d}_{k}": functools.partial(wide_resnet, d, k) for d, k in
       ((16, 2), (16, 4), (16, 8), (28, 2), (28, 10), (40, 2), (40, 4))},
    "resnet18": functools.partial(imagenet_resnet, 18),
    "resnet34": functools.partial(imagenet_resnet, 34),
    "mobilenetv2": functools.partial(mobilenet_v2, 1.0),
    "mobilenetv2_050": functools.partial(mobilenet_v2, 0.5),
}


def get_backbone(name: str, *, sync_bn: bool = False) -> Backbone:
    """The backbone registered as `name`; raises ValueError listing the known names."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose from: {', '.join(BACKBONES)}.")
    return BACKBONES[name](sync_bn=sync_bn)
