"""EngineProcess: the engine in a child process, driven through the EngineHandle API."""

from __future__ import annotations

import time
from collections.abc import Callable

from sse_tui.engine.process import EngineProcess
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot


def wait_for(handle: EngineProcess, predicate: Callable[[StatsSnapshot], bool],
             timeout: float = 15.0) -> StatsSnapshot:
    deadline = time.monotonic() + timeout
    while True:
        snap = handle.snapshot()
        if predicate(snap):
            return snap
        assert time.monotonic() < deadline, f"timed out; last state {snap.state}"
        time.sleep(0.05)


def test_commands_reach_the_child_and_the_final_snapshot_comes_back(sandbox: Sandbox) -> None:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=2, tokens=20,
                 delay_ms=5, duration_s=60, grace_s=0.5, run_id="proc")
    handle = EngineProcess(s)
    try:
        handle.start()
        wait_for(handle, lambda x: x.total.tokens_received > 20)
        handle.set_conversations(4)
        assert handle.settings.conversations == 4
        wait_for(handle, lambda x: x.conversations_live == 4 and len(x.phases) == 2)
        handle.set_delay(2)
        handle.pause()
        wait_for(handle, lambda x: x.state == "paused")
        handle.resume()
        wait_for(handle, lambda x: x.state == "running")
        handle.stop()
        final = handle.join(20)
    finally:
        handle.close()
    assert final.state == "finished" and final.fatal_error is None
    assert [(p.conversations, p.delay_ms) for p in final.phases] == [(2, 5), (4, 5), (4, 2)]
    assert final.total.tokens_received == final.total.tokens_published > 20
    assert final.total.tokens_missing == 0
    # Histograms crossed the pipe intact.
    lat = final.total.latency.summary
    assert lat.count == final.total.tokens_received and 0 < lat.p50 <= lat.p99 <= lat.max


def test_restart_runs_again_with_new_settings(sandbox: Sandbox) -> None:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=2, tokens=5,
                 delay_ms=1, duration_s=0, run_id="again")
    handle = EngineProcess(s)
    try:
        handle.start()
        first = handle.join(20)
        handle.restart(s.with_changes(conversations=3, run_id="again2"))
        second = handle.join(20)
    finally:
        handle.close()
    assert first.total.tokens_received == 10
    assert second.total.tokens_received == 15
    assert second.settings.conversations == 3
    assert second.settings.run_id == "again2"  # a new id given explicitly is kept


def test_restart_with_the_same_settings_gets_a_new_run_id(sandbox: Sandbox) -> None:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=1, tokens=3,
                 delay_ms=1, duration_s=0, run_id="same")
    handle = EngineProcess(s)
    try:
        handle.start()
        handle.join(20)
        handle.restart()
        second = handle.join(20)
        handle.restart()
        third = handle.join(20)
    finally:
        handle.close()
    assert (second.settings.run_id, third.settings.run_id) == ("same-r2", "same-r3")
    assert third.conversations[0].conversation_id == "loadtest-same-r3-1"
    assert third.total.tokens_received == 3


def test_a_dead_engine_process_is_reported_not_hung(sandbox: Sandbox) -> None:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=1,
                 tokens=100_000, delay_ms=5, duration_s=60, run_id="doomed")
    handle = EngineProcess(s)
    try:
        handle.start()
        wait_for(handle, lambda x: x.total.tokens_received > 5)
        assert handle._proc is not None
        handle._proc.kill()
        final = handle.join(15)
    finally:
        handle.close()
    assert final.state == "failed"
    assert final.fatal_error is not None and "engine process died" in final.fatal_error
    assert final.total.tokens_received > 5  # what was seen last is kept
