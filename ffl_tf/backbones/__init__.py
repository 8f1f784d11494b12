"""Backbones: the registry of reference networks, and every other form a branch may take.

A branch is given as (see `get_backbone`):
- a registry name (`BACKBONES`: CIFAR ResNets, Wide ResNets, ImageNet ResNet-18/34, MobileNetV2);
- `keras:<Constructor>`, a keras.applications network (`keras_apps`);
- `package.module:function`, a zero-argument function returning a `keras.Model` or a `Backbone`;
- in Python, a `keras.Model` mapping images to a 4-D feature map, a zero-argument function returning one,
  or a `Backbone` (stem + stages, the form that can share a trunk).
Networks other than keras.applications take the run's normalised images ((pixels - mean) / std).
"""

import functools
import importlib
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from ffl_tf.backbones import keras_apps
from ffl_tf.backbones.backbone import Backbone, BackboneError, check_feature_map
from ffl_tf.backbones.cifar_resnet import cifar_resnet
from ffl_tf.backbones.imagenet_resnet import imagenet_resnet
from ffl_tf.backbones.mobilenet_v2 import mobilenet_v2
from ffl_tf.backbones.wide_resnet import wide_resnet

BACKBONES: dict[str, Callable[..., Backbone]] = {
    **{f"resnet{d}": functools.partial(cifar_resnet, d) for d in (8, 14, 20, 32, 44, 56, 110)},
    **{f"wrn{d}_{k}": functools.partial(wide_resnet, d, k) for d, k in
       ((16, 2), (16, 4), (16, 8), (28, 2), (28, 10), (40, 2), (40, 4))},
    "resnet18": functools.partial(imagenet_resnet, 18),
    "resnet34": functools.partial(imagenet_resnet, 34),
    "mobilenetv2": functools.partial(mobilenet_v2, 1.0),
    "mobilenetv2_050": functools.partial(mobilenet_v2, 0.5),
}
CONTRACT = ("a keras.Model mapping images [batch, H, W, C] to a 4-D feature map, a zero-argument function "
            "returning one, or a Backbone")
BranchSpec = str | Backbone | keras.Model | Callable[[], "keras.Model | Backbone"]

__all__ = ["BACKBONES", "Backbone", "BackboneError", "BranchSpec", "check_input", "check_spec", "describe",
           "get_backbone"]


def get_backbone(spec: BranchSpec, *, sync_bn: bool = False, pretrained: str | None = None) -> Backbone:
    """The Backbone a branch spec stands for; raises BackboneError naming the spec and the accepted forms.

    `sync_bn` applies to the registry networks, `pretrained` ("imagenet") to keras.applications ones.
    """
    if isinstance(spec, Backbone):
        return spec
    if isinstance(spec, keras.Model):
        return _from_model(lambda: spec, spec.name)
    if isinstance(spec, str):
        if spec in BACKBONES:
            return BACKBONES[spec](sync_bn=sync_bn)
        if spec.startswith(keras_apps.PREFIX):
            return keras_apps.application(spec.removeprefix(keras_apps.PREFIX), pretrained=pretrained)
        if ":" in spec:
            return _from_builder(import_builder(spec), spec)
        raise BackboneError(
            f"Unknown backbone {spec!r}; choose from: {', '.join(BACKBONES)}, or keras:<keras.applications "
            "constructor> (e.g. keras:MobileNetV3Small), or package.module:function."
        )
    if callable(spec):
        return _from_builder(spec, getattr(spec, "__name__", repr(spec)))
    raise BackboneError(f"Received: branch {spec!r}; a branch is a backbone name or {CONTRACT}.")


def check_spec(spec: str) -> None:
    """Raises BackboneError unless a `--backbones` entry names something that exists (nothing is built)."""
    if spec in BACKBONES:
        return
    if spec.startswith(keras_apps.PREFIX):
        keras_apps.constructor(spec.removeprefix(keras_apps.PREFIX))
    elif ":" in spec:
        import_builder(spec)
    else:
        get_backbone(spec)  # raises, listing the choices


def check_input(spec: str, image_shape, *, fix: str) -> None:
    """Builds a `keras:` or user branch once for `image_shape` and runs it on one black image (no weights are loaded),
    raising BackboneError, naming what the network refused and `fix`, when it cannot take those images (a
    keras.applications minimum size or channel count, a user network's fixed input). Registry backbones
    take any image of 8x8 pixels and more, so they are not built.
    """
    if spec in BACKBONES:
        return
    backbone = get_backbone(spec)
    shape = "x".join(map(str, image_shape))
    try:
        images = keras.Input(tuple(image_shape), dtype="uint8" if backbone.preprocess else "float32")
        x = backbone.stem(backbone.preprocess(images, "check") if backbone.preprocess else images, "check")
        for i, stage in enumerate(backbone.stages):
            x = stage(x, f"check_stage{i}")
        # A network built for other images may pass the symbolic call (Keras checks no channels there): run it.
        keras.Model(images, x)(np.zeros((1, *image_shape), images.dtype), training=False)
    except BackboneError:
        raise
    except (ValueError, TypeError, tf.errors.OpError) as error:
        reason = str(error).strip().splitlines()[0]
        raise BackboneError(f"--backbones={spec} cannot take the data's {shape} images ({reason}). Fix: {fix}") \
            from None


def import_builder(spec: str) -> Callable:
    """The function `package.module:function` names; raises BackboneError if it cannot be imported."""
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as error:
        raise BackboneError(
            f"--backbones={spec}: cannot import {function_name!r} from module {module_name!r} ({error}). The "
            f"function must be importable here and return {CONTRACT}."
        ) from None
    if not callable(function):
        raise BackboneError(f"--backbones={spec}: {function_name} is not a function; it must return {CONTRACT}.")
    return function


def describe(spec: BranchSpec) -> str:
    """A short name for a branch spec, for logs and run directory names."""
    return spec if isinstance(spec, str) else getattr(spec, "name", None) or getattr(spec, "__name__", "custom")


def _from_builder(builder: Callable, name: str) -> Backbone:
    """A zero-argument function returning a keras.Model (called once per branch) or a Backbone."""
    made = builder()
    if isinstance(made, Backbone):
        return made
    if not isinstance(made, keras.Model):
        raise BackboneError(f"Backbone {name} returned {type(made).__name__}; it must return {CONTRACT}.")
    first = [made]
    return _from_model(lambda: first.pop() if first else builder(), name)


def _from_model(make: Callable[[], keras.Model], name: str) -> Backbone:
    """A whole network as a backbone with no stages: its stem calls a fresh model from `make` each time."""

    def stem(x, prefix: str):
        return check_feature_map(make()(x), name)

    return Backbone(name, stem, ())
