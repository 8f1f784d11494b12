"""Compares training methods over seeds: each (method, seed) is an ordinary `ffl_tf.train` run, then a report.

    python -m ffl_tf.compare --flagfile=configs/compare_cifar10_sample.flags \\
        --methods=vanilla,dml,one,ffl --seeds=0,1,2 --model_dir=runs/compare

`--config=NAME` names a shipped flagfile (`--config=compare_cifar100` is configs/compare_cifar100.flags) from any
directory; `--flagfile=PATH` reads any flagfile.

ROOT/<method>/seed<s>/ is the run of `python -m ffl_tf.train` with the comparison's training flags plus
--method, --seed and --model_dir; its output is appended to train.log there. The runs go seed by seed (every
method with seed 0 first), one at a time, then ROOT/report.md, report.json, report.csv and accuracy.png
summarise them (`ffl_tf.comparison.report`).

Every other flag is a training flag (ffl_tf/runs/train_flags.py), checked for each method as the training CLI
checks it, before any work. A method's own settings (its `Method.defaults`: temperature, Nesterov, ramp-up,
trunk sharing, ...) are its reference code's, except that the comparison's plain flags set those the method
lists as `comparison_settings` (ramp-up and trunk sharing follow the comparison's schedule and backbones), and
--method_settings sets any of them for one method (settings that are not a method's own, such as the weight
decay of most methods, follow the comparison's flags):

    --method_settings="one:branches=3;dml:rampup_epochs=8,temperature=3;vanilla:backbones=resnet20+resnet56"

`branches=N` repeats the comparison's first backbone N times and `backbones=a+b` (or `resnet20x3`) gives
them all; a method may also declare its own number of branches for comparisons (`comparison_branches`).
A plain flag of a setting no compared method lets a comparison set is refused, naming --method_settings.

Rerunning the command continues: a finished run (results.json written after the checkpoint of its last epoch)
is skipped, an interrupted one resumes from its checkpoint; a run directory written with other settings is
refused. A failing run stops the comparison with the run's name and log; with --keep_going the other runs
still train and the comparison fails at the end. SIGTERM or Ctrl-C stop the current run at its next step with
a checkpoint and exit with status 75. --dry_run prints the commands of the runs left, one per line, to run
elsewhere (a cluster scheduler); --report_only then writes the report from the finished runs (at any time).

The same command started on several machines sharing ROOT (or twice on one) trains each run once: a run whose
directory another live process holds (its lock, `ffl_tf.runs.lock`) is skipped, "running on host X", and
waited for at the end; the holder of a run that died is taken over. Each comparison writes the report when
every run is finished: the same files, whichever writes them (`ffl_tf.comparison.runner`).
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True, configs=True)

import contextlib
import os
import shlex
import sys

from absl import app, flags

from ffl_tf import methods
from ffl_tf.comparison import report, runner
from ffl_tf.comparison.runner import LOG, Run, is_finished, train  # noqa: F401  (this command's public names)
from ffl_tf.runs import config, lock, run_dir, settings, train_flags
from ffl_tf.runs.settings import Role

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(train_flags)  # --help lists them
flags.DEFINE_list("methods", ["vanilla", "dml", "one", "ffl"], f"Methods to compare: {', '.join(methods.METHODS)}.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: one run of each method per seed.")
flags.DEFINE_string("method_settings", "", "Settings of one method's own, e.g. \"one:branches=3;dml:rampup_epochs=8,"
                    "temperature=3\": ';' between methods, ',' between settings; backbones as resnet20+wrn16_2 or "
                    "resnet20x3, branches=N repeats the first backbone N times.")
flags.DEFINE_bool("dry_run", False, "Print the training commands of the runs left (one per line) instead of running.")
flags.DEFINE_bool("report_only", False, "Write the report from the finished runs; train nothing.")
flags.DEFINE_bool("keep_going", False, "After a failed run, train the others; the comparison still fails at the end.")


def _training_flags() -> list:
    return FLAGS.get_key_flags_for_module(train_flags)


@contextlib.contextmanager
def _flag_values(**values):
    """Sets training flags together, runs every flag validator (as `ffl_tf.train` would), restores them after."""
    saved = {name: FLAGS[name].value for name in values}
    try:
        for name, value in values.items():
            FLAGS[name].value = value
        FLAGS.validate_all_flags()
        yield
    finally:
        for name, value in saved.items():
            FLAGS[name].value = value


def parse_method_settings(text: str) -> dict[str, dict[str, str]]:
    """{method: {setting: value as text}} of a --method_settings value; raises ValueError naming the bad part."""
    parsed: dict[str, dict[str, str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        method, _, assignments = part.partition(":")
        pairs = [a.partition("=") for a in assignments.split(",") if a.strip()]
        if not assignments or any(not name.strip() or not sep for name, sep, _ in pairs):
            raise ValueError(f"--method_settings: {part!r} is not method:name=value[,name=value...].")
        parsed.setdefault(method.strip(), {}).update({n.strip(): v.strip() for n, _, v in pairs})
    return parsed


def backbone_list(text: str) -> list[str]:
    """"resnet20+wrn16_2" or "resnet20x3" (or both: "resnet20x2+wrn16_2") as a list of backbones."""
    names = []
    for item in text.split("+"):
        name, _, count = item.rpartition("x") if item.rpartition("x")[2].isdigit() else (item, "", "1")
        names += [name] * int(count)
    return names


def takes_flag(method: methods.Method, name: str) -> bool:
    """Whether the comparison's plain flag `name` sets it for `method`: a setting it uses that is not one of its
    own (`defaults`, e.g. the weight decay of most methods), or one of its own it lists as `comparison_settings`."""
    return settings.uses(method, name) and (name not in method.defaults or name in method.comparison_settings)


def method_values(method: methods.Method, own: dict[str, str]) -> dict:
    """The flags a run of `method` sets on top of the comparison's: its own settings (from --method_settings,
    its declaration's comparison branches, or left to its defaults)."""
    values = {}
    for name in settings.METHOD_SETTINGS:
        if not settings.uses(method, name):
            values[name] = None  # not a setting of this method
        elif not (FLAGS[name].present and takes_flag(method, name)):
            values[name] = method.defaults.get(name, settings.METHOD_SETTINGS[name])  # its own, written out
    backbones = FLAGS.backbones
    if method.comparison_branches:
        backbones = [backbones[0]] * method.comparison_branches
    for name, text in own.items():
        if name == "branches":
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"--method_settings={method.name}:branches={text}: use a positive whole number.")
            backbones = [FLAGS.backbones[0]] * int(text)
        elif name == "backbones":
            backbones = backbone_list(text)
        elif name in settings.METHOD_SETTINGS and settings.uses(method, name):
            try:
                values[name] = FLAGS[name].parser.parse(text)
            except ValueError as error:
                raise ValueError(f"--method_settings={method.name}:{name}={text}: {error}") from None
        else:
            settable = [n for n in settings.METHOD_SETTINGS if settings.uses(method, n)]
            raise ValueError(f"--method_settings: {method.name} has no setting {name!r} of its own; it takes "
                             f"{', '.join(['backbones', 'branches', *settable])}.")
    if backbones != FLAGS.backbones:
        values["backbones"] = backbones
    return values


