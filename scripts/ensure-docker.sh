#!/usr/bin/env bash
# Start dockerd in the background when it is installed and not running; wait for its socket.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null 2>&1 || { echo "dockerd not installed" >&2; exit 1; }
(nohup dockerd >/tmp/mlplat-dockerd.log 2>&1 &)
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "dockerd did not come up; see /tmp/mlplat-dockerd.log" >&2
exit 1
