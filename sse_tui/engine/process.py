"""`EngineProcess`: the engine in a child process, driven through `EngineHandle`.

A thread of its own is not enough for the engine under a TUI: both threads share one GIL,
and at 200x60 with 100 conversations the UI's work showed up as 100 ms of event-loop lag
(and 10x the latency p99) in the engine. In its own process the engine has its own GIL;
commands and snapshots cross a pipe. Histograms pickle as the non-zero span of their
counts, so a snapshot is a few hundred KB at most, and it is pickled and written by a
sender thread so the engine's loop never blocks on a slow reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from sse_tui.engine.engine import LoadEngine
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot

REPLY_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0
_COMMANDS = frozenset({"set_conversations", "set_delay", "pause", "resume", "stop", "hurry"})


class EngineProcess:
    """Implements `sse_tui.engine.handle.EngineHandle` with the engine in a child process."""

    def __init__(self, settings: Settings, *, follow_redis: bool = False) -> None:
        self._settings = settings.validated()
        self._follow_redis = follow_redis
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()
        self._request_lock = threading.Lock()
        self._reply: queue.Queue[StatsSnapshot] = queue.Queue(maxsize=1)
        self._latest: StatsSnapshot | None = None
        self._final: StatsSnapshot | None = None
        self._done = threading.Event()
        self._log_path: str | None = None
        self._keep_log = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def start(self) -> None:
        if self._proc is not None:
            return
        # spawn, not fork: the parent runs Textual's threads, and forking those is unsafe.
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._done.clear()
        self._final = None
        self._latest = None
        fd, self._log_path = tempfile.mkstemp(prefix="sse-tui-engine-", suffix=".log")
        os.close(fd)
        self._proc = ctx.Process(target=_child_main, name="sse-tui-engine", daemon=True,
                                 args=(child, self._settings, self._follow_redis,
                                       self._log_path))
        with _real_stdio():
            self._proc.start()
        child.close()
        self._conn = parent
        self._reader = threading.Thread(target=self._read_loop, name="sse-tui-engine-reader",
                                        daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                break
            if kind == "snapshot":
                self._latest = payload
                self._settings = payload.settings
                with contextlib.suppress(queue.Full):
                    self._reply.put_nowait(payload)
            elif kind == "final":
                self._final = self._latest = payload
                self._settings = payload.settings
                break
        if self._final is None:
            self._final = self._died()
        if self._proc is not None:
            self._proc.join(5.0)
        self._done.set()
        with contextlib.suppress(queue.Full):
            self._reply.put_nowait(self._final)

    def _died(self) -> StatsSnapshot:
        """The child went away without a final snapshot: keep what we last saw, say why."""
        code = self._proc.exitcode if self._proc is not None else None
        if self._proc is not None and code is None:
            self._proc.join(2.0)
            code = self._proc.exitcode
        base = self._latest or self._empty_snapshot()
        reason = f"the engine process died (exit code {code})"
        if self._log_path and os.path.getsize(self._log_path) > 0:
            reason += f"; its output is in {self._log_path}"
            self._keep_log = True
        return dataclasses.replace(base, state="failed", fatal_error=reason)

    def _empty_snapshot(self) -> StatsSnapshot:
        return LoadEngine(self._settings, follow_redis=self._follow_redis).snapshot()

    # -- commands --------------------------------------------------------------------------

    def _send(self, *message: Any) -> bool:
        conn = self._conn
        if conn is None or self._done.is_set():
            return False
        try:
            with self._send_lock:
                conn.send(message)
        except (OSError, ValueError):
            return False
        return True

    def snapshot(self) -> StatsSnapshot:
        if self._final is not None:
            return self._final
        if self._proc is None:
            return self._empty_snapshot()
        with self._request_lock:
            with contextlib.suppress(queue.Empty):
                self._reply.get_nowait()  # a reply that came too late for its request
            if not self._send("snapshot"):
                return self._final or self._latest or self._empty_snapshot()
            try:
                return self._reply.get(timeout=REPLY_TIMEOUT_S)
            except queue.Empty:
                # A busy child: the last snapshot is better than a frozen UI.
                return self._latest or self._empty_snapshot()

    def set_conversations(self, n: int) -> None:
        if self._send("set_conversations", int(n)):
            self._settings = self._settings.with_changes(conversations=int(n))

    def set_delay(self, delay_ms: float) -> None:
        if self._send("set_delay", float(delay_ms)):
            self._settings = self._settings.with_changes(delay_ms=float(delay_ms))

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        self._send("stop")

    def hurry(self) -> None:
        """Stop without waiting for in-flight tokens."""
        self._send("hurry")

    def join(self, timeout: float | None = None) -> StatsSnapshot:
        if self._proc is None:
            return self.snapshot()
        self._done.wait(timeout)
        return self._final or self.snapshot()

    def restart(self, settings: Settings | None = None) -> None:
        new = (settings or self._settings).validated()
        if new.run_id == self._settings.run_id:
            new = new.for_next_run()
        if self._proc is not None and not self._done.is_set():
            self.stop()
            self._done.wait()
        self.close()
        self._settings = new
        self.start()

    def close(self) -> None:
        """Release the child and the pipe (the run must be over, or it is cut short)."""
        if self._proc is not None and self._proc.is_alive():
            self.hurry()
            self._proc.join(5.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        if self._conn is not None:
            self._conn.close()
        if self._reader is not None:
            self._reader.join(5.0)
        if self._log_path and not self._keep_log:
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)
        self._proc = self._conn = self._reader = None
        self._log_path = None
        self._keep_log = False


# -- the child ------------------------------------------------------------------------------


@contextlib.contextmanager
def _real_stdio() -> Iterator[None]:
    """Textual swaps sys.stdout/stderr for objects without a file descriptor, which
    multiprocessing needs when it starts a process: put the real ones back meanwhile."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _child_main(conn: Connection, settings: Settings, follow_redis: bool,
                log_path: str) -> None:
    # Nothing the child prints may reach the terminal under the app: a warning or a
    # traceback goes to the log file, which the parent names if the child dies.
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    # Ctrl-C belongs to the UI, which asks us to stop; SIGTERM too goes through the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve(conn, settings, follow_redis))
    conn.close()


async def _serve(conn: Connection, settings: Settings, follow_redis: bool) -> None:
    loop = asyncio.get_running_loop()
    engine = LoadEngine(settings, follow_redis=follow_redis)
    outbox: queue.SimpleQueue[tuple[str, StatsSnapshot] | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_loop, args=(conn, outbox), daemon=True)
    sender.start()

    def on_command() -> None:
        try:
            while conn.poll():
                name, *args = conn.recv()
                if name == "snapshot":
                    outbox.put(("snapshot", engine.snapshot()))
                elif name in _COMMANDS:
                    getattr(engine, name)(*args)
        except (EOFError, OSError):
            # The parent is gone: nobody will read the results, so stop at once.
            loop.remove_reader(conn.fileno())
            engine.hurry()

    loop.add_reader(conn.fileno(), on_command)
    try:
        final = await engine.run()
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
    outbox.put(("final", final))
    outbox.put(None)
    await asyncio.to_thread(sender.join, 10.0)


def _send_loop(conn: Connection,
               outbox: queue.SimpleQueue[tuple[str, StatsSnapshot] | None]) -> None:
    """Pickle and write off the engine's loop: a slow reader must not stall measurements."""
    while (item := outbox.get()) is not None:
        try:
            conn.send(item)
        except (OSError, ValueError):
            return
