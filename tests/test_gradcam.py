"""Grad-CAM: after a short training on squares in corners, every head looks at the square; the grid PNG; every
method and kind of branch."""

import keras
import numpy as np
import pytest

from ffl_tf import gradcam, methods
from ffl_tf.inspection import curves, saliency
from tests.data.images import CORNERS, squares, write_png
from tests.inspection.helpers import read_png, run_module, write_run

SIZE = 48  # the square's quadrant is then well outside the receptive field of the other corners' features
HALF = SIZE // 2
TRAIN_STEPS = 64


def quadrant(heat: np.ndarray, label: int) -> np.ndarray:
    rows = slice(0, HALF) if CORNERS[label].startswith("top") else slice(HALF, SIZE)
    columns = slice(0, HALF) if CORNERS[label].endswith("left") else slice(HALF, SIZE)
    return heat[rows, columns]


MODEL = {"backbones": ["resnet8", "resnet8"], "num_classes": 4, "image_shape": [SIZE, SIZE, 3], "shared_stages": 1}


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    images, labels = squares(32 * TRAIN_STEPS, seed=0, size=SIZE)
    model = methods.get("ffl").build(**MODEL)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), distillation_loss=methods.loss_fn("ffl"),
                  steps_per_epoch=TRAIN_STEPS, rampup_epochs=1.0, weight_decay=1e-4)
    model.fit(images, labels, batch_size=32, epochs=1, verbose=0, shuffle=False)
    test_images, test_labels = squares(16, seed=1, size=SIZE)
    accuracy = model.evaluate(test_images, test_labels, verbose=0, return_dict=True)
    assert min(accuracy[f"acc_{head}"] for head in model.output) >= 0.9, accuracy
    return model, test_images, test_labels


def test_every_head_puts_most_of_its_heat_on_the_squares_corner(trained):
    model, images, labels = trained
    explanations = saliency.grad_cam(model, images)
    assert list(explanations) == ["branch_0", "branch_1", "ensemble", "fused"]
    for head, explanation in explanations.items():
        assert explanation.maps.shape == (16, SIZE, SIZE) and (explanation.maps >= 0).all()
        np.testing.assert_array_equal(explanation.classes, labels, err_msg=head)
        shares = [quadrant(heat, label).sum() / heat.sum() for heat, label in zip(explanation.maps, labels)]
        assert np.mean(shares) > 0.6, (head, np.round(shares, 2))
        for heat, label in zip(explanation.maps, labels):  # the hottest pixel is in the square's quadrant
            peak = np.zeros_like(heat, bool)
            peak[np.unravel_index(np.argmax(heat), heat.shape)] = True
            assert quadrant(peak, label).any(), head
    # Explaining another class than the predicted one uses that class for every head.
    other = saliency.grad_cam(model, images[:2], class_index=3)
    assert all((e.classes == 3).all() for e in other.values())


def test_the_grid_has_a_panel_per_head_and_image_and_is_not_blank(trained, tmp_path):
    model, images, _ = trained
    explanations = saliency.grad_cam(model, images[:4])
    names = list(CORNERS)
    sizes = {}
    for rows, heads in [(2, list(explanations)), (2, ["fused"]), (4, ["fused"])]:
        path = tmp_path / f"{rows}x{len(heads)}.png"
        figure = saliency.draw_grid(images[:rows], {h: explanations[h] for h in heads}, names, ["a"] * rows)
        curves.write_png(figure, str(path))
        pixels = read_png(path)
        assert pixels.astype(float).var() > 0
        sizes[rows, len(heads) + 1] = pixels.shape[:2]
    (h5, w5), (h2, w2), (h4, w4) = sizes[2, 5], sizes[2, 2], sizes[4, 2]
    assert 1.8 < w5 / w2 < 3.0 and abs(h5 - h2) < 0.1 * h2  # 5 columns against 2
    assert 1.6 < h4 / h2 < 2.2 and abs(w4 - w2) < 0.1 * w2  # 4 rows against 2


def test_the_command_writes_the_grid_of_a_run(trained, tmp_path):
    model, images, _ = trained
    run = write_run(tmp_path / "run", model, MODEL, list(CORNERS))
    for i, image in enumerate(images[:3]):
        write_png(tmp_path / "images" / f"{i}.png", image)
    output = tmp_path / "grid.png"
    result = run_module("ffl_tf.gradcam", f"--model_dir={run}", tmp_path / "images", f"--output={output}",
                        "--class_name=top_left")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_png(output).shape[0] > 3 * 100  # three rows of panels of about 2 inches at 100 dpi
    with pytest.raises(ValueError, match="--class_name=middle is not a class of this run; choose one of: top_left"):
        gradcam.explain(str(run), [str(tmp_path / "images")], str(output), class_name="middle")


@pytest.mark.parametrize("method, backbones, shared_stages", [
    ("ffl", ["mobilenetv2_050", "resnet8"], 0),
    ("one", ["resnet8"] * 3, 1),
    ("dml", ["resnet8", "wrn16_2"], 0),
    ("vanilla", ["resnet8"], 0),
])
def test_every_method_and_kind_of_branch_gets_a_map_per_head(method, backbones, shared_stages):
    model = methods.get(method).build(backbones, 5, (32, 32, 3), shared_stages=shared_stages)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    explanations = saliency.grad_cam(model, images)
    logits = model(images, training=False)
    assert list(explanations) == list(logits)
    for head, explanation in explanations.items():
        assert explanation.maps.shape == (2, 32, 32) and np.isfinite(explanation.maps).all()
        np.testing.assert_array_equal(explanation.classes, np.argmax(logits[head], axis=-1))
