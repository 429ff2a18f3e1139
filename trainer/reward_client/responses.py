"""Reading the service's answers: error bodies, typed bodies, per-batch checks, merging batches."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared_schemas.wire import (
    API_VERSION,
    ErrorResponse,
    ItemResult,
    PrecomputeResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
)
from trainer.reward_client.errors import RewardServiceHTTPError, RewardServiceProtocolError

__all__ = [
    "PrecomputeResult",
    "as_items",
    "check_batch",
    "check_precompute",
    "http_error",
    "merge",
    "parse_body",
    "parse_retry_after",
    "precompute_body",
    "precompute_chunks",
    "score_body",
    "split_batches",
]

_M = TypeVar("_M", bound=BaseModel)


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
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        seconds = when.timestamp() - current
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


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


def http_error(response: httpx.Response, url: str, *, tries: str = "") -> RewardServiceHTTPError:
    """The typed error of an error response; ``tries`` (e.g. " after 3 attempts ...") goes in the message."""
    code, message = _service_error(response)
    return RewardServiceHTTPError(
        f"reward service {response.request.method} {url} failed{tries}: HTTP {response.status_code} [{code}] {message}",
        status=response.status_code,
        code=code,
        url=url,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        service_message=message,
    )


def parse_body(response: httpx.Response, model: type[_M], url: str) -> _M:
    """``model`` from a 2xx body, in this client's API version; else a protocol error."""
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


def split_batches(items: Sequence[ScoreItem], batch_items: int) -> list[list[ScoreItem]]:
    """Consecutive slices of at most ``batch_items`` items, in order."""
    if batch_items <= 0:
        raise ValueError(f"batch_items must be positive, got {batch_items}")
    return [list(items[i : i + batch_items]) for i in range(0, len(items), batch_items)]


def as_items(items: Sequence[ScoreItem | Mapping[str, Any]]) -> list[ScoreItem]:
    """``items`` as ``ScoreItem``s (dicts are validated); a clear error naming the bad index."""
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


def score_body(batch: Sequence[ScoreItem], return_details: bool) -> bytes:
    request = ScoreRequest(items=list(batch), return_details=return_details)
    return request.model_dump_json(exclude_none=True).encode("utf-8")


def check_batch(response: ScoreResponse, batch: Sequence[ScoreItem], url: str) -> None:
    """One result per item, same ids in the same order, one score per trajectory."""
    if len(response.results) != len(batch):
        raise RewardServiceProtocolError(
            f"reward service {url} returned {len(response.results)} results for {len(batch)} items"
        )
    for i, (result, item) in enumerate(zip(response.results, batch, strict=True)):
        if result.id != item.id:
            raise RewardServiceProtocolError(
                f"reward service {url} returned result {i} for id {result.id!r}, expected {item.id!r}"
            )
        if len(result.scores) != len(item.trajectories):
            raise RewardServiceProtocolError(
                f"reward service {url} returned {len(result.scores)} scores for item {item.id!r}, "
                f"which has {len(item.trajectories)} trajectories"
            )


def merge(responses: Sequence[ScoreResponse], url: str) -> ScoreResponse:
    """One response from the per-batch responses, results in batch order; one scorer config."""
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


class PrecomputeResult(PrecomputeResponse):
    """``PrecomputeResponse`` (the wire model) that ``precompute`` can sum over its requests."""

    def __add__(self, other: PrecomputeResponse) -> PrecomputeResult:
        return PrecomputeResult(
            questions=self.questions + other.questions,
            generated=self.generated + other.generated,
            already_cached=self.already_cached + other.already_cached,
        )


def precompute_chunks(questions: Sequence[str], chunk_size: int) -> list[list[str]]:
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


def precompute_body(chunk: Sequence[str]) -> bytes:
    return json.dumps({"questions": list(chunk)}).encode("utf-8")


def check_precompute(result: PrecomputeResult, chunk: Sequence[str], url: str) -> PrecomputeResult:
    if result.questions != len(chunk) or result.generated + result.already_cached != result.questions:
        raise RewardServiceProtocolError(
            f"reward service {url} answered {result.model_dump()} for {len(chunk)} distinct questions"
        )
    return result
