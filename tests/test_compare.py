"""The comparison CLI (ffl_tf/compare.py): its checks and commands in-process, then a comparison end to end with a
failing run, --keep_going, a kill, the resume, the report against the runs' own files, --report_only and
--dry_run."""

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from absl.testing import flagsaver

from ffl_tf import compare, methods
from ffl_tf.comparison import report
from ffl_tf.runs import checkpoint, lock, run_dir
from tests.cli import REPO_ROOT, cli_env

TIMEOUT = 300


@pytest.fixture
def parse():
    """Parses a compare command line in-process, from the flags as they were before the test (restored after it)."""
    saved = [flagsaver.save_flag_values()]

    def parse_(*args: str) -> None:
        flagsaver.restore_flag_values(saved[0])  # the flags take the saved dicts themselves: save them afresh
        saved[0] = flagsaver.save_flag_values()
        compare.parse_flags(["compare", *args])

    yield parse_
    flagsaver.restore_flag_values(saved[0])


@pytest.mark.parametrize("args, message", [
    (["--methods=vanilla,foo"], f"--methods: Unknown method 'foo'; choose from: {', '.join(methods.METHODS)}."),
    (["--methods=ffl,ffl"], "--methods=ffl,ffl: list each method once"),
    (["--seeds="], "--seeds=: use distinct non-negative integers"),
    (["--seeds=0,x"], "--seeds=0,x: use distinct non-negative integers"),
    (["--seed=1"], "--seed is set by the comparison for each run; use --seeds"),
    (["--method=dml"], "--method is set by the comparison for each run; use --methods"),
    (["--temperature=2"], "--temperature: a comparison trains each method with its own defaults"),
    (["--methods=ffl,one", "--backbones=resnet8,wrn16_2", "--shared_stages=0"],
     "--methods=one: flags method=one, backbones=['resnet8', 'wrn16_2'], shared_stages=0: --method=one "
     "--backbones/--shared_stages: ONE's gate reads the shared trunk: use shared_stages >= 1, got 0."),
    # A setting of a method's own that no compared method lets a comparison set (--method_settings sets it);
    # one that only some methods have (--fusion_channels: ffl's) applies to those (test below).
    (["--methods=ffl,dml", "--nesterov"], "--nesterov: a comparison trains each method with its own"),
    (["--methods=ffl,dml", "--method_settings=foo:branches=3"], "--method_settings names foo: not a method"),
    (["--methods=ffl,dml", "--method_settings=dml:fusion_channels=8"], "dml has no setting 'fusion_channels'"),
    (["--methods=ffl,dml", "--method_settings=dml"], "--method_settings: 'dml' is not method:name=value"),
])
def test_bad_comparisons_are_refused_before_any_work(parse, tmp_path, args, message):
    parse(f"--model_dir={tmp_path / 'cmp'}", *args)
    with pytest.raises(ValueError) as error:
        compare.plan()
    assert message in str(error.value)
    assert not (tmp_path / "cmp").exists()


def test_root_is_required_and_is_not_a_run(parse, tmp_path):
    parse()
    with pytest.raises(ValueError, match="--model_dir=ROOT is required"):
        compare.plan()
    (tmp_path / run_dir.CONFIG).write_text("{}")
    parse(f"--model_dir={tmp_path}")
    with pytest.raises(ValueError, match="is a training run; give the comparison a directory of its own"):
        compare.plan()


def test_runs_go_seed_by_seed_and_each_method_gets_its_own_settings(parse, tmp_path):
    # Parsing checks the training flags for vanilla (the default method, ffl, would refuse one network), plan()
    # for each method.
    parse("--methods=vanilla,dml", "--backbones=resnet8", f"--model_dir={tmp_path}")
    with pytest.raises(ValueError, match="--methods=dml: .*at least 2 branches"):
        compare.plan()
    parse("--methods=vanilla,ffl", "--seeds=3,1", "--backbones=resnet8,resnet8", "--shared_stages=1",
          "--rampup_epochs=2", "--epochs=7", f"--model_dir={tmp_path}")
    runs = compare.plan()
    assert [(r.method, r.seed) for r in runs] == [("vanilla", 3), ("ffl", 3), ("vanilla", 1), ("ffl", 1)]
    vanilla, ffl = runs[:2]
    assert vanilla.path == str(tmp_path / "vanilla" / "seed3")
    assert vanilla.command[:3] == [sys.executable, "-m", "ffl_tf.train"]
    for run, shared, rampup in [(vanilla, 0, None), (ffl, 1, 2.0)]:
        args = run.command[3:]
        # Networks trained alone do not distill, so they have no ramp-up (its flag does not apply to them).
        assert f"--shared_stages={shared}" in args
        assert (f"--rampup_epochs={rampup}" in args) if rampup else not any("rampup" in a for a in args)
        assert {f"--method={run.method}", "--seed=3", f"--model_dir={run.path}", "--epochs=7",
                "--backbones=resnet8,resnet8"} <= set(args)
        assert len(args) == len({a.split("=")[0] for a in args})  # each flag once


