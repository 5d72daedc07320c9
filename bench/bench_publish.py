"""CPU per published token: redis-py's pipeline (the old path) against the lean RESP path.

Against a real redis-server (started here, as bench/stack.py does), each variant publishes
`--tokens` tokens in batches of 1, 20 and 200, building every payload as the producer does
(orjson.dumps of the token's dict), and the process's CPU time (time.process_time) per token
is taken. Variants are interleaved within each repeat; the figures are medians of the
repeats. The server's CPU is not counted: it is the same work for every variant.

    .venv/bin/python bench/bench_publish.py [--tokens 50000] [--repeats 5] [--batches 1,20,200]

Variants: `pipeline` (redis-py pipeline, hiredis parser when installed), `pipeline-py`
(pipeline with redis-py's pure-Python parser, i.e. without hiredis), `lean` (resp_publish,
replies counted from the stream), `lean-parser` and `lean-parser-py` (resp_publish reading
each reply with redis-py's read_response, hiredis's parser or the Python one), and `build`
(the payloads and the RESP buffer only, nothing sent: the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from sse_tui.engine.resp_publish import RespPublisher, pack_publish, publish_head
from sse_tui.sandbox import RedisServer

CONVERSATIONS = 200
WORDS = ("the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ".")

Batch = Callable[[int, int], Awaitable[None]]  # (first token number, tokens)


def token(i: int) -> bytes:
    """The producer's payload for token number i (a conversation, a sequence, a timestamp)."""
    return orjson.dumps({"conversation_id": f"conv-{i % CONVERSATIONS}",
                         "token": WORDS[i % len(WORDS)], "sequence": i // CONVERSATIONS + 1,
                         "done": False, "timestamp": time.time_ns()})


CHANNELS = [f"llm:tokens:bench:conv-{c}" for c in range(CONVERSATIONS)]
HEADS = [publish_head(ch) for ch in CHANNELS]


def pipeline_batch(client: aioredis.Redis) -> Batch:
    async def send(first: int, n: int) -> None:
        pipe = client.pipeline(transaction=False)
        for i in range(first, first + n):
            pipe.publish(CHANNELS[i % CONVERSATIONS], token(i))
        await pipe.execute()
    return send


def lean_batch(pub: RespPublisher | None) -> Batch:
    async def send(first: int, n: int) -> None:
        parts = [pack_publish(HEADS[i % CONVERSATIONS], token(i))
                 for i in range(first, first + n)]
        data = b"".join(parts)
        if pub is not None:
            await pub.publish(data, n)
    return send


async def cpu_per_token_us(send: Batch, tokens: int, batch: int) -> float:
    await send(0, batch)  # warm: connected, caches filled
    t0 = time.process_time()
    done = 0
    while done < tokens:
        n = min(batch, tokens - done)
        await send(done, n)
        done += n
    return (time.process_time() - t0) / tokens * 1e6


async def run(url: str, tokens: int, repeats: int, batches: list[int],
              only: set[str] | None) -> dict[tuple[str, int], list[float]]:
    from redis._parsers import _AsyncRESP2Parser  # the parser redis-py uses without hiredis

    clients: list[aioredis.Redis] = []

    def client(**kw: Any) -> aioredis.Redis:
        c = aioredis.Redis.from_url(url, socket_timeout=30, health_check_interval=0, **kw)
        clients.append(c)
        return c

    pubs: list[RespPublisher] = []

    def lean(c: aioredis.Redis, read: str) -> RespPublisher:
        p = RespPublisher(c, read=read)
        pubs.append(p)
        return p

    variants: dict[str, Batch] = {
        "pipeline": pipeline_batch(client()),
        "pipeline-py": pipeline_batch(client(parser_class=_AsyncRESP2Parser)),
        "lean": lean_batch(lean(client(), "stream")),
        "lean-parser": lean_batch(lean(client(), "parser")),
        "lean-parser-py": lean_batch(lean(client(parser_class=_AsyncRESP2Parser), "parser")),
        "build": lean_batch(None),
    }
    if only:
        variants = {k: v for k, v in variants.items() if k in only}
    results: dict[tuple[str, int], list[float]] = {}
    try:
        for r in range(repeats):
            for batch in batches:
                # Batches of 1 are slow on the old path: fewer of them, the same precision.
                n = tokens if batch > 1 else max(1000, tokens // 5)
                order = list(variants.items())
                if r % 2:
                    order.reverse()  # interleaved, alternating order
                for name, send in order:
                    results.setdefault((name, batch), []).append(
                        await cpu_per_token_us(send, n, batch))
            print(f"repeat {r + 1}/{repeats} done", file=sys.stderr)
    finally:
        for p in pubs:
            await p.aclose()
        for c in clients:
            await c.aclose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=50_000, help="per variant and repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", default="1,20,200")
    ap.add_argument("--only", default="", help="comma-separated variants")
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    only = set(a.only.split(",")) if a.only else None
    with RedisServer() as server:
        results = asyncio.run(run(server.url, a.tokens, a.repeats, batches, only))
    names = list(dict.fromkeys(name for name, _ in results))
    print(f"CPU µs per token (median of {a.repeats}; min-max), this process only")
    print(f"{'variant':<16}" + "".join(f"{'batch ' + str(b):>24}" for b in batches))
    for name in names:
        row = f"{name:<16}"
        for b in batches:
            v = results.get((name, b), [])
            row += f"{statistics.median(v):>10.2f} ({min(v):5.2f}-{max(v):5.2f})" if v else " " * 24
        print(row)


if __name__ == "__main__":
    main()
