"""`--workers N`: the run's load shared by N engine processes, shown as one engine.

One asyncio process saturates one core (~27 000 tokens/s); a machine or a pod with more
CPUs holds more load with more processes. `WorkerPool` starts N `EngineProcess`es, each
with a share of the load (`worker_settings`): of the conversations, of the rate, of each
stage's target, of --connect-rate. Worker i numbers its conversations i+1, i+1+N, ..., so
the run's conversation ids are the ones one process would use (`loadtest-<run-id>-<n>`).

The pool implements `EngineHandle`, so the TUI and the headless view drive it as they drive
one engine: each command goes to every worker, with its share; `snapshot()` returns at once
the newest combined snapshot (sse_tui.combine), which a thread of the pool rebuilds whenever
a worker reports. Every worker begins a phase on every load command, and a worker keeps the
histograms of its ended phases, so phases and histograms combine exactly.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

from sse_tui.combine import SHARED_SETTINGS, PhaseCache, combine
from sse_tui.cpus import usable_cpus
from sse_tui.engine.process import PUSH_INTERVAL_S, EngineProcess
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot
from sse_tui.values import format_duration, parse_stages


def plan_workers(settings: Settings, *, follow_redis: bool = False) -> int:
    """How many engine processes the run gets: --workers (0: the CPUs this process may
    use), no more than there are conversations to share (every worker needs one, in every
    stage of a closed-loop profile). A --trace replay, and a consumer that follows Redis
    (every worker would follow every conversation), run in one process."""
    if settings.trace or (follow_redis and settings.mode == "consumer"):
        return 1
    k = min(settings.workers or usable_cpus(), settings.conversations)
    if settings.stages and settings.rate <= 0:
        k = min([k] + [int(stage.target) for stage in parse_stages(settings.stages)])
    return max(1, k)


def share(n: int, index: int, count: int) -> int:
    """Worker `index`'s whole share of n: the first n % count workers get one more."""
    return n // count + (1 if index < n % count else 0)


def worker_settings(total: Settings, index: int, count: int) -> Settings:
    """The settings worker `index` of `count` runs with: its share of the load. Its seed
    differs from the others' (the same seed would give every worker the same arrivals, in
    bursts of `count`), and is the run's for worker 0."""
    changes: dict[str, Any] = {}
    for name in SHARED_SETTINGS:
        value = getattr(total, name)
        changes[name] = share(value, index, count) if isinstance(value, int) else value / count
    if total.seed:
        changes["seed"] = total.seed + index
    if total.stages:
        rate_mode = total.rate > 0
        changes["stages"] = tuple(
            f"{stage.target / count!r}:{format_duration(stage.duration_s)}" if rate_mode
            else f"{share(int(stage.target), index, count)}:{format_duration(stage.duration_s)}"
            for stage in parse_stages(total.stages))
    return total.with_changes(**changes)


