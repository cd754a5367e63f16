"""The model repository: model name -> the version serving now, and the hot swap.

A load (``Repository.load``) never touches what is serving until the new version has proved
itself: the bundle is opened and verified, its signature compared with the serving one, the
model checked in the warm child process (a crash there cannot take this process down), then
loaded here off to the side, warmed up and its sample outputs compared. Only then is it
switched in with one dict assignment under a lock; a request that already picked the old
``LoadedModel`` finishes on it, the next one gets the new one, so no request fails during a
swap. Loads are serialized; a failed load leaves the old version serving and records why.

Readers (every inference request) do a plain ``dict.get``, atomic under the GIL, no lock.

Plain class, no HTTP. Must not import textual, mlflow, docker or mlplat_tui.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mlplat_runtime.bundle.manifest import Manifest
from mlplat_runtime.bundle.signature import compatibility_problems
from mlplat_runtime.errors import MlplatError, ModelLoadError, NotFoundError, RequestError
from mlplat_runtime.providers import batch_threads
from mlplat_runtime.serving.batching import BatchingConfig, batch_dimension_problems
from mlplat_runtime.serving.checker import Checker
from mlplat_runtime.serving.metrics import ServingMetrics
from mlplat_runtime.serving.model import LoadedModel, load_bundle

log = logging.getLogger("mlplat.serving")


class ModelState(StrEnum):  # Triton's repository index states
    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: ModelState
    reason: str
    bundle_id: str
    provider: str

    @classmethod
    def rejected(cls, name: str, current: LoadedModel | IndexEntry | None, why: str) -> IndexEntry:
        """The index line after a refused load: what still serves (``current``), or nothing."""
        return cls(
            name,
            current.version if current else "",
            ModelState.READY if current else ModelState.UNAVAILABLE,
            f"last load rejected: {why}",
            current.bundle_id if current else "",
            current.provider if current else "",
        )

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "state": str(self.state),
            "reason": self.reason,
            "bundle_id": self.bundle_id,
            "provider": self.provider,
        }


@dataclass(frozen=True)
class LoadResult:
    name: str
    version: str
    bundle_id: str
    provider: str
    swap_ms: float  # from the load request to the switch, everything included
    swapped: bool  # False for a first load or a no-op reload of the same bundle

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "bundle_id": self.bundle_id,
            "provider": self.provider,
            "swap_ms": round(self.swap_ms, 3),
        }


class Repository:
    """What is served, and the only code that changes it."""

    def __init__(
        self,
        *,
        checker: Checker | None = None,
        metrics: ServingMetrics | None = None,
        providers: list[str] | None = None,
        batching: BatchingConfig | None = None,
    ) -> None:
        self.checker = checker
        # dynamic batching for every model loaded without its own setting, where it can batch
        self.default_batching = batching
        self.metrics = metrics or ServingMetrics()
        self.providers = providers
        self._active: dict[str, LoadedModel] = {}
        self._notes: dict[str, IndexEntry] = {}  # last load outcome per name (failures, unloads)
        self._loading: set[str] = set()
        self._lock = threading.Lock()  # guards the switch and the notes
        self._load_lock = threading.Lock()  # one load at a time

    # -- reads (hot path) ------------------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> LoadedModel:
        model = self._active.get(name)
        if model is None:
            raise NotFoundError(
                f"model '{name}' is not loaded", hint=f"loaded: {sorted(self._active) or 'none'}"
            )
        if version is not None and version != model.version:
            raise NotFoundError(
                f"model '{name}' version '{version}' is not loaded (serving '{model.version}')"
            )
        return model

    def find(self, name: str) -> LoadedModel | None:
        return self._active.get(name)

    def models(self) -> list[LoadedModel]:
        return list(self._active.values())

    def ready(self) -> bool:
        """Every loaded model is ready (a LoadedModel exists only after its warm-up) and no
        first load is still in progress."""
        return not self._loading

    def index(self) -> list[IndexEntry]:
        with self._lock:
            names = sorted(set(self._active) | set(self._notes) | self._loading)
            out = []
            for name in names:
                model = self._active.get(name)
                note = self._notes.get(name)
                if model is not None:
                    reason = note.reason if note is not None else ""
                    out.append(
                        IndexEntry(
                            name, model.version, ModelState.READY, reason, model.bundle_id, model.provider
                        )
                    )
                elif name in self._loading:
                    out.append(IndexEntry(name, "", ModelState.LOADING, "loading", "", ""))
                elif note is not None:
                    out.append(note)
            return out

    # -- changes ---------------------------------------------------------------------------
    def load(
        self,
        bundle_path: Path | str,
        *,
        name: str | None = None,
        check: bool = True,
        allow_signature_change: bool = False,
        batching: BatchingConfig | bool | None = None,
    ) -> LoadResult:
        """Open, check, load, warm up and switch in a bundle; raise (old version kept) if any step fails.

        ``name`` (from the URL) must equal the bundle's model name. ``check=False`` skips the
        child-process check: only for the start-up load, where nothing is serving yet that a
        crash could take down. ``batching``: a ``BatchingConfig`` (refused for a model without a
        batch dimension), ``False`` for none, ``None`` for the server's default (skipped, with a
        warning, for a model that cannot batch).
        """
        from mlplat_runtime.bundle import open_bundle

        with self._load_lock:
            t0 = time.perf_counter()
            label = name or "?"
            first = False
            bundle = None
            try:
                path = Path(bundle_path)
                if not path.exists():
                    raise NotFoundError(
                        f"bundle not found: {path}", hint="give the path as the serving process sees it"
                    )
                bundle = open_bundle(path)
                manifest = bundle.manifest
                if name is not None and manifest.model_name != name:
                    raise RequestError(
                        f"the bundle is for model '{manifest.model_name}', not '{name}'",
                        hint=f"load it at /v2/repository/models/{manifest.model_name}/load",
                    )
                label = manifest.model_name
                wanted = self._batching_for(manifest, batching, label)
                current = self._active.get(label)
                if (
                    current is not None
                    and current.bundle_id == manifest.bundle_id
                    and current.version == manifest.version
                    and current.batching == wanted
                ):
                    _discard(bundle)  # the same bundle again: nothing to do
                    return LoadResult(
                        label,
                        current.version,
                        current.bundle_id,
                        current.provider,
                        (time.perf_counter() - t0) * 1000.0,
                        swapped=False,
                    )
                if current is not None and not allow_signature_change:
                    # the one rule the signature gate applies too (bundle/signature.py)
                    diffs = compatibility_problems(
                        current.signature, manifest.signature, label=f"serving v{current.version}"
                    )
                    if diffs:
                        raise ModelLoadError(
                            "the new version's signature is incompatible with the serving one: "
                            + "; ".join(map(str, diffs)),
                            hint="unload the model first, or load with "
                            '"parameters": {"allow_signature_change": true}',
                        )
                first = current is None
                if first:
                    with self._lock:
                        self._loading.add(label)
                if check and self.checker is not None:
                    inputs, _ = bundle.samples()
                    self.checker.check(bundle.model_path, inputs)
                # a batched session gets this worker's cores (providers.batch_threads)
                threads = batch_threads() if wanted is not None else None
                model = load_bundle(bundle, providers=self.providers, threads=threads)
                if wanted is not None:
                    model = dataclasses.replace(model, batching=wanted)
                with self._lock:  # the switch
                    self._active[label] = model
                    self._notes.pop(label, None)
                    self._loading.discard(label)
            except MlplatError as exc:
                _discard(bundle)
                self._note_failure(label, exc)
                raise
            except Exception as exc:  # never let an unexpected error leave state half-changed
                _discard(bundle)
                err = ModelLoadError(f"loading failed: {type(exc).__name__}: {exc}")
                self._note_failure(label, err)
                raise err from exc
            if current is not None:
                _discard(current.keep)  # in-flight requests hold the session, not the files
            swap_ms = (time.perf_counter() - t0) * 1000.0
            self.metrics.set_active(label, model.version, model.bundle_id, model.provider)
            self.metrics.load_result(label, True, swap_ms / 1000.0, swapped=not first)
            log.info(
                "serving %s v%s (%s, %s) after %.1f ms",
                label,
                model.version,
                model.bundle_id[:19],
                model.provider,
                swap_ms,
            )
            return LoadResult(
                label, model.version, model.bundle_id, model.provider, swap_ms, swapped=not first
            )

    def _batching_for(
        self, manifest: Manifest, batching: BatchingConfig | bool | None, label: str
    ) -> BatchingConfig | None:
        """Which dynamic batching a load gets: the load's own setting (``False``: none), else
        the server's flags (``--max-batch-size``), else the bundle's ``serving.batching``."""
        if batching is False:
            return None
        signature = manifest.signature
        problems = batch_dimension_problems(signature.inputs, signature.outputs)
        if isinstance(batching, BatchingConfig):
            if problems:
                raise RequestError(
                    f"model '{label}' cannot batch dynamically: " + "; ".join(problems),
                    hint="load it without dynamic_batching",
                )
            return batching
        if self.default_batching is not None:
            if problems:
                log.warning("dynamic batching is off for %s: %s", label, "; ".join(problems))
                return None
            return self.default_batching
        spec = manifest.serving.batching if manifest.serving is not None else None
        if spec is None:
            return None
        if problems:  # build_bundle refuses this; a manifest edited by hand can still say it
            raise ModelLoadError(
                f"the bundle asks for dynamic batching (serving.batching), but model '{label}' cannot"
                " batch: " + "; ".join(problems),
                hint="rebuild the bundle without [serving.batching], or load it with"
                ' "parameters": {"dynamic_batching": false}',
            )
        return BatchingConfig.from_spec(spec)

    def _note_failure(self, name: str, exc: MlplatError) -> None:
        with self._lock:
            self._loading.discard(name)
            current = self._active.get(name)
            self._notes[name] = IndexEntry.rejected(name, current, exc.message)
        self.metrics.load_result(name, False)
        kept = f", still serving v{current.version}" if current else ""
        log.warning("load of %s rejected: %s%s", name, exc.message, kept)

    def install(self, model: LoadedModel) -> LoadedModel | None:
        """Switch in a model loaded and warmed up elsewhere (a worker's two-phase swap: every
        worker prepares the version off to the side, then all switch together): under the
        lock, its notes and loading mark cleared. Returns the version it replaced (None for a
        first load); the caller decides when that one's files go (``_discard(old.keep)``)."""
        with self._lock:
            old = self._active.get(model.name)
            self._active[model.name] = model
            self._notes.pop(model.name, None)
            self._loading.discard(model.name)
        self.metrics.set_active(model.name, model.version, model.bundle_id, model.provider)
        return old

    def unload(self, name: str) -> None:
        with self._load_lock, self._lock:
            model = self._active.pop(name, None)
            if model is None:
                raise NotFoundError(f"model '{name}' is not loaded")
            self._notes[name] = IndexEntry(
                name, model.version, ModelState.UNAVAILABLE, "unloaded", model.bundle_id, ""
            )
        self.metrics.clear_active(name)
        _discard(model.keep)
        log.info("unloaded %s v%s", name, model.version)

    def close(self) -> None:
        """Forget every model and remove the folders extracted from archives."""
        with self._load_lock, self._lock:
            models = list(self._active.values())
            self._active.clear()
        for model in models:
            _discard(model.keep)


def _discard(bundle: object) -> None:
    """Remove the folder ``open_bundle`` extracted an archive into (we own it); keep folders."""
    if bundle is not None and getattr(bundle, "extracted", False):
        shutil.rmtree(bundle.root, ignore_errors=True)  # type: ignore[attr-defined]
