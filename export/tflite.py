"""`python -m export.tflite` in a checkout: runs `ffl_tf.export.tflite` (same flags and --help)."""

from ffl_tf import launcher

if __name__ == "__main__":
    launcher.run_module("ffl_tf.export.tflite")
