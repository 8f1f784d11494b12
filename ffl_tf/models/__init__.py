"""Deprecated: `ffl_tf.models` is now `ffl_tf.backbones` (the networks a branch is built from); this path keeps
working for this release, with a DeprecationWarning, and will be removed in the next one.

`import ffl_tf.models.cifar_resnet` and the like resolve to the same modules of `ffl_tf.backbones`.
"""

import importlib
import sys
import warnings

from ffl_tf.backbones import *  # noqa: F403
from ffl_tf.backbones import __all__  # noqa: F401

warnings.warn("ffl_tf.models is deprecated; import ffl_tf.backbones instead.", DeprecationWarning, stacklevel=2)

for _name in ("backbone", "batch_norm", "cifar_resnet", "imagenet_resnet", "keras_apps", "layers", "mobilenet_v2",
              "wide_resnet"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"ffl_tf.backbones.{_name}")
