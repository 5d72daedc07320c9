"""TLS: https:// streams (both transports) and rediss:// against real TLS servers on loopback.

The CA is made at test time with trustme. The SSE servers are small asyncio TLS servers
written here; rediss:// goes through a TLS-terminating proxy (the redis-server the tests can
start has no TLS) to a real redis-server: a real handshake, real Redis behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from sse_tui.cli_args import parse_args
from sse_tui.engine.transport import StreamConfig, StreamError, aclose_transports, open_stream
from sse_tui.engine.transport.tls import TLSOptions, describe_tls_error, verify_failure
from sse_tui.sandbox import RedisServer, Sandbox
from tests.servers import LoopbackServer, pipe, sse_head

pytestmark = pytest.mark.timeout(60)

TRANSPORTS = ["raw", "httpx"]
WAIT = 5.0
RUN_TIMEOUT_S = 40.0


@dataclass
class Pki:
    """A test CA, a server certificate for 127.0.0.1/localhost, and a client certificate."""

    ca: trustme.CA
    ca_file: Path
    server: ssl.SSLContext  # serves the CA's certificate for 127.0.0.1 and localhost
    client_cert: Path  # PEM: the client's key and certificate chain in one file
    other_ca_file: Path  # a CA that signed nothing here


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ca.issue_cert("loadgen@example.test")
    client.private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    trustme.CA().cert_pem.write_to_path(str(d / "other-ca.pem"))
    return Pki(ca, d / "ca.pem", server, d / "client.pem", d / "other-ca.pem")


# --- a small TLS SSE server -----------------------------------------------------------------

def _token(seq: int, done: bool) -> bytes:
    data = json.dumps({"sequence": seq, "timestamp": time.time_ns(), "done": done})
    return f"id: {seq}\nevent: token\ndata: {data}\n\n".encode()


class SSEServer(LoopbackServer):
    """Answers every GET with `tokens` token events (the last one done), then closes."""

    def __init__(self, tls: ssl.SSLContext, tokens: int) -> None:
        super().__init__(tls=tls)
        self.tokens = tokens

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.read_request(reader)
            writer.write(sse_head("Cache-Control: no-cache") + b": connected\n\n")
            for seq in range(1, self.tokens + 1):
                writer.write(_token(seq, seq == self.tokens))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
            pass  # a client that failed the handshake or left
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


def sse_server(tls: ssl.SSLContext, tokens: int = 3) -> SSEServer:
    return SSEServer(tls, tokens)


@pytest.fixture(autouse=True)
async def close_shared_clients() -> AsyncIterator[None]:
    yield
    await aclose_transports()


async def read_all(url: str, config: StreamConfig) -> list[str]:
    stream = await asyncio.wait_for(open_stream(url, config=config), WAIT)
    try:
        return [ev.data async for ev in stream if not ev.is_comment]
    finally:
        await stream.aclose()


# --- https:// -------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_https_with_cacert_reads_the_stream_and_sends_the_headers(
        pki: Pki, transport: str) -> None:
    async with sse_server(pki.server) as srv:
        config = StreamConfig(transport, (("Authorization", "Bearer t0k3n"),),
                              TLSOptions(cacert=str(pki.ca_file)))
        events = await read_all(f"{srv.url}/stream/c1", config)
    assert [json.loads(e)["sequence"] for e in events] == [1, 2, 3]
    assert b"\r\nauthorization: bearer t0k3n\r\n" in srv.heads[0].lower()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_https_without_the_ca_fails_once_naming_the_certificate_problem(
        pki: Pki, transport: str) -> None:
    async with sse_server(pki.server) as srv:
        with pytest.raises(StreamError) as caught:
            await read_all(f"{srv.url}/stream/c1",
                           StreamConfig(transport, tls=TLSOptions(cacert=str(pki.other_ca_file))))
    message = str(caught.value)
    assert "certificate verify failed: unable to get local issuer certificate" in message
    assert "--cacert FILE" in message and "--insecure" in message
    assert "\n" not in message
    assert caught.value.retryable is False  # it would fail the same way next time


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_insecure_skips_verification(pki: Pki, transport: str) -> None:
    async with sse_server(pki.server) as srv:
        events = await read_all(f"{srv.url}/stream/c1",
                                StreamConfig(transport, tls=TLSOptions(insecure=True)))
    assert len(events) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_client_certificate_for_a_server_that_asks_for_one(
        pki: Pki, transport: str) -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.ca.issue_cert("127.0.0.1").configure_cert(server)
    pki.ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED
    async with sse_server(server) as srv:
        with_cert = TLSOptions(cacert=str(pki.ca_file), cert=str(pki.client_cert))
        events = await read_all(f"{srv.url}/stream/c1", StreamConfig(transport, tls=with_cert))
        assert len(events) == 3
        # Without one the server ends the connection (TLS 1.3: right after the handshake).
        with pytest.raises(StreamError):
            await read_all(f"{srv.url}/stream/c1",
                           StreamConfig(transport, tls=TLSOptions(cacert=str(pki.ca_file))))


def test_a_cacert_that_is_no_certificate_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(StreamError, match=r"^cannot load --cacert .*ca\.pem: .*PEM file"):
        asyncio.run(open_stream("https://127.0.0.1:1/stream/x",
                                config=StreamConfig(tls=TLSOptions(cacert=str(bad)))))


def test_verify_failures_are_named_with_what_to_do() -> None:
    assert verify_failure("self-signed certificate in certificate chain") == (
        "certificate verify failed: self-signed certificate in certificate chain — pass "
        "--cacert FILE with the CA that signed the server's certificate, or --insecure")
    assert "connect by a name the certificate lists" in verify_failure(
        "Hostname mismatch, certificate is not valid for 'example.com'.")
    assert "validity dates" in verify_failure("certificate has expired")
    # Through a library's wrapper whose text is all that is left (redis-py's ConnectionError).
    wrapped = Exception("Error 1 connecting to h:6380. [SSL: CERTIFICATE_VERIFY_FAILED] "
                        "certificate verify failed: self-signed certificate (_ssl.c:1006).")
    assert describe_tls_error(wrapped) == verify_failure("self-signed certificate")
    assert describe_tls_error(ConnectionRefusedError(111, "refused")) is None


# --- the command line, end to end -------------------------------------------------------------

@dataclass
class Run:
    code: int
    out: str
    err: str


async def sse_tui(*args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sse_tui", "--no-tui", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def _one_line_error(run: Run) -> str:
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert len(lines) == 1, run.err
    assert "Traceback" not in run.err
    return lines[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_consumer_over_https_with_and_without_cacert(pki: Pki, transport: str) -> None:
    async with sse_server(pki.server, tokens=5) as srv:
        common = ["-m", "consumer", "-s", srv.url, "-c", "2", "--duration", "0",
                  "--transport", transport, "--grace", "0.5s"]
        good = await sse_tui(*common, "--cacert", str(pki.ca_file))
        assert good.code == 0, good.err
        assert "Tokens Received:      10" in good.out
        bad = await sse_tui(*common)
    assert bad.code == 1
    line = _one_line_error(bad)
    assert line.startswith(f"sse-tui: the SSE adapter at {srv.url}: certificate verify failed: ")
    assert line.endswith("pass --cacert FILE with the CA that signed the server's "
                         "certificate, or --insecure")


@pytest.fixture(scope="module")
def tls_sandbox() -> Iterator[Sandbox]:
    """The real stack with the adapter on https:// (what `--demo --tls` runs)."""
    with Sandbox(tls=True) as sb:
        yield sb


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_both_mode_against_the_https_sandbox(tls_sandbox: Sandbox, transport: str) -> None:
    assert tls_sandbox.sse_url.startswith("https://") and tls_sandbox.ca_file
    run = await sse_tui("-r", tls_sandbox.redis_address, "-s", tls_sandbox.sse_url,
                        "--cacert", tls_sandbox.ca_file, "--transport", transport,
                        "-c", "2", "-t", "5", "-d", "1", "--duration", "0")
    assert run.code == 0, run.err
    assert "Tokens Received:      10" in run.out


