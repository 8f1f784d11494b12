"""Test setup: quiet TensorFlow, two logical CPU devices (for MirroredStrategy tests), shared fixtures."""

import os
import pathlib
import tempfile

from ffl_tf.utils import console

# The test process sets itself up as a command's would (`ffl_tf.launcher`): importing ffl_tf changes nothing.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
with console.filtered_stderr(show_all=console.verbose_requested()):
    import tensorflow as tf

    tf.config.list_physical_devices()

import keras  # noqa: E402
import pytest  # noqa: E402

# The image check's verdicts go to a cache of the test session's own, never the user's (CLI runs inherit it).
os.environ["FFL_TF_CACHE_DIR"] = tempfile.mkdtemp(prefix="ffl_tf-test-cache-")

# Must run before TensorFlow initialises its devices, hence at import time of the first conftest.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "cifar10-sample"


@pytest.fixture(scope="session")
def cifar10_sample() -> pathlib.Path:
    """The shared folder of real CIFAR-10 images (never copied into the repo)."""
    if not (CIFAR10_SAMPLE / "train").is_dir():
        pytest.skip(f"real-image sample not found at {CIFAR10_SAMPLE}")
    return CIFAR10_SAMPLE


@pytest.fixture(scope="session")
def two_cpu_replicas() -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over the two logical CPUs, one for the whole session.

    Every MirroredStrategy over the same devices numbers its collectives from the same instance key, so
    a second strategy whose all-reduces have other shapes than the first one's fails ("Shape mismatch in
    the collective instance 100") and aborts collectives for the rest of the process. Tests share one.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def mixed_float16():
    """Runs a test under the mixed_float16 policy and restores float32 afterwards."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")
