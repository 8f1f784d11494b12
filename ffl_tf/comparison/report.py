"""The report of a comparison of methods over seeds: ROOT/report.md, report.json, report.csv and accuracy.png.

Each run is an ordinary training run directory (`ffl_tf.train`): its results.json holds the accuracy per head
after the last epoch and its history.csv the evaluation accuracy of every epoch (`val_acc_<head>`). Per method
and head the report gives, over seeds, the mean and the sample standard deviation (ddof=1) of

- the final accuracy (after the last epoch), what the FFL paper reports, and
- the best-epoch accuracy (each run's maximum over epochs): it selects on the evaluation split, so it is
  optimistic, yet several papers report it; the two are always labelled.

Each method also has a headline head, the classifier its paper reports (`Method.headline`), and the settings
of its own it trained with (`Method.defaults`' names, as the runs' config.json record them).
"""

import csv
import math
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ffl_tf import methods
from ffl_tf.inspection import curves
from ffl_tf.model import heads
from ffl_tf.runs import config as run_config
from ffl_tf.runs import history, run_dir
from ffl_tf.utils import atomic

MARKDOWN, JSON, CSV, PLOT = "report.md", "report.json", "report.csv", "accuracy.png"
BAND = "min to max over seeds"
DEFINITIONS = {
    "accuracy": "fraction of the evaluation split classified correctly",
    "final": "after the last epoch (results.json)",
    "best_epoch": "the run's maximum over its evaluated epochs, the last one included (history.csv)",
    "std": "sample standard deviation over seeds (ddof=1); null when n = 1",
    "curves": f"evaluation accuracy per epoch: mean, and {BAND} (min, max)",
}
CSV_COLUMNS = ("method", "head", "headline", "n", "final_mean", "final_std", "best_epoch_mean", "best_epoch_std",
               "trainable_parameters", "train_images_per_second")


def read_run(path: str) -> dict:
    """A finished run's results.json, config.json and evaluation accuracy per epoch: {head: {epoch: accuracy}}."""
    results = run_dir.read_results(path)
    config = run_config.read(os.path.join(path, run_dir.CONFIG))
    curves: dict[str, dict[int, float]] = {head: {} for head in results["accuracy"]}
    for row in history.read_history(os.path.join(path, run_dir.HISTORY)):
        for head, curve in curves.items():
            accuracy = row.get(f"val_acc_{head}", math.nan)
            if not math.isnan(accuracy):  # empty in epochs without evaluation (--eval_every)
                curve[int(row["epoch"]) + 1] = accuracy
    return {"results": results, "config": config, "curves": curves}


def statistics(values: list[float]) -> dict:
    """{"mean", "std" (ddof=1, None for one value), "n", "values"}."""
    n = len(values)
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if n > 1 else None, "n": n,
            "values": [float(v) for v in values]}


def dataset_name(dataset: dict) -> str:
    """The dataset's name; an image folder's is its directory's."""
    if dataset["dataset"] == "image_folder" and dataset.get("data_dir"):
        return f"image folder {os.path.basename(os.path.normpath(dataset['data_dir']))}"
    return dataset["dataset"]


def curve(runs: list[dict], head: str) -> dict:
    """A head's evaluation accuracy per epoch over runs, at the epochs all of them evaluated: mean, min, max, n."""
    epochs = sorted(set.intersection(*(set(r["curves"][head]) for r in runs)))
    values = np.array([[r["curves"][head][e] for e in epochs] for r in runs]).reshape(len(runs), len(epochs))
    return {"epochs": epochs, "mean": values.mean(axis=0).tolist(), "min": values.min(axis=0).tolist(),
            "max": values.max(axis=0).tolist(), "n": len(runs)}


