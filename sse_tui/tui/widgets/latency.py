"""The latency panel: current figures, a sparkline of recent receipts, p50/p99 over time.

The intended latency (from each token's scheduled publish time; docs/measurements.md) gets a
line of its own only when it tells something the plain one does not: on a healthy run the two
are the same, and a second copy of the same figures would only take the chart's room.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.events import Resize
from textual.widgets import Sparkline, Static

from sse_tui.snapshot import Distribution, StatsSnapshot, TimelinePoint
from sse_tui.tui.format import fmt_clock, fmt_ms
from sse_tui.tui.widgets.hops import HopLine

# How many seconds of timeline the chart shows (older points scroll off on the left).
CHART_WINDOW_S = 300
# The intended latency is shown when its p99 is this much above the plain one's, both
# relatively and in ms: a few ms of the generator's own timer jitter (under the self-check's
# 5 ms limit) and a few percent are not worth a line; a stall of Redis or of the generator is.
INTENDED_SHOWN_RATIO = 1.10
INTENDED_SHOWN_MS = 5.0


def intended_differs(plain: Distribution, intended: Distribution) -> bool:
    """Whether the intended latency's p99 differs enough from the plain one's to show it."""
    if intended.count == 0 or plain.count == 0:
        return False
    return (intended.p99 > plain.p99 * INTENDED_SHOWN_RATIO
            and intended.p99 - plain.p99 > INTENDED_SHOWN_MS)


def intended_text(snap: StatsSnapshot) -> Text | None:
    """`intended p99 1012  max 1030 ms (from schedule)` for the current phase, or None when
    it says nothing the plain figures do not."""
    phase = snap.current_phase
    d = phase.latency_intended.summary
    if not intended_differs(phase.latency.summary, d):
        return None
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append("intended", "bold yellow")
    line.append(" p99 ", "bold")
    line.append(fmt_ms(d.p99))
    line.append("  max ", "bold")
    line.append(fmt_ms(d.max))
    line.append(" ms (from schedule)", "dim")
    return line


class IntendedLine(Static):
    """Shown only while the intended latency differs from the plain one."""

    DEFAULT_CSS = """
    IntendedLine { height: 1; display: none; }
    """

    def update_from(self, snap: StatsSnapshot) -> None:
        text = intended_text(snap)
        self.display = text is not None
        if text is not None:
            self.update(text)


def render_chart(points: tuple[TimelinePoint, ...], width: int, height: int) -> Text:
    """p50 (green) and p99 (red) per second as a plotext line chart of width x height cells.

    plotext keeps global state, so this must only run on the UI thread.
    """
    pts = [p for p in points[-CHART_WINDOW_S:] if p.p50_ms is not None and p.p99_ms is not None]
    if width < 12 or height < 4:
        return Text("")
    if len(pts) < 2:
        return Text("p50/p99 per second appear here after two seconds", style="dim")
    import plotext
    from plotext import marker, pixel

    fig = plotext.figure
    fig.clear()
    fig.plot_size(width, height)
    fig.theme("simple")
    fig.legend(active=False)
    xs = [p.t_s for p in pts]
    ticks = _time_ticks(xs[0], xs[-1], max(2, (width - 6) // 9))
    fig.ruler(0).ticks(ticks, [fmt_clock(t) for t in ticks])
    lo = min(p.p50_ms for p in pts if p.p50_ms is not None)
    hi = max(p.p99_ms for p in pts if p.p99_ms is not None)
    yticks = _value_ticks(lo, hi, 3 if height >= 7 else 2)
    fig.ruler(1).ticks(yticks, [_short(v) for v in yticks])
    for ys, colour in (([p.p50_ms for p in pts], "green"), ([p.p99_ms for p in pts], "red")):
        sig = fig.signal(xs, ys, marker=marker("braille", pixel(foreground=colour)))
        sig.lines()
        fig.draw(sig)
    return Text.from_ansi(fig.build().string(), no_wrap=True)


def _time_ticks(first: float, last: float, most: int) -> list[float]:
    """At most `most` ticks on whole, round numbers of seconds between first and last."""
    span = max(1.0, last - first)
    step = next(
        (s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if span / s < most),
        3600 * (int(span / 3600 / most) + 1),
    )
    start = -(-first // step) * step
    ticks = []
    t = start
    while t <= last:
        ticks.append(float(t))
        t += step
    return ticks or [first]


def _value_ticks(lo: float, hi: float, n: int) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _short(v: float) -> str:
    """A y label of at most 4 characters (plotext would write 4e1)."""
    if v < 10:
        return f"{v:.1f}"
    if v < 10_000:
        return f"{v:.0f}"
    return f"{v / 1000:.0f}k"


class LatencyChart(Static):
    """Re-renders only when the timeline gains a point or the widget is resized."""

    DEFAULT_CSS = """
    LatencyChart {
        height: 1fr;
        width: 1fr;
    }
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._points: tuple[TimelinePoint, ...] = ()
        self._key: tuple[object, ...] | None = None

    def set_points(self, points: tuple[TimelinePoint, ...]) -> None:
        self._points = points
        self._render_if_changed()

    def on_resize(self, event: Resize) -> None:
        self._render_if_changed()

    def _render_if_changed(self) -> None:
        w, h = self.content_size.width, self.content_size.height
        last = self._points[-1] if self._points else None
        key = (len(self._points), last, w, h)
        if key == self._key:
            return
        self._key = key
        self.update(render_chart(self._points, w, h))


class LatencyPanel(Vertical):
    """Figures of the current phase, the recent sparkline and the p50/p99 chart."""

    DEFAULT_CSS = """
    LatencyPanel {
        border: round $primary;
        border-title-align: left;
        padding: 0 1;
        height: 100%;
    }
    LatencyPanel #latency-figures { height: 1; }
    LatencyPanel Sparkline { height: 1; margin: 0 0 0 0; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.figures = Static(id="latency-figures")
        self.intended = IntendedLine(id="latency-intended")
        self.hops = HopLine(id="latency-hops")  # with --nats only (widgets/hops.py)
        self.sparkline = Sparkline([], summary_function=max, id="latency-spark")
        self.chart = LatencyChart(id="latency-chart")

    def compose(self) -> ComposeResult:
        yield self.figures
        yield self.intended
        yield self.hops
        yield self.sparkline
        yield self.chart

    @property
    def ready(self) -> bool:
        return self.chart.is_mounted

    def on_mount(self) -> None:
        self.border_title = "Latency"
        self.border_subtitle = "[green]━ p50[/] [red]━ p99[/] ms/s"

    def update_from(self, snap: StatsSnapshot) -> None:
        d = snap.current_phase.latency.summary
        figures = Text(no_wrap=True, overflow="ellipsis")
        figures.append("p50 ", "bold")
        figures.append(fmt_ms(d.p50))
        figures.append("  p99 ", "bold")
        figures.append(fmt_ms(d.p99))
        figures.append("  max ", "bold")
        figures.append(fmt_ms(d.max))
        figures.append(" ms")
        figures.append(f"  (phase {snap.phase_index})", "dim")
        self.figures.update(figures)
        self.intended.update_from(snap)
        self.hops.update_from(snap)
        recent = list(snap.recent_latency_ms)
        if self.sparkline.data != recent:
            self.sparkline.data = recent
        self.chart.set_points(snap.timeline)
