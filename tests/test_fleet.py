"""The fleet (sse_tui.fleet, docs/fleet.md): generator processes with --fleet against the
sandbox's real Redis, and `sse-tui fleet` merging and steering them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sse_tui.engine.stats import LatencyHistogram
from sse_tui.fleet.commands import apply_command, conversations_share, encode_command
from sse_tui.fleet.monitor import FleetState
from sse_tui.fleet.wire import decode_report, encode_report
from sse_tui.report import counters_from_json
from sse_tui.sandbox import Sandbox
from tests.conftest import until, wait_until
from tests.terminal import Terminal

HISTOGRAMS = ("latency", "connect", "first_token", "itl", "publish_rtt")


def fleet_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


class Procs:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "sse_tui", *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.started.append(proc)
        return proc

    def generator(self, sb: Sandbox, fleet: str, run_id: str, tmp: Path,
                  *more: str) -> subprocess.Popen[str]:
        return self.start("--no-tui", "--fleet", fleet, "--redis", sb.redis_address,
                          "--sse", sb.sse_url, "--run-id", run_id,
                          "--json", str(tmp / f"{run_id}.json"), *more)


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    for proc in p.started:  # whatever a failing test left running, by pid
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# --- the parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("total,n", [(30, 4), (5, 2), (7, 7), (100, 3)])
def test_shares_add_up_to_the_total(total: int, n: int) -> None:
    shares = [conversations_share(total, i, n) for i in range(n)]
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *args))


def test_a_command_is_applied_as_the_members_share() -> None:
    members = ["a", "b", "c"]
    got = {}
    for me in members:
        r = Recorder()
        apply_command(encode_command("conversations", 10, members), me, r)
        apply_command(encode_command("rate", 9, members), me, r)
        apply_command(encode_command("delay", 20, members), me, r)
        apply_command(encode_command("pause", None, members), me, r)
        got[me] = r.calls
    assert [c[0][1] for c in got.values()] == [4, 3, 3]
    assert all(c[1] == ("set_rate", 3.0) for c in got.values())
    assert all(c[2:] == [("set_delay", 20.0), ("pause",)] for c in got.values())
    late = Recorder()  # joined after the command was sent: not in its members
    assert apply_command(encode_command("conversations", 10, members), "d", late) is None
    assert apply_command(b"not json", "a", late) is None
    assert late.calls == []


def test_a_silent_member_is_lost_and_keeps_its_figures() -> None:
    now = [100.0]
    state = FleetState("f", expect=2, clock=lambda: now[0])
    summary = {"elapsed_s": 1.0, "tokens_received": 10}
    state.take_report("a", 1, encode_report({"registered_ns": 1, "finished": False}, summary))
    state.take_report("b", 1, encode_report({"registered_ns": 2, "finished": True}, summary))
    assert not state.done
    now[0] += 4.9
    assert state.mark_lost() == []
    now[0] += 0.2
    assert state.mark_lost() == ["a"]
    assert state.done and state.lost_ids == ["a"]
    assert state.members["a"].summary == summary
    assert [r.status for r in state.rows()] == ["lost", "finished"]
    assert state.exit_status(None) == 1
    with pytest.raises(ValueError):
        decode_report(b"junk")


def test_the_live_merge_adds_up_the_members_load_and_profiles() -> None:
    from sse_tui.engine.engine import LoadEngine
    from sse_tui.fleet.publisher import FleetPublisher
    from sse_tui.report import summary_dict
    from sse_tui.settings import Settings

    state = FleetState("f", expect=2)
    for i, (n, stages) in enumerate(((3, ("3:10s", "6:10s")), (4, ("4:10s", "8:10s")))):
        settings = Settings(run_id=f"m{i}", conversations=n, stages=stages, fleet="f")
        snap = LoadEngine(settings).snapshot()
        member = FleetPublisher(settings).member(snap)
        state.take_report(f"m{i}", 1, encode_report(member, summary_dict(snap)))
    merged = state.merged()
    assert merged is not None and not merged.finished
    assert merged.settings.conversations == 7
    assert merged.profile is not None and merged.profile.target == 7
    assert (merged.profile.stage, merged.profile.stages) == (1, 2)
    assert [r.conversations for r in state.rows()] == [3, 4]
    assert state.active_ids() == ["m0", "m1"]


# --- generators and the monitor, as processes --------------------------------------------


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def hist_count(summary: dict[str, Any], name: str) -> int:
    return LatencyHistogram.decode(summary["histograms"][name]).count


def test_fleet_totals_equal_the_sum_and_the_merge_of_the_generators(
        sandbox: Sandbox, procs: Procs, tmp_path: Path) -> None:
    fleet = fleet_name()
    monitor = procs.start("fleet", fleet, "--no-tui", "-r", sandbox.redis_address,
                          "--expect", "3", "--json", str(tmp_path / "fleet.json"))
    ids = ["g1", "g2", "g3"]
    gens = [procs.generator(sandbox, fleet, f"{fleet}-{i}", tmp_path, "-c", str(n), "-t", "15",
                            "-d", "10", "--duration", "3s")
            for i, n in zip(ids, (1, 2, 3), strict=True)]
    for g in gens:
        status, _, err = finish(g)
        assert status == 0, err
    status, out, err = finish(monitor)
    assert status == 0, out + err
    assert "merged 3 summaries" in out
    files = [tmp_path / f"{fleet}-{i}.json" for i in ids]
    parts = [load(f) for f in files]
    merged = load(tmp_path / "fleet.json")
    # The fleet's totals are the sum of the three summaries ...
    total = counters_from_json(merged)
    assert total.tokens_received > 0
    for field in ("tokens_published", "tokens_received", "tokens_missing",
                  "conversations_started", "conversations_completed"):
        assert getattr(total, field) == sum(getattr(counters_from_json(p), field)
                                            for p in parts), field
    for name in HISTOGRAMS:
        assert hist_count(merged, name) == sum(hist_count(p, name) for p in parts), name
    assert merged["settings"]["conversations"] == 6
    # ... and what `sse-tui merge` computes from their files.
    r = subprocess.run([sys.executable, "-m", "sse_tui", "merge", *map(str, files), "--json",
                        str(tmp_path / "merge.json")], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    by_merge = load(tmp_path / "merge.json")
    assert counters_from_json(by_merge) == total
    assert by_merge["histograms"] == merged["histograms"]
    assert by_merge["latency_ms"] == merged["latency_ms"]


def test_a_generator_killed_mid_run_is_reported_lost(
        sandbox: Sandbox, procs: Procs, tmp_path: Path) -> None:
    fleet = fleet_name()
    monitor = procs.start("fleet", fleet, "--no-tui", "-r", sandbox.redis_address,
                          "--expect", "2", "--json", str(tmp_path / "fleet.json"))
    keeps = procs.generator(sandbox, fleet, f"{fleet}-a", tmp_path, "-c", "2", "-t", "20",
                            "-d", "10", "--duration", "4s")
    killed = procs.generator(sandbox, fleet, f"{fleet}-b", tmp_path, "-c", "2", "-t", "1000",
                             "-d", "10", "--duration", "60s")
    import redis

    client = redis.Redis.from_url(f"redis://{sandbox.redis_address}")
    beats = f"sse-tui:fleet:{fleet}:beats"
    wait_until(lambda: int(client.hget(beats, f"{fleet}-b") or 0) >= 2, timeout=20,
               what="the doomed generator to report twice")
    killed.send_signal(signal.SIGKILL)
    assert finish(keeps)[0] == 0
    status, out, err = finish(monitor)
    assert status == 1, out + err  # a lost generator: the merged figures are partial
    assert f"{fleet}-b was lost" in err
    merged = load(tmp_path / "fleet.json")
    assert f"{fleet}-b" in merged["settings"]["run_id"]  # its last figures are kept
    assert counters_from_json(merged).tokens_received > counters_from_json(
        load(tmp_path / f"{fleet}-a.json")).tokens_received
    client.close()


async def test_plus_in_the_fleet_tui_changes_the_conversations_of_the_fleet(
        sandbox: Sandbox, procs: Procs, tmp_path: Path) -> None:
    from sse_tui.fleet.handle import FleetHandle
    from sse_tui.fleet.main import parse, redis_settings
    from sse_tui.fleet.view import FleetApp

    fleet = fleet_name()
    for i in ("a", "b"):
        procs.generator(sandbox, fleet, f"{fleet}-{i}", tmp_path, "-c", "2", "-t", "1000",
                        "-d", "20", "--duration", "30s")
    state = FleetState(fleet, expect=2)
    handle = FleetHandle(redis_settings(parse([fleet, "-r", sandbox.redis_address])), state)
    app = FleetApp(handle, poll_interval=0.1)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            def live() -> int:
                return sum(r.live for r in handle.rows())

            await until(lambda: len(handle.rows()) == 2 and live() == 4, timeout=20,
                        what="two generators with 2 live conversations each",
                        pause=pilot.pause)
            assert app.handle.settings.conversations == 4
            await pilot.press("plus")  # 4 -> 5 fleet-wide: 3 + 2
            await until(lambda: live() == 5, timeout=15, what="5 live conversations in all",
                        pause=pilot.pause)
            assert sorted(r.conversations for r in handle.rows()) == [2, 3]
            table = app.query_one("#generator-table")
            assert table.row_count == 2
            await pilot.press("p")
            await until(lambda: all(r.status == "paused" for r in handle.rows()), timeout=15,
                        what="every generator paused", pause=pilot.pause)
    finally:
        handle.stop()
        handle.join(10)
    for proc in procs.started:  # end the generators: their summaries are not this test's
        proc.send_signal(signal.SIGTERM)
    for proc in procs.started:
        assert finish(proc)[0] in (0, 130), proc.args
    assert os.path.exists(tmp_path / f"{fleet}-a.json")


# --- as `kubectl exec -it deploy/sse-tui -- sse-tui …` gives it: a pty, no TERM, 80x24 ----


def kubectl_exec_terminal(argv: list[str]) -> Terminal:
    """A program on a pty of 80x24 with TERM, COLUMNS and LINES unset (kubectl exec -it sets
    the size on the pty and nothing in the environment), its screen kept by pyte."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TERM", "COLUMNS", "LINES", "COLORTERM", "NO_COLOR")
           and not k.startswith(("TEXTUAL", "PYTEST"))}
    return Terminal(argv, env=env, size=(80, 24), size_in_env=False)


