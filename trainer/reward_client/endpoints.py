"""Several service URLs (replicas) behind one client: round robin, and moving on from one that is down.

``ClientSettings.base_url`` may name several services, comma-separated (``REGIME_W_URL=http://a:8000,
http://b:8000``). Each request goes to the next URL in turn that is not marked down. A URL is marked
down for ``ClientSettings.down_for_s`` (or the service's longer ``Retry-After``) when it refuses the
connection, drops it, or answers 429 / 503; the request then moves on to the next URL at once,
without a backoff wait and without spending the patience budget. When every URL is down, the one that
comes back first is tried, within the patience budget as for a single URL. A success marks a URL up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["Endpoints", "split_urls"]


def split_urls(value: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list, stripped, without trailing slashes, duplicates dropped."""
    urls = [part.strip().rstrip("/") for part in value.split(",")]
    return tuple(dict.fromkeys(u for u in urls if u))


class Endpoints:
    """Which URL the next request goes to; thread-safe (one per client, shared by its threads)."""

    def __init__(self, urls: Sequence[str], down_for_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("at least one service URL is needed")
        self.urls = tuple(urls)
        self.down_for_s = down_for_s
        self.clock = clock
        self._down_until = dict.fromkeys(self.urls, 0.0)
        self._next = 0
        self._lock = threading.Lock()

    def pick(self) -> str:
        """The next URL in turn that is up; when all are down, the one that comes back first."""
        with self._lock:
            now = self.clock()
            n = len(self.urls)
            for i in range(n):
                url = self.urls[(self._next + i) % n]
                if self._down_until[url] <= now:
                    self._next = (self._next + i + 1) % n
                    return url
            return min(self.urls, key=lambda u: self._down_until[u])

    def mark_down(self, url: str, retry_after: float | None = None) -> None:
        """Skip ``url`` for ``down_for_s`` seconds (or ``retry_after``, when longer)."""
        wait = max(self.down_for_s, retry_after or 0.0)
        with self._lock:
            self._down_until[url] = self.clock() + wait

    def mark_up(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = 0.0

    def any_up(self) -> bool:
        """Whether some URL is not marked down (a failed request can move on to it at once)."""
        with self._lock:
            now = self.clock()
            return any(until <= now for until in self._down_until.values())

    def down(self) -> list[str]:
        """The URLs marked down now (for logs and tests)."""
        with self._lock:
            now = self.clock()
            return [u for u in self.urls if self._down_until[u] > now]
