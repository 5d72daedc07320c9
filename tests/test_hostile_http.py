"""Misbehaving SSE servers: every failure named, retried with backoff, never hammered.

Small asyncio HTTP servers on 127.0.0.1, each wrong in one way. The engine is driven
directly where the counts matter, the headless CLI (a subprocess) where the exit status and
the message do.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path

import pytest

from sse_tui.engine import consumer
from sse_tui.engine.engine import LoadEngine
from sse_tui.settings import Settings
from sse_tui.snapshot import StatsSnapshot
from tests.conftest import until
from tests.servers import LoopbackServer, sse_head, token_events

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server(LoopbackServer):
    """Counts the requests it got; `handler` answers each one (or does not)."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.request_times: list[float] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            writer.close()
            return
        self.request_times.append(time.monotonic())
        # The client went away, or the test is over (the server closes).
        with suppress(ConnectionError, asyncio.CancelledError):
            await self.handler(reader, writer)


def serving(handler: Handler) -> Server:
    return Server(handler)


def status(code: int, reason: str, body: bytes = b"nope\n",
           content_type: bytes = b"text/plain") -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s"
                     % (code, reason.encode(), content_type, len(body), body))
        await writer.drain()
        writer.close()

    return handle


_SSE_HEAD = sse_head("Connection: close")


async def close_after_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_SSE_HEAD)
    await writer.drain()
    writer.close()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    # SO_LINGER 0: close() sends a RST instead of a FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)  # the script: silence (the server's close ends it sooner)


async def slow_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for piece in (b"HTTP/1.1 200 OK\r\n", b"Content-Type: text/event-stream\r\n",
                  b"Connection: close\r\n", b"\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.2)  # the script: the head trickles in
    writer.write(b": connected\n\n" + token_events(1, 3, 3))
    await writer.drain()
    writer.close()


def consumer_settings(server: Server, **changes: object) -> Settings:
    s = Settings(mode="consumer", sse=server.url, conversations=1, tokens=3, duration_s=0,
                 run_id="hostile", grace_s=0.5)
    return s.with_changes(**changes)


async def run(settings: Settings, timeout: float = 20) -> StatsSnapshot:
    return await asyncio.wait_for(LoadEngine(settings).run(), timeout)


# -- non-retryable answers fail the conversation at once ------------------------------------

@pytest.mark.parametrize(
    ("handler", "kind", "example"),
    [
        (status(404, "Not Found"), "HTTP 404", "HTTP 404 from /stream/loadtest-hostile-1"),
        (status(401, "Unauthorized"), "HTTP 401", "HTTP 401 from /stream/loadtest-hostile-1"),
        (status(400, "Bad Request"), "HTTP 400", "HTTP 400 from /stream/loadtest-hostile-1"),
        (status(200, "OK", b"<html>hi</html>", b"text/html; charset=utf-8"), "bad content type",
         "Content-Type text/html from /stream/loadtest-hostile-1"),
    ],
    ids=["404", "401", "400", "html"],
)
async def test_a_non_retryable_answer_fails_the_conversation_once(
        handler: Handler, kind: str, example: str) -> None:
    async with serving(handler) as server:
        snap = await run(consumer_settings(server))
    t = snap.total
    assert server.requests == 1
    assert t.errors == {kind: 1}
    assert t.error_examples == {kind: example}
    assert t.connect_attempts == 1 and t.connections_opened == 0
    assert t.conversations_incomplete == 1
    (conv,) = snap.conversations
    assert conv.state == "error" and conv.error == example
    assert snap.fatal_error is not None
    assert "no SSE stream was ever established" in snap.fatal_error
    assert example in snap.fatal_error


async def requests_per_conversation_slot(handler: Handler, seconds: float,
                                         conversations: int = 2) -> tuple[Server, StatsSnapshot]:
    async with serving(handler) as server:
        s = consumer_settings(server, conversations=conversations, duration_s=seconds)
        snap = await run(s)
    return server, snap


async def test_refills_after_404s_back_off() -> None:
    # Today's bug: -c 2 against a 404 made ~1,500-1,900 requests/s, exit 0.
    server, snap = await requests_per_conversation_slot(status(404, "Not Found"), 3.0)
    t = snap.total
    assert 2 <= server.requests <= 40, f"{server.requests} requests in 3 s"
    assert t.errors == {"HTTP 404": server.requests}
    assert t.connect_attempts == server.requests
    assert t.conversations_started == server.requests  # one attempt each, then a refill
    assert snap.fatal_error and "no SSE stream was ever established" in snap.fatal_error


async def test_a_server_closing_right_after_its_headers_is_retried_with_backoff() -> None:
    # Today's bug: ~4,800 reconnects/s with Errors: 0.
    server, snap = await requests_per_conversation_slot(close_after_headers, 3.0)
    t = snap.total
    assert 2 <= server.requests <= 40, f"{server.requests} requests in 3 s"
    assert t.errors == {"stream ended before any event": server.requests}
    assert t.error_examples["stream ended before any event"] == (
        "/stream/loadtest-hostile-1 ended after its headers, before any event")
    assert t.reconnects == 0  # nothing to resume: failed attempts, not resumes
    assert t.stream_outages == 0
    assert snap.fatal_error and "no SSE stream was ever established" in snap.fatal_error


async def test_a_reset_before_the_headers_is_named() -> None:
    async with serving(reset) as server:
        snap = await run(consumer_settings(server, retry_budget_s=0.5))
    t = snap.total
    assert 2 <= server.requests <= 15
    assert t.errors == {"closed before headers": server.requests}
    (conv,) = snap.conversations
    assert conv.error is not None and "no stream for 0.5 s" in conv.error


async def test_headers_that_never_come_time_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer, "CONNECT_TIMEOUT_S", 0.3)
    async with serving(never_answer) as server:
        snap = await run(consumer_settings(server, retry_budget_s=0.5))
    t = snap.total
    assert 1 <= server.requests <= 5
    assert t.errors == {"connect timeout": server.requests}
    assert t.error_examples["connect timeout"] == (
        f"no response headers from 127.0.0.1:{server.port} in time")