async def test_demo_tls_serves_https_and_trusts_its_own_certificate() -> None:
    run = await sse_tui("--demo", "--tls", "-c", "2", "-t", "5", "-d", "1", "--duration", "0")
    assert run.code == 0, run.err
    assert " -> https://127.0.0.1:" in run.out
    assert "Tokens Received:      10" in run.out


async def test_tls_without_demo_is_a_usage_error() -> None:
    run = await sse_tui("--tls")
    assert run.code == 2
    assert "--tls needs --demo" in _one_line_error(run)
    assert parse_args(["sandbox", "--tls"]).tls  # `sse-tui sandbox --tls` serves https://


# --- rediss:// ---------------------------------------------------------------------------------

class TLSProxy(LoopbackServer):
    """Terminates TLS on a free port and forwards the bytes to 127.0.0.1:`upstream_port`."""

    def __init__(self, tls: ssl.SSLContext, upstream_port: int) -> None:
        super().__init__(tls=tls)
        self.upstream_port = upstream_port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self.spawn(pipe(reader, up_writer))
        self.spawn(pipe(up_reader, writer))


@contextlib.asynccontextmanager
async def tls_proxy(tls: ssl.SSLContext, port: int) -> AsyncIterator[int]:
    async with TLSProxy(tls, port) as proxy:
        yield proxy.port


@pytest.fixture(scope="module")
def plain_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


async def test_rediss_with_and_without_cacert(pki: Pki, plain_redis: RedisServer) -> None:
    async with tls_proxy(pki.server, plain_redis.port) as port:
        common = ["-m", "producer", "-r", f"rediss://127.0.0.1:{port}", "-c", "2", "-t", "5",
                  "-d", "1", "--duration", "0"]
        good = await sse_tui(*common, "--cacert", str(pki.ca_file))
        assert good.code == 0, good.err
        assert "Tokens Published:     10" in good.out
        bad = await sse_tui(*common)
    assert bad.code == 1
    line = _one_line_error(bad)
    assert line.startswith(f"sse-tui: Redis at rediss://127.0.0.1:{port}: certificate verify "
                           "failed: "), line
    assert line.endswith("or --insecure")
    assert len(line) > 120  # said whole, not cut


async def test_rediss_insecure(pki: Pki, plain_redis: RedisServer) -> None:
    async with tls_proxy(pki.server, plain_redis.port) as port:
        run = await sse_tui("-m", "producer", "-r", f"rediss://127.0.0.1:{port}", "--insecure",
                            "-c", "1", "-t", "3", "-d", "1", "--duration", "0")
    assert run.code == 0, run.err
    assert "Tokens Published:     3" in run.out
