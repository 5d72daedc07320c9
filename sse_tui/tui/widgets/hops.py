"""The hop line of the latency panel (with --nats): latency and loss split at NATS.

`Redis→NATS` is the bridge hop, `NATS→SSE` the leaf and the adapter (docs/topology.md).
Hidden when the run has no tap, so a run without --nats looks as it always did.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from sse_tui.snapshot import StatsSnapshot
from sse_tui.tui.format import fmt_ms

# Below this many columns (the panel at 80x24 has about 34) the line is the compact one:
# `p99 R→N 7.58 N→S 0.54  lost 8|5`.
WIDE_COLUMNS = 60


def hop_text(snap: StatsSnapshot, width: int = WIDE_COLUMNS) -> Text | None:
    """One line: p50/p99 of each hop in the current phase, the run's loss by hop (before
    NATS | after NATS); None without a tap."""
    total = snap.total
    if not total.tap_subscriptions:
        return None
    phase = snap.current_phase
    line = Text(no_wrap=True, overflow="ellipsis")
    if width < WIDE_COLUMNS:
        line.append("p99 ", "bold")
        line.append(f"R→N {fmt_ms(phase.redis_to_nats.summary.p99)} "
                    f"N→S {fmt_ms(phase.nats_to_sse.summary.p99)}")
        if total.lost_before_nats or total.lost_after_nats:
            line.append("  lost ", "bold")
            line.append(f"{total.lost_before_nats}|{total.lost_after_nats}", "red")
        return line
    for label, hist in (("Redis→NATS ", phase.redis_to_nats), ("  NATS→SSE ", phase.nats_to_sse)):
        d = hist.summary
        line.append(label, "bold")
        line.append(f"{fmt_ms(d.p50)}/{fmt_ms(d.p99)}")
    line.append(" ms p50/p99", "dim")
    if total.lost_before_nats or total.lost_after_nats:
        line.append("  lost ", "bold")
        line.append(f"{total.lost_before_nats} before, {total.lost_after_nats} after NATS",
                    "red")
    return line


class HopLine(Static):
    """Shown only while the run has a NATS tap."""

    DEFAULT_CSS = """
    HopLine { height: 1; display: none; }
    """

    def update_from(self, snap: StatsSnapshot) -> None:
        text = hop_text(snap, self.content_size.width or WIDE_COLUMNS)
        self.display = text is not None
        if text is not None:
            self.update(text)
