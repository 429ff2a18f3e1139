"""The prepared-arms memo: parsed arms of recent (question, arm texts), bounded in entries and bytes.

Every request of a training run scores the same questions again, so the scoring service keeps the
``PreparedArms`` of recent questions instead of parsing their arm texts on every request. The
memo is keyed by a SHA-256 digest of the question and the arm texts (never by the texts
themselves, which a client may send megabytes of), and it is bounded twice, from the settings:

- ``max_items`` entries, least recently used evicted first;
- ``max_bytes``, what the entries hold: the measured size of each entry's ``PreparedArms`` (every
  object it reaches, by ``sys.getsizeof``: ``prepared_size``), plus ``ANSWER_COST`` for every
  trajectory scored with it (``PreparedArms`` memoizes its per-answer sums, one entry per distinct
  answer, and answers are at most a few hundred characters).

The size is measured rather than derived from the characters parsed: arm texts dense with numbers
and equations parse into sets of many small strings, several times the text's size (6-10x for
arms that are all equations), while prose parses into almost nothing. An estimate of one byte a
character let a memo bounded at 256 MiB hold 1.2 GB of dense arms.

An entry's cost grows as it scores; when the memo is over budget the least recently used entries
go, and an entry that alone exceeds the budget is not kept (the next request parses afresh, with
an empty per-answer memo), so the memo's memory stays under ``max_bytes`` whatever clients send.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reward_service.regime_w.scorer import ArmText, PreparedArms

#: bytes charged per trajectory scored with an entry (its answer's slots in the per-answer memos:
#: measured at 400-900 bytes a distinct answer with 8 arms, tests/test_service_memory.py)
ANSWER_COST = 1024
#: bytes of the memo's own bookkeeping per entry (the OrderedDict slot, the 32-byte key, ``_Entry``)
ENTRY_OVERHEAD = 256


def prepared_size(prepared: PreparedArms) -> int:
    """Bytes held by ``prepared``: ``sys.getsizeof`` of every object it reaches (each counted once:
    tuples, frozensets, dicts, strings, numbers, the ``ArmSample`` slots)."""
    seen: set[int] = set()
    stack: list[object] = [prepared]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (tuple, list, frozenset, set)):
            stack.extend(obj)
        elif not isinstance(obj, (str, bytes, int, float, bool)) and obj is not None:
            for name in _slot_names(type(obj)):
                if hasattr(obj, name):
                    stack.append(getattr(obj, name))
            if hasattr(obj, "__dict__"):
                stack.append(vars(obj))
    return total


def _slot_names(cls: type) -> list[str]:
    return [name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())]


def memo_key(question: str, arm_texts: Sequence[ArmText]) -> bytes:
    h = hashlib.sha256()
    for part in (question, *(p for a in arm_texts for p in (a.arm, a.text))):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


@dataclass
class _Entry:
    prepared: PreparedArms
    cost: int


class PreparedMemo:
    """Thread-safe LRU of ``PreparedArms`` under an entry and a byte budget."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(
        self, question: str, arm_texts: Sequence[ArmText], prepare: Callable[[], PreparedArms]
    ) -> tuple[bytes, PreparedArms]:
        """The memoized entry of (question, arm texts), or ``prepare()`` remembered; with its key."""
        key = memo_key(question, arm_texts)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return key, entry.prepared
        prepared = prepare()
        cost = prepared_size(prepared) + ENTRY_OVERHEAD
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.cost
            self._entries[key] = _Entry(prepared, cost)
            self._bytes += cost
            self._trim()
        return key, prepared

    def charge(self, key: bytes, trajectories: int) -> None:
        """Account for ``trajectories`` scored with the entry ``key`` (its per-answer memo grew)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.cost += trajectories * ANSWER_COST
            self._bytes += trajectories * ANSWER_COST
            self._trim()

    def _trim(self) -> None:
        while self._entries and (len(self._entries) > self.max_items or self._bytes > self.max_bytes):
            _, gone = self._entries.popitem(last=False)
            self._bytes -= gone.cost

    @property
    def items(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The estimated bytes held (always <= ``max_bytes``)."""
        return self._bytes
