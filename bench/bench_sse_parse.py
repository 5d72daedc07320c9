"""Micro-benchmark of SSEParser.feed on adapter-shaped token events.

Run: .venv/bin/python bench/bench_sse_parse.py [--events N] [--transports]
Prints µs per event for the three read patterns the consumer sees in practice.
With --transports it also measures the consumer's whole per-token CPU cost
(socket read + HTTP framing + parse + async iteration) for each open_stream
transport, against a loopback server in a child process that writes every event
in its own read.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

import orjson

from sse_tui.engine.sse import SSEParser
from sse_tui.engine.transport import TRANSPORTS, aclose_transports, open_stream


def token_event(seq: int) -> bytes:
    """One event exactly as the SSE adapter writes it (see docs/protocol.md)."""
    payload = orjson.dumps(
        {
            "conversation_id": "loadtest-1717000000000000000-42",
            "token": f"tok{seq} ",
            "sequence": seq,
            "done": False,
            "timestamp": 1717000000000000000 + seq,
        }
    )
    return b"event: token\nid: %d\ndata: %s\n\n" % (seq, payload)


def one_per_feed(events: list[bytes]) -> list[bytes]:
    return events


def fifty_per_feed(events: list[bytes]) -> list[bytes]:
    return [b"".join(events[i : i + 50]) for i in range(0, len(events), 50)]


def split_in_three(events: list[bytes]) -> list[bytes]:
    chunks: list[bytes] = []
    for ev in events:
        a, b = len(ev) // 3, 2 * len(ev) // 3
        chunks += [ev[:a], ev[a:b], ev[b:]]
    return chunks


def measure(chunks: list[bytes], n_events: int, repeats: int) -> float:
    """Best-of-`repeats` µs per event (best-of filters scheduler noise)."""
    best = float("inf")
    for _ in range(repeats):
        parser = SSEParser()
        feed = parser.feed
        got = 0
        start = time.perf_counter_ns()
        for chunk in chunks:
            got += len(feed(chunk, 1))
        elapsed = time.perf_counter_ns() - start
        assert got == n_events, (got, n_events)
        best = min(best, elapsed / n_events / 1000)
    return best


# The child server: chunked like the adapter, one write and a short sleep per event
# so that the client gets one event per socket read (the worst case per token).
_SERVER = r"""
import asyncio, sys
events = int(sys.argv[1])
def chunk(d): return b"%x\r\n%s\r\n" % (len(d), d)
async def handle(r, w):
    await r.readuntil(b"\r\n\r\n")
    w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b": connected to c\n\n"))
    for i in range(1, events + 1):
        w.write(chunk(b'event: token\nid: %d\ndata: {"token":"t","sequence":%d}\n\n' % (i, i)))
        await w.drain()
        await asyncio.sleep(0.0005)
    w.write(b"0\r\n\r\n")
    await w.drain()
    w.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


async def consume_all(url: str, transport: str, streams: int) -> int:
    async def one() -> int:
        stream = await open_stream(url, transport=transport)
        count = 0
        async for _ in stream:
            count += 1
        await stream.aclose()
        return count

    try:
        return sum(await asyncio.gather(*(one() for _ in range(streams))))
    finally:
        await aclose_transports()


def measure_transports(events_per_stream: int, streams: int) -> None:
    print(f"open_stream, {streams} streams x {events_per_stream} events, one event per read")
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(events_per_stream)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/stream/c"
        for transport in TRANSPORTS:
            cpu = time.process_time()
            got = asyncio.run(consume_all(url, transport, streams))
            cpu = time.process_time() - cpu
            print(f"  {transport:<24} {cpu / got * 1e6:6.1f} µs CPU/event (client side)")
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--transports", action="store_true", help="also measure open_stream")
    args = ap.parse_args()
    events = [token_event(i) for i in range(1, args.events + 1)]
    patterns: list[tuple[str, Callable[[list[bytes]], list[bytes]]]] = [
        ("one event per feed", one_per_feed),
        ("50 events per feed", fifty_per_feed),
        ("event split in 3 feeds", split_in_three),
    ]
    size = len(events[0])
    print(f"SSEParser.feed, {args.events} events of ~{size} bytes, best of {args.repeats}")
    for name, shape in patterns:
        us = measure(shape(events), args.events, args.repeats)
        print(f"  {name:<24} {us:6.2f} µs/event")
    if args.transports:
        measure_transports(events_per_stream=2000, streams=10)


if __name__ == "__main__":
    main()