def showing(*words: str) -> Callable[[str], bool]:
    return lambda screen: all(w in screen for w in words)


def test_the_monitor_works_as_kubectl_exec_gives_it_no_term_80x24() -> None:
    term = kubectl_exec_terminal([sys.executable, "-m", "sse_tui", "--demo", "-c", "2", "-t",
                                  "1000", "-d", "10", "--duration", "60s"])
    try:
        # Until a conversation streams: quit before any stream is established and the run
        # rightly ends FAILED (exit 1), which a loaded CI machine once showed.
        screen = term.wait_for(showing("Producer", "Latency", "Consumers", "recv/exp",
                                       " stream "),
                               timeout=60, what="the monitor's panels, a conversation streaming")
        assert all(len(line.rstrip()) <= 80 for line in screen.splitlines())
        assert term.quit() == 0, bytes(term.raw[-2000:])
        assert b"Tokens Published:" in term.raw and b"Traceback" not in term.raw
    finally:
        term.close()


def test_the_fleet_monitor_works_as_kubectl_exec_gives_it(
        sandbox: Sandbox, procs: Procs, tmp_path: Path) -> None:
    fleet = fleet_name()
    procs.generator(sandbox, fleet, f"{fleet}-a", tmp_path, "-c", "2", "-t", "1000", "-d", "20",
                    "--duration", "30s")
    term = kubectl_exec_terminal([sys.executable, "-m", "sse_tui", "fleet", fleet,
                                  "-r", sandbox.redis_address])
    try:
        term.wait_for(showing("Producer", "Latency", "Generators", "2 conv"), timeout=60,
                      what="the fleet monitor's panels")
        assert term.quit() == 0, bytes(term.raw[-2000:])
        # Quitting the monitor leaves the generators running; it prints the figures so far.
        assert b"merged 1 summaries" in term.raw and b"Traceback" not in term.raw
    finally:
        term.close()


