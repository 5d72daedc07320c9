"""Turning a snapshot into text and JSON: the progress line, the final summary, the JSON file.

The headless mode and the TUI share these, so a run reads the same whichever view ran it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from sse_tui.snapshot import Distribution, HistogramSnapshot, PhaseStats, StatsSnapshot

JSON_SCHEMA_VERSION = 1


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


def progress_line(snap: StatsSnapshot, now: float | None = None) -> str:
    """The reference's periodic line, plus latency percentiles: `[15:04:05] Published: …`."""
    t = snap.total
    lat = t.latency.summary
    clock = time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))
    line = (f"[{clock}] Published: {t.tokens_published}, Received: {t.tokens_received}, "
            f"Errors: {t.errors_total}, p50: {_ms(lat.p50)}, p99: {_ms(lat.p99)}")
    if t.tokens_missing:
        line += f", Missing: {t.tokens_missing}"
    if len(snap.phases) > 1:
        line += f", Phase {snap.phase_index}: {snap.current_phase.label}"
    if snap.state == "paused":
        line += " (paused)"
    return line


def _num(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _dist_row(name: str, d: Distribution) -> str:
    """One distribution in under 80 columns: `Latency  p50 0.38 p90 … ms  n=2541`."""
    if d.count == 0:
        return f"{name:<22}-"
    return (f"{name:<22}p50 {_num(d.p50)}  p90 {_num(d.p90)}  p99 {_num(d.p99)}  "
            f"p99.9 {_num(d.p999)} ms  n={d.count}")


def format_summary(snap: StatsSnapshot) -> str:
    """The final summary: the reference's rows first, then what the reference cannot tell."""
    t = snap.total
    s = snap.settings
    lat = t.latency.summary
    rows = [
        "",
        "=== Load Test Results ===",
        f"Mode:                 {s.mode}  (run id {s.run_id})",
        f"Duration:             {snap.elapsed_s:.1f}s",
        f"Tokens Published:     {t.tokens_published}",
        f"Tokens Received:      {t.tokens_received}",
        f"Connections Opened:   {t.connections_opened}",
        f"Connections Closed:   {t.connections_closed}",
        f"Errors:               {t.errors_total}",
        f"Avg Latency:          {_ms(lat.avg)}",
        f"Min Latency:          {_ms(lat.min)}",
        f"Max Latency:          {_ms(lat.max)}",
        "",
        _dist_row("Latency", lat),
        _dist_row("Connect time", t.connect.summary),
        _dist_row("Time to first token", t.first_token.summary),
        _dist_row("Inter-token gap", t.itl.summary),
        f"Throughput:           {t.published_per_s:.1f} published/s, "
        f"{t.received_per_s:.1f} received/s",
        f"Conversations:        {t.conversations_started} started, "
        f"{t.conversations_completed} completed, {t.conversations_incomplete} incomplete"
        + (f", {t.conversations_cut_short} cut short by the end" if t.conversations_cut_short
           else ""),
        f"Tokens missing:       {t.tokens_missing}",
        f"Tokens duplicated:    {t.tokens_duplicated}",
        f"Tokens out of order:  {t.tokens_out_of_order}",
        f"Streams ended early:  {t.streams_ended_without_done} (reconnects {t.reconnects})",
    ]
    if t.tokens_unheard:
        rows.append(f"Unheard on Redis:     {t.tokens_unheard} tokens had 0 subscribers "
                    "(is the bridge subscribed to the channel prefix?)")
    if t.errors:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(t.errors.items(), key=lambda kv: -kv[1]))
        rows.append(f"Errors by kind:       {kinds}")
    rows.append(_self_check(snap))
    if len(snap.phases) > 1:
        rows.append("")
        rows.append("Phases:")
        rows.append(f"  {'#':>2} {'setting':<20} {'time':>7} {'rx/s':>8} {'p50':>10} "
                    f"{'p99':>10} {'missing':>8}")
        for p in snap.phases:
            d = p.latency.summary
            rows.append(f"  {p.index:>2} {p.label:<20} {p.elapsed_s:>6.1f}s "
                        f"{p.received_per_s:>8.1f} {_ms(d.p50):>10} {_ms(d.p99):>10} "
                        f"{p.tokens_missing:>8}")
    if snap.fatal_error:
        rows.append("")
        rows.append(f"FAILED: {snap.fatal_error}")
    return "\n".join(rows) + "\n"


