"""Keep freed host memory in the process, so that XLA:CPU's per-call buffers reuse warm pages.

XLA:CPU allocates each call's outputs and one block for all its temporaries with malloc.
glibc serves requests above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh
mmap()s and returns them on free, so every call of a jitted function pays a page fault per
4 KiB of its buffers, each zero-filled by the kernel: on this project's 2-core VMs that was
15,000 faults and half of the 80 ms of a sparse-attention forward at n = 8192, and a third
of a sentence-similarity training step (measured). Turning mmap off for malloc and trimming
off keeps freed blocks in the heap for the next call: the same forward then ran in 40 ms with
no faults. One arena for all threads: XLA allocates from its worker threads, and glibc's
per-thread arenas are heaps of at most 64 MiB, so a larger buffer there is always a fresh
mmap (a 64 MiB transpose at n = 32768 ran 4× slower for it).

Why "off" rather than a large threshold: mallopt() takes an int, so a threshold stops at
2 GiB, and a 12-layer BERT's forward+backward at batch 32 has a 4.9 GiB temporary block,
which was then mapped afresh on every call (1.3 million faults a call; the benchmark's op
times left 2.2 s of its 20.2 s unaccounted for). With mmap off, glibc's main arena grows
with brk and, should brk fail, still falls back to mmap, so nothing is refused. The heap
takes a few calls to settle: a 3-layer step (1.3 GiB block) faults on its first two calls
and not after.

`launch.py` calls `keep_freed_memory` first thing, for experiments and benchmarks alike
(PyTorch rows in a benchmark share the setting: one process), and so do the comparison
scripts that train in their own process (`experiments/*/compare.py`,
`experiments/gan/sweep.py`). The cost is that the
process's resident memory stays near its peak. ``KEXUE_JAX_KEEP_FREED_MEMORY=0`` opts out.
"""

import ctypes
import ctypes.util
import os

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER = -1  # as M_TRIM_THRESHOLD: no trimming (mallopt(3))


def keep_freed_memory() -> str:
    """Stops glibc from serving allocations with mmap or trimming its heap, with one arena.

    Returns:
      What was done, for logs: "on", "off (KEXUE_JAX_KEEP_FREED_MEMORY=0)", or "not
      available (...)" on a C library without mallopt (musl, macOS).
    """
    if os.environ.get("KEXUE_JAX_KEEP_FREED_MEMORY", "1") == "0":
        return "off (KEXUE_JAX_KEEP_FREED_MEMORY=0)"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return f"not available (no mallopt in C library {name!r})"
    applied = (mallopt(_M_MMAP_MAX, 0) == 1
               and mallopt(_M_TRIM_THRESHOLD, _NEVER) == 1
               and mallopt(_M_ARENA_MAX, 1) == 1)
    return "on" if applied else "not available (mallopt refused the settings)"


def keep_freed_memory_and_say() -> None:
    """`keep_freed_memory`, then one log line saying what was done (for entry points)."""
    print(f"host memory: keep freed memory {keep_freed_memory()}", flush=True)
