"""A local certificate authority for the quick start's gateway (made with trustme, kept).

:func:`ensure_local_tls` creates, once, ``HOME/ca.pem`` (the CA certificate users trust),
``HOME/tls/ca-key.pem`` (its key, mode 0600) and a server certificate for ``127.0.0.1``,
``::1`` and ``localhost`` in ``HOME/tls/``; later runs reuse them, so clients configured with
the CA keep working. :func:`client_context` gives an SSL context that trusts the CA.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalTLS:
    """Paths of the CA certificate and the gateway's certificate chain and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def ensure_local_tls(home: Path) -> LocalTLS:
    """The CA and server certificate under ``home``, created on the first call."""
    tls_dir = home / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = LocalTLS(ca_file=home / "ca.pem", cert_file=tls_dir / "cert.pem",
                     key_file=tls_dir / "key.pem")
    ca_key = tls_dir / "ca-key.pem"
    if all(p.exists() for p in (paths.ca_file, ca_key, paths.cert_file, paths.key_file)):
        return paths
    if paths.ca_file.exists() and ca_key.exists():
        ca = trustme.CA.from_pem(paths.ca_file.read_bytes(), ca_key.read_bytes())
    else:
        ca = trustme.CA(organization_name="Tokios quick start (local)")
        _write_private(ca_key, ca.private_key_pem.bytes())
        paths.ca_file.write_bytes(ca.cert_pem.bytes())
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert(*SERVER_NAMES, not_before=now - datetime.timedelta(days=1),
                         not_after=now + datetime.timedelta(days=825))
    _write_private(paths.key_file, leaf.private_key_pem.bytes())
    paths.cert_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    return paths


def client_context(ca_file: Path) -> ssl.SSLContext:
    """An SSL context for clients that trusts ``ca_file`` (and only it)."""
    return ssl.create_default_context(cafile=str(ca_file))
