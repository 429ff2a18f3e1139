"""The retry policy of the reward client, shared by the sync and the async client.

Retried, with full-jitter exponential backoff, until the request succeeds or its patience budget
(``ClientSettings.patience_s``, default 10 minutes) is spent: connection failures (refused, reset,
dropped before the response), ``429``, ``503`` and ``504`` (the service's deadline passed; the
arms it was generating are cached, so the retry is cheap). A ``Retry-After`` header (seconds or an
HTTP date) is a lower bound on the wait, clamped to what is left of the budget. Every other status
is final, and so is a read timeout (the service already spent ``timeout_s`` on the request).

With several service URLs (``trainer.reward_client.endpoints``), a connection failure, 429 or 503
moves on to another URL that is up at once (``move_on=True``: no wait, no patience spent).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from trainer.reward_client.errors import (
    RewardServiceConnectionError,
    RewardServiceError,
    RewardServiceTimeout,
)
from trainer.reward_client.responses import http_error, parse_retry_after

if TYPE_CHECKING:
    from trainer.reward_client.settings import ClientSettings

__all__ = ["RETRY_STATUSES", "MOVE_ON_STATUSES", "Attempts", "backoff_delay", "parse_retry_after", "is_unreachable"]

log = logging.getLogger("trainer.reward_client")

#: Statuses that mean "try again later"; every other error status is final.
RETRY_STATUSES = frozenset({429, 503, 504})
#: Statuses after which another service URL is tried at once (this one is overloaded or not ready).
#: 504 is not among them: the service that timed out goes on generating and caches the arms.
MOVE_ON_STATUSES = frozenset({429, 503})


def is_unreachable(exc: httpx.HTTPError) -> bool:
    """A connection refused, reset or dropped before the answer (not a read timeout)."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return False
    return isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout))


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Full-jitter exponential backoff: ``uniform(0, min(max_s, base_s * 2**attempt))``.

    ``attempt`` counts from 0 (the wait before the first retry). A ``Retry-After`` from the service
    is honoured as a lower bound.
    """
    ceiling = min(max_s, base_s * (2.0 ** min(attempt, 60)))
    jitter = (rng or random).uniform(0.0, ceiling) if ceiling > 0 else 0.0
    if retry_after is not None:
        return max(retry_after, jitter)
    return jitter


class Attempts:
    """The retry state of ONE logical request (one batch, one precompute chunk).

    ``on_response`` / ``on_exception`` / ``on_timeout`` return the seconds to wait before the next
    try (None from ``on_response``: success), or raise the typed error that ends the request: the
    error is final, the budget (``patience_s``) is spent, or ``max_retries`` retries were made.
    """

    def __init__(
        self,
        settings: ClientSettings,
        rng: random.Random,
        method: str,
        url: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.rng = rng
        self.method = method
        self.url = url
        self.clock = clock
        self.started = clock()
        self.attempt = 0  # completed attempts

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def _tries(self) -> str:
        if self.attempt <= 1:
            return ""
        return f" after {self.attempt} attempts in {self.elapsed:.1f}s (patience {self.settings.patience_s:g}s)"

    def _retry_or(self, error: RewardServiceError, retry_after: float | None, why: str, move_on: bool = False) -> float:
        if move_on:
            log.warning("reward service %s %s: %s; moving on to the next URL", self.method, self.url, why)
            return 0.0
        cap = self.settings.max_retries
        remaining = self.settings.patience_s - self.elapsed
        if (cap is not None and self.attempt > cap) or remaining <= 0:
            raise error
        delay = backoff_delay(
            self.attempt - 1,
            base_s=self.settings.backoff_base_s,
            max_s=self.settings.backoff_max_s,
            retry_after=retry_after,
            rng=self.rng,
        )
        delay = min(delay, remaining)
        limit = f"/{cap}" if cap is not None else ""
        log.warning(
            "reward service %s %s: %s; retry %d%s in %.2fs (%.0fs of patience left)",
            self.method,
            self.url,
            why,
            self.attempt,
            limit,
            delay,
            remaining,
        )
        return delay

    def on_response(self, response: httpx.Response, *, move_on: bool = False) -> float | None:
        """``move_on``: another URL is up, go there at once if this status is retried."""
        self.attempt += 1
        if response.is_success:
            return None
        error = http_error(response, self.url, tries=self._tries())
        if response.status_code not in self.settings.retry_statuses:
            raise error
        return self._retry_or(error, error.retry_after, f"HTTP {response.status_code}", move_on)

    def on_exception(self, exc: httpx.HTTPError, *, move_on: bool = False) -> float:
        self.attempt += 1
        where = f"{self.method} {self.url}"
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            raise RewardServiceTimeout(
                f"reward service {where} did not answer within {self.settings.timeout_s:g}s ({type(exc).__name__})"
            ) from exc
        if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)):
            error = RewardServiceConnectionError(
                f"could not reach the reward service at {where} after {self.attempt} attempt(s) in "
                f"{self.elapsed:.1f}s (patience {self.settings.patience_s:g}s): "
                f"{type(exc).__name__}: {exc or 'connection failed'}"
            )
            error.__cause__ = exc
            return self._retry_or(error, None, type(exc).__name__, move_on)
        raise RewardServiceError(f"reward service {where} failed: {type(exc).__name__}: {exc}") from exc

    def on_timeout(self, error: RewardServiceTimeout) -> float:
        """For idempotent work the service goes on with after a client timeout (arm precompute): the
        timed-out request is sent again and joins the work in flight, within the same budget."""
        self.attempt += 1
        return self._retry_or(error, None, "timed out")