async def test_slow_headers_are_waited_for() -> None:
    async with serving(slow_headers) as server:
        snap = await run(consumer_settings(server))
    t = snap.total
    assert server.requests == 1 and not t.errors
    assert t.conversations_completed == 1 and t.tokens_received == 3
    assert t.connect.summary.min >= 500  # ms: the headers took ~0.6 s to arrive
    assert t.establish.count == 1 and t.establish.summary.min >= 500
    assert snap.fatal_error is None


async def test_establish_time_includes_the_failed_attempts() -> None:
    attempts = 0

    async def fail_twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            await status(503, "Service Unavailable")(reader, writer)
            return
        writer.write(_SSE_HEAD + b": connected\n\n" + token_events(1, 3, 3))
        await writer.drain()
        writer.close()

    async with serving(fail_twice) as server:
        snap = await run(consumer_settings(server))
    t = snap.total
    assert server.requests == 4 and t.connect_attempts == 4 and t.connections_opened == 1
    assert t.errors == {"HTTP 503": 3}
    spent_ms = (server.request_times[-1] - server.request_times[0]) * 1000
    # Connect time is the one attempt that worked; the time to establish covers them all.
    assert t.establish.count == 1
    assert t.establish.summary.max >= spent_ms > t.connect.summary.max
    assert t.conversations_completed == 1


async def test_the_servers_retry_field_is_honoured_on_resume() -> None:
    async def retry_then_rest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(server.heads) == 1:  # the first stream: retry 600 ms, one token, then it ends
            writer.write(_SSE_HEAD + b"retry: 600\n: connected\n\n" + token_events(1, 1, 3))
        else:
            writer.write(_SSE_HEAD + b": connected\n\n" + token_events(2, 3, 3))
        await writer.drain()
        writer.close()

    async with serving(retry_then_rest) as server:
        snap = await run(consumer_settings(server))
    t = snap.total
    assert server.requests == 2
    assert server.request_times[1] - server.request_times[0] >= 0.6
    assert b"Last-Event-ID: 1" in server.heads[1]
    assert t.conversations_completed == 1 and t.tokens_missing == 0
    # A stream that worked, lost and resumed: one outage, about the retry interval long.
    assert t.stream_outages == 1 and 600 <= t.outage_ms < 3000
    assert t.reconnects == 1 and not t.errors


# -- the CLI: exit status and what it says ---------------------------------------------------

def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    return dict(os.environ, PYTHONPATH=str(root), NO_COLOR="1")


async def run_cli(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sse_tui", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env())
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_a_run_that_never_got_a_stream_exits_1_and_says_why(tmp_path: Path) -> None:
    out_json = tmp_path / "run.json"
    async with serving(status(404, "Not Found")) as server:
        code, out, err = await run_cli(
            "-mode", "consumer", "-sse", server.url, "-c", "2", "-duration", "2s",
            "--run-id", "cli404", "--json", str(out_json))
    assert code == 1, (out, err)
    text = out + err
    assert "no SSE stream was ever established" in text
    assert "HTTP 404 from /stream/loadtest-cli404-" in text
    assert "Traceback" not in text
    data = json.loads(out_json.read_text())
    assert data["state"] == "failed"
    assert "no SSE stream was ever established" in data["fatal_error"]
    assert set(data["errors_by_kind"]) == {"HTTP 404"}
    assert data["error_examples"]["HTTP 404"].startswith("HTTP 404 from /stream/loadtest-cli404-")
    assert data["connect_attempts"] == data["errors"] >= 2


async def test_cli_an_html_page_instead_of_a_stream_exits_1_naming_the_content_type() -> None:
    async with serving(status(200, "OK", b"<html/>", b"text/html")) as server:
        code, out, err = await run_cli(
            "-mode", "consumer", "-sse", server.url, "-c", "1", "-duration", "0",
            "--run-id", "clihtml")
    assert code == 1
    assert "Content-Type text/html from /stream/loadtest-clihtml-1" in out + err


async def test_progress_lines_name_each_new_error_kind_once_with_its_example() -> None:
    from sse_tui.report import new_error_lines

    async with serving(status(404, "Not Found")) as server:
        engine = LoadEngine(consumer_settings(server))
        seen: set[str] = set()
        await run_engine_until_done(engine)
        first = new_error_lines(engine.snapshot(), seen)
        again = new_error_lines(engine.snapshot(), seen)
    assert first == ["  error: HTTP 404 (e.g. HTTP 404 from /stream/loadtest-hostile-1)"]
    assert again == []


async def run_engine_until_done(engine: LoadEngine) -> StatsSnapshot:
    return await asyncio.wait_for(engine.run(), 20)


# -- file descriptors ------------------------------------------------------------------------

def _limited(soft_and_hard: int) -> Callable[[], None]:
    def preexec() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (soft_and_hard, soft_and_hard))

    return preexec


