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
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stack import BenchStack, StackError, build_go_adapter, choose_adapter

from sse_tui.cpus import usable_cpus
from sse_tui.engine import loops
from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.workers import WorkerPool
from sse_tui.fdlimit import ensure_descriptors
from sse_tui.settings import Settings, UsageError, parse_duration

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_DURATION_S = 600.0
MAX_RUNS = 20
SAMPLE_INTERVAL_S = 0.2  # memory and open streams, and the workers' CPU
WORKER_REPORT_TIMEOUT_S = 30.0  # a worker's start-up: a new interpreter and its imports


def proc_cpu_s(pid: int | None) -> float:
    """utime + stime of another process, from /proc."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _proc_kb(pid: int | None, name: str, key: str) -> int:
    """The `key:` line of /proc/<pid>/<name> in kB (/proc counts 1024 bytes), 0 when the
    process is gone."""
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_kb(pid: int | None) -> int:
    return _proc_kb(pid, "status", "VmRSS:")


def pss_kb(pid: int | None) -> int:
    """Proportional set size: each page shared by k processes (the interpreter, shared
    libraries) counts 1/k in each, so a sum over processes counts it once."""
    return _proc_kb(pid, "smaps_rollup", "Pss:")


@dataclass
class Memory:
    """What the generator processes held while the run went: the highest total RSS and the
    most streams open at once (not necessarily sampled at the same moment), against what the
    processes held before any stream was opened."""

    baseline_kb: int
    peak_kb: int = 0
    peak_open: int = 0
    # This process alone: with workers the coordinator, which combines their snapshots.
    own_peak_kb: int = 0
    pss_peak_kb: int = 0  # the highest PSS summed over the processes

    def sample(self, total_kb: int, open_streams: int, own_kb: int, pss_total_kb: int) -> None:
        self.peak_kb = max(self.peak_kb, total_kb)
        self.pss_peak_kb = max(self.pss_peak_kb, pss_total_kb)
        self.peak_open = max(self.peak_open, open_streams)
        self.own_peak_kb = max(self.own_peak_kb, own_kb)

    def figures(self) -> dict[str, float]:
        grown_kb = max(0, self.peak_kb - self.baseline_kb)
        return {
            "peak_open": self.peak_open,
            "rss_peak_mb": self.peak_kb / 1024,
            "rss_baseline_mb": self.baseline_kb / 1024,
            "rss_own_peak_mb": self.own_peak_kb / 1024,
            "pss_peak_mb": self.pss_peak_kb / 1024,
            "rss_per_conn_kb": grown_kb / self.peak_open if self.peak_open else float("nan"),
        }


def open_streams(engine: LoadEngine) -> int:
    """Streams the in-process engine has open now: opened minus closed over its phases
    (a stream opened in one phase may close in the next). Read from the sampling thread
    while the loop increments them: each int read is atomic, the sum may be off by the few
    streams that changed in between."""
    phases = list(engine._phases)  # the benchmark reads them, never writes
    return sum(p.connections_opened - p.connections_closed for p in phases)


def sample_every(interval_s: float, sample: Callable[[], None]) -> Callable[[], None]:
    """Call `sample` every `interval_s` on a thread (so that a busy event loop does not delay
    it) until the returned stop function is called; stop takes one last sample."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            sample()

    thread = threading.Thread(target=loop, daemon=True, name="bench-memory")
    thread.start()

    def stop_and_join() -> None:
        stop.set()
        thread.join(5.0)
        sample()

    return stop_and_join


def run_in_process(settings: Settings, baseline_kb: int) -> tuple[Any, Memory]:
    """The run in this process, its memory sampled from a thread meanwhile."""
    engine = LoadEngine(settings)
    memory = Memory(baseline_kb)
    me = os.getpid()

    def sample() -> None:
        own = rss_kb(me)
        memory.sample(own, open_streams(engine), own, pss_kb(me))

    stop = sample_every(SAMPLE_INTERVAL_S, sample)
    try:
        snap = loops.run(engine.run())
    finally:
        stop()
    return snap, memory


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


