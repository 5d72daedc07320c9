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
from sse_tui.distributions import (
    SHAPES,
    Distribution,
    DistributionError,
    ShapedFloat,
    ShapedInt,
    is_shaped,
    parse_distribution,
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


# --- a number, or a distribution to draw it from (sse_tui.distributions) --------------------

def _distribution(text: str) -> Distribution:
    try:
        return parse_distribution(text)
    except DistributionError as e:
        raise ValueError(str(e)) from None


def _looks_shaped(text: str) -> bool:
    return ".." in text or ":" in text


def _count_or_shape_from_text(text: str, example: str) -> int:
    if _looks_shaped(text):
        return ShapedInt(_distribution(text))
    return _count_from_text(text, example)


def _count_or_shape_from_toml(value: Any, example: str) -> int:
    if isinstance(value, str):
        return _count_or_shape_from_text(value, example)
    return _count_from_toml(value, example)


def _ms_or_shape_from_text(text: str, example: str) -> float:
    if _looks_shaped(text):
        return ShapedFloat(_distribution(text))
    return _ms_from_text(text, example)


def _ms_or_shape_from_toml(value: Any, example: str) -> float:
    if isinstance(value, str):
        return _ms_or_shape_from_text(value, example)
    return _ms_from_toml(value, example)


def _shape_to_toml(value: Any) -> Any:
    return str(value) if is_shaped(value) else _int_if_whole(value)


# `--tokens 50` or `--tokens 20..400`; `--delay 50` or `--delay lognormal:median=25,p99=80`.
# A distribution's value is its mean as a number (displays, capacity, the JSON's numeric key)
# and carries the distribution the engine draws from (see sse_tui.distributions.ShapedInt).
COUNT_OR_SHAPE = ValueKind(_count_or_shape_from_text, _count_or_shape_from_toml, _count_check,
                           to_toml=_shape_to_toml)
MS_OR_SHAPE = ValueKind(_ms_or_shape_from_text, _ms_or_shape_from_toml, _ms_check,
                        to_toml=_shape_to_toml, show=lambda ms: str(ms) if is_shaped(ms)
                        else f"{ms:g}")


def _shape_from_text(text: str, example: str) -> str:
    s = text.strip().lower()
    if s and s not in SHAPES:
        raise ValueError(f"{text!r} is not a known shape; use {_listed(tuple(SHAPES))}")
    return s


def _shape_from_toml(value: Any, example: str) -> str:
    return _shape_from_text(_toml_str(value, example), example)


def _shape_check(label: str, value: Any) -> None:
    if value and value not in SHAPES:
        raise UsageError(f"invalid {label} {value!r}: use {_listed(tuple(SHAPES))}")


# A named preset of conversation shapes (--shape chat); "" = none.
SHAPE = ValueKind(_shape_from_text, _shape_from_toml, _shape_check)


def _speed_from_text(text: str, example: str) -> float:
    s = text.strip().rstrip("xX")
    if not NUMBER_RE.fullmatch(s) or not 0 < float(s) < math.inf:
        raise ValueError(f"{text!r} is not a speed above 0; use e.g. {example}")
    return float(s)


def _speed_from_toml(value: Any, example: str) -> float:
    if isinstance(value, str):
        return _speed_from_text(value, example)
    if not _is_number(value) or not 0 < value < math.inf:
        raise ValueError(f"must be a number above 0, e.g. {example}; "
                         f"got {shown_toml_value(value)}")
    return float(value)


def _speed_check(label: str, value: Any) -> None:
    if not _is_number(value) or not 0 < value < math.inf:
        raise UsageError(f"{label} must be above 0 (2 = twice as fast), got {value!r}")


# A replay's speed (--speed 2: twice as fast, gaps and arrivals halved).
SPEED = ValueKind(_speed_from_text, _speed_from_toml, _speed_check, to_toml=_int_if_whole,
                  show=lambda x: f"{x:g}")


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


def check_token_bytes(n: int) -> None:
    if n > 65536:
        raise UsageError(f"--token-bytes {n} is beyond any model's token; use at most 65536 "
                         "(a whole answer's size belongs in --tokens)")


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




# --- open-loop load: arrival rate, seed, stages ------------------------------------------------

def _rate_from_text(text: str, example: str) -> float:
    """Arrivals per second: `20`, `2.5`, `20/s`."""
    s = text.strip().removesuffix("/s")
    if not NUMBER_RE.fullmatch(s):
        raise ValueError(f"{text!r} is not a number per second; use e.g. {example}")
    rate = float(s)
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"must be 0 or more per second, got {text!r}")
    return rate


def _rate_from_toml(value: Any, example: str) -> float:
    if isinstance(value, str):
        return _rate_from_text(value, example)
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"must be 0 or more per second, e.g. {example}; "
                         f"got {shown_toml_value(value)}")
    return float(value)


