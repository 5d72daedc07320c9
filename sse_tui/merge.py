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

from sse_tui.engine.clock import negative_warning
from sse_tui.engine.stats import LatencyHistogram
from sse_tui.files import WriteError, check_writable
from sse_tui.report import counters_from_json, format_summary, write_json
from sse_tui.settings import Settings, UsageError
from sse_tui.snapshot import (
    Counters,
    Distribution,
    HistogramSnapshot,
    PhaseStats,
    SelfHealth,
    StatsSnapshot,
)

_HISTOGRAMS = ("latency", "connect", "first_token", "itl", "publish_rtt", "establish",
               "negative_latency", "redis_to_nats", "nats_to_sse", "latency_intended")
# Summaries written before a histogram existed lack it: it merges as empty.
_OPTIONAL_HISTOGRAMS = frozenset({"publish_rtt", "establish", "negative_latency",
                                  "redis_to_nats", "nats_to_sse", "latency_intended"})


class _Malformed(Exception):
    """What is wrong with one summary; load_summary adds the file's name."""


def load_summary(path: Path) -> dict[str, Any]:
    """Read one `--json` summary and check everything merge() takes from it, so that a bad
    file is one line naming it and the problem, never a traceback halfway through."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory; pass the files --json wrote") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not JSON (not even text); pass the files --json wrote"
                         ) from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON ({e}); pass the files --json wrote") from None
    if not isinstance(data, dict) or "histograms" not in data or "settings" not in data:
        raise UsageError(f"{path} is not an sse-tui --json summary (no histograms/settings)")
    try:
        _check(data)
    except _Malformed as e:
        raise UsageError(f"{path} is not a usable sse-tui --json summary: {e}") from None
    return data


def _check(s: dict[str, Any]) -> None:
    settings = s["settings"]
    if not isinstance(settings, dict):
        raise _Malformed("settings is not an object")
    for key, kind in (("mode", str), ("redis", str), ("sse", str), ("conversations", int),
                      ("tokens", int), ("delay_ms", (int, float)), ("duration_s", (int, float))):
        if not isinstance(settings.get(key), kind) or isinstance(settings.get(key), bool):
            raise _Malformed(f"settings.{key} is missing or not a {_kind_name(kind)}")
    try:
        counters_from_json(s)
        float(s.get("elapsed_s", 0.0))
    except (TypeError, ValueError, AttributeError) as e:
        raise _Malformed(f"a counter is not a number ({e})") from None
    errors = s.get("errors_by_kind", {})
    if not isinstance(errors, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in errors.values()):
        raise _Malformed("errors_by_kind is not an object of counts")
    for key in ("self",):
        if key in s and not isinstance(s[key], dict):
            raise _Malformed(f"{key} is not an object")
    hists = s["histograms"]
    if not isinstance(hists, dict):
        raise _Malformed("histograms is not an object")
    for name in _HISTOGRAMS:
        if name not in hists and name in _OPTIONAL_HISTOGRAMS:
            continue
        h = hists.get(name)
        if not isinstance(h, dict):
            raise _Malformed(f"histograms.{name} is missing or not an object")
        for key in ("count", "sum_us", "min_us", "max_us"):
            v = h.get(key)
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise _Malformed(f"histograms.{name}.{key} is missing or not a number >= 0")
        if h["count"] and not isinstance(h.get("hdr"), str):
            raise _Malformed(f"histograms.{name}.hdr is missing")
        try:
            LatencyHistogram.decode(h)
        except Exception as e:  # base64, zlib or struct errors of a bad blob
            why = (str(e) or type(e).__name__).splitlines()[0][:100]
            raise _Malformed(f"histograms.{name} does not decode ({why})") from None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "string" if kind is str else "whole number" if kind is int else "number"


def _histogram(s: dict[str, Any], name: str) -> LatencyHistogram:
    data = s["histograms"].get(name)
    return LatencyHistogram.decode(data) if data is not None else LatencyHistogram()


def _error_examples(summaries: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One example detail per error kind: the first pod's that has one."""
    out: dict[str, str] = {}
    for s in summaries:
        examples = s.get("error_examples")
        if isinstance(examples, dict):
            for kind, example in examples.items():
                if isinstance(example, str):
                    out.setdefault(str(kind), example)
    return out


def _workers(value: Any) -> int:
    """A pod's engine processes: its `settings.workers`, 1 when absent or not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def merge(summaries: Sequence[dict[str, Any]]) -> StatsSnapshot:
    """Combine summaries of generators that ran side by side into one snapshot."""
    counters = Counters()
    errors: Counter[str] = Counter()
    hists = {name: LatencyHistogram() for name in _HISTOGRAMS}
    for s in summaries:
        counters.add(counters_from_json(s))
        errors.update({k: int(v) for k, v in s.get("errors_by_kind", {}).items()})
        for name in _HISTOGRAMS:
            hists[name].add(_histogram(s, name))
    elapsed = max(float(s.get("elapsed_s", 0.0)) for s in summaries)
    first = summaries[0]["settings"]
    settings = Settings(
        mode=first["mode"], redis=first["redis"], sse=first["sse"],
        conversations=sum(int(s["settings"]["conversations"]) for s in summaries),
        tokens=int(first["tokens"]), delay_ms=float(first["delay_ms"]),
        duration_s=float(first["duration_s"]),
        run_id="+".join(str(s["settings"].get("run_id", "?")) for s in summaries),
        channel_prefix=first.get("channel_prefix", "llm:tokens:"),
        transport=first.get("transport", "raw"),
        # Each pod's engine processes (older summaries: one).
        workers=sum(_workers(s["settings"].get("workers")) for s in summaries))
    frozen: dict[str, HistogramSnapshot] = {n: h.freeze(copy=False) for n, h in hists.items()}
    total = PhaseStats(
        **counters.counter_values(),
        index=-1, label="merged", started_s=0.0, ended_s=elapsed,
        conversations=settings.conversations, delay_ms=settings.delay_ms, elapsed_s=elapsed,
        errors=dict(errors), latency=frozen["latency"], connect=frozen["connect"],
        first_token=frozen["first_token"], itl=frozen["itl"], publish_rtt=frozen["publish_rtt"],
        establish=frozen["establish"], error_examples=_error_examples(summaries),
        negative_latency=frozen["negative_latency"],
        redis_to_nats=frozen["redis_to_nats"], nats_to_sse=frozen["nats_to_sse"],
        latency_intended=frozen["latency_intended"])
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
        fatal_error="; ".join(failed) or None, clock_warning=negative_warning(total))


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
    if args.json_path and args.json_path != "-":
        try:
            check_writable(args.json_path)
        except WriteError as e:
            raise UsageError(f"merge: --json: {e}") from None
    snap = merge([load_summary(f) for f in args.files])
    out = sys.stderr if args.json_path == "-" else sys.stdout
    print(f"merged {len(args.files)} summaries", file=out)
    print(format_summary(snap), file=out, end="")
    if args.json_path:
        try:
            write_json(snap, args.json_path)
        except WriteError as e:
            print(f"sse-tui merge: {e}", file=sys.stderr)
            return 1
    return 0
