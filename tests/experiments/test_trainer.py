"""The shared loop: resume, non-finite losses, damaged checkpoints, SIGTERM, best tracking."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from experiments import data, trainer
from tests.experiments.toy_task import TRUE_WEIGHTS, make_task


def _config(**overrides):
    config = trainer.default_config()
    config.update(dict(num_steps=40, log_every=10, eval_every=0, checkpoint_every=10,
                       keep_checkpoints=10, progress_bar=False))
    config.update(overrides)
    return config


def _params(state):
    return jax.tree.map(np.asarray, state["params"])


def test_training_reaches_the_known_solution(tmp_path):
    result = trainer.train(make_task(), _config(num_steps=150), tmp_path)
    np.testing.assert_allclose(result.state["params"]["w"], TRUE_WEIGHTS, atol=0.05)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["split"] == "train"] == list(range(10, 151, 10))
    assert {"loss", "grad_norm", "param_norm", "steps_per_sec"} <= set(lines[0])
    train_lines = [line for line in lines if line["split"] == "train"]
    assert train_lines[-1]["loss"] < 0.01 * train_lines[0]["loss"]
    assert any(path.name.startswith("events") for path in (tmp_path / "tensorboard").iterdir())


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    straight = trainer.train(make_task(), _config(), tmp_path / "straight")
    trainer.train(make_task(), _config(num_steps=20), tmp_path / "resumed")
    # A fresh task (fresh iterator) must pick up the data position from the checkpoint.
    resumed = trainer.train(make_task(), _config(), tmp_path / "resumed")
    assert resumed.step == 40
    for a, b in zip(jax.tree.leaves(_params(straight.state)), jax.tree.leaves(_params(resumed.state))):
        np.testing.assert_array_equal(a, b)


def _step_that_sees(task, example):
    """The 1-based step whose batch contains `example`, from a replay of the same shuffling."""
    replay = data.EpochBatches({"index": np.arange(task.batches.num_examples)},
                               task.batches.batch_size, task.batches.seed)
    for step in range(1, 1000):
        if example in next(replay)["index"]:
            return step
    raise AssertionError(f"example {example} never drawn")


def test_nan_loss_stops_at_its_step_and_the_previous_checkpoint_restores(tmp_path):
    nan_example = 77
    probe = make_task(nan_at_example=nan_example)
    nan_step = _step_that_sees(probe, nan_example)
    assert nan_step > 10, "pick an example that shows up after the first checkpoint"
    with pytest.raises(trainer.NonFiniteLossError, match=rf"at step {nan_step}\b"):
        trainer.train(make_task(nan_at_example=nan_example), _config(checkpoint_every=5),
                      tmp_path)
    last_good = (nan_step - 1) // 5 * 5
    template = make_task().init_state(jax.random.PRNGKey(0))
    restored = trainer.load_state(tmp_path, template)
    assert np.all(np.isfinite(restored["params"]["w"]))
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == last_good


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    trainer.train(make_task(), _config(num_steps=20), tmp_path)
    latest = tmp_path / "checkpoints" / "20"
    for path in latest.rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\x00garbage")
    with pytest.warns(RuntimeWarning, match=r"checkpoints/20 \(step 20\) cannot be restored"):
        step, _, meta = trainer.restore_latest(tmp_path / "checkpoints",
                                               make_task().init_state(jax.random.PRNGKey(0)))
    assert step == 10 and meta["step"] == 10
    assert (tmp_path / "checkpoints_unreadable" / "20").is_dir()  # kept, not deleted
    # Training then resumes from step 10 and completes.
    result = trainer.train(make_task(), _config(num_steps=30), tmp_path)
    assert result.step == 30


def test_best_checkpoint_is_kept_by_its_metric(tmp_path):
    config = _config(num_steps=60, eval_every=10, keep_checkpoints=1,
                     best_metric="neg_weight_error", best_mode="min")  # "min": the worst
    trainer.train(make_task(), config, tmp_path)
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["step"] == 10  # the least trained weights are furthest from the solution
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert kept == [10, 60]
    template = jax.eval_shape(make_task().init_state, jax.random.PRNGKey(0))
    state = trainer.load_state(tmp_path, template, step="best")
    assert -np.abs(np.asarray(state["params"]["w"]) - TRUE_WEIGHTS).max() == pytest.approx(
        best["value"], rel=1e-6)


class _SigtermAt:
    """Wraps a batch iterator and sends this process SIGTERM when batch `n` is drawn."""

    def __init__(self, batches, n):
        self.batches, self.n, self.drawn = batches, n, 0

    def __next__(self):
        self.drawn += 1
        if self.drawn == self.n:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.batches)

    def state(self):
        return self.batches.state()

    def restore(self, state):
        self.batches.restore(state)


def test_sigterm_saves_and_stops(tmp_path):
    task = make_task()
    task = trainer.Task(task.init_state, task.train_step, _SigtermAt(task.batches, 7))
    result = trainer.train(task, _config(), tmp_path)
    assert result.step == 7
    assert (tmp_path / "checkpoints" / "7").is_dir()
    assert trainer.train(make_task(), _config(), tmp_path).step == 40
