"""`sse-tui sweep`: how much load does the system take before it misses its SLO?

Levels step up geometrically from --from (x --factor) until one fails the --slo or --to is
reached, then bisect between the highest level that met it and the lowest that did not,
until they are within 10% (or one conversation) of each other. Each level is a headless
LoadEngine run of its own (sse_tui.sweep_level: warm-up, then --step-duration measured),
judged by `slo.evaluate` on its measured phase. The search stops at once when the
generator's self-check finds the generator itself overloaded during a measured phase: a
capacity found then would be the generator's, not the system's.

Exit status: 0 a capacity was found (or every level up to --to met the SLO), 3 even the
first level failed the SLO, 1 nothing could be concluded (the generator overloaded, Redis or
the adapter unreachable), 2 bad input, 130 interrupted. docs/sweep.md has the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
from collections.abc import Sequence

from sse_tui.capacity import MAX_CONVERSATIONS, check_capacity
from sse_tui.cli_args import CliOptions
from sse_tui.engine import loops
from sse_tui.engine.engine import LoadEngine
from sse_tui.fdlimit import ensure_descriptors
from sse_tui.files import WriteError, is_stdout, write_private_atomically
from sse_tui.headless import STOP_SIGNALS, Lines
from sse_tui.settings import Settings, UsageError, check_outside_world, parse_duration
from sse_tui.sweep_level import (
    CONVERSATIONS,
    FAIL,
    NOT_MEASURED,
    OVERLOADED,
    RATE,
    Axis,
    LevelResult,
    run_level,
)
from sse_tui.sweep_report import Plan, chart, level_line, sweep_dict, table
from sse_tui.sweep_search import (
    AT_LEAST,
    FIRST_FAILS,
    FOUND,
    GENERATOR,
    INTERRUPTED,
    RESOLUTION,
    Answer,
    CapacitySearch,
)
from sse_tui.sweep_search import NOT_MEASURED as NO_MEASUREMENT
from sse_tui.values import NUMBER_RE, WHOLE_RE

DEFAULT_FROM = 10
DEFAULT_TO = 2000
DEFAULT_FACTOR = 2.0
DEFAULT_STEP_S = 20.0
# Warm-up by default: a quarter of the step, at most 5 s (a conversation of the defaults,
# 50 tokens 50 ms apart plus jitter, lasts ~3 s: by then the closed loop is turning over).
WARMUP_SHARE = 0.25
WARMUP_MAX_S = 5.0
MAX_FACTOR = 100.0


def run_sweep(options: CliOptions) -> int:
    """`sse-tui sweep` with its parsed options; UsageError (exit 2) on bad input."""
    settings = options.settings
    axis = _axis(options)
    plan = read_plan(options, axis)
    if not settings.slo:
        raise UsageError("sse-tui sweep needs --slo: the clauses each level must meet, "
                         "e.g. sse-tui sweep --slo 'p99<50ms,missing=0'")
    for name, flag in (("stages", "--stages"), ("trace", "--trace")):
        if getattr(settings, name):
            raise UsageError(f"{flag} does not apply to sse-tui sweep: the sweep sets the load "
                             "of each level itself")
    if settings.mode == "consumer":
        raise UsageError("sse-tui sweep needs --mode both (or producer): a consumer alone "
                         "does not make the load it would be sweeping")
    top = settings.with_changes(**{axis.field: axis.value(plan.stop)})
    if axis is RATE:  # its live conversations are capped by -c as given
        check_capacity(settings)
    check_outside_world(settings)
    try:
        ensure_descriptors(top)  # a socket per stream at the highest level
    except UsageError as e:
        raise UsageError(f"at --to {axis.number(plan.stop)}: {e}") from None
    faults = None
    if options.faults:
        from sse_tui.sandbox import FaultConfig

        try:
            faults = FaultConfig(**options.faults)
        except (TypeError, ValueError) as e:
            raise UsageError(f"invalid --faults: {e}") from None

    json_path = options.json_path
    if json_path and json_path != "-" and is_stdout(json_path):
        json_path = "-"
    out = Lines(sys.stderr if json_path == "-" else sys.stdout)
    err = out if json_path == "-" else Lines(sys.stderr)
    for note in _ignored(options, axis):
        err.print(f"sse-tui sweep: {note}")

    sandbox = None
    if options.demo:
        from sse_tui.sandbox import Sandbox
        from sse_tui.sandbox.stack import SandboxError

        try:
            sandbox = Sandbox(faults=faults, channel_prefix=settings.channel_prefix,
                              tls=options.tls, topology=options.topology).start()
        except SandboxError as e:
            err.print(f"sse-tui: cannot start the demo sandbox: {e}")
            return 1
        settings = settings.with_changes(redis=sandbox.redis_address, sse=sandbox.sse_url)
        if sandbox.ca_file is not None:
            settings = settings.with_changes(cacert=sandbox.ca_file)
        if sandbox.nats_url is not None and "nats" not in options.explicit:
            settings = settings.with_changes(nats=sandbox.nats_url)  # the per-hop tap, as --demo
    try:
        results, answer = loops.run(_search(settings, plan, out, err))
    finally:
        if sandbox is not None:
            sandbox.stop()

    _print_outcome(results, answer, out, err)
    if json_path:
        text = json.dumps(sweep_dict(plan, settings.slo, results, answer), indent=2,
                          allow_nan=False) + "\n"
        try:
            if json_path == "-":
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                out.print(f"levels written to {write_private_atomically(json_path, text)}")
        except (WriteError, OSError, ValueError) as e:
            err.print(f"sse-tui: the sweep's JSON was not written: {e}")
            return 1
    return answer.exit_status


# --- input ------------------------------------------------------------------------------------

def _axis(options: CliOptions) -> Axis:
    """The open-loop rate when Settings has one and it was given; else conversations."""
    return RATE if options.settings.rate > 0 else CONVERSATIONS


def _ignored(options: CliOptions, axis: Axis) -> list[str]:
    notes = []
    if axis is CONVERSATIONS and "conversations" in options.explicit:
        notes.append("-c/--conversations is ignored: each level sets the conversations")
    if "duration_s" in options.explicit:
        notes.append("--duration is ignored: each level runs --warmup, then --step-duration")
    for name, flag in (("metrics_port", "--metrics-port"), ("timeseries", "--timeseries")):
        if getattr(options.settings, name):
            notes.append(f"{flag} is ignored: a sweep writes its levels with --json")
    return notes


def read_plan(options: CliOptions, axis: Axis) -> Plan:
    """The sweep's own flags, checked: UsageError naming the flag as typed."""
    given = options.sweep

    def level(dest: str, default: float) -> float:
        if dest not in given:
            return default
        flag, text = given[dest]
        t = text.strip()
        if axis.whole:
            if not WHOLE_RE.fullmatch(t) or int(t) < 1:
                raise UsageError(f"invalid value for {flag}: {text!r} is not a whole number "
                                 f"of {axis.unit} of at least 1, e.g. {flag} "
                                 f"{axis.number(default)}")
            return int(t)
        if not NUMBER_RE.fullmatch(t) or not math.isfinite(float(t)) or float(t) <= 0:
            raise UsageError(f"invalid value for {flag}: {text!r} is not a positive number "
                             f"of {axis.unit}, e.g. {flag} {axis.number(default)}")
        return float(t)

    def duration(dest: str) -> float | None:
        if dest not in given:
            return None
        flag, text = given[dest]
        try:
            return parse_duration(text)
        except UsageError as e:
            raise UsageError(f"invalid value for {flag}: {e}") from None

    start = level("sweep_from", DEFAULT_FROM)
    stop = level("sweep_to", max(DEFAULT_TO, start))
    if stop < start:
        raise UsageError(f"{given['sweep_to'][0]} {axis.number(stop)} is below --from "
                         f"{axis.number(start)}: the search goes up from --from to --to")
    if axis is CONVERSATIONS and stop > MAX_CONVERSATIONS:
        flag = given["sweep_to"][0] if "sweep_to" in given else "--from"
        raise UsageError(f"{flag} {axis.number(stop)} is more conversations than one generator "
                         f"process can hold (at most {MAX_CONVERSATIONS:,}): sweep up to that, "
                         "or run several generators (docs/sweep.md)")
    factor = DEFAULT_FACTOR
    if "factor" in given:
        flag, text = given["factor"]
        t = text.strip()
        if not NUMBER_RE.fullmatch(t) or not 1 < float(t) <= MAX_FACTOR:
            raise UsageError(f"invalid value for {flag}: {text!r}; give a number above 1 and "
                             f"at most {MAX_FACTOR:g}, e.g. {flag} 2 to double each step")
        factor = float(t)
    step = duration("step_duration")
    if step is None:
        step = DEFAULT_STEP_S
    elif step < 1.0:
        raise UsageError(f"{given['step_duration'][0]} must be at least 1s: the generator's "
                         "self-check judges 1 s windows, e.g. --step-duration 20s")
    warmup = duration("warmup")
    if warmup is None:
        warmup = min(WARMUP_SHARE * step, WARMUP_MAX_S)
    return Plan(axis, start, stop, factor, step, warmup, RESOLUTION)


