#!/usr/bin/env bash
# Debian packages the test suite and the docker backend need: the Docker engine (docker.io),
# mmdebstrap (scripts/make-base-image.sh), tmux and git; docker-registry and apache2-utils
# (htpasswd) for the push tests' image registry. Idempotent and quiet: installs only
# what is missing, prints one line when it does.
set -euo pipefail
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v git >/dev/null 2>&1 || need+=(git)
command -v make >/dev/null 2>&1 || need+=(make)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: ${need[*]} (install them as root: apt-get install ${need[*]})" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]} (not a Debian-based system: install them yourself)" >&2
  exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "installing ${need[*]} ..."
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "installing ${need[*]} failed" >&2
  exit 1
fi
# The package's own service listens on every interface (:5000); the tests start their own
# registry on 127.0.0.1, so the packaged one is stopped and kept off.
if [[ " ${need[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
