"""Which load level a capacity search (`sse-tui sweep`) tries next: no I/O, no clock.

Step up geometrically from the first level until one fails the SLO (or the last level is
reached), then bisect between the highest level that passed and the lowest that failed,
until they are close: within `resolution` (10%) of the passing one, or one unit apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESOLUTION = 0.10
# A bound on the levels of one search, whatever the inputs: stepping from 1 to 10^6 by
# a factor of 1.1 is ~145 steps; bisecting a 10x gap to 1% is ~10 more.
MAX_LEVELS = 200


def _three_digits(x: float) -> float:
    return float(f"{x:.3g}")


@dataclass
class CapacitySearch:
    """Feed it each level's verdict (`record`); `next_level()` is None once it is done.

    `whole`: levels are whole numbers (conversations), else positive reals (a rate) kept
    to three significant digits."""

    start: float
    stop: float
    factor: float
    whole: bool = True
    resolution: float = RESOLUTION
    passed: float | None = None  # the highest level that met the SLO
    failed: float | None = None  # the lowest level that did not
    tried: list[float] = field(default_factory=list)
    _next: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.start <= self.stop or self.factor <= 1:
            raise ValueError("need 0 < start <= stop and factor > 1")
        self._next = self.start

    def next_level(self) -> float | None:
        return self._next if len(self.tried) < MAX_LEVELS else None

    def record(self, level: float, passed: bool) -> None:
        self.tried.append(level)
        if passed:
            self.passed = level if self.passed is None else max(self.passed, level)
        else:
            self.failed = level if self.failed is None else min(self.failed, level)
        self._next = self._choose(level)

    @property
    def stepping(self) -> bool:
        """Still stepping up (no level has failed yet)."""
        return self.failed is None

    def _choose(self, level: float) -> float | None:
        if self.failed is None:  # stepping up
            return None if level >= self.stop else min(self.stop, self._up(level))
        if self.passed is None or self.passed >= self.failed:
            return None  # the first level failed (or a pass above a fail: nothing to bisect)
        lo, hi = self.passed, self.failed
        if self.close(lo, hi):
            return None
        mid = (int(lo) + int(hi)) // 2 if self.whole else _three_digits((lo + hi) / 2)
        return mid if lo < mid < hi and mid not in self.tried else None

    def close(self, lo: float, hi: float) -> bool:
        gap = hi - lo
        return (self.whole and gap <= 1) or gap < self.resolution * lo

    def _up(self, level: float) -> float:
        if self.whole:
            return max(int(level) + 1, round(level * self.factor))
        return _three_digits(level * self.factor)


# --- the conclusion -------------------------------------------------------------------------

FOUND = "found"  # a passing level with a failing one just above it
AT_LEAST = "at_least"  # every level up to the last one passed: the capacity is above it
FIRST_FAILS = "first_level_fails"
GENERATOR = "generator_overloaded"  # the generator itself was the bottleneck: no answer
NOT_MEASURED = "not_measured"  # a level could not be measured (Redis, the adapter, ...)
INTERRUPTED = "interrupted"

EXIT_STATUS = {FOUND: 0, AT_LEAST: 0, FIRST_FAILS: 3, GENERATOR: 1, NOT_MEASURED: 1,
               INTERRUPTED: 130}


@dataclass(frozen=True)
class Answer:
    outcome: str
    capacity: float | None  # the highest level that met the SLO, when that is the answer
    first_failing: float | None  # the lowest level that did not
    lower_bound: float | None  # the highest level that met the SLO, whatever the outcome
    message: str

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.outcome]
