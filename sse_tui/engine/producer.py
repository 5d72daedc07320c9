"""Publishing tokens to Redis: one scheduler for all conversations, one pipeline per tick.

An `await publish()` per token costs ~130 µs of CPU here; sending everything that is due
in the same tick as one pipeline costs ~20-25 µs per token. So instead of a task per
conversation sleeping between tokens, a single task keeps a heap of due times, wakes when
the earliest is due, and publishes all due tokens in one round trip. Timestamps are taken
once per batch, right before the PUBLISHes are sent, as the protocol asks.

While a pipeline waits for Redis' reply nothing else is sent, so a Redis that stops answering
holds every conversation back. That is measured apart from the generator's own lateness: the
round trip of each pipeline (send -> reply), and how far the offered load fell behind its
schedule while waiting for it. The schedule lag the self-check judges the generator by counts
only the time after the reply came, when the publisher was free to send.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

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
# Waits for Redis longer than this are remembered, to find the tokens they held back; the
# usual sub-millisecond round trips are the normal cost of publishing, not a stall.
STALL_S = 0.01
STALLS_KEPT = 64


@dataclass(eq=False)
class PublishState:
    """What the publisher knows of one conversation."""

    conversation_id: str
    channel: str
    total: int  # tokens to publish; the last has done: true
    published: int = 0  # sequences 1..published were sent
    due: float = 0.0  # loop time the next token is due
    stopped: bool = False
    failed_seq: int = 0  # the sequence whose PUBLISH failed (counted once, however often retried)
    on_finished: Callable[[PublishState], None] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.published >= self.total


class TokenPublisher:
    """Publishes every conversation's tokens on schedule through one pipelining connection."""

    def __init__(self, client: aioredis.Redis, *, delay_ms: float,
                 on_published: Callable[[int, int], None],
                 on_error: Callable[[str, int], None],
                 on_schedule_lag: Callable[[float], None],
                 on_round_trip: Callable[[float], None] | None = None,
                 on_held_back: Callable[[int], None] | None = None,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._client = client
        # Publish timestamps' clock: the wall clock, or a skewed one a test injects.
        self._clock_ns = clock_ns
        self.delay_ms = delay_ms
        self._on_published = on_published  # (tokens published, of which nobody heard)
        self.in_flight = 0  # tokens of the pipeline awaiting Redis' reply
        self._on_error = on_error  # (kind, tokens that failed for the first time)
        self._on_schedule_lag = on_schedule_lag  # the generator's own lateness, s
        self._on_round_trip = on_round_trip  # each pipeline's send -> reply, s
        self._on_held_back = on_held_back  # tokens the schedule lost waiting for Redis
        self._replied_at = 0.0  # when the last pipeline's reply came (loop time)
        self._in_flight_since: float | None = None  # a pipeline waits for its reply
        # Recent waits for Redis longer than STALL_S: (sent, replied), oldest first.
        self._stalls: deque[tuple[float, float]] = deque(maxlen=STALLS_KEPT)
        self._held_back = 0.0  # token-fractions not yet reported
        self._heap: list[tuple[float, int, PublishState]] = []
        self._tiebreak = 0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._closed = False
        self._rng = random.Random()

    def add(self, state: PublishState) -> None:
        """Start publishing a conversation now."""
        loop = asyncio.get_running_loop()
        state.due = loop.time()
        self._push(state)
        self._wake()

    def remove(self, state: PublishState) -> None:
        state.stopped = True  # lazily dropped from the heap when it comes due

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            # Re-base every schedule on now, so a pause is not followed by a burst of catch-up.
            now = asyncio.get_running_loop().time()
            self._heap = [(now, t, s) for _, t, s in self._heap]
            heapq.heapify(self._heap)
            self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def interval_s(self) -> float:
        """Delay plus uniform jitter in [0, delay/2], as the reference generator does."""
        d = self.delay_ms
        return (d + self._rng.random() * d * 0.5) / 1000.0

    def _push(self, state: PublishState) -> None:
        self._tiebreak += 1
        heapq.heappush(self._heap, (state.due, self._tiebreak, state))

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _sleep_until(self, when: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = fut = loop.create_future()
        timer = loop.call_at(when, self._wake) if when is not None else None
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while not self._closed:
            if self._paused or not heap:
                await self._sleep_until(None)
                continue
            now = loop.time()
            if heap[0][0] > now:
                await self._sleep_until(heap[0][0])
                continue
            batch: list[PublishState] = []
            oldest_due = heap[0][0]
            horizon = now + COALESCE_S
            while heap and heap[0][0] <= horizon and len(batch) < MAX_PIPELINE:
                state = heapq.heappop(heap)[2]
                if not state.stopped and not state.finished:
                    batch.append(state)
            if batch:
                # Lateness that arose while the last pipeline waited for Redis is Redis'.
                self._on_schedule_lag(max(0.0, now - max(oldest_due, self._replied_at)))
                self._count_held_back(batch)
                await self._publish(batch, now)
            else:
                await asyncio.sleep(0)  # a heap of stopped conversations: let others run

    def _count_held_back(self, batch: list[PublishState]) -> None:
        """How many tokens the offered load fell behind its schedule because the publisher
        was waiting for Redis' reply: for each conversation, the time it was due during such
        waits, in token intervals (schedules do not catch up, so those tokens are never sent)."""
        if self._on_held_back is None or self.delay_ms <= 0 or not self._stalls:
            return  # with no delay there is no schedule to fall behind
        stalls = self._stalls
        waited = 0.0
        for s in batch:
            for sent, replied in reversed(stalls):
                if replied <= s.due:
                    break
                waited += replied - max(sent, s.due)
        if waited <= 0:
            return
        self._held_back += waited / (self.delay_ms * 1.25 / 1000.0)  # the mean interval
        whole = int(self._held_back)
        if whole:
            self._held_back -= whole
            self._on_held_back(whole)

    def waiting_s(self) -> float | None:
        """How long the pipeline in flight has waited for Redis' reply (None: none is)."""
        since = self._in_flight_since
        return None if since is None else asyncio.get_running_loop().time() - since

    def _replied(self, sent: float, replied: float) -> None:
        self._in_flight_since = None
        self._replied_at = replied
        if replied - sent > STALL_S:
            self._stalls.append((sent, replied))

    async def _publish(self, batch: list[PublishState], now: float) -> None:
        pipe = self._client.pipeline(transaction=False)
        ts = self._clock_ns()
        words = _WORDS
        nwords = len(words)
        for s in batch:
            seq = s.published + 1
            pipe.publish(s.channel, orjson.dumps({
                "conversation_id": s.conversation_id,
                "token": words[seq % nwords],
                "sequence": seq,
                "done": seq == s.total,
                "timestamp": ts,
            }))
        loop = asyncio.get_running_loop()
        sent = self._in_flight_since = loop.time()
        # Sent, not yet answered: a reader can receive them before the reply comes back, so
        # the progress line counts them as published (see StatsSnapshot.tokens_in_flight).
        self.in_flight = len(batch)
        try:
            receivers: list[Any] = await pipe.execute()
        except (RedisError, OSError) as e:
            self.in_flight = 0
            self._replied(sent, loop.time())
            # publish_errors counts tokens, not attempts: a token retried ten times is one.
            first_failures = 0
            for s in batch:
                if s.failed_seq != s.published + 1:
                    s.failed_seq = s.published + 1
                    first_failures += 1
            if first_failures:
                self._on_error(f"redis publish: {type(e).__name__}", first_failures)
            retry = self._replied_at + RETRY_AFTER_ERROR_S
            for s in batch:  # the same sequences are tried again; nothing was published
                s.due = retry
                self._push(s)
            return
        self.in_flight = 0
        self._replied(sent, loop.time())
        if self._on_round_trip is not None:
            self._on_round_trip(self._replied_at - sent)
        unheard = 0
        for s, n in zip(batch, receivers, strict=True):
            s.published += 1
            if n == 0:
                unheard += 1
            if s.finished:
                if s.on_finished is not None:
                    s.on_finished(s)
            elif not s.stopped:
                # Schedule from the due time, not from now, so the rate holds when we run late;
                # but never schedule in the past by more than one interval (no catch-up bursts).
                s.due = max(s.due + self.interval_s(), now)
                self._push(s)
        self._on_published(len(batch), unheard)