def _rate_check(label: str, rate: Any) -> None:
    if not _is_number(rate) or not (math.isfinite(rate) and rate >= 0):
        raise UsageError(f"{label} must be 0 or more per second, got {rate!r}")


# New conversations per second (--rate); 0 = closed loop.
RATE = ValueKind(_rate_from_text, _rate_from_toml, _rate_check, to_toml=_int_if_whole,
                 show=lambda rate: f"{rate:g}")


def _whole_from_text(text: str, example: str) -> int:
    s = text.strip()
    if not WHOLE_RE.fullmatch(s) or int(s) < 0:
        raise ValueError(f"{text!r} is not a whole number of 0 or more; use e.g. {example}")
    return int(s)


def _whole_from_toml(value: Any, example: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"must be a whole number of 0 or more, e.g. {example}; "
                         f"got {shown_toml_value(value)}")
    return value


def _whole_check(label: str, n: Any) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise UsageError(f"{label} must be a whole number of 0 or more, got {n!r}")


# A random seed (--seed); 0 = a new one each run.
SEED = ValueKind(_whole_from_text, _whole_from_toml, _whole_check)


@dataclass(frozen=True)
class Stage:
    """One stage of a load profile: a target (conversations live at once, or with --rate
    arrivals per second) held for a duration."""

    target: float
    duration_s: float

    @property
    def text(self) -> str:
        """As the settings keep it: `10:30s`."""
        return f"{self.target:g}:{format_duration(self.duration_s)}"


_STAGES_EXAMPLE = "10:30s,50:1m,100:2m"


def parse_stage(text: str) -> Stage:
    """`TARGET:DURATION` (`50:1m`, `2.5:30s`); ValueError saying what is wrong."""
    target_text, sep, duration_text = text.strip().partition(":")
    target_text = target_text.strip().removesuffix("/s")
    if not sep or not NUMBER_RE.fullmatch(target_text):
        raise ValueError(f"{text.strip()!r} is not a stage: give TARGET:DURATION, e.g. "
                         f"{_STAGES_EXAMPLE}")
    target = float(target_text)
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"stage {text.strip()!r}: the target must be above 0")
    try:
        duration = parse_duration(duration_text)
    except UsageError as e:
        raise ValueError(f"stage {text.strip()!r}: {e}") from None
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"stage {text.strip()!r}: the duration must be above 0, e.g. 30s")
    return Stage(target, duration)


def parse_stages(items: tuple[str, ...] | list[str]) -> tuple[Stage, ...]:
    """The stages of a `stages` setting (each item one stage)."""
    return tuple(parse_stage(item) for item in items)


def stages_length_s(items: tuple[str, ...]) -> float:
    """How long the whole profile runs."""
    return sum(stage.duration_s for stage in parse_stages(items))


def _stages_from_text(text: str, example: str) -> tuple[str, ...]:
    if not text.strip():
        raise ValueError(f"no stages given; use e.g. {example}")
    return tuple(parse_stage(part).text for part in text.split(","))


def _stages_from_toml(value: Any, example: str) -> tuple[str, ...]:
    if isinstance(value, str):  # `stages = "10:30s,50:1m"` as typed after the flag
        return _stages_from_text(value, example)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be an array of \"TARGET:DURATION\" strings, e.g. "
                         f"stages = [\"10:30s\", \"50:1m\"]; got {shown_toml_value(value)}")
    return tuple(parse_stage(v).text for v in value)


def _stages_check(label: str, value: Any) -> None:
    if not isinstance(value, tuple):
        raise UsageError(f"{label} must be a list of TARGET:DURATION stages, got {value!r}")
    for item in value:
        try:
            parse_stage(item)
        except ValueError as e:
            raise UsageError(f"invalid --stages: {e}") from None


# A load profile (--stages 10:30s,50:1m): kept as the stages' text, as TOML and JSON show it.
STAGES = ValueKind(_stages_from_text, _stages_from_toml, _stages_check, to_toml=list,
                   show=lambda items: ",".join(items) or "none")


def check_load_model(rate: float, duration_s: float, stages: tuple[str, ...]) -> None:
    """What --rate and --stages need of the other settings; UsageError saying what to do."""
    if stages and duration_s <= 0:
        raise UsageError("--stages needs a run length: leave out --duration (the run then "
                         "lasts as long as the profile) or give one above 0")
    if rate > 0 and duration_s <= 0:
        raise UsageError("--rate needs a run length (an open loop has no round to finish): "
                         "give --duration, e.g. --duration 1m")
    if stages and rate <= 0:
        for stage in parse_stages(stages):
            if not float(stage.target).is_integer():
                raise UsageError(
                    f"stage {stage.text}: without --rate a stage's target is conversations "
                    f"live at once, a whole number; add --rate for arrivals per second")
