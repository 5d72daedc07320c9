"""Reading one conversation's SSE stream: connect with retries, count every token, resume.

The per-token path (`_on_token`) is the hottest code in the consumer: one JSON parse, one
latency record, one inter-token-gap record, the sequence bookkeeping. The receive time is
taken once per socket read by the transport, not per token.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import orjson

from sse_tui.engine.stats import PhaseRecorder, SequenceTracker
from sse_tui.engine.transport import SSEStream, StreamError, StreamHTTPError, open_stream
from sse_tui.snapshot import ConversationView

if TYPE_CHECKING:
    from sse_tui.engine.producer import PublishState
    from sse_tui.engine.sse import SSEEvent
    from sse_tui.settings import Settings

CONNECT_ATTEMPTS = 4  # a failed connect is retried this many times in all before giving up
BACKOFF_S = (0.1, 0.3, 1.0, 2.0)
MAX_RECONNECTS = 20  # resumes of one conversation's stream before it counts as failed
# Without a ": connected" comment within this time, a 200 response counts as established.
ESTABLISH_FALLBACK_S = 1.0
RECENT_SAMPLES = 64


class EngineHooks(Protocol):
    """What a conversation needs from the engine that owns it."""

    @property
    def phase(self) -> PhaseRecorder: ...

    @property
    def settings(self) -> Settings: ...

    def on_established(self, conv: Conversation) -> None: ...

    def on_latency(self, latency_us: int) -> None: ...


class Conversation:
    """One conversation: its publish state (if we produce it) and its stream (if we read it)."""

    __slots__ = (
        "_final",
        "conversation_id",
        "discovered",
        "error",
        "error_detail",
        "established",
        "expected",
        "given_up",
        "hooks",
        "last_activity_ns",
        "last_event_id",
        "last_latency_us",
        "last_received_ns",
        "number",
        "publish",
        "recent_ms",
        "reconnects",
        "seen_on_redis",
        "started_mono",
        "state",
        "stream",
        "stream_url",
        "task",
        "tracker",
    )

    def __init__(self, hooks: EngineHooks, number: int, conversation_id: str, expected: int,
                 stream_url: str | None, *, discovered: bool = False) -> None:
        self.hooks = hooks
        self.number = number
        self.conversation_id = conversation_id
        self.expected = expected
        self.stream_url = stream_url
        self.discovered = discovered
        self.publish: PublishState | None = None
        self.tracker = SequenceTracker()
        self.state = "waiting"
        self.error: str | None = None  # why the conversation failed
        self.error_detail: str | None = None  # the last recovered problem (stream broke)
        self.established = False
        self.last_event_id: str | None = None
        self.last_activity_ns = 0  # any bytes: tokens and keep-alive comments
        self.last_received_ns = 0  # tokens only, for the inter-token gap
        self.seen_on_redis = 0  # highest sequence seen published on Redis (consumer --redis)
        self.given_up = False
        self.last_latency_us: int | None = None
        self.recent_ms: deque[float] = deque(maxlen=RECENT_SAMPLES)
        self.reconnects = 0
        self.started_mono = 0.0
        self.task: asyncio.Task[None] | None = None
        self.stream: SSEStream | None = None  # while reading, for the idle watchdog
        self._final: tuple[int, int] | None = None  # (missing, last) once finalized

    # -- reading the stream -------------------------------------------------------------

    async def consume(self) -> None:
        """Read the stream until the done token, resuming with Last-Event-ID when it ends early."""
        loop = asyncio.get_running_loop()
        self.started_mono = loop.time()
        self.state = "connecting"
        while True:
            stream = await self._connect()
            if stream is None:
                return
            fallback = None
            if not self.established:
                if stream.comments_visible:
                    fallback = loop.call_later(ESTABLISH_FALLBACK_S, self._establish)
                else:
                    self._establish()
            ended_with_done = False
            self.stream = stream
            self.last_activity_ns = time.time_ns()
            try:
                ended_with_done = await self._read(stream)
            except StreamError as e:
                # A bounded set of kinds for the summary; the detail stays with the row.
                self.hooks.phase.error("stream broken")
                self.error_detail = _short(e)
            finally:
                self.stream = None
                if fallback is not None:
                    fallback.cancel()
                await stream.aclose()
                self.hooks.phase.connections_closed += 1
            if ended_with_done:
                self.state = "done"
                return
            self.hooks.phase.streams_ended_without_done += 1
            if self.reconnects >= MAX_RECONNECTS:
                self._fail(f"stream ended early {self.reconnects + 1} times")
                return
            self.reconnects += 1
            self.hooks.phase.reconnects += 1
            self.state = "reconnecting"

    async def _connect(self) -> SSEStream | None:
        loop = asyncio.get_running_loop()
        assert self.stream_url is not None
        for attempt in range(CONNECT_ATTEMPTS):
            t0 = loop.time()
            try:
                stream = await open_stream(self.stream_url, last_event_id=self.last_event_id,
                                           transport=self.hooks.settings.transport)
            except StreamError as e:
                kind = f"HTTP {e.status}" if isinstance(e, StreamHTTPError) else "connect"
                self.hooks.phase.error(kind)
                retryable = getattr(e, "retryable", False)
                if not retryable or attempt == CONNECT_ATTEMPTS - 1:
                    self._fail(_short(e))
                    return None
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                continue
            phase = self.hooks.phase
            phase.connections_opened += 1
            phase.connect.record(int((loop.time() - t0) * 1e6))
            if self.established:  # a resumed stream: tokens may flow at once
                self.state = "streaming"
            return stream
        return None

    async def _read(self, stream: SSEStream) -> bool:
        on_token = self._on_token
        async for ev in stream:
            if ev.is_comment:
                if not self.established:
                    self._establish()
                self.last_activity_ns = ev.received_ns
                continue
            if ev.event != "token":
                if ev.event == "error":
                    self.hooks.phase.error("sse error event")
                continue
            if on_token(ev):
                return True
        return False

    def _establish(self) -> None:
        if not self.established:
            self.established = True
            if self.state in ("connecting", "reconnecting"):
                self.state = "streaming"
            self.hooks.on_established(self)

    def _on_token(self, ev: SSEEvent) -> bool:
        """Count one token; True when it is the done token."""
        try:
            d = orjson.loads(ev.data)
            seq = d["sequence"]
            ts = d["timestamp"]
            done = d["done"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.hooks.phase.error("bad token payload")
            return False
        if not isinstance(seq, int) or seq < 1:
            self.hooks.phase.error("bad token payload")
            return False
        if not self.established:
            self._establish()
        self.state = "streaming"
        phase = self.hooks.phase
        rx = ev.received_ns
        phase.tokens_received += 1
        self.last_event_id = ev.id
        tracker = self.tracker
        before_dup, before_ooo = tracker.duplicated, tracker.out_of_order
        tracker.receive(seq, done)
        if tracker.duplicated != before_dup:
            phase.tokens_duplicated += 1
        elif tracker.out_of_order != before_ooo:
            phase.tokens_out_of_order += 1
        lat_us = (rx - ts) // 1000
        phase.latency.record(lat_us)
        self.last_latency_us = lat_us
        self.recent_ms.append(lat_us / 1000.0)
        if self.last_received_ns:
            phase.itl.record((rx - self.last_received_ns) // 1000)
        else:  # the first token of this conversation
            loop_now_us = (asyncio.get_running_loop().time() - self.started_mono) * 1e6
            phase.first_token.record(int(loop_now_us))
        self.last_received_ns = self.last_activity_ns = rx
        self.hooks.on_latency(lat_us)
        return bool(done)

    def _fail(self, message: str) -> None:
        self.state = "error"
        self.error = message

    # -- the end ------------------------------------------------------------------------

    def last_sequence(self) -> int:
        """The last sequence this conversation should have delivered."""
        if self.tracker.done_seq:
            return self.tracker.done_seq
        published = self.publish.published if self.publish is not None else 0
        return max(published, self.seen_on_redis, self.tracker.highest)

    def finalize(self, phase: PhaseRecorder, *, run_ended: bool = False) -> None:
        """Count what never arrived, once, into the phase in force when it ended.

        run_ended: the run is over and this conversation was still in progress."""
        if self._final is not None:
            return
        reading = self.stream_url is not None
        last = self.last_sequence()
        first = self.tracker.first_seq if self.discovered else 1
        missing = self.tracker.missing(last, first) if reading else 0
        self._final = (missing, last)
        phase.tokens_missing += missing
        # A received done token proves everything was published, even if the publisher has
        # not yet processed its pipeline's reply (the token can outrun it).
        if reading:
            complete = self.tracker.done_seq > 0 and missing == 0
        else:
            complete = self.publish is not None and self.publish.finished
        if complete and self.error is None:
            phase.conversations_completed += 1
            self.state = "done"
        elif run_ended and missing == 0 and self.error is None:
            phase.conversations_cut_short += 1
            self.state = "cut"
        else:
            phase.conversations_incomplete += 1
            if self.state not in ("error",):
                self.state = "incomplete"

    def view(self, now_ns: int) -> ConversationView:
        published = self.publish.published if self.publish is not None else 0
        last = self._final[1] if self._final else max(self.last_sequence(), self.expected)
        missing = (self._final[0] if self._final else
                   self.tracker.missing(self.tracker.highest, self.tracker.first_seq or 1))
        return ConversationView(
            conversation_id=self.conversation_id,
            number=self.number,
            state=self.state,
            published=published,
            received=self.tracker.unique,
            expected=last,
            missing=missing,
            duplicated=self.tracker.duplicated,
            out_of_order=self.tracker.out_of_order,
            reconnects=self.reconnects,
            last_latency_ms=(self.last_latency_us / 1000.0
                             if self.last_latency_us is not None else None),
            recent_latency_ms=tuple(self.recent_ms),
            last_event_age_s=((now_ns - self.last_activity_ns) / 1e9
                              if self.last_activity_ns else None),
            error=self.error or self.error_detail,
            discovered=self.discovered,
        )


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:160]

