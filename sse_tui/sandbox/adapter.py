"""Reference SSE adapter: Redis pub/sub in, ``GET /stream/<id>`` Server-Sent Events out.

Run as ``python -m sse_tui.sandbox.adapter --redis URL [--port 0] ...``; once it listens it
prints exactly one line, ``LISTENING http://<host>:<port>`` (https:// with ``--tls-cert``), to
stdout.

It speaks the wire contract of docs/protocol.md, like the deployed adapter, except
that ``Last-Event-ID`` resume is correct (unless ``--resume-skip-bug``): every token of a
conversation goes into a bounded history (``--history-size`` tokens, forgotten
``--history-ttl`` s after its done token or ``--idle-ttl`` s after the last activity,
once nobody is streaming it), and a resumed stream first gets every token with
sequence > Last-Event-ID from history, then live ones: no loss, no duplicates. A stream
opened without Last-Event-ID gets live tokens only, as with plain pub/sub.

One pattern subscription (``<prefix>*``) feeds all streams. A token's SSE event, already
framed as an HTTP chunk, is built once when it arrives from Redis and written to every
stream as is (one ``transport.write`` per event; the payload is never re-encoded).

Fault injection (deterministic: each stream draws from ``Random(f"{seed}:{id}:{n}")``,
n = how many streams of that conversation were opened before it). Faults apply per
stream, to the tokens in the order that stream is offered them (history replay, then
live), after the Last-Event-ID filter. Each non-done token gets exactly one fate, checked
in this order, and each fate is counted once in ``/stats``:

- resume_skipped (``--resume-skip-bug``): on a stream opened with Last-Event-ID L, token
  L+1 is not sent (the deployed adapter's bug). One per resumed stream, when L+1 arrives
  (never when L+1 is the done token).
- reorder partner: if a token is being held back (below), this token is sent, then the
  held one; ``reordered`` +1. The partner itself gets no other fault.
- dropped (``--drop-rate``): not sent. A dropped or resume-skipped sequence is recorded as
  lost for the conversation and no resume replays it, whatever its Last-Event-ID (normally
  a later token was already sent on the stream anyway): the client sees it missing, once.
- reordered (``--reorder-rate``): held back and sent right after the next token (k+1, k):
  the client sees one out-of-order token. Not done when the pair would reach the
  ``--disconnect-after`` count, so a stream never ends on a held-back or late token and
  its last event id is always its highest sequence.
- duplicated (``--dup-rate``): sent twice, back to back.
- otherwise sent once.

Three more fates reproduce the loss shapes of the real chain (docs/loss.md), each recorded
as lost for the conversation (so no resume replays it) and counted in ``/stats``; they are
checked first, right after resume_skipped:

- first_lost (``--first-loss-rate``): a fresh stream (no Last-Event-ID) draws once whether
  it loses the first token it is offered (the real adapter says ``: connected`` before its
  NATS interest is in place).
- gap_dropped (``--gap N``): a fresh stream loses N tokens in one run, from the 3rd token it
  is offered (a bridge restart); the run stops short of the done token.
- tail_withheld (``--tail-after N``): once a stream has sent N tokens it sends no more token,
  the done token included, and stays open (a stream broken upstream); each withheld token is
  counted, none is recorded as lost (a resume gets them).

The done token is never faulted: a held-back token is flushed in order before it (not a
reorder), then done is sent, always as the last event, and the response ends.

``--disconnect-after N``: after N distinct tokens have been sent on a stream (a duplicate
counts once, dropped/skipped ones not at all), the response is ended cleanly (terminating
chunk, no done token) and ``disconnects`` +1; a client resuming with the last id it got
receives the rest from history. Every stream, resumed ones included, counts afresh.

``--delay-ms X`` holds each token (done included) X ms before it enters the fault
pipeline; order is kept. It is latency, not a fault, so it is not counted.
``--overload-streams N --overload-delay-ms Y``: a load-dependent delay (for capacity
searches): while more than N streams are open on the adapter, each token offered to a
stream is held Y ms more (on top of ``--delay-ms``); order is kept. Not counted either.

``--nats URL`` (the full topology, docs/topology.md): tokens come from NATS instead of Redis,
as in the real system. The first stream of a conversation subscribes to its subject
``chat.<id>.tokens``, and says ``: connected`` only once the server has the subscription
(a flush round trip), so no token is lost to a slow subscribe; the subscription is kept
while the conversation is (resumes need no new one) and dropped when it is forgotten.
``--interest-delay-ms N`` plays the real system's race instead: a new subscription becomes
active only N ms after it was made (interest propagating late from a leaf to the core), so
the first tokens published after ``: connected`` are lost; each is counted
``interest_lost``. (``--bridge-drop-rate`` and ``--bridge-delay-ms`` are the bridge's faults,
taken here only because every FaultConfig field is a flag; see ``sse_tui.sandbox.bridge``.)

``/stats``: ``{"connections_total", "connections_active", "delivered", "injected":
{"dropped", "duplicated", "reordered", "disconnects", "resume_skipped", "first_lost",
"gap_dropped", "tail_withheld"}, "per_conversation":
{id: {the first four keys}}, "invalid_messages", "interest_lost"}`` (the last run-wide
only), where ``delivered`` counts token events written (both copies of a duplicate) and
connections are ``/stream`` requests.
So a client that reads every stream to its done token observes: missing = dropped +
resume_skipped + first_lost + gap_dropped (and tail_withheld, which it waits for in vain),
duplicates = duplicated, out-of-order = reordered, ended-without-done =
disconnects, received token events = delivered. (Counting out-of-order as "below the highest
sequence seen, first receipt"; a duplicate as "a sequence seen before".) The one way to break
the equality is a client that hangs up by itself after reading k+1 of a reordered pair but
before k, then resumes from k+1: k is then missing yet counted as reordered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import random
import signal
import ssl
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import unquote

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sse_tui.sandbox.stack import FaultConfig

log = logging.getLogger("sse_tui.sandbox.adapter")


async def follow_pattern(redis_url: str, pattern: str,
                         deliver: Callable[[Any, Any], Awaitable[None] | None],
                         subscribed: asyncio.Event, logger: logging.Logger) -> None:
    """PSUBSCRIBE `pattern` and hand each message's (channel, data) to `deliver` (awaited if
    it returns an awaitable), forever: a lost connection is retried with backoff, as the
    real bridge and adapter do. Fails fast (RuntimeError) if the first subscribe fails."""
    backoff = 0.1
    while True:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub()
        try:
            await pubsub.psubscribe(pattern)
            async for message in pubsub.listen():
                kind = message["type"]
                if kind == "pmessage":
                    pending = deliver(message["channel"], message["data"])
                    if pending is not None:
                        await pending
                elif kind == "psubscribe":
                    subscribed.set()
                    backoff = 0.1
        except (RedisError, OSError) as exc:
            if not subscribed.is_set() and backoff > 0.5:  # fail fast at start
                raise RuntimeError(f"cannot subscribe to {redis_url}: {exc}") from exc
            logger.warning("redis subscription lost (%s); reconnecting", exc)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
                await client.aclose()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 5.0)

_MAX_REQUEST_HEAD = 16 * 1024
# A client this far behind is not reading; the deployed adapter drops tokens, we hang up.
_WRITE_BUFFER_HIGH = 32 * 1024 * 1024
_PER_CONVERSATION_STATS_CAP = 100_000
_SWEEP_INTERVAL_S = 2.0

_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Connection: close\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


_KEEPALIVE_CHUNK = chunk(b": keep-alive\n\n")


def token_event(sequence: int, payload: bytes) -> bytes:
    """The SSE event for one token, framed as a chunk, payload bytes untouched."""
    if b"\n" in payload or b"\r" in payload:
        # Pretty-printed JSON: one data line per line, which the client joins back with \n.
        data = b"".join(b"data: %b\n" % line for line in payload.splitlines())
    else:
        data = b"data: %b\n" % payload
    return chunk(b"event: token\nid: %d\n%b\n" % (sequence, data))


# A token as stored and fanned out: (sequence, done, chunk-framed SSE event).
Token = tuple[int, bool, bytes]


# --- counters ----------------------------------------------------------------------------------


class Counters:
    """Deliveries and injected faults, overall or for one conversation."""

    __slots__ = (
        "connections_active",
        "connections_total",
        "delivered",
        "disconnects",
        "dropped",
        "duplicated",
        "first_lost",
        "from_redis",
        "gap_dropped",
        "interest_lost",
        "reordered",
        "resume_skipped",
        "tail_withheld",
    )

    def __init__(self) -> None:
        self.connections_total = 0
        self.connections_active = 0
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0
        self.reordered = 0
        self.disconnects = 0
        self.resume_skipped = 0
        self.first_lost = 0
        self.gap_dropped = 0
        self.tail_withheld = 0
        self.interest_lost = 0  # --interest-delay-ms: arrived before the interest was active
        # Tokens taken from Redis (from NATS with --nats): a test waits on it instead of
        # sleeping "long enough".
        self.from_redis = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections_total": self.connections_total,
            "connections_active": self.connections_active,
            "delivered": self.delivered,
            "from_redis": self.from_redis,
            "injected": {
                "dropped": self.dropped,
                "duplicated": self.duplicated,
                "reordered": self.reordered,
                "disconnects": self.disconnects,
                "resume_skipped": self.resume_skipped,
                "first_lost": self.first_lost,
                "gap_dropped": self.gap_dropped,
                "tail_withheld": self.tail_withheld,
            },
        }


class Stats:
    def __init__(self) -> None:
        self.total = Counters()
        self.per_conversation: dict[str, Counters] = {}
        self.invalid_messages = 0

    def conversation(self, conversation_id: str) -> Counters:
        counters = self.per_conversation.get(conversation_id)
        if counters is None:
            if len(self.per_conversation) >= _PER_CONVERSATION_STATS_CAP:
                self._evict_one()
            counters = self.per_conversation[conversation_id] = Counters()
        return counters

    def _evict_one(self) -> None:
        # Oldest first (dict order); never one with a live stream, whose counters are in use.
        for key, counters in self.per_conversation.items():
            if counters.connections_active == 0:
                del self.per_conversation[key]
                return

    def as_dict(self) -> dict[str, Any]:
        result = self.total.as_dict()
        result["per_conversation"] = {k: c.as_dict() for k, c in self.per_conversation.items()}
        result["invalid_messages"] = self.invalid_messages
        # Lost before any stream was offered it: a fault of the NATS hop (--nats); run-wide.
        result["interest_lost"] = self.total.interest_lost
        return result


# --- conversations -----------------------------------------------------------------------------


class ConversationHistory:
    """One conversation as the adapter holds it: recent tokens (for resumes) and its readers."""

    __slots__ = ("done_at", "history", "id", "interest", "interest_at", "last_activity", "lost",
                 "subscribers")

    def __init__(self, conversation_id: str, history_size: int, now: float) -> None:
        self.id = conversation_id
        self.history: deque[Token] = deque(maxlen=history_size)
        self.subscribers: set[StreamSession] = set()
        # Sequences dropped or skipped by a fault: a resume never replays them, even one the
        # client started on its own before a later token reached it, so each stays missing.
        self.lost: set[int] = set()
        self.done_at: float | None = None
        self.last_activity = now
        # --nats: its subscription (a future of it while it is being made), and the loop
        # time from which it delivers (--interest-delay-ms).
        self.interest: asyncio.Future[Any] | None = None
        self.interest_at = 0.0


@dataclass
class HubConfig:
    channel_prefix: str = "llm:tokens:"
    history_size: int = 10_000
    history_ttl_s: float = 30.0
    idle_ttl_s: float = 600.0


class Hub:
    """Conversations by id: their history and the streams that read them."""

    def __init__(self, config: HubConfig, stats: Stats, loop: asyncio.AbstractEventLoop):
        self.config = config
        self.stats = stats
        self.loop = loop
        self.conversations: dict[str, ConversationHistory] = {}
        self._prefix_len = len(config.channel_prefix.encode())
        # --nats: called for a forgotten conversation, to drop its subscription.
        self.on_forget: Callable[[ConversationHistory], None] | None = None

    def get(self, conversation_id: str) -> ConversationHistory:
        conv = self.conversations.get(conversation_id)
        if conv is None:
            conv = ConversationHistory(conversation_id, self.config.history_size, self.loop.time())
            self.conversations[conversation_id] = conv
        return conv

    def dispatch(self, channel: bytes, payload: bytes) -> None:
        """One message from Redis: record it and hand it to every stream of its conversation."""
        self.dispatch_to(channel[self._prefix_len :].decode("utf-8", "replace"), payload)

    def dispatch_to(self, conversation_id: str, payload: bytes) -> None:
        """One message of a conversation (from Redis, or its NATS subject)."""
        try:
            doc = orjson.loads(payload)
            sequence = int(doc["sequence"])
            done = doc.get("done") is True
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            self.stats.invalid_messages += 1
            return
        conv = self.get(conversation_id)
        if conv.interest_at and self.loop.time() < conv.interest_at:
            # --interest-delay-ms: the subscription is not active yet; the token is lost.
            self.stats.total.interest_lost += 1
            return
        self.stats.total.from_redis += 1
        self.stats.conversation(conversation_id).from_redis += 1
        token: Token = (sequence, done, token_event(sequence, payload))
        conv.history.append(token)
        conv.last_activity = now = self.loop.time()
        conv.done_at = now if done else None
        if conv.subscribers:
            # Copy: a stream that ends on this token leaves the set while we iterate.
            for session in tuple(conv.subscribers):
                session.offer(token)

    def sweep(self) -> None:
        """Forget finished or idle conversations nobody is streaming."""
        now = self.loop.time()
        cfg = self.config
        stale = [
            cid
            for cid, conv in self.conversations.items()
            if not conv.subscribers
            and (
                (conv.done_at is not None and now - conv.done_at > cfg.history_ttl_s)
                or now - conv.last_activity > cfg.idle_ttl_s
            )
        ]
        for cid in stale:
            conv = self.conversations.pop(cid)
            if conv.interest is not None and self.on_forget is not None:
                self.on_forget(conv)


# --- one SSE stream ----------------------------------------------------------------------------


class StreamSession:
    """One ``GET /stream/<id>`` response: replay, live tokens, faults, keep-alives."""

    def __init__(
        self,
        transport: asyncio.Transport,
        conv: ConversationHistory,
        counters: Counters,
        total: Counters,
        faults: FaultConfig,
        keepalive_s: float,
        last_event_id: int | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.transport = transport
        self.conv = conv
        self.counters = counters
        self.total = total
        self.faults = faults
        self.keepalive_s = keepalive_s
        self.loop = loop
        self.floor = last_event_id if last_event_id is not None else 0
        self.skip_sequence = (
            last_event_id + 1 if last_event_id is not None and faults.resume_skip_bug else None
        )
        self.rng = random.Random(f"{faults.seed}:{conv.id}:{counters.connections_total}")
        self.delay_s = faults.delay_ms / 1000.0
        self.overload_delay_s = faults.overload_delay_ms / 1000.0
        self.tokens_sent = 0  # distinct tokens, for --disconnect-after
        self.held: Token | None = None
        self.pending: deque[tuple[float, Token]] = deque()
        self.delay_timer: asyncio.TimerHandle | None = None
        self.keepalive_timer: asyncio.TimerHandle | None = None
        self.last_write = loop.time()
        self.closed = False
        self.resuming = last_event_id is not None
        self.offered = 0  # non-done tokens offered to the fault pipeline
        # Drawn only when the fault is on, so the other faults' draws stay as they were.
        self.lose_first = (not self.resuming and faults.first_loss_rate > 0
                           and self.rng.random() < faults.first_loss_rate)
        self.gap_left = faults.gap if not self.resuming else 0

    def start(self) -> None:
        """Register, then say connected, then replay; all synchronous, so nothing slips between."""
        for c in (self.counters, self.total):
            c.connections_total += 1
            c.connections_active += 1
        self.conv.subscribers.add(self)
        self.transport.write(_STREAM_HEAD + chunk(b": connected to %b\n\n" % self.conv.id.encode()))
        self.last_write = self.loop.time()
        if self.resuming:
            for token in tuple(self.conv.history):
                if token[0] > self.floor and token[0] not in self.conv.lost:
                    self.offer(token)
        if not self.closed:
            self._arm_keepalive()

    def offer(self, token: Token) -> None:
        delay_s = self.delay_s
        if self.overload_delay_s and self.total.connections_active > self.faults.overload_streams:
            delay_s += self.overload_delay_s
        if delay_s or self.pending:
            # Never due before a token offered earlier (held longer while overloaded): the
            # order is kept.
            due = self.loop.time() + delay_s
            if self.pending and due < self.pending[-1][0]:
                due = self.pending[-1][0]
            self.pending.append((due, token))
            if self.delay_timer is None:
                self.delay_timer = self.loop.call_at(self.pending[0][0], self._release_delayed)
        else:
            self._process(token)

    def _release_delayed(self) -> None:
        self.delay_timer = None
        now = self.loop.time()
        while self.pending and self.pending[0][0] <= now and not self.closed:
            self._process(self.pending.popleft()[1])
        if self.pending and not self.closed:
            self.delay_timer = self.loop.call_at(self.pending[0][0], self._release_delayed)

    def _process(self, token: Token) -> None:
        """The fault pipeline; see the module docstring for the exact semantics."""
        sequence, done, _ = token
        if self.closed or sequence <= self.floor:
            return
        tail = self.faults.tail_after
        if tail and self.tokens_sent >= tail:
            self._count("tail_withheld")
            return
        if done:
            if self.held is not None:
                self._send(self.held)
                self.held = None
            self._send(token)
            self._end()
            return
        if sequence == self.skip_sequence:
            self.skip_sequence = None
            self.conv.lost.add(sequence)
            self.counters.resume_skipped += 1
            self.total.resume_skipped += 1
            return
        if self._lost_by_shape(sequence):
            return
        if self.held is not None:
            held, self.held = self.held, None
            self._send(token)
            self._send(held)
            self.counters.reordered += 1
            self.total.reordered += 1
            self._check_disconnect()
            return
        faults = self.faults
        if faults.drop_rate and self.rng.random() < faults.drop_rate:
            self.conv.lost.add(sequence)
            self.counters.dropped += 1
            self.total.dropped += 1
            return
        if faults.reorder_rate and self.rng.random() < faults.reorder_rate and self._may_hold():
            self.held = token
            return
        self._send(token)
        if faults.dup_rate and self.rng.random() < faults.dup_rate:
            self._write(token[2])
            self.counters.duplicated += 1
            self.total.duplicated += 1
        self._check_disconnect()

    def _lost_by_shape(self, sequence: int) -> bool:
        """The first-token race and the gap (see the module docstring)."""
        self.offered += 1
        if self.lose_first and self.offered == 1:
            self._lose(sequence, "first_lost")
            return True
        if self.gap_left and self.offered >= 3:
            self.gap_left -= 1
            self._lose(sequence, "gap_dropped")
            return True
        return False

    def _lose(self, sequence: int, counter: str) -> None:
        self.conv.lost.add(sequence)
        self._count(counter)

    def _count(self, counter: str) -> None:
        for c in (self.counters, self.total):
            setattr(c, counter, getattr(c, counter) + 1)

    def _may_hold(self) -> bool:
        # The pair (k+1, k) must end before the disconnect point, so the stream's last event
        # is an in-order token and a resume from its id neither loses nor repeats anything.
        limit = self.faults.disconnect_after
        return not limit or self.tokens_sent + 2 < limit

    def _send(self, token: Token) -> None:
        self.tokens_sent += 1
        self._write(token[2])

    def _write(self, event: bytes) -> None:
        self.transport.write(event)
        self.last_write = self.loop.time()
        self.counters.delivered += 1
        self.total.delivered += 1

    def _check_disconnect(self) -> None:
        limit = self.faults.disconnect_after
        if limit and self.tokens_sent >= limit:
            self.counters.disconnects += 1
            self.total.disconnects += 1
            self._end()

    def _end(self) -> None:
        """End the response cleanly; the client resumes if it came without the done token."""
        self.transport.write(_LAST_CHUNK)
        self.transport.close()
        self.close()

    def _arm_keepalive(self) -> None:
        self.keepalive_timer = self.loop.call_at(
            self.last_write + self.keepalive_s, self._keepalive
        )

    def _keepalive(self) -> None:
        if self.closed:
            return
        if self.loop.time() >= self.last_write + self.keepalive_s - 0.001:
            self.transport.write(_KEEPALIVE_CHUNK)
            self.last_write = self.loop.time()
        self._arm_keepalive()

    def close(self) -> None:
        """Leave the conversation; idempotent (the response end and connection_lost both call)."""
        if self.closed:
            return
        self.closed = True
        self.conv.subscribers.discard(self)
        self.conv.last_activity = self.loop.time()
        for timer in (self.keepalive_timer, self.delay_timer):
            if timer is not None:
                timer.cancel()
        self.pending.clear()
        for c in (self.counters, self.total):
            c.connections_active -= 1


# --- HTTP ---------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


def parse_request_head(head: bytes) -> Request | None:
    lines = head.decode("latin-1").splitlines()
    parts = lines[0].split() if lines else []
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(method=parts[0].upper(), path=parts[1], headers=headers)


def simple_response(status: str, body: bytes, content_type: str) -> bytes:
    return (
        b"HTTP/1.1 %b\r\nContent-Type: %b\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n%b"
        % (status.encode(), content_type.encode(), len(body), body)
    )


_TEXT = "text/plain; charset=utf-8"


class HttpConnection(asyncio.Protocol):
    """One TCP connection: read a request head, answer it, close (no keep-alive needed)."""

    def __init__(self, app: Adapter) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answered = False
        self.session: StreamSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=_WRITE_BUFFER_HIGH)
        self.app.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # a streaming client has nothing more to say; ignore it
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            end = self.buffer.find(b"\n\n")
        if end < 0:
            if len(self.buffer) > _MAX_REQUEST_HEAD:
                self._reply("431 Request Header Fields Too Large", b"request head too large\n")
            return
        self.answered = True
        request = parse_request_head(bytes(self.buffer[:end]))
        self.buffer.clear()
        if request is None:
            self._reply("400 Bad Request", b"malformed request\n")
        else:
            self._route(request)

    def _authorized(self, request: Request) -> bool:
        """--require-header: streams are served only to requests that carry it."""
        required = self.app.required_header
        if required is None:
            return True
        name, value = required
        return hmac.compare_digest(request.headers.get(name.lower(), "").encode(), value.encode())

    def _route(self, request: Request) -> None:
        path = request.path.split("?", 1)[0]
        if request.method != "GET":
            self._reply("405 Method Not Allowed", b"only GET is served here\n")
        elif path == "/healthz":
            self._reply("200 OK", b"ok", _TEXT)
        elif path == "/stats":
            self._reply("200 OK", orjson.dumps(self.app.stats.as_dict()), "application/json")
        elif (path == "/stream" or path.startswith("/stream/")) and not self._authorized(request):
            self._reply("401 Unauthorized", b"missing or wrong authorization header\n")
        elif path == "/stream" or path.startswith("/stream/"):
            conversation_id = unquote(path[len("/stream/") :])
            if not conversation_id:
                self._reply("400 Bad Request", b"missing conversation id\n")
            else:
                self._stream(conversation_id, request.headers.get("last-event-id"))
        else:
            self._reply("404 Not Found", b"not found\n")

    def _stream(self, conversation_id: str, last_event_id_header: str | None) -> None:
        assert self.transport is not None
        app = self.app
        session = StreamSession(
            transport=self.transport,
            conv=app.hub.get(conversation_id),
            counters=app.stats.conversation(conversation_id),
            total=app.stats.total,
            faults=app.faults,
            keepalive_s=app.keepalive_s,
            last_event_id=_parse_last_event_id(last_event_id_header),
            loop=app.loop,
        )
        if app.nc is None:
            self.session = session
            session.start()
        else:  # --nats: say connected once the conversation's subscription is in place
            task = app.loop.create_task(self._start_with_interest(session))
            app.starting.add(task)
            task.add_done_callback(app.starting.discard)

    async def _start_with_interest(self, session: StreamSession) -> None:
        try:
            await self.app.interest(session.conv)
        except Exception as exc:  # NATS gone: the client sees a failed stream and retries
            log.warning("cannot subscribe for %s: %s", session.conv.id, exc)
            if self.transport is not None:
                self.transport.abort()
            return
        if self.transport is None or self.transport.is_closing():
            return  # the client left while we subscribed
        self.session = session
        session.start()

    def _reply(self, status: str, body: bytes, content_type: str = _TEXT) -> None:
        assert self.transport is not None
        self.answered = True
        self.transport.write(simple_response(status, body, content_type))
        self.transport.close()

    def pause_writing(self) -> None:
        log.warning("closing a stream whose client stopped reading (32 MiB unsent)")
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.session.close()
        self.app.connections.discard(self)


def _parse_last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return None  # not one of our ids: treat as a fresh stream


# --- the adapter process -----------------------------------------------------------------------


class Adapter:
    def __init__(
        self,
        redis_url: str,
        hub_config: HubConfig,
        faults: FaultConfig,
        keepalive_s: float,
        tls: ssl.SSLContext | None = None,
        required_header: tuple[str, str] | None = None,
        nats_url: str = "",
    ) -> None:
        self.tls = tls  # serve HTTPS with it (--tls-cert/--tls-key)
        self.required_header = required_header  # (name, value) a stream request must carry
        self.redis_url = redis_url
        self.hub_config = hub_config
        self.faults = faults
        self.keepalive_s = keepalive_s
        self.loop = asyncio.get_running_loop()
        self.stats = Stats()
        self.hub = Hub(hub_config, self.stats, self.loop)
        self.connections: set[HttpConnection] = set()
        # --nats: tokens come from NATS, a subscription per conversation being streamed.
        self.nats_url = nats_url
        self.nc: Any = None  # nats.aio.client.Client, imported only with --nats
        self.starting: set[asyncio.Task[None]] = set()  # streams waiting for their interest
        self.hub.on_forget = self._forget

    async def interest(self, conv: ConversationHistory) -> None:
        """Subscribe to the conversation's subject once (concurrent streams share it), and
        return once the server has it: a flush is a round trip after the SUB."""
        if conv.interest is None:
            conv.interest = self.loop.create_task(self._subscribe(conv))
        await asyncio.shield(conv.interest)

    async def _subscribe(self, conv: ConversationHistory) -> Any:
        hub, conversation_id = self.hub, conv.id

        async def deliver(msg: Any) -> None:
            hub.dispatch_to(conversation_id, msg.data)

        try:
            sub = await self.nc.subscribe(f"chat.{conversation_id}.tokens", cb=deliver)
            await self.nc.flush(timeout=5)
        except BaseException:
            conv.interest = None  # the next stream tries again
            raise
        if self.faults.interest_delay_ms:
            conv.interest_at = self.loop.time() + self.faults.interest_delay_ms / 1000.0
        return sub

    def _forget(self, conv: ConversationHistory) -> None:
        interest = conv.interest
        if interest is None or not interest.done() or interest.exception() is not None:
            return
        task = self.loop.create_task(interest.result().unsubscribe())
        self.starting.add(task)  # kept referenced until it ran
        task.add_done_callback(self.starting.discard)

    async def serve(self, host: str, port: int, stop: asyncio.Event) -> None:
        subscribed = asyncio.Event()
        if self.nats_url:
            pump = asyncio.create_task(self._connect_nats(subscribed), name="nats")
        else:
            pump = asyncio.create_task(self._pump_redis(subscribed), name="redis-pump")
        # Listen only once subscribed: a token published before that would be lost.
        waiter = asyncio.create_task(subscribed.wait())
        await asyncio.wait({pump, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if pump.done():
            waiter.cancel()
            pump.result()  # raises the reason
        server = await self.loop.create_server(
            lambda: HttpConnection(self), host, port, backlog=1024, reuse_address=True,
            ssl=self.tls,
        )
        bound_port = server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls is not None else "http"
        sys.stdout.write(f"LISTENING {scheme}://{host}:{bound_port}\n")
        sys.stdout.flush()
        sweeper = asyncio.create_task(self._sweep_forever(), name="sweeper")
        try:
            await stop.wait()
        finally:
            server.close()
            for conn in tuple(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            for task in (pump, sweeper, *self.starting):
                task.cancel()
            await asyncio.gather(pump, sweeper, *self.starting, return_exceptions=True)
            if self.nc is not None:
                with contextlib.suppress(Exception):
                    await self.nc.close()

    async def _connect_nats(self, connected: asyncio.Event) -> None:
        """--nats: connect (fail fast at start), then wait; nats-py reconnects by itself."""
        import nats  # only the full topology needs it

        try:
            self.nc = await nats.connect(self.nats_url, connect_timeout=5,
                                         allow_reconnect=True, max_reconnect_attempts=-1,
                                         name="sse-tui-adapter")
        except Exception as exc:
            raise RuntimeError(f"cannot connect to NATS at {self.nats_url}: {exc}") from exc
        connected.set()
        await asyncio.Event().wait()

    async def _pump_redis(self, subscribed: asyncio.Event) -> None:
        """Feed the hub from one PSUBSCRIBE; reconnect if Redis goes away."""
        await follow_pattern(self.redis_url, self.hub_config.channel_prefix + "*",
                             self.hub.dispatch, subscribed, log)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            self.hub.sweep()


# --- command line ------------------------------------------------------------------------------


def unit_rate(text: str) -> float:
    """An argparse type: a rate within [0, 1] (the sandbox's drop faults)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate must be within [0, 1], got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sse_tui.sandbox.adapter",
        description="Reference SSE adapter: Redis pub/sub -> GET /stream/<id> (SSE).",
    )
    p.add_argument("--redis", required=True, help="redis URL, e.g. redis://127.0.0.1:6379")
    p.add_argument("--nats", default="",
                   help="read tokens from this NATS server (chat.<id>.tokens) instead of Redis")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port")
    p.add_argument("--channel-prefix", default="llm:tokens:")
    p.add_argument("--keepalive", type=_positive, default=15.0, help="seconds between keep-alives")
    p.add_argument("--history-size", type=int, default=10_000, help="tokens kept per conversation")
    p.add_argument("--history-ttl", type=float, default=30.0, help="s kept after the done token")
    p.add_argument("--idle-ttl", type=float, default=600.0, help="s kept after the last activity")
    p.add_argument("--tls-cert", default="", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", default="", help="the private key of --tls-cert")
    p.add_argument("--require-header", default="", metavar="'NAME: VALUE'",
                   help="answer 401 to stream requests without this header (auth tests)")
    f = p.add_argument_group("fault injection (see the module docstring for exact semantics)")
    f.add_argument("--drop-rate", type=unit_rate, default=0.0)
    f.add_argument("--dup-rate", type=unit_rate, default=0.0)
    f.add_argument("--reorder-rate", type=unit_rate, default=0.0)
    f.add_argument("--delay-ms", type=float, default=0.0)
    f.add_argument("--disconnect-after", type=int, default=0, help="0 = never")
    f.add_argument("--resume-skip-bug", action="store_true")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--first-loss-rate", type=unit_rate, default=0.0,
                   help="share of fresh streams that lose their first token")
    f.add_argument("--gap", type=int, default=0,
                   help="tokens a fresh stream loses in one run, from its 3rd; 0 = never")
    f.add_argument("--tail-after", type=int, default=0,
                   help="a stream withholds every token after this many; 0 = never")
    f.add_argument("--overload-streams", type=int, default=0,
                   help="while more than this many streams are open, every token is held "
                        "--overload-delay-ms more; 0 = never")
    f.add_argument("--overload-delay-ms", type=float, default=0.0)
    h = p.add_argument_group("faults of the full topology (docs/topology.md)")
    h.add_argument("--interest-delay-ms", type=float, default=0.0,
                   help="with --nats: a new subscription delivers only after this many ms; "
                        "the tokens before are lost (the real system's race)")
    h.add_argument("--bridge-drop-rate", type=unit_rate, default=0.0,
                   help="the bridge's (sse_tui.sandbox.bridge); not used here")
    h.add_argument("--bridge-delay-ms", type=float, default=0.0,
                   help="the bridge's (sse_tui.sandbox.bridge); not used here")
    p.add_argument("--log-level", default="WARNING")
    return p


def faults_from_args(args: argparse.Namespace) -> FaultConfig:
    # One --flag per FaultConfig field, named after it: the dataclass is the list.
    return FaultConfig(**{f.name: getattr(args, f.name) for f in fields(FaultConfig)})


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    adapter = Adapter(
        redis_url=args.redis,
        hub_config=HubConfig(
            channel_prefix=args.channel_prefix,
            history_size=args.history_size,
            history_ttl_s=args.history_ttl,
            idle_ttl_s=args.idle_ttl,
        ),
        faults=faults_from_args(args),
        keepalive_s=args.keepalive,
        tls=_server_tls(args.tls_cert, args.tls_key),
        required_header=_required_header(args.require_header),
        nats_url=args.nats,
    )
    await adapter.serve(args.host, args.port, stop)


def _server_tls(cert: str, key: str) -> ssl.SSLContext | None:
    if not cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key or None)
    return ctx


def _required_header(text: str) -> tuple[str, str] | None:
    if not text:
        return None
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"--require-header wants 'Name: value', got {text[:20]!r}")
    return name.strip(), value.strip()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="adapter: %(levelname)s %(message)s"
    )
    try:
        faults_from_args(args)  # validate before anything starts
        asyncio.run(run(args))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"adapter: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