def run_values(method: str, seed: int, root: str, own: dict[str, str] | None = None) -> dict:
    """The flags a run sets on top of the comparison's: method, seed, run directory, and the method's own."""
    return {**method_values(methods.get(method), own or {}), "method": method, "seed": seed,
            "model_dir": os.path.join(root, method, f"seed{seed}")}


def make_run(method: str, seed: int, root: str, own: dict[str, str] | None = None) -> Run:
    """The run and its command; raises ValueError if the training flags are invalid for this method."""
    values = run_values(method, seed, root, own)
    try:
        with _flag_values(**values):
            passed = [f.serialize() for f in _training_flags()
                      if f.value is not None and (f.present or f.name in values) and f.name not in ("method", "seed",
                                                                                                     "model_dir")]
            command = [sys.executable, "-m", "ffl_tf.train", *passed,
                       *(FLAGS[n].serialize() for n in ("method", "seed", "model_dir"))]
            resolved = settings.resolve(train_flags.flag_values())
    except flags.IllegalFlagValueError as error:
        raise ValueError(f"--methods={method}: {error}") from None
    _check_existing(values["model_dir"], resolved)
    return Run(method, seed, values["model_dir"], command, resolved)


def _check_existing(path: str, resolved: dict) -> None:
    """Refuses a run directory trained with other settings (besides how it executes, `Role.EXECUTION`)."""
    if not os.path.isfile(os.path.join(path, run_dir.CONFIG)):
        return
    try:
        previous = run_dir.read_config(path).settings()
    except (run_dir.RunError, ValueError, KeyError, OSError):
        return  # not a run of this ffl_tf: training it says why, in its log
    changed = config.changes(previous, resolved, [Role.FIXED, Role.RESULT])
    if changed:
        raise ValueError(f"{path} holds a run with other settings ({config.describe(changed)}). Use a new "
                         "--model_dir, or delete that run directory to train it again.")


