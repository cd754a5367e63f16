"""Offline checks of the manifests a ``gitops-k8s`` push commits, before anything is committed.

Two layers, each finding a named rule with a message that says what is wrong and what to do:

- ``k8s-schema``: the Kubernetes API schemas of the target's ``kubernetes_version``, strict (an
  unknown field is an error), from the ``kubernetes-validate`` package. KServe's
  InferenceService is a CRD those schemas do not hold: its envelope is checked against a small
  schema of our own for the fields mlplat emits (``kserve-schema``), and each of its containers
  as a Kubernetes ``Container`` (wrapped in a Pod for the API schema).
- mlplat's own lints, what a valid manifest can still get wrong for a safe rollout:

  ==========================  ==============================================================
  rule                        refuses
  ==========================  ==============================================================
  rollout-strategy            a Deployment that is not ``RollingUpdate`` (Recreate drops all)
  rollout-no-progress         ``maxSurge`` and ``maxUnavailable`` both 0: the rollout can't move
  rollout-drops-capacity      ``maxUnavailable`` above 0: serving capacity drops during a push
  selector-mismatch           a Deployment selector the pod template's labels do not match
  service-selector-mismatch   a Service selector the model's pods do not carry
  selector-pins-version       a selector on the version or bundle label (immutable in a
                              Deployment: the next push could not be applied)
  image-not-digest            an image by tag (``:latest``) instead of ``@sha256:<digest>``
  gpu-requests-limits         ``nvidia.com/gpu`` requests that differ from its limits
  readiness-probe-missing     a serving container with no readiness probe
  liveness-probe-missing      a serving container with no liveness probe
  runs-as-root                a pod that does not set ``runAsNonRoot: true``
  ==========================  ==============================================================

``check`` raises ``ManifestRefused`` (a ``TargetError``: nothing was committed) listing every
finding; ``findings`` returns them for callers that only report (``--dry-run``).

Imports kubernetes-validate, jsonschema, the runtime's errors and ``push.k8s_manifests`` only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mlplat_runtime.errors import TargetError
from mlplat_tui.push.k8s_manifests import GPU_RESOURCE, LABEL_BUNDLE, LABEL_VERSION

_DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
_PINNED_LABELS = (LABEL_VERSION, LABEL_BUNDLE, "app.kubernetes.io/version")
KSERVE_API = "serving.kserve.io/v1beta1"

_LABELS = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}}
_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
# The InferenceService fields mlplat emits, strict: anything else is refused.
KSERVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": KSERVE_API},
        "kind": {"const": "InferenceService"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": _NAME,
                "namespace": _NAME,
                "labels": _LABELS,
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["predictor"],
            "properties": {
                "predictor": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["containers"],
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "containers": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                        # pod-level fields (KServe's PodSpec inline): checked as a Pod's below
                        "automountServiceAccountToken": {"type": "boolean"},
                        "securityContext": {"type": "object"},
                        "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
                        "volumes": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
        },
    },
}
_POD_FIELDS = ("automountServiceAccountToken", "securityContext", "terminationGracePeriodSeconds", "volumes")


@dataclass(frozen=True)
class Finding:
    rule: str
    resource: str  # "Deployment/churn-classifier"
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        return f"[{self.rule}] {self.resource}: {self.message}"


class ManifestRefused(TargetError):
    """The manifests broke a schema or a lint: nothing was committed."""

    def __init__(self, findings: list[Finding], kubernetes_version: str) -> None:
        lines = "\n".join(f"  {f}" for f in findings)
        super().__init__(
            f"the Kubernetes manifests were refused ({len(findings)} finding"
            f"{'s' if len(findings) != 1 else ''}, Kubernetes {kubernetes_version}); nothing was committed:\n"
            f"{lines}",
            hint="fix the target's settings (replicas, resources, gpu) or the manifest template; "
            "each [rule] is described in mlplat_tui/push/k8s_validate.py and docs/push.md",
        )
        self.findings = findings
        self.rules = tuple(f.rule for f in findings)


def _name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?') if isinstance(meta, dict) else '?'}"


def _where(path: Iterable[object]) -> str:
    return ".".join(str(p) for p in path) or "(top)"


def schema_version(kubernetes_version: str) -> str:
    """The schema set that validates ``kubernetes_version`` (the newest not newer than it), or a
    ``TargetError`` saying which versions the installed ``kubernetes-validate`` ships."""
    from kubernetes_validate import utils

    want = utils.major_minor(kubernetes_version)
    shipped = sorted({utils.major_minor(v) for v in utils.all_versions()}, key=utils.Version)
    usable = [v for v in shipped if utils.Version(v) <= utils.Version(want)]
    if utils.Version(want) > utils.Version(shipped[-1]) or not usable:
        raise TargetError(
            f"no Kubernetes API schemas for kubernetes_version {kubernetes_version}: the installed "
            f"kubernetes-validate ships {shipped[0]} to {shipped[-1]}",
            hint="set kubernetes_version to your cluster's version within that range, or upgrade "
            "kubernetes-validate (pip install -U kubernetes-validate)",
        )
    return usable[-1]


def _api_schema(doc: dict[str, Any], version: str, resource: str) -> Iterator[Finding]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        yield Finding(
            "k8s-schema",
            resource,
            f"at {_where(exc.absolute_path)}: {exc.message} (Kubernetes {version} API schema, strict)",
        )
    except kubernetes_validate.SchemaNotFoundError as exc:
        yield Finding("k8s-schema", resource, f"{exc.message}: not a resource mlplat can validate")


def _kserve_schema(doc: dict[str, Any], version: str, resource: str) -> Iterator[Finding]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(KSERVE_SCHEMA)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        yield Finding("kserve-schema", resource, f"at {_where(err.absolute_path)}: {err.message}")
    predictor = doc.get("spec", {}).get("predictor", {}) if isinstance(doc.get("spec"), dict) else {}
    if not isinstance(predictor, dict) or not isinstance(predictor.get("containers"), list):
        return
    pod_spec = {k: predictor[k] for k in _POD_FIELDS if k in predictor}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor"},
        "spec": {**pod_spec, "containers": predictor["containers"]},
    }
    for f in _api_schema(pod, version, resource):
        yield Finding("k8s-schema", resource, f.message.replace("at spec.", "at spec.predictor.", 1))


def _pod_of(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(pod labels, pod spec) of a Deployment or an InferenceService's predictor."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return None
    if doc.get("kind") == "Deployment":
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        return dict(labels), dict(template.get("spec") or {})
    if doc.get("kind") == "InferenceService":
        labels = (doc.get("metadata") or {}).get("labels") or {}
        return dict(labels), dict(spec.get("predictor") or {})
    return None


def _lint_deployment(doc: dict[str, Any], resource: str) -> Iterator[Finding]:
    spec = doc.get("spec") or {}
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type", "RollingUpdate")
    if kind != "RollingUpdate":
        yield Finding(
            "rollout-strategy",
            resource,
            f"strategy {kind} stops every old pod before a new one is ready; use RollingUpdate",
        )
    rolling = strategy.get("rollingUpdate") or {}
    surge = rolling.get("maxSurge", "25%")
    unavailable = rolling.get("maxUnavailable", "25%")
    if kind == "RollingUpdate" and _zero(surge) and _zero(unavailable):
        yield Finding(
            "rollout-no-progress",
            resource,
            "maxSurge and maxUnavailable are both 0: Kubernetes can neither add a new pod nor remove "
            "an old one, so the rollout never moves; use maxSurge: 1, maxUnavailable: 0",
        )
    elif kind == "RollingUpdate" and not _zero(unavailable):
        yield Finding(
            "rollout-drops-capacity",
            resource,
            f"maxUnavailable {unavailable!r} lets old pods stop before new ones are ready; use "
            "maxUnavailable: 0 with maxSurge: 1",
        )
    selector = ((spec.get("selector") or {}).get("matchLabels")) or {}
    pod = _pod_of(doc)
    labels = pod[0] if pod else {}
    if not selector:
        yield Finding(
            "selector-mismatch", resource, "no selector.matchLabels: select on the model's pod labels"
        )
    wrong = {k: v for k, v in selector.items() if labels.get(k) != v}
    if wrong:
        yield Finding(
            "selector-mismatch",
            resource,
            f"selector.matchLabels {_show(wrong)} not on the pod template's labels {_show(labels)}: "
            "the Deployment would own no pods (the API refuses it); select on labels the template has",
        )
    yield from _lint_pinned_selector(selector, resource, "selector.matchLabels")


def _lint_pinned_selector(selector: dict[str, Any], resource: str, where: str) -> Iterator[Finding]:
    pinned = sorted(k for k in selector if k in _PINNED_LABELS)
    if pinned:
        yield Finding(
            "selector-pins-version",
            resource,
            f"{where} uses {', '.join(pinned)}, which change with every push: a Deployment's selector "
            "is immutable and a Service would drop the old pods at once; select on the model only",
        )


def _zero(value: object) -> bool:
    return value in (0, "0", "0%")


def _show(labels: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def _lint_pod(doc: dict[str, Any], resource: str) -> Iterator[Finding]:
    pod = _pod_of(doc)
    if pod is None:
        return
    _, spec = pod
    pod_ctx = spec.get("securityContext") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    inits = [c for c in spec.get("initContainers") or [] if isinstance(c, dict)]
    for c in [*containers, *inits]:
        name = c.get("name", "?")
        image = str(c.get("image", ""))
        if not _DIGEST_RE.search(image):
            yield Finding(
                "image-not-digest",
                resource,
                f"container {name} image {image!r} is not pinned by digest: a tag can move after the "
                "gates passed; use repository@sha256:<64 hex> (mlplat push pins the image it built)",
            )
        gpu = _gpu(c)
        if gpu is not None:
            yield Finding("gpu-requests-limits", resource, f"container {name}: {gpu}")
        ctx = c.get("securityContext") or {}
        non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if non_root is not True:
            yield Finding(
                "runs-as-root",
                resource,
                f"container {name} may run as root: set securityContext.runAsNonRoot: true "
                "(the runtime image runs as uid 10001)",
            )
    for c in containers:
        name = c.get("name", "?")
        if not c.get("readinessProbe"):
            yield Finding(
                "readiness-probe-missing",
                resource,
                f"container {name} has no readinessProbe: traffic would reach it before the model "
                "is warm; probe GET /v2/health/ready",
            )
        if not c.get("livenessProbe"):
            yield Finding(
                "liveness-probe-missing",
                resource,
                f"container {name} has no livenessProbe: a hung server would never restart; "
                "probe GET /v2/health/live",
            )


def _gpu(c: dict[str, Any]) -> str | None:
    res = c.get("resources") or {}
    requests = (res.get("requests") or {}).get(GPU_RESOURCE)
    limits = (res.get("limits") or {}).get(GPU_RESOURCE)
    if requests is None:
        return None
    if limits is None:
        return (
            f"{GPU_RESOURCE} requested ({requests}) with no limit: an extended resource must be in "
            "limits; put it in limits only"
        )
    if str(requests) != str(limits):
        return (
            f"{GPU_RESOURCE} requests {requests} != limits {limits}: GPUs cannot be overcommitted, "
            "the API refuses it; put the GPU count in limits only"
        )
    return None


def _lint_services(docs: list[dict[str, Any]]) -> Iterator[Finding]:
    pods = [p[0] for p in (_pod_of(d) for d in docs) if p is not None]
    for doc in docs:
        if doc.get("kind") != "Service":
            continue
        resource = _name(doc)
        selector = (doc.get("spec") or {}).get("selector") or {}
        if not selector:
            yield Finding(
                "service-selector-mismatch", resource, "no selector: the Service would reach no pods"
            )
            continue
        if pods and not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pods):
            yield Finding(
                "service-selector-mismatch",
                resource,
                f"selector {_show(selector)} matches none of the model's pods ({_show(pods[0])}): "
                "the Service would have no endpoints",
            )
        yield from _lint_pinned_selector(selector, resource, "selector")


def findings(docs: list[dict[str, Any]], kubernetes_version: str) -> list[Finding]:
    """Every schema and lint finding, in document order (empty: the manifests may be committed)."""
    version = schema_version(kubernetes_version)
    out: list[Finding] = []
    for doc in docs:
        resource = _name(doc)
        if doc.get("apiVersion") == KSERVE_API and doc.get("kind") == "InferenceService":
            out.extend(_kserve_schema(doc, version, resource))
        else:
            out.extend(_api_schema(doc, version, resource))
        if doc.get("kind") == "Deployment":
            out.extend(_lint_deployment(doc, resource))
        out.extend(_lint_pod(doc, resource))
    out.extend(_lint_services(docs))
    return out


def check(docs: list[dict[str, Any]], kubernetes_version: str) -> None:
    """Raise ``ManifestRefused`` naming every finding; return quietly when there is none."""
    found = findings(docs, kubernetes_version)
    if found:
        raise ManifestRefused(found, kubernetes_version)
