"""Runs table: newest first, sortable (click a header, or ``s`` / ``o``), filterable (``/``),
paged (``[`` / ``]``) so 10,000 runs cost one page of rows, not 10,000.

Attributes down, messages up: the screen sets ``page``; the table posts ``QueryChanged`` when
the user sorts, filters or turns the page (the screen fetches that page in a worker), and
``RunChosen`` when a row is opened.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

from mlplat_tui.ui.snapshots import (
    SORT_GATES,
    SORT_RUN,
    SORT_TIME,
    SORT_VERSION,
    RunRow,
    RunsPage,
    RunsQuery,
    fmt_metric,
    fmt_time,
    short_id,
)

_FIXED_BEFORE = ((SORT_TIME, "time"), (SORT_RUN, "run id"))
_FIXED_AFTER = ((SORT_GATES, "gates"), (SORT_VERSION, "bundle"), ("served", "served"))
_FILTER_DEBOUNCE_S = 0.3


class RunsTable(Widget):
    DEFAULT_CSS = Path(__file__).with_suffix(".tcss").read_text(encoding="utf-8")
    COMPONENT_CLASSES: ClassVar[set[str]] = {"runs-table--ok", "runs-table--bad", "runs-table--dim"}
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape", "close_filter", "close filter", show=False),
    ]

    page: reactive[RunsPage | None] = reactive(None, always_update=True)

    class QueryChanged(Message):
        def __init__(self, query: RunsQuery) -> None:
            super().__init__()
            self.query = query

    class RunChosen(Message):
        def __init__(self, run_id: str) -> None:
            super().__init__()
            self.run_id = run_id

    def __init__(self, query: RunsQuery | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs_query = query or RunsQuery()
        self._columns: tuple[str, ...] = ()
        self._header: tuple[str, ...] = ()
        self._rows: tuple[RunRow, ...] = ()
        self._filter_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="filter runs: run id, status, version…  (enter: apply, esc: close)", id="runs-filter"
        )
        yield DataTable(cursor_type="row", zebra_stripes=True, id="runs-grid")
        yield Static(id="runs-status")

    def on_mount(self) -> None:
        self.border_title = "Runs"
        self._show_status()

    # ---- what the screen reads -------------------------------------------------------------
    @property
    def selected_run_id(self) -> str | None:
        grid = self.query_one(DataTable)
        if not grid.row_count:
            return None
        try:
            key = grid.coordinate_to_cell_key(grid.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return None if key.value is None else str(key.value)

    @property
    def selected_row(self) -> RunRow | None:
        run_id = self.selected_run_id
        return next((r for r in self._rows if r.run_id == run_id), None)

    @property
    def grid(self) -> DataTable[Text]:
        return self.query_one(DataTable)

    # ---- user intents -> QueryChanged ----------------------------------------------------------
    def _change(self, query: RunsQuery) -> None:
        if query != self.runs_query:
            self.runs_query = query
            self._show_status()
            self.post_message(self.QueryChanged(query))

    def sort_by(self, key: str) -> None:
        if key == "served":
            return  # a property of "now", not of the run: not a stored column to sort on
        if key == self.runs_query.sort:
            self._change(replace(self.runs_query, descending=not self.runs_query.descending, offset=0))
        else:
            self._change(replace(self.runs_query, sort=key, descending=key != SORT_RUN, offset=0))

    def next_sort(self) -> None:
        keys = [k for k in self._columns if k != "served"] or [SORT_TIME]
        i = keys.index(self.runs_query.sort) if self.runs_query.sort in keys else -1
        self.sort_by(keys[(i + 1) % len(keys)])

    def reverse(self) -> None:
        self._change(replace(self.runs_query, descending=not self.runs_query.descending, offset=0))

    def turn_page(self, delta: int) -> None:
        q = self.runs_query
        last = (self.page.pages - 1) if self.page else 0
        page = min(max(0, q.page + delta), last)
        self._change(replace(q, offset=page * q.limit))

    def open_filter(self) -> None:
        self.add_class("-filtering")
        self.query_one(Input).focus()

    def action_close_filter(self) -> None:
        if self.has_class("-filtering"):
            if not self.query_one(Input).value:
                self.remove_class("-filtering")
            self.grid.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._filter_timer is not None:
            self._filter_timer.stop()
        value = event.value.strip()
        self._filter_timer = self.set_timer(
            _FILTER_DEBOUNCE_S, lambda: self._change(replace(self.runs_query, search=value, offset=0))
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._change(replace(self.runs_query, search=event.value.strip(), offset=0))
        if not event.value.strip():
            self.remove_class("-filtering")
        self.grid.focus()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        if event.column_key.value is not None:
            self.sort_by(event.column_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.RunChosen(str(event.row_key.value)))

    # ---- page -> rows --------------------------------------------------------------------------
    def watch_page(self, page: RunsPage | None) -> None:
        if page is None or not self.is_mounted:
            return
        if page.query != self.runs_query:
            return  # an answer to a query the user has moved on from
        columns = (
            *(k for k, _ in _FIXED_BEFORE),
            *(f"metric:{m}" for m in page.metric_names),
            *(k for k, _ in _FIXED_AFTER),
        )
        # Labels carry the sort arrow; the table caches rendered headers, so new labels mean new columns.
        header = tuple(self._label(k) for k in columns)
        if columns == self._columns and header == self._header and page.rows == self._rows:
            self._show_status()
            return
        grid = self.grid
        keep = self.selected_run_id
        keep_row = grid.cursor_row
        if columns != self._columns or header != self._header:
            grid.clear(columns=True)
            for key, label in zip(columns, header, strict=True):
                grid.add_column(label, key=key)
            self._columns, self._header = columns, header
        else:
            grid.clear()
        self._rows = page.rows
        for row in page.rows:
            grid.add_row(*self._cells(row, page), key=row.run_id)
        if keep is not None:
            try:
                grid.move_cursor(row=grid.get_row_index(keep), animate=False)
            except RowDoesNotExist:
                grid.move_cursor(row=min(keep_row, max(0, grid.row_count - 1)), animate=False)
        self._show_status()

    def _label(self, key: str) -> str:
        name = dict((*_FIXED_BEFORE, *_FIXED_AFTER)).get(key) or key.removeprefix("metric:")
        if key == self.runs_query.sort:
            name += " ↓" if self.runs_query.descending else " ↑"
        return name

    def _cells(self, row: RunRow, page: RunsPage) -> list[Text]:
        style = self.get_component_rich_style
        ok, bad, dim = style("runs-table--ok"), style("runs-table--bad"), style("runs-table--dim")
        if row.gates_passed is None:
            gates = Text(
                "-" if row.status != "failed" else "failed", style=dim if row.status != "failed" else bad
            )
        elif row.gates_passed:
            gates = Text("✓", style=ok)
        else:
            gates = Text("✗ " + ", ".join(row.gates_failed), style=bad)
        bundle = Text(
            f"v{row.version} {short_id(row.bundle_id, 8)}" if row.version else short_id(row.bundle_id, 8),
            style="" if row.bundle_id else dim,
        )
        return [
            Text(fmt_time(row.started_at, page.taken_at or None)),
            Text(short_id(row.run_id, 12)),
            *(Text(fmt_metric(row.metrics.get(m)), justify="right") for m in page.metric_names),
            gates,
            bundle,
            self._served(row),
        ]

    def _served(self, row: RunRow) -> Text:
        # Local serving is what this dashboard's Serving panel shows; other targets (push) are
        # named, never marked as serving here.
        style = self.get_component_rich_style
        out = Text("● serving", style=style("runs-table--ok")) if row.served else Text("")
        if row.served_elsewhere:
            out.append((" · " if row.served else "on ") + ", ".join(row.served_elsewhere))
        return out

    def _show_status(self) -> None:
        if not self.is_mounted:
            return
        q, page = self.runs_query, self.page
        parts = []
        if page is not None and page.query == q:
            if page.error:
                parts.append(page.error.splitlines()[0])
            first = q.offset + 1 if page.rows else 0
            parts.append(f"{first}–{q.offset + len(page.rows)} of {page.total:,} runs")
            parts.append(f"page {q.page + 1}/{page.pages}")
        else:
            parts.append("loading…")
        sort = q.sort.removeprefix("metric:")
        parts.append(f"sorted by {sort} {'↓' if q.descending else '↑'}")
        if q.search:
            parts.append(f"filter: {q.search!r}")
        parts.append("[ ] page · s sort · o order · / filter · enter open")
        self.query_one("#runs-status", Static).update(Text("  ·  ".join(parts)))
