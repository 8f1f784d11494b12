"""Every method trained by ffl_tf and by a PyTorch reference on the same images, and the two sides' accuracy compared.

    python -m benchmarks.reproduce --flagfile=configs/compare_cifar10_sample.flags \\
        --methods=vanilla,dml,one,ffl --seeds=0,1,2 --model_dir=runs/reproduce

The ffl_tf side is an ordinary comparison (`ffl_tf.compare`) in ROOT/ffl_tf, with every flag a comparison
takes (the flagfile's schedule, --method_settings, ...). The PyTorch side (benchmarks/torch_reference.py, run
by path in processes of its own: PyTorch is a benchmark-only dependency) trains each (method, seed) with the
settings the ffl_tf run resolved (`ffl_tf.runs.settings.resolve`), written to ROOT/pytorch/<method>/seed<s>/
settings.json, on the same images: ROOT/data.npz holds the image folder's training and evaluation split as
ffl_tf decodes it (the hold-out chosen by --split_seed, not by the training seed).

Before any training, ROOT/checks.json: for each method, ffl_tf's freshly built model (seed 0) against the
reference's (the mean and standard deviation of every weight tensor, as z-scores of their differences, and
pooled per kind of layer), and then, from ffl_tf's weights, the reference's logits, loss parts and loss parts
after one step at full distillation weight on a batch of real training images (DML's networks updated together,
as ffl_tf does); each method's entry replaces that method's earlier one. A failed check stops the command
before any training. Then the runs go seed by seed, each (method, seed) on both sides;
rerunning continues (finished runs on both sides are skipped). At the end, and with --report_only at any
time, ROOT/reproduce.md and reproduce.json: per method, the headline head and the branch mean, mean +- sample
standard deviation over the seeds per framework, and the difference of the means (ffl_tf - PyTorch).

Needs `pip install -r benchmarks/requirements.txt` (PyTorch) for the PyTorch side; --frameworks=ffl_tf trains
ffl_tf alone.
"""

# ruff: noqa: E402  (the process is set up before TensorFlow is imported)
from ffl_tf import launcher

launcher.prepare(__name__, show_info=True)

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from benchmarks import timing
from benchmarks.common import train_step_fn
from ffl_tf import compare, data, methods
from ffl_tf.data import ops_image
from ffl_tf.runs import config, run_dir, training
from ffl_tf.runs.config import RunConfig
from ffl_tf.utils import atomic

FLAGS = flags.FLAGS
flags.DEFINE_list("frameworks", ["ffl_tf", "pytorch"], "Sides to train: ffl_tf and/or pytorch.")
flags.DEFINE_enum("dml_update", "alternate", ["alternate", "joint"], "PyTorch's DML: update the networks one after "
                  "the other on each batch (the paper's Algorithm 1) or all from one forward pass (as ffl_tf).")
flags.DEFINE_integer("torch_threads", os.cpu_count(), "PyTorch's intra-op threads.", lower_bound=1)
flags.DEFINE_integer("check_batch_size", 32, "Real training images in the one-step check's batch.", lower_bound=2)

ROOT = Path(__file__).resolve().parents[1]
TORCH_REFERENCE = Path(__file__).with_name("torch_reference.py")
FRAMEWORKS = ("ffl_tf", "pytorch")
DATA, CHECKS, MARKDOWN, JSON = "data.npz", "checks.json", "reproduce.md", "reproduce.json"
# One-step check bounds: logits |ffl_tf - PyTorch| <= 1e-4 (float32 rounding); losses 1e-4 relative; after
# one SGD step 2e-3 relative (the step's float32 gradients differ in rounding; a wrong learning rate,
# momentum, weight decay or ramp-up weight moves the losses by 1e-2 and more, see benchmarks/vs_pytorch.py).
LOGIT_TOLERANCE, LOSS_TOLERANCE, AFTER_STEP_TOLERANCE = 1e-4, 1e-4, 2e-3
# What the reference needs of a run's settings, with the neutral value of those a method does not use.
_TORCH_SETTINGS = {"backbones": None, "shared_stages": 0, "temperature": 1.0, "rampup_epochs": 0.0, "epochs": None,
                   "batch_size": None, "learning_rate": None, "lr_base_batch_size": None, "lr_decay_epochs": None,
                   "lr_decay_factor": None, "momentum": None, "nesterov": None, "weight_decay": None,
                   "fusion_weight_decay": 1e-5, "seed": None}


