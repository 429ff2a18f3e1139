"""The service's error hierarchy and the handlers that turn every error into ``{"error": {...}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("reward_service")


class ServiceError(Exception):
    """An error with an HTTP status, a stable machine code and a human message."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ArmsUnavailable(ServiceError):
    """The request needs arms the service cannot produce (backend ``provided``)."""

    status, code = 400, "arms_unavailable"


class InvalidRequest(ServiceError):
    status, code = 422, "invalid_request"


class Overloaded(ServiceError):
    status, code = 503, "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after_s)))})


class NotReady(ServiceError):
    status, code = 503, "not_ready"

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


#: ``Retry-After`` of the transient generation errors: a 504 (the generation goes on and fills the
#: cache) and a 503 ``arm_model_unavailable`` (the arm model's server is down or overloaded)
GENERATION_RETRY_AFTER_S = 5


class GenerationDeadline(ServiceError):
    """The request's generation deadline passed; the generation goes on, so a retry is cheap."""

    status, code = 504, "generation_timeout"

    def __init__(self, message: str, retry_after_s: int = GENERATION_RETRY_AFTER_S) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after_s)))})


class ArmModelUnavailable(ServiceError):
    """The arm model's server could not be reached, timed out or said it is unavailable (429, 502,
    503, 504): transient, so a 503 with ``Retry-After``, and nothing was cached."""

    status, code = 503, "arm_model_unavailable"

    def __init__(self, message: str, retry_after_s: int = GENERATION_RETRY_AFTER_S) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after_s)))})


#: ``Retry-After`` of a 503 ``store_unavailable`` (the shared arm store's database cannot be reached)
STORE_RETRY_AFTER_S = 2


class StoreUnavailable(ServiceError):
    """The arm store's database cannot be reached or failed a query: transient, a 503 with
    ``Retry-After``. The message never holds the database's own text (it may quote a row)."""

    status, code = 503, "store_unavailable"

    def __init__(self, message: str, retry_after_s: int = STORE_RETRY_AFTER_S) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after_s)))})


class GenerationFailed(ServiceError):
    """The arm model answered something unusable (an error status that is not transient, a reply of
    the wrong shape): retrying the same request would fail the same way."""

    status, code = 502, "generation_failed"


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    """``('body', 'items', 0, 'trajectories')`` -> ``items[0].trajectories``."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            parts.append(f"body is not valid JSON: {ctx.get('error', err.get('msg', ''))}")
            continue
        parts.append(f"{_loc(err.get('loc', ()))}: {err.get('msg', 'invalid')}")
    if len(errors) > 5:
        parts.append(f"... and {len(errors) - 5} more")
    return "; ".join(parts)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the service log")
