"""Sentence-similarity training steps/s: the experiment's JAX step vs an equal PyTorch CPU model.

Target (docs/sentence_similarity.md §8, Benchmarks): at least as fast as PyTorch. Both sides
train the seed's network (§2 of that page) with the seed's settings (§3, §5): Embedding(V, 128)
→ GRU(128) whose last step's output over the right-padded sequence is the sentence vector → L2
normalisation → cosines against unit-norm class centres W (128, C) → AM-Softmax (s = 30,
m = 0.35, target logit replaced) → Adam (lr 1e-3, eps 1e-7) → W's columns renormalised.

* JAX: the experiment's own pieces (`train.build_model`, `make_optimizer`, `make_train_step`,
  `make_init_state`), jitted with the state donated and fed as `trainer.train` does: each step
  takes a fresh numpy batch through `trainer.shard_batch` and pulls its metrics back to the
  host. The step also computes what the trainer logs (accuracy, gradient and parameter norms).
* PyTorch (baseline): `torch.nn.Embedding` → `torch.nn.GRU(batch_first=True)`, the same loss,
  `torch.optim.Adam`, the column renormalisation under `no_grad`; 2 intra-op threads (the
  machine's cores; the baseline) and 1 thread; the numpy batch is wrapped with
  `torch.from_numpy` each step.

A timed call is one whole step: batch in, forward, backward, update, loss back on the host.
Class counts: 27,000 (the training groups of the shared data split) and 90,000 (the seed).

When JAX trails the faster PyTorch row, the same group gets profile rows, each changing one
thing: the GRU scan's ``unroll`` and ``config.loss.chunk_size`` (the experiment's chunked loss,
which also skips the accuracy metric).
"""

import os

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from experiments import trainer
from experiments.benchmarks import harness
from experiments.sentence_similarity import config as experiment_config
from experiments.sentence_similarity import train

# Characters seen ≥ 5 times, about the seed's vocabulary (docs/sentence_similarity.md §4).
VOCAB_SIZE = 3000
FULL_CLASS_COUNTS = (27_000, 90_000)
FULL_STEPS_TIMED = 30         # single steps are short: take the median of many
QUICK = dict(vocab_size=500, num_classes=1000, batch_size=32, steps=2)
# PyTorch intra-op threads: the machine's 2 cores (the baseline), and 1, which on a loaded
# machine can be faster (OpenMP workers wait on each other when the cores are busy).
FULL_TORCH_THREADS = (2, 1)
QUICK_TORCH_THREADS = (1,)
NUM_BATCHES = 8               # distinct batches cycled through, as from an epoch iterator
# Profile knobs timed when JAX trails PyTorch: a GRU scan unroll factor (the default is 1)
# and the chunk size of the experiment's chunked loss (the kernel's default).
PROFILE_UNROLL = 8
PROFILE_CHUNK_SIZE = 2048
# The target (docs/sentence_similarity.md §8): the JAX step at least as fast as
# the faster PyTorch row.
TARGET_SPEED_RATIO = 1.0


