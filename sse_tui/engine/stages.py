"""A load profile (--stages 10:30s,50:1m,100:2m): a target per stage, one phase each.

A stage's target (conversations live at once, or with --rate arrivals per second) is set at
the start of the stage and held until its end: a step, not a ramp, so that each phase is one
load level and its figures belong to it (k6 ramps linearly within a stage; a ramp is a
series of short stages here, e.g. `10:10s,20:10s,30:10s`).

The profile runs on the run's active clock (time paused does not count; see LoadEngine), so
stage boundaries and the end of the run stay in step. The operator can take over: while the
profile is held, its clock and the run's stand still and the load is the operator's; on
release the current stage's target is set again, as a new phase, and the profile goes on.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Callable, Sequence

from sse_tui.snapshot import ProfilePosition
from sse_tui.values import Stage

# How often the follower looks at the clock: stage boundaries are kept to about this.
TICK_S = 0.05


class LoadProfile:
    """Which stage is in force at a point of the run's active time, and which the engine
    last applied. Plain state: the time is passed in, so the engine and the tests' fake
    engine drive the same object."""

    def __init__(self, stages: Sequence[Stage], *, rate_mode: bool) -> None:
        if not stages:
            raise ValueError("a load profile needs at least one stage")
        self.stages = tuple(stages)
        self.rate_mode = rate_mode
        self._ends = list(itertools.accumulate(s.duration_s for s in self.stages))
        self.applied = 0  # the first stage is in force from the start
        self.held = False

    @property
    def length_s(self) -> float:
        return self._ends[-1]

    def stage_at(self, t_s: float) -> int:
        """The stage (0-based) in force at active time t_s; the last one after the end."""
        return min(bisect.bisect_right(self._ends, t_s), len(self.stages) - 1)

    def due(self, t_s: float) -> Stage | None:
        """The stage to apply now, if the profile has moved on since the last one (and is
        not held); it then counts as applied."""
        i = self.stage_at(t_s)
        if self.held or i == self.applied:
            return None
        self.applied = i
        return self.stages[i]

    def hold(self) -> bool:
        """The operator takes over; False if it was held already."""
        if self.held:
            return False
        self.held = True
        return True

    def release(self) -> bool:
        """Hand the load back to the profile: its current stage is due again."""
        if not self.held:
            return False
        self.held = False
        self.applied = -1
        return True

    def position(self, t_s: float) -> ProfilePosition:
        i = self.stage_at(t_s)
        done = t_s >= self.length_s
        return ProfilePosition(
            stage=i + 1, stages=len(self.stages), target=self.stages[i].target,
            rate_mode=self.rate_mode, left_s=0.0 if done else self._ends[i] - t_s,
            held=self.held, done=done)

    async def follow(self, now_s: Callable[[], float],
                     apply: Callable[[int, Stage], None]) -> None:
        """Apply each stage as the clock `now_s` reaches it, until cancelled."""
        while True:
            t = now_s()
            stage = self.due(t)
            if stage is not None:
                apply(self.applied, stage)
            left = self._ends[self.stage_at(t)] - t  # <= 0 once past the last stage
            await asyncio.sleep(min(TICK_S, max(0.001, left)) if left > 0 else TICK_S)
