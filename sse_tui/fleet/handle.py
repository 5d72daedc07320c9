"""The fleet behind the `EngineHandle` API, so that the TUI drives a fleet as it drives one
engine: snapshot() is the members' merged figures, the commands go out to every member.

The FleetWatch runs on a thread of its own with its own loop (the UI never waits on Redis).
stop() stops watching — the generators go on: quitting the monitor does not end the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from sse_tui.engine.engine import LoadEngine
from sse_tui.fleet.monitor import FleetState, FleetWatch, GeneratorRow
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot


class FleetHandle:
    def __init__(self, settings: Settings, state: FleetState) -> None:
        self.state = state
        self.watch = FleetWatch(settings, state)
        # What the view shows before any member has reported: a run that has not started.
        self._waiting = LoadEngine(settings.with_changes(
            run_id=f"fleet-{state.name}", fleet="")).snapshot()
        self._latest: StatsSnapshot = self._waiting
        self._rows: list[GeneratorRow] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    # -- EngineHandle ---------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._latest.settings

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def commands_in_flight(self) -> int:
        return 0  # the members' own reports show what came of a command

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sse-tui-fleet-watch",
                                            daemon=True)
            self._thread.start()

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return self._latest

    def rows(self) -> list[GeneratorRow]:
        with self._lock:
            return list(self._rows)

    def set_conversations(self, n: int) -> None:
        self._queue("conversations", n)

    def set_delay(self, delay_ms: float) -> None:
        self._queue("delay", delay_ms)

    def set_rate(self, rate: float) -> None:
        self._queue("rate", rate)

    def hold_profile(self) -> None:
        self._queue("hold")

    def release_profile(self) -> None:
        self._queue("release")

    def pause(self) -> None:
        self._queue("pause")

    def resume(self) -> None:
        self._queue("resume")

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> StatsSnapshot:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def restart(self, settings: Settings | None = None) -> None:
        """A fleet is not restarted from here: start the generators again."""

    # -- the thread -----------------------------------------------------------------------

    def _queue(self, op: str, value: float | None = None) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self.watch.queue, op, value)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        publish = asyncio.get_running_loop().create_task(self._publish_views())
        try:
            await self.watch.run(self._stop.is_set)
        finally:
            publish.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publish
            self._publish()
            self._loop = None

    async def _publish_views(self) -> None:
        while True:
            self._publish()
            await asyncio.sleep(self.watch.interval_s)

    def _publish(self) -> None:
        merged = self.state.merged()
        with self._lock:
            self._latest = merged if merged is not None else self._waiting
            self._rows = self.state.rows()
            self.error = self.watch.error
