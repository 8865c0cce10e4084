"""The one training loop every experiment shares.

An experiment hands `train` a `Task`: how to initialise its state, a pure
`train_step(state, batch, key) -> (state, metrics)`, a resumable batch iterator, an optional
evaluator and a fingerprint of what its checkpoints depend on. The loop owns everything else:

* data parallelism over a 1-D `data` mesh of all devices (`NamedSharding`, no pmap): batches
  are split over the mesh, the state is replicated; `jax.distributed.initialize()` is called by
  launch.py when a run spans several hosts, and each process feeds its slice of the batch;
* the step is compiled ahead of time once, with the state donated; its randomness is
  `fold_in(key, step)`, computed inside the step;
* no host round-trip per step: metrics stay on the device and are pulled every `log_every`
  steps (and before every evaluation and checkpoint), each step's own values, so the first
  non-finite metric is still reported with the step that produced it; batches are prepared
  ahead on a background thread and put on the devices before they are needed;
* orbax checkpoints, written asynchronously, every N steps, at the end and on SIGTERM/SIGINT,
  keeping the last K and the best by a named metric; each carries the batch iterator's
  position (a rerun of the same command resumes exactly), the task's fingerprint (a rerun
  with a different model or data stops and says what differs) and a checksum of its arrays
  (a flipped byte is caught on restore); an unreadable or corrupt checkpoint is moved aside
  with a warning and the previous one is used; no checkpoint is written before the metrics
  of every step up to it have been checked finite;
* an exponential moving average of the parameters (`ema_decay`), used for evaluation and
  kept in the checkpoints;
* a lock on the workdir, `metrics.jsonl` (process 0), TensorBoard events, a tqdm bar, and
  `summary.json`: final and best evaluation, steps/s and where the wall time went
  (compilation, the first step, steady steps, evaluation, checkpointing, waiting for data).

Steps are counted from 1: "step k" is the k-th update, and the checkpoint named k holds the
state after k updates.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import pathlib
import queue
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from experiments.errors import Preempted, UserError

PyTree = Any
Batch = Mapping[str, np.ndarray]
Metrics = Mapping[str, jax.Array]

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SYNC_EVERY_STEP = ("auto", "always", "never")


def default_config() -> ml_collections.ConfigDict:
    """The trainer's settings; experiments embed them as `config.trainer`."""
    config = ml_collections.ConfigDict()
    config.num_steps = 1000          # total number of updates
    config.seed = 0                  # initialisation and per-step randomness
    config.log_every = 50            # steps between metric pulls / metrics.jsonl lines
    config.eval_every = 0            # steps between evaluations (0: only at the end)
    config.checkpoint_every = 500    # steps between checkpoints (also at the end, on a signal)
    config.keep_checkpoints = 3      # the last K checkpoints are kept ...
    config.best_metric = ""          # ... plus the best by this evaluation metric ("": none)
    config.best_mode = "max"         # "max" or "min" for best_metric
    config.progress_bar = True       # tqdm bar on process 0
    # Forward and backward in this dtype; parameters, optimizer state, losses, softmaxes,
    # norms and metrics stay float32 (`cast_to_compute`). "float32" or "bfloat16".
    config.compute_dtype = "float32"
    # EMA of the parameters for evaluation and checkpoints: decay min(ema_decay,
    # (1 + t)/(10 + t)) at update t (TensorFlow's ExponentialMovingAverage warm-up). 0: off.
    config.ema_decay = 0.0
    config.prefetch = 2              # batches prepared ahead on a background thread (0: none)
    config.async_checkpointing = True  # orbax writes checkpoints in the background
    # Wait for every step before dispatching the next: "auto" does it only where async
    # dispatch is known to hang (several forced CPU devices: XLA:CPU's all-reduce rendezvous
    # deadlocks with 100+ sharded steps in flight, jax-ml/jax#25861); "always" or "never".
    # Shown resolved ("always"/"never") in the printed config.
    config.sync_every_step = "auto"
    # JAX's persistent compilation cache, so that a rerun or a resumed run does not compile
    # again ("": off). "auto" is $KEXUE_JAX_CACHE/xla or ~/.cache/kexue-jax/xla, shown resolved.
    config.compilation_cache_dir = "auto"
    # glibc keeps freed memory for XLA:CPU's per-call buffers (experiments/host_memory.py);
    # "auto" is on unless $KEXUE_JAX_KEEP_FREED_MEMORY=0. Shown resolved ("on"/"off").
    config.keep_freed_host_memory = "auto"
    return config


