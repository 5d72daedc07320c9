"""TOML settings files: loading with checks that name the file and key, saving, round trip."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import tomli_w

from sse_tui.config import DEFAULT_CONFIG_PATH, load_config, save_settings
from sse_tui.settings import SETTINGS, Settings, SettingSpec, UsageError


def write(tmp_path: Path, text: str, name: str = "sse-tui.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_default_path_is_in_the_current_directory() -> None:
    assert Path("sse-tui.toml") == DEFAULT_CONFIG_PATH
    assert not DEFAULT_CONFIG_PATH.is_absolute()


def test_loads_every_key_with_flag_names(tmp_path: Path) -> None:
    path = write(tmp_path, """
mode = "producer"
redis = "redis://redis.example:6380/0"
sse = "https://sse.example"
conversations = 20
tokens = 200
delay = 12.5
duration = "1h30m"
run_id = "nightly-1"
channel_prefix = "chat:tokens:"
transport = "httpx"
grace = "500ms"
""")
    assert load_config(path) == {
        "mode": "producer",
        "redis": "redis://redis.example:6380/0",
        "sse": "https://sse.example",
        "conversations": 20,
        "tokens": 200,
        "delay_ms": 12.5,
        "duration_s": 5400.0,
        "run_id": "nightly-1",
        "channel_prefix": "chat:tokens:",
        "transport": "httpx",
        "grace_s": 0.5,
    }


def test_accepts_a_string_path(tmp_path: Path) -> None:
    path = write(tmp_path, "tokens = 3\n")
    assert load_config(str(path)) == {"tokens": 3}


def test_empty_file_sets_nothing(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing yet\n")) == {}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("token_delay = 5", {"delay_ms": 5.0}),
        ('"token-delay" = 5', {"delay_ms": 5.0}),
        ("delay_ms = 0.25", {"delay_ms": 0.25}),
        ("delay = 0", {"delay_ms": 0.0}),
        ("duration_s = 90", {"duration_s": 90.0}),
        ("duration = 90", {"duration_s": 90.0}),
        ("duration = 1.5", {"duration_s": 1.5}),
        ('duration = "0"', {"duration_s": 0.0}),
        ('duration = "1.5h"', {"duration_s": 5400.0}),
        ("grace_s = 3", {"grace_s": 3.0}),
        ('grace = "0s"', {"grace_s": 0.0}),
        ('"run-id" = "r2"', {"run_id": "r2"}),
        ("run_id = 1700000000", {"run_id": "1700000000"}),
        ('"channel-prefix" = "x:"', {"channel_prefix": "x:"}),
    ],
)
def test_aliases_and_number_forms(tmp_path: Path, line: str, expected: dict) -> None:
    assert load_config(write(tmp_path, line + "\n")) == expected


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ("conversations = true", "conversations", "whole number"),
        ("conversations = 5.5", "conversations", "whole number"),
        ('conversations = "5"', "conversations", "whole number"),
        ("conversations = 0", "conversations", "at least 1"),
        ("tokens = -3", "tokens", "at least 1"),
        ("delay = true", "delay", "milliseconds"),
        ('delay = "fast"', "delay", "milliseconds"),
        ("delay = -1", "delay", "0 or more"),
        ("delay = nan", "delay", "milliseconds"),
        ("duration = true", "duration", "duration"),
        ('duration = "5x"', "duration", "Go duration"),
        ('duration = "-1s"', "duration", "negative"),
        ('duration = ""', "duration", "empty duration"),
        ("duration = -5", "duration", "0 or more"),
        ("duration = inf", "duration", "0 or more"),
        ('duration = "inf"', "duration", "invalid duration"),
        ('grace = "soon"', "grace", "Go duration"),
        ("mode = 1", "mode", "string"),
        ('mode = "fast"', "mode", "producer, consumer, both"),
        ('transport = "grpc"', "transport", "raw, httpx"),
        ('redis = "localhost:port"', "redis", "host:port"),
        ("redis = 6379", "redis", "string"),
        ('sse = "ftp://x"', "sse", "http://"),
        ('channel_prefix = ""', "channel_prefix", "empty channel prefix"),
        ('channel_prefix = "llm:tokens:*"', "channel_prefix", "'*'"),
        ('run_id = "a b"', "run_id", "invalid run id"),
        ("run_id = true", "run_id", "string"),
        ("[sse]\nurl = 'x'", "sse", "table"),
        ("mode = ['both']", "mode", "array"),
    ],
)
def test_wrong_values_name_file_key_and_line(
    tmp_path: Path, text: str, key: str, hint: str
) -> None:
    path = write(tmp_path, "# settings\n" + text + "\n")
    with pytest.raises(UsageError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert f"line 2: {key}:" in message
    assert hint in message
    assert "\n" not in message


def test_unknown_key_names_file_line_and_the_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, 'mode = "both"\nconversation = 5\n')
    with pytest.raises(UsageError, match="unknown key 'conversation'") as err:
        load_config(path)
    message = str(err.value)
    assert f"config file {path}, line 2:" in message
    assert "conversations" in message  # the list of keys helps spot the typo
    assert "\n" not in message


def test_two_spellings_of_one_setting_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "delay = 5\ndelay_ms = 6\n")
    with pytest.raises(UsageError, match="'delay_ms' sets the same thing as 'delay'"):
        load_config(path)


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'mode = "both"\nconversations = 5\nmode = both\n')
    with pytest.raises(UsageError) as err:
        load_config(path)
    message = str(err.value)
    assert f"config file {path} is not valid TOML" in message
    assert "line 3" in message
    assert "quotes" in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(UsageError, match=r"config file .*nope\.toml not found: check the path"):
        load_config(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        load_config(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('run_id = "café"\n'.encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8"):
        load_config(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tokens = 3\n")
    path.chmod(0)
    try:
        with pytest.raises(UsageError, match=r"cannot read config file .*permissions"):
            load_config(path)
    finally:
        path.chmod(0o644)


# --- saving -----------------------------------------------------------------------------

ROUND_TRIP = [
    Settings(run_id="r1"),
    Settings(
        mode="producer", redis="rediss://user@redis.example:6380/2", sse="https://sse.example/",
        conversations=100, tokens=200, delay_ms=12.5, duration_s=5400.0, run_id="nightly_7",
        channel_prefix="chat:tokens:", transport="httpx", grace_s=0.5,
    ),
    Settings(mode="consumer", delay_ms=0.0, duration_s=0.0, grace_s=0.0, run_id="x"),
    Settings(delay_ms=1.0, duration_s=0.5, grace_s=90.0, run_id="y"),
    Settings(delay_ms=0.25, duration_s=3661.5, grace_s=2.5, run_id="z"),
    Settings(delay_ms=1234.5678, duration_s=86400.0 * 2, grace_s=0.001, run_id="w"),
]


@pytest.mark.parametrize("settings", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_save_then_load_gives_the_same_settings(tmp_path: Path, settings: Settings) -> None:
    path = save_settings(settings, tmp_path / "s.toml")
    assert Settings(**load_config(path)) == settings


@pytest.mark.parametrize("seconds", [0.7, 59.1234567])
def test_round_trip_of_awkward_durations(tmp_path: Path, seconds: float) -> None:
    settings = Settings(duration_s=seconds, run_id="r")
    assert Settings(**load_config(save_settings(settings, tmp_path / "s.toml"))) == settings


def test_saved_file_uses_flag_keys_and_go_durations(tmp_path: Path) -> None:
    settings = Settings(delay_ms=12.5, duration_s=5400, grace_s=0.5, run_id="r1")
    text = save_settings(settings, tmp_path / "s.toml").read_text(encoding="utf-8")
    assert 'duration = "1h30m"' in text
    assert 'grace = "500ms"' in text
    assert "delay = 12.5" in text
    assert text.startswith("# sse-tui settings. Use with: sse-tui --config s.toml\n")


def test_save_creates_parent_directories_and_returns_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = save_settings(Settings(run_id="r"), Path("a/b/sse-tui.toml"))
    assert path.is_absolute()
    assert path == tmp_path / "a" / "b" / "sse-tui.toml"
    assert path.is_file()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)  # it may name secrets' places
    assert [p.name for p in path.parent.iterdir()] == ["sse-tui.toml"]  # no temp file left


def test_save_to_default_path_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = save_settings(Settings(run_id="r"), DEFAULT_CONFIG_PATH)
    assert path == tmp_path / "sse-tui.toml"


def test_save_overwrites_and_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("old = true\n")
    path.chmod(0o600)
    save_settings(Settings(tokens=7, run_id="r"), path)
    assert load_config(path)["tokens"] == 7
    assert path.stat().st_mode & 0o777 == 0o600


def test_save_to_an_impossible_place_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match=r"cannot save settings: .*choose a writable location"):
        save_settings(Settings(run_id="r"), blocker / "s.toml")


def test_read_error_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "tokens = 3\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(UsageError, match=r"cannot read config file .*Permission denied"):
        load_config(path)


# --- the settings table -----------------------------------------------------------------

def test_toml_and_json_keys() -> None:
    """The documented keys (README): a file saved by one version loads in the next, and
    scripts read the JSON summary's `settings` by these names."""
    settings = Settings(run_id="r")
    # The keys that existed keep their names and order; new settings come after them.
    assert list(settings.to_toml_dict())[:12] == [
        "mode", "redis", "sse", "conversations", "tokens", "delay", "duration", "run_id",
        "channel_prefix", "transport", "grace", "idle_timeout",
    ]
    assert list(settings.summary_dict())[:12] == [
        "mode", "redis", "sse", "conversations", "tokens", "delay_ms", "duration_s", "run_id",
        "channel_prefix", "transport", "grace_s", "idle_timeout_s",
    ]
    assert "retry_budget" in settings.to_toml_dict()
    assert settings.summary_dict()["retry_budget_s"] == 30.0
    assert settings.summary_dict()["delay_ms"] == 50.0


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.field)
def test_every_setting_loads_under_each_of_its_keys(tmp_path: Path, spec: SettingSpec) -> None:
    expected = spec.read_flag("--x", spec.example)
    saved = Settings(run_id="r").with_changes(**{spec.field: expected}).to_toml_dict()
    for key in spec.toml_keys:
        path = tmp_path / "s.toml"
        path.write_text(tomli_w.dumps({key: saved[spec.toml_key]}), encoding="utf-8")
        assert load_config(path) == {spec.field: expected}, key


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (dict(mode="sideways"), "invalid mode 'sideways': use producer, consumer or both"),
        (dict(conversations=0), "conversations must be at least 1, got 0"),
        (dict(tokens=-1), "tokens must be at least 1, got -1"),
        (dict(delay_ms=-1.0), "delay must be 0 or more milliseconds"),
        (dict(duration_s=float("nan")), "duration must be 0 or more seconds"),
        (dict(grace_s=-1.0), "grace must be 0 or more seconds"),
        (dict(idle_timeout_s=-1.0), "idle timeout must be 0 or more seconds"),
        (dict(transport="grpc"), "invalid transport 'grpc': use raw or httpx"),
        (dict(channel_prefix="a*"), "invalid channel prefix 'a*'"),
        (dict(run_id="a b"), "invalid run id 'a b'"),
        (dict(redis="host:port"), "invalid redis port"),
        (dict(mode="consumer", redis="host:port"), "invalid redis port"),
        (dict(sse="ftp://x"), "invalid SSE URL"),
    ],
)
def test_validated_names_the_bad_value(changes: dict, expected: str) -> None:
    with pytest.raises(UsageError, match=re.escape(expected)):
        Settings(run_id="r").with_changes(**changes).validated()


def test_a_mode_may_leave_out_what_it_does_not_use() -> None:
    Settings(mode="consumer", redis="", run_id="r").validated()
    Settings(mode="producer", sse="", run_id="r").validated()
    with pytest.raises(UsageError, match="empty redis address"):
        Settings(mode="producer", redis="", run_id="r").validated()
