#!/usr/bin/env bash
# Downloads, on this machine, the wheels of the Python packages the project imports that the
# lent GPU machine's image lacks, for Python 3.12 on x86-64 Linux, into .whl/ (ignored by git
# through .git/info/exclude), so that a device call can carry them (carry: [".whl"]) and
# scripts/gpu_check.sh can install them there without a network.
#
#   scripts/fetch_device_wheels.sh          # into .whl/ (run from anywhere; once per session)
#   scripts/fetch_device_wheels.sh DIR      # into DIR instead (nothing is added to the exclude)
#
# What the image lacks: ml-collections (imported by every `experiments` module, the tests'
# conftest too), tensorboardX and datasets (the trainer's), and of their needs dill and
# multiprocess; absl-py, PyYAML, protobuf, numpy, pyarrow, pandas, fsspec, huggingface-hub,
# xxhash, tqdm and the rest are there. The versions are those of .venv, what the tests here
# run with. --no-deps fetches none of a package's needs: the Requires-Dist lines printed at
# the end are for checking that nothing new is missing. Only the package registry is used.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST="${1:-.whl}"
VENV_PYTHON=.venv/bin/python
PACKAGES=(ml-collections tensorboardX datasets dill multiprocess)

if [ ! -x "$VENV_PYTHON" ]; then
  echo "fetch_device_wheels: $VENV_PYTHON is missing (make test builds it); its versions are the pins" >&2
  exit 1
fi
if [ "$DEST" = .whl ]; then
  exclude="$(git rev-parse --git-path info/exclude)"
  mkdir -p "$(dirname "$exclude")"
  grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
fi
mkdir -p "$DEST"

specs=()
for name in "${PACKAGES[@]}"; do
  version="$("$VENV_PYTHON" -c "import importlib.metadata as m; print(m.version('$name'))")"
  specs+=("$name==$version")
done
echo "fetching ${specs[*]} into $DEST"

# As the device README says; one version of each package (two would stop the install there).
"$VENV_PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$DEST" "${specs[@]}"

for wheel in "$DEST"/*.whl; do
  echo "$(basename "$wheel"):"
  unzip -p "$wheel" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' \
    | sed 's/^/  /' || true
done
du -sh "$DEST"
