"""The full topology (Redis -> bridge -> NATS -> adapter) and the per-hop tap (--nats).

Real parts only: redis-server, nats-server, the reference bridge and adapter as child
processes on loopback. Every loss a test injects is counted by the sandbox itself (the
bridge's and the adapter's /stats); the tap must blame each missing token on the hop those
counts say lost it, exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from sse_tui.cli_args import TOPOLOGIES, parse_args
from sse_tui.engine.engine import LoadEngine
from sse_tui.merge import merge
from sse_tui.report import summary_dict
from sse_tui.sandbox import FaultConfig, Sandbox
from sse_tui.sandbox.nats_server import find_nats_server
from sse_tui.sandbox.stack import TOPOLOGIES as SANDBOX_TOPOLOGIES
from sse_tui.settings import Settings, UsageError
from sse_tui.snapshot import PhaseStats, StatsSnapshot
from sse_tui.tui.app import make_app
from sse_tui.tui.widgets.hops import hop_text
from tests.fake_engine import FakeEngine, wait_for


@pytest.fixture(scope="module")
def full_sandbox() -> Iterator[Sandbox]:
    """A fault-free full stack shared by this module's tests that need no faults."""
    with Sandbox(topology="full") as sb:
        yield sb


def settings_for(sb: Sandbox, run_id: str, **kw: Any) -> Settings:
    base: dict[str, Any] = dict(mode="both", redis=sb.redis_address, sse=sb.sse_url,
                                nats=sb.nats_url, conversations=4, tokens=40, delay_ms=2,
                                duration_s=0, grace_s=1.0, run_id=run_id)
    base.update(kw)
    return Settings(**base)


async def run(settings: Settings) -> StatsSnapshot:
    return await asyncio.wait_for(LoadEngine(settings).run(), 60)


def run_ids(sb_stats: dict[str, Any], run_id: str) -> dict[str, dict[str, Any]]:
    prefix = f"loadtest-{run_id}-"
    return {k: v for k, v in sb_stats["per_conversation"].items() if k.startswith(prefix)}


def injected(sb: Sandbox, run_id: str, name: str) -> int:
    return sum(c["injected"][name] for c in run_ids(sb.adapter_stats(), run_id).values())


def interest_lost(sb: Sandbox) -> int:
    """Run-wide (the adapter does not split it by conversation): a sandbox per test."""
    return int(sb.adapter_stats()["interest_lost"])


def bridge_dropped(sb: Sandbox, run_id: str) -> int:
    return sum(c["dropped"] for c in run_ids(sb.bridge_stats(), run_id).values())


def assert_clean_tap(t: PhaseStats) -> None:
    """Every token seen on NATS and timed on both hops; the tap's cost is reported."""
    assert t.redis_to_nats.count == t.tokens_published - t.lost_before_nats
    assert t.nats_to_sse.count == t.tokens_received - t.tokens_duplicated
    assert t.unseen_on_nats == 0
    assert t.lost_before_nats + t.lost_after_nats == t.tokens_missing
    assert t.tap_subscriptions == t.conversations_started
    assert t.tap_messages == t.redis_to_nats.count
    assert t.tap_busy_us > 0


def test_the_cli_and_the_sandbox_know_the_same_topologies() -> None:
    assert set(TOPOLOGIES) == set(SANDBOX_TOPOLOGIES)
    assert os.access(find_nats_server(), os.X_OK)


async def test_end_to_end_through_the_full_sandbox_nothing_missing(full_sandbox: Sandbox) -> None:
    run_id = "topo-clean"
    snap = await run(settings_for(full_sandbox, run_id))
    t = snap.total
    assert snap.state == "finished" and snap.fatal_error is None
    assert t.tokens_published == 4 * 40
    assert t.tokens_received == t.tokens_published and t.tokens_missing == 0
    assert t.conversations_completed == 4
    assert (t.lost_before_nats, t.lost_after_nats) == (0, 0)
    assert_clean_tap(t)
    assert t.redis_to_nats.count == 160 and t.nats_to_sse.count == 160
    # The tokens did go the whole way: through the bridge and NATS, not around them.
    bridge = run_ids(full_sandbox.bridge_stats(), run_id)
    assert sum(c["published"] for c in bridge.values()) == 160
    adapter = run_ids(full_sandbox.adapter_stats(), run_id)
    assert sum(c["from_redis"] for c in adapter.values()) == 160  # taken from NATS here
    # Each hop is a part of the whole, never longer than it.
    assert t.redis_to_nats.summary.p50 <= t.latency.summary.max
    line = hop_text(snap)  # the TUI's hop line in the latency panel
    assert line is not None and "Redis→NATS" in line.plain and "lost" not in line.plain


