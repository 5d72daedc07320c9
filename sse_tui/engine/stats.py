"""Mutable recorders the engine writes on the hot path, and their frozen snapshots.

Only the current phase is recorded into; the run total is the merge of all phases, made
when a snapshot is taken, so each token costs one histogram record per metric.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from sse_tui import hdr as hdr_codec
from sse_tui.hdr import HIGHEST_US, new_hdr
from sse_tui.snapshot import Counters, HistogramSnapshot, PhaseStats


def _bucket_layout_matches(hdr: HdrHistogram) -> bool:
    """Does the library lay its buckets out as `LatencyHistogram.record` computes them?"""
    return (hdr.unit_magnitude == 0 and hdr.sub_bucket_half_count_magnitude == _HALF_MAG
            and hdr.sub_bucket_mask == _SUB_MASK and hdr.counts_len > _index_of(HIGHEST_US))


# new_hdr()'s bucket layout (1 µs unit, 2048 sub-buckets), so that a record is two integer
# operations and one array increment instead of hdrhistogram's five method calls per value
# (0.87 -> 0.2 µs, four records per token). Checked against the library once, at import.
_HALF_MAG = 10  # log2 of half the sub-bucket count
_SUB_MASK = (1 << (_HALF_MAG + 1)) - 1
_SHIFT = _HALF_MAG + 1


def _index_of(value: int) -> int:
    """The counts-array index hdrhistogram's `_counts_index_for(value)` gives."""
    bucket = (value | _SUB_MASK).bit_length() - _SHIFT
    return ((bucket + 1) << _HALF_MAG) + (value >> bucket) - (1 << _HALF_MAG)


_FAST_RECORD = _bucket_layout_matches(new_hdr())


class LatencyHistogram:
    """An HDR histogram plus exact count, sum, min and max (HdrHistogram's own mean walks
    every bucket in Python, ~30 ms; ours is O(1)). Mergeable within and across processes.

    On the hot path only the bucket counts are written; the library's own total, min and max
    are brought up to date (`_sync`) before the histogram is read, merged or handed over."""

    __slots__ = ("_counts", "_hdr", "count", "max_us", "min_us", "sum_us")

    def __init__(self) -> None:
        self._hdr: HdrHistogram | None = None  # allocated on first record: ~190 KB each
        self._counts: Any = None  # the library's bucket array, once allocated
        self.count = 0
        self.sum_us = 0
        self.min_us = math.inf
        self.max_us = -math.inf

    def _allocate(self) -> Any:
        hdr = self._hdr = new_hdr()
        self._counts = hdr.counts
        return self._counts

    def record(self, value_us: int) -> None:
        if value_us < 0:
            value_us = 0
        elif value_us > HIGHEST_US:
            value_us = HIGHEST_US
        counts = self._counts
        if counts is None:
            counts = self._allocate()
        if _FAST_RECORD:
            bucket = (value_us | _SUB_MASK).bit_length() - _SHIFT
            counts[((bucket + 1) << _HALF_MAG) + (value_us >> bucket) - (1 << _HALF_MAG)] += 1
        else:  # pragma: no cover (a library whose layout differs): its own, slower, path
            assert self._hdr is not None
            self._hdr.record_value(value_us)
        self.count += 1
        self.sum_us += value_us
        if value_us < self.min_us:
            self.min_us = value_us
        if value_us > self.max_us:
            self.max_us = value_us

    def _sync(self) -> None:
        """The library's total, min and max from ours (record() writes only the buckets)."""
        hdr = self._hdr
        if hdr is not None and self.count:
            hdr.total_count = self.count
            hdr.min_value = int(self.min_us)
            hdr.max_value = int(self.max_us)

    def add(self, other: LatencyHistogram) -> None:
        if other.count == 0 or other._hdr is None:
            return
        if self._hdr is None:
            self._allocate()
        assert self._hdr is not None
        other._sync()
        self._sync()
        self._hdr.add(other._hdr)
        self.count += other.count
        self.sum_us += other.sum_us
        self.min_us = min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)
        self._sync()

    def freeze(self, copy: bool = True) -> HistogramSnapshot:
        """A frozen view; copy=False hands over this histogram (for a throwaway merge)."""
        if self.count == 0 or self._hdr is None:
            return HistogramSnapshot(None, 0, 0, 0, 0)
        self._sync()
        hdr = self._hdr
        if copy:
            hdr = new_hdr()
            hdr.add(self._hdr)
        return HistogramSnapshot(hdr, self.count, self.sum_us, self.min_us, self.max_us)

    @classmethod
    def decode(cls, data: dict[str, Any]) -> LatencyHistogram:
        """Rebuild from `HistogramSnapshot.encode()` (e.g. the JSON of another pod)."""
        h = cls()
        if data.get("count") and data.get("hdr"):
            h._allocate()
            assert h._hdr is not None
            h._hdr.add(hdr_codec.decode(data["hdr"]))
            h.count = int(data["count"])
            h.sum_us = data["sum_us"]
            h.min_us = data["min_us"]
            h.max_us = data["max_us"]
        return h


