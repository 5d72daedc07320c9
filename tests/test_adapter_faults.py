"""Fault injection in the reference adapter: what a client observes equals what /stats counts.

The client here is the one the load engine is expected to be: it reads every stream to its
done token and resumes with Last-Event-ID when a stream ends without it. Its counts of
missing, duplicated and out-of-order tokens and of reconnects must equal the adapter's
injected counts exactly, per conversation.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson
import pytest

from sse_tui.sandbox import FaultConfig, Sandbox
from tests.conftest import adapter_took, until
from tests.test_sandbox import collect_tokens, new_id, open_stream, publish_tokens

MAX_CONNECTIONS = 100  # per conversation; far above what any scenario here needs
SCENARIO_TIMEOUT_S = 20.0


@dataclass
class Observed:
    """What one client saw of one conversation, across all its connections."""

    ids: list[int] = field(default_factory=list)
    connections: int = 0
    reconnects: int = 0  # streams that ended without the done token
    last_ids_at_disconnect: list[tuple[int, int]] = field(default_factory=list)  # (last, max)
    done: bool = False

    def classify(self, total: int) -> dict[str, int]:
        seen: set[int] = set()
        highest = duplicated = out_of_order = 0
        for seq in self.ids:
            if seq in seen:
                duplicated += 1
            elif seq < highest:
                out_of_order += 1
            seen.add(seq)
            highest = max(highest, seq)
        return {
            "missing": total - len(seen),
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "reconnects": self.reconnects,
            "received": len(self.ids),
        }


async def consume(sse_url: str, cid: str, connected: asyncio.Event) -> Observed:
    """Read a conversation to its done token, resuming with the last event id seen."""
    observed = Observed()
    last_id: int | None = None
    while observed.connections < MAX_CONNECTIONS:
        response, events = await open_stream(sse_url, cid, last_id)
        observed.connections += 1
        connected.set()
        for event in await collect_tokens(events):
            last_id = int(event.id or 0)
            observed.ids.append(last_id)
            observed.done = orjson.loads(event.data or "{}")["done"]
        response.close()
        if observed.done:
            return observed
        observed.reconnects += 1
        observed.last_ids_at_disconnect.append((last_id or 0, max(observed.ids, default=0)))
    raise AssertionError(f"{cid}: no done token after {MAX_CONNECTIONS} connections")


async def run_scenario(
    sandbox: Sandbox, ids: list[str], total: int, gap_s: float = 0.001
) -> dict[str, Observed]:
    """One consumer and one publisher per conversation; publishing starts once connected."""

    async def one(cid: str) -> Observed:
        connected = asyncio.Event()
        consumer = asyncio.create_task(consume(sandbox.sse_url, cid, connected))
        await connected.wait()
        await publish_tokens(sandbox.redis_url, cid, 1, total, total, gap_s)
        return await consumer

    async with asyncio.timeout(SCENARIO_TIMEOUT_S):
        results = await asyncio.gather(*(one(cid) for cid in ids))
    return dict(zip(ids, results, strict=True))


def injected(sandbox: Sandbox, cid: str) -> dict[str, int]:
    entry = sandbox.adapter_stats()["per_conversation"][cid]
    return {**entry["injected"], "delivered": entry["delivered"]}


def assert_matches_stats(sandbox: Sandbox, observed: dict[str, Observed], total: int) -> None:
    """The engine-side invariant: client-side counts equal the adapter's injected counts."""
    for cid, obs in observed.items():
        seen = obs.classify(total)
        got = injected(sandbox, cid)
        assert obs.done and obs.ids[-1] == total, cid  # done always arrives, always last
        lost = got["dropped"] + got["resume_skipped"] + got["first_lost"] + got["gap_dropped"]
        assert seen["missing"] == lost, (cid, seen, got)
        assert seen["duplicated"] == got["duplicated"], (cid, seen, got)
        assert seen["out_of_order"] == got["reordered"], (cid, seen, got)
        assert seen["reconnects"] == got["disconnects"], (cid, seen, got)
        assert seen["received"] == got["delivered"], (cid, seen, got)
        # A stream never ends on a late token: resuming from its last id is always safe.
        assert all(last == highest for last, highest in obs.last_ids_at_disconnect), cid


def ids(n: int) -> list[str]:
    return [new_id() for _ in range(n)]


# --- one fault at a time -------------------------------------------------------------------------


async def test_drop_rate_tokens_are_missing_exactly_as_counted() -> None:
    with Sandbox(faults=FaultConfig(drop_rate=0.2, seed=7)) as sb:
        observed = await run_scenario(sb, ids(6), total=60)
        assert_matches_stats(sb, observed, 60)
        assert sb.adapter_stats()["injected"]["dropped"] > 0


async def test_dropped_tokens_stay_missing_when_the_client_resumes_on_its_own() -> None:
    with Sandbox(faults=FaultConfig(drop_rate=1.0)) as sb:
        cid = new_id()
        response, _ = await open_stream(sb.sse_url, cid)
        await publish_tokens(sb.redis_url, cid, 1, 5, 6)
        await until(adapter_took(sb, cid, 5), what="five tokens at the adapter (all dropped)")
        response.close()
        # Resuming from before them must not bring them back, nor count them again.
        response, events = await open_stream(sb.sse_url, cid, last_event_id=0)
        await publish_tokens(sb.redis_url, cid, 6, 6, 6)
        assert [t.id for t in await collect_tokens(events)] == ["6"]
        response.close()
        assert injected(sb, cid)["dropped"] == 5


