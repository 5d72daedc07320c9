"""Benchmark: the engine end to end against the local sandbox at the reference's high load.

    .venv/bin/python bench/bench_engine.py [--conversations 100 --tokens 200 --delay 20
                                            --duration 20s --runs 3 --transport raw]

Prints, per run and as the median over runs: tokens/s, latency percentiles, CPU seconds
per 1000 tokens (the generator's own process, and separately the sandbox's redis-server
and adapter), and the engine's self-lag. The question it answers: at this load, is the
generator the bottleneck? (It must not be: self-lag p99 under 5 ms.)
Bounded: `runs` x `duration` plus a few seconds of start-up and drain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from sse_tui.engine.engine import LoadEngine
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings, parse_duration

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int | None) -> float:
    """utime + stime of another process, from /proc."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_once(args: argparse.Namespace, index: int) -> dict[str, float]:
    with Sandbox() as sb:
        settings = Settings(mode="both", redis=sb.redis_address, sse=sb.sse_url,
                            conversations=args.conversations, tokens=args.tokens,
                            delay_ms=args.delay, duration_s=args.duration,
                            transport=args.transport, run_id=f"bench-{index}")
        children0 = proc_cpu_s(sb.redis_pid) + proc_cpu_s(sb.adapter_pid)
        cpu0, wall0 = time.process_time(), time.monotonic()
        snap = asyncio.run(LoadEngine(settings).run())
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        children = proc_cpu_s(sb.redis_pid) + proc_cpu_s(sb.adapter_pid) - children0
    t = snap.total
    lat = t.latency.summary
    lag = snap.loop_lag_total.summary if snap.loop_lag_total else None
    sched = snap.schedule_lag_total.summary if snap.schedule_lag_total else None
    tokens = max(1, t.tokens_received)
    return {
        "published": t.tokens_published,
        "received": t.tokens_received,
        "missing": t.tokens_missing,
        "received_per_s": t.tokens_received / snap.elapsed_s,
        "lat_p50": lat.p50, "lat_p90": lat.p90, "lat_p99": lat.p99, "lat_p999": lat.p999,
        "lat_max": lat.max,
        "cpu_s_per_1000": cpu / tokens * 1000,
        "sandbox_cpu_s_per_1000": children / tokens * 1000,
        "cpu_percent": 100 * cpu / wall,
        "loop_lag_p50": lag.p50 if lag else float("nan"),
        "loop_lag_p99": lag.p99 if lag else float("nan"),
        "loop_lag_max": lag.max if lag else float("nan"),
        "sched_lag_p99": sched.p99 if sched else float("nan"),
        "warning": snap.health.warning or "",
    }


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
    ("generator CPU s / 1000 tokens", "cpu_s_per_1000", "{:.4f}"),
    ("sandbox CPU s / 1000 tokens", "sandbox_cpu_s_per_1000", "{:.4f}"),
    ("generator CPU %", "cpu_percent", "{:.0f}"),
    ("self-lag (event loop) p50 ms", "loop_lag_p50", "{:.3f}"),
    ("self-lag (event loop) p99 ms", "loop_lag_p99", "{:.3f}"),
    ("self-lag (event loop) max ms", "loop_lag_max", "{:.3f}"),
    ("publish schedule lag p99 ms", "sched_lag_p99", "{:.3f}"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conversations", "-c", type=int, default=100)
    p.add_argument("--tokens", "-t", type=int, default=200)
    p.add_argument("--delay", "-d", type=float, default=20.0)
    p.add_argument("--duration", type=parse_duration, default=20.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--transport", default="raw", choices=("raw", "httpx"))
    args = p.parse_args()
    print(f"bench_engine: -c {args.conversations} -t {args.tokens} -d {args.delay:g} "
          f"--duration {args.duration:g}s x {args.runs} runs, transport {args.transport}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    results = [run_once(args, i) for i in range(args.runs)]
    header = f"{'':32}" + "".join(f"{'run ' + str(i + 1):>11}" for i in range(args.runs))
    print(header + f"{'median':>11}")
    for label, key, fmt in ROWS:
        values = [r[key] for r in results]
        cells = "".join(f"{fmt.format(v):>11}" for v in values)
        print(f"{label:32}{cells}{fmt.format(statistics.median(values)):>11}")
    med_lag = statistics.median(r["loop_lag_p99"] for r in results)
    warnings = [f"run {i + 1}: {r['warning']}" for i, r in enumerate(results) if r["warning"]]
    ok = med_lag < 5.0 and not warnings
    verdict = "not the bottleneck" if ok else "THE GENERATOR IS THE BOTTLENECK"
    print(f"verdict: self-lag p99 {med_lag:.2f} ms (target < 5 ms), "
          f"{len(warnings)} runs with an overload warning: {verdict}")
    for w in warnings:
        print(f"  {w}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
