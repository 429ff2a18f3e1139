"""The app factory: settings -> the service state (runtime loaded in the lifespan), routers, middleware."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI

from reward_service.auth import AuthMiddleware, KeyRing
from reward_service.errors import install_error_handlers
from reward_service.limits import Limits
from reward_service.metrics import Metrics
from reward_service.middleware import BodyLimitMiddleware, FramingMiddleware, MetricsMiddleware
from reward_service.openapi import install_openapi
from reward_service.regime_w.config import load_config
from reward_service.routers import health, openrlhf, score
from reward_service.runtime import ServiceState, exit_startup_failure
from reward_service.settings import Settings

log = logging.getLogger("reward_service")


def create_app(settings: Settings | None = None, *, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """Build the service from ``settings`` (default: the ``REGIME_W_*`` environment).

    The runtime (:mod:`reward_service.runtime`) loads in the background during the lifespan, so the
    probes answer while a model loads; routes reach it through ``routers.deps.RuntimeDep``. The API key
    is checked once, by ``auth.AuthMiddleware``, on every path but ``auth.PUBLIC_PATHS``. A start
    that fails is tried again (``BACKEND_LOAD_ATTEMPTS``); after the last try ``on_fatal(reason)``
    runs (default: none, ``/readyz`` stays 503). While it serves, SIGHUP reloads the API keys
    (``auth.KeyRing.reload``) instead of ending the process.
    """
    settings = settings or Settings()
    config = load_config(settings.config_path)
    metrics = Metrics()
    service = ServiceState(settings, metrics, on_fatal)
    keyring = KeyRing(settings)
    limits = Limits.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with reload_keys_on_sighup(keyring):
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
    install_openapi(app, limits, config)
    app.include_router(health.router)
    app.include_router(score.router)
    app.include_router(openrlhf.router)
    # added innermost first: metrics -> framing -> auth -> body limit -> the routes
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)
    app.add_middleware(AuthMiddleware, keyring=keyring)
    app.add_middleware(FramingMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


@contextmanager
def reload_keys_on_sighup(keyring: KeyRing) -> Iterator[None]:
    """While the block runs: SIGHUP calls ``keyring.reload()`` on the event loop. Only where a handler
    can be installed (the main thread of a POSIX process: ``regime-w-serve`` and each uvicorn worker);
    elsewhere (an app embedded in another thread) SIGHUP keeps its meaning."""
    sighup: int | None = getattr(signal, "SIGHUP", None)
    loop = asyncio.get_running_loop()
    installed = False
    if sighup is not None and threading.current_thread() is threading.main_thread():
        try:
            loop.add_signal_handler(sighup, keyring.reload)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield
    finally:
        if installed and sighup is not None:
            loop.remove_signal_handler(sighup)


def create_app_from_env() -> FastAPI:
    """uvicorn factory (``--factory``): every setting from ``REGIME_W_*`` variables. A backend that
    never loads ends the worker with uvicorn's startup-failure status (the supervisor stops too)."""
    settings = Settings()
    settings.check_startable()
    return create_app(settings, on_fatal=exit_startup_failure)
