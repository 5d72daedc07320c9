"""Command-line flags: the original Go tool's flags, spelled any way its users type them.

`-conversations 5`, `--conversations 5`, `-c 5`, `-c5`, `-conversations=5` and
`--conversations=5` all mean the same: every long name is declared to argparse with one
dash as well as two. The settings' flags come from the settings table (`settings.SETTINGS`);
the few flags that are not settings (--config, --json, --demo, ...) are listed here.

argparse parses; `parse_args` then reads the values, so that every message names the flag
the way it was typed, and `--help` wins over anything wrong on the same line.

Precedence: Settings defaults <- the `--config` file <- flags.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Literal, NamedTuple, cast

from sse_tui import __version__
from sse_tui.config import load_config
from sse_tui.files import WriteError, check_writable
from sse_tui.settings import (
    SETTINGS,
    Settings,
    SettingSpec,
    UsageError,
    default_text,
    env_settings,
)
from sse_tui.shaping import apply_shape
from sse_tui.values import NUMBER_RE, WHOLE_RE, stages_length_s

Command = Literal["run", "sandbox", "sweep"]
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
    tls: bool = False  # --tls: the demo/sandbox adapter serves https://
    # --topology: the demo/sandbox stack, Redis -> bridge -> NATS -> adapter or Redis -> adapter.
    topology: str = "full"
    # `sse-tui sweep`'s own flags, read by sse_tui.sweep: dest -> (the flag as typed, its text).
    sweep: Mapping[str, tuple[str, str]] = field(default_factory=lambda: MappingProxyType({}))


# --- the flags ------------------------------------------------------------------------------

_ORIGINAL = "flags of the original tool"
_OURS = "sse-tui flags"
_SWEEP = "sweep flags"
_OTHER = "other"


@dataclass(frozen=True)
class _Flag:
    dest: str  # a Settings field, or the name of a flag that is not a setting
    longs: tuple[str, ...]  # without dashes; the first is the canonical one
    short: str | None
    switch: bool  # takes no value: on when given, or -flag=false as in Go
    group: str
    metavar: str | None
    help: str
    example: str = ""  # a value to show in "needs a value" messages
    sandbox: bool = False  # accepted by `sse-tui sandbox`
    sweep: bool = False  # accepted by `sse-tui sweep` alone (its values: sse_tui.sweep)


def _setting_flag(spec: SettingSpec) -> _Flag:
    return _Flag(
        spec.field, spec.long_flags, spec.short, spec.switch,
        _ORIGINAL if spec.original else _OURS,
        spec.metavar or None, f"{spec.help} (default: {default_text(spec)})", spec.example,
        sandbox=spec.sandbox,
    )


_FLAGS: tuple[_Flag, ...] = (
    *(_setting_flag(s) for s in SETTINGS if s.original),
    _Flag("config", ("config",), None, False, _OURS, "FILE",
          "read settings from a TOML file with the same keys; flags override it",
          "sse-tui.toml", sandbox=True),
    _Flag("json", ("json",), None, False, _OURS, "PATH",
          "write the final summary as JSON to PATH, or to stdout with -", "summary.json"),
    *(_setting_flag(s) for s in SETTINGS if not s.original),
    _Flag("no_tui", ("no-tui",), None, True, _OURS, None,
          "print progress lines instead of the live monitor (automatic when stdin or "
          "stdout is not a terminal)"),
    _Flag("demo", ("demo",), None, True, _OURS, None,
          "start a local Redis and SSE adapter on free loopback ports and run against them"),
    _Flag("faults", ("faults",), None, False, _OURS, "SPEC",
          "faults the demo/sandbox adapter injects, comma-separated: drop=RATE, dup=RATE, "
          "reorder=RATE, delay=MS, disconnect=TOKENS, resume-bug, first-loss=RATE, "
          "gap=TOKENS, tail=TOKENS, overload=STREAMS with overload-delay=MS, seed=N "
          "plus, with --topology full, bridge-drop=RATE, bridge-delay=MS, interest-delay=MS "
          "(e.g. drop=0.01,disconnect=100)", "drop=0.01", sandbox=True),
    _Flag("topology", ("topology",), None, False, _OURS, "full|direct",
          "with --demo (or sandbox): full runs the real path, Redis -> bridge -> NATS -> SSE "
          "adapter, and --demo taps NATS (per-hop latency and loss); direct has the adapter "
          "read Redis itself (lighter) (default: full)", "full", sandbox=True),
    _Flag("tls", ("tls",), None, True, _OURS, None,
          "with --demo (or sandbox): the SSE adapter serves https:// with a certificate "
          "made at start (needs openssl), which --demo trusts by itself", sandbox=True),
    # `sse-tui sweep` (docs/sweep.md): the level is conversations live at once (or --rate).
    _Flag("sweep_from", ("from",), None, False, _SWEEP, "N",
          "the first load level (default: 10)", "10", sweep=True),
    _Flag("sweep_to", ("to",), None, False, _SWEEP, "N",
          "the highest load level tried (default: 2000)", "2000", sweep=True),
    _Flag("factor", ("factor",), None, False, _SWEEP, "F",
          "each step multiplies the level by F until one fails the SLO (default: 2)", "2",
          sweep=True),
    _Flag("step_duration", ("step-duration",), None, False, _SWEEP, "DURATION",
          "how long each level is measured, after its warm-up (default: 20s)", "20s",
          sweep=True),
    _Flag("warmup", ("warmup",), None, False, _SWEEP, "DURATION",
          "how long each level runs before it is measured (default: a quarter of "
          "--step-duration, at most 5s)", "5s", sweep=True),
    _Flag("help", ("help",), "h", True, _OTHER, None, "show this help and exit", sandbox=True),
    _Flag("version", ("version",), None, True, _OTHER, None, "show the version and exit",
          sandbox=True),
)
_FLAG_OF_DEST = {f.dest: f for f in _FLAGS}
_SPEC_OF_DEST = {s.field: s for s in SETTINGS}
_LONG_NAMES = [name for f in _FLAGS for name in f.longs]
_SANDBOX_VALUE_FLAGS = [f for f in _FLAGS if f.sandbox and not f.switch]


def _option_strings(flag: _Flag) -> list[str]:
    """-c, then --conversations and -conversations; --run-id, -run-id, --run_id and -run_id."""
    names = [f"-{flag.short}"] if flag.short else []
    for long in flag.longs:
        for name in dict.fromkeys((long, long.replace("-", "_"))):
            names += [f"--{name}", f"-{name}"]
    return names


# --- argparse -------------------------------------------------------------------------------

class _Given(NamedTuple):
    """One flag on the command line, in the order given."""

    dest: str
    flag: str  # as typed, without any =value: `-conversations`, `-c`
    text: str | None  # its value; None when missing (or a switch without =value)


class _Value(argparse.Action):
    """Records the flag and its text; parse_args reads the text. nargs="?" so that a missing
    value is reported by parse_args, naming the flag as typed, rather than by argparse."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        namespace.given.append(_Given(self.dest, option_string or self.dest, values))