@pytest.mark.parametrize("args,says", [
    ([], "required: NAME"),
    (["a b"], "invalid fleet name"),
    (["f", "--expect", "0"], "--expect must be at least 1"),
    (["f", "--slo", "p99<"], "invalid value for --slo"),
    (["f", "--redis-password-file", "/nonexistent/pw"], "--redis-password-file"),
])
def test_bad_fleet_input_is_one_line_and_exit_2(
        args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sse_tui.__main__ import main

    assert main(["fleet", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_bad_fleet_name_for_a_generator_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from sse_tui.__main__ import main

    assert main(["--fleet", "a:b", "--no-tui"]) == 2
    assert "invalid fleet name" in capsys.readouterr().err


def test_the_fleet_chart_adds_the_generators_seconds_up() -> None:
    from sse_tui.fleet.monitor import fleet_timeline

    a = [[1000.2, 10, 9, 1.0, 2.0], [1001.2, 10, 10, 1.5, 3.0]]
    b = [[1001.1, 5, 5, 0.5, 9.0], [1002.1, 5, 4, None, None], "not a point"]
    points = fleet_timeline([a, b, None])
    assert [(p.t_s, p.published, p.received, p.p50_ms, p.p99_ms) for p in points] == [
        (1.0, 10, 9, 1.0, 2.0), (2.0, 15, 15, 1.5, 9.0), (3.0, 5, 4, None, None)]
    assert fleet_timeline([]) == ()
