"""A run's configuration (ffl_tf/runs/config.py): built from the flags once, written as config.json and read back
the same by every command; a method's default resolved in one place; settings' roles for resume and reuse."""

import json

import pytest
from absl.testing import flagsaver

from ffl_tf import compare, methods
from ffl_tf.data import DatasetInfo
from ffl_tf.runs import config, run_dir, settings, train_flags
from ffl_tf.runs.config import RunConfig
from ffl_tf.runs.settings import Role
from ffl_tf.utils import atomic

INFO = DatasetInfo("digits", 10, (8, 8, 1), (8.0,), (4.0,), 1438, 359, tuple(map(str, range(10))))


@pytest.mark.parametrize("argv", [
    ["--method=ffl", "--backbones=resnet8,resnet8", "--temperature=4", "--fusion_channels=16", "--epochs=7"],
    ["--method=dml", "--backbones=resnet8,wrn16_2", "--rampup_epochs=2", "--strategy=mirrored"],
    ["--method=one", "--backbones=resnet8,resnet8,resnet8", "--nesterov", "--split_seed=3"],
    ["--method=vanilla", "--backbones=resnet8", "--weight_decay=5e-4"],
    ["--method=okddip", "--backbones=resnet8,resnet8,resnet8", "--eval_batch_size=100"],
])
def test_the_config_built_from_flags_is_read_back_the_same_by_every_command(tmp_path, argv):
    with flagsaver.flagsaver():
        train_flags.FLAGS(["train", "--dataset=digits", *argv])
        built = RunConfig.from_settings(settings.resolve(train_flags.flag_values()), INFO)
        given = {arg[2:].split("=", 1)[0].removeprefix("no"): train_flags.FLAGS[arg[2:].split("=", 1)[0]].value
                 for arg in argv}
    atomic.write_json(str(tmp_path / run_dir.CONFIG), built.to_json())
    # train's resume check, evaluate, predict, gradcam and the exports read it with run_dir; compare's reuse and
    # the comparison report with config.read.
    assert run_dir.read_config(str(tmp_path)) == built == config.read(str(tmp_path / run_dir.CONFIG))
    assert run_dir.read_config(str(tmp_path)).settings() == built.settings()
    for name, value in given.items():
        assert built.settings()[name] == value, name
    assert built.model["num_classes"] == 10 and built.class_names == INFO.class_names


def test_a_methods_default_is_resolved_in_one_place_for_train_compare_and_export(monkeypatch, tmp_path):
    """Changed in the method's declaration only, a default reaches a training run's config, a comparison's runs
    and an export's rebuilt model (from a config.json that does not record it)."""
    dml = methods.get("dml")
    monkeypatch.setitem(dml.defaults, "temperature", 2.5)
    monkeypatch.setitem(methods.get("one").defaults, "shared_stages", 1)
    with flagsaver.flagsaver():
        train_flags.FLAGS(["train", "--dataset=digits", "--method=dml", "--backbones=resnet8,resnet8"])
        assert RunConfig.from_settings(settings.resolve(train_flags.flag_values()), INFO).loss == {"temperature": 2.5}
    with flagsaver.flagsaver():
        compare.parse_flags(["compare", "--dataset=digits", "--backbones=resnet8,resnet8", "--methods=dml",
                             "--seeds=0", f"--model_dir={tmp_path / 'cmp'}"])
        (run,) = compare.plan()
        assert run.settings["temperature"] == 2.5 and "--temperature=2.5" in run.command
    old = {"model_version": 2, "method": "one", "model": {"backbones": ["resnet8"] * 2, "num_classes": 10,
                                                          "image_shape": [8, 8, 1]}}
    model = run_dir.build_model(RunConfig.from_json(old))  # what export rebuilds
    assert [layer.name for layer in model.get_layer("trunk").layers if layer.name.startswith("stage")] == \
        [layer.name for layer in model.get_layer("trunk").layers if layer.name.startswith("stage1")]


def test_a_config_written_before_sections_of_their_own_reads_as_it_ran():
    """Execution settings were in `training`, and the hold-out followed the training seed."""
    old = {"model_version": 2, "method": "ffl", "class_names": ["a", "b"],
           "model": {"backbones": ["resnet8", "resnet8"], "num_classes": 2, "image_shape": [8, 8, 3],
                     "shared_stages": 1, "mean": [1.0], "std": [2.0], "fusion_channels": None,
                     "sync_batchnorm": False, "pretrained": "none"},
           "dataset": {"dataset": "image_folder", "data_dir": "/data", "image_size": None,
                       "validation_fraction": 0.2, "skip_bad_images": False},
           "loss": {"temperature": 3.0, "distill_to_fused": True, "distill_to_branches": True},
           "training": {"seed": 4, "epochs": 12, "batch_size": 64, "eval_batch_size": 256, "strategy": "default",
                        "fusion_weight_decay": 1e-5, "keep_checkpoints": 3, "rampup_epochs": 3.0}}
    read = RunConfig.from_json(json.loads(json.dumps(old)))
    assert read.dataset["split_seed"] == 4 and read.training["seed"] == 4
    assert read.execution["eval_batch_size"] == 256 and "eval_batch_size" not in read.training
    assert read.model["backbones"] == ["resnet8", "resnet8"] and read.class_names == ("a", "b")


def test_roles_say_what_a_resume_may_change_and_what_a_comparison_reuses():
    old = {"method": "ffl", "batch_size": 32, "epochs": 3, "eval_batch_size": 64}
    new = {"method": "ffl", "batch_size": 16, "epochs": 5, "eval_batch_size": 128}
    assert config.changes(old, new, [Role.FIXED]) == [("batch_size", 32, 16)]
    assert config.changes(old, new, [Role.RESULT]) == [("epochs", 3, 5)]
    assert config.changes(old, new, [Role.EXECUTION]) == [("eval_batch_size", 64, 128)]
    assert {name for name, s in settings.SETTINGS.items() if s.role is Role.FIXED} >= {
        "batch_size", "steps_per_epoch", "mixed_precision", "seed", "backbones", "dataset", "split_seed"}


def test_a_relative_data_dir_resolves_to_the_same_run_from_any_working_directory(tmp_path, monkeypatch):
    values = {**settings.defaults(), "method": "ffl", "dataset": "image_folder", "data_dir": "images"}
    monkeypatch.chdir(tmp_path)
    assert settings.resolve(values)["data_dir"] == str(tmp_path / "images")
    absolute = {**values, "data_dir": str(tmp_path / "images")}
    assert config.changes(settings.resolve(values), settings.resolve(absolute), [Role.FIXED]) == []
