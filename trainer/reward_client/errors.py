"""Errors of the reward client: one root (``RewardServiceError``, a ``trainer.errors.TrainerError``)."""

from __future__ import annotations

from typing import Any

from trainer.errors import TrainerError

__all__ = [
    "RewardServiceError",
    "RewardServiceConnectionError",
    "RewardServiceTimeout",
    "RewardServiceHTTPError",
    "RewardServiceProtocolError",
]


class RewardServiceError(TrainerError):
    """Base of every error of the reward client; the message says what failed and where."""


class RewardServiceConnectionError(RewardServiceError):
    """The service could not be reached (refused, reset, dropped) within the patience budget."""


class RewardServiceTimeout(RewardServiceError):
    """The service accepted the request but did not answer within ``timeout_s``."""


class RewardServiceHTTPError(RewardServiceError):
    """The service answered with an error status (after the retries allowed for 429/503/504)."""

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
