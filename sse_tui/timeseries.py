"""`--timeseries FILE`: one row per second of the run, written as the run goes.

The rows are the snapshots' timeline points (`TimelinePoint`, made by
sse_tui.engine.timeline): each point is written once, when a snapshot first shows it, and the
final snapshot's points (the last, partial second included) complete the file, so that the
rows' `published` and `received` add up to the JSON summary's totals.

JSON lines, or CSV when the name ends in `.csv`. The file is streamed, not written
atomically: rows appear as the run goes (`tail -f` works, and a run that dies keeps what it
wrote). It is created with mode 0600, like every file sse-tui writes; an existing file is
truncated. A FIFO or a device (`/dev/stdout`) is written through.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sse_tui.snapshot import StatsSnapshot, TimelinePoint
from sse_tui.values import UsageError

# The columns, in order (docs/metrics.md).
COLUMNS = (
    "t_s", "wall_time", "run_id", "state", "phase", "conversations", "delay_ms",
    "published", "received", "errors", "missing_total", "p50_ms", "p99_ms", "self_lag_ms",
    "length_s",
)


def row(point: TimelinePoint, run_id: str) -> dict[str, Any]:
    """One row: the point's figures, by column."""
    def ms(v: float | None) -> float | None:
        return None if v is None or v != v else round(v, 3)

    return {
        "t_s": point.t_s,
        "wall_time": datetime.fromtimestamp(point.wall_s, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"),
        "run_id": run_id,
        "state": point.state,
        "phase": point.phase,
        "conversations": point.conversations,
        "delay_ms": point.delay_ms,
        "published": point.published,
        "received": point.received,
        "errors": point.errors,
        "missing_total": point.missing_total,
        "p50_ms": ms(point.p50_ms),
        "p99_ms": ms(point.p99_ms),
        "self_lag_ms": ms(point.self_lag_ms),
        "length_s": point.length_s,
    }


class TimeSeriesWriter:
    """Appends the rows of the timeline points it has not written yet."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.csv = path.lower().endswith(".csv")
        self._file: TextIO | None = _open_private(path)
        self._run_id: str | None = None
        self._last_t = -1.0
        self.rows = 0
        self.error: str | None = None  # why writing stopped (a full disk), once
        if self.csv:
            self._write_lines([_csv_line(COLUMNS)])

    def write_new(self, snap: StatsSnapshot) -> int:
        """Write the points of `snap` not written yet; how many. A new run (the TUI's `r`)
        starts its seconds from 0 again: its rows follow, with its run id."""
        if self._file is None:
            return 0
        run_id = snap.settings.run_id
        if run_id != self._run_id:
            self._run_id, self._last_t = run_id, -1.0
        new = [p for p in snap.timeline if p.t_s > self._last_t]
        if not new:
            return 0
        lines = []
        for p in new:
            r = row(p, run_id)
            lines.append(_csv_line(tuple(r.values())) if self.csv
                         else json.dumps(r, allow_nan=False) + "\n")
        self._last_t = new[-1].t_s
        self._write_lines(lines)
        self.rows += len(new)
        return len(new)

    def _write_lines(self, lines: list[str]) -> None:
        assert self._file is not None
        try:
            self._file.write("".join(lines))
            self._file.flush()  # a row a second: let a reader see it now
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.error = f"the time series stopped at {self.rows} rows: cannot write " \
                         f"{self.path!r}: {why}"
            self.close()

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                self.error = self.error or f"cannot write {self.path!r}: {e.strerror or e}"


def _csv_line(values: tuple[Any, ...]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def _open_private(path: str) -> TextIO:
    """Open for writing from the start, mode 0600; raises UsageError (one line)."""
    p = Path(path).expanduser()
    flag = f"--timeseries {path}"
    if not path.strip():
        raise UsageError("--timeseries needs a file path, e.g. --timeseries run.jsonl")
    try:
        # Non-blocking: a FIFO without a reader fails at once (ENXIO) instead of hanging.
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_NOCTTY | os.O_NONBLOCK, 0o600)
        os.set_blocking(fd, True)
    except IsADirectoryError:
        raise UsageError(f"{flag}: it is a directory; give a file path") from None
    except FileNotFoundError as e:
        if p.parent.is_dir():  # /proc and the like: a directory that takes no new files
            raise UsageError(f"{flag}: cannot create it: {e.strerror}") from None
        raise UsageError(f"{flag}: directory {str(p.parent)!r} does not exist; create it "
                         "first or choose another path") from None
    except OSError as e:
        why = "no process is reading it" if e.errno == errno.ENXIO else e.strerror or e
        raise UsageError(f"{flag}: cannot write it: {why}") from None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        # An existing file keeps its mode through O_CREAT: make it private, then empty it.
        with contextlib.suppress(OSError):  # someone else's file we may write to
            os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
    return open(fd, "w", encoding="utf-8", newline="")  # kept open for the whole run
