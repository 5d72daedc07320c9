"""Plain data passed between the app and its screens."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """What the settings dialog returns when the operator presses Enter."""

    conversations: int
    delay_ms: float
