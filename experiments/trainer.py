"""The one training loop every experiment shares.

An experiment hands `train` a `Task`: how to initialise its state, a pure
`train_step(state, batch, key) -> (state, metrics)`, a resumable batch iterator and an
optional evaluator. The loop owns everything else:

* data parallelism over a 1-D `data` mesh of all devices (`NamedSharding`, no pmap): batches
  are split over the mesh, the state is replicated; `jax.distributed.initialize()` is called by
  launch.py when a run spans several hosts, and each process feeds its slice of the batch;
* the step is jitted once with the state donated; its randomness is `fold_in(key, step)`;
* orbax checkpoints every N steps, at the end and on SIGTERM, keeping the last K and the best
  by a named metric; the batch iterator's position is saved with the state, so rerunning the
  same command resumes exactly where the run stopped; an unreadable latest checkpoint is moved
  aside with a warning and the previous one is used;
* `metrics.jsonl` (process 0), TensorBoard events, a tqdm bar with steps/s and ETA;
* the first non-finite loss stops the run with `NonFiniteLossError` naming the step; the last
  checkpoint saved before it stays restorable.

Steps are counted from 1: "step k" is the k-th update, and the checkpoint named k holds the
state after k updates.
"""

import dataclasses
import json
import math
import pathlib
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

PyTree = Any
Batch = Mapping[str, np.ndarray]
Metrics = Mapping[str, jax.Array]


def default_config() -> ml_collections.ConfigDict:
    """The trainer's settings; experiments embed them as `config.trainer`."""
    config = ml_collections.ConfigDict()
    config.num_steps = 1000          # total number of updates
    config.seed = 0                  # initialisation and per-step randomness
    config.log_every = 50            # steps between metrics.jsonl / TensorBoard lines
    config.eval_every = 0            # steps between evaluations (0: only at the end)
    config.checkpoint_every = 500    # steps between checkpoints (also at the end, on SIGTERM)
    config.keep_checkpoints = 3      # the last K checkpoints are kept ...
    config.best_metric = ""          # ... plus the best by this evaluation metric ("": none)
    config.best_mode = "max"         # "max" or "min" for best_metric
    config.progress_bar = True       # tqdm bar on process 0
    return config


class BatchIterator(Protocol):
    """What the trainer needs from an input pipeline (see `experiments.data.EpochBatches`)."""

    def __next__(self) -> Batch: ...
    def state(self) -> dict[str, int]: ...
    def restore(self, state: Mapping[str, int]) -> None: ...


@dataclasses.dataclass(frozen=True)
class Task:
    """An experiment as the trainer sees it.

    Attributes:
      init_state: key -> the initial train state (any pytree of arrays).
      train_step: pure `(state, batch, key) -> (state, metrics)`; metrics are scalars; every
        metric whose name contains "loss" ("loss", "critic_loss", ...) is checked for NaN/inf,
        and "grad_norm" / "param_norm" should be there (see `apply_updates`).
      batches: the training batches (global batch size; each process keeps its slice).
      evaluate: optional `state -> {name: float}`, run every `eval_every` steps and at the end.
    """

    init_state: Callable[[jax.Array], PyTree]
    train_step: Callable[[PyTree, Batch, jax.Array], tuple[PyTree, Metrics]]
    batches: BatchIterator
    evaluate: Callable[[PyTree], Mapping[str, float]] | None = None


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final state and the metric history."""

    state: PyTree
    step: int
    history: list[dict[str, float]]
    best_step: int | None


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


def apply_updates(params, grads, opt_state, optimizer: optax.GradientTransformation):
    """One optimiser update that also reports the norms the trainer logs.

    Returns:
      (new_params, new_opt_state, {"grad_norm": ‖grads‖, "param_norm": ‖new_params‖}).
    """
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    norms = {"grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
    return params, opt_state, norms


def data_mesh() -> Mesh:
    """A 1-D mesh named "data" over every device of every process."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def shard_batch(batch: Batch, sharding: NamedSharding) -> dict[str, jax.Array]:
    """Splits a global numpy batch over the mesh; each process contributes its own rows."""
    count, index = jax.process_count(), jax.process_index()

    def put(array):
        local = np.split(np.asarray(array), count)[index] if count > 1 else array
        return jax.make_array_from_process_local_data(sharding, local)

    return {name: put(array) for name, array in batch.items()}


