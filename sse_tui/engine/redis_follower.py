"""Consumer mode with --redis: watch the token channels and follow conversations we did not
start, and count what is published to the ones we read.

Redis going away is counted and retried, never fatal: the streams are the main job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Protocol

import orjson
from redis.exceptions import RedisError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from sse_tui.engine.consumer import Conversation
    from sse_tui.engine.stats import PhaseRecorder
    from sse_tui.settings import Settings

SEEN_KEPT = 10_000  # conversation ids remembered, so a finished one is not followed again
RETRY_S = 1.0


class FollowerHooks(Protocol):
    """What the follower needs from the engine."""

    @property
    def settings(self) -> Settings: ...

    @property
    def phase(self) -> PhaseRecorder: ...

    def live_conversation(self, conversation_id: str) -> Conversation | None: ...

    def may_follow(self) -> bool:
        """Is there room for one more followed conversation (and is the run still on)?"""
        ...

    def follow(self, conversation_id: str) -> None: ...


class RedisFollower:
    def __init__(self, client: aioredis.Redis, hooks: FollowerHooks) -> None:
        self._client = client
        self._hooks = hooks
        self._seen: deque[str] = deque(maxlen=SEEN_KEPT)
        self._seen_set: set[str] = set()

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except (RedisError, OSError) as e:
                self._hooks.phase.error(f"redis follow: {type(e).__name__}")
                await asyncio.sleep(RETRY_S)

    async def _listen(self) -> None:
        hooks = self._hooks
        prefix = hooks.settings.channel_prefix
        own = hooks.settings.conversation_id(0)[:-1]  # our own ids: loadtest-<run id>-
        pubsub = self._client.pubsub()
        await pubsub.psubscribe(prefix + "*")
        try:
            async for msg in pubsub.listen():
                if msg.get("type") != "pmessage":
                    continue
                channel = msg["channel"]
                cid = (channel.decode() if isinstance(channel, bytes) else channel)[len(prefix):]
                conv = hooks.live_conversation(cid)
                if conv is not None:
                    hooks.phase.tokens_published += 1
                    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                        seq = orjson.loads(msg["data"])["sequence"]
                        if isinstance(seq, int):
                            conv.seen_published(seq)
                    continue
                if cid in self._seen_set or cid.startswith(own) or not hooks.may_follow():
                    continue
                self._remember(cid)
                hooks.follow(cid)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _remember(self, cid: str) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(cid)
        self._seen_set.add(cid)
