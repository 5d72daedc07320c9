"""Embedded sandbox: a local redis-server and reference SSE adapter on loopback ports; in the
full topology also the reference Redis-NATS bridge and a nats-server (docs/topology.md).

Used by ``--demo``, the tests and the benchmarks when no cluster is at hand.
"""

from sse_tui.sandbox.nats_server import NatsServer, NatsServerError, find_nats_server
from sse_tui.sandbox.redis_server import RedisServer, RedisServerError, find_redis_server
from sse_tui.sandbox.stack import FaultConfig, Sandbox, SandboxError, run_sandbox

__all__ = [
    "FaultConfig",
    "NatsServer",
    "NatsServerError",
    "RedisServer",
    "RedisServerError",
    "Sandbox",
    "SandboxError",
    "find_nats_server",
    "find_redis_server",
    "run_sandbox",
]
