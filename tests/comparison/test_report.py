"""The comparison report (ffl_tf/report.py) from run directories with known numbers, recomputed with NumPy."""

import csv
import json
import pathlib

import numpy as np
import pytest
from matplotlib.image import imread

from ffl_tf.comparison import report
from ffl_tf.runs import run_dir

HEADS = {"vanilla": ["branch_0", "branch_1", "branch_mean", "ensemble"],
         "ffl": ["branch_0", "branch_1", "branch_mean", "ensemble", "fused"]}


def fake_run(path: pathlib.Path, method: str, seed: int, epochs: int = 4, eval_every: int = 1) -> dict:
    """A finished run's config.json, results.json and history.csv with random accuracies; returns them."""
    rng = np.random.default_rng([seed, len(method)])
    curves = {head: rng.uniform(0.2, 0.9, epochs) for head in HEADS[method]}
    results = {
        "method": method, "epochs": epochs, "eval_examples": 1017,
        "accuracy": {head: float(rng.uniform(0.2, 0.9)) for head in HEADS[method]},
        "trainable_parameters": {"total": 1000 + len(method), "branches": 1000},
        "throughput": {"train_images_per_second": float(rng.uniform(100, 300))},
    }
    path.mkdir(parents=True)
    (path / run_dir.RESULTS).write_text(json.dumps(results))
    config = {"method": method, "model_version": 2, "dataset": {"dataset": "image_folder"},
              "model": {"backbones": ["resnet8", "resnet8"], "num_classes": 10, "image_shape": [8, 8, 3]}}
    (path / run_dir.CONFIG).write_text(json.dumps(config))
    columns = ["epoch", "loss", *(f"val_acc_{head}" for head in curves)]
    rows = [",".join(columns)]
    for epoch in range(epochs):
        evaluated = (epoch + 1) % eval_every == 0
        values = [repr(float(c[epoch])) if evaluated else "" for c in curves.values()]
        rows.append(",".join([str(epoch), "1.5", *values]))
    (path / run_dir.HISTORY).write_text("\n".join(rows) + "\n")
    return {"results": results, "curves": curves}


@pytest.fixture
def comparison(tmp_path) -> tuple[pathlib.Path, dict, dict]:
    runs, written = {}, {}
    for method, seeds in [("vanilla", [0, 1, 2]), ("ffl", [0, 1])]:
        runs[method] = {seed: str(tmp_path / method / f"seed{seed}") for seed in seeds}
        written[method] = {seed: fake_run(tmp_path / method / f"seed{seed}", method, seed) for seed in seeds}
    report.write(str(tmp_path), runs, missing=["ffl/seed2"])
    return tmp_path, written, json.loads((tmp_path / report.JSON).read_text())


def expected_statistics(written: dict, method: str, head: str) -> tuple[np.ndarray, np.ndarray]:
    """(final accuracies, best-epoch accuracies) over the method's seeds, from what was written."""
    finals = np.array([r["results"]["accuracy"][head] for r in written[method].values()])
    bests = np.array([max(r["curves"][head].max(), r["results"]["accuracy"][head]) for r in written[method].values()])
    return finals, bests


def test_json_holds_means_and_sample_standard_deviations(comparison):
    _, written, summary = comparison
    assert "ddof=1" in summary["definitions"]["std"] and summary["missing_runs"] == ["ffl/seed2"]
    for method, heads in HEADS.items():
        stats = summary["methods"][method]
        assert list(stats["accuracy"]) == heads
        for head in heads:
            finals, bests = expected_statistics(written, method, head)
            for key, values in [("final", finals), ("best_epoch", bests)]:
                got = stats["accuracy"][head][key]
                assert got["n"] == len(values)
                np.testing.assert_allclose([got["mean"], got["std"]], [values.mean(), values.std(ddof=1)], rtol=1e-12)
        speeds = [r["results"]["throughput"]["train_images_per_second"] for r in written[method].values()]
        assert stats["train_images_per_second"] == pytest.approx(np.mean(speeds))
        assert stats["trainable_parameters"] == 1000 + len(method)
    assert summary["methods"]["ffl"]["headline_head"] == "fused"
    assert summary["methods"]["vanilla"]["headline_head"] == "branch_mean"


