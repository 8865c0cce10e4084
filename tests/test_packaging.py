"""The installed environment resolves this repository's packages, not namesakes."""

import importlib.metadata
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_kernels_is_this_repositorys_package_from_any_directory(tmp_path):
    """Hugging Face's `kernels` (a transformers dependency) would shadow ours outside the
    repository root; the Makefile installs transformers without it."""
    out = subprocess.run([sys.executable, "-c", "import kernels; print(kernels.__file__)"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert pathlib.Path(out.strip()) == ROOT / "kernels" / "__init__.py"
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return
    raise AssertionError("Hugging Face's `kernels` distribution is installed in this env")
