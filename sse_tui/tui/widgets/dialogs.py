"""Modal screens: the settings dialog and the key map."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.validation import Number
from textual.widgets import Input, Label, Static

from sse_tui.tui.messages import SettingsChange
from sse_tui.tui.step_ladders import MAX_CONVERSATIONS, MAX_DELAY_MS


class SettingsScreen(ModalScreen[SettingsChange | None]):
    """Type the conversation count and the delay; Enter applies, Escape cancels."""

    DEFAULT_CSS = """
    SettingsScreen { align: center middle; }
    SettingsScreen > Vertical {
        width: 60;
        max-width: 100%;
        height: auto;
        border: round $primary;
        padding: 0 1;
        background: $surface;
    }
    SettingsScreen Input { width: 24; }
    SettingsScreen #settings-error { color: $error; height: auto; }
    SettingsScreen #settings-help { color: $text-muted; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="settings.cancel"),
    ]

    def __init__(self, conversations: int, delay_ms: float) -> None:
        super().__init__()
        self._conversations = conversations
        self._delay_ms = delay_ms

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Settings"
            yield Label(f"Conversations at once (1–{MAX_CONVERSATIONS:,})")
            yield Input(
                str(self._conversations),
                type="integer",
                validators=[Number(minimum=1, maximum=MAX_CONVERSATIONS)],
                validate_on=["submitted"],
                id="conversations",
            )
            yield Label(f"Delay between tokens, ms (0–{MAX_DELAY_MS:g})")
            yield Input(
                f"{self._delay_ms:g}",
                type="number",
                validators=[Number(minimum=0, maximum=MAX_DELAY_MS)],
                validate_on=["submitted"],
                id="delay",
            )
            yield Static("", id="settings-error")
            yield Static("Enter applies · Tab next field · Esc cancels", id="settings-help")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        conv = self.query_one("#conversations", Input)
        delay = self.query_one("#delay", Input)
        for field, name in ((conv, "conversations"), (delay, "delay")):
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                why = "; ".join(result.failure_descriptions) or "invalid value"
                self.query_one("#settings-error", Static).update(f"{name}: {why}")
                field.focus()
                return
        try:
            change = SettingsChange(int(conv.value), float(delay.value))
        except ValueError:
            self.query_one("#settings-error", Static).update("enter numbers only")
            return
        self.dismiss(change)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The key map, built from the app's bindings so it cannot drift from them."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $primary;
        padding: 0 1;
        background: $surface;
    }
    """

    BINDINGS = [
        Binding("escape,q,question_mark,enter,f1", "close", "Close", id="help.close"),
    ]

    def __init__(self, keys: Iterable[tuple[str, str]], notes: str = "") -> None:
        super().__init__()
        self._keys = list(keys)
        self._notes = notes

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key, description in self._keys:
            table.add_row(key, description)
        with VerticalScroll() as box:
            box.border_title = "Keys"
            box.border_subtitle = "Esc closes"
            yield Static(table)
            if self._notes:
                yield Static(Text(self._notes, style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