def plan() -> list[Run]:
    """Every run of the comparison, seed by seed; raises ValueError, naming the fix, before any work."""
    root = FLAGS.model_dir
    if not root:
        raise ValueError("--model_dir=ROOT is required: the comparison's directory, ROOT/<method>/seed<s> per run.")
    if os.path.isfile(os.path.join(root, run_dir.CONFIG)):
        raise ValueError(f"--model_dir={root} is a training run; give the comparison a directory of its own.")
    if not FLAGS.methods or len(set(FLAGS.methods)) < len(FLAGS.methods):
        raise ValueError(f"--methods={','.join(FLAGS.methods)}: list each method once, e.g. vanilla,dml,one,ffl.")
    for method in FLAGS.methods:
        try:
            methods.get(method)
        except ValueError as error:
            raise ValueError(f"--methods: {error}") from None
    if not FLAGS.seeds or not all(s.isdigit() for s in FLAGS.seeds) or len(set(FLAGS.seeds)) < len(FLAGS.seeds):
        raise ValueError(f"--seeds={','.join(FLAGS.seeds)}: use distinct non-negative integers, e.g. 0,1,2.")
    for name, instead in [("method", "--methods"), ("seed", "--seeds")]:
        if FLAGS[name].present:
            raise ValueError(f"--{name} is set by the comparison for each run; use {instead}.")
    compared = [methods.get(m) for m in FLAGS.methods]
    refused = [f"--{name}" for name in settings.METHOD_SETTINGS
               if FLAGS[name].present and not any(takes_flag(m, name) for m in compared)]
    if refused:
        raise ValueError(f"{', '.join(refused)}: a comparison trains each method with its own defaults "
                         "(ffl_tf/methods/<method>.py); set them for one method with --method_settings=METHOD:NAME="
                         "VALUE, or train a variant with ffl_tf.train.")
    own = parse_method_settings(FLAGS.method_settings)
    unknown = sorted(set(own) - set(methods.METHODS))
    if unknown:
        raise ValueError(f"--method_settings names {', '.join(unknown)}: not a method; choose from: "
                         f"{', '.join(methods.METHODS)}.")
    others = sorted(set(own) - set(FLAGS.methods))
    if others:  # e.g. a preset flagfile's settings for the methods left out of --methods
        print(f"ffl_tf.compare: note: --method_settings for {', '.join(others)}, which --methods="
              f"{','.join(FLAGS.methods)} does not compare: left out.", file=sys.stderr)
    return [make_run(method, int(seed), root, own.get(method)) for seed in FLAGS.seeds for method in FLAGS.methods]


def run_all(runs: list[Run]) -> list[str]:
    """Trains the runs not finished yet (`runner.run_all`, with this module's `train`); returns the failures'
    messages. Runs held by another comparison of the same root are left to it and waited for."""
    return runner.run_all(runs, train, keep_going=FLAGS.keep_going)


