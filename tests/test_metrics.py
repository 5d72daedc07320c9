"""--metrics-port: /metrics scraped during a real run, and after it (--metrics-linger) the
final counters equal the final JSON summary's; the TUI's engine process serves it too; a port
in use is one line and exit status 2; the Job manifests carry the scrape annotations."""

from __future__ import annotations

import io
import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sse_tui.engine.stats import LatencyHistogram
from sse_tui.metrics import BUCKETS_MS, counter_metric
from sse_tui.report import counters_from_json, summary_dict
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings
from sse_tui.snapshot import COUNTER_FIELDS
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parent.parent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples | None:
    """The samples of /metrics by (name, labels), or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def maybe(samples: Samples | None, name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include these; None before there is one (a
    scrape before the first snapshot has the families without samples)."""
    found = [v for (n, ls), v in (samples or {}).items()
             if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def value(samples: Samples | None, name: str, **labels: str) -> float:
    v = maybe(samples, name, **labels)
    assert v is not None, f"no sample {name} {labels}"
    return v


def assert_counters_match(samples: Samples, summary: dict[str, Any]) -> None:
    """Every counter of the JSON summary, the errors by kind and the histograms' counts."""
    counters = counters_from_json(summary)
    for f in COUNTER_FIELDS:
        name, factor = counter_metric(f.name)
        scraped = value(samples, f"sse_tui_{name}_total")
        assert scraped == pytest.approx(getattr(counters, f.name) * factor, rel=1e-12,
                                        abs=1e-12), f.name
    kinds = {dict(ls)["kind"]: v for (n, ls), v in samples.items() if n == "sse_tui_errors_total"}
    assert kinds == {k: float(n) for k, n in summary["errors_by_kind"].items()}
    for field, metric in (("latency", "latency_seconds"), ("connect", "connect_seconds"),
                          ("first_token", "first_token_seconds")):
        h = summary["histograms"][field]
        assert value(samples, f"sse_tui_{metric}_count") == h["count"]
        assert value(samples, f"sse_tui_{metric}_sum") == pytest.approx(h["sum_us"] / 1e6)
        assert value(samples, f"sse_tui_{metric}_bucket", le="+Inf") == h["count"]


def test_a_headless_run_is_scraped_live_and_its_final_scrape_equals_the_json(
        tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_tui", "--demo", "--no-tui", "-c", "4", "-t", "30", "-d",
         "10", "--duration", "3s", "--run-id", "metrics1", "--workers", "2",
         "--metrics-port", str(port),
         "--metrics-address", "127.0.0.1", "--metrics-linger", "30s", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    errors: list[str] = []  # stderr as it comes
    reader = threading.Thread(target=lambda: errors.extend(iter(proc.stderr.readline, "")),
                              daemon=True)
    reader.start()
    try:
        live: list[Samples] = []

        def scraped_mid_run() -> bool:
            s = scrape(port)
            if maybe(s, "sse_tui_run_finished") == 0 and (
                    maybe(s, "sse_tui_tokens_received_total") or 0) > 0:
                assert s is not None
                live.append(s)
            return bool(live)

        wait_until(scraped_mid_run, timeout=30, what="a scrape with tokens, mid-run")
        s = live[0]
        # Two engine processes: the series are their exact merge, labelled worker="all".
        labels = {"run_id": "metrics1", "mode": "both", "worker": "all"}
        assert value(s, "sse_tui_tokens_received_total", **labels) > 0
        assert value(s, "sse_tui_conversations_live", **labels) >= 1
        assert value(s, "sse_tui_run_info", state="running", **labels) == 1

        final: list[Samples] = []

        def scraped_final() -> bool:
            s = scrape(port)
            if maybe(s, "sse_tui_run_finished") == 1:
                assert s is not None
                final.append(s)
            return bool(final)

        wait_until(scraped_final, timeout=30, what="the final figures on /metrics")
        # The JSON is written before the linger begins; a SIGTERM ends the linger early.
        wait_until(lambda: "--metrics-linger" in "".join(errors), timeout=20,
                   what="the linger's line")
        assert out.exists()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        reader.join(10)
        stdout = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(errors)
    summary = json.loads(out.read_text())
    assert summary["tokens_received"] > 0
    assert_counters_match(final[0], summary)
    # Mid-run figures were no larger than the final ones (counters only grow).
    assert value(s, "sse_tui_tokens_received_total") <= summary["tokens_received"]
    assert f"Prometheus metrics at http://127.0.0.1:{port}/metrics" in stdout


async def test_the_tui_engine_process_is_served_through_the_same_outputs(
        sandbox: Sandbox, tmp_path: Path) -> None:
    from sse_tui.engine.process import EngineProcess
    from sse_tui.outputs import RunOutputs
    from sse_tui.tui.app import finish_run, make_app
    from tests.fake_engine import wait_for

    port = free_port()
    settings = Settings(redis=sandbox.redis_address, sse=sandbox.sse_url, conversations=3,
                        tokens=200, delay_ms=10, duration_s=60, grace_s=1.0, run_id="tui-m",
                        metrics_port=port, metrics_address="127.0.0.1",
                        timeseries=str(tmp_path / "ts.jsonl"))
    outputs = RunOutputs(settings)
    handle = EngineProcess(settings)
    outputs.follow(handle.snapshot)  # as sse_tui.__main__ does for the TUI
    app = make_app(handle)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            def received() -> float:
                return maybe(scrape(port), "sse_tui_tokens_received_total", run_id="tui-m") or 0

            await wait_for(pilot, lambda: received() > 30, timeout=20,
                           what="/metrics counting tokens under the TUI")
            await pilot.press("q")
        assert finish_run(handle, out=io.StringIO()) == 0
        final = handle.snapshot()
        samples = scrape(port)
        assert samples is not None and value(samples, "sse_tui_run_finished") == 1
        assert_counters_match(samples, summary_dict(final))
    finally:
        handle.close()
        outputs.close()
    rows = [json.loads(line) for line in (tmp_path / "ts.jsonl").read_text().splitlines()]
    assert sum(r["received"] for r in rows) == final.total.tokens_received > 0
    assert scrape(port) is None  # closed: the port is free again


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "sse_tui", "--demo", "--no-tui", "--metrics-port", str(port),
             "--metrics-address", "127.0.0.1"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert f"--metrics-port {port}: 127.0.0.1:{port} is already in use" in lines[0]
    assert time.monotonic() - started < 20  # before any sandbox or run


@pytest.mark.parametrize(("flag", "text"), [("--metrics-port", "99999"),
                                            ("--metrics-port", "http"),
                                            ("--metrics-address", "a b")])
def test_bad_metrics_flags_are_one_line_and_exit_2(flag: str, text: str) -> None:
    r = subprocess.run([sys.executable, "-m", "sse_tui", flag, text], capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and flag in r.stderr, r.stderr


def test_prometheus_buckets_come_from_the_hdr_histogram() -> None:
    """Below 2 ms HDR is exact to the µs: the buckets there are exact counts; above, a
    bucket agrees with the percentiles (p99 <= le exactly when 99% are counted in it)."""
    h = LatencyHistogram()
    values = [50 + (i * 7919) % 200_000 for i in range(20_000)]  # 0.05 .. 200 ms
    for v in values:
        h.record(v)
    snap = h.freeze()
    bounds = [int(ms * 1000) for ms in BUCKETS_MS]
    counts = snap.cumulative_counts(bounds)
    assert counts is not None
    for b, n in zip(bounds, counts, strict=True):
        if b < 2048:
            assert n == sum(v <= b for v in values), b
        else:
            assert abs(n - sum(v <= b for v in values)) <= len(values) * 0.002, b
        for p in (50.0, 90.0, 99.0):
            rank = math.ceil(p / 100 * len(values))
            pct_ms = getattr(snap.summary, {50.0: "p50", 90.0: "p90", 99.0: "p99"}[p])
            assert (pct_ms * 1000 <= b) == (n >= rank), (b, p)
    assert counts[-1] == len(values)
    assert counts == sorted(counts)
    assert LatencyHistogram().freeze().cumulative_counts(bounds) == [0] * len(bounds)


def test_the_jobs_carry_the_prometheus_scrape_annotations_and_port() -> None:
    from sse_tui.cli_args import parse_args

    jobs = [doc for path in sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == "Job"]
    assert jobs
    for job in jobs:
        template = job["spec"]["template"]
        notes = template["metadata"]["annotations"]
        (c,) = template["spec"]["containers"]
        (port,) = [p for p in c["ports"] if p["name"] == "metrics"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == str(port["containerPort"])
        assert notes["prometheus.io/path"] == "/metrics"
        args = [a.replace("$(JOB_COMPLETION_INDEX)", "0").replace("$(JOB_UID)", "uid")
                for a in c["args"]]
        s = parse_args(args).settings
        assert s.metrics_port == port["containerPort"]
        assert s.metrics_address == "0.0.0.0"  # reachable from the scraper
        assert s.metrics_linger_s >= 30  # two scrape intervals: the final values get caught
        assert job["spec"]["activeDeadlineSeconds"] > s.duration_s + s.metrics_linger_s + 60
