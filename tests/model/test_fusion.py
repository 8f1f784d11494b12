"""The fusion module: official parameter count, any K, mixed channel counts and spatial sizes."""

import keras
import numpy as np
import pytest

from ffl_tf.model.fusion import build_fusion


def trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_official_fusion_module_has_16228_parameters():
    fusion = build_fusion([(8, 8, 64), (8, 8, 64)], 100)
    # depthwise 3x3 on 128 ch + BN, pointwise 128->64 + BN, dense 64->100.
    assert trainable(fusion) == 128 * 9 + 2 * 128 + 128 * 64 + 2 * 64 + 64 * 100 + 100 == 16_228


def test_layer_sequence_is_depthwise_bn_relu_pointwise_bn_relu_pool_dense():
    fusion = build_fusion([(8, 8, 64), (8, 8, 64)], 10)
    kinds = [type(layer).__name__ for layer in fusion.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert kinds == [
        "Concatenate", "DepthwiseConv2D", "BatchNorm", "ReLU",
        "Conv2D", "BatchNorm", "ReLU", "GlobalAveragePooling2D", "Dense",
    ]
    assert all(isinstance(layer, keras.layers.BatchNormalization) for layer in fusion.layers if "bn" in layer.name)
    assert fusion.get_layer("depthwise").kernel_size == (3, 3)
    assert fusion.get_layer("pointwise").kernel_size == (1, 1)
    assert not fusion.get_layer("depthwise").use_bias and not fusion.get_layer("pointwise").use_bias


def test_three_branches_and_custom_channels():
    fusion = build_fusion([(8, 8, 64)] * 3, 10, channels=32)
    assert fusion.get_layer("depthwise").output.shape[-1] == 192
    assert fusion.get_layer("pointwise").output.shape[-1] == 32
    out = fusion([np.ones((2, 8, 8, 64), "float32")] * 3)
    assert out.shape == (2, 10)


def test_heterogeneous_maps_are_pooled_to_the_smallest_size():
    fusion = build_fusion([(8, 8, 64), (4, 4, 1280)], 10)
    assert fusion.get_layer("concat").output.shape[1:] == (4, 4, 1344)
    assert fusion.get_layer("pointwise").output.shape[-1] == 64
    first = np.arange(2 * 8 * 8 * 64, dtype="float32").reshape(2, 8, 8, 64)
    pooled = fusion.get_layer("pool_0")(first)
    np.testing.assert_allclose(pooled[0, 0, 0, 0], first[0, :2, :2, 0].mean())


def test_fused_logits_are_float32_under_mixed_precision(mixed_float16):
    fusion = build_fusion([(8, 8, 16), (8, 8, 16)], 10)
    assert fusion.get_layer("depthwise").compute_dtype == "float16"
    assert fusion.output.dtype == "float32"


def test_maps_that_do_not_divide_are_rejected():
    with pytest.raises(ValueError, match="Cannot fuse a 7x7 feature map with a 4x4"):
        build_fusion([(7, 7, 8), (4, 4, 8)], 10)


def test_single_map_is_rejected():
    with pytest.raises(ValueError, match="at least 2 feature maps"):
        build_fusion([(8, 8, 8)], 10)
