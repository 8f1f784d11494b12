"""Trains a model by online distillation: FFL (the default), DML, ONE, or networks trained alone.

    python -m ffl_tf.train --flagfile=configs/cifar100.flags [--flag=value ...]

Rerunning the same command continues from the last checkpoint in --model_dir. SIGTERM or Ctrl-C stop at
the next step with a checkpoint and exit status 75 ("preempted, retry"). The run directory ends with the
flags used, checkpoints, TensorBoard logs and results.json (per-head accuracy).
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True)

import json
import os
import sys

import tensorflow as tf
from absl import app, flags, logging

from ffl_tf import backbones, data
from ffl_tf.runs import callbacks, checkpoint, config, distribute, preemption, run_dir, settings, train_flags, training
from ffl_tf.runs.config import RunConfig

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(train_flags)  # --help lists them


def serialized_flags() -> str:
    """The training flags, one per line, in flagfile syntax (reusable with --flagfile)."""
    ours = FLAGS.get_key_flags_for_module(train_flags)
    return "".join(f"{flag.serialize()}\n" for flag in ours if flag.value is not None)


def accuracy_table(accuracy: dict[str, float]) -> str:
    rows = [f"{'head':<12} {'accuracy':>8}"] + [f"{head:<12} {value:>8.4f}" for head, value in accuracy.items()]
    return "\n".join(rows)


def start(model_dir: str) -> tuple[tf.distribute.Strategy, data.Source, RunConfig]:
    """Checks everything before any work: strategy, batch sizes, data (opened once), run directory."""
    strategy = distribute.make_strategy(FLAGS.strategy)
    distribute.check_batch_sizes(strategy, batch_size=FLAGS.batch_size, eval_batch_size=FLAGS.eval_batch_size)
    resolved = settings.resolve(train_flags.flag_values())
    source = data.open_source(**config.section(resolved, "dataset"), download=FLAGS.download)
    run_config = RunConfig.from_settings(resolved, source.info)
    run_dir.check_resumable(model_dir, run_config)
    if distribute.is_chief(strategy):
        run_dir.prepare(model_dir)
    logging.info("Run directory: %s", os.path.abspath(model_dir))
    return strategy, source, run_config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    model_dir = FLAGS.model_dir or run_dir.default_model_dir(FLAGS.method, FLAGS.dataset, FLAGS.backbones)
    verbose = (1 if sys.stdout.isatty() else 2) if FLAGS.verbose == "auto" else int(FLAGS.verbose)
    try:
        strategy, source, config = start(model_dir)
    except (ValueError, data.DatasetNotFoundError, run_dir.RunError) as error:  # bad input, before any work
        sys.exit(f"ffl_tf.train: error: {error}")
    try:
        _, results = training.train(config, model_dir, strategy, source, flags_text=serialized_flags(), verbose=verbose)
    except preemption.Preempted as stopped:
        print(f"ffl_tf.train: {stopped}", file=sys.stderr)
        sys.exit(preemption.EXIT_STATUS)
    except (data.DatasetNotFoundError, run_dir.RunError, checkpoint.CheckpointError, backbones.BackboneError,
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