# (faults, which hop must be blamed, how the sandbox counts what it injected)
HOP_FAULTS: dict[str, tuple[FaultConfig, str]] = {
    "bridge-drop": (FaultConfig(bridge_drop_rate=0.15, seed=4), "before"),
    "adapter-drop": (FaultConfig(drop_rate=0.15, seed=4), "after"),
    "interest-delay": (FaultConfig(interest_delay_ms=40, seed=4), "after"),
}


@pytest.mark.parametrize("name", list(HOP_FAULTS))
async def test_a_loss_is_blamed_on_the_hop_that_lost_it(name: str) -> None:
    faults, hop = HOP_FAULTS[name]
    run_id = f"topo-{name}"
    with Sandbox(topology="full", faults=faults) as sb:
        snap = await run(settings_for(sb, run_id))
        t = snap.total
        by_bridge = bridge_dropped(sb, run_id)
        by_adapter = injected(sb, run_id, "dropped")
        by_interest = interest_lost(sb)
    assert snap.state == "finished" and snap.fatal_error is None
    assert t.tokens_missing > 0, "the fault lost nothing: the test would prove nothing"
    assert t.tokens_missing == by_bridge + by_adapter + by_interest
    assert t.lost_before_nats == by_bridge
    assert t.lost_after_nats == by_adapter + by_interest
    if hop == "before":
        assert t.lost_after_nats == 0 and t.lost_before_nats == t.tokens_missing
    else:
        assert t.lost_before_nats == 0 and t.lost_after_nats == t.tokens_missing
    line = hop_text(snap)
    assert line is not None
    assert f"lost {t.lost_before_nats} before, {t.lost_after_nats} after NATS" in line.plain
    if name == "interest-delay":  # the first tokens after a subscribe: loss class "first"
        assert t.loss_first == t.tokens_missing
    assert_clean_tap(t)


async def test_a_bridge_delay_shows_in_redis_to_nats_not_in_nats_to_sse() -> None:
    delay_ms = 80.0
    with Sandbox(topology="full", faults=FaultConfig(bridge_delay_ms=delay_ms)) as sb:
        snap = await run(settings_for(sb, "topo-delay", conversations=3, tokens=20))
    t = snap.total
    assert t.tokens_missing == 0
    r2n, n2s = t.redis_to_nats.summary, t.nats_to_sse.summary
    assert r2n.count == n2s.count == 60
    assert r2n.min >= delay_ms  # every token held that long before it reached NATS
    assert t.latency.summary.min >= delay_ms
    # The hop after NATS knows nothing of it: far below the delay, even at p99 on a busy
    # machine (it is well under a millisecond on loopback).
    assert n2s.p50 < delay_ms / 8 and n2s.p99 < delay_ms / 2


def test_demo_full_topology_json_has_both_hop_latencies() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sse_tui", "--demo", "--topology", "full", "--no-tui", "-c", "3",
         "-t", "20", "-d", "2", "--duration", "0", "--json", "-"],
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    hops = data["hops"]
    assert hops["redis_to_nats_ms"]["count"] == 60 and hops["nats_to_sse_ms"]["count"] == 60
    assert hops["redis_to_nats_ms"]["p50"] > 0
    assert (hops["lost_before_nats"], hops["lost_after_nats"]) == (0, 0)
    assert hops["tap_subscriptions"] == 3 and hops["tap_messages"] == 60
    assert data["settings"]["nats"].startswith("nats://127.0.0.1:")
    assert data["histograms"]["redis_to_nats"]["count"] == 60
    assert "Redis -> NATS" in proc.stderr and "NATS -> SSE" in proc.stderr
    # Two generators' hops merge exactly: counts add up, histograms are added.
    merged = summary_dict(merge([data, data]))["hops"]
    assert merged["redis_to_nats_ms"]["count"] == 120 and merged["nats_to_sse_ms"]["count"] == 120
    assert merged["tap_messages"] == 120
    assert merged["redis_to_nats_ms"]["max"] == hops["redis_to_nats_ms"]["max"]


