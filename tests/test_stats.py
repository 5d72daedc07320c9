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
    assert len(data) < 23552 * 8 / 2  # the non-zero span only, not all 23552 buckets
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
    p0 = PhaseRecorder(0, "a", 0.0, 2, 50)
    p1 = PhaseRecorder(1, "b", 5.0, 4, 20)
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
