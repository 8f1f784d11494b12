"""Training a run: build or restore the model, fit it from where it stopped, evaluate it, write its results.

`train(config, model_dir, strategy, source)` is what `python -m ffl_tf.train` runs once its flags are
checked; the pieces (the learning-rate schedule, the compiled model, the callbacks) are what other code that
trains the way a run does uses (the benchmarks, the tests).
"""

import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from ffl_tf import data, methods, saving
from ffl_tf.data import pipeline
from ffl_tf.inspection import curves
from ffl_tf.model.distillation import DISAGREEMENT, DistillationModel, parameter_counts
from ffl_tf.runs import callbacks, checkpoint, distribute, history, preemption, run_dir
from ffl_tf.runs.config import RunConfig
from ffl_tf.utils import atomic


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


def compile_model(model: DistillationModel, config: RunConfig, steps: int) -> DistillationModel:
    """Compiles `model` as the run `config` trains it: SGD on the run's schedule, the method's loss with the
    run's settings, its ramp-up and weight decays; `steps` is the number of steps per epoch."""
    training = config.training
    optimizer = keras.optimizers.SGD(
        learning_rate_schedule(training, steps), momentum=training["momentum"], nesterov=training["nesterov"]
    )
    model.compile(
        optimizer, distillation_loss=methods.get(config.method).loss_fn(**config.loss), steps_per_epoch=steps,
        rampup_epochs=training.get("rampup_epochs", 0.0), weight_decay=training["weight_decay"],
        module_weight_decay=config.module_weight_decay(), jit_compile=config.execution["jit_compile"],
    )
    return model


def build_or_restore(
    config: RunConfig, model_dir: str, strategy: tf.distribute.Strategy, steps: int, *, chief: bool,
    flags_text: str | None,
) -> tuple[DistillationModel, checkpoint.Position]:
    """The compiled model with the newest readable checkpoint restored; returns (model, its position).

    The run's config.json (and flags.txt) are written once the model is built, so a network that cannot be
    built leaves no run behind.
    """
    with strategy.scope():
        model = run_dir.build_model(config)
        if chief:
            atomic.write_json(os.path.join(model_dir, run_dir.CONFIG), config.to_json())
            if flags_text is not None:
                atomic.write_text(os.path.join(model_dir, run_dir.FLAGS_FILE), flags_text)
        compile_model(model, config, steps)
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


def stall_hint(config: RunConfig) -> str:
    """What helps a stalling run: a ramp-up of the distillation for a method that distils, else a lower rate."""
    if "rampup_epochs" in config.training:
        return (f"A ramp-up of the distillation lets the networks learn from the labels first: try --rampup_epochs="
                f"{max(1, round(config.training['epochs'] * 80 / 300))} (the reference codes' 80 of 300 epochs; now "
                f"{config.training['rampup_epochs']:g}).")
    return f"Try a lower --learning_rate (now {config.training['learning_rate']:g})."


def make_callbacks(config: RunConfig, model_dir: str, steps: int, *, chief: bool,
                   stop: preemption.StopRequest, heartbeat: Callable[[], None] | None = None) -> list:
    """Divergence checks, throughput, learning rate, progress bar; on the chief TensorBoard and history.csv;
    checkpoints last, so an epoch's logs are written before its checkpoint makes it count as done (`heartbeat`,
    the run lock's, runs before each)."""
    training, execution = config.training, config.execution
    run_callbacks = [callbacks.StopOnNonFinite(), callbacks.Throughput(training["batch_size"]),
                     callbacks.LogLearningRate(), callbacks.HeadlineProgbar(),
                     callbacks.StallWarning(config.model["num_classes"], stall_hint(config))]
    if chief:
        run_callbacks += [
            keras.callbacks.TensorBoard(os.path.join(model_dir, run_dir.LOGS), write_graph=False),
            keras.callbacks.CSVLogger(os.path.join(model_dir, run_dir.HISTORY), append=True),
        ]
    run_callbacks.append(callbacks.Checkpoints(
        os.path.join(model_dir, run_dir.CHECKPOINTS), epochs=training["epochs"], steps_per_epoch=steps,
        every=execution["checkpoint_every"], every_steps=execution["checkpoint_every_steps"],
        keep=execution["keep_checkpoints"], is_chief=chief, stop=stop, heartbeat=heartbeat,
    ))
    return run_callbacks


