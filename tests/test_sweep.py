"""`sse-tui sweep`: the capacity search, against the demo sandbox with a load-dependent delay.

The sandbox adapter's `overload` fault holds every token `overload-delay` ms longer while more
than `overload` streams are open, so the system under test has a known capacity: 12
conversations live at once. The sweeps here are real headless runs of the CLI.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sse_tui.__main__ import main
from sse_tui.engine import loops
from sse_tui.sandbox import FaultConfig, Sandbox
from sse_tui.sweep_search import CapacitySearch

CAPACITY = 12  # streams the sandbox serves without the delay
DELAY_MS = 150
SLO = "p99<60ms,missing=0"
# Short levels: 2 s measured after 0.5 s of warm-up; short conversations (20 tokens, 20 ms
# apart) turn the closed loop over several times per level.
QUICK = ["--step-duration", "2s", "--warmup", "0.5s", "--grace", "0.5s", "-t", "20", "-d", "20"]


def sweep_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sse_tui", "sweep", *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[subprocess.CompletedProcess[str], dict[str, Any]]]:
    """One sweep from 2 conversations up against a sandbox that breaks above 12."""
    out = tmp_path_factory.mktemp("sweep") / "sweep.json"
    proc = sweep_cli("--demo", "--faults", f"overload={CAPACITY},overload-delay={DELAY_MS}",
                     "--slo", SLO, "--from", "2", "--to", "64", *QUICK, "--json", str(out))
    assert out.exists(), f"no JSON written; stderr: {proc.stderr}"
    yield proc, json.loads(out.read_text())


def test_sweep_finds_the_level_where_the_slo_breaks(
        swept: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, doc = swept
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answer = doc["answer"]
    assert answer["outcome"] == "found"
    assert CAPACITY // 2 < answer["capacity"] <= CAPACITY
    assert answer["first_failing"] > answer["capacity"]
    assert answer["first_failing"] - answer["capacity"] <= 1  # bisected down to one apart
    assert f"Capacity: {answer['capacity']} conversations" in proc.stdout
    # Every level above the capacity of the system failed for the delay. The generator kept
    # up: a level where its self-check found it overloaded (this machine is shared) was
    # tried again at once, and then it did keep up.
    levels = doc["levels"]
    for i, level in enumerate(levels):
        if level["verdict"] == "generator overloaded":
            assert levels[i + 1]["level"] == level["level"], proc.stdout
            assert levels[i + 1]["self_check"]["overloaded"] is False, proc.stdout
        elif level["level"] > CAPACITY:
            assert level["verdict"] == "fail"
            assert level["figures"]["latency_ms"]["p99"] >= DELAY_MS
    # The chart is drawn: its two axis labels.
    assert "• received/s" in proc.stdout and "× p99 ms" in proc.stdout


def test_the_json_holds_every_level_tried(
        swept: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, doc = swept
    levels = doc["levels"]
    # Stepping 2, 4, 8, 16 and bisecting: the printed table has as many rows as the JSON.
    assert [lv["order"] for lv in levels] == list(range(1, len(levels) + 1))
    distinct = [lv["level"] for i, lv in enumerate(levels)
                if i == 0 or levels[i - 1]["level"] != lv["level"]]  # a level tried again
    assert distinct[:4] == [2, 4, 8, 16], proc.stdout
    assert len(distinct) > 4
    table = proc.stdout.split("=== Capacity search ===", 1)[1]
    for lv in levels:
        assert f"\n{lv['order']:>2} {lv['level']:>9} " in table
    assert doc["plan"] == {"axis": "conversations", "unit": "conversations", "from": 2,
                           "to": 64, "factor": 2.0, "step_duration_s": 2.0, "warmup_s": 0.5,
                           "resolution": 0.1}
    assert doc["slo"] == SLO.split(",")
    for lv in levels:
        # Each level ran at its own settings: one conversation fewer during the warm-up,
        # then the level; the measured phase is the level's.
        assert lv["settings"]["conversations"] == lv["level"] - 1 == lv["warmup_level"]
        assert lv["settings"]["duration_s"] == 2.5
        figures = lv["figures"]
        assert figures["conversations_setting"] == lv["level"]
        assert figures["tokens_received"] > 0
        assert 1.5 < lv["measured_s"] <= 2.1
        assert [r["clause"] for r in lv["slo"]] == ["p99<60ms", "missing=0"]
        if not lv["self_check"]["overloaded"]:
            assert lv["verdict"] == ("pass" if all(r["verdict"] == "pass" for r in lv["slo"])
                                     else "fail")
        else:
            assert lv["verdict"] == "generator overloaded"
    passing = [lv["level"] for lv in levels if lv["verdict"] == "pass"]
    assert doc["answer"]["capacity"] == max(passing)


def test_a_first_level_that_fails_exits_3(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with Sandbox(faults=FaultConfig(overload_streams=2, overload_delay_ms=DELAY_MS)) as sb:
        status = main(["sweep", "-r", sb.redis_address, "-s", sb.sse_url, "--slo", SLO,
                       "--from", "4", *QUICK])
    out, err = capsys.readouterr()
    assert status == 3, out + err
    assert "even the first level, 4 conversations, failed the SLO (p99<60ms:" in err
    tried = [line for line in out.splitlines() if line.startswith("level ")]
    assert tried and all(line.endswith(": 4 conversations") for line in tried)


def _hold_the_engine_loop(monkeypatch: pytest.MonkeyPatch, hold_s: float,
                          every_s: float) -> None:
    """Every loop the engine runs on is held `hold_s` of each `every_s`, as a saturated
    generator's loop is (what tests/test_selfcheck.py does once)."""
    made = loops.new_loop

    def held() -> asyncio.AbstractEventLoop:
        loop = made()

        def hold() -> None:
            time.sleep(hold_s)
            loop.call_later(every_s, hold)

        loop.call_soon(hold)
        return loop

    monkeypatch.setattr(loops, "new_loop", held)


