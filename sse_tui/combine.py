"""One snapshot from the snapshots of a run's engine processes (`--workers`), exactly.

Each worker ran a share of the load; together they are one run, and the views must see it
as one: counters add up, every histogram is added bucket by bucket (percentiles come from
the sum, never averaged), phases are combined by index (every worker begins a phase on
every command, so the indices line up), conversations are listed together. What cannot
be added is said per worker: the self-check's warning names the worker it is about.

The fields are iterated where they can be (`COUNTER_FIELDS`, the `HistogramSnapshot`
fields of `PhaseStats`, the int fields of `StatsSnapshot`), so a new counter, histogram
or count is combined without an edit here.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, islice, zip_longest
from typing import Any, TypeVar

from sse_tui.engine.accounting import DETAIL_CAP
from sse_tui.engine.clock import negative_warning
from sse_tui.engine.engine import FINISHED_KEPT, MAX_LIVE_VIEWS, SPARKLINE_SAMPLES
from sse_tui.ranking import most_interesting, slow_threshold_ms
from sse_tui.settings import Settings
from sse_tui.snapshot import (
    ConversationDetail,
    ConversationView,
    Counters,
    HistogramSnapshot,
    PhaseStats,
    ProfilePosition,
    SelfHealth,
    StatsSnapshot,
    TimelinePoint,
    phase_label,
)

# Settings each worker gets a share of (sse_tui.engine.workers splits them); the run's
# figure is their sum. Integers are split into whole shares, rates evenly.
SHARED_SETTINGS = ("conversations", "rate", "connect_rate")

HISTOGRAM_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(PhaseStats) if f.type == "HistogramSnapshot")
# int fields of StatsSnapshot that are not counts to add up.
_NOT_SUMMED = frozenset({"taken_at_ns", "phase_index"})
_SUMMED_INTS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(StatsSnapshot)
    if f.type == "int" and f.name not in _NOT_SUMMED)

T = TypeVar("T")


def worker_name(index: int) -> str:
    return f"worker {index + 1}"


def add_histograms(parts: Sequence[HistogramSnapshot]) -> HistogramSnapshot:
    """Exact sum; a summary-only part (never from a worker, which keeps its histograms) is
    combined as well as it can be: exact count/sum/min/max, the worst part's percentiles."""
    try:
        return HistogramSnapshot.combined(parts)
    except ValueError:
        full = [h for h in parts if h.count]
        worst = max(full, key=lambda h: h.summary.p99)
        h = HistogramSnapshot(None, sum(p.count for p in full), sum(p.sum_us for p in full),
                              min(p.min_us for p in full), max(p.max_us for p in full))
        h.__dict__["summary"] = dataclasses.replace(
            worst.summary, count=h.count, min=h.min_us / 1000.0, max=h.max_us / 1000.0,
            avg=h.sum_us / h.count / 1000.0)
        return h


def combine_phases(parts: Sequence[PhaseStats]) -> PhaseStats:
    """One phase (or the run total, index -1) from the workers' phases of that index."""
    first = parts[0]
    if len(parts) == 1:
        return first
    counters = Counters()
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for p in parts:
        counters.add(p)
        errors.update(p.errors)
        for kind, example in p.error_examples.items():
            examples.setdefault(kind, example)
    conversations = sum(p.conversations for p in parts)
    rate = _rate_sum(p.rate for p in parts)
    ended = [p.ended_s for p in parts]
    changes: dict[str, Any] = {name: add_histograms([getattr(p, name) for p in parts])
                               for name in HISTOGRAM_FIELDS}
    changes.update(counters.counter_values())
    return dataclasses.replace(
        first, **changes,
        label=first.label if first.index < 0 else phase_label(conversations, first.delay_ms,
                                                                rate),
        started_s=min(p.started_s for p in parts),
        ended_s=None if None in ended else max(e for e in ended if e is not None),
        elapsed_s=max(p.elapsed_s for p in parts),
        conversations=conversations, rate=rate, errors=dict(errors), error_examples=examples)


class PhaseCache:
    """Ended phases combined once: they never change again, and adding their histograms
    over again for every snapshot would cost the views time for nothing."""

    def __init__(self) -> None:
        self._ended: dict[int, PhaseStats] = {}

    def phases(self, parts: Sequence[StatsSnapshot]) -> tuple[PhaseStats, ...]:
        out = []
        for index, same in enumerate(zip_longest(*(p.phases for p in parts))):
            cached = self._ended.get(index)
            if cached is not None:
                out.append(cached)
                continue
            present = [p for p in same if p is not None]
            phase = combine_phases(present)
            if len(present) == len(parts) and phase.ended_s is not None:
                self._ended[index] = phase
            out.append(phase)
        return tuple(out)


