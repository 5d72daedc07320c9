"""Shared fixtures and the one way tests wait.

A real local stack (redis-server + reference adapter) on free ports, and `wait_until` /
`until`: every wait in the tests polls a condition with a deadline and says what it waited
for when the deadline passes. Never sleep "long enough" and then assert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from sse_tui.sandbox import Sandbox

POLL_S = 0.02


def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0,
               what: str = "the condition") -> None:
    """Poll `predicate` (from a plain thread) until it is true; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)


async def until(predicate: Callable[[], Any], *, timeout: float = 10.0,
                what: str = "the condition",
                pause: Callable[[float], Awaitable[Any]] | None = None) -> None:
    """The same on an event loop; `pause` (e.g. a Textual pilot's) replaces asyncio.sleep
    so that the app gets to process messages between polls."""
    deadline = time.monotonic() + timeout
    nap = pause or asyncio.sleep
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await nap(POLL_S)


def adapter_took(sb: Sandbox, conversation_id: str, n: int) -> Callable[[], bool]:
    """A predicate: the sandbox adapter has taken `n` tokens of this conversation from Redis."""

    def took() -> bool:
        per = sb.adapter_stats()["per_conversation"].get(conversation_id)
        return bool(per) and per["from_redis"] >= n

    return took


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A fault-free stack shared by the tests that only need tokens to flow."""
    with Sandbox() as sb:
        yield sb
