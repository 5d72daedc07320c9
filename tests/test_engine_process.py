"""EngineProcess: the engine in a child process, driven through the EngineHandle API."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable

from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.messages import Final, Pause, SetConversations, Snapshot
from sse_tui.engine.process import EngineProcess, NewestOnly
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot
from tests.conftest import wait_until


def wait_for(handle: EngineProcess, predicate: Callable[[StatsSnapshot], bool],
             timeout: float = 15.0) -> StatsSnapshot:
    """conftest's wait_until on the child's snapshots; returns the one that matched."""
    last: list[StatsSnapshot] = []

    def matched() -> bool:
        last[:] = [handle.snapshot()]
        return predicate(last[0])

    try:
        wait_until(matched, timeout=timeout, what="the engine's snapshot to match")
    except AssertionError as e:
        raise AssertionError(f"{e}; last state {last[0].state if last else None}") from None
    return last[0]


def test_commands_reach_the_child_and_the_final_snapshot_comes_back(sandbox: Sandbox) -> None:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=2, tokens=20,
                 delay_ms=5, duration_s=60, grace_s=0.5, run_id="proc")
    handle = EngineProcess(s)
    try:
        handle.start()
        wait_for(handle, lambda x: x.total.tokens_received > 20)
        handle.set_conversations(4)
        # Fire and forget: the engine's settings say 4 once a snapshot shows it applied.
        wait_for(handle, lambda x: x.conversations_live == 4 and len(x.phases) == 2)
        assert handle.settings.conversations == 4 and handle.commands_in_flight == 0
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


def test_snapshot_never_waits_for_a_stopped_child(sandbox: Sandbox) -> None:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=2,
                 tokens=100_000, delay_ms=5, duration_s=60, grace_s=0.5, run_id="stalled")
    handle = EngineProcess(s)
    try:
        handle.start()
        before = wait_for(handle, lambda x: x.total.tokens_received > 5)
        assert handle._proc is not None and handle._proc.pid is not None
        pid = handle._proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: _stopped(pid), timeout=5, what="the child stopped")
            slowest = 0.0
            for _ in range(20):
                t0 = time.perf_counter()
                snap = handle.snapshot()
                handle.set_conversations(3)
                handle.set_delay(7)
                slowest = max(slowest, time.perf_counter() - t0)
            # A few ms at most (an attribute read and two queue puts; the bound leaves room
            # for a busy machine), where a request/reply would wait for the child.
            assert slowest < 0.02, f"snapshot() + two commands took {slowest * 1000:.1f} ms"
            assert snap.total.tokens_received >= before.total.tokens_received
            # Nothing was applied: the settings are still the engine's, with 40 in flight.
            assert (handle.settings.conversations, handle.settings.delay_ms) == (2, 5)
            assert handle.commands_in_flight == 40
        finally:
            os.kill(pid, signal.SIGCONT)
        # Once it runs again it applies them all, and a later snapshot shows it.
        after = wait_for(handle, lambda x: handle.commands_in_flight == 0)
        assert (after.settings.conversations, after.settings.delay_ms) == (3, 7)
        assert after.total.tokens_received > snap.total.tokens_received
        handle.stop()
        final = handle.join(20)
    finally:
        handle.close()
    assert final.state == "finished"
    # Only real changes start a phase: 2 conv 5 ms, 3 conv 5 ms, 3 conv 7 ms.
    assert [(p.conversations, p.delay_ms) for p in final.phases] == [(2, 5), (3, 5), (3, 7)]


def _stopped(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_snapshots_come_without_being_asked(sandbox: Sandbox) -> None:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=1,
                 tokens=100_000, delay_ms=5, duration_s=60, grace_s=0.5, run_id="pushed")
    handle = EngineProcess(s, push_interval_s=0.05)
    seen: list[int] = []
    try:
        handle.start()

        def five_pushes() -> bool:  # five distinct pushes, read without any request to the child
            latest = handle._latest
            if latest is not None and (not seen or latest.snapshot.taken_at_ns != seen[-1]):
                seen.append(latest.snapshot.taken_at_ns)
            return len(seen) >= 5

        wait_until(five_pushes, timeout=10, what="five pushed snapshots")
    finally:
        handle.close()
    assert seen == sorted(seen)


def test_the_mailbox_keeps_only_the_newest_snapshot_and_never_drops_the_final() -> None:
    base = LoadEngine(Settings(run_id="box")).snapshot()
    snaps = [dataclasses.replace(base, elapsed_s=float(i)) for i in range(3)]
    box = NewestOnly()
    for i, snap in enumerate(snaps):
        box.put(Snapshot(snap, i))
    assert box.take(0) == Snapshot(snaps[2], 2) and box.dropped == 2
    assert box.take(0) is None
    box.put(Snapshot(snaps[0], 0))
    box.put(Final(snaps[2], 3))
    box.put(Snapshot(snaps[1], 3))  # a late push cannot displace the final report
    assert box.take(0) == Final(snaps[2], 3)
    # A sender blocked on take() wakes up for a report put from another thread.
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(box.take(5)))
    reader.start()
    box.put(Snapshot(snaps[1], 4))
    reader.join(5)
    assert got == [Snapshot(snaps[1], 4)]


def test_commands_are_small_typed_messages() -> None:
    import pickle

    for command in (SetConversations(3), Pause()):
        assert pickle.loads(pickle.dumps(command)) == command
    assert len(pickle.dumps(SetConversations(10_000))) < 200  # a pipe holds hundreds