def combine(parts: Sequence[StatsSnapshot], *, base: Settings | None = None,
            cache: PhaseCache | None = None) -> StatsSnapshot:
    """The run as one snapshot, from its workers' (in worker order). `base`: the run's
    settings as given (their stages, seed and workers are shown, not the workers' shares)."""
    if len(parts) == 1 and base is None:
        return parts[0]
    first = parts[0]
    total = combine_phases([p.total for p in parts])
    health = combine_health([p.health for p in parts])
    sums = {name: sum(getattr(p, name) for p in parts) for name in _SUMMED_INTS}
    remaining = [p.remaining_s for p in parts]
    details, omitted = combine_details(parts)
    sums["details_omitted"] += omitted
    return dataclasses.replace(
        first, **sums,
        taken_at_ns=max(p.taken_at_ns for p in parts),
        state=combine_state([p.state for p in parts]),
        settings=combine_settings([p.settings for p in parts], base),
        elapsed_s=max(p.elapsed_s for p in parts),
        remaining_s=None if None in remaining else max(r for r in remaining if r is not None),
        phase_index=max(p.phase_index for p in parts),
        phases=(cache or PhaseCache()).phases(parts),
        total=total,
        conversations=combine_views(parts, total),
        health=health,
        timeline=combine_timelines([p.timeline for p in parts],
                                   final=all(p.finished for p in parts)),
        recent_latency_ms=tuple(_interleave([p.recent_latency_ms for p in parts],
                                            SPARKLINE_SAMPLES, newest_last=True)),
        fatal_error=_per_worker([p.fatal_error for p in parts]),
        notes=tuple(dict.fromkeys(chain.from_iterable(p.notes for p in parts))),
        redis_warning=_per_worker([p.redis_warning for p in parts]),
        stream_warning=_per_worker([p.stream_warning for p in parts]),
        clock_warning=negative_warning(total),
        clock=next((p.clock for p in parts if p.clock is not None), None),
        loop_lag_total=_add_optional([p.loop_lag_total for p in parts]),
        schedule_lag_total=_add_optional([p.schedule_lag_total for p in parts]),
        details=details,
        profile=combine_profiles([p.profile for p in parts]),
        conversation_lengths=_add_lengths([p.conversation_lengths for p in parts]),
    )


def combine_settings(parts: Sequence[Settings], base: Settings | None) -> Settings:
    """The first worker's settings (live changes included) with the shared ones summed."""
    changes: dict[str, Any] = {}
    for name in SHARED_SETTINGS:
        values = [getattr(s, name) for s in parts]
        changes[name] = sum(values) if isinstance(values[0], int) else _rate_sum(values)
    if base is not None:
        changes.update(stages=base.stages, seed=base.seed, workers=base.workers)
    return parts[0].with_changes(**changes)


_STATE_ORDER = ("draining", "running", "paused", "starting")


def combine_state(states: Sequence[str]) -> str:
    """Over until every worker is; then failed if any failed. While any runs: the most
    active state of any (one worker done with its round, the others still at it: running)."""
    if all(s in ("finished", "failed") for s in states):
        return "failed" if "failed" in states else "finished"
    return next(s for s in _STATE_ORDER if s in states)


def combine_health(parts: Sequence[SelfHealth]) -> SelfHealth:
    """Each worker judges itself; the run shows the worst one's lag and worst window (the
    one overloaded longest, else the one with the most loop lag), every warning with its
    worker's name, the windows of all (one window: one second of one process), and the
    phases and figures any worker found distorted. CPU: the busiest process's."""
    worst = max(parts, key=lambda h: (h.overloaded_s, _nan_low(h.loop_lag.p99)))
    warnings = [f"{worker_name(i)}: {h.warning}" for i, h in enumerate(parts) if h.warning]
    return dataclasses.replace(
        worst,
        cpu_percent=max(h.cpu_percent for h in parts),
        warning="; ".join(warnings) or None,
        windows=sum(h.windows for h in parts),
        judged_s=sum(h.judged_s for h in parts),
        overloaded_s=sum(h.overloaded_s for h in parts),
        overloaded_windows=sum(h.overloaded_windows for h in parts),
        overloaded_phases=tuple(sorted(set(chain.from_iterable(
            h.overloaded_phases for h in parts)))),
        distorted=tuple(dict.fromkeys(chain.from_iterable(h.distorted for h in parts))))


def combine_views(parts: Sequence[StatsSnapshot], total: PhaseStats
                  ) -> tuple[ConversationView, ...]:
    """Live conversations (the most interesting when there are too many, ordered by number
    as the engine orders them), then recently finished ones, alternating between workers."""
    live = [v for p in parts for v in p.conversations if v.state.live]
    if len(live) > MAX_LIVE_VIEWS:
        live = most_interesting(live, MAX_LIVE_VIEWS, slow_threshold_ms(total.latency.summary))
    live.sort(key=lambda v: (v.discovered, v.number))
    finished = [[v for v in p.conversations if not v.state.live] for p in parts]
    return tuple(live) + tuple(_interleave(finished, FINISHED_KEPT))


