"""The arm store's contract: what every persistent arm store does, and the row it stores.

An arm store keeps the arm texts of questions keyed by ``cache_key(model, fingerprint, question)``,
the question text beside its key (so a restarted service, or another replica, can find a known
question inside a wrapped prompt), and claims on keys being generated (so a fleet of replicas
generates each question's arms once). Two implementations: ``SqliteArmStore`` (one file, the
default, one host) and ``PostgresArmStore`` (one database shared by N replicas). The in-memory LRU
in front of either is ``reward_service.arm_cache.ArmCache``.

Rules both follow (``tests/test_arm_store.py`` runs one contract test over both):

- ``put`` writes the arms rows and their question rows in ONE transaction, and drops the claims on
  those keys in it: a crash leaves either both or neither.
- Question rows carry a monotonic cursor: ``questions_since(model, fingerprint, cursor)`` returns
  the questions written after ``cursor`` (by any process) and the next cursor; a running service
  polls it to learn questions that the precompute CLI or another replica wrote.
- ``claim(keys, owner, lease_s)`` returns the keys this owner must generate: those with no arms and
  no live claim of another owner (an expired claim is taken over). ``heartbeat`` extends the
  owner's claims, ``release`` drops them.
- Every failure to reach the database is ``StoreUnavailable`` (a 503 with ``Retry-After``) whose
  message holds no database text (a database error may quote a row, and a row may hold a question).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reward_service.regime_w.scorer import ArmText

__all__ = ["ArmRow", "ArmStore", "StoredRow", "cache_key", "decode_payload", "encode_payload"]


def cache_key(model_id: str, fingerprint: str, question: str) -> str:
    """Stable key of one question's arms under one model and one scorer config."""
    h = hashlib.sha256()
    for part in (model_id, fingerprint, question):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def encode_payload(arms: Sequence[ArmText]) -> str:
    """The stored text of an arm set: ``[[arm, text], ...]`` as JSON (the same in both stores)."""
    return json.dumps([[a.arm, a.text] for a in arms], ensure_ascii=False)


def decode_payload(payload: str) -> tuple[ArmText, ...]:
    """The arm set of a stored payload; ``ValueError`` when it is not ``[[str, str], ...]``."""
    data = json.loads(payload)
    if not isinstance(data, list) or not data:
        raise ValueError("payload is not a non-empty list")
    arms = []
    for item in data:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise ValueError("payload entry is not an [arm, text] pair of strings")
        arms.append(ArmText(arm=item[0], text=item[1]))
    return tuple(arms)


@dataclass(frozen=True)
class ArmRow:
    """One question's arms to store; ``question`` None only for rows copied from a file that never had
    the question text (written before ``arm_questions`` existed). ``created`` None: now."""

    key: str
    model: str
    fingerprint: str
    arms: tuple[ArmText, ...]
    question: str | None = None
    created: float | None = None


@dataclass(frozen=True)
class StoredRow:
    """A row as stored, for copying and checking a store (``regime-w-cache``): the payload unparsed."""

    key: str
    model: str
    fingerprint: str
    created: float
    payload: str
    question: str | None


@runtime_checkable
class ArmStore(Protocol):
    """A persistent arm store (module docstring). Methods are blocking; call them off the event loop."""

    #: short name, the ``layer`` label of ``regime_w_arm_cache_hits_total`` (``sqlite`` / ``postgres``)
    name: str
    #: where it is, with any password removed (for logs and messages)
    where: str

    def get(self, key: str) -> tuple[ArmText, ...] | None: ...

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[ArmText, ...]]: ...

    def put(self, rows: Sequence[ArmRow]) -> None: ...

    def put_questions(self, entries: Sequence[tuple[str, str, str, str]]) -> None: ...

    def questions(self, model_id: str, fingerprint: str, limit: int | None = None) -> list[str]: ...

    def question_cursor(self) -> int: ...

    def questions_since(self, model_id: str, fingerprint: str, cursor: int) -> tuple[list[str], int]: ...

    def claim(self, keys: Sequence[str], owner: str, lease_s: float) -> list[str]: ...

    def heartbeat(self, keys: Sequence[str], owner: str, lease_s: float) -> None: ...

    def release(self, keys: Sequence[str], owner: str) -> None: ...

    def rows(self, batch: int = 500) -> Iterator[StoredRow]: ...

    def orphan_questions(self) -> int: ...

    def close(self) -> None: ...
