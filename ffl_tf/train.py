"""Trains a model by online distillation: FFL (the default), DML, ONE, or networks trained alone.

    python -m ffl_tf.train --flagfile=configs/cifar100.flags [--flag=value ...]

Rerunning the same command continues from the last checkpoint in --model_dir. SIGTERM or Ctrl-C stop at
the next step with a checkpoint and exit status 75 ("preempted, retry"). The run directory ends with the
flags used, checkpoints, TensorBoard logs and results.json (per-head accuracy).
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags, logging

from ffl_tf import (
    atomic,
    callbacks,
    checkpoint,
    console,
    data,
    distribute,
    heads,
    methods,
    models,
    plots,
    preemption,
    run_dir,
    train_flags,
)
from ffl_tf.data import pipeline
from ffl_tf.model import DISAGREEMENT, DistillationModel, parameter_counts

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(train_flags)  # --help lists them


def learning_rate_schedule(training: dict, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Step decay at `lr_decay_epochs`, with the base rate scaled linearly by the batch size."""
    peak = training["learning_rate"] * training["batch_size"] / training["lr_base_batch_size"]
    decays = training["lr_decay_epochs"]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=[e * steps_per_epoch for e in decays],
        values=[peak * training["lr_decay_factor"] ** i for i in range(len(decays) + 1)],
    )


