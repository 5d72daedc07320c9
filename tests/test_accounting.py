"""Every token accounted for, and where each missing one was lost.

The invariant (docs/loss.md): every sequence a reader was due is received or missing, never
neither, per conversation and in total, under every fault the sandbox injects and when a
conversation fails while its tokens are still being published. Each loss class is produced
by the sandbox and counted exactly, per conversation and in total."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sse_tui.engine.accounting import DETAIL_CAP, check_totals
from sse_tui.engine.consumer import MAX_RANGES, Conversation
from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.stats import SequenceTracker, classify_loss
from sse_tui.report import format_summary, summary_dict
from sse_tui.sandbox import FaultConfig, Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import Counters, StatsSnapshot
from tests.servers import LoopbackServer

RUN_TIMEOUT_S = 40.0
CONVERSATIONS = 4
TOKENS = 30


def settings_for(sse_url: str, redis: str, **kw: object) -> Settings:
    base: dict[str, object] = dict(mode="both", redis=redis, sse=sse_url,
                                   conversations=CONVERSATIONS, tokens=TOKENS, delay_ms=2,
                                   duration_s=0, grace_s=1.0, json_detail=True)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def run(settings: Settings) -> StatsSnapshot:
    return await asyncio.wait_for(LoadEngine(settings).run(), RUN_TIMEOUT_S)


def assert_invariant(snap: StatsSnapshot) -> dict[str, Any]:
    """The invariant in total and per conversation; returns the JSON summary."""
    d = summary_dict(snap)
    acc = d["accounting"]
    assert acc["holds"] is True, acc
    assert acc["unaccounted"] == 0 and acc["published_not_expected"] == 0
    t = snap.total
    assert t.tokens_published == t.tokens_received - t.tokens_duplicated + t.tokens_missing
    assert sum(d["loss"].values()) == t.tokens_missing
    assert not snap.notes and t.accounting_violations == 0
    detail = d["detail"]["conversations"]
    assert len(detail) == t.conversations_started
    for c in detail:
        assert c["published"] == c["received"] + c["missing"], c
        assert sum(c["loss"].values()) == c["missing"], c
        assert sum(hi - lo + 1 for lo, hi in c["missing_ranges"]) == c["missing"] or (
            c["ranges_omitted"])
    return d


# --- the classes, in isolation -------------------------------------------------------------

def test_loss_classes_of_missing_ranges() -> None:
    t = SequenceTracker()
    for seq in (3, 4, 6, 9, 10, 13):
        t.receive(seq, False)
    ranges = t.missing_ranges(15)
    assert ranges == [(1, 2), (5, 5), (7, 8), (11, 12), (14, 15)]
    # 10 was a resume point: 11 is after_resume, 12 a gap.
    assert classify_loss(ranges, 1, 15, [10]) == {
        "first": 2, "gap": 1 + 2 + 1, "tail": 2, "after_resume": 1}
    assert classify_loss(t.missing_ranges(13), 1, 13, []) == {
        "first": 2, "gap": 5, "tail": 0, "after_resume": 0}
    # Nothing delivered: all of it is the tail.
    assert classify_loss(SequenceTracker().missing_ranges(5), 1, 5, []) == {
        "first": 0, "gap": 0, "tail": 5, "after_resume": 0}
    assert classify_loss([], 1, 5, [2]) == {"first": 0, "gap": 0, "tail": 0, "after_resume": 0}


def test_a_broken_invariant_is_loud() -> None:
    ok = Counters(tokens_published=10, tokens_expected=10, tokens_received=9, tokens_missing=1)
    assert check_totals([ok], "both", []) == []
    lost = Counters(tokens_published=13, tokens_expected=10, tokens_received=9,
                    tokens_missing=1)
    notes = check_totals([lost], "both", [])
    assert any("ACCOUNTING INVARIANT BROKEN" in n and "+3 neither received nor missing" in n
               for n in notes)
    double = Counters(tokens_expected=10, tokens_received=10, tokens_missing=1,
                      accounting_violations=1)
    notes = check_totals([double], "consumer", ["loadtest-x-1: due 10 != received 10 + "
                                                "missing 1"])
    assert len(notes) == 3 and "loadtest-x-1" in notes[1]
    assert check_totals([lost], "producer", []) == []


# --- under every fault ---------------------------------------------------------------------

# fault -> the adapter's injected counter that each loss class must equal exactly
# (per conversation and in total); None: that class must be 0.
SHAPES: dict[str, tuple[FaultConfig, dict[str, str | None]]] = {
    "first-loss": (FaultConfig(first_loss_rate=1.0, seed=3),
                   {"first": "first_lost", "gap": None, "tail": None, "after_resume": None}),
    "gap": (FaultConfig(gap=4, seed=3),
            {"first": None, "gap": "gap_dropped", "tail": None, "after_resume": None}),
    "tail": (FaultConfig(tail_after=9, seed=3),
             {"first": None, "gap": None, "tail": "tail_withheld", "after_resume": None}),
    "resume-bug": (FaultConfig(disconnect_after=7, resume_skip_bug=True, seed=3),
                   {"first": None, "gap": None, "tail": None,
                    "after_resume": "resume_skipped"}),
}


@pytest.mark.parametrize("case", sorted(SHAPES))
async def test_each_loss_class_is_counted_exactly(case: str) -> None:
    faults, expect = SHAPES[case]
    with Sandbox(faults=faults) as sb:
        snap = await run(settings_for(sb.sse_url, sb.redis_address, run_id=f"shape-{case}"))
        stats = sb.adapter_stats()
    d = assert_invariant(snap)
    injected = stats["injected"]
    for cls, counter in expect.items():
        want = injected[counter] if counter else 0
        assert d["loss"][cls] == want, (cls, d["loss"], injected)
    assert d["tokens_missing"] > 0, "the fault was not exercised"
    per_conv = {cid: c["injected"] for cid, c in stats["per_conversation"].items()}
    for c in d["detail"]["conversations"]:
        for cls, counter in expect.items():
            assert c["loss"][cls] == (per_conv[c["id"]][counter] if counter else 0), c
    if case == "first-loss":
        assert all(c["missing_ranges"] == [[1, 1]] for c in d["detail"]["conversations"])
    if case == "gap":
        assert all(c["missing_ranges"] == [[3, 6]] for c in d["detail"]["conversations"])
    if case == "tail":
        assert all(c["missing_ranges"] == [[10, TOKENS]] for c in d["detail"]["conversations"])
    summary = format_summary(snap)
    assert "Missing, where lost:  first " in summary


FAULTS: dict[str, FaultConfig] = {
    "drop": FaultConfig(drop_rate=0.1, seed=5),
    "dup": FaultConfig(dup_rate=0.1, seed=5),
    "reorder": FaultConfig(reorder_rate=0.1, seed=5),
    "delay": FaultConfig(delay_ms=5, seed=5),
    "disconnect": FaultConfig(disconnect_after=7, seed=5),
    "everything": FaultConfig(drop_rate=0.05, dup_rate=0.05, reorder_rate=0.05, delay_ms=1,
                              disconnect_after=9, resume_skip_bug=True, first_loss_rate=0.5,
                              gap=2, seed=5),
}


@pytest.mark.parametrize("case", sorted(FAULTS))
async def test_the_invariant_holds_under_every_fault(case: str) -> None:
    with Sandbox(faults=FAULTS[case]) as sb:
        snap = await run(settings_for(sb.sse_url, sb.redis_address, run_id=f"inv-{case}"))
        injected = sb.adapter_stats()["injected"]
    d = assert_invariant(snap)
    lost = (injected["dropped"] + injected["resume_skipped"] + injected["first_lost"]
            + injected["gap_dropped"])
    assert d["tokens_missing"] == lost
    assert d["tokens_duplicated"] == injected["duplicated"]
    if case == "drop":
        assert d["loss"]["first"] + d["loss"]["gap"] == injected["dropped"] > 0
        assert d["loss"]["tail"] == d["loss"]["after_resume"] == 0


async def test_duration_runs_with_cut_short_conversations_balance(sandbox: Sandbox) -> None:
    snap = await run(settings_for(sandbox.sse_url, sandbox.redis_address, run_id="inv-dur",
                                  tokens=50, delay_ms=5, duration_s=1.0))
    assert snap.total.conversations_cut_short > 0
    assert_invariant(snap)


# --- a conversation failing while its tokens are being published ---------------------------

class NotFoundOnResume(LoopbackServer):
    """A proxy to the sandbox adapter that answers 404 to every resume (Last-Event-ID)."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.resumes = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await self.read_request(reader, 5)
            if b"last-event-id:" in head.lower():
                self.resumes += 1
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n"
                             b"Connection: close\r\n\r\nnot found\n")
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1",
                                                                 self.upstream_port)
            up_writer.write(head)
            try:
                for _ in range(100_000):  # bounded: a stream is a few KB here
                    data = await asyncio.wait_for(up_reader.read(65536), 10)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
            finally:
                up_writer.close()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()


