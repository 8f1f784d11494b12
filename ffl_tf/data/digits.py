"""`sklearn_digits`: scikit-learn's bundled handwritten digits as a tfds dataset.

The offline default dataset: 1797 real 8x8 grey-scale digits (UCI optdigits test
set) that ship inside the scikit-learn wheel, so preparing it needs no network
and no files beyond installed packages. Importing this module registers the
builder, after which `tfds.builder("sklearn_digits", data_dir=...)` finds it.
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_EXAMPLES = 1797
TEST_FRACTION = 0.2
# `np.random.RandomState`'s stream is frozen by NumPy's compatibility policy, so the
# split is the same on every machine and NumPy version (unlike `default_rng`).
SPLIT_SEED = 0


def split_indices() -> dict[str, np.ndarray]:
    """Returns the fixed train/test partition of the sklearn example indices (80/20)."""
    permutation = np.random.RandomState(SPLIT_SEED).permutation(NUM_EXAMPLES)
    num_test = round(TEST_FRACTION * NUM_EXAMPLES)
    return {"train": np.sort(permutation[num_test:]), "test": np.sort(permutation[:num_test])}


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [N, 8, 8, 1] in 0..255, labels int64 [N]) from scikit-learn.

    sklearn stores intensities 0..16; they are mapped to round(v * 255 / 16) (NumPy's
    round-half-to-even), so 16 becomes 255.
    """
    from sklearn import datasets  # Deferred: only preparation needs scikit-learn.

    digits = datasets.load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn handwritten digits, 8x8x1 uint8, 10 classes, fixed 80/20 split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 1438 train / 359 test examples."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Handwritten digits bundled with scikit-learn "
                "(sklearn.datasets.load_digits), rescaled from 0..16 to 0..255. "
                "Train/test are a fixed 80/20 permutation split (RandomState(0))."
            ),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data is inside scikit-learn.
        images, labels = load_sklearn_digits()
        return {
            split: self._generate_examples(images, labels, indices)
            for split, indices in split_indices().items()
        }

    def _generate_examples(self, images, labels, indices):
        for index in indices:
            yield int(index), {"image": images[index], "label": labels[index]}
