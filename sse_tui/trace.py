"""Traces of real traffic's timing: what `sse-tui record` writes and `--trace` replays.

A trace is JSON lines. The first line describes the recording; each later line is one
conversation, and holds only its timing — never token text, never its id:

  {"sse_tui_trace": 1, "recorded_at": "...", "duration_s": 600.0, "channel_prefix": "llm:tokens:"}
  {"start_s": 0.412, "tokens": 5, "gaps_ms": [21.3, 19.8, 40.1, 22.0], "done": true}

`start_s` is when its first token was published, in seconds from the start of the recording;
`gaps_ms` are the times between consecutive tokens (one fewer than `tokens`); `done` says
whether the conversation's last token (done: true) was seen before the recording ended.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sse_tui.values import UsageError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TracedConversation:
    start_s: float
    gaps_ms: tuple[float, ...]
    done: bool = True

    @property
    def tokens(self) -> int:
        return len(self.gaps_ms) + 1

    def to_line(self) -> str:
        return json.dumps({"start_s": round(self.start_s, 6), "tokens": self.tokens,
                           "gaps_ms": [round(g, 3) for g in self.gaps_ms], "done": self.done},
                          separators=(",", ":"))


@dataclass(frozen=True)
class Trace:
    header: dict[str, Any]
    conversations: tuple[TracedConversation, ...]  # in order of start

    @property
    def length_s(self) -> float:
        """From the recording's start to the last conversation's last token."""
        return max((c.start_s + sum(c.gaps_ms) / 1000.0 for c in self.conversations),
                   default=0.0)


class TraceWriter:
    """Writes a trace as conversations end, so a long recording holds only live ones in
    memory and a recording cut short keeps everything that ended. The file is the user's
    own (0600): timing of production traffic is not for every reader of /tmp."""

    def __init__(self, path: str, header: dict[str, Any]) -> None:
        self.path = path
        self.written = 0
        if path == "-":
            self._file: IO[str] = os.fdopen(os.dup(1), "w", encoding="utf-8")
        else:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except OSError as e:
                raise UsageError(f"cannot write the trace to {path}: {e.strerror or e}; "
                                 "choose a writable --out path") from None
            self._file = os.fdopen(fd, "w", encoding="utf-8")
        self._file.write(json.dumps({"sse_tui_trace": FORMAT_VERSION, **header}) + "\n")

    def write(self, conv: TracedConversation) -> None:
        self._file.write(conv.to_line() + "\n")
        self.written += 1

    def close(self) -> None:
        self._file.close()


def _bad(path: Path, line_no: int, what: str) -> UsageError:
    return UsageError(f"{path}:{line_no}: {what}; pass a file `sse-tui record` wrote")


def _conversation(raw: Any, path: Path, line_no: int) -> TracedConversation:
    if not isinstance(raw, dict):
        raise _bad(path, line_no, "not a JSON object")
    start, gaps, tokens = raw.get("start_s"), raw.get("gaps_ms"), raw.get("tokens")
    if not isinstance(start, int | float) or isinstance(start, bool) or start < 0:
        raise _bad(path, line_no, "start_s must be a number >= 0")
    if not isinstance(gaps, list) or not all(
            isinstance(g, int | float) and not isinstance(g, bool) and g >= 0 for g in gaps):
        raise _bad(path, line_no, "gaps_ms must be a list of numbers >= 0")
    if tokens is not None and tokens != len(gaps) + 1:
        raise _bad(path, line_no, f"tokens is {tokens} but gaps_ms has {len(gaps)} gaps")
    return TracedConversation(float(start), tuple(float(g) for g in gaps),
                              bool(raw.get("done", True)))


def load_trace(path: str | Path) -> Trace:
    """Read and check a trace; anything wrong is one UsageError line naming the file."""
    p = Path(path)
    try:
        lines: Iterable[str] = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UsageError(f"cannot read the trace {p}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{p} is not a trace (not text); pass a file `sse-tui record` wrote"
                         ) from None
    header: dict[str, Any] | None = None
    conversations: list[TracedConversation] = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(p, line_no, f"not JSON ({e.msg})") from None
        if header is None:
            if not isinstance(raw, dict) or raw.get("sse_tui_trace") != FORMAT_VERSION:
                raise _bad(p, line_no, f"no trace header (sse_tui_trace: {FORMAT_VERSION})")
            header = raw
            continue
        conversations.append(_conversation(raw, p, line_no))
    if header is None:
        raise UsageError(f"{p} is empty; pass a file `sse-tui record` wrote")
    if not conversations:
        raise UsageError(f"{p} holds no conversations: record for longer, or while the "
                         "system has traffic")
    conversations.sort(key=lambda c: c.start_s)
    return Trace(header, tuple(conversations))