def make_batches(vocab_size: int, num_classes: int, batch_size: int, maxlen: int,
                 count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random right-padded batches shaped like the experiment's.

    Returns:
      `count` dicts with "token_ids" (batch, maxlen) int32 (character ids in [2, V), then
      zeros after a random length in [4, maxlen]) and "labels" (batch,) int32 in [0, C).
    """
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        token_ids = rng.integers(2, vocab_size, (batch_size, maxlen), dtype=np.int32)
        lengths = rng.integers(4, maxlen + 1, (batch_size,))
        token_ids[np.arange(maxlen)[None, :] >= lengths[:, None]] = 0
        labels = rng.integers(0, num_classes, (batch_size,), dtype=np.int32)
        batches.append({"token_ids": token_ids, "labels": labels})
    return batches


# ----------------------------------------------------------------------------------------
# JAX: the experiment's step, driven as the trainer drives it.


class JaxTrainer:
    """The experiment's jitted train step with its state, fed numpy batches one at a time."""

    def __init__(self, config, vocab_size: int, num_classes: int, unroll: int = 1,
                 optimizer: optax.GradientTransformation | None = None, seed: int = 0):
        self.model = train.build_model(config, vocab_size, num_classes).clone(unroll=unroll)
        self.optimizer = optimizer or train.make_optimizer(config)
        mesh = trainer.data_mesh()
        replicated = NamedSharding(mesh, PartitionSpec())
        self._batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        init_state = train.make_init_state(self.model, self.optimizer, config.data.maxlen)
        self.state = jax.jit(init_state, out_shardings=replicated)(jax.random.PRNGKey(seed))
        self._step = jax.jit(train.make_train_step(self.model, self.optimizer, config.loss),
                             donate_argnums=0, out_shardings=replicated)
        self._key = jax.random.PRNGKey(seed + 1)

    def step(self, batch: dict[str, np.ndarray]) -> float:
        """One update on a numpy batch; returns the loss before it (a host float)."""
        device_batch = trainer.shard_batch(batch, self._batch_sharding)
        self.state, metrics = self._step(self.state, device_batch, self._key)
        return float(jax.device_get(metrics["loss"]))


def torch_classifier(vocab_size: int, num_classes: int, embed_dim: int = 128,
                     hidden_dim: int = 128):
    """Embedding → GRU → class centres, as a `torch.nn.ModuleDict`.

    Returns:
      A ModuleDict with "embedding" (nn.Embedding(V, D)), "gru" (nn.GRU(D, H,
      batch_first=True)) and the parameter ``class_weights`` (H, C) float32 with unit-norm
      columns; `torch_cosines` runs it.
    """
    import torch
    model = torch.nn.ModuleDict({
        "embedding": torch.nn.Embedding(vocab_size, embed_dim),
        "gru": torch.nn.GRU(embed_dim, hidden_dim, batch_first=True),
    })
    weights = torch.nn.functional.normalize(torch.randn(hidden_dim, num_classes), dim=0)
    model.register_parameter("class_weights", torch.nn.Parameter(weights))
    return model


def torch_cosines(model, token_ids):
    """(B, T) int64 ids → (B, C) cosines; the GRU's output after the last (padded) step."""
    import torch.nn.functional as F
    outputs, _ = model["gru"](model["embedding"](token_ids))     # [B, T, H]
    sentence = F.normalize(outputs[:, -1], dim=1, eps=1e-6)      # [B, H]
    return sentence @ model.class_weights                        # [B, C]


def torch_am_loss(cos, labels, scale: float, margin: float):
    """Mean AM-Softmax cross-entropy with the target logit replaced by s·(cos θ_t − m)."""
    import torch.nn.functional as F
    target = labels[:, None]
    logits = scale * cos.scatter(1, target, cos.gather(1, target) - margin)
    return F.cross_entropy(logits, labels)


class TorchTrainer:
    """The PyTorch baseline: forward, backward, Adam, column renormalisation."""

    def __init__(self, config, vocab_size: int, num_classes: int):
        import torch
        self._torch = torch
        self.model = torch_classifier(vocab_size, num_classes, config.model.embed_dim,
                                      config.model.hidden_dim)
        self.optimizer = torch.optim.Adam(self.model.parameters(),
                                          lr=config.optimizer.learning_rate,
                                          eps=config.optimizer.eps)
        self.scale, self.margin = config.loss.scale, config.loss.margin

    def _loss(self, batch):
        torch = self._torch
        token_ids = torch.from_numpy(batch["token_ids"]).long()
        labels = torch.from_numpy(batch["labels"]).long()
        return torch_am_loss(torch_cosines(self.model, token_ids), labels, self.scale,
                             self.margin)

    def step(self, batch: dict[str, np.ndarray]) -> float:
        """One update; returns the loss before it."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(batch)
        loss.backward()
        self.optimizer.step()
        with self._torch.no_grad():  # Keras unit_norm(axis=0): docs/index.md §2 item 6
            weights = self.model.class_weights
            weights.div_(weights.norm(dim=0, keepdim=True).clamp_min(1e-12))
        return loss.item()

    def loss(self, batch: dict[str, np.ndarray]) -> float:
        """The loss of the current parameters on a batch, without updating."""
        with self._torch.no_grad():
            return self._loss(batch).item()

    def load_jax_params(self, params) -> None:
        """Copies a SentenceClassifier's parameters in (Keras gates z, r, h → torch r, z, n)."""
        torch = self._torch
        gru = params["encoder"]["gru"]

        def put(target, value):
            target.copy_(torch.from_numpy(np.array(value, np.float32)))

        with torch.no_grad():
            put(self.model["embedding"].weight, params["encoder"]["embedding"]["embedding"])
            put(self.model["gru"].weight_ih_l0, _keras_to_torch_gates(gru["kernel"]).T)
            put(self.model["gru"].weight_hh_l0,
                _keras_to_torch_gates(gru["recurrent_kernel"]).T)
            put(self.model["gru"].bias_ih_l0, _keras_to_torch_gates(gru["input_bias"]))
            put(self.model["gru"].bias_hh_l0, _keras_to_torch_gates(gru["recurrent_bias"]))
            put(self.model.class_weights, params["classifier"]["kernel"])


def _keras_to_torch_gates(x) -> np.ndarray:
    """Reorders the last (3H) axis from Keras's (z, r, h) blocks to PyTorch's (r, z, n)."""
    update, reset, candidate = np.split(np.asarray(x), 3, axis=-1)
    return np.concatenate([reset, update, candidate], axis=-1)


# ----------------------------------------------------------------------------------------
# The benchmark.


def benchmark_config(batch_size: int):
    """The experiment's default config (docs/sentence_similarity.md §6) at the given batch size."""
    config = experiment_config.get_config()
    with config.unlocked():
        config.batch_size = batch_size
    return config


def run(report: harness.Report, quick: bool) -> None:
    """Times PyTorch and JAX steps per class count; profiles the JAX step if it trails."""
    default_batch = experiment_config.get_config().batch_size
    sizes = ([(QUICK["num_classes"], QUICK["batch_size"])] if quick
             else [(classes, default_batch) for classes in FULL_CLASS_COUNTS])
    vocab_size = QUICK["vocab_size"] if quick else VOCAB_SIZE
    steps = QUICK["steps"] if quick else FULL_STEPS_TIMED
    report.note(f"load average at start: {_load()}; vocabulary {vocab_size}, maxlen 32, "
                f"median of {steps} single steps per row")
    for num_classes, batch_size in sizes:
        config = benchmark_config(batch_size)
        rows = run_case(report, config, vocab_size, num_classes, steps,
                        QUICK_TORCH_THREADS if quick else FULL_TORCH_THREADS)
        fastest_torch = min((row for name, row in rows.items() if name.startswith("torch")),
                            key=lambda row: row.median_s, default=None)
        if fastest_torch is None:
            continue
        speed = report.finding(
            f"{fastest_torch.group}: time of the faster PyTorch row ({fastest_torch.impl}) / "
            "the JAX step's", fastest_torch.median_s / rows["jax"].median_s,
            target=TARGET_SPEED_RATIO)
        if not speed.met and not quick:
            profile_jax(report, config, vocab_size, num_classes, steps,
                        fastest_torch.group)
    report.note(f"load average at end: {_load()}")


def run_case(report: harness.Report, config, vocab_size: int, num_classes: int,
             steps: int, torch_threads: tuple[int, ...]) -> dict[str, harness.Row]:
    """One group: PyTorch per thread count (when installed; the first is the baseline), JAX.

    Returns:
      The rows by name: "torch2", "torch1", ... per thread count, and "jax".
    """
    group = _group(config, num_classes)
    batches = _batches(config, vocab_size, num_classes)
    rows = {}
    try:
        import torch
    except ImportError:
        report.note(f"{group}: PyTorch not installed, no baseline")
    else:
        default_threads = torch.get_num_threads()
        for threads in torch_threads:
            torch.set_num_threads(threads)
            try:
                torch.manual_seed(0)
                rows[f"torch{threads}"] = report.time_call(
                    group, f"PyTorch {torch.__version__} CPU ({threads} thread"
                           f"{'s' if threads > 1 else ''})",
                    _cycling(TorchTrainer(config, vocab_size, num_classes).step, batches),
                    baseline=threads == torch_threads[0], repeats=steps,
                    shapes=_shapes(config, vocab_size))
            finally:
                torch.set_num_threads(default_threads)
    rows["jax"] = report.time_call(
        group, "JAX experiment step (jit, donated state)",
        _cycling(JaxTrainer(config, vocab_size, num_classes).step, batches),
        repeats=steps, shapes=_shapes(config, vocab_size))
    report.note(f"{group}: " + ", ".join(
        f"{row.impl} {1 / row.median_s:.1f} steps/s" for row in rows.values()))
    return rows


def profile_jax(report: harness.Report, config, vocab_size: int, num_classes: int,
                steps: int, group: str) -> None:
    """Adds JAX rows to `group`, each changing one thing of the experiment's step."""
    chunked = benchmark_config(config.batch_size)
    with chunked.unlocked():
        chunked.loss.chunk_size = PROFILE_CHUNK_SIZE
    variants = {
        f"GRU unroll={PROFILE_UNROLL}": dict(config=config, unroll=PROFILE_UNROLL),
        f"loss chunk_size={PROFILE_CHUNK_SIZE} (no accuracy)": dict(config=chunked),
    }
    batches = _batches(config, vocab_size, num_classes)
    rows = [report.time_call(
        group, f"JAX profile: {label}",
        _cycling(JaxTrainer(vocab_size=vocab_size, num_classes=num_classes, **kwargs).step,
                 batches), repeats=steps, shapes=_shapes(config, vocab_size))
        for label, kwargs in variants.items()]
    report.note(f"{group}: JAX profile: " + ", ".join(
        f"{row.impl.removeprefix('JAX profile: ')} {1 / row.median_s:.1f} steps/s"
        for row in rows))


def _group(config, num_classes: int) -> str:
    return f"C={num_classes:,} B={config.batch_size} train step"


def _batches(config, vocab_size: int, num_classes: int):
    return make_batches(vocab_size, num_classes, config.batch_size, config.data.maxlen,
                        NUM_BATCHES)


def _shapes(config, vocab_size: int) -> str:
    return f"ids int32[{config.batch_size}, {config.data.maxlen}] V={vocab_size}"


def _cycling(step, batches):
    """A zero-argument call running `step` on the next batch, round-robin."""
    position = [0]

    def call():
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        return step(batch)

    return call


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
