"""`sse-tui cluster [run-loadtest.sh options]`: what run-loadtest.sh does after bootstrap.

Order, as in the original script: split the options (their shape only), `-h`,
`--install-only`; then sse-tui's own parser judges the whole sse-tui command line before
anything touches the cluster; then either --port-forward (tunnels, sse-tui as a child) or
endpoint auto-detection followed by sse-tui in this very process (what `exec` was).
Messages go to stderr; stdout is sse-tui's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sse_tui.cli_args import parse_args
from sse_tui.cluster.kube import (
    NATS,
    REDIS,
    SSE_ADAPTER,
    KubeSettings,
    LoadBalancers,
    choose_kubeconfig,
)
from sse_tui.cluster.log import Log
from sse_tui.cluster.options import ScriptOptions, parse_script_args, usage
from sse_tui.cluster.port_forward import Needs, run_with_port_forward
from sse_tui.settings import UsageError, format_duration

# Set by run-loadtest.sh on its `exec` line: how the operator called it, and where it is.
ENV_PROG = "RUN_LOADTEST_PROG"
ENV_DIR = "RUN_LOADTEST_DIR"
ENV_SSE_TUI = "RUN_LOADTEST_SSE_TUI"


@dataclass(frozen=True)
class Launch:
    """Who started us, and how sse-tui itself is run."""

    prog: str = "sse-tui cluster"  # the name in messages and the usage text
    script_dir: Path | None = None  # kubeconfigs/origin.yaml may sit next to the script
    installed: str = "sse-tui"  # what --install-only reports
    # A command to run as sse-tui (the tests' recorder); None: this package, which runs in
    # this process when no tunnel needs minding, as a child (`python -P -m sse_tui`) else.
    sse_tui: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Launch:
        prog = env.get(ENV_PROG)
        installed = env.get(ENV_SSE_TUI) or sys.argv[0]
        if not prog:
            return cls(installed=installed)
        script_dir = env.get(ENV_DIR)
        return cls(prog=prog, script_dir=Path(script_dir) if script_dir else None,
                   installed=installed)

    @property
    def who(self) -> str:
        return "this script" if self.prog != Launch.prog else "sse-tui"

    def run_here(self, argv: Sequence[str]) -> int:
        """Become sse-tui: the original script's `exec`."""
        if self.sse_tui is None:
            from sse_tui.__main__ import main as sse_tui_main

            return sse_tui_main(list(argv))
        os.execvp(self.sse_tui[0], [*self.sse_tui, *argv])

    def child_command(self, argv: Sequence[str]) -> list[str]:
        # -P: never import a ./sse_tui from the operator's current directory instead.
        return [*(self.sse_tui or (sys.executable, "-P", "-m", "sse_tui")), *argv]


