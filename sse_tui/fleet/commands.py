"""Fleet commands: what `sse-tui fleet` sends, and how each generator takes its share.

A command is JSON on `sse-tui:fleet:NAME:commands`:
`{"op": "conversations", "value": 30, "members": ["run-a", "run-b", "run-c"]}`.

The rule for a share: the monitor sends the fleet-wide total and the members it counts
(registered, not finished, not lost), in the order they registered. The member at index
i of n takes `total // n`, plus one if `i < total % n` — so the shares add up to the total
exactly (30 over 4: 8, 8, 7, 7), and never less than one conversation. The rate (open loop)
is split evenly (`total / n`). The delay, pause/resume and hold/release of a --stages
profile are not shares: every member applies them as they are. A generator not in
`members` (it joined after the command was sent) ignores the command.

Commands reach the engine through the calls the TUI uses (`EngineHandle`), which an engine
process handle already has; a headless run's engine lives on its own loop, so
`LoopTarget` hands each call over to that loop. The engine knows nothing of fleets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

# op -> whether its value is a fleet-wide total split over the members.
OPS: dict[str, bool] = {
    "conversations": True,
    "rate": True,
    "delay": False,
    "pause": False,
    "resume": False,
    "hold": False,
    "release": False,
}


class CommandTarget(Protocol):
    """The part of `sse_tui.engine.handle.EngineHandle` fleet commands use."""

    def set_conversations(self, n: int) -> None: ...
    def set_delay(self, delay_ms: float) -> None: ...
    def set_rate(self, rate: float) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def hold_profile(self) -> None: ...
    def release_profile(self) -> None: ...


def conversations_share(total: int, index: int, n: int) -> int:
    """The member at `index` of `n`: total // n, plus one for the first total % n."""
    base, extra = divmod(max(int(total), n), n)
    return base + (1 if index < extra else 0)


def encode_command(op: str, value: float | None, members: Sequence[str]) -> str:
    if op not in OPS:
        raise ValueError(f"unknown fleet command {op!r}")
    return json.dumps({"op": op, "value": value, "members": list(members)})


def apply_command(raw: bytes | str, me: str, target: CommandTarget) -> str | None:
    """Apply one command as member `me`; what was done (for the log), or None if the
    command is not for us or not understood."""
    try:
        cmd = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(cmd, dict) or cmd.get("op") not in OPS:
        return None
    members = cmd.get("members")
    if not isinstance(members, list) or me not in members:
        return None
    op, raw_value, n, index = cmd["op"], cmd.get("value"), len(members), members.index(me)
    value = 0.0
    if OPS[op] or op == "delay":
        if not isinstance(raw_value, int | float) or isinstance(raw_value, bool) or (
                raw_value < 0):
            return None
        value = float(raw_value)
    if op == "conversations":
        share = conversations_share(int(value), index, n)
        target.set_conversations(share)
        return f"conversations {share} (of {int(value)} over {n})"
    if op == "rate":
        rate = value / n
        target.set_rate(rate)
        return f"rate {rate:g}/s (of {value:g} over {n})"
    if op == "delay":
        target.set_delay(value)
        return f"delay {value:g} ms"
    calls = {"pause": target.pause, "resume": target.resume,
             "hold": target.hold_profile, "release": target.release_profile}
    calls[op]()
    return op


class LoopTarget:
    """Commands for an engine that runs on an asyncio loop (headless): each call is handed
    over to that loop, where the engine's methods must run."""

    def __init__(self, engine: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self._loop = loop

    def _call(self, name: str, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self._loop.call_soon_threadsafe(getattr(self._engine, name), *args)

    def set_conversations(self, n: int) -> None:
        self._call("set_conversations", n)

    def set_delay(self, delay_ms: float) -> None:
        self._call("set_delay", delay_ms)

    def set_rate(self, rate: float) -> None:
        self._call("set_rate", rate)

    def pause(self) -> None:
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")

    def hold_profile(self) -> None:
        self._call("hold_profile")

    def release_profile(self) -> None:
        self._call("release_profile")
