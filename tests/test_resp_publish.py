"""The lean publishing connection (resp_publish.py) against a real redis-server.

What goes on the wire is exact (a subscriber gets exactly the payloads, in order, whatever
the channel's name and the payload's size and bytes); the receivers are counted; the
failures are redis-py's (ConnectionError, TimeoutError, ResponseError) and the connection
comes back; a password and a db from the URL are honoured; and TokenPublisher uses it, one
connection of its own, closed when it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sse_tui.engine.producer import PublishState, TokenPublisher
from sse_tui.engine.resp_publish import (
    RespPublisher,
    pack_publish,
    parse_replies,
    publish_head,
    supports,
)
from sse_tui.sandbox import RedisServer
from sse_tui.sandbox.redis_server import find_redis_server, free_port, spawn_child, stop_child
from tests.conftest import until

pytestmark = pytest.mark.timeout(60)

CHANNELS: list[str | bytes] = [
    "llm:tokens:plain",
    "llm:tokens:ünïcödé-€-😀",
    "llm:tokens:\r\n$3\r\n*1\r\n:0",  # RESP's own markers inside the name
    "llm:tokens:nul\x00tab\tdel\x7f",
    b"llm:tokens:not-utf8-\xff\xfe\x80",
]
BINARYISH = bytes(range(256)) * 391  # every byte value, CRLFs included
PAYLOADS = [b"", b"x", BINARYISH[:100_000]]


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(server.url, socket_timeout=30, health_check_interval=0)
    yield c
    await c.aclose()


@contextlib.asynccontextmanager
async def publisher(client: aioredis.Redis, **kw: Any) -> AsyncIterator[RespPublisher]:
    pub = RespPublisher(client, **kw)
    try:
        yield pub
    finally:
        await pub.aclose()


def as_bytes(channel: str | bytes) -> bytes:
    return channel.encode() if isinstance(channel, str) else channel


async def subscribed(client: aioredis.Redis, channels: list[bytes]) -> Any:
    ps = client.pubsub()
    await ps.subscribe(*channels)
    for _ in channels:  # the subscribe confirmations, so that nothing published is missed
        msg = await ps.get_message(timeout=5)
        assert msg is not None and msg["type"] == "subscribe"
    return ps


async def received(ps: Any, n: int) -> list[tuple[bytes, bytes]]:
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        msg = await ps.get_message(timeout=1)
        if msg is not None and msg["type"] == "message":
            got.append((msg["channel"], msg["data"]))
    return got


@pytest.mark.parametrize("read", ["stream", "parser"])
async def test_the_bytes_on_the_wire_are_exact(client: aioredis.Redis, read: str) -> None:
    sent = [(as_bytes(ch), p) for _ in range(2) for ch in CHANNELS for p in PAYLOADS]
    ps = await subscribed(client, [as_bytes(ch) for ch in CHANNELS])
    try:
        async with publisher(client, read=read) as pub:
            heads = {ch: publish_head(ch) for ch, _ in sent}
            # One batch of all of them, then the same one PUBLISH per write.
            data = b"".join(pack_publish(heads[ch], p) for ch, p in sent)
            assert await pub.publish(data, len(sent)) == 0  # each heard by the subscriber
            for ch, p in sent:
                assert await pub.publish(pack_publish(heads[ch], p), 1) == 0
            got = await received(ps, 2 * len(sent))
        assert got == sent + sent  # exactly these bytes, in this order
    finally:
        await ps.aclose()


def test_publish_head_is_resp() -> None:
    assert publish_head("c:ü") == b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nc:\xc3\xbc\r\n"
    assert pack_publish(publish_head(b"ch"), b"") == (
        b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$0\r\n\r\n")


async def test_receivers_are_counted(client: aioredis.Redis) -> None:
    head = publish_head("llm:tokens:counted")
    async with publisher(client) as pub:
        assert await pub.publish(pack_publish(head, b"a") * 5, 5) == 5  # nobody listens
        ps = await subscribed(client, [b"llm:tokens:counted"])
        try:
            assert await pub.publish(pack_publish(head, b"b") * 5, 5) == 0  # one listener
            # Mixed in one batch: the other channel has nobody.
            other = pack_publish(publish_head("llm:tokens:nobody"), b"c")
            assert await pub.publish(pack_publish(head, b"d") + other * 3, 4) == 3
        finally:
            await ps.aclose()


def test_replies_are_parsed() -> None:
    replies = parse_replies(b":0\r\n:2\r\n:10\r\n-ERR wrong\r\n", 4)
    assert replies[:3] == [0, 2, 10]
    assert isinstance(replies[3], ResponseError) and str(replies[3]) == "wrong"
    with pytest.raises(RedisConnectionError):
        parse_replies(b":0\r\n:1\r\n", 3)


@pytest.mark.parametrize("read", ["stream", "parser"])
async def test_an_error_reply_is_a_response_error(client: aioredis.Redis, read: str) -> None:
    good = pack_publish(publish_head("llm:tokens:err"), b"ok")
    wrong_arity = b"*2\r\n$7\r\nPUBLISH\r\n$3\r\nabc\r\n"
    async with publisher(client, read=read) as pub:
        with pytest.raises(ResponseError, match="wrong number of arguments"):
            await pub.publish(good + wrong_arity + good, 3)
        # Every reply was read: the next batch's replies are its own.
        assert await pub.publish(good * 2, 2) == 2


async def test_a_refused_publish_keeps_redis_py_error_class(server: RedisServer) -> None:
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    admin.acl_setuser("nopub", enabled=True, passwords=["+nopub-pw"], keys=["*"],
                      channels=["*"], commands=["+@all", "-publish"])
    admin.close()
    c = aioredis.Redis.from_url(f"redis://nopub:nopub-pw@127.0.0.1:{server.port}")
    try:
        async with publisher(c) as pub:
            with pytest.raises(NoPermissionError):  # NOPERM, as the pipeline raised it
                await pub.publish(pack_publish(publish_head("x"), b"y"), 1)
    finally:
        await c.aclose()


async def test_password_and_db_from_the_url() -> None:
    with RedisServer() as locked:
        admin = redis.Redis(host="127.0.0.1", port=locked.port)
        admin.config_set("requirepass", "pw-Lean-9")
        admin.close()
        url = f"redis://:pw-Lean-9@127.0.0.1:{locked.port}/3"
        c = aioredis.Redis.from_url(url)
        try:
            async with publisher(c) as pub:
                ps = await subscribed(c, [b"llm:tokens:locked"])
                try:
                    data = pack_publish(publish_head("llm:tokens:locked"), b"secret-ok")
                    assert await pub.publish(data, 1) == 0
                    assert await received(ps, 1) == [(b"llm:tokens:locked", b"secret-ok")]
                finally:
                    await ps.aclose()
                ours = [cl for cl in await c.client_list() if cl["cmd"] == "publish"]
                assert len(ours) == 1 and ours[0]["db"] == "3"  # logged in, SELECTed
            # Without the password the handshake fails: redis-py's error, no hang.
            bad = aioredis.Redis.from_url(f"redis://127.0.0.1:{locked.port}")
            try:
                async with publisher(bad) as pub:
                    with pytest.raises((RedisConnectionError, ResponseError)):
                        await pub.publish(data, 1)
            finally:
                await bad.aclose()
        finally:
            await c.aclose()


async def test_no_reply_in_time_is_a_timeout_and_then_it_goes_on(
        client: aioredis.Redis) -> None:
    data = pack_publish(publish_head("llm:tokens:slow"), b"t")
    async with publisher(client, reply_timeout_s=0.3) as pub:
        assert await pub.publish(data, 1) == 1
        await client.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # PUBLISH waits
        t0 = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await pub.publish(data, 1)
        assert time.monotonic() - t0 < 1.2
        await client.execute_command("CLIENT", "UNPAUSE")
        assert await pub.publish(data * 3, 3) == 3  # a new connection, in step


async def test_a_cancelled_batch_does_not_leave_its_replies_behind(
        client: aioredis.Redis) -> None:
    data = pack_publish(publish_head("llm:tokens:cancel"), b"t")
    async with publisher(client) as pub:
        await client.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
        task = asyncio.ensure_future(pub.publish(data * 5, 5))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.execute_command("CLIENT", "UNPAUSE")
        # The 5 late replies must not be taken for this batch's 2.
        ps = await subscribed(client, [b"llm:tokens:cancel"])
        try:
            assert await pub.publish(data * 2, 2) == 0
        finally:
            await ps.aclose()


def start_redis(port: int, tmpdir: str) -> subprocess.Popen[bytes]:
    proc = spawn_child([find_redis_server(), "--port", str(port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--dir", tmpdir],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5).ping():
                return proc
        time.sleep(0.05)
    stop_child(proc)
    raise RuntimeError("redis-server did not start")


async def test_a_killed_redis_is_a_connection_error_then_it_reconnects() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmpdir:
        proc = start_redis(port, tmpdir)
        c = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}", socket_connect_timeout=2)
        data = pack_publish(publish_head("llm:tokens:killed"), b"t")
        try:
            async with publisher(c) as pub:
                assert await pub.publish(data * 10, 10) == 10
                proc.kill()  # no goodbye: the socket just closes
                proc.wait(5)
                with pytest.raises(RedisConnectionError):
                    await pub.publish(data * 10, 10)
                with pytest.raises(RedisConnectionError):  # still down: refused
                    await pub.publish(data, 1)
                proc = await asyncio.to_thread(start_redis, port, tmpdir)
                assert await pub.publish(data * 10, 10) == 10  # the next batch reconnects
        finally:
            stop_child(proc)
            await c.aclose()


async def test_token_publisher_uses_its_own_connection_and_closes_it(
        client: aioredis.Redis) -> None:
    assert supports(client)
    published: list[tuple[int, int]] = []
    errors: list[str] = []
    pubs = [TokenPublisher(client, delay_ms=1, on_published=lambda n, u: published.append((n, u)),
                           on_error=lambda kind, n: errors.append(kind),
                           on_schedule_lag=lambda lag: None) for _ in range(3)]
    states = [PublishState(f"lean-{i}", f"llm:tokens:lean-{i}-ü", 40) for i in range(6)]
    ps = await subscribed(client, [s.channel.encode() for s in states[:3]])
    tasks = [asyncio.ensure_future(p.run()) for p in pubs]
    try:
        for i, s in enumerate(states):
            pubs[i % 3].add(s)

        def publishing() -> int:
            return sum(1 for cl in redis.Redis(host="127.0.0.1", port=port).client_list()
                       if cl["cmd"] == "publish")

        port = client.connection_pool.connection_kwargs["port"]
        await until(lambda: publishing() == 3, what="3 publishing connections")
        await until(lambda: all(s.finished for s in states), what="every token published")
        for p in pubs:
            p.close()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        # Each publisher's connection is closed with it.
        await until(lambda: publishing() == 0, what="the connections closed")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    got = await received(ps, 3 * 40)
    await ps.aclose()
    assert not errors
    assert sum(n for n, _ in published) == 6 * 40
    assert sum(u for _, u in published) == 3 * 40  # the other 3 conversations: unheard
    for s in states[:3]:
        seqs = [int(d.split(b'"sequence":')[1].split(b",")[0])
                for ch, d in got if ch == s.channel.encode()]
        assert seqs == list(range(1, 41))
