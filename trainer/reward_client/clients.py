"""The two clients: ``RewardClient`` (sync, one pooled ``httpx.Client``) and ``AsyncRewardClient``.

``score(items)`` splits the items into requests of at most ``batch_items`` items (sent one after
another by the sync client, concurrently by the async one), validates every response against
``shared_schemas.wire.ScoreResponse`` and merges the results back in the order of ``items``. Both
retry through ``trainer.reward_client.retry.Attempts`` within the settings' patience budget.

Construction: ``RewardClient(ClientSettings(...))``, or the keyword convenience
``RewardClient(url, key, timeout_s=..., ...)`` (resolved with ``ClientSettings.from_env``), or
``RewardClient.from_args(reward_args)`` from a recipe.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from shared_schemas.wire import InfoResponse, ScoreItem, ScoreResponse
from trainer import __version__
from trainer.reward_client.endpoints import Endpoints
from trainer.reward_client.errors import RewardServiceTimeout
from trainer.reward_client.responses import (
    PrecomputeResult,
    as_items,
    check_batch,
    check_precompute,
    merge,
    parse_body,
    parse_retry_after,
    precompute_body,
    precompute_chunks,
    score_body,
    split_batches,
)
from trainer.reward_client.retry import MOVE_ON_STATUSES, Attempts, is_unreachable
from trainer.reward_client.settings import API_KEY_ENV, ClientSettings

if TYPE_CHECKING:
    from typing import Unpack

    from trainer.configs import RewardServiceArguments
    from trainer.reward_client.settings import SettingsFields

__all__ = [
    "RewardClient",
    "AsyncRewardClient",
    "SCORE_PATH",
    "INFO_PATH",
    "READY_PATH",
    "PRECOMPUTE_PATH",
    "PRECOMPUTE_CHUNK",
]

SCORE_PATH = "/v1/score"
INFO_PATH = "/v1/info"
READY_PATH = "/readyz"
PRECOMPUTE_PATH = "/v1/arms/precompute"
#: Questions per ``POST /v1/arms/precompute`` request.
PRECOMPUTE_CHUNK = 256


def _settings(
    settings: ClientSettings | str | None,
    api_key: str | None,
    base_url: str | None,
    api_key_env: str,
    fields: SettingsFields,
) -> ClientSettings:
    if isinstance(settings, ClientSettings):
        if base_url is not None or api_key_env != API_KEY_ENV:
            raise TypeError("base_url / api_key_env belong in the ClientSettings, not beside it")
        changes: dict[str, Any] = dict(fields)
        if api_key is not None:
            changes["api_key"] = api_key
        return settings.replace(**changes) if changes else settings
    if settings is not None and base_url is not None:
        raise TypeError("the URL was given twice (positional and base_url=)")
    return ClientSettings.from_env(settings or base_url, api_key, api_key_env=api_key_env, **fields)


class _ClientBase:
    """What both clients share: settings, headers, URLs, pool limits and the jitter RNG."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.endpoints = Endpoints(settings.urls, settings.down_for_s)
        self.rng = random.Random(settings.seed)
        self.timeout = httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, settings.connect_timeout_s))
        self.ready_timeout = httpx.Timeout(min(settings.timeout_s, 10.0))
        self.limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=30.0,
        )

    # read-only views of the settings (callers written before ClientSettings read these)
    base_url = property(lambda self: self.settings.base_url)
    api_key = property(lambda self: self.settings.api_key)
    timeout_s = property(lambda self: self.settings.timeout_s)
    patience_s = property(lambda self: self.settings.patience_s)
    max_retries = property(lambda self: self.settings.max_retries)
    backoff_base_s = property(lambda self: self.settings.backoff_base_s)
    backoff_max_s = property(lambda self: self.settings.backoff_max_s)
    batch_items = property(lambda self: self.settings.batch_items)

    def headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": f"regime-w-trainer/{__version__} httpx/{httpx.__version__}",
        }
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def url(self, path: str) -> str:
        """``path`` on the first service URL (for messages; requests go through ``endpoints``)."""
        return f"{self.settings.urls[0]}{path}"

    def attempts(self, method: str, url: str) -> Attempts:
        return Attempts(self.settings, self.rng, method, url)

    def _after_exception(self, base: str, attempts: Attempts, exc: httpx.HTTPError) -> float:
        """The wait before the next try after ``exc`` at ``base`` (raises when it is final)."""
        if is_unreachable(exc):
            self.endpoints.mark_down(base)
        return attempts.on_exception(exc, move_on=is_unreachable(exc) and self.endpoints.any_up())

    def _after_response(self, base: str, attempts: Attempts, response: httpx.Response) -> float | None:
        """None on success, else the wait before the next try (raises when the status is final)."""
        if response.is_success:
            self.endpoints.mark_up(base)
            attempts.on_response(response)
            return None
        moving = response.status_code in MOVE_ON_STATUSES and response.status_code in self.settings.retry_statuses
        if moving:
            self.endpoints.mark_down(base, parse_retry_after(response.headers.get("Retry-After")))
        return attempts.on_response(response, move_on=moving and self.endpoints.any_up())

    def __repr__(self) -> str:
        s = self.settings
        key = "set" if s.api_key else "none"
        return f"{type(self).__name__}(base_url={s.base_url!r}, api_key={key}, batch_items={s.batch_items})"


