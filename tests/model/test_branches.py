"""Branch construction: shared trunks, independent and heterogeneous branches, clear errors."""

import keras
import pytest

from ffl_tf.model.branches import build_branches, validate_branches


def build(backbones, shared_stages, size=32):
    inputs = keras.Input((size, size, 3))
    _, outputs = build_branches(inputs, inputs, backbones, num_classes=10, shared_stages=shared_stages)
    return keras.Model(inputs, outputs), outputs


def test_shared_trunk_is_one_model_called_once():
    model, outputs = build(["resnet20"] * 3, 2)
    assert [layer.name for layer in model.layers][1:] == ["trunk", "branch_0", "branch_1", "branch_2"]
    assert model.get_layer("trunk").output.shape[1:] == (16, 16, 32)
    assert all(o["features"].shape[1:] == (8, 8, 64) for o in outputs)
    # Each branch holds only stage 3 and its classifier.
    assert not any(layer.name.startswith(("stem", "stage1")) for layer in model.get_layer("branch_0").layers)


def test_independent_branches_have_their_own_stem():
    model, _ = build(["resnet20", "resnet20"], 0)
    assert "trunk" not in [layer.name for layer in model.layers]
    assert model.get_layer("branch_1").get_layer("stem_conv") is not model.get_layer("branch_0").get_layer("stem_conv")


@pytest.mark.parametrize(
    "backbones, feature_shapes",
    [
        (["resnet32", "wrn16_2"], [(8, 8, 64), (8, 8, 128)]),
        (["resnet20", "mobilenetv2"], [(8, 8, 64), (4, 4, 1280)]),
    ],
)
def test_heterogeneous_branches(backbones, feature_shapes):
    _, outputs = build(backbones, 0)
    assert [tuple(o["features"].shape[1:]) for o in outputs] == feature_shapes
    assert all(o["logits"].shape[1:] == (10,) for o in outputs)


@pytest.mark.parametrize(
    "backbones, shared_stages, message",
    [
        (["resnet32", "wrn16_2"], 1, "different architectures, so they cannot share stages"),
        (["resnet32", "resnet32"], 3, "shared_stages=3 is too large for resnet32, which has 3 stages"),
        (["resnet32"], 0, "at least 2 branches"),
        (["resnet32", "resnet32"], -1, "must be >= 0"),
    ],
)
def test_impossible_layouts_fail_clearly(backbones, shared_stages, message):
    with pytest.raises(ValueError, match=message):
        validate_branches(backbones, shared_stages)


def test_branches_start_from_different_weights():
    model, _ = build(["resnet20"] * 2, 2)
    def kernel(k):
        return model.get_layer(f"branch_{k}").get_layer("stage3_block1_1_conv").kernel.numpy()

    assert not (kernel(0) == kernel(1)).any()
    block = model.get_layer("branch_0")
    same_block = block.get_layer("stage3_block1_1_conv").kernel.numpy()
    assert not (same_block == block.get_layer("stage3_block2_1_conv").kernel.numpy()).any()
