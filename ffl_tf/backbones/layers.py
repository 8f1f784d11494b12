"""Layer helpers shared by the backbones: PyTorch-equivalent convs, pooling and batch norm.

Every strided layer pads like its PyTorch reference: a k x k kernel with stride > 1 gets (k - 1) // 2
zero pixels on EACH side (`ZeroPadding2D` named `<layer name>_pad`, then a "valid" layer), so weights
carried over from the reference networks give the same outputs. Keras's own "same" padding would
differ at stride 2 on even sizes: it pads 0 pixels before and 1 after, shifting every window by one.
Stride-1 layers keep "same", which is symmetric for odd kernels.
"""

import contextlib
from collections.abc import Iterator

import keras

from ffl_tf.backbones.batch_norm import BatchNorm

# PyTorch's batch-norm defaults (its momentum 0.1 weighs the new batch; Keras's momentum weighs the old
# average): every network of the library uses them, keras.applications branches included.
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5

# True only inside `keras_same_padding()`: strided layers then use Keras "same" padding.
_keras_same_padding = False


@contextlib.contextmanager
def keras_same_padding() -> Iterator[None]:
    """Builds strided layers with Keras "same" padding (as before the explicit padding) while active.

    It exists only so that benchmarks/padding.py can time the network as it was against the network as it
    is; no model uses it.
    """
    global _keras_same_padding
    previous, _keras_same_padding = _keras_same_padding, True
    try:
        yield
    finally:
        _keras_same_padding = previous


def reference_pad(x, kernel_size: int, stride: int, *, name: str) -> tuple["keras.KerasTensor", str]:
    """(`x` padded as PyTorch pads a `kernel_size` window at `stride`, padding mode for the layer that follows).

    Stride 1: `x` unchanged and "same". Stride > 1: `x` with (k - 1) // 2 zeros on each side (no layer
    when that is 0, as for 1x1 shortcuts) and "valid".
    """
    if stride == 1 or _keras_same_padding:
        return x, "same"
    padding = (kernel_size - 1) // 2
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return x, "valid"


def conv_init() -> keras.initializers.Initializer:
    """kaiming_normal_(mode="fan_out", nonlinearity="relu"), as the official PyTorch ResNets initialise convs.

    A fresh instance per layer: an unseeded Keras initializer repeats its values on every call, which
    would start every same-shaped conv (in every branch) from identical kernels.
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def depthwise_init(channels: int) -> keras.initializers.Initializer:
    """PyTorch's kaiming_normal_(mode="fan_out") for a depthwise kernel of `channels` input channels.

    PyTorch counts a grouped conv's fan-out as out_channels * k * k (the official FFL code writes it out as
    normal(0, sqrt(2 / (k * k * out_channels))), torchvision's MobileNetV2 calls kaiming_normal_), where
    Keras counts a depthwise kernel's as k * k * multiplier: scaling by 1 / channels gives PyTorch's std.
    """
    return keras.initializers.VarianceScaling(scale=2.0 / channels, mode="fan_out", distribution="untruncated_normal")


def dense_initializers(fan_in: int, *, use_bias: bool = True) -> dict[str, keras.initializers.Initializer]:
    """PyTorch's `nn.Linear` default: kernel and bias uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)].

    The reference code leaves its classifiers (and ONE's gate, OKDDip's projections) at that default;
    Keras's Dense default (Glorot-uniform kernel, zero bias) is 1.5-2.3x wider for 64 -> 100 or 10 classes.
    Fresh instances per layer, as `conv_init` explains.
    """
    bound = fan_in**-0.5
    initializers = {"kernel_initializer": keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform")}
    if use_bias:
        initializers["bias_initializer"] = keras.initializers.RandomUniform(-bound, bound)
    return initializers


def dense(x, units: int, *, name: str, use_bias: bool = True, dtype=None) -> "keras.KerasTensor":
    """`x` through a dense layer initialised as PyTorch's `nn.Linear` (`dense_initializers`)."""
    return keras.layers.Dense(units, use_bias=use_bias, dtype=dtype, name=name,
                              **dense_initializers(int(x.shape[-1]), use_bias=use_bias))(x)


def conv(x, filters: int, kernel_size: int, stride: int = 1, *, name: str) -> "keras.KerasTensor":
    """`x` through a bias-free convolution padded as in PyTorch (batch norm follows every conv)."""
    x, padding = reference_pad(x, kernel_size, stride, name=name)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=conv_init(),
        name=name,
    )(x)


def depthwise_conv(x, kernel_size: int, stride: int = 1, *, name: str) -> "keras.KerasTensor":
    """`x` through a bias-free depthwise convolution padded as in PyTorch."""
    x, padding = reference_pad(x, kernel_size, stride, name=name)
    return keras.layers.DepthwiseConv2D(
        kernel_size,
        stride,
        padding=padding,
        use_bias=False,
        depthwise_initializer=depthwise_init(int(x.shape[-1])),
        name=name,
    )(x)


def max_pool(x, pool_size: int, stride: int, *, name: str) -> "keras.KerasTensor":
    """`x` through max pooling padded as in PyTorch; `x` must be non-negative (it follows a ReLU).

    PyTorch pads max pooling with -inf. On inputs >= 0 a zero pad never exceeds the window's own
    maximum (every window holds at least one real pixel), so zero padding gives the same result.
    """
    x, padding = reference_pad(x, pool_size, stride, name=name)
    return keras.layers.MaxPooling2D(pool_size, stride, padding=padding, name=name)(x)


def batch_norm(*, sync: bool, name: str) -> keras.layers.BatchNormalization:
    """Batch norm with PyTorch's momentum (0.1) and epsilon, computed by the fused kernel (`BatchNorm`);
    `sync` averages statistics across replicas."""
    return BatchNorm(momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, synchronized=sync, name=name)


def conv_bn(x, filters: int, kernel_size: int, stride: int = 1, *, sync_bn: bool, name: str) -> "keras.KerasTensor":
    """conv -> batch norm (no activation)."""
    x = conv(x, filters, kernel_size, stride, name=f"{name}_conv")
    return batch_norm(sync=sync_bn, name=f"{name}_bn")(x)


def relu(name: str, max_value: float | None = None) -> keras.layers.ReLU:
    return keras.layers.ReLU(max_value=max_value, name=name)
