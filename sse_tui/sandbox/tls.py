"""A certificate for the sandbox's HTTPS (`--demo --tls`), made at start with `openssl`.

The sandbox serves 127.0.0.1 only, so one self-signed certificate for 127.0.0.1 and
localhost, marked as its own CA, is all it needs: the client trusts it with `--cacert`.
`openssl` is on nearly every machine (Debian's ca-certificates depends on it), which keeps
the package free of a crypto dependency for a demo feature.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

_OPENSSL_TIMEOUT_S = 30.0


class SandboxTLSError(RuntimeError):
    """The certificate could not be made; the message says what to install."""


def make_self_signed(directory: str | Path) -> tuple[Path, Path]:
    """(certificate, private key) in `directory`, valid for 127.0.0.1 and localhost for two
    days. The certificate is also the CA file to give the client (`--cacert`)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SandboxTLSError(
            "--tls needs the openssl command to make the sandbox's certificate: install "
            "openssl (e.g. apt-get install openssl)")
    d = Path(directory)
    cert, key = d / "sandbox-cert.pem", d / "sandbox-key.pem"
    args = [
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", "/CN=sse-tui sandbox",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
    ]  # fmt: skip
    try:
        done = subprocess.run(args, capture_output=True, timeout=_OPENSSL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxTLSError(f"openssl could not make the sandbox's certificate: {e}") from None
    if done.returncode != 0 or not cert.is_file():
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SandboxTLSError(
            f"openssl could not make the sandbox's certificate (OpenSSL 1.1.1 or later is "
            f"needed): {tail[0]}")
    return cert, key
