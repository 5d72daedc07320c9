"""Misbehaving SSE servers on loopback: bad token payloads, oversized events, what comes after
the done token, and a reader that crashes. Each must be an error counted on its conversation,
never a silent hang, and memory must stay bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable

import pytest

from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.sse import EventTooLarge, SSEParser
from sse_tui.report import format_summary, summary_dict
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot
from tests.servers import LoopbackServer, sse_head, token_event

RUN_TIMEOUT_S = 20.0
HEAD = sse_head("Cache-Control: no-cache", "Connection: close") + b": connected\n\n"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def token(seq: int, *, done: bool = False, cid: str | None = None, **override: object) -> bytes:
    """One token event; `override` replaces payload fields with (bad) values."""
    fields: dict[str, object] = {} if cid is None else {"conversation_id": cid}
    fields.update(override)
    return token_event(seq, done=done, extra=fields)


class ScriptedServer(LoopbackServer):
    """Serves each GET with `script(reader, writer, n)` (n = 1 for the first request)."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.read_request(reader, 5)
            await self.script(reader, writer, self.requests)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    def settings(self, **kw: object) -> Settings:
        base: dict[str, object] = dict(mode="consumer", sse=self.url,
                                       conversations=1, tokens=3, duration_s=0, grace_s=1.0,
                                       run_id="payloads")
        base.update(kw)
        return Settings(**base)  # type: ignore[arg-type]


async def wait_closed_by_client(reader: asyncio.StreamReader, limit_s: float = 10.0) -> None:
    """Hold the response open until the client hangs up (bounded)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.read(), limit_s)


async def run_against(script: Script, **kw: object) -> tuple[StatsSnapshot, ScriptedServer]:
    async with ScriptedServer(script) as server:
        snap = await asyncio.wait_for(LoadEngine(server.settings(**kw)).run(), RUN_TIMEOUT_S)
    return snap, server


def assert_accounted(snap: StatsSnapshot) -> None:
    acc = summary_dict(snap)["accounting"]
    assert acc["holds"] is True, acc
    assert not snap.notes


def three_tokens_with_a_bad_second(**bad: object) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(HEAD + token(1) + token(2, **bad) + token(3, done=True))
        await writer.drain()

    return script


# --- payload types -------------------------------------------------------------------------

async def test_a_string_timestamp_is_an_error_and_the_one_round_run_ends() -> None:
    # Before: the reader task died of a TypeError, nothing was counted and the run never ended.
    snap, _ = await run_against(three_tokens_with_a_bad_second(timestamp="1700000000"))
    t = snap.total
    assert snap.state == "finished"
    assert t.errors == {"bad token payload": 1}
    assert t.tokens_received == 2 and t.tokens_missing == 1 and t.loss_gap == 1
    (conv,) = snap.conversations
    assert conv.error is not None and "timestamp" in conv.error and "1700000000" in conv.error
    assert_accounted(snap)


BAD_PAYLOADS: dict[str, tuple[dict[str, object], str]] = {
    "done as a string": ({"done": "false"}, "bad token payload"),
    "sequence true": ({"sequence": True}, "bad token payload"),
    "sequence as a string": ({"sequence": "2"}, "bad token payload"),
    "sequence zero": ({"sequence": 0}, "bad token payload"),
    "sequence beyond the conversation": ({"sequence": 10**12}, "bad token payload"),
    "float timestamp": ({"timestamp": 1.5e18}, "bad token payload"),
    "bool timestamp": ({"timestamp": True}, "bad token payload"),
    "no done": ({"done": None}, "bad token payload"),
    "another conversation": ({"conversation_id": "someone-else"},
                             "token for another conversation"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
async def test_bad_payloads_are_errors_and_never_end_or_count(case: str) -> None:
    bad, kind = BAD_PAYLOADS[case]
    snap, _ = await run_against(three_tokens_with_a_bad_second(**bad))
    t = snap.total
    assert t.errors == {kind: 1}
    # "done": "false" must not end the stream: token 3 (the real done) still arrives.
    assert t.tokens_received == 2 and t.tokens_missing == 1
    assert t.conversations_completed == 0 and t.conversations_incomplete == 1
    assert_accounted(snap)


async def test_our_own_conversation_id_is_accepted() -> None:
    cid = "loadtest-payloads-1"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(HEAD + token(1, cid=cid) + token(2, cid=cid) + token(3, done=True, cid=cid))
        await writer.drain()

    snap, _ = await run_against(script)
    assert snap.total.errors == {} and snap.total.tokens_received == 3
    assert snap.total.conversations_completed == 1


def test_the_payload_error_kinds_stay_a_bounded_set() -> None:
    # The detail (the bad value) goes with the conversation, never into the kind.
    kinds = {kind for _, kind in BAD_PAYLOADS.values()}
    assert kinds == {"bad token payload", "token for another conversation"}


# --- events larger than the cap ------------------------------------------------------------

def test_the_parser_never_buffers_past_the_cap() -> None:
    cap = 64 * 1024
    parser = SSEParser(max_event_bytes=cap)
    piece = b"x" * 4096
    parser.feed(b"data: ")
    with pytest.raises(EventTooLarge):
        for _ in range(2 * cap // len(piece)):
            parser.feed(piece)
            assert parser._pending_len <= cap
    # Many small data lines of one event add up to the cap too.
    parser = SSEParser(max_event_bytes=cap)
    with pytest.raises(EventTooLarge):
        for _ in range(2 * cap // 100):
            parser.feed(b"data: " + b"y" * 100 + b"\n")
    # A normal stream under the cap is untouched.
    parser = SSEParser(max_event_bytes=cap)
    events = parser.feed(b"data: " + b"z" * (cap - 100) + b"\n\n" + b"data: ok\n\n")
    assert [len(e.data) for e in events] == [cap - 100, 2]


def big_line_script(size: int) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(HEAD + token(1) + b"event: token\ndata: ")
        piece = b"x" * (64 * 1024)
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()
        writer.write(b"\n\n" + token(2) + token(3, done=True))
        await writer.drain()

    return script


@pytest.mark.parametrize("transport", ["raw", "httpx"])
async def test_an_event_over_the_cap_is_an_error_on_its_conversation(transport: str) -> None:
    snap, server = await run_against(big_line_script(2 * 1024 * 1024), transport=transport)
    t = snap.total
    assert t.errors == {"event too large": 1}
    assert server.requests == 1  # not resumed: the same event would come again
    (conv,) = snap.conversations
    assert conv.state == "error" and conv.error and "event too large" in conv.error
    assert t.tokens_received == 1 and t.tokens_missing == 0  # consumer: 1 seen, 1 due
    assert_accounted(snap)


async def test_the_cap_is_a_setting() -> None:
    # A 64 KiB event passes a 1 MiB cap (and is then judged as a payload), not a 1 KiB one.
    ok, _ = await run_against(big_line_script(64 * 1024))
    assert ok.total.errors == {"bad token payload": 1} and ok.total.tokens_received == 3
    small, _ = await run_against(big_line_script(64 * 1024), max_event_bytes=1024)
    assert small.total.errors == {"event too large": 1}


_RSS_CHILD = textwrap.dedent("""
    import asyncio, json, resource, sys
    from sse_tui.engine.engine import LoadEngine
    from sse_tui.settings import Settings
    from tests.test_payloads import ScriptedServer, big_line_script

    async def main() -> None:
        async with ScriptedServer(big_line_script(int(sys.argv[1]))) as server:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            snap = await asyncio.wait_for(
                LoadEngine(server.settings(transport=sys.argv[2])).run(), 60)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"growth_kb": after - before, "errors": dict(snap.total.errors)}))

    asyncio.run(main())
