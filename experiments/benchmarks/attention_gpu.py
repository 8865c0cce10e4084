"""Sparse attention on one GPU: our kernels against cuDNN, XLA, torch SDPA and FlexAttention.

One run on one GPU measures, at n = 8192, 32768 and 65536, batch 1, 8 heads × 64, in bfloat16
and float32, the forward pass and the forward+backward pass (gradients of Σ out² with respect
to q, k and v) of:

* ours: `kernels.attention.attention` for Full, Atrous(8), Local(64) and Sparse(√n), with
  ``implementation`` "pallas" (the Triton kernel of `kernels.pallas.band_attention`), "xla"
  and "auto" (what a user gets; the row's label says what it resolved to);
* cuDNN dense attention, `jax.nn.dot_product_attention(implementation="cudnn")` (bfloat16
  and float16 only), the baseline of every bfloat16 group;
* XLA dense attention, the same call with ``implementation="xla"``: it builds the (H, n, n)
  logits, so it is skipped, with a note, where that would not fit (the baseline of a float32
  group where it fits);
* cuDNN on Atrous(8)'s residue layout: (B, n, H, D) reshaped to (8·B, n/8, H, D) so that
  each residue group mod 8 is one short dense sequence, dense cuDNN attention, reshaped
  back: the same function as Atrous(8), and the best a dense library can do with it;
* PyTorch, in a subprocess (`experiments.benchmarks.torch_attention_gpu`) that writes one
  JSON line per row, merged here into the same report: `scaled_dot_product_attention` over
  the full sequence, and FlexAttention (`flex_attention` under `torch.compile`, with the
  pattern's block mask) for Local(64), Atrous(8) and Sparse(√n). float32 matmuls are TF32
  on both sides (JAX's default precision on a GPU; torch's "high" matmul precision).

Timing: each row is compiled (its compile time reported apart), run once as a warm-up, and
then timed in ``repeats`` samples of k back-to-back calls synchronised at the sample's end,
k chosen so that a sample lasts at least `SAMPLE_S`: the median over samples of the time per
call. Back-to-back calls keep the host's dispatch latency out of the figure for the fast
rows, the same way in JAX and in torch.

Memory: XLA's compiled memory analysis (temporaries, arguments, outputs) per JAX row, exact;
the device's ``peak_bytes_in_use`` after the row (JAX cannot reset it, so the row's own
``extra["peak_rise_bytes"]`` says by how much the row raised the process's peak: 0 when it
stayed under an earlier row's); torch rows reset their peak first, so
``torch.cuda.max_memory_allocated`` is the row's own.

Each forward row's output is compared with ours in XLA for the same pattern, length and
dtype (``extra["rel_error"]``, ‖out − ref‖ / ‖ref‖): every row computes the same function.

Findings (the harness's verdicts, from the rows) at n = 32768 bfloat16 forward+backward:
Full (Pallas) within 1.15× of cuDNN full; Atrous(8) ≥ 6× faster than cuDNN full; Local(64)
≥ 1.5× faster than FlexAttention Local(64); Sparse(181) ≥ 5× faster than cuDNN full and
faster than FlexAttention Sparse(181); and every efficient pattern faster than cuDNN full at
every n ≥ 8192, forward alone too. Beside them, without targets: Pallas against ours in XLA
per pattern (what ``implementation="auto"`` should choose), and cuDNN on the residue layout
against ours for Atrous(8).

``--quick``, and any run on a CPU, measures small sizes through the code paths a CPU has
(Pallas in interpret mode, XLA, XLA dense); cuDNN and torch rows are then left out, each
with a note. Run: `python launch.py bench attention_gpu`; a sized-down run for a short GPU
lease, with a time budget, is `python -m experiments.benchmarks.attention_gpu --help`
(`scripts/gpu_check.sh`).
"""

import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import host_memory
from experiments.benchmarks import attention as cpu_bench
from experiments.benchmarks import harness
from kernels import attention

NAME = "attention_gpu"
BATCH, HEADS, HEAD_DIM = 1, 8, 64
QUICK_HEADS, QUICK_HEAD_DIM = 2, 16
LENGTHS = (8192, 32768, 65536)
# Quick: one length, so a CPU compiles each path once or twice (Pallas interprets slowly).
QUICK_LENGTHS = (64,)
DTYPES = ("bfloat16", "float32")
QUICK_DTYPES = ("bfloat16",)
FAMILIES = ("Full", "Atrous", "Local", "Sparse")
IMPLEMENTATIONS = ("xla", "pallas", "auto")  # xla first: the reference of the rel_error
FLEX_FAMILIES = ("Local", "Sparse", "Atrous")  # the findings' two first
CUDNN_DTYPES = ("bfloat16", "float16")
FWD, FWD_BWD = cpu_bench.FWD, cpu_bench.FWD_BWD
MODES = (FWD, FWD_BWD)
ATROUS_RATE, LOCAL_RADIUS = cpu_bench.ATROUS_RATE, cpu_bench.LOCAL_RADIUS