def with_epoch_defaults(config: ml_collections.ConfigDict, epochs: int,
                        batches_per_epoch: int) -> ml_collections.ConfigDict:
    """A copy of a trainer config for an experiment counted in epochs: `num_steps` 0 becomes
    epochs × batches_per_epoch, and `eval_every` or `checkpoint_every` 0 becomes once per
    epoch."""
    resolved = config.copy_and_resolve_references()
    with resolved.unlocked():
        if not resolved.num_steps:
            resolved.num_steps = epochs * batches_per_epoch
        if not resolved.eval_every:
            resolved.eval_every = batches_per_epoch
        if not resolved.checkpoint_every:
            resolved.checkpoint_every = batches_per_epoch
    return resolved


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of the trainer config with every "auto" replaced by what this process does."""
    resolved = ml_collections.ConfigDict(config.to_dict())
    if resolved.sync_every_step == "auto":
        forced_cpu = jax.default_backend() == "cpu" and jax.device_count() > 1
        resolved.sync_every_step = "always" if forced_cpu else "never"
    if resolved.compilation_cache_dir == "auto":
        root = os.environ.get("KEXUE_JAX_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kexue-jax")
        resolved.compilation_cache_dir = os.path.join(root, "xla")
    if resolved.keep_freed_host_memory == "auto":
        off = os.environ.get("KEXUE_JAX_KEEP_FREED_MEMORY", "1") == "0"
        resolved.keep_freed_host_memory = "off" if off else "on"
    return resolved


def apply_process_settings(config: ml_collections.ConfigDict) -> None:
    """Applies the process-wide settings of a resolved trainer config (entry points only).

    Turns on JAX's persistent compilation cache in `compilation_cache_dir` (every compiled
    program, however quick to compile) and keeps freed host memory when asked.
    """
    from experiments import host_memory

    if config.keep_freed_host_memory == "on":
        host_memory.keep_freed_memory()
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
      train_step: pure `(state, batch, key) -> (state, metrics)`; metrics are float scalars,
        every one of which is checked finite; "loss", "grad_norm" and "param_norm" should be
        there (see `apply_updates`), so that diverging parameters stop the run.
      batches: the training batches (global batch size; each process keeps its slice).
      evaluate: optional `state -> {name: float}`, run every `eval_every` steps and at the
        end, on the EMA parameters when `ema_decay` is on.
      evaluate_live: with EMA on, also evaluate the live parameters with this function (e.g.
        the evaluator without its plots), as "live_NAME" metrics.
      params_path: where the trained parameters sit in the state (the EMA's target).
      fingerprint: what the checkpoints depend on besides the state's shapes (model config,
        vocabulary or data hashes), JSON-serialisable; resuming against a checkpoint with a
        different fingerprint stops with the differences.
    """

    init_state: Callable[[jax.Array], PyTree]
    train_step: Callable[[PyTree, Batch, jax.Array], tuple[PyTree, Metrics]]
    batches: "BatchIterator"
    evaluate: Callable[[PyTree], Mapping[str, float]] | None = None
    evaluate_live: Callable[[PyTree], Mapping[str, float]] | None = None
    params_path: tuple[str, ...] = ("params",)
    fingerprint: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
      state: the final state (the EMA parameters in place of the live ones when EMA is on).
      step: the step reached.
      history: the logged rows ({"step", metrics...}; evaluation metrics prefixed "eval_").
      best_step: the step of the best checkpoint, or None.
      last_eval: the last evaluation's metrics ({} when there was none).
      best_eval: the best evaluation's metrics ({} when there is no best_metric).
    """

    state: PyTree
    step: int
    history: list[dict[str, float]]
    best_step: int | None
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
    best_eval: dict[str, float] = dataclasses.field(default_factory=dict)


class NonFiniteError(UserError, FloatingPointError):
    """A metric (loss, gradient or parameter norm, ...) became NaN or infinite."""


NonFiniteLossError = NonFiniteError  # the name earlier versions raised


class WorkdirLockedError(UserError):
    """Another live run holds the workdir."""


class FingerprintMismatchError(UserError):
    """The workdir's checkpoints were written by a run with a different model or data."""


class CheckpointError(UserError):
    """A checkpoint asked for does not exist or cannot be read."""


# ------------------------------------------------------------------------------------------
# Pieces experiments use inside their steps.


