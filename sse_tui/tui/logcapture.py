"""Keep log records away from the terminal while the app owns it.

Textual captures `print` from its own thread, but a `logging.StreamHandler` made before the
app started (or a library thread's records reaching `logging.lastResort`) would write
straight onto the screen. While the app runs, the root logger gets one handler that keeps the
warnings in memory (the app shows the latest one) and, if `SSE_TUI_LOG` names a file,
appends them there. Levels are left alone: turning on INFO would make httpx log every request.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress

LOG_ENV = "SSE_TUI_LOG"


class MemoryLogHandler(logging.Handler):
    """Thread-safe ring of formatted records, newest last."""

    def __init__(self, capacity: int = 200) -> None:
        super().__init__(logging.WARNING)
        self.records: deque[tuple[int, str]] = deque(maxlen=capacity)
        self._seq = 0
        self._mutex = threading.Lock()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad format string must not take the app down
            text = str(record.msg)
        with self._mutex:
            self._seq += 1
            self.records.append((record.levelno, text))

    def latest_warning(self) -> str | None:
        with self._mutex:
            for level, text in reversed(self.records):
                if level >= logging.WARNING:
                    return text
        return None

    @property
    def seq(self) -> int:
        return self._seq


@contextmanager
def captured_logging(handler: MemoryLogHandler) -> Iterator[MemoryLogHandler]:
    """Route all logging to `handler` (and `$SSE_TUI_LOG`) instead of the terminal."""
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    saved_last_resort = logging.lastResort
    # Named loggers with their own stream handlers would still reach the terminal.
    detached: list[tuple[logging.Logger, logging.Handler]] = []
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            for h in logger.handlers[:]:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    logger.removeHandler(h)
                    detached.append((logger, h))
    handlers: list[logging.Handler] = [handler]
    path = os.environ.get(LOG_ENV)
    if path:
        file_handler = logging.FileHandler(path, encoding="utf-8")
        with suppress(OSError):  # private, like every file sse-tui writes (not /dev/stderr)
            if os.path.isfile(path):
                os.chmod(path, 0o600)
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        handlers.append(file_handler)
    root.handlers = handlers
    logging.lastResort = None
    logging.captureWarnings(True)
    try:
        yield handler
    finally:
        logging.captureWarnings(False)
        for h in handlers[1:]:
            h.close()
        root.handlers = saved_handlers
        logging.lastResort = saved_last_resort
        for logger, h in detached:
            logger.addHandler(h)
