"""Incremental Server-Sent Events parser (WHATWG "event stream interpretation").

This sits on the consumer's per-token hot path, so it is built around C-level
bytes/str methods: a read is normalised and split into lines with ``replace`` and
``split``, decoded once, and only then walked line by line. There is no loop over
characters anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "EventTooLarge", "SSEEvent", "SSEParser"]

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024


class EventTooLarge(ValueError):
    """One event (its data) or one line grew past the parser's cap; the stream is unusable."""

_BOM = "\ufeff"

# Event names repeat on every token; reusing one str object per name keeps the
# per-event allocations down and makes the caller's `==` checks hit the identity path.
_KNOWN_EVENT_NAMES: dict[str, str] = {
    name: name for name in ("message", "token", "connected", "error", "done", "ping")
}
_MAX_EVENT_NAME_CACHE = 256


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event, or one comment line when ``is_comment`` is true."""

    event: str  # "message" when no event field; "comment" for a comment line
    data: str
    id: str | None  # the last-event-id buffer at dispatch; persists across events
    retry: int | None = None  # a valid `retry:` field seen in this event's block
    is_comment: bool = False
    received_ns: int = 0  # time.time_ns() of the read that completed this event


class SSEParser:
    """Turns arbitrary byte chunks of an event stream into `SSEEvent` objects.

    Feed it each read as it arrives; it keeps any partial line (including a split
    UTF-8 character, or a ``\\r`` whose ``\\n`` may come in the next read) until
    the rest shows up.
    """

    __slots__ = (
        "_at_start",
        "_data",
        "_data_len",
        "_event",
        "_pending",
        "_pending_cr",
        "_pending_len",
        "_retry",
        "last_event_id",
        "max_event_bytes",
        "retry_ms",
    )

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.last_event_id: str | None = None  # the spec's "last event ID buffer"
        self.retry_ms: int | None = None  # the latest valid reconnection time
        # What one unfinished line, or one event's data, may grow to before feed() raises
        # EventTooLarge: beyond it nothing is buffered, so a server sending an endless
        # line costs at most this much (plus one read).
        self.max_event_bytes = max_event_bytes
        self._pending: list[bytes] = []  # pieces of a line with no terminator yet
        self._pending_len = 0
        self._data_len = 0  # characters of data in the event being built
        self._pending_cr = False  # last chunk ended in \r: drop a leading \n next
        self._at_start = True  # the BOM is only stripped at the very start
        self._event = ""
        self._data: list[str] = []
        self._retry: int | None = None

    def feed(self, chunk: bytes, received_ns: int = 0) -> list[SSEEvent]:
        """Parse one read; return the events (and comments) it completed, in order."""
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":  # the second half of a \r\n split across reads
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:
            if chunk:
                self._pending_len += len(chunk)
                if self._pending_len > self.max_event_bytes:
                    self._too_large(f"a line of more than {self.max_event_bytes} bytes")
                self._pending.append(chunk)
            return []
        if self._pending:
            self._pending.append(chunk)
            chunk = b"".join(self._pending)
            self._pending = []
            self._pending_len = 0
        if b"\r" in chunk:
            # A trailing \r already ends its line; remember it so that a \n
            # opening the next read is not taken for an extra blank line.
            self._pending_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end + 1 < len(chunk):
            rest = chunk[end + 1 :]
            if len(rest) > self.max_event_bytes:
                self._too_large(f"a line of more than {self.max_event_bytes} bytes")
            self._pending.append(rest)
            self._pending_len = len(rest)
        # Terminators are ASCII, so everything before the last one holds only
        # whole UTF-8 characters and can be decoded in one call.
        text = chunk[:end].decode("utf-8", "replace")
        if self._at_start:
            self._at_start = False
            if text.startswith(_BOM):
                text = text[1:]
        return self._interpret(text.split("\n"), received_ns)

    def _too_large(self, what: str) -> None:
        self._pending = []
        self._pending_len = 0
        self._data = []
        self._data_len = 0
        raise EventTooLarge(f"{what} (the cap is --max-event-bytes {self.max_event_bytes})")

    def _interpret(self, lines: list[str], received_ns: int) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        event = self._event
        data = self._data
        data_len = self._data_len
        cap = self.max_event_bytes
        retry = self._retry
        last_id = self.last_event_id
        for line in lines:
            if not line:
                # Blank line: dispatch. The spec copies the id buffer even when
                # nothing is dispatched, and always resets data/event/retry.
                if data:
                    out.append(
                        SSEEvent(
                            event or "message",
                            data[0] if len(data) == 1 else "\n".join(data),
                            last_id,
                            retry,
                            False,
                            received_ns,
                        )
                    )
                    data = []
                    data_len = 0
                event = ""
                retry = None
                continue
            name, colon, value = line.partition(":")
            if not name and colon:
                if value[:1] == " ":
                    value = value[1:]
                out.append(SSEEvent("comment", value, last_id, None, True, received_ns))
                continue
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
                data_len += len(value) + 1
                if data_len > cap:
                    self._too_large(f"an event of more than {cap} bytes")
            elif name == "event":
                event = _intern_event_name(value)
            elif name == "id" and "\0" not in value:
                last_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                retry = self.retry_ms = int(value)
            # Anything else (unknown field, NUL in id, bad retry) is ignored, per spec.
        self._event = event
        self._data = data
        self._data_len = data_len
        self._retry = retry
        self.last_event_id = last_id
        return out


def _intern_event_name(name: str) -> str:
    known = _KNOWN_EVENT_NAMES.get(name)
    if known is not None:
        return known
    if len(_KNOWN_EVENT_NAMES) < _MAX_EVENT_NAME_CACHE:
        _KNOWN_EVENT_NAMES[name] = name
    return name
