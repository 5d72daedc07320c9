"""The TUI's pure parts: key steps, number formats, which rows the table shows."""

from __future__ import annotations

import pytest

from sse_tui.snapshot import ConversationState, ConversationView, TimelinePoint
from sse_tui.tui.format import fmt_age, fmt_clock, fmt_ms
from sse_tui.tui.step_ladders import step_conversations, step_delay
from sse_tui.tui.widgets.consumers import pick_rows
from sse_tui.tui.widgets.latency import _time_ticks, render_chart


def test_conversation_steps_go_by_decades_and_stop_at_one() -> None:
    assert [step_conversations(n, 1) for n in (1, 9, 10, 15, 99, 100, 250)] == [
        2,
        10,
        20,
        20,
        100,
        200,
        300,
    ]
    assert [step_conversations(n, -1) for n in (1, 2, 10, 11, 20, 100, 101, 250)] == [
        1,
        1,
        9,
        10,
        10,
        90,
        100,
        200,
    ]


def test_delay_steps_follow_1_2_5() -> None:
    assert step_delay(50, 1) == 100
    assert step_delay(50, -1) == 20
    assert step_delay(37, 1) == 50
    assert step_delay(37, -1) == 20
    assert step_delay(0, -1) == 0
    assert step_delay(60_000, 1) == 60_000


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "–"),
        (float("nan"), "–"),
        (0.4234, "0.42"),
        (12.34, "12.3"),
        (1234.5, "1234"),
        (123_456.0, "123k"),
    ],
)
def test_fmt_ms(value: float | None, text: str) -> None:
    assert fmt_ms(value) == text


def test_fmt_clock_and_age() -> None:
    assert fmt_clock(None) == "∞"
    assert fmt_clock(65.9) == "1:05"
    assert fmt_clock(3725) == "1:02:05"
    assert fmt_age(None) == "–"
    assert fmt_age(1.23) == "1.2s"
    assert fmt_age(42) == "42s"


def conv(n: int, **kw: object) -> ConversationView:
    fields: dict[str, object] = dict(
        conversation_id=f"c-{n}",
        number=n,
        state="streaming",
        published=10,
        received=10,
        expected=50,
        missing=0,
        duplicated=0,
        out_of_order=0,
        reconnects=0,
        last_latency_ms=5.0,
        recent_latency_ms=(5.0,),
        last_event_age_s=0.1,
        error=None,
    )
    fields.update(kw)
    fields["state"] = ConversationState(fields["state"])
    return ConversationView(**fields)  # type: ignore[arg-type]


def test_pick_rows_puts_errors_then_losses_then_reconnects_then_slow_first() -> None:
    convs = [
        conv(1, state="done"),
        conv(2),
        conv(3, last_latency_ms=90.0),
        conv(4, state="reconnecting", reconnects=1),
        conv(5, duplicated=1),
        conv(6, state="error", error="reset"),
        conv(7, missing=2, state="done"),
    ]
    order = [c.number for c in pick_rows(convs, cap=10, slow_ms=50.0)]
    assert order == [6, 5, 7, 4, 3, 2, 1]
    assert [c.number for c in pick_rows(convs, cap=3, slow_ms=50.0)] == [6, 5, 7]


def test_pick_rows_drops_duplicate_ids() -> None:
    assert len(pick_rows([conv(1), conv(1)], cap=10, slow_ms=None)) == 1


def test_time_ticks_are_round_and_inside_the_range() -> None:
    assert _time_ticks(1, 9, 5) == [2, 4, 6, 8]
    ticks = _time_ticks(3, 300, 4)
    assert all(3 <= t <= 300 for t in ticks) and len(ticks) < 4


def test_chart_renders_at_the_size_asked() -> None:
    pts = tuple(TimelinePoint(float(t), 100, 100, 10 + t % 3, 40 + t % 5) for t in range(1, 30))
    text = render_chart(pts, 36, 6)
    lines = text.plain.splitlines()
    assert len(lines) == 6
    assert max(len(line) for line in lines) <= 36
    assert render_chart(pts[:1], 36, 6).plain.startswith("p50/p99")


class _Hooks:
    """Just enough of the engine for a Conversation that is fed by hand."""

    def __init__(self) -> None:
        from sse_tui.engine.stats import PhaseRecorder
        from sse_tui.settings import Settings

        self.phase = PhaseRecorder(index=0, label="p", started_s=0.0, conversations=1,
                                   delay_ms=1)
        self.settings = Settings(run_id="rank")
        self.ts_shift_ns = 0

    def on_established(self, conv: object) -> None:
        pass

    def on_latency(self, latency_us: int) -> None:
        pass


def test_engine_and_table_rank_conversations_the_same_way() -> None:
    from sse_tui.engine.consumer import Conversation
    from sse_tui.ranking import most_interesting

    hooks = _Hooks()

    def make(n: int, seqs: tuple[int, ...], done: int = 0, latency_us: int = 5000,
             **kw: object) -> Conversation:
        c = Conversation(hooks, n, f"c-{n}", 3, "http://127.0.0.1:1/stream/x")
        for seq in seqs:
            c.tracker.receive(seq, done=seq == done)
        c.last_latency_us = latency_us
        for k, v in kw.items():
            setattr(c, k, v)
        return c

    convs = [make(1, (1, 2, 3), done=3), make(2, (1, 2)), make(3, (1,), latency_us=90_000),
             make(4, (1,), reconnects=1), make(5, (1, 1, 2)), make(6, (1,), failure="reset"),
             make(7, (1, 2, 5), done=5)]
    for c in (convs[0], convs[6]):
        c.finalize(hooks.phase)
    assert (convs[0].state, convs[6].state) == ("done", "incomplete")
    views = [c.view(0) for c in convs]
    by_engine = [c.number for c in most_interesting(convs, 10, 50.0)]
    by_table = [c.number for c in pick_rows(views, cap=10, slow_ms=50.0)]
    assert by_engine == by_table == [6, 5, 7, 4, 3, 2, 1]


def test_a_conversation_moves_its_own_state() -> None:
    from sse_tui.engine.consumer import Conversation
    from sse_tui.engine.producer import PublishState

    hooks = _Hooks()
    c = Conversation(hooks, 1, "c-1", 2, None)
    assert c.state == ConversationState.WAITING and c.state.live
    c.mark_draining()  # not streaming: nothing to drain
    assert c.state == ConversationState.WAITING
    c.mark_publishing()
    c.publish = PublishState("c-1", "llm:tokens:c-1", 2, published=2)
    c.finalize(hooks.phase)
    assert c.state == ConversationState.DONE and not c.state.live
    assert hooks.phase.conversations_completed == 1