async def test_the_invariant_holds_when_a_resume_gets_404_mid_publish() -> None:
    # Before: in such a run a few published tokens were neither received nor missing (the
    # publisher's pipeline in flight when the reader gave up).
    with Sandbox(faults=FaultConfig(disconnect_after=7)) as sb:
        port = int(sb.sse_url.rsplit(":", 1)[1])
        async with NotFoundOnResume(port) as proxy:
            snap = await run(settings_for(f"http://127.0.0.1:{proxy.port}", sb.redis_address,
                                          run_id="inv-404", tokens=60, delay_ms=1))
    assert proxy.resumes >= CONVERSATIONS
    t = snap.total
    assert t.conversations_incomplete == CONVERSATIONS
    assert t.tokens_received == 7 * CONVERSATIONS
    assert 0 < t.tokens_published < 60 * CONVERSATIONS
    d = assert_invariant(snap)
    assert d["loss"]["tail"] == t.tokens_missing > 0
    # A conversation whose publisher had sent only the 7 tokens before its reader failed has
    # nothing missing (a race of the 1 ms schedule); every other one lost its tail from 8 on.
    lost = [c for c in d["detail"]["conversations"] if c["missing_ranges"]]
    assert lost and all(c["missing_ranges"][0][0] == 8 for c in lost)


