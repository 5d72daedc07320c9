"""The immutable stats snapshot: the one thing the views (TUI, headless, JSON) read.

The engine builds a snapshot on request on its own loop; everything expensive (percentiles)
is computed lazily by whoever reads it, on the reader's thread, so that a repaint never
stalls the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, field, fields, replace
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sse_tui import hdr as hdr_codec
from sse_tui.settings import Settings

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

# The percentiles every distribution reports.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)

# Field metadata of Counters: the JSON nests these under "conversations", without the prefix.
_CONVERSATIONS = {"json_group": "conversations"}
_LOSS = {"json_group": "loss"}
_CLOCK = {"json_group": "clock"}
_HOPS = {"json_group": "hops"}


@dataclass(slots=True)
class Counters:
    """Every count kept per phase, in the order of the JSON summary: the one list of them.

    The engine's PhaseRecorder counts into these fields, a PhaseStats carries a copy, and the
    run total, `sse-tui merge`, the JSON and the test fake all iterate `COUNTER_FIELDS`, so a
    new counter is a new field here (metadata: `label` gives it a line of its own in the final
    summary, `json_group` nests it in the JSON) plus the code that increments it.
    """

    tokens_published: int = 0
    tokens_received: int = 0
    # PUBLISH answered "0 subscribers": nobody (no bridge) was listening on Redis. It reads 0
    # whenever any other subscriber exists, so 0 does not prove that the bridge heard.
    tokens_unheard: int = 0
    # Tokens whose PUBLISH failed, each counted once however often it was retried.
    publish_errors: int = 0
    # How far the offered load fell behind its schedule, in tokens, while the publisher
    # waited for Redis to answer (a Redis stall; see sse_tui.engine.producer).
    tokens_held_back_by_redis: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    # Every attempt to open a stream, failed ones included (connections_opened: the ones that
    # got a 200 event stream).
    connect_attempts: int = 0
    # Times a conversation that had a working stream was without one (the stream ended early
    # or broke) until a new one worked, and the sum of those times in ms: an adapter restart
    # shows here, not as failed conversations.
    stream_outages: int = 0
    outage_ms: int = 0
    conversations_started: int = field(default=0, metadata=_CONVERSATIONS)
    conversations_completed: int = field(default=0, metadata=_CONVERSATIONS)
    # Ended with something missing or with an error: incomplete > 0 means something went wrong.
    conversations_incomplete: int = field(default=0, metadata=_CONVERSATIONS)
    # Still in progress when the run ended, nothing missing of what was published.
    conversations_cut_short: int = field(default=0, metadata=_CONVERSATIONS)
    # Open loop (--rate): arrivals that found --conversations already live, so never
    # started. Offered = conversations started + arrivals dropped.
    arrivals_dropped: int = 0
    tokens_missing: int = field(default=0, metadata={"label": "Tokens missing"})
    tokens_duplicated: int = field(default=0, metadata={"label": "Tokens duplicated"})
    tokens_out_of_order: int = field(default=0, metadata={"label": "Tokens out of order"})
    streams_ended_without_done: int = 0
    reconnects: int = 0
    # Missing tokens by where in its conversation each was lost (docs/loss.md): they sum to
    # tokens_missing. The JSON nests them as "loss": {"first", "gap", "tail", "after_resume"}.
    loss_first: int = field(default=0, metadata=_LOSS)
    loss_gap: int = field(default=0, metadata=_LOSS)
    loss_tail: int = field(default=0, metadata=_LOSS)
    loss_after_resume: int = field(default=0, metadata=_LOSS)
    # Sequences the readers were due (1..last of each conversation read, plus any earlier
    # ones a followed conversation delivered). The accounting invariant, checked at the end:
    # tokens_expected == (tokens_received - tokens_duplicated) + tokens_missing, and in
    # `both` mode tokens_expected == tokens_published.
    tokens_expected: int = 0
    # Conversations whose own accounting did not balance (see tokens_expected): must stay 0.
    accounting_violations: int = 0
    # Token events after the done token (one repeating a sequence is also a duplicate).
    tokens_after_done: int = 0
    # The server kept the response open past min(grace, 1 s) after the done token.
    streams_not_closed_after_done: int = 0
    # Receipts before their publish timestamp: the producer's clock is ahead of this one
    # (sse_tui.engine.clock). Kept out of `latency`; their size is in `negative_latency`.
    negative_latencies: int = field(default=0, metadata=_CLOCK)
    # The per-hop tap (--nats; sse_tui.engine.nats_tap, docs/topology.md). Missing tokens by
    # the hop that lost them: never seen on NATS (the bridge side) or seen there and not
    # delivered (the leaf/adapter side); with the tap on they sum to tokens_missing.
    lost_before_nats: int = field(default=0, metadata=_HOPS)
    lost_after_nats: int = field(default=0, metadata=_HOPS)
    # Tokens delivered through SSE that the tap never saw on NATS (its own interest came
    # late): its blind spot, whose NATS->SSE latency is unknown. Should stay 0.
    unseen_on_nats: int = field(default=0, metadata=_HOPS)
    # The tap's own cost: subjects subscribed, messages taken, time spent handling them.
    tap_subscriptions: int = field(default=0, metadata=_HOPS)
    tap_messages: int = field(default=0, metadata=_HOPS)
    tap_busy_us: int = field(default=0, metadata=_HOPS)

    def add(self, other: Counters) -> None:
        for f in COUNTER_FIELDS:
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def counter_values(self) -> dict[str, int]:
        """The counters alone (a subclass's other fields left out), by name, in order."""
        return {f.name: getattr(self, f.name) for f in COUNTER_FIELDS}


COUNTER_FIELDS: tuple[Field[int], ...] = fields(Counters)


class ConversationState(StrEnum):
    """Where one conversation is. Only `sse_tui.engine.consumer.Conversation` moves it; the
    views read it (a str, so it pickles small and prints as its value)."""

    WAITING = "waiting"  # created, its stream not yet asked for
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"  # the stream ended early: resuming with Last-Event-ID
    PUBLISHING = "publishing"  # producer mode: nothing to read
    DRAINING = "draining"  # everything published; waiting for the last tokens
    DONE = "done"
    CUT = "cut"  # still in progress when the run ended, with nothing missing
    INCOMPLETE = "incomplete"  # ended with tokens missing
    ERROR = "error"

    @property
    def live(self) -> bool:
        return self in _LIVE_STATES


_LIVE_STATES = frozenset({
    ConversationState.WAITING, ConversationState.CONNECTING, ConversationState.STREAMING,
    ConversationState.RECONNECTING, ConversationState.PUBLISHING, ConversationState.DRAINING})


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
        pct = hdr_codec.percentile_values(self._hdr, PERCENTILES, int(self.min_us),
                                          int(self.max_us))

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
        """Pickle in HdrHistogram's own compressed encoding, for the engine process's pipe: a
        few KB, a tenth of the raw counts, for 0.05-0.2 ms of encoding; a summarized() copy
        as its summary alone."""
        if self._hdr is None and self.count and "summary" in self.__dict__:
            return (_histogram_from_summary,
                    (self.count, self.sum_us, self.min_us, self.max_us, self.summary))
        if self._hdr is None or self.count == 0:
            return (HistogramSnapshot, (None, 0, 0, 0, 0))
        return (_histogram_from_encoding, (hdr_codec.encode(self._hdr), self.count,
                                           self.sum_us, self.min_us, self.max_us))

    def cumulative_counts(self, bounds_us: Sequence[int]) -> list[int] | None:
        """For each bound (ascending, µs): how many values are at most it, as the
        percentiles judge it (a value counts by its HDR bucket's highest value, so that
        p99 <= b exactly when 99% are counted at b); None when only a summary is kept.
        For Prometheus buckets (sse_tui.metrics)."""
        if self.count == 0:
            return [0] * len(bounds_us)
        hdr = self._hdr
        if hdr is None:
            return None
        # Whole runs of buckets summed from the counts array (C speed): a scrape must not
        # hold the GIL long, as the engine's loop shares it in headless mode.
        counts = hdr.counts
        out: list[int] = []
        seen = 0
        done = hdr.get_counts_array_index(int(self.min_us))  # counts[..done] are in `seen`
        for bound in bounds_us:
            if bound >= self.max_us:  # clamped as the percentiles are: max is exact
                out.append(self.count)
                continue
            index = hdr.get_counts_array_index(bound)
            if hdr.get_highest_equivalent_value(hdr.get_value_from_index(index)) > bound:
                index -= 1  # that bucket reaches past the bound: it counts above it
            if index + 1 > done:
                seen += sum(counts[done:index + 1])
                done = index + 1
            out.append(seen)
        return out

    @staticmethod
    def combined(parts: Sequence[HistogramSnapshot]) -> HistogramSnapshot:
        """The histogram of every value of `parts` (the engine processes of one run): HDR
        counts added bucket by bucket, count/sum/min/max exact. A summary-only part (an
        ended phase's) cannot be added: ValueError."""
        full = [h for h in parts if h.count]
        if len(full) <= 1:
            return full[0] if full else _EMPTY_HISTOGRAM
        hdr = hdr_codec.new_hdr()
        for h in full:
            if h._hdr is None:
                raise ValueError("a summarized histogram cannot be added to another")
            hdr.add(h._hdr)
        return HistogramSnapshot(hdr, sum(h.count for h in full), sum(h.sum_us for h in full),
                                 min(h.min_us for h in full), max(h.max_us for h in full))

    def encode(self) -> dict[str, Any]:
        """Portable form for merging across processes and pods."""
        return {
            "hdr": hdr_codec.encode(self._hdr) if self._hdr and self.count else None,
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


def _histogram_from_encoding(blob: str, count: int, sum_us: float, min_us: float,
                             max_us: float) -> HistogramSnapshot:
    return HistogramSnapshot(hdr_codec.decode(blob), count, sum_us, min_us, max_us)


_EMPTY_HISTOGRAM = HistogramSnapshot(None, 0, 0, 0, 0)


def phase_label(conversations: int, delay_ms: float, rate: float) -> str:
    """A phase's label, `8 conv, 5 ms` (open loop: `20/s ≤100, 5 ms`): the engine's, and
    the coordinator's for its workers' phases combined."""
    load = f"{rate:g}/s ≤{conversations}" if rate > 0 else f"{conversations} conv"
    return f"{load}, {delay_ms:g} ms"


@dataclass(slots=True, kw_only=True)
class PhaseStats(Counters):
    """Counters and distributions for one phase (one load level), or for the whole run.

    Not frozen only because it shares Counters with the engine's recorder (a frozen dataclass
    cannot extend a mutable one): it is a copy, and nothing writes to it.
    """

    index: int  # -1 for the run total
    label: str
    started_s: float  # seconds since run start
    ended_s: float | None  # None while the phase is current
    conversations: int  # the setting in force (the last one, for the total)
    delay_ms: float
    elapsed_s: float
    errors: Mapping[str, int]
    latency: HistogramSnapshot
    connect: HistogramSnapshot
    first_token: HistogramSnapshot
    itl: HistogramSnapshot
    publish_rtt: HistogramSnapshot  # PUBLISH pipeline round trips
    # From a conversation's first attempt to its first working stream, failed attempts and
    # their backoff included (connect: the one attempt that worked).
    establish: HistogramSnapshot = field(default_factory=lambda: _EMPTY_HISTOGRAM)
    # One example detail per error kind (the first seen), e.g. "HTTP 404 from /stream/x".
    error_examples: Mapping[str, str] = field(default_factory=dict)
    # How far below zero the negative latencies were (their absolute size, µs).
    negative_latency: HistogramSnapshot = field(default_factory=lambda: _EMPTY_HISTOGRAM)
    # From each token's intended publish time to receipt (docs/measurements.md#intended-latency).
    latency_intended: HistogramSnapshot = field(default_factory=lambda: _EMPTY_HISTOGRAM)
    # The per-hop tap (--nats): publish timestamp -> NATS arrival (the bridge hop), and
    # NATS arrival -> SSE receipt (leaf and adapter).
    redis_to_nats: HistogramSnapshot = field(default_factory=lambda: _EMPTY_HISTOGRAM)
    nats_to_sse: HistogramSnapshot = field(default_factory=lambda: _EMPTY_HISTOGRAM)
    # Open loop: the arrival rate in force (per second; 0 = closed loop), and the load
    # profile's stage (1-based) that set this phase (None: no profile, or the operator's).
    rate: float = 0.0
    stage: int | None = None

    def summarized(self) -> PhaseStats:
        """This phase with summary-only histograms (see HistogramSnapshot.summarized)."""
        return replace(
            self, latency=self.latency.summarized(), connect=self.connect.summarized(),
            first_token=self.first_token.summarized(), itl=self.itl.summarized(),
            publish_rtt=self.publish_rtt.summarized(), establish=self.establish.summarized(),
            negative_latency=self.negative_latency.summarized(),
            latency_intended=self.latency_intended.summarized(),
            redis_to_nats=self.redis_to_nats.summarized(),
            nats_to_sse=self.nats_to_sse.summarized())

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
    state: ConversationState
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
    error: str | None  # why it failed, or the last problem it recovered from
    discovered: bool = False  # followed from Redis rather than started by us
    # Once ended with tokens missing: where they were lost (a loss class of docs/loss.md, or
    # "mixed"); "" otherwise.
    loss: str = ""
    # With the NATS tap: its hop (`57 seen` on NATS, or `2 bridge, 1 adapter` lost); "" else.
    hop: str = ""

    def recent_percentile(self, p: float) -> float | None:
        """Nearest rank over the last few latencies (a window this small needs no HDR)."""
        s = sorted(self.recent_latency_ms)
        if not s:
            return None
        return s[min(len(s) - 1, max(0, math.ceil(round(p / 100.0 * len(s), 9)) - 1))]


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    """One ended conversation for `--json-detail`: where its tokens were lost."""

    conversation_id: str
    state: str
    published: int
    received: int  # unique sequences
    missing: int
    # The first MAX_RANGES runs of missing sequences, (from, to) inclusive; ranges_omitted
    # says how many more there were.
    missing_ranges: tuple[tuple[int, int], ...]
    ranges_omitted: int
    loss: Mapping[str, int]  # by loss class
    duplicated: int
    reconnects: int
    errors: int
    error: str | None
    outage_s: float | None = None  # time without a stream, when the engine measures it


@dataclass(frozen=True, slots=True)
class SelfWindow:
    """One window of the generator's self-check (see sse_tui.engine.selfwatch) and its verdict."""

    t_s: float  # start, seconds into the run
    length_s: float  # 1 s, longer when a stall kept the loop from closing it on time
    phases: tuple[int, ...]  # the phases it overlapped
    loop_lag_p99_ms: float
    schedule_lag_p99_ms: float | None  # None: nothing was published in it
    cpu_percent: float
    reasons: tuple[str, ...]  # the limits it crossed; empty: the generator was fine

    @property
    def overloaded(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True, slots=True)
class SelfHealth:
    """Is the load generator itself distorting the numbers?

    The verdict comes from 1 s windows alone: the live warning looks at the last few, the final
    one at every window of the run, with the same limits, so the two cannot disagree."""

    loop_lag: Distribution  # event-loop lag over the recent window (ms)
    schedule_lag: Distribution  # how late tokens were published vs their schedule (ms)
    cpu_percent: float  # this process, over the last window
    warning: str | None  # one line when the figures may be distorted
    # The windows judged so far this run (0: none yet, or a merged summary).
    windows: int = 0
    judged_s: float = 0.0
    overloaded_windows: int = 0
    overloaded_s: float = 0.0
    overloaded_phases: tuple[int, ...] = ()
    distorted: tuple[str, ...] = ()  # the figures the overloaded windows may have distorted
    worst_window: SelfWindow | None = None

    @property
    def overloaded_share(self) -> float | None:
        return self.overloaded_s / self.judged_s if self.judged_s > 0 else None


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """One second of the run (sse_tui.engine.timeline): the live chart's points and the rows
    of `--timeseries` (sse_tui.timeseries). The fields after p99_ms have defaults only so
    that a point can be built from the chart's five figures alone (tests)."""

    t_s: float  # the end of the interval, seconds since the run started
    published_per_s: float  # published / length_s
    received_per_s: float
    p50_ms: float | None  # latency of the receipts of this interval; None: no receipt
    p99_ms: float | None
    published: int = 0  # tokens in this interval: per-point counts sum to the run's totals
    received: int = 0
    length_s: float = 1.0  # about 1 s; the run's last interval is what was left of it
    wall_s: float = 0.0  # Unix time at the end of the interval
    state: str = ""  # the run's state then: running, paused, draining
    phase: int = 0  # the phase in force then
    conversations: int = 0  # live then
    delay_ms: float = 0.0  # in force then
    errors: int = 0  # errors of every kind in this interval
    missing_total: int = 0  # tokens counted missing so far in the run
    # The generator's event-loop lag p99 over its latest 1 s self-check window (None: none
    # judged yet): how far its own timing was off then.
    self_lag_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    """What the summary and the JSON `clock` object show (besides the negative count; see
    sse_tui.engine.clock).

    offset_ms: how far the producer's clock is ahead of this one (negative: behind);
    error_ms: its bound (the two half round trips); corrected: whether publish timestamps
    were moved by it."""

    offset_ms: float
    error_ms: float
    corrected: bool


@dataclass(frozen=True, slots=True)
class ProfilePosition:
    """Where a --stages load profile is (sse_tui.engine.stages), for the views."""

    stage: int  # 1-based
    stages: int
    target: float  # conversations live at once, or with rate_mode arrivals per second
    rate_mode: bool
    left_s: float  # of this stage; 0 once the profile is done
    held: bool  # the operator has taken over: the profile and the run's clock wait
    done: bool  # past the last stage: its target holds until the run ends

    @property
    def target_text(self) -> str:
        return f"{self.target:g}/s" if self.rate_mode else f"{self.target:g} conv"


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
    # Live ones (all up to 250, else the 250 most interesting, see sse_tui.ranking), ordered
    # by number, then the recently finished ones, newest first; conversations_live counts them.
    conversations: tuple[ConversationView, ...]
    conversations_live: int
    health: SelfHealth
    # Conversations waiting for a --connect-rate slot to open a stream (the ramp).
    connect_waiting: int = 0
    timeline: tuple[TimelinePoint, ...] = ()
    recent_latency_ms: tuple[float, ...] = ()  # latest receipts, for a sparkline
    fatal_error: str | None = None
    notes: tuple[str, ...] = field(default=())
    # Redis holding publishing back (not the generator): live, or the run's verdict at the
    # end; see sse_tui.engine.publish_watch.
    redis_warning: str | None = None
    # The engine's own lag over the whole run (for the summary and the benchmark).
    loop_lag_total: HistogramSnapshot | None = None
    schedule_lag_total: HistogramSnapshot | None = None
    # With --json-detail, in the final snapshot only: ended conversations (the troubled ones
    # first, up to a cap) and how many were left out.
    details: tuple[ConversationDetail, ...] = ()
    details_omitted: int = 0
    # Tokens sent to Redis whose reply has not come back yet: readers may already have them,
    # so the progress line counts them as published (total.tokens_published counts replies).
    tokens_in_flight: int = 0
    # While the run goes on and no SSE stream has worked yet: why (the commonest error kind
    # and its example). At the end it becomes the fatal error.
    stream_warning: str | None = None
    # Negative latencies seen (sse_tui.engine.clock.negative_warning), and the producer's
    # clock offset when a consumer with --redis estimated it.
    clock_warning: str | None = None
    clock: ClockEstimate | None = None
    # Where the --stages load profile is (None: no profile).
    profile: ProfilePosition | None = None

    # Conversations started so far by length (sse_tui.shaping.length_bucket), for the
    # producer panel when lengths are drawn from a distribution or a trace.
    conversation_lengths: tuple[int, ...] = ()

    @property
    def current_phase(self) -> PhaseStats:
        return self.phases[-1] if self.phases else self.total

    @property
    def finished(self) -> bool:
        return self.state in ("finished", "failed")
