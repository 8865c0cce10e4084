"""Sparse attention patterns against full attention, dense masks and FlexAttention.

The targets are those of docs/sparse_attention.md §8. For each pattern of
`kernels.attention` (docs/sparse_attention.md §1.2, §1.3) the forward pass and the
forward+backward pass (gradient of the sum of the outputs with respect to q, k and v) on
float32 (batch 1, 8 heads × 64) arrays of length n = 1k … 32k, against:

* (a) `jax.nn.dot_product_attention` over the full sequence, every group's baseline;
* (b) the same pattern as a dense (n, n) boolean mask passed to `jax.nn.dot_product_attention`;
* (c) PyTorch FlexAttention (`flex_attention` with the pattern's `mask_mod` and its block
  mask, under `torch.compile`), forward only: it has no CPU backward (docs/sparse_attention.md §8).

"efficient" is `kernels.attention.attention` as a user gets it: on CPU, Atrous's dense
residue groups, Local's band and the local parts of Sparse and Strided run in the C++ kernel
`kernels/cpu/band_attention.cc` (when the machine has a compiler, else in XLA, which the run
notes). For those four, "in XLA" is the same function with ``implementation="xla"`` (the
path GPUs and TPUs take), so the kernel's own gain is measured in the same run.

The patterns: Atrous(8), Local(64), Sparse(r), Strided(r) and Fixed(r, 8), r = round(√n).

Useful FLOPs count only the allowed query–key pairs P (`allowed_pairs`, exact): the forward
pass is two matmuls, QKᵀ and PV, 2·D FLOPs per pair each, so 4·P·D·H; the backward pass has
four (dV = PᵀdO, dP = dO·Vᵀ, dQ = dS·K, dK = dSᵀ·Q), so forward+backward counts 3× the
forward. A recomputing (flash-style) backward does more work than that; the extra is overhead,
not counted. A 4096² float32 matmul measured in the same run (at its start and end) gives
the machine's reference GFLOP/s.

Memory: XLA's compiled temp bytes per row. A dense path needs (H, n, n) float32 logits,
n²·4·H bytes; no array of an efficient path may be that large (the target: no n×n buffer).
Before a dense row runs, its compiled memory analysis is read and the row is skipped, with a
note, when it would need more than `MEMORY_BUDGET_BYTES` (docs/sparse_attention.md §8: full
fwd+bwd needs about 8 GiB at n = 8192, 32 GiB at 16384). The efficient paths are linear in n apart
from Atrous's (n/r)² per residue group, chunked by the kernel.

Scope, for run time on a shared 2-core machine (`in_scope`; notes say what was left out):
(a) forward at every length that fits, forward+backward up to n = 8192; (b) forward up to
4096, forward+backward up to 2048, and both for Local (its target) up to 8192; (c) from
n = 4096, where its target is. Beyond that, a row expected to take more than `MAX_CALL_S` a
call is skipped with a note, except at n = 8192, where the targets are stated.

The machine is shared, so every comparison is made inside one group, measured back to back,
and each row's repeats are chosen from the time the same path took at the previous length
(`_Pacer`): slow rows run once. Run: `python launch.py bench attention`.
"""

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks import harness
from kernels import attention
from kernels.cpu import band_attention as cpu_band

HEADS, HEAD_DIM = 8, 64                 # the targets' size: batch 1, 8 heads × 64
QUICK_HEADS, QUICK_HEAD_DIM = 2, 16
FULL_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
# Quick: long enough that Local(64)'s band (a 192-key window) is well under n, so that "no n×n
# buffer" is a real test (at n = 512 the band is a third of the sequence).
QUICK_LENGTHS = (1024, 2048)
MATMUL_SIZE, QUICK_MATMUL_SIZE = 4096, 512
ATROUS_RATE = 8
LOCAL_RADIUS = 64
FIXED_SUMMARY = 8
FAMILIES = ("Atrous", "Local", "Sparse", "Strided", "Fixed")
KERNEL_FAMILIES = ("Atrous", "Local", "Sparse", "Strided")  # timed with and without the kernel
FWD, FWD_BWD = "fwd", "fwd+bwd"