def steps_per_epoch(num_train: int, training: dict) -> int:
    """One pass over the training split in full batches, capped by `steps_per_epoch`."""
    steps = max(1, num_train // training["batch_size"])
    return min(steps, training["steps_per_epoch"] or steps)


def build_or_restore(
    config: dict, model_dir: str, strategy: tf.distribute.Strategy, steps: int, *, chief: bool, flags_text: str | None
) -> tuple[DistillationModel, checkpoint.Position]:
    """The compiled model with the newest readable checkpoint restored; returns (model, its position).

    The run's config.json (and flags.txt) are written once the model is built, so a network that cannot be
    built leaves no run behind.
    """
    training = config["training"]
    with strategy.scope():
        model = run_dir.build_model(config)
        if chief:
            atomic.write_json(os.path.join(model_dir, run_dir.CONFIG), config)
            if flags_text is not None:
                atomic.write_text(os.path.join(model_dir, run_dir.FLAGS_FILE), flags_text)
        optimizer = keras.optimizers.SGD(
            learning_rate_schedule(training, steps), momentum=training["momentum"], nesterov=training["nesterov"]
        )
        model.compile(
            optimizer, distillation_loss=methods.loss_fn(config["method"], **config["loss"]),
            steps_per_epoch=steps, rampup_epochs=training["rampup_epochs"], weight_decay=training["weight_decay"],
            fusion_weight_decay=training["fusion_weight_decay"], jit_compile=training["jit_compile"],
        )
        restored = checkpoint.restore_newest(model, os.path.join(model_dir, run_dir.CHECKPOINTS), move_aside=chief)
    if restored is None:
        return model, (0, 0)
    (epoch, step), path = restored
    if int(model.optimizer.iterations.numpy()) == 0:  # Keras skips optimizer state that does not fit
        raise run_dir.RunError(
            f"{path} holds no optimizer state this model can use (its step counter is 0 after epoch {epoch}): it "
            "was written by another setup. Use a new --model_dir."
        )
    logging.info("Resuming from %s (epoch %d, step %d)", path, epoch, int(model.optimizer.iterations.numpy()))
    return model, (epoch, step)


def make_callbacks(config: dict, model_dir: str, steps: int, *, chief: bool, stop: preemption.StopRequest) -> list:
    """Divergence checks, throughput, learning rate, progress bar; on the chief TensorBoard and history.csv;
    checkpoints last, so an epoch's logs are written before its checkpoint makes it count as done."""
    training = config["training"]
    run_callbacks = [callbacks.StopOnNonFinite(), callbacks.Throughput(training["batch_size"]),
                     callbacks.LogLearningRate(), callbacks.HeadlineProgbar()]
    if chief:
        run_callbacks += [
            keras.callbacks.TensorBoard(os.path.join(model_dir, run_dir.LOGS), write_graph=False),
            keras.callbacks.CSVLogger(os.path.join(model_dir, run_dir.HISTORY), append=True),
        ]
    run_callbacks.append(callbacks.Checkpoints(
        os.path.join(model_dir, run_dir.CHECKPOINTS), epochs=training["epochs"], steps_per_epoch=steps,
        every=training["checkpoint_every"], every_steps=training["checkpoint_every_steps"],
        keep=training["keep_checkpoints"], is_chief=chief, stop=stop,
    ))
    return run_callbacks


def fit(model, config: dict, source: data.Source, strategy, steps: int, position, evaluation: tuple,
        run_callbacks: list, verbose) -> None:
    """Trains from `position` to the last epoch: first the rest of an interrupted epoch, then whole epochs.

    Each part reads the training stream from its own first step, so no batch is seen twice or skipped.
    `evaluation` is (the distributed evaluation stream, its steps).
    """
    training = config["training"]
    epoch, step = position
    parts = [(epoch, steps - step)] if step else []
    parts += [(epoch + bool(step), steps)] if epoch + bool(step) < training["epochs"] else []
    eval_ds, eval_steps = evaluation
    checkpoints = next(c for c in run_callbacks if isinstance(c, callbacks.Checkpoints))
    for first_epoch, part_steps in parts:
        if part_steps < steps:
            logging.info("Epoch %d resumes at step %d of %d: its logged training metrics cover the %d steps after "
                         "the resume.", first_epoch + 1, steps - part_steps, steps, part_steps)
        checkpoints.step_offset = steps - part_steps
        train_ds = pipeline.distribute_train(
            strategy, source, global_batch_size=training["batch_size"], seed=training["seed"],
            start_step=first_epoch * steps + steps - part_steps,
        )
        model.fit(
            train_ds, epochs=first_epoch + 1 if part_steps < steps else training["epochs"], initial_epoch=first_epoch,
            steps_per_epoch=part_steps, validation_data=eval_ds, validation_steps=eval_steps,
            validation_freq=training["eval_every"],
            callbacks=run_callbacks, shuffle=False, verbose=verbose,  # the pipeline shuffles, with the run's seed
        )


def evaluate(model, config: dict, source: data.Source, evaluation: tuple, throughput: list[float]) -> dict:
    """results.json: accuracy, calibration (ECE) per head and the branches' disagreement on the evaluation
    split, loss, parameter counts, throughput."""
    eval_ds, steps = evaluation
    evaluation = model.evaluate(eval_ds, steps=steps, return_dict=True, verbose=0)
    reported = heads.reported_heads(config["method"], len(config["model"]["backbones"]))
    return {
        "method": config["method"],
        "accuracy": {head: float(evaluation[f"acc_{head}"]) for head in reported},
        "calibration": {"ece": {head: float(evaluation[f"ece_{head}"]) for head in model.heads}},
        "disagreement": float(evaluation[DISAGREEMENT]) if DISAGREEMENT in evaluation else None,
        "trainable_parameters": parameter_counts(model),
        "throughput": {"train_images_per_second": float(np.median(throughput)) if throughput else None},
        "eval_loss": float(evaluation["loss"]),
        "eval_examples": source.info.num_eval,
        "dropped_images": source.info.dropped_images,
        "epochs": config["training"]["epochs"],
        "steps": int(model.optimizer.iterations.numpy()),
    }


def train(config: dict, model_dir: str, strategy: tf.distribute.Strategy, source: data.Source, *,
          flags_text: str | None = None, verbose="auto") -> tuple[DistillationModel, dict]:
    """Trains (or resumes) the run described by `config` in `model_dir`; returns (model, results).

    `flags_text` (the command's flags in flagfile syntax) is saved as RUN/flags.txt.
    """
    training = config["training"]
    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(training["seed"])
    keras.mixed_precision.set_global_policy(training["mixed_precision"])
    steps = steps_per_epoch(source.info.num_train, training)
    model, position = build_or_restore(config, model_dir, strategy, steps, chief=chief, flags_text=flags_text)
    logging.info("%s, %s: %d branches %s; trainable parameters %s; %d train / %d eval examples; %d steps/epoch, "
                 "%d replicas", config["method"], source.info.name, len(config["model"]["backbones"]),
                 config["model"]["backbones"], parameter_counts(model), source.info.num_train, source.info.num_eval,
                 steps, strategy.num_replicas_in_sync)
    if chief:
        run_dir.trim_history(os.path.join(model_dir, run_dir.HISTORY), position[0])
    # One evaluation stream for the whole run: its decoded images are cached once.
    evaluation = pipeline.distribute_eval(strategy, source, global_batch_size=training["eval_batch_size"])
    with preemption.stop_on_signals(strategy) as stop:
        run_callbacks = make_callbacks(config, model_dir, steps, chief=chief, stop=stop)
        if position < (training["epochs"], 0):
            fit(model, config, source, strategy, steps, position, evaluation, run_callbacks, verbose)
    throughput = next(c for c in run_callbacks if isinstance(c, callbacks.Throughput)).history
    results = evaluate(model, config, source, evaluation, throughput)
    if chief:
        atomic.write_json(os.path.join(model_dir, run_dir.RESULTS), results)
        plots.write_run_plots(model_dir)
    return model, results


def serialized_flags() -> str:
    """The training flags, one per line, in flagfile syntax (reusable with --flagfile)."""
    ours = FLAGS.get_key_flags_for_module(train_flags)
    return "".join(f"{flag.serialize()}\n" for flag in ours if flag.value is not None)


def accuracy_table(accuracy: dict[str, float]) -> str:
    rows = [f"{'head':<12} {'accuracy':>8}"] + [f"{head:<12} {value:>8.4f}" for head, value in accuracy.items()]
    return "\n".join(rows)


def start(model_dir: str) -> tuple[tf.distribute.Strategy, data.Source, dict]:
    """Checks everything before any work: strategy, batch sizes, data (opened once), run directory."""
    strategy = distribute.make_strategy(FLAGS.strategy)
    distribute.check_batch_sizes(strategy, batch_size=FLAGS.batch_size, eval_batch_size=FLAGS.eval_batch_size)
    source = data.open_source(
        **{name: FLAGS[name].value for name in train_flags.SECTIONS["dataset"]}, seed=FLAGS.seed,
        download=FLAGS.download,
    )
    config = train_flags.config_from_flags(source.info)
    run_dir.check_resumable(model_dir, config)
    if distribute.is_chief(strategy):
        run_dir.prepare(model_dir)
    logging.info("Run directory: %s", os.path.abspath(model_dir))
    return strategy, source, config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    show_all = FLAGS["verbosity"].present
    console.quiet_absl_logging(show_all)
    if not show_all:
        tfds.disable_progress_bar()
    model_dir = FLAGS.model_dir or run_dir.default_model_dir(FLAGS.method, FLAGS.dataset, FLAGS.backbones)
    verbose = (1 if sys.stdout.isatty() else 2) if FLAGS.verbose == "auto" else int(FLAGS.verbose)
    try:
        strategy, source, config = start(model_dir)
    except (ValueError, data.DatasetNotFoundError, run_dir.RunError) as error:  # bad input, before any work
        sys.exit(f"ffl_tf.train: error: {error}")
    try:
        _, results = train(config, model_dir, strategy, source, flags_text=serialized_flags(), verbose=verbose)
    except preemption.Preempted as stopped:
        print(f"ffl_tf.train: {stopped}", file=sys.stderr)
        sys.exit(preemption.EXIT_STATUS)
    except (data.DatasetNotFoundError, run_dir.RunError, checkpoint.CheckpointError, models.BackboneError,
            callbacks.NonFiniteLossError) as error:
        sys.exit(f"ffl_tf.train: error: {_explain(error, model_dir)}")
    if distribute.is_chief(strategy):
        print(f"\nResults on {results['eval_examples']} evaluation images ({FLAGS.dataset}), written to "
              f"{os.path.join(model_dir, run_dir.RESULTS)}:")
        print(accuracy_table(results["accuracy"]))
        print(f"trainable parameters: {json.dumps(results['trainable_parameters'])}")
        if results["throughput"]["train_images_per_second"]:
            print(f"training throughput: {results['throughput']['train_images_per_second']:.1f} images/s")


def _explain(error: Exception, model_dir: str) -> str:
    if not isinstance(error, callbacks.NonFiniteLossError):
        return str(error)
    last = checkpoint.latest(os.path.join(model_dir, run_dir.CHECKPOINTS))
    kept = f"the last good checkpoint is {last[1]}" if last else "no checkpoint had been written yet"
    return (f"Training stopped: {error}; {kept}. Lower --learning_rate or check the data, then rerun to resume from "
            "that checkpoint (or train from scratch with --mixed_precision=float32 in a new --model_dir).")


if __name__ == "__main__":
    app.run(main)
