"""``PostgresArmStore``: the arm store in one PostgreSQL database, shared by N service replicas.

psycopg 3 with a ``psycopg_pool.ConnectionPool``. The service creates and versions its schema
(``arm_store_meta.version``; a database of a newer version is refused) under an advisory lock, so
replicas starting together do not race. Tables mirror the SQLite store's, with the same keys and
the same payload text:

- ``arms`` (key, model, fingerprint, created, payload);
- ``arm_questions`` (id BIGSERIAL = the ``questions_since`` cursor, key, model, fingerprint,
  question). Question rows are inserted under a transaction-scoped advisory lock taken before their
  ids are drawn, so ids become visible in commit order and a poller never skips a row that commits
  late;
- ``arm_claims`` (key, owner, expires): leases on keys being generated, expiry by the database's
  clock (replicas' clocks may differ).

Failures: every psycopg or pool error becomes ``StoreUnavailable`` (503 + ``Retry-After``) with a
fixed message; the log names the error class and SQLSTATE only (a database message may quote a row,
and rows hold questions). A pooled connection found broken (the server restarted) is retried once on
a fresh one, so a restart costs the requests made while the server is down, not the pool's stale
connections. After a connection failure the store answers ``StoreUnavailable`` at once for ``COOL_DOWN_S``
instead of waiting on a dead server from the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from reward_service.errors import StoreUnavailable
from reward_service.regime_w.scorer import ArmText
from reward_service.store.base import ArmRow, StoredRow, cache_key, decode_payload, encode_payload

log = logging.getLogger("reward_service.store")

#: the schema this code writes (``arm_store_meta.version``)
SCHEMA_VERSION = 1
#: advisory lock ids: schema creation, and question-row inserts (ids visible in commit order)
_SCHEMA_LOCK = 0x5245_5731
_QUESTIONS_LOCK = 0x5245_5732
#: tries of one call: a broken pooled connection is retried once, a deadlock / serialization failure twice
_ATTEMPTS = 3
#: seconds the store answers StoreUnavailable at once after a failure
COOL_DOWN_S = 0.5

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS arm_store_meta (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS arms (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    payload TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS arm_questions (
    id BIGSERIAL UNIQUE,
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    question TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS arm_questions_by_config ON arm_questions (model, fingerprint, id)",
    """CREATE TABLE IF NOT EXISTS arm_claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires TIMESTAMPTZ NOT NULL
)""",
)

T = TypeVar("T")


@dataclass(frozen=True)
class PostgresOptions:
    """Pool and timeout settings of the PostgreSQL store."""

    min_connections: int = 1
    max_connections: int = 8
    connect_timeout_s: float = 5.0  # one connection attempt
    open_timeout_s: float = 10.0  # the first connection at start (then StoreUnavailable: the load retries)
    acquire_timeout_s: float = 5.0  # waiting for a pooled connection
    password_file: Path | None = None  # the password, read from a file (a secret), never from the URL


def redact_url(url: str) -> str:
    """``url`` without its password (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _describe(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    return type(exc).__name__ + (f" [SQLSTATE {sqlstate}]" if sqlstate else "")


class PostgresArmStore:
    """The arm store in PostgreSQL (module docstring); thread-safe (a connection pool)."""

    name = "postgres"

    def __init__(self, url: str, options: PostgresOptions = PostgresOptions()) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        self.where = redact_url(url)
        self.options = options
        self._down_until = 0.0
        kwargs: dict[str, Any] = {"connect_timeout": max(1, round(options.connect_timeout_s)), "autocommit": True}
        if options.password_file is not None:
            try:
                kwargs["password"] = options.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"cannot read the arm store's password file {options.password_file}: {exc}") from exc
        self._pool = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=options.min_connections,
            max_size=options.max_connections,
            timeout=options.acquire_timeout_s,
            open=False,
            name="regime-w-arm-store",
        )
        try:
            self._pool.open(wait=True, timeout=options.open_timeout_s)
            self._call(self._create_schema)
        except Exception as exc:
            self._pool.close()
            if isinstance(exc, (StoreUnavailable, ValueError)):
                raise
            log.warning("arm store %s unreachable at start: %s", self.where, _describe(exc))
            raise StoreUnavailable(f"the arm store {self.where} cannot be reached") from None

    # -- plumbing
    def _call(self, fn: Callable[[Any], T]) -> T:
        """``fn(connection)`` on a pooled connection: once more on a fresh one when the first was
        broken (the server restarted since it was opened); any failure is ``StoreUnavailable``."""
        psycopg = self._psycopg
        if time.monotonic() < self._down_until:
            raise StoreUnavailable("the arm store is unavailable; retry shortly")
        for attempt in range(1, _ATTEMPTS + 1):
            broken = False
            try:
                with self._pool.connection() as conn:
                    try:
                        return fn(conn)
                    except psycopg.OperationalError:
                        broken = conn.broken or conn.closed
                        raise
            except psycopg.Error as exc:
                # class 40: a deadlock or serialization failure, rolled back whole: run it again
                rolled_back = (getattr(exc, "sqlstate", None) or "").startswith("40")
                if attempt < _ATTEMPTS and (rolled_back or (broken and attempt == 1)):
                    continue
                connection_lost = isinstance(exc, psycopg.OperationalError) and not rolled_back
                self._fail(exc, cool_down=connection_lost)
            except self._pool_errors() as exc:
                self._fail(exc, cool_down=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pool_errors(self) -> type[Exception]:
        from psycopg_pool import PoolTimeout

        return PoolTimeout

    def _fail(self, exc: BaseException, cool_down: bool) -> None:
        if cool_down:  # the server is unreachable: answer at once for a while instead of waiting on it
            self._down_until = time.monotonic() + COOL_DOWN_S
        log.warning("arm store %s failed: %s", self.where, _describe(exc))
        raise StoreUnavailable("the arm store is unavailable; retry shortly") from None

    def _create_schema(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT max(version) FROM arm_store_meta").fetchone()
            version = row[0] if row else None
            if version is None:
                conn.execute("INSERT INTO arm_store_meta (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise ValueError(
                    f"arm store {self.where} has schema version {version}, newer than this service's "
                    f"{SCHEMA_VERSION}: upgrade the service"
                )

    # -- arms
    def get(self, key: str) -> tuple[ArmText, ...] | None:
        row = self._call(lambda c: c.execute("SELECT payload FROM arms WHERE key = %s", (key,)).fetchone())
        return None if row is None else decode_payload(row[0])

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[ArmText, ...]]:
        if not keys:
            return {}
        rows = self._call(
            lambda c: c.execute("SELECT key, payload FROM arms WHERE key = ANY(%s)", (list(keys),)).fetchall()
        )
        return {key: decode_payload(payload) for key, payload in rows}

    def put(self, rows: Sequence[ArmRow]) -> None:
        if not rows:
            return
        now = time.time()
        rows = sorted(rows, key=lambda r: r.key)  # every transaction locks keys in one order: no deadlock
        arms = [
            (r.key, r.model, r.fingerprint, now if r.created is None else r.created, encode_payload(r.arms))
            for r in rows
        ]
        questions = [(r.key, r.model, r.fingerprint, r.question) for r in rows if r.question is not None]
        keys = [r.key for r in rows]

        def write(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO arms (key, model, fingerprint, created, payload) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET created = EXCLUDED.created, payload = EXCLUDED.payload",
                    arms,
                )
                if questions:
                    self._insert_questions(cur, questions)
                cur.execute("DELETE FROM arm_claims WHERE key = ANY(%s)", (keys,))

        self._call(write)

    @staticmethod
    def _insert_questions(cur: Any, questions: Sequence[tuple[str, str, str, str | None]]) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_QUESTIONS_LOCK,))
        cur.executemany(
            "INSERT INTO arm_questions (key, model, fingerprint, question) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (key) DO NOTHING",
            questions,
        )

    # -- questions
    def put_questions(self, entries: Sequence[tuple[str, str, str, str]]) -> None:
        if not entries:
            return

        def write(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                self._insert_questions(cur, list(entries))

        self._call(write)

    def questions(self, model_id: str, fingerprint: str, limit: int | None = None) -> list[str]:
        rows = self._call(
            lambda c: c.execute(
                "SELECT q.key, q.question FROM arm_questions AS q JOIN arms AS a ON a.key = q.key "
                "WHERE q.model = %s AND q.fingerprint = %s ORDER BY a.created DESC LIMIT %s",
                (model_id, fingerprint, limit),
            ).fetchall()
        )
        return [q for key, q in rows if cache_key(model_id, fingerprint, q) == key]

    def question_cursor(self) -> int:
        row = self._call(lambda c: c.execute("SELECT COALESCE(max(id), 0) FROM arm_questions").fetchone())
        return int(row[0])

    def questions_since(self, model_id: str, fingerprint: str, cursor: int) -> tuple[list[str], int]:
        def read(conn: Any) -> tuple[list[tuple[str, str]], int]:
            with conn.transaction():  # one snapshot: the top id and the rows under it agree
                top = int(conn.execute("SELECT COALESCE(max(id), 0) FROM arm_questions").fetchone()[0])
                rows = conn.execute(
                    "SELECT key, question FROM arm_questions WHERE id > %s AND id <= %s "
                    "AND model = %s AND fingerprint = %s",
                    (cursor, top, model_id, fingerprint),
                ).fetchall()
            return rows, top

        rows, top = self._call(read)
        return [q for key, q in rows if cache_key(model_id, fingerprint, q) == key], max(top, cursor)

    # -- claims
    def claim(self, keys: Sequence[str], owner: str, lease_s: float) -> list[str]:
        if not keys:
            return []
        unique = sorted(set(keys))  # every transaction locks keys in one order: no deadlock

        def take(conn: Any) -> list[str]:
            with conn.transaction():
                got = conn.execute(
                    "INSERT INTO arm_claims (key, owner, expires) "
                    "SELECT k, %(owner)s, clock_timestamp() + make_interval(secs => %(lease)s) "
                    "FROM unnest(%(keys)s::text[]) AS k WHERE NOT EXISTS (SELECT 1 FROM arms WHERE arms.key = k) ORDER BY k "
                    "ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires "
                    "WHERE arm_claims.expires < clock_timestamp() OR arm_claims.owner = EXCLUDED.owner "
                    "RETURNING key",
                    {"owner": owner, "lease": float(lease_s), "keys": unique},
                ).fetchall()
                mine = [r[0] for r in got]
                if not mine:
                    return []
                # arms written by a claim holder that committed after this statement's snapshot began
                # (READ COMMITTED: a new statement sees them): not ours to generate after all
                done = {r[0] for r in conn.execute("SELECT key FROM arms WHERE key = ANY(%s)", (mine,)).fetchall()}
                if done:
                    conn.execute("DELETE FROM arm_claims WHERE key = ANY(%s) AND owner = %s", (sorted(done), owner))
                return [k for k in mine if k not in done]

        return self._call(take)

    def heartbeat(self, keys: Sequence[str], owner: str, lease_s: float) -> None:
        if not keys:
            return
        self._call(
            lambda c: c.execute(
                "UPDATE arm_claims SET expires = clock_timestamp() + make_interval(secs => %s) "
                "WHERE key = ANY(%s) AND owner = %s",
                (float(lease_s), sorted(keys), owner),
            )
        )

    def release(self, keys: Sequence[str], owner: str) -> None:
        if not keys:
            return
        self._call(
            lambda c: c.execute("DELETE FROM arm_claims WHERE key = ANY(%s) AND owner = %s", (list(keys), owner))
        )

    # -- whole-store reads (regime-w-cache)
    def rows(self, batch: int = 500) -> Iterator[StoredRow]:
        def page(after: str) -> Callable[[Any], list[Any]]:
            return lambda c: c.execute(
                "SELECT a.key, a.model, a.fingerprint, a.created, a.payload, q.question FROM arms AS a "
                "LEFT JOIN arm_questions AS q ON q.key = a.key WHERE a.key > %s ORDER BY a.key LIMIT %s",
                (after, batch),
            ).fetchall()

        last = ""
        while True:
            chunk = self._call(page(last))
            if not chunk:
                return
            for key, model, fingerprint, created, payload, question in chunk:
                yield StoredRow(key, model, fingerprint, float(created), payload, question)
            last = chunk[-1][0]

    def orphan_questions(self) -> int:
        row = self._call(
            lambda c: c.execute(
                "SELECT count(*) FROM arm_questions AS q WHERE NOT EXISTS (SELECT 1 FROM arms WHERE key = q.key)"
            ).fetchone()
        )
        return int(row[0])

    def close(self) -> None:
        self._pool.close()
