"""Grad-CAM of every head of a trained run: where in each image the branches and the fused classifier look.

    python -m ffl_tf.gradcam --model_dir=RUN IMAGE_OR_FOLDER... --output=grid.png [--class_name=NAME] [--dpi=100]

Grad-CAM (Selvaraju et al., ICCV 2017): for a class c with logit y_c and a feature map A (channels A^j),
the weights a_j = spatial mean of dy_c/dA^j and the map ReLU(sum_j a_j A^j), upsampled to the image.
Here A is a branch's last feature map (before pooling). A head that depends on several branches, the
fused classifier (through the fusion module) and the ensemble, gets one Grad-CAM per branch, each with
the gradient flowing from that head into that branch's map; their sum, each upsampled to the input size
and before normalisation, is the head's map. So every head, of every method, is explained the same way:
a branch head by its own branch only (the others' gradients are zero), the fused head by what each
branch's features contribute to it. ONE's gated ensemble is explained through its branches' logits, its
gate's weights held as computed (the gate reads the shared trunk, not the branches' maps).

The grid has one row per image: the image (as the model sees it, decoded like `ffl_tf.predict`), then
one panel per head titled with the head, the predicted class (or --class_name) and its probability. Each
panel's heat is normalised to its own maximum: colours compare regions within a panel, not across them;
image and heat are drawn at the model's input resolution. Files that cannot be decoded are skipped with
one line naming them, as `ffl_tf.predict` does.
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__)

import os
import sys
from collections.abc import Sequence

from absl import app, flags

from ffl_tf.inspection import curves, images
from ffl_tf.inspection.saliency import draw_grid, grad_cam
from ffl_tf.runs import run_dir

FLAGS = flags.FLAGS


def explain(model_dir: str, paths: Sequence[str], output: str, *, class_name: str | None = None,
            checkpoint_path: str | None = None, dpi: int = 100) -> list[str]:
    """Writes the Grad-CAM grid of the images in `paths` to `output`; returns the files it could not decode."""
    config = run_dir.read_config(model_dir)
    names = list(config.class_names)
    if class_name is not None and class_name not in names:
        raise ValueError(f"--class_name={class_name} is not a class of this run; choose one of: {', '.join(names)}.")
    pixels, decoded, bad = images.load_images(paths, config.model["image_shape"])
    model, _, _ = run_dir.load_trained_model(model_dir, checkpoint_path)
    explanations = grad_cam(model, pixels, None if class_name is None else names.index(class_name))
    curves.write_png(draw_grid(pixels, explanations, names, [_label(p) for p in decoded]), output, dpi=dpi)
    return bad


def _label(path: str, width: int = 24) -> str:
    """`folder/file` (the folder is often the class), shortened from the left to fit a panel's title."""
    label = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    return label if len(label) <= width else "…" + label[-(width - 1):]


def define_flags() -> None:
    """Defined only when run as a program, so importing this module never clashes with other CLIs' flags."""
    run_dir.define_run_flags()
    flags.adopt_module_key_flags(run_dir)  # --help lists them
    flags.DEFINE_string("output", None, "Required: the PNG file to write (one row per image, one column per head).")
    flags.DEFINE_string("class_name", None, "Explain this class for every head; default: each head's prediction.")
    flags.DEFINE_integer("dpi", 100, "Resolution of the PNG (pixels per inch; a panel is about 2 inches).",
                         lower_bound=20)
    flags.mark_flags_as_required(["output"])


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise app.UsageError("Pass at least one image file or folder after the flags.")
    try:
        bad = explain(FLAGS.model_dir, argv[1:], FLAGS.output, class_name=FLAGS.class_name,
                      checkpoint_path=FLAGS.checkpoint, dpi=FLAGS.dpi)
    except (run_dir.RunError, ValueError, OSError) as error:
        sys.exit(f"ffl_tf.gradcam: error: {error}")
    images.report_skipped("ffl_tf.gradcam", bad)
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
