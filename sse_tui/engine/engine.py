"""The load engine: keeps N conversations live, publishes and reads their tokens, counts.

Plain asyncio, no UI imports. Every method here runs on the engine's own loop; other
processes go through `sse_tui.engine.process.EngineProcess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sse_tui.capacity import MAX_CONVERSATIONS
from sse_tui.credentials import Redactor, resolve_headers, run_secrets
from sse_tui.engine import clock
from sse_tui.engine.accounting import Accounting, check_totals
from sse_tui.engine.arrivals import ArrivalProcess, Arrivals
from sse_tui.engine.backoff import backoff_s
from sse_tui.engine.connect_rate import ConnectRate
from sse_tui.engine.consumer import Conversation
from sse_tui.engine.nats_tap import NatsTap, TapError
from sse_tui.engine.producer import PublishState, TokenPublisher
from sse_tui.engine.publish_watch import PublishWatch, redis_verdict
from sse_tui.engine.publishers import PublisherPool
from sse_tui.engine.redis_conn import auth_or_tls_problem, redis_client
from sse_tui.engine.redis_follower import RedisFollower
from sse_tui.engine.replay import TraceReplay
from sse_tui.engine.selfwatch import SelfWatch
from sse_tui.engine.stages import LoadProfile
from sse_tui.engine.stats import PhaseRecorder
from sse_tui.engine.timeline import Timeline, TimelineSample
from sse_tui.engine.transport import SSEStream, StreamConfig, aclose_transports
from sse_tui.engine.transport.tls import (
    TLSOptions,
    TLSSetupError,
    client_context,
    describe_tls_error,
)
from sse_tui.ranking import most_interesting, slow_threshold_ms
from sse_tui.settings import Settings, nats_url, sse_base
from sse_tui.shaping import LENGTH_BUCKETS, ConversationShapes, length_bucket
from sse_tui.snapshot import ClockEstimate, PhaseStats, SelfHealth, StatsSnapshot, phase_label
from sse_tui.trace import TracedConversation, load_trace
from sse_tui.values import Stage, parse_stages

PREFLIGHT_TIMEOUT_S = 5.0
FINISHED_KEPT = 50  # recently finished conversations kept for the views
# Above this many live conversations a snapshot carries only the most interesting ones:
# building a view costs ~7 µs on the engine's loop, and no table shows thousands of rows.
MAX_LIVE_VIEWS = 250
SPARKLINE_SAMPLES = 240
# Conversations started per loop iteration when many are wanted at once: ~5-10 ms of work.
FILL_BATCH = 500


class EngineError(Exception):
    """A problem that stops the run before it starts; the message says what to do."""


class LoadEngine:
    def __init__(self, settings: Settings, *, follow_redis: bool = False,
                 clock_ns: clock.ClockNs = time.time_ns, worker_index: int = 0,
                 worker_count: int = 1) -> None:
        self.settings = settings.validated()
        # One of `worker_count` engine processes (sse_tui.engine.workers): it numbers its
        # conversations worker_index + 1, + worker_count, ... so that the workers' ids are
        # disjoint and together the ones a single process would use.
        self._worker_count = worker_count
        # What each conversation looks like (--tokens/--delay/--first-token-delay drawn from
        # distributions, or a --trace replayed), and the lengths started so far.
        self._shapes = ConversationShapes.of(self.settings)
        self._lengths = [0] * LENGTH_BUCKETS
        self._replay: TraceReplay | None = None
        if self.settings.trace and self.producing:
            self._replay = TraceReplay(load_trace(self.settings.trace), self._replayed,
                                       speed=self.settings.speed, loop=self.settings.loop)
        # A load profile (--stages) sets the load from its first stage on.
        self.profile: LoadProfile | None = None
        if self.settings.stages:
            stages = parse_stages(self.settings.stages)
            self.profile = LoadProfile(stages, rate_mode=self.open_loop)
            self.settings = self._with_target(stages[0].target)
        # Open loop (--rate): conversations arrive at a rate; --conversations caps them.
        self._arrivals: Arrivals | None = None
        if self.open_loop:
            self._arrivals = Arrivals(
                ArrivalProcess(self.settings.arrival, self.settings.seed),
                self.settings.rate, self._arrival)
        # Each phase's rate and profile stage, for its PhaseStats (see _with_load).
        self._phase_load: dict[int, tuple[float, int | None]] = {}
        self.follow_redis = follow_redis and settings.mode == "consumer"
        # The producer's clock (publish timestamps and its offset against Redis): the wall
        # clock, or a skewed one a test injects to play a producer on another host.
        self._clock_ns = clock_ns
        # Added to publish timestamps (see sse_tui.engine.clock): set once a consumer with
        # --redis has estimated the producer's offset; 0 in `both` mode by construction.
        self.ts_shift_ns = 0
        self.clock: ClockEstimate | None = None
        self.state = "starting"
        self.fatal_error: str | None = None
        self.notes: list[str] = []
        # Its 1 s windows are placed in the run's time and phases.
        self.selfwatch = SelfWatch(
            elapsed_s=self.elapsed_s,
            phase=lambda: (self.phase.index, self.settings.delay_ms))
        self._phases: list[PhaseRecorder] = []
        self._frozen_phases: dict[int, PhaseStats] = {}
        self.phase: PhaseRecorder = self._new_phase(0.0)
        self._live: dict[str, Conversation] = {}
        self._finished: deque[Conversation] = deque(maxlen=FINISHED_KEPT)
        self._next_number = 1 + worker_index
        self._started_total = 0
        self._discovered_live = 0
        # Refills after a failed conversation wait a backoff (see _refill_later): the slots
        # waiting, and how many conversations failed since a stream last worked.
        self._held_slots = 0
        self._refill_failures = 0
        self._streams_established = 0
        self._redis: aioredis.Redis | None = None
        self._publisher: PublisherPool | None = None
        self.publish_watch = PublishWatch()  # is Redis holding publishing back?
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher_task: asyncio.Task[None] | None = None
        self._filler: asyncio.Task[None] | None = None  # starts conversations in batches
        self._closers: set[asyncio.Task[None]] = set()  # idle streams being closed
        self._stop = asyncio.Event()
        self._hurry = False  # skip the grace period (a second Ctrl-C)
        self._paused_since: float | None = None
        # The run's clock (what the duration and the profile count) stands still while
        # publishing is paused or the operator holds the profile: since when, and in all.
        self._clock_stopped_since: float | None = None
        self._clock_stopped_total = 0.0
        self._t0 = 0.0
        self._end_s: float | None = None
        self._sparkline: deque[float] = deque(maxlen=SPARKLINE_SAMPLES)
        self._timeline = Timeline()
        self._stream_base = sse_base(settings.sse) if settings.mode != "producer" else ""
        # What every stream opens with; its headers are resolved from $ENV in the preflight.
        self.stream_config = StreamConfig(transport=settings.transport,
                                          tls=TLSOptions.of(settings))
        # --connect-rate: every stream opening (first connect or reconnect) passes it.
        self.connect_gate = ConnectRate(self.settings.connect_rate)
        # For texts from libraries (redis-py, httpx, ssl) before they reach a user: errors
        # may quote a URL or a value, and none of the run's secrets may be shown.
        s = self.settings
        self.redact = Redactor(run_secrets(redis=s.redis, sse=s.sse, headers=s.headers,
                                           password_file=s.redis_password_file))
        self._accounting = Accounting(detail=self.settings.json_detail)
        self.nats_tap: NatsTap | None = None  # --nats: the per-hop tap (docs/topology.md)

    # -- the run ---------------------------------------------------------------------------

    @property
    def producing(self) -> bool:
        return self.settings.mode in ("producer", "both")

    @property
    def consuming(self) -> bool:
        return self.settings.mode in ("consumer", "both")

    @property
    def open_loop(self) -> bool:
        """--rate: conversations arrive at a rate (else N are kept live: a closed loop, or
        with --trace they start when the trace says: see `replaying`)."""
        return self.settings.rate > 0

    @property
    def replaying(self) -> bool:
        return self._replay is not None

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
            assert self._redis is not None
            self._spawn(RedisFollower(self._redis, self).run(), "redis-follower")
            if self.clock is None:
                self._spawn(self._estimate_clock_offset(), "clock-offset")
        self._spawn(self._timeline.run(self._timeline_now), "timeline")
        self._spawn(self._watch_deadline(), "deadline")
        if self.consuming and self.settings.idle_timeout_s > 0:
            self._spawn(self._watch_idle_streams(), "idle-watchdog")
        self.state = "running"
        if self.profile is not None:
            self._spawn(self.profile.follow(self._active_s, self._apply_stage), "profile")
        if self._arrivals is not None:
            self._arrivals.start()
        elif self._replay is not None:
            self._replay.start()
        else:
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
        """Elapsed time not spent paused or with the profile held: what the duration and
        the load profile count."""
        stopped = self._clock_stopped_total
        if self._clock_stopped_since is not None:
            stopped += self.elapsed_s() - self._clock_stopped_since
        return self.elapsed_s() - stopped

    def _update_clock(self) -> None:
        """After a pause, resume, hold or release: stop or restart the run's clock."""
        stopped = self._paused_since is not None or (
            self.profile is not None and self.profile.held)
        if stopped and self._clock_stopped_since is None:
            self._clock_stopped_since = self.elapsed_s()
        elif not stopped and self._clock_stopped_since is not None:
            self._clock_stopped_total += self.elapsed_s() - self._clock_stopped_since
            self._clock_stopped_since = None

    async def _preflight(self) -> None:
        s = self.settings
        if self.producing or self.follow_redis:
            shown = s.shown("redis")
            try:
                self._redis = redis_client(s, connect_timeout_s=PREFLIGHT_TIMEOUT_S)
            except ValueError as e:  # the password file
                raise EngineError(f"cannot log in to Redis at {shown}: {e}") from None
            try:
                await asyncio.wait_for(self._redis.ping(), PREFLIGHT_TIMEOUT_S)
            except (RedisError, OSError, TimeoutError) as e:
                problem = auth_or_tls_problem(e)
                if problem is not None:  # said in full: the reason is the whole message
                    raise EngineError(self.redact(f"Redis at {shown}: {problem}")) from None
                raise EngineError(self.redact(
                    f"cannot reach Redis at {shown} ({_reason(e)}); is it running? For a "
                    "cluster: kubectl port-forward -n redis-system svc/redis 6379:6379")) from None
        if self.producing:
            assert self._redis is not None
            redis = self._redis
            self._publisher = PublisherPool(s.publish_connections, lambda i: TokenPublisher(
                redis, delay_ms=s.delay_ms,
                on_published=self._on_published, on_error=self._on_publish_error,
                on_schedule_lag=self.selfwatch.record_schedule_lag,
                on_round_trip=self._on_publish_round_trip, on_held_back=self._on_held_back,
                clock_ns=self._clock_ns,
                # --seed repeats the gaps too (0: a new draw each run).
                rng_seed=f"gaps:{s.seed}:{i}" if s.seed else None,
                batch_ms=s.publish_batch_ms, token_bytes=s.token_bytes))
            await self._store_clock_offset()
        if self.follow_redis:  # before any stream opens, so that every token is corrected
            await self._try_clock_offset()
        if self.consuming:
            try:
                headers = resolve_headers(s.headers)
            except ValueError as e:  # a $VAR unset since the flags were read
                raise EngineError(f"--header: {e}") from None
            self.stream_config = dataclasses.replace(self.stream_config, headers=headers)
            await self._check_sse_reachable()
        if s.nats:
            tap = NatsTap(nats_url(s.nats), self)
            try:
                await tap.connect()
            except TapError as e:
                raise EngineError(self.redact(str(e))) from None
            self.nats_tap = self._accounting.tap = tap

    async def _store_clock_offset(self) -> None:
        """Leave this producer's clock offset against Redis for consumers on other hosts.
        Not being able to is no reason to stop the run: they then go uncorrected."""
        assert self._redis is not None
        try:
            offset = await asyncio.wait_for(clock.measure(self._redis, self._clock_ns),
                                            PREFLIGHT_TIMEOUT_S)
            await asyncio.wait_for(clock.store(self._redis, self.settings.run_id, offset),
                                   PREFLIGHT_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as e:
            self.notes.append(self.redact(
                f"could not store the clock offset for consumers on other hosts: {_reason(e)}"))

    async def _estimate_clock_offset(self) -> None:
        """A consumer with --redis whose producer had not stored its offset at the start:
        retry twice a second until the run ends; tokens received before go uncorrected."""
        while self.clock is None:
            await asyncio.sleep(0.5)
            await self._try_clock_offset()

    async def _try_clock_offset(self) -> None:
        """A consumer with --redis: if the run's producer has stored its clock offset, put
        its publish timestamps on this clock (the shift and the estimate shown)."""
        assert self._redis is not None
        try:
            theirs = await asyncio.wait_for(clock.load(self._redis, self.settings.run_id),
                                            PREFLIGHT_TIMEOUT_S)
            if theirs is None:
                return
            # Measured now, next to theirs in time: both offsets drift with their clocks.
            mine = await asyncio.wait_for(clock.measure(self._redis), PREFLIGHT_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError):
            return  # the follower reports a Redis that went away; try again later
        self.ts_shift_ns = clock.shift_ns(theirs, mine)
        self.clock = clock.estimate(theirs, mine)

    async def _check_sse_reachable(self) -> None:
        """Connect, and for https:// shake hands: a certificate problem fails the run here,
        in one line, rather than every conversation later."""
        u = urlsplit(self._stream_base)
        https = u.scheme == "https"
        port = u.port or (443 if https else 80)
        shown = self.settings.shown("sse")
        try:
            tls = client_context(self.stream_config.tls) if https else None
        except TLSSetupError as e:
            raise EngineError(str(e)) from None
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(u.hostname, port, ssl=tls,
                                        server_hostname=u.hostname if https else None),
                PREFLIGHT_TIMEOUT_S)
        except (OSError, TimeoutError) as e:
            problem = describe_tls_error(e) if https else None
            if problem is not None:
                raise EngineError(f"the SSE adapter at {shown}: {problem}") from None
            raise EngineError(self.redact(
                f"cannot reach the SSE adapter at {shown} ({_reason(e)}); for a "
                "cluster: kubectl port-forward -n sse-system svc/sse-adapter 8080:80")) from None
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
            self.fatal_error = self.redact(f"internal error in {task.get_name()}: {exc!r}")
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
                    conv.idle_timed_out(self.settings.idle_timeout_s)
                    closer = asyncio.get_running_loop().create_task(_close_quietly(stream))
                    self._closers.add(closer)
                    closer.add_done_callback(self._closers.discard)

    async def _drain(self) -> None:
        """Stop publishing; give in-flight tokens the grace period; count the rest missing."""
        loop = asyncio.get_running_loop()
        self.state = "draining"
        if self._filler is not None:
            self._filler.cancel()
        if self._arrivals is not None:
            self._arrivals.stop()
        if self._replay is not None:
            self._replay.stop()
        if self._publisher is not None:
            self._publisher.close()
        if self._publisher_task is not None:
            # A pipeline may be in flight: its tokens count as published once it returns,
            # and what is published must be known before anything is judged missing.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._publisher_task), 5.0)
        deadline = loop.time() + self.settings.grace_s
        while not self._hurry and loop.time() < deadline and any(
                not c.caught_up() for c in self._live.values() if c.task is not None):
            await asyncio.sleep(0.02)
        for conv in list(self._live.values()):
            if conv.task is not None and not conv.task.done():
                conv.given_up = True
                conv.task.cancel()
        pending = [c.task for c in self._live.values() if c.task is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        for conv in list(self._live.values()):
            self._conversation_ended(conv, refill=False, run_ended=True)
        # The publisher is done: what it published is final. Then every token must be
        # received or missing; if not, say so loudly.
        self._accounting.settle(self.phase)
        self.notes.extend(check_totals(self._phases, self.settings.mode,
                                       self._accounting.examples))
        if self.nats_tap is not None:
            await self.nats_tap.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.selfwatch.stop()
        await self._close_redis()
        if self.settings.transport != "raw":
            await aclose_transports()
        gc.unfreeze()  # what _fill_rest froze: a cycle among it is collectable again
        self._end_s = loop.time() - self._t0
        self.phase.ended_s = self._end_s
        if self.fatal_error is None:
            self.fatal_error = self._no_stream_ever()
        self.state = "failed" if self.fatal_error else "finished"

    async def _close_redis(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
            self._redis = None

    # -- conversations ---------------------------------------------------------------------

    def _fill(self) -> None:
        """Start conversations until the target number is live.

        A few at once (a refill) start here and now; many (the start of a run, `-c 200000`)
        start FILL_BATCH at a time from a task that yields between batches, so that signals,
        snapshots and commands keep being served while they open."""
        if self._filler is not None and not self._filler.done():
            return  # it sees the new target on its next batch
        if self._fill_batch():
            self._filler = asyncio.get_running_loop().create_task(
                self._fill_rest(), name="filler")
            self._filler.add_done_callback(self._task_done)

    def _fill_batch(self) -> bool:
        """Start up to FILL_BATCH conversations; True if more are wanted."""
        if (self._stop.is_set() or self._paused_since is not None or self.open_loop
                or self.replaying):  # conversations arrive; none is replaced
            return False  # open loop: conversations arrive (_arrival), none is replaced
        s = self.settings
        target = min(s.conversations, MAX_CONVERSATIONS)  # a live change past it, too
        one_round = s.duration_s <= 0
        for _ in range(FILL_BATCH):
            if self._live_own() >= target or (one_round and self._started_total >= target):
                return False
            self._start_conversation()
        return True

    async def _fill_rest(self) -> None:
        while self._fill_batch():
            gc.freeze()
            await asyncio.sleep(0)
        # Thousands of conversations are long-lived objects (~57 per conversation): left in
        # the cyclic GC's oldest generation, each full collection walked all of them, ~400 ms
        # with the loop stopped at -c 10000, every few seconds (docs/benchmarks.md). Frozen,
        # they are still freed by reference counting; the run's end unfreezes them.
        gc.freeze()
        self._spawn(self._freeze_after_ramp(), "gc-freeze")

    async def _freeze_after_ramp(self) -> None:
        """Once --connect-rate has let every waiting stream open: freeze what they made."""
        while self.connect_gate.waiting:
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the last ones' connects and first reads
        gc.freeze()

    def _live_own(self) -> int:
        return len(self._live) - self._discovered_live + self._held_slots

    def _arrival(self) -> None:
        """Open loop: a conversation arrives; with --conversations already live it is
        dropped, and counted, like a user turned away."""
        if self._stop.is_set():
            return
        if self._live_own() >= min(self.settings.conversations, MAX_CONVERSATIONS):
            self.phase.arrivals_dropped += 1
        else:
            self._start_conversation()

    def _replayed(self, traced: TracedConversation) -> None:
        """--trace: a recorded conversation starts again, under this run's id. Every one
        starts (--conversations does not cap a replay: the trace is the load)."""
        if not self._stop.is_set() and len(self._live) < MAX_CONVERSATIONS:
            self._start_conversation(traced=traced)

    def _refill_later(self) -> None:
        """A conversation failed: its replacement waits a backoff that grows while
        conversations keep failing with no stream working in between, so that a server
        answering 404 is asked a few times a second, not thousands."""
        delay = backoff_s(self._refill_failures)
        self._refill_failures += 1
        self._held_slots += 1
        asyncio.get_running_loop().call_later(delay, self._release_slot)

    def _release_slot(self) -> None:
        self._held_slots -= 1
        self._fill()

    def _start_conversation(self, conversation_id: str | None = None,
                            traced: TracedConversation | None = None) -> Conversation:
        s = self.settings
        discovered = conversation_id is not None
        # Its length and schedule: the trace's, drawn from the distributions, or fixed.
        first_delay_s = 0.0
        gaps_s: tuple[float, ...] | None = None
        if traced is not None:
            total = traced.tokens
            gaps_s = tuple(g / 1000.0 / s.speed for g in traced.gaps_ms)
        elif discovered:
            total = int(s.tokens)
        else:
            total = self._shapes.token_count()
            first_delay_s = self._shapes.first_token_delay_s()
        if (traced is not None or self._shapes.shaped) and not discovered:
            self._lengths[length_bucket(total)] += 1
        if conversation_id is None:
            number = self._next_number
            self._next_number += self._worker_count
            self._started_total += 1
            conversation_id = s.conversation_id(number)
        else:
            number = 0
            self._discovered_live += 1
        url = f"{self._stream_base}/stream/{conversation_id}" if self.consuming else None
        conv = Conversation(self, number, conversation_id, total, url, discovered=discovered)
        if self.nats_tap is not None:  # subscribed before its stream is even asked for
            conv.hop = self.nats_tap.watch(conversation_id)
        self._live[conversation_id] = conv
        self.phase.conversations_started += 1
        if self.producing:
            conv.publish = PublishState(conversation_id, s.channel_prefix + conversation_id,
                                        total, first_delay_s=first_delay_s, gaps_s=gaps_s,
                                        on_finished=self._on_publish_finished)
        if self.consuming:
            conv.task = self._spawn_conversation(conv)
        else:
            conv.mark_publishing()
            assert self._publisher is not None and conv.publish is not None
            self._publisher.add(conv.publish)
        return conv

    def _spawn_conversation(self, conv: Conversation) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await conv.read_supervised()
            except asyncio.CancelledError:
                if not conv.given_up:
                    raise
            if conv.publish is not None and self._publisher is not None:
                self._publisher.remove(conv.publish)  # the reader is gone: stop publishing
            if not self._stop.is_set():
                self._conversation_ended(conv)

        task = asyncio.get_running_loop().create_task(run(), name=conv.conversation_id)
        # The reader is supervised inside run(); anything escaping it is an engine bug, which
        # must end the run loudly rather than leave it waiting for this conversation forever.
        task.add_done_callback(self._task_done)
        return task

    def on_established(self, conv: Conversation) -> None:
        """The stream is open: in `both` mode the first token is published only now."""
        self._streams_established += 1
        self._refill_failures = 0
        if conv.publish is not None and self._publisher is not None and not self._stop.is_set():
            self._publisher.add(conv.publish)

    def on_latency(self, latency_us: int) -> None:
        self._sparkline.append(latency_us / 1000.0)
        self._timeline.record(latency_us)

    def _on_publish_finished(self, state: PublishState) -> None:
        conv = self._live.get(state.conversation_id)
        if conv is None:
            return
        if conv.task is None:  # producer only: nothing to wait for
            self._conversation_ended(conv)
            return
        conv.mark_draining()
        # If the done token never arrives (a lossy adapter), stop waiting after the grace.
        asyncio.get_running_loop().call_later(self.settings.grace_s, self._give_up, conv)

    def _give_up(self, conv: Conversation) -> None:
        if conv.task is not None and not conv.task.done() and conv.without_stream:
            # Riding out an outage (its retry budget bounds it): the grace starts again once
            # it has a stream, from which it may still get what was published meanwhile.
            asyncio.get_running_loop().call_later(self.settings.grace_s, self._give_up, conv)
            return
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
        self._accounting.ended(conv)
        self._finished.append(conv)
        if refill:
            if self.settings.duration_s <= 0 and not self._live and (
                    self._replay.finished if self._replay is not None
                    else self._started_total >= self.settings.conversations):
                self._stop.set()
            elif conv.failure is not None and self.settings.duration_s > 0 and (
                    not self.open_loop and not self.replaying):
                self._refill_later()
            else:
                self._fill()

    def _no_stream_ever(self) -> str | None:
        """Why the run failed if it was to read streams and none was ever established."""
        return self._no_stream(PhaseRecorder.merged(self._phases), "was ever established")

    def _no_stream(self, total: PhaseRecorder | PhaseStats, how: str) -> str | None:
        attempts = total.connect_attempts
        if not self.consuming or self._streams_established or not attempts:
            return None
        why = ""
        if total.errors:
            kind = max(total.errors, key=lambda k: total.errors[k])
            why = f"; mostly {kind}" + (f" (e.g. {total.error_examples[kind]})"
                                        if kind in total.error_examples else "")
        return (f"no SSE stream {how} at {self.settings.sse} "
                f"({attempts} attempt{'s' if attempts != 1 else ''}){why}")

    def _on_published(self, n: int, unheard: int) -> None:
        self._accounting.settle(self.phase)  # this pipeline's tokens are counted: settle
        self.phase.tokens_published += n
        self.phase.tokens_unheard += unheard

    def _on_publish_error(self, kind: str, n: int) -> None:
        self.phase.publish_errors += n
        self.phase.error(kind, n)

    def _on_publish_round_trip(self, rtt_s: float) -> None:
        self.phase.publish_rtt.record(int(rtt_s * 1e6))
        self.publish_watch.round_trip(rtt_s)

    def _on_held_back(self, tokens: int) -> None:
        self.phase.tokens_held_back_by_redis += tokens
        self.publish_watch.held_back(tokens)

    def _redis_warning(self, total: PhaseStats, health: SelfHealth) -> str | None:
        if self._end_s is not None:
            return redis_verdict(total, generator_overloaded=health.overloaded_windows > 0)
        return self.publish_watch.warning(
            self._publisher.waiting_s() if self._publisher is not None else None,
            generator_overloaded=health.warning is not None)

    # -- the Redis follower's hooks (consumer mode with --redis) -------------------------

    def live_conversation(self, conversation_id: str) -> Conversation | None:
        return self._live.get(conversation_id)

    def may_follow(self) -> bool:
        return not self._stop.is_set() and self._discovered_live < self.settings.conversations

    def follow(self, conversation_id: str) -> None:
        self._start_conversation(conversation_id)

    # -- live control (called on this loop) ------------------------------------------------

    def set_conversations(self, n: int) -> None:
        """Conversations live at once (open loop: the cap on them). In a closed loop with a
        load profile, the operator takes the load over from the profile (hold_profile)."""
        n = int(n)
        # A worker's share may be 0, and it begins a phase even when its share is
        # unchanged: every worker's phases must line up with the others' to be combined.
        worker = self._worker_count > 1
        if n < (0 if worker else 1) or (n == self.settings.conversations and not worker):
            return
        if not self.open_loop:
            self._take_over()
        self.settings = self.settings.with_changes(conversations=n)
        self._begin_phase()
        self._fill()

    def set_rate(self, rate: float) -> None:
        """Open loop: arrivals per second (a closed loop stays closed: ignored). With a
        load profile, the operator takes the load over from it (hold_profile)."""
        rate = float(rate)
        if not self.open_loop or not rate > 0 or rate == self.settings.rate:
            return
        self._take_over()
        self.settings = self.settings.with_changes(rate=rate)
        assert self._arrivals is not None
        self._arrivals.set_rate(rate)
        self._begin_phase()

    def hold_profile(self) -> None:
        """The operator takes over: the profile stops moving on, and so does the run's
        clock, until release_profile(). Once past its last stage there is nothing to hold."""
        profile = self.profile
        if profile is not None and self._active_s() < profile.length_s and profile.hold():
            self._update_clock()

    def release_profile(self) -> None:
        """Hand the load back to the profile: its current stage's target is set again (a
        new phase) and it goes on from where it was held."""
        if self.profile is not None and self.profile.release():
            self._update_clock()
            stage = self.profile.due(self._active_s())
            if stage is not None and not self._stop.is_set():
                self._apply_stage(self.profile.applied, stage)

    def _take_over(self) -> None:
        if self.profile is not None and not self.profile.held:
            self.hold_profile()

    def _apply_stage(self, index: int, stage: Stage) -> None:
        """The profile reached a stage (or was released): its target, as a new phase."""
        self.settings = self._with_target(stage.target)
        if self._arrivals is not None:
            self._arrivals.set_rate(self.settings.rate)
        self._begin_phase()
        self._fill()

    def _with_target(self, target: float) -> Settings:
        """The settings with a profile stage's target: the rate, or conversations."""
        if self.open_loop:
            return self.settings.with_changes(rate=float(target))
        return self.settings.with_changes(conversations=int(target))

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
            self._update_clock()
            self.state = "paused"
            if self._publisher is not None:
                self._publisher.pause()
            if self._arrivals is not None:
                self._arrivals.pause()
            if self._replay is not None:
                self._replay.pause()

    def resume(self) -> None:
        if self._paused_since is not None:
            self._paused_since = None
            self._update_clock()
            self.state = "running"
            if self._publisher is not None:
                self._publisher.resume()
            if self._arrivals is not None:
                self._arrivals.resume()
            if self._replay is not None:
                self._replay.resume()
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
                          label=phase_label(s.conversations, s.delay_ms, s.rate))
        self._phases.append(p)
        profile = self.profile
        stage = profile.applied + 1 if profile is not None and not profile.held else None
        self._phase_load[p.index] = (s.rate, stage)
        return p

    def _with_load(self, phase: PhaseStats) -> PhaseStats:
        """A frozen phase with the rate and the profile stage it ran at."""
        rate, stage = self._phase_load.get(phase.index, (0.0, None))
        return dataclasses.replace(phase, rate=rate, stage=stage) if rate or stage else phase

    def _begin_phase(self) -> None:
        now = self.elapsed_s()
        old = self.phase
        old.ended_s = now
        self.phase = self._new_phase(now)
        # An ended phase never changes: summarize it once (~2 ms) so that snapshots carry
        # its figures, not its histograms, however many phases an operator makes. A worker
        # keeps its histograms (compressed on the pipe): the coordinator adds them up.
        frozen = self._with_load(old.freeze(now, copy=False))
        self._frozen_phases[old.index] = frozen if self._worker_count > 1 else frozen.summarized()

    # -- views -----------------------------------------------------------------------------

    def _timeline_now(self) -> TimelineSample:
        """Once a second (sse_tui.engine.timeline): the run's totals and its state now."""
        phases = self._phases
        windows = self.selfwatch.windows  # the latest judged 1 s window: the self-lag
        return TimelineSample(
            t_s=round(self.elapsed_s(), 3),
            published_total=sum(p.tokens_published for p in phases),
            received_total=sum(p.tokens_received for p in phases),
            errors_total=sum(sum(p.errors.values()) for p in phases),
            missing_total=sum(p.tokens_missing for p in phases),
            state=self.state, phase=self.phase.index, conversations=len(self._live),
            delay_ms=self.settings.delay_ms,
            self_lag_ms=windows[-1].loop_lag_p99_ms if windows else None)

    def snapshot(self) -> StatsSnapshot:
        now = self.elapsed_s()
        phases = tuple(self._frozen_phases.get(p.index) or self._with_load(p.freeze(now))
                       for p in self._phases)
        if len(phases) == 1:  # the total is that phase: skip merging copies of its histograms
            total = dataclasses.replace(phases[0], index=-1, label="total", stage=None)
        else:
            total = PhaseRecorder.merged(self._phases).freeze(now, copy=False)
            if self.open_loop:
                total = dataclasses.replace(total, rate=self.settings.rate)
        health = self.selfwatch.health(whole_run=self._end_s is not None)
        now_ns = time.time_ns()
        live: Iterable[Conversation] = self._live.values()
        if len(self._live) > MAX_LIVE_VIEWS:
            # The table ranks again what it gets; this only decides what it gets.
            live = most_interesting(live, MAX_LIVE_VIEWS,
                                    slow_threshold_ms(total.latency.summary))
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
            connect_waiting=self.connect_gate.waiting,
            health=health,
            timeline=self._timeline.points(),
            recent_latency_ms=tuple(self._sparkline),
            fatal_error=self.redact(self.fatal_error) if self.fatal_error else None,
            notes=tuple(self.notes),
            redis_warning=self._redis_warning(total, health),
            clock_warning=clock.negative_warning(total),
            conversation_lengths=tuple(self._lengths) if any(self._lengths) else (),
            clock=self.clock,
            tokens_in_flight=self._publisher.in_flight if self._publisher is not None else 0,
            stream_warning=(self._no_stream(total, "established yet") if self._end_s is None
                            else None),
            loop_lag_total=self.selfwatch.loop_lag_total.freeze(),
            schedule_lag_total=self.selfwatch.schedule_lag_total.freeze(),
            profile=(self.profile.position(self._active_s() if self._t0 else 0.0)
                     if self.profile is not None else None),
            **self._details(),
        )

    def _details(self) -> dict[str, Any]:
        """--json-detail's conversations, in the final snapshot only (they never change
        after the end, and a live snapshot goes to the UI several times a second)."""
        if self._end_s is None or not self.settings.json_detail:
            return {}
        details, omitted = self._accounting.details()
        return {"details": details, "details_omitted": omitted}


async def _close_quietly(stream: SSEStream) -> None:
    with contextlib.suppress(Exception):
        await stream.aclose()


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return f"no answer within {PREFLIGHT_TIMEOUT_S:g} s"
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:120]
