"""Benchmark harness: compile time apart from steady state, medians, memory, ratios.

A benchmark module builds a `Report` and calls `report.time_jax(...)` (or `report.time_call`
for a peer library such as PyTorch) once per (group, implementation). Every group has one
baseline row measured in the same process; the report prints each row's speed-up against it,
so the figures survive a noisy shared machine. Numbers derived from the rows (a ratio, a
fitted exponent) are recorded with `report.finding(...)`, with the target they are held to;
the verdicts ("met", "NOT met", "faster", "slower") are the writers' (`Finding.verdict`,
`Report.markdown`), computed from those numbers. Results go to `OUT/NAME.jsonl` (one JSON
line per row, then one per finding) and `OUT/NAME.md` (the markdown table and findings).
"""

import dataclasses
import json
import math
import pathlib
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax


@dataclasses.dataclass
class Row:
    """One measured implementation in one group."""

    group: str                      # what is compared, e.g. "n=8192 fwd+bwd"
    impl: str                       # e.g. "Local(64) blocked"
    median_s: float                 # steady-state median over `repeats` runs
    compile_s: float | None         # trace + compile (jax) or first call (others)
    repeats: int
    baseline: bool = False
    temp_bytes: int | None = None   # XLA compiled memory analysis (all temporaries)
    largest_array_bytes: int | None = None  # the largest array in the optimised HLO
    argument_bytes: int | None = None
    output_bytes: int | None = None
    peak_device_bytes: int | None = None  # device memory stats, where the device has them
    flops: float | None = None      # useful floating-point operations per call
    shapes: str = ""
    device: str = ""
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def gflops_per_s(self) -> float | None:
        return None if not self.flops else self.flops / self.median_s / 1e9


@dataclasses.dataclass
class Finding:
    """A number derived from the rows, with the target it is held to, if any.

    Attributes:
      what: what was measured, e.g. "Local(64) fwd+bwd, time of (a) / ours at n=8192".
      value: the number; None when the run did not measure it.
      unit: printed after numbers ("×", "%", "" ...).
      target: the bound `value` is held to, or None.
      at_least: the target is a lower bound (value ≥ target) or an upper one (≤).
      strict: the bound excludes equality (> or <).
      speed: `value` is a time ratio, other's time / this one's: the verdict says whether
        this one is faster or slower.
      detail: more measured figures, printed after the verdict.
    """

    what: str
    value: float | None
    unit: str = "×"
    target: float | None = None
    at_least: bool = True
    strict: bool = False
    speed: bool = False
    detail: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None without a target or a value."""
        if self.target is None or self.value is None:
            return None
        if self.at_least:
            return self.value > self.target if self.strict else self.value >= self.target
        return self.value < self.target if self.strict else self.value <= self.target

    def verdict(self) -> str:
        """"met" / "NOT met" (target), "faster" / "slower" (speed), "not measured" or ""."""
        if self.value is None:
            return "not measured"
        if self.target is not None:
            return "met" if self.met else "NOT met"
        if self.speed:
            return "faster" if self.value > 1 else "slower" if self.value < 1 else "as fast"
        return ""

    def markdown(self) -> str:
        """One line: what, the value, the target and the verdict, then the detail."""
        value = "—" if self.value is None else f"{_number(self.value)}{self.unit}"
        bound = ""
        if self.target is not None:
            sign = (">" if self.strict else "≥") if self.at_least else ("<" if self.strict
                                                                        else "≤")
            bound = f" (target {sign} {_number(self.target)}{self.unit})"
        verdict = self.verdict()
        line = f"{self.what}: {value}{bound}{': ' + verdict if verdict else ''}"
        return line + (f"; {self.detail}" if self.detail else "")


def _number(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"


def device_kind() -> str:
    """E.g. "cpu (x86_64, 2 cores)" or "NVIDIA H100 80GB HBM3"."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        import os
        return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    return device.device_kind


def _block(tree):
    return jax.block_until_ready(tree)


def _minor_page_faults() -> int:
    """This process's minor page faults so far (0 where getrusage is missing)."""
    try:
        import resource
    except ImportError:   # not a Unix
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# A warm-up call that faults in fewer fresh pages than this (16 MiB of 4 KiB pages) counts as
# settled: a few pages of Python and profiler bookkeeping, not the call's buffers.
SETTLED_PAGE_FAULTS = 4096
MAX_WARM_UP_CALLS = 5


