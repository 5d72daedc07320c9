"""What Redis sees from the producer: --publish-batch-ms, --publish-connections, --token-bytes.

Redis itself is asked: CLIENT LIST for the connections that PUBLISH, and the run's own
publish round trips (one per pipeline) for how many PUBLISHes each write carried.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis

from sse_tui.engine.engine import LoadEngine
from sse_tui.engine.producer import token_words
from sse_tui.sandbox import Sandbox
from tests.conftest import until
from tests.test_engine_e2e import run, settings_for


async def test_batching_shares_round_trips_and_zero_sends_one_publish_per_write(
        sandbox: Sandbox) -> None:
    common = dict(conversations=20, tokens=20, delay_ms=0, duration_s=0)
    batched = await run(settings_for(sandbox, run_id="batched", **common))
    single = await run(settings_for(sandbox, run_id="single", publish_batch_ms=0, **common))
    for snap in (batched, single):
        assert snap.total.tokens_published == snap.total.tokens_received == 400
    # One round trip per pipeline: with no delay every conversation is due at once, so
    # batching shares writes; with 0 each token is its own write and its own round trip.
    assert single.total.publish_rtt.count == 400
    assert batched.total.publish_rtt.count < 400 / 4


async def test_several_connections_publish_side_by_side(sandbox: Sandbox) -> None:
    settings = settings_for(sandbox, run_id="pool", conversations=12, tokens=400,
                            delay_ms=5, duration_s=0, publish_connections=4)
    engine = LoadEngine(settings)
    task = asyncio.create_task(engine.run())
    client = aioredis.from_url(sandbox.redis_url)
    try:
        async def publishing_connections() -> int:
            clients = await client.client_list()
            return sum(1 for c in clients if c.get("cmd") == "publish")

        seen = 0

        async def poll() -> bool:
            nonlocal seen
            seen = max(seen, await publishing_connections())
            return seen >= 4

        deadline = asyncio.get_running_loop().time() + 10
        while not await poll():
            assert asyncio.get_running_loop().time() < deadline, f"saw {seen} publishers"
            await asyncio.sleep(0.05)
        engine.stop()
        snap = await asyncio.wait_for(task, 30)
    finally:
        await client.aclose()
        if not task.done():
            engine.stop()
            await asyncio.wait_for(task, 30)
    assert snap.total.tokens_missing == 0 and snap.total.tokens_duplicated == 0
    assert snap.total.tokens_out_of_order == 0  # one conversation, one connection: in order


@pytest.mark.parametrize("size", [1, 7, 300])
def test_token_bytes_sets_every_tokens_size(size: int) -> None:
    assert {len(w.encode()) for w in token_words(size)} == {size}
    assert token_words(0)[1] == " quick"  # 0: the reference's short words


async def test_tokens_of_the_requested_size_reach_redis(sandbox: Sandbox) -> None:
    client = aioredis.from_url(sandbox.redis_url)
    pubsub = client.pubsub()
    await pubsub.psubscribe("llm:tokens:loadtest-sized-*")
    sizes: set[int] = set()

    async def read() -> None:
        async for msg in pubsub.listen():
            if msg["type"] == "pmessage":
                sizes.add(len(orjson.loads(msg["data"])["token"].encode()))

    reader = asyncio.create_task(read())
    try:
        snap = await run(settings_for(sandbox, run_id="sized", conversations=2, tokens=10,
                                      delay_ms=1, duration_s=0, token_bytes=48))
        await until(lambda: sizes, what="a token on Redis")
    finally:
        reader.cancel()
        await pubsub.aclose()
        await client.aclose()
    assert snap.total.tokens_received == 20
    assert sizes == {48}
