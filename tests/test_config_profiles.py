"""config/*.toml: the original tool's examples as profiles for `--config`, aimed at the
in-cluster addresses of docs/protocol.md. Read with tomllib (what is in the file) and
with the CLI's own loader (what a run gets)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"

REDIS = "redis.redis-system:6379"
SSE = "http://sse-adapter.sse-system:80"

# profile -> the values the file must hold (the original's examples)
EXPECTED: dict[str, dict[str, Any]] = {
    "smoke": dict(mode="both", redis=REDIS, sse=SSE, conversations=2, tokens=10, duration="10s"),
    "medium": dict(mode="both", redis=REDIS, sse=SSE, conversations=20, tokens=100, duration="2m"),
    "high": dict(
        mode="both", redis=REDIS, sse=SSE, conversations=100, tokens=200, delay=20, duration="5m"
    ),
    "producer-only": dict(mode="producer", redis=REDIS),
    "consumer-only": dict(mode="consumer", sse=SSE),
}
KEYS = {
    "mode",
    "redis",
    "sse",
    "conversations",
    "tokens",
    "delay",
    "duration",
    "run_id",
    "channel_prefix",
}
SECONDS = {"10s": 10, "2m": 120, "5m": 300, "30s": 30}


def test_every_profile_is_there_and_no_other() -> None:
    assert sorted(p.stem for p in CONFIG.glob("*.toml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_holds_the_original_example(name: str) -> None:
    data = tomllib.loads((CONFIG / f"{name}.toml").read_text())
    assert set(data) <= KEYS, set(data) - KEYS
    for key, value in EXPECTED[name].items():
        assert data[key] == value, key
    # A producer-only run needs no SSE address and a consumer-only run no Redis.
    if data["mode"] == "producer":
        assert "sse" not in data
    if data["mode"] == "consumer":
        assert "redis" not in data
    assert "run_id" not in data  # a fixed run id would make every run reuse conversation ids


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_profile_loads_through_the_cli(name: str) -> None:
    cli_args = pytest.importorskip("sse_tui.cli_args", reason="the CLI has not landed yet")
    path = CONFIG / f"{name}.toml"
    data = tomllib.loads(path.read_text())
    settings = cli_args.parse_args(["--config", str(path)]).settings
    assert settings.mode == data["mode"]
    assert settings.conversations == data["conversations"]
    assert settings.tokens == data["tokens"]
    assert settings.delay_ms == data["delay"]
    assert settings.duration_s == SECONDS[data["duration"]]
    if "redis" in data:
        assert settings.redis == data["redis"]
    if "sse" in data:
        assert settings.sse == data["sse"]


def test_flags_override_a_profile() -> None:
    """What run-loadtest.sh --port-forward relies on: its -r/-s beat the file's addresses."""
    cli_args = pytest.importorskip("sse_tui.cli_args", reason="the CLI has not landed yet")
    settings = cli_args.parse_args(
        [
            "--config",
            str(CONFIG / "high.toml"),
            "--redis",
            "127.0.0.1:16379",
            "--sse",
            "http://127.0.0.1:18080",
            "-c",
            "7",
        ]
    ).settings
    assert (settings.redis, settings.sse, settings.conversations) == (
        "127.0.0.1:16379",
        "http://127.0.0.1:18080",
        7,
    )
    assert settings.tokens == 200  # the rest still comes from the file