def warm_up(call: Callable[[], Any], sync: Callable[[Any], Any], *,
            page_faults: Callable[[], int] = _minor_page_faults,
            max_calls: int = MAX_WARM_UP_CALLS, settled_calls: int = 2) -> int:
    """Calls `call` until `settled_calls` calls in a row no longer fault in fresh memory
    (at most `max_calls`).

    With freed memory kept (experiments/host_memory.py), the heap grows over the first
    calls until every buffer of a call finds freed room; a call that grows it pays a page
    fault per 4 KiB, which on these VMs doubled a GAN iteration (1.7 GiB of temporaries:
    450,000 faults, 6 s of system time). One quiet call is not enough: a BERT step faulted
    on every other call for a while. The timed calls should see the settled heap, as a
    long training run does. Returns the number of calls made.
    """
    quiet = 0
    for calls in range(1, max_calls + 1):
        before = page_faults()
        sync(call())
        quiet = quiet + 1 if page_faults() - before < SETTLED_PAGE_FAULTS else 0
        if quiet == settled_calls:
            return calls
    return max_calls


def _median_time(call: Callable[[], Any], repeats: int, sync: Callable[[Any], Any]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_HLO_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")
_HLO_BITS = {"pred": 8, "bf16": 16, "c64": 64, "c128": 128}


def largest_hlo_array_bytes(hlo_text: str) -> int:
    """Bytes of the largest array shape written anywhere in an HLO module's text.

    Every value of a compiled program (parameters, temporaries inside loops, outputs) appears
    with its shape, e.g. ``f32[8,1024,64]``: the largest is what "no n×n buffer" is about,
    where the memory analysis only gives the sum of the temporaries.
    """
    largest = 0
    for dtype, dims in _HLO_ARRAY.findall(hlo_text):
        bits = _HLO_BITS.get(dtype) or int(dtype[1:])
        elements = math.prod(int(d) for d in dims.split(",") if d)
        largest = max(largest, elements * bits // 8)
    return largest


def _shapes(args) -> str:
    leaves = jax.tree.leaves(args)
    return " ".join(f"{getattr(x, 'dtype', type(x).__name__)}{list(getattr(x, 'shape', ()))}"
                    for x in leaves[:6]) + (" ..." if len(leaves) > 6 else "")


class Report:
    """Collects rows for one benchmark and renders them with ratios to each group's baseline."""

    def __init__(self, name: str, repeats: int = 5):
        self.name, self.repeats = name, repeats
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.findings: list[Finding] = []
        self.device = device_kind()

    def time_jax(self, group: str, impl: str, fn: Callable, *args, baseline: bool = False,
                 flops: float | None = None, repeats: int | None = None, **extra) -> Row:
        """Jits `fn`, compiles it for `args`, reads its memory analysis and times it.

        Args:
          group: the comparison this row belongs to.
          impl: the implementation's label.
          fn: a function of `args` (not yet jitted).
          *args: its arguments (arrays or pytrees of arrays).
          baseline: whether this row is the group's baseline.
          flops: useful FLOPs per call, for GFLOP/s.
          repeats: timed runs after the warm-up (`warm_up`; default: the report's).
          **extra: more columns for the JSON line.
        """
        repeats = repeats or self.repeats
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()
        warm_up(lambda: compiled(*args), _block)
        median = _median_time(lambda: compiled(*args), repeats, _block)
        row = Row(group=group, impl=impl, median_s=median, compile_s=compile_s,
                  repeats=repeats, baseline=baseline,
                  temp_bytes=getattr(memory, "temp_size_in_bytes", None),
                  largest_array_bytes=largest_hlo_array_bytes(compiled.as_text()),
                  argument_bytes=getattr(memory, "argument_size_in_bytes", None),
                  output_bytes=getattr(memory, "output_size_in_bytes", None),
                  peak_device_bytes=_peak_device_bytes(), flops=flops,
                  shapes=_shapes(args), device=self.device, extra=extra)
        self.rows.append(row)
        self._echo(row)
        return row

    def time_call(self, group: str, impl: str, call: Callable[[], Any], *,
                  baseline: bool = False, flops: float | None = None,
                  sync: Callable[[Any], Any] = lambda result: result,
                  repeats: int | None = None, shapes: str = "", **extra) -> Row:
        """Times a zero-argument callable (e.g. a PyTorch step); its first call counts as
        the compile, and more warm-up calls follow while the heap still grows (`warm_up`)."""
        repeats = repeats or self.repeats
        start = time.perf_counter()
        sync(call())
        first = time.perf_counter() - start
        warm_up(call, sync)
        median = _median_time(call, repeats, sync)
        row = Row(group=group, impl=impl, median_s=median, compile_s=first, repeats=repeats,
                  baseline=baseline, flops=flops, shapes=shapes, device=self.device,
                  extra=extra)
        self.rows.append(row)
        self._echo(row)
        return row

    def note(self, text: str) -> None:
        """A line printed under the table (e.g. a fitted exponent, a skipped case and why)."""
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def note_op_times(self, seconds: dict[str, float]) -> None:
        """Keeps one traced call's op time by kind (`op_time_by_kind`,
        `torch_op_time_by_kind`) on the last row and notes it under the table."""
        row = self.rows[-1]
        row.extra["op_seconds"] = seconds
        self.note(f"[{row.group}] {row.impl}, op time of one traced call: "
                  + op_time_summary(seconds))

    def finding(self, what: str, value: float | None, **fields) -> Finding:
        """Records a number derived from the rows (see `Finding` for ``fields``)."""
        finding = Finding(what, None if value is None else float(value), **fields)
        self.findings.append(finding)
        print(f"  finding: {finding.markdown()}", flush=True)
        return finding

    def _echo(self, row: Row) -> None:
        print(f"  [{row.group}] {row.impl}: {row.median_s * 1e3:.2f} ms "
              f"(compile {row.compile_s:.2f} s)", flush=True)

    def baseline_of(self, group: str) -> Row | None:
        """The group's baseline row, if it was measured."""
        return next((r for r in self.rows if r.group == group and r.baseline), None)

    def speedup(self, row: Row) -> float | None:
        """Baseline median / this row's median, within the row's group."""
        base = self.baseline_of(row.group)
        return None if base is None else base.median_s / row.median_s

    def markdown(self) -> str:
        """The results as a markdown table, one line per row, notes below."""
        # The peak device memory column only where a device keeps such statistics (GPUs).
        peaks = any(row.peak_device_bytes for row in self.rows)
        lines = [f"### {self.name} ({self.device}, jax {jax.__version__})", "",
                 "| group | implementation | median | × baseline | compile | temp memory "
                 + ("| peak device memory " if peaks else "") + "| GFLOP/s |",
                 "|---|---|---|---|---|---|" + ("---|" if peaks else "") + "---|"]
        for row in self.rows:
            ratio = self.speedup(row)
            peak = f"| {_bytes(row.peak_device_bytes)} " if peaks else ""
            lines.append(
                f"| {row.group} | {row.impl}{' (baseline)' if row.baseline else ''} "
                f"| {_seconds(row.median_s)} | {'' if ratio is None else f'{ratio:.2f}×'} "
                f"| {_seconds(row.compile_s)} | {_bytes(row.temp_bytes)} {peak}"
                f"| {'' if row.gflops_per_s is None else f'{row.gflops_per_s:.1f}'} |")
        lines += [""] + [f"- {note}" for note in self.notes]
        if self.findings:
            lines += ["", "Findings:", ""] + [f"- {f.markdown()}" for f in self.findings]
        return "\n".join(lines)

    def write(self, out_dir) -> pathlib.Path:
        """Writes OUT/NAME.jsonl and OUT/NAME.md; returns the markdown path."""
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / f"{self.name}.jsonl", "w", encoding="utf-8") as stream:
            for row in self.rows:
                record = dataclasses.asdict(row)
                record.update(benchmark=self.name, speedup=self.speedup(row),
                              gflops_per_s=row.gflops_per_s, jax=jax.__version__)
                stream.write(json.dumps(record) + "\n")
            for finding in self.findings:
                record = {"finding": dataclasses.asdict(finding), "met": finding.met,
                          "verdict": finding.verdict(), "benchmark": self.name}
                stream.write(json.dumps(record) + "\n")
        path = out_dir / f"{self.name}.md"
        path.write_text(self.markdown() + "\n")
        return path


def _peak_device_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.2f} s"


