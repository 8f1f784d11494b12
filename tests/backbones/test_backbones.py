"""Every registered backbone builds, its single-network size matches the reference implementation, and its
strided layers pad like the PyTorch reference, so the reference's weights give the reference's outputs."""

from collections.abc import Callable

import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from ffl_tf.backbones import BACKBONES, get_backbone
from ffl_tf.backbones import layers as backbone_layers


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


# Reference counts: official FFL/ONE CIFAR ResNets (docs/method.md), the WRN authors' code, torchvision.
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
    from ffl_tf.backbones import cifar_resnet, wide_resnet

    with pytest.raises(ValueError, match="depth must be 6n"):
        if builder == "cifar_resnet":
            cifar_resnet(depth)
        else:
            wide_resnet(depth, 2)


# --- Padding: the Keras layers against a NumPy reference padded as PyTorch pads (symmetric zeros) ---

BN_EPSILON = 1e-5  # PyTorch's BatchNorm2d default


def reference_padding(size: int, kernel: int, stride: int, mode: str) -> tuple[int, int]:
    """(before, after) padding of one spatial axis: PyTorch's `padding=(k - 1) // 2`, or Keras/TF "same"."""
    if mode == "pytorch":
        return (kernel - 1) // 2, (kernel - 1) // 2
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def np_windows(x: np.ndarray, kernel: int, stride: int, mode: str, fill: float = 0.0) -> np.ndarray:
    """(N, H_out, W_out, C, k, k) windows of NHWC `x`; H_out = floor((H + 2p - k) / s) + 1 in PyTorch mode."""
    pads = [reference_padding(x.shape[axis], kernel, stride, mode) for axis in (1, 2)]
    x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=fill)
    return sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]


def np_conv(x: np.ndarray, kernel: np.ndarray, stride: int, mode: str) -> np.ndarray:
    """Cross-correlation with an HWIO `kernel`, as Conv2d (and Keras Conv2D) compute it."""
    return np.einsum("nhwcij,ijco->nhwo", np_windows(x, kernel.shape[0], stride, mode), kernel)


def np_depthwise(x: np.ndarray, kernel: np.ndarray, stride: int, mode: str) -> np.ndarray:
    """Depthwise cross-correlation with a (k, k, C, 1) `kernel` (Conv2d with groups=C)."""
    return np.einsum("nhwcij,ijc->nhwc", np_windows(x, kernel.shape[0], stride, mode), kernel[..., 0])


def np_max_pool(x: np.ndarray, size: int, stride: int, mode: str) -> np.ndarray:
    """Max pooling padded with -inf, as MaxPool2d pads (and TF's "same" max pooling)."""
    return np_windows(x, size, stride, mode, fill=-np.inf).max(axis=(-2, -1))


