"""Secrets: where they come from, and how they are kept out of everything shown or written.

A run's secrets are the Redis password (in the `--redis` URL, `--redis-password-file` or
`REDIS_PASSWORD`), the user-info of the SSE URL, and the values of `--header`s (which may be
`$ENV` references, resolved when the run starts). They are used to connect and nowhere else:

- every view shows a setting through `Settings.shown` (URLs through `redact_url`, headers
  as `Name: ***`), and the JSON summary is made the same way;
- a saved TOML file leaves them out (`Settings.to_toml_dict`) and says where to give them;
- texts that come from libraries (redis-py, httpx, ssl) pass through a `Redactor` that
  knows the run's secrets before they reach a user.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, urlsplit

REDACTED = "***"
MIN_REDACTED_LEN = 3
PASSWORD_ENV = "REDIS_PASSWORD"

# scheme://user:password@ or scheme://token@ — in a URL or anywhere in a message.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:?#]*)(?::(?P<pw>[^\s/@?#]*))?@"
)


def redact_url(url: str) -> str:
    """`redis://user:pw@host` -> `redis://user:***@host`; `https://token@host` ->
    `https://***@host` (over HTTP a bare user-info may be a token; in a Redis URL it is a
    user name). Anything else is returned as is."""
    one = _one_url(url)
    if one is not None:  # a setting's value: its user-info ends at its last @
        scheme, userinfo, rest = one
        user, colon, _ = userinfo.partition(":")
        if colon:
            return f"{scheme}{user}:{REDACTED}@{rest}"
        return f"{scheme}{user if _is_redis(scheme) else REDACTED}@{rest}"
    return _USERINFO.sub(_redacted_userinfo, url)


def _one_url(text: str) -> tuple[str, str, str] | None:
    """(`scheme://`, user-info, the rest) of a text that is one URL with a user-info."""
    scheme, sep, after = text.partition("://")
    if not sep or not scheme or any(c.isspace() for c in text):
        return None
    end = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
    userinfo, at, host = after[:end].rpartition("@")
    if not at:
        return None
    return f"{scheme}{sep}", userinfo, host + after[end:]


def _is_redis(scheme: str) -> bool:
    return scheme.lower().startswith(("redis://", "rediss://"))


def _bare_user_is_a_name(m: re.Match[str]) -> bool:
    return _is_redis(m["scheme"])


def _redacted_userinfo(m: re.Match[str]) -> str:
    if m["pw"] is None:
        user = m["user"] if _bare_user_is_a_name(m) else REDACTED
        return f"{m['scheme']}{user}@"
    return f"{m['scheme']}{m['user']}:{REDACTED}@"


def url_without_password(url: str) -> str:
    """What a saved file keeps of a URL: `redis://user:pw@host` -> `redis://user@host`,
    `redis://:pw@host` -> `redis://host`; a bare user-info over HTTP (maybe a token) is
    dropped."""

    one = _one_url(url)
    if one is not None:
        scheme, userinfo, rest = one
        user, colon, _ = userinfo.partition(":")
        if user and (colon or _is_redis(scheme)):
            return f"{scheme}{user}@{rest}"
        return f"{scheme}{rest}"

    def keep_user(m: re.Match[str]) -> str:
        if m["user"] and (m["pw"] is not None or _bare_user_is_a_name(m)):
            return f"{m['scheme']}{m['user']}@"
        return m["scheme"]

    return _USERINFO.sub(keep_user, url, count=1)


def url_password(url: str) -> str | None:
    """The password in a URL's user-info, decoded; None when it has none."""
    if "://" not in url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def url_user_secret(url: str) -> str | None:
    """A bare user-info over HTTP (`https://token@host`), which may be a token; else None."""
    if "://" not in url or url.lower().startswith(("redis://", "rediss://")):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username and parts.password is None:
        return unquote(parts.username)
    return None


