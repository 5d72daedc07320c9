"""Mutable recorders the engine writes on the hot path, and their frozen snapshots.

Only the current phase is recorded into; the run total is the merge of all phases, made
when a snapshot is taken, so each token costs one histogram record per metric.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from sse_tui.hdr import HIGHEST_US, new_hdr
from sse_tui.snapshot import HistogramSnapshot, PhaseStats


class LatencyHistogram:
    """An HDR histogram plus exact count, sum, min and max (HdrHistogram's own mean walks
    every bucket in Python, ~30 ms; ours is O(1)). Mergeable within and across processes."""

    __slots__ = ("_hdr", "count", "max_us", "min_us", "sum_us")

    def __init__(self) -> None:
        self._hdr: HdrHistogram | None = None  # allocated on first record: ~190 KB each
        self.count = 0
        self.sum_us = 0
        self.min_us = math.inf
        self.max_us = -math.inf

    def record(self, value_us: int) -> None:
        if value_us < 0:
            value_us = 0
        elif value_us > HIGHEST_US:
            value_us = HIGHEST_US
        hdr = self._hdr
        if hdr is None:
            hdr = self._hdr = new_hdr()
        hdr.record_value(value_us)
        self.count += 1
        self.sum_us += value_us
        if value_us < self.min_us:
            self.min_us = value_us
        if value_us > self.max_us:
            self.max_us = value_us

    def add(self, other: LatencyHistogram) -> None:
        if other.count == 0 or other._hdr is None:
            return
        if self._hdr is None:
            self._hdr = new_hdr()
        self._hdr.add(other._hdr)
        self.count += other.count
        self.sum_us += other.sum_us
        self.min_us = min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)

    def freeze(self, copy: bool = True) -> HistogramSnapshot:
        """A frozen view; copy=False hands over this histogram (for a throwaway merge)."""
        if self.count == 0 or self._hdr is None:
            return HistogramSnapshot(None, 0, 0, 0, 0)
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
            h._hdr = new_hdr()
            h._hdr.add(HdrHistogram.decode(data["hdr"].encode("ascii")))
            h.count = int(data["count"])
            h.sum_us = data["sum_us"]
            h.min_us = data["min_us"]
            h.max_us = data["max_us"]
        return h


_COUNTERS = (
    "tokens_published", "tokens_received", "tokens_unheard", "publish_errors",
    "connections_opened", "connections_closed", "conversations_started",
    "conversations_completed", "conversations_incomplete", "conversations_cut_short",
    "tokens_missing",
    "tokens_duplicated", "tokens_out_of_order", "streams_ended_without_done", "reconnects",
)


@dataclass(eq=False)
class PhaseRecorder:
    """Everything counted during one phase (one load level)."""

    index: int
    label: str
    started_s: float
    conversations: int
    delay_ms: float
    ended_s: float | None = None
    tokens_published: int = 0
    tokens_received: int = 0
    tokens_unheard: int = 0  # PUBLISH answered "0 subscribers": nobody (no bridge) was listening
    publish_errors: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    conversations_started: int = 0
    conversations_completed: int = 0
    conversations_incomplete: int = 0
    # Still in progress when the run ended, with nothing missing of what was published.
    conversations_cut_short: int = 0
    tokens_missing: int = 0
    tokens_duplicated: int = 0
    tokens_out_of_order: int = 0
    streams_ended_without_done: int = 0
    reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    connect: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_token: LatencyHistogram = field(default_factory=LatencyHistogram)
    itl: LatencyHistogram = field(default_factory=LatencyHistogram)

    def error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] += n

    def elapsed_s(self, now_s: float) -> float:
        end = self.ended_s if self.ended_s is not None else now_s
        return max(0.0, end - self.started_s)

    def freeze(self, now_s: float, copy: bool = True) -> PhaseStats:
        return PhaseStats(
            index=self.index,
            label=self.label,
            started_s=self.started_s,
            ended_s=self.ended_s,
            conversations=self.conversations,
            delay_ms=self.delay_ms,
            elapsed_s=self.elapsed_s(now_s),
            tokens_published=self.tokens_published,
            tokens_received=self.tokens_received,
            publish_errors=self.publish_errors,
            connections_opened=self.connections_opened,
            connections_closed=self.connections_closed,
            errors=dict(self.errors),
            conversations_started=self.conversations_started,
            conversations_completed=self.conversations_completed,
            conversations_incomplete=self.conversations_incomplete,
            tokens_missing=self.tokens_missing,
            tokens_duplicated=self.tokens_duplicated,
            tokens_out_of_order=self.tokens_out_of_order,
            streams_ended_without_done=self.streams_ended_without_done,
            reconnects=self.reconnects,
            latency=self.latency.freeze(copy),
            connect=self.connect.freeze(copy),
            first_token=self.first_token.freeze(copy),
            itl=self.itl.freeze(copy),
            tokens_unheard=self.tokens_unheard,
            conversations_cut_short=self.conversations_cut_short,
        )

    @classmethod
    def merged(cls, phases: list[PhaseRecorder], label: str = "total") -> PhaseRecorder:
        """The run total: counters summed, histograms merged, spanning all phases."""
        last = phases[-1]
        total = cls(index=-1, label=label, started_s=phases[0].started_s,
                    conversations=last.conversations, delay_ms=last.delay_ms,
                    ended_s=last.ended_s)
        for p in phases:
            for name in _COUNTERS:
                setattr(total, name, getattr(total, name) + getattr(p, name))
            total.errors.update(p.errors)
            total.latency.add(p.latency)
            total.connect.add(p.connect)
            total.first_token.add(p.first_token)
            total.itl.add(p.itl)
        return total


class SequenceTracker:
    """Per-conversation bookkeeping of received sequence numbers.

    missing     = sequences in first..last never received
    duplicated  = receipts of a sequence already received
    out_of_order = first receipts of a sequence lower than the highest received before it
    """

    __slots__ = ("_seen", "done_seq", "duplicated", "first_seq", "highest", "out_of_order",
                 "unique")

    def __init__(self) -> None:
        self._seen = bytearray(64)
        self.highest = 0
        self.unique = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.done_seq = 0
        self.first_seq = 0  # the first sequence ever received (followed conversations join late)

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
        else:
            self.highest = seq
        return True

    def missing(self, last: int, first: int = 1) -> int:
        """Sequences in first..last never received."""
        if last < first:
            return 0
        got = self._seen[first:last + 1].count(1)
        return (last - first + 1) - got
