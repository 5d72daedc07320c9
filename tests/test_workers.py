"""--workers: the load shared by several engine processes, combined exactly into one run."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from sse_tui.combine import HISTOGRAM_FIELDS, combine, combine_phases
from sse_tui.cpus import cgroup_quota, usable_cpus
from sse_tui.engine.stats import PhaseRecorder
from sse_tui.engine.workers import WorkerPool, plan_workers, worker_settings
from sse_tui.headless import run_headless
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import COUNTER_FIELDS, StatsSnapshot
from tests.conftest import wait_until
from tests.fake_engine import FakeEngine

# -- CPU detection ---------------------------------------------------------------------------


def test_the_cgroup_quota_caps_the_cpus(tmp_path: Path) -> None:
    affinity = usable_cpus(tmp_path / "none")  # no cgroup files: the affinity alone
    assert affinity >= 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == min(affinity, 2)  # 1.5 CPUs: two processes share them
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None and usable_cpus(tmp_path) == affinity
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1) == 0.5 and usable_cpus(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(v1) is None


# -- shares ----------------------------------------------------------------------------------


def test_each_worker_gets_a_share_of_the_load() -> None:
    s = Settings(conversations=7, workers=2, seed=3, stages=("5:10s", "9:1m"))
    shares = [worker_settings(s, i, 2) for i in range(2)]
    assert [w.conversations for w in shares] == [4, 3]
    assert [w.stages for w in shares] == [("3:10s", "5:1m"), ("2:10s", "4:1m")]
    assert [w.seed for w in shares] == [3, 4]  # not the same arrivals in every worker
    open_loop = Settings(rate=10, conversations=100, stages=("20:10s",), workers=2)
    assert [worker_settings(open_loop, i, 2).rate for i in range(2)] == [5.0, 5.0]
    assert worker_settings(open_loop, 1, 2).stages == ("10.0:10s",)
    # Every worker needs a conversation to run, in every stage of a closed-loop profile.
    assert plan_workers(Settings(conversations=1, workers=4)) == 1
    assert plan_workers(Settings(conversations=8, workers=4, stages=("3:10s",))) == 3
    assert plan_workers(Settings(conversations=8, workers=3)) == 3
    assert plan_workers(Settings(conversations=8, workers=0)) == min(8, usable_cpus())
    assert plan_workers(Settings(mode="consumer", workers=2), follow_redis=True) == 1


# -- combining snapshots ---------------------------------------------------------------------


def _recorders(seed: int) -> tuple[PhaseRecorder, PhaseRecorder, PhaseRecorder]:
    """Two workers' recorders and one that records every value of both."""
    rng = random.Random(seed)
    a, b, both = (PhaseRecorder(index=0, label="x", started_s=0.0, conversations=n,
                                delay_ms=5.0) for n in (3, 2, 5))
    for worker, n, scale in ((a, 4000, 2000), (b, 1500, 30000)):  # b is slower: a long tail
        for _ in range(n):
            latency, gap = int(rng.expovariate(1 / scale)) + 1, rng.randint(1, 90_000)
            for rec in (worker, both):
                rec.latency.record(latency)
                rec.itl.record(gap)
                rec.tokens_received += 1
                rec.tokens_published += 1
        for _ in range(rng.randint(1, 9)):
            connect = rng.randint(100, 5000)
            for rec in (worker, both):
                rec.connect.record(connect)
                rec.connections_opened += 1
                rec.error("HTTP 503", detail="HTTP 503 from /stream/x")
    return a, b, both