def summarize_method(method: str, runs: dict[int, dict]) -> dict:
    """One method's statistics over its runs ({seed: read_run(...)})."""
    first = next(iter(runs.values()))
    speeds = [r["results"]["throughput"]["train_images_per_second"] for r in runs.values()]
    speeds = [s for s in speeds if s]
    accuracy = {}
    for head in first["results"]["accuracy"]:
        finals = [r["results"]["accuracy"][head] for r in runs.values()]
        # The last epoch counts too: with --eval_every > 1 history.csv may not hold it.
        best = [max([*r["curves"][head].values(), final]) for r, final in zip(runs.values(), finals)]
        accuracy[head] = {"final": statistics(finals), "best_epoch": statistics(best)}
    declared = methods.get(method)
    backbones = list(first["config"].model["backbones"])
    headline = declared.headline(len(backbones))
    plotted = dict.fromkeys([headline, heads.BRANCH_MEAN])  # the plot's two panels
    settings = first["config"].settings()
    return {
        "seeds": list(runs), "runs": [r["path"] for r in runs.values()], "headline_head": headline,
        "backbones": backbones, "settings": {name: settings[name] for name in declared.defaults if name in settings},
        "accuracy": accuracy,
        "trainable_parameters": first["results"]["trainable_parameters"]["total"],
        "train_images_per_second": float(np.mean(speeds)) if speeds else None,
        "curves": {head: curve(list(runs.values()), head) for head in plotted},
    }


def summarize(runs: dict[str, dict[int, str]], missing: list[str] = ()) -> dict:
    """report.json's content from the finished runs {method: {seed: run directory}}; `missing` names the others."""
    read = {method: {seed: {**read_run(path), "path": path} for seed, path in seeds.items()}
            for method, seeds in runs.items() if seeds}
    if not read:
        raise ValueError(f"No finished run to report on; not finished: {', '.join(missing)}.")
    some_run = next(iter(next(iter(read.values())).values()))
    return {
        "definitions": DEFINITIONS,
        "dataset": dataset_name(some_run["config"].dataset),
        "eval_examples": some_run["results"]["eval_examples"],
        "epochs": some_run["results"]["epochs"],
        "missing_runs": list(missing),
        "methods": {method: summarize_method(method, method_runs) for method, method_runs in read.items()},
    }


def _percent(stats: dict) -> str:
    text = f"{100 * stats['mean']:.2f}"
    return text if stats["std"] is None else f"{text} ± {100 * stats['std']:.2f}"


