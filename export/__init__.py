"""The export commands of a checkout: `python -m export.saved_model` and `python -m export.tflite`.

They run `ffl_tf.export.saved_model` and `ffl_tf.export.tflite`, which ship with the package (installed as
the `ffl-export-saved-model` and `ffl-export-tflite` commands). This folder is not installed: a top-level
module named `export` in site-packages would shadow any other project's `export`.
"""