# Sizes: the machine has 24 GiB shared with other jobs; one case may use at most this much.
MEMORY_BUDGET_BYTES = 12 << 30
# Scope of the slow comparators on the full run (`in_scope`): each dense row is a quadratic
# pass, and a dense mask costs what (a) costs at every length (it skips no work).
FULL_FWD_BWD_MAX_LENGTH = 8192          # (a) fwd+bwd: about 17 s a call at 8192, 1 repeat
MASK_FWD_MAX_LENGTH = 4096              # (b) forward, all patterns
MASK_FWD_BWD_MAX_LENGTH = 2048          # (b) fwd+bwd, all patterns
MASK_LOCAL_MAX_LENGTH = 8192            # (b) for Local, both passes (its target is at 8192)
FLEX_MIN_LENGTH = 4096                  # (c): the target is at n ≥ 4096; 15-35 s compile each
# Run-time caps: a row expected (`_Pacer`) to take longer a call is skipped with a note,
# except at `TARGET_LENGTH`, where the targets need every row.
MAX_CALL_S = {"dense": 60.0, "mask": 60.0, "flex": 30.0, "efficient": 120.0, "xla": 120.0}
ROW_SECONDS = 20.0                      # aim for about this much timed work per row
TARGET_LENGTH = 8192                    # where the speed-up targets are stated
LOCAL_FIT_MIN_LENGTH = 2048             # Local's exponent is fitted over 2k–32k

# The targets of docs/sparse_attention.md §8.
TARGET_ATROUS_SPEEDUP = 15.0
TARGET_LOCAL_SPEEDUP = 40.0
TARGET_SPARSE_SPEEDUP = 8.0
TARGET_LOCAL_EXPONENT = 1.1
TARGET_SPARSE_EXPONENT = 1.6
TARGET_MATMUL_FRACTION = 0.25


# ------------------------------------------------------------------------------------------
# Patterns and their exact useful work.


def sqrt_rate(length: int) -> int:
    """r = round(√n), the Sparse, Strided and Fixed parameter at length n."""
    return max(1, round(math.sqrt(length)))


def patterns(length: int) -> dict[str, attention.Pattern]:
    """The benchmarked pattern of each family in `FAMILIES` at sequence length ``length``."""
    rate = sqrt_rate(length)
    return {"Atrous": attention.Atrous(ATROUS_RATE),
            "Local": attention.Local(LOCAL_RADIUS),
            "Sparse": attention.Sparse(rate),
            "Strided": attention.Strided(rate),
            "Fixed": attention.Fixed(rate, min(FIXED_SUMMARY, rate))}


def label(pattern: attention.Pattern) -> str:
    """Short name, e.g. "Local(64)", "Fixed(91, 8)"."""
    fields = [getattr(pattern, f.name) for f in dataclasses.fields(pattern)]
    if isinstance(pattern, attention.Local) and pattern.dilation == 1:
        fields = fields[:1]
    return f"{type(pattern).__name__}({', '.join(map(str, fields))})"


def _allowed_offsets(pattern: attention.Pattern, offsets: np.ndarray) -> np.ndarray:
    """Bool mask over offsets o = i − j of a translation-invariant pattern.

    The index sets are those of docs/sparse_attention.md §2.
    """
    o = offsets
    if isinstance(pattern, attention.Full):
        return np.ones(o.shape, bool)
    if isinstance(pattern, attention.Atrous):
        return o % pattern.rate == 0
    if isinstance(pattern, attention.Local):
        d = pattern.dilation
        return (np.abs(o) <= pattern.radius * d) & (o % d == 0)
    if isinstance(pattern, attention.Sparse):
        return (np.abs(o) < pattern.rate) | (o % pattern.rate == 0)
    if isinstance(pattern, attention.Strided):
        return (o >= 0) & ((o <= pattern.stride) | (o % pattern.stride == 0))
    raise TypeError(f"pattern {pattern!r} is not translation invariant")


