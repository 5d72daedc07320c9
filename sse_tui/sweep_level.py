"""One level of a capacity search: a headless LoadEngine run, warmed up, then measured.

The level is what the load axis sets: conversations live at once (closed loop), or, where
Settings has an open-loop `rate`, new conversations per second.

Warm-up, through engine phases: the run starts one step below the level (conversations
L-1) and moves to L after the warm-up with the engine's own live control, which starts a
new phase; only that phase is judged. So the figures judged are all taken at level L, with
L-1 streams already established, and the ramp (connects, the first conversations' first
tokens, the interpreter warming up) falls in the warm-up phase. At L = 1 there is no step
below: the whole run is measured. A conversation that began in the warm-up and ends in the
measured phase counts there (its missing tokens included), as in any run with phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.selfwatch import describe_window, distorted_by, severity
from sse_tui.settings import Settings
from sse_tui.slo import SloResult, evaluate
from sse_tui.snapshot import PhaseStats, SelfWindow, StatsSnapshot

_POLL_S = 0.05
# The generator is the bottleneck at a level when at least this many of the measured
# phase's 1 s windows, and more than this share of its time, were overloaded.
BOTTLENECK_WINDOWS = 2
BOTTLENECK_SHARE = 0.10


@dataclass(frozen=True)
class Axis:
    """What a level sets. `field` is the Settings field; `apply` changes it live."""

    name: str  # conversations | rate
    unit: str  # for tables and messages
    whole: bool  # levels are whole numbers
    field: str

    def value(self, level: float) -> int | float:
        return int(level) if self.whole else float(level)

    def warmup_level(self, level: float) -> int | float | None:
        """The level the warm-up runs at: just below, so that moving up starts a phase.
        None: no warm-up is possible (one conversation has no step below it)."""
        if self.whole:
            return int(level) - 1 if level >= 2 else None
        return level * 0.99  # a rate: 1% lower (a phase needs a change)

    def apply(self, engine: LoadEngine, level: float) -> bool:
        """Set the level on a running engine (a new phase). False if it cannot."""
        setter: Callable[[Any], None] | None = getattr(engine, f"set_{self.field}", None)
        if setter is None:
            return False
        setter(self.value(level))
        return True

    def number(self, level: float) -> str:
        """`12`, `2000000`, `7.5`: as typed (`:g` would write 2e+06)."""
        v = self.value(level)
        return str(v) if isinstance(v, int) else f"{v:.10g}"

    def text(self, level: float) -> str:
        return f"{self.number(level)} {self.unit}"


CONVERSATIONS = Axis("conversations", "conversations", True, "conversations")
# The open-loop axis (--rate): new conversations per second, --conversations the cap.
RATE = Axis("rate", "conversations/s", False, "rate")


@dataclass(frozen=True)
class SelfCheck:
    """The generator's own verdict over the measured phase, from the engine's 1 s windows
    that overlapped it, each judged with the engine's limits (sse_tui.engine.selfwatch).

    `overloaded` (the generator is the bottleneck at this level): at least
    BOTTLENECK_WINDOWS overloaded windows, over BOTTLENECK_SHARE of the measured time.
    Fewer is `disturbed`: a second or so lost, often to something else on the machine,
    which can only have made the level's figures worse (a late token, a token published
    late), never better."""

    judged_s: float
    overloaded_s: float
    overloaded: bool
    disturbed: bool = False
    distorted: tuple[str, ...] = ()
    worst: str = ""  # the worst overloaded window, described

    @classmethod
    def of(cls, windows: list[SelfWindow], phase: int, delay_ms: float) -> SelfCheck:
        mine = [w for w in windows if phase in w.phases]
        bad = [w for w in mine if w.overloaded]
        judged_s = sum(w.length_s for w in mine)
        overloaded_s = sum(w.length_s for w in bad)
        bottleneck = (len(bad) >= BOTTLENECK_WINDOWS
                      and overloaded_s > BOTTLENECK_SHARE * judged_s)
        worst = max(bad, key=lambda w: severity(w, delay_ms), default=None)
        return cls(
            judged_s=round(judged_s, 3), overloaded_s=round(overloaded_s, 3),
            overloaded=bottleneck, disturbed=bool(bad) and not bottleneck,
            distorted=distorted_by(r for w in bad for r in w.reasons),
            worst=describe_window(worst) if worst is not None else "")

    def text(self) -> str:
        if self.overloaded:
            return f"OVERLOADED {self.overloaded_s:.0f}/{self.judged_s:.0f}s"
        if self.disturbed:
            return f"ok, {self.overloaded_s:.0f}s overloaded"
        return "ok" if self.judged_s else "no verdict"

    def to_dict(self) -> dict[str, Any]:
        return {"overloaded": self.overloaded, "disturbed": self.disturbed,
                "judged_s": self.judged_s, "overloaded_s": self.overloaded_s,
                "distorted": list(self.distorted), "worst_window": self.worst or None}


PASS, FAIL, OVERLOADED, NOT_MEASURED = "pass", "fail", "generator overloaded", "not measured"


@dataclass(frozen=True)
class LevelResult:
    order: int  # 1-based, in the order tried
    level: float
    axis: Axis
    settings: Settings  # as run: the level, its duration (warm-up + step), its run id
    warmup_s: float  # how long the warm-up phase ran (0: none)
    warmup_level: float | None
    measured: PhaseStats | None  # the measured phase; its elapsed_s is its publishing time
    slo: tuple[SloResult, ...]
    self_check: SelfCheck | None
    fatal_error: str | None = None
    notes: tuple[str, ...] = ()
    interrupted: bool = False

    @property
    def verdict(self) -> str:
        if self.fatal_error or self.measured is None or self.interrupted:
            return NOT_MEASURED
        if self.self_check is not None and self.self_check.overloaded:
            return OVERLOADED  # whatever the SLO says: the figures are the generator's
        return PASS if self.slo_met else FAIL

    @property
    def slo_met(self) -> bool:
        """Every clause held, and (open loop) the rate was delivered: an arrival dropped
        because --conversations were live means they piled up, whatever the figures say."""
        return all(r.passed for r in self.slo) and not self.arrivals_dropped

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    @property
    def arrivals_dropped(self) -> int:
        """Open loop: arrivals that found --conversations live and never started."""
        return self.measured.arrivals_dropped if self.measured is not None else 0

    @property
    def failed_clauses(self) -> list[SloResult]:
        return [r for r in self.slo if not r.passed]


async def run_level(base: Settings, axis: Axis, level: float, order: int, *,
                    warmup_s: float, step_s: float,
                    started: Callable[[LoadEngine], None] = lambda engine: None,
                    interrupted: Callable[[], bool] = lambda: False) -> LevelResult:
    """Run one level: warm-up (when possible), then `step_s` measured, then the usual drain.

    `started` gets the engine as soon as it exists (for a signal handler to stop it);
    `interrupted` says afterwards whether it was stopped before its time."""
    live_change = hasattr(LoadEngine, f"set_{axis.field}")  # else no phase to move to
    below = axis.warmup_level(level) if warmup_s > 0 and live_change else None
    warm = warmup_s if below is not None else 0.0
    settings = base.with_changes(**{axis.field: axis.value(below if below is not None
                                                           else level)},
                                 duration_s=warm + step_s, run_id=f"{base.run_id}-{order}")
    engine = LoadEngine(settings)
    started(engine)
    measured_index: list[int] = [] if warm else [0]

    async def move_up() -> None:
        while engine.state in ("starting", "running", "paused") and (
                engine.state == "starting" or engine.elapsed_s() < warm):
            await asyncio.sleep(_POLL_S)
        if engine.state == "running" and axis.apply(engine, level):
            measured_index.append(engine.phase.index)

    mover = asyncio.get_running_loop().create_task(move_up(), name="sweep-warmup")
    try:
        final = await engine.run()
    finally:
        mover.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mover
    return judge_level(final, engine, base, axis, level, order, settings, warm, below,
                       measured_index[0] if measured_index else None, interrupted())


def judge_level(final: StatsSnapshot, engine: LoadEngine, base: Settings, axis: Axis,
                level: float, order: int, settings: Settings, warm: float,
                below: float | None, index: int | None, interrupted: bool) -> LevelResult:
    notes = list(final.notes)
    if final.redis_warning:
        notes.append(final.redis_warning)
    phase = next((p for p in final.phases if p.index == index), None) if index is not None \
        else None
    if phase is None:
        return LevelResult(order, level, axis, settings, warm, below, None, (), None,
                           final.fatal_error or (None if interrupted else
                                                 "the run ended before the level was reached"),
                           tuple(notes), interrupted=interrupted)
    # Its publishing time: from its start to the end of the duration (the drain's in-flight
    # tokens count, its time does not), so that received/s is the rate at this level.
    held = max(0.0, min(phase.elapsed_s, settings.duration_s - phase.started_s))
    measured = dataclasses.replace(phase, elapsed_s=held)
    # The SLO is judged on the measured phase alone, the settings at the level.
    judged = dataclasses.replace(final, total=measured,
                                 settings=final.settings.with_changes(slo=base.slo))
    check = SelfCheck.of(engine.selfwatch.windows, phase.index, settings.delay_ms)
    return LevelResult(order, level, axis, settings, warm, below, measured,
                       tuple(evaluate(judged)), check, final.fatal_error, tuple(notes),
                       interrupted=interrupted)
