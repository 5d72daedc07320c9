"""Open-loop arrivals (--rate): new conversations at a rate, whatever the system answers.

A closed loop (N conversations live, a finished one replaced) slows down with the system it
measures: when answers take longer, fewer conversations start. Real users do not wait for
each other, so only an open loop shows a queue building up. `ArrivalProcess` draws the gaps
between arrivals; `Arrivals` calls back at each arrival time on the running loop.

The schedule is absolute: each arrival is due one gap after the previous one was *due*, not
after it was served, so a loop that falls behind catches up (a stall delays arrivals, it
does not thin them out) and the offered rate stays the one asked for.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

# Arrivals started in one callback when the loop has fallen behind; the rest follow on the
# next iteration, so that commands and snapshots are served in between.
MAX_BURST = 500


class ArrivalProcess:
    """The gaps between arrivals at a rate: exponential (a Poisson process: independent
    users; coefficient of variation 1) or fixed (`uniform`: 0)."""

    def __init__(self, kind: str, seed: int = 0) -> None:
        if kind not in ("poisson", "uniform"):
            raise ValueError(f"unknown arrival process {kind!r}")
        self.kind = kind
        self._rng = random.Random(seed or None)  # 0: seeded from the OS, a new one each run

    def gap_s(self, rate: float) -> float:
        if self.kind == "uniform":
            return 1.0 / rate
        return self._rng.expovariate(rate)

    def first_s(self, rate: float) -> float:
        """When the first arrival is due after a start: at once for fixed spacing (as k6's
        constant-arrival-rate does), one random gap for a Poisson process (which has no
        memory: where it starts is not an arrival)."""
        return 0.0 if self.kind == "uniform" else self.gap_s(rate)


class Arrivals:
    """Calls `arrive()` at each arrival of `process` at `rate` per second, from timers on
    the running loop (no task of its own). Started by `start()`, held by `pause()`."""

    def __init__(self, process: ArrivalProcess, rate: float, arrive: Callable[[], None],
                 *, max_burst: int = MAX_BURST) -> None:
        self.process = process
        self.rate = rate
        self.arrive = arrive
        self.max_burst = max_burst
        self.arrived = 0  # arrivals called back so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next: float | None = None  # loop time the next arrival is due; None: held
        self._last: float = 0.0  # loop time the previous one was due

    @property
    def running(self) -> bool:
        return self._next is not None

    def start(self) -> None:
        """Begin (or resume) arriving from now on: time spent paused owes no arrivals."""
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._last = now
        self._next = now + self.process.first_s(self.rate) if self.rate > 0 else now
        self._arm()

    def pause(self) -> None:
        self._cancel()
        self._next = None

    resume = start

    def stop(self) -> None:
        self.pause()

    def set_rate(self, rate: float) -> None:
        """A new rate from now on. A Poisson process has no memory: the next arrival is one
        new gap from now. Fixed spacing keeps its rhythm: one new gap after the last one."""
        self.rate = rate
        if self._next is None or self._loop is None:
            return
        if rate <= 0:
            self._cancel()
            return
        now = self._loop.time()
        if self.process.kind == "uniform":
            self._next = max(now, self._last + self.process.gap_s(rate))
        else:
            self._next = now + self.process.gap_s(rate)
        self._arm()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._cancel()
        if self._next is not None and self.rate > 0 and self._loop is not None:
            self._timer = self._loop.call_at(self._next, self._fire)

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        for _ in range(self.max_burst):
            if self._next is None or self._next > now or self.rate <= 0:
                break
            self._last = self._next
            self._next += self.process.gap_s(self.rate)
            self.arrived += 1
            self.arrive()  # may pause or stop us: checked above on the next turn
        self._arm()  # still behind: due at once, after the loop has served the rest