def allowed_pairs(pattern: attention.Pattern, length: int) -> int:
    """Number of (query, key) pairs the pattern allows in a sequence of ``length`` (exact).

    Closed forms from the index sets (docs/sparse_attention.md §2), in O(n): a
    translation-invariant pattern allows n − |o| pairs at each allowed offset o; Fixed(l, c)
    gives query i its own block up to itself (i mod l + 1 keys) and the c summary columns of
    each of its ⌊i/l⌋ earlier blocks.

    Raises:
      ValueError: if ``length`` < 1.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if isinstance(pattern, attention.Fixed):
        i = np.arange(length, dtype=np.int64)
        step = pattern.stride
        return int(np.sum(i % step + 1 + (i // step) * pattern.summary))
    offsets = np.arange(1 - length, length, dtype=np.int64)
    pairs_at_offset = length - np.abs(offsets)
    return int(np.sum(pairs_at_offset[_allowed_offsets(pattern, offsets)]))


def attention_flops(pairs: int, heads: int, head_dim: int, mode: str) -> float:
    """Useful FLOPs: 4·pairs·D·H forward (QKᵀ and PV); forward+backward 3× that."""
    forward = 4.0 * pairs * head_dim * heads
    return forward if mode == FWD else 3.0 * forward


# ------------------------------------------------------------------------------------------
# The functions timed. Arrays are [B, N, H, D] float32; mask [N, N] bool.


def efficient_forward(q, k, v, *, pattern, implementation="auto"):
    """`kernels.attention.attention`: the pattern's index set, no n×n array."""
    return attention.attention(q, k, v, pattern, implementation=implementation)


def full_forward(q, k, v):
    """(a) `jax.nn.dot_product_attention` over the full sequence."""
    return jax.nn.dot_product_attention(q, k, v)


