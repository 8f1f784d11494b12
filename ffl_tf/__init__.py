"""ffl_tf: Feature Fusion Learning (Kim et al., ICPR 2020) and other online-distillation methods in Keras 3.

Importing the package imports TensorFlow with its C++ start-up chatter filtered (see `ffl_tf.console`).
"""

import os

from ffl_tf import console

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # must be set before TensorFlow loads
with console.filtered_stderr(show_all=console.verbose_requested()):
    import tensorflow as _tf

    _tf.config.list_physical_devices()  # initialises the device platforms, whose probes log too
