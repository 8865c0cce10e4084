"""The sentence-similarity experiment end to end: train, eval-only, FAQ search, and the
trainer's acceptance runs on it (8 devices vs 1, SIGKILL and resume)."""

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import launch
from experiments import sentence_similarity
from experiments.sentence_similarity import train

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _smoke(tmp_path, *overrides):
    workdir = tmp_path / "run"
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir), *overrides]) == 0
    return workdir


def _final_params(workdir, step="latest"):
    config = sentence_similarity.get_config("smoke")
    sizes = json.loads((workdir / "model.json").read_text())
    model = train.build_model(config, sizes["vocab_size"], sizes["num_classes"])
    init = train.make_init_state(model, train.make_optimizer(config), config.data.maxlen)
    from experiments import trainer
    template = jax.eval_shape(init, jax.random.PRNGKey(0))
    return jax.tree.map(np.asarray, trainer.load_state(workdir, template, step)["params"])


def test_smoke_run_writes_everything_and_learns(tmp_path, capsys):
    workdir = _smoke(tmp_path, "--config.trainer.num_steps=60")
    for name in ("config.json", "metrics.jsonl", "best.json", "vocab.json", "threshold.json"):
        assert (workdir / name).exists(), name
    assert json.loads((workdir / "config.json").read_text())["trainer"]["num_steps"] == 60
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if row["split"] == "train"]
    assert losses[-1] < losses[0]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary) >= {"top1", "top5", "top10", "map_at_r"}
    assert summary["top10"] >= summary["top5"] >= summary["top1"]
    # Weights of the best checkpoint reproduce the recorded best top-1.
    best = json.loads((workdir / "best.json").read_text())
    assert summary["top1"] == pytest.approx(best["value"])


def test_eval_mode_scores_any_groups_file_and_ends_with_json(tmp_path, capsys):
    workdir = _smoke(tmp_path)
    capsys.readouterr()
    groups = workdir / "generated_groups.tsv"
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir),
                        "--config.mode=eval", f"--config.data.eval_path={groups}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = json.loads(lines[-1])
    assert set(last) == {"top1", "top5", "top10", "map_at_r"}
    # min_count 1 over the same file: every character is known.
    assert ": unknown characters: 0 of " in lines[-2]
    assert "(0.00%); sentences with one or more: 0 of " in lines[-2]


def test_recipe_model_fields_train_and_are_read_back_by_eval(tmp_path, capsys):
    """The recipe's encoder (bidirectional, max pooling, dropout) trains, and eval mode
    rebuilds it from config.json without repeating the flags."""
    workdir = _smoke(tmp_path, "--config.model.bidirectional=true",
                     "--config.model.pooling=max", "--config.model.dropout=0.2",
                     "--config.model.final_state=masked", "--config.trainer.num_steps=10",
                     "--config.optimizer.decay=cosine")
    saved = json.loads((workdir / "config.json").read_text())["model"]
    assert (saved["bidirectional"], saved["pooling"], saved["dropout"]) == (True, "max", 0.2)
    capsys.readouterr()
    assert launch.main(["sentence_similarity:smoke", "--workdir", str(workdir),
                        "--config.mode=eval",
                        f"--config.data.eval_path={workdir / 'generated_groups.tsv'}"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == {
        "top1", "top5", "top10", "map_at_r"}


def test_cosine_decay_runs_from_the_peak_to_its_final_fraction():
    config = sentence_similarity.get_config("smoke")
    assert train.learning_rate(config, 100) == config.optimizer.learning_rate
    with config.unlocked():
        config.optimizer.decay = "cosine"
        config.optimizer.final_fraction = 0.1
    rate = train.learning_rate(config, 100)
    peak = config.optimizer.learning_rate
    for step in (0, 25, 50, 100, 150):
        progress = min(step, 100) / 100
        expected = peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))
        assert float(rate(step)) == pytest.approx(expected, rel=1e-6), step


