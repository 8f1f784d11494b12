"""Trains an FFL model: K branches and a fusion module teaching each other online.

    python -m ffl_tf.train --flagfile=configs/cifar100.flags [--flag=value ...]

Rerunning the same command continues from the last checkpoint in --model_dir. The run directory
ends with the flags used, checkpoints, TensorBoard logs and results.json (per-head accuracy).
"""

import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from ffl_tf import atomic, checkpoint, data, run_dir  # noqa: E402
from ffl_tf.branches import validate_branches  # noqa: E402
from ffl_tf.ffl_model import parameter_counts  # noqa: E402
from ffl_tf.models import BACKBONES  # noqa: E402

# Data.
flags.DEFINE_enum("dataset", "cifar100", data.DATASETS, "Dataset. `digits` is bundled with scikit-learn and "
                  "needs no network; `image_folder` reads --data_dir/<split>/<class>/<image>.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data directory (prepared or manually downloaded data), "
                    "or the image folder for --dataset=image_folder. Default: tfds's default data dir.")
flags.DEFINE_bool("download", True, "Let tensorflow-datasets download and prepare a missing dataset. Without "
                  "network the run stops within seconds, saying how to prepare the data offline.")
flags.DEFINE_integer("image_size", None, "image_folder only: resize images to this square size "
                     "(default: the size of the first image).", lower_bound=8)
flags.DEFINE_float("validation_fraction", 0.2, "image_folder without a test/ split: fraction of train/ held "
                   "out for evaluation (fixed by --seed).", lower_bound=0.01, upper_bound=0.9)
# Model.
flags.DEFINE_list("backbones", ["resnet32", "resnet32"], "One backbone per branch, comma-separated; "
                  f"choose from: {', '.join(BACKBONES)}.")
flags.DEFINE_integer("shared_stages", 2, "Stages shared by all branches (with the stem): 0 = independent "
                     "networks (required for different backbones).", lower_bound=0)
flags.DEFINE_integer("fusion_channels", None, "Output channels of the fusion module's pointwise conv "
                     "(default: the first branch's feature-map channels).", lower_bound=1)
flags.DEFINE_bool("sync_batchnorm", False, "Batch-norm statistics over the global batch across replicas "
                  "(exactly single-device behaviour; one all-reduce per BN layer).")
