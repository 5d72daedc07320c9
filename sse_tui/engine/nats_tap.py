"""The per-hop tap (`--nats URL`): where on the path each token spent its time, and was lost.

The tap subscribes to NATS subject `chat.<id>.tokens` of each conversation of this run when
the conversation starts (before its stream is even asked for, so that its interest is in
place before the first token is published), and unsubscribes once the conversation has
been accounted: the cost follows the run's conversations, never all production traffic.

Each token it sees is timestamped on arrival (`time.time_ns()`, in the message callback):

    redis_to_nats = NATS arrival - publish timestamp     (the bridge hop)
    nats_to_sse   = SSE receipt - NATS arrival           (NATS leaf + adapter)

and each token counted missing at the end of its conversation is blamed on a hop:
`lost_before_nats` (the tap never saw it: lost in Redis or the bridge) or `lost_after_nats`
(the tap saw it, the user did not: lost in NATS' fan-out, a leaf or the adapter). They sum
to the missing count. A token the user got but the tap never saw is `unseen_on_nats`: the
tap's own blind spot, shown rather than guessed about.

The arrival time is taken when the tap's callback runs, so it includes the tap's own
dispatch delay (small next to the hops; the tap's time in its callbacks is `tap_busy_us`).
When an SSE receipt is processed before the tap's callback for the same token (the tap was
slower than the whole rest of the path), nats_to_sse is recorded as 0.

Nothing here runs unless --nats is given: the consumer's per-token path then pays one
attribute test (`Conversation.hop is None`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from sse_tui.engine.stats import PhaseRecorder

CONNECT_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0
PORT_FORWARD_HINT = "kubectl port-forward -n nats-system svc/nats 4222:4222"


class TapError(Exception):
    """The tap cannot start; the message says what to do."""


class TapHooks(Protocol):
    """What the tap needs from the engine: the phase to record into, the clock shift."""

    @property
    def phase(self) -> PhaseRecorder: ...

    @property
    def ts_shift_ns(self) -> int: ...


def nats_subject(conversation_id: str) -> str:
    return f"chat.{conversation_id}.tokens"


class ConversationHop:
    """One conversation as the tap sees it: when each sequence passed NATS."""

    __slots__ = ("arrived", "conversation_id", "early", "lost_after", "lost_before", "sub",
                 "subscribing")

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        # Its own missing tokens by hop, for its row in the consumers table.
        self.lost_before = 0
        self.lost_after = 0
        self.arrived: dict[int, int] = {}  # sequence -> NATS arrival (ns), first arrival
        # sequence -> SSE receipt (ns) of tokens the user got before the tap saw them
        self.early: dict[int, int] = {}
        self.sub: Any = None  # nats.aio.subscription.Subscription once subscribed
        self.subscribing: asyncio.Task[None] | None = None

    def on_sse(self, seq: int, received_ns: int, phase: PhaseRecorder) -> None:
        """The user received `seq` (its first receipt): the NATS -> SSE hop."""
        arrived = self.arrived.get(seq)
        if arrived is not None:
            phase.nats_to_sse.record((received_ns - arrived) // 1000)
        elif seq not in self.early:
            self.early[seq] = received_ns

    def classify(self, ranges: list[tuple[int, int]], phase: PhaseRecorder) -> None:
        """Blame each missing sequence on a hop: seen on NATS or not."""
        arrived = self.arrived
        for lo, hi in ranges:
            seen = sum(1 for seq in range(lo, hi + 1) if seq in arrived)
            phase.lost_after_nats += seen
            phase.lost_before_nats += hi - lo + 1 - seen
            self.lost_after += seen
            self.lost_before += hi - lo + 1 - seen

    def describe(self) -> str:
        """For the consumers table: where its lost tokens were lost, else how many tokens
        the tap saw pass NATS."""
        if self.lost_before or self.lost_after:
            parts = [f"{n} {where}" for n, where in ((self.lost_before, "bridge"),
                                                    (self.lost_after, "adapter")) if n]
            return ", ".join(parts)
        return f"{len(self.arrived)} seen"


class NatsTap:
    """One NATS connection, one subscription per live conversation of this run."""

    def __init__(self, url: str, hooks: TapHooks) -> None:
        self.url = url
        self._hooks = hooks
        self._nc: Any = None  # nats.aio.client.Client
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        import nats  # only a run with --nats pays for the import
        from nats.errors import Error as NatsError

        try:
            self._nc = await asyncio.wait_for(
                nats.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S,
                             allow_reconnect=False, name="sse-tui-tap"),
                CONNECT_TIMEOUT_S + 1)
        except (NatsError, OSError, TimeoutError) as e:
            why = str(e) or type(e).__name__
            raise TapError(f"cannot reach NATS at {self.url} for --nats ({why[:120]}); for a "
                           f"cluster: {PORT_FORWARD_HINT}") from None

    def watch(self, conversation_id: str) -> ConversationHop:
        """Subscribe to a conversation's subject (at once, in the background)."""
        hop = ConversationHop(conversation_id)
        if self._nc is None:
            return hop
        hop.subscribing = self._spawn(self._subscribe(hop))
        self._hooks.phase.tap_subscriptions += 1
        return hop

    async def _subscribe(self, hop: ConversationHop) -> None:
        async def on_message(msg: Any) -> None:
            self._on_message(hop, msg.data)

        with contextlib.suppress(Exception):  # a tap that stops working leaves the run be
            hop.sub = await self._nc.subscribe(nats_subject(hop.conversation_id), cb=on_message)

    def _on_message(self, hop: ConversationHop, data: bytes) -> None:
        arrived_ns = time.time_ns()
        t0 = time.perf_counter_ns()
        phase = self._hooks.phase
        phase.tap_messages += 1
        try:
            d = orjson.loads(data)
            seq, ts = d["sequence"], d["timestamp"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            seq = ts = None
        if type(seq) is int and type(ts) is int and seq not in hop.arrived:
            phase.redis_to_nats.record((arrived_ns - ts - self._hooks.ts_shift_ns) // 1000)
            hop.arrived[seq] = arrived_ns
            early = hop.early.pop(seq, None)
            if early is not None:  # the user got it first: see the module docstring
                phase.nats_to_sse.record(max(0, early - arrived_ns) // 1000)
        phase.tap_busy_us += (time.perf_counter_ns() - t0) // 1000

    def release(self, hop: ConversationHop) -> None:
        """The conversation is accounted: unsubscribe; what the user got and the tap never
        saw is the tap's blind spot."""
        self._hooks.phase.unseen_on_nats += len(hop.early)
        hop.early.clear()
        if hop.subscribing is not None:
            self._spawn(self._unsubscribe(hop, hop.subscribing))
            hop.subscribing = None

    async def _unsubscribe(self, hop: ConversationHop, subscribing: asyncio.Task[None]) -> None:
        with contextlib.suppress(Exception):
            await subscribing
            if hop.sub is not None:
                await hop.sub.unsubscribe()
                hop.sub = None

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_TIMEOUT_S)
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT_S)
