"""`EngineThread`: the engine on its own thread and event loop, driven through `EngineHandle`.

The TUI owns the main thread's loop; a repaint there must not show up as latency in our
measurements, so the engine gets a loop of its own. Commands cross over with
`call_soon_threadsafe`; snapshots are built on the engine's loop and handed back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from sse_tui.engine.engine import LoadEngine
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot

SNAPSHOT_TIMEOUT_S = 5.0


class EngineThread:
    """Implements `sse_tui.engine.api.EngineHandle` around a `LoadEngine`."""

    def __init__(self, settings: Settings, *, follow_redis: bool = False,
                 on_start: Callable[[], None] | None = None) -> None:
        self._settings = settings.validated()
        self._follow_redis = follow_redis
        self._on_start = on_start
        self._engine: LoadEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._final: StatsSnapshot | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        engine = self._engine
        return engine.settings if engine is not None else self._settings

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._final = None
            self._done.clear()
            ready = threading.Event()
            self._thread = threading.Thread(target=self._main, args=(ready,),
                                            name="sse-tui-engine", daemon=True)
            self._thread.start()
        ready.wait(SNAPSHOT_TIMEOUT_S)

    def _main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._engine = LoadEngine(self._settings, follow_redis=self._follow_redis)
            ready.set()
            if self._on_start is not None:
                self._on_start()
            self._final = loop.run_until_complete(self._engine.run())
        finally:
            ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
            self._done.set()

    def _call(self, name: str, *args: Any) -> None:
        loop, engine = self._loop, self._engine
        if loop is None or engine is None or self._done.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between check and call
            loop.call_soon_threadsafe(getattr(engine, name), *args)

    def snapshot(self) -> StatsSnapshot:
        if self._final is not None:
            return self._final
        loop, engine = self._loop, self._engine
        if loop is None or engine is None:
            # Not started yet: an empty snapshot of the settings.
            return LoadEngine(self._settings, follow_redis=self._follow_redis).snapshot()
        fut: concurrent.futures.Future[StatsSnapshot] = concurrent.futures.Future()

        def build() -> None:
            try:
                fut.set_result(engine.snapshot())
            except BaseException as e:
                fut.set_exception(e)

        try:
            loop.call_soon_threadsafe(build)
            return fut.result(SNAPSHOT_TIMEOUT_S)
        except (RuntimeError, concurrent.futures.TimeoutError):
            if self._final is not None:
                return self._final
            raise

    def set_conversations(self, n: int) -> None:
        self._call("set_conversations", n)

    def set_delay(self, delay_ms: float) -> None:
        self._call("set_delay", delay_ms)

    def pause(self) -> None:
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")

    def stop(self) -> None:
        self._call("stop")

    def join(self, timeout: float | None = None) -> StatsSnapshot:
        if self._thread is None:
            return self.snapshot()
        self._done.wait(timeout)
        if self._final is not None:
            return self._final
        return self.snapshot()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def restart(self, settings: Settings | None = None) -> None:
        """A new run with the given (default: current, live changes included) settings."""
        new = (settings or self.settings).validated()
        if self._thread is not None and not self._done.is_set():
            self.stop()
            self._done.wait()
        with self._lock:
            self._settings = new
            self._engine = None
            self._loop = None
            self._thread = None
        self.start()
