"""A lean publishing connection: a batch of PUBLISHes as one pre-packed RESP buffer.

redis-py's pipeline spends most of a token's publishing cost in its own machinery: packing
and encoding every argument, one parse and a retry wrapper per reply. The producer's commands
are all the same `PUBLISH <channel> <payload>`, so it packs them itself (the channel's part
once per conversation, see `publish_head`) and writes the batch as one buffer; the replies
are all one-line integers (`:<receivers>`), counted in one pass over what was read.

The connection is still redis-py's: made from the client's pool (its class and arguments:
URL user/password/db, the password options, rediss:// and its certificates), so its login,
SELECT and TLS handshake are redis-py's own, as for every other connection of the run. It is
this publisher's own (not in the pool), so that N publishers are N connections (CLIENT LIST
shows them) and nothing else can interleave commands on it.

Failures keep redis-py's types, which the engine counts and retries: a lost connection is a
`ConnectionError`, no reply within REPLY_TIMEOUT_S a `TimeoutError`, an error reply its
`ResponseError` (redis-py's subclass for its code). After any of them the connection is
closed, and the next batch opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # redis-py's mapping of an error reply's code to its exception class (private module)
    from redis._parsers.base import BaseParser

    def _error_of(text: str) -> ResponseError:
        err = BaseParser.parse_error(text)
        return err if isinstance(err, ResponseError) else ResponseError(text)
except ImportError:  # pragma: no cover - a redis-py that moved it: the plain ResponseError
    def _error_of(text: str) -> ResponseError:
        return ResponseError(text)

# The client's socket_timeout (redis_client()): a batch whose replies have not all come in
# this long fails with redis-py's TimeoutError, as the pipeline's read did.
REPLY_TIMEOUT_S = 30.0
READ_SIZE = 65536
_PUBLISH = b"*3\r\n$7\r\nPUBLISH\r\n"


def publish_head(channel: str | bytes) -> bytes:
    """`PUBLISH <channel>` packed: what every token of a conversation starts with."""
    ch = channel.encode() if isinstance(channel, str) else channel
    return b"%s$%d\r\n%s\r\n" % (_PUBLISH, len(ch), ch)


def pack_publish(head: bytes, payload: bytes) -> bytes:
    """One whole PUBLISH: the channel's head (publish_head) and the payload as a bulk string."""
    return b"%s$%d\r\n%s\r\n" % (head, len(payload), payload)


def parse_replies(data: bytes, count: int) -> list[int | ResponseError]:
    """The `count` one-line replies in `data`: receivers, or the error a reply said."""
    lines = data.split(b"\r\n")
    if len(lines) != count + 1 or lines[-1]:
        raise RedisConnectionError(f"protocol error: {count} replies expected, got {data[:80]!r}")
    out: list[int | ResponseError] = []
    for line in lines[:count]:
        kind, rest = line[:1], line[1:]
        if kind == b":":
            out.append(int(rest))
        elif kind == b"-":
            out.append(_error_of(rest.decode("utf-8", "replace")))
        else:
            raise RedisConnectionError(f"protocol error: unexpected reply {line[:80]!r}")
    return out


def _unheard_or_raise(data: bytes, count: int) -> int:
    """How many of the replies in `data` are 0 (nobody subscribed); the first error reply
    raised once all of them are read, so that the connection stays in step."""
    # The usual case in two C-speed passes: every line an integer (`:` follows each CRLF).
    # Integers have no leading zeros, so `:0\r\n` occurs exactly once per reply of 0.
    if (data[:1] == b":" and data.count(b"\r\n:") == count - 1
            and data.count(b"\n") == count and data.endswith(b"\r\n")):
        return data.count(b":0\r\n")
    unheard = 0
    for r in parse_replies(data, count):
        if isinstance(r, ResponseError):
            raise r
        unheard += r == 0
    return unheard


def supports(client: Any) -> bool:
    """Whether the client's pool can make a connection of our own (a plain ConnectionPool,
    as redis_client() builds); if not, the caller keeps redis-py's pipeline."""
    pool = getattr(client, "connection_pool", None)
    return (isinstance(pool, ConnectionPool)
            and isinstance(getattr(pool, "connection_kwargs", None), dict)
            and isinstance(getattr(pool, "connection_class", None), type)
            and issubclass(pool.connection_class, AbstractConnection))


