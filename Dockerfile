# The images the docker stack runs, the same ones a production cluster runs (docs/docker.md).
#
#   runtime   the data plane: serving (MLPLAT_SERVICE=serving, the default) and the metadata
#             service (MLPLAT_SERVICE=metadata); mlplat_runtime and runtime/requirements.txt only
#   tracker   `mlflow server`; dockerfiles/requirements-tracker.txt (what the server needs, not the
#             training-side extras of the full `mlflow` package)
#
# Build with `mlplat images build` (streams progress, adds the lock labels), or by hand:
#   docker build --target runtime -t mlplat-runtime:latest .
#   docker build --target tracker -t mlplat-tracker:latest .
# Offline / no TLS to the index: fill ./wheelhouse first (scripts/build-wheelhouse.sh); when
# it holds wheels, pip installs from it alone (--no-index).
#
# Works on python:3.11-slim (python3 in /usr/local/bin) and on a plain Debian base with
# python3 + python3-venv (python3 in /usr/bin; scripts/make-base-image.sh): everything runs
# from one virtualenv at /opt/mlplat, whatever the base put python3.
#
# The tracker's stages come first: they do not depend on mlplat_runtime, so a change to the
# data plane never rebuilds them (the classic builder runs every stage before the target).
# The dependency stages hold the wheelhouse; the final stages copy only the virtualenv.
# Each image's lock label has its own ARG, so building one target leaves the other's stages
# as they were cached.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/mlplat \
    PATH=/opt/mlplat/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A fixed uid so files in named volumes keep one owner across image rebuilds. The data folders
# exist (owned by that user) so a fresh named volume mounted there starts with that owner.
RUN groupadd --system --gid 10001 mlplat \
 && useradd --system --uid 10001 --gid mlplat --home-dir /home/mlplat --create-home \
        --shell /usr/sbin/nologin mlplat \
 && install -d -o mlplat -g mlplat -m 0755 /var/lib/mlplat /var/lib/mlplat/tracker \
        /var/lib/mlplat/metadata /var/lib/mlplat/monitoring /bundles \
 && install -d -o mlplat -g mlplat -m 0700 /etc/mlplat

# ---------------------------------------------------------------------------------------------
FROM base AS tracker-deps
COPY dockerfiles/requirements-tracker.txt /tmp/build/requirements.txt
# The wheelhouse is optional: a COPY whose only source is a glob matching nothing fails, one
# with a file that always exists beside it does not (the wheels land in /tmp/build).
COPY dockerfiles/install-requirements.py wheelhous[e] /tmp/build/
# --no-deps: the list is the complete, pinned closure of what `mlflow server` needs; the
# resolver would pull the full package's training-side extras (scipy, scikit-learn, pyarrow,
# matplotlib) back in.
RUN python3 -m venv /opt/mlplat \
 && /opt/mlplat/bin/python /tmp/build/install-requirements.py /tmp/build/requirements.txt \
        --wheelhouse /tmp/build --lock /opt/mlplat/lock.txt --no-deps

# ---------------------------------------------------------------------------------------------
FROM base AS tracker
ARG MLPLAT_VERSION=dev
ARG MLPLAT_TRACKER_LOCK=unknown
COPY --from=tracker-deps /opt/mlplat /opt/mlplat
COPY dockerfiles/healthcheck.py /opt/mlplat/healthcheck.py
# Job execution spawns huey consumers for GenAI scorers, which the platform does not use.
# The service's command, ports, health path, data folder and environment are those of its spec
# in mlplat_tui/stack/services.py (tests/mlplat_tui/stack/test_services.py checks this file).
ENV MLPLAT_SERVICE=tracker \
    MLPLAT_IMAGE=tracker \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=false
USER mlplat
WORKDIR /home/mlplat
EXPOSE 7800
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 \
    CMD ["/opt/mlplat/bin/python", "-I", "/opt/mlplat/healthcheck.py"]
CMD ["python", "-m", "mlflow", "server", "--backend-store-uri", "sqlite:////var/lib/mlplat/tracker/mlflow.db", \
     "--serve-artifacts", "--artifacts-destination", "/var/lib/mlplat/tracker/artifacts", \
     "--host", "0.0.0.0", "--port", "7800", "--workers", "1"]
LABEL org.opencontainers.image.title="mlplat-tracker" \
      org.opencontainers.image.description="mlplat tracker: mlflow server" \
      io.mlplat.image="tracker" \
      io.mlplat.version="${MLPLAT_VERSION}" \
      io.mlplat.lock="${MLPLAT_TRACKER_LOCK}"

# ---------------------------------------------------------------------------------------------
FROM base AS runtime-deps
COPY runtime/requirements.txt /tmp/build/requirements.txt
COPY dockerfiles/requirements-cuda.txt /tmp/build/requirements-cuda.txt
COPY dockerfiles/install-requirements.py wheelhous[e] /tmp/build/
# RUNTIME_CUDA=1 adds the CUDA and cuDNN libraries onnxruntime-gpu needs to run on a GPU
# (about 2 GB); without them the image serves on the CPU even when given a GPU.
ARG RUNTIME_CUDA=0
RUN python3 -m venv /opt/mlplat \
 && /opt/mlplat/bin/python /tmp/build/install-requirements.py /tmp/build/requirements.txt \
        --wheelhouse /tmp/build --lock /opt/mlplat/lock.txt \
        $( [ "$RUNTIME_CUDA" = 1 ] && echo --also /tmp/build/requirements-cuda.txt )

# ---------------------------------------------------------------------------------------------
FROM base AS runtime
ARG MLPLAT_VERSION=dev
ARG MLPLAT_RUNTIME_LOCK=unknown
COPY --from=runtime-deps /opt/mlplat /opt/mlplat
COPY dockerfiles/healthcheck.py /opt/mlplat/healthcheck.py
COPY runtime/mlplat_runtime /opt/mlplat/app/mlplat_runtime
ENV PYTHONPATH=/opt/mlplat/app \
    MLPLAT_SERVICE=serving \
    MLPLAT_IMAGE=runtime
USER mlplat
WORKDIR /home/mlplat
EXPOSE 7801 7802 7803
# Serving answers ready once its models are warm; metadata once its store is open (the same
# script checks the endpoint of whichever service MLPLAT_SERVICE names).
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/mlplat/bin/python", "-I", "/opt/mlplat/healthcheck.py"]
CMD ["python", "-m", "mlplat_runtime.serving", "--host", "0.0.0.0", "--port", "7802", \
     "--admin-host", "0.0.0.0", "--admin-port", "7803", "--admin-token-file", "/etc/mlplat/admin.token"]
LABEL org.opencontainers.image.title="mlplat-runtime" \
      org.opencontainers.image.description="mlplat data plane: OIP v2 serving and the metadata service" \
      io.mlplat.image="runtime" \
      io.mlplat.version="${MLPLAT_VERSION}" \
      io.mlplat.lock="${MLPLAT_RUNTIME_LOCK}"
