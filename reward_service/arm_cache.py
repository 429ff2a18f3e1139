"""The arm cache: arm texts per (model id, config fingerprint, question), in memory and on disk.

Arms depend on the question only, so they are generated once and reused for every trajectory of
that question, across requests and across restarts: an LRU dict in front of a SQLite file (WAL
mode, safe for several worker processes on one volume). Values are lists of ``ArmText``.

Rows are keyed by a hash of (model, fingerprint, question). The question text itself is kept in a
second table, ``arm_questions`` (added beside ``arms``: a file written by an older version opens
unchanged, its rows just have no question text), so that a restarted service can list the questions
it holds arms for (``questions``) and find them inside wrapped prompts
(``reward_service.question_index``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from reward_service.regime_w.scorer import ArmText

_SCHEMA = """
CREATE TABLE IF NOT EXISTS arms (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL,
    payload TEXT NOT NULL
)
"""

# Added later, beside ``arms`` (no change to it): the question text of a key, for listing.
_QUESTIONS_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS arm_questions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    question TEXT NOT NULL
)
""",
    "CREATE INDEX IF NOT EXISTS arm_questions_by_config ON arm_questions (model, fingerprint)",
)


def cache_key(model_id: str, fingerprint: str, question: str) -> str:
    """Stable key of one question's arms under one model and one scorer config."""
    h = hashlib.sha256()
    for part in (model_id, fingerprint, question):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _chars(arms: tuple[ArmText, ...]) -> int:
    return sum(len(a.text) + len(a.arm) for a in arms)


class ArmCache:
    """Two-level cache. ``get`` returns ``(arm texts, layer)`` or ``None``; thread-safe."""

    def __init__(
        self, path: str | Path | None, memory_items: int = 8192, memory_bytes: int = 256 * 1024 * 1024
    ) -> None:
        """The memory layer keeps at most ``memory_items`` arm sets and ``memory_bytes`` characters of arm text."""
        self.path = Path(path) if path else None
        self.memory_items = memory_items
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, tuple[ArmText, ...]] = OrderedDict()
        self._memory_chars = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            for statement in _QUESTIONS_SCHEMA:
                self._db.execute(statement)
            self._db.commit()

    # -- memory layer
    def _remember(self, key: str, arms: tuple[ArmText, ...]) -> None:
        if self.memory_items <= 0:
            return
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_chars -= _chars(old)
        self._memory[key] = arms
        self._memory_chars += _chars(arms)
        while self._memory and (len(self._memory) > self.memory_items or self._memory_chars > self.memory_bytes):
            _, gone = self._memory.popitem(last=False)
            self._memory_chars -= _chars(gone)

    def get(self, key: str) -> tuple[tuple[ArmText, ...], str] | None:
        with self._lock:
            arms = self._memory.get(key)
            if arms is not None:
                self._memory.move_to_end(key)
                return arms, "memory"
            if self._db is None:
                return None
            row = self._db.execute("SELECT payload FROM arms WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            arms = tuple(ArmText(arm=a, text=t) for a, t in json.loads(row[0]))
            self._remember(key, arms)
            return arms, "sqlite"

    def put_many(self, entries: Iterable[tuple[str, str, str, Sequence[ArmText]]]) -> None:
        """Store ``(key, model_id, fingerprint, arm texts)`` entries in both layers."""
        rows = []
        with self._lock:
            now = time.time()
            for key, model_id, fingerprint, arms in entries:
                arms_t = tuple(arms)
                self._remember(key, arms_t)
                payload = json.dumps([[a.arm, a.text] for a in arms_t], ensure_ascii=False)
                rows.append((key, model_id, fingerprint, now, payload))
            if self._db is not None and rows:
                self._db.executemany(
                    "INSERT OR REPLACE INTO arms (key, model, fingerprint, created, payload) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.commit()

    def put_questions(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """Record ``(key, model_id, fingerprint, question)``: the question text of cached keys (SQLite only)."""
        rows = list(entries)
        with self._lock:
            if self._db is not None and rows:
                self._db.executemany(
                    "INSERT OR IGNORE INTO arm_questions (key, model, fingerprint, question) VALUES (?, ?, ?, ?)",
                    rows,
                )
                self._db.commit()

    def questions(self, model_id: str, fingerprint: str, limit: int | None = None) -> list[str]:
        """The questions whose arms the SQLite layer holds for this model and fingerprint (the question
        text is known for rows written since ``arm_questions`` exists); each checked against its key."""
        with self._lock:
            if self._db is None:
                return []
            rows = self._db.execute(
                "SELECT q.key, q.question FROM arm_questions AS q JOIN arms AS a ON a.key = q.key "
                "WHERE q.model = ? AND q.fingerprint = ? ORDER BY a.created DESC LIMIT ?",
                (model_id, fingerprint, -1 if limit is None else limit),
            ).fetchall()
        return [question for key, question in rows if cache_key(model_id, fingerprint, question) == key]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
