"""`python -m export.saved_model` in a checkout: runs `ffl_tf.export.saved_model` (same flags and --help)."""

from ffl_tf import launcher

if __name__ == "__main__":
    launcher.run_module("ffl_tf.export.saved_model")