def test_a_setting_only_some_methods_have_applies_to_them_and_method_settings_to_one(parse, tmp_path):
    parse("--methods=ffl,dml,okddip", "--backbones=resnet8,resnet8", "--fusion_channels=8", "--rampup_epochs=2",
          "--weight_decay=1e-4",
          "--method_settings=dml:temperature=3,rampup_epochs=1;ffl:branches=3", f"--model_dir={tmp_path}", "--seeds=0")
    ffl, dml, okddip = compare.plan()
    assert ffl.settings["fusion_channels"] == 8 and "fusion_channels" not in dml.settings
    assert ffl.settings["backbones"] == ["resnet8"] * 3 and okddip.settings["backbones"] == ["resnet8"] * 4
    assert (dml.settings["temperature"], dml.settings["rampup_epochs"]) == (3.0, 1.0)
    assert ffl.settings["rampup_epochs"] == okddip.settings["rampup_epochs"] == 2.0
    assert okddip.settings["weight_decay"] == dml.settings["weight_decay"] == 1e-4  # the comparison's, not 5e-4


def test_a_preset_setting_for_other_methods_is_left_out_when_comparing_methods_without_it(parse, tmp_path, capsys):
    # The preset flagfile's --rampup_epochs is for the methods that take it; DML keeps its own (0), and networks
    # trained alone have none, in either form the flag is given.
    preset = tmp_path / "preset.flags"
    preset.write_text("--backbones=resnet8,resnet8\n--rampup_epochs=8\n")
    parse(f"--flagfile={preset}", "--methods=vanilla,dml", f"--model_dir={tmp_path / 'a'}", "--seeds=0")
    vanilla, dml = compare.plan()
    assert dml.settings["rampup_epochs"] == 0.0 and "rampup_epochs" not in vanilla.settings
    assert "--rampup_epochs set(s) none of --methods=vanilla,dml" in capsys.readouterr().err
    parse("--methods=vanilla", "--backbones=resnet8,resnet8", "--rampup_epochs", "8",
          "--method_settings=one:branches=3", f"--model_dir={tmp_path / 'b'}")
    assert {r.method for r in compare.plan()} == {"vanilla"}
    assert "--method_settings for one, which --methods=vanilla does not compare: left out" in capsys.readouterr().err
    # OKDDip alone: it trains its own 4 branches, whatever the preset's --backbones.
    parse(f"--flagfile={preset}", "--methods=okddip", f"--model_dir={tmp_path / 'c'}", "--seeds=0")
    (okddip,) = compare.plan()
    assert okddip.settings["backbones"] == ["resnet8"] * 4 and okddip.settings["rampup_epochs"] == 8.0


def test_a_run_is_finished_when_results_follow_its_last_checkpoint(tmp_path):
    ckpt_dir = tmp_path / run_dir.CHECKPOINTS
    ckpt_dir.mkdir()
    assert not compare.is_finished(str(tmp_path))
    (ckpt_dir / "epoch-0002.weights.h5").write_text("")
    (tmp_path / run_dir.RESULTS).write_text(json.dumps({"epochs": 3}))
    assert not compare.is_finished(str(tmp_path))  # results of a shorter schedule, then resumed
    (ckpt_dir / "epoch-0002-step-000004.weights.h5").write_text("")
    assert not compare.is_finished(str(tmp_path))
    (ckpt_dir / "epoch-0003.weights.h5").write_text("")
    assert compare.is_finished(str(tmp_path))
    (tmp_path / run_dir.RESULTS).unlink()
    assert not compare.is_finished(str(tmp_path))  # killed between its last checkpoint and results.json


def fake_runs(parse, tmp_path, monkeypatch, statuses: list[int]) -> list:
    """Two runs whose training processes are replaced by one that logs a line and returns the next status."""
    parse(f"--model_dir={tmp_path}", "--methods=vanilla,dml", "--seeds=0")
    runs = compare.plan()

    def train(run, signals):
        os.makedirs(run.path, exist_ok=True)
        (pathlib.Path(run.path) / compare.LOG).write_text("Traceback (most recent call last):\nffl_tf.train: error: "
                                                          "something broke\n")
        return statuses.pop(0)

    monkeypatch.setattr(compare, "train", train)
    return runs


