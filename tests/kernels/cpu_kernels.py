"""Shared by the tests of kernels/cpu: build a kernel or skip where there is no compiler."""

from collections.abc import Callable

import pytest

from kernels import cpu


def require(name: str, available: Callable[[], bool]) -> None:
    """Skips the test (with the reason) on a machine with no C++ compiler; a compiler that
    rejects ``NAME.cc`` fails it, with the compiler's output."""
    try:
        cpu.compiler()
    except cpu.BuildError as error:
        pytest.skip(f"no C++ compiler on this machine: {error}")
    cpu.build(name)
    assert available()