async def test_dup_rate_duplicates_come_back_to_back() -> None:
    with Sandbox(faults=FaultConfig(dup_rate=0.2, seed=7)) as sb:
        observed = await run_scenario(sb, ids(6), total=60)
        assert_matches_stats(sb, observed, 60)
        assert sb.adapter_stats()["injected"]["duplicated"] > 0
    for obs in observed.values():
        for i in range(1, len(obs.ids)):
            if obs.ids[i] in obs.ids[:i]:
                assert obs.ids[i - 1] == obs.ids[i]


async def test_reorder_rate_swaps_a_token_with_its_successor() -> None:
    with Sandbox(faults=FaultConfig(reorder_rate=0.2, seed=7)) as sb:
        observed = await run_scenario(sb, ids(6), total=60)
        assert_matches_stats(sb, observed, 60)
        assert sb.adapter_stats()["injected"]["reordered"] > 0
    for obs in observed.values():
        for i in range(1, len(obs.ids)):
            if obs.ids[i] < obs.ids[i - 1]:
                assert obs.ids[i - 1] == obs.ids[i] + 1


async def test_reorder_everything_still_ends_with_done_in_order() -> None:
    with Sandbox(faults=FaultConfig(reorder_rate=1.0)) as sb:
        [cid] = ids(1)
        observed = await run_scenario(sb, [cid], total=6)
        # 1 held, 2 sent then 1; 3 held, 4 then 3; 5 held, flushed in order before done.
        assert observed[cid].ids == [2, 1, 4, 3, 5, 6]
        assert injected(sb, cid)["reordered"] == 2
        assert_matches_stats(sb, observed, 6)


async def test_delay_ms_adds_latency_without_faults() -> None:
    with Sandbox(faults=FaultConfig(delay_ms=150)) as sb:
        cid = new_id()
        response, events = await open_stream(sb.sse_url, cid)
        started = time.monotonic()
        await publish_tokens(sb.redis_url, cid, 1, 3, 3)
        tokens = await collect_tokens(events)
        elapsed = time.monotonic() - started
        response.close()
        assert [t.id for t in tokens] == ["1", "2", "3"]
        assert 0.15 <= elapsed < 2.0
        assert injected(sb, cid) == {
            "dropped": 0,
            "duplicated": 0,
            "reordered": 0,
            "disconnects": 0,
            "resume_skipped": 0,
            "first_lost": 0,
            "gap_dropped": 0,
            "tail_withheld": 0,
            "delivered": 3,
        }


async def test_disconnect_after_n_resumes_without_loss() -> None:
    with Sandbox(faults=FaultConfig(disconnect_after=7)) as sb:
        observed = await run_scenario(sb, ids(4), total=40)
        assert_matches_stats(sb, observed, 40)
        for cid, obs in observed.items():
            # Tokens 1..39 are not done: cut after 7, 14, 21, 28, 35; done on the 6th stream.
            assert obs.ids == list(range(1, 41))
            assert injected(sb, cid)["disconnects"] == 5
            assert obs.connections == 6


async def test_resume_skip_bug_loses_exactly_one_token_per_resume() -> None:
    with Sandbox(faults=FaultConfig(resume_skip_bug=True)) as sb:
        cid = new_id()
        await publish_tokens(sb.redis_url, cid, 1, 6, 10)
        await until(adapter_took(sb, cid, 6), what="six tokens in the adapter's history")
        response, events = await open_stream(sb.sse_url, cid, last_event_id=3)
        await publish_tokens(sb.redis_url, cid, 7, 10, 10)
        tokens = await collect_tokens(events)
        response.close()
        assert [int(t.id or 0) for t in tokens] == [5, 6, 7, 8, 9, 10]  # 4 is lost
        assert injected(sb, cid)["resume_skipped"] == 1


async def test_resume_skip_bug_with_disconnects() -> None:
    with Sandbox(faults=FaultConfig(resume_skip_bug=True, disconnect_after=7)) as sb:
        [cid] = ids(1)
        observed = await run_scenario(sb, [cid], total=40)
        assert_matches_stats(sb, observed, 40)
        # Resumes at 7, 15, 23, 31 skip 8, 16, 24, 32; the resume at 39 must not skip done.
        missing = sorted(set(range(1, 41)) - set(observed[cid].ids))
        assert missing == [8, 16, 24, 32]
        assert injected(sb, cid)["disconnects"] == 5


# --- everything at once --------------------------------------------------------------------------


async def test_all_faults_together_match_the_stats() -> None:
    faults = FaultConfig(
        drop_rate=0.1,
        dup_rate=0.1,
        reorder_rate=0.1,
        disconnect_after=9,
        resume_skip_bug=True,
        first_loss_rate=0.5,
        gap=2,
        seed=3,
    )
    with Sandbox(faults=faults) as sb:
        observed = await run_scenario(sb, ids(8), total=80)
        assert_matches_stats(sb, observed, 80)
        totals = sb.adapter_stats()["injected"]
        # tail_withheld would keep the done token from ever arriving: tested on its own.
        assert all(totals[k] > 0 for k in totals if k != "tail_withheld"), totals


@pytest.mark.parametrize("delay_ms", [0.0, 5.0])
async def test_same_seed_same_faults(delay_ms: float) -> None:
    faults = FaultConfig(drop_rate=0.15, dup_rate=0.15, reorder_rate=0.15, seed=11)
    faults.delay_ms = delay_ms
    conversation_ids = ids(3)
    runs = []
    for _ in range(2):
        with Sandbox(faults=faults) as sb:
            observed = await run_scenario(sb, conversation_ids, total=30)
            runs.append({cid: (obs.ids, injected(sb, cid)) for cid, obs in observed.items()})
    assert runs[0] == runs[1]