def test_a_failed_run_stops_the_comparison_in_one_line(parse, tmp_path, monkeypatch, capsys):
    runs = fake_runs(parse, tmp_path, monkeypatch, [1, 0])
    with pytest.raises(SystemExit) as stopped:
        compare.run_all(runs)
    log = tmp_path / "vanilla" / "seed0" / compare.LOG
    assert stopped.value.code == f"ffl_tf.compare: error: vanilla seed 0 failed: ffl_tf.train: error: something " \
                                 f"broke (log: {log})"
    assert capsys.readouterr().out.splitlines() == [f"[1/2] vanilla seed 0: started, log {log}",
                                                    "[1/2] vanilla seed 0: failed (exit status 1) after 0m00s"]
    assert not (tmp_path / "dml").exists()


def test_a_preempted_run_stops_the_comparison_with_status_75(parse, tmp_path, monkeypatch, capsys):
    runs = fake_runs(parse, tmp_path, monkeypatch, [75, 0])
    with pytest.raises(SystemExit) as stopped:
        compare.run_all(runs)
    assert stopped.value.code == 75 and not (tmp_path / "dml").exists()
    assert "rerun the same command to continue" in capsys.readouterr().err


def other_hosts_lock(path: pathlib.Path, pid: int) -> dict:
    """A live-looking lock of a training run on another machine: fresh lock file and heartbeat."""
    holder = {"host": "other-host", "pid": pid, "token": f"token{pid}", "started": "2025-01-01T00:00:00+00:00"}
    path.mkdir(parents=True)
    (path / lock.LOCK).write_text(json.dumps(holder))
    (path / lock.HEARTBEAT).write_text(json.dumps({"token": holder["token"]}))
    return holder


def finish(run) -> None:
    """What a finished run leaves: results.json after the checkpoint of its last epoch."""
    os.makedirs(os.path.join(run.path, run_dir.CHECKPOINTS), exist_ok=True)
    pathlib.Path(run.path, run_dir.CHECKPOINTS, "epoch-0001.weights.h5").write_text("")
    head = methods.get(run.method).headline(len(run.settings["backbones"]))
    pathlib.Path(run.path, run_dir.RESULTS).write_text(json.dumps({"epochs": 1, "accuracy": {head: 0.5}}))


def test_runs_held_elsewhere_are_skipped_waited_for_and_taken_over_when_their_holder_dies(parse, tmp_path,
                                                                                       monkeypatch, capsys):
    monkeypatch.setenv("FFL_TF_COMPARE_POLL_SECONDS", "0.05")
    monkeypatch.setenv("FFL_TF_LOCK_STALE_SECONDS", "30")
    parse(f"--model_dir={tmp_path}", "--methods=vanilla,dml", "--seeds=0,1", "--epochs=1")
    runs = compare.plan()
    dying = other_hosts_lock(tmp_path / "vanilla" / "seed0", pid=7)  # its machine dies while we train dml seed 0
    other_hosts_lock(tmp_path / "vanilla" / "seed1", pid=8)  # finishes while we train dml seed 1
    trained = []

    def train(run, signals):
        trained.append(run.name)
        assert lock.read_holder(run.path).token == signals.lock_token  # held for the training process
        if run.name == "dml seed 0":
            past = time.time() - 100
            for name in (lock.LOCK, lock.HEARTBEAT):
                os.utime(tmp_path / "vanilla" / "seed0" / name, (past, past))
        if run.name == "dml seed 1":
            finish(runs[2])
            (tmp_path / "vanilla" / "seed1" / lock.LOCK).unlink()
        finish(run)
        return 0

    monkeypatch.setattr(compare, "train", train)
    assert compare.run_all(runs) == []
    assert trained == ["dml seed 0", "dml seed 1", "vanilla seed 0"]  # each once, the dead holder's last
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[1/4] vanilla seed 0: running on host other-host (pid 7), skipped for now"
    assert lines[3] == "[3/4] vanilla seed 1: running on host other-host (pid 8), skipped for now"
    assert lines[6] == "Waiting for 2 run(s) held by other processes, checking every 0.05 s."
    took_over = (f"[1/4] vanilla seed 0: Took over the lock of {runs[0].path} from other-host pid 7 since "
                 f"{dying['started']}: its last heartbeat is ")
    assert lines[7].startswith(took_over) and lines[7].endswith(" s old by the storage's clock, over 30 s.")
    assert 100 <= int(lines[7][len(took_over):].split()[0]) < 130
    assert lines[8:] == [f"[1/4] vanilla seed 0: started, log {runs[0].path}/{compare.LOG}",
                         "[1/4] vanilla seed 0: finished in 0m00s (branch_mean 50.00%)",
                         "[3/4] vanilla seed 1: finished on other-host"]
    assert not list(tmp_path.rglob(lock.LOCK))


