"""The shared loop: resume, non-finite values, damaged checkpoints, signals, best tracking,
locks, fingerprints, checksums, EMA, summary.json."""

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import data, trainer
from experiments.errors import Preempted
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
    for a, b in zip(jax.tree.leaves(_params(straight.state)),
                    jax.tree.leaves(_params(resumed.state))):
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
    with pytest.raises(trainer.NonFiniteError, match=rf"loss=nan.* at step {nan_step}\b"):
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
        step, _, meta = trainer.restore_latest(
            tmp_path / "checkpoints", {"task": make_task().init_state(jax.random.PRNGKey(0))})
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


class _SignalAt:
    """Wraps a batch iterator and sends this process `signum` when batch `n` is drawn."""

    def __init__(self, batches, n, signum):
        self.batches, self.n, self.signum, self.drawn = batches, n, signum, 0

    def __next__(self):
        self.drawn += 1
        if self.drawn == self.n:
            os.kill(os.getpid(), self.signum)
        return next(self.batches)

    def state(self):
        return self.batches.state()

    def restore(self, state):
        self.batches.restore(state)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_saves_raises_preempted_and_the_rerun_is_bitwise_equal(tmp_path, signum):
    straight = trainer.train(make_task(), _config(), tmp_path / "straight")
    task = make_task()
    task = trainer.Task(task.init_state, task.train_step, _SignalAt(task.batches, 7, signum))
    with pytest.raises(Preempted) as stopped:
        trainer.train(task, _config(), tmp_path / "stopped")
    saved = stopped.value.step
    assert 1 <= saved < 40 and (tmp_path / "stopped" / "checkpoints" / str(saved)).is_dir()
    assert "rerun the same command to resume" in str(stopped.value)
    resumed = trainer.train(make_task(), _config(), tmp_path / "stopped")
    assert resumed.step == 40
    for a, b in zip(jax.tree.leaves(_params(straight.state)),
                    jax.tree.leaves(_params(resumed.state))):
        np.testing.assert_array_equal(a, b)


def test_nan_is_named_at_its_step_with_metrics_pulled_every_50_steps(tmp_path):
    """The metrics stay on the device for 50 steps, yet the error names the exact step; no
    checkpoint after it is written, and the one before it restores."""
    nan_example = 77
    nan_step = _step_that_sees(make_task(nan_at_example=nan_example), nan_example)
    assert 10 < nan_step < 50
    config = _config(num_steps=100, log_every=50, checkpoint_every=10)
    with pytest.raises(trainer.NonFiniteError, match=rf"loss=nan.* at step {nan_step}\b"):
        trainer.train(make_task(nan_at_example=nan_example), config, tmp_path)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert steps[-1] == (nan_step - 1) // 10 * 10
    template = make_task().init_state(jax.random.PRNGKey(0))
    assert np.all(np.isfinite(trainer.load_state(tmp_path, template)["params"]["w"]))


def test_diverging_parameters_stop_the_run_naming_the_quantity(tmp_path):
    """Not a NaN loss: an exploding learning rate makes the parameter norm infinite first."""
    task = make_task()

    def exploding_step(state, batch, key):
        state, metrics = task.train_step(state, batch, key)
        params = jax.tree.map(lambda p: p * 1e15, state["params"])  # ‖w‖ ~ 1e14, then 1e29
        return {**state, "params": params}, {**metrics, "param_norm":
                                               trainer.optax.tree.norm(params)}

    with pytest.raises(trainer.NonFiniteError, match=r"param_norm=inf.* at step 2\b"):
        trainer.train(trainer.Task(task.init_state, exploding_step, task.batches), _config(),
                      tmp_path)


def test_a_second_run_in_the_same_workdir_stops_at_once(tmp_path):
    with trainer.WorkdirLock(tmp_path):
        with pytest.raises(trainer.WorkdirLockedError, match=rf"pid {os.getpid()}"):
            trainer.train(make_task(), _config(), tmp_path)


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path):
    root = str(pathlib.Path(__file__).parents[2])
    script = (f"import sys, os; sys.path.insert(0, {root!r}); from experiments import trainer; "
              f"import pathlib; lock = trainer.WorkdirLock(pathlib.Path({str(tmp_path)!r}))"
              ".__enter__(); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", script], check=False)
    assert "pid" in (tmp_path / ".lock").read_text()  # the killed run's record is left
    assert trainer.train(make_task(), _config(num_steps=10), tmp_path).step == 10


def test_resuming_with_a_different_model_stops_and_says_what_differs(tmp_path):
    task = make_task()
    trainer.train(dataclasses.replace(task, fingerprint={"model": {"width": 3}}),
                  _config(num_steps=10), tmp_path)
    with pytest.raises(trainer.FingerprintMismatchError,
                       match=r"model.width: 3 → 4.*another --workdir"):
        trainer.train(dataclasses.replace(make_task(), fingerprint={"model": {"width": 4}}),
                      _config(num_steps=20), tmp_path)
    # Nothing was quarantined: the checkpoints are good, the run was another one.
    assert not (tmp_path / "checkpoints_unreadable").exists()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [10]


