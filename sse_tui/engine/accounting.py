"""Every token accounted for: conversations settled after their publisher answered, the
end-of-run invariant, and the bounded per-conversation detail for `--json-detail`.

The invariant (docs/loss.md): every sequence a reader was due is received or missing, never
neither, and duplicates are counted apart:

    tokens_expected == (tokens_received - tokens_duplicated) + tokens_missing

and in `both` mode what the readers were due is what was published:
tokens_expected == tokens_published. It is checked per conversation when it is settled
(`Conversation._check`) and for the run total at the end; a violation is a loud note in
the summary and the JSON, never silent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sse_tui.snapshot import ConversationDetail, Counters

if TYPE_CHECKING:
    from sse_tui.engine.consumer import Conversation
    from sse_tui.engine.nats_tap import NatsTap
    from sse_tui.engine.stats import PhaseRecorder

DETAIL_CAP = 1000  # conversations listed by --json-detail (the troubled ones first)
VIOLATION_EXAMPLES = 3  # conversations named in the note when the invariant breaks


class Accounting:
    def __init__(self, *, detail: bool) -> None:
        self._detail = detail
        self._unsettled: list[Conversation] = []
        self._troubled: list[ConversationDetail] = []
        self._clean: list[ConversationDetail] = []
        self.omitted = 0
        self.examples: list[str] = []  # conversations whose own accounting did not balance
        # --nats: a conversation's tap subscription ends once it is accounted (its missing
        # tokens are blamed on a hop by then: Conversation._account and settle).
        self.tap: NatsTap | None = None

    def ended(self, conv: Conversation) -> None:
        """A conversation was finalized: record it now, or once its publisher answered."""
        if conv.unsettled:
            self._unsettled.append(conv)
        else:
            self._record(conv)

    def settle(self, phase: PhaseRecorder) -> None:
        """The publisher has answered every pipeline sent before now (it calls back once per
        pipeline, in order), so what it published to ended conversations is final."""
        if not self._unsettled:
            return
        convs, self._unsettled = self._unsettled, []
        for conv in convs:
            conv.settle(phase)
            self._record(conv)

    def _record(self, conv: Conversation) -> None:
        if conv.hop is not None and self.tap is not None:
            self.tap.release(conv.hop)
        if conv.accounting_error and len(self.examples) < VIOLATION_EXAMPLES:
            self.examples.append(conv.accounting_error)
        if not self._detail or conv.stream_url is None:
            return
        d = conv.detail()
        troubled = d.missing or d.errors or d.reconnects or d.duplicated or d.error
        bucket = self._troubled if troubled else self._clean
        if len(bucket) < DETAIL_CAP:
            bucket.append(d)
        else:
            self.omitted += 1

    def details(self) -> tuple[tuple[ConversationDetail, ...], int]:
        """(the listed conversations, how many were left out): troubled ones first."""
        room = DETAIL_CAP - len(self._troubled)
        listed = self._troubled + self._clean[:room]
        return tuple(listed), self.omitted + max(0, len(self._clean) - room)


def check_totals(phases: Iterable[Counters], mode: str, examples: list[str]) -> list[str]:
    """The end-of-run invariant over the run total; the notes that say how it broke."""
    t = Counters()
    for p in phases:
        t.add(p)
    if mode == "producer":
        return []
    notes = []
    unique = t.tokens_received - t.tokens_duplicated
    if t.tokens_expected != unique + t.tokens_missing:
        notes.append(
            f"ACCOUNTING INVARIANT BROKEN: the readers were due {t.tokens_expected} tokens, "
            f"received {unique} (unique) + missing {t.tokens_missing} = "
            f"{unique + t.tokens_missing}")
    if mode == "both" and t.tokens_published != t.tokens_expected:
        notes.append(
            f"ACCOUNTING INVARIANT BROKEN: published {t.tokens_published} tokens, but the "
            f"readers were due {t.tokens_expected} "
            f"({t.tokens_published - t.tokens_expected:+d} neither received nor missing)")
    if t.accounting_violations:
        notes.append(
            f"ACCOUNTING INVARIANT BROKEN in {t.accounting_violations} conversation(s), e.g. "
            + "; ".join(examples))
    if notes:
        notes.append("sse-tui miscounted, or the server delivered tokens that were never "
                     "published: please report it with the JSON")
    return notes