def masked_forward(q, k, v, mask):
    """(b) the pattern as a dense [N, N] boolean mask (broadcast over batch and heads)."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask[None, None])


def forward_and_backward(forward: Callable) -> Callable:
    """``forward(q, k, v, *rest)`` → the gradients of Σ forward(...) with respect to q, k, v."""
    def grads(q, k, v, *rest):
        return jax.grad(lambda q, k, v: jnp.sum(forward(q, k, v, *rest)),
                        argnums=(0, 1, 2))(q, k, v)
    return grads


def flex_mask_mod(pattern: attention.Pattern) -> Callable:
    """The pattern as FlexAttention's ``mask_mod(b, h, q_idx, kv_idx) -> bool tensor``.

    torch's ``%`` on tensors is floor modulo (the sign of the divisor), like Python's and
    numpy's, so (q − kv) % r == 0 means the same as in `kernels.attention`.
    """
    if isinstance(pattern, attention.Atrous):
        rate = pattern.rate
        return lambda b, h, q, kv: (q - kv) % rate == 0
    if isinstance(pattern, attention.Local):
        reach, d = pattern.radius * pattern.dilation, pattern.dilation
        return lambda b, h, q, kv: ((q - kv).abs() <= reach) & ((q - kv) % d == 0)
    if isinstance(pattern, attention.Sparse):
        rate = pattern.rate
        return lambda b, h, q, kv: ((q - kv).abs() < rate) | ((q - kv) % rate == 0)
    if isinstance(pattern, attention.Strided):
        step = pattern.stride
        return lambda b, h, q, kv: (kv <= q) & ((q - kv <= step) | ((q - kv) % step == 0))
    if isinstance(pattern, attention.Fixed):
        step, first_summary = pattern.stride, pattern.stride - pattern.summary
        return lambda b, h, q, kv: (kv <= q) & ((q // step == kv // step)
                                                | (kv % step >= first_summary))
    raise TypeError(f"no mask_mod for pattern {pattern!r}")


def matmul(a, b):
    """The reference: one large float32 matmul."""
    return a @ b


# ------------------------------------------------------------------------------------------
# The run.


class _Pacer:
    """Chooses a row's repeats from the time the same path took at the previous length.

    The estimate scales that time by (n / n_previous)² (exact for the dense paths, an
    overestimate for the sub-quadratic ones), and the row gets about `ROW_SECONDS` of timed
    calls, at least one and at most the report's repeats.
    """

    def __init__(self, max_repeats: int):
        self.max_repeats = max_repeats
        self.last: dict[tuple, tuple[int, float]] = {}

    def expected_s(self, series: tuple, length: int) -> float | None:
        if series not in self.last:
            return None
        last_length, last_s = self.last[series]
        return last_s * (length / last_length) ** 2

    def repeats(self, series: tuple, length: int) -> int:
        expected = self.expected_s(series, length)
        if expected is None:
            return self.max_repeats
        return int(min(self.max_repeats, max(1, ROW_SECONDS // max(expected, 1e-9))))

    def record(self, series: tuple, length: int, row: harness.Row) -> None:
        self.last[series] = (length, row.median_s)


class _Run:
    """State of one benchmark run: the report, sizes, and every row by (mode, n, family, path)."""

    def __init__(self, report: harness.Report, quick: bool, lengths=None):
        self.report, self.quick = report, quick
        self.heads, self.head_dim = (QUICK_HEADS, QUICK_HEAD_DIM) if quick else (HEADS, HEAD_DIM)
        self.lengths = tuple(lengths or (QUICK_LENGTHS if quick else FULL_LENGTHS))
        self.pacer = _Pacer(1 if quick else report.repeats)
        self.rows: dict[tuple[str, int, str, str], harness.Row] = {}
        self.matmul_rows: list[harness.Row] = []
        self.flex = None if quick else _Flex.create(report)
        reason = cpu_band.unsupported_reason(jnp.zeros((1, self.head_dim)),
                                             jnp.zeros((1, self.head_dim)))
        self.band_kernel = "in use" if reason is None else f"NOT in use: {reason}"
        report.note(f"CPU band-attention kernel for the efficient rows: {self.band_kernel}")

    def logit_bytes(self, length: int) -> int:
        """One (H, n, n) float32 buffer: what no efficient path may allocate."""
        return length * length * 4 * self.heads

    def too_slow(self, group: str, impl: str, series: tuple, length: int) -> bool:
        """Whether a row is expected to exceed its path's `MAX_CALL_S` (then noted)."""
        expected, limit = self.pacer.expected_s(series, length), MAX_CALL_S[series[2]]
        if self.quick or length == TARGET_LENGTH or expected is None or expected <= limit:
            return False
        self.report.note(f"{group}: {impl} skipped (run time): about {expected:.0f} s a call "
                         f"expected from n={self.pacer.last[series][0]} (limit {limit:.0f} s)")
        return True

    def time_jax(self, mode: str, length: int, family: str, path: str, impl: str, fn, *args,
                 baseline: bool = False, flops: float | None = None,
                 repeats: int | None = None, check_memory: bool = False):
        """Times one JAX row unless it would not fit; records it under (mode, n, family, path)."""
        group = f"n={length} {mode}"
        if self.too_slow(group, impl, (mode, family, path), length):
            return None
        check_s = 0.0
        if check_memory:
            start = time.perf_counter()
            needed = _compiled_bytes(fn, *args)
            check_s = time.perf_counter() - start
            if needed > MEMORY_BUDGET_BYTES:
                self.report.note(f"{group}: {impl} skipped: its compiled memory analysis needs "
                                 f"{_gib(needed)} (budget {_gib(MEMORY_BUDGET_BYTES)})")
                return None
        series = (mode, family, path)
        row = self.report.time_jax(
            group, impl, fn, *args, baseline=baseline, flops=flops,
            repeats=repeats or self.pacer.repeats(series, length), length=length,
            family=family, path=path, mode=mode, heads=self.heads, head_dim=self.head_dim,
            logit_buffer_bytes=self.logit_bytes(length))
        # The memory check compiled it first and jax cached that: its time is the compile's.
        row.compile_s = max(row.compile_s, check_s)
        self.pacer.record(series, length, row)
        self.rows[mode, length, family, path] = row
        return row