def test_demo_direct_topology_has_no_tap() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sse_tui", "--demo", "--topology", "direct", "--no-tui", "-c",
         "2", "-t", "5", "-d", "1", "--duration", "0", "--json", "-"],
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["tokens_received"] == 10
    assert data["hops"]["tap_subscriptions"] == 0 and data["hops"]["redis_to_nats_ms"]["count"] == 0
    assert data["settings"]["nats"] == ""
    assert "Redis -> NATS" not in proc.stderr  # no tap, no hop rows


@pytest.mark.parametrize(("args", "needle"), [
    (["--demo", "--topology", "mesh"], "use full"),
    (["--topology", "full"], "needs --demo"),
    (["--demo", "--topology", "direct", "--faults", "bridge-drop=0.1"], "need --topology full"),
    (["--demo", "--faults", "interest-delay=-5"], "interest-delay must be 0 or more"),
    (["--nats", "http://x:4222"], "invalid NATS address"),
])
def test_bad_topology_input_is_a_usage_error(args: list[str], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_args(args)


def test_topology_flags_parse() -> None:
    o = parse_args(["--demo", "--faults", "bridge-drop=0.1,bridge-delay=20,interest-delay=5"])
    assert o.topology == "full"
    assert dict(o.faults) == {"bridge_drop_rate": 0.1, "bridge_delay_ms": 20.0,
                              "interest_delay_ms": 5.0}
    assert parse_args(["sandbox", "--topology", "direct"]).topology == "direct"
    assert parse_args(["--nats", "nats-host:4222"]).settings.nats == "nats-host:4222"
    with pytest.raises(ValueError, match="full topology"):
        Sandbox(faults=FaultConfig(bridge_delay_ms=5))  # direct, the class's default


class _ReplayedRun(FakeEngine):
    """An EngineHandle whose snapshots are one real run's final snapshot."""

    def __init__(self, snap: StatsSnapshot) -> None:
        super().__init__(snap.settings, auto_advance=False)
        self._snap = snap

    def snapshot(self) -> StatsSnapshot:
        return self._snap


async def test_the_tui_shows_the_hop_line_in_the_latency_panel() -> None:
    with Sandbox(topology="full", faults=FaultConfig(bridge_drop_rate=0.2, seed=4)) as sb:
        snap = await run(settings_for(sb, "topo-tui", conversations=2, tokens=20))
    assert snap.total.lost_before_nats > 0
    app = make_app(_ReplayedRun(snap))
    async with app.run_test(size=(80, 24)) as pilot:
        hops = app.latency_panel.hops
        # The compact form, once laid out: the panel is about 34 columns wide at 80x24.
        await wait_for(pilot, lambda: str(hops.render()).startswith("p99 R→N "),
                       what="the compact hop line")
        assert hops.display
        shown = str(hops.render())
        assert f"lost {snap.total.lost_before_nats}|0" in shown
        assert len(shown) <= hops.content_size.width
    # Without a tap the line is not there at all.
    plain = FakeEngine(auto_advance=False)
    app = make_app(plain)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.polls >= 1, what="first poll")
        assert not app.latency_panel.hops.display


def test_a_conversations_row_says_where_its_tokens_were_lost() -> None:
    from sse_tui.engine.nats_tap import ConversationHop
    from sse_tui.engine.stats import PhaseRecorder

    hop = ConversationHop("c1")
    hop.arrived.update({1: 10, 2: 20, 3: 30, 5: 50})
    assert hop.describe() == "4 seen"
    phase = PhaseRecorder(index=0, label="p", started_s=0.0, conversations=1, delay_ms=1.0)
    hop.classify([(3, 4), (6, 7)], phase)  # 3 reached NATS; 4, 6 and 7 never did
    assert (phase.lost_after_nats, phase.lost_before_nats) == (1, 3)
    assert hop.describe() == "3 bridge, 1 adapter"
