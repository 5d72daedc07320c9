"""`sse-tui merge A.json B.json …`: one summary from the JSON of several generators.

Several pods (the Indexed Job) each write a summary with their full HDR histograms, so the
merge is exact: counters add up, histograms are added bucket by bucket, and percentiles are
computed from the merged histogram — never averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sse_tui.engine.stats import LatencyHistogram
from sse_tui.report import format_summary, write_json
from sse_tui.settings import Settings, UsageError
from sse_tui.snapshot import Distribution, HistogramSnapshot, PhaseStats, SelfHealth, StatsSnapshot

_SUMMED = ("tokens_published", "tokens_received", "tokens_unheard", "publish_errors",
           "connections_opened", "connections_closed", "tokens_missing", "tokens_duplicated",
           "tokens_out_of_order", "streams_ended_without_done", "reconnects")
_HISTOGRAMS = ("latency", "connect", "first_token", "itl")


def load_summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not JSON ({e}); pass the files --json wrote") from None
    if not isinstance(data, dict) or "histograms" not in data or "settings" not in data:
        raise UsageError(f"{path} is not an sse-tui --json summary (no histograms/settings)")
    return data


def merge(summaries: Sequence[dict[str, Any]]) -> StatsSnapshot:
    """Combine summaries of generators that ran side by side into one snapshot."""
    counters = {k: sum(int(s.get(k, 0)) for s in summaries) for k in _SUMMED}
    errors: Counter[str] = Counter()
    conv = Counter[str]()
    hists = {name: LatencyHistogram() for name in _HISTOGRAMS}
    for s in summaries:
        errors.update({k: int(v) for k, v in s.get("errors_by_kind", {}).items()})
        conv.update({k: int(v) for k, v in s.get("conversations", {}).items()})
        for name in _HISTOGRAMS:
            hists[name].add(LatencyHistogram.decode(s["histograms"][name]))
    elapsed = max(float(s.get("elapsed_s", 0.0)) for s in summaries)
    first = summaries[0]["settings"]
    settings = Settings(
        mode=first["mode"], redis=first["redis"], sse=first["sse"],
        conversations=sum(int(s["settings"]["conversations"]) for s in summaries),
        tokens=int(first["tokens"]), delay_ms=float(first["delay_ms"]),
        duration_s=float(first["duration_s"]),
        run_id="+".join(str(s["settings"].get("run_id", "?")) for s in summaries),
        channel_prefix=first.get("channel_prefix", "llm:tokens:"),
        transport=first.get("transport", "raw"))
    frozen: dict[str, HistogramSnapshot] = {n: h.freeze(copy=False) for n, h in hists.items()}
    total = PhaseStats(
        index=-1, label="merged", started_s=0.0, ended_s=elapsed,
        conversations=settings.conversations, delay_ms=settings.delay_ms, elapsed_s=elapsed,
        errors=dict(errors), conversations_started=conv["started"],
        conversations_completed=conv["completed"], conversations_incomplete=conv["incomplete"],
        conversations_cut_short=conv["cut_short"],
        latency=frozen["latency"], connect=frozen["connect"],
        first_token=frozen["first_token"], itl=frozen["itl"], **counters)
    warnings = [f"{s['settings'].get('run_id')}: {s['self']['warning']}"
                for s in summaries if s.get("self", {}).get("warning")]
    failed = [f"{s['settings'].get('run_id')}: {s['fatal_error']}"
              for s in summaries if s.get("fatal_error")]
    empty = Distribution.empty()
    return StatsSnapshot(
        taken_at_ns=0, state="failed" if failed else "finished", settings=settings,
        elapsed_s=elapsed, remaining_s=None, phase_index=0, phases=(), total=total,
        conversations=(), conversations_live=0,
        health=SelfHealth(empty, empty, 0.0, "; ".join(warnings) or None),
        fatal_error="; ".join(failed) or None)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"merge: {message}; see sse-tui merge --help")


def main(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="sse-tui merge",
        description="Merge the --json summaries of generators that ran side by side "
                    "(exact: histograms are added, not percentiles averaged).")
    p.add_argument("files", nargs="+", type=Path, metavar="SUMMARY.json")
    p.add_argument("--json", dest="json_path", metavar="PATH|-",
                   help="write the merged summary as JSON (- for stdout)")
    args = p.parse_args(argv)
    snap = merge([load_summary(f) for f in args.files])
    out = sys.stderr if args.json_path == "-" else sys.stdout
    print(f"merged {len(args.files)} summaries", file=out)
    print(format_summary(snap), file=out, end="")
    if args.json_path:
        write_json(snap, args.json_path)
    return 0
