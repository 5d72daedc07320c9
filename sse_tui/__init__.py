"""sse-tui: load generator and live terminal monitor for SSE token-streaming systems."""

__version__ = "0.1.0"