def test_combined_phase_equals_one_histogram_of_all_values() -> None:
    a, b, both = _recorders(11)
    combined = combine_phases([a.freeze(10.0), b.freeze(12.0)])
    expected = both.freeze(12.0)
    for f in COUNTER_FIELDS:
        assert getattr(combined, f.name) == getattr(expected, f.name), f.name
    assert combined.errors == expected.errors == {"HTTP 503": expected.connections_opened}
    assert combined.conversations == 5 and combined.label == "5 conv, 5 ms"
    for name in HISTOGRAM_FIELDS:
        got, want = getattr(combined, name), getattr(expected, name)
        assert (got.count, got.sum_us, got.min_us, got.max_us) == (
            want.count, want.sum_us, want.min_us, want.max_us), name
        if want.count:  # every percentile, from the summed HDR
            assert got.summary == want.summary, name
    assert combined.latency.count == 5500
    # Not the average of the workers' p99s: the slow worker's tail dominates the run's.
    pa, pb = a.freeze(10.0).latency.summary.p99, b.freeze(12.0).latency.summary.p99
    assert combined.latency.summary.p99 != pytest.approx((pa + pb) / 2, rel=0.01)


def _fake_snapshot(seed: int, conversations: int, warning: str | None = None
                   ) -> StatsSnapshot:
    fake = FakeEngine(Settings(run_id="fake", conversations=conversations, delay_ms=5),
                      auto_advance=False, seed=seed, warning=warning)
    fake.start()
    fake.advance(3.0)
    fake.set_conversations(conversations + 1)  # a second phase, the first one ended
    fake.advance(2.0)
    return fake.snapshot()


def test_combine_adds_snapshots_of_real_recorders() -> None:
    parts = [_fake_snapshot(1, 3), _fake_snapshot(2, 2, warning="event-loop lag p99 40 ms")]
    base = Settings(run_id="fake", conversations=5, delay_ms=5, workers=2)
    snap = combine(parts, base=base)
    for f in COUNTER_FIELDS:
        assert getattr(snap.total, f.name) == sum(getattr(p.total, f.name) for p in parts)
    assert snap.total.tokens_received > 0
    for name in HISTOGRAM_FIELDS:
        assert getattr(snap.total, name).count == sum(getattr(p.total, name).count
                                                      for p in parts), name
    assert snap.settings.conversations == 7 and snap.settings.workers == 2
    assert snap.conversations_live == sum(p.conversations_live for p in parts)
    assert len(snap.phases) == 2
    assert [p.conversations for p in snap.phases] == [5, 7]
    assert snap.phases[1].label == "7 conv, 5 ms"
    assert snap.phases[0].tokens_received == sum(p.phases[0].tokens_received for p in parts)
    assert snap.health.warning == "worker 2: event-loop lag p99 40 ms"
    assert sum(pt.received for pt in snap.timeline) == sum(
        pt.received for p in parts for pt in p.timeline)


# -- real engine processes -------------------------------------------------------------------


def _run_json(sandbox: Sandbox, tmp_path: Path, run_id: str, workers: int) -> dict[str, Any]:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=8, tokens=20,
                 delay_ms=5, duration_s=0, seed=1, grace_s=1, run_id=run_id, workers=workers,
                 json_detail=True)
    path = tmp_path / f"{run_id}.json"
    assert run_headless(s, json_path=str(path)) == 0
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _key_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return {f"{prefix}/{k}" for k in value} | {
            p for k, v in value.items() for p in _key_paths(v, f"{prefix}/{k}")}
    if isinstance(value, list):
        return {p for v in value for p in _key_paths(v, f"{prefix}[]")}
    return set()


