"""Hand-written CPU kernels, compiled on first use and called from jit as XLA FFI targets.

Each ``NAME.cc`` here is built with the machine's C++ compiler against the XLA FFI headers
that jaxlib ships (``jax.ffi.include_dir()``), for this CPU (``-march=native``), into a
cache directory: ``$KEXUE_JAX_CACHE`` if set, else ``$XDG_CACHE_HOME/kexue-jax`` or
``~/.cache/kexue-jax``. The file name carries a hash of everything the binary depends on
(source, this directory's headers, compiler and its flags, jaxlib version, CPU), so a stale
binary is never loaded; concurrent first uses each build to a temporary name and rename, so
they cannot collide.

Nothing else in the project needs a compiler: when there is none, the build fails, or
``KEXUE_JAX_CPU_KERNELS=0`` is set, `library` returns None (with one warning naming the
reason) and callers take their pure-XLA path, which the tests hold the kernels to anyway.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import warnings

import jax

_SOURCE_DIR = pathlib.Path(__file__).parent
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno")
_DISABLE_VARIABLE = "KEXUE_JAX_CPU_KERNELS"


class BuildError(RuntimeError):
    """The compiler is missing or rejected a kernel; the message has its output."""


def cache_dir() -> pathlib.Path:
    """Where compiled kernels are kept (created on demand)."""
    if os.environ.get("KEXUE_JAX_CACHE"):
        return pathlib.Path(os.environ["KEXUE_JAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "kexue-jax"


def compiler() -> str:
    """The C++ compiler: ``$CXX`` if set, else ``c++`` or ``g++`` on the PATH.

    Raises:
      BuildError: if there is none (or ``$CXX`` names no executable).
    """
    if os.environ.get("CXX"):
        found = shutil.which(os.environ["CXX"])
        if not found:
            raise BuildError(f"CXX={os.environ['CXX']!r} is not an executable")
        return found
    found = shutil.which("c++") or shutil.which("g++")
    if not found:
        raise BuildError("no C++ compiler found (install g++, or set CXX)")
    return found


def _cpu_signature() -> str:
    """The CPU's model and feature flags: -march=native code is only valid on a match."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines
                                 if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return platform.processor() or platform.machine()


def build(name: str) -> pathlib.Path:
    """Compiles ``kernels/cpu/NAME.cc`` into the cache (once) and returns the library's path.

    Raises:
      BuildError: no compiler, or the compiler failed (its output is in the message).
    """
    source = _SOURCE_DIR / f"{name}.cc"
    cxx = compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    headers = [header.read_text() for header in sorted(_SOURCE_DIR.glob("*.h"))]
    key = hashlib.sha256("\0".join([
        source.read_text(), *headers, cxx, version, " ".join(_FLAGS), jax.__version__,
        _cpu_signature()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so", delete=False) as tmp:
        partial = pathlib.Path(tmp.name)
    command = [cxx, *_FLAGS, "-isystem", jax.ffi.include_dir(), str(source), "-o",
               str(partial)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    os.replace(partial, target)
    return target


def library(name: str) -> ctypes.CDLL | None:
    """The loaded ``NAME.cc`` kernel library, or None (warned once) when it cannot be had.

    None also when ``KEXUE_JAX_CPU_KERNELS=0`` is set.
    """
    if os.environ.get(_DISABLE_VARIABLE, "1") == "0":
        return None
    return _load(name)


@functools.cache
def _load(name: str) -> ctypes.CDLL | None:
    try:
        return ctypes.cdll.LoadLibrary(str(build(name)))
    except (BuildError, OSError) as error:
        warnings.warn(f"CPU kernel {name!r} unavailable, using the XLA path: {error}",
                      RuntimeWarning, stacklevel=2)
        return None


def register(name: str, targets: dict[str, str]) -> bool:
    """Loads ``NAME.cc``'s library and registers its handlers as XLA FFI targets on CPU.

    Args:
      name: the kernel's file name, without ``.cc``.
      targets: FFI target name -> the library's handler symbol.

    Returns:
      False when the library cannot be had (see `library`), else True.
    """
    loaded = library(name)
    if loaded is None:
        return False
    for target, symbol in targets.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(loaded, symbol)),
                                    platform="cpu")
    return True
