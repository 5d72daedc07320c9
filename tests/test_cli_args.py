"""Command-line parsing: every spelling the original tool's users type, and bad input."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from sse_tui import __version__
from sse_tui.cli_args import CliOptions, format_help, parse_args, parse_faults, use_tui
from sse_tui.settings import SETTINGS, Settings, SettingSpec, UsageError

# (spellings, value as typed, Settings field, value expected)
VALUE_FLAGS = [
    (("-m", "--mode", "-mode"), "producer", "mode", "producer"),
    (("-r", "--redis", "-redis"), "redis.example:6380", "redis", "redis.example:6380"),
    (("-s", "--sse", "-sse"), "http://sse.example:80", "sse", "http://sse.example:80"),
    (("-c", "--conversations", "-conversations"), "7", "conversations", 7),
    (("-t", "--tokens", "-tokens"), "9", "tokens", 9),
    (
        ("-d", "--delay", "-delay", "--token-delay", "-token-delay"),
        "12.5", "delay_ms", 12.5,
    ),
    (("--duration", "-duration"), "5m", "duration_s", 300.0),
    (("--run-id", "-run-id"), "r1", "run_id", "r1"),
    (("--transport", "-transport"), "httpx", "transport", "httpx"),
    (("--channel-prefix", "-channel-prefix"), "chat:tokens:", "channel_prefix", "chat:tokens:"),
    (("--grace", "-grace"), "500ms", "grace_s", 0.5),
]
SPELLINGS = [
    (spelling, value, field, expected)
    for spellings, value, field, expected in VALUE_FLAGS
    for spelling in spellings
]


def message_of(argv: Sequence[str]) -> str:
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    message = str(err.value)
    assert "\n" not in message, "a usage error is one line"
    assert message.strip() == message and message
    return message


# --- spellings --------------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "value", "field", "expected"), SPELLINGS)
def test_flag_then_value(flag: str, value: str, field: str, expected: object) -> None:
    options = parse_args([flag, value])
    assert getattr(options.settings, field) == expected
    assert options.explicit == {field}


@pytest.mark.parametrize(("flag", "value", "field", "expected"), SPELLINGS)
def test_flag_equals_value(flag: str, value: str, field: str, expected: object) -> None:
    options = parse_args([f"{flag}={value}"])
    assert getattr(options.settings, field) == expected
    assert options.explicit == {field}


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["-c5"], "conversations", 5),
        (["-c=5"], "conversations", 5),
        (["-t=3"], "tokens", 3),
        (["-d0.5"], "delay_ms", 0.5),
        (["-r127.0.0.1:7000"], "redis", "127.0.0.1:7000"),
        (["-m=consumer"], "mode", "consumer"),
    ],
)
def test_short_flag_with_attached_value(argv: list[str], field: str, expected: object) -> None:
    assert getattr(parse_args(argv).settings, field) == expected


def test_the_original_tools_high_load_example() -> None:
    options = parse_args(
        ["-mode", "both", "-redis", "localhost:6379", "-sse", "http://localhost:8080",
         "-conversations", "100", "-tokens", "200", "-token-delay", "20", "-duration", "5m"]
    )
    s = options.settings
    assert (s.mode, s.conversations, s.tokens, s.delay_ms, s.duration_s) == (
        "both", 100, 200, 20.0, 300.0
    )
    assert options.explicit == {
        "mode", "redis", "sse", "conversations", "tokens", "delay_ms", "duration_s"
    }


def test_the_spellings_the_readme_lists() -> None:
    for argv in (["-c5"], ["-conversations=5"], ["--conversations=5"], ["-conversations", "5"]):
        assert parse_args(argv).settings.conversations == 5, argv
    for argv in (["-token-delay", "20"], ["--delay=20"], ["-d", "20"], ["-delay=20"]):
        assert parse_args(argv).settings.delay_ms == 20.0, argv


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.field)
def test_every_setting_takes_every_spelling_of_its_flags(spec: SettingSpec) -> None:
    """Driven by the settings table: a setting added to it gets its flags with no more work,
    and its example (shown in messages) must be a good value."""
    expected = spec.read_flag("--x", spec.example)
    names = [f"-{spec.short}"] if spec.short else []
    for long in spec.long_flags:
        names += [f"--{long}", f"-{long}", f"--{long.replace('-', '_')}"]
    for name in names:
        # A switch (--insecure) takes no value after it: only --insecure or --insecure=true.
        alone = [name] if spec.switch else [name, spec.example]
        for argv in (alone, [f"{name}={spec.example}"]):
            options = parse_args(argv)
            assert getattr(options.settings, spec.field) == expected, argv
            assert options.explicit == {spec.field}, argv
    if not spec.switch:
        assert f"needs a value: e.g. {names[0]} {spec.example}" in message_of([names[0]])
    shown = ", ".join(f"--{long}" for long in spec.long_flags)
    assert f"{shown} {spec.metavar}".strip() in format_help()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # argparse itself would take these one-dash prefixes (even with allow_abbrev off)
        (["-con", "5"], "unknown flag -con: see"),
        (["-js", "-"], "unknown flag -js: see"),
        (["-no"], "unknown flag -no: see"),
        (["-mod", "both"], "unknown flag -mod: did you mean -mode?"),
        (["-toke", "5"], "unknown flag -toke"),
        (["--no"], "unknown flag --no: see"),
        (["-h5"], "unknown flag -h5"),
    ],
)
def test_no_abbreviations(argv: list[str], expected: str) -> None:
    assert expected in message_of(argv)


def test_a_one_dash_long_flag_is_never_a_short_flag_with_its_value() -> None:
    options = parse_args(["-demo", "-duration", "5m", "-tokens", "3", "-sse", "http://x:1"])
    assert options.demo
    assert options.explicit == {"duration_s", "tokens", "sse"}  # not -d emo, -t okens
    assert (options.settings.duration_s, options.settings.tokens) == (300.0, 3)


def test_underscore_spelling_of_long_flags() -> None:
    options = parse_args(["--run_id", "r9", "-channel_prefix=p:", "--no_tui"])
    assert options.settings.run_id == "r9"
    assert options.settings.channel_prefix == "p:"
    assert options.no_tui


def test_last_occurrence_wins() -> None:
    assert parse_args(["-c=5", "--conversations", "6", "-c7"]).settings.conversations == 7


def test_mode_and_transport_ignore_case() -> None:
    options = parse_args(["-mode", "PRODUCER", "--transport", "HTTPX"])
    assert options.settings.mode == "producer"
    assert options.settings.transport == "httpx"


@pytest.mark.parametrize(("value", "ms"), [("0", 0.0), ("1", 1.0), ("20ms", 20.0), ("1s", 1000.0),
                                           ("0.25", 0.25), (".5", 0.5), ("500us", 0.5)])
def test_delay_in_ms_or_as_a_go_duration(value: str, ms: float) -> None:
    assert parse_args(["-d", value]).settings.delay_ms == pytest.approx(ms)


def test_a_negative_number_is_taken_as_the_value() -> None:
    assert "must be 0 or more milliseconds" in message_of(["-d", "-1"])
    assert "must be at least 1, got -5" in message_of(["-c", "-5"])


# --- booleans and the other flags -------------------------------------------------------

@pytest.mark.parametrize("flag", ["--no-tui", "-no-tui", "-no-tui=true", "--no-tui=1"])
def test_no_tui(flag: str) -> None:
    assert parse_args([flag]).no_tui is True


@pytest.mark.parametrize("flag", ["--demo", "-demo", "-demo=true", "--demo=T"])
def test_demo(flag: str) -> None:
    assert parse_args([flag]).demo is True


def test_go_style_false_turns_a_bool_flag_off() -> None:
    options = parse_args(["-no-tui", "-no-tui=false", "--demo=0"])
    assert options.no_tui is False
    assert options.demo is False


@pytest.mark.parametrize("argv", [["--json", "-"], ["-json", "-"], ["--json=-"], ["-json=-"]])
def test_json_to_stdout(argv: list[str]) -> None:
    assert parse_args(argv).json_path == "-"


@pytest.mark.parametrize("form", ["--json {}", "-json {}", "--json={}", "-json={}"])
def test_json_to_a_file(tmp_path: Path, form: str) -> None:
    target = tmp_path / "out.json"
    argv = form.format(target).split(" ")
    options = parse_args(argv)
    assert options.json_path == str(target)
    assert not target.exists(), "parsing only checks the path, it writes nothing"


def test_demo_with_redis_is_allowed_and_recorded() -> None:
    options = parse_args(["--demo", "--redis", "redis.example:6379"])
    assert options.demo
    assert options.settings.redis == "redis.example:6379"
    assert "redis" in options.explicit


# --- defaults ---------------------------------------------------------------------------

def test_defaults_are_the_original_tools() -> None:
    options = parse_args([])
    assert options.command == "run"
    assert options.settings == Settings(run_id=options.settings.run_id)
    s = options.settings
    assert (s.mode, s.redis, s.sse) == ("both", "localhost:6379", "http://localhost:8080")
    assert (s.conversations, s.tokens, s.delay_ms, s.duration_s) == (5, 50, 50.0, 30.0)
    assert (s.channel_prefix, s.transport, s.grace_s) == ("llm:tokens:", "raw", 2.0)
    assert s.run_id.isdigit()
    assert options.config_path is None
    assert options.json_path is None
    assert options.no_tui is False
    assert options.demo is False
    assert options.explicit == frozenset()
    assert dict(options.faults) == {}


def test_options_are_immutable() -> None:
    options = parse_args(["--demo", "--faults", "drop=0.1"])
    with pytest.raises(AttributeError):
        options.demo = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        options.faults["drop_rate"] = 0.5  # type: ignore[index]


def test_run_may_be_named() -> None:
    options = parse_args(["run", "-c", "2"])
    assert options.command == "run"
    assert options.settings.conversations == 2


# --- durations --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("0", 0.0),
     ("1.5h", 5400.0), ("0s", 0.0), ("90", 90.0), ("2m30s", 150.0), ("1h0m0.5s", 3600.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_args(["-duration", text]).settings.duration_s == pytest.approx(seconds)
    assert parse_args([f"--grace={text}"]).settings.grace_s == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5x", "invalid duration '5x': use a Go duration"),
     ("-1s", "negative duration '-1s'"),
     ("", "empty duration"),
     ("  ", "empty duration"),
     ("1h30", "invalid duration '1h30'"),
     ("inf", "invalid duration 'inf'"),
     ("nan", "invalid duration 'nan'")],
)
def test_bad_durations(text: str, expected: str) -> None:
    message = message_of(["-duration", text])
    assert message.startswith("-duration: ")
    assert expected in message
    assert expected in message_of([f"--grace={text}"])


# --- config file ------------------------------------------------------------------------

def test_config_file_under_flags(tmp_path: Path) -> None:
    config = tmp_path / "load.toml"
    config.write_text('conversations = 20\ntokens = 3\ndelay = 1.5\nduration = "1m"\n')
    options = parse_args(["-config", str(config), "-c", "7", "--duration=0"])
    s = options.settings
    assert s.conversations == 7  # the flag wins
    assert s.tokens == 3 and s.delay_ms == 1.5  # the file fills in
    assert s.duration_s == 0.0
    assert s.mode == "both"  # neither: the default
    assert options.config_path == config
    assert options.explicit == {"conversations", "tokens", "delay_ms", "duration_s"}


def test_flag_before_config_still_wins(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("tokens = 3\n")
    assert parse_args(["-t", "8", "--config", str(config)]).settings.tokens == 8


@pytest.mark.parametrize("form", ["--config {}", "-config {}", "--config={}", "-config={}"])
def test_config_spellings(tmp_path: Path, form: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text('run_id = "from-file"\n')
    assert parse_args(form.format(config).split(" ")).settings.run_id == "from-file"


def test_bad_config_file_names_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("tokens = true\n")
    message = message_of(["--config", str(config)])
    assert f"config file {config}, line 1: tokens:" in message


def test_missing_config_file() -> None:
    assert "config file /nonexistent/x.toml not found" in message_of(
        ["--config", "/nonexistent/x.toml"]
    )


def test_saved_settings_load_back_through_the_cli(tmp_path: Path) -> None:
    from sse_tui.config import save_settings

    saved = Settings(mode="consumer", conversations=3, delay_ms=2.5, duration_s=5400, run_id="r")
    path = save_settings(saved, tmp_path / "s.toml")
    assert parse_args(["--config", str(path)]).settings == saved


# --- bad input: one line naming the problem and what to do ------------------------------

@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-conversations", "abc"],
         "invalid value for -conversations: 'abc' is not a whole number; "
         "use e.g. -conversations 5"),
        (["-c", "2.5"], "invalid value for -c: '2.5' is not a whole number"),
        (["-c", "1_000"], "'1_000' is not a whole number"),
        (["--tokens", "0"], "invalid value for --tokens: must be at least 1, got 0"),
        (["-tokens="], "invalid value for -tokens: '' is not a whole number"),
        (["-token-delay", "fast"],
         "invalid value for -token-delay: 'fast' is not a number of milliseconds"),
        (["-d", "inf"], "is not a number of milliseconds"),
        (["-foo"], "unknown flag -foo: see sse-tui --help"),
        (["--foo=1"], "unknown flag --foo: see sse-tui --help"),
        (["-conversation", "3"], "unknown flag -conversation: did you mean -conversations?"),
        (["--tokes", "3"], "unknown flag --tokes: did you mean --tokens?"),
        (["--conv", "3"], "unknown flag --conv"),  # no abbreviations, as in Go
        (["-x"], "unknown flag -x"),
        (["-mboth"], "unknown flag -mboth"),
        (["--json"], "flag --json needs a value: e.g. --json summary.json"),
        (["-c"], "flag -c needs a value: e.g. -c 5"),
        (["--json", "--demo"], "flag --json needs a value"),
        (["-mode", "-c", "5"], "flag -mode needs a value"),
        (["-mode", "fast"],
         "invalid value for -mode: 'fast' is not a mode; use producer, consumer or both"),
        (["--transport", "grpc"], "'grpc' is not a transport; use raw or httpx"),
        (["-redis", "localhost:port"], "-redis: invalid redis port in 'localhost:port'"),
        (["-redis", "http://x"], "-redis: invalid redis address"),
        (["-redis", ""], "-redis: empty redis address"),
        (["-sse", "localhost:8080"], "-sse: invalid SSE URL 'localhost:8080': use http://"),
        (["--run-id", "a b"], "--run-id: invalid run id 'a b'"),
        (["--run-id="], "--run-id: invalid run id ''"),
        (["--channel-prefix", "llm:tokens:*"], "--channel-prefix: invalid channel prefix"),
        (["--channel-prefix="], "--channel-prefix: empty channel prefix"),
        (["-no-tui=maybe"], "invalid value for -no-tui: 'maybe' is not true or false"),
        (["extra"], "unexpected argument 'extra'"),
        (["run", "extra"], "unexpected argument 'extra'"),
        (["--", "-c"], "unexpected argument '-c'"),
        (["--json", ""], "invalid value for --json: empty path"),
        (["--json", "/nonexistent-dir/x.json"],
         "invalid value for --json: directory '/nonexistent-dir' does not exist"),
        (["--json", "/"], "invalid value for --json: '/' is a directory"),
        (["--faults", "drop=0.1"], "--faults needs --demo (or the sandbox subcommand)"),
        (["sandbox", "-c", "5"], "flag -c does not apply to sse-tui sandbox"),
        (["sandbox", "--demo"], "flag --demo does not apply to sse-tui sandbox"),
        (["sandbox", "now"], "unexpected argument 'now'"),
    ],
)
def test_bad_input(argv: list[str], expected: str) -> None:
    assert expected in message_of(argv)


def test_bad_input_never_exits() -> None:
    # argparse's own error path (print usage, exit 2) must never be reached: the caller
    # decides how to report, and tests can catch the error.
    for argv in (["-foo"], ["-c", "x"], ["extra"], ["--json"]):
        with pytest.raises(UsageError):
            parse_args(argv)


# --- faults -----------------------------------------------------------------------------

def test_full_fault_spec() -> None:
    assert parse_faults(
        "drop=0.01,dup=0.01,reorder=0.01,delay=5,disconnect=100,resume-bug,seed=3"
    ) == {
        "drop_rate": 0.01, "dup_rate": 0.01, "reorder_rate": 0.01, "delay_ms": 5.0,
        "disconnect_after": 100, "resume_skip_bug": True, "seed": 3,
    }


def test_fault_spec_builds_the_sandbox_fault_config() -> None:
    from sse_tui.sandbox.stack import FaultConfig

    faults = parse_faults("drop=0.01,dup=0.02,reorder=0.03,delay=5,disconnect=100,resume-bug")
    config = FaultConfig(**faults)
    assert config.resume_skip_bug is True
    assert config.disconnect_after == 100 and isinstance(config.disconnect_after, int)
    assert FaultConfig(**parse_faults("seed=3")).seed == 3


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", {}),
        (" drop = 0.5 , ", {"drop_rate": 0.5}),
        ("drop_rate=0.2,dup-rate=0.3", {"drop_rate": 0.2, "dup_rate": 0.3}),
        ("DROP=1", {"drop_rate": 1.0}),
        ("resume-bug=false", {"resume_skip_bug": 0.0}),
        ("resume_skip_bug", {"resume_skip_bug": 1.0}),
        ("delay=0.5,delay_ms", None),  # given twice
        ("seed=-7", {"seed": -7}),
    ],
)
def test_fault_spec_forms(spec: str, expected: dict | None) -> None:
    if expected is None:
        with pytest.raises(UsageError, match="given twice"):
            parse_faults(spec)
    else:
        assert parse_faults(spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("bogus=1", "unknown fault 'bogus' in --faults: use drop, dup, reorder, delay, "
                    "disconnect, resume-bug, seed"),
        ("drop=2", "drop must be a fraction between 0 and 1, e.g. drop=0.01"),
        ("drop=-0.1", "drop must be a fraction between 0 and 1"),
        ("dup=lots", "dup must be a fraction between 0 and 1"),
        ("drop", "fault drop in --faults needs a value: e.g. --faults drop=0.01"),
        ("disconnect=0", "disconnect must be a whole number of tokens of at least 1"),
        ("disconnect=1.5", "disconnect must be a whole number"),
        ("delay=-5", "delay must be 0 or more milliseconds"),
        ("delay=nan", "delay must be 0 or more milliseconds"),
        ("seed=x", "seed must be a whole number"),
        ("resume-bug=maybe", "resume-bug takes no value"),
        ("drop=0.1,drop=0.2", "fault drop given twice in --faults"),
    ],
)
def test_bad_fault_specs(spec: str, expected: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_faults(spec)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)
    # and through the command line, naming the flag as typed
    assert expected.replace("--faults", "-faults") in message_of(["-demo", "-faults", spec])


def test_faults_with_demo() -> None:
    options = parse_args(["--demo", "--faults", "drop=0.01,disconnect=100"])
    assert dict(options.faults) == {"drop_rate": 0.01, "disconnect_after": 100}


def test_a_bad_spec_is_reported_before_the_missing_demo() -> None:
    assert "unknown fault" in message_of(["--faults", "bogus=1"])


# --- the sandbox subcommand -------------------------------------------------------------

def test_sandbox() -> None:
    options = parse_args(["sandbox"])
    assert options.command == "sandbox"
    assert options.explicit == frozenset()


def test_sandbox_with_prefix_and_faults() -> None:
    options = parse_args(["sandbox", "-channel-prefix", "x:", "--faults=resume-bug,seed=3"])
    assert options.command == "sandbox"
    assert options.settings.channel_prefix == "x:"
    assert options.explicit == {"channel_prefix"}
    assert dict(options.faults) == {"resume_skip_bug": 1.0, "seed": 3}


def test_sandbox_after_its_flags() -> None:
    assert parse_args(["--faults", "drop=0.1", "sandbox"]).command == "sandbox"


def test_sandbox_takes_only_the_prefix_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('channel_prefix = "p:"\nconversations = 9\n')
    options = parse_args(["sandbox", "--config", str(config)])
    assert options.settings.channel_prefix == "p:"
    assert options.settings.conversations == 5
    assert options.explicit == {"channel_prefix"}


# --- help and version -------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-h", "--help", "-help"])
def test_help(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args([flag])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sse-tui")
    assert "-c, --conversations N" in out
    assert "-d, --delay, --token-delay MS" in out
    assert "(default: 5)" in out and "(default: 30s)" in out and "(default: 50)" in out
    assert "(default: llm:tokens:)" in out and "(default: 2s)" in out
    assert out.index("flags of the original tool") < out.index("sse-tui flags") < out.index(
        "--version"
    )
    assert "-conversations 5" in out  # says that the Go spelling works


@pytest.mark.parametrize(
    "argv", [["-c", "3", "--help", "-foo"], ["-c", "--help"], ["-c", "x", "-h", "extra"]]
)
def test_help_wins_over_bad_input(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 0
    assert "usage: sse-tui" in capsys.readouterr().out


def test_sandbox_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["sandbox", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sse-tui sandbox")
    assert "--faults" in out and "--conversations" not in out
    assert format_help("sandbox") == out


@pytest.mark.parametrize("flag", ["--version", "-version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args([flag])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"sse-tui {__version__}"


# --- use_tui ----------------------------------------------------------------------------

class FakeStream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("argv", "stdin_tty", "stdout_tty", "expected"),
    [
        ([], True, True, True),
        ([], False, True, False),  # input piped
        ([], True, False, False),  # output piped or redirected
        (["--no-tui"], True, True, False),
        (["-demo"], True, True, True),
        (["sandbox"], True, True, False),  # the sandbox has no monitor
    ],
)
def test_use_tui(argv: list[str], stdin_tty: bool, stdout_tty: bool, expected: bool) -> None:
    options = parse_args(argv)
    assert use_tui(options, FakeStream(stdin_tty), FakeStream(stdout_tty)) is expected  # type: ignore[arg-type]


def test_use_tui_with_streams_that_cannot_say() -> None:
    options: CliOptions = parse_args([])
    closed = io.StringIO()
    closed.close()
    assert use_tui(options, closed, FakeStream(True)) is False  # type: ignore[arg-type]
    assert use_tui(options, object(), FakeStream(True)) is False  # type: ignore[arg-type]
    assert use_tui(options, io.StringIO(), io.StringIO()) is False
