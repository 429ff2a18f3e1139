"""A memo bounded by bytes as well as entries, for caches whose keys a client writes.

``functools.lru_cache`` bounds entries only: 65,536 entries of 100,000-digit numbers are gigabytes.
``bounded_cache(max_entries, max_bytes, size)`` memoizes a one-argument function, least recently
used first out, and charges every entry ``size(key, value)`` bytes (``sys.getsizeof`` of the key
and value by default, which counts 1, 2 or 4 bytes a character as the string holds them); an entry
larger than ``max_bytes // 8`` is computed and not kept. Thread-safe (one lock; the function runs
outside it). The wrapped function keeps ``__wrapped__`` and gets ``cache_clear()`` and
``cache_info()``, like ``lru_cache``. ``peek(key)`` and ``put(key, value)`` serve a caller that
computes its misses itself (many at once, in one batch) under the same bounds.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["BoundedCache", "CacheInfo", "bounded_cache", "shallow_size"]

K = TypeVar("K")
V = TypeVar("V")

#: Bytes charged per entry on top of its key and value: the LRU's dict slot and link (measured order).
ENTRY_OVERHEAD = 160


def shallow_size(key: object, value: object) -> int:
    """``sys.getsizeof`` of the key and the value, plus the entry overhead."""
    return sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_OVERHEAD


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    entries: int
    bytes: int
    max_entries: int
    max_bytes: int


class BoundedCache(Generic[K, V]):
    """``fn`` memoized, at most ``max_entries`` entries and ``max_bytes`` bytes (module docstring)."""

    def __init__(
        self,
        fn: Callable[[K], V],
        max_entries: int,
        max_bytes: int,
        size: Callable[[K, V], int] = shallow_size,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be >= 1")
        self.fn = fn
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 8
        self.size = size
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    def __call__(self, key: K) -> V:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return hit[0]
            self._misses += 1
        value = self.fn(key)
        self.put(key, value)
        return value

    def peek(self, key: K) -> V | None:
        """The cached value of ``key`` (counted as a hit, and now the most recently used), else None
        (counted as a miss; nothing is computed)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return hit[0]

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key`` (unless it alone is over ``max_bytes // 8``), least recently used out."""
        cost = self.size(key, value)
        if cost > self.max_entry_bytes:
            return
        with self._lock:
            if key not in self._entries:
                self._entries[key] = (value, cost)
                self._bytes += cost
                while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= dropped

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._hits = self._misses = 0

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(
                self._hits, self._misses, len(self._entries), self._bytes, self.max_entries, self.max_bytes
            )


def bounded_cache(
    max_entries: int, max_bytes: int, size: Callable[[Any, Any], int] = shallow_size
) -> Callable[[Callable[[K], V]], BoundedCache[K, V]]:
    """Decorator form of ``BoundedCache``."""

    def wrap(fn: Callable[[K], V]) -> BoundedCache[K, V]:
        return BoundedCache(fn, max_entries, max_bytes, size)

    return wrap
