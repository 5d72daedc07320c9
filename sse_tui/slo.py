"""SLO gate: `--slo 'p99<50ms,missing=0,errors<=5'` judged against the run's final figures.

A clause is `METRIC OP THRESHOLD`. Latency metrics are `FAMILY.STAT` (`latency.p99`,
`first_token.p90`, `connect.max`; a bare `p99` means `latency.p99`, and `intended_p99` or
`intended.p99` means `latency_intended.p99`) and take a duration with
its unit (`50ms`, `1s`, `500us`): a bare number would leave the unit to guesswork. Counts
(`missing`, `errors`, …) and rates (`received_per_s`) take plain numbers. docs/slo.md is the
user's page; the exit status the gate gives (3) is `exit_status` below.

Clauses are parsed when the settings are read (a bad one is exit status 2 before the run)
and again, from the same text, when the run is judged: the settings keep the text, which is
what the TOML file and the JSON summary show.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sse_tui.values import NUMBER_RE, UsageError, ValueKind, parse_duration, shown_toml_value

if TYPE_CHECKING:  # snapshot imports settings, which imports this module
    from sse_tui.snapshot import PhaseStats, StatsSnapshot

# Exit statuses: 1 (the run failed to measure) and 2 (bad input) are older than the gate;
# a fatal error takes precedence over a failed SLO, since its figures cannot be trusted.
EXIT_OK = 0
EXIT_FATAL = 1
EXIT_SLO_FAILED = 3

Op = Callable[[float, float], bool]
OPERATORS: dict[str, Op] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
    "=": operator.eq, "==": operator.eq,
}

# Distributions of the run total (PhaseStats attribute = metric family) and their figures.
LATENCY_FAMILIES = ("latency", "latency_intended", "first_token", "connect", "establish",
                    "itl")
LATENCY_STATS = ("p50", "p90", "p99", "p999", "max", "min", "avg")
_STAT_ALIASES = {"p99.9": "p999", "mean": "avg"}
# Short names: `intended.p99`, and `intended_p99` as a bare `p99` is latency's.
_FAMILY_ALIASES = {"intended": "latency_intended"}

Needs = Literal["consumer", "producer", ""]


@dataclass(frozen=True)
class ScalarMetric:
    """A count or a rate of the run total."""

    read: Callable[[PhaseStats], float]
    rate: bool = False
    # The mode side that measures it: in the other mode it has no data (a producer alone
    # has no `missing` to judge; 0 would pass a clause it never measured).
    needs: Needs = ""


SCALARS: dict[str, ScalarMetric] = {
    "missing": ScalarMetric(lambda t: t.tokens_missing, needs="consumer"),
    "duplicated": ScalarMetric(lambda t: t.tokens_duplicated, needs="consumer"),
    "out_of_order": ScalarMetric(lambda t: t.tokens_out_of_order, needs="consumer"),
    "reconnects": ScalarMetric(lambda t: t.reconnects, needs="consumer"),
    "errors": ScalarMetric(lambda t: t.errors_total),
    "received_per_s": ScalarMetric(lambda t: t.received_per_s, rate=True, needs="consumer"),
    "published_per_s": ScalarMetric(lambda t: t.published_per_s, rate=True, needs="producer"),
}


def valid_metrics() -> str:
    """The metric names for messages and help: `p50 … latency.p99 … missing …`."""
    stats = "/".join(LATENCY_STATS)
    families = "/".join(LATENCY_FAMILIES)
    return (f"{stats} (latency), {families}.{{{stats}}} (durations, e.g. 50ms; "
            f"intended_p99 for latency_intended.p99), "
            f"{', '.join(SCALARS)} (plain numbers)")


@dataclass(frozen=True)
class Clause:
    """One parsed clause: `latency.p99 < 50 ms`."""

    text: str  # as the operator wrote it (stripped)
    metric: str  # canonical: `latency.p99`, `missing`
    op: str  # one of OPERATORS, `==` read as `=`
    threshold: float  # ms for latency metrics, else the plain number

    @property
    def is_latency(self) -> bool:
        return "." in self.metric

    @property
    def unit(self) -> str:
        if self.is_latency:
            return "ms"
        return "per_s" if SCALARS[self.metric].rate else "count"

    def holds(self, measured: float) -> bool:
        return OPERATORS[self.op](measured, self.threshold)


_CLAUSE_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|==|=|<|>)\s*(.*?)\s*")


def _metric(name: str) -> str | None:
    """The canonical name of a metric, or None."""
    n = name.lower()
    if n in SCALARS:
        return n
    if n in LATENCY_STATS or n in _STAT_ALIASES:  # `p99`, `p99.9`: latency's
        n = f"latency.{n}"
    elif n.startswith("intended_"):  # `intended_p99`: the intended latency's
        n = f"intended.{n.removeprefix('intended_')}"
    family, _, stat = n.partition(".")
    family = family.removesuffix("_ms")  # as the JSON spells it: latency_ms.p99
    family = _FAMILY_ALIASES.get(family, family)
    stat = _STAT_ALIASES.get(stat, stat)
    if family in LATENCY_FAMILIES and stat in LATENCY_STATS:
        return f"{family}.{stat}"
    return None


def parse_clause(text: str) -> Clause:
    """One clause; ValueError naming it and what is wrong (and the valid metrics)."""
    t = text.strip()
    m = _CLAUSE_RE.fullmatch(t)
    if not m:
        raise ValueError(f"clause {t!r} is not METRIC OP VALUE (OP one of < <= > >= =), "
                         f"e.g. p99<50ms; valid metrics: {valid_metrics()}")
    name, op, value = m.groups()
    metric = _metric(name)
    if metric is None:
        raise ValueError(f"clause {t!r}: unknown metric {name!r}; valid metrics: "
                         f"{valid_metrics()}")
    if not value:
        raise ValueError(f"clause {t!r} has no value after {op!r}, e.g. p99<50ms")
    if "." in metric:
        threshold = _latency_ms(t, value)
    else:
        if not NUMBER_RE.fullmatch(value) or not math.isfinite(float(value)):
            raise ValueError(f"clause {t!r}: {metric} takes a plain number, e.g. {metric}<=5")
        threshold = float(value)
        if threshold < 0:
            raise ValueError(f"clause {t!r}: the value must be 0 or more")
    return Clause(text=t, metric=metric, op="=" if op == "==" else op, threshold=threshold)


def _latency_ms(clause: str, value: str) -> float:
    bad = ValueError(f"clause {clause!r}: a latency takes a duration with its unit, "
                     "e.g. 50ms, 1.5s or 500us")
    if not value[-1:].isalpha() or value.startswith(("-", "+")):
        raise bad
    try:
        seconds = parse_duration(value)
    except UsageError:
        raise bad from None
    if not math.isfinite(seconds):
        raise bad
    return seconds * 1000.0


def split_clauses(text: str) -> tuple[str, ...]:
    """`p99<50ms, missing=0` -> ('p99<50ms', 'missing=0'), each checked; ValueError if not."""
    parts = tuple(p.strip() for p in text.split(","))
    if not any(parts):
        raise ValueError("empty SLO: give clauses such as 'p99<50ms,missing=0'")
    for p in parts:
        if not p:
            raise ValueError(f"empty clause in {text.strip()!r}: separate clauses with one comma")
        parse_clause(p)
    return parts


def parse_slo(texts: tuple[str, ...]) -> tuple[Clause, ...]:
    """The clauses of every --slo given (each may hold several, comma-separated)."""
    return tuple(parse_clause(c) for text in texts for c in split_clauses(text))


# --- the setting's kind of value ---------------------------------------------------------

def _slo_from_text(text: str, example: str) -> tuple[str, ...]:
    return split_clauses(text)


def _slo_from_toml(value: Any, example: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be an array of clauses such as \"p99<50ms\", e.g. {example}; "
                         f"got {shown_toml_value(value)}")
    return tuple(c for v in value for c in split_clauses(v))


def _slo_check(label: str, value: Any) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{label} must be a list of clauses such as 'p99<50ms', got {value!r}")
    try:
        parse_slo(value)
    except ValueError as e:
        raise UsageError(f"invalid --slo: {e}") from None


# `--slo 'p99<50ms,missing=0'`, repeatable; TOML `slo = ["p99<50ms", "missing=0"]`.
SLO = ValueKind(_slo_from_text, _slo_from_toml, _slo_check, to_toml=list,
                show=lambda clauses: ",".join(clauses) or "none", many=True)


# --- judging a run -------------------------------------------------------------------------

@dataclass(frozen=True)
class SloResult:
    clause: Clause
    measured: float | None  # None: no data (no samples, or not measured in this mode)

    @property
    def passed(self) -> bool:
        return self.measured is not None and self.clause.holds(self.measured)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def reason(self) -> str | None:
        return "no data" if self.measured is None else None

    def measured_text(self) -> str:
        v = self.measured
        if v is None:
            return "no data"
        if self.clause.is_latency:
            return f"{v:.3f} ms" if v < 1 else f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"
        if self.clause.unit == "per_s":
            return f"{v:.1f}/s"
        return f"{v:g}"

    def to_dict(self) -> dict[str, Any]:
        c = self.clause

        def number(v: float) -> float | int:  # counts as whole numbers, as the counters are
            return int(v) if c.unit == "count" and float(v).is_integer() else round(v, 6)

        return {
            "clause": c.text,
            "metric": c.metric,
            "operator": c.op,
            "threshold": number(c.threshold),
            "unit": c.unit,
            "measured": None if self.measured is None else number(self.measured),
            "verdict": self.verdict,
            "reason": self.reason,
        }


def _measure(c: Clause, snap: StatsSnapshot) -> float | None:
    t = snap.total
    if c.is_latency:
        family, stat = c.metric.split(".")
        d = getattr(t, family).summary
        return None if d.count == 0 else float(getattr(d, stat))
    metric = SCALARS[c.metric]
    mode = snap.settings.mode
    if (metric.needs == "consumer" and mode == "producer") or (
            metric.needs == "producer" and mode == "consumer"):
        return None
    if metric.rate and t.elapsed_s <= 0:
        return None
    return float(metric.read(t))


def evaluate(snap: StatsSnapshot) -> list[SloResult]:
    """Every clause of the run's --slo against its total (empty without --slo)."""
    return [SloResult(c, _measure(c, snap)) for c in parse_slo(snap.settings.slo)]


