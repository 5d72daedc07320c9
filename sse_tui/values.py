"""How setting values are read, checked and written back: Go durations, addresses, run ids,
and the kinds of value (`ValueKind`) the settings table in `sse_tui.settings` is made of.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sse_tui.credentials import (
    header_shown,
    split_header,
)


class UsageError(Exception):
    """Bad input from the operator: the message is one line saying what is wrong and what to do."""


# --- durations ------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
# (multiply, divide): dividing for sub-second units keeps `700ms` exactly 0.7, not 0.70000001.
_UNIT_SCALE = {
    "ns": (1, 1e9), "us": (1, 1e6), "µs": (1, 1e6), "μs": (1, 1e6), "ms": (1, 1e3),
    "s": (1, 1), "m": (60, 1), "h": (3600, 1),
}


def parse_duration(text: str) -> float:
    """Parse a Go duration (`500ms`, `30s`, `1h30m`, `0`) into seconds.

    A bare number is taken as seconds, which is what people type in TOML files.
    """
    s = text.strip()
    if not s:
        raise UsageError("empty duration: use a Go duration such as 500ms, 30s, 5m or 1h30m")
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if value != value or value in (float("inf"), float("-inf")):
            raise UsageError(f"invalid duration {text!r}: use a Go duration such as 30s")
        if value < 0:
            raise UsageError(f"negative duration {text!r}: use 0 for one round, or e.g. 30s")
        return value
    pos = 0
    total = 0.0
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        pos = 1
    if pos == len(s):
        raise UsageError(
            f"invalid duration {text!r}: use a Go duration such as 500ms, 30s or 1h30m"
        )
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise UsageError(
                f"invalid duration {text!r}: use a Go duration such as 500ms, 30s, 5m or 1h30m"
            )
        mul, div = _UNIT_SCALE[m.group(2)]
        total += float(m.group(1)) * mul / div
        pos = m.end()
    if sign < 0 and total > 0:
        raise UsageError(f"negative duration {text!r}: use 0 for one round, or e.g. 30s")
    return total


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for saving: `90` -> `1m30s`, `0.5` -> `500ms`."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000!r}ms".replace(".0ms", "ms")
    whole = int(seconds)
    frac = seconds - whole
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = ""
    if h:
        out += f"{h}h"
    if m:
        out += f"{m}m"
    if s or frac or not out:
        secs = s + frac if frac else s
        out += (repr(float(secs)) if frac else str(secs)) + "s"
    return out


# --- checks beyond the kind of value --------------------------------------------------------

def redis_url(address: str) -> str:
    """`host:port`, `host` or a redis:// / rediss:// / unix:// URL -> a URL redis-py accepts."""
    a = address.strip()
    if not a:
        raise UsageError("empty redis address: use host:port or redis://host:port")
    if "://" in a:
        scheme = a.split("://", 1)[0].lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise UsageError(f"invalid redis address {address!r}: use host:port or redis://host:port")
        return a
    host, sep, port = a.rpartition(":")
    if not sep:
        return f"redis://{a}:6379"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid redis port in {address!r}: use host:port, e.g. localhost:6379")
    if not host:
        host = "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"redis://{host}:{port}"


def sse_base(url: str) -> str:
    """Validate the SSE base URL and strip a trailing slash."""
    u = url.strip()
    if not (u.startswith("http://") or u.startswith("https://")) or len(u.split("://", 1)[1]) == 0:
        raise UsageError(f"invalid SSE URL {url!r}: use http://host:port, e.g. http://localhost:8080")
    return u.rstrip("/")


def check_channel_prefix(prefix: str) -> str:
    """Return the prefix, or raise UsageError: it must be non-empty and free of glob characters,
    because consumers follow new conversations with the pattern `<prefix>*`."""
    if not prefix:
        raise UsageError("empty channel prefix: use e.g. llm:tokens: (the part before the id)")
    bad = sorted({c for c in prefix if c in "*?[]" or c.isspace()})
    if bad:
        raise UsageError(
            f"invalid channel prefix {prefix!r}: leave out {' '.join(repr(c) for c in bad)}; "
            f"give the part before the conversation id, e.g. llm:tokens:"
        )
    return prefix