def write_report(runs: list[Run]) -> None:
    finished: dict[str, dict[int, str]] = {method: {} for method in FLAGS.methods}
    for run in runs:
        if is_finished(run.path):
            finished[run.method][run.seed] = run.path
    missing = [f"{run.method}/seed{run.seed}" for run in runs if run.seed not in finished[run.method]]
    summary = report.write(FLAGS.model_dir, finished, missing)
    print(f"\n{report.table(summary)}\n\nReport: {os.path.join(FLAGS.model_dir, report.MARKDOWN)} (and "
          f"{report.JSON}, {report.CSV}, {report.PLOT} beside it)")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, whose training-flag checks see one --method: the first of --methods that takes --backbones
    and every setting of a method's own given as a flag as given (`comparison_settings`). plan() checks every
    method. A setting that none of --methods lets a comparison set but another method does (a preset flagfile's
    --rampup_epochs when comparing DML alone) is left out, with a note: it is for the others."""
    scratch = flags.FlagValues()
    flags.DEFINE_list("methods", FLAGS["methods"].default, "", flag_values=scratch)
    for name in settings.METHOD_SETTINGS:
        flags.DEFINE_string(name, None, "", flag_values=scratch)
    with contextlib.suppress(flags.Error):  # the real parse below reports it
        argv = [argv[0], *scratch.read_flags_from_files(argv[1:], force_gnu=False)]
        scratch(argv, known_only=True)
        requested = [methods.get(m) for m in scratch.methods if m in methods.METHODS]
        others = [methods.get(m) for m in methods.METHODS]
        given = [name for name in settings.METHOD_SETTINGS if scratch[name].present]
        left_out = [name for name in given if not any(takes_flag(m, name) for m in requested)
                    and any(takes_flag(m, name) for m in others)]
        if requested and left_out:
            argv = _without(argv, left_out)
            print(f"ffl_tf.compare: note: {', '.join('--' + n for n in left_out)} set(s) none of --methods="
                  f"{','.join(m.name for m in requested)} (each trains with its own); left out.", file=sys.stderr)
            given = [name for name in given if name not in left_out]
        # A method that declares its own branches (OKDDip) trains with them, not --backbones: check the flags
        # with another, of the compared ones if there is one.
        plain = [m for m in requested if m.comparison_branches is None]
        if requested and not plain:
            plain = [m for m in others if m.comparison_branches is None]
        using = [m for m in plain if all(settings.uses(m, n) for n in given)]
        as_given = [m for m in using if all(takes_flag(m, name) for name in given)]
        if plain:
            FLAGS.set_default("method", (as_given or using or plain)[0].name)
    return app.parse_flags_with_usage(argv)


def _without(argv: list[str], names: list[str]) -> list[str]:
    """`argv` without the arguments that set the flags `names` (`--name=value`, `--name value`, `--[no]name`)."""
    kept, args = [], iter(argv)
    for arg in args:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if name.startswith("no") and name[2:] in names and FLAGS[name[2:]].boolean:
            continue
        if name in names:
            if "=" not in arg and not FLAGS[name].boolean:
                next(args, None)  # its value, the next argument
            continue
        kept.append(arg)
    return kept


def print_commands(runs: list[Run]) -> None:
    """--dry_run: the commands of the runs left, one per line; finished runs and runs a live process holds (on this
    machine or another sharing the root) are named on stderr instead."""
    for run in runs:
        if is_finished(run.path):
            print(f"# {run.name}: finished, skipped ({run.path})", file=sys.stderr)
        elif (holder := lock.live_holder(run.path)) is not None:
            print(f"# {run.name}: running on host {holder.host} (pid {holder.pid}), skipped ({run.path})",
                  file=sys.stderr)
        else:
            print(shlex.join(run.command))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        runs = plan()
        lock.heartbeat_seconds(), lock.stale_seconds(), runner.poll_seconds()  # timing set in the environment
    except ValueError as error:
        sys.exit(f"ffl_tf.compare: error: {error}")
    if FLAGS.dry_run:
        print_commands(runs)
        return
    failures = [] if FLAGS.report_only else run_all(runs)
    try:
        write_report(runs)
    except ValueError as error:
        sys.exit(f"ffl_tf.compare: error: {error}")
    if failures:
        sys.exit(f"ffl_tf.compare: error: {len(failures)} run(s) failed: " + "; ".join(failures))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