def torch_settings(resolved: dict, info: data.DatasetInfo) -> dict:
    """The reference's settings.json for a run of `resolved` settings (`ffl_tf.runs.settings.resolve`)."""
    values = {name: resolved.get(name, neutral) for name, neutral in _TORCH_SETTINGS.items()}
    extra = {"dml_update": FLAGS.dml_update} if resolved["method"] == "dml" else {}
    return {"method": resolved["method"], "num_classes": info.num_classes, "mean": list(info.mean),
            "std": list(info.std), **values, **extra}


def plan(root: str) -> list[compare.Run]:
    """The ffl_tf runs (a comparison in ROOT/ffl_tf), seed by seed; raises ValueError before any work."""
    FLAGS.model_dir = os.path.join(root, "ffl_tf")
    try:
        runs = compare.plan()
    finally:
        FLAGS.model_dir = root
    if any(r.settings["dataset"] != "image_folder" for r in runs):
        raise ValueError("--dataset=image_folder (e.g. ../shared/data/cifar10-sample) is what both sides read.")
    return runs


def write_data(path: str, resolved: dict) -> data.DatasetInfo:
    """ROOT/data.npz: the image folder's split as uint8 arrays, decoded as ffl_tf decodes them (written once)."""
    dataset = config.section(resolved, "dataset")
    source = data.open_source(**dataset, download=False)
    if not os.path.isfile(path):
        _, train, evaluation, _ = data.image_folder_files(
            dataset["data_dir"], validation_fraction=dataset["validation_fraction"], seed=dataset["split_seed"],
            skip_bad_images=dataset["skip_bad_images"])
        size = source.info.image_shape[0]

        def arrays(examples):
            images = [ops_image.decode_file_at_size(tf.constant(p), size).numpy() for p, _ in examples]
            return np.stack(images), np.array([label for _, label in examples], np.int32)

        (train_images, train_labels), (eval_images, eval_labels) = arrays(train), arrays(evaluation)
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, train_images=train_images, train_labels=train_labels, eval_images=eval_images,
                     eval_labels=eval_labels)
    return source.info


# ---------------------------------------------------------------------------------------------------------
# The checks before training
# ---------------------------------------------------------------------------------------------------------


def write_reference(path: str, run_config: RunConfig, images: np.ndarray, labels: np.ndarray, steps: int) -> None:
    """ffl_tf's side of the checks: a fresh model's weights, its eval logits on `images`, its train-mode loss
    parts at w = 1 and L2 penalty, and its loss parts after one train step."""
    keras.utils.set_random_seed(run_config.training["seed"])
    model = training.compile_model(run_dir.build_model(run_config), run_config, steps)
    loss = methods.get(run_config.method).loss_fn(**run_config.loss)

    def parts() -> dict[str, float]:
        total, values = loss(model(images, training=True), labels, kd_weight=1.0)
        return {"total_w1": float(total), **{name: float(value) for name, value in values.items()}}

    arrays = {f"weights/{sub.name}/{layer.name}/{v.name}": np.asarray(v) for sub in model.layers
              if isinstance(sub, keras.Model) for layer in sub.layers for v in layer.weights}
    arrays |= {f"eval/{name}": np.asarray(z) for name, z in model(images, training=False).items()}
    train = {**parts(), "l2": float(model.l2_penalty())}
    train_step_fn(model, (images, labels))()
    arrays |= {f"train/{k}": np.float64(v) for k, v in train.items()}
    arrays |= {f"after_step/{k}": np.float64(v) for k, v in parts().items()}
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=images, labels=labels.astype(np.int64), steps_per_epoch=steps, **arrays)


