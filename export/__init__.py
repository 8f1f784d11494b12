"""Exports of trained runs: SavedModel for TF Serving (`export.saved_model`) and TFLite (`export.tflite`)."""

import ffl_tf  # noqa: F401  (imports TensorFlow quietly, before the export modules do)
