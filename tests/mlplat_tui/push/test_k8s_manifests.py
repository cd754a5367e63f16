"""The gitops-k8s manifests: rendered safely, deterministic, valid against the real Kubernetes
API schemas (kubernetes-validate, strict), and each broken fixture refused by its named rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from mlplat_runtime.errors import TargetError
from mlplat_tui.push import k8s_manifests as km
from mlplat_tui.push.engine import ImageRef
from mlplat_tui.push.k8s_validate import ManifestRefused, check, findings, schema_version

DIGEST = "sha256:" + "ab" * 32
BUNDLE = "sha256:" + "c3" * 32
IMAGE = ImageRef("127.0.0.1:5001/mlplat/churn-classifier", DIGEST, tag="3")


def spec(**kw: Any) -> km.ManifestSpec:
    base: dict[str, Any] = dict(
        model_name="churn-classifier",
        version="3",
        bundle_id=BUNDLE,
        image=IMAGE,
        replicas=2,
        cpus=0.5,
        memory="512m",
        gpu=0,
        kubernetes_version="1.33",
    )
    base.update(kw)
    return km.ManifestSpec(**base)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def rules(docs: list[dict[str, Any]], version: str = "1.33") -> set[str]:
    return {f.rule for f in findings(docs, version)}


@pytest.mark.parametrize("version", ["1.33", "1.29", "1.37"])
@pytest.mark.parametrize("kserve", [False, True])
def test_the_manifests_validate_strictly(version: str, kserve: bool) -> None:
    docs = km.render(spec(kubernetes_version=version, kserve=kserve, gpu=1, namespace="ml"))
    assert findings(docs, version) == []
    check(docs, version)  # does not raise
    kinds = [d["kind"] for d in docs]
    assert kinds == (["InferenceService"] if kserve else ["Deployment", "Service"])


def test_the_deployment_is_a_safe_rollout() -> None:
    dep = by_kind(km.render(spec(gpu=2)), "Deployment")
    s = dep["spec"]
    assert s["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = s["template"]
    (c,) = pod["spec"]["containers"]
    assert c["image"] == f"127.0.0.1:5001/mlplat/churn-classifier@{DIGEST}"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": km.PRESTOP_SLEEP_S}}
    assert pod["spec"]["terminationGracePeriodSeconds"] > km.PRESTOP_SLEEP_S
    # GPU in limits only; CPU and memory requested as limited (Docker's 512m is 512 MiB)
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi", "nvidia.com/gpu": 2}
    assert c["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"/tmp", "/etc/mlplat"}  # where serving writes, with the root fs read-only
    labels = pod["metadata"]["labels"]
    assert labels[km.LABEL_MODEL] == "churn-classifier" and labels[km.LABEL_VERSION] == "3"
    assert labels[km.LABEL_BUNDLE] == "c3" * 6
    assert pod["metadata"]["annotations"][km.ANNOTATION_BUNDLE] == BUNDLE
    # the selector is the model's labels only: the same from push to push
    sel = s["selector"]["matchLabels"]
    assert sel.items() <= labels.items() and km.LABEL_VERSION not in sel
    svc = by_kind(km.render(spec()), "Service")
    assert svc["spec"]["selector"] == sel


def test_older_clusters_get_an_exec_prestop() -> None:
    dep = by_kind(km.render(spec(kubernetes_version="1.28")), "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", str(km.PRESTOP_SLEEP_S)]}}
    assert findings([dep], "1.28") == []


def test_rendering_is_deterministic_and_sorted() -> None:
    a = km.files(km.render(spec()))
    b = km.files(km.render(spec()))
    assert a == b and sorted(a) == ["deployment.yaml", "service.yaml"]
    text = a["deployment.yaml"]
    doc = yaml.safe_load(text)
    assert list(doc) == sorted(doc)  # keys sorted at every level written
    assert "&id" not in text and "*id" not in text  # no YAML anchors
    other = km.files(km.render(spec(version="4", bundle_id="sha256:" + "d4" * 32)))
    assert other["deployment.yaml"] != text


def test_names_and_sizes() -> None:
    assert km.resource_name("Churn_Classifier.v2") == "churn-classifier-v2"
    assert km.k8s_memory("2g") == "2Gi" and km.k8s_memory("1048576") == "1048576"
    assert km.k8s_cpu(2.0) == "2" and km.k8s_cpu(0.25) == "250m"


# -- broken fixtures: each is refused, naming its rule -----------------------------------------


def _good() -> list[dict[str, Any]]:
    return copy.deepcopy(km.render(spec(gpu=1)))


def _dep(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs, "Deployment")


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    c: dict[str, Any] = _dep(docs)["spec"]["template"]["spec"]["containers"][0]
    return c


def broken_surge_and_unavailable_zero(docs: list[dict[str, Any]]) -> None:
    _dep(docs)["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 0, "maxUnavailable": "0%"}


def broken_selector_mismatch(docs: list[dict[str, Any]]) -> None:
    _dep(docs)["spec"]["selector"]["matchLabels"]["mlplat.io/model"] = "another-model"


def broken_tag_not_digest(docs: list[dict[str, Any]]) -> None:
    _container(docs)["image"] = "127.0.0.1:5001/mlplat/churn-classifier:3"


def broken_gpu_requests_not_limits(docs: list[dict[str, Any]]) -> None:
    _container(docs)["resources"]["requests"]["nvidia.com/gpu"] = 2


def broken_no_readiness_probe(docs: list[dict[str, Any]]) -> None:
    del _container(docs)["readinessProbe"]


def broken_unknown_field(docs: list[dict[str, Any]]) -> None:
    _dep(docs)["spec"]["maxSurge"] = 1  # in the wrong place: strict schemas refuse it


def broken_recreate(docs: list[dict[str, Any]]) -> None:
    _dep(docs)["spec"]["strategy"] = {"type": "Recreate"}


def broken_service_selector(docs: list[dict[str, Any]]) -> None:
    by_kind(docs, "Service")["spec"]["selector"] = {"app.kubernetes.io/name": "nobody"}


def broken_version_in_selector(docs: list[dict[str, Any]]) -> None:
    _dep(docs)["spec"]["selector"]["matchLabels"][km.LABEL_VERSION] = "3"


def broken_runs_as_root(docs: list[dict[str, Any]]) -> None:
    del _dep(docs)["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    del _container(docs)["securityContext"]["runAsNonRoot"]


def broken_unavailable(docs: list[dict[str, Any]]) -> None:
    _dep(docs)["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 1


BROKEN = [
    (broken_surge_and_unavailable_zero, "rollout-no-progress", "maxSurge and maxUnavailable are both 0"),
    (broken_selector_mismatch, "selector-mismatch", "mlplat.io/model=another-model"),
    (broken_tag_not_digest, "image-not-digest", "is not pinned by digest"),
    (broken_gpu_requests_not_limits, "gpu-requests-limits", "requests 2 != limits 1"),
    (broken_no_readiness_probe, "readiness-probe-missing", "no readinessProbe"),
    (broken_unknown_field, "k8s-schema", "'maxSurge' was unexpected"),
    (broken_recreate, "rollout-strategy", "Recreate"),
    (broken_service_selector, "service-selector-mismatch", "app.kubernetes.io/name=nobody"),
    (broken_version_in_selector, "selector-pins-version", "mlplat.io/version"),
    (broken_runs_as_root, "runs-as-root", "runAsNonRoot"),
    (broken_unavailable, "rollout-drops-capacity", "maxUnavailable 1"),
]


@pytest.mark.parametrize(("breaks", "rule", "says"), BROKEN, ids=[r for _, r, _ in BROKEN])
def test_each_broken_fixture_is_refused_naming_its_rule(breaks: Any, rule: str, says: str) -> None:
    docs = _good()
    assert findings(docs, "1.33") == []
    breaks(docs)
    with pytest.raises(ManifestRefused) as info:
        check(docs, "1.33")
    assert rule in info.value.rules
    assert f"[{rule}]" in str(info.value) and says in str(info.value)
    assert "nothing was committed" in str(info.value)
    assert isinstance(info.value, TargetError)


def test_kserve_fields_outside_our_schema_are_refused() -> None:
    (isvc,) = km.render(spec(kserve=True))
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["canaryTrafficPercent"] = 10
    assert "kserve-schema" in rules([bad])
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["containers"][0]["imagePullPolicy"] = 7  # a Container per the API schema
    found = findings([bad], "1.33")
    assert [f.rule for f in found] == ["k8s-schema"]
    assert "spec.predictor.containers.0.imagePullPolicy" in found[0].message
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["containers"][0]["image"] = "churn:latest"
    assert "image-not-digest" in rules([bad])


def test_a_version_without_schemas_is_a_clear_error() -> None:
    assert schema_version("1.33") == "1.33"
    for version in ("1.99", "1.10"):
        with pytest.raises(TargetError, match="no Kubernetes API schemas for kubernetes_version"):
            findings(km.render(spec()), version)
