"""TOML configuration files: the same keys as the flags, loaded under the flags and saved back.

A file holds any subset of the settings, for example::

    mode = "both"
    redis = "localhost:6379"
    conversations = 20
    delay = 12.5          # milliseconds
    duration = "5m"       # a Go duration, or a number of seconds
    grace = "2s"

`load_config` checks every key and value on its own, so a mistake is reported with the
file, the key and its line, not later as an anonymous bad setting.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from sse_tui.settings import MODES, TRANSPORTS, Settings, UsageError, parse_duration

# In the current directory: where an operator looks first, and then runs `--config sse-tui.toml`.
DEFAULT_CONFIG_PATH = Path("sse-tui.toml")

# TOML key -> Settings field. Flag spellings (`token-delay`) and field names (`delay_ms`) are
# accepted as well as the documented keys, because people copy them from the help and the JSON.
_KEY_TO_FIELD: dict[str, str] = {
    "mode": "mode",
    "redis": "redis",
    "sse": "sse",
    "conversations": "conversations",
    "tokens": "tokens",
    "delay": "delay_ms",
    "token_delay": "delay_ms",
    "token-delay": "delay_ms",
    "delay_ms": "delay_ms",
    "duration": "duration_s",
    "duration_s": "duration_s",
    "run_id": "run_id",
    "run-id": "run_id",
    "channel_prefix": "channel_prefix",
    "channel-prefix": "channel_prefix",
    "transport": "transport",
    "grace": "grace_s",
    "grace_s": "grace_s",
    "idle_timeout": "idle_timeout_s",
    "idle-timeout": "idle_timeout_s",
    "idle_timeout_s": "idle_timeout_s",
}
_DOCUMENTED_KEYS = (
    "mode, redis, sse, conversations, tokens, delay, duration, run_id, channel_prefix, "
    "transport, grace, idle_timeout"
)


def _type_name(value: Any) -> str:
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


def _as_str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(
            f"must be a string in quotes, e.g. {key} = \"...\"; got {_type_name(value)}"
        )
    return value


def _as_choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def convert(key: str, value: Any) -> str:
        s = _as_str(key, value)
        if s not in choices:
            raise ValueError(f"{s!r} is not one of {', '.join(choices)}")
        return s

    return convert


def _as_count(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(
            f"must be a whole number of at least 1, e.g. {key} = 5; got {_type_name(value)}"
        )
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _as_delay_ms(key: str, value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(
            f"must be a number of milliseconds, e.g. {key} = 50; got {_type_name(value)}"
        )
    if value < 0:
        raise ValueError(f"must be 0 or more milliseconds, got {value:g}")
    return float(value)


def _as_duration_s(key: str, value: Any) -> float:
    if _is_number(value):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be 0 or more seconds, got {value}")
        return float(value)
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except UsageError as e:
            raise ValueError(str(e)) from None
        if not math.isfinite(seconds):
            raise ValueError(f"invalid duration {value!r}: use e.g. {key} = \"30s\"")
        return seconds
    raise ValueError(
        f"must be a Go duration string or a number of seconds, e.g. {key} = \"30s\"; "
        f"got {_type_name(value)}"
    )


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


def _as_channel_prefix(key: str, value: Any) -> str:
    try:
        return check_channel_prefix(_as_str(key, value))
    except UsageError as e:
        raise ValueError(str(e)) from None


def _as_run_id(key: str, value: Any) -> str:
    # A bare number is what the default run id looks like, so `run_id = 42` is accepted too.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _as_str(key, value)


_CONVERTERS: dict[str, Callable[[str, Any], Any]] = {
    "mode": _as_choice(MODES),
    "redis": _as_str,
    "sse": _as_str,
    "conversations": _as_count,
    "tokens": _as_count,
    "delay_ms": _as_delay_ms,
    "duration_s": _as_duration_s,
    "run_id": _as_run_id,
    "channel_prefix": _as_channel_prefix,
    "transport": _as_choice(TRANSPORTS),
    "grace_s": _as_duration_s,
    "idle_timeout_s": _as_duration_s,
}


def _key_line(text: str, key: str) -> int | None:
    """The line a top-level key is set on, for the error message (best effort)."""
    k = re.escape(key)
    # `key = ...`, `"key" = ...` or a `[key]` table header
    pattern = re.compile(rf"""^\s*(?:(?:{k}|"{k}"|'{k}')\s*=|\[\s*(?:{k}|"{k}"|'{k}')\s*\])""")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def _read_text(path: Path) -> str:
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"config file {name} not found: check the path, or write one with "
            f"key = value lines such as conversations = 5"
        ) from None
    except IsADirectoryError:
        raise UsageError(
            f"config file {name} is a directory: give the path of a .toml file"
        ) from None
    except OSError as e:
        raise UsageError(
            f"cannot read config file {name}: {e.strerror or e}; check its permissions"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(
            f"config file {name} is not UTF-8 text: save it as a UTF-8 TOML file"
        ) from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML settings file and return {Settings field name: value}, checked and converted.

    Raises UsageError (one line naming the file, the key and its line) on any problem.
    """
    path = Path(path)
    name = str(path)
    text = _read_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(
            f"config file {name} is not valid TOML: {e}; write key = value, strings in quotes"
        ) from None

    values: dict[str, Any] = {}
    source_key: dict[str, str] = {}
    for key, value in raw.items():
        line = _key_line(text, key)
        where = f"config file {name}" + (f", line {line}" if line else "")
        field = _KEY_TO_FIELD.get(key)
        if field is None:
            raise UsageError(
                f"{where}: unknown key {key!r}: remove it; the keys are {_DOCUMENTED_KEYS}"
            )
        if field in source_key:
            raise UsageError(
                f"{where}: {key!r} sets the same thing as {source_key[field]!r}: keep only one"
            )
        try:
            converted = _CONVERTERS[field](key, value)
            # Check the value the way the run will (addresses, run id), one key at a time so the
            # message can say which key is wrong.
            Settings().with_changes(**{field: converted}).validated()
        except (ValueError, UsageError) as e:
            raise UsageError(f"{where}: {key}: {e}") from None
        values[field] = converted
        source_key[field] = key
    return values


def save_settings(settings: Settings, path: str | Path) -> Path:
    """Write the settings as TOML (creating parent directories); return the absolute path.

    Raises UsageError when the file cannot be written. The write is atomic: a crash never
    leaves a half-written file where a good one was.
    """
    path = Path(path).absolute()
    body = tomli_w.dumps(settings.to_toml_dict())
    text = f"# sse-tui settings. Use with: sse-tui --config {path.name}\n{body}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp makes the file 0600; keep an existing file's mode, else the usual 0644.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise UsageError(
            f"cannot save settings to {path}: {e.strerror or e}; choose a writable location"
        ) from None
    return path