def _bytes(value: int | None) -> str:
    if value is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024


# ------------------------------------------------------------------------------------------
# Where a compiled program's time goes (CPU): the profiler's per-HLO-op events, by kind.

OP_KINDS = ("matmuls and convolutions", "custom calls", "data movement",
            "elementwise and reductions")
_MOVEMENT = {"parameter", "copy", "transpose", "bitcast", "reshape", "slice", "concatenate",
             "pad", "tuple", "get-tuple-element", "constant"}
_HLO_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")   # at column 0
_HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")


def _opcode(rhs: str) -> str:
    """The opcode of an HLO instruction's right-hand side ``SHAPE opcode(operands), ...``."""
    if rhs.startswith("("):                       # a tuple shape: skip to its closing paren
        depth = 0
        for index, char in enumerate(rhs):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                rhs = rhs[index + 1:]
                break
    else:
        rhs = rhs.split(" ", 1)[1] if " " in rhs else ""
    return rhs.strip().split("(", 1)[0]


def hlo_op_kinds(hlo_text: str) -> dict[str, str]:
    """Maps every instruction of an optimised HLO module to one of `OP_KINDS`.

    A fusion is a matmul if its fused computation holds a dot or a convolution (XLA:CPU
    names those after the library that runs them, e.g. ``ynn_fusion.31``), data movement if
    it holds nothing but copies, transposes, pads and the like, and elementwise otherwise.
    """
    opcodes: dict[str, set[str]] = {}          # computation -> the opcodes in it
    instructions: list[tuple[str, str, str]] = []   # (computation, name, rhs)
    computation = ""
    for line in hlo_text.splitlines():
        header = _HLO_COMPUTATION.match(line)
        if header:
            computation = header.group(1)
            opcodes[computation] = set()
            continue
        instruction = _HLO_INSTRUCTION.match(line)
        if instruction and computation:
            rhs = instruction.group(2)
            opcodes[computation].add(_opcode(rhs))
            instructions.append((computation, instruction.group(1), rhs))
    kinds = {}
    for _, name, rhs in instructions:
        ops = {_opcode(rhs)}
        called = re.search(r"calls=%?([\w.\-]+)", rhs)
        if called:
            ops |= opcodes.get(called.group(1), set())
        if ops & {"dot", "convolution"}:
            kinds[name] = OP_KINDS[0]
        elif "custom-call" in ops:
            kinds[name] = OP_KINDS[1]
        elif ops - {"fusion"} <= _MOVEMENT:
            kinds[name] = OP_KINDS[2]
        else:
            kinds[name] = OP_KINDS[3]
    return kinds


