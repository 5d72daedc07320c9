"""Embedded sandbox: a local redis-server and reference SSE adapter on loopback ports.

Used by ``--demo``, the tests and the benchmarks when no cluster is at hand.
"""

from sse_tui.sandbox.redis_server import RedisServer, RedisServerError, find_redis_server
from sse_tui.sandbox.stack import FaultConfig, Sandbox, SandboxError, run_sandbox

__all__ = [
    "FaultConfig",
    "RedisServer",
    "RedisServerError",
    "Sandbox",
    "SandboxError",
    "find_redis_server",
    "run_sandbox",
]
