"""Evaluates a trained run per head: accuracy, loss, calibration, per-class accuracy, branch disagreement.

    python -m ffl_tf.evaluate --model_dir=RUN [--dataset=NAME] [--data_dir=DIR] [--split=SPLIT] [--checkpoint=PATH]

What is evaluated:
  no data flags     the run's own evaluation split: the images its training evaluated (results.json).
  --dataset/--data_dir   another dataset, or a copy of the run's in another place, with the run's classes
                    (config.json "class_names": the same names, in the same order for tfds datasets).
                    Without --split: the evaluation split training would use with these two flags.
  --split=SPLIT     tfds datasets: any split tensorflow-datasets reads, e.g. test, train, "train[:10%]".
                    Image folders (DIR/<split>/<class>/<image>): every image under DIR/SPLIT/<class>/,
                    labelled by its class folder's name; e.g. --split=test evaluates DIR/test/.
Images are decoded as the run's evaluation pipeline decodes them (an image folder's at the run's size);
tfds data of another image size or number of channels is refused, as are classes that differ from the
run's (one line naming the difference) and undecodable files in an image folder (named; left out if the
run was trained with --skip_bad_images).

For every head: top-1, top-5 (with 5 classes or more), loss (the head's cross-entropy),
ECE (expected calibration error, 15 equal-width confidence bins, `ffl_tf.calibration`) and the top-1
accuracy of every class; for the branches their pairwise disagreement (fraction of images whose top-1
differ) and its mean; the ensemble's gain (ensemble top-1 minus the best branch's top-1).

The table is printed and the numbers written to RUN/eval/<name>.json, <name> = <data>-<split>: <data> is
the dataset's name, or an image folder's base name; <split> is --split with every run of characters
other than letters, digits, '.', '_' and '-' made one '_' (train[:10%] -> train_10), or `eval` for the
default evaluation split. E.g. RUN/eval/cifar10-eval.json, RUN/eval/my_photos-test.json.
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__)

import os
import sys

from absl import app, flags

from ffl_tf import data
from ffl_tf.inspection.evaluation import evaluation_data, measure, summarise
from ffl_tf.model import calibration
from ffl_tf.runs import run_dir
from ffl_tf.utils import atomic

FLAGS = flags.FLAGS
EVAL_DIR = "eval"
_COLUMNS = {"top1": "top-1", "top5": "top-5", "loss": "loss", "ece": "ECE"}


def evaluate(model_dir: str, *, dataset: str | None = None, data_dir: str | None = None, split: str | None = None,
             checkpoint_path: str | None = None, batch_size: int | None = None) -> tuple[dict, str]:
    """Evaluates the run in `model_dir`; returns (the report, the path of the JSON file it was written to)."""
    config = run_dir.read_config(model_dir)
    batch_size = batch_size or config.execution["eval_batch_size"]
    batches, about = evaluation_data(config, dataset=dataset, data_dir=data_dir, split=split, batch_size=batch_size)
    model, config, loaded = run_dir.load_trained_model(model_dir, checkpoint_path)
    names = list(config.class_names)
    report = {"model_dir": os.path.abspath(model_dir), "checkpoint": os.path.abspath(loaded), "data": about,
              "class_names": names, "ece_bins": calibration.NUM_BINS,
              **summarise(measure(model, batches, len(names)), names)}
    path = os.path.join(model_dir, EVAL_DIR, f"{about['name']}.json")
    atomic.write_json(path, report)
    return report, path


def table(report: dict) -> str:
    """The report as readable text: a row per head, the branches' disagreement, per-class accuracy (<= 20 classes)."""
    shown = [c for c in _COLUMNS if c in next(iter(report["heads"].values()))]
    lines = [f"{'head':<12}" + "".join(f"{_COLUMNS[c]:>9}" for c in shown)]
    lines += [f"{head:<12}" + "".join(f"{r[c]:>9.4f}" for c in shown) for head, r in report["heads"].items()]
    lines.append(f"{'branch_mean':<12}{report['branch_mean_top1']:>9.4f}")
    if report["disagreement"]:
        pairs = ", ".join(f"{pair} {value:.4f}" for pair, value in report["disagreement"]["pairs"].items())
        lines.append(f"branch disagreement: {pairs} (mean {report['disagreement']['mean']:.4f})")
    if report["ensemble_gain"] is not None:
        lines.append(f"ensemble gain over the best branch: {report['ensemble_gain']:+.4f}")
    if len(report["class_names"]) <= 20:
        head_names = list(report["heads"])
        lines.append("per-class top-1 accuracy:")
        lines.append(f"{'class':<14}{'images':>7}" + "".join(f"{h:>11}" for h in head_names))
        for name in report["class_names"]:
            values = [report["heads"][h]["per_class_accuracy"][name] for h in head_names]
            cells = "".join(f"{'-':>11}" if v is None else f"{v:>11.4f}" for v in values)
            lines.append(f"{name[:13]:<14}{report['examples_per_class'][name]:>7}{cells}")
    return "\n".join(lines)


def define_flags() -> None:
    """Defined only when run as a program, so importing this module never clashes with other CLIs' flags."""
    run_dir.define_run_flags()
    flags.adopt_module_key_flags(run_dir)  # --help lists them
    flags.DEFINE_string("dataset", None, "Dataset to evaluate on (a train --dataset value); default: the run's.")
    flags.DEFINE_string("data_dir", None, "Its tfds data directory or image folder; default: the run's (same "
                        "dataset) or tfds's default.")
    flags.DEFINE_string("split", None, "tfds: a split such as test or train[:10%]; image folders: evaluate "
                        "DATA_DIR/SPLIT/<class>/<image>. Default: the evaluation split training uses.")
    flags.DEFINE_integer("batch_size", None, "Evaluation batch size; default: the run's eval_batch_size.",
                         lower_bound=1)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        report, path = evaluate(FLAGS.model_dir, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, split=FLAGS.split,
                                checkpoint_path=FLAGS.checkpoint, batch_size=FLAGS.batch_size)
    except (run_dir.RunError, data.DatasetNotFoundError, ValueError) as error:
        sys.exit(f"ffl_tf.evaluate: error: {error}")
    print(f"{FLAGS.model_dir} ({os.path.basename(report['checkpoint'])}) on {report['data']['name']}: "
          f"{report['examples']} images; written to {path}")
    print(table(report))


if __name__ == "__main__":
    define_flags()
    app.run(main)
