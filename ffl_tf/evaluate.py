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

import dataclasses
import os
import re
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags, logging
from keras import ops

from ffl_tf import atomic, calibration, data, heads, predict, run_dir
from ffl_tf.data import digits, image_check, image_folder, pipeline, tfds_sources

FLAGS = flags.FLAGS
EVAL_DIR = "eval"
# Datasets whose images have one size, which open_source refuses to change.
_NATIVE_SIZE = ("digits", "cifar10", "cifar100")
_COLUMNS = {"top1": "top-1", "top5": "top-5", "loss": "loss", "ece": "ECE"}


def evaluation_data(config: dict, *, dataset: str | None = None, data_dir: str | None = None,
                    split: str | None = None, batch_size: int = 100) -> tuple[tf.data.Dataset, dict]:
    """(batches of (uint8 images, int32 labels in the run's class order), {"name", "dataset", "data_dir", "split"}).

    Raises ValueError or data.DatasetNotFoundError, naming the fix, for data the run cannot be evaluated on.
    """
    run_data = config["dataset"]
    dataset = dataset or run_data["dataset"]
    same_dataset = dataset == run_data["dataset"]
    data_dir = data_dir or (run_data.get("data_dir") if same_dataset else None)
    base = os.path.basename(os.path.normpath(data_dir)) if dataset == "image_folder" and data_dir else dataset
    about = {"name": f"{base}-{_slug(split) if split else 'eval'}", "dataset": dataset, "data_dir": data_dir,
             "split": split or "eval"}
    if dataset == "image_folder" and split:
        return _folder_split(config, data_dir, split, batch_size), about
    if same_dataset:
        arguments = {**run_data, "data_dir": data_dir}
    else:
        size = None if dataset in _NATIVE_SIZE else config["model"]["image_shape"][0]
        arguments = {"dataset": dataset, "data_dir": data_dir, "image_size": size,
                     "validation_fraction": run_data.get("validation_fraction", 0.2)}
    try:
        source = data.open_source(**arguments, seed=config["training"].get("seed", 0), download=False)
    except data.DatasetNotFoundError as error:
        hint = " Or pass --split=NAME to evaluate DIR/NAME/<class>/<image>." if dataset == "image_folder" else ""
        raise data.DatasetNotFoundError(f"{error}{hint}") from None
    where = data_dir if dataset == "image_folder" else dataset
    _check_images(config, source.info.image_shape, where)
    check_classes(run_dir.class_names(config), source.info.class_names, where, ordered=True)
    if split:
        source = _tfds_split(source, dataset, data_dir, split)
    return pipeline.eval_batches(source, batch_size=batch_size), about


def check_classes(run_names: Sequence[str], names: Sequence[str], where: str, *, ordered: bool) -> None:
    """Raises ValueError, in one line naming the difference, unless `names` are the run's classes."""
    if list(names) == list(run_names) or (not ordered and set(names) == set(run_names)):
        return
    only_data = [n for n in names if n not in run_names]
    only_run = [n for n in run_names if n not in names]
    difference = (f"only in {where}: {only_data}; only in the run: {only_run}" if only_data or only_run
                  else f"the same names in another order: {list(names)} vs the run's {list(run_names)}")
    raise ValueError(f"The classes of {where} are not the run's (config.json class_names): {difference}. "
                     "Evaluate on data with the run's classes.")


def _check_images(config: dict, image_shape: Sequence[int], where: str) -> None:
    if list(image_shape) != list(config["model"]["image_shape"]):
        raise ValueError(f"{where} has {'x'.join(map(str, image_shape))} images and the run takes "
                         f"{'x'.join(map(str, config['model']['image_shape']))}; evaluate on data of that size.")


def _tfds_split(source: data.Source, dataset: str, data_dir: str | None, split: str) -> data.Source:
    """`source` reading the tfds split `split` for evaluation."""
    builder = tfds.builder(digits.SklearnDigits.name if dataset == "digits" else dataset, data_dir=data_dir)
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError):
        raise ValueError(f"--split={split} is not a split of {dataset}; its splits are "
                         f"{', '.join(builder.info.splits)} (slices such as train[:10%] work too).") from None
    return dataclasses.replace(source, read_eval=tfds_sources.reader(builder, split),
                               info=dataclasses.replace(source.info, num_eval=num_examples))


