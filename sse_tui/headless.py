"""The headless view: for CI, pipes and Kubernetes Jobs.

The engine runs on this thread's loop (there is no UI to keep it apart from). A progress
line every 5 s like the reference generator, then the summary; Ctrl-C, SIGTERM or SIGHUP (a
dropped ssh or `kubectl exec` session) stop the run cleanly (a second one skips the grace
period) and nothing measured is lost. A reader that goes away (`| head -1`) costs only the
lines it would have read: the run goes on, and the JSON is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING, TextIO

from sse_tui import slo
from sse_tui.distributions import shown
from sse_tui.engine import loops
from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.workers import WorkerPool, plan_workers
from sse_tui.files import WriteError, is_stdout
from sse_tui.report import format_summary, new_error_lines, progress_line, write_json
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot

if TYPE_CHECKING:
    from sse_tui.outputs import RunOutputs

PROGRESS_INTERVAL_S = 5.0
WORKERS_START_TIMEOUT_S = 30.0
# The signals that end a run: Ctrl-C, `kill` / Kubernetes, and a terminal that went away.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def describe_run(s: Settings) -> str:
    redis, sse = s.shown("redis"), s.shown("sse")  # any password as ***
    target = {
        "producer": f"publishing to redis {redis}",
        "consumer": f"reading {sse}",
        "both": f"redis {redis} -> {sse}",
    }[s.mode]
    if s.headers and s.mode != "producer":
        target += f" with {', '.join(s.shown('headers'))}"
    length = f"for {s.duration_s:g}s" if s.duration_s > 0 else "for one round"
    stages = f" by stages {','.join(s.stages)}"
    if s.rate > 0:  # open loop: the rate starts them; --conversations caps them
        rate = f"new conversations/s{stages}" if s.stages else f"{s.rate:g} new conversations/s"
        load = f"{rate} ({s.arrival}, at most {s.conversations} live)"
    else:
        load = f"conversations{stages}" if s.stages else f"{s.conversations} conversations"
    if s.trace:  # the trace is the load: its conversations, lengths and gaps
        load, shape = f"conversations of {s.trace} at {s.speed:g}x", ""
    else:
        shape = f" x {shown(s.tokens)} tokens, delay {shown(s.delay_ms)} ms"
        if s.first_token_delay_ms:
            shape += f", first token after {shown(s.first_token_delay_ms)} ms"
    workers = f", {s.workers} engine processes" if s.workers > 1 else ""
    return (f"sse-tui: {s.mode} mode, {load}{shape}, {length}{workers}\n  {target} "
            f"(run id {s.run_id})")


def run_headless(settings: Settings, *, json_path: str | None = None, follow_redis: bool = False,
                 interval_s: float = PROGRESS_INTERVAL_S, outputs: RunOutputs | None = None) -> int:
    # With `--json -` (or /dev/stdout) stdout carries the JSON alone; everything for people
    # goes to stderr.
    if json_path and json_path != "-" and is_stdout(json_path):
        json_path = "-"
    out = Lines(sys.stderr if json_path == "-" else sys.stdout)
    err = out if json_path == "-" else Lines(sys.stderr)
    # --workers 0: the CPUs this process may use; what the run can share (the JSON says).
    settings = settings.with_changes(workers=plan_workers(settings, follow_redis=follow_redis))
    return loops.run(_run(settings, json_path, follow_redis, interval_s, out, err, outputs))


def end_of_run(snap: StatsSnapshot, json_path: str | None, out: Lines, err: Lines,
               who: str) -> bool:
    """After the summary: the failed --slo clauses on stderr (what a CI log shows beside
    the exit status), then the JSON. False when the JSON could not be written."""
    if not snap.fatal_error:
        for line in slo.failure_lines(slo.evaluate(snap)):
            err.print(line)
    if json_path:
        try:
            written = write_json(snap, json_path)
        except WriteError as e:
            err.print(f"{who}: the JSON summary was not written: {e}")
            return False
        if written is not None:
            out.print(f"summary written to {written}")
    return True


class Lines:
    """A stream for people that may go away (`| head -1`, a dropped ssh session): once a write
    to it fails, later lines are dropped instead of ending the run."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.closed = False

    def print(self, text: str, end: str = "\n") -> None:
        if self.closed:
            return
        try:
            self.stream.write(text + end)
            self.stream.flush()
        except (OSError, ValueError):  # EPIPE, EIO (a hung-up terminal), a closed file
            self.closed = True
            self._discard()

    def _discard(self) -> None:
        """Point the stream's descriptor at /dev/null: what is still buffered in it would
        otherwise fail again when Python flushes it at exit ("Exception ignored ...", 120)."""
        with contextlib.suppress(OSError, ValueError):
            fd = self.stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)