def main(argv: Sequence[str], *, launch: Launch | None = None,
         env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    launch = launch or Launch.from_env(env)
    log = Log()
    try:
        return _main(list(argv), launch, env, log)
    except KeyboardInterrupt:  # during the kubectl lookups: nothing to clean up
        return 130


def _main(args: list[str], launch: Launch, env: dict[str, str], log: Log) -> int:
    fleet_help = args[:1] == ["fleet"] and any(a in ("-h", "--help") for a in args)
    if args and not args[0].startswith("-") and (args[0] != "fleet" or fleet_help):
        # A subcommand (`sandbox`, `merge`, ...) is sse-tui's business alone; `fleet` needs
        # the cluster's Redis, found or forwarded below.
        return launch.run_here(args)
    try:
        opts = parse_script_args(args)
    except UsageError as e:
        return _usage_error(launch.prog, e)
    if opts.help:
        sys.stdout.write(usage(launch.prog))
        return 0
    if opts.install_only:
        log.info(f"sse-tui is installed: {launch.installed}")
        return 0
    if opts.passthrough[:1] == ["fleet"]:  # `--port-forward fleet NAME ...`
        return _fleet(opts, launch, env, log)
    try:
        kube = KubeSettings.from_env(env)
    except UsageError as e:
        print(f"{launch.prog}: {e}", file=sys.stderr)
        return 2
    try:
        # sse-tui's parser judges the values (and the config file) before any kubectl runs.
        cli = parse_args(opts.sse_tui_argv())
        if opts.port_forward and cli.demo:
            raise UsageError("--port-forward and --demo exclude each other: "
                             "--demo runs a local sandbox")
        if opts.port_forward and cli.command != "run":
            raise UsageError(f"--port-forward does not apply to sse-tui {cli.command}")
    except UsageError as e:
        return _usage_error(launch.prog, e)

    # The endpoints the mode needs (a consumer given a Redis address also follows Redis).
    mode = cli.settings.mode
    need = {"redis": mode != "consumer", "sse": mode != "producer", "nats": opts.nats_wanted}
    if opts.port_forward:
        return run_with_port_forward(
            kube, env,
            Needs(redis=need["redis"] and not opts.has("redis"),
                  sse=need["sse"] and not opts.has("sse"),
                  nats=need["nats"] and not opts.has("nats")),
            lambda endpoints: launch.child_command(opts.sse_tui_argv(endpoints)),
            # A closed stdin becomes /dev/null, as it was for the script's background job.
            subprocess.DEVNULL if sys.stdin is None else None,
            log, cwd=Path.cwd(), script_dir=launch.script_dir,
        )

    endpoints: dict[str, str] = {}
    if cli.command == "run" and not cli.demo and cli.config_path is None:
        wanted = [d for d in ("redis", "sse", "nats") if need[d] and not opts.has(d)]
        endpoints = detect_endpoints(wanted, kube, env, launch, log)
        final = {d: opts.given[d][1] if opts.has(d) else endpoints.get(d, "-") for d in need}
        s = cli.settings
        tap = f" nats={final['nats']}" if need["nats"] or opts.has("nats") else ""
        log.info(f"Starting load test: mode={s.mode} redis={final['redis']} sse={final['sse']}"
                 f"{tap} "
                 f"conversations={s.conversations} tokens={s.tokens} delay={s.delay_ms:g}ms "
                 f"duration={format_duration(s.duration_s)}")
    return launch.run_here(opts.sse_tui_argv(endpoints))


def _fleet(opts: ScriptOptions, launch: Launch, env: dict[str, str], log: Log) -> int:
    """`sse-tui fleet NAME ...` with the cluster's Redis: given (-r), forwarded
    (--port-forward) or detected; the fleet needs nothing else."""
    others = sorted(opts.given.keys() - {"redis"})
    try:
        if others or opts.nats_wanted:
            shown = ", ".join(opts.given[d][0] for d in others) or "--nats"
            raise UsageError(f"fleet watches generators and takes -r/--redis, not {shown}; "
                             "give the load to the generators (--fleet NAME)")
        kube = KubeSettings.from_env(env)
        from sse_tui.fleet.main import parse as parse_fleet

        parse_fleet(_fleet_argv(opts, {"redis": "localhost:6379"})[1:])  # judged before kubectl
    except UsageError as e:
        return _usage_error(launch.prog, e)
    if opts.port_forward:
        return run_with_port_forward(
            kube, env, Needs(redis=not opts.has("redis"), sse=False),
            lambda endpoints: launch.child_command(_fleet_argv(opts, endpoints)),
            subprocess.DEVNULL if sys.stdin is None else None,
            log, cwd=Path.cwd(), script_dir=launch.script_dir,
        )
    endpoints = {} if opts.has("redis") else detect_endpoints(["redis"], kube, env, launch, log)
    return launch.run_here(_fleet_argv(opts, endpoints))


def _fleet_argv(opts: ScriptOptions, endpoints: dict[str, str]) -> list[str]:
    redis = opts.given["redis"][1] if opts.has("redis") else endpoints.get("redis")
    return [*opts.passthrough, *(("--redis", redis) if redis else ())]


# What to look up, and what to say when there is no answer: (dest, service, label,
# address form, fallback, the port-forward command to suggest).
_LOOKUPS = {
    "redis": (REDIS, "Redis", "{}:6379", "localhost:6379",
              "kubectl port-forward -n redis-system svc/redis 6379:6379"),
    "sse": (SSE_ADAPTER, "SSE adapter", "http://{}:80", "http://localhost:8080",
            "kubectl port-forward -n sse-system svc/sse-adapter 8080:80"),
    "nats": (NATS, "NATS", "nats://{}:4222", "nats://localhost:4222",
             "kubectl port-forward -n nats-system svc/nats 4222:4222"),
}


def detect_endpoints(wanted: Sequence[str], kube: KubeSettings, env: Mapping[str, str],
                     launch: Launch, log: Log) -> dict[str, str]:
    """The LoadBalancer addresses of the services in `wanted` ("redis", "sse", "nats"), like the
    original script; localhost and a port-forward hint for each one not found."""
    balancers: LoadBalancers | None = None
    if not kube.kubectl_found(env):
        log.warn(f"kubectl not found ({kube.kubectl}): cannot auto-detect cluster addresses.")
    else:
        kube_env = choose_kubeconfig(env, Path.cwd(), launch.script_dir, log)
        if kube_env is None:
            log.warn("No kubeconfig found (kubeconfigs/origin.yaml, $KUBECONFIG, "
                     "~/.kube/config).")
        else:
            balancers = LoadBalancers(kube, kube_env, log)
    found: dict[str, str] = {}
    for dest in wanted:
        (namespace, service), label, form, fallback, hint = _LOOKUPS[dest]
        address = None
        if balancers is not None:
            log.info(f"Detecting {label} address from cluster...")
            address = balancers.address(namespace, service)
        if address:
            found[dest] = form.format(address)
            log.info(f"Found {label} at {found[dest]}")
        else:
            found[dest] = fallback
            log.warn(f"{label} LoadBalancer address not available; using {fallback}. "
                     f"Port-forward it:")
            log.indented(hint)
            log.indented(f"(or let {launch.who} do it: {launch.prog} --port-forward)")
    return found


def _usage_error(prog: str, error: UsageError) -> int:
    print(f"{prog}: {error}\n\n{usage(prog)}", file=sys.stderr, end="")
    return 2

