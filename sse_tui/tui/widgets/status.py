"""The one-line status bar: run state, time, phase, and the engine's self-health warning.

It also says when the figures are frozen because the engine has stopped answering, and
which changes were sent but are not yet applied (pending).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from sse_tui.snapshot import StatsSnapshot
from sse_tui.tui.format import fmt_clock, fmt_int

_STATE_STYLE = {
    "starting": "bold",
    "running": "bold green",
    "paused": "bold yellow",
    "draining": "bold cyan",
    "finished": "bold",
    "failed": "bold red",
}


def stale_message(age_s: float, *, reported: bool) -> str:
    """The warning for figures that have not moved for `age_s` (`reported`: whether the
    engine has sent any figures at all yet)."""
    seconds = int(age_s)  # whole seconds, counting up like a clock
    if not reported:
        return f"no figures from the engine yet ({seconds} s)"
    return f"engine not answering for {seconds} s: figures frozen"


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
        self,
        snap: StatsSnapshot,
        *,
        log_warning: str | None = None,
        pending: str | None = None,
        requested: str | None = None,
        stale: str | None = None,
    ) -> None:
        """`pending`: settings kept for the next run; `requested`: changes sent to the
        running engine that its snapshots do not show yet; `stale`: why the figures are
        frozen (see `stale_message`)."""
        s = snap.settings
        text = Text()
        text.append(snap.state.upper(), _STATE_STYLE.get(snap.state, "bold"))
        total = fmt_clock(s.duration_s) if s.duration_s > 0 else "∞"
        text.append(f"  {fmt_clock(snap.elapsed_s)}/{total}")
        # Frozen figures: said first, so that it shows even at 80 columns.
        frozen = bool(stale) and not snap.finished and not snap.fatal_error
        if frozen:
            text.append(f"  ⚠ {stale}")
        elif snap.remaining_s is not None and not snap.finished:
            text.append(f" ({fmt_clock(snap.remaining_s)} left)")
        text.append(f"  phase {snap.phase_index}")
        load = f"{s.rate:g}/s ≤{s.conversations}" if s.rate > 0 else f"{s.conversations} conv"
        text.append(f"  {load} · {s.delay_ms:g} ms")
        if snap.connect_waiting and not snap.finished:  # the --connect-rate ramp
            live = snap.conversations_live
            text.append(f"  opening {fmt_int(live - snap.connect_waiting)}/{fmt_int(live)}",
                        "bold cyan")
        if snap.profile is not None and snap.profile.held and not snap.finished:
            text.append("  profile held", "bold yellow")
        if requested and not snap.finished:
            text.append(f" (→ {requested} pending)", "italic")
        warning: str | None = None
        if snap.fatal_error:
            warning = f"✖ {snap.fatal_error}"
        elif snap.finished:
            # The run's verdict: overloaded for how long, in which phases (else nothing).
            verdict = (snap.health.warning or snap.redis_warning  # ours first, then Redis'
                       or snap.clock_warning)
            warning = f"⚠ {verdict}" if verdict else None
            text.append("  r: new run", "bold")
            if pending:
                text.append(f" ({pending})")
        elif frozen:
            pass  # said above
        elif snap.stream_warning:  # nothing to measure until a stream works
            warning = f"⚠ {snap.stream_warning}"
        elif snap.health.warning:
            warning = f"⚠ {snap.health.warning}"
        elif snap.redis_warning:  # Redis, not the generator, holds publishing back
            warning = f"⚠ {snap.redis_warning}"
        elif snap.clock_warning:  # the producer's clock is ahead: latencies below zero
            warning = f"⚠ {snap.clock_warning}"
        elif log_warning:
            warning = f"⚠ {log_warning}"
        if warning:
            text.append("  ")
            text.append(warning)
        self.set_class(bool(snap.fatal_error), "-fatal")
        self.set_class((bool(warning) or frozen) and not snap.fatal_error, "-warning")
        text.no_wrap = True
        text.overflow = "ellipsis"
        self.update(text)
