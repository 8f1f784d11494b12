"""benchmarks/reproduce.py end to end on a tiny model: the data both sides read, ffl_tf's runs as a comparison, the
PyTorch reference's checks and runs when PyTorch is installed (a benchmark-only dependency: the test environment
may lack it), and the table of both sides."""

import importlib.util
import json
import subprocess
import sys

import numpy as np

from tests.cli import REPO_ROOT, cli_env
from tests.data.images import write_squares_folder

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_the_reproduction_trains_both_sides_on_the_same_images_and_tables_them(tmp_path):
    folder = write_squares_folder(tmp_path / "squares", n=300)
    frameworks = "ffl_tf,pytorch" if HAS_TORCH else "ffl_tf"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.reproduce", "--dataset=image_folder", f"--data_dir={folder}",
         "--backbones=resnet8,resnet8", "--epochs=1", "--batch_size=32", "--eval_batch_size=64",
         "--lr_decay_epochs=5", "--rampup_epochs=1", "--methods=vanilla,ffl", "--seeds=0",
         f"--frameworks={frameworks}", "--torch_threads=1", f"--model_dir={tmp_path / 'root'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=cli_env())
    assert result.returncode == 0, result.stderr[-3000:]
    root = tmp_path / "root"
    data = np.load(root / "data.npz")
    assert len(data["train_images"]) == 240 and len(data["eval_images"]) == 60  # the held-out fifth
    table = json.loads((root / "reproduce.json").read_text())
    assert set(table) == {"vanilla", "ffl"}
    ffl = json.loads((root / "ffl_tf" / "ffl" / "seed0" / "results.json").read_text())
    assert table["ffl"]["fused"]["ffl_tf"]["values"] == [100 * ffl["accuracy"]["fused"]]
    assert "| ffl | fused (headline) |" in (root / "reproduce.md").read_text()
    if HAS_TORCH:
        checks = json.loads((root / "checks.json").read_text())
        assert checks["ffl"]["ok"] and checks["vanilla"]["ok"]
        settings = json.loads((root / "pytorch" / "ffl" / "seed0" / "settings.json").read_text())
        assert settings["temperature"] == 3.0 and settings["shared_stages"] == 2 and settings["nesterov"] is True
        assert table["ffl"]["fused"]["difference"] is not None
