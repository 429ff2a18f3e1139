"""HTTP client of the Regime W reward service (DESIGN §1, §5): sync and async, pooled, batched, retried.

``RewardClient.score(items)`` splits the items into requests of at most ``batch_items`` items (sent
one after another; ``AsyncRewardClient`` sends them concurrently), validates every response with
``shared_schemas.wire.ScoreResponse`` and merges the results back in the order of ``items``.

Retries (exponential backoff with full jitter, at most ``max_retries`` after the first attempt) happen
only where a second try can help: connection failures (refused, reset, dropped before the response),
``429 Too Many Requests`` and ``503 Service Unavailable``. A ``Retry-After`` header (seconds, or an
HTTP date) is a lower bound on the wait. Any other 4xx/5xx is raised at once, and so is a read
timeout (the service already spent ``timeout_s`` on the request; sending it again doubles the wait).

Configuration: ``base_url`` None -> env ``REGIME_W_URL`` -> ``http://127.0.0.1:8000``; ``api_key``
None -> env ``REGIME_W_API_KEY`` -> the file named by env ``REGIME_W_API_KEY_FILE`` -> no key.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared_schemas.wire import (
    API_VERSION,
    ErrorResponse,
    InfoResponse,
    ItemResult,
    PrecomputeResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
)
from trainer import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "URL_ENV",
    "API_KEY_ENV",
    "RETRY_STATUSES",
    "RewardServiceError",
    "RewardServiceConnectionError",
    "RewardServiceTimeout",
    "RewardServiceHTTPError",
    "RewardServiceProtocolError",
    "RewardClient",
    "AsyncRewardClient",
    "resolve_base_url",
    "resolve_api_key",
    "parse_retry_after",
    "backoff_delay",
    "split_batches",
    "PrecomputeResult",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
URL_ENV = "REGIME_W_URL"
API_KEY_ENV = "REGIME_W_API_KEY"
#: Statuses that mean "try again later"; every other error status is final.
RETRY_STATUSES = frozenset({429, 503})

SCORE_PATH = "/v1/score"
INFO_PATH = "/v1/info"
READY_PATH = "/readyz"
PRECOMPUTE_PATH = "/v1/arms/precompute"
#: Questions per ``POST /v1/arms/precompute`` request.
PRECOMPUTE_CHUNK = 256

_M = TypeVar("_M", bound=BaseModel)


# --------------------------------------------------------------------------------------------- errors


class RewardServiceError(Exception):
    """Base of every error of this client; the message says what failed and where."""


class RewardServiceConnectionError(RewardServiceError):
    """The service could not be reached (refused, reset, dropped), after the allowed retries."""


class RewardServiceTimeout(RewardServiceError):
    """The service accepted the request but did not answer within ``timeout_s``."""


class RewardServiceHTTPError(RewardServiceError):
    """The service answered with an error status (after the allowed retries for 429/503)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str,
        url: str,
        retry_after: float | None = None,
        service_message: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.url = url
        self.retry_after = retry_after
        self.service_message = service_message

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only fields survive pickling (multiprocessing)
        return (
            _rebuild_http_error,
            (str(self), self.status, self.code, self.url, self.retry_after, self.service_message),
        )


def _rebuild_http_error(
    message: str, status: int, code: str, url: str, retry_after: float | None, service_message: str
) -> RewardServiceHTTPError:
    return RewardServiceHTTPError(
        message, status=status, code=code, url=url, retry_after=retry_after, service_message=service_message
    )


class RewardServiceProtocolError(RewardServiceError):
    """The service answered 2xx with a body that breaks the wire contract."""


# ------------------------------------------------------------------------------------ configuration


def resolve_base_url(base_url: str | None) -> str:
    """``base_url``, else env ``REGIME_W_URL``, else ``http://127.0.0.1:8000``; no trailing slash."""
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL
    if not url.startswith(("http://", "https://")):
        raise RewardServiceError(
            f"reward service URL must start with http:// or https://, got {url!r}"
        )
    return url.rstrip("/")