def test_two_workers_deliver_what_one_process_does(sandbox: Sandbox, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    one = _run_json(sandbox, tmp_path, "wk1", 1)
    two = _run_json(sandbox, tmp_path, "wk2", 2)
    assert "2 engine processes" in capsys.readouterr().out
    assert one["settings"]["workers"] == 1 and two["settings"]["workers"] == 2
    assert one["settings"]["conversations"] == two["settings"]["conversations"] == 8
    for data in (one, two):
        assert data["tokens_published"] == data["tokens_received"] == 8 * 20
        assert data["conversations"]["completed"] == 8
        assert data["tokens_missing"] == 0 and data["fatal_error"] is None
        assert data["histograms"]["latency"]["count"] == 160
    assert _key_paths(one) == _key_paths(two)  # the same JSON, whatever the processes
    # The same conversation ids: the adapter served loadtest-<run>-1..8 in both runs.
    served = sandbox.adapter_stats()["per_conversation"]

    def numbers(run_id: str) -> set[str]:
        prefix = f"loadtest-{run_id}-"
        return {cid.removeprefix(prefix) for cid in served if cid.startswith(prefix)}

    assert numbers("wk1") == numbers("wk2") == {str(n) for n in range(1, 9)}
    detail_ids = {c["id"].rsplit("-", 1)[1] for c in two["detail"]["conversations"]}
    assert detail_ids == numbers("wk2")


def test_the_pool_combines_its_workers_and_splits_live_changes(sandbox: Sandbox) -> None:
    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=2, tokens=30,
                 delay_ms=5, duration_s=60, grace_s=1, run_id="wkpool", workers=2)
    pool = WorkerPool(s)
    try:
        pool.start()
        assert pool.count == 2

        def both_busy() -> bool:
            return all(w.total.tokens_received > 0 for w in pool.worker_snapshots())

        wait_until(both_busy, timeout=20, what="both workers to receive tokens")
        pool.set_conversations(10)
        wait_until(lambda: [(w.settings.conversations, w.conversations_live)
                            for w in pool.worker_snapshots()] == [(5, 5), (5, 5)],
                   timeout=20, what="each worker to run 5 of the 10 conversations")
        wait_until(lambda: pool.snapshot().conversations_live == 10, timeout=5,
                   what="the combined snapshot to show 10 live")
        assert pool.settings.conversations == 10
        assert [p.label for p in pool.snapshot().phases] == ["2 conv, 5 ms", "10 conv, 5 ms"]
        pool.stop()
        final = pool.join(30)
        workers = pool.worker_snapshots()
    finally:
        pool.close()
    assert final.state == "finished" and final.fatal_error is None
    assert final.total.tokens_missing == 0
    assert final.total.tokens_received == final.total.tokens_published == sum(
        w.total.tokens_received for w in workers)
    assert final.total.latency.count == sum(w.total.latency.count for w in workers) > 0
    assert final.phases[1].latency.count == sum(w.phases[1].latency.count for w in workers)
    # Disjoint numbers: worker 1 the odd ones, worker 2 the even ones.
    for i, w in enumerate(workers):
        assert {v.number % 2 for v in w.conversations} == {(i + 1) % 2}


async def test_the_tui_drives_a_pool_as_one_engine(sandbox: Sandbox) -> None:
    from sse_tui.tui.app import finish_run, make_app
    from sse_tui.tui.widgets.phases import PhaseTable
    from tests.fake_engine import wait_for

    s = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=3,
                 tokens=400, delay_ms=10, duration_s=60, grace_s=1.0, run_id="wktui",
                 workers=2)
    pool = WorkerPool(s)
    app = make_app(pool)
    try:
        async with app.run_test(size=(80, 24)) as pilot:

            def received() -> int:
                snap = app.last_snapshot
                return snap.total.tokens_received if snap else 0

            await wait_for(pilot, lambda: received() > 50, timeout=20, what="tokens received")
            await pilot.press("plus")  # 3 -> 4: 2 and 2 (it was 2 and 1)
            await wait_for(pilot, lambda: [w.settings.conversations
                                           for w in pool.worker_snapshots()] == [2, 2],
                           timeout=10, what="the new share in each worker")
            phases = app.main_screen.query_one(PhaseTable)
            await wait_for(pilot, lambda: phases.row_count == 2, timeout=10, what="phase 1")
            await pilot.press("q")
        out = io.StringIO()
        assert finish_run(pool, out=out) == 0
        assert "Tokens Received:" in out.getvalue()
    finally:
        pool.close()
    final = pool.snapshot()
    assert final.settings.conversations == 4 and final.total.tokens_missing == 0
