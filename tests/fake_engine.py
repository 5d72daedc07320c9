"""A small in-process engine for driving the TUI in tests.

`FakeEngine` implements the `EngineHandle` protocol without any I/O: it records every
command in `calls`, simulates a plausible run on a simulated clock and feeds what it
simulates into the engine's own recorders (`PhaseRecorder`, `LatencyHistogram`, `Timeline`),
so its snapshots carry the real statistics, frozen the way the engine freezes them. With
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

from sse_tui.engine.stages import LoadProfile
from sse_tui.engine.stats import PhaseRecorder
from sse_tui.engine.timeline import Timeline
from sse_tui.settings import Settings
from sse_tui.snapshot import (
    ConversationState,
    ConversationView,
    Distribution,
    SelfHealth,
    StatsSnapshot,
)
from sse_tui.values import parse_stages
from tests.conftest import until

START_NS = 1_700_000_000_000_000_000
_S = ConversationState


def _us(ms: float) -> int:
    return max(1, round(ms * 1000))


@dataclass
class _Conversation:
    number: int
    conversation_id: str
    state: ConversationState = _S.CONNECTING
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

    @property
    def commands_in_flight(self) -> int:
        return 0  # commands apply at once: the next snapshot shows them

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
            if self._settings.rate <= 0:
                self._take_over()
            self._settings = self._settings.with_changes(conversations=n)
            self._new_phase()

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self.calls.append(("set_rate", rate))
            if self._settings.rate > 0 and rate > 0:
                self._take_over()
                self._settings = self._settings.with_changes(rate=rate)
                self._new_phase()

    def hold_profile(self) -> None:
        with self._lock:
            self.calls.append(("hold_profile",))
            self._take_over()

    def release_profile(self) -> None:
        with self._lock:
            self.calls.append(("release_profile",))
            if self._profile is not None and self._profile.release():
                self._apply_due_stage()

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
        # A --stages profile, driven as the engine drives it, on the simulated active clock
        # (time not paused, profile not held).
        self._profile: LoadProfile | None = None
        self._active = 0.0
        self._arrival_credit = 0.0
        if settings.stages:
            stages = parse_stages(settings.stages)
            self._profile = LoadProfile(stages, rate_mode=settings.rate > 0)
            self._settings = self._with_target(stages[0].target)
        self._rng = random.Random(self.seed)
        self._state = "starting"
        self._finished = False
        self._elapsed = 0.0
        self._phases: list[PhaseRecorder] = []
        self._phase = self._new_recorder()
        self._live: dict[int, _Conversation] = {}
        self._done: deque[_Conversation] = deque(maxlen=20)
        self._next_number = 1
        self._timeline = Timeline()
        self._recent: deque[float] = deque(maxlen=240)
        self._credit = 0.0

    def _new_recorder(self) -> PhaseRecorder:
        s = self._settings
        p = PhaseRecorder(index=len(self._phases), started_s=self._elapsed,
                          conversations=s.conversations, delay_ms=s.delay_ms,
                          label=(f"{s.rate:g}/s ≤{s.conversations}" if s.rate > 0
                                 else f"{s.conversations} conv") + f", {s.delay_ms:g} ms")
        self._phases.append(p)
        return p

    def _new_phase(self) -> None:
        self._phase.ended_s = self._elapsed
        self._phase = self._new_recorder()

    def _take_over(self) -> None:
        """As the engine: the operator holds a profile that has stages still to run."""
        if self._profile is not None and self._active < self._profile.length_s:
            self._profile.hold()

    def _with_target(self, target: float) -> Settings:
        if self._settings.rate > 0:
            return self._settings.with_changes(rate=target)
        return self._settings.with_changes(conversations=int(target))

    def _apply_due_stage(self) -> None:
        if self._profile is not None:
            stage = self._profile.due(self._active)
            if stage is not None:
                self._settings = self._with_target(stage.target)
                self._new_phase()

    def _start_conversation(self) -> None:
        n = self._next_number
        self._next_number += 1
        self._live[n] = _Conversation(n, self._settings.conversation_id(n))
        phase = self._phase
        phase.conversations_started += 1
        phase.connections_opened += 1
        phase.connect.record(_us(1.5 + self._rng.random()))

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._state = "failed" if self.fatal_error else "finished"
        self._phase.ended_s = self._elapsed
        for conv in list(self._live.values()):
            if conv.state != _S.ERROR:
                conv.state = _S.DONE
            conv.ended_s = self._elapsed
            self._done.append(conv)
        self._live.clear()

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
        if self._profile is None or not self._profile.held:
            self._active = round(self._active + dt, 6)
        self._apply_due_stage()
        s = self._settings
        if s.rate > 0:  # open loop: arrivals at the rate, the cap turning some away
            self._arrival_credit += s.rate * dt
            while self._arrival_credit >= 1:
                self._arrival_credit -= 1
                if len(self._live) < s.conversations:
                    self._start_conversation()
                else:
                    self._phase.arrivals_dropped += 1
        # Top up the live conversations to the setting (extra ones are let finish).
        while s.rate <= 0 and len(self._live) < s.conversations:
            self._start_conversation()
        per_conv = dt * 1000.0 / max(s.delay_ms, 1.0)
        self._credit += per_conv
        tokens_now = int(self._credit)
        self._credit -= tokens_now
        phase = self._phase
        for conv in list(self._live.values()):
            if conv.state == _S.CONNECTING:
                conv.state = _S.STREAMING
                continue
            if conv.state == _S.ERROR:
                continue
            k = min(tokens_now, s.tokens - conv.published)
            for _ in range(k):
                conv.published += 1
                phase.tokens_published += 1
                if conv.number == 2 and conv.published in (5, 6):
                    conv.missing += 1
                    phase.tokens_missing += 1
                    continue
                lat = self._latency(conv)
                conv.received += 1
                conv.last_latency_ms = lat
                conv.recent.append(lat)
                conv.last_event_s = self._elapsed
                self._recent.append(lat)
                phase.tokens_received += 1
                phase.latency.record(_us(lat))
                self._timeline.record(_us(lat))
                if conv.received == 1:
                    phase.first_token.record(_us(lat + 2.0))
                else:
                    phase.itl.record(_us(s.delay_ms + self._rng.random()))
            if conv.number == 4 and conv.published >= 10 and conv.error is None:
                conv.state = _S.ERROR
                conv.error = "connection reset by peer"
                phase.error("connection")
                continue
            if conv.published >= s.tokens:
                conv.state = _S.DONE
                conv.ended_s = self._elapsed
                phase.conversations_completed += 1
                phase.connections_closed += 1
        for n, conv in list(self._live.items()):
            if conv.state in (_S.DONE, _S.ERROR) and (
                conv.state == _S.DONE
                or len(self._live) > s.conversations
                or self._elapsed - (conv.last_event_s or 0) > 2
            ):
                if conv.ended_s is None:
                    conv.ended_s = self._elapsed
                self._done.append(conv)
                del self._live[n]
        if int(self._elapsed) > int(t0):
            self._timeline.close_second(
                float(int(self._elapsed)),
                sum(p.tokens_published for p in self._phases),
                sum(p.tokens_received for p in self._phases),
            )
        if s.duration_s > 0 and self._active >= s.duration_s - 1e-9:
            self._finish()

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
        remaining = max(0.0, s.duration_s - self._active) if s.duration_s > 0 else None
        now = self._elapsed
        # Frozen as the engine freezes them: each phase, and the total as their merge.
        phases = tuple(p.freeze(now) for p in self._phases)
        total = PhaseRecorder.merged(self._phases).freeze(now, copy=False)
        # A fixed self-check figure: there is no event loop here whose lag could be measured.
        lag = Distribution(100, 0.1, 0.3, 0.2, 0.5, 1.2, 2.0, 2.5)
        return StatsSnapshot(
            taken_at_ns=START_NS + int(self._elapsed * 1e9),
            state=self._state,
            settings=s,
            elapsed_s=self._elapsed,
            remaining_s=remaining,
            phase_index=len(self._phases) - 1,
            phases=phases,
            total=total,
            conversations=tuple(self._view(c) for c in self._live.values())
            + tuple(self._view(c) for c in reversed(self._done)),
            conversations_live=len(self._live),
            health=SelfHealth(
                loop_lag=lag, schedule_lag=lag, cpu_percent=12.5, warning=self.warning
            ),
            timeline=self._timeline.points(),
            recent_latency_ms=tuple(self._recent),
            fatal_error=self.fatal_error if self._finished else None,
            profile=self._profile.position(self._active) if self._profile is not None else None,
        )


async def wait_for(pilot: Any, predicate: Any, timeout: float = 5.0, what: str = "") -> None:
    """Let the app run until `predicate()` is true; fail after `timeout` seconds.

    conftest's `until` with the pilot's pause, so the app processes messages between polls.
    """
    await until(predicate, timeout=timeout, what=what or repr(predicate), pause=pilot.pause)
