"""Replaying a trace (--trace): conversations start when the recording says they did.

Like `Arrivals`, from timers on the running loop (no task of its own), on an absolute
schedule: conversation i is due at start + its start offset / speed, whenever the one
before it was served, so a loop that falls behind catches up. With --loop the trace starts
again one trace length later, until the run ends. A pause moves the rest of the schedule on
by the pause's length.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sse_tui.trace import Trace, TracedConversation

# Conversations started in one callback when the loop has fallen behind (see Arrivals).
MAX_BURST = 500


class TraceReplay:
    def __init__(self, trace: Trace, arrive: Callable[[TracedConversation], None], *,
                 speed: float = 1.0, loop: bool = False, max_burst: int = MAX_BURST) -> None:
        self.trace = trace
        self.arrive = arrive
        self.speed = speed
        self.loop = loop
        self.max_burst = max_burst
        self.arrived = 0
        self.passes = 0  # complete passes through the trace
        self._length_s = max(trace.length_s, 0.001) / speed  # one pass; a --loop's period
        self._index = 0  # the next conversation of the trace
        self._base = 0.0  # loop time this pass started
        self._paused_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def finished(self) -> bool:
        """Every conversation of the trace has arrived (never, with --loop)."""
        return not self.loop and self._index >= len(self.trace.conversations)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._base = self._loop.time()
        self._arm()

    def pause(self) -> None:
        if self._loop is not None and self._paused_at is None:
            self._paused_at = self._loop.time()
            self._cancel()

    def resume(self) -> None:
        if self._loop is not None and self._paused_at is not None:
            self._base += self._loop.time() - self._paused_at
            self._paused_at = None
            self._arm()

    def stop(self) -> None:
        self._cancel()
        self._paused_at = self._paused_at or 0.0  # nothing re-arms it

    def _due(self) -> float | None:
        convs = self.trace.conversations
        if self._index >= len(convs):
            if not self.loop:
                return None
            self._index = 0
            self.passes += 1
            self._base += self._length_s
        return self._base + convs[self._index].start_s / self.speed

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._cancel()
        due = self._due()
        if due is not None and self._loop is not None and self._paused_at is None:
            self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        for _ in range(self.max_burst):
            due = self._due()
            if due is None or due > now or self._paused_at is not None:
                break
            conv = self.trace.conversations[self._index]
            self._index += 1
            self.arrived += 1
            self.arrive(conv)
        self._arm()
