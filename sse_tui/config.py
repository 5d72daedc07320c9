"""TOML configuration files: the same keys as the flags, loaded under the flags and saved back.

A file holds any subset of the settings, for example::

    mode = "both"
    redis = "localhost:6379"
    conversations = 20
    delay = 12.5          # milliseconds
    duration = "5m"       # a Go duration, or a number of seconds
    grace = "2s"

`load_config` checks every key and value on its own, so a mistake is reported with the
file, the key and its line, not later as an anonymous bad setting. The keys, and how each
value is read, checked and written back, come from the settings table (`settings.SETTINGS`).
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from sse_tui.files import WriteError, write_private_atomically
from sse_tui.settings import SETTINGS, Settings, SettingSpec, UsageError

# In the current directory: where an operator looks first, and then runs `--config sse-tui.toml`.
DEFAULT_CONFIG_PATH = Path("sse-tui.toml")

# Besides the documented keys, flag spellings (`token-delay`) and field names (`delay_ms`) are
# accepted, because people copy them from the help and the JSON summary.
_SPEC_OF_KEY: dict[str, SettingSpec] = {key: s for s in SETTINGS for key in s.toml_keys}
_DOCUMENTED_KEYS = ", ".join(s.toml_key for s in SETTINGS)


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
        spec = _SPEC_OF_KEY.get(key)
        if spec is None:
            raise UsageError(
                f"{where}: unknown key {key!r}: remove it; the keys are {_DOCUMENTED_KEYS}"
            )
        if spec.field in source_key:
            raise UsageError(
                f"{where}: {key!r} sets the same thing as {source_key[spec.field]!r}: "
                f"keep only one"
            )
        try:
            # Checked the way the run will check it (addresses, run id), one key at a time so
            # the message can say which key is wrong.
            values[spec.field] = spec.read_toml(key, value)
        except (ValueError, UsageError) as e:
            raise UsageError(f"{where}: {key}: {e}") from None
        source_key[spec.field] = key
    return values


def save_settings(settings: Settings, path: str | Path) -> Path:
    """Write the settings as TOML (creating parent directories); return the absolute path.

    No secret is written (a password in a URL, a header's literal value): the file's comments
    say how to give them instead. The file is private (0600) and written atomically: a crash
    never leaves a half-written file where a good one was. Raises UsageError when the file
    cannot be written.
    """
    path = Path(path).absolute()
    body = tomli_w.dumps(settings.to_toml_dict())
    lines = [f"# sse-tui settings. Use with: sse-tui --config {path.name}",
             "# Secrets are never saved here: give the Redis password with REDIS_PASSWORD or",
             "# --redis-password-file FILE, and --header values as $VAR references.",
             *(f"# {line}" for note in settings.save_notes() for line in _wrapped(note))]
    text = "\n".join(lines) + "\n" + body
    try:
        return write_private_atomically(path, text, parents=True)
    except WriteError as e:
        raise UsageError(f"cannot save settings: {e}; choose a writable location") from None


def _wrapped(note: str) -> list[str]:
    return textwrap.wrap(note, width=90, break_on_hyphens=False, break_long_words=False)