def run(report: harness.Report, quick: bool = False, *,
        lengths: tuple[int, ...] | None = None) -> None:
    """Times every pattern against (a), (b) and (c) at each length, then records findings.

    Args:
      report: where the rows and notes go.
      quick: small sizes (`QUICK_LENGTHS`, 2 heads × 16, one repeat, no FlexAttention).
      lengths: sequence lengths to run instead of the default ones (e.g. to cut the largest
        on a busy machine); ascending.

    Raises:
      ValueError: if ``lengths`` is empty, not ascending or has a length below 2.
    """
    if lengths is not None and (not lengths or list(lengths) != sorted(set(lengths))
                                or lengths[0] < 2):
        raise ValueError(f"lengths must be ascending, distinct and >= 2, got {lengths}")
    state = _Run(report, quick, lengths)
    report.note(f"load average at start: {_load()}; kernels/attention.py modified "
                f"{_mtime(attention.__file__)}")
    report.note(f"CPU float32, batch 1, {state.heads} heads × {state.head_dim}; useful FLOPs "
                "count only allowed pairs: 4·pairs·D·H forward, 3× that forward+backward; "
                "Sparse, Strided and Fixed use r = round(√n); Strided and Fixed are causal by "
                "definition (docs/sparse_attention.md §1.3), the others and the full "
                "baseline (a) bidirectional")
    _time_matmul(state)
    for length in state.lengths:
        _run_length(state, length)
    _time_matmul(state)
    _record_findings(state)
    report.note(f"load average at end: {_load()}")


def _time_matmul(state: _Run) -> None:
    size = QUICK_MATMUL_SIZE if state.quick else MATMUL_SIZE
    a, b = (jax.random.normal(key, (size, size), jnp.float32)
            for key in jax.random.split(jax.random.PRNGKey(1)))
    when = "start" if not state.matmul_rows else "end"
    state.matmul_rows.append(state.report.time_jax(
        f"matmul reference ({when})", f"{size}² @ {size}² float32", matmul, a, b,
        baseline=True, flops=2.0 * size ** 3, repeats=1 if state.quick else 5))


def in_scope(path: str, mode: str, family: str, length: int, quick: bool) -> bool:
    """Whether the run measures this row (full run: see the module docstring's scope)."""
    if quick:
        return path != "flex"
    if path == "dense":
        return mode == FWD or length <= FULL_FWD_BWD_MAX_LENGTH
    if path == "mask":
        if family == "Local":
            return length <= MASK_LOCAL_MAX_LENGTH
        return length <= (MASK_FWD_MAX_LENGTH if mode == FWD else MASK_FWD_BWD_MAX_LENGTH)
    if path == "flex":
        return mode == FWD and length >= FLEX_MIN_LENGTH
    return True  # efficient, xla


def _run_length(state: _Run, length: int) -> None:
    """Every row at one length: forward, then forward+backward (quick: at its last length)."""
    shape = (1, length, state.heads, state.head_dim)
    q, k, v = (jax.random.normal(key, shape, jnp.float32)
               for key in jax.random.split(jax.random.PRNGKey(length), 3))
    pairs = {"Full": length * length}
    pairs.update({family: allowed_pairs(pattern, length)
                  for family, pattern in patterns(length).items()})
    modes = (FWD, FWD_BWD) if not state.quick or length == state.lengths[-1] else (FWD,)
    for mode in modes:
        _time_mode(state, mode, length, q, k, v, pairs)
    if not state.quick:
        _note_scope(state.report, length, modes)


