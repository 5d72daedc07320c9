"""Shared fixtures: a real local stack (redis-server + reference adapter) on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sse_tui.sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A fault-free stack shared by the tests that only need tokens to flow."""
    with Sandbox() as sb:
        yield sb
