"""``SqliteArmStore``: the arm store in one SQLite file (WAL), the embedded default.

Tables: ``arms`` (key, model, fingerprint, created, payload), ``arm_questions`` (key, model,
fingerprint, question; its ``rowid`` is the cursor of ``questions_since``: rows are never deleted,
so rowids only grow) and ``arm_claims`` (key, owner, expires as Unix seconds). A file written by an
older version opens unchanged: the missing tables are created beside the old ones, and
``PRAGMA user_version`` records the schema version (a file of a newer version is refused).

Claims are a table, not a no-op: several uvicorn workers (``--workers``) or several processes on
one volume share the file, and a claim makes them generate a question once between them, as
PostgreSQL does for a fleet. Expiry is the writer's clock (one host).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from reward_service.errors import StoreUnavailable
from reward_service.regime_w.scorer import ArmText
from reward_service.store.base import ArmRow, StoredRow, cache_key, decode_payload, encode_payload

#: the schema this code writes (``PRAGMA user_version``); 0 = a file of before versioning
SCHEMA_VERSION = 2

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS arms (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL,
    payload TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS arm_questions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    question TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS arm_questions_by_config ON arm_questions (model, fingerprint)",
    """CREATE TABLE IF NOT EXISTS arm_claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
)""",
)


class SqliteArmStore:
    """The arm store in one SQLite file; thread-safe (one connection behind a lock)."""

    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = f"sqlite:///{self.path}"
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: every write below opens its own BEGIN IMMEDIATE transaction
        db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0, isolation_level=None)
        self._db: sqlite3.Connection | None = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        with self._tx():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"arm cache {self.path} has schema version {version}, newer than this service's "
                    f"{SCHEMA_VERSION}: upgrade the service"
                )
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn())

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("the arm store is closed")
        return self._db

    # -- arms
    def get(self, key: str) -> tuple[ArmText, ...] | None:
        with self._lock:
            row = self._conn().execute("SELECT payload FROM arms WHERE key = ?", (key,)).fetchone()
        return None if row is None else decode_payload(row[0])

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[ArmText, ...]]:
        found: dict[str, tuple[ArmText, ...]] = {}
        with self._lock:
            db = self._conn()
            for lo in range(0, len(keys), 500):
                chunk = list(keys[lo : lo + 500])
                marks = ",".join("?" * len(chunk))
                for key, payload in db.execute(f"SELECT key, payload FROM arms WHERE key IN ({marks})", chunk):
                    found[key] = decode_payload(payload)
        return found

    def put(self, rows: Sequence[ArmRow]) -> None:
        if not rows:
            return
        now = time.time()
        arms = [
            (r.key, r.model, r.fingerprint, now if r.created is None else r.created, encode_payload(r.arms))
            for r in rows
        ]
        questions = [(r.key, r.model, r.fingerprint, r.question) for r in rows if r.question is not None]
        with self._lock, self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO arms (key, model, fingerprint, created, payload) VALUES (?, ?, ?, ?, ?)", arms
            )
            db.executemany(
                "INSERT OR IGNORE INTO arm_questions (key, model, fingerprint, question) VALUES (?, ?, ?, ?)",
                questions,
            )
            db.executemany("DELETE FROM arm_claims WHERE key = ?", [(r.key,) for r in rows])

    # -- questions
    def put_questions(self, entries: Sequence[tuple[str, str, str, str]]) -> None:
        if not entries:
            return
        with self._lock, self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO arm_questions (key, model, fingerprint, question) VALUES (?, ?, ?, ?)",
                list(entries),
            )

    def questions(self, model_id: str, fingerprint: str, limit: int | None = None) -> list[str]:
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT q.key, q.question FROM arm_questions AS q JOIN arms AS a ON a.key = q.key "
                    "WHERE q.model = ? AND q.fingerprint = ? ORDER BY a.created DESC LIMIT ?",
                    (model_id, fingerprint, -1 if limit is None else limit),
                )
                .fetchall()
            )
        return [q for key, q in rows if cache_key(model_id, fingerprint, q) == key]

    def question_cursor(self) -> int:
        with self._lock:
            row = self._conn().execute("SELECT COALESCE(MAX(rowid), 0) FROM arm_questions").fetchone()
        return int(row[0])

    def questions_since(self, model_id: str, fingerprint: str, cursor: int) -> tuple[list[str], int]:
        with self._lock:
            db = self._conn()
            top = int(db.execute("SELECT COALESCE(MAX(rowid), 0) FROM arm_questions").fetchone()[0])
            rows = db.execute(
                "SELECT key, question FROM arm_questions WHERE rowid > ? AND rowid <= ? AND model = ? AND fingerprint = ?",
                (cursor, top, model_id, fingerprint),
            ).fetchall()
        return [q for key, q in rows if cache_key(model_id, fingerprint, q) == key], max(top, cursor)

    # -- claims
    def claim(self, keys: Sequence[str], owner: str, lease_s: float) -> list[str]:
        if not keys:
            return []
        now = time.time()
        with self._lock, self._tx() as db:
            mine = []
            for key in dict.fromkeys(keys):
                if db.execute("SELECT 1 FROM arms WHERE key = ?", (key,)).fetchone() is not None:
                    continue
                db.execute(
                    "INSERT INTO arm_claims (key, owner, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                    "SET owner = excluded.owner, expires = excluded.expires "
                    "WHERE arm_claims.expires < ? OR arm_claims.owner = excluded.owner",
                    (key, owner, now + lease_s, now),
                )
                row = db.execute("SELECT owner FROM arm_claims WHERE key = ?", (key,)).fetchone()
                if row is not None and row[0] == owner:
                    mine.append(key)
        return mine

    def heartbeat(self, keys: Sequence[str], owner: str, lease_s: float) -> None:
        if not keys:
            return
        expires = time.time() + lease_s
        with self._lock, self._tx() as db:
            db.executemany(
                "UPDATE arm_claims SET expires = ? WHERE key = ? AND owner = ?", [(expires, k, owner) for k in keys]
            )

    def release(self, keys: Sequence[str], owner: str) -> None:
        if not keys:
            return
        with self._lock, self._tx() as db:
            db.executemany("DELETE FROM arm_claims WHERE key = ? AND owner = ?", [(k, owner) for k in keys])

    # -- whole-store reads (regime-w-cache)
    def rows(self, batch: int = 500) -> Iterator[StoredRow]:
        last = ""
        while True:
            with self._lock:
                chunk = (
                    self._conn()
                    .execute(
                        "SELECT a.key, a.model, a.fingerprint, a.created, a.payload, q.question FROM arms AS a "
                        "LEFT JOIN arm_questions AS q ON q.key = a.key WHERE a.key > ? ORDER BY a.key LIMIT ?",
                        (last, batch),
                    )
                    .fetchall()
                )
            if not chunk:
                return
            for key, model, fingerprint, created, payload, question in chunk:
                yield StoredRow(key, model, fingerprint, float(created), payload, question)
            last = chunk[-1][0]

    def orphan_questions(self) -> int:
        with self._lock:
            row = (
                self._conn()
                .execute(
                    "SELECT COUNT(*) FROM arm_questions AS q WHERE NOT EXISTS (SELECT 1 FROM arms WHERE key = q.key)"
                )
                .fetchone()
            )
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
