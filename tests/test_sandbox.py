"""The embedded sandbox: redis-server child, reference SSE adapter conformance, Sandbox stack.

Everything is real: redis-server, the adapter process, HTTP over 127.0.0.1. The SSE client
below is a deliberately small raw-socket one, so the tests see the exact bytes on the wire.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from sse_tui.sandbox import (
    FaultConfig,
    RedisServer,
    Sandbox,
    SandboxError,
    find_redis_server,
)
from tests.conftest import adapter_took, until, wait_until

PREFIX = "llm:tokens:"
STEP_TIMEOUT_S = 5.0


# --- helpers shared with test_adapter_faults.py -----------------------------------------------


def new_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def payload(conversation_id: str, sequence: int, done: bool) -> bytes:
    return orjson.dumps(
        {
            "conversation_id": conversation_id,
            "token": f"tok{sequence} ",
            "sequence": sequence,
            "done": done,
            "timestamp": time.time_ns(),
        }
    )


async def publish_tokens(
    url: str, conversation_id: str, first: int, last: int, total: int, gap_s: float = 0.0
) -> list[bytes]:
    """PUBLISH tokens first..last of a `total`-token conversation; returns the payloads."""
    client = aioredis.Redis.from_url(url)
    sent = []
    try:
        for seq in range(first, last + 1):
            data = payload(conversation_id, seq, seq == total)
            await client.publish(PREFIX + conversation_id, data)
            sent.append(data)
            if gap_s:
                await asyncio.sleep(gap_s)
    finally:
        await client.aclose()
    return sent


@dataclass
class SseEvent:
    comment: str | None = None
    event: str | None = None
    id: str | None = None
    data: str | None = None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    buffer: bytearray = field(default_factory=bytearray)

    def close(self) -> None:
        self.writer.close()


async def http_get(base_url: str, path: str, headers: dict[str, str] | None = None) -> Response:
    """Send a GET and read the status line and headers; the body is left to the caller."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP_TIMEOUT_S)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    result_headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            result_headers[name.strip().lower()] = value.strip()
    return Response(int(status_line.split()[1]), result_headers, reader, writer)


async def read_body(response: Response) -> bytes:
    """A Content-Length body."""
    length = int(response.headers["content-length"])
    return await asyncio.wait_for(response.reader.readexactly(length), STEP_TIMEOUT_S)


async def _fill(response: Response, timeout_s: float) -> None:
    data = await asyncio.wait_for(response.reader.read(65536), timeout_s)
    if not data:
        raise EOFError("connection closed inside a chunked body")
    response.buffer += data


async def iter_events(
    response: Response, timeout_s: float = STEP_TIMEOUT_S
) -> AsyncIterator[SseEvent]:
    """De-chunk the body and yield SSE events and comments; returns at the terminating chunk."""
    text = bytearray()
    buf = response.buffer
    while True:
        while b"\r\n" not in buf:
            await _fill(response, timeout_s)
        line_end = buf.index(b"\r\n")
        size = int(buf[:line_end], 16)
        while len(buf) < line_end + 2 + size + 2:
            await _fill(response, timeout_s)
        text += buf[line_end + 2 : line_end + 2 + size]
        del buf[: line_end + 2 + size + 2]
        if size == 0:
            return
        while b"\n\n" in text:
            block_end = text.index(b"\n\n")
            block = bytes(text[:block_end]).decode()
            del text[: block_end + 2]
            yield parse_block(block)


def parse_block(block: str) -> SseEvent:
    event = SseEvent()
    data_lines = []
    for line in block.split("\n"):
        if line.startswith(":"):
            event.comment = line[1:].strip()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event.event = value
        elif name == "id":
            event.id = value
        elif name == "data":
            data_lines.append(value)
    if data_lines:
        event.data = "\n".join(data_lines)
    return event