def run_compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ffl_tf.compare", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT, env=cli_env())


def start_compare(*args: str) -> subprocess.Popen:
    """A comparison in a process group of its own (with its training process), to be killed or stopped."""
    return subprocess.Popen([sys.executable, "-m", "ffl_tf.compare", *args], cwd=REPO_ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_checkpoint(process: subprocess.Popen, ckpt_dir: pathlib.Path, after=None) -> tuple:
    """Waits until the run in `ckpt_dir` has a checkpoint newer than `after`; returns its position."""
    deadline = time.monotonic() + TIMEOUT
    while (checkpoint.latest(str(ckpt_dir)) or (None,))[0] in (None, after):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.02)
    return checkpoint.latest(str(ckpt_dir))[0]


def snapshot(root: pathlib.Path, name: str) -> tuple[bytes, int]:
    """A finished run's train.log and the modification time of its results.json."""
    run = root / name
    return (run / compare.LOG).read_bytes(), (run / run_dir.RESULTS).stat().st_mtime_ns


def expected_report(root: pathlib.Path, method: str, seeds: list[int]) -> dict:
    """Means and sample deviations of the headline head, from the runs' own results.json and history.csv."""
    head = methods.get(method).headline(2)
    finals, bests = [], []
    for seed in seeds:
        run = root / method / f"seed{seed}"
        results = json.loads((run / run_dir.RESULTS).read_text())
        lines = (run / run_dir.HISTORY).read_text().splitlines()
        column = lines[0].split(",").index(f"val_acc_{head}")
        finals.append(results["accuracy"][head])
        bests.append(max(max(float(line.split(",")[column]) for line in lines[1:]), finals[-1]))
    return {"final": (np.mean(finals), np.std(finals, ddof=1)), "best_epoch": (np.mean(bests), np.std(bests, ddof=1))}


