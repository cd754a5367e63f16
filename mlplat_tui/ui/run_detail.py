"""Run detail: params, metrics, each gate with its measured value, threshold and result, and the
lineage (code version, data hashes, the MLflow run link, the bundle).

Loads its ``RunDetail`` in a worker; ``v`` asks the main screen (via ``ServeRequested``) to serve
this run's bundle, ``b`` opens the bundle.
"""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from mlplat_runtime.errors import MlplatError
from mlplat_tui.ui.data import DataSource
from mlplat_tui.ui.messages import DetailLoaded, ServeRequested
from mlplat_tui.ui.snapshots import LOCAL_TARGET, RunDetail, fmt_duration, fmt_metric, fmt_time, short_id


class RunDetailScreen(Screen[None]):
    CSS_PATH = "run_detail.tcss"
    COMPONENT_CLASSES: ClassVar[set[str]] = {"run-detail--ok", "run-detail--bad", "run-detail--dim"}
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("v", "serve", "serve this run"),
        Binding("b", "bundle", "inspect bundle"),
        Binding("r", "reload", "reload"),
    ]

    def __init__(self, data: DataSource, run_id: str) -> None:
        super().__init__()
        self.data = data
        self.run_id = run_id
        self.detail: RunDetail | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail"):
            yield Static(f"run {self.run_id}: loading…", id="detail-title", markup=False)
            yield Static(id="detail-summary", markup=False)
            with Horizontal(id="detail-tables"):
                yield DataTable(id="detail-params", cursor_type="none", zebra_stripes=True)
                yield DataTable(id="detail-metrics", cursor_type="none", zebra_stripes=True)
            yield Static("Gates", classes="detail-heading")
            yield DataTable(id="detail-gates", cursor_type="row", zebra_stripes=True)
            yield Static("Lineage", classes="detail-heading")
            yield Static(id="detail-lineage")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"run {self.run_id}"
        self.query_one("#detail-params", DataTable).add_columns("param", "value")
        self.query_one("#detail-metrics", DataTable).add_columns("metric", "value")
        self.query_one("#detail-gates", DataTable).add_columns(
            "gate", "measured", "threshold", "result", "detail"
        )
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        try:
            self.post_message(DetailLoaded(self.data.run_detail(self.run_id)))
        except MlplatError as exc:
            self.app.call_from_thread(self._failed, exc)

    def _failed(self, exc: MlplatError) -> None:
        self.query_one("#detail-title", Static).update(f"run {self.run_id}: {exc.message}")
        self.notify(str(exc), title="run detail", severity="error", markup=False)

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        d = self.detail = message.detail
        served = "  ● serving" if d.served else ""
        elsewhere = [t for t in d.served_on if t != LOCAL_TARGET]
        version = f"  v{d.version}" if d.version else ""
        self.query_one("#detail-title", Static).update(
            Text.assemble(
                (f"run {d.run_id}", "bold"),
                f"  {d.status}{version}",
                (served, self.get_component_rich_style("run-detail--ok")),
                (f"  on {', '.join(elsewhere)}" if elsewhere else "", "bold"),
                ("  (was deployed)" if d.was_deployed and not d.served_on else "", "dim"),
            )
        )
        took = (d.finished_at - d.started_at) if d.finished_at and d.started_at else None
        summary = (
            f"started {fmt_time(d.started_at)}   finished {fmt_time(d.finished_at)}"
            f"   took {fmt_duration(took)}"
        )
        if d.error:
            summary += f"\nerror: {d.error}"
        self.query_one("#detail-summary", Static).update(summary)
        params = self.query_one("#detail-params", DataTable)
        params.clear()
        for k, v in sorted(d.params.items()):
            params.add_row(k, v)
        if not d.params:
            params.add_row("(none logged)", "")
        metrics = self.query_one("#detail-metrics", DataTable)
        metrics.clear()
        for k, m in sorted(d.metrics.items()):
            metrics.add_row(k, Text(fmt_metric(m), justify="right"))
        gates = self.query_one("#detail-gates", DataTable)
        gates.clear()
        for g in d.gates:
            result = (
                Text("✓ pass", style=self.get_component_rich_style("run-detail--ok"))
                if g.passed
                else Text("✗ fail", style=self.get_component_rich_style("run-detail--bad"))
            )
            gates.add_row(g.name, fmt_metric(g.measured), g.threshold, result, g.detail, key=g.name)
        if not d.gates:
            gates.add_row(
                "-",
                "-",
                "-",
                Text("no gates evaluated", style=self.get_component_rich_style("run-detail--dim")),
                "",
            )
        self.query_one("#detail-lineage", Static).update(self._lineage(d))

    @staticmethod
    def _lineage(d: RunDetail) -> Table:
        t = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        t.add_column(style="bold", no_wrap=True)
        t.add_column(overflow="fold")
        code = d.git_commit[:12] if d.git_commit else "not a git repository"
        if d.dirty_hash:
            code += f" + uncommitted changes {short_id(d.dirty_hash)}"
        t.add_row("code", code)
        t.add_row("command", d.training_command or "-")
        for path, digest in sorted(d.data_hashes.items()):
            t.add_row("data", f"{path}  {short_id(digest, 16)}")
        if not d.data_hashes:
            t.add_row("data", "-")
        t.add_row("bundle", f"{d.bundle_id or '-'}")
        t.add_row("path", d.bundle_path or "-")
        t.add_row("mlflow", d.tracker_url or "-")
        return t

    def action_serve(self) -> None:
        d = self.detail
        self.post_message(ServeRequested(self.run_id, d.version if d else None, d.bundle_id if d else None))

    def action_bundle(self) -> None:
        from mlplat_tui.ui.bundle_screen import BundleScreen

        ref = (self.detail.bundle_path or self.detail.bundle_id) if self.detail else None
        if not ref:
            self.notify("this run has no bundle", severity="warning")
            return
        self.app.push_screen(BundleScreen(self.data, ref))
