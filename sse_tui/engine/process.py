"""`EngineProcess`: the engine in a child process, driven through `EngineHandle`.

A thread of its own is not enough for the engine under a TUI: both threads share one GIL,
so the UI's repaints show up as event-loop lag, and so as latency, in the engine's figures.
In its own process the engine has its own GIL.

Nothing here makes the caller wait on the child, so a UI over it stays live however busy
(or stopped) the engine is:

- The child pushes a snapshot every `push_interval_s` (and right after a batch of
  commands) from its own loop. It builds the snapshot on the loop but pickles and writes it
  in a sender thread, through a one-slot mailbox that keeps only the newest unsent one: a
  slow parent costs the child dropped snapshots, never a queue.
- A reader thread in the parent keeps the latest; `snapshot()` returns it at once.
- Commands (`sse_tui.engine.messages`) are fire-and-forget, written by a thread of the
  parent's own so a full pipe cannot block the caller either. Their effect shows in the next
  snapshot; `commands_in_flight` says how many the latest snapshot does not show yet.
- `settings` is the latest snapshot's: the engine's one copy, none kept on this side.

Histograms pickle in HdrHistogram's compressed encoding (sse_tui/hdr.py), and ended
phases as their summaries alone, so a snapshot stays small however long the run.
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
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from sse_tui.engine import loops
from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.messages import (
    Command,
    Final,
    HoldProfile,
    Hurry,
    Pause,
    ReleaseProfile,
    Report,
    Resume,
    SetConversations,
    SetDelay,
    SetRate,
    Snapshot,
    Stop,
    apply,
)
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot

PUSH_INTERVAL_S = 0.25
# After a command the child pushes early, this long after it: a burst of commands (a key
# held down) costs one snapshot, not one each.
COMMAND_PUSH_DELAY_S = 0.02
# Bounds on waiting for a child that is going away anyway (close, a dead child).
EXIT_TIMEOUT_S = 5.0
SENDER_DRAIN_S = 10.0
START_TOGETHER_TIMEOUT_S = 60.0


class EngineProcess:
    """Implements `sse_tui.engine.handle.EngineHandle` with the engine in a child process."""

    def __init__(self, settings: Settings, *, follow_redis: bool = False,
                 push_interval_s: float = PUSH_INTERVAL_S, worker: tuple[int, int] = (0, 1),
                 on_report: Callable[[], None] | None = None,
                 start_together: Any = None) -> None:
        # What the next (or current) run starts with; once the child reports, its
        # snapshots say what is in force.
        self._start_settings = settings.validated()
        self._follow_redis = follow_redis
        self._push_interval_s = push_interval_s
        # (index, count): one of the run's engine processes (sse_tui.engine.workers).
        self._worker = worker
        # Called on the reader thread after each report (the coordinator combines them).
        self._on_report = on_report or _nothing
        # A spawn-context Barrier the run's workers pass once each is up (a new interpreter
        # takes 0.3-1 s, not the same for each): their runs then start together.
        self._start_together = start_together
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._outbox: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        # Written by the reader thread only; each a single reference swap.
        self._latest: Snapshot | None = None
        self._final: StatsSnapshot | None = None
        self._placeholder: StatsSnapshot | None = None
        self._sent = 0
        self._done = threading.Event()
        self._reported = threading.Event()  # the child's first report came (or it ended)
        self._log_path: str | None = None
        self._keep_log = False

    # -- what the engine says ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force as of the latest snapshot (before one: the run's start)."""
        snap = self._final or (self._latest.snapshot if self._latest else None)
        return snap.settings if snap is not None else self._start_settings

    @property
    def started(self) -> bool:
        return self._proc is not None

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (the benchmark reads its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def commands_in_flight(self) -> int:
        """Commands sent whose effect the latest snapshot does not show yet."""
        if self._proc is None or self._final is not None:
            return 0
        latest = self._latest
        return self._sent - (latest.commands_applied if latest else 0)

    def snapshot(self) -> StatsSnapshot:
        """The latest snapshot pushed by the child; never waits for it."""
        if self._final is not None:
            return self._final
        latest = self._latest
        if latest is not None:
            return latest.snapshot
        if self._placeholder is None:  # not started, or the child has not reported yet
            self._placeholder = self._empty_snapshot()
        return self._placeholder

    def _empty_snapshot(self) -> StatsSnapshot:
        index, count = self._worker
        return LoadEngine(self._start_settings, follow_redis=self._follow_redis,
                          worker_index=index, worker_count=count).snapshot()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._proc is not None:
            return
        # spawn, not fork: the parent runs Textual's threads, and forking those is unsafe.
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._done.clear()
        self._reported.clear()
        self._final = self._latest = self._placeholder = None
        self._sent = 0
        self._outbox = queue.SimpleQueue()
        fd, self._log_path = tempfile.mkstemp(prefix="sse-tui-engine-", suffix=".log")
        os.close(fd)
        self._proc = ctx.Process(target=_child_main, name="sse-tui-engine", daemon=True,
                                 args=(child, self._start_settings, self._follow_redis,
                                       self._log_path, self._push_interval_s, self._worker,
                                       self._start_together))
        with _real_stdio():
            self._proc.start()
        child.close()
        self._conn = parent
        self._reader = threading.Thread(target=self._read_loop, name="sse-tui-engine-reader",
                                        daemon=True)
        self._writer = threading.Thread(target=_write_loop, args=(parent, self._outbox),
                                        name="sse-tui-engine-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    def _read_loop(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                report: Report = conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(report, Final):
                self._final = report.snapshot
                break
            self._latest = report
            self._reported.set()
            self._on_report()
        if self._final is None:
            self._final = self._died()
        if self._proc is not None:
            self._proc.join(EXIT_TIMEOUT_S)
        self._done.set()
        self._reported.set()
        self._on_report()

    def _died(self) -> StatsSnapshot:
        """The child went away without a final snapshot: keep what we last saw, say why."""
        code = self._proc.exitcode if self._proc is not None else None
        if self._proc is not None and code is None:
            self._proc.join(2.0)
            code = self._proc.exitcode
        latest = self._latest
        base = latest.snapshot if latest is not None else self._empty_snapshot()
        reason = f"the engine process died (exit code {code})"
        if self._log_path and os.path.getsize(self._log_path) > 0:
            reason += f"; its output is in {self._log_path}"
            self._keep_log = True
        return dataclasses.replace(base, state="failed", fatal_error=reason)

    def wait_reported(self, timeout: float | None = None) -> bool:
        """Wait until the child has sent its first snapshot (its engine is running) or has
        ended; False if neither happened within `timeout`."""
        return self._reported.wait(timeout)

    def join(self, timeout: float | None = None) -> StatsSnapshot:
        if self._proc is None:
            return self.snapshot()
        self._done.wait(timeout)
        return self.snapshot()

    def restart(self, settings: Settings | None = None) -> None:
        current = self.settings
        new = (settings or current).validated()
        if new.run_id == current.run_id:
            new = new.for_next_run()
        if self._proc is not None and not self._done.is_set():
            self.stop()
            self._done.wait()
        self.close()
        self._start_settings = new
        self.start()

    def close(self) -> None:
        """Release the child and the pipe (the run must be over, or it is cut short)."""
        if self._proc is not None and self._proc.is_alive():
            self.hurry()
            self._proc.join(EXIT_TIMEOUT_S)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        self._outbox.put(None)
        if self._writer is not None:
            self._writer.join(EXIT_TIMEOUT_S)
        if self._conn is not None:
            self._conn.close()
        if self._reader is not None:
            self._reader.join(EXIT_TIMEOUT_S)
        if self._log_path and not self._keep_log:
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)
        self._proc = self._conn = self._reader = self._writer = None
        self._log_path = None
        self._keep_log = False

    # -- commands: fire and forget ---------------------------------------------------------

    def _send(self, command: Command) -> None:
        if self._proc is None or self._final is not None or self._done.is_set():
            return  # no run to change: a command after the end has nothing to act on
        self._sent += 1
        self._outbox.put(command)

    def set_conversations(self, n: int) -> None:
        self._send(SetConversations(int(n)))

    def set_delay(self, delay_ms: float) -> None:
        self._send(SetDelay(float(delay_ms)))

    def set_rate(self, rate: float) -> None:
        self._send(SetRate(float(rate)))

    def hold_profile(self) -> None:
        self._send(HoldProfile())

    def release_profile(self) -> None:
        self._send(ReleaseProfile())

    def pause(self) -> None:
        self._send(Pause())

    def resume(self) -> None:
        self._send(Resume())

    def stop(self) -> None:
        self._send(Stop())

    def hurry(self) -> None:
        """Stop without waiting for in-flight tokens."""
        self._send(Hurry())


def _nothing() -> None:
    pass


def _write_loop(conn: Connection, outbox: queue.SimpleQueue[Command | None]) -> None:
    """Write commands off the caller's thread: a stalled child must not block a key press."""
    while (command := outbox.get()) is not None:
        try:
            conn.send(command)
        except (OSError, ValueError):
            return


class NewestOnly:
    """A one-slot mailbox from the engine's loop to the sender thread.

    A snapshot not yet sent is replaced by a newer one (and counted in `dropped`): a
    parent that reads slowly gets fresh figures less often, and the child holds at most
    one. The final report is never replaced.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: Report | None = None
        self.dropped = 0

    def put(self, report: Report) -> None:
        with self._cond:
            if isinstance(self._pending, Final):
                return
            if self._pending is not None:
                self.dropped += 1
            self._pending = report
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Report | None:
        """The pending report, waiting up to `timeout` for one; None if none came."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending is not None, timeout):
                return None
            report, self._pending = self._pending, None
            return report


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
                log_path: str, push_interval_s: float, worker: tuple[int, int],
                start_together: Any = None) -> None:
    # Nothing the child prints may reach the terminal under the app: a warning or a
    # traceback goes to the log file, which the parent names if the child dies.
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    # Ctrl-C belongs to the UI, which asks us to stop; SIGTERM too goes through the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A terminal that hangs up sends SIGHUP to the whole foreground group: the parent
    # (headless) stops the run cleanly; a parent that is gone closes the pipe, which ends us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if start_together is not None:
        with contextlib.suppress(threading.BrokenBarrierError):  # a worker that died
            start_together.wait(START_TOGETHER_TIMEOUT_S)
    loops.run(_serve(conn, settings, follow_redis, push_interval_s, worker))
    conn.close()


