"""Turning a snapshot into text and JSON: the progress line, the final summary, the JSON file.

The headless mode and the TUI share these, so a run reads the same whichever view ran it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import Field
from pathlib import Path
from typing import Any

from sse_tui import slo
from sse_tui.engine.publish_watch import redis_verdict
from sse_tui.engine.selfwatch import WINDOW_S, describe_window, phase_list
from sse_tui.files import WriteError, write_private_atomically
from sse_tui.shaping import distributions_json
from sse_tui.snapshot import (
    COUNTER_FIELDS,
    Counters,
    Distribution,
    HistogramSnapshot,
    PhaseStats,
    StatsSnapshot,
)

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
    # A token counts as published once sent: its reader can have it before Redis' reply.
    published = t.tokens_published + snap.tokens_in_flight
    line = (f"[{clock}] Published: {published}, Received: {t.tokens_received}, "
            f"Errors: {t.errors_total}, p50: {_ms(lat.p50)}, p99: {_ms(lat.p99)}")
    if t.tokens_missing:
        line += f", Missing: {t.tokens_missing}"
    if snap.settings.rate > 0:  # open loop: what arrived, and what the cap turned away
        line += f", Started: {t.conversations_started}"
        if t.arrivals_dropped:
            line += f", Dropped: {t.arrivals_dropped}"
    if len(snap.phases) > 1:
        line += f", Phase {snap.phase_index}: {snap.current_phase.label}"
    if snap.profile is not None:
        p = snap.profile
        line += f", Stage {p.stage}/{p.stages}" + (" (held)" if p.held else "")
    if snap.state == "paused":
        line += " (paused)"
    return line


def load_model_row(snap: StatsSnapshot) -> str | None:
    """`Load model:  open loop, …` for the summary, when it is not the plain closed loop."""
    s = snap.settings
    parts = []
    if s.rate > 0:
        parts.append(f"open loop: {s.arrival} arrivals at {s.rate:g}/s, at most "
                     f"{s.conversations} live (arrivals over it dropped and counted)")
    if s.stages:
        parts.append(f"profile of {len(s.stages)} stages ({','.join(s.stages)}), "
                     f"one phase each")
    return f"Load model:           {'; '.join(parts)}" if parts else None


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
        _dist_row("Intended latency", t.latency_intended.summary),  # from the schedule
        _dist_row("Connect time", t.connect.summary),
        *_connection_rows(t),
        _dist_row("Time to first token", t.first_token.summary),
        _dist_row("Inter-token gap", t.itl.summary),
        *([_dist_row("Publish round trip", t.publish_rtt.summary)] if t.publish_rtt.count
          else []),
        *_hop_rows(t),
        f"Throughput:           {t.published_per_s:.1f} published/s, "
        f"{t.received_per_s:.1f} received/s",
        f"Conversations:        {t.conversations_started} started, "
        f"{t.conversations_completed} completed, {t.conversations_incomplete} incomplete"
        + (f", {t.conversations_cut_short} cut short by the end" if t.conversations_cut_short
           else "")
        + (f", {t.arrivals_dropped} arrivals dropped by the cap (--conversations)"
           if t.arrivals_dropped or s.rate > 0 else ""),
        *filter(None, [load_model_row(snap)]),
        *(f"{f.metadata['label'] + ':':<22}{getattr(t, f.name)}"
          for f in COUNTER_FIELDS if "label" in f.metadata),
        f"Streams ended early:  {t.streams_ended_without_done} (reconnects {t.reconnects})",
    ]
    rows.extend(_loss_rows(t))
    if t.tokens_unheard:
        rows.append(f"Unheard on Redis:     {t.tokens_unheard} tokens had 0 subscribers "
                    "(is the bridge subscribed to the channel prefix?); it reads 0 whenever "
                    "any other subscriber exists")
    if t.errors:
        by_count = sorted(t.errors.items(), key=lambda kv: -kv[1])
        kinds = ", ".join(f"{k}: {v}" for k, v in by_count)
        rows.append(f"Errors by kind:       {kinds}")
        rows.extend(f"  {line}" for line in error_example_lines(t, (k for k, _ in by_count)))
    rows.append(_self_check(snap))
    # Redis' share of "who held publishing back", apart from the generator's own.
    redis = redis_verdict(t, generator_overloaded=snap.health.overloaded_windows > 0)
    if redis:
        rows.append(f"WARNING: {redis}")
    rows.extend(_clock_rows(snap))
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
    if snap.notes:
        rows.append("")
        rows.extend(f"NOTE: {note}" for note in snap.notes)
    if snap.settings.slo:  # the gate's verdict, clause by clause (docs/slo.md)
        rows.append("")
        rows.extend(slo.summary_rows(slo.evaluate(snap)))
    if snap.fatal_error:
        rows.append("")
        rows.append(f"FAILED: {snap.fatal_error}")
    return "\n".join(rows) + "\n"


def _clock_rows(snap: StatsSnapshot) -> list[str]:
    """The producer's clock: its estimated offset (consumer with --redis), negative latencies."""
    rows = []
    c = snap.clock
    if c is not None:
        rows.append(f"Clock offset:         producer {c.offset_ms:+.3f} ms ± {c.error_ms:.3f} ms "
                    "against this host (via Redis TIME); publish timestamps corrected")
    if snap.clock_warning:
        rows.append(f"WARNING: {snap.clock_warning}")
    return rows