def resolve_api_key(api_key: str | None, *, env: str = API_KEY_ENV) -> str | None:
    """``api_key``, else env ``<env>``, else the first key in the file named by env ``<env>_FILE``
    (one key a line, ``#`` comments — the service's key-file format)."""
    if api_key:
        return api_key
    from_env = os.environ.get(env)
    if from_env:
        return from_env.strip()
    key_file = os.environ.get(f"{env}_FILE")
    if key_file:
        try:
            with open(key_file, encoding="utf-8") as fh:
                lines = (line.split("#", 1)[0].strip() for line in fh)
                # the service's key file format: one key a line, '#' comments; the first key is ours
                key = next((line for line in lines if line), "")
        except OSError as exc:
            raise RewardServiceError(
                f"{env}_FILE names {key_file!r}, which cannot be read: {exc}"
            ) from exc
        if not key:
            raise RewardServiceError(f"{env}_FILE names {key_file!r}, which is empty")
        return key
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        current = datetime.now(timezone.utc).timestamp() if now is None else now
        seconds = when.timestamp() - current
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


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
    ceiling = min(max_s, base_s * (2.0**attempt))
    jitter = (rng or random).uniform(0.0, ceiling) if ceiling > 0 else 0.0
    if retry_after is not None:
        return max(retry_after, jitter)
    return jitter


def split_batches(items: Sequence[ScoreItem], batch_items: int) -> list[list[ScoreItem]]:
    """Consecutive slices of at most ``batch_items`` items, in order."""
    if batch_items <= 0:
        raise ValueError(f"batch_items must be positive, got {batch_items}")
    return [list(items[i : i + batch_items]) for i in range(0, len(items), batch_items)]


def _as_items(items: Sequence[ScoreItem | Mapping[str, Any]]) -> list[ScoreItem]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"items must be a sequence of ScoreItem, got {type(items).__name__}")
    if not items:
        raise ValueError("score() needs at least one item")
    out: list[ScoreItem] = []
    for i, item in enumerate(items):
        if isinstance(item, ScoreItem):
            out.append(item)
        elif isinstance(item, Mapping):
            try:
                out.append(ScoreItem.model_validate(item))
            except ValidationError as exc:
                raise ValueError(f"items[{i}] is not a valid ScoreItem: {exc}") from exc
        else:
            raise TypeError(f"items[{i}] must be a ScoreItem or a dict, got {type(item).__name__}")
    return out


# ------------------------------------------------------------------------ response interpretation


def _service_error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) from the service's ``{"error": {"code", "message"}}``, or a best effort."""
    try:
        parsed = ErrorResponse.model_validate_json(response.content)
        return parsed.error.code, parsed.error.message
    except ValidationError:
        pass
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:  # a plain FastAPI/Starlette error
        return f"http_{response.status_code}", str(body["detail"])[:500]
    text = response.text.strip()
    return f"http_{response.status_code}", text[:500] or response.reason_phrase


