"""The per-second timeline of a run: tokens published and received, latency p50/p99.

Each second's latencies go into an HDR histogram of their own, so every receipt of the
second counts in its percentiles whatever the rate (a capped list of samples would keep
only the first part of each second), and by the same percentile path as everything else.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable

from sse_tui.engine.stats import LatencyHistogram
from sse_tui.snapshot import TimelinePoint

SECONDS_KEPT = 3600  # an hour of points; a snapshot carries the last SECONDS_SHOWN
SECONDS_SHOWN = 600


class Timeline:
    def __init__(self) -> None:
        self._second = LatencyHistogram()
        self._points: deque[TimelinePoint] = deque(maxlen=SECONDS_KEPT)
        self._published = 0
        self._received = 0

    def record(self, latency_us: int) -> None:
        """One receipt (the hot path: one histogram record)."""
        self._second.record(latency_us)

    def close_second(self, t_s: float, published_total: int, received_total: int) -> None:
        """End the second that ends at `t_s` (s since the run start); the totals are the run's
        so far, the point gets the difference."""
        summary = self._second.freeze(copy=False).summary
        self._second = LatencyHistogram()
        self._points.append(TimelinePoint(
            t_s=t_s,
            published_per_s=float(published_total - self._published),
            received_per_s=float(received_total - self._received),
            p50_ms=summary.p50 if summary.count else None,
            p99_ms=summary.p99 if summary.count else None))
        self._published, self._received = published_total, received_total

    async def run(self, now: Callable[[], tuple[float, int, int]]) -> None:
        """Close a second every second; `now()` gives (elapsed s, published, received)."""
        while True:
            await asyncio.sleep(1.0)
            self.close_second(*now())

    def points(self) -> tuple[TimelinePoint, ...]:
        skip = max(0, len(self._points) - SECONDS_SHOWN)
        return tuple(itertools.islice(self._points, skip, None))
