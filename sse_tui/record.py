"""`sse-tui record`: the timing of live traffic, for `--trace` to replay.

Subscribes to the token channels (`PSUBSCRIBE <prefix>*`, as the bridge does) of a live
system and writes, per conversation, when it started, how many tokens it had, the gaps
between them and whether it finished (see sse_tui.trace). Token text and conversation ids are
read to follow a conversation and are never written: a trace can leave the cluster.

Gaps come from the payloads' `timestamp` (the producer's clock, right before PUBLISH), so
they are the producer's spacing and not Redis' delivery jitter; a payload without one falls
back to the time it reached us.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from redis.exceptions import RedisError

from sse_tui.engine.redis_conn import auth_or_tls_problem, redis_client
from sse_tui.settings import Settings
from sse_tui.trace import TracedConversation, TraceWriter
from sse_tui.values import UsageError, check_channel_prefix, parse_duration

CONNECT_TIMEOUT_S = 5.0


@dataclass
class _Following:
    """One conversation being recorded."""

    start_s: float
    last_ns: int  # its last token's time (payload timestamp, or our receipt time)
    gaps_ms: list[float] = field(default_factory=list)


@dataclass
class RecordResult:
    conversations: int = 0  # written
    finished: int = 0  # of which their done: true was seen
    tokens: int = 0
    ignored: int = 0  # messages on the channels that were not token payloads


class Recorder:
    """Turns token messages into traced conversations (no I/O: fed by `record`, and tests)."""

    def __init__(self, writer: TraceWriter, t0_ns: int) -> None:
        self._writer = writer
        self._t0_ns = t0_ns
        self._live: dict[str, _Following] = {}
        self.result = RecordResult()

    def on_message(self, channel: str, data: bytes, received_ns: int) -> None:
        try:
            payload = orjson.loads(data)
            conversation_id = payload.get("conversation_id") or channel
            done = payload.get("done") is True
        except (orjson.JSONDecodeError, AttributeError):
            self.result.ignored += 1
            return
        ts = payload.get("timestamp")
        at_ns = ts if isinstance(ts, int) and not isinstance(ts, bool) else received_ns
        self.result.tokens += 1
        conv = self._live.get(conversation_id)
        if conv is None:
            conv = self._live[conversation_id] = _Following(
                start_s=max(0.0, (received_ns - self._t0_ns) / 1e9), last_ns=at_ns)
        else:
            conv.gaps_ms.append(max(0.0, (at_ns - conv.last_ns) / 1e6))
            conv.last_ns = at_ns
        if done:
            del self._live[conversation_id]
            self._write(conv, done=True)

    def finish(self) -> RecordResult:
        """The recording ends: conversations still going are written as unfinished."""
        for conv in self._live.values():
            self._write(conv, done=False)
        self._live.clear()
        return self.result

    def _write(self, conv: _Following, *, done: bool) -> None:
        self._writer.write(TracedConversation(conv.start_s, tuple(conv.gaps_ms), done))
        self.result.conversations += 1
        self.result.finished += done


async def record(settings: Settings, out: str, duration_s: float) -> RecordResult:
    client = redis_client(settings, connect_timeout_s=CONNECT_TIMEOUT_S)
    pubsub = client.pubsub()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await pubsub.psubscribe(settings.channel_prefix + "*")
        except (RedisError, OSError) as e:
            why = auth_or_tls_problem(e) or f"{type(e).__name__}: {e}"
            raise UsageError(f"record: cannot subscribe at redis {settings.shown('redis')}: "
                             f"{why}") from None
        t0_ns = time.time_ns()
        writer = TraceWriter(out, {
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": duration_s, "channel_prefix": settings.channel_prefix})
        recorder = Recorder(writer, t0_ns)
        deadline = loop.time() + duration_s
        try:
            while not stop.is_set() and loop.time() < deadline:
                msg = await pubsub.get_message(ignore_subscribe_messages=True,
                                               timeout=min(0.5, deadline - loop.time()))
                if msg is not None and msg["type"] == "pmessage":
                    channel = msg["channel"]
                    recorder.on_message(
                        channel.decode() if isinstance(channel, bytes) else str(channel),
                        msg["data"], time.time_ns())
        except (RedisError, OSError) as e:
            print(f"sse-tui record: redis went away ({type(e).__name__}); "
                  "keeping what was recorded", file=sys.stderr)
        result = recorder.finish()
        writer.close()
        return result
    finally:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"record: {message}; see sse-tui record --help")


def main(argv: Sequence[str]) -> int:
    p = _Parser(
        prog="sse-tui record",
        description="Record the timing of live token traffic for --trace to replay: per "
                    "conversation its start, token count, inter-token gaps and whether it "
                    "finished. Token text and conversation ids are never written.")
    p.add_argument("-r", "--redis", default="localhost:6379",
                   help="Redis address or URL (default: localhost:6379)")
    p.add_argument("--channel-prefix", default="llm:tokens:",
                   help="token channels to follow (default: llm:tokens:)")
    p.add_argument("--duration", default="1m", help="how long to record (default: 1m)")
    p.add_argument("--out", required=True, metavar="TRACE.jsonl|-",
                   help="where to write the trace (- for stdout); the file is made 0600")
    p.add_argument("--redis-password-file", default="", metavar="FILE",
                   help="read the Redis password from FILE (else REDIS_PASSWORD, or the URL)")
    args = p.parse_args(argv)
    duration_s = parse_duration(args.duration)
    if duration_s <= 0:
        raise UsageError("record: --duration must be above 0, e.g. --duration 10m")
    settings = Settings(redis=args.redis, channel_prefix=check_channel_prefix(
        args.channel_prefix), redis_password_file=args.redis_password_file).validated()
    try:
        result = asyncio.run(record(settings, args.out, duration_s))
    except ValueError as e:  # the password file cannot be read
        raise UsageError(f"record: {e}") from None
    print(f"sse-tui record: {result.conversations} conversations ({result.finished} finished), "
          f"{result.tokens} tokens -> {args.out}", file=sys.stderr)
    if result.ignored:
        print(f"sse-tui record: {result.ignored} messages on the channels were not token "
              "payloads and were skipped", file=sys.stderr)
    return 0