def _http_error(response: httpx.Response, url: str, *, attempts: int) -> RewardServiceHTTPError:
    code, message = _service_error(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return RewardServiceHTTPError(
        f"reward service {response.request.method} {url} failed{tries}: "
        f"HTTP {response.status_code} [{code}] {message}",
        status=response.status_code,
        code=code,
        url=url,
        retry_after=retry_after,
        service_message=message,
    )


def _parse_body(response: httpx.Response, model: type[_M], url: str) -> _M:
    try:
        parsed = model.model_validate_json(response.content)
    except ValidationError as exc:
        raise RewardServiceProtocolError(
            f"reward service {url} returned a body that is not a valid {model.__name__}: {exc}"
        ) from exc
    version = getattr(parsed, "api_version", API_VERSION)
    if version != API_VERSION:
        raise RewardServiceProtocolError(
            f"reward service {url} speaks API version {version!r}; this client speaks {API_VERSION!r}"
        )
    return parsed


def _check_batch(response: ScoreResponse, batch: Sequence[ScoreItem], url: str) -> None:
    if len(response.results) != len(batch):
        raise RewardServiceProtocolError(
            f"reward service {url} returned {len(response.results)} results for {len(batch)} items"
        )
    for i, (result, item) in enumerate(zip(response.results, batch)):
        if result.id != item.id:
            raise RewardServiceProtocolError(
                f"reward service {url} returned result {i} for id {result.id!r}, expected {item.id!r}"
            )
        if len(result.scores) != len(item.trajectories):
            raise RewardServiceProtocolError(
                f"reward service {url} returned {len(result.scores)} scores for item {item.id!r}, "
                f"which has {len(item.trajectories)} trajectories"
            )


# ------------------------------------------------------------------------ arm precomputation


class PrecomputeResult(PrecomputeResponse):
    """``PrecomputeResponse`` (the wire model) that ``precompute`` can sum over its requests."""

    def __add__(self, other: "PrecomputeResponse") -> "PrecomputeResult":
        return PrecomputeResult(
            questions=self.questions + other.questions,
            generated=self.generated + other.generated,
            already_cached=self.already_cached + other.already_cached,
        )


def _precompute_chunks(questions: Sequence[str], chunk_size: int) -> list[list[str]]:
    """The distinct questions (first-seen order) in slices of at most ``chunk_size``."""
    if isinstance(questions, (str, bytes)) or not isinstance(questions, Sequence):
        raise TypeError(f"questions must be a sequence of strings, got {type(questions).__name__}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"questions[{i}] must be a non-empty string, got {q!r}")
    unique = list(dict.fromkeys(questions))
    return [unique[i : i + chunk_size] for i in range(0, len(unique), chunk_size)]


def _precompute_body(chunk: Sequence[str]) -> bytes:
    return json.dumps({"questions": list(chunk)}).encode("utf-8")


def _check_precompute(result: PrecomputeResult, chunk: Sequence[str], url: str) -> PrecomputeResult:
    if result.questions != len(chunk) or result.generated + result.already_cached != result.questions:
        raise RewardServiceProtocolError(
            f"reward service {url} answered {result.model_dump()} for {len(chunk)} distinct questions"
        )
    return result


def _precompute_retry_delay(owner: "_ClientConfig", error: RewardServiceTimeout, attempt: int) -> float:
    """Precompute is idempotent and the service keeps generating after a client timeout, so a
    timed-out chunk is sent again (it joins the generation in flight); ``max_retries`` bounds it."""
    if attempt > owner.max_retries:
        raise error
    delay = backoff_delay(attempt - 1, base_s=owner.backoff_base_s, max_s=owner.backoff_max_s, rng=owner.rng)
    log.warning("arm precompute timed out (%s); retry %d/%d in %.2fs", error, attempt, owner.max_retries, delay)
    return delay


def _merge(responses: Sequence[ScoreResponse], url: str) -> ScoreResponse:
    """One response from the per-batch responses, results in batch order."""
    first = responses[0]
    results: list[ItemResult] = []
    for response in responses:
        if response.scorer.config_fingerprint != first.scorer.config_fingerprint:
            raise RewardServiceProtocolError(
                f"reward service {url} changed its scorer config between batches of one call "
                f"({first.scorer.config_fingerprint} then {response.scorer.config_fingerprint}); "
                "scores of one call would not be comparable"
            )
        results.extend(response.results)
    return ScoreResponse(api_version=first.api_version, scorer=first.scorer, results=results)


class _Attempts:
    """The retry policy of one logical request, shared by the sync and the async client.

    ``on_response`` / ``on_exception`` return the seconds to wait before the next try, return None
    for success, or raise the typed error that ends the request.
    """

    def __init__(self, owner: "_ClientConfig", method: str, url: str) -> None:
        self.owner = owner
        self.method = method
        self.url = url
        self.attempt = 0  # completed attempts

    def _retry_or(self, error: RewardServiceError, retry_after: float | None, why: str) -> float:
        if self.attempt > self.owner.max_retries:
            raise error
        delay = backoff_delay(
            self.attempt - 1,
            base_s=self.owner.backoff_base_s,
            max_s=self.owner.backoff_max_s,
            retry_after=retry_after,
            rng=self.owner.rng,
        )
        log.warning(
            "reward service %s %s: %s; retry %d/%d in %.2fs",
            self.method, self.url, why, self.attempt, self.owner.max_retries, delay,
        )
        return delay

    def on_response(self, response: httpx.Response) -> float | None:
        self.attempt += 1
        if response.is_success:
            return None
        error = _http_error(response, self.url, attempts=self.attempt)
        if response.status_code not in self.owner.retry_statuses:
            raise error
        return self._retry_or(error, error.retry_after, f"HTTP {response.status_code}")

    def on_exception(self, exc: httpx.HTTPError) -> float:
        self.attempt += 1
        where = f"{self.method} {self.url}"
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            raise RewardServiceTimeout(
                f"reward service {where} did not answer within {self.owner.timeout_s:g}s "
                f"({type(exc).__name__})"
            ) from exc
        if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)):
            error = RewardServiceConnectionError(
                f"could not reach the reward service at {where} after {self.attempt} attempt(s): "
                f"{type(exc).__name__}: {exc or 'connection failed'}"
            )
            error.__cause__ = exc
            return self._retry_or(error, None, type(exc).__name__)
        raise RewardServiceError(f"reward service {where} failed: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------------------- clients


class _ClientConfig:
    """Settings and helpers common to both clients."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        max_retries: int,
        backoff_base_s: float,
        backoff_max_s: float,
        batch_items: int,
        max_connections: int,
        api_key_env: str,
        retry_statuses: frozenset[int],
        seed: int | None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if batch_items <= 0:
            raise ValueError(f"batch_items must be positive, got {batch_items}")
        if backoff_base_s < 0 or backoff_max_s < 0:
            raise ValueError("backoff_base_s and backoff_max_s must be >= 0")
        if max_connections <= 0:
            raise ValueError(f"max_connections must be positive, got {max_connections}")
        self.base_url = resolve_base_url(base_url)
        self.api_key = resolve_api_key(api_key, env=api_key_env)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.batch_items = int(batch_items)
        self.max_connections = int(max_connections)
        self.retry_statuses = frozenset(retry_statuses)
        self.rng = random.Random(seed)
        self.timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, connect_timeout_s))
        self.ready_timeout = httpx.Timeout(min(self.timeout_s, 10.0))
        self.limits = httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_connections,
            keepalive_expiry=30.0,
        )

    def headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": f"regime-w-trainer/{__version__} httpx/{httpx.__version__}",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @staticmethod
    def body(batch: Sequence[ScoreItem], return_details: bool) -> bytes:
        request = ScoreRequest(items=list(batch), return_details=return_details)
        return request.model_dump_json(exclude_none=True).encode("utf-8")

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={key}, batch_items={self.batch_items})"


def _from_args_kwargs(args: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Client keyword arguments from a ``trainer.configs.RewardServiceArguments``."""
    kwargs: dict[str, Any] = dict(
        base_url=args.reward_url,
        timeout_s=args.reward_timeout_s,
        max_retries=args.reward_max_retries,
        batch_items=args.reward_batch_items,
        api_key_env=args.reward_api_key_env,
    )
    kwargs.update(overrides)
    return kwargs


class RewardClient(_ClientConfig):
    """Synchronous client; one pooled ``httpx.Client``. Use as a context manager or call ``close()``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        batch_items: int = 32,
        max_connections: int = 16,
        api_key_env: str = API_KEY_ENV,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
            max_retries=max_retries, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
            batch_items=batch_items, max_connections=max_connections, api_key_env=api_key_env,
            retry_statuses=retry_statuses, seed=seed,
        )
        self._http = httpx.Client(timeout=self.timeout, limits=self.limits, headers=self.headers())

    @classmethod
    def from_args(cls, args: Any, **overrides: Any) -> "RewardClient":
        """A client from ``trainer.configs.RewardServiceArguments`` (keywords override)."""
        return cls(**_from_args_kwargs(args, overrides))

    def _send(self, method: str, path: str, content: bytes | None = None) -> tuple[httpx.Response, str]:
        url = self.url(path)
        attempts = _Attempts(self, method, url)
        while True:
            try:
                response = self._http.request(method, url, content=content)
            except httpx.HTTPError as exc:
                delay = attempts.on_exception(exc)
            else:
                delay = attempts.on_response(response)
                if delay is None:
                    return response, url
            time.sleep(delay)

    def score(
        self, items: Sequence[ScoreItem | Mapping[str, Any]], *, return_details: bool = True
    ) -> ScoreResponse:
        """Score ``items`` (in requests of at most ``batch_items``); results in the order of ``items``."""
        checked = _as_items(items)
        responses = []
        url = self.url(SCORE_PATH)
        for batch in split_batches(checked, self.batch_items):
            response, url = self._send("POST", SCORE_PATH, self.body(batch, return_details))
            parsed = _parse_body(response, ScoreResponse, url)
            _check_batch(parsed, batch, url)
            responses.append(parsed)
        return _merge(responses, url)

    def precompute(self, questions: Sequence[str], *, chunk_size: int = PRECOMPUTE_CHUNK) -> PrecomputeResult:
        """``POST /v1/arms/precompute``: have the service generate and cache the arms of ``questions``
        (deduplicated; requests of ``chunk_size``, one after another) ahead of training. Returns the
        summed counts. Each chunk gets ``timeout_s``; unlike ``score``, a timed-out chunk is sent again
        (up to ``max_retries``): the service keeps generating and the retry joins that generation."""
        total = PrecomputeResult(questions=0, generated=0, already_cached=0)
        for chunk in _precompute_chunks(questions, chunk_size):
            body = _precompute_body(chunk)
            attempt = 0
            while True:
                try:
                    response, url = self._send("POST", PRECOMPUTE_PATH, body)
                    break
                except RewardServiceTimeout as exc:
                    attempt += 1
                    time.sleep(_precompute_retry_delay(self, exc, attempt))
            total += _check_precompute(_parse_body(response, PrecomputeResult, url), chunk, url)
        return total

    def info(self) -> InfoResponse:
        """``GET /v1/info``: scorer version, model, arm names, limits."""
        response, url = self._send("GET", INFO_PATH)
        return _parse_body(response, InfoResponse, url)

    def ready(self) -> bool:
        """True when ``GET /readyz`` answers 2xx (one try, at most 10 s, no retries); else False."""
        try:
            return self._http.get(self.url(READY_PATH), timeout=self.ready_timeout).is_success
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RewardClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRewardClient(_ClientConfig):
    """Asynchronous client; batches of one ``score`` call go out concurrently (``max_concurrency``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        batch_items: int = 32,
        max_connections: int = 16,
        max_concurrency: int = 8,
        api_key_env: str = API_KEY_ENV,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
            max_retries=max_retries, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
            batch_items=batch_items, max_connections=max_connections, api_key_env=api_key_env,
            retry_statuses=retry_statuses, seed=seed,
        )
        if max_concurrency <= 0:
            raise ValueError(f"max_concurrency must be positive, got {max_concurrency}")
        self.max_concurrency = int(max_concurrency)
        self._http = httpx.AsyncClient(timeout=self.timeout, limits=self.limits, headers=self.headers())

    @classmethod
    def from_args(cls, args: Any, **overrides: Any) -> "AsyncRewardClient":
        """A client from ``trainer.configs.RewardServiceArguments`` (keywords override)."""
        return cls(**_from_args_kwargs(args, overrides))

    async def _send(
        self, method: str, path: str, content: bytes | None = None
    ) -> tuple[httpx.Response, str]:
        url = self.url(path)
        attempts = _Attempts(self, method, url)
        while True:
            try:
                response = await self._http.request(method, url, content=content)
            except httpx.HTTPError as exc:
                delay = attempts.on_exception(exc)
            else:
                delay = attempts.on_response(response)
                if delay is None:
                    return response, url
            await asyncio.sleep(delay)

    async def score(
        self, items: Sequence[ScoreItem | Mapping[str, Any]], *, return_details: bool = True
    ) -> ScoreResponse:
        """Score ``items``; batches go out concurrently; results in the order of ``items``."""
        checked = _as_items(items)
        batches = split_batches(checked, self.batch_items)
        gate = asyncio.Semaphore(self.max_concurrency)
        url = self.url(SCORE_PATH)

        async def one(batch: list[ScoreItem]) -> ScoreResponse:
            async with gate:
                response, where = await self._send("POST", SCORE_PATH, self.body(batch, return_details))
            parsed = _parse_body(response, ScoreResponse, where)
            _check_batch(parsed, batch, where)
            return parsed

        tasks = [asyncio.ensure_future(one(batch)) for batch in batches]
        try:
            responses = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return _merge(responses, url)

    async def precompute(
        self, questions: Sequence[str], *, chunk_size: int = PRECOMPUTE_CHUNK
    ) -> PrecomputeResult:
        """``POST /v1/arms/precompute`` as ``RewardClient.precompute`` (chunks one after another:
        the service batches generation itself, and a chunk's deadline should not include a queue)."""
        total = PrecomputeResult(questions=0, generated=0, already_cached=0)
        for chunk in _precompute_chunks(questions, chunk_size):
            body = _precompute_body(chunk)
            attempt = 0
            while True:
                try:
                    response, url = await self._send("POST", PRECOMPUTE_PATH, body)
                    break
                except RewardServiceTimeout as exc:
                    attempt += 1
                    await asyncio.sleep(_precompute_retry_delay(self, exc, attempt))
            total += _check_precompute(_parse_body(response, PrecomputeResult, url), chunk, url)
        return total

    async def info(self) -> InfoResponse:
        """``GET /v1/info``: scorer version, model, arm names, limits."""
        response, url = await self._send("GET", INFO_PATH)
        return _parse_body(response, InfoResponse, url)

    async def ready(self) -> bool:
        """True when ``GET /readyz`` answers 2xx (one try, at most 10 s, no retries); else False."""
        try:
            return (await self._http.get(self.url(READY_PATH), timeout=self.ready_timeout)).is_success
        except httpx.HTTPError:
            return False

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def __aenter__(self) -> "AsyncRewardClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
