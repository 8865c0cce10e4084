"""Tests for experiments/host_memory.py: the thresholds really stop fresh-page faults."""

import subprocess
import sys
import textwrap

import pytest

from experiments import host_memory

# A child process: allocate and free a float32 array of N elements R times, count minor page
# faults.
_CHILD = textwrap.dedent("""
    import resource, sys
    from experiments import host_memory
    if sys.argv[1] == "keep":
        print(host_memory.keep_freed_memory(), file=sys.stderr)
    import numpy as np
    size, repeats = int(sys.argv[2]), int(sys.argv[3])
    np.ones(size, np.float32)  # warm up the allocator
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        x = np.ones(size, np.float32)
        del x
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str, size: int, repeats: int) -> int:
    result = subprocess.run([sys.executable, "-c", _CHILD, mode, str(size), str(repeats)],
                            capture_output=True, text=True, check=True)
    return int(result.stdout.strip())


# 64 MiB: above glibc's adaptive mmap threshold. 2.5 GiB: above the 2 GiB that mallopt's int
# threshold could reach (an XLA temporary block of a 12-layer BERT step is 4.9 GiB).
@pytest.mark.parametrize("size, repeats", [(1 << 24, 20), (5 << 27, 3)],
                         ids=["64MiB", "2.5GiB"])
def test_keeping_freed_memory_stops_page_faults_on_reallocation(size, repeats):
    if not host_memory.keep_freed_memory().startswith("on"):
        pytest.skip("no glibc mallopt here")
    default, kept = _faults("default", size, repeats), _faults("keep", size, repeats)
    # glibc's default: each array is a fresh mmap, faulted in again (in 4 KiB or, with
    # transparent huge pages, 2 MiB steps). Kept: reused.
    assert default >= repeats * (size * 4 >> 21)
    assert kept * 50 <= default


def test_opt_out(monkeypatch):
    monkeypatch.setenv("KEXUE_JAX_KEEP_FREED_MEMORY", "0")
    assert host_memory.keep_freed_memory() == "off (KEXUE_JAX_KEEP_FREED_MEMORY=0)"
