"""The consumers panel: one row per conversation, the most interesting ones first.

The table is updated in place by row key a few times a second: rows that went away are
removed, new ones added, and `update_cell` is called only for cells whose value changed.
With thousands of conversations only the `cap` most interesting ones get a row (the order
of `sse_tui.ranking`, which the engine also uses), and only the rows on screen have their
cells updated and their percentiles computed: a tick costs what the screen shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from sse_tui.ranking import most_interesting, slow_threshold_ms
from sse_tui.snapshot import ConversationView, PhaseStats, StatsSnapshot
from sse_tui.tui.format import fmt_age, fmt_int, fmt_ms

DEFAULT_ROW_CAP = 200

_STATE_STYLE = {
    "error": "bold red",
    "reconnecting": "yellow",
    "connecting": "cyan",
    "waiting": "dim",
    "streaming": "green",
    "publishing": "green",
    "draining": "cyan",
    "done": "dim",
    "cut": "dim",
    "incomplete": "yellow",
}


def pick_rows(
    conversations: Sequence[ConversationView], cap: int, slow_ms: float | None
) -> list[ConversationView]:
    """The `cap` most interesting conversations, in display order, without duplicate ids."""
    top = most_interesting(conversations, cap, slow_ms)
    seen: set[str] = set()
    out = []
    for c in top:
        if c.conversation_id not in seen:
            seen.add(c.conversation_id)
            out.append(c)
    return out


def _count(n: int) -> Text:
    return Text(str(n), style="bold red" if n else "", justify="right")


# Where an ended conversation's missing tokens were lost (docs/loss.md), in one letter after
# the count (`2g`): the table fits 80 columns to the last character.
_LOSS_LETTER = {"first": "f", "gap": "g", "tail": "t", "resume": "r", "mixed": "m"}


def _missing(v: tuple[int, str]) -> Text:
    """`2g`: the missing count and, once the conversation ended, where they were lost."""
    n, loss = v
    text = str(n)
    if loss and len(text) < 4:
        text += _LOSS_LETTER.get(loss, "?")
    return Text(text, style="bold red" if n else "", justify="right")


# Short names so the state column fits 80 columns.
_STATE_SHORT = {
    "connecting": "connect",
    "streaming": "stream",
    "reconnecting": "reconn",
    "publishing": "publish",
    "draining": "drain",
    "incomplete": "incompl",
}


def _state(state: str) -> Text:
    return Text(_STATE_SHORT.get(state, state), style=_STATE_STYLE.get(state, ""))


def _right(s: str, style: str = "") -> Text:
    return Text(s, style=style, justify="right")


# key, label, width, formatter of the raw value
_Col = tuple[str, str, int, Callable[[Any], Any]]
COLUMNS: tuple[_Col, ...] = (
    ("num", "#", 4, lambda v: _right(str(v))),
    ("state", "state", 7, _state),
    ("recv", "recv/exp", 9, lambda v: _right(f"{v[0]}/{v[1]}")),
    ("miss", "miss", 4, _missing),
    ("dup", "dup", 3, _count),
    ("ooo", "ooo", 3, _count),
    ("rc", "rc", 2, _count),
    ("last", "last", 6, lambda v: _right(fmt_ms(v))),
    ("p50", "p50", 6, lambda v: _right(fmt_ms(v))),
    ("p99", "p99", 6, lambda v: _right(fmt_ms(v))),
    ("age", "age", 5, lambda v: _right(fmt_age(v))),
    ("error", "error", 28, lambda v: Text(v or "", style="red")),
    # With --nats: tokens seen passing NATS, or where this conversation's losses happened.
    ("hop", "NATS hop", 22, lambda v: Text(v, style="red" if v and "seen" not in v else "")),
    ("id", "conversation id", 36, lambda v: v),
)
_P50 = 8
_P99 = 9
_KEEP = object()  # "not computed this tick": the cell keeps what it shows


def _raw(c: ConversationView, with_percentiles: bool) -> list[Any]:
    return [
        c.number,
        c.state,
        (c.received, c.expected),
        (c.missing, c.loss),
        c.duplicated,
        c.out_of_order,
        c.reconnects,
        c.last_latency_ms,
        c.recent_percentile(50) if with_percentiles else _KEEP,
        c.recent_percentile(99) if with_percentiles else _KEEP,
        None if c.last_event_age_s is None else round(c.last_event_age_s, 1),
        c.error,
        c.hop,
        c.conversation_id,
    ]


# DataTable's render caches (private: absent in another Textual, they are left alone).
_RENDER_CACHES = (("_cell_render_cache", 1000), ("_row_render_cache", 200),
                  ("_line_cache", 200))


class ConversationTable(DataTable[Any]):
    """Rows keyed by conversation id, updated cell by cell."""

    DEFAULT_CSS = """
    ConversationTable {
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, *, cap: int = DEFAULT_ROW_CAP, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.cap = cap
        self._shown: dict[str, list[Any]] = {}
        self._order: list[str] = []
        for key, label, width, _ in COLUMNS:
            self.add_column(label, width=width, key=key)
        # DataTable keeps up to 10 000 rendered cells: each tick's changes make new ones, and
        # at -c 10000 the stale ones were ~100 000 objects for the cyclic GC to walk (its
        # full collections then held keys up by 150 ms). A screenful or two is enough.
        for name, size in _RENDER_CACHES:
            cache = getattr(self, name, None)
            if cache is not None and hasattr(cache, "maxsize"):
                cache.maxsize = size

    def reset(self) -> None:
        self.clear()
        self._shown.clear()
        self._order = []

    def _visible_window(self) -> range:
        first = int(self.scroll_y)
        height = max(1, self.size.height)
        return range(max(0, first - 2), first + height + 2)

    def update_from(self, conversations: Sequence[ConversationView], slow_ms: float | None) -> int:
        """Show the most interesting conversations; returns how many rows are shown."""
        rows = pick_rows(conversations, self.cap, slow_ms)
        wanted = [c.conversation_id for c in rows]
        wanted_set = set(wanted)
        for key in [k for k in self._shown if k not in wanted_set]:
            self.remove_row(key)
            del self._shown[key]
        window = self._visible_window()
        for i, c in enumerate(rows):
            key = c.conversation_id
            old = self._shown.get(key)
            if old is not None and i not in window:
                # Off screen: its cells wait until it scrolls into view (the next tick). At
                # -c 10000 every row changes every second; updating the ~30 on screen rather
                # than all 200 keeps a tick's cost with the screen, not with the cap.
                continue
            raw = _raw(c, i in window)
            if old is None:
                for col in (_P50, _P99):
                    if raw[col] is _KEEP:
                        raw[col] = None
                self.add_row(
                    *(fmt(v) for (_, _, _, fmt), v in zip(COLUMNS, raw, strict=True)), key=key
                )
                self._shown[key] = raw
                continue
            for col, value in enumerate(raw):
                if value is _KEEP or value == old[col]:
                    continue
                old[col] = value
                self.update_cell(key, COLUMNS[col][0], COLUMNS[col][3](value))
        if wanted != self._order:
            rank = {k: i for i, k in enumerate(wanted)}
            self.sort("id", key=lambda cid: rank[cid])
            self._order = wanted
        return len(rows)


def _loss_split(t: PhaseStats) -> str:
    """`gap 8, tail 4`: the run's missing tokens by loss class, the classes that occur."""
    parts = [("first", t.loss_first), ("gap", t.loss_gap), ("tail", t.loss_tail),
             ("resume", t.loss_after_resume)]
    return ", ".join(f"{name} {fmt_int(n)}" for name, n in parts if n)


class ConsumersPanel(Vertical):
    """The conversation table and a totals line under it."""

    DEFAULT_CSS = """
    ConsumersPanel {
        border: round $primary;
        border-title-align: left;
        height: 1fr;
    }
    ConsumersPanel #consumer-totals {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    """

    def __init__(self, *, cap: int = DEFAULT_ROW_CAP, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = ConversationTable(cap=cap, id="conversation-table")
        self.totals = Static(id="consumer-totals")

    def compose(self) -> ComposeResult:
        yield self.table
        yield self.totals

    @property
    def ready(self) -> bool:
        return self.table.is_mounted and self.totals.is_mounted

    def on_mount(self) -> None:
        self.border_title = "Consumers"

    def reset(self) -> None:
        self.table.reset()

    def update_from(self, snap: StatsSnapshot) -> None:
        slow_ms = slow_threshold_ms(snap.total.latency.summary)
        shown = self.table.update_from(snap.conversations, slow_ms)
        n = len(snap.conversations)
        total = snap.total
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append("rows ", "bold")
        t.append(f"{shown}/{fmt_int(n)}")
        t.append("  live ", "bold")
        t.append(fmt_int(snap.conversations_live))
        t.append("  done ", "bold")
        t.append(fmt_int(total.conversations_completed))
        for label, value in (
            ("err", total.errors_total),
            ("miss", total.tokens_missing),
            ("dup", total.tokens_duplicated),
            ("ooo", total.tokens_out_of_order),
            ("rc", total.reconnects),
        ):
            t.append(f"  {label} ", "bold")
            t.append(fmt_int(value), "bold red" if value else "")
            split = _loss_split(total) if label == "miss" else ""
            if split:
                t.append(f" ({split})", "red")
        self.totals.update(t)
        self.border_subtitle = (
            f"showing {shown} of {fmt_int(n)}, most interesting first" if n > shown else ""
        )
