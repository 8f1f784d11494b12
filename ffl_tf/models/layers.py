"""Layer factories shared by the backbones: PyTorch-equivalent defaults for convs and batch norm."""

import keras

def conv_init() -> keras.initializers.Initializer:
    """kaiming_normal_(mode="fan_out", nonlinearity="relu"), as the official PyTorch ResNets initialise convs.

    A fresh instance per layer: an unseeded Keras initializer repeats its values on every call, which
    would start every same-shaped conv (in every branch) from identical kernels.
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def conv(filters: int, kernel_size: int, stride: int = 1, *, name: str) -> keras.layers.Conv2D:
    """A bias-free convolution with "same" padding (batch norm follows every conv)."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer=conv_init(),
        name=name,
    )


def batch_norm(*, sync: bool, name: str) -> keras.layers.BatchNormalization:
    """Batch norm with PyTorch's momentum (0.1) and epsilon; `sync` averages statistics across replicas."""
    return keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, synchronized=sync, name=name
    )


def conv_bn(x, filters: int, kernel_size: int, stride: int = 1, *, sync_bn: bool, name: str):
    """conv -> batch norm (no activation)."""
    x = conv(filters, kernel_size, stride, name=f"{name}_conv")(x)
    return batch_norm(sync=sync_bn, name=f"{name}_bn")(x)


def relu(name: str, max_value: float | None = None) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=max_value, name=name)
