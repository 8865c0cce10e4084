"""Margin-softmax loss fwd+bwd at 90k and 1M classes: dense vs chunked vs Partial-FC sampled.

The AM-Softmax loss (s = 30, m = 0.35, docs/sentence_similarity.md §3) of unit embeddings
z (B, 128) against unit class centres W (128, C), differentiated with respect to both (what a
training step needs). Three paths over the same arrays, one group per size:

* dense: ``margin_softmax_loss(z @ W, labels)``, the (B, C) cosine matrix in memory (baseline);
* chunked: `chunked_margin_softmax_loss`, a scan over column chunks of W (kernel default
  2048 columns) with an online log-sum-exp and a recomputing backward pass;
* sampled: `sampled_margin_softmax_loss` over 10% of the classes (the batch's positives plus
  random negatives), Partial FC's usual sample rate. It is an approximation of the loss, not
  the same number; its time includes drawing the sample (a top-k over C random priorities).

The target (docs/sentence_similarity.md §8, Benchmarks): chunked at C = 1M, B = 1024 within
25% of dense's time, with no (B, C) buffer in its compiled memory analysis, i.e. XLA's temp
bytes below B·C·4.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp

from experiments.benchmarks import harness
from kernels import margin_softmax

EMBED_DIM = 128           # the seed's sentence-vector width (docs/sentence_similarity.md §2)
KIND = "am"               # AM-Softmax, s = 30, m = 0.35 (docs/sentence_similarity.md §3)
SAMPLE_RATE = 0.1         # Partial FC's usual rate: 10% of the classes per step
# The chunked path's target ratio to the dense one: within 25% of its time
# (docs/sentence_similarity.md §8).
TARGET_SLOWDOWN = 1.25


@dataclasses.dataclass(frozen=True)
class Case:
    """One problem size; `repeats` caps the timed runs (None: the report's); `has_target`:
    whether the chunked-vs-dense target applies at this size."""

    num_classes: int
    batch: int
    chunk_size: int = margin_softmax.DEFAULT_CHUNK_SIZE
    repeats: int | None = None
    has_target: bool = False

    @property
    def num_sampled(self) -> int:
        return max(self.batch, round(SAMPLE_RATE * self.num_classes))

    @property
    def group(self) -> str:
        return f"C={_count(self.num_classes)} B={self.batch} fwd+bwd"

    @property
    def logit_bytes(self) -> int:
        """Size of one (B, C) float32 buffer."""
        return self.batch * self.num_classes * 4


FULL_CASES = (
    Case(num_classes=90_000, batch=100),                  # the seed's class count and batch
    # Dense needs about 8 GiB of temporaries here and tens of seconds a call on 2 cores:
    # three timed runs per row.
    Case(num_classes=1_000_000, batch=1024, repeats=3, has_target=True),
)
# Quick: B > EMBED_DIM so that a (B, C) buffer is larger than the (D, C) weight gradient the
# chunked backward accumulates, which keeps the "no (B, C) buffer" check meaningful.
QUICK_CASES = (Case(num_classes=5000, batch=256, chunk_size=512, repeats=2, has_target=True),)


def make_inputs(case: Case, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Unit embeddings (B, D) f32, unit-column class centres (D, C) f32, labels (B,) int32."""
    z_key, w_key, label_key = jax.random.split(key, 3)
    embeddings = _unit(jax.random.normal(z_key, (case.batch, EMBED_DIM)), axis=1)
    class_weights = _unit(jax.random.normal(w_key, (EMBED_DIM, case.num_classes)), axis=0)
    labels = jax.random.randint(label_key, (case.batch,), 0, case.num_classes, jnp.int32)
    return embeddings, class_weights, labels


def dense_loss(embeddings, class_weights, labels):
    """Mean loss through the full (B, C) cosine matrix."""
    cos = embeddings @ class_weights                                  # [B, C]
    return jnp.mean(margin_softmax.margin_softmax_loss(cos, labels, kind=KIND))


def chunked_loss(embeddings, class_weights, labels, *, chunk_size: int):
    """Mean loss over column chunks; never a (B, C) buffer."""
    return jnp.mean(margin_softmax.chunked_margin_softmax_loss(
        embeddings, class_weights, labels, kind=KIND, chunk_size=chunk_size))


def sampled_loss(embeddings, class_weights, labels, key, *, num_sampled: int):
    """Mean Partial-FC loss over `num_sampled` classes (positives + random negatives)."""
    return jnp.mean(margin_softmax.sampled_margin_softmax_loss(
        embeddings, class_weights, labels, key, num_sampled=num_sampled, kind=KIND))


def loss_and_grads(loss_fn):
    """`loss_fn(z, W, labels, ...)` → its value and gradients with respect to z and W."""
    return jax.value_and_grad(loss_fn, argnums=(0, 1))


def run(report: harness.Report, quick: bool) -> None:
    """Times the three loss paths at each size and records the memory and time findings."""
    report.note(f"load average at start: {_load()}")
    for case in QUICK_CASES if quick else FULL_CASES:
        run_case(report, case)
    report.note(f"load average at end: {_load()}")


def run_case(report: harness.Report, case: Case) -> dict[str, harness.Row]:
    """Measures one size; returns its rows by path name ("dense", "chunked", "sampled")."""
    embeddings, class_weights, labels = make_inputs(case, jax.random.PRNGKey(0))
    sample_key = jax.random.PRNGKey(1)
    # Useful matmul work: z @ W forward, dz and dW backward (chunked also recomputes the
    # forward in its backward pass; that is overhead, not counted).
    full_flops = 6.0 * case.batch * EMBED_DIM * case.num_classes
    sampled_flops = 6.0 * case.batch * EMBED_DIM * case.num_sampled
    timing = dict(repeats=case.repeats, num_classes=case.num_classes, batch=case.batch)
    rows = {
        "dense": report.time_jax(
            case.group, "dense margin_softmax_loss(z @ W)", loss_and_grads(dense_loss),
            embeddings, class_weights, labels, baseline=True, flops=full_flops, **timing),
        "chunked": report.time_jax(
            case.group, f"chunked (chunk {case.chunk_size})",
            loss_and_grads(functools.partial(chunked_loss, chunk_size=case.chunk_size)),
            embeddings, class_weights, labels, flops=full_flops, **timing),
        "sampled": report.time_jax(
            case.group, f"sampled {case.num_sampled} classes "
                        f"({case.num_sampled / case.num_classes:.0%})",
            loss_and_grads(functools.partial(sampled_loss, num_sampled=case.num_sampled)),
            embeddings, class_weights, labels, sample_key, flops=sampled_flops, **timing),
    }
    for row in rows.values():
        row.extra["logit_buffer_bytes"] = case.logit_bytes
    report.note(f"{case.group}: a (B, C) float32 buffer is {_mib(case.logit_bytes)}; temp "
                "bytes / (B·C·4): " + ", ".join(
                    f"{name} {row.temp_bytes / case.logit_bytes:.3f}"
                    for name, row in rows.items()))
    slowdown = rows["chunked"].median_s / rows["dense"].median_s
    if case.has_target:
        report.finding(f"{case.group}: chunked time / dense time", slowdown,
                       target=TARGET_SLOWDOWN, at_least=False)
        report.finding(f"{case.group}: chunked temp bytes / (B·C·4), a full logit buffer",
                       rows["chunked"].temp_bytes / case.logit_bytes, unit="", target=1.0,
                       at_least=False, strict=True)
    else:
        # No target at this size: a small batch leaves each chunk's matmul too short to hide
        # the scan's per-chunk cost, and the dense buffer is small anyway.
        report.finding(f"{case.group}: chunked time / dense time (no target at this size)",
                       slowdown)
    return rows


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _unit(x: jax.Array, axis: int) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=axis, keepdims=True)


def _count(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
