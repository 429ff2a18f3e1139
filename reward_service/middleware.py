"""The service's ASGI middleware, outermost first: metrics, request framing, auth
(``reward_service.auth.AuthMiddleware``), body limit.

Each answers from the request line and headers alone where it can, so a request that must be
refused (no key, ambiguous framing, too large) is refused before anything reads its body.
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reward_service.errors import error_body
from reward_service.metrics import Metrics


async def send_error(send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
    """An error response in the service's ``{"error": {...}}`` shape, straight to ASGI."""
    body = json.dumps(error_body(code, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class FramingMiddleware:
    """400 for a request whose body length is ambiguous: ``Content-Length`` together with
    ``Transfer-Encoding`` (the request-smuggling shape), or ``Content-Length`` given twice."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = [k for k, _ in scope.get("headers", ())]
            if b"transfer-encoding" in names and b"content-length" in names:
                await send_error(
                    send, 400, "bad_request", "a request may not carry both Content-Length and Transfer-Encoding"
                )
                return
            if names.count(b"content-length") > 1:
                await send_error(send, 400, "bad_request", "Content-Length given more than once")
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for bodies over the limit, by Content-Length or while streaming (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        received = 0
        rejected = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            # the framework turns a failed body read into its own 400: answer 413 instead
            nonlocal answered
            if rejected:
                if not answered:
                    answered = True
                    await self._reject(send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if rejected and not answered:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await send_error(
            send, 413, "payload_too_large", f"request body exceeds this service's limit of {self.max_bytes} bytes"
        )


class _BodyTooLarge(Exception):
    pass


class MetricsMiddleware:
    """Counts requests by route and status and times them."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in _KNOWN_ROUTES else "other"
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.inflight.dec()
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.request_seconds.labels(route=route).observe(time.perf_counter() - started)


_KNOWN_ROUTES = {"/v1/score", "/get_reward", "/v1/info", "/v1/arms/precompute", "/healthz", "/readyz", "/metrics"}
