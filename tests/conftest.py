"""Shared test configuration: makes ``tests.upstreams`` importable from every test module."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- real PostgreSQL and Redis servers (tests/services.py), started once per session ------------

import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.services import PostgresServer, RedisServer, ServiceUnavailable  # noqa: E402


def _unavailable(exc: ServiceUnavailable) -> None:
    """Skip, unless TOKIOS_REQUIRE_SERVICES is set (CI sets it): then a missing server fails."""
    if os.environ.get("TOKIOS_REQUIRE_SERVICES"):
        pytest.fail(f"{exc} (TOKIOS_REQUIRE_SERVICES is set)")
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except ServiceUnavailable as exc:
        _unavailable(exc)
    with server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except ServiceUnavailable as exc:
        _unavailable(exc)
    with server:
        yield server