# Where the targets are stated.
TARGET_LENGTH, TARGET_DTYPE = 32768, "bfloat16"
MIN_FINDING_LENGTH = 8192  # "every efficient pattern faster than cuDNN full at n ≥ 8192"
TARGET_FULL_SLOWDOWN = 1.15  # ours / cuDNN, at most
TARGET_ATROUS_SPEEDUP = 6.0
TARGET_LOCAL_OVER_FLEX = 1.5
TARGET_SPARSE_SPEEDUP = 5.0
# ‖out − ours in XLA‖ / ‖ours in XLA‖ of a forward row: bfloat16 keeps 8 bits of mantissa;
# float32 matmuls are TF32 (10 bits) on a GPU.
TARGET_REL_ERROR = {"bfloat16": 2e-2, "float16": 5e-3, "float32": 5e-3}

# Timing: a sample is k back-to-back calls lasting at least SAMPLE_S; a row gets about ROW_S
# of samples, at least one and at most the report's repeats.
SAMPLE_S, ROW_S = 0.05, 0.5
# Device memory a row may plan for: this share of what the allocator has left; on a CPU a
# fixed amount (jax reports no memory stats there).
MEMORY_SHARE = 0.9
CPU_MEMORY_BYTES = 8 << 30
# The torch subprocess: how long past its own budget it may run before it is stopped.
TORCH_GRACE_S = 30.0
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TORCH_MODULE = "experiments.benchmarks.torch_attention_gpu"

# Paths, in the order rows are measured within a group (and listed in the table).
OURS, CUDNN, CUDNN_RESIDUE, XLA_DENSE = "ours", "cudnn", "cudnn_residue", "xla_dense"
TORCH_SDPA, FLEX = "torch_sdpa", "flex"
JAX_PATHS = (OURS, CUDNN, CUDNN_RESIDUE, XLA_DENSE)
TORCH_PATHS = (FLEX, TORCH_SDPA)
PATH_ORDER = JAX_PATHS + TORCH_PATHS


# ------------------------------------------------------------------------------------------
# What is measured.


@dataclasses.dataclass(frozen=True)
class Scope:
    """The sizes of one run; `make_scope` fills it."""

    lengths: tuple[int, ...]
    dtypes: tuple[str, ...]
    families: tuple[str, ...]
    heads: int
    head_dim: int
    batch: int
    quick: bool

    @property
    def target_length(self) -> int:
        """`TARGET_LENGTH` when measured, else the longest length."""
        return TARGET_LENGTH if TARGET_LENGTH in self.lengths else max(self.lengths)

    @property
    def target_dtype(self) -> str:
        """`TARGET_DTYPE` when measured, else the first dtype."""
        return TARGET_DTYPE if TARGET_DTYPE in self.dtypes else self.dtypes[0]

    @property
    def min_finding_length(self) -> int:
        """The shortest length of the "every pattern faster than cuDNN" finding."""
        return MIN_FINDING_LENGTH if not self.quick else min(self.lengths)


def make_scope(quick: bool, lengths: Iterable[int] | None = None,
               dtypes: Iterable[str] | None = None,
               families: Iterable[str] | None = None) -> Scope:
    """The run's sizes: the defaults of a full or quick run, or the ones given.

    Raises:
      ValueError: on an empty, unsorted or repeated length list, a length that is not a
        multiple of the Atrous rate (the residue layout is a reshape), an unknown dtype or
        family.
    """
    lengths = tuple(lengths or (QUICK_LENGTHS if quick else LENGTHS))
    dtypes = tuple(dtypes or (QUICK_DTYPES if quick else DTYPES))
    families = tuple(families or FAMILIES)
    if (list(lengths) != sorted(set(lengths)) or lengths[0] < ATROUS_RATE
            or any(n % ATROUS_RATE for n in lengths)):
        raise ValueError(f"lengths must be ascending, distinct multiples of {ATROUS_RATE}, "
                         f"got {lengths}")
    for name, given, valid in (("dtype", dtypes, TARGET_REL_ERROR), ("family", families,
                                                                      FAMILIES)):
        unknown = [x for x in given if x not in valid]
        if unknown or not given:
            raise ValueError(f"unknown {name} {unknown or given}; valid: {', '.join(valid)}")
    heads, head_dim = (QUICK_HEADS, QUICK_HEAD_DIM) if quick else (HEADS, HEAD_DIM)
    return Scope(lengths, dtypes, families, heads, head_dim, BATCH, quick)


@dataclasses.dataclass(frozen=True)
class Case:
    """One row to measure: a path (and for ours an implementation) on one group."""

    length: int
    dtype: str
    mode: str
    family: str
    path: str
    implementation: str = ""

    @property
    def group(self) -> str:
        return group_name(self.length, self.dtype, self.mode)


def group_name(length: int, dtype: str, mode: str) -> str:
    """E.g. "n=32768 bf16 fwd+bwd"."""
    short = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}[dtype]
    return f"n={length} {short} {mode}"


