"""Benchmark: the engine end to end against a local redis-server and SSE adapter.

    .venv/bin/python bench/bench_engine.py [-c 100 -t 200 -d 20 --duration 10s --runs 3
                                            --transport raw --adapter auto]

Prints the machine (CPUs, CPU model, kernel, Python, load average), the command, which SSE
adapter served the streams (the Go one when Go and its source are here, else the Python
sandbox adapter), then per run and as the median over runs: tokens/s, latency percentiles,
CPU per token of the generator's own process and, apart, of redis-server and the adapter,
and the generator's self-check: the same 1 s windows and limits as any run's verdict.
The question it answers: at this load, is the generator the bottleneck?
Bounded: runs x duration, plus a few seconds of start-up and drain each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stack import BenchStack, StackError, build_go_adapter, choose_adapter

from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.workers import WorkerPool
from sse_tui.settings import Settings, parse_duration

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_DURATION_S = 600.0
MAX_RUNS = 20


def proc_cpu_s(pid: int | None) -> float:
    """utime + stime of another process, from /proc."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """What a figure needs next to it to mean anything: where it was measured."""
    cpus = len(os.sched_getaffinity(0))
    load1, load5, _ = os.getloadavg()
    return (f"machine: {cpus} CPUs (nproc), {cpu_model()}, Linux {platform.release()}, "
            f"Python {platform.python_version()}; load average {load1:.2f} (1 min), "
            f"{load5:.2f} (5 min) at start")


def run_once(args: argparse.Namespace, go_binary: Path | None, index: int) -> dict[str, Any]:
    with BenchStack(args.adapter_used, go_binary) as stack:
        settings = Settings(mode="both", redis=stack.redis_address, sse=stack.sse_url,
                            conversations=args.conversations, tokens=args.tokens,
                            delay_ms=args.delay, duration_s=args.duration,
                            transport=args.transport, run_id=f"bench-{index}",
                            workers=args.workers)
        redis0, adapter0 = proc_cpu_s(stack.redis_pid), proc_cpu_s(stack.adapter_pid)
        cpu0, wall0 = time.process_time() + children_cpu_s(), time.monotonic()
        if args.workers > 1:
            snap, busy, worst_lag = run_pool(settings, args.duration)
        else:
            snap = asyncio.run(LoadEngine(settings).run())
        # The workers' CPU (start-up included: ~0.3 s each) once they have exited.
        cpu = time.process_time() + children_cpu_s() - cpu0
        wall = time.monotonic() - wall0
        if args.workers <= 1:
            busy, worst_lag = [100 * cpu / wall], None
        redis = proc_cpu_s(stack.redis_pid) - redis0
        adapter = proc_cpu_s(stack.adapter_pid) - adapter0
    t = snap.total
    lat = t.latency.summary
    lag = snap.loop_lag_total.summary if snap.loop_lag_total else None
    h = snap.health
    tokens = max(1, t.tokens_received)
    return {
        "published": t.tokens_published,
        "received": t.tokens_received,
        "missing": t.tokens_missing,
        "received_per_s": t.tokens_received / snap.elapsed_s,
        "lat_p50": lat.p50, "lat_p90": lat.p90, "lat_p99": lat.p99, "lat_p999": lat.p999,
        "lat_max": lat.max,
        "cpu_us_per_token": cpu / tokens * 1e6,
        "redis_us_per_token": redis / tokens * 1e6,
        "adapter_us_per_token": adapter / tokens * 1e6,
        "cpu_percent": 100 * cpu / wall,
        "loop_lag_p50": lag.p50 if lag else float("nan"),
        "loop_lag_p99": lag.p99 if lag else float("nan"),
        "overloaded_s": h.overloaded_s,
        "overloaded_pct": 100 * (h.overloaded_share or 0.0),
        "windows": h.windows,
        "warning": h.warning or "",  # printed under the table
        "busy_min": min(busy),  # the least busy process's CPU %: are all of them working?
        "worst_lag_p99": worst_lag if worst_lag is not None else (
            lag.p99 if lag else float("nan")),
    }


def children_cpu_s() -> float:
    """CPU time of this process's children that have exited (the engine workers)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_pool(settings: Settings, duration_s: float) -> tuple[Any, list[float], float]:
    """The run in `settings.workers` engine processes: its combined final snapshot, each
    worker's CPU % while it ran (sampled from /proc), and the worst worker's loop lag p99."""
    pool = WorkerPool(settings)
    pool.start()
    t0 = time.monotonic()
    pids = pool.pids()
    cpu = [0.0] * len(pids)
    elapsed = 0.0
    try:
        while not pool.finished and time.monotonic() - t0 < duration_s + 60:
            cpu = [proc_cpu_s(pid) or c for pid, c in zip(pids, cpu, strict=True)]
            elapsed = time.monotonic() - t0
            time.sleep(0.2)
        snap = pool.join(60)
        workers = pool.worker_snapshots()
    finally:
        pool.close()
    lags = [w.loop_lag_total.summary.p99 for w in workers if w.loop_lag_total is not None]
    return snap, [100 * c / max(elapsed, 1e-9) for c in cpu], max(lags, default=float("nan"))