async def test_the_invariant_holds_when_a_reader_crashes_mid_publish(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Conversation._on_token

    def crash_at_the_fifth(self: Conversation, ev: Any) -> bool:
        done = real(self, ev)
        if self.number == 2 and self.tracker.unique == 5:
            raise RuntimeError("reader bug")
        return done

    monkeypatch.setattr(Conversation, "_on_token", crash_at_the_fifth)
    snap = await run(settings_for(sandbox.sse_url, sandbox.redis_address, run_id="inv-crash",
                                  tokens=60, delay_ms=1))
    t = snap.total
    assert snap.fatal_error is None
    assert t.errors == {"internal error in reader": 1}
    assert t.conversations_completed == CONVERSATIONS - 1
    d = assert_invariant(snap)
    crashed = next(c for c in d["detail"]["conversations"] if c["id"].endswith("-2"))
    assert crashed["received"] == 5 and crashed["errors"] == 1
    assert crashed["missing"] == crashed["published"] - 5 == crashed["loss"]["tail"]
    assert "internal error in reader" in (crashed["error"] or "")


# --- --json-detail ---------------------------------------------------------------------------

async def test_json_detail_is_bounded_and_says_so() -> None:
    with Sandbox(faults=FaultConfig(drop_rate=0.3, seed=11)) as sb:
        snap = await run(settings_for(sb.sse_url, sb.redis_address, run_id="detail",
                                      conversations=2, tokens=200, delay_ms=0.5))
    d = assert_invariant(snap)
    detail = d["detail"]
    assert detail["conversations_cap"] == DETAIL_CAP and detail["ranges_cap"] == MAX_RANGES
    assert detail["conversations_omitted"] == 0
    for c in detail["conversations"]:
        assert len(c["missing_ranges"]) == MAX_RANGES and c["ranges_omitted"] > 0
        assert set(c) >= {"id", "missing_ranges", "reconnects", "errors", "loss", "outage_s"}
        listed = sum(hi - lo + 1 for lo, hi in c["missing_ranges"])
        assert listed < c["missing"]


async def test_without_json_detail_there_is_no_detail(sandbox: Sandbox) -> None:
    snap = await run(settings_for(sandbox.sse_url, sandbox.redis_address, run_id="nodetail",
                                  json_detail=False, conversations=1, tokens=5))
    d = summary_dict(snap)
    assert "detail" not in d and snap.details == ()
    assert d["accounting"]["holds"] is True
    assert d["loss"] == {"first": 0, "gap": 0, "tail": 0, "after_resume": 0}


def test_the_consumer_row_says_where_tokens_were_lost() -> None:
    from sse_tui.tui.widgets.consumers import _missing

    assert _missing((2, "gap")).plain == "2g"
    assert _missing((1, "resume")).plain == "1r"
    assert _missing((5, "mixed")).plain == "5m"
    assert _missing((120, "tail")).plain == "120t"
    assert _missing((1200, "tail")).plain == "1200"  # the column is 4 wide
    assert _missing((3, "")).plain == "3"


@pytest.mark.parametrize("follow_redis", [False, True])
async def test_the_invariant_holds_in_consumer_and_producer_modes(follow_redis: bool) -> None:
    from tests.conftest import until

    with Sandbox(faults=FaultConfig(drop_rate=0.1, disconnect_after=8, seed=9)) as sb:
        common: dict[str, object] = dict(run_id=f"inv-split-{follow_redis}", tokens=40)
        consumer = LoadEngine(settings_for(sb.sse_url, sb.redis_address, mode="consumer",
                                           **common), follow_redis=follow_redis)
        consumer_task = asyncio.ensure_future(consumer.run())

        def streaming() -> bool:
            views = consumer.snapshot().conversations
            return len(views) == CONVERSATIONS and all(c.state == "streaming" for c in views)

        await until(streaming, what="the consumer's streams to open")
        produced = await run(settings_for(sb.sse_url, sb.redis_address, mode="producer",
                                          **common))
        consumed = await asyncio.wait_for(consumer_task, RUN_TIMEOUT_S)
        injected = sb.adapter_stats()["injected"]
    assert summary_dict(produced)["accounting"]["holds"] is None  # nothing read: no check
    d = summary_dict(consumed)
    assert d["accounting"]["holds"] is True, d["accounting"]
    assert d["tokens_missing"] == injected["dropped"] > 0
    assert d["tokens_expected"] == produced.total.tokens_published == CONVERSATIONS * 40
    assert sum(d["loss"].values()) == d["tokens_missing"]