def fit(model, config: RunConfig, source: data.Source, strategy, steps: int, position, evaluation: tuple,
        run_callbacks: list, verbose) -> None:
    """Trains from `position` to the last epoch: first the rest of an interrupted epoch, then whole epochs.

    Each part reads the training stream from its own first step, so no batch is seen twice or skipped.
    `evaluation` is (the distributed evaluation stream, its steps).
    """
    training = config.training
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


def evaluate(model, config: RunConfig, source: data.Source, evaluation: tuple, throughput: list[float]) -> dict:
    """results.json: accuracy, calibration (ECE) per head and the branches' disagreement on the evaluation
    split, loss, parameter counts, throughput."""
    eval_ds, steps = evaluation
    evaluation = model.evaluate(eval_ds, steps=steps, return_dict=True, verbose=0)
    reported = methods.get(config.method).reported_heads(len(config.model["backbones"]))
    return {
        "method": config.method,
        "accuracy": {head: float(evaluation[f"acc_{head}"]) for head in reported},
        "calibration": {"ece": {head: float(evaluation[f"ece_{head}"]) for head in model.heads}},
        "disagreement": float(evaluation[DISAGREEMENT]) if DISAGREEMENT in evaluation else None,
        "trainable_parameters": parameter_counts(model),
        "throughput": {"train_images_per_second": float(np.median(throughput)) if throughput else None},
        "eval_loss": float(evaluation["loss"]),
        "eval_examples": source.info.num_eval,
        "dropped_images": source.info.dropped_images,
        "epochs": config.training["epochs"],
        "steps": int(model.optimizer.iterations.numpy()),
    }


def train(config: RunConfig, model_dir: str, strategy: tf.distribute.Strategy, source: data.Source, *,
          flags_text: str | None = None, verbose="auto",
          heartbeat: Callable[[], None] | None = None) -> tuple[DistillationModel, dict]:
    """Trains (or resumes) the run described by `config` in `model_dir`; returns (model, results). The chief ends
    by writing RUN/model.keras (the trained, compiled model as a Keras model file) and results.json.

    `flags_text` (the command's flags in flagfile syntax) is saved as RUN/flags.txt. `heartbeat` runs before
    each checkpoint: the run lock's (`ffl_tf.runs.lock`), which raises if this process no longer holds the run.
    """
    training = config.training
    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(training["seed"])
    keras.mixed_precision.set_global_policy(training["mixed_precision"])
    steps = steps_per_epoch(source.info.num_train, training)
    model, position = build_or_restore(config, model_dir, strategy, steps, chief=chief, flags_text=flags_text)
    logging.info("%s, %s: %d branches %s; trainable parameters %s; %d train / %d eval examples; %d steps/epoch, "
                 "%d replicas", config.method, source.info.name, len(config.model["backbones"]),
                 config.model["backbones"], parameter_counts(model), source.info.num_train, source.info.num_eval,
                 steps, strategy.num_replicas_in_sync)
    if chief:
        history.trim_history(os.path.join(model_dir, run_dir.HISTORY), position[0])
    # One evaluation stream for the whole run: its decoded images are cached once.
    evaluation = pipeline.distribute_eval(strategy, source, global_batch_size=config.execution["eval_batch_size"])
    with preemption.stop_on_signals(strategy) as stop:
        run_callbacks = make_callbacks(config, model_dir, steps, chief=chief, stop=stop, heartbeat=heartbeat)
        if position < (training["epochs"], 0):
            fit(model, config, source, strategy, steps, position, evaluation, run_callbacks, verbose)
    throughput = next(c for c in run_callbacks if isinstance(c, callbacks.Throughput)).history
    results = evaluate(model, config, source, evaluation, throughput)
    if chief:  # the model file first: results.json marks a finished run
        saving.save_model(model, os.path.join(model_dir, run_dir.MODEL_FILE))
        atomic.write_json(os.path.join(model_dir, run_dir.RESULTS), results)
        curves.write_run_plots(model_dir)
    return model, results


