"""Bundle inspect: the manifest of one bundle (signature, files and checksums, metrics, params,
lineage, gates) and whether it verifies (checksums, schema, the model loads).

Opening and verifying a bundle reads files and loads ONNX Runtime, so it runs in a worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from mlplat_runtime.errors import MlplatError
from mlplat_tui.ui.data import DataSource
from mlplat_tui.ui.messages import BundleLoaded
from mlplat_tui.ui.snapshots import BundleView, fmt_bytes, fmt_metric, short_id


def _table(*columns: str) -> Table:
    t = Table(box=None, padding=(0, 2, 0, 0), header_style="bold", show_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


class BundleScreen(Screen[None]):
    CSS_PATH = "bundle_screen.tcss"
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "bundle-screen--ok",
        "bundle-screen--bad",
        "bundle-screen--heading",
    }
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "app.pop_screen", "back"),
    ]

    def __init__(self, data: DataSource, ref: str) -> None:
        super().__init__()
        self.data = data
        self.ref = ref
        self.view: BundleView | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="bundle"):
            yield Static(f"bundle {self.ref}: opening and verifying…", id="bundle-body", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        name = Path(self.ref).name if "/" in self.ref else short_id(self.ref)
        self.sub_title = f"bundle {name}"
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        try:
            self.post_message(BundleLoaded(self.data.bundle_view(self.ref)))
        except MlplatError as exc:
            self.app.call_from_thread(self._failed, exc)

    def _failed(self, exc: MlplatError) -> None:
        self.query_one("#bundle-body", Static).update(f"bundle {self.ref}: {exc}")
        self.notify(str(exc), title="bundle", severity="error", markup=False)

    def on_bundle_loaded(self, message: BundleLoaded) -> None:
        self.view = message.view
        self.query_one("#bundle-body", Static).update(self.render_view(message.view))

    def render_view(self, view: BundleView) -> RenderableType:
        m = view.manifest
        style = self.get_component_rich_style
        heading = style("bundle-screen--heading")
        if view.problems:
            verdict = Text("✗ " + "; ".join(view.problems), style=style("bundle-screen--bad"))
        else:
            verdict = Text("✓ verified: checksums, schema, the model loads", style=style("bundle-screen--ok"))
        head = _table("", "")
        head.show_header = False
        for k, v in (
            ("model", f"{m.model_name} v{m.version}"),
            ("bundle id", m.bundle_id),
            ("created", m.created_at),
            ("path", view.path),
            ("schema", str(m.schema_version)),
        ):
            head.add_row(k, v)
        sig = _table("", "name", "type", "shape")
        for kind, specs in (("input", m.signature.inputs), ("output", m.signature.outputs)):
            for t in specs:
                sig.add_row(kind, t.name, t.datatype, "[" + ", ".join(str(d) for d in t.shape) + "]")
        files = _table("file", "size", "sha256")
        for rel, digest in sorted(m.files.items()):
            files.add_row(rel, fmt_bytes(view.sizes.get(rel)), short_id(digest, 16))
        metrics = _table("metric", "value")
        for name, value in sorted(m.metrics.items()):
            metrics.add_row(name, fmt_metric(value))
        gates = _table("gate", "measured", "threshold", "result")
        for g in m.gates:
            gates.add_row(g.name, fmt_metric(g.measured), g.threshold, "✓" if g.passed else "✗")
        lin = m.lineage
        lineage = _table("", "")
        lineage.show_header = False
        lineage.add_row("run", lin.run_id or "-")
        lineage.add_row(
            "code",
            (lin.git_commit or "-")[:12] + (f" + {short_id(lin.dirty_hash)}" if lin.dirty_hash else ""),
        )
        for path, digest in sorted(lin.data_hashes.items()):
            lineage.add_row("data", f"{path} {short_id(digest, 16)}")
        lineage.add_row("tracker", lin.tracker_uri or "-")
        parts: list[RenderableType] = [verdict, Text(""), head]
        for title, table in (
            ("Signature", sig),
            ("Files", files),
            ("Metrics", metrics),
            ("Gates", gates),
            ("Lineage", lineage),
        ):
            parts += [Text(""), Text(title, style=heading), table]
        if m.params:
            params = _table("param", "value")
            for k, p in sorted(m.params.items()):
                params.add_row(k, p)
            parts += [Text(""), Text("Params", style=heading), params]
        return Group(*parts)