RUN_ID_MAX = 128
_RUN_ID_RE = re.compile(r"[A-Za-z0-9._-]+")


def check_run_id(run_id: str) -> None:
    # It is part of Redis channel names (which consumers match with a glob), of /stream/<id>
    # URLs and of export file names. Only characters that mean the same in all of them are
    # accepted, rather than percent-encoding the rest: an encoded id would differ between
    # the channel and the URL (the adapter decodes it) and from what the operator typed.
    if not run_id or len(run_id) > RUN_ID_MAX or not _RUN_ID_RE.fullmatch(run_id):
        bad = sorted({c for c in run_id if not _RUN_ID_RE.fullmatch(c)})
        why = (f"{' '.join(repr(c) for c in bad)} not allowed" if bad
               else "empty" if not run_id else f"longer than {RUN_ID_MAX} characters")
        raise UsageError(f"invalid run id {run_id!r} ({why}): use letters, digits, "
                         "'-', '_' and '.', e.g. run1")


# --- kinds of values --------------------------------------------------------------------------

@dataclass(frozen=True)
class ValueKind:
    """How one kind of value is read from a flag and from TOML, checked, written back and shown.

    The readers take the raw value and an example of a good one as the operator would write
    it (`-c 5`, `conversations = 5`). They raise ValueError with a reason ("'abc' is not a
    whole number; use e.g. -c 5") that the caller puts after "invalid value for <flag>:", or
    UsageError with a message that already says what is wrong ("invalid duration '5x': ...").
    """

    from_text: Callable[[str, str], Any]  # (text after a flag, example)
    from_toml: Callable[[Any, str], Any]  # (value from tomllib, example)
    check: Callable[[str, Any], None]  # (label, value): UsageError if the engine cannot use it
    to_toml: Callable[[Any], Any] = lambda value: value
    show: Callable[[Any], str] = str  # for "(default: ...)" in the help
    # A flag given once per item (`--header A --header B`); a TOML array. from_text reads one
    # item into a 1-tuple; the items of all the flags given make the value.
    many: bool = False


