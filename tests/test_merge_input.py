"""`sse-tui merge` on input that is not what `--json` wrote: one line naming the file and
the problem, exit 2, never a traceback."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sse_tui.engine.engine import LoadEngine
from sse_tui.report import summary_dict
from sse_tui.settings import Settings


def merge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sse_tui", "merge", *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def good() -> dict[str, Any]:
    """A real summary, with a few samples in its histograms."""
    engine = LoadEngine(Settings(run_id="good"))
    for us in (800, 1200, 5000):
        engine.phase.latency.record(us)
        engine.phase.publish_rtt.record(us // 4)
    engine.phase.tokens_published = engine.phase.tokens_received = 3
    data: dict[str, Any] = json.loads(json.dumps(summary_dict(engine.snapshot())))
    return data


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value
    return change


_DELETE = object()

BROKEN = [
    (_set("settings", 1), "settings is not an object"),
    (_set("settings.conversations", "five"), "settings.conversations is missing or not a whole"),
    (_set("tokens_published", "many"), "a counter is not a number"),
    (_set("conversations", 5), "a counter is not a number"),
    (_set("errors_by_kind", {"x": "1"}), "errors_by_kind is not an object of counts"),
    (_set("histograms", []), "histograms is not an object"),
    (_set("histograms.latency", _DELETE), "histograms.latency is missing"),
    (_set("histograms.latency.hdr", "!!not an hdr histogram!!"),
     "histograms.latency does not decode"),
    (_set("histograms.latency.hdr", "HISTFAAAACR4nJNpmSzMwMDAxgABzFCaEUzOmTGByQ"),
     "histograms.latency does not decode"),
    (_set("histograms.latency.count", -1), "histograms.latency.count is missing or not a num"),
    (_set("histograms.connect.max_us", None), "histograms.connect.max_us"),
]


@pytest.mark.parametrize(("change", "needle"), BROKEN)
def test_a_malformed_summary_is_one_line_exit_2(good: dict[str, Any], tmp_path: Path,
                                                change: Callable[[dict[str, Any]], None],
                                                needle: str) -> None:
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(good))
    bad_data = copy.deepcopy(good)
    change(bad_data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_data))
    r = merge_cli(str(ok), str(bad))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"sse-tui: {bad} is not a usable sse-tui --json summary: ")
    assert needle in lines[0] and r.stdout == ""


@pytest.mark.parametrize(("content", "needle"), [
    (b"{", "is not JSON"),
    (b"\xff\xfe\x00garbage", "is not JSON (not even text)"),
    (b"[1, 2]", "is not an sse-tui --json summary"),
    (b"{}", "is not an sse-tui --json summary"),
    (b"null", "is not an sse-tui --json summary"),
])
def test_what_is_not_a_summary_at_all(tmp_path: Path, content: bytes, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    r = merge_cli(str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith(f"sse-tui: {bad} ") and needle in r.stderr
    assert "Traceback" not in r.stderr


def test_a_missing_file_and_a_directory(tmp_path: Path) -> None:
    r = merge_cli(str(tmp_path / "nope.json"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"sse-tui: cannot read {tmp_path / 'nope.json'}: " \
                               "No such file or directory"
    r = merge_cli(str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip() == f"sse-tui: {tmp_path} is a directory; pass the files --json wrote"


def test_an_unwritable_merge_output_is_refused_before_reading(good: dict[str, Any],
                                                              tmp_path: Path) -> None:
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(good))
    r = merge_cli(str(ok), "--json", "/proc/merged.json")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == ("sse-tui: merge: --json: cannot write '/proc/merged.json': "
                                "No such file or directory; choose a writable location")


def test_a_summary_from_before_publish_rtt_still_merges(good: dict[str, Any],
                                                        tmp_path: Path) -> None:
    old = copy.deepcopy(good)
    del old["histograms"]["publish_rtt"]
    paths = []
    for i, d in enumerate((good, old)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(d))
    out = tmp_path / "merged.json"
    r = merge_cli(*map(str, paths), "--json", str(out))
    assert r.returncode == 0, r.stderr
    merged = json.loads(out.read_text())
    assert merged["latency_ms"]["count"] == 6
    assert merged["publish_rtt_ms"]["count"] == 3  # the old one had none to add
    assert merged["tokens_published"] == 6