""")


@pytest.mark.parametrize("transport", ["raw", "httpx"])
def test_memory_stays_bounded_for_a_huge_line(transport: str) -> None:
    # 96 MiB in one line: without the cap the raw reader held it twice (~200 MB).
    size = 96 * 1024 * 1024
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(size), transport], capture_output=True,
        text=True, timeout=60, cwd=os.getcwd(), check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {"event too large": 1}
    assert result["growth_kb"] < 40 * 1024, result  # the cap is 1 MiB; allow for the runtime


# --- after the done token ------------------------------------------------------------------

async def test_a_stream_left_open_after_done_is_counted_and_the_run_ends() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(HEAD + token(1) + token(2) + token(3, done=True))
        await writer.drain()
        await wait_closed_by_client(reader)

    started = time.monotonic()
    snap, _ = await run_against(script, grace_s=0.5)
    t = snap.total
    assert time.monotonic() - started < 5
    assert t.streams_not_closed_after_done == 1
    assert t.tokens_received == 3 and t.conversations_completed == 1 and t.errors == {}
    assert "1 streams not closed" in format_summary(snap)
    assert summary_dict(snap)["streams_not_closed_after_done"] == 1
    assert_accounted(snap)


async def test_a_server_that_closes_after_done_is_not_counted() -> None:
    snap, _ = await run_against(three_tokens_with_a_bad_second())
    assert snap.total.streams_not_closed_after_done == 0
    assert snap.total.tokens_after_done == 0


async def test_a_repeat_after_done_is_a_duplicate_and_a_new_sequence_an_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(HEAD + token(1) + token(2) + token(3, done=True) + token(2) + token(4))
        await writer.drain()

    snap, _ = await run_against(script, tokens=3)
    t = snap.total
    assert t.tokens_after_done == 2
    assert t.tokens_duplicated == 1 and t.tokens_received == 4
    assert t.errors == {"token after done": 1}
    assert t.streams_not_closed_after_done == 0
    assert t.tokens_missing == 0
    assert_accounted(snap)


# --- supervised readers --------------------------------------------------------------------

async def test_a_crashing_reader_is_an_error_on_its_conversation_and_the_run_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sse_tui.engine.consumer import Conversation

    real = Conversation._on_new_stream

    def crash_on_the_second_conversation(self: Conversation) -> None:
        if self.number == 2:
            raise RuntimeError("boom in the reader")
        real(self)

    monkeypatch.setattr(Conversation, "_on_new_stream", crash_on_the_second_conversation)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(HEAD + token(1) + token(2) + token(3, done=True))
        await writer.drain()

    snap, _ = await run_against(script, conversations=3)
    t = snap.total
    assert snap.state == "finished" and snap.fatal_error is None
    assert t.errors == {"internal error in reader": 1}
    assert t.conversations_completed == 2 and t.conversations_incomplete == 1
    crashed = next(c for c in snap.conversations if c.number == 2)
    assert crashed.state == "error"
    assert crashed.error and "RuntimeError: boom in the reader" in crashed.error
    assert_accounted(snap)


async def test_a_bug_outside_the_reader_ends_the_run_loudly_not_never(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sse_tui.engine.consumer import Conversation

    def broken_finalize(self: Conversation, phase: object, *, run_ended: bool = False) -> None:
        raise RuntimeError("finalize bug")

    monkeypatch.setattr(Conversation, "finalize", broken_finalize)
    snap, _ = await run_against(three_tokens_with_a_bad_second())
    assert snap.state == "failed"
    assert snap.fatal_error and "finalize bug" in snap.fatal_error