def test_a_checkpoint_whose_fingerprint_still_holds_its_epochs_is_continued(tmp_path):
    """Checkpoints written while `epochs` was part of the config fingerprint resume in a
    longer run; any other difference still stops it."""
    old = {"config": {"epochs": 8, "model.width": 3}}
    trainer.train(dataclasses.replace(make_task(), fingerprint=old), _config(num_steps=10),
                  tmp_path)
    longer = trainer.train(dataclasses.replace(make_task(), fingerprint={
        "config": {"model.width": 3}}), _config(num_steps=20), tmp_path)
    assert longer.step == 20
    with pytest.raises(trainer.FingerprintMismatchError, match=r"model.width: 3 → 4"):
        trainer.train(dataclasses.replace(make_task(), fingerprint={
            "config": {"model.width": 4}}), _config(num_steps=30), tmp_path)


def test_a_different_state_shape_is_a_mismatch_not_a_corrupt_checkpoint(tmp_path):
    trainer.train(make_task(), _config(num_steps=10), tmp_path)
    task = make_task()

    def wider_init(key):
        state = task.init_state(key)
        params = {**state["params"], "extra": jax.numpy.zeros((2,))}
        return {"params": params, "opt_state": state["opt_state"]}

    with pytest.raises(trainer.FingerprintMismatchError, match=r"state shapes differ"):
        trainer.train(dataclasses.replace(task, init_state=wider_init),
                      _config(num_steps=20), tmp_path)
    assert not (tmp_path / "checkpoints_unreadable").exists()


def _flip_a_byte_of_the_array_data(checkpoint: pathlib.Path) -> None:
    """Flips one bit inside the stored bytes of params["w"] (stored uncompressed), in every
    file that holds them: the files stay decodable, only a value changes."""
    template = make_task().init_state(jax.random.PRNGKey(0))
    stored = trainer.load_state(checkpoint.parents[1], template, int(checkpoint.name))
    needle = np.asarray(stored["params"]["w"]).tobytes()
    flipped = 0
    for path in checkpoint.rglob("*"):
        data = path.read_bytes() if path.is_file() else b""
        at = data.find(needle)
        if at >= 0:
            data = bytearray(data)
            data[at + 5] ^= 0x01
            path.write_bytes(bytes(data))
            flipped += 1
    assert flipped, "the array bytes were not found"


def test_a_flipped_byte_quarantines_the_checkpoint_instead_of_restoring_silently(tmp_path):
    trainer.train(make_task(), _config(num_steps=20), tmp_path)
    _flip_a_byte_of_the_array_data(tmp_path / "checkpoints" / "20")
    with pytest.warns(RuntimeWarning, match=r"step 20\) cannot be restored"):
        result = trainer.train(make_task(), _config(num_steps=30), tmp_path)
    assert result.step == 30
    assert (tmp_path / "checkpoints_unreadable" / "20").is_dir()


def test_load_state_of_a_corrupt_checkpoint_names_it(tmp_path):
    trainer.train(make_task(), _config(num_steps=10), tmp_path)
    _flip_a_byte_of_the_array_data(tmp_path / "checkpoints" / "10")
    template = make_task().init_state(jax.random.PRNGKey(0))
    with pytest.raises(trainer.CheckpointError, match=r"checkpoints/10 cannot be read"):
        trainer.load_state(tmp_path, template)


def test_metrics_jsonl_has_no_repeated_rows_after_a_resume(tmp_path):
    trainer.train(make_task(), _config(num_steps=20, log_every=5, checkpoint_every=10),
                  tmp_path)
    # A run killed after step 20's rows were written but before checkpoint 20 finished:
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    trainer.train(make_task(), _config(num_steps=30, log_every=5, checkpoint_every=10),
                  tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if row["split"] == "train"]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_best_json_naming_a_missing_checkpoint_is_reconciled(tmp_path):
    config = _config(num_steps=20, eval_every=10, best_metric="neg_weight_error")
    trainer.train(make_task(), config, tmp_path)
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 20
    shutil.rmtree(tmp_path / "checkpoints" / "20")
    with pytest.warns(RuntimeWarning, match=r"names step 20, which has no checkpoint"):
        trainer.train(make_task(), _config(num_steps=30, eval_every=10,
                                           best_metric="neg_weight_error"), tmp_path)
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 30