def op_time_by_kind(fn: Callable, *args, calls: int = 1) -> dict[str, float]:
    """Seconds per call of ``jax.jit(fn)(*args)`` spent in each of `OP_KINDS`, from a
    profiler trace (CPU only: on a GPU the trace's kernels do not carry HLO op names).

    Each op's trace event, plus the time its asynchronous work ran unseen
    (`trace_op_seconds`).
    """
    import gzip
    import tempfile
    if jax.default_backend() != "cpu":
        raise ValueError("op_time_by_kind reads XLA:CPU's per-op trace events")
    compiled = jax.jit(fn).lower(*args).compile()
    kinds = hlo_op_kinds(compiled.as_text())
    warm_up(lambda: compiled(*args), _block)   # the traced calls see the settled heap
    with tempfile.TemporaryDirectory() as directory:
        jax.profiler.start_trace(directory, create_perfetto_trace=True)
        for _ in range(calls):
            _block(compiled(*args))
        jax.profiler.stop_trace()
        trace_path = next(pathlib.Path(directory).rglob("*.trace.json.gz"))
        with gzip.open(trace_path) as stream:
            trace = json.load(stream)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return {kind: value / calls for kind, value in trace_op_seconds(events, kinds).items()}


def trace_op_seconds(events: Sequence[dict], kinds: dict[str, str]) -> dict[str, float]:
    """Seconds in each of `OP_KINDS` over an XLA:CPU trace's events.

    An op's event ("X", ``args.hlo_op``) times its thunk, and for most ops that is the work.
    XLA's own dots (a matmul YNNPACK does not take, e.g. a weight gradient contracting over
    the tokens) are asynchronous: their event covers the ~2 ms launch, the work runs in the
    thread pool until their "end: OP" marker. Time in which no op's event is open is charged
    to the asynchronous ops in flight then, split evenly; with none in flight it is idle and
    not charged.

    Args:
      events: the trace's "traceEvents".
      kinds: op name -> kind (`hlo_op_kinds`); unknown ops count as elementwise.
    """
    spans = sorted((event["ts"], event["ts"] + event.get("dur", 0), event["args"]["hlo_op"])
                   for event in events
                   if event.get("ph") == "X" and (event.get("args") or {}).get("hlo_op"))
    ends: dict[str, list[float]] = {}
    for event in events:
        if str(event.get("name", "")).startswith("end: "):
            ends.setdefault(event["name"][5:], []).append(event["ts"])
    seconds = dict.fromkeys(OP_KINDS, 0.0)
    in_flight = []  # (launched, ended, op): asynchronous work after the op's event closed
    for start, stop, op in spans:
        seconds[kinds.get(op, OP_KINDS[3])] += (stop - start) / 1e6
        marker = min((t for t in ends.get(op, ()) if t >= stop), default=stop)
        if marker > stop:
            in_flight.append((stop, marker, op))
    covered_until = spans[0][0] if spans else 0.0
    for start, stop, _ in spans:
        if start > covered_until:  # a gap [covered_until, start): no op's event is open
            _charge_gap(seconds, kinds, in_flight, covered_until, start)
        covered_until = max(covered_until, stop)
    return seconds


