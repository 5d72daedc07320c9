"""The SLO gate (sse_tui.slo): clauses parsed up front, judged on the final snapshot, exit 3.

Snapshots here come from the engine's own recorders (PhaseRecorder), and the end-to-end runs
are real headless runs against the demo sandbox, in a subprocess as CI runs them.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sse_tui.cli_args import parse_args
from sse_tui.config import load_config
from sse_tui.engine.stats import PhaseRecorder
from sse_tui.report import format_summary, summary_dict
from sse_tui.settings import Settings, UsageError
from sse_tui.slo import EXIT_SLO_FAILED, evaluate, exit_status, parse_clause, split_clauses
from sse_tui.snapshot import Distribution, SelfHealth, StatsSnapshot
from sse_tui.tui.app import finish_run
from tests.fake_engine import FakeEngine

# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold"),
    [
        ("p99<50ms", "latency.p99", "<", 50.0),
        ("latency.p99 <= 1.5s", "latency.p99", "<=", 1500.0),
        ("p999<500us", "latency.p999", "<", 0.5),
        ("p99.9<2ms", "latency.p999", "<", 2.0),
        ("latency_ms.max<1m", "latency.max", "<", 60_000.0),
        ("first_token.p99<2s", "first_token.p99", "<", 2000.0),
        ("connect.p90>=0ms", "connect.p90", ">=", 0.0),
        ("intended_p99<200ms", "latency_intended.p99", "<", 200.0),
        ("intended_p99.9<1s", "latency_intended.p999", "<", 1000.0),
        ("intended.max<=2s", "latency_intended.max", "<=", 2000.0),
        ("latency_intended_ms.p50<5ms", "latency_intended.p50", "<", 5.0),
        ("P50 > 1ms", "latency.p50", ">", 1.0),
        ("missing=0", "missing", "=", 0.0),
        ("duplicated==0", "duplicated", "=", 0.0),
        ("out_of_order<=3", "out_of_order", "<=", 3.0),
        ("errors<=5", "errors", "<=", 5.0),
        ("received_per_s>=1000.5", "received_per_s", ">=", 1000.5),
    ],
)
def test_good_clauses(text: str, metric: str, op: str, threshold: float) -> None:
    c = parse_clause(text)
    assert (c.metric, c.op) == (metric, op)
    assert c.threshold == pytest.approx(threshold)
    assert c.text == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99<50", "a latency takes a duration with its unit"),  # ms? s? not guessed
        ("p99<-5ms", "a latency takes a duration with its unit"),
        ("p99<fast", "a latency takes a duration with its unit"),
        ("missing=1ms", "missing takes a plain number"),
        ("errors<=-1", "must be 0 or more"),
        ("p98<50ms", "unknown metric 'p98'; valid metrics: p50/p90/p99/p999/max"),
        ("latency.p99.5<1s", "unknown metric"),
        ("intended_p98<1s", "unknown metric 'intended_p98'"),
        ("intended<1s", "unknown metric 'intended'"),
        ("intended_p99<200", "a latency takes a duration with its unit"),
        ("p99", "is not METRIC OP VALUE"),
        ("p99=<5ms", "a latency takes a duration"),
        ("p99<", "has no value"),
        ("p99 ~ 5ms", "is not METRIC OP VALUE"),
    ],
)
def test_bad_clauses_name_the_clause(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="clause") as e:
        parse_clause(text)
    assert message in str(e.value)
    assert repr(text.strip()) in str(e.value)


def test_a_spec_splits_on_commas_and_refuses_empty_clauses() -> None:
    assert split_clauses(" p99<50ms, missing=0 ,errors<=5") == ("p99<50ms", "missing=0",
                                                                 "errors<=5")
    with pytest.raises(ValueError, match="empty clause"):
        split_clauses("p99<50ms,,missing=0")
    with pytest.raises(ValueError, match="empty SLO"):
        split_clauses(" ")


def test_the_flag_is_repeatable_and_validated_up_front() -> None:
    s = parse_args(["--slo", "p99<50ms,missing=0", "--slo", "errors<=5"]).settings
    assert s.slo == ("p99<50ms", "missing=0", "errors<=5")
    with pytest.raises(UsageError) as e:
        parse_args(["--slo", "p99<50ms,lag<5"])
    msg = str(e.value)
    assert msg.startswith("invalid value for --slo: clause 'lag<5': unknown metric 'lag'")
    assert "first_token" in msg and "received_per_s" in msg and "\n" not in msg


def test_toml_takes_an_array_or_a_string(tmp_path: Path) -> None:
    path = tmp_path / "slo.toml"
    path.write_text('slo = ["p99<50ms", "missing=0,errors<=5"]\n', encoding="utf-8")
    assert load_config(path) == {"slo": ("p99<50ms", "missing=0", "errors<=5")}
    path.write_text('slo = "p99<50ms"\n', encoding="utf-8")
    assert load_config(path) == {"slo": ("p99<50ms",)}
    path.write_text('slo = ["p99<50"]\n', encoding="utf-8")
    with pytest.raises(UsageError, match="clause 'p99<50': a latency takes a duration"):
        load_config(path)
    path.write_text("slo = 5\n", encoding="utf-8")
    with pytest.raises(UsageError, match="must be an array of clauses"):
        load_config(path)
    # Saved back as it came.
    saved = Settings(run_id="r", slo=("p99<50ms", "missing=0")).to_toml_dict()
    assert saved["slo"] == ["p99<50ms", "missing=0"]


def test_the_cli_refuses_a_bad_spec_with_exit_status_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "sse_tui", "--no-tui",
                           "--slo", "p99<5ms,tail<5ms"], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "clause 'tail<5ms'" in lines[0] and "valid metrics" in lines[0]
    assert "Traceback" not in proc.stderr


# --- evaluation on snapshots from the real recorders --------------------------------------


def snapshot_of(recorder: PhaseRecorder, slo: tuple[str, ...], *, mode: str = "both",
                fatal_error: str | None = None) -> StatsSnapshot:
    settings = Settings(run_id="slo", mode=mode, slo=slo)  # type: ignore[arg-type]
    total = recorder.freeze(2.0)
    empty = Distribution.empty()
    return StatsSnapshot(
        taken_at_ns=0, state="failed" if fatal_error else "finished", settings=settings,
        elapsed_s=2.0, remaining_s=None, phase_index=0, phases=(total,), total=total,
        conversations=(), conversations_live=0,
        health=SelfHealth(loop_lag=empty, schedule_lag=empty, cpu_percent=0.0, warning=None),
        fatal_error=fatal_error)


def recorder_with_figures() -> PhaseRecorder:
    r = PhaseRecorder(index=0, label="2 conv", started_s=0.0, conversations=2, delay_ms=5.0)
    for ms in range(1, 101):  # latencies 1 … 100 ms
        r.latency.record(ms * 1000)
    r.first_token.record(30_000)
    r.tokens_published = r.tokens_received = 1000
    r.tokens_missing = 2
    r.error("HTTP 503", 3)
    r.ended_s = 2.0
    return r


def test_evaluation_measures_each_metric_and_gives_verdicts() -> None:
    clauses = ("p99<50ms", "latency.max<=100ms", "first_token.p99<1s", "missing=0",
               "errors<=5", "received_per_s>=500", "connect.p99<1s")
    snap = snapshot_of(recorder_with_figures(), clauses)
    results = {r.clause.text: r for r in evaluate(snap)}
    assert list(results) == list(clauses)  # in the order given
    assert results["p99<50ms"].measured == pytest.approx(99.0, rel=0.002)  # HDR: within 0.1%
    assert results["p99<50ms"].verdict == "fail"
    assert results["latency.max<=100ms"].verdict == "pass"
    assert results["first_token.p99<1s"].verdict == "pass"
    assert (results["missing=0"].measured, results["missing=0"].verdict) == (2, "fail")
    assert (results["errors<=5"].measured, results["errors<=5"].verdict) == (3, "pass")
    assert results["received_per_s>=500"].measured == pytest.approx(500.0)
    assert results["received_per_s>=500"].verdict == "pass"
    # No connect time was recorded: no data fails the clause, and says so.
    nodata = results["connect.p99<1s"]
    assert (nodata.measured, nodata.verdict, nodata.reason) == (None, "fail", "no data")
    assert exit_status(snap) == EXIT_SLO_FAILED


def test_summary_table_json_and_exit_status() -> None:
    snap = snapshot_of(recorder_with_figures(), ("p99<50ms", "errors<=5", "connect.p99<1s"))
    text = format_summary(snap)
    assert "SLO:                  FAILED (2 of 3 clauses)" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("p99<50ms"))
    assert "ms" in row and row.endswith("FAIL")
    assert next(line for line in text.splitlines()
                if line.strip().startswith("errors<=5")).endswith("pass")
    assert "FAIL (no data)" in text
    d = json.loads(json.dumps(summary_dict(snap), allow_nan=False))
    assert d["slo"][1] == {"clause": "errors<=5", "metric": "errors", "operator": "<=",
                           "threshold": 5, "unit": "count", "measured": 3,
                           "verdict": "pass", "reason": None}
    assert d["slo"][0]["metric"] == "latency.p99" and d["slo"][0]["threshold"] == 50
    assert d["slo"][2]["measured"] is None and d["slo"][2]["reason"] == "no data"
    assert d["settings"]["slo"] == ["p99<50ms", "errors<=5", "connect.p99<1s"]

    easy = snapshot_of(recorder_with_figures(), ("p99<1s", "errors<=5"))
    assert exit_status(easy) == 0
    assert "SLO:                  met (2 clauses)" in format_summary(easy)
    # A run that failed to measure is 1, whatever the clauses say.
    failed = snapshot_of(recorder_with_figures(), ("p99<1us",), fatal_error="no stream")
    assert exit_status(failed) == 1
    # Without --slo: no table, an empty list, and exit 0.
    none = snapshot_of(recorder_with_figures(), ())
    assert "SLO:" not in format_summary(none)
    assert summary_dict(none)["slo"] == [] and exit_status(none) == 0


def test_a_producer_has_no_data_for_what_only_a_consumer_measures() -> None:
    snap = snapshot_of(recorder_with_figures(), ("missing=0", "errors<=5"), mode="producer")
    missing, errors = evaluate(snap)
    assert (missing.measured, missing.verdict) == (None, "fail")
    assert errors.verdict == "pass"


def test_the_tui_path_gives_the_same_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    # finish_run is what runs after the app closes: FakeEngine's latencies are ~6 ms and up.
    statuses = {}
    for name, slo, fatal in (("impossible", ("p99<1us",), None), ("easy", ("p99<10s",), None),
                             ("fatal", ("p99<1us",), "no stream")):
        engine = FakeEngine(Settings(run_id="t", slo=slo), auto_advance=False,
                            fatal_error=fatal)
        engine.start()
        engine.advance(1.0)
        statuses[name] = finish_run(engine, out=io.StringIO())
    assert statuses == {"impossible": 3, "easy": 0, "fatal": 1}
    assert "sse-tui: SLO not met: p99<1us (latency.p99 " in capsys.readouterr().err


# --- real headless runs against the demo sandbox --------------------------------------------


def headless_run(tmp_path: Path, *slo: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "run.json"
    args = ["--demo", "--no-tui", "-c", "2", "-t", "20", "-d", "2", "--duration", "0",
            "--json", str(out)]
    for spec in slo:
        args += ["--slo", spec]
    proc = subprocess.run([sys.executable, "-m", "sse_tui", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    data = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    return proc, data


def test_an_impossible_slo_exits_3_and_names_the_failing_clause(tmp_path: Path) -> None:
    proc, data = headless_run(tmp_path, "p99<1us,missing=0", "errors<=5")
    assert proc.returncode == 3, proc.stderr
    assert "sse-tui: SLO not met: p99<1us (latency.p99 " in proc.stderr
    assert "missing=0" not in proc.stderr  # only the failing clause is named
    assert "SLO:                  FAILED (1 of 3 clauses)" in proc.stdout
    assert data["state"] == "finished" and data["tokens_received"] == 40
    verdicts = [(r["clause"], r["metric"], r["operator"], r["verdict"]) for r in data["slo"]]
    assert verdicts == [("p99<1us", "latency.p99", "<", "fail"),
                        ("missing=0", "missing", "=", "pass"),
                        ("errors<=5", "errors", "<=", "pass")]
    p99 = data["slo"][0]
    assert p99["threshold"] == 0.001 and p99["unit"] == "ms"
    assert p99["measured"] == pytest.approx(data["latency_ms"]["p99"], abs=0.001)


def test_an_easy_slo_exits_0(tmp_path: Path) -> None:
    proc, data = headless_run(tmp_path, "p99<10s,first_token.p99<10s,missing=0,errors<=5,"
                                        "received_per_s>0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SLO not met" not in proc.stderr
    assert "SLO:                  met (5 clauses)" in proc.stdout
    assert [r["verdict"] for r in data["slo"]] == ["pass"] * 5
    assert data["slo"][4]["measured"] > 0


def test_the_intended_latency_is_judged_apart_from_the_plain_one() -> None:
    """A Redis stall: the plain latency stays small, the intended one shows the wait."""
    r = recorder_with_figures()  # plain latencies 1 … 100 ms
    for ms in range(1, 101):
        r.latency_intended.record(ms * 1000 + (900_000 if ms > 95 else 0))
    snap = snapshot_of(r, ("p99<150ms", "intended_p99<150ms", "intended.max>=900ms"))
    results = {r.clause.text: r for r in evaluate(snap)}
    assert results["p99<150ms"].verdict == "pass"
    assert results["intended_p99<150ms"].measured == pytest.approx(999.0, rel=0.002)
    assert results["intended_p99<150ms"].verdict == "fail"
    assert results["intended.max>=900ms"].verdict == "pass"
    assert results["intended_p99<150ms"].to_dict()["metric"] == "latency_intended.p99"
    # A run that measured no intended latency (a producer alone) has no data for it.
    empty = snapshot_of(PhaseRecorder(index=0, label="p", started_s=0.0, conversations=1,
                                      delay_ms=5.0), ("intended_p99<1s",), mode="producer")
    (nodata,) = evaluate(empty)
    assert (nodata.measured, nodata.verdict) == (None, "fail")
