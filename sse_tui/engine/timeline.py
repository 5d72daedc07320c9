"""The per-second timeline of a run: one `TimelinePoint` per second, for the live chart, the
`--timeseries` file and the Prometheus rates.

Each second's latencies go into an HDR histogram of their own, so every receipt of the
second counts in its percentiles whatever the rate (a capped list of samples would keep
only the first part of each second), and by the same percentile path as everything else.

The engine closes a second every second, and once more when the timeline task is cancelled
at the end of the run (after the drain has counted everything), so that the points' counts
add up to the run's totals: the last, partial second is a point too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sse_tui.engine.stats import LatencyHistogram
from sse_tui.snapshot import TimelinePoint

SECONDS_KEPT = 3600  # an hour of points; a snapshot carries the last SECONDS_SHOWN
SECONDS_SHOWN = 600


@dataclass(frozen=True, slots=True)
class TimelineSample:
    """What the engine tells the timeline when a second ends: the run's totals so far (the
    point gets the differences) and the state of things at that moment."""

    t_s: float  # seconds since the run started
    published_total: int
    received_total: int
    errors_total: int = 0
    missing_total: int = 0
    state: str = ""
    phase: int = 0
    conversations: int = 0
    delay_ms: float = 0.0
    self_lag_ms: float | None = None


class Timeline:
    def __init__(self) -> None:
        self._second = LatencyHistogram()
        self._points: deque[TimelinePoint] = deque(maxlen=SECONDS_KEPT)
        self._last = TimelineSample(0.0, 0, 0)

    def record(self, latency_us: int) -> None:
        """One receipt (the hot path: one histogram record)."""
        self._second.record(latency_us)

    def close(self, sample: TimelineSample) -> None:
        """End the interval that ends at `sample.t_s`."""
        summary = self._second.freeze(copy=False).summary
        self._second = LatencyHistogram()
        last = self._last
        published = sample.published_total - last.published_total
        received = sample.received_total - last.received_total
        length = sample.t_s - last.t_s
        per_s = 1.0 / length if length > 0 else 0.0
        self._points.append(TimelinePoint(
            t_s=sample.t_s,
            published_per_s=published * per_s,
            received_per_s=received * per_s,
            p50_ms=summary.p50 if summary.count else None,
            p99_ms=summary.p99 if summary.count else None,
            published=published,
            received=received,
            length_s=round(length, 3),
            wall_s=round(time.time(), 3),
            state=sample.state,
            phase=sample.phase,
            conversations=sample.conversations,
            delay_ms=sample.delay_ms,
            errors=sample.errors_total - last.errors_total,
            missing_total=sample.missing_total,
            self_lag_ms=sample.self_lag_ms))
        self._last = sample

    def close_second(self, t_s: float, published_total: int, received_total: int) -> None:
        """`close` with the totals alone (the tests' fake engine)."""
        self.close(TimelineSample(t_s, published_total, received_total))

    async def run(self, now: Callable[[], TimelineSample]) -> None:
        """Close an interval every second, and the last one when cancelled (the run's end:
        the engine cancels this task once everything is counted)."""
        try:
            while True:
                await asyncio.sleep(1.0)
                self.close(now())
        finally:
            sample = now()
            if sample.t_s > self._last.t_s:
                self.close(sample)

    def points(self) -> tuple[TimelinePoint, ...]:
        skip = max(0, len(self._points) - SECONDS_SHOWN)
        return tuple(itertools.islice(self._points, skip, None))
