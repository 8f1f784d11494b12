"""keras.applications networks as branches: `keras:<Constructor>`, e.g. `keras:MobileNetV3Small`.

Any `keras.applications` constructor that takes `include_top`, `weights` and `input_shape` works. The
branch takes the raw pixels and applies the application's own `preprocess_input` inside the model, so
training and every export still take raw uint8 images. Its batch-norm layers average their moving
statistics with the library's momentum (0.9, PyTorch's 0.1) rather than the applications' 0.99-0.999.
`pretrained="imagenet"` loads its ImageNet weights from the Keras cache ($KERAS_HOME/models, default
~/.keras/models), downloading them when the machine has network; offline and not cached, building fails
within seconds naming the file and where to put it.
"""

import inspect

import keras

from ffl_tf.backbones import layers
from ffl_tf.backbones.backbone import Backbone, BackboneError, check_feature_map
from ffl_tf.utils import keras_compat

PREFIX = "keras:"
_REQUIRED_ARGUMENTS = ("include_top", "weights", "input_shape")


def constructor(name: str):
    """The keras.applications constructor `name`; raises BackboneError unless it takes the arguments we pass."""
    build = getattr(keras.applications, name, None)
    parameters = inspect.signature(build).parameters if callable(build) else {}
    if not all(argument in parameters for argument in _REQUIRED_ARGUMENTS):
        known = [n for n in dir(keras.applications) if n[:1].isupper()]
        raise BackboneError(
            f"{PREFIX}{name} is not a keras.applications constructor taking {', '.join(_REQUIRED_ARGUMENTS)}. "
            f"Choose from: {', '.join(known)}."
        )
    return build


@keras.saving.register_keras_serializable(package="ffl_tf", name="ApplicationPreprocessing")
class ApplicationPreprocessing(keras.layers.Layer):
    """Raw pixels -> the input a keras.applications network expects (its module's `preprocess_input`, computed
    in float32 whatever the dtype policy; `module` names it, e.g. "mobilenet_v3")."""

    def __init__(self, module: str, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.module = module

    def call(self, images):
        return getattr(keras.applications, self.module).preprocess_input(keras.ops.cast(images, "float32"))

    def get_config(self):
        return {**super().get_config(), "module": self.module}


def application(name: str, *, pretrained: str | None = None) -> Backbone:
    """`keras.applications.<name>` (no top) as a backbone with its own preprocessing; no stages to share.

    `pretrained`: "imagenet" for its ImageNet weights; None or "none" for random initialisation.
    """
    build = constructor(name)
    module = build.__module__.rsplit(".", 1)[-1]  # e.g. keras.src.applications.mobilenet_v3 -> mobilenet_v3

    def stem(x, prefix: str):
        with keras_compat.offline_weights(f"{PREFIX}{name}"):
            weights = None if pretrained in (None, "none") else pretrained
            network = build(include_top=False, weights=weights, input_shape=tuple(x.shape[1:]))
        # keras.applications build batch norm with momentum 0.99-0.999: from scratch, their moving statistics
        # are still near their initial values after a few hundred steps, and evaluation is at chance.
        for layer in network.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = layers.BATCH_NORM_MOMENTUM
        return check_feature_map(network(x), f"{PREFIX}{name}")

    def preprocess(images, prefix: str):
        return ApplicationPreprocessing(module, name=f"{prefix}_preprocess")(images)

    return Backbone(f"{PREFIX}{name}", stem, (), preprocess=preprocess)
