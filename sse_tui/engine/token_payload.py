"""A token's JSON payload (docs/protocol.md), checked strictly.

A bool is not a sequence, `"false"` is not a done flag, a string is not a timestamp, and a
token of another conversation is not ours: each is a rejection with a reason the operator
can act on, never a reader task dying on a TypeError.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

# A sequence above this is not taken from a stream we do not publish (consumer mode: the
# bitmap of a conversation grows with its highest sequence).
MAX_SEQUENCE = 1 << 24
_EXAMPLE_CHARS = 80  # characters of a bad payload quoted in its error detail


class Rejected(NamedTuple):
    """Why a payload is not a token of this conversation: an error kind and its detail."""

    kind: str
    detail: str


def parse_token(data: str, conversation_id: str,
                max_sequence: int) -> tuple[int, int, bool, int] | Rejected:
    """(sequence, timestamp, done, intended) of a valid payload, else why not. Runs once per
    token. `intended` is the optional `intended_ts` (docs/protocol.md): when a late token was
    meant to be published; the timestamp itself for an on-time one, or when the key is not an
    integer at or before the timestamp (an optional extension is ignored, never rejected)."""
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError:
        d = None
    if type(d) is dict:
        seq = d.get("sequence")
        ts = d.get("timestamp")
        done = d.get("done")
        cid = d.get("conversation_id")
        if (type(seq) is int and type(ts) is int and type(done) is bool
                and 1 <= seq <= max_sequence and (cid is None or cid == conversation_id)):
            intended = d.get("intended_ts")
            if type(intended) is not int or intended > ts:
                intended = ts
            return seq, ts, done, intended
    return _rejected(d, data, conversation_id, max_sequence)


def _rejected(d: object, data: str, conversation_id: str, max_sequence: int) -> Rejected:
    if isinstance(d, dict) and d.get("conversation_id") not in (None, conversation_id):
        return Rejected("token for another conversation",
                        f"conversation_id {quoted(d['conversation_id'])} on the stream of "
                        f"{conversation_id}")
    return Rejected("bad token payload", f"{_why_bad(d, max_sequence)}: {quoted(data)}")


def _why_bad(d: object, max_sequence: int) -> str:
    if not isinstance(d, dict):
        return "not a JSON object"
    expect = (("sequence", int, "an integer"), ("timestamp", int, "an integer"),
              ("done", bool, "true or false"))
    for key, kind, what in expect:
        if key not in d:
            return f"no {key}"
        if type(d[key]) is not kind:
            return f"{key} is {quoted(d[key])}, not {what}"
    return f"sequence {d['sequence']} outside 1..{max_sequence}"


def quoted(value: object) -> str:
    """A value from a payload, short enough for an error detail: `"abc"`, `true`, `{…}`."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    if len(text) > _EXAMPLE_CHARS:
        text = text[:_EXAMPLE_CHARS] + "…"
    return text
