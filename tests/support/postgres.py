"""The real PostgreSQL of the test machine (127.0.0.1:5432, trust auth): a throwaway database per test.

``fresh_database()`` creates ``regime_w_test_<random>`` and drops it afterwards (its connections
terminated first), so tests running side by side (``-n 2``) never share tables. Without a server
listening, tests that need one are skipped with the reason, unless ``REGIME_W_REQUIRE_POSTGRES=1``
(``.ci/run`` sets it after starting the server), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_HOST = os.environ.get("REGIME_W_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("REGIME_W_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("REGIME_W_TEST_PG_USER", "postgres")
ADMIN_DB = os.environ.get("REGIME_W_TEST_PG_DB", "test")


def url(database: str, host: str = PG_HOST, port: int = PG_PORT) -> str:
    return f"postgresql://{PG_USER}@{host}:{port}/{database}"


def listening(host: str = PG_HOST, port: int = PG_PORT) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def require_postgres(host: str = PG_HOST, port: int = PG_PORT) -> None:
    if listening(host, port):
        return
    why = f"no PostgreSQL listening on {host}:{port}"
    if os.environ.get("REGIME_W_REQUIRE_POSTGRES") == "1":
        pytest.fail(why)
    pytest.skip(why)


def _admin(host: str, port: int):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url(ADMIN_DB, host, port), autocommit=True, connect_timeout=10)


def create_database(host: str = PG_HOST, port: int = PG_PORT) -> str:
    name = f"regime_w_test_{uuid.uuid4().hex[:12]}"
    with _admin(host, port) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str, host: str = PG_HOST, port: int = PG_PORT) -> None:
    with _admin(host, port) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(host: str = PG_HOST, port: int = PG_PORT) -> Iterator[str]:
    """The URL of a new, empty database, dropped on exit."""
    require_postgres(host, port)
    name = create_database(host, port)
    try:
        yield url(name, host, port)
    finally:
        drop_database(name, host, port)
