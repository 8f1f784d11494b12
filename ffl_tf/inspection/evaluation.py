"""Evaluating a trained run per head: which data it can be evaluated on, and what is measured there.

`ffl_tf.evaluate` (the command) runs these and prints their report; see its docstring for the numbers.
"""

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from keras import ops

from ffl_tf import data
from ffl_tf.data import digits, image_check, image_folder, pipeline, tfds_sources
from ffl_tf.inspection.images import eval_decoder
from ffl_tf.model import calibration, heads
from ffl_tf.runs.config import RunConfig


def evaluation_data(config: RunConfig, *, dataset: str | None = None, data_dir: str | None = None,
                    split: str | None = None, batch_size: int = 100) -> tuple[tf.data.Dataset, dict]:
    """(batches of (uint8 images, int32 labels in the run's class order), {"name", "dataset", "data_dir", "split"}).

    Raises ValueError or data.DatasetNotFoundError, naming the fix, for data the run cannot be evaluated on.
    """
    run_data = config.dataset
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
        size = None if dataset in data.FIXED_SIZE_DATASETS else config.model["image_shape"][0]
        arguments = {"dataset": dataset, "data_dir": data_dir, "image_size": size,
                     "validation_fraction": run_data.get("validation_fraction", 0.2)}
    try:
        source = data.open_source(**arguments, download=False)
    except data.DatasetNotFoundError as error:
        hint = " Or pass --split=NAME to evaluate DIR/NAME/<class>/<image>." if dataset == "image_folder" else ""
        raise data.DatasetNotFoundError(f"{error}{hint}") from None
    where = data_dir if dataset == "image_folder" else dataset
    _check_images(config, source.info.image_shape, where)
    check_classes(config.class_names, source.info.class_names, where, ordered=True)
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


def _check_images(config: RunConfig, image_shape: Sequence[int], where: str) -> None:
    if list(image_shape) != list(config.model["image_shape"]):
        raise ValueError(f"{where} has {'x'.join(map(str, image_shape))} images and the run takes "
                         f"{'x'.join(map(str, config.model['image_shape']))}; evaluate on data of that size.")


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


def _folder_split(config: RunConfig, data_dir: str | None, split: str, batch_size: int) -> tf.data.Dataset:
    """Every image of DATA_DIR/SPLIT/<class>/, labelled by the run's index of its class folder's name."""
    split_dir = os.path.join(data_dir or "", split)
    if not data_dir or not os.path.isdir(split_dir):
        raise ValueError(f"--split={split}: {split_dir} is not a directory; pass --data_dir=DIR and --split=NAME "
                         "with the images in DIR/NAME/<class>/<image>.png|jpg.")
    files = image_folder.images_by_class(split_dir)
    run_names = list(config.class_names)
    check_classes(run_names, [name for name, found in files.items() if found], split_dir, ordered=False)
    examples = [(os.path.join(split_dir, name, f), run_names.index(name))
                for name, found in files.items() for f in found]
    bad = set(image_check.bad_images(split_dir, [path for path, _ in examples]))
    if bad and not config.dataset["skip_bad_images"]:
        raise data.DatasetNotFoundError(image_check.describe(sorted(bad), split_dir, fix=False) + " Fix: replace or "
                                        "delete them.")
    paths, labels = zip(*[(path, label) for path, label in examples if path not in bad])
    decode = eval_decoder(config.model["image_shape"])
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


