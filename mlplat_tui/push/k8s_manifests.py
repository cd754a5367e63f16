"""The Kubernetes manifests a ``gitops-k8s`` target commits: one bundle image, served safely.

A Deployment and a Service, or (``kserve = true``) a KServe InferenceService with a custom
container instead (KServe makes its own Deployment and Service from it). What every rendering
holds, and why:

- the image by digest, never by tag: what was gated is what runs;
- ``RollingUpdate`` with ``maxUnavailable: 0`` and ``maxSurge: 1``: a new pod must turn ready
  before an old one goes, so capacity never drops during a push;
- a startup probe (the model loads and warms up before liveness counts), readiness on
  ``/v2/health/ready`` (true only after a warm-up inference) and liveness on ``/v2/health/live``;
- a preStop sleep so endpoints drop the pod before serving stops, within the grace period;
- resources from the target (requests = limits for CPU and memory); the GPU in ``limits`` only
  (Kubernetes sets an extended resource's request to its limit);
- labels naming the model, version and bundle digest on the pods; a selector (Deployment and
  Service) of the model's labels only, so it stays the same from push to push (it is immutable);
- non-root, no privilege escalation, no capabilities, a read-only root filesystem with
  ``emptyDir`` volumes where serving writes (``/tmp`` and its admin-token folder).

The output is deterministic (sorted keys, no timestamps): the same bundle renders the same
bytes, so pushing it again changes nothing in the repository and commits diff well.

Imports PyYAML, the push seam and the project's target model only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from mlplat_tui.project.targets import GitopsK8sTarget, Resources
from mlplat_tui.push.engine import ImageRef

SERVING_PORT = 7802  # the runtime image's inference port (Dockerfile, target runtime)
RUN_AS = 10001  # the runtime image's mlplat user and group
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
PRESTOP_SLEEP_S = 5
GRACE_S = 30  # > preStop sleep + the longest request serving lets finish on SIGTERM
PROGRESS_DEADLINE_S = 600
GPU_RESOURCE = "nvidia.com/gpu"
LABEL_MODEL = "mlplat.io/model"
LABEL_VERSION = "mlplat.io/version"
LABEL_BUNDLE = "mlplat.io/bundle-digest"  # the first 12 hex digits: a label value holds 63 chars
ANNOTATION_BUNDLE = "mlplat.io/bundle-id"  # the full sha256:<hex>
ANNOTATION_IMAGE = "mlplat.io/image"
MANAGED_BY = "mlplat"
# Which file holds which kind: one resource per file, so a diff names the resource it changes.
FILE_OF_KIND = {
    "Deployment": "deployment.yaml",
    "Service": "service.yaml",
    "InferenceService": "inferenceservice.yaml",
}
_DNS_LABEL_BAD = re.compile(r"[^a-z0-9-]+")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ManifestSpec:
    """Everything a rendering depends on (nothing else: no clock, no environment)."""

    model_name: str
    version: str
    bundle_id: str  # "sha256:<hex>"
    image: ImageRef
    replicas: int = 1
    cpus: float | None = None
    memory: str | None = None  # as in mlplat.toml: "512m", "2g", bytes
    gpu: int = 0
    namespace: str | None = None
    kserve: bool = False
    kubernetes_version: str = "1.33"

    @classmethod
    def for_target(
        cls, target: GitopsK8sTarget, model_name: str, version: str, bundle_id: str, image: ImageRef
    ) -> ManifestSpec:
        res: Resources = target.resources
        return cls(
            model_name=model_name,
            version=version,
            bundle_id=bundle_id,
            image=image,
            replicas=target.replicas,
            cpus=res.cpus,
            memory=res.memory,
            gpu=target.gpu,
            namespace=target.namespace,
            kserve=target.kserve,
            kubernetes_version=target.kubernetes_version,
        )


def resource_name(model_name: str) -> str:
    """A DNS-1123 label (Service names are at most 63 characters) for the model."""
    name = _DNS_LABEL_BAD.sub("-", model_name.lower()).strip("-")[:63].rstrip("-")
    return name or "model"


def label_value(value: str) -> str:
    """A valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    return _LABEL_VALUE_BAD.sub("-", value)[:63].strip("._-")


def short_bundle(bundle_id: str) -> str:
    return bundle_id.removeprefix("sha256:")[:12]


def k8s_memory(memory: str) -> str:
    """mlplat.toml's sizes (Docker's units: k, m, g are binary) as Kubernetes quantities."""
    unit = memory[-1].lower()
    if unit in "kmg":
        return memory[:-1] + {"k": "Ki", "m": "Mi", "g": "Gi"}[unit]
    return memory  # bytes


