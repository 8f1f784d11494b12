"""Every registered backbone builds, and its single-network size matches the reference implementation."""

import keras
import numpy as np
import pytest

from ffl_tf.models import BACKBONES, get_backbone


def single_network(name: str, num_classes: int, size: int) -> keras.Model:
    """stem + all stages + GAP + dense: the plain classifier the backbone describes."""
    backbone = get_backbone(name)
    inputs = keras.Input((size, size, 3))
    x = backbone.stem(inputs, "stem")
    for i, stage in enumerate(backbone.stages):
        x = stage(x, f"stage{i + 1}")
    logits = keras.layers.Dense(num_classes)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, [x, logits])


def trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# Reference counts: official FFL/ONE CIFAR ResNets (SPEC section 4), the WRN authors' code, torchvision.
@pytest.mark.parametrize(
    "name, num_classes, size, params, feature_shape",
    [
        ("resnet32", 100, 32, 472_756, (8, 8, 64)),
        ("resnet56", 100, 32, 861_620, (8, 8, 64)),
        ("resnet110", 100, 32, 1_736_564, (8, 8, 64)),
        ("wrn16_2", 10, 32, 691_674, (8, 8, 128)),
        ("wrn40_2", 10, 32, 2_243_546, (8, 8, 128)),
        ("resnet18", 1000, 224, 11_689_512, (7, 7, 512)),
        ("resnet34", 1000, 224, 21_797_672, (7, 7, 512)),
        ("mobilenetv2", 1000, 224, 3_504_872, (7, 7, 1280)),
        ("mobilenetv2", 10, 32, 2_236_682, (4, 4, 1280)),
    ],
)
def test_parameter_counts_match_reference(name, num_classes, size, params, feature_shape):
    model = single_network(name, num_classes, size)
    assert trainable(model) == params
    assert tuple(model.outputs[0].shape[1:]) == feature_shape


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_on_cifar_images(name):
    features = single_network(name, 10, 32).outputs[0]
    assert features.shape[1] >= 1 and features.shape[-1] >= 64


def test_stages_build_fresh_layers_on_every_call():
    backbone = get_backbone("resnet20")
    inputs = keras.Input((32, 32, 3))
    x = backbone.stem(inputs, "stem")
    a, b = backbone.stages[0](x, "a"), backbone.stages[0](x, "b")
    model = keras.Model(inputs, [a, b])
    stem_params = 3 * 3 * 3 * 16 + 2 * 16
    stage_params = 3 * 2 * (3 * 3 * 16 * 16 + 2 * 16)
    assert trainable(model) == stem_params + 2 * stage_params


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet33'.*resnet32"):
        get_backbone("resnet33")


@pytest.mark.parametrize("builder, depth", [("cifar_resnet", 33), ("wide_resnet", 17)])
def test_bad_depth_is_rejected(builder, depth):
    from ffl_tf.models import cifar_resnet, wide_resnet

    with pytest.raises(ValueError, match="depth must be 6n"):
        if builder == "cifar_resnet":
            cifar_resnet(depth)
        else:
            wide_resnet(depth, 2)