def patterns(length: int) -> dict[str, attention.Pattern]:
    """The benchmarked pattern of each family at ``length``: Sparse's rate is round(√n)."""
    return {"Full": attention.Full(), "Atrous": attention.Atrous(ATROUS_RATE),
            "Local": attention.Local(LOCAL_RADIUS),
            "Sparse": attention.Sparse(cpu_bench.sqrt_rate(length))}


def label(family: str, length: int) -> str:
    """E.g. "Sparse(181)"; "Full" for the full pattern."""
    return "Full" if family == "Full" else cpu_bench.label(patterns(length)[family])


def useful_flops(case: Case, scope: Scope) -> float:
    """4·pairs·D·H forward, 3× that forward+backward, over the case's allowed pairs × batch."""
    pattern = patterns(case.length)[case.family]
    pairs = (case.length ** 2 if case.family == "Full"
             else cpu_bench.allowed_pairs(pattern, case.length))
    return scope.batch * cpu_bench.attention_flops(pairs, scope.heads, scope.head_dim,
                                                   case.mode)


def group_priority(length: int, dtype: str, mode: str, scope: Scope) -> tuple:
    """Sort key of the groups: the targets' group first, so a time budget cuts the rest."""
    return (dtype != scope.target_dtype, dtype, length != scope.target_length, length,
            mode != FWD_BWD)


def plan(scope: Scope, backend: str) -> tuple[list[Case], list[Case], list[str]]:
    """The JAX cases and torch cases of a run, in the order they run, and what is left out.

    Args:
      scope: the sizes.
      backend: JAX's default backend ("gpu", "cpu", ...): cuDNN and torch need a GPU.

    Returns:
      (jax_cases, torch_cases, notes): cases ordered by `group_priority`, then by path.
    """
    on_gpu = backend == "gpu"
    notes = []
    if not on_gpu:
        notes.append(f"cuDNN rows not measured: JAX's backend is {backend}, cuDNN needs an "
                     "NVIDIA GPU")
        notes.append(f"torch rows (SDPA, FlexAttention) not measured: JAX's backend is "
                     f"{backend}; they are timed on the GPU only")
    elif any(d not in CUDNN_DTYPES for d in scope.dtypes):
        notes.append("cuDNN rows: bfloat16 and float16 only, none in float32 (its float32 "
                     "groups take XLA dense as baseline where it fits)")
    groups = sorted(((n, d, m) for n in scope.lengths for d in scope.dtypes for m in MODES),
                    key=lambda g: group_priority(*g, scope))
    jax_cases, torch_cases = [], []
    for length, dtype, mode in groups:
        case = functools.partial(Case, length, dtype, mode)  # (family, path, implementation)
        jax_cases += [case(f, OURS, i) for f in scope.families for i in IMPLEMENTATIONS]
        if on_gpu and dtype in CUDNN_DTYPES:
            jax_cases.append(case("Full", CUDNN))
            if "Atrous" in scope.families:
                jax_cases.append(case("Atrous", CUDNN_RESIDUE))
        jax_cases.append(case("Full", XLA_DENSE))  # the largest: last in its group
        if on_gpu:
            torch_cases += [case(f, FLEX) for f in FLEX_FAMILIES if f in scope.families]
            torch_cases.append(case("Full", TORCH_SDPA))
    return jax_cases, torch_cases, notes


def impl_label(case: Case, resolved: str | None = None) -> str:
    """The row's implementation column, e.g. "Local(64) ours (pallas)"."""
    name = label(case.family, case.length)
    if case.path == OURS:
        how = case.implementation
        return f"{name} ours ({how if resolved in (None, how) else f'{how} = {resolved}'})"
    return {CUDNN: "full cuDNN (jax.nn)", XLA_DENSE: "full XLA dense (jax.nn)",
            CUDNN_RESIDUE: f"{name} cuDNN on residue layout", TORCH_SDPA: "full torch SDPA",
            FLEX: f"{name} FlexAttention"}[case.path]


def case_extra(case: Case, scope: Scope) -> dict[str, Any]:
    """The JSON columns every row of a case carries (what `row_key` reads back)."""
    return dict(length=case.length, dtype=case.dtype, mode=case.mode, family=case.family,
                path=case.path, implementation=case.implementation, batch=scope.batch,
                heads=scope.heads, head_dim=scope.head_dim)


def row_key(row: harness.Row) -> tuple | None:
    """(length, dtype, mode, family, path, implementation) of a row of this benchmark."""
    extra = row.extra
    if "path" not in extra:
        return None
    return (extra["length"], extra["dtype"], extra["mode"], extra["family"], extra["path"],
            extra.get("implementation", ""))


# ------------------------------------------------------------------------------------------
# The functions timed. Arrays are [B, N, H, D].


def ours(q, k, v, *, pattern, implementation):
    """`kernels.attention.attention` with the given implementation."""
    return attention.attention(q, k, v, pattern, implementation=implementation)


def dense(q, k, v, *, implementation):
    """`jax.nn.dot_product_attention` over the full sequence ("cudnn" or "xla")."""
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)


