"""Canary of `ffl_tf.export.tfmot_compat`: the tfmot internals it relies on are still there (in a subprocess,
since importing tfmot points tf.keras at tf_keras for the whole process)."""

import json
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = """
import json
import numpy as np
import tf_keras
import tensorflow_model_optimization as tfmot
from ffl_tf.export import tfmot_compat

inputs = tf_keras.Input((4,))
model = tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="dense")(inputs))
quantized = tfmot.quantization.keras.quantize_model(model)
names = [w.name for w in quantized.get_layer(tfmot_compat.INPUT_QUANTIZER).weights]
tfmot_compat.set_input_range(quantized, 0.0, 255.0)
ranges = {w.name: float(np.asarray(w)) for w in quantized.get_layer(tfmot_compat.INPUT_QUANTIZER).weights
          if w.name.endswith(("_min:0", "_max:0"))}
print(json.dumps({"names": names, "ranges": ranges}))
"""


def test_quantize_apply_adds_the_input_quantizer_whose_range_set_input_range_sets():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(n.endswith("_min:0") for n in found["names"]) and any(n.endswith("_max:0") for n in found["names"])
    assert sorted(found["ranges"].values()) == [0.0, 255.0]
