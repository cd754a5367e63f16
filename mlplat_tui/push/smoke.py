"""The smoke test of a push: the target's own endpoint answers as the bundle says it must.

Three checks, each a ``SmokeCheck`` in the receipt:

- **metadata**: ``GET /v2/models/{name}`` names the new version and lists the bundle's signature
  (every input and output: name, datatype, shape);
- **samples**: the bundle's sample inputs, sent as one batch and then row by row (what production
  traffic looks like), give its expected outputs within serving's own tolerance
  (``serving.model.outputs_mismatch``); a model whose answer depends on the batch it came in
  passes serving's load check and fails here;
- **version**: every response names the new ``model_version``.

An engine with no live endpoint (gitops: the cluster applies the commit later) is recorded as
skipped, with why. Plain HTTP to an address that is not loopback is refused unless the push was
given ``--insecure``.

Imports numpy, httpx and the bundle reader; never the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from mlplat_runtime.bundle import Bundle

ROWS_ALONE = 8  # sample rows also sent one by one


@dataclass(frozen=True)
class SmokeCheck:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    skipped: bool
    reason: str  # why it failed or was skipped; "" when it passed
    checks: tuple[SmokeCheck, ...] = ()
    requests: int = 0
    versions_seen: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "skipped": self.skipped,
            "reason": self.reason,
            "requests": self.requests,
            "versions_seen": list(self.versions_seen),
            "checks": [c.__dict__ for c in self.checks],
        }


def skipped(reason: str) -> SmokeResult:
    return SmokeResult(passed=True, skipped=True, reason=reason)


def _body(inputs: dict[str, Any], spec_types: Mapping[str, str]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": name,
                "datatype": spec_types[name],
                "shape": list(arr.shape),
                "data": arr.ravel().tolist(),
            }
            for name, arr in inputs.items()
        ]
    }


def _batchable(bundle: Bundle) -> bool:
    sig = bundle.manifest.signature
    return all(t.shape[:1] == (-1,) for t in (*sig.inputs, *sig.outputs))


def smoke_test(endpoint: str, bundle: Bundle, version: str, *, timeout: float = 30.0) -> SmokeResult:
    """Run the three checks against ``endpoint`` (``http://host:port``) for ``bundle`` at ``version``."""
    import numpy as np

    from mlplat_runtime.serving.model import outputs_mismatch

    name = bundle.manifest.model_name
    sig = bundle.manifest.signature
    checks: list[SmokeCheck] = []
    seen: list[str] = []
    requests = 0
    with httpx.Client(base_url=endpoint.rstrip("/"), timeout=timeout, trust_env=False) as http:
        try:
            meta_resp = http.get(f"/v2/models/{name}")
            requests += 1
        except httpx.HTTPError as exc:
            return SmokeResult(False, False, f"the endpoint {endpoint} did not answer: {exc}")
        if meta_resp.status_code != 200:
            return SmokeResult(
                False, False, f"GET /v2/models/{name} answered {meta_resp.status_code}", requests=requests
            )
        meta = meta_resp.json()
        versions = [str(v) for v in meta.get("versions") or []]
        seen += versions
        want = {
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in sig.inputs],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in sig.outputs
            ],
        }
        got = {
            k: [{f: d.get(f) for f in ("name", "datatype", "shape")} for d in meta.get(k) or []] for k in want
        }
        problems = [
            f"{k} differ: serving has {got[k]}, the bundle {want[k]}" for k in want if got[k] != want[k]
        ]
        if version not in versions:
            problems.append(f"serving names version(s) {versions}, not v{version}")
        checks.append(
            SmokeCheck("metadata", not problems, "; ".join(problems) or "signature and version match")
        )

        inputs, expected = bundle.samples()
        types = {t.name: t.datatype for t in sig.inputs}
        batches: list[dict[str, Any]] = [dict(inputs)]
        rows = min(int(next(iter(inputs.values())).shape[0]) if inputs else 0, ROWS_ALONE)
        if _batchable(bundle) and rows > 1:
            batches += [{k: np.asarray(v)[i : i + 1] for k, v in inputs.items()} for i in range(rows)]
        wrong: list[str] = []
        failed: list[str] = []
        for index, batch in enumerate(batches):
            try:
                resp = http.post(f"/v2/models/{name}/infer", json=_body(batch, types))
                requests += 1
            except httpx.HTTPError as exc:
                failed.append(f"request {index}: {exc}")
                continue
            if resp.status_code != 200:
                failed.append(f"request {index}: HTTP {resp.status_code} {resp.text[:200]}")
                continue
            answer = resp.json()
            seen.append(str(answer.get("model_version")))
            by_name = {o["name"]: o for o in answer.get("outputs") or []}
            for out_name, full in expected.items():
                want_arr = np.asarray(full) if index == 0 else np.asarray(full)[index - 1 : index]
                out = by_name.get(out_name)
                if out is None:
                    wrong.append(f"request {index}: no output {out_name}")
                    continue
                got_arr = np.asarray(out["data"], dtype=want_arr.dtype).reshape(out["shape"])
                why = outputs_mismatch(out_name, got_arr, want_arr)
                if why is not None:
                    wrong.append(f"{'batch' if index == 0 else f'row {index - 1} alone'}: {why}")
        detail = "; ".join(failed + wrong[:5]) or f"{len(batches)} request(s) gave the expected outputs"
        checks.append(SmokeCheck("samples", not failed and not wrong, detail))
    others = sorted({v for v in seen if v != version})
    checks.append(
        SmokeCheck(
            "version",
            not others,
            f"every response names v{version}"
            if not others
            else f"responses named {others}, not only v{version}",
        )
    )
    bad = [c for c in checks if not c.passed]
    reason = "; ".join(f"{c.name}: {c.detail}" for c in bad)
    return SmokeResult(not bad, False, reason, tuple(checks), requests, tuple(seen))
