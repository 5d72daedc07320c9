"""Shaped load through the real engine: distributions, the prefill delay, seeds, presets and
the record -> replay round trip, as users run them (subprocesses against the sandbox)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sse_tui.cli_args import parse_args
from sse_tui.distributions import SHAPES, ShapedFloat, ShapedInt
from sse_tui.sandbox import Sandbox
from sse_tui.trace import Trace, load_trace
from tests.conftest import wait_until
from tests.test_record import _patterns


def run(sb: Sandbox, tmp_path: Path, *args: str, name: str = "out") -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sse_tui", "--no-tui", "--redis", sb.redis_address,
         "--sse", sb.sse_url, "--json", str(out), *args],
        capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def test_the_first_token_waits_for_the_requested_prefill(sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    summary = run(sandbox, tmp_path, "-c", "8", "-t", "3", "-d", "5", "--duration", "0",
                  "--first-token-delay", "300")
    first = summary["first_token_ms"]
    assert first["count"] == 8
    # From the stream's opening to its first token: the 300 ms prefill, plus delivery.
    assert first["min"] >= 300 and first["max"] < 400, first
    assert summary["tokens_missing"] == 0


def test_lengths_are_drawn_per_conversation_and_the_seed_repeats_them(
        sandbox: Sandbox, tmp_path: Path) -> None:
    args = ("-c", "30", "-t", "2..40", "-d", "2", "--duration", "0")
    a = run(sandbox, tmp_path, *args, "--seed", "11", name="a")
    b = run(sandbox, tmp_path, *args, "--seed", "11", name="b")
    c = run(sandbox, tmp_path, *args, "--seed", "12", name="c")
    # Every conversation published its own length in full: the published total is the sum.
    assert a["tokens_published"] == a["tokens_received"] and a["tokens_missing"] == 0
    assert a["settings"]["distributions"]["tokens"]["text"] == "2..40"
    assert a["settings"]["tokens"] == 21  # the number is the mean, as the JSON always had
    assert a["tokens_published"] == b["tokens_published"]
    assert a["conversation_lengths"] == b["conversation_lengths"]
    assert a["tokens_published"] != c["tokens_published"]  # 30 draws: equal by chance ~1%
    assert sum(a["conversation_lengths"].values()) == 30
    assert len(a["conversation_lengths"]) >= 3  # spread over 2..40, not one length


def test_a_preset_fills_only_what_was_not_given() -> None:
    options = parse_args(["--shape", "chat", "-t", "80"])
    s = options.settings
    assert s.tokens == 80 and not isinstance(s.tokens, ShapedInt)
    assert isinstance(s.delay_ms, ShapedFloat)
    assert str(s.delay_ms) == SHAPES["chat"].delay_ms
    assert str(s.first_token_delay_ms) == SHAPES["chat"].first_token_delay_ms
    # Saved as TOML, a shaped value is its text; loaded back, the same distribution.
    saved = s.to_toml_dict()
    assert saved["delay"] == SHAPES["chat"].delay_ms and saved["tokens"] == 80


@pytest.mark.parametrize(("argv", "message"), [
    (["-t", "40..2"], "runs backwards"),
    (["-d", "gauss:3"], "unknown distribution 'gauss'"),
    (["--shape", "huge"], "not a known shape"),
    (["--speed", "0"], "not a speed above 0"),
])
def test_bad_shapes_are_one_line_and_exit_2(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "sse_tui", "--no-tui", *argv],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def record_while(sb: Sandbox, out: Path, play: list[str], tmp_path: Path) -> Trace:
    """Record the token channels while sse-tui plays `play` against the sandbox."""
    before = _patterns(sb)
    recorder = subprocess.Popen(
        [sys.executable, "-m", "sse_tui", "record", "-r", sb.redis_address,
         "--duration", "60s", "--out", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _patterns(sb) > before, what="the recorder's PSUBSCRIBE")
        summary = run(sb, tmp_path, *play, name=out.stem)
        assert summary["tokens_missing"] == 0
        recorder.send_signal(signal.SIGINT)
        _, err = recorder.communicate(timeout=20)
    finally:
        if recorder.poll() is None:
            recorder.kill()
    assert recorder.returncode == 0, err
    return load_trace(out)


def test_a_recorded_run_replays_with_the_same_lengths_and_gaps(
        sandbox: Sandbox, tmp_path: Path) -> None:
    original = record_while(
        sandbox, tmp_path / "original.jsonl",
        ["-c", "6", "-t", "3..25", "-d", "exp:20,min=5", "--duration", "0", "--seed", "4"],
        tmp_path)
    replayed = record_while(
        sandbox, tmp_path / "replayed.jsonl",
        ["--trace", str(tmp_path / "original.jsonl"), "--run-id", "replay"], tmp_path)
    assert len(original.conversations) == len(replayed.conversations) == 6
    assert all(c.done for c in replayed.conversations)
    # Same lengths, each conversation's gaps within a few ms of the recorded ones. They are
    # matched by length and gaps, not by start: conversations that start together may be
    # recorded in either order.
    remaining = list(replayed.conversations)
    for want in sorted(original.conversations, key=lambda c: (c.tokens, c.gaps_ms)):
        match = min((c for c in remaining if c.tokens == want.tokens),
                    key=lambda c: max(abs(a - b) for a, b in zip(c.gaps_ms, want.gaps_ms,
                                                                 strict=True)) if want.gaps_ms
                    else 0.0)
        remaining.remove(match)
        worst = max((abs(a - b) for a, b in zip(match.gaps_ms, want.gaps_ms, strict=True)),
                    default=0.0)
        assert worst < 4.0, (want.gaps_ms, match.gaps_ms)


async def test_a_replay_keeps_the_traces_starts_at_its_speed_and_loops() -> None:
    import asyncio

    from sse_tui.engine.replay import TraceReplay
    from sse_tui.trace import TracedConversation

    trace = Trace({}, (TracedConversation(0.0, (100.0,)), TracedConversation(0.2, ()),
                       TracedConversation(0.4, (50.0, 50.0))))
    assert trace.length_s == pytest.approx(0.5)
    loop = asyncio.get_running_loop()
    seen: list[float] = []
    replay = TraceReplay(trace, lambda c: seen.append(loop.time()), speed=2.0, loop=True)
    t0 = loop.time()
    replay.start()
    try:
        await asyncio.wait_for(_until_len(seen, 5), timeout=5)
    finally:
        replay.stop()
    offsets = [t - t0 for t in seen[:5]]
    # At twice the speed: 0, 0.1, 0.2; the second pass one trace length (0.25 s) later.
    for got, want in zip(offsets, (0.0, 0.1, 0.2, 0.25, 0.35), strict=True):
        assert want <= got < want + 0.03, offsets
    assert replay.passes == 1 and not replay.finished


async def _until_len(items: list[float], n: int) -> None:
    import asyncio

    while len(items) < n:
        await asyncio.sleep(0.005)
