"""A capacity search, shown: a line per level as it ends, the table of every level, the
answer, a chart of throughput and p99 against the load, and the JSON (docs/sweep.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sse_tui.report import JSON_SCHEMA_VERSION, phase_dict
from sse_tui.sweep_level import Axis, LevelResult
from sse_tui.sweep_search import Answer


@dataclass(frozen=True)
class Plan:
    """What the search was asked to do."""

    axis: Axis
    start: float
    stop: float
    factor: float
    step_s: float
    warmup_s: float
    resolution: float

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis.name, "unit": self.axis.unit,
                "from": self.axis.value(self.start), "to": self.axis.value(self.stop),
                "factor": self.factor, "step_duration_s": self.step_s,
                "warmup_s": self.warmup_s, "resolution": self.resolution}


def _ms(v: float) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


def level_line(r: LevelResult) -> str:
    """What a level measured and its verdict, one line (or two when it failed the SLO)."""
    head = f"  {r.axis.text(r.level)}: "
    if r.measured is None:
        return head + ("interrupted" if r.interrupted else f"not measured: {r.fatal_error}")
    m = r.measured
    d = m.latency.summary
    line = (f"{head}{m.received_per_s:.1f} received/s, p50 {_ms(d.p50)}, p99 {_ms(d.p99)}, "
            f"errors {m.errors_total}, missing {m.tokens_missing}: SLO "
            f"{'met' if r.slo_met else 'FAILED'}")
    if r.self_check is not None:
        line += f"; self-check {r.self_check.text()}"
    failed = r.failed_clauses
    if failed:
        line += "\n    " + ", ".join(f"{x.clause.text}: {x.measured_text()}" for x in failed)
    if r.arrivals_dropped:
        line += (f"\n    {r.arrivals_dropped} arrivals found {r.settings.conversations} "
                 "conversations live (the -c cap) and were dropped: the rate was not "
                 "delivered, so the level fails")
    if r.self_check is not None and r.self_check.overloaded and r.self_check.worst:
        line += f"\n    generator overloaded: {r.self_check.worst}"
    return line


def table(results: Sequence[LevelResult]) -> list[str]:
    """Every level tried, lowest first."""
    unit = results[0].axis.unit if results else ""
    rows = [f"Levels tried ({unit}; # is the order they were tried in):",
            f"{'#':>2} {'level':>9} {'received/s':>10} {'p50':>9} {'p99':>9} "
            f"{'errors':>6} {'missing':>7}  {'SLO':<4} self-check"]
    for r in sorted(results, key=lambda r: (r.level, r.order)):
        level = r.axis.number(r.level)
        if r.measured is None:
            rows.append(f"{r.order:>2} {level:>9} {'-':>10} {'-':>9} {'-':>9} {'-':>6} "
                        f"{'-':>7}  {'-':<4} "
                        + ("interrupted" if r.interrupted else "not measured"))
            continue
        m = r.measured
        d = m.latency.summary
        verdict = "pass" if r.slo_met else "FAIL"
        check = ("interrupted" if r.interrupted
                 else r.self_check.text() if r.self_check is not None else "-")
        rows.append(f"{r.order:>2} {level:>9} {m.received_per_s:>10.1f} {_ms(d.p50):>9} "
                    f"{_ms(d.p99):>9} {m.errors_total:>6} {m.tokens_missing:>7}  "
                    f"{verdict:<4} {check}")
    return rows


def chart(results: Sequence[LevelResult], *, width: int = 78, height: int = 16,
          colour: bool = True) -> str:
    """Received/s (left axis, •) and p99 (right axis, ×) against the level, as plotext draws
    them; empty when fewer than two levels were measured. plotext keeps global state: call it
    from one thread."""
    pts = sorted((r for r in results
                  if r.measured is not None and r.measured.latency.count and not r.interrupted),
                 key=lambda r: r.level)
    if len(pts) < 2:
        return ""
    import plotext
    from plotext import marker, pixel

    fig = plotext.figure
    fig.clear()
    fig.plot_size(width, height)
    fig.theme("simple" if colour else "colorless")
    xs = [float(r.level) for r in pts]
    series = (
        ([r.measured.received_per_s for r in pts if r.measured], "•", "green", 0),
        ([r.measured.latency.summary.p99 for r in pts if r.measured], "×", "red", 1),
    )
    for ys, symbol, colour_name, side in series:
        sig = fig.signal(xs, ys, marker=marker(symbol, pixel(foreground=colour_name)),
                         yside=side)
        sig.lines()
        fig.draw(sig)
    fig.label("• received/s", 1, 0)
    fig.label("× p99 ms", 1, 1)
    fig.label(pts[0].axis.unit, 0, 0)
    text = str(fig.build().string())
    fig.clear()
    return text if colour else str(plotext.uncolorize(text))


def level_dict(r: LevelResult) -> dict[str, Any]:
    return {
        "order": r.order,
        "level": r.axis.value(r.level),
        "verdict": r.verdict,
        "settings": r.settings.summary_dict(),
        "warmup_s": r.warmup_s,
        "warmup_level": None if r.warmup_level is None else r.axis.value(r.warmup_level),
        "measured_s": None if r.measured is None else round(r.measured.elapsed_s, 3),
        # The measured phase alone, keyed as a phase of a run's JSON (docs/json.md).
        "figures": None if r.measured is None else phase_dict(r.measured),
        "slo": [x.to_dict() for x in r.slo],
        "self_check": None if r.self_check is None else r.self_check.to_dict(),
        "fatal_error": r.fatal_error,
        "interrupted": r.interrupted,
        "notes": list(r.notes),
    }


def sweep_dict(plan: Plan, slo_clauses: Sequence[str], results: Sequence[LevelResult],
               answer: Answer) -> dict[str, Any]:
    axis = plan.axis

    def level(v: float | None) -> int | float | None:
        return None if v is None else axis.value(v)

    return {
        "schema": JSON_SCHEMA_VERSION,
        "kind": "sweep",
        "slo": list(slo_clauses),
        "plan": plan.to_dict(),
        "levels": [level_dict(r) for r in results],
        "answer": {
            "outcome": answer.outcome,
            "capacity": level(answer.capacity),
            "first_failing": level(answer.first_failing),
            "lower_bound": level(answer.lower_bound),
            "unit": axis.unit,
            "message": answer.message,
            "exit_status": answer.exit_status,
        },
    }
