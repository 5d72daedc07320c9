"""The headless view: for CI, pipes and Kubernetes Jobs.

The engine runs on this thread's loop (there is no UI to keep it apart from). A progress
line every 5 s like the reference generator, then the summary; Ctrl-C or SIGTERM stop the
run cleanly (a second one skips the grace period) and nothing measured is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TextIO

from sse_tui.engine.engine import LoadEngine
from sse_tui.report import format_summary, progress_line, write_json
from sse_tui.settings import Settings

PROGRESS_INTERVAL_S = 5.0


def describe_run(s: Settings) -> str:
    target = {
        "producer": f"publishing to redis {s.redis}",
        "consumer": f"reading {s.sse}",
        "both": f"redis {s.redis} -> {s.sse}",
    }[s.mode]
    length = f"for {s.duration_s:g}s" if s.duration_s > 0 else "for one round"
    return (f"sse-tui: {s.mode} mode, {s.conversations} conversations x {s.tokens} tokens, "
            f"delay {s.delay_ms:g} ms, {length}\n  {target} (run id {s.run_id})")


def run_headless(settings: Settings, *, json_path: str | None = None, follow_redis: bool = False,
                 interval_s: float = PROGRESS_INTERVAL_S) -> int:
    # With `--json -` stdout carries the JSON alone; everything for people goes to stderr.
    out = sys.stderr if json_path == "-" else sys.stdout
    return asyncio.run(_run(settings, json_path, follow_redis, interval_s, out))


async def _run(settings: Settings, json_path: str | None, follow_redis: bool, interval_s: float,
               out: TextIO) -> int:
    engine = LoadEngine(settings, follow_redis=follow_redis)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            print("stopping: waiting for in-flight tokens (press Ctrl-C again to skip)",
                  file=sys.stderr, flush=True)
            engine.stop()
        else:
            engine.hurry()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)

    print(describe_run(engine.settings), file=out, flush=True)
    reporter = loop.create_task(_report(engine, interval_s, out))
    try:
        final = await engine.run()
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if final.fatal_error and final.total.tokens_published == 0 and final.total.tokens_received == 0:
        print(f"sse-tui: {final.fatal_error}", file=sys.stderr, flush=True)
    else:
        print(format_summary(final), file=out, end="", flush=True)
    if json_path:
        written = write_json(final, json_path)
        if written is not None:
            print(f"summary written to {written}", file=out, flush=True)
    return 1 if final.fatal_error else 0


async def _report(engine: LoadEngine, interval_s: float, out: TextIO) -> None:
    last_warning: str | None = None
    while True:
        await asyncio.sleep(interval_s)
        snap = engine.snapshot()
        print(progress_line(snap), file=out, flush=True)
        warning = snap.health.warning
        if warning and warning != last_warning:
            print(f"WARNING: {warning}", file=out, flush=True)
        last_warning = warning
