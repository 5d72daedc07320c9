"""The options of the original run-loadtest.sh, spelled any way its users typed them.

Only the shape is checked here (a value is present, `--port-forward` takes none). Whether a
value is good is sse-tui's parser's call: the options are handed on as `-c=0`, spelled as
typed, and `sse_tui.cli_args.parse_args` judges them with the CLI's own words, so the
script and the CLI cannot disagree about `-d 20ms` or `-c 0`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sse_tui.settings import UsageError

# Spelling -> what it sets. The original's short and long names, the Go tool's, and
# `--token-delay`. Anything else is sse-tui's and goes through unchanged.
_VALUE_OPTIONS: dict[str, str] = {
    "-m": "mode", "--mode": "mode", "-mode": "mode",
    "-r": "redis", "--redis": "redis", "-redis": "redis",
    "-s": "sse", "--sse": "sse", "-sse": "sse",
    "-c": "conversations", "--conversations": "conversations", "-conversations": "conversations",
    "-t": "tokens", "--tokens": "tokens", "-tokens": "tokens",
    "-d": "delay", "--delay": "delay", "-token-delay": "delay", "--token-delay": "delay",
    "--duration": "duration", "-duration": "duration",
    "--nats": "nats", "-nats": "nats",
}
_NATS = ("--nats", "-nats")
# The order sse-tui gets them in: the run's shape, then where it runs.
_SHAPE = ("mode", "conversations", "tokens", "delay", "duration")
_HELP = ("-h", "--help", "-help")


@dataclass
class ScriptOptions:
    """The command line split into what the script acts on and what sse-tui gets."""

    given: dict[str, tuple[str, str]] = field(default_factory=dict)  # dest -> (spelling, value)
    passthrough: list[str] = field(default_factory=list)
    port_forward: bool = False
    # `--nats` without a value: tap NATS, at the address found (or forwarded) like the others.
    nats_wanted: bool = False
    install_only: bool = False
    help: bool = False

    def sse_tui_argv(self, endpoints: dict[str, str] | None = None) -> list[str]:
        """sse-tui's argv: the original's options as typed (`-c=3`: the `=` keeps a value
        that starts with a dash a value), the endpoints, then everything else untouched.
        `endpoints` (redis/sse found or forwarded by us) fill what was not given."""
        out = [f"{self.given[d][0]}={self.given[d][1]}" for d in _SHAPE if d in self.given]
        for dest in ("redis", "sse", "nats"):
            if dest in self.given:
                out.append(f"{self.given[dest][0]}={self.given[dest][1]}")
            elif endpoints and dest in endpoints:
                out += [f"--{dest}", endpoints[dest]]
        return out + self.passthrough

    def has(self, dest: str) -> bool:
        return dest in self.given


def parse_script_args(argv: Sequence[str]) -> ScriptOptions:
    """Split argv the way the original script did, left to right; `-h` stops there.
    Raises UsageError for a missing or empty value and for `--port-forward=...`."""
    opts = ScriptOptions()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, inline = arg, None
        if arg.startswith("-") and "=" in arg[2:]:  # -flag=value, --flag=value
            name, _, inline = arg.partition("=")
        if name in _NATS and inline is None and (
                i + 1 >= len(args) or args[i + 1].startswith("-")):
            opts.nats_wanted = True  # bare: find it (or forward it) like Redis and SSE
            i += 1
            continue
        if name in _VALUE_OPTIONS:
            if inline is not None:
                value, i = inline, i + 1
            elif i + 1 < len(args):
                value, i = args[i + 1], i + 2
            else:
                raise UsageError(f"option {name} needs a value")
            if not value:
                raise UsageError(f"option {name} needs a non-empty value")
            opts.given[_VALUE_OPTIONS[name]] = (name, value)  # the last one wins
            continue
        i += 1
        if name in _HELP:
            opts.help = True
            return opts
        if name == "--port-forward":
            if inline is not None:
                raise UsageError("--port-forward takes no value")
            opts.port_forward = True
        elif name == "--install-only":
            opts.install_only = True
        elif name == "--":
            opts.passthrough += args[i:]
            break
        else:
            opts.passthrough.append(arg)  # not ours: sse-tui gets it unchanged, and judges it
    return opts


def usage(prog: str) -> str:
    return f"""\
Usage: {prog} [OPTIONS] [SSE-TUI OPTIONS]
       {prog} sandbox|merge ...     (sse-tui's subcommands, passed through untouched)
       {prog} [--port-forward] [-r ADDR] fleet NAME ...
                                    (watch a fleet of generators: its Redis forwarded or found)

Distributed SSE Load Generator (sse-tui)

Options:
  -m, --mode MODE           Mode: producer, consumer, or both (default: both)
  -r, --redis ADDR          Redis address (default: auto-detect from cluster)
  -s, --sse URL             SSE adapter URL (default: auto-detect from cluster)
  -c, --conversations N     Number of concurrent conversations (default: 5)
  -t, --tokens N            Tokens per conversation (default: 50)
  -d, --delay MS            Delay between tokens in ms (default: 50)
  --duration DURATION       Test duration, e.g., 30s, 5m (default: 30s)
  --nats [URL]              Tap NATS for latency and loss per hop (docs/topology.md);
                            without URL, svc/nats (nats-system) is found like the others
  --port-forward            Port-forward svc/redis and svc/sse-adapter (and svc/nats
                            with --nats) on free local ports for the run, and stop the
                            forwards afterwards
  --install-only            Create .venv and install sse-tui, then exit
  -h, --help                Show this help

Any other option is passed to sse-tui unchanged, for example:
  --demo                    Run against an embedded local sandbox (no cluster needed)
  --no-tui                  Headless output even on a terminal
  --json PATH|-             Write the final summary as JSON (- for stdout)
  --config FILE.toml        Load settings from a profile (see config/); no auto-detection,
                            but --port-forward and -r/-s override the file's addresses
  --run-id ID               Conversation ids loadtest-ID-N (pair producer and consumer)
The Go-style spellings (-mode, -redis, -sse, -conversations, -tokens, -token-delay,
-duration) and -flag=value work too. All sse-tui options: .venv/bin/sse-tui --help

Examples:
  # Try it without a cluster
  {prog} --demo

  # Run full end-to-end test against cluster
  {prog}

  # Producer only (publish to Redis)
  {prog} -m producer -r localhost:6379

  # Consumer only (connect to SSE)
  {prog} -m consumer -s http://localhost:8080

  # High load test
  {prog} -c 50 -t 100 --duration 5m

  # Local development: let the script port-forward the cluster's services
  {prog} --port-forward

  # Watch and steer the Indexed Job's generators (docs/fleet.md)
  {prog} --port-forward fleet "$FLEET" --expect 4

  # Local development (port-forwarded services)
  {prog} -r localhost:6379 -s http://localhost:8080
"""
