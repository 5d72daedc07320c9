"""The run's Redis client: its URL, password and TLS options, and why it cannot connect.

The password comes from the URL, else `--redis-password-file`, else `REDIS_PASSWORD`; the
TLS options (`--cacert`, `--cert`, `--key`, `--insecure`) apply to a rediss:// URL.
"""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, AuthorizationError, ResponseError

from sse_tui.credentials import redis_password, url_password
from sse_tui.engine.transport.tls import TLSOptions, describe_tls_error
from sse_tui.settings import Settings, redis_url


def redis_client(s: Settings, *, connect_timeout_s: float) -> aioredis.Redis:
    """The client (not connected yet). Raises ValueError if the password file cannot be read."""
    url = redis_url(s.redis)
    kwargs: dict[str, Any] = {}
    password = redis_password(url, s.redis_password_file, os.environ)
    if password is not None and url_password(url) is None:
        kwargs["password"] = password
    if url.lower().startswith("rediss://"):
        kwargs.update(TLSOptions.of(s).redis_kwargs())
    return aioredis.from_url(url, socket_connect_timeout=connect_timeout_s, socket_timeout=30,
                             health_check_interval=0, **kwargs)


def auth_or_tls_problem(e: BaseException) -> str | None:
    """The clear reason for a login or TLS failure, or None for any other failure."""
    tls = describe_tls_error(e)
    if tls is not None:
        return tls
    text = str(e)
    if isinstance(e, AuthenticationError | AuthorizationError) or (
            isinstance(e, ResponseError) and text.startswith(("NOAUTH", "WRONGPASS"))):
        # redis-py 8 keeps the reply's code apart (its text may be about HELLO).
        code = str(getattr(e, "status_code", "") or "")
        if code == "NOAUTH" or "NOAUTH" in text or "Authentication required" in text:
            return ("a password is required: give it with REDIS_PASSWORD, "
                    "--redis-password-file FILE or in the URL (redis://user:pw@host:port)")
        if "no password is set" in text:
            return "a password was given, but none is set on the server: leave it out"
        return ("the user name or password was refused (WRONGPASS): check REDIS_PASSWORD, "
                "--redis-password-file or the URL's user and password")
    return None