class RespPublisher:
    """One connection of our own to the client's Redis, publishing pre-packed batches.

    `read="stream"` (the default) reads the replies straight from the connection's
    asyncio.StreamReader (a private attribute of redis-py's Connection, checked each batch)
    and counts them in one pass, on a RESP2 connection; where that attribute is not there
    it reads them with the public read_response(), one call per reply, as `read="parser"`
    (on the client's own protocol) always does."""

    def __init__(self, client: aioredis.Redis, *, reply_timeout_s: float = REPLY_TIMEOUT_S,
                 read: str = "stream") -> None:
        if not supports(client):
            raise TypeError("the client's pool cannot make a publishing connection")
        pool: ConnectionPool = client.connection_pool
        # No socket_timeout on the connection itself: with one, every write is an
        # asyncio.wait_for (a task per batch) and every reply read its own timer. One
        # deadline over the whole batch (connect, write, every reply) stands for them.
        kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._stream_read = read == "stream"
        if self._stream_read:
            # RESP2 (AUTH and SELECT rather than HELLO 3, as redis-py < 8 did): a connection
            # that subscribes to nothing then gets nothing but its replies, where RESP3 may
            # interleave push messages (redis-py 8's default) only redis-py's parser reads.
            kwargs["protocol"] = 2
            # redis-py 8 turns maintenance notifications (a RESP3 push feature) on by default
            # and refuses them on a RESP2 connection without hiredis. A connection outside the
            # pool has no use for the pool's handler either: it reconnects on any failure.
            if "maint_notifications_config" in kwargs:
                kwargs["maint_notifications_config"] = None
            kwargs.pop("maint_notifications_pool_handler", None)
        self._conn: AbstractConnection = pool.connection_class(**kwargs)
        self._timeout_s = reply_timeout_s
        # A batch was abandoned half-way (cancelled): its replies may still come, so the
        # connection is out of step and is closed before the next batch.
        self._dirty = False

    @property
    def connection(self) -> AbstractConnection:
        return self._conn

    async def publish(self, data: bytes | list[bytes], count: int) -> int:
        """Send `count` packed PUBLISHes (one buffer, or parts written together) and wait for
        every reply. Returns how many went to no subscriber. Raises redis-py's
        ConnectionError, TimeoutError or ResponseError (after reading every reply)."""
        conn = self._conn
        if self._dirty:
            self._dirty = False
            await self._drop()
        try:
            async with asyncio.timeout(self._timeout_s):
                # Connects (login, SELECT, TLS: redis-py's handshake) if it is not.
                await conn.send_packed_command(data, check_health=False)
                reader = getattr(conn, "_reader", None)
                if self._stream_read and isinstance(reader, asyncio.StreamReader):
                    return _unheard_or_raise(await _read_lines(reader, count), count)
                return await self._read_parsed(count)
        except TimeoutError:  # the deadline (asyncio's, an OSError)
            await self._drop()
            raise RedisTimeoutError(f"no reply from Redis within {self._timeout_s:g} s") from None
        except OSError as e:  # a read on a socket that went away
            await self._drop()
            raise RedisConnectionError(f"Error while reading from Redis: {e}") from e
        except ResponseError:  # every reply was read: the connection is in step
            raise
        except RedisError:  # redis-py's read or write failed; it has closed the connection
            await self._drop()
            raise
        except BaseException:  # cancelled half-way: replies may still be on their way
            self._dirty = True
            raise

    async def _read_parsed(self, count: int) -> int:
        """The replies through redis-py's parser (public API; hiredis's when installed)."""
        conn = self._conn
        unheard = 0
        error: ResponseError | None = None
        for _ in range(count):
            try:
                n = await conn.read_response()
            except ResponseError as e:  # keep reading: the rest of the replies are due
                error = error or e
                continue
            unheard += n == 0
        if error is not None:
            raise error
        return unheard

    async def _drop(self) -> None:
        """Close the connection; the next batch opens a new one."""
        with contextlib.suppress(RedisError, OSError):
            await self._conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        """Close the connection (waiting for the close, as the client's aclose() does)."""
        with contextlib.suppress(RedisError, OSError):
            await self._conn.disconnect()


async def _read_lines(reader: asyncio.StreamReader, count: int) -> bytes:
    """Read until `count` lines (the one-line replies) are in; every reply ends in CRLF."""
    chunk = await reader.read(READ_SIZE)
    if not chunk:
        raise RedisConnectionError("Connection closed by server.")
    lines = chunk.count(b"\n")
    if lines >= count:
        return chunk
    chunks = [chunk]
    while lines < count:
        chunk = await reader.read(READ_SIZE)
        if not chunk:
            raise RedisConnectionError("Connection closed by server.")
        chunks.append(chunk)
        lines += chunk.count(b"\n")
    return b"".join(chunks)