def apply_updates(params, grads, opt_state, optimizer: optax.GradientTransformation):
    """One optimiser update that also reports the norms the trainer checks and logs.

    Returns:
      (new_params, new_opt_state, {"grad_norm": ‖grads‖, "param_norm": ‖new_params‖}).
    """
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    norms = {"grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(params)}
    return params, opt_state, norms


def compute_dtype(config: ml_collections.ConfigDict):
    """The jnp dtype of `config.compute_dtype` (a trainer config)."""
    return COMPUTE_DTYPES[config.compute_dtype]


def cast_to_compute(tree: PyTree, dtype) -> PyTree:
    """Casts the floating-point leaves of `tree` to `dtype` (integers are left alone).

    Mixed precision: cast the float32 parameters (and float inputs) with this inside the
    loss, so that the forward and backward run in `dtype` while the gradients reaching the
    optimizer are float32 (the cast's transpose casts back); cast logits to float32 before
    a softmax or loss.
    """
    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(cast, tree)


def ema_decay_at(decay: float, step) -> jax.Array:
    """min(decay, (1 + t)/(10 + t)) at update t = 0, 1, …: the warm-up of TensorFlow's
    `ExponentialMovingAverage(num_updates=t)`, so short runs are not dominated by the
    initial weights."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_params: PyTree, params: PyTree, decay) -> PyTree:
    """decay · ema + (1 − decay) · params, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


# Trainer fields a rerun may change and still resume: how long, how often, how it is run.
RESUMABLE_TRAINER_FIELDS = (
    "num_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
    "progress_bar", "prefetch", "async_checkpointing", "sync_every_step",
    "compilation_cache_dir", "keep_freed_host_memory")


# Experiment fields that, like trainer.num_steps, only say how long to train
# (`with_epoch_defaults` turns them into num_steps): a longer rerun continues.
RESUMABLE_LENGTH_FIELDS = ("epochs",)


def config_fingerprint(config: ml_collections.ConfigDict, ignore: tuple[str, ...] = ()
                       ) -> dict[str, Any]:
    """The parts of an experiment's config that its checkpoints depend on, as a flat dict.

    Everything but the trainer fields a rerun may change (`RESUMABLE_TRAINER_FIELDS`), the
    run's length in epochs (`RESUMABLE_LENGTH_FIELDS`) and the dotted keys in `ignore` (e.g.
    "mode", paths read only after training).
    """
    skipped = ({f"trainer.{name}" for name in RESUMABLE_TRAINER_FIELDS}
               | set(RESUMABLE_LENGTH_FIELDS) | set(ignore))
    flat = _flatten(json.loads(json.dumps(config.to_dict(), default=str)))
    return {key: value for key, value in sorted(flat.items())
            if not any(key == s or key.startswith(s + ".") for s in skipped)}


def array_digest(*arrays: np.ndarray) -> str:
    """A short SHA-256 of arrays' shapes and bytes (a data or vocabulary fingerprint)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# Devices and batches.


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


class Prefetcher:
    """Draws batches on a background thread and puts them on the devices ahead of use.

    Each item carries the iterator's position after its batch, so that a checkpoint records
    the position of the last batch the loop consumed, not of the last one prepared.
    An exception in the iterator (a bad record) is raised in the consumer, at its batch.
    """

    def __init__(self, batches: BatchIterator, sharding: NamedSharding, depth: int):
        self._batches, self._sharding = batches, sharding
        self._depth = depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = None
        if depth > 0:
            self._thread = threading.Thread(target=self._fill, name="prefetch", daemon=True)
            self._thread.start()

    def _produce(self):
        batch = next(self._batches)
        return shard_batch(batch, self._sharding), self._batches.state()

    def _fill(self) -> None:
        while not self._stop.is_set():
            try:
                item = ("ok", self._produce())
            except BaseException as error:  # handed to the consumer, raised at its batch
                item = ("error", error)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[0] == "error":
                return

    def next(self) -> tuple[dict[str, jax.Array], dict]:
        """(the next device batch, the iterator position after it)."""
        if self._thread is None:
            return self._produce()
        kind, value = self._queue.get()
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


# ------------------------------------------------------------------------------------------
# Checkpoints.


def _checkpoint_manager(directory: pathlib.Path, async_save: bool = False
                        ) -> ocp.CheckpointManager:
    # Retention (last K plus the best) is done by `_prune`, so that the kept "best" is
    # exactly the step recorded in best.json. An async save is written to a temporary
    # directory and renamed when complete: a run killed mid-save leaves the previous
    # checkpoint as the latest.
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
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


def _host_copy(x) -> np.ndarray:
    """One full copy of a replicated array on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return np.asarray(x)


def state_checksum(state: PyTree) -> str:
    """CRC-32 of every array of `state` in tree order, as 8 hex digits per leaf joined."""
    digest = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        digest = zlib.crc32(jax.tree_util.keystr(path).encode(), digest)
        digest = zlib.crc32(np.ascontiguousarray(_host_copy(leaf)).tobytes(), digest)
    return f"{digest:08x}"


def state_signature(state: PyTree) -> list[str]:
    """Every leaf's path, shape and dtype: the structural part of a checkpoint's fingerprint."""
    return [f"{jax.tree_util.keystr(path)} {tuple(leaf.shape)} {leaf.dtype}"
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        flat = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def _without_length(fingerprint: Mapping) -> Mapping:
    """A saved fingerprint without the length fields that checkpoints written before they
    left `config_fingerprint` still carry under "config"."""
    config = fingerprint.get("config")
    if not isinstance(config, Mapping):
        return fingerprint
    return {**fingerprint, "config": {key: value for key, value in config.items()
                                      if key not in RESUMABLE_LENGTH_FIELDS}}


def fingerprint_differences(saved: Mapping, current: Mapping) -> list[str]:
    """Human-readable differences between two fingerprints ("model.width: 64 → 128")."""
    saved_flat, current_flat = _flatten(saved), _flatten(current)
    lines = []
    for key in sorted(set(saved_flat) | set(current_flat)):
        old, new = saved_flat.get(key, "(absent)"), current_flat.get(key, "(absent)")
        if old == new:
            continue
        if key == "state_shapes":
            changed = sorted(set(map(str, old or [])) ^ set(map(str, new or [])))
            lines.append(f"state shapes differ, e.g. {'; '.join(changed[:3])}")
        else:
            lines.append(f"{key}: {old!r} → {new!r}")
    return lines


def _quarantine(directory: pathlib.Path, step: int, reason: str) -> None:
    quarantine = directory.parent / "checkpoints_unreadable" / str(step)
    warnings.warn(f"checkpoint {directory / str(step)} (step {step}) cannot be restored "
                  f"({reason}); moved it to {quarantine} and falling back to the previous "
                  "checkpoint", RuntimeWarning, stacklevel=3)
    if jax.process_index() == 0:
        quarantine.parent.mkdir(parents=True, exist_ok=True)
        if quarantine.exists():
            shutil.rmtree(quarantine)
        shutil.move(str(directory / str(step)), str(quarantine))


def _read_checkpoint(manager, step: int, abstract: PyTree) -> tuple[PyTree, dict]:
    """(state, meta) of one checkpoint; raises on unreadable files or a checksum mismatch."""
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    meta = dict(restored.meta)
    if "checksum" in meta and state_checksum(restored.state) != meta["checksum"]:
        raise ValueError("its arrays do not match the checksum written with them")
    return restored.state, meta


def _read_meta(manager, step: int) -> dict:
    return dict(manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta)


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


def restore_latest(directory: pathlib.Path, state_template: PyTree,
                   fingerprint: Mapping | None = None) -> tuple[int, PyTree, dict | None]:
    """Restores the newest readable checkpoint under `directory`.

    A checkpoint whose files cannot be read or decoded, or whose arrays fail their checksum,
    is moved to `directory/../checkpoints_unreadable/STEP`, never deleted, with a warning
    naming it; the next older one is tried.

    Args:
      directory: the checkpoints directory.
      state_template: arrays or shape structs of what a checkpoint holds: {"task": the
        task's state} plus {"ema": the EMA parameters} when the run keeps an EMA.
      fingerprint: when given, a checkpoint written with a different one stops the restore
        with `FingerprintMismatchError` (nothing is moved: the checkpoints are fine, the run
        is a different one).

    Returns:
      (step, state, meta): step 0, `state_template` and None when there is no checkpoint.
    """
    manager = _checkpoint_manager(directory)
    abstract = _abstract(state_template)
    try:
        for step in sorted(manager.all_steps(), reverse=True):
            if fingerprint is not None:
                try:
                    saved = _read_meta(manager, step).get("fingerprint")
                except Exception as error:  # orbax raises many types for damaged files
                    _quarantine(directory, step, _short(error))
                    continue
                if saved is not None and _without_length(saved) != fingerprint:
                    raise FingerprintMismatchError(
                        f"{directory / str(step)} was written by a different run: "
                        + "; ".join(fingerprint_differences(_without_length(saved),
                                                            fingerprint))
                        + f". To start fresh, use another --workdir or delete {directory.parent}")
            try:
                state, meta = _read_checkpoint(manager, step, abstract)
            except Exception as error:
                _quarantine(directory, step, _short(error))
                continue
            return step, state, meta
        return 0, state_template, None
    finally:
        manager.close()


def load_state(workdir, state_template: PyTree, step: int | str = "latest", *,
               ema: bool = True, params_path: tuple[str, ...] = ("params",)) -> PyTree:
    """Loads a trained state from `workdir/checkpoints` (step number, "latest" or "best").

    Reads only: a read-only workdir works. The arrays are checked against their checksum.

    Args:
      workdir: a training run's workdir.
      state_template: arrays or `jax.eval_shape` structs of the task's state.
      step: which checkpoint.
      ema: when the checkpoint holds an EMA of the parameters, return it in their place.
      params_path: where the parameters sit in the state.

    Raises:
      CheckpointError: naming the directory when it holds no such checkpoint, or the
        checkpoint when it cannot be read.
    """
    workdir = pathlib.Path(workdir).resolve()
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoints in {directory}: is {workdir} the workdir of a "
                              "training run?")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        create=False, enable_async_checkpointing=False))
    try:
        if step == "latest":
            step = manager.latest_step()
        elif step == "best":
            best_file = workdir / "best.json"
            if not best_file.exists():
                raise CheckpointError(f"{best_file} is missing: the run recorded no best "
                                      "checkpoint (is trainer.best_metric set?)")
            step = json.loads(best_file.read_text())["step"]
        if step is None or step not in manager.all_steps():
            raise CheckpointError(f"no checkpoint {step} in {directory} "
                                  f"(have {sorted(manager.all_steps())})")
        template = {"task": state_template}
        try:
            saved = _read_meta(manager, step)
            if saved.get("ema"):
                template["ema"] = _get(state_template, params_path)
            state, _ = _read_checkpoint(manager, step, _abstract(template))
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(f"checkpoint {directory / str(step)} cannot be read "
                                  f"({_short(error)})") from error
    finally:
        manager.close()
    if ema and "ema" in state:
        return _set(state["task"], params_path, state["ema"])
    return state["task"]


