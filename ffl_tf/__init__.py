"""ffl_tf: Feature Fusion Learning (Kim et al., ICPR 2020) and other online-distillation methods in Keras 3.

Importing it imports nothing heavy and changes nothing in the importing program (no environment variable,
file descriptor or logging setting): the commands set up their own process (`ffl_tf.launcher`).
"""

__version__ = "0.2.0"