def markdown(summary: dict, plot_name: str = PLOT) -> str:
    """report.md: the headline table, every head, and the plot."""
    methods = summary["methods"]
    lines = [
        "# Comparison of methods", "",
        f"{summary['dataset']}, {summary['epochs']} epoch{'s' * (summary['epochs'] != 1)}, accuracy (%) on "
        f"{summary['eval_examples']} evaluation images: mean ± sample standard deviation (ddof=1) over the n seeds. "
        "**Final**: after the last epoch (what the FFL paper reports). **Best epoch**: each run's highest evaluation "
        "accuracy over its epochs, then averaged; it selects on the evaluation split, so it is optimistic.", "",
        "## Headline heads", "",
        "The classifier each method's paper reports (`branch_mean`: the mean accuracy of one network), and the "
        "settings of its own each method trained with.", "",
        "| method | backbones | head | final | best epoch | n | trainable parameters | train images/s | settings |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for method, m in methods.items():
        head = m["headline_head"]
        speed = "–" if m["train_images_per_second"] is None else f"{m['train_images_per_second']:.1f}"
        settings = ", ".join(f"{name} {value}" for name, value in m.get("settings", {}).items())
        lines.append(
            f"| {method} | {','.join(m['backbones'])} | {head} | {_percent(m['accuracy'][head]['final'])} | "
            f"{_percent(m['accuracy'][head]['best_epoch'])} | {m['accuracy'][head]['final']['n']} | "
            f"{m['trainable_parameters']:,} | {speed} | {settings} |"
        )
    lines += ["", "Trainable parameters: the whole model (every branch, a shared trunk once, and each module of a "
              "method's own: FFL's fusion module, ONE's gate). Train images/s: each run's median over epochs, "
              "averaged over seeds.", "",
              "## Every head", "", "| method | head | final | best epoch | n |", "|---|---|---:|---:|---:|"]
    for method, m in methods.items():
        for head, stats in m["accuracy"].items():
            lines.append(f"| {method} | {head} | {_percent(stats['final'])} | {_percent(stats['best_epoch'])} | "
                         f"{stats['final']['n']} |")
    if summary["missing_runs"]:
        lines += ["", f"Not finished, left out: {', '.join(summary['missing_runs'])}."]
    lines += ["", f"![Evaluation accuracy per epoch]({plot_name})", "",
              "Evaluation accuracy per epoch: the line is the mean over seeds, the band spans their minimum to "
              "maximum.", ""]
    return "\n".join(lines)


def csv_rows(summary: dict) -> list[dict]:
    """report.csv's rows: one per method and head, accuracies as fractions."""
    rows = []
    for method, m in summary["methods"].items():
        for head, stats in m["accuracy"].items():
            final, best = stats["final"], stats["best_epoch"]
            rows.append({
                "method": method, "head": head, "headline": head == m["headline_head"], "n": final["n"],
                "final_mean": final["mean"], "final_std": final["std"], "best_epoch_mean": best["mean"],
                "best_epoch_std": best["std"], "trainable_parameters": m["trainable_parameters"],
                "train_images_per_second": m["train_images_per_second"],
            })
    return rows


def plot(summary: dict, path: str) -> None:
    """accuracy.png: per epoch, the mean over seeds and a min-max band; the headline heads, then every branch_mean."""
    figure = Figure(figsize=(12, 4.6), layout="constrained")
    panels = [("Headline head of each method", None), ("Mean accuracy of one network (branch_mean)", heads.BRANCH_MEAN)]
    for axes, (title, fixed_head) in zip(figure.subplots(1, 2, sharey=True), panels):
        for method, m in summary["methods"].items():
            head = fixed_head or m["headline_head"]
            c = m["curves"][head]
            mean, low, high = (100 * np.array(c[key]) for key in ("mean", "min", "max"))
            line, = axes.plot(c["epochs"], mean, marker="o" if len(c["epochs"]) <= 30 else None, markersize=3,
                              label=f"{method} ({head}), n={c['n']}")
            axes.fill_between(c["epochs"], low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        axes.set(title=title, xlabel="epoch", xlim=(0.5, summary["epochs"] + 0.5))
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
    figure.axes[0].set_ylabel("evaluation accuracy (%)")
    figure.suptitle(f"{summary['dataset']}, {summary['eval_examples']} evaluation images: line = mean over seeds, "
                    f"band = {BAND}")
    curves.write_png(figure, path, dpi=110)


def write(root: str, runs: dict[str, dict[int, str]], missing: list[str] = ()) -> dict:
    """Writes ROOT/report.md, report.json, report.csv and accuracy.png from the finished runs; returns the summary."""
    summary = summarize(runs, missing)
    plot(summary, os.path.join(root, PLOT))
    atomic.write_json(os.path.join(root, JSON), summary)
    with atomic.atomic_path(os.path.join(root, CSV)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(summary))
    atomic.write_text(os.path.join(root, MARKDOWN), markdown(summary))
    return summary


def table(summary: dict) -> str:
    """The headline heads for the terminal."""
    rows = [f"{'method':<9} {'head':<12} {'final %':>14} {'best epoch %':>14} {'n':>2}"]
    for method, m in summary["methods"].items():
        stats = m["accuracy"][m["headline_head"]]
        rows.append(f"{method:<9} {m['headline_head']:<12} {_percent(stats['final']):>14} "
                    f"{_percent(stats['best_epoch']):>14} {stats['final']['n']:>2}")
    return "\n".join(rows)
