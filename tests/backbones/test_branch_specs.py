"""Your own networks as branches: keras.Model objects, builder functions, Backbones, `module:function` names."""

import keras
import numpy as np
import pytest

from ffl_tf import methods
from ffl_tf.backbones import Backbone, BackboneError, get_backbone
from ffl_tf.backbones.cifar_resnet import resnet_stage
from ffl_tf.methods.ffl import build_ffl_model
from tests.backbones import builders


def trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_a_model_given_twice_is_cloned_and_a_builder_is_called_per_branch():
    cnn = builders.tiny_cnn()
    model = build_ffl_model([cnn, cnn, builders.tiny_cnn], 10, (16, 16, 3), shared_stages=0)
    kernels = [model.get_layer(f"branch_{k}").get_layer("tiny_cnn").get_layer("conv1").kernel for k in range(3)]
    assert kernels[0] is cnn.get_layer("conv1").kernel  # the object itself serves the first branch
    assert len({id(k) for k in kernels}) == 3  # ... and the others get weights of their own
    assert not np.allclose(kernels[0].numpy(), kernels[1].numpy())
    assert {k: v.shape for k, v in model(np.zeros((2, 16, 16, 3), "uint8")).items()} == {
        "branch_0": (2, 10), "branch_1": (2, 10), "branch_2": (2, 10), "ensemble": (2, 10), "fused": (2, 10)}


def test_a_backbone_of_your_own_can_share_a_trunk():
    def stem(x, name):
        return keras.layers.Conv2D(16, 3, padding="same", name=f"{name}_conv")(x)

    stages = tuple(
        lambda x, name, filters=f, stride=s: resnet_stage(x, name, filters=filters, stride=stride, blocks=1,
                                                          sync_bn=False)
        for f, s in ((16, 1), (32, 2))
    )
    mine = Backbone("mine", stem, stages)
    model = build_ffl_model([mine, mine], 10, (16, 16, 3), shared_stages=1)
    assert model.get_layer("trunk").output.shape[1:] == (16, 16, 16)
    assert model.get_layer("branch_0").get_layer("stage2_block0_1_conv") is not None


@pytest.mark.parametrize("spec, message", [
    ("tests.backbones.builders:pooled", r"returned a tensor of shape \(None, 8\); a branch must map images"),
    ("tests.backbones.builders:NOT_A_FUNCTION", "NOT_A_FUNCTION is not a function"),
    ("tests.backbones.no_such:build", "cannot import 'build' from module 'tests.backbones.no_such'"),
    (42, "Received: branch 42"),
])
def test_a_branch_that_breaks_the_contract_is_named_with_the_contract(spec, message):
    with pytest.raises(BackboneError, match=message):
        build_ffl_model([spec, "resnet8"], 10, (16, 16, 3), shared_stages=0)


def test_whole_networks_cannot_share_a_trunk():
    with pytest.raises(ValueError, match="a whole network given as one model has none: use shared_stages=0"):
        methods.ffl.validate(["tests.backbones.builders:tiny_cnn"] * 2, 1)


def test_module_function_spec_builds_the_same_network_as_calling_it():
    backbone = get_backbone("tests.backbones.builders:tiny_cnn")
    inputs = keras.Input((16, 16, 3))
    assert backbone.stem(inputs, "stem").shape[1:] == (8, 8, 32) and backbone.stages == ()
