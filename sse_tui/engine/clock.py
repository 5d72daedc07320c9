"""Clock skew between a producer and a consumer on different hosts, estimated through Redis.

Latency is the consumer's receipt time minus the producer's publish timestamp, so it is only
as right as the two clocks agree. Every process that talks to Redis samples Redis `TIME`
NTP-style: several round trips, keeping the one with the smallest round trip (the least
queueing), offset = redis_time - (t_send + t_recv) / 2 with an error bound of RTT / 2.
A producer stores its offset under `sse-tui:clock:<run_id>` (not under the token channel
prefix: nothing subscribes to it) with a TTL; a consumer with `--redis` reads it and moves
publish timestamps onto its own clock by (producer_offset - consumer_offset).

In `both` mode producer and consumer share one clock: the correction is zero by
construction, and none is applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sse_tui.snapshot import ClockEstimate, PhaseStats

# Round trips per estimate: the smallest of 8 is near the network's floor even on a busy link.
SAMPLES = 8
KEY_PREFIX = "sse-tui:clock:"
# Long enough for a consumer started well after its producer; short enough not to litter.
KEY_TTL_S = 24 * 3600

ClockNs = Callable[[], int]


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One process's clock against Redis': redis_time - local_time, within ± error_ns."""

    offset_ns: int
    error_ns: int


def sample(t_send_ns: int, redis_ns: int, t_recv_ns: int) -> ClockSample:
    """One NTP-style round trip: Redis read its clock somewhere between send and receipt."""
    rtt = max(0, t_recv_ns - t_send_ns)
    return ClockSample(offset_ns=redis_ns - (t_send_ns + t_recv_ns) // 2, error_ns=rtt // 2)


def best(samples: Sequence[ClockSample]) -> ClockSample:
    """The sample with the smallest round trip: its midpoint is the tightest bound."""
    if not samples:
        raise ValueError("no clock samples")
    return min(samples, key=lambda s: s.error_ns)


def redis_time_ns(reply: Any) -> int:
    """Redis `TIME` replies (seconds, microseconds)."""
    seconds, micros = reply
    return int(seconds) * 1_000_000_000 + int(micros) * 1000


async def measure(client: Any, clock_ns: ClockNs = time.time_ns, n: int = SAMPLES) -> ClockSample:
    """This process's offset against Redis (a redis.asyncio client), best of `n` round trips."""
    out = []
    for _ in range(n):
        t_send = clock_ns()
        reply = await client.time()
        t_recv = clock_ns()
        out.append(sample(t_send, redis_time_ns(reply), t_recv))
    return best(out)


def key(run_id: str) -> str:
    return f"{KEY_PREFIX}{run_id}"


async def store(client: Any, run_id: str, s: ClockSample) -> None:
    """The producer's offset, for consumers of the same run on other hosts."""
    await client.set(key(run_id), orjson.dumps({"offset_ns": s.offset_ns, "error_ns": s.error_ns}),
                     ex=KEY_TTL_S)


async def load(client: Any, run_id: str) -> ClockSample | None:
    """The producer's offset if it has stored one (None: not yet, or unreadable)."""
    raw = await client.get(key(run_id))
    if raw is None:
        return None
    try:
        d = orjson.loads(raw)
        return ClockSample(offset_ns=int(d["offset_ns"]), error_ns=int(d["error_ns"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def shift_ns(producer: ClockSample, consumer: ClockSample) -> int:
    """What to add to a producer's publish timestamp to put it on the consumer's clock."""
    return producer.offset_ns - consumer.offset_ns


def estimate(producer: ClockSample, consumer: ClockSample) -> ClockEstimate:
    return ClockEstimate(offset_ms=-shift_ns(producer, consumer) / 1e6,
                         error_ms=(producer.error_ns + consumer.error_ns) / 1e6, corrected=True)


def negative_warning(total: PhaseStats) -> str | None:
    """The warning for latencies below zero (receipt before the publish timestamp)."""
    count = total.negative_latencies
    if count <= 0:
        return None
    worst_us = total.negative_latency.max_us
    worst = f"{worst_us / 1e6:.1f} s" if worst_us >= 100_000 else f"{worst_us / 1e3:.2f} ms"
    return (f"{count} latencies were negative (down to −{worst}): the "
            "producer's clock is ahead of this one; sync clocks (NTP/PTP) or use --redis "
            "for an offset estimate")
