"""The producer panel: what is being sent where, and how fast."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from sse_tui.engine.selfwatch import phase_list
from sse_tui.shaping import length_histogram_text
from sse_tui.snapshot import StatsSnapshot
from sse_tui.tui.format import fmt_clock, fmt_int, fmt_ms, fmt_rate


def profile_text(snap: StatsSnapshot) -> Text | None:
    """The phase row with a --stages profile: `2 · stage 2/3 · 0:42 left`; None without."""
    p = snap.profile
    if p is None:
        return None
    t = Text(f"{snap.phase_index} · stage {p.stage}/{p.stages}")
    if p.held and not snap.finished:
        t.append(" · held (t: hand back)", "bold yellow")
    elif p.done:
        t.append(f" · done, {p.target_text} holds")
    else:
        t.append(f" · {fmt_clock(p.left_s)} left")
    return t


class ProducerPanel(Static):
    """Target, live settings and publish counters of the current run."""

    DEFAULT_CSS = """
    ProducerPanel {
        text-wrap: nowrap;
        text-overflow: ellipsis;
        border: round $primary;
        border-title-align: left;
        padding: 0 1;
        height: 100%;
    }
    """

    def on_mount(self) -> None:
        self.border_title = "Producer"

    def update_from(self, snap: StatsSnapshot) -> None:
        s = snap.settings
        total = snap.total
        phase = snap.current_phase
        now = snap.timeline[-1] if snap.timeline else None
        pub_rate = now.published_per_s if now else total.published_per_s
        recv_rate = now.received_per_s if now else total.received_per_s
        lag = snap.health.schedule_lag
        t = Text(no_wrap=True, overflow="ellipsis")

        def row(label: str, value: str | Text, end: str = "\n") -> None:
            t.append(f"{label:<10}", "bold")
            t.append(value)
            t.append(end)

        row("mode", Text.assemble(s.mode, "  run ", (s.run_id, "dim")))
        row("redis", s.shown("redis"))  # a password shows as ***
        row("sse", s.shown("sse"))
        if s.rate > 0:  # open loop: the rate, the cap, and what the cap turned away
            load = Text(f"{s.rate:g}/s ≤{s.conversations}")
            if total.arrivals_dropped:
                load.append(f" · dropped {fmt_int(total.arrivals_dropped)}", "bold red")
            load.append(f" · {s.delay_ms:g} ms · {s.tokens} tok")
            row("load", load)
        else:
            row("load", f"{s.conversations} conv · {s.delay_ms:g} ms · {s.tokens} tok")
        row("phase", profile_text(snap) or f"{snap.phase_index} · {phase.label}")
        row("published", f"{fmt_int(total.tokens_published):>10}  {fmt_rate(pub_rate)}")
        row("received", f"{fmt_int(total.tokens_received):>10}  {fmt_rate(recv_rate)}")
        errors = Text(f"pub {total.publish_errors} · conn {total.errors_total}")
        if total.publish_errors or total.errors_total:
            errors.stylize("bold red")
        row("errors", errors)
        self_check = Text(f"p99 {fmt_ms(lag.p99)} ms · cpu {snap.health.cpu_percent:.0f}%")
        h = snap.health
        if h.overloaded_windows:  # the run so far, by the same windows as the final verdict
            share = h.overloaded_share or 0.0
            self_check.append(f" · overloaded {h.overloaded_s:.0f} s ({100 * share:.0f}%), "
                              f"phase {phase_list(h.overloaded_phases)}", "bold red")
        row("sched lag", self_check)
        # Last, as it is also on the status line: on a short screen this is the line cut off.
        left = "∞" if snap.remaining_s is None else fmt_clock(snap.remaining_s)
        row("time", f"{fmt_clock(snap.elapsed_s)} · left {left}")
        # Only a tall screen shows these.
        row(
            "convs",
            f"started {fmt_int(total.conversations_started)} · done "
            f"{fmt_int(total.conversations_completed)} · incomplete "
            f"{fmt_int(total.conversations_incomplete)} · cut "
            f"{fmt_int(total.conversations_cut_short)}"
            + (f" · dropped {fmt_int(total.arrivals_dropped)}" if s.rate > 0 else ""),
        )
        if snap.conversation_lengths:  # lengths drawn from a distribution or a trace
            row("lengths", length_histogram_text(snap.conversation_lengths))
        row(
            "conns",
            f"opened {fmt_int(total.connections_opened)} · closed "
            f"{fmt_int(total.connections_closed)} · reconnects {fmt_int(total.reconnects)}",
        )
        row(
            "first tok",
            f"p50 {fmt_ms(total.first_token.summary.p50)} · connect p50 "
            f"{fmt_ms(total.connect.summary.p50)} ms",
            end="",
        )
        self.update(t)
