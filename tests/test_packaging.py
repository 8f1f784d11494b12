"""The package as a user installs it: a wheel built offline from (a copy of) the checkout, installed without
dependencies into a folder outside it. It holds ffl_tf only (no top-level `export`), every module and the flagfiles;
from another directory its training command trains the bundled digits by `--config=quickstart` and writes
RUN/model.keras, and its TFLite command exports that run."""

import configparser
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ffl_tf import launcher, saving

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Top-level entries of the checkout that are not sources (environments, outputs, caches).
NOT_SOURCES = {".venv", ".git", "runs", "exports", "build", "dist", ".pytest_cache", ".ruff_cache"}


def _not_sources(directory: str, names: list[str]) -> list[str]:
    top = NOT_SOURCES if pathlib.Path(directory) == REPO_ROOT else set()
    return [name for name in names if name in top or name == "__pycache__" or name.endswith(".egg-info")]


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--no-index", "--quiet"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    """The wheel `pip wheel --no-deps --no-build-isolation .` builds (from a copy: building writes build/ and
    ffl_tf.egg-info/ beside the sources)."""
    root = tmp_path_factory.mktemp("packaging")
    shutil.copytree(REPO_ROOT, root / "src", ignore=_not_sources)
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(root / "dist"), str(root / "src"))
    (built,) = (root / "dist").glob("ffl_tf-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> pathlib.Path:
    """The wheel installed without dependencies (this environment has them) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--target", str(target), str(wheel))
    return target


def test_the_wheel_holds_ffl_tf_only_with_every_module_the_flagfiles_and_the_commands(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"ffl_tf"}  # never the checkout's export/ shims: a top-level `export` would shadow others'
    modules = {path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "ffl_tf").rglob("*.py")}
    assert modules - names == set()
    flagfiles = {f"ffl_tf/configs/{path.name}" for path in (REPO_ROOT / "configs").glob("*.flags")}
    assert flagfiles and flagfiles <= names
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(zipfile.ZipFile(wheel).read(entry_points).decode())
    commands = dict(parser["console_scripts"])
    assert commands == {name: f"ffl_tf.launcher:{name.removeprefix('ffl-').replace('-', '_')}"
                        for name in launcher.COMMANDS}
    assert all(callable(getattr(launcher, target.partition(":")[2])) for target in commands.values())


def _pins(path: pathlib.Path) -> dict[str, str]:
    """{name: pinned version} of a requirements file (its `-r` lines left out)."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    pins = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in pins}


def test_the_declared_dependencies_are_ranges_holding_the_pinned_versions():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for declared, pinned in [(project["dependencies"], _pins(REPO_ROOT / "requirements.txt")),
                             (project["optional-dependencies"]["dev"], _pins(REPO_ROOT / "requirements-dev.txt"))]:
        ranges = {canonicalize_name(r.name): r.specifier for r in map(Requirement, declared)}
        assert set(ranges) == set(pinned)
        assert {name: version for name, version in pinned.items() if version not in ranges[name]} == {}


def run(args: list, cwd: pathlib.Path, site: pathlib.Path) -> subprocess.CompletedProcess:
    """`args` with the installed package (and not the checkout) importable, from `cwd`."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_installed_commands_train_the_digits_by_config_name_and_export_the_run(site, tmp_path):
    assert sorted(os.listdir(site)) == ["bin", "ffl_tf", *[n for n in os.listdir(site) if n.endswith(".dist-info")]]
    where = run([sys.executable, "-c", "import ffl_tf; print(ffl_tf.__file__)"], tmp_path, site)
    assert where.stdout.strip() == str(site / "ffl_tf" / "__init__.py")
    model_dir = tmp_path / "run"
    trained = run([sys.executable, "-c", "from ffl_tf.launcher import train; train()", "--config=quickstart",
                   "--epochs=1", "--steps_per_epoch=2", f"--model_dir={model_dir}", f"--data_dir={tmp_path / 'tfds'}"],
                  tmp_path, site)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "Run directory:" in trained.stderr  # the command's INFO lines show, as with `python -m ffl_tf.train`
    assert json.loads((model_dir / "config.json").read_text())["model"]["backbones"] == ["resnet14", "resnet14"]
    results = json.loads((model_dir / "results.json").read_text())
    model = saving.load_model(str(model_dir / "model.keras"), compile=False)
    assert model.class_names == tuple("0123456789") and list(model.output) == list(results["calibration"]["ece"])
    output = tmp_path / "branch_0.tflite"
    exported = run([sys.executable, site / "bin" / "ffl-export-tflite", f"--model_dir={model_dir}", "--head=branch_0",
                    f"--output={output}", "--eval_examples=20"], tmp_path, site)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert output.stat().st_size > 0
    assert re.search(r"Top-1 accuracy on 20 evaluation images: Keras [\d.]+, TFLite [\d.]+", exported.stdout)