# Optimisation (defaults: the official CIFAR-100 recipe).
flags.DEFINE_integer("epochs", 300, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Cap on training steps per epoch (default: one pass over the "
                     "training split).", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Global training batch size (split across replicas).", lower_bound=1)
flags.DEFINE_integer("eval_batch_size", 100, "Global evaluation batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.1, "SGD learning rate at --lr_base_batch_size images per step; scaled "
                   "linearly with --batch_size.", lower_bound=0.0)
flags.DEFINE_integer("lr_base_batch_size", 128, "Batch size at which --learning_rate applies.", lower_bound=1)
flags.DEFINE_list("lr_decay_epochs", ["150", "225"], "Epochs at which the learning rate is multiplied by "
                  "--lr_decay_factor.")
flags.DEFINE_float("lr_decay_factor", 0.1, "Step-decay factor.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("momentum", 0.9, "SGD momentum (Nesterov).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("weight_decay", 1e-4, "L2 weight decay of the branches (PyTorch SGD convention).",
                   lower_bound=0.0)
flags.DEFINE_float("fusion_weight_decay", 1e-5, "L2 weight decay of the fusion module.", lower_bound=0.0)
flags.DEFINE_float("temperature", 3.0, "Distillation temperature T.", lower_bound=1e-3)
flags.DEFINE_float("rampup_epochs", 80.0, "Epochs over which the KD weight ramps up to 1 (scale it with "
                   "--epochs; 0 = no ramp-up).", lower_bound=0.0)
# Execution.
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy: one "
                  "device, all local GPUs, or several machines configured by the TF_CONFIG environment variable.")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy; logits and losses stay float32, mixed_float16 scales the loss.")
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer("seed", 0, "Seed for weights, data order, augmentation and the hold-out split.")
flags.DEFINE_string("model_dir", None, "Run directory: checkpoints, logs, flags, results.json. Rerunning "
                    "with the same directory resumes. Default: runs/<dataset>-<backbones>.")
flags.DEFINE_integer("checkpoint_every", 1, "Save a checkpoint every N epochs (and after the last).",
                     lower_bound=1)
flags.DEFINE_integer("keep_checkpoints", 3, "How many recent checkpoints to keep.", lower_bound=1)
flags.DEFINE_integer("eval_every", 1, "Evaluate on the evaluation split every N epochs.", lower_bound=1)
flags.DEFINE_enum("verbose", "auto", ["auto", "0", "1", "2"], "Keras fit verbosity: 1 = progress bar, "
                  "2 = one line per epoch, auto = 1 in a terminal, else 2 (logs redirected to a file).")

FLAGS = flags.FLAGS


@flags.multi_flags_validator(["backbones", "shared_stages"], message="")
def _check_branches(values: dict) -> bool:
    unknown = [b for b in values["backbones"] if b not in BACKBONES]
    if unknown:
        raise flags.ValidationError(f"--backbones: unknown {unknown}; choose from: {', '.join(BACKBONES)}.")
    try:
        validate_branches(values["backbones"], values["shared_stages"])
    except ValueError as error:
        raise flags.ValidationError(f"--backbones/--shared_stages: {error}") from None
    return True


@flags.multi_flags_validator(["lr_decay_epochs", "epochs"], message="")
def _check_decay_epochs(values: dict) -> bool:
    try:
        epochs = [int(e) for e in values["lr_decay_epochs"]]
    except ValueError:
        raise flags.ValidationError(
            f"--lr_decay_epochs={','.join(values['lr_decay_epochs'])}: use comma-separated whole epochs, "
            "e.g. 150,225."
        ) from None
    if epochs != sorted(set(epochs)) or any(e <= 0 for e in epochs):
        raise flags.ValidationError(f"--lr_decay_epochs={epochs}: epochs must be positive and increasing.")
    return True


@flags.multi_flags_validator(["dataset", "data_dir"], message="")
def _check_data_dir(values: dict) -> bool:
    if values["dataset"] == "image_folder" and not values["data_dir"]:
        raise flags.ValidationError("--dataset=image_folder needs --data_dir=DIR with DIR/train/<class>/<image>.")
    if values["data_dir"] and values["dataset"] != "digits" and not os.path.isdir(values["data_dir"]):
        raise flags.ValidationError(f"--data_dir={values['data_dir']} is not a directory.")
    return True


@flags.multi_flags_validator(["strategy"], message="")
def _check_tf_config(values: dict) -> bool:
    if values["strategy"] == "multi_worker" and "TF_CONFIG" not in os.environ:
        raise flags.ValidationError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable describing the cluster "
            "and this worker (see README, 'Several machines')."
        )
    return True


class NonFiniteLossError(RuntimeError):
    """Training diverged; raised from inside fit() so no checkpoint of the diverged weights is written."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops at the first NaN/Inf loss, or at an epoch's end with NaN/Inf weights, before its checkpoint.

    A step's loss is computed before its update, so the update of an epoch's last step can break the
    weights with every logged loss finite: the weights themselves are checked before they are saved.
    """

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"the training loss became {loss} at step {batch + 1} of epoch {self.epoch}")

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        broken = [w.path for w in self.model.trainable_weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
        if broken:
            raise NonFiniteLossError(
                f"the weights became NaN/Inf in the last step of epoch {self.epoch} ({len(broken)} variables, "
                f"e.g. {broken[0]})"
            )


class Throughput(keras.callbacks.Callback):
    """Training images/second per epoch, timed between batch ends (excludes tracing and evaluation)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.history: list[float] = []

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.start, self.steps = None, 0

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        if self.start is None:
            self.start = time.perf_counter()
        else:
            self.steps += 1

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.steps:
            rate = self.steps * self.batch_size / (time.perf_counter() - self.start)
            self.history.append(rate)
            if logs is not None:
                logs["images_per_second"] = rate


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate of the epoch's last step to its logs, so TensorBoard and history.csv show it."""

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class HeadlineProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar with the headline numbers only; TensorBoard and history.csv get every metric."""

    HEADS = ("loss", "acc_branch_mean", "acc_ensemble", "acc_fused")
    SHOWN = (*HEADS, "kd_weight", "images_per_second", *(f"val_{name}" for name in HEADS))

    def _update_progbar(self, batch, logs=None) -> None:
        super()._update_progbar(batch, self._headline(logs))

    def _finalize_progbar(self, logs) -> None:
        super()._finalize_progbar(self._headline(logs))

    def _headline(self, logs):
        return {k: v for k, v in (logs or {}).items() if k in self.SHOWN}


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes the run directory (the only process unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker" and resolver.task_id == 0)


def learning_rate_schedule(
    learning_rate: float, batch_size: int, base_batch_size: int, decay_epochs: list[int], decay_factor: float,
    steps_per_epoch: int,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Step decay at the given epochs, with the base rate scaled linearly by the batch size."""
    peak = learning_rate * batch_size / base_batch_size
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[e * steps_per_epoch for e in decay_epochs],
        values=[peak * decay_factor**i for i in range(len(decay_epochs) + 1)],
    )