def combine_details(parts: Sequence[StatsSnapshot]
                    ) -> tuple[tuple[ConversationDetail, ...], int]:
    """--json-detail: the troubled conversations first, up to the engine's cap; the extra
    ones dropped here are added to details_omitted (returned)."""
    all_details = [d for p in parts for d in p.details]
    if not all_details:
        return (), 0
    ordered = sorted(all_details, key=lambda d: not _troubled(d))
    return tuple(ordered[:DETAIL_CAP]), max(0, len(ordered) - DETAIL_CAP)


def _troubled(d: ConversationDetail) -> bool:
    return bool(d.missing or d.errors or d.reconnects or d.duplicated or d.error)


def combine_timelines(parts: Sequence[tuple[TimelinePoint, ...]], *, final: bool
                      ) -> tuple[TimelinePoint, ...]:
    """Second by second: each worker closes a second every second of its run and they start
    together, so their k-th points are the run's k-th second. While the run goes on, only
    the seconds every worker has closed (a point once shown never changes: --timeseries
    writes each once); at the end, all. Counts add up exactly; a point ends at the latest
    worker's end of it (so lengths add up to the run); running figures (missing so far,
    live conversations) add each worker's latest; p50/p99 are the highest worker's (a
    second's own histogram is not sent: an upper bound), the self-lag the worst."""
    if len(parts) == 1:
        return parts[0]
    seconds = zip_longest(*parts) if final else zip(*parts, strict=False)
    latest: list[TimelinePoint | None] = [None] * len(parts)
    out: list[TimelinePoint] = []
    for same in seconds:
        points = [p for p in same if p is not None]
        latest = [p if p is not None else last for p, last in zip(same, latest, strict=True)]
        previous = out[-1].t_s if out else max(p.t_s - p.length_s for p in points)
        out.append(_combine_points(points, [p for p in latest if p is not None], previous))
    return tuple(out)


def _combine_points(points: Sequence[TimelinePoint], latest: Sequence[TimelinePoint],
                    previous_t_s: float) -> TimelinePoint:
    t_s = max(max(p.t_s for p in points), previous_t_s + 0.001)
    length = round(t_s - previous_t_s, 3)
    published = sum(p.published for p in points)
    received = sum(p.received for p in points)
    return dataclasses.replace(
        points[0],
        t_s=round(t_s, 3),
        published_per_s=published / length if length > 0 else 0.0,
        received_per_s=received / length if length > 0 else 0.0,
        p50_ms=_max_optional(p.p50_ms for p in points),
        p99_ms=_max_optional(p.p99_ms for p in points),
        published=published,
        received=received,
        length_s=length,
        wall_s=max(p.wall_s for p in points),
        phase=max(p.phase for p in latest),
        conversations=sum(p.conversations for p in latest),
        errors=sum(p.errors for p in points),
        missing_total=sum(p.missing_total for p in latest),
        self_lag_ms=_max_optional(p.self_lag_ms for p in points))


def combine_profiles(parts: Sequence[ProfilePosition | None]) -> ProfilePosition | None:
    present = [p for p in parts if p is not None]
    if not present:
        return None
    target = sum(p.target for p in present)
    return dataclasses.replace(
        present[0], target=round(target, 6) if present[0].rate_mode else round(target),
        left_s=max(p.left_s for p in present), held=any(p.held for p in present),
        done=all(p.done for p in present))


# -- small helpers ---------------------------------------------------------------------------


def _rate_sum(values: Iterable[float]) -> float:
    # Shares of 10/s are 10/3 each: their float sum is 9.999999999999998, shown as 10.
    return round(sum(values), 6)


def _per_worker(values: Sequence[str | None]) -> str | None:
    """One text when every worker that has one says the same; else each with its worker."""
    present = [(i, v) for i, v in enumerate(values) if v]
    if not present:
        return None
    if len({v for _, v in present}) == 1:
        return present[0][1]
    return "; ".join(f"{worker_name(i)}: {v}" for i, v in present)


def _add_optional(parts: Sequence[HistogramSnapshot | None]) -> HistogramSnapshot | None:
    present = [h for h in parts if h is not None]
    return add_histograms(present) if present else None


def _add_lengths(parts: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    present = [p for p in parts if p]
    if not present:
        return ()
    return tuple(sum(counts) for counts in zip_longest(*present, fillvalue=0))


def _max_optional(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _nan_low(v: float) -> float:
    return float("-inf") if v != v else v


def _interleave(parts: Sequence[Sequence[T]], n: int, *, newest_last: bool = False
                ) -> list[T]:
    """Up to n items taken in turn from each part: newest first (or, newest_last, the n
    newest of the turns, oldest first)."""
    if newest_last:
        out = _interleave([list(reversed(p)) for p in parts], n)
        out.reverse()
        return out
    taken = (x for same in zip_longest(*parts) for x in same if x is not None)
    return list(islice(taken, n))