def k8s_cpu(cpus: float) -> str:
    milli = round(cpus * 1000)
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def selector_labels(spec: ManifestSpec) -> dict[str, str]:
    """What the Deployment and Service select on: the model only (never the version)."""
    return {
        "app.kubernetes.io/name": resource_name(spec.model_name),
        LABEL_MODEL: label_value(spec.model_name),
    }


def pod_labels(spec: ManifestSpec) -> dict[str, str]:
    return {
        **selector_labels(spec),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": label_value(spec.version),
        LABEL_VERSION: label_value(spec.version),
        LABEL_BUNDLE: short_bundle(spec.bundle_id),
    }


def _metadata(spec: ManifestSpec) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": resource_name(spec.model_name),
        "labels": pod_labels(spec),
        "annotations": {
            ANNOTATION_BUNDLE: spec.bundle_id,
            ANNOTATION_IMAGE: spec.image.pinned,
            "mlplat.io/model-name": spec.model_name,
            "mlplat.io/model-version": spec.version,
        },
    }
    if spec.namespace is not None:
        meta["namespace"] = spec.namespace
    return meta


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _resources(spec: ManifestSpec) -> dict[str, Any]:
    fixed: dict[str, str] = {}
    if spec.cpus is not None:
        fixed["cpu"] = k8s_cpu(spec.cpus)
    if spec.memory is not None:
        fixed["memory"] = k8s_memory(spec.memory)
    limits: dict[str, Any] = dict(fixed)
    if spec.gpu:
        limits[GPU_RESOURCE] = spec.gpu
    out: dict[str, Any] = {}
    if fixed:
        out["requests"] = dict(fixed)
    if limits:
        out["limits"] = limits
    return out


def _prestop(spec: ManifestSpec) -> dict[str, Any]:
    if _minor(spec.kubernetes_version) >= 30:  # the sleep action: on by default since 1.30
        return {"sleep": {"seconds": PRESTOP_SLEEP_S}}
    return {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}


def container(spec: ManifestSpec, name: str = "serving") -> dict[str, Any]:
    """The serving container; the image's own command serves the bundle baked into it."""
    return {
        "name": name,
        "image": spec.image.pinned,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        # up to 5 min to load and warm up before liveness counts
        "startupProbe": _probe(READY_PATH, period=5, failures=60),
        "readinessProbe": _probe(READY_PATH, period=5, failures=2),
        "livenessProbe": _probe(LIVE_PATH, period=10, failures=3),
        "lifecycle": {"preStop": _prestop(spec)},
        "resources": _resources(spec),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "admin-token", "mountPath": "/etc/mlplat"},
        ],
    }


def _pod_spec_extras() -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": GRACE_S,
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "admin-token", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ],
    }


def deployment(spec: ManifestSpec) -> dict[str, Any]:
    meta = _metadata(spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": PROGRESS_DEADLINE_S,
            "minReadySeconds": 5,
            "selector": {"matchLabels": selector_labels(spec)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": pod_labels(spec), "annotations": dict(meta["annotations"])},
                "spec": {"containers": [container(spec)], **_pod_spec_extras()},
            },
        },
    }


def service(spec: ManifestSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec),
            "ports": [{"name": "http", "port": SERVING_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def inference_service(spec: ManifestSpec) -> dict[str, Any]:
    """KServe's v1beta1 InferenceService with a custom predictor container (our runtime speaks
    the same Open Inference Protocol v2 as KServe's own servers)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(spec),
        "spec": {
            "predictor": {
                "minReplicas": spec.replicas,
                "maxReplicas": spec.replicas,
                "containers": [container(spec, name="kserve-container")],
                **_pod_spec_extras(),
            }
        },
    }


def render(spec: ManifestSpec) -> list[dict[str, Any]]:
    """The documents, in a fixed order."""
    if spec.kserve:
        return [inference_service(spec)]
    return [deployment(spec), service(spec)]


def dump(doc: dict[str, Any]) -> str:
    """One document as deterministic YAML (sorted keys, block style, no anchors)."""
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=False, width=100)


def files(docs: list[dict[str, Any]]) -> dict[str, str]:
    """``{file name: YAML}`` for the folder the target commits."""
    out: dict[str, str] = {}
    for doc in docs:
        name = FILE_OF_KIND.get(str(doc.get("kind")), f"{str(doc.get('kind')).lower()}.yaml")
        out[name] = "# Written by mlplat push; edits here are replaced by the next push.\n" + dump(doc)
    return out