def _get(tree: PyTree, path: tuple[str, ...]) -> PyTree:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: PyTree, path: tuple[str, ...], value: PyTree) -> PyTree:
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def count_params(state: PyTree) -> int:
    """Number of scalars under every "params" key of `state` (not optimizer state, not EMA)."""
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if any(getattr(entry, "key", None) == "params" for entry in path):
            total += int(np.prod(leaf.shape))
    return total


# ------------------------------------------------------------------------------------------
# Workdir records.


class WorkdirLock:
    """An exclusive lock on a workdir for one training run (process 0 only).

    `fcntl.flock` on WORKDIR/.lock: the kernel releases it when the holder dies, even by
    SIGKILL, so a stale lock is taken over by the next run (which says so); a live holder
    makes a second run stop at once, naming it.
    """

    def __init__(self, workdir: pathlib.Path):
        self.path = workdir / ".lock"
        self._file = None

    def __enter__(self):
        if jax.process_index() != 0:
            return self
        self._file = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise WorkdirLockedError(
                f"{self.path.parent} is in use by a running training ({holder}); wait for it "
                "or use another --workdir") from None
        self._file.seek(0)
        previous = self._file.read().strip()
        if previous:
            print(f"taking over the lock of a run that is no longer running ({previous})",
                  flush=True)
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}, started "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n")
        self._file.flush()
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()  # an empty lock file: released cleanly
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def _json_line(record: Mapping) -> str:
    """One JSON line; non-finite numbers are written as null, never as NaN/Infinity."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value
    return json.dumps(clean(record), allow_nan=False)


class MetricWriter:
    """metrics.jsonl plus TensorBoard events; a no-op on processes other than 0.

    On resume at step s, rows of later steps (written after the checkpoint the run resumed
    from) are dropped, in metrics.jsonl and in TensorBoard (`purge_step`), so that no step
    appears twice.
    """

    def __init__(self, workdir: pathlib.Path, resumed_step: int):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            from tensorboardX import SummaryWriter
            path = workdir / "metrics.jsonl"
            if path.exists():
                kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                        if line.strip() and json.loads(line).get("step", 0) <= resumed_step]
                path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            self.jsonl = open(path, "a", encoding="utf-8")
            self.tensorboard = SummaryWriter(str(workdir / "tensorboard"),
                                             purge_step=resumed_step + 1)

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(_json_line({"step": step, "split": split, **metrics}) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            self.tensorboard.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


class _StopSignals:
    """Turns SIGTERM and SIGINT into a flag the loop checks after each step.

    A second SIGINT (Ctrl-C twice) interrupts at once, without saving.
    """

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def write_run_file(workdir, name: str, text: str) -> None:
    """Writes a file the checkpoints depend on (a vocabulary, the model's sizes).

    A different existing copy is left alone while the workdir holds checkpoints: they were
    trained with it, and the fingerprint check stops a run that does not match them.
    """
    path = pathlib.Path(workdir) / name
    if jax.process_index() != 0 or (path.exists()
                                     and path.read_text(encoding="utf-8") == text):
        return
    checkpoints = pathlib.Path(workdir) / "checkpoints"
    if path.exists() and checkpoints.is_dir() and any(
            entry.name.isdigit() for entry in checkpoints.iterdir()):
        return
    path.write_text(text, encoding="utf-8")


def write_summary(workdir, summary: Mapping[str, Any]) -> None:
    """Writes WORKDIR/summary.json (process 0; non-finite numbers as null)."""
    if jax.process_index() == 0:
        (pathlib.Path(workdir) / "summary.json").write_text(
            json.dumps(json.loads(_json_line(summary)), indent=2) + "\n")


def read_summary(workdir) -> dict[str, Any]:
    """WORKDIR/summary.json, or {} when there is none."""
    path = pathlib.Path(workdir) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update_summary(workdir, **fields) -> dict[str, Any]:
    """Adds fields (e.g. `results={...}`, the experiment's own figures) to summary.json."""
    summary = {**read_summary(workdir), **fields}
    write_summary(workdir, summary)
    return summary


# ------------------------------------------------------------------------------------------
# The loop.


class _Timer:
    """Wall time per phase of a run; `phase(name)` adds the time spent in its block."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _pull(pending: list[tuple[int, dict]]) -> list[tuple[int, dict[str, float]]]:
    """Host values of the pending steps' metrics, one transfer per metric name."""
    if not pending:
        return []
    names = list(pending[0][1])
    stacked = jax.device_get({name: jnp.stack([metrics[name] for _, metrics in pending])
                              for name in names})
    return [(step, {name: float(stacked[name][i]) for name in names})
            for i, (step, _) in enumerate(pending)]


def _first_non_finite(rows: list[tuple[int, dict[str, float]]]
                      ) -> tuple[int, dict[str, float]] | None:
    for step, metrics in rows:
        bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
        if bad:
            return step, bad
    return None


def _mean(rows: list[Mapping[str, float]]) -> dict[str, float]:
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}


def _read_best(workdir: pathlib.Path, existing_steps: list[int]
               ) -> tuple[int | None, float | None, dict]:
    """best.json's (step, value, metrics), reconciled with the checkpoints that exist."""
    path = workdir / "best.json"
    if not path.exists():
        return None, None, {}
    best = json.loads(path.read_text())
    if best["step"] not in existing_steps:
        warnings.warn(f"{path} names step {best['step']}, which has no checkpoint (have "
                      f"{existing_steps}); the best is tracked afresh", RuntimeWarning,
                      stacklevel=3)
        if jax.process_index() == 0:
            path.unlink()
        return None, None, {}
    return best["step"], best["value"], best.get("metrics", {})


def _is_better(config, value: float, best_value: float | None) -> bool:
    if best_value is None:
        return True
    return value > best_value if config.best_mode == "max" else value < best_value


def train(task: Task, config: ml_collections.ConfigDict, workdir) -> TrainResult:
    """Runs (or resumes) training in `workdir` until `config.num_steps` updates are done.

    Args:
      task: the experiment's state, step, batches, evaluator and fingerprint.
      config: `default_config()` fields ("auto" values are resolved here).
      workdir: the run directory (checkpoints/, metrics.jsonl, tensorboard/, best.json,
        summary.json, .lock).

    Returns:
      TrainResult with the final state, the logged history, and the last and best
      evaluations.

    Raises:
      NonFiniteError: at the first NaN/inf metric, naming the step and the quantity.
      Preempted: after SIGTERM or SIGINT, once the state is saved.
      WorkdirLockedError: another run is training in `workdir`.
      FingerprintMismatchError: the workdir's checkpoints belong to a different run.
    """
    config = resolve_config(config)
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with WorkdirLock(workdir):
        return _train_locked(task, config, workdir)


def _train_locked(task: Task, config, workdir: pathlib.Path) -> TrainResult:
    run_start = time.perf_counter()
    timer = _Timer()
    mesh = data_mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
    use_ema = config.ema_decay > 0

    def init_full_state(key):
        state = task.init_state(key)
        full = {"task": state}
        if use_ema:
            full["ema"] = _get(state, task.params_path)
        return full

    with timer.phase("compilation"):
        state = jax.jit(init_full_state, out_shardings=replicated)(init_key)
    fingerprint = {**json.loads(json.dumps(dict(task.fingerprint), default=str)),
                   "state_shapes": state_signature(state)}
    checkpoint_dir = workdir / "checkpoints"
    with timer.phase("checkpointing"):
        step, state, meta = restore_latest(checkpoint_dir, state, fingerprint)
    if meta is not None:
        task.batches.restore(meta["data"])
        print(f"resumed from {checkpoint_dir / str(step)} (step {step})", flush=True)
    manager = _checkpoint_manager(checkpoint_dir, async_save=config.async_checkpointing)
    best_step, best_value, best_eval = _read_best(workdir, sorted(manager.all_steps()))

    def full_step(full, batch, step_number):
        key = jax.random.fold_in(step_key, step_number)
        task_state, metrics = task.train_step(full["task"], batch, key)
        metrics = {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
        new = {"task": task_state}
        if use_ema:
            decay = ema_decay_at(config.ema_decay, step_number)
            new["ema"] = ema_update(full["ema"], _get(task_state, task.params_path), decay)
        return new, metrics

    def evaluation_state(full):
        return _set(full["task"], task.params_path, full["ema"]) if use_ema else full["task"]

    writer = MetricWriter(workdir, step)
    history: list[dict[str, float]] = []
    pending: list[tuple[int, dict]] = []     # steps dispatched, metrics still on device
    window: list[dict[str, float]] = []      # pulled, not yet logged
    last_eval: dict[str, float] = {}
    start_step = step
    bar = tqdm(total=config.num_steps, initial=step, unit="step", dynamic_ncols=True,
               disable=not (config.progress_bar and jax.process_index() == 0))
    prefetcher = None
    compiled = None
    window_start = time.perf_counter()

    def last_good() -> str:
        latest = manager.latest_step()
        if latest is None:
            return "no checkpoint was written before it"
        return f"the last good checkpoint is step {latest} in {checkpoint_dir}"

    def check_pending():
        """Pulls the pending metrics; raises at the first non-finite step."""
        nonlocal pending
        rows, pending = _pull(pending), []
        bad = _first_non_finite(rows)
        if bad is not None:
            bad_step, values = bad
            manager.wait_until_finished()
            raise NonFiniteError(
                f"non-finite {', '.join(f'{k}={v}' for k, v in values.items())} at step "
                f"{bad_step}; {last_good()}")
        window.extend(metrics for _, metrics in rows)

    def save(step, new_best: bool):
        if step in manager.all_steps():
            return
        host_state = jax.tree.map(_host_copy, state)
        if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host_state)
                   if np.issubdtype(x.dtype, np.floating)):
            raise NonFiniteError(f"the state after step {step} holds NaN or infinite values "
                                 f"although every logged metric was finite; not saving it; "
                                 f"{last_good()}")
        meta = {"step": step, "data": data_position, "fingerprint": fingerprint,
                "checksum": state_checksum(host_state), "ema": use_ema}
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        if new_best:  # best.json names only a finished checkpoint, and the old best goes after
            manager.wait_until_finished()
            _write_best(workdir, config, step, best_value, best_eval)
        _prune(manager, config.keep_checkpoints, best_step)

    data_position = task.batches.state()
    try:
        with _StopSignals() as signals:
            if step < config.num_steps:
                prefetcher = Prefetcher(task.batches, batch_sharding, config.prefetch)
            while step < config.num_steps:
                with timer.phase("data_wait"):
                    batch, next_position = prefetcher.next()
                step_number = jax.device_put(np.uint32(step), replicated)
                if compiled is None:
                    with timer.phase("compilation"):
                        compiled = jax.jit(full_step, donate_argnums=0,
                                           out_shardings=(replicated, replicated)
                                           ).lower(state, batch, step_number).compile()
                    with timer.phase("first_step"):
                        state, metrics = compiled(state, batch, step_number)
                        jax.block_until_ready(metrics)
                else:
                    state, metrics = compiled(state, batch, step_number)
                    if config.sync_every_step == "always":
                        jax.block_until_ready(metrics)
                step += 1
                data_position = next_position
                pending.append((step, metrics))
                bar.update(1)
                evaluate_now = task.evaluate is not None and (
                    step == config.num_steps
                    or (config.eval_every and step % config.eval_every == 0))
                # Read once: a signal arriving later in this step is handled after the next
                # one, so "saved step N" is never said of a step that was not saved.
                stop_signal = signals.received
                checkpoint_now = (step % config.checkpoint_every == 0
                                  or step == config.num_steps or evaluate_now
                                  or bool(stop_signal))
                if step % config.log_every == 0 or step == config.num_steps \
                        or evaluate_now or checkpoint_now:
                    check_pending()
                if window and (step % config.log_every == 0 or step == config.num_steps):
                    row = _mean(window)
                    row["steps_per_sec"] = len(window) / (time.perf_counter() - window_start)
                    writer.write(step, "train", row)
                    history.append({"step": step, **row})
                    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if "loss" in k})
                    window, window_start = [], time.perf_counter()
                eval_metrics = None
                if evaluate_now:
                    with timer.phase("evaluation"):
                        eval_metrics = _evaluate(task, evaluation_state(state), state, use_ema)
                    bad = {k: v for k, v in eval_metrics.items() if not math.isfinite(v)}
                    if bad:
                        raise NonFiniteError(
                            f"non-finite evaluation {', '.join(f'{k}={v}' for k, v in bad.items())}"
                            f" at step {step}")
                    writer.write(step, "eval", eval_metrics)
                    history.append({"step": step, **{f"eval_{k}": v
                                                     for k, v in eval_metrics.items()}})
                    bar.write(f"step {step}: " + ", ".join(
                        f"{k} {v:.4f}" for k, v in eval_metrics.items()))
                    last_eval = eval_metrics
                    if config.best_metric:
                        value = _best_value(config, eval_metrics)
                        if _is_better(config, value, best_value):
                            best_step, best_value, best_eval = step, value, eval_metrics
                if checkpoint_now:
                    with timer.phase("checkpointing"):
                        save(step, new_best=eval_metrics is not None and best_step == step)
                if stop_signal:
                    with timer.phase("checkpointing"):
                        manager.wait_until_finished()
                    bar.write(f"{stop_signal}: saved step {step} and stopped")
                    raise Preempted(step)
    finally:
        if prefetcher is not None:
            prefetcher.close()
        with timer.phase("checkpointing"):
            manager.wait_until_finished()
            _prune(manager, config.keep_checkpoints, best_step)
            manager.close()
        bar.close()
        writer.close()

    result_state = evaluation_state(state)
    previous = read_summary(workdir)
    if step == start_step and previous:  # a finished run rerun: nothing trained, keep its record
        return TrainResult(state=result_state, step=step, history=history,
                           best_step=best_step, last_eval=previous.get("final", {}),
                           best_eval=best_eval)
    seconds = dict(timer.seconds)
    seconds["total"] = time.perf_counter() - run_start
    # Steady steps: everything but compilation, the first step, evaluation and checkpoints
    # (waiting for data included; `data_wait` says how much of it that was).
    seconds["steady_steps"] = max(seconds["total"] - sum(
        seconds.get(k, 0.0) for k in ("compilation", "first_step", "evaluation",
                                       "checkpointing")), 0.0)
    steady_steps = step - start_step - 1
    write_summary(workdir, {
        **{k: v for k, v in previous.items() if k == "results"},
        "step": step,
        "final": last_eval,
        "best": ({"step": best_step, "metric": config.best_metric, "value": best_value,
                  "metrics": best_eval} if best_step is not None else None),
        "steps_per_sec": (steady_steps / seconds["steady_steps"]
                          if steady_steps > 0 and seconds["steady_steps"] > 0 else None),
        "wall_seconds": seconds,
        "steps_this_run": step - start_step,
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "num_devices": jax.device_count(),
        "num_params": count_params(state["task"]),
        "compute_dtype": config.compute_dtype,
        "ema_decay": config.ema_decay,
    })
    return TrainResult(state=result_state, step=step, history=history, best_step=best_step,
                       last_eval=last_eval, best_eval=best_eval)


def _evaluate(task: Task, eval_state, full_state, use_ema: bool) -> dict[str, float]:
    metrics = {k: float(v) for k, v in task.evaluate(eval_state).items()}
    if use_ema and task.evaluate_live is not None:
        metrics.update({f"live_{k}": float(v)
                        for k, v in task.evaluate_live(full_state["task"]).items()})
    return metrics


def _best_value(config, eval_metrics: Mapping[str, float]) -> float:
    if config.best_metric not in eval_metrics:
        raise KeyError(f"best_metric {config.best_metric!r} is not among the evaluation "
                       f"metrics {sorted(eval_metrics)}")
    return eval_metrics[config.best_metric]


def _write_best(workdir: pathlib.Path, config, step: int, value: float,
                metrics: Mapping[str, float]) -> None:
    if jax.process_index() == 0:
        (workdir / "best.json").write_text(_json_line(
            {"step": step, "metric": config.best_metric, "value": value,
             "metrics": dict(metrics)}) + "\n")
