"""keras.applications networks as branches: their own preprocessing inside, pretrained weights offline."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from ffl_tf import data, methods
from ffl_tf.methods.ffl import build_ffl_model
from tests.backbones import builders

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_an_application_branch_computes_the_stand_alone_application_on_raw_pixels():
    model = build_ffl_model(["keras:MobileNetV3Small", "resnet8"], 7, (32, 32, 3), shared_stages=0,
                            mean=(120.0, 110.0, 100.0), std=(60.0, 55.0, 50.0))
    branch = model.get_layer("branch_0")
    application = next(layer for layer in branch.layers if isinstance(layer, keras.Model))
    momenta = {layer.momentum for layer in application.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}  # the applications' own 0.999 would leave evaluation at chance in short runs
    alone = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    alone.set_weights(application.get_weights())
    classifier = branch.get_layer("classifier")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    # Its own preprocessing on the raw pixels (for MobileNetV3 a pass-through: it rescales inside the network),
    # never the run's mean/std normalisation.
    features = alone(keras.applications.mobilenet_v3.preprocess_input(images.astype("float32")), training=False)
    expected = classifier(np.mean(np.asarray(features), axis=(1, 2)))
    np.testing.assert_allclose(model(images)["branch_0"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.real_images
def test_a_heterogeneous_pair_of_your_cnn_and_an_application_learns_on_real_images(cifar10_sample):
    # Seeded: MobileNetV3Small learns slowly from scratch at 32x32, and with classifiers initialised as PyTorch's
    # nn.Linear (logits near 0) both cross-entropies start at chance, so 24 steps lower their sum by a few
    # percent only (measured 4.74 -> 4.61, seed 0), which an unlucky initialisation could hide.
    keras.utils.set_random_seed(0)
    train, _, info = data.load("image_folder", data_dir=str(cifar10_sample), batch_size=32, eval_batch_size=32)
    model = build_ffl_model([builders.tiny_cnn, "keras:MobileNetV3Small"], info.num_classes, info.image_shape,
                            shared_stages=0, mean=info.mean, std=info.std)
    model.compile(keras.optimizers.SGD(0.02, momentum=0.9, nesterov=True), distillation_loss=methods.loss_fn("ffl"),
                  steps_per_epoch=8, rampup_epochs=0.0, weight_decay=1e-4)
    history = model.fit(train, epochs=3, steps_per_epoch=8, verbose=0, shuffle=False).history
    assert history["loss"][-1] < history["loss"][0]
    assert history["ce_branches"][-1] < history["ce_branches"][0]


PRETRAINED = """
import json, os, socket, sys, time
socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network disabled by the test"))
import keras, numpy as np
from ffl_tf.methods.ffl import build_ffl_model
from ffl_tf.backbones import BackboneError

def build():
    return build_ffl_model(["keras:MobileNetV3Small", "resnet8"], 5, (32, 32, 3), shared_stages=0,
                           pretrained="imagenet")

start = time.monotonic()
try:
    build()
    sys.exit("built without weights")
except BackboneError as error:
    message, seconds = str(error), time.monotonic() - start
path = message.split(" and put it at ")[1].split(" (or point")[0]
# A stand-in for the downloaded file: the network's own (random) weights in Keras's legacy .h5 layout.
from keras.src.legacy.saving import legacy_h5_format
import h5py
donor = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
os.makedirs(os.path.dirname(path), exist_ok=True)
with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, donor)
model = build()
application = next(l for l in model.get_layer("branch_0").layers if isinstance(l, keras.Model))
same = all(np.array_equal(a, b) for a, b in zip(application.get_weights(), donor.get_weights()))
print(json.dumps({"message": message, "seconds": seconds, "path": path, "same": same}))
"""


def test_pretrained_weights_come_from_the_keras_cache_and_offline_misses_fail_in_seconds(tmp_path):
    result = subprocess.run([sys.executable, "-c", PRETRAINED], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "KERAS_HOME": str(tmp_path / "keras")})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["seconds"] < 15
    assert "weights_mobilenet_v3_small" in report["message"] and "is not in the Keras cache" in report["message"]
    assert report["path"].startswith(str(tmp_path / "keras" / "models"))
    assert report["same"]  # exactly that file's weights were loaded
