"""Test-session setup shared by every test."""

from experiments import host_memory


def pytest_configure(config):
    # As launch.py does: XLA:CPU's per-call buffers reuse freed pages instead of faulting.
    host_memory.keep_freed_memory()