def residue_dense(q, k, v, *, rate: int, implementation: str = "cudnn"):
    """Atrous(rate) as dense attention over each residue group (cuDNN on a GPU): what
    ``attention(..., implementation="cudnn")`` runs, `attention.residue_dense_attention`."""
    return attention.residue_dense_attention(q, k, v, rate=rate, library=implementation)


def loss_gradients(forward: Callable) -> Callable:
    """``forward(q, k, v)`` → the gradients of Σ out² (in float32) with respect to q, k, v."""
    def loss(q, k, v):
        return jnp.sum(jnp.square(forward(q, k, v).astype(jnp.float32)))
    return jax.grad(loss, argnums=(0, 1, 2))


def jax_function(case: Case) -> Callable:
    """The function of q, k, v a JAX case times (forward, or its loss gradients)."""
    pattern = patterns(case.length)[case.family]
    forward = {OURS: functools.partial(ours, pattern=pattern,
                                       implementation=case.implementation),
               CUDNN: functools.partial(dense, implementation="cudnn"),
               XLA_DENSE: functools.partial(dense, implementation="xla"),
               CUDNN_RESIDUE: functools.partial(residue_dense, rate=ATROUS_RATE)}[case.path]
    return forward if case.mode == FWD else loss_gradients(forward)


# ------------------------------------------------------------------------------------------
# Timing, shared with the torch side.


@dataclasses.dataclass
class Timing:
    """What `time_back_to_back` measured."""

    first_s: float          # the warm-up call (first-run allocations; torch: its compile)
    median_s: float         # median over samples of the time per call
    calls_per_sample: int
    repeats: int
    last: Any               # the last call's result


