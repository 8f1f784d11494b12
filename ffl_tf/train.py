"""Trains a model by online distillation: FFL (the default), DML, ONE, or networks trained alone.

    python -m ffl_tf.train --flagfile=configs/cifar100.flags [--flag=value ...]
    ffl-train --config=cifar100 [--flag=value ...]      # a shipped flagfile by name, from any directory

Rerunning the same command continues from the last checkpoint in --model_dir. SIGTERM or Ctrl-C stop at
the next step with a checkpoint and exit status 75 ("preempted, retry"). The run directory ends with the
flags used, checkpoints, TensorBoard logs and results.json (per-head accuracy). The run holds RUN/lock.json while it
lives (`ffl_tf.runs.lock`): a second `ffl_tf.train` on a live run is refused, naming the holder; the lock of a
process that died is taken over with a warning.
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True, configs=True)

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator

import tensorflow as tf
from absl import app, flags, logging

from ffl_tf import backbones, data
from ffl_tf.runs import callbacks, checkpoint, config, distribute, preemption, run_dir, settings, train_flags, training
from ffl_tf.runs.config import RunConfig
from ffl_tf.runs.lock import LockError, RunLock

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(train_flags)  # --help lists them


def serialized_flags() -> str:
    """The training flags, one per line, in flagfile syntax (reusable with --flagfile)."""
    ours = FLAGS.get_key_flags_for_module(train_flags)
    return "".join(f"{flag.serialize()}\n" for flag in ours if flag.value is not None)


def accuracy_table(accuracy: dict[str, float]) -> str:
    rows = [f"{'head':<12} {'accuracy':>8}"] + [f"{head:<12} {value:>8.4f}" for head, value in accuracy.items()]
    return "\n".join(rows)


def check_branch_inputs(resolved: dict, info: data.DatasetInfo) -> None:
    """Raises BackboneError, before any work, for a `keras:` or user branch that cannot take the data's images,
    with a fix that works for this dataset (--image_size where it takes one; a registry backbone otherwise)."""
    size, channels = info.image_shape[0], info.image_shape[-1]
    registry = f"use registry backbones, e.g. --backbones={','.join(['resnet20'] * len(resolved['backbones']))}"
    if resolved["dataset"] in data.FIXED_SIZE_DATASETS:
        fix = f"{resolved['dataset']} images are {size}x{size}x{channels} (--image_size does not apply): {registry}."
    else:
        fix = f"pass a larger --image_size (e.g. --image_size={max(2 * size, 32)}), or {registry}."
    for spec in dict.fromkeys(resolved["backbones"]):
        backbones.check_input(spec, info.image_shape, fix=fix)


def start(model_dir: str,
          run_lock: RunLock | None = None) -> tuple[tf.distribute.Strategy, data.Source, RunConfig]:
    """Checks everything before any work: strategy, batch sizes, data (opened once), run directory. On the chief,
    takes `run_lock` first, so nothing is written in a run directory another live process holds."""
    strategy = distribute.make_strategy(FLAGS.strategy)
    distribute.check_batch_sizes(strategy, batch_size=FLAGS.batch_size, eval_batch_size=FLAGS.eval_batch_size)
    resolved = settings.resolve(train_flags.flag_values())
    if not FLAGS["split_seed"].present and os.path.isfile(os.path.join(model_dir, run_dir.CONFIG)):
        # A run resumes on its own hold-out: runs written before --split_seed held out by their --seed.
        resolved["split_seed"] = run_dir.read_config(model_dir).dataset["split_seed"]
    source = data.open_source(**config.section(resolved, "dataset"), download=FLAGS.download)
    check_branch_inputs(resolved, source.info)
    run_config = RunConfig.from_settings(resolved, source.info)
    if distribute.is_chief(strategy):
        if run_lock is not None:
            run_lock.acquire()
            if run_lock.took_over:
                logging.warning("%s", run_lock.took_over)
        run_dir.prepare(model_dir)
    run_dir.check_resumable(model_dir, run_config)
    logging.info("Run directory: %s", os.path.abspath(model_dir))
    return strategy, source, run_config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    model_dir = FLAGS.model_dir or run_dir.default_model_dir(FLAGS.method, FLAGS.dataset, FLAGS.backbones)
    verbose = (1 if sys.stdout.isatty() else 2) if FLAGS.verbose == "auto" else int(FLAGS.verbose)
    run_lock = RunLock(model_dir)
    with _releasing(run_lock):
        try:
            strategy, source, config = start(model_dir, run_lock)
        except (ValueError, data.DatasetNotFoundError, run_dir.RunError, LockError) as error:  # before any work
            sys.exit(f"ffl_tf.train: error: {error}")
        results = _train(config, model_dir, strategy, source, run_lock, verbose)
    if distribute.is_chief(strategy):
        print(f"\nResults on {results['eval_examples']} evaluation images ({FLAGS.dataset}), written to "
              f"{os.path.join(model_dir, run_dir.RESULTS)}:")
        print(accuracy_table(results["accuracy"]))
        print(f"trainable parameters: {json.dumps(results['trainable_parameters'])}")
        if results["throughput"]["train_images_per_second"]:
            print(f"training throughput: {results['throughput']['train_images_per_second']:.1f} images/s")


def _train(config: RunConfig, model_dir: str, strategy, source: data.Source, run_lock: RunLock, verbose) -> dict:
    """training.train, its heartbeats on a timer and at each checkpoint while the lock is held; exits in one line."""
    if run_lock.token is not None:
        run_lock.start_heartbeats()
    try:
        _, results = training.train(config, model_dir, strategy, source, flags_text=serialized_flags(), verbose=verbose,
                                    heartbeat=run_lock.heartbeat if run_lock.token is not None else None)
    except preemption.Preempted as stopped:
        print(f"ffl_tf.train: {stopped}", file=sys.stderr)
        sys.exit(preemption.EXIT_STATUS)
    except (data.DatasetNotFoundError, run_dir.RunError, checkpoint.CheckpointError, backbones.BackboneError,
            callbacks.NonFiniteLossError, LockError) as error:
        sys.exit(f"ffl_tf.train: error: {_explain(error, model_dir)}")
    return results


@contextlib.contextmanager
def _releasing(run_lock: RunLock) -> Iterator[None]:
    """Releases the run's lock on every way out: the end, an error, an exit, Ctrl-C, and SIGTERM outside training
    (which then exits with status 75; during training `preemption` checkpoints first)."""
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        run_lock.release()


def _terminated(signum, frame) -> None:
    print("ffl_tf.train: stopped on request (SIGTERM) outside training; rerun the same command to continue.",
          file=sys.stderr)
    sys.exit(preemption.EXIT_STATUS)


def _explain(error: Exception, model_dir: str) -> str:
    if not isinstance(error, callbacks.NonFiniteLossError):
        return str(error)
    last = checkpoint.latest(os.path.join(model_dir, run_dir.CHECKPOINTS))
    kept = f"the last good checkpoint is {last[1]}" if last else "no checkpoint had been written yet"
    return (f"Training stopped: {error}; {kept}. Lower --learning_rate or check the data, then rerun to resume from "
            "that checkpoint (or train from scratch with --mixed_precision=float32 in a new --model_dir).")


if __name__ == "__main__":
    app.run(main)