async def _run(settings: Settings, json_path: str | None, follow_redis: bool, interval_s: float,
               out: Lines, err: Lines, outputs: RunOutputs | None = None) -> int:
    # One engine on this loop, or with --workers the pool of engine processes (whose
    # snapshots and commands are the same, and cost this loop nothing but a combine).
    engine: LoadEngine | WorkerPool
    if settings.workers > 1:
        engine = WorkerPool(settings, follow_redis=follow_redis)
    else:
        engine = LoadEngine(settings, follow_redis=follow_redis)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            err.print("stopping: waiting for in-flight tokens (press Ctrl-C again to skip)")
            engine.stop()
        else:
            engine.hurry()

    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)

    if isinstance(engine, WorkerPool):
        # The run starts once the workers' engines run (a new interpreter each: ~0.5 s), as
        # the single engine's starts right after this line.
        engine.start()
        await asyncio.to_thread(engine.wait_reported, WORKERS_START_TIMEOUT_S)
    out.print(describe_run(settings if isinstance(engine, WorkerPool) else engine.settings))
    # /metrics and --timeseries (sse_tui.outputs): a snapshot a second, then the final one.
    feeder = None
    if outputs is not None:
        for line in outputs.describe():
            out.print(line)
        feeder = loop.create_task(outputs.feed(engine.snapshot))
        if outputs.fleet is not None:  # fleet commands, handed over to this loop
            from sse_tui.fleet.commands import LoopTarget

            outputs.control(LoopTarget(engine, loop))
    reporter = loop.create_task(_report(engine, interval_s, out))
    try:
        final = await _run_to_end(engine)
    finally:
        for task in (reporter, feeder):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if outputs is not None:
        outputs.update(final)
    # The handlers stay until the JSON is written: a Ctrl-C now (the run is over) must not
    # raise KeyboardInterrupt in the middle of writing it.
    try:
        if final.fatal_error and final.total.tokens_published == 0 and (
                final.total.tokens_received == 0):
            err.print(f"sse-tui: {final.fatal_error}")
        else:
            out.print(format_summary(final), end="")
        # 1 when the run failed to measure, else 3 when an --slo clause failed.
        status = slo.exit_status(final)
        return status if end_of_run(final, json_path, out, err, "sse-tui") else slo.EXIT_FATAL
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _run_to_end(engine: LoadEngine | WorkerPool) -> StatsSnapshot:
    if isinstance(engine, LoadEngine):
        return await engine.run()
    engine.start()
    try:
        return await asyncio.to_thread(engine.join)
    finally:
        engine.close()


async def _report(engine: LoadEngine | WorkerPool, interval_s: float, out: Lines) -> None:
    last: dict[str, str | None] = {}
    error_kinds: set[str] = set()
    while True:
        await asyncio.sleep(interval_s)
        snap = engine.snapshot()
        out.print(progress_line(snap))
        for line in new_error_lines(snap, error_kinds):  # each kind once, with an example
            out.print(line)
        # The generator's own warning, and Redis' (a stall is not the generator's doing).
        for source, warning in (("self", snap.health.warning), ("redis", snap.redis_warning)):
            if warning and warning != last.get(source):
                out.print(f"WARNING: {warning}")
            last[source] = warning
        # Negative latencies: said once when they start (the count in it grows every
        # second); the final summary repeats it with the run's figures.
        if snap.clock_warning and not last.get("clock"):
            out.print(f"WARNING: {snap.clock_warning}")
        last["clock"] = snap.clock_warning
