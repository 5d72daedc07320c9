"""Publishing tokens to Redis: one scheduler for all conversations, one pipeline per tick.

An `await publish()` per token costs ~130 µs of CPU here; sending everything that is due
in the same tick as one redis-py pipeline costs ~11-16 µs per token, and as one pre-packed
RESP buffer on a connection of our own (resp_publish.py) ~2-3 µs. So instead of a task per
conversation sleeping between tokens, a single task keeps a heap of due times, wakes when
the earliest is due, and publishes all due tokens in one round trip. Timestamps are taken
once per batch, right before the PUBLISHes are sent, as the protocol asks.

The schedule is absolute, as wrk2's is: each conversation's next token is intended at its
previous one's intended time plus delay and jitter, never at "now + delay". The offered rate
is then exactly the one asked for, and a token that went out late (Redis stalled, the
generator was busy) does not push the later ones back: whatever is overdue goes out at once,
so the load catches up instead of quietly dropping. A token sent more than LATE_S after its
intended time carries that time as `intended_ts` (docs/protocol.md), so that a consumer,
on any host, measures latency from when the token should have been sent, not only from when
it was (coordinated omission; docs/measurements.md). Pausing and changing the delay are the
operator's doing, not lateness: a pause moves every schedule on by its length, a new delay
re-bases overdue tokens on now.

While a pipeline waits for Redis' reply nothing else is sent, so a Redis that stops answering
holds every conversation back. That is measured apart from the generator's own lateness: the
round trip of each pipeline (send -> reply), and the tokens that came due while a slow reply
was awaited and so went out late. The schedule lag the self-check judges the generator by
counts only the time after the reply came, when the publisher was free to send.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sse_tui.distributions import distribution_of
from sse_tui.engine.resp_publish import RespPublisher, pack_publish, publish_head, supports

# The words the simulated LLM "generates": short, ASCII, cheap to encode.
_WORDS = ("the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ".",
          " Streaming", " tokens", " through", " Redis", " and", " NATS", " to", " SSE", "\n")

RETRY_AFTER_ERROR_S = 0.2
# Tokens due within this window go out in the same pipeline. With jittered schedules due
# times rarely coincide, and each round trip costs a send() whose loopback delivery work
# the kernel charges to us; 1 ms early is well inside the reference's own jitter.
COALESCE_S = 0.001
# At most this many tokens per pipeline: with `-c 200000` everything is due at once, and one
# pipeline of all of it is seconds of encoding with the loop blocked (no signals, no views).
MAX_PIPELINE = 1000
# A wait for Redis longer than this is a stall, whose end is remembered to find the tokens it
# held back; the usual sub-millisecond round trips are the normal cost of publishing.
STALL_S = 0.01
# A token sent later than this after its intended time carries `intended_ts`; below it the
# payload stays byte-identical to the reference producer's. An idle asyncio loop already
# wakes up to ~1 ms after a timer (epoll rounds the timeout up to whole ms): at 1 ms, one
# token in eight carried the key for that alone (measured on a busy 2-CPU machine). 2 ms
# keeps it for real lateness, and is well inside the reference's own jitter (delay/2).
LATE_S = 0.002


def token_words(token_bytes: int = 0) -> tuple[str, ...]:
    """The texts tokens cycle through: the short words, or (--token-bytes N) each word
    repeated to exactly N bytes, for payloads the size a real model's tokens are."""
    if token_bytes <= 0:
        return _WORDS
    return tuple((w * (token_bytes // len(w) + 1))[:token_bytes] for w in _WORDS)


@dataclass(eq=False)
class PublishState:
    """What the publisher knows of one conversation."""

    conversation_id: str
    channel: str
    total: int  # tokens to publish; the last has done: true
    published: int = 0  # sequences 1..published were sent
    # Loop time the next token is intended to go out: the schedule, which a late send or a
    # failed one does not move (a retry waits in the heap under a later key instead).
    due: float = 0.0
    # The intended time of the token after the last one taken into the pipeline being sent:
    # the next `due` once that pipeline succeeds (drawn while the pipeline was built).
    following: float = 0.0
    stopped: bool = False
    # Its own schedule, when it has one: the time from its start to its first token (the
    # prefill, --first-token-delay) and, replaying a trace, the gap after each token (s).
    first_delay_s: float = 0.0
    gaps_s: Sequence[float] | None = field(default=None, repr=False)
    # The sequence whose PUBLISH failed: counted once however often it is retried, and sent
    # alone (not with the backlog behind it) until it goes through.
    failed_seq: int = 0
    # `PUBLISH <channel>` packed in RESP, made once: the start of each of its tokens' commands.
    resp_head: bytes = field(default=b"", repr=False)
    on_finished: Callable[[PublishState], None] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.published >= self.total


# One token in a pipeline: its conversation, sequence and intended time (loop). A plain tuple,
# made once per token: a NamedTuple's constructor costs ~0.2 µs, a tuple's next to nothing.
_Token = tuple["PublishState", int, float]


class TokenPublisher:
    """Publishes every conversation's tokens on schedule through one pipelining connection."""

    def __init__(self, client: aioredis.Redis, *, delay_ms: float,
                 on_published: Callable[[int, int], None],
                 on_error: Callable[[str, int], None],
                 on_schedule_lag: Callable[[float], None],
                 on_round_trip: Callable[[float], None] | None = None,
                 on_held_back: Callable[[int], None] | None = None,
                 clock_ns: Callable[[], int] = time.time_ns,
                 rng_seed: str | None = None,
                 batch_ms: float = COALESCE_S * 1000,
                 token_bytes: int = 0) -> None:
        self._client = client
        # Its own connection, written pre-packed batches (resp_publish.py); a client whose
        # pool cannot make one (not redis_client()'s kind) keeps redis-py's pipeline.
        self._lean = RespPublisher(client) if supports(client) else None
        # --publish-batch-ms: tokens due within this window share one pipeline (one write);
        # 0: one PUBLISH per write, each waiting for its reply, as the reference does.
        self._coalesce_s = batch_ms / 1000.0
        self._max_pipeline = MAX_PIPELINE if batch_ms > 0 else 1
        self._words = token_words(token_bytes)
        # Publish timestamps' clock: the wall clock, or a skewed one a test injects.
        self._clock_ns = clock_ns
        self._delay_ms = delay_ms
        # Where each gap is drawn from: the reference's jitter around a fixed delay, or the
        # --delay distribution (a ShapedFloat's).
        self.delay_dist = distribution_of(delay_ms)
        self._on_published = on_published  # (tokens published, of which nobody heard)
        self.in_flight = 0  # tokens of the pipeline awaiting Redis' reply
        self._on_error = on_error  # (kind, tokens that failed for the first time)
        self._on_schedule_lag = on_schedule_lag  # the generator's own lateness, s
        self._on_round_trip = on_round_trip  # each pipeline's send -> reply, s
        self._on_held_back = on_held_back  # tokens sent late because Redis was slow
        self._replied_at = 0.0  # when the last pipeline's reply came (loop time)
        self._in_flight_since: float | None = None  # a pipeline waits for its reply
        self._stall_ended = -math.inf  # when the last wait for Redis over STALL_S ended
        # (when to send, tiebreak, state): when = state.due, or later for a retry.
        self._heap: list[tuple[float, int, PublishState]] = []
        self._tiebreak = 0
        self._waiter: asyncio.Future[None] | None = None
        self._due_reached = -math.inf  # the time the last timer was set for, once it fired
        self._paused = False
        self._paused_at = 0.0
        self._sending: list[PublishState] = []  # the conversations of the pipeline in flight
        self._closed = False
        self._rng = random.Random(rng_seed)

    def add(self, state: PublishState) -> None:
        """Start publishing a conversation now (while paused: as soon as resumed)."""
        loop = asyncio.get_running_loop()
        state.due = (self._paused_at if self._paused else loop.time()) + state.first_delay_s
        self._push(state)
        self._wake()

    def remove(self, state: PublishState) -> None:
        state.stopped = True  # lazily dropped from the heap when it comes due

    @property
    def delay_ms(self) -> float:
        return self._delay_ms

    @delay_ms.setter
    def delay_ms(self, delay_ms: float) -> None:
        """A live delay change: a new load level, so the lateness owed under the old one is
        forgiven (overdue tokens are re-based on now) rather than carried into the new phase
        as a burst and as intended latency. A fixed delay typed live replaces a --delay
        distribution: the operator took over."""
        self._delay_ms = delay_ms
        self.delay_dist = distribution_of(delay_ms)
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # not running yet: there is no schedule to re-base
            return
        if self._paused:  # the resume moves them on from the pause
            now = self._paused_at
        self._rebase(lambda t: max(t, now))

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._paused_at = asyncio.get_running_loop().time()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            # The time spent paused is not lateness: every schedule moves on by the pause, so
            # conversations keep their spacing and nothing comes out of a pause as a burst. A
            # conversation added while paused starts now.
            shift = asyncio.get_running_loop().time() - self._paused_at
            self._rebase(lambda t: t + shift)
            for s in self._sending:  # their pipeline is still awaiting Redis' reply
                s.due += shift
                s.following += shift
            self._wake()

    def _rebase(self, move: Callable[[float], float]) -> None:
        """Move every waiting schedule (and its heap key) by `move`, which keeps the order.
        In place: run() holds the list."""
        heap = self._heap
        for _, _, s in heap:
            s.due = move(s.due)
        heap[:] = [(move(when), t, s) for when, t, s in heap]
        heapq.heapify(heap)

    def close(self) -> None:
        self._closed = True
        self._wake()

    def interval_s(self) -> float:
        """Delay plus uniform jitter in [0, delay/2], as the reference generator does; with
        a --delay distribution, a gap drawn from it (its spread is the jitter)."""
        dist = self.delay_dist
        if not dist.fixed:
            return dist.sample(self._rng) / 1000.0
        d = self._delay_ms
        return (d + self._rng.random() * d * 0.5) / 1000.0

    def _gap_after(self, s: PublishState, seq: int) -> float:
        """The time from token `seq` to the next: the trace's own gap, or interval_s()."""
        gaps = s.gaps_s
        if gaps is not None and seq <= len(gaps):
            return gaps[seq - 1]
        return self.interval_s()

    def _push(self, state: PublishState, when: float | None = None) -> None:
        self._tiebreak += 1
        heapq.heappush(self._heap, (state.due if when is None else when, self._tiebreak, state))

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _timer_fired(self, when: float) -> None:
        self._due_reached = when
        self._wake()

    async def _sleep_until(self, when: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = fut = loop.create_future()
        timer = loop.call_at(when, self._timer_fired, when) if when is not None else None
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    async def run(self) -> None:
        try:
            await self._run()
        finally:  # closed, or cancelled: the publishing connection goes with the publisher
            if self._lean is not None:
                await self._lean.aclose()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while not self._closed:
            if self._paused or not heap:
                await self._sleep_until(None)
                continue
            # A timer that fired means its time has come, even where the loop's timers have
            # a resolution of 1 ms (uvloop's) and fire a fraction of it early: re-sleeping
            # until the clock agrees would spin (measured: 97% CPU at the anchor load).
            now = max(loop.time(), self._due_reached)
            if heap[0][0] > now:
                await self._sleep_until(heap[0][0])
                continue
            oldest_due = heap[0][0]
            states, batch = self._take_due(now + self._coalesce_s)
            if batch:
                # Lateness that arose while the last pipeline waited for Redis is Redis'.
                self._on_schedule_lag(max(0.0, now - max(oldest_due, self._replied_at)))
                await self._publish(states, batch)
            else:
                await asyncio.sleep(0)  # a heap of stopped conversations: let others run

    def _take_due(self, horizon: float) -> tuple[list[PublishState], list[_Token]]:
        """Every token intended up to `horizon`, oldest first, at most MAX_PIPELINE: the
        conversations taken from the heap, and their tokens. A conversation behind its
        schedule (a Redis stall, a busy generator) has several overdue tokens, and they all
        go now: the schedule is absolute, so the load catches up rather than drops."""
        heap = self._heap
        states: list[PublishState] = []
        batch: list[_Token] = []
        # A conversation's further overdue tokens, merged with the heap in intended order
        # so that the oldest tokens of all conversations go first when the pipeline is full.
        more: list[tuple[float, int, PublishState, int]] = []
        # With no delay there is no schedule to catch up with (unless a trace gives one).
        chain = self._delay_ms > 0 or not self.delay_dist.fixed
        interval = self.interval_s
        while len(batch) < self._max_pipeline:
            if more and (not heap or more[0][0] <= heap[0][0]):
                if more[0][0] > horizon:
                    break
                due, _, s, seq = heapq.heappop(more)
            elif heap and heap[0][0] <= horizon:
                s = heapq.heappop(heap)[2]
                if s.stopped or s.finished:
                    continue
                due, seq = s.due, s.published + 1
                states.append(s)
            else:
                break
            batch.append((s, seq, due))
            if chain or s.gaps_s is not None:
                s.following = due + (interval() if s.gaps_s is None else self._gap_after(s, seq))
                # A retried token goes alone: its backlog follows once it went through.
                if s.following <= horizon and seq < s.total and seq > s.failed_seq:
                    self._tiebreak += 1
                    heapq.heappush(more, (s.following, self._tiebreak, s, seq + 1))
        return states, batch

    def _held_back_before(self) -> float:
        """Tokens intended before this loop time went out late because of a Redis stall:
        each was waiting to be sent (every due token goes in the next pipeline) when a slow
        reply came, and for LATE_S or more of that wait. Taken before a pipeline is sent, so
        that its own slow reply, which delays receipt but not sending, is not counted."""
        if self._on_held_back is None:
            return -math.inf
        return self._stall_ended - LATE_S

    def waiting_s(self) -> float | None:
        """How long the pipeline in flight has waited for Redis' reply (None: none is)."""
        since = self._in_flight_since
        return None if since is None else asyncio.get_running_loop().time() - since

    def _replied(self, sent: float, replied: float) -> None:
        self._in_flight_since = None
        self._replied_at = replied
        if replied - sent > STALL_S:
            self._stall_ended = replied

    async def _publish(self, states: list[PublishState], batch: list[_Token]) -> None:
        loop = asyncio.get_running_loop()
        lean = self._lean
        pipe = self._client.pipeline(transaction=False) if lean is None else None
        parts: list[bytes] = []  # the packed PUBLISHes, written as one buffer
        held_before = self._held_back_before()
        ts = self._clock_ns()
        # The loop time of `ts`, to place intended times (loop clock) on the wall clock.
        at = loop.time()
        late_before = at - LATE_S
        words = self._words
        nwords = len(words)
        for s, seq, due in batch:
            token: dict[str, Any] = {
                "conversation_id": s.conversation_id,
                "token": words[seq % nwords],
                "sequence": seq,
                "done": seq == s.total,
                "timestamp": ts,
            }
            if due < late_before:  # late: say when it was meant to go (coordinated omission)
                token["intended_ts"] = ts - int((at - due) * 1e9)
            payload = orjson.dumps(token)
            if pipe is None:
                head = s.resp_head
                if not head:
                    head = s.resp_head = publish_head(s.channel)
                parts.append(pack_publish(head, payload))
            else:
                pipe.publish(s.channel, payload)
        sent = self._in_flight_since = loop.time()
        self._sending = states
        # Sent, not yet answered: a reader can receive them before the reply comes back, so
        # the progress line counts them as published (see StatsSnapshot.tokens_in_flight).
        self.in_flight = len(batch)
        try:
            if pipe is None:
                assert lean is not None
                # The replies that were 0: nobody subscribed heard the token.
                unheard = await lean.publish(b"".join(parts), len(batch))
            else:
                unheard = sum(1 for n in await pipe.execute() if n == 0)
        except (RedisError, OSError) as e:
            self.in_flight = 0
            self._sending = []
            self._replied(sent, loop.time())
            # publish_errors counts tokens, not attempts: a token retried ten times is one.
            # The one counted is each conversation's first in the pipeline, the token it is
            # stuck on and retries alone; the backlog behind it waits, and is not counted.
            first_failures = 0
            for s in states:
                if s.failed_seq != s.published + 1:
                    s.failed_seq = s.published + 1
                    first_failures += 1
            if first_failures:
                self._on_error(f"redis publish: {type(e).__name__}", first_failures)
            retry = self._replied_at + RETRY_AFTER_ERROR_S
            for s in states:  # the same sequences are tried again; nothing was published
                self._push(s, retry)  # their intended times stay: the retry is late
            return
        self.in_flight = 0
        self._sending = []
        self._replied(sent, loop.time())
        if self._on_round_trip is not None:
            self._on_round_trip(self._replied_at - sent)
        held = 0
        for s, seq, due in batch:
            s.published = seq
            if due < held_before:
                held += 1
            if seq == s.total and s.on_finished is not None:
                s.on_finished(s)
        # With no delay there is no schedule: the next token is meant to go when it can.
        unscheduled = self._delay_ms <= 0 and self.delay_dist.fixed
        for s in states:
            if not s.finished and not s.stopped:
                # From the intended time, not from now: the rate holds when we run late, and
                # what fell behind catches up (absolute schedule; see the module's doc).
                s.due = (self._replied_at if unscheduled and s.gaps_s is None
                         else s.following)
                self._push(s)
        if held and self._on_held_back is not None:
            self._on_held_back(held)
        self._on_published(len(batch), unheard)
