"""The fleet's live view: the one-generator app over a FleetHandle, with one row per
generator where a run has one row per conversation.

The producer, latency and phases panels read the merged snapshot as they read one engine's;
the keys (+/-, [/], , and ., p, t) send fleet commands through the handle. `r` (a new run)
does not apply. Once every generator has finished the app closes by itself, and the merged
result is printed as for one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.events import Mount
from textual.widgets import DataTable

from sse_tui.fleet.handle import FleetHandle
from sse_tui.fleet.monitor import GeneratorRow
from sse_tui.snapshot import StatsSnapshot
from sse_tui.tui import app as tui_app
from sse_tui.tui.app import SseTuiApp
from sse_tui.tui.format import fmt_int, fmt_ms
from sse_tui.tui.widgets.consumers import ConsumersPanel

# (label, width): fits 80 columns with the panel's border.
COLUMNS = (("pod/host", 18), ("share", 8), ("live", 4), ("recv/s", 6), ("p99", 6),
           ("err", 3), ("self", 4), ("beat", 7))
CLOSE_AFTER_DONE_S = 3.0

_STATUS_STYLE = {"lost": "bold red", "failed": "bold red", "finished": "dim", "paused": "yellow"}


def row_cells(r: GeneratorRow) -> list[Any]:
    style = _STATUS_STYLE.get(r.status, "")
    host = Text(r.host + (" LOST" if r.status == "lost" else ""), style=style)
    share = f"{r.rate:g}/s" if r.rate > 0 else f"{r.conversations} conv"
    return [
        host,
        Text(share, justify="right"),
        Text(fmt_int(r.live), justify="right"),
        Text(f"{r.received_per_s:.0f}", justify="right"),
        Text(fmt_ms(r.p99_ms) if r.p99_ms is not None else "-", justify="right"),
        Text(fmt_int(r.errors), style="bold red" if r.errors else "", justify="right"),
        Text("warn" if r.health else "ok", style="yellow" if r.health else "green"),
        Text(r.status if r.status in ("finished", "failed") else f"{r.beat_age_s:.0f}s",
             style=style, justify="right"),
    ]


class GeneratorsPanel(ConsumersPanel):
    """One row per generator (pod/host, its share, rate, p99, errors, self-health, last
    heartbeat), in place of the conversations; updated by row key."""

    def __init__(self, handle: FleetHandle, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handle = handle
        # In place of the conversation table: the panel's layout, totals line and ready.
        self.table = DataTable(id="generator-table", cursor_type="row",  # type: ignore[assignment]
                               zebra_stripes=True)
        self._cells: dict[str, list[str]] = {}

    def on_mount(self, event: Mount) -> None:  # type: ignore[override]
        event.prevent_default()  # the consumers panel's own on_mount (its title) is not ours
        self.border_title = "Generators"
        for label, width in COLUMNS:
            self.table.add_column(label, width=width, key=label)

    def reset(self) -> None:
        self.table.clear()
        self._cells.clear()

    def update_from(self, snap: StatsSnapshot) -> None:
        rows = self.handle.rows()
        for r in rows:
            cells = row_cells(r)
            shown = [str(c) for c in cells]
            if r.id not in self._cells:
                self.table.add_row(*cells, key=r.id)
            else:
                for (label, _), old, new, cell in zip(COLUMNS, self._cells[r.id], shown, cells,
                                                      strict=True):
                    if old != new:
                        self.table.update_cell(r.id, label, cell)
            self._cells[r.id] = shown
        lost = sum(r.status == "lost" for r in rows)
        done = sum(r.status in ("finished", "failed") for r in rows)
        t = Text(no_wrap=True, overflow="ellipsis")
        for label, value, bad in (("generators", len(rows), False), ("done", done, False),
                                  ("lost", lost, True), ("live", snap.conversations_live, False),
                                  ("err", snap.total.errors_total, True),
                                  ("miss", snap.total.tokens_missing, True)):
            t.append(f"{label} ", "bold")
            t.append(fmt_int(value) + "  ", "bold red" if bad and value else "")
        if self.handle.error:
            t.append(self.handle.error, "bold red")
        self.totals.update(t)
        self.border_subtitle = "" if rows else "waiting for generators (--fleet NAME)"


class FleetApp(SseTuiApp):
    TITLE = "sse-tui fleet"
    # The one app's stylesheet (a relative CSS_PATH is read next to this module).
    CSS_PATH = str(Path(tui_app.__file__).with_name("app.tcss"))
    BINDINGS: ClassVar = [b for b in SseTuiApp.BINDINGS
                          if getattr(b, "action", "") not in ("restart", "save_settings")]

    def __init__(self, handle: FleetHandle, **kwargs: Any) -> None:
        super().__init__(handle, **kwargs)
        self.fleet = handle
        self._closing = False

    def rows_panel(self) -> ConsumersPanel:
        return GeneratorsPanel(self.fleet, cap=self.row_cap, id="consumers")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "restart":
            return False
        return super().check_action(action, parameters)

    def _apply(self, snap: StatsSnapshot, *, stale_s: float = 0.0) -> None:
        super()._apply(snap, stale_s=0.0)  # a quiet fleet is not a stalled engine
        if snap.finished and self.fleet.state.done and not self._closing:
            self._closing = True
            self.notify("every generator has finished: the merged result follows", timeout=3)
            self.set_timer(CLOSE_AFTER_DONE_S, lambda: self.exit(0))