async def open_stream(
    base_url: str, conversation_id: str, last_event_id: int | None = None
) -> tuple[Response, AsyncIterator[SseEvent]]:
    """Open /stream/<id> and wait for the `: connected` comment, which must come first."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    response = await http_get(base_url, f"/stream/{conversation_id}", headers)
    assert response.status == 200
    events = iter_events(response)
    first = await anext(events)
    assert first.comment == f"connected to {conversation_id}"
    return response, events


async def collect_tokens(events: AsyncIterator[SseEvent]) -> list[SseEvent]:
    """Token events until the response ends (comments skipped)."""
    return [e async for e in events if e.event == "token"]


def dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); /proc tells us it is dead.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" in status.read_text()


def process_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """True once `pid` has exited; fails the test (conftest's wait_until) after `timeout_s`."""
    wait_until(lambda: dead(pid), timeout=timeout_s, what=f"process {pid} to exit")
    return True


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(keepalive_s=0.3) as sb:
        yield sb


# --- redis-server --------------------------------------------------------------------------------


def test_find_redis_server_returns_an_executable() -> None:
    path = find_redis_server()
    assert os.access(path, os.X_OK)


def test_redis_server_starts_pings_and_stops_without_leftovers() -> None:
    server = RedisServer()
    with server:
        assert server.url == f"redis://127.0.0.1:{server.port}"
        assert server.address == f"127.0.0.1:{server.port}"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        client.close()
        pid = server.pid
        assert pid is not None
    assert process_gone(pid)
    assert not server.running


def test_children_die_with_their_parent_even_if_it_is_killed() -> None:
    # The parent starts the stack from a thread that exits at once: PR_SET_PDEATHSIG is per
    # thread, so this also proves the children survive that thread and die with the process.
    script = (
        "import threading, time\n"
        "from sse_tui.sandbox import Sandbox\n"
        "box = {}\n"
        "t = threading.Thread(target=lambda: box.setdefault('sb', Sandbox().start()))\n"
        "t.start(); t.join(); time.sleep(0.3)\n"
        "sb = box['sb']\n"
        "print(sb.redis_pid, sb.adapter_pid, sb.adapter_stats()['connections_total'], flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().decode()
        redis_pid, adapter_pid, connections = (int(x) for x in line.split())
        assert connections == 0  # both children were alive after the thread exited
    finally:
        parent.kill()
        parent.wait(5)
    assert process_gone(redis_pid)
    assert process_gone(adapter_pid)


# --- Sandbox -------------------------------------------------------------------------------------


def test_sandbox_starts_quickly_and_stops_everything() -> None:
    started = time.monotonic()
    sb = Sandbox().start()
    try:
        assert time.monotonic() - started < 2.0
        assert sb.sse_url.startswith("http://127.0.0.1:")
        assert sb.redis_address == sb.redis_url.removeprefix("redis://")
        stats = sb.adapter_stats()
        assert stats["connections_total"] == 0
        pids = [sb.redis_pid, sb.adapter_pid]
    finally:
        sb.stop()
    assert all(pid is not None and process_gone(pid) for pid in pids)


def test_sandbox_reports_why_the_adapter_did_not_start() -> None:
    sb = Sandbox()
    with RedisServer() as dead:
        url = dead.url
    with pytest.raises(SandboxError, match="cannot subscribe"):
        sb._start_adapter(url)  # nobody listens there any more
    sb.stop()


def test_run_sandbox_prints_the_addresses_and_stops_on_sigint() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sse_tui.sandbox import run_sandbox; exit(run_sandbox())"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not any("sse-tui --redis" in line for line in lines) and len(lines) < 20:
            lines.append(proc.stdout.readline())
        command = next(line for line in lines if "sse-tui --redis" in line).split()
        assert command[2].startswith("127.0.0.1:") and command[4].startswith("http://127.0.0.1:")
        assert command[5:] == ["-c", "5", "-t", "50"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


# --- adapter: plain HTTP -------------------------------------------------------------------------


async def test_healthz_answers_ok(sandbox: Sandbox) -> None:
    response = await http_get(sandbox.sse_url, "/healthz")
    assert response.status == 200
    assert await read_body(response) == b"ok"
    response.close()


@pytest.mark.parametrize("path", ["/stream/", "/stream"])
async def test_empty_conversation_id_is_400(sandbox: Sandbox, path: str) -> None:
    response = await http_get(sandbox.sse_url, path)
    assert response.status == 400
    response.close()


async def test_unknown_path_is_404(sandbox: Sandbox) -> None:
    response = await http_get(sandbox.sse_url, "/nope")
    assert response.status == 404
    response.close()


# --- adapter: streaming --------------------------------------------------------------------------


async def test_stream_headers_connected_comment_tokens_and_end(sandbox: Sandbox) -> None:
    cid = new_id()
    response = await http_get(sandbox.sse_url, f"/stream/{cid}")
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["transfer-encoding"] == "chunked"
    # The very first body bytes are the connected comment, as one chunk.
    first_chunk = b": connected to %b\n\n" % cid.encode()
    expected = b"%x\r\n%b\r\n" % (len(first_chunk), first_chunk)
    while len(response.buffer) < len(expected):
        await _fill(response, STEP_TIMEOUT_S)
    assert bytes(response.buffer[: len(expected)]) == expected

    sent = await publish_tokens(sandbox.redis_url, cid, 1, 20, 20)
    tokens = await collect_tokens(iter_events(response))
    assert [t.id for t in tokens] == [str(i) for i in range(1, 21)]
    assert [t.data.encode() for t in tokens if t.data] == sent  # payload bytes untouched
    # The response ended (terminating chunk) and the server closed the connection.
    assert await asyncio.wait_for(response.reader.read(), STEP_TIMEOUT_S) == b""
    response.close()


async def test_keep_alive_comments_while_idle(sandbox: Sandbox) -> None:
    response, events = await open_stream(sandbox.sse_url, new_id())
    started = time.monotonic()
    comments = []
    async for event in events:
        comments.append(event.comment)
        if len(comments) == 2:
            break
    assert comments == ["keep-alive", "keep-alive"]
    assert 0.4 < time.monotonic() - started < 3.0  # keepalive_s is 0.3
    response.close()


async def test_resume_with_last_event_id_delivers_exactly_the_rest(sandbox: Sandbox) -> None:
    cid = new_id()
    # Nobody is connected: the adapter still keeps the history.
    await publish_tokens(sandbox.redis_url, cid, 1, 6, 12)
    await until(adapter_took(sandbox, cid, 6), what="six tokens in the adapter's history")
    response, events = await open_stream(sandbox.sse_url, cid, last_event_id=3)
    await publish_tokens(sandbox.redis_url, cid, 7, 12, 12)
    tokens = await collect_tokens(events)
    assert [int(t.id or 0) for t in tokens] == list(range(4, 13))
    response.close()


async def test_stream_without_last_event_id_gets_live_tokens_only(sandbox: Sandbox) -> None:
    cid = new_id()
    await publish_tokens(sandbox.redis_url, cid, 1, 3, 6)
    await until(adapter_took(sandbox, cid, 3), what="three tokens at the adapter")
    response, events = await open_stream(sandbox.sse_url, cid)
    await publish_tokens(sandbox.redis_url, cid, 4, 6, 6)
    assert [t.id for t in await collect_tokens(events)] == ["4", "5", "6"]
    response.close()


async def test_many_concurrent_streams_each_get_their_tokens_in_order(sandbox: Sandbox) -> None:
    ids = [new_id() for _ in range(30)]
    opened = [await open_stream(sandbox.sse_url, cid) for cid in ids]
    await asyncio.gather(*(publish_tokens(sandbox.redis_url, cid, 1, 40, 40) for cid in ids))
    results = await asyncio.gather(*(collect_tokens(events) for _, events in opened))
    for cid, tokens in zip(ids, results, strict=True):
        assert [t.id for t in tokens] == [str(i) for i in range(1, 41)]
        assert all(orjson.loads(t.data or "")["conversation_id"] == cid for t in tokens)
    for response, _ in opened:
        response.close()


async def test_client_disconnect_unsubscribes(sandbox: Sandbox) -> None:
    cid = new_id()
    response, _ = await open_stream(sandbox.sse_url, cid)
    assert sandbox.adapter_stats()["per_conversation"][cid]["connections_active"] == 1
    response.close()
    await until(
        lambda: sandbox.adapter_stats()["per_conversation"][cid]["connections_active"] == 0,
        timeout=STEP_TIMEOUT_S, what="the adapter to see the client go")
    # Publishing to the abandoned conversation must not break anything.
    await publish_tokens(sandbox.redis_url, cid, 1, 3, 3)
    await until(adapter_took(sandbox, cid, 3), what="three tokens at the adapter")
    assert sandbox.adapter_stats()["per_conversation"][cid]["delivered"] == 0


async def test_stats_count_connections_and_deliveries(sandbox: Sandbox) -> None:
    cid = new_id()
    response, events = await open_stream(sandbox.sse_url, cid)
    await publish_tokens(sandbox.redis_url, cid, 1, 5, 5)
    await collect_tokens(events)
    response.close()
    stats = sandbox.adapter_stats()["per_conversation"][cid]
    assert stats == {
        "connections_total": 1,
        "connections_active": 0,
        "delivered": 5,
        "from_redis": 5,
        "injected": {
            "dropped": 0,
            "duplicated": 0,
            "reordered": 0,
            "disconnects": 0,
            "resume_skipped": 0,
            "first_lost": 0,
            "gap_dropped": 0,
            "tail_withheld": 0,
        },
    }


def test_fault_config_validates_rates() -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        FaultConfig(drop_rate=1.5)
    assert "--resume-skip-bug" in FaultConfig(resume_skip_bug=True).to_args()
    with pytest.raises(ValueError, match="first_loss_rate"):
        FaultConfig(first_loss_rate=2.0)
    with pytest.raises(ValueError, match="gap and tail_after"):
        FaultConfig(gap=-1)
    assert FaultConfig(gap=3).any and FaultConfig(tail_after=2).any


def test_sandbox_can_be_started_from_a_short_lived_thread() -> None:
    holder: dict[str, Sandbox] = {}
    thread = threading.Thread(target=lambda: holder.setdefault("sb", Sandbox().start()))
    thread.start()
    thread.join(10)
    sb = holder["sb"]
    try:
        time.sleep(0.2)  # a child killed on the thread's exit would be gone by now
        sb.check_alive()
        assert sb.adapter_stats()["connections_total"] == 0
    finally:
        sb.stop()
