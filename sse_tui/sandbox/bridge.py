"""Reference Redis-NATS bridge: PSUBSCRIBE ``<prefix>*``, publish each message, unchanged, to
NATS subject ``chat.<conversation_id>.tokens`` (docs/protocol.md, docs/topology.md).

Run as ``python -m sse_tui.sandbox.bridge --redis URL --nats URL [--channel-prefix P]``; once
it is subscribed to Redis and connected to NATS it serves ``GET /stats`` and ``/healthz`` on
a free loopback port and prints exactly one line, ``LISTENING http://127.0.0.1:<port>``.

Faults of this hop (deterministic, each counted in ``/stats``):

- ``--drop-rate R``: a token is not forwarded with probability R, drawn from
  ``Random(f"{seed}:{id}:{sequence}")`` (so the same tokens are dropped whatever the
  arrival order). The done token is never dropped, as in the adapter: its conversation
  still ends on time, and the loss is a gap the consumer can see.
- ``--delay-ms X``: every token is held X ms before it is published to NATS; order kept.
  Latency, not a fault: not counted.

``/stats``: ``{"from_redis", "published", "dropped", "invalid_messages",
"per_conversation": {id: {"from_redis", "published", "dropped"}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
from collections import deque
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from sse_tui.sandbox.adapter import (
    follow_pattern,
    parse_request_head,
    simple_response,
    unit_rate,
)

log = logging.getLogger("sse_tui.sandbox.bridge")

_PER_CONVERSATION_STATS_CAP = 100_000


def nats_subject(conversation_id: str) -> str:
    """The NATS subject of a conversation (the real bridge's naming)."""
    return f"chat.{conversation_id}.tokens"


class BridgeCounters:
    __slots__ = ("dropped", "from_redis", "published")

    def __init__(self) -> None:
        self.from_redis = 0
        self.published = 0
        self.dropped = 0

    def as_dict(self) -> dict[str, int]:
        return {"from_redis": self.from_redis, "published": self.published,
                "dropped": self.dropped}


class Bridge:
    def __init__(self, redis_url: str, nats_url: str, channel_prefix: str, *,
                 drop_rate: float = 0.0, delay_ms: float = 0.0, seed: int = 1) -> None:
        self.redis_url = redis_url
        self.nats_url = nats_url
        self.channel_prefix = channel_prefix
        self._prefix_len = len(channel_prefix.encode())
        self.drop_rate = drop_rate
        self.delay_s = delay_ms / 1000.0
        self.seed = seed
        self.total = BridgeCounters()
        self.per_conversation: dict[str, BridgeCounters] = {}
        self.invalid_messages = 0
        self.nc: NatsClient | None = None
        # Held tokens (--delay-ms): (due loop time, subject, payload, counters), in order.
        self._held: deque[tuple[float, str, bytes, BridgeCounters]] = deque()
        self._held_ready = asyncio.Event()

    def _counters(self, conversation_id: str) -> BridgeCounters:
        c = self.per_conversation.get(conversation_id)
        if c is None:
            if len(self.per_conversation) >= _PER_CONVERSATION_STATS_CAP:
                del self.per_conversation[next(iter(self.per_conversation))]
            c = self.per_conversation[conversation_id] = BridgeCounters()
        return c

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = self.total.as_dict()
        out["invalid_messages"] = self.invalid_messages
        out["per_conversation"] = {k: c.as_dict() for k, c in self.per_conversation.items()}
        return out

    async def forward(self, channel: bytes, payload: bytes) -> None:
        """One message from Redis: drop it, hold it, or publish it to NATS now."""
        conversation_id = channel[self._prefix_len:].decode("utf-8", "replace")
        counters = self._counters(conversation_id)
        self.total.from_redis += 1
        counters.from_redis += 1
        if self.drop_rate:
            try:
                doc = orjson.loads(payload)
                sequence, done = int(doc["sequence"]), doc.get("done") is True
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                sequence, done = 0, False  # not a token: forwarded, the adapter judges it
            rng = random.Random(f"{self.seed}:{conversation_id}:{sequence}")
            if not done and rng.random() < self.drop_rate:
                self.total.dropped += 1
                counters.dropped += 1
                return
        subject = nats_subject(conversation_id)
        if self.delay_s:
            self._held.append((asyncio.get_running_loop().time() + self.delay_s, subject,
                               payload, counters))
            self._held_ready.set()
            return
        await self._publish(subject, payload, counters)

    async def _publish(self, subject: str, payload: bytes, counters: BridgeCounters) -> None:
        assert self.nc is not None
        try:
            await self.nc.publish(subject, payload)
        except NatsError as exc:  # a subject NATS refuses (a conversation id with a space)
            self.invalid_messages += 1
            log.warning("cannot publish to %r: %s", subject, exc)
            return
        self.total.published += 1
        counters.published += 1

    async def release_held(self) -> None:
        """Publish held tokens when they are due (--delay-ms), in order."""
        loop = asyncio.get_running_loop()
        while True:
            await self._held_ready.wait()
            while self._held:
                due, subject, payload, counters = self._held[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._held.popleft()
                await self._publish(subject, payload, counters)
            self._held_ready.clear()

    async def pump_redis(self, subscribed: asyncio.Event) -> None:
        """Forward from one PSUBSCRIBE; reconnect if Redis goes away."""
        await follow_pattern(self.redis_url, self.channel_prefix + "*", self.forward,
                             subscribed, log)


class _StatsConnection(asyncio.Protocol):
    """GET /stats and /healthz, one request per connection."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer and b"\n\n" not in self.buffer:
            if len(self.buffer) > 16384:
                self.transport.close()
            return
        request = parse_request_head(self.buffer.split(b"\r\n\r\n", 1)[0])
        path = request.path.split("?", 1)[0] if request is not None else ""
        if path == "/stats":
            reply = simple_response("200 OK", orjson.dumps(self.bridge.stats()),
                                    "application/json")
        elif path == "/healthz":
            reply = simple_response("200 OK", b"ok", "text/plain; charset=utf-8")
        else:
            reply = simple_response("404 Not Found", b"not found\n", "text/plain; charset=utf-8")
        self.transport.write(reply)
        self.transport.close()


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = Bridge(args.redis, args.nats, args.channel_prefix, drop_rate=args.drop_rate,
                    delay_ms=args.delay_ms, seed=args.seed)
    try:
        bridge.nc = await nats.connect(args.nats, connect_timeout=5, allow_reconnect=True,
                                       max_reconnect_attempts=-1, name="sse-tui-bridge")
    except (NatsError, OSError, TimeoutError) as exc:
        raise RuntimeError(f"cannot connect to NATS at {args.nats}: {exc}") from exc
    subscribed = asyncio.Event()
    pump = asyncio.create_task(bridge.pump_redis(subscribed), name="redis-pump")
    release = asyncio.create_task(bridge.release_held(), name="release-held")
    waiter = asyncio.create_task(subscribed.wait())
    await asyncio.wait({pump, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if pump.done():
        waiter.cancel()
        pump.result()  # raises the reason
    server = await loop.create_server(lambda: _StatsConnection(bridge), args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"LISTENING http://{args.host}:{port}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        server.close()
        for task in (pump, release):
            task.cancel()
        await asyncio.gather(pump, release, return_exceptions=True)
        with contextlib.suppress(Exception):
            await bridge.nc.close()


def _ms(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 ms, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sse_tui.sandbox.bridge",
        description="Reference Redis-NATS bridge: PSUBSCRIBE <prefix>* -> chat.<id>.tokens.")
    p.add_argument("--redis", required=True, help="redis URL, e.g. redis://127.0.0.1:6379")
    p.add_argument("--nats", required=True, help="NATS URL, e.g. nats://127.0.0.1:4222")
    p.add_argument("--channel-prefix", default="llm:tokens:")
    p.add_argument("--host", default="127.0.0.1", help="where /stats is served")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    p.add_argument("--drop-rate", type=unit_rate, default=0.0)
    p.add_argument("--delay-ms", type=_ms, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="bridge: %(levelname)s %(message)s")
    try:
        asyncio.run(run(args))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
