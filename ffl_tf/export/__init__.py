"""Exports of trained runs: SavedModel for TF Serving (`ffl_tf.export.saved_model`) and TFLite
(`ffl_tf.export.tflite`), with their input checks, serving functions and quantization-aware training."""
