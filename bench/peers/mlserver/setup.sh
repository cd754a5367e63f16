#!/usr/bin/env bash
# Create bench/.venv-mlserver: MLServer in a virtualenv of its own (its pins on fastapi,
# uvicorn, protobuf and grpcio must not touch the project's venv), with onnxruntime for the
# small ONNX runtime in runtime.py. Idempotent: an existing venv that imports mlserver is kept.
#
#     bash bench/peers/mlserver/setup.sh          # then: .venv/bin/python bench/serving.py
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${MLSERVER_VENV:-$HERE/../../.venv-mlserver}"
PY="${PYTHON:-python3}"
MLSERVER_VERSION="${MLSERVER_VERSION:-1.7.1}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import mlserver, onnxruntime, uvloop; assert tuple(map(int, uvloop.__version__.split('.')[:2])) < (0, 22)" 2>/dev/null; then
    echo "mlserver venv ready: $VENV ($("$VENV/bin/mlserver" --version 2>/dev/null || true))"
    exit 0
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# uvloop < 0.22: from 0.22 on, asyncio.get_event_loop() without a running loop raises, and
# MLServer 1.7.1's parallel inference workers call it at start-up (every worker dies).
"$VENV/bin/pip" install --quiet "mlserver==$MLSERVER_VERSION" onnxruntime numpy "uvloop<0.22"
"$VENV/bin/python" -c "import mlserver, onnxruntime; print('mlserver', mlserver.__version__, 'onnxruntime', onnxruntime.__version__)"
echo "mlserver venv ready: $VENV"
