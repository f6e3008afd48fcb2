"""install_loop / run and the TLS context helpers."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from runtimes.netio import client_context, install_loop, run, server_context


def test_install_loop_choices_and_run() -> None:
    original = asyncio.get_event_loop_policy()
    try:
        assert install_loop("auto") == "uvloop"  # uvloop is installed in this venv

        async def loop_module() -> str:
            return type(asyncio.get_running_loop()).__module__

        assert run(loop_module(), loop="uvloop").startswith("uvloop")
        assert run(loop_module(), loop="asyncio").startswith("asyncio")
        assert install_loop("asyncio") == "asyncio"
        with pytest.raises(ValueError):
            install_loop("trio")
    finally:
        asyncio.set_event_loop_policy(original)


def test_tls_contexts(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_file = tmp_path / "chain.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = server_context(cert_file)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = client_context(ca_file=ca_file)
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    system = client_context()
    assert system.cert_store_stats()["x509_ca"] >= 0

    async def handshake() -> tuple[str | None, str | None]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
        port = listener.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=client_context(ca_file=ca_file, alpn=["h2", "http/1.1"]),
            server_hostname="localhost",
        )
        ssl_object = writer.get_extra_info("ssl_object")
        result = (ssl_object.selected_alpn_protocol(), ssl_object.version())
        writer.close()
        listener.close()
        return result

    alpn, version = asyncio.run(handshake())
    assert alpn == "h2"
    assert version in ("TLSv1.2", "TLSv1.3")
