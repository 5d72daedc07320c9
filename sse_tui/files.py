"""Writing the files sse-tui produces (the JSON summary, saved settings): the one way to do it.

A regular file is written atomically and privately: a temporary file (mode 0600) in the same
directory, fsynced, then renamed over the target, so a crash or a full disk never leaves half a
summary where a good one was, and nobody else can read what may carry a secret. Anything else —
a FIFO, a character device (/dev/stdout, /dev/null, /dev/full), a `>(…)` (/dev/fd/N) — is
written through, never replaced: renaming a file over /dev/full as root replaced the device.

`check_writable` answers before a run whether the write at its end can succeed, by doing what
that write will do (creating a temporary file next to the target), not by asking os.access,
which says yes to root for /proc and read-only directories.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from pathlib import Path

# A FIFO with no reader yet: how long the write at the end waits for one (`cat fifo &`
# started a moment later) before giving up rather than blocking the exit forever.
FIFO_READER_WAIT_S = 10.0


class WriteError(Exception):
    """A file that cannot be written; the message is one line naming it and why."""


def _why(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def _target(path: str | Path) -> tuple[Path, os.stat_result | None]:
    """The file a write to `path` lands on (symlinks followed), and its stat if it exists."""
    p = Path(path).expanduser()
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return p, None
    except OSError as e:
        raise WriteError(f"cannot write {str(path)!r}: {_why(e)}") from None
    if stat.S_ISREG(st.st_mode):
        p = Path(os.path.realpath(p))  # replace the file a symlink points to, not the link
    return p, st


def is_stdout(path: str | Path) -> bool:
    """Is `path` this process's standard output (`--json /dev/stdout`, `/proc/self/fd/1`)?
    Then it is written as `-` is: through the stream, with the human output on stderr."""
    try:
        a, b = os.stat(Path(path).expanduser()), os.fstat(1)
    except (OSError, ValueError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_writable(path: str | Path) -> None:
    """Raise WriteError unless `path` can be written by `write_private_atomically`."""
    p, st = _target(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise WriteError(f"{str(path)!r} is a directory; give a file path")
    if st is not None and stat.S_ISSOCK(st.st_mode):
        raise WriteError(f"{str(path)!r} is a socket; give a file path")
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISFIFO(st.st_mode):
            # Opening a FIFO waits for its reader, which may start later: only ask.
            if not os.access(p, os.W_OK):
                raise WriteError(f"cannot write {str(path)!r}: permission denied")
            return
        try:  # a device: open it as the write at the end will, and close it again
            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY))
        except OSError as e:
            raise WriteError(f"cannot write {str(path)!r}: {_why(e)}") from None
        return
    parent = p.parent
    if not parent.is_dir():
        raise WriteError(f"directory {str(parent)!r} does not exist; create it first or "
                         "choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        # No rename possible here; an existing file may still be rewritten in place.
        if st is not None and _opens_for_writing(p):
            return
        raise WriteError(
            f"cannot write {str(path)!r}: {_why(e)}; choose a writable location") from None
    os.close(fd)
    os.unlink(probe)


def _opens_for_writing(p: Path) -> bool:
    try:
        os.close(os.open(p, os.O_WRONLY | os.O_NOCTTY))
    except OSError:
        return False
    return True


def write_private_atomically(path: str | Path, data: str | bytes, *,
                             parents: bool = False) -> Path:
    """Write `data` to `path`; return the path written. Raises WriteError (one line).

    A regular file (or a new one) is replaced atomically by a file of mode 0600; a FIFO or a
    device is written through. `parents` creates missing directories first."""
    body = data.encode("utf-8") if isinstance(data, str) else data
    p, st = _target(path)
    try:
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise WriteError(f"cannot write {str(path)!r}: it is a directory")
        if st is not None and not stat.S_ISREG(st.st_mode):
            _write_through(p, body)
            return p
        if parents:
            p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        except OSError as e:
            if st is None or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            _write_in_place(p, body)  # a writable file in a directory we cannot add to
            return p
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise WriteError(f"cannot write {str(path)!r}: {_why(e)}") from None
    return p


def _write_in_place(p: Path, body: bytes) -> None:
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC | os.O_NOCTTY)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    with contextlib.suppress(OSError):
        os.chmod(p, 0o600)


def _write_through(p: Path, body: bytes) -> None:
    """Write into a FIFO or device as it is: no temporary file, no rename, no truncation."""
    deadline = time.monotonic() + FIFO_READER_WAIT_S
    while True:
        try:
            # Non-blocking open: a FIFO without a reader fails (ENXIO) instead of hanging.
            fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
            break
        except OSError as e:
            if e.errno != errno.ENXIO or time.monotonic() > deadline:
                if e.errno == errno.ENXIO:
                    raise OSError(e.errno, "no process is reading it") from None
                raise
            time.sleep(0.05)
    try:
        os.set_blocking(fd, True)  # now that it is open, let a slow reader pace the writes
        view = memoryview(body)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)