ROWS = [
    ("tokens published", "published", "{:.0f}"),
    ("tokens received", "received", "{:.0f}"),
    ("tokens missing", "missing", "{:.0f}"),
    ("received tokens/s", "received_per_s", "{:.0f}"),
    ("latency p50 ms", "lat_p50", "{:.3f}"),
    ("latency p90 ms", "lat_p90", "{:.3f}"),
    ("latency p99 ms", "lat_p99", "{:.3f}"),
    ("latency p99.9 ms", "lat_p999", "{:.3f}"),
    ("latency max ms", "lat_max", "{:.3f}"),
    ("generator CPU µs / token", "cpu_us_per_token", "{:.1f}"),
    ("redis-server CPU µs / token", "redis_us_per_token", "{:.1f}"),
    ("adapter CPU µs / token", "adapter_us_per_token", "{:.1f}"),
    ("generator CPU %", "cpu_percent", "{:.0f}"),
    ("least busy process CPU %", "busy_min", "{:.0f}"),
    ("event-loop lag p50 ms", "loop_lag_p50", "{:.3f}"),
    ("event-loop lag p99 ms", "loop_lag_p99", "{:.3f}"),
    ("worst process lag p99 ms", "worst_lag_p99", "{:.3f}"),
    ("1 s windows judged", "windows", "{:.0f}"),
    ("overloaded s (self-check)", "overloaded_s", "{:.1f}"),
    ("overloaded % of the run", "overloaded_pct", "{:.0f}"),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--conversations", "-c", type=int, default=100)
    p.add_argument("--tokens", "-t", type=int, default=200)
    p.add_argument("--delay", "-d", type=float, default=20.0)
    p.add_argument("--duration", type=parse_duration, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--transport", default="raw", choices=("raw", "httpx"))
    p.add_argument("--workers", type=int, default=1,
                   help="engine processes sharing the load (sse-tui --workers)")
    p.add_argument("--adapter", default="auto", choices=("auto", "go", "python"),
                   help="SSE adapter: auto = Go when it can be built here, else Python")
    p.add_argument("--go-adapter", metavar="PATH",
                   help="the Go adapter's source directory or built binary "
                        "(default: $SSE_TUI_GOADAPTER, else ../shared/goadapter)")
    args = p.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION_S:
        p.error(f"--duration must be > 0 and at most {MAX_DURATION_S:g}s")
    if not 1 <= args.runs <= MAX_RUNS:
        p.error(f"--runs must be 1 to {MAX_RUNS}")
    if args.conversations < 1 or args.tokens < 1 or args.delay < 0:
        p.error("--conversations and --tokens must be >= 1, --delay >= 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        args.adapter_used, src, why = choose_adapter(args.adapter, args.go_adapter)
    except StackError as e:
        print(f"bench_engine: {e}", file=sys.stderr)
        return 2
    print(machine_line())
    print("command: " + shlex.join(["python", sys.argv[0], *argv]))
    print(f"load: -c {args.conversations} -t {args.tokens} -d {args.delay:g} "
          f"--duration {args.duration:g}s x {args.runs} runs, transport {args.transport}, "
          f"mode both, {args.workers} engine process(es), each publishing and reading "
          "its share")
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        go_binary = None
        if src is not None:
            try:
                go_binary, go_version = build_go_adapter(src, Path(tmp))
            except StackError as e:
                print(f"bench_engine: {e}", file=sys.stderr)
                return 2
            print(f"adapter: Go ({src}, {go_version}; {why})")
        else:
            print(f"adapter: Python sandbox adapter (sse_tui.sandbox.adapter; {why})")
        try:
            results = [run_once(args, go_binary, i) for i in range(args.runs)]
        except StackError as e:
            print(f"bench_engine: {e}", file=sys.stderr)
            return 2
    print(f"everything (generator, redis-server, adapter) shares these CPUs; load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    header = f"{'':30}" + "".join(f"{'run ' + str(i + 1):>10}" for i in range(args.runs))
    print(header + f"{'median':>10}")
    for label, key, fmt in ROWS:
        values = [float(r[key]) for r in results]
        cells = "".join(f"{fmt.format(v):>10}" for v in values)
        print(f"{label:30}{cells}{fmt.format(statistics.median(values)):>10}")
    overloaded = [(i + 1, r) for i, r in enumerate(results) if r["overloaded_s"]]
    verdict = ("not the bottleneck: no 1 s window crossed the self-check's limits"
               if not overloaded else
               f"overloaded in {len(overloaded)} of {args.runs} runs: figures from those "
               "windows include the generator's own delay")
    print(f"verdict: {verdict}")
    for i, r in overloaded:
        print(f"  run {i}: {r['warning']}")
    return 0 if not overloaded else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