def test_ema_is_evaluated_and_checkpointed(tmp_path):
    """The EMA follows decay min(d, (1 + t)/(10 + t)) from the initial parameters; evaluation
    sees it, the live parameters are evaluated as live_*, and load_state returns it."""
    task = make_task()
    task = dataclasses.replace(task, evaluate_live=task.evaluate)
    config = _config(num_steps=20, ema_decay=0.9, eval_every=20)
    result = trainer.train(task, config, tmp_path)
    # An independent replay of the live trajectory and its EMA.
    states = []
    replay = make_task()
    state = jax.jit(replay.init_state)(jax.random.split(jax.random.PRNGKey(0))[0])
    ema = jax.tree.map(np.asarray, state["params"])
    step_key = jax.random.split(jax.random.PRNGKey(0))[1]
    for t in range(20):
        state, _ = jax.jit(replay.train_step)(state, next(replay.batches),
                                              jax.random.fold_in(step_key, t))
        decay = min(0.9, (1 + t) / (10 + t))
        ema = jax.tree.map(lambda e, p, d=decay: d * e + (1 - d) * np.asarray(p), ema,
                           state["params"])
        states.append(state)
    np.testing.assert_allclose(result.state["params"]["w"], ema["w"], rtol=1e-5)
    assert result.last_eval["neg_weight_error"] == pytest.approx(
        -np.abs(ema["w"] - TRUE_WEIGHTS).max(), rel=1e-4)
    assert result.last_eval["live_neg_weight_error"] == pytest.approx(
        -np.abs(np.asarray(states[-1]["params"]["w"]) - TRUE_WEIGHTS).max(), rel=1e-4)
    template = make_task().init_state(jax.random.PRNGKey(0))
    np.testing.assert_allclose(trainer.load_state(tmp_path, template)["params"]["w"],
                               ema["w"], rtol=1e-5)
    live_loaded = trainer.load_state(tmp_path, template, ema=False)["params"]["w"]
    np.testing.assert_allclose(live_loaded, states[-1]["params"]["w"], rtol=1e-6)


def test_summary_json_splits_the_wall_time(tmp_path):
    config = _config(num_steps=30, eval_every=10, best_metric="neg_weight_error")
    trainer.train(make_task(), config, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    seconds = summary["wall_seconds"]
    assert set(seconds) >= {"compilation", "first_step", "steady_steps", "evaluation",
                            "checkpointing", "data_wait", "total"}
    parts = sum(seconds[k] for k in ("compilation", "first_step", "steady_steps",
                                     "evaluation", "checkpointing"))
    assert parts == pytest.approx(seconds["total"], rel=1e-6)
    assert summary["step"] == 30 and summary["steps_per_sec"] > 0
    assert summary["num_params"] == 4 and summary["compute_dtype"] == "float32"
    assert summary["best"]["step"] == 30 and summary["final"] == summary["best"]["metrics"]
    assert summary["device_kind"] == jax.devices()[0].device_kind


def test_auto_settings_resolve_to_what_the_process_does(monkeypatch, tmp_path):
    monkeypatch.setenv("KEXUE_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("KEXUE_JAX_KEEP_FREED_MEMORY", "0")
    resolved = trainer.resolve_config(trainer.default_config())
    expected = "always" if jax.default_backend() == "cpu" and jax.device_count() > 1 else "never"
    assert resolved.sync_every_step == expected
    assert resolved.compilation_cache_dir == str(tmp_path / "xla")
    assert resolved.keep_freed_host_memory == "off"
    assert trainer.resolve_config(resolved).to_dict() == resolved.to_dict()  # idempotent


def test_cast_to_compute_casts_floats_only_and_gradients_come_back_float32():
    tree = {"w": jax.numpy.ones((2,), jax.numpy.float32), "ids": jax.numpy.arange(3)}
    cast = trainer.cast_to_compute(tree, jax.numpy.bfloat16)
    assert cast["w"].dtype == jax.numpy.bfloat16 and cast["ids"].dtype == tree["ids"].dtype
    grad = jax.grad(lambda w: jax.numpy.sum(
        trainer.cast_to_compute(w, jax.numpy.bfloat16) ** 2).astype(jax.numpy.float32))(
        tree["w"])
    assert grad.dtype == jax.numpy.float32
    np.testing.assert_array_equal(grad, [2.0, 2.0])


def test_config_fingerprint_leaves_out_how_long_to_train():
    """A longer rerun (more epochs or steps) continues the same run; a changed model does not."""
    import ml_collections
    base = ml_collections.ConfigDict({"epochs": 8, "model": {"width": 4},
                                      "trainer": trainer.default_config()})
    longer = base.copy_and_resolve_references()
    longer.epochs, longer.trainer.num_steps = 12, 5000
    assert trainer.config_fingerprint(base) == trainer.config_fingerprint(longer)
    wider = base.copy_and_resolve_references()
    wider.model.width = 8
    assert trainer.config_fingerprint(wider) != trainer.config_fingerprint(base)
