"""The monitor's side of the fleet: read every member's latest report, notice the ones that
went silent, merge their figures, and send commands.

`FleetState` is the model (plain data, no I/O, its clock injected for tests); `FleetWatch`
drives it from Redis on an asyncio loop. The merged figures are `sse_tui.merge.merge()` of
the members' latest summaries — once the fleet is done, exactly what `sse-tui merge` of their
final JSON files computes. While it runs, the merge is shown as a live run (state, live
conversations and the fleet's load are filled in from the members).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from sse_tui import slo as slo_check
from sse_tui.engine.redis_conn import redis_client
from sse_tui.fleet.commands import OPS, encode_command
from sse_tui.fleet.wire import LOST_AFTER_S, FleetKeys, decode_report
from sse_tui.merge import merge
from sse_tui.settings import Settings
from sse_tui.snapshot import ProfilePosition, StatsSnapshot, TimelinePoint

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5


@dataclass
class Member:
    """One generator as the monitor knows it: its latest report, and when it last changed."""

    id: str
    info: dict[str, Any]
    summary: dict[str, Any]
    seq: int
    seen_at: float  # monotonic: when a new report was last read (the generators' clocks
    #                 may be skewed; ours decides who is silent)
    lost: bool = False
    received_per_s: float = 0.0
    _last: tuple[float, int] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return bool(self.info.get("finished"))

    @property
    def registered_ns(self) -> int:
        return int(self.info.get("registered_ns") or 0)

    @property
    def status(self) -> str:
        if self.finished:
            return str(self.info.get("state") or "finished")
        return "lost" if self.lost else str(self.info.get("state") or "running")

    def take(self, info: dict[str, Any], summary: dict[str, Any], seq: int, now: float) -> None:
        elapsed = float(summary.get("elapsed_s") or 0.0)
        received = int(summary.get("tokens_received") or 0)
        if self._last is not None and elapsed > self._last[0]:
            self.received_per_s = (received - self._last[1]) / (elapsed - self._last[0])
        self._last = (elapsed, received)
        self.info, self.summary, self.seq, self.seen_at, self.lost = (
            info, summary, seq, now, False)


@dataclass(frozen=True)
class GeneratorRow:
    """A member as one row of the fleet view."""

    id: str
    host: str
    status: str
    conversations: int
    rate: float
    live: int
    received_per_s: float
    p99_ms: float | None
    errors: int
    health: str | None
    beat_age_s: float


class FleetState:
    def __init__(self, name: str, *, expect: int | None = None, slo: tuple[str, ...] = (),
                 lost_after_s: float = LOST_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.expect = expect
        self.slo = slo  # --slo given to the fleet: judged on the merged figures
        self.lost_after_s = lost_after_s
        self.clock = clock
        self.members: dict[str, Member] = {}

    # -- what Redis said ------------------------------------------------------------------

    def take_report(self, member_id: str, seq: int, blob: bytes) -> None:
        try:
            info, summary = decode_report(blob)
        except ValueError as e:
            log.warning("fleet %s: member %s: %s", self.name, member_id, e)
            return
        now = self.clock()
        m = self.members.get(member_id)
        if m is None:
            m = self.members[member_id] = Member(member_id, info, summary, seq, now)
        m.take(info, summary, seq, now)

    def mark_lost(self) -> list[str]:
        """Members silent for lost_after_s (and not finished) become lost; their ids."""
        now, newly = self.clock(), []
        for m in self.members.values():
            if not m.finished and not m.lost and now - m.seen_at >= self.lost_after_s:
                m.lost = True
                newly.append(m.id)
        return newly

    # -- what the views read ---------------------------------------------------------------

    def ordered(self) -> list[Member]:
        """In the order they registered: the order of shares and of the merge."""
        return sorted(self.members.values(), key=lambda m: (m.registered_ns, m.id))

    def active_ids(self) -> list[str]:
        """The members a command's share is split over: not finished, not lost."""
        return [m.id for m in self.ordered() if not m.finished and not m.lost]

    @property
    def done(self) -> bool:
        """Every member has finished (or was lost), and --expect of them have registered."""
        if not self.members or (self.expect is not None and len(self.members) < self.expect):
            return False
        return all(m.finished or m.lost for m in self.members.values())

    @property
    def lost_ids(self) -> list[str]:
        return [m.id for m in self.ordered() if m.lost]

    def merged(self) -> StatsSnapshot | None:
        """merge() of the latest summaries; shown as a live run until the fleet is done."""
        members = self.ordered()
        if not members:
            return None
        snap = merge([m.summary for m in members])
        if self.slo:
            snap = dataclasses.replace(snap, settings=snap.settings.with_changes(slo=self.slo))
        if self.done:
            return snap
        running = [m for m in members if not m.finished and not m.lost]
        paused = bool(running) and all(m.info.get("state") == "paused" for m in running)
        rate = sum(float(m.info.get("share", {}).get("rate") or 0.0) for m in members
                   if not m.finished)
        settings = snap.settings.with_changes(rate=rate)
        if running:  # the delay in force: the members', not the first summary's setting
            settings = settings.with_changes(
                delay_ms=float(running[0].info.get("share", {}).get("delay_ms",
                                                                       settings.delay_ms)))
        return dataclasses.replace(
            snap, state="paused" if paused else "running", settings=settings,
            fatal_error=None, profile=_fleet_profile(running),
            timeline=fleet_timeline([m.info.get("timeline") for m in members]),
            conversations_live=sum(int(m.info.get("live") or 0) for m in running))

    def rows(self) -> list[GeneratorRow]:
        now = self.clock()
        out = []
        members = self.ordered()
        hosts = [str(m.info.get("host") or "?") for m in members]
        for m, host in zip(members, hosts, strict=True):
            if hosts.count(host) > 1:  # several generators on one machine: tell them apart
                host = f"{host}:{m.info.get('pid', '?')}"
            share = m.info.get("share") or {}
            latency = m.summary.get("latency_ms") or {}
            warning = (m.summary.get("self") or {}).get("warning")
            out.append(GeneratorRow(
                id=m.id, host=host, status=m.status,
                conversations=int(share.get("conversations") or 0),
                rate=float(share.get("rate") or 0.0), live=int(m.info.get("live") or 0),
                received_per_s=0.0 if m.finished or m.lost else m.received_per_s,
                p99_ms=latency.get("p99"), errors=int(m.summary.get("errors") or 0),
                health=warning if isinstance(warning, str) else None,
                beat_age_s=max(0.0, now - m.seen_at)))
        return out

    def exit_status(self, merged: StatsSnapshot | None) -> int:
        """The worst of the members' statuses; 1 if any was lost (its figures are partial);
        3 when --slo was given to the fleet and fails on the merged figures."""
        statuses = [int(m.info.get("exit_status") or 0) for m in self.members.values()
                    if m.finished]
        if self.lost_ids or not self.members:
            statuses.append(slo_check.EXIT_FATAL)
        if self.slo and merged is not None:
            statuses.append(slo_check.exit_status(merged))
        worst = max(statuses, default=0)
        # 1 (failed to measure) outranks 3 (an SLO missed), as for one generator.
        return slo_check.EXIT_FATAL if slo_check.EXIT_FATAL in statuses else worst