def _self_check(snap: StatsSnapshot) -> str:
    lag = snap.loop_lag_total.summary if snap.loop_lag_total else Distribution.empty()
    sched = snap.schedule_lag_total.summary if snap.schedule_lag_total else Distribution.empty()
    warning = snap.health.warning
    text = (f"Generator self-check: {'OVERLOADED' if warning else 'not the bottleneck'}\n"
            f"  event-loop lag p99 {_ms(lag.p99)}")
    if sched.count:
        text += f", publish schedule lag p99 {_ms(sched.p99)}"
    return text + (f"\nWARNING: {warning}" if warning else "")


def _hist(h: HistogramSnapshot | None) -> dict[str, Any]:
    return (h.summary if h is not None else Distribution.empty()).to_dict()


def phase_dict(p: PhaseStats) -> dict[str, Any]:
    return {
        "index": p.index,
        "label": p.label,
        "started_s": round(p.started_s, 3),
        "ended_s": None if p.ended_s is None else round(p.ended_s, 3),
        "elapsed_s": round(p.elapsed_s, 3),
        "conversations_setting": p.conversations,
        "delay_ms": p.delay_ms,
        "tokens_published": p.tokens_published,
        "tokens_received": p.tokens_received,
        "tokens_unheard": p.tokens_unheard,
        "publish_errors": p.publish_errors,
        "connections_opened": p.connections_opened,
        "connections_closed": p.connections_closed,
        "errors": p.errors_total,
        "errors_by_kind": dict(p.errors),
        "conversations": {
            "started": p.conversations_started,
            "completed": p.conversations_completed,
            "incomplete": p.conversations_incomplete,
            "cut_short": p.conversations_cut_short,
        },
        "tokens_missing": p.tokens_missing,
        "tokens_duplicated": p.tokens_duplicated,
        "tokens_out_of_order": p.tokens_out_of_order,
        "streams_ended_without_done": p.streams_ended_without_done,
        "reconnects": p.reconnects,
        "latency_ms": _hist(p.latency),
        "connect_ms": _hist(p.connect),
        "first_token_ms": _hist(p.first_token),
        "itl_ms": _hist(p.itl),
        "throughput": {
            "published_per_s": round(p.published_per_s, 3),
            "received_per_s": round(p.received_per_s, 3),
        },
    }


def summary_dict(snap: StatsSnapshot) -> dict[str, Any]:
    """The `--json` summary. Keys are documented in the README."""
    t = snap.total
    out: dict[str, Any] = {
        "schema": JSON_SCHEMA_VERSION,
        "state": snap.state,
        "fatal_error": snap.fatal_error,
        "settings": snap.settings.summary_dict(),
        "elapsed_s": round(snap.elapsed_s, 3),
    }
    total = phase_dict(t)
    for key in ("index", "label", "started_s", "ended_s", "elapsed_s", "conversations_setting",
                "delay_ms"):
        total.pop(key)
    out.update(total)
    out["phases"] = [phase_dict(p) for p in snap.phases]
    out["self"] = {
        "loop_lag_ms": _hist(snap.loop_lag_total),
        "schedule_lag_ms": _hist(snap.schedule_lag_total),
        "warning": snap.health.warning,
    }
    # Full histograms, so that the JSON of several generator pods can be merged exactly.
    out["histograms"] = {
        "unit": "us",
        "latency": t.latency.encode(),
        "connect": t.connect.encode(),
        "first_token": t.first_token.encode(),
        "itl": t.itl.encode(),
    }
    return out


def write_json(snap: StatsSnapshot, path: str) -> Path | None:
    """Write the summary to `path` (`-` = stdout). Returns the file written, if any."""
    text = json.dumps(summary_dict(snap), indent=2, allow_nan=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(p)
    return p.resolve()
