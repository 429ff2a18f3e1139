"""The app factory: settings -> the service state (runtime loaded in the lifespan), routers, middleware."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reward_service.errors import error_body, install_error_handlers
from reward_service.metrics import Metrics
from reward_service.regime_w.config import load_config
from reward_service.routers import health, openrlhf, score
from reward_service.runtime import ServiceState
from reward_service.settings import Settings

log = logging.getLogger("reward_service")


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
        body = json.dumps(
            error_body("payload_too_large", f"request body exceeds this service's limit of {self.max_bytes} bytes")
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service from ``settings`` (default: the ``REGIME_W_*`` environment).

    The runtime (:mod:`reward_service.runtime`) loads in the background during the lifespan, so the
    probes answer while a model loads; routes reach it through ``routers.deps.RuntimeDep``.
    """
    settings = settings or Settings()
    config = load_config(settings.config_path)
    metrics = Metrics()
    service = ServiceState(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with service.serving():
            yield

    app = FastAPI(
        title="Regime W reward service",
        version=config.version,
        description="Scores math-reasoning trajectories by their coherence with Regime W's prompt arms.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(score.router)
    app.include_router(openrlhf.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``): every setting from ``REGIME_W_*`` variables."""
    settings = Settings()
    settings.check_startable()
    return create_app(settings)