async def _serve(conn: Connection, settings: Settings, follow_redis: bool,
                 push_interval_s: float, worker: tuple[int, int] = (0, 1)) -> None:
    loop = asyncio.get_running_loop()
    engine = LoadEngine(settings, follow_redis=follow_redis, worker_index=worker[0],
                        worker_count=worker[1])
    mailbox = NewestOnly()
    sender = threading.Thread(target=_send_loop, args=(conn, mailbox), daemon=True)
    sender.start()
    applied = 0
    early: asyncio.TimerHandle | None = None

    def push() -> None:
        nonlocal early
        early = None
        mailbox.put(Snapshot(engine.snapshot(), applied))

    def on_commands() -> None:
        nonlocal applied, early
        try:
            while conn.poll():
                apply(engine, conn.recv())
                applied += 1
        except (EOFError, OSError):
            # The parent is gone: nobody will read the results, so stop at once.
            loop.remove_reader(conn.fileno())
            engine.hurry()
        if early is None:  # show the effect now rather than at the next tick
            early = loop.call_later(COMMAND_PUSH_DELAY_S, push)

    async def push_periodically() -> None:
        while True:
            push()
            await asyncio.sleep(push_interval_s)

    loop.add_reader(conn.fileno(), on_commands)
    pusher = asyncio.create_task(push_periodically(), name="push-snapshots")
    try:
        final = await engine.run()
    finally:
        pusher.cancel()
        if early is not None:
            early.cancel()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
    mailbox.put(Final(final, applied))
    await asyncio.to_thread(sender.join, SENDER_DRAIN_S)


def _send_loop(conn: Connection, mailbox: NewestOnly) -> None:
    """Pickle and write off the engine's loop: a slow reader must not stall measurements."""
    while True:
        report = mailbox.take()
        if report is None:
            continue
        try:
            conn.send(report)
        except (OSError, ValueError):
            return
        if isinstance(report, Final):
            return
