"""Command-line flags: the original Go tool's flags, spelled any way its users type them.

`-conversations 5`, `--conversations 5`, `-c 5`, `-c5`, `-conversations=5` and
`--conversations=5` all mean the same. The argument list is first normalised (Go spellings
resolved, every value attached with `=`, unknown flags reported in the operator's own
spelling) and then handed to argparse, which owns the flag table and the help text.
Values are converted here rather than by argparse so that every message names the flag
the way it was typed.

Precedence: Settings defaults <- the `--config` file <- flags.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Literal

from sse_tui import __version__
from sse_tui.config import check_channel_prefix, load_config
from sse_tui.settings import (
    MODES,
    TRANSPORTS,
    Settings,
    UsageError,
    format_duration,
    parse_duration,
)

Command = Literal["run", "sandbox"]
PROG = "sse-tui"


@dataclass(frozen=True)
class CliOptions:
    """What the command line asks for; `parse_args` builds it, `__main__` acts on it."""

    command: Command
    settings: Settings  # defaults <- config file <- flags
    config_path: Path | None
    json_path: str | None  # "-" = stdout
    no_tui: bool
    demo: bool
    explicit: frozenset[str]  # Settings field names set by a flag or the config file
    # FaultConfig keyword arguments (rates, counts, flags), from --faults.
    faults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


# --- the flag table ------------------------------------------------------------------------

_ORIGINAL = "flags of the original tool"
_OURS = "sse-tui flags"
_OTHER = "other"


@dataclass(frozen=True)
class _Flag:
    dest: str
    longs: tuple[str, ...]  # without dashes; the first is the canonical one
    short: str | None
    kind: Literal["value", "bool", "help", "version"]
    group: str
    metavar: str | None
    help: str
    example: str = ""  # a value to show in "needs a value" messages
    sandbox: bool = False  # accepted by `sse-tui sandbox`


_D = Settings(run_id="0")  # the defaults, for the help text

_FLAGS: tuple[_Flag, ...] = (
    _Flag("mode", ("mode",), "m", "value", _ORIGINAL, "MODE",
          f"producer, consumer or both (default: {_D.mode})", "both"),
    _Flag("redis", ("redis",), "r", "value", _ORIGINAL, "ADDR",
          f"Redis host:port, or a redis:// or rediss:// URL (default: {_D.redis})",
          "localhost:6379"),
    _Flag("sse", ("sse",), "s", "value", _ORIGINAL, "URL",
          f"base URL of the SSE adapter (default: {_D.sse})", "http://localhost:8080"),
    _Flag("conversations", ("conversations",), "c", "value", _ORIGINAL, "N",
          f"conversations live at once; a finished one is replaced "
          f"(default: {_D.conversations})", "5"),
    _Flag("tokens", ("tokens",), "t", "value", _ORIGINAL, "N",
          f"tokens per conversation (default: {_D.tokens})", "50"),
    _Flag("delay", ("delay", "token-delay"), "d", "value", _ORIGINAL, "MS",
          f"milliseconds between tokens, plus a jitter of 0 to delay/2; may be fractional "
          f"(default: {_D.delay_ms:g})", "50"),
    _Flag("duration", ("duration",), None, "value", _ORIGINAL, "DURATION",
          "how long to run, a Go duration such as 500ms, 30s, 5m or 1h30m; 0 = one round "
          f"of conversations (default: {format_duration(_D.duration_s)})", "30s"),
    _Flag("config", ("config",), None, "value", _OURS, "FILE",
          "read settings from a TOML file with the same keys; flags override it",
          "sse-tui.toml", sandbox=True),
    _Flag("json", ("json",), None, "value", _OURS, "PATH",
          "write the final summary as JSON to PATH, or to stdout with -", "summary.json"),
    _Flag("run_id", ("run-id",), None, "value", _OURS, "ID",
          "conversation ids are loadtest-ID-<n>: give a producer and a consumer on "
          "different machines the same ID (default: the current time in ns)", "run1"),
    _Flag("no_tui", ("no-tui",), None, "bool", _OURS, None,
          "print progress lines instead of the live monitor (automatic when stdin or "
          "stdout is not a terminal)"),
    _Flag("demo", ("demo",), None, "bool", _OURS, None,
          "start a local Redis and SSE adapter on free loopback ports and run against them"),
    _Flag("transport", ("transport",), None, "value", _OURS, "raw|httpx",
          f"how SSE streams are read (default: {_D.transport})", "raw"),
    _Flag("channel_prefix", ("channel-prefix",), None, "value", _OURS, "PREFIX",
          f"Redis channel prefix; channels are PREFIX<conversation id> "
          f"(default: {_D.channel_prefix})", "llm:tokens:", sandbox=True),
    _Flag("grace", ("grace",), None, "value", _OURS, "DURATION",
          "after publishing stops, how long in-flight tokens may still arrive before they "
          f"count as missing (default: {format_duration(_D.grace_s)})", "2s"),
    _Flag("idle_timeout", ("idle-timeout",), None, "value", _OURS, "DURATION",
          "a stream silent this long is taken for dead and resumed with Last-Event-ID; "
          f"0 = never (default: {format_duration(_D.idle_timeout_s)})", "45s"),
    _Flag("faults", ("faults",), None, "value", _OURS, "SPEC",
          "faults the demo/sandbox adapter injects, comma-separated: drop=RATE, dup=RATE, "
          "reorder=RATE, delay=MS, disconnect=TOKENS, resume-bug, seed=N "
          "(e.g. drop=0.01,disconnect=100)", "drop=0.01", sandbox=True),
    _Flag("help", ("help",), "h", "help", _OTHER, None, "show this help and exit",
          sandbox=True),
    _Flag("version", ("version",), None, "version", _OTHER, None,
          "show the version and exit", sandbox=True),
)

_BY_LONG: dict[str, _Flag] = {name: f for f in _FLAGS for name in f.longs}
_BY_SHORT: dict[str, _Flag] = {f.short: f for f in _FLAGS if f.short}
_FIELD_OF_DEST = {
    "mode": "mode", "redis": "redis", "sse": "sse", "conversations": "conversations",
    "tokens": "tokens", "delay": "delay_ms", "duration": "duration_s", "run_id": "run_id",
    "transport": "transport", "channel_prefix": "channel_prefix", "grace": "grace_s",
    "idle_timeout": "idle_timeout_s",
}
_SANDBOX_FLAGS = "--channel-prefix, --faults and --config"


# --- argparse, for the table and the help -------------------------------------------------

class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`-c, --conversations N` rather than argparse's `-c N, --conversations N`."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {metavar}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}: see {PROG} --help")


_DESCRIPTION = """\
Load generator and live monitor for an LLM token streaming system
(producer -> Redis -> bridge -> NATS -> SSE adapter -> consumers).

