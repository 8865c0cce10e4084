"""A run's record can't be overwritten, mixed up or silently wrong: the faults a user meets,
each through the command line of the sentence-similarity experiment."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import launch

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = "sentence_similarity:smoke"


def _run(capsys, workdir, *overrides) -> tuple[int, str, str]:
    code = launch.main([SMOKE, "--workdir", str(workdir), *overrides])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def groups_file(tmp_path_factory) -> pathlib.Path:
    """The generated corpus of the smoke config, as a file a user would hand in."""
    workdir = tmp_path_factory.mktemp("source")
    assert launch.main([SMOKE, "--workdir", str(workdir), "--config.trainer.num_steps=1"]) == 0
    return workdir / "generated_groups.tsv"


def test_rerun_on_data_with_added_rows_stops_instead_of_resuming(tmp_path, capsys,
                                                                   groups_file):
    data = tmp_path / "groups.tsv"
    shutil.copy(groups_file, data)
    workdir = tmp_path / "run"
    assert _run(capsys, workdir, f"--config.data.path={data}",
                "--config.trainer.num_steps=10")[0] == 0
    vocabulary = (workdir / "vocab.json").read_text(encoding="utf-8")
    with open(data, "a", encoding="utf-8") as stream:
        stream.write("99999\t全新的句子带来新的字符吗\n99999\t新字符会改变字表\n")
    code, _, err = _run(capsys, workdir, f"--config.data.path={data}",
                        "--config.trainer.num_steps=20")
    assert code == 2
    assert err.startswith("launch.py: ") and err.count("\n") == 1
    assert "vocabulary" in err and "another --workdir" in err
    # Nothing of the first run was touched: its vocabulary and checkpoints stay.
    assert (workdir / "vocab.json").read_text(encoding="utf-8") == vocabulary
    assert not (workdir / "checkpoints_unreadable").exists()


def test_divergence_without_a_nan_loss_stops_the_run_naming_the_quantity(tmp_path, capsys):
    code, _, err = _run(capsys, tmp_path / "run", "--config.optimizer.learning_rate=1e30",
                        "--config.trainer.num_steps=20")
    assert code == 2
    assert "non-finite" in err and "at step " in err and "Traceback" not in err


def test_a_corrupt_best_checkpoint_is_one_clear_line_in_eval(tmp_path, capsys, groups_file):
    workdir = tmp_path / "run"
    assert _run(capsys, workdir, "--config.trainer.num_steps=10")[0] == 0
    best = json.loads((workdir / "best.json").read_text())["step"]
    for path in (workdir / "checkpoints" / str(best) / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"\x00" * path.stat().st_size)
    code, out, err = _run(capsys, workdir, "--config.mode=eval",
                          f"--config.data.eval_path={groups_file}")
    assert code == 2
    assert f"checkpoints/{best} cannot be read" in err and "Traceback" not in err


@pytest.mark.timeout(300)
# Both signals reach the same handler (test_trainer.py sends each in process): CI runs
# SIGTERM through the command line, what a scheduler sends; the full suite both.
@pytest.mark.parametrize("signum", [signal.SIGTERM,
                                    pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_a_stopped_run_says_preempted_exits_nonzero_and_resumes(tmp_path, signum):
    workdir = tmp_path / "run"
    command = [sys.executable, "launch.py", SMOKE, "--workdir", str(workdir),
               "--config.trainer.num_steps=400", "--config.trainer.checkpoint_every=200"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.time() + 200
    while not (workdir / "metrics.jsonl").exists() or not (
            workdir / "metrics.jsonl").read_text().strip():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=200)
    assert process.returncode == 143, err[-2000:]
    last = err.strip().splitlines()[-1]
    step = int(last.split("preempted at step ")[1].split(";")[0])
    assert last == (f"launch.py: preempted at step {step}; rerun the same command to resume")
    checkpoints = workdir / "checkpoints"
    assert 0 < step < 400 and (checkpoints / str(step)).is_dir(), (
        sorted(p.name for p in checkpoints.iterdir()) if checkpoints.is_dir() else None,
        err[-3000:])
    assert '{"top1"' not in out  # no final summary line
    assert "summary.json" not in {p.name for p in workdir.iterdir()}
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    assert np.isfinite(summary["top1"])
    assert json.loads((workdir / "summary.json").read_text())["step"] == 400
