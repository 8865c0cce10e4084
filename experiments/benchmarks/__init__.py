"""Benchmarks: `python launch.py bench [NAME ...] [--quick] [--out DIR]`.

Each module `experiments.benchmarks.NAME` has a docstring (first line listed by launch.py)
and `run(report: harness.Report, quick: bool) -> None`. `--quick` sizes the run for CI and
smoke tests; the README's figures come from the full run.
"""

import argparse
import importlib
import types

from experiments import host_memory
from experiments.benchmarks import harness
from experiments.configs import ConfigError

# The benchmarks that exist, in the order `make bench` runs them.
BENCHMARKS = ("attention", "margin_softmax", "sentence_similarity", "gradient_penalty",
              "trainer", "entity_linking", "attention_gpu", "decoding", "gan_step",
              "bert", "matmul")


def load(name: str) -> types.ModuleType:
    """Imports `experiments.benchmarks.<name>`; ConfigError listing the valid names if unknown."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; valid benchmarks: "
                          f"{', '.join(BENCHMARKS) or '(none yet)'}")
    return importlib.import_module(f"experiments.benchmarks.{name}")


def main(argv) -> int:
    """Runs the named benchmarks (all when none is named) and writes their tables."""
    parser = argparse.ArgumentParser(prog="launch.py bench")
    parser.add_argument("names", nargs="*", help=f"any of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (CI, smoke)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row")
    parser.add_argument("--out", default="runs/bench", help="where NAME.jsonl/NAME.md go")
    args = parser.parse_args(argv)
    for name in args.names or BENCHMARKS:
        module = load(name)
        report = harness.Report(name, repeats=args.repeats)
        # Every row of a report, JAX and PyTorch alike, runs under this one setting.
        report.note(f"host memory: keep freed memory {host_memory.keep_freed_memory()} "
                    "(experiments/host_memory.py)")
        print(f"benchmark {name} on {report.device}", flush=True)
        module.run(report, quick=args.quick)
        path = report.write(args.out)
        print("\n" + report.markdown() + f"\n(written to {path})\n", flush=True)
    return 0