def _time_mode(state: _Run, mode: str, length: int, q, k, v, pairs: dict[str, int]) -> None:
    """The group "n=length mode": (a) as baseline, then each pattern's paths."""
    def wrap(forward):
        return forward if mode == FWD else forward_and_backward(forward)

    def measured(path, family):
        return in_scope(path, mode, family, length, state.quick)

    flops = functools.partial(attention_flops, heads=state.heads, head_dim=state.head_dim,
                              mode=mode)
    # The long dense passes at the target length run once (after their warm-up call).
    slow_repeats = 1 if not state.quick and length >= TARGET_LENGTH else None
    if measured("dense", "Full"):
        row = state.time_jax(mode, length, "Full", "dense", "full dot_product_attention (a)",
                             wrap(full_forward), q, k, v, baseline=True,
                             flops=flops(pairs["Full"]),
                             repeats=slow_repeats if mode == FWD_BWD else None,
                             check_memory=True)
        if row is not None and row.repeats == 1 and not state.quick:
            state.report.note(f"n={length} {mode}: full dot_product_attention (a) timed once "
                              "(repeats=1) after its warm-up call: a long quadratic pass")
    for family, pattern in patterns(length).items():
        useful = flops(pairs[family])
        state.time_jax(mode, length, family, "efficient", f"{label(pattern)} efficient",
                       wrap(functools.partial(efficient_forward, pattern=pattern)), q, k, v,
                       flops=useful)
        if family in KERNEL_FAMILIES:
            state.time_jax(mode, length, family, "xla", f"{label(pattern)} in XLA",
                           wrap(functools.partial(efficient_forward, pattern=pattern,
                                                  implementation="xla")), q, k, v,
                           flops=useful)
        if measured("mask", family):
            mask = attention.dense_mask(pattern, length)
            state.time_jax(mode, length, family, "mask", f"{label(pattern)} dense mask (b)",
                           wrap(masked_forward), q, k, v, mask, flops=useful,
                           repeats=slow_repeats, check_memory=True)
            del mask
        if state.flex is not None and measured("flex", family):
            state.flex.time(state, length, family, pattern, q, k, v, flops=useful)


def _note_scope(report: harness.Report, length: int, modes) -> None:
    """Says which comparator rows the full run leaves out at this length by scope."""
    left_out = []
    for path, name in (("dense", "(a)"), ("mask", "(b)"), ("flex", "(c) FlexAttention")):
        for mode in modes:
            if path == "flex" and mode == FWD_BWD:
                continue  # FlexAttention has no CPU backward: never measured
            families = ("Full",) if path == "dense" else FAMILIES
            missing = [f for f in families if not in_scope(path, mode, f, length, False)]
            if missing == list(families):
                left_out.append(f"{name} {mode}")
            elif missing:
                left_out.append(f"{name} {mode} for {', '.join(missing)}")
    if left_out:
        report.note(f"n={length}: not measured, by scope (run time on a shared 2-core "
                    f"machine): {'; '.join(left_out)}")


