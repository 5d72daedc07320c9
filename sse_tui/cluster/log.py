"""What `sse-tui cluster` says: `[INFO]`/`[WARN]`/`[ERROR]` lines on stderr.

Never stdout: it belongs to sse-tui (`--json -` must stay clean).
"""

from __future__ import annotations

import sys
from typing import TextIO


class Log:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        colour = _isatty(self.stream)
        self._green, self._yellow, self._red, self._nc = (
            ("\033[0;32m", "\033[1;33m", "\033[0;31m", "\033[0m") if colour else ("", "", "", "")
        )

    def info(self, message: str) -> None:
        self._say(f"{self._green}[INFO]{self._nc} {message}")

    def warn(self, message: str) -> None:
        self._say(f"{self._yellow}[WARN]{self._nc} {message}")

    def error(self, message: str) -> None:
        self._say(f"{self._red}[ERROR]{self._nc} {message}")

    def indented(self, text: str) -> None:
        """Lines quoted from elsewhere (kubectl's output, a command to copy)."""
        for line in text.splitlines():
            self._say(f"  {line}")

    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
