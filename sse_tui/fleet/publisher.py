"""A generator's side of the fleet: register, report once a second, take commands.

One more output of the run (sse_tui.outputs.RunOutputs hands it every snapshot). It runs on
a thread of its own with its own asyncio loop and Redis connection, so that neither the
engine's loop nor the UI waits on it; a Redis that hiccups costs reports (said once in the
log), never the run. The report is the very dict `--json` writes (`summary_dict`), so that
the monitor's merge is `sse-tui merge` of what the files would hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from typing import Any

from redis.exceptions import RedisError

from sse_tui import slo
from sse_tui.engine.redis_conn import redis_client
from sse_tui.fleet.commands import CommandTarget, apply_command
from sse_tui.fleet.wire import KEY_TTL_S, REPORT_INTERVAL_S, FleetKeys, encode_report
from sse_tui.report import summary_dict
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot

log = logging.getLogger(__name__)

_TICK_S = 0.1  # how often the thread looks at commands and at the stop flag
_CLOSE_TIMEOUT_S = 5.0


def host_name() -> str:
    """The pod's name in Kubernetes (HOSTNAME), else the machine's."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


# Seconds of each generator's timeline sent with every report: the chart's width and more.
TIMELINE_SENT = 120


class FleetPublisher:
    def __init__(self, settings: Settings, *, interval_s: float = REPORT_INTERVAL_S) -> None:
        self.settings = settings
        self.keys = FleetKeys(settings.fleet)
        self.member_id = settings.run_id  # run ids differ between generators; so do members
        self.interval_s = interval_s
        self.reports_sent = 0
        self.commands_applied: list[str] = []
        self._host = host_name()
        self._latest: StatsSnapshot | None = None
        self._target: CommandTarget | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registered_ns = time.time_ns()
        self._failing = False

    def describe(self) -> str:
        return (f"  in fleet {self.settings.fleet} as {self.member_id} ({self._host}), "
                f"reporting on {self.settings.shown('redis')}")

    def control(self, target: CommandTarget) -> None:
        """Where fleet commands go (an EngineHandle, or a LoopTarget for headless)."""
        self._target = target

    def update(self, snap: StatsSnapshot) -> None:
        with self._lock:
            self._latest = snap
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sse-tui-fleet", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Send the latest report (the final one, by now) and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_CLOSE_TIMEOUT_S)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as e:  # never the run's problem
            log.warning("fleet %s: reporting stopped: %s", self.settings.fleet, e)

    async def _main(self) -> None:
        client = redis_client(self.settings, connect_timeout_s=5.0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        subscribed = False
        loop = asyncio.get_running_loop()
        next_report = loop.time()
        try:
            while not self._stop.is_set():
                try:
                    if not subscribed:
                        await pubsub.subscribe(self.keys.commands)
                        subscribed = True
                    if loop.time() >= next_report:
                        next_report = loop.time() + self.interval_s
                        await self._report(client)
                    message = await pubsub.get_message(timeout=_TICK_S)
                    if message is not None and message.get("type") == "message":
                        self._command(message["data"])
                    self._failing = False
                except (RedisError, OSError) as e:
                    if not self._failing:
                        log.warning("fleet %s: Redis: %s (retrying)", self.settings.fleet, e)
                    self._failing = True
                    subscribed = False
                    await asyncio.sleep(min(1.0, self.interval_s))
            with contextlib.suppress(RedisError, OSError):
                await self._report(client)  # the final figures, finished flag and all
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    def _command(self, data: bytes | str) -> None:
        target = self._target
        if target is None:
            return
        done = apply_command(data, self.member_id, target)
        if done is not None:
            self.commands_applied.append(done)
            log.info("fleet %s: %s", self.settings.fleet, done)

    def member(self, snap: StatsSnapshot) -> dict[str, Any]:
        s = snap.settings
        return {
            "id": self.member_id,
            "host": self._host,
            "pid": os.getpid(),
            "run_id": s.run_id,
            "registered_ns": self._registered_ns,
            "beat_ns": time.time_ns(),
            "seq": self.reports_sent + 1,
            "state": snap.state,
            "finished": snap.finished,
            "exit_status": slo.exit_status(snap) if snap.finished else None,
            "share": {"conversations": s.conversations, "rate": s.rate, "delay_ms": s.delay_ms},
            "live": snap.conversations_live,
            # Where its --stages profile is (None: none): the fleet view's `t` key and stage.
            "profile": dataclasses.asdict(snap.profile) if snap.profile is not None else None,
            # Its latest seconds, for the fleet view's chart: [wall s, published, received,
            # p50 ms, p99 ms] (sse_tui.fleet.monitor.fleet_timeline adds them up by second).
            "timeline": [[round(p.wall_s, 3), p.published, p.received, p.p50_ms, p.p99_ms]
                         for p in snap.timeline[-TIMELINE_SENT:]],
        }

    async def _report(self, client: Any) -> None:
        with self._lock:
            snap = self._latest
        if snap is None:
            return
        blob = encode_report(self.member(snap), summary_dict(snap))
        k = self.keys
        pipe = client.pipeline(transaction=True)
        pipe.zadd(k.members, {self.member_id: self._registered_ns}, nx=True)
        pipe.hset(k.latest, self.member_id, blob)
        pipe.hincrby(k.beats, self.member_id, 1)
        pipe.publish(k.reports, blob)
        for key in (k.members, k.latest, k.beats):
            pipe.expire(key, KEY_TTL_S)
        await pipe.execute()
        self.reports_sent += 1