def _folder_split(config: dict, data_dir: str | None, split: str, batch_size: int) -> tf.data.Dataset:
    """Every image of DATA_DIR/SPLIT/<class>/, labelled by the run's index of its class folder's name."""
    split_dir = os.path.join(data_dir or "", split)
    if not data_dir or not os.path.isdir(split_dir):
        raise ValueError(f"--split={split}: {split_dir} is not a directory; pass --data_dir=DIR and --split=NAME "
                         "with the images in DIR/NAME/<class>/<image>.png|jpg.")
    files = image_folder.images_by_class(split_dir)
    run_names = run_dir.class_names(config)
    check_classes(run_names, [name for name, found in files.items() if found], split_dir, ordered=False)
    examples = [(os.path.join(split_dir, name, f), run_names.index(name))
                for name, found in files.items() for f in found]
    bad = set(image_check.bad_images(split_dir, [path for path, _ in examples]))
    if bad and not config["dataset"].get("skip_bad_images"):
        raise data.DatasetNotFoundError(image_check.describe(sorted(bad), split_dir, fix=False) + " Fix: replace or "
                                        "delete them.")
    paths, labels = zip(*[(path, label) for path, label in examples if path not in bad])
    decode = predict.eval_decoder(config["model"]["image_shape"])
    ds = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int32)))
    ds = ds.map(lambda path, label: (decode(path), label), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _slug(split: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", split).strip("_") or "split"


def measure(model, batches: tf.data.Dataset, num_classes: int) -> dict:
    """Streams `batches` through `model`; returns the summed statistics every reported number comes from."""
    forward = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    branches = heads.branch_heads(model.output)
    per_class = np.zeros(num_classes)
    stats = {head: {"correct": np.zeros(num_classes), "top5": 0.0, "loss": 0.0,
                    "bins": np.zeros((3, calibration.NUM_BINS))} for head in model.output}
    differences = np.zeros((len(branches), len(branches)))
    for images, labels in batches:
        outputs = forward(images)
        labels = labels.numpy()
        per_class += np.bincount(labels, minlength=num_classes)
        for head, logits in outputs.items():
            z = logits.numpy()
            stats[head]["correct"] += np.bincount(labels, weights=z.argmax(-1) == labels, minlength=num_classes)
            top5 = np.argsort(-z, axis=-1, kind="stable")[:, :5]
            stats[head]["top5"] += float(np.sum(top5 == labels[:, None]))
            stats[head]["loss"] += float(ops.sum(ops.sparse_categorical_crossentropy(labels, z, from_logits=True)))
            stats[head]["bins"] += ops.convert_to_numpy(calibration.bin_sums(z, labels))
        if len(branches) > 1:
            differences += ops.convert_to_numpy(ops.sum(calibration.pairwise_differences(
                [outputs[b] for b in branches]), axis=-1))
    return {"examples_per_class": per_class, "heads": stats, "branches": branches, "differences": differences}


def summarise(measured: dict, class_names: Sequence[str]) -> dict:
    """The reported numbers (see the module docstring) from `measure`'s sums."""
    per_class = measured["examples_per_class"]
    n = per_class.sum()
    report = {"examples": int(n), "examples_per_class": dict(zip(class_names, per_class.astype(int).tolist())),
              "heads": {}}
    for head, s in measured["heads"].items():
        accuracy = np.divide(s["correct"], per_class, out=np.full(len(per_class), np.nan), where=per_class > 0)
        report["heads"][head] = {
            "top1": float(s["correct"].sum() / n),
            **({"top5": s["top5"] / n} if len(class_names) >= 5 else {}),
            "loss": s["loss"] / n,
            "ece": float(ops.convert_to_numpy(calibration.ece_from_bins(s["bins"]))),
            "per_class_accuracy": {c: None if np.isnan(a) else float(a) for c, a in zip(class_names, accuracy)},
        }
    branches, top1 = measured["branches"], {h: r["top1"] for h, r in report["heads"].items()}
    report["branch_mean_top1"] = float(np.mean([top1[b] for b in branches]))
    pairs = {f"{a}/{b}": measured["differences"][i, j] / n for i, a in enumerate(branches)
             for j, b in enumerate(branches) if i < j}
    report["disagreement"] = {"pairs": pairs, "mean": float(np.mean(list(pairs.values())))} if pairs else None
    gain = top1[heads.ENSEMBLE] - max(top1[b] for b in branches) if heads.ENSEMBLE in top1 else None
    report["ensemble_gain"] = gain
    return report


def evaluate(model_dir: str, *, dataset: str | None = None, data_dir: str | None = None, split: str | None = None,
             checkpoint_path: str | None = None, batch_size: int | None = None) -> tuple[dict, str]:
    """Evaluates the run in `model_dir`; returns (the report, the path of the JSON file it was written to)."""
    config = run_dir.read_config(model_dir)
    batch_size = batch_size or config["training"].get("eval_batch_size", 100)
    batches, about = evaluation_data(config, dataset=dataset, data_dir=data_dir, split=split, batch_size=batch_size)
    model, config, loaded = run_dir.load_trained_model(model_dir, checkpoint_path)
    names = run_dir.class_names(config)
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
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
        tfds.disable_progress_bar()
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