def run_once(args: argparse.Namespace, go_binary: Path | None, index: int,
             workers: int) -> dict[str, Any]:
    # This process before the run (Python, imports, and what earlier runs left): what the
    # run's memory grows from.
    baseline_kb = rss_kb(os.getpid())
    with BenchStack(args.adapter_used, go_binary) as stack:
        settings = Settings(mode="both", redis=stack.redis_address, sse=stack.sse_url,
                            conversations=args.conversations, tokens=args.tokens,
                            delay_ms=args.delay, duration_s=args.duration,
                            transport=args.transport, run_id=f"bench-{index}",
                            workers=workers)
        # A socket per stream: raise the soft descriptor limit as the CLI does (the
        # workers inherit it), or fail up front rather than with EMFILE mid-run.
        ensure_descriptors(settings)
        redis0, adapter0 = proc_cpu_s(stack.redis_pid), proc_cpu_s(stack.adapter_pid)
        cpu0, wall0 = time.process_time() + children_cpu_s(), time.monotonic()
        worst_lag: float | None
        startup_cpu = 0.0
        if workers > 1:
            snap, busy, worst_lag, memory, startup_cpu = run_pool(settings, args.duration,
                                                                  baseline_kb)
        else:
            snap, memory = run_in_process(settings, baseline_kb)
        # The workers' CPU once they have exited, net of their start-up.
        cpu = time.process_time() + children_cpu_s() - cpu0 - startup_cpu
        wall = time.monotonic() - wall0
        if workers <= 1:
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
        **memory.figures(),
    }


