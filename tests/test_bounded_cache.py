"""``shared_schemas.bounded_cache``: a memo bounded by entries and by bytes (issue 22, item 4)."""

from __future__ import annotations

import sys

import pytest

from shared_schemas.bounded_cache import ENTRY_OVERHEAD, BoundedCache, shallow_size


def test_evicts_least_recently_used_by_bytes_and_by_entries() -> None:
    calls: list[str] = []

    def upper(s: str) -> str:
        calls.append(s)
        return s.upper()

    keys = [c * 100 for c in "abcdefghi"]
    one = shallow_size(keys[0], keys[0].upper())  # every entry costs the same
    cache = BoundedCache(upper, max_entries=100, max_bytes=8 * one)  # 8 entries by bytes
    for key in keys[:8]:
        cache(key)
    cache(keys[0])  # a hit: "a" becomes the most recent
    cache(keys[8])  # over the byte bound: the least recent ("b") goes
    info = cache.cache_info()
    assert (info.entries, info.bytes, info.hits) == (8, 8 * one, 1)
    cache(keys[1])
    assert calls.count(keys[1]) == 2 and calls.count(keys[0]) == 1
    by_entries = BoundedCache(upper, max_entries=2, max_bytes=10**9)
    for key in "xyz":
        by_entries(key)
    assert by_entries.cache_info().entries == 2


def test_an_entry_larger_than_an_eighth_of_the_bound_is_not_kept() -> None:
    cache = BoundedCache(str.upper, max_entries=10, max_bytes=8 * 1024)
    big = "\U0001f600" * 300  # 4 bytes a character as Python holds it: 1,276 bytes with the header
    assert sys.getsizeof(big) + ENTRY_OVERHEAD > 1024
    assert cache(big) == big.upper() and cache.cache_info().entries == 0
    assert cache("small") == "SMALL" and cache.cache_info().entries == 1
    cache.cache_clear()
    assert cache.cache_info().entries == 0 and cache.cache_info().bytes == 0
    assert cache.__wrapped__ is str.upper  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        BoundedCache(str.upper, max_entries=0, max_bytes=1)
