#!/usr/bin/env bash
# Make sure a Docker engine answers: start dockerd in the background when it is installed but
# not running (CI machines and containers without systemd), then wait for it.
# Exit 0 when `docker info` works; 1 with the reason otherwise. Idempotent.
set -euo pipefail
LOG="${MLPLAT_DOCKERD_LOG:-/tmp/mlplat-dockerd.log}"
if docker info >/dev/null 2>&1; then exit 0; fi
if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST#unix://}" = "$DOCKER_HOST" ]; then
  echo "DOCKER_HOST=$DOCKER_HOST does not answer, and it is not a local engine to start" >&2
  exit 1
fi
command -v dockerd >/dev/null 2>&1 || {
  echo "dockerd is not installed (apt-get install docker.io, or scripts/install-system-deps.sh)" >&2
  exit 1
}
if [ "$(id -u)" != 0 ]; then
  echo "no Docker engine answers and only root can start dockerd here; start it (sudo systemctl start docker), or add yourself to the docker group" >&2
  exit 1
fi
if ! pgrep -x dockerd >/dev/null 2>&1; then
  # A pidfile left by a dockerd that died stops the next one from starting.
  rm -f /var/run/docker.pid
  # Its own session (setsid): a test run or shell that is stopped with its process group must
  # not take the engine down with it.
  if command -v setsid >/dev/null 2>&1; then
    setsid -f dockerd >>"$LOG" 2>&1 </dev/null
  else
    (nohup dockerd >>"$LOG" 2>&1 </dev/null &)
  fi
fi
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 0.25
done
echo "dockerd did not answer within 30s; last lines of $LOG:" >&2
tail -n 15 "$LOG" >&2 || true
exit 1