# --- the search -------------------------------------------------------------------------------

async def _search(settings: Settings, plan: Plan, out: Lines, err: Lines
                  ) -> tuple[list[LevelResult], Answer]:
    axis = plan.axis
    search = CapacitySearch(plan.start, plan.stop, plan.factor, whole=axis.whole,
                            resolution=plan.resolution)
    results: list[LevelResult] = []
    current: list[LoadEngine] = []  # the engine of the level running, for the signals

    def started(engine: LoadEngine) -> None:
        current[:] = [engine]
    signals = 0
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if current:
            if signals == 1:
                err.print("stopping: this level ends now, the sweep after it "
                          "(press Ctrl-C again to skip the grace period)")
                current[-1].stop()
            else:
                current[-1].hurry()

    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    out.print(_describe(settings, plan))
    stopped: str | None = None
    try:
        while (level := search.next_level()) is not None:
            for attempt in (1, 2):
                order = len(results) + 1
                phase = "step" if search.stepping else "bisect"
                again = ", again" if attempt > 1 else ""
                out.print(f"level {order} ({phase}{again}): {axis.text(level)}")
                result = await run_level(
                    settings, axis, level, order, warmup_s=plan.warmup_s, step_s=plan.step_s,
                    started=started, interrupted=lambda: signals > 0)
                current.clear()
                results.append(result)
                out.print(level_line(result))
                # A generator overloaded may have been disturbed from outside (another
                # process on the machine): the level is tried once more. Twice running, it
                # is the bottleneck at this load. A level failed while the generator lost a
                # second or so is tried again too: the failure may be that second's.
                check = result.self_check
                if attempt > 1 or signals or not (result.verdict == OVERLOADED or (
                        result.verdict == FAIL and check is not None and check.disturbed)):
                    break
                out.print("  the generator was overloaded during this level: trying it "
                          "once more, in case that was a passing disturbance")
            if result.verdict in (OVERLOADED, NOT_MEASURED):
                stopped = result.verdict
                break
            search.record(level, result.passed)
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return results, conclude(search, results, stopped, plan)