def exit_status(snap: StatsSnapshot) -> int:
    """1 for a run that failed to measure, else 3 when a clause failed, else 0."""
    if snap.fatal_error:
        return EXIT_FATAL
    if any(not r.passed for r in evaluate(snap)):
        return EXIT_SLO_FAILED
    return EXIT_OK


def summary_rows(results: list[SloResult]) -> list[str]:
    """The pass/fail table of the final summary (under 80 columns for short clauses)."""
    if not results:
        return []
    failed = sum(not r.passed for r in results)
    head = (f"FAILED ({failed} of {len(results)} clauses)" if failed
            else f"met ({len(results)} clause{'s' if len(results) != 1 else ''})")
    width = max(20, *(len(r.clause.text) for r in results))
    rows = [f"SLO:                  {head}",
            f"  {'clause':<{width}} {'measured':>12}  verdict"]
    for r in results:
        verdict = "pass" if r.passed else "FAIL" + (" (no data)" if r.measured is None else "")
        rows.append(f"  {r.clause.text:<{width}} {r.measured_text():>12}  {verdict}")
    return rows


def failure_lines(results: list[SloResult]) -> list[str]:
    """One line per failed clause, for stderr: what a CI log shows next to the exit status."""
    return [f"sse-tui: SLO not met: {r.clause.text} ({r.clause.metric} "
            f"{r.measured_text()})" for r in results if not r.passed]
