"""TLS for https:// streams and rediss://: one client context per set of options, and the
one line that says why a handshake failed and what to do about it."""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sse_tui.settings import Settings

_CACERT_HINT = ("pass --cacert FILE with the CA that signed the server's certificate, "
                "or --insecure")


class TLSSetupError(Exception):
    """A --cacert / --cert / --key file that does not load; the message is one line."""


@dataclass(frozen=True)
class TLSOptions:
    """--cacert, --cert, --key and --insecure: the same for every TLS connection of a run."""

    cacert: str = ""
    cert: str = ""
    key: str = ""
    insecure: bool = False

    @classmethod
    def of(cls, s: Settings) -> TLSOptions:
        return cls(s.cacert, s.cert, s.key, s.insecure)

    def redis_kwargs(self) -> dict[str, Any]:
        """redis-py's connection arguments for a rediss:// URL."""
        return {
            "ssl_ca_certs": self.cacert or None,
            "ssl_certfile": self.cert or None,
            "ssl_keyfile": self.key or None,
            "ssl_cert_reqs": "none" if self.insecure else "required",
            "ssl_check_hostname": not self.insecure,
        }


@functools.cache
def client_context(options: TLSOptions) -> ssl.SSLContext:
    """The client context for `options`, made once: loading a CA store costs milliseconds and
    one context serves every stream. Raises TLSSetupError naming the file that is wrong."""
    try:
        # --cacert replaces the system's CAs, as curl's does: a private CA is trusted alone.
        ctx = ssl.create_default_context(cafile=options.cacert or None)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise TLSSetupError(f"cannot load --cacert {options.cacert}: {_ssl_reason(e)}; "
                            "give a PEM file of CA certificates") from None
    if options.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if options.cert:
        try:
            ctx.load_cert_chain(options.cert, options.key or None)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise TLSSetupError(
                f"cannot load --cert {options.cert}"
                + (f" with --key {options.key}" if options.key else "")
                + f": {_ssl_reason(e)}; give a PEM certificate and its private key "
                "(in the same file, or with --key FILE)") from None
    return ctx


def _ssl_reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError) and e.reason:
        return e.reason.replace("_", " ").lower()
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


_VERIFY_TEXT = re.compile(r"certificate verify failed: (?P<why>[^()\]\n]+?)\s*(?:\(_ssl|$)")
_ALERT_TEXT = re.compile(r"\b(?:sslv3|tlsv1[0-9]?) alert (?P<alert>[a-z ]+)", re.IGNORECASE)


def describe_tls_error(exc: BaseException) -> str | None:
    """One line naming the certificate problem and what to do, or None when `exc` (or what
    it was raised from) is no TLS failure. Library wrappers (httpx, redis-py) are looked
    through, by their cause chain and else by their text."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return verify_failure(e.verify_message or str(e.reason or e))
        if isinstance(e, ssl.SSLError):
            return _handshake_failure(str(e))
        e = e.__cause__ or e.__context__
    text = str(exc)
    m = _VERIFY_TEXT.search(text)
    if m:
        return verify_failure(m["why"])
    if "SSL" in text or "TLS" in text or _ALERT_TEXT.search(text):
        return _handshake_failure(text)
    return None


def verify_failure(why: str) -> str:
    why = why.strip().rstrip(".")
    low = why.lower()
    if "hostname mismatch" in low or "ip address mismatch" in low:
        hint = "connect by a name the certificate lists, or pass --insecure"
    elif "expired" in low or "not yet valid" in low:
        hint = "the server's certificate is outside its validity dates; renew it, or --insecure"
    else:
        hint = _CACERT_HINT
    return f"certificate verify failed: {why} — {hint}"


def _handshake_failure(text: str) -> str:
    alert = _ALERT_TEXT.search(text)
    if alert and "certificate required" in alert["alert"].lower():
        return ("TLS handshake failed: the server requires a client certificate — "
                "pass --cert FILE --key FILE")
    if alert and ("bad certificate" in alert["alert"].lower()
                  or "unknown ca" in alert["alert"].lower()):
        return (f"TLS handshake failed: the server rejected our client certificate "
                f"({alert['alert'].strip()}) — check --cert/--key against the server's CA")
    if "wrong version number" in text.lower() or "record layer failure" in text.lower():
        return "TLS handshake failed: the server does not speak TLS on this port — use http:// or redis://"
    reason = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text).strip()
    return f"TLS handshake failed: {reason}"
