"""Reading one conversation's SSE stream: connect with retries, count every token, resume.

The per-token path (`_on_token`) is the hottest code in the consumer: one JSON parse, one
latency record, one inter-token-gap record, the sequence bookkeeping. The receive time is
taken once per socket read by the transport, not per token.

A conversation owns its state (`ConversationState`): the engine tells it what happened
(`mark_publishing`, `mark_draining`, `finalize`) and it decides where that leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from sse_tui.engine.backoff import backoff_s
from sse_tui.engine.sse import EventTooLarge
from sse_tui.engine.stats import LOSS_CLASSES, PhaseRecorder, SequenceTracker, classify_loss
from sse_tui.engine.token_payload import MAX_SEQUENCE, Rejected, parse_token
from sse_tui.engine.transport import SSEStream, StreamConfig, StreamError, open_stream
from sse_tui.engine.transport.base import error_kind
from sse_tui.snapshot import ConversationDetail, ConversationState, ConversationView

if TYPE_CHECKING:
    from sse_tui.engine.connect_rate import ConnectRate
    from sse_tui.engine.nats_tap import ConversationHop
    from sse_tui.engine.producer import PublishState
    from sse_tui.engine.sse import SSEEvent
    from sse_tui.settings import Settings

MAX_RECONNECTS = 20  # resumes of one conversation's stream before it counts as failed
CONNECT_TIMEOUT_S = 10.0  # for the connection and the response headers of one attempt
# Without a ": connected" comment within this time, a 200 response counts as established.
ESTABLISH_FALLBACK_S = 1.0
RECENT_SAMPLES = 64
# After the done token the server should end the response: wait this long (at most the
# grace) for it, counting what still arrives.
AFTER_DONE_WAIT_S = 1.0
MAX_RESUME_POINTS = 256  # resume points remembered per conversation, for the loss classes
MAX_RANGES = 20  # missing ranges kept per conversation for --json-detail

_S = ConversationState


class EngineHooks(Protocol):
    """What a conversation needs from the engine that owns it."""

    @property
    def phase(self) -> PhaseRecorder: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def stream_config(self) -> StreamConfig: ...  # transport, --header's, TLS options

    def on_established(self, conv: Conversation) -> None: ...

    # Added to each publish timestamp to put it on this host's clock (sse_tui.engine.clock):
    # 0 unless a consumer with --redis estimated the producer's offset.
    @property
    def ts_shift_ns(self) -> int: ...

    def on_latency(self, latency_us: int) -> None: ...

    @property
    def connect_gate(self) -> ConnectRate: ...  # --connect-rate


class Conversation:
    """One conversation: its publish state (if we produce it) and its stream (if we read it)."""

    __slots__ = (
        "_down_since",
        "_expected",
        "_failures",
        "_final",
        "_had_stream",
        "_last_problem",
        "_loss",
        "_opened_at",
        "_ranges",
        "_ranges_total",
        "_resume_points",
        "_retry_s",
        "_state",
        "_stream_seen",
        "_stream_works",
        "_unsettled",
        "accounting_error",
        "conversation_id",
        "discovered",
        "error_detail",
        "errors",
        "established",
        "expected",
        "failure",
        "given_up",
        "hooks",
        "hop",
        "last_activity_ns",
        "last_event_id",
        "last_latency_us",
        "last_received_ns",
        "number",
        "outage_s",
        "publish",
        "recent_ms",
        "reconnects",
        "seen_on_redis",
        "started_mono",
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
        # With --nats: when each token passed NATS (sse_tui.engine.nats_tap); else None.
        self.hop: ConversationHop | None = None
        self.tracker = SequenceTracker()
        self._state = _S.WAITING
        self.failure: str | None = None  # why the conversation failed
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
        self.errors = 0  # errors counted on this conversation by its token path
        # Last-Event-IDs that resumed streams were opened with (for the after_resume class).
        self._resume_points: list[int] = []
        self._stream_seen: SSEStream | None = None  # the stream the last token came on
        self._expected = 0  # once finalized: the sequences this reader was due
        self._loss: dict[str, int] = {}  # once finalized: missing by loss class
        self._ranges: list[tuple[int, int]] = []  # the first MAX_RANGES missing runs
        self._ranges_total = 0
        self._unsettled = False  # finalized while a publish of it may still be in flight
        self.accounting_error: str | None = None
        # The connection path (consume): retries, backoff, outages.
        self._down_since: float | None = None  # loop time it last had no working stream
        self._had_stream = False  # a stream of it has worked (delivered an event)
        self._stream_works = False  # the current stream has delivered an event
        self._failures = 0  # failed attempts since a stream last worked
        self._retry_s = 0.0  # the server's retry: field, in seconds
        self._last_problem = ""
        self.outage_s = 0.0  # time without a stream after it had one
        self._opened_at = 0.0  # loop time the current stream opened

    # -- what the views and the ranking read (see sse_tui.ranking.Rankable) ----------------

    @property
    def state(self) -> ConversationState:
        return self._state

    @property
    def error(self) -> str | None:
        """Why it failed, else the last problem it recovered from."""
        return self.failure or self.error_detail

    @property
    def missing(self) -> int:
        """Final once it ended; until then the gaps below the highest sequence received."""
        if self._final is not None:
            return self._final[0]
        return self.tracker.missing_so_far(from_first_received=self.discovered)

    @property
    def duplicated(self) -> int:
        return self.tracker.duplicated

    @property
    def out_of_order(self) -> int:
        return self.tracker.out_of_order

    @property
    def last_latency_ms(self) -> float | None:
        return None if self.last_latency_us is None else self.last_latency_us / 1000.0

    # -- what the engine tells it ---------------------------------------------------------

    def mark_publishing(self) -> None:
        """Producer mode: we only publish this conversation, nobody of ours reads it."""
        if self._state == _S.WAITING:
            self._state = _S.PUBLISHING

    def mark_draining(self) -> None:
        """Everything is published: what is left is waiting for the last tokens."""
        if self._state == _S.STREAMING:
            self._state = _S.DRAINING

    def seen_published(self, seq: int) -> None:
        """Sequence `seq` was seen on Redis (consumer mode with --redis)."""
        if seq > self.seen_on_redis:
            self.seen_on_redis = seq

    def caught_up(self) -> bool:
        """Has this reader received everything that was published to it?"""
        if self._state in (_S.DONE, _S.ERROR):
            return True
        if self.publish is None:
            return self.tracker.done_seq > 0
        return self.tracker.unique >= self.publish.published

    @property
    def without_stream(self) -> bool:
        """Reading, but with no working stream right now (connecting, or an outage)."""
        return self._down_since is not None

    def _reading(self) -> ConversationState:
        """The state of an open stream: draining once everything is published."""
        if self.publish is not None and self.publish.finished:
            return _S.DRAINING
        return _S.STREAMING

    # -- reading the stream -------------------------------------------------------------

    async def consume(self) -> None:
        """Read the stream until the done token, resuming with Last-Event-ID when it ends early.

        Without a working stream (its first connect, or after one broke) it retries with
        backoff for up to the retry budget; the time without one is an outage, reported as
        such (stream_outages, outage_ms), not as a failed conversation."""
        loop = asyncio.get_running_loop()
        self.started_mono = loop.time()
        self._down_since = self.started_mono
        self._state = _S.CONNECTING
        try:
            await self._consume(loop)
        finally:
            self._end_outage(loop.time())

    async def _consume(self, loop: asyncio.AbstractEventLoop) -> None:
        phase = self.hooks.phase
        assert self.stream_url is not None
        while True:
            stream = await self._connect(loop)
            if stream is None:
                return
            opened_at = loop.time()
            fallback = None
            if not self.established:
                if stream.comments_visible:
                    fallback = loop.call_later(ESTABLISH_FALLBACK_S, self._establish)
                else:
                    self._establish()
            ended_with_done = False
            errors_before = self.errors
            self._stream_works = False
            self.stream = stream
            self.last_activity_ns = time.time_ns()
            try:
                ended_with_done = await self._read(stream, opened_at)
            except StreamError as e:
                self._problem(*error_kind(e, self.stream_url))
            finally:
                self.stream = None
                if fallback is not None:
                    fallback.cancel()
                if stream.retry_ms is not None:  # the server's wish, as EventSource obeys it
                    self._retry_s = stream.retry_ms / 1000.0
                await stream.aclose()
                phase.connections_closed += 1
            if ended_with_done:
                self._state = _S.DONE
                return
            phase.streams_ended_without_done += 1
            if not self._stream_works:
                # Nothing came through (e.g. closed right after its headers): a failed
                # attempt, retried with backoff, not a resume.
                if self.errors == errors_before:
                    self._problem(
                        "stream ended before any event",
                        f"{_path(self.stream_url)} ended after its headers, before any event")
                self._failures += 1
            else:
                if self.reconnects >= MAX_RECONNECTS:
                    self._fail(f"stream ended early {self.reconnects + 1} times")
                    return
                self.reconnects += 1
                phase.reconnects += 1
                self._down_since = loop.time()
            self._state = _S.RECONNECTING if self.established else _S.CONNECTING

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> SSEStream | None:
        """Open the stream. A failed attempt is retried after a backoff while the conversation
        has been without a stream for less than the retry budget; an answer that will not
        change (404, 401, 400, a 200 that is not an event stream) fails it at once."""
        assert self.stream_url is not None
        settings = self.hooks.settings
        phase = self.hooks.phase
        while True:
            wait = self._wait_before_attempt(loop.time(), settings.retry_budget_s)
            if wait is None:
                self._fail(f"no stream for {settings.retry_budget_s:g} s (--retry-budget); "
                           f"last: {self._last_problem}")
                return None
            if wait > 0:
                await asyncio.sleep(wait)
            await self._connect_slot(loop)
            phase.connect_attempts += 1
            t0 = loop.time()
            try:
                stream = await open_stream(self.stream_url, last_event_id=self.last_event_id,
                                           connect_timeout=CONNECT_TIMEOUT_S,
                                           transport=settings.transport,
                                           max_event_bytes=settings.max_event_bytes,
                                           config=self.hooks.stream_config)
            except StreamError as e:
                kind, detail = error_kind(e, self.stream_url)
                self._problem(kind, detail)
                self._failures += 1
                if not e.retryable:
                    self._fail(detail)
                    return None
                continue
            phase.connections_opened += 1
            phase.connect.record(int((loop.time() - t0) * 1e6))
            if self.established:  # a resumed stream: tokens may flow at once
                self._state = self._reading()
            return stream

    async def _connect_slot(self, loop: asyncio.AbstractEventLoop) -> None:
        """--connect-rate: wait for a slot. Before a conversation's first attempt that wait
        is the generator's own queue, not the system's answer: its clocks (establish, first
        token) start after it. A reconnect's wait stays in its outage: no stream meanwhile."""
        await self.hooks.connect_gate.acquire()
        if not self._had_stream and not self._failures and not self.established:
            self.started_mono = self._down_since = loop.time()

    def _wait_before_attempt(self, now: float, budget_s: float) -> float | None:
        """Seconds to wait before the next attempt; None once the retry budget is spent."""
        if not self._failures:
            # The first attempt (at once), or a resume after a stream that worked: at once
            # too, unless the server asked for a retry: interval.
            return self._retry_s if self.reconnects else 0.0
        down_since = self._down_since if self._down_since is not None else now
        left = down_since + budget_s - now
        if left <= 0:
            return None
        return min(backoff_s(self._failures - 1, floor_s=self._retry_s), left)

    def _stream_worked(self, opened_at: float) -> None:
        """The first event on a stream: the time without one (if any) ends when it opened."""
        self._stream_works = True
        self._failures = 0
        since = self._down_since
        if since is None:
            return
        self._down_since = None
        phase = self.hooks.phase
        if self._had_stream:
            self._record_outage(opened_at - since)
        else:
            self._had_stream = True
            phase.establish.record(int((opened_at - since) * 1e6))

    def _end_outage(self, now: float) -> None:
        """The conversation ended (done, failed, given up, run over) while without a stream."""
        if self._had_stream and self._down_since is not None:
            self._record_outage(now - self._down_since)
            self._down_since = None

    def _record_outage(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        phase = self.hooks.phase
        phase.stream_outages += 1
        phase.outage_ms += round(seconds * 1000)
        self.outage_s += seconds

    def idle_timed_out(self, timeout_s: float) -> None:
        """The engine's watchdog is closing this stream: silent for `timeout_s`."""
        self._problem("idle timeout", f"{_path(self.stream_url or '')} silent for "
                                      f"{timeout_s:g} s (a half-open connection?)")

    def _problem(self, kind: str, detail: str) -> None:
        """A failed attempt or a broken stream: counted by kind, with its detail as the kind's
        example and as this conversation's last problem."""
        self.errors += 1
        self.hooks.phase.error(kind, detail=detail)
        self.error_detail = detail
        self._last_problem = detail

    async def _read(self, stream: SSEStream, opened_at: float) -> bool:
        """Read the stream until the done token (True) or its end (False)."""
        self._opened_at = opened_at
        dispatch_to = getattr(stream, "dispatch_to", None)
        if dispatch_to is not None:  # the raw transport: events handed over as parsed
            done: bool = await dispatch_to(self._on_event)
        else:
            done = False
            async for ev in stream:
                if self._on_event(ev):
                    done = True
                    break
        if done:
            await self._after_done(stream)
        return done

    def _on_event(self, ev: SSEEvent) -> bool:
        """One event of the open stream; True when it is the done token."""
        if not self._stream_works:  # its first event: the stream works
            self._stream_worked(self._opened_at)
        if ev.is_comment:
            if not self.established:
                self._establish()
            self.last_activity_ns = ev.received_ns
            return False
        if ev.event != "token":
            if ev.event == "error":
                self.hooks.phase.error(
                    "sse error event",
                    detail=f"event: error on {_path(self.stream_url or '')}: {ev.data[:80]!r}")
            return False
        return self._on_token(ev)

    def _establish(self) -> None:
        if not self.established:
            self.established = True
            if self._state in (_S.CONNECTING, _S.RECONNECTING):
                self._state = self._reading()
            self.hooks.on_established(self)

    def _on_token(self, ev: SSEEvent) -> bool:
        """Count one token; True when it is the done token."""
        publish = self.publish
        token = parse_token(ev.data, self.conversation_id,
                            MAX_SEQUENCE if publish is None else publish.total)
        if isinstance(token, Rejected):
            self._error(token.kind, token.detail)
            return False
        seq, ts, done, intended = token
        if not self.established:
            self._establish()
        if self.stream is not self._stream_seen:  # the first token of this stream
            self._on_new_stream()
        hooks = self.hooks
        phase = hooks.phase
        rx = ev.received_ns
        self.last_event_id = ev.id
        tracker = self.tracker
        before_ooo = tracker.out_of_order
        fresh = tracker.receive(seq, done)
        # Counted right after the tracker, so that whatever fails later in this token's
        # path, the token is in both or in neither: the accounting invariant holds.
        phase.tokens_received += 1
        if not fresh:
            phase.tokens_duplicated += 1
        else:
            if tracker.out_of_order != before_ooo:
                phase.tokens_out_of_order += 1
            if self.hop is not None:  # --nats: its NATS -> SSE hop
                self.hop.on_sse(seq, rx, phase)
        shift = hooks.ts_shift_ns
        lat_us = (rx - ts - shift) // 1000
        if lat_us >= 0:
            phase.latency.record(lat_us)
            # From when the token was meant to be published (docs/measurements.md): the same
            # tokens as `latency`, so the two compare token for token; never the smaller.
            phase.latency_intended.record((rx - intended - shift) // 1000)
        else:  # received before it was sent: the producer's clock is ahead (engine.clock)
            phase.negative_latencies += 1
            phase.negative_latency.record(-lat_us)
        self.last_latency_us = lat_us
        self.recent_ms.append(lat_us / 1000.0)
        if self.last_received_ns:
            phase.itl.record((rx - self.last_received_ns) // 1000)
        else:  # the first token of this conversation
            loop_now_us = (asyncio.get_running_loop().time() - self.started_mono) * 1e6
            phase.first_token.record(int(loop_now_us))
        self.last_received_ns = self.last_activity_ns = rx
        hooks.on_latency(lat_us)
        return done

    def _max_sequence(self) -> int:
        return self.publish.total if self.publish is not None else MAX_SEQUENCE

    def _on_new_stream(self) -> None:
        """A resumed stream's first token: remember where it resumed (the after_resume
        class is the token right after a resume point)."""
        self._stream_seen = self.stream
        if self.reconnects and self.last_event_id is not None and (
                len(self._resume_points) < MAX_RESUME_POINTS):
            with contextlib.suppress(ValueError):
                self._resume_points.append(int(self.last_event_id))

    async def _after_done(self, stream: SSEStream) -> None:
        """The protocol has the server end the response after the done token: give it up to
        min(grace, 1 s), counting token events that still come (a repeat is a duplicate),
        and count the stream if it stays open."""
        wait = min(self.hooks.settings.grace_s, AFTER_DONE_WAIT_S)
        if wait <= 0:
            return
        phase = self.hooks.phase
        try:
            async with asyncio.timeout(wait):
                async for ev in stream:
                    if ev.is_comment or ev.event != "token":
                        continue
                    phase.tokens_after_done += 1
                    token = parse_token(ev.data, self.conversation_id, self._max_sequence())
                    if isinstance(token, Rejected):
                        self._error(token.kind, token.detail)
                        continue
                    seq = token[0]
                    if self.tracker.has(seq):
                        phase.tokens_received += 1
                        phase.tokens_duplicated += 1
                        self.tracker.receive(seq, False)
                    else:
                        self._error("token after done",
                                    f"sequence {seq} after the done token "
                                    f"{self.tracker.done_seq}")
        except TimeoutError:
            phase.streams_not_closed_after_done += 1
        except StreamError:
            pass  # reset rather than closed: the response is over all the same
        except EventTooLarge as e:
            self._error("event too large", str(e))

    async def read_supervised(self) -> None:
        """consume(), and whatever goes wrong in the reader itself is an error on this
        conversation, which then ends (and is accounted) like any failed one: never a
        silent hang, never the end of the run."""
        try:
            await self.consume()
        except EventTooLarge as e:
            # Not resumed: the same event would come again.
            self._error("event too large", str(e))
            self._fail(f"event too large: {e}")
        except Exception as e:  # any bug in the reader: the point of supervising it
            what = f"{type(e).__name__}: {e}"
            self._error("internal error in reader", what)
            self._fail(f"internal error in reader: {what}")

    def _error(self, kind: str, detail: str) -> None:
        """An error on this conversation: counted by kind for the run, kept for its row."""
        self.errors += 1
        self.hooks.phase.error(kind, detail=detail)
        self.error_detail = f"{kind}: {detail}"[:160]

    def _fail(self, message: str) -> None:
        self._state = _S.ERROR
        self.failure = message

    # -- the end ------------------------------------------------------------------------

    def last_sequence(self) -> int:
        """The last sequence this conversation should have delivered."""
        if self.tracker.done_seq:
            return self.tracker.done_seq
        published = self.publish.published if self.publish is not None else 0
        return max(published, self.seen_on_redis, self.tracker.highest)

    def finalize(self, phase: PhaseRecorder, *, run_ended: bool = False) -> None:
        """Count what never arrived, once, into the phase in force when it ended, each
        missing token in its loss class (see docs/loss.md).

        run_ended: the run is over and this conversation was still in progress."""
        if self._final is not None:
            return
        reading = self.stream_url is not None
        last = self.last_sequence()
        missing = self._account(phase, last) if reading else 0
        self._final = (missing, last)
        # A received done token proves everything was published, even if the publisher has
        # not yet processed its pipeline's reply (the token can outrun it).
        if reading:
            complete = self.tracker.done_seq > 0 and missing == 0
        else:
            complete = self.publish is not None and self.publish.finished
        if complete and self.failure is None:
            phase.conversations_completed += 1
            self._state = _S.DONE
        elif run_ended and missing == 0 and self.failure is None:
            phase.conversations_cut_short += 1
            self._state = _S.CUT
        else:
            phase.conversations_incomplete += 1
            if self._state != _S.ERROR:
                self._state = _S.INCOMPLETE
        if reading and self.publish is not None and not self.publish.finished:
            # A pipeline with one more of its tokens may be in flight: the engine settles
            # this conversation once the publisher has answered (see settle()).
            self._unsettled = True
        else:
            self._check(phase)

    def _account(self, phase: PhaseRecorder, last: int) -> int:
        """Missing ranges and loss classes of 1..last (from the first sequence received, for
        a followed conversation); adds them to the phase and returns the missing count."""
        tracker = self.tracker
        first = max(1, tracker.first_seq) if self.discovered else 1
        ranges = tracker.missing_ranges(last, first)
        missing = sum(hi - lo + 1 for lo, hi in ranges)
        self._loss = classify_loss(ranges, first, last, self._resume_points)
        self._ranges = ranges[:MAX_RANGES]
        self._ranges_total = len(ranges)
        # Earlier sequences a followed conversation delivered lie outside first..last.
        self._expected = max(0, last - first + 1) + (tracker.before_first if self.discovered
                                                     else 0)
        phase.tokens_missing += missing
        phase.tokens_expected += self._expected
        phase.loss_first += self._loss["first"]
        phase.loss_gap += self._loss["gap"]
        phase.loss_tail += self._loss["tail"]
        phase.loss_after_resume += self._loss["after_resume"]
        if self.hop is not None:  # --nats: which hop lost them
            self.hop.classify(ranges, phase)
        return missing

    @property
    def unsettled(self) -> bool:
        return self._unsettled

    def settle(self, phase: PhaseRecorder) -> None:
        """Tokens published after this conversation ended (its reader gave up while a
        pipeline with its next token was in flight) are missing, at its tail: published
        and never received, never neither."""
        if not self._unsettled or self._final is None or self.publish is None:
            return
        self._unsettled = False
        missing, last = self._final
        extra = self.publish.published - last
        if extra > 0:
            if self._ranges and self._ranges[-1][1] == last:
                self._ranges[-1] = (self._ranges[-1][0], last + extra)
            else:
                self._ranges_total += 1
                if len(self._ranges) < MAX_RANGES:
                    self._ranges.append((last + 1, last + extra))
            self._loss["tail"] += extra
            if self.hop is not None:
                self.hop.classify([(last + 1, last + extra)], phase)
            self._expected += extra
            phase.tokens_missing += extra
            phase.tokens_expected += extra
            phase.loss_tail += extra
            self._final = (missing + extra, last + extra)
        self._check(phase)

    def _check(self, phase: PhaseRecorder) -> None:
        """The accounting invariant for this conversation: every sequence it was due is
        received or missing, never neither; in `both` mode what it was due is what was
        published to it."""
        if self.stream_url is None or self._final is None:
            return
        missing = self._final[0]
        received = self.tracker.unique
        problems = []
        if received + missing != self._expected:
            problems.append(f"due {self._expected} != received {received} + missing {missing}")
        if self.publish is not None and not self.discovered and (
                self._expected != self.publish.published):
            problems.append(f"published {self.publish.published} != due {self._expected}")
        if problems:
            phase.accounting_violations += 1
            self.accounting_error = f"{self.conversation_id}: " + "; ".join(problems)

    def _loss_label(self) -> str:
        if self._final is None or not self._final[0]:
            return ""
        kinds = [k for k in LOSS_CLASSES if self._loss.get(k)]
        if len(kinds) != 1:
            return "mixed"
        return "resume" if kinds[0] == "after_resume" else kinds[0]

    def detail(self) -> ConversationDetail:
        """This (ended) conversation for --json-detail."""
        missing = self._final[0] if self._final is not None else self.missing
        return ConversationDetail(
            conversation_id=self.conversation_id,
            state=str(self._state),
            published=self.publish.published if self.publish is not None else 0,
            received=self.tracker.unique,
            missing=missing,
            missing_ranges=tuple(self._ranges),
            ranges_omitted=self._ranges_total - len(self._ranges),
            loss=dict(self._loss) or dict.fromkeys(LOSS_CLASSES, 0),
            duplicated=self.tracker.duplicated,
            reconnects=self.reconnects,
            errors=self.errors,
            error=self.error,
            outage_s=round(self.outage_s, 3),
        )

    def view(self, now_ns: int) -> ConversationView:
        published = self.publish.published if self.publish is not None else 0
        last = self._final[1] if self._final else max(self.last_sequence(), self.expected)
        return ConversationView(
            conversation_id=self.conversation_id,
            number=self.number,
            state=self._state,
            published=published,
            received=self.tracker.unique,
            expected=last,
            missing=self.missing,
            duplicated=self.tracker.duplicated,
            out_of_order=self.tracker.out_of_order,
            reconnects=self.reconnects,
            last_latency_ms=self.last_latency_ms,
            recent_latency_ms=tuple(self.recent_ms),
            last_event_age_s=((now_ns - self.last_activity_ns) / 1e9
                              if self.last_activity_ns else None),
            error=self.error,
            discovered=self.discovered,
            loss=self._loss_label(),
            hop=self.hop.describe() if self.hop is not None else "",
        )


def _path(url: str) -> str:
    return urlsplit(url).path or url