def children_cpu_s() -> float:
    """CPU time of this process's children that have exited (the engine workers)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_pool(settings: Settings, duration_s: float,
             baseline_kb: int) -> tuple[Any, list[float], float, Memory, float]:
    """The run in `settings.workers` engine processes: its combined final snapshot, each
    worker's CPU % while it ran (sampled from /proc), the worst worker's loop lag p99, the
    memory of the workers plus this coordinator, and the workers' CPU before their run."""
    pool = WorkerPool(settings)
    pool.start()
    t0 = time.monotonic()
    pids = pool.pids()
    # Each worker's baseline: its RSS once its engine runs (its first report), before its
    # streams open: a new interpreter with its imports, like this process's own baseline.
    pool.wait_reported(WORKER_REPORT_TIMEOUT_S)
    memory = Memory(baseline_kb + sum(rss_kb(pid) for pid in pids))
    # Their start-up (a new interpreter and its imports, ~0.3 s of CPU each): not the run's
    # cost, as this process's own imports are not either.
    startup_cpu = sum(proc_cpu_s(pid) for pid in pids)
    me = os.getpid()
    cpu = [0.0] * len(pids)
    elapsed = 0.0
    try:
        while not pool.finished and time.monotonic() - t0 < duration_s + 60:
            cpu = [proc_cpu_s(pid) or c for pid, c in zip(pids, cpu, strict=True)]
            total = pool.snapshot().total  # combined as the workers report (every 0.25 s)
            own = rss_kb(me)
            memory.sample(own + sum(rss_kb(pid) for pid in pids),
                          total.connections_opened - total.connections_closed, own,
                          pss_kb(me) + sum(pss_kb(pid) for pid in pids))
            elapsed = time.monotonic() - t0
            time.sleep(SAMPLE_INTERVAL_S)
        snap = pool.join(60)
        workers = pool.worker_snapshots()
    finally:
        pool.close()
    lags = [w.loop_lag_total.summary.p99 for w in workers if w.loop_lag_total is not None]
    return (snap, [100 * c / max(elapsed, 1e-9) for c in cpu],
            max(lags, default=float("nan")), memory, startup_cpu)


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
    ("peak open connections", "peak_open", "{:.0f}"),
    ("generator RSS peak MB", "rss_peak_mb", "{:.1f}"),
    ("generator RSS baseline MB", "rss_baseline_mb", "{:.1f}"),
    ("this process RSS peak MB", "rss_own_peak_mb", "{:.1f}"),
    ("generator PSS peak MB", "pss_peak_mb", "{:.1f}"),
    ("RSS per open connection KB", "rss_per_conn_kb", "{:.1f}"),
]
MEMORY_NOTE = (
    "memory: VmRSS from /proc (MB = 1024 kB), sampled every {interval:g} s with the open "
    "streams (opened - closed); RSS peak = highest sum over the generator processes ({who}), "
    "this process's apart; "
    "baseline = {baseline}; per open connection = (RSS peak - baseline) / peak open "
    "connections (the two peaks need not coincide); PSS = the same sum of proportional set "
    "sizes, where a page the processes share (interpreter, libraries) counts once")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--conversations", "-c", type=int, default=100)
    p.add_argument("--tokens", "-t", type=int, default=200)
    p.add_argument("--delay", "-d", type=float, default=20.0)
    p.add_argument("--duration", type=parse_duration, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--transport", default="raw", choices=("raw", "httpx"))
    p.add_argument("--workers", type=worker_counts, default=[1], metavar="N[,N...]",
                   help="engine processes sharing the load (sse-tui --workers); several, "
                        "e.g. 1,all (all = the CPUs this process may use), run each in turn "
                        "and add a table comparing their medians")
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


def engine_loop_name() -> str:
    """The event loop the engine runs on here (sse_tui.engine.loops: uvloop if installed)."""
    loop = loops.new_loop()
    try:
        return loops.loop_name(loop)
    finally:
        loop.close()


def worker_counts(text: str) -> list[int]:
    """`1`, `2` or `1,all`: the worker counts to run (all = usable CPUs, as sse-tui's 0)."""
    counts = []
    for part in text.split(","):
        part = part.strip().lower()
        n = usable_cpus() if part in ("all", "0") else int(part) if part.isdigit() else -1
        if n < 1:
            raise argparse.ArgumentTypeError(f"not a worker count: {part!r} (N or all)")
        if n not in counts:
            counts.append(n)
    return counts


def memory_note(workers: int) -> str:
    """How the memory rows are computed, printed under the table."""
    if workers > 1:
        who = f"the {workers} workers and this coordinator"
        baseline = ("this process before the run (Python + imports + what earlier runs "
                    "left) plus each worker's RSS at its first report, before its streams "
                    "open")
    else:
        who = "this process, the engine runs in it"
        baseline = "this process before the run (Python + imports + what earlier runs left)"
    return MEMORY_NOTE.format(interval=SAMPLE_INTERVAL_S, who=who, baseline=baseline)


# The rows of the comparison table, when several worker counts ran (their medians).
COMPARED = ("received_per_s", "cpu_us_per_token", "rss_per_conn_kb", "rss_peak_mb",
            "pss_peak_mb", "lat_p50",
            "lat_p99", "worst_lag_p99", "busy_min", "overloaded_pct", "missing")


def print_table(results: list[dict[str, Any]], workers: int) -> None:
    header = f"{'':30}" + "".join(f"{'run ' + str(i + 1):>10}" for i in range(len(results)))
    print(header + f"{'median':>10}")
    for label, key, fmt in ROWS:
        values = [float(r[key]) for r in results]
        cells = "".join(f"{fmt.format(v):>10}" for v in values)
        print(f"{label:30}{cells}{fmt.format(statistics.median(values)):>10}")
    print(memory_note(workers))


def print_comparison(by_count: dict[int, list[dict[str, Any]]]) -> None:
    print("medians by worker count:")
    print(f"{'':30}" + "".join(f"{str(n) + ' worker' + ('s' if n > 1 else ''):>12}"
                               for n in by_count))
    for label, key, fmt in ROWS:
        if key in COMPARED:
            cells = "".join(
                f"{fmt.format(statistics.median(float(r[key]) for r in results)):>12}"
                for results in by_count.values())
            print(f"{label:30}{cells}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        args.adapter_used, src, why = choose_adapter(args.adapter, args.go_adapter)
    except StackError as e:
        print(f"bench_engine: {e}", file=sys.stderr)
        return 2
    counts: list[int] = args.workers
    print(machine_line())
    print("command: " + shlex.join(["python", sys.argv[0], *argv]))
    print(f"load: -c {args.conversations} -t {args.tokens} -d {args.delay:g} "
          f"--duration {args.duration:g}s x {args.runs} runs, transport {args.transport}, "
          f"mode both, {' then '.join(map(str, counts))} engine process(es), each publishing "
          f"and reading its share; event loop: {engine_loop_name()}")
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
        by_count: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
        try:
            # Interleaved (1, N, 1, N, ...): a noisy minute then weighs on both alike.
            for i in range(args.runs):
                for n in counts:
                    by_count[n].append(run_once(args, go_binary, i, n))
        except (StackError, UsageError) as e:
            print(f"bench_engine: {e}", file=sys.stderr)
            return 2
    print(f"everything (generator, redis-server, adapter) shares these CPUs; load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    for n, results in by_count.items():
        if len(counts) > 1:
            print(f"--- {n} worker{'s' if n > 1 else ''}")
        print_table(results, n)
    if len(counts) > 1:
        print_comparison(by_count)
    overloaded = [(n, i + 1, r) for n, results in by_count.items()
                  for i, r in enumerate(results) if r["overloaded_s"]]
    total = args.runs * len(counts)
    verdict = ("not the bottleneck: no 1 s window crossed the self-check's limits"
               if not overloaded else
               f"overloaded in {len(overloaded)} of {total} runs: figures from those "
               "windows include the generator's own delay")
    print(f"verdict: {verdict}")
    for n, i, r in overloaded:
        who = f"{n} workers, run {i}" if len(counts) > 1 else f"run {i}"
        print(f"  {who}: {r['warning']}")
    return 0 if not overloaded else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
