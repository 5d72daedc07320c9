"""--timeseries: one row per second of a real run, whose per-row counts add up to the JSON
summary's totals (the last, partial second included); JSON lines or CSV; each timeline point
written once; the file private; a bad path one line and exit status 2."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sse_tui.engine.engine import LoadEngine
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings, UsageError
from sse_tui.snapshot import StatsSnapshot, TimelinePoint
from sse_tui.timeseries import COLUMNS, TimeSeriesWriter


def check_rows(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """One row per second, adding up to the run's totals."""
    assert rows
    times = [float(r["t_s"]) for r in rows]
    assert times == sorted(times) and len(set(times)) == len(times)
    lengths = [float(r["length_s"]) for r in rows]
    # Every interval about a second (a busy test machine may stretch one), the last one
    # what was left of its second; together they span the run.
    assert all(0.8 <= x <= 1.6 for x in lengths[:-1]), lengths
    assert 0 < lengths[-1] <= 1.6, lengths
    assert len(rows) in (math.floor(times[-1]), math.ceil(times[-1])), times
    assert times[-1] == pytest.approx(sum(lengths), abs=0.01)
    assert abs(times[-1] - float(summary["elapsed_s"])) < 0.5
    for key, total in (("received", "tokens_received"), ("published", "tokens_published"),
                       ("errors", "errors")):
        assert sum(int(r[key]) for r in rows) == summary[total], key
    missing = [int(r["missing_total"]) for r in rows]
    assert missing == sorted(missing) and missing[-1] == summary["tokens_missing"]
    assert {r["run_id"] for r in rows} == {summary["settings"]["run_id"]}


def run(tmp_path: Path, name: str, *extra: str) -> tuple[Path, dict[str, Any]]:
    series, out = tmp_path / name, tmp_path / "summary.json"
    r = subprocess.run(
        [sys.executable, "-m", "sse_tui", "--demo", "--no-tui", "-c", "4", "-t", "40", "-d",
         "10", "--duration", "3s", "--timeseries", str(series), "--json", str(out), *extra],
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return series, json.loads(out.read_text())


def test_a_run_with_losses_writes_one_json_row_per_second_adding_up_to_the_json(
        tmp_path: Path) -> None:
    series, summary = run(tmp_path, "run.jsonl", "--faults", "drop=0.05,seed=3")
    assert summary["tokens_missing"] > 0  # the drops show, so missing_total is tested
    rows = [json.loads(line) for line in series.read_text().splitlines()]
    assert all(list(r) == list(COLUMNS) for r in rows)
    check_rows(rows, summary)
    assert stat.S_IMODE(os.stat(series).st_mode) == 0o600
    running = [r for r in rows if r["state"] == "running"]
    assert running and all(r["conversations"] == 4 and r["delay_ms"] == 10 for r in running), (
        summary["error_examples"], rows)
    assert any(r["p99_ms"] is not None for r in rows)
    assert rows[-1]["self_lag_ms"] is not None


def test_a_csv_name_writes_csv(tmp_path: Path) -> None:
    series, summary = run(tmp_path, "run.csv")
    with series.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows: list[dict[str, Any]] = list(reader)
    check_rows(rows, summary)


async def test_the_timeline_adds_up_to_the_totals_with_the_last_partial_second(
        sandbox: Sandbox) -> None:
    """The engine closes the last, partial second when the run ends, after the drain has
    counted everything: the points alone give the run's totals."""
    engine = LoadEngine(Settings(redis=sandbox.redis_address, sse=sandbox.sse_url,
                                 conversations=3, tokens=30, delay_ms=5, duration_s=1.5,
                                 grace_s=1.0))
    final = await engine.run()
    points = final.timeline
    assert final.total.tokens_received > 0
    assert sum(p.received for p in points) == final.total.tokens_received
    assert sum(p.published for p in points) == final.total.tokens_published
    assert points[-1].length_s < 1.0  # 1.5 s and a drain: the last second is partial
    assert points[-1].state == "draining"
    assert points[-1].received_per_s == pytest.approx(points[-1].received / points[-1].length_s)


def _snapshot(run_id: str, seconds: range) -> StatsSnapshot:
    base = LoadEngine(Settings(run_id=run_id)).snapshot()
    points = tuple(TimelinePoint(float(t), 10.0, 9.0, 1.0, 2.0, published=10, received=9,
                                 wall_s=1.8e9 + t, state="running") for t in seconds)
    return dataclasses.replace(base, timeline=points)


def test_each_point_is_written_once_and_a_new_run_follows(tmp_path: Path) -> None:
    path = tmp_path / "ts.jsonl"
    path.write_text("old content that must go\n" * 100)
    os.chmod(path, 0o644)
    w = TimeSeriesWriter(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert w.write_new(_snapshot("a", range(1, 4))) == 3
    assert w.write_new(_snapshot("a", range(1, 4))) == 0  # nothing new: nothing written
    assert w.write_new(_snapshot("a", range(2, 7))) == 3  # overlapping windows
    assert w.write_new(_snapshot("a-r2", range(1, 3))) == 2  # the TUI's `r`: t starts again
    w.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["run_id"], r["t_s"]) for r in rows] == [
        ("a", 1.0), ("a", 2.0), ("a", 3.0), ("a", 4.0), ("a", 5.0), ("a", 6.0),
        ("a-r2", 1.0), ("a-r2", 2.0)]
    assert rows[0]["wall_time"] == "2027-01-15T08:00:01.000Z"
    assert rows[0]["p50_ms"] == 1.0 and rows[0]["received"] == 9


def test_a_path_that_cannot_be_written_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        TimeSeriesWriter(str(tmp_path / "no" / "such" / "dir.jsonl"))
    with pytest.raises(UsageError, match="is a directory"):
        TimeSeriesWriter(str(tmp_path))
    r = subprocess.run(
        [sys.executable, "-m", "sse_tui", "--demo", "--no-tui", "--timeseries",
         str(tmp_path / "missing" / "ts.csv")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and "--timeseries" in r.stderr, r.stderr