class WorkerPool:
    """Implements `sse_tui.engine.handle.EngineHandle` over `count` engine processes."""

    def __init__(self, settings: Settings, *, follow_redis: bool = False,
                 push_interval_s: float = PUSH_INTERVAL_S) -> None:
        self._follow_redis = follow_redis
        self._push_interval_s = push_interval_s
        self._workers: list[EngineProcess] = []
        self._lock = threading.Lock()  # one combine at a time
        self._wake = threading.Event()
        self._closing = False
        self._combiner: threading.Thread | None = None
        self._cache = PhaseCache()
        self._combined: StatsSnapshot | None = None
        self._plan(settings)

    def _plan(self, settings: Settings) -> None:
        settings = settings.validated()
        count = plan_workers(settings, follow_redis=self._follow_redis)
        # What the run shows: the load as given, and how many processes carry it.
        self._base = settings.with_changes(workers=count)
        # Each worker waits for the others to be up, so that their runs start together.
        together = multiprocessing.get_context("spawn").Barrier(count)
        self._workers = [
            EngineProcess(worker_settings(self._base, i, count), follow_redis=self._follow_redis,
                          push_interval_s=self._push_interval_s, worker=(i, count),
                          on_report=self._wake.set, start_together=together)
            for i in range(count)]
        self._cache = PhaseCache()
        self._combined = None

    @property
    def count(self) -> int:
        return len(self._workers)

    # -- what the engines say ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.snapshot().settings

    @property
    def started(self) -> bool:
        return any(w.started for w in self._workers)

    @property
    def finished(self) -> bool:
        return all(w.finished for w in self._workers)

    @property
    def commands_in_flight(self) -> int:
        # Every command goes to every worker: the slowest one says how many are pending.
        return max(w.commands_in_flight for w in self._workers)

    def snapshot(self) -> StatsSnapshot:
        """The newest combined snapshot; never waits for a worker (the first call, before
        any has reported, combines their placeholders)."""
        combined = self._combined
        return combined if combined is not None else self._combine()

    def pids(self) -> list[int | None]:
        """The workers' process ids (the benchmark reads their CPU time)."""
        return [w.pid for w in self._workers]

    def worker_snapshots(self) -> list[StatsSnapshot]:
        """Each worker's own newest snapshot (tests, the benchmark)."""
        return [w.snapshot() for w in self._workers]

    def _combine(self) -> StatsSnapshot:
        with self._lock:
            combined = combine(self.worker_snapshots(), base=self._base, cache=self._cache)
            self._combined = combined
            return combined

    def _combine_loop(self) -> None:
        while not self._closing:
            self._wake.wait(1.0)
            self._wake.clear()
            if not self._closing:
                self._combine()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.started:
            return
        for w in self._workers:
            w.start()
        self._closing = False
        self._combiner = threading.Thread(target=self._combine_loop, daemon=True,
                                          name="sse-tui-combiner")
        self._combiner.start()

    def wait_reported(self, timeout: float | None = None) -> bool:
        """Wait until every worker's engine runs (its first snapshot came) or has ended:
        their start-up (a new interpreter each) is not the run's time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return all(w.wait_reported(None if deadline is None
                                   else max(0.0, deadline - time.monotonic()))
                   for w in self._workers)

    def join(self, timeout: float | None = None) -> StatsSnapshot:
        deadline = None if timeout is None else time.monotonic() + timeout
        for w in self._workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            w.join(left)
        return self._combine()

    def restart(self, settings: Settings | None = None) -> None:
        current = self.settings
        new = (settings or current).validated()
        if new.run_id == current.run_id:
            new = new.for_next_run()
        if self.started and not self.finished:
            self.stop()
            self.join()
        self.close()
        self._plan(new)
        self.start()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._combiner is not None:
            self._combiner.join(5.0)
            self._combiner = None
        for w in self._workers:
            w.close()

    # -- commands: to every worker, each with its share ------------------------------------

    def set_conversations(self, n: int) -> None:
        n = int(n)
        if n < 1 or n == self.settings.conversations:
            return  # what one engine ignores: no worker may begin a phase for it
        for i, w in enumerate(self._workers):
            w.set_conversations(share(n, i, self.count))

    def set_delay(self, delay_ms: float) -> None:
        for w in self._workers:
            w.set_delay(delay_ms)

    def set_rate(self, rate: float) -> None:
        rate = float(rate)
        current = self.settings.rate
        if current <= 0 or not rate > 0 or rate == current:
            return
        for w in self._workers:
            w.set_rate(rate / self.count)

    def hold_profile(self) -> None:
        for w in self._workers:
            w.hold_profile()

    def release_profile(self) -> None:
        for w in self._workers:
            w.release_profile()

    def pause(self) -> None:
        for w in self._workers:
            w.pause()

    def resume(self) -> None:
        for w in self._workers:
            w.resume()

    def stop(self) -> None:
        for w in self._workers:
            w.stop()

    def hurry(self) -> None:
        for w in self._workers:
            w.hurry()
