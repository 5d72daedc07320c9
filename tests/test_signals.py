"""Headless runs and the usual operational accidents: real signals to a real `sse-tui`
process, a real pipe closed early, absurd sizes. Each must end with the summary printed (where
it can be) and the JSON written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sse_tui.sandbox import FaultConfig, Sandbox
from sse_tui.sandbox.redis_server import RedisServer
from tests.conftest import adapter_took, wait_until

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sse_tui", "--no-tui", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=ENV)


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def against(sb: Sandbox, run_id: str) -> list[str]:
    return ["-redis", sb.redis_address, "-sse", sb.sse_url, "--run-id", run_id]


@pytest.fixture(scope="module")
def lossy() -> Iterator[Sandbox]:
    """A stack that drops tokens, so that readers never catch up and the grace period runs
    to its end unless it is skipped."""
    with Sandbox(faults=FaultConfig(drop_rate=0.3, seed=4)) as sb:
        yield sb


def test_sighup_stops_like_sigterm_with_summary_and_json(sandbox: Sandbox,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    proc = start(*against(sandbox, "hup"), "-c", "3", "-t", "100000", "-d", "5",
                 "-duration", "60s", "--json", str(out))
    try:
        wait_until(adapter_took(sandbox, "loadtest-hup-1", 20), what="tokens flowing")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGHUP)  # what a dropped ssh / kubectl exec session sends
        stdout, stderr = finish(proc, timeout=20)
    finally:
        finish(proc, timeout=1)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - t0 < 10
    assert "Traceback" not in stderr and "stopping:" in stderr
    assert "=== Load Test Results ===" in stdout
    data = json.loads(out.read_text())
    assert data["tokens_received"] == data["tokens_published"] > 20
    assert data["conversations"]["cut_short"] == 3


def test_a_reader_that_goes_away_does_not_cost_the_json(sandbox: Sandbox,
                                                        tmp_path: Path) -> None:
    """`sse-tui … | head -1`: head reads the banner's first line and exits; every later line
    meets a closed pipe (EPIPE), and the run still ends normally and writes its JSON."""
    out = tmp_path / "s.json"
    cmd = " ".join([sys.executable, "-m", "sse_tui", "--no-tui", *against(sandbox, "head"),
                    "-c", "2", "-t", "400", "-d", "2", "-duration", "1500ms",
                    "--json", str(out)])
    r = subprocess.run(["bash", "-c", f'{cmd} | head -1; echo "status=${{PIPESTATUS[0]}}" >&2'],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.stdout.startswith("sse-tui: both mode") and r.stdout.count("\n") == 1
    assert r.stderr.strip().splitlines()[-1] == "status=0", r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    data = json.loads(out.read_text())
    assert data["tokens_received"] == data["tokens_published"] > 100


def test_a_second_sigint_skips_the_grace(lossy: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    proc = start(*against(lossy, "int2"), "-c", "3", "-t", "100000", "-d", "5",
                 "-duration", "60s", "--grace", "60s", "--json", str(out))
    try:
        wait_until(adapter_took(lossy, "loadtest-int2-1", 20), what="tokens flowing")
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        # The first one starts the 60 s grace (tokens were dropped: readers never catch up).
        assert proc.stderr.readline().startswith("stopping: waiting for in-flight tokens")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = finish(proc, timeout=20)
    finally:
        finish(proc, timeout=1)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - t0 < 10  # not the 60 s grace
    assert "=== Load Test Results ===" in stdout and "Traceback" not in stderr
    assert json.loads(out.read_text())["tokens_missing"] > 0


def test_absurd_sizes_are_refused_at_once() -> None:
    r = subprocess.run([sys.executable, "-m", "sse_tui", "--no-tui", "-c", "10000000"],
                       capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "more conversations than one generator process" in lines[0]


def test_sigterm_while_200000_conversations_open(tmp_path: Path) -> None:
    """The conversations open in batches that yield, so the signal is served at once."""
    out = tmp_path / "s.json"
    with RedisServer() as redis:
        proc = start("-m", "producer", "-redis", redis.address, "-c", "200000", "-t", "50",
                     "-d", "50", "-duration", "60s", "--json", str(out))
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("sse-tui: producer mode")
            time.sleep(1.0)  # the stimulus: a signal about 1 s into opening them
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = finish(proc, timeout=30)
        finally:
            finish(proc, timeout=1)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - t0 < 6
    assert "=== Load Test Results ===" in stdout and "Traceback" not in stderr
    data = json.loads(out.read_text())
    assert 0 < data["conversations"]["started"] <= 200000
    assert data["tokens_published"] > 0