def _hop_rows(t: PhaseStats) -> list[str]:
    """With --nats: latency and loss by hop, and what the tap cost (docs/topology.md)."""
    if not t.tap_subscriptions:
        return []
    rows = [_dist_row("Redis -> NATS", t.redis_to_nats.summary),
            _dist_row("NATS -> SSE", t.nats_to_sse.summary)]
    if t.tokens_missing or t.lost_before_nats or t.lost_after_nats:
        rows.append(f"Missing, which hop:   {t.lost_before_nats} before NATS (Redis, bridge), "
                    f"{t.lost_after_nats} after NATS (leaf, adapter)")
    per_message = f", {t.tap_busy_us / t.tap_messages:.0f} µs each" if t.tap_messages else ""
    rows.append(f"NATS tap:             {t.tap_subscriptions} subjects, {t.tap_messages} "
                f"messages, {t.tap_busy_us / 1000:.1f} ms handling them{per_message}"
                + (f"; {t.unseen_on_nats} tokens delivered that it never saw"
                   if t.unseen_on_nats else ""))
    return rows


def hops_dict(p: PhaseStats, counters: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON `hops` object: the tap's two latencies, its loss by hop and its own cost."""
    return {
        "redis_to_nats_ms": _hist(p.redis_to_nats),
        "nats_to_sse_ms": _hist(p.nats_to_sse),
        **counters,
        "tap_us_per_message": (round(p.tap_busy_us / p.tap_messages, 3) if p.tap_messages
                               else None),
    }


def _loss_rows(t: PhaseStats) -> list[str]:
    """Where the missing tokens were lost, and what the server did after `done`."""
    rows = []
    if t.tokens_missing:
        rows.append(f"Missing, where lost:  first {t.loss_first}, gap {t.loss_gap}, "
                    f"tail {t.loss_tail}, after resume {t.loss_after_resume}  (docs/loss.md)")
    if t.streams_not_closed_after_done or t.tokens_after_done:
        rows.append(f"After done:           {t.streams_not_closed_after_done} streams not "
                    f"closed by the server, {t.tokens_after_done} token events after done")
    return rows


def accounting_dict(snap: StatsSnapshot) -> dict[str, Any]:
    """The JSON `accounting` object: the invariant, its terms and whether it held."""
    t = snap.total
    unique = t.tokens_received - t.tokens_duplicated
    out: dict[str, Any] = {
        "rule": "expected == received_unique + missing; in mode both also "
                "expected == published. received_unique = tokens_received (every token "
                "event counted, duplicates included) - tokens_duplicated",
        "published": t.tokens_published,
        "expected": t.tokens_expected,
        "received_unique": unique,
        "missing": t.tokens_missing,
        "duplicated": t.tokens_duplicated,
        "unaccounted": t.tokens_expected - unique - t.tokens_missing,
        "conversations_violating": t.accounting_violations,
    }
    if snap.settings.mode == "both":
        out["published_not_expected"] = t.tokens_published - t.tokens_expected
    consuming = snap.settings.mode != "producer"
    out["holds"] = None if not consuming else (
        out["unaccounted"] == 0 and out.get("published_not_expected", 0) == 0
        and t.accounting_violations == 0)
    return out


def detail_dict(snap: StatsSnapshot) -> dict[str, Any]:
    """The JSON `detail` object of --json-detail: ended conversations and their losses."""
    from sse_tui.engine.accounting import DETAIL_CAP
    from sse_tui.engine.consumer import MAX_RANGES

    return {
        "conversations_cap": DETAIL_CAP,
        "ranges_cap": MAX_RANGES,
        "conversations_omitted": snap.details_omitted,
        "conversations": [{
            "id": d.conversation_id,
            "state": d.state,
            "published": d.published,
            "received": d.received,
            "missing": d.missing,
            "missing_ranges": [list(r) for r in d.missing_ranges],
            "ranges_omitted": d.ranges_omitted,
            "loss": dict(d.loss),
            "duplicated": d.duplicated,
            "reconnects": d.reconnects,
            "errors": d.errors,
            "error": d.error,
            "outage_s": d.outage_s,
        } for d in snap.details],
    }


def _self_check(snap: StatsSnapshot) -> str:
    """The generator's verdict on itself: the same 1 s windows, and limits, as the live warning."""
    h = snap.health
    lag = snap.loop_lag_total.summary if snap.loop_lag_total else Distribution.empty()
    sched = snap.schedule_lag_total.summary if snap.schedule_lag_total else Distribution.empty()
    whole = f"event-loop lag p99 {_ms(lag.p99)}"
    if sched.count:
        whole += f", publish schedule lag p99 {_ms(sched.p99)}"
    w = h.worst_window
    if h.windows == 0:  # a run under one window, or a merged summary: only the warning says
        head = ("OVERLOADED" if h.warning else
                "no verdict (no 1 s window judged: a run under 1 s, or a merged summary)")
        return (f"Generator self-check: {head}\n  {whole}"
                + (f"\nWARNING: {h.warning}" if h.warning else ""))
    if not h.overloaded_windows:
        return (f"Generator self-check: not the bottleneck (no {WINDOW_S:g} s window crossed "
                f"the limits; {h.windows} judged)\n  {whole}")
    share = h.overloaded_share or 0.0
    plural = "s" if len(h.overloaded_phases) > 1 else ""
    rows = [
        f"Generator self-check: OVERLOADED during {100 * share:.0f}% of the run "
        f"({h.overloaded_s:.1f} of {h.judged_s:.1f} s), phase{plural} "
        f"{phase_list(h.overloaded_phases)}"]
    if w is not None:
        rows.append(f"  worst window {w.t_s:.1f}–{w.t_s + w.length_s:.1f} s (phase "
                    f"{phase_list(w.phases)}): {describe_window(w)}")
    rows += [f"  may have distorted: {', '.join(h.distorted)}",
             f"  whole run: {whole}",
             "  lower the load or run more generator processes"]
    return "\n".join(rows)


def self_dict(snap: StatsSnapshot) -> dict[str, Any]:
    """The JSON `self` object: whole-run lags, the one-line warning, the windows' verdict."""
    h = snap.health
    judged = h.windows > 0
    w = h.worst_window
    share = h.overloaded_share
    return {
        "loop_lag_ms": _hist(snap.loop_lag_total),
        "schedule_lag_ms": _hist(snap.schedule_lag_total),
        "warning": h.warning,
        "window_s": WINDOW_S,
        "windows": h.windows,
        "judged_s": round(h.judged_s, 3),
        "overloaded_windows": h.overloaded_windows,
        # null: no window was judged (a run under one window, or a merged summary)
        "overloaded_s": round(h.overloaded_s, 3) if judged else None,
        "overloaded_share": round(share, 4) if judged and share is not None else None,
        "overloaded_phases": list(h.overloaded_phases),
        "distorted": list(h.distorted),
        "worst_window": None if w is None else {
            "t_s": w.t_s,
            "length_s": w.length_s,
            "phases": list(w.phases),
            "loop_lag_p99_ms": w.loop_lag_p99_ms,
            "schedule_lag_p99_ms": w.schedule_lag_p99_ms,
            "cpu_percent": w.cpu_percent,
            "reason": describe_window(w),
        },
    }


def _hist(h: HistogramSnapshot | None) -> dict[str, Any]:
    return (h.summary if h is not None else Distribution.empty()).to_dict()


# Where schema 1 has the errors (total and by kind) among the counters: right before this key.
_ERRORS_BEFORE = "conversations"


def _connection_rows(t: PhaseStats) -> list[str]:
    """Opening streams: the whole time to a working stream, the attempts, the outages."""
    rows = [_dist_row("Time to establish", t.establish.summary)]
    failed = t.connect_attempts - t.connections_opened
    rows.append(f"Connect attempts:     {t.connect_attempts}"
                + (f" ({failed} failed)" if failed > 0 else ""))
    if t.stream_outages:
        rows.append(f"Time without a stream: {t.outage_ms / 1000:.1f} s in {t.stream_outages} "
                    f"outage{'s' if t.stream_outages != 1 else ''} (streams lost and resumed)")
    return rows


MAX_EXAMPLE_LINES = 10


def error_example_lines(p: PhaseStats, kinds: Iterable[str]) -> list[str]:
    """`HTTP 404: e.g. HTTP 404 from /stream/x` for each of `kinds` that has an example."""
    lines = []
    for kind in kinds:
        example = p.error_examples.get(kind)
        if example and example != kind:
            lines.append(f"{kind}: e.g. {example}")
    return lines[:MAX_EXAMPLE_LINES]


def new_error_lines(snap: StatsSnapshot, seen: set[str]) -> list[str]:
    """For the headless progress: a line for each error kind not seen before (added to
    `seen`), with its example detail."""
    t = snap.total
    new = [k for k in t.errors if k not in seen]
    seen.update(new)
    lines = []
    for kind in new:
        example = t.error_examples.get(kind)
        lines.append(f"  error: {kind}" + (f" (e.g. {example})" if example else ""))
    return lines


def _json_place(f: Field[int]) -> tuple[str | None, str]:
    """(group, key) of a counter in the JSON: `conversations_started` is conversations.started."""
    group = f.metadata.get("json_group")
    return (group, f.name.removeprefix(group + "_")) if group else (None, f.name)


def counters_dict(c: Counters, errors: Mapping[str, int],
                  examples: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The counters as the JSON has them, in the order of their fields, with the errors and
    one example detail per error kind."""
    out: dict[str, Any] = {}
    for f in COUNTER_FIELDS:
        group, key = _json_place(f)
        if group is None:
            out[key] = getattr(c, f.name)
        else:
            out.setdefault(group, {})[key] = getattr(c, f.name)
    keys = list(out)
    at = keys.index(_ERRORS_BEFORE) if _ERRORS_BEFORE in keys else len(keys)
    errors_json = {"errors": sum(errors.values()), "errors_by_kind": dict(errors),
                   "error_examples": dict(examples or {})}
    return {k: out[k] for k in keys[:at]} | errors_json | {k: out[k] for k in keys[at:]}


def counters_from_json(d: Mapping[str, Any]) -> Counters:
    """The counters of a `--json` summary (or of one of its phases); absent ones are 0."""
    values = {}
    for f in COUNTER_FIELDS:
        group, key = _json_place(f)
        where = d.get(group) or {} if group else d
        values[f.name] = int(where.get(key, 0))
    return Counters(**values)


def phase_dict(p: PhaseStats) -> dict[str, Any]:
    out = {
        "index": p.index,
        "label": p.label,
        "started_s": round(p.started_s, 3),
        "ended_s": None if p.ended_s is None else round(p.ended_s, 3),
        "elapsed_s": round(p.elapsed_s, 3),
        "conversations_setting": p.conversations,
        "delay_ms": p.delay_ms,
        **counters_dict(p, p.errors, p.error_examples),
        "latency_ms": _hist(p.latency),
        "connect_ms": _hist(p.connect),
        "establish_ms": _hist(p.establish),
        "first_token_ms": _hist(p.first_token),
        "itl_ms": _hist(p.itl),
        "throughput": {
            "published_per_s": round(p.published_per_s, 3),
            "received_per_s": round(p.received_per_s, 3),
        },
        # Keys added since schema 1 go last.
        "publish_rtt_ms": _hist(p.publish_rtt),
        "latency_intended_ms": _hist(p.latency_intended),
    }
    out["clock"] = out.pop("clock")  # a counter group added since schema 1: last, too
    out["hops"] = hops_dict(p, out.pop("hops"))
    out["rate_setting"] = p.rate  # open loop: arrivals per second in force; 0 = closed loop
    out["stage"] = p.stage  # the --stages profile's stage (1-based) that set it, or null
    return out


def clock_dict(snap: StatsSnapshot) -> dict[str, Any]:
    """The JSON `clock` object: negative latencies and the producer's estimated offset
    (null unless a consumer with --redis estimated it; see sse_tui.engine.clock)."""
    t, c = snap.total, snap.clock
    return {
        "negative_latencies": t.negative_latencies,
        "negative_ms": _hist(t.negative_latency),
        "offset_ms": None if c is None else round(c.offset_ms, 3),
        "error_ms": None if c is None else round(c.error_ms, 3),
        "corrected": c is not None and c.corrected,
    }


def summary_dict(snap: StatsSnapshot) -> dict[str, Any]:
    """The `--json` summary. Keys are documented in docs/json.md."""
    t = snap.total
    out: dict[str, Any] = {
        "schema": JSON_SCHEMA_VERSION,
        "state": snap.state,
        "fatal_error": snap.fatal_error,
        "settings": snap.settings.summary_dict(),
        "elapsed_s": round(snap.elapsed_s, 3),
    }
    shaped = distributions_json(snap.settings)
    if shaped:  # the numbers of --tokens/--delay/... are the means of these
        out["settings"]["distributions"] = shaped
    if snap.conversation_lengths:
        out["conversation_lengths"] = {
            f"{2 ** i}..{2 ** (i + 1) - 1}": n
            for i, n in enumerate(snap.conversation_lengths) if n}
    total = phase_dict(t)
    for key in ("index", "label", "started_s", "ended_s", "elapsed_s", "conversations_setting",
                "delay_ms"):
        total.pop(key)
    publish_rtt = total.pop("publish_rtt_ms")  # after the schema-1 keys, below
    latency_intended = total.pop("latency_intended_ms")
    total.pop("clock")  # the total's is fuller: clock_dict, below
    hops = total.pop("hops")  # added since schema 1: after clock, below
    total.pop("rate_setting")  # per phase; the run's is in settings
    total.pop("stage")
    out.update(total)
    out["phases"] = [phase_dict(p) for p in snap.phases]
    out["self"] = self_dict(snap)
    # Full histograms, so that the JSON of several generator pods can be merged exactly.
    out["histograms"] = {
        "unit": "us",
        "latency": t.latency.encode(),
        "connect": t.connect.encode(),
        "first_token": t.first_token.encode(),
        "itl": t.itl.encode(),
        "publish_rtt": t.publish_rtt.encode(),
        "establish": t.establish.encode(),
        "negative_latency": t.negative_latency.encode(),
        "redis_to_nats": t.redis_to_nats.encode(),
        "nats_to_sse": t.nats_to_sse.encode(),
        "latency_intended": t.latency_intended.encode(),
    }
    out["publish_rtt_ms"] = publish_rtt
    out["latency_intended_ms"] = latency_intended
    out["clock"] = clock_dict(snap)
    out["hops"] = hops
    out["redis_warning"] = redis_verdict(
        t, generator_overloaded=snap.health.overloaded_windows > 0)
    out["accounting"] = accounting_dict(snap)
    out["notes"] = list(snap.notes)
    out["slo"] = [r.to_dict() for r in slo.evaluate(snap)]  # [] without --slo
    if snap.settings.json_detail:
        out["detail"] = detail_dict(snap)
    return out


def write_json(snap: StatsSnapshot, path: str) -> Path | None:
    """Write the summary to `path` (`-` = stdout). Returns the file written, if any.

    Raises WriteError (one line naming the file and the problem) when it cannot be written;
    see sse_tui.files for how (atomically, mode 0600; FIFOs and devices written through)."""
    text = json.dumps(summary_dict(snap), indent=2, allow_nan=False) + "\n"
    if path == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except (OSError, ValueError) as e:  # a closed pipe, a full disk behind a redirect
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise WriteError(f"cannot write the summary to stdout: {why}") from None
        return None
    return write_private_atomically(path, text)