def test_search_mode_answers_queries_with_cosines_and_a_verdict(tmp_path):
    workdir = _smoke(tmp_path)
    questions = tmp_path / "faq.txt"
    questions.write_text("冰箱多少钱\n护照的有效期是多久\n\n怎么开通花呗\n", encoding="utf-8")
    config = sentence_similarity.get_config("smoke")
    with config.unlocked():
        config.mode = "search"
        config.search.questions = str(questions)
        config.search.top = 2
    out = io.StringIO()
    train.run_search(config, workdir, stdin=io.StringIO("冰箱要多少钱\n"), stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("3 stored questions")
    assert lines[1].split("\t")[0] == "冰箱要多少钱" and lines[1].split("\t")[1] in (
        "accept", "reject")
    cosines = [float(line.split("\t")[0]) for line in lines[2:4]]
    assert cosines[0] >= cosines[1] and all(-1.0001 <= c <= 1.0001 for c in cosines)


def test_unknown_config_key_lists_the_valid_ones(tmp_path, capsys):
    code = launch.main(["sentence_similarity:smoke", "--workdir", str(tmp_path),
                        "--config.trainer.num_stepz=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown config key 'trainer.num_stepz'" in err and "trainer.num_steps" in err


def test_unknown_experiment_and_variant_are_refused(capsys):
    assert launch.main(["no_such_thing"]) == 2
    assert "valid experiments: sentence_similarity" in capsys.readouterr().err
    assert launch.main(["sentence_similarity:huge"]) == 2
    assert "unknown variant 'huge'" in capsys.readouterr().err


def _launch_process(workdir, *overrides, env=None):
    return subprocess.Popen(
        [sys.executable, "launch.py", "sentence_similarity:smoke", "--workdir", str(workdir),
         *overrides], cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(300)
def test_eight_devices_match_one_device_after_20_steps(tmp_path):
    runs = {}
    for devices in (1, 8):
        workdir = tmp_path / f"devices{devices}"
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        process = _launch_process(workdir, "--config.trainer.num_steps=20", env=env)
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-3000:]
        runs[devices] = _final_params(workdir)
    for a, b in zip(jax.tree.leaves(runs[1]), jax.tree.leaves(runs[8])):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.timeout(300)
def test_sigkill_after_second_checkpoint_then_resume_is_bitwise_equal(tmp_path):
    overrides = ["--config.trainer.num_steps=120", "--config.trainer.checkpoint_every=5",
                 "--config.trainer.eval_every=100"]
    straight = _launch_process(tmp_path / "straight", *overrides)
    killed_dir = tmp_path / "killed"
    victim = _launch_process(killed_dir, *overrides)
    deadline = time.time() + 200
    while not (killed_dir / "checkpoints" / "10").is_dir():
        assert victim.poll() is None, "the run ended before its second checkpoint"
        assert time.time() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    saved = sorted(int(p.name) for p in (killed_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] < 120, saved
    resumed = _launch_process(killed_dir, *overrides)
    for process in (resumed, straight):
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-3000:]
    for a, b in zip(jax.tree.leaves(_final_params(tmp_path / "straight")),
                    jax.tree.leaves(_final_params(killed_dir))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.timeout(300)
def test_two_processes_with_jax_distributed_match_one_process(tmp_path):
    """A real multi-host run on one machine: jax.distributed over gloo (docs/index.md §5 item 3)."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    steps = "--config.trainer.num_steps=20"
    processes = [_launch_process(tmp_path / "two", steps, "--coordinator", f"127.0.0.1:{port}",
                                 "--num_processes", "2", "--process_id", str(i),
                                 env={"XLA_FLAGS": ""}) for i in range(2)]
    single = _launch_process(tmp_path / "one", steps, env={"XLA_FLAGS": ""})
    for process in (*processes, single):
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-3000:]
    for a, b in zip(jax.tree.leaves(_final_params(tmp_path / "one")),
                    jax.tree.leaves(_final_params(tmp_path / "two"))):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
