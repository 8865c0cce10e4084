"""The torch rows of `experiments.benchmarks.attention_gpu`, measured in their own process.

    python -m experiments.benchmarks.torch_attention_gpu --plan PLAN.json --out ROWS.jsonl

`attention_gpu.run_torch` writes the plan (sizes, time budget, one entry per row: its group,
label, useful FLOPs, pattern and JSON columns) and starts this module. Each row measured is
appended to ROWS.jsonl as one JSON line (`attention_gpu.row_line`) as soon as it is done, so
that a run stopped at its time limit keeps what it measured; what is left out or fails is a
note line. The rows are the same function as the JAX side's, in torch's [B, H, N, D] layout:

* "torch_sdpa": `torch.nn.functional.scaled_dot_product_attention` over the full sequence
  (torch picks its backend: flash attention for bfloat16, memory-efficient for float32);
* "flex": `flex_attention` under `torch.compile`, with the pattern's block mask
  (`create_block_mask`, compiled too, of `experiments.benchmarks.attention.flex_mask_mod`,
  the mask_mods the CPU benchmark's tests hold to `kernels.attention.dense_mask`).

The forward rows run under `torch.no_grad`; forward+backward is `torch.autograd.grad` of
Σ out² (in float32) with respect to q, k and v. Timing is `attention_gpu.time_back_to_back`
with `torch.cuda.synchronize`; the first call (the compile) is the row's compile time. Peak
memory: `torch.cuda.max_memory_allocated` after resetting it before the row. A plan may name
another "device" and "compile": false, so that a CPU test runs the same code eagerly.
"""

import argparse
import json
import sys
import time
import typing

from experiments.benchmarks import attention as cpu_bench
from experiments.benchmarks import attention_gpu, harness
from kernels import attention

FWD, FWD_BWD = attention_gpu.FWD, attention_gpu.FWD_BWD


PATTERN_CLASSES = {cls.__name__: cls for cls in typing.get_args(attention.Pattern)}


def pattern_of(spec) -> attention.Pattern:
    """``["Local", [64, 1]]`` → ``attention.Local(64, 1)`` (the plan's pattern entry).

    Raises:
      ValueError: for a name that is not one of `kernels.attention`'s patterns.
    """
    name, fields = spec
    if name not in PATTERN_CLASSES:
        raise ValueError(f"unknown pattern {name!r}; valid: {', '.join(PATTERN_CLASSES)}")
    return PATTERN_CLASSES[name](*fields)


class _Torch:
    """torch on one device, FlexAttention (compiled once) and its block masks."""

    def __init__(self, torch, device: str, compile_flex: bool):
        import torch.nn.functional as functional
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        self.torch, self.functional, self.device = torch, functional, device
        self.cuda = device == "cuda"
        # Every (pattern, length, dtype, grad) is one more compile of flex_attention; past
        # dynamo's default limit (8) torch would silently fall back to its eager, dense path.
        torch._dynamo.config.recompile_limit = 256
        torch._dynamo.config.accumulated_recompile_limit = 4096
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        # TF32 for float32 matmuls, as JAX's default precision on a GPU.
        torch.set_float32_matmul_precision("high")
        # Eager, create_block_mask evaluates the mask_mod over all n² pairs; compiled, tile
        # by tile.
        self.flex = torch.compile(flex_attention, dynamic=False) if compile_flex else flex_attention
        self.block_mask = torch.compile(create_block_mask) if compile_flex else create_block_mask

    def sync(self, _=None) -> None:
        """Waits for the device's queued work."""
        if self.cuda:
            self.torch.cuda.synchronize()

    def inputs(self, entry, plan):
        """q, k, v [B, H, N, D] on the device, seeded by the length."""
        torch, case = self.torch, entry["case"]
        generator = torch.Generator(device=self.device).manual_seed(case["length"])
        shape = (plan["batch"], plan["heads"], case["length"], plan["head_dim"])
        return [torch.randn(shape, device=self.device, dtype=getattr(torch, case["dtype"]),
                            generator=generator, requires_grad=case["mode"] == FWD_BWD)
                for _ in range(3)]

    def call(self, entry, q, k, v):
        """(the zero-argument call to time, extra JSON columns) for one plan entry."""
        torch, case = self.torch, entry["case"]
        extra = {}
        if case["path"] == attention_gpu.FLEX:
            start = time.perf_counter()
            mask = self.block_mask(cpu_bench.flex_mask_mod(pattern_of(entry["pattern"])), None,
                                   None, case["length"], case["length"], device=self.device)
            self.sync()
            extra.update(block_mask_s=time.perf_counter() - start,
                         block_sparsity=float(mask.sparsity()))

            def forward():
                return self.flex(q, k, v, block_mask=mask)
        elif case["path"] == attention_gpu.TORCH_SDPA:
            def forward():
                return self.functional.scaled_dot_product_attention(q, k, v)
        else:
            raise ValueError(f"not a torch path: {case['path']!r}")
        if case["mode"] == FWD:
            def call():
                with torch.no_grad():
                    return forward()
        else:
            def call():
                loss = forward().float().square().sum()
                return torch.autograd.grad(loss, (q, k, v))
        return call, extra

    def measure(self, entry, plan) -> harness.Row:
        """Times one plan entry; the row `attention_gpu.read_torch_lines` reads back."""
        torch = self.torch
        if self.cuda:
            torch.cuda.empty_cache()
        q, k, v = self.inputs(entry, plan)
        call, extra = self.call(entry, q, k, v)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        timing = attention_gpu.time_back_to_back(
            call, self.sync, max_repeats=plan["max_repeats"],
            sample_s=0.0 if plan["quick"] else attention_gpu.SAMPLE_S,
            row_s=0.0 if plan["quick"] else attention_gpu.ROW_S)
        extra = dict(entry["extra"], **extra, calls_per_sample=timing.calls_per_sample,
                     torch=torch.__version__)
        return harness.Row(
            group=entry["group"], impl=entry["impl"], median_s=timing.median_s,
            compile_s=timing.first_s, repeats=timing.repeats, flops=entry["flops"],
            peak_device_bytes=int(torch.cuda.max_memory_allocated()) if self.cuda else None,
            shapes=f"{q.dtype}{list(q.shape)} ×3 (B, H, N, D)",
            device=torch.cuda.get_device_name() if self.cuda else "cpu (torch)", extra=extra)