def _checkpoint_manager(directory: pathlib.Path) -> ocp.CheckpointManager:
    # Retention (last K plus the best) is done by `_prune`, so that the kept "best" is
    # exactly the step recorded in best.json.
    options = ocp.CheckpointManagerOptions(
        # Synchronous saves: a run killed right after a save must find it complete.
        enable_async_checkpointing=False, create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(directory, options=options)


def _prune(manager: ocp.CheckpointManager, keep_last: int, best_step: int | None) -> None:
    """Deletes every checkpoint but the last `keep_last` and `best_step`."""
    steps = sorted(manager.all_steps())
    keep = set(steps[-keep_last:]) | ({best_step} if best_step is not None else set())
    for step in steps:
        if step not in keep:
            manager.delete(step)


def _abstract(state: PyTree) -> PyTree:
    """Shapes, dtypes and shardings of `state` (arrays or `jax.eval_shape` structs)."""
    default = NamedSharding(data_mesh(), PartitionSpec())  # replicated on every process
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=getattr(x, "sharding", None) or default), state)


def restore_latest(directory: pathlib.Path, state_template: PyTree
                   ) -> tuple[int, PyTree, dict | None]:
    """Restores the newest readable checkpoint under `directory`.

    An unreadable checkpoint (truncated or corrupted files) is moved to
    `directory/../checkpoints_unreadable/STEP`, never deleted, with a warning naming it; the
    next older one is tried.

    Returns:
      (step, state, meta): step 0, `state_template` and None when there is no checkpoint.
    """
    manager = _checkpoint_manager(directory)
    abstract = _abstract(state_template)
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as error:  # orbax raises many types for damaged files
            quarantine = directory.parent / "checkpoints_unreadable" / str(step)
            warnings.warn(
                f"checkpoint {directory / str(step)} (step {step}) cannot be restored "
                f"({type(error).__name__}: {str(error)[:200]}); moved it to {quarantine} and "
                "falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
            if jax.process_index() == 0:
                quarantine.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(directory / str(step)), str(quarantine))
            continue
        manager.close()
        return step, restored.state, dict(restored.meta)
    manager.close()
    return 0, state_template, None


def load_state(workdir, state_template: PyTree, step: int | str = "latest") -> PyTree:
    """Loads a trained state from `workdir/checkpoints` (step number, "latest" or "best").

    Raises:
      FileNotFoundError: naming the directory when it holds no such checkpoint.
    """
    directory = pathlib.Path(workdir).resolve() / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoints in {directory}")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    if step == "latest":
        step = manager.latest_step()
    elif step == "best":
        meta = json.loads((directory.parent / "best.json").read_text())
        step = meta["step"]
    if step is None or step not in manager.all_steps():
        raise FileNotFoundError(f"no checkpoint {step} in {directory} "
                                f"(have {sorted(manager.all_steps())})")
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(state_template))))
    manager.close()
    return restored.state


class MetricWriter:
    """metrics.jsonl plus TensorBoard events; a no-op on processes other than 0."""

    def __init__(self, workdir: pathlib.Path):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tensorboardX import SummaryWriter
            self.jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
            self.tensorboard = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _mean(rows: list[Mapping[str, float]]) -> dict[str, float]:
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


