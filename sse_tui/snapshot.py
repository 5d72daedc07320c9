"""The immutable stats snapshot: the one thing the views (TUI, headless, JSON) read.

The engine builds a snapshot on request on its own loop; everything expensive (percentiles)
is computed lazily by whoever reads it, on the reader's thread, so that a repaint never
stalls the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sse_tui.hdr import counts_slice, hdr_from_counts
from sse_tui.settings import Settings

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

# The percentiles every distribution reports.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of one distribution, in milliseconds. Empty distributions have count 0 and NaNs."""

    count: int
    min: float
    avg: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float

    @classmethod
    def empty(cls) -> Distribution:
        nan = float("nan")
        return cls(0, nan, nan, nan, nan, nan, nan, nan)

    def to_dict(self) -> dict[str, Any]:
        """JSON form; NaN (no samples) becomes null."""
        def clean(v: float) -> float | None:
            return None if v != v else round(v, 3)

        return {
            "count": self.count,
            "min": clean(self.min),
            "avg": clean(self.avg),
            "p50": clean(self.p50),
            "p90": clean(self.p90),
            "p99": clean(self.p99),
            "p999": clean(self.p999),
            "max": clean(self.max),
        }


class HistogramSnapshot:
    """A frozen copy of a histogram (values in microseconds) with exact count/sum/min/max.

    Percentiles come from the HDR histogram at 3 significant digits (within 0.1%), min, max
    and mean are exact. `summary` is computed once, on first access, by the reader.
    """

    __slots__ = ("__dict__", "_hdr", "count", "max_us", "min_us", "sum_us")

    def __init__(self, hdr: HdrHistogram | None, count: int, sum_us: float, min_us: float,
                 max_us: float) -> None:
        self._hdr = hdr
        self.count = count
        self.sum_us = sum_us
        self.min_us = min_us
        self.max_us = max_us

    @cached_property
    def summary(self) -> Distribution:
        if self.count == 0 or self._hdr is None:
            return Distribution.empty()
        pct = self._hdr.get_percentile_to_value_dict(list(PERCENTILES))

        def at(p: float) -> float:
            # HDR reports the highest value equivalent to the bucket; clamp into the exact range.
            return min(max(pct[p], self.min_us), self.max_us) / 1000.0

        return Distribution(
            count=self.count,
            min=self.min_us / 1000.0,
            avg=self.sum_us / self.count / 1000.0,
            p50=at(50.0),
            p90=at(90.0),
            p99=at(99.0),
            p999=at(99.9),
            max=self.max_us / 1000.0,
        )

    def summarized(self) -> HistogramSnapshot:
        """A copy that keeps only the summary (computed now), for data that never changes
        again (an ended phase): it pickles as a few numbers instead of the counts."""
        copy = HistogramSnapshot(None, self.count, self.sum_us, self.min_us, self.max_us)
        copy.__dict__["summary"] = self.summary
        return copy

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the non-zero span of the counts (KBs), for the engine process's pipe;
        a summarized() copy as its summary alone."""
        if self._hdr is None and self.count and "summary" in self.__dict__:
            return (_histogram_from_summary,
                    (self.count, self.sum_us, self.min_us, self.max_us, self.summary))
        if self._hdr is None or self.count == 0:
            return (HistogramSnapshot, (None, 0, 0, 0, 0))
        lo, data = counts_slice(self._hdr, int(self.min_us), int(self.max_us))
        return (_histogram_from_counts,
                (lo, data, self.count, self.sum_us, self.min_us, self.max_us))

    def encode(self) -> dict[str, Any]:
        """Portable form for merging across processes and pods."""
        return {
            "hdr": self._hdr.encode().decode("ascii") if self._hdr and self.count else None,
            "count": self.count,
            "sum_us": self.sum_us,
            "min_us": self.min_us,
            "max_us": self.max_us,
        }


def _histogram_from_summary(count: int, sum_us: float, min_us: float, max_us: float,
                            summary: Distribution) -> HistogramSnapshot:
    h = HistogramSnapshot(None, count, sum_us, min_us, max_us)
    h.__dict__["summary"] = summary
    return h


def _histogram_from_counts(lo: int, data: bytes, count: int, sum_us: float, min_us: float,
                           max_us: float) -> HistogramSnapshot:
    hdr = hdr_from_counts(lo, data, count, int(min_us), int(max_us))
    return HistogramSnapshot(hdr, count, sum_us, min_us, max_us)


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """Counters and distributions for one phase (one load level), or for the whole run."""

    index: int  # -1 for the run total
    label: str
    started_s: float  # seconds since run start
    ended_s: float | None  # None while the phase is current
    conversations: int  # the setting in force (the last one, for the total)
    delay_ms: float
    elapsed_s: float
    tokens_published: int
    tokens_received: int
    publish_errors: int
    connections_opened: int
    connections_closed: int
    errors: Mapping[str, int]
    conversations_started: int
    conversations_completed: int
    conversations_incomplete: int
    tokens_missing: int
    tokens_duplicated: int
    tokens_out_of_order: int
    streams_ended_without_done: int
    reconnects: int
    latency: HistogramSnapshot
    connect: HistogramSnapshot
    first_token: HistogramSnapshot
    itl: HistogramSnapshot
    # PUBLISH answered "0 subscribers": nobody (no bridge) was listening on Redis.
    tokens_unheard: int = 0
    # Still in progress when the run ended, nothing missing of what was published; not
    # counted in conversations_incomplete (which means something went wrong).
    conversations_cut_short: int = 0

    def summarized(self) -> PhaseStats:
        """This phase with summary-only histograms (see HistogramSnapshot.summarized)."""
        return replace(
            self, latency=self.latency.summarized(), connect=self.connect.summarized(),
            first_token=self.first_token.summarized(), itl=self.itl.summarized())

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    @property
    def published_per_s(self) -> float:
        return self.tokens_published / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def received_per_s(self) -> float:
        return self.tokens_received / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ConversationView:
    """One conversation as the consumer table shows it."""

    conversation_id: str
    number: int
    # waiting, connecting, streaming, reconnecting, publishing, draining, done, cut (still in
    # progress when the run ended), incomplete (ended with tokens missing), error
    state: str
    published: int
    received: int
    expected: int
    missing: int
    duplicated: int
    out_of_order: int
    reconnects: int
    last_latency_ms: float | None
    recent_latency_ms: tuple[float, ...]  # the last few latencies, for p50/p99 "recent"
    last_event_age_s: float | None
    error: str | None
    discovered: bool = False  # followed from Redis rather than started by us

    def recent_percentile(self, p: float) -> float | None:
        s = sorted(self.recent_latency_ms)
        if not s:
            return None
        k = min(len(s) - 1, max(0, round(p / 100.0 * len(s) + 0.5) - 1))
        return s[k]


@dataclass(frozen=True, slots=True)
class SelfHealth:
    """Is the load generator itself distorting the numbers?"""

    loop_lag: Distribution  # event-loop lag over the recent window (ms)
    schedule_lag: Distribution  # how late tokens were published vs their schedule (ms)
    cpu_percent: float  # this process, recent window
    warning: str | None  # one line when the figures may be distorted


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """One second of the run, for the live plot."""

    t_s: float
    published_per_s: float
    received_per_s: float
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    taken_at_ns: int
    state: str  # starting, running, paused, draining, finished, failed
    settings: Settings  # as in force now (live changes included)
    elapsed_s: float
    remaining_s: float | None  # None when the run has no end (duration 0 = one round)
    phase_index: int
    phases: tuple[PhaseStats, ...]
    total: PhaseStats
    # Live ones (all up to 250, else the 250 most interesting: errors, gaps, slow), ordered by
    # number, then the recently finished ones, newest first; conversations_live is the count.
    conversations: tuple[ConversationView, ...]
    conversations_live: int
    health: SelfHealth
    timeline: tuple[TimelinePoint, ...] = ()
    recent_latency_ms: tuple[float, ...] = ()  # latest receipts, for a sparkline
    fatal_error: str | None = None
    notes: tuple[str, ...] = field(default=())
    # The engine's own lag over the whole run (for the summary and the benchmark).
    loop_lag_total: HistogramSnapshot | None = None
    schedule_lag_total: HistogramSnapshot | None = None

    @property
    def current_phase(self) -> PhaseStats:
        return self.phases[-1] if self.phases else self.total

    @property
    def finished(self) -> bool:
        return self.state in ("finished", "failed")
