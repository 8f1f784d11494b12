"""The workarounds of private tensorflow-model-optimization behaviour, on the export side only (training never
imports tfmot), checked on tfmot 0.8 (the version pinned in requirements.txt); importing this module under
another tfmot fails loudly, so an upgrade re-checks them:

- `set_input_range`: `quantize_apply` puts a layer named "quantize_layer" in front of the model, whose input
  range lives in variables named "..._min:0" / "..._max:0"; neither name is public API.

- importing tfmot sets TF_USE_LEGACY_KERAS=1 in `os.environ` (after choosing tf_keras for itself), which would
  reach every later import and child process: `tfmot` is imported here with the variable put back as it was,
  and the other modules take it from here (`from ffl_tf.export.tfmot_compat import tfmot`).

Import it only where tfmot is wanted (export/qat.py): importing tfmot points `tf.keras` at tf_keras for the
whole process.
"""

import contextlib
import os
from collections.abc import Iterator

LEGACY_KERAS = "TF_USE_LEGACY_KERAS"


@contextlib.contextmanager
def _environment_kept(name: str) -> Iterator[None]:
    """Puts environment variable `name` back as it was before the block (set to its value, or unset)."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


with _environment_kept(LEGACY_KERAS):
    import tensorflow_model_optimization as tfmot

CHECKED_VERSIONS = ("0.8.",)
INPUT_QUANTIZER = "quantize_layer"

if not tfmot.__version__.startswith(CHECKED_VERSIONS):
    raise ImportError(
        f"ffl_tf's quantization-aware export relies on tfmot internals checked on tfmot "
        f"{', '.join(v + 'x' for v in CHECKED_VERSIONS)} only; this is tfmot {tfmot.__version__}. Install the pinned "
        "version (pip install -r requirements.txt) or re-check ffl_tf/export/tfmot_compat.py and add it."
    )


def set_input_range(model, low: float, high: float) -> None:
    """Sets the range of the input quantizer `quantize_apply` added to `model` (a tf_keras model) to [low, high]."""
    for weight in model.get_layer(INPUT_QUANTIZER).weights:
        if weight.name.endswith("_min:0"):
            weight.assign(low)
        elif weight.name.endswith("_max:0"):
            weight.assign(high)