def check_method(run: compare.Run, info: data.DatasetInfo, data_file: str, work: str) -> dict:
    """Both sides' checks for `run`'s method; returns {"ok", "initialisation", "one_step": [...]}."""
    loaded = np.load(data_file)
    images = loaded["train_images"][:FLAGS.check_batch_size]
    labels = loaded["train_labels"][:FLAGS.check_batch_size]
    # The step at full distillation weight (no ramp-up), so that the distillation's gradients are checked too;
    # at a ramped method's first step w(0) = exp(-5) would hide them.
    settings = {**run.settings, "seed": 0, **({"rampup_epochs": 0.0} if "rampup_epochs" in run.settings else {})}
    run_config = RunConfig.from_settings(settings, info)
    steps = training.steps_per_epoch(len(loaded["train_images"]), run_config.training)
    reference = os.path.join(work, f"{run.method}.npz")
    write_reference(reference, run_config, images, labels, steps)
    settings_file = os.path.join(work, f"{run.method}.json")
    atomic.write_json(settings_file, torch_settings(settings, info))
    answer = subprocess.run(torch_command("check", f"--settings={settings_file}", f"--reference={reference}"),
                            cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True, env=torch_environment())
    found = json.loads(answer.stdout)
    expected = np.load(reference)
    rows = [{"what": f"eval logits {head}", "ffl_tf": float(np.abs(expected[f"eval/{head}"]).max()),
             "pytorch": found["logits_max_abs"][head], "difference": diff, "bound": LOGIT_TOLERANCE}
            for head, diff in found["logits_max_abs_diff"].items()]
    for stage, tolerance in (("train", LOSS_TOLERANCE), ("after_step", AFTER_STEP_TOLERANCE)):
        for part, value in found[stage].items():
            ours = float(expected[f"{stage}/{part}"])
            rows.append({"what": f"{stage} {part}", "ffl_tf": ours, "pytorch": value, "difference": abs(ours - value),
                         "bound": tolerance * max(1.0, abs(ours))})
    ok = found["initialisation"]["ok"] and all(r["difference"] <= r["bound"] for r in rows)
    return {"ok": ok, "trainable_parameters": found["trainable_params"], "initialisation": found["initialisation"],
            "one_step": rows}


def run_checks(runs: list[compare.Run], info: data.DatasetInfo, data_file: str, root: str) -> None:
    """ROOT/checks.json for every method; prints a line per method and exits if a check fails."""
    work = os.path.join(root, "checks")
    os.makedirs(work, exist_ok=True)
    results, first = {}, {}
    for run in runs:
        first.setdefault(run.method, run)
    for method, run in first.items():
        results[method] = check_method(run, info, data_file, work)
        worst = max(r["difference"] / r["bound"] for r in results[method]["one_step"])
        initialisation = results[method]["initialisation"]
        print(f"check {method}: initialisation worst |z| {initialisation['worst_z']:.2f} "
              f"(bound {initialisation['bound']}); one step worst difference {worst:.3f} of its bound; "
              f"{'ok' if results[method]['ok'] else 'FAILED'}", flush=True)
    atomic.write_json(os.path.join(root, CHECKS), {**_read(os.path.join(root, CHECKS)), **results})
    failed = [m for m, r in results.items() if not r["ok"]]
    if failed:
        sys.exit(f"benchmarks.reproduce: error: the sides differ before training for {', '.join(failed)}; see "
                 f"{os.path.join(root, CHECKS)}.")


# ---------------------------------------------------------------------------------------------------------
# Training and the table
# ---------------------------------------------------------------------------------------------------------


def torch_command(command: str, *args: str) -> list[str]:
    # Run by path: importing the `benchmarks` package would import TensorFlow into the PyTorch process.
    return [sys.executable, str(TORCH_REFERENCE), command, *args, f"--threads={FLAGS.torch_threads}"]


def torch_environment() -> dict[str, str]:
    """PyTorch's OpenMP threads sleep when idle (spinning ones slow everything else on a shared machine)."""
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def torch_run_dir(root: str, run: compare.Run) -> str:
    return os.path.join(root, "pytorch", run.method, f"seed{run.seed}")


def train_torch(run: compare.Run, info: data.DatasetInfo, data_file: str, root: str, prefix: str) -> None:
    """Trains the reference's run of (method, seed) unless it finished with the same settings."""
    path = torch_run_dir(root, run)
    wanted = torch_settings(run.settings, info)
    if _read(os.path.join(path, "results.json")).get("settings") == wanted:
        print(f"{prefix} pytorch {run.name}: finished earlier, skipped", flush=True)
        return
    os.makedirs(path, exist_ok=True)
    atomic.write_json(os.path.join(path, "settings.json"), wanted)
    print(f"{prefix} pytorch {run.name}: started, log {os.path.join(path, 'train.log')}", flush=True)
    start = time.monotonic()
    with open(os.path.join(path, "train.log"), "a") as log:
        status = subprocess.run(torch_command("train", f"--settings={path}/settings.json", f"--data={data_file}",
                                              f"--output_dir={path}"), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=torch_environment()).returncode
    if status:
        sys.exit(f"benchmarks.reproduce: error: pytorch {run.name} failed (exit status {status}); see "
                 f"{os.path.join(path, 'train.log')}.")
    print(f"{prefix} pytorch {run.name}: finished in {(time.monotonic() - start) / 60:.1f} min", flush=True)


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def statistics(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "n": len(values), "values": values}


