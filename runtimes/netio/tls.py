"""TLS contexts: the gateway's server context (ALPN h2 + http/1.1) and the connector's client.

server_context("cert.pem", "key.pem")            # TLS >= 1.2, ALPN ["h2", "http/1.1"]
client_context(ca_file=None)                     # system roots, hostname checked
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ALPN_PROTOCOLS", "client_context", "server_context"]

ALPN_PROTOCOLS = ("h2", "http/1.1")

#: TLS 1.2 suites acceptable to HTTP/2 (RFC 9113 appendix A blocks the rest); TLS 1.3
#: suites are not affected by set_ciphers.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(
    certfile: str | Path,
    keyfile: str | Path | None = None,
    *,
    password: str | None = None,
    alpn: Sequence[str] = ALPN_PROTOCOLS,
) -> ssl.SSLContext:
    """A server context with the certificate chain loaded, TLS >= 1.2 and ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(_TLS12_CIPHERS)
    context.load_cert_chain(
        str(certfile), str(keyfile) if keyfile is not None else None, password=password
    )
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def client_context(
    *,
    ca_file: str | Path | None = None,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """A client context: system roots (or `ca_file` only), hostname checking, TLS >= 1.2."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context
