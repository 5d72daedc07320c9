"""`sse-tui` / `python -m sse_tui`: parse the flags, pick a view, run."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sse_tui.capacity import check_capacity
from sse_tui.cli_args import CliOptions, parse_args, use_tui
from sse_tui.fdlimit import ensure_descriptors
from sse_tui.settings import Settings, UsageError, check_outside_world

if TYPE_CHECKING:
    from sse_tui.outputs import RunOutputs


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["merge"]:
            from sse_tui.merge import main as merge_main

            return merge_main(args[1:])
        if args[:1] == ["record"]:  # the timing of live traffic, for --trace
            from sse_tui.record import main as record_main

            return record_main(args[1:])
        if args[:1] == ["fleet"]:  # watch and steer the generators run with --fleet
            from sse_tui.fleet.main import main as fleet_main

            return fleet_main(args[1:])
        if args[:1] == ["cluster"]:  # run-loadtest.sh's options, detection, --port-forward
            from sse_tui.cluster import main as cluster_main

            return cluster_main(args[1:])
        options = parse_args(args)
        if options.command == "sweep":  # the run's flags plus its own (parse_args reads both)
            from sse_tui.sweep import run_sweep

            return run_sweep(options)
        return _run(options)
    except UsageError as e:
        print(f"sse-tui: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(options: CliOptions) -> int:
    from sse_tui.sandbox import FaultConfig, run_sandbox
    from sse_tui.sandbox.stack import SandboxError

    try:
        faults = FaultConfig(**options.faults) if options.faults else None
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid --faults: {e}") from None
    if options.command == "sandbox":
        return run_sandbox(options.settings.channel_prefix, faults, tls=options.tls,
                           topology=options.topology)

    settings = options.settings
    check_capacity(settings)  # before the sandbox starts: an absurd -c is exit 2 at once
    check_outside_world(settings)  # --cacert/--key/... files readable, --header $VARs set
    if settings.trace:
        # The trace is read (and checked: exit 2) now; without --duration a replay lasts as
        # long as one pass of it, even with --loop (give --duration to loop for longer).
        from sse_tui.shaping import trace_length_s

        length_s = trace_length_s(settings)
        if "duration_s" not in options.explicit:
            settings = settings.with_changes(duration_s=length_s)
    ensure_descriptors(settings)  # a socket per stream: raise the soft limit, or exit 2
    from sse_tui.outputs import RunOutputs

    # /metrics and --timeseries, before the sandbox: a port in use is exit 2 at once.
    outputs = RunOutputs.open(settings)
    follow_redis = settings.mode == "consumer" and "redis" in options.explicit
    sandbox = None
    if options.demo:
        from sse_tui.sandbox import Sandbox

        try:
            sandbox = Sandbox(faults=faults, channel_prefix=settings.channel_prefix,
                              tls=options.tls, topology=options.topology)
            sandbox.start()
        except SandboxError as e:
            print(f"sse-tui: cannot start the demo sandbox: {e}", file=sys.stderr)
            return 1
        settings = settings.with_changes(redis=sandbox.redis_address, sse=sandbox.sse_url)
        if sandbox.ca_file is not None:  # --tls: trust the certificate the sandbox made
            settings = settings.with_changes(cacert=sandbox.ca_file)
        if sandbox.nats_url is not None and "nats" not in options.explicit:
            settings = settings.with_changes(nats=sandbox.nats_url)  # the per-hop tap
    try:
        if use_tui(options, sys.stdin, sys.stdout):
            return _run_tui(options, settings, follow_redis, outputs)
        from sse_tui.headless import run_headless

        return run_headless(settings, json_path=options.json_path, follow_redis=follow_redis,
                            outputs=outputs)
    finally:
        if sandbox is not None:
            sandbox.stop()
        if outputs is not None:  # after the summary: /metrics lingers, then stops
            outputs.close()


def _run_tui(options: CliOptions, settings: Settings, follow_redis: bool,
             outputs: RunOutputs | None = None) -> int:
    from sse_tui.engine.process import EngineProcess
    from sse_tui.engine.workers import WorkerPool, plan_workers
    from sse_tui.tui.app import run_tui

    # The engine runs in a process of its own: sharing the UI's GIL, a repaint would show
    # up as latency in the engine's measurements (docs/architecture.md). With --workers,
    # in several, each with a share of the load, shown as one (sse_tui.engine.workers).
    settings = settings.with_changes(workers=plan_workers(settings, follow_redis=follow_redis))
    handle: EngineProcess | WorkerPool
    if settings.workers > 1:
        handle = WorkerPool(settings, follow_redis=follow_redis)
    else:
        handle = EngineProcess(settings, follow_redis=follow_redis)
    if outputs is not None:  # /metrics and --timeseries read the handle's latest snapshot
        outputs.follow(handle.snapshot)
        outputs.control(handle)  # --fleet commands: the calls the TUI's keys make
    try:
        return run_tui(handle, config_path=options.config_path, json_path=options.json_path,
                       workers_asked=options.settings.workers)
    finally:
        handle.close()


if __name__ == "__main__":
    sys.exit(main())