def default_model_dir(dataset: str, backbones: list[str]) -> str:
    """runs/<dataset>-<backbones>: deterministic, so rerunning the same command resumes."""
    if len(set(backbones)) == 1:
        return os.path.join("runs", f"{dataset}-{backbones[0]}x{len(backbones)}")
    return os.path.join("runs", f"{dataset}-{'+'.join(backbones)}")


def config_from_flags(info: data.DatasetInfo) -> dict:
    """Everything the run depends on, as plain values: {"model": ..., "dataset": ..., "training": ...}."""
    return {
        "model": {
            "backbones": list(FLAGS.backbones),
            "num_classes": info.num_classes,
            "image_shape": list(info.image_shape),
            "shared_stages": FLAGS.shared_stages,
            "mean": list(info.mean),
            "std": list(info.std),
            "fusion_channels": FLAGS.fusion_channels,
            "sync_bn": FLAGS.sync_batchnorm,
        },
        "dataset": {  # data.load's arguments
            "name": FLAGS.dataset,
            "data_dir": FLAGS.data_dir and os.path.abspath(FLAGS.data_dir),
            "image_size": FLAGS.image_size,
            "validation_fraction": FLAGS.validation_fraction,
            "seed": FLAGS.seed,
        },
        "class_names": list(info.class_names),
        "training": {
            "epochs": FLAGS.epochs,
            "steps_per_epoch": FLAGS.steps_per_epoch,
            "batch_size": FLAGS.batch_size,
            "eval_batch_size": FLAGS.eval_batch_size,
            "learning_rate": FLAGS.learning_rate,
            "lr_base_batch_size": FLAGS.lr_base_batch_size,
            "lr_decay_epochs": [int(e) for e in FLAGS.lr_decay_epochs],
            "lr_decay_factor": FLAGS.lr_decay_factor,
            "momentum": FLAGS.momentum,
            "weight_decay": FLAGS.weight_decay,
            "fusion_weight_decay": FLAGS.fusion_weight_decay,
            "temperature": FLAGS.temperature,
            "rampup_epochs": FLAGS.rampup_epochs,
            "strategy": FLAGS.strategy,
            "mixed_precision": FLAGS.mixed_precision,
            "jit_compile": FLAGS.jit_compile,
            "seed": FLAGS.seed,
            "checkpoint_every": FLAGS.checkpoint_every,
            "keep_checkpoints": FLAGS.keep_checkpoints,
            "eval_every": FLAGS.eval_every,
        },
    }


# Training flags a checkpoint can only continue under: they fix what its step count means (images per step,
# steps per epoch: the learning-rate schedule, ramp-up and data position) and, for mixed_float16, which
# variables its optimizer has. The other training flags (epochs, learning rate, ...) may change on resume.
FIXED_ON_RESUME = ("batch_size", "steps_per_epoch", "mixed_precision")


def check_resumable(model_dir: str, config: dict) -> None:
    """Refuses to resume a run whose model, data or FIXED_ON_RESUME flags differ from this command's."""
    if not os.path.isfile(os.path.join(model_dir, run_dir.CONFIG)):
        return
    previous = run_dir.read_config(model_dir)
    fixed = {section: (previous[section], config[section]) for section in ("model", "dataset")}
    fixed["training setup"] = tuple({k: c["training"].get(k) for k in FIXED_ON_RESUME} for c in (previous, config))
    for section, (old_values, new_values) in fixed.items():
        changed = {k: (old_values.get(k), v) for k, v in new_values.items() if old_values.get(k) != v}
        if changed:
            details = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items())
            raise run_dir.RunError(
                f"--model_dir={model_dir} holds a run with a different {section} ({details}). "
                "Use a new --model_dir, or the original flags (saved in "
                f"{os.path.join(model_dir, run_dir.FLAGS_FILE)}) to resume it."
            )
    changed = sorted(k for k, v in config["training"].items() if previous["training"].get(k) != v)
    if changed:
        logging.warning("Resuming %s with changed training flags: %s", model_dir, ", ".join(changed))


