"""The phases panel: one row per load level (each settings change starts a phase)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable

from sse_tui.snapshot import PhaseStats, StatsSnapshot
from sse_tui.tui.format import fmt_clock, fmt_int, fmt_ms

COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("ph", "ph", 2),
    ("conv", "conv", 5),
    ("delay", "delay", 5),
    ("from", "from", 5),
    ("dur", "dur", 5),
    ("pub", "pub/s", 6),
    ("recv", "recv/s", 6),
    ("p50", "p50", 6),
    ("p99", "p99", 6),
    ("err", "err", 4),
    ("miss", "miss", 4),
)


def _row(p: PhaseStats) -> list[Any]:
    d = p.latency.summary
    bad = p.errors_total + p.publish_errors
    return [
        Text(str(p.index), justify="right"),
        Text(str(p.conversations), justify="right"),
        Text(f"{p.delay_ms:g}", justify="right"),
        Text(fmt_clock(p.started_s), justify="right"),
        Text(fmt_clock(p.elapsed_s), justify="right"),
        Text(f"{p.published_per_s:,.0f}", justify="right"),
        Text(f"{p.received_per_s:,.0f}", justify="right"),
        Text(fmt_ms(d.p50), justify="right"),
        Text(fmt_ms(d.p99), justify="right"),
        Text(fmt_int(bad), justify="right", style="bold red" if bad else ""),
        Text(
            fmt_int(p.tokens_missing), justify="right", style="bold red" if p.tokens_missing else ""
        ),
    ]


class PhaseTable(DataTable[Any]):
    """Ended phases are written once; only the current phase's row changes."""

    DEFAULT_CSS = """
    PhaseTable { height: 1fr; scrollbar-size-vertical: 1; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self._rows: dict[str, list[str]] = {}
        self._final: set[str] = set()
        for key, label, width in COLUMNS:
            self.add_column(label, width=width, key=key)

    def reset(self) -> None:
        self.clear()
        self._rows.clear()
        self._final.clear()

    def update_from(self, snap: StatsSnapshot) -> None:
        keys = {str(p.index) for p in snap.phases}
        for key in [k for k in self._rows if k not in keys]:
            self.remove_row(key)
            del self._rows[key]
            self._final.discard(key)
        for p in snap.phases:
            key = str(p.index)
            if key in self._final:
                continue
            cells = _row(p)
            plain = [c.plain for c in cells]
            old = self._rows.get(key)
            if old is None:
                self.add_row(*cells, key=key)
                self.move_cursor(row=self.row_count - 1)
            else:
                for i, (a, b) in enumerate(zip(old, plain, strict=True)):
                    if a != b:
                        self.update_cell(key, COLUMNS[i][0], cells[i])
            self._rows[key] = plain
            if p.ended_s is not None:
                self._final.add(key)


class PhasesPanel(Vertical):
    DEFAULT_CSS = """
    PhasesPanel {
        border: round $primary;
        border-title-align: left;
        height: 1fr;
    }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = PhaseTable(id="phase-table")

    def compose(self) -> ComposeResult:
        yield self.table

    @property
    def ready(self) -> bool:
        return self.table.is_mounted

    def on_mount(self) -> None:
        self.border_title = "Phases"

    def reset(self) -> None:
        self.table.reset()

    def update_from(self, snap: StatsSnapshot) -> None:
        self.table.update_from(snap)
        self.border_subtitle = f"current {snap.phase_index}"
