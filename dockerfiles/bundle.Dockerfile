# The image `mlplat push` deploys on a container target (Swarm, Kubernetes, KServe): the runtime
# image with one bundle baked in, served from the moment the container starts. Built by
# mlplat_tui/push/image.py with a context of this file and bundle/ (the verified bundle folder);
# the same bundle gives the same image, pushed as <version>-<bundle id 12> and pinned by digest.
#
# RUNTIME_IMAGE is the runtime stage of the repository's Dockerfile (`mlplat images build`),
# itself built on BASE_IMAGE (python:3.11-slim, or mlplat-base:bookworm offline).
ARG RUNTIME_IMAGE=mlplat-runtime:latest
FROM ${RUNTIME_IMAGE}
ARG MLPLAT_MODEL=unknown
ARG MLPLAT_MODEL_VERSION=unknown
ARG MLPLAT_BUNDLE_ID=unknown
COPY --chown=10001:10001 bundle /opt/mlplat/bundle
ENV MLPLAT_SERVICE=serving \
    MLPLAT_IMAGE=bundle \
    MLPLAT_BUNDLE=/opt/mlplat/bundle
USER mlplat
# Readiness, not liveness: the engines route to a replica only once its model is warm
# (healthcheck.py reads /v2/health/ready; the image has python, not curl).
HEALTHCHECK --interval=2s --timeout=2s --start-period=30s --retries=3 \
    CMD ["/opt/mlplat/bin/python", "-I", "/opt/mlplat/healthcheck.py"]
# The admin API stays inside the container (127.0.0.1): the bundle is baked in, nothing loads
# another one, and the inference port is the only one a cluster reaches.
CMD ["python", "-m", "mlplat_runtime.serving", "/opt/mlplat/bundle", "--host", "0.0.0.0", "--port", "7802", \
     "--admin-host", "127.0.0.1", "--admin-port", "7803", "--admin-token-file", "/etc/mlplat/admin.token"]
LABEL io.mlplat.image="bundle" \
      io.mlplat.model="${MLPLAT_MODEL}" \
      io.mlplat.model_version="${MLPLAT_MODEL_VERSION}" \
      io.mlplat.bundle="${MLPLAT_BUNDLE_ID}"
