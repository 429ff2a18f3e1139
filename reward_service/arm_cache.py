"""The arm cache: arm texts per (model id, config fingerprint, question), in memory and in a store.

Arms depend on the question only, so they are generated once and reused for every trajectory of
that question, across requests, restarts and replicas: an LRU dict in front of a persistent arm
store (``reward_service.store``: a SQLite file on one host, or PostgreSQL shared by N replicas).
Values are tuples of ``ArmText``. The LRU is the same whatever the store; with no store
(``CACHE_PATH=none``) it is the only layer.

The question text of each key is stored beside it (``arm_questions``), written in the same
transaction as the arms (``put_arms``), so that a restarted service, or another replica, can list
the questions it holds arms for and find them inside wrapped prompts
(``reward_service.question_index``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from reward_service.regime_w.scorer import ArmText
from reward_service.store import ArmRow, ArmStore, SqliteArmStore
from reward_service.store.base import cache_key

__all__ = ["ArmCache", "cache_key"]


def _chars(arms: tuple[ArmText, ...]) -> int:
    return sum(len(a.text) + len(a.arm) for a in arms)


class ArmCache:
    """Two-level cache. ``get`` returns ``(arm texts, layer)`` or ``None``; thread-safe.

    ``store``: an ``ArmStore``, a SQLite file path (today's cache file), or None (memory only)."""

    def __init__(
        self,
        store: ArmStore | str | Path | None,
        memory_items: int = 8192,
        memory_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        """The memory layer keeps at most ``memory_items`` arm sets and ``memory_bytes`` characters of arm text."""
        if isinstance(store, (str, Path)):
            store = SqliteArmStore(store)
        self.store: ArmStore | None = store
        self.memory_items = memory_items
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[str, tuple[ArmText, ...]] = OrderedDict()
        self._memory_chars = 0
        self._lock = threading.Lock()  # the memory layer only: store I/O runs outside it

    @property
    def path(self) -> Path | None:
        """The SQLite file, when the store is one."""
        return self.store.path if isinstance(self.store, SqliteArmStore) else None

    # -- memory layer
    def _remember(self, key: str, arms: tuple[ArmText, ...]) -> None:
        if self.memory_items <= 0:
            return
        with self._lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._memory_chars -= _chars(old)
            self._memory[key] = arms
            self._memory_chars += _chars(arms)
            while self._memory and (len(self._memory) > self.memory_items or self._memory_chars > self.memory_bytes):
                _, gone = self._memory.popitem(last=False)
                self._memory_chars -= _chars(gone)

    def _recall(self, key: str) -> tuple[ArmText, ...] | None:
        with self._lock:
            arms = self._memory.get(key)
            if arms is not None:
                self._memory.move_to_end(key)
            return arms

    def get(self, key: str) -> tuple[tuple[ArmText, ...], str] | None:
        arms = self._recall(key)
        if arms is not None:
            return arms, "memory"
        if self.store is None:
            return None
        stored = self.store.get(key)
        if stored is None:
            return None
        self._remember(key, stored)
        return stored, self.store.name

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[tuple[ArmText, ...], str]]:
        """``get`` of several keys, the store read once for all those not in memory."""
        found: dict[str, tuple[tuple[ArmText, ...], str]] = {}
        rest = []
        for key in keys:
            arms = self._recall(key)
            if arms is not None:
                found[key] = (arms, "memory")
            else:
                rest.append(key)
        if rest and self.store is not None:
            for key, stored in self.store.get_many(rest).items():
                self._remember(key, stored)
                found[key] = (stored, self.store.name)
        return found

    def put_arms(self, rows: Sequence[ArmRow]) -> None:
        """Store arm sets with their questions: the store writes both in one transaction, then the
        memory layer keeps them (a failed write leaves nothing behind in either)."""
        if self.store is not None and rows:
            self.store.put(rows)
        for row in rows:
            self._remember(row.key, tuple(row.arms))

    def put_many(self, entries: Iterable[tuple[str, str, str, Sequence[ArmText]]]) -> None:
        """Store ``(key, model_id, fingerprint, arm texts)`` entries, without their questions."""
        self.put_arms([ArmRow(key, model, fingerprint, tuple(arms)) for key, model, fingerprint, arms in entries])

    # -- questions
    def put_questions(self, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """Record ``(key, model_id, fingerprint, question)``: the question text of cached keys."""
        rows = list(entries)
        if self.store is not None and rows:
            self.store.put_questions(rows)

    def questions(self, model_id: str, fingerprint: str, limit: int | None = None) -> list[str]:
        """The questions whose arms the store holds for this model and fingerprint (the question text is
        known for rows written since ``arm_questions`` exists); each checked against its key."""
        return [] if self.store is None else self.store.questions(model_id, fingerprint, limit)

    def question_cursor(self) -> int:
        """Where ``questions_since`` starts to report questions written from now on."""
        return 0 if self.store is None else self.store.question_cursor()

    def questions_since(self, model_id: str, fingerprint: str, cursor: int) -> tuple[list[str], int]:
        """Questions written to the store after ``cursor`` (by any process), and the next cursor."""
        return ([], cursor) if self.store is None else self.store.questions_since(model_id, fingerprint, cursor)

    # -- claims (a fleet generates each question once; memory only: every key is this process's)
    def claim(self, keys: Sequence[str], owner: str, lease_s: float) -> list[str]:
        return list(dict.fromkeys(keys)) if self.store is None else self.store.claim(keys, owner, lease_s)

    def heartbeat(self, keys: Sequence[str], owner: str, lease_s: float) -> None:
        if self.store is not None:
            self.store.heartbeat(keys, owner, lease_s)

    def release(self, keys: Sequence[str], owner: str) -> None:
        if self.store is not None:
            self.store.release(keys, owner)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
