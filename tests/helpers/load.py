"""A bounded inference load for swap tests: a few clients posting one request at a time.

Each client waits for its answer, then pauses briefly, until ``stop``; every outcome is kept so
a test can assert that no request failed and that no client saw an older version after a newer.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import httpx
import numpy as np


class InferenceLoad:
    def __init__(self, url: str, body: dict[str, Any], *, clients: int = 2, pause_s: float = 0.01) -> None:
        self.url, self.body, self.pause_s = url, body, pause_s
        self.outcomes: list[tuple[int, int, str]] = []  # (client, status, model_version or error)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def _client(self, n: int) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                try:
                    r = http.post(self.url, json=self.body)
                    ok = r.status_code == 200
                    item = (n, r.status_code, str(r.json()["model_version"]) if ok else r.text)
                except httpx.HTTPError as exc:
                    item = (n, 0, repr(exc))
                with self._lock:
                    self.outcomes.append(item)
                time.sleep(self.pause_s)

    def __enter__(self) -> InferenceLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    @property
    def failures(self) -> list[tuple[int, int, str]]:
        return [o for o in self.outcomes if o[1] != 200]

    def versions_never_go_back(self) -> bool:
        """Each swap is atomic: per client, the versions seen only ever increase."""
        for n in range(len(self._threads)):
            seen = np.array([int(v) for c, s, v in self.outcomes if c == n and s == 200])
            if not seen.size or np.any(np.diff(seen) < 0):
                return False
        return True


def infer_body(rows: np.ndarray, name: str = "input") -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }
