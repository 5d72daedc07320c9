"""Several publishing connections (--publish-connections N): one TokenPublisher each.

A conversation always publishes through the same publisher (so its tokens stay in order on
one connection), chosen by its conversation number; each publisher pipelines on its own
connection of the Redis client's pool, so N pipelines can be in flight at once. With N = 1
this is one TokenPublisher, as before.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

from sse_tui.engine.producer import PublishState, TokenPublisher


class PublisherPool:
    def __init__(self, count: int, make: Callable[[int], TokenPublisher]) -> None:
        self.publishers = tuple(make(i) for i in range(max(1, count)))

    def _of(self, state: PublishState) -> TokenPublisher:
        pubs = self.publishers
        if len(pubs) == 1:
            return pubs[0]
        # Stable per conversation: crc32 of its id (hash() of a str varies per process).
        return pubs[zlib.crc32(state.conversation_id.encode()) % len(pubs)]

    async def run(self) -> None:
        await asyncio.gather(*(p.run() for p in self.publishers))

    def add(self, state: PublishState) -> None:
        self._of(state).add(state)

    def remove(self, state: PublishState) -> None:
        self._of(state).remove(state)

    def close(self) -> None:
        for p in self.publishers:
            p.close()

    def pause(self) -> None:
        for p in self.publishers:
            p.pause()

    def resume(self) -> None:
        for p in self.publishers:
            p.resume()

    @property
    def delay_ms(self) -> float:
        return self.publishers[0].delay_ms

    @delay_ms.setter
    def delay_ms(self, delay_ms: float) -> None:
        for p in self.publishers:
            p.delay_ms = delay_ms

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.publishers)

    def waiting_s(self) -> float | None:
        """The longest any publisher's pipeline has waited for Redis (None: none waits)."""
        waits = [w for p in self.publishers if (w := p.waiting_s()) is not None]
        return max(waits) if waits else None