def time_back_to_back(call: Callable[[], Any], sync: Callable[[Any], Any], *,
                      max_repeats: int, sample_s: float = SAMPLE_S,
                      row_s: float = ROW_S) -> Timing:
    """Times ``call`` in samples of k back-to-back calls, synchronised at the sample's end.

    One warm-up call, then one call to estimate t; k = ⌈sample_s / t⌉ and the number of
    samples about row_s / (k·t), within [1, max_repeats].

    Args:
      call: runs the work once and returns its result (asynchronously is fine).
      sync: waits until a result is computed.
      max_repeats: the most samples.
      sample_s, row_s: the least time of a sample, the time of all samples (about).
    """
    start = time.perf_counter()
    sync(call())
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    last = call()
    sync(last)
    estimate = max(time.perf_counter() - start, 1e-6)
    calls = max(1, math.ceil(sample_s / estimate))
    repeats = int(min(max_repeats, max(1, row_s // (calls * estimate))))
    samples = []
    for _ in range(repeats):
        last = None  # frees the previous result before the sample
        start = time.perf_counter()
        for _ in range(calls):
            last = call()
        sync(last)
        samples.append((time.perf_counter() - start) / calls)
    return Timing(first_s, statistics.median(samples), calls, repeats, last)


# ------------------------------------------------------------------------------------------
# The torch side's JSON lines: written by `torch_attention_gpu`, merged here.

ROW_FIELDS = tuple(field.name for field in dataclasses.fields(harness.Row))


def torch_plan(cases: list[Case], scope: Scope, *, max_repeats: int, budget_s: float | None,
               quick: bool) -> dict[str, Any]:
    """The JSON the torch subprocess reads: sizes, budget and one entry per case."""
    entries = []
    for case in cases:
        pattern = patterns(case.length)[case.family]
        entries.append(dict(case=dataclasses.asdict(case), group=case.group,
                            impl=impl_label(case), flops=useful_flops(case, scope),
                            pattern=[type(pattern).__name__,
                                     list(dataclasses.astuple(pattern))],
                            extra=case_extra(case, scope)))
    return dict(batch=scope.batch, heads=scope.heads, head_dim=scope.head_dim,
                max_repeats=max_repeats, budget_s=budget_s, quick=quick, cases=entries)


def row_line(row: harness.Row) -> str:
    """One JSON line for a row (the torch side writes these)."""
    return json.dumps({"row": dataclasses.asdict(row)})


def note_line(text: str) -> str:
    """One JSON line for a note."""
    return json.dumps({"note": text})


def read_torch_lines(lines: Iterable[str], source: str = "torch") -> tuple[
        list[harness.Row], list[str]]:
    """Rows and notes from the torch side's JSON lines; an unreadable line becomes a note.

    Args:
      lines: the file's lines.
      source: named in the note about an unreadable line.

    Returns:
      (rows, notes), in the order of the lines.
    """
    rows, notes = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if "note" in record:
                notes.append(str(record["note"]))
                continue
            fields = record["row"]
            unknown = set(fields) - set(ROW_FIELDS)
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            row = harness.Row(**fields)
            if not (isinstance(row.median_s, (int, float)) and row.median_s > 0):
                raise ValueError(f"median_s must be a positive number, got {row.median_s!r}")
            key = row_key(row)
            if key is None or key[4] not in TORCH_PATHS or key[3] not in FAMILIES \
                    or key[2] not in MODES:
                raise ValueError(f"not a torch row of this benchmark: {key}")
            rows.append(row)
        except (ValueError, KeyError, TypeError) as error:  # json errors are ValueErrors
            notes.append(f"{source}:{number}: line not merged: {error}")
    return rows, notes


def merge_torch_results(report: harness.Report, path) -> list[harness.Row]:
    """Adds the rows and notes of the torch side's JSON lines file to ``report``."""
    path = pathlib.Path(path)
    if not path.exists():
        report.note(f"torch rows: {path.name} was not written")
        return []
    with open(path, encoding="utf-8") as stream:
        rows, notes = read_torch_lines(stream, source=path.name)
    for text in notes:
        report.note(text)
    report.rows.extend(rows)
    return rows


def run_torch(report: harness.Report, cases: list[Case], scope: Scope, *,
              budget_s: float | None) -> None:
    """Runs the torch cases in a subprocess and merges its rows into ``report``.

    A subprocess keeps torch's CUDA context and allocator out of JAX's process; it runs
    before any JAX row, so it finds the GPU's memory free but for JAX's reservation.
    """
    if not cases:
        return
    with tempfile.TemporaryDirectory() as folder:
        plan_path, out_path = pathlib.Path(folder, "plan.json"), pathlib.Path(folder,
                                                                             "torch.jsonl")
        plan_path.write_text(json.dumps(torch_plan(cases, scope, max_repeats=report.repeats,
                                                   budget_s=budget_s, quick=scope.quick)))
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in [environment.get("PYTHONPATH")] if p])
        command = [sys.executable, "-m", TORCH_MODULE, "--plan", str(plan_path),
                   "--out", str(out_path)]
        print(f"torch subprocess: {len(cases)} rows", flush=True)
        try:
            completed = subprocess.run(command, cwd=REPO_ROOT, env=environment, check=False,
                                       timeout=None if budget_s is None
                                       else budget_s + TORCH_GRACE_S)
            if completed.returncode != 0:
                report.note(f"torch subprocess exited with status {completed.returncode}; "
                            "its rows up to then are merged")
        except subprocess.TimeoutExpired:
            report.note(f"torch subprocess stopped after {budget_s + TORCH_GRACE_S:.0f} s; "
                        "its rows up to then are merged")
        merge_torch_results(report, out_path)


# ------------------------------------------------------------------------------------------
# The JAX side.


def memory_budget_bytes() -> int:
    """Bytes a row may plan for: `MEMORY_SHARE` of the allocator's room, or a CPU's fixed."""
    stats = jax.devices()[0].memory_stats()
    if not stats or "bytes_limit" not in stats:
        return CPU_MEMORY_BYTES
    return int(MEMORY_SHARE * (stats["bytes_limit"] - stats.get("bytes_in_use", 0)))


def dense_logit_bytes(length: int, scope: Scope) -> int:
    """One float32 (B, H, n, n) logit buffer: the least XLA dense attention needs."""
    return scope.batch * scope.heads * length * length * 4


def _memory_stats() -> dict:
    return jax.devices()[0].memory_stats() or {}


def _relative_error(out, reference) -> float:
    out, reference = (np.asarray(x, np.float32) for x in (out, reference))
    return float(np.linalg.norm(out - reference) / max(np.linalg.norm(reference), 1e-30))


class _JaxRun:
    """Measures the JAX cases of a run, group by group; notes what it leaves out."""

    def __init__(self, report: harness.Report, scope: Scope, deadline: float | None):
        self.report, self.scope, self.deadline = report, scope, deadline
        self.inputs: tuple | None = None
        self.inputs_of: tuple | None = None
        self.references: dict[tuple, Any] = {}   # (length, dtype, family) → ours in XLA
        self.broken: dict[tuple, str] = {}       # (family, path, impl) → its first error
        self.skipped: dict[str, list[str]] = {}  # reason → rows
        self.max_repeats = 1 if scope.quick else report.repeats

    def arrays(self, case: Case):
        """q, k, v of the case's length and dtype, drawn once per (length, dtype)."""
        if self.inputs_of != (case.length, case.dtype):
            self.inputs, self.references = None, {}
            shape = (self.scope.batch, case.length, self.scope.heads, self.scope.head_dim)
            keys = jax.random.split(jax.random.PRNGKey(case.length), 3)
            self.inputs = tuple(jax.random.normal(key, shape, case.dtype) for key in keys)
            self.inputs_of = (case.length, case.dtype)
        return self.inputs

    def skip(self, reason: str, case: Case) -> None:
        self.skipped.setdefault(reason, []).append(f"{case.group} {impl_label(case)}")

    def measure(self, case: Case) -> harness.Row | None:
        """Compiles, checks the memory, times and records one case; None if left out."""
        if self.deadline is not None and time.perf_counter() > self.deadline:
            self.skip("the run's time budget was spent", case)
            return None
        if (case.family, case.path, case.implementation) in self.broken:
            self.skip(f"{impl_label(case)} failed earlier", case)
            return None
        budget = memory_budget_bytes()
        if case.path == XLA_DENSE and dense_logit_bytes(case.length, self.scope) > budget:
            self.report.note(
                f"{case.group}: {impl_label(case)} skipped: its (B, H, n, n) float32 logits "
                f"alone need {_gib(dense_logit_bytes(case.length, self.scope))} (room "
                f"{_gib(budget)})")
            return None
        try:
            return self._time(case, budget)
        except Exception as error:  # a compile or run failure on this device: say so, go on
            message = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"
            if "RESOURCE_EXHAUSTED" not in message and "out of memory" not in message.lower():
                self.broken[case.family, case.path, case.implementation] = message
            self.report.note(f"{case.group}: {impl_label(case)} failed: {message}")
            return None

    def _time(self, case: Case, budget: int) -> harness.Row | None:
        q, k, v = self.arrays(case)
        start = time.perf_counter()
        compiled = jax.jit(jax_function(case)).lower(q, k, v).compile()
        compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()
        planned = sum(getattr(memory, f"{name}_size_in_bytes", 0) or 0
                      for name in ("temp", "argument", "output"))
        if planned > budget:
            self.report.note(f"{case.group}: {impl_label(case)} skipped: its compiled memory "
                             f"analysis needs {_gib(planned)} (room {_gib(budget)})")
            return None
        before = _memory_stats()
        timing = time_back_to_back(lambda: compiled(q, k, v), jax.block_until_ready,
                                   max_repeats=self.max_repeats,
                                   sample_s=0.0 if self.scope.quick else SAMPLE_S,
                                   row_s=0.0 if self.scope.quick else ROW_S)
        after = _memory_stats()
        resolved = (attention.resolve_implementation(
            case.implementation, platform=jax.default_backend(), dtype=q.dtype,
            head_dim=self.scope.head_dim, pattern=patterns(case.length)[case.family],
            length=case.length) if case.path == OURS else None)
        extra = case_extra(case, self.scope)
        extra.update(calls_per_sample=timing.calls_per_sample, first_call_s=timing.first_s,
                     resolved=resolved, planned_bytes=planned,
                     peak_rise_bytes=(after.get("peak_bytes_in_use", 0)
                                      - before.get("peak_bytes_in_use", 0)) if after else None,
                     rel_error=self._rel_error(case, timing.last))
        row = harness.Row(
            group=case.group, impl=impl_label(case, resolved), median_s=timing.median_s,
            compile_s=compile_s, repeats=timing.repeats,
            temp_bytes=getattr(memory, "temp_size_in_bytes", None),
            largest_array_bytes=harness.largest_hlo_array_bytes(compiled.as_text()),
            argument_bytes=getattr(memory, "argument_size_in_bytes", None),
            output_bytes=getattr(memory, "output_size_in_bytes", None),
            peak_device_bytes=after.get("peak_bytes_in_use"),
            flops=useful_flops(case, self.scope), shapes=f"{q.dtype}{list(q.shape)} ×3",
            device=self.report.device, extra=extra)
        self.report.rows.append(row)
        print(f"  [{row.group}] {row.impl}: {row.median_s * 1e3:.3f} ms (compile "
              f"{compile_s:.2f} s, {timing.repeats}×{timing.calls_per_sample} calls)",
              flush=True)
        return row

    def _rel_error(self, case: Case, out) -> float | None:
        """Forward rows: ‖out − ours in XLA‖ / ‖ours in XLA‖ for the same pattern."""
        if case.mode != FWD:
            return None
        key = (case.length, case.dtype, case.family)
        if case.path == OURS and case.implementation == "xla":
            self.references[key] = out
            return 0.0
        reference = self.references.get(key)
        return None if reference is None else _relative_error(out, reference)

    def note_skipped(self) -> None:
        for reason, rows in self.skipped.items():
            shown = "; ".join(rows[:12]) + (f"; … {len(rows) - 12} more" if len(rows) > 12
                                            else "")
            self.report.note(f"not measured ({reason}), {len(rows)}: {shown}")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


# ------------------------------------------------------------------------------------------
# The run.


def run(report: harness.Report, quick: bool = False, *,
        lengths: Iterable[int] | None = None, dtypes: Iterable[str] | None = None,
        families: Iterable[str] | None = None, time_budget_s: float | None = None,
        torch_budget_s: float | None = None) -> None:
    """Measures every case of the scope, merges the torch rows, records the findings.

    Args:
      report: where rows, notes and findings go.
      quick: small sizes (`QUICK_LENGTHS`, 2 heads × 16, bfloat16, one timed call a row);
        always, when JAX's backend is not a GPU.
      lengths, dtypes, families: instead of the defaults (e.g. to fit a short GPU lease).
      time_budget_s: JAX rows not started within this many seconds are left out (noted);
        the group of the targets runs first. None: no limit.
      torch_budget_s: the same for the torch subprocess (stopped `TORCH_GRACE_S` later).

    Raises:
      ValueError: on sizes `make_scope` refuses, before anything is measured.
    """
    backend = jax.default_backend()
    if backend != "gpu" and not quick:  # Pallas interprets on a CPU: full sizes would take hours
        report.note(f"JAX's backend is {backend}, not a GPU: quick sizes")
        quick = True
    scope = make_scope(quick, lengths, dtypes, families)
    jax_cases, torch_cases, notes = plan(scope, backend)
    report.note(f"batch {scope.batch}, {scope.heads} heads × {scope.head_dim}; n = "
                f"{', '.join(map(str, scope.lengths))}; {', '.join(scope.dtypes)}; fwd+bwd = "
                "gradients of Σ out² w.r.t. q, k, v; Sparse uses r = round(√n); time per call "
                + ("= one call (quick)" if quick else f"= median over samples of ≥ "
                   f"{SAMPLE_S * 1e3:.0f} ms of back-to-back calls"))
    for dtype in scope.dtypes:
        length = scope.lengths[0]
        chosen = {family: attention.resolve_implementation(
            "auto", platform=backend, dtype=dtype, head_dim=scope.head_dim, pattern=pattern,
            length=length) for family, pattern in patterns(length).items()}
        report.note(f"implementation='auto' runs, for {dtype} on {backend}: "
                    + ", ".join(f"{family} {impl!r}" for family, impl in chosen.items()))
    if backend == "gpu":
        report.note("float32 matmuls: TF32 in JAX (default precision) and torch ('high')")
    for text in notes:
        report.note(text)
    run_torch(report, torch_cases, scope, budget_s=torch_budget_s)
    start = time.perf_counter()
    state = _JaxRun(report, scope, None if time_budget_s is None else start + time_budget_s)
    for case in jax_cases:
        state.measure(case)
    state.note_skipped()
    report.note(f"JAX rows took {time.perf_counter() - start:.0f} s")
    order_rows(report)
    mark_baselines(report)
    record_findings(report, scope)
    print_memory(report)


def order_rows(report: harness.Report) -> None:
    """Sorts the rows by group (length, dtype, mode), then path, family and implementation."""
    def key(row):
        found = row_key(row)
        if found is None:
            return (1,)
        length, dtype, mode, family, path, implementation = found
        return (0, length, dtype, MODES.index(mode), PATH_ORDER.index(path),
                FAMILIES.index(family), implementation)
    report.rows.sort(key=key)


def mark_baselines(report: harness.Report) -> None:
    """Each group's baseline: cuDNN full, else XLA dense full, else ours Full in XLA."""
    preference = [("Full", CUDNN, ""), ("Full", XLA_DENSE, ""), ("Full", OURS, "xla")]
    for row in report.rows:
        row.baseline = False
    groups: dict[str, dict[tuple, harness.Row]] = {}
    for row in report.rows:
        key = row_key(row)
        if key is not None:
            groups.setdefault(row.group, {})[key[3:]] = row
    for rows in groups.values():
        chosen = next((rows[p] for p in preference if p in rows), None)
        if chosen is not None:
            chosen.baseline = True


def print_memory(report: harness.Report) -> None:
    """Prints peak device memory per row (the markdown table has no column for it)."""
    measured = [row for row in report.rows if row.peak_device_bytes is not None]
    if not measured:
        return
    print("peak device memory (JAX: process peak after the row, +rise; torch: the row's):")
    for row in measured:
        rise = row.extra.get("peak_rise_bytes")
        print(f"  [{row.group}] {row.impl}: {_gib(row.peak_device_bytes)}"
              + ("" if rise is None else f" (+{_gib(rise)})"), flush=True)


# ------------------------------------------------------------------------------------------
# Findings: numbers from the rows; the harness's writer gives the verdicts.


def record_findings(report: harness.Report, scope: Scope) -> None:
    """The targets at the target group, and the comparisons beside them."""
    rows = {key: row for row in report.rows if (key := row_key(row)) is not None}
    n, dtype = scope.target_length, scope.target_dtype
    where = f"at n={n} {dtype}"
    name = {family: label(family, n) for family in FAMILIES}

    def ratio(numerator: tuple, denominator: tuple, mode: str = FWD_BWD) -> float | None:
        """Time of the numerator's row / the denominator's; rows as (family, path, impl)."""
        top, bottom = (rows.get((n, dtype, mode, *key)) for key in (numerator, denominator))
        return None if top is None or bottom is None else top.median_s / bottom.median_s

    def forward(numerator: tuple, denominator: tuple) -> str:
        value = ratio(numerator, denominator, FWD)
        return f"fwd {'—' if value is None else f'{value:.2f}×'}"

    def pallas(family):
        return (family, OURS, "pallas")

    cudnn = ("Full", CUDNN, "")
    report.finding(f"Full fwd+bwd {where}, time of ours (Pallas) / cuDNN full",
                   ratio(pallas("Full"), cudnn), target=TARGET_FULL_SLOWDOWN, at_least=False,
                   detail=forward(pallas("Full"), cudnn))
    for family, target in (("Atrous", TARGET_ATROUS_SPEEDUP), ("Sparse", TARGET_SPARSE_SPEEDUP)):
        report.finding(f"{name[family]} fwd+bwd {where}, time of cuDNN full / ours (Pallas)",
                       ratio(cudnn, pallas(family)), target=target,
                       detail=forward(cudnn, pallas(family)))
    for family, target, strict in (("Local", TARGET_LOCAL_OVER_FLEX, False),
                                   ("Sparse", 1.0, True)):
        flex = (family, FLEX, "")
        report.finding(f"{name[family]} fwd+bwd {where}, time of FlexAttention / ours (Pallas)",
                       ratio(flex, pallas(family)), target=target, strict=strict,
                       detail=forward(flex, pallas(family)))
    _every_pattern_faster_than_cudnn(report, rows, scope)
    # Beside the targets: what implementation="auto" should pick, and the residue layout.
    for family in FAMILIES:
        xla = (family, OURS, "xla")
        report.finding(f"{name[family]} fwd+bwd {where}, time of ours in XLA / ours in Pallas",
                       ratio(xla, pallas(family)), speed=True, detail=forward(xla, pallas(family)))
    residue = ("Atrous", CUDNN_RESIDUE, "")
    report.finding(f"{name['Atrous']} fwd+bwd {where}, time of cuDNN on the residue layout / "
                   "ours (Pallas)", ratio(residue, pallas("Atrous")), speed=True,
                   detail=forward(residue, pallas("Atrous")))
    for measured in scope.dtypes:
        errors = [(row.extra["rel_error"], f"{row.group} {row.impl}") for row in report.rows
                  if row.extra.get("dtype") == measured and row.extra.get("rel_error") is not None
                  and row_key(row)[4:] != (OURS, "xla")]  # not the reference itself
        worst = max(errors, default=None)
        report.finding(f"{measured} fwd: largest ‖out − ours in XLA‖ / ‖ours in XLA‖ of any JAX "
                       "row, same pattern and n", None if worst is None else 100 * worst[0],
                       unit="%", target=100 * TARGET_REL_ERROR[measured], at_least=False,
                       detail="" if worst is None else f"at {worst[1]}")


def _every_pattern_faster_than_cudnn(report, rows, scope: Scope) -> None:
    """The least of cuDNN full / ours (Pallas) over patterns, lengths ≥ the minimum, modes."""
    dtype = scope.target_dtype
    comparisons, missing = [], []
    for length in (n for n in scope.lengths if n >= scope.min_finding_length):
        for mode in MODES:
            cudnn = rows.get((length, dtype, mode, "Full", CUDNN, ""))
            for family in ("Atrous", "Local", "Sparse"):
                mine = rows.get((length, dtype, mode, family, OURS, "pallas"))
                where = f"{label(family, length)} n={length} {mode}"
                if cudnn is None or mine is None:
                    missing.append(where)
                else:
                    comparisons.append((cudnn.median_s / mine.median_s, where))
    least = min(comparisons, default=None)
    detail = ", ".join(f"{where} {value:.1f}×" for value, where in comparisons)
    if missing:
        detail += ("; " if detail else "") + f"not measured: {', '.join(missing)}"
    report.finding(f"every efficient pattern, {dtype} fwd and fwd+bwd, n ≥ "
                   f"{scope.min_finding_length}: the least time of cuDNN full / ours (Pallas)",
                   None if least is None else least[0], target=1.0, strict=True,
                   detail=detail)


# ------------------------------------------------------------------------------------------
# A sized run from the command line (for a short GPU lease: scripts/gpu_check.sh).


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.benchmarks.attention_gpu [--lengths N ...] [--budget-s S] ...``."""
    parser = argparse.ArgumentParser(prog=f"python -m experiments.benchmarks.{NAME}",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI, smoke)")
    parser.add_argument("--repeats", type=int, default=5, help="the most timed samples a row")
    parser.add_argument("--out", default="runs/bench", help=f"where {NAME}.jsonl/.md go")
    parser.add_argument("--lengths", type=int, nargs="+", help=f"default {LENGTHS}")
    parser.add_argument("--dtypes", nargs="+", choices=tuple(TARGET_REL_ERROR),
                        help=f"default {DTYPES}")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, help="default: all")
    parser.add_argument("--budget-s", type=float, help="time for the JAX rows")
    parser.add_argument("--torch-budget-s", type=float, help="time for the torch rows")
    args = parser.parse_args(argv)
    report = harness.Report(NAME, repeats=args.repeats)
    report.note(f"host memory: keep freed memory {host_memory.keep_freed_memory()} "
                "(experiments/host_memory.py)")
    print(f"benchmark {NAME} on {report.device}", flush=True)
    try:
        run(report, quick=args.quick, lengths=args.lengths, dtypes=args.dtypes,
            families=args.families, time_budget_s=args.budget_s,
            torch_budget_s=args.torch_budget_s)
    except ValueError as error:
        parser.error(str(error))
    path = report.write(args.out)
    print("\n" + report.markdown() + f"\n(written to {path})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
