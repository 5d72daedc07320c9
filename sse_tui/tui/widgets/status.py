"""The one-line status bar: run state, time, phase, and the engine's self-health warning."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from sse_tui.snapshot import StatsSnapshot
from sse_tui.tui.format import fmt_clock

_STATE_STYLE = {
    "starting": "bold",
    "running": "bold green",
    "paused": "bold yellow",
    "draining": "bold cyan",
    "finished": "bold",
    "failed": "bold red",
}


class StatusLine(Static):
    """State and clock on the left; a warning, when there is one, takes the rest of the line."""

    DEFAULT_CSS = """
    StatusLine {
        text-wrap: nowrap;
        text-overflow: ellipsis;
        height: 1;
        width: 1fr;
        padding: 0 1;
        background: $panel;
    }
    StatusLine.-warning {
        background: $warning;
        color: $text-warning;
        text-style: bold;
    }
    StatusLine.-fatal {
        background: $error;
        color: $text-error;
        text-style: bold;
    }
    """

    def update_from(
        self, snap: StatsSnapshot, *, log_warning: str | None = None, pending: str | None = None
    ) -> None:
        s = snap.settings
        text = Text()
        text.append(snap.state.upper(), _STATE_STYLE.get(snap.state, "bold"))
        total = fmt_clock(s.duration_s) if s.duration_s > 0 else "∞"
        text.append(f"  {fmt_clock(snap.elapsed_s)}/{total}")
        if snap.remaining_s is not None and not snap.finished:
            text.append(f" ({fmt_clock(snap.remaining_s)} left)")
        text.append(f"  phase {snap.phase_index}")
        text.append(f"  {s.conversations} conv · {s.delay_ms:g} ms")
        warning: str | None = None
        if snap.fatal_error:
            warning = f"✖ {snap.fatal_error}"
        elif snap.finished:
            warning = None
            text.append("  r: new run", "bold")
            if pending:
                text.append(f" ({pending})")
        elif snap.health.warning:
            warning = f"⚠ {snap.health.warning}"
        elif log_warning:
            warning = f"⚠ {log_warning}"
        if warning:
            text.append("  ")
            text.append(warning)
        self.set_class(bool(snap.fatal_error), "-fatal")
        self.set_class(bool(warning) and not snap.fatal_error, "-warning")
        text.no_wrap = True
        text.overflow = "ellipsis"
        self.update(text)
