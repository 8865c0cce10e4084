"""Tests for experiments/host_memory.py: the thresholds really stop fresh-page faults."""

import subprocess
import sys
import textwrap

import pytest

from experiments import host_memory

# A child process: allocate and free a 64 MiB numpy array 20 times, count minor page faults.
_CHILD = textwrap.dedent("""
    import resource, sys
    from experiments import host_memory
    if sys.argv[1] == "keep":
        print(host_memory.keep_freed_memory(), file=sys.stderr)
    import numpy as np
    np.ones(1 << 24, np.float32)  # warm up the allocator
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        x = np.ones(1 << 24, np.float32)
        del x
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True,
                            text=True, check=True)
    return int(result.stdout.strip())


def test_keeping_freed_memory_stops_page_faults_on_reallocation():
    if not host_memory.keep_freed_memory().startswith("on"):
        pytest.skip("no glibc mallopt here")
    default, kept = _faults("default"), _faults("keep")
    # glibc's default: each 64 MiB array is a fresh mmap, faulted in again (in 4 KiB or, with
    # transparent huge pages, 2 MiB steps: at least 32 faults an array). Kept: reused.
    assert default >= 20 * 32
    assert kept * 50 <= default


def test_opt_out(monkeypatch):
    monkeypatch.setenv("KEXUE_JAX_KEEP_FREED_MEMORY", "0")
    assert host_memory.keep_freed_memory() == "off (KEXUE_JAX_KEEP_FREED_MEMORY=0)"