class _Switch(argparse.Action):
    """A flag without a value, which Go also takes as -flag=true or -flag=false."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        text = cast(_Parser, parser).switch_texts[self.dest].popleft()
        namespace.given.append(_Given(self.dest, option_string or self.dest, text))


class _Parser(argparse.ArgumentParser):
    """argparse, taking only whole flag names.

    Left to itself, argparse (3.11, even with allow_abbrev=False) takes a prefix of a
    one-dash flag (`-con` for -conversations, `-js` for -json), splits `-mboth` into
    `-m both`, and refuses `-no-tui=false`. Go does none of that, so `_parse_optional`, which
    argparse asks of every argument whether it is a flag, says yes only to whole flags.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # What followed the = of each switch given (`-no-tui=false`), in order, for _Switch.
        # argparse asks _parse_optional about each argument once, in order, before it calls
        # any action, so the n-th call of a switch's action takes its n-th text.
        self.switch_texts: defaultdict[str, deque[str | None]] = defaultdict(deque)

    def _parse_optional(self, arg_string: str) -> Any:
        option = self._whole_flag(arg_string)
        if option is None:
            # A value (`-d -1`, `-duration -1s`) or a word; an unknown flag is left over
            # and reported by parse_args.
            return None
        action = self._option_string_actions[option]
        if action.nargs == 0:
            _, eq, text = arg_string.partition("=")
            self.switch_texts[action.dest].append(text if eq else None)
            return super()._parse_optional(option)
        return super()._parse_optional(arg_string)

    def _whole_flag(self, token: str) -> str | None:
        """The option string `token` is (`-conversations`), or starts (`-c=5`, `-c5`)."""
        actions = self._option_string_actions
        if token in actions:
            return token
        name, eq, _ = token.partition("=")
        if eq and name in actions:
            return name
        # -c5, -d0.5, -r127.0.0.1:6379: a short flag with its value attached. Not -mboth:
        # a letter after a short flag is more likely a mistyped long one (-conversation).
        short = token[:2]
        if (len(token) > 2 and token[1] != "-" and short in actions
                and actions[short].nargs != 0 and not token[2].isalpha()):
            return short
        return None

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}: see {PROG} --help")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`-c, --conversations N`: the short and the GNU spellings, the metavar once."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        names = ", ".join(
            s for s in action.option_strings
            if len(s) == 2 or (s.startswith("--") and "_" not in s)
        )
        return names if action.nargs == 0 else f"{names} {action.metavar}"


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
  {PROG} sandbox --faults drop=0.01      run the local stack alone and print its addresses
  {PROG} cluster --port-forward          run-loadtest.sh's command; see cluster --help
  {PROG} sweep --demo --slo 'p99<50ms'   capacity search; see sweep --help"""

_SANDBOX_USAGE = f"{PROG} sandbox " + " ".join(
    f"[--{f.longs[0]} {f.metavar}]" for f in _SANDBOX_VALUE_FLAGS
)


def _build_parser(command: Command) -> _Parser:
    """The parser for all flags ("run"), or for the help of `sse-tui sandbox`."""
    sandbox = command == "sandbox"
    parser = _Parser(
        prog=f"{PROG} sandbox" if sandbox else PROG,
        usage=_SANDBOX_USAGE if sandbox else f"{PROG} [flags]\n       {_SANDBOX_USAGE}",
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
    if command == "sweep":
        parser.prog, parser.usage = f"{PROG} sweep", _SWEEP_USAGE
        parser.description, parser.epilog = _SWEEP_DESCRIPTION, None
    groups = {
        title: parser.add_argument_group(title)
        for title in (_SWEEP, _ORIGINAL, _OURS, _OTHER)
    }
    for flag in _FLAGS:
        if sandbox and not flag.sandbox:
            continue
        groups[flag.group].add_argument(
            *_option_strings(flag), dest=flag.dest, action=_Switch if flag.switch else _Value,
            metavar=flag.metavar,
            # Parsed always (to say they belong to sweep), shown in sweep's help alone.
            help=argparse.SUPPRESS if flag.sweep and command != "sweep" else flag.help,
        )
    return parser


_SWEEP_USAGE = (f"{PROG} sweep --slo CLAUSES [--from N] [--to N] [--factor F]\n"
                "                     [--step-duration DURATION] [--warmup DURATION] [flags]")
_SWEEP_DESCRIPTION = """\
Capacity search: run the load at increasing levels (conversations live at once, or
with --rate new conversations per second), each for --warmup then --step-duration,
until one fails the --slo; then bisect between the last level that met it and the
first that did not, and report the highest level that met the SLO. Headless; any
flag of a run applies to every level. See docs/sweep.md."""


def format_help(command: Command = "run") -> str:
    return _build_parser(command).format_help()


# --- reading what was given -----------------------------------------------------------------

_GO_TRUE = {"1", "t", "true", "yes", "on"}
_GO_FALSE = {"0", "f", "false", "no", "off"}


def _switch_on(given: _Given) -> bool:
    if given.text is None or given.text.strip().lower() in _GO_TRUE:
        return True
    if given.text.strip().lower() in _GO_FALSE:
        return False
    raise UsageError(
        f"invalid value for {given.flag}: {given.text!r} is not true or false; "
        f"write {given.flag} on its own, or {given.flag}=false"
    )


def _unknown_flag(token: str) -> UsageError:
    name = token.split("=", 1)[0]
    bare = name.lstrip("-").replace("_", "-")
    close = difflib.get_close_matches(bare, _LONG_NAMES, n=1, cutoff=0.75)
    dashes = "--" if name.startswith("--") else "-"
    hint = f"did you mean {dashes}{close[0]}? " if close else ""
    return UsageError(f"unknown flag {name}: {hint}see {PROG} --help")


def _words(argv: list[str], leftovers: list[str]) -> tuple[list[str], list[str]]:
    """(words, unknown flags) among what argparse left over; after `--` all are words.

    argparse takes nothing after `--`; whether it leaves the `--` itself among the leftovers
    depends on the Python version."""
    cut = argv.index("--") if "--" in argv else len(argv)
    after = argv[cut + 1:]
    before = leftovers[: len(leftovers) - len(after)]
    if cut < len(argv) and before[-1:] == ["--"]:
        before = before[:-1]
    unknown = [t for t in before if len(t) > 1 and t.startswith("-")]
    words = [t for t in before if t not in unknown]
    return words + after, unknown


# --- --faults ---------------------------------------------------------------------------

def _rate(name: str, text: str) -> float:
    if NUMBER_RE.fullmatch(text.strip()):
        x = float(text)
        if 0 <= x <= 1:
            return x
    raise ValueError(f"{name} must be a fraction between 0 and 1, e.g. {name}=0.01 for 1%")


def _fault_ms(name: str, text: str) -> float:
    if NUMBER_RE.fullmatch(text.strip()):
        x = float(text)
        if math.isfinite(x) and x >= 0:
            return x
    raise ValueError(f"{name} must be 0 or more milliseconds, e.g. {name}=5")


def _fault_count(name: str, text: str) -> int:
    s = text.strip()
    if WHOLE_RE.fullmatch(s) and int(s) >= 1:
        return int(s)
    raise ValueError(f"{name} must be a whole number of tokens of at least 1, e.g. {name}=100")


def _fault_streams(name: str, text: str) -> int:
    s = text.strip()
    if WHOLE_RE.fullmatch(s) and int(s) >= 1:
        return int(s)
    raise ValueError(f"{name} must be a whole number of open streams of at least 1, "
                     f"e.g. {name}=100")


def _fault_int(name: str, text: str) -> int:
    s = text.strip()
    if WHOLE_RE.fullmatch(s):
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
    # The loss shapes of docs/loss.md: first-token race, a mid-stream gap, a silent tail.
    "first-loss": ("first_loss_rate", _rate, "first-loss=0.1"),
    "gap": ("gap", _fault_count, "gap=5"),
    "tail": ("tail_after", _fault_count, "tail=10"),
    # A load-dependent delay (for `sse-tui sweep`): tokens held overload-delay ms longer
    # while more than `overload` streams are open.
    "overload": ("overload_streams", _fault_streams, "overload=100,overload-delay=50"),
    "overload-delay": ("overload_delay_ms", _fault_ms, "overload=100,overload-delay=50"),
}
# The full topology's hops (docs/topology.md): the bridge's drop and delay, and the adapter's
# NATS interest becoming active late (the first tokens after a subscribe are lost).
_FAULT_KINDS |= {
    "bridge-drop": ("bridge_drop_rate", _rate, "bridge-drop=0.01"),
    "bridge-delay": ("bridge_delay_ms", _fault_ms, "bridge-delay=20"),
    "interest-delay": ("interest_delay_ms", _fault_ms, "interest-delay=50"),
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
    try:
        check_writable(path)  # the same way the write at the end of the run will do it
    except WriteError as e:
        raise UsageError(f"invalid value for {flag}: {e}") from None
    return str(path)


# --- the entry points -----------------------------------------------------------------------

def parse_args(argv: Sequence[str]) -> CliOptions:
    """Parse the command line. Raises UsageError with a one-line message on bad input;
    `--help` and `--version` print to stdout and raise SystemExit(0)."""
    argv = list(argv)
    namespace = argparse.Namespace(given=[])
    try:
        _, leftovers = _build_parser("run").parse_known_args(argv, namespace)
    except argparse.ArgumentError as e:  # a safety net: the actions only record
        raise UsageError(f"{e}: see {PROG} --help") from None
    given: list[_Given] = namespace.given
    words, unknown = _words(argv, leftovers)
    command: Command = ("sandbox" if words[:1] == ["sandbox"]
                        else "sweep" if words[:1] == ["sweep"] else "run")

    # Asking for help wins over whatever else is on the line.
    for g in given:
        if g.dest in ("help", "version") and _switch_on(g):
            if g.dest == "help":
                _build_parser(command).print_help()
            else:
                print(f"{PROG} {__version__}")
            raise SystemExit(0)

    for g in given:
        if _FLAG_OF_DEST[g.dest].switch:
            _switch_on(g)
        elif g.text is None:
            example = _FLAG_OF_DEST[g.dest].example
            raise UsageError(f"flag {g.flag} needs a value: e.g. {g.flag} {example}")
    if unknown:
        raise _unknown_flag(unknown[0])
    extra = words[1:] if words[:1] in (["run"], ["sandbox"], ["sweep"]) else words
    if extra:
        raise UsageError(
            f"unexpected argument {extra[0]!r}: {PROG} takes flags (and the sandbox "
            f"subcommand); see {PROG} --help"
        )
    if command == "sandbox":
        for g in given:
            if not _FLAG_OF_DEST[g.dest].sandbox:
                takes = [f"--{f.longs[0]}" for f in _SANDBOX_VALUE_FLAGS]
                raise UsageError(
                    f"flag {g.flag} does not apply to {PROG} sandbox, which takes "
                    f"{', '.join(takes[:-1])} and {takes[-1]}"
                )

    for g in given:
        if command != "sweep" and _FLAG_OF_DEST[g.dest].sweep:
            raise UsageError(f"flag {g.flag} applies only to {PROG} sweep: e.g. {PROG} sweep "
                             f"--slo 'p99<50ms' {g.flag} {_FLAG_OF_DEST[g.dest].example}")

    last = {g.dest: g for g in given}  # the last occurrence wins, as in Go
    switches = {dest: _switch_on(g) for dest, g in last.items() if _FLAG_OF_DEST[dest].switch}
    text = {dest: g.text for dest, g in last.items() if g.text is not None}

    config_path = Path(text["config"]) if "config" in text else None
    from_config = load_config(config_path) if config_path is not None else {}
    if command == "sandbox":
        from_config = {k: v for k, v in from_config.items() if _SPEC_OF_DEST[k].sandbox}

    from_flags: dict[str, Any] = {
        dest: switches[dest] if dest in switches else _SPEC_OF_DEST[dest].read_flag(
            g.flag, text[dest])
        for dest, g in last.items() if dest in _SPEC_OF_DEST
    }
    for dest, spec in _SPEC_OF_DEST.items():
        if spec.kind.many and dest in last:  # `--header A --header B`: every one counts
            from_flags[dest] = tuple(item for g in given if g.dest == dest
                                     for item in spec.read_flag(g.flag, g.text or ""))
    # REDIS_URL and the like sit under the config file and the flags.
    from_env = env_settings(os.environ) if command == "run" else {}
    settings = Settings(**{**from_env, **from_config, **from_flags})
    settings = apply_shape(settings, explicit={**from_config, **from_flags}.keys())
    if settings.stages and "duration_s" not in {**from_config, **from_flags}:
        # Without --duration a load profile runs for as long as its stages.
        settings = settings.with_changes(duration_s=stages_length_s(settings.stages))
    settings = settings.validated()

    demo = switches.get("demo", False)
    faults: dict[str, float] = {}
    if "faults" in text:
        flag = last["faults"].flag
        faults = parse_faults(text["faults"], flag)
        if command == "run" and not demo:
            raise UsageError(
                f"{flag} needs --demo (or the sandbox subcommand): faults are injected by "
                f"the embedded SSE adapter"
            )

    tls = switches.get("tls", False)
    if tls and command == "run" and not demo:
        raise UsageError(f"{last['tls'].flag} needs --demo (or the sandbox subcommand): it "
                         "makes the embedded SSE adapter serve https://; for your own "
                         "server give an https:// --sse URL (and --cacert FILE)")

    topology = _topology(last, text, faults, command == "run" and not demo)

    json_path = _json_path(last["json"].flag, text["json"]) if "json" in text else None

    return CliOptions(
        command=command,
        settings=settings,
        config_path=config_path,
        json_path=json_path,
        no_tui=switches.get("no_tui", False),
        demo=demo,
        explicit=frozenset(from_config) | frozenset(from_flags),
        faults=MappingProxyType(faults),
        tls=tls,
        topology=topology,
        sweep=MappingProxyType({dest: (g.flag, text[dest]) for dest, g in last.items()
                                if _FLAG_OF_DEST[dest].sweep and dest in text}),
    )


# The sandbox's shapes (sse_tui.sandbox.stack.TOPOLOGIES, not imported: it is heavy), the
# default first: a new user sees the real path, NATS and the per-hop tap (docs/topology.md).
TOPOLOGIES = ("full", "direct")


def _topology(last: Mapping[str, _Given], text: Mapping[str, str], faults: Mapping[str, Any],
              without_sandbox: bool) -> str:
    """--topology, checked against the run and the faults asked for."""
    if "topology" not in text:
        topology = TOPOLOGIES[0]
    else:
        flag, topology = last["topology"].flag, text["topology"].strip().lower()
        if topology not in TOPOLOGIES:
            raise UsageError(f"invalid value for {flag}: {text['topology']!r}; use full "
                             "(Redis -> bridge -> NATS -> adapter) or direct (the adapter "
                             "reads Redis)")
        if without_sandbox:
            raise UsageError(f"{flag} needs --demo (or the sandbox subcommand): it shapes "
                             "the embedded stack")
    hop_faults = [k for k in ("bridge_drop_rate", "bridge_delay_ms", "interest_delay_ms")
                  if faults.get(k)]
    if hop_faults and topology != "full":
        names = ", ".join(k.rsplit("_", 1)[0].replace("_", "-") for k in hop_faults)
        raise UsageError(f"the fault(s) {names} need --topology full: the direct topology "
                         "has no bridge and no NATS")
    return topology


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