class _Flex:
    """PyTorch FlexAttention on CPU, forward only, compiled once per (pattern, length)."""

    def __init__(self, torch, flex_attention, create_block_mask):
        self.torch = torch
        # Compiled, the block mask is reduced tile by tile; eager, create_block_mask holds
        # several (n, n) int64 temporaries of the mask_mod (about 5 GiB at n = 16384, 19 GiB
        # at 32768, measured), which ran this 24 GiB machine out of memory.
        self.create_block_mask = torch.compile(create_block_mask)
        self.compiled = torch.compile(flex_attention, dynamic=False)
        self.broken: str | None = None

    @classmethod
    def create(cls, report: harness.Report):
        """A `_Flex`, or None with a note when torch or FlexAttention is missing."""
        try:
            import torch
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        except ImportError as error:
            report.note(f"(c) FlexAttention not measured: {error}")
            return None
        torch.set_num_threads(2)
        # Every (pattern, length) is one more compile of flex_attention's and
        # create_block_mask's code objects; past the default limit (8) torch would silently
        # fall back to their eager, dense paths.
        torch._dynamo.config.recompile_limit = 128
        torch._dynamo.config.accumulated_recompile_limit = 4096
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        return cls(torch, flex_attention, create_block_mask)

    def time(self, state: _Run, length: int, family: str, pattern, q, k, v, *, flops):
        """Times one forward row (after building its block mask); notes a failure and goes on."""
        report, torch = state.report, self.torch
        group, impl = f"n={length} {FWD}", f"{label(pattern)} FlexAttention (c)"
        if self.broken:
            return
        series = (FWD, family, "flex")
        if state.too_slow(group, impl, series, length):
            return
        # [B, N, H, D] → FlexAttention's [B, H, N, D].
        q_t, k_t, v_t = (torch.from_numpy(np.array(x)).permute(0, 2, 1, 3).contiguous()
                         for x in (q, k, v))
        try:
            start = time.perf_counter()
            block_mask = self.create_block_mask(flex_mask_mod(pattern), None, None, length,
                                                length, device="cpu")
            block_mask_s = time.perf_counter() - start

            def call():
                with torch.no_grad():
                    return self.compiled(q_t, k_t, v_t, block_mask=block_mask)

            row = report.time_call(group, impl, call, flops=flops,
                                   repeats=state.pacer.repeats(series, length),
                                   shapes=f"float32{list(q_t.shape)} (B, H, N, D)",
                                   length=length, family=family, path="flex", mode=FWD,
                                   block_mask_s=block_mask_s,
                                   block_sparsity=float(block_mask.sparsity()))
        except Exception as error:  # a compile failure on this machine: say so, go on
            self.broken = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            report.note(f"(c) FlexAttention failed at n={length} {label(pattern)}, not measured "
                        f"further: {self.broken}")
            return
        state.pacer.record(series, length, row)
        state.rows[FWD, length, family, "flex"] = row


# ------------------------------------------------------------------------------------------
# Findings: the numbers the targets are stated on (the report's writer gives the verdicts).