def _error_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}"


def run(plan, write) -> None:
    """Measures the plan's entries in order, writing each row or note with ``write(line)``.

    The plan's optional "device" ("cuda" by default) and "compile" (True by default) let a
    CPU test run the same code eagerly on a CPU.
    """
    device, compile_flex = plan.get("device", "cuda"), plan.get("compile", True)
    try:
        import torch
        import torch.nn.attention.flex_attention  # noqa: F401  (FlexAttention: torch ≥ 2.5)
    except ImportError as error:
        write(attention_gpu.note_line(f"torch rows not measured: {_error_line(error)}"))
        return
    if device == "cuda" and not torch.cuda.is_available():
        write(attention_gpu.note_line(f"torch rows not measured: torch {torch.__version__} "
                                      "sees no CUDA device"))
        return
    runtime = _Torch(torch, device, compile_flex)
    deadline = None if plan["budget_s"] is None else time.perf_counter() + plan["budget_s"]
    left_out: dict[str, list[str]] = {}  # reason → rows
    broken: dict[tuple, str] = {}  # (path, family) → its first error
    for entry in plan["cases"]:
        kind = (entry["case"]["path"], entry["case"]["family"])
        where = f"{entry['group']} {entry['impl']}"
        if deadline is not None and time.perf_counter() > deadline:
            left_out.setdefault("the torch rows' time budget was spent", []).append(where)
            continue
        if kind in broken:
            left_out.setdefault(f"{' '.join(kind)} failed earlier", []).append(where)
            continue
        try:
            row = runtime.measure(entry, plan)
        except Exception as error:  # a compile failure or out of memory: say so, go on
            message = _error_line(error)
            if not isinstance(error, torch.cuda.OutOfMemoryError):
                broken[kind] = message
            write(attention_gpu.note_line(f"{where} failed: {message}"))
            continue
        print(f"  [{row.group}] {row.impl}: {row.median_s * 1e3:.3f} ms (compile "
              f"{row.compile_s:.2f} s, {row.repeats}×{row.extra['calls_per_sample']} calls)",
              flush=True)
        write(attention_gpu.row_line(row))
    for reason, rows in left_out.items():
        write(attention_gpu.note_line(f"not measured ({reason}), {len(rows)} torch rows: "
                                      f"{'; '.join(rows)}"))


def main(argv: list[str] | None = None) -> int:
    """Reads the plan, appends JSON lines to --out; 0 unless the arguments are wrong."""
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks.torch_attention_gpu",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--plan", required=True, help="the JSON attention_gpu.torch_plan wrote")
    parser.add_argument("--out", required=True, help="JSON lines, appended")
    args = parser.parse_args(argv)
    with open(args.plan, encoding="utf-8") as stream:
        plan = json.load(stream)
    with open(args.out, "a", encoding="utf-8") as out:
        def write(line: str) -> None:
            out.write(line + "\n")
            out.flush()
        run(plan, write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