def np_batch_norm(x: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
    gamma, beta, mean, variance = weights
    return (x - mean) / np.sqrt(variance + BN_EPSILON) * gamma + beta


def np_relu(x: np.ndarray, max_value: float = np.inf) -> np.ndarray:
    return np.clip(x, 0.0, max_value)


# A reference network: (input, weights of a layer by name, padding mode) -> the Keras model's outputs.
Reference = Callable[[np.ndarray, Callable[[str], list[np.ndarray]], str], list[np.ndarray]]


def np_conv_bn(x, weights, name: str, stride: int, mode: str) -> np.ndarray:
    return np_batch_norm(np_conv(x, weights(f"{name}_conv")[0], stride, mode), weights(f"{name}_bn"))


def np_basic_block(x, weights, name: str, stride: int, mode: str) -> np.ndarray:
    """The post-activation BasicBlock of the FFL code and torchvision: shortcut 1x1 conv + BN when shapes change."""
    y = np_relu(np_conv_bn(x, weights, f"{name}_1", stride, mode))
    y = np_conv_bn(y, weights, f"{name}_2", 1, mode)
    if stride != 1 or x.shape[-1] != y.shape[-1]:
        x = np_conv_bn(x, weights, f"{name}_shortcut", stride, mode)
    return np_relu(y + x)


def np_preact_block(x, weights, name: str, stride: int, mode: str) -> np.ndarray:
    """The WRN block: BN-ReLU-conv-BN-ReLU-conv, shortcut 1x1 conv of the activated input when shapes change."""
    act = np_relu(np_batch_norm(x, weights(f"{name}_1_bn")))
    y = np_conv(act, weights(f"{name}_1_conv")[0], stride, mode)
    y = np_relu(np_batch_norm(y, weights(f"{name}_2_bn")))
    y = np_conv(y, weights(f"{name}_2_conv")[0], 1, mode)
    if stride != 1 or x.shape[-1] != y.shape[-1]:
        x = np_conv(act, weights(f"{name}_shortcut_conv")[0], stride, mode)
    return y + x


def np_inverted_residual(x, weights, name: str, stride: int, mode: str) -> np.ndarray:
    """torchvision's InvertedResidual with expansion > 1: expand, depthwise 3x3 at `stride`, linear project."""
    y = np_relu(np_conv_bn(x, weights, f"{name}_expand", 1, mode), 6.0)
    y = np_depthwise(y, weights(f"{name}_dw_conv")[0], stride, mode)
    y = np_relu(np_batch_norm(y, weights(f"{name}_dw_bn")), 6.0)
    y = np_conv_bn(y, weights, f"{name}_project", 1, mode)
    return x + y if stride == 1 and x.shape[-1] == y.shape[-1] else y


def randomise_batch_norms(model: keras.Model, rng: np.random.Generator) -> None:
    """Distinct, non-trivial BN parameters and statistics, so the reference checks inference-mode BN too."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                               rng.uniform(0.5, 1.5, c)])


def assert_matches(outputs: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """Equal to 1e-5 of each output's largest magnitude: float32 rounding, not a one-pixel shift."""
    for output, reference in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(output, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


def predict(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """The model's outputs in inference mode (BN uses its statistics), as a list even when there is one."""
    outputs = model(x, training=False)
    return [np.asarray(y) for y in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def check_pytorch_padding(build: Callable, input_shape: tuple[int, int, int], reference: Reference) -> keras.Model:
    """The model `build` makes matches `reference` padded as PyTorch pads, and the same model built with
    Keras "same" padding (the layers before the explicit padding) matches it padded as TF pads, far from
    PyTorch's; so the check would fail with Keras "same" padding. Returns the (new) model."""
    rng = np.random.default_rng(0)
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, build(inputs))
    randomise_batch_norms(model, rng)
    with backbone_layers.keras_same_padding():
        inputs = keras.Input(input_shape)
        same_model = keras.Model(inputs, build(inputs))
    same_model.set_weights(model.get_weights())
    x = rng.normal(size=(2, *input_shape)).astype("float32")

    def weights(name: str) -> list[np.ndarray]:
        return [w.astype("float64") for w in model.get_layer(name).get_weights()]

    pytorch, tf_same = (reference(x.astype("float64"), weights, mode) for mode in ("pytorch", "same"))
    assert_matches(predict(model, x), pytorch)
    assert_matches(predict(same_model, x), tf_same)
    for a, b in zip(pytorch, tf_same):
        assert np.abs(a - b).max() > 0.1 * np.abs(a).max()  # a one-pixel shift: far beyond float32 rounding
    return model


def test_cifar_resnet_downsampling_block_pads_like_the_ffl_pytorch_code():
    stage = get_backbone("resnet8").stages[1]  # one BasicBlock: 3x3/2 conv (padding 1), 1x1/2 shortcut

    def reference(x, weights, mode):
        return [np_basic_block(x, weights, "stage2_block0", 2, mode)]

    model = check_pytorch_padding(lambda x: [stage(x, "stage2")], (8, 8, 16), reference)
    assert model.get_layer("stage2_block0_1_conv_pad").padding == ((1, 1), (1, 1))
    assert model.outputs[0].shape[1:] == (4, 4, 32)
    assert "stage2_block0_shortcut_conv_pad" not in [layer.name for layer in model.layers]  # 1x1: padding 0


def test_wide_resnet_downsampling_stage_pads_like_the_authors_code():
    stage = get_backbone("wrn16_2").stages[1]  # two pre-activation blocks, the first with stride 2

    def reference(x, weights, mode):
        x = np_preact_block(x, weights, "stage2_block0", 2, mode)
        return [np_preact_block(x, weights, "stage2_block1", 1, mode)]

    model = check_pytorch_padding(lambda x: [stage(x, "stage2")], (8, 8, 32), reference)
    assert model.outputs[0].shape[1:] == (4, 4, 64)


def test_imagenet_resnet_stem_max_pool_and_downsampling_stage_pad_like_torchvision():
    backbone = get_backbone("resnet18")

    def build(x):
        stem = backbone.stem(x, "stem")  # 7x7/2 conv (padding 3), BN-ReLU, 3x3/2 max-pool (padding 1)
        return [stem, backbone.stages[1](stem, "stage2")]  # two BasicBlocks, the first with stride 2

    def reference(x, weights, mode):
        stem = np_max_pool(np_relu(np_conv_bn(x, weights, "stem", 2, mode)), 3, 2, mode)
        y = np_basic_block(stem, weights, "stage2_block0", 2, mode)
        return [stem, np_basic_block(y, weights, "stage2_block1", 1, mode)]

    model = check_pytorch_padding(build, (32, 32, 3), reference)
    assert model.get_layer("stem_conv_pad").padding == ((3, 3), (3, 3))
    assert model.get_layer("stem_pool_pad").padding == ((1, 1), (1, 1))
    assert [tuple(y.shape[1:]) for y in model.outputs] == [(8, 8, 64), (4, 4, 128)]


def test_mobilenet_v2_strided_stem_and_depthwise_convs_pad_like_torchvision():
    backbone = get_backbone("mobilenetv2")

    def stem_reference(x, weights, mode):  # above 64 px the stem has stride 2
        return [np_relu(np_conv_bn(x, weights, "stem", 2, mode), 6.0)]

    stem = check_pytorch_padding(lambda x: [backbone.stem(x, "stem")], (72, 72, 3), stem_reference)
    assert stem.outputs[0].shape[1:] == (36, 36, 32)

    def stage_reference(x, weights, mode):  # three inverted residuals, the first with a stride-2 depthwise conv
        for i in range(3):
            x = np_inverted_residual(x, weights, f"stage2_block{i}", 2 if i == 0 else 1, mode)
        return [x]

    stage = check_pytorch_padding(lambda x: [backbone.stages[1](x, "stage2")], (8, 8, 24), stage_reference)
    assert stage.get_layer("stage2_block0_dw_conv_pad").padding == ((1, 1), (1, 1))
    assert stage.outputs[0].shape[1:] == (4, 4, 32)