class RewardClient(_ClientBase):
    """Synchronous client; one pooled ``httpx.Client``. Use as a context manager or call ``close()``."""

    def __init__(
        self,
        settings: ClientSettings | str | None = None,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str = API_KEY_ENV,
        **fields: Unpack[SettingsFields],
    ) -> None:
        super().__init__(_settings(settings, api_key, base_url, api_key_env, fields))
        self._http = httpx.Client(timeout=self.timeout, limits=self.limits, headers=self.headers())

    @classmethod
    def from_args(cls, args: RewardServiceArguments, **fields: Unpack[SettingsFields]) -> RewardClient:
        """A client from a recipe's ``RewardServiceArguments`` (keywords override)."""
        return cls(ClientSettings.from_args(args, **fields))

    def _send(self, method: str, path: str, content: bytes | None = None) -> tuple[httpx.Response, str]:
        attempts = self.attempts(method, self.url(path))
        while True:
            base = self.endpoints.pick()
            url = attempts.url = base + path
            try:
                response = self._http.request(method, url, content=content)
            except httpx.HTTPError as exc:
                delay = self._after_exception(base, attempts, exc)
            else:
                retry_in = self._after_response(base, attempts, response)
                if retry_in is None:
                    return response, url
                delay = retry_in
            if delay > 0:
                time.sleep(delay)

    def score(self, items: Sequence[ScoreItem | Mapping[str, Any]], *, return_details: bool = True) -> ScoreResponse:
        """Score ``items`` (in requests of at most ``batch_items``); results in the order of ``items``."""
        checked = as_items(items)
        responses = []
        url = self.url(SCORE_PATH)
        for batch in split_batches(checked, self.settings.batch_items):
            response, url = self._send("POST", SCORE_PATH, score_body(batch, return_details))
            parsed = parse_body(response, ScoreResponse, url)
            check_batch(parsed, batch, url)
            responses.append(parsed)
        return merge(responses, url)

    def precompute(self, questions: Sequence[str], *, chunk_size: int = PRECOMPUTE_CHUNK) -> PrecomputeResult:
        """``POST /v1/arms/precompute``: have the service generate and cache the arms of ``questions``
        (deduplicated; requests of ``chunk_size``, one after another) ahead of training. Returns the
        summed counts. Each request gets ``timeout_s``; unlike ``score``, a timed-out chunk is sent
        again within the patience budget: the service keeps generating and the retry joins that."""
        total = PrecomputeResult(questions=0, generated=0, already_cached=0)
        for chunk in precompute_chunks(questions, chunk_size):
            body = precompute_body(chunk)
            timeouts = self.attempts("POST", self.url(PRECOMPUTE_PATH))
            while True:
                try:
                    response, url = self._send("POST", PRECOMPUTE_PATH, body)
                    break
                except RewardServiceTimeout as exc:
                    time.sleep(timeouts.on_timeout(exc))
            total += check_precompute(parse_body(response, PrecomputeResult, url), chunk, url)
        return total

    def info(self) -> InfoResponse:
        """``GET /v1/info``: scorer version, model, arm names, limits."""
        response, url = self._send("GET", INFO_PATH)
        return parse_body(response, InfoResponse, url)

    def ready(self) -> bool:
        """True when ``GET /readyz`` of some service URL answers 2xx (one try each, at most 10 s, no
        retries); else False."""
        for base in self.settings.urls:
            try:
                if self._http.get(base + READY_PATH, timeout=self.ready_timeout).is_success:
                    return True
            except httpx.HTTPError:
                continue
        return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRewardClient(_ClientBase):
    """Asynchronous client; batches of one ``score`` call go out concurrently (``max_concurrency``)."""

    def __init__(
        self,
        settings: ClientSettings | str | None = None,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        api_key_env: str = API_KEY_ENV,
        **fields: Unpack[SettingsFields],
    ) -> None:
        super().__init__(_settings(settings, api_key, base_url, api_key_env, fields))
        self._http = httpx.AsyncClient(timeout=self.timeout, limits=self.limits, headers=self.headers())

    @classmethod
    def from_args(cls, args: RewardServiceArguments, **fields: Unpack[SettingsFields]) -> AsyncRewardClient:
        """A client from a recipe's ``RewardServiceArguments`` (keywords override)."""
        return cls(ClientSettings.from_args(args, **fields))

    async def _send(self, method: str, path: str, content: bytes | None = None) -> tuple[httpx.Response, str]:
        attempts = self.attempts(method, self.url(path))
        while True:
            base = self.endpoints.pick()
            url = attempts.url = base + path
            try:
                response = await self._http.request(method, url, content=content)
            except httpx.HTTPError as exc:
                delay = self._after_exception(base, attempts, exc)
            else:
                retry_in = self._after_response(base, attempts, response)
                if retry_in is None:
                    return response, url
                delay = retry_in
            await asyncio.sleep(delay)

    async def score(
        self, items: Sequence[ScoreItem | Mapping[str, Any]], *, return_details: bool = True
    ) -> ScoreResponse:
        """Score ``items``; batches go out concurrently; results in the order of ``items``."""
        checked = as_items(items)
        batches = split_batches(checked, self.settings.batch_items)
        gate = asyncio.Semaphore(self.settings.max_concurrency)
        url = self.url(SCORE_PATH)

        async def one(batch: list[ScoreItem]) -> ScoreResponse:
            async with gate:
                response, where = await self._send("POST", SCORE_PATH, score_body(batch, return_details))
            parsed = parse_body(response, ScoreResponse, where)
            check_batch(parsed, batch, where)
            return parsed

        tasks = [asyncio.ensure_future(one(batch)) for batch in batches]
        try:
            responses = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return merge(responses, url)

    async def precompute(self, questions: Sequence[str], *, chunk_size: int = PRECOMPUTE_CHUNK) -> PrecomputeResult:
        """``POST /v1/arms/precompute`` as ``RewardClient.precompute`` (chunks one after another:
        the service batches generation itself, and a chunk's deadline should not include a queue)."""
        total = PrecomputeResult(questions=0, generated=0, already_cached=0)
        for chunk in precompute_chunks(questions, chunk_size):
            body = precompute_body(chunk)
            timeouts = self.attempts("POST", self.url(PRECOMPUTE_PATH))
            while True:
                try:
                    response, url = await self._send("POST", PRECOMPUTE_PATH, body)
                    break
                except RewardServiceTimeout as exc:
                    await asyncio.sleep(timeouts.on_timeout(exc))
            total += check_precompute(parse_body(response, PrecomputeResult, url), chunk, url)
        return total

    async def info(self) -> InfoResponse:
        """``GET /v1/info``: scorer version, model, arm names, limits."""
        response, url = await self._send("GET", INFO_PATH)
        return parse_body(response, InfoResponse, url)

    async def ready(self) -> bool:
        """True when ``GET /readyz`` of some service URL answers 2xx (one try each, at most 10 s)."""
        for base in self.settings.urls:
            try:
                if (await self._http.get(base + READY_PATH, timeout=self.ready_timeout)).is_success:
                    return True
            except httpx.HTTPError:
                continue
        return False

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
