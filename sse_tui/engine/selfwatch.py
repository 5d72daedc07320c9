"""The engine watching itself: is the load generator distorting its own figures?

Event-loop lag: a timer asks to wake every `interval`; how late it actually wakes is time
every token received in that moment also waited inside this process, i.e. latency we add.
Schedule lag: how late the publisher sent tokens against their schedule.
CPU: this process's share of one core.

One definition of "overloaded", used by the live warning and the final verdict alike: the run
is cut into 1 s windows, and a window is overloaded when its event-loop lag p99, its publish
schedule lag p99 or its CPU crosses the limits below. Every window's verdict is kept, with the
phases it overlapped; the live warning reads the last LIVE_WINDOWS of them, the final verdict
all of them, so a run that warned live cannot end "not the bottleneck".
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

from sse_tui.engine.stats import LatencyHistogram
from sse_tui.snapshot import Distribution, SelfHealth, SelfWindow

# Above these p99s (one window) the latency figures include a visible share of our own delay.
LOOP_LAG_WARN_MS = 5.0
SCHEDULE_LAG_WARN_SHARE = 0.2  # schedule lag: or this share of the delay, whichever is larger
# A saturated loop can still run short iterations (little timer lag) while data waits in
# socket buffers, so lag alone misses it: at ~19k tokens/s on 2 CPUs, windows at 98% CPU had
# loop lag p99 under 5 ms (docs/benchmarks.md). Hence CPU as a third limit.
CPU_WARN_PERCENT = 90.0
WINDOW_S = 1.0
LIVE_WINDOWS = 10  # the live warning covers the last 10 windows (~10 s)
# The run's last window is judged if at least this long (a shorter one has too few samples).
LAST_WINDOW_MIN_S = 0.5
WINDOWS_KEPT = 86_400  # a day of verdicts; past that only the totals grow

LOOP_LAG = "event-loop lag"
SCHEDULE_LAG = "publish schedule lag"
CPU = "CPU"
# What each kind of overload distorts: loop lag is time a received token waited in this
# process; CPU saturation leaves data waiting in socket buffers and tokens unsent; schedule lag
# is tokens sent later than their schedule (fewer per second, wider gaps).
DISTORTS = {
    LOOP_LAG: ("latency percentiles", "connect and first-token times", "throughput"),
    CPU: ("latency percentiles", "throughput"),
    SCHEDULE_LAG: ("throughput", "inter-token gaps"),
}


def distribution_of(samples_ms: list[float]) -> Distribution:
    """Exact percentiles of a small sample (nearest-rank)."""
    if not samples_ms:
        return Distribution.empty()
    s = sorted(samples_ms)
    n = len(s)

    def rank(p: float) -> float:
        return s[min(n - 1, max(0, -(-int(p * n * 10) // 1000) - 1))]

    return Distribution(n, s[0], sum(s) / n, rank(50), rank(90), rank(99), rank(99.9), s[-1])


def time_p99(lags_ms: list[float], window_ms: float) -> float:
    """The lateness exceeded for 1% of the window's time (not 1% of its samples).

    A tick that woke L late means that for the L before it the loop was busy: a timer due at
    any moment of that span would have waited until its end, so the loop ran more than x late
    for max(0, L - x) of it. The p99 is the x for which those spans add up to 1% of the
    window. Counted over time, one 1.5 s stall is 1.5 s behind (a p99 over ticks would see one
    late tick among a hundred and ignore it), and one 5 ms hiccup in a calm second is not an
    overload (a p99 over ~100 ticks is their maximum). A publisher batch late by L is read the
    same way; batches close together that are all late overlap, which only counts a publisher
    that stays behind sooner as behind."""
    target = 0.01 * window_ms
    s = sorted(lags_ms, reverse=True)
    top = 0.0  # the sum of the k largest lags
    for k, lag in enumerate(s, 1):
        top += lag
        below = s[k] if k < len(s) else 0.0
        if top - k * below >= target:  # for x in [below, lag]: time behind by > x = top - k·x
            return (top - target) / k
    return 0.0


def schedule_limit_ms(delay_ms: float) -> float:
    return max(LOOP_LAG_WARN_MS, SCHEDULE_LAG_WARN_SHARE * delay_ms)


def judge(loop_lag_p99_ms: float, schedule_lag_p99_ms: float | None, cpu_percent: float,
          delay_ms: float) -> tuple[str, ...]:
    """The limits one window crossed (empty: it was fine). The one place they are applied."""
    reasons = []
    if loop_lag_p99_ms > LOOP_LAG_WARN_MS:
        reasons.append(LOOP_LAG)
    if schedule_lag_p99_ms is not None and schedule_lag_p99_ms > schedule_limit_ms(delay_ms):
        reasons.append(SCHEDULE_LAG)
    if cpu_percent > CPU_WARN_PERCENT:
        reasons.append(CPU)
    return tuple(reasons)


def severity(w: SelfWindow, delay_ms: float) -> float:
    """How far past its limits a window went (the worst window is the largest)."""
    sched = (w.schedule_lag_p99_ms or 0.0) / schedule_limit_ms(delay_ms)
    return max(w.loop_lag_p99_ms / LOOP_LAG_WARN_MS, sched, w.cpu_percent / CPU_WARN_PERCENT)


def describe_window(w: SelfWindow) -> str:
    """`event-loop lag p99 9.1 ms, CPU 97%`: the figures of the limits a window crossed."""
    parts = []
    if LOOP_LAG in w.reasons:
        parts.append(f"{LOOP_LAG} p99 {w.loop_lag_p99_ms:.1f} ms")
    if SCHEDULE_LAG in w.reasons and w.schedule_lag_p99_ms is not None:
        parts.append(f"{SCHEDULE_LAG} p99 {w.schedule_lag_p99_ms:.1f} ms")
    if CPU in w.reasons:
        parts.append(f"{CPU} {w.cpu_percent:.0f}%")
    return ", ".join(parts)


def phase_list(phases: Iterable[int]) -> str:
    """`2–3, 5`: phase indices, consecutive ones as a range."""
    runs: list[list[int]] = []
    for p in sorted(set(phases)):
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def distorted_by(reasons: Iterable[str]) -> tuple[str, ...]:
    reasons = set(reasons)
    out: list[str] = []
    for r in (LOOP_LAG, CPU, SCHEDULE_LAG):  # a fixed order, whatever came first
        if r in reasons:
            out.extend(d for d in DISTORTS[r] if d not in out)
    return tuple(out)


def _no_phase() -> tuple[int, float]:
    return 0, 0.0


class SelfWatch:
    """Samples the loop's lag and the process's CPU, and judges each 1 s window.

    `elapsed_s` gives the time into the run (window start times), `phase` the phase in force
    and its delay (which phases a window overlapped; the schedule-lag limit)."""

    def __init__(self, interval_s: float = 0.01, window_s: float = 10.0, *,
                 elapsed_s: Callable[[], float] | None = None,
                 phase: Callable[[], tuple[int, float]] = _no_phase) -> None:
        self.interval_s = interval_s
        self._loop_lag_recent: deque[float] = deque(maxlen=int(window_s / interval_s))
        self._sched_lag_recent: deque[float] = deque(maxlen=4000)
        self.loop_lag_total = LatencyHistogram()
        self.schedule_lag_total = LatencyHistogram()
        self._elapsed_s = elapsed_s or time.monotonic
        self._phase = phase
        self._cpu_percent = 0.0
        self._task: asyncio.Task[None] | None = None
        self._tick_cpu = 0.0  # process time at the last tick
        # The open window.
        self._win_start = 0.0  # monotonic
        self._win_t_s = 0.0  # into the run
        self._win_cpu = 0.0
        self._win_phase = 0
        self._win_loop: list[float] = []
        self._win_sched: list[float] = []
        # Every closed window's verdict, and the run's totals.
        self.windows: list[SelfWindow] = []
        self._recent: deque[SelfWindow] = deque(maxlen=LIVE_WINDOWS)
        self._judged = 0
        self._judged_s = 0.0
        self._overloaded = 0
        self._overloaded_s = 0.0
        self._overloaded_phases: set[int] = set()
        self._reasons: set[str] = set()
        self._worst: tuple[float, SelfWindow] | None = None

    def start(self) -> None:
        self._tick_cpu = time.process_time()
        self._open_window(time.monotonic(), self._tick_cpu)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="selfwatch")

    async def stop(self) -> None:
        """Stop sampling; the last, partial window is judged if long enough to mean anything."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            now = time.monotonic()
            if now - self._win_start >= LAST_WINDOW_MIN_S and self._win_loop:
                self._close_window(now, time.process_time())

    async def _run(self) -> None:
        interval = self.interval_s
        while True:
            expected = time.monotonic() + interval
            await asyncio.sleep(interval)
            now, cpu = time.monotonic(), time.process_time()
            lag_s = max(0.0, now - expected)
            if (expected - self._win_start >= LAST_WINDOW_MIN_S
                    and now - self._win_start > WINDOW_S and lag_s > LOOP_LAG_WARN_MS / 1000):
                # A stall ran past the window's end: the window closes where the stall began,
                # and the stall gets a window of its own, so that a 1.5 s stall counts as
                # about 1.5 s overloaded, not as that plus the calm second before it.
                # The CPU the stall used (a busy loop) is the stall's: cut at the last tick.
                self._close_window(expected, self._tick_cpu)
            self._tick_cpu = cpu
            self._record_loop_lag(lag_s)
            if now - self._win_start >= WINDOW_S:
                self._close_window(now, cpu)

    def _record_loop_lag(self, lag_s: float) -> None:
        lag_ms = lag_s * 1000.0
        self._loop_lag_recent.append(lag_ms)
        self.loop_lag_total.record(int(lag_s * 1e6))
        self._win_loop.append(lag_ms)

    def record_schedule_lag(self, lag_s: float) -> None:
        """Called by the publisher once per batch with the lateness of the batch's oldest token."""
        self._sched_lag_recent.append(lag_s * 1000.0)
        # The window counts the lateness that arose within it: a batch held up by a stall in
        # the previous window goes out here 1.5 s late, but that stall was judged there.
        # (A publisher falling ever further behind is still late all through every window.)
        in_window_s = time.monotonic() - self._win_start
        self._win_sched.append(min(lag_s, in_window_s) * 1000.0)
        self.schedule_lag_total.record(int(lag_s * 1e6))

    # -- windows ---------------------------------------------------------------------------

    def _open_window(self, now: float, cpu: float) -> None:
        self._win_start = now
        self._win_t_s = self._elapsed_s() - (time.monotonic() - now)
        self._win_cpu = cpu
        self._win_phase = self._phase()[0]
        self._win_loop = []
        self._win_sched = []

    def _close_window(self, now: float, cpu: float) -> None:
        """Judge the window that ends at `now` (monotonic), `cpu` (process time) and open the
        next one from there."""
        length = now - self._win_start
        self._cpu_percent = 100.0 * (cpu - self._win_cpu) / length
        phase, delay_ms = self._phase()
        loop_p99 = time_p99(self._win_loop, length * 1000.0)
        # A batch late by L had the publisher behind for the L before it: the same measure.
        sched_p99 = time_p99(self._win_sched, length * 1000.0) if self._win_sched else None
        window = SelfWindow(
            t_s=round(self._win_t_s, 3), length_s=round(length, 3),
            phases=tuple(range(min(self._win_phase, phase), max(self._win_phase, phase) + 1)),
            loop_lag_p99_ms=round(loop_p99, 3),
            schedule_lag_p99_ms=None if sched_p99 is None else round(sched_p99, 3),
            cpu_percent=round(self._cpu_percent, 1),
            reasons=judge(loop_p99, sched_p99, self._cpu_percent, delay_ms))
        self._add(window, delay_ms)
        self._open_window(now, cpu)

    def _add(self, w: SelfWindow, delay_ms: float) -> None:
        if len(self.windows) < WINDOWS_KEPT:
            self.windows.append(w)
        self._recent.append(w)
        self._judged += 1
        self._judged_s += w.length_s
        if not w.overloaded:
            return
        self._overloaded += 1
        self._overloaded_s += w.length_s
        self._overloaded_phases.update(w.phases)
        self._reasons.update(w.reasons)
        s = severity(w, delay_ms)
        if self._worst is None or s > self._worst[0]:
            self._worst = (s, w)

    # -- the verdict -----------------------------------------------------------------------

    def health(self, *, whole_run: bool = False) -> SelfHealth:
        """Live: the last windows; with whole_run (the final snapshot), every window."""
        if whole_run:
            loop_lag = self.loop_lag_total.freeze(copy=False).summary
            sched_lag = self.schedule_lag_total.freeze(copy=False).summary
        else:
            loop_lag = distribution_of(list(self._loop_lag_recent))
            sched_lag = distribution_of(list(self._sched_lag_recent))
        return SelfHealth(
            loop_lag, sched_lag, self._cpu_percent,
            self._run_warning() if whole_run else self._live_warning(),
            windows=self._judged, judged_s=round(self._judged_s, 3),
            overloaded_windows=self._overloaded, overloaded_s=round(self._overloaded_s, 3),
            overloaded_phases=tuple(sorted(self._overloaded_phases)),
            distorted=distorted_by(self._reasons),
            worst_window=self._worst[1] if self._worst else None)

    def _live_warning(self) -> str | None:
        bad = [w for w in self._recent if w.overloaded]
        if not bad:
            return None
        span = sum(w.length_s for w in self._recent)
        parts = []
        for reason, figure, unit in ((LOOP_LAG, "loop_lag_p99_ms", " ms"),
                                     (SCHEDULE_LAG, "schedule_lag_p99_ms", " ms"),
                                     (CPU, "cpu_percent", "%")):
            values = [getattr(w, figure) for w in bad if reason in w.reasons]
            if values:
                p99 = " p99" if unit == " ms" else ""
                parts.append(f"{reason}{p99} up to {max(values):.{1 if p99 else 0}f}{unit}")
        return (f"generator overloaded {sum(w.length_s for w in bad):.0f} s of the last "
                f"{span:.0f} s ({', '.join(parts)}): may distort "
                + ", ".join(distorted_by(r for w in bad for r in w.reasons))
                + "; lower the load or run more generator processes")

    def _run_warning(self) -> str | None:
        if not self._overloaded or self._worst is None:
            return None
        worst = self._worst[1]
        share = self._overloaded_s / self._judged_s if self._judged_s else 1.0
        return (f"generator overloaded during {100 * share:.0f}% of the run "
                f"({self._overloaded_s:.1f} of {self._judged_s:.1f} s), "
                f"phase{'s' if len(self._overloaded_phases) > 1 else ''} "
                f"{phase_list(self._overloaded_phases)}; worst window "
                f"{worst.t_s:.1f}–{worst.t_s + worst.length_s:.1f} s: {describe_window(worst)}; "
                "may have distorted "
                + ", ".join(distorted_by(self._reasons)))