def _fleet_profile(running: list[Member]) -> ProfilePosition | None:
    """The members' --stages profile as one: the first one's stage, the fleet's target (the
    sum of theirs), held when any member's is held."""
    profiles = [m.info["profile"] for m in running if isinstance(m.info.get("profile"), dict)]
    if not profiles:
        return None
    try:
        first = ProfilePosition(**profiles[0])
        return dataclasses.replace(
            first, target=sum(float(p.get("target") or 0.0) for p in profiles),
            held=any(bool(p.get("held")) for p in profiles))
    except TypeError:  # a member of another version: no profile shown
        return None


class FleetWatch:
    """Reads the fleet's keys from Redis into a FleetState and sends commands."""

    def __init__(self, settings: Settings, state: FleetState,
                 *, interval_s: float = POLL_INTERVAL_S) -> None:
        self.settings = settings
        self.state = state
        self.keys = FleetKeys(state.name)
        self.interval_s = interval_s
        self.error: str | None = None  # the latest Redis problem, for the views
        self._client: Any = None
        self._outbox: asyncio.Queue[tuple[str, float | None]] | None = None

    async def run(self, until: Callable[[], bool]) -> None:
        """Poll until `until()` (checked every interval) or the fleet is done."""
        self._client = redis_client(self.settings, connect_timeout_s=5.0)
        self._outbox = asyncio.Queue()
        try:
            while True:
                await self.poll_once()
                await self._send_queued()
                if until() or self.state.done:
                    return
                await asyncio.sleep(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    async def poll_once(self) -> None:
        try:
            beats = await self._client.hgetall(self.keys.beats)
            changed = []
            for raw_id, raw_seq in beats.items():
                member_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                seq = int(raw_seq)
                known = self.state.members.get(member_id)
                if known is None or known.seq != seq:
                    changed.append((member_id, seq))
            if changed:
                blobs = await self._client.hmget(self.keys.latest, [c[0] for c in changed])
                for (member_id, seq), blob in zip(changed, blobs, strict=True):
                    if blob is not None:
                        self.state.take_report(member_id, seq, blob)
            self.error = None
        except (RedisError, OSError) as e:
            if self.error is None:
                log.warning("fleet %s: Redis: %s", self.state.name, e)
            self.error = f"Redis: {e}"
        for member_id in self.state.mark_lost():
            log.warning("fleet %s: %s silent for %gs: lost", self.state.name, member_id,
                        self.state.lost_after_s)

    def queue(self, op: str, value: float | None = None) -> None:
        """Queue a command (on this loop); sent on the next poll."""
        if op not in OPS:
            raise ValueError(f"unknown fleet command {op!r}")
        if self._outbox is not None:
            self._outbox.put_nowait((op, value))

    async def send(self, op: str, value: float | None = None) -> list[str]:
        """Send one command now, split over the active members; who it was sent to."""
        members = self.state.active_ids()
        if members:
            await self._client.publish(self.keys.commands, encode_command(op, value, members))
        return members

    async def _send_queued(self) -> None:
        assert self._outbox is not None
        while not self._outbox.empty():
            op, value = self._outbox.get_nowait()
            try:
                await self.send(op, value)
            except (RedisError, OSError) as e:
                log.warning("fleet %s: command %s not sent: %s", self.state.name, op, e)


def fleet_timeline(series: list[Any]) -> tuple[TimelinePoint, ...]:
    """The generators' seconds added up by wall-clock second: counts add, p50/p99 are the
    highest generator's (an upper bound: per-second histograms are not sent). Seconds are
    counted from the earliest one any generator reported."""
    by_second: dict[int, list[float]] = {}
    for points in series:
        if not isinstance(points, list):
            continue
        for point in points:
            try:
                wall, published, received, p50, p99 = point
                second = round(float(wall))
            except (TypeError, ValueError):
                continue  # a report from another version: leave the point out
            row = by_second.setdefault(second, [0.0, 0.0, -1.0, -1.0])
            row[0] += float(published or 0)
            row[1] += float(received or 0)
            row[2] = max(row[2], float(p50) if p50 is not None else -1.0)
            row[3] = max(row[3], float(p99) if p99 is not None else -1.0)
    if not by_second:
        return ()
    first = min(by_second) - 1
    return tuple(
        TimelinePoint(t_s=float(second - first), published_per_s=row[0], received_per_s=row[1],
                      p50_ms=row[2] if row[2] >= 0 else None,
                      p99_ms=row[3] if row[3] >= 0 else None,
                      published=int(row[0]), received=int(row[1]), wall_s=float(second))
        for second, row in sorted(by_second.items()))
