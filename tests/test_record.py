"""`sse-tui record`: a trace of real traffic's timing, never its text; and trace files.

The recording test records a real sse-tui run through the sandbox's redis-server, in
subprocesses as a user runs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from sse_tui.engine.producer import _WORDS
from sse_tui.sandbox import Sandbox
from sse_tui.trace import TracedConversation, load_trace
from sse_tui.values import UsageError
from tests.conftest import wait_until


def _patterns(sb: Sandbox) -> int:
    """Clients with a pattern subscription (PUBSUB NUMPAT counts patterns, and the adapter
    already has ours)."""
    client = redis.Redis.from_url(sb.redis_url)
    try:
        return sum(1 for c in client.client_list() if int(c.get("psub", 0)) > 0)
    finally:
        client.close()


def test_record_writes_each_conversations_timing_and_no_text(
        sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    before = _patterns(sandbox)
    recorder = subprocess.Popen(
        [sys.executable, "-m", "sse_tui", "record", "-r", sandbox.redis_address,
         "--duration", "60s", "--out", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _patterns(sandbox) > before, what="the recorder's PSUBSCRIBE")
        run = subprocess.run(
            [sys.executable, "-m", "sse_tui", "--no-tui", "--redis", sandbox.redis_address,
             "--sse", sandbox.sse_url, "-c", "4", "-t", "12", "-d", "20", "--duration", "0",
             "--run-id", "recorded-run"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert run.returncode == 0, run.stderr
        recorder.send_signal(signal.SIGINT)  # Ctrl-C ends a recording and keeps it
        _, err = recorder.communicate(timeout=20)
    finally:
        if recorder.poll() is None:
            recorder.kill()
    assert recorder.returncode == 0, err
    assert "4 conversations (4 finished), 48 tokens" in err
    assert os.stat(out).st_mode & 0o777 == 0o600
    text = out.read_text(encoding="utf-8")
    # Timing only: no token text, no conversation ids, no run id. Every line after the
    # header holds numbers and a flag under these four keys, nothing else.
    header, *lines = [json.loads(line) for line in text.splitlines()]
    assert set(header) == {"sse_tui_trace", "recorded_at", "duration_s", "channel_prefix"}
    for line in lines:
        assert set(line) == {"start_s", "tokens", "gaps_ms", "done"}
        assert not any(isinstance(v, str) for v in line.values())
    assert "recorded-run" not in text
    assert not any(w.strip() in text for w in _WORDS if len(w.strip()) > 3 and w != " tokens")
    trace = load_trace(out)
    assert len(trace.conversations) == 4
    gaps = sorted(g for conv in trace.conversations for g in conv.gaps_ms)
    for conv in trace.conversations:
        assert conv.done and conv.tokens == 12
    # -d 20 with the reference jitter: gaps in [20, 30] ms, give or take the 1 ms the
    # publisher coalesces tokens by. They are real publish times, so a busy machine moves a
    # few (a late token's gap grows, the next one's shrinks: the schedule is absolute).
    assert 20 <= gaps[len(gaps) // 2] <= 30, gaps
    assert sum(18.5 <= g <= 31.5 for g in gaps) >= 0.9 * len(gaps), gaps
    assert max(c.start_s for c in trace.conversations) - min(
        c.start_s for c in trace.conversations) < 1.0  # one round: all began together


def test_an_unfinished_conversation_is_kept_as_unfinished(tmp_path: Path) -> None:
    from sse_tui.record import Recorder
    from sse_tui.trace import TraceWriter

    out = tmp_path / "t.jsonl"
    writer = TraceWriter(str(out), {"duration_s": 1})
    rec = Recorder(writer, t0_ns=1_000_000_000)
    ms = 1_000_000
    for seq, at in ((1, 1500), (2, 1510), (3, 1530)):
        rec.on_message("llm:tokens:a", json.dumps({
            "conversation_id": "a", "token": "x", "sequence": seq, "done": False,
            "timestamp": at * ms}).encode(), at * ms)
    rec.on_message("llm:tokens:b", b"not json", 1600 * ms)
    result = rec.finish()
    writer.close()
    assert (result.conversations, result.finished, result.tokens, result.ignored) == (1, 0, 3, 1)
    (conv,) = load_trace(out).conversations
    assert conv == TracedConversation(start_s=0.5, gaps_ms=(10.0, 20.0), done=False)


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty"),
    ("{}\n", "no trace header"),
    ('{"sse_tui_trace": 1}\n', "holds no conversations"),
    ('{"sse_tui_trace": 1}\n{"start_s": 0, "gaps_ms": [1, -2]}\n', ":2: gaps_ms must be"),
    ('{"sse_tui_trace": 1}\n{"start_s": 0, "tokens": 5, "gaps_ms": [1]}\n',
     "tokens is 5 but gaps_ms has 1 gaps"),
    ('{"sse_tui_trace": 1}\nnope\n', ":2: not JSON"),
])
def test_a_bad_trace_is_one_line_naming_the_file(
        tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=message) as info:
        load_trace(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_record_refuses_bad_input_in_one_line() -> None:
    for args, message in ((["--duration", "0", "--out", "x"], "--duration must be above 0"),
                          (["--duration", "1m"], "the following arguments are required: --out"),
                          (["--channel-prefix", "a*", "--out", "x"], "invalid channel prefix")):
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "sse_tui", "record", *args],
                              capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert time.monotonic() - started < 30
