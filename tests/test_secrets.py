"""Secrets stay secret: a Redis password and an SSE auth header are used, and never shown or
written — not in the banner, progress, summary, JSON, saved TOML, TUI screen or engine log.

The stack is real: a redis-server that requires a password (and has an ACL user), and the
reference adapter answering 401 to streams without the right Authorization header, so a
run whose tokens flow has really authenticated on both sides.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from sse_tui.cli_args import parse_args
from sse_tui.config import load_config, save_settings
from sse_tui.credentials import Redactor, redact_url, resolve_header, url_without_password
from sse_tui.engine.process import EngineProcess
from sse_tui.report import summary_dict
from sse_tui.sandbox import Sandbox
from sse_tui.settings import Settings, UsageError, check_outside_world
from sse_tui.tui.app import make_app
from tests.fake_engine import wait_for

pytestmark = pytest.mark.timeout(90)

REDIS_PASSWORD = "pw-Rd5-8c1f"
ACL_USER, ACL_PASSWORD = "loadgen", "acl-Pw-77e2"
SSE_TOKEN = "tok-SSE-4a9b"
SECRETS = (REDIS_PASSWORD, ACL_PASSWORD, SSE_TOKEN)
RUN_TIMEOUT_S = 40.0


@dataclass
class Secured:
    sandbox: Sandbox
    port: int  # the redis-server's

    def url(self, userinfo: str = "") -> str:
        return f"redis://{userinfo}127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    """The stack, locked: Redis wants a password (the adapter's subscription was made before)
    and the adapter wants `Authorization: Bearer <token>` on every stream."""
    with Sandbox(require_header=f"Authorization: Bearer {SSE_TOKEN}") as sb:
        port = int(sb.redis_address.rsplit(":", 1)[1])
        admin = redis.Redis(host="127.0.0.1", port=port)
        admin.acl_setuser(ACL_USER, enabled=True, passwords=[f"+{ACL_PASSWORD}"],
                          keys=["*"], channels=["*"], commands=["+@all"])
        # Existing connections (the adapter's) stay logged in; every new one must AUTH.
        admin.config_set("requirepass", REDIS_PASSWORD)
        admin.close()
        yield Secured(sb, port)


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret appears in {where}"


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sse_tui", "--no-tui", *args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, **env})


LOAD = ["-c", "2", "-t", "20", "-d", "1", "--duration", "0", "--grace", "1s"]
HEADER = ["--header", "Authorization: Bearer $SSE_TOKEN"]


@pytest.mark.parametrize("source", ["url", "acl-url", "env", "file"])
def test_an_authenticated_run_shows_and_writes_no_secret(
        secured: Secured, tmp_path: Path, source: str) -> None:
    env = {"SSE_TOKEN": SSE_TOKEN}
    password_file = tmp_path / "redis-password"
    password_file.write_text(REDIS_PASSWORD + "\n")
    redis_arg = {
        "url": secured.url(f":{REDIS_PASSWORD}@"),
        "acl-url": secured.url(f"{ACL_USER}:{ACL_PASSWORD}@"),
        "env": secured.url(),
        "file": secured.url(),
    }[source]
    extra = ["--redis-password-file", str(password_file)] if source == "file" else []
    if source == "env":
        env["REDIS_PASSWORD"] = REDIS_PASSWORD
    out_json = tmp_path / "summary.json"
    argv = ["-r", redis_arg, "-s", secured.sandbox.sse_url, *HEADER, *extra, *LOAD,
            "--json", str(out_json)]

    run = run_cli(argv, env)

    assert run.returncode == 0, run.stderr
    summary = json.loads(out_json.read_text())
    assert summary["tokens_received"] == 40  # both sides really logged in
    assert summary["tokens_published"] == 40
    assert_no_secret("stdout", run.stdout)
    assert_no_secret("stderr", run.stderr)
    assert_no_secret("the JSON summary", out_json.read_text())
    assert summary["settings"]["headers"] == ["Authorization: ***"]
    assert stat.S_IMODE(out_json.stat().st_mode) == 0o600

    # The same command line, saved as the TUI's `w` saves it.
    saved = tmp_path / "saved.toml"
    old = dict(os.environ)
    os.environ.update(env)
    try:
        options = parse_args(argv)
        save_settings(options.settings, saved)
    finally:
        os.environ.clear()
        os.environ.update(old)
    text = saved.read_text()
    assert_no_secret("the saved TOML", text)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert "REDIS_PASSWORD" in text  # the comment says where the password goes instead
    assert 'headers = [\n    "Authorization: Bearer $SSE_TOKEN",\n]' in text


@pytest.mark.parametrize("userinfo, expected", [
    (":wrong-pw@", "the user name or password was refused (WRONGPASS)"),
    (f"{ACL_USER}:wrong-pw@", "the user name or password was refused (WRONGPASS)"),
    ("", "a password is required"),
])
def test_a_wrong_or_missing_password_is_one_clear_line(
        secured: Secured, userinfo: str, expected: str) -> None:
    run = run_cli(["-m", "producer", "-r", secured.url(userinfo), *LOAD], {})
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    shown = secured.url(f"{userinfo.split(':')[0]}:***@" if userinfo else "")
    assert lines[0].startswith(f"sse-tui: Redis at {shown}: {expected}"), lines[0]
    assert "wrong-pw" not in run.stdout + run.stderr


def test_a_wrong_header_value_is_refused_and_not_shown(secured: Secured) -> None:
    run = run_cli(["-m", "consumer", "-s", secured.sandbox.sse_url, *HEADER, "-c", "1",
                   "--duration", "0", "--retry-budget", "0"], {"SSE_TOKEN": "wrong-tok-123"})
    assert run.returncode != 0
    assert "401" in run.stdout + run.stderr
    assert "wrong-tok-123" not in run.stdout + run.stderr


def test_an_unset_header_variable_is_a_usage_error(secured: Secured) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SSE_TOKEN"}
    run = subprocess.run([sys.executable, "-m", "sse_tui", "--no-tui", "-s",
                          secured.sandbox.sse_url, *HEADER], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S, env=env)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "sse-tui: --header: header Authorization uses $SSE_TOKEN, which is not set in the "
        "environment")


async def test_the_tui_shows_saves_and_logs_no_secret(
        secured: Secured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSE_TOKEN", SSE_TOKEN)
    settings = Settings(redis=secured.url(f":{REDIS_PASSWORD}@"), sse=secured.sandbox.sse_url,
                        headers=("Authorization: Bearer $SSE_TOKEN",), conversations=2,
                        tokens=400, delay_ms=5, duration_s=60, grace_s=0.5).validated()
    saved = tmp_path / "sse-tui.toml"
    handle = EngineProcess(settings)
    app = make_app(handle, config_path=saved)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.last_snapshot is not None
                           and app.last_snapshot.total.tokens_received > 20,
                           timeout=20, what="tokens through both logins")
            await pilot.press("w")
            await wait_for(pilot, saved.exists, timeout=5, what="the saved settings")
            assert_no_secret("the TUI screen", app.export_screenshot())
            assert "redis://:***@127.0.0.1" in app.export_screenshot().replace("&#160;", " ")
            log_path = handle._log_path
            assert log_path is not None
            await pilot.press("q")
        assert_no_secret("the engine log", Path(log_path).read_text())
        assert_no_secret("the saved TOML", saved.read_text())
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        snapshot = handle.snapshot()
        assert_no_secret("the JSON summary", json.dumps(summary_dict(snapshot)))
    finally:
        handle.close()


# --- the pieces -----------------------------------------------------------------------------

@pytest.mark.parametrize("url, shown, saved", [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0", "redis://h:6379/0"),
    ("redis://:p@ss@h:6379", "redis://:***@h:6379", "redis://h:6379"),  # an @ in it
    ("rediss://user:p%40ss@h:6380", "rediss://user:***@h:6380", "rediss://user@h:6380"),
    ("https://token@sse.example/x", "https://***@sse.example/x", "https://sse.example/x"),
    ("redis://user@h:6379", "redis://user@h:6379", "redis://user@h:6379"),  # a user name
    ("http://sse.example:8080", "http://sse.example:8080", "http://sse.example:8080"),
    ("localhost:6379", "localhost:6379", "localhost:6379"),
])
def test_urls_are_shown_and_saved_without_their_password(url: str, shown: str,
                                                         saved: str) -> None:
    assert redact_url(url) == shown
    assert url_without_password(url) == saved


def test_the_redactor_hides_secrets_in_library_texts() -> None:
    redact = Redactor(["p@ss word", "tok"])
    text = "Error AUTH p@ss word failed for redis://u:p%40ss%20word@h, header tok, x=p%40ss+word"
    assert redact(text) == "Error AUTH *** failed for redis://u:***@h, header ***, x=***"
    # `X-Debug: 1` is no secret worth garbling every address for.
    assert Redactor(["1"])("cannot reach 127.0.0.1:1") == "cannot reach 127.0.0.1:1"


def test_settings_show_no_secret_in_json_repr_or_toml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T", "secret-value")
    s = Settings(redis="redis://u:secret-pw@h:1", sse="https://user:secret-sse@h",
                 headers=("Authorization: Bearer $T", "X-Api-Key: secret-literal"))
    shown = json.dumps(s.summary_dict()) + repr(s) + json.dumps(s.to_toml_dict())
    for secret in ("secret-pw", "secret-sse", "secret-value", "secret-literal"):
        assert secret not in shown
    assert s.summary_dict()["headers"] == ["Authorization: ***", "X-Api-Key: ***"]
    assert s.to_toml_dict()["headers"] == ["Authorization: Bearer $T"]  # a reference is kept
    assert len(s.save_notes()) == 3  # redis password, SSE password, the literal header


def test_header_values_are_resolved_from_the_environment() -> None:
    env = {"TOKEN": "abc", "USER_ID": "42"}
    assert resolve_header("Authorization: Bearer ${TOKEN}", env) == ("Authorization",
                                                                      "Bearer abc")
    assert resolve_header("X-User: $USER_ID-$TOKEN", env) == ("X-User", "42-abc")
    assert resolve_header("X-Price: 5$", env) == ("X-Price", "5$")  # no name: kept as is


@pytest.mark.parametrize("header, problem", [
    ("Authorization Bearer x", "is not 'Name: value'"),
    ("Bad Name: x", "is not a valid header name"),
    ("Host: evil", "is set by sse-tui itself"),
])
def test_bad_headers_are_usage_errors(header: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        parse_args(["--header", header])


def test_headers_repeat_and_a_config_file_keeps_only_references(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "t")
    options = parse_args(["--header", "Authorization: Bearer $TOKEN", "--header", "X-A: 1"])
    assert options.settings.headers == ("Authorization: Bearer $TOKEN", "X-A: 1")
    path = save_settings(options.settings, tmp_path / "s.toml")
    assert load_config(path)["headers"] == ("Authorization: Bearer $TOKEN",)
    assert "Headers whose value is not a $VAR reference are not saved" in path.read_text()


def test_redis_url_from_the_environment_under_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis.example:6379")
    assert parse_args([]).settings.redis == "redis://:pw@redis.example:6379"
    assert parse_args(["-r", "other:6379"]).settings.redis == "other:6379"
    monkeypatch.setenv("REDIS_URL", "ftp://x")
    with pytest.raises(UsageError, match=r"^REDIS_URL: invalid redis address 'ftp://x'"):
        parse_args([])


def test_named_files_are_checked_before_the_run(tmp_path: Path) -> None:
    for flag in ("--cacert", "--cert", "--redis-password-file"):
        run = subprocess.run([sys.executable, "-m", "sse_tui", "--no-tui", flag,
                              str(tmp_path / "nope.pem")], capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
        assert run.returncode == 2
        assert run.stderr == f"sse-tui: {flag} {tmp_path / 'nope.pem'} not found: give the " \
            "path of a readable file\n"
    (tmp_path / "k.pem").write_text("x")
    with pytest.raises(UsageError, match=r"^--key needs --cert"):
        check_outside_world(parse_args(["--key", str(tmp_path / "k.pem")]).settings)