def conclude(search: CapacitySearch, results: Sequence[LevelResult], stopped: str | None,
             plan: Plan) -> Answer:
    axis = plan.axis
    lo, hi = search.passed, search.failed
    met = (f" The system met the SLO up to {axis.text(lo)}, the highest level measured "
           "with the generator keeping up." if lo is not None else "")
    if stopped is not None:
        last = results[-1]
        if last.interrupted:
            return Answer(INTERRUPTED, None, hi, lo,
                          f"interrupted at {axis.text(last.level)}: no capacity concluded."
                          + met)
        if stopped == OVERLOADED:
            check = last.self_check
            why = f" ({check.worst})" if check is not None and check.worst else ""
            return Answer(GENERATOR, None, hi, lo,
                          f"stopped at {axis.text(last.level)}: the load generator itself "
                          f"was overloaded{why}, so that level's figures are the "
                          "generator's, not the system's; no capacity concluded." + met
                          + " Run the sweep from several generator processes, or with "
                          "fewer tokens per second per process (docs/sweep.md).")
        return Answer(NO_MEASUREMENT, None, hi, lo,
                      f"stopped at {axis.text(last.level)}: {last.fatal_error}." + met)
    if lo is None:
        first = results[0] if results else None
        clauses = ", ".join(f"{x.clause.text}: {x.measured_text()}"
                            for x in (first.failed_clauses if first else []))
        return Answer(FIRST_FAILS, None, hi, None,
                      f"even the first level, {axis.text(plan.start)}, failed the SLO "
                      f"({clauses}): lower --from")
    if hi is None:
        return Answer(AT_LEAST, lo, None, lo,
                      f"capacity: at least {axis.text(lo)}: every level up to --to met the "
                      "SLO; raise --to to find where it breaks")
    return Answer(FOUND, lo, hi, lo,
                  f"capacity: {axis.text(lo)}, the highest level that met the SLO "
                  f"({axis.number(hi)} did not)")


# --- output -----------------------------------------------------------------------------------

def _describe(s: Settings, plan: Plan) -> str:
    axis = plan.axis
    target = (f"redis {s.shown('redis')}" if s.mode == "producer"
              else f"redis {s.shown('redis')} -> {s.shown('sse')}")
    fixed = f"{s.tokens} tokens per conversation, delay {s.delay_ms:g} ms"
    if axis is RATE:
        fixed += f", at most {s.conversations} conversations live"
    return (f"sse-tui sweep: {axis.unit} from {axis.number(plan.start)} to "
            f"{axis.number(plan.stop)} (x{plan.factor:g}, then bisect to "
            f"{100 * plan.resolution:g}%); each level {plan.warmup_s:g} s warm-up + "
            f"{plan.step_s:g} s measured\n  SLO {','.join(s.slo)}; {s.mode} mode, {fixed}\n"
            f"  {target} (run id {s.run_id})")


def _print_outcome(results: Sequence[LevelResult], answer: Answer, out: Lines,
                   err: Lines) -> None:
    out.print("")
    out.print("=== Capacity search ===")
    for row in table(results):
        out.print(row)
    out.print("")
    out.print(answer.message[:1].upper() + answer.message[1:])
    colour = _colour(out)
    drawing = chart(results, colour=colour)
    if drawing:
        out.print("")
        out.print(drawing)
    if answer.exit_status not in (0, 130) and err is not out:
        err.print(f"sse-tui sweep: {answer.message}")


def _colour(out: Lines) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(out.stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False
