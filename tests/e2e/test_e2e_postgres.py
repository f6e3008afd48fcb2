"""The real gateway on the PostgreSQL store (``tokios-gateway serve --store postgresql://...``)
with a connector and the official SDKs: requests served, keys and connector tokens revoked from
the CLI biting within about a second, and a database outage answered with a 503 in the
client's format, healed once the database is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import psycopg
import pytest

from tests.e2e.stack import Stack, admin, wait_for
from tests.services import PostgresServer
from tests.store_backends import postgres_database

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def pg_stack(postgres_server: PostgresServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with postgres_database(postgres_server) as url:
        built = Stack(workdir=tmp_path_factory.mktemp("pg-stack"), backend="llamacpp",
                      store_url=url)
        with built.running():
            yield built


def _refused_within(check: object, seconds: float) -> float:
    """Seconds until ``check()`` raises openai.AuthenticationError (fails after ``seconds``)."""
    assert callable(check)
    started = time.monotonic()
    while True:
        try:
            check()
        except openai.AuthenticationError:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, "still accepted"
        time.sleep(0.05)


def test_requests_and_a_key_revoked_from_the_cli_on_postgresql(pg_stack: Stack) -> None:
    assert pg_stack.store_url is not None
    database = pg_stack.store_url.rsplit("/", 1)[1]
    log = pg_stack.gateway.log() if pg_stack.gateway else ""
    assert "store: postgresql://tokios@127.0.0.1:" in log and f"/{database} (schema " in log
    assert not (pg_stack.data / "tokios.db").exists()  # nothing went to SQLite
    with pg_stack.openai() as client:
        reply = client.chat.completions.create(model="coder", max_tokens=8, messages=HELLO)
        assert reply.choices[0].message.content
    with pg_stack.anthropic() as client:
        message = client.messages.create(model="coder", max_tokens=8, messages=HELLO)
        assert message.content

    fresh = admin(pg_stack.store, "key", "add", "acme", "--name", "pg-e2e")
    with pg_stack.openai(api_key=fresh["key"]) as client:
        def ask() -> None:
            client.chat.completions.create(model="coder", max_tokens=4, messages=HELLO)

        ask()  # a key made by the CLI works at once (not cached as unknown)
        admin(pg_stack.store, "key", "revoke", fresh["id"])
        assert _refused_within(ask, 2.5) < 2.5  # the gateway's cache lives 1 s


def _block_connections(url: str, blocked: bool) -> None:
    """Make ``url``'s database refuse new connections (and end the open ones), or not."""
    database = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(not blocked).lower()}')
        if blocked:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s", (database,))


def test_a_database_outage_is_a_503_in_format_and_heals(pg_stack: Stack) -> None:
    assert pg_stack.store_url is not None
    spare = admin(pg_stack.store, "key", "add", "acme", "--name", "outage")["key"]  # not cached
    _block_connections(pg_stack.store_url, True)
    try:
        with pg_stack.openai(api_key=spare) as client, \
                pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="coder", max_tokens=4, messages=HELLO)
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"] == "1"
        assert "cannot reach its key store" in caught.value.message
        with pg_stack.anthropic(api_key=spare) as client, \
                pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.create(model="coder", max_tokens=4, messages=HELLO)
        assert refused.value.status_code == 503
        assert refused.value.body["type"] == "error"  # type: ignore[index]
        assert "key store" in refused.value.body["error"]["message"]  # type: ignore[index]
    finally:
        _block_connections(pg_stack.store_url, False)
    with pg_stack.openai(api_key=spare) as client:  # the pool replaced its dead connections
        reply = client.chat.completions.create(model="coder", max_tokens=4, messages=HELLO)
        assert reply.choices[0].message.content
    assert pg_stack.gateway is not None and pg_stack.gateway.alive()
    assert "handler failed" not in pg_stack.gateway.log()


def test_a_connector_token_revoked_from_the_cli_closes_its_tunnel(pg_stack: Stack) -> None:
    """Last: it takes the module's connector down."""
    assert pg_stack.served()
    admin(pg_stack.store, "connector-token", "revoke", pg_stack.token_id)
    started = time.monotonic()
    wait_for(lambda: not pg_stack.served(), 5, "the revoked connector's tunnel to close")
    assert time.monotonic() - started < 3.5  # checked every second
