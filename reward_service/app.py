"""The app factory: settings -> config, backend, arm cache, engine, routers, error handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reward_service.arm_cache import ArmCache
from reward_service.arms import ArmProvider
from reward_service.engine import Limits, ScoringEngine
from reward_service.errors import error_body, install_error_handlers
from reward_service.generation import GenerationBackend, create_backend
from reward_service.metrics import Metrics
from reward_service.regime_w.config import load_config
from reward_service.routers import health, openrlhf, score
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
        import json

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


def create_app(settings: Settings | None = None, backend: GenerationBackend | None = None) -> FastAPI:
    """Build the service. ``backend`` may be given ready-made (tests, embedding); else from settings."""
    settings = settings or Settings()
    config = load_config(settings.config_path)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.ready = False
        state.load_error = None
        state.engine = None

        async def load() -> None:
            try:
                be = backend or await asyncio.to_thread(_make_backend, settings)
                cache = await asyncio.to_thread(ArmCache, settings.cache_path, settings.cache_memory_items)
                provider = ArmProvider(
                    be, config, cache, metrics,
                    seed=settings.seed,
                    timeout_s=settings.generation_timeout_s,
                    batch_window_s=settings.generation_batch_window_ms / 1000.0,
                    max_pending=settings.max_pending_questions,
                    max_batch_questions=max(1, settings.generation_batch_size),
                )
                await provider.start()
                state.engine = ScoringEngine(
                    config, provider, metrics,
                    Limits(settings.max_items, settings.max_trajectories, settings.max_text_chars),
                )
                state.ready = True
                metrics.ready.set(1)
                log.info("ready: backend=%s model=%s config=%s", be.name, be.model_id, config.fingerprint)
            except Exception as exc:  # noqa: BLE001 - reported through /readyz and the log
                state.load_error = f"{type(exc).__name__}: {exc}"
                log.error("the backend failed to load: %s", state.load_error)

        loader = asyncio.create_task(load())
        try:
            yield
        finally:
            loader.cancel()
            engine = state.engine
            if engine is not None:
                await engine.arms.stop()
                engine.arms.cache.close()
                engine.arms.backend.close()

    app = FastAPI(
        title="Regime W reward service",
        version=config.version,
        description="Scores math-reasoning trajectories by their coherence with Regime W's prompt arms.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.config = config
    app.state.metrics = metrics
    app.state.api_keys = tuple(k.encode("utf-8") for k in settings.keys)
    app.state.ready = False
    app.state.load_error = None
    app.state.engine = None
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(score.router)
    app.include_router(openrlhf.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app


def _make_backend(settings: Settings) -> GenerationBackend:
    return create_backend(
        settings.backend,
        model=settings.model,
        device=settings.device,
        dtype=settings.dtype,
        batch_size=settings.generation_batch_size,
        openai_base_url=settings.openai_base_url,
        openai_api_key=settings.openai_api_key,
        timeout_s=settings.backend_timeout_s,
        max_concurrency=settings.openai_max_concurrency,
        seed=settings.seed,
    )


def create_app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``): every setting from ``REGIME_W_*`` variables."""
    settings = Settings()
    settings.check_startable()
    return create_app(settings)
