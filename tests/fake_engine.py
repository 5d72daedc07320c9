"""A small in-process engine for driving the TUI in tests.

`FakeEngine` implements the `EngineHandle` protocol without any I/O: it records every
command in `calls`, simulates a plausible run on a simulated clock and builds real
`StatsSnapshot`s (HDR histograms in microseconds, exact count/sum/min/max). With
`auto_advance=True` every `snapshot()` advances the simulated clock by `step_s`, so a live
app sees figures move; with `auto_advance=False` the figures only move when a test calls
`advance()`, which makes screenshots deterministic.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from sse_tui.settings import Settings
from sse_tui.snapshot import (
    ConversationView,
    Distribution,
    HistogramSnapshot,
    PhaseStats,
    SelfHealth,
    StatsSnapshot,
    TimelinePoint,
)

START_NS = 1_700_000_000_000_000_000


class Hist:
    """A growing histogram with exact count/sum/min/max, frozen into HistogramSnapshots."""

    def __init__(self) -> None:
        self.hdr = HdrHistogram(1, 3_600_000_000, 3)
        self.count = 0
        self.sum_us = 0.0
        self.min_us = float("inf")
        self.max_us = 0.0

    def record_ms(self, ms: float) -> None:
        us = max(1, round(ms * 1000))
        self.hdr.record_value(us)
        self.count += 1
        self.sum_us += us
        self.min_us = min(self.min_us, us)
        self.max_us = max(self.max_us, us)

    def freeze(self) -> HistogramSnapshot:
        if not self.count:
            return HistogramSnapshot(None, 0, 0.0, 0.0, 0.0)
        copy = HdrHistogram(1, 3_600_000_000, 3)
        copy.add(self.hdr)
        return HistogramSnapshot(copy, self.count, self.sum_us, self.min_us, self.max_us)


@dataclass
class _Phase:
    index: int
    started_s: float
    conversations: int
    delay_ms: float
    ended_s: float | None = None
    published: int = 0
    received: int = 0
    started: int = 0
    completed: int = 0
    missing: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: Hist = field(default_factory=Hist)
    connect: Hist = field(default_factory=Hist)
    first_token: Hist = field(default_factory=Hist)
    itl: Hist = field(default_factory=Hist)

    @property
    def label(self) -> str:
        return f"{self.conversations} conv, {self.delay_ms:g} ms"


@dataclass
class _Conversation:
    number: int
    conversation_id: str
    state: str = "connecting"
    published: int = 0
    received: int = 0
    missing: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    last_latency_ms: float | None = None
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=32))
    last_event_s: float | None = None
    error: str | None = None
    ended_s: float | None = None


class FakeEngine:
    """An EngineHandle that simulates a run; see the module docstring."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        auto_advance: bool = True,
        step_s: float = 0.25,
        seed: int = 7,
        warning: str | None = None,
        fatal_error: str | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.calls: list[tuple[Any, ...]] = []
        self.auto_advance = auto_advance
        self.step_s = step_s
        self.seed = seed
        self.warning = warning
        self.fatal_error = fatal_error
        self.started = False
        self._reset(settings or Settings(run_id="fake"))

    # -- the EngineHandle protocol -------------------------------------------------------
    @property
    def settings(self) -> Settings:
        with self._lock:
            return self._settings

    def start(self) -> None:
        with self._lock:
            self.calls.append(("start",))
            if not self.started:
                self.started = True
                self._state = "running"

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            if self.auto_advance and self.started and not self._finished:
                self.advance(self.step_s)
            return self._build()

    def set_conversations(self, n: int) -> None:
        with self._lock:
            self.calls.append(("set_conversations", n))
            self._settings = self._settings.with_changes(conversations=n)
            self._new_phase()

    def set_delay(self, delay_ms: float) -> None:
        with self._lock:
            self.calls.append(("set_delay", delay_ms))
            self._settings = self._settings.with_changes(delay_ms=delay_ms)
            self._new_phase()

    def pause(self) -> None:
        with self._lock:
            self.calls.append(("pause",))
            if not self._finished:
                self._state = "paused"

    def resume(self) -> None:
        with self._lock:
            self.calls.append(("resume",))
            if not self._finished:
                self._state = "running"

    def stop(self) -> None:
        with self._lock:
            self.calls.append(("stop",))
            self._finish()

    def join(self, timeout: float | None = None) -> StatsSnapshot:
        with self._lock:
            self.calls.append(("join", timeout))
            self._finish()
            return self._build()

    def restart(self, settings: Settings | None = None) -> None:
        with self._lock:
            self.calls.append(("restart", settings))
            self._reset(settings or self._settings)
            self.started = True
            self._state = "running"

    # -- test helpers --------------------------------------------------------------------
    def command_names(self) -> list[str]:
        with self._lock:
            return [c[0] for c in self.calls]

    def advance(self, seconds: float) -> None:
        """Simulate `seconds` of the run in steps of at most 0.25 s."""
        with self._lock:
            while seconds > 1e-9 and not self._finished:
                dt = min(0.25, seconds)
                self._step(dt)
                seconds -= dt

    def finish(self) -> None:
        """End the run as if its duration had passed."""
        with self._lock:
            self._finish()

    # -- simulation ----------------------------------------------------------------------
    def _reset(self, settings: Settings) -> None:
        self._settings = settings
        self._rng = random.Random(self.seed)
        self._state = "starting"
        self._finished = False
        self._elapsed = 0.0
        self._phases: list[_Phase] = [_Phase(0, 0.0, settings.conversations, settings.delay_ms)]
        self._total = _Phase(-1, 0.0, settings.conversations, settings.delay_ms)
        self._live: dict[int, _Conversation] = {}
        self._done: deque[_Conversation] = deque(maxlen=20)
        self._next_number = 1
        self._timeline: list[TimelinePoint] = []
        self._second_latencies: list[float] = []
        self._second_published = 0
        self._second_received = 0
        self._recent: deque[float] = deque(maxlen=240)
        self._credit = 0.0

    def _new_phase(self) -> None:
        cur = self._phases[-1]
        cur.ended_s = self._elapsed
        self._phases.append(
            _Phase(
                len(self._phases),
                self._elapsed,
                self._settings.conversations,
                self._settings.delay_ms,
            )
        )

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._state = "failed" if self.fatal_error else "finished"
        self._phases[-1].ended_s = self._elapsed
        for conv in list(self._live.values()):
            if conv.state != "error":
                conv.state = "done"
            conv.ended_s = self._elapsed
            self._done.append(conv)
        self._live.clear()

    def _bump(self, attr: str, n: int = 1) -> None:
        for p in (self._phases[-1], self._total):
            setattr(p, attr, getattr(p, attr) + n)

    def _latency(self, conv: _Conversation) -> float:
        base = 6.0 + self._settings.conversations * 0.05
        if conv.number % 7 == 3:
            base *= 4  # a slow one, so the table has something to put first
        return round(base + self._rng.expovariate(1 / 3.0), 3)

    def _step(self, dt: float) -> None:
        s = self._settings
        t0 = self._elapsed
        self._elapsed = round(t0 + dt, 6)
        if self._state == "paused":
            return
        # Top up the live conversations to the setting (extra ones are let finish).
        while len(self._live) < s.conversations:
            n = self._next_number
            self._next_number += 1
            conv = _Conversation(n, s.conversation_id(n))
            self._live[n] = conv
            self._bump("started")
            for p in (self._phases[-1], self._total):
                p.connect.record_ms(1.5 + self._rng.random())
        per_conv = dt * 1000.0 / max(s.delay_ms, 1.0)
        self._credit += per_conv
        tokens_now = int(self._credit)
        self._credit -= tokens_now
        for conv in list(self._live.values()):
            if conv.state == "connecting":
                conv.state = "streaming"
                continue
            if conv.state == "error":
                continue
            k = min(tokens_now, s.tokens - conv.published)
            for _ in range(k):
                conv.published += 1
                self._bump("published")
                self._second_published += 1
                if conv.number == 2 and conv.published in (5, 6):
                    conv.missing += 1
                    self._bump("missing")
                    continue
                lat = self._latency(conv)
                conv.received += 1
                conv.last_latency_ms = lat
                conv.recent.append(lat)
                conv.last_event_s = self._elapsed
                self._recent.append(lat)
                self._second_latencies.append(lat)
                self._second_received += 1
                self._bump("received")
                for p in (self._phases[-1], self._total):
                    p.latency.record_ms(lat)
                    if conv.received == 1:
                        p.first_token.record_ms(lat + 2.0)
                    else:
                        p.itl.record_ms(s.delay_ms + self._rng.random())
            if conv.number == 4 and conv.published >= 10 and conv.error is None:
                conv.state = "error"
                conv.error = "connection reset by peer"
                for p in (self._phases[-1], self._total):
                    p.errors["connection"] = p.errors.get("connection", 0) + 1
                continue
            if conv.published >= s.tokens:
                conv.state = "done"
                conv.ended_s = self._elapsed
                self._bump("completed")
        for n, conv in list(self._live.items()):
            if conv.state in ("done", "error") and (
                conv.state == "done"
                or len(self._live) > s.conversations
                or self._elapsed - (conv.last_event_s or 0) > 2
            ):
                if conv.ended_s is None:
                    conv.ended_s = self._elapsed
                self._done.append(conv)
                del self._live[n]
        if int(self._elapsed) > int(t0):
            lats = sorted(self._second_latencies)
            self._timeline.append(
                TimelinePoint(
                    t_s=float(int(self._elapsed)),
                    published_per_s=float(self._second_published),
                    received_per_s=float(self._second_received),
                    p50_ms=_pct(lats, 50) if lats else None,
                    p99_ms=_pct(lats, 99) if lats else None,
                )
            )
            self._second_latencies.clear()
            self._second_published = self._second_received = 0
        if s.duration_s > 0 and self._elapsed >= s.duration_s - 1e-9:
            self._finish()

    def _phase_stats(self, p: _Phase) -> PhaseStats:
        end = p.ended_s if p.ended_s is not None else self._elapsed
        return PhaseStats(
            index=p.index,
            label=p.label if p.index >= 0 else "total",
            started_s=p.started_s,
            ended_s=p.ended_s,
            conversations=p.conversations if p.index >= 0 else self._settings.conversations,
            delay_ms=p.delay_ms if p.index >= 0 else self._settings.delay_ms,
            elapsed_s=end - p.started_s if p.index >= 0 else self._elapsed,
            tokens_published=p.published,
            tokens_received=p.received,
            publish_errors=0,
            connections_opened=p.started,
            connections_closed=p.completed,
            errors=dict(p.errors),
            conversations_started=p.started,
            conversations_completed=p.completed,
            conversations_incomplete=0,
            tokens_missing=p.missing,
            tokens_duplicated=p.duplicated,
            tokens_out_of_order=p.out_of_order,
            streams_ended_without_done=0,
            reconnects=p.reconnects,
            latency=p.latency.freeze(),
            connect=p.connect.freeze(),
            first_token=p.first_token.freeze(),
            itl=p.itl.freeze(),
        )

    def _view(self, c: _Conversation) -> ConversationView:
        return ConversationView(
            conversation_id=c.conversation_id,
            number=c.number,
            state=c.state,
            published=c.published,
            received=c.received,
            expected=self._settings.tokens,
            missing=c.missing,
            duplicated=c.duplicated,
            out_of_order=c.out_of_order,
            reconnects=c.reconnects,
            last_latency_ms=c.last_latency_ms,
            recent_latency_ms=tuple(c.recent),
            last_event_age_s=(
                round(self._elapsed - c.last_event_s, 3) if c.last_event_s is not None else None
            ),
            error=c.error,
        )

    def _build(self) -> StatsSnapshot:
        s = self._settings
        remaining = max(0.0, s.duration_s - self._elapsed) if s.duration_s > 0 else None
        lag = Distribution(100, 0.1, 0.3, 0.2, 0.5, 1.2, 2.0, 2.5)
        return StatsSnapshot(
            taken_at_ns=START_NS + int(self._elapsed * 1e9),
            state=self._state,
            settings=s,
            elapsed_s=self._elapsed,
            remaining_s=remaining,
            phase_index=len(self._phases) - 1,
            phases=tuple(self._phase_stats(p) for p in self._phases),
            total=self._phase_stats(self._total),
            conversations=tuple(self._view(c) for c in self._live.values())
            + tuple(self._view(c) for c in reversed(self._done)),
            conversations_live=len(self._live),
            health=SelfHealth(
                loop_lag=lag, schedule_lag=lag, cpu_percent=12.5, warning=self.warning
            ),
            timeline=tuple(self._timeline),
            recent_latency_ms=tuple(self._recent),
            fatal_error=self.fatal_error if self._finished else None,
        )


def _pct(sorted_values: list[float], p: float) -> float:
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


async def wait_for(pilot: Any, predicate: Any, timeout: float = 5.0, what: str = "") -> None:
    """Let the app run until `predicate()` is true; fail after `timeout` seconds.

    The one place the TUI tests wait: every wait is bounded and says what it waited for.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await pilot.pause(0.02)
