"""Branch builders for the tests: what a user's own network looks like (`--backbones=tests.backbones.builders:...`)."""

import keras


def tiny_cnn() -> keras.Model:
    """A small functional CNN: images of any size -> a 4-D feature map at half their resolution."""
    images = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(images)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    return keras.Model(images, x, name="tiny_cnn")


def pooled() -> keras.Model:
    """Breaks the contract: returns pooled features (2-D), not a feature map."""
    images = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(images)
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(x), name="pooled")


NOT_A_FUNCTION = 3
