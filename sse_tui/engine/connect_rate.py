"""--connect-rate: at most R new SSE streams opened per second, with a short burst.

Without it, `-c 10000` asks the adapter for 10 000 connections within a few hundred
milliseconds: its listen backlog (net.core.somaxconn, 4096 by default, often less in a
container) overflows, the kernel drops SYNs, and the client sees connect timeouts and
retransmits one to three seconds later. Those are the generator's doing, not the system's.

A token bucket kept as one "theoretical arrival time" (GCRA): each opening reserves the
next slot at once and sleeps until it is due. Its cost is per stream opened, nothing per
token, and no task runs while nobody waits. Every stream passes it: the first of a new
conversation (closed-loop fills, open-loop arrivals, trace replays, followed ones) and
each reconnect, so that an adapter restart is not answered with a reconnect storm.
"""

from __future__ import annotations

import asyncio

# The burst allowed after a quiet spell: this long's worth of the rate (at least 1 stream).
BURST_S = 0.05


class ConnectRate:
    """A token bucket for stream openings; rate 0 = unlimited."""

    def __init__(self, rate: float) -> None:
        self._tat = 0.0  # when the bucket is empty again, on the loop's clock
        self.rate = 0.0
        self._interval = 0.0
        self._burst_s = 0.0
        self.set_rate(rate)
        self.waiting = 0  # openings asleep until their slot (for "opening N/M")

    def set_rate(self, rate: float) -> None:
        self.rate = max(0.0, float(rate))
        self._interval = 1.0 / self.rate if self.rate > 0 else 0.0
        burst = max(1.0, self.rate * BURST_S)
        self._burst_s = (burst - 1) * self._interval

    def reserve(self, now: float) -> float:
        """Take the next slot; the seconds to wait for it (0: go now)."""
        if self.rate <= 0:
            return 0.0
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        return max(0.0, tat - now - self._burst_s)

    async def acquire(self) -> None:
        """Wait for a slot. A waiter cancelled meanwhile leaves its slot unused: the rate is
        a ceiling, never exceeded."""
        loop = asyncio.get_running_loop()
        wait = self.reserve(loop.time())
        if wait <= 0:
            return
        self.waiting += 1
        try:
            await asyncio.sleep(wait)
        finally:
            self.waiting -= 1
