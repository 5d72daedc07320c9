"""The generator's self-check: one verdict from 1 s windows, live and at the end.

The engine runs for real against the sandbox (redis-server + adapter on loopback); overload is
made by blocking the engine's own event loop, which is what a saturated generator does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import time

from textual.app import App, ComposeResult

from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.selfwatch import (
    CPU,
    LOOP_LAG,
    SCHEDULE_LAG,
    judge,
    phase_list,
    time_p99,
)
from sse_tui.report import format_summary, summary_dict
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import Distribution, SelfHealth, StatsSnapshot
from sse_tui.tui.widgets.producer import ProducerPanel
from sse_tui.tui.widgets.status import StatusLine
from tests.conftest import until

# -- the window's figures and limits ----------------------------------------------------------


def test_loop_lag_p99_is_over_the_window_s_time_not_its_ticks() -> None:
    calm = [0.5] * 99
    # One 1.5 s stall among calm ticks: behind for the whole stall, whatever the tick count.
    assert time_p99([*calm, 1500.0], 2500.0) > 1400
    # One 5 ms hiccup in a calm second: the loop was behind > 5 ms for no time at all.
    assert time_p99([*calm, 5.1], 1000.0) < 1.0
    # Forty 10 ms lags in a second: behind > 5 ms for 200 ms of it.
    assert time_p99([0.5] * 50 + [10.0] * 40, 1000.0) > 5.0
    assert time_p99([], 1000.0) == 0.0


def test_the_limits_of_one_window() -> None:
    assert judge(1.0, 1.0, 50.0, delay_ms=20) == ()
    assert judge(5.1, None, 50.0, delay_ms=20) == (LOOP_LAG,)
    # Schedule lag: 5 ms or 20% of the delay, whichever is larger.
    assert judge(1.0, 9.0, 50.0, delay_ms=50) == ()
    assert judge(1.0, 11.0, 95.0, delay_ms=50) == (SCHEDULE_LAG, CPU)


def test_phase_lists_collapse_runs() -> None:
    assert phase_list([3, 1, 2, 5]) == "1–3, 5"
    assert phase_list([0]) == "0"


# -- the real engine ---------------------------------------------------------------------------


def _settings(sandbox: Sandbox, run_id: str, **changes: float) -> Settings:
    base = {"conversations": 2, "tokens": 1000, "delay_ms": 20.0, "duration_s": 30.0}
    base.update(changes)
    return Settings(mode="both", redis=sandbox.redis_address, sse=sandbox.sse_url,
                    run_id=run_id, conversations=int(base["conversations"]),
                    tokens=int(base["tokens"]), delay_ms=base["delay_ms"],
                    duration_s=base["duration_s"])


async def _window_closed_in(engine: LoadEngine, phase: int) -> None:
    """Wait until a window lying wholly in `phase` closed."""
    await until(lambda: any(w.phases == (phase,) for w in engine.selfwatch.windows),
                timeout=10, what=f"a 1 s window wholly in phase {phase}")


def _calm_after_the_stall(engine: LoadEngine) -> bool:
    windows = engine.selfwatch.windows
    stalls = [i for i, w in enumerate(windows) if w.overloaded]
    return bool(stalls) and any(w.phases == (1,) and not w.overloaded
                                for w in windows[stalls[0] + 1:])


async def test_an_overload_mid_run_is_the_final_verdict_with_its_phase(
        sandbox: Sandbox) -> None:
    engine = LoadEngine(_settings(sandbox, "selfcheck-stall"))
    run = asyncio.ensure_future(engine.run())
    try:
        await until(lambda: engine.state == "running", what="the run to start")
        engine.set_delay(21)  # phase 1: the one to be overloaded
        await _window_closed_in(engine, 1)
        # A callback that holds the engine's loop for 1.5 s, as a saturated generator does.
        asyncio.get_running_loop().call_soon(time.sleep, 1.5)
        await until(lambda: engine.snapshot().health.warning is not None, timeout=10,
                    what="the live overload warning")
        live = engine.snapshot().health
        assert live.warning is not None and "event-loop lag" in live.warning
        assert live.overloaded_phases == (1,)
        await until(lambda: _calm_after_the_stall(engine), timeout=10,
                    what="a calm window in phase 1 after the stall")
        engine.set_delay(22)  # phase 2: calm
        await _window_closed_in(engine, 2)
        engine.stop()
        final = await asyncio.wait_for(run, 20)
    finally:
        engine.hurry()
        await asyncio.wait_for(run, 20)

    h = final.health
    windows = engine.selfwatch.windows
    # The stall: one window of its own, about 1.5 s long, in phase 1 only.
    (stall,) = [w for w in windows if w.loop_lag_p99_ms > 1000]
    assert stall.phases == (1,) and 1.3 <= stall.length_s <= 2.6, stall
    assert h.worst_window == stall
    # Noise on a shared machine may overload another window; whatever was overloaded, the
    # verdict is exactly the recorded windows' (one story), and phase 1 is in it.
    bad = [w for w in windows if w.overloaded]
    assert 1 in h.overloaded_phases, windows
    assert h.overloaded_phases == tuple(sorted({p for w in bad for p in w.phases}))
    assert h.overloaded_windows == len(bad) and h.windows == len(windows) >= 4
    assert abs(h.overloaded_s - sum(w.length_s for w in bad)) < 0.01
    assert abs(h.judged_s - sum(w.length_s for w in windows)) < 0.01
    share = h.overloaded_share
    assert share is not None and 0 < share < 1
    assert h.warning is not None
    assert f"overloaded during {100 * share:.0f}% of the run" in h.warning
    phases = phase_list(h.overloaded_phases)
    assert (f"phase {phases};" in h.warning or f"phases {phases};" in h.warning), h.warning
    assert "latency percentiles" in h.warning

    text = format_summary(final)
    assert "Generator self-check: OVERLOADED during" in text
    assert "not the bottleneck" not in text
    assert f"worst window {stall.t_s:.1f}–{stall.t_s + stall.length_s:.1f} s (phase 1)" in text
    assert "may have distorted: latency percentiles" in text

    self_json = json.loads(json.dumps(summary_dict(final), allow_nan=False))["self"]
    assert self_json["overloaded_phases"] == list(h.overloaded_phases)
    assert self_json["overloaded_s"] == h.overloaded_s
    assert self_json["overloaded_share"] == round(share, 4)
    assert self_json["worst_window"]["phases"] == [1]
    assert self_json["worst_window"]["t_s"] == stall.t_s
    assert self_json["worst_window"]["loop_lag_p99_ms"] > 1000
    assert "event-loop lag" in self_json["worst_window"]["reason"]
    assert self_json["warning"] == h.warning
    for key in ("loop_lag_ms", "schedule_lag_ms"):  # the keys that were there before
        assert self_json[key]["count"] > 0

    await _shows_in_the_tui(final, "overloaded during",
                            f"overloaded {h.overloaded_s:.0f} s ({100 * share:.0f}%), "
                            f"phase {phases}")


async def test_many_short_stalls_warn_live_and_at_the_end(sandbox: Sandbox) -> None:
    engine = LoadEngine(_settings(sandbox, "selfcheck-hog", delay_ms=5.0))
    run = asyncio.ensure_future(engine.run())
    try:
        await until(lambda: engine.state == "running", what="the run to start")
        for _ in range(40):  # something hogging the loop for 15 ms at a time, 40 times
            time.sleep(0.015)
            await asyncio.sleep(0.005)
        await until(lambda: engine.snapshot().health.warning is not None, timeout=10,
                    what="the live overload warning")
        live = engine.snapshot().health
        engine.stop()
        final = await asyncio.wait_for(run, 20)
    finally:
        engine.hurry()
        await asyncio.wait_for(run, 20)
    assert live.warning is not None and "event-loop lag" in live.warning
    # The final verdict counts the same windows: it cannot forget what warned live.
    assert final.health.overloaded_windows >= 1
    assert final.health.warning is not None and "event-loop lag" in final.health.warning


async def test_a_clean_short_run_is_not_the_bottleneck(sandbox: Sandbox) -> None:
    s = _settings(sandbox, "selfcheck-calm", duration_s=3.0)
    gc.collect()  # earlier tests' garbage (a Textual app) is not the generator's to collect
    engine = LoadEngine(s)
    final = await asyncio.wait_for(engine.run(), 20)
    h = final.health
    assert final.total.tokens_received > 0 and final.total.tokens_missing == 0
    assert h.windows >= 2
    # (A busy shared machine can stall this process for real; the windows say when.)
    assert h.overloaded_windows == 0, engine.selfwatch.windows
    assert h.overloaded_s == 0 and h.warning is None
    assert h.worst_window is None and h.overloaded_phases == ()
    text = format_summary(final)
    assert ("Generator self-check: not the bottleneck (no 1 s window crossed the limits; "
            f"{h.windows} judged)") in text
    self_json = summary_dict(final)["self"]
    assert self_json["overloaded_s"] == 0 and self_json["overloaded_share"] == 0
    assert self_json["worst_window"] is None and self_json["warning"] is None
    await _shows_in_the_tui(final, None, None)

    # No window judged (a merged summary, a run under 1 s): neither verdict is claimed.
    empty = Distribution.empty()
    unjudged = dataclasses.replace(final, health=SelfHealth(empty, empty, 0.0, None))
    assert "Generator self-check: no verdict" in format_summary(unjudged)
    assert summary_dict(unjudged)["self"]["overloaded_s"] is None


# -- the TUI -----------------------------------------------------------------------------------


class _Host(App[None]):
    def compose(self) -> ComposeResult:
        yield StatusLine()
        yield ProducerPanel()


async def _shows_in_the_tui(snap: StatsSnapshot, status: str | None, panel: str | None) -> None:
    """The finished run's status line and producer panel say what the summary says."""
    app = _Host()
    async with app.run_test(size=(240, 20)) as pilot:
        app.query_one(StatusLine).update_from(snap)
        app.query_one(ProducerPanel).update_from(snap)
        await pilot.pause()
        status_text = str(app.query_one(StatusLine).content)
        panel_text = str(app.query_one(ProducerPanel).content)
        warns = app.query_one(StatusLine).has_class("-warning")
    if status is None:
        assert "overloaded" not in status_text and "overloaded" not in panel_text
    else:
        assert status in status_text and warns
        assert panel is not None and panel in panel_text, panel_text