def test_curves_are_the_mean_min_and_max_over_seeds(comparison):
    _, written, summary = comparison
    curve = summary["methods"]["ffl"]["curves"]["fused"]
    values = np.array([r["curves"]["fused"] for r in written["ffl"].values()])
    assert curve["epochs"] == [1, 2, 3, 4] and curve["n"] == 2
    np.testing.assert_allclose(curve["mean"], values.mean(axis=0))
    np.testing.assert_allclose(curve["min"], values.min(axis=0))
    np.testing.assert_allclose(curve["max"], values.max(axis=0))
    assert set(summary["methods"]["vanilla"]["curves"]) == {"branch_mean"}


def test_csv_and_markdown_show_the_same_numbers(comparison):
    root, written, summary = comparison
    with open(root / report.CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 + 5
    row = next(r for r in rows if r["method"] == "vanilla" and r["head"] == "branch_mean")
    finals, bests = expected_statistics(written, "vanilla", "branch_mean")
    assert row["headline"] == "True" and row["n"] == "3"
    np.testing.assert_allclose([float(row["final_mean"]), float(row["final_std"]), float(row["best_epoch_mean"])],
                               [finals.mean(), finals.std(ddof=1), bests.mean()], rtol=1e-12)
    text = (root / report.MARKDOWN).read_text()
    assert (f"| vanilla | resnet8,resnet8 | branch_mean | {100 * finals.mean():.2f} ± {100 * finals.std(ddof=1):.2f} "
            f"| {100 * bests.mean():.2f} ± {100 * bests.std(ddof=1):.2f} | 3 | 1,007 |") in text
    assert "ddof=1" in text and "Best epoch" in text and "optimistic" in text
    assert "Not finished, left out: ffl/seed2." in text and f"]({report.PLOT})" in text


def test_plot_is_a_png_with_two_panels_drawn(comparison):
    root, _, _ = comparison
    image = imread(root / report.PLOT)[..., :3]
    assert image.shape[0] > 400 and image.shape[1] > 1000
    # Both methods' lines are drawn, in matplotlib's first two colours (blue, orange), in both panels.
    for colour in ((31, 119, 180), (255, 127, 14)):
        line = np.all(np.abs(image - np.array(colour) / 255) < 0.02, axis=-1)
        left, right = line[:, : image.shape[1] // 2], line[:, image.shape[1] // 2:]
        assert left.sum() > 200 and right.sum() > 200, colour


def test_one_seed_has_no_deviation_and_best_epoch_counts_the_final_evaluation(tmp_path):
    """With --eval_every=2 and 3 epochs, history.csv holds epoch 2 only; the final accuracy is the last epoch's."""
    written = fake_run(tmp_path / "run", "vanilla", 0, epochs=3, eval_every=2)
    summary = report.write(str(tmp_path), {"vanilla": {0: str(tmp_path / "run")}})
    stats = summary["methods"]["vanilla"]["accuracy"]["branch_mean"]
    final = written["results"]["accuracy"]["branch_mean"]
    assert stats["final"] == {"mean": final, "std": None, "n": 1, "values": [final]}
    assert stats["best_epoch"]["mean"] == max(final, written["curves"]["branch_mean"][1])
    assert summary["methods"]["vanilla"]["curves"]["branch_mean"]["epochs"] == [2]
    assert f"| {100 * final:.2f} |" in (tmp_path / report.MARKDOWN).read_text()


def test_nothing_finished_is_refused(tmp_path):
    with pytest.raises(ValueError, match="No finished run to report on; not finished: ffl/seed0"):
        report.write(str(tmp_path), {"ffl": {}}, missing=["ffl/seed0"])