As in the original tool, every long flag also works with one dash, and values may
follow an =: -conversations 5, --conversations=5 and -c 5 are the same."""

_EPILOG = f"""\
examples:
  {PROG} --demo                          try it on this machine, no cluster needed
  {PROG} -r localhost:6379 -s http://localhost:8080 -c 100 -t 200 -d 20 -duration 5m
  {PROG} -mode producer --run-id r1 ...  and on another machine: -mode consumer --run-id r1
  {PROG} sandbox --faults drop=0.01      run the local stack alone and print its addresses"""


def _build_parser(command: Command) -> _Parser:
    sandbox = command == "sandbox"
    parser = _Parser(
        prog=f"{PROG} sandbox" if sandbox else PROG,
        usage=(
            f"{PROG} sandbox [--channel-prefix PREFIX] [--faults SPEC] [--config FILE]"
            if sandbox
            else f"{PROG} [flags]\n       {PROG} sandbox [--channel-prefix PREFIX] [--faults SPEC]"
        ),
        description=(
            "Run the embedded test stack alone (a redis-server and a reference SSE\n"
            "adapter on free loopback ports), print its addresses and wait for Ctrl-C."
            if sandbox
            else _DESCRIPTION
        ),
        epilog=None if sandbox else _EPILOG,
        formatter_class=_HelpFormatter,
        add_help=False,  # added below, in the last group, so the original's flags come first
        allow_abbrev=False,  # Go does not take abbreviations; neither do we
        exit_on_error=False,
    )
    groups = {
        title: parser.add_argument_group(title) for title in (_ORIGINAL, _OURS, _OTHER)
    }
    for flag in _FLAGS:
        if sandbox and not flag.sandbox:
            continue
        names = ([f"-{flag.short}"] if flag.short else []) + [f"--{n}" for n in flag.longs]
        group = groups[flag.group]
        if flag.kind == "value":
            group.add_argument(*names, dest=flag.dest, metavar=flag.metavar, help=flag.help)
        elif flag.kind == "bool":
            group.add_argument(*names, dest=flag.dest, action="store_true", help=flag.help)
        elif flag.kind == "help":
            group.add_argument(*names, action="help", help=flag.help)
        else:
            group.add_argument(
                *names, action="version", version=f"{PROG} {__version__}", help=flag.help
            )
    return parser


def format_help(command: Command = "run") -> str:
    return _build_parser(command).format_help()


# --- normalising argv -------------------------------------------------------------------

_GO_TRUE = {"1", "t", "true", "yes", "on"}
_GO_FALSE = {"0", "f", "false", "no", "off"}


def _resolve(token: str) -> tuple[_Flag, str, str | None] | None:
    """(flag, spelling as typed, attached value or None) for a flag token, else None."""
    if token.startswith("--"):
        body, dashes = token[2:], "--"
    elif token.startswith("-") and len(token) > 1:
        body, dashes = token[1:], "-"
    else:
        return None
    name, eq, value = body.partition("=")
    flag = _BY_LONG.get(name.replace("_", "-"))
    if flag is not None:
        return flag, dashes + name, value if eq else None
    if dashes == "-" and body[0] in _BY_SHORT:
        flag = _BY_SHORT[body[0]]
        rest = body[1:]
        if not rest:
            return flag, token, None
        # -c5 and -c=5; but -conversation (a typo) is not -c onversation.
        if flag.kind == "value" and (rest[0] == "=" or not rest[0].isalpha()):
            return flag, token[:2], rest[1:] if rest[0] == "=" else rest
    return None


def _unknown_flag(token: str) -> UsageError:
    name = token.split("=", 1)[0]
    bare = name.lstrip("-").replace("_", "-")
    close = difflib.get_close_matches(bare, list(_BY_LONG), n=1, cutoff=0.75)
    dashes = "--" if name.startswith("--") else "-"
    hint = f"did you mean {dashes}{close[0]}? " if close else ""
    return UsageError(f"unknown flag {name}: {hint}see {PROG} --help")


@dataclass
class _Normalised:
    command: Command = "run"
    argv: list[str] = field(default_factory=list)  # canonical `--name=value` / `--name`
    spelled: dict[str, str] = field(default_factory=dict)  # dest -> flag as the user typed it
    bools: dict[str, bool] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)


def _normalise(argv: Sequence[str]) -> _Normalised:
    out = _Normalised()
    tokens = list(argv)
    i = 0
    only_positionals = False
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if only_positionals or token == "-" or not token.startswith("-"):
            out.positionals.append(token)
            if len(out.positionals) == 1 and token in ("run", "sandbox"):
                out.command = token  # type: ignore[assignment]
            continue
        if token == "--":
            only_positionals = True
            continue
        resolved = _resolve(token)
        if resolved is None:
            raise _unknown_flag(token)
        flag, spelled, value = resolved
        if flag.kind in ("help", "version"):
            # Asking for help wins over whatever else is on the line.
            out.argv.append(f"--{flag.longs[0]}")
            break
        out.spelled[flag.dest] = spelled
        if flag.kind == "bool":
            if value is None or value.strip().lower() in _GO_TRUE:
                out.bools[flag.dest] = True
            elif value.strip().lower() in _GO_FALSE:
                out.bools[flag.dest] = False
            else:
                raise UsageError(
                    f"invalid value for {spelled}: {value!r} is not true or false; "
                    f"write {spelled} on its own, or {spelled}=false"
                )
            continue
        if value is None:
            if i >= len(tokens) or _resolve(tokens[i]) is not None:
                raise UsageError(
                    f"flag {spelled} needs a value: e.g. {spelled} {flag.example}"
                )
            value = tokens[i]
            i += 1
        out.argv.append(f"--{flag.longs[0]}={value}")
    out.argv.extend(f"--{_flag_by_dest(d).longs[0]}" for d, on in out.bools.items() if on)
    return out


def _flag_by_dest(dest: str) -> _Flag:
    return next(f for f in _FLAGS if f.dest == dest)


# --- converting values ------------------------------------------------------------------

_WHOLE = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _whole_at_least_1(flag: str, text: str) -> int:
    s = text.strip()
    if not _WHOLE.fullmatch(s):
        raise UsageError(
            f"invalid value for {flag}: {text!r} is not a whole number; use e.g. {flag} 5"
        )
    n = int(s)
    if n < 1:
        raise UsageError(f"invalid value for {flag}: must be at least 1, got {n}")
    return n


def _delay_ms(flag: str, text: str) -> float:
    """Milliseconds as the original takes them (`50`, `0.5`); a Go duration (`20ms`) works too."""
    s = text.strip()
    not_ms = UsageError(
        f"invalid value for {flag}: {text!r} is not a number of milliseconds; use e.g. {flag} 50"
    )
    if _NUMBER.fullmatch(s):
        ms = float(s)
    elif s[-1:].isalpha():  # has a unit: 20ms, 1s
        try:
            ms = parse_duration(s) * 1000
        except UsageError:
            raise not_ms from None
    else:
        raise not_ms
    if not math.isfinite(ms) or ms < 0:
        raise UsageError(f"invalid value for {flag}: must be 0 or more milliseconds, got {text!r}")
    return ms


def _duration_s(flag: str, text: str) -> float:
    try:
        seconds = parse_duration(text)
    except UsageError as e:
        raise UsageError(f"{flag}: {e}") from None
    if not math.isfinite(seconds):
        raise UsageError(
            f"{flag}: invalid duration {text!r}: use a Go duration such as 500ms, 30s or 1h30m"
        )
    return seconds


def _choice(choices: tuple[str, ...], what: str) -> Callable[[str, str], str]:
    def convert(flag: str, text: str) -> str:
        s = text.strip().lower()
        if s not in choices:
            listed = ", ".join(choices[:-1]) + " or " + choices[-1]
            raise UsageError(
                f"invalid value for {flag}: {text!r} is not a {what}; use {listed}"
            )
        return s

    return convert


def _text(flag: str, text: str) -> str:
    return text.strip()


def _channel_prefix(flag: str, text: str) -> str:
    try:
        return check_channel_prefix(text)
    except UsageError as e:
        raise UsageError(f"{flag}: {e}") from None


_CONVERT: dict[str, Callable[[str, str], Any]] = {
    "mode": _choice(MODES, "mode"),
    "redis": _text,
    "sse": _text,
    "conversations": _whole_at_least_1,
    "tokens": _whole_at_least_1,
    "delay": _delay_ms,
    "duration": _duration_s,
    "run_id": _text,
    "transport": _choice(TRANSPORTS, "transport"),
    "channel_prefix": _channel_prefix,
    "grace": _duration_s,
    "idle_timeout": _duration_s,
}


# --- --faults ---------------------------------------------------------------------------

def _rate(name: str, text: str) -> float:
    if _NUMBER.fullmatch(text.strip()):
        x = float(text)
        if 0 <= x <= 1:
            return x
    raise ValueError(f"{name} must be a fraction between 0 and 1, e.g. {name}=0.01 for 1%")


def _fault_ms(name: str, text: str) -> float:
    if _NUMBER.fullmatch(text.strip()):
        x = float(text)
        if math.isfinite(x) and x >= 0:
            return x
    raise ValueError(f"{name} must be 0 or more milliseconds, e.g. {name}=5")


def _fault_count(name: str, text: str) -> int:
    s = text.strip()
    if _WHOLE.fullmatch(s) and int(s) >= 1:
        return int(s)
    raise ValueError(f"{name} must be a whole number of tokens of at least 1, e.g. {name}=100")


def _fault_int(name: str, text: str) -> int:
    s = text.strip()
    if _WHOLE.fullmatch(s):
        return int(s)
    raise ValueError(f"{name} must be a whole number, e.g. {name}=3")


def _fault_switch(name: str, text: str) -> bool:
    s = text.strip().lower()
    if s in _GO_TRUE:
        return True
    if s in _GO_FALSE:
        return False
    raise ValueError(f"{name} takes no value (or true/false)")


# spec name -> (key in the result, converter, example). The result keys work as names too.
_FAULT_KINDS: dict[str, tuple[str, Callable[[str, str], float], str]] = {
    "drop": ("drop_rate", _rate, "drop=0.01"),
    "dup": ("dup_rate", _rate, "dup=0.01"),
    "reorder": ("reorder_rate", _rate, "reorder=0.01"),
    "delay": ("delay_ms", _fault_ms, "delay=5"),
    "disconnect": ("disconnect_after", _fault_count, "disconnect=100"),
    "resume-bug": ("resume_skip_bug", _fault_switch, "resume-bug"),
    "seed": ("seed", _fault_int, "seed=3"),
}
_FAULT_NAMES = {name: name for name in _FAULT_KINDS} | {
    key.replace("_", "-"): name for name, (key, _, _) in _FAULT_KINDS.items()
}
_FAULTS_EXAMPLE = "drop=0.01,dup=0.01,reorder=0.01,delay=5,disconnect=100,resume-bug,seed=3"


def parse_faults(spec: str, flag: str = "--faults") -> dict[str, float]:
    """`drop=0.01,disconnect=100,resume-bug` -> {"drop_rate": 0.01, "disconnect_after": 100,
    "resume_skip_bug": True}: the keyword arguments of `sandbox.stack.FaultConfig`.
    Rates are fractions, delay is in ms, disconnect is a token count, seed a whole number.
    """
    faults: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        raw_name, eq, value = item.partition("=")
        name = _FAULT_NAMES.get(raw_name.strip().lower().replace("_", "-"))
        if name is None:
            raise UsageError(
                f"unknown fault {raw_name.strip()!r} in {flag}: use {', '.join(_FAULT_KINDS)}, "
                f"e.g. {flag} {_FAULTS_EXAMPLE}"
            )
        key, convert, example = _FAULT_KINDS[name]
        if key in faults:
            raise UsageError(f"fault {name} given twice in {flag}: keep only one")
        if not eq and name != "resume-bug":
            raise UsageError(f"fault {name} in {flag} needs a value: e.g. {flag} {example}")
        try:
            faults[key] = convert(name, value if eq else "true")
        except ValueError as e:
            raise UsageError(f"invalid value in {flag} {item!r}: {e}") from None
    return faults


# --- the --json path --------------------------------------------------------------------

def _json_path(flag: str, text: str) -> str:
    """Check now that the summary can be written, rather than find out after the run."""
    if text == "-":
        return text
    if not text.strip():
        raise UsageError(f"invalid value for {flag}: empty path; give a file path, or - for stdout")
    path = Path(text).expanduser()
    if path.is_dir():
        raise UsageError(f"invalid value for {flag}: {text!r} is a directory; give a file path")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(
            f"invalid value for {flag}: directory {str(parent)!r} does not exist; "
            f"create it first or choose another path"
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(
            f"invalid value for {flag}: cannot write {text!r}; choose a writable location"
        )
    return str(path)


# --- the entry points -------------------------------------------------------------------

def parse_args(argv: Sequence[str]) -> CliOptions:
    """Parse the command line. Raises UsageError with a one-line message on bad input;
    `--help` and `--version` print to stdout and raise SystemExit(0)."""
    norm = _normalise(argv)
    if norm.argv[-1:] in (["--help"], ["--version"]):
        _build_parser(norm.command).parse_args(norm.argv[-1:])  # prints, raises SystemExit(0)
    named_command = norm.positionals[:1] in (["run"], ["sandbox"])
    extra = norm.positionals[1:] if named_command else norm.positionals
    if extra:
        raise UsageError(
            f"unexpected argument {extra[0]!r}: {PROG} takes flags (and the sandbox "
            f"subcommand); see {PROG} --help"
        )
    if norm.command == "sandbox":
        for dest, spelled in norm.spelled.items():
            if not _flag_by_dest(dest).sandbox:
                raise UsageError(
                    f"flag {spelled} does not apply to {PROG} sandbox, which takes "
                    f"{_SANDBOX_FLAGS}"
                )

    parser = _build_parser(norm.command)
    try:
        ns = parser.parse_args(norm.argv)
    except argparse.ArgumentError as e:  # a safety net: _normalise should have caught it
        raise UsageError(f"{e}: see {PROG} --help") from None
    given: dict[str, str] = {
        dest: value for dest, value in vars(ns).items()
        if isinstance(value, str) and dest in norm.spelled
    }

    config_path = Path(given["config"]) if "config" in given else None
    from_config = load_config(config_path) if config_path is not None else {}
    if config_path is not None and norm.command == "sandbox":
        from_config = {k: v for k, v in from_config.items() if k == "channel_prefix"}

    from_flags: dict[str, Any] = {}
    for dest, field_name in _FIELD_OF_DEST.items():
        if dest not in given:
            continue
        spelled = norm.spelled[dest]
        value = _CONVERT[dest](spelled, given[dest])
        try:
            # Check each value the way the run will, so the message names its flag.
            Settings().with_changes(**{field_name: value}).validated()
        except UsageError as e:
            raise UsageError(f"{spelled}: {e}") from None
        from_flags[field_name] = value

    settings = Settings(**{**from_config, **from_flags}).validated()

    demo = norm.bools.get("demo", False)
    faults: dict[str, float] = {}
    if "faults" in given:
        spelled = norm.spelled["faults"]
        faults = parse_faults(given["faults"], spelled)
        if norm.command == "run" and not demo:
            raise UsageError(
                f"{spelled} needs --demo (or the sandbox subcommand): faults are injected by "
                f"the embedded SSE adapter"
            )

    json_path = _json_path(norm.spelled["json"], given["json"]) if "json" in given else None

    return CliOptions(
        command=norm.command,
        settings=settings,
        config_path=config_path,
        json_path=json_path,
        no_tui=norm.bools.get("no_tui", False),
        demo=demo,
        explicit=frozenset(from_config) | frozenset(from_flags),
        faults=MappingProxyType(faults),
    )


def use_tui(options: CliOptions, stdin: IO[Any], stdout: IO[Any]) -> bool:
    """The live monitor runs only when asked for and both ends are a terminal; otherwise
    (pipes, CI, `kubectl exec` without -t) the headless progress lines are printed."""
    if options.no_tui or options.command != "run":
        return False
    return _isatty(stdin) and _isatty(stdout)


def _isatty(stream: IO[Any]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