def test_an_overloaded_generator_stops_the_sweep_with_exit_1(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator whose loop is held 30 ms of every 80: its self-check finds the level
    overloaded, the level is tried once more, and the sweep stops there with nothing
    concluded. (The load alone no longer does it reliably: 200, then 1000 conversations at
    delay 0 overloaded the generator until the per-token work halved its cost; now the
    sandbox saturates first, which is the system's limit, not the generator's.)"""
    _hold_the_engine_loop(monkeypatch, 0.03, 0.05)
    status = main(["sweep", "-r", sandbox.redis_address, "-s", sandbox.sse_url,
                   "--slo", "p99<10s", "--from", "20", *QUICK])
    out, err = capsys.readouterr()
    assert status == 1, out + err
    assert "the load generator itself was overloaded" in err
    assert "no capacity concluded" in out
    # The level tried twice (once more, in case of a passing disturbance), then nothing else.
    tried = [line for line in out.splitlines() if line.startswith("level ")]
    assert tried == ["level 1 (step): 20 conversations",
                     "level 2 (step, again): 20 conversations"], out
    assert out.count("OVERLOADED") >= 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "p99<50"], "invalid value for --slo: clause 'p99<50': a latency takes a "
                              "duration with its unit"),
        ([], "sse-tui sweep needs --slo"),
        (["--slo", "p99<50ms", "--from", "0"], "invalid value for --from: '0' is not a whole "
                                               "number of conversations of at least 1"),
        (["--slo", "p99<50ms", "-from", "ten"], "invalid value for -from: 'ten'"),
        (["--slo", "p99<50ms", "--from", "20", "--to", "10"], "--to 10 is below --from 20"),
        (["--slo", "p99<50ms", "--to"], "flag --to needs a value"),
        (["--slo", "p99<50ms", "--factor", "1"], "invalid value for --factor: '1'; give a "
                                                 "number above 1"),
        (["--slo", "p99<50ms", "--step-duration", "500ms"], "--step-duration must be at "
                                                            "least 1s"),
        (["--slo", "p99<50ms", "--warmup", "soon"], "invalid value for --warmup: invalid "
                                                    "duration 'soon'"),
        (["--slo", "p99<50ms", "--to", "2000000"], "--to 2000000 is more conversations than "
                                                   "one generator process can hold"),
        (["--slo", "p99<50ms", "-m", "consumer"], "sse-tui sweep needs --mode both"),
        (["--slo", "p99<50ms", "--stages", "10:1s"], "--stages does not apply to sse-tui "
                                                     "sweep"),
        (["--slo", "p99<50ms", "--demo", "--faults", "overload=3"], "invalid --faults: "
                                                                    "overload_streams and "
                                                                    "overload_delay_ms go "
                                                                    "together"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["sweep", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("sse-tui: "), err
    assert message in err
    assert time.monotonic() - started < 2  # refused before anything starts


def test_the_sweep_flags_belong_to_the_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--from", "3"]) == 2
    assert "flag --from applies only to sse-tui sweep" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: sse-tui sweep --slo CLAUSES")
    for flag in ("--from N", "--to N", "--factor F", "--step-duration DURATION",
                 "--warmup DURATION", "--conversations N"):
        assert flag in help_text


# --- the sandbox's load-dependent delay -------------------------------------------------------

async def test_the_overload_fault_delays_tokens_while_too_many_streams_are_open() -> None:
    """overload=1: a conversation's tokens are on time while its stream is the only one,
    held 1 s while a second stream is open, and never overtaken by a later token that
    comes once the second stream has gone."""
    from tests.conftest import until
    from tests.test_sandbox import new_id, open_stream, publish_tokens

    with Sandbox(faults=FaultConfig(overload_streams=1, overload_delay_ms=1000)) as sb:
        cid = new_id()
        response, events = await open_stream(sb.sse_url, cid)
        received: list[tuple[str | None, float]] = []

        async def read() -> None:
            async for e in events:
                if e.event == "token":
                    received.append((e.id, time.monotonic()))

        reader = asyncio.create_task(read())
        sent = time.monotonic()
        await publish_tokens(sb.redis_url, cid, 1, 1, 3)
        await until(lambda: len(received) == 1, what="token 1")
        assert received[0][1] - sent < 0.5  # one stream open: not held
        other, _ = await open_stream(sb.sse_url, new_id())  # two streams: more than 1
        sent = time.monotonic()
        await publish_tokens(sb.redis_url, cid, 2, 2, 3)
        other.close()
        await until(lambda: sb.adapter_stats()["connections_active"] == 1, timeout=5,
                    what="the second stream to close")
        await publish_tokens(sb.redis_url, cid, 3, 3, 3)  # not held itself, but after 2
        await asyncio.wait_for(reader, 10)
        response.close()
    assert [i for i, _ in received] == ["1", "2", "3"]
    assert received[1][1] - sent >= 1.0
    assert received[2][1] >= received[1][1]


# --- the search alone ------------------------------------------------------------------------

def search_against(capacity: float, start: float, stop: float, factor: float = 2.0,
                   whole: bool = True) -> CapacitySearch:
    """Run the search against a system that meets the SLO up to `capacity`."""
    search = CapacitySearch(start, stop, factor, whole=whole)
    while (level := search.next_level()) is not None:
        search.record(level, level <= capacity)
    return search


@pytest.mark.parametrize("capacity", [1, 2, 7, 12, 13, 99, 100, 1000, 1999])
def test_the_search_brackets_the_capacity(capacity: int) -> None:
    s = search_against(capacity, 1, 2000)
    assert s.passed is not None and s.failed is not None
    assert s.passed <= capacity < s.failed
    # Within 10% of the level that passed, or one conversation apart.
    assert s.failed - s.passed <= 1 or s.failed - s.passed < 0.1 * s.passed
    if capacity < 20:
        assert s.passed == capacity  # 10% of it is under one conversation
    assert len(s.tried) <= 11 + 10  # ~log2(2000) steps, ~log2 of the gap to bisect
    assert len(set(s.tried)) == len(s.tried)  # no level tried twice


def test_the_search_ends_at_the_bounds() -> None:
    above = search_against(5000, 10, 2000)
    assert above.failed is None and above.passed == 2000  # --to itself is tried
    assert above.tried[-2:] == [1280, 2000]
    below = search_against(5, 10, 2000)
    assert below.passed is None and below.tried == [10]


def test_the_search_of_a_rate_keeps_three_digits() -> None:
    s = search_against(37.3, 2.5, 500, factor=3, whole=False)
    assert s.tried[:4] == [2.5, 7.5, 22.5, 67.5]
    assert s.passed is not None and s.failed is not None
    assert s.passed <= 37.3 < s.failed and (s.failed - s.passed) < 0.1 * s.passed