def _charge_gap(seconds, kinds, in_flight, gap_start: float, gap_stop: float) -> None:
    """Charges [gap_start, gap_stop) to the asynchronous ops running in it, split evenly."""
    cuts = sorted({gap_start, gap_stop} | {t for launched, ended, _ in in_flight
                                           for t in (launched, ended)
                                           if gap_start < t < gap_stop})
    for left, right in zip(cuts, cuts[1:]):
        running = [op for launched, ended, op in in_flight if launched <= left and right <= ended]
        for op in running:
            seconds[kinds.get(op, OP_KINDS[3])] += (right - left) / 1e6 / len(running)


_TORCH_MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm"}
_TORCH_MOVEMENT = {"aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::pad",
                   "aten::constant_pad_nd", "aten::index_select", "aten::embedding_dense_backward"}


def torch_op_time_by_kind(call: Callable[[], Any], calls: int = 1) -> dict[str, float]:
    """`op_time_by_kind` for a PyTorch call: each aten op's self CPU time, by kind (fused
    attention kernels, e.g. scaled_dot_product_attention's, count as custom calls)."""
    import torch
    warm_up(call, lambda result: result)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(calls):
            call()
    seconds = dict.fromkeys(OP_KINDS, 0.0)
    for event in profile.key_averages():
        if not event.key.startswith("aten::"):
            continue
        if event.key in _TORCH_MATMULS or "conv" in event.key:   # every convolution op
            kind = OP_KINDS[0]
        elif "attention" in event.key:
            kind = OP_KINDS[1]
        elif event.key in _TORCH_MOVEMENT:
            kind = OP_KINDS[2]
        else:
            kind = OP_KINDS[3]
        seconds[kind] += event.self_cpu_time_total / 1e6 / calls
    return seconds


def op_time_summary(seconds: dict[str, float]) -> str:
    """E.g. "matmuls and convolutions 78% (4.10 s), custom calls 6% (0.29 s), ..."."""
    total = sum(seconds.values()) or 1.0
    return ", ".join(f"{kind} {100 * value / total:.0f}% ({_seconds(value)})"
                     for kind, value in sorted(seconds.items(), key=lambda kv: -kv[1]))


def fit_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(time) against log(size): time ∝ size^slope."""
    import numpy as np
    slope, _ = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(slope)
