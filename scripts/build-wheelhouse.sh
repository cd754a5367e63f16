#!/usr/bin/env bash
# Download every wheel the images install into a wheelhouse, so `mlplat images build
# --wheelhouse DIR` (or `docker build .` with ./wheelhouse filled) installs with pip --no-index:
# for air-gapped machines, for builds where pip inside a container cannot reach the index
# (a TLS-intercepting proxy, a private mirror only the host is configured for), and for
# repeatable builds. Uses the host's pip and its configuration (mirrors, certificates); the
# platform flags pick the wheels for the image's Python (CPython 3.11, manylinux), not the
# host's.
#
# Usage: scripts/build-wheelhouse.sh [DIR]      (default ./wheelhouse)
#   PYTHON       the python whose pip downloads (default .venv/bin/python, else python3)
#   CUDA=1       also the CUDA/cuDNN wheels for `mlplat images build --cuda` (~2 GB)
#   skips the download when DIR already holds the wheels for these exact requirement files
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${1:-$root/wheelhouse}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PY="$root/.venv/bin/python"; else PY=python3; fi
fi
reqs=("$root/runtime/requirements.txt" "$root/dockerfiles/requirements-tracker.txt")
[ "${CUDA:-0}" = 1 ] && reqs+=("$root/dockerfiles/requirements-cuda.txt")
arch="$(uname -m)"

mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9
stamp="$(cat "${reqs[@]}" | sha256sum | cut -c1-64)-$arch"
if [ -f "$DIR/.complete" ] && [ "$(cat "$DIR/.complete")" = "$stamp" ]; then
  echo "wheelhouse $DIR is up to date ($(ls "$DIR"/*.whl | wc -l) wheels)"
  exit 0
fi
start=$(date +%s)
for req in "${reqs[@]}"; do
  deps=(--no-deps)   # the requirement files list their full closure, pinned
  [ "$(basename "$req")" = requirements-cuda.txt ] && deps=()
  # -qq: the host's extra index locations warn about every name they do not hold.
  "$PY" -m pip download -qq --disable-pip-version-check "${deps[@]}" --only-binary=:all: \
    --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    --dest "$DIR" -r "$req"
done
echo "$stamp" >"$DIR/.complete"
echo "wheelhouse $DIR: $(ls "$DIR"/*.whl | wc -l) wheels, $(du -sh "$DIR" | cut -f1), in $(( $(date +%s) - start ))s"
