"""Histograms, sequence bookkeeping and the report, without any network."""

from __future__ import annotations

import json
import math
import random

import pytest

from sse_tui.engine.stats import LatencyHistogram, PhaseRecorder, SequenceTracker


def exact_percentile(values: list[int], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the samples at or below it."""
    s = sorted(values)
    return s[max(0, math.ceil(round(p / 100 * len(s), 9)) - 1)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_are_within_one_percent_of_exact(seed: int) -> None:
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(7, 1.6)) + 1 for _ in range(50_000)]
    h = LatencyHistogram()
    for v in values:
        h.record(v)
    d = h.freeze().summary
    for p, got in ((50, d.p50), (90, d.p90), (99, d.p99), (99.9, d.p999)):
        want = exact_percentile(values, p) / 1000
        assert abs(got - want) <= 0.01 * want, (p, got, want)
    assert d.min == min(values) / 1000 and d.max == max(values) / 1000
    assert d.avg == pytest.approx(sum(values) / len(values) / 1000)
    assert d.count == len(values)


def test_record_fills_the_same_buckets_as_hdrhistogram() -> None:
    """record() computes the bucket index itself (the hot path); the library's own
    record_value() must agree bucket for bucket, at every bucket boundary too, and the
    library's total, min and max must be right wherever the histogram is read."""
    from sse_tui.hdr import HIGHEST_US, new_hdr

    rng = random.Random(6)
    values = [0, 1, 2047, 2048, 2049, 4095, 4096, HIGHEST_US]
    values += [(1 << k) + d for k in range(1, 32) for d in (-1, 0, 1)]
    values += [rng.randrange(0, HIGHEST_US) for _ in range(20_000)]
    values += [int(rng.lognormvariate(7, 2)) for _ in range(20_000)]
    values = [min(v, HIGHEST_US) for v in values]
    ours, theirs = LatencyHistogram(), new_hdr()
    for v in values:
        ours.record(v)
        theirs.record_value(v)
    frozen = ours.freeze()
    hdr = frozen._hdr
    assert hdr is not None
    assert list(hdr.counts) == list(theirs.counts)
    assert hdr.get_total_count() == theirs.get_total_count() == len(values)
    assert (hdr.get_min_value(), hdr.get_max_value()) == (
        theirs.get_min_value(), theirs.get_max_value())
    # Merged into an empty one, and into one with values of its own: same as one histogram.
    merged = LatencyHistogram()
    merged.add(ours)
    assert merged.freeze().summary == frozen.summary
    extra = LatencyHistogram()
    extra.record(7)
    extra.add(ours)
    theirs.record_value(7)
    both = extra.freeze()._hdr
    assert both is not None and list(both.counts) == list(theirs.counts)
    assert both.get_total_count() == len(values) + 1


def test_histograms_merge_and_survive_encoding() -> None:
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    rng = random.Random(4)
    for i in range(5000):
        v = rng.randint(1, 1_000_000)
        (a if i % 2 else b).record(v)
        both.record(v)
    merged = LatencyHistogram()
    merged.add(LatencyHistogram.decode(json.loads(json.dumps(a.freeze().encode()))))
    merged.add(LatencyHistogram.decode(b.freeze().encode()))
    assert merged.freeze().summary == both.freeze().summary


def test_histogram_snapshots_pickle_exactly() -> None:
    import pickle

    h = LatencyHistogram()
    rng = random.Random(5)
    for _ in range(20_000):
        h.record(int(rng.lognormvariate(6, 1.2)) + 1)
    frozen = h.freeze()
    data = pickle.dumps(frozen)
    assert len(data) < 8000  # HdrHistogram's compressed encoding, not 23552 raw counts
    copy = pickle.loads(data)
    assert copy.summary == frozen.summary
    assert pickle.loads(pickle.dumps(LatencyHistogram().freeze())).count == 0


def test_empty_histogram_summary_is_nan_and_null_in_json() -> None:
    d = LatencyHistogram().freeze().summary
    assert d.count == 0 and math.isnan(d.p99)
    assert d.to_dict()["p99"] is None


def test_out_of_range_values_are_clamped_not_lost() -> None:
    h = LatencyHistogram()
    h.record(-5)
    h.record(10**13)
    assert h.count == 2 and h.min_us == 0


def test_sequence_tracker_counts_by_the_definitions() -> None:
    t = SequenceTracker()
    for seq in (1, 2, 4, 3, 3, 6, 5, 7):
        t.receive(seq, done=(seq == 7))
    # 3 arrives after 4 and 5 after 6: two out of order; the second 3 is a duplicate.
    assert (t.unique, t.duplicated, t.out_of_order, t.done_seq) == (7, 1, 2, 7)
    assert t.missing(7) == 0
    t2 = SequenceTracker()
    for seq in (1, 2, 5, 300):
        t2.receive(seq, done=False)
    assert t2.missing(300) == 296
    assert t2.missing(10, first=5) == 5


def test_phase_total_is_the_sum_of_phases() -> None:
    p0 = PhaseRecorder(index=0, label="a", started_s=0.0, conversations=2, delay_ms=50)
    p1 = PhaseRecorder(index=1, label="b", started_s=5.0, conversations=4, delay_ms=20)
    p0.tokens_received, p1.tokens_received = 10, 32
    p0.error("connect")
    p1.error("connect", 2)
    p0.latency.record(1000)
    p1.latency.record(3000)
    total = PhaseRecorder.merged([p0, p1]).freeze(9.0, copy=False)
    assert total.tokens_received == 42
    assert total.errors == {"connect": 3}
    assert total.latency.summary.avg == 2.0
    assert total.conversations == 4 and total.delay_ms == 20


def test_progress_line_keeps_the_reference_format() -> None:
    import re

    from sse_tui.engine.engine import LoadEngine
    from sse_tui.report import progress_line
    from sse_tui.settings import Settings

    engine = LoadEngine(Settings(run_id="fmt"))
    engine.phase.tokens_published = 1200
    engine.phase.tokens_received = 1180
    engine.phase.error("connect", 2)
    for v in (1000, 2000, 3000):
        engine.phase.latency.record(v)
    line = progress_line(engine.snapshot(), now=0)
    # Scripts written for the reference parse this prefix; ours only appends to it.
    assert re.match(r"^\[\d\d:\d\d:\d\d\] Published: 1200, Received: 1180, Errors: 2, ", line)
    assert "p50: 2.00 ms, p99: 3.00 ms" in line


def test_a_summarized_histogram_pickles_as_its_summary() -> None:
    import pickle

    h = LatencyHistogram()
    for v in range(1, 20_000, 3):
        h.record(v)
    full = h.freeze()
    small = full.summarized()
    data = pickle.dumps(small)
    assert len(data) < 1000
    assert pickle.loads(data).summary == full.summary
    assert pickle.loads(data).count == full.count


# -- the counters: one dataclass that recorder, snapshot, total, JSON and merge all iterate --

# The counter keys of JSON schema 1, in order (docs/json.md); new counters may be added
# among them, but these keep their order.
SCHEMA_1_COUNTER_KEYS = [
    "tokens_published", "tokens_received", "tokens_unheard", "publish_errors",
    "connections_opened", "connections_closed", "errors", "errors_by_kind", "conversations",
    "tokens_missing", "tokens_duplicated", "tokens_out_of_order", "streams_ended_without_done",
    "reconnects",
]


def numbered_counters() -> dict[str, int]:
    from sse_tui.snapshot import COUNTER_FIELDS

    return {f.name: 10 + i for i, f in enumerate(COUNTER_FIELDS)}


def test_every_counter_reaches_the_total_the_json_and_back() -> None:
    from sse_tui.report import counters_dict, counters_from_json
    from sse_tui.snapshot import Counters

    values = numbered_counters()
    phases = []
    for i in range(2):
        p = PhaseRecorder(index=i, label=str(i), started_s=float(i), conversations=1,
                          delay_ms=1)
        for name, v in values.items():
            setattr(p, name, v * (i + 1))
        phases.append(p)
    total = PhaseRecorder.merged(phases).freeze(2.0, copy=False)
    assert total.counter_values() == {k: 3 * v for k, v in values.items()}
    as_json = counters_dict(total, {"connect": 2})
    keys = [k for k in as_json if k in SCHEMA_1_COUNTER_KEYS]
    assert keys == SCHEMA_1_COUNTER_KEYS
    assert as_json["errors"] == 2 and as_json["errors_by_kind"] == {"connect": 2}
    assert as_json["conversations"] == {
        "started": total.conversations_started, "completed": total.conversations_completed,
        "incomplete": total.conversations_incomplete, "cut_short": total.conversations_cut_short}
    assert counters_from_json(json.loads(json.dumps(as_json))) == Counters(**total.counter_values())


def test_the_json_keeps_schema_1_key_order() -> None:
    from sse_tui.engine.engine import LoadEngine
    from sse_tui.report import summary_dict
    from sse_tui.settings import Settings

    engine = LoadEngine(Settings(run_id="keys"))
    data = summary_dict(engine.snapshot())
    top = list(data)
    assert top[:5] == ["schema", "state", "fatal_error", "settings", "elapsed_s"]
    assert [k for k in top if k in SCHEMA_1_COUNTER_KEYS] == SCHEMA_1_COUNTER_KEYS
    # Keys added since schema 1 (counters after `reconnects`) keep schema 1's order intact.
    schema_1_tail = ["latency_ms", "connect_ms", "first_token_ms", "itl_ms", "throughput",
                     "phases", "self", "histograms"]
    after = top[top.index("reconnects") + 1:]
    assert [k for k in after if k in schema_1_tail] == schema_1_tail
    phase = list(data["phases"][0])
    assert phase[:7] == ["index", "label", "started_s", "ended_s", "elapsed_s",
                         "conversations_setting", "delay_ms"]
    assert [k for k in phase if k in SCHEMA_1_COUNTER_KEYS] == SCHEMA_1_COUNTER_KEYS


def test_labelled_counters_get_a_summary_line() -> None:
    from sse_tui.engine.engine import LoadEngine
    from sse_tui.report import format_summary
    from sse_tui.settings import Settings

    engine = LoadEngine(Settings(run_id="labels"))
    engine.phase.tokens_missing, engine.phase.tokens_duplicated = 7, 8
    engine.phase.tokens_out_of_order = 9
    text = format_summary(engine.snapshot())
    assert "Tokens missing:       7\nTokens duplicated:    8\nTokens out of order:  9\n" in text


# -- one percentile path ----------------------------------------------------------------------

def test_a_snapshot_with_four_histograms_pickles_small() -> None:
    import pickle

    rng = random.Random(6)
    p = PhaseRecorder(index=0, label="x", started_s=0.0, conversations=1, delay_ms=1)
    for h, mu in ((p.latency, 6), (p.connect, 7), (p.first_token, 9), (p.itl, 10)):
        for _ in range(50_000):
            h.record(int(rng.lognormvariate(mu, 1.0)) + 1)
    frozen = p.freeze(1.0)
    data = pickle.dumps(frozen)
    # HdrHistogram's compressed encoding: a few KB each (the raw counts were ~50 KB each).
    assert len(data) < 40_000
    copy = pickle.loads(data)
    for name in ("latency", "connect", "first_token", "itl"):
        assert getattr(copy, name).summary == getattr(frozen, name).summary


def test_the_timeline_counts_every_receipt_of_a_second() -> None:
    from sse_tui.engine.timeline import Timeline

    timeline = Timeline()
    # 50 000 receipts in one second: the first 20 000 fast, the rest slow. A capped sample
    # of the first 20 000 would say p50 = p99 = 1 ms.
    values = [1000] * 20_000 + [5000] * 29_600 + [20_000] * 400
    for v in values:
        timeline.record(v)
    timeline.close_second(1.0, published_total=50_000, received_total=50_000)
    timeline.close_second(2.0, published_total=50_010, received_total=50_000)
    first, second = timeline.points()
    assert (first.t_s, first.published_per_s, first.received_per_s) == (1.0, 50_000, 50_000)
    assert first.p50_ms == pytest.approx(exact_percentile(values, 50) / 1000, rel=1e-3)
    assert first.p99_ms == pytest.approx(exact_percentile(values, 99) / 1000, rel=1e-3)
    assert first.p99_ms == pytest.approx(5.0, rel=1e-3)
    assert (second.published_per_s, second.received_per_s, second.p50_ms) == (10, 0, None)


def test_live_missing_count_matches_the_full_count() -> None:
    rng = random.Random(8)
    for _ in range(200):
        t = SequenceTracker()
        seqs = [s for s in range(1, 60) if rng.random() > 0.2]
        seqs += rng.sample(seqs, min(5, len(seqs)))  # duplicates
        rng.shuffle(seqs)
        for seq in seqs:
            t.receive(seq, done=False)
        if not t.unique:
            continue
        assert t.missing_so_far() == t.missing(t.highest)
        assert t.missing_so_far(from_first_received=True) == t.missing(t.highest, t.first_seq)


def test_a_dropped_histogram_is_freed_without_the_cycle_collector() -> None:
    """hdrhistogram's histogram and encoder refer to each other; ours are untangled, so a
    --workers coordinator decoding reports 4 times a second frees each at once."""
    import gc
    import weakref

    from sse_tui.hdr import decode, encode, new_hdr

    h = LatencyHistogram()
    for v in range(1, 50_000, 7):
        h.record(v)
    blob = h.freeze().encode()["hdr"]
    gc.disable()
    try:
        made, decoded = new_hdr(), decode(blob)
        made.add(decoded)
        assert encode(made) == encode(decoded)  # the encoder still works through the proxy
        refs = [weakref.ref(made), weakref.ref(decoded)]
        del made, decoded
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()