def summarize(runs: list[compare.Run], root: str) -> dict:
    """{method: {head: {framework: statistics, "difference": mean ffl_tf - mean PyTorch}}} of the finished runs."""
    table: dict = {}
    for run in runs:
        method = methods.get(run.method)
        head = method.headline(len(run.settings["backbones"]))
        found = {"ffl_tf": _read(os.path.join(run.path, run_dir.RESULTS)) if compare.is_finished(run.path) else {},
                 "pytorch": _read(os.path.join(torch_run_dir(root, run), "results.json"))}
        for framework, results in found.items():
            for name in dict.fromkeys([head, "branch_mean"]):
                if "accuracy" in results:
                    row = table.setdefault(run.method, {}).setdefault(name, {"headline": name == head})
                    row.setdefault(framework, []).append(100 * results["accuracy"][name])
    for heads in table.values():
        for row in heads.values():
            for framework in FRAMEWORKS:
                row[framework] = statistics(row[framework]) if row.get(framework) else None
            both = row["ffl_tf"] and row["pytorch"]
            row["difference"] = row["ffl_tf"]["mean"] - row["pytorch"]["mean"] if both else None
    return table


def _cell(stats: dict | None) -> str:
    if not stats:
        return "-"
    spread = "" if stats["std"] is None else f" ± {stats['std']:.2f}"
    return f"{stats['mean']:.2f}{spread} (n={stats['n']})"


def markdown(table: dict, epochs: int) -> str:
    lines = [f"# ffl_tf against the PyTorch reference, {epochs} epochs", "",
             "Final evaluation accuracy (%), mean ± sample standard deviation over seeds; difference = ffl_tf - "
             "PyTorch.", "", "| method | head | ffl_tf | PyTorch | difference |", "|---|---|---:|---:|---:|"]
    for method, heads in table.items():
        for head, row in heads.items():
            label = f"{head} (headline)" if row["headline"] and head != "branch_mean" else head
            difference = "-" if row["difference"] is None else f"{row['difference']:+.2f}"
            lines.append(f"| {method} | {label} | {_cell(row['ffl_tf'])} | {_cell(row['pytorch'])} | {difference} |")
    return "\n".join([*lines, "", timing.cpu_description(), ""])


def write_table(runs: list[compare.Run], root: str) -> str:
    table = summarize(runs, root)
    text = markdown(table, runs[0].settings["epochs"])
    atomic.write_json(os.path.join(root, JSON), table)
    atomic.write_text(os.path.join(root, MARKDOWN), text)
    return text


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    unknown = sorted(set(FLAGS.frameworks) - set(FRAMEWORKS))
    if unknown or not FLAGS.frameworks or not FLAGS.model_dir:
        sys.exit(f"benchmarks.reproduce: error: --frameworks takes {', '.join(FRAMEWORKS)} (got {FLAGS.frameworks}) "
                 "and --model_dir=ROOT is required.")
    root = FLAGS.model_dir
    try:
        runs = plan(root)
    except ValueError as error:
        sys.exit(f"benchmarks.reproduce: error: {error}")
    os.makedirs(root, exist_ok=True)
    data_file = os.path.join(root, DATA)
    info = write_data(data_file, runs[0].settings)
    if not FLAGS.report_only:
        if "pytorch" in FLAGS.frameworks:
            run_checks(runs, info, data_file, root)
        for seed in dict.fromkeys(r.seed for r in runs):
            seed_runs = [r for r in runs if r.seed == seed]
            if "ffl_tf" in FLAGS.frameworks:
                failures = compare.run_all(seed_runs)
                if failures:
                    sys.exit(f"benchmarks.reproduce: error: {'; '.join(failures)}")
            if "pytorch" in FLAGS.frameworks:
                for index, run in enumerate(seed_runs, 1):
                    train_torch(run, info, data_file, root, f"[{index}/{len(seed_runs)}]")
    logging.info("Writing %s", os.path.join(root, MARKDOWN))
    print(write_table(runs, root))


if __name__ == "__main__":
    app.run(main, flags_parser=compare.parse_flags)