class Redactor:
    """Replaces a run's secrets (and URL user-info) in texts from libraries by `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for s in secrets:
            # A value of one or two characters (`X-Debug: 1`) is no secret worth the cost:
            # replacing every "1" would garble each address and count in a message.
            if len(s) >= MIN_REDACTED_LEN:
                forms.update((s, quote(s, safe=""), quote_plus(s)))
        # Longest first: a secret that contains another is replaced whole.
        self._secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        # The known secrets first: a password with an @ in it would fool the URL pattern.
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return redact_url(text)


# --- headers ----------------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_ENV_REF = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
# A value that is nothing but an environment reference, maybe after an auth scheme word
# (`$TOKEN`, `Bearer ${TOKEN}`): saved to TOML as written, since it holds no secret itself.
_ONLY_REFERENCE = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9-]*\s+)?\$(?:\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)"
)
# Set by the transports themselves: a --header may not replace them.
_RESERVED = {"host", "content-length", "transfer-encoding", "connection", "last-event-id"}


def split_header(text: str) -> tuple[str, str]:
    """`Name: value` -> (name, value). Raises ValueError saying what is wrong."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name:
        raise ValueError(f"{_shown_header_text(text)!r} is not 'Name: value'; "
                         "use e.g. --header 'Authorization: Bearer $TOKEN'")
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid header name")
    if name.lower() in _RESERVED:
        raise ValueError(f"header {name} is set by sse-tui itself; leave it out")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"the value of header {name} contains a line break or NUL")
    return name, value


def _shown_header_text(text: str) -> str:
    name, colon, _ = text.partition(":")
    return f"{name.strip()}: {REDACTED}" if colon else text[:40]


def header_shown(text: str) -> str:
    """`Authorization: Bearer xyz` -> `Authorization: ***`."""
    name, _, _ = text.partition(":")
    return f"{name.strip()}: {REDACTED}"


def header_saved(text: str) -> str | None:
    """The header as a TOML file may keep it: only when its value is an `$ENV` reference."""
    _, _, value = text.partition(":")
    return text.strip() if _ONLY_REFERENCE.fullmatch(value.strip()) else None


def env_references(value: str) -> list[str]:
    return [m["braced"] or m["bare"] for m in _ENV_REF.finditer(value)]


def resolve_header(text: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """(name, value) with `$NAME` / `${NAME}` replaced from the environment.
    Raises ValueError naming a variable that is not set (never its value)."""
    name, value = split_header(text)
    missing = [v for v in env_references(value) if v not in environ]
    if missing:
        raise ValueError(f"header {name} uses ${missing[0]}, which is not set in the environment")

    def substitute(m: re.Match[str]) -> str:
        return environ[m["braced"] or m["bare"]]

    resolved = _ENV_REF.sub(substitute, value)
    if any(c in resolved for c in "\r\n\0"):
        raise ValueError(f"the value of header {name} contains a line break or NUL")
    return name, resolved


def resolve_headers(headers: Iterable[str],
                    environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    env = os.environ if environ is None else environ
    return tuple(resolve_header(h, env) for h in headers)


# --- the Redis password ---------------------------------------------------------------------

def read_password_file(path: str) -> str:
    """The password in a file: its first line. Raises ValueError naming the file and why."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"password file {path} not found") from None
    except IsADirectoryError:
        raise ValueError(f"password file {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read password file {path}: {why or e}") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ValueError(f"password file {path} is empty: put the password on its first line")
    return password


def redis_password(url: str, password_file: str,
                   environ: Mapping[str, str] | None = None) -> str | None:
    """The password to log in to Redis with: the URL's, else the file's, else REDIS_PASSWORD.
    Raises ValueError if the password file cannot be read."""
    in_url = url_password(url)
    if in_url:
        return in_url
    if password_file:
        return read_password_file(password_file)
    env = os.environ if environ is None else environ
    return env.get(PASSWORD_ENV) or None


def run_secrets(*, redis: str, sse: str, headers: Iterable[str], password_file: str,
                environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret of a run, for a `Redactor`. Never raises: what cannot be read is no secret
    of this run."""
    env = os.environ if environ is None else environ
    found = [url_password(redis), url_password(sse), url_user_secret(sse),
             env.get(PASSWORD_ENV)]
    if password_file:
        with contextlib.suppress(ValueError):
            found.append(read_password_file(password_file))
    for h in headers:
        _, _, value = h.partition(":")
        found.append(value.strip())
        with contextlib.suppress(ValueError):
            found.append(resolve_header(h, env)[1])
    # A scheme word alone ("Bearer") is no secret, and replacing it would garble messages.
    secrets: list[str] = []
    for s in found:
        if not s:
            continue
        secrets.append(s)
        _, _, rest = s.partition(" ")
        if rest.strip():
            secrets.append(rest.strip())
    return secrets
