"""`sse-tui fleet NAME`: watch and steer the generators run with `--fleet NAME`.

The TUI on a terminal, else (or with --no-tui) headless: a progress line every 5 s, then,
once every generator has finished (with --expect N: once N have registered and all of them
finished), the merged result printed and written (--json) exactly as `sse-tui merge` of
their final JSON files, and the exit status: the worst of the generators'; 1 if one was
lost (its last figures are in the merge, marked); 3 if --slo fails on the merged result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from sse_tui import slo as slo_check
from sse_tui.files import WriteError, check_writable, is_stdout
from sse_tui.fleet.monitor import FleetState, FleetWatch
from sse_tui.fleet.wire import FleetKeys
from sse_tui.headless import Lines, end_of_run
from sse_tui.report import format_summary, progress_line
from sse_tui.settings import Settings, UsageError, check_fleet_name, check_outside_world
from sse_tui.slo import SLO

PROGRESS_INTERVAL_S = 5.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"fleet: {message}; see sse-tui fleet --help")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = _Parser(prog="sse-tui fleet",
                description="Watch and steer the generators started with --fleet NAME: their "
                            "merged live figures, one row per generator, fleet-wide keys; "
                            "at the end the merged result, as `sse-tui merge` computes it.")
    p.add_argument("name", metavar="NAME", help="the fleet's name (the generators' --fleet)")
    p.add_argument("-r", "--redis", default="localhost:6379", metavar="ADDR",
                   help="the Redis the generators publish to (host:port or a redis[s]:// URL)")
    p.add_argument("--redis-password-file", default="", metavar="FILE",
                   help="Redis' password, read from FILE (else the URL's, else $REDIS_PASSWORD)")
    p.add_argument("--cacert", default="", metavar="FILE",
                   help="rediss://: the CA certificate(s) to trust")
    p.add_argument("--cert", default="", metavar="FILE",
                   help="rediss://: a client certificate (with --key)")
    p.add_argument("--key", default="", metavar="FILE", help="the --cert's private key")
    p.add_argument("--insecure", action="store_true",
                   help="rediss://: do not verify the server's certificate")
    p.add_argument("--expect", type=int, default=None, metavar="N",
                   help="the fleet is done once N generators have registered and all finished")
    p.add_argument("--no-tui", action="store_true", help="headless, even on a terminal")
    p.add_argument("--json", dest="json_path", metavar="PATH|-",
                   help="write the merged summary as JSON (- for stdout)")
    p.add_argument("--slo", action="append", default=[], metavar="CLAUSES",
                   help="judge the merged result (exit status 3 when a clause fails)")
    args = p.parse_args(argv)
    try:
        check_fleet_name(args.name)
    except UsageError as e:
        raise UsageError(f"fleet: {e}") from None
    if args.expect is not None and args.expect < 1:
        raise UsageError(f"fleet: --expect must be at least 1, got {args.expect}")
    slos: tuple[str, ...] = ()
    for text in args.slo:
        try:
            slos += SLO.from_text(text, "p99<50ms")
        except ValueError as e:
            raise UsageError(f"fleet: invalid value for --slo: {e}") from None
    args.slo = slos
    if args.json_path and args.json_path != "-" and not is_stdout(args.json_path):
        try:
            check_writable(args.json_path)
        except WriteError as e:
            raise UsageError(f"fleet: --json: {e}") from None
    return args


def redis_settings(args: argparse.Namespace) -> Settings:
    """The run settings the Redis client is built from (password, TLS) — the generators'."""
    s = Settings(redis=args.redis, redis_password_file=args.redis_password_file,
                 cacert=args.cacert, cert=args.cert, key=args.key, insecure=args.insecure,
                 run_id=f"fleet-{args.name}")
    try:
        s.validated()
        check_outside_world(s)  # the password and TLS files can be read
    except UsageError as e:
        raise UsageError(f"fleet: {e}") from None
    return s


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    settings = redis_settings(args)
    state = FleetState(args.name, expect=args.expect, slo=args.slo)
    if not args.no_tui and sys.stdin.isatty() and sys.stdout.isatty() and (
            args.json_path != "-"):
        return run_tui(settings, state, args.json_path)
    return run_headless(settings, state, args.json_path)


def finish(state: FleetState, json_path: str | None, out: Lines, err: Lines) -> int:
    """Print and write the merged result; the fleet's exit status."""
    snap = state.merged()
    if snap is None:
        err.print(f"sse-tui fleet: no generator reported in fleet {state.name} "
                  f"({FleetKeys(state.name).members} is empty)")
        return slo_check.EXIT_FATAL
    out.print(f"merged {len(state.members)} summaries of fleet {state.name}")
    out.print(format_summary(snap), end="")
    for member_id in state.lost_ids:
        err.print(f"sse-tui fleet: {member_id} was lost (silent for "
                  f"{state.lost_after_s:g}s): its last figures are in the merge")
    if not end_of_run(snap, json_path, out, err, "sse-tui fleet"):
        return slo_check.EXIT_FATAL
    return state.exit_status(snap)


def run_headless(settings: Settings, state: FleetState, json_path: str | None) -> int:
    out = Lines(sys.stderr if json_path == "-" else sys.stdout)
    err = out if json_path == "-" else Lines(sys.stderr)
    stopped = asyncio.run(_watch(settings, state, out))
    if stopped and not state.done:
        err.print("sse-tui fleet: stopped before the fleet was done; the figures so far:")
    status = finish(state, json_path, out, err)
    return 130 if stopped and not state.done else status


async def _watch(settings: Settings, state: FleetState, out: Lines) -> bool:
    """Watch until the fleet is done or a signal says stop; whether a signal did."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    out.print(f"sse-tui fleet {state.name}: watching {settings.shown('redis')}"
              + (f" for {state.expect} generators" if state.expect else ""))
    watch = FleetWatch(settings, state)

    async def report() -> None:
        seen: set[str] = set()
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            for row in state.rows():
                if row.id not in seen:
                    seen.add(row.id)
                    out.print(f"  + {row.id} ({row.host})")
            for member_id in state.lost_ids:
                if f"lost:{member_id}" not in seen:
                    seen.add(f"lost:{member_id}")
                    out.print(f"  ! {member_id} lost: silent for {state.lost_after_s:g}s")
            snap = state.merged()
            active, lost = len(state.active_ids()), len(state.lost_ids)
            head = (f"fleet {state.name}: {len(state.members)} generators, {active} running"
                    + (f", {lost} lost" if lost else ""))
            out.print(head if snap is None else f"{head} | {progress_line(snap)}")
            if watch.error:
                out.print(f"WARNING: {watch.error}")

    reporter = loop.create_task(report())
    try:
        await watch.run(stop.is_set)
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        for sig in _STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return stop.is_set()


def run_tui(settings: Settings, state: FleetState, json_path: str | None) -> int:
    from sse_tui.fleet.handle import FleetHandle
    from sse_tui.fleet.view import FleetApp
    from sse_tui.tui.logcapture import MemoryLogHandler, captured_logging

    handle = FleetHandle(settings, state)
    logs = MemoryLogHandler()
    app = FleetApp(handle, json_path=json_path, log_handler=logs)
    try:
        with captured_logging(logs):
            app.run()
    finally:
        handle.stop()
        handle.join(10.0)
    warnings = [text for level, text in logs.records if level >= logging.WARNING]
    if warnings:
        with contextlib.suppress(OSError):
            print(f"{len(warnings)} warning(s); the last: {warnings[-1]}", file=sys.stderr)
    return finish(state, json_path, Lines(sys.stdout), Lines(sys.stderr))
