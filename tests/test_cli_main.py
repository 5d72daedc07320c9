"""The `sse-tui` command as a user runs it: a real process, the real sandbox, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sse_tui.report import counters_dict
from sse_tui.snapshot import Counters

# Every counter of the Counters dataclass, as the JSON places it (tests/test_stats.py pins
# the order), plus the rest of the summary.
REQUIRED_JSON_KEYS = set(counters_dict(Counters(), {})) | {
    "settings", "elapsed_s", "latency_ms", "connect_ms", "first_token_ms", "itl_ms",
    "throughput", "phases", "self", "histograms",
}
DIST_KEYS = {"count", "min", "avg", "p50", "p90", "p99", "p999", "max"}


def sse_tui(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sse_tui", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize(("args", "needle"), [
    (["-c", "abc"], "-c"),
    (["-conversations", "0"], "conversations"),
    (["--duration", "5x"], "duration"),
    (["-mode", "sideways"], "mode"),
    (["--bogus"], "unknown flag"),
    (["-redis", "host:notaport"], "redis"),
    (["-sse", "ftp://x"], "SSE URL"),
])
def test_bad_input_is_one_line_exit_2_no_traceback(args: list[str], needle: str) -> None:
    r = sse_tui(*args, "--no-tui", timeout=20)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sse-tui: ") and needle in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_bad_toml_config_is_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("conversations = [\n")
    r = sse_tui("--config", str(cfg), "--no-tui", timeout=20)
    assert r.returncode == 2 and str(cfg) in r.stderr and "Traceback" not in r.stderr


def test_unreachable_redis_exits_nonzero_quickly() -> None:
    from sse_tui.sandbox.redis_server import free_port

    t0 = time.monotonic()
    r = sse_tui("-redis", f"127.0.0.1:{free_port()}", "-sse", "http://127.0.0.1:9",
                "--no-tui", "-duration", "5s", timeout=30)
    assert r.returncode == 1
    assert "cannot reach Redis" in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 15


def test_demo_headless_prints_the_summary_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    r = sse_tui("--demo", "--no-tui", "-c", "3", "-t", "15", "-d", "2", "-duration", "0",
                "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "=== Load Test Results ===" in r.stdout
    assert "Tokens Published:     45" in r.stdout and "Tokens Received:      45" in r.stdout
    data = json.loads(out.read_text())
    assert set(data) >= REQUIRED_JSON_KEYS
    for key in ("latency_ms", "connect_ms", "first_token_ms", "itl_ms"):
        assert set(data[key]) == DIST_KEYS
    assert data["tokens_received"] == data["tokens_published"] == 45
    assert data["tokens_missing"] == 0
    assert data["conversations"] == {"started": 3, "completed": 3, "incomplete": 0,
                                     "cut_short": 0}
    assert set(data["settings"]) >= {"mode", "redis", "sse", "conversations", "tokens",
                                     "delay_ms", "duration_s"}
    assert len(data["phases"]) == 1


def test_json_to_stdout_keeps_stdout_pure_json() -> None:
    r = sse_tui("--demo", "--no-tui", "-c", "2", "-t", "5", "-d", "1", "-duration", "0",
                "--json", "-")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["tokens_received"] == 10
    assert "=== Load Test Results ===" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_stops_cleanly_and_keeps_everything(tmp_path: Path,
                                                          sig: signal.Signals) -> None:
    out = tmp_path / "s.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_tui", "--demo", "--no-tui", "-c", "3", "-t", "100000",
         "-d", "5", "-duration", "60s", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        header = proc.stdout.readline()  # printed once the sandbox is up and the run starts
        assert header.startswith("sse-tui: both mode")
        time.sleep(1.5)  # deliberate: the run goes on a while (elapsed_s > 1) before the signal
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "=== Load Test Results ===" in stdout
    data = json.loads(out.read_text())
    assert data["tokens_received"] > 100
    assert data["tokens_received"] == data["tokens_published"]
    # 100000-token conversations: all three were still streaming when the signal came.
    assert data["conversations"] == {"started": 3, "completed": 0, "incomplete": 0,
                                     "cut_short": 3}
    assert data["tokens_missing"] == 0
    assert 1.0 < data["elapsed_s"] < 15


def test_sandbox_command_prints_addresses_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sse_tui", "sandbox"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        seen = ""
        deadline = time.monotonic() + 15
        while "--sse" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert "redis" in seen and "http://127.0.0.1:" in seen
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_merge_combines_pods_exactly(tmp_path: Path) -> None:
    from sse_tui.engine.stats import LatencyHistogram

    paths = []
    for i in range(2):
        out = tmp_path / f"pod{i}.json"
        r = sse_tui("--demo", "--no-tui", "-c", "2", "-t", str(10 + 5 * i), "-d", "1",
                    "-duration", "0", "--run-id", f"pod-{i}", "--json", str(out))
        assert r.returncode == 0, r.stderr
        paths.append(out)
    pods = [json.loads(p.read_text()) for p in paths]
    merged_path = tmp_path / "merged.json"
    r = sse_tui("merge", *map(str, paths), "--json", str(merged_path))
    assert r.returncode == 0, r.stderr
    assert "merged 2 summaries" in r.stdout
    merged = json.loads(merged_path.read_text())
    assert merged["tokens_received"] == 20 + 30
    assert merged["conversations"] == {"started": 4, "completed": 4, "incomplete": 0,
                                       "cut_short": 0}
    both = LatencyHistogram()
    for pod in pods:
        both.add(LatencyHistogram.decode(pod["histograms"]["latency"]))
    assert merged["latency_ms"] == both.freeze().summary.to_dict()
    assert merged["latency_ms"]["count"] == 50
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = sse_tui("merge", str(bad))
    assert r.returncode == 2 and "not an sse-tui --json summary" in r.stderr