async def test_cli_conversations_that_cannot_fit_the_descriptor_limit_exit_2_upfront() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sse_tui", "-mode", "consumer", "-sse", "http://127.0.0.1:9",
        "-c", "500", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(), preexec_fn=_limited(128))
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    text = err.decode()
    assert "500 conversations need about 564 file descriptors" in text
    assert "may open only 128" in text and "ulimit -n 564" in text
    assert "Traceback" not in text


_EMFILE_RUN = """
import asyncio, json, sys
from sse_tui.engine.engine import LoadEngine
from sse_tui.settings import Settings
s = Settings(mode="consumer", sse=sys.argv[1], conversations=120, tokens=3, duration_s=1.5,
             run_id="fds", retry_budget_s=30, grace_s=0.2)
snap = asyncio.run(LoadEngine(s).run())
print(json.dumps({"errors": dict(snap.total.errors), "examples": dict(snap.total.error_examples),
                  "opened": snap.total.connections_opened}))
"""


async def test_running_out_of_descriptors_mid_run_is_named_as_such() -> None:
    # Streams that stay open, so that each conversation keeps its socket.
    async def hold_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_SSE_HEAD + b": connected\n\n")
        await writer.drain()
        await asyncio.sleep(10)  # the script: keep the stream open, say nothing more

    async with serving(hold_open) as server:
        # The engine directly (no upfront check): 120 streams under a limit of 64.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _EMFILE_RUN, server.url, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
            preexec_fn=_limited(64))
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    kinds = set(result["errors"])
    assert "too many open files" in kinds
    assert not kinds & {"connect", "connection refused"}, kinds
    assert "too many open files in sse-tui itself (limit 64)" in result["examples"][
        "too many open files"]
    # Retried with backoff, not in a tight loop (which is what made the generator look
    # overloaded): a few attempts per conversation in 1.5 s.
    assert result["errors"]["too many open files"] <= 120 * 8
    assert 0 < result["opened"] < 120


@pytest.mark.parametrize(
    ("handler", "kind"),
    [(status(404, "Not Found"), "HTTP 404"),
     (status(200, "OK", b"<html/>", b"text/html"), "bad content type")],
    ids=["404", "html"])
async def test_the_httpx_transport_names_the_same_kinds(handler: Handler, kind: str) -> None:
    async with serving(handler) as server:
        snap = await run(consumer_settings(server, transport="httpx"))
    assert server.requests == 1 and set(snap.total.errors) == {kind}


def test_a_bad_retry_budget_is_one_line_and_exit_2() -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "sse_tui", "--retry-budget", "soon", "-mode", "consumer"],
        capture_output=True, text=True, env=_env(), timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "sse-tui: --retry-budget: invalid duration 'soon': use a Go duration such as 500ms, "
        "30s, 5m or 1h30m"]


async def test_while_no_stream_works_the_live_views_say_why() -> None:
    from dataclasses import replace

    from textual.app import App, ComposeResult

    from sse_tui.tui.widgets.status import StatusLine

    async with serving(status(404, "Not Found")) as server:
        engine = LoadEngine(consumer_settings(server, duration_s=1.0))
        task = asyncio.ensure_future(engine.run())
        await until(lambda: engine.snapshot().stream_warning is not None,
                    what="the live warning")
        live = engine.snapshot()
        final = await asyncio.wait_for(task, 20)
    assert live.stream_warning is not None
    assert live.stream_warning.startswith("no SSE stream established yet at ")
    assert "mostly HTTP 404 (e.g. HTTP 404 from /stream/loadtest-hostile-" in live.stream_warning
    assert final.stream_warning is None and final.fatal_error is not None

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield StatusLine()

    app = One()
    async with app.run_test(size=(200, 3)):
        line = app.query_one(StatusLine)
        line.update_from(replace(live, state="running"))
        assert "⚠ no SSE stream established yet" in str(line.content)
        assert line.has_class("-warning")
