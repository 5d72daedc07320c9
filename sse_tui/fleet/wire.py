"""What the fleet puts on Redis, and under which names.

Everything lives under `sse-tui:fleet:NAME:` — never under the token channel prefix
(`llm:tokens:` by default), so the bridge never forwards it:

- `…:members`  sorted set: member id (the generator's run id) -> when it registered (ns).
  The order of registration is the order of the members (their index for a share).
- `…:beats`    hash: member id -> how many reports it has published (its heartbeat).
- `…:latest`   hash: member id -> its latest report, zlib-compressed JSON.
- `…:reports`  channel: the same report, published as it is written.
- `…:commands` channel: fleet commands (JSON), see sse_tui.fleet.commands.

A report is `{"member": {...who it is...}, "summary": <the --json summary>}`. The keys
expire a day after the last write, so that a forgotten fleet does not stay in Redis.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

PREFIX = "sse-tui:fleet:"
KEY_TTL_S = 24 * 3600
LOST_AFTER_S = 5.0  # a member silent this long is shown as lost
REPORT_INTERVAL_S = 1.0  # a generator reports at most this often


@dataclass(frozen=True)
class FleetKeys:
    name: str

    def _key(self, what: str) -> str:
        return f"{PREFIX}{self.name}:{what}"

    @property
    def members(self) -> str:
        return self._key("members")

    @property
    def beats(self) -> str:
        return self._key("beats")

    @property
    def latest(self) -> str:
        return self._key("latest")

    @property
    def reports(self) -> str:
        return self._key("reports")

    @property
    def commands(self) -> str:
        return self._key("commands")


def encode_report(member: dict[str, Any], summary: dict[str, Any]) -> bytes:
    text = json.dumps({"member": member, "summary": summary}, separators=(",", ":"),
                      allow_nan=False)
    return zlib.compress(text.encode("utf-8"), 6)


def decode_report(blob: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(member, summary). Raises ValueError for anything that is not a report."""
    try:
        data = json.loads(zlib.decompress(blob).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a fleet report ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("member"), dict) or (
            not isinstance(data.get("summary"), dict)):
        raise ValueError("not a fleet report (no member/summary)")
    return data["member"], data["summary"]