def prepare_model_dir(model_dir: str) -> None:
    """Creates the run directory, failing early and clearly if it cannot be written."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise run_dir.RunError(f"--model_dir={model_dir} is not writable ({error.strerror}); choose another.")


def serialized_flags() -> str:
    """This module's flags, one per line, in flagfile syntax (reusable with --flagfile)."""
    ours = FLAGS.get_key_flags_for_module(sys.modules[__name__])
    return "".join(f"{flag.serialize()}\n" for flag in ours if flag.value is not None)


def trim_history(path: str, initial_epoch: int) -> None:
    """Drops history.csv rows of epochs a resumed run will redo (logged before a kill, never checkpointed)."""
    lines = open(path).read().splitlines() if os.path.isfile(path) else []
    if lines:
        kept = [row for row in lines[1:] if int(row.split(",", 1)[0]) < initial_epoch]
        atomic.write_text(path, "".join(f"{line}\n" for line in [lines[0], *kept]))


def accuracy_table(accuracy: dict[str, float]) -> str:
    rows = [f"{'head':<12} {'accuracy':>8}"] + [f"{head:<12} {value:>8.4f}" for head, value in accuracy.items()]
    return "\n".join(rows)


def train(
    config: dict, model_dir: str, strategy: tf.distribute.Strategy, *, download: bool = True, verbose="auto"
) -> tuple[keras.Model, dict]:
    """Trains (or resumes) the run described by `config` in `model_dir`; returns (model, results)."""
    model_cfg, data_cfg, train_cfg = config["model"], config["dataset"], config["training"]
    chief = is_chief(strategy)
    keras.utils.set_random_seed(train_cfg["seed"])
    keras.mixed_precision.set_global_policy(train_cfg["mixed_precision"])

    data_args = dict(data_dir=data_cfg["data_dir"], image_size=data_cfg["image_size"],
                     validation_fraction=data_cfg["validation_fraction"], seed=data_cfg["seed"], download=download)
    info = data.dataset_info(data_cfg["name"], **data_args)
    steps_per_epoch = max(1, info.num_train // train_cfg["batch_size"])
    if train_cfg["steps_per_epoch"]:
        steps_per_epoch = min(steps_per_epoch, train_cfg["steps_per_epoch"])

    with strategy.scope():
        model = run_dir.build_model(config)
        schedule = learning_rate_schedule(
            train_cfg["learning_rate"], train_cfg["batch_size"], train_cfg["lr_base_batch_size"],
            train_cfg["lr_decay_epochs"], train_cfg["lr_decay_factor"], steps_per_epoch,
        )
        model.compile(
            keras.optimizers.SGD(schedule, momentum=train_cfg["momentum"], nesterov=True),
            steps_per_epoch=steps_per_epoch,
            temperature=train_cfg["temperature"],
            rampup_epochs=train_cfg["rampup_epochs"],
            weight_decay=train_cfg["weight_decay"],
            fusion_weight_decay=train_cfg["fusion_weight_decay"],
            jit_compile=train_cfg["jit_compile"],
        )
        ckpt_dir = os.path.join(model_dir, run_dir.CHECKPOINTS)
        found = checkpoint.latest(ckpt_dir)
        initial_epoch = 0
        if found:
            checkpoint.restore(model, found[1])
            initial_epoch = found[0]
            if int(model.optimizer.iterations.numpy()) == 0:  # Keras skips optimizer state that does not fit
                raise run_dir.RunError(
                    f"{found[1]} holds no optimizer state this model can use (its step counter is 0 after "
                    f"epoch {initial_epoch}): it was written by another setup. Use a new --model_dir."
                )
            logging.info("Resuming from %s (epoch %d, step %d)", found[1], initial_epoch,
                         int(model.optimizer.iterations.numpy()))

    # The training stream continues after the batches fit consumed in the epochs done (the optimizer's
    # counter lags that when mixed_float16 skipped steps), so a resumed run sees the batches it had not seen.
    train_ds, eval_ds, _ = data.load(
        data_cfg["name"], **data_args, batch_size=train_cfg["batch_size"],
        eval_batch_size=train_cfg["eval_batch_size"], start_step=initial_epoch * steps_per_epoch,
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_ds, eval_ds = train_ds.with_options(options), eval_ds.with_options(options)

    counts = parameter_counts(model)
    logging.info(
        "%s: %d branches %s, shared_stages=%d; trainable parameters %s; %d train / %d eval examples; "
        "%d steps/epoch, %d replicas", info.name, len(model_cfg["backbones"]), model_cfg["backbones"],
        model_cfg["shared_stages"], counts, info.num_train, info.num_eval, steps_per_epoch,
        strategy.num_replicas_in_sync,
    )
    throughput = Throughput(train_cfg["batch_size"])
    history = os.path.join(model_dir, "history.csv")
    callbacks = [StopOnNonFinite(), throughput, LogLearningRate(), HeadlineProgbar()]
    if chief:
        trim_history(history, initial_epoch)
        callbacks += [
            keras.callbacks.TensorBoard(os.path.join(model_dir, run_dir.LOGS), write_graph=False),
            keras.callbacks.CSVLogger(history, append=True),
        ]
    # Last, so an epoch's logs are written before its checkpoint makes it count as done.
    callbacks.append(checkpoint.EpochCheckpoint(
        ckpt_dir, epochs=train_cfg["epochs"], every=train_cfg["checkpoint_every"],
        keep=train_cfg["keep_checkpoints"], is_chief=chief,
    ))
    if initial_epoch < train_cfg["epochs"]:
        try:
            model.fit(
                train_ds, epochs=train_cfg["epochs"], initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                validation_data=eval_ds, validation_freq=train_cfg["eval_every"], callbacks=callbacks,
                shuffle=False,  # the pipeline shuffles, with the run's seed
                verbose=verbose,
            )
        except NonFiniteLossError as error:
            last = checkpoint.latest(ckpt_dir)
            kept = f"the last good checkpoint is {last[1]}" if last else "no checkpoint had been written yet"
            raise NonFiniteLossError(
                f"Training stopped: {error}; {kept}. Lower --learning_rate or check the data, then rerun to "
                "resume from that checkpoint (or train from scratch with --mixed_precision=float32 in a new "
                "--model_dir)."
            ) from None

    evaluation = model.evaluate(eval_ds, return_dict=True, verbose=0)
    heads = [f"branch_{k}" for k in range(len(model_cfg["backbones"]))] + ["branch_mean", "ensemble", "fused"]
    results = {
        "accuracy": {head: float(evaluation[f"acc_{head}"]) for head in heads},
        "trainable_parameters": counts,
        "throughput": {"train_images_per_second": float(np.median(throughput.history)) if throughput.history
                       else None},
        "eval_loss": float(evaluation["loss"]),
        "eval_examples": info.num_eval,
        "epochs": train_cfg["epochs"],
        "steps": int(model.optimizer.iterations.numpy()),
    }
    if chief:
        atomic.write_json(os.path.join(model_dir, run_dir.RESULTS), results)
    return model, results


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    model_dir = FLAGS.model_dir or default_model_dir(FLAGS.dataset, FLAGS.backbones)
    try:
        strategy = make_strategy(FLAGS.strategy)
        info = data.dataset_info(
            FLAGS.dataset, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
            validation_fraction=FLAGS.validation_fraction, seed=FLAGS.seed, download=FLAGS.download,
        )
        config = config_from_flags(info)
        check_resumable(model_dir, config)
        chief = is_chief(strategy)
        if chief:
            prepare_model_dir(model_dir)
            atomic.write_json(os.path.join(model_dir, run_dir.CONFIG), config)
            atomic.write_text(os.path.join(model_dir, run_dir.FLAGS_FILE), serialized_flags())
        logging.info("Run directory: %s", os.path.abspath(model_dir))
        verbose = (1 if sys.stdout.isatty() else 2) if FLAGS.verbose == "auto" else int(FLAGS.verbose)
        _, results = train(config, model_dir, strategy, download=FLAGS.download, verbose=verbose)
    except (data.DatasetNotFoundError, run_dir.RunError, NonFiniteLossError) as error:
        sys.exit(f"ffl_tf.train: error: {error}")
    if chief:
        print(f"\nResults on {results['eval_examples']} evaluation images ({FLAGS.dataset}), "
              f"written to {os.path.join(model_dir, run_dir.RESULTS)}:")
        print(accuracy_table(results["accuracy"]))
        print(f"trainable parameters: {json.dumps(results['trainable_parameters'])}")
        if results["throughput"]["train_images_per_second"]:
            print(f"training throughput: {results['throughput']['train_images_per_second']:.1f} images/s")


if __name__ == "__main__":
    app.run(main)