def test_comparison_end_to_end(parse, capsys, tmp_path):
    root = tmp_path / "cmp"
    flagfile = tmp_path / "tiny.flags"
    flagfile.write_text("\n".join([
        "# Two tiny networks on the bundled digits, 3 epochs of 3 steps.", "--dataset=digits",
        f"--data_dir={tmp_path / 'tfds'}", "--backbones=resnet8,resnet8", "--shared_stages=1", "--rampup_epochs=1",
        "--epochs=3", "--steps_per_epoch=3", "--batch_size=32", "--eval_batch_size=64", "--lr_decay_epochs=100",
        "--verbose=2", ""]))
    args = [f"--flagfile={flagfile}", "--methods=ffl,vanilla", "--seeds=0,1", f"--model_dir={root}"]

    # --dry_run: the four commands, seed by seed, and nothing trained.
    parse(*args, "--dry_run")
    compare.main(["compare"])
    commands = capsys.readouterr().out.splitlines()
    assert shlex.split(commands[0])[-3:] == ["--method=ffl", "--seed=0", f"--model_dir={root / 'ffl' / 'seed0'}"]
    assert [c.count("--method=vanilla") for c in commands] == [0, 1, 0, 1] and not root.exists()

    # A run that cannot start (the run directory of an older ffl_tf) fails; --keep_going trains the others,
    # reports on them and fails at the end, naming the run and its log.
    ffl0 = root / "ffl" / "seed0"
    ffl0.mkdir(parents=True)
    (ffl0 / run_dir.CONFIG).write_text(json.dumps({"model_version": 1}))
    going = run_compare(*args, "--keep_going")
    assert going.returncode == 1, going.stderr[-3000:]
    message = going.stderr.strip().splitlines()[-1]
    assert message.startswith("ffl_tf.compare: error: 1 run(s) failed: ffl seed 0 failed: ffl_tf.train: error: ")
    assert "earlier ffl_tf" in message and f"(log: {ffl0 / compare.LOG})" in message
    assert "Traceback" not in going.stderr
    assert json.loads((root / report.JSON).read_text())["missing_runs"] == ["ffl/seed0"]
    finished = {name: snapshot(root, name) for name in ("vanilla/seed0", "ffl/seed1", "vanilla/seed1")}
    assert (commands[1] + "\n") in finished["vanilla/seed0"][0].decode()  # the command --dry_run printed

    # Repaired: SIGTERM to the comparison stops its training process at the next step, with a checkpoint...
    (ffl0 / run_dir.CONFIG).unlink()
    process = start_compare(*args)
    wait_for_checkpoint(process, ffl0 / run_dir.CHECKPOINTS)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 75 and "rerun the same command to continue" in stderr, stderr[-3000:]
    assert "Stopped on request" in (ffl0 / compare.LOG).read_text()
    stopped_at = checkpoint.latest(str(ffl0 / run_dir.CHECKPOINTS))[0]

    # ...then the comparison and its training process are killed, after the next checkpoint...
    process = start_compare(*args)
    wait_for_checkpoint(process, ffl0 / run_dir.CHECKPOINTS, after=stopped_at)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert not compare.is_finished(str(ffl0))

    # ...and rerunning it resumes that run, without touching the finished ones.
    resumed = run_compare(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("finished earlier, skipped") == 3
    assert {name: snapshot(root, name) for name in finished} == finished
    assert (ffl0 / compare.LOG).read_text().count("Resuming from") == 2
    assert json.loads((ffl0 / run_dir.RESULTS).read_text())["steps"] == 9

    summary = json.loads((root / report.JSON).read_text())
    assert summary["missing_runs"] == []
    for method in ("ffl", "vanilla"):
        stats = summary["methods"][method]["accuracy"][methods.get(method).headline(2)]
        for key, (mean, std) in expected_report(root, method, [0, 1]).items():
            assert stats[key]["n"] == 2
            np.testing.assert_allclose([stats[key]["mean"], stats[key]["std"]], [mean, std], rtol=1e-9, atol=1e-12)
    markdown = (root / report.MARKDOWN).read_text()
    assert "| ffl | resnet8,resnet8 | fused |" in markdown and (root / report.PLOT).stat().st_size > 10_000

    # --report_only writes the same report again from the runs alone.
    for name in (report.JSON, report.MARKDOWN, report.CSV, report.PLOT):
        (root / name).unlink()
    parse(*args, "--report_only")
    compare.main(["compare"])
    assert json.loads((root / report.JSON).read_text()) == summary
    assert (root / report.MARKDOWN).read_text() == markdown and (root / report.PLOT).exists()
    assert {name: snapshot(root, name) for name in finished} == finished


def test_two_comparisons_sharing_a_root_train_each_run_once_and_agree_on_the_report(parse, tmp_path):
    from ffl_tf import data

    data.dataset_info("digits", data_dir=str(tmp_path / "tfds"))  # prepared once, not by two runs at a time
    root = tmp_path / "cmp"
    args = ["--dataset=digits", f"--data_dir={tmp_path / 'tfds'}", "--backbones=resnet8,resnet8", "--shared_stages=1",
            "--epochs=1", "--steps_per_epoch=3", "--batch_size=32", "--eval_batch_size=64", "--verbose=0",
            "--methods=ffl,vanilla", "--seeds=0,1", f"--model_dir={root}"]
    env = cli_env(FFL_TF_COMPARE_POLL_SECONDS="0.2")
    instances = [subprocess.Popen([sys.executable, "-m", "ffl_tf.compare", *args], cwd=REPO_ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [instance.communicate(timeout=TIMEOUT) for instance in instances]
    assert [i.returncode for i in instances] == [0, 0], "\n".join(err[-3000:] for _, err in outputs)

    # Each run started once, by one of them; each appends one "=== <time> <command>" line to the run's log.
    started = [line.split("] ")[1].split(": started, log ")[0] for out, _ in outputs for line in out.splitlines()
               if ": started, log " in line]
    assert sorted(started) == sorted(f"{m} seed {s}" for m in ("ffl", "vanilla") for s in (0, 1)), outputs
    for method in ("ffl", "vanilla"):
        for seed in (0, 1):
            log = (root / method / f"seed{seed}" / compare.LOG).read_text()
            assert sum(line.startswith("=== ") for line in log.splitlines()) == 1, log
            assert not (root / method / f"seed{seed}" / "lock.json").exists()
    skipped = sum(out.count(", skipped for now") for out, _ in outputs)
    assert skipped >= 1 and all(out.count("Report: ") == 1 for out, _ in outputs)  # both wrote the report...
    written = {name: (root / name).read_bytes() for name in (report.JSON, report.MARKDOWN, report.CSV, report.PLOT)}
    assert json.loads(written[report.JSON])["missing_runs"] == []
    parse(*args, "--report_only")  # ...the same bytes as any other writer's
    compare.main(["compare"])
    assert {name: (root / name).read_bytes() for name in written} == written