def _record_findings(state: _Run) -> None:
    report, rows = state.report, state.rows
    target_length = TARGET_LENGTH if not state.quick else max(state.lengths)
    matmul_gflops = max(row.gflops_per_s for row in state.matmul_rows)
    measured = " / ".join(f"{row.gflops_per_s:.0f}" for row in state.matmul_rows)
    report.note(f"matmul reference: {measured} GFLOP/s (start / end); fractions below use the "
                f"larger, {matmul_gflops:.0f}")

    def ratio(mode, family, slower_path, slower_family=None):
        slow = rows.get((mode, target_length, slower_family or family, slower_path))
        fast = rows.get((mode, target_length, family, "efficient"))
        return None if slow is None or fast is None else slow.median_s / fast.median_s

    def times(value):
        return "—" if value is None else f"{value:.1f}×"

    n = f"n={target_length}"
    # Speed-ups against (a) and (b).
    for family, pattern, target in (("Atrous", f"Atrous({ATROUS_RATE})", TARGET_ATROUS_SPEEDUP),
                                    ("Local", f"Local({LOCAL_RADIUS})", TARGET_LOCAL_SPEEDUP),
                                    ("Sparse", "Sparse(√n)", TARGET_SPARSE_SPEEDUP)):
        comparators = [("(a)", "dense", "Full")] + ([("(b)", "mask", None)]
                                                    if family == "Local" else [])
        for name, path, slower_family in comparators:
            report.finding(
                f"{pattern} fwd+bwd, time of {name} / ours at {n}",
                ratio(FWD_BWD, family, path, slower_family), target=target,
                detail=f"fwd {times(ratio(FWD, family, path, slower_family))}")

    # Scaling exponents.
    targets = {"Local": TARGET_LOCAL_EXPONENT, "Sparse": TARGET_SPARSE_EXPONENT}
    for family in ("Full",) + FAMILIES:
        path = "dense" if family == "Full" else "efficient"
        min_length = LOCAL_FIT_MIN_LENGTH if family == "Local" and not state.quick else 0
        name = "full (a)" if family == "Full" else family
        for mode in (FWD, FWD_BWD):
            points = sorted((length, row.median_s) for (m, length, f, p), row in rows.items()
                            if (m, f, p) == (mode, family, path) and length >= min_length)
            if len(points) < 2 and family not in targets:
                continue
            span = (f" over n={points[0][0]}–{points[-1][0]}" if len(points) >= 2
                    else " (too few lengths)")
            report.finding(f"time exponent in n, {name} {mode}{span}",
                           harness.fit_exponent(*zip(*points)) if len(points) >= 2 else None,
                           unit="", target=targets.get(family), at_least=False)

    # Useful GFLOP/s against the matmul.
    for family in FAMILIES:
        for mode in (FWD, FWD_BWD):
            row = rows.get((mode, target_length, family, "efficient"))
            if row is None:
                continue
            report.finding(
                f"useful GFLOP/s of {family} {mode} at {n} / the matmul's",
                100 * row.gflops_per_s / matmul_gflops, unit="%",
                target=100 * TARGET_MATMUL_FRACTION if family in ("Atrous", "Local") else None,
                detail=f"{row.gflops_per_s:.0f} GFLOP/s")

    # The CPU kernel against the same patterns in XLA.
    for family in KERNEL_FAMILIES:
        for mode in (FWD, FWD_BWD):
            if ratio(mode, family, "xla") is not None:
                report.finding(f"CPU kernel ({state.band_kernel}), {family} {mode} at {n}: "
                               "time in XLA / efficient", ratio(mode, family, "xla"),
                               speed=True)

    # Against FlexAttention, forward, n ≥ 4096: every comparison must be a win.
    comparisons = []
    for (mode, length, family, path), flex in sorted(rows.items()):
        if path == "flex" and length >= FLEX_MIN_LENGTH:
            ours = rows[mode, length, family, "efficient"]
            comparisons.append((flex.median_s / ours.median_s, f"{family} n={length}"))
    slowest = min(comparisons, default=None)
    report.finding(
        f"(c) FlexAttention time / ours, fwd, n ≥ {FLEX_MIN_LENGTH}, the least over patterns "
        "and lengths", None if slowest is None else slowest[0], target=1.0, strict=True,
        detail=", ".join(f"{where} {value:.1f}×" for value, where in comparisons))

    # No n×n buffer: no single array of the compiled program as large as the (H, n, n) f32
    # scores (the target); the sum of all temporaries is reported beside it.
    efficient = [(key, row) for key, row in rows.items() if key[3] in ("efficient", "xla")]

    def share(item, field):
        return getattr(item[1], field) / state.logit_bytes(item[0][1])

    def where(item):
        return f"{item[0][2]} n={item[0][1]} {item[0][0]}"

    worst_array = max(efficient, key=lambda item: share(item, "largest_array_bytes"))
    worst_temp = max(efficient, key=lambda item: share(item, "temp_bytes"))
    report.finding(
        "largest array of any efficient path's optimised HLO / (n²·4·H bytes), the n×n buffer",
        share(worst_array, "largest_array_bytes"), unit="", target=1.0, at_least=False,
        strict=True,
        detail=f"at {where(worst_array)}; all temporaries together / (n²·4·H): at most "
               f"{share(worst_temp, 'temp_bytes'):.3f} ({where(worst_temp)}, "
               f"{_gib(worst_temp[1].temp_bytes)})")


# ------------------------------------------------------------------------------------------
# Helpers.


def _compiled_bytes(fn: Callable, *args) -> int:
    """Arguments + outputs + temporaries of ``jax.jit(fn)`` for ``args``, from XLA (no run)."""
    memory = jax.jit(fn).lower(*args).compile().memory_analysis()
    return (memory.temp_size_in_bytes + memory.argument_size_in_bytes
            + memory.output_size_in_bytes)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _mtime(path: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path)))