WHOLE_RE = re.compile(r"[+-]?[0-9]+")
NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def shown_toml_value(value: Any) -> str:
    """How a TOML value looks, for messages: `true`, `"abc"`, `5.5`, `a table`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _listed(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def _no_check(label: str, value: Any) -> None:
    return None


def _toml_str(value: Any, example: str) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"must be a string in quotes, e.g. {example}; got {shown_toml_value(value)}"
        )
    return value


def _text_from_text(text: str, example: str) -> str:
    return text.strip()


TEXT = ValueKind(_text_from_text, _toml_str, _no_check)


def _id_from_toml(value: Any, example: str) -> str:
    # A bare number is what the default run id looks like, so `run_id = 42` is accepted too.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _toml_str(value, example)


IDENTIFIER = ValueKind(_text_from_text, _id_from_toml, _no_check)


def _at_least_1(n: int) -> int:
    if n < 1:
        raise ValueError(f"must be at least 1, got {n}")
    return n


def _count_from_text(text: str, example: str) -> int:
    s = text.strip()
    if not WHOLE_RE.fullmatch(s):
        raise ValueError(f"{text!r} is not a whole number; use e.g. {example}")
    return _at_least_1(int(s))


def _count_from_toml(value: Any, example: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(
            f"must be a whole number of at least 1, e.g. {example}; "
            f"got {shown_toml_value(value)}"
        )
    return _at_least_1(value)


def _count_check(label: str, n: int) -> None:
    if n < 1:
        raise UsageError(f"{label} must be at least 1, got {n}")


COUNT = ValueKind(_count_from_text, _count_from_toml, _count_check)


def _ms_from_text(text: str, example: str) -> float:
    """Milliseconds as the original takes them (`50`, `0.5`); a Go duration (`20ms`) works too."""
    s = text.strip()
    not_ms = ValueError(f"{text!r} is not a number of milliseconds; use e.g. {example}")
    if NUMBER_RE.fullmatch(s):
        ms = float(s)
    elif s[-1:].isalpha():  # has a unit: 20ms, 1s
        try:
            ms = parse_duration(s) * 1000
        except UsageError:
            raise not_ms from None
    else:
        raise not_ms
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"must be 0 or more milliseconds, got {text!r}")
    return ms


def _ms_from_toml(value: Any, example: str) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(
            f"must be a number of milliseconds, e.g. {example}; got {shown_toml_value(value)}"
        )
    if value < 0:
        raise ValueError(f"must be 0 or more milliseconds, got {value:g}")
    return float(value)


def _ms_check(label: str, ms: float) -> None:
    if not (math.isfinite(ms) and ms >= 0):
        raise UsageError(f"{label} must be 0 or more milliseconds, got {ms:g}")


def _int_if_whole(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


MILLISECONDS = ValueKind(
    _ms_from_text, _ms_from_toml, _ms_check, to_toml=_int_if_whole, show=lambda ms: f"{ms:g}"
)


def _duration_from_text(text: str, example: str) -> float:
    seconds = parse_duration(text)
    if not math.isfinite(seconds):  # a unit after 400 digits
        raise UsageError(
            f"invalid duration {text!r}: use a Go duration such as 500ms, 30s or 1h30m"
        )
    return seconds


def _duration_from_toml(value: Any, example: str) -> float:
    if _is_number(value):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be 0 or more seconds, got {value}")
        return float(value)
    if isinstance(value, str):
        seconds = parse_duration(value)
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {value!r}: use e.g. {example}")
        return seconds
    raise ValueError(
        f"must be a Go duration string or a number of seconds, e.g. {example}; "
        f"got {shown_toml_value(value)}"
    )


def _duration_check(label: str, seconds: float) -> None:
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UsageError(f"{label} must be 0 or more seconds, e.g. 30s; got {seconds:g}")


DURATION = ValueKind(
    _duration_from_text, _duration_from_toml, _duration_check,
    to_toml=format_duration, show=format_duration,
)


def _bool_from_text(text: str, example: str) -> bool:
    s = text.strip().lower()
    if s in ("1", "t", "true", "yes", "on"):
        return True
    if s in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not true or false; use e.g. {example}")


def _bool_from_toml(value: Any, example: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, e.g. {example}; got {shown_toml_value(value)}")
    return value


def _bool_check(label: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{label} must be true or false, got {value!r}")


SWITCH = ValueKind(_bool_from_text, _bool_from_toml, _bool_check,
                   show=lambda on: "on" if on else "off")


def _header_from_text(text: str, example: str) -> tuple[str, ...]:
    split_header(text)  # raises ValueError saying what is wrong
    return (text.strip(),)


def _headers_from_toml(value: Any, example: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"must be an array of 'Name: value' strings, e.g. {example}; "
            f"got {shown_toml_value(value)}"
        )
    for v in value:
        split_header(v)
    return tuple(v.strip() for v in value)


def _headers_check(label: str, value: Any) -> None:
    if not isinstance(value, tuple):
        raise UsageError(f"{label} must be a list of 'Name: value' strings, got {value!r}")
    for text in value:
        try:
            split_header(text)
        except ValueError as e:
            raise UsageError(f"invalid --header: {e}") from None


# Request headers for every SSE stream: `--header 'Name: value'`, once per header.
HEADERS = ValueKind(
    _header_from_text, _headers_from_toml, _headers_check, to_toml=list,
    show=lambda headers: ", ".join(header_shown(h) for h in headers) or "none", many=True,
)


def check_max_event_bytes(n: int) -> None:
    # Below a few hundred bytes no token event fits; the cap is a guard, not a filter.
    if n < 256:
        raise UsageError(f"max event bytes must be at least 256, got {n}")


def choice(choices: tuple[str, ...], what: str) -> ValueKind:
    """One of a few words; flags take any case (`-mode PRODUCER`), as the original did."""

    def from_text(text: str, example: str) -> str:
        s = text.strip().lower()
        if s not in choices:
            raise ValueError(f"{text!r} is not a {what}; use {_listed(choices)}")
        return s

    def from_toml(value: Any, example: str) -> str:
        s = _toml_str(value, example)
        if s not in choices:
            raise ValueError(f"{s!r} is not one of {', '.join(choices)}")
        return s

    def check(label: str, value: Any) -> None:
        if value not in choices:
            raise UsageError(f"invalid {label} {value!r}: use {_listed(choices)}")

    return ValueKind(from_text, from_toml, check)


