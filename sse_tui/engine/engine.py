"""The load engine: keeps N conversations live, publishes and reads their tokens, counts.

Plain asyncio, no UI imports. Every method here runs on the engine's own loop; other
processes go through `sse_tui.engine.process.EngineProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sse_tui.engine.consumer import Conversation
from sse_tui.engine.producer import PublishState, TokenPublisher
from sse_tui.engine.selfwatch import SelfWatch, distribution_of
from sse_tui.engine.stats import PhaseRecorder
from sse_tui.engine.transport import SSEStream, aclose_transports
from sse_tui.settings import Settings, redis_url, sse_base
from sse_tui.snapshot import PhaseStats, StatsSnapshot, TimelinePoint

PREFLIGHT_TIMEOUT_S = 5.0
FINISHED_KEPT = 50  # recently finished conversations kept for the views
# Above this many live conversations a snapshot carries only the most interesting ones:
# building a view costs ~7 µs on the engine's loop, and no table shows thousands of rows.
MAX_LIVE_VIEWS = 250
FOLLOW_SEEN_KEPT = 10_000  # conversation ids remembered by the Redis follower
SPARKLINE_SAMPLES = 240
TIMELINE_KEPT = 3600
SECOND_SAMPLES_MAX = 20_000  # per-second latency samples kept for the timeline's p50/p99


class EngineError(Exception):
    """A problem that stops the run before it starts; the message says what to do."""


class LoadEngine:
    def __init__(self, settings: Settings, *, follow_redis: bool = False) -> None:
        self.settings = settings.validated()
        self.follow_redis = follow_redis and settings.mode == "consumer"
        self.state = "starting"
        self.fatal_error: str | None = None
        self.notes: list[str] = []
        self.selfwatch = SelfWatch()
        self._phases: list[PhaseRecorder] = []
        self._frozen_phases: dict[int, PhaseStats] = {}
        self.phase: PhaseRecorder = self._new_phase(0.0)
        self._live: dict[str, Conversation] = {}
        self._finished: deque[Conversation] = deque(maxlen=FINISHED_KEPT)
        self._next_number = 1
        self._started_total = 0
        self._discovered_live = 0
        self._redis: aioredis.Redis | None = None
        self._publisher: TokenPublisher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher_task: asyncio.Task[None] | None = None
        self._closers: set[asyncio.Task[None]] = set()  # idle streams being closed
        self._stop = asyncio.Event()
        self._hurry = False  # skip the grace period (a second Ctrl-C)
        self._paused_since: float | None = None
        self._paused_total = 0.0
        self._t0 = 0.0
        self._end_s: float | None = None
        self._sparkline: deque[float] = deque(maxlen=SPARKLINE_SAMPLES)
        self._second_samples: list[int] = []
        self._timeline: deque[TimelinePoint] = deque(maxlen=TIMELINE_KEPT)
        self._stream_base = sse_base(settings.sse) if settings.mode != "producer" else ""

    # -- the run ---------------------------------------------------------------------------

    @property
    def producing(self) -> bool:
        return self.settings.mode in ("producer", "both")

    @property
    def consuming(self) -> bool:
        return self.settings.mode in ("consumer", "both")

    async def run(self) -> StatsSnapshot:
        """Run to the end (duration, one round, or stop()) and return the final snapshot."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        try:
            await self._preflight()
        except EngineError as e:
            self.fatal_error = str(e)
            self.state = "failed"
            await self._close_redis()
            return self.snapshot()
        self.selfwatch.start()
        if self._publisher is not None:
            self._publisher_task = self._spawn(self._publisher.run(), "publisher")
        if self.follow_redis:
            self._spawn(self._follow_redis(), "redis-follower")
        self._spawn(self._tick_timeline(), "timeline")
        self._spawn(self._watch_deadline(), "deadline")
        if self.consuming and self.settings.idle_timeout_s > 0:
            self._spawn(self._watch_idle_streams(), "idle-watchdog")
        self.state = "running"
        self._fill()
        try:
            await self._stop.wait()
        finally:
            await self._drain()
        return self.snapshot()

    def elapsed_s(self) -> float:
        if not self._t0:
            return 0.0
        if self._end_s is not None:
            return self._end_s
        return asyncio.get_running_loop().time() - self._t0

    def _active_s(self) -> float:
        """Elapsed time not spent paused: what the duration counts."""
        paused = self._paused_total
        if self._paused_since is not None:
            paused += asyncio.get_running_loop().time() - self._paused_since
        return self.elapsed_s() - paused

    async def _preflight(self) -> None:
        s = self.settings
        if self.producing or self.follow_redis:
            self._redis = aioredis.from_url(
                redis_url(s.redis), socket_connect_timeout=PREFLIGHT_TIMEOUT_S,
                socket_timeout=30, health_check_interval=0)
            try:
                await asyncio.wait_for(self._redis.ping(), PREFLIGHT_TIMEOUT_S)
            except (RedisError, OSError, TimeoutError) as e:
                raise EngineError(
                    f"cannot reach Redis at {s.redis} ({_reason(e)}); is it running? For a "
                    "cluster: kubectl port-forward -n redis-system svc/redis 6379:6379") from None
        if self.producing:
            assert self._redis is not None
            self._publisher = TokenPublisher(
                self._redis, delay_ms=s.delay_ms,
                on_published=self._on_published, on_error=self._on_publish_error,
                on_schedule_lag=self.selfwatch.record_schedule_lag)
        if self.consuming:
            await self._check_sse_reachable()

    async def _check_sse_reachable(self) -> None:
        u = urlsplit(self._stream_base)
        port = u.port or (443 if u.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(u.hostname, port), PREFLIGHT_TIMEOUT_S)
        except (OSError, TimeoutError) as e:
            raise EngineError(
                f"cannot reach the SSE adapter at {self.settings.sse} ({_reason(e)}); for a "
                "cluster: kubectl port-forward -n sse-system svc/sse-adapter 8080:80") from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.fatal_error = f"internal error in {task.get_name()}: {exc!r}"
            self._stop.set()

    async def _watch_deadline(self) -> None:
        duration = self.settings.duration_s
        if duration <= 0:
            return  # one round: _conversation_ended stops the run
        while self._active_s() < duration:
            await asyncio.sleep(min(0.25, max(0.001, duration - self._active_s())))
        self._stop.set()

    async def _watch_idle_streams(self) -> None:
        """Close streams silent for longer than the idle timeout; their readers resume them.

        A half-open connection (a dropped port-forward, a dead leaf) never ends by itself."""
        timeout_ns = int(self.settings.idle_timeout_s * 1e9)
        while True:
            await asyncio.sleep(min(1.0, self.settings.idle_timeout_s / 4))
            now = time.time_ns()
            for conv in list(self._live.values()):
                stream = conv.stream
                if stream is not None and now - conv.last_activity_ns > timeout_ns:
                    conv.last_activity_ns = now  # once per silence
                    self.phase.error("idle timeout")
                    closer = asyncio.get_running_loop().create_task(_close_quietly(stream))
                    self._closers.add(closer)
                    closer.add_done_callback(self._closers.discard)

    async def _drain(self) -> None:
        """Stop publishing; give in-flight tokens the grace period; count the rest missing."""
        loop = asyncio.get_running_loop()
        self.state = "draining"
        if self._publisher is not None:
            self._publisher.close()
        if self._publisher_task is not None:
            # A pipeline may be in flight: its tokens count as published once it returns,
            # and what is published must be known before anything is judged missing.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._publisher_task), 5.0)
        deadline = loop.time() + self.settings.grace_s
        while not self._hurry and loop.time() < deadline and any(
                not _caught_up(c) for c in self._live.values() if c.task is not None):
            await asyncio.sleep(0.02)
        for conv in list(self._live.values()):
            if conv.task is not None and not conv.task.done():
                conv.given_up = True
                conv.task.cancel()
        pending = [c.task for c in self._live.values() if c.task is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        for conv in list(self._live.values()):
            self._conversation_ended(conv, refill=False, run_ended=True)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.selfwatch.stop()
        await self._close_redis()
        if self.settings.transport != "raw":
            await aclose_transports()
        self._end_s = loop.time() - self._t0
        self.phase.ended_s = self._end_s
        self.state = "failed" if self.fatal_error else "finished"

    async def _close_redis(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
            self._redis = None

    # -- conversations ---------------------------------------------------------------------

    def _fill(self) -> None:
        """Start conversations until the target number is live."""
        if self._stop.is_set() or self._paused_since is not None:
            return
        s = self.settings
        target = s.conversations
        one_round = s.duration_s <= 0
        while self._live_own() < target and not (one_round and self._started_total >= target):
            self._start_conversation()

    def _live_own(self) -> int:
        return len(self._live) - self._discovered_live

    def _start_conversation(self, conversation_id: str | None = None) -> Conversation:
        s = self.settings
        discovered = conversation_id is not None
        if conversation_id is None:
            number = self._next_number
            self._next_number += 1
            self._started_total += 1
            conversation_id = s.conversation_id(number)
        else:
            number = 0
            self._discovered_live += 1
        url = f"{self._stream_base}/stream/{conversation_id}" if self.consuming else None
        conv = Conversation(self, number, conversation_id, s.tokens, url, discovered=discovered)
        self._live[conversation_id] = conv
        self.phase.conversations_started += 1
        if self.producing:
            conv.publish = PublishState(conversation_id, s.channel_prefix + conversation_id,
                                        s.tokens, on_finished=self._on_publish_finished)
        if self.consuming:
            conv.task = self._spawn_conversation(conv)
        else:
            conv.state = "publishing"
            assert self._publisher is not None and conv.publish is not None
            self._publisher.add(conv.publish)
        return conv

    def _spawn_conversation(self, conv: Conversation) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await conv.consume()
            except asyncio.CancelledError:
                if not conv.given_up:
                    raise
            if conv.publish is not None and self._publisher is not None:
                self._publisher.remove(conv.publish)  # the reader is gone: stop publishing
            if not self._stop.is_set():
                self._conversation_ended(conv)

        return asyncio.get_running_loop().create_task(run(), name=conv.conversation_id)

    def on_established(self, conv: Conversation) -> None:
        """The stream is open: in `both` mode the first token is published only now."""
        if conv.publish is not None and self._publisher is not None and not self._stop.is_set():
            conv.state = "streaming"
            self._publisher.add(conv.publish)

    def on_latency(self, latency_us: int) -> None:
        self._sparkline.append(latency_us / 1000.0)
        if len(self._second_samples) < SECOND_SAMPLES_MAX:
            self._second_samples.append(latency_us)

    def _on_publish_finished(self, state: PublishState) -> None:
        conv = self._live.get(state.conversation_id)
        if conv is None:
            return
        if conv.task is None:  # producer only: nothing to wait for
            self._conversation_ended(conv)
            return
        if conv.state != "error":
            conv.state = "draining"
        # If the done token never arrives (a lossy adapter), stop waiting after the grace.
        asyncio.get_running_loop().call_later(self.settings.grace_s, self._give_up, conv)

    def _give_up(self, conv: Conversation) -> None:
        if conv.task is not None and not conv.task.done():
            conv.given_up = True
            conv.task.cancel()

    def _conversation_ended(self, conv: Conversation, *, refill: bool = True,
                            run_ended: bool = False) -> None:
        if self._live.pop(conv.conversation_id, None) is None:
            return
        if conv.discovered:
            self._discovered_live -= 1
        conv.finalize(self.phase, run_ended=run_ended)
        self._finished.append(conv)
        if refill:
            if self.settings.duration_s <= 0 and not self._live and (
                    self._started_total >= self.settings.conversations):
                self._stop.set()
            else:
                self._fill()

    def _on_published(self, n: int, unheard: int) -> None:
        self.phase.tokens_published += n
        self.phase.tokens_unheard += unheard

    def _on_publish_error(self, kind: str, n: int) -> None:
        self.phase.publish_errors += n
        self.phase.error(kind, n)

    async def _follow_redis(self) -> None:
        """Consumer mode with --redis: also read conversations that appear on Redis.

        Redis going away is counted and retried, not fatal: the streams are the main job."""
        seen: deque[str] = deque(maxlen=FOLLOW_SEEN_KEPT)
        while True:
            try:
                await self._follow_redis_once(seen)
            except (RedisError, OSError) as e:
                self.phase.error(f"redis follow: {type(e).__name__}")
                await asyncio.sleep(1.0)

    async def _follow_redis_once(self, seen: deque[str]) -> None:
        assert self._redis is not None
        s = self.settings
        prefix = s.channel_prefix
        own = s.conversation_id(0)[:-1]
        seen_set = set(seen)
        pubsub = self._redis.pubsub()
        await pubsub.psubscribe(prefix + "*")
        try:
            async for msg in pubsub.listen():
                if msg.get("type") != "pmessage":
                    continue
                channel = msg["channel"]
                cid = (channel.decode() if isinstance(channel, bytes) else channel)[len(prefix):]
                conv = self._live.get(cid)
                if conv is not None:
                    self.phase.tokens_published += 1
                    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                        seq = orjson.loads(msg["data"])["sequence"]
                        if isinstance(seq, int) and seq > conv.seen_on_redis:
                            conv.seen_on_redis = seq
                    continue
                if cid in seen_set or cid.startswith(own) or self._stop.is_set():
                    continue
                if self._discovered_live >= s.conversations:
                    continue
                if len(seen) == seen.maxlen:
                    seen_set.discard(seen[0])
                seen.append(cid)
                seen_set.add(cid)
                self._start_conversation(cid)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    # -- live control (called on this loop) ------------------------------------------------

    def set_conversations(self, n: int) -> None:
        n = int(n)
        if n < 1 or n == self.settings.conversations:
            return
        self.settings = self.settings.with_changes(conversations=n)
        self._begin_phase()
        self._fill()

    def set_delay(self, delay_ms: float) -> None:
        delay_ms = float(delay_ms)
        if delay_ms < 0 or delay_ms == self.settings.delay_ms:
            return
        self.settings = self.settings.with_changes(delay_ms=delay_ms)
        if self._publisher is not None:
            self._publisher.delay_ms = delay_ms
        self._begin_phase()

    def pause(self) -> None:
        if self._paused_since is None and self.state == "running":
            self._paused_since = asyncio.get_running_loop().time()
            self.state = "paused"
            if self._publisher is not None:
                self._publisher.pause()

    def resume(self) -> None:
        if self._paused_since is not None:
            self._paused_total += asyncio.get_running_loop().time() - self._paused_since
            self._paused_since = None
            self.state = "running"
            if self._publisher is not None:
                self._publisher.resume()
            self._fill()

    def stop(self) -> None:
        self._stop.set()

    def hurry(self) -> None:
        """Stop now, without waiting for in-flight tokens."""
        self._hurry = True
        self._stop.set()

    def _new_phase(self, now_s: float) -> PhaseRecorder:
        s = self.settings
        p = PhaseRecorder(index=len(self._phases), started_s=now_s, conversations=s.conversations,
                          delay_ms=s.delay_ms,
                          label=f"{s.conversations} conv, {s.delay_ms:g} ms")
        self._phases.append(p)
        return p

    def _begin_phase(self) -> None:
        now = self.elapsed_s()
        old = self.phase
        old.ended_s = now
        self.phase = self._new_phase(now)
        # An ended phase never changes: summarize it once (~2 ms) so that snapshots carry
        # its figures, not its histograms, however many phases an operator makes.
        self._frozen_phases[old.index] = old.freeze(now, copy=False).summarized()

    # -- views -----------------------------------------------------------------------------

    async def _tick_timeline(self) -> None:
        last_pub = last_rx = 0
        while True:
            await asyncio.sleep(1.0)
            total_pub = sum(p.tokens_published for p in self._phases)
            total_rx = sum(p.tokens_received for p in self._phases)
            samples = self._second_samples
            self._second_samples = []
            d = distribution_of([v / 1000.0 for v in samples]) if samples else None
            self._timeline.append(TimelinePoint(
                t_s=round(self.elapsed_s(), 3),
                published_per_s=float(total_pub - last_pub),
                received_per_s=float(total_rx - last_rx),
                p50_ms=d.p50 if d else None,
                p99_ms=d.p99 if d else None))
            last_pub, last_rx = total_pub, total_rx

    def snapshot(self) -> StatsSnapshot:
        now = self.elapsed_s()
        phases = tuple(self._frozen_phases.get(p.index) or p.freeze(now) for p in self._phases)
        if len(phases) == 1:  # the total is that phase: skip merging copies of its histograms
            total = dataclasses.replace(phases[0], index=-1, label="total")
        else:
            total = PhaseRecorder.merged(self._phases).freeze(now, copy=False)
        now_ns = time.time_ns()
        live: Iterable[Conversation] = self._live.values()
        if len(self._live) > MAX_LIVE_VIEWS:
            live = heapq.nlargest(MAX_LIVE_VIEWS, live, key=_interest)
        live = sorted(live, key=lambda c: (c.discovered, c.number))
        views = tuple(c.view(now_ns) for c in live) + tuple(
            c.view(now_ns) for c in reversed(self._finished))
        s = self.settings
        remaining = None
        if s.duration_s > 0:
            remaining = max(0.0, s.duration_s - self._active_s()) if self._t0 else s.duration_s
        return StatsSnapshot(
            taken_at_ns=now_ns,
            state=self.state,
            settings=s,
            elapsed_s=now,
            remaining_s=remaining,
            phase_index=self.phase.index,
            phases=phases,
            total=total,
            conversations=views,
            conversations_live=len(self._live),
            health=self.selfwatch.health(s.delay_ms, whole_run=self._end_s is not None),
            timeline=tuple(self._timeline)[-600:],
            recent_latency_ms=tuple(self._sparkline),
            fatal_error=self.fatal_error,
            notes=tuple(self.notes),
            loop_lag_total=self.selfwatch.loop_lag_total.freeze(),
            schedule_lag_total=self.selfwatch.schedule_lag_total.freeze(),
        )


def _interest(conv: Conversation) -> tuple[int, int, int, int]:
    """Rank for the views when not all conversations fit: trouble first, then slow ones."""
    t = conv.tracker
    return (conv.state == "error", t.highest - t.unique + t.duplicated + t.out_of_order
            + conv.reconnects, conv.state != "streaming", conv.last_latency_us or 0)


async def _close_quietly(stream: SSEStream) -> None:
    with contextlib.suppress(Exception):
        await stream.aclose()


def _caught_up(conv: Conversation) -> bool:
    """Has this reader received everything that was published to it?"""
    if conv.state in ("done", "error"):
        return True
    if conv.publish is None:
        return conv.tracker.done_seq > 0
    return conv.tracker.unique >= conv.publish.published


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"no answer within {PREFLIGHT_TIMEOUT_S:g} s"
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:120]