def train(task: Task, config: ml_collections.ConfigDict, workdir) -> TrainResult:
    """Runs (or resumes) training in `workdir` until `config.num_steps` updates are done.

    Args:
      task: the experiment's state, step, batches and evaluator.
      config: `default_config()` fields.
      workdir: the run directory (checkpoints/, metrics.jsonl, tensorboard/, best.json).

    Returns:
      TrainResult with the final state, the step reached (less than num_steps only after
      SIGTERM), the logged metric history, and the best checkpoint's step.

    Raises:
      NonFiniteLossError: at the first NaN/inf loss, naming the step.
    """
    workdir = pathlib.Path(workdir).resolve()
    mesh = data_mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    base_key = jax.random.PRNGKey(config.seed)
    init_key, step_key = jax.random.split(base_key)

    state = jax.jit(task.init_state, out_shardings=replicated)(init_key)
    checkpoint_dir = workdir / "checkpoints"
    step, state, meta = restore_latest(checkpoint_dir, state)
    if meta is not None:
        task.batches.restore(meta["data"])
        print(f"resumed from {checkpoint_dir / str(step)} (step {step})", flush=True)
    manager = _checkpoint_manager(checkpoint_dir)
    step_fn = jax.jit(task.train_step, donate_argnums=0, out_shardings=replicated)

    writer = MetricWriter(workdir)
    history, window = [], []
    best_step, best_value = _read_best(workdir)
    bar = tqdm(total=config.num_steps, initial=step, unit="step", dynamic_ncols=True,
               disable=not (config.progress_bar and jax.process_index() == 0))
    window_start = time.perf_counter()

    def save(step, eval_metrics=None):
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave({"step": step,
                                                          "data": task.batches.state()}))
        if step not in manager.all_steps():
            manager.save(step, args=args, force=True)
        _prune(manager, config.keep_checkpoints, best_step)

    with _Preemption() as preemption:
        try:
            while step < config.num_steps:
                batch = shard_batch(next(task.batches), batch_sharding)
                state, metrics = step_fn(state, batch, jax.random.fold_in(step_key, step))
                # Pulling the metrics syncs every step: it is what lets a NaN be caught at its
                # own step, and forced multi-device CPU runs hang without it (NOTES.md #1).
                metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
                step += 1
                bad = {k: v for k, v in metrics.items() if "loss" in k and not math.isfinite(v)}
                if bad:
                    manager.wait_until_finished()
                    raise NonFiniteLossError(
                        f"non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items())}) at "
                        f"step {step}; the last good checkpoint is step "
                        f"{manager.latest_step()} in {checkpoint_dir}")
                window.append(metrics)
                bar.update(1)
                if step % config.log_every == 0 or step == config.num_steps:
                    row = _mean(window)
                    row["steps_per_sec"] = len(window) / (time.perf_counter() - window_start)
                    writer.write(step, "train", row)
                    history.append({"step": step, **row})
                    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if "loss" in k})
                    window, window_start = [], time.perf_counter()
                eval_metrics = None
                if task.evaluate is not None and (
                        step == config.num_steps
                        or (config.eval_every and step % config.eval_every == 0)):
                    eval_metrics = {k: float(v) for k, v in task.evaluate(state).items()}
                    writer.write(step, "eval", eval_metrics)
                    history.append({"step": step, **{f"eval_{k}": v
                                                     for k, v in eval_metrics.items()}})
                    bar.write(f"step {step}: " + ", ".join(
                        f"{k} {v:.4f}" for k, v in eval_metrics.items()))
                    best_step, best_value = _update_best(
                        workdir, config, step, eval_metrics, best_step, best_value)
                if (step % config.checkpoint_every == 0 or step == config.num_steps
                        or eval_metrics is not None or preemption.requested):
                    save(step, eval_metrics)
                if preemption.requested:
                    bar.write(f"SIGTERM: saved step {step} and stopped")
                    break
        finally:
            manager.wait_until_finished()
            manager.close()
            bar.close()
            writer.close()
    return TrainResult(state=state, step=step, history=history, best_step=best_step)


def _read_best(workdir: pathlib.Path) -> tuple[int | None, float | None]:
    path = workdir / "best.json"
    if not path.exists():
        return None, None
    best = json.loads(path.read_text())
    return best["step"], best["value"]


def _update_best(workdir, config, step, eval_metrics, best_step, best_value):
    """Records in best.json the step whose `best_metric` is best so far."""
    if not config.best_metric:
        return best_step, best_value
    if config.best_metric not in eval_metrics:
        raise KeyError(f"best_metric {config.best_metric!r} is not among the evaluation "
                       f"metrics {sorted(eval_metrics)}")
    value = eval_metrics[config.best_metric]
    better = (best_value is None or (value > best_value if config.best_mode == "max"
                                     else value < best_value))
    if not better:
        return best_step, best_value
    if jax.process_index() == 0:
        (workdir / "best.json").write_text(json.dumps(
            {"step": step, "metric": config.best_metric, "value": value}) + "\n")
    return step, value
