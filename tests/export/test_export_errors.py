"""Bad inputs fail before any work with one line naming the input and the fix; failed exports leave nothing."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from ffl_tf.export import checks, saved_model, serving, tflite
from ffl_tf.runs import run_dir
from ffl_tf.utils import atomic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


# Quick CLI runs, each mostly TensorFlow's import time: started together by `cli_runs`.
CLI_RUNS = {
    "saved_model bad run": ["export.saved_model", "--model_dir=/no/such/run", "--export_dir=/tmp/unused"],
    "tflite qat on ensemble": ["export.tflite", "--model_dir={run}", "--head=ensemble", "--quantize=qat",
                               "--output=/tmp/unused.tflite"],
    "tflite int8 of a model file without data": ["export.tflite", "--model_dir=/no/such/model.keras",
                                                 "--quantize=int8", "--output=/tmp/unused.tflite"],
    "saved_model help": ["export.saved_model", "--help"],
    "tflite help": ["export.tflite", "--help"],
}


@pytest.fixture(scope="module")
def cli_runs(trained_run) -> dict[str, subprocess.CompletedProcess]:
    """Every CLI_RUNS command, run concurrently: {name: its completed process}."""
    processes = {
        name: subprocess.Popen([sys.executable, "-m", *(arg.format(run=trained_run.path) for arg in args)],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, args in CLI_RUNS.items()
    }
    return {
        name: subprocess.CompletedProcess(process.args, process.wait(timeout=300), *process.communicate())
        for name, process in processes.items()
    }


def test_missing_run_directory(tmp_path):
    with pytest.raises(run_dir.RunError, match="is not a training run: config.json is missing"):
        saved_model.export(str(tmp_path / "no-such-run"), "fused", str(tmp_path / "export"))
    assert os.listdir(tmp_path) == []


def test_unknown_head_lists_the_valid_ones(trained_run, tmp_path):
    message = "--head=branch_2 is not a head of this run; choose one of: branch_0, branch_1, ensemble, fused."
    with pytest.raises(checks.ExportError, match=message):
        saved_model.export(str(trained_run.path), "branch_2", str(tmp_path / "export"))
    with pytest.raises(checks.ExportError, match=message):
        tflite.export(str(trained_run.path), "branch_2", "int8", str(tmp_path / "model.tflite"))
    assert os.listdir(tmp_path) == []


def test_checkpoint_that_does_not_fit_the_config(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    config = dict(trained_run.config, model={**trained_run.config["model"], "backbones": ["resnet8", "resnet8"]})
    atomic.write_json(str(run / run_dir.CONFIG), config)
    with pytest.raises(run_dir.RunError, match="does not fit the model described by config.json"):
        saved_model.export(str(run), "fused", str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()


def test_export_dir_under_a_regular_file(trained_run, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(checks.ExportError, match=r"--export_dir=.*/file/ffl cannot be written: .*/file is not a dir"):
        saved_model.export(str(trained_run.path), "fused", str(tmp_path / "file" / "ffl"))
    with pytest.raises(checks.ExportError, match=r"--output=.*/file/m.tflite cannot be written: .*/file is not a dir"):
        tflite.export(str(trained_run.path), "fused", "none", str(tmp_path / "file" / "m.tflite"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_export_dir(trained_run, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(checks.ExportError, match="ro is not writable"):
        saved_model.export(str(trained_run.path), "fused", str(tmp_path / "ro" / "ffl"))


def test_output_that_is_a_directory(trained_run, tmp_path):
    with pytest.raises(checks.ExportError, match="is a directory; pass a file name"):
        tflite.export(str(trained_run.path), "fused", "none", str(tmp_path))


def test_failed_export_leaves_no_partial_version(trained_run, tmp_path, monkeypatch):
    export_dir = tmp_path / "ffl"
    (export_dir / "1").mkdir(parents=True)
    write = serving.write_saved_model

    def write_then_fail(model, fn, path):
        write(model, fn, path)
        assert os.listdir(path)  # a complete version was on disk, under its temporary name
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(serving, "write_saved_model", write_then_fail)
    with pytest.raises(checks.ExportError, match="could not be written: .*No space left on device"):
        saved_model.export(str(trained_run.path), "branch_0", str(export_dir))
    assert os.listdir(export_dir) == ["1"]


@pytest.mark.parametrize("name, message", [
    ("saved_model bad run", "export.saved_model: error: /no/such/run is not a training run: config.json is missing."),
    ("tflite qat on ensemble", "export.tflite: error: --quantize=qat fine-tunes a single branch, not --head=ensemble;"),
    ("tflite int8 of a model file without data", "export.tflite: error: --quantize=int8 calibrates on training images, "
                                                 "which the model file /no/such/model.keras does not name: pass "
                                                 "--dataset (and --data_dir) of the data it was trained on."),
])
def test_cli_errors_are_one_line_without_traceback(cli_runs, name, message):
    result = cli_runs[name]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message)


@pytest.mark.parametrize("name, defaults", [
    ("saved_model help", ["--head: Head to export", "(default: 'fused')", "--export_dir", "--model_name"]),
    ("tflite help", ["(default: 'none')", "<none|float16|dynamic|int8|qat>", "--eval_examples", "--dataset",
                     "(default: '200')", "--qat_learning_rate", "(default: '0.001')"]),
])
def test_help_documents_every_flag(cli_runs, name, defaults):
    for text in ["--model_dir", "--head", *defaults]:
        assert text in cli_runs[name].stdout, text
