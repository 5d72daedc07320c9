"""Open-loop load (--rate) and load profiles (--stages), against the real sandbox.

The arrival process is checked on its own (the spacing of its gaps), and the engine is
checked to realize it on a real loop: the number of conversations started, the arrivals a
full cap turned away, one phase per stage, the end of the run after the profile, and the
operator taking the load over (in the engine, through the engine process, and in the TUI).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from sse_tui.__main__ import main
from sse_tui.cli_args import parse_args
from sse_tui.engine.arrivals import ArrivalProcess, Arrivals
from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.messages import HoldProfile, ReleaseProfile, SetConversations, apply
from sse_tui.engine.process import EngineProcess
from sse_tui.engine.stages import LoadProfile
from sse_tui.report import format_summary, progress_line, summary_dict
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot
from sse_tui.tui.app import make_app, step_rate
from sse_tui.tui.widgets.producer import ProducerPanel
from sse_tui.tui.widgets.status import StatusLine
from sse_tui.values import Stage, parse_stages
from tests.conftest import until, wait_until
from tests.fake_engine import FakeEngine, wait_for


def load(sb: Sandbox, run_id: str, **kw: Any) -> Settings:
    """Short conversations (3 tokens, 5 ms apart), so that they finish while arrivals go on."""
    base: dict[str, Any] = dict(mode="both", redis=sb.redis_address, sse=sb.sse_url,
                                conversations=100, tokens=3, delay_ms=5, grace_s=0.5,
                                run_id=run_id)
    base.update(kw)
    return Settings(**base)


async def run(engine: LoadEngine, timeout: float = 40) -> StatsSnapshot:
    return await asyncio.wait_for(engine.run(), timeout)


# -- the arrival process ---------------------------------------------------------------------

def cv(gaps: list[float]) -> float:
    """Coefficient of variation: standard deviation over mean."""
    return statistics.pstdev(gaps) / statistics.fmean(gaps)


def test_poisson_gaps_vary_as_exponential_ones_and_uniform_gaps_do_not() -> None:
    rate = 20.0
    poisson = ArrivalProcess("poisson", seed=11)
    gaps = [poisson.gap_s(rate) for _ in range(20_000)]
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.03)
    assert cv(gaps) == pytest.approx(1.0, abs=0.05)  # exponential: CV 1
    uniform = ArrivalProcess("uniform", seed=11)
    fixed = [uniform.gap_s(rate) for _ in range(1000)]
    assert statistics.fmean(fixed) == pytest.approx(1 / rate)
    assert cv(fixed) == pytest.approx(0.0, abs=1e-9)
    # A seed makes the random gaps repeatable; another seed gives others.
    again = ArrivalProcess("poisson", seed=11)
    assert [again.gap_s(rate) for _ in range(20_000)] == gaps
    assert ArrivalProcess("poisson", seed=12).gap_s(rate) != gaps[0]


async def test_arrivals_follow_the_rate_and_its_changes_on_a_real_loop() -> None:
    seen: list[float] = []
    loop = asyncio.get_running_loop()
    arrivals = Arrivals(ArrivalProcess("uniform"), 100.0, lambda: seen.append(loop.time()))
    arrivals.start()
    await until(lambda: len(seen) >= 30, timeout=5, what="30 arrivals at 100/s")
    arrivals.set_rate(400.0)
    mark = len(seen)
    await until(lambda: len(seen) >= mark + 60, timeout=5, what="60 arrivals at 400/s")
    arrivals.pause()
    held = len(seen)
    await asyncio.sleep(0.1)  # nothing may arrive while paused: a span with no event
    assert len(seen) == held == arrivals.arrived
    slow = [b - a for a, b in itertools.pairwise(seen[:mark])]
    fast = [b - a for a, b in itertools.pairwise(seen[mark + 5:held])]
    # An absolute schedule: the mean gap is the rate's even when single timers run late.
    assert statistics.fmean(slow) == pytest.approx(0.01, rel=0.15)
    assert statistics.fmean(fast) == pytest.approx(0.0025, rel=0.25)


def predicted_arrivals(kind: str, seed: int, rate: float, within_s: float) -> int:
    """How many arrivals the process, seeded so, puts within the first `within_s`."""
    process = ArrivalProcess(kind, seed)
    t, n = process.first_s(rate), 0
    while t < within_s:
        n += 1
        t += process.gap_s(rate)
    return n


# -- open loop against the sandbox -----------------------------------------------------------

async def test_rate_starts_the_requested_number_of_conversations(sandbox: Sandbox) -> None:
    """--rate 20 for 10 s: 200 ± 10 % started, for fixed spacing and for a seeded Poisson
    process (whose count is then the one its own gaps predict)."""
    uniform = LoadEngine(load(sandbox, "lm-rate-u", rate=20.0, arrival="uniform",
                              duration_s=10.0))
    poisson = LoadEngine(load(sandbox, "lm-rate-p", rate=20.0, arrival="poisson", seed=5,
                              duration_s=10.0))
    snaps = await asyncio.gather(run(uniform), run(poisson))
    for snap in snaps:
        t = snap.total
        assert snap.state == "finished" and snap.fatal_error is None
        assert t.arrivals_dropped == 0
        assert t.tokens_missing == 0 and t.tokens_received == t.tokens_published
        assert len(snap.phases) == 1 and snap.phases[0].rate == 20.0
    started = [s.total.conversations_started for s in snaps]
    assert 180 <= started[0] <= 220, started
    expected = predicted_arrivals("poisson", 5, 20.0, 10.0)
    # The engine's clock starts before its preflight (a few ms), the schedule after it.
    assert expected - 3 <= started[1] <= expected, (started[1], expected)
    # The closed loop's replacements never happen in an open loop: started == arrivals.
    for engine, snap in zip((uniform, poisson), snaps, strict=True):
        assert engine._arrivals is not None
        assert engine._arrivals.arrived == snap.total.conversations_started


async def test_a_full_cap_drops_arrivals_and_counts_every_one(sandbox: Sandbox) -> None:
    # 400 tokens 10 ms apart: no conversation ends during the run, so the cap stays full.
    engine = LoadEngine(load(sandbox, "lm-cap", rate=50.0, arrival="uniform", conversations=3,
                             tokens=400, delay_ms=10, duration_s=2.0, grace_s=0.2))
    snap = await run(engine)
    t = snap.total
    assert engine._arrivals is not None
    arrived = engine._arrivals.arrived
    assert 90 <= arrived <= 101
    assert t.conversations_started == 3
    assert t.arrivals_dropped == arrived - 3  # every arrival started or counted dropped
    data = json.loads(json.dumps(summary_dict(snap)))
    assert data["arrivals_dropped"] == t.arrivals_dropped
    assert data["phases"][0]["arrivals_dropped"] == t.arrivals_dropped
    assert data["settings"]["rate"] == 50.0 and data["settings"]["arrival"] == "uniform"
    text = format_summary(snap)
    assert f"{t.arrivals_dropped} arrivals dropped by the cap" in text
    assert "Load model:           open loop: uniform arrivals at 50/s, at most 3 live" in text
    assert f"Dropped: {t.arrivals_dropped}" in progress_line(snap)


# -- stages ----------------------------------------------------------------------------------

async def test_stages_make_one_phase_each_and_the_run_ends_with_the_profile(
        sandbox: Sandbox) -> None:
    args = ["-r", sandbox.redis_address, "-s", sandbox.sse_url, "-t", "3", "-d", "5",
            "--grace", "0.5s"]
    closed = parse_args([*args, "--stages", "3:2s,6:2s", "--run-id", "lm-stages-c"]).settings
    # With --rate the stages set the rate (arrivals per second).
    opened = parse_args([*args, "--rate", "1", "--arrival", "uniform",
                         "--stages", "10:1s,30:1s", "--run-id", "lm-stages-o"]).settings
    assert closed.duration_s == 4.0 and opened.duration_s == 2.0  # the profiles' lengths
    c_snap, o_snap = await asyncio.gather(run(LoadEngine(closed)), run(LoadEngine(opened)))

    assert c_snap.state == "finished" and c_snap.fatal_error is None
    assert [(p.conversations, p.stage) for p in c_snap.phases] == [(3, 1), (6, 2)]
    assert c_snap.phases[1].started_s == pytest.approx(2.0, abs=0.2)
    assert c_snap.elapsed_s == pytest.approx(4.0, abs=0.5)  # plus the drain
    assert c_snap.total.tokens_missing == 0
    data = json.loads(json.dumps(summary_dict(c_snap)))
    assert data["settings"]["stages"] == ["3:2s", "6:2s"]
    assert [(p["conversations_setting"], p["stage"]) for p in data["phases"]] == [(3, 1), (6, 2)]
    assert c_snap.profile is not None and c_snap.profile.done

    assert o_snap.state == "finished" and o_snap.fatal_error is None
    assert [(p.rate, p.stage) for p in o_snap.phases] == [(10.0, 1), (30.0, 2)]
    first, second = (p.conversations_started for p in o_snap.phases)
    assert 8 <= first <= 11 and 27 <= second <= 31, (first, second)
    assert "Stage 2/2" in progress_line(o_snap)


async def test_the_operator_takes_over_and_hands_back(sandbox: Sandbox) -> None:
    """Held, the profile and the run's clock wait; a change of conversations holds it too;
    released, the stage it was in is set again (a new phase) and the profile goes on."""
    engine = LoadEngine(load(sandbox, "lm-hold", conversations=2, stages=("2:1s", "4:1s"),
                             duration_s=2.0))
    task = asyncio.create_task(run(engine))
    await until(lambda: engine.state == "running" and engine.elapsed_s() > 0.3,
                what="the first stage running")
    apply(engine, HoldProfile())
    held = engine.snapshot()
    assert held.profile is not None and held.profile.held and held.profile.stage == 1
    await until(lambda: engine.elapsed_s() > 1.6, what="time past the first stage's end")
    later = engine.snapshot()
    assert later.profile is not None and later.profile.stage == 1  # did not move on
    assert later.remaining_s == pytest.approx(held.remaining_s, abs=0.05)
    apply(engine, ReleaseProfile())
    apply(engine, SetConversations(3))  # by hand: holds it again
    assert engine.profile is not None and engine.profile.held
    apply(engine, ReleaseProfile())
    snap = await task
    assert snap.state == "finished" and snap.fatal_error is None
    # stage 1; stage 1 again (released); the operator's 3; stage 1 again; stage 2
    assert [(p.conversations, p.stage) for p in snap.phases] == [
        (2, 1), (2, 1), (3, None), (2, 1), (4, 2)]
    assert snap.elapsed_s > 2.0 + 1.2  # the held time did not count


def test_live_rate_and_profile_commands_cross_the_process_pipe(sandbox: Sandbox) -> None:
    s = load(sandbox, "lm-proc", rate=1.0, arrival="uniform", stages=("5:30s",),
             duration_s=30.0)
    handle = EngineProcess(s)
    try:
        handle.start()
        wait_until(lambda: handle.snapshot().total.conversations_started >= 2, timeout=15,
                   what="arrivals in the child")
        handle.set_rate(20.0)  # holds the profile
        wait_until(lambda: handle.settings.rate == 20.0, what="the new rate applied")
        snap = handle.snapshot()
        assert snap.profile is not None and snap.profile.held
        handle.release_profile()
        wait_until(lambda: handle.settings.rate == 5.0, what="the stage's rate again")
        handle.stop()
        final = handle.join(20)
    finally:
        handle.close()
    assert final.fatal_error is None
    assert [(p.rate, p.stage) for p in final.phases] == [(5.0, 1), (20.0, None), (5.0, 1)]


# -- settings: TOML, bad input ---------------------------------------------------------------

@pytest.mark.parametrize("stages", ['["3:2s", "6:2s"]', '"3:2s,6:2s"'])
def test_toml_stages_rate_and_arrival_load(tmp_path: Path, stages: str) -> None:
    path = tmp_path / "profile.toml"
    path.write_text(f'stages = {stages}\nrate = 5\narrival = "uniform"\nseed = 3\n')
    s = parse_args(["--config", str(path)]).settings
    assert (s.stages, s.rate, s.arrival, s.seed) == (("3:2s", "6:2s"), 5.0, "uniform", 3)
    assert s.duration_s == 4.0
    assert parse_stages(s.stages) == (Stage(3, 2), Stage(6, 2))
    # An explicit duration wins over the profile's length.
    assert parse_args(["--config", str(path), "--duration", "10s"]).settings.duration_s == 10


@pytest.mark.parametrize(("argv", "message"), [
    (["--stages", "3:2s,6x"], "invalid value for --stages: '6x' is not a stage"),
    (["--stages", "0:2s"], "the target must be above 0"),
    (["--stages", "3:0s"], "the duration must be above 0"),
    (["--stages", "3:soon"], "invalid duration 'soon'"),
    (["--stages", ""], "no stages given"),
    (["--stages", "2.5:1s"], "without --rate a stage's target is conversations"),
    (["--stages", "3:2s", "--duration", "0"], "--stages needs a run length"),
    (["--rate", "5", "--duration", "0"], "--rate needs a run length"),
    (["--rate", "-1"], "invalid value for --rate"),
    (["--arrival", "bursty"], "is not a known arrival process; use poisson or uniform"),
])
def test_bad_load_models_are_one_line_and_exit_2(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--no-tui"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_bad_stage_in_toml_names_the_file_and_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('conversations = 5\nstages = ["3:2s", "x"]\n')
    assert main(["--config", str(path), "--no-tui"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 2: stages:" in err and "'x' is not a stage" in err


def test_the_profile_position() -> None:
    profile = LoadProfile(parse_stages(("10:30s", "50:1m")), rate_mode=False)
    assert profile.length_s == 90
    p = profile.position(20.0)
    assert (p.stage, p.stages, p.target, p.left_s, p.done) == (1, 2, 10, 10.0, False)
    assert profile.due(29.9) is None and profile.due(30.0) == Stage(50, 60)
    assert profile.position(95).done and profile.position(95).stage == 2
    assert profile.hold() and profile.due(40) is None and not profile.hold()
    assert profile.release() and profile.due(40) == Stage(50, 60)


# -- the TUI ---------------------------------------------------------------------------------

def producer_text(app: Any) -> str:
    return str(app.main_screen.query_one(ProducerPanel).content)


def status_text(app: Any) -> str:
    return str(app.main_screen.query_one(StatusLine).content)


async def test_tui_shows_the_profile_and_t_takes_over_and_hands_back() -> None:
    e = FakeEngine(Settings(run_id="tui-stages", conversations=5, tokens=200, delay_ms=50,
                            stages=("3:2s", "6:2s"), duration_s=4.0), auto_advance=False)
    e.start()
    e.advance(0.5)
    app = make_app(e)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "stage 1/2 · 0:01 left" in producer_text(app),
                       what="the profile's position")
        assert "3 conv · 50 ms" in status_text(app)
        await pilot.press("t")
        assert e.command_names()[-1] == "hold_profile"
        e.advance(2.0)  # held: the profile stays in its first stage
        await wait_for(pilot, lambda: "stage 1/2 · held" in producer_text(app), what="held")
        assert "profile held" in status_text(app)
        await pilot.press("t")
        assert e.command_names()[-1] == "release_profile"
        e.advance(2.0)
        await wait_for(pilot, lambda: "stage 2/2" in producer_text(app), what="stage 2")
        assert "6 conv" in status_text(app) and "held" not in producer_text(app)
        # A change of conversations by hand takes the load over from the profile too.
        await pilot.press("plus")
        await wait_for(pilot, lambda: "held" in producer_text(app), what="taken over")


async def test_tui_rate_keys_step_the_rate_in_open_loop_only() -> None:
    e = FakeEngine(Settings(run_id="tui-rate", conversations=50, tokens=200, delay_ms=50,
                            rate=20.0, duration_s=60), auto_advance=False)
    e.start()
    e.advance(1)
    app = make_app(e)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "20/s ≤50" in producer_text(app), what="the rate")
        await pilot.press("full_stop")
        await pilot.press("comma", "comma")
        assert [c for c in e.calls if c[0] == "set_rate"] == [
            ("set_rate", 50.0), ("set_rate", 20.0), ("set_rate", 10.0)]
        await wait_for(pilot, lambda: "10/s ≤50" in status_text(app), what="applied")
        await pilot.press("t")  # no profile: the key does nothing
        assert "hold_profile" not in e.command_names()
    closed = FakeEngine(Settings(run_id="tui-closed", duration_s=60), auto_advance=False)
    closed.start()
    app = make_app(closed)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, what="first poll")
        await pilot.press("full_stop", "comma")
        assert "set_rate" not in closed.command_names()


def test_rate_ladder() -> None:
    assert [step_rate(20, 1), step_rate(20, -1), step_rate(3, 1), step_rate(3, -1)] == [
        50, 10, 5, 2]
    assert step_rate(0.1, -1) == 0.1 and step_rate(50_000, 1) == 50_000
