"""Initialisation like the reference code's, per kind of layer: convs kaiming_normal_(fan_out), depthwise convs with
PyTorch's grouped fan-out, and the layers the references leave at nn.Linear's default (classifiers, ONE's gate,
OKDDip's projections): kernel and bias uniform in +-1/sqrt(fan_in)."""

import keras
import numpy as np
import pytest

from ffl_tf import methods
from ffl_tf.backbones import layers


def weights_of(build, shape) -> dict[str, np.ndarray]:
    inputs = keras.Input(shape)
    model = keras.Model(inputs, build(inputs))
    return {w.path.split("/")[-1]: np.asarray(w) for w in model.weights}


def test_convs_are_kaiming_normal_with_pytorchs_fan_out():
    kernel = weights_of(lambda x: layers.conv(x, 64, 3, name="c"), (8, 8, 32))["kernel"]
    assert kernel.std() == pytest.approx(np.sqrt(2 / (3 * 3 * 64)), rel=0.03) and abs(kernel.mean()) < 2e-3


def test_depthwise_convs_count_every_channel_in_their_fan_out_as_pytorch_does():
    # PyTorch's fan-out of a (C, 1, 3, 3) grouped kernel is C * 9; Keras's own would be 9 (a std sqrt(C) wider).
    kernel = weights_of(lambda x: layers.depthwise_conv(x, 3, name="d"), (8, 8, 256))["kernel"]
    assert kernel.std() == pytest.approx(np.sqrt(2 / (3 * 3 * 256)), rel=0.05)


@pytest.mark.parametrize("fan_in, units", [(64, 100), (64, 10), (32, 3)])
def test_dense_layers_are_uniform_in_one_over_the_square_root_of_their_fan_in(fan_in, units):
    keras.utils.set_random_seed(0)
    found = weights_of(lambda x: layers.dense(x, units, name="fc"), (fan_in,))
    bound = fan_in**-0.5
    kernel, bias = found["kernel"].ravel(), found["bias"]
    assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
    # Uniform in +-bound: std bound / sqrt(3), and (for the kernel's many values) reaching near the bound.
    assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.1 if kernel.size > 1000 else 0.3)
    assert np.abs(kernel).max() > 0.9 * bound and np.abs(bias).max() > 0  # Keras's Dense default: zero bias


def test_the_methods_classifiers_gate_and_projections_use_it():
    for method, backbones, shared, layer_paths in [
        ("ffl", ["resnet8"] * 2, 1, [("branch_0", "classifier"), ("fusion", "classifier")]),
        ("one", ["resnet8"] * 3, 1, [("branch_2", "classifier"), ("gate", "dense")]),
        ("okddip", ["resnet8"] * 3, 1, [("attention", "query"), ("attention", "key")]),
    ]:
        model = methods.get(method).build(backbones, 10, (8, 8, 3), shared_stages=shared)
        for outer, inner in layer_paths:
            container = model.get_layer(outer)
            layer = container.get_layer(inner) if isinstance(container, keras.Model) else getattr(container, inner)
            kernel = np.asarray(layer.kernel)
            assert np.abs(kernel).max() <= kernel.shape[0] ** -0.5, (method, outer, inner)
            if layer.use_bias:
                assert np.abs(np.asarray(layer.bias)).max() > 0, (method, outer, inner)  # not Keras's zeros