@dataclass(eq=False, kw_only=True)
class PhaseRecorder(Counters):
    """Everything counted during one phase (one load level): the Counters, errors by kind
    and the distributions. The engine's hot path increments the counters in place."""

    index: int
    label: str
    started_s: float
    conversations: int
    delay_ms: float
    ended_s: float | None = None
    errors: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # From each token's intended publish time (the schedule) to receipt: coordinated omission.
    latency_intended: LatencyHistogram = field(default_factory=LatencyHistogram)
    connect: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_token: LatencyHistogram = field(default_factory=LatencyHistogram)
    itl: LatencyHistogram = field(default_factory=LatencyHistogram)
    # Each PUBLISH pipeline's round trip, send -> reply: how Redis answers under this load.
    publish_rtt: LatencyHistogram = field(default_factory=LatencyHistogram)
    establish: LatencyHistogram = field(default_factory=LatencyHistogram)
    # The absolute size of negative latencies (the producer's clock ahead): kept apart so
    # that `latency` stays a distribution of real delays and both stay exact when merged.
    negative_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    error_examples: dict[str, str] = field(default_factory=dict)
    # The per-hop tap (--nats; sse_tui.engine.nats_tap): publish -> NATS, NATS -> SSE.
    redis_to_nats: LatencyHistogram = field(default_factory=LatencyHistogram)
    nats_to_sse: LatencyHistogram = field(default_factory=LatencyHistogram)

    def error(self, kind: str, n: int = 1, detail: str | None = None) -> None:
        """Count an error of a kind (a small fixed set); the first detail of each kind is
        kept as its example, e.g. "HTTP 404 from /stream/x" for kind "HTTP 404"."""
        self.errors[kind] += n
        if detail and kind not in self.error_examples:
            self.error_examples[kind] = detail[:200]

    def elapsed_s(self, now_s: float) -> float:
        end = self.ended_s if self.ended_s is not None else now_s
        return max(0.0, end - self.started_s)

    def freeze(self, now_s: float, copy: bool = True) -> PhaseStats:
        return PhaseStats(
            **self.counter_values(),
            index=self.index,
            label=self.label,
            started_s=self.started_s,
            ended_s=self.ended_s,
            conversations=self.conversations,
            delay_ms=self.delay_ms,
            elapsed_s=self.elapsed_s(now_s),
            errors=dict(self.errors),
            latency=self.latency.freeze(copy),
            latency_intended=self.latency_intended.freeze(copy),
            connect=self.connect.freeze(copy),
            first_token=self.first_token.freeze(copy),
            itl=self.itl.freeze(copy),
            publish_rtt=self.publish_rtt.freeze(copy),
            establish=self.establish.freeze(copy),
            error_examples=dict(self.error_examples),
            negative_latency=self.negative_latency.freeze(copy),
            redis_to_nats=self.redis_to_nats.freeze(copy),
            nats_to_sse=self.nats_to_sse.freeze(copy),
        )

    @classmethod
    def merged(cls, phases: list[PhaseRecorder], label: str = "total") -> PhaseRecorder:
        """The run total: counters summed, histograms merged, spanning all phases."""
        last = phases[-1]
        total = cls(index=-1, label=label, started_s=phases[0].started_s,
                    conversations=last.conversations, delay_ms=last.delay_ms,
                    ended_s=last.ended_s)
        for p in phases:
            total.add(p)
            total.errors.update(p.errors)
            total.latency.add(p.latency)
            total.latency_intended.add(p.latency_intended)
            total.connect.add(p.connect)
            total.first_token.add(p.first_token)
            total.itl.add(p.itl)
            total.publish_rtt.add(p.publish_rtt)
            total.establish.add(p.establish)
            total.negative_latency.add(p.negative_latency)
            total.redis_to_nats.add(p.redis_to_nats)
            total.nats_to_sse.add(p.nats_to_sse)
            for kind, example in p.error_examples.items():
                total.error_examples.setdefault(kind, example)
        return total


