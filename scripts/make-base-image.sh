#!/usr/bin/env bash
# Make the local base image for machines that cannot pull python:3.11-slim (no registry, an
# air-gapped network): Debian bookworm minbase + python3 + python3-venv + ca-certificates, built
# with mmdebstrap from a Debian mirror and loaded with `docker import`. bookworm's python3 is
# 3.11, the same as the slim image's, so the same wheels fit. Then build on it with
#   mlplat images build --base-image mlplat-base:bookworm
#
# Usage: scripts/make-base-image.sh [IMAGE]     (default mlplat-base:bookworm)
#   skips when IMAGE exists (FORCE=1 remakes it); needs root (or unprivileged user namespaces)
#   MLPLAT_DEBIAN_MIRROR, MLPLAT_DEBIAN_SECURITY: mirrors (default deb.debian.org)
set -euo pipefail
IMAGE="${1:-mlplat-base:bookworm}"
SUITE=bookworm
MIRROR="${MLPLAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${MLPLAT_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}"

# Two callers at once (two test runs) would both spend the time: the second waits, then skips.
exec 9>"${TMPDIR:-/tmp}/mlplat-make-base-image.lock"
flock 9

if [ -z "${FORCE:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists (FORCE=1 to remake it)"
  exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 || {
  echo "mmdebstrap is not installed: apt-get install mmdebstrap (or scripts/install-system-deps.sh)" >&2
  exit 1
}
docker info >/dev/null 2>&1 || {
  echo "no Docker engine answers (scripts/ensure-docker.sh starts one)" >&2
  exit 1
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
# Docs, man pages and translations are no use in a service image (~50 MB); apt's lists and
# caches neither: images built on this one install with pip, not apt.
# stdin from /dev/null: mmdebstrap reads a sources.list from a non-terminal stdin.
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  "$SUITE" "$tmp/base.tar" \
  "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main" \
  </dev/null
docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  --message "mlplat base: debian $SUITE minbase + python3 (scripts/make-base-image.sh)" \
  "$tmp/base.tar" "$IMAGE" >/dev/null
echo "made base image $IMAGE in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
