"""Test setup: quiet TensorFlow, two logical CPU devices (for MirroredStrategy tests), shared fixtures.

Tests train and export on generated images (`squares_folder`), so a clone of the repository runs them. The few
that need real photographs are marked `real_images` and read the CIFAR-10 sample beside the repository
(`cifar10_sample`): they skip where it is absent, unless FFL_TF_REQUIRE_SAMPLE=1 (set by `.ci/run`) makes it
mandatory. FFL_TF_SAMPLE_DIR points them at another copy of the sample.
"""

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

from tests.data.images import write_squares_folder  # noqa: E402

# The image check's verdicts go to a cache of the test session's own, never the user's (CLI runs inherit it).
os.environ["FFL_TF_CACHE_DIR"] = tempfile.mkdtemp(prefix="ffl_tf-test-cache-")

# Must run before TensorFlow initialises its devices, hence at import time of the first conftest.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "cifar10-sample"
SAMPLE_DIR_VARIABLE = "FFL_TF_SAMPLE_DIR"  # another location of the sample (default: CIFAR10_SAMPLE)
REQUIRE_SAMPLE_VARIABLE = "FFL_TF_REQUIRE_SAMPLE"  # 1: a missing sample fails the real_images tests


def pytest_collection_modifyitems(items):
    """Every test that reads the sample is marked real_images, even if its module forgot to say so: `-m "not
    real_images"` selects exactly what runs without the sample."""
    for item in items:
        if "cifar10_sample" in item.fixturenames and item.get_closest_marker("real_images") is None:
            item.add_marker(pytest.mark.real_images)


@pytest.fixture(scope="session")
def cifar10_sample() -> pathlib.Path:
    """The shared folder of real CIFAR-10 images (never copied into the repo), for the tests marked real_images."""
    sample = pathlib.Path(os.environ.get(SAMPLE_DIR_VARIABLE) or CIFAR10_SAMPLE)
    if not (sample / "train").is_dir():
        if os.environ.get(REQUIRE_SAMPLE_VARIABLE, "0") not in ("", "0"):
            pytest.fail(f"real-image sample not found at {sample}, and {REQUIRE_SAMPLE_VARIABLE}=1 makes it "
                        f"mandatory. Fix: put the CIFAR-10 sample there (train/<class>/<n>.png), or set "
                        f"{SAMPLE_DIR_VARIABLE} to its folder.", pytrace=False)
        pytest.skip(f"real-image sample not found at {sample} (set {SAMPLE_DIR_VARIABLE} to its folder; "
                    f"{REQUIRE_SAMPLE_VARIABLE}=1 makes it mandatory)")
    return sample


@pytest.fixture(scope="session")
def squares_folder(tmp_path_factory) -> pathlib.Path:
    """A generated image folder, DIR/train/<colour>/<n>.png: 32x32 noise images with a square of their class's
    colour near a random corner (tests/data/images.py: squares). Ten classes, learnable in a few dozen steps."""
    return write_squares_folder(tmp_path_factory.mktemp("squares"))


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