class SequenceTracker:
    """Per-conversation bookkeeping of received sequence numbers.

    missing     = sequences in first..last never received
    duplicated  = receipts of a sequence already received
    out_of_order = first receipts of a sequence lower than the highest received before it
    """

    __slots__ = ("_seen", "before_first", "done_seq", "duplicated", "first_seq", "highest",
                 "out_of_order", "unique")

    def __init__(self) -> None:
        self._seen = bytearray(64)
        self.highest = 0
        self.unique = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.done_seq = 0
        self.first_seq = 0  # the first sequence ever received (followed conversations join late)
        self.before_first = 0  # unique sequences lower than first_seq, received after it

    def receive(self, seq: int, done: bool) -> bool:
        """Record one receipt; False if it was a duplicate."""
        seen = self._seen
        if seq >= len(seen):
            seen.extend(bytes(max(seq + 1 - len(seen), len(seen))))
        if done:
            self.done_seq = seq
        if seen[seq]:
            self.duplicated += 1
            return False
        seen[seq] = 1
        self.unique += 1
        if not self.first_seq:
            self.first_seq = seq
        if seq < self.highest:
            self.out_of_order += 1
            if seq < self.first_seq:
                self.before_first += 1
        else:
            self.highest = seq
        return True

    def has(self, seq: int) -> bool:
        """Was `seq` received?"""
        return 0 < seq < len(self._seen) and bool(self._seen[seq])

    def missing(self, last: int, first: int = 1) -> int:
        """Sequences in first..last never received."""
        if last < first:
            return 0
        got = self._seen[first:last + 1].count(1)
        return (last - first + 1) - got

    def missing_ranges(self, last: int, first: int = 1) -> list[tuple[int, int]]:
        """The runs of sequences in first..last never received, as (from, to) pairs, in order.

        C-level `find` over the bitmap: cheap enough at a conversation's end even for long
        conversations with many gaps."""
        if last < first:
            return []
        seen = self._seen
        if last >= len(seen):
            seen.extend(bytes(last + 1 - len(seen)))
        out: list[tuple[int, int]] = []
        pos, stop = first, last + 1
        while pos < stop:
            gap = seen.find(0, pos, stop)
            if gap < 0:
                break
            got = seen.find(1, gap, stop)
            end = last if got < 0 else got - 1
            out.append((gap, end))
            pos = end + 1
        return out

    def missing_so_far(self, from_first_received: bool = False) -> int:
        """Sequences in 1..highest (or first_seq..highest) not received yet, in O(1): cheap
        enough to rank thousands of live conversations for every snapshot."""
        if not self.unique:
            return 0
        if from_first_received:
            return self.highest - self.first_seq + 1 - (self.unique - self.before_first)
        return self.highest - self.unique


# The loss classes, in the order the JSON and the summary list them (docs/loss.md).
LOSS_CLASSES = ("first", "gap", "tail", "after_resume")


def classify_loss(ranges: list[tuple[int, int]], first: int, last: int,
                  resume_points: Iterable[int]) -> dict[str, int]:
    """Split a conversation's missing sequences into the loss classes (they sum to the
    missing count):

    first        the run at the start, before the first sequence the streams delivered
    tail         the run at the end, after the last sequence the streams delivered (all of
                 it when nothing was delivered)
    after_resume the one sequence right after a resume point (a Last-Event-ID a resumed
                 stream was opened with), when it is missing inside the stream
    gap          every other missing sequence
    """
    out = dict.fromkeys(LOSS_CLASSES, 0)
    if not ranges:
        return out
    resumed = set(resume_points)
    for lo, hi in ranges:
        n = hi - lo + 1
        if lo == first and hi == last:  # nothing delivered at all
            out["tail"] += n
        elif lo == first:
            out["first"] += n
        elif hi == last:
            out["tail"] += n
        elif lo - 1 in resumed:
            out["after_resume"] += 1
            out["gap"] += n - 1
        else:
            out["gap"] += n
    return out
